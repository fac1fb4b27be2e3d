//! Execution: carries a [`Plan`] out through the [`Directory`] port, stage by stage in dependency
//! order, and records every result in the [`StateStore`] before the next chunk starts.
//!
//! Crash safety: a result is durable (link written, or error recorded) right after its chunk. A
//! crash between a tenant write and its record loses nothing: the next plan sees the identity as
//! not done and does it again, and every step is idempotent in the tenant (a created user is found
//! by the match attribute and linked instead of created twice; PATCH, assignLicense, manager and
//! membership writes converge).

use std::collections::{BTreeMap, HashMap, HashSet};

use serde_json::Value;

use crate::clock::Clock;
use crate::directory::{Directory, DirectoryError, DirectoryOp, OpOutcome};
use crate::hash::{is_empty_value, user_state_hash};
use crate::lease::HeldLease;
use crate::model::ObjectKind;
use crate::plan::{DeprovisionReason, RemoveAction, Step};
use crate::planner::Planned;
use crate::state::{Link, LinkOrigin, ObjectError, StateError, StateStore, UnixMillis};

/// Settings of one execution.
pub struct Executor<'a> {
    pub connection: &'a str,
    pub directory: &'a dyn Directory,
    pub state: &'a dyn StateStore,
    pub clock: &'a dyn Clock,
    /// Stop cleanly (between chunks) once the clock passes this instant.
    pub deadline: Option<UnixMillis>,
    /// Steps per `Directory::apply` call.
    pub chunk_size: usize,
    /// `passwordProfile.forceChangePasswordNextSignIn` of created users.
    pub force_change_password: bool,
    /// The rule's match attribute: a create refused because a user already holds this value is
    /// a match the plan could not see yet (replication lag), and links that user.
    pub match_attribute: &'a str,
    /// Run destructive steps ([`Step::is_destructive`]: disables, deprovisions, membership and
    /// license removals); false when the circuit breaker tripped without override.
    pub allow_destructive: bool,
    /// Called after every chunk with (steps done, steps in all).
    pub progress: Option<&'a (dyn Fn(u64, u64) + Sync)>,
    /// The run's lease: checked before every chunk's tenant writes and carried by every state
    /// write, so a run that lost it stops without another write.
    pub lease: &'a HeldLease<'a>,
}

/// What an execution did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ExecutionReport {
    /// Counts by outcome: `created`, `linked`, `updated`, `enabled`, `disabled`, `licensed`,
    /// `managers`, `members_added`, `members_removed`, `deprovisioned`, `failed`, `skipped`.
    pub counts: BTreeMap<String, u64>,
    /// Objects that failed in this run, with the reason.
    pub failures: Vec<ObjectError>,
    /// The deadline stopped the run; the next run continues.
    pub stopped_at_deadline: bool,
    /// Destructive steps were held back by the circuit breaker.
    pub destructive_held: bool,
    /// A failure that concerns the whole run (credentials); the run stopped.
    pub fatal: Option<String>,
}

impl ExecutionReport {
    fn add(&mut self, name: &str, n: u64) {
        *self.counts.entry(name.to_owned()).or_insert(0) += n;
    }
}

/// First retry one minute after a failure, doubling up to six hours.
pub fn retry_delay_ms(attempts: u32) -> i64 {
    let minutes = 1i64 << attempts.saturating_sub(1).min(9);
    (minutes * 60_000).min(6 * 3_600_000)
}

fn stage_of(step: &Step) -> usize {
    match step {
        Step::MatchGroup { .. } | Step::CreateGroup { .. } => 0,
        Step::LinkUser { .. } | Step::RestoreUser { .. } | Step::CreateUser { .. } => 1,
        Step::UpdateUser { .. } | Step::SetEnabled { enabled: true, .. } => 2,
        Step::AssignLicenses { .. } => 3,
        Step::SetManager { .. } | Step::RemoveManager { .. } => 4,
        Step::AddMembers { .. } | Step::RemoveMembers { .. } => 5,
        Step::SetEnabled { enabled: false, .. } | Step::Deprovision { .. } => 6,
    }
}

fn subject(step: &Step) -> (ObjectKind, &str) {
    match step {
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

/// A step turned into tenant operations, and how to record their success.
enum Prepared {
    /// Nothing to send (a link of an existing object).
    Local,
    Ops(Vec<DirectoryOp>),
    /// Cannot run: a step it depends on did not (its failure is recorded already).
    Skip,
    /// Must not run: recorded as the object's failure with this reason.
    Refused(DirectoryError),
}

/// The operation of the record kept while a group create is in flight: a run that stops before
/// recording the answer leaves it, and the next run looks for the group before creating it
/// again (group names are not unique in Entra ID, so a second create would duplicate it).
const CREATE_IN_FLIGHT: &str = "create (unconfirmed)";

/// Pauses between look-ups of a user whose create was refused as a duplicate of the match
/// value: the existing user may not be visible yet (Graph replicates writes with a delay:
/// <https://learn.microsoft.com/en-us/graph/best-practices-concept#handling-expected-errors>).
const RELINK_PAUSES_MS: [u64; 5] = [0, 500, 1_000, 2_000, 4_000];

fn in_flight_record(source_id: &str, since: UnixMillis, now: UnixMillis) -> ObjectError {
    ObjectError {
        kind: ObjectKind::Group,
        source_id: source_id.to_owned(),
        operation: CREATE_IN_FLIGHT.to_owned(),
        message: format!(
            "the group create was sent at {} and its answer not recorded (the run stopped); \
             the next run looks for the group before creating it",
            crate::clock::format_utc(since)
        ),
        attempts: 0,
        first_failed_at: since,
        last_failed_at: now,
        next_retry_at: now,
    }
}

/// Whether a stored-object error names `id` (the store shortens an overlong id to its first 80
/// characters and an ellipsis).
fn source_id_matches(id: &str, named: &str) -> bool {
    id == named
        || named
            .strip_suffix('…')
            .is_some_and(|prefix| id.len() > prefix.len() && id.starts_with(prefix))
}

/// The refusal of a link to a tenant object that another source id of the connection holds: a
/// tenant object is linked to at most one source identity.
fn linked_elsewhere(
    kind: ObjectKind,
    source_id: &str,
    object_id: &str,
    holder: &str,
) -> DirectoryError {
    let what = match kind {
        ObjectKind::User => "user",
        ObjectKind::Group => "group",
    };
    DirectoryError::new(
        crate::directory::FailureKind::Conflict,
        format!(
            "source {what} {source_id:?} matches tenant {what} {object_id}, which is already linked to source id {holder:?}; \
             it is not linked twice. Fix the source (two identities share the match value) or the match attribute"
        ),
    )
}

impl Executor<'_> {
    pub async fn execute(&self, planned: Planned) -> Result<ExecutionReport, StateError> {
        let Planned { plan, mut extras } = planned;
        let mut report = ExecutionReport::default();
        let total = plan.steps.len() as u64;
        let mut done = 0u64;
        // Tenant ids of objects created or linked in this run.
        let mut resolved: HashMap<(ObjectKind, String), String> = HashMap::new();
        // Links this plan gives up because another source id took their object over (the old id
        // left the source, a new one matched the same tenant object): they do not block it.
        let released: HashSet<(ObjectKind, String)> = plan
            .steps
            .iter()
            .filter_map(|step| match step {
                Step::Deprovision {
                    kind,
                    source_id,
                    reason: DeprovisionReason::Superseded,
                    ..
                } => Some((*kind, source_id.clone())),
                _ => None,
            })
            .collect();
        let mut stages: Vec<Vec<Step>> = vec![Vec::new(); 7];
        let mut held = 0u64;
        for step in plan.steps {
            // A tripped breaker holds every destructive step, in whichever stage it sits.
            if !self.allow_destructive && step.is_destructive() {
                held += 1;
                continue;
            }
            stages[stage_of(&step)].push(step);
        }
        if held > 0 {
            report.destructive_held = true;
            report.add("held", held);
        }
        for (stage, steps) in stages.into_iter().enumerate() {
            if stage == 6 && !steps.is_empty() && !self.allow_destructive {
                report.destructive_held = true;
                report.add("held", steps.len() as u64);
                continue;
            }
            for chunk in steps.chunks(self.chunk_size.max(1)) {
                // The first chunk always runs, whatever the deadline: a run whose planning alone
                // takes its whole time still moves forward, so that a sync split over many short
                // runs ends (the caller's deadline keeps a margin for one chunk).
                if done > 0 && self.deadline.is_some_and(|d| self.clock.now() >= d) {
                    report.stopped_at_deadline = true;
                    return Ok(report);
                }
                self.run_chunk(chunk, &released, &mut extras, &mut resolved, &mut report)
                    .await?;
                done += chunk.len() as u64;
                if let Some(progress) = self.progress {
                    progress(done, total);
                }
                if report.fatal.is_some() {
                    return Ok(report);
                }
            }
        }
        Ok(report)
    }

    /// The source id of this connection linked to `object_id`, when it is not `source_id` and
    /// its link is not `released` by this plan.
    async fn holder_of(
        &self,
        kind: ObjectKind,
        source_id: &str,
        object_id: &str,
        released: &HashSet<(ObjectKind, String)>,
    ) -> Result<Option<String>, StateError> {
        Ok(self
            .state
            .find_link_by_object(self.connection, kind, object_id)
            .await?
            .map(|link| link.source_id)
            .filter(|holder| holder != source_id && !released.contains(&(kind, holder.clone()))))
    }

    /// Group creates of `chunk` that an earlier run left in flight, by source id: when it sent
    /// them.
    async fn groups_in_flight(
        &self,
        chunk: &[Step],
    ) -> Result<HashMap<String, UnixMillis>, StateError> {
        let ids: Vec<String> = chunk
            .iter()
            .filter_map(|step| match step {
                Step::CreateGroup { source_id, .. } => Some(source_id.clone()),
                _ => None,
            })
            .collect();
        if ids.is_empty() {
            return Ok(HashMap::new());
        }
        Ok(self
            .state
            .get_errors(self.connection, ObjectKind::Group, &ids)
            .await?
            .into_iter()
            .filter(|e| e.operation == CREATE_IN_FLIGHT)
            .map(|e| (e.source_id, e.first_failed_at))
            .collect())
    }

    /// Records every group create of `chunk` as in flight before it is sent.
    async fn mark_groups_in_flight(
        &self,
        chunk: &[Step],
        earlier: &HashMap<String, UnixMillis>,
    ) -> Result<(), StateError> {
        let now = self.clock.now();
        for step in chunk {
            if let Step::CreateGroup { source_id, .. } = step {
                let since = earlier.get(source_id).copied().unwrap_or(now);
                let record = in_flight_record(source_id, since, now);
                self.state
                    .put_error(self.connection, &record, &self.lease.lease())
                    .await?;
            }
        }
        Ok(())
    }

    /// The link to the tenant user holding the match value of a create that Graph refused as
    /// a duplicate: the plan did not see it (it was created moments ago, by an interrupted run,
    /// and is still replicating), and matching it is what the plan would have done. Only when
    /// the match attribute is the property Graph named, and the user is not linked to another
    /// source id.
    async fn relink_after_conflict(
        &self,
        source_id: &str,
        properties: &BTreeMap<String, Value>,
        error: &DirectoryError,
        released: &HashSet<(ObjectKind, String)>,
        now: UnixMillis,
    ) -> Result<Option<Link>, StateError> {
        let Some(tenant) = self.find_match_holder(properties, error).await else {
            return Ok(None);
        };
        if self
            .holder_of(ObjectKind::User, source_id, &tenant.id, released)
            .await?
            .is_some()
        {
            return Ok(None);
        }
        let mut applied = tenant.properties;
        let enabled = applied
            .remove("accountEnabled")
            .and_then(|v| v.as_bool())
            .unwrap_or(true);
        Ok(Some(new_link(
            ObjectKind::User,
            source_id,
            &tenant.id,
            LinkOrigin::Matched,
            applied,
            enabled,
            now,
        )))
    }

    /// The tenant user holding the match value Graph refused a create for, looked up while it
    /// may still be replicating.
    async fn find_match_holder(
        &self,
        properties: &BTreeMap<String, Value>,
        error: &DirectoryError,
    ) -> Option<crate::directory::TenantUser> {
        let attribute = error.property.as_deref()?;
        if error.kind != crate::directory::FailureKind::Conflict
            || !attribute.eq_ignore_ascii_case(self.match_attribute)
        {
            return None;
        }
        let value = properties.get(self.match_attribute)?.as_str()?.to_owned();
        let mut select: Vec<String> = properties.keys().cloned().collect();
        select.push("accountEnabled".to_owned());
        for pause in RELINK_PAUSES_MS {
            tokio::time::sleep(std::time::Duration::from_millis(pause)).await;
            match self
                .directory
                .find_users(self.match_attribute, std::slice::from_ref(&value), &select)
                .await
            {
                Ok(found) => {
                    if let Some(user) = found.into_iter().next() {
                        return Some(user);
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "looking up the holder of a refused create failed");
                    return None;
                }
            }
        }
        None
    }

    async fn run_chunk(
        &self,
        chunk: &[Step],
        released: &HashSet<(ObjectKind, String)>,
        extras: &mut crate::planner::PlanExtras,
        resolved: &mut HashMap<(ObjectKind, String), String>,
        report: &mut ExecutionReport,
    ) -> Result<(), StateError> {
        // Links of every object the chunk touches (and of members and managers it refers to).
        let mut user_ids: HashSet<String> = HashSet::new();
        let mut group_ids: HashSet<String> = HashSet::new();
        for step in chunk {
            match subject(step) {
                (ObjectKind::User, id) => user_ids.insert(id.to_owned()),
                (ObjectKind::Group, id) => group_ids.insert(id.to_owned()),
            };
            match step {
                Step::SetManager {
                    manager_source_id, ..
                } => {
                    user_ids.insert(manager_source_id.clone());
                }
                Step::AddMembers {
                    member_source_ids, ..
                } => user_ids.extend(member_source_ids.iter().cloned()),
                _ => {}
            }
        }
        let mut links: HashMap<(ObjectKind, String), Link> = HashMap::new();
        for (kind, ids) in [(ObjectKind::User, user_ids), (ObjectKind::Group, group_ids)] {
            let ids: Vec<String> = ids.into_iter().collect();
            if ids.is_empty() {
                continue;
            }
            for link in self.state.get_links(self.connection, kind, &ids).await? {
                // A deleted object resolves no member or manager (a restore step resolves it).
                if !link.is_deleted() {
                    resolved.insert((kind, link.source_id.clone()), link.object_id.clone());
                }
                links.insert((kind, link.source_id.clone()), link);
            }
        }
        let object_id = |kind: ObjectKind, id: &str, resolved: &HashMap<_, String>| {
            resolved.get(&(kind, id.to_owned())).cloned()
        };

        let in_flight = self.groups_in_flight(chunk).await?;
        // Prepare operations.
        let mut prepared: Vec<Prepared> = Vec::with_capacity(chunk.len());
        // Tenant objects linked by an earlier step of this chunk, to their source ids.
        let mut claimed: HashMap<(ObjectKind, String), String> = HashMap::new();
        for step in chunk {
            let p = match step {
                Step::MatchGroup {
                    source_id,
                    object_id,
                    ..
                }
                | Step::LinkUser {
                    source_id,
                    object_id,
                    ..
                } => {
                    let (kind, _) = subject(step);
                    let key = (kind, object_id.clone());
                    let holder = match claimed.get(&key).filter(|s| *s != source_id) {
                        Some(other) => Some(other.clone()),
                        None => self.holder_of(kind, source_id, object_id, released).await?,
                    };
                    match holder {
                        Some(holder) => {
                            Prepared::Refused(linked_elsewhere(kind, source_id, object_id, &holder))
                        }
                        None => {
                            claimed.insert(key, source_id.clone());
                            Prepared::Local
                        }
                    }
                }
                Step::CreateGroup {
                    source_id,
                    display_name,
                    mail_nickname,
                    kind,
                } => Prepared::Ops(vec![DirectoryOp::CreateGroup {
                    display_name: display_name.clone(),
                    mail_nickname: mail_nickname.clone(),
                    kind: *kind,
                    description: None,
                    earlier_attempt: in_flight.get(source_id).copied(),
                }]),
                Step::CreateUser {
                    source_id,
                    properties,
                    enabled,
                    ..
                } => {
                    let mut properties = properties.clone();
                    properties.insert("accountEnabled".into(), Value::Bool(*enabled));
                    let password = extras
                        .passwords
                        .remove(source_id)
                        .unwrap_or_else(crate::mapping::generate_password);
                    Prepared::Ops(vec![DirectoryOp::CreateUser {
                        properties,
                        password,
                        force_change_password: self.force_change_password,
                    }])
                }
                Step::UpdateUser {
                    source_id, changes, ..
                } => match object_id(ObjectKind::User, source_id, resolved) {
                    Some(id) => Prepared::Ops(vec![DirectoryOp::UpdateUser {
                        id,
                        properties: changes
                            .iter()
                            .map(|c| (c.name.clone(), c.new.clone()))
                            .collect(),
                    }]),
                    None => Prepared::Skip,
                },
                Step::SetEnabled {
                    source_id, enabled, ..
                } => match object_id(ObjectKind::User, source_id, resolved) {
                    Some(id) => Prepared::Ops(vec![DirectoryOp::UpdateUser {
                        id,
                        properties: BTreeMap::from([(
                            "accountEnabled".to_owned(),
                            Value::Bool(*enabled),
                        )]),
                    }]),
                    None => Prepared::Skip,
                },
                Step::AssignLicenses {
                    source_id,
                    add,
                    remove,
                    ..
                } => match object_id(ObjectKind::User, source_id, resolved) {
                    Some(id) => Prepared::Ops(vec![DirectoryOp::AssignLicenses {
                        id,
                        add: add.clone(),
                        remove: remove.clone(),
                    }]),
                    None => Prepared::Skip,
                },
                Step::SetManager {
                    source_id,
                    manager_source_id,
                    ..
                } => match (
                    object_id(ObjectKind::User, source_id, resolved),
                    object_id(ObjectKind::User, manager_source_id, resolved),
                ) {
                    (Some(id), Some(manager_id)) => {
                        Prepared::Ops(vec![DirectoryOp::SetManager { id, manager_id }])
                    }
                    _ => Prepared::Skip,
                },
                Step::RemoveManager { source_id, .. } => {
                    match object_id(ObjectKind::User, source_id, resolved) {
                        Some(id) => Prepared::Ops(vec![DirectoryOp::RemoveManager { id }]),
                        None => Prepared::Skip,
                    }
                }
                Step::AddMembers {
                    group_source_id,
                    member_source_ids,
                    ..
                } => match object_id(ObjectKind::Group, group_source_id, resolved) {
                    Some(group_id) => {
                        let existing = extras.existing_members.get(group_source_id);
                        let member_ids: Vec<String> = member_source_ids
                            .iter()
                            .filter_map(|m| object_id(ObjectKind::User, m, resolved))
                            .filter(|m| !existing.is_some_and(|e| e.contains(m)))
                            .collect();
                        if member_ids.is_empty() {
                            Prepared::Local
                        } else {
                            // One operation per `members@odata.bind` PATCH (20 references), so
                            // the directory can send a large group's PATCHes concurrently.
                            Prepared::Ops(
                                member_ids
                                    .chunks(20)
                                    .map(|chunk| DirectoryOp::AddMembers {
                                        group_id: group_id.clone(),
                                        member_ids: chunk.to_vec(),
                                    })
                                    .collect(),
                            )
                        }
                    }
                    None => Prepared::Skip,
                },
                Step::RemoveMembers {
                    group_source_id,
                    member_object_ids,
                    ..
                } => match object_id(ObjectKind::Group, group_source_id, resolved) {
                    Some(group_id) => Prepared::Ops(
                        member_object_ids
                            .iter()
                            .map(|m| DirectoryOp::RemoveMember {
                                group_id: group_id.clone(),
                                member_id: m.clone(),
                            })
                            .collect(),
                    ),
                    None => Prepared::Skip,
                },
                Step::RestoreUser { object_id, .. } => {
                    Prepared::Ops(vec![DirectoryOp::RestoreUser {
                        id: object_id.clone(),
                    }])
                }
                // A stale link whose object another source id holds now, or whose deleted
                // object Graph has purged: forgotten, the tenant left alone.
                Step::Deprovision { reason, .. } if !reason.touches_tenant() => Prepared::Local,
                Step::Deprovision {
                    kind,
                    object_id,
                    action,
                    ..
                } => match (kind, action) {
                    (ObjectKind::User, RemoveAction::Disable) => {
                        Prepared::Ops(vec![DirectoryOp::UpdateUser {
                            id: object_id.clone(),
                            properties: BTreeMap::from([(
                                "accountEnabled".to_owned(),
                                Value::Bool(false),
                            )]),
                        }])
                    }
                    (ObjectKind::User, RemoveAction::Delete) => {
                        Prepared::Ops(vec![DirectoryOp::DeleteUser {
                            id: object_id.clone(),
                        }])
                    }
                    (ObjectKind::Group, RemoveAction::Delete) => {
                        Prepared::Ops(vec![DirectoryOp::DeleteGroup {
                            id: object_id.clone(),
                        }])
                    }
                    // Groups have no enabled flag: "disable" leaves the group as it is.
                    (ObjectKind::Group, RemoveAction::Disable) => Prepared::Local,
                },
            };
            prepared.push(p);
        }

        // One apply call for the whole chunk.
        let mut ops = Vec::new();
        let mut spans = Vec::with_capacity(prepared.len());
        let mut refused: HashMap<usize, DirectoryError> = HashMap::new();
        for (index, p) in prepared.into_iter().enumerate() {
            match p {
                Prepared::Ops(step_ops) => {
                    spans.push(Some((ops.len(), step_ops.len())));
                    ops.extend(step_ops);
                }
                Prepared::Local => spans.push(Some((ops.len(), 0))),
                Prepared::Skip => spans.push(None),
                Prepared::Refused(error) => {
                    refused.insert(index, error);
                    spans.push(Some((ops.len(), 0)));
                }
            }
        }
        // No tenant write without the lease: a run that lost it stops here.
        self.lease.confirm().await?;
        self.mark_groups_in_flight(chunk, &in_flight).await?;
        let results = if ops.is_empty() {
            Vec::new()
        } else {
            self.directory.apply(ops).await
        };

        // Record outcomes.
        let now = self.clock.now();
        let mut changed: HashMap<(ObjectKind, String), Link> = HashMap::new();
        let mut unlinked: Vec<(ObjectKind, String)> = Vec::new();
        let mut failed: Vec<(ObjectKind, String, String, DirectoryError)> = Vec::new();
        let mut succeeded: HashSet<(ObjectKind, String)> = HashSet::new();
        for (index, (step, span)) in chunk.iter().zip(spans).enumerate() {
            let (kind, source_id) = subject(step);
            let key = (kind, source_id.to_owned());
            let Some((start, len)) = span else {
                report.add("skipped", 1);
                continue;
            };
            let step_results = &results[start..start + len];
            let adopted_elsewhere = match (step, step_results.first()) {
                (
                    Step::CreateUser { .. } | Step::CreateGroup { .. },
                    Some(Ok(OpOutcome::Created { id })),
                ) => self
                    .holder_of(kind, source_id, id, released)
                    .await?
                    .map(|holder| linked_elsewhere(kind, source_id, id, &holder)),
                _ => None,
            };
            let error = refused
                .remove(&index)
                .or(adopted_elsewhere)
                .or_else(|| step_results.iter().find_map(|r| r.as_ref().err()).cloned())
                .map(|error| explain_refused_restore(step, error));
            let relinked = match (step, &error) {
                (Step::CreateUser { properties, .. }, Some(e)) => {
                    self.relink_after_conflict(source_id, properties, e, released, now)
                        .await?
                }
                _ => None,
            };
            if let Some(link) = relinked {
                resolved.insert(key.clone(), link.object_id.clone());
                changed.insert(key.clone(), link);
                succeeded.insert(key);
                report.add("linked", 1);
                continue;
            }
            if let Some(error) = error {
                if error.is_fatal() && report.fatal.is_none() {
                    report.fatal = Some(error.message.clone());
                }
                failed.push((
                    kind,
                    source_id.to_owned(),
                    step.operation().to_owned(),
                    error,
                ));
                continue;
            }
            succeeded.insert(key.clone());
            let current = changed.remove(&key).or_else(|| links.get(&key).cloned());
            match step {
                Step::MatchGroup {
                    source_id,
                    display_name,
                    object_id,
                } => {
                    resolved.insert(key.clone(), object_id.clone());
                    changed.insert(
                        key,
                        new_link(
                            ObjectKind::Group,
                            source_id,
                            object_id,
                            LinkOrigin::Matched,
                            BTreeMap::from([(
                                "displayName".to_owned(),
                                Value::String(display_name.clone()),
                            )]),
                            true,
                            now,
                        ),
                    );
                    report.add("groups_matched", 1);
                }
                Step::CreateGroup {
                    source_id,
                    display_name,
                    ..
                } => {
                    if let Some(Ok(OpOutcome::Created { id })) = step_results.first() {
                        resolved.insert(key.clone(), id.clone());
                        changed.insert(
                            key,
                            new_link(
                                ObjectKind::Group,
                                source_id,
                                id,
                                LinkOrigin::Created,
                                BTreeMap::from([(
                                    "displayName".to_owned(),
                                    Value::String(display_name.clone()),
                                )]),
                                true,
                                now,
                            ),
                        );
                        report.add("groups_created", 1);
                    }
                }
                Step::LinkUser {
                    source_id,
                    object_id,
                    ..
                } => {
                    let mut applied = extras.matched.remove(source_id).unwrap_or_default();
                    let enabled = applied
                        .remove("accountEnabled")
                        .and_then(|v| v.as_bool())
                        .unwrap_or(true);
                    resolved.insert(key.clone(), object_id.clone());
                    changed.insert(
                        key,
                        new_link(
                            ObjectKind::User,
                            source_id,
                            object_id,
                            LinkOrigin::Matched,
                            applied,
                            enabled,
                            now,
                        ),
                    );
                    report.add("linked", 1);
                }
                Step::CreateUser {
                    source_id,
                    properties,
                    enabled,
                    ..
                } => {
                    if let Some(Ok(OpOutcome::Created { id })) = step_results.first() {
                        resolved.insert(key.clone(), id.clone());
                        changed.insert(
                            key,
                            new_link(
                                ObjectKind::User,
                                source_id,
                                id,
                                LinkOrigin::Created,
                                properties.clone(),
                                *enabled,
                                now,
                            ),
                        );
                        report.add("created", 1);
                    }
                }
                Step::UpdateUser { changes, .. } => {
                    if let Some(mut link) = current {
                        for change in changes {
                            if is_empty_value(&change.new) {
                                link.applied.remove(&change.name);
                            } else {
                                link.applied.insert(change.name.clone(), change.new.clone());
                            }
                        }
                        changed.insert(key, touch(link, now));
                    }
                    report.add("updated", 1);
                }
                Step::SetEnabled { enabled, .. } => {
                    if let Some(mut link) = current {
                        link.enabled = *enabled;
                        changed.insert(key, touch(link, now));
                    }
                    report.add(if *enabled { "enabled" } else { "disabled" }, 1);
                }
                Step::AssignLicenses { add, remove, .. } => {
                    if let Some(mut link) = current {
                        link.licenses.retain(|l| {
                            !remove.iter().any(|r| r.eq_ignore_ascii_case(&l.sku_id))
                                && !add.iter().any(|a| a.sku_id.eq_ignore_ascii_case(&l.sku_id))
                        });
                        link.licenses.extend(add.iter().cloned());
                        link.licenses.sort();
                        changed.insert(key, touch(link, now));
                    }
                    report.add("licensed", 1);
                }
                Step::SetManager {
                    manager_source_id, ..
                } => {
                    if let Some(mut link) = current {
                        link.manager = Some(manager_source_id.clone());
                        changed.insert(key, touch(link, now));
                    }
                    report.add("managers", 1);
                }
                Step::RemoveManager { .. } => {
                    if let Some(mut link) = current {
                        link.manager = None;
                        changed.insert(key, touch(link, now));
                    }
                    report.add("managers", 1);
                }
                Step::AddMembers {
                    member_source_ids, ..
                } => {
                    if let Some(mut link) = current {
                        let added: Vec<String> = member_source_ids
                            .iter()
                            .filter_map(|m| resolved.get(&(ObjectKind::User, m.clone())).cloned())
                            .collect();
                        report.add("members_added", added.len() as u64);
                        link.members.extend(added);
                        link.members.sort();
                        link.members.dedup();
                        changed.insert(key, touch(link, now));
                    }
                }
                Step::RemoveMembers {
                    member_object_ids, ..
                } => {
                    if let Some(mut link) = current {
                        link.members.retain(|m| !member_object_ids.contains(m));
                        changed.insert(key, touch(link, now));
                    }
                    report.add("members_removed", member_object_ids.len() as u64);
                }
                Step::RestoreUser { .. } => {
                    if let Some(mut link) = current {
                        link.deleted_at = None;
                        resolved.insert(key.clone(), link.object_id.clone());
                        changed.insert(key, touch(link, now));
                    }
                    report.add("restored", 1);
                }
                // A deleted user's link is kept, marked deleted: the same identity back in
                // scope within the 30 days Graph keeps the user is restored, not created anew.
                Step::Deprovision {
                    kind: ObjectKind::User,
                    action: RemoveAction::Delete,
                    reason,
                    ..
                } if reason.touches_tenant() => {
                    if let Some(mut link) = current {
                        link.deleted_at = Some(now);
                        link.updated_at = now;
                        changed.insert(key, link);
                    }
                    report.add("deprovisioned", 1);
                }
                Step::Deprovision { reason, .. } => {
                    unlinked.push(key);
                    report.add(
                        if reason.touches_tenant() {
                            "deprovisioned"
                        } else {
                            "unlinked"
                        },
                        1,
                    );
                }
            }
        }

        // Durable before the next chunk: links first, then errors; every write fenced.
        let fence = self.lease.lease();
        let to_put: Vec<Link> = changed
            .into_values()
            .filter(|l| !unlinked.contains(&(l.kind, l.source_id.clone())))
            .collect();
        let mut to_put = to_put;
        while !to_put.is_empty() {
            match self.state.put_links(self.connection, &to_put, &fence).await {
                Ok(()) => break,
                // One object the store cannot hold: its failure, not the run's.
                Err(StateError::ObjectTooLarge {
                    kind,
                    source_id,
                    reason,
                }) => {
                    to_put.retain(|l| {
                        !(l.kind == kind && source_id_matches(&l.source_id, &source_id))
                    });
                    failed.push((
                        kind,
                        source_id.clone(),
                        "record".to_owned(),
                        DirectoryError::new(
                            crate::directory::FailureKind::Other,
                            format!("{kind} {source_id:?} cannot be recorded: {reason}"),
                        ),
                    ));
                    succeeded.retain(|(k, id)| !(*k == kind && source_id_matches(id, &source_id)));
                }
                Err(other) => return Err(other),
            }
        }
        for kind in [ObjectKind::User, ObjectKind::Group] {
            let ids: Vec<String> = unlinked
                .iter()
                .filter(|(k, _)| *k == kind)
                .map(|(_, id)| id.clone())
                .collect();
            if !ids.is_empty() {
                self.state
                    .delete_links(self.connection, kind, &ids, &fence)
                    .await?;
            }
            let ok: Vec<String> = succeeded
                .iter()
                .filter(|(k, id)| *k == kind && !failed.iter().any(|f| f.0 == kind && &f.1 == id))
                .map(|(_, id)| id.clone())
                .collect();
            if !ok.is_empty() {
                self.state
                    .clear_errors(self.connection, kind, &ok, &fence)
                    .await?;
            }
        }
        for (kind, source_id, operation, error) in failed {
            let previous = self
                .state
                .get_errors(self.connection, kind, std::slice::from_ref(&source_id))
                .await?
                .into_iter()
                .next();
            let attempts = previous.as_ref().map_or(0, |p| p.attempts) + 1;
            let record = ObjectError {
                kind,
                source_id,
                operation,
                message: error.message.clone(),
                attempts,
                first_failed_at: previous.map_or(now, |p| p.first_failed_at),
                last_failed_at: now,
                next_retry_at: now + retry_delay_ms(attempts),
            };
            match self.state.put_error(self.connection, &record, &fence).await {
                Ok(()) => {}
                // Reported with the run; the store cannot hold a record for it.
                Err(StateError::ObjectTooLarge { .. }) => {}
                Err(other) => return Err(other),
            }
            report.add("failed", 1);
            report.failures.push(record);
        }
        Ok(())
    }
}

/// A restore Graph refused because another object took the deleted user's UPN or an address
/// since: says which user, and the two ways out.
fn explain_refused_restore(step: &Step, error: DirectoryError) -> DirectoryError {
    let Step::RestoreUser {
        user_principal_name,
        object_id,
        deleted_at,
        ..
    } = step
    else {
        return error;
    };
    if error.kind != crate::directory::FailureKind::Conflict {
        return error;
    }
    let property = error.property.as_deref().unwrap_or("a unique property");
    DirectoryError {
        message: format!(
            "user {user_principal_name} (object {object_id}, deleted {}) cannot be restored: \
             another object took its {property} since. Rename or remove that object and the next \
             run restores the user; or delete {object_id} permanently from the tenant's deleted \
             items and the next run creates a new account ({})",
            crate::clock::format_utc(*deleted_at),
            error.message
        ),
        ..error
    }
}

fn new_link(
    kind: ObjectKind,
    source_id: &str,
    object_id: &str,
    origin: LinkOrigin,
    applied: BTreeMap<String, Value>,
    enabled: bool,
    now: UnixMillis,
) -> Link {
    touch(
        Link {
            kind,
            source_id: source_id.to_owned(),
            object_id: object_id.to_owned(),
            origin,
            hash: String::new(),
            applied,
            enabled,
            licenses: Vec::new(),
            manager: None,
            members: Vec::new(),
            seen_generation: 0,
            updated_at: now,
            deleted_at: None,
        },
        now,
    )
}

/// Recomputes the hash from what the link says is applied, so that it never claims more than
/// the tenant holds.
fn touch(mut link: Link, now: UnixMillis) -> Link {
    link.hash = user_state_hash(&link.applied, link.enabled, &link.licenses);
    link.updated_at = now;
    link
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_delay_doubles_from_a_minute_to_six_hours() {
        assert_eq!(retry_delay_ms(1), 60_000);
        assert_eq!(retry_delay_ms(2), 120_000);
        assert_eq!(retry_delay_ms(3), 240_000);
        assert_eq!(retry_delay_ms(9), 256 * 60_000);
        assert_eq!(retry_delay_ms(10), 6 * 3_600_000);
        assert_eq!(retry_delay_ms(40), 6 * 3_600_000);
    }
}
