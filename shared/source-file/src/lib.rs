//! The file source (docs/design.md#file-source-format): users and groups from a JSON file or a
//! `users.csv` / `groups.csv` pair, read through a [`FileLoader`] (local paths here; `s3://` from
//! the AWS adapters).
//!
//! A file that cannot be parsed at all fails the read ([`m365_core::SourceError::Unreadable`]), so
//! the snapshot is incomplete and nothing is deprovisioned; a broken record is a
//! [`m365_core::RecordError`] naming its place (`users[3]`, `users.csv line 12`, `groups[1]`)
//! and the rest of the file still syncs.
//!
//! Format decisions beyond docs/design.md#file-source-format:
//! - JSON: the top level must be an object with a `users` list (an empty list is fine, a missing
//!   one is unreadable) and a `groups` list; any other top-level key is unreadable, so a
//!   misspelt `"group"` never reads as "no groups". `enabled` is required (bool, or a string /
//!   number matched against `enabled_values` / `disabled_values`); a `null` attribute is absent;
//!   `{"base64": "..."}` is a binary attribute; a group needs `name` and `members`.
//! - CSV: cells are text (no type guessing); an empty cell is absent; a cell holding `;` is a list
//!   (items trimmed, empty items dropped); both the id and the enabled column must be in the
//!   header. A row of the wrong width is a record error *without* a source id (its columns may be
//!   shifted). `location` is a directory or `prefix/` (→ `users.csv`, `groups.csv`), or a path
//!   ending in `users.csv` (→ the `groups.csv` with the same prefix).
//! - Groups: a file without a `groups` list, or a CSV location without `groups.csv`, is an
//!   *incomplete group snapshot*, not "no groups": the first page carries a group
//!   [`m365_core::RecordError`] without an id, so no group or membership is deprovisioned (users
//!   still are), and a group cannot be looked up. A source that has no groups says so with
//!   `groups = false` ([`FileSourceConfig::groups`]); a `groups` list or a `groups.csv` then
//!   contradicts it and is unreadable.
//! - A duplicate id skips *every* record carrying it, each with an error that has the id, so the
//!   identity is left unchanged. A group member whose user record is in error stays a member.

mod csv_format;
mod json;
mod loader;
mod parsed;
mod source;

pub use loader::{FileLoader, LocalFileLoader};
pub use m365_core::config::file_source::{
    CsvEncoding, FileFormat, FileSourceConfig, FileSourceConfigError,
};
pub use source::FileSource;
