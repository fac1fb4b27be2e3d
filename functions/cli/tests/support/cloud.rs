//! Running the CLI against a deployment stand-in: moto (table, secret, S3 source) and a
//! sandbox tenant served in-process.

#![allow(dead_code, clippy::unwrap_used, reason = "test code fails loudly")]

use m365_integration_tests::cloud::Cloud;

/// Runs the CLI (exit code, stdout then stderr) without blocking the runtime that serves the
/// in-process sandbox tenant; AWS settings point at the cloud's moto, no profile leaks in.
pub async fn cli(cloud: &Cloud, args: &[&str]) -> (i32, String) {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_m365-provisioner"));
    command
        .args(args)
        .env_remove("M365_TABLE")
        .env_remove("M365_SECRET_ID")
        .env_remove("AWS_PROFILE")
        .env_remove("AWS_DEFAULT_PROFILE")
        .env_remove("AWS_SESSION_TOKEN")
        .env("M365_LOCAL_TENANT_URL", cloud.sandbox.base_url())
        .envs(cloud.aws().moto.child_env())
        .stdin(std::process::Stdio::null());
    let output = tokio::task::spawn_blocking(move || command.output())
        .await
        .unwrap()
        .unwrap();
    (
        output.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ),
    )
}
