//! The Lambda handlers over a PingOne source (the PingOne stand-in): PingOne subscription
//! batches posted to `POST /pingone/{connection}` (static-header authentication, deduplication,
//! records set aside without refusing the batch), and the scheduled sync continuing a large
//! first load across invocations with its state in DynamoDB (moto), then reading only the
//! audit activities.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a broken expectation should fail loudly"
)]

use std::sync::Arc;
use std::time::Duration;

use m365_integration_tests::cloud::{
    CONNECTION, Cloud, On, SECRET_ID, WEBHOOK_SECRET, now_ms, scheduler_event, secret_json,
};
use m365_integration_tests::pingone::seed_with_enabled_managers;
use m365_pingone_sandbox::{PingOneSandbox, Seed, Subscription, demo};
use m365_sandbox::demo as tenant;
use serde_json::{Value, json};

/// The state key of the connection's rule.
const KEY: &str = "contoso/staff";
const HOUR: Duration = Duration::from_secs(3600);
/// The value PingOne's subscription sends in its `Authorization` header.
const HEADER_VALUE: &str = "Basic cGluZ29uZTpzM2NyZXQtaGVhZGVyLXZhbHVl";

const RULE: &str = r#"
[rule]
name = "staff"
match_attribute = "userPrincipalName"

[rule.preferences]
remove_action = "disable"

[rule.breaker]
max_count = 1000
max_percent = 100.0

[rule.groups]
enabled = true
kind = "security"

[rule.mapping.attributes]
userPrincipalName = "{{ email | lower }}"
displayName = "{{ name.given }} {{ name.family }}"
jobTitle = { attribute = "title" }

[rule.mapping.password]
source = "generate"

[rule.mapping]
manager = { attribute = "managerId" }
"#;

/// The cloud configuration of a connection reading `pingone`.
fn pingone_config(pingone: &PingOneSandbox) -> String {
    format!(
        "[connection]\nname = \"{CONNECTION}\"\n\n\
         [source]\ntype = \"pingone\"\nenvironment_id = \"{}\"\nclient_id = \"{}\"\n\
         auth_url = \"{url}\"\napi_url = \"{url}\"\n\n\
         [secrets]\ntype = \"aws-secrets-manager\"\nsecret_id = \"{SECRET_ID}\"\n\n{RULE}",
        pingone.environment_id(),
        demo::BASIC_CLIENT_ID,
        url = pingone.url(),
    )
}

/// The connection's secret: the tenant's credentials, the worker app's secret and the header
/// value PingOne sends.
async fn put_pingone_secret(cloud: &Cloud) {
    let mut secret: Value =
        serde_json::from_str(&secret_json(tenant::CLIENT_SECRET, &[WEBHOOK_SECRET])).unwrap();
    secret["extra"] = json!({
        "pingone_client_secret": demo::BASIC_CLIENT_SECRET,
        "pingone_webhook_header": HEADER_VALUE,
    });
    cloud.put_secret(&secret.to_string()).await;
}

async fn pingone_cloud(on: On, seed: Seed) -> (Cloud, PingOneSandbox) {
    let pingone = PingOneSandbox::start(seed).await.unwrap();
    let cloud = on.cloud().await;
    put_pingone_secret(&cloud).await;
    cloud.upload_config(&pingone_config(&pingone)).await;
    (cloud, pingone)
}

/// Posts `batch` to `/pingone/contoso` with `Authorization: header`; status and JSON answer.
async fn post_batch(cloud: &Cloud, header: &str, batch: &Value) -> (u16, Value) {
    let body = batch.to_string().into_bytes();
    let headers = vec![
        ("authorization", header.to_owned()),
        ("content-type", "application/json".to_owned()),
    ];
    cloud
        .webhook(&Cloud::function_url_request(
            "POST",
            &format!("/pingone/{CONNECTION}"),
            &headers,
            &body,
        ))
        .await
}

fn title(cloud: &Cloud, username: &str) -> Value {
    cloud.tenant_picture()["users"][format!("{username}@example.com")]["jobTitle"].clone()
}

/// The stand-in's activities recorded since `from` (an index into its log).
fn activities_since(pingone: &PingOneSandbox, from: usize) -> Vec<Value> {
    pingone.activities().into_iter().skip(from).collect()
}

#[tokio::test]
async fn webhook_batches_apply_once_set_bad_records_aside_and_refuse_a_wrong_header() {
    let (cloud, pingone) = pingone_cloud(On::Memory, Seed::demo()).await;
    let first = cloud
        .scheduled(scheduler_event(), "req-1", HOUR)
        .await
        .unwrap();
    assert_eq!(first.status, "succeeded", "{first:?}");
    assert_eq!(first.counts.created, 4, "{first:?}");

    // Three users change in PingOne; its subscription posts the three USER.UPDATED records.
    let log = pingone.activities().len();
    for (id, new_title) in [
        (demo::ALICE_ID, "Director"),
        (demo::BOB_ID, "Senior Engineer"),
        (demo::CAROL_ID, "Architect"),
    ] {
        pingone
            .update_user(id, |u| u.title = Some(new_title.to_owned()))
            .unwrap();
    }
    let batch = Value::Array(activities_since(&pingone, log));
    assert_eq!(batch.as_array().unwrap().len(), 3);
    let (status, answer) = post_batch(&cloud, HEADER_VALUE, &batch).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["applied"], 3, "{answer}");
    assert_eq!(answer["counts"]["updated"], 3, "{answer}");
    assert_eq!(title(&cloud, "alice"), "Director");
    assert_eq!(title(&cloud, "bob"), "Senior Engineer");
    assert_eq!(title(&cloud, "carol"), "Architect");

    // PingOne sends the same batch again (it got no 200 in time): applied once.
    pingone
        .update_user(demo::ALICE_ID, |u| {
            u.title = Some("Not from a webhook".to_owned())
        })
        .unwrap();
    let writes = cloud.tenant_writes();
    let (status, answer) = post_batch(&cloud, HEADER_VALUE, &batch).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["status"], "duplicate", "{answer}");
    assert_eq!(answer["duplicates"], 3, "{answer}");
    assert_eq!(cloud.tenant_writes(), writes);
    assert_eq!(title(&cloud, "alice"), "Director");

    // A batch with a malformed record: 200, the good record applied, the bad one listed.
    let log = pingone.activities().len();
    pingone
        .update_user(demo::DAVE_ID, |u| u.title = Some("Consultant".to_owned()))
        .unwrap();
    let mut records = activities_since(&pingone, log);
    records.insert(
        0,
        json!({"action": {"type": "USER.UPDATED"}, "resources": "garbled"}),
    );
    let (status, answer) = post_batch(&cloud, HEADER_VALUE, &Value::Array(records)).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["applied"], 1, "{answer}");
    assert_eq!(answer["skipped"][0]["index"], 0, "{answer}");
    assert_eq!(title(&cloud, "dave"), "Consultant");

    // A wrong header: 401, nothing applied, nothing remembered.
    let log = pingone.activities().len();
    pingone
        .update_user(demo::CAROL_ID, |u| u.title = Some("Principal".to_owned()))
        .unwrap();
    let batch = Value::Array(activities_since(&pingone, log));
    let writes = cloud.tenant_writes();
    for header in [
        "Basic d3Jvbmc6aGVhZGVy",
        "",
        &HEADER_VALUE[..HEADER_VALUE.len() - 1],
    ] {
        let (status, answer) = post_batch(&cloud, header, &batch).await;
        assert_eq!(status, 401, "{header:?}: {answer}");
    }
    assert_eq!(cloud.tenant_writes(), writes);
    assert_eq!(title(&cloud, "carol"), "Architect");
    // The same batch with the right header is new, not a duplicate.
    let (status, answer) = post_batch(&cloud, HEADER_VALUE, &batch).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["applied"], 1, "{answer}");
    assert_eq!(title(&cloud, "carol"), "Principal");
}

#[tokio::test]
async fn a_user_deleted_in_pingone_is_deprovisioned_by_the_webhook_and_a_connection_of_another_source_refuses_batches()
 {
    let (cloud, pingone) = pingone_cloud(On::Memory, Seed::demo()).await;
    cloud
        .scheduled(scheduler_event(), "req-1", HOUR)
        .await
        .unwrap();
    let log = pingone.activities().len();
    pingone.delete_user(demo::BOB_ID).unwrap();
    let batch = Value::Array(activities_since(&pingone, log));
    let (status, answer) = post_batch(&cloud, HEADER_VALUE, &batch).await;
    assert_eq!(status, 200, "{answer}");
    let bob = &cloud.tenant_picture()["users"]["bob@example.com"];
    assert_eq!(bob["accountEnabled"], false, "{bob}");

    // A connection that reads a file, whose secret holds the same header value: PingOne
    // batches to it get the same 401 as a wrong header.
    let files = m365_integration_tests::cloud::quickstart_cloud_config()
        .replace(&format!("name = \"{CONNECTION}\""), "name = \"files\"");
    cloud.upload_config_of("files", &files).await;
    let body = batch.to_string().into_bytes();
    let request = Cloud::function_url_request(
        "POST",
        "/pingone/files",
        &[("authorization", HEADER_VALUE.to_owned())],
        &body,
    );
    let (status, answer) = cloud.webhook(&request).await;
    assert_eq!(status, 401, "{answer}");
    let (status, answer) = post_batch(&cloud, "Basic d3Jvbmc6aGVhZGVy", &batch).await;
    assert_eq!(status, 401, "{answer}");
}

#[tokio::test]
async fn scheduled_sync_over_pingone_continues_a_large_first_load_in_dynamodb_then_reads_activities()
 {
    let seed = seed_with_enabled_managers(500);
    let enabled = seed.users.iter().filter(|u| u.enabled).count() as u64;
    let victim = seed.users.iter().find(|u| u.enabled).unwrap().clone();
    let (cloud, pingone) = pingone_cloud(On::Moto, seed).await;

    let answers = cloud
        .state_machine_execution(Duration::from_millis(300), 200)
        .await;
    let hops = answers.len();
    println!("500 PingOne users: {hops} invocations");
    assert!(hops >= 2, "a first load over several invocations: {hops}");
    let last = answers.last().unwrap();
    assert_eq!(last.status, "succeeded", "{last:?}");
    let created: u64 = answers.iter().map(|a| a.counts.created).sum();
    assert_eq!(created, enabled, "every enabled user created once");
    let state = cloud.deployment.state.as_ref();
    let checkpoint = state.get_checkpoint(KEY).await.unwrap().unwrap();
    let cursor = checkpoint.changes_cursor.expect("a changes cursor");
    assert!(cursor.0["activities"]["since"].is_string(), "{cursor:?}");

    // Nothing changed: one page of activities; the only Graph requests are the drift check's
    // (docs/design.md#drift), one delta page per collection.
    let quiet = cloud.state_machine_execution(HOUR, 1).await;
    assert_eq!(quiet[0].counts.graph_requests, 2, "{:?}", quiet[0]);
    assert_eq!(quiet[0].counts.drift, 0, "{:?}", quiet[0]);

    // A user deleted in PingOne while no webhook arrived: the activities cursor finds it.
    pingone.delete_user(&victim.id).unwrap();
    let answers = cloud.state_machine_execution(HOUR, 1).await;
    assert_eq!(answers[0].status, "succeeded", "{:?}", answers[0]);
    assert_eq!(answers[0].counts.deprovisioned, 1, "{:?}", answers[0]);
    let user = &cloud.tenant_picture()["users"][victim.email.to_lowercase()];
    assert_eq!(user["accountEnabled"], false, "{user}");
}

/// Serves the webhook function on 127.0.0.1 (a Function URL stands in front of it in AWS); its
/// base URL. The server stops when the test's runtime ends.
async fn serve_webhook(cloud: Arc<Cloud>) -> String {
    async fn bridge(
        axum::extract::State(cloud): axum::extract::State<Arc<Cloud>>,
        request: axum::extract::Request,
    ) -> axum::response::Response {
        let (parts, body) = request.into_parts();
        let bytes = axum::body::to_bytes(body, 8 << 20).await.unwrap();
        let request =
            lambda_http::Request::from_parts(parts, lambda_http::Body::from(bytes.to_vec()));
        let response = m365_runtime::webhook::handle(&cloud.deployment, request).await;
        let (parts, body) = response.into_parts();
        axum::response::Response::from_parts(parts, axum::body::Body::from(body.to_vec()))
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let app = axum::Router::new().fallback(bridge).with_state(cloud);
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

#[tokio::test]
async fn a_subscription_delivers_its_batches_over_http_to_the_webhook() {
    let (cloud, pingone) = pingone_cloud(On::Memory, Seed::demo()).await;
    cloud
        .scheduled(scheduler_event(), "req-1", HOUR)
        .await
        .unwrap();
    let cloud = Arc::new(cloud);
    let url = format!(
        "{}/pingone/{CONNECTION}",
        serve_webhook(cloud.clone()).await
    );
    pingone
        .subscribe(Subscription {
            url,
            headers: vec![("Authorization".to_owned(), HEADER_VALUE.to_owned())],
            included_action_types: [
                "USER.CREATED",
                "USER.UPDATED",
                "USER.DELETED",
                "MEMBER_OF_GROUP.CREATED",
                "MEMBER_OF_GROUP.DELETED",
            ]
            .iter()
            .map(|t| (*t).to_owned())
            .collect(),
        })
        .unwrap();
    pingone
        .update_user(demo::BOB_ID, |u| {
            u.title = Some("Staff Engineer".to_owned())
        })
        .unwrap();
    pingone
        .add_member(demo::PLATFORM_ID, demo::ALICE_ID)
        .unwrap();
    pingone.delete_user(demo::CAROL_ID).unwrap();
    assert_eq!(pingone.pending_deliveries(), 3);
    assert_eq!(pingone.deliver().await.unwrap(), vec![200]);
    assert_eq!(pingone.pending_deliveries(), 0);
    let tenant = cloud.tenant_picture();
    assert_eq!(
        tenant["users"]["bob@example.com"]["jobTitle"],
        "Staff Engineer"
    );
    assert_eq!(
        tenant["users"]["carol@example.com"]["accountEnabled"],
        false
    );
    let platform = tenant["groups"]["Platform"].to_string();
    assert!(platform.contains("alice@example.com"), "{platform}");
}

#[tokio::test]
async fn a_batch_larger_than_one_invocation_answers_200_and_the_scheduled_sync_finishes_it() {
    let (cloud, pingone) = pingone_cloud(On::Memory, seed_with_enabled_managers(400)).await;
    let first = cloud.state_machine_execution(HOUR, 1).await.pop().unwrap();
    assert_eq!(first.status, "succeeded", "{first:?}");
    let log = pingone.activities().len();
    let changed: Vec<String> = Seed::generated(400)
        .users
        .iter()
        .filter(|u| u.enabled)
        .take(300)
        .map(|u| u.id.clone())
        .collect();
    for id in &changed {
        pingone
            .update_user(id, |u| u.title = Some("Reorganised".to_owned()))
            .unwrap();
    }
    let batch = Value::Array(activities_since(&pingone, log));
    let body = batch.to_string().into_bytes();
    let request = Cloud::function_url_request(
        "POST",
        &format!("/pingone/{CONNECTION}"),
        &[("authorization", HEADER_VALUE.to_owned())],
        &body,
    );
    // The deadline is within the webhook's margin (5 s): the run does one chunk and stops.
    let (status, _, answer) = cloud
        .webhook_in_invocation(request, "req-2", now_ms() + 2_000)
        .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["status"], "checkpointed", "{answer}");
    assert_eq!(answer["applied"], 300, "{answer}");
    assert_eq!(answer["counts"]["updated"], 200, "{answer}");
    assert!(
        answer["message"]
            .as_str()
            .unwrap()
            .contains("scheduled sync"),
        "{answer}"
    );

    // The next scheduled run reads the same records through the activities cursor and applies
    // the rest; the batch sent again is a duplicate.
    let next = cloud.state_machine_execution(HOUR, 1).await.pop().unwrap();
    assert_eq!(next.status, "succeeded", "{next:?}");
    assert_eq!(next.counts.updated, 100, "{next:?}");
    let (status, answer) = post_batch(&cloud, HEADER_VALUE, &batch).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["status"], "duplicate", "{answer}");
}
