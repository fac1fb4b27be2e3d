//! `m365-provisioner sandbox` as a user runs it: the real binary on an ephemeral port, spoken to
//! over HTTP exactly as the README's curl examples do.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a broken expectation should fail loudly"
)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use m365_sandbox::demo;
use serde_json::{Value, json};

/// The running binary; killed by PID when the test ends, pass or fail.
struct SandboxProcess {
    child: Child,
    base_url: String,
}

impl Drop for SandboxProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(extra: &[&str]) -> SandboxProcess {
    let mut child = Command::new(env!("CARGO_BIN_EXE_m365-provisioner"))
        .args(["sandbox", "--port", "0"])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("the m365-provisioner binary runs");
    let stdout = child.stdout.take().expect("stdout is piped");
    let mut first = String::new();
    BufReader::new(stdout)
        .read_line(&mut first)
        .expect("the sandbox prints its URL");
    let base_url = first
        .trim()
        .strip_prefix("sandbox tenant listening on ")
        .unwrap_or_else(|| panic!("unexpected first line: {first:?}"))
        .to_owned();
    assert!(base_url.starts_with("http://127.0.0.1:"), "{base_url}");
    SandboxProcess { child, base_url }
}

/// Every request of these tests gives up after 30 s rather than hanging the suite.
fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(30))
        .build()
        .unwrap()
}

async fn token(http: &reqwest::Client, base: &str) -> String {
    let response = http
        .post(format!("{base}/{}/oauth2/v2.0/token", demo::INITIAL_DOMAIN))
        .form(&[
            ("grant_type", "client_credentials"),
            ("scope", "https://graph.microsoft.com/.default"),
            ("client_id", demo::CLIENT_ID),
            ("client_secret", demo::CLIENT_SECRET),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["token_type"], "Bearer");
    assert!(body["expires_in"].as_u64().unwrap() > 3000);
    body["access_token"].as_str().unwrap().to_owned()
}

fn new_user(upn: &str) -> Value {
    json!({
        "accountEnabled": true,
        "displayName": "Adele Vance",
        "mailNickname": upn.split('@').next().unwrap(),
        "userPrincipalName": upn,
        "passwordProfile": {"forceChangePasswordNextSignIn": true, "password": "xWwvJ]6NMw+bWH-d"}
    })
}

#[tokio::test]
async fn sandbox_command_answers_as_graph_does() {
    let sandbox = start(&[]);
    let base = sandbox.base_url.as_str();
    let http = http_client();
    let token = token(&http, base).await;
    let users = format!("{base}/v1.0/users");

    // Without mailNickname: 400 Request_BadRequest.
    let mut body = new_user(&format!("adelev@{}", demo::VERIFIED_DOMAIN));
    body.as_object_mut().unwrap().remove("mailNickname");
    let response = http
        .post(&users)
        .bearer_auth(&token)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let error: Value = response.json().await.unwrap();
    assert_eq!(error["error"]["code"], "Request_BadRequest");
    assert!(error["error"]["innerError"]["request-id"].is_string());
    assert!(error["error"]["innerError"]["date"].is_string());

    // A user, then a second one with the same UPN: 400 with ObjectConflict on userPrincipalName.
    let upn = format!("adelev@{}", demo::VERIFIED_DOMAIN);
    let response = http
        .post(&users)
        .bearer_auth(&token)
        .json(&new_user(&upn))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let response = http
        .post(&users)
        .bearer_auth(&token)
        .json(&new_user(&upn))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let error: Value = response.json().await.unwrap();
    assert_eq!(error["error"]["code"], "Request_BadRequest");
    assert_eq!(error["error"]["details"][0]["code"], "ObjectConflict");
    assert_eq!(error["error"]["details"][0]["target"], "userPrincipalName");

    // An unknown property: 400, and nothing created.
    let mut body = new_user(&format!("unknownprop@{}", demo::VERIFIED_DOMAIN));
    body["favouriteColour"] = json!("green");
    let response = http
        .post(&users)
        .bearer_auth(&token)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let error: Value = response.json().await.unwrap();
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .contains("favouriteColour"),
        "{error}"
    );
    let found: Value = http
        .get(&users)
        .bearer_auth(&token)
        .query(&[(
            "$filter",
            format!(
                "userPrincipalName eq 'unknownprop@{}'",
                demo::VERIFIED_DOMAIN
            ),
        )])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(found["value"].as_array().unwrap().len(), 0);

    // $batch with 21 requests: the whole batch is refused with 400.
    let requests: Vec<Value> = (1..=21)
        .map(|i| json!({"id": i.to_string(), "method": "GET", "url": "/organization"}))
        .collect();
    let response = http
        .post(format!("{base}/v1.0/$batch"))
        .bearer_auth(&token)
        .json(&json!({ "requests": requests }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
}

#[tokio::test]
async fn writes_beyond_the_configured_quota_get_429_with_retry_after() {
    let sandbox = start(&[]);
    let base = sandbox.base_url.as_str();
    let http = http_client();
    let token = token(&http, base).await;

    // Shrink the write quota through the admin API, as an operator would with curl.
    let mut knobs: Value = http
        .get(format!("{base}/_sandbox/knobs"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    knobs["throttle"]["app_tenant_write_quota"] = json!(3);
    let response = http
        .put(format!("{base}/_sandbox/knobs"))
        .json(&knobs)
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success(), "{}", response.status());

    let mut statuses = Vec::new();
    let mut retry_after = None;
    for i in 0..5 {
        let upn = format!("quota{i}@{}", demo::VERIFIED_DOMAIN);
        let response = http
            .post(format!("{base}/v1.0/users"))
            .bearer_auth(&token)
            .json(&new_user(&upn))
            .send()
            .await
            .unwrap();
        statuses.push(response.status().as_u16());
        if response.status() == 429 {
            retry_after = response
                .headers()
                .get("retry-after")
                .map(|v| v.to_str().unwrap().parse::<f64>().unwrap());
            assert!(response.headers().contains_key("x-ms-throttle-scope"));
            let error: Value = response.json().await.unwrap();
            assert_eq!(error["error"]["code"], "TooManyRequests");
        }
    }
    assert_eq!(statuses, [201, 201, 201, 429, 429]);
    assert!(retry_after.unwrap() > 0.0);
}

#[tokio::test]
async fn state_file_keeps_the_tenant_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("tenant.json");
    let state_arg = state.to_str().unwrap();
    let upn = format!("persisted@{}", demo::VERIFIED_DOMAIN);
    {
        let sandbox = start(&["--state", state_arg]);
        let http = http_client();
        let token = token(&http, &sandbox.base_url).await;
        let response = http
            .post(format!("{}/v1.0/users", sandbox.base_url))
            .bearer_auth(&token)
            .json(&new_user(&upn))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201);
    }
    assert!(state.exists());
    let sandbox = start(&["--state", state_arg]);
    let http = http_client();
    let token = token(&http, &sandbox.base_url).await;
    let response = http
        .get(format!("{}/v1.0/users/{upn}", sandbox.base_url))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let user: Value = response.json().await.unwrap();
    assert_eq!(user["userPrincipalName"], upn.as_str());
}

#[test]
fn a_bad_config_file_is_a_configuration_error_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("sandbox.json");
    std::fs::write(&config, "{ not json").unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_m365-provisioner"))
        .args([
            "sandbox",
            "--port",
            "0",
            "--config",
            config.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("sandbox.json"), "{stderr}");
}

#[test]
fn the_banner_names_the_configured_tenant_and_app() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("sandbox.json");
    std::fs::write(
        &config,
        json!({
            "seed": {
                "tenantId": "0a1b2c3d-0000-4000-8000-00000000f00d",
                "displayName": "Fabrikam (sandbox)",
                "domains": [{"id": "fabrikam.onmicrosoft.com", "isInitial": true, "isDefault": true}],
                "apps": [{
                    "clientId": "77777777-7777-4777-8777-777777777777",
                    "clientSecret": "fabrikam-own-secret",
                    "roles": ["User.ReadWrite.All"]
                }]
            }
        })
        .to_string(),
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_m365-provisioner"))
        .args([
            "sandbox",
            "--port",
            "0",
            "--config",
            config.to_str().unwrap(),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("the m365-provisioner binary runs");
    let stdout = child.stdout.take().expect("stdout is piped");
    let mut banner = Vec::new();
    for line in BufReader::new(stdout).lines() {
        let line = line.unwrap();
        let done = line.starts_with("press Ctrl-C");
        banner.push(line);
        if done {
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    let text = banner.join("\n");
    assert!(
        text.contains(
            "tenant       0a1b2c3d-0000-4000-8000-00000000f00d (fabrikam.onmicrosoft.com)"
        ),
        "{text}"
    );
    assert!(
        text.contains("client id    77777777-7777-4777-8777-777777777777"),
        "{text}"
    );
    assert!(
        text.contains("/0a1b2c3d-0000-4000-8000-00000000f00d/oauth2/v2.0/token"),
        "{text}"
    );
    for demo_value in [demo::TENANT_ID, demo::CLIENT_ID, demo::CLIENT_SECRET] {
        assert!(!text.contains(demo_value), "{demo_value} in:\n{text}");
    }
    assert!(!text.contains("fabrikam-own-secret"), "{text}");
}
