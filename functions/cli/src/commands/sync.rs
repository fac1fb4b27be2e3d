//! `m365-provisioner sync`: plan, then carry the plan out.

use std::io::{IsTerminal, Write};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use m365_core::RunCounts;
use m365_core::engine::{Approval, Approve, Engine, RunError, SyncOptions};
use m365_core::inspect::{resolve_focus, run_traces};
use m365_core::plan::Plan;
use m365_core::planner::Focus;
use m365_core::state::RunStatus;
use serde_json::json;

use super::common::{ConfigArg, build, holder, holder_gone, report_busy, table_style};
use super::status::print_object;
use crate::exit::Code;

#[derive(Debug, clap::Args)]
#[command(after_long_help = "\
Prints the plan, carries it out, and ends with one summary line. Every result is recorded as it
happens: a run stopped at any instant (Ctrl-C, --max-duration, a crash) resumes on the next
sync without duplicating anything.

Exit codes: 0 done (or stopped at --max-duration: run again to continue) · 2 configuration
error · 3 finished with per-object failures (see `status`) · 4 the circuit breaker stopped
disables/deletes · 5 connection or authentication failure · 6 another run holds the connection
(the message names it and when its lease ends).

On a terminal, a plan that holds destructive steps (disables, deletes, removals of licenses or
members) is shown and sync asks before it writes anything; --yes skips the question,
and without a terminal (cron, CI) sync never asks. Answered no, nothing is written (exit 7).

--user and --group provision on demand: only the named identities are read from the source and
planned (the rest of the source is not read, nothing is swept, the changes cursor stays), and
every step taken for them is printed with the tenant's answer, as Entra's \"provision on demand\"
does. `status --object` shows the same later.

Only one run of a connection at a time: a run holds the connection's lease and renews it every
20 s; a run that was killed frees the connection within a minute, at once when it ran on this
host (its process is gone). `m365-provisioner unlock` frees it by hand.

Examples:
  m365-provisioner sync --config examples/m365-provisioner.toml
  m365-provisioner sync --max-duration 10m
  m365-provisioner sync --override-breaker   # after checking the plan's disables/deletes
  m365-provisioner sync --full               # whole source, not only its changes
  m365-provisioner sync --yes                # no question before destructive steps
  m365-provisioner sync --user avance@example.com   # provision one user on demand, step by step")]
pub struct Args {
    #[command(flatten)]
    config: ConfigArg,
    /// Carry out disables and deletes even beyond the circuit breaker's limits.
    #[arg(long)]
    override_breaker: bool,
    /// Stop cleanly after this long (e.g. 90s, 10m, 1h), leaving a checkpoint.
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    max_duration: Option<Duration>,
    /// Print the outcome as JSON instead of the plan table and summary.
    #[arg(long)]
    json: bool,
    /// Read the whole source, even when it could report only what changed since the last run
    /// (an LDAP directory with content synchronization). A full pass also finds entries that
    /// left the searched scope without a change report, and deprovisions them.
    #[arg(long)]
    full: bool,
    /// Do not ask before destructive steps (disables, deletes, removals of licenses or
    /// members). Without a terminal on stdin sync never asks.
    #[arg(long, short = 'y')]
    yes: bool,
    /// Provision on demand: sync only this user (its source id, or the userPrincipalName or
    /// tenant object id of a linked user) and print every step taken with the tenant's answer.
    /// Repeat for several.
    #[arg(long = "user", value_name = "ID")]
    users: Vec<String>,
    /// Provision on demand: sync only this group (source id, or displayName or tenant object id
    /// of a linked group). Repeat for several.
    #[arg(long = "group", value_name = "ID")]
    groups: Vec<String>,
}

pub(super) fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let n: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration: use e.g. 90s, 10m or 1h"))?;
    let secs = match unit {
        "s" | "" => n,
        "m" => n * 60,
        "h" => n * 3600,
        _ => return Err(format!("{text:?}: unknown unit {unit:?}; use s, m or h")),
    };
    Ok(Duration::from_secs(secs))
}

pub async fn run(args: Args) -> Code {
    let started = Instant::now();
    let app = match build(&args.config, args.json).await {
        Ok(app) => app,
        Err(code) => return code,
    };
    let engine = app.engine();
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
        Err(error) => return report_error(&RunError::State(error), args.json),
    };
    let shown = Arc::new(AtomicBool::new(false));
    let ask = !args.yes && !args.json && std::io::stdin().is_terminal();
    let confirm = {
        let shown = Arc::clone(&shown);
        move |plan: &Plan| confirm_destructive(plan, &shown)
    };
    let request = RunRequest {
        override_breaker: args.override_breaker,
        max_duration: args.max_duration,
        json: args.json,
        full: args.full,
        command: "sync",
        focus: focus.as_ref(),
        approve: if ask { Some(&confirm) } else { None },
        table_shown: &shown,
    };
    execute(&engine, request, started).await
}

/// A run as `sync`, `apply` and `cloud sync` ask for it.
pub(crate) struct RunRequest<'a> {
    pub override_breaker: bool,
    pub max_duration: Option<Duration>,
    pub json: bool,
    pub full: bool,
    /// The command, as the run's lease names it.
    pub command: &'static str,
    pub focus: Option<&'a Focus>,
    pub approve: Option<&'a Approve>,
    /// Set once the plan table was printed (by a confirmation), so it is not printed twice.
    pub table_shown: &'a AtomicBool,
}

/// Runs a sync and prints its outcome; the exit code.
pub(crate) async fn execute(
    engine: &Engine<'_>,
    request: RunRequest<'_>,
    started: Instant,
) -> Code {
    let deadline = request
        .max_duration
        .map(|d| engine.clock.now() + i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
    let bar = progress_bar();
    let show_after = started + Duration::from_secs(2);
    let json_mode = request.json;
    // Shown on stderr only once a run has taken more than two seconds.
    let progress = |done: u64, total: u64| {
        bar.set_length(total);
        bar.set_position(done);
        if !json_mode && bar.is_hidden() && Instant::now() >= show_after {
            bar.set_draw_target(ProgressDrawTarget::stderr());
        }
    };
    let outcome = engine
        .sync(SyncOptions {
            holder: holder(request.command),
            holder_gone: Some(&holder_gone),
            override_breaker: request.override_breaker,
            deadline,
            progress: Some(&progress),
            focus: request.focus,
            full: request.full,
            approve: request.approve,
        })
        .await;
    bar.finish_and_clear();
    let outcome = match outcome {
        Ok(outcome) => outcome,
        Err(error @ RunError::Busy { .. }) => return report_busy(&error, request.json),
        Err(error) => return report_error(&error, request.json),
    };
    let code = exit_code(outcome.run.status);
    let traces = match request.focus {
        Some(focus) => match run_traces(
            engine.state,
            engine.connection,
            focus,
            &outcome.run.id,
            engine.clock.now(),
        )
        .await
        {
            Ok(traces) => Some(traces),
            Err(error) => return report_error(&RunError::State(error), request.json),
        },
        None => None,
    };
    let mut out = std::io::stdout().lock();
    if request.json {
        let value = json!({
            "ok": code == Code::Success,
            "connection": engine.connection,
            "status": outcome.run.status,
            "counts": outcome.run.counts,
            "message": outcome.run.message,
            "plan": {"steps": outcome.plan.steps.len(), "minimal_writes": outcome.plan.minimal_writes(), "issues": outcome.plan.issues},
            "failures": outcome.report.failures,
            "seconds": started.elapsed().as_secs_f64(),
            "objects": traces,
        });
        let _ = writeln!(out, "{value:#}");
    } else {
        let table = !request.table_shown.load(Ordering::Relaxed)
            && outcome.run.status != RunStatus::Declined
            && traces.is_none();
        for report in traces.iter().flatten() {
            print_object(&mut out, report, Some(&outcome.run.id));
        }
        // A trace shows each failure in place already.
        let failures = traces.is_none();
        print_summary(
            &mut out,
            engine.connection,
            &outcome,
            started,
            (table, failures),
        );
    }
    code
}

/// Shows a plan that holds destructive steps and asks the operator whether to go ahead
/// (answered on stdin: only "yes" or "y" go ahead). Plans without one go ahead unasked.
pub(crate) fn confirm_destructive(
    plan: &Plan,
    shown: &AtomicBool,
) -> Pin<Box<dyn Future<Output = Approval> + Send>> {
    let destructive = plan.steps.iter().filter(|s| s.is_destructive()).count();
    if destructive == 0 {
        return Box::pin(std::future::ready(Approval::Approved));
    }
    let mut out = std::io::stdout().lock();
    let _ = write!(out, "{}", plan.render(table_style(false)));
    let _ = write!(
        out,
        "\n{destructive} destructive step(s) above (marked -). Carry out this plan? Only \"yes\" goes ahead: "
    );
    let _ = out.flush();
    shown.store(true, Ordering::Relaxed);
    Box::pin(async move {
        let answer = tokio::task::spawn_blocking(|| {
            let mut line = String::new();
            std::io::stdin().read_line(&mut line).map(|_| line)
        })
        .await;
        match answer {
            Ok(Ok(line)) if matches!(line.trim().to_ascii_lowercase().as_str(), "yes" | "y") => {
                Approval::Approved
            }
            _ => Approval::Declined(format!(
                "not confirmed: the plan's {destructive} destructive step(s) were not approved; nothing was written (sync --yes skips the question)"
            )),
        }
    })
}

/// A progress bar of steps, hidden until shown.
fn progress_bar() -> ProgressBar {
    let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::hidden());
    if let Ok(style) =
        ProgressStyle::with_template("{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} steps")
    {
        bar.set_style(style);
    }
    bar
}

/// A run that failed as a whole. A source that cannot be reached is a connection failure (retry
/// later); one whose data cannot be read needs its input fixed.
pub(crate) fn report_error(error: &RunError, json: bool) -> Code {
    let code = match error {
        RunError::Plan(m365_core::planner::PlanError::Source(source)) => {
            if source.is_retryable() {
                Code::Connection
            } else {
                Code::Config
            }
        }
        RunError::Plan(_) => Code::Connection,
        _ => Code::Failure,
    };
    if json {
        let _ = writeln!(
            std::io::stdout(),
            "{:#}",
            json!({"ok": false, "error": error.to_string()})
        );
    } else {
        let _ = writeln!(std::io::stderr(), "error: {error}");
    }
    code
}

fn exit_code(status: RunStatus) -> Code {
    match status {
        RunStatus::Succeeded | RunStatus::Checkpointed | RunStatus::Running => Code::Success,
        RunStatus::PartiallyFailed => Code::PartialFailure,
        RunStatus::BreakerTripped => Code::BreakerTripped,
        RunStatus::Failed => Code::Connection,
        RunStatus::Declined => Code::Declined,
    }
}

/// The plan table and the failures (each when asked for), and one summary line.
fn print_summary(
    out: &mut impl Write,
    connection: &str,
    outcome: &m365_core::engine::SyncOutcome,
    started: Instant,
    (table, failures): (bool, bool),
) {
    let run = &outcome.run;
    if table {
        let _ = write!(out, "{}", outcome.plan.render(table_style(false)));
    }
    let listed = if failures {
        outcome.report.failures.as_slice()
    } else {
        &[]
    };
    for failure in listed {
        let _ = writeln!(
            out,
            "failed: {} {} ({}): {}",
            failure.kind, failure.source_id, failure.operation, failure.message
        );
    }
    if let Some(message) = &run.message {
        if run.status == RunStatus::Declined {
            let _ = writeln!(std::io::stderr(), "not carried out: {message}");
        } else {
            let _ = writeln!(out, "note: {message}");
        }
    }
    let headline = if run.status == RunStatus::Declined {
        "nothing written".to_owned()
    } else if outcome.plan.steps.is_empty() {
        "no changes".to_owned()
    } else {
        headline(&run.counts)
    };
    let counts = &run.counts;
    let _ = writeln!(
        out,
        "sync {connection}: {headline} · {} Graph writes, {} requests, {} throttled · {:?} · {:.1} s",
        counts.graph_writes,
        counts.graph_requests,
        counts.graph_throttled,
        run.status,
        started.elapsed().as_secs_f64()
    );
}

/// What the run did, in words: "3 created, 1 updated".
pub(crate) fn headline(counts: &RunCounts) -> String {
    [
        (counts.created, "created"),
        (counts.linked, "linked"),
        (counts.restored, "restored"),
        (counts.updated, "updated"),
        (counts.enabled, "enabled"),
        (counts.disabled, "disabled"),
        (counts.licensed, "license changes"),
        (counts.managers, "manager changes"),
        (counts.groups_created, "groups created"),
        (counts.groups_matched, "groups matched"),
        (counts.members_added, "members added"),
        (counts.members_removed, "members removed"),
        (counts.deprovisioned, "deprovisioned"),
        (counts.failed, "failed"),
        (counts.held, "held by the breaker"),
    ]
    .into_iter()
    .filter(|(n, _)| *n > 0)
    .map(|(n, label)| format!("{n} {label}"))
    .collect::<Vec<_>>()
    .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_take_seconds_minutes_and_hours() {
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("10m"), Ok(Duration::from_secs(600)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("45"), Ok(Duration::from_secs(45)));
        assert!(parse_duration("ten").is_err());
        assert!(parse_duration("5d").is_err());
    }
}
