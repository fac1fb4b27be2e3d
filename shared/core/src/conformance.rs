//! The [`StateStore`] conformance suite: the behaviour every adapter must show (SQLite, DynamoDB,
//! any fake used in engine tests). An adapter's integration test calls [`run_all`] on a fresh
//! store, or one check at a time to see which fails.
//!
//! Each check works on its own connection names (`conformance-<check>…`), so one store runs them
//! all; the store must be fresh for those names (a lease left held by an earlier, aborted run
//! would block the lease checks). Times are explicit `now` values, never the clock. A failed
//! expectation panics with what was expected.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a conformance check is a test: a broken expectation must stop it loudly"
)]

use std::collections::BTreeMap;

use serde_json::json;

use crate::model::{LicenseAssignment, ObjectKind};
use crate::source::SourceCursor;
use crate::state::EventClaim;
use crate::state::{
    Checkpoint, HistoryEntry, HistoryResult, Lease, LeaseGrant, LeaseHolder, Link, LinkOrigin,
    ObjectError, Phase, RunRecord, RunStatus, StateError, StateResult, StateStore,
};

/// Runs every check, in order.
pub async fn run_all<S: StateStore + ?Sized>(store: &S) {
    links_put_get_replace_delete(store).await;
    get_links_missing_ids(store).await;
    list_links_paging(store).await;
    kinds_separated(store).await;
    connections_isolated(store).await;
    mark_seen_only_raises(store).await;
    count_links(store).await;
    checkpoint_with_current_lease(store).await;
    checkpoint_stale_token_fenced(store).await;
    checkpoint_after_takeover_fenced(store).await;
    errors_put_get_clear_list(store).await;
    runs_upsert_and_list(store).await;
    lease_acquire_free_and_blocked(store).await;
    lease_after_expiry_greater_token(store).await;
    lease_renew(store).await;
    lease_renew_after_takeover(store).await;
    lease_release_then_acquire(store).await;
    lease_tokens_never_reused(store).await;
    lease_busy_names_holder(store).await;
    lease_break(store).await;
    every_write_fenced(store).await;
    links_found_by_object(store).await;
    deleted_links_kept_and_not_counted(store).await;
    events_remember_and_forget(store).await;
    events_complete(store).await;
    clear_connection_scoped(store).await;
    large_batch(store).await;
    history_per_object_newest_first(store).await;
}

// --- fixtures ---------------------------------------------------------------------------------

fn ids(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

/// A link with every field set to something that would show a lossy round trip (nested JSON,
/// null, floats, non-ASCII).
fn link(kind: ObjectKind, source_id: &str, n: u64) -> Link {
    let applied = BTreeMap::from([
        ("displayName".to_owned(), json!(format!("Ünïcode name {n}"))),
        ("department".to_owned(), json!(null)),
        ("employeeId".to_owned(), json!(n)),
        (
            "extension_x".to_owned(),
            json!({ "nested": [1, 2.5, true, "é"], "empty": {} }),
        ),
    ]);
    let members = match kind {
        ObjectKind::Group => vec![format!("member-a-{n}"), format!("member-b-{n}")],
        ObjectKind::User => Vec::new(),
    };
    Link {
        kind,
        source_id: source_id.to_owned(),
        object_id: format!("{kind}-object-{source_id}-{n}"),
        origin: if n.is_multiple_of(2) {
            LinkOrigin::Created
        } else {
            LinkOrigin::Matched
        },
        hash: format!("hash-{n}"),
        applied,
        enabled: !n.is_multiple_of(3),
        licenses: vec![
            LicenseAssignment {
                sku_id: format!("sku-{n}"),
                disabled_plans: vec!["plan-a".to_owned(), "plan-b".to_owned()],
            },
            LicenseAssignment {
                sku_id: "sku-plain".to_owned(),
                disabled_plans: Vec::new(),
            },
        ],
        manager: Some(format!("manager-of-{source_id}")),
        members,
        seen_generation: n,
        updated_at: 1_700_000_000_000 + i64::try_from(n).unwrap(),
        deleted_at: None,
    }
}

/// The same identity with everything optional emptied, as a replacement.
fn bare_link(kind: ObjectKind, source_id: &str) -> Link {
    Link {
        kind,
        source_id: source_id.to_owned(),
        object_id: format!("replaced-{source_id}"),
        origin: LinkOrigin::Matched,
        hash: "replaced".to_owned(),
        applied: BTreeMap::new(),
        enabled: false,
        licenses: Vec::new(),
        manager: None,
        members: Vec::new(),
        seen_generation: 0,
        updated_at: 1,
        deleted_at: None,
    }
}

fn by_source_id(mut links: Vec<Link>) -> Vec<Link> {
    links.sort_by(|a, b| a.source_id.cmp(&b.source_id));
    links
}

fn checkpoint(generation: u64, phase: Phase, updated_at: i64) -> Checkpoint {
    Checkpoint {
        drift: None,
        generation,
        phase,
        sweep_allowed: generation.is_multiple_of(2),
        changes_cursor: Some(SourceCursor(
            json!({ "usn": generation * 100, "dc": "dc1" }),
        )),
        last_complete_at: Some(updated_at - 10),
        updated_at,
    }
}

fn object_error(
    kind: ObjectKind,
    source_id: &str,
    next_retry_at: i64,
    attempts: u32,
) -> ObjectError {
    ObjectError {
        kind,
        source_id: source_id.to_owned(),
        operation: "update".to_owned(),
        message: format!("{source_id}: mail is not a valid address (attempt {attempts})"),
        attempts,
        first_failed_at: 1_000,
        last_failed_at: 1_000 + i64::from(attempts),
        next_retry_at,
    }
}

fn run(id: &str, started_at: i64, status: RunStatus) -> RunRecord {
    RunRecord {
        id: id.to_owned(),
        started_at,
        finished_at: None,
        status,
        counts: crate::counts::RunCounts::default(),
        message: None,
    }
}

/// A holder named `owner`, with no host or process.
pub fn holder(owner: &str) -> LeaseHolder {
    LeaseHolder {
        owner: owner.to_owned(),
        host: None,
        pid: None,
    }
}

/// Acquires the lease, which must be free.
pub async fn acquire<S: StateStore + ?Sized>(
    store: &S,
    connection: &str,
    owner: &str,
    now: i64,
    ttl: i64,
) -> Lease {
    match store
        .acquire_lease(connection, &holder(owner), now, ttl)
        .await
        .unwrap()
    {
        LeaseGrant::Acquired(lease) => lease,
        LeaseGrant::Busy(held) => {
            panic!("{connection}: {owner} should acquire the free lease at {now}, held by {held:?}")
        }
    }
}

/// `Some(lease)` when acquired, `None` when busy.
pub async fn try_acquire<S: StateStore + ?Sized>(
    store: &S,
    connection: &str,
    owner: &str,
    now: i64,
    ttl: i64,
) -> Option<Lease> {
    match store
        .acquire_lease(connection, &holder(owner), now, ttl)
        .await
        .unwrap()
    {
        LeaseGrant::Acquired(lease) => Some(lease),
        LeaseGrant::Busy(_) => None,
    }
}

/// The lease a check writes with: taken at time 0 and expired at once, which does not matter:
/// fencing is by token, so it fences nothing until someone acquires the lease again.
pub async fn writer<S: StateStore + ?Sized>(store: &S, connection: &str) -> Lease {
    acquire(store, connection, "conformance-writer", 0, 1).await
}

#[track_caller]
fn assert_fenced(result: StateResult<()>, connection: &str, presented: u64, current: u64) {
    match result {
        Err(StateError::Fenced {
            connection: c,
            presented: p,
            current: cur,
        }) => {
            assert_eq!(c, connection, "Fenced names the connection");
            assert_eq!(p, presented, "Fenced.presented is the token written with");
            assert_eq!(cur, current, "Fenced.current is the newest token");
        }
        other => panic!("{connection}: expected StateError::Fenced, got {other:?}"),
    }
}

// --- links ------------------------------------------------------------------------------------

/// Put, get, replace (every field, including emptying optional ones) and delete.
pub async fn links_put_get_replace_delete<S: StateStore + ?Sized>(store: &S) {
    let c = "conformance-links-crud";
    let w = writer(store, c).await;
    let (u1, u2) = (
        link(ObjectKind::User, "u1", 1),
        link(ObjectKind::User, "u2", 2),
    );
    store
        .put_links(c, &[u1.clone(), u2.clone()], &w)
        .await
        .unwrap();
    store.put_links(c, &[], &w).await.unwrap();
    let got = store
        .get_links(c, ObjectKind::User, &ids(&["u1", "u2"]))
        .await
        .unwrap();
    assert_eq!(
        by_source_id(got),
        vec![u1.clone(), u2.clone()],
        "round trip"
    );

    let replaced = bare_link(ObjectKind::User, "u1");
    store
        .put_links(c, std::slice::from_ref(&replaced), &w)
        .await
        .unwrap();
    let got = store
        .get_links(c, ObjectKind::User, &ids(&["u1", "u2"]))
        .await
        .unwrap();
    assert_eq!(
        by_source_id(got),
        vec![replaced.clone(), u2.clone()],
        "replaced whole"
    );

    // Replacing back restores the full value: nothing of the bare one sticks.
    store
        .put_links(c, std::slice::from_ref(&u1), &w)
        .await
        .unwrap();
    let got = store
        .get_links(c, ObjectKind::User, &ids(&["u1"]))
        .await
        .unwrap();
    assert_eq!(got, vec![u1.clone()], "replaced again");

    store
        .delete_links(c, ObjectKind::User, &ids(&["u1", "never-there"]), &w)
        .await
        .unwrap();
    let got = store
        .get_links(c, ObjectKind::User, &ids(&["u1", "u2"]))
        .await
        .unwrap();
    assert_eq!(got, vec![u2.clone()], "u1 deleted, u2 kept");
    store
        .delete_links(c, ObjectKind::User, &ids(&["u1"]), &w)
        .await
        .unwrap();
    store
        .delete_links(c, ObjectKind::User, &[], &w)
        .await
        .unwrap();
    assert_eq!(store.count_links(c, ObjectKind::User).await.unwrap(), 1);
}

/// Missing ids are absent from the result; repeated ids give one link.
pub async fn get_links_missing_ids<S: StateStore + ?Sized>(store: &S) {
    let c = "conformance-links-missing";
    let w = writer(store, c).await;
    let (a, b) = (
        link(ObjectKind::User, "a", 1),
        link(ObjectKind::User, "c", 3),
    );
    store
        .put_links(c, &[a.clone(), b.clone()], &w)
        .await
        .unwrap();
    let cases: &[(&[&str], Vec<Link>)] = &[
        (&["0", "a", "b", "c", "d"], vec![a.clone(), b.clone()]),
        (&["c", "a"], vec![a.clone(), b.clone()]),
        (&["a", "a", "a"], vec![a.clone()]),
        (&["x", "y"], vec![]),
        (&[], vec![]),
    ];
    for (asked, expected) in cases {
        let got = store
            .get_links(c, ObjectKind::User, &ids(asked))
            .await
            .unwrap();
        assert_eq!(by_source_id(got), *expected, "get_links {asked:?}");
    }
}

/// Pages in source-id (UTF-8 byte) order, after `after`, at most `limit`.
pub async fn list_links_paging<S: StateStore + ?Sized>(store: &S) {
    let c = "conformance-links-paging";
    let w = writer(store, c).await;
    let empty = store
        .list_links(c, ObjectKind::User, None, 10)
        .await
        .unwrap();
    assert!(empty.is_empty(), "an empty connection lists nothing");

    // Inserted out of order; includes case, digits-as-text and non-ASCII ordering.
    let names = [
        "u-07", "Zeta", "u-01", "émile", "10", "9", "alpha", "Ärger", "u-03", "u-02", "u-05",
        "u-04", "u-06", "u-08", "u-09", "u-10", "u-11", "b", "B", "日本", "u-12", "a b", "a-b",
    ];
    let links: Vec<Link> = names
        .iter()
        .zip(1..)
        .map(|(id, n)| link(ObjectKind::User, id, n))
        .collect();
    store.put_links(c, &links, &w).await.unwrap();
    store
        .put_links(c, &[link(ObjectKind::Group, "a-group", 1)], &w)
        .await
        .unwrap();
    let all = by_source_id(links.clone()); // String order is byte order
    let n = all.len();
    let id = |i: usize| all[i].source_id.clone();
    let pos = |id: &str| all.iter().position(|l| l.source_id == id).unwrap();

    let cases: Vec<(Option<String>, usize, Vec<Link>)> = vec![
        (None, 100, all.clone()),
        (None, n, all.clone()),
        (None, 10, all[..10].to_vec()),
        (Some(id(9)), 10, all[10..20].to_vec()),
        (Some(id(19)), 10, all[20..].to_vec()),
        (Some(id(n - 1)), 10, vec![]),
        (None, 0, vec![]),
        // `after` need not be a stored id: "u-05" < "u-055" < "u-06".
        (
            Some("u-055".to_owned()),
            2,
            vec![all[pos("u-06")].clone(), all[pos("u-07")].clone()],
        ),
        (Some(String::new()), 3, all[..3].to_vec()),
    ];
    for (after, limit, expected) in cases {
        let got = store
            .list_links(c, ObjectKind::User, after.as_deref(), limit)
            .await
            .unwrap();
        assert_eq!(got, expected, "list_links after {after:?} limit {limit}");
        let ids = store
            .list_link_ids(c, ObjectKind::User, after.as_deref(), limit)
            .await
            .unwrap();
        let expected_ids: Vec<String> = expected.iter().map(|l| l.source_id.clone()).collect();
        assert_eq!(
            ids, expected_ids,
            "list_link_ids after {after:?} limit {limit}"
        );
    }

    // Walk the whole set in pages of 7: more than one page, last one short.
    let mut walked = Vec::new();
    let mut after: Option<String> = None;
    let mut pages = 0;
    loop {
        let page = store
            .list_links(c, ObjectKind::User, after.as_deref(), 7)
            .await
            .unwrap();
        pages += 1;
        assert!(page.len() <= 7, "a page holds at most `limit` links");
        let Some(last) = page.last() else { break };
        after = Some(last.source_id.clone());
        let short = page.len() < 7;
        walked.extend(page);
        if short {
            break;
        }
    }
    assert_eq!(walked, all, "paging visits every link once, in order");
    assert_eq!(
        pages,
        n.div_ceil(7) + usize::from(n.is_multiple_of(7)),
        "pages walked"
    );
}

/// Users and groups with the same source id are different links.
pub async fn kinds_separated<S: StateStore + ?Sized>(store: &S) {
    let c = "conformance-kinds";
    let w = writer(store, c).await;
    let (user, group) = (
        link(ObjectKind::User, "same", 1),
        link(ObjectKind::Group, "same", 2),
    );
    store
        .put_links(c, &[user.clone(), group.clone()], &w)
        .await
        .unwrap();
    let same = ids(&["same"]);
    assert_eq!(
        store.get_links(c, ObjectKind::User, &same).await.unwrap(),
        vec![user.clone()]
    );
    assert_eq!(
        store.get_links(c, ObjectKind::Group, &same).await.unwrap(),
        vec![group.clone()]
    );
    assert_eq!(
        store
            .list_links(c, ObjectKind::Group, None, 10)
            .await
            .unwrap(),
        vec![group.clone()]
    );
    assert_eq!(store.count_links(c, ObjectKind::User).await.unwrap(), 1);
    assert_eq!(store.count_links(c, ObjectKind::Group).await.unwrap(), 1);

    store
        .mark_seen(c, ObjectKind::User, &same, 50, &w)
        .await
        .unwrap();
    let got = store.get_links(c, ObjectKind::Group, &same).await.unwrap();
    assert_eq!(
        got[0].seen_generation, 2,
        "mark_seen of users leaves groups"
    );

    store
        .delete_links(c, ObjectKind::User, &same, &w)
        .await
        .unwrap();
    assert!(
        store
            .get_links(c, ObjectKind::User, &same)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        store.get_links(c, ObjectKind::Group, &same).await.unwrap(),
        vec![group]
    );
}

/// Two connections never see each other's links, nor block each other's lease.
pub async fn connections_isolated<S: StateStore + ?Sized>(store: &S) {
    let (a, b) = ("conformance-isolation-a", "conformance-isolation-b");
    let w = writer(store, a).await;
    let wb = writer(store, b).await;
    let (la, lb) = (
        link(ObjectKind::User, "x", 1),
        link(ObjectKind::User, "x", 2),
    );
    store
        .put_links(a, std::slice::from_ref(&la), &w)
        .await
        .unwrap();
    store
        .put_links(b, &[lb.clone(), link(ObjectKind::User, "y", 3)], &wb)
        .await
        .unwrap();
    let x = ids(&["x"]);
    assert_eq!(
        store.get_links(a, ObjectKind::User, &x).await.unwrap(),
        vec![la.clone()]
    );
    assert_eq!(
        store.get_links(b, ObjectKind::User, &x).await.unwrap(),
        vec![lb.clone()]
    );
    assert_eq!(
        store
            .list_links(a, ObjectKind::User, None, 10)
            .await
            .unwrap(),
        vec![la]
    );
    assert_eq!(store.count_links(b, ObjectKind::User).await.unwrap(), 2);

    store
        .delete_links(a, ObjectKind::User, &x, &w)
        .await
        .unwrap();
    assert_eq!(
        store.get_links(b, ObjectKind::User, &x).await.unwrap(),
        vec![lb]
    );

    let lease_a = acquire(store, a, "owner", 1_000, 60_000).await;
    let lease_b = acquire(store, b, "owner", 1_000, 60_000).await;
    assert_eq!(
        (lease_a.connection.as_str(), lease_b.connection.as_str()),
        (a, b)
    );
}

/// `mark_seen` only raises `seen_generation`, touches nothing else and creates no link.
pub async fn mark_seen_only_raises<S: StateStore + ?Sized>(store: &S) {
    let c = "conformance-mark-seen";
    let w = writer(store, c).await;
    let (high, low) = (
        link(ObjectKind::User, "high", 5),
        link(ObjectKind::User, "low", 1),
    );
    store
        .put_links(c, &[high.clone(), low.clone()], &w)
        .await
        .unwrap();
    let cases: &[(u64, u64, u64)] = &[
        // generation marked, expected high, expected low
        (3, 5, 3),
        (3, 5, 3),
        (2, 5, 3),
        (5, 5, 5),
        (9, 9, 9),
    ];
    for &(generation, want_high, want_low) in cases {
        store
            .mark_seen(
                c,
                ObjectKind::User,
                &ids(&["high", "low", "absent"]),
                generation,
                &w,
            )
            .await
            .unwrap();
        let got = store
            .get_links(c, ObjectKind::User, &ids(&["high", "low"]))
            .await
            .unwrap();
        let expected = vec![
            Link {
                seen_generation: want_high,
                ..high.clone()
            },
            Link {
                seen_generation: want_low,
                ..low.clone()
            },
        ];
        assert_eq!(by_source_id(got), expected, "after mark_seen {generation}");
    }
    assert!(
        store
            .get_links(c, ObjectKind::User, &ids(&["absent"]))
            .await
            .unwrap()
            .is_empty(),
        "mark_seen creates no link"
    );
    assert_eq!(store.count_links(c, ObjectKind::User).await.unwrap(), 2);
}

/// Counts per kind follow puts, replacements and deletes.
pub async fn count_links<S: StateStore + ?Sized>(store: &S) {
    let c = "conformance-count";
    let w = writer(store, c).await;
    let count = |kind| async move { store.count_links(c, kind).await.unwrap() };
    assert_eq!(
        (
            count(ObjectKind::User).await,
            count(ObjectKind::Group).await
        ),
        (0, 0)
    );
    let users: Vec<Link> = (0..3)
        .map(|i| link(ObjectKind::User, &format!("u{i}"), i))
        .collect();
    let groups: Vec<Link> = (0..2)
        .map(|i| link(ObjectKind::Group, &format!("g{i}"), i))
        .collect();
    store.put_links(c, &users, &w).await.unwrap();
    store.put_links(c, &groups, &w).await.unwrap();
    assert_eq!(
        (
            count(ObjectKind::User).await,
            count(ObjectKind::Group).await
        ),
        (3, 2)
    );
    store.put_links(c, &users, &w).await.unwrap();
    assert_eq!(count(ObjectKind::User).await, 3, "replacing does not add");
    store
        .delete_links(c, ObjectKind::User, &ids(&["u0"]), &w)
        .await
        .unwrap();
    assert_eq!(
        (
            count(ObjectKind::User).await,
            count(ObjectKind::Group).await
        ),
        (2, 2)
    );
}

// --- checkpoint -------------------------------------------------------------------------------

/// The holder of the current lease stores and reads back every phase.
pub async fn checkpoint_with_current_lease<S: StateStore + ?Sized>(store: &S) {
    let c = "conformance-checkpoint";
    assert_eq!(store.get_checkpoint(c).await.unwrap(), None);
    let lease = acquire(store, c, "run-1", 10_000, 5_000).await;
    let phases = [
        Phase::Snapshot { cursor: None },
        Phase::Snapshot {
            cursor: Some(SourceCursor(json!({ "page": 3, "token": "abc/=+" }))),
        },
        Phase::Sweep { after: None },
        Phase::Sweep {
            after: Some("u-42".to_owned()),
        },
        Phase::Idle,
    ];
    for (i, phase) in phases.into_iter().enumerate() {
        let cp = checkpoint(7 + i as u64, phase, 10_000 + i as i64);
        store.put_checkpoint(c, &cp, &lease).await.unwrap();
        assert_eq!(store.get_checkpoint(c).await.unwrap(), Some(cp));
    }
    let cp = Checkpoint {
        drift: None,
        changes_cursor: None,
        last_complete_at: None,
        ..checkpoint(20, Phase::Idle, 11_000)
    };
    let renewed = store
        .renew_lease(&lease, 12_000, 5_000)
        .await
        .unwrap()
        .unwrap();
    store.put_checkpoint(c, &cp, &renewed).await.unwrap();
    assert_eq!(store.get_checkpoint(c).await.unwrap(), Some(cp.clone()));

    // Fencing is by token, never by clock: this lease (expiring in 1970) was not taken over, so it
    // still carries the newest token.
    let later = checkpoint(21, Phase::Idle, 30_000);
    store.put_checkpoint(c, &later, &renewed).await.unwrap();
    assert_eq!(store.get_checkpoint(c).await.unwrap(), Some(later));
}

/// Tokens that are not the newest are refused and change nothing.
pub async fn checkpoint_stale_token_fenced<S: StateStore + ?Sized>(store: &S) {
    let c = "conformance-checkpoint-stale";
    let forged = Lease {
        connection: c.to_owned(),
        holder: holder("nobody"),
        acquired_at: 0,
        token: 1,
        expires_at: i64::MAX,
    };
    let cp0 = checkpoint(1, Phase::Idle, 1);
    assert_fenced(store.put_checkpoint(c, &cp0, &forged).await, c, 1, 0);
    assert_eq!(
        store.get_checkpoint(c).await.unwrap(),
        None,
        "no lease ever: nothing written"
    );

    let first = acquire(store, c, "run", 1_000, 60_000).await;
    let cp1 = checkpoint(1, Phase::Snapshot { cursor: None }, 1_000);
    store.put_checkpoint(c, &cp1, &first).await.unwrap();
    store.release_lease(&first).await.unwrap();
    // The same owner again: a new acquisition, a new token; the old one is stale.
    let second = acquire(store, c, "run", 2_000, 60_000).await;
    assert!(second.token > first.token);

    let cp2 = checkpoint(2, Phase::Sweep { after: None }, 2_000);
    let cases = [
        (first.clone(), first.token),
        (
            Lease {
                token: second.token + 1,
                ..second.clone()
            },
            second.token + 1,
        ),
        (
            Lease {
                connection: "conformance-checkpoint-other".to_owned(),
                ..second.clone()
            },
            second.token,
        ),
    ];
    for (lease, presented) in cases {
        let result = store.put_checkpoint(c, &cp2, &lease).await;
        if lease.connection == c {
            assert_fenced(result, c, presented, second.token);
        } else {
            assert!(
                matches!(result, Err(StateError::Fenced { .. })),
                "a lease of another connection is refused, got {result:?}"
            );
        }
        assert_eq!(
            store.get_checkpoint(c).await.unwrap(),
            Some(cp1.clone()),
            "unchanged"
        );
    }
    store.put_checkpoint(c, &cp2, &second).await.unwrap();
    assert_eq!(store.get_checkpoint(c).await.unwrap(), Some(cp2));
}

/// A holder whose expired lease was taken over by another owner is fenced.
pub async fn checkpoint_after_takeover_fenced<S: StateStore + ?Sized>(store: &S) {
    let c = "conformance-checkpoint-takeover";
    let old = acquire(store, c, "run-old", 1_000, 1_000).await;
    let cp1 = checkpoint(1, Phase::Snapshot { cursor: None }, 1_000);
    store.put_checkpoint(c, &cp1, &old).await.unwrap();
    let new = acquire(store, c, "run-new", 5_000, 1_000).await;
    assert!(new.token > old.token);

    let zombie = checkpoint(1, Phase::Snapshot { cursor: None }, 900); // moving back
    assert_fenced(
        store.put_checkpoint(c, &zombie, &old).await,
        c,
        old.token,
        new.token,
    );
    assert_eq!(store.get_checkpoint(c).await.unwrap(), Some(cp1));

    let cp2 = checkpoint(2, Phase::Idle, 5_500);
    store.put_checkpoint(c, &cp2, &new).await.unwrap();
    assert_fenced(
        store.put_checkpoint(c, &zombie, &old).await,
        c,
        old.token,
        new.token,
    );
    assert_eq!(store.get_checkpoint(c).await.unwrap(), Some(cp2));
}

// --- per-object errors ------------------------------------------------------------------------

/// Errors keyed by (kind, source id), listed soonest retry first, limited.
pub async fn errors_put_get_clear_list<S: StateStore + ?Sized>(store: &S) {
    let c = "conformance-errors";
    let w = writer(store, c).await;
    assert!(store.list_errors(c, 10).await.unwrap().is_empty());
    let u1 = object_error(ObjectKind::User, "u1", 300, 1);
    let u2 = object_error(ObjectKind::User, "u2", 100, 1);
    let u3 = object_error(ObjectKind::User, "u3", 200, 4);
    let g1 = object_error(ObjectKind::Group, "u1", 150, 2); // same id, other kind
    for e in [&u1, &u2, &u3, &g1] {
        store.put_error(c, e, &w).await.unwrap();
    }
    let sorted = |mut v: Vec<ObjectError>| {
        v.sort_by(|a, b| a.source_id.cmp(&b.source_id));
        v
    };
    let got = store
        .get_errors(c, ObjectKind::User, &ids(&["u1", "u2", "missing"]))
        .await
        .unwrap();
    assert_eq!(sorted(got), vec![u1.clone(), u2.clone()]);
    let got = store
        .get_errors(c, ObjectKind::Group, &ids(&["u1", "u2"]))
        .await
        .unwrap();
    assert_eq!(got, vec![g1.clone()], "kinds are separate");

    // Replace: one more attempt, retried sooner.
    let u1b = ObjectError {
        operation: "license".to_owned(),
        ..object_error(ObjectKind::User, "u1", 50, 2)
    };
    store.put_error(c, &u1b, &w).await.unwrap();
    assert_eq!(
        store
            .get_errors(c, ObjectKind::User, &ids(&["u1"]))
            .await
            .unwrap(),
        vec![u1b.clone()]
    );

    let cases: &[(usize, Vec<&ObjectError>)] = &[
        (10, vec![&u1b, &u2, &g1, &u3]),
        (4, vec![&u1b, &u2, &g1, &u3]),
        (2, vec![&u1b, &u2]),
        (0, vec![]),
    ];
    for (limit, expected) in cases {
        let got = store.list_errors(c, *limit).await.unwrap();
        let expected: Vec<ObjectError> = expected.iter().map(|e| (*e).clone()).collect();
        assert_eq!(got, expected, "list_errors limit {limit}");
    }

    store
        .clear_errors(c, ObjectKind::User, &ids(&["u1", "missing"]), &w)
        .await
        .unwrap();
    assert!(
        store
            .get_errors(c, ObjectKind::User, &ids(&["u1"]))
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        store
            .get_errors(c, ObjectKind::Group, &ids(&["u1"]))
            .await
            .unwrap(),
        vec![g1.clone()],
        "clearing the user error keeps the group's"
    );
    assert_eq!(store.list_errors(c, 10).await.unwrap(), vec![u2, g1, u3]);
}

// --- runs -------------------------------------------------------------------------------------

/// Runs are upserted by id and listed newest first by `started_at`, limited.
pub async fn runs_upsert_and_list<S: StateStore + ?Sized>(store: &S) {
    let c = "conformance-runs";
    let w = writer(store, c).await;
    assert!(store.list_runs(c, 10).await.unwrap().is_empty());
    let r1 = run("run-1", 1_000, RunStatus::Running);
    let r2 = run("run-2", 3_000, RunStatus::Checkpointed);
    let r3 = run("run-3", 2_000, RunStatus::Failed);
    for r in [&r2, &r1, &r3] {
        store.put_run(c, r, &w).await.unwrap();
    }
    let other = writer(store, "conformance-runs-other").await;
    store
        .put_run(
            "conformance-runs-other",
            &run("run-x", 9_000, RunStatus::Running),
            &other,
        )
        .await
        .unwrap();
    assert_eq!(
        store.list_runs(c, 10).await.unwrap(),
        vec![r2.clone(), r3.clone(), r1.clone()]
    );

    let r1_done = RunRecord {
        finished_at: Some(1_500),
        status: RunStatus::PartiallyFailed,
        counts: crate::counts::RunCounts {
            created: 12,
            failed: 1,
            ..Default::default()
        },
        message: Some("1 object failed; see status".to_owned()),
        ..r1.clone()
    };
    store.put_run(c, &r1_done, &w).await.unwrap();
    // Upserting a later start moves it to the front.
    let r3_moved = RunRecord {
        started_at: 4_000,
        ..r3.clone()
    };
    store.put_run(c, &r3_moved, &w).await.unwrap();

    let cases: &[(usize, Vec<&RunRecord>)] = &[
        (10, vec![&r3_moved, &r2, &r1_done]),
        (2, vec![&r3_moved, &r2]),
        (1, vec![&r3_moved]),
        (0, vec![]),
    ];
    for (limit, expected) in cases {
        let expected: Vec<RunRecord> = expected.iter().map(|r| (*r).clone()).collect();
        assert_eq!(
            store.list_runs(c, *limit).await.unwrap(),
            expected,
            "list_runs limit {limit}"
        );
    }
}

// --- lease ------------------------------------------------------------------------------------

/// A free lease is taken; while unexpired, nobody else (nor its owner) takes it.
pub async fn lease_acquire_free_and_blocked<S: StateStore + ?Sized>(store: &S) {
    let c = "conformance-lease-blocked";
    let lease = acquire(store, c, "owner-a", 1_000, 500).await;
    assert_eq!(
        (
            lease.connection.as_str(),
            lease.holder.owner.as_str(),
            lease.expires_at
        ),
        (c, "owner-a", 1_500)
    );
    for (owner, now) in [("owner-b", 1_000), ("owner-b", 1_499), ("owner-a", 1_200)] {
        let got = try_acquire(store, c, owner, now, 500).await;
        assert_eq!(
            got, None,
            "{owner} at {now} while owner-a holds the lease until 1500"
        );
    }
}

/// Expired at `now` means `expires_at <= now`; the next holder gets a greater token.
pub async fn lease_after_expiry_greater_token<S: StateStore + ?Sized>(store: &S) {
    let c = "conformance-lease-expiry";
    let first = acquire(store, c, "owner-a", 1_000, 500).await;
    assert_eq!(try_acquire(store, c, "owner-b", 1_499, 500).await, None);
    let second = acquire(store, c, "owner-b", 1_500, 700).await;
    assert!(
        second.token > first.token,
        "{} > {}",
        second.token,
        first.token
    );
    assert_eq!(
        (second.holder.owner.as_str(), second.expires_at),
        ("owner-b", 2_200)
    );
    let third = acquire(store, c, "owner-a", 9_000, 700).await;
    assert!(third.token > second.token);
}

/// Renewal keeps owner and token and moves the expiry to `now + ttl`; only a live lease renews.
pub async fn lease_renew<S: StateStore + ?Sized>(store: &S) {
    let c = "conformance-lease-renew";
    let lease = acquire(store, c, "owner-a", 1_000, 500).await;
    let renewed = store
        .renew_lease(&lease, 1_200, 1_000)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        renewed,
        Lease {
            expires_at: 2_200,
            ..lease.clone()
        }
    );
    assert_eq!(
        try_acquire(store, c, "owner-b", 2_000, 500).await,
        None,
        "extended"
    );
    let again = store
        .renew_lease(&renewed, 2_100, 1_000)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        again,
        Lease {
            expires_at: 3_100,
            ..lease.clone()
        }
    );

    let wrong_token = Lease {
        token: again.token + 1,
        ..again.clone()
    };
    assert_eq!(
        store.renew_lease(&wrong_token, 2_200, 1_000).await.unwrap(),
        None
    );
    assert_eq!(
        store.renew_lease(&again, 3_100, 1_000).await.unwrap(),
        None,
        "expired at 3100"
    );
    // Not renewed above: owner-b can take it.
    let b = acquire(store, c, "owner-b", 3_100, 500).await;
    assert!(b.token > lease.token);
}

/// A lease taken over cannot be renewed, and releasing it does not free the new holder's.
pub async fn lease_renew_after_takeover<S: StateStore + ?Sized>(store: &S) {
    let c = "conformance-lease-takeover";
    let old = acquire(store, c, "owner-a", 1_000, 500).await;
    let new = acquire(store, c, "owner-b", 2_000, 500).await;
    assert_eq!(store.renew_lease(&old, 2_100, 500).await.unwrap(), None);
    store.release_lease(&old).await.unwrap();
    assert_eq!(
        try_acquire(store, c, "owner-c", 2_200, 500).await,
        None,
        "b still holds"
    );
    let renewed = store.renew_lease(&new, 2_200, 500).await.unwrap().unwrap();
    assert_eq!(
        renewed,
        Lease {
            expires_at: 2_700,
            ..new
        }
    );
}

/// Releasing frees the lease at once; the next holder gets a greater token.
pub async fn lease_release_then_acquire<S: StateStore + ?Sized>(store: &S) {
    let c = "conformance-lease-release";
    let first = acquire(store, c, "owner-a", 1_000, 60_000).await;
    store.release_lease(&first).await.unwrap();
    let second = acquire(store, c, "owner-b", 1_001, 60_000).await;
    assert!(second.token > first.token);
    assert_eq!(
        store.renew_lease(&first, 1_002, 60_000).await.unwrap(),
        None,
        "released"
    );
    store.release_lease(&first).await.unwrap(); // stale: no effect
    assert_eq!(try_acquire(store, c, "owner-c", 1_003, 60_000).await, None);
}

/// Across releases, expiries and takeovers, no token is ever handed out twice.
pub async fn lease_tokens_never_reused<S: StateStore + ?Sized>(store: &S) {
    let c = "conformance-lease-tokens";
    let mut tokens = Vec::new();
    let mut now = 1_000;
    for i in 0..8 {
        let owner = if i % 2 == 0 { "owner-a" } else { "owner-b" };
        let lease = acquire(store, c, owner, now, 100).await;
        tokens.push(lease.token);
        match i % 3 {
            0 => store.release_lease(&lease).await.unwrap(),
            1 => now += 100, // let it expire exactly
            _ => {
                store
                    .renew_lease(&lease, now + 50, 100)
                    .await
                    .unwrap()
                    .unwrap();
                now += 150;
            }
        }
        now += 1;
    }
    assert!(
        tokens.windows(2).all(|w| w[0] < w[1]),
        "tokens strictly increase: {tokens:?}"
    );
}

/// Busy names the holder (owner, host, process) and its times; `get_lease` reads it while live.
pub async fn lease_busy_names_holder<S: StateStore + ?Sized>(store: &S) {
    let c = "conformance-lease-holder";
    let cli = LeaseHolder {
        owner: "cli sync".to_owned(),
        host: Some("build-host".to_owned()),
        pid: Some(4242),
    };
    assert_eq!(store.get_lease(c, 1_000).await.unwrap(), None, "never held");
    let lease = match store.acquire_lease(c, &cli, 1_000, 60_000).await.unwrap() {
        LeaseGrant::Acquired(lease) => lease,
        LeaseGrant::Busy(held) => panic!("{c}: free lease reported busy: {held:?}"),
    };
    assert_eq!(
        (&lease.holder, lease.acquired_at, lease.expires_at),
        (&cli, 1_000, 61_000)
    );
    match store
        .acquire_lease(c, &holder("lambda"), 2_000, 60_000)
        .await
        .unwrap()
    {
        LeaseGrant::Busy(held) => assert_eq!(held, lease, "busy names the real holder"),
        LeaseGrant::Acquired(l) => panic!("{c}: acquired a held lease: {l:?}"),
    }
    // Renewal keeps the holder and the acquisition time.
    let renewed = store
        .renew_lease(&lease, 30_000, 60_000)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        store.get_lease(c, 30_001).await.unwrap(),
        Some(renewed.clone())
    );
    assert_eq!(renewed.acquired_at, 1_000);
    assert_eq!(
        store.get_lease(c, 90_000).await.unwrap(),
        None,
        "expired reads as absent"
    );
    store.release_lease(&renewed).await.unwrap();
    assert_eq!(store.get_lease(c, 30_002).await.unwrap(), None, "released");
}

/// Breaking ends the lease of that token at once and fences its holder; a stale token breaks
/// nothing.
pub async fn lease_break<S: StateStore + ?Sized>(store: &S) {
    let c = "conformance-lease-break";
    let old = acquire(store, c, "crashed", 1_000, 60_000).await;
    assert!(
        !store.break_lease(c, old.token + 1).await.unwrap(),
        "a token never granted breaks nothing"
    );
    assert_eq!(try_acquire(store, c, "next", 2_000, 60_000).await, None);
    assert!(store.break_lease(c, old.token).await.unwrap());
    let next = acquire(store, c, "next", 2_000, 60_000).await;
    assert!(next.token > old.token);
    assert_eq!(
        store.renew_lease(&old, 2_001, 60_000).await.unwrap(),
        None,
        "the broken lease cannot be renewed"
    );
    assert!(
        !store.break_lease(c, old.token).await.unwrap(),
        "breaking the old token again leaves the new holder alone"
    );
    assert_eq!(try_acquire(store, c, "third", 2_002, 60_000).await, None);
    let w = next.clone();
    assert_fenced(
        store
            .put_links(c, &[link(ObjectKind::User, "u", 1)], &old)
            .await,
        c,
        old.token,
        next.token,
    );
    store
        .put_links(c, &[link(ObjectKind::User, "u", 1)], &w)
        .await
        .unwrap();
}

/// Every write of a run whose lease was taken over is refused with `Fenced` and changes
/// nothing; a lease of another connection is refused too.
pub async fn every_write_fenced<S: StateStore + ?Sized>(store: &S) {
    let c = "conformance-fenced-writes";
    let old = acquire(store, c, "stalled", 1_000, 1_000).await;
    let u1 = link(ObjectKind::User, "u1", 1);
    store
        .put_links(c, std::slice::from_ref(&u1), &old)
        .await
        .unwrap();
    store
        .put_error(c, &object_error(ObjectKind::User, "u1", 5_000, 1), &old)
        .await
        .unwrap();
    let r1 = run("run-old", 1_000, RunStatus::Running);
    store.put_run(c, &r1, &old).await.unwrap();
    // The stalled run's lease expires; another run takes over.
    let new = acquire(store, c, "new", 5_000, 60_000).await;
    let (p, cur) = (old.token, new.token);
    let u = ids(&["u1"]);
    let other = link(ObjectKind::User, "u2", 2);
    assert_fenced(store.put_links(c, &[other], &old).await, c, p, cur);
    assert_fenced(
        store.mark_seen(c, ObjectKind::User, &u, 99, &old).await,
        c,
        p,
        cur,
    );
    assert_fenced(
        store.delete_links(c, ObjectKind::User, &u, &old).await,
        c,
        p,
        cur,
    );
    assert_fenced(
        store
            .put_error(c, &object_error(ObjectKind::User, "u2", 5_000, 1), &old)
            .await,
        c,
        p,
        cur,
    );
    assert_fenced(
        store.clear_errors(c, ObjectKind::User, &u, &old).await,
        c,
        p,
        cur,
    );
    let mut r1_done = r1.clone();
    r1_done.status = RunStatus::Succeeded;
    assert_fenced(store.put_run(c, &r1_done, &old).await, c, p, cur);
    assert_fenced(store.clear_connection(c, &old).await, c, p, cur);
    // Nothing moved.
    assert_eq!(
        store
            .get_links(c, ObjectKind::User, &ids(&["u1", "u2"]))
            .await
            .unwrap(),
        vec![u1.clone()]
    );
    assert_eq!(
        store
            .get_errors(c, ObjectKind::User, &ids(&["u1", "u2"]))
            .await
            .unwrap(),
        vec![object_error(ObjectKind::User, "u1", 5_000, 1)]
    );
    assert_eq!(store.list_runs(c, 10).await.unwrap(), vec![r1]);
    // A lease of another connection, even with the same token number, is refused.
    let elsewhere = Lease {
        connection: "conformance-fenced-elsewhere".to_owned(),
        ..new.clone()
    };
    // More links than one DynamoDB transaction holds: refused before the first is written.
    let many: Vec<Link> = (0..120)
        .map(|i| link(ObjectKind::User, &format!("many-{i:03}"), i))
        .collect();
    assert!(matches!(
        store.put_links(c, &many, &elsewhere).await,
        Err(StateError::Fenced { .. })
    ));
    assert_eq!(store.count_links(c, ObjectKind::User).await.unwrap(), 1);
    // The new holder writes.
    store
        .delete_links(c, ObjectKind::User, &u, &new)
        .await
        .unwrap();
    assert_eq!(store.count_links(c, ObjectKind::User).await.unwrap(), 0);
}

/// A link is found by its tenant object id, per kind; deleted or moved links are not.
pub async fn links_found_by_object<S: StateStore + ?Sized>(store: &S) {
    let c = "conformance-links-by-object";
    let w = writer(store, c).await;
    let user = link(ObjectKind::User, "u1", 1);
    let group = Link {
        object_id: user.object_id.clone(),
        ..link(ObjectKind::Group, "g1", 2)
    };
    store
        .put_links(c, &[user.clone(), group.clone()], &w)
        .await
        .unwrap();
    let find = |kind, object: &str| {
        let object = object.to_owned();
        async move { store.find_link_by_object(c, kind, &object).await.unwrap() }
    };
    assert_eq!(
        find(ObjectKind::User, &user.object_id).await,
        Some(user.clone())
    );
    assert_eq!(
        find(ObjectKind::Group, &group.object_id).await,
        Some(group.clone())
    );
    assert_eq!(find(ObjectKind::User, "no-such-object").await, None);
    assert_eq!(
        store
            .find_link_by_object(
                "conformance-links-by-object-other",
                ObjectKind::User,
                &user.object_id
            )
            .await
            .unwrap(),
        None,
        "connections are separate"
    );
    // The link moves to another tenant object: the old one is free.
    let moved = Link {
        object_id: "moved-object".to_owned(),
        ..user.clone()
    };
    store
        .put_links(c, std::slice::from_ref(&moved), &w)
        .await
        .unwrap();
    assert_eq!(find(ObjectKind::User, &user.object_id).await, None);
    assert_eq!(find(ObjectKind::User, "moved-object").await, Some(moved));
    store
        .delete_links(c, ObjectKind::User, &ids(&["u1"]), &w)
        .await
        .unwrap();
    assert_eq!(find(ObjectKind::User, "moved-object").await, None);
    assert_eq!(find(ObjectKind::Group, &group.object_id).await, Some(group));
}

/// A link of a deleted object ([`Link::deleted_at`]) reads back whole (by id, by page and by
/// object), is not counted, and counts again once it is live.
pub async fn deleted_links_kept_and_not_counted<S: StateStore + ?Sized>(store: &S) {
    let c = "conformance-deleted-links";
    let w = writer(store, c).await;
    let live = link(ObjectKind::User, "u-live", 1);
    let deleted = Link {
        deleted_at: Some(1_700_000_123_456),
        enabled: true,
        ..link(ObjectKind::User, "u-deleted", 2)
    };
    store
        .put_links(c, &[live.clone(), deleted.clone()], &w)
        .await
        .unwrap();
    assert_eq!(
        store
            .get_links(c, ObjectKind::User, &ids(&["u-deleted"]))
            .await
            .unwrap(),
        vec![deleted.clone()]
    );
    assert_eq!(
        store
            .list_links(c, ObjectKind::User, None, 10)
            .await
            .unwrap(),
        vec![deleted.clone(), live.clone()],
        "listed in source-id order, deleted or not"
    );
    assert_eq!(
        store
            .find_link_by_object(c, ObjectKind::User, &deleted.object_id)
            .await
            .unwrap(),
        Some(deleted.clone())
    );
    assert_eq!(
        store.count_links(c, ObjectKind::User).await.unwrap(),
        1,
        "a deleted object's link is not counted"
    );
    let restored = Link {
        deleted_at: None,
        ..deleted
    };
    store
        .put_links(c, std::slice::from_ref(&restored), &w)
        .await
        .unwrap();
    assert_eq!(
        store
            .get_links(c, ObjectKind::User, &ids(&["u-deleted"]))
            .await
            .unwrap(),
        vec![restored]
    );
    assert_eq!(store.count_links(c, ObjectKind::User).await.unwrap(), 2);
}

// --- webhook events ---------------------------------------------------------------------------

/// New → claimed, a claim again → in progress (its expiry unchanged), expired
/// (`expires_at <= now`) or forgotten → new again.
pub async fn events_remember_and_forget<S: StateStore + ?Sized>(store: &S) {
    use EventClaim::{InProgress, New};
    let c = "conformance-events";
    // (event, now, expires_at, expected)
    let steps: &[(&str, i64, i64, EventClaim)] = &[
        ("e1", 1_000, 2_000, New),
        ("e1", 1_500, 2_500, InProgress), // a repeated claim does not extend the record
        ("e2", 1_500, 2_500, New),
        ("e1", 1_999, 3_000, InProgress),
        ("e1", 2_000, 3_000, New), // expired at 2000: claimable again
        ("e1", 2_100, 4_000, InProgress),
        ("e2", 2_100, 4_000, InProgress),
        ("e2", 2_500, 4_000, New),
    ];
    for &(event, now, expires_at, expected) in steps {
        let got = store
            .remember_event(c, event, now, expires_at)
            .await
            .unwrap();
        assert_eq!(got, expected, "remember {event} at {now}");
    }
    store.forget_event(c, "e1").await.unwrap();
    store.forget_event(c, "never-seen").await.unwrap();
    assert_eq!(
        store.remember_event(c, "e1", 2_600, 5_000).await.unwrap(),
        New,
        "forgotten"
    );
    assert_eq!(
        store.remember_event(c, "e1", 2_700, 5_000).await.unwrap(),
        InProgress
    );
    assert_eq!(
        store.remember_event(c, "e2", 2_700, 5_000).await.unwrap(),
        InProgress,
        "forget is per id"
    );
    assert_eq!(
        store
            .remember_event("conformance-events-other", "e1", 2_700, 5_000)
            .await
            .unwrap(),
        New,
        "events are per connection"
    );
}

/// Completing turns an in-progress claim into done with the new expiry; a done id is a
/// duplicate (its expiry unchanged) until that expiry, then new again; forgetting a done id makes
/// it new; completing an unknown id records it done.
pub async fn events_complete<S: StateStore + ?Sized>(store: &S) {
    use EventClaim::{Done, InProgress, New};
    let c = "conformance-events-complete";
    assert_eq!(
        store.remember_event(c, "e", 1_000, 2_000).await.unwrap(),
        New
    );
    store.complete_event(c, "e", 10_000).await.unwrap();
    // (now, expires_at offered, expected): past the claim's expiry (2000) it is still done.
    for (now, expires_at, expected) in [
        (1_500, 3_000, Done),
        (2_000, 3_000, Done),
        (9_999, 50_000, Done), // a duplicate does not extend the record
        (10_000, 20_000, New),
        (10_500, 20_000, InProgress),
    ] {
        assert_eq!(
            store.remember_event(c, "e", now, expires_at).await.unwrap(),
            expected,
            "remember e at {now}"
        );
    }
    store.complete_event(c, "e", 30_000).await.unwrap();
    assert_eq!(
        store.remember_event(c, "e", 29_999, 40_000).await.unwrap(),
        Done
    );
    store.forget_event(c, "e").await.unwrap();
    assert_eq!(
        store.remember_event(c, "e", 29_999, 40_000).await.unwrap(),
        New
    );

    store.complete_event(c, "unknown", 5_000).await.unwrap();
    assert_eq!(
        store
            .remember_event(c, "unknown", 4_000, 6_000)
            .await
            .unwrap(),
        Done
    );
    assert_eq!(
        store
            .remember_event(c, "unknown", 5_000, 6_000)
            .await
            .unwrap(),
        New
    );
}

// --- connection -------------------------------------------------------------------------------

/// A lease, and a link of each kind, a checkpoint, an error, a run and an event of `c`.
async fn fill_connection<S: StateStore + ?Sized>(store: &S, c: &str) -> Lease {
    let lease = acquire(store, c, "owner", 1_000, 10_000).await;
    store
        .put_links(
            c,
            &[
                link(ObjectKind::User, "u", 1),
                link(ObjectKind::Group, "g", 2),
            ],
            &lease,
        )
        .await
        .unwrap();
    store
        .put_checkpoint(c, &checkpoint(3, Phase::Idle, 1_000), &lease)
        .await
        .unwrap();
    store
        .put_error(c, &object_error(ObjectKind::User, "u", 5_000, 1), &lease)
        .await
        .unwrap();
    store
        .put_run(c, &run("run-1", 1_000, RunStatus::Running), &lease)
        .await
        .unwrap();
    assert!(
        store
            .remember_event(c, "evt", 1_000, 100_000)
            .await
            .unwrap()
            == EventClaim::New
    );
    lease
}

/// Whether everything [`fill_connection`] stored for `c` is there (`present`) or gone.
async fn assert_cleared<S: StateStore + ?Sized>(store: &S, c: &str, present: bool) {
    let u = ids(&["u"]);
    let n = u64::from(present);
    assert_eq!(
        store.count_links(c, ObjectKind::User).await.unwrap(),
        n,
        "{c} users"
    );
    assert_eq!(
        store.count_links(c, ObjectKind::Group).await.unwrap(),
        n,
        "{c} groups"
    );
    assert_eq!(
        store
            .get_links(c, ObjectKind::User, &u)
            .await
            .unwrap()
            .len() as u64,
        n
    );
    assert_eq!(
        store
            .list_links(c, ObjectKind::Group, None, 10)
            .await
            .unwrap()
            .len() as u64,
        n
    );
    assert_eq!(
        store.get_checkpoint(c).await.unwrap().is_some(),
        present,
        "{c} checkpoint"
    );
    assert_eq!(
        store.list_errors(c, 10).await.unwrap().len() as u64,
        n,
        "{c} errors"
    );
    assert_eq!(
        store
            .get_errors(c, ObjectKind::User, &u)
            .await
            .unwrap()
            .len() as u64,
        n
    );
    assert_eq!(
        store.list_runs(c, 10).await.unwrap().len() as u64,
        n,
        "{c} runs"
    );
    // A cleared event id is new again; a kept one is still claimed.
    assert_eq!(
        store
            .remember_event(c, "evt", 2_000, 100_000)
            .await
            .unwrap()
            == EventClaim::New,
        !present,
        "{c} events"
    );
}

/// Clearing removes one connection's links, checkpoint, errors, runs and events; the lease (and
/// its token counter) stays.
pub async fn clear_connection_scoped<S: StateStore + ?Sized>(store: &S) {
    let (gone, kept) = ("conformance-clear-gone", "conformance-clear-kept");
    let leases = [
        fill_connection(store, gone).await,
        fill_connection(store, kept).await,
    ];
    store.clear_connection(gone, &leases[0]).await.unwrap();

    assert_cleared(store, gone, false).await;
    assert_cleared(store, kept, true).await;

    // The lease is untouched: still held, and its counter keeps counting.
    let held = &leases[0];
    assert_eq!(try_acquire(store, gone, "other", 2_000, 10_000).await, None);
    store.release_lease(held).await.unwrap();
    let next = acquire(store, gone, "other", 2_000, 10_000).await;
    assert!(
        next.token > held.token,
        "token {} > {}",
        next.token,
        held.token
    );
    assert_fenced(
        store
            .put_checkpoint(gone, &checkpoint(4, Phase::Idle, 2_000), held)
            .await,
        gone,
        held.token,
        next.token,
    );
}

fn history_entry(kind: ObjectKind, source_id: &str, at: i64, operation: &str) -> HistoryEntry {
    HistoryEntry {
        kind,
        source_id: source_id.to_owned(),
        name: format!("{source_id}@example.com"),
        at,
        run_id: format!("run-{at}"),
        operation: operation.to_owned(),
        change: "jobTitle: \"Clerk\" → \"Ünïcode\"".to_owned(),
        result: HistoryResult::Applied,
        answer: "done".to_owned(),
        expires_at: at + 10_000,
    }
}

/// Entries of one object come back newest first, kinds, objects and connections apart; two of
/// one millisecond are both kept; expired entries are not returned.
pub async fn history_per_object_newest_first<S: StateStore + ?Sized>(store: &S) {
    let c = "conformance-history";
    let user = |at, op| history_entry(ObjectKind::User, "u1", at, op);
    let mut failed = user(3_000, "licenses");
    failed.result = HistoryResult::Failed;
    failed.answer = "Graph 400 Request_BadRequest (request-id r-1)".to_owned();
    let entries = [
        user(1_000, "create user"),
        user(2_000, "update user"),
        user(2_000, "set manager"),
        failed.clone(),
        history_entry(ObjectKind::Group, "u1", 2_500, "add members"),
        history_entry(ObjectKind::User, "u1#2", 2_600, "create user"),
    ];
    store.append_history(c, &entries[..3]).await.unwrap();
    store.append_history(c, &entries[3..]).await.unwrap();
    store
        .append_history("conformance-history-other", &[user(2_700, "create user")])
        .await
        .unwrap();

    let got = store
        .object_history(c, ObjectKind::User, "u1", 3_000, 10)
        .await
        .unwrap();
    let ops: Vec<&str> = got.iter().map(|e| e.operation.as_str()).collect();
    assert_eq!(ops.len(), 4, "{ops:?}");
    assert_eq!(ops[0], "licenses");
    assert_eq!(got[0], failed, "round trip");
    let mut middle = ops[1..3].to_vec();
    middle.sort_unstable();
    assert_eq!(
        middle,
        ["set manager", "update user"],
        "same millisecond: both"
    );
    assert_eq!(ops[3], "create user");

    let two = store
        .object_history(c, ObjectKind::User, "u1", 3_000, 2)
        .await
        .unwrap();
    assert_eq!(two.len(), 2);
    assert_eq!(two[0].operation, "licenses");

    let group = store
        .object_history(c, ObjectKind::Group, "u1", 3_000, 10)
        .await
        .unwrap();
    assert_eq!(group.len(), 1);
    assert_eq!(group[0].operation, "add members");

    // At 11,500 the entries of 1,000 (expiring at 11,000) are past.
    let later = store
        .object_history(c, ObjectKind::User, "u1", 11_500, 10)
        .await
        .unwrap();
    assert_eq!(later.len(), 3, "{later:?}");
    assert!(later.iter().all(|e| e.at >= 2_000));
}

/// 5,000 links in one `put_links` round-trip, page by page and by id.
pub async fn large_batch<S: StateStore + ?Sized>(store: &S) {
    let c = "conformance-large-batch";
    let w = writer(store, c).await;
    let links: Vec<Link> = (0..5_000u64)
        .map(|i| link(ObjectKind::User, &format!("user-{i:05}"), i))
        .collect();
    store.put_links(c, &links, &w).await.unwrap();
    assert_eq!(store.count_links(c, ObjectKind::User).await.unwrap(), 5_000);

    let mut walked = Vec::with_capacity(links.len());
    let mut after: Option<String> = None;
    loop {
        let page = store
            .list_links(c, ObjectKind::User, after.as_deref(), 1_000)
            .await
            .unwrap();
        let Some(last) = page.last() else { break };
        after = Some(last.source_id.clone());
        walked.extend(page);
    }
    assert_eq!(walked, links, "listed in order, every field intact");

    let all: Vec<String> = links.iter().map(|l| l.source_id.clone()).collect();
    let got = store.get_links(c, ObjectKind::User, &all).await.unwrap();
    assert_eq!(by_source_id(got), links);

    store
        .mark_seen(c, ObjectKind::User, &all, 10_000, &w)
        .await
        .unwrap();
    let page = store
        .list_links(c, ObjectKind::User, None, 5_000)
        .await
        .unwrap();
    assert!(page.iter().all(|l| l.seen_generation == 10_000));
    store
        .delete_links(c, ObjectKind::User, &all, &w)
        .await
        .unwrap();
    assert_eq!(store.count_links(c, ObjectKind::User).await.unwrap(), 0);
}
