//! The `/v1/environments/{envId}/...` reads: users, groups, a group's parents, populations.
//!
//! Collections page as PingOne does
//! (<https://developer.pingidentity.com/pingone-api/platform/reference/paging-ordering-filtering-collections.html>):
//! `limit` (1–1000, else 400) asks for a page size that is capped per resource (200 for users);
//! without `limit` a page is as large as the cap allows. `size` is the number of items in the
//! page, `count` the total, and `_links.next` — present only when more items follow — is an
//! absolute URL carrying an opaque URL-safe `cursor` (with the same `limit` and `filter`) that a
//! client follows verbatim.

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

/// A collection request's query: `limit`, `filter`, `cursor`.
#[derive(Debug, Default)]
pub(crate) struct ListQuery {
    limit: Option<usize>,
    filter: Option<String>,
    /// The sequence number of the last item of the previous page.
    after: Option<u64>,
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
}

/// One page of `items` (sequence number and JSON, in order, already filtered).
pub(crate) fn page(listing: &Listing<'_>, q: &ListQuery, items: Vec<(u64, Value)>) -> Response {
    let count = items.len();
    let size = q.limit.unwrap_or(listing.cap).min(listing.cap);
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
        if let Some(limit) = q.limit {
            next.append_pair("limit", &limit.to_string());
        }
        if let Some(f) = &q.filter {
            next.append_pair("filter", f);
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

fn answer(inner: &Inner, path: &str, query: Option<&str>, base: &str) -> Result<Response, P1Error> {
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    // ["v1", "environments", env, collection, id?, sub?]
    let (collection, rest) = match segments.as_slice() {
        ["v1", "environments", _, collection, rest @ ..] => (*collection, rest),
        _ => return Err(P1Error::not_found()),
    };
    let store = inner.lock_store();
    let q = ListQuery::parse(query)?;
    let listing = |embedded, cap| Listing {
        base,
        path,
        raw_query: query,
        embedded,
        cap,
    };
    match (collection, rest) {
        ("users", []) => Ok(page(
            &listing("users", USERS_PAGE_CAP),
            &q,
            list_users(&store, &q)?,
        )),
        ("users", [id]) => store
            .user(id)
            .map(|u| hal(&store.user_json(u)))
            .ok_or_else(P1Error::not_found),
        ("groups", []) => Ok(page(
            &listing("groups", GROUPS_PAGE_CAP),
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
                &listing("groupMemberships", GROUPS_PAGE_CAP),
                &q,
                parents,
            ))
        }
        ("populations", []) => Ok(page(
            &listing("populations", GROUPS_PAGE_CAP),
            &q,
            list_populations(&store),
        )),
        ("populations", [id]) => list_populations(&store)
            .into_iter()
            .find(|(_, p)| p["id"] == *id)
            .map(|(_, p)| hal(&p))
            .ok_or_else(P1Error::not_found),
        _ => Err(P1Error::not_found()),
    }
}
