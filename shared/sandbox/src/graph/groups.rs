//! `/groups`: list, count, get, create, update, delete. Members are in [`super::members`].

use std::collections::HashSet;

use http::StatusCode;
use serde_json::{Map, Value, json};

use super::expand;
use super::members::member_link;
use super::paging;
use super::projection::{Entity, context_entity_set, project_group, select_list};
use super::request::{Permission, RequestContext, read_only_error, ref_from_url, schema_error};
use crate::changes::What;
use crate::tenant::{TenantState, add_mail_proxy};
use crate::validate;
use crate::wire::{GraphError, GraphResponse, GraphResult, METADATA, now_iso};

pub(super) fn list(tenant: &TenantState, context: &RequestContext<'_>) -> GraphResult {
    context.need(Permission::GroupRead)?;
    paging::list(tenant, context, Entity::Group)
}

pub(super) fn count(tenant: &TenantState, context: &RequestContext<'_>) -> GraphResult {
    context.need(Permission::GroupRead)?;
    paging::count(tenant, context, Entity::Group)
}

/// `GET /groups/{id}`, with `$select` and `$expand=members`.
pub(super) fn get(tenant: &TenantState, context: &RequestContext<'_>, id: &str) -> GraphResult {
    context.need(Permission::GroupRead)?;
    let g = find_group(tenant, id, context)?;
    let expand = expand::parse(&context.query, Entity::Group.schema_name())?;
    let select = select_list(&context.query, Entity::Group)?;
    let mut body = project_group(&tenant.groups[g], select.as_deref());
    if let Some(expand) = &expand {
        expand.apply(tenant, context, &tenant.groups[g], &mut body);
    }
    body.insert(
        "@odata.context".into(),
        json!(format!(
            "{METADATA}#{}/$entity",
            context_entity_set(Entity::Group, select.as_deref())
        )),
    );
    Ok(GraphResponse::json(StatusCode::OK, Value::Object(body)))
}

/// A Microsoft 365 group moves to the deleted items; a security group is gone for good.
pub(super) fn delete(
    tenant: &mut TenantState,
    context: &mut RequestContext<'_>,
    id: &str,
) -> GraphResult {
    context.need(Permission::GroupWrite)?;
    let g = find_group(tenant, id, context)?;
    if tenant.groups[g].is_unified() {
        tenant.groups[g].deleted = true;
        let group_id = tenant.groups[g].id().to_owned();
        tenant.log_group(&group_id, What::SoftDeleted);
        tenant.groups[g]
            .props
            .insert("deletedDateTime".into(), json!(now_iso()));
    } else {
        // Deleted security groups are gone for good
        // (docs/graph-behaviour.md#soft-delete-and-restore).
        tenant.remove_group(g);
    }
    context.mutated = true;
    Ok(GraphResponse::no_content())
}

pub(super) fn find_group(
    tenant: &TenantState,
    id: &str,
    context: &RequestContext<'_>,
) -> Result<usize, GraphError> {
    tenant
        .group_index(id, context.now)
        .ok_or_else(|| GraphError::not_found(id))
}

const GROUP_READ_ONLY: &[&str] = &[
    "proxyAddresses",
    "createdDateTime",
    "deletedDateTime",
    "renewedDateTime",
    "securityIdentifier",
    "onPremisesSyncEnabled",
    "onPremisesSecurityIdentifier",
    "onPremisesLastSyncDateTime",
    "mail",
];

/// Resolves `members@odata.bind`/`owners@odata.bind` URLs to object ids
/// (docs/graph-behaviour.md#creating-groups, #group-membership).
pub(super) fn resolve_binds(
    tenant: &TenantState,
    context: &RequestContext<'_>,
    urls: &[Value],
    unified: bool,
) -> Result<Vec<String>, GraphError> {
    let mut ids = Vec::new();
    for u in urls {
        let url = u
            .as_str()
            .ok_or_else(|| GraphError::bad_request("Invalid object identifier."))?;
        let id = ref_from_url(url)?;
        if let Some(ui) = tenant.user_index_any(&id) {
            if !tenant.users[ui].visible(context.now) {
                return Err(GraphError::reference_missing());
            }
            ids.push(tenant.users[ui].id().to_owned());
        } else if let Some(gi) = tenant.group_index_any(&id) {
            if !tenant.groups[gi].visible(context.now) {
                return Err(GraphError::reference_missing());
            }
            if unified {
                return Err(unified_users_only());
            }
            ids.push(tenant.groups[gi].id().to_owned());
        } else {
            return Err(GraphError::not_found(&id));
        }
    }
    Ok(ids)
}

fn unified_users_only() -> GraphError {
    GraphError::bad_request("Only users can be added as members of a Microsoft 365 group.")
}

/// Members and owners count together (microsoftgraph/microsoft-graph-docs issue #6016: one owner
/// and 20 members fail with this text).
fn too_many_refs() -> GraphError {
    GraphError::bad_request("A resource cannot contain more than 20 link changes")
}

pub(super) fn create(tenant: &mut TenantState, context: &mut RequestContext<'_>) -> GraphResult {
    context.need(Permission::GroupWrite)?;
    let mut body = context.body_object()?;
    let member_urls = bind_urls(body.remove("members@odata.bind"));
    let owner_urls = bind_urls(body.remove("owners@odata.bind"));
    let new_group = check_new_group(&body)?;
    body.remove("id");
    if member_urls.len() + owner_urls.len() > 20 {
        return Err(too_many_refs());
    }
    if new_group.dynamic && !member_urls.is_empty() {
        return Err(dynamic_refused());
    }
    let member_ids = resolve_binds(tenant, context, &member_urls, new_group.unified)?;
    resolve_binds(tenant, context, &owner_urls, new_group.unified)?;
    if new_group.unified {
        add_unified_addresses(tenant, &new_group.nickname, &mut body)?;
    }
    if new_group.dynamic {
        body.entry("membershipRuleProcessingState")
            .or_insert(json!("On"));
    }
    let visible_at = context.now + context.lag;
    let id = tenant.insert_group(Value::Object(body), visible_at);
    let g = tenant
        .group_exact(&id)
        .ok_or_else(|| GraphError::bad_request("create failed"))?;
    let g = &mut tenant.groups[g];
    g.members = member_ids;
    context.mutated = true;
    let mut out = Map::new();
    out.insert(
        "@odata.context".into(),
        json!(format!("{METADATA}#groups/$entity")),
    );
    out.extend(project_group(g, None));
    Ok(GraphResponse::json(StatusCode::CREATED, Value::Object(out)))
}

/// The URLs of a `members@odata.bind` or `owners@odata.bind` value (none when absent).
fn bind_urls(binds: Option<Value>) -> Vec<Value> {
    match binds {
        Some(Value::Array(urls)) => urls,
        _ => Vec::new(),
    }
}

/// What a create body says about the new group, once it passed the checks.
struct NewGroup {
    nickname: String,
    unified: bool,
    dynamic: bool,
}

/// The checks of a create body (without its binds), in Graph's order.
fn check_new_group(body: &Map<String, Value>) -> Result<NewGroup, GraphError> {
    crate::schema::validate_body("group", body).map_err(|v| schema_error(&v))?;
    if let Some(p) = GROUP_READ_ONLY.iter().find(|p| body.contains_key(**p)) {
        return Err(read_only_error(p));
    }
    for prop in [
        "displayName",
        "mailEnabled",
        "mailNickname",
        "securityEnabled",
    ] {
        match body.get(prop) {
            None | Some(Value::Null) => return Err(GraphError::required(prop)),
            Some(Value::String(s)) if s.is_empty() => return Err(GraphError::required(prop)),
            _ => {}
        }
    }
    validate::check_lengths("group", "Group", body)?;
    let nickname = body
        .get("mailNickname")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    if !validate::mail_nickname_ok(&nickname, true) {
        return Err(GraphError::invalid_value("mailNickname", "Group"));
    }
    let has_type = |wanted: &str| {
        body.get("groupTypes")
            .and_then(Value::as_array)
            .is_some_and(|types| types.iter().any(|t| t.as_str() == Some(wanted)))
    };
    let unified = has_type("Unified");
    let dynamic = has_type("DynamicMembership");
    let mail_enabled = body
        .get("mailEnabled")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    if mail_enabled && !unified {
        return Err(GraphError::bad_request(
            "The service does not currently support writes of mail-enabled groups. Please ensure that the mail-enablement property is unset or is set to false.",
        ));
    }
    if dynamic
        && body
            .get("membershipRule")
            .and_then(Value::as_str)
            .is_none_or(str::is_empty)
    {
        return Err(GraphError::invalid_value("membershipRule", "Group"));
    }
    Ok(NewGroup {
        nickname,
        unified,
        dynamic,
    })
}

/// A Microsoft 365 group gets `mail` (its nickname at the default domain), the matching proxy
/// address, and `visibility` Public unless given; nickname and address must be free.
fn add_unified_addresses(
    tenant: &TenantState,
    nickname: &str,
    body: &mut Map<String, Value>,
) -> Result<(), GraphError> {
    if tenant.unified_nick_taken(nickname, None) {
        return Err(GraphError::conflict("mailNickname"));
    }
    let domain = tenant
        .domains
        .iter()
        .find(|d| d.is_default)
        .or_else(|| tenant.domains.iter().find(|d| d.is_initial))
        .map(|d| d.id.clone())
        .unwrap_or_default();
    let mail = format!("{nickname}@{domain}");
    if tenant.address_taken(&mail, None) {
        return Err(GraphError::conflict("proxyAddresses"));
    }
    body.insert("mail".into(), json!(mail));
    add_mail_proxy(body);
    body.entry("visibility").or_insert(json!("Public"));
    Ok(())
}

pub(super) fn dynamic_refused() -> GraphError {
    GraphError::bad_request(
        "Insufficient privileges to complete the operation. Members of a group with dynamic membership cannot be changed manually.",
    )
}

pub(super) fn already_member() -> GraphError {
    GraphError::bad_request(
        "One or more added object references already exist for the following modified properties: 'members'.",
    )
}

pub(super) fn update(
    tenant: &mut TenantState,
    context: &mut RequestContext<'_>,
    id: &str,
) -> GraphResult {
    context.need(Permission::GroupWrite)?;
    let g = match tenant.group_index(id, context.now) {
        Some(g) => g,
        None => return Err(GraphError::not_found(id)),
    };
    let mut body = context.body_object()?;
    let binds = body.remove("members@odata.bind");
    let owner_binds = body.remove("owners@odata.bind");
    crate::schema::validate_body("group", &body).map_err(|v| schema_error(&v))?;
    if let Some(p) = GROUP_READ_ONLY.iter().find(|p| body.contains_key(**p)) {
        return Err(read_only_error(p));
    }
    body.remove("id");
    if let Some(v) = body.get("displayName") {
        match v {
            Value::String(s) if !s.is_empty() => {}
            _ => return Err(GraphError::invalid_value("displayName", "Group")),
        }
    }
    validate::check_lengths("group", "Group", &body)?;
    if let Some(v) = body.get("mailNickname") {
        match v.as_str() {
            Some(n) if validate::mail_nickname_ok(n, true) => {
                if tenant.groups[g].is_unified() {
                    let gid = tenant.groups[g].id().to_owned();
                    if tenant.unified_nick_taken(n, Some(&gid)) {
                        return Err(GraphError::conflict("mailNickname"));
                    }
                }
            }
            _ => return Err(GraphError::invalid_value("mailNickname", "Group")),
        }
    }
    let urls: Vec<Value> = binds
        .as_ref()
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let owner_urls: Vec<Value> = owner_binds
        .as_ref()
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let mut new_members = Vec::new();
    if !urls.is_empty() || !owner_urls.is_empty() {
        // All-or-nothing and capped at 20 (docs/graph-behaviour.md#group-membership).
        if urls.len() + owner_urls.len() > 20 {
            return Err(too_many_refs());
        }
        if tenant.groups[g].is_dynamic() && !urls.is_empty() {
            return Err(dynamic_refused());
        }
        let unified = tenant.groups[g].is_unified();
        new_members = resolve_binds(tenant, context, &urls, unified)?;
        resolve_binds(tenant, context, &owner_urls, unified)?;
        let existing = &tenant.groups[g].members;
        let mut seen = HashSet::new();
        for m in &new_members {
            if existing.iter().any(|e| e.eq_ignore_ascii_case(m))
                || !seen.insert(m.to_ascii_lowercase())
            {
                return Err(already_member());
            }
        }
    }
    let names: Vec<String> = body.keys().cloned().collect();
    let group = &mut tenant.groups[g];
    let group_id = group.id().to_owned();
    for (k, v) in body {
        if v.is_null() {
            group.props.remove(&k);
        } else {
            group.props.insert(k, v);
        }
    }
    group.members.extend(new_members.iter().cloned());
    tenant.index_group(g);
    if !names.is_empty() {
        tenant.log_group(&group_id, What::Props { names });
    }
    for m in new_members {
        tenant.log_group(&group_id, member_link(m, true));
    }
    context.mutated = true;
    Ok(GraphResponse::no_content())
}
