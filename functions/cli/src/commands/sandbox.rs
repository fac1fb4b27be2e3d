//! `m365-provisioner sandbox`: serve the sandbox tenant on 127.0.0.1, and with `--pingone-port`
//! a PingOne stand-in beside it (a PingOne environment's token endpoint and Platform API).

use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

use m365_pingone_sandbox::{PingOneSandbox, Seed};
use m365_sandbox::{Sandbox, SandboxConfig, demo};

use crate::exit::Code;

#[derive(Debug, clap::Args)]
#[command(after_long_help = "\
The sandbox listens on 127.0.0.1 only. Point the client at it with
  login URL = graph URL = http://127.0.0.1:PORT
and the demo app's credentials (printed at start). Admin endpoints live under /_sandbox/
(state, reset, knobs, faults, requests, stats).

With --pingone-port, a PingOne stand-in runs beside it: one environment's token endpoint
(POST /ENV/as/token, client credentials) and Platform API (/v1/environments/ENV/users, groups,
populations, activities), as a PingOne source's auth_url and api_url
(examples/pingone/m365-provisioner.toml).

Examples:
  m365-provisioner sandbox --port 8750
  m365-provisioner sandbox --port 8750 --state .state/tenant.json
  m365-provisioner sandbox --pingone-port 8760                    # and the PingOne demo environment
  m365-provisioner sandbox --pingone-port 8760 --pingone-users 5000
  m365-provisioner sandbox --certificate cert.pem   # the worker app also takes this certificate's
                                                   # client assertions (docs/operations.md)
  curl -s -X POST http://127.0.0.1:8750/contoso.onmicrosoft.com/oauth2/v2.0/token \\
       -d grant_type=client_credentials -d scope=https://graph.microsoft.com/.default \\
       -d client_id=3c9d7a52-6b1f-4e2a-8d4c-7f0b5e9a1c23 \\
       --data-urlencode client_secret='sandbox-secret-NOT-for-production~1'")]
pub struct Args {
    /// TCP port on 127.0.0.1; 0 picks a free one (the chosen URL is printed on stdout).
    #[arg(long, default_value_t = 8750)]
    port: u16,
    /// Keep the tenant in this JSON file: loaded at start if it exists, saved after every change.
    #[arg(long, value_name = "FILE")]
    state: Option<PathBuf>,
    /// Start-up configuration (seed data and knobs) as JSON; defaults to the demo tenant.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Register this certificate (PEM, public part) on the demo worker app, beside its secret,
    /// as uploading it to an app registration does: client assertions signed with its key get
    /// tokens (docs/operations.md#certificate-credentials).
    #[arg(long, value_name = "FILE")]
    certificate: Option<PathBuf>,
    /// Also serve a PingOne stand-in on this port of 127.0.0.1; 0 picks a free one (its URL is
    /// printed on a line of its own).
    #[arg(long, value_name = "PORT")]
    pingone_port: Option<u16>,
    /// The stand-in's environment: absent, the demo (2 populations, 5 users, 3 groups); N, N
    /// generated users in 3 populations and 10 groups (2 nested, 1 dynamic).
    #[arg(long, value_name = "N", requires = "pingone_port")]
    pingone_users: Option<usize>,
}

pub async fn run(args: Args) -> Code {
    let config = match &args.config {
        None => SandboxConfig::demo(),
        Some(path) => match load_config(path) {
            Ok(config) => config,
            Err(message) => {
                tracing::error!("{message}");
                return Code::Config;
            }
        },
    };
    let mut config = config;
    if let Some(path) = &args.certificate {
        match read_certificate(path) {
            Ok(pem) => match config
                .seed
                .apps
                .iter_mut()
                .find(|a| a.client_id.eq_ignore_ascii_case(demo::CLIENT_ID))
            {
                Some(app) => app.certificates.push(pem),
                None => {
                    tracing::error!(
                        "--certificate: the configuration has no app {} (the demo worker app) to register it on; add it to that app's certificates in the configuration instead",
                        demo::CLIENT_ID
                    );
                    return Code::Config;
                }
            },
            Err(message) => {
                tracing::error!("{message}");
                return Code::Config;
            }
        }
    }
    let mut sandbox = Sandbox::new(config);
    if let Some(path) = &args.state {
        sandbox = match sandbox.with_state_file(path) {
            Ok(sandbox) => sandbox,
            Err(error) => {
                tracing::error!(file = %path.display(), error = %error, "cannot use the state file");
                return Code::Config;
            }
        };
    }
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, args.port));
    let running = match sandbox.start_on(addr).await {
        Ok(running) => running,
        Err(error) => {
            tracing::error!(address = %addr, error = %error, "cannot listen; is the port in use? choose another with --port");
            return Code::Config;
        }
    };
    let pingone = match args.pingone_port {
        None => None,
        Some(port) => {
            let seed = args.pingone_users.map_or_else(Seed::demo, Seed::generated);
            match PingOneSandbox::start_on(seed, port).await {
                Ok(pingone) => Some(pingone),
                Err(error) => {
                    tracing::error!(port, error = %error, "cannot serve the PingOne stand-in; is the port in use? choose another with --pingone-port");
                    running.stop().await;
                    return Code::Config;
                }
            }
        }
    };
    let mut text = banner(running.base_url(), running.sandbox(), args.state.as_deref());
    if let Some(pingone) = &pingone {
        let stop = "press Ctrl-C to stop\n";
        text = text.replace(stop, &format!("{}{stop}", pingone_banner(pingone)));
    }
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes());
    let _ = out.flush();
    drop(out);
    if let Err(error) = tokio::signal::ctrl_c().await {
        tracing::error!(error = %error, "cannot wait for Ctrl-C");
    }
    if let Some(pingone) = pingone {
        pingone.stop().await;
    }
    running.stop().await;
    Code::Success
}

/// The stand-in's lines, printed after the tenant's: the first is machine-readable.
fn pingone_banner(pingone: &PingOneSandbox) -> String {
    use m365_pingone_sandbox::demo as p1;
    format!(
        "pingone stand-in listening on {url}\n\
         \x20 environment  {env}\n\
         \x20 worker app   {client} (client_secret_basic)\n\
         \x20 secret       {secret} (stand-in only; M365_SECRET_PINGONE_CLIENT_SECRET)\n\
         \x20 token        POST {token}\n\
         \x20 api          {url}/v1/environments/{env}/users\n",
        url = pingone.url(),
        env = pingone.environment_id(),
        client = p1::BASIC_CLIENT_ID,
        secret = p1::BASIC_CLIENT_SECRET,
        token = pingone.token_url(),
    )
}

/// What the command prints at start. The first line is machine-readable: tests and scripts
/// read the URL from it. Tenant and app are the running tenant's (the configuration's, or the
/// state file's), never assumed to be the demo's; a secret is shown only when it is the demo
/// app's published one.
fn banner(base_url: &str, sandbox: &Sandbox, state: Option<&Path>) -> String {
    let (tenant, domain) = sandbox.tenant();
    let apps = sandbox.apps();
    let mut lines = vec![format!("sandbox tenant listening on {base_url}")];
    lines.push(match domain {
        Some(domain) => format!("  tenant       {tenant} ({domain})"),
        None => format!("  tenant       {tenant}"),
    });
    match apps.first() {
        Some(app) => {
            lines.push(format!("  client id    {}", app.client_id));
            lines.push(if app.client_secret == demo::CLIENT_SECRET {
                format!("  secret       {} (sandbox only)", demo::CLIENT_SECRET)
            } else {
                "  secret       as set in the configuration's seed.apps (not shown)".to_owned()
            });
            if !app.certificates.is_empty() {
                lines.push(format!(
                    "  certificates {} registered (client assertions accepted)",
                    app.certificates.len()
                ));
            }
            let others: Vec<&str> = apps.iter().skip(1).map(|a| a.client_id.as_str()).collect();
            if !others.is_empty() {
                lines.push(format!("  other apps   {}", others.join(", ")));
            }
        }
        None => lines.push(
            "  client id    none: no app can get a token; add one to seed.apps in the configuration"
                .to_owned(),
        ),
    }
    lines.push(format!(
        "  token        POST {base_url}/{tenant}/oauth2/v2.0/token"
    ));
    lines.push(format!("  graph        {base_url}/v1.0/"));
    if let Some(path) = state {
        lines.push(format!("  state file   {}", path.display()));
    }
    lines.push("press Ctrl-C to stop".to_owned());
    let mut text = lines.join("\n");
    text.push('\n');
    text
}

/// A certificate file's PEM text; refused unless it holds a certificate (and no private key).
fn read_certificate(path: &Path) -> Result<String, String> {
    let shown = path.display();
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("--certificate: cannot read {shown}: {e}"))?;
    if text.contains("PRIVATE KEY-----") {
        return Err(format!(
            "--certificate: {shown} holds a private key; give the certificate only (the public part, -----BEGIN CERTIFICATE-----)"
        ));
    }
    if !text.contains("-----BEGIN CERTIFICATE-----") {
        return Err(format!(
            "--certificate: {shown} is not a PEM certificate (-----BEGIN CERTIFICATE-----)"
        ));
    }
    Ok(text)
}

fn load_config(path: &Path) -> Result<SandboxConfig, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read sandbox config {}: {e}", path.display()))?;
    serde_json::from_str(&text).map_err(|e| {
        format!(
            "sandbox config {} is not valid: {e} (line {}, column {}); start from the output of GET /_sandbox/state or omit --config for the demo tenant",
            path.display(),
            e.line(),
            e.column()
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_banner_names_the_configured_tenant_and_app() {
        let mut config = SandboxConfig::demo();
        config.seed.tenant_id = "0a1b2c3d-0000-4000-8000-00000000f00d".to_owned();
        config.seed.domains[0].id = "fabrikam.onmicrosoft.com".to_owned();
        config.seed.apps.truncate(1);
        config.seed.apps[0].client_id = "77777777-7777-4777-8777-777777777777".to_owned();
        config.seed.apps[0].client_secret = "fabrikam-own-secret".to_owned();
        let text = banner("http://127.0.0.1:1", &Sandbox::new(config), None);
        assert!(
            text.contains(
                "tenant       0a1b2c3d-0000-4000-8000-00000000f00d (fabrikam.onmicrosoft.com)"
            ),
            "{text}"
        );
        assert!(
            text.contains("client id    77777777-7777-4777-8777-777777777777"),
            "{text}"
        );
        assert!(
            text.contains("POST http://127.0.0.1:1/0a1b2c3d-0000-4000-8000-00000000f00d/oauth2"),
            "{text}"
        );
        for demo_value in [
            demo::TENANT_ID,
            demo::CLIENT_ID,
            demo::CLIENT_SECRET,
            demo::INITIAL_DOMAIN,
        ] {
            assert!(!text.contains(demo_value), "{demo_value} in {text}");
        }
        assert!(!text.contains("fabrikam-own-secret"), "{text}");
        assert!(text.starts_with("sandbox tenant listening on http://127.0.0.1:1\n"));
    }

    #[test]
    fn the_demo_banner_is_unchanged() {
        let text = banner("http://127.0.0.1:1", &Sandbox::demo(), None);
        assert!(
            text.contains(&format!(
                "tenant       {} ({})",
                demo::TENANT_ID,
                demo::INITIAL_DOMAIN
            )),
            "{text}"
        );
        assert!(
            text.contains(&format!("client id    {}", demo::CLIENT_ID)),
            "{text}"
        );
        assert!(
            text.contains(&format!(
                "secret       {} (sandbox only)",
                demo::CLIENT_SECRET
            )),
            "{text}"
        );
    }
}
