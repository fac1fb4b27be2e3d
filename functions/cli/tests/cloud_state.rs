//! `m365-provisioner cloud status | runs | errors | history | sync` against a deployment
//! stand-in (moto: table, secret, S3 source; a sandbox tenant), after a scheduled sync through
//! the function's handler.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a broken expectation should fail loudly"
)]

mod support;

use std::time::Duration;

use std::sync::Arc;

use m365_integration_tests::cloud::{
    Cloud, TABLE, repo_root, scheduler_event, serve_scheduled_function,
};
use serde_json::Value;
use support::cloud::cli;

/// A SKU the demo tenant holds with no licenses available (EMS E3).
const SKU_WITHOUT_SEATS: &str = "efccb6f7-5641-4e0e-bd10-b4976e1bf68e";
/// The SKU the examples assign (with seats).
const SKU_WITH_SEATS: &str = "6fd2c87f-b296-42f0-b197-1e91e994b900";
/// users[4] of examples/source.json.
const ADEYOUNG: &str = "6b0d549b-6f03-675a-1600-a35a099950d8";

fn example_source() -> Value {
    let text = std::fs::read_to_string(repo_root().join("examples/source.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn tenant_user<'a>(users: &'a [Value], upn: &str) -> &'a Value {
    users
        .iter()
        .find(|u| u["userPrincipalName"] == upn)
        .unwrap_or_else(|| panic!("no tenant user {upn}"))
}

/// The JSON document the command printed on stdout (stderr follows it in `out`).
fn json_of(out: &str) -> Value {
    serde_json::Deserializer::from_str(out)
        .into_iter::<Value>()
        .next()
        .unwrap_or_else(|| panic!("no JSON in {out}"))
        .unwrap_or_else(|e| panic!("{e}: {out}"))
}

async fn cloud_cli(cloud: &Cloud, command: &str, extra: &[&str]) -> (i32, String) {
    let mut args = vec![
        "cloud",
        command,
        "--table",
        TABLE,
        "--connection",
        "contoso",
    ];
    args.extend_from_slice(extra);
    cli(cloud, &args).await
}

#[tokio::test]
async fn cloud_reads_runs_errors_and_history_from_the_table_and_syncs_one_user_on_demand() {
    let cloud = Cloud::start().await;
    let mut source = example_source();
    source["users"][4]["attributes"]["licenseSku"] = SKU_WITHOUT_SEATS.into();
    cloud.put_source(&source).await;
    let answer = cloud
        .scheduled(scheduler_event(), "req-1", Duration::from_secs(3600))
        .await
        .unwrap();
    assert_eq!(answer.status, "partially_failed", "{answer:?}");

    let (code, out) = cloud_cli(&cloud, "status", &[]).await;
    assert_eq!(code, 0, "{out}");
    assert!(
        out.starts_with("contoso/staff: 49 linked users, 3 linked groups\n"),
        "{out}"
    );
    assert!(out.contains("  PartiallyFailed  "), "{out}");
    assert!(
        out.contains("objects in error: 1 in all, soonest retry first"),
        "{out}"
    );

    let (code, out) = cloud_cli(&cloud, "runs", &["--json"]).await;
    assert_eq!(code, 0, "{out}");
    let runs = json_of(&out);
    assert_eq!(runs["runs"].as_array().unwrap().len(), 1, "{runs:#}");
    assert_eq!(runs["runs"][0]["counts"]["created"], 48, "{runs:#}");

    let (code, out) = cloud_cli(&cloud, "errors", &[]).await;
    assert_eq!(code, 0, "{out}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines[0], "objects in error: 1, soonest retry first",
        "{out}"
    );
    assert!(
        lines[1].starts_with(&format!(
            "  user {ADEYOUNG} [licenses] attempt 1, next retry "
        )) && lines[1].contains("does not have any available licenses"),
        "{out}"
    );

    let (code, out) = cloud_cli(&cloud, "history", &["--object", "adeyoung@example.com"]).await;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("  history, newest first:\n"), "{out}");
    let history: Vec<&str> = out
        .lines()
        .skip_while(|l| !l.starts_with("  history"))
        .skip(1)
        .take_while(|l| l.starts_with("    "))
        .collect();
    assert!(
        history
            .iter()
            .any(|l| l.contains("failed   licenses") && l.contains("(request-id ")),
        "{out}"
    );
    assert!(
        history.iter().all(|l| l.contains("  [run contoso/staff-")),
        "{out}"
    );
    assert!(
        history.iter().any(|l| l.contains("applied  create user")),
        "{out}"
    );

    // Two users change in the source; provisioning one on demand touches only that one.
    source["users"][4]["attributes"]["licenseSku"] = SKU_WITH_SEATS.into();
    source["users"][4]["attributes"]["department"] = "Field Support".into();
    source["users"][5]["attributes"]["department"] = "Field Support".into();
    cloud.put_source(&source).await;
    let (code, out) = cloud_cli(&cloud, "sync", &["--user", "adeyoung@example.com"]).await;
    assert_eq!(code, 0, "{out}");
    assert!(
        out.starts_with(&format!("user adeyoung@example.com  (source {ADEYOUNG})\n")),
        "{out}"
    );
    assert!(out.contains("applied  update user"), "{out}");
    assert!(
        out.contains(&format!("applied  licenses     +{SKU_WITH_SEATS}")),
        "{out}"
    );
    let users = cloud.sandbox.sandbox().users();
    let adeyoung = tenant_user(&users, "adeyoung@example.com");
    assert_eq!(adeyoung["department"], "Field Support");
    assert_eq!(
        adeyoung["assignedLicenses"][0]["skuId"], SKU_WITH_SEATS,
        "{adeyoung:#}"
    );
    let other = source["users"][5]["attributes"]["mail"].as_str().unwrap();
    assert_ne!(tenant_user(&users, other)["department"], "Field Support");
    let (code, out) = cloud_cli(&cloud, "errors", &["--json"]).await;
    assert_eq!(code, 0, "{out}");
    assert_eq!(json_of(&out)["total"], 0, "{out}");
}

#[tokio::test]
async fn cloud_reads_of_an_unknown_connection_name_the_upload_command() {
    let cloud = Cloud::start().await;
    let (code, out) = cli(
        &cloud,
        &[
            "cloud",
            "errors",
            "--table",
            TABLE,
            "--connection",
            "fabrikam",
        ],
    )
    .await;
    assert_eq!(code, 2, "{out}");
    assert!(
        out.contains("no config for connection fabrikam in table")
            && out.contains("cloud config list"),
        "{out}"
    );
    let (code, out) = cli(
        &cloud,
        &["cloud", "sync", "--table", TABLE, "--connection", "contoso"],
    )
    .await;
    assert_eq!(code, 2, "sync needs --user or --group: {out}");
    assert!(out.contains("--user"), "{out}");
}

#[tokio::test]
async fn cloud_sync_with_function_runs_in_the_scheduled_function_and_prints_its_trace() {
    let cloud = Arc::new(Cloud::start().await);
    cloud.put_source(&example_source()).await;
    let (lambda, server) = serve_scheduled_function(Arc::clone(&cloud)).await;
    let invoke = |connection: &'static str, function: &'static str| {
        let lambda = lambda.clone();
        let cloud = Arc::clone(&cloud);
        async move {
            let args = [
                "cloud",
                "sync",
                "--table",
                TABLE,
                "--connection",
                connection,
                "--function",
                function,
                "--endpoint-url",
                &lambda,
                "--user",
                ADEYOUNG,
            ];
            cli(&cloud, &args).await
        }
    };

    let (code, out) = invoke("contoso", "scheduled-sync").await;
    assert_eq!(code, 0, "{out}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines[0],
        format!("user adeyoung@example.com  (source {ADEYOUNG})"),
        "{out}"
    );
    assert!(
        lines[1].contains("applied  create user")
            && lines[1].contains("→ created object ")
            && lines[1].contains("; request-id "),
        "{out}"
    );
    assert!(
        out.contains("cloud sync contoso in function scheduled-sync: 1 created"),
        "{out}"
    );
    // Only the named user: the rest of the source was not read.
    let users = cloud.sandbox.sandbox().users();
    tenant_user(&users, "adeyoung@example.com");
    let state = cloud.deployment.state.as_ref();
    assert_eq!(
        state
            .count_links("contoso/staff", m365_core::ObjectKind::User)
            .await
            .unwrap(),
        1
    );

    let (code, out) = invoke("contoso", "scheduled-sink").await;
    assert_eq!(code, 5, "{out}");
    assert!(
        out.contains("ResourceNotFoundException") && out.contains("Function not found"),
        "{out}"
    );
    let (code, out) = invoke("fabrikam", "scheduled-sync").await;
    assert_eq!(code, 2, "{out}");
    assert!(
        out.contains("function scheduled-sync failed: M365.NotConfigured"),
        "{out}"
    );
    server.abort();
}
