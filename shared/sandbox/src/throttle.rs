//! Graph's identity throttling model (docs/graph-behaviour.md#identity-quotas): token buckets per
//! app + tenant (resource units by tenant size, writes), per tenant across apps (writes) and per
//! app across tenants.
//!
//! Every bucket holds `quota` tokens and refills at `quota / window`. A request needs its
//! resource-unit cost in every RU bucket and, when it writes, one token in every write bucket. If any
//! bucket lacks tokens the request is answered 429 with a `Retry-After` equal to the time that bucket
//! needs to refill enough, and the scope and reason headers Graph sends. As on Graph, usage keeps
//! accruing while a client is throttled: a rejected request is still charged its resource units
//! (down to one full quota in debt), so a client that retries at once only waits longer.
//!
//! What is left out: `x-ms-throttle-priority` is accepted and logged but does not change who is
//! throttled first (a single client gains nothing from it here), and the "429 below the limits
//! under heavy service load" behaviour is modelled by the fault knobs instead.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

use http::Method;
use serde::{Deserialize, Serialize};

/// Quotas of the throttling model. Defaults are Graph's published numbers; benchmarks shrink the
/// windows with `time_scale` or set smaller quotas.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ThrottleConfig {
    /// Throttling on or off.
    pub enabled: bool,
    /// Divides every window: 10.0 makes 3,000 writes per 150 s into 3,000 writes per 15 s.
    pub time_scale: f64,
    /// Writes per app + tenant pair per `app_tenant_write_window_secs` (Graph: 3,000 / 150 s).
    pub app_tenant_write_quota: u32,
    pub app_tenant_write_window_secs: f64,
    /// Resource units per app + tenant pair per `resource_unit_window_secs`. `None` follows the
    /// tenant size as Graph does: S (< 50 users) 3,500, M (50–500) 5,000, L (> 500) 8,000.
    pub resource_unit_quota: Option<u32>,
    pub resource_unit_window_secs: f64,
    /// Writes per tenant across all apps (Graph: 18,000 / 5 min).
    pub tenant_write_quota: u32,
    pub tenant_write_window_secs: f64,
    /// Resource units per app across all tenants (Graph: 150,000 / 20 s).
    pub app_resource_unit_quota: u32,
    pub app_resource_unit_window_secs: f64,
    /// Writes per app across all tenants (Graph: 70,000 / 5 min).
    pub app_write_quota: u32,
    pub app_write_window_secs: f64,
}

impl Default for ThrottleConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            time_scale: 1.0,
            app_tenant_write_quota: 3_000,
            app_tenant_write_window_secs: 150.0,
            resource_unit_quota: None,
            resource_unit_window_secs: 10.0,
            tenant_write_quota: 18_000,
            tenant_write_window_secs: 300.0,
            app_resource_unit_quota: 150_000,
            app_resource_unit_window_secs: 20.0,
            app_write_quota: 70_000,
            app_write_window_secs: 300.0,
        }
    }
}

impl ThrottleConfig {
    /// Graph's resource-unit quota per app + tenant for a tenant of `users` users
    /// (docs/graph-behaviour.md#identity-quotas).
    pub fn resource_units_for_size(users: usize) -> u32 {
        match users {
            0..50 => 3_500,
            50..=500 => 5_000,
            _ => 8_000,
        }
    }

    fn window(&self, secs: f64) -> f64 {
        let scale = if self.time_scale > 0.0 {
            self.time_scale
        } else {
            1.0
        };
        (secs / scale).max(0.001)
    }
}

/// What a request costs (Graph's cost table and modifiers:
/// docs/graph-behaviour.md#identity-quotas).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cost {
    pub resource_units: u32,
    pub write: bool,
}

/// Cost of one request. `path` is relative to the version root or includes `/v1.0`; `query` is
/// the raw query string without `?`.
pub fn cost_of(method: &Method, path: &str, query: &str) -> Cost {
    let path = path.strip_prefix("/v1.0").unwrap_or(path);
    let segments: Vec<String> = path
        .trim_matches('/')
        .split('/')
        .filter(|s| !s.is_empty())
        .map(|s| s.to_ascii_lowercase())
        .collect();
    let seg: Vec<&str> = segments.iter().map(String::as_str).collect();
    let write = matches!(
        *method,
        Method::POST | Method::PATCH | Method::PUT | Method::DELETE
    );
    let base = if *method == Method::GET {
        match seg.as_slice() {
            ["users"] => 2,
            ["groups", _, "members"] => 3,
            ["groups", _, "transitivemembers"] => 5,
            ["subscribedskus"] => 3,
            ["users", _, "licensedetails"] | ["me", "licensedetails"] => 2,
            [
                "users",
                _,
                "memberof" | "transitivememberof" | "ownedobjects",
            ] => 2,
            ["applications"] => 2,
            _ => 1,
        }
    } else if *method == Method::POST {
        match seg.as_slice() {
            ["directoryobjects", "getbyids"] => 3,
            ["users", _, "checkmembergroups" | "checkmemberobjects"] => 4,
            ["users", _, "getmembergroups" | "getmemberobjects"] => 2,
            _ => 1,
        }
    } else {
        1
    };
    // Read-only POST actions cost no write (Graph lists them with write cost 0:
    // docs/graph-behaviour.md#identity-quotas).
    let write = write
        && !matches!(
            seg.as_slice(),
            ["directoryobjects", "getbyids"]
                | [
                    "users",
                    _,
                    "checkmembergroups"
                        | "checkmemberobjects"
                        | "getmembergroups"
                        | "getmemberobjects"
                ]
        );
    let mut cost = i64::from(base);
    for pair in query.split('&') {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let name = percent_encoding::percent_decode_str(name).decode_utf8_lossy();
        match name.as_ref() {
            "$select" => cost -= 1,
            "$expand" => cost += 1,
            "$top" if value.parse::<u32>().is_ok_and(|top| top < 20) => cost -= 1,
            _ => {}
        }
    }
    Cost {
        resource_units: u32::try_from(cost.max(1)).unwrap_or(1),
        write,
    }
}

/// A request that went through: what it was charged and how close the tightest bucket is.
#[derive(Debug, Clone, PartialEq)]
pub struct Charge {
    pub resource_units: u32,
    /// Share of the tightest quota in use, sent as `x-ms-throttle-limit-percentage` only from 0.8
    /// (docs/graph-behaviour.md#identity-quotas: values from 0.8 to 1.8).
    pub limit_percentage: Option<f64>,
}

/// A request over a quota: answered 429.
#[derive(Debug, Clone, PartialEq)]
pub struct Throttled {
    /// Seconds until the exhausted bucket holds enough for this request (fractional, as Graph).
    pub retry_after_secs: f64,
    /// `x-ms-throttle-scope`: `<Scope>/<Limit>/<AppId>/<TenantId>`.
    pub scope: String,
    /// `x-ms-throttle-information`: `WriteLimitExceeded` or `ResourceUnitLimitExceeded`.
    pub information: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum BucketKind {
    AppTenantResourceUnits,
    AppTenantWrites,
    TenantWrites,
    AppResourceUnits,
    AppWrites,
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    capacity: f64,
    refill_per_sec: f64,
    updated: Instant,
}

impl Bucket {
    fn new(capacity: f64, window_secs: f64, now: Instant) -> Self {
        Self {
            tokens: capacity,
            capacity,
            refill_per_sec: capacity / window_secs,
            updated: now,
        }
    }

    /// Re-sizes after a configuration change or a tenant growing into another size class,
    /// keeping the share of the quota already used.
    fn resize(&mut self, capacity: f64, window_secs: f64) {
        if (self.capacity - capacity).abs() > f64::EPSILON || self.refill_per_sec <= 0.0 {
            let used_share = if self.capacity > 0.0 {
                self.tokens / self.capacity
            } else {
                1.0
            };
            self.capacity = capacity;
            self.tokens = used_share * capacity;
        }
        self.refill_per_sec = capacity / window_secs;
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.refill_per_sec).min(self.capacity);
        self.updated = now;
    }

    fn wait_for(&self, amount: f64) -> f64 {
        if self.tokens >= amount {
            0.0
        } else {
            (amount - self.tokens) / self.refill_per_sec
        }
    }

    fn used_share(&self) -> f64 {
        if self.capacity > 0.0 {
            1.0 - self.tokens / self.capacity
        } else {
            1.0
        }
    }
}

/// The throttling state of a sandbox: one set of buckets per app, tenant and pair.
#[derive(Debug)]
pub struct Throttle {
    config: Mutex<ThrottleConfig>,
    buckets: Mutex<HashMap<(BucketKind, String), Bucket>>,
}

impl Throttle {
    pub fn new(config: ThrottleConfig) -> Self {
        Self {
            config: Mutex::new(config),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    pub fn config(&self) -> ThrottleConfig {
        self.config
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// New quotas apply at once; buckets keep the share already used.
    pub fn set_config(&self, config: ThrottleConfig) {
        *self
            .config
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = config;
    }

    /// Forgets all usage (a sandbox reset).
    pub fn reset(&self) {
        self.buckets
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clear();
    }

    /// Charges one request (a batch item counts as one request) now.
    #[allow(clippy::too_many_arguments)]
    pub fn charge(
        &self,
        app_id: &str,
        tenant_id: &str,
        tenant_user_count: usize,
        method: &Method,
        path: &str,
        query: &str,
        priority_low: bool,
    ) -> Result<Charge, Throttled> {
        self.charge_at(
            Instant::now(),
            app_id,
            tenant_id,
            tenant_user_count,
            method,
            path,
            query,
            priority_low,
        )
    }

    /// As [`Throttle::charge`], at a given instant (tests drive time explicitly).
    #[allow(clippy::too_many_arguments)]
    pub fn charge_at(
        &self,
        now: Instant,
        app_id: &str,
        tenant_id: &str,
        tenant_user_count: usize,
        method: &Method,
        path: &str,
        query: &str,
        _priority_low: bool,
    ) -> Result<Charge, Throttled> {
        let config = self.config();
        let cost = cost_of(method, path, query);
        if !config.enabled {
            return Ok(Charge {
                resource_units: cost.resource_units,
                limit_percentage: None,
            });
        }
        let ru_quota = config
            .resource_unit_quota
            .unwrap_or_else(|| ThrottleConfig::resource_units_for_size(tenant_user_count));
        let needs = needs(&config, app_id, tenant_id, ru_quota, &cost);
        let mut buckets = self
            .buckets
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut worst: Option<(f64, usize)> = None;
        for (index, need) in needs.iter().enumerate() {
            let bucket = buckets
                .entry((need.kind, need.key.clone()))
                .or_insert_with(|| Bucket::new(need.quota, need.window, now));
            bucket.resize(need.quota, need.window);
            bucket.refill(now);
            let wait = bucket.wait_for(need.amount);
            if wait > 0.0 && worst.is_none_or(|(w, _)| wait > w) {
                worst = Some((wait, index));
            }
        }
        if let Some((wait, index)) = worst {
            // Usage accrues while throttled: resource units are charged even on a 429.
            for need in needs.iter().filter(|n| n.limit == Limit::ResourceUnits) {
                if let Some(bucket) = buckets.get_mut(&(need.kind, need.key.clone())) {
                    bucket.tokens = (bucket.tokens - need.amount).max(-need.quota);
                }
            }
            let need = &needs[index];
            return Err(Throttled {
                // Graph sends a fractional value; keep three decimals and never 0.
                retry_after_secs: ((wait * 1000.0).ceil() / 1000.0).max(0.001),
                scope: need.scope.clone(),
                information: need.limit.information().to_owned(),
            });
        }
        let mut tightest: f64 = 0.0;
        for need in &needs {
            if let Some(bucket) = buckets.get_mut(&(need.kind, need.key.clone())) {
                bucket.tokens -= need.amount;
                tightest = tightest.max(bucket.used_share());
            }
        }
        Ok(Charge {
            resource_units: cost.resource_units,
            limit_percentage: (tightest >= 0.8).then(|| (tightest * 100.0).round() / 100.0),
        })
    }
}

/// Which limit a bucket enforces (`x-ms-throttle-information` when it runs dry).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Limit {
    ResourceUnits,
    Writes,
}

impl Limit {
    fn information(self) -> &'static str {
        match self {
            Limit::ResourceUnits => "ResourceUnitLimitExceeded",
            Limit::Writes => "WriteLimitExceeded",
        }
    }
}

/// What one request takes from one bucket.
struct Need {
    kind: BucketKind,
    key: String,
    quota: f64,
    window: f64,
    amount: f64,
    /// `x-ms-throttle-scope` when this bucket throttles.
    scope: String,
    limit: Limit,
}

/// The buckets a request draws on: resource units per app + tenant and per app; a write also
/// draws on the write quotas per app + tenant, per tenant and per app.
fn needs(
    config: &ThrottleConfig,
    app_id: &str,
    tenant_id: &str,
    ru_quota: u32,
    cost: &Cost,
) -> Vec<Need> {
    let pair = format!("{app_id}/{tenant_id}");
    let resource_units = f64::from(cost.resource_units);
    let mut needs = vec![
        Need {
            kind: BucketKind::AppTenantResourceUnits,
            key: pair.clone(),
            quota: f64::from(ru_quota),
            window: config.window(config.resource_unit_window_secs),
            amount: resource_units,
            scope: format!("Tenant_Application/ReadWrite/{app_id}/{tenant_id}"),
            limit: Limit::ResourceUnits,
        },
        Need {
            kind: BucketKind::AppResourceUnits,
            key: app_id.to_owned(),
            quota: f64::from(config.app_resource_unit_quota),
            window: config.window(config.app_resource_unit_window_secs),
            amount: resource_units,
            scope: format!("Application/ReadWrite/{app_id}/{tenant_id}"),
            limit: Limit::ResourceUnits,
        },
    ];
    if cost.write {
        let write = |kind, key: String, quota: u32, window_secs: f64, scope: &str| Need {
            kind,
            key,
            quota: f64::from(quota),
            window: config.window(window_secs),
            amount: 1.0,
            scope: format!("{scope}/Write/{app_id}/{tenant_id}"),
            limit: Limit::Writes,
        };
        needs.push(write(
            BucketKind::AppTenantWrites,
            pair,
            config.app_tenant_write_quota,
            config.app_tenant_write_window_secs,
            "Tenant_Application",
        ));
        needs.push(write(
            BucketKind::TenantWrites,
            tenant_id.to_owned(),
            config.tenant_write_quota,
            config.tenant_write_window_secs,
            "Tenant",
        ));
        needs.push(write(
            BucketKind::AppWrites,
            app_id.to_owned(),
            config.app_write_quota,
            config.app_write_window_secs,
            "Application",
        ));
    }
    needs
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn cost_table_follows_graph_facts() {
        let get = Method::GET;
        let cases: &[(&Method, &str, &str, u32, bool)] = &[
            (&get, "/v1.0/users", "", 2, false),
            (&get, "/v1.0/users", "$select=id,displayName", 1, false),
            (&get, "/users", "$top=999&$select=id", 1, false),
            (&get, "/users", "$top=5", 1, false),
            (&get, "/users/abc", "", 1, false),
            (&get, "/users/abc", "$select=id", 1, false),
            (&get, "/users/abc", "$expand=manager", 2, false),
            (&get, "/groups/g1/members", "", 3, false),
            (&get, "/groups/g1/members", "$top=999", 3, false),
            (&get, "/groups/g1/transitiveMembers", "", 5, false),
            (&get, "/subscribedSkus", "", 3, false),
            (&get, "/users/u1/licenseDetails", "", 2, false),
            (&get, "/users/u1/memberOf", "", 2, false),
            (&Method::POST, "/users", "", 1, true),
            (&Method::PATCH, "/users/u1", "", 1, true),
            (&Method::DELETE, "/groups/g/members/u/$ref", "", 1, true),
            (&Method::PUT, "/users/u/manager/$ref", "", 1, true),
            (&Method::POST, "/directoryObjects/getByIds", "", 3, false),
            (&Method::POST, "/users/u/checkMemberGroups", "", 4, false),
            (&Method::POST, "/users/u/getMemberObjects", "", 2, false),
        ];
        for (method, path, query, ru, write) in cases {
            assert_eq!(
                cost_of(method, path, query),
                Cost {
                    resource_units: *ru,
                    write: *write
                },
                "{method} {path}?{query}"
            );
        }
    }

    #[test]
    fn tenant_size_selects_the_resource_unit_quota() {
        assert_eq!(ThrottleConfig::resource_units_for_size(0), 3_500);
        assert_eq!(ThrottleConfig::resource_units_for_size(49), 3_500);
        assert_eq!(ThrottleConfig::resource_units_for_size(50), 5_000);
        assert_eq!(ThrottleConfig::resource_units_for_size(500), 5_000);
        assert_eq!(ThrottleConfig::resource_units_for_size(501), 8_000);
    }

    fn write(t: &Throttle, now: Instant) -> Result<Charge, Throttled> {
        t.charge_at(now, "app", "tenant", 10, &Method::POST, "/users", "", true)
    }

    #[test]
    fn writes_beyond_the_quota_get_429_with_a_fractional_retry_after() {
        let throttle = Throttle::new(ThrottleConfig {
            app_tenant_write_quota: 10,
            app_tenant_write_window_secs: 5.0,
            ..ThrottleConfig::default()
        });
        let start = Instant::now();
        for i in 0..10 {
            assert!(
                write(&throttle, start).is_ok(),
                "write {i} within the quota"
            );
        }
        let throttled = write(&throttle, start).unwrap_err();
        // 10 writes per 5 s refill one write every 0.5 s.
        assert!((throttled.retry_after_secs - 0.5).abs() < 1e-6);
        assert_eq!(throttled.scope, "Tenant_Application/Write/app/tenant");
        assert_eq!(throttled.information, "WriteLimitExceeded");
        // After Retry-After, one more write goes through.
        let later = start + Duration::from_millis(500);
        assert!(write(&throttle, later).is_ok());
        assert!(write(&throttle, later).is_err());
    }

    #[test]
    fn limit_percentage_appears_from_eighty_percent() {
        let throttle = Throttle::new(ThrottleConfig {
            app_tenant_write_quota: 10,
            ..ThrottleConfig::default()
        });
        let now = Instant::now();
        let seen: Vec<Option<f64>> = (0..10)
            .map(|_| write(&throttle, now).unwrap().limit_percentage)
            .collect();
        assert_eq!(seen[6], None);
        assert_eq!(seen[7], Some(0.8));
        assert_eq!(seen[9], Some(1.0));
    }

    #[test]
    fn tenant_quota_is_shared_by_all_apps() {
        let throttle = Throttle::new(ThrottleConfig {
            tenant_write_quota: 4,
            ..ThrottleConfig::default()
        });
        let now = Instant::now();
        for app in ["a", "b", "c", "d"] {
            assert!(
                throttle
                    .charge_at(now, app, "t", 10, &Method::PATCH, "/users/x", "", false)
                    .is_ok()
            );
        }
        let err = throttle
            .charge_at(now, "e", "t", 10, &Method::PATCH, "/users/x", "", false)
            .unwrap_err();
        assert_eq!(err.scope, "Tenant/Write/e/t");
        // Reads are not writes: they still pass.
        assert!(
            throttle
                .charge_at(now, "e", "t", 10, &Method::GET, "/users/x", "", false)
                .is_ok()
        );
    }

    #[test]
    fn time_scale_shortens_the_windows() {
        let throttle = Throttle::new(ThrottleConfig {
            app_tenant_write_quota: 10,
            app_tenant_write_window_secs: 10.0,
            time_scale: 10.0,
            ..ThrottleConfig::default()
        });
        let start = Instant::now();
        for _ in 0..10 {
            write(&throttle, start).unwrap();
        }
        let throttled = write(&throttle, start).unwrap_err();
        assert!((throttled.retry_after_secs - 0.1).abs() < 1e-6);
    }

    #[test]
    fn retrying_at_once_while_throttled_only_waits_longer() {
        let throttle = Throttle::new(ThrottleConfig {
            resource_unit_quota: Some(4),
            resource_unit_window_secs: 4.0,
            ..ThrottleConfig::default()
        });
        let now = Instant::now();
        let read =
            |t: &Throttle| t.charge_at(now, "a", "t", 10, &Method::GET, "/users/x", "", false);
        for _ in 0..4 {
            read(&throttle).unwrap();
        }
        let first = read(&throttle).unwrap_err();
        let second = read(&throttle).unwrap_err();
        assert_eq!(first.information, "ResourceUnitLimitExceeded");
        assert!(second.retry_after_secs > first.retry_after_secs);
    }

    #[test]
    fn disabled_throttle_never_answers_429() {
        let throttle = Throttle::new(ThrottleConfig {
            enabled: false,
            app_tenant_write_quota: 1,
            ..ThrottleConfig::default()
        });
        let now = Instant::now();
        for _ in 0..100 {
            assert_eq!(write(&throttle, now).unwrap().limit_percentage, None);
        }
    }
}
