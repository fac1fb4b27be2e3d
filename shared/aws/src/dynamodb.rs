//! [`DynamoStateStore`]: the `StateStore` port on one DynamoDB table (single-table design).
//!
//! # Table
//!
//! Key: partition key `pk` (string), sort key `sk` (string); on-demand billing; TTL on the `ttl`
//! attribute ([`create_table`] makes such a table). Every item of a connection shares
//! `pk = "C#<connection>"`, so a connection is one item collection and clearing it is one Query.
//! The connection configs of [`ConfigStore`](crate::ConfigStore) live in the same table under
//! partitions of their own (the last two rows; layout and writes in [`crate::config_store`]).
//!
//! | Item            | `sk`                                   | Attributes                                                                                                                                                    |
//! |-----------------|----------------------------------------|---------------------------------------------------------------------------------------------------------------------------------------------------------------|
//! | link            | `L#<kind>#<source_id>`                 | `kind`, `source_id`, `object_id`, `origin`, `hash`, `enabled` (BOOL), `seen_generation` (N), `updated_at` (N), `manager` (absent = none), `deleted_at` (N; absent = live), `applied`, `licenses`, `members` (JSON strings) |
//! | checkpoint      | `CP`                                   | `body` (the checkpoint as JSON), `updated_at` (N)                                                                                                              |
//! | object error    | `E#<kind>#<source_id>`                 | `body` (JSON), `next_retry_at` (N)                                                                                                                             |
//! | run             | `R#<run id>`                           | `body` (JSON), `started_at` (N): the run by id, for upserts                                                                                                   |
//! | run (by start)  | `RS#<started_at, 20 digits>#<run id>`  | `body` (JSON): the same run in start order, for `list_runs`                                                                                                   |
//! | webhook event   | `EV#<event_id>`                        | `state` (`in_progress` or `done`; absent = `done`), `expires_at` (N, ms), `ttl` (N, epoch **seconds**, rounded up: DynamoDB's TTL)                            |
//! | link by object  | `O#<kind>#<object_id>`                 | `source_id`: the link holding the tenant object (`find_link_by_object`; verified against the link on read)                                                     |
//! | lease           | `LEASE`                                | `owner`, `host`, `pid` (N) (NULL in Lambda), `token` (N), `acquired_at` (N, ms), `expires_at` (N, ms)                                                          |
//! | config version  | `V#<version, 10 digits>`, under `pk = "CFG#<connection>"` | `text` (the TOML), `sha256` (hex), `uploaded_at` (N, ms), `uploaded_by`, `version` (N)                                                     |
//! | config index    | `<connection>`, under `pk = "CFG"`     | `version` (N, the newest), `sha256`, `uploaded_at` (N, ms), `uploaded_by`                                                                                     |
//!
//! `<kind>` is `user` or `group`. Sort keys compare by UTF-8 bytes, which is the order
//! `list_links` promises. `started_at` is written as `started_at XOR 2^63` in 20 decimal digits so
//! that negative times sort too.
//!
//! # Consistency
//!
//! - **Lease**: one `UpdateItem` with `ADD token :one` under the condition
//!   `attribute_not_exists(pk) OR expires_at <= :now` — the token only ever grows. Release (and
//!   breaking) sets `expires_at` to `i64::MIN` (conditioned on the token) and keeps the item, so the counter
//!   survives releases and [`clear_connection`](m365_core::StateStore::clear_connection), which
//!   never deletes the `LEASE` item.
//! - **Fencing**: every write of a run (links, link-by-object items, errors, runs, checkpoint,
//!   clear) is a `TransactWriteItems` whose first action is a `ConditionCheck` on the lease
//!   (`token = :presented`), with up to 99 writes and at most about 3.5 MB beside it (DynamoDB's
//!   limits are 100 actions and 4 MB:
//!   <https://docs.aws.amazon.com/amazondynamodb/latest/APIReference/API_TransactWriteItems.html>).
//!   A cancelled transaction reads the lease back to report [`StateError::Fenced`]. Each
//!   transaction is atomic; a call spanning several is idempotent, not atomic.
//! - **Events**: a claim is a conditional `Put` of `state = in_progress`
//!   (`attribute_not_exists(sk) OR expires_at <= :now`); a failed condition leaves the record
//!   alone and returns it (`ReturnValuesOnConditionCheckFailure = ALL_OLD`), whose `state` says
//!   in progress or done. Completing is an unconditional `Put` of `state = done`. TTL deletes
//!   lazily, so expiry is always checked in the condition, never left to TTL.
//! - **Runs**: `put_run` reads the run by id and writes both items (deleting the old by-start item
//!   when `started_at` moved) in one transaction.
//! - Reads are strongly consistent.
//! - `list_errors` reads every error of the connection and sorts them (errors are few: one per
//!   failing object).
//!
//! # Limits
//!
//! A sort key holds at most 1,024 bytes, so source, run and event ids must stay under about
//! 1,000 bytes; an item holds at most 400 KB, which bounds a group's managed member list (about
//! 10,000 member ids). A link or error record beyond either limit is refused before anything is
//! written with [`StateError::ObjectTooLarge`], which the engine records as that object's
//! failure; reads never ask for keys that cannot exist.
//!
//! Errors from DynamoDB become [`StateError::Unavailable`] with the operation, the table and
//! DynamoDB's error code; request signatures and credentials never appear in them.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, ConditionCheck, Delete, KeySchemaElement,
    KeyType, KeysAndAttributes, Put, ReturnValue, ScalarAttributeType, Select,
    TimeToLiveSpecification, TransactWriteItem,
};
use m365_core::{
    Checkpoint, HistoryEntry, Lease, LeaseGrant, LeaseHolder, Link, LinkOrigin, ObjectError,
    ObjectKind, RunRecord, StateError, StateResult, StateStore, UnixMillis,
};
use tracing::instrument;

use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::types::ReturnValuesOnConditionCheckFailure;
use m365_core::state::EventClaim;

use crate::batch::{BATCH_ATTEMPTS, backoff, error_code, n, s};

type Item = HashMap<String, AttributeValue>;

/// Keys per `BatchGetItem` (DynamoDB's maximum).
const GET_BATCH: usize = 100;
/// DynamoDB's largest sort key, in UTF-8 bytes
/// (<https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/ServiceQuotas.html>).
const MAX_SORT_KEY_BYTES: usize = 1_024;
/// DynamoDB's largest item (400 KB, names and values counted), less a margin for the estimate.
const MAX_ITEM_BYTES: usize = 400 * 1_024 - 4_096;

/// Writes per fenced transaction beside the lease check (DynamoDB allows 100 actions).
const TRANSACT_WRITES: usize = 99;
/// Estimated bytes per fenced transaction (DynamoDB allows 4 MB).
const TRANSACT_BYTES: usize = 3_500_000;

const LEASE_SK: &str = "LEASE";
const CHECKPOINT_SK: &str = "CP";

/// The `StateStore` on a DynamoDB table laid out as the [module docs](self) describe.
#[derive(Debug, Clone)]
pub struct DynamoStateStore {
    client: Client,
    table: String,
}

/// Creates the table (`pk` + `sk` strings, on-demand, TTL on `ttl`) if it does not exist and
/// waits until it is active. Deployments create it from the SAM template; this is for tests and
/// local setups.
pub async fn create_table(client: &Client, table: &str) -> StateResult<()> {
    let attr = |name: &str| {
        AttributeDefinition::builder()
            .attribute_name(name)
            .attribute_type(ScalarAttributeType::S)
            .build()
            .map_err(|e| build_error("CreateTable", &e))
    };
    let key = |name: &str, key_type| {
        KeySchemaElement::builder()
            .attribute_name(name)
            .key_type(key_type)
            .build()
            .map_err(|e| build_error("CreateTable", &e))
    };
    let created = client
        .create_table()
        .table_name(table)
        .attribute_definitions(attr("pk")?)
        .attribute_definitions(attr("sk")?)
        .key_schema(key("pk", KeyType::Hash)?)
        .key_schema(key("sk", KeyType::Range)?)
        .billing_mode(BillingMode::PayPerRequest)
        .send()
        .await;
    match created {
        Ok(_) => {}
        Err(e) if error_code(&e) == Some("ResourceInUseException") => {
            tracing::debug!(table, "table exists");
        }
        Err(e) => return Err(unavailable("CreateTable", table, &e)),
    }
    aws_sdk_dynamodb::client::Waiters::wait_until_table_exists(client)
        .table_name(table)
        .wait(Duration::from_secs(120))
        .await
        .map_err(|e| {
            StateError::Unavailable(format!(
                "DynamoDB table {table} did not become active: {}",
                DisplayErrorContext(&e)
            ))
        })?;
    let ttl = TimeToLiveSpecification::builder()
        .attribute_name("ttl")
        .enabled(true)
        .build()
        .map_err(|e| build_error("UpdateTimeToLive", &e))?;
    match client
        .update_time_to_live()
        .table_name(table)
        .time_to_live_specification(ttl)
        .send()
        .await
    {
        Ok(_) => Ok(()),
        // Already enabled.
        Err(e) if error_code(&e) == Some("ValidationException") => Ok(()),
        Err(e) => Err(unavailable("UpdateTimeToLive", table, &e)),
    }
}

// --- errors and attribute helpers -------------------------------------------------------------

fn unavailable<E, R>(operation: &str, table: &str, err: &SdkError<E, R>) -> StateError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    match err.as_service_error() {
        Some(service) => StateError::Unavailable(format!(
            "DynamoDB {operation} on table {table} failed: {}: {}",
            service.code().unwrap_or("unknown error"),
            service.message().unwrap_or("no message")
        )),
        None => StateError::Unavailable(format!(
            "DynamoDB {operation} on table {table} failed: {}",
            DisplayErrorContext(err)
        )),
    }
}

fn build_error(operation: &str, err: &aws_sdk_dynamodb::error::BuildError) -> StateError {
    StateError::Unavailable(format!("DynamoDB {operation}: invalid request: {err}"))
}

/// A failed condition (or, for a transaction, a cancelled one: the caller reads back why).
fn is_condition_failed<E: ProvideErrorMetadata, R>(err: &SdkError<E, R>) -> bool {
    matches!(
        error_code(err),
        Some("ConditionalCheckFailedException" | "TransactionCanceledException")
    )
}

fn pk(connection: &str) -> String {
    format!("C#{connection}")
}

fn key(connection: &str, sk: impl Into<String>) -> Item {
    HashMap::from([
        ("pk".to_owned(), s(pk(connection))),
        ("sk".to_owned(), s(sk)),
    ])
}

fn link_sk(kind: ObjectKind, source_id: &str) -> String {
    format!("L#{kind}#{source_id}")
}

fn error_sk(kind: ObjectKind, source_id: &str) -> String {
    format!("E#{kind}#{source_id}")
}

fn run_sk(id: &str) -> String {
    format!("R#{id}")
}

fn run_start_sk(started_at: UnixMillis, id: &str) -> String {
    format!("RS#{:020}#{id}", started_at.cast_unsigned() ^ (1 << 63))
}

/// The prefix of an object's history items; each item adds its time (ordered), run and a
/// sequence number of this process, so entries of one millisecond never overwrite each other.
fn history_prefix(kind: ObjectKind, source_id: &str) -> String {
    format!("H#{kind}#{source_id}#")
}

fn history_sk(entry: &HistoryEntry) -> String {
    static SEQUENCE: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let seq = SEQUENCE.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!(
        "{}{:020}#{}#{seq}",
        history_prefix(entry.kind, &entry.source_id),
        entry.at.cast_unsigned() ^ (1 << 63),
        entry.run_id
    )
}

/// DynamoDB's TTL is in seconds; rounded up so that it never deletes a live record.
fn ttl_seconds(expires_at: UnixMillis) -> i64 {
    expires_at.div_euclid(1_000) + i64::from(expires_at.rem_euclid(1_000) != 0)
}

fn object_sk(kind: ObjectKind, object_id: &str) -> String {
    format!("O#{kind}#{object_id}")
}

fn event_sk(event_id: &str) -> String {
    format!("EV#{event_id}")
}

/// `state` of an event id claimed by an attempt that has not completed it.
const EVENT_IN_PROGRESS: &str = "in_progress";
/// `state` of an applied event id (also what a record without `state` means).
const EVENT_DONE: &str = "done";

/// The item of an event id in `state` until `expires_at`.
fn event_item(connection: &str, event_id: &str, expires_at: UnixMillis, state: &str) -> Item {
    let mut item = key(connection, event_sk(event_id));
    item.insert("expires_at".to_owned(), n(expires_at));
    item.insert("ttl".to_owned(), n(ttl_seconds(expires_at)));
    item.insert("state".to_owned(), s(state));
    item
}

fn corrupt(what: &str, detail: impl std::fmt::Display) -> StateError {
    StateError::Corrupt(format!("{what}: {detail}"))
}

fn get_s<'a>(item: &'a Item, name: &str, what: &str) -> StateResult<&'a str> {
    match item.get(name) {
        Some(AttributeValue::S(v)) => Ok(v),
        other => Err(corrupt(
            what,
            format!("attribute {name} is not a string: {other:?}"),
        )),
    }
}

fn get_n<T: std::str::FromStr>(item: &Item, name: &str, what: &str) -> StateResult<T>
where
    T::Err: std::fmt::Display,
{
    match item.get(name) {
        Some(AttributeValue::N(v)) => v
            .parse()
            .map_err(|e| corrupt(what, format!("attribute {name} = {v}: {e}"))),
        other => Err(corrupt(
            what,
            format!("attribute {name} is not a number: {other:?}"),
        )),
    }
}

fn to_json<T: serde::Serialize + ?Sized>(value: &T, what: &str) -> StateResult<String> {
    serde_json::to_string(value).map_err(|e| corrupt(&format!("cannot encode {what}"), e))
}

fn from_json<T: serde::de::DeserializeOwned>(text: &str, what: &str) -> StateResult<T> {
    serde_json::from_str(text).map_err(|e| corrupt(what, format!("not readable: {e}")))
}

fn kind_from(text: &str, what: &str) -> StateResult<ObjectKind> {
    match text {
        "user" => Ok(ObjectKind::User),
        "group" => Ok(ObjectKind::Group),
        other => Err(corrupt(what, format!("unknown object kind {other:?}"))),
    }
}

fn origin_str(origin: LinkOrigin) -> &'static str {
    match origin {
        LinkOrigin::Created => "created",
        LinkOrigin::Matched => "matched",
    }
}

fn origin_from(text: &str, what: &str) -> StateResult<LinkOrigin> {
    match text {
        "created" => Ok(LinkOrigin::Created),
        "matched" => Ok(LinkOrigin::Matched),
        other => Err(corrupt(what, format!("unknown link origin {other:?}"))),
    }
}

/// Whether a sort key fits DynamoDB's limit; a longer one cannot be stored, so it is never
/// asked for either (DynamoDB would refuse the whole request).
fn fits(sk: &str) -> bool {
    sk.len() <= MAX_SORT_KEY_BYTES
}

/// Refuses, as one object's failure, a link or error record DynamoDB cannot hold.
fn check_storable(
    kind: ObjectKind,
    source_id: &str,
    sk: &str,
    item: Option<&Item>,
) -> StateResult<()> {
    if !fits(sk) {
        return Err(StateError::ObjectTooLarge {
            kind,
            source_id: source_id.chars().take(80).collect::<String>() + "…",
            reason: format!(
                "its source id is {} bytes, longer than DynamoDB's key allows (about 1,000); \
                 map a shorter immutable id for it in the source",
                source_id.len()
            ),
        });
    }
    if let Some(item) = item.filter(|item| item_size(item) > MAX_ITEM_BYTES) {
        return Err(StateError::ObjectTooLarge {
            kind,
            source_id: source_id.to_owned(),
            reason: format!(
                "its record is about {} KB, more than a DynamoDB item holds (400 KB): a group \
                 with this many managed members (about 10,000 at most) cannot be recorded; split \
                 the group at the source",
                item_size(item) / 1_024
            ),
        });
    }
    Ok(())
}

fn link_item(connection: &str, link: &Link) -> StateResult<Item> {
    let mut item = key(connection, link_sk(link.kind, &link.source_id));
    item.extend([
        ("kind".to_owned(), s(link.kind.as_str())),
        ("source_id".to_owned(), s(&link.source_id)),
        ("object_id".to_owned(), s(&link.object_id)),
        ("origin".to_owned(), s(origin_str(link.origin))),
        ("hash".to_owned(), s(&link.hash)),
        ("applied".to_owned(), s(to_json(&link.applied, "applied")?)),
        ("enabled".to_owned(), AttributeValue::Bool(link.enabled)),
        (
            "licenses".to_owned(),
            s(to_json(&link.licenses, "licenses")?),
        ),
        ("members".to_owned(), s(to_json(&link.members, "members")?)),
        ("seen_generation".to_owned(), n(link.seen_generation)),
        ("updated_at".to_owned(), n(link.updated_at)),
    ]);
    if let Some(manager) = &link.manager {
        item.insert("manager".to_owned(), s(manager));
    }
    if let Some(deleted_at) = link.deleted_at {
        item.insert("deleted_at".to_owned(), n(deleted_at));
    }
    Ok(item)
}

fn link_from(item: &Item) -> StateResult<Link> {
    let sk = item
        .get("sk")
        .and_then(|v| v.as_s().ok())
        .map_or("?", String::as_str);
    let what = format!("link item {sk:?}");
    let what = what.as_str();
    let manager = match item.get("manager") {
        None | Some(AttributeValue::Null(_)) => None,
        Some(AttributeValue::S(v)) => Some(v.clone()),
        Some(other) => return Err(corrupt(what, format!("manager is {other:?}"))),
    };
    let enabled = match item.get("enabled") {
        Some(AttributeValue::Bool(b)) => *b,
        other => return Err(corrupt(what, format!("enabled is {other:?}"))),
    };
    Ok(Link {
        kind: kind_from(get_s(item, "kind", what)?, what)?,
        source_id: get_s(item, "source_id", what)?.to_owned(),
        object_id: get_s(item, "object_id", what)?.to_owned(),
        origin: origin_from(get_s(item, "origin", what)?, what)?,
        hash: get_s(item, "hash", what)?.to_owned(),
        applied: from_json(get_s(item, "applied", what)?, what)?,
        enabled,
        licenses: from_json(get_s(item, "licenses", what)?, what)?,
        manager,
        members: from_json(get_s(item, "members", what)?, what)?,
        seen_generation: get_n(item, "seen_generation", what)?,
        updated_at: get_n(item, "updated_at", what)?,
        deleted_at: match item.get("deleted_at") {
            None | Some(AttributeValue::Null(_)) => None,
            Some(_) => Some(get_n(item, "deleted_at", what)?),
        },
    })
}

fn body_from<T: serde::de::DeserializeOwned>(item: &Item, what: &str) -> StateResult<T> {
    from_json(get_s(item, "body", what)?, what)
}

/// Ids without repeats, first occurrence kept.
fn unique(ids: &[String]) -> Vec<&str> {
    let mut seen = HashSet::with_capacity(ids.len());
    ids.iter()
        .map(String::as_str)
        .filter(|id| seen.insert(*id))
        .collect()
}

/// An estimate of an item's stored size (names and values), for the transaction size limit.
fn item_size(item: &Item) -> usize {
    item.iter()
        .map(|(name, value)| {
            name.len()
                + match value {
                    AttributeValue::S(v) | AttributeValue::N(v) => v.len(),
                    _ => 8,
                }
        })
        .sum()
}

/// A write of a fenced transaction, with its estimated size.
type Action = (TransactWriteItem, usize);

fn put_action(table: &str, item: Item) -> StateResult<Action> {
    let size = item_size(&item);
    let put = Put::builder()
        .table_name(table)
        .set_item(Some(item))
        .build()
        .map_err(|e| build_error("TransactWriteItems", &e))?;
    Ok((TransactWriteItem::builder().put(put).build(), size))
}

fn delete_action(table: &str, key: Item) -> StateResult<Action> {
    let size = item_size(&key);
    let delete = Delete::builder()
        .table_name(table)
        .set_key(Some(key))
        .build()
        .map_err(|e| build_error("TransactWriteItems", &e))?;
    Ok((TransactWriteItem::builder().delete(delete).build(), size))
}

/// Actions that need not share a transaction with any other.
fn singles(actions: Vec<Action>) -> Vec<Vec<Action>> {
    actions.into_iter().map(|action| vec![action]).collect()
}

fn lease_from(connection: &str, item: &Item) -> StateResult<Lease> {
    let what = format!("lease of {connection:?}");
    let optional = |name: &str| match item.get(name) {
        Some(AttributeValue::S(v)) => Some(v.clone()),
        Some(AttributeValue::N(v)) => Some(v.clone()),
        _ => None,
    };
    Ok(Lease {
        connection: connection.to_owned(),
        holder: LeaseHolder {
            owner: get_s(item, "owner", &what)?.to_owned(),
            host: optional("host"),
            pid: optional("pid").and_then(|pid| pid.parse().ok()),
        },
        token: get_n(item, "token", &what)?,
        acquired_at: match item.get("acquired_at") {
            Some(_) => get_n(item, "acquired_at", &what)?,
            None => 0,
        },
        expires_at: get_n(item, "expires_at", &what)?,
    })
}

fn optional_s(value: Option<impl Into<String>>) -> AttributeValue {
    value.map_or(AttributeValue::Null(true), |v| s(v))
}

// --- the store --------------------------------------------------------------------------------

/// What a Query asks; [`DynamoStateStore::query`] pages through it.
struct QuerySpec<'a> {
    connection: &'a str,
    /// Key condition on `sk`, using `:a` / `:b` (`None`: every item of the connection).
    sk_condition: Option<&'a str>,
    values: Vec<(&'static str, AttributeValue)>,
    forward: bool,
    /// Stop after this many items.
    limit: Option<usize>,
    /// Only the key attributes.
    keys_only: bool,
}

impl DynamoStateStore {
    /// A store on `table` (which must exist; see [`create_table`]). The client is built once by
    /// the caller (`m365_aws::config`) and shared.
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self {
            client,
            table: table.into(),
        }
    }

    /// The table's name.
    pub fn table(&self) -> &str {
        &self.table
    }

    fn fail<E, R>(&self, operation: &str, err: &SdkError<E, R>) -> StateError
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
        R: std::fmt::Debug,
    {
        unavailable(operation, &self.table, err)
    }

    async fn query(&self, spec: QuerySpec<'_>) -> StateResult<Vec<Item>> {
        let mut out = Vec::new();
        let mut start: Option<Item> = None;
        loop {
            let mut request = self
                .client
                .query()
                .table_name(&self.table)
                .key_condition_expression(match spec.sk_condition {
                    Some(condition) => format!("pk = :pk AND {condition}"),
                    None => "pk = :pk".to_owned(),
                })
                .expression_attribute_values(":pk", s(pk(spec.connection)))
                .consistent_read(true)
                .scan_index_forward(spec.forward)
                .set_exclusive_start_key(start.take());
            for (name, value) in &spec.values {
                request = request.expression_attribute_values(*name, value.clone());
            }
            if let Some(limit) = spec.limit {
                let left = limit.saturating_sub(out.len());
                request = request.limit(i32::try_from(left).unwrap_or(i32::MAX));
            }
            if spec.keys_only {
                request = request.projection_expression("pk, sk");
            }
            let page = request.send().await.map_err(|e| self.fail("Query", &e))?;
            out.extend(page.items().iter().cloned());
            start = page.last_evaluated_key().cloned();
            let full = spec.limit.is_some_and(|limit| out.len() >= limit);
            if start.is_none() || full {
                return Ok(out);
            }
        }
    }

    /// Writes `units` in transactions fenced by `lease` (module docs, "Fencing"); the actions of
    /// a unit (a link and its index item) always share a transaction.
    async fn write_fenced(
        &self,
        connection: &str,
        lease: &Lease,
        what: &str,
        units: Vec<Vec<Action>>,
    ) -> StateResult<()> {
        if lease.connection != connection {
            return Err(self.fenced(connection, lease.token, false).await);
        }
        let mut chunk: Vec<TransactWriteItem> = Vec::new();
        let mut size = 0;
        for unit in units {
            let bytes: usize = unit.iter().map(|(_, bytes)| bytes).sum();
            if !chunk.is_empty()
                && (chunk.len() + unit.len() > TRANSACT_WRITES || size + bytes > TRANSACT_BYTES)
            {
                self.transact_fenced(connection, lease, what, std::mem::take(&mut chunk))
                    .await?;
                size = 0;
            }
            size += bytes;
            chunk.extend(unit.into_iter().map(|(action, _)| action));
        }
        if !chunk.is_empty() {
            self.transact_fenced(connection, lease, what, chunk).await?;
        }
        Ok(())
    }

    /// One transaction: the lease check, then `writes`.
    async fn transact_fenced(
        &self,
        connection: &str,
        lease: &Lease,
        what: &str,
        writes: Vec<TransactWriteItem>,
    ) -> StateResult<()> {
        let check = ConditionCheck::builder()
            .table_name(&self.table)
            .set_key(Some(key(connection, LEASE_SK)))
            .condition_expression("#t = :t")
            .expression_attribute_names("#t", "token")
            .expression_attribute_values(":t", n(lease.token))
            .build()
            .map_err(|e| build_error("TransactWriteItems", &e))?;
        let mut items = Vec::with_capacity(writes.len() + 1);
        items.push(TransactWriteItem::builder().condition_check(check).build());
        items.extend(writes);
        let result = self
            .client
            .transact_write_items()
            .set_transact_items(Some(items))
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(e) if is_condition_failed(&e) => {
                Err(self.fenced(connection, lease.token, true).await)
            }
            Err(e) => Err(self.fail(&format!("TransactWriteItems ({what})"), &e)),
        }
    }

    async fn batch_get(&self, keys: Vec<Item>) -> StateResult<Vec<Item>> {
        let mut out = Vec::with_capacity(keys.len());
        for chunk in keys.chunks(GET_BATCH) {
            let mut pending = chunk.to_vec();
            let mut attempt = 0;
            while !pending.is_empty() {
                if attempt >= BATCH_ATTEMPTS {
                    return Err(StateError::Unavailable(format!(
                        "DynamoDB BatchGetItem on table {}: {} keys still unprocessed after \
                         {BATCH_ATTEMPTS} attempts (throttled)",
                        self.table,
                        pending.len()
                    )));
                }
                if attempt > 0 {
                    tokio::time::sleep(backoff(attempt)).await;
                }
                attempt += 1;
                let request = KeysAndAttributes::builder()
                    .set_keys(Some(pending))
                    .consistent_read(true)
                    .build()
                    .map_err(|e| build_error("BatchGetItem", &e))?;
                let got = self
                    .client
                    .batch_get_item()
                    .request_items(&self.table, request)
                    .send()
                    .await
                    .map_err(|e| self.fail("BatchGetItem", &e))?;
                if let Some(items) = got.responses().and_then(|m| m.get(&self.table)) {
                    out.extend(items.iter().cloned());
                }
                pending = got
                    .unprocessed_keys()
                    .and_then(|m| m.get(&self.table))
                    .map(|k| k.keys().to_vec())
                    .unwrap_or_default();
            }
        }
        Ok(out)
    }

    async fn get_item(&self, key: Item) -> StateResult<Option<Item>> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(key))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| self.fail("GetItem", &e))?;
        Ok(out.item().cloned())
    }

    async fn current_token(&self, connection: &str) -> StateResult<u64> {
        match self.get_item(key(connection, LEASE_SK)).await? {
            Some(item) => get_n(&item, "token", &format!("lease of {connection:?}")),
            None => Ok(0),
        }
    }

    /// Expires the lease in place if it carries `token`: the item keeps the token, the
    /// connection's counter. `false` when it carries another token.
    async fn expire_lease(&self, connection: &str, token: u64, what: &str) -> StateResult<bool> {
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key(connection, LEASE_SK)))
            .update_expression("SET #e = :e")
            .condition_expression("#t = :t")
            .expression_attribute_names("#e", "expires_at")
            .expression_attribute_names("#t", "token")
            .expression_attribute_values(":t", n(token))
            .expression_attribute_values(":e", n(i64::MIN))
            .send()
            .await;
        match result {
            Ok(_) => Ok(true),
            Err(e) if is_condition_failed(&e) => Ok(false),
            Err(e) => Err(self.fail(&format!("UpdateItem ({what})"), &e)),
        }
    }

    /// The error of a refused fenced write, from the lease as it stands now.
    async fn fenced(&self, connection: &str, presented: u64, same_connection: bool) -> StateError {
        match self.current_token(connection).await {
            Ok(current) if same_connection && current == presented => {
                // The token still matches: the transaction was cancelled for another reason
                // (a conflicting concurrent write); worth retrying.
                StateError::Unavailable(format!(
                    "DynamoDB TransactWriteItems on table {}: cancelled by a conflicting write; \
                     retry",
                    self.table
                ))
            }
            Ok(current) => {
                tracing::warn!(connection, presented, current, "state write fenced");
                StateError::Fenced {
                    connection: connection.to_owned(),
                    presented,
                    current,
                }
            }
            Err(e) => e,
        }
    }
}

#[async_trait]
impl StateStore for DynamoStateStore {
    #[instrument(level = "debug", skip_all, fields(connection = %connection, kind = %kind, ids = source_ids.len()))]
    async fn get_links(
        &self,
        connection: &str,
        kind: ObjectKind,
        source_ids: &[String],
    ) -> StateResult<Vec<Link>> {
        let keys = unique(source_ids)
            .into_iter()
            .map(|id| link_sk(kind, id))
            .filter(|sk| fits(sk))
            .map(|sk| key(connection, sk))
            .collect();
        self.batch_get(keys).await?.iter().map(link_from).collect()
    }

    #[instrument(level = "debug", skip_all, fields(connection = %connection, kind = %kind, limit = limit))]
    async fn list_links(
        &self,
        connection: &str,
        kind: ObjectKind,
        after: Option<&str>,
        limit: usize,
    ) -> StateResult<Vec<Link>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        // BETWEEN is inclusive: ask for one more and drop `after` itself if it is stored.
        let low = link_sk(kind, after.unwrap_or(""));
        let high = format!("L#{kind}$"); // '$' follows '#': past every `L#<kind>#…`
        let items = self
            .query(QuerySpec {
                connection,
                sk_condition: Some("sk BETWEEN :a AND :b"),
                values: vec![(":a", s(&low)), (":b", s(high))],
                forward: true,
                limit: Some(limit.saturating_add(1)),
                keys_only: false,
            })
            .await?;
        items
            .iter()
            .filter(|item| item.get("sk").and_then(|v| v.as_s().ok()) != Some(&low))
            .take(limit)
            .map(link_from)
            .collect()
    }

    #[instrument(level = "debug", skip_all, fields(connection = %connection, kind = %kind, object_id = %object_id))]
    async fn find_link_by_object(
        &self,
        connection: &str,
        kind: ObjectKind,
        object_id: &str,
    ) -> StateResult<Option<Link>> {
        let Some(index) = self
            .get_item(key(connection, object_sk(kind, object_id)))
            .await?
        else {
            return Ok(None);
        };
        let source_id = get_s(&index, "source_id", "link-by-object item")?;
        // The index item may outlive a link that moved to another object: the link decides.
        Ok(self
            .get_item(key(connection, link_sk(kind, source_id)))
            .await?
            .map(|item| link_from(&item))
            .transpose()?
            .filter(|link| link.object_id == object_id))
    }

    #[instrument(level = "debug", skip_all, fields(connection = %connection, n = links.len()))]
    async fn put_links(&self, connection: &str, links: &[Link], lease: &Lease) -> StateResult<()> {
        // One transaction may not name a key twice: the last link of a key wins.
        let mut last: HashMap<(ObjectKind, &str), usize> = HashMap::with_capacity(links.len());
        for (i, link) in links.iter().enumerate() {
            last.insert((link.kind, link.source_id.as_str()), i);
        }
        let mut units = Vec::with_capacity(links.len());
        for (_, link) in links
            .iter()
            .enumerate()
            .filter(|(i, link)| last.get(&(link.kind, link.source_id.as_str())) == Some(i))
        {
            let item = link_item(connection, link)?;
            check_storable(
                link.kind,
                &link.source_id,
                &link_sk(link.kind, &link.source_id),
                Some(&item),
            )?;
            let mut index = key(connection, object_sk(link.kind, &link.object_id));
            index.insert("source_id".to_owned(), s(&link.source_id));
            units.push(vec![
                put_action(&self.table, item)?,
                put_action(&self.table, index)?,
            ]);
        }
        self.write_fenced(connection, lease, "links", units).await
    }

    #[instrument(level = "debug", skip_all, fields(connection = %connection, kind = %kind, ids = source_ids.len(), generation = generation))]
    async fn mark_seen(
        &self,
        connection: &str,
        kind: ObjectKind,
        source_ids: &[String],
        generation: u64,
        lease: &Lease,
    ) -> StateResult<()> {
        // Only existing links seen in an older generation: a condition failing inside a
        // transaction would cancel all of it, so the links are read first (a concurrent change
        // could only come from this run, which the fence makes the only writer).
        let keys = unique(source_ids)
            .into_iter()
            .map(|id| link_sk(kind, id))
            .filter(|sk| fits(sk))
            .map(|sk| key(connection, sk))
            .collect();
        let mut actions = Vec::new();
        for item in self.batch_get(keys).await? {
            let link = link_from(&item)?;
            if link.seen_generation >= generation {
                continue;
            }
            let update = aws_sdk_dynamodb::types::Update::builder()
                .table_name(&self.table)
                .set_key(Some(key(connection, link_sk(kind, &link.source_id))))
                .update_expression("SET #g = :g")
                .condition_expression("attribute_exists(pk)")
                .expression_attribute_names("#g", "seen_generation")
                .expression_attribute_values(":g", n(generation))
                .build()
                .map_err(|e| build_error("TransactWriteItems", &e))?;
            actions.push((TransactWriteItem::builder().update(update).build(), 64));
        }
        self.write_fenced(connection, lease, "mark seen", singles(actions))
            .await
    }

    #[instrument(level = "debug", skip_all, fields(connection = %connection, kind = %kind, ids = source_ids.len()))]
    async fn delete_links(
        &self,
        connection: &str,
        kind: ObjectKind,
        source_ids: &[String],
        lease: &Lease,
    ) -> StateResult<()> {
        let keys = unique(source_ids)
            .into_iter()
            .map(|id| link_sk(kind, id))
            .filter(|sk| fits(sk))
            .map(|sk| key(connection, sk))
            .collect();
        let links = self
            .batch_get(keys)
            .await?
            .iter()
            .map(link_from)
            .collect::<StateResult<Vec<_>>>()?;
        // Index items are removed only where they still name the deleted link: another source
        // id may hold the object now.
        let index_keys = links
            .iter()
            .map(|link| key(connection, object_sk(kind, &link.object_id)))
            .collect();
        let indexed: HashSet<(String, String)> = self
            .batch_get(index_keys)
            .await?
            .iter()
            .filter_map(|item| {
                let sk = item.get("sk").and_then(|v| v.as_s().ok())?;
                let source = item.get("source_id").and_then(|v| v.as_s().ok())?;
                Some((sk.clone(), source.clone()))
            })
            .collect();
        let mut actions = Vec::with_capacity(links.len() * 2);
        for link in &links {
            actions.push(delete_action(
                &self.table,
                key(connection, link_sk(kind, &link.source_id)),
            )?);
            let index_sk = object_sk(kind, &link.object_id);
            if indexed.contains(&(index_sk.clone(), link.source_id.clone())) {
                actions.push(delete_action(&self.table, key(connection, index_sk))?);
            }
        }
        self.write_fenced(connection, lease, "delete links", singles(actions))
            .await
    }

    #[instrument(level = "debug", skip_all, fields(connection = %connection, kind = %kind))]
    async fn count_links(&self, connection: &str, kind: ObjectKind) -> StateResult<u64> {
        let mut total: u64 = 0;
        let mut start: Option<Item> = None;
        loop {
            let page = self
                .client
                .query()
                .table_name(&self.table)
                .key_condition_expression("pk = :pk AND begins_with(sk, :p)")
                .expression_attribute_values(":pk", s(pk(connection)))
                .expression_attribute_values(":p", s(format!("L#{kind}#")))
                // Links of deleted objects are kept for a restore, and are not counted.
                .filter_expression("attribute_not_exists(deleted_at)")
                .select(Select::Count)
                .consistent_read(true)
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(|e| self.fail("Query (count)", &e))?;
            total += u64::try_from(page.count()).unwrap_or(0);
            start = page.last_evaluated_key().cloned();
            if start.is_none() {
                return Ok(total);
            }
        }
    }

    #[instrument(level = "debug", skip_all, fields(connection = %connection))]
    async fn get_checkpoint(&self, connection: &str) -> StateResult<Option<Checkpoint>> {
        self.get_item(key(connection, CHECKPOINT_SK))
            .await?
            .map(|item| body_from(&item, &format!("checkpoint of {connection:?}")))
            .transpose()
    }

    #[instrument(level = "debug", skip_all, fields(connection = %connection, token = lease.token))]
    async fn put_checkpoint(
        &self,
        connection: &str,
        checkpoint: &Checkpoint,
        lease: &Lease,
    ) -> StateResult<()> {
        let mut item = key(connection, CHECKPOINT_SK);
        item.insert("body".to_owned(), s(to_json(checkpoint, "checkpoint")?));
        item.insert("updated_at".to_owned(), n(checkpoint.updated_at));
        let put = put_action(&self.table, item)?;
        self.write_fenced(connection, lease, "checkpoint", vec![vec![put]])
            .await
    }

    #[instrument(level = "debug", skip_all, fields(connection = %connection, kind = %error.kind))]
    async fn put_error(
        &self,
        connection: &str,
        error: &ObjectError,
        lease: &Lease,
    ) -> StateResult<()> {
        let sk = error_sk(error.kind, &error.source_id);
        check_storable(error.kind, &error.source_id, &sk, None)?;
        let mut item = key(connection, sk);
        item.insert("body".to_owned(), s(to_json(error, "object error")?));
        item.insert("next_retry_at".to_owned(), n(error.next_retry_at));
        let put = put_action(&self.table, item)?;
        self.write_fenced(connection, lease, "error", vec![vec![put]])
            .await
    }

    #[instrument(level = "debug", skip_all, fields(connection = %connection, kind = %kind, ids = source_ids.len()))]
    async fn get_errors(
        &self,
        connection: &str,
        kind: ObjectKind,
        source_ids: &[String],
    ) -> StateResult<Vec<ObjectError>> {
        let keys = unique(source_ids)
            .into_iter()
            .map(|id| error_sk(kind, id))
            .filter(|sk| fits(sk))
            .map(|sk| key(connection, sk))
            .collect();
        self.batch_get(keys)
            .await?
            .iter()
            .map(|item| body_from(item, "object error"))
            .collect()
    }

    #[instrument(level = "debug", skip_all, fields(connection = %connection, kind = %kind, ids = source_ids.len()))]
    async fn clear_errors(
        &self,
        connection: &str,
        kind: ObjectKind,
        source_ids: &[String],
        lease: &Lease,
    ) -> StateResult<()> {
        let actions = unique(source_ids)
            .into_iter()
            .map(|id| error_sk(kind, id))
            .filter(|sk| fits(sk))
            .map(|sk| delete_action(&self.table, key(connection, sk)))
            .collect::<StateResult<Vec<_>>>()?;
        self.write_fenced(connection, lease, "clear errors", singles(actions))
            .await
    }

    #[instrument(level = "debug", skip_all, fields(connection = %connection, limit = limit))]
    async fn list_errors(&self, connection: &str, limit: usize) -> StateResult<Vec<ObjectError>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let items = self
            .query(QuerySpec {
                connection,
                sk_condition: Some("begins_with(sk, :a)"),
                values: vec![(":a", s("E#"))],
                forward: true,
                limit: None,
                keys_only: false,
            })
            .await?;
        let mut errors = items
            .iter()
            .map(|item| body_from::<ObjectError>(item, "object error"))
            .collect::<StateResult<Vec<_>>>()?;
        errors.sort_by(|a, b| {
            (a.next_retry_at, a.kind.as_str(), &a.source_id).cmp(&(
                b.next_retry_at,
                b.kind.as_str(),
                &b.source_id,
            ))
        });
        errors.truncate(limit);
        Ok(errors)
    }

    #[instrument(level = "debug", skip_all, fields(connection = %connection, run = %run.id))]
    async fn put_run(&self, connection: &str, run: &RunRecord, lease: &Lease) -> StateResult<()> {
        let what = format!("run {:?} of {connection:?}", run.id);
        let previous = match self.get_item(key(connection, run_sk(&run.id))).await? {
            Some(item) => Some(get_n::<i64>(&item, "started_at", &what)?),
            None => None,
        };
        let body = s(to_json(run, "run record")?);
        let mut by_id = key(connection, run_sk(&run.id));
        by_id.insert("body".to_owned(), body.clone());
        by_id.insert("started_at".to_owned(), n(run.started_at));
        let mut by_start = key(connection, run_start_sk(run.started_at, &run.id));
        by_start.insert("body".to_owned(), body);
        let mut actions = vec![
            put_action(&self.table, by_id)?,
            put_action(&self.table, by_start)?,
        ];
        if let Some(old) = previous.filter(|old| *old != run.started_at) {
            actions.push(delete_action(
                &self.table,
                key(connection, run_start_sk(old, &run.id)),
            )?);
        }
        // The items of one run stay in one transaction.
        self.transact_fenced(
            connection,
            lease,
            "run",
            actions.into_iter().map(|(action, _)| action).collect(),
        )
        .await
    }

    #[instrument(level = "debug", skip_all, fields(connection = %connection, limit = limit))]
    async fn list_runs(&self, connection: &str, limit: usize) -> StateResult<Vec<RunRecord>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let items = self
            .query(QuerySpec {
                connection,
                sk_condition: Some("begins_with(sk, :a)"),
                values: vec![(":a", s("RS#"))],
                forward: false,
                limit: Some(limit),
                keys_only: false,
            })
            .await?;
        items
            .iter()
            .take(limit)
            .map(|item| body_from(item, &format!("run record of {connection:?}")))
            .collect()
    }

    #[instrument(level = "debug", skip_all, fields(connection = %connection, entries = entries.len()))]
    async fn append_history(&self, connection: &str, entries: &[HistoryEntry]) -> StateResult<()> {
        let mut requests = Vec::with_capacity(entries.len());
        for entry in entries {
            let sk = history_sk(entry);
            // An id too long for a sort key has no history (its link cannot be stored either).
            if !fits(&sk) {
                continue;
            }
            let mut item = key(connection, sk);
            item.insert("body".to_owned(), s(to_json(entry, "history entry")?));
            item.insert("expires_at".to_owned(), n(entry.expires_at));
            // DynamoDB deletes expired items within days; readers skip them meanwhile.
            item.insert("ttl".to_owned(), n(ttl_seconds(entry.expires_at)));
            let put = aws_sdk_dynamodb::types::PutRequest::builder()
                .set_item(Some(item))
                .build()
                .map_err(|e| build_error("BatchWriteItem", &e))?;
            requests.push(
                aws_sdk_dynamodb::types::WriteRequest::builder()
                    .put_request(put)
                    .build(),
            );
        }
        crate::batch::write_all(&self.client, &self.table, requests)
            .await
            .map_err(|failure| match failure {
                crate::batch::BatchWriteFailure::Sdk(e) => self.fail("BatchWriteItem", &e),
                crate::batch::BatchWriteFailure::Unprocessed(left) => StateError::Unavailable(
                    format!(
                        "DynamoDB BatchWriteItem on table {}: {left} history entries still unprocessed after {BATCH_ATTEMPTS} attempts (throttled)",
                        self.table
                    ),
                ),
            })
    }

    #[instrument(level = "debug", skip_all, fields(connection = %connection, kind = %kind, limit = limit))]
    async fn object_history(
        &self,
        connection: &str,
        kind: ObjectKind,
        source_id: &str,
        now: UnixMillis,
        limit: usize,
    ) -> StateResult<Vec<HistoryEntry>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let items = self
            .query(QuerySpec {
                connection,
                sk_condition: Some("begins_with(sk, :a)"),
                values: vec![(":a", s(history_prefix(kind, source_id)))],
                forward: false,
                limit: None,
                keys_only: false,
            })
            .await?;
        let mut out = Vec::new();
        for item in &items {
            let entry: HistoryEntry = body_from(item, "history entry")?;
            // The prefix also finds ids that extend this one past a '#'.
            if entry.source_id == source_id && entry.expires_at > now {
                out.push(entry);
            }
            if out.len() >= limit {
                break;
            }
        }
        Ok(out)
    }

    #[instrument(level = "debug", skip_all, fields(connection = %connection, owner = %holder.owner, now = now, ttl_ms = ttl_ms))]
    async fn acquire_lease(
        &self,
        connection: &str,
        holder: &LeaseHolder,
        now: UnixMillis,
        ttl_ms: i64,
    ) -> StateResult<LeaseGrant> {
        let expires_at = now.saturating_add(ttl_ms);
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key(connection, LEASE_SK)))
            .update_expression("SET #o = :o, #h = :h, #p = :p, #a = :now, #e = :e ADD #t :one")
            .condition_expression("attribute_not_exists(pk) OR #e <= :now")
            .expression_attribute_names("#o", "owner")
            .expression_attribute_names("#h", "host")
            .expression_attribute_names("#p", "pid")
            .expression_attribute_names("#a", "acquired_at")
            .expression_attribute_names("#e", "expires_at")
            .expression_attribute_names("#t", "token")
            .expression_attribute_values(":o", s(&holder.owner))
            .expression_attribute_values(":h", optional_s(holder.host.as_deref()))
            .expression_attribute_values(":p", holder.pid.map_or(AttributeValue::Null(true), n))
            .expression_attribute_values(":e", n(expires_at))
            .expression_attribute_values(":now", n(now))
            .expression_attribute_values(":one", n(1))
            .return_values(ReturnValue::AllNew)
            .send()
            .await;
        match result {
            Ok(out) => {
                let attributes = out.attributes().cloned().unwrap_or_default();
                Ok(LeaseGrant::Acquired(lease_from(connection, &attributes)?))
            }
            Err(e) if is_condition_failed(&e) => {
                // Held: read who holds it. Released in between, it reads as expired: busy with
                // that (expired) lease, and the caller's next attempt acquires it.
                let item = self.get_item(key(connection, LEASE_SK)).await?;
                let held = item.map(|item| lease_from(connection, &item)).transpose()?;
                tracing::debug!(connection, "lease held");
                held.map(LeaseGrant::Busy).ok_or_else(|| {
                    StateError::Unavailable(format!(
                        "DynamoDB table {}: the lease of {connection:?} vanished; retry",
                        self.table
                    ))
                })
            }
            Err(e) => Err(self.fail("UpdateItem (acquire lease)", &e)),
        }
    }

    #[instrument(level = "debug", skip_all, fields(connection = %connection, now = now))]
    async fn get_lease(&self, connection: &str, now: UnixMillis) -> StateResult<Option<Lease>> {
        let item = self.get_item(key(connection, LEASE_SK)).await?;
        Ok(item
            .map(|item| lease_from(connection, &item))
            .transpose()?
            .filter(|lease| lease.expires_at > now))
    }

    #[instrument(level = "debug", skip_all, fields(connection = %connection, token = token))]
    async fn break_lease(&self, connection: &str, token: u64) -> StateResult<bool> {
        self.expire_lease(connection, token, "break lease").await
    }

    #[instrument(level = "debug", skip_all, fields(connection = %lease.connection, token = lease.token, now = now, ttl_ms = ttl_ms))]
    async fn renew_lease(
        &self,
        lease: &Lease,
        now: UnixMillis,
        ttl_ms: i64,
    ) -> StateResult<Option<Lease>> {
        let expires_at = now.saturating_add(ttl_ms);
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key(&lease.connection, LEASE_SK)))
            .update_expression("SET #e = :e")
            .condition_expression("#t = :t AND #e > :now")
            .expression_attribute_names("#e", "expires_at")
            .expression_attribute_names("#t", "token")
            .expression_attribute_values(":t", n(lease.token))
            .expression_attribute_values(":e", n(expires_at))
            .expression_attribute_values(":now", n(now))
            .send()
            .await;
        match result {
            Ok(_) => Ok(Some(Lease {
                expires_at,
                ..lease.clone()
            })),
            Err(e) if is_condition_failed(&e) => Ok(None),
            Err(e) => Err(self.fail("UpdateItem (renew lease)", &e)),
        }
    }

    #[instrument(level = "debug", skip_all, fields(connection = %lease.connection, token = lease.token))]
    async fn release_lease(&self, lease: &Lease) -> StateResult<()> {
        self.expire_lease(&lease.connection, lease.token, "release lease")
            .await
            .map(|_| ())
    }

    #[instrument(level = "debug", skip_all, fields(connection = %connection, event_id = %event_id, now = now))]
    async fn remember_event(
        &self,
        connection: &str,
        event_id: &str,
        now: UnixMillis,
        expires_at: UnixMillis,
    ) -> StateResult<EventClaim> {
        let item = event_item(connection, event_id, expires_at, EVENT_IN_PROGRESS);
        let result = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(sk) OR #e <= :now")
            .expression_attribute_names("#e", "expires_at")
            .expression_attribute_values(":now", n(now))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        match result {
            Ok(_) => Ok(EventClaim::New),
            Err(e) if is_condition_failed(&e) => {
                // The record that made the condition fail, as it was (left unchanged).
                let held = match e.as_service_error() {
                    Some(PutItemError::ConditionalCheckFailedException(failed)) => failed
                        .item()
                        .and_then(|item| item.get("state"))
                        .and_then(|state| state.as_s().ok())
                        .map(String::as_str),
                    _ => None,
                };
                match held {
                    Some(EVENT_IN_PROGRESS) => Ok(EventClaim::InProgress),
                    // No `state`: written before ids were claimed, once processed.
                    Some(EVENT_DONE) | None => Ok(EventClaim::Done),
                    Some(other) => Err(StateError::Corrupt(format!(
                        "table {}: event {event_id} of connection {connection} has state \
                         {other:?}, expected {EVENT_IN_PROGRESS:?} or {EVENT_DONE:?}",
                        self.table
                    ))),
                }
            }
            Err(e) => Err(self.fail("PutItem (event)", &e)),
        }
    }

    #[instrument(level = "debug", skip_all, fields(connection = %connection, event_id = %event_id))]
    async fn complete_event(
        &self,
        connection: &str,
        event_id: &str,
        expires_at: UnixMillis,
    ) -> StateResult<()> {
        self.client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(event_item(
                connection, event_id, expires_at, EVENT_DONE,
            )))
            .send()
            .await
            .map_err(|e| self.fail("PutItem (event done)", &e))?;
        Ok(())
    }

    #[instrument(level = "debug", skip_all, fields(connection = %connection, event_id = %event_id))]
    async fn forget_event(&self, connection: &str, event_id: &str) -> StateResult<()> {
        self.client
            .delete_item()
            .table_name(&self.table)
            .set_key(Some(key(connection, event_sk(event_id))))
            .send()
            .await
            .map_err(|e| self.fail("DeleteItem (event)", &e))?;
        Ok(())
    }

    #[instrument(level = "debug", skip_all, fields(connection = %connection))]
    async fn clear_connection(&self, connection: &str, lease: &Lease) -> StateResult<()> {
        // Everything under the connection's key but the lease: its token counter must outlive the
        // connection's data.
        let keys: Vec<Item> = self
            .query(QuerySpec {
                connection,
                sk_condition: None,
                values: Vec::new(),
                forward: true,
                limit: None,
                keys_only: true,
            })
            .await?
            .into_iter()
            .filter(|item| {
                item.get("sk")
                    .and_then(|v| v.as_s().ok())
                    .map(String::as_str)
                    != Some(LEASE_SK)
            })
            .collect();
        tracing::debug!(connection, removed = keys.len(), "cleared");
        let actions = keys
            .into_iter()
            .map(|key| delete_action(&self.table, key))
            .collect::<StateResult<Vec<_>>>()?;
        self.write_fenced(connection, lease, "clear connection", singles(actions))
            .await
    }
}
