//! User lifecycle scenarios (preferences, lifecycle and passwords, mapping validation:
//! docs/design.md#preferences, #users, #mapping): the real engine against the sandbox tenant,
//! asserting the tenant and the stored state. Every preference is exercised on and off.
//!
//! The sandbox neither stores passwords nor logs request bodies, so the tests that look at what
//! was sent (the create body, the PATCH keys, the password, `forceChangePasswordNextSignIn`) run
//! the engine over a [`Recorder`]: the same Graph directory adapter, with every operation the
//! executor hands it kept for inspection.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a broken expectation should fail loudly"
)]

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;

use m365_core::config::Config;
use m365_core::engine::{Engine, SyncOptions, SyncOutcome};
use m365_core::{
    Clock, Directory, DirectoryCounters, DirectoryOp, DirectoryResult, LinkOrigin, ObjectKind,
    OpOutcome, RunStatus, StateStore, TenantDomain, TenantGroup, TenantSku, TenantUser,
};
use m365_graph::GraphDirectory;
use m365_integration_tests::scenario::{BASE_RULE, Scenario, user};
use m365_sandbox::demo;
use m365_source_file::{FileSource, FileSourceConfig};
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Value, json};

// ---------------------------------------------------------------------------------------------
// Helpers

fn upn(alias: &str) -> String {
    format!("{alias}@{}", demo::VERIFIED_DOMAIN)
}

fn disabled(mut u: Value) -> Value {
    u["enabled"] = Value::Bool(false);
    u
}

/// Replaces the scenario's rule by `BASE_RULE` edited by `edit` (to change what it fixes: the
/// match attribute, the password source).
async fn set_custom_rule(
    s: &mut Scenario,
    preferences: &str,
    extra: &str,
    edit: impl Fn(&str) -> String,
) {
    let rule = BASE_RULE
        .replace("{preferences}", preferences)
        .replace("{extra}", extra);
    s.set_rule_text(&edit(&rule)).await;
}

/// The Graph directory adapter, keeping every operation it is asked to apply.
struct Recorder<'a> {
    inner: &'a GraphDirectory,
    ops: Mutex<Vec<DirectoryOp>>,
}

type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

// `Directory` is an `async_trait`; this is its desugared form (the test crate does not depend on
// `async-trait`).
impl Directory for Recorder<'_> {
    fn find_users<'life0, 'life1, 'life2, 'life3, 'async_trait>(
        &'life0 self,
        attribute: &'life1 str,
        values: &'life2 [String],
        select: &'life3 [String],
    ) -> BoxFuture<'async_trait, DirectoryResult<Vec<TenantUser>>>
    where
        'life0: 'async_trait,
        'life1: 'async_trait,
        'life2: 'async_trait,
        'life3: 'async_trait,
        Self: 'async_trait,
    {
        Box::pin(self.inner.find_users(attribute, values, select))
    }

    fn find_groups_by_name<'life0, 'life1, 'async_trait>(
        &'life0 self,
        display_name: &'life1 str,
    ) -> BoxFuture<'async_trait, DirectoryResult<Vec<TenantGroup>>>
    where
        'life0: 'async_trait,
        'life1: 'async_trait,
        Self: 'async_trait,
    {
        Box::pin(self.inner.find_groups_by_name(display_name))
    }

    fn group_members<'life0, 'life1, 'async_trait>(
        &'life0 self,
        group_id: &'life1 str,
    ) -> BoxFuture<'async_trait, DirectoryResult<Vec<String>>>
    where
        'life0: 'async_trait,
        'life1: 'async_trait,
        Self: 'async_trait,
    {
        Box::pin(self.inner.group_members(group_id))
    }

    fn domains<'life0, 'async_trait>(
        &'life0 self,
    ) -> BoxFuture<'async_trait, DirectoryResult<Vec<TenantDomain>>>
    where
        'life0: 'async_trait,
        Self: 'async_trait,
    {
        Box::pin(self.inner.domains())
    }

    fn subscribed_skus<'life0, 'async_trait>(
        &'life0 self,
    ) -> BoxFuture<'async_trait, DirectoryResult<Vec<TenantSku>>>
    where
        'life0: 'async_trait,
        Self: 'async_trait,
    {
        Box::pin(self.inner.subscribed_skus())
    }

    fn restorable_users<'life0, 'life1, 'async_trait>(
        &'life0 self,
        ids: &'life1 [String],
    ) -> BoxFuture<'async_trait, DirectoryResult<Vec<String>>>
    where
        'life0: 'async_trait,
        'life1: 'async_trait,
        Self: 'async_trait,
    {
        Box::pin(self.inner.restorable_users(ids))
    }

    fn apply<'life0, 'async_trait>(
        &'life0 self,
        ops: Vec<DirectoryOp>,
    ) -> BoxFuture<'async_trait, Vec<DirectoryResult<OpOutcome>>>
    where
        'life0: 'async_trait,
        Self: 'async_trait,
    {
        self.ops.lock().unwrap().extend(ops.iter().cloned());
        Box::pin(self.inner.apply(ops))
    }

    fn counters(&self) -> DirectoryCounters {
        self.inner.counters()
    }
}

/// A sync like [`Scenario::sync`], over a [`Recorder`]: returns the outcome and the operations
/// sent to the tenant.
async fn sync_recorded(s: &Scenario) -> (SyncOutcome, Vec<DirectoryOp>) {
    let recorder = Recorder {
        inner: &s.directory,
        ops: Mutex::new(Vec::new()),
    };
    let source = FileSource::local(FileSourceConfig::new(s.source_path.display().to_string()))
        .expect("file source");
    let engine = Engine {
        connection: &s.connection,
        rule: &s.rule,
        source: &source,
        directory: &recorder,
        state: &s.state,
        clock: &s.clock,
        page_size: 7,
        chunk_size: 10,
    };
    let outcome = engine
        .sync(SyncOptions {
            holder: m365_core::conformance::holder("scenario"),
            ..SyncOptions::default()
        })
        .await
        .expect("sync runs");
    let ops = recorder.ops.into_inner().unwrap();
    (outcome, ops)
}

/// Requests the sandbox logged from index `from` on, as `METHOD /path` (without `/v1.0`), the
/// `$batch` envelopes left out (their items are logged one by one).
fn requests_since(s: &Scenario, from: usize) -> Vec<String> {
    s.sandbox.sandbox().request_log()[from..]
        .iter()
        .filter(|r| !r.path.starts_with("/v1.0/$batch") || r.batch_item)
        .map(|r| {
            format!(
                "{} {}",
                r.method,
                r.path.strip_prefix("/v1.0").unwrap_or(&r.path)
            )
        })
        .collect()
}

fn log_len(s: &Scenario) -> usize {
    s.sandbox.sandbox().request_log().len()
}

fn writes_since(s: &Scenario, from: usize) -> Vec<String> {
    requests_since(s, from)
        .into_iter()
        .filter(|r| !r.starts_with("GET "))
        .collect()
}

fn tenant_id_of(s: &Scenario, alias: &str) -> String {
    s.tenant_user(&upn(alias)).expect("tenant user")["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

fn created_ops(ops: &[DirectoryOp]) -> Vec<(&BTreeMap<String, Value>, &SecretString, bool)> {
    ops.iter()
        .filter_map(|op| match op {
            DirectoryOp::CreateUser {
                properties,
                password,
                force_change_password,
            } => Some((properties, password, *force_change_password)),
            _ => None,
        })
        .collect()
}

fn update_ops(ops: &[DirectoryOp]) -> Vec<(&str, &BTreeMap<String, Value>)> {
    ops.iter()
        .filter_map(|op| match op {
            DirectoryOp::UpdateUser { id, properties } => Some((id.as_str(), properties)),
            _ => None,
        })
        .collect()
}

fn status(outcome: &SyncOutcome) -> RunStatus {
    outcome.run.status
}

const SCOPE_FILTER: &str = "[rule.scope]\nfilter = \"department != 'Contractors'\"\n";

// ---------------------------------------------------------------------------------------------
// Create

#[tokio::test]
async fn new_user_is_created_with_mapped_attributes_in_one_post_and_linked() {
    let s = Scenario::new("", "").await;
    s.write_source(
        &[user(
            "u-ann",
            "ann",
            json!({"department": "Sales", "usageLocation": "GB"}),
        )],
        &[],
    );
    let from = log_len(&s);
    let (outcome, ops) = sync_recorded(&s).await;

    assert_eq!(status(&outcome), RunStatus::Succeeded, "{:?}", outcome.run);
    let tenant = s.tenant_user(&upn("ann")).expect("ann created");
    assert_eq!(tenant["displayName"], "ann Tester");
    assert_eq!(tenant["givenName"], "ann");
    assert_eq!(tenant["surname"], "Tester");
    assert_eq!(tenant["jobTitle"], "Specialist");
    assert_eq!(tenant["department"], "Sales");
    assert_eq!(tenant["usageLocation"], "GB");
    assert_eq!(tenant["accountEnabled"], true);
    assert_eq!(tenant["mailNickname"], "ann");
    assert_eq!(s.tenant_users_named(&upn("ann")), 1);

    // usageLocation travels inside the create: one POST and no PATCH after it.
    let creates = created_ops(&ops);
    assert_eq!(creates.len(), 1, "{ops:?}");
    assert_eq!(creates[0].0["usageLocation"], "GB");
    assert!(update_ops(&ops).is_empty(), "{ops:?}");
    assert_eq!(writes_since(&s, from), vec!["POST /users".to_owned()]);

    let link = s.link(ObjectKind::User, "u-ann").await.expect("linked");
    assert_eq!(link.origin, LinkOrigin::Created);
    assert_eq!(link.object_id, tenant["id"].as_str().unwrap());
    assert!(link.enabled);
    assert_eq!(link.applied["userPrincipalName"], upn("ann"));
    assert_eq!(link.applied["displayName"], "ann Tester");
    assert_eq!(link.applied["jobTitle"], "Specialist");
    assert_eq!(link.applied["department"], "Sales");
    assert_eq!(link.applied["usageLocation"], "GB");
    assert!(
        !link.applied.contains_key("passwordProfile"),
        "a password is never stored: {:?}",
        link.applied
    );
    assert!(s.errors().await.is_empty());
}

#[tokio::test]
async fn existing_tenant_user_is_linked_by_a_match_attribute_other_than_upn() {
    let mut s = Scenario::new("", "").await;
    set_custom_rule(&mut s, "", "", |r| {
        r.replace(
            "match_attribute = \"userPrincipalName\"",
            "match_attribute = \"employeeId\"",
        )
        .replace(
            "usageLocation = { attribute = \"usageLocation\" }",
            "usageLocation = { attribute = \"usageLocation\" }\nemployeeId = { attribute = \"employeeId\" }",
        )
    })
    .await;
    let seeded = s.sandbox.sandbox().seed_user(json!({
        "userPrincipalName": upn("c.old"),
        "mailNickname": "c.old",
        "displayName": "Carol Old",
        "employeeId": "E100",
        "accountEnabled": true,
        "usageLocation": "US",
    }));
    let users_before = s.sandbox.sandbox().users().len();
    s.write_source(
        &[user("u-carol", "carol", json!({"employeeId": "E100"}))],
        &[],
    );
    let from = log_len(&s);
    let outcome = s.sync().await;

    assert_eq!(status(&outcome), RunStatus::Succeeded, "{:?}", outcome.run);
    assert_eq!(
        s.sandbox.sandbox().users().len(),
        users_before,
        "linked, not duplicated"
    );
    assert!(
        !writes_since(&s, from).contains(&"POST /users".to_owned()),
        "{:?}",
        writes_since(&s, from)
    );
    // The seeded object now carries the mapped values, its new UPN included.
    let tenant = s.tenant_user(&upn("carol")).expect("renamed by the update");
    assert_eq!(tenant["id"], seeded);
    assert_eq!(tenant["displayName"], "carol Tester");
    assert_eq!(tenant["employeeId"], "E100");
    assert!(s.tenant_user(&upn("c.old")).is_none());
    let link = s.link(ObjectKind::User, "u-carol").await.expect("linked");
    assert_eq!(link.object_id, seeded);
    assert_eq!(link.origin, LinkOrigin::Matched);
    assert_eq!(link.applied["employeeId"], "E100");
    assert_eq!(link.applied["userPrincipalName"], upn("carol"));

    // The link is settled: a second run sends nothing.
    let from = log_len(&s);
    s.sync().await;
    assert!(
        requests_since(&s, from).is_empty(),
        "{:?}",
        requests_since(&s, from)
    );
}

// ---------------------------------------------------------------------------------------------
// allow_create

#[tokio::test]
async fn allow_create_on_creates_an_unmatched_user_and_links_a_matched_one() {
    let s = Scenario::new("allow_create = true", "").await;
    s.write_source(
        &[
            user("u-bjensen", "bjensen", json!({})),
            user("u-dave", "dave", json!({})),
        ],
        &[],
    );
    let from = log_len(&s);
    s.sync().await;
    assert_eq!(
        writes_since(&s, from)
            .iter()
            .filter(|w| *w == "POST /users")
            .count(),
        1
    );
    let dave = s.tenant_user(&upn("dave")).expect("dave created");
    let link = s.link(ObjectKind::User, "u-dave").await.unwrap();
    assert_eq!(link.origin, LinkOrigin::Created);
    assert_eq!(link.object_id, dave["id"].as_str().unwrap());
    let bjensen = s.link(ObjectKind::User, "u-bjensen").await.unwrap();
    assert_eq!(bjensen.object_id, demo::BJENSEN_ID);
    assert_eq!(bjensen.origin, LinkOrigin::Matched);
}

#[tokio::test]
async fn allow_create_off_creates_nothing_but_still_links_a_matched_user() {
    let s = Scenario::new("allow_create = false", "").await;
    s.write_source(
        &[
            user("u-bjensen", "bjensen", json!({})),
            user("u-dave", "dave", json!({})),
        ],
        &[],
    );
    let users_before = s.sandbox.sandbox().users().len();
    let from = log_len(&s);
    let outcome = s.sync().await;

    assert_eq!(status(&outcome), RunStatus::Succeeded, "{:?}", outcome.run);
    assert!(s.tenant_user(&upn("dave")).is_none());
    assert!(s.link(ObjectKind::User, "u-dave").await.is_none());
    assert_eq!(s.sandbox.sandbox().users().len(), users_before);
    let writes = writes_since(&s, from);
    assert!(!writes.contains(&"POST /users".to_owned()), "{writes:?}");
    // The only writes are bjensen's update to the mapped values.
    assert!(
        writes
            .iter()
            .all(|w| *w == format!("PATCH /users/{}", demo::BJENSEN_ID)),
        "{writes:?}"
    );
    let bjensen = s.link(ObjectKind::User, "u-bjensen").await.expect("linked");
    assert_eq!(bjensen.object_id, demo::BJENSEN_ID);
    assert_eq!(bjensen.origin, LinkOrigin::Matched);
    assert_eq!(s.tenant_users_named(demo::BJENSEN_UPN), 1);

    // Still nothing for dave on the next run.
    let from = log_len(&s);
    s.sync().await;
    assert!(
        writes_since(&s, from).is_empty(),
        "{:?}",
        writes_since(&s, from)
    );
    assert!(s.tenant_user(&upn("dave")).is_none());
}

// ---------------------------------------------------------------------------------------------
// allow_update

#[tokio::test]
async fn allow_update_on_patches_only_the_changed_attribute() {
    let s = Scenario::new("allow_update = true", "").await;
    s.write_source(&[user("u-ann", "ann", json!({}))], &[]);
    s.sync().await;
    let id = tenant_id_of(&s, "ann");

    s.write_source(&[user("u-ann", "ann", json!({"title": "Manager"}))], &[]);
    let from = log_len(&s);
    let writes_before = s.tenant_writes();
    let (outcome, ops) = sync_recorded(&s).await;

    assert_eq!(status(&outcome), RunStatus::Succeeded);
    assert_eq!(s.tenant_writes() - writes_before, 1);
    let updates = update_ops(&ops);
    assert_eq!(ops.len(), 1, "{ops:?}");
    assert_eq!(updates.len(), 1, "{ops:?}");
    assert_eq!(updates[0].0, id);
    assert_eq!(
        updates[0].1,
        &BTreeMap::from([("jobTitle".to_owned(), json!("Manager"))]),
        "the PATCH carries the changed attribute only"
    );
    assert_eq!(writes_since(&s, from), vec![format!("PATCH /users/{id}")]);
    let tenant = s.tenant_user(&upn("ann")).unwrap();
    assert_eq!(tenant["jobTitle"], "Manager");
    assert_eq!(tenant["displayName"], "ann Tester");
    let link = s.link(ObjectKind::User, "u-ann").await.unwrap();
    assert_eq!(link.applied["jobTitle"], "Manager");

    // Applied: the next run has nothing to send.
    let from = log_len(&s);
    s.sync().await;
    assert!(requests_since(&s, from).is_empty());
}

#[tokio::test]
async fn allow_update_off_sends_no_patch_and_leaves_the_tenant_unchanged() {
    let s = Scenario::new("allow_update = false", "").await;
    s.write_source(&[user("u-ann", "ann", json!({}))], &[]);
    s.sync().await;

    s.write_source(
        &[user(
            "u-ann",
            "ann",
            json!({"title": "Manager", "department": "Ops"}),
        )],
        &[],
    );
    let from = log_len(&s);
    let writes_before = s.tenant_writes();
    let (outcome, ops) = sync_recorded(&s).await;

    assert_eq!(status(&outcome), RunStatus::Succeeded);
    assert!(ops.is_empty(), "{ops:?}");
    assert_eq!(s.tenant_writes(), writes_before);
    assert!(writes_since(&s, from).is_empty());
    let tenant = s.tenant_user(&upn("ann")).unwrap();
    assert_eq!(tenant["jobTitle"], "Specialist");
    assert!(tenant.get("department").is_none(), "{tenant}");
    let link = s.link(ObjectKind::User, "u-ann").await.unwrap();
    assert_eq!(link.applied["jobTitle"], "Specialist");
}

// ---------------------------------------------------------------------------------------------
// No-op

#[tokio::test]
async fn unchanged_source_makes_no_graph_request_on_the_second_run() {
    let s = Scenario::new("", SCOPE_FILTER).await;
    s.write_source(
        &[
            user("u-ann", "ann", json!({"department": "Sales"})),
            user("u-bob", "bob", json!({})),
            user("u-bjensen", "bjensen", json!({})),
            disabled(user("u-off", "off", json!({}))),
            user("u-con", "con", json!({"department": "Contractors"})),
        ],
        &[],
    );
    s.sync().await;
    assert_eq!(
        s.link(ObjectKind::User, "u-ann").await.unwrap().origin,
        LinkOrigin::Created
    );

    let stats_before = s.sandbox.sandbox().stats();
    let writes_before = s.tenant_writes();
    let outcome = s.sync().await;
    let stats_after = s.sandbox.sandbox().stats();

    assert_eq!(status(&outcome), RunStatus::Succeeded);
    assert!(outcome.plan.steps.is_empty(), "{:?}", outcome.plan.steps);
    assert_eq!(
        stats_after.requests, stats_before.requests,
        "zero Graph requests"
    );
    assert_eq!(stats_after.writes, stats_before.writes);
    assert_eq!(s.tenant_writes(), writes_before);
    assert_eq!(outcome.run.counts.graph_requests, 0);
    assert_eq!(outcome.run.counts.graph_writes, 0);
}

// ---------------------------------------------------------------------------------------------
// allow_disable

#[tokio::test]
async fn allow_disable_on_follows_the_source_enabled_flag_both_ways() {
    let s = Scenario::new("allow_disable = true", "").await;
    s.write_source(
        &[
            user("u-ann", "ann", json!({})),
            user("u-bob", "bob", json!({})),
        ],
        &[],
    );
    s.sync().await;
    let id = tenant_id_of(&s, "ann");

    s.write_source(
        &[
            disabled(user("u-ann", "ann", json!({}))),
            user("u-bob", "bob", json!({})),
        ],
        &[],
    );
    let (outcome, ops) = sync_recorded(&s).await;
    assert_eq!(status(&outcome), RunStatus::Succeeded, "{:?}", outcome.run);
    assert_eq!(
        update_ops(&ops),
        vec![(
            id.as_str(),
            &BTreeMap::from([("accountEnabled".to_owned(), json!(false))])
        )]
    );
    assert_eq!(s.tenant_user(&upn("ann")).unwrap()["accountEnabled"], false);
    assert_eq!(s.tenant_user(&upn("bob")).unwrap()["accountEnabled"], true);
    let link = s
        .link(ObjectKind::User, "u-ann")
        .await
        .expect("still linked");
    assert!(!link.enabled);
    assert_eq!(link.object_id, id);

    s.write_source(
        &[
            user("u-ann", "ann", json!({})),
            user("u-bob", "bob", json!({})),
        ],
        &[],
    );
    let (_, ops) = sync_recorded(&s).await;
    assert_eq!(
        update_ops(&ops),
        vec![(
            id.as_str(),
            &BTreeMap::from([("accountEnabled".to_owned(), json!(true))])
        )]
    );
    assert_eq!(s.tenant_user(&upn("ann")).unwrap()["accountEnabled"], true);
    assert!(s.link(ObjectKind::User, "u-ann").await.unwrap().enabled);
}

#[tokio::test]
async fn allow_disable_off_leaves_a_source_disabled_user_enabled_in_the_tenant() {
    let s = Scenario::new("allow_disable = false", "").await;
    s.write_source(&[user("u-ann", "ann", json!({}))], &[]);
    s.sync().await;

    s.write_source(&[disabled(user("u-ann", "ann", json!({})))], &[]);
    let from = log_len(&s);
    let outcome = s.sync().await;
    assert_eq!(status(&outcome), RunStatus::Succeeded);
    assert!(
        writes_since(&s, from).is_empty(),
        "{:?}",
        writes_since(&s, from)
    );
    assert_eq!(s.tenant_user(&upn("ann")).unwrap()["accountEnabled"], true);
    let link = s
        .link(ObjectKind::User, "u-ann")
        .await
        .expect("still linked");
    assert!(link.enabled);
}

// ---------------------------------------------------------------------------------------------
// provision_disabled_users

#[tokio::test]
async fn provision_disabled_users_on_creates_a_disabled_user_disabled() {
    let s = Scenario::new("provision_disabled_users = true", "").await;
    s.write_source(&[disabled(user("u-off", "off", json!({})))], &[]);
    let (outcome, ops) = sync_recorded(&s).await;

    assert_eq!(status(&outcome), RunStatus::Succeeded);
    let creates = created_ops(&ops);
    assert_eq!(creates.len(), 1);
    assert_eq!(
        creates[0].0["accountEnabled"], false,
        "disabled inside the create"
    );
    assert!(update_ops(&ops).is_empty());
    let tenant = s.tenant_user(&upn("off")).expect("created");
    assert_eq!(tenant["accountEnabled"], false);
    let link = s.link(ObjectKind::User, "u-off").await.expect("linked");
    assert_eq!(link.origin, LinkOrigin::Created);
    assert!(!link.enabled);
}

#[tokio::test]
async fn provision_disabled_users_off_does_not_create_a_disabled_user() {
    let s = Scenario::new("provision_disabled_users = false", "").await;
    s.write_source(
        &[
            disabled(user("u-off", "off", json!({}))),
            user("u-on", "on", json!({})),
        ],
        &[],
    );
    let from = log_len(&s);
    let outcome = s.sync().await;

    assert_eq!(status(&outcome), RunStatus::Succeeded);
    assert!(s.tenant_user(&upn("off")).is_none());
    assert!(s.link(ObjectKind::User, "u-off").await.is_none());
    assert!(s.tenant_user(&upn("on")).is_some());
    assert_eq!(writes_since(&s, from), vec!["POST /users".to_owned()]);
}

// ---------------------------------------------------------------------------------------------
// allow_deprovision and remove_action

#[tokio::test]
async fn user_removed_from_the_source_is_disabled_and_unlinked_with_remove_action_disable() {
    let s = Scenario::new("allow_deprovision = true\nremove_action = \"disable\"", "").await;
    s.write_source(
        &[
            user("u-ann", "ann", json!({})),
            user("u-bob", "bob", json!({})),
        ],
        &[],
    );
    s.sync().await;
    let bob = tenant_id_of(&s, "bob");

    s.write_source(&[user("u-ann", "ann", json!({}))], &[]);
    let from = log_len(&s);
    let outcome = s.sync().await;

    assert_eq!(status(&outcome), RunStatus::Succeeded, "{:?}", outcome.run);
    assert_eq!(writes_since(&s, from), vec![format!("PATCH /users/{bob}")]);
    let tenant = s.tenant_user(&upn("bob")).expect("disabled, not deleted");
    assert_eq!(tenant["id"], bob);
    assert_eq!(tenant["accountEnabled"], false);
    assert!(
        s.link(ObjectKind::User, "u-bob").await.is_none(),
        "unlinked"
    );
    assert_eq!(s.tenant_user(&upn("ann")).unwrap()["accountEnabled"], true);
    assert!(s.link(ObjectKind::User, "u-ann").await.is_some());
    assert!(s.sandbox.sandbox().deleted_items().is_empty());

    // Done once: the next run leaves bob alone.
    let from = log_len(&s);
    s.sync().await;
    assert!(requests_since(&s, from).is_empty());
}

#[tokio::test]
async fn user_removed_from_the_source_is_soft_deleted_with_remove_action_delete() {
    let s = Scenario::new("allow_deprovision = true\nremove_action = \"delete\"", "").await;
    s.write_source(
        &[
            user("u-ann", "ann", json!({})),
            user("u-bob", "bob", json!({})),
        ],
        &[],
    );
    s.sync().await;
    let bob = tenant_id_of(&s, "bob");

    s.write_source(&[user("u-ann", "ann", json!({}))], &[]);
    let from = log_len(&s);
    let outcome = s.sync().await;

    assert_eq!(status(&outcome), RunStatus::Succeeded, "{:?}", outcome.run);
    assert_eq!(writes_since(&s, from), vec![format!("DELETE /users/{bob}")]);
    assert!(s.tenant_user(&upn("bob")).is_none());
    let deleted = s.sandbox.sandbox().deleted_items();
    assert_eq!(deleted.len(), 1, "{deleted:?}");
    assert_eq!(deleted[0]["id"], bob);
    assert_eq!(deleted[0]["userPrincipalName"], upn("bob"));
    let kept = s
        .link(ObjectKind::User, "u-bob")
        .await
        .expect("kept, marked deleted, for a restore");
    assert_eq!(kept.object_id, bob);
    assert!(kept.deleted_at.is_some());
    assert_eq!(
        s.state
            .count_links(&s.connection, ObjectKind::User)
            .await
            .unwrap(),
        1,
        "a deleted user is not counted as linked"
    );
    assert!(s.tenant_user(&upn("ann")).is_some());

    // Settled: the deleted user is not deprovisioned again.
    let from = log_len(&s);
    let outcome = s.sync().await;
    assert!(outcome.plan.steps.is_empty(), "{:?}", outcome.plan.steps);
    assert!(requests_since(&s, from).is_empty());
}

/// ann and bob synced; bob then removed from the source and deleted by the sync.
async fn bob_deleted_by_a_deprovision() -> (Scenario, String) {
    let s = Scenario::new("allow_deprovision = true\nremove_action = \"delete\"", "").await;
    s.write_source(
        &[
            user("u-ann", "ann", json!({})),
            user("u-bob", "bob", json!({"department": "Sales"})),
        ],
        &[],
    );
    s.sync().await;
    let bob = tenant_id_of(&s, "bob");
    s.write_source(&[user("u-ann", "ann", json!({}))], &[]);
    s.sync().await;
    assert!(s.tenant_user(&upn("bob")).is_none());
    (s, bob)
}

fn bob_back(s: &Scenario, department: &str) {
    s.write_source(
        &[
            user("u-ann", "ann", json!({})),
            user("u-bob", "bob", json!({ "department": department })),
        ],
        &[],
    );
}

#[tokio::test]
async fn user_deleted_by_a_deprovision_and_back_within_30_days_is_restored_not_created_again() {
    let (s, bob) = bob_deleted_by_a_deprovision().await;

    bob_back(&s, "Marketing");
    let from = log_len(&s);
    let outcome = s.sync().await;

    assert_eq!(
        status(&outcome),
        RunStatus::Succeeded,
        "{:?} {:?}",
        outcome.run,
        s.errors().await
    );
    let operations: Vec<&str> = outcome.plan.steps.iter().map(|s| s.operation()).collect();
    assert_eq!(operations, vec!["restore user", "update user"]);
    assert_eq!(
        writes_since(&s, from),
        vec![
            format!("POST /directory/deletedItems/{bob}/restore"),
            format!("PATCH /users/{bob}"),
        ]
    );
    assert_eq!(s.tenant_users_named(&upn("bob")), 1, "no second account");
    let tenant = s.tenant_user(&upn("bob")).expect("restored");
    assert_eq!(tenant["id"], bob.as_str());
    assert_eq!(tenant["department"], "Marketing");
    assert_eq!(tenant["accountEnabled"], true);
    assert!(s.sandbox.sandbox().deleted_items().is_empty());
    let link = s.link(ObjectKind::User, "u-bob").await.expect("linked");
    assert_eq!(link.object_id, bob);
    assert_eq!(link.deleted_at, None);
    assert_eq!(link.origin, LinkOrigin::Created);
    assert_eq!(outcome.report.counts.restored, 1);
    assert_eq!(
        s.state
            .count_links(&s.connection, ObjectKind::User)
            .await
            .unwrap(),
        2
    );

    // Settled.
    let from = log_len(&s);
    let outcome = s.sync().await;
    assert!(outcome.plan.steps.is_empty(), "{:?}", outcome.plan.steps);
    assert!(requests_since(&s, from).is_empty());
}

#[tokio::test]
async fn user_deleted_by_a_deprovision_and_purged_since_is_created_anew() {
    let (s, bob) = bob_deleted_by_a_deprovision().await;
    s.directory
        .client()
        .permanently_delete_item(&bob)
        .await
        .unwrap();

    bob_back(&s, "Sales");
    let outcome = s.sync().await;

    assert_eq!(status(&outcome), RunStatus::Succeeded, "{:?}", outcome.run);
    let operations: Vec<&str> = outcome.plan.steps.iter().map(|s| s.operation()).collect();
    assert_eq!(operations, vec!["create user"]);
    let new_id = tenant_id_of(&s, "bob");
    assert_ne!(new_id, bob);
    let link = s.link(ObjectKind::User, "u-bob").await.expect("linked");
    assert_eq!(
        (link.object_id.as_str(), link.deleted_at),
        (new_id.as_str(), None)
    );
    assert_eq!(outcome.report.counts.created, 1);
}

#[tokio::test]
async fn user_restored_by_a_run_that_stopped_before_recording_it_is_linked_again() {
    // The restore went through but the run died before its record: the next run finds the
    // user live, not in the deleted items, and links it again by its UPN.
    let (s, bob) = bob_deleted_by_a_deprovision().await;
    s.directory
        .client()
        .restore_deleted_item(&bob)
        .await
        .unwrap();

    bob_back(&s, "Sales");
    let outcome = s.sync().await;

    assert_eq!(status(&outcome), RunStatus::Succeeded, "{:?}", outcome.run);
    assert_eq!(s.tenant_users_named(&upn("bob")), 1);
    let link = s.link(ObjectKind::User, "u-bob").await.expect("linked");
    assert_eq!(
        (link.object_id.as_str(), link.deleted_at),
        (bob.as_str(), None)
    );
}

#[tokio::test]
async fn the_link_of_a_deleted_user_is_forgotten_once_graph_has_purged_it() {
    let (s, bob) = bob_deleted_by_a_deprovision().await;
    // Deleted 31 days ago.
    let now = s.clock.now();
    let lease = m365_core::conformance::acquire(&s.state, &s.connection, "test", now, 60_000).await;
    let mut link = s.link(ObjectKind::User, "u-bob").await.unwrap();
    link.deleted_at = Some(now - 31 * 24 * 3_600_000);
    s.state
        .put_links(&s.connection, &[link], &lease)
        .await
        .unwrap();
    s.state.release_lease(&lease).await.unwrap();

    let from = log_len(&s);
    let outcome = s.sync().await;

    assert_eq!(status(&outcome), RunStatus::Succeeded, "{:?}", outcome.run);
    let operations: Vec<&str> = outcome.plan.steps.iter().map(|s| s.operation()).collect();
    assert_eq!(operations, vec!["unlink (purged)"]);
    assert_eq!(outcome.plan.breaker.destructive, 0);
    assert!(writes_since(&s, from).is_empty());
    assert!(s.link(ObjectKind::User, "u-bob").await.is_none());
    assert_eq!(s.sandbox.sandbox().deleted_items()[0]["id"], bob.as_str());
}

#[tokio::test]
async fn user_leaving_scope_by_filter_is_disabled_and_unlinked() {
    let s = Scenario::new("remove_action = \"disable\"", SCOPE_FILTER).await;
    s.write_source(
        &[
            user("u-ann", "ann", json!({"department": "Sales"})),
            user("u-bob", "bob", json!({"department": "Sales"})),
            user("u-con", "con", json!({"department": "Contractors"})),
        ],
        &[],
    );
    s.sync().await;
    assert!(
        s.tenant_user(&upn("con")).is_none(),
        "out of scope: never created"
    );
    let bob = tenant_id_of(&s, "bob");

    s.write_source(
        &[
            user("u-ann", "ann", json!({"department": "Sales"})),
            user("u-bob", "bob", json!({"department": "Contractors"})),
            user("u-con", "con", json!({"department": "Contractors"})),
        ],
        &[],
    );
    let from = log_len(&s);
    let outcome = s.sync().await;

    assert_eq!(status(&outcome), RunStatus::Succeeded, "{:?}", outcome.run);
    assert_eq!(writes_since(&s, from), vec![format!("PATCH /users/{bob}")]);
    let tenant = s.tenant_user(&upn("bob")).unwrap();
    assert_eq!(tenant["accountEnabled"], false);
    assert_eq!(
        tenant["department"], "Sales",
        "out of scope: no longer updated"
    );
    assert!(s.link(ObjectKind::User, "u-bob").await.is_none());
    assert!(s.tenant_user(&upn("con")).is_none());
}

#[tokio::test]
async fn user_leaving_scope_by_filter_is_soft_deleted_with_remove_action_delete() {
    let s = Scenario::new("remove_action = \"delete\"", SCOPE_FILTER).await;
    s.write_source(
        &[
            user("u-ann", "ann", json!({"department": "Sales"})),
            user("u-bob", "bob", json!({"department": "Sales"})),
        ],
        &[],
    );
    s.sync().await;
    let bob = tenant_id_of(&s, "bob");

    s.write_source(
        &[
            user("u-ann", "ann", json!({"department": "Sales"})),
            user("u-bob", "bob", json!({"department": "Contractors"})),
        ],
        &[],
    );
    s.sync().await;
    assert!(s.tenant_user(&upn("bob")).is_none());
    let deleted = s.sandbox.sandbox().deleted_items();
    assert_eq!(deleted.len(), 1);
    assert_eq!(deleted[0]["id"], bob);
    let kept = s.link(ObjectKind::User, "u-bob").await.expect("kept");
    assert!(kept.deleted_at.is_some());
}

#[tokio::test]
async fn allow_deprovision_off_leaves_removed_and_out_of_scope_users_untouched_and_linked() {
    let s = Scenario::new(
        "allow_deprovision = false\nremove_action = \"delete\"",
        SCOPE_FILTER,
    )
    .await;
    s.write_source(
        &[
            user("u-ann", "ann", json!({"department": "Sales"})),
            user("u-bob", "bob", json!({"department": "Sales"})),
            user("u-cat", "cat", json!({"department": "Sales"})),
        ],
        &[],
    );
    s.sync().await;
    let bob = tenant_id_of(&s, "bob");
    let cat = tenant_id_of(&s, "cat");

    // bob leaves the source, cat leaves the scope.
    s.write_source(
        &[
            user("u-ann", "ann", json!({"department": "Sales"})),
            user("u-cat", "cat", json!({"department": "Contractors"})),
        ],
        &[],
    );
    let from = log_len(&s);
    let outcome = s.sync().await;

    assert_eq!(status(&outcome), RunStatus::Succeeded);
    assert!(outcome.plan.steps.is_empty(), "{:?}", outcome.plan.steps);
    assert!(
        requests_since(&s, from).is_empty(),
        "{:?}",
        requests_since(&s, from)
    );
    for (alias, id, source_id) in [("bob", &bob, "u-bob"), ("cat", &cat, "u-cat")] {
        let tenant = s.tenant_user(&upn(alias)).expect("still in the tenant");
        assert_eq!(tenant["id"], id.as_str());
        assert_eq!(tenant["accountEnabled"], true);
        let link = s
            .link(ObjectKind::User, source_id)
            .await
            .expect("still linked");
        assert_eq!(&link.object_id, id);
    }
    assert!(s.sandbox.sandbox().deleted_items().is_empty());
}

#[tokio::test]
async fn user_returning_after_a_disable_deprovision_is_relinked_and_enabled() {
    let s = Scenario::new("", "").await;
    s.write_source(
        &[
            user("u-ann", "ann", json!({})),
            user("u-bob", "bob", json!({})),
        ],
        &[],
    );
    s.sync().await;
    let bob = tenant_id_of(&s, "bob");
    s.write_source(&[user("u-ann", "ann", json!({}))], &[]);
    s.sync().await;
    assert_eq!(s.tenant_user(&upn("bob")).unwrap()["accountEnabled"], false);

    s.write_source(
        &[
            user("u-ann", "ann", json!({})),
            user("u-bob", "bob", json!({})),
        ],
        &[],
    );
    s.sync().await;
    assert_eq!(s.tenant_users_named(&upn("bob")), 1, "no duplicate");
    let tenant = s.tenant_user(&upn("bob")).unwrap();
    assert_eq!(tenant["id"], bob);
    assert_eq!(tenant["accountEnabled"], true);
    let link = s.link(ObjectKind::User, "u-bob").await.expect("relinked");
    assert_eq!(link.object_id, bob);
    assert_eq!(link.origin, LinkOrigin::Matched);
    assert!(link.enabled);
}

// ---------------------------------------------------------------------------------------------
// Only linked objects are ever touched

#[tokio::test]
async fn tenant_user_the_rule_never_linked_is_never_touched_even_with_delete() {
    let s = Scenario::new("allow_deprovision = true\nremove_action = \"delete\"", "").await;
    let stranger = s.sandbox.sandbox().seed_user(json!({
        "userPrincipalName": upn("stranger"),
        "mailNickname": "stranger",
        "displayName": "Not From The Source",
        "accountEnabled": true,
        "jobTitle": "Untouchable",
    }));
    let before = s.tenant_user(&upn("stranger")).unwrap();
    s.write_source(&[user("u-ann", "ann", json!({}))], &[]);
    s.sync().await;
    // The source empties: ann (linked) goes, the others stay.
    s.write_source(&[], &[]);
    let from = log_len(&s);
    let outcome = s.sync().await;

    assert_eq!(status(&outcome), RunStatus::Succeeded, "{:?}", outcome.run);
    let ann_deleted = s.sandbox.sandbox().deleted_items();
    assert_eq!(ann_deleted.len(), 1);
    assert_eq!(ann_deleted[0]["userPrincipalName"], upn("ann"));
    assert_eq!(
        writes_since(&s, from).len(),
        1,
        "only ann: {:?}",
        writes_since(&s, from)
    );
    assert_eq!(s.tenant_user(&upn("stranger")).unwrap(), before);
    assert_eq!(s.tenant_user(&upn("stranger")).unwrap()["id"], stranger);
    let bjensen = s
        .tenant_user(demo::BJENSEN_UPN)
        .expect("seeded user untouched");
    assert_eq!(bjensen["accountEnabled"], true);
    assert!(s.tenant_user(demo::ADMIN_UPN).is_some());
    assert!(
        !requests_since(&s, 0)
            .iter()
            .any(|r| r.contains(&stranger) || r.contains(demo::BJENSEN_ID)),
        "{:?}",
        requests_since(&s, 0)
    );
}

// ---------------------------------------------------------------------------------------------
// Identity: the immutable source id

#[tokio::test]
async fn same_source_id_with_a_new_mail_renames_the_same_tenant_user() {
    let s = Scenario::new("", "").await;
    s.write_source(&[user("u-ann", "ann", json!({}))], &[]);
    s.sync().await;
    let id = tenant_id_of(&s, "ann");
    let users_before = s.sandbox.sandbox().users().len();

    s.write_source(
        &[user("u-ann", "ann", json!({"mail": upn("ann.smith")}))],
        &[],
    );
    let from = log_len(&s);
    let outcome = s.sync().await;

    assert_eq!(status(&outcome), RunStatus::Succeeded, "{:?}", outcome.run);
    assert_eq!(writes_since(&s, from), vec![format!("PATCH /users/{id}")]);
    assert_eq!(
        s.sandbox.sandbox().users().len(),
        users_before,
        "no new user"
    );
    assert!(s.tenant_user(&upn("ann")).is_none());
    let tenant = s.tenant_user(&upn("ann.smith")).expect("renamed");
    assert_eq!(tenant["id"], id);
    assert_eq!(tenant["accountEnabled"], true);
    let link = s.link(ObjectKind::User, "u-ann").await.unwrap();
    assert_eq!(link.object_id, id);
    assert_eq!(link.origin, LinkOrigin::Created);
    assert_eq!(link.applied["userPrincipalName"], upn("ann.smith"));
    assert!(s.sandbox.sandbox().deleted_items().is_empty());
}

#[tokio::test]
async fn new_source_id_is_a_new_identity_old_one_deprovisioned_new_one_created() {
    let s = Scenario::new("remove_action = \"delete\"", "").await;
    s.write_source(&[user("u-ann-1", "ann", json!({}))], &[]);
    s.sync().await;
    let old = tenant_id_of(&s, "ann");

    // The source re-issued the person under a new id (and a new mail).
    s.write_source(
        &[user(
            "u-ann-2",
            "ann2",
            json!({"displayName": "ann Tester"}),
        )],
        &[],
    );
    let outcome = s.sync().await;

    assert_eq!(status(&outcome), RunStatus::Succeeded, "{:?}", outcome.run);
    let kept = s
        .link(ObjectKind::User, "u-ann-1")
        .await
        .expect("kept, deleted");
    assert_eq!(
        (kept.object_id.as_str(), kept.deleted_at.is_some()),
        (old.as_str(), true)
    );
    let deleted = s.sandbox.sandbox().deleted_items();
    assert_eq!(deleted.len(), 1);
    assert_eq!(deleted[0]["id"], old);
    let new = s.tenant_user(&upn("ann2")).expect("created");
    assert_ne!(new["id"], old);
    let link = s.link(ObjectKind::User, "u-ann-2").await.unwrap();
    assert_eq!(link.origin, LinkOrigin::Created);
    assert_eq!(link.object_id, new["id"].as_str().unwrap());
}

#[tokio::test]
async fn new_source_id_with_the_same_upn_is_linked_and_not_deprovisioned_by_the_old_link() {
    // The old id leaves, a new id with the same UPN arrives in the same run: the new id is linked
    // to the tenant user by UPN, and the old link's sweep must not disable or delete the object
    // that the new link now owns.
    let s = Scenario::new("remove_action = \"delete\"", "").await;
    s.write_source(&[user("u-ann-1", "ann", json!({}))], &[]);
    s.sync().await;
    let id = tenant_id_of(&s, "ann");

    s.write_source(&[user("u-ann-2", "ann", json!({}))], &[]);
    let outcome = s.sync().await;

    assert!(
        s.link(ObjectKind::User, "u-ann-1").await.is_none(),
        "old link gone"
    );
    let link = s
        .link(ObjectKind::User, "u-ann-2")
        .await
        .expect("new id linked");
    let tenant = s.tenant_user(&upn("ann")).unwrap_or_else(|| {
        panic!(
            "the linked user must stay live; plan: {:#?}",
            outcome.plan.steps
        )
    });
    assert_eq!(link.object_id, tenant["id"].as_str().unwrap());
    assert_eq!(tenant["id"], id);
    assert_eq!(tenant["accountEnabled"], true);
    assert!(s.sandbox.sandbox().deleted_items().is_empty());
    assert_eq!(outcome.report.counts.unlinked, 1);
    assert_eq!(outcome.report.counts.deprovisioned, 0);
    assert_eq!(
        outcome.plan.breaker.destructive, 0,
        "forgetting a link is not destructive"
    );
    assert_eq!(outcome.run.counts.graph_writes, 0);

    // Settled: the next run neither touches the object nor sees the old id again.
    let from = log_len(&s);
    let outcome = s.sync().await;
    assert!(outcome.plan.steps.is_empty(), "{:?}", outcome.plan.steps);
    assert!(requests_since(&s, from).is_empty());
    assert_eq!(s.tenant_user(&upn("ann")).unwrap()["accountEnabled"], true);
}

// ---------------------------------------------------------------------------------------------
// Passwords

#[test]
fn rule_without_password_mapping_is_rejected_naming_the_key() {
    let rule = BASE_RULE
        .replace("{preferences}", "")
        .replace("{extra}", "")
        .replace("[rule.mapping.password]\nsource = \"generate\"\n", "");
    assert!(!rule.contains("rule.mapping.password"));
    let text = format!(
        "[connection]\nname = \"scenario\"\n\n[source]\ntype = \"file\"\nlocation = \"x.json\"\n{rule}"
    );
    let error = Config::from_toml(&text, "scenario.toml")
        .unwrap_err()
        .to_string();
    assert!(error.contains("rule.mapping.password"), "{error}");
    assert!(error.starts_with("scenario.toml"), "{error}");
}

#[tokio::test]
async fn password_is_sent_on_create_and_never_on_update() {
    let s = Scenario::new("", "").await;
    s.write_source(&[user("u-ann", "ann", json!({}))], &[]);
    let (_, ops) = sync_recorded(&s).await;
    let creates = created_ops(&ops);
    assert_eq!(creates.len(), 1);
    let generated = creates[0].1.expose_secret();
    assert_eq!(
        generated.chars().count(),
        m365_core::mapping::GENERATED_LENGTH
    );
    assert!(!creates[0].0.contains_key("passwordProfile"));

    s.write_source(
        &[user(
            "u-ann",
            "ann",
            json!({"title": "Manager", "displayName": "Ann T."}),
        )],
        &[],
    );
    let (_, ops) = sync_recorded(&s).await;
    let updates = update_ops(&ops);
    assert_eq!(updates.len(), 1, "{ops:?}");
    assert_eq!(
        updates[0].1.keys().collect::<Vec<_>>(),
        vec!["displayName", "jobTitle"]
    );
    assert!(created_ops(&ops).is_empty());
    // Nothing of the password is kept in the state.
    let link = s.link(ObjectKind::User, "u-ann").await.unwrap();
    let stored = serde_json::to_string(&link).unwrap();
    assert!(!stored.contains(generated), "the password is not stored");
    assert!(!stored.contains("password"), "{stored}");
}

#[tokio::test]
async fn reset_password_default_forces_a_change_at_next_sign_in() {
    let mut s = Scenario::new("", "").await;
    set_custom_rule(&mut s, "", "", str::to_owned).await;
    assert!(
        s.rule.force_change_password,
        "reset_password defaults to true"
    );
    s.write_source(&[user("u-ann", "ann", json!({}))], &[]);
    let (_, ops) = sync_recorded(&s).await;
    let creates = created_ops(&ops);
    assert_eq!(creates.len(), 1);
    assert!(creates[0].2, "forceChangePasswordNextSignIn");
    assert!(s.tenant_user(&upn("ann")).is_some());
}

#[tokio::test]
async fn reset_password_false_does_not_force_a_change_at_next_sign_in() {
    let mut s = Scenario::new("", "").await;
    // `extra` lands inside [rule.mapping.password].
    set_custom_rule(&mut s, "", "reset_password = false", str::to_owned).await;
    assert!(!s.rule.force_change_password);
    s.write_source(&[user("u-ann", "ann", json!({}))], &[]);
    let (_, ops) = sync_recorded(&s).await;
    let creates = created_ops(&ops);
    assert_eq!(creates.len(), 1);
    assert!(!creates[0].2, "forceChangePasswordNextSignIn");
    assert!(s.tenant_user(&upn("ann")).is_some());
}

#[tokio::test]
async fn mapped_password_too_weak_fails_only_that_user() {
    let mut s = Scenario::new("", "").await;
    set_custom_rule(&mut s, "", "", |r| {
        r.replace(
            "source = \"generate\"",
            "source = { mapped = \"{{ initialPassword }}\" }",
        )
    })
    .await;
    s.write_source(
        &[
            user(
                "u-ann",
                "ann",
                json!({"initialPassword": "Str0ng-Passw0rd!x"}),
            ),
            user("u-bob", "bob", json!({"initialPassword": "weak"})),
        ],
        &[],
    );
    let (outcome, ops) = sync_recorded(&s).await;

    assert_eq!(
        status(&outcome),
        RunStatus::PartiallyFailed,
        "{:?}",
        outcome.run
    );
    let creates = created_ops(&ops);
    assert_eq!(creates.len(), 1, "{ops:?}");
    assert_eq!(creates[0].0["userPrincipalName"], upn("ann"));
    assert_eq!(creates[0].1.expose_secret(), "Str0ng-Passw0rd!x");
    assert!(s.tenant_user(&upn("ann")).is_some());
    assert!(s.tenant_user(&upn("bob")).is_none());
    assert!(s.link(ObjectKind::User, "u-bob").await.is_none());

    let errors = s.errors().await;
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0].source_id, "u-bob");
    assert!(errors[0].message.contains("u-bob"), "{}", errors[0].message);
    assert!(
        errors[0].message.contains("password"),
        "{}",
        errors[0].message
    );
    assert!(
        !errors[0].message.contains("weak"),
        "never shows the password: {}",
        errors[0].message
    );
}

#[tokio::test]
async fn secret_password_source_creates_users_with_the_secret_store_default() {
    let mut s = Scenario::new("", "").await;
    set_custom_rule(&mut s, "", "", |r| {
        r.replace(
            "source = \"generate\"",
            "source = { secret = \"default_password\" }",
        )
    })
    .await;
    s.write_source(
        &[
            user("u-ann", "ann", json!({})),
            user("u-bob", "bob", json!({})),
        ],
        &[],
    );
    let (outcome, ops) = sync_recorded(&s).await;
    assert_eq!(status(&outcome), RunStatus::Succeeded, "{:?}", outcome.run);
    let creates = created_ops(&ops);
    assert_eq!(creates.len(), 2);
    for (_, password, force) in creates {
        assert_eq!(password.expose_secret(), "Default-Passw0rd!");
        assert!(force);
    }
    assert!(s.tenant_user(&upn("ann")).is_some());
    assert!(s.tenant_user(&upn("bob")).is_some());
}

// ---------------------------------------------------------------------------------------------
// Per-object failures

#[tokio::test]
async fn per_user_mapping_error_names_user_and_property_and_others_are_created() {
    let s = Scenario::new("", "").await;
    s.write_source(
        &[
            user("u-ann", "ann", json!({})),
            user("u-bob", "bob", json!({"usageLocation": "XX"})),
            user("u-carl", "carl", json!({"mail": "carl smith@example.com"})),
        ],
        &[],
    );
    let from = log_len(&s);
    let outcome = s.sync().await;

    assert_eq!(
        status(&outcome),
        RunStatus::PartiallyFailed,
        "{:?}",
        outcome.run
    );
    assert_eq!(writes_since(&s, from), vec!["POST /users".to_owned()]);
    assert!(s.tenant_user(&upn("ann")).is_some());
    assert!(s.link(ObjectKind::User, "u-bob").await.is_none());
    assert!(s.link(ObjectKind::User, "u-carl").await.is_none());

    let errors = s.errors().await;
    let bob = errors
        .iter()
        .find(|e| e.source_id == "u-bob")
        .expect("bob's error");
    assert!(bob.message.contains("u-bob"), "{}", bob.message);
    assert!(bob.message.contains("usageLocation"), "{}", bob.message);
    assert!(bob.message.contains("\"XX\""), "{}", bob.message);
    let carl = errors
        .iter()
        .find(|e| e.source_id == "u-carl")
        .expect("carl's error");
    assert!(carl.message.contains("u-carl"), "{}", carl.message);
    assert!(
        carl.message.contains("userPrincipalName"),
        "{}",
        carl.message
    );
    assert_eq!(errors.len(), 2, "{errors:?}");
}

#[tokio::test]
async fn graph_refusal_is_recorded_with_backoff_and_skipped_by_an_immediate_rerun() {
    let s = Scenario::new("remove_action = \"delete\"", "").await;
    // dana was deleted by a deprovision, and another account took her UPN since: Graph refuses
    // to restore her over it.
    s.write_source(
        &[
            user("u-ann", "ann", json!({})),
            user("u-dana", "dana", json!({})),
        ],
        &[],
    );
    s.sync().await;
    s.write_source(&[user("u-ann", "ann", json!({}))], &[]);
    s.sync().await;
    assert!(s.tenant_user(&upn("dana")).is_none());
    let newcomer = s.sandbox.sandbox().seed_user(json!({
        "userPrincipalName": upn("dana"),
        "mailNickname": "dana2",
        "displayName": "Another Dana",
        "accountEnabled": true,
    }));

    s.write_source(
        &[
            user("u-ann", "ann", json!({})),
            user("u-dana", "dana", json!({})),
        ],
        &[],
    );
    let outcome = s.sync().await;
    let now = s.clock.now();

    assert_eq!(
        status(&outcome),
        RunStatus::PartiallyFailed,
        "{:?}",
        outcome.run
    );
    assert!(s.tenant_user(&upn("ann")).is_some(), "the others proceed");
    assert_eq!(
        s.tenant_user(&upn("dana")).expect("the newcomer")["id"],
        newcomer.as_str(),
        "untouched"
    );
    let kept = s.link(ObjectKind::User, "u-dana").await.expect("kept");
    assert!(kept.deleted_at.is_some(), "still deleted");
    let errors = s.errors().await;
    assert_eq!(errors.len(), 1, "{errors:?}");
    let error = &errors[0];
    assert_eq!(error.source_id, "u-dana");
    assert_eq!(error.operation, "restore user");
    assert!(error.message.contains(&kept.object_id), "{}", error.message);
    assert!(error.message.contains("permanently"), "{}", error.message);
    assert_eq!(error.attempts, 1);
    assert!(error.next_retry_at > now, "{error:?}");
    assert!(
        error.message.contains("userPrincipalName"),
        "{}",
        error.message
    );

    // An immediate rerun waits for the retry time: no request for dana at all.
    let writes = s.tenant_writes();
    let from = log_len(&s);
    let outcome = s.sync().await;
    assert!(
        requests_since(&s, from).is_empty(),
        "{:?}",
        requests_since(&s, from)
    );
    assert_eq!(s.tenant_writes(), writes);
    assert!(outcome.plan.steps.is_empty(), "{:?}", outcome.plan.steps);
    let errors = s.errors().await;
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0].attempts, 1, "not retried");
    assert_eq!(errors[0].next_retry_at, error.next_retry_at);
    // ann, linked and in the source, is of course untouched; dana is not swept either.
    assert!(s.link(ObjectKind::User, "u-ann").await.is_some());
}
