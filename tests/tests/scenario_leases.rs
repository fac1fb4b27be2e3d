//! The run lease in the engine: a run that loses its lease stops before its next tenant write,
//! and a tenant object already linked to one source id is never linked to another.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a broken expectation should fail loudly"
)]

use std::sync::atomic::{AtomicU64, Ordering};

use m365_core::engine::RunError;
use m365_core::{Clock as _, ObjectKind, StateError, StateStore as _, conformance};
use m365_integration_tests::scenario::{Scenario, user};
use m365_sandbox::demo;
use serde_json::{Value, json};

fn upn(alias: &str) -> String {
    format!("{alias}@{}", demo::VERIFIED_DOMAIN)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_whose_lease_is_taken_over_mid_execution_makes_no_further_write() {
    let s = Scenario::new("", "").await;
    let users: Vec<Value> = (0..30)
        .map(|i| user(&format!("l-{i:02}"), &format!("l{i:02}"), json!({})))
        .collect();
    s.write_source(&users, &[]);
    let writes_at_takeover = AtomicU64::new(u64::MAX);
    // After the first chunk (10 creates), an operator breaks the lease and another run takes it.
    let progress = |done: u64, _total: u64| {
        if done != 10 {
            return;
        }
        tokio::task::block_in_place(|| {
            tokio::runtime::Handle::current().block_on(async {
                let now = s.clock.now();
                let held = s
                    .state
                    .get_lease(&s.connection, now)
                    .await
                    .unwrap()
                    .unwrap();
                assert!(
                    s.state
                        .break_lease(&s.connection, held.token)
                        .await
                        .unwrap()
                );
                conformance::acquire(&s.state, &s.connection, "intruder", now, 60_000).await;
            });
        });
        writes_at_takeover.store(s.tenant_writes(), Ordering::SeqCst);
    };
    let result = s.sync_with_progress(&progress).await;

    assert!(
        matches!(&result, Err(RunError::State(StateError::LeaseLost { connection, .. })) if *connection == s.connection),
        "{result:?}"
    );
    let at_takeover = writes_at_takeover.load(Ordering::SeqCst);
    assert_eq!(at_takeover, 10, "the first chunk ran");
    assert_eq!(
        s.tenant_writes(),
        at_takeover,
        "no Graph write after the takeover"
    );
    let created = (0..30)
        .filter(|i| s.tenant_user(&upn(&format!("l{i:02}"))).is_some())
        .count();
    assert_eq!(created, 10);
    assert_eq!(
        s.state
            .count_links(&s.connection, ObjectKind::User)
            .await
            .unwrap(),
        10,
        "the first chunk's links are recorded, nothing after"
    );
}

#[tokio::test]
async fn a_tenant_user_linked_to_one_source_id_is_not_linked_to_another() {
    let s = Scenario::new("", "").await;
    s.write_source(&[user("u-ann", "ann", json!({}))], &[]);
    s.sync().await;
    let ann = s.link(ObjectKind::User, "u-ann").await.unwrap();

    // A second identity appears whose match value (the UPN) names the same tenant user, while
    // the first is still in the source.
    s.write_source(
        &[
            user("u-ann", "ann", json!({})),
            user("u-ann-copy", "ann", json!({"department": "Copy"})),
        ],
        &[],
    );
    let outcome = s.sync().await;
    assert!(
        s.link(ObjectKind::User, "u-ann-copy").await.is_none(),
        "not linked"
    );
    assert_eq!(
        s.link(ObjectKind::User, "u-ann").await.unwrap().object_id,
        ann.object_id
    );
    let errors = s.errors().await;
    let error = errors
        .iter()
        .find(|e| e.source_id == "u-ann-copy")
        .unwrap_or_else(|| panic!("a per-object error: {errors:?}; plan {:?}", outcome.plan));
    assert!(
        error.message.contains("\"u-ann-copy\""),
        "{}",
        error.message
    );
    assert!(error.message.contains("\"u-ann\""), "{}", error.message);
    assert!(error.message.contains(&ann.object_id), "{}", error.message);
    // The tenant user keeps the first identity's values.
    let tenant = s.tenant_user(&upn("ann")).unwrap();
    assert_ne!(tenant["department"], "Copy");
}
