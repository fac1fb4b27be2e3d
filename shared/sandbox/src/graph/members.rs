//! `/groups/{id}/members`: list (with `$filter`, `$search`, `$orderby` and `$count` as
//! advanced queries), `$count`, add (`$ref`), remove (`{member}/$ref`).

use http::StatusCode;
use serde_json::{Map, Value, json};

use super::expand;
use super::groups::{already_member, dynamic_refused, find_group, resolve_binds};
use super::paging::{next_link, page_size, paginate, skip_cursor};
use super::projection::{Entity, select_list};
use super::query::{self, Sortable};
use super::request::{Permission, RequestContext, ref_id};
use crate::changes::{Relation, What};
use crate::filter::{self, QueryMode};
use crate::search::{self, Search};
use crate::tenant::{Obj, TenantState};
use crate::wire::{GraphError, GraphResponse, GraphResult, METADATA};

/// Members sort only in advanced queries (the documented member sorts all send the advanced
/// parameters: <https://learn.microsoft.com/graph/api/group-list-members>).
const MEMBER_SORT: Sortable = Sortable {
    default: &[],
    advanced: &["displayName"],
};

/// The live users and groups among a group's members, in creation order.
pub(super) fn member_objects<'a>(tenant: &'a TenantState, group: &Obj) -> Vec<(Entity, &'a Obj)> {
    let mut members: Vec<(Entity, &Obj)> = group
        .members
        .iter()
        .filter_map(|mid| {
            if let Some(u) = tenant.live_user_exact(mid) {
                Some((Entity::User, &tenant.users[u]))
            } else {
                tenant
                    .live_group_exact(mid)
                    .map(|g| (Entity::Group, &tenant.groups[g]))
            }
        })
        .collect();
    members.sort_by_key(|(_, o)| o.seq);
    members
}

/// The members a `$filter` and a `$search` let through (checked as on users: members are
/// directory objects, users above all).
fn matching_members<'a>(
    tenant: &'a TenantState,
    group: &Obj,
    expr: Option<&filter::Expr>,
    search: Option<&Search>,
) -> Vec<(Entity, &'a Obj)> {
    member_objects(tenant, group)
        .into_iter()
        .filter(|(_, o)| expr.is_none_or(|e| filter::eval(e, &o.props)))
        .filter(|(_, o)| search.is_none_or(|s| search::matches(s, &o.props)))
        .collect()
}

/// Users and groups among the members, a page at a time.
pub(super) fn list(tenant: &TenantState, context: &RequestContext<'_>, id: &str) -> GraphResult {
    context.need(Permission::GroupRead)?;
    let g = find_group(tenant, id, context)?;
    // Members are directory objects, which have no relationship to expand.
    expand::parse(&context.query, "directoryObject")?;
    let select = select_list(&context.query, Entity::User)?;
    if context.query.get("$filter").is_some() && !context.consistency_eventual() {
        return Err(GraphError::unsupported_query(
            "Unsupported or invalid query filter clause specified for property 'members' of resource 'Group'.",
        ));
    }
    let mode = query::mode(context);
    let search = query::search(context, "user")?;
    let expr = query::filter(context, "user", mode)?;
    let narrowed = expr.is_some() || search.is_some();
    let order = query::order_by(context, &MEMBER_SORT, narrowed, mode)?;
    let top = page_size(&context.query)?;
    let after = skip_cursor(&context.query)?;
    let members = matching_members(tenant, &tenant.groups[g], expr.as_ref(), search.as_ref());
    let total = members.len();
    let (page, next) = paginate(members, |m| m.1, order.as_ref(), top, after);
    let mut body = Map::new();
    body.insert(
        "@odata.context".into(),
        json!(format!("{METADATA}#directoryObjects")),
    );
    if query::count_requested(context) && mode == QueryMode::Advanced && after == 0 {
        body.insert("@odata.count".into(), json!(total));
    }
    if let Some(next) = next {
        body.insert("@odata.nextLink".into(), json!(next_link(context, next)));
    }
    let value = page
        .iter()
        .map(|(entity, o)| entity.directory_object(o, select.as_deref()))
        .collect();
    body.insert("value".into(), Value::Array(value));
    Ok(GraphResponse::json(StatusCode::OK, Value::Object(body)))
}

/// `GET /groups/{id}/members/$count`: an advanced query, so it needs `ConsistencyLevel:
/// eventual` (<https://learn.microsoft.com/graph/aad-advanced-queries>: "Use of $count as a URL
/// segment"), and counts what `$filter` and `$search` let through.
pub(super) fn count(tenant: &TenantState, context: &RequestContext<'_>, id: &str) -> GraphResult {
    context.need(Permission::GroupRead)?;
    let g = find_group(tenant, id, context)?;
    if !context.consistency_eventual() {
        return Err(GraphError::bad_request(
            "$count is not currently supported.",
        ));
    }
    let search = query::search(context, "user")?;
    let expr = query::filter(context, "user", QueryMode::Advanced)?;
    let n = matching_members(tenant, &tenant.groups[g], expr.as_ref(), search.as_ref()).len();
    Ok(GraphResponse::json(StatusCode::OK, json!(n)))
}

pub(super) fn add(
    tenant: &mut TenantState,
    context: &mut RequestContext<'_>,
    id: &str,
) -> GraphResult {
    context.need(Permission::MemberWrite)?;
    // A group still replicating answers 400 "do not exist"
    // (docs/graph-behaviour.md#group-membership, #replication-lag).
    let g = match tenant.group_index_any(id) {
        Some(g) if tenant.groups[g].visible(context.now) => g,
        Some(_) => return Err(GraphError::reference_missing()),
        None => return Err(GraphError::not_found(id)),
    };
    let body = context.body_object()?;
    let target = ref_id(&body)?;
    if tenant.groups[g].is_dynamic() {
        return Err(dynamic_refused());
    }
    let unified = tenant.groups[g].is_unified();
    let ids = resolve_binds(tenant, context, &[json!(target)], unified)?;
    let mid = ids.into_iter().next().unwrap_or_default();
    if mid.eq_ignore_ascii_case(tenant.groups[g].id()) {
        return Err(GraphError::bad_request(
            "A group cannot be a member of itself.",
        ));
    }
    if tenant.groups[g]
        .members
        .iter()
        .any(|m| m.eq_ignore_ascii_case(&mid))
    {
        return Err(already_member());
    }
    tenant.groups[g].members.push(mid.clone());
    let group_id = tenant.groups[g].id().to_owned();
    tenant.log_group(&group_id, member_link(mid, true));
    context.mutated = true;
    Ok(GraphResponse::no_content())
}

pub(super) fn remove(
    tenant: &mut TenantState,
    context: &mut RequestContext<'_>,
    id: &str,
    member: &str,
) -> GraphResult {
    context.need(Permission::MemberWrite)?;
    let g = find_group(tenant, id, context)?;
    let position = tenant.groups[g]
        .members
        .iter()
        .position(|m| m.eq_ignore_ascii_case(member))
        .ok_or_else(|| {
            GraphError::new(
                StatusCode::NOT_FOUND,
                "Request_ResourceNotFound",
                "One or more removed object references do not exist for the following modified properties: 'members'.",
            )
        })?;
    let gone = tenant.groups[g].members.remove(position);
    let group_id = tenant.groups[g].id().to_owned();
    tenant.log_group(&group_id, member_link(gone, false));
    context.mutated = true;
    Ok(GraphResponse::no_content())
}

/// The change-log entry of a member added or removed.
pub(super) fn member_link(member: String, added: bool) -> What {
    What::Link {
        relation: Relation::Members,
        target: member,
        added,
    }
}
