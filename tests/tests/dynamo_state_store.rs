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
