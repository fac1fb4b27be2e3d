//! [`SqliteStateStore`]: the embedded [`StateStore`] — one SQLite file holds the state of every
//! connection (docs/design.md#state-and-runs). It is the default for the CLI and local runs; Lambda
//! uses DynamoDB.
//!
//! # Durability
//!
//! The file runs in WAL mode with `synchronous = FULL`: every committed transaction is fsynced to
//! the write-ahead log before `commit` returns, so a state write the engine has seen succeed
//! survives a process crash *and* a power loss or kernel panic. With `NORMAL` the last commits
//! may roll back after a power loss; a link lost that way would turn a "created" object into a
//! "matched" one on rerun and a checkpoint could step back. The cost is one fsync per trait call,
//! and the engine writes in batches (a page of results per call), so it is small beside a Graph
//! round trip. Each trait method is exactly one transaction; writes take the write lock up front
//! (`BEGIN IMMEDIATE`) so that two processes on one file serialise instead of deadlocking, and a
//! busy file is waited on for up to [`BUSY_TIMEOUT`] before the call fails as
//! [`StateError::Unavailable`] (retryable). WAL needs a local file system (not NFS/EFS).
//!
//! # Schema (version 4, `PRAGMA user_version`; `PRAGMA application_id` = `0x4D333635`, "M365")
//!
//! Every table is keyed by `connection` first, so a connection is one key range and
//! `clear_connection` is one range delete per table. Scalars are columns; lists and maps are JSON
//! text. Times are Unix milliseconds.
//!
//! | table | key | columns | serves |
//! |---|---|---|---|
//! | `links` | (connection, kind, source_id); index (connection, kind, object_id, source_id) | object_id, origin, hash, applied (JSON), enabled, licenses (JSON), manager, members (JSON), seen_generation, updated_at, deleted_at (NULL: live) | get/list/put/mark_seen/delete/count links (count: live ones); `list_links` walks the primary key in source-id (byte) order; `find_link_by_object` the index |
//! | `checkpoints` | connection | body (JSON [`Checkpoint`]), updated_at | get/put checkpoint |
//! | `object_errors` | (connection, kind, source_id) | operation, message, attempts, first/last_failed_at, next_retry_at; index (connection, next_retry_at) | per-object errors, soonest retry first |
//! | `runs` | (connection, id) | started_at, body (JSON [`RunRecord`]); index (connection, started_at) | run records, newest first |
//! | `leases` | connection | owner, host, pid, token, acquired_at, expires_at | the run lease; the row is never deleted, so `token` is the connection's fencing-token counter (release sets `expires_at` to the minimum and keeps the token) |
//! | `events` | (connection, event_id) | expires_at, state (`in_progress` \| `done`); index (connection, expires_at) | webhook event ids being applied or applied; expired ones are purged on `remember_event` |
//!
//! Lease rules: acquiring succeeds when there is no row or `expires_at <= now`, and writes
//! `token + 1`; renewing needs the same token and `now < expires_at`; breaking expires the row
//! if it still carries the token. Every write of a run (links, errors, runs, checkpoint, clear)
//! compares the presented token with the row's inside the same transaction as the write (fencing
//! is by token, not by clock). A file whose `user_version` is newer than this build's is refused
//! with [`StateError::Corrupt`] and left untouched; older ones are migrated in one transaction.

mod schema;

use std::collections::HashSet;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use m365_core::state::EventClaim;
use m365_core::{
    Checkpoint, HistoryEntry, Lease, LeaseGrant, LeaseHolder, Link, LinkOrigin, ObjectError,
    ObjectKind, RunRecord, StateError, StateResult, StateStore, UnixMillis,
};
use rusqlite::{
    Connection, ErrorCode, OptionalExtension as _, Row, Transaction, TransactionBehavior,
};
use tracing::instrument;

/// How long a call waits for another process's write lock on the same file.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// The schema version this build reads and writes.
pub const SCHEMA_VERSION: i64 = schema::CURRENT_VERSION;

/// A [`StateStore`] in one SQLite file (or in memory, for tests).
///
/// Cheap to clone: clones share one connection. Blocking SQLite calls run on tokio's blocking
/// pool, one at a time per store; several stores (or processes) may open the same file.
#[derive(Clone)]
pub struct SqliteStateStore {
    conn: Arc<Mutex<Connection>>,
    location: Arc<str>,
}

impl std::fmt::Debug for SqliteStateStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStateStore")
            .field("location", &self.location)
            .finish_non_exhaustive()
    }
}

impl SqliteStateStore {
    /// Opens (or creates, with its parent folders) the state database at `path` and brings its
    /// schema up to date. Blocking: call it at start-up.
    pub fn open(path: impl AsRef<Path>) -> StateResult<Self> {
        let path = path.as_ref();
        let location: Arc<str> = Arc::from(path.display().to_string());
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|e| {
                StateError::Unavailable(format!(
                    "cannot create the folder {} for the state database: {e}",
                    parent.display()
                ))
            })?;
        }
        let mut conn = Connection::open(path).map_err(|e| Fail::Sql(e).into_state(&location))?;
        Self::configure(&mut conn, &location, true).map_err(|e| e.into_state(&location))?;
        tracing::debug!(location = %location, version = SCHEMA_VERSION, "state database open");
        Ok(Self {
            conn: Arc::new(Mutex::new(conn)),
            location,
        })
    }

    /// A private, empty database that lives as long as this store (and its clones).
    pub fn in_memory() -> StateResult<Self> {
        let location: Arc<str> = Arc::from("in-memory state database");
        let mut conn =
            Connection::open_in_memory().map_err(|e| Fail::Sql(e).into_state(&location))?;
        Self::configure(&mut conn, &location, false).map_err(|e| e.into_state(&location))?;
        Ok(Self {
            conn: Arc::new(Mutex::new(conn)),
            location,
        })
    }

    /// The file path (or "in-memory state database"), as used in messages.
    pub fn location(&self) -> &str {
        &self.location
    }

    fn configure(conn: &mut Connection, location: &str, file: bool) -> Result<(), Fail> {
        conn.busy_timeout(BUSY_TIMEOUT)?;
        if file {
            // Read back: SQLite answers with the mode it actually uses.
            let mode: String =
                conn.pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))?;
            if !mode.eq_ignore_ascii_case("wal") {
                return Err(Fail::Unavailable(format!(
                    "{location}: cannot switch to WAL journal mode (got {mode}); is it on a \
                     network file system?"
                )));
            }
        }
        conn.pragma_update(None, "synchronous", "FULL")?;
        schema::migrate(conn, location)
    }

    /// Runs `f` in one transaction on the blocking pool and commits it if `f` succeeds.
    async fn run<T, F>(&self, behavior: TransactionBehavior, f: F) -> StateResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Transaction<'_>) -> Result<T, Fail> + Send + 'static,
    {
        let conn = Arc::clone(&self.conn);
        let location = Arc::clone(&self.location);
        let joined = tokio::task::spawn_blocking(move || {
            let result = (|| {
                let mut guard = lock(&conn, &location)?;
                let tx = guard.transaction_with_behavior(behavior)?;
                let out = f(&tx)?;
                tx.commit()?;
                Ok(out)
            })();
            result.map_err(|e: Fail| e.into_state(&location))
        })
        .await;
        joined.map_err(|e| {
            StateError::Unavailable(format!(
                "{}: the state task did not finish: {e}",
                self.location
            ))
        })?
    }

    async fn read<T, F>(&self, f: F) -> StateResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Transaction<'_>) -> Result<T, Fail> + Send + 'static,
    {
        self.run(TransactionBehavior::Deferred, f).await
    }

    async fn write<T, F>(&self, f: F) -> StateResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Transaction<'_>) -> Result<T, Fail> + Send + 'static,
    {
        self.run(TransactionBehavior::Immediate, f).await
    }
}

/// Locks the connection. A poisoned lock means a call panicked while holding it; its transaction
/// was rolled back when it unwound, so the connection is usable once any leftover transaction is
/// rolled back.
fn lock<'a>(
    conn: &'a Mutex<Connection>,
    location: &str,
) -> Result<MutexGuard<'a, Connection>, Fail> {
    let guard = match conn.lock() {
        Ok(guard) => guard,
        Err(poisoned) => {
            tracing::warn!(
                location,
                "state connection lock was poisoned by a panic; recovering"
            );
            conn.clear_poison();
            poisoned.into_inner()
        }
    };
    if !guard.is_autocommit() {
        guard.execute_batch("ROLLBACK")?;
    }
    Ok(guard)
}

/// One page of a connection's links of `kind` in source-id order after `after`, at most `limit`,
/// each row's `columns` read by `row`. Two statements rather than `(?3 IS NULL OR source_id >
/// ?3)`, which would defeat the range scan on the primary key.
fn links_page<T>(
    tx: &Transaction<'_>,
    columns: &str,
    connection: &str,
    kind: ObjectKind,
    after: Option<&str>,
    limit: usize,
    row: impl Fn(&rusqlite::Row<'_>) -> Result<T, Fail>,
) -> Result<Vec<T>, Fail> {
    let base = format!("SELECT {columns} FROM links WHERE connection = ?1 AND kind = ?2");
    let limit = limit_i64(limit);
    let mut out = Vec::new();
    let mut push = |mut rows: rusqlite::Rows<'_>| -> Result<(), Fail> {
        while let Some(r) = rows.next()? {
            out.push(row(r)?);
        }
        Ok(())
    };
    match after {
        Some(after) => {
            let mut stmt = tx.prepare_cached(&format!(
                "{base} AND source_id > ?3 ORDER BY source_id LIMIT ?4"
            ))?;
            push(stmt.query((connection, kind.as_str(), after, limit))?)?;
        }
        None => {
            let mut stmt = tx.prepare_cached(&format!("{base} ORDER BY source_id LIMIT ?3"))?;
            push(stmt.query((connection, kind.as_str(), limit))?)?;
        }
    }
    Ok(out)
}

/// Why a call failed inside the blocking task; turned into a [`StateError`] naming the file.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Fail {
    #[error(transparent)]
    Sql(#[from] rusqlite::Error),
    #[error("{0}")]
    Corrupt(String),
    #[error("{0}")]
    Unavailable(String),
    #[error(transparent)]
    State(#[from] StateError),
}

impl Fail {
    fn into_state(self, location: &str) -> StateError {
        match self {
            Fail::State(e) => e,
            Fail::Corrupt(m) => StateError::Corrupt(m),
            Fail::Unavailable(m) => StateError::Unavailable(m),
            Fail::Sql(e) => classify(&e, location),
        }
    }
}

fn classify(e: &rusqlite::Error, location: &str) -> StateError {
    use rusqlite::Error as E;
    match e {
        E::SqliteFailure(f, _)
            if matches!(f.code, ErrorCode::NotADatabase | ErrorCode::DatabaseCorrupt) =>
        {
            StateError::Corrupt(format!("{location}: {e}"))
        }
        E::FromSqlConversionFailure(..)
        | E::IntegralValueOutOfRange(..)
        | E::InvalidColumnType(..)
        | E::Utf8Error(..) => StateError::Corrupt(format!("{location}: unreadable value: {e}")),
        // Busy, locked, I/O, full disk, permissions and anything unforeseen: the caller may retry.
        _ => StateError::Unavailable(format!("{location}: {e}")),
    }
}

// --- row codecs -------------------------------------------------------------------------------

fn kind_from(text: &str) -> Result<ObjectKind, Fail> {
    match text {
        "user" => Ok(ObjectKind::User),
        "group" => Ok(ObjectKind::Group),
        other => Err(Fail::Corrupt(format!("unknown object kind {other:?}"))),
    }
}

fn origin_str(origin: LinkOrigin) -> &'static str {
    match origin {
        LinkOrigin::Created => "created",
        LinkOrigin::Matched => "matched",
    }
}

fn origin_from(text: &str) -> Result<LinkOrigin, Fail> {
    match text {
        "created" => Ok(LinkOrigin::Created),
        "matched" => Ok(LinkOrigin::Matched),
        other => Err(Fail::Corrupt(format!("unknown link origin {other:?}"))),
    }
}

fn to_json<T: serde::Serialize + ?Sized>(value: &T, what: &str) -> Result<String, Fail> {
    serde_json::to_string(value).map_err(|e| Fail::Corrupt(format!("cannot encode {what}: {e}")))
}

fn from_json<T: serde::de::DeserializeOwned>(
    text: &str,
    what: &dyn Fn() -> String,
) -> Result<T, Fail> {
    serde_json::from_str(text)
        .map_err(|e| Fail::Corrupt(format!("{} is not readable: {e}", what())))
}

/// A u64 as SQLite's signed 64-bit integer; values past `i64::MAX` are refused, not wrapped,
/// because wrapping would break the ordering the store relies on.
fn to_i64(value: u64, what: &str) -> Result<i64, Fail> {
    i64::try_from(value).map_err(|_| {
        Fail::Corrupt(format!(
            "{what} {value} is too large to store (max {})",
            i64::MAX
        ))
    })
}

/// A non-negative SQLite integer as a u64; a negative one is a damaged value.
fn get_u64(row: &Row<'_>, column: usize) -> rusqlite::Result<u64> {
    let value: i64 = row.get(column)?;
    u64::try_from(value).map_err(|_| rusqlite::Error::IntegralValueOutOfRange(column, value))
}

fn limit_i64(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}

const LINK_COLUMNS: &str = "kind, source_id, object_id, origin, hash, applied, enabled, licenses, \
                            manager, members, seen_generation, updated_at, deleted_at";

fn link_from_row(row: &Row<'_>) -> Result<Link, Fail> {
    let kind: String = row.get(0)?;
    let source_id: String = row.get(1)?;
    // Built only when a value is unreadable: a full scan must not format 100k messages.
    let (k, id) = (&kind, &source_id);
    let what = |name: &'static str| move || format!("link ({k}, {id:?}) field {name}");
    let applied = from_json(&row.get::<_, String>(5)?, &what("applied"))?;
    let licenses = from_json(&row.get::<_, String>(7)?, &what("licenses"))?;
    let members = from_json(&row.get::<_, String>(9)?, &what("members"))?;
    Ok(Link {
        kind: kind_from(&kind)?,
        object_id: row.get(2)?,
        origin: origin_from(&row.get::<_, String>(3)?)?,
        hash: row.get(4)?,
        applied,
        enabled: row.get(6)?,
        licenses,
        manager: row.get(8)?,
        members,
        seen_generation: get_u64(row, 10)?,
        updated_at: row.get(11)?,
        deleted_at: row.get(12)?,
        source_id,
    })
}

const ERROR_COLUMNS: &str = "kind, source_id, operation, message, attempts, first_failed_at, \
                             last_failed_at, next_retry_at";

fn error_from_row(row: &Row<'_>) -> Result<ObjectError, Fail> {
    Ok(ObjectError {
        kind: kind_from(&row.get::<_, String>(0)?)?,
        source_id: row.get(1)?,
        operation: row.get(2)?,
        message: row.get(3)?,
        attempts: row.get(4)?,
        first_failed_at: row.get(5)?,
        last_failed_at: row.get(6)?,
        next_retry_at: row.get(7)?,
    })
}

/// `ids` without repeats, first occurrence first.
fn unique(ids: &[String]) -> Vec<String> {
    let mut seen = HashSet::with_capacity(ids.len());
    ids.iter()
        .filter(|id| seen.insert(id.as_str()))
        .cloned()
        .collect()
}

fn read_lease(tx: &Transaction<'_>, connection: &str) -> Result<Option<Lease>, Fail> {
    Ok(tx
        .prepare_cached(
            "SELECT owner, host, pid, token, acquired_at, expires_at FROM leases WHERE connection = ?1",
        )?
        .query_row([connection], |row| {
            Ok(Lease {
                connection: connection.to_owned(),
                holder: LeaseHolder {
                    owner: row.get(0)?,
                    host: row.get(1)?,
                    pid: row.get(2)?,
                },
                token: get_u64(row, 3)?,
                acquired_at: row.get(4)?,
                expires_at: row.get(5)?,
            })
        })
        .optional()?)
}

/// Refuses the write of a run whose lease is not the connection's newest ([`StateError::Fenced`]).
/// Called inside the write's own IMMEDIATE transaction: no acquisition can slip between the check
/// and the write.
fn fence(tx: &Transaction<'_>, connection: &str, lease: &Lease) -> Result<(), Fail> {
    let current = read_lease(tx, connection)?.map_or(0, |l| l.token);
    if lease.connection != connection || lease.token != current {
        tracing::warn!(
            connection,
            presented = lease.token,
            current,
            "state write fenced"
        );
        return Err(Fail::State(StateError::Fenced {
            connection: connection.to_owned(),
            presented: lease.token,
            current,
        }));
    }
    Ok(())
}

#[async_trait]
impl StateStore for SqliteStateStore {
    #[instrument(level = "debug", skip_all, fields(connection = %connection, kind = %kind, ids = source_ids.len()))]
    async fn get_links(
        &self,
        connection: &str,
        kind: ObjectKind,
        source_ids: &[String],
    ) -> StateResult<Vec<Link>> {
        let (connection, ids) = (connection.to_owned(), unique(source_ids));
        self.read(move |tx| {
            let mut stmt = tx.prepare_cached(&format!(
                "SELECT {LINK_COLUMNS} FROM links WHERE connection = ?1 AND kind = ?2 AND source_id = ?3"
            ))?;
            let mut out = Vec::with_capacity(ids.len());
            for id in &ids {
                let mut rows = stmt.query((&connection, kind.as_str(), id))?;
                if let Some(row) = rows.next()? {
                    out.push(link_from_row(row)?);
                }
            }
            Ok(out)
        })
        .await
    }

    #[instrument(level = "debug", skip_all, fields(connection = %connection, kind = %kind, limit = limit))]
    async fn list_links(
        &self,
        connection: &str,
        kind: ObjectKind,
        after: Option<&str>,
        limit: usize,
    ) -> StateResult<Vec<Link>> {
        let (connection, after) = (connection.to_owned(), after.map(str::to_owned));
        self.read(move |tx| {
            links_page(
                tx,
                LINK_COLUMNS,
                &connection,
                kind,
                after.as_deref(),
                limit,
                link_from_row,
            )
        })
        .await
    }

    async fn list_link_ids(
        &self,
        connection: &str,
        kind: ObjectKind,
        after: Option<&str>,
        limit: usize,
    ) -> StateResult<Vec<String>> {
        let (connection, after) = (connection.to_owned(), after.map(str::to_owned));
        self.read(move |tx| {
            links_page(
                tx,
                "source_id",
                &connection,
                kind,
                after.as_deref(),
                limit,
                |row| Ok(row.get(0)?),
            )
        })
        .await
    }

    #[instrument(level = "debug", skip_all, fields(connection = %connection, kind = %kind, object_id = %object_id))]
    async fn find_link_by_object(
        &self,
        connection: &str,
        kind: ObjectKind,
        object_id: &str,
    ) -> StateResult<Option<Link>> {
        let (connection, object_id) = (connection.to_owned(), object_id.to_owned());
        self.read(move |tx| {
            let mut stmt = tx.prepare_cached(&format!(
                "SELECT {LINK_COLUMNS} FROM links WHERE connection = ?1 AND kind = ?2 AND object_id = ?3 \
                 ORDER BY source_id LIMIT 1"
            ))?;
            let mut rows = stmt.query((&connection, kind.as_str(), &object_id))?;
            rows.next()?.map(link_from_row).transpose()
        })
        .await
    }

    #[instrument(level = "debug", skip_all, fields(connection = %connection, n = links.len()))]
    async fn put_links(&self, connection: &str, links: &[Link], lease: &Lease) -> StateResult<()> {
        let (connection, links, lease) = (connection.to_owned(), links.to_vec(), lease.clone());
        self.write(move |tx| {
            fence(tx, &connection, &lease)?;
            let mut stmt = tx.prepare_cached(&format!(
                "INSERT OR REPLACE INTO links (connection, {LINK_COLUMNS}) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)"
            ))?;
            for link in &links {
                stmt.execute((
                    &connection,
                    link.kind.as_str(),
                    &link.source_id,
                    &link.object_id,
                    origin_str(link.origin),
                    &link.hash,
                    to_json(&link.applied, "applied")?,
                    link.enabled,
                    to_json(&link.licenses, "licenses")?,
                    &link.manager,
                    to_json(&link.members, "members")?,
                    to_i64(link.seen_generation, "seen_generation")?,
                    link.updated_at,
                    link.deleted_at,
                ))?;
            }
            Ok(())
        })
        .await
    }

    #[instrument(level = "debug", skip_all, fields(connection = %connection, kind = %kind, ids = source_ids.len(), generation = generation))]
    async fn mark_seen(
        &self,
        connection: &str,
        kind: ObjectKind,
        source_ids: &[String],
        generation: u64,
        lease: &Lease,
    ) -> StateResult<()> {
        let (connection, ids, lease) = (connection.to_owned(), source_ids.to_vec(), lease.clone());
        self.write(move |tx| {
            fence(tx, &connection, &lease)?;
            let generation = to_i64(generation, "generation")?;
            let mut stmt = tx.prepare_cached(
                "UPDATE links SET seen_generation = ?4 \
                 WHERE connection = ?1 AND kind = ?2 AND source_id = ?3 AND seen_generation < ?4",
            )?;
            for id in &ids {
                stmt.execute((&connection, kind.as_str(), id, generation))?;
            }
            Ok(())
        })
        .await
    }

    #[instrument(level = "debug", skip_all, fields(connection = %connection, kind = %kind, ids = source_ids.len()))]
    async fn delete_links(
        &self,
        connection: &str,
        kind: ObjectKind,
        source_ids: &[String],
        lease: &Lease,
    ) -> StateResult<()> {
        let (connection, ids, lease) = (connection.to_owned(), source_ids.to_vec(), lease.clone());
        self.write(move |tx| {
            fence(tx, &connection, &lease)?;
            let mut stmt = tx.prepare_cached(
                "DELETE FROM links WHERE connection = ?1 AND kind = ?2 AND source_id = ?3",
            )?;
            for id in &ids {
                stmt.execute((&connection, kind.as_str(), id))?;
            }
            Ok(())
        })
        .await
    }

    #[instrument(level = "debug", skip_all, fields(connection = %connection, kind = %kind))]
    async fn count_links(&self, connection: &str, kind: ObjectKind) -> StateResult<u64> {
        let connection = connection.to_owned();
        self.read(move |tx| {
            let n = tx
                .prepare_cached(
                    "SELECT count(*) FROM links \
                     WHERE connection = ?1 AND kind = ?2 AND deleted_at IS NULL",
                )?
                .query_row((&connection, kind.as_str()), |row| get_u64(row, 0))?;
            Ok(n)
        })
        .await
    }

    #[instrument(level = "debug", skip_all, fields(connection = %connection))]
    async fn get_checkpoint(&self, connection: &str) -> StateResult<Option<Checkpoint>> {
        let connection = connection.to_owned();
        self.read(move |tx| {
            let body: Option<String> = tx
                .prepare_cached("SELECT body FROM checkpoints WHERE connection = ?1")?
                .query_row([&connection], |row| row.get(0))
                .optional()?;
            body.map(|body| from_json(&body, &|| format!("checkpoint of {connection:?}")))
                .transpose()
        })
        .await
    }

    #[instrument(level = "debug", skip_all, fields(connection = %connection, token = lease.token))]
    async fn put_checkpoint(
        &self,
        connection: &str,
        checkpoint: &Checkpoint,
        lease: &Lease,
    ) -> StateResult<()> {
        let (connection, checkpoint, lease) =
            (connection.to_owned(), checkpoint.clone(), lease.clone());
        self.write(move |tx| {
            fence(tx, &connection, &lease)?;
            tx.prepare_cached(
                "INSERT OR REPLACE INTO checkpoints (connection, body, updated_at) VALUES (?1, ?2, ?3)",
            )?
            .execute((&connection, to_json(&checkpoint, "checkpoint")?, checkpoint.updated_at))?;
            Ok(())
        })
        .await
    }

    #[instrument(level = "debug", skip_all, fields(connection = %connection, kind = %error.kind))]
    async fn put_error(
        &self,
        connection: &str,
        error: &ObjectError,
        lease: &Lease,
    ) -> StateResult<()> {
        let (connection, e, lease) = (connection.to_owned(), error.clone(), lease.clone());
        self.write(move |tx| {
            fence(tx, &connection, &lease)?;
            tx.prepare_cached(&format!(
                "INSERT OR REPLACE INTO object_errors (connection, {ERROR_COLUMNS}) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)"
            ))?
            .execute((
                &connection,
                e.kind.as_str(),
                &e.source_id,
                &e.operation,
                &e.message,
                e.attempts,
                e.first_failed_at,
                e.last_failed_at,
                e.next_retry_at,
            ))?;
            Ok(())
        })
        .await
    }

    #[instrument(level = "debug", skip_all, fields(connection = %connection, kind = %kind, ids = source_ids.len()))]
    async fn get_errors(
        &self,
        connection: &str,
        kind: ObjectKind,
        source_ids: &[String],
    ) -> StateResult<Vec<ObjectError>> {
        let (connection, ids) = (connection.to_owned(), unique(source_ids));
        self.read(move |tx| {
            let mut stmt = tx.prepare_cached(&format!(
                "SELECT {ERROR_COLUMNS} FROM object_errors \
                 WHERE connection = ?1 AND kind = ?2 AND source_id = ?3"
            ))?;
            let mut out = Vec::new();
            for id in &ids {
                let mut rows = stmt.query((&connection, kind.as_str(), id))?;
                if let Some(row) = rows.next()? {
                    out.push(error_from_row(row)?);
                }
            }
            Ok(out)
        })
        .await
    }

    #[instrument(level = "debug", skip_all, fields(connection = %connection, kind = %kind, ids = source_ids.len()))]
    async fn clear_errors(
        &self,
        connection: &str,
        kind: ObjectKind,
        source_ids: &[String],
        lease: &Lease,
    ) -> StateResult<()> {
        let (connection, ids, lease) = (connection.to_owned(), source_ids.to_vec(), lease.clone());
        self.write(move |tx| {
            fence(tx, &connection, &lease)?;
            let mut stmt = tx.prepare_cached(
                "DELETE FROM object_errors WHERE connection = ?1 AND kind = ?2 AND source_id = ?3",
            )?;
            for id in &ids {
                stmt.execute((&connection, kind.as_str(), id))?;
            }
            Ok(())
        })
        .await
    }

    #[instrument(level = "debug", skip_all, fields(connection = %connection, limit = limit))]
    async fn list_errors(&self, connection: &str, limit: usize) -> StateResult<Vec<ObjectError>> {
        let connection = connection.to_owned();
        let limit = limit_i64(limit);
        self.read(move |tx| {
            let mut stmt = tx.prepare_cached(&format!(
                "SELECT {ERROR_COLUMNS} FROM object_errors WHERE connection = ?1 \
                 ORDER BY next_retry_at, kind, source_id LIMIT ?2"
            ))?;
            let mut rows = stmt.query((&connection, limit))?;
            let mut out = Vec::new();
            while let Some(row) = rows.next()? {
                out.push(error_from_row(row)?);
            }
            Ok(out)
        })
        .await
    }

    #[instrument(level = "debug", skip_all, fields(connection = %connection, run = %run.id))]
    async fn put_run(&self, connection: &str, run: &RunRecord, lease: &Lease) -> StateResult<()> {
        let (connection, run, lease) = (connection.to_owned(), run.clone(), lease.clone());
        self.write(move |tx| {
            fence(tx, &connection, &lease)?;
            tx.prepare_cached(
                "INSERT OR REPLACE INTO runs (connection, id, started_at, body) VALUES (?1, ?2, ?3, ?4)",
            )?
            .execute((&connection, &run.id, run.started_at, to_json(&run, "run record")?))?;
            Ok(())
        })
        .await
    }

    #[instrument(level = "debug", skip_all, fields(connection = %connection, limit = limit))]
    async fn list_runs(&self, connection: &str, limit: usize) -> StateResult<Vec<RunRecord>> {
        let connection = connection.to_owned();
        let limit = limit_i64(limit);
        self.read(move |tx| {
            let mut stmt = tx.prepare_cached(
                "SELECT id, body FROM runs WHERE connection = ?1 \
                 ORDER BY started_at DESC, id DESC LIMIT ?2",
            )?;
            let mut rows = stmt.query((&connection, limit))?;
            let mut out = Vec::new();
            while let Some(row) = rows.next()? {
                let id: String = row.get(0)?;
                let body: String = row.get(1)?;
                out.push(from_json(&body, &|| {
                    format!("run {id:?} of {connection:?}")
                })?);
            }
            Ok(out)
        })
        .await
    }

    #[instrument(level = "debug", skip_all, fields(connection = %connection, entries = entries.len()))]
    async fn append_history(&self, connection: &str, entries: &[HistoryEntry]) -> StateResult<()> {
        let Some(now) = entries.iter().map(|e| e.at).max() else {
            return Ok(());
        };
        let (connection, entries) = (connection.to_owned(), entries.to_vec());
        self.write(move |tx| {
            let mut insert = tx.prepare_cached(
                "INSERT INTO history (connection, kind, source_id, at, expires_at, body) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?;
            for entry in &entries {
                insert.execute((
                    &connection,
                    entry.kind.as_str(),
                    &entry.source_id,
                    entry.at,
                    entry.expires_at,
                    to_json(entry, "history entry")?,
                ))?;
            }
            tx.prepare_cached("DELETE FROM history WHERE connection = ?1 AND expires_at <= ?2")?
                .execute((&connection, now))?;
            Ok(())
        })
        .await
    }

    #[instrument(level = "debug", skip_all, fields(connection = %connection, kind = %kind, limit = limit))]
    async fn object_history(
        &self,
        connection: &str,
        kind: ObjectKind,
        source_id: &str,
        now: UnixMillis,
        limit: usize,
    ) -> StateResult<Vec<HistoryEntry>> {
        let (connection, source_id) = (connection.to_owned(), source_id.to_owned());
        let limit = limit_i64(limit);
        self.read(move |tx| {
            let mut stmt = tx.prepare_cached(
                "SELECT seq, body FROM history WHERE connection = ?1 AND kind = ?2 \
                 AND source_id = ?3 AND expires_at > ?4 ORDER BY seq DESC LIMIT ?5",
            )?;
            let mut rows = stmt.query((&connection, kind.as_str(), &source_id, now, limit))?;
            let mut out = Vec::new();
            while let Some(row) = rows.next()? {
                let seq: i64 = row.get(0)?;
                let body: String = row.get(1)?;
                out.push(from_json(&body, &|| {
                    format!("history entry {seq} of {connection:?}")
                })?);
            }
            Ok(out)
        })
        .await
    }

    #[instrument(level = "debug", skip_all, fields(connection = %connection, owner = %holder.owner, now = now, ttl_ms = ttl_ms))]
    async fn acquire_lease(
        &self,
        connection: &str,
        holder: &LeaseHolder,
        now: UnixMillis,
        ttl_ms: i64,
    ) -> StateResult<LeaseGrant> {
        let (connection, holder) = (connection.to_owned(), holder.clone());
        self.write(move |tx| {
            let previous = read_lease(tx, &connection)?;
            if let Some(held) = previous.as_ref().filter(|l| l.expires_at > now) {
                tracing::debug!(connection, holder = %held.holder, expires_at = held.expires_at, "lease held");
                return Ok(LeaseGrant::Busy(held.clone()));
            }
            let last = previous.map_or(0, |l| l.token);
            let token = last
                .checked_add(1)
                .ok_or_else(|| Fail::Corrupt(format!("lease token of {connection:?} overflowed")))?;
            let lease = Lease {
                connection,
                holder,
                token,
                acquired_at: now,
                expires_at: now.saturating_add(ttl_ms),
            };
            tx.prepare_cached(
                "INSERT OR REPLACE INTO leases (connection, owner, host, pid, token, acquired_at, expires_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )?
            .execute((
                &lease.connection,
                &lease.holder.owner,
                &lease.holder.host,
                lease.holder.pid,
                to_i64(lease.token, "lease token")?,
                lease.acquired_at,
                lease.expires_at,
            ))?;
            Ok(LeaseGrant::Acquired(lease))
        })
        .await
    }

    #[instrument(level = "debug", skip_all, fields(connection = %connection, now = now))]
    async fn get_lease(&self, connection: &str, now: UnixMillis) -> StateResult<Option<Lease>> {
        let connection = connection.to_owned();
        self.read(move |tx| Ok(read_lease(tx, &connection)?.filter(|l| l.expires_at > now)))
            .await
    }

    #[instrument(level = "debug", skip_all, fields(connection = %connection, token = token))]
    async fn break_lease(&self, connection: &str, token: u64) -> StateResult<bool> {
        let connection = connection.to_owned();
        self.write(move |tx| {
            let changed = tx
                .prepare_cached(
                    "UPDATE leases SET expires_at = ?3 WHERE connection = ?1 AND token = ?2",
                )?
                .execute((&connection, to_i64(token, "lease token")?, i64::MIN))?;
            Ok(changed == 1)
        })
        .await
    }

    #[instrument(level = "debug", skip_all, fields(connection = %lease.connection, token = lease.token, now = now, ttl_ms = ttl_ms))]
    async fn renew_lease(
        &self,
        lease: &Lease,
        now: UnixMillis,
        ttl_ms: i64,
    ) -> StateResult<Option<Lease>> {
        let lease = lease.clone();
        self.write(move |tx| {
            let current = read_lease(tx, &lease.connection)?;
            let held = current.is_some_and(|c| c.token == lease.token && now < c.expires_at);
            if !held {
                return Ok(None);
            }
            let renewed = Lease {
                expires_at: now.saturating_add(ttl_ms),
                ..lease
            };
            tx.prepare_cached("UPDATE leases SET expires_at = ?2 WHERE connection = ?1")?
                .execute((&renewed.connection, renewed.expires_at))?;
            Ok(Some(renewed))
        })
        .await
    }

    #[instrument(level = "debug", skip_all, fields(connection = %lease.connection, token = lease.token))]
    async fn release_lease(&self, lease: &Lease) -> StateResult<()> {
        let lease = lease.clone();
        self.write(move |tx| {
            // Expire it in place: the row keeps the token, the connection's counter.
            tx.prepare_cached(
                "UPDATE leases SET expires_at = ?3 WHERE connection = ?1 AND token = ?2",
            )?
            .execute((
                &lease.connection,
                to_i64(lease.token, "lease token")?,
                i64::MIN,
            ))?;
            Ok(())
        })
        .await
    }

    #[instrument(level = "debug", skip_all, fields(connection = %connection, event_id = %event_id, now = now))]
    async fn remember_event(
        &self,
        connection: &str,
        event_id: &str,
        now: UnixMillis,
        expires_at: UnixMillis,
    ) -> StateResult<EventClaim> {
        let (connection, event_id) = (connection.to_owned(), event_id.to_owned());
        self.write(move |tx| {
            // Purging what has expired (this id included) keeps the table at the live window.
            tx.prepare_cached("DELETE FROM events WHERE connection = ?1 AND expires_at <= ?2")?
                .execute((&connection, now))?;
            let inserted = tx
                .prepare_cached(
                    "INSERT INTO events (connection, event_id, expires_at, state) \
                     VALUES (?1, ?2, ?3, 'in_progress') \
                     ON CONFLICT (connection, event_id) DO NOTHING",
                )?
                .execute((&connection, &event_id, expires_at))?;
            if inserted == 1 {
                return Ok(EventClaim::New);
            }
            let state: String = tx
                .prepare_cached("SELECT state FROM events WHERE connection = ?1 AND event_id = ?2")?
                .query_row((&connection, &event_id), |row| row.get(0))?;
            match state.as_str() {
                "in_progress" => Ok(EventClaim::InProgress),
                "done" => Ok(EventClaim::Done),
                other => Err(Fail::Corrupt(format!(
                    "connection {connection}: event {event_id} has state {other:?}, expected \
                     'in_progress' or 'done'"
                ))),
            }
        })
        .await
    }

    #[instrument(level = "debug", skip_all, fields(connection = %connection, event_id = %event_id))]
    async fn complete_event(
        &self,
        connection: &str,
        event_id: &str,
        expires_at: UnixMillis,
    ) -> StateResult<()> {
        let (connection, event_id) = (connection.to_owned(), event_id.to_owned());
        self.write(move |tx| {
            tx.prepare_cached(
                "INSERT INTO events (connection, event_id, expires_at, state) \
                 VALUES (?1, ?2, ?3, 'done') \
                 ON CONFLICT (connection, event_id) \
                 DO UPDATE SET state = 'done', expires_at = excluded.expires_at",
            )?
            .execute((&connection, &event_id, expires_at))?;
            Ok(())
        })
        .await
    }

    #[instrument(level = "debug", skip_all, fields(connection = %connection, event_id = %event_id))]
    async fn forget_event(&self, connection: &str, event_id: &str) -> StateResult<()> {
        let (connection, event_id) = (connection.to_owned(), event_id.to_owned());
        self.write(move |tx| {
            tx.prepare_cached("DELETE FROM events WHERE connection = ?1 AND event_id = ?2")?
                .execute((&connection, &event_id))?;
            Ok(())
        })
        .await
    }

    #[instrument(level = "debug", skip_all, fields(connection = %connection))]
    async fn clear_connection(&self, connection: &str, lease: &Lease) -> StateResult<()> {
        let (connection, lease) = (connection.to_owned(), lease.clone());
        self.write(move |tx| {
            fence(tx, &connection, &lease)?;
            // `leases` is left alone: its token counter must outlive the connection's data.
            for table in [
                "links",
                "checkpoints",
                "object_errors",
                "runs",
                "events",
                "history",
            ] {
                let removed = tx
                    .prepare_cached(&format!("DELETE FROM {table} WHERE connection = ?1"))?
                    .execute([&connection])?;
                tracing::debug!(connection, table, removed, "cleared");
            }
            Ok(())
        })
        .await
    }
}
