//! `m365-provisioner sandbox`: serve the sandbox tenant on 127.0.0.1.

use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;

use m365_sandbox::{Sandbox, SandboxConfig, demo};

use crate::exit::Code;

#[derive(Debug, clap::Args)]
#[command(after_long_help = "\
The sandbox listens on 127.0.0.1 only. Point the client at it with
  login URL = graph URL = http://127.0.0.1:PORT
and the demo app's credentials (printed at start). Admin endpoints live under /_sandbox/
(state, reset, knobs, faults, requests, stats).

Examples:
  m365-provisioner sandbox --port 8750
  m365-provisioner sandbox --port 8750 --state .state/tenant.json
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
    let mut out = std::io::stdout().lock();
    // The first line is machine-readable: tests and scripts read the URL from it.
    let _ = writeln!(out, "sandbox tenant listening on {}", running.base_url());
    let _ = writeln!(
        out,
        "  tenant       {} ({})",
        demo::TENANT_ID,
        demo::INITIAL_DOMAIN
    );
    let _ = writeln!(out, "  client id    {}", demo::CLIENT_ID);
    let _ = writeln!(out, "  secret       {} (sandbox only)", demo::CLIENT_SECRET);
    let _ = writeln!(
        out,
        "  token        POST {}/{}/oauth2/v2.0/token",
        running.base_url(),
        demo::TENANT_ID
    );
    let _ = writeln!(out, "  graph        {}/v1.0/", running.base_url());
    if let Some(path) = &args.state {
        let _ = writeln!(out, "  state file   {}", path.display());
    }
    let _ = writeln!(out, "press Ctrl-C to stop");
    let _ = out.flush();
    drop(out);
    if let Err(error) = tokio::signal::ctrl_c().await {
        tracing::error!(error = %error, "cannot wait for Ctrl-C");
    }
    running.stop().await;
    Code::Success
}

fn load_config(path: &std::path::Path) -> Result<SandboxConfig, String> {
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
