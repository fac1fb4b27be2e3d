//! The LDAP source: users and groups from OpenLDAP, 389 Directory Server, PingDirectory or
//! Active Directory (`[source] type = "ldap"`, settings in
//! [`m365_core::config::ldap_source::LdapSourceConfig`]).
//!
//! - **Identity**: `entryUUID` (RFC 4530) or Active Directory's `objectGUID` (shown as a GUID
//!   string; the raw bytes stay available to the mapping as `objectGUID`, for
//!   `guid_to_immutable_id`). A renamed or moved entry keeps its id, so it keeps its tenant user.
//! - **DNs** are compared in one normal form (`entry::normalize_dn`): every user carries its own
//!   DN as `dn` and its `manager` as a DN, so the engine's `manager.reference = "dn"` links
//!   managers.
//! - **Groups**: `member` (groupOfNames, Active Directory) and `uniqueMember`
//!   (groupOfUniqueNames) resolved to user ids; members outside the user scope are left out;
//!   nested groups are flattened with `nested_groups = true`.
//! - **Snapshots** are read in one session with paged results (RFC 2696), then handed to the
//!   engine page by page. A paged-results cookie belongs to its connection, so a snapshot cursor
//!   is valid only in the process that read it: elsewhere it is expired and the snapshot starts
//!   over (`resumable_snapshot` is false).
//! - **Changes**: with `content_sync` (the default), a run after the first reads only what
//!   changed: through RFC 4533 content synchronization on OpenLDAP and its kin ([`changes`]),
//!   or a `modifyTimestamp` mark where they do not offer it ([`stamp`]); through `uSNChanged`
//!   on Active Directory ([`usn`]).
//! - **The bind password** is a connection secret (never in the configuration file).

pub mod changes;
pub mod connect;
pub mod entry;
pub mod read;
pub mod stamp;
pub mod sync;
pub mod usn;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use m365_core::config::ldap_source::{DirectoryKind, LdapSourceConfig, LdapSourceConfigError};
use m365_core::{
    Change, ChangePage, ConnectionSecrets, SnapshotPage, Source, SourceCapabilities, SourceCursor,
    SourceError, SourceGroup, SourceUser,
};
use serde_json::json;

use crate::connect::{Credentials, SearchError, Session};
use crate::read::{DirectoryRead, read_directory, user_attributes, user_record};

/// The version of this source's snapshot cursors.
const CURSOR_VERSION: u64 = 1;

/// An LDAP directory as a [`Source`].
pub struct LdapSource {
    config: LdapSourceConfig,
    credentials: Credentials,
    /// The user attributes the rule reads (`None`: all).
    mapped: Option<BTreeSet<String>>,
    /// The last full read, and the token its cursors carry.
    snapshot: Mutex<Option<(u64, Arc<DirectoryRead>)>>,
    /// Entries the directory returned to this source so far (status and benchmarks).
    entries_read: AtomicU64,
}

impl LdapSource {
    /// A source on `config`, binding with the password the connection's secrets hold under
    /// `bind_password_secret`, reading the user attributes `mapped` names (the rule's,
    /// [`m365_core::config::RuleConfig::user_source_attributes`]; `None`: every attribute).
    pub fn new(
        config: LdapSourceConfig,
        secrets: &ConnectionSecrets,
        mapped: Option<BTreeSet<String>>,
    ) -> Result<LdapSource, LdapSourceConfigError> {
        config.validate()?;
        let credentials = Credentials {
            bind_dn: config.bind_dn.clone(),
            password: secrets.extra.get(&config.bind_password_secret).cloned(),
        };
        Ok(LdapSource {
            config,
            credentials,
            mapped,
            snapshot: Mutex::new(None),
            entries_read: AtomicU64::new(0),
        })
    }

    /// Entries the directory has returned to this source: users, groups and unreadable entries
    /// of full reads; changed entries of change reads (and every entry of a content
    /// synchronization's first search, which reads no attribute).
    pub fn entries_read(&self) -> u64 {
        self.entries_read.load(Ordering::Relaxed)
    }

    fn count_entries(&self, entries: u64) {
        self.entries_read.fetch_add(entries, Ordering::Relaxed);
    }

    async fn session(&self) -> Result<Session, SourceError> {
        Session::open(&self.config, &self.credentials).await
    }

    /// A new full read, kept for the pages that follow.
    async fn read_all(&self) -> Result<(u64, Arc<DirectoryRead>), SourceError> {
        let mut session = self.session().await?;
        let read = read_directory(&mut session, &self.config, self.mapped.as_ref()).await;
        session.close().await;
        let read = Arc::new(read?);
        self.count_entries((read.users.len() + read.groups.len() + read.errors.len()) as u64);
        // 53 bits: the token survives any JSON reader that holds numbers as doubles.
        let token = rand::random::<u64>() >> 11;
        tracing::info!(
            url = %self.config.url,
            users = read.users.len(),
            groups = read.groups.len(),
            errors = read.errors.len(),
            "directory read"
        );
        if let Ok(mut slot) = self.snapshot.lock() {
            *slot = Some((token, read.clone()));
        }
        Ok((token, read))
    }

    /// The read this source already made, else a new one. A source lives for one run (a CLI
    /// command, one invocation), so single-identity reads of a run share one directory read
    /// instead of reading the whole scope once per identity.
    async fn current_read(&self) -> Result<Arc<DirectoryRead>, SourceError> {
        let held = self
            .snapshot
            .lock()
            .ok()
            .and_then(|slot| slot.as_ref().map(|(_, read)| read.clone()));
        match held {
            Some(read) => Ok(read),
            None => Ok(self.read_all().await?.1),
        }
    }

    fn cached(&self, token: u64) -> Option<Arc<DirectoryRead>> {
        let slot = self.snapshot.lock().ok()?;
        slot.as_ref()
            .filter(|(held, _)| *held == token)
            .map(|(_, read)| read.clone())
    }

    /// Where changes start on OpenLDAP and its kin: the cookies of content synchronization;
    /// where the directory does not offer it, the latest `modifyTimestamp`, when a periodic
    /// full pass will find the deletions a stamp cannot name; else none (every run is full).
    async fn openldap_changes_start(
        &self,
        session: &mut Session,
    ) -> Result<Option<SourceCursor>, SourceError> {
        if let Some(reported) = changes::synchronize(session, &self.config, &[], None).await? {
            self.count_entries(reported.entries);
            return Ok(Some(changes::encode_cursor(&reported.cookies)));
        }
        if self.full_pass_every().is_none() {
            tracing::info!(
                url = %self.config.url,
                "without content synchronization, deletions are found only by full passes, and \
                 full_sync_every_hours is 0: every run reads the whole directory"
            );
            return Ok(None);
        }
        let latest = stamp::latest(session, &self.config).await?;
        tracing::info!(
            url = %self.config.url,
            mark = %latest.stamp.0,
            "the directory offers no content synchronization: runs read the entries changed \
             since the latest modifyTimestamp, deletions wait for the periodic full pass"
        );
        Ok(Some(latest.encode()))
    }

    /// Changes through a `modifyTimestamp` mark, and the cursor after them.
    async fn stamped_changes(
        &self,
        from: &stamp::Mark,
    ) -> Result<(changes::Reported, SourceCursor), SourceError> {
        let mut session = self.session().await?;
        let attributes = user_attributes(&self.config, self.mapped.as_ref());
        let changed = stamp::changed_since(&mut session, &self.config, &attributes, from).await;
        session.close().await;
        let (reported, next) = changed?;
        Ok((reported, next.encode()))
    }

    /// Changes through content synchronization (OpenLDAP and its kin), and the cursor after them.
    async fn synchronized_changes(
        &self,
        cursor: &SourceCursor,
    ) -> Result<(changes::Reported, SourceCursor), SourceError> {
        let searches = changes::SyncedSearch::all(&self.config);
        let cookies = changes::decode_cursor(cursor, &searches)?;
        let mut session = self.session().await?;
        let attributes = user_attributes(&self.config, self.mapped.as_ref());
        let reported =
            changes::synchronize(&mut session, &self.config, &attributes, Some(&cookies)).await;
        session.close().await;
        let Some(reported) = reported? else {
            return Err(SourceError::CursorExpired(
                "ldap source: the directory no longer offers content synchronization".to_owned(),
            ));
        };
        let next = changes::encode_cursor(&reported.cookies);
        Ok((reported, next))
    }

    /// Changes through `uSNChanged` (Active Directory), and the cursor after them.
    async fn usn_changes(
        &self,
        cursor: &SourceCursor,
    ) -> Result<(changes::Reported, SourceCursor), SourceError> {
        let from = usn::Watermark::decode(cursor)?;
        let mut session = self.session().await?;
        let attributes = user_attributes(&self.config, self.mapped.as_ref());
        let changed = usn::changed_since(&mut session, &self.config, &attributes, &from).await;
        session.close().await;
        let (reported, now) = changed?;
        Ok((reported, now.encode()))
    }

    /// The filter matching the entry with this id.
    fn id_filter(&self, id: &str) -> Option<String> {
        let attribute = self.config.id_attribute();
        match self.config.directory {
            DirectoryKind::Openldap => Some(format!("({attribute}={})", escape_filter_value(id))),
            DirectoryKind::ActiveDirectory => {
                let bytes = entry::guid_bytes(id)?;
                let escaped: String = bytes.iter().map(|b| format!("\\{b:02x}")).collect();
                Some(format!("({attribute}={escaped})"))
            }
        }
    }
}

/// A record that cannot be read, as the error of a single-identity read.
fn unreadable(error: &m365_core::RecordError) -> SourceError {
    SourceError::Unreadable(format!(
        "ldap source: {}: {}",
        error.location, error.message
    ))
}

/// A value inside a search filter, escaped as RFC 4515 section 3 requires.
pub fn escape_filter_value(value: &str) -> String {
    let mut escaped = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '*' => escaped.push_str("\\2a"),
            '(' => escaped.push_str("\\28"),
            ')' => escaped.push_str("\\29"),
            '\\' => escaped.push_str("\\5c"),
            '\0' => escaped.push_str("\\00"),
            other => escaped.push(other),
        }
    }
    escaped
}

fn encode_cursor(token: u64, offset: usize) -> SourceCursor {
    SourceCursor(json!({"v": CURSOR_VERSION, "read": token, "offset": offset}))
}

fn decode_cursor(cursor: &SourceCursor) -> Result<(u64, usize), SourceError> {
    let value = &cursor.0;
    let version = value.get("v").and_then(serde_json::Value::as_u64);
    let token = value.get("read").and_then(serde_json::Value::as_u64);
    let offset = value
        .get("offset")
        .and_then(serde_json::Value::as_u64)
        .and_then(|o| usize::try_from(o).ok());
    match (version, token, offset) {
        (Some(CURSOR_VERSION), Some(token), Some(offset)) => Ok((token, offset)),
        _ => Err(SourceError::CursorExpired(format!(
            "not an LDAP snapshot cursor of version {CURSOR_VERSION}: {value}"
        ))),
    }
}

#[async_trait]
impl Source for LdapSource {
    fn kind(&self) -> &'static str {
        "ldap"
    }

    fn capabilities(&self) -> SourceCapabilities {
        let changes = self.config.reads_changes();
        SourceCapabilities {
            incremental: changes,
            explicit_deletes: changes,
            resumable_snapshot: false,
        }
    }

    fn full_pass_every(&self) -> Option<std::time::Duration> {
        match self.config.full_sync_every_hours {
            0 => None,
            hours => Some(std::time::Duration::from_secs(hours.saturating_mul(3600))),
        }
    }

    async fn changes_start(&self) -> Result<Option<SourceCursor>, SourceError> {
        if !self.config.reads_changes() {
            return Ok(None);
        }
        let mut session = self.session().await?;
        let started = match self.config.directory {
            DirectoryKind::Openldap => self.openldap_changes_start(&mut session).await,
            DirectoryKind::ActiveDirectory => usn::watermark(&mut session)
                .await
                .map(|(mark, _)| Some(mark.encode())),
        };
        session.close().await;
        started
    }

    async fn changes(
        &self,
        cursor: &SourceCursor,
        _page_size: usize,
    ) -> Result<ChangePage, SourceError> {
        if !self.config.reads_changes() {
            return Err(SourceError::Unsupported("incremental changes"));
        }
        let (mut reported, next) = match (self.config.directory, stamp::Mark::decode(cursor)) {
            (DirectoryKind::Openldap, Some(stamp)) => self.stamped_changes(&stamp?).await?,
            (DirectoryKind::Openldap, None) => self.synchronized_changes(cursor).await?,
            (DirectoryKind::ActiveDirectory, _) => self.usn_changes(cursor).await?,
        };
        self.count_entries(reported.entries);
        if !reported.changed_groups.is_empty() {
            // Members are DNs: a users read resolves them (changes::Reported). A new read: one
            // held from an earlier run of a long-lived source would be stale.
            let (_, read) = self.read_all().await?;
            let changed: BTreeSet<String> = std::mem::take(&mut reported.changed_groups)
                .into_iter()
                .collect();
            for id in &changed {
                if !read.groups.iter().any(|group| group.id == *id) {
                    // No longer a group of the groups read.
                    reported
                        .changes
                        .push(Change::DeleteGroup { id: id.clone() });
                }
            }
            reported.changes.extend(
                read.groups
                    .iter()
                    .filter(|group| self.config.nested_groups || changed.contains(&group.id))
                    .map(|group| Change::UpsertGroup(group.clone())),
            );
        }
        Ok(changes::page(reported, next))
    }

    async fn snapshot_page(
        &self,
        cursor: Option<&SourceCursor>,
        page_size: usize,
    ) -> Result<SnapshotPage, SourceError> {
        let page_size = page_size.max(1);
        let (token, read, offset) = match cursor {
            None => {
                let (token, read) = self.read_all().await?;
                (token, read, 0)
            }
            Some(cursor) => {
                let (token, offset) = decode_cursor(cursor)?;
                let read = self.cached(token).ok_or_else(|| {
                    SourceError::CursorExpired(
                        "the directory read this cursor belongs to was made by another process; \
                         the snapshot starts over"
                            .to_owned(),
                    )
                })?;
                (token, read, offset)
            }
        };
        let end = offset.saturating_add(page_size).min(read.users.len());
        let mut page = SnapshotPage {
            users: read.users.get(offset..end).unwrap_or_default().to_vec(),
            ..SnapshotPage::default()
        };
        if offset == 0 {
            page.groups = read.groups.clone();
            page.errors = read.errors.clone();
        }
        if end < read.users.len() {
            page.next = Some(encode_cursor(token, end));
        }
        Ok(page)
    }

    async fn fetch_user(&self, id: &str) -> Result<Option<SourceUser>, SourceError> {
        if !self.config.member_of_groups.is_empty() {
            // Scope by membership needs the groups' members: a full read decides.
            let read = self.current_read().await?;
            if let Some(error) = read
                .errors
                .iter()
                .find(|e| e.source_id.as_deref() == Some(id))
            {
                return Err(unreadable(error));
            }
            return Ok(read.users.iter().find(|u| u.id == id).cloned());
        }
        let Some(id_filter) = self.id_filter(id) else {
            return Ok(None);
        };
        let filter = format!("(&{}{id_filter})", self.config.user_filter());
        let mut session = self.session().await?;
        let attributes = user_attributes(&self.config, self.mapped.as_ref());
        let mut found = None;
        for base in &self.config.user_base_dns {
            match session.search(base, &filter, &attributes).await {
                Ok(entries) => {
                    if let Some(entry) = entries.first() {
                        // An entry that cannot be read is not a deleted one.
                        self.count_entries(1);
                        found = Some(user_record(entry, &self.config));
                        break;
                    }
                }
                Err(SearchError::NoSuchBase(_)) => {}
                Err(SearchError::Failed(error)) => {
                    session.close().await;
                    return Err(error);
                }
            }
        }
        session.close().await;
        found.transpose().map_err(|error| unreadable(&error))
    }

    async fn fetch_group(&self, id: &str) -> Result<Option<SourceGroup>, SourceError> {
        // Members are DNs resolved through the users read: a full read decides.
        let read = self.current_read().await?;
        Ok(read.groups.iter().find(|g| g.id == id).cloned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filter_values_are_escaped() {
        assert_eq!(escape_filter_value("a*b(c)\\d"), "a\\2ab\\28c\\29\\5cd");
    }

    #[test]
    fn cursors_round_trip_and_foreign_ones_expire() {
        let cursor = encode_cursor(42, 500);
        assert_eq!(decode_cursor(&cursor).unwrap(), (42, 500));
        let foreign = SourceCursor(json!({"v": 1, "offset": 3}));
        assert!(matches!(
            decode_cursor(&foreign),
            Err(SourceError::CursorExpired(_))
        ));
    }
}
