//! `/organization` and `/domains`.

use http::StatusCode;
use serde_json::{Value, json};

use super::request::{Permission, RequestContext};
use crate::tenant::TenantState;
use crate::wire::{GraphResponse, GraphResult, METADATA};

pub(super) fn get(tenant: &TenantState, context: &RequestContext<'_>) -> GraphResult {
    context.need(Permission::OrgRead)?;
    let verified: Vec<Value> = tenant
        .domains
        .iter()
        .filter(|d| d.is_verified)
        .map(|d| {
            json!({
                "capabilities": "Email, OfficeCommunicationsOnline",
                "isDefault": d.is_default,
                "isInitial": d.is_initial,
                "name": d.id,
                "type": d.authentication_type,
            })
        })
        .collect();
    Ok(GraphResponse::json(
        StatusCode::OK,
        json!({
            "@odata.context": format!("{METADATA}#organization"),
            "value": [{
                "id": tenant.tenant_id,
                "displayName": tenant.display_name,
                "createdDateTime": tenant.created_date_time,
                "countryLetterCode": "US",
                "preferredLanguage": "en",
                "tenantType": "AAD",
                "businessPhones": [],
                "technicalNotificationMails": [],
                "assignedPlans": [],
                "provisionedPlans": [],
                "verifiedDomains": verified,
                "onPremisesSyncEnabled": null,
            }]
        }),
    ))
}

pub(super) fn list_domains(tenant: &TenantState, context: &RequestContext<'_>) -> GraphResult {
    context.need(Permission::OrgRead)?;
    let value: Vec<Value> = tenant
        .domains
        .iter()
        .map(|d| {
            json!({
                "id": d.id,
                "authenticationType": d.authentication_type,
                "availabilityStatus": null,
                "isAdminManaged": true,
                "isDefault": d.is_default,
                "isInitial": d.is_initial,
                "isRoot": true,
                "isVerified": d.is_verified,
                "supportedServices": if d.is_verified { json!(["Email", "OfficeCommunicationsOnline"]) } else { json!([]) },
                "passwordValidityPeriodInDays": 2147483647,
                "passwordNotificationWindowInDays": 14,
                "state": null,
            })
        })
        .collect();
    Ok(GraphResponse::json(
        StatusCode::OK,
        json!({ "@odata.context": format!("{METADATA}#domains"), "value": value }),
    ))
}
