//! The deployed product in one test: moto (DynamoDB table, Secrets Manager secret, S3 bucket
//! holding the source file), a sandbox tenant, and a [`Deployment`] of the functions' runtime
//! on them, as a Lambda container would build it. Handlers are called directly with fixture
//! events.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a harness that cannot set up should fail the test loudly"
)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use aws_sdk_s3::primitives::ByteStream;
use m365_graph::SharedState;
use m365_runtime::context::{Deployment, Settings};
use m365_runtime::scheduled::{SyncError, SyncResponse};
use m365_sandbox::{RunningSandbox, Sandbox, SandboxConfig, demo};
use serde_json::{Value, json};

use crate::memory_ports::{MemoryConfigs, MemoryFiles, MemorySecretStores};
use crate::moto::Moto;
use m365_state_sqlite::SqliteStateStore;
use m365_wiring::ports::Ports;

pub const TABLE: &str = "m365-provisioner";
pub const BUCKET: &str = "identity-source";
pub const SOURCE_KEY: &str = "contoso/source.json";
pub const SECRET_ID: &str = "m365-provisioner/contoso";
pub const CONNECTION: &str = "contoso";
/// A Standard Webhooks secret (32 random bytes, base64).
pub const WEBHOOK_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw3fuKCNYM6H8=";

/// The examples' rule (the quick start's) as a cloud configuration. It names no host: the
/// deployment reaches the sandbox tenant through its `M365_LOCAL_TENANT_URL` setting.
pub fn quickstart_cloud_config() -> String {
    let example = std::fs::read_to_string(repo_root().join("examples/m365-provisioner.toml"))
        .expect("examples/m365-provisioner.toml");
    let rule_at = example.find("[rule]").expect("the example has a [rule]");
    format!(
        "[connection]\nname = \"{CONNECTION}\"\n\n\
         [source]\ntype = \"file\"\nlocation = \"s3://{BUCKET}/{SOURCE_KEY}\"\n\n\
         [secrets]\ntype = \"aws-secrets-manager\"\nsecret_id = \"{SECRET_ID}\"\n\n{}",
        &example[rule_at..]
    )
}

pub fn repo_root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// The secret's JSON with the sandbox demo app's credentials.
pub fn secret_json(client_secret: &str, webhook_secrets: &[&str]) -> String {
    json!({
        "tenant": demo::INITIAL_DOMAIN,
        "client_id": demo::CLIENT_ID,
        "client_secret": client_secret,
        "webhook_secrets": webhook_secrets,
    })
    .to_string()
}

/// One deployment under test.
pub struct Cloud {
    pub sandbox: RunningSandbox,
    pub deployment: Deployment,
    backend: Backend,
}

/// What the deployment is built on.
enum Backend {
    Aws(Aws),
    Memory(Memory),
}

/// The deployment's AWS services, in moto.
pub struct Aws {
    pub moto: Moto,
    /// The deployment's table of connection configurations, for uploads.
    pub configs: m365_aws::ConfigStore,
    pub s3: aws_sdk_s3::Client,
    pub secrets: aws_sdk_secretsmanager::Client,
}

/// In-memory ports in place of DynamoDB, S3 and Secrets Manager.
struct Memory {
    configs: Arc<MemoryConfigs>,
    files: Arc<MemoryFiles>,
    secrets: Arc<MemorySecretStores>,
}

/// What a test deployment is built on.
#[derive(Debug, Clone, Copy)]
pub enum On {
    /// DynamoDB, S3 and Secrets Manager in moto.
    Moto,
    /// In-memory configurations, files and secrets, and SQLite state.
    Memory,
}

impl On {
    /// A deployment with the examples' configuration uploaded and an empty source.
    pub async fn cloud(self) -> Cloud {
        self.cloud_with(|_| {}).await
    }

    /// The same with changed settings.
    pub async fn cloud_with(self, settings: impl FnOnce(&mut Settings)) -> Cloud {
        match self {
            On::Moto => Cloud::start_with(SandboxConfig::demo(), settings).await,
            On::Memory => Cloud::in_memory_with(settings).await,
        }
    }
}

/// The settings of a deployment on `sandbox`, changed by `change`.
fn test_settings(sandbox: &RunningSandbox, change: impl FnOnce(&mut Settings)) -> Settings {
    let sandbox_url = sandbox.base_url().to_owned();
    let mut values = Settings::from_lookup(|name| match name {
        "M365_TABLE" => Some(TABLE.to_owned()),
        "M365_LOCAL_TENANT_URL" => Some(sandbox_url.clone()),
        // No margin: tests give the deadline they mean.
        "M365_DEADLINE_MARGIN_SECONDS" => Some("0".to_owned()),
        _ => None,
    })
    .expect("settings");
    change(&mut values);
    values
}

impl Cloud {
    /// On moto: everything created and the examples' configuration uploaded; the source is
    /// empty.
    pub async fn start() -> Cloud {
        Cloud::start_with(SandboxConfig::demo(), |_| {}).await
    }

    /// On moto, with a sandbox configuration and changed settings.
    pub async fn start_with(sandbox: SandboxConfig, settings: impl FnOnce(&mut Settings)) -> Cloud {
        let moto = Moto::start().await;
        let sandbox = Sandbox::new(sandbox).start().await.expect("sandbox starts");
        let sdk = moto.sdk_config().await;
        let dynamodb = m365_aws::dynamodb_client(&sdk);
        m365_aws::create_table(&dynamodb, TABLE)
            .await
            .expect("table created");
        let s3 = m365_aws::s3_client(&sdk);
        s3.create_bucket()
            .bucket(BUCKET)
            .send()
            .await
            .expect("bucket");
        let secrets = aws_sdk_secretsmanager::Client::new(&sdk);
        secrets
            .create_secret()
            .name(SECRET_ID)
            .secret_string(secret_json(demo::CLIENT_SECRET, &[WEBHOOK_SECRET]))
            .send()
            .await
            .expect("secret created");
        let deployment = Deployment::new(
            &sdk,
            test_settings(&sandbox, settings),
            Arc::new(m365_core::SystemClock),
            SharedState::isolated(),
        );
        let aws = Aws {
            moto,
            configs: m365_aws::ConfigStore::new(dynamodb, TABLE),
            s3,
            secrets,
        };
        Cloud::ready(sandbox, deployment, Backend::Aws(aws)).await
    }

    /// On in-memory ports and SQLite state instead of AWS: the handlers as on moto, for tests
    /// of what they do rather than of AWS.
    pub async fn in_memory_with(settings: impl FnOnce(&mut Settings)) -> Cloud {
        let sandbox = Sandbox::new(SandboxConfig::demo())
            .start()
            .await
            .expect("sandbox starts");
        let memory = Memory {
            configs: Arc::new(MemoryConfigs::default()),
            files: Arc::new(MemoryFiles::default()),
            secrets: Arc::new(MemorySecretStores::default()),
        };
        memory.secrets.put(
            SECRET_ID,
            &secret_json(demo::CLIENT_SECRET, &[WEBHOOK_SECRET]),
        );
        let ports = Ports {
            state: Arc::new(SqliteStateStore::in_memory().expect("in-memory SQLite")),
            configs: memory.configs.clone(),
            secrets: memory.secrets.clone(),
            files: memory.files.clone(),
        };
        let deployment = Deployment::on(
            ports,
            test_settings(&sandbox, settings),
            Arc::new(m365_core::SystemClock),
            SharedState::isolated(),
        );
        Cloud::ready(sandbox, deployment, Backend::Memory(memory)).await
    }

    async fn ready(sandbox: RunningSandbox, deployment: Deployment, backend: Backend) -> Cloud {
        let cloud = Cloud {
            sandbox,
            deployment,
            backend,
        };
        cloud.upload_config(&quickstart_cloud_config()).await;
        cloud.put_source(&json!({"users": [], "groups": []})).await;
        cloud
    }

    /// The AWS services of a deployment on moto.
    pub fn aws(&self) -> &Aws {
        match &self.backend {
            Backend::Aws(aws) => aws,
            Backend::Memory(_) => panic!("this deployment runs on in-memory ports, not moto"),
        }
    }

    pub async fn upload_config(&self, text: &str) {
        self.upload_config_of(CONNECTION, text).await;
    }

    /// Uploads `text` as `connection`'s newest configuration.
    pub async fn upload_config_of(&self, connection: &str, text: &str) {
        match &self.backend {
            Backend::Aws(aws) => {
                aws.configs
                    .upload(connection, text, "tests", now_ms())
                    .await
                    .expect("config uploaded");
            }
            Backend::Memory(memory) => {
                memory.configs.upload(connection, text);
            }
        }
    }

    pub async fn put_source(&self, source: &Value) {
        let bytes = source.to_string().into_bytes();
        match &self.backend {
            Backend::Aws(aws) => {
                aws.s3
                    .put_object()
                    .bucket(BUCKET)
                    .key(SOURCE_KEY)
                    .body(ByteStream::from(bytes))
                    .send()
                    .await
                    .expect("source uploaded");
            }
            Backend::Memory(memory) => {
                memory
                    .files
                    .put(&format!("s3://{BUCKET}/{SOURCE_KEY}"), bytes);
            }
        }
    }

    /// The examples' source file (50 users, 3 groups).
    pub async fn put_example_source(&self) {
        let text = std::fs::read_to_string(repo_root().join("examples/source.json")).unwrap();
        self.put_source(&serde_json::from_str(&text).unwrap()).await;
    }

    /// Replaces the connection's secret (a rotation).
    pub async fn put_secret(&self, json: &str) {
        match &self.backend {
            Backend::Aws(aws) => {
                aws.secrets
                    .put_secret_value()
                    .secret_id(SECRET_ID)
                    .secret_string(json)
                    .send()
                    .await
                    .expect("secret updated");
            }
            Backend::Memory(memory) => memory.secrets.put(SECRET_ID, json),
        }
    }

    /// One scheduled-sync invocation with `event` and a deadline `budget` from now.
    pub async fn scheduled(
        &self,
        event: Value,
        request_id: &str,
        budget: Duration,
    ) -> Result<SyncResponse, SyncError> {
        let deadline = now_ms() + i64::try_from(budget.as_millis()).unwrap();
        m365_runtime::scheduled::handle(&self.deployment, event, request_id, deadline).await
    }

    /// Invokes the function the way the state machine does until it stops asking to continue;
    /// every answer, in order.
    pub async fn state_machine_execution(
        &self,
        budget: Duration,
        max_hops: usize,
    ) -> Vec<SyncResponse> {
        let mut input = scheduler_event();
        let mut answers = Vec::new();
        for hop in 0..max_hops {
            let answer = self
                .scheduled(input, &format!("req-{hop}"), budget)
                .await
                .expect("hop succeeds");
            let more = answer.continue_;
            input = serde_json::to_value(&answer).unwrap();
            answers.push(answer);
            if !more {
                return answers;
            }
        }
        panic!("still continuing after {max_hops} hops");
    }

    /// A Function URL request (the fixture with this method, path, headers and body).
    pub fn function_url_request(
        method: &str,
        path: &str,
        headers: &[(&str, String)],
        body: &[u8],
    ) -> lambda_http::Request {
        let mut event: Value = serde_json::from_str(
            &std::fs::read_to_string(
                repo_root().join("tests/fixtures/lambda/function-url-request.json"),
            )
            .unwrap(),
        )
        .unwrap();
        event["rawPath"] = json!(path);
        event["requestContext"]["http"]["method"] = json!(method);
        event["requestContext"]["http"]["path"] = json!(path);
        let map = event["headers"].as_object_mut().unwrap();
        map.insert("content-length".into(), json!(body.len().to_string()));
        for (name, value) in headers {
            map.insert((*name).to_owned(), json!(value));
        }
        match std::str::from_utf8(body) {
            Ok(text) => {
                event["body"] = json!(text);
                event["isBase64Encoded"] = json!(false);
            }
            Err(_) => {
                use base64::Engine as _;
                event["body"] = json!(base64::engine::general_purpose::STANDARD.encode(body));
                event["isBase64Encoded"] = json!(true);
            }
        }
        lambda_http::request::from_str(&event.to_string()).expect("a Function URL request")
    }

    /// Signs `body` as a Standard Webhooks sender does with `secret`; the three headers.
    pub fn signed_headers(
        secret: &str,
        id: &str,
        timestamp: i64,
        body: &[u8],
    ) -> Vec<(&'static str, String)> {
        let key = m365_runtime::signature::WebhookSecret::parse(secret).unwrap();
        vec![
            ("webhook-id", id.to_owned()),
            ("webhook-timestamp", timestamp.to_string()),
            (
                "webhook-signature",
                m365_runtime::signature::sign(&key, id, timestamp, body),
            ),
            ("content-type", "application/json".to_owned()),
        ]
    }

    /// Posts a signed event to `/events/contoso`; status and JSON answer.
    pub async fn post_event(&self, id: &str, body: &Value) -> (u16, Value) {
        let body = body.to_string().into_bytes();
        let headers = Cloud::signed_headers(WEBHOOK_SECRET, id, now_ms() / 1000, &body);
        self.webhook(&Cloud::function_url_request(
            "POST",
            &format!("/events/{CONNECTION}"),
            &headers,
            &body,
        ))
        .await
    }

    /// Hands a request to the webhook handler; status and JSON answer.
    pub async fn webhook(&self, request: &lambda_http::Request) -> (u16, Value) {
        let request = clone_request(request);
        let response = m365_runtime::webhook::handle(&self.deployment, request).await;
        let status = response.status().as_u16();
        let body: &[u8] = response.body().as_ref();
        (status, serde_json::from_slice(body).unwrap_or(Value::Null))
    }

    /// Hands `request` to the webhook handler inside a Lambda invocation with this request id
    /// and deadline (ms since the epoch); status, `Retry-After` and JSON answer.
    pub async fn webhook_in_invocation(
        &self,
        request: lambda_http::Request,
        request_id: &str,
        deadline: i64,
    ) -> (u16, Option<String>, Value) {
        use lambda_http::RequestExt as _;
        let mut context = lambda_http::Context::default();
        context.request_id = request_id.to_owned();
        context.deadline = u64::try_from(deadline).expect("a deadline after the epoch");
        let response =
            m365_runtime::webhook::handle(&self.deployment, request.with_lambda_context(context))
                .await;
        let retry_after = response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body: &[u8] = response.body().as_ref();
        (
            response.status().as_u16(),
            retry_after,
            serde_json::from_slice(body).unwrap_or(Value::Null),
        )
    }

    /// The tenant, without generated ids: users by UPN (properties, licenses, manager's UPN),
    /// groups by name (member UPNs).
    pub fn tenant_picture(&self) -> Value {
        tenant_picture(&self.sandbox)
    }

    /// Graph writes the sandbox accepted.
    pub fn tenant_writes(&self) -> usize {
        self.sandbox
            .sandbox()
            .request_log()
            .iter()
            .filter(|r| r.write && r.status < 400)
            .count()
    }
}

fn clone_request(request: &lambda_http::Request) -> lambda_http::Request {
    let mut builder = lambda_http::http::Request::builder()
        .method(request.method().clone())
        .uri(request.uri().clone());
    for (name, value) in request.headers() {
        builder = builder.header(name, value);
    }
    let body: &[u8] = request.body().as_ref();
    builder
        .body(lambda_http::Body::from(body.to_vec()))
        .expect("request")
}

/// The event EventBridge Scheduler gives the state machine (the schedule's Input).
pub fn scheduler_event() -> Value {
    serde_json::from_str(
        &std::fs::read_to_string(repo_root().join("tests/fixtures/lambda/scheduler-input.json"))
            .unwrap(),
    )
    .unwrap()
}

pub fn now_ms() -> i64 {
    i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis(),
    )
    .unwrap()
}

/// A sandbox tenant's users and groups without generated ids.
pub fn tenant_picture(sandbox: &RunningSandbox) -> Value {
    let users = sandbox.sandbox().users();
    let upn_of: BTreeMap<String, String> = users
        .iter()
        .map(|u| {
            (
                u["id"].as_str().unwrap().to_owned(),
                u["userPrincipalName"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let mut picture_users = serde_json::Map::new();
    for u in &users {
        let mut licenses: Vec<String> = u["assignedLicenses"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .map(|l| l["skuId"].as_str().unwrap_or_default().to_owned())
            .collect();
        licenses.sort();
        picture_users.insert(
            u["userPrincipalName"].as_str().unwrap().to_owned(),
            json!({
                "displayName": u["displayName"],
                "givenName": u["givenName"],
                "surname": u["surname"],
                "jobTitle": u["jobTitle"],
                "department": u["department"],
                "usageLocation": u["usageLocation"],
                "accountEnabled": u["accountEnabled"],
                "licenses": licenses,
                "manager": u["manager"].as_str().and_then(|id| upn_of.get(id)),
            }),
        );
    }
    let mut picture_groups = serde_json::Map::new();
    for g in sandbox.sandbox().groups() {
        let name = g["displayName"].as_str().unwrap_or_default().to_owned();
        let mut members: Vec<String> = sandbox
            .sandbox()
            .group_members(g["id"].as_str().unwrap_or_default())
            .iter()
            .filter_map(|id| upn_of.get(id).cloned())
            .collect();
        members.sort();
        picture_groups.insert(name, json!({"members": members}));
    }
    json!({"users": picture_users, "groups": picture_groups})
}

/// The Lambda Invoke API of the deployment's `scheduled-sync` function on 127.0.0.1, answered by
/// the function's handler in this process: what `cloud sync --function` calls. moto runs Lambda
/// functions only in Docker images it downloads, so this stand-in serves the one call instead,
/// as Lambda answers it (<https://docs.aws.amazon.com/lambda/latest/api/API_Invoke.html>): 200
/// with the handler's answer, 200 with `X-Amz-Function-Error` and `{errorType, errorMessage}`
/// when the handler fails, 404 `ResourceNotFoundException` for another function name. Serves
/// until the returned task is aborted.
pub async fn serve_scheduled_function(cloud: Arc<Cloud>) -> (String, tokio::task::JoinHandle<()>) {
    use axum::extract::{Path, State};
    use axum::http::{HeaderMap, HeaderValue, StatusCode};

    async fn invoke(
        State(cloud): State<Arc<Cloud>>,
        Path(function): Path<String>,
        body: axum::body::Bytes,
    ) -> (StatusCode, HeaderMap, String) {
        let mut headers = HeaderMap::new();
        headers.insert("content-type", HeaderValue::from_static("application/json"));
        if function != "scheduled-sync" {
            headers.insert(
                "x-amzn-errortype",
                HeaderValue::from_static("ResourceNotFoundException"),
            );
            let message = format!(
                "Function not found: arn:aws:lambda:us-east-1:123456789012:function:{function}"
            );
            return (
                StatusCode::NOT_FOUND,
                headers,
                json!({"Type": "User", "message": message}).to_string(),
            );
        }
        let event: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        headers.insert(
            "x-amz-executed-version",
            HeaderValue::from_static("$LATEST"),
        );
        let answer = match cloud
            .scheduled(event, "invoke-1", Duration::from_secs(900))
            .await
        {
            Ok(answer) => serde_json::to_string(&answer).unwrap_or_default(),
            Err(error) => {
                headers.insert(
                    "x-amz-function-error",
                    HeaderValue::from_static("Unhandled"),
                );
                json!({"errorType": error.error_type(), "errorMessage": error.to_string()})
                    .to_string()
            }
        };
        (StatusCode::OK, headers, answer)
    }

    let app = axum::Router::new()
        .route(
            "/2015-03-31/functions/{function}/invocations",
            axum::routing::post(invoke),
        )
        .with_state(cloud);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a port on 127.0.0.1");
    let url = format!("http://{}", listener.local_addr().expect("bound address"));
    let server = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (url, server)
}
