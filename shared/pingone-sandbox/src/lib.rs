//! PingOne stand-in: a local HTTP server that answers the PingOne Platform API the way PingOne
//! does, for tests of the PingOne source. One server plays both PingOne hosts:
//!
//! * the authorization server: `POST /{envId}/as/token` (client credentials)
//!   (<https://developer.pingidentity.com/pingone-api/auth/openid-connect-oauth-2/token-admin-app-client_credentials.html>);
//! * the API, reads only: `GET /v1/environments/{envId}/users`, `/users/{id}` (with
//!   `include=memberOfGroupIDs` / `memberOfGroupNames`), `/users/{id}/memberOfGroups` (with
//!   `expand=group`), `/groups`, `/groups/{id}`, `/groups/{id}/memberOfGroups`, `/populations`,
//!   `/populations/{id}`, `/activities` and `/activities/{id}` (the Audit Activities API,
//!   <https://developer.pingidentity.com/pingone-api/platform/audit-activities.html>); other
//!   methods answer 405, as PingOne does for a method a resource does not support
//!   (<https://apidocs.pingidentity.com/pingone/devguide/v1/api/src/reference/conventions/>).
//!
//! Every `/v1` request needs `Authorization: Bearer <token>` with a token this server issued for
//! that environment, else 401 `ACCESS_FAILED`. Every response carries a `correlation-id` header;
//! a P1Error body's `id` is that correlation id. [`PingOneSandbox::throttle_next`] makes the next
//! `/v1` requests answer 429 `REQUEST_LIMITED` with `Retry-After`
//! (<https://developer.pingidentity.com/pingone-api/platform/reference/error-codes.html>).
//!
//! The server binds 127.0.0.1 only and has no admin API: tests change the environment through
//! the methods of [`PingOneSandbox`]. Every such change after start-up appends one audit
//! activity record (USER.*, GROUP.*, MEMBER_OF_GROUP.*; seeded data records none), which
//! `/activities` answers and [`PingOneSandbox::deliver`] POSTs to subscribed local receivers as
//! PingOne webhooks do
//! (<https://developer.pingidentity.com/pingone-api/platform/subscriptions-webhooks.html>).
//! [`Seed::generated`] builds a larger deterministic environment for scenario tests.

mod api;
mod audit;
mod filter;
mod generated_seed;
mod seed;
mod store;
mod token;
mod webhook;
mod wire;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Extension, Path, Request, State};
use axum::http::{HeaderMap, Method, Uri};
use axum::middleware::Next;
use axum::response::Response;
use axum::routing::post;

pub use audit::ActionType;
pub use generated_seed::generated;
pub use seed::{GroupSeed, PopulationSeed, Seed, TokenAuthMethod, UserSeed, WorkerApp, demo};
pub use webhook::Subscription;

use store::Store;
use wire::{CorrelationId, P1Error};

/// Errors of the stand-in's own set-up and of the state-changing methods tests call.
#[derive(Debug, thiserror::Error)]
pub enum PingOneSandboxError {
    #[error("cannot serve on 127.0.0.1: {0}")]
    Io(#[from] std::io::Error),
    #[error("no user has the id {0}")]
    UnknownUser(String),
    #[error("no group has the id {0}")]
    UnknownGroup(String),
    #[error("a group with the id {0} exists already")]
    DuplicateGroup(String),
    #[error("the group {0} is dynamic: its members are the users its userFilter matches")]
    DynamicGroup(String),
    #[error("nesting group {child} in {parent} would make a cycle")]
    NestingCycle { parent: String, child: String },
    #[error("the userFilter of group {group} is not a valid user filter: {message}")]
    InvalidUserFilter { group: String, message: String },
    #[error("{member} is not a direct member of group {group}")]
    NotAMember { group: String, member: String },
    #[error("webhook URL {0} is not on this machine (127.0.0.1, localhost or [::1] only)")]
    NotLocal(String),
    #[error("cannot deliver webhooks: {0}")]
    Webhook(String),
}

/// Requests answered since the server started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    /// Every `/v1` request, whatever its answer (401 and 429 included).
    pub v1_requests: u64,
    /// Every token request, issued or refused.
    pub token_requests: u64,
    /// Every `/v1/environments/{envId}/activities...` request, whatever its answer (also counted
    /// in `v1_requests`).
    pub activities_requests: u64,
}

#[derive(Debug, Default)]
struct ThrottleKnob {
    remaining: u32,
    retry_after_secs: u64,
}

pub(crate) struct Inner {
    environment_id: String,
    apps: Vec<WorkerApp>,
    store: Mutex<Store>,
    tokens: Mutex<HashMap<String, token::Issued>>,
    throttle: Mutex<ThrottleKnob>,
    v1_requests: AtomicU64,
    token_requests: AtomicU64,
    activities_requests: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Inner {
    pub(crate) fn lock_store(&self) -> MutexGuard<'_, Store> {
        lock(&self.store)
    }

    pub(crate) fn remember_token(&self, token: String, issued: token::Issued) {
        lock(&self.tokens).insert(token, issued);
    }

    /// One throttled answer if the knob has any left.
    fn take_throttle(&self) -> Option<u64> {
        let mut knob = lock(&self.throttle);
        if knob.remaining == 0 {
            return None;
        }
        knob.remaining -= 1;
        Some(knob.retry_after_secs)
    }

    /// Whether `headers` carry a live bearer token issued for `environment_id`.
    fn authorized(&self, headers: &HeaderMap, environment_id: Option<&str>) -> bool {
        let Some(token) = headers
            .get(http::header::AUTHORIZATION)
            .and_then(|h| h.to_str().ok())
            .and_then(|h| h.strip_prefix("Bearer "))
        else {
            return false;
        };
        let tokens = lock(&self.tokens);
        tokens.get(token.trim()).is_some_and(|t| {
            t.expires > Instant::now() && environment_id.is_none_or(|e| e == t.environment_id)
        })
    }
}

/// A running stand-in. Dropping it stops the server.
pub struct PingOneSandbox {
    url: String,
    inner: Arc<Inner>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    handle: Option<tokio::task::JoinHandle<()>>,
}

impl std::fmt::Debug for PingOneSandbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PingOneSandbox")
            .field("url", &self.url)
            .field("environment_id", &self.inner.environment_id)
            .finish_non_exhaustive()
    }
}

impl PingOneSandbox {
    /// Builds the environment from `seed` and serves it on 127.0.0.1 with an ephemeral port.
    pub async fn start(seed: Seed) -> Result<Self, PingOneSandboxError> {
        Self::start_on(seed, 0).await
    }

    /// The same on `port` of 127.0.0.1 (0: a free one).
    pub async fn start_on(seed: Seed, port: u16) -> Result<Self, PingOneSandboxError> {
        let mut store = Store::from_seed(&seed)?;
        let listener =
            tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], port))).await?;
        let local = listener.local_addr()?;
        let url = format!("http://{local}");
        let actor = seed.apps.first().map_or("", |a| a.client_id.as_str());
        store.audit.enable(&url, &seed.environment_id, actor);
        let inner = Arc::new(Inner {
            environment_id: seed.environment_id.clone(),
            apps: seed.apps.clone(),
            store: Mutex::new(store),
            tokens: Mutex::new(HashMap::new()),
            throttle: Mutex::new(ThrottleKnob::default()),
            v1_requests: AtomicU64::new(0),
            token_requests: AtomicU64::new(0),
            activities_requests: AtomicU64::new(0),
        });
        let router = router(inner.clone());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let handle = tokio::spawn(async move {
            let served = axum::serve(listener, router)
                .with_graceful_shutdown(async move {
                    let _ = rx.await;
                })
                .await;
            if let Err(e) = served {
                tracing::warn!(error = %e, "PingOne stand-in stopped");
            }
        });
        Ok(Self {
            url,
            inner,
            shutdown: Some(tx),
            handle: Some(handle),
        })
    }

    /// `http://127.0.0.1:PORT` (no trailing slash): the base of both the authorization server
    /// (`{url}/{envId}/as/token`) and the API (`{url}/v1/...`).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// `{url}/{envId}/as/token`.
    pub fn token_url(&self) -> String {
        format!("{}/{}/as/token", self.url, self.inner.environment_id)
    }

    pub fn environment_id(&self) -> &str {
        &self.inner.environment_id
    }

    /// Adds a user (last in list order); returns its id. Records `USER.CREATED`.
    pub fn add_user(&self, user: UserSeed) -> String {
        self.inner.lock_store().add_user(user)
    }

    /// Changes a user in place (its id stays) and moves its `updatedAt`. Records `USER.UPDATED`
    /// with the changed top-level attributes in `_embedded.modifiedAttributes`.
    pub fn update_user(
        &self,
        id: &str,
        change: impl FnOnce(&mut UserSeed),
    ) -> Result<(), PingOneSandboxError> {
        self.inner.lock_store().update_user(id, change)
    }

    /// Deletes a user and its group memberships. Records `USER.DELETED`.
    pub fn delete_user(&self, id: &str) -> Result<(), PingOneSandboxError> {
        self.inner.lock_store().delete_user(id)
    }

    /// Adds a group (its `member_group_ids` are nested in it); returns its id. Records
    /// `GROUP.CREATED`, then `MEMBER_OF_GROUP.CREATED` per member and `GROUP.UPDATED` per nested
    /// group.
    pub fn add_group(&self, group: GroupSeed) -> Result<String, PingOneSandboxError> {
        self.inner.lock_store().add_group(group)
    }

    /// Changes a group's attributes in place (its id, members and nested groups stay; use
    /// [`Self::add_member`] and [`Self::nest_group`] for those). Records `GROUP.UPDATED`.
    pub fn update_group(
        &self,
        id: &str,
        change: impl FnOnce(&mut GroupSeed),
    ) -> Result<(), PingOneSandboxError> {
        self.inner.lock_store().update_group(id, change)
    }

    /// Deletes a group with its memberships and nestings. Records `GROUP.DELETED`.
    pub fn delete_group(&self, id: &str) -> Result<(), PingOneSandboxError> {
        self.inner.lock_store().delete_group(id)
    }

    /// Makes a user a direct member of a static group. Records `MEMBER_OF_GROUP.CREATED` (none
    /// if the user was a member already).
    pub fn add_member(&self, group_id: &str, user_id: &str) -> Result<(), PingOneSandboxError> {
        self.inner.lock_store().add_member(group_id, user_id)
    }

    /// Removes a user's direct membership of a group. Records `MEMBER_OF_GROUP.DELETED`.
    pub fn remove_member(&self, group_id: &str, user_id: &str) -> Result<(), PingOneSandboxError> {
        self.inner.lock_store().remove_member(group_id, user_id)
    }

    /// Nests `child` directly in `parent`. Records `GROUP.UPDATED` for `child` (none if it was
    /// nested already): PingOne does not document the event of a nesting.
    pub fn nest_group(&self, parent: &str, child: &str) -> Result<(), PingOneSandboxError> {
        self.inner.lock_store().nest_group(parent, child)
    }

    /// Takes `child` out of `parent`. Records `GROUP.UPDATED` for `child`.
    pub fn unnest_group(&self, parent: &str, child: &str) -> Result<(), PingOneSandboxError> {
        self.inner.lock_store().unnest_group(parent, child)
    }

    /// Every audit activity recorded so far, oldest first (as `/activities` answers them,
    /// without `_links`).
    pub fn activities(&self) -> Vec<serde_json::Value> {
        self.inner.lock_store().audit.records().to_vec()
    }

    /// Subscribes a local receiver to the records of `included_action_types` recorded from now
    /// on; refuses a URL whose host is not 127.0.0.1, localhost or [::1].
    pub fn subscribe(&self, subscription: Subscription) -> Result<(), PingOneSandboxError> {
        webhook::check_local(&subscription.url)?;
        self.inner
            .lock_store()
            .audit
            .subscriptions
            .push(audit::Queued {
                subscription,
                queue: std::collections::VecDeque::new(),
            });
        Ok(())
    }

    /// POSTs the queued records, in batches of at most 500 (one JSON array each), subscription
    /// by subscription. A batch answered 200 leaves the queue; the first other answer stops the
    /// delivery and keeps that batch and all behind it queued, as PingOne retries the head batch
    /// until it gets 200. A connection failure counts as status 0. Returns the status of every
    /// POST made, in order.
    pub async fn deliver(&self) -> Result<Vec<u16>, PingOneSandboxError> {
        webhook::deliver(&self.inner).await
    }

    /// Records queued for delivery, all subscriptions together.
    pub fn pending_deliveries(&self) -> usize {
        self.inner
            .lock_store()
            .audit
            .subscriptions
            .iter()
            .map(|q| q.queue.len())
            .sum()
    }

    /// Empties every subscription's queue: the events are lost, as when PingOne drops events
    /// older than its retention.
    pub fn drop_pending(&self) {
        for q in &mut self.inner.lock_store().audit.subscriptions {
            q.queue.clear();
        }
    }

    /// The next `n` `/v1` requests answer 429 `REQUEST_LIMITED` with `Retry-After: secs`
    /// (replaces what is left of an earlier call).
    pub fn throttle_next(&self, n: u32, retry_after_secs: u64) {
        *lock(&self.inner.throttle) = ThrottleKnob {
            remaining: n,
            retry_after_secs,
        };
    }

    /// Makes every token issued so far expired.
    pub fn expire_tokens(&self) {
        let now = Instant::now();
        for t in lock(&self.inner.tokens).values_mut() {
            t.expires = now;
        }
    }

    pub fn counters(&self) -> Counters {
        Counters {
            v1_requests: self.inner.v1_requests.load(Ordering::Relaxed),
            token_requests: self.inner.token_requests.load(Ordering::Relaxed),
            activities_requests: self.inner.activities_requests.load(Ordering::Relaxed),
        }
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

impl Drop for PingOneSandbox {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(handle) = self.handle.take() {
            handle.abort();
        }
    }
}

fn router(inner: Arc<Inner>) -> Router {
    Router::new()
        .route("/{env}/as/token", post(token_handler))
        .fallback(v1_handler)
        .layer(axum::middleware::from_fn(correlation))
        .with_state(inner)
}

/// Gives every request a correlation id (a request extension) and every response its header.
async fn correlation(mut req: Request, next: Next) -> Response {
    let cid = CorrelationId::new();
    req.extensions_mut().insert(cid.clone());
    let mut response = next.run(req).await;
    wire::stamp(&mut response, &cid);
    response
}

async fn token_handler(
    State(inner): State<Arc<Inner>>,
    Extension(cid): Extension<CorrelationId>,
    Path(env): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    inner.token_requests.fetch_add(1, Ordering::Relaxed);
    token::issue(&inner, &env, &headers, &body, &cid)
}

/// `/v1/...`: throttling knob, then the bearer token, then the route. Anything else is a 404.
async fn v1_handler(
    State(inner): State<Arc<Inner>>,
    Extension(cid): Extension<CorrelationId>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let path = uri.path();
    if path != "/v1" && !path.starts_with("/v1/") {
        return P1Error::not_found().response(&cid);
    }
    inner.v1_requests.fetch_add(1, Ordering::Relaxed);
    if api::is_activities(path) {
        inner.activities_requests.fetch_add(1, Ordering::Relaxed);
    }
    if let Some(secs) = inner.take_throttle() {
        return P1Error::request_limited(secs).response(&cid);
    }
    let environment_id = path
        .strip_prefix("/v1/environments/")
        .and_then(|rest| rest.split('/').next());
    if !inner.authorized(&headers, environment_id) {
        return P1Error::access_failed().response(&cid);
    }
    if method != Method::GET {
        return P1Error::method_not_allowed().response(&cid);
    }
    let base = api::base_url(&headers);
    api::route(&inner, path, uri.query(), &base, &cid)
}
