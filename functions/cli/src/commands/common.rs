//! What every engine command shares: the config option, setup, and reporting setup failures.

use std::io::Write;
use std::path::PathBuf;

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

/// Who runs: recorded in the run lease.
pub fn owner() -> String {
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "localhost".to_owned());
    format!("cli@{host}/{}", std::process::id())
}
