//! `m365-provisioner cloud`: the deployed product. `cloud config` uploads and inspects the
//! connection configs the Lambda functions read from the deployment's DynamoDB table
//! ([`m365_aws::ConfigStore`]); `cloud status`, `runs`, `errors`, `history` and `sync` read a
//! connection's state and provision on demand ([`crate::cloud_state`]); `cloud delete` forgets
//! a connection. AWS settings (region, credentials, endpoint) come from the SDK's default chain;
//! `--endpoint-url` overrides the endpoint.

use std::io::Write;
use std::path::PathBuf;

use m365_aws::{ConfigStore, ConfigStoreError, ConfigSummary};
use m365_wiring::cloud_config::parse_cloud_config;

use crate::cloud_state::{self, StateTarget, SyncArgs};
use crate::commands::status::View;
use crate::exit::Code;

#[derive(Debug, clap::Args)]
#[command(after_long_help = "\
The deployment's functions (scheduled sync and webhook, infra/template.yaml) read each
connection's config from the stack's DynamoDB table, its output TableName:
  export M365_TABLE=$(aws cloudformation describe-stacks --stack-name m365-provisioner \\
      --query \"Stacks[0].Outputs[?OutputKey=='TableName'].OutputValue\" --output text)
Region and credentials come from the AWS SDK's default chain (AWS_PROFILE, AWS_REGION, ...).

Examples:
  m365-provisioner cloud config upload --file contoso.toml
  m365-provisioner cloud config list
  m365-provisioner cloud config show --connection contoso
  m365-provisioner cloud status --connection contoso
  m365-provisioner cloud errors --connection contoso
  m365-provisioner cloud history --connection contoso --object avance@example.com
  m365-provisioner cloud sync --connection contoso --user avance@example.com")]
pub struct Args {
    #[command(subcommand)]
    command: CloudCommand,
}

#[derive(Debug, clap::Subcommand)]
enum CloudCommand {
    /// Upload and inspect the connection configs of the deployment.
    ///
    /// The Lambda functions read each connection's config from the deployment's DynamoDB table
    /// (stack output `TableName`, or M365_TABLE), always its newest version. A config is the same
    /// TOML file as on the command line, with the cloud's rules: the source in S3
    /// (s3://bucket/key), [state] absent (the deployment's table), [secrets] absent (the secret
    /// named by the functions' M365_SECRET_ID) or type = "aws-secrets-manager" with secret_id,
    /// and no sandbox.
    #[command(after_long_help = "\
Every upload of a changed file is a new version; uploading an older text again is a rollback.

Examples:
  m365-provisioner cloud config upload --table m365-provisioner-state --file contoso.toml
  m365-provisioner cloud config list --table m365-provisioner-state
  m365-provisioner cloud config history --table m365-provisioner-state --connection contoso
  m365-provisioner cloud config show --table m365-provisioner-state --connection contoso --version 2")]
    Config(ConfigArgs),
    /// The connection's last runs, linked objects and objects in error (the first --limit),
    /// read from the deployment's table.
    #[command(after_long_help = "\
Reads only the table (no secret, no tenant): the same view as `status` of a local state.

Examples:
  m365-provisioner cloud status --table m365-provisioner-state --connection contoso
  m365-provisioner cloud status --connection contoso --json")]
    Status {
        #[command(flatten)]
        state: StateTarget,
        /// How many runs and errors to show.
        #[arg(long, default_value_t = 10)]
        limit: usize,
    },
    /// The connection's last runs, newest first: status, counts and message of each.
    #[command(after_long_help = "\
Example:
  m365-provisioner cloud runs --table m365-provisioner-state --connection contoso --limit 30")]
    Runs {
        #[command(flatten)]
        state: StateTarget,
        /// How many runs to show.
        #[arg(long, default_value_t = 10)]
        limit: usize,
    },
    /// Every object of the connection in error, soonest retry first, with the tenant's answer.
    #[command(after_long_help = "\
Each line: kind, source id, the operation that failed, attempts, next retry and the tenant's
answer (Graph's status, code, message and request id). The scheduled function retries each when
its time comes. `cloud history --object ID` shows one object's steps.

Example:
  m365-provisioner cloud errors --table m365-provisioner-state --connection contoso")]
    Errors {
        #[command(flatten)]
        state: StateTarget,
    },
    /// One object's link, error and history: every step applied, failed or held, newest first.
    #[command(after_long_help = "\
--object takes a source id, a tenant object id, a userPrincipalName or a group's displayName.
Entries are kept for the rule's history_days (90 by default; the table's TTL removes older).

Example:
  m365-provisioner cloud history --table m365-provisioner-state --connection contoso --object avance@example.com")]
    History {
        #[command(flatten)]
        state: StateTarget,
        /// The object: source id, tenant object id, userPrincipalName or group displayName.
        #[arg(long, value_name = "ID|UPN")]
        object: String,
        /// How many history entries to show, newest first.
        #[arg(long, default_value_t = 50)]
        limit: usize,
    },
    /// Provision on demand against the deployment: sync only the named users and groups and
    /// print every step taken with the tenant's answer.
    #[command(after_long_help = "\
With --function (the stack's output SyncFunctionName, or M365_SYNC_FUNCTION) the scheduled-sync
function runs it inside the deployment (its network, role and secret; you need only
lambda:InvokeFunction) and answers with each identity's steps. Without it, it runs on this
machine with the deployment's newest config, its secret (Secrets Manager: your AWS credentials
need secretsmanager:GetSecretValue on it), its source and its state table. Either way it takes
the connection's lease like the scheduled runs, so the two never run the connection at once
(exit 6 while a scheduled run holds it: try again when it ends). Only the named identities are
read and planned; nothing else is touched. On a terminal, and without --function, destructive
steps are shown and confirmed first (--yes skips).

Examples:
  m365-provisioner cloud sync --table m365-provisioner-state --connection contoso --user avance@example.com
  m365-provisioner cloud sync --connection contoso --function m365-sync --user avance@example.com
  m365-provisioner cloud sync --connection contoso --user 6b0d549b-6f03-675a-1600-a35a099950d8 --group \"All Staff\"")]
    Sync(SyncArgs),
    /// Delete a deployed connection: its rule's state in the table (links, errors, runs,
    /// events) and its configs. With --deprovision (or the rule's deprovision_on_rule_deletion)
    /// every user and group the rule linked is deprovisioned first, by the rule's remove
    /// actions; tenant objects it never linked are never touched.
    #[command(after_long_help = "\
Run it before `sam delete` when tearing a deployment down. It reads the connection's newest
config and its secret (Secrets Manager), reaches the tenant, and takes the connection's lease
(exit 1 while a sync runs: try again when it ends). When a deprovision fails, nothing is
forgotten and the configs stay: fix the cause and run it again. Remove the connection's
schedule too (aws scheduler delete-schedule).

Examples:
  m365-provisioner cloud delete --table m365-provisioner-state --connection contoso
  m365-provisioner cloud delete --table m365-provisioner-state --connection contoso --deprovision")]
    Delete {
        #[command(flatten)]
        target: Target,
        /// The connection ([connection] name of its config).
        #[arg(long, value_name = "NAME")]
        connection: String,
        /// Deprovision every user and group the rule linked before forgetting them.
        #[arg(long)]
        deprovision: bool,
        /// The secret of a config without [secrets] secret_id (the functions' M365_SECRET_ID).
        #[arg(long, env = "M365_SECRET_ID", value_name = "SECRET")]
        secret_id: Option<String>,
    },
}

#[derive(Debug, clap::Args)]
struct ConfigArgs {
    #[command(subcommand)]
    command: ConfigCommand,
}

#[derive(Debug, clap::Subcommand)]
enum ConfigCommand {
    /// Check a config file against the cloud's rules and store it as the newest version of its
    /// connection ([connection] name), unless it is unchanged.
    #[command(after_long_help = "\
Nothing is written when the file is not valid for the cloud (exit code 2, with the key and the
fix). The functions use the new version from their next invocation on.

Example:
  m365-provisioner cloud config upload --table m365-provisioner-state --file contoso.toml
  → uploaded contoso version 3 (sha256 9f86d0…)")]
    Upload {
        #[command(flatten)]
        target: Target,
        /// The config file (TOML).
        #[arg(long, short = 'f', value_name = "FILE")]
        file: PathBuf,
    },
    /// List every connection with its newest config version.
    #[command(after_long_help = "\
Example:
  m365-provisioner cloud config list --table m365-provisioner-state")]
    List {
        #[command(flatten)]
        target: Target,
    },
    /// Print a connection's config (the newest version, or --version N) as uploaded.
    #[command(after_long_help = "\
Example:
  m365-provisioner cloud config show --table m365-provisioner-state --connection contoso > contoso.toml")]
    Show {
        #[command(flatten)]
        target: Target,
        /// The connection ([connection] name of its config).
        #[arg(long, value_name = "NAME")]
        connection: String,
        /// This version instead of the newest.
        #[arg(long, value_name = "N")]
        version: Option<u64>,
    },
    /// List every version of a connection's config, newest first.
    #[command(after_long_help = "\
Example:
  m365-provisioner cloud config history --table m365-provisioner-state --connection contoso")]
    History {
        #[command(flatten)]
        target: Target,
        /// The connection ([connection] name of its config).
        #[arg(long, value_name = "NAME")]
        connection: String,
    },
}

/// Where the configs are.
#[derive(Debug, clap::Args)]
pub(crate) struct Target {
    /// The deployment's DynamoDB table (the stack's output `TableName`).
    #[arg(long, env = "M365_TABLE", value_name = "TABLE")]
    pub table: String,
    /// Send AWS requests to this endpoint (a local emulator). Without it the SDK's default chain
    /// decides (AWS_ENDPOINT_URL, the profile), as it does for region and credentials.
    #[arg(long, value_name = "URL")]
    pub endpoint_url: Option<String>,
}

impl Target {
    async fn store(&self) -> ConfigStore {
        let sdk = m365_aws::sdk_config(self.endpoint_url.as_deref()).await;
        ConfigStore::new(m365_aws::dynamodb_client(&sdk), &self.table)
    }
}

pub async fn run(args: Args) -> Code {
    let config = match args.command {
        CloudCommand::Config(config) => config,
        CloudCommand::Status { state, limit } => {
            return finish(cloud_state::show(&state, View::Overview { limit }).await);
        }
        CloudCommand::Runs { state, limit } => {
            return finish(cloud_state::show(&state, View::Runs { limit }).await);
        }
        CloudCommand::Errors { state } => {
            return finish(cloud_state::show(&state, View::Errors).await);
        }
        CloudCommand::History {
            state,
            object,
            limit,
        } => {
            let view = View::Object { key: object, limit };
            return finish(cloud_state::show(&state, view).await);
        }
        CloudCommand::Sync(sync) => return finish(cloud_state::sync(sync).await),
        CloudCommand::Delete {
            target,
            connection,
            deprovision,
            secret_id,
        } => {
            return finish(delete(&target, &connection, deprovision, secret_id).await);
        }
    };
    let result = match config.command {
        ConfigCommand::Upload { target, file } => upload(&target, &file).await,
        ConfigCommand::List { target } => list(&target).await,
        ConfigCommand::Show {
            target,
            connection,
            version,
        } => show(&target, &connection, version).await,
        ConfigCommand::History { target, connection } => history(&target, &connection).await,
    };
    finish(result)
}

/// The exit code of an outcome; an error is printed on stderr.
fn finish(outcome: Outcome) -> Code {
    match outcome {
        Ok(code) => code,
        Err((code, message)) => {
            let _ = writeln!(std::io::stderr(), "error: {message}");
            code
        }
    }
}

pub(crate) type Outcome = Result<Code, (Code, String)>;

async fn delete(
    target: &Target,
    connection: &str,
    deprovision: bool,
    secret_id: Option<String>,
) -> Outcome {
    let (deployment, built) =
        cloud_state::deployment_connection(target, connection, secret_id).await?;
    let deprovision = deprovision || built.rule.preferences.deprovision_on_rule_deletion;
    let (plan, report) = built
        .engine(&deployment)
        .delete_rule(
            deprovision,
            &crate::commands::common::holder(&format!("cloud delete by {}", uploader())),
        )
        .await
        .map_err(|e| (Code::Failure, e.to_string()))?;
    let mut out = std::io::stdout().lock();
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
    if !report.failures.is_empty() || report.fatal.is_some() {
        let _ = writeln!(
            out,
            "connection {connection} NOT deleted: some deprovisions failed; fix them and run the command again"
        );
        return Ok(Code::PartialFailure);
    }
    let versions = target
        .store()
        .await
        .remove(connection)
        .await
        .map_err(|e| store_error(&e))?;
    let _ = writeln!(
        out,
        "connection {connection} deleted: {} object(s) deprovisioned, state of {} forgotten, {versions} config version(s) removed",
        report.counts.deprovisioned, built.key
    );
    Ok(Code::Success)
}

async fn upload(target: &Target, file: &std::path::Path) -> Outcome {
    let shown = file.display().to_string();
    let text = std::fs::read_to_string(file).map_err(|e| {
        (
            Code::Config,
            format!("cannot read the config file {shown}: {e}; nothing was uploaded"),
        )
    })?;
    let config = parse_cloud_config(&text, &shown)
        .map_err(|e| (Code::Config, format!("{e}\nnothing was uploaded")))?;
    let connection = config.connection.name;
    let uploaded = target
        .store()
        .await
        .upload(&connection, &text, &uploader(), now_ms())
        .await
        .map_err(|e| store_error(&e))?;
    let stored = &uploaded.config;
    let mut out = std::io::stdout().lock();
    if uploaded.created {
        let _ = writeln!(
            out,
            "uploaded {connection} version {} (sha256 {})",
            stored.version, stored.sha256
        );
    } else {
        let _ = writeln!(
            out,
            "unchanged: {connection} is at version {}",
            stored.version
        );
    }
    Ok(Code::Success)
}

async fn list(target: &Target) -> Outcome {
    let configs = target
        .store()
        .await
        .list()
        .await
        .map_err(|e| store_error(&e))?;
    let mut out = std::io::stdout().lock();
    if configs.is_empty() {
        let _ = writeln!(
            out,
            "no connection configs in table {}; upload one with \
             m365-provisioner cloud config upload --table {} --file FILE",
            target.table, target.table
        );
        return Ok(Code::Success);
    }
    let _ = write!(out, "{}", summary_table(&configs, true));
    Ok(Code::Success)
}

async fn show(target: &Target, connection: &str, version: Option<u64>) -> Outcome {
    let store = target.store().await;
    let found = match version {
        Some(n) => store.version(connection, n).await,
        None => store.latest(connection).await,
    }
    .map_err(|e| store_error(&e))?;
    let Some(config) = found else {
        let what = version.map_or_else(
            || format!("no config for connection {connection}"),
            |n| format!("connection {connection} has no config version {n}"),
        );
        return Err((
            Code::Config,
            format!(
                "{what} in table {}; see m365-provisioner cloud config list / history",
                target.table
            ),
        ));
    };
    let mut out = std::io::stdout().lock();
    let _ = write!(out, "{}", config.text);
    if !config.text.ends_with('\n') {
        let _ = writeln!(out);
    }
    Ok(Code::Success)
}

async fn history(target: &Target, connection: &str) -> Outcome {
    let versions = target
        .store()
        .await
        .history(connection)
        .await
        .map_err(|e| store_error(&e))?;
    if versions.is_empty() {
        return Err((
            Code::Config,
            format!(
                "no config for connection {connection} in table {}; see m365-provisioner cloud \
                 config list",
                target.table
            ),
        ));
    }
    let _ = write!(
        std::io::stdout().lock(),
        "{}",
        summary_table(&versions, false)
    );
    Ok(Code::Success)
}

/// Aligned columns: connection (when `with_connection`), version, time, uploader, sha256.
fn summary_table(rows: &[ConfigSummary], with_connection: bool) -> String {
    let mut lines = vec![{
        let mut header = vec!["VERSION", "UPLOADED", "BY", "SHA256"];
        if with_connection {
            header.insert(0, "CONNECTION");
        }
        header.into_iter().map(str::to_owned).collect::<Vec<_>>()
    }];
    for row in rows {
        let mut line = vec![
            row.version.to_string(),
            fmt_time(row.uploaded_at),
            row.uploaded_by.clone(),
            row.sha256.clone(),
        ];
        if with_connection {
            line.insert(0, row.connection.clone());
        }
        lines.push(line);
    }
    let columns = lines.first().map_or(0, Vec::len);
    let widths: Vec<usize> = (0..columns)
        .map(|i| {
            lines
                .iter()
                .map(|l| l.get(i).map_or(0, |c| c.chars().count()))
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for line in lines {
        let cells: Vec<String> = line
            .iter()
            .zip(&widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}

/// The exit code and message of a failed store call.
pub(crate) fn store_error(error: &ConfigStoreError) -> (Code, String) {
    let code = match error {
        ConfigStoreError::Invalid(_) => Code::Config,
        // A table that does not exist: the --table (or M365_TABLE, or region) is wrong.
        ConfigStoreError::Unavailable { .. }
            if error.code() == Some("ResourceNotFoundException") =>
        {
            Code::Config
        }
        ConfigStoreError::Unavailable { .. } => Code::Connection,
        ConfigStoreError::Conflict(_) | ConfigStoreError::Corrupt(_) => Code::Failure,
    };
    (code, error.to_string())
}

/// UTC, RFC 3339, to the second.
fn fmt_time(ms: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(ms.div_euclid(1000))
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| format!("{ms} ms"))
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Who uploads, for the record: `user@host`.
fn uploader() -> String {
    let user = std::env::var("USER")
        .or_else(|_| std::env::var("USERNAME"))
        .unwrap_or_else(|_| "unknown".to_owned());
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| {
            std::fs::read_to_string("/etc/hostname")
                .ok()
                .map(|h| h.trim().to_owned())
        })
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_owned());
    format!("{user}@{host}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_rfc_3339_utc() {
        assert_eq!(fmt_time(0), "1970-01-01T00:00:00Z");
        assert_eq!(fmt_time(1_795_369_957_123), "2026-11-22T17:52:37Z");
    }

    #[test]
    fn summary_columns_line_up() {
        let rows = [
            ConfigSummary {
                connection: "contoso".to_owned(),
                version: 12,
                sha256: "ab".to_owned(),
                uploaded_at: 0,
                uploaded_by: "alice@h".to_owned(),
            },
            ConfigSummary {
                connection: "fabrikam-prod".to_owned(),
                version: 3,
                sha256: "cd".to_owned(),
                uploaded_at: 0,
                uploaded_by: "ci".to_owned(),
            },
        ];
        let table = summary_table(&rows, true);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(
            lines[0].starts_with("CONNECTION     VERSION  UPLOADED"),
            "{table}"
        );
        assert!(
            lines[1].starts_with("contoso        12       1970"),
            "{table}"
        );
        assert!(lines[2].ends_with("ci       cd"), "{table}");
    }
}
