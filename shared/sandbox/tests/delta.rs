//! `/users/delta` and `/groups/delta` at the HTTP level, as Graph answers them
//! (<https://learn.microsoft.com/graph/delta-query-overview>,
//! <https://learn.microsoft.com/graph/api/user-delta>,
//! <https://learn.microsoft.com/graph/api/group-delta>).

// Integration tests: helpers panic on broken expectations.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use m365_sandbox::Knobs;
use serde_json::{Value, json};

/// A round from `url` to its deltaLink: every item, the page count, the deltaLink. Checks the
/// link rules on every page: exactly one of nextLink and deltaLink.
async fn round(t: &T, url: &str) -> (Vec<Value>, usize, String) {
    round_with(t, url, false).await
}

async fn round_with(t: &T, url: &str, minimal: bool) -> (Vec<Value>, usize, String) {
    let mut items = Vec::new();
    let mut pages = 0;
    let mut next = url.to_owned();
    loop {
        let r = get_prefer(t, &next, minimal).await;
        assert_eq!(r.status, 200, "{}", r.body);
        pages += 1;
        items.extend(r.body["value"].as_array().unwrap().iter().cloned());
        let next_link = r.body["@odata.nextLink"].as_str();
        let delta_link = r.body["@odata.deltaLink"].as_str();
        match (next_link, delta_link) {
            (Some(n), None) => {
                assert!(n.contains("$skiptoken="), "{n}");
                next = n.to_owned();
            }
            (None, Some(d)) => {
                assert!(d.contains("$deltatoken="), "{d}");
                return (items, pages, d.to_owned());
            }
            other => panic!("a page carries exactly one link: {other:?} in {}", r.body),
        }
    }
}

async fn get_prefer(t: &T, url: &str, minimal: bool) -> Resp {
    let prefer: &[(&str, &str)] = if minimal {
        &[("Prefer", "return=minimal")]
    } else {
        &[]
    };
    t.get_with_headers(url, prefer).await
}

fn delta_page_size(t: &T, page_size: usize) {
    let mut knobs: Knobs = t.rs.sandbox().knobs();
    knobs.delta.page_size = page_size;
    t.rs.sandbox().set_knobs(knobs);
}

fn ids(items: &[Value]) -> Vec<String> {
    let mut ids: Vec<String> = items
        .iter()
        .map(|v| v["id"].as_str().unwrap().to_owned())
        .collect();
    ids.sort();
    ids
}

fn live_user_ids(t: &T) -> Vec<String> {
    let mut ids: Vec<String> =
        t.rs.sandbox()
            .users()
            .iter()
            .map(|u| u["id"].as_str().unwrap().to_owned())
            .collect();
    ids.sort();
    ids
}

fn item<'a>(items: &'a [Value], id: &str) -> &'a Value {
    items
        .iter()
        .find(|v| v["id"] == id)
        .unwrap_or_else(|| panic!("{id} not in {items:?}"))
}

async fn set_manager(t: &T, user: &str, manager: &str) {
    let r = t
        .put(
            &format!("/users/{user}/manager/$ref"),
            json!({"@odata.id": format!("https://graph.microsoft.com/v1.0/users/{manager}")}),
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.body);
}

#[tokio::test]
async fn a_user_round_pages_to_a_delta_link_then_returns_only_tracked_changes() {
    let t = start().await;
    delta_page_size(&t, 2);
    let a = t.create_user("dl-a", json!({"department": "Sales"})).await;
    let b = t.create_user("dl-b", json!({"department": "Sales"})).await;
    let c = t.create_user("dl-c", json!({})).await;

    let (items, pages, link) =
        round(&t, "/users/delta?$select=displayName,department,manager").await;
    assert_eq!(ids(&items), live_user_ids(&t), "round one holds every user");
    assert_eq!(pages, items.len().div_ceil(2));
    let first = item(&items, &a);
    assert_eq!(first["department"], "Sales");
    assert_eq!(first["displayName"], "User dl-a");
    assert!(
        first.get("userPrincipalName").is_none(),
        "only what $select names: {first}"
    );

    // Nothing changed: one page, no items, a new deltaLink.
    let (items, pages, link) = round(&t, &link).await;
    assert_eq!((items.len(), pages), (0, 1), "{items:?}");

    // A tracked change, an untracked one, a manager.
    assert_eq!(
        t.patch(&format!("/users/{a}"), json!({"department": "Legal"}))
            .await
            .status,
        204
    );
    assert_eq!(
        t.patch(&format!("/users/{b}"), json!({"jobTitle": "Boss"}))
            .await
            .status,
        204
    );
    set_manager(&t, &c, &a).await;
    let (items, _, link) = round(&t, &link).await;
    assert_eq!(ids(&items), {
        let mut v = vec![a.clone(), c.clone()];
        v.sort();
        v
    });
    let changed = item(&items, &a);
    assert_eq!(changed["department"], "Legal");
    assert_eq!(
        changed["displayName"], "User dl-a",
        "all selected properties by default"
    );
    assert_eq!(
        item(&items, &c)["manager@delta"],
        json!([{"@odata.type": "#microsoft.graph.user", "id": a}])
    );

    // return=minimal: only what changed, a cleared property as null.
    assert_eq!(
        t.patch(&format!("/users/{b}"), json!({"department": null}))
            .await
            .status,
        204
    );
    let (items, _, link) = round_with(&t, &link, true).await;
    assert_eq!(items, vec![json!({"id": b, "department": null})]);

    // The manager removed.
    assert_eq!(
        t.delete(&format!("/users/{c}/manager/$ref")).await.status,
        204
    );
    let (items, _, _) = round_with(&t, &link, true).await;
    assert_eq!(
        items,
        vec![json!({"id": c, "manager@delta": [
            {"@odata.type": "#microsoft.graph.user", "id": a, "@removed": {"reason": "deleted"}}
        ]})]
    );
}

#[tokio::test]
async fn deletions_show_as_removed_changed_then_deleted_and_a_restore_as_the_object() {
    let t = start().await;
    let a = t.create_user("dl-del", json!({})).await;
    let b = t.create_user("dl-gone", json!({})).await;
    let (_, _, link) = round(&t, "/users/delta?$select=displayName").await;

    assert_eq!(t.delete(&format!("/users/{a}")).await.status, 204);
    assert_eq!(t.delete(&format!("/users/{b}")).await.status, 204);
    let (items, _, link) = round(&t, &link).await;
    assert_eq!(item(&items, &a)["@removed"], json!({"reason": "changed"}));
    assert_eq!(items.len(), 2, "{items:?}");

    let r = t
        .post(&format!("/directory/deletedItems/{a}/restore"), json!({}))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        t.delete(&format!("/directory/deletedItems/{b}"))
            .await
            .status,
        204
    );
    let (items, _, _) = round(&t, &link).await;
    assert_eq!(
        item(&items, &b),
        &json!({"id": b, "@removed": {"reason": "deleted"}})
    );
    let restored = item(&items, &a);
    assert_eq!(restored["displayName"], "User dl-del");
    assert!(restored.get("@removed").is_none(), "{restored}");

    // A new round one lists the soft-deleted as removed too.
    assert_eq!(t.delete(&format!("/users/{a}")).await.status, 204);
    let (items, _, _) = round(&t, "/users/delta?$select=displayName").await;
    assert_eq!(item(&items, &a)["@removed"], json!({"reason": "changed"}));
}

async fn create_group(t: &T, nick: &str) -> String {
    let r = t
        .post(
            "/groups",
            json!({"displayName": nick, "mailEnabled": false, "mailNickname": nick, "securityEnabled": true}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    r.body["id"].as_str().unwrap().to_owned()
}

async fn add_member(t: &T, group: &str, user: &str) {
    let r = t
        .post(
            &format!("/groups/{group}/members/$ref"),
            json!({"@odata.id": format!("https://graph.microsoft.com/v1.0/directoryObjects/{user}")}),
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.body);
}

#[tokio::test]
async fn group_members_come_as_members_delta_split_across_pages() {
    let t = start().await;
    delta_page_size(&t, 2);
    let g = create_group(&t, "dl-group").await;
    let mut users = Vec::new();
    for n in 0..5 {
        let u = t.create_user(&format!("dl-m{n}"), json!({})).await;
        add_member(&t, &g, &u).await;
        users.push(u);
    }
    let (items, _, link) = round(
        &t,
        &format!("/groups/delta?$select=displayName,members&$filter=id eq '{g}'"),
    )
    .await;
    // Five members over pages of two: the group three times, each with a slice.
    assert_eq!(items.len(), 3, "{items:?}");
    let mut members: Vec<String> = Vec::new();
    for i in &items {
        assert_eq!(i["id"], g.as_str());
        assert_eq!(i["displayName"], "dl-group");
        for m in i["members@delta"].as_array().unwrap() {
            assert_eq!(m["@odata.type"], "#microsoft.graph.user");
            members.push(m["id"].as_str().unwrap().to_owned());
        }
    }
    members.sort();
    let mut expected = users.clone();
    expected.sort();
    assert_eq!(members, expected);

    // One added, one removed; a rename alone of another group is outside the filter.
    let extra = t.create_user("dl-extra", json!({})).await;
    add_member(&t, &g, &extra).await;
    assert_eq!(
        t.delete(&format!("/groups/{g}/members/{}/$ref", users[0]))
            .await
            .status,
        204
    );
    let (items, _, link) = round_with(&t, &link, true).await;
    assert_eq!(
        items,
        vec![json!({"id": g, "members@delta": [
            {"@odata.type": "#microsoft.graph.user", "id": extra},
            {"@odata.type": "#microsoft.graph.user", "id": users[0], "@removed": {"reason": "deleted"}}
        ]})]
    );

    // A purged user leaves the group: its removal shows in members@delta.
    assert_eq!(t.delete(&format!("/users/{}", users[1])).await.status, 204);
    let (items, _, link) = round(&t, &link).await;
    assert_eq!(
        items.len(),
        0,
        "a soft-deleted member keeps its membership: {items:?}"
    );
    assert_eq!(
        t.delete(&format!("/directory/deletedItems/{}", users[1]))
            .await
            .status,
        204
    );
    let (items, _, _) = round_with(&t, &link, true).await;
    assert_eq!(
        items,
        vec![json!({"id": g, "members@delta": [
            {"@odata.type": "#microsoft.graph.user", "id": users[1], "@removed": {"reason": "deleted"}}
        ]})]
    );
}

#[tokio::test]
async fn latest_starts_from_now_and_both_paths_answer() {
    let t = start().await;
    let r = t
        .get("/users/delta?$deltatoken=latest&$select=displayName")
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["value"], json!([]));
    assert!(r.body.get("@odata.nextLink").is_none());
    let link = r.body["@odata.deltaLink"].as_str().unwrap().to_owned();
    let a = t.create_user("dl-late", json!({})).await;
    let (items, _, _) = round(&t, &link).await;
    assert_eq!(ids(&items), vec![a.clone()]);

    let (items, _, _) = round(&t, "/users/microsoft.graph.delta?$select=displayName").await;
    assert_eq!(ids(&items), live_user_ids(&t));
    let r = t.get("/groups/delta?$deltaToken=latest").await;
    assert_eq!(r.status, 200, "{}", r.body);
}

#[tokio::test]
async fn options_delta_cannot_serve_are_refused_as_graph_does() {
    let t = start().await;
    let r = t.get("/users/delta?$filter=displayName eq 'x'").await;
    assert_error(&r, 400, "Request_UnsupportedQuery", "Unsupported Query.");
    let many: Vec<String> = (0..51).map(|i| format!("id eq '{i}'")).collect();
    let r = t
        .get(&format!("/users/delta?$filter={}", many.join(" or ")))
        .await;
    assert_error(&r, 400, "Request_UnsupportedQuery", "Unsupported Query.");
    let r = t.get("/users/delta?$orderby=displayName").await;
    assert_error(&r, 400, "Request_UnsupportedQuery", "Unsupported Query.");
    let r = t.get("/users/delta?$select=displayName,birthday").await;
    assert_error(
        &r,
        400,
        "BadRequest",
        "Invalid request for delta query: for this entity set, $expand/$select is not supported for the following properties: birthday",
    );
    let r = t.get("/users/delta?$expand=manager").await;
    assert_eq!(r.status, 400, "{}", r.body);
    let r = t.get("/users/delta?$select=noSuchProperty").await;
    assert_eq!(r.status, 400, "{}", r.body);
    // `$top` is ignored, not refused.
    let r = t.get("/users/delta?$top=1&$select=displayName").await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body["value"].as_array().unwrap().len() > 1, "{}", r.body);

    let r = t.get("/users/delta?$deltatoken=garbage").await;
    assert_error(
        &r,
        400,
        "resyncRequired",
        "The delta token is not valid. The application must reset the sync state and start a new round.",
    );
    // A users token does not open groups.
    let (_, _, link) = round(&t, "/users/delta?$select=displayName").await;
    let token = link.split("$deltatoken=").nth(1).unwrap();
    let r = t.get(&format!("/groups/delta?$deltatoken={token}")).await;
    assert_eq!(r.status, 400, "{}", r.body);
}

#[tokio::test]
async fn an_expired_token_and_a_sync_reset_send_the_caller_back_to_round_one() {
    let t = start().await;
    let (_, _, link) = round(&t, "/users/delta?$select=displayName,department").await;

    let mut knobs: Knobs = t.rs.sandbox().knobs();
    knobs.delta.token_lifetime_secs = 0;
    t.rs.sandbox().set_knobs(knobs.clone());
    let r = t.get(&link).await;
    assert_error(
        &r,
        400,
        "syncStateNotFound",
        "The sync state generation is not found. The delta token is expired and data must be synchronized again.",
    );

    // Changes older than a token can live are dropped at the next write: the log does not grow
    // without end.
    t.create_user("dl-after", json!({})).await;
    let changes = &t.rs.sandbox().dump()["changes"];
    assert!(
        changes["compactedThrough"].as_u64().unwrap() > 0,
        "{changes}"
    );
    assert_eq!(
        changes["users"].as_array().map(Vec::len),
        Some(1),
        "only the write just made: {changes}"
    );

    knobs.delta.token_lifetime_secs = 3600;
    knobs.delta.reset_generation += 1;
    t.rs.sandbox().set_knobs(knobs);
    let r = t.get(&link).await;
    assert_eq!(r.status, 410, "{}", r.body);
    assert_eq!(r.body["error"]["code"], "resyncRequired");
    let location = r.headers["location"].to_str().unwrap().to_owned();
    assert!(
        location.ends_with("/v1.0/users/delta?$select=displayName,department"),
        "{location}"
    );
    let (items, _, _) = round(&t, &location).await;
    assert_eq!(ids(&items), live_user_ids(&t));
}
