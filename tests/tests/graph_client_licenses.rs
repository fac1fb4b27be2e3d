//! Licenses (subscribedSkus, assignLicense, licenseDetails, seat and usageLocation errors),
//! manager (get/none, set, remove), organization and domains.

use m365_graph::{AssignedLicense, ErrorKind, GraphError};
use m365_integration_tests::graph_client::*;
use m365_sandbox::demo;
use serde_json::json;

#[tokio::test]
async fn subscribed_skus_report_seats() {
    let sb = start_demo().await;
    let c = client(&sb);
    let skus = c.subscribed_skus().await.unwrap();
    let e3 = skus.iter().find(|s| s.sku_id == demo::SKU_E3).unwrap();
    assert_eq!(e3.sku_part_number.as_deref(), Some("ENTERPRISEPACK"));
    assert_eq!(e3.prepaid_units.enabled, 25);
    assert!(
        e3.service_plans
            .iter()
            .any(|p| p.service_plan_id == demo::E3_PLAN_EXCHANGE)
    );
    let full = skus.iter().find(|s| s.sku_id == demo::SKU_FULL).unwrap();
    assert_eq!(full.available_units(), 0, "the admin holds the only seat");
}

#[tokio::test]
async fn assign_and_remove_licenses_with_disabled_plans() {
    let sb = start_demo().await;
    let c = client(&sb);
    let u = c.create_user(&new_user("lic")).await.unwrap();
    let add = [AssignedLicense {
        sku_id: demo::SKU_E3.into(),
        disabled_plans: vec![demo::E3_PLAN_EXCHANGE.into()],
    }];
    let returned = c.assign_license(&u.id, &add, &[]).await.unwrap();
    assert_eq!(returned.id, u.id);
    let stored = user_by_id(&sb, &u.id).unwrap();
    assert_eq!(stored["assignedLicenses"][0]["skuId"], demo::SKU_E3);
    assert_eq!(
        stored["assignedLicenses"][0]["disabledPlans"],
        json!([demo::E3_PLAN_EXCHANGE])
    );
    let details = c.license_details(&u.id).await.unwrap();
    assert_eq!(details.len(), 1);
    assert_eq!(details[0].sku_id, demo::SKU_E3);

    // Swap E3 for E5 in one call (add + remove).
    let add = [AssignedLicense {
        sku_id: demo::SKU_E5.into(),
        disabled_plans: vec![],
    }];
    c.assign_license(&u.id, &add, &[demo::SKU_E3.to_string()])
        .await
        .unwrap();
    let skus: Vec<String> = c
        .license_details(&u.id)
        .await
        .unwrap()
        .into_iter()
        .map(|d| d.sku_id)
        .collect();
    assert_eq!(skus, vec![demo::SKU_E5.to_string()]);

    // Remove only: addLicenses is still sent (as []).
    c.assign_license(&u.id, &[], &[demo::SKU_E5.to_string()])
        .await
        .unwrap();
    assert!(c.license_details(&u.id).await.unwrap().is_empty());
}

#[tokio::test]
async fn no_free_seats_is_its_own_error() {
    let sb = start_demo().await;
    let c = client(&sb);
    let u = c.create_user(&new_user("noseat")).await.unwrap();
    let add = [AssignedLicense {
        sku_id: demo::SKU_FULL.into(),
        disabled_plans: vec![],
    }];
    let e = c.assign_license(&u.id, &add, &[]).await.unwrap_err();
    assert!(matches!(e, GraphError::NoLicenseSeats { .. }), "{e:?}");
    assert!(!e.is_retryable());
    assert!(
        user_by_id(&sb, &u.id).unwrap()["assignedLicenses"]
            .as_array()
            .is_none_or(|a| a.is_empty())
    );
}

#[tokio::test]
async fn missing_usage_location_is_its_own_error() {
    let sb = start_demo().await;
    let c = client(&sb);
    let mut nu = new_user("nowhere");
    nu.usage_location = None;
    let u = c.create_user(&nu).await.unwrap();
    let add = [AssignedLicense {
        sku_id: demo::SKU_E3.into(),
        disabled_plans: vec![],
    }];
    let e = c.assign_license(&u.id, &add, &[]).await.unwrap_err();
    assert!(
        matches!(e, GraphError::MissingUsageLocation { .. }),
        "{e:?}"
    );
    assert!(e.to_string().contains("usageLocation"));
}

#[tokio::test]
async fn manager_get_none_set_get_remove() {
    let sb = start_demo().await;
    let c = client(&sb);
    let u = c.create_user(&new_user("report")).await.unwrap();
    assert!(
        c.get_manager(&u.id).await.unwrap().is_none(),
        "no manager is None"
    );
    c.set_manager(&u.id, demo::BJENSEN_ID).await.unwrap();
    assert_eq!(user_by_id(&sb, &u.id).unwrap()["manager"], demo::BJENSEN_ID);
    let m = c.get_manager(&u.id).await.unwrap().unwrap();
    assert_eq!(m.id, demo::BJENSEN_ID);
    assert!(m.is_user());
    c.remove_manager(&u.id).await.unwrap();
    assert!(user_by_id(&sb, &u.id).unwrap().get("manager").is_none());
    // Removing again is fine.
    c.remove_manager(&u.id).await.unwrap();
    // A manager that does not exist: NotFound after the bounded replication retries.
    let e = c
        .set_manager(&u.id, "00000000-0000-0000-0000-00000000dead")
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound, "{e:?}");
}

#[tokio::test]
async fn replication_lag_on_references_is_retried() {
    let sb = start_demo().await;
    let mut knobs = sb.sandbox().knobs();
    knobs.replication_lag_ms = 400;
    sb.sandbox().set_knobs(knobs);
    let c = client(&sb);
    let boss = c.create_user(&new_user("boss")).await.unwrap();
    let worker = c.create_user(&new_user("worker")).await.unwrap();
    // Immediately: both are still invisible to references.
    c.set_manager(&worker.id, &boss.id).await.unwrap();
    let add = [AssignedLicense {
        sku_id: demo::SKU_E3.into(),
        disabled_plans: vec![],
    }];
    c.assign_license(&worker.id, &add, &[]).await.unwrap();
    assert!(c.stats().retries >= 1, "lag was hit and retried");
    let stored = user_by_id(&sb, &worker.id).unwrap();
    assert_eq!(stored["manager"], boss.id.as_str());
    assert_eq!(stored["assignedLicenses"][0]["skuId"], demo::SKU_E3);
}

#[tokio::test]
async fn organization_and_domains() {
    let sb = start_demo().await;
    let c = client(&sb);
    let org = c.organization().await.unwrap();
    assert_eq!(org[0].id, demo::TENANT_ID);
    assert!(
        org[0]
            .verified_domains
            .iter()
            .any(|d| d.name == demo::VERIFIED_DOMAIN)
    );
    let domains = c.domains().await.unwrap();
    let fed = domains
        .iter()
        .find(|d| d.id == demo::FEDERATED_DOMAIN)
        .unwrap();
    assert!(fed.is_federated());
    assert!(fed.is_verified);
    let unv = domains
        .iter()
        .find(|d| d.id == demo::UNVERIFIED_DOMAIN)
        .unwrap();
    assert!(!unv.is_verified);
    let verified = c.verified_domains().await.unwrap();
    assert!(verified.iter().all(|d| d.is_verified));
    assert!(verified.iter().any(|d| d.id == demo::VERIFIED_DOMAIN));
    assert!(!verified.iter().any(|d| d.id == demo::UNVERIFIED_DOMAIN));
}
