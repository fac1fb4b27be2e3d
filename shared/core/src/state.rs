//! The `StateStore` port: what the engine remembers between runs (docs/design.md#state-and-runs).
//!
//! Per connection: links source id → tenant object id with the last applied state, the source
//! checkpoint, per-object errors with their next retry, run records, processed webhook event ids
//! (with expiry) and a run lease with a fencing token. Adapters: SQLite (local default) and
//! DynamoDB. Every adapter must pass [`crate::conformance`] (feature `conformance`).
//!
//! Rules every adapter keeps:
//! - Expiry is checked on read (a lease or event past its expiry reads as absent), because a
//!   store's own expiry (DynamoDB TTL) deletes lazily. A lease or event is expired at `now` when
//!   `expires_at <= now`.
//! - Every time is an explicit argument; no adapter reads the clock.
//! - Every write of a run is fenced: it carries the run's [`Lease`] and succeeds only while that
//!   lease's token is the connection's newest, checked atomically with the write. A run whose
//!   lease was taken over (it stalled, or an operator broke it) can write nothing more, not even
//!   a run record; it learns so from [`StateError::Fenced`] and stops. The check is by token
//!   alone, never by clock: a holder whose lease expired but was not taken over still holds the
//!   newest token. (Martin Kleppmann's "How to do distributed locking" explains why a lease
//!   without a fencing token does not protect the writes:
//!   <https://martin.kleppmann.com/2016/02/08/how-to-do-distributed-locking.html>.)
//! - Batch writes are atomic per call where the store allows it, and idempotent always.

use std::collections::BTreeMap;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::model::{LicenseAssignment, ObjectKind};
use crate::source::SourceCursor;

/// Milliseconds since the Unix epoch (UTC).
pub type UnixMillis = i64;

/// How a link came to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LinkOrigin {
    /// This connection created the tenant object.
    Created,
    /// The tenant object existed and was matched (by UPN or displayName) and linked.
    Matched,
}

/// A source identity linked to a tenant object, with the state last applied to it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Link {
    pub kind: ObjectKind,
    /// Immutable source id.
    pub source_id: String,
    /// Tenant object id (Graph `id`).
    pub object_id: String,
    pub origin: LinkOrigin,
    /// Hash of the last applied desired state. An unchanged source identity hashes the same, so a
    /// no-op run compares this alone and makes no Graph call.
    pub hash: String,
    /// Last applied values of the mapped attributes, by Graph property name. Used to show old →
    /// new in plans and to send only what changed. Never holds a password.
    pub applied: BTreeMap<String, serde_json::Value>,
    /// Last applied `accountEnabled` (users).
    pub enabled: bool,
    /// Licenses this connection assigned (users). Others (group-based, manual) are not ours.
    pub licenses: Vec<LicenseAssignment>,
    /// Source id of the manager last applied (users).
    pub manager: Option<String>,
    /// Tenant object ids of the members this connection manages (groups), sorted.
    pub members: Vec<String>,
    /// Generation of the last full snapshot that contained this identity (mark-and-sweep).
    pub seen_generation: u64,
    pub updated_at: UnixMillis,
    /// When this connection deleted the tenant object (users deprovisioned with `delete`). Graph
    /// keeps a deleted user in the tenant's deleted items for 30 days, restorable with its
    /// mailbox, licenses and group memberships
    /// (<https://learn.microsoft.com/graph/api/directory-deleteditems-restore>): the link is kept
    /// so that the same identity coming back is restored rather than created anew (a new account
    /// would collide with the deleted one's reserved UPN). A deleted link is no live link: it
    /// resolves no member or manager, is not swept, and is not counted by
    /// [`StateStore::count_links`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deleted_at: Option<UnixMillis>,
}

/// How long Graph keeps a deleted user restorable
/// (<https://learn.microsoft.com/graph/api/user-delete>).
pub const RESTORE_WINDOW_MS: UnixMillis = 30 * 24 * 3_600_000;

impl Link {
    /// A new link with nothing applied yet beyond `applied` and `enabled` (no licenses,
    /// manager or members), never seen in a snapshot; its `hash` is left empty for the caller.
    pub fn new(
        kind: ObjectKind,
        source_id: &str,
        object_id: &str,
        origin: LinkOrigin,
        applied: BTreeMap<String, serde_json::Value>,
        enabled: bool,
        now: UnixMillis,
    ) -> Link {
        Link {
            kind,
            source_id: source_id.to_owned(),
            object_id: object_id.to_owned(),
            origin,
            hash: String::new(),
            applied,
            enabled,
            licenses: Vec::new(),
            manager: None,
            members: Vec::new(),
            seen_generation: 0,
            updated_at: now,
            deleted_at: None,
        }
    }

    /// The link of a tenant object this connection deleted (see [`Link::deleted_at`]).
    pub fn is_deleted(&self) -> bool {
        self.deleted_at.is_some()
    }

    /// A deleted link whose object Graph may still hold in its deleted items at `now`.
    pub fn restorable_at(&self, now: UnixMillis) -> bool {
        self.deleted_at
            .is_some_and(|at| now.saturating_sub(at) < RESTORE_WINDOW_MS)
    }
}

/// Where a connection's source reading stands.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "phase", rename_all = "snake_case")]
pub enum Phase {
    /// Reading a full snapshot; `cursor` is where the next page starts (`None`: the first page).
    Snapshot { cursor: Option<SourceCursor> },
    /// The snapshot is complete; deprovisioning the links not seen in it, in source-id order
    /// after `after`.
    Sweep { after: Option<String> },
    /// Between snapshots: nothing in progress.
    Idle,
}

/// The durable checkpoint of a connection; a run resumes from it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// Generation of the snapshot in progress, or of the last one finished.
    pub generation: u64,
    pub phase: Phase,
    /// Whether the snapshot of `generation` may be swept: every page read, and no record error
    /// without an id.
    pub sweep_allowed: bool,
    /// Cursor for incremental changes, for sources that have them.
    pub changes_cursor: Option<SourceCursor>,
    /// When the last snapshot finished.
    pub last_complete_at: Option<UnixMillis>,
    pub updated_at: UnixMillis,
    /// Where the tenant's changes are read from next (drift detection).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drift: Option<crate::drift::DriftCheckpoint>,
}

/// A per-object failure, retried with backoff in later runs (docs/design.md#safety).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ObjectError {
    pub kind: ObjectKind,
    pub source_id: String,
    /// The operation that failed (`create`, `update`, `license`, `manager`, `members`, …).
    pub operation: String,
    /// What went wrong and what to fix, as shown by `status`.
    pub message: String,
    /// Failures in a row.
    pub attempts: u32,
    pub first_failed_at: UnixMillis,
    pub last_failed_at: UnixMillis,
    /// Not retried before this instant.
    pub next_retry_at: UnixMillis,
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    Running,
    /// Everything done.
    Succeeded,
    /// Finished; some objects failed and are recorded.
    PartiallyFailed,
    /// Stopped before its first destructive operation by the circuit breaker.
    BreakerTripped,
    /// Stopped at its deadline with a checkpoint; the next run continues.
    Checkpointed,
    /// Stopped by an error that concerns the whole run (source unreadable, credentials).
    Failed,
    /// The plan was not approved (an operator answered no, or a saved plan no longer matched):
    /// nothing was written.
    Declined,
}

/// One run of a connection.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    pub id: String,
    pub started_at: UnixMillis,
    pub finished_at: Option<UnixMillis>,
    pub status: RunStatus,
    /// What the run did.
    pub counts: crate::counts::RunCounts,
    pub message: Option<String>,
}

/// What became of one step for its object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HistoryResult {
    /// Written to the tenant (or recorded: a link of an existing object).
    Applied,
    /// Refused by Graph or by a check before it was sent; the object is in error.
    Failed,
    /// Held back by the circuit breaker; nothing was written.
    Held,
    /// Drift found in the tenant: an out-of-band change to what this connection applied
    /// (docs/design.md#drift).
    Found,
}

impl HistoryResult {
    pub fn as_str(self) -> &'static str {
        match self {
            HistoryResult::Applied => "applied",
            HistoryResult::Failed => "failed",
            HistoryResult::Held => "held",
            HistoryResult::Found => "drift found",
        }
    }
}

/// One entry of an object's history: a step applied, failed or held, with Graph's answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistoryEntry {
    pub kind: ObjectKind,
    pub source_id: String,
    /// UPN or displayName when the step ran.
    pub name: String,
    pub at: UnixMillis,
    pub run_id: String,
    /// The step, as the plan names it (`create user`, `licenses`, …).
    pub operation: String,
    /// Old → new, as the plan shows it.
    pub change: String,
    pub result: HistoryResult,
    /// What the tenant answered: the new object's id, `done`, or the error with Graph's code and
    /// request-id.
    pub answer: String,
    /// Kept until then (the rule's `history_days`); DynamoDB's TTL removes it after.
    pub expires_at: UnixMillis,
}

/// Longest `change` or `answer` kept in a history entry (a create lists every property).
pub const HISTORY_TEXT_LIMIT: usize = 2_000;

impl HistoryEntry {
    /// `text` cut to [`HISTORY_TEXT_LIMIT`] bytes at a character boundary, marked with `…`.
    pub fn clip(text: String) -> String {
        if text.len() <= HISTORY_TEXT_LIMIT {
            return text;
        }
        let mut end = HISTORY_TEXT_LIMIT;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        format!("{}…", &text[..end])
    }
}

/// Who takes a lease: recorded with it, so that "busy" can name the holder and an operator (or
/// the CLI on the same host) can tell whether the holder is still alive.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct LeaseHolder {
    /// What runs: `cli`, `scheduled-sync`, `webhook`, with a run or request id.
    pub owner: String,
    /// The host name of a local process (CLI); `None` in Lambda.
    pub host: Option<String>,
    /// The process id of a local process (CLI); `None` in Lambda.
    pub pid: Option<u32>,
}

impl std::fmt::Display for LeaseHolder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.owner)?;
        match (&self.host, self.pid) {
            (Some(host), Some(pid)) => write!(f, " (process {pid} on {host})"),
            (Some(host), None) => write!(f, " (on {host})"),
            (None, Some(pid)) => write!(f, " (process {pid})"),
            (None, None) => Ok(()),
        }
    }
}

/// The right to run a connection, until `expires_at`. `token` grows with every acquisition: it
/// fences writes of a holder that lost the lease without knowing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    pub connection: String,
    pub holder: LeaseHolder,
    pub token: u64,
    /// When this token was granted (renewals keep it).
    pub acquired_at: UnixMillis,
    pub expires_at: UnixMillis,
}

/// The answer to a lease request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseGrant {
    /// The lease is the caller's.
    Acquired(Lease),
    /// Another run holds it: this is that run's lease, to name it to the operator.
    Busy(Lease),
}

/// Failures of a state store.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// A write carried a lease token older than the newest: another run has taken over.
    #[error(
        "connection {connection}: the run lease was taken over by a newer run (token {presented} < {current}); this run must stop"
    )]
    Fenced {
        connection: String,
        presented: u64,
        current: u64,
    },
    /// The run could not renew its lease in time (the store was unreachable, or the lease was
    /// broken or taken over): it stops before its next write.
    #[error(
        "connection {connection}: this run could not keep its lease (it ran out at {expired_at} ms unless renewed); it stopped before its next write, and the next run continues"
    )]
    LeaseLost {
        connection: String,
        expired_at: UnixMillis,
    },
    /// One object cannot be stored at all (its source id is longer than the store's key limit,
    /// or its record larger than an item may be): a per-object failure, not the run's. The call
    /// that reports it wrote nothing.
    #[error("{kind} {source_id:?} cannot be stored: {reason}")]
    ObjectTooLarge {
        kind: ObjectKind,
        source_id: String,
        reason: String,
    },
    /// The store cannot be reached or refused the operation; worth retrying.
    #[error("the state store is unavailable: {0}")]
    Unavailable(String),
    /// Stored data cannot be read back (a format from another version, a damaged file).
    #[error("stored state is damaged or from an unknown version: {0}")]
    Corrupt(String),
}

impl StateError {
    pub fn is_retryable(&self) -> bool {
        matches!(self, StateError::Unavailable(_))
    }
}

pub type StateResult<T> = Result<T, StateError>;

/// Durable state of the engine.
#[async_trait]
pub trait StateStore: Send + Sync {
    // --- links ---

    /// Links of these source ids (missing ones are simply absent from the result). Each link
    /// appears at most once, even for a repeated id, in no particular order.
    async fn get_links(
        &self,
        connection: &str,
        kind: ObjectKind,
        source_ids: &[String],
    ) -> StateResult<Vec<Link>>;

    /// One page of links in source-id order (byte order of the UTF-8 ids), starting after
    /// `after` (which need not be a stored id); at most `limit`.
    async fn list_links(
        &self,
        connection: &str,
        kind: ObjectKind,
        after: Option<&str>,
        limit: usize,
    ) -> StateResult<Vec<Link>>;

    /// The source ids of the links [`StateStore::list_links`] lists with the same arguments, in
    /// the same order: for a caller that needs whole links for only a few of them (the sweep,
    /// which looks for links the snapshot did not keep). A store that reads ids more cheaply
    /// than whole links overrides it.
    async fn list_link_ids(
        &self,
        connection: &str,
        kind: ObjectKind,
        after: Option<&str>,
        limit: usize,
    ) -> StateResult<Vec<String>> {
        let links = self.list_links(connection, kind, after, limit).await?;
        Ok(links.into_iter().map(|l| l.source_id).collect())
    }

    /// The link of a tenant object, if any source id of this connection is linked to it: a tenant
    /// object is linked to at most one source identity, and the engine asks before it
    /// links a matched or adopted object.
    async fn find_link_by_object(
        &self,
        connection: &str,
        kind: ObjectKind,
        object_id: &str,
    ) -> StateResult<Option<Link>>;

    /// Inserts or replaces links (keyed by kind + source id). Fenced by `lease`.
    async fn put_links(&self, connection: &str, links: &[Link], lease: &Lease) -> StateResult<()>;

    /// Marks links as seen in snapshot `generation` (only raises `seen_generation`). Fenced.
    async fn mark_seen(
        &self,
        connection: &str,
        kind: ObjectKind,
        source_ids: &[String],
        generation: u64,
        lease: &Lease,
    ) -> StateResult<()>;

    /// Removes links; absent ones are ignored. Fenced.
    async fn delete_links(
        &self,
        connection: &str,
        kind: ObjectKind,
        source_ids: &[String],
        lease: &Lease,
    ) -> StateResult<()>;

    /// Number of live links of a kind (the circuit breaker's percentage base): links of deleted
    /// objects ([`Link::deleted_at`]) are not counted.
    async fn count_links(&self, connection: &str, kind: ObjectKind) -> StateResult<u64>;

    // --- checkpoint ---

    async fn get_checkpoint(&self, connection: &str) -> StateResult<Option<Checkpoint>>;

    /// Stores the checkpoint if `lease` carries the newest token of the connection, else
    /// [`StateError::Fenced`]. The check is by token alone, never by clock: a holder whose lease
    /// expired but was not taken over still holds the newest token.
    async fn put_checkpoint(
        &self,
        connection: &str,
        checkpoint: &Checkpoint,
        lease: &Lease,
    ) -> StateResult<()>;

    // --- per-object errors ---

    /// Inserts or replaces the error of (kind, source id). Fenced.
    async fn put_error(
        &self,
        connection: &str,
        error: &ObjectError,
        lease: &Lease,
    ) -> StateResult<()>;

    async fn get_errors(
        &self,
        connection: &str,
        kind: ObjectKind,
        source_ids: &[String],
    ) -> StateResult<Vec<ObjectError>>;

    /// Removes the errors of these objects. Fenced.
    async fn clear_errors(
        &self,
        connection: &str,
        kind: ObjectKind,
        source_ids: &[String],
        lease: &Lease,
    ) -> StateResult<()>;

    /// Errors of the connection, soonest retry first; at most `limit`.
    async fn list_errors(&self, connection: &str, limit: usize) -> StateResult<Vec<ObjectError>>;

    // --- runs ---

    /// Inserts or replaces a run record (keyed by id). Fenced.
    async fn put_run(&self, connection: &str, run: &RunRecord, lease: &Lease) -> StateResult<()>;

    /// The latest runs, newest first.
    async fn list_runs(&self, connection: &str, limit: usize) -> StateResult<Vec<RunRecord>>;

    // --- history ---

    /// Appends entries to the objects' histories and drops the connection's entries expired
    /// at the newest entry's time. Not fenced: an entry records what was done to the tenant,
    /// even by a run that has since lost its lease.
    async fn append_history(&self, connection: &str, entries: &[HistoryEntry]) -> StateResult<()>;

    /// One object's history, newest first; at most `limit` entries, none expired at `now`.
    async fn object_history(
        &self,
        connection: &str,
        kind: ObjectKind,
        source_id: &str,
        now: UnixMillis,
        limit: usize,
    ) -> StateResult<Vec<HistoryEntry>>;

    // --- lease ---

    /// Takes the lease if it is free or expired at `now` ([`LeaseGrant::Acquired`]); while
    /// another run holds it, [`LeaseGrant::Busy`] with that run's lease — also while this same
    /// holder holds it (a holder extends with [`Self::renew_lease`]). Every successful
    /// acquisition gets a token greater than any before it.
    async fn acquire_lease(
        &self,
        connection: &str,
        holder: &LeaseHolder,
        now: UnixMillis,
        ttl_ms: i64,
    ) -> StateResult<LeaseGrant>;

    /// The lease held at `now`, if any (an expired or released one reads as absent).
    async fn get_lease(&self, connection: &str, now: UnixMillis) -> StateResult<Option<Lease>>;

    /// Ends the lease carrying `token` at once, whoever holds it (its process is gone, or an
    /// operator unlocks the connection). The next acquisition gets a newer token, which fences
    /// every write of the old holder. `false` if the lease no longer carries `token` (it was
    /// released or taken over meanwhile): nothing changed.
    async fn break_lease(&self, connection: &str, token: u64) -> StateResult<bool>;

    /// Extends a lease still held (same token, not expired at `now`); `None` if lost.
    async fn renew_lease(
        &self,
        lease: &Lease,
        now: UnixMillis,
        ttl_ms: i64,
    ) -> StateResult<Option<Lease>>;

    /// Gives the lease up (no effect if it was already taken over). The token stays counted.
    async fn release_lease(&self, lease: &Lease) -> StateResult<()>;

    // --- webhook events ---

    /// Claims an event id: records it as in progress until `expires_at` (a short expiry, longer
    /// than one attempt can run) when it was not known or its record had expired at `now`, and
    /// answers [`EventClaim::New`]: the caller applies the event, then calls
    /// [`complete_event`](Self::complete_event) or [`forget_event`](Self::forget_event).
    /// Otherwise the record is left as it was (state and expiry) and the answer says what it
    /// holds: [`EventClaim::InProgress`] (another attempt is applying it) or
    /// [`EventClaim::Done`] (a duplicate).
    async fn remember_event(
        &self,
        connection: &str,
        event_id: &str,
        now: UnixMillis,
        expires_at: UnixMillis,
    ) -> StateResult<EventClaim>;

    /// Marks an event id done (applied) until `expires_at`, whatever its record held: an
    /// in-progress claim becomes done with the new expiry; a missing record is written done.
    async fn complete_event(
        &self,
        connection: &str,
        event_id: &str,
        expires_at: UnixMillis,
    ) -> StateResult<()>;

    /// Forgets an event id (its processing failed and the sender will retry it).
    async fn forget_event(&self, connection: &str, event_id: &str) -> StateResult<()>;

    // --- connection ---

    /// Removes everything stored for a connection except the lease token counter (rule deletion).
    /// The lease is left as it is: its holder, the caller, releases it. Fenced.
    async fn clear_connection(&self, connection: &str, lease: &Lease) -> StateResult<()>;
}

/// What [`StateStore::remember_event`] found for an event id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventClaim {
    /// Not known (or expired): now claimed as in progress by the caller.
    New,
    /// Claimed by an attempt that has not completed it (and whose claim has not expired).
    InProgress,
    /// Applied already: a duplicate.
    Done,
}

/// A connection's links of one kind, read a page at a time in source-id order (the sweep, a
/// rule's deletion).
pub struct LinkPages<'a> {
    state: &'a dyn StateStore,
    connection: &'a str,
    kind: ObjectKind,
    page_size: usize,
    after: Option<String>,
    done: bool,
}

impl<'a> LinkPages<'a> {
    pub fn new(
        state: &'a dyn StateStore,
        connection: &'a str,
        kind: ObjectKind,
        page_size: usize,
    ) -> Self {
        LinkPages {
            state,
            connection,
            kind,
            page_size,
            after: None,
            done: false,
        }
    }

    /// The next page; `None` once every link was read.
    pub async fn next_page(&mut self) -> StateResult<Option<Vec<Link>>> {
        if self.done {
            return Ok(None);
        }
        let page = self
            .state
            .list_links(
                self.connection,
                self.kind,
                self.after.as_deref(),
                self.page_size,
            )
            .await?;
        match page.last() {
            Some(last) => {
                self.after = Some(last.source_id.clone());
                Ok(Some(page))
            }
            None => {
                self.done = true;
                Ok(None)
            }
        }
    }
}
