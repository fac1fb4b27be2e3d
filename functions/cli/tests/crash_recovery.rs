//! Crash anywhere, exact end state: `m365-provisioner sync` is killed (SIGKILL) at random
//! instants of a first load into a sandbox tenant, rerun at once, killed again, and finally let
//! finish. The tenant must then be exactly what one uninterrupted sync makes of it: no duplicate
//! user or group, nothing missing, every attribute, license, manager and membership right, and a
//! further sync writes nothing.
//!
//! The sandbox tenant is the real binary's `sandbox` command in its own process, with replication
//! lag: an object created just before a kill stays invisible to the rerun's look-ups for a while,
//! as in Graph (the sandbox's `replication_lag_ms` knob, shared/sandbox/src/config.rs), so a rerun
//! that trusted a look-up alone would create it twice.
//! A rerun of a killed run must start at once (the lease of a dead process of this host is taken
//! over): one that exits 6 (busy) is counted as a lockout.
//!
//! `CRASH_SEED` replays a run's kill instants (the seed is printed); `CRASH_LAG_MS` changes the
//! replication lag.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a broken expectation should fail loudly"
)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use m365_sandbox::{SandboxConfig, demo};
use serde_json::{Value, json};

/// Replication lag of the tenant: an object created is invisible to reads for this long.
const DEFAULT_LAG_MS: u64 = 5_000;
/// At least this many tenants are loaded through kills ...
const MIN_TENANTS: usize = 4;
/// ... and at least this many kills land in all (more tenants are used until they have).
const MIN_KILLS: usize = 12;
/// Kills per tenant before the last run is let finish.
const KILLS_PER_TENANT: usize = 3;
/// A safety bound: the suite stops adding tenants here.
const MAX_TENANTS: usize = 8;

const USERS: usize = 60;

// ---------------------------------------------------------------------------------------------
// Processes.

/// The sandbox tenant: the binary's `sandbox` command; killed by PID when dropped.
struct Tenant {
    child: Child,
    base_url: String,
    http: reqwest::Client,
    rt: tokio::runtime::Runtime,
}

impl Drop for Tenant {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Tenant {
    fn start(dir: &Path, lag_ms: u64) -> Tenant {
        let mut config = SandboxConfig::demo();
        config.knobs.replication_lag_ms = lag_ms;
        let config_path = dir.join("sandbox.json");
        std::fs::write(&config_path, serde_json::to_vec_pretty(&config).unwrap()).unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_m365-provisioner"))
            .args(["sandbox", "--port", "0", "--config"])
            .arg(&config_path)
            .arg("--state")
            .arg(dir.join("tenant.json"))
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("the m365-provisioner binary runs");
        let stdout = child.stdout.take().expect("stdout is piped");
        let mut first = String::new();
        BufReader::new(stdout)
            .read_line(&mut first)
            .expect("the sandbox prints its URL");
        let base_url = first
            .trim()
            .strip_prefix("sandbox tenant listening on ")
            .unwrap_or_else(|| panic!("unexpected first line: {first:?}"))
            .to_owned();
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        Tenant {
            child,
            base_url,
            http,
            rt,
        }
    }

    fn admin(&self, what: &str) -> Value {
        self.rt.block_on(async {
            self.http
                .get(format!("{}/_sandbox/{what}", self.base_url))
                .send()
                .await
                .unwrap()
                .error_for_status()
                .unwrap()
                .json()
                .await
                .unwrap()
        })
    }

    /// Graph writes the tenant has answered since it started (batch items included).
    fn writes(&self) -> u64 {
        self.admin("stats")["writes"].as_u64().unwrap()
    }

    /// Everything a sync sets, comparable across tenants: users by UPN, managers by UPN, groups
    /// by displayName with members by UPN. Object ids, timestamps and passwords are left out.
    /// Lists (not maps) keep duplicates visible.
    fn picture(&self) -> Value {
        let state = self.admin("state");
        let live = |list: &str| -> Vec<Value> {
            state[list]
                .as_array()
                .unwrap()
                .iter()
                .filter(|o| !o["deleted"].as_bool().unwrap_or(false))
                .cloned()
                .collect()
        };
        let users = live("users");
        let upn_of: BTreeMap<String, String> = users
            .iter()
            .map(|u| {
                (
                    u["props"]["id"].as_str().unwrap().to_owned(),
                    u["props"]["userPrincipalName"].as_str().unwrap().to_owned(),
                )
            })
            .collect();
        let name = |id: &str| {
            upn_of
                .get(id)
                .cloned()
                .unwrap_or_else(|| format!("<unknown {id}>"))
        };
        let mut user_rows: Vec<Value> = users
            .iter()
            .map(|u| {
                let p = &u["props"];
                let mut licenses: Vec<Value> = p["assignedLicenses"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
                    .into_iter()
                    .map(|l| {
                        let mut disabled: Vec<String> = l["disabledPlans"]
                            .as_array()
                            .cloned()
                            .unwrap_or_default()
                            .iter()
                            .map(|d| d.as_str().unwrap_or_default().to_ascii_lowercase())
                            .collect();
                        disabled.sort();
                        json!({
                            "skuId": l["skuId"].as_str().unwrap_or_default().to_ascii_lowercase(),
                            "disabledPlans": disabled,
                        })
                    })
                    .collect();
                licenses.sort_by_key(|l| l.to_string());
                let mut row = serde_json::Map::new();
                for key in [
                    "userPrincipalName",
                    "accountEnabled",
                    "displayName",
                    "givenName",
                    "surname",
                    "jobTitle",
                    "department",
                    "usageLocation",
                    "mailNickname",
                    "mail",
                ] {
                    row.insert(key.to_owned(), p[key].clone());
                }
                row.insert("licenses".to_owned(), Value::Array(licenses));
                row.insert(
                    "manager".to_owned(),
                    u["manager"]
                        .as_str()
                        .map_or(Value::Null, |m| name(m).into()),
                );
                Value::Object(row)
            })
            .collect();
        user_rows.sort_by_key(|u| {
            u["userPrincipalName"]
                .as_str()
                .unwrap()
                .to_ascii_lowercase()
        });
        let mut group_rows: Vec<Value> = live("groups")
            .iter()
            .map(|g| {
                let p = &g["props"];
                let mut members: Vec<String> = g["members"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
                    .iter()
                    .map(|m| name(m.as_str().unwrap()))
                    .collect();
                members.sort();
                json!({
                    "displayName": p["displayName"],
                    "mailNickname": p["mailNickname"],
                    "securityEnabled": p["securityEnabled"],
                    "mailEnabled": p["mailEnabled"],
                    "groupTypes": p["groupTypes"],
                    "members": members,
                })
            })
            .collect();
        group_rows.sort_by_key(|g| g.to_string());
        let deleted = state["users"]
            .as_array()
            .unwrap()
            .iter()
            .chain(state["groups"].as_array().unwrap())
            .filter(|o| o["deleted"].as_bool().unwrap_or(false))
            .count();
        json!({"users": user_rows, "groups": group_rows, "deleted": deleted})
    }
}

/// One tenant's working folder: configuration, source, state store, sandbox files.
struct Workspace {
    dir: tempfile::TempDir,
    config: PathBuf,
    tenant: Tenant,
    runs: usize,
}

impl Workspace {
    fn new(lag_ms: u64) -> Workspace {
        let dir = tempfile::tempdir().unwrap();
        let tenant = Tenant::start(dir.path(), lag_ms);
        std::fs::write(
            dir.path().join("source.json"),
            serde_json::to_vec_pretty(&source()).unwrap(),
        )
        .unwrap();
        let config = dir.path().join("m365-provisioner.toml");
        std::fs::write(&config, config_toml(&tenant.base_url)).unwrap();
        Workspace {
            dir,
            config,
            tenant,
            runs: 0,
        }
    }

    /// Starts `sync --json`; its output goes to files of the workspace, read by [`Self::output`].
    fn spawn_sync(&mut self) -> (Child, usize) {
        self.runs += 1;
        let n = self.runs;
        let out = std::fs::File::create(self.dir.path().join(format!("sync-{n}.out"))).unwrap();
        let err = std::fs::File::create(self.dir.path().join(format!("sync-{n}.err"))).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_m365-provisioner"))
            .args(["sync", "--json", "--config"])
            .arg(&self.config)
            .env_remove("M365_CONFIG")
            .env_remove("RUST_LOG")
            .env("M365_TENANT", demo::INITIAL_DOMAIN)
            .env("M365_CLIENT_ID", demo::CLIENT_ID)
            .env("M365_CLIENT_SECRET", demo::CLIENT_SECRET)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .expect("the m365-provisioner binary runs");
        (child, n)
    }

    fn output(&self, n: usize) -> String {
        let read = |ext: &str| {
            std::fs::read_to_string(self.dir.path().join(format!("sync-{n}.{ext}")))
                .unwrap_or_default()
        };
        format!("{}{}", read("out"), read("err"))
    }

    /// Runs a sync to its end: exit code and its JSON outcome.
    fn sync(&mut self) -> (i32, Value, usize) {
        let (mut child, n) = self.spawn_sync();
        let status = child.wait().unwrap();
        let stdout =
            std::fs::read_to_string(self.dir.path().join(format!("sync-{n}.out"))).unwrap();
        let value = serde_json::from_str(&stdout).unwrap_or(Value::Null);
        (status.code().unwrap_or(-1), value, n)
    }
}

// ---------------------------------------------------------------------------------------------
// The load: every kind of object.

fn source_id(i: usize) -> String {
    format!("emp-{i:03}")
}

const DEPARTMENTS: [&str; 4] = ["Finance", "Engineering", "Sales", "Support"];
const LOCATIONS: [&str; 5] = ["US", "GB", "DE", "FR", "JP"];

/// 60 users: 24 with E3, 9 with E5 (the demo tenant's seats), the rest without; a management
/// tree (1 → 2..=5 → the others); 3 disabled at the source; 5 groups.
fn source() -> Value {
    let mut users = Vec::new();
    for i in 1..=USERS {
        let department = DEPARTMENTS[i % DEPARTMENTS.len()];
        let mut attributes = json!({
            "givenName": format!("Given{i}"),
            "sn": format!("Surname{i}"),
            "displayName": format!("Given{i} Surname{i}"),
            "mail": format!("crash.user{i:03}@{}", demo::VERIFIED_DOMAIN),
            "department": department,
            "title": if i <= 5 { "Manager" } else { "Specialist" },
            "usageLocation": LOCATIONS[i % LOCATIONS.len()],
        });
        if i <= 24 {
            attributes["licenseSku"] = json!(demo::SKU_E3);
        } else if i <= 33 {
            attributes["licenseSku"] = json!(demo::SKU_E5);
        }
        if (2..=5).contains(&i) {
            attributes["manager"] = json!(source_id(1));
        } else if i > 5 {
            attributes["manager"] = json!(source_id(2 + i % 4));
        }
        users.push(json!({
            "id": source_id(i),
            "enabled": i % 20 != 7,
            "attributes": attributes,
        }));
    }
    let members = |pick: &dyn Fn(usize) -> bool| -> Vec<String> {
        (1..=USERS).filter(|&i| pick(i)).map(source_id).collect()
    };
    let mut groups: Vec<Value> = DEPARTMENTS
        .iter()
        .map(|d| {
            json!({
                "id": format!("grp-{}", d.to_ascii_lowercase()),
                "name": format!("Crash {d}"),
                "members": members(&|i| DEPARTMENTS[i % DEPARTMENTS.len()] == *d),
            })
        })
        .collect();
    groups.push(json!({
        "id": "grp-all",
        "name": "Crash All Staff",
        "members": members(&|_| true),
    }));
    json!({"users": users, "groups": groups})
}

fn config_toml(base_url: &str) -> String {
    format!(
        r#"[connection]
name = "crash-suite"
login_url = "{base_url}"
graph_url = "{base_url}"

[source]
type = "file"
location = "source.json"

[state]
type = "sqlite"
path = "state.sqlite"

[secrets]
type = "env"

[rule]
name = "staff"
match_attribute = "userPrincipalName"

[rule.preferences]
allow_create = true
allow_update = true
allow_disable = true
allow_deprovision = true
remove_action = "disable"
provision_disabled_users = true

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
reset_password = true

[rule.mapping.licenses]
sku_ids = {{ attribute = "licenseSku" }}

[rule.mapping]
manager = {{ attribute = "manager" }}
"#
    )
}

// ---------------------------------------------------------------------------------------------
// Kill instants: a small seeded generator (SplitMix64), so a seed replays a run.

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, bound)`.
    fn below(&mut self, bound: Duration) -> Duration {
        let ms = u64::try_from(bound.as_millis()).unwrap().max(1);
        Duration::from_millis(self.next() % ms)
    }
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok())
}

/// When a run is killed: after a time, or as soon as the tenant has answered a number of
/// writes (the instants right after a create, before its result is recorded, are short and
/// rarely hit by a timer).
#[derive(Debug, Clone, Copy)]
enum Trigger {
    After(Duration),
    /// Tenant writes since the run started.
    Writes(u64),
}

impl std::fmt::Display for Trigger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Trigger::After(d) => write!(f, "{:.3} s", d.as_secs_f64()),
            Trigger::Writes(n) => write!(f, "write {n}"),
        }
    }
}

/// Waits for `child` until `trigger`; kills it (SIGKILL) if it still runs then, and reaps it, so
/// its process is gone when the next run looks at the lease. `None`: it was killed; otherwise
/// its exit code (it finished first).
fn kill_at(child: &mut Child, trigger: Trigger, tenant: &Tenant) -> Option<i32> {
    let started = Instant::now();
    let writes_before = tenant.writes();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status.code().unwrap_or(-1));
        }
        let now = match trigger {
            Trigger::After(delay) => started.elapsed() >= delay,
            Trigger::Writes(n) => tenant.writes() >= writes_before + n,
        };
        if now {
            child.kill().unwrap();
            child.wait().unwrap();
            return None;
        }
        tenant
            .rt
            .block_on(async { tokio::time::sleep(Duration::from_millis(2)).await });
    }
}

/// The differences between two pictures, one line each: users by UPN and field, groups by
/// displayName (a duplicate shows as a second entry), deleted items.
fn differences(expected: &Value, actual: &Value) -> Vec<String> {
    let mut out = Vec::new();
    let by = |v: &Value, list: &str, key: &str| -> BTreeMap<String, Vec<Value>> {
        let mut map: BTreeMap<String, Vec<Value>> = BTreeMap::new();
        for row in v[list].as_array().unwrap() {
            let name = row[key].as_str().unwrap_or_default().to_ascii_lowercase();
            map.entry(name).or_default().push(row.clone());
        }
        map
    };
    for (list, key) in [("users", "userPrincipalName"), ("groups", "displayName")] {
        let (e, a) = (by(expected, list, key), by(actual, list, key));
        for (name, rows) in &e {
            let found = a.get(name).cloned().unwrap_or_default();
            if found.is_empty() {
                out.push(format!("{list}: {name} is missing"));
                continue;
            }
            if found.len() > rows.len() {
                out.push(format!(
                    "{list}: {name} exists {} times (expected {})",
                    found.len(),
                    rows.len()
                ));
            }
            // Field by field against the first found (the one most like the expected row).
            let expected_row = rows[0].as_object().unwrap();
            let closest = found
                .iter()
                .max_by_key(|f| {
                    expected_row
                        .iter()
                        .filter(|(k, v)| f[k.as_str()] == **v)
                        .count()
                })
                .unwrap();
            for (field, value) in expected_row {
                if closest[field.as_str()] != *value {
                    out.push(format!(
                        "{list}: {name}.{field} is {} (expected {value})",
                        closest[field.as_str()]
                    ));
                }
            }
        }
        for name in a.keys().filter(|n| !e.contains_key(*n)) {
            out.push(format!("{list}: {name} is not expected"));
        }
    }
    if expected["deleted"] != actual["deleted"] {
        out.push(format!(
            "deleted items: {} expected, {} found",
            expected["deleted"], actual["deleted"]
        ));
    }
    out
}

#[test]
fn killed_syncs_end_in_the_exact_state_of_an_uninterrupted_one() {
    let suite_started = Instant::now();
    let lag_ms = env_u64("CRASH_LAG_MS").unwrap_or(DEFAULT_LAG_MS);
    let seed = env_u64("CRASH_SEED").unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64
    });
    println!(
        "crash suite: seed {seed} (CRASH_SEED={seed} replays it), replication lag {lag_ms} ms"
    );
    let mut rng = Rng(seed);

    // The reference: one uninterrupted sync into a fresh tenant.
    let mut reference = Workspace::new(lag_ms);
    let started = Instant::now();
    let (code, outcome, n) = reference.sync();
    let full_run = started.elapsed();
    assert_eq!(code, 0, "reference sync: {}", reference.output(n));
    assert_eq!(outcome["status"], "succeeded", "{outcome:#}");
    let expected = reference.tenant.picture();
    assert_eq!(expected["users"].as_array().unwrap().len(), USERS + 2);
    assert_eq!(expected["groups"].as_array().unwrap().len(), 5 + 1);
    let full_writes = reference.tenant.writes();
    let (code, outcome, n) = reference.sync();
    assert_eq!(code, 0, "{}", reference.output(n));
    assert_eq!(outcome["counts"]["graph_writes"], 0, "{outcome:#}");
    assert_eq!(reference.tenant.writes(), full_writes);
    drop(reference);
    println!(
        "crash suite: reference sync took {:.1} s and {full_writes} tenant writes",
        full_run.as_secs_f64()
    );

    let mut kills = 0usize;
    let mut lockouts = 0usize;
    let mut exact = 0usize;
    let mut tenants = 0usize;
    let mut failures: Vec<String> = Vec::new();
    while (tenants < MIN_TENANTS || kills < MIN_KILLS) && tenants < MAX_TENANTS {
        tenants += 1;
        let mut ws = Workspace::new(lag_ms);
        let mut schedule = Vec::new();
        // The first run of a tenant is killed anywhere in a whole run; a rerun has less left
        // to do, so its kill instant is drawn from the first half. Half the kills are timed,
        // the others come at a tenant write.
        for k in 0..KILLS_PER_TENANT {
            let bound = if k == 0 { full_run } else { full_run / 2 };
            let trigger = if k == 0 && tenants <= MIN_TENANTS {
                // The first kill of the first tenants: at a write of the t-th of MIN_TENANTS
                // equal slices of the first load's writes, so that every part of the run (the
                // creates of the first slice included) is crashed in every suite run.
                let slice = (full_writes / MIN_TENANTS as u64).max(1);
                let from = slice * (tenants as u64 - 1);
                Trigger::Writes(from + 1 + rng.next() % slice)
            } else if rng.next().is_multiple_of(2) {
                Trigger::After(rng.below(bound))
            } else {
                let writes = if k == 0 { full_writes } else { full_writes / 2 };
                Trigger::Writes(1 + rng.next() % writes.max(1))
            };
            let (mut child, n) = ws.spawn_sync();
            match kill_at(&mut child, trigger, &ws.tenant) {
                None => {
                    kills += 1;
                    schedule.push(format!("killed at {trigger}"));
                }
                Some(6) => {
                    lockouts += 1;
                    failures.push(format!(
                        "tenant {tenants}: run {n} was locked out (exit 6): {}",
                        ws.output(n)
                    ));
                }
                Some(0) => {
                    schedule.push(format!("finished before {trigger}"));
                    break;
                }
                Some(code) => failures.push(format!(
                    "tenant {tenants}: run {n} (kill planned at {trigger}) exited {code}: {}",
                    ws.output(n)
                )),
            }
        }
        // The last run finishes (or has finished above); then a sync from scratch of a
        // settled tenant must find nothing to do.
        let (code, outcome, n) = ws.sync();
        if code == 6 {
            lockouts += 1;
        }
        if code != 0 || outcome["status"] != "succeeded" {
            failures.push(format!(
                "tenant {tenants}: final sync exited {code}: {}",
                ws.output(n)
            ));
        }
        let actual = ws.tenant.picture();
        let diff = differences(&expected, &actual);
        let writes_before = ws.tenant.writes();
        let (code, outcome, n) = ws.sync();
        let writes_after = ws.tenant.writes();
        let idle =
            code == 0 && outcome["counts"]["graph_writes"] == 0 && writes_after == writes_before;
        if !idle {
            failures.push(format!(
                "tenant {tenants}: a further sync was not idle (exit {code}, {} tenant writes): {}",
                writes_after - writes_before,
                ws.output(n)
            ));
        }
        if diff.is_empty() && idle {
            exact += 1;
        } else if !diff.is_empty() {
            failures.push(format!(
                "tenant {tenants} (seed {seed}: {}): end state differs ({} differences):\n  {}",
                schedule.join(", "),
                diff.len(),
                diff.join("\n  ")
            ));
        }
        if !diff.is_empty() || !idle {
            // The state store, the tenant file and every run's output stay for a look.
            let kept = ws.dir.path().to_path_buf();
            std::mem::forget(std::mem::replace(&mut ws.dir, tempfile::tempdir().unwrap()));
            println!("crash suite: tenant {tenants} kept in {}", kept.display());
        }
        println!(
            "crash suite: tenant {tenants}: {} → {}",
            schedule.join(", "),
            if diff.is_empty() && idle {
                "exact"
            } else {
                "DIFFERENT"
            }
        );
    }

    println!(
        "crash suite: {kills} kills, {lockouts} lockouts, {exact}/{tenants} exact end states ({:.0} s, seed {seed})",
        suite_started.elapsed().as_secs_f64()
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert_eq!(lockouts, 0);
    assert!(kills >= MIN_KILLS, "only {kills} kills landed");
    assert_eq!(exact, tenants);
}
