//! Incremental reads where the directory offers no content synchronization (RFC 4533): a
//! `modifyTimestamp` high-water mark (the operational attribute of RFC 4512 section 3.4, kept by
//! OpenLDAP, 389 Directory Server and PingDirectory).
//!
//! - The mark is the latest `modifyTimestamp` in the scope, with the ids of the entries stamped
//!   in that second. A run asks for the users and groups stamped at or after it except those
//!   the mark names (already read in that state), and moves the mark to the latest stamp it saw.
//!   Asking for the mark's second again means a change made in it after the mark was taken is
//!   not missed; a run with nothing changed gets no entry back.
//!   (An entry changed twice within one second, the second time after a read, has the same
//!   stamp both times: the periodic full pass finds that change.)
//! - A stamp names changed and new entries only. Deleted entries, and entries that no longer
//!   match the filter, are found by the periodic full pass (`full_sync_every_hours`), so the
//!   mark is only used when that pass is on; with it off, every run reads the whole scope.

use std::collections::BTreeSet;

use m365_core::config::ldap_source::LdapSourceConfig;
use m365_core::{Change, SourceCursor, SourceError};
use serde_json::{Value, json};

use crate::changes::{Reported, group_without_id, search_base};
use crate::connect::Session;
use crate::entry::{entry_id, texts};
use crate::read::user_record;

/// The version of this source's `modifyTimestamp` cursors.
const STAMP_CURSOR_VERSION: u64 = 1;

const STAMP: &str = "modifyTimestamp";

/// At most this many ids are kept with a mark; past it, none are, and the entries of the
/// mark's second are reported again until a later change moves the mark (they change nothing).
const MAX_IDS_AT_MARK: usize = 1000;

/// A GeneralizedTime as the directory wrote it (`20261205042540Z`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stamp(pub String);

impl Stamp {
    /// Before any entry.
    pub fn origin() -> Stamp {
        Stamp("19700101000000Z".to_owned())
    }

    /// The digits that order it: YYYYMMDDHHMMSS, then any fraction.
    fn order_key(&self) -> String {
        self.0.chars().filter(char::is_ascii_digit).collect()
    }
}

/// A high-water mark: the latest stamp seen and the ids stamped with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mark {
    pub stamp: Stamp,
    pub ids: BTreeSet<String>,
}

impl Mark {
    pub fn origin() -> Mark {
        Mark {
            stamp: Stamp::origin(),
            ids: BTreeSet::new(),
        }
    }

    /// Takes in an entry read with its stamp.
    fn saw(&mut self, stamp: Stamp, id: Option<String>) {
        match stamp.order_key().cmp(&self.stamp.order_key()) {
            std::cmp::Ordering::Less => return,
            std::cmp::Ordering::Greater => {
                self.stamp = stamp;
                self.ids.clear();
            }
            std::cmp::Ordering::Equal => {}
        }
        self.ids.extend(id);
    }

    /// Whether the mark names this entry in this state.
    fn names(&self, stamp: &Stamp, id: Option<&String>) -> bool {
        stamp.order_key() == self.stamp.order_key() && id.is_some_and(|id| self.ids.contains(id))
    }

    /// The filter of entries stamped at or after the mark, but for those it names (so a run
    /// with nothing changed gets no entry back).
    fn filter(&self, config: &LdapSourceConfig) -> String {
        let since = format!("({STAMP}>={})", self.stamp.0);
        if self.ids.is_empty() {
            return since;
        }
        let attribute = config.id_attribute();
        let named: String = self
            .ids
            .iter()
            .map(|id| format!("({attribute}={})", crate::escape_filter_value(id)))
            .collect();
        // Named and still stamped in the mark's second: unchanged since it was read.
        format!("(&{since}(!(&({STAMP}<={})(|{named}))))", self.stamp.0)
    }

    pub fn encode(&self) -> SourceCursor {
        let ids: Vec<&String> = if self.ids.len() <= MAX_IDS_AT_MARK {
            self.ids.iter().collect()
        } else {
            Vec::new()
        };
        SourceCursor(json!({"v": STAMP_CURSOR_VERSION, "stamp": self.stamp.0, "ids": ids}))
    }

    /// The mark of a cursor; `None` when it is not a stamp cursor.
    pub fn decode(cursor: &SourceCursor) -> Option<Result<Mark, SourceError>> {
        let stamp = cursor.0.get("stamp")?;
        let version = cursor.0.get("v").and_then(Value::as_u64);
        let ids: Option<BTreeSet<String>> =
            cursor
                .0
                .get("ids")
                .and_then(Value::as_array)
                .and_then(|ids| {
                    ids.iter()
                        .map(|id| id.as_str().map(str::to_owned))
                        .collect()
                });
        Some(match (version, stamp.as_str(), ids) {
            (Some(STAMP_CURSOR_VERSION), Some(text), Some(ids)) if well_formed(text) => Ok(Mark {
                stamp: Stamp(text.to_owned()),
                ids,
            }),
            _ => Err(SourceError::CursorExpired(format!(
                "ldap source: not a modifyTimestamp cursor of version {STAMP_CURSOR_VERSION}: {}",
                cursor.0
            ))),
        })
    }
}

/// A GeneralizedTime this source can put into a filter: 14 digits, an optional fraction, `Z`.
fn well_formed(text: &str) -> bool {
    let Some(body) = text.strip_suffix('Z') else {
        return false;
    };
    let (whole, fraction) = body.split_once(['.', ',']).unwrap_or((body, ""));
    whole.len() == 14
        && whole.chars().all(|c| c.is_ascii_digit())
        && fraction.chars().all(|c| c.is_ascii_digit())
}

/// The entry's stamp, when it has a readable one.
fn stamp_of(entry: &ldap3::SearchEntry) -> Option<Stamp> {
    texts(entry, STAMP)
        .and_then(|values| values.first())
        .filter(|text| well_formed(text))
        .map(|text| Stamp(text.clone()))
}

/// The searches of the scope with `added` to their filters: (users or groups, base, filter).
fn searches<'c>(config: &'c LdapSourceConfig, added: &str) -> Vec<(bool, &'c String, String)> {
    let users = config
        .user_base_dns
        .iter()
        .map(|base| (true, base, format!("(&{}{added})", config.user_filter())));
    let groups = config
        .group_base_dns
        .iter()
        .map(|base| (false, base, format!("(&{}{added})", config.group_filter())));
    users.chain(groups).collect()
}

fn setting(users: bool) -> &'static str {
    if users {
        "user_base_dns"
    } else {
        "group_base_dns"
    }
}

/// The mark of the scope now (reading the stamp and id of every entry), where a full pass
/// begins; the origin when the scope is empty.
pub async fn latest(session: &mut Session, config: &LdapSourceConfig) -> Result<Mark, SourceError> {
    let mut mark = Mark::origin();
    let attributes = [STAMP, config.id_attribute()].map(str::to_owned);
    for (users, base, filter) in searches(config, "") {
        for entry in search_base(session, setting(users), base, &filter, &attributes).await? {
            if let Some(stamp) = stamp_of(&entry) {
                mark.saw(stamp, entry_id(&entry, config));
            }
        }
    }
    Ok(mark)
}

/// The users and groups stamped at or after `from` that it does not name, and the mark after
/// them.
pub async fn changed_since(
    session: &mut Session,
    config: &LdapSourceConfig,
    user_attributes: &[String],
    from: &Mark,
) -> Result<(Reported, Mark), SourceError> {
    let asked_for_stamp = user_attributes
        .iter()
        .any(|a| a.eq_ignore_ascii_case(STAMP));
    let mut with_stamp = user_attributes.to_vec();
    if !asked_for_stamp {
        with_stamp.push(STAMP.to_owned());
    }
    let group_attributes = vec![config.id_attribute().to_owned(), STAMP.to_owned()];
    let mut reported = Reported::default();
    let mut next = from.clone();
    for (users, base, filter) in searches(config, &from.filter(config)) {
        let attributes = if users {
            &with_stamp
        } else {
            &group_attributes
        };
        for mut entry in search_base(session, setting(users), base, &filter, attributes).await? {
            reported.entries += 1;
            let id = entry_id(&entry, config);
            if let Some(stamp) = stamp_of(&entry) {
                if from.names(&stamp, id.as_ref()) {
                    continue;
                }
                next.saw(stamp, id.clone());
            }
            if users {
                if !asked_for_stamp {
                    entry
                        .attrs
                        .retain(|name, _| !name.eq_ignore_ascii_case(STAMP));
                }
                match user_record(&entry, config) {
                    Ok(user) => reported.changes.push(Change::UpsertUser(user)),
                    Err(error) => reported.errors.push(error),
                }
            } else if let Some(id) = id {
                reported.changed_groups.push(id);
            } else {
                reported.errors.push(group_without_id(&entry.dn, config));
            }
        }
    }
    Ok((reported, next))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stamp(text: &str) -> Stamp {
        Stamp(text.to_owned())
    }

    #[test]
    fn a_mark_keeps_the_latest_second_and_its_ids_and_round_trips() {
        let mut mark = Mark::origin();
        mark.saw(stamp("20261205042540Z"), Some("a".into()));
        mark.saw(stamp("20261205042541Z"), Some("b".into()));
        mark.saw(stamp("20261205042541Z"), Some("c".into()));
        mark.saw(stamp("20261205042539Z"), Some("d".into()));
        assert_eq!(mark.stamp, stamp("20261205042541Z"));
        assert_eq!(mark.ids, ["b".to_owned(), "c".to_owned()].into());
        assert!(mark.names(&stamp("20261205042541Z"), Some(&"b".to_owned())));
        assert!(!mark.names(&stamp("20261205042542Z"), Some(&"b".to_owned())));
        assert!(!mark.names(&stamp("20261205042541Z"), Some(&"a".to_owned())));
        assert_eq!(Mark::decode(&mark.encode()).unwrap().unwrap(), mark);
        let sync = SourceCursor(json!({"v": 1, "sync": {}}));
        assert!(Mark::decode(&sync).is_none());
    }

    #[test]
    fn the_filter_leaves_out_the_entries_the_mark_names() {
        let config: LdapSourceConfig = serde_json::from_value(json!({
            "url": "ldap://127.0.0.1",
            "user_base_dns": ["ou=People,dc=x"]
        }))
        .unwrap();
        let mut mark = Mark::origin();
        assert_eq!(mark.filter(&config), "(modifyTimestamp>=19700101000000Z)");
        mark.saw(stamp("20261205042541Z"), Some("a*".into()));
        mark.saw(stamp("20261205042541Z"), Some("b".into()));
        assert_eq!(
            mark.filter(&config),
            "(&(modifyTimestamp>=20261205042541Z)(!(&(modifyTimestamp<=20261205042541Z)\
             (|(entryUUID=a\\2a)(entryUUID=b)))))"
        );
    }

    #[test]
    fn a_stamp_that_could_change_the_filter_is_refused() {
        for bad in ["2026*)(uid=*", "20261205Z", "", "20261205042540"] {
            let cursor = SourceCursor(json!({"v": 1, "stamp": bad, "ids": []}));
            assert!(
                matches!(
                    Mark::decode(&cursor),
                    Some(Err(SourceError::CursorExpired(_)))
                ),
                "{bad}"
            );
        }
    }
}
