//! Scenario harness: the real engine with a file source, an SQLite state file and the Graph
//! directory adapter against an in-process sandbox tenant. Tests write the source, run `plan` or
//! `sync`, and assert the tenant (through the sandbox) and the stored state.

use std::path::PathBuf;
use std::time::Duration;

use m365_core::config::Config;
use m365_core::engine::{Engine, RunError, SyncOptions, SyncOutcome};
use m365_core::plan::Plan;
use m365_core::planner::Rule;
use m365_core::rule_mapping::compile_connection_rule;
use m365_core::secrets::ConnectionSecrets;
use m365_core::{Directory, Link, ObjectError, ObjectKind, StateStore, SystemClock};
use m365_graph::{
    GraphClient, GraphDirectory, GraphSettings, PacingConfig, RetryPolicy, SharedState,
};
use m365_sandbox::{RunningSandbox, Sandbox, SandboxConfig, demo};
use m365_source_file::{FileSource, FileSourceConfig};
use m365_state_sqlite::SqliteStateStore;
use secrecy::SecretString;
use serde_json::{Value, json};

/// The rule of most scenarios: the quick start's mapping. `{preferences}` and `{extra}` are
/// replaced by [`Scenario::with_rule`] callers' text.
pub const BASE_RULE: &str = r#"
[rule]
name = "staff"
match_attribute = "userPrincipalName"

[rule.preferences]
{preferences}

[rule.breaker]
max_count = 1000
max_percent = 100.0

[rule.mapping.attributes]
userPrincipalName = "{{ mail | lower }}"
displayName = { attribute = "displayName" }
givenName = { attribute = "givenName" }
surname = { attribute = "sn" }
jobTitle = { attribute = "title" }
department = { attribute = "department" }
usageLocation = { attribute = "usageLocation" }

[rule.mapping.password]
source = "generate"

{extra}
"#;

/// A source user in the file format.
pub fn user(id: &str, alias: &str, extra: Value) -> Value {
    let mut attributes = json!({
        "givenName": alias,
        "sn": "Tester",
        "displayName": format!("{alias} Tester"),
        "mail": format!("{alias}@{}", demo::VERIFIED_DOMAIN),
        "usageLocation": "US",
        "title": "Specialist",
    });
    if let (Some(map), Value::Object(more)) = (attributes.as_object_mut(), extra) {
        for (k, v) in more {
            if v.is_null() {
                map.remove(&k);
            } else {
                map.insert(k, v);
            }
        }
    }
    json!({"id": id, "enabled": true, "attributes": attributes})
}

/// A source group in the file format.
pub fn group(id: &str, name: &str, members: &[&str]) -> Value {
    json!({"id": id, "name": name, "members": members})
}

/// A Graph client of the demo app on `sandbox`, with counters of its own.
fn client_for(sandbox: &RunningSandbox) -> GraphClient {
    let settings = GraphSettings {
        login_url: Some(sandbox.login_url()),
        graph_url: Some(sandbox.graph_url()),
        request_timeout: Duration::from_secs(10),
        pacing: PacingConfig::disabled(),
        replication_retry: RetryPolicy::fast(10, Duration::from_millis(25)),
        transient_retry: RetryPolicy::fast(5, Duration::from_millis(10)),
        ..GraphSettings::default()
    };
    GraphClient::with_shared(
        settings,
        m365_graph::Credentials {
            tenant: demo::TENANT_ID.to_owned(),
            client_id: demo::CLIENT_ID.to_owned(),
            credential: m365_graph::ClientCredential::Secret(SecretString::from(
                demo::CLIENT_SECRET,
            )),
        },
        SharedState::isolated(),
    )
    .expect("client")
}

/// One test's world.
pub struct Scenario {
    pub sandbox: RunningSandbox,
    pub dir: tempfile::TempDir,
    pub source_path: PathBuf,
    pub state: SqliteStateStore,
    pub directory: GraphDirectory,
    pub rule: Rule,
    pub connection: String,
    pub clock: SystemClock,
}

impl Scenario {
    /// The demo tenant and a rule made of [`BASE_RULE`] with these preference lines and extra
    /// TOML (further `[rule.*]` tables).
    pub async fn new(preferences: &str, extra: &str) -> Scenario {
        Self::with_sandbox(SandboxConfig::demo(), preferences, extra).await
    }

    pub async fn with_sandbox(config: SandboxConfig, preferences: &str, extra: &str) -> Scenario {
        let sandbox = Sandbox::new(config).start().await.expect("sandbox starts");
        let dir = tempfile::tempdir().expect("temp dir");
        let source_path = dir.path().join("source.json");
        std::fs::write(&source_path, r#"{"users": [], "groups": []}"#).expect("write source");
        let state = SqliteStateStore::open(dir.path().join("state.sqlite")).expect("state opens");
        let directory = GraphDirectory::new(client_for(&sandbox));
        let rule = Self::compile(&directory, &source_path, preferences, extra).await;
        Scenario {
            sandbox,
            dir,
            source_path,
            state,
            directory,
            rule,
            connection: "scenario/staff".to_owned(),
            clock: SystemClock,
        }
    }

    /// The demo-like tenant of `config` and a rule given as its whole TOML text (`[rule]` and
    /// its sub-tables), for scenarios that need what [`BASE_RULE`] fixes (e.g. the breaker).
    pub async fn with_rule_text(config: SandboxConfig, rule_text: &str) -> Scenario {
        let mut s = Self::with_sandbox(config, "", "").await;
        s.set_rule_text(rule_text).await;
        s
    }

    /// Replaces the rule by one given as its whole TOML text (see [`Scenario::with_rule_text`]).
    pub async fn set_rule_text(&mut self, rule_text: &str) {
        self.rule = Self::compile_text(&self.directory, &self.source_path, rule_text).await;
    }

    async fn compile(
        directory: &GraphDirectory,
        source_path: &std::path::Path,
        preferences: &str,
        extra: &str,
    ) -> Rule {
        let rule_text = BASE_RULE
            .replace("{preferences}", preferences)
            .replace("{extra}", extra);
        Self::compile_text(directory, source_path, &rule_text).await
    }

    async fn compile_text(
        directory: &GraphDirectory,
        source_path: &std::path::Path,
        rule_text: &str,
    ) -> Rule {
        let text = format!(
            "[connection]\nname = \"scenario\"\n\n[source]\ntype = \"file\"\nlocation = {:?}\n{}",
            source_path.display().to_string(),
            rule_text
        );
        let config = Config::from_toml(&text, "scenario.toml").expect("scenario config is valid");
        let domains = directory.domains().await.expect("domains");
        let secrets = ConnectionSecrets {
            additional_apps: Vec::new(),
            tenant: demo::TENANT_ID.to_owned(),
            client_id: demo::CLIENT_ID.to_owned(),
            credential: m365_core::AppCredential::Secret(SecretString::from(demo::CLIENT_SECRET)),
            extra: [(
                "default_password".to_owned(),
                SecretString::from("Default-Passw0rd!"),
            )]
            .into_iter()
            .collect(),
        };
        let mut rule = compile_connection_rule(&config, &domains, &secrets).expect("rule compiles");
        // Scenarios count their Graph requests exactly; the drift check (its own requests on
        // every run) is on in the scenarios about drift, which set its mode.
        rule.drift.mode = m365_core::drift::DriftMode::Off;
        rule
    }

    /// Replaces the rule (same source and state), as an operator editing the config would.
    pub async fn set_rule(&mut self, preferences: &str, extra: &str) {
        self.rule = Self::compile(&self.directory, &self.source_path, preferences, extra).await;
    }

    /// Writes the source file: `users` and `groups` in the file format.
    pub fn write_source(&self, users: &[Value], groups: &[Value]) {
        let text =
            serde_json::to_string_pretty(&json!({"users": users, "groups": groups})).expect("json");
        std::fs::write(&self.source_path, text).expect("write source");
    }

    fn source(&self) -> FileSource {
        FileSource::local(FileSourceConfig::new(
            self.source_path.display().to_string(),
        ))
        .expect("file source")
    }

    /// Runs `f` with an engine over this scenario's ports.
    async fn with_engine<T>(&self, f: impl AsyncFnOnce(&Engine<'_>) -> T) -> T {
        let source = self.source();
        self.with_engine_on(&source, f).await
    }

    async fn with_engine_on<T>(
        &self,
        source: &dyn m365_core::Source,
        f: impl AsyncFnOnce(&Engine<'_>) -> T,
    ) -> T {
        let engine = Engine {
            connection: &self.connection,
            rule: &self.rule,
            source,
            directory: &self.directory,
            state: &self.state,
            clock: &self.clock,
            page_size: 7,
            chunk_size: 10,
        };
        f(&engine).await
    }

    pub async fn plan(&self) -> Plan {
        self.with_engine(async |e| e.plan().await.expect("plan").plan)
            .await
    }

    /// A sync from another source than the scenario's file (an LDAP directory).
    pub async fn sync_from(&self, source: &dyn m365_core::Source) -> SyncOutcome {
        self.try_sync_from(source).await.expect("sync runs")
    }

    /// The same, its error as text.
    pub async fn try_sync_from(
        &self,
        source: &dyn m365_core::Source,
    ) -> Result<SyncOutcome, String> {
        self.sync_from_with(source, false, false).await
    }

    /// A sync from `source`, carrying out what the breaker holds (`override_breaker`), reading
    /// the whole source even when it could report only its changes (`full`).
    pub async fn sync_from_with(
        &self,
        source: &dyn m365_core::Source,
        override_breaker: bool,
        full: bool,
    ) -> Result<SyncOutcome, String> {
        self.with_engine_on(source, async |e| {
            e.sync(SyncOptions {
                holder: m365_core::conformance::holder("scenario"),
                override_breaker,
                full,
                ..SyncOptions::default()
            })
            .await
        })
        .await
        .map_err(|e| e.to_string())
    }

    pub async fn sync(&self) -> SyncOutcome {
        self.try_sync(false, None).await.expect("sync runs")
    }

    pub async fn try_sync(
        &self,
        override_breaker: bool,
        deadline: Option<i64>,
    ) -> Result<SyncOutcome, RunError> {
        self.with_engine(async |e| {
            e.sync(SyncOptions {
                holder: m365_core::conformance::holder("scenario"),
                override_breaker,
                deadline,
                ..SyncOptions::default()
            })
            .await
        })
        .await
    }

    /// A sync that calls `progress` after every chunk (steps done, steps in all).
    pub async fn sync_with_progress(
        &self,
        progress: &(dyn Fn(u64, u64) + Sync),
    ) -> Result<SyncOutcome, RunError> {
        self.with_engine(async |e| {
            e.sync(SyncOptions {
                holder: m365_core::conformance::holder("scenario"),
                progress: Some(progress),
                ..SyncOptions::default()
            })
            .await
        })
        .await
    }

    /// A focused sync (what a webhook event runs): only these user and group source ids.
    pub async fn sync_focused(&self, users: &[&str], groups: &[&str]) -> SyncOutcome {
        let focus = m365_core::planner::Focus {
            users: users.iter().map(|u| (*u).to_owned()).collect(),
            groups: groups.iter().map(|g| (*g).to_owned()).collect(),
        };
        self.with_engine(async |e| {
            e.sync(SyncOptions {
                holder: m365_core::conformance::holder("scenario-webhook"),
                focus: Some(&focus),
                ..SyncOptions::default()
            })
            .await
        })
        .await
        .expect("focused sync runs")
    }

    pub async fn delete_rule(&self, deprovision: bool) {
        self.with_engine(async |e| {
            e.delete_rule(deprovision, &m365_core::conformance::holder("scenario"))
                .await
        })
        .await
        .expect("rule deletion runs");
    }

    // --- tenant ---

    /// A live tenant user by UPN (case-insensitive), all properties.
    pub fn tenant_user(&self, upn: &str) -> Option<Value> {
        self.sandbox.sandbox().users().into_iter().find(|u| {
            u["userPrincipalName"]
                .as_str()
                .is_some_and(|v| v.eq_ignore_ascii_case(upn))
        })
    }

    /// Every live tenant user with this UPN (a duplicate shows as two).
    pub fn tenant_users_named(&self, upn: &str) -> usize {
        self.sandbox
            .sandbox()
            .users()
            .iter()
            .filter(|u| {
                u["userPrincipalName"]
                    .as_str()
                    .is_some_and(|v| v.eq_ignore_ascii_case(upn))
            })
            .count()
    }

    pub fn tenant_groups_named(&self, name: &str) -> Vec<Value> {
        self.sandbox
            .sandbox()
            .groups()
            .into_iter()
            .filter(|g| g["displayName"] == name)
            .collect()
    }

    /// UPNs of the members of the one tenant group with this name, sorted.
    pub fn member_upns(&self, group_name: &str) -> Vec<String> {
        let groups = self.tenant_groups_named(group_name);
        assert_eq!(
            groups.len(),
            1,
            "exactly one tenant group named {group_name}"
        );
        let id = groups[0]["id"].as_str().expect("id").to_owned();
        let users = self.sandbox.sandbox().users();
        let mut upns: Vec<String> = self
            .sandbox
            .sandbox()
            .group_members(&id)
            .iter()
            .filter_map(|m| {
                users
                    .iter()
                    .find(|u| u["id"] == m.as_str())
                    .and_then(|u| u["userPrincipalName"].as_str())
                    .map(str::to_owned)
            })
            .collect();
        upns.sort();
        upns
    }

    /// Writes the sandbox received (Graph write requests, batch items counted one by one).
    pub fn tenant_writes(&self) -> u64 {
        self.directory.counters().writes
    }

    /// Graph as an administrator sees it in the portal: writes that are not the engine's
    /// (out-of-band changes), counted apart from the engine's.
    pub fn admin(&self) -> GraphClient {
        client_for(&self.sandbox)
    }

    // --- state ---

    pub async fn link(&self, kind: ObjectKind, source_id: &str) -> Option<Link> {
        self.state
            .get_links(&self.connection, kind, &[source_id.to_owned()])
            .await
            .expect("state")
            .into_iter()
            .next()
    }

    pub async fn errors(&self) -> Vec<ObjectError> {
        self.state
            .list_errors(&self.connection, 1000)
            .await
            .expect("state")
    }
}
