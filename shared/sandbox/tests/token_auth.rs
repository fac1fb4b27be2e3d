// Integration tests: helpers panic on broken expectations.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use m365_sandbox::{Knobs, Sandbox, demo};
use reqwest::Method;
use serde_json::Value;

async fn token_call(base: &str, tenant: &str, form: &[(&str, &str)]) -> (u16, Value) {
    let r = client()
        .post(format!("{base}/{tenant}/oauth2/v2.0/token"))
        .form(form)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

fn form<'a>(id: &'a str, secret: &'a str, scope: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("client_id", id),
        ("client_secret", secret),
        ("scope", scope),
        ("grant_type", "client_credentials"),
    ]
}

const SCOPE: &str = "https://graph.microsoft.com/.default";

fn assert_aad(status: u16, body: &Value, want_status: u16, error: &str, code: u64) {
    assert_eq!(status, want_status, "{body}");
    assert_eq!(body["error"], error, "{body}");
    assert_eq!(body["error_codes"][0], code, "{body}");
    let desc = body["error_description"].as_str().unwrap();
    assert!(desc.starts_with(&format!("AADSTS{code}: ")), "{desc}");
    assert!(desc.contains("\r\nTrace ID: "), "{desc}");
    assert!(body["trace_id"].is_string() && body["correlation_id"].is_string());
    assert!(body["timestamp"].is_string());
    assert_eq!(
        body["error_uri"],
        format!("https://login.microsoftonline.com/error?code={code}")
    );
}

#[tokio::test]
async fn token_success_and_every_aadsts_error() {
    let rs = Sandbox::demo().start().await.unwrap();
    let base = rs.base_url();
    // Success by GUID and by domain name; HTTP Basic works too.
    let (s, b) = token_call(
        base,
        demo::TENANT_ID,
        &form(demo::CLIENT_ID, demo::CLIENT_SECRET, SCOPE),
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(b["token_type"], "Bearer");
    assert_eq!(b["expires_in"], 3599);
    assert!(b["ext_expires_in"].is_number());
    assert_eq!(b["access_token"].as_str().unwrap().split('.').count(), 3);
    let (s, _) = token_call(
        base,
        demo::INITIAL_DOMAIN,
        &form(demo::CLIENT_ID, demo::CLIENT_SECRET, SCOPE),
    )
    .await;
    assert_eq!(s, 200);
    let r = client()
        .post(format!(
            "{base}/{}/oauth2/v2.0/token",
            demo::VERIFIED_DOMAIN
        ))
        .basic_auth(demo::CLIENT_ID, Some(demo::CLIENT_SECRET))
        .form(&[("scope", SCOPE), ("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    let (s, b) = token_call(
        base,
        demo::TENANT_ID,
        &form(demo::CLIENT_ID, "wrong", SCOPE),
    )
    .await;
    assert_aad(s, &b, 401, "invalid_client", 7000215);
    let (s, b) = token_call(
        base,
        demo::TENANT_ID,
        &form(demo::EXPIRED_CLIENT_ID, demo::EXPIRED_CLIENT_SECRET, SCOPE),
    )
    .await;
    assert_aad(s, &b, 401, "invalid_client", 7000222);
    let (s, b) = token_call(
        base,
        demo::TENANT_ID,
        &form("00000000-1111-2222-3333-444444444444", "x", SCOPE),
    )
    .await;
    assert_aad(s, &b, 400, "unauthorized_client", 700016);
    let (s, b) = token_call(
        base,
        "11111111-2222-3333-4444-555555555555",
        &form(demo::CLIENT_ID, demo::CLIENT_SECRET, SCOPE),
    )
    .await;
    assert_aad(s, &b, 400, "invalid_request", 90002);
    let (s, b) = token_call(
        base,
        "not a tenant!",
        &form(demo::CLIENT_ID, demo::CLIENT_SECRET, SCOPE),
    )
    .await;
    assert_aad(s, &b, 400, "invalid_request", 900023);
    let (s, b) = token_call(
        base,
        demo::TENANT_ID,
        &form(
            demo::CLIENT_ID,
            demo::CLIENT_SECRET,
            "https://graph.microsoft.com/User.Read.All",
        ),
    )
    .await;
    assert_aad(s, &b, 400, "invalid_scope", 1002012);
    let (s, b) = token_call(
        base,
        demo::TENANT_ID,
        &form(demo::CLIENT_ID, demo::CLIENT_SECRET, "User.Read.All"),
    )
    .await;
    assert_aad(s, &b, 400, "invalid_scope", 70011);
    let (s, b) = token_call(
        base,
        demo::TENANT_ID,
        &form(
            demo::CLIENT_ID,
            demo::CLIENT_SECRET,
            "https://graph.microsoft.us/.default",
        ),
    )
    .await;
    assert_aad(s, &b, 400, "invalid_resource", 500011);
    let (s, b) = token_call(
        base,
        demo::TENANT_ID,
        &[
            ("client_id", demo::CLIENT_ID),
            ("client_secret", demo::CLIENT_SECRET),
            ("scope", SCOPE),
            ("grant_type", "password"),
        ],
    )
    .await;
    assert_eq!(s, 400);
    assert_eq!(b["error"], "unsupported_grant_type");
}

#[tokio::test]
async fn missing_malformed_foreign_and_expired_tokens_are_401() {
    let t = start().await;
    let r = t.call_with(Method::GET, "/users", None, "").await;
    assert_error(
        &r,
        401,
        "InvalidAuthenticationToken",
        "Access token is empty.",
    );
    let r = t.call_with(Method::GET, "/users", None, "garbage").await;
    assert_eq!(r.status, 401);
    assert_eq!(r.body["error"]["code"], "InvalidAuthenticationToken");
    // A token from another sandbox (other signing key).
    let other = Sandbox::demo().start().await.unwrap();
    let foreign = token_for(
        &t.http,
        other.base_url(),
        demo::CLIENT_ID,
        demo::CLIENT_SECRET,
    )
    .await;
    let r = t.call_with(Method::GET, "/users", None, &foreign).await;
    assert_error(
        &r,
        401,
        "InvalidAuthenticationToken",
        "Access token validation failure.",
    );
    // Expired: lifetime 1 s.
    t.rs.sandbox().set_knobs(Knobs {
        token_lifetime_secs: 1,
        ..t.rs.sandbox().knobs()
    });
    let short = token_for(
        &t.http,
        t.rs.base_url(),
        demo::CLIENT_ID,
        demo::CLIENT_SECRET,
    )
    .await;
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    let r = t.call_with(Method::GET, "/users", None, &short).await;
    assert_error(
        &r,
        401,
        "InvalidAuthenticationToken",
        "Lifetime validation failed, the token is expired.",
    );
}

#[tokio::test]
async fn readonly_app_cannot_write() {
    let t = start().await;
    let ro = token_for(
        &t.http,
        t.rs.base_url(),
        demo::READONLY_CLIENT_ID,
        demo::READONLY_CLIENT_SECRET,
    )
    .await;
    let r = t.call_with(Method::GET, "/users", None, &ro).await;
    assert_eq!(r.status, 200);
    let r = t
        .call_with(Method::POST, "/users", Some(user_body("rouser")), &ro)
        .await;
    assert_error(
        &r,
        403,
        "Authorization_RequestDenied",
        "Insufficient privileges to complete the operation.",
    );
    let r = t.call_with(Method::GET, "/groups", None, &ro).await;
    assert_error(
        &r,
        403,
        "Authorization_RequestDenied",
        "Insufficient privileges to complete the operation.",
    );
    assert!(
        t.rs.sandbox()
            .users()
            .iter()
            .all(|u| u["mailNickname"] != "rouser")
    );
}

#[tokio::test]
async fn organization_domains_and_headers() {
    let t = start().await;
    let r = t
        .http
        .get(t.url("/organization"))
        .bearer_auth(&t.token)
        .header("client-request-id", "my-id-1")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["client-request-id"], "my-id-1");
    assert!(r.headers().contains_key("request-id"));
    assert!(r.headers().contains_key("x-ms-resource-unit"));
    let v: Value = r.json().await.unwrap();
    assert_eq!(
        v["@odata.context"],
        "https://graph.microsoft.com/v1.0/$metadata#organization"
    );
    assert_eq!(v["value"][0]["id"], demo::TENANT_ID);
    let names: Vec<&str> = v["value"][0]["verifiedDomains"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["name"].as_str().unwrap())
        .collect();
    assert!(names.contains(&demo::FEDERATED_DOMAIN));
    assert!(!names.contains(&demo::UNVERIFIED_DOMAIN));
    let d = t.get("/domains").await;
    let fed = d.body["value"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["id"] == demo::FEDERATED_DOMAIN)
        .unwrap();
    assert_eq!(fed["authenticationType"], "Federated");
}
