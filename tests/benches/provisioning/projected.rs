//! Scenario f: the 100k first load, projected to Graph's real quota, in one process and as
//! Lambda invocations.
//!
//! The sandbox enforces Graph's write quota (3,000 writes per 150 s per app and tenant,
//! docs/graph-behaviour.md#identity-quotas) and a 100 ms write latency, both `TIME_SCALE`×
//! faster, and the client paces at the same scaled quota with the product's own Graph settings
//! and chunk size. What waits on Graph therefore takes 1/`TIME_SCALE` of its real time, while
//! what the engine computes on its own (reading the source and planning, before the first write)
//! takes its real time. The projection of a run to Graph's real quota is therefore
//!
//! ```text
//! projected = startup + (wall − startup) × TIME_SCALE      startup = time to the first write
//! ```
//!
//! which still scales the engine's CPU time after the first write: an upper bound. The physical
//! floor is the minimal writes ÷ the quota's rate (20 writes/s).
//!
//! The Lambda run does the same load as chained invocations, each a fresh engine over the state
//! the last one left (as the sync state machine chains the scheduled-sync function,
//! shared/runtime/src/scheduled.rs) and the same Graph client (a warm container's), each stopped
//! by a deadline: it shows that nothing is redone across invocations and measures what an
//! invocation costs before its first write (reading the source, planning against the stored
//! state). Its own invocation count is not the real one: during each invocation's startup, at
//! real speed, the scaled quota refills 100× faster than Graph's would and hands the next
//! invocation a burst a real one does not get. The count at a 15-minute function timeout is
//! therefore derived from the one-process projection and the measured startups: each invocation
//! writes from its startup to the timeout less the scheduled-sync's margin.
//!
//! ```text
//! invocations = 1 + ⌈(P − s₁ − (T − m − s₁)) ÷ (T − m − s̄)⌉    P one-process projection,
//! lambda      = P + (invocations − 1) × s̄                     s₁ first startup, s̄ later ones
//! ```

use std::time::{Duration, Instant};

use m365_core::engine::{Engine, SyncOptions, SyncOutcome};
use m365_core::{RunStatus, SystemClock};
use m365_graph::{GraphClient, GraphDirectory, GraphSettings, SharedState};
use serde_json::{Value, json};

use super::faults::end_state_mismatches;
use super::{
    CONNECTION, PAGE_SIZE, Report, Sampler, Shape, Target, WRITE_QUOTA, WRITE_WINDOW_SECS, World,
    cpu_seconds, credentials, fail_targets, failures_of, progress, run_failure, sandbox_config,
    scaled_pacing, scaled_throttle, unix_now, vm_hwm_kb, write_totals,
};

/// How much faster than Graph the sandbox's quota and latency run.
const TIME_SCALE: f64 = 100.0;
/// Graph's write latency, before scaling.
const REAL_WRITE_LATENCY_MS: f64 = 100.0;
/// Steps per `Directory::apply`: the product's (shared/wiring/src/connect.rs).
const PRODUCT_CHUNK_SIZE: usize = 200;
/// Lambda's longest function timeout, and the scheduled-sync's default margin before it
/// (`M365_DEADLINE_MARGIN_SECONDS`).
const FUNCTION_TIMEOUT: Duration = Duration::from_secs(900);
const DEADLINE_MARGIN: Duration = Duration::from_secs(60);
/// A Lambda run that needs more invocations than this has stopped making progress.
const MAX_INVOCATIONS: usize = 200;
/// Target: the projected one-process run within this factor of the physical floor.
const FLOOR_FACTOR: f64 = 1.05;

/// Graph's real write rate per app: 3,000 writes / 150 s.
fn quota_rate() -> f64 {
    f64::from(WRITE_QUOTA) / WRITE_WINDOW_SECS
}

/// Real seconds for a run that took `wall` seconds here, `startup` of them before its first
/// write, at `time_scale`.
pub(super) fn project(wall: f64, startup: f64, time_scale: f64) -> f64 {
    startup + (wall - startup).max(0.0) * time_scale
}

/// The `n`th further app registration of the benchmark's tenant (n from 2).
fn further_app(n: usize) -> (String, String) {
    (
        format!("{n:08x}-0000-4000-8000-000000000000"),
        format!("bench-app-secret~{n}"),
    )
}

/// The product's Graph settings against the sandbox, paced at the scaled quota, writing
/// through `apps` app registrations.
fn scaled_product_directory(url: &str, time_scale: f64, apps: usize) -> GraphDirectory {
    let settings = GraphSettings {
        pacing: scaled_pacing(time_scale),
        ..GraphSettings::for_local(url)
    };
    let first = credentials();
    let mut all = vec![first.clone()];
    for n in 2..=apps {
        let (client_id, secret) = further_app(n);
        all.push(m365_graph::Credentials {
            client_id,
            credential: m365_graph::ClientCredential::Secret(secret.into()),
            ..first.clone()
        });
    }
    GraphDirectory::new(
        GraphClient::with_apps(settings, all, SharedState::isolated()).expect("client"),
    )
}

/// The sandbox at Graph's quotas and write latency `time_scale`× faster, the engine's world
/// over it, writing through `apps` app registrations.
pub(super) async fn scaled_world(shape: Shape, time_scale: f64, apps: usize) -> World {
    let latency_ms = (REAL_WRITE_LATENCY_MS / time_scale).round().max(1.0) as u64;
    let mut config = sandbox_config(latency_ms, scaled_throttle(time_scale));
    let writer = config.seed.apps[0].clone();
    for n in 2..=apps {
        let (client_id, client_secret) = further_app(n);
        config.seed.apps.push(m365_sandbox::AppSeed {
            client_id,
            client_secret,
            certificates: Vec::new(),
            display_name: format!("bench writer {n}"),
            ..writer.clone()
        });
    }
    let mut world = World::new(config, shape, 8, scaled_pacing(time_scale)).await;
    world.directory = scaled_product_directory(world.sandbox.base_url(), time_scale, apps);
    world
}

fn engine<'a>(world: &'a World, source: &'a m365_source_file::FileSource) -> Engine<'a> {
    Engine {
        connection: CONNECTION,
        rule: &world.rule,
        source,
        directory: &world.directory,
        state: &world.state,
        clock: &SystemClock,
        page_size: PAGE_SIZE,
        chunk_size: PRODUCT_CHUNK_SIZE,
    }
}

/// One engine run against the scaled sandbox, with what the sandbox saw of it.
pub(super) struct Timed {
    pub(super) outcome: SyncOutcome,
    pub(super) wall: f64,
    /// Seconds to the first admitted write (the whole run when it wrote nothing).
    pub(super) startup: f64,
    pub(super) writes: u64,
    pub(super) throttled: u64,
    pub(super) requests: u64,
}

impl Timed {
    fn projected(&self) -> f64 {
        project(self.wall, self.startup, TIME_SCALE)
    }
}

pub(super) async fn timed_sync(world: &World, deadline: Option<Duration>) -> Timed {
    let sandbox = world.sandbox.sandbox().clone();
    let before = sandbox.stats();
    let t0 = Instant::now();
    let deadline = deadline.map(|d| ((unix_now() + d.as_secs_f64()) * 1000.0) as i64);
    let sampler = Sampler::start(sandbox.clone(), world.directory.client().clone(), t0);
    let source = super::file_source(&world.source_path);
    let outcome = engine(world, &source)
        .sync(SyncOptions {
            holder: m365_core::conformance::holder("bench"),
            deadline,
            ..SyncOptions::default()
        })
        .await
        .expect("sync runs");
    let wall = t0.elapsed().as_secs_f64();
    let sampled = sampler.finish().await;
    let after = sandbox.stats();
    Timed {
        outcome,
        wall,
        startup: sampled.window.map_or(wall, |(first, _)| first),
        writes: write_totals(&after).0 - write_totals(&before).0,
        throttled: after.throttled - before.throttled,
        requests: (after.reads + after.writes) - (before.reads + before.writes),
    }
}

/// The first load in one process.
struct OneProcess {
    run: Timed,
    cpu: f64,
    mismatches: Vec<String>,
}

async fn one_process(shape: Shape) -> OneProcess {
    let world = scaled_world(shape, TIME_SCALE, 1).await;
    progress("one process: planning and loading");
    let cpu_before = cpu_seconds();
    let run = timed_sync(&world, None).await;
    let cpu = cpu_seconds() - cpu_before;
    progress(format!(
        "one process: {:.1} s ({:.1} s to the first write), {} writes; checking the tenant",
        run.wall, run.startup, run.writes
    ));
    let mismatches = end_state_mismatches(&world.sandbox, shape);
    OneProcess {
        run,
        cpu,
        mismatches,
    }
}

/// The first load as chained Lambda invocations.
struct AsLambda {
    invocations: Vec<Invocation>,
    /// Minimal writes of the first invocation's plan: the whole load.
    minimal: u64,
    mismatches: Vec<String>,
    failure: Option<String>,
}

struct Invocation {
    wall: f64,
    startup: f64,
    writes: u64,
    throttled: u64,
    /// Minimal writes of this invocation's plan.
    planned_writes: u64,
    status: RunStatus,
}

impl AsLambda {
    fn writes(&self) -> u64 {
        self.invocations.iter().map(|i| i.writes).sum()
    }

    /// Mean startup of the invocations after the first (they plan against stored state), or
    /// the first's when there is no other.
    fn continuation_startup(&self) -> f64 {
        let later: Vec<f64> = self.invocations.iter().skip(1).map(|i| i.startup).collect();
        if later.is_empty() {
            self.invocations.first().map_or(0.0, |i| i.startup)
        } else {
            later.iter().sum::<f64>() / later.len() as f64
        }
    }

    /// Invocations whose plan held more than what the ones before left: work redone.
    fn replanned(&self) -> Vec<usize> {
        let mut left = self.minimal;
        let mut out = Vec::new();
        for (k, invocation) in self.invocations.iter().enumerate() {
            if invocation.planned_writes > left {
                out.push(k + 1);
            }
            left = left.saturating_sub(invocation.writes);
        }
        out
    }

    fn json(&self) -> Value {
        json!({
            "invocations": self.invocations.len(),
            "minimal_writes": self.minimal,
            "writes": self.writes(),
            "continuation_startup_s": self.continuation_startup(),
            "end_state_mismatches": self.mismatches.len(),
            "first_mismatch": self.mismatches.first(),
            "failure": self.failure,
            "per_invocation": self.invocations.iter().map(|i| json!({
                "wall_s": i.wall, "startup_s": i.startup,
                "writes": i.writes, "throttled_429": i.throttled,
                "planned_writes": i.planned_writes, "status": format!("{:?}", i.status),
            })).collect::<Vec<_>>(),
        })
    }
}

/// The wall-clock deadline of an invocation whose startup is expected to take `startup`
/// seconds: startup at real speed, the rest of `timeout − margin` scaled (what the bench's
/// invocations stop at; the real count is derived, see the module docs).
fn invocation_deadline(startup: f64) -> Duration {
    let budget = (FUNCTION_TIMEOUT - DEADLINE_MARGIN).as_secs_f64();
    Duration::from_secs_f64(startup + (budget - startup).max(0.0) / TIME_SCALE)
}

async fn as_lambda(shape: Shape) -> AsLambda {
    let world = scaled_world(shape, TIME_SCALE, 1).await;
    // The first invocation's startup is its plan: made once here, without writing.
    let t_plan = Instant::now();
    let source = super::file_source(&world.source_path);
    let planned = engine(&world, &source).plan().await.expect("plan");
    let minimal = planned.plan.minimal_writes();
    drop((planned, source));
    let mut expected_startup = t_plan.elapsed().as_secs_f64();
    let mut invocations = Vec::new();
    let mut failure = None;
    while invocations.len() < MAX_INVOCATIONS {
        let run = timed_sync(&world, Some(invocation_deadline(expected_startup))).await;
        let status = run.outcome.run.status;
        progress(format!(
            "invocation {}: {:.1} s here ({:.1} s startup), {} writes, {:?}",
            invocations.len() + 1,
            run.wall,
            run.startup,
            run.writes,
            status
        ));
        expected_startup = run.startup;
        invocations.push(Invocation {
            wall: run.wall,
            startup: run.startup,
            writes: run.writes,
            throttled: run.throttled,
            planned_writes: run.outcome.plan.minimal_writes(),
            status,
        });
        if status != RunStatus::Checkpointed {
            failure = run_failure(&run.outcome);
            break;
        }
    }
    let last_checkpointed = invocations
        .last()
        .is_some_and(|i: &Invocation| i.status == RunStatus::Checkpointed);
    if invocations.len() == MAX_INVOCATIONS && last_checkpointed {
        failure = Some(format!(
            "still checkpointed after {MAX_INVOCATIONS} invocations"
        ));
    }
    progress("lambda: checking the tenant");
    AsLambda {
        invocations,
        minimal,
        mismatches: end_state_mismatches(&world.sandbox, shape),
        failure,
    }
}

/// The 100k first load (10k with `--quick`): licenses, managers, two memberships per user.
pub(super) fn first_load_shape(quick: bool) -> Shape {
    let (users, groups) = if quick { (10_000, 50) } else { (100_000, 500) };
    Shape {
        users,
        groups,
        memberships: 2,
    }
}

pub(super) async fn projected_first_load(quick: bool) -> Report {
    let shape = first_load_shape(quick);
    eprintln!(
        "f: projected first load of {} users (licenses, managers), {} groups, {} memberships; Graph's write quota and {REAL_WRITE_LATENCY_MS} ms writes ×{TIME_SCALE}; then the same as Lambda invocations of {} s",
        shape.users,
        shape.groups,
        shape.users * shape.memberships,
        FUNCTION_TIMEOUT.as_secs()
    );
    let one = one_process(shape).await;
    let lambda = as_lambda(shape).await;
    report(shape, &one, &lambda)
}

/// The first load as invocations of a 15-minute function, derived from the one-process
/// projection and the startups the chained run measured (module docs).
struct LambdaProjection {
    first_startup: f64,
    later_startup: f64,
    invocations: u64,
    total: f64,
}

impl LambdaProjection {
    fn derive(one_process: f64, lambda: &AsLambda) -> LambdaProjection {
        let budget = (FUNCTION_TIMEOUT - DEADLINE_MARGIN).as_secs_f64();
        let first_startup = lambda.invocations.first().map_or(0.0, |i| i.startup);
        let later_startup = lambda.continuation_startup();
        let writing = (one_process - first_startup).max(0.0);
        let after_first = (writing - (budget - first_startup)).max(0.0);
        let later = (after_first / (budget - later_startup).max(1.0)).ceil() as u64;
        LambdaProjection {
            first_startup,
            later_startup,
            invocations: 1 + later,
            total: one_process + later as f64 * later_startup,
        }
    }
}

pub(super) fn hours(seconds: f64) -> String {
    format!("{:.2} h", seconds / 3600.0)
}

fn report(shape: Shape, one: &OneProcess, lambda: &AsLambda) -> Report {
    let minimal = one.run.outcome.plan.minimal_writes();
    let floor = minimal as f64 / quota_rate();
    let projected = one.run.projected();
    let upper = one.run.wall * TIME_SCALE;
    let ratio = projected / floor;
    let (failures, first_failure) = failures_of(&one.run.outcome);
    let lambda_projection = LambdaProjection::derive(projected, lambda);
    let replanned = lambda.replanned();
    let json = json!({
        "scenario": "f_projected_first_load",
        "users": shape.users, "groups": shape.groups, "memberships": shape.users * shape.memberships,
        "time_scale": TIME_SCALE, "write_latency_ms": REAL_WRITE_LATENCY_MS / TIME_SCALE,
        "quota_writes_per_s": quota_rate(), "chunk_size": PRODUCT_CHUNK_SIZE,
        "minimal_writes": minimal, "floor_s": floor,
        "one_process": {
            "wall_s": one.run.wall, "startup_s": one.run.startup, "cpu_s": one.cpu,
            "projected_s": projected, "projected_all_scaled_s": upper, "per_floor": ratio,
            "writes": one.run.writes, "requests": one.run.requests, "throttled_429": one.run.throttled,
            "failures": failures, "first_failure": first_failure,
            "run_status": format!("{:?}", one.run.outcome.run.status),
            "end_state_mismatches": one.mismatches.len(), "first_mismatch": one.mismatches.first(),
            "vm_hwm_kb": vm_hwm_kb(),
        },
        "lambda": lambda.json(),
        "lambda_projection": {
            "function_timeout_s": FUNCTION_TIMEOUT.as_secs(), "deadline_margin_s": DEADLINE_MARGIN.as_secs(),
            "first_startup_s": lambda_projection.first_startup,
            "continuation_startup_s": lambda_projection.later_startup,
            "invocations": lambda_projection.invocations, "projected_s": lambda_projection.total,
            "per_floor": lambda_projection.total / floor,
        },
    });
    let lines = vec![
        format!(
            "{minimal} minimal writes at Graph's {:.0} writes/s: floor {floor:.0} s ({}); the quota's bucket is full at the start, so a run may beat that floor by up to its {WRITE_QUOTA} writes ({WRITE_WINDOW_SECS:.0} s)",
            quota_rate(),
            hours(floor)
        ),
        format!(
            "one process: {:.1} s here, {:.1} s of it before the first write; {} writes, {} × 429 of {} requests; {} failures; {:.1} CPU-s; {} end-state mismatches",
            one.run.wall,
            one.run.startup,
            one.run.writes,
            one.run.throttled,
            one.run.requests,
            failures,
            one.cpu,
            one.mismatches.len()
        ),
        format!(
            "one process projected: {projected:.0} s ({}) = {:.1} s + ({:.1} − {:.1}) s × {TIME_SCALE}; everything scaled: {upper:.0} s ({:.3} × floor)",
            hours(projected),
            one.run.startup,
            one.run.wall,
            one.run.startup,
            upper / floor
        ),
        format!(
            "as Lambda ({} s timeout, stops {} s before): {} invocations, projected {:.0} s ({}, {:.3} × floor), from a first startup of {:.1} s and later ones of {:.1} s at real speed",
            FUNCTION_TIMEOUT.as_secs(),
            DEADLINE_MARGIN.as_secs(),
            lambda_projection.invocations,
            lambda_projection.total,
            hours(lambda_projection.total),
            lambda_projection.total / floor,
            lambda_projection.first_startup,
            lambda_projection.later_startup
        ),
        format!(
            "chained here: {} invocations; {} writes for {} minimal; {} end-state mismatches",
            lambda.invocations.len(),
            lambda.writes(),
            lambda.minimal,
            lambda.mismatches.len()
        ),
    ];
    let targets = targets(one, lambda, floor, &replanned);
    Report {
        title: format!(
            "f) projected first load: {} users, {} groups, {} memberships, ×{TIME_SCALE}",
            shape.users,
            shape.groups,
            shape.users * shape.memberships
        ),
        json,
        lines,
        targets,
    }
}

/// The scenario's targets: the projection against the floor, the end state, nothing redone.
fn targets(one: &OneProcess, lambda: &AsLambda, floor: f64, replanned: &[usize]) -> Vec<Target> {
    let projected = one.run.projected();
    let ratio = projected / floor;
    let mut targets = vec![Target::new(
        "projected first load ÷ physical floor",
        format!("{ratio:.3} ({projected:.0} s / {floor:.0} s)"),
        format!("≤ {FLOOR_FACTOR}"),
        ratio <= FLOOR_FACTOR,
        || {
            let writing = one.run.wall - one.run.startup;
            let rate = one.run.writes as f64 / writing.max(1e-9) / TIME_SCALE;
            format!(
                "after its first write the run sent {rate:.2} writes/s in real terms against the quota's {:.0} ({:.1} s here for {} writes); {:.1} s of startup at real speed",
                quota_rate(),
                writing,
                one.run.writes,
                one.run.startup
            )
        },
    )];
    fail_targets(&mut targets, run_failure(&one.run.outcome));
    let exact = one.mismatches.is_empty() && lambda.mismatches.is_empty();
    targets.push(Target::new(
        "end state exact after both runs",
        format!(
            "{} + {} mismatches",
            one.mismatches.len(),
            lambda.mismatches.len()
        ),
        "0",
        exact,
        || {
            one.mismatches
                .first()
                .or(lambda.mismatches.first())
                .cloned()
                .unwrap_or_default()
        },
    ));
    let mut redone = vec![Target::new(
        "Lambda: nothing redone across invocations",
        format!(
            "{} writes for {} minimal over {} invocations; {} invocations planned more than was left",
            lambda.writes(),
            lambda.minimal,
            lambda.invocations.len(),
            replanned.len()
        ),
        "writes = minimal, no invocation plans what an earlier one applied",
        lambda.writes() == lambda.minimal && replanned.is_empty(),
        || {
            format!(
                "{} writes beyond the minimal; invocations planning more than was left: {replanned:?}",
                lambda.writes() as i64 - lambda.minimal as i64
            )
        },
    )];
    fail_targets(&mut redone, lambda.failure.clone());
    targets.extend(redone);
    targets
}
