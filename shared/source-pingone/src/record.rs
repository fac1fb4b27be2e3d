//! PingOne users and groups (the `User` and `Group` schemas of the PingOne OpenAPI) as the
//! engine's source records. Attributes are flattened with dotted names — `name.given`,
//! `name.family`, `population.id`, `address.locality` — custom attributes included, so that a
//! mapping reads `{ attribute = "name.given" }` or `{{ name.given }}` alike.

use m365_core::model::{AttrValue, Attributes, ObjectKind, RecordError, SourceGroup, SourceUser};
use serde_json::Value;

/// Top-level members that are not attributes of the identity.
const NOT_ATTRIBUTES: &[&str] = &["_links", "_embedded"];

/// Objects nested deeper than this are not flattened further.
const MAX_DEPTH: usize = 4;

/// A user of `GET /users` or `GET /users/{id}`.
pub fn user(value: &Value) -> Result<SourceUser, RecordError> {
    let id = id_of(value).ok_or_else(|| RecordError {
        kind: ObjectKind::User,
        location: format!(
            "a PingOne user {}",
            value
                .get("username")
                .and_then(Value::as_str)
                .map(|u| format!("({u})"))
                .unwrap_or_default()
        ),
        source_id: None,
        message: "the user has no id".to_owned(),
    })?;
    let enabled = match value.get("enabled") {
        None | Some(Value::Null) => true,
        Some(Value::Bool(enabled)) => *enabled,
        Some(other) => {
            return Err(RecordError {
                kind: ObjectKind::User,
                location: format!("PingOne user {id}"),
                source_id: Some(id.to_owned()),
                message: format!("enabled is {other}, not true or false"),
            });
        }
    };
    Ok(SourceUser {
        id: id.to_owned(),
        enabled,
        attributes: flatten(value),
    })
}

/// A group of `GET /groups` with the ids of its member users.
pub fn group(value: &Value, members: Vec<String>) -> Result<SourceGroup, RecordError> {
    let id = id_of(value).ok_or_else(|| RecordError {
        kind: ObjectKind::Group,
        location: "a PingOne group".to_owned(),
        source_id: None,
        message: "the group has no id".to_owned(),
    })?;
    let name = value
        .get("name")
        .and_then(Value::as_str)
        .filter(|n| !n.trim().is_empty())
        .ok_or_else(|| RecordError {
            kind: ObjectKind::Group,
            location: format!("PingOne group {id}"),
            source_id: Some(id.to_owned()),
            message: "the group has no name".to_owned(),
        })?;
    Ok(SourceGroup {
        id: id.to_owned(),
        name: name.to_owned(),
        members,
        attributes: flatten(value),
    })
}

pub fn id_of(value: &Value) -> Option<&str> {
    value
        .get("id")
        .and_then(Value::as_str)
        .filter(|id| !id.is_empty())
}

/// A dynamic group's `userFilter`, if it has one.
pub fn user_filter(group: &Value) -> Option<&str> {
    group
        .get("userFilter")
        .and_then(Value::as_str)
        .filter(|f| !f.trim().is_empty())
}

fn flatten(value: &Value) -> Attributes {
    let mut attributes = Attributes::new();
    if let Value::Object(members) = value {
        for (name, v) in members {
            if !NOT_ATTRIBUTES.contains(&name.as_str()) {
                insert(&mut attributes, name.clone(), v, 0);
            }
        }
    }
    attributes
}

fn insert(attributes: &mut Attributes, name: String, value: &Value, depth: usize) {
    match value {
        Value::Null => {}
        Value::Bool(b) => {
            attributes.insert(name, AttrValue::Bool(*b));
        }
        Value::Number(n) => {
            let v = n
                .as_i64()
                .map(AttrValue::Int)
                .unwrap_or_else(|| AttrValue::Float(n.as_f64().unwrap_or_default()));
            attributes.insert(name, v);
        }
        Value::String(s) => {
            attributes.insert(name, AttrValue::Text(s.clone()));
        }
        Value::Array(items) => {
            // Lists of text (a multi-valued custom attribute); lists of objects are not
            // attributes a mapping can use whole, and are left out.
            let texts: Vec<String> = items
                .iter()
                .filter_map(|item| match item {
                    Value::String(s) => Some(s.clone()),
                    Value::Number(n) => Some(n.to_string()),
                    Value::Bool(b) => Some(b.to_string()),
                    _ => None,
                })
                .collect();
            if texts.len() == items.len() {
                attributes.insert(name, AttrValue::List(texts));
            }
        }
        Value::Object(members) if depth < MAX_DEPTH => {
            for (member, v) in members {
                insert(attributes, format!("{name}.{member}"), v, depth + 1);
            }
        }
        Value::Object(_) => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn users_are_flattened_with_dotted_names() {
        let value = json!({
            "_links": {"self": {"href": "x"}},
            "id": "u-1",
            "username": "alice",
            "email": "alice@example.com",
            "name": {"given": "Alice", "family": "Liddell"},
            "enabled": false,
            "population": {"id": "p-1"},
            "managerId": "u-0",
            "badges": ["a", "b"],
            "addresses": [{"street": "x"}],
            "account": {"status": "OK", "lockedAt": null},
        });
        let user = user(&value).unwrap();
        assert_eq!(user.id, "u-1");
        assert!(!user.enabled);
        let text = |k: &str| user.attributes.get(k).and_then(AttrValue::as_text);
        assert_eq!(text("name.given").as_deref(), Some("Alice"));
        assert_eq!(text("population.id").as_deref(), Some("p-1"));
        assert_eq!(text("managerId").as_deref(), Some("u-0"));
        assert_eq!(text("account.status").as_deref(), Some("OK"));
        assert_eq!(
            user.attributes.get("badges"),
            Some(&AttrValue::List(vec!["a".into(), "b".into()]))
        );
        assert!(!user.attributes.contains_key("addresses"));
        assert!(!user.attributes.keys().any(|k| k.starts_with("_links")));
        assert!(!user.attributes.contains_key("account.lockedAt"));
    }

    #[test]
    fn records_without_an_id_or_a_name_are_record_errors() {
        let error = user(&json!({"username": "bob"})).unwrap_err();
        assert!(error.source_id.is_none() && error.location.contains("bob"));
        let error = group(&json!({"id": "g-1"}), vec![]).unwrap_err();
        assert_eq!(error.source_id.as_deref(), Some("g-1"));
        let error = user(&json!({"id": "u", "enabled": "yes"})).unwrap_err();
        assert!(error.message.contains("enabled"), "{}", error.message);
    }
}
