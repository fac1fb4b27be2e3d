//! The webhook event body: which identities to re-read from the source.
//!
//! A delivery's body is one JSON object (UTF-8), in one of two shapes:
//!
//! ```json
//! {"type": "user.updated", "timestamp": "2025-01-31T12:00:00Z", "data": {"id": "<source id>"}}
//! ```
//!
//! where `type` is one of `user.created`, `user.updated`, `user.deleted`, `user.upserted`,
//! `group.created`, `group.updated`, `group.deleted`, `group.upserted`, `group.members_changed`;
//! `timestamp` (when the change happened, RFC 3339) is optional; `data.id` is the identity's id in
//! the source. Or, for a batch:
//!
//! ```json
//! {"type": "identities.changed", "data": {"users": ["u1", "u2"], "groups": ["g1"]}}
//! ```
//!
//! where `users` and `groups` are each optional (at least one must be present) and may be empty.
//!
//! Events are hints, not commands: the function re-reads every named identity from the source and
//! the source's current state wins. A `user.deleted` for a user still in the source updates it; a
//! `user.updated` for a user gone from the source deprovisions it; `group.members_changed`
//! re-reads the group with its members. So the type only says which kind of identity the id
//! names, and a sender that cannot tell a create from an update sends `*.upserted`.
//!
//! Limits: at most [`MAX_IDS`] ids per event; each id non-empty, at most [`MAX_ID_BYTES`] bytes,
//! without control characters. Members the format does not name (top level or in `data`) are
//! ignored, so senders may add their own. Every rejection is an [`EventError`] whose message names
//! the field and the fix; the webhook returns it with a 400.

use std::collections::BTreeSet;

use serde_json::{Map, Value};

/// Most ids one event may name (users and groups together).
pub const MAX_IDS: usize = 1_000;
/// Longest id accepted, in bytes.
pub const MAX_ID_BYTES: usize = 1_000;

/// The single-identity event types naming a user.
pub const USER_TYPES: [&str; 4] = [
    "user.created",
    "user.updated",
    "user.deleted",
    "user.upserted",
];
/// The single-identity event types naming a group.
pub const GROUP_TYPES: [&str; 5] = [
    "group.created",
    "group.updated",
    "group.deleted",
    "group.upserted",
    "group.members_changed",
];
/// The batch event type.
pub const BATCH_TYPE: &str = "identities.changed";

const EXAMPLE: &str = r#"{"type": "user.updated", "data": {"id": "<source id>"}}"#;
const ACCEPTED_TYPES: &str = "user.created, user.updated, user.deleted, user.upserted, group.created, group.updated, group.deleted, group.upserted, group.members_changed, identities.changed";

/// The identities an event names, deduplicated.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct EventTargets {
    /// The event's `type`, as sent.
    pub event_type: String,
    /// Source ids of users to re-read.
    pub users: BTreeSet<String>,
    /// Source ids of groups to re-read.
    pub groups: BTreeSet<String>,
}

impl EventTargets {
    /// Number of distinct identities named.
    pub fn len(&self) -> usize {
        self.users.len() + self.groups.len()
    }

    /// Whether the event names no identity (an `identities.changed` with empty lists).
    pub fn is_empty(&self) -> bool {
        self.users.is_empty() && self.groups.is_empty()
    }
}

/// Why an event body was rejected. Messages name the field and the fix (returned with a 400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventError {
    #[error("the body is empty: send a JSON object such as {EXAMPLE}")]
    Empty,
    #[error("the body is not UTF-8: send the JSON object encoded in UTF-8")]
    NotUtf8,
    #[error("the body is not valid JSON ({detail}): send a JSON object such as {EXAMPLE}")]
    NotJson { detail: String },
    #[error("the body is JSON but not an object: send a JSON object such as {EXAMPLE}")]
    NotObject,
    #[error("field `{field}` is missing: {fix}")]
    MissingField {
        field: &'static str,
        fix: &'static str,
    },
    #[error("field `{field}` must be {expected}")]
    WrongType {
        field: String,
        expected: &'static str,
    },
    #[error("field `type` has unknown value {value:?}: use one of {ACCEPTED_TYPES}")]
    UnknownType { value: String },
    #[error("field `{field}` is not a valid id: {reason}")]
    InvalidId { field: String, reason: &'static str },
    #[error(
        "the event names {count} ids, more than the {MAX_IDS} allowed: split it into several events"
    )]
    TooManyIds { count: usize },
}

/// Parses a webhook event body into the identities it names.
pub fn parse_event(body: &[u8]) -> Result<EventTargets, EventError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(EventError::Empty);
    }
    let text = std::str::from_utf8(body).map_err(|_| EventError::NotUtf8)?;
    let value: Value = serde_json::from_str(text).map_err(|e| EventError::NotJson {
        detail: e.to_string(),
    })?;
    let Value::Object(root) = value else {
        return Err(EventError::NotObject);
    };

    let event_type = match root.get("type") {
        None | Some(Value::Null) => {
            return Err(EventError::MissingField {
                field: "type",
                fix: "name the event, e.g. \"type\": \"user.updated\"",
            });
        }
        Some(Value::String(s)) => s.clone(),
        Some(_) => return Err(wrong_type("type", "a string such as \"user.updated\"")),
    };

    match root.get("timestamp") {
        None | Some(Value::Null) | Some(Value::String(_)) => {}
        Some(_) => {
            return Err(wrong_type(
                "timestamp",
                "an RFC 3339 string such as \"2025-01-31T12:00:00Z\", or absent",
            ));
        }
    }

    let is_user = USER_TYPES.contains(&event_type.as_str());
    let is_group = GROUP_TYPES.contains(&event_type.as_str());
    let is_batch = event_type == BATCH_TYPE;
    if !(is_user || is_group || is_batch) {
        return Err(EventError::UnknownType {
            value: truncate(&event_type, 100),
        });
    }

    let data = match root.get("data") {
        None | Some(Value::Null) => {
            return Err(EventError::MissingField {
                field: "data",
                fix: if is_batch {
                    "send \"data\": {\"users\": [ids], \"groups\": [ids]}"
                } else {
                    "send \"data\": {\"id\": \"<source id>\"}"
                },
            });
        }
        Some(Value::Object(data)) => data,
        Some(_) => return Err(wrong_type("data", "an object")),
    };

    let mut targets = EventTargets {
        event_type,
        ..EventTargets::default()
    };
    if is_batch {
        let users = id_list(data, "users")?;
        let groups = id_list(data, "groups")?;
        if users.is_none() && groups.is_none() {
            return Err(EventError::MissingField {
                field: "data.users",
                fix: "an identities.changed event lists \"users\", \"groups\" or both",
            });
        }
        let users = users.unwrap_or(&[]);
        let groups = groups.unwrap_or(&[]);
        let count = users.len() + groups.len();
        if count > MAX_IDS {
            return Err(EventError::TooManyIds { count });
        }
        for (i, id) in users.iter().enumerate() {
            targets
                .users
                .insert(check_id(id, || format!("data.users[{i}]"))?);
        }
        for (i, id) in groups.iter().enumerate() {
            targets
                .groups
                .insert(check_id(id, || format!("data.groups[{i}]"))?);
        }
    } else {
        let id = match data.get("id") {
            None | Some(Value::Null) => {
                return Err(EventError::MissingField {
                    field: "data.id",
                    fix: "send the identity's source id as \"data\": {\"id\": \"<source id>\"}",
                });
            }
            Some(id) => check_id(id, || "data.id".to_owned())?,
        };
        if is_user {
            targets.users.insert(id);
        } else {
            targets.groups.insert(id);
        }
    }
    Ok(targets)
}

fn wrong_type(field: &str, expected: &'static str) -> EventError {
    EventError::WrongType {
        field: field.to_owned(),
        expected,
    }
}

/// `data.<name>`: absent or null → None; an array → its elements; anything else → error.
fn id_list<'a>(
    data: &'a Map<String, Value>,
    name: &str,
) -> Result<Option<&'a [Value]>, EventError> {
    match data.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Array(items)) => Ok(Some(items.as_slice())),
        Some(_) => Err(wrong_type(
            &format!("data.{name}"),
            "an array of source id strings",
        )),
    }
}

fn check_id(value: &Value, field: impl Fn() -> String) -> Result<String, EventError> {
    let Value::String(id) = value else {
        return Err(EventError::WrongType {
            field: field(),
            expected: "a string (send numeric ids as strings, e.g. \"42\")",
        });
    };
    let reason = if id.is_empty() {
        Some("it is empty; send the identity's source id")
    } else if id.len() > MAX_ID_BYTES {
        Some("it is longer than 1000 bytes")
    } else if id.chars().any(char::is_control) {
        Some("it contains a control character (newline, tab, ...); send the id without them")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(EventError::InvalidId {
            field: field(),
            reason,
        }),
        None => Ok(id.clone()),
    }
}

/// Echoed values are cut short so an error message stays small.
fn truncate(text: &str, max_chars: usize) -> String {
    if text.chars().count() <= max_chars {
        text.to_owned()
    } else {
        let mut cut: String = text.chars().take(max_chars).collect();
        cut.push('…');
        cut
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(ids: &[&str]) -> BTreeSet<String> {
        ids.iter().map(|s| (*s).to_owned()).collect()
    }

    fn parse(text: &str) -> Result<EventTargets, EventError> {
        parse_event(text.as_bytes())
    }

    #[test]
    fn every_single_identity_type() {
        for t in USER_TYPES {
            let body = format!(r#"{{"type": "{t}", "data": {{"id": "u-1"}}}}"#);
            let targets = parse(&body).unwrap();
            assert_eq!(targets.event_type, t);
            assert_eq!(targets.users, set(&["u-1"]));
            assert!(targets.groups.is_empty());
        }
        for t in GROUP_TYPES {
            let body = format!(r#"{{"type": "{t}", "data": {{"id": "g-1"}}}}"#);
            let targets = parse(&body).unwrap();
            assert_eq!(targets.event_type, t);
            assert_eq!(targets.groups, set(&["g-1"]));
            assert!(targets.users.is_empty());
        }
    }

    #[test]
    fn timestamp_and_extra_fields() {
        let body = r#"{"type": "user.updated", "timestamp": "2022-11-03T20:26:10.344522Z",
            "sender": "hr", "data": {"id": "00u1", "email": "a@b.c", "nested": {"x": 1}}}"#;
        let targets = parse(body).unwrap();
        assert_eq!(targets.users, set(&["00u1"]));
        assert_eq!(targets.len(), 1);
        // Null timestamp counts as absent.
        assert!(parse(r#"{"type":"user.updated","timestamp":null,"data":{"id":"x"}}"#).is_ok());
        assert_eq!(
            parse(r#"{"type":"user.updated","timestamp":1700000000,"data":{"id":"x"}}"#),
            Err(wrong_type(
                "timestamp",
                "an RFC 3339 string such as \"2025-01-31T12:00:00Z\", or absent"
            ))
        );
    }

    #[test]
    fn batch_event() {
        let body = r#"{"type": "identities.changed",
            "data": {"users": ["u1", "u2", "u1"], "groups": ["g1"], "note": "nightly"}}"#;
        let targets = parse(body).unwrap();
        assert_eq!(targets.event_type, "identities.changed");
        assert_eq!(targets.users, set(&["u1", "u2"]));
        assert_eq!(targets.groups, set(&["g1"]));

        let users_only = parse(r#"{"type":"identities.changed","data":{"users":["u1"]}}"#).unwrap();
        assert_eq!(users_only.users, set(&["u1"]));
        assert!(users_only.groups.is_empty());
        let groups_only =
            parse(r#"{"type":"identities.changed","data":{"groups":["g1"],"users":null}}"#)
                .unwrap();
        assert_eq!(groups_only.groups, set(&["g1"]));

        let empty =
            parse(r#"{"type":"identities.changed","data":{"users":[],"groups":[]}}"#).unwrap();
        assert!(empty.is_empty());

        let err = parse(r#"{"type":"identities.changed","data":{}}"#).unwrap_err();
        assert!(matches!(
            err,
            EventError::MissingField {
                field: "data.users",
                ..
            }
        ));
        assert!(err.to_string().contains("\"groups\""), "{err}");
    }

    #[test]
    fn id_limits() {
        let many: Vec<String> = (0..MAX_IDS).map(|i| format!("\"u{i}\"")).collect();
        let body = format!(
            r#"{{"type":"identities.changed","data":{{"users":[{}]}}}}"#,
            many.join(",")
        );
        assert_eq!(parse(&body).unwrap().users.len(), MAX_IDS);

        let body = format!(
            r#"{{"type":"identities.changed","data":{{"users":[{}],"groups":["g"]}}}}"#,
            many.join(",")
        );
        let err = parse(&body).unwrap_err();
        assert_eq!(err, EventError::TooManyIds { count: MAX_IDS + 1 });
        assert!(err.to_string().contains("split"), "{err}");

        let longest = "a".repeat(MAX_ID_BYTES);
        let body = format!(r#"{{"type":"user.created","data":{{"id":"{longest}"}}}}"#);
        assert!(parse(&body).is_ok());
        let too_long = "a".repeat(MAX_ID_BYTES + 1);
        let body = format!(r#"{{"type":"user.created","data":{{"id":"{too_long}"}}}}"#);
        assert!(matches!(
            parse(&body),
            Err(EventError::InvalidId { field, .. }) if field == "data.id"
        ));
    }

    #[test]
    fn invalid_ids() {
        for id in [
            r#""""#,
            r#""a\nb""#,
            r#""a\u0000b""#,
            r#""\t""#,
            r#""a\u007fb""#,
        ] {
            let body = format!(r#"{{"type":"group.updated","data":{{"id":{id}}}}}"#);
            let err = parse(&body).unwrap_err();
            assert!(
                matches!(&err, EventError::InvalidId { field, .. } if field == "data.id"),
                "{id}: {err:?}"
            );
        }
        let err =
            parse(r#"{"type":"identities.changed","data":{"groups":["ok",""]}}"#).unwrap_err();
        assert!(
            matches!(&err, EventError::InvalidId { field, .. } if field == "data.groups[1]"),
            "{err:?}"
        );
        assert!(err.to_string().contains("data.groups[1]"), "{err}");
        // Non-ASCII ids are fine.
        assert_eq!(
            parse(r#"{"type":"user.updated","data":{"id":"Jürgen Ø"}}"#)
                .unwrap()
                .users,
            set(&["Jürgen Ø"])
        );
    }

    #[test]
    fn unknown_type() {
        for t in ["user.renamed", "User.Created", "", "identities.Changed"] {
            let body = format!(r#"{{"type":"{t}","data":{{"id":"x"}}}}"#);
            let err = parse(&body).unwrap_err();
            assert_eq!(err, EventError::UnknownType { value: t.into() });
            assert!(err.to_string().contains("group.members_changed"), "{err}");
        }
        let long = "x".repeat(500);
        let body = format!(r#"{{"type":"{long}","data":{{"id":"x"}}}}"#);
        assert!(parse(&body).unwrap_err().to_string().len() < 500);
    }

    #[test]
    fn missing_fields() {
        let cases = [
            (r#"{"data":{"id":"x"}}"#, "type"),
            (r#"{"type":null,"data":{"id":"x"}}"#, "type"),
            (r#"{"type":"user.created"}"#, "data"),
            (r#"{"type":"user.created","data":null}"#, "data"),
            (r#"{"type":"user.created","data":{}}"#, "data.id"),
            (r#"{"type":"group.deleted","data":{"name":"x"}}"#, "data.id"),
            (r#"{"type":"identities.changed"}"#, "data"),
        ];
        for (body, expected) in cases {
            match parse(body) {
                Err(EventError::MissingField { field, fix }) => {
                    assert_eq!(field, expected, "{body}");
                    assert!(!fix.is_empty());
                }
                other => panic!("{body}: {other:?}"),
            }
        }
        let err = parse(r#"{"type":"user.created","data":{}}"#).unwrap_err();
        assert!(err.to_string().contains("data.id"), "{err}");
    }

    #[test]
    fn wrong_types() {
        let cases = [
            (r#"{"type":1,"data":{"id":"x"}}"#, "type"),
            (r#"{"type":["user.created"],"data":{"id":"x"}}"#, "type"),
            (r#"{"type":"user.created","data":"x"}"#, "data"),
            (r#"{"type":"user.created","data":["x"]}"#, "data"),
            (r#"{"type":"user.created","data":{"id":42}}"#, "data.id"),
            (r#"{"type":"user.created","data":{"id":["x"]}}"#, "data.id"),
            (
                r#"{"type":"identities.changed","data":{"users":"u1"}}"#,
                "data.users",
            ),
            (
                r#"{"type":"identities.changed","data":{"groups":{"g":1}}}"#,
                "data.groups",
            ),
            (
                r#"{"type":"identities.changed","data":{"users":["u1",2]}}"#,
                "data.users[1]",
            ),
        ];
        for (body, expected) in cases {
            match parse(body) {
                Err(err @ EventError::WrongType { .. }) => {
                    let EventError::WrongType { field, .. } = &err else {
                        unreachable!()
                    };
                    assert_eq!(field, expected, "{body}");
                    assert!(err.to_string().contains(expected), "{err}");
                }
                other => panic!("{body}: {other:?}"),
            }
        }
    }

    #[test]
    fn not_an_object_not_json_not_utf8() {
        assert_eq!(parse_event(b""), Err(EventError::Empty));
        assert_eq!(parse_event(b"  \n"), Err(EventError::Empty));
        assert_eq!(
            parse_event(b"{\"type\": \"user.created\xff\"}"),
            Err(EventError::NotUtf8)
        );
        for body in [
            "{",
            "type=user.created",
            "{\"type\":\"user.created\",}",
            "{} {}",
        ] {
            let err = parse(body).unwrap_err();
            assert!(matches!(err, EventError::NotJson { .. }), "{body}: {err:?}");
            assert!(err.to_string().contains("send a JSON object"), "{err}");
        }
        for body in ["[]", "\"user.created\"", "42", "null", "true"] {
            assert_eq!(parse(body), Err(EventError::NotObject), "{body}");
        }
    }
}
