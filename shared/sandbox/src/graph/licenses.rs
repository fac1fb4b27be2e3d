//! Licenses: `/subscribedSkus`, `/users/{id}/licenseDetails`, `/users/{id}/assignLicense`.

use http::StatusCode;
use serde_json::{Map, Value, json};

use super::projection::project_user;
use super::request::{Permission, RequestContext};
use super::users::find_user;
use crate::config::SkuSeed;
use crate::tenant::TenantState;
use crate::validate;
use crate::wire::{GraphError, GraphResponse, GraphResult, METADATA};

/// `GET /subscribedSkus` (Graph refuses `$filter` on it).
pub(super) fn list_subscribed_skus(
    tenant: &TenantState,
    context: &RequestContext<'_>,
) -> GraphResult {
    context.need(Permission::OrgRead)?;
    if context.query.get("$filter").is_some() {
        return Err(GraphError::new(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "Query option 'Filter' is not allowed. To allow it, set the 'AllowedQueryOptions' property on EnableQueryAttribute or QueryValidationSettings.",
        ));
    }
    Ok(subscribed_skus(tenant))
}

pub(super) fn list_details(
    tenant: &TenantState,
    context: &RequestContext<'_>,
    key: &str,
) -> GraphResult {
    context.need(Permission::UserRead)?;
    let i = find_user(tenant, key, context)?;
    Ok(license_details(tenant, i))
}

fn subscribed_skus(tenant: &TenantState) -> GraphResponse {
    let value: Vec<Value> = tenant
        .skus
        .iter()
        .map(|s| {
            json!({
                "accountName": tenant.display_name,
                "accountId": tenant.tenant_id,
                "appliesTo": "User",
                "capabilityStatus": "Enabled",
                "consumedUnits": tenant.consumed_units(&s.sku_id),
                "id": format!("{}_{}", tenant.tenant_id, s.sku_id),
                "skuId": s.sku_id,
                "skuPartNumber": s.sku_part_number,
                "subscriptionIds": [],
                "prepaidUnits": { "enabled": s.enabled, "suspended": 0, "warning": 0, "lockedOut": 0 },
                "servicePlans": s.service_plans.iter().map(|p| json!({
                    "servicePlanId": p.service_plan_id,
                    "servicePlanName": p.service_plan_name,
                    "provisioningStatus": "Success",
                    "appliesTo": "User",
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    GraphResponse::json(
        StatusCode::OK,
        json!({ "@odata.context": format!("{METADATA}#subscribedSkus"), "value": value }),
    )
}

fn license_details(tenant: &TenantState, i: usize) -> GraphResponse {
    let user = &tenant.users[i];
    let assigned = user
        .props
        .get("assignedLicenses")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let value: Vec<Value> = assigned
        .iter()
        .filter_map(|a| {
            let sku_id = a.get("skuId")?.as_str()?;
            let sku = tenant.skus.iter().find(|s| s.sku_id.eq_ignore_ascii_case(sku_id))?;
            let disabled: Vec<&str> = a
                .get("disabledPlans")
                .and_then(Value::as_array)
                .map(|d| d.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            Some(json!({
                "id": format!("{}{}", user.id().replace('-', ""), sku.sku_id.replace('-', "")),
                "skuId": sku.sku_id,
                "skuPartNumber": sku.sku_part_number,
                "servicePlans": sku.service_plans.iter().map(|p| json!({
                    "servicePlanId": p.service_plan_id,
                    "servicePlanName": p.service_plan_name,
                    "provisioningStatus": if disabled.iter().any(|d| d.eq_ignore_ascii_case(&p.service_plan_id)) { "Disabled" } else { "Success" },
                    "appliesTo": "User",
                })).collect::<Vec<_>>(),
            }))
        })
        .collect();
    GraphResponse::json(
        StatusCode::OK,
        json!({
            "@odata.context": format!("{METADATA}#users('{}')/licenseDetails", user.id()),
            "value": value,
        }),
    )
}

/// `POST /users/{id}/assignLicense`: all or nothing; removals first, then additions (an addition
/// of an assigned SKU replaces its disabled plans).
pub(super) fn assign(
    tenant: &mut TenantState,
    context: &mut RequestContext<'_>,
    key: &str,
) -> GraphResult {
    context.need(Permission::LicenseWrite)?;
    let i = find_user(tenant, key, context)?;
    let body = context.body_object()?;
    let (add, remove) = license_changes(&body)?;
    let location_ok = tenant.users[i]
        .str_prop("usageLocation")
        .is_some_and(validate::usage_location_ok);
    if !location_ok {
        return Err(GraphError::bad_request(
            "License assignment cannot be done for user with invalid usage location.",
        ));
    }
    let mut assigned: Vec<Value> = tenant.users[i]
        .props
        .get("assignedLicenses")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let additions = add
        .iter()
        .map(|addition| check_addition(tenant, &assigned, addition))
        .collect::<Result<Vec<Value>, GraphError>>()?;
    for r in &remove {
        without_sku(&mut assigned, r.as_str().unwrap_or(""));
    }
    for addition in additions {
        let sku = sku_of(&addition).to_owned();
        without_sku(&mut assigned, &sku);
        assigned.push(addition);
    }
    tenant.set_user_licenses(i, assigned);
    context.mutated = true;
    let mut out = Map::new();
    out.insert(
        "@odata.context".into(),
        json!(format!("{METADATA}#users/$entity")),
    );
    out.extend(project_user(&tenant.users[i], None));
    Ok(GraphResponse::json(StatusCode::OK, Value::Object(out)))
}

/// `addLicenses` and `removeLicenses`, both required (empty arrays are fine).
fn license_changes(body: &Map<String, Value>) -> Result<(Vec<Value>, Vec<Value>), GraphError> {
    let list = |name: &str| body.get(name).and_then(Value::as_array).cloned();
    match (list("addLicenses"), list("removeLicenses")) {
        (Some(add), Some(remove)) => Ok((add, remove)),
        (add, _) => {
            let missing = if add.is_none() {
                "addLicenses"
            } else {
                "removeLicenses"
            };
            Err(GraphError::bad_request(format!(
                "Property {missing} value is required but is empty or missing."
            )))
        }
    }
}

/// One entry of `addLicenses` checked against the tenant's SKUs and seats, as it will be stored.
fn check_addition(
    tenant: &TenantState,
    assigned: &[Value],
    addition: &Value,
) -> Result<Value, GraphError> {
    let sku_id = sku_of(addition);
    let Some(sku) = tenant
        .skus
        .iter()
        .find(|s| s.sku_id.eq_ignore_ascii_case(sku_id))
    else {
        return Err(GraphError::bad_request(format!(
            "License {sku_id} does not correspond to a valid company License."
        )));
    };
    let disabled: Vec<String> = addition
        .get("disabledPlans")
        .and_then(Value::as_array)
        .map(|d| {
            d.iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    check_disabled_plans(sku, &disabled)?;
    let already = assigned.iter().any(|a| has_sku(a, &sku.sku_id));
    if !already && tenant.consumed_units(&sku.sku_id) >= sku.enabled {
        return Err(GraphError::bad_request(format!(
            "Subscription with SKU {} does not have any available licenses.",
            sku.sku_id
        )));
    }
    Ok(json!({"disabledPlans": disabled, "skuId": sku.sku_id}))
}

fn check_disabled_plans(sku: &SkuSeed, disabled: &[String]) -> Result<(), GraphError> {
    for plan in disabled {
        if !sku
            .service_plans
            .iter()
            .any(|p| p.service_plan_id.eq_ignore_ascii_case(plan))
        {
            return Err(GraphError::bad_request(format!(
                "Service plan {plan} is not part of the SKU {}.",
                sku.sku_id
            )));
        }
    }
    Ok(())
}

/// The `skuId` of an assigned license (empty when missing).
fn sku_of(license: &Value) -> &str {
    license.get("skuId").and_then(Value::as_str).unwrap_or("")
}

fn has_sku(license: &Value, sku: &str) -> bool {
    license
        .get("skuId")
        .and_then(Value::as_str)
        .is_some_and(|s| s.eq_ignore_ascii_case(sku))
}

fn without_sku(assigned: &mut Vec<Value>, sku: &str) {
    assigned.retain(|a| !has_sku(a, sku));
}
