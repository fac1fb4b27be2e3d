//! Planning: the desired state (source → scope → mapping) against the stored state (links) and,
//! for identities not linked yet, the tenant (lookups by the match attribute, groups by name)
//! gives a [`Plan`]. Planning reads and never writes: `plan` and `sync` share it.
//!
//! Memory stays bounded by the changes, not by the source: users stream through page by page, an
//! unchanged linked user is settled by comparing one hash and leaves only its id and manager
//! reference behind.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use secrecy::SecretString;
use serde_json::Value;

use crate::directory::Directory;
use crate::hash::{same_value, user_state_hash};
use crate::model::{LicenseAssignment, ObjectKind, SourceGroup, SourceUser};
use crate::plan::{
    AttributeChange, BreakerVerdict, DeprovisionReason, Plan, PlanIssue, RemovalCounts,
    RemoveAction, Step,
};
use crate::rule::{
    BreakerSettings, GroupSettings, ManagerReference, ManagerSettings, Preferences, ScopeSettings,
};
use crate::source::{Source, SourceError};
use crate::state::{Link, StateError, StateStore, UnixMillis};

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
    /// `None`: licenses are not mapped; `Some(empty)`: mapped and empty (DESIGN §5).
    pub licenses: Option<Vec<LicenseAssignment>>,
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
    fn map_user(&self, user: &SourceUser) -> Result<DesiredUser, Vec<String>>;
    fn map_group(&self, group: &SourceGroup) -> Result<DesiredGroup, Vec<String>>;
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

impl Planner<'_> {
    /// Builds the plan of one run.
    pub async fn plan(&self) -> Result<Planned, PlanError> {
        let rule = self.rule;
        let prefs = &rule.preferences;
        let mut steps_groups = Vec::new();
        let mut steps_users = Vec::new();
        let mut steps_updates = Vec::new();
        let mut steps_licenses = Vec::new();
        let mut steps_managers = Vec::new();
        let mut steps_members = Vec::new();
        let mut steps_destructive = Vec::new();
        let mut issues = Vec::new();
        let mut extras = PlanExtras::default();
        let mut snapshot_complete = true;
        // A group record without an id (or a source that cannot say which groups it has) leaves
        // the group snapshot incomplete: groups are not swept, users still are.
        let mut groups_complete = true;
        // The breaker's bases of memberships and licenses: what the plan read.
        let mut managed_licenses = 0u64;
        let mut managed_memberships = 0u64;

        // Scope by source groups: their members, read once.
        let scope_members: Option<HashSet<String>> = if rule.scope.groups.is_empty() {
            None
        } else {
            let mut members = HashSet::new();
            for id in &rule.scope.groups {
                match self.source.fetch_group(id).await? {
                    Some(group) => members.extend(group.members),
                    None => {
                        // A scope group that vanished would put everyone out of scope: refuse to
                        // sweep on that basis.
                        snapshot_complete = false;
                        issues.push(PlanIssue {
                            kind: ObjectKind::Group,
                            source_id: id.clone(),
                            operation: "scope".into(),
                            message: format!(
                                "scope group {id} is not in the source; check rules.scope.groups (nothing is deprovisioned until it is found)"
                            ),
                        });
                    }
                }
            }
            Some(members)
        };

        let mut kept: BTreeMap<String, Kept> = BTreeMap::new();
        // Identities present but not to be touched (record errors, mapping errors, backoff).
        let mut protected: HashSet<String> = HashSet::new();
        let mut dn_index: HashMap<String, String> = HashMap::new();
        let mut source_groups: Vec<SourceGroup> = Vec::new();
        let mut claimed: HashSet<(String, String)> = HashSet::new();
        // Groups whose source record had a problem: never deprovisioned on that basis.
        let mut protected_groups: HashSet<String> = HashSet::new();

        // A focused plan reads its identities one by one into a single page.
        let mut focused_page = match self.focus {
            Some(focus) => {
                snapshot_complete = false;
                let mut page = crate::source::SnapshotPage::default();
                for id in &focus.users {
                    if let Some(user) = self.source.fetch_user(id).await? {
                        page.users.push(user);
                    }
                }
                if rule.groups.enabled {
                    for id in &focus.groups {
                        if let Some(group) = self.source.fetch_group(id).await? {
                            page.groups.push(group);
                        }
                    }
                }
                Some(page)
            }
            None => None,
        };
        let mut cursor = None;
        loop {
            let page = match focused_page.take() {
                Some(page) => page,
                None if self.focus.is_some() => break,
                None => {
                    self.source
                        .snapshot_page(cursor.as_ref(), self.page_size)
                        .await?
                }
            };
            for error in &page.errors {
                match (&error.source_id, error.kind) {
                    (Some(id), ObjectKind::User) => {
                        protected.insert(id.clone());
                    }
                    (Some(id), ObjectKind::Group) => {
                        protected_groups.insert(id.clone());
                    }
                    (None, ObjectKind::User) => snapshot_complete = false,
                    (None, ObjectKind::Group) => groups_complete = false,
                }
                issues.push(PlanIssue {
                    kind: error.kind,
                    source_id: error.source_id.clone().unwrap_or_default(),
                    operation: "read".into(),
                    message: format!("{}: {}", error.location, error.message),
                });
            }
            source_groups.extend(page.groups);
            self.plan_user_page(
                page.users,
                scope_members.as_ref(),
                &mut kept,
                &mut protected,
                &mut dn_index,
                &mut extras,
                &mut issues,
                &mut claimed,
                &mut managed_licenses,
                (&mut steps_users, &mut steps_updates, &mut steps_licenses),
            )
            .await?;
            match page.next {
                Some(next) => cursor = Some(next),
                None => break,
            }
        }

        if let Some(focus) = self.focus {
            self.add_linked_context(focus, &source_groups, &mut kept, &protected)
                .await?;
        }
        self.plan_managers(&kept, &dn_index, &mut steps_managers, &mut issues);
        if rule.groups.enabled {
            managed_memberships = self
                .plan_groups(
                    &source_groups,
                    &kept,
                    &mut extras,
                    &mut issues,
                    &mut steps_groups,
                    &mut steps_members,
                )
                .await?;
        }

        if let Some(focus) = self.focus
            && prefs.allow_deprovision
        {
            self.plan_focused_removals(
                focus,
                &kept,
                &protected,
                &protected_groups,
                &source_groups,
                &mut steps_destructive,
            )
            .await?;
        }
        if snapshot_complete && prefs.allow_deprovision {
            let groups = groups_complete.then_some(source_groups.as_slice());
            self.plan_sweep(
                &kept,
                &protected,
                &protected_groups,
                groups,
                &mut steps_destructive,
            )
            .await?;
        }

        // Disables of users disabled at the source also count for the breaker; they come last.
        let mut enables = Vec::new();
        for step in std::mem::take(&mut steps_updates) {
            match step {
                Step::SetEnabled { enabled: false, .. } => steps_destructive.insert(0, step),
                Step::SetEnabled { enabled: true, .. } => enables.push(step),
                other => steps_updates.push(other),
            }
        }
        steps_updates.extend(enables);

        let mut steps = steps_groups;
        steps.extend(steps_users);
        steps.extend(steps_updates);
        steps.extend(steps_licenses);
        steps.extend(steps_managers);
        steps.extend(steps_members);
        steps.extend(steps_destructive);
        let breaker = self
            .breaker_verdict(&steps, managed_memberships, managed_licenses)
            .await?;
        Ok(Planned {
            plan: Plan {
                connection: self.connection.to_owned(),
                steps,
                issues,
                snapshot_complete,
                breaker,
            },
            extras,
        })
    }

    #[allow(clippy::too_many_arguments)]
    async fn plan_user_page(
        &self,
        users: Vec<SourceUser>,
        scope_members: Option<&HashSet<String>>,
        kept: &mut BTreeMap<String, Kept>,
        protected: &mut HashSet<String>,
        dn_index: &mut HashMap<String, String>,
        extras: &mut PlanExtras,
        issues: &mut Vec<PlanIssue>,
        claimed: &mut HashSet<(String, String)>,
        managed_licenses: &mut u64,
        (users_out, updates_out, licenses_out): (&mut Vec<Step>, &mut Vec<Step>, &mut Vec<Step>),
    ) -> Result<(), PlanError> {
        let rule = self.rule;
        let prefs = &rule.preferences;
        let mut mapped: Vec<(SourceUser, DesiredUser)> = Vec::with_capacity(users.len());
        for user in users {
            if rule.manager.reference == ManagerReference::Dn
                && let Some(dn) = user
                    .attributes
                    .get(&rule.manager.dn_attribute)
                    .and_then(|v| v.as_text())
            {
                dn_index.insert(dn.to_ascii_lowercase(), user.id.clone());
            }
            if protected.contains(&user.id) {
                continue;
            }
            if scope_members.is_some_and(|members| !members.contains(&user.id)) {
                continue;
            }
            match rule.mapping.in_scope(&user) {
                Ok(true) => {}
                Ok(false) => continue,
                Err(message) => {
                    protected.insert(user.id.clone());
                    issues.push(user_issue(&user.id, "scope", message));
                    continue;
                }
            }
            match rule.mapping.map_user(&user) {
                Ok(desired) => mapped.push((user, desired)),
                Err(messages) => {
                    protected.insert(user.id.clone());
                    for message in messages {
                        issues.push(user_issue(&user.id, "mapping", message));
                    }
                }
            }
        }
        if mapped.is_empty() {
            return Ok(());
        }

        let ids: Vec<String> = mapped.iter().map(|(u, _)| u.id.clone()).collect();
        let links: HashMap<String, Link> = self
            .state
            .get_links(self.connection, ObjectKind::User, &ids)
            .await?
            .into_iter()
            .map(|l| (l.source_id.clone(), l))
            .collect();
        // Objects in backoff after a failure wait for their retry time.
        let waiting: HashSet<String> = self
            .state
            .get_errors(self.connection, ObjectKind::User, &ids)
            .await?
            .into_iter()
            .filter(|e| e.next_retry_at > self.now)
            .map(|e| e.source_id)
            .collect();
        let (links, restorable) = self.settle_deleted_links(links, &mapped, &waiting).await?;
        *managed_licenses += links.values().map(|l| l.licenses.len() as u64).sum::<u64>();

        let mut unlinked: Vec<(SourceUser, DesiredUser)> = Vec::new();
        for (user, desired) in mapped {
            if waiting.contains(&user.id) {
                protected.insert(user.id.clone());
                continue;
            }
            match links.get(&user.id) {
                Some(link) => {
                    if restorable.contains(&user.id)
                        && let Some(deleted_at) = link.deleted_at
                    {
                        users_out.push(Step::RestoreUser {
                            source_id: user.id.clone(),
                            user_principal_name: link
                                .applied
                                .get("userPrincipalName")
                                .and_then(Value::as_str)
                                .unwrap_or(&link.object_id)
                                .to_owned(),
                            object_id: link.object_id.clone(),
                            deleted_at,
                        });
                    }
                    let upn = link
                        .applied
                        .get("userPrincipalName")
                        .and_then(Value::as_str)
                        .unwrap_or(&link.object_id)
                        .to_owned();
                    let desired_licenses = desired_licenses(prefs, &desired, &link.licenses);
                    let hash =
                        user_state_hash(&desired.properties, user.enabled, &desired_licenses);
                    if hash != link.hash {
                        let issue = self.plan_linked_changes(
                            &user,
                            &desired,
                            link,
                            &upn,
                            &desired_licenses,
                            updates_out,
                            licenses_out,
                        );
                        issues.extend(issue);
                    }
                    kept.insert(
                        user.id.clone(),
                        Kept {
                            upn,
                            linked_manager: link.manager.clone(),
                            manager_ref: desired.manager.clone(),
                            provisioned: true,
                            object_id: Some(link.object_id.clone()),
                        },
                    );
                }
                None => {
                    if !user.enabled && !prefs.provision_disabled_users {
                        continue;
                    }
                    unlinked.push((user, desired));
                }
            }
        }
        if unlinked.is_empty() {
            return Ok(());
        }

        // Existing tenant users, found by the match attribute, are linked rather than duplicated.
        let match_attr = &rule.match_attribute;
        let values: Vec<String> = unlinked
            .iter()
            .filter_map(|(_, d)| match_value(d, match_attr))
            .collect();
        let mut select: Vec<String> = unlinked
            .iter()
            .flat_map(|(_, d)| d.properties.keys().cloned())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        // accountEnabled cannot be mapped; usageLocation tells whether a matched user can be
        // licensed when the rule does not map it.
        for extra in ["accountEnabled", "usageLocation"] {
            if !select.iter().any(|s| s == extra) {
                select.push(extra.into());
            }
        }
        let found = if values.is_empty() {
            Vec::new()
        } else {
            self.directory
                .find_users(match_attr, &values, &select)
                .await?
        };
        let mut by_value: HashMap<String, Vec<crate::directory::TenantUser>> = HashMap::new();
        for tenant_user in found {
            let key = if match_attr == "userPrincipalName" {
                Some(tenant_user.user_principal_name.to_ascii_lowercase())
            } else {
                tenant_user
                    .properties
                    .get(match_attr)
                    .and_then(Value::as_str)
                    .map(str::to_ascii_lowercase)
            };
            if let Some(key) = key {
                by_value.entry(key).or_default().push(tenant_user);
            }
        }

        for (user, mut desired) in unlinked {
            let key = match_value(&desired, match_attr).map(|v| v.to_ascii_lowercase());
            let matches = key.as_ref().and_then(|k| by_value.get(k));
            match matches.map(Vec::as_slice) {
                Some([tenant_user]) => {
                    users_out.push(Step::LinkUser {
                        source_id: user.id.clone(),
                        user_principal_name: tenant_user.user_principal_name.clone(),
                        object_id: tenant_user.id.clone(),
                    });
                    // The link starts from the tenant's values of exactly the mapped
                    // properties, so that the stored hash settles once they are applied.
                    let mut tenant_values = tenant_user.properties.clone();
                    tenant_values.insert(
                        "userPrincipalName".into(),
                        Value::String(tenant_user.user_principal_name.clone()),
                    );
                    let current: BTreeMap<String, Value> = desired
                        .properties
                        .keys()
                        .filter_map(|k| tenant_values.get(k).map(|v| (k.clone(), v.clone())))
                        .filter(|(_, v)| !v.is_null())
                        .collect();
                    let tenant_enabled = tenant_user
                        .properties
                        .get("accountEnabled")
                        .and_then(Value::as_bool)
                        .unwrap_or(true);
                    let pseudo_link =
                        matched_link(&user.id, tenant_user, &current, tenant_enabled, self.now);
                    let desired_licenses = desired_licenses(prefs, &desired, &[]);
                    let issue = self.plan_linked_changes(
                        &user,
                        &desired,
                        &pseudo_link,
                        &tenant_user.user_principal_name,
                        &desired_licenses,
                        updates_out,
                        licenses_out,
                    );
                    issues.extend(issue);
                    let mut starting_point = current;
                    starting_point.insert("accountEnabled".into(), Value::Bool(tenant_enabled));
                    extras.matched.insert(user.id.clone(), starting_point);
                    kept.insert(
                        user.id.clone(),
                        Kept {
                            upn: tenant_user.user_principal_name.clone(),
                            linked_manager: None,
                            manager_ref: desired.manager.clone(),
                            provisioned: true,
                            object_id: Some(tenant_user.id.clone()),
                        },
                    );
                }
                Some(several) if several.len() > 1 => {
                    protected.insert(user.id.clone());
                    issues.push(user_issue(
                        &user.id,
                        "match",
                        format!(
                            "{} tenant users have {match_attr} {:?}; link one by hand or make the value unique",
                            several.len(),
                            key.unwrap_or_default()
                        ),
                    ));
                }
                _ => {
                    if !self.rule.preferences.allow_create {
                        continue;
                    }
                    if let Some(problem) = &desired.password_problem {
                        protected.insert(user.id.clone());
                        issues.push(user_issue(&user.id, "create", problem.clone()));
                        continue;
                    }
                    if let Err(message) = self.resolve_unique(&mut desired, claimed).await {
                        protected.insert(user.id.clone());
                        issues.push(user_issue(&user.id, "create", message));
                        continue;
                    }
                    let upn = desired
                        .properties
                        .get("userPrincipalName")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_owned();
                    if let Some(password) = desired.password.clone() {
                        extras.passwords.insert(user.id.clone(), password);
                    }
                    users_out.push(Step::CreateUser {
                        source_id: user.id.clone(),
                        user_principal_name: upn.clone(),
                        properties: desired.properties.clone(),
                        enabled: user.enabled,
                    });
                    let licenses = desired_licenses(prefs, &desired, &[]);
                    match license_step(&user.id, &upn, &desired, &BTreeMap::new(), &[], &licenses) {
                        Ok(step) => licenses_out.extend(step),
                        Err(issue) => issues.push(issue),
                    }
                    kept.insert(
                        user.id.clone(),
                        Kept {
                            upn,
                            linked_manager: None,
                            manager_ref: desired.manager.clone(),
                            provisioned: true,
                            object_id: None,
                        },
                    );
                }
            }
        }
        Ok(())
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

    /// Picks, for every property with unique candidates, the first value that no tenant user
    /// has and no other user of this run has claimed.
    async fn resolve_unique(
        &self,
        desired: &mut DesiredUser,
        claimed: &mut HashSet<(String, String)>,
    ) -> Result<(), String> {
        for (property, candidates) in &desired.unique_candidates {
            let taken: HashSet<String> = self
                .directory
                .find_users(property, candidates, std::slice::from_ref(property))
                .await
                .map_err(|e| e.to_string())?
                .into_iter()
                .filter_map(|u| {
                    if property == "userPrincipalName" {
                        Some(u.user_principal_name.to_ascii_lowercase())
                    } else {
                        u.properties
                            .get(property)
                            .and_then(Value::as_str)
                            .map(str::to_ascii_lowercase)
                    }
                })
                .collect();
            let free = candidates
                .iter()
                .find(|c| {
                    let lower = c.to_ascii_lowercase();
                    !taken.contains(&lower) && !claimed.contains(&(property.clone(), lower))
                })
                .ok_or_else(|| {
                    format!(
                        "every candidate for {property} is taken in the tenant ({}); add candidates to the unique() expression",
                        candidates.join(", ")
                    )
                })?;
            claimed.insert((property.clone(), free.to_ascii_lowercase()));
            desired
                .properties
                .insert(property.clone(), Value::String(free.clone()));
        }
        Ok(())
    }

    /// Updates, enable/disable and licenses of a linked (or matched) user; the issue that holds
    /// its license additions back, if any.
    #[allow(clippy::too_many_arguments)]
    fn plan_linked_changes(
        &self,
        user: &SourceUser,
        desired: &DesiredUser,
        link: &Link,
        upn: &str,
        desired_licenses: &[LicenseAssignment],
        updates_out: &mut Vec<Step>,
        licenses_out: &mut Vec<Step>,
    ) -> Option<PlanIssue> {
        let prefs = &self.rule.preferences;
        if prefs.allow_update {
            let changes: Vec<AttributeChange> = desired
                .properties
                .iter()
                .filter(|(name, _)| !desired.unique_candidates.contains_key(*name))
                .filter(|(name, value)| !same_value(link.applied.get(*name), Some(value)))
                .map(|(name, value)| AttributeChange {
                    name: name.clone(),
                    old: link.applied.get(name).cloned().unwrap_or(Value::Null),
                    new: value.clone(),
                })
                .collect();
            if !changes.is_empty() {
                updates_out.push(Step::UpdateUser {
                    source_id: user.id.clone(),
                    user_principal_name: upn.to_owned(),
                    changes,
                });
            }
        }
        if prefs.allow_disable && link.enabled != user.enabled {
            updates_out.push(Step::SetEnabled {
                source_id: user.id.clone(),
                user_principal_name: upn.to_owned(),
                enabled: user.enabled,
            });
        }
        match license_step(
            &user.id,
            upn,
            desired,
            &link.applied,
            &link.licenses,
            desired_licenses,
        ) {
            Ok(step) => {
                licenses_out.extend(step);
                None
            }
            Err(issue) => Some(issue),
        }
    }

    fn plan_managers(
        &self,
        kept: &BTreeMap<String, Kept>,
        dn_index: &HashMap<String, String>,
        out: &mut Vec<Step>,
        issues: &mut Vec<PlanIssue>,
    ) {
        for (id, user) in kept {
            let Some(reference) = &user.manager_ref else {
                continue;
            };
            let desired = match reference {
                None => None,
                Some(reference) => {
                    let manager_id = match self.rule.manager.reference {
                        ManagerReference::Id => Some(reference.clone()),
                        ManagerReference::Dn => {
                            dn_index.get(&reference.to_ascii_lowercase()).cloned()
                        }
                    };
                    match manager_id {
                        Some(m) if kept.get(&m).is_some_and(|k| k.provisioned) && &m != id => {
                            Some(m)
                        }
                        // A focused plan knows the DNs of its own users only: a manager named
                        // by DN elsewhere is left as it is until the next full sync.
                        None if self.focus.is_some() => continue,
                        _ => {
                            issues.push(user_issue(
                                id,
                                "manager",
                                format!(
                                    "manager {reference:?} is not a user this rule provisions; it is set once the manager is in scope"
                                ),
                            ));
                            continue;
                        }
                    }
                }
            };
            if desired == user.linked_manager {
                continue;
            }
            match desired {
                Some(manager_source_id) => out.push(Step::SetManager {
                    source_id: id.clone(),
                    user_principal_name: user.upn.clone(),
                    manager_source_id,
                }),
                None => out.push(Step::RemoveManager {
                    source_id: id.clone(),
                    user_principal_name: user.upn.clone(),
                }),
            }
        }
    }

    async fn plan_groups(
        &self,
        groups: &[SourceGroup],
        kept: &BTreeMap<String, Kept>,
        extras: &mut PlanExtras,
        issues: &mut Vec<PlanIssue>,
        groups_out: &mut Vec<Step>,
        members_out: &mut Vec<Step>,
    ) -> Result<u64, PlanError> {
        let settings = &self.rule.groups;
        let in_scope: Vec<&SourceGroup> = groups
            .iter()
            .filter(|g| settings.only.is_empty() || settings.only.contains(&g.id))
            .collect();
        let ids: Vec<String> = in_scope.iter().map(|g| g.id.clone()).collect();
        let links: HashMap<String, Link> = self
            .state
            .get_links(self.connection, ObjectKind::Group, &ids)
            .await?
            .into_iter()
            .map(|l| (l.source_id.clone(), l))
            .collect();
        let managed_memberships = links.values().map(|l| l.members.len() as u64).sum();
        // Tenant ids of the in-scope users, known from their links or from this plan's
        // matches (kept while their pages were planned): no second read of every member's link.
        let user_links: HashMap<&str, &str> = kept
            .iter()
            .filter_map(|(id, k)| k.object_id.as_deref().map(|o| (id.as_str(), o)))
            .collect();

        for group in in_scope {
            let desired = match self.rule.mapping.map_group(group) {
                Ok(desired) => desired,
                Err(messages) => {
                    for message in messages {
                        issues.push(PlanIssue {
                            kind: ObjectKind::Group,
                            source_id: group.id.clone(),
                            operation: "mapping".into(),
                            message,
                        });
                    }
                    continue;
                }
            };
            // Members this rule manages in the group (none yet for a group matched or created now).
            let managed: Vec<String> = match links.get(&group.id) {
                Some(link) => link.members.clone(),
                None => {
                    let found = self
                        .directory
                        .find_groups_by_name(&desired.display_name)
                        .await?;
                    match found.as_slice() {
                        [] => {
                            groups_out.push(Step::CreateGroup {
                                source_id: group.id.clone(),
                                display_name: desired.display_name.clone(),
                                mail_nickname: desired.mail_nickname.clone(),
                                kind: settings.kind,
                            });
                            Vec::new()
                        }
                        [tenant_group] => {
                            groups_out.push(Step::MatchGroup {
                                source_id: group.id.clone(),
                                display_name: tenant_group.display_name.clone(),
                                object_id: tenant_group.id.clone(),
                            });
                            // Its current members: adding them again would be a wasted write.
                            let existing: HashSet<String> = self
                                .directory
                                .group_members(&tenant_group.id)
                                .await?
                                .into_iter()
                                .collect();
                            extras.existing_members.insert(group.id.clone(), existing);
                            Vec::new()
                        }
                        several => {
                            issues.push(PlanIssue {
                                kind: ObjectKind::Group,
                                source_id: group.id.clone(),
                                operation: "match".into(),
                                message: format!(
                                    "{} tenant groups are named {:?}; rename all but one, or delete the extras",
                                    several.len(),
                                    desired.display_name
                                ),
                            });
                            continue;
                        }
                    }
                }
            };
            let managed: HashSet<String> = managed.into_iter().collect();
            let mut desired_object_ids: HashSet<String> = HashSet::new();
            let mut add: Vec<String> = Vec::new();
            for member in group.members.iter().filter(|m| kept.contains_key(*m)) {
                match user_links.get(member.as_str()) {
                    Some(&object_id) => {
                        desired_object_ids.insert(object_id.to_owned());
                        // A member the tenant group already has stays in the step: the
                        // executor sends no write for it but records it as managed.
                        if !managed.contains(object_id) {
                            add.push(member.clone());
                        }
                    }
                    // Created or linked by this plan: its id is known once that step ran.
                    None => add.push(member.clone()),
                }
            }
            add.sort();
            add.dedup();
            let mut remove: Vec<String> = managed
                .iter()
                .filter(|m| !desired_object_ids.contains(*m))
                .cloned()
                .collect();
            remove.sort();
            if !add.is_empty() {
                members_out.push(Step::AddMembers {
                    group_source_id: group.id.clone(),
                    display_name: desired.display_name.clone(),
                    member_source_ids: add,
                });
            }
            if !remove.is_empty() {
                members_out.push(Step::RemoveMembers {
                    group_source_id: group.id.clone(),
                    display_name: desired.display_name.clone(),
                    member_object_ids: remove,
                });
            }
        }
        Ok(managed_memberships)
    }

    /// A focused plan's users are planned against the rest of the rule's identities as they were
    /// last applied: managers (referenced by id) and members of the named groups that are linked
    /// already join `kept` as context, so that their references resolve and a group's other
    /// managed members are not taken for departures. Named users never join as context: not
    /// planned means out of scope, gone or held back.
    async fn add_linked_context(
        &self,
        focus: &Focus,
        groups: &[SourceGroup],
        kept: &mut BTreeMap<String, Kept>,
        protected: &HashSet<String>,
    ) -> Result<(), PlanError> {
        let mut wanted: BTreeSet<String> = BTreeSet::new();
        if self.rule.manager.reference == ManagerReference::Id {
            wanted.extend(
                kept.values()
                    .filter_map(|k| k.manager_ref.clone().flatten()),
            );
        }
        for group in groups {
            wanted.extend(group.members.iter().cloned());
        }
        let wanted: Vec<String> = wanted
            .into_iter()
            .filter(|id| {
                !kept.contains_key(id) && !focus.users.contains(id) && !protected.contains(id)
            })
            .collect();
        for chunk in wanted.chunks(self.page_size.max(1)) {
            for link in self
                .state
                .get_links(self.connection, ObjectKind::User, chunk)
                .await?
                .into_iter()
                // A user this connection deleted is nobody's member or manager.
                .filter(|link| !link.is_deleted())
            {
                let upn = link
                    .applied
                    .get("userPrincipalName")
                    .and_then(Value::as_str)
                    .unwrap_or(&link.object_id)
                    .to_owned();
                kept.insert(
                    link.source_id.clone(),
                    Kept {
                        upn,
                        linked_manager: link.manager.clone(),
                        manager_ref: None,
                        provisioned: true,
                        object_id: Some(link.object_id),
                    },
                );
            }
        }
        Ok(())
    }

    /// Sorts out the links of users this connection deleted ([`Link::deleted_at`]) among a
    /// page's links. A deleted user back in scope is restored when it may be provisioned
    /// (`allow_create`, and enabled unless disabled users are provisioned) and Graph still holds
    /// it in its deleted items: its link stays, and its id is in the returned set (users
    /// `waiting` for a retry are not asked about). Any other
    /// deleted link is left out, so that its user is matched or created like a new one (a create
    /// replaces the link).
    async fn settle_deleted_links(
        &self,
        mut links: HashMap<String, Link>,
        mapped: &[(SourceUser, DesiredUser)],
        waiting: &HashSet<String>,
    ) -> Result<(HashMap<String, Link>, HashSet<String>), PlanError> {
        let prefs = &self.rule.preferences;
        let candidates: HashMap<String, String> = mapped
            .iter()
            .filter(|(user, _)| !waiting.contains(&user.id))
            .filter(|(user, _)| {
                prefs.allow_create && (user.enabled || prefs.provision_disabled_users)
            })
            .filter_map(|(user, _)| links.get(&user.id))
            .filter(|link| link.restorable_at(self.now))
            .map(|link| (link.object_id.clone(), link.source_id.clone()))
            .collect();
        let restorable: HashSet<String> = if candidates.is_empty() {
            HashSet::new()
        } else {
            let object_ids: Vec<String> = candidates.keys().cloned().collect();
            self.directory
                .restorable_users(&object_ids)
                .await?
                .into_iter()
                .filter_map(|object_id| candidates.get(&object_id).cloned())
                .collect()
        };
        links.retain(|source_id, link| !link.is_deleted() || restorable.contains(source_id));
        Ok((links, restorable))
    }

    /// The named identities that are linked but were not planned: gone from the source or out of
    /// scope now. Deprovisioned like a sweep would (held back ones are left alone).
    async fn plan_focused_removals(
        &self,
        focus: &Focus,
        kept: &BTreeMap<String, Kept>,
        protected: &HashSet<String>,
        protected_groups: &HashSet<String>,
        groups: &[SourceGroup],
        out: &mut Vec<Step>,
    ) -> Result<(), PlanError> {
        let action = self.rule.preferences.remove_action;
        let departed: Vec<String> = focus
            .users
            .iter()
            .filter(|id| !kept.contains_key(*id) && !protected.contains(*id))
            .cloned()
            .collect();
        let held: HashSet<String> = kept
            .values()
            .filter_map(|k| k.object_id.as_deref())
            .map(str::to_ascii_lowercase)
            .collect();
        let mut links = self
            .state
            .get_links(self.connection, ObjectKind::User, &departed)
            .await?;
        // Deleted already; the sweep forgets them once Graph has purged them.
        links.retain(|link| !link.is_deleted());
        links.sort_by(|a, b| a.source_id.cmp(&b.source_id));
        for link in links {
            let superseded = held.contains(&link.object_id.to_ascii_lowercase());
            if !superseded && action == RemoveAction::Disable && !link.enabled {
                continue;
            }
            let reason = if superseded {
                DeprovisionReason::Superseded
            } else {
                DeprovisionReason::LeftScope
            };
            out.push(deprovision_step(&link, action, reason));
        }
        let settings = &self.rule.groups;
        if !settings.enabled {
            return Ok(());
        }
        let wanted: HashSet<&str> = groups
            .iter()
            .filter(|g| settings.only.is_empty() || settings.only.contains(&g.id))
            .map(|g| g.id.as_str())
            .collect();
        let departed: Vec<String> = focus
            .groups
            .iter()
            .filter(|id| !wanted.contains(id.as_str()) && !protected_groups.contains(*id))
            .cloned()
            .collect();
        let mut links = self
            .state
            .get_links(self.connection, ObjectKind::Group, &departed)
            .await?;
        links.sort_by(|a, b| a.source_id.cmp(&b.source_id));
        for link in links {
            out.push(deprovision_step(
                &link,
                settings.remove_action,
                DeprovisionReason::LeftScope,
            ));
        }
        Ok(())
    }

    /// Linked objects that are no longer in scope: deprovisioned (mark-and-sweep over a complete
    /// snapshot only). `groups`: the source groups, `None` when the group snapshot is incomplete
    /// (no group is swept then).
    async fn plan_sweep(
        &self,
        kept: &BTreeMap<String, Kept>,
        protected: &HashSet<String>,
        protected_groups: &HashSet<String>,
        groups: Option<&[SourceGroup]>,
        out: &mut Vec<Step>,
    ) -> Result<(), PlanError> {
        let action = self.rule.preferences.remove_action;
        // Tenant objects held by an identity of this snapshot. A stale link to one of them (the
        // source re-issued the person under a new id, matched again by the match attribute) is
        // only forgotten: disabling or deleting would lock out the identity that holds it now.
        let held: HashSet<String> = kept
            .values()
            .filter_map(|k| k.object_id.as_deref())
            .map(str::to_ascii_lowercase)
            .collect();
        let mut after: Option<String> = None;
        loop {
            let page = self
                .state
                .list_links(self.connection, ObjectKind::User, after.as_deref(), 1000)
                .await?;
            let Some(last) = page.last() else { break };
            after = Some(last.source_id.clone());
            for link in &page {
                if kept.contains_key(&link.source_id) || protected.contains(&link.source_id) {
                    continue;
                }
                // Deleted by an earlier deprovision: kept for a restore while Graph holds the
                // user, forgotten after.
                if link.is_deleted() {
                    if !link.restorable_at(self.now) {
                        out.push(deprovision_step(
                            link,
                            action,
                            DeprovisionReason::RestoreWindowPassed,
                        ));
                    }
                    continue;
                }
                let superseded = held.contains(&link.object_id.to_ascii_lowercase());
                // Already disabled by an earlier deprovision that kept the link: nothing to do.
                if !superseded && action == RemoveAction::Disable && !link.enabled {
                    continue;
                }
                let reason = if superseded {
                    DeprovisionReason::Superseded
                } else {
                    DeprovisionReason::LeftScope
                };
                out.push(deprovision_step(link, action, reason));
            }
        }
        let Some(groups) = groups.filter(|_| self.rule.groups.enabled) else {
            return Ok(());
        };
        let settings = &self.rule.groups;
        let wanted: HashSet<&str> = groups
            .iter()
            .filter(|g| settings.only.is_empty() || settings.only.contains(&g.id))
            .map(|g| g.id.as_str())
            .collect();
        let mut after: Option<String> = None;
        loop {
            let page = self
                .state
                .list_links(self.connection, ObjectKind::Group, after.as_deref(), 1000)
                .await?;
            let Some(last) = page.last() else { break };
            after = Some(last.source_id.clone());
            for link in page.iter().filter(|l| {
                !wanted.contains(l.source_id.as_str()) && !protected_groups.contains(&l.source_id)
            }) {
                out.push(deprovision_step(
                    link,
                    settings.remove_action,
                    DeprovisionReason::LeftScope,
                ));
            }
        }
        Ok(())
    }
}

/// The step deprovisioning a linked object, named by its last applied UPN or displayName.
pub fn deprovision_step(link: &Link, action: RemoveAction, reason: DeprovisionReason) -> Step {
    let name_key = match link.kind {
        ObjectKind::User => "userPrincipalName",
        ObjectKind::Group => "displayName",
    };
    Step::Deprovision {
        kind: link.kind,
        source_id: link.source_id.clone(),
        name: link
            .applied
            .get(name_key)
            .and_then(Value::as_str)
            .unwrap_or(&link.object_id)
            .to_owned(),
        object_id: link.object_id.clone(),
        action,
        reason,
    }
}

fn user_issue(source_id: &str, operation: &str, message: String) -> PlanIssue {
    PlanIssue {
        kind: ObjectKind::User,
        source_id: source_id.to_owned(),
        operation: operation.to_owned(),
        message,
    }
}

/// The value that finds this user's existing tenant account. Only a value mapped from the
/// source counts: a `unique()` candidate is never one (config validation refuses such a match
/// attribute, see [`crate::mapping::check_match_attribute`]), since its first candidate is
/// usually held by someone else, whose account the user would take over.
fn match_value(desired: &DesiredUser, attribute: &str) -> Option<String> {
    if desired.unique_candidates.contains_key(attribute) {
        return None;
    }
    desired
        .properties
        .get(attribute)
        .and_then(Value::as_str)
        .map(str::to_owned)
}

/// The starting point of a user linked by match: the tenant's values of the mapped properties
/// (`current`), plus its usageLocation, which tells whether it can be licensed.
fn matched_link(
    source_id: &str,
    tenant_user: &crate::directory::TenantUser,
    current: &BTreeMap<String, Value>,
    enabled: bool,
    now: UnixMillis,
) -> Link {
    let mut applied = current.clone();
    if let Some(location) = tenant_user.properties.get("usageLocation") {
        applied
            .entry("usageLocation".to_owned())
            .or_insert_with(|| location.clone());
    }
    Link {
        kind: ObjectKind::User,
        source_id: source_id.to_owned(),
        object_id: tenant_user.id.clone(),
        origin: crate::state::LinkOrigin::Matched,
        hash: String::new(),
        applied,
        enabled,
        licenses: Vec::new(),
        manager: None,
        members: Vec::new(),
        seen_generation: 0,
        updated_at: now,
        deleted_at: None,
    }
}

/// Whether the user has a usage location, which Graph requires before it assigns a license
/// (<https://learn.microsoft.com/en-us/graph/api/user-assignlicense>): mapped now, applied
/// earlier (`applied`: the link's applied values, or a matched user's tenant values), or implied
/// by licenses this rule already assigned (Graph cannot clear a usage location).
fn has_usage_location(
    desired: &DesiredUser,
    applied: &BTreeMap<String, Value>,
    assigned: &[LicenseAssignment],
) -> bool {
    let set = |v: Option<&Value>| {
        v.and_then(Value::as_str)
            .is_some_and(|s| !s.trim().is_empty())
    };
    set(desired.properties.get("usageLocation"))
        || set(applied.get("usageLocation"))
        || !assigned.is_empty()
}

/// The license step of one user (`None`: nothing changes), or the plan issue that holds its
/// additions back when the user has no usage location: a request Graph would refuse is never
/// sent, and the user's other steps go ahead.
fn license_step(
    source_id: &str,
    upn: &str,
    desired: &DesiredUser,
    applied: &BTreeMap<String, Value>,
    assigned: &[LicenseAssignment],
    wanted: &[LicenseAssignment],
) -> Result<Option<Step>, PlanIssue> {
    let (add, remove) = license_diff(assigned, wanted);
    if add.is_empty() && remove.is_empty() {
        return Ok(None);
    }
    if !add.is_empty() && !has_usage_location(desired, applied, assigned) {
        let skus: Vec<&str> = add.iter().map(|l| l.sku_id.as_str()).collect();
        return Err(user_issue(
            source_id,
            "licenses",
            format!(
                "user {upn}: license(s) {} not assigned: usageLocation is empty, and Graph assigns \
                 licenses only to users with a usage location; map usageLocation in \
                 rule.mapping.attributes (e.g. usageLocation = {{ attribute = \"c\" }}, or a \
                 literal such as \"US\") or give this user a value at the source",
                skus.join(", ")
            ),
        ));
    }
    Ok(Some(Step::AssignLicenses {
        source_id: source_id.to_owned(),
        user_principal_name: upn.to_owned(),
        add,
        remove,
    }))
}

/// The licenses this rule wants the user to have from it (DESIGN §5):
/// mapped → the mapped SKUs; mapped and empty → none; not mapped → none when
/// `remove_licenses_when_sku_empty`, else whatever this rule assigned before (left alone).
/// Licenses this rule never assigned (group-based, manual) are never touched.
pub fn desired_licenses(
    prefs: &Preferences,
    desired: &DesiredUser,
    assigned: &[LicenseAssignment],
) -> Vec<LicenseAssignment> {
    match &desired.licenses {
        Some(licenses) => licenses.clone(),
        None if prefs.remove_licenses_when_sku_empty => Vec::new(),
        None => assigned.to_vec(),
    }
}

/// SKUs to add (new, or with other disabled plans) and to remove.
pub fn license_diff(
    assigned: &[LicenseAssignment],
    desired: &[LicenseAssignment],
) -> (Vec<LicenseAssignment>, Vec<String>) {
    let normalise = |l: &LicenseAssignment| {
        let mut plans = l.disabled_plans.clone();
        plans.sort();
        (l.sku_id.to_ascii_lowercase(), plans)
    };
    let have: HashMap<String, Vec<String>> = assigned.iter().map(normalise).collect();
    let want: HashMap<String, Vec<String>> = desired.iter().map(normalise).collect();
    let mut add: Vec<LicenseAssignment> = desired
        .iter()
        .filter(|l| {
            let (sku, plans) = normalise(l);
            have.get(&sku) != Some(&plans)
        })
        .cloned()
        .collect();
    add.sort();
    let mut remove: Vec<String> = assigned
        .iter()
        .filter(|l| !want.contains_key(&l.sku_id.to_ascii_lowercase()))
        .map(|l| l.sku_id.clone())
        .collect();
    remove.sort();
    (add, remove)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lic(sku: &str, plans: &[&str]) -> LicenseAssignment {
        LicenseAssignment {
            sku_id: sku.into(),
            disabled_plans: plans.iter().map(|p| (*p).into()).collect(),
        }
    }

    fn desired(licenses: Option<Vec<LicenseAssignment>>) -> DesiredUser {
        DesiredUser {
            properties: BTreeMap::new(),
            unique_candidates: BTreeMap::new(),
            password: None,
            password_problem: None,
            licenses,
            manager: None,
        }
    }

    #[test]
    fn remove_licenses_when_sku_empty_truth_table() {
        let assigned = vec![lic("e3", &[])];
        let on = Preferences {
            remove_licenses_when_sku_empty: true,
            ..Preferences::default()
        };
        let off = Preferences::default();
        // skuId mapped with a value: that value, whatever the flag.
        for prefs in [&on, &off] {
            assert_eq!(
                desired_licenses(prefs, &desired(Some(vec![lic("e5", &[])])), &assigned),
                vec![lic("e5", &[])]
            );
            // Mapped and cleared at the source: this rule's licenses go.
            assert!(desired_licenses(prefs, &desired(Some(vec![])), &assigned).is_empty());
        }
        // Not mapped: removed with the flag, left alone without it.
        assert!(desired_licenses(&on, &desired(None), &assigned).is_empty());
        assert_eq!(desired_licenses(&off, &desired(None), &assigned), assigned);
    }

    #[test]
    fn license_diff_adds_removes_and_replaces_disabled_plans() {
        let (add, remove) = license_diff(
            &[lic("e3", &["a"]), lic("ems", &[])],
            &[lic("e3", &["a", "b"]), lic("e5", &[])],
        );
        assert_eq!(add, vec![lic("e3", &["a", "b"]), lic("e5", &[])]);
        assert_eq!(remove, vec!["ems".to_owned()]);
        let (add, remove) = license_diff(&[lic("e3", &["b", "a"])], &[lic("E3", &["a", "b"])]);
        assert!(add.is_empty() && remove.is_empty());
    }
}
