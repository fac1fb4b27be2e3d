//! Directory objects: `/directory/deletedItems` (list by type, get, restore, permanent delete).

use http::StatusCode;
use serde_json::{Map, Value, json};

use super::members::member_link;
use super::projection::{Entity, project_group, project_user};
use super::request::{Permission, RequestContext};
use super::users::manager_link;
use crate::changes::What;
use crate::tenant::TenantState;
use crate::wire::{GraphError, GraphResponse, GraphResult, METADATA};

/// `GET /directory/deletedItems/microsoft.graph.user` (or `.group`).
pub(super) fn list_deleted(
    tenant: &TenantState,
    context: &RequestContext<'_>,
    entity: Entity,
) -> GraphResult {
    context.need(read_permission(entity))?;
    let objects = match entity {
        Entity::User => &tenant.users,
        Entity::Group => &tenant.groups,
    };
    let value: Vec<Value> = objects
        .iter()
        .filter(|o| o.deleted)
        .map(|o| {
            let mut m = entity.project(o, None);
            m.insert(
                "deletedDateTime".into(),
                o.props
                    .get("deletedDateTime")
                    .cloned()
                    .unwrap_or(Value::Null),
            );
            Value::Object(m)
        })
        .collect();
    let kind = type_name(entity);
    Ok(GraphResponse::json(
        StatusCode::OK,
        json!({
            "@odata.context": format!("{METADATA}#directory/deletedItems/{kind}"),
            "value": value,
        }),
    ))
}

/// The permission is checked once the object is found: a missing id answers 404 whatever the
/// caller may read.
pub(super) fn get_deleted(
    tenant: &TenantState,
    context: &RequestContext<'_>,
    id: &str,
) -> GraphResult {
    let (entity, i) = find_deleted(tenant, id)?;
    context.need(read_permission(entity))?;
    Ok(GraphResponse::json(
        StatusCode::OK,
        Value::Object(deleted_view(tenant, entity, i)),
    ))
}

pub(super) fn restore(
    tenant: &mut TenantState,
    context: &mut RequestContext<'_>,
    id: &str,
) -> GraphResult {
    let (entity, i) = find_deleted(tenant, id)?;
    context.need(write_permission(entity))?;
    if entity == Entity::User && tenant.users[i].admin {
        return Err(GraphError::forbidden());
    }
    // Another object took its UPN or an address meanwhile: Graph refuses the restore
    // with the same conflict as a create.
    if let Some(property) = tenant.restore_conflict(entity == Entity::User, i) {
        return Err(GraphError::conflict(property));
    }
    match entity {
        Entity::User => {
            tenant.set_user_deleted(i, false);
            tenant.users[i].props.remove("deletedDateTime");
        }
        Entity::Group => {
            tenant.groups[i].deleted = false;
            tenant.groups[i].props.remove("deletedDateTime");
            let group_id = tenant.groups[i].id().to_owned();
            tenant.log_group(&group_id, What::Restored);
        }
    }
    context.mutated = true;
    Ok(GraphResponse::json(
        StatusCode::OK,
        Value::Object(deleted_view(tenant, entity, i)),
    ))
}

/// Permanent delete; a purged user also leaves every group and stops being anyone's manager.
pub(super) fn purge(
    tenant: &mut TenantState,
    context: &mut RequestContext<'_>,
    id: &str,
) -> GraphResult {
    let (entity, i) = find_deleted(tenant, id)?;
    context.need(write_permission(entity))?;
    match entity {
        Entity::User => {
            let user_id = tenant.users[i].id().to_owned();
            tenant.remove_user(i);
            let mut left: Vec<String> = Vec::new();
            for g in &mut tenant.groups {
                let before = g.members.len();
                g.members.retain(|m| *m != user_id);
                if g.members.len() != before {
                    left.push(g.id().to_owned());
                }
            }
            let mut managed: Vec<String> = Vec::new();
            for u in &mut tenant.users {
                if u.manager.as_deref() == Some(user_id.as_str()) {
                    u.manager = None;
                    managed.push(u.id().to_owned());
                }
            }
            for g in left {
                tenant.log_group(&g, member_link(user_id.clone(), false));
            }
            for u in managed {
                tenant.log_user(&u, manager_link(user_id.clone(), false));
            }
        }
        Entity::Group => tenant.remove_group(i),
    }
    context.mutated = true;
    Ok(GraphResponse::no_content())
}

/// The `@odata.type` cast segment of a deleted-items list.
pub(super) fn type_name(entity: Entity) -> &'static str {
    match entity {
        Entity::User => "microsoft.graph.user",
        Entity::Group => "microsoft.graph.group",
    }
}

fn read_permission(entity: Entity) -> Permission {
    match entity {
        Entity::User => Permission::UserRead,
        Entity::Group => Permission::GroupRead,
    }
}

fn write_permission(entity: Entity) -> Permission {
    match entity {
        Entity::User => Permission::UserWrite,
        Entity::Group => Permission::GroupWrite,
    }
}

fn find_deleted(tenant: &TenantState, id: &str) -> Result<(Entity, usize), GraphError> {
    if let Some(i) = tenant.deleted_user_index(id) {
        return Ok((Entity::User, i));
    }
    if let Some(i) = tenant.deleted_group_index(id) {
        return Ok((Entity::Group, i));
    }
    Err(GraphError::not_found(id))
}

fn deleted_view(tenant: &TenantState, entity: Entity, idx: usize) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert(
        "@odata.context".into(),
        json!(format!("{METADATA}#directoryObjects/$entity")),
    );
    if entity == Entity::User {
        m.insert("@odata.type".into(), json!("#microsoft.graph.user"));
        m.extend(project_user(&tenant.users[idx], None));
        m.insert(
            "deletedDateTime".into(),
            tenant.users[idx]
                .props
                .get("deletedDateTime")
                .cloned()
                .unwrap_or(Value::Null),
        );
    } else {
        m.insert("@odata.type".into(), json!("#microsoft.graph.group"));
        m.extend(project_group(&tenant.groups[idx], None));
    }
    m
}
