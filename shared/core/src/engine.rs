//! One run of a connection: take the lease, plan, check the circuit breaker, execute, record the
//! run and the checkpoint, give the lease back. `plan` stops after planning and changes nothing.
//!
//! A run reads the source in one of three passes ([`Pass`]): the whole source; only what changed
//! since the checkpoint's changes cursor, for sources that report changes with their deletes
//! (docs/design.md#incremental-runs); or the identities webhook events named.

use std::collections::BTreeSet;

use crate::changes::{ChangeSet, Prefetched, read_changes};
use crate::clock::Clock;
use crate::directory::Directory;
use crate::drift::{DriftMode, DriftScan};
use crate::executor::{ExecutionReport, Executor};
use crate::lease::{HeldLease, LEASE_TTL_MS};
use crate::model::ObjectKind;
use crate::plan::{BreakerVerdict, Plan, PlanIssue};
use crate::planner::{Focus, PlanError, Planned, Planner, Rule};
use crate::source::{Source, SourceCursor, SourceError};
use crate::state::{
    Checkpoint, HistoryEntry, HistoryResult, Lease, LeaseGrant, LeaseHolder, ObjectError, Phase,
    RunRecord, RunStatus, StateError, StateStore, UnixMillis,
};

/// The ports and settings of a connection's runs.
pub struct Engine<'a> {
    pub connection: &'a str,
    pub rule: &'a Rule,
    pub source: &'a dyn Source,
    pub directory: &'a dyn Directory,
    pub state: &'a dyn StateStore,
    pub clock: &'a dyn Clock,
    /// Source records per page.
    pub page_size: usize,
    /// Steps per `Directory::apply` call.
    pub chunk_size: usize,
}

/// How a sync is run.
#[derive(Default)]
pub struct SyncOptions<'a> {
    /// Who runs (CLI process with host and pid, Lambda request id): recorded in the lease.
    pub holder: LeaseHolder,
    /// Whether the process of a lease's holder is known to be gone (a CLI on the same host whose
    /// process ended): such a lease is broken and taken over at once instead of waiting for it
    /// to run out. `None`: never (Lambda, where the lease's short expiry does it).
    pub holder_gone: Option<&'a (dyn Fn(&LeaseHolder) -> bool + Sync)>,
    /// Carry out disables and deletes even when the circuit breaker trips.
    pub override_breaker: bool,
    /// Stop cleanly at this instant, leaving a checkpoint.
    pub deadline: Option<UnixMillis>,
    pub progress: Option<&'a (dyn Fn(u64, u64) + Sync)>,
    /// Only these identities (webhook events), re-read from the source; no sweep, and the
    /// checkpoint is left as it is.
    pub focus: Option<&'a Focus>,
    /// Read the whole source even when it could report only what changed since the last run.
    pub full: bool,
    /// Asked once the plan is made, before anything is written (an operator's confirmation, a
    /// saved plan compared with the one made now). `None`: approved.
    pub approve: Option<&'a Approve>,
}

/// Whether a planned run goes ahead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Approval {
    Approved,
    /// Not carried out; the reason is the run's message.
    Declined(String),
}

/// The approval hook of [`SyncOptions::approve`]: sees the plan, answers later (an operator may
/// take a while; the run's lease is renewed meanwhile).
pub type Approve = dyn Fn(&Plan) -> std::pin::Pin<Box<dyn Future<Output = Approval> + Send>> + Sync;

/// The failures a change pass retries at most (those due first in the store's order); the
/// rest wait for the next run.
const RETRIES_PER_RUN: usize = 1000;

/// How a run reads the source.
enum Pass {
    /// Every identity, swept when complete; `changes_from` becomes the changes cursor once the
    /// pass is applied.
    Full { changes_from: Option<SourceCursor> },
    /// Only what changed since the stored cursor, and the failures due for a retry; `next`
    /// becomes the cursor once the pass is applied.
    Changes {
        set: ChangeSet,
        next: SourceCursor,
        retry: Focus,
    },
    /// The identities webhook events named; the checkpoint stays as it is.
    Focused,
}

/// What a sync did.
#[derive(Debug)]
pub struct SyncOutcome {
    pub plan: Plan,
    pub report: ExecutionReport,
    pub run: RunRecord,
}

/// Why a run could not take place at all.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// Another run holds the connection's lease: `lease` names it and says until when.
    #[error(
        "connection {connection} is being synced by {holder} since {since} (its lease runs until {until} unless renewed); this run does nothing. If that run is gone for good, `m365-provisioner unlock` frees the connection",
        connection = lease.connection,
        holder = lease.holder,
        since = crate::clock::format_utc(lease.acquired_at),
        until = crate::clock::format_utc(lease.expires_at)
    )]
    Busy { lease: Lease },
    #[error(transparent)]
    Plan(#[from] PlanError),
    #[error(transparent)]
    State(#[from] StateError),
}

impl Engine<'_> {
    fn planner<'p>(
        &'p self,
        focus: Option<&'p Focus>,
        drift: Option<&'p DriftScan>,
    ) -> Planner<'p> {
        Planner {
            focus,
            drift: drift.map(|scan| &scan.overlay).filter(|o| !o.is_empty()),
            connection: self.connection,
            rule: self.rule,
            source: self.source,
            directory: self.directory,
            state: self.state,
            now: self.clock.now(),
            page_size: self.page_size,
        }
    }

    /// What a sync would do now. Reads the source, the state and the tenant; writes nothing.
    pub async fn plan(&self) -> Result<Planned, PlanError> {
        let drift = self.scan_drift().await?;
        let mut planned = self.planner(None, drift.as_ref()).plan().await?;
        attach_drift(&mut planned, drift.as_ref());
        Ok(planned)
    }

    /// The tenant's drift since the stored cursor (docs/design.md#drift); `None` when drift is
    /// off or the tenant's changes could not be read.
    async fn scan_drift(&self) -> Result<Option<DriftScan>, PlanError> {
        let previous = self
            .state
            .get_checkpoint(self.connection)
            .await?
            .and_then(|c| c.drift);
        crate::drift::scan(
            &self.rule.drift,
            self.directory,
            self.state,
            self.connection,
            previous.as_ref(),
            self.clock.now(),
        )
        .await
    }

    /// The pass of this run, the drift it found (not in a focused pass) and its plan.
    async fn prepare(
        &self,
        options: &SyncOptions<'_>,
    ) -> Result<(Pass, Option<DriftScan>, Planned), PlanError> {
        let pass = self.choose_pass(options).await?;
        let drift = match pass {
            Pass::Focused => None,
            Pass::Full { .. } | Pass::Changes { .. } => self.scan_drift().await?,
        };
        let mut planned = self.plan_pass(&pass, options.focus, drift.as_ref()).await?;
        attach_drift(&mut planned, drift.as_ref());
        Ok((pass, drift, planned))
    }

    /// Takes the connection's lease for `holder`. A lease whose holder's process is known to be
    /// gone (`holder_gone`) is broken and taken over at once.
    async fn take_lease(
        &self,
        holder: &LeaseHolder,
        holder_gone: Option<&(dyn Fn(&LeaseHolder) -> bool + Sync)>,
    ) -> Result<Lease, RunError> {
        let mut broke = false;
        loop {
            let now = self.clock.now();
            match self
                .state
                .acquire_lease(self.connection, holder, now, LEASE_TTL_MS)
                .await?
            {
                LeaseGrant::Acquired(lease) => return Ok(lease),
                LeaseGrant::Busy(held) => {
                    let gone = !broke && holder_gone.is_some_and(|gone| gone(&held.holder));
                    if !gone {
                        return Err(RunError::Busy { lease: held });
                    }
                    tracing::warn!(
                        connection = self.connection,
                        holder = %held.holder,
                        token = held.token,
                        "the lease holder's process is gone; taking the lease over"
                    );
                    self.state.break_lease(self.connection, held.token).await?;
                    broke = true;
                }
            }
        }
    }

    /// Gives the lease back; a failure only delays the next run until the lease runs out.
    async fn give_back(&self, lease: &Lease) {
        if let Err(error) = self.state.release_lease(lease).await {
            tracing::warn!(connection = self.connection, error = %error, "could not release the run lease");
        }
    }

    /// Plans and carries the plan out, holding the connection's lease (renewed while it runs).
    pub async fn sync(&self, options: SyncOptions<'_>) -> Result<SyncOutcome, RunError> {
        let started = self.clock.now();
        let lease = self
            .take_lease(&options.holder, options.holder_gone)
            .await?;
        let held = HeldLease::new(self.state, self.clock, lease);
        let result = held
            .run(self.sync_holding_lease(&options, &held, started))
            .await;
        self.give_back(&held.lease()).await;
        result
    }

    async fn sync_holding_lease(
        &self,
        options: &SyncOptions<'_>,
        held: &HeldLease<'_>,
        started: UnixMillis,
    ) -> Result<SyncOutcome, RunError> {
        let lease = held.lease();
        let mut run = RunRecord {
            id: format!("{}-{started}-{}", self.connection, lease.token),
            started_at: started,
            finished_at: None,
            status: RunStatus::Running,
            counts: crate::counts::RunCounts::default(),
            message: None,
        };
        self.state
            .put_run(self.connection, &run, &held.lease())
            .await?;
        let before = self.directory.counters();

        let (pass, drift, planned) = match self.prepare(options).await {
            Ok(planned) => planned,
            Err(error) => {
                run.status = RunStatus::Failed;
                run.finished_at = Some(self.clock.now());
                run.message = Some(error.to_string());
                self.state
                    .put_run(self.connection, &run, &held.lease())
                    .await?;
                return Err(error.into());
            }
        };
        let plan = planned.plan.clone();
        if let Some(approve) = options.approve
            && let Approval::Declined(reason) = approve(&plan).await
        {
            run.status = RunStatus::Declined;
            run.finished_at = Some(self.clock.now());
            run.message = Some(reason);
            run.counts.planned = plan.steps.len() as u64;
            self.state
                .put_run(self.connection, &run, &held.lease())
                .await?;
            return Ok(SyncOutcome {
                plan,
                report: ExecutionReport::default(),
                run,
            });
        }
        let now = self.clock.now();

        let executor = Executor {
            connection: self.connection,
            directory: self.directory,
            state: self.state,
            clock: self.clock,
            deadline: options.deadline,
            chunk_size: self.chunk_size,
            force_change_password: self.rule.force_change_password,
            match_attribute: &self.rule.match_attribute,
            allow_destructive: !plan.breaker.tripped || options.override_breaker,
            progress: options.progress,
            lease: held,
            run_id: &run.id,
            history_retention_ms: self.rule.history_retention_ms(),
        };
        let report = executor.execute(planned).await?;

        self.record_plan_issues(&plan, &report, held, now, &run.id)
            .await?;
        self.record_drift(&plan, now, &run.id).await?;

        let after = self.directory.counters();
        run.counts = crate::counts::RunCounts {
            graph_requests: after.requests - before.requests,
            graph_writes: after.writes - before.writes,
            graph_throttled: after.throttled - before.throttled,
            planned: plan.steps.len() as u64,
            plan_issues: plan.issues.len() as u64,
            drift: plan.drift.len() as u64,
            ..report.counts
        };
        let (status, message) = run_status(&plan, &report);
        run.status = status;
        run.message = message.or_else(|| pass_message(&pass));
        run.finished_at = Some(self.clock.now());

        self.advance_checkpoint(&pass, drift.as_ref(), &plan, &run, held, now)
            .await?;
        self.state
            .put_run(self.connection, &run, &held.lease())
            .await?;
        Ok(SyncOutcome { plan, report, run })
    }

    /// The pass this run makes: the identities of a focus; else the changes since the stored
    /// cursor when the source reports them and no full pass is asked for or due; else the whole
    /// source. A cursor the source no longer accepts means a full pass, logged, never an error.
    async fn choose_pass(&self, options: &SyncOptions<'_>) -> Result<Pass, PlanError> {
        if options.focus.is_some() {
            return Ok(Pass::Focused);
        }
        let capabilities = self.source.capabilities();
        if !(capabilities.incremental && capabilities.explicit_deletes) {
            return Ok(Pass::Full { changes_from: None });
        }
        if !options.full
            && let Some(cursor) = self.changes_cursor_in_use().await?
        {
            match read_changes(self.source, &cursor, self.page_size).await {
                Ok((mut set, next)) => {
                    self.forget_unlinked_deletions(&mut set).await?;
                    let retry = self.due_retries().await?;
                    return Ok(Pass::Changes { set, next, retry });
                }
                Err(SourceError::CursorExpired(reason)) => tracing::warn!(
                    connection = self.connection,
                    %reason,
                    "the source no longer accepts the stored changes cursor; this run reads the whole source"
                ),
                Err(SourceError::Unsupported(what)) => tracing::info!(
                    connection = self.connection,
                    what,
                    "the source cannot report changes now; this run reads the whole source"
                ),
                Err(other) => return Err(other.into()),
            }
        }
        // Taken before the snapshot: a change made while it is read is reported again later.
        let changes_from = match self.source.changes_start().await {
            Ok(cursor) => cursor,
            Err(error) => {
                tracing::warn!(
                    connection = self.connection,
                    %error,
                    "the source gave no changes cursor; the next run reads the whole source again"
                );
                None
            }
        };
        Ok(Pass::Full { changes_from })
    }

    /// Drops reported deletions of identities this connection never linked: they change
    /// nothing, and a source may report every departure from a wider search than its scope
    /// (Active Directory reports entries of the whole domain that changed or were deleted).
    async fn forget_unlinked_deletions(&self, set: &mut ChangeSet) -> Result<(), StateError> {
        for (kind, deleted) in [
            (ObjectKind::User, &mut set.deleted_users),
            (ObjectKind::Group, &mut set.deleted_groups),
        ] {
            if deleted.is_empty() {
                continue;
            }
            let ids: Vec<String> = deleted.iter().cloned().collect();
            let linked: BTreeSet<String> = self
                .state
                .get_links(self.connection, kind, &ids)
                .await?
                .into_iter()
                .map(|link| link.source_id)
                .collect();
            deleted.retain(|id| linked.contains(id));
        }
        Ok(())
    }

    /// The stored changes cursor, unless the source's periodic full pass is due.
    async fn changes_cursor_in_use(&self) -> Result<Option<SourceCursor>, StateError> {
        let Some(checkpoint) = self.state.get_checkpoint(self.connection).await? else {
            return Ok(None);
        };
        let Some(cursor) = checkpoint.changes_cursor else {
            return Ok(None);
        };
        if let (Some(every), Some(last)) =
            (self.source.full_pass_every(), checkpoint.last_complete_at)
        {
            let every = i64::try_from(every.as_millis()).unwrap_or(i64::MAX);
            if self.clock.now().saturating_sub(last) >= every {
                tracing::info!(
                    connection = self.connection,
                    last_full_pass = %crate::clock::format_utc(last),
                    "a periodic full pass is due; this run reads the whole source"
                );
                return Ok(None);
            }
        }
        Ok(Some(cursor))
    }

    /// The identities whose failures are due for a retry.
    async fn due_retries(&self) -> Result<Focus, StateError> {
        let now = self.clock.now();
        let mut retry = Focus::default();
        for error in self
            .state
            .list_errors(self.connection, RETRIES_PER_RUN)
            .await?
        {
            if error.next_retry_at > now || error.source_id.is_empty() {
                continue;
            }
            match error.kind {
                ObjectKind::User => retry.users.insert(error.source_id),
                ObjectKind::Group => retry.groups.insert(error.source_id),
            };
        }
        Ok(retry)
    }

    /// The plan of a pass. A change pass plans its identities as a focused plan reading them
    /// from the change set; with nothing changed and nothing to retry it reads nothing more.
    async fn plan_pass(
        &self,
        pass: &Pass,
        focus: Option<&Focus>,
        drift: Option<&DriftScan>,
    ) -> Result<Planned, PlanError> {
        let (set, retry) = match pass {
            Pass::Full { .. } => return self.planner(None, drift).plan().await,
            Pass::Focused => return self.planner(focus, None).plan().await,
            Pass::Changes { set, retry, .. } => (set, retry),
        };
        let mut focus = set.focus();
        for also in std::iter::once(retry).chain(drift.map(|d| &d.focus)) {
            focus.users.extend(also.users.iter().cloned());
            focus.groups.extend(also.groups.iter().cloned());
        }
        let mut planned = if focus.is_empty() {
            Planned {
                plan: self.empty_plan(),
                extras: Default::default(),
            }
        } else {
            let prefetched = Prefetched {
                source: self.source,
                changes: set,
            };
            let mut planner = self.planner(Some(&focus), drift);
            planner.source = &prefetched;
            planner.plan().await?
        };
        planned
            .plan
            .issues
            .extend(set.errors.iter().map(|error| PlanIssue {
                kind: error.kind,
                source_id: error.source_id.clone().unwrap_or_default(),
                operation: "read".into(),
                message: format!("{}: {}", error.location, error.message),
            }));
        Ok(planned)
    }

    /// A plan with nothing to do.
    fn empty_plan(&self) -> Plan {
        Plan {
            drift: Vec::new(),
            connection: self.connection.to_owned(),
            steps: Vec::new(),
            issues: Vec::new(),
            snapshot_complete: false,
            breaker: BreakerVerdict {
                max_count: self.rule.breaker.max_count,
                max_percent: self.rule.breaker.max_percent,
                ..BreakerVerdict::default()
            },
        }
    }

    /// Drift found, in each object's history: `status --object` shows what was changed in the
    /// tenant, and whether this connection repaired it (the steps' own entries).
    async fn record_drift(
        &self,
        plan: &Plan,
        now: UnixMillis,
        run_id: &str,
    ) -> Result<(), RunError> {
        let history: Vec<HistoryEntry> = plan
            .drift
            .iter()
            .map(|drift| HistoryEntry {
                kind: drift.kind,
                source_id: drift.source_id.clone(),
                name: drift.name.clone(),
                at: now,
                run_id: run_id.to_owned(),
                operation: "drift".to_owned(),
                change: HistoryEntry::clip(drift.to_string()),
                result: HistoryResult::Found,
                answer: String::new(),
                expires_at: now.saturating_add(self.rule.history_retention_ms()),
            })
            .collect();
        if !history.is_empty() {
            self.state.append_history(self.connection, &history).await?;
        }
        Ok(())
    }

    /// Problems found while planning are per-object errors: shown by `status`, retried at once
    /// next run (they go away when the source or the mapping is fixed). Recorded after the
    /// execution, so that another step of the same object succeeding (a user created whose
    /// manager is not in scope) does not clear them, and without replacing a failure of this
    /// run, whose backoff stands.
    async fn record_plan_issues(
        &self,
        plan: &Plan,
        report: &ExecutionReport,
        held: &HeldLease<'_>,
        now: UnixMillis,
        run_id: &str,
    ) -> Result<(), RunError> {
        let mut history = Vec::new();
        for issue in &plan.issues {
            if issue.source_id.is_empty()
                || report
                    .failures
                    .iter()
                    .any(|f| f.kind == issue.kind && f.source_id == issue.source_id)
            {
                continue;
            }
            let error = ObjectError {
                kind: issue.kind,
                source_id: issue.source_id.clone(),
                operation: issue.operation.clone(),
                message: issue.message.clone(),
                attempts: 1,
                first_failed_at: now,
                last_failed_at: now,
                next_retry_at: now,
            };
            history.push(HistoryEntry {
                kind: issue.kind,
                source_id: issue.source_id.clone(),
                name: issue.source_id.clone(),
                at: now,
                run_id: run_id.to_owned(),
                operation: format!("plan ({})", issue.operation),
                change: String::new(),
                result: HistoryResult::Failed,
                answer: HistoryEntry::clip(issue.message.clone()),
                expires_at: now.saturating_add(self.rule.history_retention_ms()),
            });
            held.check()?;
            match self
                .state
                .put_error(self.connection, &error, &held.lease())
                .await
            {
                // Shown with the plan; the store cannot hold a record for this object.
                Ok(()) | Err(StateError::ObjectTooLarge { .. }) => {}
                Err(other) => return Err(other.into()),
            }
        }
        self.state.append_history(self.connection, &history).await?;
        Ok(())
    }

    /// The checkpoint after a run. A full pass that finished starts a new generation (swept
    /// when complete); its changes cursor is the one taken before it, once applied. A change
    /// pass moves only the cursor, once applied. A pass stopped early, or whose disables and
    /// deletes the breaker held, leaves no cursor that would skip what it did not do. A focused
    /// pass leaves the checkpoint as it is. It moves only after the writes it covers are
    /// recorded.
    async fn advance_checkpoint(
        &self,
        pass: &Pass,
        drift: Option<&DriftScan>,
        plan: &Plan,
        run: &RunRecord,
        held: &HeldLease<'_>,
        now: UnixMillis,
    ) -> Result<(), RunError> {
        if matches!(pass, Pass::Focused) {
            return Ok(());
        }
        let previous = self.state.get_checkpoint(self.connection).await?;
        let applied = matches!(
            run.status,
            RunStatus::Succeeded | RunStatus::PartiallyFailed
        );
        let finished = applied || run.status == RunStatus::BreakerTripped;
        let previous_cursor = previous.as_ref().and_then(|c| c.changes_cursor.clone());
        // The tenant's changes were judged: read on from there once this run's writes are
        // recorded (a run stopped early reads them again; judging them twice is harmless).
        // The tenant's changes move on as the source's do: not past repairs the breaker held
        // (read again, they wait for the override). Repairs that failed are found again by a
        // full reconciliation on the next run, as a change round would not report them again.
        let repairing =
            drift.is_some_and(|scan| scan.mode == DriftMode::Repair && !scan.findings.is_empty());
        let drift = match drift {
            Some(scan) if applied || (finished && !repairing) => {
                let mut next = scan.next.clone();
                if repairing && run.status != RunStatus::Succeeded {
                    next.last_full_at = None;
                }
                Some(next)
            }
            _ => previous.as_ref().and_then(|c| c.drift.clone()),
        };
        let checkpoint = match pass {
            Pass::Changes { next, .. } => Checkpoint {
                changes_cursor: if applied {
                    Some(next.clone())
                } else {
                    previous_cursor
                },
                updated_at: self.clock.now(),
                drift,
                ..previous.unwrap_or(Checkpoint {
                    generation: 0,
                    phase: Phase::Idle,
                    sweep_allowed: false,
                    changes_cursor: None,
                    last_complete_at: None,
                    updated_at: now,
                    drift: None,
                })
            },
            Pass::Focused => return Ok(()),
            Pass::Full { changes_from } => Checkpoint {
                generation: previous.as_ref().map_or(0, |c| c.generation) + u64::from(finished),
                phase: Phase::Idle,
                sweep_allowed: plan.snapshot_complete,
                changes_cursor: if applied { changes_from.clone() } else { None },
                last_complete_at: if finished {
                    Some(run.finished_at.unwrap_or(now))
                } else {
                    previous.and_then(|c| c.last_complete_at)
                },
                updated_at: self.clock.now(),
                drift,
            },
        };
        held.check()?;
        self.state
            .put_checkpoint(self.connection, &checkpoint, &held.lease())
            .await?;
        Ok(())
    }

    /// Deletes the rule: with `deprovision` (or the rule's `deprovision_on_rule_deletion`), every
    /// user and group it linked is deprovisioned (its remove action) first; then everything
    /// stored for it is forgotten. Tenant objects it never linked are never touched.
    pub async fn delete_rule(
        &self,
        deprovision: bool,
        holder: &LeaseHolder,
    ) -> Result<(Plan, ExecutionReport), RunError> {
        let lease = self.take_lease(holder, None).await?;
        let held = HeldLease::new(self.state, self.clock, lease);
        // The rule's own preference deprovisions too, whoever deletes it (CLI or function).
        let deprovision = deprovision || self.rule.preferences.deprovision_on_rule_deletion;
        let result = held
            .run(self.delete_rule_holding_lease(deprovision, &held))
            .await;
        self.give_back(&held.lease()).await;
        result
    }

    async fn delete_rule_holding_lease(
        &self,
        deprovision: bool,
        held: &HeldLease<'_>,
    ) -> Result<(Plan, ExecutionReport), RunError> {
        let mut steps = Vec::new();
        if deprovision {
            for (kind, action) in [
                (ObjectKind::User, self.rule.preferences.remove_action),
                (ObjectKind::Group, self.rule.groups.remove_action),
            ] {
                let mut pages =
                    crate::state::LinkPages::new(self.state, self.connection, kind, 1000);
                while let Some(page) = pages.next_page().await? {
                    // A user deleted already is not deprovisioned again.
                    steps.extend(page.iter().filter(|link| !link.is_deleted()).map(|link| {
                        crate::planner::deprovision_step(
                            link,
                            action,
                            crate::plan::DeprovisionReason::RuleDeleted,
                        )
                    }));
                }
            }
        }
        let linked_users = self
            .state
            .count_links(self.connection, ObjectKind::User)
            .await?;
        let plan = Plan {
            drift: Vec::new(),
            connection: self.connection.to_owned(),
            steps,
            issues: Vec::new(),
            snapshot_complete: true,
            breaker: crate::plan::BreakerVerdict {
                destructive: 0,
                linked_users,
                max_count: self.rule.breaker.max_count,
                max_percent: self.rule.breaker.max_percent,
                tripped: false,
                ..crate::plan::BreakerVerdict::default()
            },
        };
        let executor = Executor {
            connection: self.connection,
            directory: self.directory,
            state: self.state,
            clock: self.clock,
            deadline: None,
            chunk_size: self.chunk_size,
            force_change_password: self.rule.force_change_password,
            match_attribute: &self.rule.match_attribute,
            // Deleting a rule with deprovisioning is the operator's explicit decision.
            allow_destructive: true,
            progress: None,
            lease: held,
            run_id: "rule-delete",
            history_retention_ms: self.rule.history_retention_ms(),
        };
        let report = executor
            .execute(Planned {
                plan: plan.clone(),
                extras: Default::default(),
            })
            .await?;
        // Forget the rule only when every deprovision went through: a failed one stays linked
        // so that a second `rule delete --deprovision` finishes the job.
        if report.failures.is_empty() && report.fatal.is_none() {
            held.check()?;
            self.state
                .clear_connection(self.connection, &held.lease())
                .await?;
        }
        Ok((plan, report))
    }

    /// Linked users and groups of the connection (status output).
    pub async fn linked_counts(&self) -> Result<(u64, u64), StateError> {
        Ok((
            self.state
                .count_links(self.connection, ObjectKind::User)
                .await?,
            self.state
                .count_links(self.connection, ObjectKind::Group)
                .await?,
        ))
    }
}

/// What a run's record says of its pass when nothing else needs saying.
fn pass_message(pass: &Pass) -> Option<String> {
    match pass {
        Pass::Changes { set, retry, .. } if set.is_empty() && retry.is_empty() => {
            Some("no source changes since the last run".into())
        }
        Pass::Changes { set, retry, .. } => Some(format!(
            "changes since the last run: {} users and {} groups changed, {} users and {} groups deleted, {} retried",
            set.users.len(),
            set.groups.len(),
            set.deleted_users.len(),
            set.deleted_groups.len(),
            retry.users.len() + retry.groups.len()
        )),
        Pass::Full { .. } | Pass::Focused => None,
    }
}

/// How a run ended, from its plan and execution, and the message that says why when it did
/// not simply succeed.
fn run_status(plan: &Plan, report: &ExecutionReport) -> (RunStatus, Option<String>) {
    if let Some(fatal) = &report.fatal {
        (RunStatus::Failed, Some(fatal.clone()))
    } else if report.stopped_at_deadline {
        (
            RunStatus::Checkpointed,
            Some("stopped at the deadline; the next run continues".into()),
        )
    } else if report.destructive_held {
        (
            RunStatus::BreakerTripped,
            Some(format!(
                "{}; rerun with the override to carry them out",
                plan.breaker.summary()
            )),
        )
    } else if !report.failures.is_empty() || !plan.issues.is_empty() {
        (RunStatus::PartiallyFailed, None)
    } else {
        (RunStatus::Succeeded, None)
    }
}

/// The drift a scan found, listed with the plan.
fn attach_drift(planned: &mut Planned, drift: Option<&DriftScan>) {
    if let Some(scan) = drift {
        planned.plan.drift = scan.findings.clone();
    }
}
