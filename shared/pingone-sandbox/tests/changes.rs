//! The PingOne stand-in over HTTP, after changes: audit activities, a user's groups, webhook
//! delivery, and the generated environment.

// Integration tests: helpers panic on broken expectations.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use m365_pingone_sandbox::{
    ActionType, GroupSeed, PingOneSandbox, PingOneSandboxError, Seed, Subscription, UserSeed, demo,
    generated,
};
use serde_json::Value;

struct T {
    p1: PingOneSandbox,
    http: reqwest::Client,
    token: String,
}

struct Resp {
    status: u16,
    body: Value,
}

async fn start_with(seed: Seed) -> T {
    let p1 = PingOneSandbox::start(seed).await.unwrap();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let r = http
        .post(p1.token_url())
        .basic_auth(demo::BASIC_CLIENT_ID, Some(demo::BASIC_CLIENT_SECRET))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap();
    let body: Value = r.json().await.unwrap();
    let token = body["access_token"].as_str().unwrap().to_owned();
    T { p1, http, token }
}

impl T {
    fn url(&self, path: &str) -> String {
        if path.starts_with("http") {
            path.to_owned()
        } else {
            format!(
                "{}/v1/environments/{}{path}",
                self.p1.url(),
                self.p1.environment_id()
            )
        }
    }

    async fn get(&self, path: &str, query: &[(&str, &str)]) -> Resp {
        let r = self
            .http
            .get(self.url(path))
            .bearer_auth(&self.token)
            .query(query)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        let text = r.text().await.unwrap();
        let body = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
        Resp { status, body }
    }

    /// Every item of a collection, following `_links.next`; also the page sizes.
    async fn all(&self, path: &str, query: &[(&str, &str)], key: &str) -> (Vec<Value>, Vec<usize>) {
        let mut r = self.get(path, query).await;
        let (mut items, mut sizes) = (Vec::new(), Vec::new());
        loop {
            assert_eq!(r.status, 200, "{}", r.body);
            let page = r.body["_embedded"][key].as_array().unwrap().clone();
            assert_eq!(r.body["size"], page.len());
            sizes.push(page.len());
            items.extend(page);
            match r.body["_links"]["next"]["href"].as_str() {
                Some(next) => r = self.get(next, &[]).await,
                None => return (items, sizes),
            }
        }
    }
}

fn strs(list: &[Value], pointer: &str) -> Vec<String> {
    list.iter()
        .map(|v| {
            v.pointer(pointer)
                .and_then(Value::as_str)
                .unwrap()
                .to_owned()
        })
        .collect()
}

fn assert_invalid_filter(r: &Resp, needle: &str) {
    assert_eq!(r.status, 400, "{}", r.body);
    assert_eq!(r.body["code"], "INVALID_DATA");
    assert_eq!(r.body["details"][0]["code"], "INVALID_FILTER", "{}", r.body);
    assert_eq!(r.body["details"][0]["target"], "filter");
    let message = r.body["details"][0]["message"].as_str().unwrap();
    assert!(message.contains(needle), "{message}");
}

const SINCE_2000: &str = "recordedat gt \"2000-01-01T00:00:00Z\"";

#[tokio::test]
async fn every_change_records_one_activity() {
    let t = start_with(Seed::demo()).await;
    assert!(t.p1.activities().is_empty(), "seeded data records nothing");
    let p1 = &t.p1;
    let frank = p1.add_user(UserSeed::new("frank", demo::POPULATION_STAFF));
    p1.update_user(&frank, |u| u.email = "frank@example.org".to_owned())
        .unwrap();
    let sre = p1.add_group(GroupSeed::new("SRE")).unwrap();
    p1.update_group(&sre, |g| g.description = Some("On call".to_owned()))
        .unwrap();
    p1.add_member(&sre, &frank).unwrap();
    p1.add_member(&sre, &frank).unwrap(); // already a member: no change, no record
    p1.nest_group(demo::PLATFORM_ID, &sre).unwrap();
    p1.unnest_group(demo::PLATFORM_ID, &sre).unwrap();
    p1.remove_member(&sre, &frank).unwrap();
    assert!(matches!(
        p1.remove_member(&sre, &frank),
        Err(PingOneSandboxError::NotAMember { .. })
    ));
    p1.delete_group(&sre).unwrap();
    p1.delete_user(&frank).unwrap();
    assert!(p1.update_group(&sre, |_| {}).is_err());

    let records = p1.activities();
    let types: Vec<String> = strs(&records, "/action/type");
    assert_eq!(
        types,
        [
            "USER.CREATED",
            "USER.UPDATED",
            "GROUP.CREATED",
            "GROUP.UPDATED",
            "MEMBER_OF_GROUP.CREATED",
            "GROUP.UPDATED",
            "GROUP.UPDATED",
            "MEMBER_OF_GROUP.DELETED",
            "GROUP.DELETED",
            "USER.DELETED",
        ]
    );
    let env = demo::ENVIRONMENT_ID;
    let base = format!("{}/v1/environments/{env}", p1.url());
    for r in &records {
        uuid::Uuid::parse_str(r["id"].as_str().unwrap()).unwrap();
        uuid::Uuid::parse_str(r["correlationId"].as_str().unwrap()).unwrap();
        assert_eq!(r["result"]["status"], "SUCCESS");
        assert_eq!(r["actors"]["client"]["type"], "CLIENT");
        assert_eq!(r["actors"]["client"]["id"], demo::BASIC_CLIENT_ID);
        assert_eq!(r["actors"]["client"]["environment"]["id"], env);
        assert_eq!(r["resources"].as_array().unwrap().len(), 1);
        assert_eq!(r["resources"][0]["environment"]["id"], env);
        let at = r["recordedAt"].as_str().unwrap();
        assert_eq!(at.len(), "2026-12-05T11:33:16.123Z".len(), "{at}");
        assert!(at.ends_with('Z') && at.as_bytes()[19] == b'.', "{at}");
    }
    let at = strs(&records, "/recordedAt");
    assert!(at.windows(2).all(|w| w[0] < w[1]), "{at:?}");

    let deleted = &records[9]["resources"][0];
    assert_eq!(deleted["type"], "USER");
    assert_eq!(deleted["id"], frank.as_str());
    assert_eq!(deleted["name"], "frank");
    assert_eq!(deleted["population"]["id"], demo::POPULATION_STAFF);
    assert_eq!(deleted["href"], format!("{base}/users/{frank}"));
    assert_eq!(
        records[1]["_embedded"]["modifiedAttributes"],
        serde_json::json!(["email"])
    );
    assert_eq!(
        records[1]["result"]["description"],
        "Updated email for User frank"
    );
    let member = &records[4]["resources"][0];
    assert_eq!(member["type"], "MEMBER_OF_GROUP");
    assert_eq!(
        (&member["id"], &member["name"]),
        (&Value::from(sre.as_str()), &Value::from("SRE"))
    );
    assert_eq!(
        member["href"],
        format!("{base}/users/{frank}/memberOfGroups/{sre}")
    );
    assert!(member.get("population").is_none());
    let group = &records[5]["resources"][0];
    assert_eq!(group["type"], "GROUP");
    assert_eq!(group["href"], format!("{base}/groups/{sre}"));
    assert_eq!(records[8]["resources"][0]["name"], "SRE");
}

#[tokio::test]
async fn activities_page_oldest_first_and_resume_after_recorded_at() {
    let t = start_with(Seed::demo()).await;
    for i in 0..250 {
        t.p1.add_user(UserSeed::new(&format!("u{i:03}"), demo::POPULATION_STAFF));
    }
    let recorded = t.p1.activities();
    let (items, sizes) = t
        .all("/activities", &[("filter", SINCE_2000)], "activities")
        .await;
    assert_eq!(sizes, [100, 100, 50], "100 a page without limit");
    assert_eq!(strs(&items, "/id"), strs(&recorded, "/id"));
    let first = &items[0];
    assert_eq!(
        first["_links"]["self"]["href"],
        t.url(&format!("/activities/{}", first["id"].as_str().unwrap()))
    );
    let (_, sizes) = t
        .all(
            "/activities",
            &[("filter", SINCE_2000), ("limit", "1000")],
            "activities",
        )
        .await;
    assert_eq!(sizes, [250]);

    // A poller resuming after the last recordedAt it saw gets exactly the rest.
    let cut = recorded[119]["recordedAt"].as_str().unwrap();
    let since = format!("recordedat gt \"{cut}\"");
    let (rest, _) = t
        .all("/activities", &[("filter", &since)], "activities")
        .await;
    assert_eq!(strs(&rest, "/id"), strs(&recorded[120..], "/id"));
    let until = format!("recordedat ge \"{cut}\" AND recordedAt le \"{cut}\"");
    let (one, _) = t
        .all("/activities", &[("filter", &until)], "activities")
        .await;
    assert_eq!(strs(&one, "/id"), [recorded[119]["id"].as_str().unwrap()]);

    let r = t
        .get(
            &format!("/activities/{}", recorded[3]["id"].as_str().unwrap()),
            &[],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["resources"][0]["name"], "u003");
    // 3 + 1 + 2 + 1 pages and one read above: the counter sees every one.
    assert_eq!(t.p1.counters().activities_requests, 8);
    assert_eq!(t.p1.counters().v1_requests, 8);
}

#[tokio::test]
async fn activity_filters() {
    let t = start_with(Seed::demo()).await;
    let frank =
        t.p1.add_user(UserSeed::new("frank", demo::POPULATION_STAFF));
    t.p1.add_member(demo::ENGINEERING_ID, &frank).unwrap();
    t.p1.add_member(demo::PLATFORM_ID, demo::ALICE_ID).unwrap();
    t.p1.update_user(demo::BOB_ID, |u| u.enabled = false)
        .unwrap();
    let types = |items: &[Value]| strs(items, "/action/type").join(",");
    for (filter, want) in [
        (
            format!("{SINCE_2000} and action.type eq \"MEMBER_OF_GROUP.CREATED\""),
            "MEMBER_OF_GROUP.CREATED,MEMBER_OF_GROUP.CREATED",
        ),
        (
            format!("{SINCE_2000} and resources.id eq \"{frank}\""),
            "USER.CREATED",
        ),
        (
            format!("{SINCE_2000} and resources.type eq \"USER\""),
            "USER.CREATED,USER.UPDATED",
        ),
        (
            format!(
                "{SINCE_2000} and (action.type eq \"USER.UPDATED\" or resources.id eq \"{}\")",
                demo::PLATFORM_ID
            ),
            "MEMBER_OF_GROUP.CREATED,USER.UPDATED",
        ),
        ("recordedat lt \"2000-01-01T00:00:00Z\"".to_owned(), ""),
    ] {
        let (items, _) = t
            .all("/activities", &[("filter", &filter)], "activities")
            .await;
        assert_eq!(types(&items), want, "{filter}");
    }
    // PingOne asks for a time range: no filter, or none bounding recordedat, is refused.
    let r = t.get("/activities", &[]).await;
    assert_invalid_filter(&r, "recordedat");
    let unbounded = "action.type eq \"USER.CREATED\" or recordedat gt \"2000-01-01T00:00:00Z\"";
    for (filter, needle) in [
        ("action.type eq \"USER.CREATED\"", "recordedat"),
        (unbounded, "recordedat"),
        ("recordedat gt \"yesterday\"", "ISO-8601"),
        ("username eq \"bob\"", "'username' cannot be filtered"),
        ("action.type sw \"USER\"", "cannot be filtered with 'sw'"),
        (
            "recordedat ne \"2000-01-01T00:00:00Z\"",
            "'ne' is not supported",
        ),
    ] {
        let r = t.get("/activities", &[("filter", filter)]).await;
        assert_invalid_filter(&r, needle);
    }
    let r = t
        .get("/activities", &[("filter", SINCE_2000), ("limit", "1001")])
        .await;
    assert_eq!(
        (r.status, &r.body["details"][0]["target"]),
        (400, &Value::from("limit"))
    );
}

#[tokio::test]
async fn a_users_groups_direct_indirect_and_dynamic() {
    let t = start_with(Seed::demo()).await;
    let path = format!("/users/{}/memberOfGroups", demo::CAROL_ID);
    let r = t.get(&path, &[]).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let list = r.body["_embedded"]["groupMemberships"].as_array().unwrap();
    assert_eq!(strs(list, "/name"), ["Engineering", "Platform"]);
    assert_eq!(strs(list, "/type"), ["INDIRECT", "DIRECT"]);
    assert_eq!(strs(list, "/id"), [demo::ENGINEERING_ID, demo::PLATFORM_ID]);
    assert_eq!(list[0]["environment"]["id"], demo::ENVIRONMENT_ID);
    assert!(list[0].get("_embedded").is_none());

    // expand=group, paged by one: the next link keeps expand.
    let (items, sizes) = t
        .all(
            &path,
            &[("expand", "group"), ("limit", "1")],
            "groupMemberships",
        )
        .await;
    assert_eq!(sizes, [1, 1]);
    assert_eq!(
        strs(&items, "/_embedded/group/name"),
        ["Engineering", "Platform"]
    );
    assert_eq!(
        items[0]["_embedded"]["group"]["directMemberCounts"]["groups"],
        1
    );
    let r = t.get(&path, &[("filter", "type eq \"DIRECT\"")]).await;
    assert_eq!(
        strs(
            r.body["_embedded"]["groupMemberships"].as_array().unwrap(),
            "/name"
        ),
        ["Platform"]
    );

    // A dynamic group's member; a single-user read with include.
    let dave = format!("/users/{}", demo::DAVE_ID);
    let r = t.get(&format!("{dave}/memberOfGroups"), &[]).await;
    let list = r.body["_embedded"]["groupMemberships"].as_array().unwrap();
    assert_eq!(strs(list, "/id"), [demo::CONTRACTORS_ID]);
    assert_eq!(strs(list, "/type"), ["DIRECT"]);
    let r = t.get(&dave, &[("include", "memberOfGroupIDs")]).await;
    assert_eq!(
        r.body["memberOfGroupIDs"],
        serde_json::json!([demo::CONTRACTORS_ID])
    );
    assert!(r.body.get("memberOfGroupNames").is_none());
    let r = t
        .get(
            &format!("/users/{}", demo::CAROL_ID),
            &[("include", "memberOfGroupIDs")],
        )
        .await;
    assert_eq!(
        r.body["memberOfGroupIDs"],
        serde_json::json!([demo::ENGINEERING_ID, demo::PLATFORM_ID])
    );
    assert!(
        t.get(&dave, &[])
            .await
            .body
            .get("memberOfGroupIDs")
            .is_none()
    );

    let r = t
        .get(
            &format!("/users/{}/memberOfGroups", uuid::Uuid::new_v4()),
            &[],
        )
        .await;
    assert_eq!(
        (r.status, &r.body["code"]),
        (404, &Value::from("NOT_FOUND"))
    );
}

/// A local webhook receiver: records each POST, answers with scripted statuses (then 200).
#[derive(Clone, Default)]
struct Receiver {
    posts: Arc<Mutex<Vec<(HeaderMap, Value)>>>,
    script: Arc<Mutex<VecDeque<u16>>>,
}

async fn receive(State(rx): State<Receiver>, headers: HeaderMap, body: String) -> StatusCode {
    let body = serde_json::from_str(&body).unwrap_or(Value::Null);
    rx.posts.lock().unwrap().push((headers, body));
    let status = rx.script.lock().unwrap().pop_front().unwrap_or(200);
    StatusCode::from_u16(status).unwrap()
}

async fn receiver() -> (Receiver, String) {
    let rx = Receiver::default();
    let app = axum::Router::new()
        .route("/hook", axum::routing::post(receive))
        .with_state(rx.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (rx, url)
}

fn subscription(url: &str, types: &[ActionType]) -> Subscription {
    Subscription {
        url: url.to_owned(),
        headers: vec![(
            "Authorization".to_owned(),
            "Basic d2ViaG9vazpzM2NyM3Q=".to_owned(),
        )],
        included_action_types: types.iter().map(|t| t.as_str().to_owned()).collect(),
    }
}

#[tokio::test]
async fn webhooks_post_batches_of_500_and_retry_the_head_batch() {
    let t = start_with(Seed::demo()).await;
    let (rx, url) = receiver().await;
    let foreign = subscription("https://hooks.example.com/p1", &[ActionType::UserCreated]);
    assert!(matches!(
        t.p1.subscribe(foreign),
        Err(PingOneSandboxError::NotLocal(u)) if u.contains("example.com")
    ));
    t.p1.add_user(UserSeed::new("before", demo::POPULATION_STAFF));
    t.p1.subscribe(subscription(&url, &[ActionType::UserCreated]))
        .unwrap();
    for i in 0..1201 {
        t.p1.add_user(UserSeed::new(&format!("u{i:04}"), demo::POPULATION_STAFF));
    }
    t.p1.add_group(GroupSeed::new("not subscribed")).unwrap();
    assert_eq!(t.p1.pending_deliveries(), 1201);

    rx.script.lock().unwrap().extend([503]);
    assert_eq!(t.p1.deliver().await.unwrap(), [503]);
    assert_eq!(
        t.p1.pending_deliveries(),
        1201,
        "the refused batch stays queued"
    );
    assert_eq!(t.p1.deliver().await.unwrap(), [200, 200, 200]);
    assert_eq!(t.p1.pending_deliveries(), 0);
    assert_eq!(t.p1.deliver().await.unwrap(), Vec::<u16>::new());

    let posts = rx.posts.lock().unwrap().clone();
    let sizes: Vec<usize> = posts
        .iter()
        .map(|(_, b)| b.as_array().unwrap().len())
        .collect();
    assert_eq!(sizes, [500, 500, 500, 201]);
    assert_eq!(posts[0].1, posts[1].1, "the same head batch again");
    for (headers, _) in &posts {
        assert_eq!(headers["content-type"], "application/json");
        assert_eq!(headers["authorization"], "Basic d2ViaG9vazpzM2NyM3Q=");
    }
    let delivered: Vec<Value> = posts[1..]
        .iter()
        .flat_map(|(_, b)| b.as_array().unwrap().clone())
        .collect();
    let created: Vec<Value> = t.p1.activities()[1..1202].to_vec();
    assert_eq!(
        delivered, created,
        "the records as recorded, in order, without the first"
    );
    assert!(
        delivered
            .iter()
            .all(|r| r["action"]["type"] == "USER.CREATED")
    );
}

#[tokio::test]
async fn webhooks_to_a_closed_port_stay_queued_until_dropped() {
    let t = start_with(Seed::demo()).await;
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", closed.local_addr().unwrap());
    drop(closed);
    t.p1.subscribe(subscription(&url, &ActionType::ALL))
        .unwrap();
    t.p1.delete_user(demo::ERIN_ID).unwrap();
    t.p1.add_member(demo::PLATFORM_ID, demo::DAVE_ID).unwrap();
    assert_eq!(t.p1.pending_deliveries(), 2);
    assert_eq!(t.p1.deliver().await.unwrap(), [0]);
    assert_eq!(t.p1.pending_deliveries(), 2);
    t.p1.drop_pending();
    assert_eq!(t.p1.pending_deliveries(), 0);
    assert_eq!(t.p1.deliver().await.unwrap(), Vec::<u16>::new());
}

#[tokio::test]
async fn the_generated_environment() {
    assert_eq!(Seed::generated(200), Seed::generated(200), "deterministic");
    let t = start_with(Seed::generated(200)).await;
    assert!(t.p1.activities().is_empty());
    let (users, _) = t.all("/users", &[], "users").await;
    assert_eq!(users.len(), 200);
    assert_eq!(users[0]["username"], "user0001");
    assert_eq!(users[0]["id"], generated::user_id(0));
    assert_eq!(users[0]["email"], "user0001@example.com");
    assert!(users[0].get("managerId").is_none());
    assert_eq!(users[5]["managerId"], generated::user_id(0));
    assert_eq!(users[199]["managerId"], generated::user_id(38));
    let disabled = users.iter().filter(|u| u["enabled"] == false).count();
    assert_eq!(disabled, 20);
    assert_eq!(users[9]["enabled"], false);
    let pops: std::collections::BTreeSet<String> =
        strs(&users, "/population/id").into_iter().collect();
    assert_eq!(pops.len(), 3);
    assert!(pops.contains(&generated::population_id(2)));
    let givens: std::collections::BTreeSet<String> =
        strs(&users, "/name/given").into_iter().collect();
    assert!(givens.len() > 10, "{givens:?}");

    let (groups, _) = t.all("/groups", &[], "groups").await;
    assert_eq!(strs(&groups, "/name"), generated::GROUP_NAMES);
    assert_eq!(
        strs(&groups, "/id")[3],
        generated::group_id(generated::PAYMENTS)
    );
    let members = |g: usize| format!("memberOfGroups[id eq \"{}\"]", generated::group_id(g));
    let count = |r: Resp| r.body["count"].as_u64().unwrap();
    let contractors = t
        .get("/users", &[("filter", &members(generated::CONTRACTORS))])
        .await;
    assert_eq!(count(contractors), 10, "5 % of 200");
    let by_title = t
        .get("/users", &[("filter", "title eq \"Contractor\"")])
        .await;
    assert_eq!(count(by_title), 10);
    // Engineering: its own members (i % 7 == 0) and Platform's (i % 7 == 1).
    let eng = t
        .get("/users", &[("filter", &members(generated::ENGINEERING))])
        .await;
    assert_eq!(count(eng), 29 + 29);
    let admins = t
        .get("/users", &[("filter", &members(generated::ADMINS))])
        .await;
    assert_eq!(count(admins), 3);
    let alumni = t
        .get("/users", &[("filter", &members(generated::ALUMNI))])
        .await;
    assert_eq!(count(alumni), 0);
    let finance = t
        .get(
            &format!("/groups/{}", generated::group_id(generated::FINANCE)),
            &[],
        )
        .await;
    assert_eq!(finance.body["directMemberCounts"]["groups"], 1);
    let r = t.get("/populations", &[]).await;
    assert_eq!(
        strs(
            r.body["_embedded"]["populations"].as_array().unwrap(),
            "/name"
        ),
        generated::POPULATION_NAMES
    );
}
