// Integration tests: helpers panic on broken expectations.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use m365_sandbox::demo;
use serde_json::json;

#[tokio::test]
async fn create_user_ok_and_required_and_duplicate() {
    let t = start().await;
    let r = t.post("/users", user_body("adele")).await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(
        r.body["@odata.context"],
        "https://graph.microsoft.com/v1.0/$metadata#users/$entity"
    );
    assert_eq!(r.body["userPrincipalName"], "adele@example.com");
    assert!(r.body.get("passwordProfile").is_none());
    let id = r.body["id"].as_str().unwrap().to_owned();
    let got = t.get(&format!("/users/{id}")).await;
    assert_eq!(got.status, 200);
    let by_upn = t.get("/users/adele%40example.com").await;
    assert_eq!(by_upn.body["id"], id.as_str());

    let mut body = user_body("nonick");
    body.as_object_mut().unwrap().remove("mailNickname");
    let r = t.post("/users", body).await;
    assert_error(
        &r,
        400,
        "Request_BadRequest",
        "Property mailNickname value is required but is empty or missing.",
    );

    let mut dup = user_body("adele2");
    dup["userPrincipalName"] = json!("ADELE@example.com");
    let r = t.post("/users", dup).await;
    assert_error(
        &r,
        400,
        "Request_BadRequest",
        "Another object with the same value for property userPrincipalName already exists.",
    );
    assert_eq!(r.body["error"]["details"][0]["code"], "ObjectConflict");
    assert_eq!(r.body["error"]["details"][0]["target"], "userPrincipalName");
}

#[tokio::test]
async fn create_user_rejects_what_graph_rejects() {
    let t = start().await;
    let mut body = user_body("unknownprop");
    body["favouriteColour"] = json!("blue");
    let r = t.post("/users", body).await;
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(
        r.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("favouriteColour"),
        "{}",
        r.body
    );

    let mut body = user_body("unv");
    body["userPrincipalName"] = json!(format!("unv@{}", demo::UNVERIFIED_DOMAIN));
    let r = t.post("/users", body).await;
    assert_error(
        &r,
        400,
        "Request_BadRequest",
        "The domain portion of the userPrincipalName property is invalid. You must use one of the verified domain names in your organization.",
    );

    let mut body = user_body("fed");
    body["userPrincipalName"] = json!(format!("fed@{}", demo::FEDERATED_DOMAIN));
    let r = t.post("/users", body.clone()).await;
    assert_error(
        &r,
        400,
        "Request_BadRequest",
        "Property onPremisesImmutableId value is required but is empty or missing.",
    );
    body["onPremisesImmutableId"] = json!("abc_def");
    let r = t.post("/users", body.clone()).await;
    assert_error(
        &r,
        400,
        "Request_BadRequest",
        "Invalid value specified for property 'onPremisesImmutableId' of resource 'User'.",
    );
    body["onPremisesImmutableId"] = json!("dGVzdA==");
    assert_eq!(t.post("/users", body).await.status, 201);

    let mut body = user_body("weak");
    body["passwordProfile"]["password"] = json!("password");
    let r = t.post("/users", body).await;
    assert_error(
        &r,
        400,
        "Request_BadRequest",
        "The specified password does not comply with password complexity requirements. Please provide a different password.",
    );

    let mut body = user_body("dot");
    body["userPrincipalName"] = json!("dot.@example.com");
    let r = t.post("/users", body).await;
    assert_error(
        &r,
        400,
        "Request_BadRequest",
        "Property userPrincipalName is invalid.",
    );

    let mut body = user_body("bad nick");
    body["userPrincipalName"] = json!("badnick@example.com");
    let r = t.post("/users", body).await;
    assert_error(
        &r,
        400,
        "Request_BadRequest",
        "Invalid value specified for property 'mailNickname' of resource 'User'.",
    );

    let mut body = user_body("loc");
    body["usageLocation"] = json!("XX");
    let r = t.post("/users", body).await;
    assert_error(
        &r,
        400,
        "Request_BadRequest",
        "Invalid value specified for property 'usageLocation' of resource 'User'.",
    );
}

#[tokio::test]
async fn patch_cannot_clear_display_name() {
    let t = start().await;
    let path = format!("/users/{}", demo::BJENSEN_ID);
    for v in [json!(null), json!("")] {
        let r = t.patch(&path, json!({"displayName": v})).await;
        assert_error(
            &r,
            400,
            "Request_BadRequest",
            "Invalid value specified for property 'displayName' of resource 'User'.",
        );
    }
    let r = t
        .patch(&path, json!({"jobTitle": "Controller", "department": null}))
        .await;
    assert_eq!(r.status, 204);
    let u =
        t.rs.sandbox()
            .users()
            .into_iter()
            .find(|u| u["id"] == demo::BJENSEN_ID)
            .unwrap();
    assert_eq!(u["jobTitle"], "Controller");
    assert!(u.get("department").is_none());
    assert_eq!(u["displayName"], "Barbara Jensen");
}

#[tokio::test]
async fn filters_select_and_top() {
    let t = start().await;
    t.create_user("obrien", json!({"displayName": "Pat O'Brien"}))
        .await;
    let r = t
        .get("/users?$filter=displayName%20eq%20'Pat%20O''Brien'&$select=id,displayName")
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        r.body["@odata.context"],
        "https://graph.microsoft.com/v1.0/$metadata#users(id,displayName)"
    );
    assert_eq!(r.body["value"].as_array().unwrap().len(), 1);
    assert_eq!(r.body["value"][0]["displayName"], "Pat O'Brien");
    assert!(r.body["value"][0].get("userPrincipalName").is_none());

    let r = t
        .get("/users?$filter=startsWith(userPrincipalName,'bjen')")
        .await;
    assert_eq!(r.body["value"][0]["id"], demo::BJENSEN_ID);

    let list: Vec<String> = (0..16).map(|i| format!("'u{i}@example.com'")).collect();
    let r = t
        .get(&format!(
            "/users?$filter=userPrincipalName in ({})",
            list.join(",")
        ))
        .await;
    assert_error(
        &r,
        400,
        "Request_UnsupportedQuery",
        "Too many child clauses specified in search filter expression containing 'OR' operators: 16. Max allowed: 15.",
    );
    let r = t
        .get(&format!(
            "/users?$filter=userPrincipalName in ({})",
            list[..15].join(",")
        ))
        .await;
    assert_eq!(r.status, 200);

    let r = t.get("/users?$filter=displayName ne 'x'").await;
    assert_error(
        &r,
        400,
        "Request_UnsupportedQuery",
        "Operator 'ne' is not supported because the required parameters might be missing. Try adding $count=true query parameter and ConsistencyLevel:eventual header. Refer to https://aka.ms/graph-docs/advanced-queries for more information",
    );
    let r = t.get("/users?$filter=endsWith(mail,'example.com')").await;
    assert_eq!(r.status, 400);
    assert_eq!(r.body["error"]["code"], "Request_UnsupportedQuery");
    let r = t.get("/users?$filter=officeLocation eq 'x'").await;
    assert_error(
        &r,
        400,
        "Request_UnsupportedQuery",
        "Unsupported or invalid query filter clause specified for property 'officeLocation' of resource 'User'.",
    );

    let r = t.get("/users?$top=1000").await;
    assert_error(
        &r,
        400,
        "Request_UnsupportedQuery",
        "Invalid page size specified: '1000'. Must be between 1 and 999 inclusive.",
    );
    let r = t.get("/users?$select=id,notAProperty").await;
    assert_eq!(r.status, 400);
    let r = t.get("/users/$count").await;
    assert_error(
        &r,
        400,
        "Request_BadRequest",
        "$count is not currently supported.",
    );

    let r = t
        .get(&format!(
            "/users?$filter=assignedLicenses/any(x:x/skuId eq {})&$select=id",
            demo::SKU_FULL
        ))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["value"].as_array().unwrap().len(), 1);
    assert_eq!(r.body["value"][0]["id"], demo::ADMIN_ID);
}

/// Filters on id or UPN are answered from the tenant's index: the answer must be the scan's —
/// a renamed user found by its new UPN only, any case, creation order, deleted users left out.
#[tokio::test]
async fn filters_on_id_or_upn_answer_as_a_scan_would() {
    let t = start().await;
    let domain = demo::VERIFIED_DOMAIN;
    let a = t.create_user("idx.a", json!({})).await;
    let b = t.create_user("idx.b", json!({})).await;
    let c = t.create_user("idx.c", json!({})).await;
    let r = t
        .patch(
            &format!("/users/{a}"),
            json!({"userPrincipalName": format!("idx.renamed@{domain}")}),
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.body);
    assert_eq!(t.delete(&format!("/users/{b}")).await.status, 204);
    let ids = |r: &Resp| -> Vec<String> {
        assert_eq!(r.status, 200, "{}", r.body);
        r.body["value"]
            .as_array()
            .unwrap()
            .iter()
            .map(|u| u["id"].as_str().unwrap().to_owned())
            .collect()
    };
    let r = t
        .get(&format!(
            "/users?$filter=userPrincipalName in ('IDX.C@{domain}','idx.a@{domain}','idx.b@{domain}','idx.renamed@{domain}')"
        ))
        .await;
    assert_eq!(ids(&r), vec![a.clone(), c.clone()]);
    let r = t
        .get(&format!(
            "/users?$filter=userPrincipalName eq 'idx.a@{domain}'"
        ))
        .await;
    assert!(ids(&r).is_empty());
    let r = t.get(&format!("/users?$filter=id in ('{c}','{b}')")).await;
    assert_eq!(ids(&r), vec![c.clone()]);
    let r = t
        .get(&format!(
            "/users?$filter=id eq '{}'",
            c.to_ascii_uppercase()
        ))
        .await;
    assert_eq!(ids(&r), vec![c]);
}

#[tokio::test]
async fn paging_over_250_users() {
    let t = start().await;
    for i in 0..250 {
        t.rs.sandbox().seed_user(json!({
            "displayName": format!("Bulk {i}"),
            "userPrincipalName": format!("bulk{i}@example.com"),
            "mailNickname": format!("bulk{i}"),
            "accountEnabled": true,
        }));
    }
    let mut url = "/users?$top=100&$select=id,userPrincipalName".to_owned();
    let mut seen = std::collections::HashSet::new();
    let mut pages = 0;
    loop {
        let r = t.get(&url).await;
        assert_eq!(r.status, 200, "{}", r.body);
        pages += 1;
        for u in r.body["value"].as_array().unwrap() {
            assert!(
                seen.insert(u["id"].as_str().unwrap().to_owned()),
                "duplicate"
            );
        }
        match r.body["@odata.nextLink"].as_str() {
            Some(next) => {
                assert!(next.starts_with(t.rs.base_url()), "{next}");
                assert!(next.contains("$skiptoken="), "{next}");
                url = next.to_owned();
            }
            None => break,
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(seen.len(), 252);
}

#[tokio::test]
async fn soft_delete_restore_and_admin_protection() {
    let t = start().await;
    let id = t.create_user("temp", json!({})).await;
    assert_eq!(t.delete(&format!("/users/{id}")).await.status, 204);
    let r = t.get(&format!("/users/{id}")).await;
    assert_error(
        &r,
        404,
        "Request_ResourceNotFound",
        &format!(
            "Resource '{id}' does not exist or one of its queried reference-property objects are not present."
        ),
    );
    let r = t.get("/directory/deletedItems/microsoft.graph.user").await;
    assert_eq!(r.body["value"][0]["id"], id.as_str());
    // A deleted user holds no UPN: a new user may take it, and the deleted one cannot come back
    // while the new one holds it.
    let r = t.post("/users", user_body("temp")).await;
    assert_eq!(r.status, 201, "{}", r.body);
    let newcomer = r.body["id"].as_str().unwrap().to_owned();
    let r = t
        .post(&format!("/directory/deletedItems/{id}/restore"), json!({}))
        .await;
    assert_eq!(r.status, 400, "{}", r.body);
    assert_eq!(r.body["error"]["details"][0]["target"], "userPrincipalName");
    assert_eq!(t.delete(&format!("/users/{newcomer}")).await.status, 204);
    let r = t
        .post(&format!("/directory/deletedItems/{id}/restore"), json!({}))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["@odata.type"], "#microsoft.graph.user");
    assert_eq!(t.get(&format!("/users/{id}")).await.status, 200);
    // Admins: app-only delete → 403.
    let r = t.delete(&format!("/users/{}", demo::ADMIN_UPN)).await;
    assert_error(
        &r,
        403,
        "Authorization_RequestDenied",
        "Insufficient privileges to complete the operation.",
    );
    // Hard delete.
    t.delete(&format!("/users/{id}")).await;
    assert_eq!(
        t.delete(&format!("/directory/deletedItems/{id}"))
            .await
            .status,
        204
    );
    assert_eq!(t.rs.sandbox().deleted_items().len(), 1, "the newcomer");
}

#[tokio::test]
async fn licenses() {
    let t = start().await;
    let nolo = t.create_user("nolo", json!({})).await;
    let r = t.post(&format!("/users/{nolo}/assignLicense"), json!({"addLicenses": [{"skuId": demo::SKU_E3, "disabledPlans": []}], "removeLicenses": []})).await;
    assert_error(
        &r,
        400,
        "Request_BadRequest",
        "License assignment cannot be done for user with invalid usage location.",
    );
    let u = t.create_user("lic", json!({"usageLocation": "GB"})).await;
    let path = format!("/users/{u}/assignLicense");
    let r = t.post(&path, json!({"addLicenses": [{"skuId": demo::SKU_FULL, "disabledPlans": []}], "removeLicenses": []})).await;
    assert_error(
        &r,
        400,
        "Request_BadRequest",
        &format!(
            "Subscription with SKU {} does not have any available licenses.",
            demo::SKU_FULL
        ),
    );
    let r = t.post(&path, json!({"addLicenses": [{"skuId": demo::SKU_E3, "disabledPlans": ["41781fb2-bc02-4b7c-bd55-b576c07bb09d"]}], "removeLicenses": []})).await;
    assert_eq!(r.status, 400);
    let r = t.post(&path, json!({"addLicenses": [{"skuId": "11111111-1111-1111-1111-111111111111", "disabledPlans": []}], "removeLicenses": []})).await;
    assert_eq!(r.status, 400);
    let r = t
        .post(
            &path,
            json!({"addLicenses": [{"skuId": demo::SKU_E3, "disabledPlans": []}]}),
        )
        .await;
    assert_eq!(r.status, 400);

    let before = t.get("/subscribedSkus").await;
    let consumed = |v: &serde_json::Value| {
        v["value"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["skuId"] == demo::SKU_E3)
            .unwrap()["consumedUnits"]
            .as_u64()
            .unwrap()
    };
    let c0 = consumed(&before.body);
    let r = t.post(&path, json!({"addLicenses": [{"skuId": demo::SKU_E3, "disabledPlans": [demo::E3_PLAN_EXCHANGE]}], "removeLicenses": []})).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["id"], u.as_str());
    let after = t.get("/subscribedSkus").await;
    assert_eq!(consumed(&after.body), c0 + 1);
    let d = t.get(&format!("/users/{u}/licenseDetails")).await;
    assert_eq!(d.body["value"][0]["skuPartNumber"], "ENTERPRISEPACK");
    let ex = d.body["value"][0]["servicePlans"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["servicePlanId"] == demo::E3_PLAN_EXCHANGE)
        .unwrap()
        .clone();
    assert_eq!(ex["provisioningStatus"], "Disabled");
    let sel = t.get(&format!("/users/{u}?$select=assignedLicenses")).await;
    assert_eq!(sel.body["assignedLicenses"][0]["skuId"], demo::SKU_E3);
    let r = t
        .post(
            &path,
            json!({"addLicenses": [], "removeLicenses": [demo::SKU_E3]}),
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(consumed(&t.get("/subscribedSkus").await.body), c0);
}

#[tokio::test]
async fn manager_get_set_remove() {
    let t = start().await;
    let u = t.create_user("report", json!({})).await;
    let r = t.get(&format!("/users/{u}/manager")).await;
    assert_error(
        &r,
        404,
        "Request_ResourceNotFound",
        "Resource 'manager' does not exist or one of its queried reference-property objects are not present.",
    );
    let r = t.put(&format!("/users/{u}/manager/$ref"), json!({"@odata.id": "https://graph.microsoft.com/v1.0/users/00000000-0000-0000-0000-000000000001"})).await;
    assert_eq!(r.status, 404);
    assert_eq!(r.body["error"]["code"], "Request_ResourceNotFound");
    let r = t.put(&format!("/users/{u}/manager/$ref"), json!({"@odata.id": format!("https://graph.microsoft.com/v1.0/users/{}", demo::BJENSEN_ID)})).await;
    assert_eq!(r.status, 204, "{}", r.body);
    let r = t.get(&format!("/users/{u}/manager")).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body["id"], demo::BJENSEN_ID);
    assert_eq!(r.body["@odata.type"], "#microsoft.graph.user");
    assert_eq!(
        t.delete(&format!("/users/{u}/manager/$ref")).await.status,
        204
    );
    assert_eq!(t.get(&format!("/users/{u}/manager")).await.status, 404);
}
