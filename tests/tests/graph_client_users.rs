//! Users: get, find (eq / in, escaping), create, patch, delete, list with paging, deleted items,
//! and the user-write error classification.

use m365_graph::{ErrorKind, GraphError, NewUser, Patch, User};
use m365_integration_tests::graph_client::*;
use m365_sandbox::demo;
use serde_json::json;

#[tokio::test]
async fn get_user_by_id_and_upn_and_404_is_none() {
    let sb = start_demo().await;
    let c = client(&sb);
    let by_id = c
        .get_user(
            demo::BJENSEN_ID,
            &["id", "userPrincipalName", "accountEnabled", "department"],
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        by_id.user_principal_name.as_deref(),
        Some(demo::BJENSEN_UPN)
    );
    assert_eq!(by_id.account_enabled, Some(true));
    assert_eq!(by_id.department.as_deref(), Some("Finance"));
    let by_upn = c
        .get_user(demo::BJENSEN_UPN, &[] as &[&str])
        .await
        .unwrap()
        .unwrap();
    assert_eq!(by_upn.id, demo::BJENSEN_ID);
    let missing = c
        .get_user("nobody@example.com", &[] as &[&str])
        .await
        .unwrap();
    assert!(missing.is_none());
}

#[tokio::test]
async fn find_by_match_attribute_escapes_quotes_and_special_characters() {
    let sb = start_demo().await;
    sb.sandbox().seed_user(json!({
        "accountEnabled": true, "displayName": "Miles O'Brien", "mailNickname": "mobrien",
        "userPrincipalName": "mobrien@example.com", "surname": "O'Brien", "employeeId": "E#1&2 +3",
    }));
    let c = client(&sb);
    let found = c
        .find_users_by(
            "surname",
            "O'Brien",
            &["id", "userPrincipalName", "surname"],
        )
        .await
        .unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(
        found[0].user_principal_name.as_deref(),
        Some("mobrien@example.com")
    );
    let found = c
        .find_users_by("employeeId", "E#1&2 +3", &["id", "employeeId"])
        .await
        .unwrap();
    assert_eq!(found.len(), 1, "# & + and space survive encoding");
    let none = c
        .find_users_by("userPrincipalName", "ghost@example.com", &["id"])
        .await
        .unwrap();
    assert!(none.is_empty());
    // Not a property name: refused locally, nothing sent.
    let before = c.request_count();
    assert!(matches!(
        c.find_users_by("surname eq 'x' or true", "x", &["id"])
            .await,
        Err(GraphError::Config(_))
    ));
    assert_eq!(c.request_count(), before);
}

#[tokio::test]
async fn bulk_lookup_uses_in_filters_of_at_most_15_values() {
    let sb = start_demo().await;
    let mut upns = Vec::new();
    for i in 0..40 {
        let upn = format!("bulk{i}@example.com");
        sb.sandbox().seed_user(json!({
            "accountEnabled": true, "displayName": format!("Bulk {i}"),
            "mailNickname": format!("bulk{i}"), "userPrincipalName": upn,
        }));
        upns.push(upn);
    }
    upns.push("missing@example.com".into());
    let c = client(&sb);
    let found = c
        .find_users_by_any("userPrincipalName", &upns, &["id", "userPrincipalName"])
        .await
        .unwrap();
    assert_eq!(found.len(), 40);
    let lookups: Vec<_> = sb
        .sandbox()
        .request_log()
        .into_iter()
        .filter(|r| r.path.starts_with("/v1.0/users?"))
        .collect();
    assert_eq!(lookups.len(), 3, "41 values → 15 + 15 + 11");
    assert!(lookups.iter().all(|r| r.status == 200));
}

#[tokio::test]
async fn create_patch_delete_restore_and_hard_delete() {
    let sb = start_demo().await;
    let c = client(&sb);
    let mut nu = new_user("ada");
    nu.given_name = Some("Ada".into());
    nu.department = Some("R&D".into());
    nu.extra.insert("companyName".into(), json!("Contoso"));
    let created = c.create_user(&nu).await.unwrap();
    assert!(!created.id.is_empty());
    let stored = user_by_id(&sb, &created.id).unwrap();
    assert_eq!(stored["userPrincipalName"], "ada@example.com");
    assert_eq!(stored["usageLocation"], "US");
    assert_eq!(stored["companyName"], "Contoso");

    // PATCH sends only the given properties; null clears.
    c.update_user(
        &created.id,
        &Patch::new().set("jobTitle", "Engineer").clear("department"),
    )
    .await
    .unwrap();
    let stored = user_by_id(&sb, &created.id).unwrap();
    assert_eq!(stored["jobTitle"], "Engineer");
    assert!(stored.get("department").is_none_or(|v| v.is_null()));
    assert_eq!(stored["givenName"], "Ada");
    let patches: Vec<_> = sb
        .sandbox()
        .request_log()
        .into_iter()
        .filter(|r| r.method == "PATCH")
        .collect();
    assert_eq!(patches.len(), 1);
    // An empty patch sends nothing.
    c.update_user(&created.id, &Patch::new()).await.unwrap();
    assert_eq!(
        sb.sandbox()
            .request_log()
            .iter()
            .filter(|r| r.method == "PATCH")
            .count(),
        1
    );

    // Soft delete, list deleted, restore.
    c.delete_user(&created.id).await.unwrap();
    assert!(user_by_id(&sb, &created.id).is_none());
    let deleted = c
        .list_deleted_users(&["id", "userPrincipalName"])
        .collect_all()
        .await
        .unwrap();
    assert!(deleted.iter().any(|u| u.id == created.id));
    let restored = c.restore_deleted_item(&created.id).await.unwrap();
    assert_eq!(restored.id, created.id);
    assert!(user_by_id(&sb, &created.id).is_some());

    // Delete again and purge for good.
    c.delete_user(&created.id).await.unwrap();
    c.permanently_delete_item(&created.id).await.unwrap();
    assert!(
        sb.sandbox()
            .deleted_items()
            .iter()
            .all(|d| d["id"].as_str() != Some(created.id.as_str()))
    );
    assert!(c.get_user(&created.id, &["id"]).await.unwrap().is_none());
}

#[tokio::test]
async fn user_write_errors_are_classified_with_the_property() {
    let sb = start_demo().await;
    let c = client(&sb);

    // Same UPN as an existing user: 400 ObjectConflict / userPrincipalName.
    let mut dup = new_user("bjensen");
    dup.mail_nickname = "bjensen2".into();
    let e = c.create_user(&dup).await.unwrap_err();
    assert!(matches!(e, GraphError::Conflict { .. }), "{e:?}");
    assert_eq!(e.property(), Some("userPrincipalName"));
    assert_eq!(e.status(), Some(400));
    assert!(!e.is_retryable());
    let ctx = e.context().unwrap();
    assert_eq!(ctx.method, "POST");
    assert_eq!(ctx.path, "/users");
    assert_eq!(ctx.code.as_deref(), Some("Request_BadRequest"));
    assert!(ctx.request_id.is_some(), "request-id is carried");

    // Weak password → passwordProfile.
    let mut weak = new_user("weak");
    weak.password_profile.password = "password".into();
    let e = c.create_user(&weak).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidValue, "{e:?}");
    assert_eq!(e.property(), Some("passwordProfile"));

    // Bad mailNickname.
    let mut bad_nick = new_user("nick");
    bad_nick.mail_nickname = "has space".into();
    let e = c.create_user(&bad_nick).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidValue, "{e:?}");
    assert_eq!(e.property(), Some("mailNickname"));

    // Unverified domain in the UPN.
    let mut unverified = new_user("x");
    unverified.user_principal_name = format!("x@{}", demo::UNVERIFIED_DOMAIN);
    let e = c.create_user(&unverified).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidValue, "{e:?}");
    assert_eq!(e.property(), Some("userPrincipalName"));

    // Unknown property.
    let mut unknown = new_user("unknownprop");
    unknown
        .extra
        .insert("favouriteColour".into(), json!("blue"));
    let e = c.create_user(&unknown).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidValue, "{e:?}");
    assert_eq!(e.property(), Some("favouriteColour"));

    // Nothing was created by any of the failures.
    assert_eq!(sb.sandbox().users().len(), 2);

    // Not found on PATCH.
    let e = c
        .update_user(
            "00000000-0000-0000-0000-000000000000",
            &Patch::new().set("jobTitle", "x"),
        )
        .await
        .unwrap_err();
    assert!(matches!(e, GraphError::NotFound { .. }), "{e:?}");
}

#[tokio::test]
async fn federated_domain_needs_immutable_id() {
    let sb = start_demo().await;
    let c = client(&sb);
    let mut fed = new_user("fed");
    fed.user_principal_name = format!("fed@{}", demo::FEDERATED_DOMAIN);
    let e = c.create_user(&fed).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidValue, "{e:?}");
    assert_eq!(e.property(), Some("onPremisesImmutableId"));
    fed.on_premises_immutable_id = Some("aW1tdXRhYmxlLWlk".into());
    let u = c.create_user(&fed).await.unwrap();
    assert_eq!(users_with_upn(&sb, &fed.user_principal_name).len(), 1);
    assert_eq!(
        u.user_principal_name.as_deref(),
        Some(fed.user_principal_name.as_str())
    );
}

#[tokio::test]
async fn permission_denied_for_a_read_only_app() {
    let sb = start_demo().await;
    let ro = client_with(
        settings(&sb),
        credentials(demo::READONLY_CLIENT_ID, demo::READONLY_CLIENT_SECRET),
    );
    // Reading works...
    assert!(
        ro.get_user(demo::BJENSEN_ID, &["id"])
            .await
            .unwrap()
            .is_some()
    );
    // ...writing is 403 Authorization_RequestDenied.
    let e = ro.create_user(&new_user("denied")).await.unwrap_err();
    assert!(matches!(e, GraphError::PermissionDenied { .. }), "{e:?}");
    assert_eq!(e.status(), Some(403));
    assert!(!e.is_retryable());
    assert!(users_with_upn(&sb, "denied@example.com").is_empty());
}

#[tokio::test]
async fn list_users_pages_through_nextlink_with_bounded_pages() {
    let sb = start_demo().await;
    for i in 0..2100 {
        sb.sandbox().seed_user(json!({
            "accountEnabled": true, "displayName": format!("Paged {i}"),
            "mailNickname": format!("paged{i}"), "userPrincipalName": format!("paged{i}@example.com"),
        }));
    }
    let c = client(&sb);
    let mut pager = c.list_users(&["id", "userPrincipalName", "accountEnabled"]);
    let mut ids = std::collections::HashSet::new();
    let mut pages = 0;
    while let Some(page) = pager.next_page().await.unwrap() {
        assert!(page.len() <= 999, "a page is bounded");
        for u in &page {
            assert!(u.account_enabled.is_some(), "$select honoured");
            ids.insert(u.id.clone());
        }
        pages += 1;
    }
    assert_eq!(ids.len(), 2102);
    assert!(pages >= 3, "{pages}");
    let reqs: Vec<_> = sb
        .sandbox()
        .request_log()
        .into_iter()
        .filter(|r| r.path.starts_with("/v1.0/users"))
        .collect();
    assert_eq!(reqs.len(), pages);
    assert!(reqs[0].path.contains("$top=999"));
    assert!(pager.next_page().await.unwrap().is_none());
}

#[tokio::test]
async fn get_after_write_waits_out_replication_lag() {
    let sb = start_demo().await;
    let mut knobs = sb.sandbox().knobs();
    knobs.replication_lag_ms = 300;
    sb.sandbox().set_knobs(knobs);
    let c = client(&sb);
    let created = c.create_user(&new_user("laggy")).await.unwrap();
    // A plain get right after create may not see it; the after-write read retries.
    let u: User = c
        .get_user_after_write(&created.id, &["id", "userPrincipalName"])
        .await
        .unwrap();
    assert_eq!(u.id, created.id);
    assert!(c.stats().retries >= 1, "the lag was actually hit");
}

#[tokio::test]
async fn new_user_debug_never_shows_the_password() {
    let u: NewUser = new_user("dbg");
    assert!(!format!("{u:?}").contains(PASSWORD));
}
