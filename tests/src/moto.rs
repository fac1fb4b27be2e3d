//! moto, the local AWS emulator, as a child process for the AWS adapter tests.
//!
//! [`Moto::start`] finds `moto_server` — `$MOTO_SERVER`, else `.venv/bin/moto_server_tests` (the
//! launcher `tests/run` writes for tests/moto/server.py), else `.venv/bin/moto_server` at the
//! repository root (where `tests/run` installs it), else `PATH` — starts it on a free port of
//! 127.0.0.1 and waits until it accepts connections. Each test gets its own server (about 1.5 s
//! to start), killed when the [`Moto`] is dropped. SDK configs for it carry static test
//! credentials and region, never anything from the environment of the test.

#![allow(
    clippy::panic,
    reason = "a harness that cannot start moto should fail the test loudly"
)]

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_s3::config::Credentials;

/// The region every moto-backed test uses.
pub const REGION: &str = "us-east-1";
/// moto accepts any key; these are the conventional fake ones.
pub const ACCESS_KEY_ID: &str = "testing";
pub const SECRET_ACCESS_KEY: &str = "testing";

/// How long moto may take to accept connections.
const START_TIMEOUT: Duration = Duration::from_secs(10);
/// Attempts with a fresh port, for the rare case another process took the one picked.
const START_ATTEMPTS: usize = 3;

/// A running `moto_server`, killed (by its PID) on drop.
#[derive(Debug)]
pub struct Moto {
    child: Child,
    endpoint: String,
    /// moto's request log (stderr), kept for the failure message of a server that died.
    _log: tempfile::NamedTempFile,
}

/// The repository root (the `tests` crate sits directly under it).
fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}

/// Where `moto_server` is, or a plain message saying where it was looked for and how to get it.
pub fn find_moto_server() -> Result<PathBuf, String> {
    let venv = repo_root().join(".venv/bin/moto_server");
    let install = format!(
        "the test command `bash tests/run` installs it (python3 -m venv .venv && \
         .venv/bin/pip install 'moto[server]', giving {})",
        venv.display()
    );
    if let Some(explicit) = std::env::var_os("MOTO_SERVER") {
        let explicit = PathBuf::from(explicit);
        return if explicit.is_file() {
            Ok(explicit)
        } else {
            Err(format!(
                "moto_server not found: MOTO_SERVER={} is not a file; {install}",
                explicit.display()
            ))
        };
    }
    // The test command's launcher (tests/moto/server.py), then plain moto.
    let launcher = repo_root().join(".venv/bin/moto_server_tests");
    if launcher.is_file() {
        return Ok(launcher);
    }
    if venv.is_file() {
        return Ok(venv);
    }
    let on_path = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|dir| dir.join("moto_server"))
            .find(|candidate| candidate.is_file())
    });
    on_path.ok_or_else(|| {
        format!(
            "moto_server not found (looked at $MOTO_SERVER, {}, and PATH); {install}",
            venv.display()
        )
    })
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .unwrap_or_else(|e| panic!("no free port on 127.0.0.1: {e}"))
}

/// Whether moto answers on `addr`: its dashboard data (`/moto-api/data.json`) is moto's alone.
async fn is_moto(probe: &reqwest::Client, addr: &SocketAddr) -> bool {
    probe
        .get(format!("http://{addr}/moto-api/data.json"))
        .send()
        .await
        .is_ok_and(|r| r.status().is_success())
}

fn log_tail(log: &tempfile::NamedTempFile) -> String {
    let text = std::fs::read_to_string(log.path()).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

impl Moto {
    /// Starts `moto_server` on 127.0.0.1 and waits until it answers. Panics (failing the test)
    /// when the program is missing or does not come up.
    pub async fn start() -> Moto {
        let program = find_moto_server().unwrap_or_else(|message| panic!("{message}"));
        let mut failures = Vec::new();
        for _ in 0..START_ATTEMPTS {
            match Self::try_start(&program).await {
                Ok(moto) => return moto,
                Err(failure) => failures.push(failure),
            }
        }
        panic!(
            "{} did not start on 127.0.0.1:\n{}",
            program.display(),
            failures.join("\n---\n")
        );
    }

    async fn try_start(program: &Path) -> Result<Moto, String> {
        let port = free_port();
        let log = tempfile::NamedTempFile::new().map_err(|e| format!("log file: {e}"))?;
        let stderr = log.reopen().map_err(|e| format!("log file: {e}"))?;
        let mut child = Command::new(program)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .map_err(|e| format!("cannot run {}: {e}", program.display()))?;
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let probe = reqwest::Client::builder()
            .timeout(Duration::from_millis(500))
            .build()
            .map_err(|e| format!("HTTP client: {e}"))?;
        let started = Instant::now();
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Err(format!(
                    "port {port}: exited with {status}\n{}",
                    log_tail(&log)
                ));
            }
            // An HTTP answer from moto itself, not a bare TCP accept: until moto binds the port
            // (or when it fails to, the port being taken since it was picked), another test's
            // server may be listening there.
            if is_moto(&probe, &addr).await {
                return Ok(Moto {
                    child,
                    endpoint: format!("http://{addr}"),
                    _log: log,
                });
            }
            if started.elapsed() > START_TIMEOUT {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "port {port}: not answering after {START_TIMEOUT:?}\n{}",
                    log_tail(&log)
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// An SDK config for this server: its endpoint, [`REGION`] and the static test credentials,
    /// all explicit.
    pub async fn sdk_config(&self) -> SdkConfig {
        aws_config::defaults(BehaviorVersion::latest())
            .endpoint_url(&self.endpoint)
            .region(Region::new(REGION))
            .credentials_provider(Credentials::new(
                ACCESS_KEY_ID,
                SECRET_ACCESS_KEY,
                None,
                None,
                "moto-static",
            ))
            .load()
            .await
    }

    /// An S3 client for this server (path-style, as the adapters crate builds it).
    pub async fn s3_client(&self) -> aws_sdk_s3::Client {
        m365_aws::s3_client(&self.sdk_config().await)
    }

    /// A DynamoDB client for this server.
    pub async fn dynamodb_client(&self) -> aws_sdk_dynamodb::Client {
        m365_aws::dynamodb_client(&self.sdk_config().await)
    }

    /// A Secrets Manager client for this server.
    pub async fn secretsmanager_client(&self) -> aws_sdk_secretsmanager::Client {
        aws_sdk_secretsmanager::Client::new(&self.sdk_config().await)
    }

    /// Forgets every resource (`POST /moto-api/reset`).
    pub async fn reset(&self) {
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap_or_else(|e| panic!("HTTP client: {e}"));
        let response = client
            .post(format!("{}/moto-api/reset", self.endpoint))
            .send()
            .await
            .unwrap_or_else(|e| panic!("moto reset: {e}"));
        assert!(
            response.status().is_success(),
            "moto reset: HTTP {}",
            response.status()
        );
    }

    /// The environment a child process (the CLI) needs to reach this server through the SDK's
    /// default chain: endpoint, region, the static credentials, and no shared config or
    /// credentials files or instance metadata from the machine.
    pub fn child_env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ENDPOINT_URL", self.endpoint.clone()),
            ("AWS_REGION", REGION.to_owned()),
            ("AWS_ACCESS_KEY_ID", ACCESS_KEY_ID.to_owned()),
            ("AWS_SECRET_ACCESS_KEY", SECRET_ACCESS_KEY.to_owned()),
            ("AWS_CONFIG_FILE", "/nonexistent/aws-config".to_owned()),
            (
                "AWS_SHARED_CREDENTIALS_FILE",
                "/nonexistent/aws-credentials".to_owned(),
            ),
            ("AWS_EC2_METADATA_DISABLED", "true".to_owned()),
        ]
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        // Child::kill signals this child's PID only.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
