//! The body of a PingOne subscription's POST: a JSON array of up to 500 ACTIVITY records
//! (<https://developer.pingidentity.com/pingone-api/platform/subscriptions-webhooks.html>; each
//! record has the shape of the Audit Activities API's,
//! <https://developer.pingidentity.com/pingone-api/platform/audit-activities.html>).
//!
//! A record is read for its `id` (the deduplication key), its `action.type` and the users and
//! groups its `resources` name; nothing else in it is trusted: the identities are read again
//! from PingOne. Records that cannot be read, or whose type the connector does not act on, are
//! set aside with the reason — never a reason to refuse the batch, which PingOne would send
//! again and again, holding back every later event.

use std::collections::BTreeSet;

use m365_source_pingone::activities::{ActionKind, Targets};
use serde_json::Value;

/// One record the connector acts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Activity {
    pub id: String,
    pub action: String,
    pub targets: Targets,
}

/// A record set aside.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Skipped {
    /// Its place in the batch, from 0.
    pub index: usize,
    /// Its `id`, when it has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Its `action.type`, when it has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub action: Option<String>,
    pub reason: String,
}

/// A batch read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Batch {
    pub activities: Vec<Activity>,
    pub skipped: Vec<Skipped>,
}

/// Reads a POST body. A body that is not a JSON array is one skipped entry (index 0).
pub fn parse_batch(body: &[u8]) -> Batch {
    let records = match serde_json::from_slice::<Value>(body) {
        Ok(Value::Array(records)) => records,
        // A single record (a subscription sending one object) is read as a batch of one.
        Ok(record @ Value::Object(_)) => vec![record],
        Ok(_) => return whole_body_skipped("the body is not a JSON array of activities"),
        Err(e) => return whole_body_skipped(&format!("the body is not JSON: {e}")),
    };
    let mut batch = Batch::default();
    for (index, record) in records.iter().enumerate() {
        match activity(record) {
            Ok(activity) => batch.activities.push(activity),
            Err(reason) => batch.skipped.push(Skipped {
                index,
                id: text(record, "/id"),
                action: text(record, "/action/type"),
                reason,
            }),
        }
    }
    batch
}

fn whole_body_skipped(reason: &str) -> Batch {
    Batch {
        activities: Vec::new(),
        skipped: vec![Skipped {
            index: 0,
            id: None,
            action: None,
            reason: reason.to_owned(),
        }],
    }
}

fn text(record: &Value, pointer: &str) -> Option<String> {
    record
        .pointer(pointer)
        .and_then(Value::as_str)
        .map(str::to_owned)
}

fn activity(record: &Value) -> Result<Activity, String> {
    if !record.is_object() {
        return Err("the record is not a JSON object".to_owned());
    }
    let id = text(record, "/id")
        .filter(|id| !id.trim().is_empty() && id.len() <= 128)
        .ok_or("the record has no id")?;
    let action = text(record, "/action/type").ok_or("the record has no action.type")?;
    if ActionKind::of(&action) == ActionKind::Other {
        return Err(format!(
            "{action} is not an action type the connector acts on (subscribe to USER.*, GROUP.* \
             and MEMBER_OF_GROUP.* only)"
        ));
    }
    let mut targets = Targets::default();
    if !targets.add(record) {
        return Err(format!(
            "the {action} record names no user or group in its resources"
        ));
    }
    Ok(Activity {
        id,
        action,
        targets,
    })
}

/// The users and groups a set of activities names, each once: what one focused run reads again.
/// A deleted identity is read again too (PingOne answers 404, and the run deprovisions it).
pub fn coalesce<'a>(
    activities: impl IntoIterator<Item = &'a Activity>,
) -> (BTreeSet<String>, BTreeSet<String>) {
    let mut users = BTreeSet::new();
    let mut groups = BTreeSet::new();
    for activity in activities {
        let t = &activity.targets;
        users.extend(t.users.iter().chain(&t.deleted_users).cloned());
        groups.extend(t.groups.iter().chain(&t.deleted_groups).cloned());
    }
    (users, groups)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn user_event(id: &str, action: &str, user: &str) -> Value {
        json!({
            "id": id,
            "recordedAt": "2026-12-05T10:00:00.000Z",
            "action": {"type": action},
            "resources": [{"type": "USER", "id": user, "name": "x"}],
            "result": {"status": "SUCCESS"},
        })
    }

    #[test]
    fn a_batch_is_read_record_by_record_and_bad_ones_are_set_aside() {
        let body = serde_json::to_vec(&json!([
            user_event("e1", "USER.UPDATED", "u1"),
            user_event("e2", "USER.UPDATED", "u1"),
            {"action": {"type": "USER.UPDATED"}},
            user_event("e4", "PASSWORD.SET", "u2"),
            user_event("e5", "USER.DELETED", "u3"),
            {"id": "e6", "action": {"type": "MEMBER_OF_GROUP.CREATED"}, "resources": [
                {"type": "MEMBER_OF_GROUP", "id": "m", "href": "https://api.pingone.com/v1/environments/e/users/u4/memberOfGroups/g1"}]},
            "not an object",
        ]))
        .unwrap();
        let batch = parse_batch(&body);
        let ids: Vec<&str> = batch.activities.iter().map(|a| a.id.as_str()).collect();
        assert_eq!(ids, ["e1", "e2", "e5", "e6"]);
        let skipped: Vec<usize> = batch.skipped.iter().map(|s| s.index).collect();
        assert_eq!(skipped, [2, 3, 6]);
        assert!(batch.skipped[0].reason.contains("no id"));
        assert!(batch.skipped[1].reason.contains("PASSWORD.SET"));
        let (users, groups) = coalesce(&batch.activities);
        assert_eq!(
            users.into_iter().collect::<Vec<_>>(),
            ["u1", "u3", "u4"],
            "u1's two updates are one read"
        );
        assert_eq!(groups.into_iter().collect::<Vec<_>>(), ["g1"]);
    }

    #[test]
    fn a_body_that_is_not_an_array_of_records_is_set_aside_whole() {
        for body in [&b"{not json"[..], b"42", b"\"text\""] {
            let batch = parse_batch(body);
            assert!(batch.activities.is_empty());
            assert_eq!(batch.skipped.len(), 1);
        }
        let single = serde_json::to_vec(&user_event("e1", "USER.CREATED", "u1")).unwrap();
        assert_eq!(parse_batch(&single).activities.len(), 1);
    }
}
