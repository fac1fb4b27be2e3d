//! The JSON format: `{"users": [...], "groups": [...]}` (docs/design.md#file-source-format).

use std::borrow::Cow;

use m365_core::{AttrValue, Attributes, SourceError, SourceGroup, SourceUser};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use crate::FileSourceConfig;
use crate::parsed::{Raw, RawError, RawFile, RawUser};

fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "list",
        Value::Object(_) => "object",
    }
}

/// Parses the whole file. Only a file whose shape cannot be trusted (bad JSON, no `users` array,
/// an unknown top-level key) fails as a whole; a broken record is a per-record error.
///
/// A well-formed file is read record by record, so that it is never held as one JSON tree (at
/// 100k users, the tree alone is several times the file). A user record with a valid id is only
/// located ([`RawUser::Deferred`]) and converted by [`user_record`] when its page is read; a
/// group, or a user record without a valid id, is converted at once. Anything else is read again
/// as a tree by [`parse_tree`], which says precisely what is wrong.
pub(crate) fn parse(
    file: &str,
    bytes: &[u8],
    config: &FileSourceConfig,
) -> Result<RawFile, SourceError> {
    match parse_streamed(bytes, config) {
        Ok(raw) => Ok(raw),
        Err(_) => parse_tree(file, bytes, config),
    }
}

/// Reads a well-formed file record by record; anything unexpected is an error without detail.
fn parse_streamed(bytes: &[u8], config: &FileSourceConfig) -> Result<RawFile, serde_json::Error> {
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let raw = serde::Deserializer::deserialize_map(
        &mut deserializer,
        RootVisitor {
            config,
            file: bytes,
        },
    )?;
    deserializer.end()?;
    Ok(raw)
}

/// The top-level object, streamed: `users` and `groups` only, each at most once; anything else
/// is an error, and the file is then read again by [`parse_tree`] for the message.
struct RootVisitor<'c> {
    config: &'c FileSourceConfig,
    /// The whole file, which deferred records are ranges of.
    file: &'c [u8],
}

impl<'de> serde::de::Visitor<'de> for RootVisitor<'_> {
    type Value = RawFile;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("an object with \"users\" and \"groups\"")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<RawFile, A::Error> {
        use serde::de::Error;
        let config = self.config;
        let mut users = None;
        let mut groups = None;
        while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            match key.as_ref() {
                "users" if users.is_none() => {
                    users = Some(map.next_value_seed(UserRecords {
                        config,
                        file: self.file,
                    })?);
                }
                "groups" if groups.is_none() && config.groups => {
                    groups = Some(map.next_value_seed(Records {
                        prefix: "groups",
                        convert: group,
                    })?);
                }
                _ => return Err(A::Error::custom("read as a tree")),
            }
        }
        let users = users.ok_or_else(|| A::Error::custom("read as a tree"))?;
        let groups = match groups {
            Some(groups) => Some(groups),
            // Not "no groups": every linked group would look deleted.
            None if config.groups => None,
            None => Some(Vec::new()),
        };
        Ok(RawFile { users, groups })
    }
}

/// A list of records, each converted as it is read: `users[3]`, `groups[0]`.
struct Records<F> {
    prefix: &'static str,
    convert: F,
}

impl<'de, T, F: Fn(Value) -> Result<T, RawError>> serde::de::DeserializeSeed<'de> for Records<F> {
    type Value = Vec<Raw<T>>;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Vec<Raw<T>>, D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de, T, F: Fn(Value) -> Result<T, RawError>> serde::de::Visitor<'de> for Records<F> {
    type Value = Vec<Raw<T>>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "a list of {}", self.prefix)
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<Raw<T>>, A::Error> {
        let mut records = Vec::with_capacity(seq.size_hint().unwrap_or(0));
        while let Some(value) = seq.next_element::<Value>()? {
            records.push(Raw {
                location: format!("{}[{}]", self.prefix, records.len()),
                outcome: (self.convert)(value),
            });
        }
        Ok(records)
    }
}

/// The user list, each record located: deferred when its id is valid, else converted at once
/// (its error needs the whole record).
struct UserRecords<'c> {
    config: &'c FileSourceConfig,
    file: &'c [u8],
}

impl<'de> serde::de::DeserializeSeed<'de> for UserRecords<'_> {
    type Value = Vec<Raw<RawUser>>;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> serde::de::Visitor<'de> for UserRecords<'_> {
    type Value = Vec<Raw<RawUser>>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a list of users")
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        use serde::de::Error;
        let base = self.file.as_ptr() as usize;
        let mut records = Vec::with_capacity(seq.size_hint().unwrap_or(0));
        while let Some(raw) = seq.next_element::<&'de RawValue>()? {
            let text = raw.get();
            // The record's place in the file: its text is a slice of the file.
            let start = (text.as_ptr() as usize).wrapping_sub(base);
            let range = start..start + text.len();
            if self.file.get(range.clone()).map(|b| b.as_ptr()) != Some(text.as_ptr()) {
                return Err(A::Error::custom("read as a tree"));
            }
            let outcome = match probe_id(text) {
                Some(id) => Ok(RawUser::Deferred { id, range }),
                None => serde_json::from_str::<Value>(text)
                    .map_err(A::Error::custom)
                    .map(|v| user(v, self.config).map(RawUser::Read))?,
            };
            records.push(Raw {
                location: format!("users[{}]", records.len()),
                outcome,
            });
        }
        Ok(records)
    }
}

/// A record's id as [`id_of`] reads it, when the record is an object with a valid id: the last
/// `"id"` key wins, as in a parsed object. `None` for anything else.
fn probe_id(text: &str) -> Option<String> {
    struct Probe;
    impl<'de> serde::de::Visitor<'de> for Probe {
        type Value = Option<String>;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a record")
        }

        fn visit_map<A: serde::de::MapAccess<'de>>(
            self,
            mut map: A,
        ) -> Result<Self::Value, A::Error> {
            let mut id = None;
            while let Some(key) = map.next_key::<Cow<'de, str>>()? {
                if key == "id" {
                    id = Some(map.next_value::<Value>()?);
                } else {
                    map.next_value::<serde::de::IgnoredAny>()?;
                }
            }
            Ok(match id {
                Some(Value::String(id)) if !id.trim().is_empty() => Some(id),
                _ => None,
            })
        }
    }
    if !text.starts_with('{') {
        return None;
    }
    let mut deserializer = serde_json::Deserializer::from_str(text);
    serde::Deserializer::deserialize_map(&mut deserializer, Probe)
        .ok()
        .flatten()
}

/// A deferred user record ([`RawUser::Deferred`]), converted as the streamed reading would have.
pub(crate) fn user_record(bytes: &[u8], config: &FileSourceConfig) -> Result<SourceUser, RawError> {
    let value: Value = serde_json::from_slice(bytes)
        .map_err(|e| RawError::new(None, format!("unreadable record: {e}")))?;
    user(value, config)
}

/// Parses the whole file as one JSON tree: the reference reading, and the one that explains a
/// file whose shape is wrong.
fn parse_tree(file: &str, bytes: &[u8], config: &FileSourceConfig) -> Result<RawFile, SourceError> {
    let root: Value = serde_json::from_slice(bytes)
        .map_err(|e| SourceError::Unreadable(format!("{file}: invalid JSON: {e}")))?;
    let Value::Object(mut root) = root else {
        return Err(SourceError::Unreadable(format!(
            "{file}: expected an object {{\"users\": [...], \"groups\": [...]}} at the top level, \
             found {}",
            type_name(&root)
        )));
    };
    // A misspelt "groups" must not read as "no groups" (every group would look deleted).
    if let Some(key) = root.keys().find(|k| *k != "users" && *k != "groups") {
        return Err(SourceError::Unreadable(format!(
            "{file}: unknown top-level key \"{key}\" (expected \"users\" and \"groups\")"
        )));
    }
    let users = match root.remove("users") {
        Some(Value::Array(items)) => items,
        Some(other) => {
            return Err(SourceError::Unreadable(format!(
                "{file}: \"users\" must be a list, found {}",
                type_name(&other)
            )));
        }
        // An empty user list must be said explicitly: a file without it reads as "delete everyone".
        None => {
            return Err(SourceError::Unreadable(format!(
                "{file}: no \"users\" list at the top level"
            )));
        }
    };
    let groups = match (root.remove("groups"), config.groups) {
        (Some(_), false) => {
            return Err(SourceError::Unreadable(format!(
                "{file}: the file has a \"groups\" key, but the source is configured without \
                 groups (`groups = false`); remove the setting to sync the groups, or the key"
            )));
        }
        (Some(Value::Array(items)), true) => Some(items),
        (Some(other), true) => {
            return Err(SourceError::Unreadable(format!(
                "{file}: \"groups\" must be a list, found {}",
                type_name(&other)
            )));
        }
        (None, false) => Some(Vec::new()),
        // Not "no groups": every linked group would look deleted.
        (None, true) => None,
    };
    let users = users
        .into_iter()
        .enumerate()
        .map(|(i, v)| Raw {
            location: format!("users[{i}]"),
            outcome: user(v, config).map(RawUser::Read),
        })
        .collect();
    let groups = groups.map(|groups| {
        groups
            .into_iter()
            .enumerate()
            .map(|(i, v)| Raw {
                location: format!("groups[{i}]"),
                outcome: group(v),
            })
            .collect()
    });
    Ok(RawFile { users, groups })
}

/// The record's id: a non-empty string.
fn id_of(record: &Map<String, Value>) -> Result<String, RawError> {
    match record.get("id") {
        None => Err(RawError::new(None, "missing \"id\"")),
        Some(Value::String(id)) if id.trim().is_empty() => Err(RawError::new(None, "empty id")),
        Some(Value::String(id)) => Ok(id.clone()),
        Some(other) => Err(RawError::new(
            None,
            format!("\"id\" must be a string, found {}", type_name(other)),
        )),
    }
}

fn check_keys(record: &Map<String, Value>, id: &str, allowed: &[&str]) -> Result<(), RawError> {
    match record.keys().find(|k| !allowed.contains(&k.as_str())) {
        Some(key) => Err(RawError::new(
            Some(id),
            format!(
                "unknown key \"{key}\" (expected {})",
                allowed
                    .iter()
                    .map(|k| format!("\"{k}\""))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        )),
        None => Ok(()),
    }
}

fn user(value: Value, config: &FileSourceConfig) -> Result<SourceUser, RawError> {
    let Value::Object(mut record) = value else {
        return Err(RawError::new(
            None,
            format!("expected an object, found {}", type_name(&value)),
        ));
    };
    let id = id_of(&record)?;
    check_keys(&record, &id, &["id", "enabled", "attributes"])?;
    let enabled = match record.get("enabled") {
        Some(Value::Bool(b)) => *b,
        Some(Value::String(s)) if s.trim().is_empty() => {
            return Err(RawError::new(Some(&id), "empty \"enabled\" value"));
        }
        Some(Value::String(s)) => config
            .parse_enabled(s)
            .map_err(|m| RawError::new(Some(&id), m))?,
        Some(Value::Number(n)) => config
            .parse_enabled(&n.to_string())
            .map_err(|m| RawError::new(Some(&id), m))?,
        // Defaulting either way could let someone in or lock someone out.
        None | Some(Value::Null) => {
            return Err(RawError::new(Some(&id), "missing \"enabled\""));
        }
        Some(other) => {
            return Err(RawError::new(
                Some(&id),
                format!(
                    "\"enabled\" must be true or false, found {}",
                    type_name(other)
                ),
            ));
        }
    };
    let attributes = attributes(record.remove("attributes"), &id)?;
    Ok(SourceUser {
        id,
        enabled,
        attributes,
    })
}

fn group(value: Value) -> Result<SourceGroup, RawError> {
    let Value::Object(mut record) = value else {
        return Err(RawError::new(
            None,
            format!("expected an object, found {}", type_name(&value)),
        ));
    };
    let id = id_of(&record)?;
    check_keys(&record, &id, &["id", "name", "members", "attributes"])?;
    let name = match record.get("name") {
        Some(Value::String(n)) if !n.trim().is_empty() => n.clone(),
        Some(Value::String(_)) => return Err(RawError::new(Some(&id), "empty \"name\"")),
        None | Some(Value::Null) => return Err(RawError::new(Some(&id), "missing \"name\"")),
        Some(other) => {
            return Err(RawError::new(
                Some(&id),
                format!("\"name\" must be a string, found {}", type_name(other)),
            ));
        }
    };
    // "members" is required: a group without it would read as "remove every member".
    let members = match record.remove("members") {
        Some(Value::Array(items)) => {
            let mut members = Vec::with_capacity(items.len());
            for (i, item) in items.into_iter().enumerate() {
                match item {
                    Value::String(m) if !m.trim().is_empty() => members.push(m),
                    other => {
                        return Err(RawError::new(
                            Some(&id),
                            format!(
                                "members[{i}] must be a user id (a non-empty string), found {}",
                                if matches!(other, Value::String(_)) {
                                    "an empty string"
                                } else {
                                    type_name(&other)
                                }
                            ),
                        ));
                    }
                }
            }
            members
        }
        None | Some(Value::Null) => return Err(RawError::new(Some(&id), "missing \"members\"")),
        Some(other) => {
            return Err(RawError::new(
                Some(&id),
                format!("\"members\" must be a list, found {}", type_name(&other)),
            ));
        }
    };
    let attributes = attributes(record.remove("attributes"), &id)?;
    Ok(SourceGroup {
        id,
        name,
        members,
        attributes,
    })
}

fn attributes(value: Option<Value>, id: &str) -> Result<Attributes, RawError> {
    let map = match value {
        None | Some(Value::Null) => return Ok(Attributes::new()),
        Some(Value::Object(map)) => map,
        Some(other) => {
            return Err(RawError::new(
                Some(id),
                format!(
                    "\"attributes\" must be an object, found {}",
                    type_name(&other)
                ),
            ));
        }
    };
    let mut attributes = Attributes::new();
    for (name, value) in map {
        // null = absent, like an empty CSV cell.
        if let Some(value) = attribute(&name, value).map_err(|m| RawError::new(Some(id), m))? {
            attributes.insert(name, value);
        }
    }
    Ok(attributes)
}

const EXPECTED: &str = "expected a string, number, bool, list of strings or {\"base64\": \"...\"}";

fn attribute(name: &str, value: Value) -> Result<Option<AttrValue>, String> {
    Ok(Some(match value {
        Value::Null => return Ok(None),
        Value::Bool(b) => AttrValue::Bool(b),
        Value::String(s) => AttrValue::Text(s),
        Value::Number(n) => match (n.as_i64(), n.as_f64()) {
            (Some(i), _) => AttrValue::Int(i),
            (None, Some(f)) if !n.is_u64() => AttrValue::Float(f),
            _ => {
                return Err(format!(
                    "attribute \"{name}\": number {n} is too large; write it as a string"
                ));
            }
        },
        Value::Array(items) => {
            let mut list = Vec::with_capacity(items.len());
            for (i, item) in items.into_iter().enumerate() {
                match item {
                    Value::String(s) => list.push(s),
                    other => {
                        return Err(format!(
                            "attribute \"{name}\": list items must be strings, found {} at index \
                             {i}",
                            type_name(&other)
                        ));
                    }
                }
            }
            AttrValue::List(list)
        }
        // Binary values (an objectGUID) are written as {"base64": "..."}, the model's own form.
        Value::Object(map) if map.len() == 1 && map.contains_key("base64") => {
            match serde_json::from_value::<AttrValue>(Value::Object(map)) {
                Ok(binary @ AttrValue::Binary(_)) => binary,
                _ => return Err(format!("attribute \"{name}\": invalid base64 value")),
            }
        }
        other => {
            return Err(format!(
                "attribute \"{name}\": unsupported value type {} ({EXPECTED})",
                type_name(&other)
            ));
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each record as text: where it sits and what became of it.
    fn described<T: std::fmt::Debug>(records: &[Raw<T>]) -> Vec<String> {
        records
            .iter()
            .map(|r| match &r.outcome {
                Ok(item) => format!("{}: {item:?}", r.location),
                Err(e) => format!("{}: error {:?} {}", r.location, e.id, e.message),
            })
            .collect()
    }

    /// Each user record as text, a deferred one converted as its page would convert it.
    fn described_users(
        records: &[Raw<RawUser>],
        file: &[u8],
        config: &FileSourceConfig,
    ) -> Vec<String> {
        records
            .iter()
            .map(|r| match &r.outcome {
                Ok(RawUser::Read(user)) => format!("{}: {user:?}", r.location),
                Ok(RawUser::Deferred { id, range }) => {
                    match user_record(&file[range.clone()], config) {
                        Ok(user) => {
                            assert_eq!(
                                &user.id, id,
                                "{}: the located id is the read id",
                                r.location
                            );
                            format!("{}: {user:?}", r.location)
                        }
                        Err(e) => format!("{}: error {:?} {}", r.location, e.id, e.message),
                    }
                }
                Err(e) => format!("{}: error {:?} {}", r.location, e.id, e.message),
            })
            .collect()
    }

    fn config(groups: bool) -> FileSourceConfig {
        let mut config = FileSourceConfig::new("people.json");
        config.groups = groups;
        config
    }

    #[test]
    fn the_streamed_reading_is_the_tree_reading() {
        let file = br#"{
          "groups": [
            {"id": "g1", "name": "Sales", "members": ["u1", "u2"], "attributes": {"mail": "s@x"}},
            {"id": "g2", "name": "", "members": []},
            {"id": "g3", "name": "Ops", "members": ["u1", 7]},
            "not a group"
          ],
          "users": [
            {"id": "u1", "enabled": true, "attributes": {"givenName": "Ann", "n": 3, "f": 1.5,
              "tags": ["a", "b"], "guid": {"base64": "AAEC"}, "gone": null, "esc": "\u00e9\"q"}},
            {"id": "u2", "enabled": "yes"},
            {"id": "u3"},
            {"id": "u4", "enabled": true, "attributes": {"big": 18446744073709551615}},
            {"id": "", "enabled": true},
            {"id": "u5", "enabled": true, "colour": "red"},
            {"id": ["u6"], "enabled": true},
            {"enabled": true, "id": "first", "id": 7},
            42
          ]
        }"#;
        for groups in [true, false] {
            let config = config(groups);
            let tree = parse_tree("people.json", file, &config);
            let streamed = parse("people.json", file, &config);
            // A well-formed file is read without the tree.
            assert_eq!(parse_streamed(file, &config).is_ok(), groups);
            match (tree, streamed) {
                (Ok(tree), Ok(streamed)) => {
                    assert_eq!(
                        described_users(&streamed.users, file, &config),
                        described_users(&tree.users, file, &config)
                    );
                    // Records with a valid id are only located; the others are read at once.
                    let deferred = streamed
                        .users
                        .iter()
                        .filter(|r| matches!(r.outcome, Ok(RawUser::Deferred { .. })))
                        .count();
                    assert_eq!(deferred, 5, "u1 to u5 are located, \"\" and 42 are read");
                    assert_eq!(
                        streamed.groups.as_deref().map(described),
                        tree.groups.as_deref().map(described)
                    );
                    assert_eq!(streamed.users.len(), 9);
                }
                (Err(tree), Err(streamed)) => {
                    assert!(!groups, "a file with groups is refused only without groups");
                    assert_eq!(streamed.to_string(), tree.to_string());
                }
                (tree, streamed) => panic!(
                    "the readings differ: tree ok {}, streamed ok {}",
                    tree.is_ok(),
                    streamed.is_ok()
                ),
            }
        }
    }

    #[test]
    fn a_file_of_the_wrong_shape_is_explained_as_before() {
        let config = config(true);
        for (file, message) in [
            (&b"[1, 2]"[..], "expected an object"),
            (b"{\"users\": {}}", "\"users\" must be a list, found object"),
            (
                b"{\"users\": [], \"user\": []}",
                "unknown top-level key \"user\"",
            ),
            (b"{\"groups\": []}", "no \"users\" list"),
            (b"{\"users\": [}", "invalid JSON"),
            (b"{\"users\": []} trailing", "invalid JSON"),
        ] {
            let error = parse("people.json", file, &config)
                .err()
                .unwrap_or_else(|| panic!("{} was accepted", String::from_utf8_lossy(file)));
            assert!(error.to_string().contains(message), "{error}");
        }
    }
}
