//! The two examples of the seed documents, by name: an existing tenant user matched by UPN and
//! an existing tenant group matched by displayName, both linked rather than duplicated.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a broken expectation should fail loudly"
)]

use m365_core::plan::Step;
use m365_core::{LinkOrigin, ObjectKind};
use m365_integration_tests::scenario::{Scenario, group, user};
use m365_sandbox::demo;
use serde_json::json;

#[tokio::test]
async fn source_user_with_mail_bjensen_is_linked_to_the_existing_tenant_user() {
    let s = Scenario::new("", "").await;
    s.write_source(
        &[user(
            "src-bjensen",
            "bjensen",
            json!({"displayName": "Barbara Jensen", "givenName": "Barbara", "sn": "Jensen", "title": "Accountant"}),
        )],
        &[],
    );

    let plan = s.plan().await;
    assert!(
        plan.steps.iter().any(|step| matches!(step,
            Step::LinkUser { source_id, object_id, user_principal_name }
                if source_id == "src-bjensen" && object_id == demo::BJENSEN_ID
                    && user_principal_name == demo::BJENSEN_UPN)),
        "{plan:#?}"
    );
    assert!(
        !plan
            .steps
            .iter()
            .any(|s| matches!(s, Step::CreateUser { .. }))
    );

    s.sync().await;
    // No duplicate: one tenant user with that UPN, the seeded one, now carrying the source's
    // mapped values.
    assert_eq!(s.tenant_users_named(demo::BJENSEN_UPN), 1);
    let tenant = s.tenant_user(demo::BJENSEN_UPN).unwrap();
    assert_eq!(tenant["id"], demo::BJENSEN_ID);
    assert_eq!(tenant["jobTitle"], "Accountant");
    let link = s.link(ObjectKind::User, "src-bjensen").await.unwrap();
    assert_eq!(link.object_id, demo::BJENSEN_ID);
    assert_eq!(link.origin, LinkOrigin::Matched);

    // Unchanged source: nothing planned, nothing written.
    let writes = s.tenant_writes();
    assert!(s.plan().await.steps.is_empty());
    s.sync().await;
    assert_eq!(s.tenant_writes(), writes);
}

#[tokio::test]
async fn source_group_accounting_is_matched_to_the_existing_tenant_group() {
    let s = Scenario::new("", "").await;
    s.write_source(
        &[
            user("u-ann", "ann", json!({})),
            user("u-bob", "bob", json!({})),
        ],
        &[group("grp-acc", demo::ACCOUNTING_NAME, &["u-ann", "u-bob"])],
    );

    let plan = s.plan().await;
    assert!(
        plan.steps.iter().any(|step| matches!(step,
            Step::MatchGroup { source_id, object_id, .. }
                if source_id == "grp-acc" && object_id == demo::ACCOUNTING_ID)),
        "{plan:#?}"
    );
    assert!(
        !plan
            .steps
            .iter()
            .any(|s| matches!(s, Step::CreateGroup { .. }))
    );

    s.sync().await;
    let groups = s.tenant_groups_named(demo::ACCOUNTING_NAME);
    assert_eq!(groups.len(), 1, "no second Accounting group");
    assert_eq!(groups[0]["id"], demo::ACCOUNTING_ID);
    // The source members were added; the member the tenant group already had stays.
    assert_eq!(
        s.member_upns(demo::ACCOUNTING_NAME),
        vec![
            format!("ann@{}", demo::VERIFIED_DOMAIN),
            demo::BJENSEN_UPN.to_owned(),
            format!("bob@{}", demo::VERIFIED_DOMAIN),
        ]
    );
    let link = s.link(ObjectKind::Group, "grp-acc").await.unwrap();
    assert_eq!(link.object_id, demo::ACCOUNTING_ID);
    assert_eq!(link.origin, LinkOrigin::Matched);
    assert_eq!(
        link.members.len(),
        2,
        "only the members this rule added are managed"
    );
}
