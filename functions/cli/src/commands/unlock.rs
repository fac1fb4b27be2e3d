//! `m365-provisioner unlock`: free a connection whose run lease is held by a run that is gone.

use std::io::{BufRead as _, IsTerminal as _, Write};

use m365_core::clock::format_utc;
use m365_core::{Clock as _, StateStore as _, SystemClock};

use super::common::{ConfigArg, holder_gone, report_setup};
use crate::app::{config_base, load_config, open_state, state_key};
use crate::exit::Code;

#[derive(Debug, clap::Args)]
#[command(after_long_help = "\
A run holds its connection's lease and renews it every 20 s. A run that was killed frees the
connection by itself within a minute, and at once for the next run on the same host (its process
is gone). Use unlock when neither applies: the holder ran on another machine and you know it is
gone, and you cannot wait for its lease to run out.

unlock names the holder (command, host, process id) and since when it holds the lease, and asks
for confirmation. The holder's writes are refused from then on (every state write carries the
lease's token), so a run that was in fact alive stops at its next write without harm.

Exit codes: 0 unlocked, or nothing to unlock · 2 configuration error, or no confirmation (a
terminal is needed to confirm; pass --yes in scripts) · 1 the state store failed.

Examples:
  m365-provisioner unlock --config examples/m365-provisioner.toml
  m365-provisioner unlock --yes")]
pub struct Args {
    #[command(flatten)]
    config: ConfigArg,
    /// Unlock without asking.
    #[arg(long)]
    yes: bool,
}

pub async fn run(args: Args) -> Code {
    let opened = load_config(&args.config.config).and_then(|config| {
        let state = open_state(&config, &config_base(&args.config.config))?;
        Ok((state_key(&config), state))
    });
    let (connection, state) = match opened {
        Ok(opened) => opened,
        Err(error) => return report_setup(&error, false),
    };
    let mut out = std::io::stdout().lock();
    let lease = match state.get_lease(&connection, SystemClock.now()).await {
        Ok(Some(lease)) => lease,
        Ok(None) => {
            let _ = writeln!(
                out,
                "connection {connection} is not locked: no run holds its lease"
            );
            return Code::Success;
        }
        Err(error) => {
            let _ = writeln!(std::io::stderr(), "error: {error}");
            return Code::Failure;
        }
    };
    let _ = writeln!(
        out,
        "connection {connection} is held by {} since {}; its lease runs until {} unless renewed",
        lease.holder,
        format_utc(lease.acquired_at),
        format_utc(lease.expires_at)
    );
    if holder_gone(&lease.holder) {
        let _ = writeln!(out, "that process is no longer running on this host");
    }
    if !args.yes && !confirmed(&connection) {
        let _ = writeln!(
            std::io::stderr(),
            "error: not unlocked: confirm at a terminal, or pass --yes"
        );
        return Code::Config;
    }
    match state.break_lease(&connection, lease.token).await {
        Ok(true) => {
            let _ = writeln!(
                out,
                "unlocked {connection}: the next run takes the lease, and the old holder's writes are refused"
            );
            Code::Success
        }
        Ok(false) => {
            let _ = writeln!(
                out,
                "the lease of {connection} changed meanwhile (released or taken by another run): nothing done"
            );
            Code::Success
        }
        Err(error) => {
            let _ = writeln!(std::io::stderr(), "error: {error}");
            Code::Failure
        }
    }
}

/// Asks at the terminal; `false` without one.
fn confirmed(connection: &str) -> bool {
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        return false;
    }
    let _ = write!(
        std::io::stderr(),
        "Unlock {connection}? A run still working under this lease stops at its next write. Type yes: "
    );
    let mut answer = String::new();
    stdin.lock().read_line(&mut answer).is_ok() && answer.trim().eq_ignore_ascii_case("yes")
}
