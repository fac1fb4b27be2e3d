//! The scheduled-sync handler: one invocation reconciles a connection until its deadline.
//!
//! # Continuation
//!
//! EventBridge Scheduler starts an execution of the sync state machine (Step Functions,
//! Standard) with `{"connection": "NAME"}`. The state machine invokes this function, and while
//! the answer says `"continue": true` it invokes it again with the answer as input. Each
//! invocation takes the connection's lease, plans from the source and the stored state, applies
//! as much as fits before `deadline − margin`, records what it applied, and gives the lease
//! back; the next invocation plans again and carries on with what is left (everything applied
//! is settled and skipped by its stored hash). So one invocation or fifty end in the same tenant
//! state.
//!
//! Why a state machine rather than self-invocation or waiting for the next tick: every hop is a
//! visible step of one execution (input, output with the run's counts, duration, errors), Step
//! Functions retries a hop that failed on Lambda's side, there is no recursion detection to
//! trip over (Lambda stops recursive loops after about 16 hops), and a stuck connection is
//! bounded by `M365_MAX_HOPS`. Invoked directly (without the state machine), the function still
//! works: the next schedule tick continues. Every invocation reports its hop number (metric
//! `Hop`, and `Busy` when it found the connection held; [`metrics::hop_metrics`]), which the
//! stack's hops alarm watches.
//!
//! After each run its failed objects are logged one structured line each ([`failures`]), at
//! most [`failures::LOGGED_FAILURES`] per run.
//!
//! Another run holding the lease (a retry of the Scheduler, a schedule firing while the last
//! execution still runs) makes the invocation answer `busy` and stop, logged; the lease's
//! fencing token keeps an outlived run from moving the checkpoint.

use m365_core::engine::{RunError, SyncOptions};
use m365_core::inspect::{ObjectReport, resolve_focus, run_traces};
use m365_core::planner::Focus;
use m365_core::{RunCounts, RunStatus, UnixMillis};
use serde::{Deserialize, Serialize};

use crate::context::{Deployment, SetupError, SetupFailure};
use crate::{failures, metrics};

/// The state machine's input: the Scheduler event, or the previous hop's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncRequest {
    pub connection: String,
    /// Invocations of this execution so far.
    #[serde(default)]
    pub hop: u32,
    /// Provision on demand (`m365-provisioner cloud sync --function`): only these users (source
    /// ids, or UPNs / object ids of linked users) are read, planned and written.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub users: Vec<String>,
    /// Provision on demand: only these groups (source ids, or displayNames / object ids of
    /// linked groups).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
}

/// What the invocation did; the state machine loops on `continue`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SyncResponse {
    pub connection: String,
    /// Invocations of this execution, this one included.
    pub hop: u32,
    /// The work did not fit: invoke again.
    #[serde(rename = "continue")]
    pub continue_: bool,
    /// `succeeded`, `partially_failed`, `breaker_tripped`, `checkpointed`, `failed` or `busy`.
    pub status: String,
    pub counts: RunCounts,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The run's id (absent when the invocation found the connection busy).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_id: Option<String>,
    /// Provision on demand: each named identity with the steps this run took for it and the
    /// tenant's answers (its history entries of the run).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub objects: Vec<ObjectReport>,
}

/// Why an invocation failed as a whole (the state machine execution fails with it).
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error("the event is not a sync request: {0}; expected {{\"connection\": \"NAME\"}}")]
    BadEvent(String),
    #[error(transparent)]
    Setup(#[from] SetupError),
    #[error("connection {connection}: {message}")]
    Run { connection: String, message: String },
}

impl SyncError {
    /// The error type Step Functions sees (`States.TaskFailed` carries it as `Error`).
    pub fn error_type(&self) -> &'static str {
        match self {
            SyncError::BadEvent(_) => "M365.BadEvent",
            SyncError::Setup(error) => match error.failure() {
                SetupFailure::NotConfigured => "M365.NotConfigured",
                SetupFailure::Invalid => "M365.InvalidConfiguration",
                SetupFailure::CredentialsRefused => "M365.CredentialsRefused",
                SetupFailure::Unavailable => "M365.Unavailable",
            },
            SyncError::Run { .. } => "M365.RunFailed",
        }
    }
}

impl From<SyncError> for lambda_runtime::Diagnostic {
    fn from(error: SyncError) -> Self {
        lambda_runtime::Diagnostic {
            error_type: error.error_type().to_owned(),
            error_message: error.to_string(),
        }
    }
}

/// The answer of a hop that found another run holding the connection: it does nothing but
/// count itself ([`metrics::hop_metrics`]).
fn busy(connection: String, hop: u32, lease: &m365_core::Lease, now: UnixMillis) -> SyncResponse {
    metrics::emit(&metrics::hop_metrics(&connection, hop, true, now));
    let owner = &lease.holder;
    tracing::info!(
        connection = %connection,
        hop,
        holder = %owner,
        lease_since = lease.acquired_at,
        lease_until = lease.expires_at,
        "another run holds the connection's lease; this invocation does nothing"
    );
    SyncResponse {
        connection,
        hop,
        continue_: false,
        status: "busy".to_owned(),
        counts: RunCounts::default(),
        message: Some(format!(
            "another run ({owner}) holds the lease since {}, until {} unless renewed",
            m365_core::clock::format_utc(lease.acquired_at),
            m365_core::clock::format_utc(lease.expires_at)
        )),
        run_id: None,
        objects: Vec::new(),
    }
}

/// The run's metrics and summary log line: its status as written in the answer, and whether
/// another hop continues it.
fn summarise(
    deployment: &Deployment,
    connection: &crate::context::Connection,
    hop: u32,
    run: &m365_core::RunRecord,
    duration: u64,
) -> (String, bool) {
    let name = &connection.name;
    let status = serde_json::to_value(run.status)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_else(|| format!("{:?}", run.status));
    metrics::emit(&metrics::run_metrics(
        "scheduled-sync",
        name,
        &run.counts,
        duration,
        deployment.clock.now(),
    ));
    metrics::emit(&metrics::hop_metrics(
        name,
        hop,
        false,
        deployment.clock.now(),
    ));
    let checkpointed = run.status == RunStatus::Checkpointed;
    let continue_ = checkpointed && hop < deployment.settings.max_hops;
    tracing::info!(
        connection = %name,
        config_version = connection.version,
        hop,
        status = %status,
        duration_ms = duration,
        counts = %serde_json::to_string(&run.counts).unwrap_or_default(),
        next = if continue_ { "continues in the next invocation" } else { "done" },
        "scheduled sync summary"
    );
    if checkpointed && !continue_ {
        tracing::warn!(
            connection = %name,
            hop,
            max_hops = deployment.settings.max_hops,
            "hop limit reached with work left; the next schedule tick continues (raise MaxHops or the function's timeout)"
        );
    }
    (status, continue_)
}

/// Runs one hop. `request_id` names the invocation in the lease and the logs; `deadline` is the
/// invocation's (`Context::deadline`, ms since the epoch).
pub async fn handle(
    deployment: &Deployment,
    event: serde_json::Value,
    request_id: &str,
    deadline: UnixMillis,
) -> Result<SyncResponse, SyncError> {
    let request: SyncRequest =
        serde_json::from_value(event).map_err(|e| SyncError::BadEvent(e.to_string()))?;
    let name = request.connection.clone();
    let hop = request.hop.saturating_add(1);
    let started = deployment.clock.now();
    let margin = i64::try_from(deployment.settings.deadline_margin.as_millis()).unwrap_or(0);
    let stop_at = deadline - margin;
    tracing::info!(
        connection = %name,
        hop,
        request_id,
        stop_at,
        "scheduled sync starts"
    );

    let connection = match deployment.connection(&name).await {
        Ok(connection) => connection,
        Err(error) => {
            tracing::error!(connection = %name, hop, error = %error, "scheduled sync cannot start");
            return Err(error.into());
        }
    };
    let engine = connection.engine(deployment);
    let focus = on_demand(&engine, &request).await?;
    let result = engine
        .sync(SyncOptions {
            holder: m365_core::LeaseHolder {
                owner: format!("scheduled-sync {request_id}"),
                host: None,
                pid: None,
            },
            deadline: Some(stop_at),
            focus: focus.as_ref(),
            ..SyncOptions::default()
        })
        .await;
    let duration = u64::try_from(deployment.clock.now() - started).unwrap_or(0);
    let outcome = match result {
        Ok(outcome) => outcome,
        Err(RunError::Busy { lease }) => {
            return Ok(busy(name, hop, &lease, deployment.clock.now()));
        }
        Err(error) => {
            // Credentials may have been rotated under a failing run: read them afresh next time.
            connection.secret_store.invalidate(&name).await;
            tracing::error!(connection = %name, hop, error = %error, "scheduled sync failed");
            return Err(SyncError::Run {
                connection: name,
                message: error.to_string(),
            });
        }
    };

    let run = &outcome.run;
    let (status, continue_) = summarise(deployment, &connection, hop, run, duration);
    let failed = failures::failed_objects(&outcome.plan, &outcome.report);
    failures::log_failed_objects(&name, &run.id, hop, &failed);
    if run.status == RunStatus::Failed {
        connection.secret_store.invalidate(&name).await;
        return Err(SyncError::Run {
            connection: name,
            message: run
                .message
                .clone()
                .unwrap_or_else(|| "the run failed".into()),
        });
    }
    let objects = match &focus {
        Some(focus) => {
            let now = deployment.clock.now();
            run_traces(engine.state, engine.connection, focus, &run.id, now)
                .await
                .map_err(|error| SyncError::Run {
                    connection: name.clone(),
                    message: format!("the run ended, but its steps cannot be read back: {error}"),
                })?
        }
        None => Vec::new(),
    };
    Ok(SyncResponse {
        connection: name,
        hop,
        continue_,
        status,
        counts: run.counts,
        message: run.message.clone(),
        run_id: Some(run.id.clone()),
        objects,
    })
}

/// The identities a provision-on-demand request names, resolved through the state (none: a
/// whole sync).
async fn on_demand(
    engine: &m365_core::engine::Engine<'_>,
    request: &SyncRequest,
) -> Result<Option<Focus>, SyncError> {
    let now = engine.clock.now();
    resolve_focus(
        engine.state,
        engine.connection,
        &request.users,
        &request.groups,
        now,
    )
    .await
    .map_err(|error| SyncError::Run {
        connection: request.connection.clone(),
        message: format!("the named identities cannot be looked up: {error}"),
    })
}
