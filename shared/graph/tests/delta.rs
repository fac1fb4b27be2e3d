//! `Directory::read_changes` on `GraphDirectory` against the sandbox tenant's `/users/delta` and
//! `/groups/delta` (docs/graph-behaviour.md#delta-queries): full rounds paged to a deltaLink,
//! changes with their removals and links, one request per collection when nothing changed, and
//! expired or reset tokens restarting a full round once.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "integration tests fail loudly"
)]

use std::collections::BTreeMap;
use std::time::Duration;

use m365_core::directory::{ChangesRequest, ObservedObject, Removal, TenantChanges, TenantCursor};
use m365_core::{Directory, DirectoryOp, FailureKind, GroupKind, OpOutcome};
use m365_graph::{
    ClientCredential, Credentials, GraphClient, GraphDirectory, GraphSettings, PacingConfig,
    RetryPolicy, SharedState,
};
use m365_sandbox::{FaultRule, FaultStatus, Knobs, LoggedRequest, RunningSandbox, Sandbox, demo};
use secrecy::SecretString;
use serde_json::{Value, json};

const USER_SELECT: &[&str] = &["displayName", "department", "manager"];
const GROUP_SELECT: &[&str] = &["displayName", "members"];

struct Tenant {
    sb: RunningSandbox,
    dir: GraphDirectory,
}

async fn tenant() -> Tenant {
    let sb = Sandbox::demo().start().await.expect("sandbox starts");
    let settings = GraphSettings {
        login_url: Some(sb.login_url()),
        graph_url: Some(sb.graph_url()),
        request_timeout: Duration::from_secs(10),
        max_attempts: 10,
        pacing: PacingConfig::disabled(),
        replication_retry: RetryPolicy::fast(10, Duration::from_millis(25)),
        transient_retry: RetryPolicy::fast(5, Duration::from_millis(10)),
        ..GraphSettings::default()
    };
    let credentials = Credentials {
        tenant: demo::TENANT_ID.to_string(),
        client_id: demo::CLIENT_ID.to_string(),
        credential: ClientCredential::Secret(SecretString::from(demo::CLIENT_SECRET.to_string())),
    };
    let client = GraphClient::with_shared(settings, credentials, SharedState::isolated())
        .expect("client builds");
    Tenant {
        sb,
        dir: GraphDirectory::new(client),
    }
}

impl Tenant {
    fn knobs(&self, change: impl FnOnce(&mut Knobs)) {
        let mut knobs = self.sb.sandbox().knobs();
        change(&mut knobs);
        self.sb.sandbox().set_knobs(knobs);
    }

    async fn apply(&self, ops: Vec<DirectoryOp>) -> Vec<OpOutcome> {
        self.dir
            .apply(ops)
            .await
            .into_iter()
            .map(|r| r.expect("the write succeeds"))
            .collect()
    }

    async fn create_user(&self, alias: &str, extra: Value) -> String {
        let mut properties: BTreeMap<String, Value> = [
            ("accountEnabled", json!(true)),
            ("displayName", json!(format!("Delta {alias}"))),
            ("mailNickname", json!(alias)),
            (
                "userPrincipalName",
                json!(format!("{alias}@{}", demo::VERIFIED_DOMAIN)),
            ),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        if let Value::Object(extra) = extra {
            properties.extend(extra);
        }
        let op = DirectoryOp::CreateUser {
            properties,
            password: SecretString::from("Delta-Passw0rd!-sandbox".to_string()),
            force_change_password: true,
        };
        created(&self.apply(vec![op]).await[0])
    }

    async fn create_group(&self, name: &str, members: &[String]) -> String {
        let op = DirectoryOp::CreateGroup {
            display_name: name.into(),
            mail_nickname: name.into(),
            kind: GroupKind::Security,
            description: None,
            earlier_attempt: None,
        };
        let id = created(&self.apply(vec![op]).await[0]);
        if !members.is_empty() {
            self.apply(vec![DirectoryOp::AddMembers {
                group_id: id.clone(),
                member_ids: members.to_vec(),
            }])
            .await;
        }
        id
    }

    async fn read(
        &self,
        user_select: &[&str],
        group_select: &[&str],
        from: Option<TenantCursor>,
    ) -> TenantChanges {
        self.dir
            .read_changes(request(user_select, group_select, from))
            .await
            .expect("the changes are read")
    }

    fn live_users(&self) -> Vec<String> {
        sorted(
            self.sb
                .sandbox()
                .users()
                .iter()
                .map(|u| u["id"].as_str().unwrap().to_owned()),
        )
    }

    fn live_groups(&self) -> Vec<String> {
        sorted(
            self.sb
                .sandbox()
                .groups()
                .iter()
                .map(|g| g["id"].as_str().unwrap().to_owned()),
        )
    }

    /// The delta requests the sandbox answered since the log held `from` entries.
    fn delta_requests(&self, from: usize) -> Vec<LoggedRequest> {
        self.sb.sandbox().request_log()[from..]
            .iter()
            .filter(|r| r.path.contains("/delta"))
            .cloned()
            .collect()
    }

    fn log_len(&self) -> usize {
        self.sb.sandbox().request_log().len()
    }

    fn requests(&self) -> u64 {
        self.dir.counters().requests
    }
}

fn created(outcome: &OpOutcome) -> String {
    match outcome {
        OpOutcome::Created { id } => id.clone(),
        other => panic!("not a create: {other:?}"),
    }
}

fn request(
    user_select: &[&str],
    group_select: &[&str],
    from: Option<TenantCursor>,
) -> ChangesRequest {
    ChangesRequest {
        user_select: user_select.iter().map(|s| s.to_string()).collect(),
        group_select: group_select.iter().map(|s| s.to_string()).collect(),
        from,
    }
}

fn sorted(ids: impl Iterator<Item = String>) -> Vec<String> {
    let mut ids: Vec<String> = ids.collect();
    ids.sort();
    ids
}

fn ids(objects: &[ObservedObject]) -> Vec<String> {
    sorted(objects.iter().map(|o| o.id.clone()))
}

fn find<'a>(objects: &'a [ObservedObject], id: &str) -> &'a ObservedObject {
    objects
        .iter()
        .find(|o| o.id == id)
        .unwrap_or_else(|| panic!("{id} not in {objects:#?}"))
}

fn links(pairs: &[(&String, bool)]) -> BTreeMap<String, bool> {
    pairs
        .iter()
        .map(|(id, linked)| ((*id).clone(), *linked))
        .collect()
}

#[tokio::test]
async fn a_full_round_pages_through_every_user_once_with_the_selected_properties() {
    let t = tenant().await;
    t.knobs(|k| k.delta.page_size = 2);
    let boss = t
        .create_user("delta-boss", json!({"department": "Sales"}))
        .await;
    let worker = t.create_user("delta-worker", json!({})).await;
    t.create_user("delta-third", json!({})).await;
    t.apply(vec![DirectoryOp::SetManager {
        id: worker.clone(),
        manager_id: boss.clone(),
    }])
    .await;
    let (log, requests) = (t.log_len(), t.requests());

    let changes = t.read(USER_SELECT, &[], None).await;
    assert!(changes.full && changes.restarted.is_none(), "{changes:?}");
    assert_eq!(ids(&changes.users), t.live_users(), "every user, each once");
    assert_eq!(changes.users.len(), 5);
    assert!(changes.groups.is_empty() && changes.cursor.groups.is_none());
    assert!(
        changes
            .cursor
            .users
            .as_deref()
            .unwrap()
            .contains("$deltatoken=")
    );

    let b = find(&changes.users, &boss);
    assert_eq!(b.removed, None);
    assert_eq!(
        b.properties,
        BTreeMap::from([
            ("displayName".to_string(), json!("Delta delta-boss")),
            ("department".to_string(), json!("Sales")),
        ]),
        "the selected properties only"
    );
    assert!(b.links.is_empty());
    assert_eq!(find(&changes.users, &worker).links, links(&[(&boss, true)]));

    // Five users over pages of two: three pages, the options in the first request only.
    let pages = t.delta_requests(log);
    assert_eq!(pages.len(), 3, "{pages:#?}");
    assert!(
        pages[0]
            .path
            .starts_with("/v1.0/users/delta?$select=displayName,department,manager")
    );
    assert!(
        pages[1..]
            .iter()
            .all(|p| p.path.contains("$skiptoken=") && !p.path.contains("$select"))
    );
    assert_eq!(t.requests() - requests, 3);
}

#[tokio::test]
async fn a_throttled_page_is_sent_again_after_retry_after() {
    let t = tenant().await;
    t.knobs(|k| k.delta.page_size = 1);
    t.sb.sandbox().add_fault(FaultRule {
        count: 2,
        retry_after: Some(0.05),
        ..FaultRule::new("GET", "/users/delta", FaultStatus::Status(429))
    });
    let log = t.log_len();
    let changes = t.read(USER_SELECT, &[], None).await;
    assert_eq!(ids(&changes.users), t.live_users());
    let statuses: Vec<u16> = t.delta_requests(log).iter().map(|r| r.status).collect();
    assert_eq!(statuses, vec![429, 429, 200, 200]);
    let stats = t.dir.client().stats();
    assert_eq!((stats.throttled, stats.retries), (2, 2));
}

#[tokio::test]
async fn changes_since_the_cursor_come_with_their_fields_removals_and_links() {
    let t = tenant().await;
    let a = t
        .create_user("delta-a", json!({"department": "Sales"}))
        .await;
    let b = t.create_user("delta-b", json!({})).await;
    let c = t.create_user("delta-c", json!({})).await;
    let d = t.create_user("delta-d", json!({})).await;
    let g = t.create_group("delta-group", &[a.clone(), b.clone()]).await;
    let first = t.read(USER_SELECT, GROUP_SELECT, None).await;
    assert!(first.full);
    assert_eq!(ids(&first.groups), t.live_groups());
    assert_eq!(
        find(&first.groups, &g).links,
        links(&[(&a, true), (&b, true)])
    );

    let patch = BTreeMap::from([("department".to_string(), json!("Legal"))]);
    t.apply(vec![
        DirectoryOp::UpdateUser {
            id: a.clone(),
            properties: patch,
        },
        DirectoryOp::SetManager {
            id: c.clone(),
            manager_id: a.clone(),
        },
        DirectoryOp::AddMembers {
            group_id: g.clone(),
            member_ids: vec![c.clone()],
        },
        DirectoryOp::RemoveMember {
            group_id: g.clone(),
            member_id: a.clone(),
        },
        DirectoryOp::DeleteUser { id: d.clone() },
        DirectoryOp::DeleteUser { id: b.clone() },
    ])
    .await;
    // Purged: gone for good, and out of its group.
    t.dir.client().permanently_delete_item(&b).await.unwrap();

    let changes = t
        .read(USER_SELECT, GROUP_SELECT, Some(first.cursor.clone()))
        .await;
    assert!(!changes.full && changes.restarted.is_none(), "{changes:?}");
    assert_eq!(
        ids(&changes.users),
        sorted([&a, &b, &c, &d].into_iter().cloned())
    );
    let patched = find(&changes.users, &a);
    assert_eq!(patched.properties["department"], "Legal");
    assert_eq!(
        patched.properties["displayName"], "Delta delta-a",
        "every selected property"
    );
    assert_eq!(patched.removed, None);
    assert_eq!(find(&changes.users, &c).links, links(&[(&a, true)]));
    let soft = find(&changes.users, &d);
    assert_eq!(
        (soft.removed, soft.properties.len()),
        (Some(Removal::Restorable), 0)
    );
    assert_eq!(find(&changes.users, &b).removed, Some(Removal::Permanent));

    assert_eq!(ids(&changes.groups), vec![g.clone()]);
    let group = find(&changes.groups, &g);
    assert_eq!(group.removed, None);
    assert_eq!(group.links, links(&[(&a, false), (&b, false), (&c, true)]));
    let (users, groups) = (
        changes.cursor.users.unwrap(),
        changes.cursor.groups.unwrap(),
    );
    assert_ne!(Some(&users), first.cursor.users.as_ref());
    assert!(groups.contains("/groups/delta?$deltatoken="), "{groups}");
}

#[tokio::test]
async fn a_read_without_changes_returns_nothing_in_one_request_per_collection() {
    let t = tenant().await;
    let first = t.read(USER_SELECT, GROUP_SELECT, None).await;
    let (log, requests) = (t.log_len(), t.requests());

    let changes = t
        .read(USER_SELECT, GROUP_SELECT, Some(first.cursor.clone()))
        .await;
    assert!(!changes.full && changes.restarted.is_none());
    assert!(
        changes.users.is_empty() && changes.groups.is_empty(),
        "{changes:?}"
    );
    assert_eq!(t.requests() - requests, 2, "one request per collection");
    let sent = sorted(t.delta_requests(log).into_iter().map(|r| r.path));
    let stored = sorted(
        [first.cursor.users.unwrap(), first.cursor.groups.unwrap()]
            .into_iter()
            .map(|link| format!("/v1.0{link}")),
    );
    assert_eq!(
        sent, stored,
        "the stored deltaLinks, relative to the version root, sent as they are"
    );

    // No users link: users read in full, groups continued.
    let cursor = TenantCursor {
        users: None,
        groups: changes.cursor.groups.clone(),
    };
    let changes = t.read(USER_SELECT, GROUP_SELECT, Some(cursor)).await;
    assert!(changes.full && changes.restarted.is_none(), "{changes:?}");
    assert_eq!(ids(&changes.users), t.live_users());
    assert!(changes.groups.is_empty());
    assert!(changes.cursor.users.is_some() && changes.cursor.groups.is_some());
}

#[tokio::test]
async fn an_expired_token_restarts_a_full_round_once() {
    let t = tenant().await;
    let first = t.read(USER_SELECT, GROUP_SELECT, None).await;
    t.knobs(|k| k.delta.token_lifetime_secs = 0);
    let log = t.log_len();

    let changes = t
        .read(USER_SELECT, GROUP_SELECT, Some(first.cursor.clone()))
        .await;
    assert!(changes.full, "{changes:?}");
    assert_eq!(
        changes.restarted.as_deref(),
        Some(
            "the users delta token expired (syncStateNotFound); read every user again; \
             the groups delta token expired (syncStateNotFound); read every group again"
        )
    );
    assert_eq!(ids(&changes.users), t.live_users());
    assert_eq!(ids(&changes.groups), t.live_groups());
    let mut statuses: Vec<u16> = t.delta_requests(log).iter().map(|r| r.status).collect();
    statuses.sort();
    assert_eq!(
        statuses,
        vec![200, 200, 400, 400],
        "one refusal and one round each"
    );

    // Never a loop: when the new round's next page is refused too, the read fails.
    t.knobs(|k| k.delta.page_size = 1);
    let log = t.log_len();
    let e = t
        .dir
        .read_changes(request(USER_SELECT, &[], Some(first.cursor.clone())))
        .await
        .unwrap_err();
    assert_eq!(e.kind, FailureKind::Other);
    assert!(e.message.contains("syncStateNotFound"), "{}", e.message);
    let statuses: Vec<u16> = t.delta_requests(log).iter().map(|r| r.status).collect();
    assert_eq!(statuses, vec![400, 200, 400]);
}

#[tokio::test]
async fn a_sync_reset_or_a_link_to_another_host_restarts_a_full_round() {
    let t = tenant().await;
    let first = t.read(USER_SELECT, GROUP_SELECT, None).await;
    t.knobs(|k| k.delta.reset_generation += 1);
    let log = t.log_len();

    let changes = t.read(USER_SELECT, &[], Some(first.cursor.clone())).await;
    assert!(changes.full);
    assert_eq!(
        changes.restarted.as_deref(),
        Some(
            "the users delta token was reset by Graph (410 Gone, resyncRequired); read every user again"
        )
    );
    assert_eq!(ids(&changes.users), t.live_users());
    assert!(changes.cursor.groups.is_none(), "groups not read");
    let statuses: Vec<u16> = t.delta_requests(log).iter().map(|r| r.status).collect();
    assert_eq!(statuses, vec![410, 200]);

    // The new link works as any.
    let again = t.read(USER_SELECT, &[], Some(changes.cursor)).await;
    assert!(!again.full && again.users.is_empty() && again.restarted.is_none());

    // A link on another host is never sent there.
    let log = t.log_len();
    let elsewhere = TenantCursor {
        users: Some("https://graph.example.org/v1.0/users/delta?$deltatoken=abc".into()),
        groups: None,
    };
    let changes = t.read(USER_SELECT, &[], Some(elsewhere)).await;
    assert!(changes.full);
    assert!(changes.restarted.unwrap().contains("another Graph host"));
    assert_eq!(t.delta_requests(log).len(), 1, "the new round only");
}

#[tokio::test]
async fn a_large_group_split_across_pages_is_one_object_with_every_member() {
    let t = tenant().await;
    t.knobs(|k| k.delta.page_size = 2);
    let mut members = Vec::new();
    for n in 0..5 {
        members.push(t.create_user(&format!("delta-m{n}"), json!({})).await);
    }
    let g = t.create_group("delta-large", &members).await;
    let log = t.log_len();

    let first = t.read(&[], GROUP_SELECT, None).await;
    assert_eq!(ids(&first.groups), t.live_groups(), "each group once");
    let group = find(&first.groups, &g);
    assert_eq!(group.properties["displayName"], "delta-large");
    let every: Vec<(&String, bool)> = members.iter().map(|m| (m, true)).collect();
    assert_eq!(group.links, links(&every));
    // Two groups would fit one page of two; the large one comes as three slices, so two pages.
    assert_eq!(t.live_groups().len(), 2);
    assert_eq!(t.delta_requests(log).len(), 2, "the group spans pages");
    assert!(first.users.is_empty() && first.cursor.users.is_none());

    // Changes to many members are split too, and merged again.
    let mut more = Vec::new();
    for n in 0..3 {
        more.push(t.create_user(&format!("delta-n{n}"), json!({})).await);
    }
    t.apply(vec![
        DirectoryOp::AddMembers {
            group_id: g.clone(),
            member_ids: more.clone(),
        },
        DirectoryOp::RemoveMember {
            group_id: g.clone(),
            member_id: members[0].clone(),
        },
    ])
    .await;
    let changes = t.read(&[], GROUP_SELECT, Some(first.cursor)).await;
    assert_eq!(ids(&changes.groups), vec![g.clone()]);
    let mut expected: Vec<(&String, bool)> = more.iter().map(|m| (m, true)).collect();
    expected.push((&members[0], false));
    assert_eq!(find(&changes.groups, &g).links, links(&expected));
}
