//! `m365-provisioner validate`: the whole configuration checked offline, and the rule's mapping
//! tried on one source user.

use std::fmt::Write as _;
use std::io::Write;
use std::path::{Path, PathBuf};

use m365_core::config::{Config, SourceConfig};
use m365_core::planner::Rule;
use m365_core::{ObjectKind, Source as _, SourceUser};
use m365_source_file::{FileSource, FileSourceConfig};

use super::common::ConfigArg;
use crate::app::{config_base, load_config, relative_to};
use crate::exit::Code;

#[derive(Debug, clap::Args)]
#[command(after_long_help = "\
Checks the configuration without reaching the tenant, the state store or a remote source: the
TOML and every key, the source, state and secrets settings, every mapping template compiled, the
scope filter and the match attribute. Then it maps one source user as a sync would and prints
the Graph properties, licenses and manager it gets, or each problem with the property and the
fix. The user is the first of --sample FILE (a JSON file in the file source's format:
{\"users\": [{\"id\": …, \"enabled\": …, \"attributes\": {…}}]}), else the first user of a local
file source. `cloud config upload` runs the same configuration checks before it writes.

UPN domains are not checked here (they are the tenant's: `test-connection` reads them), nor is a
password taken from the secret store.

Exit codes: 0 valid · 2 a problem, named with its key or property.

Examples:
  m365-provisioner validate --config examples/m365-provisioner.toml
  m365-provisioner validate --config ldap.toml --sample one-user.json")]
pub struct Args {
    #[command(flatten)]
    config: ConfigArg,
    /// Try the mapping on the first user of this JSON file (the file source's format) rather
    /// than on the first user of the configured source.
    #[arg(long, value_name = "FILE")]
    sample: Option<PathBuf>,
}

pub async fn run(args: Args) -> Code {
    match validate(&args).await {
        Ok(report) => {
            let _ = write!(std::io::stdout(), "{report}");
            Code::Success
        }
        Err(problem) => {
            let _ = writeln!(std::io::stderr(), "error: {problem}");
            Code::Config
        }
    }
}

/// The report of a valid configuration, or the first problem that makes it unusable (a mapping
/// problem lists every property of the sample user that fails).
async fn validate(args: &Args) -> Result<String, String> {
    let path = &args.config.config;
    let config = load_config(path).map_err(|e| e.message)?;
    let rule = m365_core::rule_mapping::compile_rule_offline(&config.rule)
        .map_err(|e| format!("{}: [rule] {e}", path.display()))?;
    let mut report = format!(
        "valid: {} (connection {}, rule {}, source {})\n",
        path.display(),
        config.connection.name,
        config.rule.name,
        config.source.type_name()
    );
    let (user, origin) = match &args.sample {
        Some(sample) => {
            let location = sample.display().to_string();
            (first_user(sample_settings(sample)).await?, location)
        }
        None => match sample_of_source(&config, &config_base(path)) {
            Some(settings) => {
                let location = settings.location.clone();
                (first_user(settings).await?, location)
            }
            None => {
                report.push_str(
                    "the mapping was not tried: the source is not a local file; pass --sample FILE\n",
                );
                return Ok(report);
            }
        },
    };
    let Some(user) = user else {
        let _ = writeln!(report, "the mapping was not tried: {origin} holds no user");
        return Ok(report);
    };
    report.push_str(&mapped(&rule, &user, &origin)?);
    Ok(report)
}

/// A local file source's settings, its location relative to the configuration; `None` for
/// another source.
fn sample_of_source(config: &Config, base: &Path) -> Option<FileSourceConfig> {
    let SourceConfig::File(file) = &config.source else {
        return None;
    };
    if file.location.contains("://") {
        return None;
    }
    let mut settings = file.clone();
    settings.location = relative_to(base, &file.location);
    Some(settings)
}

/// How `--sample` is read: a file source of its own, with groups only when a JSON sample has a
/// `groups` list (a sample of users alone is not an incomplete snapshot here).
fn sample_settings(sample: &Path) -> FileSourceConfig {
    let has_groups = std::fs::read(sample)
        .ok()
        .and_then(|bytes| serde_json::from_slice::<serde_json::Value>(&bytes).ok())
        .is_none_or(|document| document.get("groups").is_some());
    FileSourceConfig {
        groups: has_groups,
        ..FileSourceConfig::new(sample.display().to_string())
    }
}

/// The first user of a file source, read as a sync reads it; a user record that cannot be read
/// is the problem (group records do not matter here).
async fn first_user(settings: FileSourceConfig) -> Result<Option<SourceUser>, String> {
    let location = settings.location.clone();
    let source = FileSource::local(settings).map_err(|e| e.to_string())?;
    let page = source
        .snapshot_page(None, 1)
        .await
        .map_err(|e| format!("{location}: {e}"))?;
    if let Some(error) = page.errors.iter().find(|e| e.kind == ObjectKind::User) {
        return Err(format!("{}: {}", error.location, error.message));
    }
    Ok(page.users.into_iter().next())
}

/// What the rule makes of `user`: its scope, properties, licenses and manager, or every mapping
/// problem.
fn mapped(rule: &Rule, user: &SourceUser, origin: &str) -> Result<String, String> {
    let mut out = String::new();
    let _ = writeln!(out, "sample user {} (the first of {origin}):", user.id);
    match rule.mapping.in_scope(user) {
        Ok(true) => {}
        Ok(false) => {
            let _ = writeln!(
                out,
                "  out of scope (scope.filter): a sync leaves this user alone"
            );
            return Ok(out);
        }
        Err(problem) => return Err(format!("user {}: {problem}", user.id)),
    }
    let desired = rule.mapping.map_user(user).map_err(|errors| {
        let lines: Vec<String> = errors
            .iter()
            .map(|e| match &e.value {
                Some(value) => format!("  {} = {value:?}: {}", e.property, e.message),
                None => format!("  {}: {}", e.property, e.message),
            })
            .collect();
        format!(
            "user {} (the first of {origin}) cannot be mapped:\n{}",
            user.id,
            lines.join("\n")
        )
    })?;
    for (property, value) in &desired.properties {
        let _ = writeln!(out, "  {property} = {value}");
    }
    for (property, candidates) in &desired.unique_candidates {
        let _ = writeln!(out, "  {property} = the first free of {candidates:?}");
    }
    if let Some(licenses) = &desired.licenses {
        let skus: Vec<&str> = licenses.iter().map(|l| l.sku_id.as_str()).collect();
        let _ = writeln!(out, "  licenses = {skus:?}");
        if licenses.iter().any(|l| !is_sku_id(&l.sku_id)) || !desired.sku_plans.is_empty() {
            let _ = writeln!(
                out,
                "  note: SKU part numbers are resolved against the tenant's subscribed SKUs when \
                 a sync plans; one the tenant does not have holds only this user's licenses"
            );
        }
    }
    match &desired.manager {
        Some(Some(reference)) => {
            let _ = writeln!(out, "  manager = the source user {reference:?}");
        }
        Some(None) => {
            let _ = writeln!(out, "  manager = none (cleared)");
        }
        None => {}
    }
    if let Some(problem) = &desired.password_problem {
        let _ = writeln!(out, "  note: {problem}");
    }
    Ok(out)
}

/// Whether a mapped SKU is a skuId GUID rather than a part number.
fn is_sku_id(value: &str) -> bool {
    matches!(
        m365_core::mapping::validate::sku_reference(value),
        Ok(m365_core::mapping::validate::SkuReference::Id(_))
    )
}
