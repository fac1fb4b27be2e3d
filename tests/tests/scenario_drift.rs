//! Drift (docs/design.md#drift): changes made in the tenant by someone else — a managed user's
//! department, a license this connection assigned, a managed group's members, a linked user
//! deleted — found through Graph's delta queries against the sandbox tenant, then listed
//! (`drift = "report"`) or repaired (`"repair"`), and nothing else touched.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a broken expectation should fail loudly"
)]

use m365_core::drift::{DriftChange, DriftMode};
use m365_core::plan::Step;
use m365_core::{Clock, HistoryResult, ObjectKind, RunStatus, StateStore};
use m365_graph::Patch;
use m365_integration_tests::scenario::{Scenario, group, user};
use m365_sandbox::{Knobs, demo};
use serde_json::json;

const LICENSES: &str = "[rule.mapping.licenses]\nsku_ids = { attribute = \"licenseSku\" }\n[rule.groups]\nenabled = true\n";

fn upn(alias: &str) -> String {
    format!("{alias}@{}", demo::VERIFIED_DOMAIN)
}

/// Three licensed users, two of them in a managed group, synced; then the drift mode set.
async fn world(mode: DriftMode) -> Scenario {
    let mut s = Scenario::new("", LICENSES).await;
    let licensed = |id: &str, alias: &str| {
        user(
            id,
            alias,
            json!({"licenseSku": demo::SKU_E3, "department": "Sales"}),
        )
    };
    s.write_source(
        &[
            licensed("u-ann", "ann"),
            licensed("u-bob", "bob"),
            licensed("u-cy", "cy"),
        ],
        &[group("g-team", "Drift Team", &["u-ann", "u-bob"])],
    );
    s.rule.drift.mode = mode;
    let first = s.sync().await;
    assert_eq!(first.run.status, RunStatus::Succeeded, "{:?}", first.run);
    assert!(first.plan.drift.is_empty(), "{:?}", first.plan.drift);
    // The round that reads the first sync's own writes back: they compare equal.
    let echo = s.sync().await;
    assert!(echo.plan.drift.is_empty(), "{:?}", echo.plan.drift);
    assert!(echo.plan.steps.is_empty(), "{:?}", echo.plan.steps);
    s
}

fn id_of(s: &Scenario, alias: &str) -> String {
    s.tenant_user(&upn(alias)).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

fn team_id(s: &Scenario) -> String {
    s.tenant_groups_named("Drift Team")[0]["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// Delta requests of a collection in the sandbox's request log since `from` entries.
fn delta_requests(s: &Scenario, from: usize, collection: &str) -> usize {
    s.sandbox.sandbox().request_log()[from..]
        .iter()
        .filter(|r| r.path.starts_with(&format!("/v1.0/{collection}/delta")))
        .count()
}

/// The out-of-band edits every drift scenario makes: ann's department, bob's license, the
/// team's members (ann out, cy in), and an unmanaged property and an unmanaged user changed too.
async fn tamper(s: &Scenario) {
    let admin = s.admin();
    let (ann, bob, cy) = (id_of(s, "ann"), id_of(s, "bob"), id_of(s, "cy"));
    admin
        .update_user(
            &ann,
            &Patch::new()
                .set("department", "Legal")
                .set("officeLocation", "Floor 9"),
        )
        .await
        .unwrap();
    admin
        .assign_license(&bob, &[], &[demo::SKU_E3.to_owned()])
        .await
        .unwrap();
    let team = team_id(s);
    admin.remove_group_member(&team, &ann).await.unwrap();
    admin.add_group_member(&team, &cy).await.unwrap();
    // Not this connection's: a user it never linked, in its group and edited.
    admin
        .add_group_member(&team, demo::BJENSEN_ID)
        .await
        .unwrap();
    admin
        .update_user(
            demo::BJENSEN_ID,
            &Patch::new().set("department", "Elsewhere"),
        )
        .await
        .unwrap();
}

fn drift_of<'a>(plan: &'a m365_core::plan::Plan, name: &str) -> Vec<&'a DriftChange> {
    plan.drift
        .iter()
        .filter(|d| d.name.eq_ignore_ascii_case(name))
        .map(|d| &d.change)
        .collect()
}

fn skus(s: &Scenario, alias: &str) -> Vec<String> {
    s.tenant_user(&upn(alias)).unwrap()["assignedLicenses"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["skuId"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn a_run_with_no_drift_reads_one_delta_page_per_collection_and_writes_nothing() {
    let s = world(DriftMode::Repair).await;

    let log_from = s.sandbox.sandbox().request_log().len();
    let writes = s.tenant_writes();
    let quiet = s.sync().await;
    assert!(quiet.plan.drift.is_empty() && quiet.plan.steps.is_empty());
    assert_eq!(
        s.tenant_writes(),
        writes,
        "a run with no drift writes nothing"
    );
    assert_eq!(delta_requests(&s, log_from, "users"), 1);
    assert_eq!(delta_requests(&s, log_from, "groups"), 1);
}

#[tokio::test]
async fn report_lists_each_drift_old_and_new_and_touches_nothing() {
    let s = world(DriftMode::Report).await;
    tamper(&s).await;
    let before = s.sandbox.sandbox().dump();
    let writes = s.tenant_writes();
    let run = s.sync().await;

    assert_eq!(run.run.status, RunStatus::Succeeded, "{:?}", run.run);
    assert!(
        run.plan.steps.is_empty(),
        "report plans no repair: {:?}",
        run.plan.steps
    );
    assert_eq!(s.tenant_writes(), writes);
    assert_eq!(s.sandbox.sandbox().dump()["users"], before["users"]);

    assert_eq!(
        drift_of(&run.plan, &upn("ann")),
        vec![&DriftChange::Property {
            name: "department".to_owned(),
            applied: json!("Sales"),
            found: json!("Legal")
        }],
        "the unmanaged officeLocation is not drift"
    );
    assert_eq!(
        drift_of(&run.plan, &upn("bob")),
        vec![&DriftChange::LicenseRemoved {
            sku_id: demo::SKU_E3.to_owned()
        }]
    );
    let team = drift_of(&run.plan, "Drift Team");
    assert!(
        team.contains(&&DriftChange::MemberRemoved {
            member: id_of(&s, "ann")
        }),
        "{team:?}"
    );
    assert!(
        team.contains(&&DriftChange::MemberAdded {
            member: id_of(&s, "cy")
        }),
        "{team:?}"
    );
    assert_eq!(team.len(), 2, "bjensen is not this connection's: {team:?}");
    assert!(drift_of(&run.plan, demo::BJENSEN_UPN).is_empty());
    assert!(run.plan.drift.iter().all(|d| !d.repair));
    let table = run.plan.render_table();
    assert!(
        table.contains(&format!(
            "drift (reported): user {}: department is \"Legal\" in the tenant, \"Sales\" as applied",
            upn("ann")
        )),
        "{table}"
    );

    // In the object's history.
    let history = s
        .state
        .object_history(&s.connection, ObjectKind::User, "u-ann", s.clock.now(), 10)
        .await
        .unwrap();
    assert!(
        history
            .iter()
            .any(|h| h.result == HistoryResult::Found && h.change.contains("department")),
        "{history:?}"
    );
    // Reported once: the next run's round has moved on.
    assert!(s.sync().await.plan.drift.is_empty());
}

#[tokio::test]
async fn repair_writes_the_applied_state_back_and_only_that() {
    let s = world(DriftMode::Repair).await;
    tamper(&s).await;
    let run = s.sync().await;
    assert_eq!(run.run.status, RunStatus::Succeeded, "{:?}", run.run);
    assert!(
        run.plan.drift.iter().all(|d| d.repair),
        "{:?}",
        run.plan.drift
    );

    let ann = s.tenant_user(&upn("ann")).unwrap();
    assert_eq!(ann["department"], "Sales", "repaired");
    assert_eq!(
        ann["officeLocation"], "Floor 9",
        "an unmanaged attribute is never reverted"
    );
    assert_eq!(
        skus(&s, "bob"),
        vec![demo::SKU_E3.to_owned()],
        "license back"
    );
    let mut members = s.member_upns("Drift Team");
    members.sort();
    let mut expected = vec![upn("ann"), upn("bob"), demo::BJENSEN_UPN.to_owned()];
    expected.sort();
    assert_eq!(
        members, expected,
        "ann back, cy out, bjensen (not managed) left alone"
    );
    let bjensen = s.tenant_user(demo::BJENSEN_UPN).unwrap();
    assert_eq!(bjensen["department"], "Elsewhere");

    // The repair shows old → new like any change: the tenant's value, then the applied one.
    assert!(
        run.plan.steps.iter().any(|st| matches!(st, Step::UpdateUser { changes, .. }
            if changes.iter().any(|c| c.name == "department" && c.old == json!("Legal") && c.new == json!("Sales")))),
        "{:?}",
        run.plan.steps
    );
    let steps: Vec<&str> = run.plan.steps.iter().map(Step::operation).collect();
    assert!(
        steps.contains(&"update user") && steps.contains(&"licenses"),
        "{steps:?}"
    );
    assert!(
        run.plan.steps.iter().any(|st| matches!(st, Step::RemoveMembers { member_object_ids, .. } if member_object_ids == &vec![id_of(&s, "cy")])),
        "{:?}",
        run.plan.steps
    );

    // Repaired for good: the next run finds nothing.
    let after = s.sync().await;
    assert!(after.plan.drift.is_empty(), "{:?}", after.plan.drift);
    assert!(after.plan.steps.is_empty(), "{:?}", after.plan.steps);
}

#[tokio::test]
async fn a_linked_user_deleted_in_the_tenant_is_reported_or_restored() {
    for mode in [DriftMode::Report, DriftMode::Repair] {
        let s = world(mode).await;
        let ann = id_of(&s, "ann");
        s.admin().delete_user(&ann).await.unwrap();
        let run = s.sync().await;
        assert_eq!(
            drift_of(&run.plan, &upn("ann")),
            vec![&DriftChange::Deleted],
            "{mode}"
        );
        match mode {
            DriftMode::Report => assert!(s.tenant_user(&upn("ann")).is_none(), "left deleted"),
            _ => {
                let back = s.tenant_user(&upn("ann")).expect("restored");
                assert_eq!(back["id"], ann.as_str(), "the same account, not a new one");
                assert!(
                    run.plan
                        .steps
                        .iter()
                        .any(|st| matches!(st, Step::RestoreUser { .. })),
                    "{:?}",
                    run.plan.steps
                );
            }
        }
        // Nothing else was touched.
        assert_eq!(s.tenant_user(&upn("bob")).unwrap()["department"], "Sales");
    }
}

#[tokio::test]
async fn an_expired_token_starts_a_full_reconciliation_without_an_error() {
    let s = world(DriftMode::Repair).await;
    let mut knobs: Knobs = s.sandbox.sandbox().knobs();
    knobs.delta.token_lifetime_secs = 0;
    s.sandbox.sandbox().set_knobs(knobs);
    let admin = s.admin();
    admin
        .update_user(&id_of(&s, "bob"), &Patch::new().set("jobTitle", "Chief"))
        .await
        .unwrap();
    let log_from = s.sandbox.sandbox().request_log().len();
    let run = s.sync().await;
    assert_eq!(run.run.status, RunStatus::Succeeded, "{:?}", run.run);
    assert_eq!(
        drift_of(&run.plan, &upn("bob")),
        vec![&DriftChange::Property {
            name: "jobTitle".to_owned(),
            applied: json!("Specialist"),
            found: json!("Chief")
        }]
    );
    assert_eq!(
        s.tenant_user(&upn("bob")).unwrap()["jobTitle"],
        "Specialist"
    );
    // The refused token, then a new round: two reads of users, not a loop.
    assert_eq!(delta_requests(&s, log_from, "users"), 2);
}

#[tokio::test]
async fn the_breaker_weighs_the_memberships_a_repair_removes() {
    let mut s = world(DriftMode::Repair).await;
    s.rule.breaker.max_count = 0;
    s.rule.breaker.max_percent = 100.0;
    s.admin()
        .add_group_member(&team_id(&s), &id_of(&s, "cy"))
        .await
        .unwrap();
    let run = s.sync().await;
    assert_eq!(run.run.status, RunStatus::BreakerTripped, "{:?}", run.run);
    assert!(
        s.member_upns("Drift Team").contains(&upn("cy")),
        "held, not removed"
    );
    // The held repair is read again, and carried out with the override.
    let run = s.try_sync(true, None).await.unwrap();
    assert_eq!(run.run.status, RunStatus::Succeeded, "{:?}", run.run);
    assert!(!s.member_upns("Drift Team").contains(&upn("cy")));
}

#[tokio::test]
async fn a_full_reconciliation_finds_a_manager_and_a_member_a_change_round_missed() {
    let mut s = Scenario::new(
        "",
        "[rule.mapping]\nmanager = { attribute = \"manager\" }\n[rule.groups]\nenabled = true\n",
    )
    .await;
    s.write_source(
        &[
            user("u-boss", "boss", json!({})),
            user("u-ann", "ann", json!({"manager": "u-boss"})),
            user("u-bob", "bob", json!({})),
        ],
        &[group("g-team", "Drift Team", &["u-ann", "u-bob"])],
    );
    s.rule.drift.mode = DriftMode::Repair;
    s.sync().await;
    s.sync().await;
    let admin = s.admin();
    admin
        .set_manager(&id_of(&s, "ann"), &id_of(&s, "bob"))
        .await
        .unwrap();
    admin
        .remove_group_member(&team_id(&s), &id_of(&s, "bob"))
        .await
        .unwrap();
    // A change round reads these too: reported only, the cursor moves past them, as it would
    // past changes a tenant's delta missed (Graph reports manager changes unreliably).
    s.rule.drift.mode = DriftMode::Report;
    assert_eq!(s.sync().await.plan.drift.len(), 2);
    s.rule.drift.mode = DriftMode::Repair;
    let quiet = s.sync().await;
    assert!(
        quiet.plan.drift.is_empty(),
        "cursor is past the changes: {:?}",
        quiet.plan.drift
    );

    s.rule.drift.full_every_ms = 0;
    let full = s.sync().await;
    assert_eq!(
        drift_of(&full.plan, &upn("ann")),
        vec![&DriftChange::Manager {
            applied: Some("u-boss".to_owned()),
            found: Some("u-bob".to_owned())
        }]
    );
    assert_eq!(
        drift_of(&full.plan, "Drift Team"),
        vec![&DriftChange::MemberRemoved {
            member: id_of(&s, "bob")
        }]
    );
    let ann = s.tenant_user(&upn("ann")).unwrap();
    assert_eq!(
        ann["manager"],
        id_of(&s, "boss").as_str(),
        "manager repaired"
    );
    assert!(
        s.member_upns("Drift Team").contains(&upn("bob")),
        "member repaired"
    );
}

#[tokio::test]
async fn another_mapping_starts_over_with_a_full_reconciliation() {
    let mut s = world(DriftMode::Report).await;
    let log_from = s.sandbox.sandbox().request_log().len();
    s.rule.drift.user_select.push("officeLocation".to_owned());
    let run = s.sync().await;
    assert_eq!(run.run.status, RunStatus::Succeeded, "{:?}", run.run);
    // The delta round is not continued: a new round without a token reads every user.
    let first = s.sandbox.sandbox().request_log()[log_from..]
        .iter()
        .find(|r| r.path.starts_with("/v1.0/users/delta"))
        .map(|r| r.path.clone())
        .unwrap();
    assert!(!first.contains("deltatoken"), "{first}");
}

#[tokio::test]
async fn a_change_among_many_linked_users_is_found_by_looking_its_link_up() {
    // Few objects reported against many links: each reported object's link is looked up by its
    // tenant id rather than every link read.
    let mut s = Scenario::new("", "[rule.groups]\nenabled = true\n").await;
    let users: Vec<_> = (0..45)
        .map(|i| {
            user(
                &format!("u-{i:02}"),
                &format!("many{i:02}"),
                json!({"department": "Sales"}),
            )
        })
        .collect();
    s.write_source(&users, &[group("g-team", "Drift Team", &["u-00", "u-01"])]);
    s.rule.drift.mode = DriftMode::Repair;
    s.sync().await;
    s.sync().await;
    let admin = s.admin();
    admin
        .update_user(
            &id_of(&s, "many07"),
            &Patch::new().set("department", "Legal"),
        )
        .await
        .unwrap();
    admin
        .remove_group_member(&team_id(&s), &id_of(&s, "many01"))
        .await
        .unwrap();
    admin
        .add_group_member(&team_id(&s), &id_of(&s, "many09"))
        .await
        .unwrap();
    let run = s.sync().await;
    assert_eq!(run.plan.drift.len(), 3, "{:?}", run.plan.drift);
    assert_eq!(
        s.tenant_user(&upn("many07")).unwrap()["department"],
        "Sales"
    );
    assert_eq!(
        s.member_upns("Drift Team"),
        vec![upn("many00"), upn("many01")]
    );
}
