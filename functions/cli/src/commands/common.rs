//! What every engine command shares: the config option, setup, and reporting setup failures.

use std::io::Write;
use std::path::PathBuf;

use m365_core::LeaseHolder;
use m365_core::engine::RunError;

use crate::app::{App, SetupError};
use crate::exit::Code;

/// `--config`, shared by plan, sync, status and rule.
#[derive(Debug, Clone, clap::Args)]
pub struct ConfigArg {
    /// The configuration file (TOML): connection, source, state, secrets and rule.
    #[arg(
        long,
        short = 'c',
        env = "M365_CONFIG",
        default_value = "m365-provisioner.toml",
        value_name = "FILE"
    )]
    pub config: PathBuf,
}

/// Builds the app, or reports why not (stderr, or JSON on stdout) and returns the exit code.
pub async fn build(config: &ConfigArg, json: bool) -> Result<App, Code> {
    App::build(&config.config)
        .await
        .map_err(|error| report_setup(&error, json))
}

pub fn report_setup(error: &SetupError, json: bool) -> Code {
    if json {
        let value = serde_json::json!({"ok": false, "error": error.message});
        let _ = writeln!(std::io::stdout(), "{value:#}");
    } else {
        let _ = writeln!(std::io::stderr(), "error: {}", error.message);
    }
    error.code
}

/// How the plan table is printed on stdout: coloured on a terminal unless `NO_COLOR` is set to
/// anything but the empty string (<https://no-color.org>).
pub fn table_style(summary_only: bool) -> m365_core::plan::TableStyle {
    use std::io::IsTerminal;
    let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
    m365_core::plan::TableStyle {
        colour: std::io::stdout().is_terminal() && !no_color,
        summary_only,
    }
}

/// This machine's host name, as recorded with a lease.
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|name| name.trim().to_owned())
        .filter(|name| !name.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "localhost".to_owned())
}

/// Who runs `command` in this process: recorded in the run lease with host and process id, so
/// that "busy" names it and a later run on this host can tell whether it is still alive.
pub fn holder(command: &str) -> LeaseHolder {
    LeaseHolder {
        owner: format!("m365-provisioner {command}"),
        host: Some(host_name()),
        pid: Some(std::process::id()),
    }
}

/// Whether a lease holder is a process of this host that no longer runs (killed, crashed): its
/// lease is taken over at once. Only where the process table can be read (`/proc`, Linux);
/// elsewhere the lease runs out by itself within a minute.
pub fn holder_gone(holder: &LeaseHolder) -> bool {
    let (Some(host), Some(pid)) = (&holder.host, holder.pid) else {
        return false;
    };
    let proc = std::path::Path::new("/proc");
    *host == host_name()
        && pid != std::process::id()
        && proc.join("self").exists()
        && !proc.join(pid.to_string()).exists()
}

/// The message and exit code of a run that found the connection busy.
pub fn report_busy(error: &RunError, json: bool) -> Code {
    if json {
        let value = serde_json::json!({"ok": false, "busy": true, "error": error.to_string()});
        let _ = writeln!(std::io::stdout(), "{value:#}");
    } else {
        let _ = writeln!(std::io::stderr(), "error: {error}");
    }
    Code::Busy
}
