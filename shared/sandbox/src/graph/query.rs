//! What a list or count asks for beyond paging: whether it is an advanced query, and its
//! `$search`, `$filter` and `$orderby` (docs/graph-behaviour.md#advanced-queries).

use super::request::RequestContext;
use crate::filter::{self, QueryMode};
use crate::search::{self, Search};
use crate::wire::GraphError;

/// `$count=true` (any case).
pub(super) fn count_requested(context: &RequestContext<'_>) -> bool {
    context
        .query
        .get("$count")
        .is_some_and(|c| c.eq_ignore_ascii_case("true"))
}

/// An advanced query sends `ConsistencyLevel: eventual` and `$count=true`, or `$search`, which
/// needs only the header (<https://learn.microsoft.com/graph/aad-advanced-queries>). "`$expand`
/// is not currently supported with advanced queries" (same page): a request that expands is
/// served from the default store, so what only the advanced index answers is refused as without
/// the advanced parameters (reported on the wire: an advanced-only `$filter` with
/// `$expand=manager`, `$count=true` and the header fails with the default store's
/// "Unsupported or invalid query filter clause" 400), and `$count=true` is ignored.
pub(super) fn mode(context: &RequestContext<'_>) -> QueryMode {
    let expands = context.query.get("$expand").is_some();
    let advanced = context.consistency_eventual()
        && !expands
        && (count_requested(context) || context.query.get("$search").is_some());
    if advanced {
        QueryMode::Advanced
    } else {
        QueryMode::Default
    }
}

/// The request's `$search`, checked for `entity` (`user`, `group`). Without
/// `ConsistencyLevel: eventual`, or together with `$expand`, Graph refuses it with the same 400
/// (both on the wire; the second reported for `$search` with `$expand=memberOf`, `$count=true`
/// and the header).
pub(super) fn search(
    context: &RequestContext<'_>,
    entity: &str,
) -> Result<Option<Search>, GraphError> {
    let Some(text) = context.query.get("$search") else {
        return Ok(None);
    };
    if !context.consistency_eventual() || context.query.get("$expand").is_some() {
        return Err(GraphError::unsupported_query(
            "Request with $search query parameter only works through MSGraph with a special request header: 'ConsistencyLevel: eventual'",
        ));
    }
    search::parse(entity, text).map(Some)
}

/// The request's `$filter`, checked for `entity` in `mode`.
pub(super) fn filter(
    context: &RequestContext<'_>,
    entity: &str,
    mode: QueryMode,
) -> Result<Option<filter::Expr>, GraphError> {
    match context.query.get("$filter") {
        None => Ok(None),
        Some(f) => {
            let e = filter::parse(f)?;
            filter::check(entity, &e, mode)?;
            Ok(Some(e))
        }
    }
}

/// The properties a list sorts on, by default and in advanced queries only.
pub(super) struct Sortable {
    pub default: &'static [&'static str],
    pub advanced: &'static [&'static str],
}

/// A list's `$orderby`: the property sorted on and whether descending.
pub(super) struct Order {
    pub property: &'static str,
    pub descending: bool,
}

/// `$orderby` as Graph takes it on directory objects: one property, `asc` or `desc`. By default
/// only `sortable.default` and never together with `$filter` or `$search`; an advanced query
/// also sorts a filtered list and on `sortable.advanced`
/// (<https://learn.microsoft.com/graph/aad-advanced-queries>, "Support for sorting by
/// properties").
pub(super) fn order_by(
    context: &RequestContext<'_>,
    sortable: &Sortable,
    narrowed: bool,
    mode: QueryMode,
) -> Result<Option<Order>, GraphError> {
    let Some(text) = context.query.get("$orderby") else {
        return Ok(None);
    };
    let unsupported = || GraphError::unsupported_query("Sorting not supported for current query.");
    let advanced = mode == QueryMode::Advanced;
    if narrowed && !advanced {
        return Err(unsupported());
    }
    let mut words = text.split_whitespace();
    let first = words.next().unwrap_or("");
    let allowed = sortable
        .default
        .iter()
        .chain(sortable.advanced.iter().filter(|_| advanced));
    let Some(property) = allowed.copied().find(|p| p.eq_ignore_ascii_case(first)) else {
        return Err(unsupported());
    };
    let descending = match words.next() {
        None => false,
        Some(d) if d.eq_ignore_ascii_case("asc") => false,
        Some(d) if d.eq_ignore_ascii_case("desc") => true,
        Some(_) => return Err(unsupported()),
    };
    if words.next().is_some() || text.contains(',') {
        return Err(unsupported());
    }
    Ok(Some(Order {
        property,
        descending,
    }))
}
