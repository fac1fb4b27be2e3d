//! The plan: what a sync would do, as data (docs/design.md#data-flow, #safety). `plan` prints it;
//! `sync` executes it.
//!
//! Steps are in dependency order — groups, users (link or create), updates, licenses, managers,
//! memberships, then disables and deprovisions — and refer to source ids: an object created by an
//! earlier step is resolved to its tenant id when the later step runs.

use std::collections::{BTreeMap, HashSet};
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::directory::GroupKind;
use crate::model::{LicenseAssignment, ObjectKind};
use crate::rule::BreakerSettings;

/// One changed attribute: old → new (`null` = absent).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AttributeChange {
    pub name: String,
    pub old: serde_json::Value,
    pub new: serde_json::Value,
}

/// What happens to a linked object that left scope or was deleted at the source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RemoveAction {
    /// `accountEnabled = false`; the user keeps its licenses and data.
    #[default]
    Disable,
    /// Graph delete: a soft delete, restorable for 30 days.
    Delete,
}

/// Why an object is deprovisioned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeprovisionReason {
    /// Not in the source any more, or out of the rule's scope.
    LeftScope,
    /// The rule is being deleted with `--deprovision`.
    RuleDeleted,
    /// The source id left, and the tenant object is now linked to another source id (the
    /// source re-issued the identity): the stale link is forgotten, the object left alone.
    Superseded,
    /// The object was deleted by this connection more than 30 days ago: Graph has purged it
    /// from its deleted items, so the link kept for a restore is forgotten.
    RestoreWindowPassed,
}

impl DeprovisionReason {
    /// Whether the step writes to the tenant; the others only forget a link.
    pub fn touches_tenant(self) -> bool {
        matches!(
            self,
            DeprovisionReason::LeftScope | DeprovisionReason::RuleDeleted
        )
    }
}

/// What a step does, in dependency order: a step finds the objects it refers to (a manager, a
/// member) made by an earlier stage. The executor runs stages with no dependency between them
/// together (its waves: `shared/core/src/executor/mod.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Stage {
    /// Groups matched or created.
    Groups,
    /// Users linked, restored or created.
    Users,
    /// Attribute updates and enables.
    Updates,
    Licenses,
    Managers,
    Memberships,
    /// Disables and deprovisions: the destructive stage, last.
    Removals,
}

impl Stage {
    /// Every stage, in execution order.
    pub const ALL: [Stage; 7] = [
        Stage::Groups,
        Stage::Users,
        Stage::Updates,
        Stage::Licenses,
        Stage::Managers,
        Stage::Memberships,
        Stage::Removals,
    ];
}

/// One step of a plan.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Step {
    /// Link an existing tenant group of the same displayName.
    MatchGroup {
        source_id: String,
        display_name: String,
        object_id: String,
    },
    CreateGroup {
        source_id: String,
        display_name: String,
        mail_nickname: String,
        kind: GroupKind,
    },
    /// Link an existing tenant user found by the match attribute; updates follow as their own
    /// steps.
    LinkUser {
        source_id: String,
        user_principal_name: String,
        object_id: String,
    },
    /// Restore a user this connection deleted (it is back in scope within the 30 days Graph keeps
    /// it): the same account comes back with its mailbox, licenses and group memberships; updates
    /// follow as their own steps.
    RestoreUser {
        source_id: String,
        user_principal_name: String,
        object_id: String,
        /// When this connection deleted it.
        deleted_at: crate::state::UnixMillis,
    },
    /// Create a user. The password is not in the plan: it is produced at execution time.
    CreateUser {
        source_id: String,
        user_principal_name: String,
        properties: BTreeMap<String, serde_json::Value>,
        enabled: bool,
    },
    /// PATCH only the changed attributes.
    UpdateUser {
        source_id: String,
        user_principal_name: String,
        changes: Vec<AttributeChange>,
    },
    /// accountEnabled true or false, following the source.
    SetEnabled {
        source_id: String,
        user_principal_name: String,
        enabled: bool,
    },
    AssignLicenses {
        source_id: String,
        user_principal_name: String,
        add: Vec<LicenseAssignment>,
        remove: Vec<String>,
    },
    SetManager {
        source_id: String,
        user_principal_name: String,
        manager_source_id: String,
        /// The manager's userPrincipalName, for people reading the plan (empty in plans saved
        /// before it was recorded).
        #[serde(default, skip_serializing_if = "String::is_empty")]
        manager_user_principal_name: String,
    },
    RemoveManager {
        source_id: String,
        user_principal_name: String,
    },
    /// Members by source id (resolved to tenant ids when the step runs).
    AddMembers {
        group_source_id: String,
        display_name: String,
        member_source_ids: Vec<String>,
    },
    /// Members by tenant object id (they may not be linked any more).
    RemoveMembers {
        group_source_id: String,
        display_name: String,
        member_object_ids: Vec<String>,
    },
    Deprovision {
        kind: ObjectKind,
        source_id: String,
        /// UPN or displayName as last applied, for people reading the plan.
        name: String,
        object_id: String,
        action: RemoveAction,
        reason: DeprovisionReason,
    },
}

impl Step {
    /// The stage the step runs in.
    pub fn stage(&self) -> Stage {
        match self {
            Step::MatchGroup { .. } | Step::CreateGroup { .. } => Stage::Groups,
            Step::LinkUser { .. } | Step::RestoreUser { .. } | Step::CreateUser { .. } => {
                Stage::Users
            }
            Step::UpdateUser { .. } | Step::SetEnabled { enabled: true, .. } => Stage::Updates,
            Step::AssignLicenses { .. } => Stage::Licenses,
            Step::SetManager { .. } | Step::RemoveManager { .. } => Stage::Managers,
            Step::AddMembers { .. } | Step::RemoveMembers { .. } => Stage::Memberships,
            Step::SetEnabled { enabled: false, .. } | Step::Deprovision { .. } => Stage::Removals,
        }
    }

    /// The object the step is about: its kind and source id (a group for membership steps).
    pub fn subject(&self) -> (ObjectKind, &str) {
        match self {
            Step::MatchGroup { source_id, .. } | Step::CreateGroup { source_id, .. } => {
                (ObjectKind::Group, source_id)
            }
            Step::AddMembers {
                group_source_id, ..
            }
            | Step::RemoveMembers {
                group_source_id, ..
            } => (ObjectKind::Group, group_source_id),
            Step::Deprovision {
                kind, source_id, ..
            } => (*kind, source_id),
            Step::LinkUser { source_id, .. }
            | Step::RestoreUser { source_id, .. }
            | Step::CreateUser { source_id, .. }
            | Step::UpdateUser { source_id, .. }
            | Step::SetEnabled { source_id, .. }
            | Step::AssignLicenses { source_id, .. }
            | Step::SetManager { source_id, .. }
            | Step::RemoveManager { source_id, .. } => (ObjectKind::User, source_id),
        }
    }

    /// Short name of the operation, as in the plan table and summaries.
    pub fn operation(&self) -> &'static str {
        match self {
            Step::MatchGroup { .. } => "match group",
            Step::CreateGroup { .. } => "create group",
            Step::LinkUser { .. } => "link user",
            Step::RestoreUser { .. } => "restore user",
            Step::CreateUser { .. } => "create user",
            Step::UpdateUser { .. } => "update user",
            Step::SetEnabled { enabled: true, .. } => "enable user",
            Step::SetEnabled { enabled: false, .. } => "disable user",
            Step::AssignLicenses { .. } => "licenses",
            Step::SetManager { .. } => "set manager",
            Step::RemoveManager { .. } => "remove manager",
            Step::AddMembers { .. } => "add members",
            Step::RemoveMembers { .. } => "remove members",
            Step::Deprovision {
                reason: DeprovisionReason::Superseded,
                ..
            } => "unlink (superseded)",
            Step::Deprovision {
                reason: DeprovisionReason::RestoreWindowPassed,
                ..
            } => "unlink (purged)",
            Step::Deprovision {
                action: RemoveAction::Disable,
                kind: ObjectKind::User,
                ..
            } => "deprovision (disable)",
            Step::Deprovision {
                action: RemoveAction::Delete,
                kind: ObjectKind::User,
                ..
            } => "deprovision (delete)",
            Step::Deprovision {
                kind: ObjectKind::Group,
                ..
            } => "deprovision group",
        }
    }

    /// The object the step is about, as people name it.
    pub fn object(&self) -> &str {
        match self {
            Step::MatchGroup { display_name, .. }
            | Step::CreateGroup { display_name, .. }
            | Step::AddMembers { display_name, .. }
            | Step::RemoveMembers { display_name, .. } => display_name,
            Step::LinkUser {
                user_principal_name,
                ..
            }
            | Step::CreateUser {
                user_principal_name,
                ..
            }
            | Step::RestoreUser {
                user_principal_name,
                ..
            }
            | Step::UpdateUser {
                user_principal_name,
                ..
            }
            | Step::SetEnabled {
                user_principal_name,
                ..
            }
            | Step::AssignLicenses {
                user_principal_name,
                ..
            }
            | Step::SetManager {
                user_principal_name,
                ..
            }
            | Step::RemoveManager {
                user_principal_name,
                ..
            } => user_principal_name,
            Step::Deprovision { name, .. } => name,
        }
    }

    /// What a tripped circuit breaker holds back: user disables, deprovisions of users and
    /// groups, membership removals, and license changes that remove a SKU (held whole, with any
    /// SKU they add: Graph swaps them in one request). [`RemovalCounts::of`] says how they count.
    pub fn is_destructive(&self) -> bool {
        match self {
            Step::SetEnabled { enabled, .. } => !enabled,
            Step::Deprovision { reason, .. } => reason.touches_tenant(),
            Step::RemoveMembers {
                member_object_ids, ..
            } => !member_object_ids.is_empty(),
            Step::AssignLicenses { remove, .. } => !remove.is_empty(),
            _ => false,
        }
    }

    /// Tenant writes this step needs at least (memberships: one PATCH per 20 adds).
    pub fn minimal_writes(&self) -> u64 {
        match self {
            Step::MatchGroup { .. }
            | Step::LinkUser { .. }
            | Step::Deprovision {
                reason: DeprovisionReason::Superseded | DeprovisionReason::RestoreWindowPassed,
                ..
            } => 0,
            Step::AddMembers {
                member_source_ids, ..
            } => member_source_ids.len().div_ceil(20) as u64,
            Step::RemoveMembers {
                member_object_ids, ..
            } => member_object_ids.len() as u64,
            _ => 1,
        }
    }

    /// Old → new details for the plan table.
    pub fn details(&self) -> String {
        fn show(v: &serde_json::Value) -> String {
            match v {
                serde_json::Value::Null => "∅".to_owned(),
                serde_json::Value::String(s) => format!("{s:?}"),
                other => other.to_string(),
            }
        }
        match self {
            Step::CreateUser { properties, .. } => properties
                .iter()
                .map(|(k, v)| format!("{k}={}", show(v)))
                .collect::<Vec<_>>()
                .join(", "),
            Step::UpdateUser { changes, .. } => changes
                .iter()
                .map(|c| format!("{}: {} → {}", c.name, show(&c.old), show(&c.new)))
                .collect::<Vec<_>>()
                .join(", "),
            Step::SetEnabled { enabled, .. } => {
                format!("accountEnabled: {} → {enabled}", !enabled)
            }
            Step::AssignLicenses { add, remove, .. } => {
                let mut parts: Vec<String> = add
                    .iter()
                    .map(|l| {
                        if l.disabled_plans.is_empty() {
                            format!("+{}", l.sku_id)
                        } else {
                            format!("+{} (disabled plans: {})", l.sku_id, l.disabled_plans.len())
                        }
                    })
                    .collect();
                parts.extend(remove.iter().map(|s| format!("-{s}")));
                parts.join(", ")
            }
            Step::SetManager {
                manager_user_principal_name,
                ..
            } if !manager_user_principal_name.is_empty() => {
                format!("manager → {manager_user_principal_name}")
            }
            Step::SetManager {
                manager_source_id, ..
            } => format!("manager → source {manager_source_id}"),
            Step::AddMembers {
                member_source_ids, ..
            } => format!("+{} member(s)", member_source_ids.len()),
            Step::RemoveMembers {
                member_object_ids, ..
            } => format!("-{} member(s)", member_object_ids.len()),
            Step::MatchGroup { object_id, .. } | Step::LinkUser { object_id, .. } => {
                format!("existing object {object_id}")
            }
            Step::RestoreUser {
                object_id,
                deleted_at,
                ..
            } => format!(
                "object {object_id} deleted {}; comes back with its mailbox, licenses and groups",
                crate::clock::format_utc(*deleted_at)
            ),
            Step::CreateGroup {
                mail_nickname,
                kind,
                ..
            } => format!("{kind:?} group, mailNickname={mail_nickname:?}"),
            Step::RemoveManager { .. } => "manager cleared at the source".to_owned(),
            Step::Deprovision { reason, .. } => match reason {
                DeprovisionReason::LeftScope => "left scope or deleted at the source".to_owned(),
                DeprovisionReason::RuleDeleted => "rule deleted".to_owned(),
                DeprovisionReason::Superseded => {
                    "now linked to another source id; only the stale link is forgotten".to_owned()
                }
                DeprovisionReason::RestoreWindowPassed => {
                    "deleted over 30 days ago and purged by Graph; the link is forgotten".to_owned()
                }
            },
        }
    }
}

/// A problem found while planning that concerns one object (bad value, ambiguous match…). It is
/// recorded and retried like an execution failure; the rest of the plan is unaffected.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlanIssue {
    pub kind: ObjectKind,
    pub source_id: String,
    pub operation: String,
    pub message: String,
}

/// Destructive operations of a plan by kind, or (as [`BreakerVerdict::managed`]) what the
/// connection manages of each kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemovalCounts {
    /// Users disabled (at the source, or deprovisioned with `disable`) or deleted.
    pub users: u64,
    /// Groups deleted. A group deprovisioned with `disable` is only unlinked: not counted.
    pub groups: u64,
    /// Members removed from groups, except users the same plan deprovisions: leaving their
    /// groups is part of their departure, already counted once under `users`.
    pub memberships: u64,
    /// Licenses (SKUs) removed from users.
    pub licenses: u64,
}

impl RemovalCounts {
    /// What `steps` remove, counted as the field docs say.
    pub fn of(steps: &[Step]) -> RemovalCounts {
        let departing: HashSet<String> = steps
            .iter()
            .filter_map(|s| match s {
                Step::Deprovision {
                    kind: ObjectKind::User,
                    object_id,
                    ..
                } => Some(object_id.to_ascii_lowercase()),
                _ => None,
            })
            .collect();
        let mut counts = RemovalCounts::default();
        for step in steps.iter().filter(|s| s.is_destructive()) {
            match step {
                Step::SetEnabled { .. }
                | Step::Deprovision {
                    kind: ObjectKind::User,
                    ..
                } => counts.users += 1,
                Step::Deprovision {
                    kind: ObjectKind::Group,
                    action: RemoveAction::Delete,
                    ..
                } => counts.groups += 1,
                Step::RemoveMembers {
                    member_object_ids, ..
                } => {
                    counts.memberships += member_object_ids
                        .iter()
                        .filter(|m| !departing.contains(&m.to_ascii_lowercase()))
                        .count() as u64;
                }
                Step::AssignLicenses { remove, .. } => counts.licenses += remove.len() as u64,
                _ => {}
            }
        }
        counts
    }

    pub fn total(&self) -> u64 {
        self.users + self.groups + self.memberships + self.licenses
    }
}

/// What the circuit breaker concluded about a plan.
///
/// Each kind of destructive operation is weighed on its own against the same limits: user
/// disables and deletes against the linked users, group deletes against the linked groups,
/// membership removals against the memberships the rule manages in the groups the plan read,
/// license removals against the licenses the rule assigned to the users the plan read (see
/// [`RemovalCounts`] for what counts). The breaker trips when any kind has more than
/// `max_count` operations, or more than `max_percent` % of its base (a base of 0, as on a first
/// run, only has the count). Weighing memberships against memberships means a run that moves a
/// few people between groups does not trip it, while one that empties groups does. When it
/// trips, the run carries out none of the destructive steps ([`Step::is_destructive`]) unless
/// overridden; everything else goes ahead.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BreakerVerdict {
    /// Destructive operations of every kind (`removals.total()`).
    pub destructive: u64,
    pub linked_users: u64,
    /// Destructive operations by kind.
    #[serde(default)]
    pub removals: RemovalCounts,
    /// The percentage base of each kind.
    #[serde(default)]
    pub managed: RemovalCounts,
    pub max_count: u64,
    pub max_percent: f64,
    pub tripped: bool,
}

impl BreakerVerdict {
    /// The verdict on `removals` against `managed`.
    pub fn new(
        settings: &BreakerSettings,
        removals: RemovalCounts,
        managed: RemovalCounts,
    ) -> BreakerVerdict {
        BreakerVerdict {
            destructive: removals.total(),
            linked_users: managed.users,
            removals,
            managed,
            max_count: settings.max_count,
            max_percent: settings.max_percent,
            tripped: settings.trips_by_kind(&removals, &managed),
        }
    }

    /// What the breaker found, for the plan table and the run message.
    pub fn summary(&self) -> String {
        let (r, m) = (&self.removals, &self.managed);
        let parts: Vec<String> = [
            (r.users, m.users, "user disable/delete", "linked users"),
            (r.groups, m.groups, "group delete", "linked groups"),
            (
                r.memberships,
                m.memberships,
                "membership removal",
                "managed memberships",
            ),
            (
                r.licenses,
                m.licenses,
                "license removal",
                "assigned licenses",
            ),
        ]
        .iter()
        .filter(|(n, ..)| *n > 0)
        .map(|(n, base, what, of)| format!("{n} {what}(s) of {base} {of}"))
        .collect();
        format!(
            "circuit breaker: {} destructive operation(s) exceed the limit (more than {} of a kind, or more than {}% of what the connection manages of that kind): {}",
            self.destructive,
            self.max_count,
            self.max_percent,
            parts.join(", ")
        )
    }
}

/// Everything a sync would do.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    pub connection: String,
    pub steps: Vec<Step>,
    pub issues: Vec<PlanIssue>,
    /// Deprovisioning is allowed only after a complete source snapshot (docs/design.md#safety).
    pub snapshot_complete: bool,
    pub breaker: BreakerVerdict,
    /// Out-of-band changes found in the tenant (docs/design.md#drift); with `drift = "repair"`
    /// the steps repair them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub drift: Vec<crate::drift::Drift>,
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.steps.is_empty()
    }

    /// Number of steps per operation name.
    pub fn counts(&self) -> BTreeMap<&'static str, u64> {
        let mut counts = BTreeMap::new();
        for step in &self.steps {
            *counts.entry(step.operation()).or_insert(0) += 1;
        }
        counts
    }

    /// The fewest tenant writes that carry this plan out.
    pub fn minimal_writes(&self) -> u64 {
        self.steps.iter().map(Step::minimal_writes).sum()
    }

    /// The plan for people, in full and without colour.
    pub fn render_table(&self) -> String {
        self.render(TableStyle::default())
    }

    /// The plan for people: a summary first, then (unless `style.summary_only`) every object
    /// with its steps, each marked `+` (adds), `~` (changes) or `-` (removes), with old → new
    /// values; then the problems, and what the breaker holds back.
    pub fn render(&self, style: TableStyle) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "{}", self.summary_line());
        if !self.steps.is_empty() {
            let counts: Vec<String> = self
                .counts()
                .iter()
                .map(|(op, n)| format!("{n} {op}"))
                .collect();
            let _ = writeln!(out, "  steps: {}", counts.join(", "));
            if !style.summary_only {
                self.render_objects(&mut out, style);
            }
        }
        for issue in &self.issues {
            let _ = writeln!(
                out,
                "problem: {} {}: {}",
                issue.kind, issue.source_id, issue.message
            );
        }
        for drift in &self.drift {
            let what = if drift.repair {
                "repaired by this plan"
            } else {
                "reported"
            };
            let _ = writeln!(out, "drift ({what}): {drift}");
        }
        if !self.snapshot_complete {
            out.push_str(
                "note: the source snapshot was incomplete; nothing is deprovisioned in this run\n",
            );
        }
        if self.breaker.tripped {
            let _ = writeln!(
                out,
                "{}; sync carries out none of them unless run with --override-breaker",
                self.breaker.summary()
            );
        }
        out
    }

    /// One line: objects to create, change and remove, and the fewest writes.
    pub fn summary_line(&self) -> String {
        if self.steps.is_empty() {
            return format!("plan {}: no changes", self.connection);
        }
        let objects = self.objects();
        let count = |marker| objects.iter().filter(|o| o.marker == marker).count();
        format!(
            "plan {}: {} to create, {} to change, {} to remove ({} Graph writes at least)",
            self.connection,
            count(Marker::Add),
            count(Marker::Change),
            count(Marker::Remove),
            self.minimal_writes()
        )
    }

    /// The steps grouped by the object they are about, objects in the order of their first
    /// step (groups, then users created or linked, then those changed, then removals).
    pub fn objects(&self) -> Vec<PlannedObject<'_>> {
        let mut objects: Vec<PlannedObject<'_>> = Vec::new();
        let mut index: BTreeMap<(ObjectKind, &str), usize> = BTreeMap::new();
        for step in &self.steps {
            let (kind, source_id) = step.subject();
            let at = *index.entry((kind, source_id)).or_insert_with(|| {
                objects.push(PlannedObject {
                    kind,
                    source_id,
                    name: step.object(),
                    marker: Marker::Change,
                    steps: Vec::new(),
                });
                objects.len() - 1
            });
            objects[at].steps.push(step);
        }
        for object in &mut objects {
            object.marker = object_marker(&object.steps);
        }
        objects
    }

    fn render_objects(&self, out: &mut String, style: TableStyle) {
        let op_width = self
            .steps
            .iter()
            .map(|s| s.operation().chars().count())
            .max()
            .unwrap_or(9);
        for object in self.objects() {
            out.push('\n');
            let _ = writeln!(
                out,
                "{} {} {}  (source {})",
                style.paint(object.marker, object.marker.symbol()),
                object.kind,
                style.bold(object.name),
                object.source_id
            );
            for step in &object.steps {
                let marker = step.marker();
                let _ = writeln!(
                    out,
                    "    {} {:<op_width$}  {}",
                    style.paint(marker, marker.symbol()),
                    step.operation(),
                    step.details()
                );
            }
        }
    }
}

/// How a step or an object changes the tenant, as the plan table marks it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Marker {
    /// `+`: created, restored, or members added.
    Add,
    /// `~`: linked, updated, enabled, licensed, a manager set.
    Change,
    /// `-`: disabled, deprovisioned, members, a manager or licenses removed.
    Remove,
}

impl Marker {
    pub fn symbol(self) -> &'static str {
        match self {
            Marker::Add => "+",
            Marker::Change => "~",
            Marker::Remove => "-",
        }
    }

    /// ANSI colour: green, yellow, red.
    fn colour(self) -> &'static str {
        match self {
            Marker::Add => "\u{1b}[32m",
            Marker::Change => "\u{1b}[33m",
            Marker::Remove => "\u{1b}[31m",
        }
    }
}

impl Step {
    /// How the step changes its object.
    pub fn marker(&self) -> Marker {
        match self {
            Step::CreateUser { .. }
            | Step::CreateGroup { .. }
            | Step::RestoreUser { .. }
            | Step::AddMembers { .. } => Marker::Add,
            Step::SetEnabled { enabled: false, .. }
            | Step::Deprovision { .. }
            | Step::RemoveManager { .. }
            | Step::RemoveMembers { .. } => Marker::Remove,
            Step::AssignLicenses { add, remove, .. } if add.is_empty() && !remove.is_empty() => {
                Marker::Remove
            }
            _ => Marker::Change,
        }
    }
}

/// An object's marker: `+` when it is created or restored, `-` when it is disabled or
/// deprovisioned, `~` otherwise.
fn object_marker(steps: &[&Step]) -> Marker {
    let creates = steps.iter().any(|s| {
        matches!(
            s,
            Step::CreateUser { .. } | Step::CreateGroup { .. } | Step::RestoreUser { .. }
        )
    });
    if creates {
        return Marker::Add;
    }
    if steps.iter().any(|s| s.stage() == Stage::Removals) {
        return Marker::Remove;
    }
    Marker::Change
}

/// One object of a plan and its steps.
#[derive(Debug)]
pub struct PlannedObject<'p> {
    pub kind: ObjectKind,
    pub source_id: &'p str,
    /// UPN or displayName.
    pub name: &'p str,
    pub marker: Marker,
    pub steps: Vec<&'p Step>,
}

/// How the plan table is printed.
#[derive(Debug, Clone, Copy, Default)]
pub struct TableStyle {
    /// ANSI colours (a terminal without `NO_COLOR`).
    pub colour: bool,
    /// The summary only, not every object (large plans).
    pub summary_only: bool,
}

impl TableStyle {
    fn paint(self, marker: Marker, text: &str) -> String {
        if self.colour {
            format!("{}{text}\u{1b}[0m", marker.colour())
        } else {
            text.to_owned()
        }
    }

    fn bold(self, text: &str) -> String {
        if self.colour {
            format!("\u{1b}[1m{text}\u{1b}[0m")
        } else {
            text.to_owned()
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn plan(steps: Vec<Step>) -> Plan {
        Plan {
            drift: Vec::new(),
            connection: "c".into(),
            steps,
            issues: vec![],
            snapshot_complete: true,
            breaker: BreakerVerdict {
                destructive: 0,
                linked_users: 0,
                max_count: 10,
                max_percent: 10.0,
                tripped: false,
                ..BreakerVerdict::default()
            },
        }
    }

    #[test]
    fn empty_plan_says_no_changes() {
        assert_eq!(plan(vec![]).render_table(), "plan c: no changes\n");
    }

    #[test]
    fn table_shows_old_and_new_values() {
        let table = plan(vec![Step::UpdateUser {
            source_id: "u1".into(),
            user_principal_name: "bjensen@example.com".into(),
            changes: vec![AttributeChange {
                name: "jobTitle".into(),
                old: json!("Clerk"),
                new: json!("Manager"),
            }],
        }])
        .render_table();
        assert!(table.contains("update user"), "{table}");
        assert!(table.contains("bjensen@example.com"), "{table}");
        assert!(
            table.contains("jobTitle: \"Clerk\" → \"Manager\""),
            "{table}"
        );
    }

    #[test]
    fn the_table_groups_steps_by_object_with_markers_after_a_summary() {
        let mut p = plan(vec![
            Step::CreateUser {
                source_id: "u1".into(),
                user_principal_name: "adele@example.com".into(),
                properties: BTreeMap::from([("department".into(), json!("Retail"))]),
                enabled: true,
            },
            Step::UpdateUser {
                source_id: "u2".into(),
                user_principal_name: "megan@example.com".into(),
                changes: vec![AttributeChange {
                    name: "jobTitle".into(),
                    old: json!("Clerk"),
                    new: json!("Manager"),
                }],
            },
            Step::SetManager {
                source_id: "u1".into(),
                user_principal_name: "adele@example.com".into(),
                manager_source_id: "u2".into(),
                manager_user_principal_name: "megan@example.com".into(),
            },
            Step::Deprovision {
                kind: ObjectKind::User,
                source_id: "u9".into(),
                name: "old@example.com".into(),
                object_id: "o9".into(),
                action: RemoveAction::Disable,
                reason: DeprovisionReason::LeftScope,
            },
        ]);
        let table = p.render_table();
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(
            lines[0],
            "plan c: 1 to create, 1 to change, 1 to remove (4 Graph writes at least)"
        );
        let adele = lines
            .iter()
            .position(|l| *l == "+ user adele@example.com  (source u1)")
            .unwrap_or_else(|| panic!("{table}"));
        assert!(
            lines[adele + 1].starts_with("    + create user "),
            "{table}"
        );
        assert!(
            lines[adele + 2].starts_with("    ~ set manager ")
                && lines[adele + 2].ends_with("manager → megan@example.com"),
            "{table}"
        );
        assert!(
            table.contains("~ user megan@example.com  (source u2)\n    ~ update user "),
            "{table}"
        );
        assert!(
            table.contains("- user old@example.com  (source u9)\n    - deprovision (disable) "),
            "{table}"
        );
        assert!(!table.contains('\u{1b}'), "no colour unless asked: {table}");

        let coloured = p.render(TableStyle {
            colour: true,
            summary_only: false,
        });
        assert!(coloured.contains("\u{1b}[32m+\u{1b}[0m user"), "{coloured}");
        assert!(coloured.contains("\u{1b}[31m-\u{1b}[0m"), "{coloured}");

        p.issues.push(PlanIssue {
            kind: ObjectKind::User,
            source_id: "u5".into(),
            operation: "map".into(),
            message: "no mail".into(),
        });
        let summary = p.render(TableStyle {
            colour: false,
            summary_only: true,
        });
        assert_eq!(
            summary,
            "plan c: 1 to create, 1 to change, 1 to remove (4 Graph writes at least)\n  \
             steps: 1 create user, 1 deprovision (disable), 1 set manager, 1 update user\n\
             problem: user u5: no mail\n"
        );
    }

    #[test]
    fn steps_serialize_with_an_op_tag() {
        let step = Step::LinkUser {
            source_id: "u1".into(),
            user_principal_name: "bjensen@example.com".into(),
            object_id: "o1".into(),
        };
        let value = serde_json::to_value(&step).unwrap();
        assert_eq!(value["op"], "link_user");
        assert_eq!(serde_json::from_value::<Step>(value).unwrap(), step);
    }

    #[test]
    fn removals_count_every_kind_and_a_departure_once() {
        let deprovision = |kind, id: &str, action| Step::Deprovision {
            kind,
            source_id: id.into(),
            name: id.into(),
            object_id: format!("obj-{id}"),
            action,
            reason: DeprovisionReason::LeftScope,
        };
        let steps = vec![
            Step::AssignLicenses {
                source_id: "u1".into(),
                user_principal_name: "u1@example.com".into(),
                add: vec![],
                remove: vec!["e3".into(), "ems".into()],
            },
            Step::AssignLicenses {
                source_id: "u2".into(),
                user_principal_name: "u2@example.com".into(),
                add: vec![LicenseAssignment {
                    sku_id: "e5".into(),
                    disabled_plans: vec![],
                }],
                remove: vec![],
            },
            // u9 leaves: removing it from the group is part of its departure.
            Step::RemoveMembers {
                group_source_id: "g".into(),
                display_name: "G".into(),
                member_object_ids: vec!["obj-u1".into(), "OBJ-U9".into(), "obj-u2".into()],
            },
            Step::SetEnabled {
                source_id: "u3".into(),
                user_principal_name: "u3@example.com".into(),
                enabled: false,
            },
            deprovision(ObjectKind::User, "u9", RemoveAction::Disable),
            deprovision(ObjectKind::Group, "g-old", RemoveAction::Delete),
            // Only unlinked: nothing is removed from the tenant.
            deprovision(ObjectKind::Group, "g-kept", RemoveAction::Disable),
        ];
        let counts = RemovalCounts::of(&steps);
        assert_eq!(
            counts,
            RemovalCounts {
                users: 2,
                groups: 1,
                memberships: 2,
                licenses: 2,
            }
        );
        assert_eq!(counts.total(), 7);
        let destructive: Vec<bool> = steps.iter().map(Step::is_destructive).collect();
        assert_eq!(destructive, [true, false, true, true, true, true, true]);
    }

    #[test]
    fn breaker_weighs_each_kind_against_its_own_base() {
        let settings = BreakerSettings {
            max_count: 50,
            max_percent: 10.0,
        };
        let managed = RemovalCounts {
            users: 10,
            groups: 3,
            memberships: 30,
            licenses: 10,
        };
        let verdict = |removals| BreakerVerdict::new(&settings, removals, managed);
        // Two membership removals of 30 (6.7 %) do not trip it, though 2 of 10 users would.
        let few = verdict(RemovalCounts {
            memberships: 2,
            ..RemovalCounts::default()
        });
        assert!(!few.tripped);
        assert_eq!((few.destructive, few.linked_users), (2, 10));
        let many = verdict(RemovalCounts {
            memberships: 4,
            ..RemovalCounts::default()
        });
        assert!(many.tripped);
        let licenses = verdict(RemovalCounts {
            licenses: 2,
            ..RemovalCounts::default()
        });
        assert!(licenses.tripped);
        assert!(
            verdict(RemovalCounts {
                groups: 1,
                ..RemovalCounts::default()
            })
            .tripped
        );
        let summary = verdict(RemovalCounts {
            users: 1,
            memberships: 4,
            ..RemovalCounts::default()
        })
        .summary();
        assert_eq!(
            summary,
            "circuit breaker: 5 destructive operation(s) exceed the limit (more than 50 of a kind, \
             or more than 10% of what the connection manages of that kind): 1 user \
             disable/delete(s) of 10 linked users, 4 membership removal(s) of 30 managed \
             memberships"
        );
    }

    #[test]
    fn minimal_writes_count_member_chunks_of_twenty() {
        let p = plan(vec![
            Step::AddMembers {
                group_source_id: "g".into(),
                display_name: "G".into(),
                member_source_ids: (0..41).map(|i| i.to_string()).collect(),
            },
            Step::LinkUser {
                source_id: "u".into(),
                user_principal_name: "u@example.com".into(),
                object_id: "o".into(),
            },
            Step::SetEnabled {
                source_id: "u".into(),
                user_principal_name: "u@example.com".into(),
                enabled: false,
            },
        ]);
        assert_eq!(p.minimal_writes(), 3 + 1);
        assert_eq!(p.steps.iter().filter(|s| s.is_destructive()).count(), 1);
    }
}
