//! Drift: changes made in the tenant, out of band, to what this connection manages — an admin
//! edits a managed user's department in the Entra portal, removes a license this connection
//! assigned, adds someone to a managed group, deletes a linked user (docs/design.md#drift).
//!
//! Each run (not a focused one) reads the tenant's changes since the last run through Graph's
//! delta queries ([`crate::directory::Directory::read_changes`]), or, at the configured interval
//! and when there is no cursor yet, every user and group (a full reconciliation: delta cannot be
//! trusted for manager and license changes). What differs from the links' last applied state is
//! a [`Drift`]. With `drift = "report"` the plan lists it; with `"repair"` it also corrects the
//! links the planner reads ([`DriftOverlay`]), so the planner plans the writes that bring the
//! tenant back, shown old → new like any change. Objects the connection does not manage, and
//! properties it does not map, are never looked at.

mod compare;
mod scan;

use std::collections::HashMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::directory::TenantCursor;
use crate::model::ObjectKind;
use crate::state::{Link, UnixMillis};
pub use scan::{DriftScan, scan};

/// What a run does about drift.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DriftMode {
    /// The tenant's changes are not read.
    Off,
    /// Drift is listed in the plan and the objects' history; nothing is written for it.
    #[default]
    Report,
    /// Drift is listed and repaired: the plan brings the tenant back to the applied state.
    Repair,
}

impl fmt::Display for DriftMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DriftMode::Off => "off",
            DriftMode::Report => "report",
            DriftMode::Repair => "repair",
        })
    }
}

/// The default interval of full reconciliations.
pub const DEFAULT_FULL_EVERY_HOURS: u32 = 24;

/// A rule's drift settings: the mode, the reconciliation interval, and what is read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DriftSettings {
    pub mode: DriftMode,
    /// A full reconciliation (every user and group read) at least this often.
    pub full_every_ms: i64,
    /// Graph user properties read and tracked: the mapped ones (top-level names), and
    /// `accountEnabled`, `assignedLicenses` and `manager` where the rule manages them.
    pub user_select: Vec<String>,
    /// Group properties read and tracked (`displayName`, `members`); empty when the rule does
    /// not provision groups.
    pub group_select: Vec<String>,
}

impl Default for DriftSettings {
    fn default() -> Self {
        DriftSettings {
            mode: DriftMode::default(),
            full_every_ms: i64::from(DEFAULT_FULL_EVERY_HOURS) * 3_600_000,
            user_select: Vec::new(),
            group_select: Vec::new(),
        }
    }
}

impl DriftSettings {
    /// The settings of a rule mapping `attributes` (Graph names, dotted for members of complex
    /// properties), with or without licenses, manager and groups.
    pub fn for_mapping<'a>(
        attributes: impl IntoIterator<Item = &'a String>,
        licenses: bool,
        manager: bool,
        groups: bool,
    ) -> DriftSettings {
        let mut user_select: Vec<String> = Vec::new();
        let mut add = |name: &str| {
            if !user_select.iter().any(|s| s == name) {
                user_select.push(name.to_owned());
            }
        };
        for attribute in attributes {
            add(attribute.split('.').next().unwrap_or(attribute));
        }
        add("accountEnabled");
        if licenses {
            add("assignedLicenses");
        }
        if manager {
            add("manager");
        }
        DriftSettings {
            user_select,
            group_select: if groups {
                vec!["displayName".to_owned(), "members".to_owned()]
            } else {
                Vec::new()
            },
            ..DriftSettings::default()
        }
    }
}

/// Where the tenant's changes are read from next, kept in the checkpoint.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DriftCheckpoint {
    pub cursor: TenantCursor,
    /// When the last full reconciliation was read.
    pub last_full_at: Option<UnixMillis>,
    /// What the cursor's rounds track (users' `$select`, then groups'): a deltaLink keeps the
    /// properties of the round that made it, so another selection (the mapping changed) starts
    /// over with a full reconciliation.
    #[serde(default)]
    pub selected: Vec<String>,
}

impl DriftSettings {
    /// What a cursor made under these settings tracks.
    pub fn selected(&self) -> Vec<String> {
        let mut selected = self.user_select.clone();
        selected.push("|".to_owned());
        selected.extend(self.group_select.iter().cloned());
        selected
    }
}

/// One difference between what the connection last applied to an object and the tenant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Drift {
    pub kind: ObjectKind,
    pub source_id: String,
    pub object_id: String,
    /// The user's UPN or the group's displayName, as last applied.
    pub name: String,
    pub change: DriftChange,
    /// Written back by this run's plan (`drift = "repair"`, and a change that can be).
    #[serde(default)]
    pub repair: bool,
}

/// What differs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "what", rename_all = "snake_case")]
pub enum DriftChange {
    /// A mapped property holds another value.
    Property {
        name: String,
        applied: Value,
        found: Value,
    },
    /// `accountEnabled` differs.
    Enabled { applied: bool, found: bool },
    /// A license this connection assigned is gone.
    LicenseRemoved { sku_id: String },
    /// A license this connection assigned has other disabled plans.
    LicensePlans {
        sku_id: String,
        applied: Vec<String>,
        found: Vec<String>,
    },
    /// Another manager, or none: `found` is the manager's source id when it is a user this
    /// connection links, else its tenant object id.
    Manager {
        applied: Option<String>,
        found: Option<String>,
    },
    /// A member this connection manages was taken out of the group.
    MemberRemoved { member: String },
    /// A user this connection links was put in the group, not by this connection.
    MemberAdded { member: String },
    /// Deleted in the tenant, restorable from the deleted items.
    Deleted,
    /// Deleted for good.
    Purged,
}

impl DriftChange {
    /// Whether a plan can bring the tenant back: everything but a purge.
    pub fn repairable(&self) -> bool {
        !matches!(self, DriftChange::Purged)
    }
}

impl fmt::Display for Drift {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}: ", self.kind, self.name)?;
        match &self.change {
            DriftChange::Property {
                name,
                applied,
                found,
            } => write!(f, "{name} is {found} in the tenant, {applied} as applied"),
            DriftChange::Enabled { applied, found } => write!(
                f,
                "accountEnabled is {found} in the tenant, {applied} as applied"
            ),
            DriftChange::LicenseRemoved { sku_id } => {
                write!(
                    f,
                    "license {sku_id} assigned by this connection was removed"
                )
            }
            DriftChange::LicensePlans {
                sku_id,
                applied,
                found,
            } => write!(
                f,
                "license {sku_id} has disabled plans {found:?} in the tenant, {applied:?} as applied"
            ),
            DriftChange::Manager { applied, found } => write!(
                f,
                "manager is {} in the tenant, {} as applied",
                found.as_deref().unwrap_or("none"),
                applied.as_deref().unwrap_or("none")
            ),
            DriftChange::MemberRemoved { member } => {
                write!(f, "managed member {member} was removed from the group")
            }
            DriftChange::MemberAdded { member } => write!(
                f,
                "linked user {member} was added to the group by someone else"
            ),
            DriftChange::Deleted => f.write_str("deleted in the tenant (restorable)"),
            DriftChange::Purged => f.write_str("deleted for good in the tenant"),
        }
    }
}

/// The links as the tenant has them, for a repairing plan: each drifted link corrected to what
/// the tenant holds, so that the planner, comparing the desired state with it, plans the writes
/// that repair the drift. Never stored: the links keep what was applied.
#[derive(Debug, Default)]
pub struct DriftOverlay {
    /// The changes of each drifted object, by kind and source id.
    changes: HashMap<ObjectKind, HashMap<String, Vec<DriftChange>>>,
    now: UnixMillis,
}

impl DriftOverlay {
    pub fn new(findings: &[Drift], now: UnixMillis) -> DriftOverlay {
        let mut changes: HashMap<ObjectKind, HashMap<String, Vec<DriftChange>>> = HashMap::new();
        for drift in findings {
            changes
                .entry(drift.kind)
                .or_default()
                .entry(drift.source_id.clone())
                .or_default()
                .push(drift.change.clone());
        }
        DriftOverlay { changes, now }
    }

    pub fn is_empty(&self) -> bool {
        self.changes.is_empty()
    }

    /// The link as the tenant has it (unchanged when it did not drift). A drifted user's hash
    /// is cleared: its desired state is compared property by property.
    pub fn correct(&self, mut link: Link) -> Link {
        let Some(changes) = self
            .changes
            .get(&link.kind)
            .and_then(|of_kind| of_kind.get(&link.source_id))
        else {
            return link;
        };
        for change in changes {
            compare::correct_link(&mut link, change, self.now);
        }
        link.hash.clear();
        link
    }
}
