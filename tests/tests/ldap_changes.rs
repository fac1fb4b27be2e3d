//! Incremental runs from an LDAP directory (RFC 4533 content synchronization, refreshOnly,
//! against Debian's slapd with the syncprov overlay) into the sandbox tenant: the cursor in the
//! checkpoint, a run with nothing changed that makes no Graph request, changes and deletes
//! applied as they happen, the breaker holding deletes without the cursor skipping them, and the
//! full pass when the directory forgot its deletions or refuses the cookie.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a broken expectation should fail loudly"
)]

use m365_core::engine::SyncOutcome;
use m365_core::{Checkpoint, LeaseGrant, RunStatus, SourceCursor, StateStore};
use m365_integration_tests::ldap::{
    ADMIN_PASSWORD, GROUPS, PEOPLE, Person, Slapd, directory_ldif, people,
};
use m365_integration_tests::scenario::Scenario;
use m365_sandbox::SandboxConfig;
use m365_source_ldap::LdapSource;

const RULE: &str = r#"
[rule]
name = "staff"
match_attribute = "userPrincipalName"

[rule.preferences]
allow_create = true
allow_update = true
allow_disable = true
allow_deprovision = true
remove_action = "disable"

[rule.breaker]
max_count = MAX_COUNT
max_percent = 100.0

[rule.groups]
enabled = true
kind = "security"

[rule.manager]
reference = "dn"

[rule.mapping.attributes]
userPrincipalName = "{{ mail | lower }}"
displayName = { attribute = "cn" }
jobTitle = { attribute = "title" }

[rule.mapping.password]
source = "generate"

[rule.mapping]
manager = { attribute = "manager" }
"#;

const NOTHING_CHANGED: &str = "no source changes since the last run";

fn source(slapd: &Slapd) -> LdapSource {
    slapd.source(
        "disabled_attribute = \"employeeType\"\ndisabled_values = [\"inactive\"]",
        ADMIN_PASSWORD,
        None,
    )
}

async fn scenario(max_count: u64) -> Scenario {
    let rule = RULE.replace("MAX_COUNT", &max_count.to_string());
    Scenario::with_rule_text(SandboxConfig::demo(), &rule).await
}

/// A sync, with the Graph requests the sandbox received during it.
async fn sync(s: &Scenario, ldap: &LdapSource, override_breaker: bool) -> (SyncOutcome, u64) {
    let before = s.sandbox.sandbox().stats().requests;
    let outcome = s
        .sync_from_with(ldap, override_breaker, false)
        .await
        .unwrap();
    let requests = s.sandbox.sandbox().stats().requests - before;
    (outcome, requests)
}

async fn checkpoint(s: &Scenario) -> Checkpoint {
    s.state
        .get_checkpoint(&s.connection)
        .await
        .unwrap()
        .expect("a checkpoint")
}

fn enabled(s: &Scenario, person: &Person) -> bool {
    s.tenant_user(&person.mail()).unwrap()["accountEnabled"] == true
}

fn delete(person: &Person) -> String {
    format!("dn: {}\nchangetype: delete\n\n", person.dn())
}

#[tokio::test]
async fn after_the_first_run_only_changes_are_read_and_nothing_changed_means_no_graph_request() {
    let slapd = Slapd::start(&directory_ldif());
    let s = scenario(1000).await;
    let ldap = source(&slapd);
    let (first, _) = sync(&s, &ldap, false).await;
    assert_eq!(first.run.status, RunStatus::Succeeded, "{:?}", first.run);
    assert_eq!(first.run.counts.created, 151, "{:?}", first.run.counts);
    assert!(
        checkpoint(&s).await.changes_cursor.is_some(),
        "a full pass leaves the cursor its changes continue from"
    );

    let read_before = ldap.entries_read();
    let (quiet, requests) = sync(&s, &ldap, false).await;
    assert_eq!(quiet.run.status, RunStatus::Succeeded, "{:?}", quiet.run);
    assert_eq!(quiet.run.message.as_deref(), Some(NOTHING_CHANGED));
    assert_eq!(requests, 0, "nothing changed: no Graph request at all");
    assert_eq!(quiet.run.counts.graph_requests, 0);
    assert_eq!(
        ldap.entries_read(),
        read_before,
        "no entry read past the cursor"
    );

    // One title changed: one entry read, one Graph write.
    let everyone = people();
    slapd.modify(&format!(
        "dn: {}\nchangetype: modify\nreplace: title\ntitle: Lead Analyst\n",
        everyone[29].dn()
    ));
    let read_before = ldap.entries_read();
    let (one, _) = sync(&s, &ldap, false).await;
    assert_eq!(ldap.entries_read() - read_before, 1);
    assert_eq!(one.run.counts.graph_writes, 1, "{:?}", one.run.counts);
    assert_eq!(
        s.tenant_user(&everyone[29].mail()).unwrap()["jobTitle"],
        "Lead Analyst"
    );

    let (promoted, gone, moved, leaving) =
        (&everyone[30], &everyone[31], &everyone[33], &everyone[34]);
    assert_eq!(moved.department, "Product Testing");
    slapd.modify(&format!(
        "dn: {}\nchangetype: modify\nreplace: title\ntitle: Senior Analyst\n\n{}\
         dn: {}\nchangetype: modify\nadd: employeeType\nemployeeType: Inactive\n\n\
         dn: cn=Product Testing,{GROUPS}\nchangetype: modify\ndelete: member\nmember: {}\n\n\
         dn: uid=newcomer,{PEOPLE}\nchangetype: add\nobjectClass: inetOrgPerson\nuid: newcomer\n\
         cn: New Comer\nsn: Comer\nmail: newcomer@example.com\ntitle: Intern\n",
        promoted.dn(),
        delete(gone),
        leaving.dn(),
        moved.dn(),
    ));
    let (changed, _) = sync(&s, &ldap, false).await;
    assert_eq!(
        changed.run.status,
        RunStatus::Succeeded,
        "{:?}",
        changed.run
    );
    assert!(
        changed.run.message.as_deref().is_some_and(
            |m| m.starts_with("changes since the last run: 3 users and 1 groups changed")
        ),
        "the title change, the disabled person and the newcomer; the group: {:?}",
        changed.run.message
    );
    let counts = changed.run.counts;
    assert_eq!((counts.created, counts.updated), (1, 1), "{counts:?}");
    assert_eq!(
        s.tenant_user(&promoted.mail()).unwrap()["jobTitle"],
        "Senior Analyst"
    );
    assert!(s.tenant_user("newcomer@example.com").is_some());
    assert!(!enabled(&s, gone), "a deleted entry is deprovisioned");
    assert!(
        !enabled(&s, leaving),
        "an entry marked disabled through the configured attribute is disabled"
    );
    assert!(
        !s.member_upns("Product Testing").contains(&moved.mail()),
        "a member removed from the group entry leaves the tenant group"
    );
    assert!(
        enabled(&s, moved),
        "leaving a group is not leaving the scope"
    );

    let (quiet, requests) = sync(&s, &ldap, false).await;
    assert_eq!(quiet.run.message.as_deref(), Some(NOTHING_CHANGED));
    assert_eq!(requests, 0);
}

#[tokio::test]
async fn deletes_the_breaker_holds_are_not_skipped_by_the_cursor() {
    let slapd = Slapd::start(&directory_ldif());
    let s = scenario(2).await;
    let ldap = source(&slapd);
    let (first, _) = sync(&s, &ldap, true).await;
    assert_eq!(first.run.status, RunStatus::Succeeded, "{:?}", first.run);

    let everyone = people();
    let gone = &everyone[40..43];
    slapd.modify(&gone.iter().map(delete).collect::<String>());
    for attempt in 0..2 {
        let (held, _) = sync(&s, &ldap, false).await;
        assert_eq!(
            held.run.status,
            RunStatus::BreakerTripped,
            "attempt {attempt}: {:?}",
            held.run
        );
        assert!(
            gone.iter().all(|p| enabled(&s, p)),
            "three deletes are over the breaker's two"
        );
    }
    let (overridden, _) = sync(&s, &ldap, true).await;
    assert_eq!(
        overridden.run.status,
        RunStatus::Succeeded,
        "{:?}",
        overridden.run
    );
    assert!(
        gone.iter().all(|p| !enabled(&s, p)),
        "the override carries the held deletes out"
    );
    let (quiet, _) = sync(&s, &ldap, false).await;
    assert_eq!(quiet.run.message.as_deref(), Some(NOTHING_CHANGED));
}

#[tokio::test]
async fn a_directory_that_forgot_its_deletions_or_refuses_the_cookie_gets_a_full_pass() {
    let mut slapd = Slapd::start(&directory_ldif());
    let s = scenario(1000).await;
    let ldap = source(&slapd);
    sync(&s, &ldap, false).await;
    let everyone = people();

    // The session log lives in memory: after a restart slapd lists what is present instead of
    // naming what was deleted. The full pass's sweep finds the deletion.
    slapd.modify(&delete(&everyone[50]));
    slapd.restart();
    let (fallback, _) = sync(&s, &ldap, false).await;
    assert_eq!(
        fallback.run.status,
        RunStatus::Succeeded,
        "{:?}",
        fallback.run
    );
    assert_eq!(
        fallback.run.message, None,
        "a full pass: {:?}",
        fallback.run
    );
    assert!(!enabled(&s, &everyone[50]));
    let (quiet, _) = sync(&s, &ldap, false).await;
    assert_eq!(
        quiet.run.message.as_deref(),
        Some(NOTHING_CHANGED),
        "the full pass left a fresh cursor"
    );

    // A cookie newer than the directory's own state (it was restored from a backup): slapd
    // refuses it. A full pass again, never an error loop.
    let mut stale = checkpoint(&s).await;
    let mut cursor = stale.changes_cursor.clone().unwrap().0;
    for cookie in cursor["sync"].as_object_mut().unwrap().values_mut() {
        // rid=000,csn=20991231000000.000000Z#000000#000#000000
        *cookie = serde_json::json!(
            "cmlkPTAwMCxjc249MjA5OTEyMzEwMDAwMDAuMDAwMDAwWiMwMDAwMDAjMDAwIzAwMDAwMA=="
        );
    }
    stale.changes_cursor = Some(SourceCursor(cursor));
    put_checkpoint(&s, &stale).await;
    slapd.modify(&delete(&everyone[51]));
    let (refused, _) = sync(&s, &ldap, false).await;
    assert_eq!(
        refused.run.status,
        RunStatus::Succeeded,
        "{:?}",
        refused.run
    );
    assert!(!enabled(&s, &everyone[51]));
    let (quiet, requests) = sync(&s, &ldap, false).await;
    assert_eq!(quiet.run.message.as_deref(), Some(NOTHING_CHANGED));
    assert_eq!(requests, 0);
}

#[tokio::test]
async fn without_content_synchronization_a_modify_timestamp_mark_reads_the_changes_and_full_passes_the_deletions()
 {
    let slapd = Slapd::start(&directory_ldif());
    let s = scenario(1000).await;
    let ldap = source(&slapd);
    let (first, _) = sync(&s, &ldap, false).await;
    assert_eq!(first.run.status, RunStatus::Succeeded, "{:?}", first.run);
    assert!(
        checkpoint(&s)
            .await
            .changes_cursor
            .unwrap()
            .0
            .get("sync")
            .is_some()
    );

    // The server stops offering content synchronization: the cookie cannot be used, a full
    // pass reads the directory and leaves a modifyTimestamp mark instead.
    slapd.disable_content_sync();
    let (full, _) = sync(&s, &ldap, false).await;
    assert_eq!(full.run.status, RunStatus::Succeeded, "{:?}", full.run);
    assert_eq!(full.run.message, None, "a full pass: {:?}", full.run);
    let cursor = checkpoint(&s).await.changes_cursor.expect("a mark");
    assert!(cursor.0.get("stamp").is_some(), "{cursor:?}");
    let read_before = ldap.entries_read();
    let (quiet, requests) = sync(&s, &ldap, false).await;
    assert_eq!(quiet.run.message.as_deref(), Some(NOTHING_CHANGED));
    assert_eq!(requests, 0, "nothing changed: no Graph request at all");
    assert_eq!(ldap.entries_read(), read_before, "no entry read");

    // Stamps count seconds: the changes come in a second after the directory's last one.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let everyone = people();
    slapd.modify(&format!(
        "dn: {}\nchangetype: modify\nreplace: title\ntitle: Night Auditor\n",
        everyone[31].dn(),
    ));
    let read_before = ldap.entries_read();
    let (changed, _) = sync(&s, &ldap, false).await;
    assert_eq!(
        changed.run.status,
        RunStatus::Succeeded,
        "{:?}",
        changed.run
    );
    assert_eq!(
        ldap.entries_read() - read_before,
        1,
        "the changed entry only: {:?}",
        changed.run.message
    );
    assert_eq!(
        changed.run.counts.graph_writes, 1,
        "{:?}",
        changed.run.counts
    );
    assert_eq!(
        s.tenant_user(&everyone[31].mail()).unwrap()["jobTitle"],
        "Night Auditor"
    );
    let (quiet, requests) = sync(&s, &ldap, false).await;
    assert_eq!(quiet.run.message.as_deref(), Some(NOTHING_CHANGED));
    assert_eq!(requests, 0);

    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    slapd.modify(&delete(&everyone[32]));
    let (deleted, _) = sync(&s, &ldap, false).await;
    assert_eq!(
        deleted.run.status,
        RunStatus::Succeeded,
        "{:?}",
        deleted.run
    );
    assert!(
        enabled(&s, &everyone[32]),
        "a stamp cannot name a deletion: it waits for the next full pass"
    );

    // The periodic full pass (here asked for) finds the deletion.
    let full = s.sync_from_with(&ldap, false, true).await.unwrap();
    assert_eq!(full.run.status, RunStatus::Succeeded, "{:?}", full.run);
    assert!(!enabled(&s, &everyone[32]));
}

/// Stores a checkpoint under a lease of its own.
async fn put_checkpoint(s: &Scenario, checkpoint: &Checkpoint) {
    let holder = m365_core::conformance::holder("test");
    let now = m365_core::Clock::now(&s.clock);
    let LeaseGrant::Acquired(lease) = s
        .state
        .acquire_lease(&s.connection, &holder, now, 60_000)
        .await
        .unwrap()
    else {
        panic!("the connection is free between runs");
    };
    s.state
        .put_checkpoint(&s.connection, checkpoint, &lease)
        .await
        .unwrap();
    s.state.release_lease(&lease).await.unwrap();
}
