//! The admin API (`/_sandbox/...`) answers only requests addressed to a loopback host and
//! without an `Origin` header, so a web page cannot drive it (cross-site requests, DNS
//! rebinding); Graph and token routes are unaffected.

// Integration tests: helpers panic on broken expectations.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use m365_sandbox::demo;
use serde_json::{Value, json};

async fn refused(r: reqwest::Response, needle: &str) {
    assert_eq!(r.status(), 403);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "Forbidden", "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains(needle), "{message}");
}

#[tokio::test]
async fn admin_requests_to_a_foreign_host_are_refused() {
    let t = start().await;
    let base = t.rs.base_url().to_owned();
    let port = base.rsplit(':').next().unwrap().to_owned();
    let knobs_before = t.rs.sandbox().knobs();

    for host in [format!("evil.example:{port}"), "attacker.test".to_owned()] {
        let r = t
            .http
            .get(format!("{base}/_sandbox/state"))
            .header("Host", &host)
            .send()
            .await
            .unwrap();
        refused(r, &host).await;
        let mut knobs = knobs_before.clone();
        knobs.replication_lag_ms = 99_999;
        let r = t
            .http
            .put(format!("{base}/_sandbox/knobs"))
            .header("Host", &host)
            .json(&knobs)
            .send()
            .await
            .unwrap();
        refused(r, &host).await;
        // An unknown admin path is refused too, not answered by the Graph fallback.
        let r = t
            .http
            .get(format!("{base}/_sandbox/nope"))
            .header("Host", &host)
            .send()
            .await
            .unwrap();
        refused(r, &host).await;
    }
    assert_eq!(t.rs.sandbox().knobs(), knobs_before, "no knob changed");

    // Loopback hosts, any port, are served.
    for host in [
        format!("127.0.0.1:{port}"),
        format!("localhost:{port}"),
        format!("[::1]:{port}"),
        "127.0.0.1".to_owned(),
    ] {
        let r = t
            .http
            .get(format!("{base}/_sandbox/stats"))
            .header("Host", &host)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{host}");
    }
}

#[tokio::test]
async fn admin_requests_with_an_origin_are_refused() {
    let t = start().await;
    let base = t.rs.base_url().to_owned();
    let id = t.rs.sandbox().seed_user(json!({
        "userPrincipalName": "kept@example.com", "displayName": "Kept", "mailNickname": "kept",
        "accountEnabled": true
    }));
    for origin in [base.as_str(), "https://evil.example", "null"] {
        let r = t
            .http
            .post(format!("{base}/_sandbox/reset"))
            .header("Origin", origin)
            .send()
            .await
            .unwrap();
        refused(r, "Origin").await;
        let r = t
            .http
            .post(format!("{base}/_sandbox/seed"))
            .header("Origin", origin)
            .json(&json!({"users": [{"userPrincipalName": "csrf@example.com"}]}))
            .send()
            .await
            .unwrap();
        refused(r, "Origin").await;
    }
    let upns: Vec<Value> =
        t.rs.sandbox()
            .users()
            .iter()
            .map(|u| u["userPrincipalName"].clone())
            .collect();
    assert!(
        t.rs.sandbox()
            .users()
            .iter()
            .any(|u| u["id"] == id.as_str()),
        "the reset was refused: {upns:?}"
    );
    assert!(!upns.contains(&json!("csrf@example.com")), "{upns:?}");

    // Without the Origin the same request is served.
    let r = t
        .http
        .post(format!("{base}/_sandbox/reset"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert!(
        !t.rs
            .sandbox()
            .users()
            .iter()
            .any(|u| u["id"] == id.as_str())
    );
}

#[tokio::test]
async fn graph_and_token_routes_are_unaffected() {
    let t = start().await;
    let base = t.rs.base_url().to_owned();
    let port = base.rsplit(':').next().unwrap().to_owned();
    let r = t
        .http
        .get(t.url("/users"))
        .bearer_auth(&t.token)
        .header("Origin", "https://evil.example")
        .header("Host", format!("graph.example:{port}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = t
        .http
        .post(format!("{base}/{}/oauth2/v2.0/token", demo::TENANT_ID))
        .header("Origin", "https://evil.example")
        .form(&[
            ("client_id", demo::CLIENT_ID),
            ("client_secret", demo::CLIENT_SECRET),
            ("scope", "https://graph.microsoft.com/.default"),
            ("grant_type", "client_credentials"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}
