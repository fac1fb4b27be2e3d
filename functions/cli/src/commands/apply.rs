//! `m365-provisioner apply FILE`: carry out a plan saved by `plan --out FILE` — exactly that
//! plan, or nothing.

use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use m365_core::engine::Approval;
use m365_core::plan::Plan;
use m365_core::saved_plan::{SavedPlan, fingerprint};

use super::common::{ConfigArg, build};
use super::sync::{RunRequest, execute, parse_duration};
use crate::exit::Code;

#[derive(Debug, clap::Args)]
#[command(after_long_help = "\
Plans again, as `plan` does (the whole source), and compares the new plan with the saved one.
When they hold the same steps, the plan is carried out as `sync` would; when the source, the
rule or the tenant moved on in a way that changes the plan, nothing is written and the message
names the steps that differ (exit 7). Review a new plan then.

The saved plan holds no secret (a new user's password is made when it is created); keep it
with the change request it was reviewed under.

Examples:
  m365-provisioner plan --out reviewed.plan
  m365-provisioner apply reviewed.plan
  m365-provisioner apply reviewed.plan --override-breaker   # the plan's disables/deletes were reviewed")]
pub struct Args {
    /// The plan file written by `plan --out`.
    #[arg(value_name = "FILE")]
    file: PathBuf,
    #[command(flatten)]
    config: ConfigArg,
    /// Carry out disables and deletes even beyond the circuit breaker's limits.
    #[arg(long)]
    override_breaker: bool,
    /// Stop cleanly after this long (e.g. 90s, 10m, 1h), leaving a checkpoint.
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    max_duration: Option<Duration>,
    /// Print the outcome as JSON.
    #[arg(long)]
    json: bool,
}

pub async fn run(args: Args) -> Code {
    let started = Instant::now();
    let saved = match read(&args.file) {
        Ok(saved) => saved,
        Err(message) => {
            let _ = writeln!(std::io::stderr(), "error: {message}");
            return Code::Config;
        }
    };
    let app = match build(&args.config, args.json).await {
        Ok(app) => app,
        Err(code) => return code,
    };
    let rule = fingerprint(&app.config.rule);
    let compare = move |plan: &Plan| {
        let approval = match saved.check(plan, &rule) {
            Ok(()) => Approval::Approved,
            Err(reason) => Approval::Declined(reason),
        };
        Box::pin(std::future::ready(approval)) as _
    };
    let shown = AtomicBool::new(false);
    let request = RunRequest {
        override_breaker: args.override_breaker,
        max_duration: args.max_duration,
        json: args.json,
        // The saved plan was made from the whole source.
        full: true,
        command: "apply",
        focus: None,
        approve: Some(&compare),
        table_shown: &shown,
    };
    execute(&app.engine(), request, started).await
}

fn read(path: &std::path::Path) -> Result<SavedPlan, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read the plan file {}: {e}", path.display()))?;
    SavedPlan::from_json(&text).map_err(|e| format!("{}: {e}", path.display()))
}
