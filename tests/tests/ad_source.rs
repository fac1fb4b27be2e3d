//! The LDAP source in `directory = "active-directory"` mode against a real Active Directory
//! domain controller (Samba, one per test binary: `tests/src/samba.rs`) and the sandbox tenant:
//! objectGUID ids, userAccountControl's disabled flag, groups, a group of more than 1500 members
//! (range retrieval), a renamed user, a wrong password, incremental runs through uSNChanged, and
//! accounts and groups managed with samba-tool. Each test works in an OU of its own.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a broken expectation should fail loudly"
)]

use m365_core::config::ldap_source::LdapSourceConfig;
use m365_core::{ConnectionSecrets, ObjectKind, RunStatus, Source, StateStore};
use m365_integration_tests::samba::{ADMIN_PASSWORD, BASE_DN, SambaDc, user_ldif};
use m365_integration_tests::scenario::Scenario;
use m365_sandbox::{SandboxConfig, demo};
use m365_source_ldap::LdapSource;
use m365_source_ldap::connect::{Credentials, Session};
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

fn config(dc: &SambaDc, ou: &str) -> LdapSourceConfig {
    let table: toml::Table = toml::from_str(&dc.source_toml(ou, "")).unwrap();
    let mut section = table["source"].as_table().unwrap().clone();
    section.remove("type");
    section.try_into().unwrap()
}

fn source(dc: &SambaDc, ou: &str, password: &str) -> LdapSource {
    LdapSource::new(config(dc, ou), &secrets(password), mapped()).unwrap()
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

/// A GUID in its string form: 8-4-4-4-12 lower-case hex digits.
fn is_guid(text: &str) -> bool {
    let groups: Vec<&str> = text.split('-').collect();
    groups.iter().map(|g| g.len()).eq([8, 4, 4, 4, 12])
        && text
            .chars()
            .all(|c| c == '-' || c.is_ascii_digit() || ('a'..='f').contains(&c))
}

#[tokio::test]
async fn a_first_load_provisions_users_by_object_guid_disabled_ones_disabled_and_groups() {
    let dc = SambaDc::shared();
    let ou = dc.new_ou("FirstLoad");
    let head = format!("CN=Alma Head,{ou}");
    dc.apply(&format!(
        "{}{}{}dn: CN=FL Staff,{ou}\nobjectClass: group\ndescription: staff\n\
         member: {head}\nmember: CN=Bo Staff,{ou}\nmember: CN=Cy Gone,{ou}\n",
        user_ldif(&ou, "Alma Head", "alma.head@example.com", true, ""),
        user_ldif(
            &ou,
            "Bo Staff",
            "bo.staff@example.com",
            true,
            &format!("manager: {head}\n")
        ),
        user_ldif(&ou, "Cy Gone", "cy.gone@example.com", true, ""),
    ));
    let s = scenario().await;
    let ad = source(dc, &ou, ADMIN_PASSWORD);
    let outcome = s.sync_from(&ad).await;
    assert_eq!(
        outcome.run.status,
        RunStatus::Succeeded,
        "{:?}",
        outcome.run
    );
    assert_eq!(outcome.run.counts.created, 3, "{:?}", outcome.run.counts);
    assert_eq!(
        outcome.run.counts.groups_created, 1,
        "{:?}",
        outcome.run.counts
    );

    let alma = s.tenant_user("alma.head@example.com").unwrap();
    assert_eq!(alma["accountEnabled"], true);
    assert_eq!(alma["displayName"], "Alma Head");
    // The manager, a DN in Active Directory's own spelling, links to the head's tenant user.
    assert_eq!(
        s.tenant_user("bo.staff@example.com").unwrap()["manager"].as_str(),
        Some(tenant_id(&s, "alma.head@example.com").as_str())
    );
    assert_eq!(
        s.member_upns("FL Staff"),
        vec![
            "alma.head@example.com",
            "bo.staff@example.com",
            "cy.gone@example.com"
        ]
    );

    // The ids are objectGUIDs in their string form: the link, and a single-user read.
    let alma_id = dc.object_guid(&head);
    assert!(is_guid(&alma_id), "{alma_id}");
    assert!(s.link(ObjectKind::User, &alma_id).await.is_some());
    let group_id = dc.object_guid(&format!("CN=FL Staff,{ou}"));
    assert!(s.link(ObjectKind::Group, &group_id).await.is_some());
    let read = ad.fetch_user(&alma_id).await.unwrap().expect("found by id");
    assert_eq!(read.id, alma_id);
    assert!(read.enabled);

    // userAccountControl 514 (NORMAL_ACCOUNT and ACCOUNTDISABLE): disabled in the tenant.
    let cy = format!("CN=Cy Gone,{ou}");
    dc.apply(&format!(
        "dn: {cy}\nchangetype: modify\nreplace: userAccountControl\nuserAccountControl: 514\n"
    ));
    let disabled = s.sync_from(&ad).await;
    assert_eq!(disabled.run.counts.disabled, 1, "{:?}", disabled.run.counts);
    assert_eq!(
        s.tenant_user("cy.gone@example.com").unwrap()["accountEnabled"],
        false
    );
    let read = ad
        .fetch_user(&dc.object_guid(&cy))
        .await
        .unwrap()
        .expect("found by id");
    assert!(!read.enabled);

    let again = s.sync_from(&ad).await;
    assert_eq!(again.run.counts.graph_writes, 0, "{:?}", again.run.counts);
    assert_eq!(again.run.counts.planned, 0, "{:?}", again.run.counts);
}

/// 1600 users and one group of all of them (Active Directory hands out 1500 values at once).
const MANY: usize = 1600;

#[tokio::test]
async fn a_group_of_more_than_1500_members_is_read_whole_through_range_retrieval() {
    let dc = SambaDc::shared();
    let ou = dc.new_ou("Ranged");
    let group_dn = format!("CN=Everyone,{ou}");
    let mut ldif = String::new();
    let mut group = format!("dn: {group_dn}\nobjectClass: group\n");
    for i in 0..MANY {
        let cn = format!("Member {i:04}");
        ldif.push_str(&user_ldif(
            &ou,
            &cn,
            &format!("member{i:04}@example.com"),
            true,
            "",
        ));
        group.push_str(&format!("member: CN={cn},{ou}\n"));
    }
    ldif.push_str(&group);
    dc.apply(&ldif);

    // The server answers the group search's first window as Active Directory does...
    let config = config(dc, &ou);
    let credentials = Credentials {
        bind_dn: config.bind_dn.clone(),
        password: Some(SecretString::from(ADMIN_PASSWORD)),
    };
    let mut session = Session::open(&config, &credentials).await.unwrap();
    let first = session
        .read(
            &group_dn,
            &[m365_source_ldap::read::AD_FIRST_MEMBERS.to_owned()],
        )
        .await
        .unwrap()
        .expect("the group");
    let names: Vec<&String> = first.attrs.keys().collect();
    assert_eq!(names, ["member;range=0-1499"], "a window of 1500 values");
    assert_eq!(first.attrs["member;range=0-1499"].len(), 1500);
    // ...and the rest is read window by window, from a window of any size.
    let mut small = session
        .read(&group_dn, &["member;range=0-99".to_owned()])
        .await
        .unwrap()
        .expect("the group");
    m365_source_ldap::read::complete_ranges(&mut session, &mut small)
        .await
        .unwrap();
    session.close().await;
    let members = &small.attrs["member"];
    assert_eq!(members.len(), MANY);
    let distinct: std::collections::BTreeSet<String> =
        members.iter().map(|dn| dn.to_ascii_lowercase()).collect();
    assert_eq!(distinct.len(), MANY, "no member twice");

    // The source reads the whole group, in a snapshot and alone.
    let ad = source(dc, &ou, ADMIN_PASSWORD);
    let page = ad.snapshot_page(None, 10 * MANY).await.unwrap();
    assert_eq!(page.users.len(), MANY);
    assert!(page.errors.is_empty(), "{:?}", page.errors);
    let [everyone] = page.groups.as_slice() else {
        panic!("one group: {:?}", page.groups.len());
    };
    assert_eq!(everyone.name, "Everyone");
    let mut ids: Vec<&String> = page.users.iter().map(|u| &u.id).collect();
    let mut member_ids: Vec<&String> = everyone.members.iter().collect();
    ids.sort();
    member_ids.sort();
    assert_eq!(member_ids, ids, "every user is a member, once");
    let alone = ad
        .fetch_group(&everyone.id)
        .await
        .unwrap()
        .expect("found by id");
    assert_eq!(alone.members.len(), MANY);
}

#[tokio::test]
async fn a_renamed_user_keeps_its_tenant_user_and_its_groups() {
    let dc = SambaDc::shared();
    let ou = dc.new_ou("Renamed");
    dc.apply(&format!(
        "{}{}dn: CN=RN Team,{ou}\nobjectClass: group\nmember: CN=Dee Old,{ou}\n\
         member: CN=Eve Stays,{ou}\n",
        user_ldif(&ou, "Dee Old", "dee@example.com", true, ""),
        user_ldif(&ou, "Eve Stays", "eve@example.com", true, ""),
    ));
    let s = scenario().await;
    let ad = source(dc, &ou, ADMIN_PASSWORD);
    let first = s.sync_from(&ad).await;
    assert_eq!(first.run.status, RunStatus::Succeeded, "{:?}", first.run);
    let dee = tenant_id(&s, "dee@example.com");
    let guid = dc.object_guid(&format!("CN=Dee Old,{ou}"));

    dc.apply(&format!(
        "dn: CN=Dee Old,{ou}\nchangetype: modrdn\nnewrdn: CN=Dee New\ndeleteoldrdn: 1\n"
    ));
    assert_eq!(dc.object_guid(&format!("CN=Dee New,{ou}")), guid);
    let outcome = s.sync_from(&ad).await;
    assert_eq!(
        outcome.run.status,
        RunStatus::Succeeded,
        "{:?}",
        outcome.run
    );
    assert_eq!(outcome.run.counts.created, 0, "{:?}", outcome.run.counts);
    assert_eq!(outcome.run.counts.disabled, 0, "{:?}", outcome.run.counts);
    let renamed = s.tenant_user("dee@example.com").unwrap();
    assert_eq!(
        renamed["id"].as_str(),
        Some(dee.as_str()),
        "same tenant user"
    );
    assert_eq!(renamed["displayName"], "Dee New");
    assert_eq!(renamed["accountEnabled"], true);
    // The directory rewrote the group's member DN; the membership stays.
    assert_eq!(
        s.member_upns("RN Team"),
        vec!["dee@example.com", "eve@example.com"]
    );
}

#[tokio::test]
async fn a_wrong_password_fails_the_run_naming_the_fix_and_writes_nothing() {
    let dc = SambaDc::shared();
    let ou = dc.new_ou("WrongPassword");
    dc.apply(&user_ldif(&ou, "Flo Locked", "flo@example.com", true, ""));
    let s = scenario().await;
    let writes = s.tenant_writes();
    let wrong = source(dc, &ou, "not-the-password");
    let error = s
        .try_sync_from(&wrong)
        .await
        .expect_err("a refused bind fails the run");
    assert!(
        error.contains("invalid credentials") && error.contains("ldap_bind_password"),
        "{error}"
    );
    assert!(!error.contains("not-the-password"), "no password in errors");
    assert_eq!(s.tenant_writes(), writes);
    assert!(s.tenant_user("flo@example.com").is_none());
}

/// The message of a changes pass that found nothing.
const NOTHING_CHANGED: &str = "no source changes since the last run";

#[tokio::test]
async fn after_the_first_load_runs_read_only_what_changed_through_usn_changed() {
    let dc = SambaDc::shared();
    let ou = dc.new_ou("Changes");
    let elsewhere = dc.new_ou("ChangesElsewhere");
    let team = format!("CN=CH Team,{ou}");
    dc.apply(&format!(
        "{}{}{}{}dn: {team}\nobjectClass: group\nmember: CN=Gil Old,{ou}\n\
         member: CN=Hal Gone,{ou}\nmember: CN=Ida Moves,{ou}\n",
        user_ldif(&ou, "Gil Old", "gil@example.com", true, ""),
        user_ldif(&ou, "Hal Gone", "hal@example.com", true, ""),
        user_ldif(&ou, "Ida Moves", "ida@example.com", true, ""),
        user_ldif(&ou, "Jo Stays", "jo@example.com", true, ""),
    ));
    let s = scenario().await;
    let ad = source(dc, &ou, ADMIN_PASSWORD);
    let first = s.sync_from(&ad).await;
    assert_eq!(first.run.status, RunStatus::Succeeded, "{:?}", first.run);
    assert_eq!(first.run.counts.created, 4, "{:?}", first.run.counts);
    let cursor = s
        .state
        .get_checkpoint(&s.connection)
        .await
        .unwrap()
        .and_then(|c| c.changes_cursor)
        .expect("a changes cursor after the first load");
    let mark = m365_source_ldap::usn::Watermark::decode(&cursor).unwrap();
    assert!(mark.server.starts_with("CN=NTDS Settings,"), "{mark:?}");
    assert!(is_guid(&mark.invocation), "{mark:?}");

    // Other tests of this binary change the directory meanwhile: their entries are not this
    // connection's, so this run still finds nothing to do.
    let quiet = s.sync_from(&ad).await;
    assert_eq!(quiet.run.message.as_deref(), Some(NOTHING_CHANGED));
    assert_eq!(quiet.run.counts.graph_requests, 0, "{:?}", quiet.run.counts);

    let jo_before = s.tenant_user("jo@example.com").unwrap();
    dc.apply(&format!(
        "dn: CN=Gil Old,{ou}\nchangetype: modify\nreplace: sn\nsn: Newname\n\n\
         dn: CN=Hal Gone,{ou}\nchangetype: delete\n\n\
         dn: CN=Ida Moves,{ou}\nchangetype: modrdn\nnewrdn: CN=Ida Moves\ndeleteoldrdn: 1\n\
         newsuperior: {elsewhere}\n\n\
         {}{}\
         dn: {team}\nchangetype: modify\nadd: member\nmember: CN=Kim New,{ou}\n",
        user_ldif(&ou, "Kim New", "kim@example.com", true, ""),
        // Outside the scope: reported as a departure from the domain's changes, and dropped,
        // since this connection never linked it.
        user_ldif(&elsewhere, "Lou Outside", "lou@example.com", true, "")
    ));
    let changed = s.sync_from(&ad).await;
    assert_eq!(
        changed.run.status,
        RunStatus::Succeeded,
        "{:?}",
        changed.run
    );
    assert!(
        changed.run.message.as_deref().is_some_and(|m| m
            .starts_with("changes since the last run: 2 users and 1 groups changed, 2 users and 0 groups deleted")),
        "{:?}",
        changed.run.message
    );
    assert_eq!(changed.run.counts.created, 1, "{:?}", changed.run.counts);
    assert_eq!(changed.run.counts.updated, 1, "{:?}", changed.run.counts);
    // Deleted, and moved out of the base DN: both leave the scope (remove_action "disable").
    assert_eq!(
        changed.run.counts.deprovisioned, 2,
        "{:?}",
        changed.run.counts
    );
    assert_eq!(
        changed.run.counts.members_removed, 2,
        "{:?}",
        changed.run.counts
    );
    assert_eq!(
        s.tenant_user("gil@example.com").unwrap()["surname"],
        "Newname"
    );
    for gone in ["hal@example.com", "ida@example.com"] {
        assert_eq!(
            s.tenant_user(gone).unwrap()["accountEnabled"],
            false,
            "{gone}"
        );
    }
    assert_eq!(
        s.member_upns("CH Team"),
        vec!["gil@example.com", "kim@example.com"]
    );
    assert_eq!(s.tenant_user("jo@example.com").unwrap(), jo_before);
    assert!(s.tenant_user("lou@example.com").is_none());

    let settled = s.sync_from(&ad).await;
    assert_eq!(settled.run.message.as_deref(), Some(NOTHING_CHANGED));
    assert_eq!(settled.run.counts.graph_requests, 0);

    // A mark of the same controller restored from a backup (another invocationId) is refused:
    // the engine then reads the whole directory.
    let restored = m365_source_ldap::usn::Watermark {
        invocation: "00000000-0000-0000-0000-000000000001".to_owned(),
        ..mark
    };
    let error = ad.changes(&restored.encode(), 100).await.unwrap_err();
    assert!(
        matches!(&error, m365_core::SourceError::CursorExpired(m) if m.contains("restored from a backup")),
        "{error}"
    );
}

#[tokio::test]
async fn users_and_groups_an_administrator_manages_with_samba_tool_follow_into_the_tenant() {
    let dc = SambaDc::shared();
    let ou = dc.new_ou("Tooled");
    let relative = ou.strip_suffix(&format!(",{BASE_DN}")).unwrap();
    for (account, given) in [("tl.ana", "Ana"), ("tl.ben", "Ben"), ("tl.cat", "Cat")] {
        let mail = format!("{}.tool@example.com", given.to_lowercase());
        dc.tool(&[
            "user",
            "create",
            account,
            "Passw0rd!Tl1",
            "--userou",
            relative,
            "--given-name",
            given,
            "--surname",
            "Tool",
            "--mail-address",
            &mail,
        ]);
    }
    dc.tool(&["group", "add", "TL Crew", "--groupou", relative]);
    dc.tool(&["group", "addmembers", "TL Crew", "tl.ana,tl.ben,tl.cat"]);
    let s = scenario().await;
    let ad = source(dc, &ou, ADMIN_PASSWORD);
    let first = s.sync_from(&ad).await;
    assert_eq!(first.run.status, RunStatus::Succeeded, "{:?}", first.run);
    assert_eq!(first.run.counts.created, 3, "{:?}", first.run.counts);
    assert_eq!(first.run.counts.groups_created, 1, "{:?}", first.run.counts);
    assert_eq!(
        s.member_upns("TL Crew"),
        vec![
            "ana.tool@example.com",
            "ben.tool@example.com",
            "cat.tool@example.com"
        ]
    );
    assert_eq!(
        s.tenant_user("ana.tool@example.com").unwrap()["displayName"],
        "Ana Tool"
    );
    let quiet = s.sync_from(&ad).await;
    assert_eq!(quiet.run.message.as_deref(), Some(NOTHING_CHANGED));

    dc.tool(&["user", "disable", "tl.ben"]);
    dc.tool(&["user", "delete", "tl.cat"]);
    dc.tool(&["group", "removemembers", "TL Crew", "tl.ana"]);
    let changed = s.sync_from(&ad).await;
    assert_eq!(
        changed.run.status,
        RunStatus::Succeeded,
        "{:?}",
        changed.run
    );
    assert!(
        changed
            .run
            .message
            .as_deref()
            .is_some_and(|m| m.starts_with("changes since the last run")),
        "an incremental run: {:?}",
        changed.run.message
    );
    assert_eq!(
        s.tenant_user("ana.tool@example.com").unwrap()["accountEnabled"],
        true
    );
    assert_eq!(
        s.tenant_user("ben.tool@example.com").unwrap()["accountEnabled"],
        false
    );
    assert_eq!(
        s.tenant_user("cat.tool@example.com").unwrap()["accountEnabled"],
        false
    );
    // A disabled account stays a member; a deleted one and a removed one leave.
    assert_eq!(s.member_upns("TL Crew"), vec!["ben.tool@example.com"]);
}
