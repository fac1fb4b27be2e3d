//! The JSON format: typed attributes, per-record errors, unreadable files, lookups by id.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests fail loudly on a broken expectation"
)]

mod common;

use common::{fixture, record_error, source, unreadable, whole};
use m365_core::{AttrValue, Attributes, Source, SourceError, SourceGroup, SourceUser};

fn text(s: &str) -> AttrValue {
    AttrValue::Text(s.to_owned())
}

fn list(items: &[&str]) -> AttrValue {
    AttrValue::List(items.iter().map(|s| (*s).to_owned()).collect())
}

fn attrs(pairs: &[(&str, AttrValue)]) -> Attributes {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), v.clone()))
        .collect()
}

fn user(id: &str, enabled: bool, attributes: Attributes) -> SourceUser {
    SourceUser {
        id: id.to_owned(),
        enabled,
        attributes,
    }
}

fn group(id: &str, name: &str, members: &[&str], attributes: Attributes) -> SourceGroup {
    SourceGroup {
        id: id.to_owned(),
        name: name.to_owned(),
        members: members.iter().map(|s| (*s).to_owned()).collect(),
        attributes,
    }
}

#[tokio::test]
async fn attributes_keep_their_json_types() {
    let page = whole(&source(&fixture("json/valid.json"))).await;
    assert_eq!(
        page.users,
        vec![
            user(
                "u1",
                true,
                attrs(&[
                    ("mail", text("bjensen@example.com")),
                    ("displayName", text("Barbara Jensen")),
                    ("dn", text("cn=Barbara Jensen,ou=People,dc=example,dc=com")),
                    ("employeeNumber", AttrValue::Int(1001)),
                    ("ratio", AttrValue::Float(0.75)),
                    ("vip", AttrValue::Bool(true)),
                    (
                        "proxyAddresses",
                        list(&["SMTP:bjensen@example.com", "smtp:bj@example.com"])
                    ),
                    ("skuId", list(&[])),
                    ("objectGUID", AttrValue::Binary(b"foo".to_vec())),
                    // "nickname": null is an absent attribute.
                ])
            ),
            user(
                "u2",
                false,
                attrs(&[
                    ("mail", text("jdoe@example.com")),
                    ("dn", text("cn=John Doe,ou=People,dc=example,dc=com")),
                    (
                        "manager",
                        text("cn=Barbara Jensen,ou=People,dc=example,dc=com")
                    ),
                ])
            ),
            user(
                "u3",
                true,
                attrs(&[("mail", text("ann@example.com")), ("managerId", text("u1"))])
            ),
            user("u4", false, Attributes::new()),
            user("u5", true, Attributes::new()),
        ]
    );
}

#[tokio::test]
async fn groups_lose_unknown_members_and_say_so() {
    let page = whole(&source(&fixture("json/valid.json"))).await;
    assert_eq!(
        page.groups,
        vec![
            // "u404" is unknown; the repeated "u1" is kept once.
            group("g1", "Accounting", &["u1", "u2"], Attributes::new()),
            group(
                "g2",
                "Sales",
                &[],
                attrs(&[("description", text("Sales team"))])
            ),
        ]
    );
    assert_eq!(
        page.errors,
        vec![record_error(
            "groups[0]",
            Some("g1"),
            "group \"g1\" (Accounting): unknown member \"u404\" (no user has this id); the group \
             is synced without it"
        )]
    );
}

#[tokio::test]
async fn every_broken_record_is_an_error_naming_its_index_and_the_rest_syncs() {
    let page = whole(&source(&fixture("json/errors.json"))).await;
    let dup_u1 = |here: &str, other: &str| {
        record_error(
            here,
            Some("u1"),
            &format!(
                "duplicate id \"u1\" (also at {other}); every record with this id is skipped and \
                 the identity is left unchanged until the file has only one"
            ),
        )
    };
    let dup_g3 = |here: &str, other: &str| {
        record_error(
            here,
            Some("g3"),
            &format!(
                "duplicate id \"g3\" (also at {other}); every record with this id is skipped and \
                 the identity is left unchanged until the file has only one"
            ),
        )
    };
    assert_eq!(
        page.users,
        vec![user("u7", true, attrs(&[("mail", text("ok@example.com"))]))]
    );
    // Members whose user record is in error (u1 duplicated, u4 bad enabled) stay members: those
    // identities are left unchanged, memberships included.
    assert_eq!(
        page.groups,
        vec![group(
            "g1",
            "Accounting",
            &["u1", "u7", "u4"],
            Attributes::new()
        )]
    );
    assert_eq!(
        page.errors,
        vec![
            record_error(
                "groups[0]",
                Some("g1"),
                "group \"g1\" (Accounting): unknown member \"u404\" (no user has this id); the \
                 group is synced without it"
            ),
            record_error("groups[1]", Some("g2"), "missing \"name\""),
            dup_g3("groups[2]", "groups[3]"),
            dup_g3("groups[3]", "groups[2]"),
            record_error(
                "groups[4]",
                Some("g5"),
                "members[1] must be a user id (a non-empty string), found number"
            ),
            record_error("groups[5]", None, "missing \"id\""),
            dup_u1("users[0]", "users[3]"),
            record_error("users[1]", None, "missing \"id\""),
            record_error("users[2]", None, "empty id"),
            dup_u1("users[3]", "users[0]"),
            record_error(
                "users[4]",
                Some("u4"),
                "enabled value \"maybe\" is neither true (true, 1, yes, enabled) nor false \
                 (false, 0, no, disabled)"
            ),
            record_error(
                "users[5]",
                Some("u5"),
                "attribute \"address\": unsupported value type object (expected a string, \
                 number, bool, list of strings or {\"base64\": \"...\"})"
            ),
            record_error(
                "users[6]",
                Some("u6"),
                "attribute \"tags\": list items must be strings, found list at index 1"
            ),
            record_error("users[8]", None, "\"id\" must be a string, found number"),
            record_error("users[9]", Some("u9"), "missing \"enabled\""),
            record_error(
                "users[10]",
                Some("u10"),
                "unknown key \"name\" (expected \"id\", \"enabled\", \"attributes\")"
            ),
            record_error("users[11]", None, "expected an object, found string"),
        ]
    );
}

#[tokio::test]
async fn unparseable_json_is_unreadable_naming_the_file_and_position() {
    let path = fixture("json/broken.json");
    let message = unreadable(source(&path).snapshot_page(None, 10).await);
    assert_eq!(
        message,
        format!("{path}: invalid JSON: EOF while parsing a value at line 2 column 29")
    );
}

#[tokio::test]
async fn a_file_without_a_users_list_is_unreadable() {
    let path = fixture("json/no_users.json");
    let message = unreadable(source(&path).snapshot_page(None, 10).await);
    assert_eq!(
        message,
        format!("{path}: no \"users\" list at the top level")
    );
}

#[tokio::test]
async fn a_misspelt_top_level_key_is_unreadable_not_an_empty_list() {
    let path = fixture("json/unknown_key.json");
    let message = unreadable(source(&path).snapshot_page(None, 10).await);
    assert_eq!(
        message,
        format!("{path}: unknown top-level key \"group\" (expected \"users\" and \"groups\")")
    );
}

#[tokio::test]
async fn a_top_level_list_is_unreadable() {
    let path = fixture("json/array.json");
    let message = unreadable(source(&path).snapshot_page(None, 10).await);
    assert_eq!(
        message,
        format!(
            "{path}: expected an object {{\"users\": [...], \"groups\": [...]}} at the top level, \
             found list"
        )
    );
}

#[tokio::test]
async fn fetch_user_and_group_read_the_current_file() {
    let path = fixture("json/valid.json");
    let source = source(&path);
    let u2 = source.fetch_user("u2").await.unwrap().unwrap();
    assert_eq!(u2.id, "u2");
    assert!(!u2.enabled);
    assert_eq!(
        u2.attributes["manager"],
        text("cn=Barbara Jensen,ou=People,dc=example,dc=com")
    );
    assert_eq!(source.fetch_user("nobody").await.unwrap(), None);
    assert_eq!(
        source.fetch_group("g1").await.unwrap(),
        Some(group("g1", "Accounting", &["u1", "u2"], Attributes::new()))
    );
    assert_eq!(source.fetch_group("nothing").await.unwrap(), None);
}

#[tokio::test]
async fn fetch_of_a_record_in_error_is_an_error_not_absent() {
    let path = fixture("json/errors.json");
    let source = source(&path);
    assert_eq!(
        source.fetch_user("u7").await.unwrap(),
        Some(user("u7", true, attrs(&[("mail", text("ok@example.com"))])))
    );
    match source.fetch_user("u1").await {
        Err(SourceError::Unreadable(m)) => assert_eq!(
            m,
            format!(
                "user \"u1\" in {path}: users[0]: duplicate id \"u1\" (also at users[3]); every \
                 record with this id is skipped and the identity is left unchanged until the file \
                 has only one"
            )
        ),
        other => panic!("expected Unreadable, got {other:?}"),
    }
    match source.fetch_user("u4").await {
        Err(SourceError::Unreadable(m)) => assert_eq!(
            m,
            format!(
                "user \"u4\" in {path}: users[4]: enabled value \"maybe\" is neither true (true, \
                 1, yes, enabled) nor false (false, 0, no, disabled)"
            )
        ),
        other => panic!("expected Unreadable, got {other:?}"),
    }
    // Four user records have no readable id: "not found" cannot be trusted.
    match source.fetch_user("nobody").await {
        Err(SourceError::Unreadable(m)) => assert_eq!(
            m,
            format!(
                "user \"nobody\" not found in {path}, but 4 user record(s) have no readable id, so \
                 its absence cannot be trusted"
            )
        ),
        other => panic!("expected Unreadable, got {other:?}"),
    }
    assert_eq!(
        source.fetch_group("g1").await.unwrap(),
        Some(group(
            "g1",
            "Accounting",
            &["u1", "u7", "u4"],
            Attributes::new()
        ))
    );
    match source.fetch_group("g3").await {
        Err(SourceError::Unreadable(m)) => assert_eq!(
            m,
            format!(
                "group \"g3\" in {path}: groups[2]: duplicate id \"g3\" (also at groups[3]); \
                 every record with this id is skipped and the identity is left unchanged until \
                 the file has only one"
            )
        ),
        other => panic!("expected Unreadable, got {other:?}"),
    }
}

#[tokio::test]
async fn kind_and_capabilities() {
    let source = source(&fixture("json/valid.json"));
    assert_eq!(source.kind(), "file");
    let caps = source.capabilities();
    assert!(!caps.incremental);
    assert!(!caps.explicit_deletes);
    assert!(caps.resumable_snapshot);
    match source
        .changes(&m365_core::SourceCursor(serde_json::json!(null)), 10)
        .await
    {
        Err(SourceError::Unsupported(what)) => assert_eq!(what, "incremental changes"),
        other => panic!("expected Unsupported, got {other:?}"),
    }
}

#[tokio::test]
async fn a_file_without_groups_is_an_incomplete_group_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("users-only.json");
    let body = r#"{"users": [{"id": "u1", "enabled": true}]}"#;
    std::fs::write(&path, body).unwrap();
    let location = path.to_str().unwrap().to_owned();

    let source = source(&location);
    let page = whole(&source).await;
    assert_eq!(page.users.len(), 1);
    assert!(page.groups.is_empty());
    assert_eq!(page.errors.len(), 1, "{:?}", page.errors);
    let error = &page.errors[0];
    assert_eq!(
        (
            error.kind,
            error.source_id.as_deref(),
            error.location.as_str()
        ),
        (m365_core::ObjectKind::Group, None, location.as_str())
    );
    for fragment in [
        "no \"groups\" list",
        "incomplete",
        "add \"groups\": []",
        "`groups = false`",
    ] {
        assert!(error.message.contains(fragment), "{fragment}: {error:?}");
    }
    assert!(matches!(
        source.fetch_group("g1").await,
        Err(SourceError::Unreadable(m)) if m.contains("no \"groups\" list")
    ));

    // Said explicitly: no groups, a complete snapshot.
    let no_groups = m365_source_file::FileSourceConfig {
        groups: false,
        ..m365_source_file::FileSourceConfig::new(location.clone())
    };
    let source = m365_source_file::FileSource::local(no_groups.clone()).unwrap();
    let page = whole(&source).await;
    assert!(page.groups.is_empty() && page.errors.is_empty(), "{page:?}");
    assert_eq!(source.fetch_group("g1").await.unwrap(), None);

    // `groups = false` and a groups key contradict each other.
    std::fs::write(&path, r#"{"users": [], "groups": []}"#).unwrap();
    let source = m365_source_file::FileSource::local(no_groups).unwrap();
    let message = unreadable(source.snapshot_page(None, 10).await);
    assert!(message.starts_with(&format!("{location}: ")), "{message}");
    assert!(message.contains("`groups = false`"), "{message}");
}
