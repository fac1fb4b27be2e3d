//! `m365-provisioner plan`: what a sync would do, changing nothing.

use std::io::Write;
use std::process::ExitCode;

use serde_json::json;

use super::common::{ConfigArg, build};
use crate::exit::Code;

#[derive(Debug, clap::Args)]
#[command(after_long_help = "\
Reads the source, the stored state and the tenant (lookups only) and prints every operation a
sync would carry out: creates, links of existing users and groups, updates with old → new
values, license, manager and membership changes, disables and deletes. Nothing is written.

With --detailed-exitcode the exit code says whether there is anything to do, as
`terraform plan -detailed-exitcode` does: 0 no changes, 2 changes pending, 1 an error of any
kind (the message names it). Without it, the documented codes apply (0 success, 2 configuration
error, 5 connection failure, …).

Examples:
  m365-provisioner plan --config examples/m365-provisioner.toml
  m365-provisioner plan --json | jq '.steps[] | select(.op == \"create_user\")'
  m365-provisioner plan --detailed-exitcode > plan.txt; [ $? -eq 2 ] && echo \"changes pending\"")]
pub struct Args {
    #[command(flatten)]
    config: ConfigArg,
    /// Print the plan as JSON.
    #[arg(long)]
    json: bool,
    /// Exit 0 when there are no changes, 2 when changes are pending, 1 on any error (for
    /// pipelines).
    #[arg(long)]
    detailed_exitcode: bool,
}

/// Whether the plan holds steps, as `--detailed-exitcode` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pending {
    Nothing,
    Changes,
}

pub async fn run(args: Args) -> ExitCode {
    let detailed = args.detailed_exitcode;
    let (code, pending) = plan(args).await;
    if !detailed {
        return code.into();
    }
    match (code, pending) {
        (Code::Success, Some(Pending::Nothing)) => ExitCode::SUCCESS,
        (Code::Success, Some(Pending::Changes)) => ExitCode::from(2),
        _ => ExitCode::FAILURE,
    }
}

/// Plans and prints; the exit code and, when planning succeeded, whether changes are pending.
async fn plan(args: Args) -> (Code, Option<Pending>) {
    let app = match build(&args.config, args.json).await {
        Ok(app) => app,
        Err(code) => return (code, None),
    };
    let planned = match app.engine().plan().await {
        Ok(planned) => planned,
        Err(error) => {
            let message = format!("planning failed: {error}");
            if args.json {
                let _ = writeln!(
                    std::io::stdout(),
                    "{:#}",
                    json!({"ok": false, "error": message})
                );
            } else {
                let _ = writeln!(std::io::stderr(), "error: {message}");
            }
            return (Code::Connection, None);
        }
    };
    let plan = &planned.plan;
    let mut out = std::io::stdout().lock();
    if args.json {
        let value = json!({
            "ok": true,
            "connection": plan.connection,
            "counts": plan.counts(),
            "minimal_writes": plan.minimal_writes(),
            "steps": plan.steps,
            "issues": plan.issues,
            "snapshot_complete": plan.snapshot_complete,
            "breaker": plan.breaker,
        });
        let _ = writeln!(out, "{value:#}");
    } else {
        let _ = write!(out, "{}", plan.render_table());
        let _ = writeln!(out, "{}", summary(plan));
    }
    let pending = if plan.steps.is_empty() {
        Pending::Nothing
    } else {
        Pending::Changes
    };
    (Code::Success, Some(pending))
}

/// One line: counts per operation.
pub fn summary(plan: &m365_core::plan::Plan) -> String {
    if plan.steps.is_empty() {
        return format!("plan {}: no changes", plan.connection);
    }
    let counts: Vec<String> = plan
        .counts()
        .iter()
        .map(|(op, n)| format!("{n} {op}"))
        .collect();
    format!(
        "plan {}: {} ({} Graph writes at least)",
        plan.connection,
        counts.join(", "),
        plan.minimal_writes()
    )
}
