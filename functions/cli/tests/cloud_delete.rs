//! `m365-provisioner cloud delete`: tearing a deployed connection down, against moto (table,
//! secret, S3 source) and a sandbox tenant, after a scheduled sync through the function's
//! handler.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a broken expectation should fail loudly"
)]

mod support;

use std::time::Duration;

use m365_core::ObjectKind;
use m365_integration_tests::cloud::{CONNECTION, Cloud, TABLE, scheduler_event};
use support::cloud::cli;

const KEY: &str = "contoso/staff";

fn enabled_users(cloud: &Cloud) -> usize {
    cloud
        .sandbox
        .sandbox()
        .users()
        .iter()
        .filter(|u| u["accountEnabled"] == true)
        .count()
}

#[tokio::test]
async fn cloud_delete_with_deprovision_disables_what_the_rule_linked_and_forgets_the_connection() {
    let cloud = Cloud::start().await;
    cloud.put_example_source().await;
    let answer = cloud
        .scheduled(scheduler_event(), "req-1", Duration::from_secs(3600))
        .await
        .unwrap();
    assert_eq!(answer.status, "succeeded", "{answer:?}");
    let state = cloud.deployment.state.as_ref();
    let linked = state.count_links(KEY, ObjectKind::User).await.unwrap();
    assert_eq!(linked, 49);
    let enabled_before = enabled_users(&cloud);

    let (code, out) = cli(
        &cloud,
        &[
            "cloud",
            "delete",
            "--table",
            TABLE,
            "--connection",
            CONNECTION,
            "--deprovision",
        ],
    )
    .await;
    assert_eq!(code, 0, "{out}");
    assert!(
        // 49 linked users and 3 groups.
        out.contains("connection contoso deleted: 52 object(s) deprovisioned"),
        "{out}"
    );
    // Every linked user is disabled (remove_action = "disable"); the seeded admin the rule never
    // linked keeps its state.
    assert_eq!(enabled_users(&cloud), enabled_before - 49);
    assert_eq!(state.count_links(KEY, ObjectKind::User).await.unwrap(), 0);
    assert!(state.list_runs(KEY, 10).await.unwrap().is_empty());
    assert!(
        cloud
            .aws()
            .configs
            .latest(CONNECTION)
            .await
            .unwrap()
            .is_none()
    );
    // The functions now refuse the connection, naming the upload command.
    let error = cloud
        .scheduled(scheduler_event(), "req-2", Duration::from_secs(3600))
        .await
        .unwrap_err();
    assert_eq!(error.error_type(), "M365.NotConfigured");
}

#[tokio::test]
async fn cloud_delete_of_an_unknown_connection_is_a_configuration_error() {
    let cloud = Cloud::start().await;
    let (code, out) = cli(
        &cloud,
        &[
            "cloud",
            "delete",
            "--table",
            TABLE,
            "--connection",
            "fabrikam",
        ],
    )
    .await;
    assert_eq!(code, 2, "{out}");
    assert!(
        out.contains("fabrikam") && out.contains("cloud config upload"),
        "{out}"
    );
    // The other connection is untouched.
    assert!(
        cloud
            .aws()
            .configs
            .latest(CONNECTION)
            .await
            .unwrap()
            .is_some()
    );
}
