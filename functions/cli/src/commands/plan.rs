//! `m365-provisioner plan`: what a sync would do, changing nothing.

use std::io::Write;
use std::process::ExitCode;

use serde_json::json;

use m365_core::saved_plan::{SavedPlan, fingerprint};

use super::common::{ConfigArg, build, table_style};
use crate::exit::Code;

#[derive(Debug, clap::Args)]
#[command(after_long_help = "\
Reads the source, the stored state and the tenant (lookups only) and prints every operation a
sync would carry out: creates, links of existing users and groups, updates with old → new
values, license, manager and membership changes, disables and deletes. Nothing is written.

The table starts with a summary (objects to create, change and remove), then lists every object
with its steps, marked + (adds), ~ (changes) or - (removes); colours on a terminal unless
NO_COLOR is set. --summary prints the summary alone, for large plans.

--out FILE saves the plan; `apply FILE` carries out exactly that plan later, and refuses it,
naming the steps that differ, when the source, the rule or the tenant moved on in a way that
changes it.

With --detailed-exitcode the exit code says whether there is anything to do, as
`terraform plan -detailed-exitcode` does: 0 no changes, 2 changes pending, 1 an error of any
kind (the message names it). Without it, the documented codes apply (0 success, 2 configuration
error, 5 connection failure, …).

Examples:
  m365-provisioner plan --config examples/m365-provisioner.toml
  m365-provisioner plan --json | jq '.steps[] | select(.op == \"create_user\")'
  m365-provisioner plan --detailed-exitcode > plan.txt; [ $? -eq 2 ] && echo \"changes pending\"
  m365-provisioner plan --out reviewed.plan && m365-provisioner apply reviewed.plan")]
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
    /// Print the summary and the problems only, not every object.
    #[arg(long)]
    summary: bool,
    /// Save the plan to FILE (JSON, no secrets) for `apply FILE`.
    #[arg(long, value_name = "FILE")]
    out: Option<std::path::PathBuf>,
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
    if let Some(path) = &args.out
        && let Err(message) = save(plan, &app, path)
    {
        let _ = writeln!(std::io::stderr(), "error: {message}");
        return (Code::Failure, None);
    }
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
        let _ = write!(out, "{}", plan.render(table_style(args.summary)));
        if let Some(path) = &args.out {
            let _ = writeln!(
                out,
                "saved to {}: carry it out with `m365-provisioner apply {}`",
                path.display(),
                path.display()
            );
        }
    }
    let pending = if plan.steps.is_empty() {
        Pending::Nothing
    } else {
        Pending::Changes
    };
    (Code::Success, Some(pending))
}

/// Writes the plan for `apply`: to a temporary file beside it, then renamed, so a reader never
/// sees half a plan.
fn save(
    plan: &m365_core::plan::Plan,
    app: &crate::app::App,
    path: &std::path::Path,
) -> Result<(), String> {
    let saved = SavedPlan::new(
        plan.clone(),
        fingerprint(&app.config.rule),
        m365_core::Clock::now(&app.clock),
    );
    let text =
        serde_json::to_string_pretty(&saved).map_err(|e| format!("cannot write the plan: {e}"))?;
    let partial = path.with_extension("partial");
    std::fs::write(&partial, text + "\n")
        .and_then(|()| std::fs::rename(&partial, path))
        .map_err(|e| format!("cannot write the plan to {}: {e}", path.display()))
}
