//! Execution: carries a [`Plan`] out through the [`Directory`] port, wave by wave in dependency
//! order ([`Wave`]), and records every result in the [`StateStore`] before the next chunk starts.
//!
//! Crash safety: a result is durable (link written, or error recorded) right after its chunk. A
//! crash between a tenant write and its record loses nothing: the next plan sees the identity as
//! not done and does it again, and every step is idempotent in the tenant (a created user is found
//! by the match attribute and linked instead of created twice; PATCH, assignLicense, manager and
//! membership writes converge).

mod history;
mod in_flight;
mod prepare;
mod record;
mod relink;

use std::collections::{BTreeMap, HashMap, HashSet};

use crate::clock::Clock;
use crate::counts::RunCounts;
use crate::directory::{Directory, DirectoryError, DirectoryResult, OpOutcome};
use crate::lease::HeldLease;
use crate::model::ObjectKind;
use crate::plan::{DeprovisionReason, Stage, Step};
use crate::planner::{PlanExtras, Planned};
use crate::state::{
    HistoryEntry, HistoryResult, Link, ObjectError, StateError, StateStore, UnixMillis,
};
use history::HistoryLog;
use prepare::{Batch, PrepareInputs, Prepared, linked_elsewhere};
use record::{ChunkOutcome, RecordInputs, explain_refused_restore};

/// An object of the connection: its kind and source id.
type Key = (ObjectKind, String);

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
    /// The run's id, in each history entry.
    pub run_id: &'a str,
    /// How long history entries are kept (the rule's `history_days`).
    pub history_retention_ms: i64,
}

/// What an execution did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ExecutionReport {
    /// Counts by outcome (the Graph traffic and plan counts are the engine's to fill).
    pub counts: RunCounts,
    /// Objects that failed in this run, with the reason.
    pub failures: Vec<ObjectError>,
    /// The deadline stopped the run; the next run continues.
    pub stopped_at_deadline: bool,
    /// Destructive steps were held back by the circuit breaker.
    pub destructive_held: bool,
    /// A failure that concerns the whole run (credentials); the run stopped.
    pub fatal: Option<String>,
}

/// First retry one minute after a failure, doubling up to six hours.
pub fn retry_delay_ms(attempts: u32) -> i64 {
    let minutes = 1i64 << attempts.saturating_sub(1).min(9);
    (minutes * 60_000).min(6 * 3_600_000)
}

/// Steps that run together, a chunk at a time; each wave needs only what earlier waves made.
/// The stages of a wave have no order among them, so its chunks mix them and Graph's quota is
/// not left idle while one stage's last requests finish before the next stage begins.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Wave {
    /// Groups and users matched, linked, restored or created.
    Objects,
    /// Updates, enables, managers (the manager exists after [`Wave::Objects`]), memberships
    /// (their group and members too), and the licenses of users not updated by this plan.
    Attributes,
    /// Licenses of users this plan also updates: a license needs the `usageLocation` an update
    /// may set (docs/graph-behaviour.md#licenses).
    LicensesAfterUpdates,
    /// Disables and deprovisions: the destructive wave, last.
    Removals,
}

impl Wave {
    fn of(step: &Step, updated: &HashSet<String>) -> Wave {
        match step.stage() {
            Stage::Groups | Stage::Users => Wave::Objects,
            Stage::Licenses if updated.contains(step.subject().1) => Wave::LicensesAfterUpdates,
            Stage::Updates | Stage::Licenses | Stage::Managers | Stage::Memberships => {
                Wave::Attributes
            }
            Stage::Removals => Wave::Removals,
        }
    }
}

/// What an execution carries from chunk to chunk.
struct RunContext {
    /// Links this plan gives up because another source id took their object over (the old id
    /// left the source, a new one matched the same tenant object): they do not block it.
    released: HashSet<Key>,
    extras: PlanExtras,
    /// Tenant ids of the objects linked, created or restored so far, by kind and source id.
    resolved: HashMap<Key, String>,
}

impl Executor<'_> {
    pub async fn execute(&self, planned: Planned) -> Result<ExecutionReport, StateError> {
        let Planned { plan, extras } = planned;
        let mut report = ExecutionReport::default();
        let total = plan.steps.len() as u64;
        let mut run = RunContext {
            released: plan
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
                .collect(),
            extras,
            resolved: HashMap::new(),
        };
        let updated: HashSet<String> = plan
            .steps
            .iter()
            .filter(|step| step.stage() == Stage::Updates)
            .map(|step| step.subject().1.to_owned())
            .collect();
        let mut waves: BTreeMap<Wave, Vec<Step>> = BTreeMap::new();
        let mut held: Vec<Step> = Vec::new();
        let mut steps = plan.steps;
        // Within a wave, stage order: a chunk spans stages, never waves.
        steps.sort_by_key(Step::stage);
        for step in steps {
            // A tripped breaker holds every destructive step, in whichever stage it sits.
            if !self.allow_destructive && step.is_destructive() {
                report.destructive_held = true;
                report.counts.held += 1;
                held.push(step);
                continue;
            }
            waves
                .entry(Wave::of(&step, &updated))
                .or_default()
                .push(step);
        }
        let mut done = 0u64;
        let now = self.clock.now();
        let mut held_back: Vec<HistoryEntry> = held
            .iter()
            .map(|step| self.history().held(step, now))
            .collect();
        if let Some(removals) = waves.get(&Wave::Removals)
            && !self.allow_destructive
        {
            held_back.extend(removals.iter().map(|step| self.history().held(step, now)));
        }
        self.state
            .append_history(self.connection, &held_back)
            .await?;
        for (wave, steps) in waves {
            if wave == Wave::Removals && !self.allow_destructive {
                report.destructive_held = true;
                report.counts.held += steps.len() as u64;
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
                self.run_chunk(chunk, &mut run, &mut report).await?;
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

    /// One chunk: gather its links, prepare its operations, apply them in one call, record the
    /// answers, and write the records before the next chunk.
    async fn run_chunk(
        &self,
        chunk: &[Step],
        run: &mut RunContext,
        report: &mut ExecutionReport,
    ) -> Result<(), StateError> {
        let started = std::time::Instant::now();
        let links = self.gather(chunk, &mut run.resolved).await?;
        let in_flight = self.groups_in_flight(chunk).await?;
        let mut batch = Batch::of(self.prepare(chunk, run, &in_flight).await?);
        // No tenant write without the lease: a run that lost it stops here.
        self.lease.confirm().await?;
        self.mark_groups_in_flight(chunk, &in_flight).await?;
        let prepared = started.elapsed();
        let ops = std::mem::take(&mut batch.ops);
        let (results, request_ids): (Vec<_>, Vec<_>) = if ops.is_empty() {
            (Vec::new(), Vec::new())
        } else {
            self.directory.apply_answered(ops).await.into_iter().unzip()
        };
        let applied = started.elapsed();
        let outcome = self
            .record(chunk, batch, (&results, &request_ids), &links, run, report)
            .await?;
        let recorded = started.elapsed();
        self.persist(outcome, report).await?;
        tracing::debug!(
            steps = chunk.len(),
            prepare_ms = prepared.as_millis() as u64,
            apply_ms = (applied - prepared).as_millis() as u64,
            record_ms = (recorded - applied).as_millis() as u64,
            persist_ms = (started.elapsed() - recorded).as_millis() as u64,
            "chunk done"
        );
        Ok(())
    }

    /// Links of every object the chunk touches, and of the members and managers it refers to;
    /// the live ones resolve their tenant ids.
    async fn gather(
        &self,
        chunk: &[Step],
        resolved: &mut HashMap<Key, String>,
    ) -> Result<HashMap<Key, Link>, StateError> {
        let mut user_ids: HashSet<String> = HashSet::new();
        let mut group_ids: HashSet<String> = HashSet::new();
        for step in chunk {
            match step.subject() {
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
        let mut links = HashMap::new();
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
        Ok(links)
    }

    /// Every step of the chunk as operations. A link of an existing object is refused when
    /// another identity of the connection holds the object, in the store or earlier in this
    /// chunk.
    async fn prepare(
        &self,
        chunk: &[Step],
        run: &mut RunContext,
        in_flight: &HashMap<String, UnixMillis>,
    ) -> Result<Vec<Prepared>, StateError> {
        let mut prepared = Vec::with_capacity(chunk.len());
        // Tenant objects linked by an earlier step of this chunk, to their source ids.
        let mut claimed: HashMap<Key, String> = HashMap::new();
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
                    let (kind, _) = step.subject();
                    let key = (kind, object_id.clone());
                    let holder = match claimed.get(&key).filter(|s| *s != source_id) {
                        Some(other) => Some(other.clone()),
                        None => {
                            self.holder_of(kind, source_id, object_id, &run.released)
                                .await?
                        }
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
                _ => step.operations(&mut PrepareInputs {
                    resolved: &run.resolved,
                    extras: &mut run.extras,
                    in_flight,
                    force_change_password: self.force_change_password,
                }),
            };
            prepared.push(p);
        }
        Ok(prepared)
    }

    /// What the answers change, step by step: failures (with a duplicate create relinked), and
    /// the links of the steps that went through.
    async fn record(
        &self,
        chunk: &[Step],
        mut batch: Batch,
        (results, request_ids): (&[DirectoryResult<OpOutcome>], &[Option<String>]),
        links: &HashMap<Key, Link>,
        run: &mut RunContext,
        report: &mut ExecutionReport,
    ) -> Result<ChunkOutcome, StateError> {
        let now = self.clock.now();
        let mut outcome = ChunkOutcome::default();
        let spans = std::mem::take(&mut batch.spans);
        for (index, (step, span)) in chunk.iter().zip(spans).enumerate() {
            let (kind, source_id) = step.subject();
            let key = (kind, source_id.to_owned());
            let Some(span) = span else {
                report.counts.skipped += 1;
                continue;
            };
            let step_results = &results[span.clone()];
            let step_request_ids = request_ids.get(span).unwrap_or_default();
            let refused = batch.refused.remove(&index);
            if let Some(error) = self.step_error(step, refused, step_results, run).await? {
                if let Step::CreateUser { properties, .. } = step
                    && let Some(link) = self
                        .relink_after_conflict(source_id, properties, &error, &run.released, now)
                        .await?
                {
                    let answer = format!(
                        "{}; linked to the tenant user that holds it: object {}",
                        error.message, link.object_id
                    );
                    outcome.history.push(self.history().entry(
                        step,
                        HistoryResult::Applied,
                        answer,
                        now,
                    ));
                    run.resolved.insert(key.clone(), link.object_id.clone());
                    outcome.changed.insert(key.clone(), link);
                    outcome.succeeded.insert(key);
                    report.counts.linked += 1;
                    continue;
                }
                if error.is_fatal() && report.fatal.is_none() {
                    report.fatal = Some(error.message.clone());
                }
                outcome
                    .history
                    .push(self.history().failed(step, &error, now));
                outcome.fail(step, error);
                continue;
            }
            outcome.history.push(
                self.history()
                    .applied(step, step_results, step_request_ids, now),
            );
            outcome.succeeded.insert(key.clone());
            let from_chunk = outcome.changed.remove(&key);
            let current = from_chunk.clone().or_else(|| links.get(&key).cloned());
            let recorded = step.record(
                current,
                step_results.first(),
                &mut RecordInputs {
                    extras: &mut run.extras,
                    resolved: &run.resolved,
                    counts: &mut report.counts,
                    now,
                },
            );
            if let record::Recorded::Link(link) = &recorded
                && !link.is_deleted()
            {
                run.resolved.insert(key.clone(), link.object_id.clone());
            }
            outcome.apply(key, recorded, from_chunk);
        }
        Ok(outcome)
    }

    /// Why a step failed, if it did: refused before sending, an object created that another
    /// identity of the connection holds, or Graph's answer.
    async fn step_error(
        &self,
        step: &Step,
        refused: Option<DirectoryError>,
        step_results: &[DirectoryResult<OpOutcome>],
        run: &RunContext,
    ) -> Result<Option<DirectoryError>, StateError> {
        let adopted_elsewhere = match (step, step_results.first()) {
            (
                Step::CreateUser { .. } | Step::CreateGroup { .. },
                Some(Ok(OpOutcome::Created { id })),
            ) => {
                let (kind, source_id) = step.subject();
                self.holder_of(kind, source_id, id, &run.released)
                    .await?
                    .map(|holder| linked_elsewhere(kind, source_id, id, &holder))
            }
            _ => None,
        };
        Ok(refused
            .or(adopted_elsewhere)
            .or_else(|| step_results.iter().find_map(|r| r.as_ref().err()).cloned())
            .map(|error| explain_refused_restore(step, error)))
    }

    /// Writes a chunk's records, fenced, before the next chunk: links first, then errors.
    async fn persist(
        &self,
        mut outcome: ChunkOutcome,
        report: &mut ExecutionReport,
    ) -> Result<(), StateError> {
        let fence = self.lease.lease();
        loop {
            let to_put = outcome.links_to_put();
            if to_put.is_empty() {
                break;
            }
            match self.state.put_links(self.connection, &to_put, &fence).await {
                Ok(()) => break,
                // One object the store cannot hold: its failure, not the run's.
                Err(StateError::ObjectTooLarge {
                    kind,
                    source_id,
                    reason,
                }) => outcome.refuse_record(kind, &source_id, &reason),
                Err(other) => return Err(other),
            }
        }
        for kind in [ObjectKind::User, ObjectKind::Group] {
            let ids = outcome.unlinked_ids(kind);
            if !ids.is_empty() {
                self.state
                    .delete_links(self.connection, kind, &ids, &fence)
                    .await?;
            }
            let ok = outcome.cleared(kind);
            if !ok.is_empty() {
                self.state
                    .clear_errors(self.connection, kind, &ok, &fence)
                    .await?;
            }
        }
        for failure in std::mem::take(&mut outcome.failed) {
            self.record_failure(failure, report).await?;
        }
        self.state
            .append_history(self.connection, &outcome.history)
            .await?;
        Ok(())
    }

    fn history(&self) -> HistoryLog<'_> {
        HistoryLog {
            run_id: self.run_id,
            retention_ms: self.history_retention_ms,
        }
    }

    /// A failed object's error record: attempts counted, next retry with backoff.
    async fn record_failure(
        &self,
        failure: record::Failure,
        report: &mut ExecutionReport,
    ) -> Result<(), StateError> {
        let now = self.clock.now();
        let previous = self
            .state
            .get_errors(
                self.connection,
                failure.kind,
                std::slice::from_ref(&failure.source_id),
            )
            .await?
            .into_iter()
            .next();
        let attempts = previous.as_ref().map_or(0, |p| p.attempts) + 1;
        let record = ObjectError {
            kind: failure.kind,
            source_id: failure.source_id,
            operation: failure.operation,
            message: failure.error.message,
            attempts,
            first_failed_at: previous.map_or(now, |p| p.first_failed_at),
            last_failed_at: now,
            next_retry_at: now + retry_delay_ms(attempts),
        };
        match self
            .state
            .put_error(self.connection, &record, &self.lease.lease())
            .await
        {
            // Reported with the run; the store cannot hold a record for it.
            Ok(()) | Err(StateError::ObjectTooLarge { .. }) => {}
            Err(other) => return Err(other),
        }
        report.counts.failed += 1;
        report.failures.push(record);
        Ok(())
    }

    /// The source id of this connection linked to `object_id`, when it is not `source_id` and
    /// its link is not `released` by this plan.
    async fn holder_of(
        &self,
        kind: ObjectKind,
        source_id: &str,
        object_id: &str,
        released: &HashSet<Key>,
    ) -> Result<Option<String>, StateError> {
        Ok(self
            .state
            .find_link_by_object(self.connection, kind, object_id)
            .await?
            .map(|link| link.source_id)
            .filter(|holder| holder != source_id && !released.contains(&(kind, holder.clone()))))
    }
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
