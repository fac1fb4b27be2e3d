//! `m365-provisioner test-connection` against the sandbox tenant: the report, the exit codes and
//! the wording an operator gets for each kind of wrong credential.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a broken expectation should fail loudly"
)]

use std::process::{Command, Output};

use m365_sandbox::{Sandbox, demo};

async fn run(base_url: &str, client_id: &str, secret: &str, extra: &[&str]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_m365-provisioner"));
    command
        .arg("test-connection")
        .args(extra)
        .env("M365_TENANT", demo::INITIAL_DOMAIN)
        .env("M365_CLIENT_ID", client_id)
        .env("M365_CLIENT_SECRET", secret)
        .env("M365_LOGIN_URL", base_url)
        .env("M365_GRAPH_URL", base_url)
        .env_remove("M365_CLIENT_SECRET_FILE");
    tokio::task::spawn_blocking(move || command.output().unwrap())
        .await
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn embedded_sandbox_is_ready_to_provision() {
    let output = Command::new(env!("CARGO_BIN_EXE_m365-provisioner"))
        .args(["test-connection", "--sandbox"])
        .output()
        .unwrap();
    let stdout = text(&output.stdout);
    assert_eq!(
        output.status.code(),
        Some(0),
        "{stdout}{}",
        text(&output.stderr)
    );
    assert!(stdout.contains("Contoso (sandbox)"), "{stdout}");
    assert!(stdout.contains("fed.example.com"), "{stdout}");
    assert!(stdout.contains("ready to provision"), "{stdout}");
}

#[tokio::test]
async fn missing_permissions_are_named_and_exit_5() {
    let sandbox = Sandbox::demo().start().await.unwrap();
    let output = run(
        sandbox.base_url(),
        demo::READONLY_CLIENT_ID,
        demo::READONLY_CLIENT_SECRET,
        &["--json"],
    )
    .await;
    assert_eq!(output.status.code(), Some(5), "{}", text(&output.stderr));
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["ok"], false);
    assert_eq!(
        report["permissions"]["missing"],
        serde_json::json!(["User.ReadWrite.All", "Group.ReadWrite.All"])
    );
}

#[tokio::test]
async fn wrong_and_expired_secrets_and_unknown_apps_are_told_apart() {
    let sandbox = Sandbox::demo().start().await.unwrap();
    let wrong = run(sandbox.base_url(), demo::CLIENT_ID, "not-the-secret", &[]).await;
    let expired = run(
        sandbox.base_url(),
        demo::EXPIRED_CLIENT_ID,
        demo::EXPIRED_CLIENT_SECRET,
        &[],
    )
    .await;
    let unknown = run(
        sandbox.base_url(),
        "0f0f0f0f-0000-4000-8000-000000000000",
        "whatever",
        &[],
    )
    .await;
    for output in [&wrong, &expired, &unknown] {
        assert_eq!(output.status.code(), Some(5), "{}", text(&output.stderr));
    }
    let (wrong, expired, unknown) = (
        text(&wrong.stderr),
        text(&expired.stderr),
        text(&unknown.stderr),
    );
    assert!(wrong.contains("7000215"), "{wrong}");
    assert!(expired.contains("7000222"), "{expired}");
    assert!(unknown.contains("700016"), "{unknown}");
    // The secret itself never appears in what the operator is shown.
    assert!(!wrong.contains("not-the-secret"), "{wrong}");
    assert!(!expired.contains(demo::EXPIRED_CLIENT_SECRET), "{expired}");
}

#[test]
fn missing_credentials_are_a_configuration_error() {
    let output = Command::new(env!("CARGO_BIN_EXE_m365-provisioner"))
        .arg("test-connection")
        .env_remove("M365_TENANT")
        .env_remove("M365_CLIENT_ID")
        .env_remove("M365_CLIENT_SECRET")
        .env_remove("M365_CLIENT_SECRET_FILE")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(text(&output.stderr).contains("M365_TENANT"));
}

#[tokio::test]
async fn every_further_app_gets_a_token_and_its_permissions_checked() {
    let sandbox = Sandbox::demo().start().await.unwrap();
    let with_second = |secret: &'static str| {
        let url = sandbox.base_url().to_owned();
        async move {
            let mut command = Command::new(env!("CARGO_BIN_EXE_m365-provisioner"));
            command
                .args(["test-connection", "--json"])
                .env("M365_TENANT", demo::INITIAL_DOMAIN)
                .env("M365_CLIENT_ID", demo::CLIENT_ID)
                .env("M365_CLIENT_SECRET", demo::CLIENT_SECRET)
                .env("M365_CLIENT_ID_2", demo::READONLY_CLIENT_ID)
                .env("M365_CLIENT_SECRET_2", secret)
                .env("M365_LOGIN_URL", &url)
                .env("M365_GRAPH_URL", &url)
                .env_remove("M365_CLIENT_SECRET_FILE")
                .env_remove("M365_CLIENT_ID_3");
            tokio::task::spawn_blocking(move || command.output().unwrap())
                .await
                .unwrap()
        }
    };
    // The second app's token works but it may only read: its missing permissions are named.
    let output = with_second(demo::READONLY_CLIENT_SECRET).await;
    assert_eq!(output.status.code(), Some(5), "{}", text(&output.stderr));
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["ok"], false);
    assert_eq!(report["permissions"]["missing"], serde_json::json!([]));
    assert_eq!(
        report["additionalApps"],
        serde_json::json!([{"clientId": demo::READONLY_CLIENT_ID,
            "missing": ["User.ReadWrite.All", "Group.ReadWrite.All"]}])
    );
    // Its secret refused: the error names that app, never the secret.
    let output = with_second("not-its-secret").await;
    assert_eq!(output.status.code(), Some(5), "{}", text(&output.stderr));
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["failedStep"], "token", "{report}");
    let error = report["error"].as_str().unwrap_or_default();
    assert!(
        error.contains(demo::READONLY_CLIENT_ID) && error.contains("7000215"),
        "{error}"
    );
    let everything = format!("{report}{}", text(&output.stderr));
    assert!(!everything.contains("not-its-secret"), "{everything}");
}
