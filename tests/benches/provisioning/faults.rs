//! Scenario e: a first load under sporadic faults against the same load clean.
//!
//! Graph answers a few requests 429, 500 or 503 even far below the quota, holds some answers
//! back, and makes a new object visible to reads only after a replication delay
//! (docs/graph-behaviour.md). Such faults must cost their own retries, not the pace of the whole
//! run: the faulted run is held to twice the clean one, with the end state exact.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Instant;

use m365_sandbox::{
    FaultKnobs, LoggedRequest, RunningSandbox, SandboxConfig, ThrottleConfig, demo,
};
use serde_json::{Value, json};

use super::{
    Report, Shape, Target, World, alias, fail_targets, failures_of, product_directory, progress,
    run_failure, sandbox_config, sku_of, user_id,
};

/// Sandbox write and read latency of both runs.
const WRITE_LATENCY_MS: u64 = 100;
const READ_LATENCY_MS: u64 = 20;
/// The faults of the faulted run: shares of all requests (batch items included).
const SHARE_429: f64 = 0.04;
const SHARE_500: f64 = 0.02;
const SHARE_503: f64 = 0.02;
const SHARE_TIMEOUT: f64 = 0.02;
/// How long the sandbox holds a timed-out answer back (its default).
const TIMEOUT_MS: u64 = 30_000;
const REPLICATION_LAG_MS: u64 = 2_000;

/// One run of the first load: wall time, sandbox figures, end-state mismatches.
struct Run {
    wall_s: f64,
    requests: u64,
    writes: u64,
    minimal_writes: u64,
    throttled: u64,
    injected_429: u64,
    faults: u64,
    mismatches: Vec<String>,
    failures: usize,
    first_failure: Option<String>,
    failure: Option<String>,
    status: String,
    floor: Floor,
}

/// The least time any client could take over the faults a run met, if it plans before it writes
/// (the plan looks every source user up), honours `Retry-After`, and writes a user's license or
/// a group's members only once the object is visible. Read from the sandbox's request log, which
/// keeps the requests in the order they were answered:
/// - the plan: one round of lookups, and when one of them was answered 429, a second round
///   after its `Retry-After`;
/// - a create: one write, and when a create was answered 429, that object's create lands only
///   after its `Retry-After` and one more write;
/// - then the replication lag before that object can be referred to, and one dependent write
///   (every bench user has a license, every bench group members).
///
/// Token requests, planning CPU and the state store are left out, so the floor is low.
#[derive(Debug, Clone, Copy, Default)]
struct Floor {
    plan_s: f64,
    create_s: f64,
    lag_s: f64,
    dependent_s: f64,
    lookups_throttled: u64,
    creates_throttled: u64,
}

impl Floor {
    fn of(log: &[LoggedRequest], lag_ms: u64) -> Floor {
        let read_s = READ_LATENCY_MS as f64 / 1000.0;
        let write_s = WRITE_LATENCY_MS as f64 / 1000.0;
        let retry_after_s = FaultKnobs::default().retry_after_secs;
        let first_write = log.iter().position(|r| r.write).unwrap_or(log.len());
        let lookups_throttled = log[..first_write]
            .iter()
            .filter(|r| r.status == 429)
            .count() as u64;
        let creates_throttled = log
            .iter()
            .filter(|r| {
                r.method == "POST"
                    && matches!(r.path.as_str(), "/v1.0/users" | "/v1.0/groups")
                    && r.status == 429
            })
            .count() as u64;
        let again = |throttled: u64, latency: f64| {
            if throttled > 0 {
                retry_after_s + latency
            } else {
                0.0
            }
        };
        Floor {
            plan_s: read_s + again(lookups_throttled, read_s),
            create_s: write_s + again(creates_throttled, write_s),
            lag_s: lag_ms as f64 / 1000.0,
            dependent_s: write_s,
            lookups_throttled,
            creates_throttled,
        }
    }

    fn total_s(&self) -> f64 {
        self.plan_s + self.create_s + self.lag_s + self.dependent_s
    }

    fn explain(&self) -> String {
        format!(
            "{:.2} s = plan {:.2} s ({} lookups answered 429) + create {:.2} s ({} creates answered 429) + replication lag {:.2} s + one dependent write {:.2} s",
            self.total_s(),
            self.plan_s,
            self.lookups_throttled,
            self.create_s,
            self.creates_throttled,
            self.lag_s,
            self.dependent_s
        )
    }

    fn json(&self) -> Value {
        json!({
            "total_s": self.total_s(), "plan_s": self.plan_s, "create_s": self.create_s,
            "lag_s": self.lag_s, "dependent_s": self.dependent_s,
            "lookups_throttled": self.lookups_throttled,
            "creates_throttled": self.creates_throttled,
        })
    }
}

impl Run {
    fn json(&self) -> Value {
        json!({
            "wall_s": self.wall_s, "requests": self.requests, "writes": self.writes,
            "minimal_writes": self.minimal_writes, "throttled_429": self.throttled,
            "injected_429": self.injected_429, "faults_injected": self.faults,
            "end_state_mismatches": self.mismatches.len(),
            "first_mismatch": self.mismatches.first(),
            "failures": self.failures, "first_failure": self.first_failure,
            "run_status": self.status, "floor": self.floor.json(),
        })
    }

    /// 429s the throttling model sent (beyond the injected ones), as a share of all requests.
    fn extra_429_share(&self) -> f64 {
        self.throttled.saturating_sub(self.injected_429) as f64 / self.requests.max(1) as f64
    }
}

async fn load(config: SandboxConfig, shape: Shape) -> Run {
    let mut world = World::new(config, shape, 8, m365_graph::PacingConfig::default()).await;
    world.directory = product_directory(world.sandbox.base_url());
    let before = world.sandbox.sandbox().stats();
    let t0 = Instant::now();
    let outcome = world.sync().await;
    let wall_s = t0.elapsed().as_secs_f64();
    let after = world.sandbox.sandbox().stats();
    let floor = Floor::of(
        &world.sandbox.sandbox().request_log(),
        world.sandbox.sandbox().knobs().replication_lag_ms,
    );
    let (failures, first_failure) = failures_of(&outcome);
    Run {
        wall_s,
        requests: after.requests - before.requests,
        writes: after.writes - before.writes,
        minimal_writes: outcome.plan.minimal_writes(),
        throttled: after.throttled - before.throttled,
        injected_429: after.faults_injected_429 - before.faults_injected_429,
        faults: after.faults_injected - before.faults_injected,
        mismatches: end_state_mismatches(&world.sandbox, shape),
        failures,
        first_failure,
        failure: run_failure(&outcome),
        status: format!("{:?}", outcome.run.status),
        floor,
    }
}

/// What the tenant should hold after the load and does not: each bench user once, with its
/// license, its manager and its groups, as the source says.
pub(super) fn end_state_mismatches(sandbox: &RunningSandbox, shape: Shape) -> Vec<String> {
    let tenant = sandbox.sandbox();
    let users = tenant.users();
    let upn_of_id: HashMap<String, String> = users
        .iter()
        .filter_map(|u| {
            Some((
                u["id"].as_str()?.to_owned(),
                u["userPrincipalName"].as_str()?.to_ascii_lowercase(),
            ))
        })
        .collect();
    let mut groups_of: HashMap<String, BTreeSet<String>> = HashMap::new();
    for group in tenant.groups() {
        let (Some(id), Some(name)) = (group["id"].as_str(), group["displayName"].as_str()) else {
            continue;
        };
        for member in tenant.group_members(id) {
            if let Some(upn) = upn_of_id.get(&member) {
                groups_of
                    .entry(upn.clone())
                    .or_default()
                    .insert(name.to_owned());
            }
        }
    }
    let by_upn: BTreeMap<String, &Value> = users
        .iter()
        .filter_map(|u| Some((u["userPrincipalName"].as_str()?.to_ascii_lowercase(), u)))
        .collect();
    let upn = |i: usize| format!("{}@{}", alias(i), demo::VERIFIED_DOMAIN).to_ascii_lowercase();
    let mut out = Vec::new();
    let bench_users = by_upn
        .keys()
        .filter(|u| u.starts_with("bench.user"))
        .count();
    if bench_users != shape.users {
        out.push(format!(
            "{bench_users} bench users in the tenant, {} in the source",
            shape.users
        ));
    }
    for i in 0..shape.users {
        let Some(user) = by_upn.get(&upn(i)) else {
            out.push(format!("{} ({}) is missing", upn(i), user_id(i)));
            continue;
        };
        let skus: Vec<&str> = user["assignedLicenses"]
            .as_array()
            .map(|a| a.iter().filter_map(|l| l["skuId"].as_str()).collect())
            .unwrap_or_default();
        if skus != [sku_of(i)] {
            out.push(format!(
                "{}: licenses {skus:?}, want [{}]",
                upn(i),
                sku_of(i)
            ));
        }
        let manager = user["manager"]
            .as_str()
            .and_then(|id| upn_of_id.get(id))
            .cloned();
        if manager != Shape::manager_of(i).map(upn) {
            out.push(format!("{}: manager {manager:?}", upn(i)));
        }
        let want: BTreeSet<String> = shape
            .groups_of(i)
            .map(|g| format!("Bench Group {g:03}"))
            .collect();
        let have = groups_of.get(&upn(i)).cloned().unwrap_or_default();
        if have != want {
            out.push(format!("{}: groups {have:?}, want {want:?}", upn(i)));
        }
    }
    out
}

fn faulted(config: &mut SandboxConfig) {
    config.knobs.faults = FaultKnobs {
        share_429: SHARE_429,
        share_500: SHARE_500,
        share_503: SHARE_503,
        share_timeout: SHARE_TIMEOUT,
        timeout_ms: TIMEOUT_MS,
        ..FaultKnobs::default()
    };
    config.knobs.replication_lag_ms = REPLICATION_LAG_MS;
}

pub(super) async fn sporadic_faults(quick: bool) -> Report {
    let shape = Shape {
        users: if quick { 200 } else { 600 },
        groups: 7,
        memberships: 1,
    };
    eprintln!(
        "e: {} users (licenses, managers, {} groups): a first load clean, then with {:.0} % 429, {:.0} % 500, {:.0} % 503, {:.0} % answers held {} s and {} s replication lag; Graph's real quota, the product's Graph settings",
        shape.users,
        shape.groups,
        SHARE_429 * 100.0,
        SHARE_500 * 100.0,
        SHARE_503 * 100.0,
        SHARE_TIMEOUT * 100.0,
        TIMEOUT_MS / 1000,
        REPLICATION_LAG_MS / 1000
    );
    let mut config = sandbox_config(WRITE_LATENCY_MS, ThrottleConfig::default());
    config.knobs.read_latency_ms = READ_LATENCY_MS;
    let clean = load(config.clone(), shape).await;
    progress(format!("clean: {:.1} s", clean.wall_s));
    faulted(&mut config);
    let fault = load(config, shape).await;
    progress(format!("faulted: {:.1} s", fault.wall_s));
    targets_of(shape, &clean, &fault)
}

fn targets_of(shape: Shape, clean: &Run, fault: &Run) -> Report {
    let ratio = fault.wall_s / clean.wall_s;
    let extra = fault.extra_429_share();
    let retries = fault.requests.saturating_sub(clean.requests);
    let mut targets = vec![
        Target::new(
            "faulted run ÷ clean run",
            format!(
                "{ratio:.2}× ({:.1} s vs {:.1} s)",
                fault.wall_s, clean.wall_s
            ),
            "≤ 2×",
            ratio <= 2.0,
            || {
                let floor = fault.floor.total_s();
                let reach = if floor > 2.0 * clean.wall_s {
                    format!(
                        "the faults this run met put its floor alone at {:.2}× the clean run ({}), so no client that plans before it writes and honours Retry-After reaches ≤ 2×",
                        floor / clean.wall_s,
                        fault.floor.explain()
                    )
                } else {
                    format!(
                        "its floor is {:.2}× the clean run ({})",
                        floor / clean.wall_s,
                        fault.floor.explain()
                    )
                };
                format!(
                    "{reach}; the run took {:.2}× that floor. {} faults were injected ({} of them 429) and the faulted run sent {retries} requests more than the clean one",
                    fault.wall_s / floor,
                    fault.faults,
                    fault.injected_429,
                )
            },
        ),
        Target::new(
            "end state exact after the faulted run",
            format!("{} mismatches", fault.mismatches.len()),
            "0",
            fault.mismatches.is_empty(),
            || {
                format!(
                    "first: {}",
                    fault.mismatches.first().cloned().unwrap_or_default()
                )
            },
        ),
        Target::new(
            "429s beyond the injected ones",
            format!(
                "{:.2} % ({} of {} requests)",
                extra * 100.0,
                fault.throttled.saturating_sub(fault.injected_429),
                fault.requests
            ),
            "≤ 1 %",
            extra <= 0.01,
            || "the client's pace went over the throttling model's quota".to_owned(),
        ),
    ];
    fail_targets(
        &mut targets,
        clean.failure.clone().or(fault.failure.clone()),
    );
    Report {
        title: format!(
            "e) sporadic faults: {} users, first load clean vs faulted",
            shape.users
        ),
        lines: vec![
            format!(
                "clean {:.1} s ({} requests, {} writes, minimal {}, {} failures, end state {} mismatches); run {}",
                clean.wall_s,
                clean.requests,
                clean.writes,
                clean.minimal_writes,
                clean.failures,
                clean.mismatches.len(),
                clean.status
            ),
            format!(
                "faulted {:.1} s ({} requests, {} writes, {} faults injected, {} × 429 of which {} injected, {} failures); run {}",
                fault.wall_s,
                fault.requests,
                fault.writes,
                fault.faults,
                fault.throttled,
                fault.injected_429,
                fault.failures,
                fault.status
            ),
            format!(
                "floor of the faulted run {}; the run took {:.2}× it",
                fault.floor.explain(),
                fault.wall_s / fault.floor.total_s()
            ),
        ],
        json: json!({
            "scenario": "e_sporadic_faults",
            "users": shape.users, "groups": shape.groups,
            "write_latency_ms": WRITE_LATENCY_MS, "read_latency_ms": READ_LATENCY_MS,
            "faults": {"share_429": SHARE_429, "share_500": SHARE_500, "share_503": SHARE_503,
                       "share_timeout": SHARE_TIMEOUT, "timeout_ms": TIMEOUT_MS,
                       "replication_lag_ms": REPLICATION_LAG_MS},
            "clean": clean.json(), "faulted": fault.json(), "ratio": ratio,
            "faulted_over_floor": fault.wall_s / fault.floor.total_s(),
        }),
        targets,
    }
}
