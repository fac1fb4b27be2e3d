//! LDAP source benchmark: a generated directory in Debian's slapd (tests/ldap/slapd.sh) synced
//! into the in-process sandbox tenant (no write latency, no throttling: the figures are the
//! directory's and the engine's, not Graph's quota).
//!
//! ```text
//! cargo bench -p m365-integration-tests --bench ldap              # 10,000 people
//! cargo bench -p m365-integration-tests --bench ldap -- --quick   # 1,000 people
//! ```
//!
//! It measures, one JSON line on stdout and a summary after it:
//!
//! - the full read of the directory (users and groups, paged searches): entries per second;
//! - the first load into the tenant (the full read, the content synchronization cookie, every
//!   user, group and membership): seconds and entries read;
//! - an unchanged incremental run: entries read past the cursor, Graph requests, seconds
//!   (targets: 0 entries, 0 requests);
//! - one title changed: entries read, Graph writes, seconds (targets: 1 entry, 1 write).
//!
//! A missed target is printed with the figures it rests on; a run that failed prints `failed`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "a benchmark binary: setup failures abort loudly and results are printed"
)]

use std::time::Instant;

use m365_core::engine::SyncOutcome;
use m365_core::{RunStatus, Source};
use m365_integration_tests::ldap::{ADMIN_PASSWORD, Slapd, generated_dn, generated_ldif};
use m365_integration_tests::scenario::Scenario;
use m365_sandbox::{SandboxConfig, ThrottleConfig};
use m365_source_ldap::LdapSource;
use serde_json::json;

const USAGE: &str = "\
LDAP source benchmark: a generated directory in slapd synced into the sandbox tenant

usage: cargo bench -p m365-integration-tests --bench ldap -- [--quick]

  --quick  1,000 people instead of 10,000
  --help   this text

Needs Debian's slapd and ldap-utils (bash tests/run installs them).";

/// Groups of the generated directory; person i is a member of group i % GROUP_COUNT.
const GROUP_COUNT: usize = 20;

const RULE: &str = r#"
[rule]
name = "staff"
match_attribute = "userPrincipalName"

[rule.preferences]
allow_create = true
allow_update = true
allow_disable = true
allow_deprovision = true
remove_action = "disable"

[rule.breaker]
max_count = 1000
max_percent = 100.0

[rule.groups]
enabled = true
kind = "security"

[rule.manager]
reference = "dn"

[rule.mapping.attributes]
userPrincipalName = "{{ mail | lower }}"
displayName = { attribute = "cn" }
jobTitle = { attribute = "title" }
department = { attribute = "departmentNumber" }

[rule.mapping.password]
source = "generate"

[rule.mapping]
manager = { attribute = "manager" }
"#;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--help" || a == "-h") {
        println!("{USAGE}");
        return;
    }
    let people = if args.iter().any(|a| a == "--quick") {
        1_000
    } else {
        10_000
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    rt.block_on(run(people));
}

fn source(slapd: &Slapd) -> LdapSource {
    slapd.source("page_size = 1000", ADMIN_PASSWORD, None)
}

/// The demo tenant with seats for everyone, no latency and no throttling.
fn sandbox_config() -> SandboxConfig {
    let mut config = SandboxConfig::demo();
    for sku in &mut config.seed.skus {
        sku.enabled = 1_000_000;
    }
    config.knobs.write_latency_ms = 0;
    config.knobs.throttle = ThrottleConfig {
        enabled: false,
        ..ThrottleConfig::default()
    };
    config
}

/// What one sync did, as the benchmark reports it.
struct Measured {
    seconds: f64,
    entries: u64,
    requests: u64,
    writes: u64,
    outcome: SyncOutcome,
}

async fn measured_sync(s: &Scenario, ldap: &LdapSource) -> Measured {
    let requests = s.sandbox.sandbox().stats().requests;
    let writes = s.tenant_writes();
    let entries = ldap.entries_read();
    let started = Instant::now();
    let outcome = s.sync_from(ldap).await;
    Measured {
        seconds: started.elapsed().as_secs_f64(),
        entries: ldap.entries_read() - entries,
        requests: s.sandbox.sandbox().stats().requests - requests,
        writes: s.tenant_writes() - writes,
        outcome,
    }
}

/// `met`, `MISSED` with the figures, or `failed` when the run did not succeed.
fn verdict(outcome: &SyncOutcome, met: bool, figures: String) -> String {
    if outcome.run.status != RunStatus::Succeeded {
        format!(
            "failed ({:?}: {:?})",
            outcome.run.status, outcome.run.message
        )
    } else if met {
        "met".to_owned()
    } else {
        format!("MISSED ({figures})")
    }
}

async fn run(people: usize) {
    eprintln!("generating and loading {people} people and {GROUP_COUNT} groups into slapd…");
    let started = Instant::now();
    let slapd = Slapd::start(&generated_ldif(people, GROUP_COUNT));
    let load_seconds = started.elapsed().as_secs_f64();

    let reader = source(&slapd);
    let started = Instant::now();
    let page = reader.snapshot_page(None, 1_000).await.unwrap();
    let read_seconds = started.elapsed().as_secs_f64();
    let read_entries = reader.entries_read();
    assert_eq!(page.groups.len(), GROUP_COUNT);

    eprintln!("first load into the sandbox tenant…");
    let mut s = Scenario::with_rule_text(sandbox_config(), RULE).await;
    // This benchmark measures the source side of an incremental run; the drift check's own
    // Graph requests are measured by the provisioning benchmark's scenario i.
    s.rule.drift.mode = m365_core::drift::DriftMode::Off;
    let ldap = source(&slapd);
    let first = measured_sync(&s, &ldap).await;
    eprintln!("unchanged incremental run…");
    let quiet = measured_sync(&s, &ldap).await;
    slapd.modify(&format!(
        "dn: {}\nchangetype: modify\nreplace: title\ntitle: Lead Analyst\n",
        generated_dn(people / 2)
    ));
    eprintln!("one title changed…");
    let one = measured_sync(&s, &ldap).await;

    let quiet_verdict = verdict(
        &quiet.outcome,
        quiet.entries == 0 && quiet.requests == 0,
        format!(
            "{} entries read, {} Graph requests",
            quiet.entries, quiet.requests
        ),
    );
    let one_verdict = verdict(
        &one.outcome,
        one.entries == 1 && one.writes == 1,
        format!("{} entries read, {} Graph writes", one.entries, one.writes),
    );
    let first_ok = first.outcome.run.status == RunStatus::Succeeded;
    println!(
        "{}",
        json!({
            "people": people,
            "groups": GROUP_COUNT,
            "slapd_load_seconds": load_seconds,
            "full_read": {"entries": read_entries, "seconds": read_seconds,
                          "entries_per_second": read_entries as f64 / read_seconds},
            "first_load": {"status": first.outcome.run.status, "seconds": first.seconds,
                           "entries_read": first.entries, "graph_requests": first.requests,
                           "graph_writes": first.writes, "counts": first.outcome.run.counts},
            "unchanged_run": {"status": quiet.outcome.run.status, "seconds": quiet.seconds,
                              "entries_read": quiet.entries, "graph_requests": quiet.requests,
                              "verdict": quiet_verdict},
            "one_title_changed": {"status": one.outcome.run.status, "seconds": one.seconds,
                                  "entries_read": one.entries, "graph_writes": one.writes,
                                  "verdict": one_verdict},
        })
    );
    println!();
    println!(
        "== LDAP source: {people} people, {GROUP_COUNT} groups (slapd loaded in {load_seconds:.1} s) =="
    );
    println!(
        "    full read: {read_entries} entries in {read_seconds:.2} s = {:.0} entries/s",
        read_entries as f64 / read_seconds
    );
    println!(
        "    first load: {} in {:.1} s ({} entries read, {} Graph requests, {} writes; {} created, {} members added)",
        if first_ok { "succeeded" } else { "failed" },
        first.seconds,
        first.entries,
        first.requests,
        first.writes,
        first.outcome.run.counts.created,
        first.outcome.run.counts.members_added
    );
    println!(
        "    [{quiet_verdict}] unchanged run: {} entries read, {} Graph requests, {:.3} s (target 0 entries, 0 requests)",
        quiet.entries, quiet.requests, quiet.seconds
    );
    println!(
        "    [{one_verdict}] one title changed: {} entries read, {} Graph writes, {:.3} s (target 1 entry, 1 write)",
        one.entries, one.writes, one.seconds
    );
}
