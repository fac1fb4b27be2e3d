//! The LDAP source against a real OpenLDAP server (Debian's slapd, started per test from a temp
//! dir by `tests/ldap/slapd.sh`) and the sandbox tenant: first load, managers by DN, groups
//! (nested or not), scope by group membership, a renamed entry, a deleted entry, and the errors
//! of a wrong password or base DN.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a broken expectation should fail loudly"
)]

use m365_core::config::ldap_source::LdapSourceConfig;
use m365_core::{ConnectionSecrets, ObjectKind, RunStatus, Source};
use m365_integration_tests::ldap::{
    ADMIN_PASSWORD, DEPARTMENTS, GROUPS, PEOPLE, Person, Slapd, directory_ldif, people,
};
use m365_integration_tests::scenario::Scenario;
use m365_sandbox::{SandboxConfig, demo};
use m365_source_ldap::LdapSource;
use secrecy::SecretString;

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
max_count = 1000
max_percent = 100.0

[rule.groups]
enabled = true
kind = "security"

[rule.manager]
reference = "dn"

[rule.mapping.attributes]
userPrincipalName = "{{ mail | lower }}"
displayName = { attribute = "cn" }
givenName = { attribute = "givenName" }
surname = { attribute = "sn" }
jobTitle = { attribute = "title" }
department = { attribute = "departmentNumber" }

[rule.mapping.password]
source = "generate"

[rule.mapping]
manager = { attribute = "manager" }
"#;

fn secrets(password: &str) -> ConnectionSecrets {
    ConnectionSecrets {
        additional_apps: Vec::new(),
        tenant: demo::TENANT_ID.to_owned(),
        client_id: demo::CLIENT_ID.to_owned(),
        credential: m365_core::AppCredential::Secret(SecretString::from(demo::CLIENT_SECRET)),
        extra: [(
            "ldap_bind_password".to_owned(),
            SecretString::from(password),
        )]
        .into_iter()
        .collect(),
    }
}

fn source(slapd: &Slapd, extra: &str, password: &str) -> LdapSource {
    let text = slapd.source_toml(extra);
    let table: toml::Table = toml::from_str(&text).unwrap();
    let mut section = table["source"].as_table().unwrap().clone();
    section.remove("type");
    let config: LdapSourceConfig = section.try_into().unwrap();
    LdapSource::new(config, &secrets(password), mapped()).unwrap()
}

/// The user attributes [`RULE`] reads.
fn mapped() -> Option<std::collections::BTreeSet<String>> {
    let text = format!(
        "[connection]\nname = \"t\"\n[source]\ntype = \"file\"\nlocation = \"x.json\"\n{RULE}"
    );
    let config = m365_core::config::Config::from_toml(&text, "t.toml").unwrap();
    config.rule.user_source_attributes()
}

async fn scenario() -> Scenario {
    Scenario::with_rule_text(SandboxConfig::demo(), RULE).await
}

fn tenant_id(s: &Scenario, upn: &str) -> String {
    s.tenant_user(upn).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

fn mails(people: &[&Person]) -> Vec<String> {
    let mut mails: Vec<String> = people.iter().map(|p| p.mail()).collect();
    mails.sort();
    mails
}

#[tokio::test]
async fn a_first_load_provisions_everyone_with_managers_by_dn_and_groups_then_nothing_changes() {
    let slapd = Slapd::start(&directory_ldif());
    let s = scenario().await;
    let ldap = source(&slapd, "", ADMIN_PASSWORD);
    let outcome = s.sync_from(&ldap).await;
    assert_eq!(
        outcome.run.status,
        RunStatus::Succeeded,
        "{:?}",
        outcome.run
    );
    let counts = outcome.run.counts;
    // bjensen is already in the demo tenant: linked, not duplicated.
    assert_eq!(counts.linked, 1, "{counts:?}");
    assert_eq!(counts.created, 151, "{counts:?}");
    // The demo tenant has an Accounting group: matched by name; the other three are created.
    assert_eq!(counts.groups_matched, 1, "{counts:?}");
    assert_eq!(counts.groups_created, 3, "{counts:?}");
    assert_eq!(counts.managers, 147, "everyone but the five heads");

    let everyone = people();
    // Managers by DN, whether the entry wrote the DN with spaces or not.
    for (i, person) in everyone.iter().enumerate().skip(DEPARTMENTS.len()).take(10) {
        let head = &everyone[i % DEPARTMENTS.len()];
        let user = s.tenant_user(&person.mail()).unwrap();
        assert_eq!(
            user["manager"].as_str(),
            Some(tenant_id(&s, &head.mail()).as_str()),
            "{} reports to {}",
            person.uid,
            head.uid
        );
        assert_eq!(user["department"], person.department);
    }
    let renee = s.tenant_user("rmuller@example.com").unwrap();
    assert_eq!(renee["displayName"], "Renée Müller");

    // Groups: members resolved from DNs; the nested group counts direct people only.
    let accounting: Vec<&Person> = everyone
        .iter()
        .filter(|p| p.department == "Accounting")
        .collect();
    assert_eq!(s.member_upns("Accounting"), mails(&accounting));
    assert_eq!(
        s.member_upns("Leadership"),
        vec![everyone[5].mail()],
        "nested groups are off: only the direct member"
    );

    // The ids are entryUUIDs: a link per person.
    let bjensen = s.link(ObjectKind::User, &ldap_id(&slapd, "bjensen")).await;
    assert!(bjensen.is_some(), "bjensen linked by entryUUID");

    // Only what the rule reads is asked of the directory (and what the source needs itself).
    let read = ldap
        .fetch_user(&ldap_id(&slapd, "bjensen"))
        .await
        .unwrap()
        .unwrap();
    let names: Vec<&str> = read.attributes.keys().map(String::as_str).collect();
    assert!(
        names.contains(&"title") && names.contains(&"mail"),
        "{names:?}"
    );
    assert!(
        !names.contains(&"l"),
        "l is not mapped, so not read: {names:?}"
    );

    let again = s.sync_from(&ldap).await;
    assert_eq!(again.run.counts.graph_writes, 0, "{:?}", again.run.counts);
    assert_eq!(again.run.counts.planned, 0, "{:?}", again.run.counts);
}

/// The entryUUID of the person `uid`.
fn ldap_id(slapd: &Slapd, uid: &str) -> String {
    entry_uuid(slapd, PEOPLE, &format!("(uid={uid})"))
}

/// The entryUUID of the group `cn`.
fn ldap_group_id(slapd: &Slapd, cn: &str) -> String {
    entry_uuid(slapd, GROUPS, &format!("(cn={cn})"))
}

/// The entryUUID of the one entry under `base` that `filter` matches, read with ldapsearch.
fn entry_uuid(slapd: &Slapd, base: &str, filter: &str) -> String {
    let output = std::process::Command::new("ldapsearch")
        .args([
            "-x",
            "-LLL",
            "-H",
            &slapd.url,
            "-b",
            base,
            filter,
            "entryUUID",
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout);
    text.lines()
        .find_map(|l| l.strip_prefix("entryUUID: "))
        .unwrap_or_else(|| panic!("no entryUUID for {filter}: {text}"))
        .to_ascii_lowercase()
}

#[tokio::test]
async fn a_renamed_entry_keeps_its_tenant_user_and_a_deleted_one_is_disabled() {
    let slapd = Slapd::start(&directory_ldif());
    let s = scenario().await;
    let ldap = source(&slapd, "", ADMIN_PASSWORD);
    s.sync_from(&ldap).await;
    let everyone = people();
    let renamed = &everyone[20];
    let gone = &everyone[21];
    let object_id = tenant_id(&s, &renamed.mail());

    slapd.modify(&format!(
        "dn: {}\nchangetype: modrdn\nnewrdn: uid={}-new\ndeleteoldrdn: 1\n\n\
         dn: uid={}-new,{PEOPLE}\nchangetype: modify\nreplace: mail\nmail: {}-new@example.com\n\n\
         dn: {}\nchangetype: delete\n",
        renamed.dn(),
        renamed.uid,
        renamed.uid,
        renamed.uid,
        gone.dn()
    ));
    let outcome = s.sync_from(&ldap).await;
    assert_eq!(
        outcome.run.status,
        RunStatus::Succeeded,
        "{:?}",
        outcome.run
    );
    assert_eq!(outcome.run.counts.created, 0, "{:?}", outcome.run.counts);
    let moved = s
        .tenant_user(&format!("{}-new@example.com", renamed.uid))
        .expect("the renamed person under the new UPN");
    assert_eq!(
        moved["id"].as_str(),
        Some(object_id.as_str()),
        "same tenant user"
    );
    assert!(s.tenant_user(&renamed.mail()).is_none());
    assert_eq!(
        s.tenant_user(&gone.mail()).unwrap()["accountEnabled"],
        false,
        "a deleted entry is deprovisioned (disabled)"
    );
}

#[tokio::test]
async fn scope_by_group_membership_with_nested_groups_flattened() {
    let slapd = Slapd::start(&directory_ldif());
    let s = scenario().await;
    let ldap = source(
        &slapd,
        &format!("member_of_groups = [\"cn=Leadership,{GROUPS}\"]\nnested_groups = true"),
        ADMIN_PASSWORD,
    );
    let outcome = s.sync_from(&ldap).await;
    assert_eq!(
        outcome.run.status,
        RunStatus::Succeeded,
        "{:?}",
        outcome.run
    );
    let everyone = people();
    let leaders: Vec<&Person> = everyone[..=5].iter().collect();
    assert_eq!(s.member_upns("Leadership"), mails(&leaders));
    // Five heads and one more: bjensen linked, five created; nobody else.
    assert_eq!(outcome.run.counts.linked, 1, "{:?}", outcome.run.counts);
    assert_eq!(outcome.run.counts.created, 5, "{:?}", outcome.run.counts);
    assert!(s.tenant_user(&everyone[6].mail()).is_none());
    // One user fetched alone (a webhook's focused read) answers by scope too.
    let outside = ldap.fetch_user(&ldap_id(&slapd, &everyone[6].uid)).await;
    assert!(outside.unwrap().is_none(), "out of scope");
    let inside = ldap
        .fetch_user(&ldap_id(&slapd, &everyone[5].uid))
        .await
        .unwrap()
        .expect("in scope");
    assert_eq!(
        inside.attributes["mail"],
        m365_core::AttrValue::Text(everyone[5].mail())
    );
}

#[tokio::test]
async fn a_wrong_password_or_base_dn_fails_the_run_naming_the_fix_and_writes_nothing() {
    let slapd = Slapd::start(&directory_ldif());
    let s = scenario().await;
    let writes = s.tenant_writes();

    let wrong = source(&slapd, "", "not-the-password");
    let error = s
        .try_sync_from(&wrong)
        .await
        .expect_err("a refused bind fails the run");
    assert!(
        error.contains("invalid credentials") && error.contains("ldap_bind_password"),
        "{error}"
    );
    assert!(!error.contains("not-the-password"), "no password in errors");

    let mut config: LdapSourceConfig = toml::from_str(&format!(
        "url = \"{}\"\nbind_dn = \"cn=admin,dc=example,dc=com\"\nuser_base_dns = [\"ou=Peeple,dc=example,dc=com\"]",
        slapd.url
    ))
    .unwrap();
    config.page_size = 50;
    let typo = LdapSource::new(config, &secrets(ADMIN_PASSWORD), mapped()).unwrap();
    let error = s
        .try_sync_from(&typo)
        .await
        .expect_err("a missing base DN fails the run");
    assert!(
        error.contains("user_base_dns") && error.contains("ou=Peeple"),
        "{error}"
    );
    assert_eq!(s.tenant_writes(), writes);
}

/// `examples/ldap/directory.ldif` (the LDAP quick start's directory) is the one the tests use.
/// `UPDATE_EXAMPLES=1 cargo test -p m365-integration-tests --test ldap_source` writes it again.
#[test]
fn the_quick_start_directory_is_the_test_directory() {
    let path = m365_integration_tests::cloud::repo_root().join("examples/ldap/directory.ldif");
    let generated = directory_ldif();
    if std::env::var_os("UPDATE_EXAMPLES").is_some() {
        std::fs::write(&path, &generated).unwrap();
    }
    let stored = std::fs::read_to_string(&path).unwrap();
    assert!(
        stored == generated,
        "examples/ldap/directory.ldif differs from tests/src/ldap.rs: run with UPDATE_EXAMPLES=1"
    );
}

#[tokio::test]
async fn a_person_marked_disabled_in_the_directory_is_disabled_in_the_tenant() {
    let slapd = Slapd::start(&directory_ldif());
    let s = scenario().await;
    let ldap = source(
        &slapd,
        "disabled_attribute = \"employeeType\"\ndisabled_values = [\"inactive\"]",
        ADMIN_PASSWORD,
    );
    s.sync_from(&ldap).await;
    let person = &people()[30];
    assert_eq!(
        s.tenant_user(&person.mail()).unwrap()["accountEnabled"],
        true
    );
    slapd.modify(&format!(
        "dn: {}\nchangetype: modify\nadd: employeeType\nemployeeType: Inactive\n",
        person.dn()
    ));
    let outcome = s.sync_from(&ldap).await;
    assert_eq!(outcome.run.counts.disabled, 1, "{:?}", outcome.run.counts);
    assert_eq!(
        s.tenant_user(&person.mail()).unwrap()["accountEnabled"],
        false
    );
    // The group read alone (a webhook's focused read) resolves its members too.
    let accounting = ldap_group_id(&slapd, "Accounting");
    let group = ldap.fetch_group(&accounting).await.unwrap().expect("found");
    assert_eq!(group.name, "Accounting");
    assert_eq!(group.members.len(), 31, "{group:?}");
}
