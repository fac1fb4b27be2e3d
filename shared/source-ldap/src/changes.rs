//! Incremental reads through content synchronization (`crate::sync`): one cookie per search
//! (each user base DN with the user filter, each group base DN with the group filter), kept
//! together in the engine's changes cursor.
//!
//! - A changed user is read whole from its sync answer (the same attributes as a full read).
//! - A deleted entry, or one that no longer matches its search, is a delete: the engine
//!   deprovisions the user (the circuit breaker weighing it) or the group.
//! - A changed group is taken from a full read of the directory, because its members are DNs
//!   that only the users read resolve to ids (with `nested_groups`, every group is, since a
//!   member group's change moves its parents' members).
//! - A cookie the server no longer accepts, an answer with a present phase instead of named
//!   deletions, or a cursor whose searches are not this configuration's: the cursor has expired
//!   and the engine reads the whole directory.

use std::collections::BTreeMap;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use m365_core::config::ldap_source::LdapSourceConfig;
use m365_core::{Change, ChangePage, RecordError, SourceCursor, SourceError};
use serde_json::{Value, json};

use crate::connect::{SearchError, Session, SyncError};
use crate::read::user_record;
use crate::sync::SyncAnswer;

/// The version of this source's changes cursors.
const CHANGES_CURSOR_VERSION: u64 = 1;

/// Users or groups: what a synchronized search reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Searched {
    Users,
    Groups,
}

/// One synchronized search.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncedSearch {
    pub searched: Searched,
    pub base: String,
    pub filter: String,
}

impl SyncedSearch {
    /// The searches of a configuration, in a fixed order.
    pub fn all(config: &LdapSourceConfig) -> Vec<SyncedSearch> {
        let users = config.user_base_dns.iter().map(|base| SyncedSearch {
            searched: Searched::Users,
            base: base.clone(),
            filter: config.user_filter().to_owned(),
        });
        let groups = config.group_base_dns.iter().map(|base| SyncedSearch {
            searched: Searched::Groups,
            base: base.clone(),
            filter: config.group_filter().to_owned(),
        });
        users.chain(groups).collect()
    }

    /// Its key in the cursor: a cookie belongs to one base and filter.
    fn key(&self) -> String {
        let kind = match self.searched {
            Searched::Users => "users",
            Searched::Groups => "groups",
        };
        format!("{kind} {} {}", self.base, self.filter)
    }

    fn base_key(&self) -> &'static str {
        match self.searched {
            Searched::Users => "user_base_dns",
            Searched::Groups => "group_base_dns",
        }
    }
}

/// The cookies of a changes cursor, by search key.
pub type Cookies = BTreeMap<String, Vec<u8>>;

pub fn encode_cursor(cookies: &Cookies) -> SourceCursor {
    let cookies: serde_json::Map<String, Value> = cookies
        .iter()
        .map(|(key, cookie)| (key.clone(), Value::String(STANDARD.encode(cookie))))
        .collect();
    SourceCursor(json!({"v": CHANGES_CURSOR_VERSION, "sync": cookies}))
}

/// The cookie of each search, or why the cursor cannot be used with this configuration.
pub fn decode_cursor(
    cursor: &SourceCursor,
    searches: &[SyncedSearch],
) -> Result<Vec<Vec<u8>>, SourceError> {
    let expired = |why: String| SourceError::CursorExpired(format!("ldap source: {why}"));
    let value = &cursor.0;
    let version = value.get("v").and_then(Value::as_u64);
    let Some(cookies) = value.get("sync").and_then(Value::as_object) else {
        return Err(expired(format!(
            "not a changes cursor of this source: {value}"
        )));
    };
    if version != Some(CHANGES_CURSOR_VERSION) {
        return Err(expired(format!(
            "a changes cursor of version {version:?}, not {CHANGES_CURSOR_VERSION}"
        )));
    }
    searches
        .iter()
        .map(|search| {
            let key = search.key();
            let cookie = cookies.get(&key).and_then(Value::as_str).ok_or_else(|| {
                expired(format!(
                    "the cursor holds no cookie for {key:?}: the bases or filters changed since it was taken"
                ))
            })?;
            STANDARD
                .decode(cookie)
                .map_err(|e| expired(format!("the cookie of {key:?} is not base64: {e}")))
        })
        .collect()
}

/// What the changed searches report, before changed groups are read.
#[derive(Debug, Default)]
pub struct Reported {
    pub changes: Vec<Change>,
    pub errors: Vec<RecordError>,
    /// Ids of groups added or changed.
    pub changed_groups: Vec<String>,
    pub cookies: Cookies,
    /// Entries the searches returned (a deletion content synchronization names by id alone is
    /// not an entry).
    pub entries: u64,
}

/// Runs every search from its cookie (`None`: from the start, reading no attribute) and
/// gathers what they report.
pub async fn synchronize(
    session: &mut Session,
    config: &LdapSourceConfig,
    user_attributes: &[String],
    cookies: Option<&[Vec<u8>]>,
) -> Result<Option<Reported>, SourceError> {
    let mut reported = Reported::default();
    for (index, search) in SyncedSearch::all(config).iter().enumerate() {
        let cookie = cookies.and_then(|c| c.get(index)).map(Vec::as_slice);
        let attributes = match (cookie, search.searched) {
            (None, _) => vec!["1.1".to_owned()],
            (Some(_), Searched::Users) => user_attributes.to_vec(),
            (Some(_), Searched::Groups) => vec![config.id_attribute().to_owned()],
        };
        let answer = match session
            .sync_search(&search.base, &search.filter, &attributes, cookie)
            .await
        {
            Ok(answer) => answer,
            Err(SyncError::NoSuchBase(base)) => {
                return Err(SourceError::Unavailable(format!(
                    "ldap source: {} {base:?} does not exist in the directory; fix {}",
                    search.base_key(),
                    search.base_key()
                )));
            }
            Err(SyncError::Expired(why)) => return Err(SourceError::CursorExpired(why)),
            Err(SyncError::Failed(error)) => return Err(error),
        };
        if !answer.synchronized {
            tracing::info!(
                base = %search.base,
                "the directory does not offer content synchronization (RFC 4533) on this search; every run reads it whole"
            );
            return Ok(None);
        }
        reported.entries += answer.changed.len() as u64;
        let Some(next) = answer.cookie.clone().or(cookie.map(<[u8]>::to_vec)) else {
            return Ok(None);
        };
        if cookie.is_some() {
            take_in(&mut reported, search, answer, config)?;
        }
        reported.cookies.insert(search.key(), next);
    }
    Ok(Some(reported))
}

/// Adds one search's answer to the report.
fn take_in(
    reported: &mut Reported,
    search: &SyncedSearch,
    answer: SyncAnswer,
    config: &LdapSourceConfig,
) -> Result<(), SourceError> {
    if answer.present_phase {
        return Err(SourceError::CursorExpired(format!(
            "ldap source: the directory answered the search of {:?} with the list of entries \
             still present instead of naming the deleted ones (its syncprov session log does not \
             reach back to the last run, e.g. after a restart; see olcSpSessionlog)",
            search.base
        )));
    }
    match search.searched {
        Searched::Users => {
            for entry in &answer.changed {
                match user_record(entry, config) {
                    Ok(user) => reported.changes.push(Change::UpsertUser(user)),
                    Err(error) => reported.errors.push(error),
                }
            }
            reported.changes.extend(
                answer
                    .deleted
                    .into_iter()
                    .map(|id| Change::DeleteUser { id }),
            );
        }
        Searched::Groups => {
            for entry in &answer.changed {
                match entry
                    .attrs
                    .get(config.id_attribute())
                    .and_then(|v| v.first())
                {
                    Some(id) => reported.changed_groups.push(id.clone()),
                    None => reported.errors.push(group_without_id(&entry.dn, config)),
                }
            }
            reported.changes.extend(
                answer
                    .deleted
                    .into_iter()
                    .map(|id| Change::DeleteGroup { id }),
            );
        }
    }
    Ok(())
}

/// A changed group entry without its id.
pub fn group_without_id(dn: &str, config: &LdapSourceConfig) -> RecordError {
    RecordError {
        kind: m365_core::ObjectKind::Group,
        location: dn.to_owned(),
        source_id: None,
        message: format!(
            "the entry has no {}; check that the bind DN may read it",
            config.id_attribute()
        ),
    }
}

/// A paged search under a configured base (`setting` names it: `user_base_dns`, ...); a base
/// that does not exist is an error naming the setting to fix.
pub async fn search_base(
    session: &mut Session,
    setting: &str,
    base: &str,
    filter: &str,
    attributes: &[String],
) -> Result<Vec<ldap3::SearchEntry>, SourceError> {
    session
        .search(base, filter, attributes)
        .await
        .map_err(|error| match error {
            SearchError::NoSuchBase(base) => SourceError::Unavailable(format!(
                "ldap source: {setting} {base:?} does not exist in the directory; fix {setting}"
            )),
            SearchError::Failed(error) => error,
        })
}

/// The page the engine gets. A search reports an entry another search of the same kind still
/// finds as "no longer matching" when it changed (a user changed under one of two base DNs, a
/// group changed under the users' base): an identity reported both ways is not deleted.
pub fn page(reported: Reported, next: SourceCursor) -> ChangePage {
    let mut found = std::collections::BTreeSet::new();
    for change in &reported.changes {
        match change {
            Change::UpsertUser(user) => found.insert(("user", user.id.clone())),
            Change::UpsertGroup(group) => found.insert(("group", group.id.clone())),
            Change::DeleteUser { .. } | Change::DeleteGroup { .. } => false,
        };
    }
    let changes = reported
        .changes
        .into_iter()
        .filter(|change| match change {
            Change::DeleteUser { id } => !found.contains(&("user", id.clone())),
            Change::DeleteGroup { id } => !found.contains(&("group", id.clone())),
            Change::UpsertUser(_) | Change::UpsertGroup(_) => true,
        })
        .collect();
    ChangePage {
        changes,
        errors: reported.errors,
        next,
        more: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(extra: Value) -> LdapSourceConfig {
        let mut value = json!({"url": "ldap://127.0.0.1", "user_base_dns": ["ou=People,dc=x"]});
        if let (Some(base), Value::Object(extra)) = (value.as_object_mut(), extra) {
            base.extend(extra);
        }
        serde_json::from_value(value).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn a_cursor_round_trips_and_belongs_to_its_searches() {
        let with_groups = config(json!({"group_base_dns": ["ou=Groups,dc=x"]}));
        let searches = SyncedSearch::all(&with_groups);
        let cookies: Cookies = searches
            .iter()
            .enumerate()
            .map(|(i, s)| (s.key(), vec![b'a' + i as u8; 3]))
            .collect();
        let cursor = encode_cursor(&cookies);
        assert_eq!(
            decode_cursor(&cursor, &searches).unwrap(),
            vec![b"aaa".to_vec(), b"bbb".to_vec()]
        );
        let other_filter = config(json!({
            "group_base_dns": ["ou=Groups,dc=x"],
            "user_filter": "(objectClass=person)"
        }));
        let error = decode_cursor(&cursor, &SyncedSearch::all(&other_filter)).unwrap_err();
        assert!(
            matches!(&error, SourceError::CursorExpired(m) if m.contains("bases or filters changed")),
            "{error}"
        );
        let snapshot_cursor = SourceCursor(json!({"v": 1, "read": 4, "offset": 0}));
        assert!(matches!(
            decode_cursor(&snapshot_cursor, &searches),
            Err(SourceError::CursorExpired(_))
        ));
    }
}
