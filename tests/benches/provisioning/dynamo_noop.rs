//! Scenario g: the no-op run of scenario c with its state in DynamoDB (moto), the store the
//! Lambda functions use.
//!
//! Every call the store makes goes through an SDK interceptor that counts requests by operation,
//! the items they read (`Count` of a Query or Scan, the item of a GetItem, the responses of a
//! BatchGetItem) and the items they write, link items (`sk = L#…`) apart. moto runs on loopback,
//! so the seconds say what the store's calls cost in round trips and moto's own speed, not what
//! DynamoDB would take; the request and item counts are the figures that carry over.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use aws_sdk_dynamodb::config::interceptors::{
    AfterDeserializationInterceptorContextRef, BeforeTransmitInterceptorContextRef,
};
use aws_sdk_dynamodb::config::{ConfigBag, Intercept, RuntimeComponents};
use aws_sdk_dynamodb::error::BoxError;
use m365_aws::{DynamoStateStore, create_table};
use m365_core::engine::{Engine, SyncOptions};
use m365_core::{Directory, RunStatus, SystemClock};
use m365_graph::PacingConfig;
use m365_integration_tests::moto::Moto;
use m365_sandbox::{Sandbox, ThrottleConfig};
use serde_json::{Value, json};

use super::{
    CHUNK_SIZE, CONNECTION, PAGE_SIZE, Report, Shape, Target, compile, directory_for, fail_targets,
    file_source, link_everything, progress, run_failure, sandbox_config, write_inputs,
};

const TABLE: &str = "bench-state";
/// The sort-key prefix of link items (shared/aws/src/dynamodb.rs, the table's layout).
const LINK_SK_PREFIX: &str = "L#";

/// What the store asked of DynamoDB.
#[derive(Debug, Default, Clone)]
struct Calls {
    by_operation: BTreeMap<String, u64>,
    items_read: u64,
    items_written: u64,
    link_items_written: u64,
}

impl Calls {
    fn requests(&self) -> u64 {
        self.by_operation.values().sum()
    }
}

#[derive(Debug, Default, Clone)]
struct Counter(Arc<Mutex<Calls>>);

impl Counter {
    fn take(&self) -> Calls {
        std::mem::take(&mut *self.0.lock().expect("counter"))
    }
}

/// The `sk` strings of the items a write request's body writes (puts, updates and deletes;
/// not the keys of condition checks).
fn written_keys(body: &Value, out: &mut Vec<String>) {
    match body {
        Value::Object(map) => {
            for (name, value) in map {
                if name == "ConditionCheck" {
                    continue;
                }
                if name == "sk" {
                    if let Some(sk) = value["S"].as_str() {
                        out.push(sk.to_owned());
                    }
                } else {
                    written_keys(value, out);
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| written_keys(v, out)),
        _ => {}
    }
}

fn parse(bytes: Option<&[u8]>) -> Value {
    bytes
        .and_then(|b| serde_json::from_slice::<Value>(b).ok())
        .unwrap_or(Value::Null)
}

/// Items an answer carries: the `Count` of a Query or Scan, the item of a GetItem, the
/// responses of a BatchGetItem or TransactGetItems.
fn items_in_answer(answer: &Value) -> u64 {
    if let Some(count) = answer["Count"].as_u64() {
        return count;
    }
    if answer.get("Item").is_some() {
        return 1;
    }
    match &answer["Responses"] {
        Value::Object(tables) => tables
            .values()
            .map(|items| items.as_array().map_or(0, Vec::len) as u64)
            .sum(),
        Value::Array(items) => items.iter().filter(|i| i.get("Item").is_some()).count() as u64,
        _ => 0,
    }
}

impl Intercept for Counter {
    fn name(&self) -> &'static str {
        "BenchCallCounter"
    }

    /// The request, as it leaves: its operation and the items it writes.
    fn read_before_transmit(
        &self,
        context: &BeforeTransmitInterceptorContextRef<'_>,
        _components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let request = context.request();
        let operation = request
            .headers()
            .get("x-amz-target")
            .and_then(|t| t.rsplit('.').next())
            .unwrap_or("?")
            .to_owned();
        let mut calls = self.0.lock().expect("counter");
        if matches!(
            operation.as_str(),
            "PutItem" | "UpdateItem" | "DeleteItem" | "BatchWriteItem" | "TransactWriteItems"
        ) {
            let mut keys = Vec::new();
            written_keys(&parse(request.body().bytes()), &mut keys);
            calls.items_written += keys.len() as u64;
            calls.link_items_written += keys
                .iter()
                .filter(|k| k.starts_with(LINK_SK_PREFIX))
                .count() as u64;
        }
        *calls.by_operation.entry(operation).or_default() += 1;
        Ok(())
    }

    /// The answer, once read: the items it carries.
    fn read_after_deserialization(
        &self,
        context: &AfterDeserializationInterceptorContextRef<'_>,
        _components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let items = items_in_answer(&parse(context.response().body().bytes()));
        self.0.lock().expect("counter").items_read += items;
        Ok(())
    }
}

pub(super) async fn dynamo_noop(quick: bool) -> Report {
    let shape = Shape {
        users: if quick { 2_000 } else { 10_000 },
        groups: 50,
        memberships: 2,
    };
    eprintln!(
        "g: no-op run over {} linked users with the state in DynamoDB (moto on loopback)",
        shape.users
    );
    let moto = Moto::start().await;
    let counter = Counter::default();
    let config = aws_sdk_dynamodb::config::Builder::from(&moto.sdk_config().await)
        .interceptor(counter.clone())
        .build();
    let client = aws_sdk_dynamodb::Client::from_conf(config);
    create_table(&client, TABLE).await.expect("table");
    let state = DynamoStateStore::new(client, TABLE);

    let sandbox = Sandbox::new(sandbox_config(0, ThrottleConfig::default()))
        .start()
        .await
        .expect("sandbox starts");
    let dir = tempfile::tempdir().expect("temp dir");
    let (source_path, config_path) = write_inputs(dir.path(), shape);
    let directory = directory_for(sandbox.base_url(), 8, PacingConfig::default());
    let rule = compile(&directory, &config_path).await;
    let source = file_source(&source_path);
    let t_link = Instant::now();
    let linked = link_everything(&rule, &source, &state, shape).await;
    let setup = counter.take();
    progress(format!(
        "linked {linked} users in moto in {:.1} s ({} requests); the no-op run",
        t_link.elapsed().as_secs_f64(),
        setup.requests()
    ));

    let before = directory.counters();
    let t0 = Instant::now();
    let outcome = Engine {
        connection: CONNECTION,
        rule: &rule,
        source: &source,
        directory: &directory,
        state: &state,
        clock: &SystemClock,
        page_size: PAGE_SIZE,
        chunk_size: CHUNK_SIZE,
    }
    .sync(SyncOptions {
        holder: m365_core::conformance::holder("bench"),
        ..SyncOptions::default()
    })
    .await
    .expect("sync runs");
    let wall = t0.elapsed().as_secs_f64();
    let calls = counter.take();
    let after = directory.counters();
    let graph_writes = after.writes - before.writes;
    let steps = outcome.plan.steps.len();
    report(
        shape,
        &calls,
        wall,
        graph_writes,
        steps,
        run_failure(&outcome),
        outcome.run.status,
    )
}

fn report(
    shape: Shape,
    calls: &Calls,
    wall: f64,
    graph_writes: u64,
    steps: usize,
    failure: Option<String>,
    status: RunStatus,
) -> Report {
    let json = json!({
        "scenario": "g_dynamodb_noop",
        "users": shape.users, "groups": shape.groups,
        "wall_s": wall, "graph_writes": graph_writes, "plan_steps": steps,
        "run_status": format!("{status:?}"),
        "dynamodb": {
            "requests": calls.requests(), "by_operation": calls.by_operation,
            "items_read": calls.items_read, "items_written": calls.items_written,
            "link_items_written": calls.link_items_written,
        },
    });
    let operations = calls
        .by_operation
        .iter()
        .map(|(op, n)| format!("{op} {n}"))
        .collect::<Vec<_>>()
        .join(", ");
    let lines = vec![
        format!(
            "{wall:.2} s on moto; {} DynamoDB requests ({operations}); {} items read, {} written ({} of them links)",
            calls.requests(),
            calls.items_read,
            calls.items_written,
            calls.link_items_written
        ),
        format!("plan: {steps} steps, {graph_writes} Graph writes, run {status:?}"),
    ];
    let mut targets = vec![
        Target::new(
            "Graph writes",
            graph_writes.to_string(),
            "0",
            graph_writes == 0 && steps == 0,
            || {
                format!(
                    "{graph_writes} Graph writes and {steps} plan steps for a tenant that needs none"
                )
            },
        ),
        Target::new(
            "link items written when nothing changed",
            calls.link_items_written.to_string(),
            "0",
            calls.link_items_written == 0,
            || {
                format!(
                    "{} link items written of {} items written for {} users that did not change",
                    calls.link_items_written, calls.items_written, shape.users
                )
            },
        ),
    ];
    fail_targets(&mut targets, failure);
    Report {
        title: format!(
            "g) no-op run over {} linked users, state in DynamoDB (moto)",
            shape.users
        ),
        json,
        lines,
        targets,
    }
}
