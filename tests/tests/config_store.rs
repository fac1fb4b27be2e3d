//! The DynamoDB `ConfigStore` against moto: versions, unchanged uploads, reads, removal, and
//! concurrent uploads.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a broken expectation should fail loudly"
)]

use std::collections::BTreeSet;

use m365_aws::{ConfigStore, ConfigStoreError, DynamoStateStore, create_table};
use m365_core::StateStore as _;
use m365_integration_tests::moto::Moto;

const TABLE: &str = "m365-state";

async fn moto_with_store() -> (Moto, ConfigStore) {
    let moto = Moto::start().await;
    let client = moto.dynamodb_client().await;
    create_table(&client, TABLE).await.unwrap();
    (moto, ConfigStore::new(client, TABLE))
}

fn text(n: u32) -> String {
    format!("[connection]\nname = \"contoso\"\n# revision {n}\n")
}

#[tokio::test]
async fn uploads_make_versions_and_an_unchanged_text_makes_none() {
    let (_moto, store) = moto_with_store().await;
    assert_eq!(store.latest("contoso").await.unwrap(), None);
    assert_eq!(store.history("contoso").await.unwrap(), []);

    let first = store
        .upload("contoso", &text(1), "alice@host", 1_000)
        .await
        .unwrap();
    assert!(first.created);
    assert_eq!(first.config.version, 1);
    assert_eq!(first.config.text, text(1));
    assert_eq!(first.config.sha256.len(), 64);
    assert_eq!(first.config.uploaded_by, "alice@host");
    assert_eq!(first.config.uploaded_at, 1_000);

    let second = store
        .upload("contoso", &text(2), "bob@host", 2_000)
        .await
        .unwrap();
    assert!(second.created);
    assert_eq!(second.config.version, 2);
    assert_ne!(second.config.sha256, first.config.sha256);

    // The same text as the newest: nothing written, the newest version returned.
    let same = store
        .upload("contoso", &text(2), "carol@host", 3_000)
        .await
        .unwrap();
    assert!(!same.created);
    assert_eq!(same.config, second.config);

    // A rollback is a new version with the old text.
    let rollback = store
        .upload("contoso", &text(1), "alice@host", 4_000)
        .await
        .unwrap();
    assert!(rollback.created);
    assert_eq!(rollback.config.version, 3);
    assert_eq!(rollback.config.sha256, first.config.sha256);

    assert_eq!(
        store.latest("contoso").await.unwrap(),
        Some(rollback.config.clone())
    );
    assert_eq!(
        store.version("contoso", 2).await.unwrap(),
        Some(second.config.clone())
    );
    assert_eq!(
        store.version("contoso", 1).await.unwrap(),
        Some(first.config.clone())
    );
    assert_eq!(store.version("contoso", 4).await.unwrap(), None);
    assert_eq!(store.version("contoso", 0).await.unwrap(), None);

    let history = store.history("contoso").await.unwrap();
    let versions: Vec<(u64, &str, i64)> = history
        .iter()
        .map(|h| (h.version, h.uploaded_by.as_str(), h.uploaded_at))
        .collect();
    assert_eq!(
        versions,
        [
            (3, "alice@host", 4_000),
            (2, "bob@host", 2_000),
            (1, "alice@host", 1_000)
        ]
    );
    assert!(history.iter().all(|h| h.connection == "contoso"));
}

#[tokio::test]
async fn list_shows_the_newest_version_of_each_connection_and_remove_forgets_one() {
    let (moto, store) = moto_with_store().await;
    assert_eq!(store.list().await.unwrap(), []);
    store.upload("fabrikam", "a = 1", "ci", 10).await.unwrap();
    store.upload("contoso", "a = 1", "ci", 20).await.unwrap();
    store.upload("contoso", "a = 2", "ci", 30).await.unwrap();

    // Connection state under the same name shares the table and must survive the removal.
    let state = DynamoStateStore::new(moto.dynamodb_client().await, TABLE);
    assert!(
        state
            .remember_event("contoso", "ev-1", 0, 1_000_000)
            .await
            .unwrap()
            == m365_core::state::EventClaim::New
    );

    let list = store.list().await.unwrap();
    let summary: Vec<(&str, u64, i64)> = list
        .iter()
        .map(|c| (c.connection.as_str(), c.version, c.uploaded_at))
        .collect();
    assert_eq!(summary, [("contoso", 2, 30), ("fabrikam", 1, 10)]);
    let latest = store.latest("contoso").await.unwrap().unwrap();
    assert_eq!(list[0].sha256, latest.sha256);

    assert_eq!(store.remove("contoso").await.unwrap(), 2);
    assert_eq!(store.latest("contoso").await.unwrap(), None);
    assert_eq!(store.history("contoso").await.unwrap(), []);
    let list = store.list().await.unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].connection, "fabrikam");
    assert_eq!(store.remove("contoso").await.unwrap(), 0);
    // The state item is still there: remembering it again finds the claim.
    assert!(
        state
            .remember_event("contoso", "ev-1", 0, 1_000_000)
            .await
            .unwrap()
            == m365_core::state::EventClaim::InProgress
    );

    // Uploading after a removal starts again at version 1.
    let again = store.upload("contoso", "a = 2", "ci", 40).await.unwrap();
    assert!(again.created);
    assert_eq!(again.config.version, 1);
}

#[tokio::test]
async fn concurrent_uploads_each_land_as_a_distinct_version() {
    let (_moto, store) = moto_with_store().await;
    let uploads = (0..4).map(|i| {
        let store = store.clone();
        tokio::spawn(async move {
            store
                .upload("contoso", &text(i), &format!("uploader-{i}"), i64::from(i))
                .await
        })
    });
    let mut versions = BTreeSet::new();
    for upload in uploads.collect::<Vec<_>>() {
        let uploaded = upload.await.unwrap().unwrap();
        assert!(uploaded.created);
        versions.insert(uploaded.config.version);
    }
    assert_eq!(versions, BTreeSet::from([1, 2, 3, 4]));

    let history = store.history("contoso").await.unwrap();
    assert_eq!(history.len(), 4);
    let uploaders: BTreeSet<&str> = history.iter().map(|h| h.uploaded_by.as_str()).collect();
    assert_eq!(uploaders.len(), 4, "every upload is its own version");
    let newest = store.latest("contoso").await.unwrap().unwrap();
    assert_eq!(newest.version, 4);
    let listed = store.list().await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].version, 4);
    assert_eq!(listed[0].sha256, newest.sha256);
}

#[tokio::test]
async fn errors_name_the_table_the_connection_and_the_code() {
    let moto = Moto::start().await;
    let store = ConfigStore::new(moto.dynamodb_client().await, "no-such-table");
    let error = store.upload("contoso", "a = 1", "ci", 1).await.unwrap_err();
    let text = error.to_string();
    assert!(text.contains("no-such-table"), "{text}");
    assert!(text.contains("contoso"), "{text}");
    assert!(text.contains("ResourceNotFoundException"), "{text}");
    assert_eq!(error.code(), Some("ResourceNotFoundException"));
    assert!(!error.is_retryable());

    let error = store.latest("con/toso").await.unwrap_err();
    assert!(matches!(error, ConfigStoreError::Invalid(_)), "{error:?}");
}
