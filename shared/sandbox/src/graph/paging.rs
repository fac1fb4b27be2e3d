//! Lists of users and groups: `$filter`, `$top`, `$skiptoken` paging with `@odata.nextLink`,
//! `$count`.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::StatusCode;
use serde_json::{Map, Value, json};

use super::projection::{Entity, context_entity_set, select_list};
use super::request::{Query, RequestContext};
use crate::filter;
use crate::tenant::{Obj, TenantState};
use crate::wire::{GraphError, GraphResponse, GraphResult, METADATA};

pub(super) fn page_size(query: &Query) -> Result<usize, GraphError> {
    match query.get("$top") {
        None => Ok(100),
        Some(t) => match t.trim().parse::<i64>() {
            Ok(n) if (1..=999).contains(&n) => Ok(usize::try_from(n).unwrap_or(100)),
            _ => Err(GraphError::unsupported_query(format!(
                "Invalid page size specified: '{t}'. Must be between 1 and 999 inclusive."
            ))),
        },
    }
}

pub(super) fn skip_cursor(query: &Query) -> Result<u64, GraphError> {
    let Some(tok) = query.get("$skiptoken") else {
        return Ok(0);
    };
    URL_SAFE_NO_PAD
        .decode(tok)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .and_then(|s| s.strip_prefix("RFNwd:").and_then(|n| n.parse::<u64>().ok()))
        .ok_or_else(|| GraphError::bad_request("Invalid paging token."))
}

const QUERY_VALUE: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~')
    .remove(b'\'')
    .remove(b',')
    .remove(b'(')
    .remove(b')')
    .remove(b'/')
    .remove(b':');

pub(super) fn next_link(context: &RequestContext<'_>, last_seq: u64) -> String {
    let mut parts: Vec<String> = context
        .query
        .pairs
        .iter()
        .filter(|(k, _)| !k.eq_ignore_ascii_case("$skiptoken"))
        .map(|(k, v)| {
            format!(
                "{}={}",
                percent_encoding::utf8_percent_encode(k, QUERY_VALUE)
                    .to_string()
                    .replace("%24", "$"),
                percent_encoding::utf8_percent_encode(v, QUERY_VALUE)
            )
        })
        .collect();
    parts.push(format!(
        "$skiptoken={}",
        URL_SAFE_NO_PAD.encode(format!("RFNwd:{last_seq}"))
    ));
    format!(
        "{}/v1.0{}?{}",
        context.request.base_url,
        context.request.path,
        parts.join("&")
    )
}

/// Common checks of list queries: `$search`, `$filter`.
fn list_filter(
    context: &RequestContext<'_>,
    entity: Entity,
) -> Result<Option<filter::Expr>, GraphError> {
    if context.query.get("$search").is_some() {
        return Err(GraphError::unsupported_query(
            "Request with $search query parameter only works through MSGraph with a special request header: 'ConsistencyLevel: eventual'",
        ));
    }
    match context.query.get("$filter") {
        None => Ok(None),
        Some(f) => {
            let e = filter::parse(f)?;
            filter::check(entity.schema_name(), &e)?;
            Ok(Some(e))
        }
    }
}

/// A list's `$orderby`: the property sorted on and whether descending.
struct Order {
    property: &'static str,
    descending: bool,
}

/// `$orderby` as Graph takes it on users and groups without an advanced query: one of
/// `displayName` (users, groups) and `userPrincipalName` (users), `asc` or `desc`, and not
/// together with `$filter` (that needs `ConsistencyLevel: eventual`, which this tenant does not
/// serve for sorting) (<https://learn.microsoft.com/en-us/graph/aad-advanced-queries>).
fn order_by(
    context: &RequestContext<'_>,
    entity: Entity,
    filtered: bool,
) -> Result<Option<Order>, GraphError> {
    let Some(text) = context.query.get("$orderby") else {
        return Ok(None);
    };
    let unsupported = || GraphError::unsupported_query("Sorting not supported for current query.");
    if filtered {
        return Err(unsupported());
    }
    let mut words = text.split_whitespace();
    let property = match (entity, words.next()) {
        (_, Some(p)) if p.eq_ignore_ascii_case("displayName") => "displayName",
        (Entity::User, Some(p)) if p.eq_ignore_ascii_case("userPrincipalName") => {
            "userPrincipalName"
        }
        _ => return Err(unsupported()),
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

/// `GET /users` or `GET /groups`: live, replicated objects in creation order (or sorted by
/// `$orderby`), a page at a time.
pub(super) fn list(
    tenant: &TenantState,
    context: &RequestContext<'_>,
    entity: Entity,
) -> GraphResult {
    let expr = list_filter(context, entity)?;
    let order = order_by(context, entity, expr.is_some())?;
    let select = select_list(&context.query, entity)?;
    let top = page_size(&context.query)?;
    let after = skip_cursor(&context.query)?;
    let all = objects(tenant, entity);
    // A filter on id or UPN reads the index, not every object: the same answer (the candidates
    // still pass the filter below, in creation order), without a scan per request.
    let candidates = match (entity, &expr) {
        (Entity::User, Some(e)) => tenant.user_candidates(e),
        _ => None,
    };
    let scanned: Box<dyn Iterator<Item = &Obj>> = match &candidates {
        Some(positions) => Box::new(positions.iter().filter_map(|&i| all.get(i))),
        None => Box::new(all.iter()),
    };
    let mut matching: Vec<&Obj> = scanned
        .filter(|o| !o.deleted && o.visible(context.now))
        .filter(|o| expr.as_ref().is_none_or(|e| filter::eval(e, &o.props)))
        .collect();
    let total = matching.len();
    // The page, and the cursor of the next: the last object's sequence number in creation
    // order, the position reached in a sorted list (the token is opaque to callers).
    let (page, next): (Vec<&Obj>, Option<u64>) = match &order {
        None => {
            let rest: Vec<&Obj> = matching.into_iter().filter(|o| o.seq > after).collect();
            let page: Vec<&Obj> = rest.iter().take(top).copied().collect();
            let next = page.last().filter(|_| rest.len() > top).map(|o| o.seq);
            (page, next)
        }
        Some(order) => {
            let key = |o: &Obj| o.str_prop(order.property).unwrap_or("").to_lowercase();
            matching.sort_by(|a, b| key(a).cmp(&key(b)).then(a.seq.cmp(&b.seq)));
            if order.descending {
                matching.reverse();
            }
            let skip = usize::try_from(after).unwrap_or(usize::MAX);
            let page: Vec<&Obj> = matching.iter().skip(skip).take(top).copied().collect();
            let reached = skip.saturating_add(page.len());
            let next =
                (reached < matching.len()).then_some(u64::try_from(reached).unwrap_or(u64::MAX));
            (page, next)
        }
    };
    let value: Vec<Value> = page
        .iter()
        .map(|o| Value::Object(entity.project(o, select.as_deref())))
        .collect();
    let mut body = Map::new();
    body.insert(
        "@odata.context".into(),
        json!(format!(
            "{METADATA}#{}",
            context_entity_set(entity, select.as_deref())
        )),
    );
    let count_requested = context
        .query
        .get("$count")
        .is_some_and(|c| c.eq_ignore_ascii_case("true"));
    if count_requested && context.consistency_eventual() && after == 0 {
        body.insert("@odata.count".into(), json!(total));
    }
    if let Some(next) = next {
        body.insert("@odata.nextLink".into(), json!(next_link(context, next)));
    }
    body.insert("value".into(), Value::Array(value));
    Ok(GraphResponse::json(StatusCode::OK, Value::Object(body)))
}

/// `GET /users/$count` or `GET /groups/$count`: needs `ConsistencyLevel: eventual`.
pub(super) fn count(
    tenant: &TenantState,
    context: &RequestContext<'_>,
    entity: Entity,
) -> GraphResult {
    if !context.consistency_eventual() {
        return Err(GraphError::bad_request(
            "$count is not currently supported.",
        ));
    }
    let n = objects(tenant, entity)
        .iter()
        .filter(|o| !o.deleted && o.visible(context.now))
        .count();
    Ok(GraphResponse::json(StatusCode::OK, json!(n)))
}

fn objects(tenant: &TenantState, entity: Entity) -> &[Obj] {
    match entity {
        Entity::User => &tenant.users,
        Entity::Group => &tenant.groups,
    }
}
