//! `m365-provisioner test-connection`: token, organization, domains and permissions, each
//! reported with what to fix.

use std::io::Write;
use std::path::PathBuf;

use m365_core::AppCredential;
use m365_graph::{
    ClientCredential, Cloud, Credentials, GraphClient, GraphError, GraphSettings, SharedState,
};
use m365_sandbox::{Sandbox, demo};
use secrecy::SecretString;
use serde_json::json;

use crate::exit::Code;

/// The Graph application permissions the provisioner needs, each with the broader permissions
/// that also grant it (docs/design.md#connection).
const REQUIRED: &[(&str, &[&str])] = &[
    ("User.ReadWrite.All", &["Directory.ReadWrite.All"]),
    ("Group.ReadWrite.All", &["Directory.ReadWrite.All"]),
    (
        "Organization.Read.All",
        &[
            "Organization.ReadWrite.All",
            "Directory.Read.All",
            "Directory.ReadWrite.All",
        ],
    ),
];

/// Granted but not needed: least privilege says remove them.
const UNNEEDED: &[&str] = &["Application.ReadWrite.All"];

#[derive(Debug, clap::Args)]
#[command(after_long_help = "\
Credentials come from the environment (or a file for the secret), never from the command line
where other users of the machine could read them:
  M365_TENANT              tenant GUID or domain, e.g. contoso.onmicrosoft.com
  M365_CLIENT_ID           application (client) ID of the app registration
  M365_CLIENT_SECRET       the client secret's Value (not its ID)
  M365_CLIENT_SECRET_FILE  or: a file holding the secret
  M365_CLIENT_CERTIFICATE_FILE, M365_CLIENT_PRIVATE_KEY_FILE
                           or: a certificate (PEM, uploaded to the app registration) and
                           its RSA private key (PEM); M365_CLIENT_ASSERTION_ALGORITHM
                           RS256 (default) or PS256 (docs/operations.md)
  M365_CLIENT_CERTIFICATE_PEM, M365_CLIENT_PRIVATE_KEY_PEM
                           or: the same as PEM text in the variables
  M365_CLIENT_ID_2, M365_CLIENT_SECRET_2, _3, ...
                           further app registrations of the tenant, to write past one
                           app's quota (3,000 writes / 150 s); each gets a token and its
                           permissions are checked

Examples:
  m365-provisioner test-connection --sandbox
  M365_TENANT=contoso.onmicrosoft.com M365_CLIENT_ID=... M365_CLIENT_SECRET_FILE=secret.txt \\
      m365-provisioner test-connection --cloud global")]
pub struct Args {
    /// Test against an embedded sandbox tenant with its demo app (no credentials needed).
    #[arg(long, conflicts_with_all = ["tenant", "client_id", "login_url", "graph_url"])]
    sandbox: bool,
    /// Tenant GUID or domain name.
    #[arg(long, env = "M365_TENANT")]
    tenant: Option<String>,
    /// Application (client) ID.
    #[arg(long, env = "M365_CLIENT_ID")]
    client_id: Option<String>,
    /// File holding the client secret (else M365_CLIENT_SECRET).
    #[arg(long, env = "M365_CLIENT_SECRET_FILE", value_name = "FILE")]
    client_secret_file: Option<PathBuf>,
    /// File holding the app's certificate, PEM (instead of a client secret).
    #[arg(long, env = "M365_CLIENT_CERTIFICATE_FILE", value_name = "FILE")]
    client_certificate_file: Option<PathBuf>,
    /// File holding the certificate's RSA private key, PEM (PKCS#8 or PKCS#1, unencrypted).
    #[arg(long, env = "M365_CLIENT_PRIVATE_KEY_FILE", value_name = "FILE")]
    client_private_key_file: Option<PathBuf>,
    /// National cloud: global (also GCC), usgov-high (GCC High), usgov-dod (DoD), china.
    #[arg(long, env = "M365_CLOUD", default_value = "global")]
    cloud: String,
    /// Override the login host (e.g. a sandbox tenant at http://127.0.0.1:8750).
    #[arg(long, env = "M365_LOGIN_URL")]
    login_url: Option<String>,
    /// Override the Graph host, without /v1.0.
    #[arg(long, env = "M365_GRAPH_URL")]
    graph_url: Option<String>,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

pub async fn run(args: Args) -> Code {
    if args.sandbox {
        let running = match Sandbox::demo().start().await {
            Ok(running) => running,
            Err(error) => {
                tracing::error!(error = %error, "cannot start the embedded sandbox tenant");
                return Code::Failure;
            }
        };
        let settings = GraphSettings::for_local(running.base_url());
        let credentials = Credentials::with_secret(
            demo::INITIAL_DOMAIN,
            demo::CLIENT_ID,
            SecretString::from(demo::CLIENT_SECRET),
        );
        let code = check(settings, vec![credentials], args.json).await;
        running.stop().await;
        return code;
    }
    let (settings, credentials) = match settings_from(&args) {
        Ok(pair) => pair,
        Err(message) => {
            let _ = writeln!(std::io::stderr(), "error: {message}");
            return Code::Config;
        }
    };
    check(settings, credentials, args.json).await
}

fn settings_from(args: &Args) -> Result<(GraphSettings, Vec<Credentials>), String> {
    let cloud: Cloud = args.cloud.parse()?;
    let tenant = args.tenant.clone().ok_or(
        "no tenant: set M365_TENANT (or --tenant) to the tenant GUID or a domain such as contoso.onmicrosoft.com",
    )?;
    let client_id = args.client_id.clone().ok_or(
        "no client id: set M365_CLIENT_ID (or --client-id) to the app registration's Application (client) ID",
    )?;
    let stored = stored_credential(args)?;
    let settings = GraphSettings {
        cloud,
        login_url: args.login_url.clone(),
        graph_url: args.graph_url.clone(),
        ..GraphSettings::default()
    };
    let more = m365_wiring::local_secrets::env_additional_apps().map_err(|e| e.to_string())?;
    let apps = std::iter::once((client_id, stored, "M365_CLIENT".to_owned())).chain(
        more.into_iter().enumerate().map(|(i, app)| {
            (
                app.client_id,
                app.credential,
                format!("M365_CLIENT_*_{}", i + 2),
            )
        }),
    );
    let mut credentials = Vec::new();
    for (client_id, stored, variables) in apps {
        let credential = ClientCredential::from_stored(&stored)
            .map_err(|e| format!("the certificate of app {client_id} ({variables}...): {e}"))?;
        credentials.push(Credentials {
            tenant: tenant.clone(),
            client_id,
            credential,
        });
    }
    Ok((settings, credentials))
}

/// The first app's credential: the secret file, the certificate and key files, else the
/// environment's variables (`m365_wiring::local_secrets::env_credential`).
fn stored_credential(args: &Args) -> Result<AppCredential, String> {
    let read = |path: &PathBuf, what: &str| {
        std::fs::read_to_string(path)
            .map(|s| s.trim_end_matches(['\r', '\n']).to_owned())
            .map_err(|e| format!("cannot read the {what} file {}: {e}", path.display()))
    };
    if let Some(path) = &args.client_secret_file {
        let secret = read(path, "client secret")?;
        if secret.is_empty() {
            return Err("the client secret is empty".to_owned());
        }
        return Ok(AppCredential::Secret(SecretString::from(secret)));
    }
    if args.client_certificate_file.is_some() || args.client_private_key_file.is_some() {
        let certificate = match &args.client_certificate_file {
            Some(path) => Some(read(path, "certificate")?),
            None => None,
        };
        let key = match &args.client_private_key_file {
            Some(path) => Some(SecretString::from(read(path, "private key")?)),
            None => None,
        };
        let algorithm = std::env::var("M365_CLIENT_ASSERTION_ALGORITHM").ok();
        return AppCredential::from_parts("", None, certificate, key, algorithm.as_deref())
            .map_err(|e| {
                e.replace("client_certificate_pem", "M365_CLIENT_CERTIFICATE_FILE")
                    .replace("client_private_key_pem", "M365_CLIENT_PRIVATE_KEY_FILE")
                    .replace(
                        "client_assertion_algorithm",
                        "M365_CLIENT_ASSERTION_ALGORITHM",
                    )
            });
    }
    m365_wiring::local_secrets::env_credential("").map_err(|e| {
        format!("{e}; M365_CLIENT_SECRET_FILE, or M365_CLIENT_CERTIFICATE_FILE and M365_CLIENT_PRIVATE_KEY_FILE, name files instead")
    })
}

/// How an app proved its identity, for the report: `client secret`, or the certificate's
/// thumbprint and algorithm.
fn credential_note(credential: &ClientCredential) -> String {
    match credential {
        ClientCredential::Secret(_) => "client secret".to_owned(),
        ClientCredential::Certificate(c) => format!(
            "certificate x5t#S256 {}, {}",
            c.thumbprint_s256(),
            c.algorithm()
        ),
    }
}

/// Which required permissions the granted roles lack, and which granted ones are not needed.
fn assess(roles: &[String]) -> (Vec<&'static str>, Vec<&'static str>) {
    let has = |name: &str| roles.iter().any(|r| r.eq_ignore_ascii_case(name));
    let missing = REQUIRED
        .iter()
        .filter(|(name, broader)| !has(name) && !broader.iter().any(|b| has(b)))
        .map(|(name, _)| *name)
        .collect();
    let unneeded = UNNEEDED.iter().copied().filter(|n| has(n)).collect();
    (missing, unneeded)
}

async fn check(settings: GraphSettings, apps: Vec<Credentials>, json: bool) -> Code {
    let tenant = apps.first().map(|a| a.tenant.clone()).unwrap_or_default();
    let client_ids: Vec<String> = apps.iter().map(|a| a.client_id.clone()).collect();
    let credential = apps
        .first()
        .map(|a| credential_note(&a.credential))
        .unwrap_or_default();
    let client =
        match GraphClient::with_apps(settings.clone(), apps.clone(), SharedState::default()) {
            Ok(client) => client,
            Err(error) => return fail(json, "settings", &error, Code::Config),
        };
    // Every app gets a token; the first refusal names its app.
    if let Err(error) = client.authenticate().await {
        return fail(json, "token", &error, Code::Connection);
    }
    let mut roles_by_app = Vec::new();
    for app in apps {
        match app_roles(&settings, app).await {
            Ok(roles) => roles_by_app.push(roles),
            Err(error) => return fail(json, "token", &error, Code::Connection),
        }
    }
    let roles = roles_by_app.first().cloned().unwrap_or_default();
    // What each further app lacks: (client id, missing permissions).
    let more_missing: Vec<(&str, Vec<&str>)> = client_ids
        .iter()
        .zip(&roles_by_app)
        .skip(1)
        .map(|(id, roles)| (id.as_str(), assess(roles).0))
        .collect();
    let organization = match client.organization().await {
        Ok(mut orgs) if !orgs.is_empty() => orgs.swap_remove(0),
        Ok(_) => {
            let message = format!("tenant {tenant} returned no organization object");
            return report_failure(json, "organization", &message, Code::Connection);
        }
        Err(error) => return fail(json, "organization", &error, Code::Connection),
    };
    let domains = match client.domains().await {
        Ok(domains) => domains,
        Err(error) => return fail(json, "domains", &error, Code::Connection),
    };
    let (missing, unneeded) = assess(&roles);
    let all_granted = missing.is_empty() && more_missing.iter().all(|(_, m)| m.is_empty());
    let findings = Findings {
        apps: client_ids.len(),
        credential,
        organization,
        domains,
        roles,
        missing,
        unneeded,
        more_missing,
        all_granted,
    };
    if json {
        findings.print_json();
    } else {
        findings.print_text();
    }
    if all_granted {
        Code::Success
    } else {
        Code::Connection
    }
}

/// What the connection test found.
struct Findings<'a> {
    apps: usize,
    /// How the first app proved its identity ([`credential_note`]).
    credential: String,
    organization: m365_graph::Organization,
    domains: Vec<m365_graph::Domain>,
    /// The first app's permissions.
    roles: Vec<String>,
    missing: Vec<&'static str>,
    unneeded: Vec<&'static str>,
    /// What each further app lacks: (client id, missing permissions).
    more_missing: Vec<(&'a str, Vec<&'static str>)>,
    all_granted: bool,
}

impl Findings<'_> {
    fn print_json(&self) {
        let value = json!({
            "ok": self.all_granted,
            "credential": self.credential,
            "tenant": {"id": self.organization.id, "displayName": self.organization.display_name},
            "domains": self.domains.iter().map(|d| json!({
                "name": d.id, "verified": d.is_verified, "default": d.is_default,
                "initial": d.is_initial, "authenticationType": d.authentication_type,
            })).collect::<Vec<_>>(),
            "permissions": {"granted": self.roles, "missing": self.missing, "unneeded": self.unneeded},
            "additionalApps": self.more_missing.iter().map(|(id, missing)| json!({
                "clientId": id, "missing": missing,
            })).collect::<Vec<_>>(),
        });
        let _ = writeln!(std::io::stdout().lock(), "{value:#}");
    }

    fn print_text(&self) {
        let mut out = std::io::stdout().lock();
        if self.apps > 1 {
            let _ = writeln!(
                out,
                "token          ok (client credentials, {}; {} app registrations)",
                self.credential, self.apps
            );
        } else {
            let _ = writeln!(
                out,
                "token          ok (client credentials, {})",
                self.credential
            );
        }
        let _ = writeln!(
            out,
            "organization   {} ({})",
            self.organization
                .display_name
                .as_deref()
                .unwrap_or("(no name)"),
            self.organization.id
        );
        for domain in &self.domains {
            let _ = writeln!(
                out,
                "domain         {} {}",
                domain.id,
                paren(&domain_notes(domain))
            );
        }
        self.print_permissions(&mut out);
        let _ = writeln!(
            out,
            "{}",
            if self.all_granted {
                "result         ready to provision"
            } else {
                "result         NOT ready: grant the missing permissions"
            }
        );
    }

    fn print_permissions(&self, out: &mut impl Write) {
        for (name, _) in REQUIRED {
            let state = if self.missing.contains(name) {
                "MISSING"
            } else {
                "granted"
            };
            let _ = writeln!(out, "permission     {name:<24} {state}");
        }
        for name in &self.missing {
            let _ = writeln!(
                out,
                "  fix: in the app registration, API permissions → Add → Microsoft Graph → Application permissions → {name}, then \"Grant admin consent\""
            );
        }
        for name in &self.unneeded {
            let _ = writeln!(
                out,
                "note           {name} is granted but not needed: remove it (least privilege)"
            );
        }
        for (id, missing) in &self.more_missing {
            if missing.is_empty() {
                let _ = writeln!(out, "app            {id}: every permission granted");
            } else {
                let _ = writeln!(
                    out,
                    "app            {id}: MISSING {}; grant them in that app registration too",
                    missing.join(", ")
                );
            }
        }
    }
}

/// What an operator should know of a domain.
fn domain_notes(domain: &m365_graph::Domain) -> Vec<&'static str> {
    let mut notes = Vec::new();
    if domain.is_initial {
        notes.push("initial");
    }
    if domain.is_default {
        notes.push("default");
    }
    if domain.authentication_type.as_deref() == Some("Federated") {
        notes.push("federated: users need onPremisesImmutableId");
    }
    if !domain.is_verified {
        notes.push("NOT verified: no user can be created in it");
    }
    notes
}

/// The application permissions one app's token carries.
async fn app_roles(settings: &GraphSettings, app: Credentials) -> Result<Vec<String>, GraphError> {
    GraphClient::with_apps(settings.clone(), vec![app], SharedState::default())?
        .token_roles()
        .await
}

fn paren(notes: &[&str]) -> String {
    if notes.is_empty() {
        String::new()
    } else {
        format!("({})", notes.join(", "))
    }
}

fn fail(json: bool, step: &str, error: &GraphError, code: Code) -> Code {
    report_failure(json, step, &error.to_string(), code)
}

fn report_failure(json: bool, step: &str, message: &str, code: Code) -> Code {
    if json {
        let value = json!({"ok": false, "failedStep": step, "error": message});
        let _ = writeln!(std::io::stdout(), "{value:#}");
    } else {
        let _ = writeln!(std::io::stderr(), "error: {step}: {message}");
    }
    code
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roles(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn names_every_missing_permission() {
        let (missing, unneeded) = assess(&roles(&["User.Read.All"]));
        assert_eq!(
            missing,
            [
                "User.ReadWrite.All",
                "Group.ReadWrite.All",
                "Organization.Read.All"
            ]
        );
        assert!(unneeded.is_empty());
    }

    #[test]
    fn broader_permissions_cover_the_required_ones() {
        let (missing, _) = assess(&roles(&["Directory.ReadWrite.All"]));
        assert!(missing.is_empty());
        let (missing, _) = assess(&roles(&[
            "User.ReadWrite.All",
            "Group.ReadWrite.All",
            "Directory.Read.All",
        ]));
        assert!(missing.is_empty());
    }

    #[test]
    fn flags_application_readwrite_as_unneeded() {
        let (missing, unneeded) = assess(&roles(&[
            "User.ReadWrite.All",
            "Group.ReadWrite.All",
            "Organization.Read.All",
            "Application.ReadWrite.All",
        ]));
        assert!(missing.is_empty());
        assert_eq!(unneeded, ["Application.ReadWrite.All"]);
    }
}
