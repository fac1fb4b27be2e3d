//! Scenario h: the first load of scenario f written through three app registrations of the
//! tenant.
//!
//! Graph's write quota is 3,000 writes per 150 s per app and tenant, and 18,000 per 5 min per
//! tenant across apps (docs/graph-behaviour.md#identity-quotas): three apps reach the tenant's
//! cap, and a fourth would add nothing. The sandbox enforces both quotas, `TIME_SCALE`× faster,
//! with the same scaled write latency as f; the client writes through the three apps with the
//! product's Graph settings and paces them together at the tenant's cap. The projection is f's:
//!
//! ```text
//! projected = startup + (wall − startup) × TIME_SCALE      startup = time to the first write
//! floor     = minimal writes ÷ min(apps × 20, 60) writes/s
//! ```
//!
//! The time scale is lower than f's: three apps write three times as fast, and at f's scale the
//! engine's CPU on this 2-core machine, not the quota, would set the pace here.

use std::time::Instant;

use serde_json::json;

use super::faults::end_state_mismatches;
use super::projected::{first_load_shape, hours, project, scaled_world, timed_sync};
use super::{
    Report, Target, WRITE_QUOTA, WRITE_WINDOW_SECS, cpu_seconds, fail_targets, failures_of,
    progress, run_failure, vm_hwm_kb,
};

/// App registrations the load is written through.
const APPS: usize = 3;
/// How much faster than Graph the sandbox's quotas and latency run.
const TIME_SCALE: f64 = 40.0;
/// Graph's write quota per tenant across apps: 18,000 writes / 5 min.
const TENANT_WRITE_QUOTA: f64 = 18_000.0;
const TENANT_WRITE_WINDOW_SECS: f64 = 300.0;
/// Target: the projected first load within this many hours.
const TARGET_HOURS: f64 = 1.5;
/// Target: 429s at most this share of requests.
const MAX_THROTTLED_SHARE: f64 = 0.01;

/// The rates that bound the load: the apps' quotas together, and the tenant's cap.
struct Limits {
    apps_rate: f64,
    tenant_rate: f64,
}

impl Limits {
    fn of(apps: usize) -> Limits {
        Limits {
            apps_rate: apps as f64 * f64::from(WRITE_QUOTA) / WRITE_WINDOW_SECS,
            tenant_rate: TENANT_WRITE_QUOTA / TENANT_WRITE_WINDOW_SECS,
        }
    }

    fn rate(&self) -> f64 {
        self.apps_rate.min(self.tenant_rate)
    }

    fn which(&self) -> &'static str {
        if self.tenant_rate <= self.apps_rate {
            "the tenant's cap"
        } else {
            "the apps' quotas"
        }
    }
}

pub(super) async fn several_apps_first_load(quick: bool) -> Report {
    let shape = first_load_shape(quick);
    eprintln!(
        "h: first load of {} users (licenses, managers), {} groups, {} memberships through {APPS} app registrations; Graph's quotas ×{TIME_SCALE}",
        shape.users,
        shape.groups,
        shape.users * shape.memberships
    );
    let world = scaled_world(shape, TIME_SCALE, APPS).await;
    progress("several apps: planning and loading");
    let cpu_before = cpu_seconds();
    let t0 = Instant::now();
    let run = timed_sync(&world, None).await;
    let cpu = cpu_seconds() - cpu_before;
    progress(format!(
        "several apps: {:.1} s ({:.1} s to the first write), {} writes in {:.1} s; checking the tenant",
        run.wall,
        run.startup,
        run.writes,
        t0.elapsed().as_secs_f64()
    ));
    let mismatches = end_state_mismatches(&world.sandbox, shape);
    let usage = world.directory.client().app_usage();
    let limits = Limits::of(APPS);
    let minimal = run.outcome.plan.minimal_writes();
    let floor = minimal as f64 / limits.rate();
    let projected = project(run.wall, run.startup, TIME_SCALE);
    let (failures, first_failure) = failures_of(&run.outcome);
    let per_app: Vec<(String, u64)> = usage
        .iter()
        .map(|a| (a.client_id.clone(), a.writes))
        .collect();
    let json = json!({
        "scenario": "h_several_apps_first_load",
        "apps": APPS,
        "users": shape.users, "groups": shape.groups, "memberships": shape.users * shape.memberships,
        "time_scale": TIME_SCALE,
        "apps_writes_per_s": limits.apps_rate, "tenant_writes_per_s": limits.tenant_rate,
        "minimal_writes": minimal, "floor_s": floor,
        "wall_s": run.wall, "startup_s": run.startup, "cpu_s": cpu,
        "projected_s": projected, "per_floor": projected / floor,
        "writes": run.writes, "requests": run.requests, "throttled_429": run.throttled,
        "writes_per_app": per_app.iter().map(|(id, n)| json!({"client_id": id, "writes": n})).collect::<Vec<_>>(),
        "failures": failures, "first_failure": first_failure,
        "end_state_mismatches": mismatches.len(), "first_mismatch": mismatches.first(),
        "vm_hwm_kb": vm_hwm_kb(),
    });
    let lines = vec![
        format!(
            "{APPS} apps × {:.0} writes/s = {:.0} writes/s; the tenant's cap {:.0} writes/s: the limit is {} ({:.0} writes/s)",
            f64::from(WRITE_QUOTA) / WRITE_WINDOW_SECS,
            limits.apps_rate,
            limits.tenant_rate,
            limits.which(),
            limits.rate()
        ),
        format!(
            "{minimal} minimal writes: floor {floor:.0} s ({}); the buckets are full at the start, so a run may beat it by up to {:.0} writes",
            hours(floor),
            (APPS as f64 * f64::from(WRITE_QUOTA)).min(TENANT_WRITE_QUOTA)
        ),
        format!(
            "here: {:.1} s, {:.1} s of it before the first write; {} writes, {} × 429 of {} requests; {} failures; {:.1} CPU-s; {} end-state mismatches",
            run.wall,
            run.startup,
            run.writes,
            run.throttled,
            run.requests,
            failures,
            cpu,
            mismatches.len()
        ),
        format!(
            "projected: {projected:.0} s ({}) = {:.1} s + ({:.1} − {:.1}) s × {TIME_SCALE}; {:.3} × the floor",
            hours(projected),
            run.startup,
            run.wall,
            run.startup,
            projected / floor
        ),
        format!(
            "writes per app: {}",
            per_app
                .iter()
                .map(|(id, n)| format!("{id} {n}"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    ];
    let mut targets = vec![Target::new(
        "projected first load through several apps",
        format!("{} ({projected:.0} s)", hours(projected)),
        format!("≤ {TARGET_HOURS} h"),
        projected <= TARGET_HOURS * 3600.0,
        || {
            let writing = run.wall - run.startup;
            let rate = run.writes as f64 / writing.max(1e-9) / TIME_SCALE;
            format!(
                "after its first write the run sent {rate:.2} writes/s in real terms against the limit's {:.0} ({:.1} s here for {} writes); {:.1} s of startup at real speed",
                limits.rate(),
                writing,
                run.writes,
                run.startup
            )
        },
    )];
    let throttled_share = run.throttled as f64 / run.requests.max(1) as f64;
    targets.push(Target::new(
        "429s ÷ requests",
        format!(
            "{throttled_share:.4} ({} of {})",
            run.throttled, run.requests
        ),
        format!("≤ {MAX_THROTTLED_SHARE}"),
        throttled_share <= MAX_THROTTLED_SHARE,
        || "the apps together overran a quota the pacers should have kept them under".to_owned(),
    ));
    let all_wrote = per_app.iter().all(|(_, n)| *n > 0);
    targets.push(Target::new(
        "end state exact, writes = minimal, every app wrote",
        format!(
            "{} mismatches; {} writes for {minimal} minimal; {} of {APPS} apps wrote",
            mismatches.len(),
            run.writes,
            per_app.iter().filter(|(_, n)| *n > 0).count()
        ),
        "0 mismatches, writes = minimal, every app",
        mismatches.is_empty() && run.writes == minimal && all_wrote,
        || mismatches.first().cloned().unwrap_or_default(),
    ));
    fail_targets(&mut targets, run_failure(&run.outcome));
    Report {
        title: format!(
            "h) first load through {APPS} app registrations: {} users, {} groups, {} memberships, ×{TIME_SCALE}",
            shape.users,
            shape.groups,
            shape.users * shape.memberships
        ),
        json,
        lines,
        targets,
    }
}
