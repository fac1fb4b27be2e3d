//! Adopting what an uncertain create left behind.
//!
//! After a `POST /users` or `POST /groups` that timed out or answered 5xx, the object may exist
//! anyway. The client looks it up, but an object holding the same userPrincipalName (or group
//! displayName) is only the one this run created if Graph stamped it at or after the moment the
//! create request began: its `createdDateTime` (a read-only DateTimeOffset in UTC, see
//! <https://learn.microsoft.com/en-us/graph/api/resources/user?view=graph-rest-1.0#properties>
//! and <https://learn.microsoft.com/en-us/graph/api/resources/group?view=graph-rest-1.0#properties>)
//! is compared with this machine's clock minus [`CREATE_CLOCK_SKEW`]. Anything older was there
//! before and is reported as a conflict, never silently taken over.

use std::time::{Duration, SystemTime};

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::error::{ErrorContext, GraphError};

/// How far Graph's clock may lag behind this machine's and an object still count as created
/// by this run. It covers clock skew between the two (both are NTP-synchronised, so well under
/// a second in practice) and `createdDateTime` being truncated to whole seconds. An object made
/// by someone else within this window before our request is the residual risk; a larger value
/// widens it, a smaller one turns real skew into false conflicts.
pub(crate) const CREATE_CLOCK_SKEW: Duration = Duration::from_secs(60);

/// `createdDateTime` to `$select` when looking up an uncertain create.
pub(crate) const CREATED_DATE_TIME: &str = "createdDateTime";

/// When a create request began (this machine's clock).
#[derive(Debug, Clone, Copy)]
pub(crate) struct CreateStarted(SystemTime);

impl CreateStarted {
    pub(crate) fn now() -> Self {
        CreateStarted(SystemTime::now())
    }

    /// A start `millis` after the Unix epoch (an earlier run's attempt).
    pub(crate) fn at_unix_millis(millis: i64) -> Self {
        let offset = std::time::Duration::from_millis(u64::try_from(millis).unwrap_or(0));
        CreateStarted(SystemTime::UNIX_EPOCH + offset)
    }

    /// Whether an object stamped `created` (ISO 8601, e.g. `2026-12-02T07:30:00Z`) was created
    /// at or after this start, less [`CREATE_CLOCK_SKEW`]. A missing or unreadable stamp proves
    /// nothing and counts as not created by this run.
    pub(crate) fn covers(&self, created: Option<&str>) -> bool {
        let Some(created) = created.and_then(parse_created) else {
            return false;
        };
        let earliest = self
            .0
            .checked_sub(CREATE_CLOCK_SKEW)
            .unwrap_or(SystemTime::UNIX_EPOCH);
        SystemTime::from(created) >= earliest
    }

    /// The start as ISO 8601 UTC (seconds), for messages.
    pub(crate) fn display(&self) -> String {
        format_utc(OffsetDateTime::from(self.0))
    }
}

fn parse_created(value: &str) -> Option<OffsetDateTime> {
    OffsetDateTime::parse(value.trim(), &Rfc3339).ok()
}

fn format_utc(t: OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

/// What an uncertain create found that it must not adopt.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Found {
    /// A user holding the userPrincipalName.
    User,
    /// A group with the same displayName (and mailNickname).
    Group,
}

/// The per-object conflict for an object that existed before the create began.
pub(crate) fn not_ours(
    found: Found,
    name: &str,
    existing_id: &str,
    existing_created: Option<&str>,
    started: CreateStarted,
) -> GraphError {
    let (path, property, what, fix) = match found {
        Found::User => (
            "/users",
            "userPrincipalName",
            format!("user {name}"),
            "link the existing user to its source record, or give the source record another \
             userPrincipalName",
        ),
        Found::Group => (
            "/groups",
            "displayName",
            format!("group \"{name}\""),
            "link the existing group to its rule, or give the new group another displayName",
        ),
    };
    GraphError::Conflict {
        property: Some(property.to_string()),
        ctx: Box::new(ErrorContext {
            method: "POST".into(),
            path: path.into(),
            message: format!(
                "the create of {what} had an uncertain outcome, and the {what} found afterwards \
                 is object {existing_id}, created {} — before this create began ({}); it was \
                 not made by this run and is not adopted: {fix}",
                existing_created.unwrap_or("at an unknown time"),
                started.display(),
            ),
            ..ErrorContext::default()
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> CreateStarted {
        let t = OffsetDateTime::parse(s, &Rfc3339).unwrap_or_else(|e| panic!("{s}: {e}"));
        CreateStarted(SystemTime::from(t))
    }

    #[test]
    fn only_objects_stamped_after_the_start_less_the_skew_are_ours() {
        let started = at("2026-12-02T07:30:00.700Z");
        assert!(
            started.covers(Some("2026-12-02T07:30:00Z")),
            "truncated to seconds"
        );
        assert!(started.covers(Some("2026-12-02T07:35:00Z")));
        assert!(
            started.covers(Some("2026-12-02T07:29:01Z")),
            "within the skew"
        );
        assert!(
            !started.covers(Some("2026-12-02T07:28:59Z")),
            "beyond the skew"
        );
        assert!(!started.covers(Some("2020-01-01T00:00:00Z")));
        assert!(!started.covers(None));
        assert!(!started.covers(Some("yesterday")));
        assert_eq!(started.display(), "2026-12-02T07:30:00Z");
    }

    #[test]
    fn the_conflict_names_the_object_its_id_and_the_fix() {
        let started = at("2026-12-02T07:30:00Z");
        let e = not_ours(
            Found::User,
            "a@example.com",
            "id-1",
            Some("2020-01-01T00:00:00Z"),
            started,
        );
        assert_eq!(e.kind(), crate::ErrorKind::Conflict);
        let text = e.to_string();
        for part in [
            "a@example.com",
            "id-1",
            "2020-01-01T00:00:00Z",
            "link the existing user",
        ] {
            assert!(text.contains(part), "{text}");
        }
        let text = not_ours(Found::Group, "Sales", "g-1", None, started).to_string();
        assert!(text.contains("\"Sales\"") && text.contains("g-1"), "{text}");
    }
}
