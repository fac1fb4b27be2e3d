//! Helpers shared by the integration tests.
#![allow(
    dead_code,
    reason = "each test file uses a different subset of the helpers"
)]

use m365_core::{RecordError, SnapshotPage, Source, SourceCursor, SourceError};
use m365_source_file::{FileSource, FileSourceConfig};

/// The path of a file under `tests/fixtures`.
pub fn fixture(relative: &str) -> String {
    format!("{}/tests/fixtures/{relative}", env!("CARGO_MANIFEST_DIR"))
}

pub fn source(location: &str) -> FileSource {
    FileSource::local(FileSourceConfig::new(location)).unwrap()
}

/// Every page of a snapshot, each cursor stored as JSON text and read back in between, as the
/// engine does through the state store.
pub async fn snapshot(source: &dyn Source, page_size: usize) -> Vec<SnapshotPage> {
    let mut pages = Vec::new();
    let mut cursor: Option<SourceCursor> = None;
    loop {
        let page = source
            .snapshot_page(cursor.as_ref(), page_size)
            .await
            .unwrap();
        let next = page.next.clone();
        pages.push(page);
        match next {
            Some(next) => {
                let stored = serde_json::to_string(&next).unwrap();
                cursor = Some(serde_json::from_str(&stored).unwrap());
            }
            None => return pages,
        }
        assert!(pages.len() < 10_000, "the snapshot never ends");
    }
}

/// One page holding everything.
pub async fn whole(source: &dyn Source) -> SnapshotPage {
    let mut pages = snapshot(source, 1_000_000).await;
    assert_eq!(pages.len(), 1);
    pages.remove(0)
}

pub fn record_error(location: &str, source_id: Option<&str>, message: &str) -> RecordError {
    // Group records are located in groups[..] / groups.csv.
    let kind = if location.starts_with("groups") {
        m365_core::ObjectKind::Group
    } else {
        m365_core::ObjectKind::User
    };
    RecordError {
        kind,
        location: location.to_owned(),
        source_id: source_id.map(str::to_owned),
        message: message.to_owned(),
    }
}

pub fn unreadable(result: Result<SnapshotPage, SourceError>) -> String {
    match result {
        Err(SourceError::Unreadable(message)) => message,
        other => panic!("expected Unreadable, got {other:?}"),
    }
}

pub fn unavailable(result: Result<SnapshotPage, SourceError>) -> String {
    match result {
        Err(SourceError::Unavailable(message)) => message,
        other => panic!("expected Unavailable, got {other:?}"),
    }
}
