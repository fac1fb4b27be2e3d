//! Focused syncs (what a webhook event runs): only the named identities are re-read from the
//! source and planned; nothing else is touched, nothing is swept, the checkpoint stays.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a broken expectation should fail loudly"
)]

use m365_core::plan::Step;
use m365_core::{ObjectKind, RunStatus, StateStore};
use m365_integration_tests::scenario::{Scenario, group, user};
use m365_sandbox::demo;
use serde_json::json;

const MANAGER: &str = "[rule.mapping]\nmanager = { attribute = \"manager\" }\n";

fn upn(alias: &str) -> String {
    format!("{alias}@{}", demo::VERIFIED_DOMAIN)
}

fn enabled(s: &Scenario, alias: &str) -> bool {
    s.tenant_user(&upn(alias)).unwrap()["accountEnabled"]
        .as_bool()
        .unwrap()
}

#[tokio::test]
async fn a_named_new_user_is_created_and_nobody_else_is_touched() {
    let s = Scenario::new("", "").await;
    s.write_source(
        &[
            user("u-ann", "ann", json!({})),
            user("u-bob", "bob", json!({})),
        ],
        &[],
    );
    s.sync().await;
    let checkpoint = s.state.get_checkpoint(&s.connection).await.unwrap();

    // Ann changes, Cid arrives, Bob leaves the source: only Cid is named.
    s.write_source(
        &[
            user("u-ann", "ann", json!({"title": "Lead"})),
            user("u-cid", "cid", json!({})),
        ],
        &[],
    );
    let out = s.sync_focused(&["u-cid"], &[]).await;
    assert_eq!(out.run.status, RunStatus::Succeeded, "{:?}", out.run);
    assert!(
        matches!(out.plan.steps.as_slice(), [Step::CreateUser { source_id, .. }] if source_id == "u-cid"),
        "{:#?}",
        out.plan.steps
    );
    assert!(s.tenant_user(&upn("cid")).is_some());
    // Not named: Ann keeps her old title, Bob is not swept.
    assert_eq!(
        s.tenant_user(&upn("ann")).unwrap()["jobTitle"],
        "Specialist"
    );
    assert!(enabled(&s, "bob"));
    assert!(s.link(ObjectKind::User, "u-bob").await.is_some());
    // The checkpoint is the full sync's.
    assert_eq!(
        s.state.get_checkpoint(&s.connection).await.unwrap(),
        checkpoint
    );
    // The full sync then does the rest.
    s.sync().await;
    assert_eq!(s.tenant_user(&upn("ann")).unwrap()["jobTitle"], "Lead");
    assert!(!enabled(&s, "bob"));
}

#[tokio::test]
async fn the_source_wins_over_the_event_type() {
    let s = Scenario::new("", "").await;
    s.write_source(
        &[
            user("u-ann", "ann", json!({})),
            user("u-bob", "bob", json!({})),
        ],
        &[],
    );
    s.sync().await;
    // A "deleted" event for Ann, who is still in the source (changed), and an "updated" one for
    // Bob, who is gone: both are re-read, and the source decides.
    s.write_source(&[user("u-ann", "ann", json!({"title": "Lead"}))], &[]);
    let out = s.sync_focused(&["u-ann", "u-bob"], &[]).await;
    assert_eq!(out.run.status, RunStatus::Succeeded, "{:?}", out.run);
    assert_eq!(s.tenant_user(&upn("ann")).unwrap()["jobTitle"], "Lead");
    assert!(enabled(&s, "ann"));
    assert!(!enabled(&s, "bob"), "gone from the source: disabled");
    assert_eq!(
        out.report.counts.deprovisioned, 1,
        "{:?}",
        out.report.counts
    );
}

#[tokio::test]
async fn a_named_user_out_of_scope_is_deprovisioned_only_when_deprovisioning_is_allowed() {
    let filter = "[rule.scope]\nfilter = \"department != 'Contractors'\"\n";
    let s = Scenario::new("allow_deprovision = false", filter).await;
    s.write_source(&[user("u-ann", "ann", json!({"department": "R&D"}))], &[]);
    s.sync().await;
    s.write_source(
        &[user("u-ann", "ann", json!({"department": "Contractors"}))],
        &[],
    );
    let out = s.sync_focused(&["u-ann"], &[]).await;
    assert!(out.plan.steps.is_empty(), "{:#?}", out.plan.steps);
    assert!(enabled(&s, "ann"));

    let mut s = s;
    s.set_rule("allow_deprovision = true", filter).await;
    let out = s.sync_focused(&["u-ann"], &[]).await;
    assert!(
        matches!(out.plan.steps.as_slice(), [Step::Deprovision { source_id, .. }] if source_id == "u-ann"),
        "{:#?}",
        out.plan.steps
    );
    assert!(!enabled(&s, "ann"));
}

#[tokio::test]
async fn a_named_group_keeps_its_other_managed_members_and_follows_the_source() {
    let s = Scenario::new("", "").await;
    s.write_source(
        &[
            user("u-ann", "ann", json!({})),
            user("u-bob", "bob", json!({})),
            user("u-cid", "cid", json!({})),
        ],
        &[group("grp-eng", "Engineering", &["u-ann", "u-bob"])],
    );
    s.sync().await;
    assert_eq!(s.member_upns("Engineering"), vec![upn("ann"), upn("bob")]);

    // Bob leaves the group, Cid (linked already) joins: a group event alone does it, and Ann,
    // who is not named, stays a managed member.
    s.write_source(
        &[
            user("u-ann", "ann", json!({})),
            user("u-bob", "bob", json!({})),
            user("u-cid", "cid", json!({})),
        ],
        &[group("grp-eng", "Engineering", &["u-ann", "u-cid"])],
    );
    let out = s.sync_focused(&[], &["grp-eng"]).await;
    assert_eq!(out.run.status, RunStatus::Succeeded, "{:?}", out.run);
    assert_eq!(s.member_upns("Engineering"), vec![upn("ann"), upn("cid")]);
    let link = s.link(ObjectKind::Group, "grp-eng").await.unwrap();
    let mut expected = vec![
        s.link(ObjectKind::User, "u-ann").await.unwrap().object_id,
        s.link(ObjectKind::User, "u-cid").await.unwrap().object_id,
    ];
    expected.sort();
    assert_eq!(link.members, expected);
    // Users were not named: no user step at all.
    assert!(
        out.plan
            .steps
            .iter()
            .all(|step| matches!(step, Step::AddMembers { .. } | Step::RemoveMembers { .. })),
        "{:#?}",
        out.plan.steps
    );
}

#[tokio::test]
async fn a_named_group_gone_from_the_source_is_deprovisioned() {
    let s = Scenario::new("", "[rule.groups]\nremove_action = \"delete\"\n").await;
    s.write_source(
        &[user("u-ann", "ann", json!({}))],
        &[
            group("grp-eng", "Engineering", &["u-ann"]),
            group("grp-ops", "Operations", &["u-ann"]),
        ],
    );
    s.sync().await;
    s.write_source(&[user("u-ann", "ann", json!({}))], &[]);
    let out = s.sync_focused(&[], &["grp-eng"]).await;
    assert_eq!(out.run.status, RunStatus::Succeeded, "{:?}", out.run);
    assert!(s.tenant_groups_named("Engineering").is_empty());
    // Not named: still there until the full sync.
    assert_eq!(s.tenant_groups_named("Operations").len(), 1);
    assert!(s.link(ObjectKind::Group, "grp-eng").await.is_none());
}

#[tokio::test]
async fn a_named_user_gets_a_manager_linked_earlier() {
    let s = Scenario::new("", MANAGER).await;
    s.write_source(&[user("u-boss", "boss", json!({}))], &[]);
    s.sync().await;
    s.write_source(
        &[
            user("u-boss", "boss", json!({})),
            user("u-emp", "emp", json!({"manager": "u-boss"})),
        ],
        &[],
    );
    let out = s.sync_focused(&["u-emp"], &[]).await;
    assert_eq!(out.run.status, RunStatus::Succeeded, "{:?}", out.run);
    let emp = s.tenant_user(&upn("emp")).unwrap();
    let boss = s.tenant_user(&upn("boss")).unwrap();
    assert_eq!(emp["manager"], boss["id"]);
    // Settled: the full plan has nothing left to do for either.
    assert!(s.plan().await.steps.is_empty(), "{:#?}", s.plan().await);
}
