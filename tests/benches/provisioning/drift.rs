//! Scenario i: drift detection's cost (docs/design.md#drift). A first load of linked users
//! (licenses, managers, groups), then the run whose delta round brings the first load's own
//! writes back (judged equal), then the measured run with no drift at all: Graph requests and
//! seconds. Last, a full reconciliation over the same tenant, for its cost.

use std::time::Instant;

use m365_core::drift::DriftMode;
use m365_core::engine::SyncOutcome;
use m365_graph::PacingConfig;
use m365_sandbox::ThrottleConfig;
use serde_json::json;

use super::{CONCURRENCY, Report, Shape, Target, World, fail_targets, run_failure, sandbox_config};

/// One timed sync: the outcome and its seconds.
async fn timed(world: &World) -> (SyncOutcome, f64) {
    let started = Instant::now();
    let outcome = world.sync().await;
    (outcome, started.elapsed().as_secs_f64())
}

pub(super) async fn no_drift_run(quick: bool) -> Report {
    let shape = Shape {
        users: if quick { 2_000 } else { 10_000 },
        groups: 50,
        memberships: 2,
    };
    eprintln!(
        "i: drift check over {} linked users ({} groups, {} memberships): the no-drift run's Graph requests and seconds",
        shape.users,
        shape.groups,
        shape.users * shape.memberships
    );
    let throttle = ThrottleConfig {
        enabled: false,
        ..ThrottleConfig::default()
    };
    let mut world = World::new(
        sandbox_config(0, throttle),
        shape,
        CONCURRENCY,
        PacingConfig::disabled(),
    )
    .await;
    world.rule.drift.mode = DriftMode::Repair;
    let (load, load_s) = timed(&world).await;
    super::progress(format!(
        "first load: {} writes in {load_s:.1} s; now the run that reads its echo",
        load.run.counts.graph_writes
    ));
    let (echo, echo_s) = timed(&world).await;
    let (quiet, quiet_s) = timed(&world).await;
    world.rule.drift.full_every_ms = 0;
    let (full, full_s) = timed(&world).await;

    let requests = quiet.run.counts.graph_requests;
    let writes = quiet.run.counts.graph_writes;
    let found = quiet.plan.drift.len() + echo.plan.drift.len() + full.plan.drift.len();
    let steps = quiet.plan.steps.len() + echo.plan.steps.len() + full.plan.steps.len();
    let json = json!({
        "scenario": "i_no_drift_run",
        "users": shape.users, "groups": shape.groups, "memberships": shape.users * shape.memberships,
        "first_load": {"s": load_s, "graph_writes": load.run.counts.graph_writes, "status": load.run.status},
        "echo_run": {"s": echo_s, "graph_requests": echo.run.counts.graph_requests, "drift": echo.plan.drift.len()},
        "no_drift_run": {"s": quiet_s, "graph_requests": requests, "graph_writes": writes, "drift": quiet.plan.drift.len()},
        "full_reconciliation": {"s": full_s, "graph_requests": full.run.counts.graph_requests, "drift": full.plan.drift.len()},
    });
    let mut targets = vec![
        Target::new(
            "drift found and steps planned after the first load",
            format!("{found} drift, {steps} steps"),
            "0",
            found == 0 && steps == 0,
            || {
                format!(
                    "the echo run found {} drift and planned {} steps, the no-drift run {} and {}, the full reconciliation {} and {}: the tenant differs from the links right after the load",
                    echo.plan.drift.len(),
                    echo.plan.steps.len(),
                    quiet.plan.drift.len(),
                    quiet.plan.steps.len(),
                    full.plan.drift.len(),
                    full.plan.steps.len()
                )
            },
        ),
        Target::new(
            "Graph requests of the no-drift run",
            requests.to_string(),
            "2 (one delta page per collection)",
            requests == 2,
            || format!("{requests} Graph requests for 2 delta pages and nothing else to do"),
        ),
        Target::new(
            "Graph writes of the no-drift run",
            writes.to_string(),
            "0",
            writes == 0,
            || format!("{writes} writes where nothing drifted"),
        ),
        Target::new(
            "wall time of the no-drift run",
            format!("{quiet_s:.2} s"),
            "≤ 3 s",
            quiet_s <= 3.0,
            || {
                format!(
                    "{quiet_s:.2} s for {requests} Graph requests over {} linked users; the echo run took {echo_s:.2} s",
                    shape.users
                )
            },
        ),
    ];
    let failure = [&load, &echo, &quiet, &full]
        .into_iter()
        .find_map(run_failure);
    fail_targets(&mut targets, failure);
    Report {
        title: format!(
            "i) drift check over {} linked users, {} groups",
            shape.users, shape.groups
        ),
        lines: vec![
            format!("no-drift run: {requests} Graph requests, {writes} writes, {quiet_s:.2} s"),
            format!(
                "echo run (the first load's writes read back): {} Graph requests, {echo_s:.2} s; full reconciliation: {} Graph requests, {full_s:.2} s",
                echo.run.counts.graph_requests, full.run.counts.graph_requests
            ),
        ],
        json,
        targets,
    }
}
