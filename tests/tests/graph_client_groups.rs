//! Groups: find by displayName (every match), create security / Microsoft 365 (with bound
//! members), patch, delete, list members with paging, add members in chunks with fallback,
//! idempotent add/remove.

use m365_graph::{GraphError, NewGroup, Patch};
use m365_integration_tests::graph_client::*;
use m365_sandbox::demo;
use serde_json::json;

#[tokio::test]
async fn find_by_display_name_returns_every_match() {
    let sb = start_demo().await;
    let second = sb.sandbox().seed_group(json!({
        "displayName": demo::ACCOUNTING_NAME, "mailEnabled": false, "mailNickname": "accounting2",
        "securityEnabled": true, "groupTypes": [],
    }));
    let c = client(&sb);
    let found = c
        .find_groups_by_display_name(demo::ACCOUNTING_NAME)
        .await
        .unwrap();
    let mut ids: Vec<String> = found.into_iter().map(|g| g.id).collect();
    ids.sort();
    let mut want = vec![demo::ACCOUNTING_ID.to_string(), second];
    want.sort();
    assert_eq!(ids, want);
    assert!(
        c.find_groups_by_display_name("No such group")
            .await
            .unwrap()
            .is_empty()
    );
    let by_nick = c.find_groups_by_mail_nickname("accounting").await.unwrap();
    assert_eq!(by_nick.len(), 1);
    assert_eq!(by_nick[0].id, demo::ACCOUNTING_ID);
    let g = c.get_group(demo::ACCOUNTING_ID).await.unwrap().unwrap();
    assert_eq!(g.security_enabled, Some(true));
    assert!(
        c.get_group("00000000-0000-0000-0000-000000000000")
            .await
            .unwrap()
            .is_none()
    );
}

#[tokio::test]
async fn create_security_and_m365_groups_patch_and_delete() {
    let sb = start_demo().await;
    let c = client(&sb);
    let mut sec = NewGroup::security("Engineering", "engineering");
    sec.description = Some("Eng".into());
    sec.members = vec![demo::BJENSEN_ID.to_string()];
    let g = c.create_group(&sec).await.unwrap();
    let stored = groups_named(&sb, "Engineering");
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0]["securityEnabled"], true);
    assert_eq!(stored[0]["mailEnabled"], false);
    assert_eq!(
        sb.sandbox().group_members(&g.id),
        vec![demo::BJENSEN_ID.to_string()]
    );

    let m365 = c
        .create_group(&NewGroup::microsoft365("Project X", "projectx"))
        .await
        .unwrap();
    assert!(c.get_group(&m365.id).await.unwrap().unwrap().is_unified());

    c.update_group(&g.id, &Patch::new().set("description", "Engineering dept"))
        .await
        .unwrap();
    assert_eq!(
        groups_named(&sb, "Engineering")[0]["description"],
        "Engineering dept"
    );

    c.delete_group(&g.id).await.unwrap();
    assert!(groups_named(&sb, "Engineering").is_empty());
    // A deleted Microsoft 365 group is restorable; a security group is not.
    c.delete_group(&m365.id).await.unwrap();
    let deleted = c.list_deleted_groups(&["id"]).collect_all().await.unwrap();
    assert!(deleted.iter().any(|d| d.id == m365.id));
    assert!(!deleted.iter().any(|d| d.id == g.id));
    c.restore_deleted_item(&m365.id).await.unwrap();
    assert_eq!(groups_named(&sb, "Project X").len(), 1);
}

#[tokio::test]
async fn duplicate_m365_nickname_is_a_conflict_on_mail_nickname() {
    let sb = start_demo().await;
    let c = client(&sb);
    c.create_group(&NewGroup::microsoft365("Team A", "team"))
        .await
        .unwrap();
    let e = c
        .create_group(&NewGroup::microsoft365("Team B", "team"))
        .await
        .unwrap_err();
    assert!(matches!(e, GraphError::Conflict { .. }), "{e:?}");
    assert_eq!(e.property(), Some("mailNickname"));
}

#[tokio::test]
async fn create_with_more_than_20_members_binds_20_and_adds_the_rest() {
    let sb = start_demo().await;
    let ids: Vec<String> = (0..27)
        .map(|i| {
            sb.sandbox().seed_user(json!({
                "accountEnabled": true, "displayName": format!("M {i}"),
                "mailNickname": format!("m{i}"), "userPrincipalName": format!("m{i}@example.com"),
            }))
        })
        .collect();
    let c = client(&sb);
    let mut ng = NewGroup::security("Big", "big");
    ng.members = ids.clone();
    let g = c.create_group(&ng).await.unwrap();
    let mut members = sb.sandbox().group_members(&g.id);
    members.sort();
    let mut want = ids;
    want.sort();
    assert_eq!(members, want);
}

#[tokio::test]
async fn add_members_in_chunks_falls_back_to_single_adds_and_is_idempotent() {
    let sb = start_demo().await;
    let ids: Vec<String> = (0..45)
        .map(|i| {
            sb.sandbox().seed_user(json!({
                "accountEnabled": true, "displayName": format!("A {i}"),
                "mailNickname": format!("a{i}"), "userPrincipalName": format!("a{i}@example.com"),
            }))
        })
        .collect();
    let c = client(&sb);
    // bjensen is already in Accounting: the chunk holding her fails as a whole (all-or-nothing)
    // and is re-done one by one.
    let mut wanted = ids.clone();
    wanted.insert(5, demo::BJENSEN_ID.to_string());
    let out = c
        .add_group_members(demo::ACCOUNTING_ID, &wanted)
        .await
        .unwrap();
    assert!(out.failed.is_empty(), "{:?}", out.failed);
    assert_eq!(out.already_members, vec![demo::BJENSEN_ID.to_string()]);
    assert_eq!(out.added.len(), 45);
    let members = sb.sandbox().group_members(demo::ACCOUNTING_ID);
    assert_eq!(members.len(), 46);
    let log = sb.sandbox().request_log();
    let patches = log.iter().filter(|r| r.method == "PATCH").count();
    assert_eq!(patches, 3, "46 ids → 20 + 20 + 6");
    let singles = log
        .iter()
        .filter(|r| r.method == "POST" && r.path.contains("/members/$ref"))
        .count();
    assert_eq!(singles, 20, "only the refused chunk is re-done one by one");

    // Adding everyone again changes nothing and reports no failure.
    let again = c
        .add_group_members(demo::ACCOUNTING_ID, &wanted)
        .await
        .unwrap();
    assert!(again.failed.is_empty());
    assert_eq!(again.already_members.len(), 46);
    assert_eq!(sb.sandbox().group_members(demo::ACCOUNTING_ID).len(), 46);

    // Single add of an existing member is Ok(false).
    assert!(
        !c.add_group_member(demo::ACCOUNTING_ID, &ids[0])
            .await
            .unwrap()
    );
}

#[tokio::test]
async fn a_missing_member_fails_alone() {
    let sb = start_demo().await;
    let c = client(&sb);
    let real = sb.sandbox().seed_user(json!({
        "accountEnabled": true, "displayName": "Real", "mailNickname": "real",
        "userPrincipalName": "real@example.com",
    }));
    let ghost = "00000000-0000-0000-0000-00000000beef".to_string();
    let out = c
        .add_group_members(demo::ACCOUNTING_ID, &[real.clone(), ghost.clone()])
        .await
        .unwrap();
    assert_eq!(out.added, vec![real.clone()]);
    assert_eq!(out.failed.len(), 1);
    assert_eq!(out.failed[0].0, ghost);
    assert!(
        sb.sandbox()
            .group_members(demo::ACCOUNTING_ID)
            .contains(&real)
    );
}

#[tokio::test]
async fn remove_member_and_not_a_member_is_success() {
    let sb = start_demo().await;
    let c = client(&sb);
    assert!(
        c.remove_group_member(demo::ACCOUNTING_ID, demo::BJENSEN_ID)
            .await
            .unwrap()
    );
    assert!(sb.sandbox().group_members(demo::ACCOUNTING_ID).is_empty());
    assert!(
        !c.remove_group_member(demo::ACCOUNTING_ID, demo::BJENSEN_ID)
            .await
            .unwrap()
    );
}

#[tokio::test]
async fn list_members_pages() {
    let sb = start_demo().await;
    let ids: Vec<String> = (0..1200)
        .map(|i| {
            sb.sandbox().seed_user(json!({
                "accountEnabled": true, "displayName": format!("P {i}"),
                "mailNickname": format!("p{i}"), "userPrincipalName": format!("p{i}@example.com"),
            }))
        })
        .collect();
    let gid = sb.sandbox().seed_group(json!({
        "displayName": "Huge", "mailEnabled": false, "mailNickname": "huge",
        "securityEnabled": true, "groupTypes": [], "members": ids,
    }));
    let c = client(&sb);
    let mut pager = c.list_group_members(&gid, &["id", "userPrincipalName"]);
    let mut seen = std::collections::HashSet::new();
    let mut pages = 0;
    while let Some(page) = pager.next_page().await.unwrap() {
        pages += 1;
        assert!(page.len() <= 999);
        for m in page {
            assert!(m.user_principal_name.is_some());
            seen.insert(m.id);
        }
    }
    assert_eq!(seen.len(), 1200);
    assert!(pages >= 2);
}

#[tokio::test]
async fn member_add_to_a_just_created_group_survives_replication_lag() {
    let sb = start_demo().await;
    let mut knobs = sb.sandbox().knobs();
    knobs.replication_lag_ms = 300;
    sb.sandbox().set_knobs(knobs);
    let c = client(&sb);
    let g = c
        .create_group(&NewGroup::security("Fresh", "fresh"))
        .await
        .unwrap();
    let u = c.create_user(&new_user("freshman")).await.unwrap();
    assert!(c.add_group_member(&g.id, &u.id).await.unwrap());
    let out = c
        .add_group_members(&g.id, &[demo::BJENSEN_ID.to_string()])
        .await
        .unwrap();
    assert!(out.failed.is_empty(), "{:?}", out.failed);
    let mut members = sb.sandbox().group_members(&g.id);
    members.sort();
    let mut want = vec![u.id, demo::BJENSEN_ID.to_string()];
    want.sort();
    assert_eq!(members, want);
}
