//! Paging: page sizes, cursors stored as JSON and resumed, a file that changes mid-snapshot, and
//! the parsed-once cache.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests fail loudly on a broken expectation"
)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use async_trait::async_trait;
use common::{record_error, snapshot, source};
use m365_core::{Source, SourceCursor, SourceError};
use m365_source_file::{FileLoader, FileSource, FileSourceConfig, LocalFileLoader};
use serde_json::json;

/// A JSON file of `count` users `u00`…, with a broken record at index 4 and two groups.
fn users_json(count: usize) -> String {
    let users: Vec<serde_json::Value> = (0..count)
        .map(|i| {
            if i == 4 {
                json!({"id": format!("u{i:02}"), "enabled": "perhaps"})
            } else {
                json!({"id": format!("u{i:02}"), "enabled": true, "attributes": {"n": i}})
            }
        })
        .collect();
    json!({
        "users": users,
        "groups": [
            {"id": "g1", "name": "One", "members": ["u00"]},
            {"id": "g2", "name": "Two", "members": ["u01", "u09"]},
        ],
    })
    .to_string()
}

fn ids(users: &[m365_core::SourceUser]) -> Vec<&str> {
    users.iter().map(|u| u.id.as_str()).collect()
}

fn expired(result: Result<m365_core::SnapshotPage, SourceError>) -> String {
    match result {
        Err(SourceError::CursorExpired(message)) => message,
        other => panic!("expected CursorExpired, got {other:?}"),
    }
}

#[tokio::test]
async fn pages_hold_page_size_user_records_with_every_group_on_the_first() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("source.json");
    std::fs::write(&path, users_json(10)).unwrap();
    let source = source(path.to_str().unwrap());

    let pages = snapshot(&source, 3).await;
    assert_eq!(pages.len(), 4);
    assert_eq!(ids(&pages[0].users), ["u00", "u01", "u02"]);
    assert_eq!(ids(&pages[1].users), ["u03", "u05"]);
    assert_eq!(ids(&pages[2].users), ["u06", "u07", "u08"]);
    assert_eq!(ids(&pages[3].users), ["u09"]);

    let group_ids: Vec<&str> = pages[0].groups.iter().map(|g| g.id.as_str()).collect();
    assert_eq!(group_ids, ["g1", "g2"]);
    for page in &pages[1..] {
        assert!(page.groups.is_empty());
    }
    // The broken record's error is on the page where the record sits, and counts toward its size.
    assert_eq!(pages[0].errors, vec![]);
    assert_eq!(
        pages[1].errors,
        vec![record_error(
            "users[4]",
            Some("u04"),
            "enabled value \"perhaps\" is neither true (true, 1, yes, enabled) nor false (false, \
             0, no, disabled)"
        )]
    );
    assert_eq!(pages[2].errors, vec![]);
    assert_eq!(pages[3].errors, vec![]);
    assert_eq!(pages[3].next, None);

    let cursor = pages[0].next.clone().unwrap().0;
    assert_eq!(cursor["v"], json!(1));
    assert_eq!(cursor["offset"], json!(3));
    assert!(cursor["version"].as_str().unwrap().starts_with("json="));
    assert_eq!(cursor.as_object().unwrap().len(), 3);
    assert_eq!(pages[1].next.clone().unwrap().0["offset"], json!(6));
}

#[tokio::test]
async fn a_stored_cursor_resumes_in_a_fresh_source() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("source.json");
    std::fs::write(&path, users_json(10)).unwrap();
    let first = source(path.to_str().unwrap());
    let page0 = first.snapshot_page(None, 3).await.unwrap();
    let stored = serde_json::to_string(&page0.next.unwrap()).unwrap();

    // Another process: a new source, no cache.
    let second = source(path.to_str().unwrap());
    let cursor: SourceCursor = serde_json::from_str(&stored).unwrap();
    let page1 = second.snapshot_page(Some(&cursor), 3).await.unwrap();
    assert_eq!(ids(&page1.users), ["u03", "u05"]);
    assert!(page1.groups.is_empty());
}

#[tokio::test]
async fn a_file_changed_mid_snapshot_expires_the_cursor() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("source.json");
    let location = path.to_str().unwrap().to_owned();
    std::fs::write(&path, users_json(10)).unwrap();
    let source = source(&location);
    let page0 = source.snapshot_page(None, 3).await.unwrap();

    std::fs::write(&path, users_json(12)).unwrap();
    let message = expired(source.snapshot_page(page0.next.as_ref(), 3).await);
    assert!(
        message.starts_with(&format!(
            "{location} changed since the snapshot started (version json="
        )),
        "{message}"
    );
    assert!(message.ends_with("; restart the snapshot"), "{message}");

    // The restarted snapshot reads the new version whole.
    let pages = snapshot(&source, 3).await;
    let total: usize = pages.iter().map(|p| p.users.len() + p.errors.len()).sum();
    assert_eq!(total, 12);
}

#[tokio::test]
async fn a_groups_csv_appearing_mid_snapshot_expires_the_cursor() {
    let dir = tempfile::tempdir().unwrap();
    let location = dir.path().to_str().unwrap().to_owned();
    std::fs::write(
        dir.path().join("users.csv"),
        "id,enabled\nu1,true\nu2,true\nu3,true\n",
    )
    .unwrap();
    let source = source(&location);
    let page0 = source.snapshot_page(None, 2).await.unwrap();
    assert_eq!(ids(&page0.users), ["u1", "u2"]);
    assert!(
        page0.next.as_ref().unwrap().0["version"]
            .as_str()
            .unwrap()
            .ends_with(";groups.csv=absent")
    );

    std::fs::write(dir.path().join("groups.csv"), "id,name,members\ng1,G,u1\n").unwrap();
    let message = expired(source.snapshot_page(page0.next.as_ref(), 2).await);
    assert!(
        message.starts_with(&format!("{location} changed since the snapshot started")),
        "{message}"
    );
}

#[tokio::test]
async fn foreign_or_stale_cursors_expire() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("source.json");
    std::fs::write(&path, users_json(5)).unwrap();
    let source = source(path.to_str().unwrap());
    let version = source.snapshot_page(None, 2).await.unwrap().next.unwrap().0["version"].clone();

    let v2 = SourceCursor(json!({"v": 2, "version": version, "offset": 2}));
    assert_eq!(
        expired(source.snapshot_page(Some(&v2), 2).await),
        "file-source cursor format v2 (this build reads v1)"
    );
    let ldap = SourceCursor(json!({"cookie": "abc"}));
    let message = expired(source.snapshot_page(Some(&ldap), 2).await);
    assert!(
        message.starts_with("not a file-source cursor ("),
        "{message}"
    );
    assert!(message.ends_with("): {\"cookie\":\"abc\"}"), "{message}");
    let past = SourceCursor(json!({"v": 1, "version": version, "offset": 99}));
    assert_eq!(
        expired(source.snapshot_page(Some(&past), 2).await),
        format!(
            "cursor offset 99 is past the 5 user records of {}",
            path.to_str().unwrap()
        )
    );
}

#[tokio::test]
async fn an_empty_user_list_is_one_final_page() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("source.json");
    std::fs::write(&path, r#"{"users": [], "groups": []}"#).unwrap();
    let pages = snapshot(&source(path.to_str().unwrap()), 10).await;
    assert_eq!(pages.len(), 1);
    assert_eq!(pages[0], m365_core::SnapshotPage::default());
}

/// Counts the loads of the local loader underneath.
#[derive(Default)]
struct CountingLoader {
    loads: AtomicUsize,
}

#[async_trait]
impl FileLoader for CountingLoader {
    async fn load(&self, location: &str) -> Result<Vec<u8>, SourceError> {
        self.loads.fetch_add(1, Ordering::SeqCst);
        LocalFileLoader.load(location).await
    }
    async fn version(&self, location: &str) -> Result<String, SourceError> {
        LocalFileLoader.version(location).await
    }
    async fn exists(&self, location: &str) -> Result<bool, SourceError> {
        LocalFileLoader.exists(location).await
    }
}

#[tokio::test]
async fn a_snapshot_of_many_pages_reads_and_parses_the_file_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("source.json");
    std::fs::write(&path, users_json(10)).unwrap();
    let loader = Arc::new(CountingLoader::default());
    let source = FileSource::new(
        FileSourceConfig::new(path.to_str().unwrap()),
        Arc::clone(&loader) as Arc<dyn FileLoader>,
    )
    .unwrap();
    assert_eq!(snapshot(&source, 2).await.len(), 5);
    assert!(source.fetch_user("u09").await.unwrap().is_some());
    assert_eq!(loader.loads.load(Ordering::SeqCst), 1);

    std::fs::write(&path, users_json(11)).unwrap();
    assert!(source.fetch_user("u10").await.unwrap().is_some());
    assert_eq!(loader.loads.load(Ordering::SeqCst), 2);
}

/// A file that is rewritten on every look.
#[derive(Default)]
struct RestlessLoader {
    versions: AtomicUsize,
}

#[async_trait]
impl FileLoader for RestlessLoader {
    async fn load(&self, _location: &str) -> Result<Vec<u8>, SourceError> {
        Ok(br#"{"users": []}"#.to_vec())
    }
    async fn version(&self, _location: &str) -> Result<String, SourceError> {
        Ok(self.versions.fetch_add(1, Ordering::SeqCst).to_string())
    }
    async fn exists(&self, _location: &str) -> Result<bool, SourceError> {
        Ok(true)
    }
}

#[tokio::test]
async fn a_file_that_keeps_changing_while_read_is_unavailable() {
    let source = FileSource::new(
        FileSourceConfig::new("mem://restless.json"),
        Arc::new(RestlessLoader::default()),
    )
    .unwrap();
    match source.snapshot_page(None, 10).await {
        Err(e @ SourceError::Unavailable(_)) => {
            assert!(e.is_retryable());
            assert_eq!(
                e.to_string(),
                "the source cannot be read: mem://restless.json: the file kept changing while \
                 being read (3 attempts); try again"
            );
        }
        other => panic!("expected Unavailable, got {other:?}"),
    }
}

#[tokio::test]
async fn a_large_page_holds_what_small_pages_hold_in_file_order() {
    // Large enough to be read on every core; broken records spread through it.
    let users: Vec<serde_json::Value> = (0..700)
        .map(|i| match i % 97 {
            5 => json!({"id": format!("u{i:03}"), "enabled": "perhaps"}),
            11 => json!({"id": format!("u{i:03}"), "enabled": true, "colour": "red"}),
            13 => json!(i),
            _ => json!({"id": format!("u{i:03}"), "enabled": i % 2 == 0, "attributes": {"n": i}}),
        })
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("source.json");
    std::fs::write(&path, json!({"users": users, "groups": []}).to_string()).unwrap();

    let whole = source(path.to_str().unwrap())
        .snapshot_page(None, 1_000)
        .await
        .unwrap();
    let singles = snapshot(&source(path.to_str().unwrap()), 1).await;
    let users: Vec<_> = singles.iter().flat_map(|p| p.users.clone()).collect();
    let errors: Vec<_> = singles.iter().flat_map(|p| p.errors.clone()).collect();
    assert_eq!(whole.users, users);
    assert_eq!(whole.errors, errors);
    assert_eq!(whole.users.len(), 700 - 3 * 8);
    assert_eq!(whole.errors.len(), 3 * 8);
    assert_eq!(whole.errors[0].location, "users[5]");
    assert_eq!(whole.errors[2].location, "users[13]");
    assert_eq!(whole.errors[2].source_id, None);
    assert_eq!(whole.users[1].id, "u001");
    assert!(!whole.users[1].enabled);
}
