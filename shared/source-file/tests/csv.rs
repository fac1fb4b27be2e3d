//! The CSV format: multi-values, empty cells, quoting, enabled variants, per-record errors with
//! line numbers, unreadable files.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests fail loudly on a broken expectation"
)]

mod common;

use common::{fixture, record_error, source, unavailable, unreadable, whole};
use m365_core::{AttrValue, Attributes, Source, SourceError, SourceGroup, SourceUser};
use m365_source_file::{FileFormat, FileSource, FileSourceConfig};

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

const BJENSEN_DN: &str = "cn=Barbara Jensen,ou=People,dc=example,dc=com";

#[tokio::test]
async fn cells_become_text_lists_or_nothing_and_quoted_dns_keep_their_commas() {
    let page = whole(&source(&fixture("csv/valid"))).await;
    assert_eq!(
        page.users,
        vec![
            user(
                "u1",
                true,
                attrs(&[
                    ("mail", text("bjensen@example.com")),
                    ("displayName", text("Barbara Jensen")),
                    ("dn", text(BJENSEN_DN)),
                    // empty "manager" cell: absent
                    (
                        "proxyAddresses",
                        list(&["SMTP:bjensen@example.com", "smtp:bj@example.com"])
                    ),
                    ("department", text("Finance")),
                ])
            ),
            user(
                "u2",
                true,
                attrs(&[
                    ("mail", text("jdoe@example.com")),
                    ("displayName", text("Doe, John")),
                    ("dn", text("cn=John Doe,ou=People,dc=example,dc=com")),
                    ("manager", text(BJENSEN_DN)),
                    // one value, no ';': text
                    ("proxyAddresses", text("smtp:jdoe@example.com")),
                ])
            ),
            user(
                "u3",
                true,
                attrs(&[
                    ("mail", text("ann@example.com")),
                    ("displayName", text("Ann")),
                    ("dn", text("cn=Ann,ou=People,dc=example,dc=com")),
                    ("manager", text(BJENSEN_DN)),
                    // " a@example.com ; ;b@example.com ": items trimmed, empty items dropped
                    ("proxyAddresses", list(&["a@example.com", "b@example.com"])),
                    ("department", text("Sales")),
                ])
            ),
            user("u4", true, Attributes::new()),
            user("u5", false, attrs(&[("mail", text("e@example.com"))])),
            user("u6", false, attrs(&[("mail", text("f@example.com"))])),
            user("u7", false, attrs(&[("mail", text("g@example.com"))])),
            user(
                "u8",
                false,
                attrs(&[
                    ("mail", text("h@example.com")),
                    ("displayName", text("Multi\nLine")),
                ])
            ),
            user("u9", true, attrs(&[("mail", text("i@example.com"))])),
        ]
    );
}

#[tokio::test]
async fn csv_groups_split_members_and_drop_unknown_ones() {
    let page = whole(&source(&fixture("csv/valid"))).await;
    assert_eq!(
        page.groups,
        vec![
            group(
                "g1",
                "Accounting",
                &["u1", "u2"],
                attrs(&[("description", text("Finance people"))])
            ),
            group("g2", "Sales, EMEA", &["u3", "u4"], Attributes::new()),
            group("g3", "Empty", &[], Attributes::new()),
        ]
    );
    assert_eq!(
        page.errors,
        vec![record_error(
            "groups.csv line 2",
            Some("g1"),
            "group \"g1\" (Accounting): unknown member \"u404\" (no user has this id); the group \
             is synced without it"
        )]
    );
}

#[tokio::test]
async fn the_location_may_name_users_csv_itself_or_end_with_a_slash() {
    let by_dir = whole(&source(&fixture("csv/valid"))).await;
    let by_slash = whole(&source(&fixture("csv/valid/"))).await;
    let by_file = whole(&source(&fixture("csv/valid/users.csv"))).await;
    assert_eq!(by_slash, by_dir);
    assert_eq!(by_file, by_dir);
}

#[tokio::test]
async fn every_broken_row_is_an_error_naming_its_line_and_the_rest_syncs() {
    let page = whole(&source(&fixture("csv/errors"))).await;
    let dup = |id: &str, here: &str, other: &str| {
        record_error(
            here,
            Some(id),
            &format!(
                "duplicate id \"{id}\" (also at {other}); every record with this id is skipped \
                 and the identity is left unchanged until the file has only one"
            ),
        )
    };
    assert_eq!(
        page.users,
        vec![user("u8", true, attrs(&[("mail", text("h@example.com"))]))]
    );
    assert_eq!(
        page.groups,
        vec![group(
            "g1",
            "Accounting",
            &["u1", "u8", "u4"],
            Attributes::new()
        )]
    );
    assert_eq!(
        page.errors,
        vec![
            record_error(
                "groups.csv line 2",
                Some("g1"),
                "group \"g1\" (Accounting): unknown member \"u404\" (no user has this id); the \
                 group is synced without it"
            ),
            record_error("groups.csv line 3", Some("g2"), "empty name"),
            record_error("groups.csv line 4", None, "empty id (column \"id\")"),
            dup("g4", "groups.csv line 5", "groups.csv line 6"),
            dup("g4", "groups.csv line 6", "groups.csv line 5"),
            dup("u1", "users.csv line 2", "users.csv line 4"),
            record_error("users.csv line 3", None, "empty id (column \"id\")"),
            dup("u1", "users.csv line 4", "users.csv line 2"),
            record_error(
                "users.csv line 5",
                Some("u4"),
                "enabled value \"maybe\" is neither true (true, 1, yes, enabled) nor false \
                 (false, 0, no, disabled)"
            ),
            // A row of the wrong width may have shifted columns: its id is not trusted.
            record_error(
                "users.csv line 6",
                None,
                "expected 3 fields like the header, found 2"
            ),
            record_error(
                "users.csv line 7",
                Some("u6"),
                "empty enabled value (column \"enabled\")"
            ),
            record_error(
                "users.csv line 8",
                None,
                "expected 3 fields like the header, found 4"
            ),
        ]
    );
}

#[tokio::test]
async fn a_row_with_invalid_utf8_is_a_record_error_and_later_rows_still_sync() {
    let page = whole(&source(&fixture("csv/bad_utf8"))).await;
    let ids: Vec<&str> = page.users.iter().map(|u| u.id.as_str()).collect();
    assert_eq!(ids, ["u1", "u3"]);
    assert_eq!(
        page.errors,
        vec![record_error("users.csv line 3", None, "not valid UTF-8")]
    );
}

#[tokio::test]
async fn a_utf8_bom_does_not_hide_the_id_column() {
    let page = whole(&source(&fixture("csv/bom"))).await;
    assert_eq!(
        page.users,
        vec![user("u1", true, attrs(&[("mail", text("a@example.com"))]))]
    );
}

#[tokio::test]
async fn custom_id_and_enabled_columns_and_values() {
    let mut config = FileSourceConfig::new(fixture("csv/custom/hr-users.csv"));
    config.id_column = "employeeId".into();
    config.enabled_column = "status".into();
    config.enabled_values = vec!["A".into()];
    config.disabled_values = vec!["I".into()];
    let page = whole(&FileSource::local(config).unwrap()).await;
    assert_eq!(
        page.users,
        vec![
            // A column named "id" that is not the id column is an ordinary attribute.
            user(
                "E1",
                true,
                attrs(&[("mail", text("a@example.com")), ("id", text("legacy-1"))])
            ),
            user(
                "E2",
                false,
                attrs(&[("mail", text("b@example.com")), ("id", text("legacy-2"))])
            ),
        ]
    );
    // E3 is in error but known: it stays a member.
    assert_eq!(
        page.groups,
        vec![group("gx", "Everyone", &["E1", "E2"], Attributes::new())]
    );
    assert_eq!(
        page.errors,
        vec![record_error(
            "users.csv line 4",
            Some("E3"),
            "enabled value \"T\" is neither true (A) nor false (I)"
        )]
    );
}

#[tokio::test]
async fn without_groups_csv_and_groups_false_there_are_no_groups() {
    let config = FileSourceConfig {
        groups: false,
        ..FileSourceConfig::new(fixture("csv/no_groups"))
    };
    let page = whole(&FileSource::local(config).unwrap()).await;
    assert_eq!(page.users.len(), 2);
    assert_eq!(page.groups, vec![]);
    assert_eq!(page.errors, vec![]);
}

#[tokio::test]
async fn without_groups_csv_the_group_snapshot_is_incomplete() {
    let dir = fixture("csv/no_groups");
    let source = source(&dir);
    let page = whole(&source).await;
    assert_eq!(page.users.len(), 2);
    assert_eq!(page.groups, vec![]);
    // A group error without an id: the engine sweeps no group on this snapshot.
    assert_eq!(page.errors.len(), 1, "{:?}", page.errors);
    let error = &page.errors[0];
    assert_eq!(error.kind, m365_core::ObjectKind::Group);
    assert_eq!(error.source_id, None);
    assert_eq!(error.location, format!("{dir}/groups.csv"));
    for fragment in [
        "there is no groups.csv",
        "incomplete",
        "no group or membership is deprovisioned",
        "`groups = false`",
    ] {
        assert!(error.message.contains(fragment), "{fragment}: {error:?}");
    }
    // Nor can a group be looked up: "not found" would read as "deleted".
    let SourceError::Unreadable(message) = source.fetch_group("g1").await.unwrap_err() else {
        panic!("expected Unreadable");
    };
    assert!(message.contains("there is no groups.csv"), "{message}");
}

#[tokio::test]
async fn groups_false_with_a_groups_csv_is_unreadable() {
    let dir = fixture("csv/valid");
    let config = FileSourceConfig {
        groups: false,
        ..FileSourceConfig::new(dir.clone())
    };
    let message = unreadable(
        FileSource::local(config)
            .unwrap()
            .snapshot_page(None, 10)
            .await,
    );
    assert!(
        message.starts_with(&format!("{dir}/groups.csv: ")),
        "{message}"
    );
    assert!(message.contains("`groups = false`"), "{message}");
}

#[tokio::test]
async fn csv_without_the_id_column_is_unreadable_naming_file_and_column() {
    let dir = fixture("csv/no_id_column");
    let message = unreadable(source(&dir).snapshot_page(None, 10).await);
    assert_eq!(
        message,
        format!(
            "users.csv ({dir}/users.csv): no \"id\" column in the header (columns: uid, enabled, \
             mail); set `id_column` to the id column's name"
        )
    );
}

#[tokio::test]
async fn csv_without_the_enabled_column_is_unreadable() {
    let dir = fixture("csv/no_enabled_column");
    let message = unreadable(source(&dir).snapshot_page(None, 10).await);
    assert_eq!(
        message,
        format!(
            "users.csv ({dir}/users.csv): no \"enabled\" column in the header (columns: id, \
             mail); set `enabled_column` to the enabled column's name"
        )
    );
}

#[tokio::test]
async fn an_empty_users_csv_is_unreadable() {
    let dir = fixture("csv/empty");
    let message = unreadable(source(&dir).snapshot_page(None, 10).await);
    assert_eq!(
        message,
        format!("users.csv ({dir}/users.csv): empty file (no header row)")
    );
}

#[tokio::test]
async fn a_groups_csv_without_members_column_is_unreadable() {
    let dir = fixture("csv/broken_groups");
    let message = unreadable(source(&dir).snapshot_page(None, 10).await);
    assert_eq!(
        message,
        format!(
            "groups.csv ({dir}/groups.csv): no \"members\" column in the header (columns: id, \
             name)"
        )
    );
}

#[tokio::test]
async fn a_missing_users_csv_is_unavailable_naming_the_path() {
    let dir = fixture("csv/nowhere");
    let message = unavailable(source(&dir).snapshot_page(None, 10).await);
    assert_eq!(message, format!("{dir}/users.csv: file not found"));
}

#[tokio::test]
async fn csv_fetch_user_and_group() {
    let source = source(&fixture("csv/valid"));
    assert_eq!(
        source.fetch_user("u9").await.unwrap(),
        Some(user("u9", true, attrs(&[("mail", text("i@example.com"))])))
    );
    assert_eq!(source.fetch_user("u10").await.unwrap(), None);
    assert_eq!(
        source.fetch_group("g2").await.unwrap(),
        Some(group("g2", "Sales, EMEA", &["u3", "u4"], Attributes::new()))
    );
    let errors = FileSource::local(FileSourceConfig::new(fixture("csv/errors"))).unwrap();
    match errors.fetch_user("u6").await {
        Err(SourceError::Unreadable(m)) => assert_eq!(
            m,
            format!(
                "user \"u6\" in {}: users.csv line 7: empty enabled value (column \"enabled\")",
                fixture("csv/errors")
            )
        ),
        other => panic!("expected Unreadable, got {other:?}"),
    }
}

#[tokio::test]
async fn format_csv_forces_csv_even_for_a_json_looking_location() {
    let mut config = FileSourceConfig::new(fixture("json/valid.json"));
    config.format = FileFormat::Csv;
    let message = unavailable(
        FileSource::local(config)
            .unwrap()
            .snapshot_page(None, 10)
            .await,
    );
    assert_eq!(
        message,
        format!(
            "{}/users.csv: Not a directory (os error 20)",
            fixture("json/valid.json")
        )
    );
}

#[tokio::test]
async fn an_excel_export_with_semicolons_in_windows_1252_reads_with_its_delimiter_and_encoding() {
    let dir = fixture("csv/excel");
    let config = FileSourceConfig {
        delimiter: ';',
        encoding: m365_source_file::CsvEncoding::Windows1252,
        ..FileSourceConfig::new(dir.clone())
    };
    config.validate().unwrap();
    let page = whole(&FileSource::local(config).unwrap()).await;
    assert_eq!(page.errors, vec![]);
    assert_eq!(
        page.users,
        vec![
            user(
                "u1",
                true,
                attrs(&[
                    ("displayName", text("Zoë Müller")),
                    ("department", text("Ventes")),
                    // A quoted cell holding ';' is still a list.
                    ("costCentre", list(&["FR-12", "FR-13"])),
                ])
            ),
            user(
                "u2",
                false,
                attrs(&[
                    ("displayName", text("José Núñez")),
                    ("department", text("Finanzas")),
                    ("costCentre", text("€ 4")),
                ])
            ),
        ]
    );
    assert_eq!(
        page.groups,
        vec![group("g1", "Équipe Paris", &["u1", "u2"], attrs(&[]))]
    );

    // Read with the defaults, the header is one column, and the error says which setting to set.
    let message = unreadable(source(&dir).snapshot_page(None, 10).await);
    assert!(message.contains("no \"id\" column"), "{message}");
    assert!(message.contains("delimiter = \";\""), "{message}");
}

#[test]
fn a_delimiter_that_cannot_separate_cells_is_refused_naming_the_key() {
    for bad in ['"', '\n', 'é'] {
        let config = FileSourceConfig {
            delimiter: bad,
            ..FileSourceConfig::new("exports/")
        };
        let message = config.validate().unwrap_err().to_string();
        assert!(message.contains("`delimiter`"), "{message}");
    }
    for good in [',', ';', '\t', '|'] {
        let config = FileSourceConfig {
            delimiter: good,
            ..FileSourceConfig::new("exports/")
        };
        assert_eq!(config.validate(), Ok(()));
    }
}
