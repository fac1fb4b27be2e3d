// Integration tests: helpers panic on broken expectations.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use common::*;
use m365_sandbox::{FaultRule, FaultStatus, Knobs, Sandbox, SandboxConfig, demo};
use serde_json::{Value, json};

fn bind(id: &str) -> String {
    format!("https://graph.microsoft.com/v1.0/directoryObjects/{id}")
}

#[tokio::test]
async fn members_add_dup_remove_and_bind_rules() {
    let t = start().await;
    let g = demo::ACCOUNTING_ID;
    let u1 = t.create_user("m1", json!({})).await;
    let r = t
        .post(
            &format!("/groups/{g}/members/$ref"),
            json!({"@odata.id": bind(&u1)}),
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.body);
    let r = t
        .post(
            &format!("/groups/{g}/members/$ref"),
            json!({"@odata.id": bind(&u1)}),
        )
        .await;
    assert_error(
        &r,
        400,
        "Request_BadRequest",
        "One or more added object references already exist for the following modified properties: 'members'.",
    );
    let r = t
        .post(
            &format!("/groups/{g}/members/$ref"),
            json!({"@odata.id": bind("00000000-0000-0000-0000-0000000000aa")}),
        )
        .await;
    assert_eq!(r.status, 404);
    assert_eq!(
        t.delete(&format!("/groups/{g}/members/{u1}/$ref"))
            .await
            .status,
        204
    );
    let r = t.delete(&format!("/groups/{g}/members/{u1}/$ref")).await;
    assert_error(
        &r,
        404,
        "Request_ResourceNotFound",
        "One or more removed object references do not exist for the following modified properties: 'members'.",
    );

    // 21 binds → 400, nothing added.
    let mut ids = Vec::new();
    for i in 0..21 {
        ids.push(t.rs.sandbox().seed_user(json!({"displayName": format!("B{i}"), "userPrincipalName": format!("b{i}@example.com"), "mailNickname": format!("b{i}")})));
    }
    let binds: Vec<String> = ids.iter().map(|i| bind(i)).collect();
    let r = t
        .patch(
            &format!("/groups/{g}"),
            json!({"members@odata.bind": binds}),
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.body);
    assert_eq!(
        t.rs.sandbox().group_members(g),
        vec![demo::BJENSEN_ID.to_owned()]
    );
    // All-or-nothing: one existing member fails the whole chunk.
    let mut chunk: Vec<String> = ids[..5].iter().map(|i| bind(i)).collect();
    chunk.push(bind(demo::BJENSEN_ID));
    let r = t
        .patch(
            &format!("/groups/{g}"),
            json!({"members@odata.bind": chunk}),
        )
        .await;
    assert_error(
        &r,
        400,
        "Request_BadRequest",
        "One or more added object references already exist for the following modified properties: 'members'.",
    );
    assert_eq!(t.rs.sandbox().group_members(g).len(), 1);
    let chunk: Vec<String> = ids[..20].iter().map(|i| bind(i)).collect();
    assert_eq!(
        t.patch(
            &format!("/groups/{g}"),
            json!({"members@odata.bind": chunk})
        )
        .await
        .status,
        204
    );
    assert_eq!(t.rs.sandbox().group_members(g).len(), 21);
    let r = t.get(&format!("/groups/{g}/members?$top=10")).await;
    assert_eq!(r.body["value"].as_array().unwrap().len(), 10);
    assert!(r.body["@odata.nextLink"].is_string());
}

#[tokio::test]
async fn groups_create_filter_and_security_group_not_restorable() {
    let t = start().await;
    let r = t.post("/groups", json!({"displayName": "Sales", "mailEnabled": false, "mailNickname": "sales", "securityEnabled": true})).await;
    assert_eq!(r.status, 201, "{}", r.body);
    let sec = r.body["id"].as_str().unwrap().to_owned();
    let r = t.post("/groups", json!({"displayName": "Team", "mailEnabled": true, "mailNickname": "team", "securityEnabled": false, "groupTypes": ["Unified"]})).await;
    assert_eq!(r.status, 201, "{}", r.body);
    let m365 = r.body["id"].as_str().unwrap().to_owned();
    let r = t.post("/groups", json!({"displayName": "Team2", "mailEnabled": true, "mailNickname": "TEAM", "securityEnabled": false, "groupTypes": ["Unified"]})).await;
    assert_error(
        &r,
        400,
        "Request_BadRequest",
        "Another object with the same value for property mailNickname already exists.",
    );
    let r = t
        .post(
            "/groups",
            json!({"displayName": "x", "mailEnabled": false, "securityEnabled": true}),
        )
        .await;
    assert_error(
        &r,
        400,
        "Request_BadRequest",
        "Property mailNickname value is required but is empty or missing.",
    );
    let r = t
        .get("/groups?$filter=displayName eq 'Sales'&$select=id,displayName")
        .await;
    assert_eq!(r.body["value"][0]["id"], sec.as_str());
    // M365 groups hold users only.
    let r = t
        .post(
            &format!("/groups/{m365}/members/$ref"),
            json!({"@odata.id": bind(&sec)}),
        )
        .await;
    assert_eq!(r.status, 400);

    assert_eq!(t.delete(&format!("/groups/{sec}")).await.status, 204);
    let r = t
        .post(&format!("/directory/deletedItems/{sec}/restore"), json!({}))
        .await;
    assert_eq!(r.status, 404);
    assert_eq!(t.delete(&format!("/groups/{m365}")).await.status, 204);
    let r = t
        .post(
            &format!("/directory/deletedItems/{m365}/restore"),
            json!({}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
}

async fn batch(t: &T, requests: Value) -> Resp {
    t.post("/$batch", json!({ "requests": requests })).await
}

#[tokio::test]
async fn batch_rules() {
    let t = start().await;
    let many: Vec<Value> = (0..21)
        .map(|i| json!({"id": i.to_string(), "method": "GET", "url": "/organization"}))
        .collect();
    let r = batch(&t, json!(many)).await;
    assert_error(
        &r,
        400,
        "MaximumValueExceeded",
        "Number of batch request steps exceeds the maximum value of 20.",
    );
    let r = batch(&t, json!([{"id": "a", "method": "GET", "url": "/users"}, {"id": "A", "method": "GET", "url": "/users"}])).await;
    assert_error(
        &r,
        400,
        "BadRequest",
        "Request Id A has to be unique in a batch.",
    );
    let r = batch(
        &t,
        json!([{"id": "1", "method": "POST", "url": "/users", "body": user_body("nohdr")}]),
    )
    .await;
    assert_error(
        &r,
        400,
        "BadRequest",
        "Write request id : 1 does not contain Content-Type header or body.",
    );

    let mut bad = user_body("bad");
    bad.as_object_mut().unwrap().remove("mailNickname");
    let r = batch(&t, json!([
        {"id": "1", "method": "POST", "url": "/users", "headers": {"Content-Type": "application/json"}, "body": bad},
        {"id": "2", "dependsOn": ["1"], "method": "GET", "url": "/users"},
        {"id": "3", "method": "POST", "url": "/users", "headers": {"Content-Type": "application/json"}, "body": user_body("good")},
    ])).await;
    assert_eq!(r.status, 200);
    let by_id = |id: &str| {
        r.body["responses"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["id"] == id)
            .unwrap()
            .clone()
    };
    assert_eq!(by_id("1")["status"], 400);
    assert_eq!(by_id("1")["body"]["error"]["code"], "Request_BadRequest");
    assert_eq!(by_id("2")["status"], 424);
    assert_eq!(by_id("3")["status"], 201);
    assert!(
        t.rs.sandbox()
            .users()
            .iter()
            .any(|u| u["mailNickname"] == "good")
    );

    // Per-item 429 from a scripted fault; the other items pass.
    t.rs.sandbox().add_fault(FaultRule {
        count: 1,
        retry_after: Some(2.5),
        ..FaultRule::new("GET", "/domains", FaultStatus::Status(429))
    });
    let r = batch(
        &t,
        json!([
            {"id": "1", "method": "GET", "url": "/organization"},
            {"id": "2", "method": "GET", "url": "/domains"},
        ]),
    )
    .await;
    let items = r.body["responses"].as_array().unwrap();
    let two = items.iter().find(|x| x["id"] == "2").unwrap();
    assert_eq!(two["status"], 429);
    assert_eq!(two["headers"]["Retry-After"], "2.5");
    assert_eq!(two["body"]["error"]["code"], "TooManyRequests");
    assert_eq!(
        items.iter().find(|x| x["id"] == "1").unwrap()["status"],
        200
    );
    let stats = t.rs.sandbox().stats();
    assert_eq!(stats.batch_items, 4);
    assert!(stats.throttled >= 1);
}

#[tokio::test]
async fn replication_lag_hides_new_objects() {
    let mut cfg = SandboxConfig::demo();
    cfg.knobs.replication_lag_ms = 700;
    let t = start_with(cfg).await;
    let r = t.post("/users", user_body("laggy")).await;
    assert_eq!(r.status, 201);
    let id = r.body["id"].as_str().unwrap().to_owned();
    assert_eq!(t.get(&format!("/users/{id}")).await.status, 404);
    let f = t.get("/users?$filter=mailNickname eq 'laggy'").await;
    assert_eq!(f.body["value"].as_array().unwrap().len(), 0);
    let r = t
        .post(
            &format!("/groups/{}/members/$ref", demo::ACCOUNTING_ID),
            json!({"@odata.id": bind(&id)}),
        )
        .await;
    assert_error(
        &r,
        400,
        "Request_BadRequest",
        "The source resource object or one of the objects being referenced do not exist.",
    );
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(t.get(&format!("/users/{id}")).await.status, 200);
    let r = t
        .post(
            &format!("/groups/{}/members/$ref", demo::ACCOUNTING_ID),
            json!({"@odata.id": bind(&id)}),
        )
        .await;
    assert_eq!(r.status, 204);
}

#[tokio::test]
async fn scripted_fault_applied_write_and_throttle_quota() {
    let t = start().await;
    t.rs.sandbox().add_fault(FaultRule {
        applied: true,
        ..FaultRule::new("POST", "/users", FaultStatus::Status(503))
    });
    let r = t.post("/users", user_body("ghost")).await;
    assert_eq!(r.status, 503);
    assert_eq!(r.body["error"]["code"], "serviceNotAvailable");
    // The write happened anyway (docs/graph-behaviour.md#uncertain-creates).
    assert!(
        t.rs.sandbox()
            .users()
            .iter()
            .any(|u| u["mailNickname"] == "ghost")
    );
    assert_eq!(t.post("/users", user_body("ghost")).await.status, 400);

    let mut knobs: Knobs = t.rs.sandbox().knobs();
    knobs.throttle.app_tenant_write_quota = 2;
    t.rs.sandbox().set_knobs(knobs);
    let mut saw_429 = None;
    for i in 0..5 {
        let r = t
            .patch(
                &format!("/users/{}", demo::BJENSEN_ID),
                json!({"jobTitle": format!("T{i}")}),
            )
            .await;
        if r.status == 429 {
            saw_429 = Some(r);
            break;
        }
    }
    let r = saw_429.expect("a 429 beyond the write quota");
    assert!(
        r.headers["retry-after"]
            .to_str()
            .unwrap()
            .parse::<f64>()
            .unwrap()
            > 0.0
    );
    assert!(r.headers.contains_key("x-ms-throttle-scope"));
    assert_eq!(r.body["error"]["code"], "TooManyRequests");
    assert_eq!(r.body["error"]["innerError"]["code"], "429");
}

#[tokio::test]
async fn writes_are_counted_per_second_apart_from_the_request_log() {
    let t = start().await;
    let mut knobs: Knobs = t.rs.sandbox().knobs();
    knobs.throttle.app_tenant_write_quota = 2;
    t.rs.sandbox().set_knobs(knobs);
    let mut statuses = Vec::new();
    for i in 0..4 {
        let r = t
            .patch(
                &format!("/users/{}", demo::BJENSEN_ID),
                json!({"jobTitle": format!("T{i}")}),
            )
            .await;
        statuses.push(r.status);
    }
    t.get("/users").await;
    let refused = statuses.iter().filter(|s| **s == 429).count() as u64;
    assert!(refused >= 1, "{statuses:?}");
    let stats = t.rs.sandbox().stats();
    let (admitted, throttled) = stats
        .writes_per_second
        .values()
        .fold((0, 0), |(a, r), c| (a + c.admitted, r + c.throttled));
    assert_eq!((admitted, throttled), (4 - refused, refused));
    assert_eq!(admitted + throttled, stats.writes);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    assert!(
        stats
            .writes_per_second
            .keys()
            .all(|s| (now - 60..=now).contains(s)),
        "{stats:?}"
    );
    t.rs.sandbox().reset();
    assert!(t.rs.sandbox().stats().writes_per_second.is_empty());
}

#[tokio::test]
async fn state_file_round_trip_and_admin_api() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tenant.json");
    {
        let rs = Sandbox::demo()
            .with_state_file(&path)
            .unwrap()
            .start()
            .await
            .unwrap();
        let http = client();
        let token = token_for(&http, rs.base_url(), demo::CLIENT_ID, demo::CLIENT_SECRET).await;
        let r = http
            .post(format!("{}/v1.0/users", rs.base_url()))
            .bearer_auth(&token)
            .json(&user_body("persisted"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
        let stats: Value = http
            .get(format!("{}/_sandbox/stats", rs.base_url()))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(stats["writes"], 1);
        let log: Value = http
            .get(format!("{}/_sandbox/requests", rs.base_url()))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(log[0]["status"], 201);
        assert_eq!(log[0]["app_id"], demo::CLIENT_ID);
        rs.stop().await;
    }
    let sb = Sandbox::demo().with_state_file(&path).unwrap();
    assert!(sb.users().iter().any(|u| u["mailNickname"] == "persisted"));
    sb.reset();
    assert!(!sb.users().iter().any(|u| u["mailNickname"] == "persisted"));
    let again = Sandbox::demo().with_state_file(&path).unwrap();
    assert!(
        !again
            .users()
            .iter()
            .any(|u| u["mailNickname"] == "persisted")
    );
}

#[tokio::test]
async fn admin_knobs_faults_and_seed_over_http() {
    let t = start().await;
    let base = t.rs.base_url().to_owned();
    let mut knobs: Value = t
        .http
        .get(format!("{base}/_sandbox/knobs"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    knobs["read_latency_ms"] = json!(5);
    let r = t
        .http
        .put(format!("{base}/_sandbox/knobs"))
        .json(&knobs)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(t.rs.sandbox().knobs().read_latency_ms, 5);
    let r = t
        .http
        .put(format!("{base}/_sandbox/knobs"))
        .json(&json!({"nope": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let r = t
        .http
        .post(format!("{base}/_sandbox/faults"))
        .json(&json!({"method": "GET", "path_prefix": "/v1.0/organization", "status": "timeout", "count": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let mut k = t.rs.sandbox().knobs();
    k.faults.timeout_ms = 300;
    t.rs.sandbox().set_knobs(k);
    let started = std::time::Instant::now();
    assert_eq!(t.get("/organization").await.status, 200);
    assert!(started.elapsed() >= Duration::from_millis(300));
    let r = t
        .http
        .post(format!("{base}/_sandbox/seed"))
        .json(&json!({"users": [{"displayName": "Seeded", "userPrincipalName": "seeded@example.com"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    assert_eq!(t.get("/users/seeded@example.com").await.status, 200);
    let r = t
        .http
        .post(format!("{base}/_sandbox/reset"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(t.get("/users/seeded@example.com").await.status, 404);
    assert_eq!(
        t.rs.sandbox().knobs().read_latency_ms,
        5,
        "reset keeps the knobs"
    );
}
