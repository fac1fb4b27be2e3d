//! Incremental reads through PingOne's Audit Activities API
//! (<https://developer.pingidentity.com/pingone-api/platform/audit-activities.html>):
//! `GET /activities?filter=recordedat gt "…"`, the same ACTIVITY records a subscription posts.
//!
//! An activity names what changed; it carries no attribute value, so every user and group it
//! names is read again from the API. Audit records are stored asynchronously, so a record can
//! appear a little after a later one: each read starts [`LAG`] before the newest `recordedAt`
//! seen and skips the records it already handled (the cursor keeps their ids for that window).
//! PingOne keeps 14 days of activities online; an older cursor is expired and the engine makes a
//! full pass.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// How far back before the newest record seen each read starts.
pub const LAG: time::Duration = time::Duration::minutes(2);
/// A cursor older than this is expired: PingOne keeps 14 days online (a day of margin).
pub const RETENTION: time::Duration = time::Duration::days(13);

/// Where the next activities read starts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mark {
    /// The newest `recordedAt` handled (or the moment a full pass began).
    #[serde(with = "time::serde::rfc3339")]
    pub since: OffsetDateTime,
    /// Records handled within [`LAG`] of `since`, by id, with their `recordedAt`.
    #[serde(default)]
    pub seen: BTreeMap<String, String>,
}

impl Mark {
    /// A mark for a full pass starting at `now`: changes made while it reads are read again.
    pub fn starting(now: OffsetDateTime) -> Mark {
        Mark {
            since: truncate_millis(now - LAG),
            seen: BTreeMap::new(),
        }
    }

    /// The `filter` of the next read.
    pub fn filter(&self) -> String {
        format!("recordedat gt \"{}\"", stamp(self.since - LAG))
    }

    pub fn is_expired(&self, now: OffsetDateTime) -> bool {
        now - self.since > RETENTION
    }

    /// The records of a read not handled before, and the mark after them.
    pub fn advance(&self, records: Vec<Value>) -> (Vec<Value>, Mark) {
        let mut since = self.since;
        let mut seen = self.seen.clone();
        let mut fresh = Vec::new();
        for record in records {
            let Some(id) = record.get("id").and_then(Value::as_str).map(str::to_owned) else {
                continue;
            };
            let Some(at) = recorded_at(&record) else {
                continue;
            };
            if seen.contains_key(&id) {
                continue;
            }
            since = since.max(at);
            seen.insert(id, stamp(at));
            fresh.push(record);
        }
        let horizon = since - LAG - LAG;
        seen.retain(|_, at| parse(at).is_some_and(|at| at > horizon));
        (fresh, Mark { since, seen })
    }
}

fn recorded_at(record: &Value) -> Option<OffsetDateTime> {
    record
        .get("recordedAt")
        .and_then(Value::as_str)
        .and_then(parse)
}

fn parse(text: &str) -> Option<OffsetDateTime> {
    OffsetDateTime::parse(text, &Rfc3339).ok()
}

fn truncate_millis(at: OffsetDateTime) -> OffsetDateTime {
    let millis = at.millisecond();
    at.replace_millisecond(millis).unwrap_or(at)
}

/// `2026-12-05T11:33:16.123Z`: how PingOne writes and filters `recordedAt`.
pub fn stamp(at: OffsetDateTime) -> String {
    let at = at.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        at.year(),
        u8::from(at.month()),
        at.day(),
        at.hour(),
        at.minute(),
        at.second(),
        at.millisecond()
    )
}

/// What a set of activities asks to read again.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Targets {
    /// Users to read again (created, updated, moved, membership changed).
    pub users: BTreeSet<String>,
    /// Users PingOne deleted.
    pub deleted_users: BTreeSet<String>,
    /// Groups to read again (created, updated, members changed).
    pub groups: BTreeSet<String>,
    /// Groups PingOne deleted.
    pub deleted_groups: BTreeSet<String>,
}

impl Targets {
    pub fn len(&self) -> usize {
        self.users.len() + self.deleted_users.len() + self.groups.len() + self.deleted_groups.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Adds what one ACTIVITY record names. Failed actions, and action types that do not
    /// change users, groups or memberships, add nothing. Returns whether it was understood
    /// (an unknown shape is `false`; a known type that needs nothing is `true`).
    pub fn add(&mut self, record: &Value) -> bool {
        let Some(action) = record.pointer("/action/type").and_then(Value::as_str) else {
            return false;
        };
        if record.pointer("/result/status").and_then(Value::as_str) == Some("FAILED") {
            return true;
        }
        let Some(resources) = record.get("resources").and_then(Value::as_array) else {
            return false;
        };
        let kind = ActionKind::of(action);
        for resource in resources {
            let rtype = resource.get("type").and_then(Value::as_str).unwrap_or("");
            let id = resource.get("id").and_then(Value::as_str).unwrap_or("");
            match (kind, rtype) {
                (ActionKind::UserChanged, "USER") if !id.is_empty() => {
                    self.deleted_users.remove(id);
                    self.users.insert(id.to_owned());
                }
                (ActionKind::UserDeleted, "USER") if !id.is_empty() => {
                    self.users.remove(id);
                    self.deleted_users.insert(id.to_owned());
                }
                (ActionKind::GroupChanged, "GROUP") if !id.is_empty() => {
                    self.deleted_groups.remove(id);
                    self.groups.insert(id.to_owned());
                }
                (ActionKind::GroupDeleted, "GROUP") if !id.is_empty() => {
                    self.groups.remove(id);
                    self.deleted_groups.insert(id.to_owned());
                }
                (ActionKind::MembershipChanged, "MEMBER_OF_GROUP") => {
                    let href = resource.get("href").and_then(Value::as_str).unwrap_or("");
                    let Some((user, group)) = membership_of(href) else {
                        return false;
                    };
                    self.users.insert(user);
                    if !self.deleted_groups.contains(&group) {
                        self.groups.insert(group);
                    }
                }
                _ => {}
            }
        }
        true
    }
}

/// The action types the source acts on, from PingOne's audit reporting events
/// (<https://developer.pingidentity.com/pingone-api/platform/reference/audit-reporting-events.html>).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ActionKind {
    /// `USER.CREATED`, `USER.UPDATED`, `USER.MOVED` (population change), `USER.LOCKED`,
    /// `USER.UNLOCKED`: read the user again. An `enabled` change arrives as `USER.UPDATED`.
    UserChanged,
    UserDeleted,
    /// `GROUP.CREATED`, `GROUP.UPDATED`.
    GroupChanged,
    GroupDeleted,
    /// `MEMBER_OF_GROUP.CREATED`, `MEMBER_OF_GROUP.DELETED`.
    MembershipChanged,
    /// Anything else (sign-ons, passwords, roles, populations, applications).
    Other,
}

impl ActionKind {
    pub fn of(action: &str) -> ActionKind {
        match action {
            "USER.CREATED" | "USER.UPDATED" | "USER.MOVED" | "USER.LOCKED" | "USER.UNLOCKED" => {
                ActionKind::UserChanged
            }
            "USER.DELETED" => ActionKind::UserDeleted,
            "GROUP.CREATED" | "GROUP.UPDATED" => ActionKind::GroupChanged,
            "GROUP.DELETED" => ActionKind::GroupDeleted,
            "MEMBER_OF_GROUP.CREATED" | "MEMBER_OF_GROUP.DELETED" => ActionKind::MembershipChanged,
            _ => ActionKind::Other,
        }
    }
}

/// The user and group ids of a membership's href, `…/users/{userId}/memberOfGroups/{groupId}`
/// (the resource's own `id` is not documented to be either).
pub fn membership_of(href: &str) -> Option<(String, String)> {
    let path = href.split(['?', '#']).next()?;
    let (head, group) = path.trim_end_matches('/').rsplit_once("/memberOfGroups/")?;
    let (_, user) = head.rsplit_once("/users/")?;
    let valid = |s: &str| !s.is_empty() && !s.contains('/');
    (valid(user) && valid(group)).then(|| (user.to_owned(), group.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn record(id: &str, at: &str, action: &str, resources: Value) -> Value {
        json!({
            "id": id, "recordedAt": at,
            "action": {"type": action},
            "resources": resources,
            "result": {"status": "SUCCESS"},
        })
    }

    #[test]
    fn a_mark_skips_what_it_handled_and_moves_to_the_newest_record() {
        let start = OffsetDateTime::parse("2026-12-05T10:00:00.000Z", &Rfc3339).unwrap();
        let mark = Mark::starting(start);
        assert_eq!(mark.filter(), "recordedat gt \"2026-12-05T09:56:00.000Z\"");
        let a = record("a", "2026-12-05T10:00:01.000Z", "USER.UPDATED", json!([]));
        let b = record("b", "2026-12-05T10:00:02.500Z", "USER.UPDATED", json!([]));
        let (fresh, mark) = mark.advance(vec![a.clone(), b.clone()]);
        assert_eq!(fresh.len(), 2);
        assert_eq!(stamp(mark.since), "2026-12-05T10:00:02.500Z");
        // The next read overlaps: both come back, neither is handled again; a late record that
        // is older than the newest is still taken.
        let late = record("c", "2026-12-05T10:00:01.500Z", "USER.DELETED", json!([]));
        let (fresh, mark) = mark.advance(vec![a, late, b]);
        assert_eq!(fresh.len(), 1);
        assert_eq!(fresh[0]["id"], "c");
        assert_eq!(stamp(mark.since), "2026-12-05T10:00:02.500Z");
        let json = serde_json::to_value(&mark).unwrap();
        assert_eq!(serde_json::from_value::<Mark>(json).unwrap(), mark);
    }

    #[test]
    fn a_mark_older_than_the_retention_is_expired() {
        let now = OffsetDateTime::now_utc();
        assert!(!Mark::starting(now).is_expired(now));
        assert!(Mark::starting(now - time::Duration::days(14)).is_expired(now));
    }

    #[test]
    fn activities_name_what_to_read_again() {
        let mut targets = Targets::default();
        let user = |id: &str| json!([{"type": "USER", "id": id}]);
        assert!(targets.add(&record("1", "", "USER.UPDATED", user("u1"))));
        assert!(targets.add(&record("2", "", "USER.DELETED", user("u2"))));
        assert!(targets.add(&record("3", "", "USER.CREATED", user("u2"))));
        assert!(targets.add(&record(
            "4",
            "",
            "GROUP.DELETED",
            json!([{"type": "GROUP", "id": "g9"}])
        )));
        assert!(targets.add(&record(
            "5",
            "",
            "MEMBER_OF_GROUP.CREATED",
            json!([{"type": "MEMBER_OF_GROUP", "id": "m", "href": "https://api.pingone.com/v1/environments/e/users/u3/memberOfGroups/g1"}])
        )));
        assert!(targets.add(&record("6", "", "PASSWORD.SET", user("u4"))));
        assert!(!targets.add(&json!({"id": "7"})));
        assert_eq!(
            targets.users,
            BTreeSet::from(["u1".to_owned(), "u2".to_owned(), "u3".to_owned()])
        );
        assert!(targets.deleted_users.is_empty());
        assert_eq!(targets.groups, BTreeSet::from(["g1".to_owned()]));
        assert_eq!(targets.deleted_groups, BTreeSet::from(["g9".to_owned()]));
    }

    #[test]
    fn memberships_come_from_the_href() {
        assert_eq!(
            membership_of("https://api.pingone.eu/v1/environments/e/users/u/memberOfGroups/g"),
            Some(("u".to_owned(), "g".to_owned()))
        );
        assert_eq!(
            membership_of("https://api.pingone.eu/v1/environments/e/groups/g"),
            None
        );
    }
}
