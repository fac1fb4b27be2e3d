//! The PingOne source: users and groups of one PingOne environment, through the PingOne
//! Platform API with a worker application's client credentials
//! (<https://developer.pingidentity.com/pingone-api/platform/users.html>).
//!
//! * Users: `GET /users?filter=…&limit=…`, pages followed through `_links.next`; the scope is a
//!   filter of populations, group memberships (`memberOfGroups[id eq "…"]`) and the operator's
//!   own filter, which PingOne evaluates.
//! * Groups: `GET /groups`, each group's members through
//!   `GET /users?filter=memberOfGroups[id eq "<gid>"]` (members of nested groups count, as PingOne
//!   counts them; with `nested_groups = false`, `and type eq "DIRECT"` inside the brackets). A
//!   dynamic group's (`userFilter`) members are read the same way and never written.
//! * Deletions: a complete snapshot sweeps; between full passes the Audit Activities API names
//!   what changed ([`activities`]), and each named user and group is read again.
//!
//! See docs/design.md#pingone-source.

pub mod activities;
pub mod client;
pub mod record;

use std::collections::BTreeSet;
use std::time::Duration;

use async_trait::async_trait;
use m365_core::config::pingone_source::PingOneSourceConfig;
use m365_core::model::{SourceGroup, SourceUser};
use m365_core::secrets::ConnectionSecrets;
use m365_core::source::{
    Change, ChangePage, SnapshotPage, Source, SourceCapabilities, SourceCursor, SourceError,
};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde_json::{Value, json};

pub use m365_core::config::pingone_source::PingOneSourceConfigError;

use activities::{Mark, Targets};
use client::{Api, ApiError};

/// Version of the cursors this source writes.
const CURSOR_VERSION: u64 = 1;
/// Activities per page asked of the Audit Activities API.
const ACTIVITIES_PAGE: u32 = 1000;
/// Above this many identities named by activities, a full pass is cheaper than reading each.
const MAX_TARGETS: usize = 2000;
/// The most groups read again because users were deleted.
const MAX_GROUPS_REREAD: usize = 200;

/// What a query value must not carry unencoded.
const QUERY: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// A PingOne environment as a source.
#[derive(Debug)]
pub struct PingOneSource {
    config: PingOneSourceConfig,
    api: Api,
}

impl PingOneSource {
    /// Checks the settings and takes the client secret from the connection's secrets (a missing
    /// one fails the first read, naming it).
    pub fn new(
        config: PingOneSourceConfig,
        secrets: &ConnectionSecrets,
    ) -> Result<PingOneSource, PingOneSourceConfigError> {
        config.validate()?;
        let secret = secrets.extra.get(&config.client_secret_secret).cloned();
        let api = Api::new(&config, secret).map_err(|e| PingOneSourceConfigError::Url {
            key: "api_url",
            value: e.to_string(),
        })?;
        Ok(PingOneSource { config, api })
    }

    /// API requests made so far (every attempt; token requests not counted).
    pub fn requests(&self) -> u64 {
        self.api.requests()
    }

    /// A failed request as the engine sees it, naming the environment.
    fn failure(&self, error: ApiError) -> SourceError {
        let message = format!(
            "PingOne environment {} ({}): {error}",
            self.config.environment_id,
            self.api.environment_url()
        );
        match error {
            ApiError::Unreadable { .. } => SourceError::Unreadable(message),
            _ => SourceError::Unavailable(message),
        }
    }

    /// The users filter of the configured scope, if any.
    fn scope_filter(&self) -> Option<String> {
        let any = |items: Vec<String>| match items.len() {
            0 => None,
            1 => items.into_iter().next(),
            _ => Some(format!("({})", items.join(" or "))),
        };
        let populations = any(self
            .config
            .populations
            .iter()
            .map(|p| format!("population.id eq \"{p}\""))
            .collect());
        let groups = any(self
            .config
            .member_of_groups
            .iter()
            .map(|g| format!("memberOfGroups[id eq \"{g}\"]"))
            .collect());
        let own = self.config.user_filter.as_ref().map(|f| format!("({f})"));
        let parts: Vec<String> = [populations, groups, own].into_iter().flatten().collect();
        (!parts.is_empty()).then(|| parts.join(" and "))
    }

    fn users_path(&self, filter: Option<&str>, limit: u32) -> String {
        match filter {
            Some(f) => format!("users?filter={}&limit={limit}", encode(f)),
            None => format!("users?limit={limit}"),
        }
    }

    /// Every group (of `group_filter`) with its members.
    async fn read_groups(&self) -> Result<Vec<Value>, ApiError> {
        if !self.config.groups {
            return Ok(Vec::new());
        }
        let path = match &self.config.group_filter {
            Some(f) => format!("groups?filter={}&limit=1000", encode(f)),
            None => "groups?limit=1000".to_owned(),
        };
        self.api.collect(&path, "groups").await
    }

    /// The ids of a group's member users.
    async fn members(&self, group: &Value) -> Result<Vec<String>, ApiError> {
        let Some(id) = record::id_of(group) else {
            return Ok(Vec::new());
        };
        let dynamic = record::user_filter(group).is_some();
        let filter = if self.config.nested_groups || dynamic {
            format!("memberOfGroups[id eq \"{id}\"]")
        } else {
            format!("memberOfGroups[id eq \"{id}\" and type eq \"DIRECT\"]")
        };
        let users = self
            .api
            .collect(
                &self.users_path(Some(&filter), self.config.page_size),
                "users",
            )
            .await?;
        Ok(users
            .iter()
            .filter_map(record::id_of)
            .map(str::to_owned)
            .collect())
    }

    async fn groups_with_members(&self) -> Result<SnapshotPage, ApiError> {
        let mut page = SnapshotPage::default();
        for group in self.read_groups().await? {
            let members = self.members(&group).await?;
            match record::group(&group, members) {
                Ok(group) => page.groups.push(group),
                Err(error) => page.errors.push(error),
            }
        }
        Ok(page)
    }

    async fn users_page(&self, href: &str) -> Result<(Vec<Value>, Option<String>), SourceError> {
        let page = self.api.get(href).await.map_err(|e| match e {
            // A cursor PingOne no longer accepts: the snapshot starts over.
            ApiError::Refused { status: 400, .. } if href.contains("cursor=") => {
                SourceError::CursorExpired(format!("PingOne refused the stored page cursor: {e}"))
            }
            other => self.failure(other),
        })?;
        client::split_page(&page, "users").map_err(|m| {
            SourceError::Unreadable(format!(
                "PingOne environment {}: a users page: {m}",
                self.config.environment_id
            ))
        })
    }

    /// Whether a user PingOne has is in the configured scope.
    async fn in_scope(&self, user: &Value) -> Result<bool, ApiError> {
        if !self.config.populations.is_empty() {
            let population = user.pointer("/population/id").and_then(Value::as_str);
            if !population.is_some_and(|p| self.config.populations.iter().any(|c| c == p)) {
                return Ok(false);
            }
        }
        if self.config.member_of_groups.is_empty() && self.config.user_filter.is_none() {
            return Ok(true);
        }
        // PingOne evaluates the rest: the user's username within the scope filter.
        let Some(username) = user.get("username").and_then(Value::as_str) else {
            return Ok(false);
        };
        let escaped = username.replace('\\', "\\\\").replace('"', "\\\"");
        let scope = self.scope_filter().unwrap_or_default();
        let filter = format!("username eq \"{escaped}\" and {scope}");
        let found = self
            .api
            .collect(&self.users_path(Some(&filter), 10), "users")
            .await?;
        let id = record::id_of(user);
        Ok(found.iter().any(|u| record::id_of(u) == id))
    }

    async fn read_user(&self, id: &str) -> Result<Option<SourceUser>, SourceError> {
        let value = match self.api.get(&format!("users/{}", encode(id))).await {
            Ok(value) => value,
            Err(ApiError::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(self.failure(e)),
        };
        if !self.in_scope(&value).await.map_err(|e| self.failure(e))? {
            return Ok(None);
        }
        record::user(&value)
            .map(Some)
            .map_err(|e| SourceError::Unreadable(format!("{}: {}", e.location, e.message)))
    }

    async fn read_group(&self, id: &str) -> Result<Option<SourceGroup>, SourceError> {
        if !self.config.groups {
            return Ok(None);
        }
        let value = match self.api.get(&format!("groups/{}", encode(id))).await {
            Ok(value) => value,
            Err(ApiError::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(self.failure(e)),
        };
        if let Some(filter) = &self.config.group_filter {
            let path = format!(
                "groups?filter={}&limit=10",
                encode(&format!("id eq \"{id}\" and ({filter})"))
            );
            let found = self
                .api
                .collect(&path, "groups")
                .await
                .map_err(|e| self.failure(e))?;
            if !found.iter().any(|g| record::id_of(g) == Some(id)) {
                return Ok(None);
            }
        }
        let members = self.members(&value).await.map_err(|e| self.failure(e))?;
        record::group(&value, members)
            .map(Some)
            .map_err(|e| SourceError::Unreadable(format!("{}: {}", e.location, e.message)))
    }

    /// The groups a change of `groups`' members also changes: those they are nested in, at any
    /// depth (their flattened members change with them).
    async fn with_ancestors(
        &self,
        groups: &BTreeSet<String>,
    ) -> Result<BTreeSet<String>, ApiError> {
        let mut all = groups.clone();
        if !self.config.nested_groups {
            return Ok(all);
        }
        let mut queue: Vec<String> = groups.iter().cloned().collect();
        while let Some(group) = queue.pop() {
            let parents = match self
                .api
                .collect(
                    &format!("groups/{}/memberOfGroups", encode(&group)),
                    "groupMemberships",
                )
                .await
            {
                Ok(parents) => parents,
                Err(ApiError::NotFound { .. }) => continue,
                Err(e) => return Err(e),
            };
            for parent in parents.iter().filter_map(record::id_of) {
                if all.insert(parent.to_owned()) {
                    queue.push(parent.to_owned());
                }
            }
        }
        Ok(all)
    }

    /// The groups a change of users can change without an activity of its own: the dynamic
    /// groups when users changed (their members follow user attributes), and every group when
    /// users were deleted (PingOne does not say which groups a deleted user left), up to
    /// [`MAX_GROUPS_REREAD`]; past it, the next full pass settles those memberships.
    async fn groups_users_change(&self, targets: &Targets) -> Result<BTreeSet<String>, ApiError> {
        if !self.config.groups || (targets.users.is_empty() && targets.deleted_users.is_empty()) {
            return Ok(BTreeSet::new());
        }
        let groups = self.read_groups().await?;
        let every = !targets.deleted_users.is_empty();
        if every && groups.len() > MAX_GROUPS_REREAD {
            tracing::warn!(
                groups = groups.len(),
                "users were deleted; their group memberships are settled by the next full pass"
            );
        }
        let every = every && groups.len() <= MAX_GROUPS_REREAD;
        Ok(groups
            .iter()
            .filter(|g| every || record::user_filter(g).is_some())
            .filter_map(record::id_of)
            .map(str::to_owned)
            .collect())
    }

    /// The changes the named identities make now.
    async fn resolve(&self, mut targets: Targets) -> Result<Vec<Change>, SourceError> {
        let more = self
            .groups_users_change(&targets)
            .await
            .map_err(|e| self.failure(e))?;
        targets.groups.extend(more);
        let groups = self
            .with_ancestors(&targets.groups)
            .await
            .map_err(|e| self.failure(e))?;
        let mut changes = Vec::new();
        for id in &targets.users {
            changes.push(match self.read_user(id).await? {
                Some(user) => Change::UpsertUser(user),
                None => Change::DeleteUser { id: id.clone() },
            });
        }
        for id in &targets.deleted_users {
            changes.push(Change::DeleteUser { id: id.clone() });
        }
        for id in groups.difference(&targets.deleted_groups) {
            changes.push(match self.read_group(id).await? {
                Some(group) => Change::UpsertGroup(group),
                None => Change::DeleteGroup { id: id.clone() },
            });
        }
        for id in &targets.deleted_groups {
            changes.push(Change::DeleteGroup { id: id.clone() });
        }
        Ok(changes)
    }

    fn decode_mark(&self, cursor: &SourceCursor) -> Result<Mark, SourceError> {
        let version = cursor.0.get("v").and_then(Value::as_u64);
        let mark = cursor.0.get("activities").cloned();
        match (version, mark) {
            (Some(CURSOR_VERSION), Some(mark)) => serde_json::from_value(mark).map_err(|e| {
                SourceError::CursorExpired(format!("the stored activities mark is unreadable: {e}"))
            }),
            _ => Err(SourceError::CursorExpired(
                "the stored cursor is not a PingOne activities mark of this version".to_owned(),
            )),
        }
    }
}

fn encode(text: &str) -> String {
    utf8_percent_encode(text, QUERY).to_string()
}

fn users_cursor(href: String) -> SourceCursor {
    SourceCursor(json!({"v": CURSOR_VERSION, "users": href}))
}

#[async_trait]
impl Source for PingOneSource {
    fn kind(&self) -> &'static str {
        "pingone"
    }

    fn capabilities(&self) -> SourceCapabilities {
        SourceCapabilities {
            incremental: self.config.activities,
            explicit_deletes: self.config.activities,
            resumable_snapshot: true,
        }
    }

    async fn snapshot_page(
        &self,
        cursor: Option<&SourceCursor>,
        page_size: usize,
    ) -> Result<SnapshotPage, SourceError> {
        let limit = self
            .config
            .page_size
            .min(u32::try_from(page_size.max(1)).unwrap_or(u32::MAX));
        let (mut page, href) = match cursor {
            None => {
                let page = self
                    .groups_with_members()
                    .await
                    .map_err(|e| self.failure(e))?;
                (page, self.users_path(self.scope_filter().as_deref(), limit))
            }
            Some(cursor) => {
                let href = cursor
                    .0
                    .get("users")
                    .and_then(Value::as_str)
                    .filter(|_| cursor.0.get("v").and_then(Value::as_u64) == Some(CURSOR_VERSION))
                    .ok_or_else(|| {
                        SourceError::CursorExpired(
                            "the stored cursor is not a PingOne users page of this version"
                                .to_owned(),
                        )
                    })?;
                (SnapshotPage::default(), href.to_owned())
            }
        };
        let (users, next) = self.users_page(&href).await?;
        for value in &users {
            match record::user(value) {
                Ok(user) => page.users.push(user),
                Err(error) => page.errors.push(error),
            }
        }
        page.next = next.map(users_cursor);
        Ok(page)
    }

    async fn changes(
        &self,
        cursor: &SourceCursor,
        _page_size: usize,
    ) -> Result<ChangePage, SourceError> {
        if !self.config.activities {
            return Err(SourceError::Unsupported(
                "incremental changes (activities = false)",
            ));
        }
        let mark = self.decode_mark(cursor)?;
        let now = time::OffsetDateTime::now_utc();
        if mark.is_expired(now) {
            return Err(SourceError::CursorExpired(format!(
                "the activities mark is from {}; PingOne keeps 14 days of activities online",
                activities::stamp(mark.since)
            )));
        }
        let path = format!(
            "activities?filter={}&limit={ACTIVITIES_PAGE}",
            encode(&mark.filter())
        );
        let records = self
            .api
            .collect(&path, "activities")
            .await
            .map_err(|e| self.failure(e))?;
        let read = records.len();
        let (fresh, next) = mark.advance(records);
        let mut targets = Targets::default();
        let mut unknown = 0;
        for record in &fresh {
            if !targets.add(record) {
                unknown += 1;
            }
        }
        if unknown > 0 {
            tracing::warn!(unknown, "activities of an unknown shape were skipped");
        }
        if targets.len() > MAX_TARGETS {
            return Err(SourceError::CursorExpired(format!(
                "the activities name {} users and groups; a full pass reads them faster",
                targets.len()
            )));
        }
        tracing::debug!(
            read,
            fresh = fresh.len(),
            targets = targets.len(),
            "PingOne activities read"
        );
        let changes = self.resolve(targets).await?;
        Ok(ChangePage {
            changes,
            errors: Vec::new(),
            next: SourceCursor(json!({"v": CURSOR_VERSION, "activities": next})),
            more: false,
        })
    }

    async fn changes_start(&self) -> Result<Option<SourceCursor>, SourceError> {
        if !self.config.activities {
            return Ok(None);
        }
        let mark = Mark::starting(time::OffsetDateTime::now_utc());
        Ok(Some(SourceCursor(
            json!({"v": CURSOR_VERSION, "activities": mark}),
        )))
    }

    fn full_pass_every(&self) -> Option<Duration> {
        (self.config.full_sync_every_hours > 0)
            .then(|| Duration::from_secs(self.config.full_sync_every_hours * 3600))
    }

    async fn fetch_user(&self, id: &str) -> Result<Option<SourceUser>, SourceError> {
        self.read_user(id).await
    }

    async fn fetch_group(&self, id: &str) -> Result<Option<SourceGroup>, SourceError> {
        self.read_group(id).await
    }
}
