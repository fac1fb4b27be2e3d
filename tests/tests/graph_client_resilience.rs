//! Throttling (429 + Retry-After honoured, every write lands exactly once), transient faults,
//! no duplicates after an uncertain create, client-side pacing against the sandbox quota.

use std::time::{Duration, Instant};

use m365_graph::{GraphError, NewGroup, PacingConfig};
use m365_integration_tests::graph_client::*;
use m365_sandbox::{FaultRule, FaultStatus, demo};

#[tokio::test]
async fn throttling_is_honoured_and_every_write_lands_once() {
    let sb = start_demo().await;
    let mut knobs = sb.sandbox().knobs();
    knobs.throttle.app_tenant_write_quota = 15;
    knobs.throttle.app_tenant_write_window_secs = 1.0;
    sb.sandbox().set_knobs(knobs);
    // Client pacing at Graph's real quota (3,000 / 150 s), far above the sandbox's scaled one:
    // the 429s and the adaptive slow-down must still get every write through.
    let mut s = settings(&sb);
    s.pacing = PacingConfig::default();
    let c = client_with(s, demo_credentials());
    let mut tasks = Vec::new();
    for i in 0..40 {
        let c = c.clone();
        tasks.push(tokio::spawn(async move {
            c.create_user(&new_user(&format!("thr{i}"))).await
        }));
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    for i in 0..40 {
        assert_eq!(users_with_upn(&sb, &format!("thr{i}@example.com")).len(), 1);
    }
    let s = c.stats();
    assert!(s.throttled > 0, "the quota was hit: {s:?}");
    assert_eq!(sb.sandbox().stats().throttled, s.throttled);
    assert!(c.pacing_factor() < 1.0, "the pacer slowed down after 429s");
}

#[tokio::test]
async fn fractional_retry_after_is_waited() {
    let sb = start_demo().await;
    sb.sandbox().add_fault(FaultRule {
        count: 2,
        retry_after: Some(0.35),
        ..FaultRule::new("GET", "/organization", FaultStatus::Status(429))
    });
    let c = client(&sb);
    let start = Instant::now();
    let org = c.organization().await.unwrap();
    assert_eq!(org.len(), 1);
    assert!(
        start.elapsed() >= Duration::from_millis(700),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(c.stats().throttled, 2);
}

#[tokio::test]
async fn transient_5xx_are_retried_with_backoff() {
    let sb = start_demo().await;
    sb.sandbox().add_fault(FaultRule {
        count: 1,
        ..FaultRule::new("GET", "/domains", FaultStatus::Status(500))
    });
    sb.sandbox().add_fault(FaultRule {
        count: 1,
        retry_after: Some(0.1),
        ..FaultRule::new("GET", "/domains", FaultStatus::Status(503))
    });
    sb.sandbox()
        .add_fault(FaultRule::new("GET", "/domains", FaultStatus::Status(504)));
    let c = client(&sb);
    assert!(!c.domains().await.unwrap().is_empty());
    assert_eq!(c.stats().retries, 3);
}

#[tokio::test]
async fn persistent_5xx_gives_up_as_transient() {
    let sb = start_demo().await;
    sb.sandbox().add_fault(FaultRule {
        count: 100,
        ..FaultRule::new("GET", "/domains", FaultStatus::Status(503))
    });
    let c = client(&sb);
    let e = c.domains().await.unwrap_err();
    assert!(matches!(e, GraphError::Transient { .. }), "{e:?}");
    assert!(e.is_retryable());
    // transient_retry.max_attempts = 5
    assert_eq!(sb.sandbox().stats().requests, 5);
}

#[tokio::test]
async fn timed_out_create_that_landed_is_not_duplicated() {
    let sb = start_demo().await;
    let mut knobs = sb.sandbox().knobs();
    knobs.faults.timeout_ms = 3_000;
    sb.sandbox().set_knobs(knobs);
    sb.sandbox()
        .add_fault(FaultRule::new("POST", "/users", FaultStatus::TIMEOUT));
    let mut s = settings(&sb);
    s.request_timeout = Duration::from_millis(800);
    let c = client_with(s, demo_credentials());
    let u = c.create_user(&new_user("slowpoke")).await.unwrap();
    let stored = users_with_upn(&sb, "slowpoke@example.com");
    assert_eq!(stored.len(), 1, "exactly one user");
    assert_eq!(stored[0]["id"], u.id.as_str());
}

#[tokio::test]
async fn applied_503_on_create_with_replication_lag_is_not_duplicated() {
    // The write lands, the answer is 503, and the new user is not yet visible to the look-up:
    // the re-post conflicts, and the client returns the user its first attempt created.
    let sb = start_demo().await;
    let mut knobs = sb.sandbox().knobs();
    knobs.replication_lag_ms = 300;
    sb.sandbox().set_knobs(knobs);
    sb.sandbox().add_fault(FaultRule {
        applied: true,
        ..FaultRule::new("POST", "/users", FaultStatus::Status(503))
    });
    let c = client(&sb);
    let u = c.create_user(&new_user("twice")).await.unwrap();
    let stored = users_with_upn(&sb, "twice@example.com");
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0]["id"], u.id.as_str());
}

#[tokio::test]
async fn applied_500_on_group_create_is_not_duplicated() {
    let sb = start_demo().await;
    sb.sandbox().add_fault(FaultRule {
        applied: true,
        ..FaultRule::new("POST", "/groups", FaultStatus::Status(500))
    });
    let c = client(&sb);
    let g = c
        .create_group(&NewGroup::security("Once", "once"))
        .await
        .unwrap();
    let stored = groups_named(&sb, "Once");
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0]["id"], g.id.as_str());
}

/// `2026-12-02T07:30:00Z`: ISO 8601, UTC, whole seconds, as Graph sends DateTimeOffset values.
fn is_graph_timestamp(v: &str) -> bool {
    let b = v.as_bytes();
    b.len() == 20
        && b.iter().enumerate().all(|(i, c)| match i {
            4 | 7 => *c == b'-',
            10 => *c == b'T',
            13 | 16 => *c == b':',
            19 => *c == b'Z',
            _ => c.is_ascii_digit(),
        })
}

#[tokio::test]
async fn created_date_time_is_stored_and_selectable() {
    let sb = start_demo().await;
    let c = client(&sb);
    let u = c.create_user(&new_user("stamped")).await.unwrap();
    let got = c
        .get_user(&u.id, &["id", "createdDateTime"])
        .await
        .unwrap()
        .unwrap();
    let created = got.created_date_time.clone().unwrap();
    assert!(is_graph_timestamp(&created), "{created}");
    assert_eq!(
        user_by_id(&sb, &u.id).unwrap()["createdDateTime"],
        created.as_str()
    );
    // Not among Graph's default user properties.
    let default = c.get_user(&u.id, &[] as &[&str]).await.unwrap().unwrap();
    assert_eq!(default.created_date_time, None);

    let g = c
        .create_group(&NewGroup::security("Stamped", "stamped"))
        .await
        .unwrap();
    let got = c.get_group(&g.id).await.unwrap().unwrap();
    let created = got.created_date_time.unwrap();
    assert!(is_graph_timestamp(&created), "{created}");
}

#[tokio::test]
async fn uncertain_user_create_does_not_adopt_an_older_user_holding_the_upn() {
    let sb = start_demo().await;
    let older = sb.sandbox().seed_user(serde_json::json!({
        "userPrincipalName": "taken@example.com", "displayName": "Someone Else",
        "mailNickname": "taken", "accountEnabled": true,
        "createdDateTime": "2020-01-01T00:00:00Z"
    }));
    // The create answers 503 without landing; the look-up then finds the older user.
    sb.sandbox()
        .add_fault(FaultRule::new("POST", "/users", FaultStatus::Status(503)));
    let c = client(&sb);
    let e = c.create_user(&new_user("taken")).await.unwrap_err();
    assert!(matches!(e, GraphError::Conflict { .. }), "{e:?}");
    assert_eq!(e.property(), Some("userPrincipalName"));
    let text = e.to_string();
    for part in [
        "taken@example.com",
        older.as_str(),
        "2020-01-01T00:00:00Z",
        "link the existing user",
    ] {
        assert!(text.contains(part), "{part} missing: {text}");
    }
    let stored = users_with_upn(&sb, "taken@example.com");
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0]["displayName"], "Someone Else", "left untouched");
}

#[tokio::test]
async fn uncertain_group_create_does_not_adopt_an_older_namesake() {
    let sb = start_demo().await;
    let older = sb.sandbox().seed_group(serde_json::json!({
        "displayName": "Legacy", "mailNickname": "legacy", "mailEnabled": false,
        "securityEnabled": true, "groupTypes": [], "createdDateTime": "2020-01-01T00:00:00Z"
    }));
    sb.sandbox()
        .add_fault(FaultRule::new("POST", "/groups", FaultStatus::Status(500)));
    let c = client(&sb);
    let e = c
        .create_group(&NewGroup::security("Legacy", "legacy"))
        .await
        .unwrap_err();
    assert!(matches!(e, GraphError::Conflict { .. }), "{e:?}");
    let text = e.to_string();
    for part in ["\"Legacy\"", older.as_str(), "link the existing group"] {
        assert!(text.contains(part), "{part} missing: {text}");
    }
    let stored = groups_named(&sb, "Legacy");
    assert_eq!(stored.len(), 1, "nothing created, nothing adopted");
}

#[tokio::test]
async fn uncertain_group_create_under_replication_lag_finds_the_group_it_made() {
    // The create lands but answers 500, and the new group stays invisible for a while; an
    // older group with the same names is visible all along. The client keeps looking until its
    // own group shows up: it neither adopts the older one nor creates a second one.
    let sb = start_demo().await;
    let older = sb.sandbox().seed_group(serde_json::json!({
        "displayName": "Lagging", "mailNickname": "lagging", "mailEnabled": false,
        "securityEnabled": true, "groupTypes": [], "createdDateTime": "2020-01-01T00:00:00Z"
    }));
    let mut knobs = sb.sandbox().knobs();
    knobs.replication_lag_ms = 800;
    sb.sandbox().set_knobs(knobs);
    for name in ["Lagging", "Fresh"] {
        sb.sandbox().add_fault(FaultRule {
            applied: true,
            ..FaultRule::new("POST", "/groups", FaultStatus::Status(500))
        });
        let c = client(&sb);
        let g = c
            .create_group(&NewGroup::security(name, name.to_lowercase()))
            .await
            .unwrap();
        assert_ne!(g.id, older);
        let stored = groups_named(&sb, name);
        let ours: Vec<_> = stored
            .iter()
            .filter(|s| s["id"] != older.as_str())
            .collect();
        assert_eq!(
            ours.len(),
            1,
            "{name}: exactly one group created: {stored:?}"
        );
        assert_eq!(ours[0]["id"], g.id.as_str());
    }
}

#[tokio::test]
async fn client_pacing_matched_to_the_quota_avoids_429s() {
    let sb = start_demo().await;
    let mut knobs = sb.sandbox().knobs();
    knobs.throttle.app_tenant_write_quota = 20;
    knobs.throttle.app_tenant_write_window_secs = 2.0;
    sb.sandbox().set_knobs(knobs);
    let mut s = settings(&sb);
    s.pacing = PacingConfig {
        write_quota: 20,
        write_window: Duration::from_secs(2),
        ..PacingConfig::default()
    };
    let c = client_with(s, demo_credentials());
    let start = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..40 {
        let c = c.clone();
        tasks.push(tokio::spawn(async move {
            c.create_user(&new_user(&format!("paced{i}"))).await
        }));
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    assert_eq!(c.stats().throttled, 0, "{:?}", c.stats());
    assert_eq!(c.stats().writes, 40);
    // 19 in the first burst (0.97 × 20), the rest at ~9.7/s.
    assert!(
        start.elapsed() >= Duration::from_millis(1500),
        "{:?}",
        start.elapsed()
    );
    for i in 0..40 {
        assert_eq!(
            users_with_upn(&sb, &format!("paced{i}@example.com")).len(),
            1
        );
    }
}

#[tokio::test]
async fn throttle_limit_percentage_slows_the_pacer_before_any_429() {
    let sb = start_demo().await;
    let mut knobs = sb.sandbox().knobs();
    knobs.throttle.app_tenant_write_quota = 20;
    knobs.throttle.app_tenant_write_window_secs = 60.0;
    sb.sandbox().set_knobs(knobs);
    let mut s = settings(&sb);
    s.pacing = PacingConfig::default();
    let c = client_with(s, demo_credentials());
    for i in 0..18 {
        c.create_user(&new_user(&format!("warm{i}"))).await.unwrap();
    }
    assert_eq!(c.stats().throttled, 0);
    assert!(
        c.pacing_factor() < 1.0,
        "x-ms-throttle-limit-percentage ≥ 0.8 lowered the rate: {}",
        c.pacing_factor()
    );
}

/// A client whose answer times are known: `n` reads answered as usual.
async fn warmed_up(sb: &m365_sandbox::RunningSandbox, n: usize) -> m365_graph::GraphClient {
    let mut s = settings(sb);
    s.request_timeout = Duration::from_secs(60);
    let c = client_with(s, demo_credentials());
    for _ in 0..n {
        let read = c.domains().await;
        assert!(read.is_ok(), "{read:?}");
    }
    c
}

#[tokio::test]
async fn a_late_answer_to_a_read_is_hedged_and_the_first_answer_taken() {
    let sb = start_demo().await;
    let mut knobs = sb.sandbox().knobs();
    knobs.faults.timeout_ms = 45_000;
    sb.sandbox().set_knobs(knobs);
    let c = warmed_up(&sb, 20).await;
    sb.sandbox()
        .add_fault(FaultRule::new("GET", "/organization", FaultStatus::TIMEOUT));
    // Without the hedge the answer would come after 45 s.
    let before = c.stats().http_requests;
    let org = tokio::time::timeout(Duration::from_secs(30), c.organization())
        .await
        .expect("the late answer was not waited for")
        .unwrap();
    assert_eq!(org.len(), 1);
    assert_eq!(c.hedges(), 1);
    assert_eq!(
        c.stats().http_requests - before,
        2,
        "the request and its hedge"
    );
}

#[tokio::test]
async fn a_late_batch_envelope_is_given_up_and_its_items_sent_again_in_two_halves() {
    let sb = start_demo().await;
    let mut knobs = sb.sandbox().knobs();
    knobs.faults.timeout_ms = 45_000;
    sb.sandbox().set_knobs(knobs);
    let c = warmed_up(&sb, 20).await;
    // One held item holds its whole envelope.
    sb.sandbox()
        .add_fault(FaultRule::new("GET", "/organization", FaultStatus::TIMEOUT));
    let requests: Vec<m365_graph::BatchRequest> = (0..8)
        .map(|i| {
            let url = if i == 5 { "/organization" } else { "/domains" };
            m365_graph::BatchRequest::get(i.to_string(), url)
        })
        .collect();
    let before = c.stats().http_requests;
    let answers = tokio::time::timeout(Duration::from_secs(30), c.batch(requests))
        .await
        .expect("the late envelope was waited for")
        .unwrap();
    assert_eq!(answers.len(), 8);
    for a in &answers {
        assert!(a.is_success(), "item {} answered {}", a.id, a.status);
    }
    assert_eq!(
        answers[5].json::<serde_json::Value>().unwrap()["value"]
            .as_array()
            .map(Vec::len),
        Some(1)
    );
    assert_eq!(c.hedges(), 1, "one split, taken from the hedge budget");
    assert_eq!(
        c.stats().http_requests - before,
        3,
        "the late envelope of eight, then two of four"
    );
}

#[tokio::test]
async fn a_late_answer_to_a_create_is_given_up_and_the_user_it_made_adopted() {
    let sb = start_demo().await;
    let mut knobs = sb.sandbox().knobs();
    knobs.faults.timeout_ms = 45_000;
    sb.sandbox().set_knobs(knobs);
    let mut s = settings(&sb);
    s.request_timeout = Duration::from_secs(60);
    let c = client_with(s, demo_credentials());
    for i in 0..20 {
        c.create_user(&new_user(&format!("early{i}")))
            .await
            .unwrap();
    }
    sb.sandbox()
        .add_fault(FaultRule::new("POST", "/users", FaultStatus::TIMEOUT));
    let u = tokio::time::timeout(
        Duration::from_secs(30),
        c.create_user(&new_user("latecomer")),
    )
    .await
    .expect("the late create was not waited for")
    .unwrap();
    let stored = users_with_upn(&sb, "latecomer@example.com");
    assert_eq!(stored.len(), 1, "exactly one user");
    assert_eq!(stored[0]["id"], u.id.as_str());
    assert_eq!(c.hedges(), 0, "a create is never sent twice blindly");
}

#[tokio::test]
async fn a_sporadic_429_without_a_scope_leaves_the_pace_alone() {
    let sb = start_demo().await;
    let mut s = settings(&sb);
    s.pacing = PacingConfig::default();
    let c = client_with(s, demo_credentials());
    for _ in 0..30 {
        c.domains().await.unwrap();
    }
    sb.sandbox().add_fault(FaultRule {
        retry_after: Some(0.05),
        ..FaultRule::new("GET", "/organization", FaultStatus::Status(429))
    });
    assert_eq!(c.organization().await.unwrap().len(), 1);
    assert_eq!(c.stats().throttled, 1);
    assert!(
        (c.pacing_factor() - 1.0).abs() < 1e-9,
        "one 429 among many answers: {}",
        c.pacing_factor()
    );
    assert_eq!(c.concurrency_limit(), 8, "nor the concurrency");
}

#[tokio::test]
async fn the_concurrency_limit_grows_while_answers_keep_their_time() {
    let sb = start_demo().await;
    let mut knobs = sb.sandbox().knobs();
    knobs.read_latency_ms = 20;
    sb.sandbox().set_knobs(knobs);
    let mut s = settings(&sb);
    s.concurrency = 32;
    let adaptive = client_with(s.clone(), demo_credentials());
    s.adaptive_concurrency = false;
    s.concurrency = 6;
    let fixed = client_with(s, demo_credentials());
    for c in [&adaptive, &fixed] {
        let reads = (0..300).map(|_| c.domains());
        for r in futures::future::join_all(reads).await {
            r.unwrap();
        }
    }
    assert!(
        adaptive.concurrency_limit() > 16,
        "answers kept their time, so the limit grew from 8 toward the ceiling: {}",
        adaptive.concurrency_limit()
    );
    assert_eq!(fixed.concurrency_limit(), 6);
}

/// A sandbox with two more read-write apps of the demo tenant, whose per-app write quota is
/// `app_quota` and whose tenant write quota across apps is `tenant_quota`, both per 2 s.
async fn start_with_three_apps(app_quota: u32, tenant_quota: u32) -> m365_sandbox::RunningSandbox {
    let mut config = m365_sandbox::SandboxConfig::demo();
    let writer = config.seed.apps[0].clone();
    for n in 2..=3 {
        config.seed.apps.push(m365_sandbox::AppSeed {
            client_id: format!("0000000{n}-0000-4000-8000-00000000000{n}"),
            client_secret: format!("second-app-secret~{n}"),
            certificates: Vec::new(),
            display_name: format!("writer {n}"),
            ..writer.clone()
        });
    }
    config.knobs.throttle.app_tenant_write_quota = app_quota;
    config.knobs.throttle.app_tenant_write_window_secs = 2.0;
    config.knobs.throttle.tenant_write_quota = tenant_quota;
    config.knobs.throttle.tenant_write_window_secs = 2.0;
    start(config).await
}

/// Writes per app id in the sandbox's request log (batch items counted one by one).
fn writes_by_app(sb: &m365_sandbox::RunningSandbox) -> std::collections::BTreeMap<String, u64> {
    let mut by_app = std::collections::BTreeMap::new();
    for r in sb.sandbox().request_log() {
        if r.write {
            *by_app.entry(r.app_id.unwrap_or_default()).or_insert(0) += 1;
        }
    }
    by_app
}

fn paced_at(
    sb: &m365_sandbox::RunningSandbox,
    app_quota: u32,
    tenant_quota: u32,
) -> m365_graph::GraphSettings {
    let mut s = settings(sb);
    s.pacing = PacingConfig {
        write_quota: app_quota,
        write_window: Duration::from_secs(2),
        tenant_write_quota: tenant_quota,
        tenant_write_window: Duration::from_secs(2),
        safety_factor: 0.9,
        ..PacingConfig::default()
    };
    s
}

#[tokio::test]
async fn writes_spread_over_three_apps_stay_under_the_tenants_cap() {
    // Three apps of 20 writes / 2 s each could send 60; the tenant allows 30 across them. (An
    // envelope of 20 items is charged to one app, so an app's quota holds 20.)
    let sb = start_with_three_apps(20, 30).await;
    let apps = vec![
        demo_credentials(),
        credentials(
            "00000002-0000-4000-8000-000000000002",
            "second-app-secret~2",
        ),
        credentials(
            "00000003-0000-4000-8000-000000000003",
            "second-app-secret~3",
        ),
    ];
    let c = m365_graph::GraphClient::with_apps(
        paced_at(&sb, 20, 30),
        apps,
        m365_graph::SharedState::isolated(),
    )
    .unwrap();
    let mut tasks = Vec::new();
    for i in 0..60 {
        let c = c.clone();
        tasks.push(tokio::spawn(async move {
            c.create_user(&new_user(&format!("lane{i}"))).await
        }));
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    // And a batch of 20 updates, paced item by item through whichever app admits it.
    let ids: Vec<String> = (0..20)
        .map(|i| {
            users_with_upn(&sb, &format!("lane{i}@example.com"))[0]["id"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    let requests = ids
        .iter()
        .enumerate()
        .map(|(i, id)| {
            m365_graph::BatchRequest::new(
                i.to_string(),
                m365_graph::Method::PATCH,
                format!("/users/{id}"),
            )
            .with_body(serde_json::json!({"jobTitle": "Paced"}))
        })
        .collect();
    for answer in c.batch(requests).await.unwrap() {
        assert_eq!(answer.status, 204, "{answer:?}");
    }
    for i in 0..60 {
        assert_eq!(
            users_with_upn(&sb, &format!("lane{i}@example.com")).len(),
            1
        );
    }
    let by_app = writes_by_app(&sb);
    assert_eq!(by_app.len(), 3, "every app wrote: {by_app:?}");
    assert_eq!(by_app.values().sum::<u64>(), 80, "{by_app:?}");
    assert!(by_app.values().all(|&n| n >= 15), "{by_app:?}");
    // Without the tenant's own pacer the three apps would overrun the tenant's 30.
    assert_eq!(sb.sandbox().stats().throttled, 0, "no 429: {:?}", c.stats());
    let usage = c.app_usage();
    assert_eq!(usage.iter().map(|a| a.writes).sum::<u64>(), 80, "{usage:?}");
    assert!(usage.iter().all(|a| !a.refused), "{usage:?}");
}

#[tokio::test]
async fn an_app_whose_secret_is_refused_is_reported_and_its_share_moves_to_the_others() {
    let sb = start_with_three_apps(10, 30).await;
    let refused = "00000002-0000-4000-8000-000000000002";
    let apps = vec![
        demo_credentials(),
        credentials(refused, "not-its-secret"),
        credentials(
            "00000003-0000-4000-8000-000000000003",
            "second-app-secret~3",
        ),
    ];
    let c = m365_graph::GraphClient::with_apps(
        paced_at(&sb, 10, 30),
        apps,
        m365_graph::SharedState::isolated(),
    )
    .unwrap();
    let mut tasks = Vec::new();
    for i in 0..30 {
        let c = c.clone();
        tasks.push(tokio::spawn(async move {
            c.create_user(&new_user(&format!("share{i}"))).await
        }));
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    for i in 0..30 {
        assert_eq!(
            users_with_upn(&sb, &format!("share{i}@example.com")).len(),
            1
        );
    }
    let by_app = writes_by_app(&sb);
    assert_eq!(by_app.get(refused), None, "{by_app:?}");
    assert_eq!(by_app.values().sum::<u64>(), 30, "{by_app:?}");
    let usage = c.app_usage();
    assert!(usage[1].refused && usage[1].writes == 0, "{usage:?}");
    assert!(!usage[0].refused && !usage[2].refused, "{usage:?}");
    // The connection test names the refused app.
    let err = c.authenticate().await.unwrap_err().to_string();
    assert!(
        err.contains(refused) && err.contains("AADSTS7000215"),
        "{err}"
    );
}

#[tokio::test]
async fn the_last_app_left_reports_its_refusal_as_the_error() {
    let sb = start_with_three_apps(10, 30).await;
    let c = m365_graph::GraphClient::with_apps(
        paced_at(&sb, 10, 30),
        vec![
            credentials(demo::CLIENT_ID, "wrong"),
            credentials("00000002-0000-4000-8000-000000000002", "also-wrong"),
        ],
        m365_graph::SharedState::isolated(),
    )
    .unwrap();
    let err = c.create_user(&new_user("nobody")).await.unwrap_err();
    assert!(matches!(err, GraphError::Auth(_)), "{err}");
    assert!(users_with_upn(&sb, "nobody@example.com").is_empty());
    assert_eq!(writes_by_app(&sb).values().sum::<u64>(), 0);
}
