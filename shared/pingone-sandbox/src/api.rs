//! The `/v1/environments/{envId}/...` reads: users, a user's groups, groups, a group's parents,
//! populations, audit activities.
//!
//! Collections page as PingOne does
//! (<https://developer.pingidentity.com/pingone-api/platform/reference/paging-ordering-filtering-collections.html>):
//! `limit` (1–1000, else 400) asks for a page size that is capped per resource (200 for users);
//! without `limit` a page is as large as the cap allows, except for activities (see
//! [`ACTIVITIES_DEFAULT_LIMIT`]). `size` is the number of items in the page, `count` the total,
//! and `_links.next` — present only when more items follow — is an absolute URL carrying an
//! opaque URL-safe `cursor` (with the request's other parameters: `limit`, `filter`, `expand`)
//! that a client follows verbatim.

use axum::http::HeaderMap;
use axum::response::Response;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};

use crate::Inner;
use crate::filter::{self, Grammar};
use crate::store::Store;
use crate::wire::{CorrelationId, P1Error, hal};

/// The largest `limit` accepted.
const MAX_LIMIT: usize = 1000;
/// The largest page `/users` answers, whatever the `limit`.
pub(crate) const USERS_PAGE_CAP: usize = 200;
/// The largest page `/groups` and `/populations` answer.
pub(crate) const GROUPS_PAGE_CAP: usize = 1000;
/// The largest page `/activities` answers: the `limit` range of the paging conventions; neither
/// the Audit Activities page nor the SDK's OpenAPI states another cap.
pub(crate) const ACTIVITIES_PAGE_CAP: usize = 1000;
/// A page of `/activities` without `limit`. Neither the Audit Activities page nor the SDK's
/// OpenAPI states a default; 100 is the stand-in's choice, so that a client relying on the
/// default still sees paging.
pub(crate) const ACTIVITIES_DEFAULT_LIMIT: usize = 100;

/// A request's query: `limit`, `filter`, `cursor`, and the `include` / `expand` lists.
#[derive(Debug, Default)]
pub(crate) struct ListQuery {
    limit: Option<usize>,
    filter: Option<String>,
    /// The sequence number of the last item of the previous page.
    after: Option<u64>,
    include: Vec<String>,
    expand: Vec<String>,
}

impl ListQuery {
    pub fn parse(query: Option<&str>) -> Result<Self, P1Error> {
        let mut q = Self::default();
        for (k, v) in url::form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
            match k.as_ref() {
                "limit" => match v.parse::<usize>() {
                    Ok(n) if (1..=MAX_LIMIT).contains(&n) => q.limit = Some(n),
                    _ => {
                        return Err(P1Error::invalid_data(
                            "INVALID_VALUE",
                            "limit",
                            &format!("limit must be a whole number from 1 to {MAX_LIMIT}"),
                        ));
                    }
                },
                "filter" => q.filter = Some(v.into_owned()),
                "cursor" => q.after = Some(decode_cursor(&v)?),
                "include" => q.include.extend(v.split(',').map(|s| s.trim().to_owned())),
                "expand" => q.expand.extend(v.split(',').map(|s| s.trim().to_owned())),
                _ => {}
            }
        }
        Ok(q)
    }

    /// The parsed filter, or 400 `INVALID_FILTER`.
    pub fn filter(&self, grammar: &Grammar) -> Result<Option<filter::Expr>, P1Error> {
        self.filter
            .as_deref()
            .map(|f| filter::parse(f, grammar))
            .transpose()
            .map_err(|e| P1Error::invalid_data("INVALID_FILTER", "filter", &e.0))
    }
}

fn encode_cursor(after: u64) -> String {
    URL_SAFE_NO_PAD.encode(format!("after:{after}"))
}

fn decode_cursor(cursor: &str) -> Result<u64, P1Error> {
    URL_SAFE_NO_PAD
        .decode(cursor)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .and_then(|s| s.strip_prefix("after:").and_then(|n| n.parse().ok()))
        .ok_or_else(|| P1Error::invalid_data("INVALID_VALUE", "cursor", "the cursor is not valid"))
}

/// What a collection handler hands to [`page`].
pub(crate) struct Listing<'a> {
    pub base: &'a str,
    pub path: &'a str,
    pub raw_query: Option<&'a str>,
    pub embedded: &'static str,
    pub cap: usize,
    /// The page size without `limit`.
    pub default: usize,
}

/// One page of `items` (sequence number and JSON, in order, already filtered).
pub(crate) fn page(listing: &Listing<'_>, q: &ListQuery, items: Vec<(u64, Value)>) -> Response {
    let count = items.len();
    let size = q.limit.unwrap_or(listing.default).min(listing.cap);
    let rest: Vec<(u64, Value)> = items
        .into_iter()
        .filter(|(seq, _)| q.after.is_none_or(|after| *seq > after))
        .collect();
    let more = rest.len() > size;
    let page: Vec<(u64, Value)> = rest.into_iter().take(size).collect();
    let href = |query: Option<&str>| match query {
        Some(query) if !query.is_empty() => format!("{}{}?{query}", listing.base, listing.path),
        _ => format!("{}{}", listing.base, listing.path),
    };
    let mut links = json!({"self": {"href": href(listing.raw_query)}});
    if let (true, Some((last, _))) = (more, page.last()) {
        let mut next = url::form_urlencoded::Serializer::new(String::new());
        let raw = listing.raw_query.unwrap_or("").as_bytes();
        for (k, v) in url::form_urlencoded::parse(raw).filter(|(k, _)| k != "cursor") {
            next.append_pair(&k, &v);
        }
        next.append_pair("cursor", &encode_cursor(*last));
        links["next"] = json!({"href": href(Some(&next.finish()))});
    }
    let size = page.len();
    let items: Vec<Value> = page.into_iter().map(|(_, v)| v).collect();
    hal(&json!({
        "_links": links,
        "_embedded": {listing.embedded: items},
        "size": size,
        "count": count,
    }))
}

/// `GET /users`: every user the filter matches, in creation order.
pub(crate) fn list_users(store: &Store, q: &ListQuery) -> Result<Vec<(u64, Value)>, P1Error> {
    let expr = q.filter(&filter::USERS)?;
    Ok(store
        .users
        .iter()
        .filter_map(|u| {
            let json = store.user_json(u);
            let keep = expr.as_ref().is_none_or(|e| {
                e.matches(&json, &|g, direct| store.user_in_group(u, &json, g, direct))
            });
            keep.then_some((u.seq, json))
        })
        .collect())
}

/// `GET /groups`.
pub(crate) fn list_groups(store: &Store, q: &ListQuery) -> Result<Vec<(u64, Value)>, P1Error> {
    let expr = q.filter(&filter::GROUPS)?;
    Ok(store
        .groups
        .iter()
        .filter_map(|g| {
            let json = store.group_json(g);
            let keep = expr.as_ref().is_none_or(|e| {
                e.matches(&json, &|p, direct| {
                    store.group_in_group(&g.data.id, p, direct)
                })
            });
            keep.then_some((g.seq, json))
        })
        .collect())
}

/// `GET /populations`, in seed order.
pub(crate) fn list_populations(store: &Store) -> Vec<(u64, Value)> {
    store
        .populations
        .iter()
        .zip(1u64..)
        .map(|(p, seq)| {
            (
                seq,
                json!({"id": p.id, "environment": {"id": store.environment_id}, "name": p.name}),
            )
        })
        .collect()
}

/// `GET /groups/{id}/memberOfGroups`: the groups this one is nested in directly.
pub(crate) fn group_parents(store: &Store, id: &str) -> Option<Vec<(u64, Value)>> {
    store.group(id)?;
    Some(
        store
            .parents(id)
            .into_iter()
            .map(|p| {
                (
                    p.seq,
                    json!({"id": p.data.id, "name": p.data.name, "type": "DIRECT"}),
                )
            })
            .collect(),
    )
}

/// The scheme and host the client addressed (links point back to the same server).
pub(crate) fn base_url(headers: &HeaderMap) -> String {
    let host = headers
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("127.0.0.1");
    format!("http://{host}")
}

/// Answers a `/v1` GET after the gate (throttling, token) let it through.
pub(crate) fn route(
    inner: &Inner,
    path: &str,
    query: Option<&str>,
    base: &str,
    cid: &CorrelationId,
) -> Response {
    match answer(inner, path, query, base) {
        Ok(r) => r,
        Err(e) => e.response(cid),
    }
}

/// Whether `path` is under `/v1/environments/{envId}/activities`.
pub(crate) fn is_activities(path: &str) -> bool {
    let mut segments = path.trim_start_matches('/').split('/');
    matches!(
        (
            segments.next(),
            segments.next(),
            segments.next(),
            segments.next()
        ),
        (
            Some("v1"),
            Some("environments"),
            Some(_),
            Some("activities")
        )
    )
}

fn answer(inner: &Inner, path: &str, query: Option<&str>, base: &str) -> Result<Response, P1Error> {
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    // ["v1", "environments", env, collection, id?, sub?]
    let (collection, rest) = match segments.as_slice() {
        ["v1", "environments", _, collection, rest @ ..] => (*collection, rest),
        _ => return Err(P1Error::not_found()),
    };
    let store = inner.lock_store();
    let q = ListQuery::parse(query)?;
    let listing = |embedded, cap, default| Listing {
        base,
        path,
        raw_query: query,
        embedded,
        cap,
        default,
    };
    match (collection, rest) {
        ("users", []) => Ok(page(
            &listing("users", USERS_PAGE_CAP, USERS_PAGE_CAP),
            &q,
            list_users(&store, &q)?,
        )),
        ("users", [id]) => read_user(&store, id, &q).map(|u| hal(&u)),
        ("users", [id, "memberOfGroups"]) => Ok(page(
            &listing("groupMemberships", GROUPS_PAGE_CAP, GROUPS_PAGE_CAP),
            &q,
            user_memberships(&store, id, &q)?,
        )),
        ("groups", []) => Ok(page(
            &listing("groups", GROUPS_PAGE_CAP, GROUPS_PAGE_CAP),
            &q,
            list_groups(&store, &q)?,
        )),
        ("groups", [id]) => store
            .group(id)
            .map(|g| hal(&store.group_json(g)))
            .ok_or_else(P1Error::not_found),
        ("groups", [id, "memberOfGroups"]) => {
            let parents = group_parents(&store, id).ok_or_else(P1Error::not_found)?;
            Ok(page(
                &listing("groupMemberships", GROUPS_PAGE_CAP, GROUPS_PAGE_CAP),
                &q,
                parents,
            ))
        }
        ("populations", []) => Ok(page(
            &listing("populations", GROUPS_PAGE_CAP, GROUPS_PAGE_CAP),
            &q,
            list_populations(&store),
        )),
        ("populations", [id]) => list_populations(&store)
            .into_iter()
            .find(|(_, p)| p["id"] == *id)
            .map(|(_, p)| hal(&p))
            .ok_or_else(P1Error::not_found),
        ("activities", []) => Ok(page(
            &listing("activities", ACTIVITIES_PAGE_CAP, ACTIVITIES_DEFAULT_LIMIT),
            &q,
            list_activities(&store, &q, base)?,
        )),
        ("activities", [id]) => store
            .audit
            .records()
            .iter()
            .find(|r| r["id"] == *id)
            .map(|r| hal(&with_self_link(r, base, &store.environment_id)))
            .ok_or_else(P1Error::not_found),
        _ => Err(P1Error::not_found()),
    }
}

/// `GET /users/{id}`, with `memberOfGroupIDs` / `memberOfGroupNames` when `include` asks for
/// them: every group the user is a member of, directly, through a dynamic group's filter or
/// through nesting (the `User` schema of the SDK's OpenAPI; it does not say whether groups
/// reached through nesting count, the stand-in counts them).
fn read_user(store: &Store, id: &str, q: &ListQuery) -> Result<Value, P1Error> {
    let user = store.user(id).ok_or_else(P1Error::not_found)?;
    let mut json = store.user_json(user);
    let groups = store.user_groups(user);
    for (include, key) in [("memberOfGroupIDs", "id"), ("memberOfGroupNames", "name")] {
        if q.include.iter().any(|i| i == include) {
            let values: Vec<&str> = groups
                .iter()
                .map(|(g, _)| {
                    if key == "id" {
                        g.data.id.as_str()
                    } else {
                        g.data.name.as_str()
                    }
                })
                .collect();
            json[include] = json!(values);
        }
    }
    Ok(json)
}

/// `GET /users/{id}/memberOfGroups`: the user's groups as `GroupMembership` entries (SDK OpenAPI
/// schema `GroupMembership`: `{id, name, type, environment}`, `type` from
/// `EnumGroupMembershipType`), `DIRECT` for a static membership or a dynamic group's filter,
/// `INDIRECT` through nesting; `_embedded.group` with `expand=group`.
fn user_memberships(store: &Store, id: &str, q: &ListQuery) -> Result<Vec<(u64, Value)>, P1Error> {
    let user = store.user(id).ok_or_else(P1Error::not_found)?;
    let expr = q.filter(&filter::MEMBERSHIPS)?;
    let expand = q.expand.iter().any(|e| e == "group");
    let no_groups = |_: &str, _: bool| false;
    Ok(store
        .user_groups(user)
        .into_iter()
        .filter_map(|(g, direct)| {
            let mut entry = json!({
                "id": g.data.id,
                "name": g.data.name,
                "type": if direct { "DIRECT" } else { "INDIRECT" },
                "environment": {"id": store.environment_id},
            });
            if expr
                .as_ref()
                .is_some_and(|e| !e.matches(&entry, &no_groups))
            {
                return None;
            }
            if expand {
                entry["_embedded"] = json!({"group": store.group_json(g)});
            }
            Some((g.seq, entry))
        })
        .collect())
}

/// `GET /activities`: the records the filter matches, oldest first. PingOne's Audit Activities
/// API asks for a filter giving the time range
/// (<https://apidocs.pingidentity.com/pingone/customer/v1/api/guide/p1_auditActivities/>): a
/// request without a `recordedat` bound (`gt`, `ge`, `lt` or `le`) is refused with
/// `INVALID_FILTER`. Records carry `_links.self` (`.../activities/{id}`).
fn list_activities(store: &Store, q: &ListQuery, base: &str) -> Result<Vec<(u64, Value)>, P1Error> {
    let expr = q.filter(&filter::ACTIVITIES)?;
    let bounded = expr.as_ref().is_some_and(|e| e.bounds("recordedat"));
    if !bounded {
        return Err(P1Error::invalid_data(
            "INVALID_FILTER",
            "filter",
            "the filter must bound recordedat with gt, ge, lt or le (e.g. recordedat gt \"2026-01-31T09:30:00.000Z\")",
        ));
    }
    let no_groups = |_: &str, _: bool| false;
    Ok(store
        .audit
        .records()
        .iter()
        .zip(1u64..)
        .filter(|(r, _)| expr.as_ref().is_none_or(|e| e.matches(r, &no_groups)))
        .map(|(r, seq)| (seq, with_self_link(r, base, &store.environment_id)))
        .collect())
}

/// A record as the Audit Activities API answers it: with `_links.self`.
fn with_self_link(record: &Value, base: &str, env: &str) -> Value {
    let mut r = record.clone();
    let id = record["id"].as_str().unwrap_or_default();
    r["_links"] =
        json!({"self": {"href": format!("{base}/v1/environments/{env}/activities/{id}")}});
    r
}
