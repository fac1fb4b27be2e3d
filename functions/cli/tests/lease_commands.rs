//! The run lease as an operator meets it: a held connection exits 6 naming its holder, `unlock`
//! frees it (with confirmation), and a lease left by a dead process of this host is taken over
//! at once.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a broken expectation should fail loudly"
)]

mod support;

use std::process::Command;

use m365_core::{Clock as _, LeaseHolder, StateStore as _, SystemClock, conformance};
use m365_state_sqlite::SqliteStateStore;
use support::{examples_copy, run, text};

/// The examples' connection and rule: the state key of their lease.
const KEY: &str = "contoso-demo/staff";

fn state(dir: &tempfile::TempDir) -> SqliteStateStore {
    SqliteStateStore::open(dir.path().join(".state/contoso-demo.sqlite")).unwrap()
}

async fn hold(store: &SqliteStateStore, holder: LeaseHolder) -> m365_core::Lease {
    match store
        .acquire_lease(KEY, &holder, SystemClock.now(), 60_000)
        .await
        .unwrap()
    {
        m365_core::LeaseGrant::Acquired(lease) => lease,
        m365_core::LeaseGrant::Busy(held) => panic!("held already: {held:?}"),
    }
}

#[tokio::test]
async fn a_held_connection_exits_6_naming_its_holder_and_unlock_frees_it() {
    let (dir, config) = examples_copy();
    let store = state(&dir);
    let held = hold(
        &store,
        LeaseHolder {
            owner: "m365-provisioner sync".to_owned(),
            host: Some("build-agent-7".to_owned()),
            pid: Some(4242),
        },
    )
    .await;

    let busy = run(&["sync"], &config);
    let said = text(&busy);
    assert_eq!(busy.status.code(), Some(6), "{said}");
    for part in [
        "m365-provisioner sync",
        "process 4242 on build-agent-7",
        "since",
        "unlock",
    ] {
        assert!(said.contains(part), "busy names {part:?}: {said}");
    }

    // No terminal and no --yes: nothing is unlocked.
    let refused = run(&["unlock"], &config);
    assert_eq!(refused.status.code(), Some(2), "{}", text(&refused));
    assert!(
        text(&refused).contains("build-agent-7"),
        "{}",
        text(&refused)
    );
    assert_eq!(
        store.get_lease(KEY, SystemClock.now()).await.unwrap(),
        Some(held.clone())
    );

    let unlocked = run(&["unlock", "--yes"], &config);
    assert_eq!(unlocked.status.code(), Some(0), "{}", text(&unlocked));
    assert!(text(&unlocked).contains("unlocked"), "{}", text(&unlocked));
    assert_eq!(store.get_lease(KEY, SystemClock.now()).await.unwrap(), None);

    let synced = run(&["sync"], &config);
    assert_eq!(synced.status.code(), Some(0), "{}", text(&synced));
    // The old holder's writes are refused from now on.
    let fenced = store
        .put_links(KEY, &[], &held)
        .await
        .and(store.put_run(KEY, &sample_run(), &held).await);
    assert!(
        matches!(fenced, Err(m365_core::StateError::Fenced { .. })),
        "{fenced:?}"
    );

    let nothing = run(&["unlock", "--yes"], &config);
    assert_eq!(nothing.status.code(), Some(0));
    assert!(text(&nothing).contains("not locked"), "{}", text(&nothing));
}

fn sample_run() -> m365_core::RunRecord {
    m365_core::RunRecord {
        id: "stale".to_owned(),
        started_at: 1,
        finished_at: None,
        status: m365_core::RunStatus::Running,
        counts: Default::default(),
        message: None,
    }
}

#[tokio::test]
async fn a_lease_left_by_a_dead_process_of_this_host_is_taken_over_at_once() {
    let (dir, config) = examples_copy();
    let store = state(&dir);
    // A process that has ended: its pid is free.
    let mut child = Command::new("true").spawn().unwrap();
    let dead = child.id();
    child.wait().unwrap();
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .unwrap()
        .trim()
        .to_owned();
    let left = hold(
        &store,
        LeaseHolder {
            owner: "m365-provisioner sync".to_owned(),
            host: Some(host.clone()),
            pid: Some(dead),
        },
    )
    .await;

    let synced = run(&["sync"], &config);
    assert_eq!(synced.status.code(), Some(0), "{}", text(&synced));
    let runs = store.list_runs(KEY, 10).await.unwrap();
    assert_eq!(runs.len(), 1, "{runs:?}");

    // A holder of another host is not taken over: it may be alive.
    let other = conformance::acquire(&store, KEY, "other", SystemClock.now(), 60_000).await;
    assert!(other.token > left.token);
    let busy = run(&["sync"], &config);
    assert_eq!(busy.status.code(), Some(6), "{}", text(&busy));
}
