//! The source model: identities as every source adapter hands them to the engine.
//!
//! A source identity is keyed on an immutable source id (entryUUID, objectGUID, a PingOne id, the
//! `id` of a file record), never on a DN or a username (docs/design.md#users).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// One attribute value of a source record (docs/design.md#file-source-format: string, number, bool
/// or list of strings). Binary values (an AD `objectGUID`) travel as bytes so that mapping
/// functions such as `guid_to_immutable_id` see the real octets.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum AttrValue {
    Bool(bool),
    Int(i64),
    Float(f64),
    Text(String),
    List(Vec<String>),
    #[serde(with = "binary")]
    Binary(Vec<u8>),
}

impl AttrValue {
    /// The value as a single string, if it has one (lists give their first element).
    pub fn as_text(&self) -> Option<String> {
        match self {
            AttrValue::Text(s) => Some(s.clone()),
            AttrValue::Int(i) => Some(i.to_string()),
            AttrValue::Float(f) => Some(f.to_string()),
            AttrValue::Bool(b) => Some(b.to_string()),
            AttrValue::List(items) => items.first().cloned(),
            AttrValue::Binary(_) => None,
        }
    }
}

/// Attributes by source name, in a stable order (hashes of mapped values must not depend on
/// insertion order).
pub type Attributes = BTreeMap<String, AttrValue>;

/// A user as the source sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SourceUser {
    /// Immutable source id.
    pub id: String,
    /// Enabled at the source; disabled users are provisioned only with `provision_disabled_users`.
    pub enabled: bool,
    pub attributes: Attributes,
}

/// A group as the source sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SourceGroup {
    /// Immutable source id.
    pub id: String,
    /// The name matched against tenant groups' displayName (e.g. the CN).
    pub name: String,
    /// Source ids of the member users.
    pub members: Vec<String>,
    #[serde(default)]
    pub attributes: Attributes,
}

/// Users or groups: the two kinds of object the engine links.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ObjectKind {
    User,
    Group,
}

impl ObjectKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ObjectKind::User => "user",
            ObjectKind::Group => "group",
        }
    }
}

impl std::fmt::Display for ObjectKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A record the source could not turn into an identity (no id, duplicate id, unknown member…).
/// It names where it is so that an operator can fix it; the rest of the source still syncs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordError {
    /// Whether the record was a user or a group.
    pub kind: ObjectKind,
    /// Where: `users.csv line 12`, `users[3]`, an LDAP DN.
    pub location: String,
    /// The source id, when the record had one. A record error *with* an id keeps that identity
    /// untouched (it is neither updated nor deprovisioned); one *without* an id makes the snapshot
    /// unsafe to sweep, because the engine cannot tell whose record it was.
    pub source_id: Option<String>,
    pub message: String,
}

/// Microsoft licensing: a SKU and the service plans to switch off in it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LicenseAssignment {
    pub sku_id: String,
    #[serde(default)]
    pub disabled_plans: Vec<String>,
}

mod binary {
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD;
    use serde::{Deserialize, Deserializer, Serializer};

    // Binary values are written as `{"base64": "..."}` so that they never collide with text.
    pub fn serialize<S: Serializer>(bytes: &[u8], serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = serializer.serialize_map(Some(1))?;
        map.serialize_entry("base64", &STANDARD.encode(bytes))?;
        map.end()
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<u8>, D::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Wrapped {
            base64: String,
        }
        let wrapped = Wrapped::deserialize(deserializer)?;
        STANDARD
            .decode(wrapped.base64)
            .map_err(|e| serde::de::Error::custom(format!("invalid base64: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attribute_values_deserialize_from_the_file_format() {
        let attrs: Attributes = serde_json::from_str(
            r#"{"mail":"a@example.com","age":42,"ratio":0.5,"vip":true,"proxy":["a","b"],"guid":{"base64":"Zm9v"}}"#,
        )
        .unwrap();
        assert_eq!(attrs["mail"], AttrValue::Text("a@example.com".into()));
        assert_eq!(attrs["age"], AttrValue::Int(42));
        assert_eq!(attrs["ratio"], AttrValue::Float(0.5));
        assert_eq!(attrs["vip"], AttrValue::Bool(true));
        assert_eq!(
            attrs["proxy"],
            AttrValue::List(vec!["a".into(), "b".into()])
        );
        assert_eq!(attrs["guid"], AttrValue::Binary(b"foo".to_vec()));
        let round: Attributes =
            serde_json::from_str(&serde_json::to_string(&attrs).unwrap()).unwrap();
        assert_eq!(round, attrs);
    }
}
