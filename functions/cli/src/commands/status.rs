//! `m365-provisioner status`: the last runs, what is linked, and what failed.

use std::io::Write;

use m365_core::inspect::{ObjectReport, find_objects, object_report};
use m365_core::model::ObjectKind;
use m365_core::{HistoryEntry, ObjectError, StateStore};
use serde_json::json;

use super::common::ConfigArg;
use crate::app::load_config;
use crate::exit::Code;

#[derive(Debug, clap::Args)]
#[command(after_long_help = "\
Reads only the local state: works without reaching the tenant.

Without options: the connection's last runs, its linked objects, and the objects in error (the
first --limit of them, soonest retry first, with the total). --errors lists every object in
error with its next retry. --object shows one object: its link, its error, and its history —
every step applied, failed or held, newest first, with the tenant's answer (kept for the rule's
history_days, 90 by default).

Examples:
  m365-provisioner status --config examples/m365-provisioner.toml
  m365-provisioner status --errors
  m365-provisioner status --object avance@example.com     # or a source id, or a tenant object id
  m365-provisioner status --object \"All Staff\" --json")]
pub struct Args {
    #[command(flatten)]
    config: ConfigArg,
    /// How many runs and errors to show (history entries with --object).
    #[arg(long, default_value_t = 10)]
    limit: usize,
    /// List every object in error, with its next retry.
    #[arg(long, conflicts_with = "object")]
    errors: bool,
    /// One object's link, error and history: a source id, a tenant object id, a
    /// userPrincipalName or a group's displayName.
    #[arg(long, value_name = "ID|UPN")]
    object: Option<String>,
    #[arg(long)]
    json: bool,
}

fn fmt_time(ms: i64) -> String {
    m365_core::clock::format_utc(ms)
}

pub async fn run(args: Args) -> Code {
    let config = match load_config(&args.config.config) {
        Ok(config) => config,
        Err(error) => return super::common::report_setup(&error, args.json),
    };
    let base = crate::app::config_base(&args.config.config);
    let path = match crate::app::state_path(&config, &base) {
        Ok(path) => path,
        Err(error) => return super::common::report_setup(&error, args.json),
    };
    let connection = crate::app::state_key(&config);
    if !path.exists() {
        let message = format!(
            "no state yet at {}: run `m365-provisioner sync` first",
            path.display()
        );
        if args.json {
            let _ = writeln!(
                std::io::stdout(),
                "{:#}",
                json!({"ok": true, "connection": connection, "runs": [], "note": message})
            );
        } else {
            let _ = writeln!(std::io::stdout(), "{connection}: {message}");
        }
        return Code::Success;
    }
    let state = match m365_state_sqlite::SqliteStateStore::open(&path) {
        Ok(state) => state,
        Err(error) => {
            let _ = writeln!(std::io::stderr(), "error: {}: {error}", path.display());
            return Code::Config;
        }
    };
    let view = if let Some(key) = args.object {
        View::Object {
            key,
            limit: if args.limit == 10 { 50 } else { args.limit },
        }
    } else if args.errors {
        View::Errors
    } else {
        View::Overview { limit: args.limit }
    };
    report(&state, &connection, view, args.json).await
}

/// What `status` (and `cloud status`, `cloud runs`, `cloud errors`, `cloud history`) shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum View {
    /// The last `limit` runs, the linked objects, and the first `limit` objects in error.
    Overview { limit: usize },
    /// The last `limit` runs alone.
    Runs { limit: usize },
    /// Every object in error, soonest retry first.
    Errors,
    /// One object (or every object the key names) with its newest `limit` history entries.
    Object { key: String, limit: usize },
}

/// Prints `view` of `connection` (a state key) from `state`; the exit code.
pub async fn report(state: &dyn StateStore, connection: &str, view: View, json: bool) -> Code {
    let limit = match view {
        View::Object { key, limit } => {
            return show_object(state, connection, &key, limit, json).await;
        }
        View::Runs { limit } => return show_runs(state, connection, limit, json).await,
        View::Errors => return show_errors(state, connection, json).await,
        View::Overview { limit } => limit,
    };
    let read = async {
        Ok::<_, m365_core::StateError>((
            state.list_runs(connection, limit).await?,
            state.count_links(connection, ObjectKind::User).await?,
            state.count_links(connection, ObjectKind::Group).await?,
            state.list_errors(connection, usize::MAX).await?,
        ))
    };
    let (runs, users, groups, mut errors) = match read.await {
        Ok(all) => all,
        Err(error) => return read_failed(&error),
    };
    let total = errors.len();
    errors.truncate(limit);
    let mut out = std::io::stdout().lock();
    if json {
        let value = json!({
            "ok": true,
            "connection": connection,
            "linked": {"users": users, "groups": groups},
            "runs": runs,
            "errors": errors,
            "errors_total": total,
        });
        let _ = writeln!(out, "{value:#}");
    } else {
        print_overview(&mut out, connection, (users, groups), &runs);
        print_errors(&mut out, &errors, total, false);
    }
    Code::Success
}

fn read_failed(error: &m365_core::StateError) -> Code {
    let _ = writeln!(std::io::stderr(), "error: {error}");
    Code::Failure
}

/// Every object in error, soonest retry first.
async fn show_errors(state: &dyn StateStore, connection: &str, json: bool) -> Code {
    let errors = match state.list_errors(connection, usize::MAX).await {
        Ok(errors) => errors,
        Err(error) => return read_failed(&error),
    };
    let mut out = std::io::stdout().lock();
    if json {
        let value =
            json!({"ok": true, "connection": connection, "total": errors.len(), "errors": errors});
        let _ = writeln!(out, "{value:#}");
    } else {
        print_errors(&mut out, &errors, errors.len(), true);
    }
    Code::Success
}

/// The last `limit` runs, newest first.
async fn show_runs(state: &dyn StateStore, connection: &str, limit: usize, json: bool) -> Code {
    let runs = match state.list_runs(connection, limit).await {
        Ok(runs) => runs,
        Err(error) => return read_failed(&error),
    };
    let mut out = std::io::stdout().lock();
    if json {
        let _ = writeln!(
            out,
            "{:#}",
            json!({"ok": true, "connection": connection, "runs": runs})
        );
    } else {
        let _ = writeln!(out, "{connection}: last runs, newest first");
        print_runs(&mut out, &runs);
    }
    Code::Success
}

fn print_overview(
    out: &mut impl Write,
    connection: &str,
    (users, groups): (u64, u64),
    runs: &[m365_core::RunRecord],
) {
    let _ = writeln!(
        out,
        "{connection}: {users} linked users, {groups} linked groups"
    );
    let _ = writeln!(out, "\nlast runs:");
    print_runs(out, runs);
    let _ = writeln!(out);
}

fn print_runs(out: &mut impl Write, runs: &[m365_core::RunRecord]) {
    if runs.is_empty() {
        let _ = writeln!(out, "  none yet");
    }
    for run in runs {
        let counts: Vec<String> = run
            .counts
            .non_zero()
            .into_iter()
            .map(|(k, n)| format!("{k}={n}"))
            .collect();
        let _ = writeln!(
            out,
            "  {}  {:?}  {}{}",
            fmt_time(run.started_at),
            run.status,
            counts.join(" "),
            run.message
                .as_ref()
                .map(|m| format!("  ({m})"))
                .unwrap_or_default()
        );
    }
}

fn print_errors(out: &mut impl Write, errors: &[ObjectError], total: usize, every: bool) {
    match (total, every) {
        (0, _) => {
            let _ = writeln!(out, "objects in error: none");
            return;
        }
        (_, true) => {
            let _ = writeln!(out, "objects in error: {total}, soonest retry first");
        }
        (_, false) => {
            let _ = writeln!(
                out,
                "objects in error: {total} in all, soonest retry first{}",
                if errors.len() < total {
                    format!(
                        " (the first {}; `status --errors` lists every one)",
                        errors.len()
                    )
                } else {
                    String::new()
                }
            );
        }
    }
    for error in errors {
        let _ = writeln!(
            out,
            "  {} {} [{}] attempt {}, next retry {}: {}",
            error.kind,
            error.source_id,
            error.operation,
            error.attempts,
            fmt_time(error.next_retry_at),
            error.message
        );
    }
}

/// `status --object KEY`: every object the key names, with its history.
async fn show_object(
    state: &dyn StateStore,
    connection: &str,
    key: &str,
    limit: usize,
    json: bool,
) -> Code {
    let now = m365_core::Clock::now(&m365_core::SystemClock);
    let read = async {
        let mut reports = Vec::new();
        for (kind, source_id) in find_objects(state, connection, key, now).await? {
            reports.push(object_report(state, connection, kind, &source_id, now, limit).await?);
        }
        Ok::<_, m365_core::StateError>(reports)
    };
    let reports = match read.await {
        Ok(reports) => reports,
        Err(error) => return read_failed(&error),
    };
    let mut out = std::io::stdout().lock();
    if json {
        let value =
            json!({"ok": !reports.is_empty(), "connection": connection, "objects": reports});
        let _ = writeln!(out, "{value:#}");
    } else if reports.is_empty() {
        let _ = writeln!(
            std::io::stderr(),
            "error: {connection} knows no object {key:?}: not a source id, tenant object id, userPrincipalName or group displayName it linked, and no error or history holds it"
        );
    }
    if reports.is_empty() {
        return Code::Config;
    }
    if !json {
        for report in &reports {
            print_object(&mut out, report, None);
        }
    }
    Code::Success
}

/// One object: its link and error, then its history (only the entries of `run` when given).
pub fn print_object(out: &mut impl Write, report: &ObjectReport, run: Option<&str>) {
    let _ = writeln!(
        out,
        "{} {}  (source {})",
        report.kind,
        report.name().unwrap_or("(no name recorded)"),
        report.source_id
    );
    if run.is_none() {
        match &report.link {
            Some(link) => {
                let state = if link.is_deleted() {
                    "deleted by this connection"
                } else if link.enabled {
                    "enabled"
                } else {
                    "disabled"
                };
                let _ = writeln!(
                    out,
                    "  linked to tenant object {} ({:?}), {state}, last written {}",
                    link.object_id,
                    link.origin,
                    fmt_time(link.updated_at)
                );
            }
            None => {
                let _ = writeln!(out, "  not linked");
            }
        }
        if let Some(error) = &report.error {
            let _ = writeln!(
                out,
                "  in error [{}] since {}, attempt {}, next retry {}: {}",
                error.operation,
                fmt_time(error.first_failed_at),
                error.attempts,
                fmt_time(error.next_retry_at),
                error.message
            );
        }
    }
    let mut entries: Vec<&HistoryEntry> = report
        .history
        .iter()
        .filter(|entry| run.is_none_or(|run| entry.run_id == run))
        .collect();
    if entries.is_empty() {
        let _ = writeln!(
            out,
            "  {}",
            match (run, &report.link) {
                (None, _) => "no history recorded",
                (Some(_), Some(_)) => "nothing to do: the tenant already matches the source",
                (Some(_), None) => {
                    "not linked, and nothing was done: not in the source, or out of the rule's scope (--user and --group take a source id, or the name or object id of a linked object)"
                }
            }
        );
        return;
    }
    // A run's trace reads in the order the steps were taken.
    if run.is_some() {
        entries.reverse();
    }
    if run.is_none() {
        let _ = writeln!(out, "  history, newest first:");
    }
    let width = entries
        .iter()
        .map(|e| e.operation.chars().count())
        .max()
        .unwrap_or(0);
    for entry in entries {
        let change = if entry.change.is_empty() {
            String::new()
        } else {
            format!("{}  ", entry.change)
        };
        let _ = writeln!(
            out,
            "    {}  {:<7}  {:<width$}  {change}→ {}{}",
            fmt_time(entry.at),
            entry.result.as_str(),
            entry.operation,
            entry.answer,
            if run.is_none() {
                format!("  [run {}]", entry.run_id)
            } else {
                String::new()
            }
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_iso_8601_utc() {
        assert_eq!(fmt_time(0), "1970-01-01T00:00:00Z");
        assert_eq!(fmt_time(951_782_400_000), "2000-02-29T00:00:00Z");
        assert_eq!(fmt_time(1_795_369_957_999), "2026-11-22T17:52:37Z");
    }
}
