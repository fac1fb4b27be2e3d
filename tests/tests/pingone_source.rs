//! A PingOne environment (the PingOne stand-in) as the source of the sandbox tenant: the first
//! load of users, populations and groups (nested and dynamic), managers by a custom attribute,
//! runs that read one page of audit activities when nothing changed, and deletions found through
//! the activities cursor and agreed by a full reconciliation.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a broken expectation should fail loudly"
)]

use std::collections::BTreeMap;

use m365_core::RunStatus;
use m365_core::config::pingone_source::PingOneSourceConfig;
use m365_core::engine::SyncOutcome;
use m365_core::secrets::ConnectionSecrets;
use m365_integration_tests::pingone::seed_with_enabled_managers;
use m365_integration_tests::scenario::Scenario;
use m365_pingone_sandbox::{PingOneSandbox, Seed, demo};
use m365_sandbox::SandboxConfig;
use m365_source_pingone::PingOneSource;
use secrecy::SecretString;

const RULE: &str = r#"
[rule]
name = "staff"
match_attribute = "userPrincipalName"

[rule.preferences]
remove_action = "disable"

[rule.breaker]
max_count = 1000
max_percent = 100.0

[rule.groups]
enabled = true
kind = "security"

[rule.mapping.attributes]
userPrincipalName = "{{ email | lower }}"
displayName = "{{ name.given }} {{ name.family }}"
givenName = { attribute = "name.given" }
surname = { attribute = "name.family" }
jobTitle = { attribute = "title" }
employeeId = { attribute = "externalId" }

[rule.mapping.password]
source = "generate"

[rule.mapping]
manager = { attribute = "managerId" }
"#;

const NOTHING_CHANGED: &str = "no source changes since the last run";

fn source(pingone: &PingOneSandbox) -> PingOneSource {
    let config: PingOneSourceConfig = toml::from_str(&format!(
        r#"
        environment_id = "{}"
        client_id = "{}"
        auth_url = "{url}"
        api_url = "{url}"
        "#,
        pingone.environment_id(),
        demo::BASIC_CLIENT_ID,
        url = pingone.url(),
    ))
    .unwrap();
    let secrets = ConnectionSecrets {
        additional_apps: Vec::new(),
        tenant: "unused".into(),
        client_id: "unused".into(),
        credential: m365_core::AppCredential::Secret(SecretString::from("unused")),
        extra: BTreeMap::from([(
            "pingone_client_secret".to_owned(),
            SecretString::from(demo::BASIC_CLIENT_SECRET),
        )]),
    };
    PingOneSource::new(config, &secrets).unwrap()
}

/// A sync, with the Graph requests the sandbox tenant received during it.
async fn sync(s: &Scenario, pingone: &PingOneSource, full: bool) -> (SyncOutcome, u64) {
    let before = s.sandbox.sandbox().stats().requests;
    let outcome = s.sync_from_with(pingone, false, full).await.unwrap();
    assert_ne!(outcome.run.status, RunStatus::Failed, "{:?}", outcome.run);
    let requests = s.sandbox.sandbox().stats().requests - before;
    (outcome, requests)
}

fn email(username: &str) -> String {
    format!("{username}@example.com")
}

fn enabled(s: &Scenario, username: &str) -> bool {
    s.tenant_user(&email(username)).unwrap()["accountEnabled"] == true
}

#[tokio::test]
async fn a_first_load_of_500_users_in_3_populations_and_10_groups_then_a_quiet_run_reads_one_page_of_activities()
 {
    let seed = seed_with_enabled_managers(500);
    let populations: std::collections::BTreeSet<&str> = seed
        .users
        .iter()
        .map(|u| u.population_id.as_str())
        .collect();
    assert_eq!(populations.len(), 3);
    assert_eq!(seed.groups.len(), 10);
    let nested = seed
        .groups
        .iter()
        .filter(|g| !g.member_group_ids.is_empty())
        .count();
    let dynamic = seed
        .groups
        .iter()
        .filter(|g| g.user_filter.is_some())
        .count();
    assert_eq!((nested, dynamic), (2, 1));
    let enabled_users = seed.users.iter().filter(|u| u.enabled).count() as u64;
    let pingone = PingOneSandbox::start(seed.clone()).await.unwrap();
    let s = Scenario::with_rule_text(SandboxConfig::demo(), RULE).await;
    let source = source(&pingone);

    let (first, _) = sync(&s, &source, false).await;
    let by_id: BTreeMap<&str, &m365_pingone_sandbox::UserSeed> =
        seed.users.iter().map(|u| (u.id.as_str(), u)).collect();
    let manager_of = |u: &m365_pingone_sandbox::UserSeed| {
        u.custom
            .get("managerId")
            .and_then(|m| m.as_str())
            .map(|m| by_id[m])
    };
    assert_eq!(first.run.status, RunStatus::Succeeded, "{:?}", first.run);
    assert_eq!(
        first.run.counts.created, enabled_users,
        "{:?}",
        first.run.counts
    );
    assert!(first.plan.issues.is_empty(), "{:?}", first.plan.issues);
    for group in &seed.groups {
        assert_eq!(
            s.tenant_groups_named(&group.name).len(),
            1,
            "{}",
            group.name
        );
    }
    // A nested group's members are members of its parent; a dynamic group's are those its
    // filter matches; disabled users are not provisioned, so they are nobody's members.
    for parent in seed
        .groups
        .iter()
        .filter(|g| !g.member_group_ids.is_empty())
    {
        let child = seed
            .groups
            .iter()
            .find(|g| g.id == parent.member_group_ids[0])
            .unwrap();
        let parent_members = s.member_upns(&parent.name);
        let child_members = s.member_upns(&child.name);
        assert!(!child_members.is_empty(), "{}", child.name);
        for member in &child_members {
            assert!(
                parent_members.contains(member),
                "{member} of {} in {}",
                child.name,
                parent.name
            );
        }
    }
    let contractors = seed
        .groups
        .iter()
        .find(|g| g.user_filter.is_some())
        .unwrap();
    let mut expected: Vec<String> = seed
        .users
        .iter()
        .filter(|u| u.enabled && u.title.as_deref() == Some("Contractor"))
        .map(|u| u.email.to_lowercase())
        .collect();
    expected.sort();
    let mut members = s.member_upns(&contractors.name);
    members.sort();
    assert!(!expected.is_empty());
    assert_eq!(members, expected);
    // Managers from the custom attribute, for every provisioned user whose manager is.
    let mut managed = 0;
    for user in seed.users.iter().filter(|u| u.enabled) {
        let Some(manager) = manager_of(user).filter(|m| m.enabled) else {
            continue;
        };
        let tenant = s.tenant_user(&user.email).unwrap();
        let boss = s.tenant_user(&manager.email).unwrap();
        assert_eq!(
            tenant["manager"], boss["id"],
            "{} reports to {}",
            user.username, manager.username
        );
        managed += 1;
    }
    assert!(managed > 300, "{managed}");
    assert_eq!(first.run.counts.managers, managed, "{:?}", first.run.counts);

    let activities_before = pingone.counters().activities_requests;
    let (quiet, requests) = sync(&s, &source, false).await;
    assert_eq!(quiet.run.status, RunStatus::Succeeded, "{:?}", quiet.run);
    assert_eq!(quiet.run.message.as_deref(), Some(NOTHING_CHANGED));
    assert_eq!(requests, 0, "nothing changed: no Graph request at all");
    assert_eq!(
        pingone.counters().activities_requests - activities_before,
        1
    );
}

#[tokio::test]
async fn a_user_deleted_while_webhooks_were_down_is_deprovisioned_through_the_activities_cursor() {
    let pingone = PingOneSandbox::start(Seed::demo()).await.unwrap();
    let s = Scenario::with_rule_text(SandboxConfig::demo(), RULE).await;
    let source = source(&pingone);
    let (first, _) = sync(&s, &source, false).await;
    assert_eq!(
        first.run.counts.created, 4,
        "Erin is disabled: {:?}",
        first.run.counts
    );
    assert!(enabled(&s, "bob"));

    pingone.delete_user(demo::BOB_ID).unwrap();
    pingone
        .update_user(demo::CAROL_ID, |u| {
            u.title = Some("Staff Engineer".to_owned())
        })
        .unwrap();
    let (changes, _) = sync(&s, &source, false).await;
    assert_eq!(
        changes.run.status,
        RunStatus::Succeeded,
        "{:?}",
        changes.run
    );
    assert!(!enabled(&s, "bob"), "Bob's account is disabled");
    assert_eq!(
        s.tenant_user(&email("carol")).unwrap()["jobTitle"],
        "Staff Engineer"
    );
    assert!(
        !s.member_upns("Engineering").contains(&email("bob")),
        "{:?}",
        s.member_upns("Engineering")
    );

    // A full reconciliation reads the whole environment and finds nothing left to do.
    let writes = s.tenant_writes();
    let (full, _) = sync(&s, &source, true).await;
    assert_eq!(full.run.status, RunStatus::Succeeded, "{:?}", full.run);
    assert_eq!(s.tenant_writes(), writes, "{:?}", full.run.counts);
    assert!(!enabled(&s, "bob"));
}

#[tokio::test]
async fn memberships_and_groups_changed_in_pingone_follow_on_the_next_run() {
    let pingone = PingOneSandbox::start(Seed::demo()).await.unwrap();
    let s = Scenario::with_rule_text(SandboxConfig::demo(), RULE).await;
    let source = source(&pingone);
    sync(&s, &source, false).await;
    assert!(!s.member_upns("Platform").contains(&email("alice")));

    // Alice joins Platform, which is nested in Engineering; Dave stops matching Contractors.
    pingone
        .add_member(demo::PLATFORM_ID, demo::ALICE_ID)
        .unwrap();
    pingone
        .update_user(demo::DAVE_ID, |u| {
            u.population_id = demo::POPULATION_STAFF.to_owned()
        })
        .unwrap();
    let (run, _) = sync(&s, &source, false).await;
    assert_eq!(run.run.status, RunStatus::Succeeded, "{:?}", run.run);
    assert!(s.member_upns("Platform").contains(&email("alice")));
    assert!(!s.member_upns("Contractors").contains(&email("dave")));

    pingone
        .remove_member(demo::PLATFORM_ID, demo::ALICE_ID)
        .unwrap();
    let (run, _) = sync(&s, &source, false).await;
    assert_eq!(run.run.status, RunStatus::Succeeded, "{:?}", run.run);
    assert!(!s.member_upns("Platform").contains(&email("alice")));
}
