//! The `Source` port: where identities come from (file, LDAP, SCIM, PingOne).
//!
//! Every source offers paged full snapshots with an opaque, resumable cursor and a "snapshot
//! complete" signal; sources that can also report incremental changes (with explicit deletes)
//! say so in their [`SourceCapabilities`]. The engine never keeps a whole snapshot in memory: it
//! processes one page, records the results, then stores the cursor of the next page.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::model::{RecordError, SourceGroup, SourceUser};

/// Where to resume a source read. Opaque to the engine and stored as JSON in the state store; each
/// adapter versions its own content (a file offset, an LDAP cookie, a SCIM timestamp, a next link).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SourceCursor(pub serde_json::Value);

/// What a source can do beyond full snapshots.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct SourceCapabilities {
    /// `changes` is implemented.
    pub incremental: bool,
    /// Incremental changes include explicit deletes; without them, deletions are only found by
    /// mark-and-sweep over a complete snapshot.
    pub explicit_deletes: bool,
    /// A snapshot cursor stays valid across processes (it can be stored and resumed later).
    pub resumable_snapshot: bool,
}

/// One page of a full snapshot.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SnapshotPage {
    pub users: Vec<SourceUser>,
    pub groups: Vec<SourceGroup>,
    /// Records of this page that could not be read.
    pub errors: Vec<RecordError>,
    /// Cursor of the next page; `None` when this was the last page.
    pub next: Option<SourceCursor>,
}

/// An incremental change.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    UpsertUser(SourceUser),
    UpsertGroup(SourceGroup),
    DeleteUser { id: String },
    DeleteGroup { id: String },
}

/// One page of incremental changes.
#[derive(Debug, Clone, PartialEq)]
pub struct ChangePage {
    pub changes: Vec<Change>,
    pub errors: Vec<RecordError>,
    /// Where the next read starts; stored once this page is applied.
    pub next: SourceCursor,
    /// More changes are waiting right now.
    pub more: bool,
}

/// Why a source read failed as a whole. Any of these makes the snapshot incomplete: nothing is
/// deprovisioned on the strength of it (docs/design.md#safety).
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// The source cannot be reached (network, permissions, missing file).
    #[error("the source cannot be read: {0}")]
    Unavailable(String),
    /// The source answered with something that cannot be parsed at all.
    #[error("the source's data cannot be parsed: {0}")]
    Unreadable(String),
    /// The stored cursor is no longer valid (expired, from another format version); the engine
    /// restarts with a full snapshot.
    #[error("the stored source cursor is no longer valid: {0}")]
    CursorExpired(String),
    /// The source does not offer this kind of read.
    #[error("this source does not support {0}")]
    Unsupported(&'static str),
}

impl SourceError {
    /// Worth trying again in a later run without an operator.
    pub fn is_retryable(&self) -> bool {
        matches!(self, SourceError::Unavailable(_))
    }
}

/// An identity source.
#[async_trait]
pub trait Source: Send + Sync {
    /// Short name for logs and status: `file`, `ldap`, `scim`, `pingone`.
    fn kind(&self) -> &'static str;

    fn capabilities(&self) -> SourceCapabilities;

    /// One page of a full snapshot: from the start when `cursor` is `None`, else from where the
    /// page that returned `cursor` stopped. About `page_size` records per page.
    async fn snapshot_page(
        &self,
        cursor: Option<&SourceCursor>,
        page_size: usize,
    ) -> Result<SnapshotPage, SourceError>;

    /// Changes since `cursor` (the `next` of the last applied page, or the cursor a finished
    /// snapshot left). Sources without incremental reads keep the default.
    async fn changes(
        &self,
        _cursor: &SourceCursor,
        _page_size: usize,
    ) -> Result<ChangePage, SourceError> {
        Err(SourceError::Unsupported("incremental changes"))
    }

    /// Where `changes` would start if a snapshot began now: taken by the engine just before a
    /// full pass and stored as the checkpoint's changes cursor once the pass is applied (a change
    /// made while the snapshot is read is reported again; applying it twice changes nothing).
    /// `None`: this source cannot report changes now (the engine keeps making full passes).
    async fn changes_start(&self) -> Result<Option<SourceCursor>, SourceError> {
        Ok(None)
    }

    /// How often an incremental source still gets a full pass, which finds what its change
    /// reports cannot (an entry moved out of the searched scope, a change the server forgot).
    /// `None`: only when the changes cursor is missing or no longer accepted.
    fn full_pass_every(&self) -> Option<std::time::Duration> {
        None
    }

    /// The current state of one user (webhooks re-read the source rather than trusting event
    /// content); `None` when the source no longer has it.
    async fn fetch_user(&self, id: &str) -> Result<Option<SourceUser>, SourceError>;

    /// The current state of one group.
    async fn fetch_group(&self, id: &str) -> Result<Option<SourceGroup>, SourceError>;
}
