//! `$orderby` on `GET /users` and `GET /groups` as Graph answers it without an advanced query:
//! `displayName` (users, groups) and `userPrincipalName` (users), ascending or descending, paged
//! through `@odata.nextLink`; any other sort, or a sort with `$filter`, is refused
//! (<https://learn.microsoft.com/en-us/graph/aad-advanced-queries>).

// Integration tests: helpers panic on broken expectations.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use serde_json::{Value, json};

/// Every page of `path`, following `@odata.nextLink` as given; the values of `property`.
async fn all_pages(t: &T, path: &str, property: &str) -> (Vec<String>, usize) {
    let mut values = Vec::new();
    let mut pages = 0;
    let mut next = Some(t.url(path));
    while let Some(url) = next {
        let path = url.split("/v1.0").nth(1).unwrap().to_owned();
        let r = t.get(&path).await;
        assert_eq!(r.status, 200, "{}", r.body);
        pages += 1;
        for v in r.body["value"].as_array().unwrap() {
            values.push(v[property].as_str().unwrap().to_owned());
        }
        next = r.body["@odata.nextLink"].as_str().map(str::to_owned);
    }
    (values, pages)
}

fn sorted(mut values: Vec<String>, descending: bool) -> Vec<String> {
    values.sort_by_key(|v| v.to_lowercase());
    if descending {
        values.reverse();
    }
    values
}

#[tokio::test]
async fn users_sort_by_display_name_and_upn_across_pages() {
    let t = start().await;
    for (nick, name) in [
        ("zed", "zed Last"),
        ("amy", "Amy First"),
        ("mo", "mo Middle"),
    ] {
        t.create_user(nick, json!({"displayName": name})).await;
    }
    let (unsorted, _) = all_pages(&t, "/users?$select=displayName", "displayName").await;
    assert!(unsorted.len() >= 5, "{unsorted:?}");
    assert_ne!(
        unsorted,
        sorted(unsorted.clone(), false),
        "creation order is not sorted"
    );

    let (names, pages) = all_pages(&t, "/users?$orderby=displayName&$top=2", "displayName").await;
    assert_eq!(names, sorted(unsorted.clone(), false));
    assert_eq!(pages, unsorted.len().div_ceil(2));
    let (names, _) = all_pages(
        &t,
        "/users?$orderby=displayName%20desc&$top=2",
        "displayName",
    )
    .await;
    assert_eq!(names, sorted(unsorted.clone(), true));
    let (upns, _) = all_pages(&t, "/users?$orderby=userPrincipalName", "userPrincipalName").await;
    assert_eq!(upns, sorted(upns.clone(), false));
    assert_eq!(upns.len(), unsorted.len());
}

#[tokio::test]
async fn groups_sort_by_display_name() {
    let t = start().await;
    for name in ["Zulu team", "alpha team"] {
        let body = json!({
            "displayName": name, "mailEnabled": false, "mailNickname": name.replace(' ', ""),
            "securityEnabled": true
        });
        assert_eq!(t.post("/groups", body).await.status, 201);
    }
    let (names, _) = all_pages(&t, "/groups?$orderby=displayName", "displayName").await;
    assert_eq!(names, sorted(names.clone(), false));
    assert!(names.len() >= 2);
}

#[tokio::test]
async fn other_sorts_and_a_sort_with_a_filter_are_refused_as_graph_refuses_them() {
    let t = start().await;
    let refused = [
        "/users?$orderby=department",
        "/users?$orderby=displayName%20sideways",
        "/users?$orderby=displayName,userPrincipalName",
        "/groups?$orderby=userPrincipalName",
        "/users?$orderby=displayName&$filter=startswith(displayName,'a')",
    ];
    for path in refused {
        let r = t.get(path).await;
        assert_error(
            &r,
            400,
            "Request_UnsupportedQuery",
            "Sorting not supported for current query.",
        );
        assert_eq!(r.body["value"], Value::Null, "{path}");
    }
}
