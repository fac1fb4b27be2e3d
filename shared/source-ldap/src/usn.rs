//! Incremental reads from Active Directory through `uSNChanged`, as Microsoft describes in
//! "Polling for Changes Using the USNChanged Attribute"
//! (<https://learn.microsoft.com/en-us/windows/win32/ad/polling-for-changes-using-usnchanged>).
//!
//! - The cursor is a high-water mark of one domain controller: its `dsServiceName`, its
//!   `invocationId` and the `highestCommittedUSN` read before the searches. USNs are counted per
//!   controller, so an answer from another controller, or from the same one restored from a
//!   backup (a new `invocationId`), means the cursor has expired and the engine reads the whole
//!   directory.
//! - A run with nothing changed reads the root DSE and the controller's settings object, and no
//!   entry: the mark has not moved.
//! - Otherwise, in this order: every entry of the domain changed since the mark (ids only), then
//!   the changed users and groups of the configured searches, then the objects deleted since the
//!   mark (Show Deleted control). A changed entry the configured searches no longer find has left
//!   the scope (moved out of the base DN, or no longer matching the filter) and is reported
//!   deleted, like a deleted object; the engine ignores deletions of identities it never linked.
//!   Reading the wide search first means an entry that moves into scope meanwhile is found by the
//!   scoped search, never taken for a departure.
//! - A change made after the mark was read is reported again by the next run: applying a change
//!   twice changes nothing.

use m365_core::config::ldap_source::LdapSourceConfig;
use m365_core::{Change, SourceCursor, SourceError};
use serde_json::{Value, json};

use crate::changes::{Reported, group_without_id, search_base};
use crate::connect::{SearchError, Session};
use crate::entry::{binary, entry_id, guid_string, texts};
use crate::read::user_record;

/// The version of this source's `uSNChanged` cursors.
const USN_CURSOR_VERSION: u64 = 1;

/// One domain controller's high-water mark.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Watermark {
    /// The controller's `dsServiceName` (the DN of its NTDS Settings object).
    pub server: String,
    /// Its `invocationId`, as a GUID string.
    pub invocation: String,
    /// Its `highestCommittedUSN`.
    pub usn: u64,
}

impl Watermark {
    pub fn encode(&self) -> SourceCursor {
        SourceCursor(json!({
            "v": USN_CURSOR_VERSION,
            "usn": {"server": self.server, "invocation": self.invocation, "usn": self.usn}
        }))
    }

    /// The mark of a cursor, or why it cannot be used.
    pub fn decode(cursor: &SourceCursor) -> Result<Watermark, SourceError> {
        let value = &cursor.0;
        let mark = value.get("usn");
        let text = |key: &str| mark.and_then(|m| m.get(key)).and_then(Value::as_str);
        match (
            value.get("v").and_then(Value::as_u64),
            text("server"),
            text("invocation"),
            mark.and_then(|m| m.get("usn")).and_then(Value::as_u64),
        ) {
            (Some(USN_CURSOR_VERSION), Some(server), Some(invocation), Some(usn)) => {
                Ok(Watermark {
                    server: server.to_owned(),
                    invocation: invocation.to_owned(),
                    usn,
                })
            }
            _ => Err(SourceError::CursorExpired(format!(
                "ldap source: not an Active Directory changes cursor of version {USN_CURSOR_VERSION}: {value}"
            ))),
        }
    }

    /// Whether changes since `self` can be read from the controller whose mark is `now`.
    fn continued_by(&self, now: &Watermark) -> Result<(), SourceError> {
        let expired = |why: String| Err(SourceError::CursorExpired(format!("ldap source: {why}")));
        if now.server != self.server {
            return expired(format!(
                "the directory answered from domain controller {:?}, the cursor is of {:?} \
                 (update sequence numbers are counted per controller)",
                now.server, self.server
            ));
        }
        if now.invocation != self.invocation {
            return expired(format!(
                "domain controller {:?} has a new invocationId ({} instead of {}): it was \
                 restored from a backup, and changes it counted since then are unknown",
                now.server, now.invocation, self.invocation
            ));
        }
        if now.usn < self.usn {
            return expired(format!(
                "domain controller {:?} counts {} updates, fewer than the cursor's {}",
                now.server, now.usn, self.usn
            ));
        }
        Ok(())
    }
}

/// The controller's mark now, and the domain's naming context.
pub async fn watermark(session: &mut Session) -> Result<(Watermark, String), SourceError> {
    let odd = |what: &str| {
        SourceError::Unavailable(format!(
            "ldap source: the directory's root DSE has no {what}; is it Active Directory? \
             (directory = \"active-directory\")"
        ))
    };
    let attributes = [
        "highestCommittedUSN",
        "dsServiceName",
        "defaultNamingContext",
    ]
    .map(str::to_owned)
    .to_vec();
    let root = session
        .read("", &attributes)
        .await?
        .ok_or_else(|| odd("entry"))?;
    let first = |name: &str| texts(&root, name).and_then(|v| v.first()).cloned();
    let usn = first("highestCommittedUSN")
        .and_then(|v| v.parse::<u64>().ok())
        .ok_or_else(|| odd("highestCommittedUSN"))?;
    let server = first("dsServiceName").ok_or_else(|| odd("dsServiceName"))?;
    let domain = first("defaultNamingContext").ok_or_else(|| odd("defaultNamingContext"))?;
    let settings = session
        .read(&server, &["invocationId".to_owned()])
        .await?
        .ok_or_else(|| odd("readable dsServiceName entry"))?;
    let invocation = binary(&settings, "invocationId")
        .and_then(|bytes| guid_string(&bytes))
        .ok_or_else(|| odd("invocationId on its dsServiceName entry"))?;
    Ok((
        Watermark {
            server,
            invocation,
            usn,
        },
        domain,
    ))
}

/// What changed since `from`, and the mark to continue from.
pub async fn changed_since(
    session: &mut Session,
    config: &LdapSourceConfig,
    user_attributes: &[String],
    from: &Watermark,
) -> Result<(Reported, Watermark), SourceError> {
    let (now, domain) = watermark(session).await?;
    from.continued_by(&now)?;
    let mut reported = Reported::default();
    if now.usn == from.usn {
        return Ok((reported, now));
    }
    let since = format!("(uSNChanged>={})", from.usn.saturating_add(1));
    let id_only = vec![config.id_attribute().to_owned(), "objectClass".to_owned()];
    let touched = search_base(
        session,
        "the domain (defaultNamingContext)",
        &domain,
        &since,
        &id_only,
    )
    .await?;
    let mut found = std::collections::BTreeSet::new();
    for base in &config.user_base_dns {
        let filter = format!("(&{}{since})", config.user_filter());
        for entry in search_base(session, "user_base_dns", base, &filter, user_attributes).await? {
            reported.entries += 1;
            match user_record(&entry, config) {
                Ok(user) => {
                    found.insert(user.id.clone());
                    reported.changes.push(Change::UpsertUser(user));
                }
                Err(error) => {
                    found.extend(error.source_id.clone());
                    reported.errors.push(error);
                }
            }
        }
    }
    for base in &config.group_base_dns {
        let filter = format!("(&{}{since})", config.group_filter());
        for entry in search_base(session, "group_base_dns", base, &filter, &id_only).await? {
            reported.entries += 1;
            match entry_id(&entry, config) {
                Some(id) => {
                    found.insert(id.clone());
                    reported.changed_groups.push(id);
                }
                None => reported.errors.push(group_without_id(&entry.dn, config)),
            }
        }
    }
    let deleted_filter = format!("(&(isDeleted=TRUE){since})");
    let deleted = session
        .search_showing_deleted(&domain, &deleted_filter, &id_only)
        .await
        .map_err(|error| match error {
            SearchError::NoSuchBase(base) => SourceError::Unavailable(format!(
                "ldap source: the domain {base:?} (defaultNamingContext) cannot be searched for \
                 deleted objects"
            )),
            SearchError::Failed(error) => error,
        })?;
    for entry in touched.iter().chain(&deleted) {
        reported.entries += 1;
        let Some(id) = entry_id(entry, config) else {
            continue;
        };
        if found.contains(&id) {
            continue;
        }
        let group = texts(entry, "objectClass")
            .is_some_and(|classes| classes.iter().any(|c| c.eq_ignore_ascii_case("group")));
        reported.changes.push(if group {
            Change::DeleteGroup { id }
        } else {
            Change::DeleteUser { id }
        });
    }
    Ok((reported, now))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mark(server: &str, invocation: &str, usn: u64) -> Watermark {
        Watermark {
            server: server.to_owned(),
            invocation: invocation.to_owned(),
            usn,
        }
    }

    #[test]
    fn a_mark_round_trips_and_a_sync_cookie_is_not_one() {
        let m = mark(
            "CN=NTDS Settings,CN=DC1",
            "6f97b738-cd88-4349-8a21-62ff10ebb254",
            4012,
        );
        assert_eq!(Watermark::decode(&m.encode()).unwrap(), m);
        let cookie = SourceCursor(json!({"v": 1, "sync": {"users x y": "Y3NuPTE="}}));
        assert!(matches!(
            Watermark::decode(&cookie),
            Err(SourceError::CursorExpired(_))
        ));
    }

    #[test]
    fn another_controller_a_restored_one_or_a_lower_count_expires_the_mark() {
        let from = mark("CN=DC1", "a", 100);
        assert!(from.continued_by(&mark("CN=DC1", "a", 100)).is_ok());
        assert!(from.continued_by(&mark("CN=DC1", "a", 250)).is_ok());
        for (now, says) in [
            (mark("CN=DC2", "a", 300), "answered from domain controller"),
            (mark("CN=DC1", "b", 300), "restored from a backup"),
            (mark("CN=DC1", "a", 99), "fewer than"),
        ] {
            let error = from.continued_by(&now).unwrap_err();
            assert!(
                matches!(&error, SourceError::CursorExpired(m) if m.contains(says)),
                "{error}"
            );
        }
    }
}
