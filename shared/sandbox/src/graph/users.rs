//! `/users`: list, count, get, create, update, delete, and the `manager` reference.

use http::StatusCode;
use serde_json::{Map, Value, json};

use super::expand;
use super::paging;
use super::projection::{Entity, context_entity_set, project_user, select_list};
use super::request::{Permission, RequestContext, read_only_error, ref_id, schema_error};
use crate::changes::{Relation, What};
use crate::tenant::{TenantState, add_mail_proxy};
use crate::validate;
use crate::wire::{GraphError, GraphResponse, GraphResult, METADATA, now_iso};

pub(super) fn list(tenant: &TenantState, context: &RequestContext<'_>) -> GraphResult {
    context.need(Permission::UserRead)?;
    paging::list(tenant, context, Entity::User)
}

pub(super) fn count(tenant: &TenantState, context: &RequestContext<'_>) -> GraphResult {
    context.need(Permission::UserRead)?;
    paging::count(tenant, context, Entity::User)
}

/// `GET /users/{id | userPrincipalName}`, with `$select` and `$expand=manager`.
pub(super) fn get(tenant: &TenantState, context: &RequestContext<'_>, key: &str) -> GraphResult {
    context.need(Permission::UserRead)?;
    let i = find_user(tenant, key, context)?;
    let expand = expand::parse(&context.query, Entity::User.schema_name())?;
    let select = select_list(&context.query, Entity::User)?;
    let mut body = project_user(&tenant.users[i], select.as_deref());
    if let Some(expand) = &expand {
        expand.apply(tenant, context, &tenant.users[i], &mut body);
    }
    body.insert(
        "@odata.context".into(),
        json!(format!(
            "{METADATA}#{}/$entity",
            context_entity_set(Entity::User, select.as_deref())
        )),
    );
    Ok(GraphResponse::json(StatusCode::OK, Value::Object(body)))
}

/// Soft delete: the user moves to the deleted items. An admin cannot be deleted.
pub(super) fn delete(
    tenant: &mut TenantState,
    context: &mut RequestContext<'_>,
    key: &str,
) -> GraphResult {
    context.need(Permission::UserWrite)?;
    let i = find_user(tenant, key, context)?;
    if tenant.users[i].admin {
        return Err(GraphError::forbidden());
    }
    tenant.set_user_deleted(i, true);
    tenant.users[i]
        .props
        .insert("deletedDateTime".into(), json!(now_iso()));
    context.mutated = true;
    Ok(GraphResponse::no_content())
}

pub(super) fn get_manager(
    tenant: &TenantState,
    context: &RequestContext<'_>,
    key: &str,
) -> GraphResult {
    context.need(Permission::UserRead)?;
    let i = find_user(tenant, key, context)?;
    let manager = tenant.users[i]
        .manager
        .clone()
        .and_then(|m| tenant.user_index(&m, context.now))
        .ok_or_else(|| GraphError::not_found("manager"))?;
    let select = select_list(&context.query, Entity::User)?;
    let mut body = Map::new();
    body.insert(
        "@odata.context".into(),
        json!(format!("{METADATA}#directoryObjects/$entity")),
    );
    body.insert("@odata.type".into(), json!("#microsoft.graph.user"));
    body.extend(project_user(&tenant.users[manager], select.as_deref()));
    Ok(GraphResponse::json(StatusCode::OK, Value::Object(body)))
}

pub(super) fn set_manager(
    tenant: &mut TenantState,
    context: &mut RequestContext<'_>,
    key: &str,
) -> GraphResult {
    context.need(Permission::UserWrite)?;
    let i = find_user(tenant, key, context)?;
    let body = context.body_object()?;
    let target = ref_id(&body)?;
    let manager = match tenant.user_index_any(&target) {
        Some(m) if tenant.users[m].visible(context.now) => m,
        _ => return Err(GraphError::not_found(&target)),
    };
    let manager_id = tenant.users[manager].id().to_owned();
    if manager_id == tenant.users[i].id() {
        return Err(GraphError::bad_request(
            "Invalid value specified for property 'manager' of resource 'User'.",
        ));
    }
    let user_id = tenant.users[i].id().to_owned();
    if tenant.users[i]
        .manager
        .replace(manager_id.clone())
        .as_deref()
        != Some(&manager_id)
    {
        tenant.log_user(&user_id, manager_link(manager_id, true));
    }
    context.mutated = true;
    Ok(GraphResponse::no_content())
}

pub(super) fn remove_manager(
    tenant: &mut TenantState,
    context: &mut RequestContext<'_>,
    key: &str,
) -> GraphResult {
    context.need(Permission::UserWrite)?;
    let i = find_user(tenant, key, context)?;
    let Some(old) = tenant.users[i].manager.take() else {
        return Err(GraphError::not_found("manager"));
    };
    let user_id = tenant.users[i].id().to_owned();
    tenant.log_user(&user_id, manager_link(old, false));
    context.mutated = true;
    Ok(GraphResponse::no_content())
}

/// The change-log entry of a manager set (`added`) or removed.
pub(super) fn manager_link(manager: String, added: bool) -> What {
    What::Link {
        relation: Relation::Manager,
        target: manager,
        added,
    }
}

/// A live, replicated user by id or UPN, else 404 (docs/graph-behaviour.md#error-bodies,
/// #replication-lag).
pub(super) fn find_user(
    tenant: &TenantState,
    key: &str,
    context: &RequestContext<'_>,
) -> Result<usize, GraphError> {
    tenant
        .user_index(key, context.now)
        .ok_or_else(|| GraphError::not_found(key))
}

/// Properties Graph does not let a client write on users.
const USER_READ_ONLY: &[&str] = &[
    "proxyAddresses",
    "createdDateTime",
    "deletedDateTime",
    "assignedLicenses",
    "assignedPlans",
    "provisionedPlans",
    "licenseAssignmentStates",
    "onPremisesSyncEnabled",
    "onPremisesLastSyncDateTime",
    "onPremisesSecurityIdentifier",
    "signInSessionsValidFromDateTime",
    "securityIdentifier",
    "creationType",
    "externalUserState",
];

fn check_upn(
    tenant: &TenantState,
    upn: &str,
    body: &Map<String, Value>,
    creating: bool,
) -> Result<(), GraphError> {
    if !validate::upn_syntax_ok(upn) {
        return Err(
            GraphError::bad_request("Property userPrincipalName is invalid.").with_details(vec![
                json!({"code": "InvalidValue", "target": "userPrincipalName"}),
            ]),
        );
    }
    let domain = upn.rsplit_once('@').map(|(_, d)| d).unwrap_or("");
    let d = tenant
        .domains
        .iter()
        .find(|d| d.id.eq_ignore_ascii_case(domain) && d.is_verified);
    let Some(d) = d else {
        return Err(GraphError::bad_request(
            "The domain portion of the userPrincipalName property is invalid. You must use one of the verified domain names in your organization.",
        )
        .with_details(vec![json!({"code": "InvalidValue", "target": "userPrincipalName"})]));
    };
    if creating && d.authentication_type.eq_ignore_ascii_case("Federated") {
        match body.get("onPremisesImmutableId").and_then(Value::as_str) {
            None | Some("") => return Err(GraphError::required("onPremisesImmutableId")),
            Some(_) => {}
        }
    }
    Ok(())
}

fn check_password(
    body: &Map<String, Value>,
    existing_policies: Option<&str>,
) -> Result<(), GraphError> {
    let Some(profile) = body.get("passwordProfile") else {
        return Ok(());
    };
    let Some(pw) = profile.get("password").and_then(Value::as_str) else {
        return Err(GraphError::required("passwordProfile"));
    };
    let policies = body
        .get("passwordPolicies")
        .and_then(Value::as_str)
        .or(existing_policies)
        .unwrap_or("");
    let ok = if policies.contains("DisableStrongPassword") {
        (1..=256).contains(&pw.chars().count())
    } else {
        validate::password_ok(pw)
    };
    if ok {
        Ok(())
    } else {
        Err(GraphError::bad_request(validate::WEAK_PASSWORD))
    }
}

/// Checks shared by user create and update.
fn check_user_props(
    tenant: &TenantState,
    body: &Map<String, Value>,
    self_id: Option<&str>,
) -> Result<(), GraphError> {
    validate::check_lengths("user", "User", body)?;
    if let Some(v) = body.get("mailNickname") {
        match v.as_str() {
            Some(n) if validate::mail_nickname_ok(n, false) => {}
            _ => return Err(GraphError::invalid_value("mailNickname", "User")),
        }
    }
    if let Some(v) = body.get("usageLocation") {
        match v.as_str() {
            Some(c) if validate::usage_location_ok(c) => {}
            _ => return Err(GraphError::invalid_value("usageLocation", "User")),
        }
    }
    if let Some(v) = body.get("onPremisesImmutableId")
        && let Some(s) = v.as_str()
        && !validate::immutable_id_ok(s)
    {
        return Err(GraphError::invalid_value("onPremisesImmutableId", "User"));
    }
    if let Some(bp) = body.get("businessPhones").and_then(Value::as_array)
        && bp.len() > 1
    {
        return Err(GraphError::invalid_value("businessPhones", "User"));
    }
    if let Some(mail) = body.get("mail").and_then(Value::as_str) {
        if !mail.is_ascii() || !mail.contains('@') {
            return Err(GraphError::invalid_value("mail", "User"));
        }
        if tenant.address_taken(mail, self_id) {
            return Err(GraphError::conflict("proxyAddresses"));
        }
    }
    Ok(())
}

pub(super) fn create(tenant: &mut TenantState, context: &mut RequestContext<'_>) -> GraphResult {
    context.need(Permission::UserWrite)?;
    let mut body = context.body_object()?;
    crate::schema::validate_body("user", &body).map_err(|v| schema_error(&v))?;
    if let Some(p) = USER_READ_ONLY.iter().find(|p| body.contains_key(**p)) {
        return Err(read_only_error(p));
    }
    body.remove("id");
    for prop in [
        "accountEnabled",
        "displayName",
        "mailNickname",
        "passwordProfile",
    ] {
        match body.get(prop) {
            None | Some(Value::Null) => return Err(GraphError::required(prop)),
            Some(Value::String(s)) if s.is_empty() => return Err(GraphError::required(prop)),
            _ => {}
        }
    }
    if !body.get("accountEnabled").is_some_and(Value::is_boolean) {
        return Err(GraphError::invalid_value("accountEnabled", "User"));
    }
    let upn = match body.get("userPrincipalName").and_then(Value::as_str) {
        Some(u) if !u.is_empty() => u.to_owned(),
        _ => return Err(GraphError::required("userPrincipalName")),
    };
    check_user_props(tenant, &body, None)?;
    check_upn(tenant, &upn, &body, true)?;
    check_password(&body, None)?;
    // Live users only: a deleted user's UPN may be taken (see `TenantState::upn_taken`).
    if tenant.upn_taken(&upn, None) {
        return Err(GraphError::conflict("userPrincipalName"));
    }
    body.remove("passwordProfile");
    let visible_at = context.now + context.lag;
    let id = tenant.insert_user(Value::Object(body), visible_at);
    context.mutated = true;
    let obj = tenant
        .user_exact(&id)
        .map(|i| &tenant.users[i])
        .ok_or_else(|| GraphError::bad_request("create failed"))?;
    let mut out = Map::new();
    out.insert(
        "@odata.context".into(),
        json!(format!("{METADATA}#users/$entity")),
    );
    out.extend(project_user(obj, None));
    let mut resp = GraphResponse::json(StatusCode::CREATED, Value::Object(out));
    resp.headers.push((
        "Location".to_owned(),
        format!(
            "https://graph.microsoft.com/v2/{}/directoryObjects/{id}/Microsoft.DirectoryServices.User",
            tenant.tenant_id
        ),
    ));
    Ok(resp)
}

/// Properties app-only `User.ReadWrite.All` may not change on admins
/// (docs/graph-behaviour.md#privileged-users).
const SENSITIVE: &[&str] = &[
    "accountEnabled",
    "passwordProfile",
    "userPrincipalName",
    "mobilePhone",
    "businessPhones",
    "otherMails",
    "onPremisesImmutableId",
    "mail",
];

pub(super) fn update(
    tenant: &mut TenantState,
    context: &mut RequestContext<'_>,
    key: &str,
) -> GraphResult {
    context.need(Permission::UserWrite)?;
    let i = find_user(tenant, key, context)?;
    let mut body = context.body_object()?;
    crate::schema::validate_body("user", &body).map_err(|v| schema_error(&v))?;
    if let Some(p) = USER_READ_ONLY.iter().find(|p| body.contains_key(**p)) {
        return Err(read_only_error(p));
    }
    body.remove("id");
    if tenant.users[i].admin && SENSITIVE.iter().any(|p| body.contains_key(*p)) {
        return Err(GraphError::forbidden());
    }
    if let Some(v) = body.get("displayName") {
        match v {
            Value::String(s) if !s.is_empty() => {}
            _ => return Err(GraphError::invalid_value("displayName", "User")),
        }
    }
    for prop in [
        "accountEnabled",
        "mailNickname",
        "userPrincipalName",
        "usageLocation",
        "passwordProfile",
    ] {
        if matches!(body.get(prop), Some(Value::Null)) {
            return Err(GraphError::invalid_value(prop, "User"));
        }
    }
    let self_id = tenant.users[i].id().to_owned();
    check_user_props(tenant, &body, Some(&self_id))?;
    if let Some(upn) = body.get("userPrincipalName").and_then(Value::as_str) {
        let upn = upn.to_owned();
        check_upn(tenant, &upn, &body, false)?;
        if tenant.upn_taken(&upn, Some(&self_id)) {
            return Err(GraphError::conflict("userPrincipalName"));
        }
    }
    let policies = tenant.users[i]
        .str_prop("passwordPolicies")
        .map(str::to_owned);
    check_password(&body, policies.as_deref())?;
    body.remove("passwordProfile");
    let names: Vec<String> = body.keys().cloned().collect();
    let user = &mut tenant.users[i];
    for (k, v) in body {
        if v.is_null() {
            user.props.remove(&k);
        } else {
            user.props.insert(k, v);
        }
    }
    add_mail_proxy(&mut user.props);
    tenant.index_user(i);
    if !names.is_empty() {
        tenant.log_user(&self_id, What::Props { names });
    }
    context.mutated = true;
    Ok(GraphResponse::no_content())
}
