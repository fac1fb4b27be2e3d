//! Sandbox tenant: a local HTTP server that answers Microsoft Graph v1.0 (and the Entra token
//! endpoint) the way the real services do, status code for status code and error body for error
//! body. `docs/graph-behaviour.md` describes that behaviour and its public sources; module docs
//! link its sections.
//!
//! Routes:
//! * `POST /{tenant}/oauth2/v2.0/token` — client credentials with a client secret or a
//!   certificate's client assertion (docs/graph-behaviour.md#tokens), see [`token`] and
//!   [`assertion`].
//! * `/v1.0/...` — users, groups, licenses, manager, members, deleted items, `$batch`.
//! * `/_sandbox/...` — the admin API (state, reset, knobs, faults, request log, stats, seed).
//!   **It has no authentication**: the sandbox binds to 127.0.0.1 and is for local use only.
//!   So that a web page open in a browser on the same machine cannot drive it (cross-site
//!   requests, DNS rebinding), an admin request is refused with 403 unless its `Host` is a
//!   loopback host (`127.x.x.x`, `localhost`, `[::1]`, any port) and it carries no `Origin`
//!   header (browsers send one on cross-origin and non-GET requests; curl and test clients
//!   do not). Graph and token routes are not affected.
//!
//! [`Sandbox::reset`] restores the seed, clears the request log, stats, scripted faults and
//! throttling buckets, and **keeps the knobs**.

mod assertion;
mod batch;
mod changes;
mod config;
mod filter;
mod graph;
pub mod schema;
mod search;
mod tenant;
mod throttle;
mod token;
mod validate;
mod wire;

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path as AxPath, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use rand::SeedableRng;
use rand::rngs::StdRng;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

pub use config::{
    AppSeed, DomainSeed, FaultKnobs, FaultRule, FaultStatus, Knobs, SandboxConfig, Seed,
    ServicePlanSeed, SkuSeed, TimeoutTag,
};
pub use throttle::{Charge, Throttle, ThrottleConfig, Throttled};

use graph::GraphRequest;
use tenant::TenantState;
use wire::GraphResponse;

/// Constants of the demo tenant ([`SandboxConfig::demo`]).
pub mod demo {
    pub const TENANT_ID: &str = "8f2c6b1e-4d3a-4e7b-9c51-2a6f0d9e7b10";
    pub const TENANT_NAME: &str = "Contoso (sandbox)";
    pub const INITIAL_DOMAIN: &str = "contoso.onmicrosoft.com";
    pub const VERIFIED_DOMAIN: &str = "example.com";
    pub const FEDERATED_DOMAIN: &str = "fed.example.com";
    pub const UNVERIFIED_DOMAIN: &str = "unverified.example.org";

    pub const CLIENT_ID: &str = "3c9d7a52-6b1f-4e2a-8d4c-7f0b5e9a1c23";
    pub const CLIENT_SECRET: &str = "sandbox-secret-NOT-for-production~1";
    pub const READONLY_CLIENT_ID: &str = "5a1e8c3f-2d7b-4f90-b6a4-0c3e9d8f2a71";
    pub const READONLY_CLIENT_SECRET: &str = "sandbox-readonly-secret~2";
    pub const EXPIRED_CLIENT_ID: &str = "9e4b2f6a-1c8d-4a73-85e0-d3f7a6b91c45";
    pub const EXPIRED_CLIENT_SECRET: &str = "sandbox-expired-secret~3";

    /// ENTERPRISEPACK (Office 365 E3): 25 seats.
    pub const SKU_E3: &str = "6fd2c87f-b296-42f0-b197-1e91e994b900";
    /// SPE_E5 (Microsoft 365 E5): 10 seats.
    pub const SKU_E5: &str = "06ebc4ee-1bb5-47dd-8120-11324bc54e06";
    /// EMS: 1 seat, already consumed by the admin: no seats left.
    pub const SKU_FULL: &str = "efccb6f7-5641-4e0e-bd10-b4976e1bf68e";
    /// EXCHANGE_S_ENTERPRISE, a plan of E3 (and E5).
    pub const E3_PLAN_EXCHANGE: &str = "efb87545-963c-4e0d-99df-69c6916d9eb0";
    /// SHAREPOINTENTERPRISE, a plan of E3 only.
    pub const E3_PLAN_SHAREPOINT: &str = "5dbe027f-2339-4123-9542-606e4d348a72";
    /// TEAMS1, a plan of E3 (and E5).
    pub const E3_PLAN_TEAMS: &str = "57ff2da0-773e-42df-b2af-ffb7a2317929";

    pub const BJENSEN_UPN: &str = "bjensen@example.com";
    pub const BJENSEN_ID: &str = "b6f1e2a4-7c3d-4e5f-9a8b-1c2d3e4f5a6b";
    /// Holds a directory admin role and the only EMS seat.
    pub const ADMIN_UPN: &str = "admin@contoso.onmicrosoft.com";
    pub const ADMIN_ID: &str = "a0d1c2b3-4e5f-4a6b-8c7d-9e0f1a2b3c4d";

    pub const ACCOUNTING_ID: &str = "c4a7e9b2-3d5f-4e1a-8b6c-2f9d0e7a1b3c";
    pub const ACCOUNTING_NAME: &str = "Accounting";
}

/// Errors of the sandbox's own set-up (state file).
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("cannot read or write the state file {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the state file {path} is not a sandbox state dump: {source}")]
    Parse {
        path: PathBuf,
        source: serde_json::Error,
    },
}

/// One entry of the request log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoggedRequest {
    pub method: String,
    /// Path and query as received (`/v1.0/users?$top=5`).
    pub path: String,
    pub status: u16,
    pub app_id: Option<String>,
    /// Resource units charged (docs/graph-behaviour.md#identity-quotas); 0 when the request never
    /// got that far.
    pub resource_units: u32,
    pub write: bool,
    pub throttled: bool,
    pub batch_item: bool,
    pub duration_ms: f64,
    pub request_id: String,
}

/// Counters since the last reset. Every `$batch` item counts as a request; so does the envelope
/// (in `batches`, not in `reads`/`writes`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Stats {
    pub requests: u64,
    pub reads: u64,
    pub writes: u64,
    pub by_status: BTreeMap<u16, u64>,
    /// 429 answers (throttling and injected).
    pub throttled: u64,
    pub batches: u64,
    pub batch_items: u64,
    pub faults_injected: u64,
    /// Of those, the 429s (the rest of [`Stats::throttled`] is the throttling model's).
    pub faults_injected_429: u64,
    pub resource_units: u64,
    /// Token requests answered with a token, and refused (any AADSTS error).
    pub tokens_issued: u64,
    pub tokens_refused: u64,
    /// Writes (batch items included) by the second they were answered in, as Unix seconds. Rates
    /// come from here rather than from the request log, which keeps the last [`LOG_CAPACITY`]
    /// requests only.
    pub writes_per_second: BTreeMap<i64, WriteCounts>,
}

/// The writes of one second.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WriteCounts {
    /// Writes the throttling let through (whatever the route answered).
    pub admitted: u64,
    /// Writes answered 429 (throttling and injected).
    pub throttled: u64,
}

/// How many requests the request log keeps: past that, the oldest entries go ([`Stats`] counts
/// every request).
pub const LOG_CAPACITY: usize = 100_000;

pub(crate) struct Inner {
    seed: Seed,
    pub(crate) accepted_resources: Vec<String>,
    pub(crate) key: Vec<u8>,
    state: Mutex<TenantState>,
    knobs: Mutex<Knobs>,
    faults: Mutex<Vec<FaultRule>>,
    rng: Mutex<StdRng>,
    pub(crate) throttle: Throttle,
    log: Mutex<VecDeque<LoggedRequest>>,
    stats: Mutex<Stats>,
    state_file: Mutex<Option<PathBuf>>,
    /// Serialises state-file writes.
    save_lock: Mutex<()>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Inner {
    pub(crate) fn lock_state(&self) -> MutexGuard<'_, TenantState> {
        lock(&self.state)
    }
    pub(crate) fn lock_faults(&self) -> MutexGuard<'_, Vec<FaultRule>> {
        lock(&self.faults)
    }
    pub(crate) fn lock_rng(&self) -> MutexGuard<'_, StdRng> {
        lock(&self.rng)
    }
    pub(crate) fn knobs(&self) -> Knobs {
        lock(&self.knobs).clone()
    }

    pub(crate) fn count_fault(&self, status: Option<u16>) {
        let mut stats = lock(&self.stats);
        stats.faults_injected += 1;
        if status == Some(429) {
            stats.faults_injected_429 += 1;
        }
    }

    pub(crate) fn record(&self, entry: LoggedRequest) {
        {
            let mut s = lock(&self.stats);
            s.requests += 1;
            if entry.batch_item {
                s.batch_items += 1;
            }
            if entry.path.starts_with("/v1.0/$batch") && !entry.batch_item {
                s.batches += 1;
            } else if entry.write {
                s.writes += 1;
                let second = s.writes_per_second.entry(wire::now_secs()).or_default();
                if entry.status == 429 {
                    second.throttled += 1;
                } else {
                    second.admitted += 1;
                }
            } else {
                s.reads += 1;
            }
            *s.by_status.entry(entry.status).or_insert(0) += 1;
            if entry.status == 429 {
                s.throttled += 1;
            }
            s.resource_units += u64::from(entry.resource_units);
        }
        tracing::debug!(
            method = %entry.method,
            path = %entry.path,
            status = entry.status,
            batch_item = entry.batch_item,
            "sandbox request"
        );
        let mut log = lock(&self.log);
        if log.len() >= LOG_CAPACITY {
            log.pop_front();
        }
        log.push_back(entry);
    }

    /// Writes the state file (tmp + rename) when one is configured.
    pub(crate) fn persist(&self) {
        let Some(path) = lock(&self.state_file).clone() else {
            return;
        };
        let _guard = lock(&self.save_lock);
        let dump = {
            let state = self.lock_state();
            serde_json::to_vec_pretty(&*state)
        };
        match dump {
            Ok(bytes) => {
                if let Err(e) = write_atomic(&path, &bytes) {
                    tracing::warn!(path = %path.display(), error = %e, "cannot save sandbox state");
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot serialise sandbox state"),
        }
    }
}

fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}

/// The sandbox tenant. Cheap to clone; all clones share one tenant.
#[derive(Clone)]
pub struct Sandbox {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Sandbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sandbox")
            .field("tenant_id", &self.inner.seed.tenant_id)
            .finish_non_exhaustive()
    }
}

impl Sandbox {
    pub fn new(config: SandboxConfig) -> Self {
        let key: Vec<u8> = (0..32).map(|_| rand::random::<u8>()).collect();
        let state = TenantState::from_seed(&config.seed);
        let rng = StdRng::seed_from_u64(config.knobs.faults.seed);
        Self {
            inner: Arc::new(Inner {
                throttle: Throttle::new(config.knobs.throttle.clone()),
                seed: config.seed,
                accepted_resources: config.accepted_resources,
                key,
                state: Mutex::new(state),
                knobs: Mutex::new(config.knobs),
                faults: Mutex::new(Vec::new()),
                rng: Mutex::new(rng),
                log: Mutex::new(VecDeque::new()),
                stats: Mutex::new(Stats::default()),
                state_file: Mutex::new(None),
                save_lock: Mutex::new(()),
            }),
        }
    }

    /// `Sandbox::new(SandboxConfig::demo())`.
    pub fn demo() -> Self {
        Self::new(SandboxConfig::demo())
    }

    /// Loads the tenant from `path` if it exists (else writes the seed there); from then on
    /// the state is saved atomically (tmp + rename) after every mutating request.
    pub fn with_state_file(self, path: impl Into<PathBuf>) -> Result<Self, SandboxError> {
        let path = path.into();
        if path.exists() {
            let bytes = std::fs::read(&path).map_err(|source| SandboxError::Io {
                path: path.clone(),
                source,
            })?;
            let mut state: TenantState =
                serde_json::from_slice(&bytes).map_err(|source| SandboxError::Parse {
                    path: path.clone(),
                    source,
                })?;
            state.rebuild_indexes();
            *self.inner.lock_state() = state;
        }
        *lock(&self.inner.state_file) = Some(path.clone());
        let bytes = serde_json::to_vec_pretty(&*self.inner.lock_state()).map_err(|source| {
            SandboxError::Parse {
                path: path.clone(),
                source,
            }
        })?;
        write_atomic(&path, &bytes).map_err(|source| SandboxError::Io { path, source })?;
        Ok(self)
    }

    /// The HTTP routes (token endpoint, `/v1.0`, `/_sandbox`).
    pub fn router(&self) -> Router {
        Router::new()
            .route("/{tenant}/oauth2/v2.0/token", post(token_handler))
            .route("/_sandbox/state", get(admin_state))
            .route("/_sandbox/reset", post(admin_reset))
            .route("/_sandbox/knobs", get(admin_get_knobs).put(admin_put_knobs))
            .route("/_sandbox/faults", post(admin_faults))
            .route("/_sandbox/requests", get(admin_requests))
            .route("/_sandbox/stats", get(admin_stats))
            .route("/_sandbox/seed", post(admin_seed))
            .fallback(graph_handler)
            .layer(axum::middleware::from_fn(guard_admin))
            .with_state(self.clone())
    }

    /// Serves on 127.0.0.1 with an ephemeral port.
    pub async fn start(self) -> std::io::Result<RunningSandbox> {
        self.start_on(SocketAddr::from(([127, 0, 0, 1], 0))).await
    }

    pub async fn start_on(self, addr: SocketAddr) -> std::io::Result<RunningSandbox> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let local = listener.local_addr()?;
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let router = self.router();
        let handle = tokio::spawn(async move {
            let served = axum::serve(listener, router)
                .with_graceful_shutdown(async move {
                    let _ = rx.await;
                })
                .await;
            if let Err(e) = served {
                tracing::warn!(error = %e, "sandbox server stopped");
            }
        });
        Ok(RunningSandbox {
            base_url: format!("http://{local}"),
            sandbox: self,
            shutdown: Some(tx),
            handle: Some(handle),
        })
    }

    pub fn knobs(&self) -> Knobs {
        self.inner.knobs()
    }

    /// Replaces the knobs; a new fault seed restarts the fault RNG, new throttling quotas apply at
    /// once.
    pub fn set_knobs(&self, knobs: Knobs) {
        let old_seed = lock(&self.inner.knobs).faults.seed;
        if old_seed != knobs.faults.seed {
            *self.inner.lock_rng() = StdRng::seed_from_u64(knobs.faults.seed);
        }
        self.inner.throttle.set_config(knobs.throttle.clone());
        *lock(&self.inner.knobs) = knobs;
    }

    /// Gives an app registration a new client secret; the old one stops working at once (as
    /// when an administrator deletes it in Entra after rotating). `false` when no app has
    /// `client_id`. Tokens issued before stay valid until they expire, as in Entra.
    pub fn rotate_client_secret(&self, client_id: &str, new_secret: &str) -> bool {
        self.change_app(client_id, |app| {
            app.client_secret = new_secret.to_owned();
            app.secret_expired = false;
        })
    }

    /// Registers a certificate (PEM, the public part) on the app registration of `client_id`,
    /// as uploading it under Certificates & secrets does: client assertions signed with its key
    /// are accepted from then on. `false` when no app has `client_id`.
    pub fn add_certificate(&self, client_id: &str, certificate_pem: &str) -> bool {
        self.change_app(client_id, |app| {
            app.certificates.push(certificate_pem.to_owned());
        })
    }

    /// Changes the app registration of `client_id` (case-insensitive) and saves the state;
    /// `false` when no app has it.
    fn change_app(&self, client_id: &str, change: impl FnOnce(&mut AppSeed)) -> bool {
        let changed = {
            let mut state = self.inner.lock_state();
            match state
                .apps
                .iter_mut()
                .find(|a| a.client_id.eq_ignore_ascii_case(client_id))
            {
                Some(app) => {
                    change(app);
                    true
                }
                None => false,
            }
        };
        if changed {
            self.inner.persist();
        }
        changed
    }

    /// The tenant id and its initial domain (the default domain when none is marked initial),
    /// as the tenant is now (a state file may differ from the configuration's seed).
    pub fn tenant(&self) -> (String, Option<String>) {
        let state = self.inner.lock_state();
        let domain = state
            .domains
            .iter()
            .find(|d| d.is_initial)
            .or_else(|| state.domains.iter().find(|d| d.is_default))
            .or_else(|| state.domains.first())
            .map(|d| d.id.clone());
        (state.tenant_id.clone(), domain)
    }

    /// The app registrations that may get tokens, as the tenant is now. (`Debug` of an
    /// [`AppSeed`] hides its secret.)
    pub fn apps(&self) -> Vec<AppSeed> {
        self.inner.lock_state().apps.clone()
    }

    /// Adds a scripted fault (fires on the next `count` matching requests, batch items included).
    pub fn add_fault(&self, rule: FaultRule) {
        self.inner.lock_faults().push(rule);
    }

    /// The whole tenant state (also the state-file format).
    pub fn dump(&self) -> Value {
        serde_json::to_value(&*self.inner.lock_state()).unwrap_or(Value::Null)
    }

    pub fn request_log(&self) -> Vec<LoggedRequest> {
        lock(&self.inner.log).iter().cloned().collect()
    }

    pub fn stats(&self) -> Stats {
        lock(&self.inner.stats).clone()
    }

    /// Back to the seed; clears the request log, stats, scripted faults and throttling usage.
    /// The knobs are kept.
    pub fn reset(&self) {
        *self.inner.lock_state() = TenantState::from_seed(&self.inner.seed);
        lock(&self.inner.log).clear();
        *lock(&self.inner.stats) = Stats::default();
        self.inner.lock_faults().clear();
        self.inner.throttle.reset();
        self.inner.persist();
    }

    /// Live (not deleted) users with every stored property (plus `manager` id when set).
    pub fn users(&self) -> Vec<Value> {
        self.inner
            .lock_state()
            .users
            .iter()
            .filter(|u| !u.deleted)
            .map(|u| {
                let mut m = u.props.clone();
                if let Some(mgr) = &u.manager {
                    m.insert("manager".into(), Value::String(mgr.clone()));
                }
                Value::Object(m)
            })
            .collect()
    }

    /// Live (not deleted) groups with every stored property.
    pub fn groups(&self) -> Vec<Value> {
        self.inner
            .lock_state()
            .groups
            .iter()
            .filter(|g| !g.deleted)
            .map(|g| Value::Object(g.props.clone()))
            .collect()
    }

    /// Member ids of a group (members that are not soft-deleted).
    pub fn group_members(&self, group_id: &str) -> Vec<String> {
        let state = self.inner.lock_state();
        let Some(g) = state.group_index_all(group_id).map(|g| &state.groups[g]) else {
            return Vec::new();
        };
        g.members
            .iter()
            .filter(|m| state.live_user_exact(m).is_some() || state.live_group_exact(m).is_some())
            .cloned()
            .collect()
    }

    /// Soft-deleted users and groups, with `@odata.type`.
    pub fn deleted_items(&self) -> Vec<Value> {
        let state = self.inner.lock_state();
        let tag = |o: &tenant::Obj, t: &str| {
            let mut m = o.props.clone();
            m.insert("@odata.type".into(), Value::String(t.to_owned()));
            Value::Object(m)
        };
        state
            .users
            .iter()
            .filter(|u| u.deleted)
            .map(|u| tag(u, "#microsoft.graph.user"))
            .chain(
                state
                    .groups
                    .iter()
                    .filter(|g| g.deleted)
                    .map(|g| tag(g, "#microsoft.graph.group")),
            )
            .collect()
    }

    /// Inserts a user directly (no validation, no replication lag); returns its id.
    pub fn seed_user(&self, user: Value) -> String {
        let id = self.inner.lock_state().insert_user(user, 0);
        self.inner.persist();
        id
    }

    /// Inserts a group directly (no validation, no lag); a `members` array of ids/UPNs is applied.
    pub fn seed_group(&self, group: Value) -> String {
        let id = self.inner.lock_state().insert_group(group, 0);
        self.inner.persist();
        id
    }
}

/// A sandbox served over HTTP. Dropping it stops the server.
pub struct RunningSandbox {
    base_url: String,
    sandbox: Sandbox,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    handle: Option<tokio::task::JoinHandle<()>>,
}

impl std::fmt::Debug for RunningSandbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunningSandbox")
            .field("base_url", &self.base_url)
            .finish_non_exhaustive()
    }
}

impl RunningSandbox {
    /// `http://127.0.0.1:PORT` (no trailing slash).
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// Login host; the token endpoint is `{login_url}/{tenant}/oauth2/v2.0/token`.
    pub fn login_url(&self) -> String {
        self.base_url.clone()
    }

    /// Graph host; Graph is `{graph_url}/v1.0/...`.
    pub fn graph_url(&self) -> String {
        self.base_url.clone()
    }

    pub fn sandbox(&self) -> &Sandbox {
        &self.sandbox
    }

    /// Graceful shutdown: waits until the server task has ended.
    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(handle) = self.handle.take() {
            let _ = handle.await;
        }
    }
}

impl Drop for RunningSandbox {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(handle) = self.handle.take() {
            handle.abort();
        }
    }
}

const JSON_CT: &str = "application/json;odata.metadata=minimal;odata.streaming=true;IEEE754Compatible=false;charset=utf-8";

fn into_response(resp: GraphResponse) -> Response {
    let mut builder = Response::builder().status(resp.status);
    for (k, v) in &resp.headers {
        builder = builder.header(k.as_str(), v.as_str());
    }
    let result = match resp.body {
        Some(body) => builder
            .header("content-type", JSON_CT)
            .header("OData-Version", "4.0")
            .body(axum::body::Body::from(body.to_string())),
        None => builder.body(axum::body::Body::empty()),
    };
    result.unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

fn base_url(headers: &HeaderMap) -> String {
    let host = headers
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("localhost");
    format!("http://{host}")
}

async fn graph_handler(
    State(sb): State<Sandbox>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(path) = uri.path().strip_prefix("/v1.0") else {
        return (
            StatusCode::NOT_FOUND,
            axum::Json(json!({"error": {"code": "NotFound", "message": "Only /v1.0, /{tenant}/oauth2/v2.0/token and /_sandbox are served."}})),
        )
            .into_response();
    };
    let req = GraphRequest {
        method,
        path: if path.is_empty() {
            "/".to_owned()
        } else {
            path.to_owned()
        },
        query: uri.query().unwrap_or("").to_owned(),
        base_url: base_url(&headers),
        headers,
        body,
        batch_item: false,
    };
    let inner = &sb.inner;
    if req.path == "/$batch" && req.method == Method::POST {
        let started = Instant::now();
        let request_id = uuid::Uuid::new_v4().to_string();
        let client_request_id = req
            .headers
            .get("client-request-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
            .unwrap_or_else(|| request_id.clone());
        let mut resp = batch::run(inner, req.clone()).await;
        graph::stamp(&mut resp, &request_id, &client_request_id);
        inner.record(LoggedRequest {
            method: "POST".to_owned(),
            path: "/v1.0/$batch".to_owned(),
            status: resp.status.as_u16(),
            app_id: None,
            resource_units: 0,
            write: false,
            throttled: false,
            batch_item: false,
            duration_ms: started.elapsed().as_secs_f64() * 1000.0,
            request_id,
        });
        return into_response(resp);
    }
    into_response(graph::execute_single(inner, req).await)
}

async fn token_handler(
    State(sb): State<Sandbox>,
    AxPath(tenant): AxPath<String>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    // The URL the request was posted to, as a client assertion's `aud` must name it.
    let token_url = format!("{}{}", base_url(&headers), uri.path());
    let form: Vec<(String, String)> = url::form_urlencoded::parse(&body)
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    let knobs = sb.knobs();
    let result = {
        let state = sb.inner.lock_state();
        let issuer = token::Issuer {
            key: &sb.inner.key,
            accepted_resources: &sb.inner.accepted_resources,
            lifetime_secs: knobs.token_lifetime_secs,
            token_url: &token_url,
        };
        token::issue(&state, &issuer, &tenant, &headers, &form)
    };
    {
        let mut stats = lock(&sb.inner.stats);
        if result.is_ok() {
            stats.tokens_issued += 1;
        } else {
            stats.tokens_refused += 1;
        }
    }
    let (status, body) = match result {
        Ok(body) => (StatusCode::OK, body),
        Err(e) => (e.status, e.body()),
    };
    Response::builder()
        .status(status)
        .header("content-type", "application/json; charset=utf-8")
        .header("cache-control", "no-store, no-cache")
        .body(axum::body::Body::from(body.to_string()))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

/// Refuses `/_sandbox` requests not addressed to a loopback host or carrying an `Origin`
/// (see the module docs); passes everything else through.
async fn guard_admin(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let path = req.uri().path();
    if path != "/_sandbox" && !path.starts_with("/_sandbox/") {
        return next.run(req).await;
    }
    let forbidden = |message: String| {
        (
            StatusCode::FORBIDDEN,
            axum::Json(json!({"error": {"code": "Forbidden", "message": message}})),
        )
            .into_response()
    };
    if req.headers().contains_key(http::header::ORIGIN) {
        return forbidden(
            "the sandbox admin API refuses requests with an Origin header (a web browser sends \
             one), so a web page cannot drive it; call it from curl or a test client instead"
                .to_owned(),
        );
    }
    let host = req
        .headers()
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_owned)
        .or_else(|| req.uri().authority().map(|a| a.as_str().to_owned()));
    match host {
        Some(h) if is_loopback_host(&h) => next.run(req).await,
        Some(h) => forbidden(format!(
            "the sandbox admin API answers only requests addressed to a loopback host \
             (127.0.0.1, localhost or [::1]); this one was addressed to {h:?}: use \
             http://127.0.0.1:PORT/_sandbox/..."
        )),
        None => forbidden(
            "the sandbox admin API needs a Host header naming a loopback host (127.0.0.1, \
             localhost or [::1])"
                .to_owned(),
        ),
    }
}

/// Whether a `Host` header value (`host[:port]`, IPv6 in brackets) names a loopback host.
fn is_loopback_host(value: &str) -> bool {
    let value = value.trim();
    let host = if let Some(rest) = value.strip_prefix('[') {
        match rest.split_once(']') {
            Some((h, port)) if port.is_empty() || valid_port(port.strip_prefix(':')) => h,
            _ => return false,
        }
    } else {
        match value.split_once(':') {
            Some((h, port)) if valid_port(Some(port)) => h,
            Some(_) => return false,
            None => value,
        }
    };
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

fn valid_port(port: Option<&str>) -> bool {
    port.is_some_and(|p| !p.is_empty() && p.parse::<u16>().is_ok())
}

async fn admin_state(State(sb): State<Sandbox>) -> Response {
    axum::Json(sb.dump()).into_response()
}

async fn admin_reset(State(sb): State<Sandbox>) -> Response {
    sb.reset();
    StatusCode::NO_CONTENT.into_response()
}

async fn admin_get_knobs(State(sb): State<Sandbox>) -> Response {
    axum::Json(sb.knobs()).into_response()
}

fn admin_bad(message: String) -> Response {
    (
        StatusCode::BAD_REQUEST,
        axum::Json(json!({"error": {"code": "BadRequest", "message": message}})),
    )
        .into_response()
}

async fn admin_put_knobs(State(sb): State<Sandbox>, body: Bytes) -> Response {
    match serde_json::from_slice::<Knobs>(&body) {
        Ok(k) => {
            sb.set_knobs(k);
            axum::Json(sb.knobs()).into_response()
        }
        Err(e) => admin_bad(format!("invalid knobs: {e}")),
    }
}

async fn admin_faults(State(sb): State<Sandbox>, body: Bytes) -> Response {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(FaultRule),
        Many(Vec<FaultRule>),
    }
    match serde_json::from_slice::<OneOrMany>(&body) {
        Ok(OneOrMany::One(r)) => sb.add_fault(r),
        Ok(OneOrMany::Many(rs)) => rs.into_iter().for_each(|r| sb.add_fault(r)),
        Err(e) => return admin_bad(format!("invalid fault rule: {e}")),
    }
    StatusCode::NO_CONTENT.into_response()
}

async fn admin_requests(State(sb): State<Sandbox>) -> Response {
    axum::Json(sb.request_log()).into_response()
}

async fn admin_stats(State(sb): State<Sandbox>) -> Response {
    axum::Json(sb.stats()).into_response()
}

async fn admin_seed(State(sb): State<Sandbox>, body: Bytes) -> Response {
    let Ok(v) = serde_json::from_slice::<Value>(&body) else {
        return admin_bad("body must be {\"users\": [...], \"groups\": [...]}".to_owned());
    };
    let list = |name: &str| {
        v.get(name)
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
    };
    let users: Vec<String> = list("users").into_iter().map(|u| sb.seed_user(u)).collect();
    let groups: Vec<String> = list("groups")
        .into_iter()
        .map(|g| sb.seed_group(g))
        .collect();
    (
        StatusCode::CREATED,
        axum::Json(json!({"users": users, "groups": groups})),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_hosts() {
        for ok in [
            "127.0.0.1",
            "127.0.0.1:8750",
            "127.200.3.4:1",
            "localhost",
            "LOCALHOST:8750",
            "[::1]",
            "[::1]:8750",
        ] {
            assert!(is_loopback_host(ok), "{ok}");
        }
        for bad in [
            "evil.example",
            "evil.example:8750",
            "localhost.evil.example",
            "127.0.0.1.evil.example",
            "10.0.0.1:8750",
            "0.0.0.0:8750",
            "[::ffff:127.0.0.1]:1",
            "[::1]x",
            "127.0.0.1:port",
            "",
        ] {
            assert!(!is_loopback_host(bad), "{bad}");
        }
    }
}
