//! Incremental runs: what a source reports as changed since the stored cursor, gathered into one
//! [`ChangeSet`], and the source as the changed identities are now ([`Prefetched`]) so that the
//! planner's focused plan reads them without asking the source again.
//!
//! A change pass plans exactly the changed identities (and the failures due for a retry) with
//! the focused planner: an upsert is planned like a webhook's user, a delete like a named user
//! the source no longer has (deprovisioned, the circuit breaker weighing it). The cursor moves
//! only once the pass is applied (docs/design.md#incremental-runs).

use std::collections::{BTreeMap, BTreeSet};

use async_trait::async_trait;

use crate::model::{ObjectKind, RecordError, SourceGroup, SourceUser};
use crate::planner::Focus;
use crate::source::{Change, SnapshotPage, Source, SourceCapabilities, SourceCursor, SourceError};

/// Every change since a cursor, the last report of each identity winning.
#[derive(Debug, Default)]
pub struct ChangeSet {
    pub users: BTreeMap<String, SourceUser>,
    pub groups: BTreeMap<String, SourceGroup>,
    pub deleted_users: BTreeSet<String>,
    pub deleted_groups: BTreeSet<String>,
    /// Changed records that could not be read: left alone, reported as plan issues.
    pub errors: Vec<RecordError>,
}

impl ChangeSet {
    fn apply(&mut self, change: Change) {
        match change {
            Change::UpsertUser(user) => {
                self.deleted_users.remove(&user.id);
                self.users.insert(user.id.clone(), user);
            }
            Change::UpsertGroup(group) => {
                self.deleted_groups.remove(&group.id);
                self.groups.insert(group.id.clone(), group);
            }
            Change::DeleteUser { id } => {
                self.users.remove(&id);
                self.deleted_users.insert(id);
            }
            Change::DeleteGroup { id } => {
                self.groups.remove(&id);
                self.deleted_groups.insert(id);
            }
        }
    }

    /// Nothing changed.
    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
            && self.groups.is_empty()
            && self.deleted_users.is_empty()
            && self.deleted_groups.is_empty()
            && self.errors.is_empty()
    }

    /// The identities to plan: every changed one, except those whose record could not be read
    /// (an unreadable record is never taken for a deleted one).
    pub fn focus(&self) -> Focus {
        let unreadable = |kind: ObjectKind, id: &String| {
            self.errors
                .iter()
                .any(|e| e.kind == kind && e.source_id.as_ref() == Some(id))
        };
        Focus {
            users: self
                .users
                .keys()
                .chain(&self.deleted_users)
                .filter(|id| !unreadable(ObjectKind::User, id))
                .cloned()
                .collect(),
            groups: self
                .groups
                .keys()
                .chain(&self.deleted_groups)
                .filter(|id| !unreadable(ObjectKind::Group, id))
                .cloned()
                .collect(),
        }
    }
}

/// Reads every change since `cursor`, page by page: the set and the cursor after it.
pub async fn read_changes(
    source: &dyn Source,
    cursor: &SourceCursor,
    page_size: usize,
) -> Result<(ChangeSet, SourceCursor), SourceError> {
    let mut set = ChangeSet::default();
    let mut cursor = cursor.clone();
    loop {
        let page = source.changes(&cursor, page_size).await?;
        for change in page.changes {
            set.apply(change);
        }
        set.errors.extend(page.errors);
        cursor = page.next;
        if !page.more {
            return Ok((set, cursor));
        }
    }
}

/// A source whose changed identities are already read: the planner's single-identity reads
/// answer from the change set (a deleted one is gone), any other from the source.
pub struct Prefetched<'a> {
    pub source: &'a dyn Source,
    pub changes: &'a ChangeSet,
}

#[async_trait]
impl Source for Prefetched<'_> {
    fn kind(&self) -> &'static str {
        self.source.kind()
    }

    fn capabilities(&self) -> SourceCapabilities {
        self.source.capabilities()
    }

    async fn snapshot_page(
        &self,
        cursor: Option<&SourceCursor>,
        page_size: usize,
    ) -> Result<SnapshotPage, SourceError> {
        self.source.snapshot_page(cursor, page_size).await
    }

    async fn fetch_user(&self, id: &str) -> Result<Option<SourceUser>, SourceError> {
        if let Some(user) = self.changes.users.get(id) {
            return Ok(Some(user.clone()));
        }
        if self.changes.deleted_users.contains(id) {
            return Ok(None);
        }
        self.source.fetch_user(id).await
    }

    async fn fetch_group(&self, id: &str) -> Result<Option<SourceGroup>, SourceError> {
        if let Some(group) = self.changes.groups.get(id) {
            return Ok(Some(group.clone()));
        }
        if self.changes.deleted_groups.contains(id) {
            return Ok(None);
        }
        self.source.fetch_group(id).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(id: &str) -> SourceUser {
        SourceUser {
            id: id.to_owned(),
            enabled: true,
            attributes: Default::default(),
        }
    }

    #[test]
    fn the_last_report_of_an_identity_wins() {
        let mut set = ChangeSet::default();
        set.apply(Change::UpsertUser(user("a")));
        set.apply(Change::DeleteUser { id: "a".into() });
        set.apply(Change::DeleteUser { id: "b".into() });
        set.apply(Change::UpsertUser(user("b")));
        assert!(!set.users.contains_key("a"));
        assert!(set.deleted_users.contains("a"));
        assert!(set.users.contains_key("b"));
        assert!(!set.deleted_users.contains("b"));
        let focus = set.focus();
        assert_eq!(
            focus.users.into_iter().collect::<Vec<_>>(),
            vec!["a".to_owned(), "b".to_owned()]
        );
    }

    #[test]
    fn an_unreadable_record_is_left_out_of_the_focus() {
        let mut set = ChangeSet::default();
        set.apply(Change::DeleteUser { id: "a".into() });
        set.errors.push(RecordError {
            kind: ObjectKind::User,
            source_id: Some("a".into()),
            location: "entry a".into(),
            message: "unreadable".into(),
        });
        assert!(set.focus().users.is_empty());
        assert!(!set.is_empty());
    }
}
