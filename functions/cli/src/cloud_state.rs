//! `m365-provisioner cloud status | runs | errors | history | sync`: a deployed connection's runs,
//! objects in error and per-object history, read from the deployment's DynamoDB table (the
//! same views as `status` on a local state file), and provision on demand against it.
//!
//! The reads need only the table: the connection's newest config names its rule, and so its
//! state key (`<connection>/<rule>`). `cloud sync --user` runs the focused sync from this
//! machine with the deployment's config, secret (Secrets Manager) and state table — the engine
//! and the lease the scheduled function uses, so the two never run the connection at once.

use std::sync::atomic::AtomicBool;
use std::time::Instant;

use std::io::Write as _;

use m365_aws::{DynamoStateStore, FunctionInvoker, InvokeError};
use m365_core::engine::RunError;
use m365_core::inspect::resolve_focus;
use m365_core::plan::Plan;
use m365_runtime::scheduled::{SyncRequest, SyncResponse};
use m365_wiring::cloud_config::parse_cloud_config;
use m365_wiring::connect::state_key;
use m365_wiring::context::{Connection, Deployment, Settings, SetupFailure};

use crate::cloud::{Outcome, Target, store_error};
use crate::commands::status::print_object;
use crate::commands::status::{View, report};
use crate::commands::sync::{RunRequest, confirm_destructive, execute, headline, report_error};
use crate::exit::Code;

/// The table and connection whose state is read.
#[derive(Debug, clap::Args)]
pub struct StateTarget {
    #[command(flatten)]
    pub target: Target,
    /// The connection ([connection] name of its config).
    #[arg(long, value_name = "NAME")]
    pub connection: String,
    /// Print the same as JSON.
    #[arg(long)]
    pub json: bool,
}

/// `cloud sync`'s options.
#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("focus").required(true).multiple(true).args(["users", "groups"])))]
pub struct SyncArgs {
    #[command(flatten)]
    pub state: StateTarget,
    /// Sync only this user: its source id, or the userPrincipalName or tenant object id of a
    /// linked user. Repeat for several.
    #[arg(long = "user", value_name = "ID")]
    pub users: Vec<String>,
    /// Sync only this group: its source id, or the displayName or tenant object id of a linked
    /// group. Repeat for several.
    #[arg(long = "group", value_name = "ID")]
    pub groups: Vec<String>,
    /// The secret of a config without [secrets] secret_id (the functions' M365_SECRET_ID).
    #[arg(long, env = "M365_SECRET_ID", value_name = "SECRET")]
    pub secret_id: Option<String>,
    /// Run the sync in the deployment: invoke this function (the stack's scheduled-sync
    /// function, its name or ARN) instead of running it on this machine.
    #[arg(long, env = "M365_SYNC_FUNCTION", value_name = "NAME|ARN")]
    pub function: Option<String>,
    /// Carry out disables and deletes even beyond the circuit breaker's limits.
    #[arg(long, conflicts_with = "function")]
    pub override_breaker: bool,
    /// Do not ask before destructive steps (asked only on a terminal, and only when the sync
    /// runs on this machine).
    #[arg(long, short = 'y')]
    pub yes: bool,
}

/// The deployment's state of one connection, and its state key.
async fn state_of(target: &StateTarget) -> Result<(DynamoStateStore, String), (Code, String)> {
    let sdk = m365_aws::sdk_config(target.target.endpoint_url.as_deref()).await;
    let client = m365_aws::dynamodb_client(&sdk);
    let table = &target.target.table;
    let connection = &target.connection;
    let newest = m365_aws::ConfigStore::new(client.clone(), table)
        .latest(connection)
        .await
        .map_err(|e| store_error(&e))?;
    let Some(stored) = newest else {
        return Err((
            Code::Config,
            format!(
                "no config for connection {connection} in table {table}; see m365-provisioner cloud config list"
            ),
        ));
    };
    let origin = format!("{connection} version {}", stored.version);
    let config = parse_cloud_config(&stored.text, &origin).map_err(|e| {
        (
            Code::Config,
            format!("the newest config of {connection} cannot be read: {e}"),
        )
    })?;
    Ok((
        DynamoStateStore::new(client, table.clone()),
        state_key(&config),
    ))
}

/// `cloud status`, `cloud runs`, `cloud errors`, `cloud history`: `view` of the connection.
pub async fn show(target: &StateTarget, view: View) -> Outcome {
    let (state, key) = state_of(target).await?;
    Ok(report(&state, &key, view, target.json).await)
}

/// The deployment and the connection's config, secret, source and tenant, as the functions
/// build them.
pub async fn deployment_connection(
    target: &Target,
    connection: &str,
    secret_id: Option<String>,
) -> Result<(Deployment, Connection), (Code, String)> {
    let settings = Settings::from_lookup(|name| match name {
        "M365_TABLE" => Some(target.table.clone()),
        "M365_SECRET_ID" => secret_id.clone(),
        // A sandbox tenant on this machine in place of Microsoft's hosts (loopback only).
        "M365_LOCAL_TENANT_URL" => std::env::var("M365_LOCAL_TENANT_URL").ok(),
        _ => None,
    })
    .map_err(|e| (Code::Config, e.to_string()))?;
    let sdk = m365_aws::sdk_config(target.endpoint_url.as_deref()).await;
    let deployment = Deployment::new(
        &sdk,
        settings,
        std::sync::Arc::new(m365_core::SystemClock),
        m365_graph::SharedState::default(),
    );
    let built = deployment.connection(connection).await.map_err(|e| {
        let code = match e.failure() {
            SetupFailure::NotConfigured | SetupFailure::Invalid => Code::Config,
            SetupFailure::Unavailable | SetupFailure::CredentialsRefused => Code::Connection,
        };
        (code, e.to_string())
    })?;
    Ok((deployment, built))
}

/// `cloud sync --user/--group`: provision on demand against the deployment, in its function
/// (`--function`) or on this machine.
pub async fn sync(args: SyncArgs) -> Outcome {
    use std::io::IsTerminal as _;
    if let Some(function) = &args.function {
        return sync_in_function(&args, function).await;
    }
    let started = Instant::now();
    let state = &args.state;
    let (deployment, connection) =
        deployment_connection(&state.target, &state.connection, args.secret_id.clone()).await?;
    let engine = connection.engine(&deployment);
    let now = engine.clock.now();
    let focus = match resolve_focus(
        engine.state,
        engine.connection,
        &args.users,
        &args.groups,
        now,
    )
    .await
    {
        Ok(focus) => focus,
        Err(error) => return Ok(report_error(&RunError::State(error), state.json)),
    };
    let shown = std::sync::Arc::new(AtomicBool::new(false));
    let ask = !args.yes && !state.json && std::io::stdin().is_terminal();
    let confirm = {
        let shown = std::sync::Arc::clone(&shown);
        move |plan: &Plan| confirm_destructive(plan, &shown)
    };
    let request = RunRequest {
        override_breaker: args.override_breaker,
        max_duration: None,
        json: state.json,
        full: false,
        command: "cloud sync",
        focus: focus.as_ref(),
        approve: if ask { Some(&confirm) } else { None },
        table_shown: &shown,
    };
    Ok(execute(&engine, request, started).await)
}

/// `cloud sync --function`: the scheduled-sync function runs the focused sync (in the
/// deployment's network, with its role and secret) and answers with each identity's steps.
async fn sync_in_function(args: &SyncArgs, function: &str) -> Outcome {
    let started = Instant::now();
    let state = &args.state;
    let sdk = m365_aws::sdk_config(state.target.endpoint_url.as_deref()).await;
    let request = SyncRequest {
        connection: state.connection.clone(),
        hop: 0,
        users: args.users.clone(),
        groups: args.groups.clone(),
    };
    let payload = serde_json::to_value(&request).map_err(|e| (Code::Failure, e.to_string()))?;
    let answer = FunctionInvoker::new(&sdk)
        .invoke(function, &payload)
        .await
        .map_err(|error| (invoke_code(&error), error.to_string()))?;
    let response: SyncResponse = serde_json::from_value(answer).map_err(|e| {
        (
            Code::Failure,
            format!(
                "function {function} answered, but not as the scheduled-sync function does: {e}"
            ),
        )
    })?;
    let code = match response.status.as_str() {
        "succeeded" | "checkpointed" => Code::Success,
        "partially_failed" => Code::PartialFailure,
        "breaker_tripped" => Code::BreakerTripped,
        "busy" => Code::Busy,
        _ => Code::Failure,
    };
    let mut out = std::io::stdout().lock();
    if state.json {
        let _ = writeln!(
            out,
            "{:#}",
            serde_json::json!({"ok": code == Code::Success, "function": function, "answer": response})
        );
        return Ok(code);
    }
    for report in &response.objects {
        print_object(&mut out, report, response.run_id.as_deref());
    }
    if let Some(message) = &response.message {
        let _ = writeln!(out, "note: {message}");
    }
    let counts = &response.counts;
    let done = match headline(counts) {
        words if words.is_empty() => "no changes".to_owned(),
        words => words,
    };
    let _ = writeln!(
        out,
        "cloud sync {} in function {function}: {done} · {} Graph writes, {} requests, {} throttled · {} · {:.1} s",
        state.connection,
        counts.graph_writes,
        counts.graph_requests,
        counts.graph_throttled,
        response.status,
        started.elapsed().as_secs_f64()
    );
    Ok(code)
}

/// The exit code of an invocation that gave no answer: the function's own failures are read
/// from its error type ([`m365_runtime::scheduled::SyncError::error_type`]).
fn invoke_code(error: &InvokeError) -> Code {
    match error {
        InvokeError::Function { error_type, .. } => match error_type.as_str() {
            "M365.NotConfigured" | "M365.InvalidConfiguration" | "M365.BadEvent" => Code::Config,
            "M365.CredentialsRefused" | "M365.Unavailable" => Code::Connection,
            _ => Code::Failure,
        },
        InvokeError::Refused { .. } | InvokeError::Transport { .. } => Code::Connection,
        InvokeError::NotJson { .. } => Code::Failure,
    }
}
