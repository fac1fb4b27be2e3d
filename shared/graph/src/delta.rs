//! Delta queries on users and groups: one round read page by page to its `@odata.deltaLink`,
//! the objects it reports merged by id, and Graph's "start over" answers recognised as such
//! (docs/graph-behaviour.md#delta-queries, <https://learn.microsoft.com/graph/delta-query-overview>).
//!
//! A round's first request carries the options (`$select`); every later page is the
//! `@odata.nextLink` Graph gave, used verbatim, and the next round is the stored deltaLink, used
//! verbatim too. Pages go through the client's own request path, so throttling (`Retry-After`),
//! transient retries, pacing and counters apply to them as to any request; the client sends its
//! headers again on every page.

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use reqwest::Method;
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::client::{Call, GraphClient};
use crate::error::{ErrorContext, GraphError};
use crate::odata::Query;

/// A collection delta queries can track.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DeltaCollection {
    /// `/users/delta`; the tracked relationship is `manager`.
    Users,
    /// `/groups/delta`; the tracked relationship is `members`.
    Groups,
}

impl DeltaCollection {
    /// The collection's name in Graph (`users`, `groups`).
    pub fn name(self) -> &'static str {
        match self {
            DeltaCollection::Users => "users",
            DeltaCollection::Groups => "groups",
        }
    }

    /// The relationship whose `<name>@delta` array a round reads into [`DeltaObject::links`]:
    /// a user's `manager`, a group's `members`
    /// (<https://learn.microsoft.com/graph/api/user-delta>,
    /// <https://learn.microsoft.com/graph/api/group-delta>).
    pub fn relation(self) -> &'static str {
        match self {
            DeltaCollection::Users => "manager",
            DeltaCollection::Groups => "members",
        }
    }

    fn path(self) -> &'static str {
        match self {
            DeltaCollection::Users => "/users/delta",
            DeltaCollection::Groups => "/groups/delta",
        }
    }
}

/// Graph's `@removed.reason`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeltaRemoval {
    /// `changed`: deleted, restorable from the deleted items.
    Changed,
    /// `deleted`: gone for good. Any reason other than `changed` is read this way: the object is
    /// not in the tenant either way.
    Deleted,
}

/// One object of a round, its reports merged: properties and links of later reports win (per
/// property, per link target); a removal wins over what came before it and clears the object's
/// properties and links (they describe an object no longer there), and a later report of the
/// object as present clears the removal.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DeltaObject {
    pub id: String,
    pub removed: Option<DeltaRemoval>,
    /// The properties Graph returned (annotations and `id` left out), by name.
    pub properties: BTreeMap<String, Value>,
    /// The tracked relationship ([`DeltaCollection::relation`]): target id → linked (`true`) or
    /// unlinked (`false`, an entry with `@removed`).
    pub links: BTreeMap<String, bool>,
}

/// Why Graph no longer takes a delta link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeltaResetKind {
    /// `syncStateNotFound`: the token expired (7 days for directory objects).
    Expired,
    /// `resyncRequired`: the token is not valid (any more).
    Invalid,
    /// `410 Gone`: Graph reset its sync state (tenant maintenance or migration).
    Gone,
    /// The stored link is not on the configured Graph host (the setting changed since); it is
    /// never followed, so the bearer token stays on that host.
    OtherHost,
}

/// A delta link Graph refused in a way that means "start a new round"
/// (<https://learn.microsoft.com/graph/delta-query-overview>, "Synchronization reset";
/// <https://learn.microsoft.com/graph/errors>: `syncStateNotFound`, `resyncRequired`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeltaReset {
    pub kind: DeltaResetKind,
    /// The HTTP status Graph answered, when it answered.
    pub status: Option<u16>,
    /// Graph's `error.code`, when it gave one.
    pub code: Option<String>,
}

impl DeltaReset {
    /// The reset an error stands for: 400 or 410 with the code `syncStateNotFound` or
    /// `resyncRequired` (either case: other Graph workloads spell it `SyncStateNotFound`), or any
    /// 410. Every other error is no reset.
    pub fn from_error(error: &GraphError) -> Option<DeltaReset> {
        let ctx = error.context()?;
        let status = ctx.status?;
        let code = ctx.code.as_deref().unwrap_or("");
        if !matches!(status, 400 | 410) {
            return None;
        }
        let kind = if code.eq_ignore_ascii_case("syncStateNotFound") {
            DeltaResetKind::Expired
        } else if status == 410 {
            DeltaResetKind::Gone
        } else if code.eq_ignore_ascii_case("resyncRequired") {
            DeltaResetKind::Invalid
        } else {
            return None;
        };
        Some(DeltaReset {
            kind,
            status: Some(status),
            code: ctx.code.clone().filter(|c| !c.is_empty()),
        })
    }

    fn other_host() -> DeltaReset {
        DeltaReset {
            kind: DeltaResetKind::OtherHost,
            status: None,
            code: None,
        }
    }
}

/// What happened to the token, for "the users delta token {reset}".
impl fmt::Display for DeltaReset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self.kind {
            DeltaResetKind::Expired => "expired",
            DeltaResetKind::Invalid => "is no longer valid",
            DeltaResetKind::Gone => "was reset by Graph",
            DeltaResetKind::OtherHost => "belongs to another Graph host than the configured one",
        })?;
        let mut details: Vec<String> = Vec::new();
        if self.status == Some(410) {
            details.push("410 Gone".into());
        }
        details.extend(self.code.clone());
        if !details.is_empty() {
            write!(f, " ({})", details.join(", "))?;
        }
        Ok(())
    }
}

/// A round read to its deltaLink.
#[derive(Debug, Clone, PartialEq)]
pub struct DeltaRound {
    /// Each object once, merged, in the order Graph first reported it.
    pub objects: Vec<DeltaObject>,
    /// Where the next round starts: the `@odata.deltaLink`, relative to the configured Graph
    /// version root (`/users/delta?$deltatoken=…`, its token opaque), so that it is only ever
    /// sent to the configured host, and still works when that host's address changes (an
    /// embedded sandbox on a new port).
    pub delta_link: String,
    /// A full round (every object as it is now): no link was given, or Graph refused it.
    pub full: bool,
    /// Why the link given was dropped for a full round.
    pub restarted: Option<DeltaReset>,
    /// Pages read in the round that answered (not counting a refused link).
    pub pages: u64,
}

/// One page as Graph sends it: exactly one of the links.
#[derive(Deserialize)]
struct DeltaPage {
    #[serde(default)]
    value: Vec<Map<String, Value>>,
    #[serde(rename = "@odata.nextLink", default)]
    next_link: Option<String>,
    #[serde(rename = "@odata.deltaLink", default)]
    delta_link: Option<String>,
}

impl GraphClient {
    /// Reads one delta round of `collection`: from `from_link` (a deltaLink a previous round
    /// gave, used verbatim) or, without one, a full round selecting `select` (options go only in
    /// a round's first request; the link carries them). A link Graph no longer takes (expired,
    /// invalid, reset; see [`DeltaReset`]) starts a full round instead, once: a second refusal in
    /// the same call is the error.
    pub async fn delta_round<S: AsRef<str>>(
        &self,
        collection: DeltaCollection,
        select: &[S],
        from_link: Option<&str>,
    ) -> Result<DeltaRound, GraphError> {
        let mut restarted: Option<DeltaReset> = None;
        let mut link = from_link;
        if link.is_some_and(|l| !l.starts_with('/') && !self.on_graph_host(l)) {
            restarted = Some(DeltaReset::other_host());
            link = None;
        }
        loop {
            let error = match self.read_delta(collection, select, link).await {
                Ok((merged, delta_link, pages)) => {
                    tracing::debug!(
                        collection = collection.name(),
                        pages,
                        objects = merged.objects.len(),
                        full = link.is_none(),
                        "delta round read"
                    );
                    return Ok(DeltaRound {
                        objects: merged.objects,
                        delta_link: self.relative_link(delta_link),
                        full: link.is_none(),
                        restarted,
                        pages,
                    });
                }
                Err(error) => error,
            };
            match DeltaReset::from_error(&error) {
                Some(reset) if restarted.is_none() => {
                    tracing::info!(
                        collection = collection.name(),
                        reason = %reset,
                        "Graph no longer takes the delta token; reading the whole collection again"
                    );
                    restarted = Some(reset);
                    link = None;
                }
                _ => return Err(error),
            }
        }
    }

    /// `link` relative to the configured version root when it is under it, else as given.
    fn relative_link(&self, link: String) -> String {
        let base = self.graph_base();
        match link.get(..base.len()) {
            Some(prefix) if prefix.eq_ignore_ascii_case(base) => link[base.len()..].to_owned(),
            _ => link,
        }
    }

    /// One round's pages, from `link` or from the first request: the merged objects, the
    /// deltaLink, the pages read.
    async fn read_delta<S: AsRef<str>>(
        &self,
        collection: DeltaCollection,
        select: &[S],
        link: Option<&str>,
    ) -> Result<(Merged, String, u64), GraphError> {
        let mut call = match link {
            Some(link) if link.starts_with('/') => self.call(Method::GET, link, None),
            Some(link) => self.call_absolute(link)?,
            None => {
                let query = Query::new().select(select).to_query_string();
                self.call(Method::GET, &format!("{}{query}", collection.path()), None)
            }
        };
        let mut merged = Merged::default();
        let mut pages = 0;
        loop {
            let page: DeltaPage = self.send_json(call.clone()).await?;
            pages += 1;
            for item in page.value {
                let report = report(item, collection.relation())
                    .ok_or_else(|| page_error(&call, "a delta item without an id"))?;
                merged.add(report);
            }
            // Graph never sends both links; were it to, the round is not over yet.
            match (page.next_link, page.delta_link) {
                (Some(next), _) => call = self.call_absolute(&next)?,
                (None, Some(delta_link)) => return Ok((merged, delta_link, pages)),
                (None, None) => {
                    return Err(page_error(
                        &call,
                        "a delta page carried neither @odata.nextLink nor @odata.deltaLink",
                    ));
                }
            }
        }
    }
}

fn page_error(call: &Call, detail: &str) -> GraphError {
    GraphError::decode(
        ErrorContext {
            method: call.method.to_string(),
            path: call.path.clone(),
            ..ErrorContext::default()
        },
        detail,
    )
}

/// One item of a page as a report on its object; `None` without an `id`.
fn report(mut item: Map<String, Value>, relation: &str) -> Option<DeltaObject> {
    let id = match item.remove("id") {
        Some(Value::String(id)) if !id.is_empty() => id,
        _ => return None,
    };
    let removed = item.get("@removed").map(|r| match r["reason"].as_str() {
        Some(reason) if reason.eq_ignore_ascii_case("changed") => DeltaRemoval::Changed,
        _ => DeltaRemoval::Deleted,
    });
    let mut links = BTreeMap::new();
    if let Some(Value::Array(entries)) = item.get(&format!("{relation}@delta")) {
        for entry in entries {
            if let Some(target) = entry["id"].as_str() {
                links.insert(target.to_owned(), entry.get("@removed").is_none());
            }
        }
    }
    // Annotations (`@removed`, `@odata.type`, `members@delta`, …) all hold an `@`; properties
    // never do.
    let properties = item.into_iter().filter(|(k, _)| !k.contains('@')).collect();
    Some(DeltaObject {
        id,
        removed,
        properties,
        links,
    })
}

/// A round's objects by id, in the order first reported.
#[derive(Debug, Default)]
struct Merged {
    objects: Vec<DeltaObject>,
    index: HashMap<String, usize>,
}

impl Merged {
    fn add(&mut self, report: DeltaObject) {
        let Some(&at) = self.index.get(&report.id) else {
            self.index.insert(report.id.clone(), self.objects.len());
            self.objects.push(report);
            return;
        };
        let Some(object) = self.objects.get_mut(at) else {
            return;
        };
        if report.removed.is_some() {
            object.removed = report.removed;
            object.properties.clear();
            object.links.clear();
        } else {
            object.removed = None;
            object.properties.extend(report.properties);
            object.links.extend(report.links);
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::error::classify;

    fn merged(items: Vec<Value>, relation: &str) -> Vec<DeltaObject> {
        let mut merged = Merged::default();
        for item in items {
            let Value::Object(item) = item else {
                panic!("not an object")
            };
            merged.add(report(item, relation).unwrap());
        }
        merged.objects
    }

    #[test]
    fn a_group_repeated_across_pages_is_one_object_with_every_member() {
        let objects = merged(
            vec![
                json!({"id": "g", "displayName": "G", "members@delta": [
                    {"@odata.type": "#microsoft.graph.user", "id": "u1"},
                    {"@odata.type": "#microsoft.graph.user", "id": "u2"}]}),
                json!({"id": "u-other", "@odata.type": "#microsoft.graph.group"}),
                json!({"id": "g", "displayName": "G2", "members@delta": [
                    {"@odata.type": "#microsoft.graph.user", "id": "u3"},
                    {"@odata.type": "#microsoft.graph.user", "id": "u1",
                     "@removed": {"reason": "deleted"}}]}),
            ],
            "members",
        );
        assert_eq!(objects.len(), 2);
        let g = &objects[0];
        assert_eq!(
            g.properties,
            BTreeMap::from([("displayName".into(), json!("G2"))])
        );
        assert_eq!(
            g.links,
            BTreeMap::from([
                ("u1".into(), false),
                ("u2".into(), true),
                ("u3".into(), true)
            ])
        );
        assert!(
            objects[1].properties.is_empty(),
            "annotations are no properties"
        );
    }

    #[test]
    fn the_last_removal_wins_until_the_object_shows_again() {
        let objects = merged(
            vec![
                json!({"id": "a", "department": "Sales", "manager@delta": [{"id": "m"}]}),
                json!({"id": "a", "@removed": {"reason": "changed"}}),
                json!({"id": "b", "@removed": {"reason": "changed"}}),
                json!({"id": "b", "@removed": {"reason": "deleted"}}),
                json!({"id": "c", "@removed": {"reason": "changed"}}),
                json!({"id": "c", "displayName": "C"}),
                json!({"id": "d", "@removed": {"reason": "someday"}}),
            ],
            "manager",
        );
        let removed: Vec<_> = objects.iter().map(|o| o.removed).collect();
        assert_eq!(
            removed,
            vec![
                Some(DeltaRemoval::Changed),
                Some(DeltaRemoval::Deleted),
                None,
                Some(DeltaRemoval::Deleted)
            ]
        );
        assert!(objects[0].properties.is_empty() && objects[0].links.is_empty());
        assert_eq!(objects[2].properties["displayName"], "C");
    }

    #[test]
    fn only_the_collections_relation_makes_links() {
        let objects = merged(
            vec![json!({"id": "g", "owners@delta": [{"id": "o"}], "members@delta": [{"id": "m"}]})],
            "members",
        );
        assert_eq!(objects[0].links, BTreeMap::from([("m".into(), true)]));
        let Value::Object(no_id) = json!({"displayName": "x"}) else {
            unreachable!()
        };
        assert!(report(no_id, "members").is_none());
    }

    fn error(status: u16, code: &str) -> GraphError {
        let body = json!({"error": {"code": code, "message": "m"}}).to_string();
        classify(ErrorContext::default(), status, body.as_bytes(), None)
    }

    #[test]
    fn resets_are_recognised_by_status_and_code_only() {
        let kind = |status, code| DeltaReset::from_error(&error(status, code)).map(|r| r.kind);
        assert_eq!(
            kind(400, "syncStateNotFound"),
            Some(DeltaResetKind::Expired)
        );
        assert_eq!(
            kind(410, "SyncStateNotFound"),
            Some(DeltaResetKind::Expired)
        );
        assert_eq!(kind(400, "resyncRequired"), Some(DeltaResetKind::Invalid));
        assert_eq!(kind(410, "resyncRequired"), Some(DeltaResetKind::Gone));
        assert_eq!(kind(410, ""), Some(DeltaResetKind::Gone));
        assert_eq!(kind(400, "Request_UnsupportedQuery"), None);
        assert_eq!(kind(404, "syncStateNotFound"), None);
        assert_eq!(kind(429, "resyncRequired"), None);

        let shown = |status, code| {
            DeltaReset::from_error(&error(status, code))
                .unwrap()
                .to_string()
        };
        assert_eq!(
            shown(400, "syncStateNotFound"),
            "expired (syncStateNotFound)"
        );
        assert_eq!(
            shown(410, "resyncRequired"),
            "was reset by Graph (410 Gone, resyncRequired)"
        );
    }
}
