//! Lists of users and groups: `$filter`, `$search`, `$orderby`, `$expand`, `$top`, `$skiptoken`
//! paging with `@odata.nextLink`, `$count`.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::StatusCode;
use serde_json::{Map, Value, json};

use super::expand;
use super::projection::{Entity, context_entity_set, select_list};
use super::query::{self, Order, Sortable};
use super::request::{Query, RequestContext};
use crate::filter::{self, QueryMode};
use crate::search::{self, Search};
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

/// What users and groups sort on (<https://learn.microsoft.com/graph/aad-advanced-queries>,
/// "Support for sorting by properties").
fn sortable(entity: Entity) -> Sortable {
    match entity {
        Entity::User => Sortable {
            default: &["displayName", "userPrincipalName"],
            advanced: &["createdDateTime"],
        },
        Entity::Group => Sortable {
            default: &["displayName"],
            advanced: &[],
        },
    }
}

/// A page of `items` and the cursor of the next: in creation order (`order` `None`) the last
/// object's sequence number, else the position reached in the sorted list (the token is opaque
/// to callers).
pub(super) fn paginate<T>(
    mut items: Vec<T>,
    obj: impl Fn(&T) -> &Obj,
    order: Option<&Order>,
    top: usize,
    after: u64,
) -> (Vec<T>, Option<u64>) {
    match order {
        None => {
            items.retain(|item| obj(item).seq > after);
            let more = items.len() > top;
            items.truncate(top);
            let next = items.last().filter(|_| more).map(|item| obj(item).seq);
            (items, next)
        }
        Some(order) => {
            let key = |o: &Obj| o.str_prop(order.property).unwrap_or("").to_lowercase();
            items.sort_by(|a, b| {
                let (a, b) = (obj(a), obj(b));
                key(a).cmp(&key(b)).then(a.seq.cmp(&b.seq))
            });
            if order.descending {
                items.reverse();
            }
            let skip = usize::try_from(after)
                .unwrap_or(usize::MAX)
                .min(items.len());
            let total = items.len();
            let mut page: Vec<T> = items.drain(skip..).collect();
            page.truncate(top);
            let reached = skip.saturating_add(page.len());
            let next = (reached < total).then_some(u64::try_from(reached).unwrap_or(u64::MAX));
            (page, next)
        }
    }
}

/// Live, replicated objects that pass `expr` and `search`, in creation order.
fn matching<'a>(
    tenant: &'a TenantState,
    context: &RequestContext<'_>,
    entity: Entity,
    expr: Option<&filter::Expr>,
    search: Option<&Search>,
) -> Vec<&'a Obj> {
    let all = objects(tenant, entity);
    // A filter on id or UPN reads the index, not every object: the same answer (the candidates
    // still pass the filter below, in creation order), without a scan per request.
    let candidates = match (entity, expr) {
        (Entity::User, Some(e)) => tenant.user_candidates(e),
        _ => None,
    };
    let scanned: Box<dyn Iterator<Item = &Obj>> = match &candidates {
        Some(positions) => Box::new(positions.iter().filter_map(|&i| all.get(i))),
        None => Box::new(all.iter()),
    };
    scanned
        .filter(|o| !o.deleted && o.visible(context.now))
        .filter(|o| expr.is_none_or(|e| filter::eval(e, &o.props)))
        .filter(|o| search.is_none_or(|s| search::matches(s, &o.props)))
        .collect()
}

/// `GET /users` or `GET /groups`: live, replicated objects in creation order (or sorted by
/// `$orderby`), a page at a time, with `$filter`, `$search`, `$count` and `$expand`
/// (docs/graph-behaviour.md#advanced-queries, #expand).
pub(super) fn list(
    tenant: &TenantState,
    context: &RequestContext<'_>,
    entity: Entity,
) -> GraphResult {
    let name = entity.schema_name();
    let expand = expand::parse(&context.query, name)?;
    let mode = query::mode(context);
    let search = query::search(context, name)?;
    let expr = query::filter(context, name, mode)?;
    let narrowed = expr.is_some() || search.is_some();
    let order = query::order_by(context, &sortable(entity), narrowed, mode)?;
    let select = select_list(&context.query, entity)?;
    let top = page_size(&context.query)?;
    let after = skip_cursor(&context.query)?;
    let matching = matching(tenant, context, entity, expr.as_ref(), search.as_ref());
    let total = matching.len();
    let (page, next) = paginate(matching, |o| *o, order.as_ref(), top, after);
    let value: Vec<Value> = page
        .iter()
        .map(|o| {
            let mut m = entity.project(o, select.as_deref());
            if let Some(expand) = &expand {
                expand.apply(tenant, context, o, &mut m);
            }
            Value::Object(m)
        })
        .collect();
    let mut body = Map::new();
    body.insert(
        "@odata.context".into(),
        json!(format!(
            "{METADATA}#{}",
            context_entity_set(entity, select.as_deref())
        )),
    );
    // Without the advanced parameters (or with `$expand`) Graph ignores `$count=true`.
    if query::count_requested(context) && mode == QueryMode::Advanced && after == 0 {
        body.insert("@odata.count".into(), json!(total));
    }
    if let Some(next) = next {
        body.insert("@odata.nextLink".into(), json!(next_link(context, next)));
    }
    body.insert("value".into(), Value::Array(value));
    Ok(GraphResponse::json(StatusCode::OK, Value::Object(body)))
}

/// `GET /users/$count` or `GET /groups/$count`: needs `ConsistencyLevel: eventual`, and counts
/// what `$filter` and `$search` let through.
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
    let name = entity.schema_name();
    let search = query::search(context, name)?;
    let expr = query::filter(context, name, QueryMode::Advanced)?;
    let n = matching(tenant, context, entity, expr.as_ref(), search.as_ref()).len();
    Ok(GraphResponse::json(StatusCode::OK, json!(n)))
}

fn objects(tenant: &TenantState, entity: Entity) -> &[Obj] {
    match entity {
        Entity::User => &tenant.users,
        Entity::Group => &tenant.groups,
    }
}
