//! Scenario tests of licenses and managers, groups, safety and state, checkpoints and runs
//! (docs/design.md#licenses-and-manager, #groups, #safety, #state-and-runs): the real engine
//! against the sandbox tenant, asserting the final tenant state and the stored state.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a broken expectation should fail loudly"
)]

use std::collections::BTreeMap;

use m365_core::engine::RunError;
use m365_core::plan::Step;
use m365_core::{
    Clock, Directory, DirectoryOp, LicenseAssignment, LinkOrigin, ObjectKind, RunStatus, StateStore,
};
use m365_integration_tests::scenario::{BASE_RULE, Scenario, group, user};
use m365_sandbox::{Knobs, SandboxConfig, demo};
use serde_json::{Value, json};

const LICENSES: &str = "[rule.mapping.licenses]\nsku_ids = { attribute = \"licenseSku\" }\n";
const MANAGER: &str = "[rule.mapping]\nmanager = { attribute = \"manager\" }\n";

fn upn(alias: &str) -> String {
    format!("{alias}@{}", demo::VERIFIED_DOMAIN)
}

fn lic(sku: &str, plans: &[&str]) -> LicenseAssignment {
    LicenseAssignment {
        sku_id: sku.to_owned(),
        disabled_plans: plans.iter().map(|p| (*p).to_owned()).collect(),
    }
}

/// A rule like [`BASE_RULE`] with another breaker.
fn rule_with_breaker(preferences: &str, max_count: u64, max_percent: f64) -> String {
    rule_with_breaker_and(preferences, "", max_count, max_percent)
}

/// [`rule_with_breaker`] with extra TOML (further `[rule.*]` tables).
fn rule_with_breaker_and(
    preferences: &str,
    extra: &str,
    max_count: u64,
    max_percent: f64,
) -> String {
    let base = BASE_RULE
        .replace("{preferences}", preferences)
        .replace("{extra}", extra);
    assert!(base.contains("max_count = 1000\nmax_percent = 100.0"));
    base.replace(
        "max_count = 1000\nmax_percent = 100.0",
        &format!("max_count = {max_count}\nmax_percent = {max_percent:?}"),
    )
}

/// The tenant user's licenses as (skuId, sorted disabledPlans), sorted.
fn licenses_of(u: &Value) -> Vec<(String, Vec<String>)> {
    let mut out: Vec<(String, Vec<String>)> = u["assignedLicenses"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|a| {
            let mut plans: Vec<String> = a["disabledPlans"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .iter()
                .filter_map(|p| p.as_str().map(str::to_ascii_lowercase))
                .collect();
            plans.sort();
            (
                a["skuId"].as_str().unwrap_or_default().to_ascii_lowercase(),
                plans,
            )
        })
        .collect();
    out.sort();
    out
}

fn sku(sku: &str) -> (String, Vec<String>) {
    (sku.to_owned(), Vec::new())
}

/// Live tenant users holding this SKU (the sandbox's consumedUnits).
fn consumed(s: &Scenario, sku: &str) -> usize {
    s.sandbox
        .sandbox()
        .users()
        .iter()
        .filter(|u| {
            licenses_of(u)
                .iter()
                .any(|(id, _)| id.eq_ignore_ascii_case(sku))
        })
        .count()
}

/// UPN of the tenant manager of the user with this UPN.
fn manager_upn(s: &Scenario, user_upn: &str) -> Option<String> {
    let u = s.tenant_user(user_upn).expect("tenant user");
    let manager_id = u.get("manager")?.as_str()?.to_owned();
    s.sandbox
        .sandbox()
        .users()
        .into_iter()
        .find(|m| m["id"] == manager_id.as_str())
        .and_then(|m| m["userPrincipalName"].as_str().map(str::to_owned))
}

/// Successful requests whose method matches and whose path contains `needle`.
fn requests(s: &Scenario, method: &str, needle: &str) -> usize {
    s.sandbox
        .sandbox()
        .request_log()
        .iter()
        .filter(|r| r.method == method && r.path.contains(needle) && r.status < 300)
        .count()
}

fn enabled(s: &Scenario, alias: &str) -> bool {
    s.tenant_user(&upn(alias)).expect("tenant user")["accountEnabled"] == true
}

fn now_ms(s: &Scenario) -> i64 {
    s.clock.now()
}

async fn linked_users(s: &Scenario) -> u64 {
    s.state
        .count_links(&s.connection, ObjectKind::User)
        .await
        .unwrap()
}

// ---------------------------------------------------------------------------------------------
// Licenses (docs/design.md#licenses-and-manager)
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn mapped_sku_is_assigned_and_consumes_a_seat() {
    let s = Scenario::new("", LICENSES).await;
    s.write_source(
        &[
            user("u-ann", "ann", json!({"licenseSku": demo::SKU_E3})),
            user("u-bob", "bob", json!({"licenseSku": demo::SKU_E3})),
            user("u-cid", "cid", json!({})),
        ],
        &[],
    );
    assert_eq!(consumed(&s, demo::SKU_E3), 0);
    let out = s.sync().await;
    assert_eq!(out.run.status, RunStatus::Succeeded, "{:?}", out.run);
    assert_eq!(consumed(&s, demo::SKU_E3), 2);
    for alias in ["ann", "bob"] {
        assert_eq!(
            licenses_of(&s.tenant_user(&upn(alias)).unwrap()),
            vec![sku(demo::SKU_E3)]
        );
    }
    assert!(licenses_of(&s.tenant_user(&upn("cid")).unwrap()).is_empty());
    let link = s.link(ObjectKind::User, "u-ann").await.unwrap();
    assert_eq!(link.licenses, vec![lic(demo::SKU_E3, &[])]);

    // Nothing changed: nothing sent.
    let writes = s.tenant_writes();
    assert!(s.plan().await.steps.is_empty());
    s.sync().await;
    assert_eq!(s.tenant_writes(), writes);
}

#[tokio::test]
async fn mapped_disabled_plans_are_applied_and_changed() {
    let extra = format!(
        "{LICENSES}disabled_plans = {{ \"{}\" = {{ attribute = \"disabledPlans\" }} }}\n",
        demo::SKU_E3
    );
    let s = Scenario::new("", &extra).await;
    s.write_source(
        &[user(
            "u-ann",
            "ann",
            json!({"licenseSku": demo::SKU_E3, "disabledPlans": [demo::E3_PLAN_EXCHANGE]}),
        )],
        &[],
    );
    s.sync().await;
    assert_eq!(
        licenses_of(&s.tenant_user(&upn("ann")).unwrap()),
        vec![(
            demo::SKU_E3.to_owned(),
            vec![demo::E3_PLAN_EXCHANGE.to_owned()]
        )]
    );
    assert_eq!(
        s.link(ObjectKind::User, "u-ann").await.unwrap().licenses,
        vec![lic(demo::SKU_E3, &[demo::E3_PLAN_EXCHANGE])]
    );

    // Other plans disabled at the source: the SKU is re-sent with the new plans, nothing removed.
    s.write_source(
        &[user(
            "u-ann",
            "ann",
            json!({"licenseSku": demo::SKU_E3, "disabledPlans": [demo::E3_PLAN_TEAMS, demo::E3_PLAN_SHAREPOINT]}),
        )],
        &[],
    );
    let plan = s.plan().await;
    assert!(
        plan.steps.iter().any(|step| matches!(step,
            Step::AssignLicenses { add, remove, .. }
                if remove.is_empty() && add.len() == 1 && add[0].sku_id == demo::SKU_E3)),
        "{plan:#?}"
    );
    s.sync().await;
    let mut plans = vec![
        demo::E3_PLAN_TEAMS.to_owned(),
        demo::E3_PLAN_SHAREPOINT.to_owned(),
    ];
    plans.sort();
    assert_eq!(
        licenses_of(&s.tenant_user(&upn("ann")).unwrap()),
        vec![(demo::SKU_E3.to_owned(), plans)]
    );
    assert_eq!(consumed(&s, demo::SKU_E3), 1);
}

#[tokio::test]
async fn sku_part_numbers_are_resolved_and_an_unknown_one_holds_only_its_user() {
    let extra = format!(
        "{LICENSES}disabled_plans = {{ \"EnterprisePack\" = [\"{}\"] }}\n",
        demo::E3_PLAN_TEAMS
    );
    let s = Scenario::new("", &extra).await;
    s.write_source(
        &[
            user("u-ann", "ann", json!({"licenseSku": "enterprisepack"})),
            user(
                "u-bob",
                "bob",
                json!({"licenseSku": ["SPE_E5", demo::SKU_E3]}),
            ),
            user("u-cid", "cid", json!({"licenseSku": "SPE_E3"})),
        ],
        &[],
    );
    let out = s.sync().await;
    assert_eq!(out.run.status, RunStatus::PartiallyFailed, "{:?}", out.run);
    // The tenant holds the skuIds the part numbers name, with the plans keyed by part number
    // disabled whichever way the SKU was named.
    let e3 = (
        demo::SKU_E3.to_owned(),
        vec![demo::E3_PLAN_TEAMS.to_owned()],
    );
    assert_eq!(
        licenses_of(&s.tenant_user(&upn("ann")).unwrap()),
        vec![e3.clone()]
    );
    let mut bob = vec![e3, sku(demo::SKU_E5)];
    bob.sort();
    assert_eq!(licenses_of(&s.tenant_user(&upn("bob")).unwrap()), bob);
    // Cid is created, unlicensed, and the only object in error, named with the value and the
    // part numbers the tenant has.
    assert!(licenses_of(&s.tenant_user(&upn("cid")).unwrap()).is_empty());
    let errors = s.errors().await;
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0].source_id, "u-cid");
    for part in [
        upn("cid").as_str(),
        "\"SPE_E3\"",
        "EMS, ENTERPRISEPACK, SPE_E5",
    ] {
        assert!(
            errors[0].message.contains(part),
            "{part}: {}",
            errors[0].message
        );
    }
    // The SKU table is read once per run; nothing is rewritten while nothing changes.
    assert_eq!(requests(&s, "GET", "/subscribedSkus"), 1);
    let writes = s.tenant_writes();
    let out = s.sync().await;
    assert_eq!(s.tenant_writes(), writes, "{:#?}", out.plan);
    assert_eq!(out.plan.issues.len(), 1);

    // Corrected at the source: licensed, and out of error.
    s.write_source(
        &[
            user("u-ann", "ann", json!({"licenseSku": "enterprisepack"})),
            user(
                "u-bob",
                "bob",
                json!({"licenseSku": ["SPE_E5", demo::SKU_E3]}),
            ),
            user("u-cid", "cid", json!({"licenseSku": "spe_e5"})),
        ],
        &[],
    );
    let out = s.sync().await;
    assert_eq!(out.run.status, RunStatus::Succeeded, "{:?}", out.run);
    assert_eq!(
        licenses_of(&s.tenant_user(&upn("cid")).unwrap()),
        vec![sku(demo::SKU_E5)]
    );
    assert!(s.errors().await.is_empty());
}

#[tokio::test]
async fn sku_changed_at_source_adds_and_removes_in_one_assign_license_call() {
    let s = Scenario::new("", LICENSES).await;
    s.write_source(
        &[user("u-ann", "ann", json!({"licenseSku": demo::SKU_E3}))],
        &[],
    );
    s.sync().await;
    assert_eq!(requests(&s, "POST", "/assignLicense"), 1);

    s.write_source(
        &[user("u-ann", "ann", json!({"licenseSku": demo::SKU_E5}))],
        &[],
    );
    let plan = s.plan().await;
    let license_steps: Vec<&Step> = plan
        .steps
        .iter()
        .filter(|s| matches!(s, Step::AssignLicenses { .. }))
        .collect();
    assert_eq!(license_steps.len(), 1, "{plan:#?}");
    assert!(matches!(license_steps[0],
        Step::AssignLicenses { add, remove, .. }
            if *add == vec![lic(demo::SKU_E5, &[])] && *remove == vec![demo::SKU_E3.to_owned()]));
    s.sync().await;
    assert_eq!(
        requests(&s, "POST", "/assignLicense"),
        2,
        "one assignLicense call adds E5 and removes E3"
    );
    assert_eq!(
        licenses_of(&s.tenant_user(&upn("ann")).unwrap()),
        vec![sku(demo::SKU_E5)]
    );
    assert_eq!(consumed(&s, demo::SKU_E3), 0);
    assert_eq!(consumed(&s, demo::SKU_E5), 1);
    assert_eq!(
        s.link(ObjectKind::User, "u-ann").await.unwrap().licenses,
        vec![lic(demo::SKU_E5, &[])]
    );
}

#[tokio::test]
async fn sku_mapped_and_cleared_at_source_removes_the_licenses_this_rule_assigned() {
    // The flag does not matter when licenses are mapped.
    for prefs in [
        "remove_licenses_when_sku_empty = false",
        "remove_licenses_when_sku_empty = true",
    ] {
        let s = Scenario::new(prefs, LICENSES).await;
        s.write_source(
            &[
                user("u-ann", "ann", json!({"licenseSku": demo::SKU_E3})),
                user("u-bob", "bob", json!({"licenseSku": demo::SKU_E3})),
            ],
            &[],
        );
        s.sync().await;
        assert_eq!(consumed(&s, demo::SKU_E3), 2);

        s.write_source(
            &[
                user("u-ann", "ann", json!({"licenseSku": null})),
                user("u-bob", "bob", json!({"licenseSku": demo::SKU_E3})),
            ],
            &[],
        );
        s.sync().await;
        assert!(
            licenses_of(&s.tenant_user(&upn("ann")).unwrap()).is_empty(),
            "{prefs}"
        );
        assert_eq!(
            licenses_of(&s.tenant_user(&upn("bob")).unwrap()),
            vec![sku(demo::SKU_E3)]
        );
        assert_eq!(consumed(&s, demo::SKU_E3), 1);
        assert!(
            s.link(ObjectKind::User, "u-ann")
                .await
                .unwrap()
                .licenses
                .is_empty()
        );
    }
}

#[tokio::test]
async fn sku_not_mapped_with_remove_licenses_when_sku_empty_on_removes_them() {
    let mut s = Scenario::new("remove_licenses_when_sku_empty = true", LICENSES).await;
    s.write_source(
        &[user("u-ann", "ann", json!({"licenseSku": demo::SKU_E3}))],
        &[],
    );
    s.sync().await;
    assert_eq!(consumed(&s, demo::SKU_E3), 1);

    // The operator drops the license mapping.
    s.set_rule("remove_licenses_when_sku_empty = true", "")
        .await;
    s.sync().await;
    assert!(licenses_of(&s.tenant_user(&upn("ann")).unwrap()).is_empty());
    assert_eq!(consumed(&s, demo::SKU_E3), 0);
    assert!(
        s.link(ObjectKind::User, "u-ann")
            .await
            .unwrap()
            .licenses
            .is_empty()
    );
}

#[tokio::test]
async fn sku_not_mapped_with_remove_licenses_when_sku_empty_off_leaves_them_alone() {
    let mut s = Scenario::new("remove_licenses_when_sku_empty = false", LICENSES).await;
    s.write_source(
        &[user("u-ann", "ann", json!({"licenseSku": demo::SKU_E3}))],
        &[],
    );
    s.sync().await;
    assert_eq!(consumed(&s, demo::SKU_E3), 1);

    s.set_rule("remove_licenses_when_sku_empty = false", "")
        .await;
    let plan = s.plan().await;
    assert!(
        !plan
            .steps
            .iter()
            .any(|s| matches!(s, Step::AssignLicenses { .. })),
        "{plan:#?}"
    );
    let before = requests(&s, "POST", "/assignLicense");
    s.sync().await;
    assert_eq!(requests(&s, "POST", "/assignLicense"), before);
    assert_eq!(
        licenses_of(&s.tenant_user(&upn("ann")).unwrap()),
        vec![sku(demo::SKU_E3)]
    );
    assert_eq!(
        s.link(ObjectKind::User, "u-ann").await.unwrap().licenses,
        vec![lic(demo::SKU_E3, &[])]
    );
}

#[tokio::test]
async fn a_license_assigned_by_hand_is_never_removed_by_the_rule() {
    let mut s = Scenario::new("remove_licenses_when_sku_empty = true", LICENSES).await;
    let carol_id = s.sandbox.sandbox().seed_user(json!({
        "accountEnabled": true,
        "displayName": "carol Tester",
        "mailNickname": "carol",
        "userPrincipalName": upn("carol"),
        "usageLocation": "US",
        "assignedLicenses": [{"skuId": demo::SKU_E5, "disabledPlans": []}],
    }));
    s.write_source(
        &[user(
            "u-carol",
            "carol",
            json!({"licenseSku": demo::SKU_E3}),
        )],
        &[],
    );
    s.sync().await;
    let link = s.link(ObjectKind::User, "u-carol").await.unwrap();
    assert_eq!(link.object_id, carol_id);
    assert_eq!(link.origin, LinkOrigin::Matched);
    assert_eq!(
        link.licenses,
        vec![lic(demo::SKU_E3, &[])],
        "only E3 is ours"
    );
    let mut both = vec![sku(demo::SKU_E3), sku(demo::SKU_E5)];
    both.sort();
    assert_eq!(licenses_of(&s.tenant_user(&upn("carol")).unwrap()), both);

    // Cleared at the source: this rule's E3 goes, the hand-assigned E5 stays.
    s.write_source(
        &[user("u-carol", "carol", json!({"licenseSku": null}))],
        &[],
    );
    s.sync().await;
    assert_eq!(
        licenses_of(&s.tenant_user(&upn("carol")).unwrap()),
        vec![sku(demo::SKU_E5)]
    );

    // Licenses not mapped and remove_licenses_when_sku_empty: still not ours, still there.
    s.set_rule("remove_licenses_when_sku_empty = true", "")
        .await;
    s.write_source(&[user("u-carol", "carol", json!({}))], &[]);
    let plan = s.plan().await;
    assert!(
        !plan
            .steps
            .iter()
            .any(|s| matches!(s, Step::AssignLicenses { .. })),
        "{plan:#?}"
    );
    s.sync().await;
    assert_eq!(
        licenses_of(&s.tenant_user(&upn("carol")).unwrap()),
        vec![sku(demo::SKU_E5)]
    );
}

#[tokio::test]
async fn user_without_usage_location_gets_a_per_user_license_error_naming_usage_location() {
    let s = Scenario::new("", LICENSES).await;
    s.write_source(
        &[
            user("u-ann", "ann", json!({"licenseSku": demo::SKU_E3})),
            user(
                "u-bob",
                "bob",
                json!({"licenseSku": demo::SKU_E3, "usageLocation": null}),
            ),
            user("u-cid", "cid", json!({"licenseSku": demo::SKU_E3})),
        ],
        &[],
    );
    let out = s.sync().await;
    assert_eq!(out.run.status, RunStatus::PartiallyFailed, "{:?}", out.run);
    // Bob exists (created), without a license; the others are licensed.
    let bob = s.tenant_user(&upn("bob")).expect("bob is still created");
    assert!(licenses_of(&bob).is_empty());
    for alias in ["ann", "cid"] {
        assert_eq!(
            licenses_of(&s.tenant_user(&upn(alias)).unwrap()),
            vec![sku(demo::SKU_E3)]
        );
    }
    let errors = s.errors().await;
    assert_eq!(errors.len(), 1, "{errors:#?}");
    assert_eq!(errors[0].source_id, "u-bob");
    assert_eq!(errors[0].kind, ObjectKind::User);
    assert_eq!(errors[0].operation, "licenses");
    assert!(
        errors[0].message.contains("usageLocation"),
        "{}",
        errors[0].message
    );
    assert!(
        s.link(ObjectKind::User, "u-bob")
            .await
            .unwrap()
            .licenses
            .is_empty()
    );
}

/// License requests the sandbox received for one tenant user, whatever their outcome.
fn assign_license_requests(s: &Scenario, alias: &str) -> usize {
    let id = s.tenant_user(&upn(alias)).expect("tenant user")["id"]
        .as_str()
        .unwrap()
        .to_owned();
    s.sandbox
        .sandbox()
        .request_log()
        .iter()
        .filter(|r| r.path.contains("assignLicense") && r.path.contains(&id))
        .count()
}

#[tokio::test]
async fn license_without_usage_location_is_a_plan_issue_and_no_request_is_sent() {
    let s = Scenario::new("", LICENSES).await;
    let bob_without_location = || {
        user(
            "u-bob",
            "bob",
            json!({"licenseSku": demo::SKU_E3, "usageLocation": null}),
        )
    };
    s.write_source(
        &[
            user("u-ann", "ann", json!({"licenseSku": demo::SKU_E3})),
            bob_without_location(),
        ],
        &[group("grp-sales", "Sales", &["u-ann", "u-bob"])],
    );
    let out = s.sync().await;
    assert_eq!(out.run.status, RunStatus::PartiallyFailed, "{:?}", out.run);
    // The plan says why, naming the user, usageLocation and the fix…
    let issues: Vec<_> = out
        .plan
        .issues
        .iter()
        .filter(|i| i.source_id == "u-bob")
        .collect();
    assert_eq!(issues.len(), 1, "{:#?}", out.plan.issues);
    assert_eq!(issues[0].operation, "licenses");
    for fragment in [&upn("bob"), "usageLocation", "rule.mapping.attributes"] {
        assert!(
            issues[0].message.contains(fragment),
            "{fragment}: {}",
            issues[0].message
        );
    }
    assert!(!out.plan.steps.iter().any(|step| matches!(
        step,
        Step::AssignLicenses { source_id, .. } if source_id == "u-bob"
    )));
    // …no request Graph would refuse is sent, and Bob's other steps happen.
    assert_eq!(assign_license_requests(&s, "bob"), 0);
    assert_eq!(assign_license_requests(&s, "ann"), 1);
    assert!(licenses_of(&s.tenant_user(&upn("bob")).unwrap()).is_empty());
    assert_eq!(s.member_upns("Sales"), vec![upn("ann"), upn("bob")]);
    let errors = s.errors().await;
    assert_eq!(errors.len(), 1, "{errors:#?}");
    assert_eq!(
        (errors[0].source_id.as_str(), errors[0].operation.as_str()),
        ("u-bob", "licenses")
    );
    assert!(errors[0].message.contains("usageLocation"), "{errors:#?}");

    // Linked now, still without a usage location: the same issue, still no request.
    let out = s.sync().await;
    assert_eq!(out.run.status, RunStatus::PartiallyFailed, "{:?}", out.run);
    assert!(
        out.plan
            .issues
            .iter()
            .any(|i| i.source_id == "u-bob" && i.operation == "licenses")
    );
    assert_eq!(assign_license_requests(&s, "bob"), 0);

    // Once the source gives one, the license follows.
    s.write_source(
        &[
            user("u-ann", "ann", json!({"licenseSku": demo::SKU_E3})),
            user("u-bob", "bob", json!({"licenseSku": demo::SKU_E3})),
        ],
        &[group("grp-sales", "Sales", &["u-ann", "u-bob"])],
    );
    let out = s.sync().await;
    assert_eq!(out.run.status, RunStatus::Succeeded, "{:?}", out.run);
    assert_eq!(
        licenses_of(&s.tenant_user(&upn("bob")).unwrap()),
        vec![sku(demo::SKU_E3)]
    );
    assert!(s.errors().await.is_empty());
}

#[tokio::test]
async fn sku_without_free_seats_is_a_per_user_error_and_others_are_licensed() {
    let s = Scenario::new("", LICENSES).await;
    s.write_source(
        &[
            user("u-ann", "ann", json!({"licenseSku": demo::SKU_FULL})),
            user("u-bob", "bob", json!({"licenseSku": demo::SKU_E3})),
        ],
        &[],
    );
    let out = s.sync().await;
    assert_eq!(out.run.status, RunStatus::PartiallyFailed);
    assert!(licenses_of(&s.tenant_user(&upn("ann")).unwrap()).is_empty());
    assert_eq!(
        licenses_of(&s.tenant_user(&upn("bob")).unwrap()),
        vec![sku(demo::SKU_E3)]
    );
    let errors = s.errors().await;
    assert_eq!(errors.len(), 1, "{errors:#?}");
    assert_eq!(errors[0].source_id, "u-ann");
    assert_eq!(errors[0].operation, "licenses");
    assert!(
        errors[0].message.contains("no free licenses"),
        "{}",
        errors[0].message
    );
    assert_eq!(out.report.failures.len(), 1);
}

// ---------------------------------------------------------------------------------------------
// Manager (docs/design.md#licenses-and-manager)
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn manager_by_id_is_set() {
    let s = Scenario::new("", MANAGER).await;
    s.write_source(
        &[
            user("u-boss", "boss", json!({})),
            user("u-emp", "emp", json!({"manager": "u-boss"})),
        ],
        &[],
    );
    let out = s.sync().await;
    assert_eq!(out.run.status, RunStatus::Succeeded, "{:?}", out.run);
    assert_eq!(manager_upn(&s, &upn("emp")), Some(upn("boss")));
    assert_eq!(manager_upn(&s, &upn("boss")), None);
    assert_eq!(
        s.link(ObjectKind::User, "u-emp").await.unwrap().manager,
        Some("u-boss".to_owned())
    );
    // Settled: no second manager write.
    assert!(s.plan().await.steps.is_empty());
}

#[tokio::test]
async fn manager_on_a_later_source_page_is_set_in_the_same_run() {
    let s = Scenario::new("", MANAGER).await;
    // Pages hold 7 users: the manager is on the second page, after its report.
    let mut users = vec![user("u-00", "u00", json!({"manager": "u-09"}))];
    for i in 1..10 {
        users.push(user(&format!("u-{i:02}"), &format!("u{i:02}"), json!({})));
    }
    s.write_source(&users, &[]);
    let out = s.sync().await;
    assert_eq!(out.run.status, RunStatus::Succeeded, "{:?}", out.run);
    assert_eq!(manager_upn(&s, &upn("u00")), Some(upn("u09")));
    assert!(s.errors().await.is_empty());
}

#[tokio::test]
async fn manager_changed_at_source_is_updated() {
    let s = Scenario::new("", MANAGER).await;
    let source = |manager: &str| {
        vec![
            user("u-b1", "boss1", json!({})),
            user("u-b2", "boss2", json!({})),
            user("u-emp", "emp", json!({"manager": manager})),
        ]
    };
    s.write_source(&source("u-b1"), &[]);
    s.sync().await;
    assert_eq!(manager_upn(&s, &upn("emp")), Some(upn("boss1")));

    s.write_source(&source("u-b2"), &[]);
    let plan = s.plan().await;
    assert_eq!(plan.steps.len(), 1, "{plan:#?}");
    assert!(matches!(&plan.steps[0],
        Step::SetManager { source_id, manager_source_id, .. }
            if source_id == "u-emp" && manager_source_id == "u-b2"));
    s.sync().await;
    assert_eq!(manager_upn(&s, &upn("emp")), Some(upn("boss2")));
    assert_eq!(
        s.link(ObjectKind::User, "u-emp").await.unwrap().manager,
        Some("u-b2".to_owned())
    );
}

#[tokio::test]
async fn manager_cleared_at_source_removes_the_reference() {
    let s = Scenario::new("", MANAGER).await;
    s.write_source(
        &[
            user("u-boss", "boss", json!({})),
            user("u-emp", "emp", json!({"manager": "u-boss"})),
        ],
        &[],
    );
    s.sync().await;
    assert_eq!(manager_upn(&s, &upn("emp")), Some(upn("boss")));

    s.write_source(
        &[
            user("u-boss", "boss", json!({})),
            user("u-emp", "emp", json!({"manager": null})),
        ],
        &[],
    );
    s.sync().await;
    assert_eq!(manager_upn(&s, &upn("emp")), None);
    assert!(s.tenant_user(&upn("emp")).unwrap().get("manager").is_none());
    assert_eq!(
        s.link(ObjectKind::User, "u-emp").await.unwrap().manager,
        None
    );
    assert!(
        requests(&s, "DELETE", "/manager/$ref") == 1,
        "{:?}",
        s.sandbox.sandbox().request_log()
    );
    assert!(s.plan().await.steps.is_empty());
}

#[tokio::test]
async fn manager_not_in_scope_is_a_per_user_issue_and_the_user_is_still_created() {
    let s = Scenario::new("", MANAGER).await;
    s.write_source(
        &[
            user("u-emp", "emp", json!({"manager": "u-ghost"})),
            user("u-ann", "ann", json!({})),
        ],
        &[],
    );
    let out = s.sync().await;
    assert_eq!(out.run.status, RunStatus::PartiallyFailed, "{:?}", out.run);
    let emp = s
        .tenant_user(&upn("emp"))
        .expect("the user is created anyway");
    assert!(emp.get("manager").is_none());
    assert!(s.link(ObjectKind::User, "u-emp").await.is_some());
    let errors = s.errors().await;
    assert_eq!(errors.len(), 1, "{errors:#?}");
    assert_eq!(errors[0].source_id, "u-emp");
    assert_eq!(errors[0].operation, "manager");
    assert!(
        errors[0].message.contains("u-ghost"),
        "{}",
        errors[0].message
    );

    // The manager enters scope: set in the next run, the issue is gone.
    s.write_source(
        &[
            user("u-emp", "emp", json!({"manager": "u-ghost"})),
            user("u-ann", "ann", json!({})),
            user("u-ghost", "ghost", json!({})),
        ],
        &[],
    );
    let out = s.sync().await;
    assert_eq!(out.run.status, RunStatus::Succeeded, "{:?}", out.run);
    assert_eq!(manager_upn(&s, &upn("emp")), Some(upn("ghost")));
    assert!(s.errors().await.is_empty(), "{:#?}", s.errors().await);
}

#[tokio::test]
async fn manager_by_dn_is_resolved_through_the_dn_attribute() {
    let extra = format!("{MANAGER}\n[rule.manager]\nreference = \"dn\"\ndn_attribute = \"dn\"\n");
    let s = Scenario::new("", &extra).await;
    s.write_source(
        &[
            user(
                "u-emp",
                "emp",
                json!({"dn": "uid=emp,ou=people,dc=example,dc=com", "manager": "UID=Boss,ou=People,dc=example,dc=com"}),
            ),
            user(
                "u-boss",
                "boss",
                json!({"dn": "uid=boss,ou=people,dc=example,dc=com"}),
            ),
        ],
        &[],
    );
    let out = s.sync().await;
    assert_eq!(out.run.status, RunStatus::Succeeded, "{:?}", out.run);
    assert_eq!(manager_upn(&s, &upn("emp")), Some(upn("boss")));
    assert_eq!(
        s.link(ObjectKind::User, "u-emp").await.unwrap().manager,
        Some("u-boss".to_owned()),
        "stored by source id, not DN"
    );
}

// ---------------------------------------------------------------------------------------------
// Groups (docs/design.md#groups)
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn group_absent_from_the_tenant_is_created_as_a_security_group() {
    let s = Scenario::new("", "").await;
    s.write_source(
        &[
            user("u-ann", "ann", json!({})),
            user("u-bob", "bob", json!({})),
        ],
        &[group("grp-eng", "Engineering", &["u-ann", "u-bob"])],
    );
    let out = s.sync().await;
    assert_eq!(out.run.status, RunStatus::Succeeded, "{:?}", out.run);
    let groups = s.tenant_groups_named("Engineering");
    assert_eq!(groups.len(), 1);
    let g = &groups[0];
    assert_eq!(g["securityEnabled"], true);
    assert_eq!(g["mailEnabled"], false);
    assert_eq!(g["groupTypes"], json!([]));
    assert_eq!(s.member_upns("Engineering"), vec![upn("ann"), upn("bob")]);
    let link = s.link(ObjectKind::Group, "grp-eng").await.unwrap();
    assert_eq!(link.origin, LinkOrigin::Created);
    assert_eq!(link.object_id, g["id"].as_str().unwrap());
    assert_eq!(link.members.len(), 2);
    assert!(s.plan().await.steps.is_empty());
}

#[tokio::test]
async fn group_kind_microsoft365_creates_a_unified_group() {
    let s = Scenario::new("", "[rule.groups]\nkind = \"microsoft365\"\n").await;
    s.write_source(
        &[user("u-ann", "ann", json!({}))],
        &[group("grp-team", "Team Alpha", &["u-ann"])],
    );
    s.sync().await;
    let groups = s.tenant_groups_named("Team Alpha");
    assert_eq!(groups.len(), 1);
    assert_eq!(groups[0]["groupTypes"], json!(["Unified"]));
    assert_eq!(groups[0]["mailEnabled"], true);
    assert_eq!(groups[0]["securityEnabled"], false);
    assert_eq!(s.member_upns("Team Alpha"), vec![upn("ann")]);
}

#[tokio::test]
async fn group_present_in_the_tenant_is_matched_not_duplicated() {
    let s = Scenario::new("", "").await;
    let existing = s.sandbox.sandbox().seed_group(json!({
        "displayName": "Sales",
        "mailEnabled": false,
        "mailNickname": "sales",
        "securityEnabled": true,
        "groupTypes": [],
    }));
    s.write_source(
        &[user("u-ann", "ann", json!({}))],
        &[group("grp-sales", "Sales", &["u-ann"])],
    );
    s.sync().await;
    let groups = s.tenant_groups_named("Sales");
    assert_eq!(groups.len(), 1, "no second Sales group");
    assert_eq!(groups[0]["id"], existing.as_str());
    assert_eq!(s.member_upns("Sales"), vec![upn("ann")]);
    let link = s.link(ObjectKind::Group, "grp-sales").await.unwrap();
    assert_eq!(link.origin, LinkOrigin::Matched);
    assert_eq!(link.object_id, existing);
    assert_eq!(requests(&s, "POST", "/groups"), 0);
}

#[tokio::test]
async fn membership_is_the_in_scope_linked_source_members() {
    let s = Scenario::new(
        "",
        "[rule.scope]\nfilter = \"department != 'Contractors'\"\n",
    )
    .await;
    s.write_source(
        &[
            user("u-ann", "ann", json!({"department": "R&D"})),
            user("u-bob", "bob", json!({"department": "R&D"})),
            // Disabled at the source: not provisioned, so not a member.
            json!({"id": "u-off", "enabled": false, "attributes": {
                "givenName": "off", "sn": "Tester", "displayName": "off Tester",
                "mail": upn("off"), "usageLocation": "US"}}),
            // Out of the rule's scope.
            user("u-con", "con", json!({"department": "Contractors"})),
        ],
        &[group(
            "grp-eng",
            "Engineering",
            &["u-ann", "u-bob", "u-off", "u-con"],
        )],
    );
    s.sync().await;
    assert!(s.tenant_user(&upn("off")).is_none());
    assert!(s.tenant_user(&upn("con")).is_none());
    assert_eq!(s.member_upns("Engineering"), vec![upn("ann"), upn("bob")]);
    let link = s.link(ObjectKind::Group, "grp-eng").await.unwrap();
    let mut expected = vec![
        s.link(ObjectKind::User, "u-ann").await.unwrap().object_id,
        s.link(ObjectKind::User, "u-bob").await.unwrap().object_id,
    ];
    expected.sort();
    assert_eq!(link.members, expected);
}

#[tokio::test]
async fn members_are_added_and_removed_by_difference_and_hand_added_members_stay() {
    let s = Scenario::new("", "").await;
    let users = vec![
        user("u-ann", "ann", json!({})),
        user("u-bob", "bob", json!({})),
        user("u-cid", "cid", json!({})),
        user("u-dee", "dee", json!({})),
    ];
    s.write_source(
        &users,
        &[group(
            "grp-eng",
            "Engineering",
            &["u-ann", "u-bob", "u-cid"],
        )],
    );
    s.sync().await;
    assert_eq!(
        s.member_upns("Engineering"),
        vec![upn("ann"), upn("bob"), upn("cid")]
    );

    // An admin adds bjensen by hand; the rule does not manage her.
    let group_id = s
        .link(ObjectKind::Group, "grp-eng")
        .await
        .unwrap()
        .object_id;
    let results = s
        .directory
        .apply(vec![DirectoryOp::AddMembers {
            group_id: group_id.clone(),
            member_ids: vec![demo::BJENSEN_ID.to_owned()],
        }])
        .await;
    assert!(results[0].is_ok(), "{results:?}");

    // Bob leaves the group at the source, Dee joins.
    s.write_source(
        &users,
        &[group(
            "grp-eng",
            "Engineering",
            &["u-ann", "u-cid", "u-dee"],
        )],
    );
    let plan = s.plan().await;
    let bob_id = s.link(ObjectKind::User, "u-bob").await.unwrap().object_id;
    assert_eq!(
        plan.steps,
        vec![
            Step::AddMembers {
                group_source_id: "grp-eng".into(),
                display_name: "Engineering".into(),
                member_source_ids: vec!["u-dee".into()],
            },
            Step::RemoveMembers {
                group_source_id: "grp-eng".into(),
                display_name: "Engineering".into(),
                member_object_ids: vec![bob_id],
            },
        ]
    );
    let removes_before = requests(&s, "DELETE", "/members/");
    s.sync().await;
    assert_eq!(requests(&s, "DELETE", "/members/") - removes_before, 1);
    assert_eq!(
        s.member_upns("Engineering"),
        vec![
            upn("ann"),
            demo::BJENSEN_UPN.to_owned(),
            upn("cid"),
            upn("dee")
        ]
    );
    // Bob is only out of the group; the user is untouched.
    assert!(enabled(&s, "bob"));
    let link = s.link(ObjectKind::Group, "grp-eng").await.unwrap();
    assert_eq!(link.members.len(), 3);
    assert!(!link.members.contains(&demo::BJENSEN_ID.to_owned()));
}

#[tokio::test]
async fn forty_five_members_are_added_in_at_most_three_patches() {
    let s = Scenario::new("", "").await;
    let users: Vec<Value> = (0..45)
        .map(|i| user(&format!("u-{i:02}"), &format!("m{i:02}"), json!({})))
        .collect();
    let ids: Vec<String> = (0..45).map(|i| format!("u-{i:02}")).collect();
    let id_refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    s.write_source(&users, &[group("grp-big", "Big", &id_refs)]);
    let out = s.sync().await;
    assert_eq!(out.run.status, RunStatus::Succeeded, "{:?}", out.run);
    let group_id = s.tenant_groups_named("Big")[0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(s.sandbox.sandbox().group_members(&group_id).len(), 45);
    let patches: Vec<_> = s
        .sandbox
        .sandbox()
        .request_log()
        .into_iter()
        .filter(|r| r.method == "PATCH" && r.path.ends_with(&format!("/groups/{group_id}")))
        .collect();
    assert!(
        !patches.is_empty() && patches.len() <= 3,
        "{} PATCHes: {patches:#?}",
        patches.len()
    );
    // Nobody added one by one.
    assert_eq!(requests(&s, "POST", "/members/$ref"), 0);
}

#[tokio::test]
async fn group_leaving_the_source_with_remove_action_delete_is_deleted() {
    let s = Scenario::new("", "[rule.groups]\nremove_action = \"delete\"\n").await;
    let users = vec![user("u-ann", "ann", json!({}))];
    s.write_source(
        &users,
        &[
            group("grp-eng", "Engineering", &["u-ann"]),
            group("grp-ops", "Operations", &["u-ann"]),
        ],
    );
    s.sync().await;
    let ops_id = s
        .link(ObjectKind::Group, "grp-ops")
        .await
        .unwrap()
        .object_id;

    s.write_source(&users, &[group("grp-eng", "Engineering", &["u-ann"])]);
    let out = s.sync().await;
    assert_eq!(out.run.status, RunStatus::Succeeded, "{:?}", out.run);
    assert!(s.tenant_groups_named("Operations").is_empty());
    // A security group is deleted for good (no recycle bin for them).
    assert_eq!(requests(&s, "DELETE", &format!("/groups/{ops_id}")), 1);
    assert!(
        s.sandbox
            .sandbox()
            .groups()
            .iter()
            .all(|g| g["id"] != ops_id.as_str())
    );
    assert!(s.link(ObjectKind::Group, "grp-ops").await.is_none());
    // The rest is untouched.
    assert_eq!(s.member_upns("Engineering"), vec![upn("ann")]);
    assert!(enabled(&s, "ann"));
}

#[tokio::test]
async fn group_leaving_the_source_with_remove_action_disable_is_left_as_is_and_unlinked() {
    let s = Scenario::new("", "[rule.groups]\nremove_action = \"disable\"\n").await;
    let users = vec![user("u-ann", "ann", json!({}))];
    s.write_source(
        &users,
        &[
            group("grp-eng", "Engineering", &["u-ann"]),
            group("grp-ops", "Operations", &["u-ann"]),
        ],
    );
    s.sync().await;
    let ops_id = s
        .link(ObjectKind::Group, "grp-ops")
        .await
        .unwrap()
        .object_id;
    let writes = s.tenant_writes();

    s.write_source(&users, &[group("grp-eng", "Engineering", &["u-ann"])]);
    let out = s.sync().await;
    assert_eq!(out.run.status, RunStatus::Succeeded, "{:?}", out.run);
    assert_eq!(s.tenant_writes(), writes, "no tenant write");
    let ops = s.tenant_groups_named("Operations");
    assert_eq!(ops.len(), 1);
    assert_eq!(ops[0]["id"], ops_id.as_str());
    assert_eq!(s.member_upns("Operations"), vec![upn("ann")]);
    assert!(s.link(ObjectKind::Group, "grp-ops").await.is_none());
    assert!(s.link(ObjectKind::Group, "grp-eng").await.is_some());
}

// ---------------------------------------------------------------------------------------------
// Safety (docs/design.md#safety)
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn breaker_by_count_holds_disables_and_deletes_until_overridden() {
    let s = Scenario::with_rule_text(SandboxConfig::demo(), &rule_with_breaker("", 2, 100.0)).await;
    let five: Vec<Value> = ["u1", "u2", "u3", "u4", "u5"]
        .iter()
        .map(|a| user(&format!("src-{a}"), a, json!({})))
        .collect();
    s.write_source(&five, &[]);
    s.sync().await;
    assert_eq!(linked_users(&s).await, 5);

    // u1 changes, u3 is disabled at the source, u4 and u5 leave, u6 arrives: 3 destructive > 2.
    let mut disabled_u3 = user("src-u3", "u3", json!({}));
    disabled_u3["enabled"] = json!(false);
    s.write_source(
        &[
            user("src-u1", "u1", json!({"title": "Lead"})),
            user("src-u2", "u2", json!({})),
            disabled_u3.clone(),
            user("src-u6", "u6", json!({})),
        ],
        &[],
    );
    let plan = s.plan().await;
    assert!(plan.breaker.tripped);
    assert_eq!(plan.breaker.destructive, 3);
    assert_eq!(plan.breaker.linked_users, 5);
    let out = s.sync().await;
    assert_eq!(out.run.status, RunStatus::BreakerTripped, "{:?}", out.run);
    assert!(
        out.run
            .message
            .as_deref()
            .unwrap()
            .contains("circuit breaker"),
        "{:?}",
        out.run.message
    );
    assert_eq!(out.report.counts.held, 3);
    // Nothing destructive happened…
    for alias in ["u3", "u4", "u5"] {
        assert!(enabled(&s, alias), "{alias} still enabled");
    }
    assert!(s.link(ObjectKind::User, "src-u4").await.is_some());
    assert!(s.link(ObjectKind::User, "src-u5").await.is_some());
    // …the rest did.
    assert_eq!(s.tenant_user(&upn("u1")).unwrap()["jobTitle"], "Lead");
    assert!(s.tenant_user(&upn("u6")).is_some());

    // With the override they happen.
    let out = s.try_sync(true, None).await.unwrap();
    assert_eq!(out.run.status, RunStatus::Succeeded, "{:?}", out.run);
    for alias in ["u3", "u4", "u5"] {
        assert!(!enabled(&s, alias), "{alias} disabled");
    }
    assert!(s.link(ObjectKind::User, "src-u4").await.is_none());
    assert!(s.link(ObjectKind::User, "src-u5").await.is_none());
    assert!(!s.link(ObjectKind::User, "src-u3").await.unwrap().enabled);
    assert!(enabled(&s, "u1") && enabled(&s, "u2") && enabled(&s, "u6"));
}

#[tokio::test]
async fn breaker_by_percent_holds_deletes_until_overridden() {
    let s = Scenario::with_rule_text(
        SandboxConfig::demo(),
        &rule_with_breaker("remove_action = \"delete\"", 1000, 25.0),
    )
    .await;
    let users: Vec<Value> = (0..8)
        .map(|i| user(&format!("src-{i}"), &format!("p{i}"), json!({})))
        .collect();
    s.write_source(&users, &[]);
    s.sync().await;
    assert_eq!(linked_users(&s).await, 8);

    // 3 of 8 (37.5 %) leave: over 25 %.
    s.write_source(&users[..5], &[]);
    let plan = s.plan().await;
    assert!(plan.breaker.tripped);
    assert_eq!(plan.breaker.destructive, 3);
    let out = s.sync().await;
    assert_eq!(out.run.status, RunStatus::BreakerTripped, "{:?}", out.run);
    assert!(s.sandbox.sandbox().deleted_items().is_empty());
    for i in 5..8 {
        assert!(s.tenant_user(&upn(&format!("p{i}"))).is_some());
        assert!(
            s.link(ObjectKind::User, &format!("src-{i}"))
                .await
                .is_some()
        );
    }

    let out = s.try_sync(true, None).await.unwrap();
    assert_eq!(out.run.status, RunStatus::Succeeded, "{:?}", out.run);
    for i in 5..8 {
        assert!(s.tenant_user(&upn(&format!("p{i}"))).is_none());
        let kept = s.link(ObjectKind::User, &format!("src-{i}")).await;
        assert!(
            kept.is_some_and(|l| l.deleted_at.is_some()),
            "kept, marked deleted, for a restore"
        );
    }
    assert_eq!(s.sandbox.sandbox().deleted_items().len(), 3);
    assert_eq!(linked_users(&s).await, 5);
}

#[tokio::test]
async fn breaker_not_tripped_below_both_limits() {
    let s = Scenario::with_rule_text(SandboxConfig::demo(), &rule_with_breaker("", 2, 25.0)).await;
    let users: Vec<Value> = (0..8)
        .map(|i| user(&format!("src-{i}"), &format!("q{i}"), json!({})))
        .collect();
    s.write_source(&users, &[]);
    s.sync().await;
    // 2 of 8 = 25 %: at both limits, not over them.
    s.write_source(&users[..6], &[]);
    let out = s.sync().await;
    assert!(!out.plan.breaker.tripped);
    assert_eq!(out.run.status, RunStatus::Succeeded, "{:?}", out.run);
    assert!(!enabled(&s, "q6") && !enabled(&s, "q7"));
}

#[tokio::test]
async fn breaker_counts_membership_removals_and_holds_them_until_overridden() {
    let s = Scenario::with_rule_text(SandboxConfig::demo(), &rule_with_breaker("", 2, 100.0)).await;
    let users: Vec<Value> = (1..=6)
        .map(|i| user(&format!("src-m{i}"), &format!("m{i}"), json!({})))
        .collect();
    let all = ["src-m1", "src-m2", "src-m3", "src-m4", "src-m5"];
    s.write_source(&users, &[group("grp-team", "Team", &all)]);
    s.sync().await;
    assert_eq!(s.member_upns("Team").len(), 5);

    // Every user stays; the group loses 4 members (over 2) and gains m6.
    s.write_source(&users, &[group("grp-team", "Team", &["src-m1", "src-m6"])]);
    let plan = s.plan().await;
    assert!(plan.breaker.tripped, "{:?}", plan.breaker);
    assert_eq!(plan.breaker.removals.memberships, 4);
    assert_eq!(plan.breaker.destructive, 4);
    assert_eq!(plan.breaker.managed.memberships, 5);
    let out = s.sync().await;
    assert_eq!(out.run.status, RunStatus::BreakerTripped, "{:?}", out.run);
    let message = out.run.message.clone().unwrap();
    assert!(
        message.contains("4 membership removal(s) of 5 managed memberships"),
        "{message}"
    );
    // No member was removed; the addition went ahead.
    let mut expected: Vec<String> = (1..=6).map(|i| upn(&format!("m{i}"))).collect();
    expected.sort();
    assert_eq!(s.member_upns("Team"), expected);
    assert_eq!(requests(&s, "DELETE", "/members/"), 0);

    let out = s.try_sync(true, None).await.unwrap();
    assert_eq!(out.run.status, RunStatus::Succeeded, "{:?}", out.run);
    assert_eq!(s.member_upns("Team"), vec![upn("m1"), upn("m6")]);
}

#[tokio::test]
async fn breaker_counts_license_removals_and_holds_them_until_overridden() {
    let s = Scenario::with_rule_text(
        SandboxConfig::demo(),
        &rule_with_breaker_and("", LICENSES, 2, 100.0),
    )
    .await;
    let licensed = |i: usize, sku: Value| {
        user(
            &format!("src-l{i}"),
            &format!("l{i}"),
            json!({ "licenseSku": sku }),
        )
    };
    s.write_source(
        &(1..=4)
            .map(|i| licensed(i, json!(demo::SKU_E3)))
            .collect::<Vec<_>>(),
        &[],
    );
    s.sync().await;

    // Three users lose their license at the source (over 2); l4 changes title.
    let mut next: Vec<Value> = (1..=3).map(|i| licensed(i, Value::Null)).collect();
    next.push(user(
        "src-l4",
        "l4",
        json!({"licenseSku": demo::SKU_E3, "title": "Lead"}),
    ));
    s.write_source(&next, &[]);
    let plan = s.plan().await;
    assert!(plan.breaker.tripped, "{:?}", plan.breaker);
    assert_eq!(plan.breaker.removals.licenses, 3);
    assert_eq!(plan.breaker.managed.licenses, 4);
    let out = s.sync().await;
    assert_eq!(out.run.status, RunStatus::BreakerTripped, "{:?}", out.run);
    assert_eq!(out.report.counts.held, 3);
    for i in 1..=4 {
        assert_eq!(
            licenses_of(&s.tenant_user(&upn(&format!("l{i}"))).unwrap()),
            vec![sku(demo::SKU_E3)],
            "l{i} keeps its license"
        );
    }
    assert_eq!(s.tenant_user(&upn("l4")).unwrap()["jobTitle"], "Lead");

    let out = s.try_sync(true, None).await.unwrap();
    assert_eq!(out.run.status, RunStatus::Succeeded, "{:?}", out.run);
    for i in 1..=3 {
        assert!(licenses_of(&s.tenant_user(&upn(&format!("l{i}"))).unwrap()).is_empty());
    }
}

#[tokio::test]
async fn breaker_counts_group_deletes_and_holds_them_until_overridden() {
    let s = Scenario::with_rule_text(
        SandboxConfig::demo(),
        &rule_with_breaker_and("", "[rule.groups]\nremove_action = \"delete\"\n", 1, 100.0),
    )
    .await;
    let users = [user("src-g1", "g1", json!({}))];
    let groups: Vec<Value> = (1..=3)
        .map(|i| group(&format!("grp-{i}"), &format!("Group {i}"), &["src-g1"]))
        .collect();
    s.write_source(&users, &groups);
    s.sync().await;

    // Two groups leave the source: two deletes, over 1.
    s.write_source(&users, &groups[..1]);
    let plan = s.plan().await;
    assert!(plan.breaker.tripped, "{:?}", plan.breaker);
    assert_eq!(plan.breaker.removals.groups, 2);
    assert_eq!(plan.breaker.removals.memberships, 0);
    let out = s.sync().await;
    assert_eq!(out.run.status, RunStatus::BreakerTripped, "{:?}", out.run);
    for i in 1..=3 {
        assert_eq!(s.tenant_groups_named(&format!("Group {i}")).len(), 1);
    }
    assert!(s.link(ObjectKind::Group, "grp-2").await.is_some());

    let out = s.try_sync(true, None).await.unwrap();
    assert_eq!(out.run.status, RunStatus::Succeeded, "{:?}", out.run);
    assert!(s.tenant_groups_named("Group 2").is_empty());
    assert!(s.tenant_groups_named("Group 3").is_empty());
}

#[tokio::test]
async fn a_few_membership_changes_do_not_trip_the_breaker() {
    // 10 users in 3 groups: 30 memberships. Moving 2 people (2 removals, 6.7 % of the
    // memberships) stays under 10 %, though 2 of 10 users would be 20 %.
    let s = Scenario::with_rule_text(SandboxConfig::demo(), &rule_with_breaker("", 50, 10.0)).await;
    let ids: Vec<String> = (0..10).map(|i| format!("src-f{i}")).collect();
    let users: Vec<Value> = (0..10)
        .map(|i| user(&ids[i], &format!("f{i}"), json!({})))
        .collect();
    let everyone: Vec<&str> = ids.iter().map(String::as_str).collect();
    let groups = |second: &[&str]| {
        vec![
            group("grp-a", "All A", &everyone),
            group("grp-b", "All B", second),
            group("grp-c", "All C", &everyone),
        ]
    };
    s.write_source(&users, &groups(&everyone));
    s.sync().await;

    s.write_source(&users, &groups(&everyone[2..]));
    let out = s.sync().await;
    assert!(!out.plan.breaker.tripped, "{:?}", out.plan.breaker);
    assert_eq!(out.plan.breaker.removals.memberships, 2);
    assert_eq!(out.plan.breaker.managed.memberships, 30);
    assert_eq!(out.run.status, RunStatus::Succeeded, "{:?}", out.run);
    assert_eq!(s.member_upns("All B").len(), 8);
}

#[tokio::test]
async fn a_source_file_without_groups_sweeps_no_group_but_still_deprovisions_users() {
    let s = Scenario::new("", "[rule.groups]\nremove_action = \"delete\"\n").await;
    let users = [
        user("u-ann", "ann", json!({})),
        user("u-bob", "bob", json!({})),
    ];
    s.write_source(&users, &[group("grp-sales", "Sales", &["u-ann", "u-bob"])]);
    s.sync().await;
    assert!(s.link(ObjectKind::Group, "grp-sales").await.is_some());

    // The export loses its "groups" key, and Bob leaves.
    let text = serde_json::to_string(&json!({"users": [users[0].clone()]})).unwrap();
    std::fs::write(&s.source_path, text).unwrap();
    let out = s.sync().await;
    assert!(
        out.plan.issues.iter().any(|i| i.kind == ObjectKind::Group
            && i.operation == "read"
            && i.message.contains("no \"groups\" list")),
        "{:#?}",
        out.plan.issues
    );
    assert!(
        !out.plan.steps.iter().any(|step| matches!(
            step,
            Step::Deprovision {
                kind: ObjectKind::Group,
                ..
            } | Step::RemoveMembers { .. }
        )),
        "{:#?}",
        out.plan.steps
    );
    // The group and its members are left as they are; the user snapshot was complete.
    assert_eq!(s.member_upns("Sales"), vec![upn("ann"), upn("bob")]);
    assert!(s.link(ObjectKind::Group, "grp-sales").await.is_some());
    assert!(!enabled(&s, "bob"));
    assert!(enabled(&s, "ann"));
}

#[tokio::test]
async fn record_without_id_makes_the_snapshot_incomplete_and_nothing_is_deprovisioned() {
    let s = Scenario::new("", "").await;
    s.write_source(
        &[
            user("u-ann", "ann", json!({})),
            user("u-bob", "bob", json!({})),
            user("u-cid", "cid", json!({})),
        ],
        &[],
    );
    s.sync().await;

    // Bob and Cid are gone, and one record has no id: it could be either of them.
    let mut broken = user("ignored", "bob", json!({}));
    broken.as_object_mut().unwrap().remove("id");
    s.write_source(&[user("u-ann", "ann", json!({})), broken], &[]);
    let plan = s.plan().await;
    assert!(!plan.snapshot_complete);
    assert!(
        !plan
            .steps
            .iter()
            .any(|s| matches!(s, Step::Deprovision { .. })),
        "{plan:#?}"
    );
    assert!(
        plan.issues
            .iter()
            .any(|i| i.operation == "read" && i.message.contains("users[1]")),
        "{:#?}",
        plan.issues
    );
    s.sync().await;
    assert!(enabled(&s, "bob") && enabled(&s, "cid"));
    assert!(s.link(ObjectKind::User, "u-bob").await.is_some());
    assert!(s.link(ObjectKind::User, "u-cid").await.is_some());
    let checkpoint = s
        .state
        .get_checkpoint(&s.connection)
        .await
        .unwrap()
        .unwrap();
    assert!(!checkpoint.sweep_allowed);

    // Fixed: the sweep happens.
    s.write_source(&[user("u-ann", "ann", json!({}))], &[]);
    let out = s.sync().await;
    assert!(out.plan.snapshot_complete);
    assert!(!enabled(&s, "bob") && !enabled(&s, "cid"));
}

#[tokio::test]
async fn missing_scope_group_makes_the_snapshot_incomplete_and_nothing_is_deprovisioned() {
    let s = Scenario::new("", "[rule.scope]\ngroups = [\"grp-staff\"]\n").await;
    let users = vec![
        user("u-ann", "ann", json!({})),
        user("u-bob", "bob", json!({})),
    ];
    s.write_source(&users, &[group("grp-staff", "Staff", &["u-ann", "u-bob"])]);
    s.sync().await;
    assert_eq!(linked_users(&s).await, 2);

    s.write_source(&users, &[]);
    let plan = s.plan().await;
    assert!(!plan.snapshot_complete);
    assert!(
        !plan
            .steps
            .iter()
            .any(|s| matches!(s, Step::Deprovision { .. })),
        "{plan:#?}"
    );
    assert!(
        plan.issues
            .iter()
            .any(|i| i.source_id == "grp-staff" && i.message.contains("not in the source")),
        "{:#?}",
        plan.issues
    );
    s.sync().await;
    assert!(enabled(&s, "ann") && enabled(&s, "bob"));
    assert_eq!(linked_users(&s).await, 2);
}

#[tokio::test]
async fn per_object_failure_is_recorded_with_backoff_and_retried_after_its_retry_time() {
    let s = Scenario::new("", LICENSES).await;
    s.write_source(
        &[
            user("u-ann", "ann", json!({"licenseSku": demo::SKU_FULL})),
            user("u-bob", "bob", json!({"licenseSku": demo::SKU_E3})),
        ],
        &[],
    );
    let before = now_ms(&s);
    let out = s.sync().await;
    assert_eq!(out.run.status, RunStatus::PartiallyFailed);
    let errors = s.errors().await;
    assert_eq!(errors.len(), 1, "{errors:#?}");
    let error = errors[0].clone();
    assert_eq!(error.source_id, "u-ann");
    assert_eq!(error.operation, "licenses");
    assert!(
        error.message.contains("no free licenses"),
        "{}",
        error.message
    );
    assert_eq!(error.attempts, 1);
    assert!(
        error.next_retry_at >= before + 60_000,
        "next retry in the future: {error:?}"
    );
    assert_eq!(
        licenses_of(&s.tenant_user(&upn("bob")).unwrap()),
        vec![sku(demo::SKU_E3)]
    );

    // An immediate second run does not retry it.
    let assigns = requests(&s, "POST", "/assignLicense");
    let out = s.sync().await;
    assert!(
        !out.plan
            .steps
            .iter()
            .any(|s| matches!(s, Step::AssignLicenses { .. })),
        "{:#?}",
        out.plan
    );
    assert_eq!(requests(&s, "POST", "/assignLicense"), assigns);
    assert_eq!(s.errors().await, vec![error.clone()]);

    // The admin frees the seat; the retry time passes; the next run retries and succeeds.
    let freed = s
        .directory
        .apply(vec![DirectoryOp::AssignLicenses {
            id: demo::ADMIN_ID.to_owned(),
            add: Vec::new(),
            remove: vec![demo::SKU_FULL.to_owned()],
        }])
        .await;
    assert!(freed[0].is_ok(), "{freed:?}");
    let mut due = error.clone();
    due.next_retry_at = now_ms(&s) - 1;
    let lease = m365_core::conformance::writer(&s.state, &s.connection).await;
    s.state
        .put_error(&s.connection, &due, &lease)
        .await
        .unwrap();
    let out = s.sync().await;
    assert_eq!(out.run.status, RunStatus::Succeeded, "{:?}", out.run);
    assert_eq!(
        licenses_of(&s.tenant_user(&upn("ann")).unwrap()),
        vec![sku(demo::SKU_FULL)]
    );
    assert!(s.errors().await.is_empty());
    assert_eq!(
        s.link(ObjectKind::User, "u-ann").await.unwrap().licenses,
        vec![lic(demo::SKU_FULL, &[])]
    );
}

// ---------------------------------------------------------------------------------------------
// Resumability (docs/design.md#state-and-runs)
// ---------------------------------------------------------------------------------------------

/// 24 licensed users with managers (one on a later page) and one group of all of them.
fn rich_source() -> (Vec<Value>, Vec<Value>) {
    let users: Vec<Value> = (0..24)
        .map(|i| {
            let manager = if i == 0 {
                "r-23".to_owned()
            } else {
                "r-00".to_owned()
            };
            user(
                &format!("r-{i:02}"),
                &format!("r{i:02}"),
                json!({"licenseSku": demo::SKU_E3, "manager": manager, "title": format!("T{i}")}),
            )
        })
        .collect();
    let ids: Vec<String> = (0..24).map(|i| format!("r-{i:02}")).collect();
    let id_refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    (users, vec![group("grp-all", "Everyone Rich", &id_refs)])
}

/// The tenant as the rule sees it, without object ids: users by UPN (mapped properties,
/// enabled, licenses, manager UPN) and groups by name (member UPNs).
fn tenant_picture(s: &Scenario) -> Value {
    let users = s.sandbox.sandbox().users();
    let upn_of = |id: &str| {
        users
            .iter()
            .find(|u| u["id"] == id)
            .and_then(|u| u["userPrincipalName"].as_str())
            .map(str::to_owned)
    };
    let mut by_upn = BTreeMap::new();
    for u in &users {
        let upn = u["userPrincipalName"].as_str().unwrap().to_owned();
        by_upn.insert(
            upn,
            json!({
                "displayName": u["displayName"],
                "givenName": u["givenName"],
                "surname": u["surname"],
                "jobTitle": u["jobTitle"],
                "usageLocation": u["usageLocation"],
                "accountEnabled": u["accountEnabled"],
                "licenses": licenses_of(u),
                "manager": u.get("manager").and_then(Value::as_str).and_then(upn_of),
            }),
        );
    }
    let mut groups = BTreeMap::new();
    for g in s.sandbox.sandbox().groups() {
        let name = g["displayName"].as_str().unwrap().to_owned();
        let mut members: Vec<Option<String>> = s
            .sandbox
            .sandbox()
            .group_members(g["id"].as_str().unwrap())
            .iter()
            .map(|m| upn_of(m))
            .collect();
        members.sort();
        assert!(
            groups.insert(name, json!(members)).is_none(),
            "duplicate group"
        );
    }
    json!({"users": by_upn, "groups": groups})
}

#[tokio::test]
async fn deadline_already_past_runs_one_chunk_then_checkpoints() {
    let s = Scenario::new("", &format!("{MANAGER}{LICENSES}")).await;
    let (users, groups) = rich_source();
    s.write_source(&users, &groups);
    let out = s.try_sync(false, Some(now_ms(&s) - 1)).await.unwrap();
    assert_eq!(out.run.status, RunStatus::Checkpointed, "{:?}", out.run);
    assert!(out.report.stopped_at_deadline);
    // One chunk (10 steps here) runs whatever the deadline, so that runs always move forward.
    let steps_done: u64 = out.report.counts.named().iter().map(|(_, n)| n).sum();
    assert!(
        (1..=10).contains(&steps_done),
        "one chunk of steps: {:?}",
        out.report.counts
    );
    assert!(s.tenant_writes() > 0);
    assert!(linked_users(&s).await < 24);
    let runs = s.state.list_runs(&s.connection, 1).await.unwrap();
    assert_eq!(runs[0].status, RunStatus::Checkpointed);

    // The next run does it all.
    let out = s.sync().await;
    assert_eq!(out.run.status, RunStatus::Succeeded, "{:?}", out.run);
    assert_eq!(linked_users(&s).await, 24);
}

#[tokio::test]
async fn short_deadline_runs_converge_to_the_end_state_of_one_unlimited_run() {
    let extra = format!("{MANAGER}{LICENSES}");
    let (users, groups) = rich_source();

    // Reference: one unlimited run.
    let reference = Scenario::new("", &extra).await;
    reference.write_source(&users, &groups);
    let out = reference.sync().await;
    assert_eq!(out.run.status, RunStatus::Succeeded, "{:?}", out.run);
    let expected = tenant_picture(&reference);
    assert_eq!(expected["users"].as_object().unwrap().len(), 26);

    // Slow writes and a tiny deadline: many runs.
    let s = Scenario::new("", &extra).await;
    s.sandbox.sandbox().set_knobs(Knobs {
        write_latency_ms: 40,
        ..s.sandbox.sandbox().knobs()
    });
    s.write_source(&users, &groups);
    let mut checkpointed = 0;
    let mut succeeded = false;
    for _ in 0..80 {
        let out = s.try_sync(false, Some(now_ms(&s) + 150)).await.unwrap();
        match out.run.status {
            RunStatus::Checkpointed => checkpointed += 1,
            RunStatus::Succeeded => {
                succeeded = true;
                break;
            }
            other => panic!("unexpected status {other:?}: {:?}", out.run),
        }
    }
    assert!(succeeded, "converged within 80 runs");
    assert!(checkpointed >= 1, "the deadline stopped at least one run");
    assert_eq!(tenant_picture(&s), expected);
    for i in 0..24 {
        assert_eq!(s.tenant_users_named(&upn(&format!("r{i:02}"))), 1);
    }
    assert_eq!(consumed(&s, demo::SKU_E3), 24);
    assert!(s.plan().await.steps.is_empty(), "{:#?}", s.plan().await);
}

#[tokio::test]
async fn links_lost_after_a_crash_are_relinked_by_upn_without_duplicates() {
    let s = Scenario::new("", &format!("{MANAGER}{LICENSES}")).await;
    let (users, groups) = rich_source();
    s.write_source(&users, &groups);
    s.sync().await;
    let expected = tenant_picture(&s);

    // Tenant writes happened, their records did not.
    let user_ids: Vec<String> = (0..24).map(|i| format!("r-{i:02}")).collect();
    let lease = m365_core::conformance::writer(&s.state, &s.connection).await;
    s.state
        .delete_links(&s.connection, ObjectKind::User, &user_ids, &lease)
        .await
        .unwrap();
    s.state
        .delete_links(
            &s.connection,
            ObjectKind::Group,
            &["grp-all".to_owned()],
            &lease,
        )
        .await
        .unwrap();

    let out = s.sync().await;
    assert_eq!(out.run.status, RunStatus::Succeeded, "{:?}", out.run);
    assert!(
        !out.plan
            .steps
            .iter()
            .any(|s| matches!(s, Step::CreateUser { .. } | Step::CreateGroup { .. })),
        "{:#?}",
        out.plan
    );
    assert_eq!(out.report.counts.linked, 24);
    assert_eq!(tenant_picture(&s), expected);
    for i in 0..24 {
        assert_eq!(s.tenant_users_named(&upn(&format!("r{i:02}"))), 1);
    }
    assert_eq!(consumed(&s, demo::SKU_E3), 24);
    assert_eq!(linked_users(&s).await, 24);
    let group_link = s.link(ObjectKind::Group, "grp-all").await.unwrap();
    assert_eq!(group_link.members.len(), 24);
    // Settled again.
    assert!(s.plan().await.steps.is_empty(), "{:#?}", s.plan().await);
}

// ---------------------------------------------------------------------------------------------
// Rule deletion (`deprovision_on_rule_deletion`, `rule delete --deprovision`)
// ---------------------------------------------------------------------------------------------

async fn scenario_for_rule_deletion(preferences: &str) -> Scenario {
    let s = Scenario::new(preferences, "").await;
    // A tenant user the rule never linked.
    s.sandbox.sandbox().seed_user(json!({
        "accountEnabled": true,
        "displayName": "Zed Outsider",
        "mailNickname": "zed",
        "userPrincipalName": upn("zed"),
    }));
    s.write_source(
        &[
            user("u-ann", "ann", json!({})),
            user("u-bob", "bob", json!({})),
            user(
                "src-bjensen",
                "bjensen",
                json!({"displayName": "Barbara Jensen"}),
            ),
        ],
        &[group("grp-eng", "Engineering", &["u-ann", "u-bob"])],
    );
    s.sync().await;
    assert_eq!(linked_users(&s).await, 3);
    s
}

async fn assert_state_cleared(s: &Scenario) {
    assert_eq!(linked_users(s).await, 0);
    assert_eq!(
        s.state
            .count_links(&s.connection, ObjectKind::Group)
            .await
            .unwrap(),
        0
    );
    assert!(s.errors().await.is_empty());
    assert!(
        s.state
            .get_checkpoint(&s.connection)
            .await
            .unwrap()
            .is_none()
    );
}

fn zed_untouched(s: &Scenario) {
    let zed = s.tenant_user(&upn("zed")).expect("zed is still there");
    assert_eq!(zed["accountEnabled"], true);
    assert_eq!(zed["displayName"], "Zed Outsider");
}

#[tokio::test]
async fn rule_delete_with_deprovision_disables_every_linked_user_and_clears_state() {
    let s = scenario_for_rule_deletion("").await;
    s.delete_rule(true).await;
    for alias in ["ann", "bob", "bjensen"] {
        assert!(!enabled(&s, alias), "{alias} disabled");
    }
    // Groups follow the groups remove action (disable: left as they are).
    assert_eq!(s.member_upns("Engineering"), vec![upn("ann"), upn("bob")]);
    zed_untouched(&s);
    assert_eq!(
        s.tenant_user(demo::ADMIN_UPN).unwrap()["accountEnabled"],
        true
    );
    assert_state_cleared(&s).await;
}

#[tokio::test]
async fn rule_delete_with_deprovision_and_remove_action_delete_deletes_linked_users() {
    let s = scenario_for_rule_deletion("remove_action = \"delete\"").await;
    s.delete_rule(true).await;
    for alias in ["ann", "bob", "bjensen"] {
        assert!(s.tenant_user(&upn(alias)).is_none(), "{alias} deleted");
    }
    assert_eq!(s.sandbox.sandbox().deleted_items().len(), 3);
    zed_untouched(&s);
    assert_state_cleared(&s).await;
}

#[tokio::test]
async fn rule_delete_without_deprovision_leaves_the_tenant_and_clears_state() {
    let s = scenario_for_rule_deletion("deprovision_on_rule_deletion = false").await;
    let writes = s.tenant_writes();
    s.delete_rule(false).await;
    assert_eq!(s.tenant_writes(), writes, "no tenant write");
    for alias in ["ann", "bob", "bjensen"] {
        assert!(enabled(&s, alias), "{alias} untouched");
    }
    assert_eq!(s.member_upns("Engineering"), vec![upn("ann"), upn("bob")]);
    zed_untouched(&s);
    assert_state_cleared(&s).await;
}

#[tokio::test]
async fn deprovision_on_rule_deletion_deprovisions_without_the_flag() {
    let s = scenario_for_rule_deletion(
        "deprovision_on_rule_deletion = true\nremove_action = \"delete\"",
    )
    .await;
    s.delete_rule(false).await;
    for alias in ["ann", "bob", "bjensen"] {
        assert!(s.tenant_user(&upn(alias)).is_none(), "{alias} deleted");
    }
    zed_untouched(&s);
    assert_state_cleared(&s).await;
}

// ---------------------------------------------------------------------------------------------
// Concurrency (docs/design.md#state-and-runs: one run per connection)
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn two_syncs_at_once_one_runs_and_the_other_is_busy() {
    let s = Scenario::new("", "").await;
    s.sandbox.sandbox().set_knobs(Knobs {
        write_latency_ms: 20,
        ..s.sandbox.sandbox().knobs()
    });
    let users: Vec<Value> = (0..10)
        .map(|i| user(&format!("c-{i}"), &format!("c{i}"), json!({})))
        .collect();
    s.write_source(&users, &[]);
    let (a, b) = tokio::join!(s.try_sync(false, None), s.try_sync(false, None));
    let (ok, busy) = match (a, b) {
        (Ok(ok), Err(busy)) | (Err(busy), Ok(ok)) => (ok, busy),
        (a, b) => panic!("expected one run and one Busy, got {a:?} and {b:?}"),
    };
    assert_eq!(ok.run.status, RunStatus::Succeeded);
    assert!(
        matches!(&busy, RunError::Busy { lease } if lease.connection == s.connection && lease.holder.owner == "scenario"),
        "{busy:?}"
    );
    for i in 0..10 {
        assert_eq!(s.tenant_users_named(&upn(&format!("c{i}"))), 1);
    }
    let runs = s.state.list_runs(&s.connection, 10).await.unwrap();
    assert_eq!(runs.len(), 1, "the busy run recorded nothing: {runs:#?}");
    // The lease was given back: the next run runs.
    assert!(s.try_sync(false, None).await.is_ok());
}
