//! One run of a connection: take the lease, plan, check the circuit breaker, execute, record the
//! run and the checkpoint, give the lease back. `plan` stops after planning and changes nothing.

use std::collections::BTreeMap;

use crate::clock::Clock;
use crate::directory::Directory;
use crate::executor::{ExecutionReport, Executor};
use crate::model::ObjectKind;
use crate::plan::Plan;
use crate::planner::{Focus, PlanError, Planned, Planner, Rule};
use crate::source::Source;
use crate::state::{
    Checkpoint, ObjectError, Phase, RunRecord, RunStatus, StateError, StateStore, UnixMillis,
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
    /// Who runs (host/process, Lambda request id): recorded in the lease.
    pub owner: String,
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
    #[error(
        "connection {connection} is being synced by {owner} (lease until {expires_at} ms); this run does nothing"
    )]
    Busy {
        connection: String,
        owner: String,
        expires_at: UnixMillis,
    },
    #[error(transparent)]
    Plan(#[from] PlanError),
    #[error(transparent)]
    State(#[from] StateError),
}

/// The lease outlives the run's deadline by this much, or lasts this long without one.
const LEASE_MARGIN_MS: i64 = 5 * 60_000;

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

    /// Plans and carries the plan out.
    pub async fn sync(&self, options: SyncOptions<'_>) -> Result<SyncOutcome, RunError> {
        let started = self.clock.now();
        let ttl = options.deadline.map_or(LEASE_MARGIN_MS * 6, |d| {
            (d - started).max(0) + LEASE_MARGIN_MS
        });
        let Some(lease) = self
            .state
            .acquire_lease(self.connection, &options.owner, started, ttl)
            .await?
        else {
            return Err(RunError::Busy {
                connection: self.connection.to_owned(),
                owner: options.owner,
                expires_at: started + ttl,
            });
        };
        let result = self.sync_holding_lease(&options, &lease, started).await;
        // Give the lease back whatever happened; a failure to do so only delays the next run
        // until the lease expires.
        if let Err(error) = self.state.release_lease(&lease).await {
            tracing::warn!(connection = self.connection, error = %error, "could not release the run lease");
        }
        result
    }

    async fn sync_holding_lease(
        &self,
        options: &SyncOptions<'_>,
        lease: &crate::state::Lease,
        started: UnixMillis,
    ) -> Result<SyncOutcome, RunError> {
        let mut run = RunRecord {
            id: format!("{}-{started}-{}", self.connection, lease.token),
            started_at: started,
            finished_at: None,
            status: RunStatus::Running,
            counts: BTreeMap::new(),
            message: None,
        };
        self.state.put_run(self.connection, &run).await?;
        let before = self.directory.counters();

        let planned = match self.planner(options.focus).plan().await {
            Ok(planned) => planned,
            Err(error) => {
                run.status = RunStatus::Failed;
                run.finished_at = Some(self.clock.now());
                run.message = Some(error.to_string());
                self.state.put_run(self.connection, &run).await?;
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
            allow_destructive: !plan.breaker.tripped || options.override_breaker,
            progress: options.progress,
        };
        let report = executor.execute(planned).await?;

        // Problems found while planning are per-object errors: shown by `status`, retried at once
        // next run (they go away when the source or the mapping is fixed). Recorded after the
        // execution, so that another step of the same object succeeding (a user created whose
        // manager is not in scope) does not clear them, and without replacing a failure of this
        // run, whose backoff stands.
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
            self.state.put_error(self.connection, &error).await?;
        }

        let after = self.directory.counters();
        run.counts = report.counts.clone();
        run.counts
            .insert("graph_requests".into(), after.requests - before.requests);
        run.counts
            .insert("graph_writes".into(), after.writes - before.writes);
        run.counts
            .insert("graph_throttled".into(), after.throttled - before.throttled);
        run.counts.insert("planned".into(), plan.steps.len() as u64);
        let issue_count = plan.issues.len() as u64;
        if issue_count > 0 {
            run.counts.insert("plan_issues".into(), issue_count);
        }
        run.status = if let Some(fatal) = &report.fatal {
            run.message = Some(fatal.clone());
            RunStatus::Failed
        } else if report.stopped_at_deadline {
            run.message = Some("stopped at the deadline; the next run continues".into());
            RunStatus::Checkpointed
        } else if report.destructive_held {
            run.message = Some(format!(
                "{}; rerun with the override to carry them out",
                plan.breaker.summary()
            ));
            RunStatus::BreakerTripped
        } else if !report.failures.is_empty() || issue_count > 0 {
            RunStatus::PartiallyFailed
        } else {
            RunStatus::Succeeded
        };
        run.finished_at = Some(self.clock.now());

        if options.focus.is_some() {
            // A focused run says nothing about the snapshot: the checkpoint stays.
            self.state.put_run(self.connection, &run).await?;
            return Ok(SyncOutcome { plan, report, run });
        }
        // The checkpoint moves only after the writes it covers are recorded (above).
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
        self.state
            .put_checkpoint(self.connection, &checkpoint, lease)
            .await?;
        self.state.put_run(self.connection, &run).await?;
        Ok(SyncOutcome { plan, report, run })
    }

    /// Deletes the rule: with `deprovision` (or the rule's `deprovision_on_rule_deletion`), every
    /// user and group it linked is deprovisioned (its remove action) first; then everything
    /// stored for it is forgotten. Tenant objects it never linked are never touched.
    pub async fn delete_rule(
        &self,
        deprovision: bool,
        owner: &str,
    ) -> Result<(Plan, ExecutionReport), RunError> {
        let now = self.clock.now();
        let Some(lease) = self
            .state
            .acquire_lease(self.connection, owner, now, LEASE_MARGIN_MS * 6)
            .await?
        else {
            return Err(RunError::Busy {
                connection: self.connection.to_owned(),
                owner: owner.to_owned(),
                expires_at: now,
            });
        };
        // The rule's own preference deprovisions too, whoever deletes it (CLI or function).
        let deprovision = deprovision || self.rule.preferences.deprovision_on_rule_deletion;
        let result = self.delete_rule_holding_lease(deprovision).await;
        if let Err(error) = self.state.release_lease(&lease).await {
            tracing::warn!(connection = self.connection, error = %error, "could not release the run lease");
        }
        result
    }

    async fn delete_rule_holding_lease(
        &self,
        deprovision: bool,
    ) -> Result<(Plan, ExecutionReport), RunError> {
        let mut steps = Vec::new();
        if deprovision {
            for (kind, action) in [
                (ObjectKind::User, self.rule.preferences.remove_action),
                (ObjectKind::Group, self.rule.groups.remove_action),
            ] {
                let mut after: Option<String> = None;
                loop {
                    let page = self
                        .state
                        .list_links(self.connection, kind, after.as_deref(), 1000)
                        .await?;
                    let Some(last) = page.last() else { break };
                    after = Some(last.source_id.clone());
                    steps.extend(page.iter().map(|link| {
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
            // Deleting a rule with deprovisioning is the operator's explicit decision.
            allow_destructive: true,
            progress: None,
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
            self.state.clear_connection(self.connection).await?;
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
