//! The two Lambda handlers, called directly with fixture events, on moto (DynamoDB, Secrets
//! Manager, S3) and the sandbox tenant: scheduled sync end to end, continuation over many
//! invocations, overlapping and stale runs, every webhook rejection, duplicates, rotation.
//! Tests of what the handlers do rather than of AWS run a second time on in-memory ports.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a broken expectation should fail loudly"
)]

use std::time::Duration;

use m365_core::{Checkpoint, Phase, RunStatus, StateError};
use m365_integration_tests::cloud::{
    CONNECTION, Cloud, On, WEBHOOK_SECRET, now_ms, scheduler_event, secret_json, tenant_picture,
};
use m365_integration_tests::scenario::Scenario;
use m365_sandbox::{Knobs, SandboxConfig, demo};
use serde_json::{Value, json};

/// A handler test run twice: on moto (DynamoDB, S3, Secrets Manager) and on in-memory ports
/// with SQLite state. The handlers must behave the same on both; the in-memory run needs no
/// AWS emulator.
macro_rules! on_moto_and_in_memory {
    ($test:ident) => {
        mod $test {
            #[tokio::test]
            async fn on_moto() {
                super::$test(super::On::Moto).await;
            }

            #[tokio::test]
            async fn in_memory() {
                super::$test(super::On::Memory).await;
            }
        }
    };
}

/// The state key of the examples' rule.
const KEY: &str = "contoso/staff";
const HOUR: Duration = Duration::from_secs(3600);

fn example_source() -> (Vec<Value>, Vec<Value>) {
    let text = std::fs::read_to_string(
        m365_integration_tests::cloud::repo_root().join("examples/source.json"),
    )
    .unwrap();
    let source: Value = serde_json::from_str(&text).unwrap();
    (
        source["users"].as_array().unwrap().clone(),
        source["groups"].as_array().unwrap().clone(),
    )
}

fn upn(alias: &str) -> String {
    format!("{alias}@{}", demo::VERIFIED_DOMAIN)
}

// ---------------------------------------------------------------------------------------------
// Scheduled sync
// ---------------------------------------------------------------------------------------------

on_moto_and_in_memory!(scheduled_sync_of_an_s3_source_gives_the_tenant_the_cli_engine_gives);
async fn scheduled_sync_of_an_s3_source_gives_the_tenant_the_cli_engine_gives(on: On) {
    let cloud = on.cloud().await;
    cloud.put_example_source().await;
    let answer = cloud
        .scheduled(scheduler_event(), "req-1", HOUR)
        .await
        .unwrap();
    assert_eq!(answer.status, "succeeded", "{answer:?}");
    assert!(!answer.continue_);
    assert_eq!(answer.hop, 1);
    assert_eq!(answer.counts.created, 48, "{answer:?}");
    assert_eq!(answer.counts.linked, 1, "{answer:?}");
    assert_eq!(answer.counts.groups_created, 2, "{answer:?}");

    // The same source and rule through the local engine (SQLite state, local file): the same
    // tenant.
    let example = std::fs::read_to_string(
        m365_integration_tests::cloud::repo_root().join("examples/m365-provisioner.toml"),
    )
    .unwrap();
    let rule_text = &example[example.find("[rule]").unwrap()..];
    let local = Scenario::with_rule_text(SandboxConfig::demo(), rule_text).await;
    let (users, groups) = example_source();
    local.write_source(&users, &groups);
    let out = local.sync().await;
    assert_eq!(out.run.status, RunStatus::Succeeded, "{:?}", out.run);
    let expected = tenant_picture(&local.sandbox);
    assert_eq!(expected["users"].as_object().unwrap().len(), 50);
    assert_eq!(cloud.tenant_picture(), expected);

    // State in DynamoDB: the run, the checkpoint, the links; a second invocation is a no-op.
    let state = cloud.deployment.state.as_ref();
    let runs = state.list_runs(KEY, 10).await.unwrap();
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0].status, RunStatus::Succeeded);
    assert_eq!(
        state.get_checkpoint(KEY).await.unwrap().unwrap().generation,
        1
    );
    assert_eq!(
        state
            .count_links(KEY, m365_core::ObjectKind::User)
            .await
            .unwrap(),
        49
    );
    let writes = cloud.tenant_writes();
    let again = cloud
        .scheduled(scheduler_event(), "req-2", HOUR)
        .await
        .unwrap();
    assert_eq!(again.status, "succeeded");
    assert_eq!(again.counts.graph_writes, 0, "{again:?}");
    assert_eq!(cloud.tenant_writes(), writes);
}

on_moto_and_in_memory!(
    a_connection_without_configuration_fails_the_invocation_naming_the_upload_command
);
async fn a_connection_without_configuration_fails_the_invocation_naming_the_upload_command(on: On) {
    let cloud = on.cloud().await;
    let error = cloud
        .scheduled(json!({"connection": "fabrikam"}), "req-1", HOUR)
        .await
        .unwrap_err();
    assert_eq!(error.error_type(), "M365.NotConfigured");
    let message = error.to_string();
    assert!(
        message.contains("fabrikam") && message.contains("cloud config upload"),
        "{message}"
    );
    let error = cloud
        .scheduled(json!({"tenant": "x"}), "req-2", HOUR)
        .await
        .unwrap_err();
    assert_eq!(error.error_type(), "M365.BadEvent");
    assert_eq!(cloud.tenant_writes(), 0);
}

/// 2,000 users in 5 groups of 400.
fn big_source() -> Value {
    let users: Vec<Value> = (0..2000)
        .map(|i| {
            json!({"id": format!("u{i:04}"), "enabled": true, "attributes": {
                "givenName": format!("G{i}"), "sn": "Load", "displayName": format!("G{i} Load"),
                "mail": upn(&format!("load{i:04}")), "usageLocation": "US",
                "department": format!("D{}", i % 7), "title": "Engineer"}})
        })
        .collect();
    let groups: Vec<Value> = (0..5)
        .map(|g| {
            let members: Vec<String> = (g * 400..(g + 1) * 400)
                .map(|i| format!("u{i:04}"))
                .collect();
            json!({"id": format!("g{g}"), "name": format!("Load group {g}"), "members": members})
        })
        .collect();
    json!({"users": users, "groups": groups})
}

#[tokio::test]
async fn a_tiny_deadline_spreads_a_2000_user_sync_over_many_invocations_with_the_same_end_state() {
    let source = big_source();

    // Reference: one invocation with time to spare.
    let reference = Cloud::start().await;
    reference.put_source(&source).await;
    let answers = reference.state_machine_execution(HOUR, 1).await;
    assert_eq!(answers[0].status, "succeeded", "{:?}", answers[0]);
    let expected = reference.tenant_picture();
    let seeded = SandboxConfig::demo().seed.users.len();
    assert_eq!(expected["users"].as_object().unwrap().len(), 2000 + seeded);
    assert_eq!(
        expected["groups"]["Load group 3"]["members"]
            .as_array()
            .unwrap()
            .len(),
        400
    );

    // The same with a deadline that lets each invocation do one chunk or a few.
    let cloud = Cloud::start().await;
    cloud.put_source(&source).await;
    let answers = cloud
        .state_machine_execution(Duration::from_millis(300), 100)
        .await;
    let hops = answers.len();
    println!("2,000 users: {hops} invocations");
    assert!(hops >= 5, "many invocations: {hops}");
    for (i, answer) in answers.iter().enumerate() {
        assert_eq!(answer.hop as usize, i + 1);
        if i + 1 < hops {
            assert_eq!(answer.status, "checkpointed", "{answer:?}");
            assert!(answer.continue_);
        }
    }
    let last = answers.last().unwrap();
    assert_eq!(last.status, "succeeded", "{last:?}");
    assert!(!last.continue_);
    assert_eq!(cloud.tenant_picture(), expected);
    // No duplicate: every create went through once.
    let created: u64 = answers.iter().map(|a| a.counts.created).sum();
    assert_eq!(created, 2000);
    let runs = cloud.deployment.state.list_runs(KEY, 200).await.unwrap();
    assert_eq!(runs.len(), hops);
    assert_eq!(
        runs.iter()
            .filter(|r| r.status == RunStatus::Checkpointed)
            .count(),
        hops - 1
    );
}

#[tokio::test]
async fn the_hop_limit_stops_the_loop_and_the_next_execution_carries_on() {
    let cloud = Cloud::start_with(SandboxConfig::demo(), |s| s.max_hops = 2).await;
    cloud.put_source(&big_source()).await;
    let first = cloud
        .scheduled(scheduler_event(), "a", Duration::from_millis(1))
        .await
        .unwrap();
    assert!(first.continue_ && first.hop == 1, "{first:?}");
    let second = cloud
        .scheduled(
            serde_json::to_value(&first).unwrap(),
            "b",
            Duration::from_millis(1),
        )
        .await
        .unwrap();
    assert_eq!(second.status, "checkpointed");
    assert_eq!(second.hop, 2);
    assert!(!second.continue_, "the hop limit ends the execution");
    // The next schedule tick (a new execution, hop 0) finishes the work.
    let answers = cloud.state_machine_execution(HOUR, 1).await;
    assert_eq!(answers[0].status, "succeeded", "{:?}", answers[0]);
    assert_eq!(
        cloud.tenant_picture()["users"].as_object().unwrap().len(),
        2000 + SandboxConfig::demo().seed.users.len()
    );
}

#[tokio::test]
async fn two_invocations_at_once_one_syncs_and_the_other_exits_busy() {
    let mut config = SandboxConfig::demo();
    config.knobs.write_latency_ms = 100;
    let cloud = Cloud::start_with(config, |_| {}).await;
    cloud.put_example_source().await;
    // The second invocation starts while the first holds the lease (its run record exists).
    // Started at the very same instant, both conditional lease writes would race inside moto,
    // which, unlike DynamoDB, does not make a conditional update atomic under concurrency.
    let first_holds_the_lease = async {
        for _ in 0..3000 {
            if !cloud
                .deployment
                .state
                .list_runs(KEY, 1)
                .await
                .unwrap()
                .is_empty()
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("the first invocation never took the lease");
    };
    let (a, b) = tokio::join!(cloud.scheduled(scheduler_event(), "req-a", HOUR), async {
        first_holds_the_lease.await;
        cloud.scheduled(scheduler_event(), "req-b", HOUR).await
    },);
    let (a, b) = (a.unwrap(), b.unwrap());
    let mut statuses = vec![a.status.clone(), b.status.clone()];
    statuses.sort();
    assert_eq!(statuses, vec!["busy", "succeeded"], "{a:?} {b:?}");
    let busy = if a.status == "busy" { &a } else { &b };
    assert!(!busy.continue_);
    assert!(busy.counts == m365_core::RunCounts::default());
    // One run recorded; the tenant complete, once.
    let runs = cloud.deployment.state.list_runs(KEY, 10).await.unwrap();
    assert_eq!(runs.len(), 1, "{runs:?}");
    assert_eq!(
        cloud.tenant_picture()["users"].as_object().unwrap().len(),
        50
    );
}

#[tokio::test]
async fn a_stale_run_with_an_old_fencing_token_cannot_move_the_checkpoint() {
    let cloud = Cloud::start().await;
    cloud.put_example_source().await;
    cloud
        .scheduled(scheduler_event(), "req-1", HOUR)
        .await
        .unwrap();
    let state = cloud.deployment.state.as_ref();
    let done = state.get_checkpoint(KEY).await.unwrap().unwrap();
    assert_eq!(done.generation, 1);

    // A run takes the lease and stalls past its expiry; a newer run takes over.
    let now = now_ms();
    let stale = m365_core::conformance::acquire(state, KEY, "stalled run", now, 1).await;
    let newer = m365_core::conformance::acquire(state, KEY, "newer run", now + 5, 60_000).await;
    assert!(newer.token > stale.token);
    // The stalled run wakes up and tries to record its (older) progress.
    let rewind = Checkpoint {
        drift: None,
        generation: 0,
        phase: Phase::Snapshot { cursor: None },
        sweep_allowed: false,
        changes_cursor: None,
        last_complete_at: None,
        updated_at: now,
    };
    let error = state
        .put_checkpoint(KEY, &rewind, &stale)
        .await
        .unwrap_err();
    assert!(matches!(error, StateError::Fenced { .. }), "{error}");
    assert_eq!(state.get_checkpoint(KEY).await.unwrap().unwrap(), done);

    // While the newer run holds the lease, a scheduled invocation exits busy.
    let answer = cloud
        .scheduled(scheduler_event(), "req-2", HOUR)
        .await
        .unwrap();
    assert_eq!(answer.status, "busy");
    state.release_lease(&newer).await.unwrap();
    let answer = cloud
        .scheduled(scheduler_event(), "req-3", HOUR)
        .await
        .unwrap();
    assert_eq!(answer.status, "succeeded");
    assert_eq!(
        state.get_checkpoint(KEY).await.unwrap().unwrap().generation,
        2
    );
}

#[tokio::test]
async fn a_client_secret_rotated_in_secrets_manager_is_picked_up_after_one_refused_token() {
    let mut config = SandboxConfig::demo();
    // Tokens expire within seconds, so the next invocation asks for one. Long enough that a
    // request of a busy machine does not outlive the token it was sent with (the client renews
    // at 90 % of the lifetime).
    config.knobs = Knobs {
        token_lifetime_secs: 6,
        ..config.knobs
    };
    let cloud = Cloud::start_with(config, |_| {}).await;
    cloud.put_example_source().await;
    let first = cloud
        .scheduled(scheduler_event(), "req-1", HOUR)
        .await
        .unwrap();
    assert_eq!(first.status, "succeeded");
    let store = cloud
        .deployment
        .secret_store(m365_integration_tests::cloud::SECRET_ID);
    assert_eq!(store.reads().unwrap(), 1);

    // The administrator rotates: a new client secret in Entra (the old one deleted), and the new
    // value in Secrets Manager. This warm container still caches the old one.
    let rotated = "rotated-secret-value~9";
    assert!(
        cloud
            .sandbox
            .sandbox()
            .rotate_client_secret(demo::CLIENT_ID, rotated)
    );
    cloud
        .put_secret(&secret_json(rotated, &[WEBHOOK_SECRET]))
        .await;
    tokio::time::sleep(Duration::from_millis(6200)).await;
    let refused_before = cloud.sandbox.sandbox().stats().tokens_refused;

    // A source change to apply after the rotation.
    let (mut users, groups) = example_source();
    users[1]["attributes"]["title"] = json!("Director");
    cloud
        .put_source(&json!({"users": users, "groups": groups}))
        .await;
    let second = cloud
        .scheduled(scheduler_event(), "req-2", HOUR)
        .await
        .unwrap();
    assert_eq!(second.status, "succeeded", "{second:?}");
    assert_eq!(second.counts.updated, 1, "{second:?}");
    assert_eq!(store.reads().unwrap(), 2, "read again once");
    assert_eq!(
        cloud.sandbox.sandbox().stats().tokens_refused - refused_before,
        1,
        "one refused token request"
    );
}

// ---------------------------------------------------------------------------------------------
// Webhook
// ---------------------------------------------------------------------------------------------

fn new_user_event(id: &str) -> Value {
    json!({"type": "user.created", "timestamp": "2026-11-22T10:00:00Z", "data": {"id": id}})
}

on_moto_and_in_memory!(a_signed_event_provisions_the_named_user_and_a_duplicate_is_applied_once);
async fn a_signed_event_provisions_the_named_user_and_a_duplicate_is_applied_once(on: On) {
    let cloud = on.cloud().await;
    cloud.put_example_source().await;
    let (status, answer) = cloud
        .post_event(
            "msg_1",
            &new_user_event("6513270e-269e-0d37-f2a7-4de452e6b438"),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["status"], "succeeded", "{answer}");
    // bjensen exists in the tenant: linked, not duplicated; nobody else is provisioned.
    assert_eq!(answer["counts"]["linked"], 1, "{answer}");
    let (other_status, created) = cloud
        .post_event(
            "msg_2",
            &new_user_event("d23f0824-128b-2f33-0c5c-7fd0a6a3a450"),
        )
        .await;
    assert_eq!(other_status, 200, "{created}");
    assert_eq!(created["counts"]["created"], 1, "{created}");
    assert!(cloud.sandbox.sandbox().users().len() < 10);
    let (users, groups) = example_source();
    let title = users[1]["attributes"]["title"].clone();
    assert_eq!(
        cloud.tenant_picture()["users"]["abaker@example.com"]["jobTitle"],
        title
    );

    // The sender retries msg_2 (new timestamp, new signature) after the source changed: it is
    // answered 200 and not applied again.
    let mut users = users;
    users[1]["attributes"]["title"] = json!("Chief");
    cloud
        .put_source(&json!({"users": users, "groups": groups}))
        .await;
    let writes = cloud.tenant_writes();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (status, answer) = cloud
        .post_event(
            "msg_2",
            &new_user_event("d23f0824-128b-2f33-0c5c-7fd0a6a3a450"),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(answer["status"], "duplicate", "{answer}");
    assert_eq!(cloud.tenant_writes(), writes);
    assert_eq!(
        cloud.tenant_picture()["users"]["abaker@example.com"]["jobTitle"],
        title
    );
    // A new event for the same user applies the change.
    let (status, answer) = cloud
        .post_event(
            "msg_3",
            &new_user_event("d23f0824-128b-2f33-0c5c-7fd0a6a3a450"),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        cloud.tenant_picture()["users"]["abaker@example.com"]["jobTitle"],
        "Chief"
    );
}

/// The demo tenant with two more read-write app registrations, `writer-2` and `writer-3`.
fn tenant_of_three_apps() -> SandboxConfig {
    let mut config = SandboxConfig::demo();
    let writer = config.seed.apps[0].clone();
    for n in 2..=3 {
        config.seed.apps.push(m365_sandbox::AppSeed {
            client_id: format!("0000000{n}-0000-4000-8000-00000000000{n}"),
            client_secret: format!("writer-secret~{n}"),
            certificates: Vec::new(),
            display_name: format!("writer-{n}"),
            ..writer.clone()
        });
    }
    config
}

/// The secret's JSON with the demo app and two further apps, the third with `third_secret`.
fn secret_of_three_apps(third_secret: &str) -> String {
    let mut secret: Value =
        serde_json::from_str(&secret_json(demo::CLIENT_SECRET, &[WEBHOOK_SECRET])).unwrap();
    secret["additional_apps"] = json!([
        {"client_id": "00000002-0000-4000-8000-000000000002", "client_secret": "writer-secret~2"},
        {"client_id": "00000003-0000-4000-8000-000000000003", "client_secret": third_secret},
    ]);
    secret.to_string()
}

/// Graph requests (batch items one by one) per app id in the sandbox's log.
fn requests_by_app(cloud: &Cloud) -> std::collections::BTreeMap<String, u64> {
    let mut by_app = std::collections::BTreeMap::new();
    for r in cloud.sandbox.sandbox().request_log() {
        if r.path != "/v1.0/$batch" {
            *by_app.entry(r.app_id.unwrap_or_default()).or_insert(0) += 1;
        }
    }
    by_app
}

/// A scheduled sync of the example source through the demo app and two further apps, the
/// third with `third_secret`.
async fn sync_through_three_apps(
    third_secret: &str,
) -> (Cloud, m365_runtime::scheduled::SyncResponse) {
    let cloud = Cloud::start_with(tenant_of_three_apps(), |_| {}).await;
    cloud.put_secret(&secret_of_three_apps(third_secret)).await;
    cloud.put_example_source().await;
    let outcome = cloud
        .scheduled(scheduler_event(), "req-1", HOUR)
        .await
        .unwrap();
    (cloud, outcome)
}

#[tokio::test]
async fn a_scheduled_sync_goes_through_every_app_registration_of_the_secret() {
    let (cloud, outcome) = sync_through_three_apps("writer-secret~3").await;
    assert_eq!(outcome.status, "succeeded", "{outcome:?}");
    assert!(outcome.counts.created > 0, "{outcome:?}");
    let by_app = requests_by_app(&cloud);
    assert_eq!(by_app.len(), 3, "every app sent requests: {by_app:?}");
    assert_eq!(cloud.sandbox.sandbox().stats().tokens_refused, 0);
}

#[tokio::test]
async fn a_refused_app_registration_does_not_stop_the_sync() {
    let (cloud, outcome) = sync_through_three_apps("not-its-secret").await;
    assert_eq!(outcome.status, "succeeded", "{outcome:?}");
    assert!(outcome.counts.created > 0, "{outcome:?}");
    assert_eq!(outcome.counts.failed, 0, "{outcome:?}");
    let by_app = requests_by_app(&cloud);
    assert!(
        !by_app.contains_key("00000003-0000-4000-8000-000000000003"),
        "{by_app:?}"
    );
    assert_eq!(by_app.len(), 2, "the other two carried the run: {by_app:?}");
    assert!(cloud.sandbox.sandbox().stats().tokens_refused >= 1);
    // The end state is what a run through one app gives.
    assert_eq!(
        cloud.tenant_picture()["users"]["abaker@example.com"]["accountEnabled"],
        true
    );
}

on_moto_and_in_memory!(every_rejection_applies_nothing_and_remembers_nothing);
async fn every_rejection_applies_nothing_and_remembers_nothing(on: On) {
    let cloud = on.cloud_with(|s| s.max_body_bytes = 4096).await;
    cloud.put_example_source().await;
    let path = format!("/events/{CONNECTION}");
    let body = new_user_event("d23f0824-128b-2f33-0c5c-7fd0a6a3a450")
        .to_string()
        .into_bytes();
    let now = now_ms() / 1000;
    let good = Cloud::signed_headers(WEBHOOK_SECRET, "msg_r", now, &body);
    let without = |name: &str| -> Vec<(&'static str, String)> {
        good.iter().filter(|(n, _)| *n != name).cloned().collect()
    };
    let other_secret = "whsec_QWxsIHRoZSB3b3JsZCdzIGEgc3RhZ2UsIGFuZCBhbGwgdGhlIG1lbg==";
    let mut cases: Vec<(&str, lambda_http::Request, u16)> = vec![
        (
            "missing webhook-signature",
            Cloud::function_url_request("POST", &path, &without("webhook-signature"), &body),
            401,
        ),
        (
            "missing webhook-id",
            Cloud::function_url_request("POST", &path, &without("webhook-id"), &body),
            401,
        ),
        (
            "missing webhook-timestamp",
            Cloud::function_url_request("POST", &path, &without("webhook-timestamp"), &body),
            401,
        ),
        (
            "signed with another secret",
            Cloud::function_url_request(
                "POST",
                &path,
                &Cloud::signed_headers(other_secret, "msg_r", now, &body),
                &body,
            ),
            401,
        ),
        (
            "body changed after signing",
            Cloud::function_url_request("POST", &path, &good, &body[..body.len() - 1]),
            401,
        ),
    ];
    for (name, malformed) in [
        ("not JSON", b"{\"type\": ".to_vec()),
        (
            "unknown type",
            br#"{"type":"user.renamed","data":{"id":"x"}}"#.to_vec(),
        ),
        ("no id", br#"{"type":"user.created","data":{}}"#.to_vec()),
    ] {
        cases.push((
            name,
            Cloud::function_url_request(
                "POST",
                &path,
                &Cloud::signed_headers(WEBHOOK_SECRET, "msg_r", now, &malformed),
                &malformed,
            ),
            400,
        ));
    }
    let big = vec![b' '; 4097];
    cases.push((
        "over the size limit",
        Cloud::function_url_request(
            "POST",
            &path,
            &Cloud::signed_headers(WEBHOOK_SECRET, "msg_r", now, &big),
            &big,
        ),
        413,
    ));
    cases.push((
        "unknown connection",
        Cloud::function_url_request("POST", "/events/fabrikam", &good, &body),
        401,
    ));
    cases.push((
        "GET",
        Cloud::function_url_request("GET", &path, &good, &body),
        405,
    ));
    for (name, request, expected) in &cases {
        let (status, answer) = cloud.webhook(request).await;
        assert_eq!(status, *expected, "{name}: {answer}");
        assert!(answer["error"].is_string(), "{name}: {answer}");
    }
    // Timestamps outside the 300 s tolerance, signed when sent and 5 s past it: a second
    // boundary crossed between signing and checking must not bring them inside it. The exact
    // boundary is tested against a fixed clock in `m365_runtime::signature`.
    for (name, offset) in [
        ("timestamp 305 s old", -305),
        ("timestamp 305 s ahead", 305),
    ] {
        let signed_now =
            Cloud::signed_headers(WEBHOOK_SECRET, "msg_r", now_ms() / 1000 + offset, &body);
        let request = Cloud::function_url_request("POST", &path, &signed_now, &body);
        let (status, answer) = cloud.webhook(&request).await;
        assert_eq!(status, 401, "{name}: {answer}");
        assert!(answer["error"].is_string(), "{name}: {answer}");
    }
    assert_eq!(cloud.tenant_writes(), 0, "nothing applied");
    assert!(
        cloud
            .deployment
            .state
            .list_runs(KEY, 10)
            .await
            .unwrap()
            .is_empty()
    );
    // The id was never remembered: the genuine delivery, signed now, is applied.
    let fresh = Cloud::signed_headers(WEBHOOK_SECRET, "msg_r", now_ms() / 1000, &body);
    let (status, answer) = cloud
        .webhook(&Cloud::function_url_request("POST", &path, &fresh, &body))
        .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["counts"]["created"], 1, "{answer}");
}

#[tokio::test]
async fn the_default_size_limit_is_one_mebibyte() {
    let cloud = Cloud::start().await;
    assert_eq!(cloud.deployment.settings.max_body_bytes, 1 << 20);
    let big = vec![b' '; (1 << 20) + 1];
    let headers = Cloud::signed_headers(WEBHOOK_SECRET, "msg_big", now_ms() / 1000, &big);
    let (status, _) = cloud
        .webhook(&Cloud::function_url_request(
            "POST",
            &format!("/events/{CONNECTION}"),
            &headers,
            &big,
        ))
        .await;
    assert_eq!(status, 413);
}

on_moto_and_in_memory!(
    a_rotated_webhook_secret_is_read_again_once_and_both_secrets_verify_during_rotation
);
async fn a_rotated_webhook_secret_is_read_again_once_and_both_secrets_verify_during_rotation(
    on: On,
) {
    let cloud = on.cloud().await;
    cloud.put_example_source().await;
    let store = cloud
        .deployment
        .secret_store(m365_integration_tests::cloud::SECRET_ID);
    let (status, _) = cloud
        .post_event(
            "msg_a",
            &new_user_event("6513270e-269e-0d37-f2a7-4de452e6b438"),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(store.reads().unwrap(), 1);

    // The sender moves to a new secret; the secret now holds both.
    let new_secret = "whsec_bmV3IHNlY3JldCBmb3IgdGhlIHdlYmhvb2sgc2VuZGVyIQ==";
    cloud
        .put_secret(&secret_json(
            demo::CLIENT_SECRET,
            &[new_secret, WEBHOOK_SECRET],
        ))
        .await;
    let body = new_user_event("d23f0824-128b-2f33-0c5c-7fd0a6a3a450")
        .to_string()
        .into_bytes();
    let headers = Cloud::signed_headers(new_secret, "msg_b", now_ms() / 1000, &body);
    let (status, answer) = cloud
        .webhook(&Cloud::function_url_request(
            "POST",
            &format!("/events/{CONNECTION}"),
            &headers,
            &body,
        ))
        .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(store.reads().unwrap(), 2, "read again once");
    // The old secret still verifies during the rotation, without another read.
    let (status, _) = cloud
        .post_event(
            "msg_c",
            &new_user_event("6513270e-269e-0d37-f2a7-4de452e6b438"),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(store.reads().unwrap(), 2);
    // A wrong signature right after does not make another read (at most one a minute).
    let headers = Cloud::signed_headers(
        "whsec_QWxsIHRoZSB3b3JsZCdzIGEgc3RhZ2UsIGFuZCBhbGwgdGhlIG1lbg==",
        "msg_d",
        now_ms() / 1000,
        &body,
    );
    let (status, _) = cloud
        .webhook(&Cloud::function_url_request(
            "POST",
            &format!("/events/{CONNECTION}"),
            &headers,
            &body,
        ))
        .await;
    assert_eq!(status, 401);
    assert_eq!(store.reads().unwrap(), 2);
}

#[tokio::test]
async fn an_event_while_a_sync_holds_the_lease_is_answered_503_and_its_retry_is_applied() {
    let cloud = Cloud::start().await;
    cloud.put_example_source().await;
    let state = cloud.deployment.state.as_ref();
    let lease =
        m365_core::conformance::acquire(state, KEY, "scheduled-sync req-x", now_ms(), 60_000).await;
    let event = new_user_event("d23f0824-128b-2f33-0c5c-7fd0a6a3a450");
    let (status, answer) = cloud.post_event("msg_busy", &event).await;
    assert_eq!(status, 503, "{answer}");
    assert_eq!(cloud.tenant_writes(), 0);
    state.release_lease(&lease).await.unwrap();
    let (status, answer) = cloud.post_event("msg_busy", &event).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["status"], "succeeded", "{answer}");
    assert_eq!(answer["counts"]["created"], 1, "{answer}");
}

// ---------------------------------------------------------------------------------------------
// Webhook: authentication without enumeration, caching, event claims, deadline, failures
// ---------------------------------------------------------------------------------------------

/// A signed request for `connection` (signed with [`WEBHOOK_SECRET`]).
fn signed_request(connection: &str, id: &str, event: &Value) -> lambda_http::Request {
    let body = event.to_string().into_bytes();
    let headers = Cloud::signed_headers(WEBHOOK_SECRET, id, now_ms() / 1000, &body);
    Cloud::function_url_request("POST", &format!("/events/{connection}"), &headers, &body)
}

/// Uploads a second connection, `name`, whose configuration names the secret `secret_id`.
async fn upload_second_connection(cloud: &Cloud, name: &str, secret_id: &str) {
    let text = m365_integration_tests::cloud::quickstart_cloud_config()
        .replace(
            &format!("name = \"{CONNECTION}\""),
            &format!("name = \"{name}\""),
        )
        .replace(m365_integration_tests::cloud::SECRET_ID, secret_id);
    cloud.upload_config_of(name, &text).await;
}

#[tokio::test]
async fn unknown_connections_disabled_webhooks_and_bad_signatures_get_one_and_the_same_401() {
    let cloud = Cloud::start().await;
    cloud.put_example_source().await;
    // fabrikam exists but its secret enables no webhook; northwind's secret does not exist.
    upload_second_connection(&cloud, "fabrikam", "m365-provisioner/fabrikam").await;
    cloud
        .aws()
        .secrets
        .create_secret()
        .name("m365-provisioner/fabrikam")
        .secret_string(secret_json(demo::CLIENT_SECRET, &[]))
        .send()
        .await
        .unwrap();
    upload_second_connection(&cloud, "northwind", "m365-provisioner/northwind").await;

    let event = new_user_event("d23f0824-128b-2f33-0c5c-7fd0a6a3a450");
    let body = event.to_string().into_bytes();
    let path = format!("/events/{CONNECTION}");
    let now = now_ms() / 1000;
    let good = Cloud::signed_headers(WEBHOOK_SECRET, "msg_401", now, &body);
    let other_secret = "whsec_QWxsIHRoZSB3b3JsZCdzIGEgc3RhZ2UsIGFuZCBhbGwgdGhlIG1lbg==";
    let cases: Vec<(&str, lambda_http::Request)> = vec![
        (
            "unknown connection",
            Cloud::function_url_request("POST", "/events/tailspin", &good, &body),
        ),
        (
            "webhooks disabled for the connection",
            Cloud::function_url_request("POST", "/events/fabrikam", &good, &body),
        ),
        (
            "the connection's secret does not exist",
            Cloud::function_url_request("POST", "/events/northwind", &good, &body),
        ),
        (
            "no signature headers",
            Cloud::function_url_request("POST", &path, &[], &body),
        ),
        (
            "missing webhook-signature",
            Cloud::function_url_request("POST", &path, &good[..2], &body),
        ),
        (
            "signed with another secret",
            Cloud::function_url_request(
                "POST",
                &path,
                &Cloud::signed_headers(other_secret, "msg_401", now, &body),
                &body,
            ),
        ),
        (
            "stale timestamp",
            Cloud::function_url_request(
                "POST",
                &path,
                &Cloud::signed_headers(WEBHOOK_SECRET, "msg_401", now - 3600, &body),
                &body,
            ),
        ),
    ];
    let mut bodies = Vec::new();
    for (name, request) in cases {
        let (status, retry_after, answer) = cloud
            .webhook_in_invocation(request, name, now_ms() + 30_000)
            .await;
        assert_eq!(status, 401, "{name}: {answer}");
        assert_eq!(retry_after, None, "{name}");
        bodies.push((name, answer));
    }
    let first = bodies[0].1.clone();
    assert!(
        first["error"]
            .as_str()
            .unwrap()
            .contains("not authenticated"),
        "{first}"
    );
    for (name, answer) in &bodies {
        assert_eq!(
            answer, &first,
            "{name}: the same body as for an unknown connection"
        );
    }
    assert_eq!(cloud.tenant_writes(), 0);
    // The genuine delivery goes through.
    let (status, _, answer) = cloud
        .webhook_in_invocation(
            signed_request(CONNECTION, "msg_401", &event),
            "ok",
            now_ms() + 30_000,
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["counts"]["created"], 1, "{answer}");
}

on_moto_and_in_memory!(floods_of_bad_requests_cost_one_config_read_and_one_secret_read);
async fn floods_of_bad_requests_cost_one_config_read_and_one_secret_read(on: On) {
    let cloud = on.cloud().await;
    upload_second_connection(&cloud, "northwind", "m365-provisioner/northwind").await;
    let event = new_user_event("d23f0824-128b-2f33-0c5c-7fd0a6a3a450");
    let body = event.to_string().into_bytes();
    let now = now_ms() / 1000;
    let other_secret = "whsec_QWxsIHRoZSB3b3JsZCdzIGEgc3RhZ2UsIGFuZCBhbGwgdGhlIG1lbg==";
    let forged = Cloud::signed_headers(other_secret, "msg_f", now, &body);
    let reads = || cloud.deployment.config_reads();

    // Made-up connections: one read of the config index, whatever the names.
    for i in 0..20 {
        let request =
            Cloud::function_url_request("POST", &format!("/events/nope-{i}"), &forged, &body);
        assert_eq!(cloud.webhook(&request).await.0, 401);
    }
    assert_eq!(reads(), 1, "the config index, once");

    // A real connection with forged signatures and without headers: its configuration once,
    // its secret once (just read: not read again for the unmatched signature).
    let path = format!("/events/{CONNECTION}");
    for i in 0..20 {
        let headers = if i % 2 == 0 {
            forged.clone()
        } else {
            Vec::new()
        };
        let request = Cloud::function_url_request("POST", &path, &headers, &body);
        assert_eq!(cloud.webhook(&request).await.0, 401);
    }
    assert_eq!(reads(), 2, "plus contoso's configuration, once");
    let store = cloud
        .deployment
        .secret_store(m365_integration_tests::cloud::SECRET_ID);
    assert_eq!(store.reads().unwrap(), 1, "contoso's secret, once");

    // A connection whose secret cannot be read: the failure is cached too.
    for _ in 0..10 {
        let request = Cloud::function_url_request("POST", "/events/northwind", &forged, &body);
        assert_eq!(cloud.webhook(&request).await.0, 401);
    }
    assert_eq!(reads(), 3, "plus northwind's configuration, once");
    let missing = cloud.deployment.secret_store("m365-provisioner/northwind");
    assert_eq!(
        missing.reads().unwrap(),
        1,
        "one attempt at northwind's secret"
    );
    assert_eq!(store.reads().unwrap(), 1);
    assert_eq!(cloud.tenant_writes(), 0);
}

#[tokio::test]
async fn a_retry_while_the_first_attempt_runs_is_answered_409_and_the_event_is_applied_once() {
    let mut config = SandboxConfig::demo();
    config.knobs.write_latency_ms = 300;
    let cloud = Cloud::start_with(config, |_| {}).await;
    cloud.put_example_source().await;
    let event = new_user_event("d23f0824-128b-2f33-0c5c-7fd0a6a3a450");
    let first_is_running = async {
        for _ in 0..3000 {
            if !cloud
                .deployment
                .state
                .list_runs(KEY, 1)
                .await
                .unwrap()
                .is_empty()
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("the first attempt never started its run");
    };
    let deadline = now_ms() + 30_000;
    let (first, retry) = tokio::join!(
        cloud.webhook_in_invocation(
            signed_request(CONNECTION, "msg_twice", &event),
            "req-1",
            deadline
        ),
        async {
            first_is_running.await;
            cloud
                .webhook_in_invocation(
                    signed_request(CONNECTION, "msg_twice", &event),
                    "req-2",
                    deadline,
                )
                .await
        }
    );
    assert_eq!(retry.0, 409, "{}", retry.2);
    assert_eq!(retry.1.as_deref(), Some("30"));
    assert_eq!(first.0, 200, "{}", first.2);
    assert_eq!(first.2["counts"]["created"], 1, "{}", first.2);
    // Done: a later retry is a duplicate, not applied again.
    let writes = cloud.tenant_writes();
    let (status, _, answer) = cloud
        .webhook_in_invocation(
            signed_request(CONNECTION, "msg_twice", &event),
            "req-3",
            now_ms() + 30_000,
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["status"], "duplicate", "{answer}");
    assert_eq!(cloud.tenant_writes(), writes);
    assert_eq!(
        cloud
            .deployment
            .state
            .list_runs(KEY, 10)
            .await
            .unwrap()
            .len(),
        1
    );
}

#[tokio::test]
async fn a_run_stopped_at_the_invocations_deadline_answers_503_and_the_retry_finishes_it() {
    let cloud = Cloud::start().await;
    cloud.put_source(&big_source()).await;
    let users: Vec<String> = (0..300).map(|i| format!("u{i:04}")).collect();
    let event = json!({"type": "identities.changed", "data": {"users": users}});
    // The deadline is within the webhook's margin (5 s): the run does one chunk and stops.
    let (status, retry_after, answer) = cloud
        .webhook_in_invocation(
            signed_request(CONNECTION, "msg_deadline", &event),
            "req-1",
            now_ms() + 2_000,
        )
        .await;
    assert_eq!(status, 503, "{answer}");
    assert_eq!(retry_after.as_deref(), Some("30"));
    assert!(
        answer["error"].as_str().unwrap().contains("deadline"),
        "{answer}"
    );
    assert_eq!(answer["counts"]["created"], 200, "{answer}");
    let seeded = SandboxConfig::demo().seed.users.len();
    assert_eq!(cloud.sandbox.sandbox().users().len(), seeded + 200);

    // The event id was forgotten: the sender's retry applies the rest.
    let (status, _, answer) = cloud
        .webhook_in_invocation(
            signed_request(CONNECTION, "msg_deadline", &event),
            "req-2",
            now_ms() + 60_000,
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["status"], "succeeded", "{answer}");
    assert_eq!(answer["counts"]["created"], 100, "{answer}");
    assert_eq!(cloud.sandbox.sandbox().users().len(), seeded + 300);
}

#[tokio::test]
async fn a_failed_run_answers_500_with_the_request_id_only_and_its_retry_is_applied() {
    let cloud = Cloud::start().await;
    // The source object is gone: planning fails after authentication.
    cloud
        .aws()
        .s3
        .delete_object()
        .bucket(m365_integration_tests::cloud::BUCKET)
        .key(m365_integration_tests::cloud::SOURCE_KEY)
        .send()
        .await
        .unwrap();
    let event = new_user_event("d23f0824-128b-2f33-0c5c-7fd0a6a3a450");
    let (status, _, answer) = cloud
        .webhook_in_invocation(
            signed_request(CONNECTION, "msg_500", &event),
            "3f1c2a7e-req",
            now_ms() + 30_000,
        )
        .await;
    assert_eq!(status, 500, "{answer}");
    assert_eq!(
        answer,
        json!({"error": "the event could not be applied", "request_id": "3f1c2a7e-req"})
    );
    // Without a Lambda context the handler makes a request id up.
    let (status, answer) = cloud.post_event("msg_500", &event).await;
    assert_eq!(status, 500, "{answer}");
    let generated = answer["request_id"].as_str().unwrap();
    assert!(
        !generated.is_empty() && generated != "3f1c2a7e-req",
        "{answer}"
    );
    assert_eq!(answer.as_object().unwrap().len(), 2, "{answer}");

    // The id was forgotten: once the source is back, the retry is applied.
    cloud.put_example_source().await;
    let (status, answer) = cloud.post_event("msg_500", &event).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["counts"]["created"], 1, "{answer}");
}

// ---------------------------------------------------------------------------------------------
// An LDAP source
// ---------------------------------------------------------------------------------------------

/// The quick start's cloud configuration with `slapd` as its source, the rule reading the
/// directory's attribute names and managers by DN.
fn ldap_cloud_config(slapd: &m365_integration_tests::ldap::Slapd) -> String {
    let config = m365_integration_tests::cloud::quickstart_cloud_config();
    let source_at = config.find("[source]").unwrap();
    let secrets_at = config.find("[secrets]").unwrap();
    let ldap = format!(
        "{}{}{}",
        &config[..source_at],
        slapd.source_toml(""),
        &config[secrets_at..]
    );
    let rule_at = ldap.find("[rule]").unwrap();
    format!(
        "{}{}",
        &ldap[..rule_at],
        ldap[rule_at..]
            .replace("{ attribute = \"displayName\" }", "{ attribute = \"cn\" }")
            .replace(
                "{ attribute = \"department\" }",
                "{ attribute = \"departmentNumber\" }"
            )
            .replace("reference = \"id\"", "reference = \"dn\"")
    )
}

/// The connection secret with the directory's bind password.
async fn put_ldap_secret(cloud: &Cloud) {
    let mut secret: Value = serde_json::from_str(&secret_json(demo::CLIENT_SECRET, &[])).unwrap();
    secret["extra"] = json!({"ldap_bind_password": m365_integration_tests::ldap::ADMIN_PASSWORD});
    cloud.put_secret(&secret.to_string()).await;
}

on_moto_and_in_memory!(scheduled_sync_of_an_ldap_directory_binds_with_the_secrets_password);
async fn scheduled_sync_of_an_ldap_directory_binds_with_the_secrets_password(on: On) {
    use m365_integration_tests::ldap::{Slapd, directory_ldif};
    let slapd = Slapd::start(&directory_ldif());
    let cloud = on.cloud().await;
    put_ldap_secret(&cloud).await;
    let ldap = ldap_cloud_config(&slapd);
    cloud.upload_config(&ldap).await;

    let answer = cloud
        .scheduled(scheduler_event(), "req-1", HOUR)
        .await
        .unwrap();
    assert_eq!(answer.status, "succeeded", "{answer:?}");
    assert_eq!(answer.counts.created, 151, "{answer:?}");
    assert_eq!(answer.counts.linked, 1, "{answer:?}");
    assert_eq!(answer.counts.managers, 147, "{answer:?}");
    let state = cloud.deployment.state.as_ref();
    assert_eq!(
        state
            .count_links(KEY, m365_core::ObjectKind::User)
            .await
            .unwrap(),
        152
    );
    // The content synchronization cookie is the checkpoint's changes cursor, in the state store.
    let checkpoint = state.get_checkpoint(KEY).await.unwrap().unwrap();
    let cursor = checkpoint.changes_cursor.expect("a changes cursor");
    assert!(cursor.0["sync"].is_object(), "{cursor:?}");
    let again = cloud
        .scheduled(scheduler_event(), "req-2", HOUR)
        .await
        .unwrap();
    assert_eq!(again.counts.graph_writes, 0, "{again:?}");
    // Only the drift check (docs/design.md#drift): one delta page of users, one of groups,
    // reading back the first load's own writes, none of them drift.
    assert_eq!(again.counts.graph_requests, 2, "{again:?}");
    assert_eq!(again.counts.drift, 0, "{again:?}");
    assert_eq!(
        again.message.as_deref(),
        Some("no source changes since the last run"),
        "{again:?}"
    );
}

#[tokio::test]
async fn an_ldap_first_load_bigger_than_one_invocation_continues_then_only_changes_are_read() {
    use m365_integration_tests::ldap::{Slapd, generated_dn, generated_ldif};
    let slapd = Slapd::start(&generated_ldif(400, 4));
    let cloud = On::Moto.cloud().await;
    put_ldap_secret(&cloud).await;
    cloud.upload_config(&ldap_cloud_config(&slapd)).await;

    let answers = cloud
        .state_machine_execution(Duration::from_millis(300), 100)
        .await;
    let hops = answers.len();
    println!("400 directory entries: {hops} invocations");
    assert!(hops >= 2, "a first load over several invocations: {hops}");
    for answer in &answers[..hops - 1] {
        assert_eq!(answer.status, "checkpointed", "{answer:?}");
    }
    let last = answers.last().unwrap();
    assert_eq!(last.status, "succeeded", "{last:?}");
    let created: u64 = answers.iter().map(|a| a.counts.created).sum();
    assert_eq!(created, 400, "every person created once");
    let state = cloud.deployment.state.as_ref();
    assert_eq!(
        state
            .count_links(KEY, m365_core::ObjectKind::User)
            .await
            .unwrap(),
        400
    );
    assert!(
        state
            .get_checkpoint(KEY)
            .await
            .unwrap()
            .unwrap()
            .changes_cursor
            .is_some(),
        "the finished first load leaves the changes cursor"
    );

    slapd.modify(&format!(
        "dn: {}\nchangetype: modify\nreplace: title\ntitle: Lead Analyst\n",
        generated_dn(200)
    ));
    let answers = cloud.state_machine_execution(HOUR, 1).await;
    assert_eq!(answers[0].status, "succeeded", "{:?}", answers[0]);
    assert_eq!(answers[0].counts.updated, 1, "{:?}", answers[0]);
    assert_eq!(answers[0].counts.graph_writes, 1, "{:?}", answers[0]);
}
