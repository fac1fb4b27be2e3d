//! The StateStore conformance suite on SQLite (a file and in memory), then what only a file store
//! can show: reopening, two stores on one file, a refused future schema, a 100k-link scan.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests: a broken expectation must stop the test"
)]

use std::collections::BTreeMap;
use std::time::Instant;

use m365_core::conformance;
use m365_core::state::EventClaim;
use m365_core::{
    Checkpoint, Link, LinkOrigin, ObjectError, ObjectKind, Phase, RunRecord, RunStatus, StateError,
    StateStore,
};
use m365_state_sqlite::{SCHEMA_VERSION, SqliteStateStore};

#[tokio::test]
async fn conformance_on_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStateStore::open(dir.path().join("nested/folder/state.db")).unwrap();
    conformance::run_all(&store).await;
}

#[tokio::test]
async fn conformance_in_memory() {
    let store = SqliteStateStore::in_memory().unwrap();
    conformance::run_all(&store).await;
}

/// One check alone, on the multi-threaded runtime: nothing depends on running on one thread.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_check_alone_multi_thread() {
    let store = SqliteStateStore::in_memory().unwrap();
    conformance::checkpoint_after_takeover_fenced(&store).await;
    conformance::lease_tokens_never_reused(&store).await;
}

fn link(i: u64) -> Link {
    Link {
        kind: ObjectKind::User,
        source_id: format!("src-{i:06}"),
        object_id: format!("00000000-0000-0000-0000-{i:012}"),
        origin: LinkOrigin::Created,
        hash: format!("{i:064x}"),
        applied: BTreeMap::from([
            (
                "displayName".to_owned(),
                serde_json::json!(format!("User {i}")),
            ),
            (
                "userPrincipalName".to_owned(),
                serde_json::json!(format!("user{i}@example.com")),
            ),
            ("department".to_owned(), serde_json::json!("Accounting")),
            ("jobTitle".to_owned(), serde_json::json!("Clerk")),
        ]),
        enabled: true,
        licenses: vec![m365_core::LicenseAssignment {
            sku_id: "c7df2760-2c81-4ef7-b578-5b5392b571df".to_owned(),
            disabled_plans: Vec::new(),
        }],
        manager: Some(format!("src-{:06}", i / 10)),
        members: Vec::new(),
        seen_generation: 1,
        updated_at: 1_700_000_000_000,
        deleted_at: None,
    }
}

#[tokio::test]
async fn reopening_a_file_keeps_everything() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let c = "reopen";
    let links = vec![link(1), link(2)];
    let checkpoint = Checkpoint {
        drift: None,
        generation: 4,
        phase: Phase::Sweep {
            after: Some("src-000001".to_owned()),
        },
        sweep_allowed: true,
        changes_cursor: None,
        last_complete_at: Some(5),
        updated_at: 6,
    };
    let error = ObjectError {
        kind: ObjectKind::User,
        source_id: "src-000002".to_owned(),
        operation: "create".to_owned(),
        message: "userPrincipalName: domain not verified".to_owned(),
        attempts: 3,
        first_failed_at: 1,
        last_failed_at: 2,
        next_retry_at: 3,
    };
    let run = RunRecord {
        id: "run-1".to_owned(),
        started_at: 10,
        finished_at: Some(20),
        status: RunStatus::Succeeded,
        counts: m365_core::RunCounts {
            created: 2,
            ..Default::default()
        },
        message: None,
    };
    let lease = {
        let store = SqliteStateStore::open(&path).unwrap();
        let lease = conformance::acquire(&store, c, "run-1", 1_000, 60_000).await;
        store.put_links(c, &links, &lease).await.unwrap();
        store.put_checkpoint(c, &checkpoint, &lease).await.unwrap();
        store.put_error(c, &error, &lease).await.unwrap();
        store.put_run(c, &run, &lease).await.unwrap();
        assert!(
            store
                .remember_event(c, "evt-1", 1_000, 90_000)
                .await
                .unwrap()
                == EventClaim::New
        );
        store.complete_event(c, "evt-1", 90_000).await.unwrap();
        lease
    }; // dropped: the connection is closed

    let store = SqliteStateStore::open(&path).unwrap();
    let listed = store
        .list_links(c, ObjectKind::User, None, 10)
        .await
        .unwrap();
    assert_eq!(listed, links);
    assert_eq!(
        store.get_checkpoint(c).await.unwrap(),
        Some(checkpoint.clone())
    );
    assert_eq!(store.list_errors(c, 10).await.unwrap(), vec![error]);
    assert_eq!(store.list_runs(c, 10).await.unwrap(), vec![run]);
    assert!(
        store
            .remember_event(c, "evt-1", 2_000, 90_000)
            .await
            .unwrap()
            == EventClaim::Done
    );
    // The lease survived the restart: still held, still the newest token.
    assert_eq!(
        conformance::try_acquire(&store, c, "run-2", 2_000, 60_000).await,
        None
    );
    store.put_checkpoint(c, &checkpoint, &lease).await.unwrap();
    let renewed = store.renew_lease(&lease, 2_000, 60_000).await.unwrap();
    assert_eq!(renewed.map(|l| l.token), Some(lease.token));
}

#[tokio::test]
async fn two_stores_on_one_file_share_the_lease() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let first = SqliteStateStore::open(&path).unwrap();
    let second = SqliteStateStore::open(&path).unwrap();
    let c = "shared";

    let lease = conformance::acquire(&first, c, "process-1", 1_000, 5_000).await;
    assert_eq!(
        conformance::try_acquire(&second, c, "process-2", 2_000, 5_000).await,
        None
    );
    let taken = conformance::acquire(&second, c, "process-2", 6_000, 5_000).await;
    assert!(taken.token > lease.token);
    assert_eq!(first.renew_lease(&lease, 6_001, 5_000).await.unwrap(), None);

    let checkpoint = Checkpoint {
        drift: None,
        generation: 1,
        phase: Phase::Idle,
        sweep_allowed: false,
        changes_cursor: None,
        last_complete_at: None,
        updated_at: 6_000,
    };
    second.put_checkpoint(c, &checkpoint, &taken).await.unwrap();
    match first.put_checkpoint(c, &checkpoint, &lease).await {
        Err(StateError::Fenced {
            presented, current, ..
        }) => {
            assert_eq!((presented, current), (lease.token, taken.token));
        }
        other => panic!("the first process must be fenced, got {other:?}"),
    }
    assert!(matches!(
        first.put_links(c, &[link(7)], &lease).await,
        Err(StateError::Fenced { .. })
    ));
    second.put_links(c, &[link(7)], &taken).await.unwrap();
    assert_eq!(first.count_links(c, ObjectKind::User).await.unwrap(), 1);
}

#[tokio::test]
async fn concurrent_acquisitions_from_two_stores_have_one_winner() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let stores: Vec<SqliteStateStore> = (0..2)
        .map(|_| SqliteStateStore::open(&path).unwrap())
        .collect();
    for round in 0..20i64 {
        let now = round * 1_000;
        let (a, b) = tokio::join!(
            conformance::try_acquire(&stores[0], "race", "a", now, 500),
            conformance::try_acquire(&stores[1], "race", "b", now, 500),
        );
        let winners = [a, b].into_iter().flatten().count();
        assert_eq!(
            winners, 1,
            "round {round}: exactly one process gets the lease"
        );
    }
}

#[test]
fn a_newer_schema_is_refused_and_left_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    drop(SqliteStateStore::open(&path).unwrap());
    let future = SCHEMA_VERSION + 7;
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.pragma_update(None, "user_version", future).unwrap();
    }
    let err = SqliteStateStore::open(&path).unwrap_err();
    let message = err.to_string();
    assert!(matches!(err, StateError::Corrupt(_)), "{err:?}");
    assert!(!err.is_retryable());
    assert!(
        message.contains(&path.display().to_string()),
        "names the file: {message}"
    );
    assert!(
        message.contains(&format!("version {future}")),
        "names the version: {message}"
    );
    let conn = rusqlite::Connection::open(&path).unwrap();
    let version: i64 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .unwrap();
    assert_eq!(version, future, "the file was not modified");
}

#[test]
fn a_foreign_database_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("other.db");
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute_batch("CREATE TABLE notes (body TEXT)")
            .unwrap();
    }
    let err = SqliteStateStore::open(&path).unwrap_err();
    assert!(matches!(err, StateError::Corrupt(_)), "{err:?}");
    assert!(
        err.to_string()
            .contains("not an m365-provisioner state database"),
        "{err}"
    );

    let garbage = dir.path().join("garbage.db");
    std::fs::write(&garbage, vec![0x42u8; 8192]).unwrap();
    let err = SqliteStateStore::open(&garbage).unwrap_err();
    assert!(matches!(err, StateError::Corrupt(_)), "{err:?}");
    assert!(err.to_string().contains("garbage.db"), "{err}");
}

#[test]
fn the_file_uses_wal_and_full_sync() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let _store = SqliteStateStore::open(&path).unwrap();
    let conn = rusqlite::Connection::open(&path).unwrap();
    let mode: String = conn
        .pragma_query_value(None, "journal_mode", |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
    let version: i64 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .unwrap();
    assert_eq!(version, SCHEMA_VERSION);
}

/// 100k links put in batches of 1,000, then listed in full in pages of 1,000. Prints the scan
/// time (run with `--release --nocapture` for the performance model); asserts only correctness.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_thousand_links_round_trip() {
    const N: u64 = 100_000;
    const PAGE: usize = 1_000;
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStateStore::open(dir.path().join("state.db")).unwrap();
    let c = "scale";

    let lease = conformance::writer(&store, c).await;
    let started = Instant::now();
    let all: Vec<Link> = (0..N).map(link).collect();
    for batch in all.chunks(PAGE) {
        store.put_links(c, batch, &lease).await.unwrap();
    }
    let put = started.elapsed();
    assert_eq!(store.count_links(c, ObjectKind::User).await.unwrap(), N);

    let started = Instant::now();
    let mut seen = 0usize;
    let mut after: Option<String> = None;
    let mut pages = 0;
    loop {
        let page = store
            .list_links(c, ObjectKind::User, after.as_deref(), PAGE)
            .await
            .unwrap();
        let Some(last) = page.last() else { break };
        assert_eq!(
            page[0], all[seen],
            "page {pages} starts where the last ended"
        );
        seen += page.len();
        after = Some(last.source_id.clone());
        pages += 1;
    }
    let scan = started.elapsed();
    assert_eq!(seen, all.len());
    println!(
        "sqlite 100k links: put in batches of {PAGE}: {:.0} ms; full list_links scan ({pages} \
         pages of {PAGE}): {:.0} ms ({:.1} µs/link)",
        put.as_secs_f64() * 1e3,
        scan.as_secs_f64() * 1e3,
        scan.as_secs_f64() * 1e6 / N as f64
    );
}
