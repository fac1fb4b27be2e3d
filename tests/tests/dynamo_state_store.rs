//! The DynamoDB `StateStore` against moto: the conformance suite, and two stores sharing a table.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a broken expectation should fail loudly"
)]

use m365_aws::{DynamoStateStore, create_table, dynamodb_client};
use m365_core::{Checkpoint, Phase, StateError, StateStore};
use m365_integration_tests::moto::Moto;

const TABLE: &str = "m365-state";

/// moto with the state table, and a client for it.
async fn moto_with_table() -> (Moto, aws_sdk_dynamodb::Client) {
    let moto = Moto::start().await;
    let client = dynamodb_client(&moto.sdk_config().await);
    create_table(&client, TABLE).await.unwrap();
    // Creating it again is a no-op.
    create_table(&client, TABLE).await.unwrap();
    (moto, client)
}

#[tokio::test]
async fn conformance() {
    let (_moto, client) = moto_with_table().await;
    let store = DynamoStateStore::new(client, TABLE);
    m365_core::conformance::run_all(&store).await;
}

#[tokio::test]
async fn two_stores_share_the_lease() {
    let (moto, client) = moto_with_table().await;
    let first = DynamoStateStore::new(client, TABLE);
    let second = DynamoStateStore::new(dynamodb_client(&moto.sdk_config().await), TABLE);
    let c = "shared-lease";

    let held = m365_core::conformance::acquire(&first, c, "run-1", 1_000, 60_000).await;
    assert_eq!(
        m365_core::conformance::try_acquire(&second, c, "run-2", 2_000, 60_000).await,
        None,
        "the second store sees the first one's lease"
    );
    let checkpoint = Checkpoint {
        drift: None,
        generation: 1,
        phase: Phase::Idle,
        sweep_allowed: true,
        changes_cursor: None,
        last_complete_at: None,
        updated_at: 1_000,
    };
    first.put_checkpoint(c, &checkpoint, &held).await.unwrap();
    assert_eq!(
        second.get_checkpoint(c).await.unwrap(),
        Some(checkpoint.clone())
    );

    // After expiry the second takes over, and the first is fenced.
    let taken = m365_core::conformance::acquire(&second, c, "run-2", 61_000, 60_000).await;
    assert!(taken.token > held.token);
    let result = first.put_checkpoint(c, &checkpoint, &held).await;
    assert!(
        matches!(result, Err(StateError::Fenced { presented, current, .. })
            if presented == held.token && current == taken.token),
        "{result:?}"
    );
}

#[tokio::test]
async fn unreachable_table_is_unavailable() {
    let moto = Moto::start().await;
    let store = DynamoStateStore::new(dynamodb_client(&moto.sdk_config().await), "no-such-table");
    let err = store.get_checkpoint("c").await.unwrap_err();
    assert!(err.is_retryable(), "{err}");
    let text = err.to_string();
    assert!(text.contains("ResourceNotFoundException"), "{text}");
    assert!(
        !text.contains(m365_integration_tests::moto::SECRET_ACCESS_KEY),
        "{text}"
    );
}

/// A link DynamoDB cannot hold (a 25,000-member group: more than an item's 400 KB) or cannot
/// key (a source id past the sort-key limit) is refused as that object's failure, before
/// anything is written; reads and deletes of such ids answer as for absent ones.
#[tokio::test]
async fn objects_past_dynamodb_limits_are_refused_one_by_one() {
    use m365_core::{Link, LinkOrigin, ObjectError, ObjectKind};
    let (_moto, client) = moto_with_table().await;
    let store = DynamoStateStore::new(client, TABLE);
    let c = "limits";
    let lease = m365_core::conformance::writer(&store, c).await;
    let link = |kind, source_id: &str, members: Vec<String>| Link {
        kind,
        source_id: source_id.to_owned(),
        object_id: format!("object-{}", source_id.len()),
        origin: LinkOrigin::Created,
        hash: "h".to_owned(),
        applied: Default::default(),
        enabled: true,
        licenses: Vec::new(),
        manager: None,
        members,
        seen_generation: 0,
        updated_at: 1,
        deleted_at: None,
    };
    let members: Vec<String> = (0..25_000)
        .map(|i| format!("00000000-0000-4000-8000-{i:012}"))
        .collect();
    let user = link(ObjectKind::User, "u-1", Vec::new());
    let big = link(ObjectKind::Group, "g-big", members);

    let refused = store
        .put_links(c, &[user.clone(), big.clone()], &lease)
        .await;
    match &refused {
        Err(StateError::ObjectTooLarge {
            kind,
            source_id,
            reason,
        }) => {
            assert_eq!((*kind, source_id.as_str()), (ObjectKind::Group, "g-big"));
            assert!(reason.contains("400 KB"), "{reason}");
        }
        other => panic!("expected ObjectTooLarge for g-big, got {other:?}"),
    }
    assert!(
        store
            .get_links(c, ObjectKind::User, &["u-1".to_owned()])
            .await
            .unwrap()
            .is_empty(),
        "the refused call wrote nothing"
    );
    store
        .put_links(c, std::slice::from_ref(&user), &lease)
        .await
        .unwrap();

    let long_id = "x".repeat(2_000);
    let long = link(ObjectKind::User, &long_id, Vec::new());
    let refused = store.put_links(c, &[long], &lease).await;
    assert!(
        matches!(&refused, Err(StateError::ObjectTooLarge { kind: ObjectKind::User, reason, .. }) if reason.contains("2000 bytes")),
        "{refused:?}"
    );
    let ids = vec![long_id.clone(), "u-1".to_owned()];
    assert_eq!(
        store.get_links(c, ObjectKind::User, &ids).await.unwrap(),
        vec![user],
        "an id past the key limit reads as absent"
    );
    let error = ObjectError {
        kind: ObjectKind::User,
        source_id: long_id.clone(),
        operation: "create".to_owned(),
        message: "m".to_owned(),
        attempts: 1,
        first_failed_at: 1,
        last_failed_at: 1,
        next_retry_at: 1,
    };
    assert!(matches!(
        store.put_error(c, &error, &lease).await,
        Err(StateError::ObjectTooLarge { .. })
    ));
    assert!(
        store
            .get_errors(c, ObjectKind::User, &ids)
            .await
            .unwrap()
            .is_empty()
    );
    store
        .delete_links(c, ObjectKind::User, &ids, &lease)
        .await
        .unwrap();
    store
        .clear_errors(c, ObjectKind::User, &ids, &lease)
        .await
        .unwrap();
    assert_eq!(store.count_links(c, ObjectKind::User).await.unwrap(), 0);
}

/// The engine on the DynamoDB store: a user whose source id DynamoDB cannot key is that user's
/// failure; the others are linked, the run finishes, and the rerun duplicates nobody.
#[tokio::test]
async fn a_source_id_dynamodb_cannot_key_fails_that_user_only() {
    use m365_core::engine::{Engine, SyncOptions};
    use m365_core::{ObjectKind, RunStatus};
    use m365_integration_tests::scenario::{Scenario, user};
    use m365_source_file::{FileSource, FileSourceConfig};
    let (_moto, client) = moto_with_table().await;
    let store = DynamoStateStore::new(client, TABLE);
    let s = Scenario::new("", "").await;
    let long_id = "L".repeat(1_500);
    s.write_source(
        &[
            user("u-ann", "ann", serde_json::json!({})),
            user(&long_id, "bob2", serde_json::json!({})),
            user("u-cy", "cy", serde_json::json!({})),
        ],
        &[],
    );
    let source =
        FileSource::local(FileSourceConfig::new(s.source_path.display().to_string())).unwrap();
    let engine = Engine {
        connection: &s.connection,
        rule: &s.rule,
        source: &source,
        directory: &s.directory,
        state: &store,
        clock: &s.clock,
        page_size: 10,
        chunk_size: 10,
    };
    for attempt in 1..=2 {
        let outcome = engine
            .sync(SyncOptions {
                holder: m365_core::conformance::holder("test"),
                ..SyncOptions::default()
            })
            .await
            .unwrap_or_else(|e| panic!("run {attempt} must not fail as a whole: {e}"));
        assert_eq!(
            outcome.run.status,
            RunStatus::PartiallyFailed,
            "run {attempt}"
        );
        let failure = outcome
            .report
            .failures
            .iter()
            .find(|f| f.message.contains("cannot be recorded"))
            .unwrap_or_else(|| panic!("run {attempt}: {:?}", outcome.report.failures));
        assert!(
            failure.message.contains("shorter immutable id"),
            "{}",
            failure.message
        );
        assert_eq!(
            store
                .count_links(&s.connection, ObjectKind::User)
                .await
                .unwrap(),
            2,
            "run {attempt}: the others are linked"
        );
        let upn = |alias: &str| format!("{alias}@{}", m365_sandbox::demo::VERIFIED_DOMAIN);
        assert_eq!(
            s.tenant_users_named(&upn("bob2")),
            1,
            "run {attempt}: no duplicate"
        );
        assert_eq!(s.tenant_users_named(&upn("cy")), 1);
    }
}
