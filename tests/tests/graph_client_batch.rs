//! `$batch`: chunking beyond 20, results correlated by id (the sandbox shuffles them),
//! dependsOn → 424, per-item 429 retried in a follow-up batch, nothing lost or duplicated.

use m365_graph::{BatchRequest, ErrorKind, Method, User};
use m365_integration_tests::graph_client::*;
use m365_sandbox::{FaultRule, FaultStatus, demo};
use serde_json::json;

fn create_req(id: &str, alias: &str) -> BatchRequest {
    BatchRequest::new(id, Method::POST, "/users").with_body(json!({
        "accountEnabled": true, "displayName": format!("Batch {alias}"), "mailNickname": alias,
        "userPrincipalName": format!("{alias}@example.com"),
        "passwordProfile": {"password": PASSWORD, "forceChangePasswordNextSignIn": true},
    }))
}

#[tokio::test]
async fn batches_of_more_than_20_are_chunked_and_correlated_by_id() {
    let sb = start_demo().await;
    let c = client(&sb);
    let reqs: Vec<BatchRequest> = (0..45)
        .map(|i| create_req(&format!("c{i}"), &format!("batch{i}")))
        .collect();
    let out = c.batch(reqs).await.unwrap();
    assert_eq!(out.len(), 45);
    for (i, r) in out.iter().enumerate() {
        assert_eq!(r.id, format!("c{i}"), "input order restored");
        assert_eq!(r.status, 201, "{:?}", r.error());
        let u: User = r.json().unwrap();
        assert_eq!(u.user_principal_name, Some(format!("batch{i}@example.com")));
    }
    for i in 0..45 {
        assert_eq!(
            users_with_upn(&sb, &format!("batch{i}@example.com")).len(),
            1
        );
    }
    let st = sb.sandbox().stats();
    assert_eq!(st.batches, 3, "20 + 20 + 5");
    assert_eq!(c.stats().writes, 45);
}

#[tokio::test]
async fn item_errors_are_classified_and_depends_on_failures_are_424() {
    let sb = start_demo().await;
    let c = client(&sb);
    // 1 conflicts (bjensen exists) → 2 depends on it → 424. 3 is independent and succeeds.
    let conflict = BatchRequest::new("1", Method::POST, "/users").with_body(json!({
        "accountEnabled": true, "displayName": "Dup", "mailNickname": "dup",
        "userPrincipalName": demo::BJENSEN_UPN,
        "passwordProfile": {"password": PASSWORD, "forceChangePasswordNextSignIn": true},
    }));
    let dependent = BatchRequest::new("2", Method::PATCH, format!("/users/{}", demo::BJENSEN_ID))
        .with_body(json!({"jobTitle": "Should not happen"}))
        .depending_on("1");
    let ok = BatchRequest::get(
        "3",
        format!("/users/{}?$select=id,jobTitle", demo::BJENSEN_ID),
    );
    let missing = BatchRequest::get("4", "/users/00000000-0000-0000-0000-000000000000");
    let out = c
        .batch(vec![conflict, dependent, ok, missing])
        .await
        .unwrap();
    let e1 = out[0].error().unwrap();
    assert_eq!(e1.kind(), ErrorKind::Conflict);
    assert_eq!(e1.property(), Some("userPrincipalName"));
    assert_eq!(out[1].status, 424);
    assert_eq!(out[2].status, 200);
    assert_eq!(out[3].error().unwrap().kind(), ErrorKind::NotFound);
    assert_eq!(
        user_by_id(&sb, demo::BJENSEN_ID).unwrap()["jobTitle"],
        "Accountant",
        "the dependent PATCH did not run"
    );
}

#[tokio::test]
async fn dependency_chains_succeed_in_order() {
    let sb = start_demo().await;
    let c = client(&sb);
    let create = create_req("a", "chain");
    let patch = BatchRequest::new("b", Method::PATCH, "/users/chain@example.com")
        .with_body(json!({"jobTitle": "Chained"}))
        .depending_on("a");
    let out = c.batch(vec![create, patch]).await.unwrap();
    assert_eq!(out[0].status, 201);
    assert_eq!(out[1].status, 204);
    assert_eq!(
        users_with_upn(&sb, "chain@example.com")[0]["jobTitle"],
        "Chained"
    );
}

#[tokio::test]
async fn throttled_items_are_retried_after_their_retry_after_and_land_once() {
    let sb = start_demo().await;
    sb.sandbox().add_fault(FaultRule {
        count: 4,
        retry_after: Some(0.2),
        ..FaultRule::new("POST", "/users", FaultStatus::Status(429))
    });
    let c = client(&sb);
    let reqs: Vec<BatchRequest> = (0..10)
        .map(|i| create_req(&format!("t{i}"), &format!("thr{i}")))
        .collect();
    let started = std::time::Instant::now();
    let out = c.batch(reqs).await.unwrap();
    assert!(
        out.iter().all(|r| r.status == 201),
        "{:?}",
        out.iter().map(|r| r.status).collect::<Vec<_>>()
    );
    for i in 0..10 {
        assert_eq!(
            users_with_upn(&sb, &format!("thr{i}@example.com")).len(),
            1,
            "exactly once"
        );
    }
    let s = c.stats();
    assert_eq!(s.throttled, 4);
    assert!(
        started.elapsed() >= std::time::Duration::from_millis(200),
        "Retry-After honoured"
    );
    assert!(
        sb.sandbox().stats().batches >= 2,
        "a follow-up batch was sent"
    );
}

#[tokio::test]
async fn unavailable_items_are_retried_and_other_items_are_not_resent() {
    let sb = start_demo().await;
    sb.sandbox().add_fault(FaultRule {
        count: 2,
        retry_after: Some(0.05),
        ..FaultRule::new("PATCH", "/users", FaultStatus::Status(503))
    });
    let c = client(&sb);
    let reqs: Vec<BatchRequest> = (0..5)
        .map(|i| create_req(&format!("n{i}"), &format!("una{i}")))
        .chain(std::iter::once(
            BatchRequest::new("p", Method::PATCH, format!("/users/{}", demo::BJENSEN_ID))
                .with_body(json!({"jobTitle": "Controller"})),
        ))
        .collect();
    let out = c.batch(reqs).await.unwrap();
    assert!(
        out.iter().all(|r| r.is_success()),
        "{:?}",
        out.iter().map(|r| r.status).collect::<Vec<_>>()
    );
    assert_eq!(
        user_by_id(&sb, demo::BJENSEN_ID).unwrap()["jobTitle"],
        "Controller"
    );
    for i in 0..5 {
        assert_eq!(users_with_upn(&sb, &format!("una{i}@example.com")).len(), 1);
    }
    let posts = sb
        .sandbox()
        .request_log()
        .into_iter()
        .filter(|r| r.batch_item && r.method == "POST")
        .count();
    assert_eq!(posts, 5, "succeeded items are not re-sent");
}

#[tokio::test]
async fn duplicate_ids_are_refused_before_sending() {
    let sb = start_demo().await;
    let c = client(&sb);
    let r = c
        .batch(vec![
            BatchRequest::get("x", "/organization"),
            BatchRequest::get("X", "/domains"),
        ])
        .await;
    assert!(r.is_err());
    assert_eq!(sb.sandbox().stats().requests, 0);
}
