//! `GraphDirectory` (the Graph client behind the engine's `Directory` port) against the sandbox
//! tenant: every operation's success and main failures, batching counted on the sandbox's side,
//! results in op order, minimal membership writes, throttled batch items applied exactly once,
//! and counters that agree with the sandbox.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "integration tests fail loudly"
)]

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use m365_core::{
    Directory, DirectoryOp, DirectoryResult, FailureKind, GroupKind, LicenseAssignment, OpOutcome,
};
use m365_graph::{GraphDirectory, GraphSettings, RetryPolicy};
use m365_integration_tests::graph_client::*;
use m365_sandbox::{FaultRule, FaultStatus, LoggedRequest, RunningSandbox, Stats, demo};
use secrecy::SecretString;
use serde_json::{Value, json};

fn directory(sb: &RunningSandbox) -> GraphDirectory {
    GraphDirectory::new(client(sb))
}

/// Test settings with short replication retries (for ops that reference missing objects).
fn quick_settings(sb: &RunningSandbox) -> GraphSettings {
    GraphSettings {
        replication_retry: RetryPolicy::fast(3, Duration::from_millis(10)),
        ..settings(sb)
    }
}

fn props(pairs: &[(&str, Value)]) -> BTreeMap<String, Value> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect()
}

fn create_op(alias: &str) -> DirectoryOp {
    create_op_with(alias, &[])
}

fn create_op_with(alias: &str, extra: &[(&str, Value)]) -> DirectoryOp {
    let mut p = props(&[
        ("accountEnabled", json!(true)),
        ("displayName", json!(format!("Dir {alias}"))),
        ("mailNickname", json!(alias)),
        (
            "userPrincipalName",
            json!(format!("{alias}@{}", demo::VERIFIED_DOMAIN)),
        ),
        ("usageLocation", json!("US")),
    ]);
    for (k, v) in extra {
        p.insert(k.to_string(), v.clone());
    }
    DirectoryOp::CreateUser {
        properties: p,
        password: SecretString::from(PASSWORD.to_string()),
        force_change_password: true,
    }
}

fn update_op(id: &str, job: &str) -> DirectoryOp {
    DirectoryOp::UpdateUser {
        id: id.into(),
        properties: props(&[("jobTitle", json!(job))]),
    }
}

fn license_op(id: &str, sku: &str) -> DirectoryOp {
    DirectoryOp::AssignLicenses {
        id: id.into(),
        add: vec![LicenseAssignment {
            sku_id: sku.into(),
            disabled_plans: vec![],
        }],
        remove: vec![],
    }
}

/// Seeds a user straight into the tenant (no request); returns its id.
fn seed_user(sb: &RunningSandbox, alias: &str) -> String {
    sb.sandbox().seed_user(json!({
        "accountEnabled": true,
        "displayName": format!("Seed {alias}"),
        "mailNickname": alias,
        "userPrincipalName": format!("{alias}@{}", demo::VERIFIED_DOMAIN),
        "usageLocation": "US",
        "jobTitle": format!("Job {alias}"),
    }))
}

fn seed_group(sb: &RunningSandbox, name: &str, members: &[String]) -> String {
    sb.sandbox().seed_group(json!({
        "displayName": name,
        "mailNickname": name.to_lowercase().replace(' ', "-"),
        "mailEnabled": false,
        "securityEnabled": true,
        "groupTypes": [],
        "members": members,
    }))
}

fn members_of(sb: &RunningSandbox, group: &str) -> HashSet<String> {
    sb.sandbox().group_members(group).into_iter().collect()
}

fn err(r: &DirectoryResult<OpOutcome>) -> &m365_core::DirectoryError {
    match r {
        Err(e) => e,
        Ok(o) => panic!("expected a failure, got {o:?}"),
    }
}

fn created_id(r: &DirectoryResult<OpOutcome>) -> String {
    match r {
        Ok(OpOutcome::Created { id }) => id.clone(),
        other => panic!("expected Created, got {other:?}"),
    }
}

/// Requests the sandbox logged after `from` (an index into the log).
fn log_since(sb: &RunningSandbox, from: usize) -> Vec<LoggedRequest> {
    sb.sandbox().request_log().into_iter().skip(from).collect()
}

fn delta(after: &Stats, before: &Stats) -> (u64, u64, u64, u64) {
    (
        after.requests - before.requests,
        after.reads - before.reads,
        after.writes - before.writes,
        after.batches - before.batches,
    )
}

/// The directory's counters agree with what the sandbox saw (batch envelopes are transport,
/// not Graph requests: the sandbox counts them apart in `batches`).
fn assert_counters_match(dir: &GraphDirectory, sb: &RunningSandbox) {
    let c = dir.counters();
    let s = sb.sandbox().stats();
    assert_eq!(c.requests, s.requests - s.batches, "requests");
    assert_eq!(c.writes, s.writes, "writes");
    assert_eq!(c.throttled, s.throttled, "throttled");
}

// ---- reads -----------------------------------------------------------------------------------

#[tokio::test]
async fn find_users_with_40_values_sends_three_in_filters_in_one_batch() {
    let sb = start_demo().await;
    let ids: Vec<String> = (0..40)
        .map(|i| seed_user(&sb, &format!("find{i}")))
        .collect();
    let dir = directory(&sb);
    let values: Vec<String> = (0..40)
        .map(|i| format!("find{i}@{}", demo::VERIFIED_DOMAIN))
        .collect();
    let users = dir
        .find_users("userPrincipalName", &values, &["jobTitle".to_string()])
        .await
        .unwrap();
    assert_eq!(users.len(), 40);
    let found: HashSet<&str> = users.iter().map(|u| u.id.as_str()).collect();
    assert!(ids.iter().all(|id| found.contains(id.as_str())));
    let u7 = users
        .iter()
        .find(|u| u.user_principal_name == format!("find7@{}", demo::VERIFIED_DOMAIN))
        .unwrap();
    assert_eq!(u7.properties["jobTitle"], "Job find7");
    assert_eq!(u7.properties.len(), 1, "only the requested properties");

    let st = sb.sandbox().stats();
    assert_eq!(st.batches, 1, "one $batch envelope");
    assert_eq!(st.batch_items, 3, "15 + 15 + 10 values");
    assert_eq!(st.requests, 4, "envelope + 3 items, nothing else");
    let items: Vec<LoggedRequest> = sb
        .sandbox()
        .request_log()
        .into_iter()
        .filter(|r| r.batch_item)
        .collect();
    for r in &items {
        assert_eq!(r.method, "GET");
        assert!(r.path.starts_with("/v1.0/users?"), "{}", r.path);
        assert!(
            r.path.contains("$select=id,userPrincipalName,jobTitle"),
            "{}",
            r.path
        );
        assert!(r.path.contains("%20in%20("), "{}", r.path);
    }
    assert_eq!(dir.counters().requests, 3);
    assert_counters_match(&dir, &sb);
}

#[tokio::test]
async fn find_users_handles_duplicates_misses_quotes_and_no_values() {
    let sb = start_demo().await;
    let obrien = sb.sandbox().seed_user(json!({
        "accountEnabled": true, "displayName": "Pat O'Brien", "mailNickname": "obrien",
        "userPrincipalName": "o'brien@example.com", "usageLocation": "IE",
    }));
    let dir = directory(&sb);
    let values = vec![
        "o'brien@example.com".to_string(),
        "O'Brien@Example.com".to_string(),
        demo::BJENSEN_UPN.to_string(),
        "nobody@example.com".to_string(),
    ];
    let mut users = dir
        .find_users("userPrincipalName", &values, &["usageLocation".to_string()])
        .await
        .unwrap();
    users.sort_by(|a, b| a.id.cmp(&b.id));
    let ids: Vec<&str> = users.iter().map(|u| u.id.as_str()).collect();
    let mut expected = vec![obrien.as_str(), demo::BJENSEN_ID];
    expected.sort();
    assert_eq!(ids, expected);
    assert_eq!(sb.sandbox().stats().batch_items, 1, "duplicates dropped");

    // Another match attribute, and a property nobody has (null, not absent).
    let by_nick = dir
        .find_users(
            "mailNickname",
            &["bjensen".to_string()],
            &["employeeId".to_string()],
        )
        .await
        .unwrap();
    assert_eq!(by_nick.len(), 1);
    assert_eq!(by_nick[0].user_principal_name, demo::BJENSEN_UPN);
    assert_eq!(by_nick[0].properties["employeeId"], Value::Null);

    let before = sb.sandbox().stats().requests;
    assert!(dir.find_users("mail", &[], &[]).await.unwrap().is_empty());
    let e = dir
        .find_users("mail eq 'x' or 1", &["a".to_string()], &[])
        .await
        .unwrap_err();
    assert_eq!(e.kind, FailureKind::InvalidValue);
    assert_eq!(sb.sandbox().stats().requests, before, "nothing sent");
}

#[tokio::test]
async fn groups_by_name_members_on_all_pages_and_domains() {
    let sb = start_demo().await;
    let dir = directory(&sb);
    let acc = dir
        .find_groups_by_name(demo::ACCOUNTING_NAME)
        .await
        .unwrap();
    assert_eq!(acc.len(), 1);
    assert_eq!(acc[0].id, demo::ACCOUNTING_ID);
    assert!(acc[0].security_enabled);
    assert!(acc[0].group_types.is_empty());
    assert!(dir.find_groups_by_name("No such").await.unwrap().is_empty());
    let twin_a = seed_group(&sb, "Twins", &[]);
    let twin_b = sb.sandbox().seed_group(json!({
        "displayName": "Twins", "mailNickname": "twins2", "mailEnabled": true,
        "securityEnabled": false, "groupTypes": ["Unified"],
    }));
    let twins = dir.find_groups_by_name("Twins").await.unwrap();
    let ids: HashSet<&str> = twins.iter().map(|g| g.id.as_str()).collect();
    assert_eq!(ids, HashSet::from([twin_a.as_str(), twin_b.as_str()]));
    assert!(
        twins
            .iter()
            .any(|g| g.group_types == vec!["Unified".to_string()] && !g.security_enabled)
    );

    // 1,500 members: two pages of ≤ 999.
    let ids: Vec<String> = (0..1500)
        .map(|i| seed_user(&sb, &format!("m{i}")))
        .collect();
    let big = seed_group(&sb, "Big", &ids);
    let before = sb.sandbox().stats();
    let members = dir.group_members(&big).await.unwrap();
    assert_eq!(members.len(), 1500);
    assert_eq!(
        members.iter().collect::<HashSet<_>>(),
        ids.iter().collect::<HashSet<_>>()
    );
    let (requests, reads, _, _) = delta(&sb.sandbox().stats(), &before);
    assert_eq!((requests, reads), (2, 2), "two pages");
    assert_eq!(
        dir.group_members(demo::ACCOUNTING_ID).await.unwrap(),
        vec![demo::BJENSEN_ID.to_string()]
    );
    let e = dir
        .group_members("00000000-0000-0000-0000-000000000000")
        .await
        .unwrap_err();
    assert_eq!(e.kind, FailureKind::NotFound);

    let mut domains = dir.domains().await.unwrap();
    domains.sort_by(|a, b| a.name.cmp(&b.name));
    let summary: Vec<(&str, bool, bool)> = domains
        .iter()
        .map(|d| (d.name.as_str(), d.verified, d.federated))
        .collect();
    let mut expected = vec![
        (demo::INITIAL_DOMAIN, true, false),
        (demo::VERIFIED_DOMAIN, true, false),
        (demo::FEDERATED_DOMAIN, true, true),
        (demo::UNVERIFIED_DOMAIN, false, false),
    ];
    expected.sort();
    assert_eq!(summary, expected);
}

// ---- every op: success -----------------------------------------------------------------------

#[tokio::test]
async fn every_operation_succeeds_with_its_outcome() {
    let sb = start_demo().await;
    let dir = directory(&sb);
    let boss = seed_user(&sb, "boss");
    let old = seed_user(&sb, "old");
    let member = seed_user(&sb, "member");
    let doomed_group = seed_group(&sb, "Doomed", &[]);

    let out = dir
        .apply(vec![
            create_op_with("newbie", &[("department", json!("Sales"))]),
            DirectoryOp::CreateGroup {
                display_name: "Sales".into(),
                mail_nickname: "sales".into(),
                kind: GroupKind::Security,
                description: Some("Sales team".into()),
                earlier_attempt: None,
            },
            DirectoryOp::CreateGroup {
                display_name: "Team".into(),
                mail_nickname: "team".into(),
                kind: GroupKind::Microsoft365,
                description: None,
                earlier_attempt: None,
            },
            update_op(demo::BJENSEN_ID, "Controller"),
            license_op(demo::BJENSEN_ID, demo::SKU_E3),
            DirectoryOp::SetManager {
                id: demo::BJENSEN_ID.into(),
                manager_id: boss.clone(),
            },
            DirectoryOp::DeleteUser { id: old.clone() },
            DirectoryOp::DeleteGroup {
                id: doomed_group.clone(),
            },
            DirectoryOp::AddMembers {
                group_id: demo::ACCOUNTING_ID.into(),
                member_ids: vec![member.clone(), boss.clone()],
            },
            DirectoryOp::RemoveMember {
                group_id: demo::ACCOUNTING_ID.into(),
                member_id: demo::BJENSEN_ID.into(),
            },
        ])
        .await;
    let newbie = created_id(&out[0]);
    let sales = created_id(&out[1]);
    let team = created_id(&out[2]);
    for (i, r) in out.iter().enumerate().skip(3) {
        assert_eq!(r, &Ok(OpOutcome::Done), "op {i}");
    }

    let u = user_by_id(&sb, &newbie).unwrap();
    assert_eq!(u["userPrincipalName"], "newbie@example.com");
    assert_eq!(u["department"], "Sales");
    assert_eq!(u["usageLocation"], "US");
    let g = groups_named(&sb, "Sales");
    assert_eq!(g.len(), 1);
    assert_eq!(g[0]["id"], sales.as_str());
    assert_eq!(g[0]["securityEnabled"], true);
    assert_eq!(g[0]["description"], "Sales team");
    assert_eq!(
        groups_named(&sb, "Team")[0]["groupTypes"],
        json!(["Unified"])
    );
    assert_eq!(groups_named(&sb, "Team")[0]["id"], team.as_str());
    let b = user_by_id(&sb, demo::BJENSEN_ID).unwrap();
    assert_eq!(b["jobTitle"], "Controller");
    assert_eq!(b["assignedLicenses"][0]["skuId"], demo::SKU_E3);
    assert_eq!(b["manager"], boss.as_str());
    assert!(user_by_id(&sb, &old).is_none());
    assert!(groups_named(&sb, "Doomed").is_empty());
    assert_eq!(
        members_of(&sb, demo::ACCOUNTING_ID),
        HashSet::from([member.clone(), boss.clone()])
    );

    // The "already in that state" answers.
    let again = dir
        .apply(vec![
            DirectoryOp::RemoveManager {
                id: demo::BJENSEN_ID.into(),
            },
            DirectoryOp::RemoveManager {
                id: demo::BJENSEN_ID.into(),
            },
            DirectoryOp::RemoveMember {
                group_id: demo::ACCOUNTING_ID.into(),
                member_id: demo::BJENSEN_ID.into(),
            },
            DirectoryOp::AddMembers {
                group_id: demo::ACCOUNTING_ID.into(),
                member_ids: vec![member.clone()],
            },
            DirectoryOp::AddMembers {
                group_id: demo::ACCOUNTING_ID.into(),
                member_ids: vec![],
            },
            DirectoryOp::UpdateUser {
                id: demo::BJENSEN_ID.into(),
                properties: BTreeMap::new(),
            },
            DirectoryOp::DeleteUser { id: old.clone() },
        ])
        .await;
    // The two RemoveManager ops run concurrently: exactly one of them removes it.
    let mut firsts = [again[0].clone().unwrap(), again[1].clone().unwrap()];
    firsts.sort_by_key(|o| format!("{o:?}"));
    assert_eq!(firsts, [OpOutcome::AlreadyDone, OpOutcome::Done]);
    for (i, r) in again.iter().enumerate().skip(2) {
        assert_eq!(r, &Ok(OpOutcome::AlreadyDone), "op {i}");
    }
    assert!(
        user_by_id(&sb, demo::BJENSEN_ID)
            .unwrap()
            .get("manager")
            .is_none()
    );
    assert_counters_match(&dir, &sb);
}

#[tokio::test]
async fn references_to_objects_still_replicating_are_retried_not_failed() {
    let sb = start_demo().await;
    let mut knobs = sb.sandbox().knobs();
    knobs.replication_lag_ms = 300;
    sb.sandbox().set_knobs(knobs);
    let dir = directory(&sb);
    let out = dir.apply(vec![create_op("fresh")]).await;
    let fresh = created_id(&out[0]);
    let log_from = sb.sandbox().request_log().len();
    let out = dir
        .apply(vec![
            license_op(&fresh, demo::SKU_E5),
            DirectoryOp::SetManager {
                id: fresh.clone(),
                manager_id: demo::BJENSEN_ID.into(),
            },
        ])
        .await;
    assert_eq!(out, vec![Ok(OpOutcome::Done), Ok(OpOutcome::Done)]);
    let u = user_by_id(&sb, &fresh).unwrap();
    assert_eq!(u["assignedLicenses"][0]["skuId"], demo::SKU_E5);
    assert_eq!(u["manager"], demo::BJENSEN_ID);
    let log = log_since(&sb, log_from);
    let lag_404 = log
        .iter()
        .filter(|r| r.batch_item && r.status == 404)
        .count();
    assert_eq!(lag_404, 2, "both batched first attempts met the lag");
    for suffix in ["/assignLicense", "/manager/$ref"] {
        let ok = log
            .iter()
            .filter(|r| r.path.ends_with(suffix) && (200..300).contains(&r.status))
            .count();
        assert_eq!(ok, 1, "{suffix} landed once");
    }
}

// ---- every op: main failures -----------------------------------------------------------------

#[tokio::test]
async fn failures_map_to_kinds_with_property_and_a_message_naming_the_request() {
    let sb = start_demo().await;
    let dir = GraphDirectory::new(client_with(quick_settings(&sb), demo_credentials()));
    let nowhere = sb.sandbox().seed_user(json!({
        "accountEnabled": true, "displayName": "No Location", "mailNickname": "noloc",
        "userPrincipalName": "noloc@example.com",
    }));
    let missing = "00000000-0000-0000-0000-0000000000aa".to_string();
    let mut no_display = create_op("nodisplay");
    if let DirectoryOp::CreateUser { properties, .. } = &mut no_display {
        properties.remove("displayName");
    }
    let before = sb.sandbox().stats().requests;
    let out = dir.apply(vec![no_display]).await;
    let e = err(&out[0]);
    assert_eq!(e.kind, FailureKind::InvalidValue);
    assert_eq!(e.property.as_deref(), Some("displayName"));
    assert_eq!(
        sb.sandbox().stats().requests,
        before,
        "refused before sending"
    );

    let weak = DirectoryOp::CreateUser {
        properties: match create_op("weak") {
            DirectoryOp::CreateUser { properties, .. } => properties,
            _ => unreachable!(),
        },
        password: SecretString::from("short".to_string()),
        force_change_password: true,
    };
    let out = dir
        .apply(vec![
            // 0: UPN taken
            create_op_with("dup", &[("userPrincipalName", json!(demo::BJENSEN_UPN))]),
            // 1: bad mailNickname
            create_op_with(
                "bad nick",
                &[("userPrincipalName", json!("badnick@example.com"))],
            ),
            // 2: weak password (the password goes into passwordProfile)
            weak,
            // 3: no seats left (the admin holds the only one)
            license_op(demo::BJENSEN_ID, demo::SKU_FULL),
            // 4: no usageLocation
            license_op(&nowhere, demo::SKU_E3),
            // 5: no such user
            update_op(&missing, "Ghost"),
            // 6: manager that does not exist
            DirectoryOp::SetManager {
                id: demo::BJENSEN_ID.into(),
                manager_id: missing.clone(),
            },
            // 7: bad group mailNickname
            DirectoryOp::CreateGroup {
                display_name: "Bad".into(),
                mail_nickname: "bad nick".into(),
                kind: GroupKind::Security,
                description: None,
                earlier_attempt: None,
            },
            // 8: a property Graph does not know
            DirectoryOp::UpdateUser {
                id: demo::BJENSEN_ID.into(),
                properties: props(&[("favouriteColour", json!("blue"))]),
            },
            // 9: unknown group
            DirectoryOp::AddMembers {
                group_id: missing.clone(),
                member_ids: vec![demo::BJENSEN_ID.into()],
            },
        ])
        .await;
    let expect: Vec<(FailureKind, Option<&str>, &str)> = vec![
        (
            FailureKind::Conflict,
            Some("userPrincipalName"),
            "POST /users",
        ),
        (
            FailureKind::InvalidValue,
            Some("mailNickname"),
            "POST /users",
        ),
        (
            FailureKind::InvalidValue,
            Some("passwordProfile"),
            "POST /users",
        ),
        (FailureKind::NoLicenseSeats, None, "/assignLicense"),
        (FailureKind::MissingUsageLocation, None, "/assignLicense"),
        (FailureKind::NotFound, None, "PATCH /users/"),
        (FailureKind::NotFound, None, "/manager/$ref"),
        (
            FailureKind::InvalidValue,
            Some("mailNickname"),
            "POST /groups",
        ),
        (
            FailureKind::InvalidValue,
            Some("favouriteColour"),
            "PATCH /users/",
        ),
        (FailureKind::NotFound, None, "/groups/"),
    ];
    for (i, (r, (kind, prop, names))) in out.iter().zip(expect).enumerate() {
        let e = err(r);
        assert_eq!(e.kind, kind, "op {i}: {e}");
        assert_eq!(e.property.as_deref(), prop, "op {i}: {e}");
        assert!(e.message.contains(names), "op {i}: {}", e.message);
        assert!(!e.message.contains(PASSWORD), "{e}");
        assert!(!e.is_retryable() && !e.is_fatal(), "op {i}");
    }
    assert_eq!(users_with_upn(&sb, demo::BJENSEN_UPN).len(), 1);
    assert!(groups_named(&sb, "Bad").is_empty());
    assert_counters_match(&dir, &sb);
}

#[tokio::test]
async fn the_read_only_app_is_denied_and_a_bad_secret_stops_the_run() {
    let sb = start_demo().await;
    let ro = GraphDirectory::new(client_with(
        settings(&sb),
        credentials(demo::READONLY_CLIENT_ID, demo::READONLY_CLIENT_SECRET),
    ));
    let out = ro
        .apply(vec![
            create_op("ro"),
            update_op(demo::BJENSEN_ID, "Nope"),
            DirectoryOp::AddMembers {
                group_id: demo::ACCOUNTING_ID.into(),
                member_ids: vec![demo::ADMIN_ID.into()],
            },
            DirectoryOp::RemoveMember {
                group_id: demo::ACCOUNTING_ID.into(),
                member_id: demo::BJENSEN_ID.into(),
            },
        ])
        .await;
    for (i, r) in out.iter().enumerate() {
        let e = err(r);
        assert_eq!(e.kind, FailureKind::PermissionDenied, "op {i}: {e}");
        assert!(e.message.contains("permission"), "{e}");
    }
    // Reads are allowed to this app.
    assert_eq!(
        ro.find_users("userPrincipalName", &[demo::BJENSEN_UPN.into()], &[])
            .await
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        user_by_id(&sb, demo::BJENSEN_ID).unwrap()["jobTitle"],
        "Accountant"
    );
    assert_eq!(members_of(&sb, demo::ACCOUNTING_ID).len(), 1);

    let expired = GraphDirectory::new(client_with(
        settings(&sb),
        credentials(demo::EXPIRED_CLIENT_ID, demo::EXPIRED_CLIENT_SECRET),
    ));
    let out = expired
        .apply(vec![update_op(demo::BJENSEN_ID, "Nope")])
        .await;
    let e = err(&out[0]);
    assert_eq!(e.kind, FailureKind::Authentication);
    assert!(e.is_fatal());
    assert!(!e.message.contains(demo::EXPIRED_CLIENT_SECRET), "{e}");
    let e = expired.domains().await.unwrap_err();
    assert_eq!(e.kind, FailureKind::Authentication);
}

// ---- apply: order, state, counts -------------------------------------------------------------

#[derive(Debug, Clone, PartialEq)]
enum Want {
    Created,
    Done,
    AlreadyDone,
    Fails(FailureKind),
}

#[tokio::test]
async fn one_hundred_mixed_ops_come_back_in_order_with_exactly_the_expected_state() {
    let sb = start_demo().await;
    let dir = directory(&sb);
    let seeded: Vec<String> = (0..40).map(|i| seed_user(&sb, &format!("s{i}"))).collect();
    let with_manager: Vec<String> = (0..5)
        .map(|i| {
            sb.sandbox().seed_user(json!({
                "accountEnabled": true, "displayName": format!("Managed {i}"),
                "mailNickname": format!("managed{i}"),
                "userPrincipalName": format!("managed{i}@example.com"),
                "manager": seeded[0],
            }))
        })
        .collect();
    let groups: Vec<String> = (0..5)
        .map(|i| seed_group(&sb, &format!("G{i}"), &seeded[30..35]))
        .collect();
    let missing = "00000000-0000-0000-0000-0000000000bb";

    let mut ops: Vec<(DirectoryOp, Want)> = Vec::new();
    for i in 0..20 {
        ops.push((create_op(&format!("mix{i}")), Want::Created));
    }
    for (i, id) in seeded.iter().enumerate().take(20) {
        ops.push((update_op(id, &format!("Title {i}")), Want::Done));
    }
    for id in &seeded[0..10] {
        ops.push((license_op(id, demo::SKU_E3), Want::Done));
    }
    for id in &seeded[10..20] {
        ops.push((
            DirectoryOp::SetManager {
                id: id.clone(),
                manager_id: seeded[0].clone(),
            },
            Want::Done,
        ));
    }
    for id in &with_manager {
        ops.push((DirectoryOp::RemoveManager { id: id.clone() }, Want::Done));
    }
    for id in &seeded[20..28] {
        ops.push((
            DirectoryOp::RemoveManager { id: id.clone() },
            Want::AlreadyDone,
        ));
    }
    for (g, group) in groups.iter().enumerate() {
        let start = 20 + 2 * g;
        ops.push((
            DirectoryOp::AddMembers {
                group_id: group.clone(),
                member_ids: seeded[start..start + 2].to_vec(),
            },
            Want::Done,
        ));
        ops.push((
            DirectoryOp::RemoveMember {
                group_id: group.clone(),
                member_id: seeded[30 + g].clone(),
            },
            Want::Done,
        ));
        ops.push((
            DirectoryOp::RemoveMember {
                group_id: group.clone(),
                member_id: seeded[36].clone(),
            },
            Want::AlreadyDone,
        ));
    }
    for id in &seeded[35..40] {
        ops.push((DirectoryOp::DeleteUser { id: id.clone() }, Want::Done));
    }
    for i in 0..3 {
        ops.push((
            DirectoryOp::CreateGroup {
                display_name: format!("New {i}"),
                mail_nickname: format!("new{i}"),
                kind: GroupKind::Security,
                description: None,
                earlier_attempt: None,
            },
            Want::Created,
        ));
    }
    let doomed: Vec<String> = (0..2)
        .map(|i| seed_group(&sb, &format!("D{i}"), &[]))
        .collect();
    for id in &doomed {
        ops.push((DirectoryOp::DeleteGroup { id: id.clone() }, Want::Done));
    }
    ops.push((
        create_op_with("clash", &[("userPrincipalName", json!(demo::BJENSEN_UPN))]),
        Want::Fails(FailureKind::Conflict),
    ));
    ops.push((update_op(missing, "x"), Want::Fails(FailureKind::NotFound)));
    assert_eq!(ops.len(), 100);
    // Interleave the kinds: 37 is coprime with 100.
    let mixed: Vec<(DirectoryOp, Want)> = (0..100).map(|i| ops[(i * 37) % 100].clone()).collect();
    let (ops, wants): (Vec<DirectoryOp>, Vec<Want>) = mixed.into_iter().unzip();
    let keep = ops.clone();

    let before = sb.sandbox().stats();
    let out = dir.apply(ops).await;
    assert_eq!(out.len(), 100);
    for (i, (r, want)) in out.iter().zip(&wants).enumerate() {
        let got = match r {
            Ok(OpOutcome::Created { .. }) => Want::Created,
            Ok(OpOutcome::Done) => Want::Done,
            Ok(OpOutcome::AlreadyDone) => Want::AlreadyDone,
            Err(e) => Want::Fails(e.kind),
        };
        assert_eq!(&got, want, "op {i} ({:?}): {r:?}", keep[i]);
        // Results are in op order: a create's id is the user/group that op described.
        if let (Ok(OpOutcome::Created { id }), DirectoryOp::CreateUser { properties, .. }) =
            (r, &keep[i])
        {
            let u = user_by_id(&sb, id).unwrap();
            assert_eq!(u["userPrincipalName"], properties["userPrincipalName"]);
        }
        if let (Ok(OpOutcome::Created { id }), DirectoryOp::CreateGroup { display_name, .. }) =
            (r, &keep[i])
        {
            assert_eq!(groups_named(&sb, display_name)[0]["id"], id.as_str());
        }
    }

    // Tenant state, exactly.
    for i in 0..20 {
        assert_eq!(users_with_upn(&sb, &format!("mix{i}@example.com")).len(), 1);
    }
    for (i, id) in seeded.iter().enumerate().take(20) {
        assert_eq!(
            user_by_id(&sb, id).unwrap()["jobTitle"],
            format!("Title {i}")
        );
    }
    for (i, id) in seeded.iter().enumerate().take(35).skip(20) {
        assert_eq!(
            user_by_id(&sb, id).unwrap()["jobTitle"],
            format!("Job s{i}")
        );
    }
    for (i, id) in seeded.iter().enumerate().take(35) {
        let u = user_by_id(&sb, id).unwrap();
        let skus = u["assignedLicenses"].as_array().unwrap().len();
        assert_eq!(skus, usize::from(i < 10), "licenses of s{i}");
        let manager = u.get("manager").and_then(Value::as_str);
        let want = (10..20).contains(&i).then_some(seeded[0].as_str());
        assert_eq!(manager, want, "manager of s{i}");
    }
    for id in &with_manager {
        assert!(user_by_id(&sb, id).unwrap().get("manager").is_none());
    }
    for id in &seeded[35..40] {
        assert!(user_by_id(&sb, id).is_none());
    }
    for (g, group) in groups.iter().enumerate() {
        let mut want: HashSet<String> = seeded[30..35].iter().cloned().collect();
        want.remove(&seeded[30 + g]);
        // seeded[35..40] are deleted: the sandbox hides deleted members.
        want.retain(|m| !seeded[35..40].contains(m));
        want.insert(seeded[20 + 2 * g].clone());
        want.insert(seeded[21 + 2 * g].clone());
        assert_eq!(members_of(&sb, group), want, "members of G{g}");
    }
    for i in 0..3 {
        assert_eq!(groups_named(&sb, &format!("New {i}")).len(), 1);
    }
    for i in 0..2 {
        assert!(groups_named(&sb, &format!("D{i}")).is_empty());
    }
    assert_eq!(
        user_by_id(&sb, demo::BJENSEN_ID).unwrap()["displayName"],
        "Barbara Jensen"
    );

    // One Graph request per op (the minimum) in 34 HTTP round trips: 24 creates and 5 member
    // PATCHes on their own, the other 71 ops in 4 + 1 batches of ≤ 20 (PATCH/PUT/DELETE apart
    // from the assignLicense POSTs).
    let after = sb.sandbox().stats();
    let (requests, reads, writes, batches) = delta(&after, &before);
    assert_eq!(writes, 100, "one write per op");
    assert_eq!(reads, 0);
    assert_eq!(batches, 5);
    assert_eq!(requests, 105, "100 Graph requests + 5 envelopes");
    assert_eq!(after.throttled, 0);
    assert_counters_match(&dir, &sb);
}

#[tokio::test]
async fn adding_45_members_with_3_present_costs_one_refused_patch_and_one_read() {
    let sb = start_demo().await;
    let dir = directory(&sb);
    let users: Vec<String> = (0..45).map(|i| seed_user(&sb, &format!("am{i}"))).collect();
    // The three present ones sit in the first and last chunks.
    let present = vec![users[3].clone(), users[24].clone(), users[44].clone()];
    let group = seed_group(&sb, "Members", &present);
    let before = sb.sandbox().stats();
    let from = sb.sandbox().request_log().len();
    let out = dir
        .apply(vec![DirectoryOp::AddMembers {
            group_id: group.clone(),
            member_ids: users.clone(),
        }])
        .await;
    assert_eq!(out, vec![Ok(OpOutcome::Done)]);
    assert_eq!(members_of(&sb, &group), users.iter().cloned().collect());

    // 42 to add: the first chunk of 20 is refused (all-or-nothing, nothing added), one read of
    // the membership, then 20 + 20 + 2. Single adds would have cost up to 20 more writes.
    let (requests, reads, writes, _) = delta(&sb.sandbox().stats(), &before);
    assert_eq!((requests, reads, writes), (5, 1, 4));
    let statuses: Vec<(String, u16)> = log_since(&sb, from)
        .into_iter()
        .map(|r| (r.method, r.status))
        .collect();
    assert_eq!(
        statuses,
        vec![
            ("PATCH".to_string(), 400),
            ("GET".to_string(), 200),
            ("PATCH".to_string(), 204),
            ("PATCH".to_string(), 204),
            ("PATCH".to_string(), 204),
        ]
    );

    // All already there: one refused PATCH, one read, no other write.
    let before = sb.sandbox().stats();
    let out = dir
        .apply(vec![DirectoryOp::AddMembers {
            group_id: group.clone(),
            member_ids: users[0..5].to_vec(),
        }])
        .await;
    assert_eq!(out, vec![Ok(OpOutcome::AlreadyDone)]);
    let (requests, reads, writes, _) = delta(&sb.sandbox().stats(), &before);
    assert_eq!((requests, reads, writes), (2, 1, 1));

    // Nothing present: exactly ⌈n / 20⌉ PATCHes.
    let fresh: Vec<String> = (0..41).map(|i| seed_user(&sb, &format!("nm{i}"))).collect();
    let empty = seed_group(&sb, "Empty", &[]);
    let before = sb.sandbox().stats();
    let out = dir
        .apply(vec![DirectoryOp::AddMembers {
            group_id: empty.clone(),
            member_ids: fresh.clone(),
        }])
        .await;
    assert_eq!(out, vec![Ok(OpOutcome::Done)]);
    assert_eq!(members_of(&sb, &empty).len(), 41);
    let (requests, reads, writes, _) = delta(&sb.sandbox().stats(), &before);
    assert_eq!((requests, reads, writes), (3, 0, 3));
    assert_counters_match(&dir, &sb);
}

#[tokio::test]
async fn a_member_that_does_not_exist_fails_the_op_but_not_the_others() {
    let sb = start_demo().await;
    let dir = GraphDirectory::new(client_with(quick_settings(&sb), demo_credentials()));
    let users: Vec<String> = (0..4).map(|i| seed_user(&sb, &format!("ok{i}"))).collect();
    let group = seed_group(&sb, "Partial", &[]);
    let ghost = "00000000-0000-0000-0000-0000000000cc".to_string();
    let mut ids = users.clone();
    ids.insert(2, ghost.clone());
    let out = dir
        .apply(vec![DirectoryOp::AddMembers {
            group_id: group.clone(),
            member_ids: ids,
        }])
        .await;
    let e = err(&out[0]);
    assert_eq!(e.kind, FailureKind::NotFound, "{e}");
    assert!(e.message.contains("1 of 5 members"), "{e}");
    assert!(e.message.contains(&ghost), "{e}");
    assert_eq!(members_of(&sb, &group), users.into_iter().collect());
}

#[tokio::test]
async fn throttled_batch_items_are_applied_exactly_once() {
    let sb = start_demo().await;
    let dir = directory(&sb);
    let users: Vec<String> = (0..30).map(|i| seed_user(&sb, &format!("t{i}"))).collect();
    let group = seed_group(&sb, "Throttled", &users[20..30]);
    for (method, prefix, count) in [
        ("PATCH", "/users", 6),
        ("DELETE", "/groups", 3),
        ("POST", "/users/", 2),
        ("PUT", "/users", 2),
    ] {
        sb.sandbox().add_fault(FaultRule {
            count,
            retry_after: Some(0.05),
            ..FaultRule::new(method, prefix, FaultStatus::Status(429))
        });
    }
    let mut ops: Vec<DirectoryOp> = Vec::new();
    for (i, id) in users.iter().enumerate().take(20) {
        ops.push(update_op(id, &format!("T{i}")));
    }
    for id in &users[20..30] {
        ops.push(DirectoryOp::RemoveMember {
            group_id: group.clone(),
            member_id: id.clone(),
        });
    }
    for id in &users[0..5] {
        ops.push(license_op(id, demo::SKU_E3));
    }
    for id in &users[5..10] {
        ops.push(DirectoryOp::SetManager {
            id: id.clone(),
            manager_id: users[0].clone(),
        });
    }
    for i in 0..3 {
        ops.push(create_op(&format!("thr{i}")));
    }
    let started = std::time::Instant::now();
    let out = dir.apply(ops).await;
    for (i, r) in out.iter().enumerate() {
        if i >= 40 {
            created_id(r);
        } else {
            assert_eq!(r, &Ok(OpOutcome::Done), "op {i}");
        }
    }
    assert!(
        started.elapsed() >= Duration::from_millis(50),
        "Retry-After honoured"
    );

    // Exactly once: every target got one successful write, and the throttled attempts were
    // the only extra requests.
    let log = sb.sandbox().request_log();
    let ok_writes = |path: &str| {
        log.iter()
            .filter(|r| r.write && r.path == path && (200..300).contains(&r.status))
            .count()
    };
    for id in &users[0..20] {
        assert_eq!(ok_writes(&format!("/v1.0/users/{id}")), 1);
    }
    for id in &users[20..30] {
        assert_eq!(
            ok_writes(&format!("/v1.0/groups/{group}/members/{id}/$ref")),
            1
        );
    }
    for id in &users[0..5] {
        assert_eq!(ok_writes(&format!("/v1.0/users/{id}/assignLicense")), 1);
    }
    for id in &users[5..10] {
        assert_eq!(ok_writes(&format!("/v1.0/users/{id}/manager/$ref")), 1);
    }
    for i in 0..3 {
        assert_eq!(users_with_upn(&sb, &format!("thr{i}@example.com")).len(), 1);
    }
    for (i, id) in users.iter().enumerate().take(20) {
        assert_eq!(user_by_id(&sb, id).unwrap()["jobTitle"], format!("T{i}"));
    }
    assert!(members_of(&sb, &group).is_empty());
    let st = sb.sandbox().stats();
    assert_eq!(st.throttled, 13, "every scripted 429 fired");
    assert_eq!(
        st.writes,
        43 + 13,
        "43 ops, each once, plus the 13 throttled attempts"
    );
    let c = dir.counters();
    assert_eq!(c.throttled, 13);
    assert_eq!(c.writes, 56);
    assert_counters_match(&dir, &sb);
}

#[tokio::test]
async fn operations_waiting_out_a_retry_after_do_not_hold_the_others_back() {
    let sb = start_demo().await;
    // Two requests in flight at most; the two group creates are answered 429 with 2 s to wait.
    let settings = GraphSettings {
        concurrency: 2,
        adaptive_concurrency: false,
        ..settings(&sb)
    };
    let dir = GraphDirectory::new(client_with(settings, demo_credentials()));
    sb.sandbox().add_fault(FaultRule {
        count: 2,
        retry_after: Some(2.0),
        ..FaultRule::new("POST", "/groups", FaultStatus::Status(429))
    });
    let from = sb.sandbox().request_log().len();
    let mut ops: Vec<DirectoryOp> = (0..2)
        .map(|i| DirectoryOp::CreateGroup {
            display_name: format!("Waiting {i}"),
            mail_nickname: format!("waiting{i}"),
            kind: GroupKind::Security,
            description: None,
            earlier_attempt: None,
        })
        .collect();
    ops.extend((0..8).map(|i| create_op(&format!("wait{i}"))));
    let out = dir.apply(ops).await;
    for r in &out {
        created_id(r);
    }
    let creates: Vec<String> = log_since(&sb, from)
        .iter()
        .filter(|r| r.method == "POST" && matches!(r.path.as_str(), "/v1.0/users" | "/v1.0/groups"))
        .map(|r| format!("{} {}", r.path.trim_start_matches("/v1.0/"), r.status))
        .collect();
    // The throttled group creates wait their Retry-After without a request slot: the user
    // creates behind them are answered before either is sent again.
    let mut want = vec!["groups 429".to_owned(); 2];
    want.extend(vec!["users 201".to_owned(); 8]);
    want.extend(vec!["groups 201".to_owned(); 2]);
    assert_eq!(creates, want);
}
