//! The client core: request execution with tokens, pacing, concurrency, retries, counters.

use std::future::Future;
use std::marker::PhantomData;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use backon::Retryable;
use bytes::Bytes;
use reqwest::Method;
use reqwest::header::{HeaderMap, HeaderValue};
use secrecy::ExposeSecret;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use tracing::Instrument;

use crate::answer_times::{AnswerClass, AnswerTimes, WhenLate};
use crate::apps::{AppUsage, Lane, Lanes};
use crate::error::{ErrorContext, GraphError, classify, parse_retry_after};
use crate::limiter::{Limiter, Load};
use crate::pacing::{Cost, Pacer, PacerRegistry, ThrottleSignal, request_cost};
use crate::settings::{Credentials, Endpoints, GraphSettings};
use crate::token::{
    IssuedToken, TokenCache, TokenClaims, TokenFetcher, decode_claims, redirect_target,
    transport_kind,
};

/// A late idempotent request is sent at most this many times in all: a `$batch` envelope of 20
/// items is late when any item is, so a hedge of it may be late too.
const MAX_SENDS: usize = 6;
/// How often a waiting request judges again whether its answer is late.
const RECHECK_LATE: Duration = Duration::from_millis(250);

/// `User-Agent` sent on every request.
pub const USER_AGENT: &str = concat!("m365-provisioner/", env!("CARGO_PKG_VERSION"));

/// Counters of what this client (and its clones) sent and received.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RequestStats {
    /// Graph requests, batch items counted one by one (the `$batch` envelope is not counted).
    pub requests: u64,
    /// HTTP requests sent to Graph (a `$batch` envelope counts once; retries count).
    pub http_requests: u64,
    /// Write requests (POST/PATCH/PUT/DELETE), batch items included.
    pub writes: u64,
    /// 429 responses received, batch items included.
    pub throttled: u64,
    /// Retries of whole requests or batch items (throttling, transient, replication lag).
    pub retries: u64,
    /// Token requests this client made to the token endpoint.
    pub token_requests: u64,
}

#[derive(Debug, Default)]
pub(crate) struct Stats {
    requests: AtomicU64,
    http_requests: AtomicU64,
    writes: AtomicU64,
    throttled: AtomicU64,
    retries: AtomicU64,
    token_requests: AtomicU64,
}

impl Stats {
    pub(crate) fn count_request(&self, method: &Method) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        if is_write(method) {
            self.writes.fetch_add(1, Ordering::Relaxed);
        }
    }
    pub(crate) fn count_throttled(&self) {
        self.throttled.fetch_add(1, Ordering::Relaxed);
    }
    pub(crate) fn count_retry(&self) {
        self.retries.fetch_add(1, Ordering::Relaxed);
    }
    fn snapshot(&self) -> RequestStats {
        RequestStats {
            requests: self.requests.load(Ordering::Relaxed),
            http_requests: self.http_requests.load(Ordering::Relaxed),
            writes: self.writes.load(Ordering::Relaxed),
            throttled: self.throttled.load(Ordering::Relaxed),
            retries: self.retries.load(Ordering::Relaxed),
            token_requests: self.token_requests.load(Ordering::Relaxed),
        }
    }
}

pub(crate) fn is_write(method: &Method) -> bool {
    matches!(
        *method,
        Method::POST | Method::PATCH | Method::PUT | Method::DELETE
    )
}

/// Token cache and pacer registry a client uses; by default the process-wide ones.
#[derive(Debug, Clone)]
pub struct SharedState {
    pub tokens: Arc<TokenCache>,
    pub pacers: Arc<PacerRegistry>,
}

impl Default for SharedState {
    fn default() -> Self {
        SharedState {
            tokens: TokenCache::global(),
            pacers: PacerRegistry::global(),
        }
    }
}

impl SharedState {
    /// A private token cache and pacer registry (tests, or isolating tenants).
    pub fn isolated() -> Self {
        SharedState {
            tokens: Arc::new(TokenCache::new()),
            pacers: Arc::new(PacerRegistry::new()),
        }
    }
}

/// Microsoft Graph v1.0 client. Cheap to clone; clones share tokens, pacing, the concurrency
/// limit and counters.
#[derive(Clone)]
pub struct GraphClient {
    pub(crate) inner: Arc<Inner>,
}

impl std::fmt::Debug for GraphClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GraphClient")
            .field("graph", &self.inner.endpoints.graph_base)
            .field("tenant", &self.inner.lanes.primary().credentials.tenant)
            .field(
                "client_ids",
                &self
                    .inner
                    .lanes
                    .usage()
                    .into_iter()
                    .map(|a| a.client_id)
                    .collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

pub(crate) struct Inner {
    pub(crate) settings: GraphSettings,
    pub(crate) endpoints: Endpoints,
    /// The app registrations requests go through, each with its credentials and pacer.
    pub(crate) lanes: Lanes,
    http: reqwest::Client,
    tokens: Arc<TokenCache>,
    limiter: Limiter,
    pub(crate) stats: Stats,
    answer_times: AnswerTimes,
}

/// One request to send: absolute URL plus what errors, logs and pacing need. Its `Debug` shows
/// no body: a body may hold a password (`passwordProfile`).
#[derive(Clone)]
pub(crate) struct Call {
    pub(crate) method: Method,
    pub(crate) url: String,
    /// Path below the version root, no query (for errors, logs and cost).
    pub(crate) path: String,
    query: String,
    pub(crate) body: Option<Value>,
    /// Re-send after a transient failure. Off for creates, whose retry is an explicit
    /// look-up-then-create in the operation (docs/graph-behaviour.md#uncertain-creates).
    pub(crate) retry_transient: bool,
    /// What a late answer makes of the call.
    pub(crate) when_late: WhenLate,
    /// Set when the call was given up because its answer was late ([`WhenLate::Split`]): such
    /// a call is not retried as it stands; its caller sends its items again.
    pub(crate) given_up_late: Arc<AtomicBool>,
    /// Whose answer times its own are compared with.
    pub(crate) class: AnswerClass,
    /// What the quota is charged for it, when not its own cost: a `$batch` envelope is
    /// charged its items'.
    pub(crate) charge: Option<Cost>,
}

impl std::fmt::Debug for Call {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Call")
            .field("method", &self.method)
            .field("path", &self.path)
            .field("body", &self.body.as_ref().map(|_| "[REDACTED]"))
            .field("retry_transient", &self.retry_transient)
            .field("when_late", &self.when_late)
            .finish_non_exhaustive()
    }
}

/// What Graph answered to one exchange.
struct Answer {
    status: u16,
    headers: HeaderMap,
    body: Bytes,
    ctx: ErrorContext,
    /// Its class's recent answer time over the long-run one (see [`AnswerTimes::record`]).
    ratio: f64,
}

/// A successful response.
#[derive(Debug)]
pub(crate) struct RawResponse {
    pub(crate) body: Bytes,
    /// The lane (app registration) it came through.
    pub(crate) lane: usize,
}

#[derive(Deserialize)]
pub(crate) struct Collection<T> {
    #[serde(default = "Vec::new")]
    pub(crate) value: Vec<T>,
    #[serde(rename = "@odata.nextLink", default)]
    pub(crate) next_link: Option<String>,
}

impl GraphClient {
    /// A client using the process-wide token cache and pacer registry.
    pub fn new(settings: GraphSettings, credentials: Credentials) -> Result<Self, GraphError> {
        GraphClient::with_shared(settings, credentials, SharedState::default())
    }

    /// A client using the given token cache and pacer registry.
    pub fn with_shared(
        settings: GraphSettings,
        credentials: Credentials,
        shared: SharedState,
    ) -> Result<Self, GraphError> {
        GraphClient::with_apps(settings, vec![credentials], shared)
    }

    /// A client writing through several app registrations of one tenant (the first names the
    /// connection), each paced at its own quota and all together at the tenant's (see
    /// [`crate::apps`]).
    pub fn with_apps(
        settings: GraphSettings,
        apps: Vec<Credentials>,
        shared: SharedState,
    ) -> Result<Self, GraphError> {
        settings.validate()?;
        for credentials in &apps {
            check_credentials(credentials)?;
        }
        let endpoints = settings.endpoints()?;
        let http = reqwest::Client::builder()
            .user_agent(USER_AGENT)
            .timeout(settings.request_timeout)
            .connect_timeout(settings.request_timeout.min(Duration::from_secs(10)))
            .pool_idle_timeout(Duration::from_secs(60))
            // A redirect would carry the bearer token (or, at the token endpoint, the client
            // secret) to whatever host it names: never follow one; a 3xx is an error.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| GraphError::Config(format!("cannot build the HTTP client: {e}")))?;
        let lanes = Lanes::new(
            apps,
            &endpoints.graph_host,
            &settings.pacing,
            &shared.pacers,
        )?;
        Ok(GraphClient {
            inner: Arc::new(Inner {
                limiter: Limiter::new(settings.concurrency, settings.adaptive_concurrency),
                settings,
                endpoints,
                lanes,
                http,
                tokens: shared.tokens,
                stats: Stats::default(),
                answer_times: AnswerTimes::default(),
            }),
        })
    }

    pub fn settings(&self) -> &GraphSettings {
        &self.inner.settings
    }

    pub fn endpoints(&self) -> &Endpoints {
        &self.inner.endpoints
    }

    pub fn tenant(&self) -> &str {
        &self.inner.lanes.primary().credentials.tenant
    }

    /// What each app registration sent, and whether the tenant refused it.
    pub fn app_usage(&self) -> Vec<AppUsage> {
        self.inner.lanes.usage()
    }

    /// Counters since this client was built (shared with clones).
    pub fn stats(&self) -> RequestStats {
        self.inner.stats.snapshot()
    }

    /// Graph requests sent (batch items counted individually).
    pub fn request_count(&self) -> u64 {
        self.stats().requests
    }

    /// The pacer's current rate multiplier (1.0 = full configured quota).
    /// Requests the client lets in flight now (adaptive concurrency moves it).
    pub fn concurrency_limit(&self) -> usize {
        self.inner.limiter.limit()
    }

    /// Late answers hedged by a second request so far.
    pub fn hedges(&self) -> u64 {
        self.inner.answer_times.hedges()
    }

    /// The first app's pacing factor.
    pub fn pacing_factor(&self) -> f64 {
        self.inner.lanes.primary().pacer.rate_factor()
    }

    fn fetcher<'a>(&'a self, lane: &'a Lane) -> TokenFetcher<'a> {
        TokenFetcher {
            http: &self.inner.http,
            endpoints: &self.inner.endpoints,
            credentials: &lane.credentials,
            policy: &self.inner.settings.transient_retry,
        }
    }

    async fn token(
        &self,
        lane: usize,
        rejected: Option<&IssuedToken>,
    ) -> Result<IssuedToken, GraphError> {
        let lane = self.inner.lanes.get(lane);
        let (token, fetched) = self.inner.tokens.get(&self.fetcher(lane), rejected).await?;
        if fetched {
            self.inner
                .stats
                .token_requests
                .fetch_add(1, Ordering::Relaxed);
        }
        Ok(token)
    }

    /// Obtains a token for every app registration now (fetching them if needed): the first
    /// step of a connection test. The first refusal is the error; it names its app.
    pub async fn authenticate(&self) -> Result<(), GraphError> {
        for lane in 0..self.inner.lanes.len() {
            self.token(lane, None).await?;
        }
        Ok(())
    }

    /// Claims of the first app's current access token (fetching one if needed).
    pub async fn token_claims(&self) -> Result<TokenClaims, GraphError> {
        let t = self.token(0, None).await?;
        Ok(decode_claims(t.value.expose_secret()).unwrap_or_default())
    }

    /// The application permissions (`roles` claim) of the current token.
    pub async fn token_roles(&self) -> Result<Vec<String>, GraphError> {
        Ok(self.token_claims().await?.roles)
    }

    // ---- request building ------------------------------------------------------------------

    /// A call to `path_and_query`, relative to the version root (`/users?$top=999`).
    pub(crate) fn call(&self, method: Method, path_and_query: &str, body: Option<Value>) -> Call {
        let (path, query) = match path_and_query.split_once('?') {
            Some((p, q)) => (p.to_string(), q.to_string()),
            None => (path_and_query.to_string(), String::new()),
        };
        Call {
            retry_transient: true,
            when_late: WhenLate::Hedge,
            given_up_late: Arc::default(),
            class: AnswerClass::of(&method),
            charge: None,
            url: format!("{}{}", self.inner.endpoints.graph_base, path_and_query),
            method,
            path,
            query,
            body,
        }
    }

    /// A call to an absolute URL Graph gave us (`@odata.nextLink`), used verbatim. Refuses URLs
    /// on another host so the bearer token never leaves Graph.
    pub(crate) fn call_absolute(&self, url: &str) -> Result<Call, GraphError> {
        let host = &self.inner.endpoints.graph_host;
        let base = &self.inner.endpoints.graph_base;
        if !self.on_graph_host(url) {
            return Err(GraphError::Decode {
                detail:
                    "a nextLink pointed outside the configured Graph host; refusing to follow it"
                        .into(),
                ctx: Box::new(ErrorContext {
                    method: "GET".into(),
                    path: "(nextLink)".into(),
                    ..ErrorContext::default()
                }),
            });
        }
        let rest = url
            .get(base.len()..)
            .filter(|_| url.starts_with(base.as_str()))
            .unwrap_or(&url[host.len()..]);
        let (path, query) = match rest.split_once('?') {
            Some((p, q)) => (p.to_string(), q.to_string()),
            None => (rest.to_string(), String::new()),
        };
        Ok(Call {
            method: Method::GET,
            url: url.to_string(),
            path,
            query,
            body: None,
            retry_transient: true,
            when_late: WhenLate::Hedge,
            given_up_late: Arc::default(),
            class: AnswerClass::Read,
            charge: None,
        })
    }

    /// Whether `url` is on the configured Graph host, the only one the bearer token goes to.
    pub(crate) fn on_graph_host(&self, url: &str) -> bool {
        let host = &self.inner.endpoints.graph_host;
        url.get(..host.len())
            .is_some_and(|p| p.eq_ignore_ascii_case(host))
            && url[host.len()..].starts_with('/')
    }

    pub(crate) fn cost(&self, call: &Call) -> Cost {
        call.charge
            .unwrap_or_else(|| request_cost(call.method.as_str(), &call.path, &call.query))
    }

    pub(crate) fn graph_base(&self) -> &str {
        &self.inner.endpoints.graph_base
    }

    // ---- execution ---------------------------------------------------------------------------

    /// Sends `call`, retrying throttling (after Retry-After) and transient failures (backoff
    /// with jitter), bounded by `max_attempts` and `transient_retry.max_attempts`.
    pub(crate) async fn send(&self, call: &Call) -> Result<RawResponse, GraphError> {
        let settings = &self.inner.settings;
        let transient_cap = settings.transient_retry.max_attempts.max(1);
        let mut policy = settings.transient_retry.clone();
        policy.max_attempts = settings.max_attempts;
        let mut transient_failures: u32 = 0;
        let attempt_counter = std::sync::atomic::AtomicU32::new(0);
        let op = || {
            let n = attempt_counter.fetch_add(1, Ordering::Relaxed) + 1;
            self.attempt(call, n)
        };
        op.retry(policy.backoff())
            .sleep(tokio::time::sleep)
            .when(|e: &GraphError| match e {
                GraphError::Throttled { .. } => true,
                GraphError::Transient { .. } => {
                    call.retry_transient && !call.given_up_late.load(Ordering::Relaxed)
                }
                _ => false,
            })
            .adjust(|e, next| {
                if matches!(e, GraphError::Transient { .. }) {
                    transient_failures += 1;
                    if transient_failures >= transient_cap {
                        return None;
                    }
                }
                // Retry-After overrides the computed backoff; without one, back off.
                let next = next?;
                Some(e.retry_after().unwrap_or(next))
            })
            .notify(|e, d| {
                self.inner.stats.count_retry();
                tracing::warn!(
                    method = %call.method, path = %call.path, status = e.status().unwrap_or(0),
                    delay_ms = d.as_millis() as u64, error = %e, "Graph request failed; retrying"
                );
            })
            .await
    }

    async fn attempt(&self, call: &Call, attempt: u32) -> Result<RawResponse, GraphError> {
        let span = tracing::debug_span!(
            "graph_request",
            method = %call.method,
            path = %call.path,
            attempt,
            status = tracing::field::Empty,
        );
        async {
            let (lane, slot, mut token) = loop {
                let cost = self.cost(call);
                let lane = self.inner.lanes.acquire(cost).await;
                let slot = self
                    .inner
                    .limiter
                    .acquire()
                    .await
                    .map_err(|_| GraphError::Config("the client was shut down".into()))?;
                match self.token(lane, None).await {
                    Ok(token) => {
                        self.inner
                            .lanes
                            .get(lane)
                            .count_writes(u64::from(cost.writes));
                        break (lane, slot, token);
                    }
                    // Another app takes the request.
                    Err(e) if self.inner.lanes.refuse(lane, &e) => continue,
                    Err(e) => return Err(e),
                }
            };
            let mut renewed = false;
            loop {
                let answer = self.exchange_in_time(call, &token).await?;
                let status = answer.status;
                tracing::Span::current().record("status", status);
                if status == 401 && !renewed {
                    // The token may have been revoked or expired early: renew once.
                    renewed = true;
                    token = self.token(lane, Some(&token)).await?;
                    continue;
                }
                let ratio = answer.ratio;
                let (judged, episode) = self.judge(answer, lane);
                let load = if episode {
                    Load::ThrottleEpisode
                } else {
                    Load::Answered { ratio }
                };
                self.inner.limiter.learn(load, slot.saturated);
                return judged;
            }
        }
        .instrument(span)
        .await
    }

    /// What an answer means: the body of a success, or the error it carries; the pacer learns
    /// from it. True with it when the answer began a throttling episode.
    fn judge(&self, answer: Answer, lane: usize) -> (Result<RawResponse, GraphError>, bool) {
        let Answer {
            status,
            headers,
            body,
            mut ctx,
            ratio: _,
        } = answer;
        let retry_after = header_str(&headers, "retry-after").and_then(parse_retry_after);
        let mut episode = false;
        if status == 429 {
            self.inner.stats.count_throttled();
            let scope = header_str(&headers, "x-ms-throttle-scope");
            episode = self
                .throttled_pacer(lane, scope)
                .on_throttled(retry_after, throttle_signal(scope));
        } else if (200..300).contains(&status) {
            self.inner.lanes.get(lane).pacer.on_success(
                header_str(&headers, "x-ms-throttle-limit-percentage")
                    .and_then(|v| v.trim().parse::<f64>().ok()),
            );
            crate::answered::note(header_str(&headers, "request-id"));
            tracing::debug!(status, "Graph request done");
            return (Ok(RawResponse { body, lane }), false);
        }
        ctx.request_id = header_str(&headers, "request-id").map(str::to_string);
        if (300..400).contains(&status) {
            return (Err(self.redirected(ctx, status, &headers)), episode);
        }
        let err = classify(ctx, status, &body, retry_after);
        tracing::debug!(status, error = %err, "Graph request failed");
        (Err(err), episode)
    }

    /// The pacer a 429 through `lane` speaks of: the tenant's when its `x-ms-throttle-scope`
    /// names the tenant's own quota (`Tenant/…`, not `Tenant_Application/…`), else the app's.
    pub(crate) fn throttled_pacer(&self, lane: usize, scope: Option<&str>) -> &Pacer {
        let tenant_wide = scope.is_some_and(|s| {
            s.trim()
                .split('/')
                .next()
                .is_some_and(|first| first.eq_ignore_ascii_case("Tenant"))
        });
        match self.inner.lanes.tenant_pacer() {
            Some(tenant) if tenant_wide => tenant,
            _ => &self.inner.lanes.get(lane).pacer,
        }
    }

    /// One exchange, with a late answer handled as the call says ([`WhenLate`]): hedged by a
    /// further exchange each time it is late again, given up as a timeout, or waited for. Lateness is judged
    /// again as answers come in, so a request sent before enough answers were known is not
    /// left waiting for the request timeout.
    async fn exchange_in_time(
        &self,
        call: &Call,
        token: &IssuedToken,
    ) -> Result<Answer, GraphError> {
        if call.when_late == WhenLate::Wait {
            return self.exchange(call, token).await;
        }
        let class = call.class;
        let timeout = self.inner.settings.request_timeout;
        // Each send is late `late` after the one before it: when `late` drops while a request
        // waits, one more send goes out, not one for every multiple of `late` already past.
        let mut last_sent = tokio::time::Instant::now();
        let mut sent = futures::stream::FuturesUnordered::new();
        sent.push(self.exchange(call, token));
        loop {
            let late = self.inner.answer_times.late_after(class, timeout);
            let due = late;
            let elapsed = last_sent.elapsed();
            let is_late = late < timeout && elapsed >= due;
            if is_late && call.when_late == WhenLate::GiveUp {
                tracing::info!(
                    late_ms = late.as_millis() as u64,
                    "Graph's answer is late; giving the request up and looking its outcome up"
                );
                return Err(late_error(call, late));
            }
            if is_late && call.when_late == WhenLate::Split && self.inner.answer_times.take_hedge()
            {
                tracing::info!(
                    late_ms = late.as_millis() as u64,
                    "Graph's answer to a batch is late; sending its items again in smaller envelopes"
                );
                call.given_up_late.store(true, Ordering::Relaxed);
                return Err(late_error(call, late));
            }
            if is_late && sent.len() < MAX_SENDS && self.inner.answer_times.take_hedge() {
                tracing::info!(
                    late_ms = late.as_millis() as u64,
                    sent = sent.len(),
                    "Graph's answer is late; sending the request again beside it"
                );
                sent.push(self.exchange(call, token));
                last_sent = tokio::time::Instant::now();
                continue;
            }
            let wait = if late < timeout && elapsed < due {
                (due - elapsed).min(RECHECK_LATE)
            } else {
                RECHECK_LATE
            };
            tokio::select! {
                Some(answer) = futures::StreamExt::next(&mut sent) => return answer,
                () = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// Sends `call` once and reads the whole answer; its time is remembered when it comes.
    async fn exchange(&self, call: &Call, token: &IssuedToken) -> Result<Answer, GraphError> {
        let started = tokio::time::Instant::now();
        let client_request_id = uuid::Uuid::new_v4().to_string();
        let mut ctx = ErrorContext {
            method: call.method.to_string(),
            path: call.path.clone(),
            client_request_id: Some(client_request_id.clone()),
            ..ErrorContext::default()
        };
        let mut req = self
            .inner
            .http
            .request(call.method.clone(), &call.url)
            .bearer_auth(token.value.expose_secret())
            .header("client-request-id", &client_request_id)
            .header("Accept", "application/json");
        if self.inner.settings.background_priority {
            req = req.header("x-ms-throttle-priority", "Low");
        }
        if let Some(body) = &call.body {
            req = req.json(body);
        } else if is_write(&call.method) {
            req = req.header("Content-Length", "0");
        }
        self.inner
            .stats
            .http_requests
            .fetch_add(1, Ordering::Relaxed);
        if call.path != "/$batch" {
            self.inner.stats.count_request(&call.method);
        }
        let resp = match req.send().await {
            Ok(r) => r,
            Err(e) => {
                ctx.message = if e.is_timeout() {
                    format!(
                        "request timed out after {:.1} s",
                        self.inner.settings.request_timeout.as_secs_f64()
                    )
                } else {
                    transport_kind(&e).to_string()
                };
                return Err(GraphError::transport(ctx));
            }
        };
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = match resp.bytes().await {
            Ok(b) => b,
            Err(e) => {
                ctx.status = Some(status);
                ctx.message = transport_kind(&e).to_string();
                return Err(GraphError::transport(ctx));
            }
        };
        let ratio = self
            .inner
            .answer_times
            .record(call.class, started.elapsed());
        Ok(Answer {
            status,
            headers,
            body,
            ctx,
            ratio,
        })
    }

    /// The error for a 3xx answer, which is never followed: it names the Graph host that
    /// answered and the host the redirect pointed at.
    fn redirected(&self, mut ctx: ErrorContext, status: u16, headers: &HeaderMap) -> GraphError {
        ctx.status = Some(status);
        ctx.message = format!(
            "the Graph host {} answered with a redirect to {}; redirects are not followed so \
             the access token stays on that host: set graph_url to the Graph host itself, or \
             leave it unset",
            self.inner.endpoints.graph_host,
            redirect_target(header_str(headers, "location")),
        );
        GraphError::BadRequest { ctx: Box::new(ctx) }
    }

    /// Retries `op` while it fails with replication lag (404 / "do not exist"), per
    /// `replication_retry`.
    pub(crate) async fn with_replication_retry<T, F, Fut>(&self, op: F) -> Result<T, GraphError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, GraphError>>,
    {
        op.retry(self.inner.settings.replication_retry.backoff())
            .sleep(tokio::time::sleep)
            .when(|e: &GraphError| e.is_replication_lag())
            .notify(|e, d| {
                self.inner.stats.count_retry();
                tracing::info!(delay_ms = d.as_millis() as u64, error = %e, "object not visible yet (replication); retrying");
            })
            .await
    }

    // ---- JSON helpers ------------------------------------------------------------------------

    pub(crate) async fn send_json<T: DeserializeOwned>(&self, call: Call) -> Result<T, GraphError> {
        let resp = self.send(&call).await?;
        decode(&call, &resp.body)
    }

    pub(crate) async fn get_json<T: DeserializeOwned>(&self, path: &str) -> Result<T, GraphError> {
        self.send_json(self.call(Method::GET, path, None)).await
    }

    /// GET where 404 means "absent".
    pub(crate) async fn get_optional<T: DeserializeOwned>(
        &self,
        path: &str,
    ) -> Result<Option<T>, GraphError> {
        match self.get_json(path).await {
            Ok(v) => Ok(Some(v)),
            Err(GraphError::NotFound { ctx }) if ctx.status == Some(404) => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub(crate) async fn send_no_content(&self, call: Call) -> Result<(), GraphError> {
        self.send(&call).await.map(|_| ())
    }

    /// All pages of a collection (for small collections: domains, SKUs, license details).
    pub(crate) async fn get_all<T: DeserializeOwned>(
        &self,
        path: &str,
    ) -> Result<Vec<T>, GraphError> {
        let mut pager = Pager::<T>::new(self.clone(), path);
        let mut out = Vec::new();
        while let Some(page) = pager.next_page().await? {
            out.extend(page);
        }
        Ok(out)
    }
}

pub(crate) fn decode<T: DeserializeOwned>(call: &Call, body: &[u8]) -> Result<T, GraphError> {
    let body = if body.is_empty() {
        b"null".as_slice()
    } else {
        body
    };
    serde_json::from_slice(body).map_err(|e| {
        GraphError::decode(
            ErrorContext {
                method: call.method.to_string(),
                path: call.path.clone(),
                ..ErrorContext::default()
            },
            e.to_string(),
        )
    })
}

/// A 429's `x-ms-throttle-scope` names the quota that ran dry
/// (<https://learn.microsoft.com/graph/throttling-limits>); without it the cause is unknown.
pub(crate) fn throttle_signal(scope: Option<&str>) -> ThrottleSignal {
    match scope {
        Some(s) if !s.trim().is_empty() => ThrottleSignal::Quota,
        _ => ThrottleSignal::Unscoped,
    }
}

/// A clear error for credentials that cannot work, before any request is made.
fn check_credentials(credentials: &Credentials) -> Result<(), GraphError> {
    if credentials.tenant.trim().is_empty() {
        return Err(GraphError::Config(
            "tenant is empty; set the directory (tenant) ID or its domain name".into(),
        ));
    }
    if credentials.client_id.trim().is_empty() {
        return Err(GraphError::Config(
            "client_id is empty; set the application (client) ID of the app registration".into(),
        ));
    }
    if let crate::settings::ClientCredential::Secret(secret) = &credentials.credential
        && secret.expose_secret().is_empty()
    {
        return Err(GraphError::Config(format!(
            "client_secret of app {} is empty; set the client secret's Value",
            credentials.client_id
        )));
    }
    Ok(())
}

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get(name)
        .and_then(|v: &HeaderValue| v.to_str().ok())
}

/// A page-at-a-time reader of a Graph collection: follows `@odata.nextLink` verbatim and holds
/// one page in memory at a time. Empty pages that still carry a nextLink are returned as empty.
pub struct Pager<T> {
    client: GraphClient,
    first: Option<String>,
    next: Option<String>,
    done: bool,
    pages: u64,
    _item: PhantomData<fn() -> T>,
}

impl<T> std::fmt::Debug for Pager<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pager")
            .field("pages", &self.pages)
            .field("done", &self.done)
            .finish_non_exhaustive()
    }
}

impl<T: DeserializeOwned> Pager<T> {
    pub(crate) fn new(client: GraphClient, path_and_query: &str) -> Self {
        Pager {
            client,
            first: Some(path_and_query.to_string()),
            next: None,
            done: false,
            pages: 0,
            _item: PhantomData,
        }
    }

    /// The next page, or `None` when the collection is exhausted.
    pub async fn next_page(&mut self) -> Result<Option<Vec<T>>, GraphError> {
        if self.done {
            return Ok(None);
        }
        let call = if let Some(first) = self.first.take() {
            self.client.call(Method::GET, &first, None)
        } else if let Some(next) = self.next.take() {
            self.client.call_absolute(&next)?
        } else {
            self.done = true;
            return Ok(None);
        };
        let page: Collection<T> = match self.client.send_json(call.clone()).await {
            Ok(p) => p,
            Err(e) => {
                // Keep the position so the caller may retry the same page.
                if self.pages == 0 {
                    self.first = Some(format!("{}{}", call.path, query_of(&call.url)));
                } else {
                    self.next = Some(call.url);
                }
                return Err(e);
            }
        };
        self.pages += 1;
        match page.next_link {
            Some(n) => self.next = Some(n),
            None => self.done = true,
        }
        Ok(Some(page.value))
    }

    /// Pages fetched so far.
    pub fn pages_read(&self) -> u64 {
        self.pages
    }

    /// Reads every remaining page into one vector (only for collections known to be small).
    pub async fn collect_all(mut self) -> Result<Vec<T>, GraphError> {
        let mut out = Vec::new();
        while let Some(p) = self.next_page().await? {
            out.extend(p);
        }
        Ok(out)
    }
}

fn query_of(url: &str) -> &str {
    url.find('?').map(|i| &url[i..]).unwrap_or("")
}

/// The error of a call given up because no answer came within `late`.
fn late_error(call: &Call, late: Duration) -> GraphError {
    GraphError::transport(ErrorContext {
        method: call.method.to_string(),
        path: call.path.clone(),
        message: format!(
            "no answer within {:.1} s (4 times the slowest recent answer)",
            late.as_secs_f64()
        ),
        ..ErrorContext::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn call_debug_hides_the_body() {
        let call = Call {
            method: Method::POST,
            url: "https://graph.microsoft.com/v1.0/users".into(),
            path: "/users".into(),
            query: String::new(),
            body: Some(serde_json::json!({
                "userPrincipalName": "a@example.com",
                "passwordProfile": {"password": "C4ll-body-secret!"}
            })),
            retry_transient: false,
            when_late: WhenLate::GiveUp,
            given_up_late: Arc::default(),
            class: AnswerClass::Write,
            charge: None,
        };
        let shown = format!("{call:?} {call:#?}");
        assert!(!shown.contains("C4ll-body-secret!"), "{shown}");
        assert!(shown.contains("/users"), "{shown}");
    }
}
