//! Certificate credentials end to end: the real binary syncs into a sandbox tenant on 127.0.0.1
//! whose app has a certificate and no client secret, reading the certificate and its key from
//! a secrets file (docs/operations.md#certificate-credentials). A certificate the app does not
//! know, and a key that is not a key, fail with what to fix and never print the key.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a broken expectation should fail loudly"
)]

use std::path::Path;
use std::process::{Command, Output, Stdio};

use m365_sandbox::{RunningSandbox, Sandbox, SandboxConfig, demo};
use serde_json::json;

const CERT: &str = include_str!("../../../tests/fixtures/certs/app.crt.pem");
const KEY: &str = include_str!("../../../tests/fixtures/certs/app.key.pem");
const KEY_PKCS1: &str = include_str!("../../../tests/fixtures/certs/app.rsa-key.pem");
const OTHER_CERT: &str = include_str!("../../../tests/fixtures/certs/other.crt.pem");
const OTHER_KEY: &str = include_str!("../../../tests/fixtures/certs/other.key.pem");
/// x5t#S256 of app.crt.pem (tests/fixtures/certs/README.md).
const THUMBPRINT: &str = "3-fSv67gKuFGu4LZSAKvPDM8n5rJWW6kF6mYLIFJkNU";
const OTHER_THUMBPRINT: &str = "B7_Niv56-wnPNF9g478diWIWVV2zQtwnyOKfCwfphGw";

/// The demo tenant, its worker app holding app.crt.pem and no secret at all: only a client
/// assertion can get a token.
async fn tenant() -> RunningSandbox {
    let mut config = SandboxConfig::demo();
    let app = config
        .seed
        .apps
        .iter_mut()
        .find(|a| a.client_id == demo::CLIENT_ID)
        .unwrap();
    app.client_secret = String::new();
    app.certificates = vec![CERT.to_owned()];
    Sandbox::new(config).start().await.unwrap()
}

fn config_toml(base_url: &str) -> String {
    format!(
        r#"[connection]
name = "cert-suite"
login_url = "{base_url}"
graph_url = "{base_url}"

[source]
type = "file"
location = "source.json"

[state]
type = "sqlite"
path = "state.sqlite"

[secrets]
type = "file"
path = "secrets.toml"

[rule]
name = "staff"
match_attribute = "userPrincipalName"

[rule.preferences]
allow_create = true
allow_update = true

[rule.mapping.attributes]
userPrincipalName = "{{{{ mail | lower }}}}"
displayName = {{ attribute = "displayName" }}

[rule.mapping.password]
source = "generate"
"#
    )
}

fn secrets_toml(certificate: &str, key: &str, algorithm: &str) -> String {
    format!(
        "tenant = \"{}\"\nclient_id = \"{}\"\nclient_assertion_algorithm = \"{algorithm}\"\n\
         client_certificate_pem = '''\n{certificate}'''\nclient_private_key_pem = '''\n{key}'''\n",
        demo::INITIAL_DOMAIN,
        demo::CLIENT_ID
    )
}

fn workspace(base_url: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let users: Vec<_> = (1..=3)
        .map(|i| {
            json!({"id": format!("cert-{i}"), "enabled": true, "attributes": {
                "displayName": format!("Cert User {i}"),
                "mail": format!("cert.user{i}@{}", demo::VERIFIED_DOMAIN),
            }})
        })
        .collect();
    std::fs::write(
        dir.path().join("source.json"),
        json!({"users": users, "groups": []}).to_string(),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("m365-provisioner.toml"),
        config_toml(base_url),
    )
    .unwrap();
    dir
}

/// Runs the binary with `args` in `dir`, off the async runtime (the sandbox serves on it).
async fn run(dir: &Path, args: &[&str], env: &[(&str, &Path)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_m365-provisioner"));
    command
        .args(args)
        .current_dir(dir)
        .env_remove("M365_CONFIG")
        .env_remove("RUST_LOG")
        .env_remove("M365_CLIENT_SECRET")
        .env_remove("M365_CLIENT_SECRET_FILE")
        .stdin(Stdio::null());
    for (name, value) in env {
        command.env(name, value);
    }
    tokio::task::spawn_blocking(move || command.output().unwrap())
        .await
        .unwrap()
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// No line of a key's body in `shown`.
fn assert_no_key(shown: &str, key: &str) {
    for line in key.lines().filter(|l| !l.starts_with("-----")) {
        assert!(!shown.contains(line), "key material printed: {shown}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sync_with_certificate_credentials_provisions_the_users() {
    let running = tenant().await;
    let dir = workspace(running.base_url());
    let config = dir.path().join("m365-provisioner.toml");
    let config = config.to_str().unwrap();
    for (n, (key, algorithm)) in [(KEY, "RS256"), (KEY_PKCS1, "PS256")]
        .into_iter()
        .enumerate()
    {
        std::fs::write(
            dir.path().join("secrets.toml"),
            secrets_toml(CERT, key, algorithm),
        )
        .unwrap();
        let output = run(dir.path(), &["sync", "--json", "--config", config], &[]).await;
        let shown = text(&output);
        assert_eq!(output.status.code(), Some(0), "{algorithm}: {shown}");
        assert_no_key(&shown, key);
        let upns: Vec<String> = running
            .sandbox()
            .users()
            .iter()
            .filter_map(|u| u["userPrincipalName"].as_str().map(str::to_owned))
            .collect();
        for i in 1..=3 {
            let upn = format!("cert.user{i}@{}", demo::VERIFIED_DOMAIN);
            assert!(upns.contains(&upn), "{upn} missing: {upns:?}");
        }
        let stats = running.sandbox().stats();
        assert_eq!(stats.tokens_refused, 0);
        assert!(stats.tokens_issued > n as u64);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unregistered_certificate_or_a_bad_key_is_named_with_its_fix() {
    let running = tenant().await;
    let dir = workspace(running.base_url());
    let config = dir.path().join("m365-provisioner.toml");
    let config = config.to_str().unwrap();
    // A certificate the app registration does not have.
    std::fs::write(
        dir.path().join("secrets.toml"),
        secrets_toml(OTHER_CERT, OTHER_KEY, "RS256"),
    )
    .unwrap();
    let output = run(dir.path(), &["sync", "--config", config], &[]).await;
    let shown = text(&output);
    assert_eq!(output.status.code(), Some(5), "{shown}");
    assert!(shown.contains("AADSTS700027"), "{shown}");
    assert!(shown.contains(OTHER_THUMBPRINT), "{shown}");
    assert!(shown.contains("Certificates & secrets"), "{shown}");
    assert_no_key(&shown, OTHER_KEY);
    // The right certificate with another key: refused before any request, naming the key.
    std::fs::write(
        dir.path().join("secrets.toml"),
        secrets_toml(CERT, OTHER_KEY, "RS256"),
    )
    .unwrap();
    let refused_before = running.sandbox().stats().tokens_refused;
    let output = run(dir.path(), &["sync", "--config", config], &[]).await;
    let shown = text(&output);
    assert_eq!(output.status.code(), Some(2), "{shown}");
    assert!(shown.contains("client_private_key_pem"), "{shown}");
    assert!(
        shown.contains("does not belong to the certificate"),
        "{shown}"
    );
    assert_no_key(&shown, OTHER_KEY);
    // Not a key at all.
    std::fs::write(
        dir.path().join("secrets.toml"),
        secrets_toml(
            CERT,
            "-----BEGIN NOT A KEY-----\nc2VjcmV0\n-----END NOT A KEY-----\n",
            "RS256",
        ),
    )
    .unwrap();
    let output = run(dir.path(), &["sync", "--config", config], &[]).await;
    let shown = text(&output);
    assert_eq!(output.status.code(), Some(2), "{shown}");
    assert!(shown.contains("openssl pkcs8 -topk8 -nocrypt"), "{shown}");
    assert!(!shown.contains("c2VjcmV0"), "{shown}");
    assert_eq!(running.sandbox().stats().tokens_refused, refused_before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_connection_names_the_certificate_it_used() {
    let running = tenant().await;
    let dir = tempfile::tempdir().unwrap();
    let cert = dir.path().join("cert.pem");
    let key = dir.path().join("key.pem");
    std::fs::write(&cert, CERT).unwrap();
    std::fs::write(&key, KEY).unwrap();
    let base = running.base_url();
    let output = run(
        dir.path(),
        &[
            "test-connection",
            "--tenant",
            demo::INITIAL_DOMAIN,
            "--client-id",
            demo::CLIENT_ID,
            "--login-url",
            base,
            "--graph-url",
            base,
        ],
        &[
            ("M365_CLIENT_CERTIFICATE_FILE", &cert),
            ("M365_CLIENT_PRIVATE_KEY_FILE", &key),
        ],
    )
    .await;
    let shown = text(&output);
    assert_eq!(output.status.code(), Some(0), "{shown}");
    assert!(
        shown.contains(&format!(
            "token          ok (client credentials, certificate x5t#S256 {THUMBPRINT}, RS256)"
        )),
        "{shown}"
    );
    assert_no_key(&shown, KEY);
}

/// `sandbox --certificate FILE`: the demo worker app takes that certificate's assertions; a file
/// holding a private key is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sandbox_command_registers_a_certificate() {
    use std::io::{BufRead, BufReader};
    let dir = tempfile::tempdir().unwrap();
    let cert = dir.path().join("cert.pem");
    std::fs::write(&cert, CERT).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_m365-provisioner"))
        .args(["sandbox", "--port", "0", "--certificate"])
        .arg(&cert)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut banner = BufReader::new(child.stdout.take().unwrap());
    let mut lines = Vec::new();
    for _ in 0..5 {
        let mut line = String::new();
        banner.read_line(&mut line).unwrap();
        lines.push(line);
    }
    let base = lines[0]
        .trim()
        .strip_prefix("sandbox tenant listening on ")
        .unwrap()
        .to_owned();
    assert!(
        lines
            .iter()
            .any(|l| l.contains("certificates 1 registered")),
        "{lines:?}"
    );
    let token_url = format!("{base}/{}/oauth2/v2.0/token", demo::INITIAL_DOMAIN);
    let credential = m365_graph::CertificateCredential::from_pem(
        CERT,
        &secrecy::SecretString::from(KEY),
        m365_graph::AssertionAlgorithm::Rs256,
    )
    .unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let assertion = credential
        .assertion(demo::CLIENT_ID, &token_url, now)
        .unwrap();
    let response = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(30))
        .build()
        .unwrap()
        .post(&token_url)
        .form(&[
            ("grant_type", "client_credentials"),
            ("scope", "https://graph.microsoft.com/.default"),
            ("client_id", demo::CLIENT_ID),
            (
                "client_assertion_type",
                "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            ),
            (
                "client_assertion",
                secrecy::ExposeSecret::expose_secret(&assertion),
            ),
        ])
        .send()
        .await
        .unwrap();
    let status = response.status();
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(status, 200, "{:?}", response.text().await);
    // A key file given as the certificate is refused.
    let key = dir.path().join("key.pem");
    std::fs::write(&key, KEY).unwrap();
    let output = run(
        dir.path(),
        &[
            "sandbox",
            "--port",
            "0",
            "--certificate",
            key.to_str().unwrap(),
        ],
        &[],
    )
    .await;
    let shown = text(&output);
    assert_eq!(output.status.code(), Some(2), "{shown}");
    assert!(shown.contains("holds a private key"), "{shown}");
    assert_no_key(&shown, KEY);
}
