//! [`FileSource`]: the [`Source`] port over a JSON file or a CSV pair.

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use m365_core::{
    SnapshotPage, Source, SourceCapabilities, SourceCursor, SourceError, SourceGroup, SourceUser,
};
use serde::{Deserialize, Serialize};

use crate::loader::{FileLoader, LocalFileLoader};
use crate::parsed::{Lookup, MissingGroups, Parsed, Raw, RawFile, RawUser};
use crate::{FileFormat, FileSourceConfig, FileSourceConfigError};
use crate::{csv_format, json};

/// Version of the cursor's content; a cursor of another version restarts the snapshot.
const CURSOR_VERSION: u32 = 1;

/// How many times a file that changes while it is being read is read again.
const READ_ATTEMPTS: usize = 3;

/// Where a snapshot resumes: `{"v": 1, "version": "<file version tag>", "offset": <users done>}`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileCursor {
    v: u32,
    version: String,
    offset: usize,
}

/// The files one location stands for.
#[derive(Debug, Clone)]
enum Files {
    Json { path: String },
    Csv { users: String, groups: String },
}

/// Joins a CSV file name to a location: `dir` → `dir/users.csv`, `prefix/` → `prefix/users.csv`,
/// `.../export-users.csv` → itself (and `.../export-groups.csv` for the groups).
fn csv_paths(location: &str) -> (String, String) {
    if let Some(stem) = location.strip_suffix("users.csv") {
        (location.to_owned(), format!("{stem}groups.csv"))
    } else if location.ends_with('/') {
        (
            format!("{location}users.csv"),
            format!("{location}groups.csv"),
        )
    } else {
        (
            format!("{location}/users.csv"),
            format!("{location}/groups.csv"),
        )
    }
}

/// The file source (docs/design.md#file-source-format): users and groups from a JSON file or from
/// `users.csv` and optionally `groups.csv`, through a [`FileLoader`].
///
/// Paging: the first page carries every group (so that group-based scope is known before any
/// user) and the first `page_size` user records; each later page the next `page_size` user
/// records. A record in error counts as a record and its [`m365_core::RecordError`] is on the page
/// where the record sits. The cursor carries the file's version tag: if the file changes between
/// two pages the next call fails with [`SourceError::CursorExpired`], so one snapshot never mixes
/// two versions of the file.
///
/// The read file is cached, keyed by its version tag, so a snapshot of many pages reads it once.
/// A JSON file is kept as its bytes with each user record's place and id; a page's records are
/// converted when the page is asked for (on every core for a large page), so memory holds the
/// file and one page of users rather than every user.
pub struct FileSource {
    config: FileSourceConfig,
    files: Files,
    loader: Arc<dyn FileLoader>,
    cache: Mutex<Option<Arc<Parsed>>>,
}

impl std::fmt::Debug for FileSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileSource")
            .field("config", &self.config)
            .field("files", &self.files)
            .finish_non_exhaustive()
    }
}

impl FileSource {
    /// A file source reading through `loader`. Fails when the config is invalid.
    pub fn new(
        config: FileSourceConfig,
        loader: Arc<dyn FileLoader>,
    ) -> Result<Self, FileSourceConfigError> {
        config.validate()?;
        let files = match config.resolved_format() {
            FileFormat::Json => Files::Json {
                path: config.location.clone(),
            },
            FileFormat::Csv | FileFormat::Auto => {
                let (users, groups) = csv_paths(&config.location);
                Files::Csv { users, groups }
            }
        };
        Ok(FileSource {
            config,
            files,
            loader,
            cache: Mutex::new(None),
        })
    }

    /// A file source reading local paths.
    pub fn local(config: FileSourceConfig) -> Result<Self, FileSourceConfigError> {
        Self::new(config, Arc::new(LocalFileLoader))
    }

    pub fn config(&self) -> &FileSourceConfig {
        &self.config
    }

    /// The version tag of everything this source reads.
    async fn version(&self) -> Result<String, SourceError> {
        match &self.files {
            Files::Json { path } => Ok(format!("json={}", self.loader.version(path).await?)),
            Files::Csv { users, groups } => {
                let users_version = self.loader.version(users).await?;
                let groups_version = if self.loader.exists(groups).await? {
                    self.loader.version(groups).await?
                } else {
                    "absent".to_owned()
                };
                Ok(format!(
                    "users.csv={users_version};groups.csv={groups_version}"
                ))
            }
        }
    }

    fn cached(&self, version: &str) -> Option<Arc<Parsed>> {
        let cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        cache.as_ref().filter(|p| p.version == version).cloned()
    }

    /// Reads and parses the files once; `None` when they changed while being read.
    async fn read(&self, version: String) -> Result<Option<Parsed>, SourceError> {
        let (RawFile { users, groups }, text) = match &self.files {
            Files::Json { path } => {
                let bytes = self.loader.load(path).await?;
                if self.version().await? != version {
                    return Ok(None);
                }
                (json::parse(path, &bytes, &self.config)?, bytes)
            }
            Files::Csv { users, groups } => {
                let users_bytes = self.loader.load(users).await?;
                let groups_bytes = if version.ends_with(";groups.csv=absent") {
                    None
                } else {
                    Some(self.loader.load(groups).await?)
                };
                if self.version().await? != version {
                    return Ok(None);
                }
                let parsed_users = csv_format::parse_users(users, &users_bytes, &self.config)?;
                let parsed_groups = match (groups_bytes, self.config.groups) {
                    (Some(_), false) => {
                        return Err(SourceError::Unreadable(format!(
                            "{groups}: a groups.csv is there, but the source is configured \
                             without groups (`groups = false`); remove the setting to sync the \
                             groups, or the file"
                        )));
                    }
                    (Some(bytes), true) => {
                        Some(csv_format::parse_groups(groups, &bytes, &self.config)?)
                    }
                    (None, false) => Some(Vec::new()),
                    (None, true) => None,
                };
                let users = parsed_users
                    .into_iter()
                    .map(|Raw { location, outcome }| Raw {
                        location,
                        outcome: outcome.map(RawUser::Read),
                    })
                    .collect();
                let raw = RawFile {
                    users,
                    groups: parsed_groups,
                };
                (raw, Vec::new())
            }
        };
        let groups = groups.ok_or_else(|| self.missing_groups());
        Ok(Some(Parsed::build(version, users, groups, text)))
    }

    /// What is said when the file has no groups although the source should.
    fn missing_groups(&self) -> MissingGroups {
        let (location, missing, fix) = match &self.files {
            Files::Json { path } => (
                path.clone(),
                "the file has no \"groups\" list",
                "add \"groups\": [] to the file",
            ),
            Files::Csv { groups, .. } => (
                groups.clone(),
                "there is no groups.csv",
                "add a groups.csv holding only its header line (id,name,members)",
            ),
        };
        tracing::warn!(location = %location, "{missing}: the group snapshot is incomplete");
        MissingGroups {
            location,
            message: format!(
                "{missing}, so the groups are unknown: the group snapshot is incomplete and no \
                 group or membership is deprovisioned. If the source has no groups, {fix} or set \
                 `groups = false` in [source]"
            ),
        }
    }

    /// The user records `range`, each a user or its error. A large page is converted on the
    /// blocking pool, so that a caller reading ahead maps one page while the next is converted.
    async fn user_page(
        &self,
        parsed: &Arc<Parsed>,
        range: std::ops::Range<usize>,
    ) -> Vec<Result<SourceUser, m365_core::RecordError>> {
        if range.len() < Parsed::PARALLEL_PAGE || tokio::runtime::Handle::try_current().is_err() {
            return parsed.user_page(range, &self.config);
        }
        let (shared, config, records) = (Arc::clone(parsed), self.config.clone(), range.clone());
        match tokio::task::spawn_blocking(move || shared.user_page(records, &config)).await {
            Ok(records) => records,
            Err(e) => match e.try_into_panic() {
                Ok(panic) => std::panic::resume_unwind(panic),
                // Cancelled: the runtime is shutting down. The page is read here instead, never
                // left short (a missing user would read as gone from the source).
                Err(_) => parsed.user_page(range, &self.config),
            },
        }
    }

    /// The current content, parsed once per version.
    async fn current(&self) -> Result<Arc<Parsed>, SourceError> {
        for _ in 0..READ_ATTEMPTS {
            let version = self.version().await?;
            if let Some(parsed) = self.cached(&version) {
                return Ok(parsed);
            }
            let Some(parsed) = self.read(version).await? else {
                continue;
            };
            let parsed = Arc::new(parsed);
            tracing::info!(
                location = %self.config.location,
                users = parsed.users.len(),
                groups = parsed.groups.len(),
                errors = parsed.error_count(),
                "file source read"
            );
            *self.cache.lock().unwrap_or_else(|p| p.into_inner()) = Some(Arc::clone(&parsed));
            return Ok(parsed);
        }
        Err(SourceError::Unavailable(format!(
            "{}: the file kept changing while being read ({READ_ATTEMPTS} attempts); try again",
            self.config.location
        )))
    }
}

fn decode_cursor(cursor: &SourceCursor) -> Result<FileCursor, SourceError> {
    let decoded: FileCursor = serde_json::from_value(cursor.0.clone()).map_err(|e| {
        SourceError::CursorExpired(format!("not a file-source cursor ({e}): {}", cursor.0))
    })?;
    if decoded.v != CURSOR_VERSION {
        return Err(SourceError::CursorExpired(format!(
            "file-source cursor format v{} (this build reads v{CURSOR_VERSION})",
            decoded.v
        )));
    }
    Ok(decoded)
}

fn encode_cursor(version: &str, offset: usize) -> SourceCursor {
    SourceCursor(serde_json::json!({
        "v": CURSOR_VERSION,
        "version": version,
        "offset": offset,
    }))
}

#[async_trait]
impl Source for FileSource {
    fn kind(&self) -> &'static str {
        "file"
    }

    fn capabilities(&self) -> SourceCapabilities {
        SourceCapabilities {
            incremental: false,
            explicit_deletes: false,
            resumable_snapshot: true,
        }
    }

    async fn snapshot_page(
        &self,
        cursor: Option<&SourceCursor>,
        page_size: usize,
    ) -> Result<SnapshotPage, SourceError> {
        let page_size = page_size.max(1);
        let resume = cursor.map(decode_cursor).transpose()?;
        let parsed = self.current().await?;
        let offset = match &resume {
            None => 0,
            Some(c) if c.version != parsed.version => {
                return Err(SourceError::CursorExpired(format!(
                    "{} changed since the snapshot started (version {} → {}); restart the \
                     snapshot",
                    self.config.location, c.version, parsed.version
                )));
            }
            Some(c) if c.offset > parsed.users.len() => {
                return Err(SourceError::CursorExpired(format!(
                    "cursor offset {} is past the {} user records of {}",
                    c.offset,
                    parsed.users.len(),
                    self.config.location
                )));
            }
            Some(c) => c.offset,
        };
        let end = offset.saturating_add(page_size).min(parsed.users.len());
        let mut page = SnapshotPage::default();
        if resume.is_none() {
            page.groups = parsed.groups.clone();
            page.errors = parsed.group_errors.clone();
        }
        for record in self.user_page(&parsed, offset..end).await {
            match record {
                Ok(user) => page.users.push(user),
                Err(error) => page.errors.push(error),
            }
        }
        if end < parsed.users.len() {
            page.next = Some(encode_cursor(&parsed.version, end));
        }
        Ok(page)
    }

    async fn fetch_user(&self, id: &str) -> Result<Option<SourceUser>, SourceError> {
        let parsed = self.current().await?;
        match parsed.user(id, &self.config) {
            Lookup::Found(user) => Ok(Some(user)),
            Lookup::Absent => Ok(None),
            Lookup::InError(message) => Err(SourceError::Unreadable(format!(
                "user \"{id}\" in {}: {message}",
                self.config.location
            ))),
            // "Not found" would let a caller deprovision a user whose record merely lost its id.
            Lookup::Unprovable(count) => Err(SourceError::Unreadable(format!(
                "user \"{id}\" not found in {}, but {count} user record(s) have no readable id, \
                 so its absence cannot be trusted",
                self.config.location
            ))),
        }
    }

    async fn fetch_group(&self, id: &str) -> Result<Option<SourceGroup>, SourceError> {
        let parsed = self.current().await?;
        match parsed.group(id) {
            Lookup::Found(group) => Ok(Some(group)),
            Lookup::Absent => Ok(None),
            Lookup::InError(message) => Err(SourceError::Unreadable(format!(
                "group \"{id}\" in {}: {message}",
                self.config.location
            ))),
            Lookup::Unprovable(count) => Err(SourceError::Unreadable(format!(
                "group \"{id}\" not found in {}, but {count} group record(s) have no readable id, \
                 so its absence cannot be trusted",
                self.config.location
            ))),
        }
    }
}
