// Test support: helpers panic on broken expectations like the tests that call them.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use m365_sandbox::{RunningSandbox, Sandbox, SandboxConfig, demo};
use reqwest::Method;
use serde_json::{Value, json};

pub struct T {
    pub rs: RunningSandbox,
    pub http: reqwest::Client,
    pub token: String,
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

pub async fn token_for(http: &reqwest::Client, base: &str, id: &str, secret: &str) -> String {
    let r = http
        .post(format!("{base}/{}/oauth2/v2.0/token", demo::TENANT_ID))
        .form(&[
            ("client_id", id),
            ("client_secret", secret),
            ("scope", "https://graph.microsoft.com/.default"),
            ("grant_type", "client_credentials"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    v["access_token"].as_str().unwrap().to_owned()
}

pub async fn start_with(config: SandboxConfig) -> T {
    let rs = Sandbox::new(config).start().await.unwrap();
    let http = client();
    let token = token_for(&http, rs.base_url(), demo::CLIENT_ID, demo::CLIENT_SECRET).await;
    T { rs, http, token }
}

pub async fn start() -> T {
    start_with(SandboxConfig::demo()).await
}

pub struct Resp {
    pub status: u16,
    pub body: Value,
    pub headers: reqwest::header::HeaderMap,
}

impl T {
    pub fn url(&self, path: &str) -> String {
        format!("{}/v1.0{path}", self.rs.base_url())
    }

    pub async fn call_with(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
        token: &str,
    ) -> Resp {
        self.send(method, path, body, token, &[]).await
    }

    /// A GET with extra request headers; `path` may be a full URL (a nextLink).
    pub async fn get_with_headers(&self, path: &str, headers: &[(&str, &str)]) -> Resp {
        let token = self.token.clone();
        self.send(Method::GET, path, None, &token, headers).await
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
        token: &str,
        headers: &[(&str, &str)],
    ) -> Resp {
        let url = if path.starts_with("http") {
            path.to_owned()
        } else {
            self.url(path)
        };
        let mut req = self.http.request(method, url).bearer_auth(token);
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let r = req.send().await.unwrap();
        let status = r.status().as_u16();
        let headers = r.headers().clone();
        let text = r.text().await.unwrap();
        let body = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap()
        };
        Resp {
            status,
            body,
            headers,
        }
    }

    pub async fn call(&self, method: Method, path: &str, body: Option<Value>) -> Resp {
        let token = self.token.clone();
        self.call_with(method, path, body, &token).await
    }

    pub async fn get(&self, path: &str) -> Resp {
        self.call(Method::GET, path, None).await
    }
    pub async fn post(&self, path: &str, body: Value) -> Resp {
        self.call(Method::POST, path, Some(body)).await
    }
    pub async fn patch(&self, path: &str, body: Value) -> Resp {
        self.call(Method::PATCH, path, Some(body)).await
    }
    pub async fn delete(&self, path: &str) -> Resp {
        self.call(Method::DELETE, path, None).await
    }
    pub async fn put(&self, path: &str, body: Value) -> Resp {
        self.call(Method::PUT, path, Some(body)).await
    }

    /// Creates a valid user; returns its id.
    pub async fn create_user(&self, nick: &str, extra: Value) -> String {
        let mut body = user_body(nick);
        if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
            for (k, v) in e {
                b.insert(k.clone(), v.clone());
            }
        }
        let r = self.post("/users", body).await;
        assert_eq!(r.status, 201, "{}", r.body);
        r.body["id"].as_str().unwrap().to_owned()
    }
}

pub fn user_body(nick: &str) -> Value {
    json!({
        "accountEnabled": true,
        "displayName": format!("User {nick}"),
        "mailNickname": nick,
        "userPrincipalName": format!("{nick}@{}", demo::VERIFIED_DOMAIN),
        "passwordProfile": {"forceChangePasswordNextSignIn": true, "password": "xWwvJ]6NMw+bWH-d"}
    })
}

pub fn assert_error(r: &Resp, status: u16, code: &str, message: &str) {
    assert_eq!(r.status, status, "body: {}", r.body);
    assert_eq!(r.body["error"]["code"], code, "body: {}", r.body);
    assert_eq!(r.body["error"]["message"], message, "body: {}", r.body);
    let inner = &r.body["error"]["innerError"];
    assert!(inner["date"].is_string(), "innerError.date: {}", r.body);
    assert_eq!(
        inner["request-id"].as_str().unwrap(),
        r.headers["request-id"].to_str().unwrap()
    );
}
