//! Users, one source page at a time: scope and mapping, then per user — linked (updates,
//! enable/disable, licenses; a restore first for a user this connection deleted), or not linked
//! yet (matched to an existing tenant user by the match attribute, or created). Managers are
//! planned once every page is read.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use serde_json::Value;

use super::draft::Draft;
use super::licenses::{
    SkuTable, desired_licenses, license_step, needs_sku_table, resolve_licenses,
};
use super::{DesiredUser, Kept, PlanError, Planner, RuleMapping, applied_upn};
use crate::directory::{Directory, TenantUser};
use crate::hash::{same_value, user_state_hash};
use crate::model::{LicenseAssignment, ObjectKind, SourceUser};
use crate::plan::{AttributeChange, Step};
use crate::rule::{ManagerReference, Preferences};
use crate::state::{Link, UnixMillis};

impl Planner<'_> {
    /// Plans one page of source users. The page's links are read while its users are mapped:
    /// the store's read and the mapping are the two halves of a run where little changed.
    pub(super) async fn plan_user_page(
        &self,
        draft: &mut Draft,
        users: Vec<SourceUser>,
        scope_members: Option<&HashSet<String>>,
    ) -> Result<(), PlanError> {
        let candidates = self.page_candidates(draft, users, scope_members);
        if candidates.is_empty() {
            return Ok(());
        }
        let candidate_ids: Vec<String> = candidates.iter().map(|u| u.id.clone()).collect();
        let reading = self
            .state
            .get_links(self.connection, ObjectKind::User, &candidate_ids);
        tokio::pin!(reading);
        // One poll hands the read to the store (its thread, or the network) before mapping.
        let mut early = None;
        std::future::poll_fn(|cx| {
            if let std::task::Poll::Ready(read) = reading.as_mut().poll(cx) {
                early = Some(read);
            }
            std::task::Poll::Ready(())
        })
        .await;
        let outcomes = map_in_parallel(
            self.rule.mapping.as_ref(),
            &self.rule.preferences,
            &candidates,
        );
        let mut mapped = record_mapping(draft, candidates, outcomes);
        resolve_part_numbers(self.directory, &self.rule.preferences, draft, &mut mapped).await?;
        let read = match early {
            Some(read) => read,
            None => reading.await,
        }?;
        if mapped.is_empty() {
            return Ok(());
        }
        let ids: Vec<String> = mapped.iter().map(|m| m.user.id.clone()).collect();
        let wanted: HashSet<&str> = ids.iter().map(String::as_str).collect();
        let links: HashMap<String, Link> = read
            .into_iter()
            .filter(|l| wanted.contains(l.source_id.as_str()))
            .map(|l| (l.source_id.clone(), self.as_in_tenant(l)))
            .collect();
        // Objects in backoff after a failure wait for their retry time, unless an operator
        // names them (provision on demand retries at once).
        let on_demand = self.focus.is_some();
        let waiting: HashSet<String> = self
            .state
            .get_errors(self.connection, ObjectKind::User, &ids)
            .await?
            .into_iter()
            .filter(|e| e.next_retry_at > self.now && !on_demand)
            .map(|e| e.source_id)
            .collect();
        let (links, restorable) = self.settle_deleted_links(links, &mapped, &waiting).await?;
        draft.managed_licenses += links.values().map(|l| l.licenses.len() as u64).sum::<u64>();

        let prefs = &self.rule.preferences;
        let mut unlinked: Vec<(SourceUser, DesiredUser)> = Vec::new();
        for InScope {
            user,
            desired,
            hash,
        } in mapped
        {
            if waiting.contains(&user.id) {
                draft.protected.insert(user.id.clone());
                continue;
            }
            match links.get(&user.id) {
                Some(link) => {
                    let restore = restorable.contains(&user.id);
                    self.plan_linked_user(draft, &user, &desired, hash, link, restore);
                }
                None if !user.enabled && !prefs.provision_disabled_users => {}
                None => unlinked.push((user, desired)),
            }
        }
        if !unlinked.is_empty() {
            self.plan_unlinked(draft, unlinked).await?;
        }
        Ok(())
    }

    /// The page's users that may be in scope: not protected, and members of the scope groups
    /// when there are some. Every user's DN is indexed for managers referenced by DN.
    fn page_candidates(
        &self,
        draft: &mut Draft,
        users: Vec<SourceUser>,
        scope_members: Option<&HashSet<String>>,
    ) -> Vec<SourceUser> {
        let rule = self.rule;
        let mut candidates = Vec::with_capacity(users.len());
        for user in users {
            if rule.manager.reference == ManagerReference::Dn
                && let Some(dn) = user
                    .attributes
                    .get(&rule.manager.dn_attribute)
                    .and_then(|v| v.as_text())
            {
                draft
                    .dn_index
                    .insert(dn.to_ascii_lowercase(), user.id.clone());
            }
            if draft.protected.contains(&user.id)
                || scope_members.is_some_and(|members| !members.contains(&user.id))
            {
                continue;
            }
            candidates.push(user);
        }
        candidates
    }

    /// A linked user: restored first when this connection deleted it, then its changes when its
    /// desired state hashes differently from the last applied one (`hash`: that hash when it was
    /// computed beside the mapping).
    fn plan_linked_user(
        &self,
        draft: &mut Draft,
        user: &SourceUser,
        desired: &DesiredUser,
        hash: Option<String>,
        link: &Link,
        restore: bool,
    ) {
        let upn = applied_upn(link);
        if restore && let Some(deleted_at) = link.deleted_at {
            draft.steps.users.push(Step::RestoreUser {
                source_id: user.id.clone(),
                user_principal_name: upn.clone(),
                object_id: link.object_id.clone(),
                deleted_at,
            });
        }
        let prefs = &self.rule.preferences;
        let hash = hash.unwrap_or_else(|| {
            let wanted = desired_licenses(prefs, desired, &link.licenses);
            user_state_hash(&desired.properties, user.enabled, &wanted)
        });
        if hash != link.hash {
            let wanted = desired_licenses(prefs, desired, &link.licenses);
            self.plan_linked_changes(draft, user, desired, link, &upn, &wanted);
        }
        draft
            .kept
            .insert(user.id.clone(), Kept::linked(link, desired.manager.clone()));
    }

    /// Users not linked yet: an existing tenant user found by the match attribute is linked
    /// rather than duplicated; otherwise the user is created (when the rule creates users).
    async fn plan_unlinked(
        &self,
        draft: &mut Draft,
        unlinked: Vec<(SourceUser, DesiredUser)>,
    ) -> Result<(), PlanError> {
        let match_attr = &self.rule.match_attribute;
        let by_value = self.find_match_candidates(&unlinked).await?;
        for (user, desired) in unlinked {
            let key = match_value(&desired, match_attr).map(|v| v.to_ascii_lowercase());
            let matches = key.as_ref().and_then(|k| by_value.get(k));
            match matches.map(Vec::as_slice) {
                Some([tenant_user]) => self.plan_matched_user(draft, &user, &desired, tenant_user),
                Some(several) if several.len() > 1 => {
                    draft.protected.insert(user.id.clone());
                    draft.user_issue(
                        &user.id,
                        "match",
                        format!(
                            "{} tenant users have {match_attr} {:?}; link one by hand or make the value unique",
                            several.len(),
                            key.unwrap_or_default()
                        ),
                    );
                }
                _ if self.rule.preferences.allow_create => {
                    self.plan_create(draft, user, desired).await;
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Tenant users holding the match values of `unlinked`, by lower-cased value, read with the
    /// mapped properties (and accountEnabled, usageLocation).
    async fn find_match_candidates(
        &self,
        unlinked: &[(SourceUser, DesiredUser)],
    ) -> Result<HashMap<String, Vec<TenantUser>>, PlanError> {
        let match_attr = &self.rule.match_attribute;
        let values: Vec<String> = unlinked
            .iter()
            .filter_map(|(_, d)| match_value(d, match_attr))
            .collect();
        if values.is_empty() {
            return Ok(HashMap::new());
        }
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
        let found = self
            .directory
            .find_users(match_attr, &values, &select)
            .await?;
        let mut by_value: HashMap<String, Vec<TenantUser>> = HashMap::new();
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
        Ok(by_value)
    }

    /// An existing tenant user matched by the match attribute: linked, then brought to the
    /// desired state from the tenant's current values.
    fn plan_matched_user(
        &self,
        draft: &mut Draft,
        user: &SourceUser,
        desired: &DesiredUser,
        tenant_user: &TenantUser,
    ) {
        draft.steps.users.push(Step::LinkUser {
            source_id: user.id.clone(),
            user_principal_name: tenant_user.user_principal_name.clone(),
            object_id: tenant_user.id.clone(),
        });
        // The link starts from the tenant's values of exactly the mapped properties, so that
        // the stored hash settles once they are applied.
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
        let pseudo_link = matched_link(&user.id, tenant_user, &current, tenant_enabled, self.now);
        let wanted = desired_licenses(&self.rule.preferences, desired, &[]);
        self.plan_linked_changes(
            draft,
            user,
            desired,
            &pseudo_link,
            &tenant_user.user_principal_name,
            &wanted,
        );
        let mut starting_point = current;
        starting_point.insert("accountEnabled".into(), Value::Bool(tenant_enabled));
        draft.extras.matched.insert(user.id.clone(), starting_point);
        draft.kept.insert(
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

    /// A new user: its unique values picked, created, then licensed.
    async fn plan_create(&self, draft: &mut Draft, user: SourceUser, mut desired: DesiredUser) {
        if let Some(problem) = &desired.password_problem {
            draft.protected.insert(user.id.clone());
            draft.user_issue(&user.id, "create", problem.clone());
            return;
        }
        if let Err(message) = self.resolve_unique(&mut desired, &mut draft.claimed).await {
            draft.protected.insert(user.id.clone());
            draft.user_issue(&user.id, "create", message);
            return;
        }
        let upn = desired
            .properties
            .get("userPrincipalName")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        if let Some(password) = desired.password.clone() {
            draft.extras.passwords.insert(user.id.clone(), password);
        }
        draft.steps.users.push(Step::CreateUser {
            source_id: user.id.clone(),
            user_principal_name: upn.clone(),
            properties: desired.properties.clone(),
            enabled: user.enabled,
        });
        let licenses = desired_licenses(&self.rule.preferences, &desired, &[]);
        match license_step(&user.id, &upn, &desired, &BTreeMap::new(), &[], &licenses) {
            Ok(step) => draft.steps.licenses.extend(step),
            Err(issue) => draft.issues.push(issue),
        }
        draft.kept.insert(
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
    /// its license additions back, if any, goes with the plan's issues.
    fn plan_linked_changes(
        &self,
        draft: &mut Draft,
        user: &SourceUser,
        desired: &DesiredUser,
        link: &Link,
        upn: &str,
        desired_licenses: &[LicenseAssignment],
    ) {
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
                draft.steps.updates.push(Step::UpdateUser {
                    source_id: user.id.clone(),
                    user_principal_name: upn.to_owned(),
                    changes,
                });
            }
        }
        if prefs.allow_disable && link.enabled != user.enabled {
            draft.steps.updates.push(Step::SetEnabled {
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
            Ok(step) => draft.steps.licenses.extend(step),
            Err(issue) => draft.issues.push(issue),
        }
    }

    /// Sorts out the links of users this connection deleted ([`Link::deleted_at`]) among a
    /// page's links. A deleted user back in scope is restored when it may be provisioned
    /// (`allow_create`, and enabled unless disabled users are provisioned) and Graph still holds
    /// it in its deleted items: its link stays, and its id is in the returned set (users
    /// `waiting` for a retry are not asked about). Any other deleted link is left out, so that
    /// its user is matched or created like a new one (a create replaces the link).
    async fn settle_deleted_links(
        &self,
        mut links: HashMap<String, Link>,
        mapped: &[InScope],
        waiting: &HashSet<String>,
    ) -> Result<(HashMap<String, Link>, HashSet<String>), PlanError> {
        let prefs = &self.rule.preferences;
        let candidates: HashMap<String, String> = mapped
            .iter()
            .map(|m| &m.user)
            .filter(|user| !waiting.contains(&user.id))
            .filter(|user| prefs.allow_create && (user.enabled || prefs.provision_disabled_users))
            .filter_map(|user| links.get(&user.id))
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

    /// Manager steps of the users planned, once every page is read (a manager may sit on a
    /// later page than its report).
    pub(super) fn plan_managers(&self, draft: &mut Draft) {
        let mut steps: Vec<(&str, Step)> = Vec::new();
        let mut issues = Vec::new();
        for (id, user) in &draft.kept {
            let Some(reference) = &user.manager_ref else {
                continue;
            };
            let desired = match reference {
                None => None,
                Some(reference) => match self.manager_of(id, reference, draft) {
                    Ok(Some(manager)) => Some(manager),
                    // A focused plan knows the DNs of its own users only: a manager named by DN
                    // elsewhere is left as it is until the next full sync.
                    Ok(None) => continue,
                    Err(message) => {
                        issues.push((id.clone(), message));
                        continue;
                    }
                },
            };
            if desired == user.linked_manager {
                continue;
            }
            let step = match desired {
                Some(manager_source_id) => Step::SetManager {
                    source_id: id.clone(),
                    user_principal_name: user.upn.clone(),
                    manager_user_principal_name: draft
                        .kept
                        .get(&manager_source_id)
                        .map(|manager| manager.upn.clone())
                        .unwrap_or_default(),
                    manager_source_id,
                },
                None => Step::RemoveManager {
                    source_id: id.clone(),
                    user_principal_name: user.upn.clone(),
                },
            };
            steps.push((id, step));
        }
        // In source-id order, whatever the order `kept` is held in.
        steps.sort_by(|a, b| a.0.cmp(b.0));
        issues.sort();
        let steps: Vec<Step> = steps.into_iter().map(|(_, step)| step).collect();
        draft.steps.managers.extend(steps);
        for (id, message) in issues {
            draft.user_issue(&id, "manager", message);
        }
    }

    /// The source id of the manager `reference` names for user `id`: `Ok(None)` when a focused
    /// plan did not read the manager (or cannot resolve its DN), an error message when it is not
    /// a user this rule provisions.
    fn manager_of(
        &self,
        id: &str,
        reference: &str,
        draft: &Draft,
    ) -> Result<Option<String>, String> {
        let manager_id = match self.rule.manager.reference {
            ManagerReference::Id => Some(reference.to_owned()),
            ManagerReference::Dn => draft.dn_index.get(&reference.to_ascii_lowercase()).cloned(),
        };
        match manager_id {
            Some(m) if draft.kept.get(&m).is_some_and(|k| k.provisioned) && m != id => Ok(Some(m)),
            // A focused plan reads only its own users: a manager outside the focus is left as
            // it is until a sync that reads it.
            Some(m) if self.focus.is_some() && !draft.kept.contains_key(&m) => Ok(None),
            None if self.focus.is_some() => Ok(None),
            _ => Err(format!(
                "manager {reference:?} is not a user this rule provisions; it is set once the manager is in scope"
            )),
        }
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
    tenant_user: &TenantUser,
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
    Link::new(
        ObjectKind::User,
        source_id,
        &tenant_user.id,
        crate::state::LinkOrigin::Matched,
        applied,
        enabled,
        now,
    )
}

/// The candidates in scope, mapped. A user whose scope or mapping fails is an issue and left
/// alone.
fn record_mapping(
    draft: &mut Draft,
    candidates: Vec<SourceUser>,
    outcomes: Vec<Mapped>,
) -> Vec<InScope> {
    let mut mapped = Vec::with_capacity(candidates.len());
    for (user, outcome) in candidates.into_iter().zip(outcomes) {
        match outcome {
            Mapped::OutOfScope => {}
            Mapped::User(desired, hash) => mapped.push(InScope {
                user,
                desired: *desired,
                hash,
            }),
            Mapped::ScopeFailed(message) => {
                draft.protected.insert(user.id.clone());
                draft.user_issue(&user.id, "scope", message);
            }
            Mapped::Failed(errors) => {
                draft.protected.insert(user.id.clone());
                for error in errors {
                    draft.user_issue(&user.id, "mapping", error.to_string());
                }
            }
        }
    }
    mapped
}

/// Resolves the SKU part numbers of the page's mapped licenses to skuIds, reading the
/// tenant's SKUs the first time a user needs them. A user whose part numbers the tenant does
/// not have gets a plan issue and keeps its licenses as they are; only a fatal failure to
/// read the SKUs stops the plan.
async fn resolve_part_numbers(
    directory: &dyn Directory,
    prefs: &Preferences,
    draft: &mut Draft,
    mapped: &mut [InScope],
) -> Result<(), PlanError> {
    for in_scope in mapped.iter_mut() {
        if !needs_sku_table(&in_scope.desired) {
            continue;
        }
        if matches!(draft.skus, SkuTable::NotRead) {
            draft.skus = SkuTable::from_answer(directory.subscribed_skus().await)?;
        }
        let name = user_name(&in_scope.user, &in_scope.desired);
        resolve_licenses(&mut in_scope.desired, &draft.skus, &name);
        in_scope.hash = match &in_scope.desired.license_problem {
            Some(problem) => {
                draft.user_issue(&in_scope.user.id, "licenses", problem.clone());
                None
            }
            None => link_free_hash(prefs, &in_scope.user, &in_scope.desired),
        };
    }
    Ok(())
}

/// How messages name a mapped user: its UPN (or first UPN candidate), else its source id.
fn user_name(user: &SourceUser, desired: &DesiredUser) -> String {
    desired
        .properties
        .get("userPrincipalName")
        .and_then(Value::as_str)
        .or_else(|| {
            desired
                .unique_candidates
                .get("userPrincipalName")
                .and_then(|c| c.first())
                .map(String::as_str)
        })
        .map_or_else(|| format!("with source id {}", user.id), str::to_owned)
}

/// A user in scope, mapped.
struct InScope {
    user: SourceUser,
    desired: DesiredUser,
    /// The desired state's hash, when it was computed beside the mapping ([`link_free_hash`]).
    hash: Option<String>,
}

/// What the scope filter and the mapping made of one user.
enum Mapped {
    OutOfScope,
    /// Mapped, with the desired state's hash when it does not depend on the user's link.
    User(Box<DesiredUser>, Option<String>),
    ScopeFailed(String),
    Failed(Vec<crate::mapping::MappingError>),
}

fn map_one(mapping: &dyn RuleMapping, prefs: &Preferences, user: &SourceUser) -> Mapped {
    match mapping.in_scope(user) {
        Ok(true) => {}
        Ok(false) => return Mapped::OutOfScope,
        Err(message) => return Mapped::ScopeFailed(message),
    }
    match mapping.map_user(user) {
        Ok(desired) => {
            let hash = link_free_hash(prefs, user, &desired);
            Mapped::User(Box::new(desired), hash)
        }
        Err(errors) => Mapped::Failed(errors),
    }
}

/// The state hash of a mapped user when it does not depend on the user's link: when the
/// licenses it covers are the mapped ones, or none ([`desired_licenses`] reads the link's
/// licenses only when licenses are not mapped and are kept). Computed beside the mapping, on
/// every core, rather than on the planning thread.
fn link_free_hash(prefs: &Preferences, user: &SourceUser, desired: &DesiredUser) -> Option<String> {
    (desired.licenses.is_some() || prefs.remove_licenses_when_sku_empty).then(|| {
        let licenses = desired_licenses(prefs, desired, &[]);
        user_state_hash(&desired.properties, user.enabled, &licenses)
    })
}

/// Below this many users a page is mapped on the calling thread: threads would cost more than
/// they save.
const PARALLEL_MAPPING_FROM: usize = 256;

/// Maps `users` in order, spread over the machine's cores: mapping is the bulk of a run's CPU when
/// few users changed (every user is mapped to find out whether it changed).
fn map_in_parallel(
    mapping: &dyn RuleMapping,
    prefs: &Preferences,
    users: &[SourceUser],
) -> Vec<Mapped> {
    let threads = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
    if threads < 2 || users.len() < PARALLEL_MAPPING_FROM {
        return users.iter().map(|u| map_one(mapping, prefs, u)).collect();
    }
    let per_thread = users.len().div_ceil(threads);
    std::thread::scope(|scope| {
        let mut chunks = users.chunks(per_thread);
        // The calling thread maps the first chunk itself.
        let first = chunks.next().unwrap_or_default();
        let others: Vec<_> = chunks
            .map(|chunk| {
                scope.spawn(move || {
                    chunk
                        .iter()
                        .map(|u| map_one(mapping, prefs, u))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let mut out: Vec<Mapped> = first.iter().map(|u| map_one(mapping, prefs, u)).collect();
        for handle in others {
            // A panic on a mapping thread surfaces here, as it would have without threads.
            out.extend(
                handle
                    .join()
                    .unwrap_or_else(|p| std::panic::resume_unwind(p)),
            );
        }
        out
    })
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use async_trait::async_trait;

    use super::*;
    use crate::directory::{
        DirectoryCounters, DirectoryError, DirectoryOp, DirectoryResult, FailureKind, OpOutcome,
        TenantDomain, TenantGroup, TenantSku,
    };

    const E3: &str = "6fd2c87f-b296-42f0-b197-1e91e994b900";
    const E5: &str = "06ebc4ee-1bb5-47dd-8120-11324bc54e06";
    const PLAN: &str = "efb87545-963c-4e0d-99df-69c6916d9eb0";

    /// A tenant that only answers `subscribedSkus` (with `skus`, or with `error`), counting the
    /// calls.
    struct SkuTenant {
        skus: Vec<TenantSku>,
        error: Option<DirectoryError>,
        calls: AtomicUsize,
    }

    impl SkuTenant {
        fn new() -> Self {
            SkuTenant {
                skus: vec![
                    TenantSku {
                        sku_id: E3.to_uppercase(),
                        sku_part_number: "ENTERPRISEPACK".into(),
                    },
                    TenantSku {
                        sku_id: E5.into(),
                        sku_part_number: "SPE_E5".into(),
                    },
                ],
                error: None,
                calls: AtomicUsize::new(0),
            }
        }
    }

    #[async_trait]
    impl Directory for SkuTenant {
        async fn find_users(
            &self,
            _: &str,
            _: &[String],
            _: &[String],
        ) -> DirectoryResult<Vec<TenantUser>> {
            Ok(Vec::new())
        }
        async fn find_groups_by_name(&self, _: &str) -> DirectoryResult<Vec<TenantGroup>> {
            Ok(Vec::new())
        }
        async fn group_members(&self, _: &str) -> DirectoryResult<Vec<String>> {
            Ok(Vec::new())
        }
        async fn domains(&self) -> DirectoryResult<Vec<TenantDomain>> {
            Ok(Vec::new())
        }
        async fn subscribed_skus(&self) -> DirectoryResult<Vec<TenantSku>> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            match &self.error {
                Some(error) => Err(error.clone()),
                None => Ok(self.skus.clone()),
            }
        }
        async fn restorable_users(&self, _: &[String]) -> DirectoryResult<Vec<String>> {
            Ok(Vec::new())
        }
        async fn apply(&self, ops: Vec<DirectoryOp>) -> Vec<DirectoryResult<OpOutcome>> {
            ops.iter().map(|_| Ok(OpOutcome::Done)).collect()
        }
        fn counters(&self) -> DirectoryCounters {
            DirectoryCounters::default()
        }
    }

    fn lic(sku: &str, plans: &[&str]) -> LicenseAssignment {
        LicenseAssignment {
            sku_id: sku.into(),
            disabled_plans: plans.iter().map(|p| (*p).into()).collect(),
        }
    }

    /// A mapped user `id` (UPN `id@example.com`) with these mapped licenses.
    fn in_scope(id: &str, licenses: Vec<LicenseAssignment>) -> InScope {
        InScope {
            user: SourceUser {
                id: id.into(),
                enabled: true,
                attributes: Default::default(),
            },
            desired: DesiredUser {
                properties: BTreeMap::from([(
                    "userPrincipalName".to_owned(),
                    Value::String(format!("{id}@example.com")),
                )]),
                unique_candidates: BTreeMap::new(),
                password: None,
                password_problem: None,
                licenses: Some(licenses),
                sku_plans: BTreeMap::new(),
                license_problem: None,
                manager: None,
            },
            hash: None,
        }
    }

    async fn resolve(tenant: &SkuTenant, mapped: &mut [InScope]) -> Result<Draft, PlanError> {
        let mut draft = Draft::new();
        resolve_part_numbers(tenant, &Preferences::default(), &mut draft, mapped).await?;
        Ok(draft)
    }

    #[tokio::test]
    async fn part_numbers_resolve_case_insensitively_with_one_read_per_plan() {
        let tenant = SkuTenant::new();
        let mut mapped = vec![
            in_scope("ann", vec![lic("enterprisePack", &[PLAN])]),
            in_scope("bob", vec![lic("SPE_E5", &[]), lic(E3, &[])]),
        ];
        let draft = resolve(&tenant, &mut mapped).await.unwrap();
        assert_eq!(tenant.calls.load(Ordering::SeqCst), 1);
        assert!(draft.issues.is_empty(), "{:?}", draft.issues);
        assert_eq!(mapped[0].desired.licenses, Some(vec![lic(E3, &[PLAN])]));
        assert_eq!(
            mapped[1].desired.licenses,
            Some(vec![lic(E5, &[]), lic(E3, &[])]).map(|mut l| {
                l.sort();
                l
            })
        );
        // The hash beside the mapping is recomputed from the resolved skuIds.
        let licenses = mapped[0].desired.licenses.clone().unwrap();
        assert_eq!(
            mapped[0].hash,
            Some(user_state_hash(
                &mapped[0].desired.properties,
                true,
                &licenses
            ))
        );
    }

    #[tokio::test]
    async fn guids_alone_never_read_the_sku_table() {
        let tenant = SkuTenant::new();
        let mut mapped = vec![in_scope("ann", vec![lic(E3, &[])])];
        let draft = resolve(&tenant, &mut mapped).await.unwrap();
        assert_eq!(tenant.calls.load(Ordering::SeqCst), 0);
        assert!(draft.issues.is_empty());
        assert_eq!(mapped[0].desired.licenses, Some(vec![lic(E3, &[])]));
    }

    #[tokio::test]
    async fn an_unknown_part_number_holds_only_that_users_licenses() {
        let tenant = SkuTenant::new();
        let mut mapped = vec![
            in_scope("ann", vec![lic("SPE_E3", &[]), lic("ENTERPRISEPACK", &[])]),
            in_scope("bob", vec![lic("ENTERPRISEPACK", &[])]),
        ];
        let draft = resolve(&tenant, &mut mapped).await.unwrap();
        assert_eq!(draft.issues.len(), 1, "{:?}", draft.issues);
        let issue = &draft.issues[0];
        assert_eq!(
            (issue.source_id.as_str(), issue.operation.as_str()),
            ("ann", "licenses")
        );
        for part in ["ann@example.com", "\"SPE_E3\"", "ENTERPRISEPACK, SPE_E5"] {
            assert!(issue.message.contains(part), "{part}: {}", issue.message);
        }
        assert!(!issue.message.contains("\"ENTERPRISEPACK\""));
        // Ann keeps what she has; Bob is licensed.
        let assigned = vec![lic(E5, &[])];
        let prefs = Preferences {
            remove_licenses_when_sku_empty: true,
            ..Preferences::default()
        };
        assert_eq!(
            desired_licenses(&prefs, &mapped[0].desired, &assigned),
            assigned
        );
        assert_eq!(mapped[0].hash, None);
        assert_eq!(mapped[1].desired.licenses, Some(vec![lic(E3, &[])]));
    }

    #[tokio::test]
    async fn disabled_plans_keyed_in_the_other_form_apply_once_resolved() {
        let tenant = SkuTenant::new();
        let mut ann = in_scope("ann", vec![lic(E3, &[])]);
        ann.desired.sku_plans = BTreeMap::from([("enterprisepack".to_owned(), vec![PLAN.into()])]);
        let mut bob = in_scope("bob", vec![lic("SPE_E5", &[])]);
        bob.desired.sku_plans = BTreeMap::from([(E5.to_owned(), vec![PLAN.into()])]);
        let mut mapped = vec![ann, bob];
        resolve(&tenant, &mut mapped).await.unwrap();
        assert_eq!(mapped[0].desired.licenses, Some(vec![lic(E3, &[PLAN])]));
        assert_eq!(mapped[1].desired.licenses, Some(vec![lic(E5, &[PLAN])]));
        assert!(mapped.iter().all(|m| m.desired.sku_plans.is_empty()));
    }

    #[tokio::test]
    async fn an_unreadable_sku_table_holds_users_naming_part_numbers_and_fatal_stops() {
        let mut tenant = SkuTenant::new();
        tenant.error = Some(DirectoryError::new(
            FailureKind::PermissionDenied,
            "Insufficient privileges (request-id r-1)",
        ));
        let mut mapped = vec![
            in_scope("ann", vec![lic("ENTERPRISEPACK", &[])]),
            in_scope("bob", vec![lic("SPE_E5", &[])]),
            in_scope("cid", vec![lic(E3, &[])]),
        ];
        let draft = resolve(&tenant, &mut mapped).await.unwrap();
        assert_eq!(
            tenant.calls.load(Ordering::SeqCst),
            1,
            "read once, even failing"
        );
        let held: Vec<&str> = draft.issues.iter().map(|i| i.source_id.as_str()).collect();
        assert_eq!(held, ["ann", "bob"]);
        assert!(draft.issues[0].message.contains("Insufficient privileges"));
        assert_eq!(mapped[2].desired.licenses, Some(vec![lic(E3, &[])]));

        tenant.error = Some(DirectoryError::new(FailureKind::Authentication, "expired"));
        let mut mapped = vec![in_scope("ann", vec![lic("ENTERPRISEPACK", &[])])];
        assert!(matches!(
            resolve(&tenant, &mut mapped).await,
            Err(PlanError::Directory(_))
        ));
    }
}
