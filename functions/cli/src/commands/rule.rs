//! `m365-provisioner rule delete`: stop managing a rule's objects, optionally deprovisioning
//! them.

use std::io::Write;

use super::common::{ConfigArg, build, holder, report_busy};
use crate::exit::Code;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: RuleCommand,
}

#[derive(Debug, clap::Subcommand)]
enum RuleCommand {
    /// Delete the rule's state. With --deprovision (or deprovision_on_rule_deletion = true),
    /// every user and group it linked is first deprovisioned with its remove action.
    #[command(after_long_help = "\
Without deprovisioning, tenant objects stay as they are and are simply no longer managed.
Objects the rule never linked are never touched.

Examples:
  m365-provisioner rule delete --config examples/m365-provisioner.toml
  m365-provisioner rule delete --deprovision")]
    Delete {
        #[command(flatten)]
        config: ConfigArg,
        /// Deprovision every linked user and group before forgetting them.
        #[arg(long)]
        deprovision: bool,
    },
}

pub async fn run(args: Args) -> Code {
    let RuleCommand::Delete {
        config,
        deprovision,
    } = args.command;
    let app = match build(&config, false).await {
        Ok(app) => app,
        Err(code) => return code,
    };
    // The engine also deprovisions when the rule's deprovision_on_rule_deletion is set.
    let deprovision = deprovision || app.config.rule.preferences.deprovision_on_rule_deletion;
    let outcome = app
        .engine()
        .delete_rule(deprovision, &holder("rule delete"))
        .await;
    let mut out = std::io::stdout().lock();
    match outcome {
        Ok((plan, report)) => {
            if deprovision {
                let _ = write!(out, "{}", plan.render_table());
            }
            for failure in &report.failures {
                let _ = writeln!(
                    out,
                    "failed: {} {}: {}",
                    failure.kind, failure.source_id, failure.message
                );
            }
            if report.failures.is_empty() && report.fatal.is_none() {
                let _ = writeln!(
                    out,
                    "rule {} deleted: {} object(s) deprovisioned, state forgotten",
                    app.connection, report.counts.deprovisioned
                );
                Code::Success
            } else {
                let _ = writeln!(
                    out,
                    "rule {} NOT deleted: some deprovisions failed; fix them and run the command again",
                    app.connection
                );
                Code::PartialFailure
            }
        }
        Err(error @ m365_core::engine::RunError::Busy { .. }) => report_busy(&error, false),
        Err(error) => {
            let _ = writeln!(std::io::stderr(), "error: {error}");
            Code::Failure
        }
    }
}
