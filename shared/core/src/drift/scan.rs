//! One run's look at the tenant: read its changes (or all of it), find the links they concern,
//! judge each ([`super::compare`]).

use std::collections::{HashMap, HashSet};

use super::compare::{self, Context};
use super::{Drift, DriftChange, DriftCheckpoint, DriftMode, DriftOverlay, DriftSettings};
use crate::directory::{ChangesRequest, Directory, ObservedObject, TenantChanges};
use crate::model::ObjectKind;
use crate::planner::{Focus, PlanError};
use crate::state::{Link, LinkPages, StateStore, UnixMillis};

/// Links read per page in a full reconciliation.
const LINK_PAGE: usize = 500;
/// A round reporting fewer objects than the links ÷ this is judged by looking each reported
/// object's link up, not by reading every link.
const LOOKUP_RATIO: u64 = 20;

/// What a run found.
#[derive(Debug, Default)]
pub struct DriftScan {
    pub mode: DriftMode,
    /// Every object read, not only the changed ones.
    pub full: bool,
    pub findings: Vec<Drift>,
    /// The corrections a repairing plan starts from (empty when only reporting).
    pub overlay: DriftOverlay,
    /// Source ids of the drifted objects: a pass over the source's changes plans them too.
    pub focus: Focus,
    /// Where the next run reads from, stored once this run's writes are recorded.
    pub next: DriftCheckpoint,
}

/// Reads the tenant's changes since `previous` (all of it when a full reconciliation is due or
/// there is no cursor) and judges them against the links. `None`: drift is off, or the tenant's
/// changes could not be read this time (logged; the next run tries again from the same
/// cursor). Only an authentication failure is an error: nothing else would work either.
pub async fn scan(
    settings: &DriftSettings,
    directory: &dyn Directory,
    state: &dyn StateStore,
    connection: &str,
    previous: Option<&DriftCheckpoint>,
    now: UnixMillis,
) -> Result<Option<DriftScan>, PlanError> {
    if settings.mode == DriftMode::Off {
        return Ok(None);
    }
    let selected = settings.selected();
    let previous = previous.filter(|p| p.selected == selected);
    let full_due = previous
        .and_then(|p| p.last_full_at)
        .is_none_or(|at| now.saturating_sub(at) >= settings.full_every_ms);
    let request = ChangesRequest {
        user_select: settings.user_select.clone(),
        group_select: settings.group_select.clone(),
        from: previous.filter(|_| !full_due).map(|p| p.cursor.clone()),
    };
    let changes = match directory.read_changes(request).await {
        Ok(changes) => changes,
        Err(error) if error.is_fatal() => return Err(error.into()),
        Err(error) => {
            tracing::warn!(connection, %error, "the tenant's changes could not be read; drift is not checked in this run");
            return Ok(None);
        }
    };
    if let Some(reason) = &changes.restarted {
        tracing::warn!(connection, %reason, "reading every user and group again");
    }
    let mut findings = judge_round(settings, state, connection, &changes).await?;
    findings.sort_by(|a, b| (a.kind, &a.name).cmp(&(b.kind, &b.name)));
    let mut focus = Focus::default();
    for drift in &findings {
        match drift.kind {
            ObjectKind::User => focus.users.insert(drift.source_id.clone()),
            ObjectKind::Group => focus.groups.insert(drift.source_id.clone()),
        };
    }
    let overlay = match settings.mode {
        DriftMode::Repair => DriftOverlay::new(&findings, now),
        DriftMode::Report | DriftMode::Off => DriftOverlay::default(),
    };
    Ok(Some(DriftScan {
        mode: settings.mode,
        full: changes.full,
        findings,
        overlay,
        focus,
        next: DriftCheckpoint {
            selected,
            cursor: changes.cursor,
            last_full_at: if changes.full {
                Some(now)
            } else {
                previous.and_then(|p| p.last_full_at)
            },
        },
    }))
}

/// Judges a round. Each reported object's link is looked up by its tenant id when the round
/// reported few objects against the links (a quiet change round, a full round of a tenant
/// mostly not this connection's); a round of many objects (a full one, or the one reading back
/// a first load's writes) reads the links page by page instead. Either way, what is held is
/// bounded by what the round reported.
async fn judge_round(
    settings: &DriftSettings,
    state: &dyn StateStore,
    connection: &str,
    changes: &TenantChanges,
) -> Result<Vec<Drift>, PlanError> {
    let reported = (changes.users.len() + changes.groups.len()) as u64;
    if reported == 0 {
        return Ok(Vec::new());
    }
    if reported.saturating_mul(LOOKUP_RATIO) < link_total(state, connection).await? {
        judge_by_lookup(settings, state, connection, changes).await
    } else {
        judge_by_pages(settings, state, connection, changes).await
    }
}

/// Live and deleted links of both kinds (what a page-by-page read goes through).
async fn link_total(state: &dyn StateStore, connection: &str) -> Result<u64, PlanError> {
    Ok(state.count_links(connection, ObjectKind::User).await?
        + state.count_links(connection, ObjectKind::Group).await?)
}

/// The tenant object ids a round's relationships name (managers, members).
fn named_users(changes: &TenantChanges) -> HashSet<&str> {
    changes
        .users
        .iter()
        .chain(&changes.groups)
        .flat_map(|o| o.links.keys())
        .map(String::as_str)
        .collect()
}

/// Each reported object's link, and each user its relationships name, looked up by tenant id.
async fn judge_by_lookup(
    settings: &DriftSettings,
    state: &dyn StateStore,
    connection: &str,
    changes: &TenantChanges,
) -> Result<Vec<Drift>, PlanError> {
    let mut linked_users: HashMap<String, Option<String>> = HashMap::new();
    for target in named_users(changes) {
        let link = state
            .find_link_by_object(connection, ObjectKind::User, target)
            .await?;
        linked_users.insert(target.to_owned(), live_source_id(link.as_ref()));
    }
    let resolve = |id: &str| linked_users.get(id).cloned().flatten();
    let context = context(settings, changes.full, &resolve);
    let mut findings = Vec::new();
    for (kind, observed) in changes
        .users
        .iter()
        .map(|o| (ObjectKind::User, o))
        .chain(changes.groups.iter().map(|o| (ObjectKind::Group, o)))
    {
        if let Some(link) = state
            .find_link_by_object(connection, kind, &observed.id)
            .await?
        {
            findings.extend(judge(&link, observed, &context));
        }
    }
    Ok(findings)
}

/// A round of many objects: the links read page by page, judged against the objects the round
/// reported; of the links not reported, only the source ids of users the round's relationships
/// name are kept.
async fn judge_by_pages(
    settings: &DriftSettings,
    state: &dyn StateStore,
    connection: &str,
    changes: &TenantChanges,
) -> Result<Vec<Drift>, PlanError> {
    let users: HashMap<&str, &ObservedObject> =
        changes.users.iter().map(|o| (o.id.as_str(), o)).collect();
    let groups: HashMap<&str, &ObservedObject> =
        changes.groups.iter().map(|o| (o.id.as_str(), o)).collect();
    let named = named_users(changes);
    let mut user_links: Vec<Link> = Vec::new();
    let mut source_ids: HashMap<String, String> = HashMap::new();
    let mut pages = LinkPages::new(state, connection, ObjectKind::User, LINK_PAGE);
    while let Some(page) = pages.next_page().await? {
        for link in page {
            if !link.is_deleted() && named.contains(link.object_id.as_str()) {
                source_ids.insert(link.object_id.clone(), link.source_id.clone());
            }
            if users.contains_key(link.object_id.as_str()) {
                user_links.push(link);
            }
        }
    }
    let resolve = |id: &str| source_ids.get(id).cloned();
    let context = context(settings, changes.full, &resolve);
    let mut findings = Vec::new();
    for link in &user_links {
        if let Some(observed) = users.get(link.object_id.as_str()) {
            findings.extend(judge(link, observed, &context));
        }
    }
    if !settings.group_select.is_empty() {
        let mut pages = LinkPages::new(state, connection, ObjectKind::Group, LINK_PAGE);
        while let Some(page) = pages.next_page().await? {
            for link in page {
                if let Some(observed) = groups.get(link.object_id.as_str()) {
                    findings.extend(judge(&link, observed, &context));
                }
            }
        }
    }
    Ok(findings)
}

fn context<'a>(
    settings: &DriftSettings,
    full: bool,
    resolve: &'a (dyn Fn(&str) -> Option<String> + Sync),
) -> Context<'a> {
    let selects = |name: &str| settings.user_select.iter().any(|s| s == name);
    Context {
        full,
        repair: settings.mode == DriftMode::Repair,
        licenses: selects("assignedLicenses"),
        manager: selects("manager"),
        linked_user: resolve,
    }
}

/// The source id of a live link.
fn live_source_id(link: Option<&Link>) -> Option<String> {
    link.filter(|l| !l.is_deleted())
        .map(|l| l.source_id.clone())
}

/// The drift of one linked object.
fn judge(link: &Link, observed: &ObservedObject, context: &Context<'_>) -> Vec<Drift> {
    let repair = context.repair;
    let changes: Vec<DriftChange> = match link.kind {
        ObjectKind::User => compare::user_changes(link, observed, context),
        ObjectKind::Group => compare::group_changes(link, observed, context),
    };
    changes
        .into_iter()
        .map(|change| Drift {
            kind: link.kind,
            source_id: link.source_id.clone(),
            object_id: link.object_id.clone(),
            name: link_name(link),
            repair: repair && change.repairable(),
            change,
        })
        .collect()
}

/// A user's UPN or a group's displayName as last applied (its object id when none was).
fn link_name(link: &Link) -> String {
    let property = match link.kind {
        ObjectKind::User => "userPrincipalName",
        ObjectKind::Group => "displayName",
    };
    link.applied
        .get(property)
        .and_then(serde_json::Value::as_str)
        .unwrap_or(&link.object_id)
        .to_owned()
}
