//! Client-side pacing against Graph's identity quotas (docs/graph-behaviour.md#identity-quotas).
//!
//! One [`Pacer`] per (Graph host, app, tenant), shared by every client and clone in the process
//! through a [`PacerRegistry`]. Each request is charged its resource-unit cost and, for writes,
//! one write, against two token buckets sized from [`PacingConfig`].
//!
//! Why a hand-written bucket rather than `governor`: governor's quota is fixed when the limiter
//! is built, costs are whole cells against a single quota, and there is no "pause everyone until"
//! primitive. Adaptivity (halve the rate on 429, recover additively, slow down on
//! `x-ms-throttle-limit-percentage`) would mean rebuilding limiters and losing their state. Two
//! float buckets under one mutex are ~60 lines and make the adaptive rate a plain multiplier.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use tokio::time::Instant;

use crate::settings::PacingConfig;

/// The throttling cost of one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Cost {
    pub resource_units: u32,
    pub writes: u32,
}

impl Cost {
    pub fn plus(self, other: Cost) -> Cost {
        Cost {
            resource_units: self.resource_units + other.resource_units,
            writes: self.writes + other.writes,
        }
    }
}

/// Cost of a request from Graph's cost table (docs/graph-behaviour.md#identity-quotas). `path` is
/// relative to the version root (with or without a leading `/v1.0`), `query` the raw query string
/// without `?`.
pub fn request_cost(method: &str, path: &str, query: &str) -> Cost {
    let method = method.to_ascii_uppercase();
    let p = path.trim_start_matches('/');
    let p = p.strip_prefix("v1.0/").unwrap_or(p);
    let p = p.split('?').next().unwrap_or(p);
    let segs: Vec<String> = p
        .split('/')
        .filter(|s| !s.is_empty())
        .map(|s| s.to_ascii_lowercase())
        .collect();
    let s: Vec<&str> = segs.iter().map(String::as_str).collect();
    let is_write = matches!(method.as_str(), "POST" | "PATCH" | "PUT" | "DELETE");
    if s.as_slice() == ["$batch"] {
        // The envelope costs nothing of its own: each item is charged as if sent alone
        // (https://learn.microsoft.com/graph/throttling#throttling-and-batching).
        return Cost::default();
    }
    let (base, writes): (i64, u32) = match (method.as_str(), s.as_slice()) {
        ("GET", ["users"]) => (2, 0),
        ("GET", ["groups", _, "members"]) => (3, 0),
        ("GET", ["groups", _, "transitivemembers"]) => (5, 0),
        ("GET", ["subscribedskus"]) => (3, 0),
        ("GET", ["users" | "me", .., "licensedetails"]) => (2, 0),
        (
            "GET",
            [
                "users",
                _,
                "memberof" | "transitivememberof" | "ownedobjects",
            ],
        )
        | ("GET", ["me", "memberof" | "transitivememberof" | "ownedobjects"]) => (2, 0),
        ("POST", ["directoryobjects", "getbyids"]) => (3, 0),
        ("POST", ["users", _, "checkmembergroups" | "checkmemberobjects"]) => (4, 0),
        ("POST", ["users", _, "getmembergroups" | "getmemberobjects"]) => (2, 0),
        ("GET", ["applications"]) => (2, 0),
        _ => (1, u32::from(is_write)),
    };
    let mut ru = base;
    let q = query.to_ascii_lowercase();
    let has = |name: &str| {
        q.split('&').any(|kv| {
            let k = kv.split('=').next().unwrap_or("");
            k == name || k == name.replace('$', "%24")
        })
    };
    if has("$select") {
        ru -= 1;
    }
    if has("$expand") {
        ru += 1;
    }
    let top = q.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == "$top" || k == "%24top").then(|| v.parse::<u32>().ok())?
    });
    if top.is_some_and(|t| t < 20) {
        ru -= 1;
    }
    Cost {
        resource_units: ru.max(1) as u32,
        writes,
    }
}

/// What a 429 said about its cause (docs/graph-behaviour.md#throttling).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ThrottleSignal {
    /// `x-ms-throttle-scope` named the quota that ran dry: the whole (app, tenant) is over it.
    Quota,
    /// No scope: Graph under load, or an over-quota answer without the header. One such answer
    /// among many successes is sporadic; many in a row are an episode.
    Unscoped,
}

/// Weight of the newest answer in the running share of 429s: about the last 64 answers count,
/// so a few sporadic 429s close together (one in 25 answers leaves five in some window of 32
/// every few thousand answers) do not read as an episode.
const THROTTLED_SHARE_WEIGHT: f64 = 1.0 / 64.0;
/// An unscoped 429 is part of an episode once the running share of 429s reaches this: about
/// eight in a row, or one answer in seven for a while. Below it, the 429 costs only its own
/// request (which waits its Retry-After), so sporadic 429s far below the quota do not slow the
/// run.
const EPISODE_SHARE: f64 = 0.15;

/// Lowest rate multiplier after repeated 429s.
const MIN_FACTOR: f64 = 0.05;
/// Multiplicative decrease on a 429.
const DECREASE: f64 = 0.5;
/// At most one multiplicative decrease per this period.
const DECREASE_COOLDOWN: Duration = Duration::from_secs(1);
/// How far `x-ms-throttle-limit-percentage` may exceed the pacer's own use of its buckets
/// before it slows down.
const LIMIT_PERCENTAGE_SLACK: f64 = 0.1;
/// Additive recovery per successful response.
const RECOVERY_STEP: f64 = 0.02;

#[derive(Debug)]
struct Bucket {
    capacity: f64,
    tokens: f64,
    /// Tokens per second at factor 1.0.
    rate: f64,
}

impl Bucket {
    fn new(quota: u32, window: Duration, safety: f64) -> Bucket {
        let capacity = (f64::from(quota) * safety).max(1.0);
        Bucket {
            capacity,
            tokens: capacity,
            rate: capacity / window.as_secs_f64().max(0.001),
        }
    }

    fn refill(&mut self, elapsed: f64, factor: f64) {
        self.tokens = (self.tokens + elapsed * self.rate * factor).min(self.capacity);
    }

    /// Seconds until `cost` tokens are available.
    fn wait_for(&self, cost: f64, factor: f64) -> f64 {
        let cost = cost.min(self.capacity);
        if self.tokens >= cost {
            0.0
        } else {
            (cost - self.tokens) / (self.rate * factor)
        }
    }
}

#[derive(Debug)]
struct PacerState {
    ru: Bucket,
    writes: Bucket,
    factor: f64,
    paused_until: Option<Instant>,
    last: Instant,
    last_decrease: Option<Instant>,
    /// Running share of 429s among the answers (exponentially weighted).
    throttled_share: f64,
}

/// Adaptive pacer for one (app, tenant). Shared by `Arc`.
#[derive(Debug)]
pub struct Pacer {
    enabled: bool,
    state: Mutex<PacerState>,
}

impl Pacer {
    pub fn new(config: &PacingConfig) -> Pacer {
        Pacer {
            enabled: config.enabled,
            state: Mutex::new(PacerState {
                ru: Bucket::new(
                    config.resource_unit_quota,
                    config.ru_window,
                    config.safety_factor,
                ),
                writes: Bucket::new(
                    config.write_quota,
                    config.write_window,
                    config.safety_factor,
                ),
                factor: 1.0,
                paused_until: None,
                last: Instant::now(),
                last_decrease: None,
                throttled_share: 0.0,
            }),
        }
    }

    /// Current rate multiplier (1.0 = full configured quota).
    pub fn rate_factor(&self) -> f64 {
        self.state.lock().map(|s| s.factor).unwrap_or(1.0)
    }

    /// Waits until `cost` fits in both buckets (and any global pause is over), then takes it.
    pub async fn acquire(&self, cost: Cost) {
        while let Some(wait) = self.try_acquire(cost) {
            tokio::time::sleep(wait).await;
        }
    }

    /// Takes `cost` when it fits in both buckets now (and no pause is on): `None`. Otherwise
    /// takes nothing and says how long until it might fit.
    pub fn try_acquire(&self, cost: Cost) -> Option<Duration> {
        let Ok(mut s) = self.state.lock() else {
            return None;
        };
        let now = Instant::now();
        let elapsed = now.saturating_duration_since(s.last).as_secs_f64();
        s.last = now;
        let factor = s.factor;
        s.ru.refill(elapsed, factor);
        s.writes.refill(elapsed, factor);
        match s.paused_until {
            Some(until) if until > now => Some(until - now),
            _ => {
                s.paused_until = None;
                if !self.enabled {
                    return None;
                }
                let ru = f64::from(cost.resource_units);
                let wr = f64::from(cost.writes);
                let w = s.ru.wait_for(ru, factor).max(s.writes.wait_for(wr, factor));
                if w <= 0.0 {
                    s.ru.tokens -= ru.min(s.ru.capacity);
                    s.writes.tokens -= wr.min(s.writes.capacity);
                    return None;
                }
                // At least a millisecond: a shorter sleep may end before the clock moves, and
                // the bucket would not have refilled when it is asked again.
                Some(Duration::from_secs_f64(w.min(60.0)).max(Duration::from_millis(1)))
            }
        }
    }

    /// A 429. A quota 429, or one of an episode: everyone on this (app, tenant) waits
    /// `retry_after`, and the rate halves. A sporadic one changes nothing here (its request
    /// waits `retry_after` on its own); it returns whether the pacer reacted.
    pub fn on_throttled(&self, retry_after: Option<Duration>, signal: ThrottleSignal) -> bool {
        let Ok(mut s) = self.state.lock() else {
            return false;
        };
        s.throttled_share += (1.0 - s.throttled_share) * THROTTLED_SHARE_WEIGHT;
        if signal == ThrottleSignal::Unscoped && s.throttled_share < EPISODE_SHARE {
            return false;
        }
        let now = Instant::now();
        let pause = retry_after.unwrap_or(Duration::from_secs(1));
        let until = now + pause;
        if s.paused_until.is_none_or(|p| p < until) {
            s.paused_until = Some(until);
        }
        // Concurrent requests often see the same throttling episode: decrease once per
        // episode, not once per 429, or the rate collapses to the floor.
        let recent = s
            .last_decrease
            .is_some_and(|t| now.saturating_duration_since(t) < DECREASE_COOLDOWN);
        if !recent {
            s.factor = (s.factor * DECREASE).max(MIN_FACTOR);
            s.last_decrease = Some(now);
            tracing::debug!(
                factor = s.factor,
                throttled_share = s.throttled_share,
                pause_ms = pause.as_millis() as u64,
                ?signal,
                "throttling episode: everyone pauses and the rate drops"
            );
        }
        // A quota 429 says the (app, tenant) has spent what the buckets model: start them
        // empty so the pace does not burst again. An episode of unscoped 429s says Graph is
        // under load, not that our quota is spent: the pause and the lower rate answer it, and
        // the burst the quota still allows is kept (emptying it would pace the rest of the run
        // at the sustained rate).
        if signal == ThrottleSignal::Quota {
            s.ru.tokens = s.ru.tokens.min(0.0);
            s.writes.tokens = s.writes.tokens.min(0.0);
        }
        true
    }

    /// A successful response, with `x-ms-throttle-limit-percentage` when Graph sent it.
    pub fn on_success(&self, limit_percentage: Option<f64>) {
        let Ok(mut s) = self.state.lock() else {
            return;
        };
        s.throttled_share *= 1.0 - THROTTLED_SHARE_WEIGHT;
        // Pacing at the quota shows as a limit percentage close to the pacer's own use of its
        // buckets; only what Graph reports beyond that (another app on the tenant, a quota
        // smaller than configured) slows the pace, in proportion.
        let excess = limit_percentage
            .filter(|p| *p >= 0.8)
            .map(|p| p - s.own_usage() - LIMIT_PERCENTAGE_SLACK)
            .unwrap_or(0.0);
        if excess > 0.0 {
            let target = (1.0 - excess).clamp(MIN_FACTOR, 1.0);
            s.factor = s.factor.min(target).max(MIN_FACTOR);
        } else {
            s.factor = (s.factor + RECOVERY_STEP).min(1.0);
        }
    }
}

impl PacerState {
    /// How much of its buckets the pacer has spent, 0 to 1: its own estimate of the share of
    /// the quota in use.
    fn own_usage(&self) -> f64 {
        let used = |b: &Bucket| (1.0 - b.tokens / b.capacity).clamp(0.0, 1.0);
        used(&self.ru).max(used(&self.writes))
    }
}

/// Pacers keyed by (Graph host, client id, tenant). Clones of a client and separate clients for
/// the same app and tenant share one pacer.
#[derive(Debug, Default)]
pub struct PacerRegistry {
    pacers: Mutex<HashMap<(String, String, String), Arc<Pacer>>>,
}

impl PacerRegistry {
    pub fn new() -> Self {
        PacerRegistry::default()
    }

    /// The process-wide registry.
    pub fn global() -> Arc<PacerRegistry> {
        static GLOBAL: OnceLock<Arc<PacerRegistry>> = OnceLock::new();
        GLOBAL
            .get_or_init(|| Arc::new(PacerRegistry::new()))
            .clone()
    }

    /// The pacer for this key, created from `config` on first use.
    pub fn pacer(
        &self,
        graph_host: &str,
        client_id: &str,
        tenant: &str,
        config: &PacingConfig,
    ) -> Arc<Pacer> {
        let key = (
            graph_host.to_ascii_lowercase(),
            client_id.trim().to_ascii_lowercase(),
            tenant.trim().to_ascii_lowercase(),
        );
        match self.pacers.lock() {
            Ok(mut m) => m
                .entry(key)
                .or_insert_with(|| Arc::new(Pacer::new(config)))
                .clone(),
            Err(_) => Arc::new(Pacer::new(config)),
        }
    }

    /// The pacer of the tenant's own write quota, shared by all its apps (Graph: 18,000 writes
    /// per 5 min across apps); it has no resource-unit quota of its own.
    pub fn tenant_pacer(
        &self,
        graph_host: &str,
        tenant: &str,
        config: &PacingConfig,
    ) -> Arc<Pacer> {
        let tenant_only = PacingConfig {
            write_quota: config.tenant_write_quota,
            write_window: config.tenant_write_window,
            resource_unit_quota: u32::MAX,
            ru_window: Duration::from_secs(1),
            ..config.clone()
        };
        // No app id is empty, so this key is no app's.
        self.pacer(graph_host, "", tenant, &tenant_only)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(ru: u32, w: u32) -> Cost {
        Cost {
            resource_units: ru,
            writes: w,
        }
    }

    #[test]
    fn cost_table() {
        let cases = [
            ("GET", "/users", "", c(2, 0)),
            ("GET", "/users", "$select=id,displayName&$top=999", c(1, 0)),
            ("GET", "/v1.0/users", "$top=5", c(1, 0)),
            ("GET", "/users", "$select=id&$top=5", c(1, 0)),
            ("GET", "/users/abc", "", c(1, 0)),
            ("GET", "/users/abc", "$select=id", c(1, 0)),
            ("GET", "/groups/g1/members", "", c(3, 0)),
            ("GET", "/groups/g1/members", "$select=id", c(2, 0)),
            ("GET", "/groups/g1/transitiveMembers", "", c(5, 0)),
            ("GET", "/subscribedSkus", "", c(3, 0)),
            ("GET", "/users/u1/licenseDetails", "", c(2, 0)),
            ("GET", "/users/u1/memberOf", "$expand=x", c(3, 0)),
            ("POST", "/directoryObjects/getByIds", "", c(3, 0)),
            ("POST", "/users/u1/checkMemberGroups", "", c(4, 0)),
            ("POST", "/users/u1/getMemberObjects", "", c(2, 0)),
            ("GET", "/applications", "", c(2, 0)),
            ("POST", "/users", "", c(1, 1)),
            ("PATCH", "/users/u1", "", c(1, 1)),
            ("PUT", "/users/u1/manager/$ref", "", c(1, 1)),
            ("DELETE", "/groups/g/members/u/$ref", "", c(1, 1)),
            ("POST", "/groups/g/members/$ref", "", c(1, 1)),
            ("POST", "/users/u/assignLicense", "", c(1, 1)),
            ("GET", "/organization", "", c(1, 0)),
            ("POST", "/$batch", "", c(0, 0)),
        ];
        for (m, p, q, want) in cases {
            assert_eq!(request_cost(m, p, q), want, "{m} {p}?{q}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn bucket_paces_writes_to_the_quota() {
        let cfg = PacingConfig {
            write_quota: 10,
            write_window: Duration::from_secs(10),
            resource_unit_quota: 1000,
            ru_window: Duration::from_secs(10),
            safety_factor: 1.0,
            enabled: true,
            ..PacingConfig::default()
        };
        let p = Pacer::new(&cfg);
        let start = Instant::now();
        for _ in 0..20 {
            p.acquire(c(1, 1)).await;
        }
        // 10 in the initial burst, 10 more at 1/s.
        let took = start.elapsed().as_secs_f64();
        assert!((9.0..11.5).contains(&took), "{took}");
    }

    #[tokio::test(start_paused = true)]
    async fn throttle_pauses_and_halves_then_recovers() {
        let p = Pacer::new(&PacingConfig::default());
        assert!(p.on_throttled(Some(Duration::from_millis(2128)), ThrottleSignal::Quota));
        // A second 429 of the same episode does not halve again.
        p.on_throttled(Some(Duration::from_millis(2128)), ThrottleSignal::Quota);
        assert!((p.rate_factor() - 0.5).abs() < 1e-9);
        let start = Instant::now();
        p.acquire(c(1, 0)).await;
        assert!(start.elapsed() >= Duration::from_millis(2128));
        for _ in 0..100 {
            p.on_success(None);
        }
        assert!((p.rate_factor() - 1.0).abs() < 1e-9);
        // Nothing spent: a limit percentage of 0.9 is 0.8 beyond the slack; someone else uses
        // the quota.
        let fresh = Pacer::new(&PacingConfig::default());
        fresh.on_success(Some(0.9));
        assert!((fresh.rate_factor() - 0.2).abs() < 1e-9);
        fresh.on_success(Some(1.3));
        assert!((fresh.rate_factor() - MIN_FACTOR).abs() < 1e-9);
        // A pacer that has spent its buckets expects a high limit percentage: no slow-down.
        let spent = Pacer::new(&PacingConfig::default());
        {
            let mut s = spent.state.lock().unwrap();
            s.writes.tokens = 0.0;
        }
        spent.on_success(Some(1.05));
        assert!((spent.rate_factor() - 1.0).abs() < 1e-9);
    }

    #[test]
    fn a_cluster_of_sporadic_429s_is_not_an_episode() {
        let p = Pacer::new(&PacingConfig::default());
        // One 429 in every 25 answers for a while …
        for _ in 0..40 {
            for _ in 0..24 {
                p.on_success(None);
            }
            p.on_throttled(Some(Duration::from_secs(1)), ThrottleSignal::Unscoped);
        }
        // … then, by chance, five close together: one in every three answers.
        for i in 0..5 {
            p.on_success(None);
            p.on_success(None);
            assert!(
                !p.on_throttled(Some(Duration::from_secs(1)), ThrottleSignal::Unscoped),
                "429 {i} of the cluster was read as an episode"
            );
        }
        assert!((p.rate_factor() - 1.0).abs() < 1e-9);
    }

    #[tokio::test(start_paused = true)]
    async fn sporadic_unscoped_429s_cost_only_their_own_request() {
        let p = Pacer::new(&PacingConfig::default());
        // One 429 in every 25 answers, without a scope: never an episode.
        for round in 0..40 {
            for _ in 0..24 {
                p.on_success(None);
            }
            assert!(
                !p.on_throttled(Some(Duration::from_secs(1)), ThrottleSignal::Unscoped),
                "round {round}"
            );
        }
        assert!((p.rate_factor() - 1.0).abs() < 1e-9);
        let start = Instant::now();
        p.acquire(c(1, 1)).await;
        assert_eq!(start.elapsed(), Duration::ZERO, "nobody else waits");
        // Unscoped 429s in a row are an episode: the pacer pauses and slows down.
        let reacted = (0..10)
            .map(|_| p.on_throttled(Some(Duration::from_secs(1)), ThrottleSignal::Unscoped))
            .position(|r| r)
            .expect("an episode");
        assert!((5..10).contains(&reacted), "reacted at the {reacted}th");
        assert!((p.rate_factor() - 0.5).abs() < 1e-9);
        let start = Instant::now();
        p.acquire(c(1, 1)).await;
        assert!(start.elapsed() >= Duration::from_secs(1));
        // The quota's burst is kept: after the pause, writes go out at once.
        let start = Instant::now();
        for _ in 0..1_000 {
            p.acquire(c(1, 1)).await;
        }
        assert_eq!(start.elapsed(), Duration::ZERO, "the burst is still there");
        // A quota 429 empties the buckets: the next write waits for the refill.
        p.on_throttled(Some(Duration::from_secs(1)), ThrottleSignal::Quota);
        tokio::time::sleep(Duration::from_secs(2)).await;
        let start = Instant::now();
        for _ in 0..100 {
            p.acquire(c(1, 1)).await;
        }
        assert!(
            start.elapsed() >= Duration::from_secs(5),
            "{:?}",
            start.elapsed()
        );
    }

    #[tokio::test(start_paused = true)]
    async fn disabled_pacing_only_honours_pauses() {
        let p = Pacer::new(&PacingConfig::disabled());
        let start = Instant::now();
        for _ in 0..10_000 {
            p.acquire(c(5, 1)).await;
        }
        assert!(start.elapsed() < Duration::from_millis(1));
    }

    #[test]
    fn registry_shares_by_app_and_tenant() {
        let r = PacerRegistry::new();
        let cfg = PacingConfig::default();
        let a = r.pacer("https://graph.microsoft.com", "App", "T", &cfg);
        let b = r.pacer("https://graph.microsoft.com", "app", "t", &cfg);
        let other = r.pacer("https://graph.microsoft.com", "app", "t2", &cfg);
        assert!(Arc::ptr_eq(&a, &b));
        assert!(!Arc::ptr_eq(&a, &other));
    }
}
