//! `m365-provisioner status`: the last runs, what is linked, and what failed.

use std::io::Write;

use m365_core::StateStore;
use m365_core::model::ObjectKind;
use serde_json::json;

use super::common::ConfigArg;
use crate::app::load_config;
use crate::exit::Code;

#[derive(Debug, clap::Args)]
#[command(after_long_help = "\
Reads only the local state: works without reaching the tenant.

Example:
  m365-provisioner status --config examples/m365-provisioner.toml")]
pub struct Args {
    #[command(flatten)]
    config: ConfigArg,
    /// How many runs and errors to show.
    #[arg(long, default_value_t = 10)]
    limit: usize,
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
    let read = async {
        Ok::<_, m365_core::StateError>((
            state.list_runs(&connection, args.limit).await?,
            state.count_links(&connection, ObjectKind::User).await?,
            state.count_links(&connection, ObjectKind::Group).await?,
            state.list_errors(&connection, args.limit).await?,
        ))
    };
    let (runs, users, groups, errors) = match read.await {
        Ok(all) => all,
        Err(error) => {
            let _ = writeln!(std::io::stderr(), "error: {error}");
            return Code::Failure;
        }
    };
    let mut out = std::io::stdout().lock();
    if args.json {
        let value = json!({
            "ok": true,
            "connection": connection,
            "linked": {"users": users, "groups": groups},
            "runs": runs,
            "errors": errors,
        });
        let _ = writeln!(out, "{value:#}");
        return Code::Success;
    }
    let _ = writeln!(
        out,
        "{connection}: {users} linked users, {groups} linked groups"
    );
    let _ = writeln!(out, "\nlast runs:");
    if runs.is_empty() {
        let _ = writeln!(out, "  none yet");
    }
    for run in &runs {
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
    let _ = writeln!(out, "\nobjects in error:");
    if errors.is_empty() {
        let _ = writeln!(out, "  none");
    }
    for error in &errors {
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
    Code::Success
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
