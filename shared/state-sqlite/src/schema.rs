//! The schema, its version and the migrations that bring an older file up to date.
//!
//! The version lives in `PRAGMA user_version`; `PRAGMA application_id` marks the file as ours so
//! that a stray SQLite file of another program is refused rather than written into.

use rusqlite::{Connection, TransactionBehavior};

use crate::Fail;

/// `PRAGMA application_id` of a state database: "M365" in ASCII.
pub(crate) const APPLICATION_ID: i32 = 0x4D33_3635;

/// Migration `i` brings a database from version `i` to version `i + 1`. Append, never edit: a
/// released migration is part of the file format.
const MIGRATIONS: &[&str] = &[V1, V2, V3, V4, V5];

/// The schema version this build writes.
pub(crate) const CURRENT_VERSION: i64 = MIGRATIONS.len() as i64;

const V1: &str = r#"
CREATE TABLE links (
    connection      TEXT    NOT NULL,
    kind            TEXT    NOT NULL,   -- 'user' | 'group'
    source_id       TEXT    NOT NULL,
    object_id       TEXT    NOT NULL,
    origin          TEXT    NOT NULL,   -- 'created' | 'matched'
    hash            TEXT    NOT NULL,
    applied         TEXT    NOT NULL,   -- JSON object: Graph property -> last applied value
    enabled         INTEGER NOT NULL,   -- 0 | 1
    licenses        TEXT    NOT NULL,   -- JSON array of LicenseAssignment
    manager         TEXT,
    members         TEXT    NOT NULL,   -- JSON array of tenant object ids
    seen_generation INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL,
    PRIMARY KEY (connection, kind, source_id)
);

CREATE TABLE checkpoints (
    connection TEXT    NOT NULL PRIMARY KEY,
    body       TEXT    NOT NULL,        -- JSON Checkpoint
    updated_at INTEGER NOT NULL
);

CREATE TABLE object_errors (
    connection      TEXT    NOT NULL,
    kind            TEXT    NOT NULL,
    source_id       TEXT    NOT NULL,
    operation       TEXT    NOT NULL,
    message         TEXT    NOT NULL,
    attempts        INTEGER NOT NULL,
    first_failed_at INTEGER NOT NULL,
    last_failed_at  INTEGER NOT NULL,
    next_retry_at   INTEGER NOT NULL,
    PRIMARY KEY (connection, kind, source_id)
);
CREATE INDEX object_errors_by_retry ON object_errors (connection, next_retry_at);

CREATE TABLE runs (
    connection TEXT    NOT NULL,
    id         TEXT    NOT NULL,
    started_at INTEGER NOT NULL,
    body       TEXT    NOT NULL,        -- JSON RunRecord
    PRIMARY KEY (connection, id)
);
CREATE INDEX runs_by_start ON runs (connection, started_at);

-- One row per connection, never deleted: `token` is the fencing-token counter.
CREATE TABLE leases (
    connection TEXT    NOT NULL PRIMARY KEY,
    owner      TEXT    NOT NULL,
    token      INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
);

CREATE TABLE events (
    connection TEXT    NOT NULL,
    event_id   TEXT    NOT NULL,
    expires_at INTEGER NOT NULL,
    PRIMARY KEY (connection, event_id)
);
CREATE INDEX events_by_expiry ON events (connection, expires_at);
"#;

/// Version 2: who holds a lease (host and process of a local holder, since when); links found
/// by tenant object id (a tenant object is linked to at most one source id); an event id is
/// claimed (`in_progress`) before it is applied and marked `done` after — ids recorded by
/// version 1 were recorded as processed, so they are `done`.
const V2: &str = r#"
ALTER TABLE leases ADD COLUMN host TEXT;
ALTER TABLE leases ADD COLUMN pid INTEGER;
ALTER TABLE leases ADD COLUMN acquired_at INTEGER NOT NULL DEFAULT 0;
CREATE INDEX links_by_object ON links (connection, kind, object_id);
ALTER TABLE events ADD COLUMN state TEXT NOT NULL DEFAULT 'done'
    CHECK (state IN ('in_progress', 'done'));
"#;

/// Version 3: when this connection deleted a linked user (`NULL`: the object is live); the link
/// is kept while Graph can restore the user.
const V3: &str = r#"
ALTER TABLE links ADD COLUMN deleted_at INTEGER;
"#;

/// Version 4: the link of a tenant object is found through the index alone. With
/// `ORDER BY source_id`, the version-2 index left SQLite scanning every link of the connection
/// in source-id order (the primary key) for each look-up: a first load's records grew with the
/// square of its size.
const V4: &str = r#"
DROP INDEX links_by_object;
CREATE INDEX links_by_object ON links (connection, kind, object_id, source_id);
"#;

/// Version 5: each object's history — every step applied, failed or held, with the tenant's
/// answer — kept until `expires_at` (the rule's `history_days`).
const V5: &str = r#"
CREATE TABLE history (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    connection TEXT    NOT NULL,
    kind       TEXT    NOT NULL,
    source_id  TEXT    NOT NULL,
    at         INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    body       TEXT    NOT NULL        -- JSON HistoryEntry
);
CREATE INDEX history_by_object ON history (connection, kind, source_id, seq);
CREATE INDEX history_by_expiry ON history (connection, expires_at);
"#;

/// Creates the schema or migrates it to [`CURRENT_VERSION`], in one transaction. Refuses a file
/// written by a newer build or by another program. `location` names the file in messages.
pub(crate) fn migrate(conn: &mut Connection, location: &str) -> Result<(), Fail> {
    // IMMEDIATE: two processes opening a fresh file at once must not both create the tables.
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let app_id: i32 = tx.pragma_query_value(None, "application_id", |row| row.get(0))?;
    let version: i64 = tx.pragma_query_value(None, "user_version", |row| row.get(0))?;
    if app_id != 0 && app_id != APPLICATION_ID {
        return Err(Fail::Corrupt(format!(
            "{location} is a SQLite database of another program (application_id {app_id:#x}), \
             not an m365-provisioner state database; point the state path at another file"
        )));
    }
    if version > CURRENT_VERSION {
        return Err(Fail::Corrupt(format!(
            "{location} has state schema version {version}, newer than the version {CURRENT_VERSION} \
             this build understands; upgrade m365-provisioner (the file was not modified)"
        )));
    }
    if version < 0 {
        return Err(Fail::Corrupt(format!(
            "{location} has an invalid state schema version {version}"
        )));
    }
    if version == 0 && app_id == 0 {
        // A file that is neither empty nor ours would make CREATE TABLE fail below; say why.
        let tables: i64 =
            tx.query_row("SELECT count(*) FROM sqlite_schema", [], |row| row.get(0))?;
        if tables > 0 {
            return Err(Fail::Corrupt(format!(
                "{location} already holds {tables} schema objects but is not an m365-provisioner \
                 state database; point the state path at another file"
            )));
        }
    }
    let from = usize::try_from(version).unwrap_or(usize::MAX);
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(from) {
        tracing::info!(location, from = i, to = i + 1, "migrating the state schema");
        tx.execute_batch(sql)?;
    }
    if version < CURRENT_VERSION {
        tx.pragma_update(None, "application_id", APPLICATION_ID)?;
        tx.pragma_update(None, "user_version", CURRENT_VERSION)?;
    }
    tx.commit()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "test code")]

    use super::*;

    #[test]
    fn event_ids_of_version_1_are_done_in_version_2() {
        let mut conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(V1).unwrap();
        conn.pragma_update(None, "application_id", APPLICATION_ID)
            .unwrap();
        conn.pragma_update(None, "user_version", 1).unwrap();
        conn.execute(
            "INSERT INTO events (connection, event_id, expires_at) VALUES ('c', 'e', 5000)",
            [],
        )
        .unwrap();
        migrate(&mut conn, "test.db").unwrap();
        let version: i64 = conn
            .pragma_query_value(None, "user_version", |row| row.get(0))
            .unwrap();
        assert_eq!(version, CURRENT_VERSION);
        let (state, expires_at): (String, i64) = conn
            .query_row(
                "SELECT state, expires_at FROM events WHERE connection = 'c' AND event_id = 'e'",
                [],
                |row| Ok((row.get(0)?, row.get(1)?)),
            )
            .unwrap();
        assert_eq!((state.as_str(), expires_at), ("done", 5000));
        let refused = conn.execute(
            "INSERT INTO events (connection, event_id, expires_at, state) VALUES ('c', 'f', 1, 'x')",
            [],
        );
        assert!(refused.is_err(), "the state is checked");
    }
}
