//! Provisioning benchmark: the engine against the in-process sandbox tenant.
//!
//! ```text
//! cargo bench -p m365-integration-tests --bench provisioning            # a to i, full sizes
//! cargo bench -p m365-integration-tests --bench provisioning -- a c     # some scenarios
//! cargo bench -p m365-integration-tests --bench provisioning -- --quick # smaller sizes
//! ```
//!
//! One JSON line per scenario on stdout, then a human summary. Scenarios:
//!
//! - **a** first load (10k users, licenses, managers, 50 groups / ~20k memberships) against a
//!   sandbox with 100 ms write latency and Graph's write quota (3,000 / 150 s) scaled in time; the
//!   client paced at the same quota. Sustained writes ÷ quota, 429 share, writes ÷ minimal writes.
//! - **b** 1k users, 250 ms per write and 50 ms per read, Graph's real quota: a naive sequential
//!   loop (one request in flight, one member per request) vs the engine with the product's
//!   settings (adaptive concurrency): ratio of wall times.
//! - **c** a no-op run over 100k linked users, in a child process (peak RSS of the run alone).
//! - **d** engine headroom: zero latency, no throttling, no pacing: Graph operations per second.
//! - **e** sporadic faults (429, 500, 503, held answers, replication lag) far below the quota: the
//!   same first load faulted and clean, their ratio, and the faulted end state checked.
//! - **f** the 100k first load (licenses, managers, 500 groups, 200k memberships) at Graph's
//!   quota and latency scaled in time, projected to real time next to the physical floor; then
//!   the same load as chained 15-minute Lambda invocations: how many, and nothing redone.
//! - **g** the no-op run of c with the state in DynamoDB (moto on loopback; `moto_server` from
//!   the test venv, or `MOTO_SERVER`): DynamoDB requests, items read and written, seconds.
//! - **h** the first load of f written through three app registrations, paced together at the
//!   tenant's write quota (18,000 / 5 min): projected to real time next to its floor.
//! - **i** drift detection over 10k linked users: Graph requests and seconds of a run with no
//!   drift (one delta page per collection), next to the run reading the first load's echo and a
//!   full reconciliation.
//!
//! Speed and memory are measured here, never asserted in tests. A missed target is printed with
//! the measured figure and a reason computed from the figures it rests on, which are printed with
//! it; a scenario whose engine run failed prints `failed` for its targets. `-- --help` lists the
//! options.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "a benchmark binary: setup failures abort loudly and results are printed"
)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The allocator of the product's binaries (functions/*), so that the runs measured here allocate
/// as the product does.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[path = "provisioning/drift.rs"]
mod drift;
#[path = "provisioning/dynamo_noop.rs"]
mod dynamo_noop;
#[path = "provisioning/faults.rs"]
mod faults;
#[path = "provisioning/projected.rs"]
mod projected;
#[path = "provisioning/several_apps.rs"]
mod several_apps;

use m365_core::config::Config;
use m365_core::engine::{Engine, SyncOptions, SyncOutcome};
use m365_core::hash::user_state_hash;
use m365_core::planner::{Rule, desired_licenses};
use m365_core::rule_mapping::compile_connection_rule;
use m365_core::secrets::ConnectionSecrets;
use m365_core::{
    Directory, Link, LinkOrigin, ObjectKind, RunStatus, Source, SourceUser, StateStore, SystemClock,
};
use m365_graph::{
    AssignedLicense, Credentials, GraphClient, GraphDirectory, GraphSettings, NewGroup, NewUser,
    PacingConfig, RetryPolicy, SharedState,
};
use m365_sandbox::{
    LOG_CAPACITY, RunningSandbox, Sandbox, SandboxConfig, Stats, ThrottleConfig, demo,
};
use m365_source_file::{FileSource, FileSourceConfig};
use m365_state_sqlite::SqliteStateStore;
use secrecy::SecretString;
use serde_json::{Value, json};

const CONNECTION: &str = "bench/staff";
/// Set in the child processes of scenarios c and d: `noop:<work dir>` or `load:<work dir>`.
const CHILD_ENV: &str = "M365_BENCH_CHILD";
const CHILD_URL_ENV: &str = "M365_BENCH_CHILD_URL";
/// A tracing filter (`m365_graph=info`): the engine's log on stderr.
const LOG_ENV: &str = "M365_BENCH_LOG";

/// Graph's write quota per app + tenant (docs/graph-behaviour.md#identity-quotas), scaled in time
/// by the scenarios.
const WRITE_QUOTA: u32 = 3_000;
const WRITE_WINDOW_SECS: f64 = 150.0;
/// Sandbox write latency of scenario a.
const WRITE_LATENCY_MS: u64 = 100;
/// Sandbox latencies of scenario b: a tenant far away, where latency and not the quota limits a
/// script.
const NAIVE_WRITE_LATENCY_MS: u64 = 250;
const NAIVE_READ_LATENCY_MS: u64 = 50;
/// The connection's concurrency in a, b and d: the highest the config accepts (`connection.
/// concurrency` ≤ 64). With the quota scaled up `time_scale`× but the latency not, the requests
/// in flight needed to keep the quota busy scale up too (see `first_load`).
const CONCURRENCY: usize = 64;
/// Steps per `Directory::apply` (engine chunk). See `first_load` for why not the CLI's 200.
const CHUNK_SIZE: usize = 2_000;
/// Source records per page, as the CLI.
const PAGE_SIZE: usize = 1_000;

const USAGE: &str = "\
provisioning benchmark: the engine against the in-process sandbox tenant

usage: cargo bench -p m365-integration-tests --bench provisioning -- [--quick] [a] [b] [c] [d] [e] [f] [g] [h] [i]

  a        first load: sustained writes against the paced write quota, 429 share, writes per
           minimal write
  b        a naive sequential loop against the engine (adaptive concurrency), 250 ms writes,
           50 ms reads, Graph's real quota
  c        a no-op run over linked users, in a child process (wall time, peak RSS)
  d        engine headroom: Graph operations per second without latency, quota or pacing
  e        sporadic faults: a first load clean and under 429/500/503/held answers/replication
           lag, their ratio and the faulted end state
  f        the 100k first load projected to Graph's real quota next to the physical floor, and
           the same load as 15-minute Lambda invocations (how many; nothing redone)
  g        the no-op run of c with the state in DynamoDB on moto: requests, items read and
           written, seconds (moto_server from .venv/bin, or MOTO_SERVER=<path>)
  h        the first load of f through three app registrations, paced together at the
           tenant's write quota: projected to real time next to its floor
  i        drift detection over linked users: Graph requests and seconds of a run with no
           drift, of the run reading the first load's echo, and of a full reconciliation
  --quick  smaller sizes (a few minutes in all)
  --help   this text

M365_BENCH_LOG=<tracing filter> (m365_graph=info, say) writes the engine's log to stderr.

No scenario named: all nine. One JSON line per scenario on stdout, then a summary; progress on
stderr. A missed target comes with a reason computed from the figures it rests on; the targets of
a scenario whose engine run failed read `failed`.";

fn main() {
    if let Ok(job) = std::env::var(CHILD_ENV) {
        match job.split_once(':') {
            Some(("noop", dir)) => child_run(Path::new(dir), 8, PacingConfig::default()),
            Some(("load", dir)) => child_run(Path::new(dir), CONCURRENCY, PacingConfig::disabled()),
            _ => panic!("{CHILD_ENV}={job}: expected noop:<dir> or load:<dir>"),
        }
        return;
    }
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--help" || a == "-h") {
        println!("{USAGE}");
        return;
    }
    if let Ok(filter) = std::env::var(LOG_ENV) {
        // The engine's own log on stderr, for finding where a scenario's time goes.
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_timer(tracing_subscriber::fmt::time::uptime())
            .with_writer(std::io::stderr)
            .init();
    }
    let quick = args.iter().any(|a| a == "--quick");
    let mut which: Vec<char> = args
        .iter()
        .filter(|a| !a.starts_with('-'))
        .flat_map(|a| a.chars())
        .filter(|c| matches!(c, 'a'..='i'))
        .collect();
    if which.is_empty() {
        which = vec!['a', 'b', 'c', 'd', 'e', 'f', 'g', 'h', 'i'];
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    eprintln!(
        "provisioning benchmark ({}), scenarios {}; progress on stderr, results on stdout",
        if quick { "quick" } else { "full" },
        which.iter().collect::<String>()
    );
    let started = Instant::now();
    let mut reports = Vec::new();
    for scenario in which {
        let report = rt.block_on(async {
            match scenario {
                'a' => first_load(quick).await,
                'b' => naive_vs_engine(quick).await,
                'c' => noop_run(quick).await,
                'd' => headroom(quick).await,
                'e' => faults::sporadic_faults(quick).await,
                'f' => projected::projected_first_load(quick).await,
                'g' => dynamo_noop::dynamo_noop(quick).await,
                'h' => several_apps::several_apps_first_load(quick).await,
                _ => drift::no_drift_run(quick).await,
            }
        });
        let mut line = report.json.clone();
        line["targets"] = targets_json(&report.targets);
        println!("{line}");
        reports.push(report);
    }
    println!();
    println!(
        "== summary ({} sizes, {:.0} s in all; 2-core machine, figures are noisy when other builds run) ==",
        if quick { "quick" } else { "full" },
        started.elapsed().as_secs_f64()
    );
    for report in &reports {
        println!("{}", report.title);
        for line in &report.lines {
            println!("    {line}");
        }
        for target in &report.targets {
            println!(
                "    [{:<6}] {}: {} (target {}){}",
                target.verdict.label(),
                target.name,
                target.measured,
                target.target,
                match &target.reason {
                    Some(reason) => format!(" — {reason}"),
                    None => String::new(),
                }
            );
        }
    }
}

// ---- reporting -------------------------------------------------------------------------------

struct Report {
    title: String,
    json: Value,
    lines: Vec<String>,
    targets: Vec<Target>,
}

/// How a target came out. A target of a scenario whose engine run failed is `Failed` whatever
/// its figure: a failed run proves nothing about speed or memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Met,
    Missed,
    Failed,
}

impl Verdict {
    fn label(self) -> &'static str {
        match self {
            Verdict::Met => "met",
            Verdict::Missed => "MISSED",
            Verdict::Failed => "failed",
        }
    }
}

struct Target {
    name: &'static str,
    measured: String,
    target: String,
    verdict: Verdict,
    /// Why it was missed or failed, with the figures that say so.
    reason: Option<String>,
}

impl Target {
    fn new(
        name: &'static str,
        measured: String,
        target: impl Into<String>,
        met: bool,
        reason: impl FnOnce() -> String,
    ) -> Target {
        Target {
            name,
            measured,
            target: target.into(),
            verdict: if met { Verdict::Met } else { Verdict::Missed },
            reason: (!met).then(reason),
        }
    }
}

/// Marks every target `Failed` when the scenario's engine run failed (`failure` says how).
fn fail_targets(targets: &mut [Target], failure: Option<String>) {
    let Some(failure) = failure else {
        return;
    };
    for target in targets {
        target.verdict = Verdict::Failed;
        target.reason = Some(format!("the engine run failed: {failure}"));
    }
}

/// How an engine run failed, if it did.
fn run_failure(outcome: &SyncOutcome) -> Option<String> {
    if outcome.run.status == RunStatus::Succeeded {
        return None;
    }
    let (failed, first) = failures_of(outcome);
    Some(format!(
        "run {:?}, {failed} failures{}",
        outcome.run.status,
        first.map(|f| format!(", first: {f}")).unwrap_or_default()
    ))
}

/// How a child's run failed, if it did (its JSON result).
fn child_failure(child: &Value) -> Option<String> {
    if child["succeeded"].as_bool() == Some(true) {
        return None;
    }
    Some(format!(
        "run {}, {} failures",
        child["status"].as_str().unwrap_or("?"),
        child["failures"].as_u64().unwrap_or(0)
    ))
}

fn targets_json(targets: &[Target]) -> Value {
    Value::Array(
        targets
            .iter()
            .map(|t| {
                json!({"name": t.name, "measured": t.measured, "target": t.target, "verdict": t.verdict.label().to_ascii_lowercase(), "reason": t.reason})
            })
            .collect(),
    )
}

/// Seconds since the Unix epoch, the clock the sandbox keys its per-second counts by.
fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// Writes the sandbox admitted and refused with 429 (batch items included), from its per-second
/// counts: exact however long the run, unlike the request log.
fn write_totals(stats: &Stats) -> (u64, u64) {
    stats
        .writes_per_second
        .values()
        .fold((0, 0), |(admitted, throttled), c| {
            (admitted + c.admitted, throttled + c.throttled)
        })
}

fn progress(message: impl AsRef<str>) {
    eprintln!("  .. {}", message.as_ref());
}

// ---- the world: source, state, sandbox, client, rule -------------------------------------------

/// The source population of a scenario.
#[derive(Clone, Copy)]
struct Shape {
    users: usize,
    groups: usize,
    /// Groups each user is a member of.
    memberships: usize,
}

impl Shape {
    fn groups_of(&self, i: usize) -> impl Iterator<Item = usize> + '_ {
        let step = (self.groups / self.memberships.max(1)).max(1);
        (0..self.memberships.min(self.groups)).map(move |m| (i + m * step) % self.groups)
    }

    /// Source id of user `i`'s manager: a tree of span 10 rooted at user 0 (so every manager
    /// comes before its reports).
    fn manager_of(i: usize) -> Option<usize> {
        (i > 0).then(|| (i - 1) / 10)
    }
}

fn user_id(i: usize) -> String {
    format!("u{i:06}")
}

fn alias(i: usize) -> String {
    format!("bench.user{i:06}")
}

fn sku_of(i: usize) -> &'static str {
    if i.is_multiple_of(4) {
        demo::SKU_E5
    } else {
        demo::SKU_E3
    }
}

const LOCATIONS: [&str; 4] = ["US", "GB", "DE", "FR"];
const DEPARTMENTS: [&str; 5] = ["Sales", "Engineering", "Support", "Finance", "Operations"];

/// The source file (JSON format of the file source).
fn source_json(shape: Shape) -> Value {
    let users: Vec<Value> = (0..shape.users)
        .map(|i| {
            let mut attributes = json!({
                "givenName": "Bench",
                "sn": format!("User{i:06}"),
                "displayName": format!("Bench User {i:06}"),
                "mail": format!("{}@{}", alias(i), demo::VERIFIED_DOMAIN),
                "usageLocation": LOCATIONS[i % LOCATIONS.len()],
                "title": "Specialist",
                "department": DEPARTMENTS[i % DEPARTMENTS.len()],
                "licenseSku": sku_of(i),
            });
            if let Some(m) = Shape::manager_of(i) {
                attributes["manager"] = json!(user_id(m));
            }
            json!({"id": user_id(i), "enabled": true, "attributes": attributes})
        })
        .collect();
    let mut members: Vec<Vec<String>> = vec![Vec::new(); shape.groups];
    for i in 0..shape.users {
        for g in shape.groups_of(i) {
            members[g].push(user_id(i));
        }
    }
    let groups: Vec<Value> = members
        .into_iter()
        .enumerate()
        .map(|(g, m)| json!({"id": format!("g{g:03}"), "name": format!("Bench Group {g:03}"), "members": m}))
        .collect();
    json!({"users": users, "groups": groups})
}

fn config_text(source_path: &Path) -> String {
    format!(
        r#"
[connection]
name = "bench"

[source]
type = "file"
location = {location:?}

[rule]
name = "staff"
match_attribute = "userPrincipalName"

[rule.breaker]
max_count = 1000000
max_percent = 100.0

[rule.groups]
enabled = true
kind = "security"

[rule.manager]
reference = "id"

[rule.mapping.attributes]
userPrincipalName = "{{{{ mail | lower }}}}"
displayName = {{ attribute = "displayName" }}
givenName = {{ attribute = "givenName" }}
surname = {{ attribute = "sn" }}
jobTitle = {{ attribute = "title" }}
department = {{ attribute = "department" }}
usageLocation = {{ attribute = "usageLocation" }}

[rule.mapping.password]
source = "generate"

[rule.mapping.licenses]
sku_ids = {{ attribute = "licenseSku" }}

[rule.mapping]
manager = {{ attribute = "manager" }}
"#,
        location = source_path.display().to_string()
    )
}

/// The demo tenant with enough seats, the given write latency and throttling.
fn sandbox_config(write_latency_ms: u64, throttle: ThrottleConfig) -> SandboxConfig {
    let mut config = SandboxConfig::demo();
    for sku in &mut config.seed.skus {
        sku.enabled = 1_000_000;
    }
    config.knobs.write_latency_ms = write_latency_ms;
    config.knobs.throttle = throttle;
    config
}

/// Graph's write quota scaled `time_scale`× faster; everything else as Graph.
fn scaled_throttle(time_scale: f64) -> ThrottleConfig {
    ThrottleConfig {
        enabled: true,
        time_scale,
        app_tenant_write_quota: WRITE_QUOTA,
        app_tenant_write_window_secs: WRITE_WINDOW_SECS,
        ..ThrottleConfig::default()
    }
}

/// The client paced at the same scaled quota, as an operator sizes it to the tenant.
fn scaled_pacing(time_scale: f64) -> PacingConfig {
    let defaults = PacingConfig::default();
    PacingConfig {
        write_quota: WRITE_QUOTA,
        write_window: Duration::from_secs_f64(WRITE_WINDOW_SECS / time_scale),
        resource_unit_quota: defaults.resource_unit_quota,
        ru_window: Duration::from_secs_f64(defaults.ru_window.as_secs_f64() / time_scale),
        tenant_write_window: Duration::from_secs_f64(
            defaults.tenant_write_window.as_secs_f64() / time_scale,
        ),
        ..defaults
    }
}

fn credentials() -> Credentials {
    Credentials {
        tenant: demo::TENANT_ID.to_owned(),
        client_id: demo::CLIENT_ID.to_owned(),
        credential: m365_graph::ClientCredential::Secret(SecretString::from(demo::CLIENT_SECRET)),
    }
}

/// The product's own Graph settings (the CLI's defaults), pointed at the sandbox.
fn product_directory(url: &str) -> GraphDirectory {
    GraphDirectory::new(
        GraphClient::with_shared(
            GraphSettings::for_local(url),
            credentials(),
            SharedState::isolated(),
        )
        .expect("client"),
    )
}

fn directory_for(url: &str, concurrency: usize, pacing: PacingConfig) -> GraphDirectory {
    let settings = GraphSettings {
        login_url: Some(url.to_owned()),
        graph_url: Some(url.to_owned()),
        request_timeout: Duration::from_secs(60),
        concurrency,
        pacing,
        replication_retry: RetryPolicy::fast(10, Duration::from_millis(25)),
        transient_retry: RetryPolicy::fast(5, Duration::from_millis(10)),
        ..GraphSettings::default()
    };
    GraphDirectory::new(
        GraphClient::with_shared(settings, credentials(), SharedState::isolated()).expect("client"),
    )
}

async fn compile(directory: &GraphDirectory, config_path: &Path) -> Rule {
    let text = std::fs::read_to_string(config_path).expect("read config");
    let config = Config::from_toml(&text, "bench.toml").expect("bench config is valid");
    let domains = directory.domains().await.expect("domains");
    let secrets = ConnectionSecrets {
        additional_apps: Vec::new(),
        tenant: demo::TENANT_ID.to_owned(),
        client_id: demo::CLIENT_ID.to_owned(),
        credential: m365_core::AppCredential::Secret(SecretString::from(demo::CLIENT_SECRET)),
        extra: Default::default(),
    };
    compile_connection_rule(&config, &domains, &secrets).expect("rule compiles")
}

fn file_source(path: &Path) -> FileSource {
    FileSource::local(FileSourceConfig::new(path.display().to_string())).expect("file source")
}

/// Writes `config.toml` and `source.json` into `dir`.
fn write_inputs(dir: &Path, shape: Shape) -> (PathBuf, PathBuf) {
    let source_path = dir.join("source.json");
    let config_path = dir.join("config.toml");
    std::fs::write(
        &source_path,
        serde_json::to_vec(&source_json(shape)).expect("json"),
    )
    .expect("write source");
    std::fs::write(&config_path, config_text(&source_path)).expect("write config");
    (source_path, config_path)
}

struct World {
    sandbox: RunningSandbox,
    _dir: tempfile::TempDir,
    source_path: PathBuf,
    state: SqliteStateStore,
    directory: GraphDirectory,
    rule: Rule,
}

impl World {
    async fn new(
        sandbox: SandboxConfig,
        shape: Shape,
        concurrency: usize,
        pacing: PacingConfig,
    ) -> World {
        let sandbox = Sandbox::new(sandbox).start().await.expect("sandbox starts");
        let dir = tempfile::tempdir().expect("temp dir");
        let (source_path, config_path) = write_inputs(dir.path(), shape);
        let state = SqliteStateStore::open(dir.path().join("state.sqlite")).expect("state");
        let directory = directory_for(sandbox.base_url(), concurrency, pacing);
        let rule = compile(&directory, &config_path).await;
        World {
            sandbox,
            _dir: dir,
            source_path,
            state,
            directory,
            rule,
        }
    }

    async fn sync(&self) -> SyncOutcome {
        let source = file_source(&self.source_path);
        let clock = SystemClock;
        engine(&self.rule, &source, &self.directory, &self.state, &clock)
            .sync(SyncOptions {
                holder: m365_core::conformance::holder("bench"),
                ..SyncOptions::default()
            })
            .await
            .expect("sync runs")
    }
}

fn engine<'a>(
    rule: &'a Rule,
    source: &'a FileSource,
    directory: &'a GraphDirectory,
    state: &'a SqliteStateStore,
    clock: &'a SystemClock,
) -> Engine<'a> {
    Engine {
        connection: CONNECTION,
        rule,
        source,
        directory,
        state,
        clock,
        page_size: PAGE_SIZE,
        chunk_size: CHUNK_SIZE,
    }
}

fn failures_of(outcome: &SyncOutcome) -> (usize, Option<String>) {
    (
        outcome.report.failures.len(),
        outcome.report.failures.first().map(|f| f.message.clone()),
    )
}

// ---- write timeline --------------------------------------------------------------------------

/// Samples the sandbox's admitted writes and the client's pacing factor every 20 ms.
struct Sampler {
    stop: Arc<AtomicBool>,
    handle: tokio::task::JoinHandle<Vec<Sample>>,
}

#[derive(Clone, Copy)]
struct Sample {
    /// Seconds since t0.
    at: f64,
    admitted: u64,
    pacing_factor: f64,
}

/// What the samples tell.
struct Sampled {
    /// First and last admitted write, in seconds since t0 (20 ms resolution).
    window: Option<(f64, f64)>,
    /// The lowest pacing factor seen (1.0 = the configured rate).
    lowest_pacing_factor: f64,
}

impl Sampler {
    fn start(sandbox: Sandbox, client: GraphClient, t0: Instant) -> Sampler {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let handle = tokio::spawn(async move {
            let sample = || Sample {
                at: t0.elapsed().as_secs_f64(),
                admitted: write_totals(&sandbox.stats()).0,
                pacing_factor: client.pacing_factor(),
            };
            let mut samples = Vec::new();
            while !flag.load(Ordering::Relaxed) {
                samples.push(sample());
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            samples.push(sample());
            samples
        });
        Sampler { stop, handle }
    }

    async fn finish(self) -> Sampled {
        self.stop.store(true, Ordering::Relaxed);
        let samples = self.handle.await.expect("sampler");
        let lowest_pacing_factor = samples.iter().map(|s| s.pacing_factor).fold(1.0, f64::min);
        let (Some(first), Some(last)) = (samples.first(), samples.last()) else {
            return Sampled {
                window: None,
                lowest_pacing_factor,
            };
        };
        // First sample showing a write (the write happened in the 20 ms before it) and first
        // sample showing the final count.
        let start = samples
            .iter()
            .find(|s| s.admitted > first.admitted)
            .map(|s| s.at);
        let end = samples
            .iter()
            .find(|s| s.admitted == last.admitted)
            .map(|s| s.at);
        Sampled {
            window: start.zip(end).filter(|_| last.admitted > first.admitted),
            lowest_pacing_factor,
        }
    }
}

/// Writes per whole second from `start_unix` on (admitted + refused, admitted), from the
/// sandbox's per-second counts.
fn writes_by_second(stats: &Stats, start_unix: f64) -> Vec<(u64, u64)> {
    let first = start_unix.floor() as i64;
    let Some(&last) = stats.writes_per_second.keys().next_back() else {
        return Vec::new();
    };
    (first..=last)
        .map(|second| {
            stats
                .writes_per_second
                .get(&second)
                .map_or((0, 0), |c| (c.admitted + c.throttled, c.admitted))
        })
        .collect()
}

// ---- a: first load -----------------------------------------------------------------------------

/// Why the engine runs with concurrency 64 and chunks of 2,000 here: the quota is scaled
/// `time_scale`× (so the run lasts minutes, not hours) but the 100 ms latency is not, so keeping
/// the quota busy takes `time_scale`× more requests in flight than on Graph. The sandbox also runs
/// the items of a `$batch` one after the other (100 ms each: an envelope of 20 takes 2 s), so an
/// engine chunk of 200 steps is only 10 envelopes in flight = 100 writes/s, below the scaled
/// quota (300 writes/s at ×15). On Graph (20 writes/s) the CLI's 8 / 200 keep the quota busy.
async fn first_load(quick: bool) -> Report {
    let (shape, time_scale) = if quick {
        (
            Shape {
                users: 2_000,
                groups: 10,
                memberships: 2,
            },
            10.0,
        )
    } else {
        (
            Shape {
                users: 10_000,
                groups: 50,
                memberships: 2,
            },
            20.0,
        )
    };
    eprintln!(
        "a: first load of {} users, {} groups, {} memberships; write latency {WRITE_LATENCY_MS} ms; quota {WRITE_QUOTA} writes / {:.1} s (×{time_scale})",
        shape.users,
        shape.groups,
        shape.users * shape.memberships,
        WRITE_WINDOW_SECS / time_scale
    );
    let world = World::new(
        sandbox_config(WRITE_LATENCY_MS, scaled_throttle(time_scale)),
        shape,
        CONCURRENCY,
        scaled_pacing(time_scale),
    )
    .await;
    let sandbox = world.sandbox.sandbox().clone();
    let client = world.directory.client().clone();
    let pacing = scaled_pacing(time_scale);
    let safety = pacing.safety_factor;
    let before = sandbox.stats();
    let cpu_before = cpu_seconds();
    let t0 = Instant::now();
    let t0_unix = unix_now();
    let sampler = Sampler::start(sandbox.clone(), client.clone(), t0);
    let outcome = world.sync().await;
    let wall = t0.elapsed().as_secs_f64();
    let cpu = cpu_seconds() - cpu_before;
    let sampled = sampler.finish().await;
    let after = sandbox.stats();
    let log = sandbox.request_log();

    // Writes from the sandbox's own counters, never from the request log (it keeps the last
    // LOG_CAPACITY entries only).
    let (admitted_before, throttled_writes_before) = write_totals(&before);
    let (admitted_after, throttled_writes_after) = write_totals(&after);
    let accepted = admitted_after - admitted_before;
    let throttled_writes = throttled_writes_after - throttled_writes_before;
    let writes_issued = after.writes - before.writes;
    let requests = (after.reads + after.writes) - (before.reads + before.writes);
    let throttled = after.throttled - before.throttled;
    let throttled_reads = throttled.saturating_sub(throttled_writes);
    let minimal = outcome.plan.minimal_writes();
    let rate = f64::from(WRITE_QUOTA) / (WRITE_WINDOW_SECS / time_scale);
    let burst = f64::from(WRITE_QUOTA);
    let (first, last) = sampled.window.unwrap_or((0.0, wall));
    let steady = (last - first).max(1e-3);
    // The client's pacer holds `safety` × the quota as its burst and refills at `safety` × the
    // quota's rate, so over [first write, last write] (T) at most s·B + s·r·T writes go out.
    // Sustained = (accepted − s·B) / (r·T): the share of the quota's refill the run used beyond
    // the pacer's burst; the pacer caps it at s, and the target is 95 % of that cap.
    let sustained = (accepted as f64 - safety * burst) / (rate * steady);
    let sustained_target = 0.95 * safety;
    let admissible_share = accepted as f64 / (safety * (burst + rate * steady));
    let share_429 = throttled as f64 / requests.max(1) as f64;
    let overhead = writes_issued as f64 / minimal.max(1) as f64;
    let (failed, first_failure) = failures_of(&outcome);
    let tenant_users = sandbox.users().len();
    let client_stats = client.stats();
    let per_second = writes_by_second(&after, t0_unix);
    let paced_rate = safety * rate;
    // Whole seconds inside the write window in which the client sent fewer than half the paced
    // rate (admitted and refused writes together). Second i of `per_second` starts at
    // i − offset seconds after t0.
    let offset = t0_unix.fract();
    let inner_seconds: Vec<u64> = per_second
        .iter()
        .enumerate()
        .filter(|(i, _)| *i as f64 - offset >= first && *i as f64 + 1.0 - offset <= last)
        .map(|(_, (sent, _))| *sent)
        .collect();
    let slow_seconds = inner_seconds
        .iter()
        .filter(|&&sent| (sent as f64) < 0.5 * paced_rate)
        .count();
    // After the pacer's burst was spent, the client can send at most the paced rate: how close
    // it came, over the whole seconds of the window from then on.
    let sent: Vec<u64> = per_second.iter().map(|(sent, _)| *sent).collect();
    let after_burst = burst_spent_at(&sent, safety * burst, paced_rate).and_then(|spent| {
        let seconds: Vec<u64> = sent
            .iter()
            .enumerate()
            .filter(|(i, _)| *i > spent && *i as f64 + 1.0 - offset <= last)
            .map(|(_, n)| *n)
            .collect();
        (!seconds.is_empty()).then(|| AfterBurst {
            spent_in_second: spent,
            seconds: seconds.len(),
            mean_rate: seconds.iter().sum::<u64>() as f64 / seconds.len() as f64,
        })
    });

    // Time the sandbox took per write (batch items included), its write latency included: beyond
    // that, requests queued for the tenant lock. From the request log, which may hold only the
    // last LOG_CAPACITY requests: then the mean is over those, and the output says so.
    let log_complete = log.len() as u64 == after.requests;
    let write_durations: Vec<f64> = log
        .iter()
        .filter(|e| e.write)
        .map(|e| e.duration_ms)
        .collect();
    let sandbox_write_ms =
        write_durations.iter().sum::<f64>() / write_durations.len().max(1) as f64;
    let write_ms_basis = if log_complete {
        format!("{} writes", write_durations.len())
    } else {
        format!(
            "the last {} writes: the request log keeps {LOG_CAPACITY} of the {} requests",
            write_durations.len(),
            after.requests
        )
    };
    let json = json!({
        "scenario": "a_first_load",
        "users": shape.users, "groups": shape.groups,
        "memberships": shape.users * shape.memberships,
        "write_latency_ms": WRITE_LATENCY_MS,
        "quota": {"writes": WRITE_QUOTA, "window_s": WRITE_WINDOW_SECS / time_scale, "time_scale": time_scale, "writes_per_s": rate},
        "client": {"concurrency": CONCURRENCY, "chunk_size": CHUNK_SIZE, "pacing_safety_factor": safety,
                   "paced_writes_per_s": paced_rate, "paced_burst": safety * burst,
                   "http_requests": client_stats.http_requests, "retries": client_stats.retries,
                   "pacing_factor_lowest": sampled.lowest_pacing_factor, "pacing_factor_end": client.pacing_factor()},
        "wall_s": wall, "process_cpu_s": cpu, "cores_busy": cpu / wall,
        "first_write_s": first, "last_write_s": last, "steady_s": steady,
        "writes_issued": writes_issued, "writes_accepted": accepted, "writes_throttled": throttled_writes,
        "minimal_writes": minimal,
        "writes_per_minimal": overhead,
        "sustained_writes_per_quota": sustained,
        "sustained_target": sustained_target,
        "accepted_per_admissible": admissible_share,
        "requests": requests, "throttled_429": throttled, "share_429": share_429,
        "batches": after.batches - before.batches,
        "run_status": format!("{:?}", outcome.run.status),
        "failures": failed, "first_failure": first_failure,
        "tenant_users": tenant_users,
        "request_log_complete": log_complete,
        "writes_per_second": per_second.iter().map(|(sent, _)| *sent).collect::<Vec<_>>(),
        "accepted_writes_per_second": per_second.iter().map(|(_, admitted)| *admitted).collect::<Vec<_>>(),
        "seconds_below_half_paced_rate": slow_seconds,
        "sandbox_mean_write_ms": sandbox_write_ms,
    });
    let figures = LoadFigures {
        accepted,
        throttled_writes,
        throttled_reads,
        writes_issued,
        reads: requests - writes_issued,
        minimal,
        retries: client_stats.retries,
        safety,
        burst,
        rate,
        steady,
        lowest_pacing_factor: sampled.lowest_pacing_factor,
        end_pacing_factor: client.pacing_factor(),
        sandbox_write_ms,
        write_ms_basis,
        slow_seconds,
        inner_seconds: inner_seconds.len(),
        after_burst,
        cores_busy: cpu / wall,
    };
    let mut targets = vec![
        Target::new(
            "sustained writes ÷ quota",
            format!("{sustained:.3}"),
            format!(
                "≥ 0.95 × pacing safety factor {safety} = {sustained_target:.3}; sustained = (accepted − {safety} × {burst:.0} burst) ÷ ({rate:.0} writes/s × {steady:.1} s)"
            ),
            sustained >= sustained_target,
            || figures.sustained_reason(),
        ),
        Target::new(
            "429 share of requests",
            format!("{:.3} % ({throttled} of {requests})", share_429 * 100.0),
            "≤ 1 %",
            share_429 <= 0.01,
            || figures.throttling_reason(),
        ),
        Target::new(
            "writes issued ÷ minimal",
            format!("{overhead:.4} ({writes_issued} / {minimal})"),
            "≤ 1.02",
            overhead <= 1.02,
            || figures.overhead_reason(),
        ),
    ];
    fail_targets(&mut targets, run_failure(&outcome));
    Report {
        title: format!(
            "a) first load: {} users, {} groups, {} memberships, {} ms write latency, {WRITE_QUOTA} writes / {:.1} s, client paced at {safety} of it",
            shape.users,
            shape.groups,
            shape.users * shape.memberships,
            WRITE_LATENCY_MS,
            WRITE_WINDOW_SECS / time_scale
        ),
        lines: vec![
            format!(
                "process CPU {cpu:.0} s over {wall:.0} s wall ({:.2} cores busy, 2 cores on the machine)",
                cpu / wall
            ),
            format!(
                "wall {wall:.1} s; writes from {first:.1} s to {last:.1} s; {accepted} accepted of {writes_issued} issued ({throttled_writes} × 429); minimal {minimal}"
            ),
            format!(
                "sustained {sustained:.3} of the quota beyond the pacer's {:.0}-write burst ({admissible_share:.3} of what the pacer admits in the window); {throttled} × 429; run {:?}, {failed} failures, {tenant_users} tenant users",
                safety * burst,
                outcome.run.status
            ),
            format!(
                "sandbox: {sandbox_write_ms:.0} ms per write on average over {}; {slow_seconds} of {} whole seconds below half the paced rate ({:.0} writes/s); lowest pacing factor {:.2}",
                figures.write_ms_basis,
                inner_seconds.len(),
                0.5 * paced_rate,
                sampled.lowest_pacing_factor
            ),
        ],
        json,
        targets,
    }
}

/// The figures scenario a's reasons rest on.
struct LoadFigures {
    accepted: u64,
    throttled_writes: u64,
    throttled_reads: u64,
    writes_issued: u64,
    reads: u64,
    minimal: u64,
    retries: u64,
    safety: f64,
    burst: f64,
    rate: f64,
    steady: f64,
    lowest_pacing_factor: f64,
    end_pacing_factor: f64,
    sandbox_write_ms: f64,
    write_ms_basis: String,
    slow_seconds: usize,
    inner_seconds: usize,
    after_burst: Option<AfterBurst>,
    cores_busy: f64,
}

/// The writes sent once the pacer's burst was spent.
struct AfterBurst {
    /// The second of the run (from 0) in which the burst ran out.
    spent_in_second: usize,
    /// Whole seconds of the write window after it, and the writes sent per second over them.
    seconds: usize,
    mean_rate: f64,
}

/// The second in which a bucket of `burst` writes, refilled at `rate` per second, ran out
/// (fewer than a second's refill left), given the writes sent in each second.
fn burst_spent_at(sent: &[u64], burst: f64, rate: f64) -> Option<usize> {
    let mut tokens = burst;
    for (second, &n) in sent.iter().enumerate() {
        if second > 0 {
            tokens = (tokens + rate).min(burst);
        }
        tokens -= n as f64;
        if tokens < rate {
            return Some(second);
        }
    }
    None
}

impl LoadFigures {
    fn sustained_reason(&self) -> String {
        let paced_burst = self.safety * self.burst;
        if (self.accepted as f64) <= paced_burst {
            return format!(
                "the run fit in the pacer's burst: {} writes accepted, burst {paced_burst:.0}; a sustained rate needs a longer run",
                self.accepted
            );
        }
        let admissible = self.safety * (self.burst + self.rate * self.steady);
        let paced_rate = self.safety * self.rate;
        let mut causes = Vec::new();
        if let Some(after) = &self.after_burst
            && after.mean_rate < 0.98 * paced_rate
        {
            causes.push(format!(
                "once the pacer's burst was spent (second {}), the client sent {:.0} writes/s on average over the {} whole seconds that followed, against the paced {paced_rate:.0}",
                after.spent_in_second, after.mean_rate, after.seconds
            ));
        }
        if self.throttled_writes > 0 {
            causes.push(format!(
                "{} writes were refused with 429 and waited out Retry-After",
                self.throttled_writes
            ));
        }
        if self.lowest_pacing_factor < 0.99 {
            causes.push(format!(
                "the pacer slowed to {:.2} of its rate at its lowest ({:.2} at the end)",
                self.lowest_pacing_factor, self.end_pacing_factor
            ));
        }
        let latency = WRITE_LATENCY_MS as f64;
        if self.sandbox_write_ms > 1.3 * latency {
            causes.push(format!(
                "the sandbox took {:.0} ms per write on average over {} against its {latency:.0} ms latency: requests queued for it",
                self.sandbox_write_ms, self.write_ms_basis
            ));
        }
        if self.slow_seconds > 0 {
            causes.push(format!(
                "in {} of the {} whole seconds of the write window the client sent fewer than half the paced {:.0} writes/s",
                self.slow_seconds,
                self.inner_seconds,
                self.safety * self.rate
            ));
        }
        if causes.is_empty() {
            causes.push(format!(
                "no 429s, the pacer never slowed, the sandbox kept up ({:.0} ms per write), no whole second fell below half the paced rate and the rate after the burst kept up: the shortfall is spread over the window",
                self.sandbox_write_ms
            ));
        }
        format!(
            "{} writes accepted of the {admissible:.0} the pacer admits over the {:.1} s window ({:.0} short): {}; process {:.2} cores busy; see writes_per_second",
            self.accepted,
            self.steady,
            admissible - self.accepted as f64,
            causes.join("; "),
            self.cores_busy
        )
    }

    fn throttling_reason(&self) -> String {
        format!(
            "{} of {} writes and {} of {} reads were refused with 429 although the client paces at {} × the quota; its pacing factor was {:.2} at its lowest",
            self.throttled_writes,
            self.writes_issued,
            self.throttled_reads,
            self.reads,
            self.safety,
            self.lowest_pacing_factor
        )
    }

    fn overhead_reason(&self) -> String {
        let extra = self.writes_issued.saturating_sub(self.minimal);
        let not_retries = extra.saturating_sub(self.retries);
        let mut reason = format!(
            "{extra} writes beyond the minimal {}: {} writes were refused with 429 and sent again; the client retried {} requests in all (429s, transient errors, replication lag)",
            self.minimal, self.throttled_writes, self.retries
        );
        if not_retries > 0 {
            reason.push_str(&format!(
                "; {not_retries} extra writes were not retries (fallback requests)"
            ));
        }
        reason
    }
}

// ---- b: naive loop vs engine ----------------------------------------------------------------

/// What an admin script does: one request at a time, one member per request, retrying 429s
/// (the client's own retry; no pacing).
async fn naive_loop(directory: &GraphDirectory, shape: Shape) -> u64 {
    let client = directory.client();
    let mut group_ids = Vec::with_capacity(shape.groups);
    for g in 0..shape.groups {
        let group = client
            .create_group(&NewGroup::security(
                format!("Bench Group {g:03}"),
                format!("benchgroup{g:03}"),
            ))
            .await
            .expect("naive: create group");
        group_ids.push(group.id);
    }
    let mut user_ids: Vec<String> = Vec::with_capacity(shape.users);
    for i in 0..shape.users {
        let mut new = NewUser::new(
            format!("{}@{}", alias(i), demo::VERIFIED_DOMAIN),
            format!("Bench User {i:06}"),
            alias(i),
            "Bench-Passw0rd!",
        );
        new.usage_location = Some(LOCATIONS[i % LOCATIONS.len()].to_owned());
        new.given_name = Some("Bench".to_owned());
        new.surname = Some(format!("User{i:06}"));
        new.job_title = Some("Specialist".to_owned());
        new.department = Some(DEPARTMENTS[i % DEPARTMENTS.len()].to_owned());
        let id = client.create_user(&new).await.expect("naive: create").id;
        client
            .assign_license(
                &id,
                &[AssignedLicense {
                    sku_id: sku_of(i).to_owned(),
                    disabled_plans: Vec::new(),
                }],
                &[],
            )
            .await
            .expect("naive: license");
        if let Some(m) = Shape::manager_of(i) {
            client
                .set_manager(&id, &user_ids[m])
                .await
                .expect("naive: manager");
        }
        for g in shape.groups_of(i) {
            client
                .add_group_member(&group_ids[g], &id)
                .await
                .expect("naive: member");
        }
        user_ids.push(id);
        if (i + 1).is_multiple_of(250) {
            progress(format!("naive loop: {} users", i + 1));
        }
    }
    client.stats().requests
}

async fn naive_vs_engine(quick: bool) -> Report {
    let shape = Shape {
        users: if quick { 150 } else { 1_000 },
        groups: 10,
        memberships: 1,
    };
    eprintln!(
        "b: {} users, {} groups, {} memberships: naive sequential loop vs engine; write latency {NAIVE_WRITE_LATENCY_MS} ms, read latency {NAIVE_READ_LATENCY_MS} ms; Graph's real quota ({WRITE_QUOTA} writes / {WRITE_WINDOW_SECS:.0} s); the engine with the product's Graph settings (adaptive concurrency)",
        shape.users,
        shape.groups,
        shape.users * shape.memberships,
    );
    let sandbox = || {
        let mut config = sandbox_config(NAIVE_WRITE_LATENCY_MS, scaled_throttle(1.0));
        config.knobs.read_latency_ms = NAIVE_READ_LATENCY_MS;
        config
    };
    // The naive script: one in flight, no pacing (429s are retried after Retry-After).
    let naive_world = World::new(sandbox(), shape, 1, PacingConfig::disabled()).await;
    let t0 = Instant::now();
    let naive_requests = naive_loop(&naive_world.directory, shape).await;
    let naive_wall = t0.elapsed().as_secs_f64();
    let naive_stats = naive_world.sandbox.sandbox().stats();
    drop(naive_world);
    progress(format!(
        "naive loop: {naive_wall:.1} s, {naive_requests} requests"
    ));

    let mut world = World::new(sandbox(), shape, CONCURRENCY, PacingConfig::default()).await;
    world.directory = product_directory(world.sandbox.base_url());
    let before = world.sandbox.sandbox().stats();
    let t0 = Instant::now();
    let outcome = world.sync().await;
    let engine_wall = t0.elapsed().as_secs_f64();
    let after = world.sandbox.sandbox().stats();
    let limit = world.directory.client().concurrency_limit();
    let (failed, first_failure) = failures_of(&outcome);
    let ratio = naive_wall / engine_wall;
    let json = json!({
        "scenario": "b_naive_vs_engine",
        "users": shape.users, "groups": shape.groups, "memberships": shape.users * shape.memberships,
        "write_latency_ms": NAIVE_WRITE_LATENCY_MS, "read_latency_ms": NAIVE_READ_LATENCY_MS,
        "quota": {"writes": WRITE_QUOTA, "window_s": WRITE_WINDOW_SECS, "time_scale": 1.0},
        "naive": {"wall_s": naive_wall, "requests": naive_requests, "writes": naive_stats.writes, "throttled_429": naive_stats.throttled},
        "engine": {"wall_s": engine_wall, "writes": after.writes - before.writes, "requests": (after.reads + after.writes) - (before.reads + before.writes),
                   "throttled_429": after.throttled - before.throttled, "minimal_writes": outcome.plan.minimal_writes(),
                   "concurrency_limit_at_end": limit, "chunk_size": CHUNK_SIZE, "run_status": format!("{:?}", outcome.run.status), "failures": failed, "first_failure": first_failure},
        "ratio": ratio,
    });
    // The least time the engine's writes need under the client's pacing: its burst goes at once,
    // the rest at the paced rate.
    let safety = PacingConfig::default().safety_factor;
    let engine_writes = after.writes - before.writes;
    let engine_429 = after.throttled - before.throttled;
    let paced_rate = safety * f64::from(WRITE_QUOTA) / WRITE_WINDOW_SECS;
    let paced_burst = safety * f64::from(WRITE_QUOTA);
    let quota_bound_s = (engine_writes as f64 - paced_burst).max(0.0) / paced_rate;
    let naive_ms = naive_wall * 1000.0 / naive_requests.max(1) as f64;
    let mut targets = vec![Target::new(
        "engine vs naive loop",
        format!("{ratio:.1}× ({naive_wall:.1} s vs {engine_wall:.1} s)"),
        "≥ 20×",
        ratio >= 20.0,
        || {
            let bound = if engine_wall <= 1.2 * quota_bound_s {
                "so the engine was bound by the quota".to_owned()
            } else {
                format!(
                    "so the engine spent {:.1} s beyond what the quota imposes",
                    engine_wall - quota_bound_s
                )
            };
            format!(
                "the naive loop sent {naive_requests} requests one at a time, {naive_ms:.0} ms each; the engine's {engine_writes} writes need at least {quota_bound_s:.1} s at the paced quota ({paced_burst:.0}-write burst, then {paced_rate:.0} writes/s) and took {engine_wall:.1} s with {engine_429} × 429 and {limit} requests in flight at the end, {bound}"
            )
        },
    )];
    fail_targets(&mut targets, run_failure(&outcome));
    Report {
        title: format!(
            "b) naive loop vs engine: {} users, {} memberships, {NAIVE_WRITE_LATENCY_MS} ms per write, {NAIVE_READ_LATENCY_MS} ms per read",
            shape.users,
            shape.users * shape.memberships
        ),
        lines: vec![format!(
            "naive {naive_wall:.1} s ({naive_requests} requests, one in flight); engine {engine_wall:.1} s ({} writes, minimal {}, adaptive concurrency at {limit} at the end); run {:?}, {failed} failures",
            after.writes - before.writes,
            outcome.plan.minimal_writes(),
            outcome.run.status
        )],
        json,
        targets,
    }
}

// ---- c: no-op run over linked users ------------------------------------------------------------

/// Builds the stored state a completed first sync would leave: every user and group linked,
/// hashed with `user_state_hash` over exactly what the rule's mapping produces.
async fn link_everything(
    rule: &Rule,
    source: &FileSource,
    state: &dyn StateStore,
    shape: Shape,
) -> usize {
    let now = 1_700_000_000_000;
    let lease = m365_core::conformance::writer(state, CONNECTION).await;
    let link = |kind, source_id: String, object_id: String| Link {
        kind,
        source_id,
        object_id,
        origin: LinkOrigin::Created,
        hash: String::new(),
        applied: Default::default(),
        enabled: true,
        licenses: Vec::new(),
        manager: None,
        members: Vec::new(),
        seen_generation: 1,
        updated_at: now,
        deleted_at: None,
    };
    let object_id = |i: usize| format!("00000000-0000-4000-8000-{i:012}");
    let mut cursor = None;
    let mut linked = 0;
    loop {
        let page = source
            .snapshot_page(cursor.as_ref(), 5_000)
            .await
            .expect("source page");
        let mut links = Vec::with_capacity(page.users.len());
        for user in &page.users {
            let SourceUser { id, enabled, .. } = user;
            let i: usize = id[1..].parse().expect("bench id");
            let desired = rule.mapping.map_user(user).expect("maps");
            let licenses = desired_licenses(&rule.preferences, &desired, &[]);
            let mut l = link(ObjectKind::User, id.clone(), object_id(i));
            l.hash = user_state_hash(&desired.properties, *enabled, &licenses);
            l.applied = desired.properties.clone();
            l.enabled = *enabled;
            l.licenses = licenses;
            l.manager = desired.manager.clone().flatten();
            links.push(l);
        }
        linked += links.len();
        state
            .put_links(CONNECTION, &links, &lease)
            .await
            .expect("links");
        match page.next {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    let mut members: Vec<Vec<String>> = vec![Vec::new(); shape.groups];
    for i in 0..shape.users {
        for g in shape.groups_of(i) {
            members[g].push(object_id(i));
        }
    }
    let groups: Vec<Link> = members
        .into_iter()
        .enumerate()
        .map(|(g, mut m)| {
            m.sort();
            let mut l = link(
                ObjectKind::Group,
                format!("g{g:03}"),
                format!("00000000-0000-4000-9000-{g:012}"),
            );
            l.applied = [(
                "displayName".to_owned(),
                Value::String(format!("Bench Group {g:03}")),
            )]
            .into_iter()
            .collect();
            l.hash = user_state_hash(&l.applied, true, &[]);
            l.members = m;
            l
        })
        .collect();
    state
        .put_links(CONNECTION, &groups, &lease)
        .await
        .expect("links");
    linked
}

async fn noop_run(quick: bool) -> Report {
    let shape = Shape {
        users: if quick { 20_000 } else { 100_000 },
        groups: 50,
        memberships: 2,
    };
    eprintln!(
        "c: no-op run over {} linked users ({} groups, {} memberships), in a child process",
        shape.users,
        shape.groups,
        shape.users * shape.memberships
    );
    let sandbox = Sandbox::new(sandbox_config(0, ThrottleConfig::default()))
        .start()
        .await
        .expect("sandbox starts");
    let dir = tempfile::tempdir().expect("temp dir");
    let t_setup = Instant::now();
    let (source_path, config_path) = write_inputs(dir.path(), shape);
    let source_bytes = std::fs::metadata(&source_path).map_or(0, |m| m.len());
    let directory = directory_for(sandbox.base_url(), 8, PacingConfig::default());
    let rule = compile(&directory, &config_path).await;
    let state = SqliteStateStore::open(dir.path().join("state.sqlite")).expect("state");
    let source = file_source(&source_path);
    let linked = link_everything(&rule, &source, &state, shape).await;
    progress(format!(
        "linked {linked} users directly in {:.1} s; checking that the plan is empty",
        t_setup.elapsed().as_secs_f64()
    ));
    // Where the no-op run's time and memory go: the file source's first read (a fresh source's
    // first page of one user: the file loaded, every record located, one converted), measured
    // here in the parent.
    let rss_before_parse = vm_kb("VmRSS:");
    let t_parse = Instant::now();
    let fresh = file_source(&source_path);
    fresh.snapshot_page(None, 1).await.expect("source page");
    let parse_s = t_parse.elapsed().as_secs_f64();
    let parsed_mb = vm_kb("VmRSS:").saturating_sub(rss_before_parse) as f64 / 1024.0;
    drop(fresh);
    // The claim "these links are what a first sync leaves" holds iff the plan is empty.
    let clock = SystemClock;
    let t_plan = Instant::now();
    let planned = engine(&rule, &source, &directory, &state, &clock)
        .plan()
        .await
        .expect("plan");
    let plan_s = t_plan.elapsed().as_secs_f64();
    let plan_steps = planned.plan.steps.len();
    let plan_issues = planned.plan.issues.len();
    let state_bytes = std::fs::metadata(dir.path().join("state.sqlite")).map_or(0, |m| m.len());
    drop((planned, source, state, rule));

    // The measured run, alone in a child process.
    let child = run_child("noop", dir.path(), sandbox.base_url()).await;
    let wall = child["wall_s"].as_f64().unwrap_or(f64::NAN);
    let writes = child["graph_writes"].as_u64().unwrap_or(u64::MAX);
    let requests = child["graph_requests"].as_u64().unwrap_or(u64::MAX);
    let hwm_mb = child["vm_hwm_kb"].as_f64().unwrap_or(f64::NAN) / 1024.0;
    let setup_hwm_mb = child["vm_hwm_before_run_kb"].as_f64().unwrap_or(f64::NAN) / 1024.0;
    let sandbox_requests = sandbox.sandbox().stats();
    let json = json!({
        "scenario": "c_noop_run",
        "users": shape.users, "groups": shape.groups, "memberships": shape.users * shape.memberships,
        "source_file_bytes": source_bytes, "state_file_bytes": state_bytes,
        "plan_check": {"steps": plan_steps, "issues": plan_issues, "plan_s_in_parent": plan_s},
        "source_parse": {"s": parse_s, "rss_growth_mb": parsed_mb},
        "run": child,
        "sandbox_requests_total": sandbox_requests.requests,
    });
    let child_cpu = child["cpu_s"].as_f64().unwrap_or(f64::NAN);
    let mut targets = vec![
        Target::new(
            "plan over the constructed links is empty",
            format!("{plan_steps} steps, {plan_issues} issues"),
            "0",
            plan_steps == 0 && plan_issues == 0,
            || {
                format!(
                    "the plan over the constructed links has {plan_steps} steps and {plan_issues} issues: the links differ from what the mapping produces"
                )
            },
        ),
        Target::new("Graph writes", writes.to_string(), "0", writes == 0, || {
            format!("{writes} writes over {requests} Graph requests for a tenant that needs none")
        }),
        Target::new(
            "wall time of the no-op run",
            format!("{wall:.2} s"),
            "≤ 3 s",
            wall <= 3.0,
            || {
                format!(
                    "in the parent, the file source's first read of the {} MB file took {parse_s:.2} s and the plan over {} users {plan_s:.2} s; the run in the child took {wall:.2} s wall, {child_cpu:.2} s CPU",
                    source_bytes / 1_000_000,
                    shape.users
                )
            },
        ),
        Target::new(
            "peak RSS of the run (VmHWM)",
            format!("{hwm_mb:.0} MB (process before the run: {setup_hwm_mb:.0} MB)"),
            "≤ 200 MB",
            hwm_mb <= 200.0,
            || {
                format!(
                    "the process held {setup_hwm_mb:.0} MB before the run and peaked at {hwm_mb:.0} MB; in the parent, the file source's first read of the {} MB file grew RSS by {parsed_mb:.0} MB",
                    source_bytes / 1_000_000
                )
            },
        ),
    ];
    fail_targets(&mut targets, child_failure(&child));
    Report {
        title: format!(
            "c) no-op run over {} linked users, {} groups ({} MB source file)",
            shape.users,
            shape.groups,
            source_bytes / 1_000_000
        ),
        lines: vec![format!(
            "{writes} writes, {requests} Graph requests, {wall:.2} s, peak RSS {hwm_mb:.0} MB; run {}",
            child["status"].as_str().unwrap_or("?")
        )],
        json,
        targets,
    }
}

fn vm_hwm_kb() -> u64 {
    vm_kb("VmHWM:")
}

/// A `Vm*` line of `/proc/self/status`, in kB.
fn vm_kb(key: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(key))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// CPU seconds (user + system) this process used so far (`/proc/self/stat`, USER_HZ = 100).
fn cpu_seconds() -> f64 {
    std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| {
            // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
            let rest = s.rsplit_once(')')?.1;
            let fields: Vec<&str> = rest.split_whitespace().collect();
            let utime: f64 = fields.get(11)?.parse().ok()?;
            let stime: f64 = fields.get(12)?.parse().ok()?;
            Some((utime + stime) / 100.0)
        })
        .unwrap_or(f64::NAN)
}

/// Re-executes this binary to run one sync over `dir` against the parent's sandbox at `url`;
/// returns the child's JSON result.
async fn run_child(job: &str, dir: &Path, url: &str) -> Value {
    let exe = std::env::current_exe().expect("current exe");
    let job = format!("{job}:{}", dir.display());
    let url = url.to_owned();
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new(exe)
            .env(CHILD_ENV, job)
            .env(CHILD_URL_ENV, url)
            .stderr(std::process::Stdio::inherit())
            .output()
            .expect("child runs")
    })
    .await
    .expect("child joins");
    let stdout = String::from_utf8_lossy(&output.stdout);
    stdout
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str(l).ok())
        .unwrap_or_else(|| panic!("the child printed no result: {stdout}"))
}

/// A child's measured run: the engine's sync over the prepared work directory, in a process of
/// its own (the sandbox and the setup stay in the parent).
fn child_run(dir: &Path, concurrency: usize, pacing: PacingConfig) {
    let url = std::env::var(CHILD_URL_ENV).expect("sandbox url");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let result = rt.block_on(async {
        let directory = directory_for(&url, concurrency, pacing);
        let rule = compile(&directory, &dir.join("config.toml")).await;
        let state = SqliteStateStore::open(dir.join("state.sqlite")).expect("state");
        let source = file_source(&dir.join("source.json"));
        let clock = SystemClock;
        let hwm_before = vm_hwm_kb();
        let before = directory.counters();
        let cpu_before = cpu_seconds();
        let t0 = Instant::now();
        let outcome = engine(&rule, &source, &directory, &state, &clock)
            .sync(SyncOptions {
                holder: m365_core::conformance::holder("bench-child"),
                ..SyncOptions::default()
            })
            .await
            .expect("sync runs");
        let wall = t0.elapsed().as_secs_f64();
        let cpu = cpu_seconds() - cpu_before;
        let after = directory.counters();
        json!({
            "wall_s": wall,
            "cpu_s": cpu,
            "graph_requests": after.requests - before.requests,
            "graph_writes": after.writes - before.writes,
            "http_requests": directory.client().stats().http_requests,
            "steps": outcome.plan.steps.len(),
            "minimal_writes": outcome.plan.minimal_writes(),
            "failures": outcome.report.failures.len(),
            "status": format!("{:?}", outcome.run.status),
            "succeeded": outcome.run.status == RunStatus::Succeeded,
            "vm_hwm_kb": vm_hwm_kb(),
            "vm_hwm_before_run_kb": hwm_before,
        })
    });
    println!("{result}");
}

// ---- d: engine headroom ----------------------------------------------------------------------

/// The engine runs in a child process against the parent's sandbox, so that the two can be told
/// apart: the wall-clock rate is what engine + sandbox sustain together on this machine, the
/// engine's CPU time per operation what the engine alone would sustain on one core.
async fn headroom(quick: bool) -> Report {
    let shape = Shape {
        users: if quick { 1_000 } else { 5_000 },
        groups: 25,
        memberships: 2,
    };
    eprintln!(
        "d: headroom: first load of {} users (licenses, managers, {} memberships), zero latency, no throttling, no pacing, concurrency {CONCURRENCY}; engine in a child process",
        shape.users,
        shape.users * shape.memberships
    );
    let throttle = ThrottleConfig {
        enabled: false,
        ..ThrottleConfig::default()
    };
    let sandbox = Sandbox::new(sandbox_config(0, throttle))
        .start()
        .await
        .expect("sandbox starts");
    let dir = tempfile::tempdir().expect("temp dir");
    write_inputs(dir.path(), shape);
    let before = sandbox.sandbox().stats();
    let cpu_before = cpu_seconds();
    let child = run_child("load", dir.path(), sandbox.base_url()).await;
    let sandbox_cpu = cpu_seconds() - cpu_before;
    let after = sandbox.sandbox().stats();
    // The child's own setup (token, domains) is a handful of reads: negligible.
    let ops = (after.reads + after.writes) - (before.reads + before.writes);
    let writes = after.writes - before.writes;
    let wall = child["wall_s"].as_f64().unwrap_or(f64::NAN);
    let engine_cpu = child["cpu_s"].as_f64().unwrap_or(f64::NAN);
    let http = child["http_requests"].as_u64().unwrap_or(0);
    let ops_per_s = ops as f64 / wall;
    let ops_per_engine_cpu_s = ops as f64 / engine_cpu;
    let json = json!({
        "scenario": "d_headroom",
        "users": shape.users, "memberships": shape.users * shape.memberships,
        "concurrency": CONCURRENCY, "chunk_size": CHUNK_SIZE,
        "wall_s": wall, "graph_operations": ops, "writes": writes, "http_requests": http,
        "ops_per_s": ops_per_s, "writes_per_s": writes as f64 / wall,
        "engine_cpu_s": engine_cpu, "sandbox_process_cpu_s": sandbox_cpu,
        "ops_per_engine_cpu_s": ops_per_engine_cpu_s,
        "run": child,
    });
    let cores_busy = (sandbox_cpu + engine_cpu) / wall;
    let sandbox_us_per_op = sandbox_cpu * 1e6 / ops.max(1) as f64;
    let mut targets = vec![Target::new(
        "Graph operations per second (wall clock, engine + sandbox on 2 cores)",
        format!("{ops_per_s:.0} ops/s ({ops} in {wall:.2} s)"),
        "≥ 5,000",
        ops_per_s >= 5_000.0,
        || {
            let heavier = if sandbox_cpu > engine_cpu {
                "the sandbox's process"
            } else {
                "the engine's process"
            };
            let bound = if cores_busy >= 1.6 {
                format!(
                    "the two processes kept {cores_busy:.2} of the 2 cores busy: CPU-bound, {heavier} using more"
                )
            } else {
                format!(
                    "the two processes kept only {cores_busy:.2} of the 2 cores busy: they waited (round trips, the tenant lock) more than they computed"
                )
            };
            format!(
                "{bound}; sandbox process {sandbox_cpu:.1} CPU-s ({sandbox_us_per_op:.0} µs per operation), engine {engine_cpu:.1} CPU-s ({ops_per_engine_cpu_s:.0} operations per engine CPU-second)"
            )
        },
    )];
    fail_targets(&mut targets, child_failure(&child));
    Report {
        title: format!(
            "d) engine headroom: {} users, zero latency, no quota",
            shape.users
        ),
        lines: vec![format!(
            "{ops} Graph operations ({writes} writes) over {http} HTTP requests in {wall:.2} s; engine process {engine_cpu:.2} CPU-s ({ops_per_engine_cpu_s:.0} ops per engine CPU-second), sandbox process {sandbox_cpu:.2} CPU-s; run {}",
            child["status"].as_str().unwrap_or("?")
        )],
        json,
        targets,
    }
}
