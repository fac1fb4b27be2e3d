//! `sync` of a file source at `s3://bucket/source.json` (moto) into the embedded sandbox tenant.
//! The CLI finds moto through the SDK's default chain: `AWS_ENDPOINT_URL` (honoured by
//! aws-config), `AWS_REGION` and the static test credentials in its environment.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a broken expectation should fail loudly"
)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use m365_integration_tests::moto::Moto;
use serde_json::Value;

const BUCKET: &str = "hr-exports";

/// examples/m365-provisioner.toml with the source at `location`, in a private directory.
fn config_with_source(location: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples");
    let text = std::fs::read_to_string(examples.join("m365-provisioner.toml")).unwrap();
    let local = "location = \"source.json\"";
    assert!(text.contains(local), "examples config changed: {text}");
    let text = text.replace(local, &format!("location = \"{location}\""));
    let config = dir.path().join("m365-provisioner.toml");
    std::fs::write(&config, text).unwrap();
    (dir, config)
}

fn run(args: &[&str], config: &Path, moto: &Moto) -> Output {
    Command::new(env!("CARGO_BIN_EXE_m365-provisioner"))
        .args(args)
        .arg("--config")
        .arg(config)
        .env_remove("M365_CONFIG")
        .env_remove("AWS_PROFILE")
        .env_remove("AWS_DEFAULT_PROFILE")
        .env_remove("AWS_SESSION_TOKEN")
        .envs(moto.child_env())
        .output()
        .unwrap()
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

async fn moto_with_examples_source() -> Moto {
    let moto = Moto::start().await;
    let s3 = moto.s3_client().await;
    s3.create_bucket().bucket(BUCKET).send().await.unwrap();
    let body =
        std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/source.json"))
            .unwrap();
    s3.put_object()
        .bucket(BUCKET)
        .key("exports/source.json")
        .body(body.into())
        .send()
        .await
        .unwrap();
    moto
}

#[tokio::test]
async fn sync_of_an_s3_source_creates_the_users_in_the_sandbox() {
    let moto = moto_with_examples_source().await;
    let (_dir, config) = config_with_source(&format!("s3://{BUCKET}/exports/source.json"));

    let first = run(&["sync"], &config, &moto);
    assert_eq!(first.status.code(), Some(0), "{}", text(&first));
    let stdout = String::from_utf8_lossy(&first.stdout);
    let summary = stdout.lines().last().unwrap();
    // The same outcome as the quick start from the local examples/source.json.
    assert!(summary.contains("48 created"), "{summary}");
    assert!(summary.contains("1 linked"), "{summary}");
    assert!(summary.contains("2 groups created"), "{summary}");

    let status = run(&["status", "--json"], &config, &moto);
    assert_eq!(status.status.code(), Some(0), "{}", text(&status));
    let status: Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(status["linked"]["users"], 49);

    let second = run(&["sync"], &config, &moto);
    assert_eq!(second.status.code(), Some(0), "{}", text(&second));
    assert!(text(&second).contains("no changes"), "{}", text(&second));
}

#[tokio::test]
async fn sync_of_a_missing_s3_object_fails_naming_the_url_and_changes_nothing() {
    let moto = moto_with_examples_source().await;
    let location = format!("s3://{BUCKET}/exports/missing.json");
    let (_dir, config) = config_with_source(&location);

    let output = run(&["sync"], &config, &moto);
    // A source that cannot be read right now: a connection failure, worth retrying later.
    assert_eq!(output.status.code(), Some(5), "{}", text(&output));
    let all = text(&output);
    assert!(all.contains(&location), "{all}");
    assert!(all.contains("NoSuchKey"), "{all}");

    let status = run(&["status", "--json"], &config, &moto);
    let status: Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(status["linked"]["users"], 0, "{status}");
}
