//! `m365-provisioner`: the command line of the provisioner. Each subcommand is a thin wrapper
//! around the shared libraries; exit codes are part of the interface (see [`exit`]).

use std::io::Write;
use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};

/// mimalloc: a sync maps, hashes and compares every user, allocating small values by the million;
/// glibc's allocator spent a third of a no-op run's CPU on them (`cargo bench -p
/// m365-integration-tests --bench provisioning -- c`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod app;
mod cloud;
mod cloud_state;
mod commands;
mod exit;

/// Provision users, groups, memberships, licenses and managers from an identity source into
/// Microsoft 365 (Entra ID) through Microsoft Graph.
///
/// Exit codes: 0 success · 1 unexpected failure · 2 configuration or usage error · 3 finished
/// with per-object failures · 4 deletion circuit breaker tripped · 5 connection or authentication
/// failure · 6 another run holds the connection. `plan --detailed-exitcode`: 0 no changes · 2
/// changes pending · 1 any error.
#[derive(Debug, Parser)]
#[command(name = "m365-provisioner", version, about, long_about)]
struct Cli {
    /// Log filter (tracing syntax), e.g. `info`, `debug`, `m365_graph=debug`. Wins over
    /// RUST_LOG, which wins over -v and -q; without any of them, warnings and errors.
    #[arg(long, global = true, env = "M365_LOG", value_name = "FILTER")]
    log: Option<String>,
    /// More log lines on stderr: -v info, -vv debug, -vvv trace.
    #[arg(short, long, global = true, action = clap::ArgAction::Count, conflicts_with = "quiet")]
    verbose: u8,
    /// Errors only on stderr.
    #[arg(short, long, global = true)]
    quiet: bool,
    /// How log lines are written on stderr: `text`, or `json` (one object per line, for a log
    /// collector).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,

    #[command(subcommand)]
    command: Command,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

impl Cli {
    /// The log filter: `--log` (or `M365_LOG`), else `RUST_LOG`, else the level -q / -v pick.
    fn log_filter(&self) -> String {
        if let Some(filter) = &self.log {
            return filter.clone();
        }
        if let Ok(filter) = std::env::var("RUST_LOG")
            && !filter.trim().is_empty()
        {
            return filter;
        }
        let level = match (self.quiet, self.verbose) {
            (true, _) => "error",
            (false, 0) => "warn",
            (false, 1) => "info",
            (false, 2) => "debug",
            (false, _) => "trace",
        };
        level.to_owned()
    }
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the sandbox tenant: a local server that answers Microsoft Graph v1.0 and the
    /// Entra ID token endpoint as they do, with a seeded demo tenant.
    Sandbox(commands::sandbox::Args),
    /// Check credentials and permissions against a tenant: obtains a token, reads the
    /// organization, and names every missing Graph permission.
    TestConnection(commands::test_connection::Args),
    /// Check the configuration offline (keys, adapters, templates, scope filter) and try the
    /// mapping on one source user.
    Validate(commands::validate::Args),
    /// Show what a sync would do (creates, links, updates old → new, licenses, managers,
    /// memberships, disables, deletes), changing nothing.
    Plan(commands::plan::Args),
    /// Bring the tenant in line with the source: plan, then carry the plan out.
    Sync(commands::sync::Args),
    /// Carry out a plan saved by `plan --out FILE`: exactly that plan, or nothing when the
    /// source, rule or tenant moved on in a way that changes it.
    Apply(commands::apply::Args),
    /// Show the last runs, the linked objects and the objects in error with their next retry.
    Status(commands::status::Args),
    /// Manage rules: `rule delete [--deprovision]`.
    Rule(commands::rule::Args),
    /// Free a connection whose run lease is held by a run that is gone for good, naming who
    /// held it since when (asks for confirmation; `--yes` skips it).
    Unlock(commands::unlock::Args),
    /// The deployed product (AWS Lambda): upload and inspect the connection configs its
    /// functions read from the deployment's DynamoDB table (`cloud config upload|list|show|history`).
    Cloud(cloud::Args),
    /// Print the shell completion script for bash, zsh, fish, elvish or powershell.
    Completions(commands::shell::CompletionsArgs),
    /// Print the man page (or write every page into a directory with --dir).
    Man(commands::shell::ManArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(&cli.log_filter(), cli.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            tracing::error!(error = %error, "cannot start the async runtime");
            return exit::Code::Failure.into();
        }
    };
    runtime.block_on(async {
        match cli.command {
            Command::Sandbox(args) => commands::sandbox::run(args).await.into(),
            Command::TestConnection(args) => commands::test_connection::run(args).await.into(),
            Command::Validate(args) => commands::validate::run(args).await.into(),
            // `--detailed-exitcode` has codes of its own.
            Command::Plan(args) => commands::plan::run(args).await,
            Command::Sync(args) => commands::sync::run(args).await.into(),
            Command::Apply(args) => commands::apply::run(args).await.into(),
            Command::Status(args) => commands::status::run(args).await.into(),
            Command::Rule(args) => commands::rule::run(args).await.into(),
            Command::Unlock(args) => commands::unlock::run(args).await.into(),
            Command::Cloud(args) => cloud::run(args).await.into(),
            Command::Completions(args) => {
                commands::shell::completions(&args, Cli::command()).into()
            }
            Command::Man(args) => commands::shell::man(&args, Cli::command()).into(),
        }
    })
}

fn init_logging(filter: &str, format: LogFormat) {
    let filter = match tracing_subscriber::EnvFilter::try_new(filter) {
        Ok(filter) => filter,
        Err(error) => {
            let _ = writeln!(
                std::io::stderr(),
                "warning: the log filter {filter:?} is not valid ({error}); logging warnings"
            );
            tracing_subscriber::EnvFilter::new("warn")
        }
    };
    // Colour only on a terminal, and never when NO_COLOR is set (https://no-color.org).
    let colour = std::io::IsTerminal::is_terminal(&std::io::stderr())
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(colour)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => logs.with_target(false).init(),
        LogFormat::Json => logs.json().with_current_span(true).init(),
    }
}
