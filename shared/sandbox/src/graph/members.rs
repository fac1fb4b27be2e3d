//! `/groups/{id}/members`: list, add (`$ref`), remove (`{member}/$ref`).

use http::StatusCode;
use serde_json::{Map, Value, json};

use super::groups::{already_member, dynamic_refused, find_group, resolve_binds};
use super::paging::{next_link, page_size, skip_cursor};
use super::projection::{Entity, project_group, project_user, select_list};
use super::request::{Permission, RequestContext, ref_id};
use crate::changes::{Relation, What};
use crate::tenant::TenantState;
use crate::wire::{GraphError, GraphResponse, GraphResult, METADATA};

/// Users and groups among the members, live ones only, in creation order, a page at a time.
pub(super) fn list(tenant: &TenantState, context: &RequestContext<'_>, id: &str) -> GraphResult {
    context.need(Permission::GroupRead)?;
    let g = find_group(tenant, id, context)?;
    let select = select_list(&context.query, Entity::User)?;
    if context.query.get("$filter").is_some() && !context.consistency_eventual() {
        return Err(GraphError::unsupported_query(
            "Unsupported or invalid query filter clause specified for property 'members' of resource 'Group'.",
        ));
    }
    let top = page_size(&context.query)?;
    let after = skip_cursor(&context.query)?;
    let mut members: Vec<(u64, Value)> = Vec::new();
    for mid in &tenant.groups[g].members {
        if let Some(u) = tenant.live_user_exact(mid).map(|i| &tenant.users[i]) {
            let mut m = Map::new();
            m.insert("@odata.type".into(), json!("#microsoft.graph.user"));
            m.extend(project_user(u, select.as_deref()));
            members.push((u.seq, Value::Object(m)));
        } else if let Some(gr) = tenant.live_group_exact(mid).map(|i| &tenant.groups[i]) {
            let mut m = Map::new();
            m.insert("@odata.type".into(), json!("#microsoft.graph.group"));
            m.extend(project_group(gr, select.as_deref()));
            members.push((gr.seq, Value::Object(m)));
        }
    }
    members.sort_by_key(|(seq, _)| *seq);
    let rest: Vec<(u64, Value)> = members.into_iter().filter(|(s, _)| *s > after).collect();
    let mut body = Map::new();
    body.insert(
        "@odata.context".into(),
        json!(format!("{METADATA}#directoryObjects")),
    );
    if rest.len() > top {
        body.insert(
            "@odata.nextLink".into(),
            json!(next_link(context, rest[top - 1].0)),
        );
    }
    body.insert(
        "value".into(),
        Value::Array(rest.into_iter().take(top).map(|(_, v)| v).collect()),
    );
    Ok(GraphResponse::json(StatusCode::OK, Value::Object(body)))
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
