//! One object as the state store knows it: its link, its error and its history, found by
//! source id, tenant object id, userPrincipalName or group displayName (`status --object`,
//! `sync --user`; docs/operations.md#an-objects-history).

use serde::{Deserialize, Serialize};

use crate::model::ObjectKind;
use crate::planner::Focus;
use crate::state::{HistoryEntry, Link, ObjectError, StateResult, StateStore, UnixMillis};

/// Links read per page while looking for a UPN or displayName.
const PAGE: usize = 1_000;

/// What the store holds about one object.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ObjectReport {
    pub kind: ObjectKind,
    pub source_id: String,
    pub link: Option<Link>,
    pub error: Option<ObjectError>,
    /// Newest first.
    pub history: Vec<HistoryEntry>,
}

impl ObjectReport {
    /// The UPN or displayName the object is known by: as last applied, else as last recorded.
    pub fn name(&self) -> Option<&str> {
        let applied = self.link.as_ref().and_then(|link| {
            let key = match link.kind {
                ObjectKind::User => "userPrincipalName",
                ObjectKind::Group => "displayName",
            };
            link.applied.get(key).and_then(serde_json::Value::as_str)
        });
        applied.or_else(|| self.history.first().map(|entry| entry.name.as_str()))
    }
}

/// The objects `key` names: a source id (a user and a group may share one), a tenant object id,
/// a userPrincipalName or a group's displayName (case-insensitive), or the source id of an
/// object that was never linked but has an error or a history.
pub async fn find_objects(
    state: &dyn StateStore,
    connection: &str,
    key: &str,
    now: UnixMillis,
) -> StateResult<Vec<(ObjectKind, String)>> {
    let kinds = [ObjectKind::User, ObjectKind::Group];
    let mut found = Vec::new();
    let ids = [key.to_owned()];
    for kind in kinds {
        if !state.get_links(connection, kind, &ids).await?.is_empty()
            || !state.get_errors(connection, kind, &ids).await?.is_empty()
            || !state
                .object_history(connection, kind, key, now, 1)
                .await?
                .is_empty()
        {
            found.push((kind, key.to_owned()));
        }
    }
    if !found.is_empty() {
        return Ok(found);
    }
    for kind in kinds {
        if let Some(link) = state.find_link_by_object(connection, kind, key).await? {
            found.push((kind, link.source_id));
        }
    }
    if !found.is_empty() {
        return Ok(found);
    }
    for kind in kinds {
        found.extend(links_named(state, connection, kind, key).await?);
    }
    Ok(found)
}

/// Source ids of the links whose applied UPN (users) or displayName (groups) is `name`.
async fn links_named(
    state: &dyn StateStore,
    connection: &str,
    kind: ObjectKind,
    name: &str,
) -> StateResult<Vec<(ObjectKind, String)>> {
    let property = match kind {
        ObjectKind::User => "userPrincipalName",
        ObjectKind::Group => "displayName",
    };
    let mut found = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = state
            .list_links(connection, kind, after.as_deref(), PAGE)
            .await?;
        for link in &page {
            let applied = link
                .applied
                .get(property)
                .and_then(serde_json::Value::as_str);
            if applied.is_some_and(|value| value.eq_ignore_ascii_case(name)) {
                found.push((kind, link.source_id.clone()));
            }
        }
        match page.last() {
            Some(last) if page.len() == PAGE => after = Some(last.source_id.clone()),
            _ => return Ok(found),
        }
    }
}

/// The link, error and latest `limit` history entries of one object.
pub async fn object_report(
    state: &dyn StateStore,
    connection: &str,
    kind: ObjectKind,
    source_id: &str,
    now: UnixMillis,
    limit: usize,
) -> StateResult<ObjectReport> {
    let ids = [source_id.to_owned()];
    Ok(ObjectReport {
        kind,
        source_id: source_id.to_owned(),
        link: state.get_links(connection, kind, &ids).await?.pop(),
        error: state.get_errors(connection, kind, &ids).await?.pop(),
        history: state
            .object_history(connection, kind, source_id, now, limit)
            .await?,
    })
}

/// The identities an operator names for provision on demand (`sync --user`, `cloud sync`, the
/// scheduled function's `users`/`groups`), by source id: a UPN, displayName or object id of a
/// linked object is resolved through the state; anything else is taken as a source id. `None`
/// when none is named: a whole sync.
pub async fn resolve_focus(
    state: &dyn StateStore,
    connection: &str,
    users: &[String],
    groups: &[String],
    now: UnixMillis,
) -> StateResult<Option<Focus>> {
    if users.is_empty() && groups.is_empty() {
        return Ok(None);
    }
    let mut focus = Focus::default();
    for (kind, keys) in [(ObjectKind::User, users), (ObjectKind::Group, groups)] {
        for key in keys {
            let found: Vec<String> = find_objects(state, connection, key, now)
                .await?
                .into_iter()
                .filter(|(k, _)| *k == kind)
                .map(|(_, id)| id)
                .collect();
            let set = match kind {
                ObjectKind::User => &mut focus.users,
                ObjectKind::Group => &mut focus.groups,
            };
            if found.is_empty() {
                set.insert(key.clone());
            } else {
                set.extend(found);
            }
        }
    }
    Ok(Some(focus))
}

/// What run `run_id` did to each identity of `focus`: each object with its history entries of
/// that run alone (newest first).
pub async fn run_traces(
    state: &dyn StateStore,
    connection: &str,
    focus: &Focus,
    run_id: &str,
    now: UnixMillis,
) -> StateResult<Vec<ObjectReport>> {
    let named = focus
        .users
        .iter()
        .map(|id| (ObjectKind::User, id))
        .chain(focus.groups.iter().map(|id| (ObjectKind::Group, id)));
    let mut reports = Vec::new();
    for (kind, id) in named {
        let mut report = object_report(state, connection, kind, id, now, 200).await?;
        report.history.retain(|entry| entry.run_id == run_id);
        reports.push(report);
    }
    Ok(reports)
}
