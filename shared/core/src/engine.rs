//! One run of a connection: take the lease, plan, check the circuit breaker, execute, record the
//! run and the checkpoint, give the lease back. `plan` stops after planning and changes nothing.

use crate::clock::Clock;
use crate::directory::Directory;
use crate::executor::{ExecutionReport, Executor};
use crate::lease::{HeldLease, LEASE_TTL_MS};
use crate::model::ObjectKind;
use crate::plan::Plan;
use crate::planner::{Focus, PlanError, Planned, Planner, Rule};
use crate::source::Source;
use crate::state::{
    Checkpoint, Lease, LeaseGrant, LeaseHolder, ObjectError, Phase, RunRecord, RunStatus,
    StateError, StateStore, UnixMillis,
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
    fn planner<'p>(&'p self, focus: Option<&'p Focus>) -> Planner<'p> {
        Planner {
            focus,
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
        self.planner(None).plan().await
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

        let planned = match self.planner(options.focus).plan().await {
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
        };
        let report = executor.execute(planned).await?;

        self.record_plan_issues(&plan, &report, held, now).await?;

        let after = self.directory.counters();
        run.counts = crate::counts::RunCounts {
            graph_requests: after.requests - before.requests,
            graph_writes: after.writes - before.writes,
            graph_throttled: after.throttled - before.throttled,
            planned: plan.steps.len() as u64,
            plan_issues: plan.issues.len() as u64,
            ..report.counts
        };
        let (status, message) = run_status(&plan, &report);
        run.status = status;
        if message.is_some() {
            run.message = message;
        }
        run.finished_at = Some(self.clock.now());

        if options.focus.is_some() {
            // A focused run says nothing about the snapshot: the checkpoint stays.
            self.state
                .put_run(self.connection, &run, &held.lease())
                .await?;
            return Ok(SyncOutcome { plan, report, run });
        }
        self.advance_checkpoint(&plan, &run, held, now).await?;
        self.state
            .put_run(self.connection, &run, &held.lease())
            .await?;
        Ok(SyncOutcome { plan, report, run })
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
    ) -> Result<(), RunError> {
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
        Ok(())
    }

    /// The checkpoint after a full run: a new generation when the snapshot was finished, and
    /// whether it may be swept. It moves only after the writes it covers are recorded.
    async fn advance_checkpoint(
        &self,
        plan: &Plan,
        run: &RunRecord,
        held: &HeldLease<'_>,
        now: UnixMillis,
    ) -> Result<(), RunError> {
        let previous = self.state.get_checkpoint(self.connection).await?;
        let finished = matches!(
            run.status,
            RunStatus::Succeeded | RunStatus::PartiallyFailed | RunStatus::BreakerTripped
        );
        let generation = previous.as_ref().map_or(0, |c| c.generation) + u64::from(finished);
        let checkpoint = Checkpoint {
            generation,
            phase: Phase::Idle,
            sweep_allowed: plan.snapshot_complete,
            changes_cursor: previous.as_ref().and_then(|c| c.changes_cursor.clone()),
            last_complete_at: if finished {
                Some(run.finished_at.unwrap_or(now))
            } else {
                previous.and_then(|c| c.last_complete_at)
            },
            updated_at: self.clock.now(),
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
