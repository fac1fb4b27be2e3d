//! Planning: the desired state (source → scope → mapping) against the stored state (links) and,
//! for identities not linked yet, the tenant (lookups by the match attribute, groups by name)
//! gives a [`Plan`]. Planning reads and never writes: `plan` and `sync` share it.
//!
//! Memory stays bounded by the changes, not by the source: users stream through page by page, an
//! unchanged linked user is settled by comparing one hash and leaves only its id and manager
//! reference behind.
//!
//! The parts, in the order a plan is built: [`users`] (page by page: link, restore, create,
//! update, license; then managers), [`groups`] (match or create, memberships), [`removals`]
//! (the sweep of a complete snapshot, a focused plan's departures), then the breaker's verdict.

mod draft;
mod groups;
mod licenses;
mod removals;
mod users;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use secrecy::SecretString;
use serde_json::Value;

use crate::directory::Directory;
use crate::mapping::MappingError;
use crate::model::{LicenseAssignment, ObjectKind, SourceGroup, SourceUser};
use crate::plan::{BreakerVerdict, Plan, PlanIssue, RemovalCounts, Step};
use crate::rule::{BreakerSettings, GroupSettings, ManagerSettings, Preferences, ScopeSettings};
use crate::source::{SnapshotPage, Source, SourceError};
use crate::state::{Link, StateError, StateStore, UnixMillis};
use draft::Draft;
pub use licenses::{desired_licenses, license_diff};
pub use removals::deprovision_step;

/// A user as the rule wants it in the tenant.
#[derive(Debug, Clone)]
pub struct DesiredUser {
    /// Graph properties (without accountEnabled and passwordProfile, which the engine owns).
    pub properties: BTreeMap<String, Value>,
    /// Properties whose value is the first free one of these candidates (UPN, mailNickname).
    pub unique_candidates: BTreeMap<String, Vec<String>>,
    /// The password to create the user with; `None`: generated at creation.
    pub password: Option<SecretString>,
    /// Why this user cannot be created (its mapped password is missing or too weak); a linked
    /// user needs no password and is unaffected.
    pub password_problem: Option<String>,
    /// `None`: licenses are not mapped; `Some(empty)`: mapped and empty
    /// (docs/design.md#licenses-and-manager). As mapped, a `sku_id` may be a SKU part number;
    /// the planner replaces it with the skuId before anything compares or plans licenses.
    pub licenses: Option<Vec<LicenseAssignment>>,
    /// Disabled plans keyed by a SKU reference of the other form than the mapped values
    /// ([`crate::mapping::MappedUser::sku_plans`]), applied when part numbers are resolved.
    pub sku_plans: BTreeMap<String, Vec<String>>,
    /// Why the mapped licenses cannot be planned (a part number the tenant does not have): the
    /// user's licenses are left as they are, and its other steps go ahead.
    pub license_problem: Option<String>,
    /// `None`: manager not mapped; `Some(None)`: mapped and cleared; else the source reference.
    pub manager: Option<Option<String>>,
}

/// A group as the rule wants it in the tenant.
#[derive(Debug, Clone, PartialEq)]
pub struct DesiredGroup {
    pub display_name: String,
    pub mail_nickname: String,
}

/// What the planner needs from a rule's mapping: evaluation of scope and attribute expressions.
pub trait RuleMapping: Send + Sync {
    /// The rule's scope filter for this user (true when there is no filter).
    fn in_scope(&self, user: &SourceUser) -> Result<bool, String>;
    /// Maps and validates a user; every problem is one message naming the property and rule.
    fn map_user(&self, user: &SourceUser) -> Result<DesiredUser, Vec<MappingError>>;
    fn map_group(&self, group: &SourceGroup) -> Result<DesiredGroup, Vec<MappingError>>;
}

/// A rule, ready to plan with.
pub struct Rule {
    pub name: String,
    /// Graph property that finds existing tenant users (userPrincipalName by default).
    pub match_attribute: String,
    pub preferences: Preferences,
    pub breaker: BreakerSettings,
    pub scope: ScopeSettings,
    pub groups: GroupSettings,
    pub manager: ManagerSettings,
    pub mapping: Box<dyn RuleMapping>,
    /// `passwordProfile.forceChangePasswordNextSignIn` of the users it creates (the mapping's
    /// `reset_password`, default true).
    pub force_change_password: bool,
    /// Days each object's history entries are kept.
    pub history_days: u32,
    /// Whether and how out-of-band changes in the tenant are found and repaired.
    pub drift: crate::drift::DriftSettings,
}

impl Rule {
    /// How long history entries are kept, in milliseconds.
    pub fn history_retention_ms(&self) -> i64 {
        i64::from(self.history_days) * 86_400_000
    }
}

/// Why planning failed as a whole.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error(transparent)]
    State(#[from] StateError),
    #[error("reading the tenant failed: {0}")]
    Directory(#[from] crate::directory::DirectoryError),
}

/// Things execution needs that are not part of the printable plan.
#[derive(Default)]
pub struct PlanExtras {
    /// Mapped passwords of users to create, by source id (absent: generate).
    pub passwords: HashMap<String, SecretString>,
    /// Tenant properties of users linked by match, by source id: the link's starting point.
    pub matched: HashMap<String, BTreeMap<String, Value>>,
    /// Members already in tenant groups matched by name, by group source id: adding them would
    /// be a wasted write.
    pub existing_members: HashMap<String, HashSet<String>>,
}

impl std::fmt::Debug for PlanExtras {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PlanExtras")
            .field("passwords", &format!("[{} REDACTED]", self.passwords.len()))
            .field("matched", &self.matched.len())
            .finish()
    }
}

/// A plan and its execution extras.
#[derive(Debug)]
pub struct Planned {
    pub plan: Plan,
    pub extras: PlanExtras,
}

/// Identities named by webhook events: a focused plan re-reads exactly these from the source
/// (never trusting the event's content) and plans only them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Focus {
    /// Source ids of users.
    pub users: BTreeSet<String>,
    /// Source ids of groups.
    pub groups: BTreeSet<String>,
}

impl Focus {
    pub fn is_empty(&self) -> bool {
        self.users.is_empty() && self.groups.is_empty()
    }
}

/// Inputs of one planning pass.
pub struct Planner<'a> {
    pub connection: &'a str,
    pub rule: &'a Rule,
    pub source: &'a dyn Source,
    pub directory: &'a dyn Directory,
    pub state: &'a dyn StateStore,
    pub now: UnixMillis,
    pub page_size: usize,
    /// `None`: the whole source (a full snapshot, swept when complete). `Some`: only these
    /// identities, as the source has them now. A focused plan never sweeps: an identity is
    /// deprovisioned only when it is named, linked, and gone from the source or out of scope.
    /// Group memberships of the named users change only through their groups (named, or the
    /// next full sync).
    pub focus: Option<&'a Focus>,
    /// Repairing drift: the links as the tenant has them (docs/design.md#drift).
    pub drift: Option<&'a crate::drift::DriftOverlay>,
}

/// A user the planner keeps after its page: enough to plan its manager and memberships.
struct Kept {
    upn: String,
    linked_manager: Option<String>,
    manager_ref: Option<Option<String>>,
    /// Linked already, or linked/created by this plan.
    provisioned: bool,
    /// The tenant object it is (or is being) linked to; `None` while its create is pending.
    object_id: Option<String>,
}

impl Kept {
    /// A linked user, as last applied.
    fn linked(link: &Link, manager_ref: Option<Option<String>>) -> Kept {
        Kept {
            upn: applied_upn(link),
            linked_manager: link.manager.clone(),
            manager_ref,
            provisioned: true,
            object_id: Some(link.object_id.clone()),
        }
    }
}

/// The UPN a user link last applied (its object id when none was).
fn applied_upn(link: &Link) -> String {
    link.applied
        .get("userPrincipalName")
        .and_then(Value::as_str)
        .unwrap_or(&link.object_id)
        .to_owned()
}

impl Planner<'_> {
    /// A link as the tenant has it when drift is repaired; else as stored.
    fn as_in_tenant(&self, link: Link) -> Link {
        match self.drift {
            Some(overlay) => overlay.correct(link),
            None => link,
        }
    }

    /// Builds the plan of one run.
    pub async fn plan(&self) -> Result<Planned, PlanError> {
        let mut draft = Draft::new();
        let scope_members = self.scope_members(&mut draft).await?;
        self.read_users(&mut draft, scope_members.as_ref()).await?;
        if let Some(focus) = self.focus {
            self.add_linked_context(focus, &mut draft).await?;
        }
        self.plan_managers(&mut draft);
        if self.rule.groups.enabled {
            self.plan_groups(&mut draft).await?;
        }
        self.plan_removals(&mut draft).await?;
        let steps = std::mem::take(&mut draft.steps).into_ordered();
        let breaker = self
            .breaker_verdict(&steps, draft.managed_memberships, draft.managed_licenses)
            .await?;
        Ok(Planned {
            plan: Plan {
                drift: Vec::new(),
                connection: self.connection.to_owned(),
                steps,
                issues: draft.issues,
                snapshot_complete: draft.snapshot_complete,
                breaker,
            },
            extras: draft.extras,
        })
    }

    /// Scope by source groups: their members, read once. A scope group that vanished would put
    /// everyone out of scope: the snapshot is then not swept.
    async fn scope_members(&self, draft: &mut Draft) -> Result<Option<HashSet<String>>, PlanError> {
        if self.rule.scope.groups.is_empty() {
            return Ok(None);
        }
        let mut members = HashSet::new();
        for id in &self.rule.scope.groups {
            match self.source.fetch_group(id).await? {
                Some(group) => members.extend(group.members),
                None => {
                    draft.snapshot_complete = false;
                    draft.group_issue(
                        id,
                        "scope",
                        format!(
                            "scope group {id} is not in the source; check rules.scope.groups (nothing is deprovisioned until it is found)"
                        ),
                    );
                }
            }
        }
        Ok(Some(members))
    }

    /// Reads the source page by page (a focused plan: its identities, as one page) and plans
    /// each page's users; groups are kept for later.
    async fn read_users(
        &self,
        draft: &mut Draft,
        scope_members: Option<&HashSet<String>>,
    ) -> Result<(), PlanError> {
        let mut focused_page = match self.focus {
            Some(focus) => {
                draft.snapshot_complete = false;
                Some(self.focused_page(focus).await?)
            }
            None => None,
        };
        // The next page is read while this one is planned: a source that converts its records
        // (the file source) does so beside the mapping rather than between pages.
        let mut read_ahead: Option<Result<SnapshotPage, SourceError>> = None;
        loop {
            let page = match (focused_page.take(), read_ahead.take()) {
                (Some(page), _) => page,
                (None, Some(read)) => read?,
                (None, None) if self.focus.is_some() => break,
                (None, None) => self.source.snapshot_page(None, self.page_size).await?,
            };
            record_read_errors(draft, &page);
            draft.source_groups.extend(page.groups);
            let Some(next) = page.next else {
                self.plan_user_page(draft, page.users, scope_members)
                    .await?;
                break;
            };
            let (planned, read) = tokio::join!(
                self.plan_user_page(draft, page.users, scope_members),
                self.source.snapshot_page(Some(&next), self.page_size)
            );
            planned?;
            read_ahead = Some(read);
        }
        Ok(())
    }

    /// A focused plan's identities, read one by one from the source into a single page.
    async fn focused_page(&self, focus: &Focus) -> Result<SnapshotPage, PlanError> {
        let mut page = SnapshotPage::default();
        for id in &focus.users {
            if let Some(user) = self.source.fetch_user(id).await? {
                page.users.push(user);
            }
        }
        if self.rule.groups.enabled {
            for id in &focus.groups {
                if let Some(group) = self.source.fetch_group(id).await? {
                    page.groups.push(group);
                }
            }
        }
        Ok(page)
    }

    /// The circuit breaker's verdict on the plan's steps ([`BreakerVerdict`]): users and groups
    /// weighed against the linked ones, memberships and licenses against those the plan read.
    async fn breaker_verdict(
        &self,
        steps: &[Step],
        memberships: u64,
        licenses: u64,
    ) -> Result<BreakerVerdict, PlanError> {
        let managed = RemovalCounts {
            users: self
                .state
                .count_links(self.connection, ObjectKind::User)
                .await?,
            groups: self
                .state
                .count_links(self.connection, ObjectKind::Group)
                .await?,
            memberships,
            licenses,
        };
        Ok(BreakerVerdict::new(
            &self.rule.breaker,
            RemovalCounts::of(steps),
            managed,
        ))
    }
}

/// A record the source could not read: an issue; the identity is left alone, and a record
/// without an id leaves its kind's snapshot incomplete (not swept).
fn record_read_errors(draft: &mut Draft, page: &SnapshotPage) {
    for error in &page.errors {
        match (&error.source_id, error.kind) {
            (Some(id), ObjectKind::User) => {
                draft.protected.insert(id.clone());
            }
            (Some(id), ObjectKind::Group) => {
                draft.protected_groups.insert(id.clone());
            }
            (None, ObjectKind::User) => draft.snapshot_complete = false,
            (None, ObjectKind::Group) => draft.groups_complete = false,
        }
        draft.issues.push(PlanIssue {
            kind: error.kind,
            source_id: error.source_id.clone().unwrap_or_default(),
            operation: "read".into(),
            message: format!("{}: {}", error.location, error.message),
        });
    }
}
