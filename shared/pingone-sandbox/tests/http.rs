//! The PingOne stand-in over HTTP: tokens, the bearer gate, paging, filters, errors, throttling.

// Integration tests: helpers panic on broken expectations.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeSet;
use std::time::Duration;

use m365_pingone_sandbox::{Counters, GroupSeed, PingOneSandbox, Seed, UserSeed, demo};
use serde_json::Value;

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

struct T {
    p1: PingOneSandbox,
    http: reqwest::Client,
    token: String,
}

struct Resp {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: Value,
}

async fn resp(r: reqwest::Response) -> Resp {
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    let text = r.text().await.unwrap();
    let body = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"))
    };
    Resp {
        status,
        headers,
        body,
    }
}

async fn basic_token(http: &reqwest::Client, url: &str, id: &str, secret: &str) -> Resp {
    resp(
        http.post(url)
            .basic_auth(id, Some(secret))
            .form(&[("grant_type", "client_credentials")])
            .send()
            .await
            .unwrap(),
    )
    .await
}

async fn post_token(http: &reqwest::Client, url: &str, id: &str, secret: &str) -> Resp {
    resp(
        http.post(url)
            .form(&[
                ("grant_type", "client_credentials"),
                ("client_id", id),
                ("client_secret", secret),
            ])
            .send()
            .await
            .unwrap(),
    )
    .await
}

async fn start_with(seed: Seed) -> T {
    let p1 = PingOneSandbox::start(seed).await.unwrap();
    let http = client();
    let r = basic_token(
        &http,
        &p1.token_url(),
        demo::BASIC_CLIENT_ID,
        demo::BASIC_CLIENT_SECRET,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let token = r.body["access_token"].as_str().unwrap().to_owned();
    T { p1, http, token }
}

async fn start() -> T {
    start_with(Seed::demo()).await
}

impl T {
    /// `path` under `/v1/environments/{env}`, or an absolute URL.
    fn url(&self, path: &str) -> String {
        if path.starts_with("http") {
            path.to_owned()
        } else {
            format!(
                "{}/v1/environments/{}{path}",
                self.p1.url(),
                demo::ENVIRONMENT_ID
            )
        }
    }

    async fn get_with(&self, path: &str, token: Option<&str>) -> Resp {
        let mut req = self.http.get(self.url(path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        resp(req.send().await.unwrap()).await
    }

    async fn get(&self, path: &str) -> Resp {
        self.get_with(path, Some(&self.token)).await
    }

    /// Users matching `filter` (one page, the default limit), as usernames.
    async fn usernames(&self, filter: &str) -> Vec<String> {
        let r = self.get_query("/users", &[("filter", filter)]).await;
        assert_eq!(r.status, 200, "{filter}: {}", r.body);
        names(&r.body["_embedded"]["users"], "username")
    }

    async fn get_query(&self, path: &str, query: &[(&str, &str)]) -> Resp {
        resp(
            self.http
                .get(self.url(path))
                .bearer_auth(&self.token)
                .query(query)
                .send()
                .await
                .unwrap(),
        )
        .await
    }
}

fn names(list: &Value, key: &str) -> Vec<String> {
    list.as_array()
        .unwrap()
        .iter()
        .map(|v| v[key].as_str().unwrap().to_owned())
        .collect()
}

fn assert_uuid(s: &str) {
    assert!(uuid::Uuid::parse_str(s).is_ok(), "not a uuid: {s:?}");
}

fn correlation_id(r: &Resp) -> String {
    let cid = r.headers["correlation-id"].to_str().unwrap().to_owned();
    assert_uuid(&cid);
    cid
}

/// An OAuth `invalid_client` refusal quoting the response's correlation id.
fn assert_invalid_client(r: &Resp, reason: &str) {
    assert_eq!(r.status, 401, "{}", r.body);
    assert_eq!(r.body["error"], "invalid_client");
    let cid = correlation_id(r);
    assert_eq!(
        r.body["error_description"],
        format!("Request denied: {reason} (Correlation ID: {cid})")
    );
}

fn assert_p1_error(r: &Resp, status: u16, code: &str, message: &str) {
    assert_eq!(r.status, status, "{}", r.body);
    assert_eq!(r.body["code"], code, "{}", r.body);
    assert_eq!(r.body["message"], message);
    assert_eq!(r.body["id"].as_str().unwrap(), correlation_id(r));
}

const ACCESS_FAILED: &str =
    "The request could not be completed. You do not have access to this resource.";
const INVALID_DATA: &str =
    "The request could not be completed. One or more validation errors were in the request.";

#[tokio::test]
async fn tokens_by_basic_and_by_post() {
    let t = start().await;
    let url = t.p1.token_url();
    for r in [
        basic_token(
            &t.http,
            &url,
            demo::BASIC_CLIENT_ID,
            demo::BASIC_CLIENT_SECRET,
        )
        .await,
        post_token(
            &t.http,
            &url,
            demo::POST_CLIENT_ID,
            demo::POST_CLIENT_SECRET,
        )
        .await,
    ] {
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.body["token_type"], "Bearer");
        assert_eq!(r.body["expires_in"], 3600);
        let token = r.body["access_token"].as_str().unwrap();
        assert!(token.len() >= 32, "{token}");
        correlation_id(&r);
        assert_eq!(t.get_with("/users", Some(token)).await.status, 200);
    }
    // The start-up token, the two above, none refused.
    assert_eq!(t.p1.counters().token_requests, 3);
}

#[tokio::test]
async fn tokens_refused_with_the_wrong_method_secret_or_environment() {
    let t = start().await;
    let url = t.p1.token_url();
    let method = "Unsupported authentication method";
    // Each app has one configured method; the other is refused.
    let r = post_token(
        &t.http,
        &url,
        demo::BASIC_CLIENT_ID,
        demo::BASIC_CLIENT_SECRET,
    )
    .await;
    assert_invalid_client(&r, method);
    let r = basic_token(
        &t.http,
        &url,
        demo::POST_CLIENT_ID,
        demo::POST_CLIENT_SECRET,
    )
    .await;
    assert_invalid_client(&r, method);
    // Unknown client.
    let r = basic_token(&t.http, &url, "no-such-client", demo::BASIC_CLIENT_SECRET).await;
    assert_invalid_client(&r, method);
    // Wrong secret, by either method.
    let r = basic_token(&t.http, &url, demo::BASIC_CLIENT_ID, "wrong").await;
    assert_invalid_client(&r, "Invalid client credentials");
    let r = post_token(&t.http, &url, demo::POST_CLIENT_ID, "wrong").await;
    assert_invalid_client(&r, "Invalid client credentials");
    // Unknown environment: PingOne's 404 P1Error.
    let foreign = format!("{}/{}/as/token", t.p1.url(), uuid::Uuid::new_v4());
    let r = basic_token(
        &t.http,
        &foreign,
        demo::BASIC_CLIENT_ID,
        demo::BASIC_CLIENT_SECRET,
    )
    .await;
    assert_p1_error(
        &r,
        404,
        "NOT_FOUND",
        "The requested resource was not found.",
    );
    // Another grant type.
    let r = resp(
        t.http
            .post(&url)
            .basic_auth(demo::BASIC_CLIENT_ID, Some(demo::BASIC_CLIENT_SECRET))
            .form(&[("grant_type", "password")])
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, 400, "{}", r.body);
    assert_eq!(r.body["error"], "unsupported_grant_type");
    assert!(
        r.body["error_description"]
            .as_str()
            .unwrap()
            .contains("password")
    );
    assert_eq!(
        t.p1.counters(),
        Counters {
            v1_requests: 0,
            token_requests: 8,
            activities_requests: 0,
        }
    );
}

#[tokio::test]
async fn v1_needs_a_token_of_this_environment() {
    let t = start().await;
    let other = start_with(Seed {
        environment_id: uuid::Uuid::new_v4().to_string(),
        ..Seed::demo()
    })
    .await;
    let foreign = &other.token;
    for token in [None, Some("not-a-token"), Some(foreign.as_str())] {
        let r = t.get_with("/users", token).await;
        assert_p1_error(&r, 401, "ACCESS_FAILED", ACCESS_FAILED);
    }
    // A valid token of this environment does not open another environment's path.
    let r = t
        .get_with(
            &format!(
                "{}/v1/environments/{}/users",
                t.p1.url(),
                uuid::Uuid::new_v4()
            ),
            Some(&t.token),
        )
        .await;
    assert_p1_error(&r, 401, "ACCESS_FAILED", ACCESS_FAILED);
    // An expired token is refused too.
    assert_eq!(t.get("/users").await.status, 200);
    t.p1.expire_tokens();
    let r = t.get("/users").await;
    assert_p1_error(&r, 401, "ACCESS_FAILED", ACCESS_FAILED);
    assert_eq!(t.p1.counters().v1_requests, 6);
}

#[tokio::test]
async fn users_have_pingone_fields() {
    let t = start().await;
    let r = t.get(&format!("/users/{}", demo::BOB_ID)).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        r.headers["content-type"].to_str().unwrap(),
        "application/hal+json;charset=UTF-8"
    );
    correlation_id(&r);
    let u = &r.body;
    assert_eq!(u["id"], demo::BOB_ID);
    assert_eq!(u["environment"]["id"], demo::ENVIRONMENT_ID);
    assert_eq!(u["username"], "bob");
    assert_eq!(u["email"], "bob@example.com");
    assert_eq!(u["name"]["given"], "Bob");
    assert_eq!(u["name"]["family"], "Baker");
    assert_eq!(u["name"]["formatted"], "Bob Baker");
    assert_eq!(u["title"], "Engineer");
    assert_eq!(u["enabled"], true);
    assert_eq!(u["population"]["id"], demo::POPULATION_STAFF);
    assert_eq!(u["externalId"], "E1002");
    assert_eq!(u["managerId"], demo::ALICE_ID);
    assert_eq!(u["lifecycle"]["status"], "ACCOUNT_OK");
    let created = u["createdAt"].as_str().unwrap();
    assert_eq!(created.len(), "2026-01-31T09:30:00.123Z".len(), "{created}");
    assert!(
        created.ends_with('Z') && created.as_bytes()[19] == b'.',
        "{created}"
    );

    let r = t.get(&format!("/users/{}", uuid::Uuid::new_v4())).await;
    assert_p1_error(
        &r,
        404,
        "NOT_FOUND",
        "The requested resource was not found.",
    );
}

#[tokio::test]
async fn users_page_by_200_following_next_verbatim() {
    let seed = Seed {
        users: Vec::new(),
        groups: Vec::new(),
        ..Seed::demo()
    };
    let t = start_with(seed).await;
    let ids: Vec<String> = (0..450)
        .map(|i| {
            t.p1.add_user(UserSeed::new(
                &format!("user{i:03}"),
                demo::POPULATION_STAFF,
            ))
        })
        .collect();
    let mut url = t.url("/users?limit=1000");
    let mut sizes = Vec::new();
    let mut seen = Vec::new();
    loop {
        assert!(sizes.len() < 5, "_links.next keeps coming: {sizes:?}");
        let r = t.get(&url).await;
        assert_eq!(r.status, 200, "{}", r.body);
        let page = names(&r.body["_embedded"]["users"], "id");
        assert_eq!(r.body["size"], page.len());
        assert_eq!(r.body["count"], 450);
        sizes.push(page.len());
        seen.extend(page);
        match r.body["_links"]["next"]["href"].as_str() {
            Some(next) => {
                assert!(next.starts_with(t.p1.url()), "{next}");
                assert!(next.contains("cursor="), "{next}");
                assert!(next.contains("limit=1000"), "{next}");
                url = next.to_owned();
            }
            None => break,
        }
    }
    assert_eq!(sizes, [200, 200, 50]);
    // Without a limit, a page is as large as the cap.
    let r = t.get("/users").await;
    assert_eq!(
        (r.body["size"].as_u64(), r.body["count"].as_u64()),
        (Some(200), Some(450))
    );
    assert_eq!(seen, ids, "creation order, no duplicates, none missing");
    assert_eq!(seen.iter().collect::<BTreeSet<_>>().len(), 450);
}

#[tokio::test]
async fn filtered_pages_keep_the_filter() {
    let t = start().await;
    let filter = format!("population.id eq \"{}\"", demo::POPULATION_STAFF);
    let r = t
        .get_query("/users", &[("filter", filter.as_str()), ("limit", "2")])
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        names(&r.body["_embedded"]["users"], "username"),
        ["alice", "bob"]
    );
    assert_eq!(
        (r.body["size"].as_u64(), r.body["count"].as_u64()),
        (Some(2), Some(3))
    );
    let next = r.body["_links"]["next"]["href"]
        .as_str()
        .unwrap()
        .to_owned();
    let r = t.get(&next).await;
    assert_eq!(names(&r.body["_embedded"]["users"], "username"), ["carol"]);
    assert_eq!(r.body["size"], 1);
    assert!(r.body["_links"].get("next").is_none(), "{}", r.body);
}

#[tokio::test]
async fn user_filters() {
    let t = start().await;
    let staff = format!("population.id eq \"{}\"", demo::POPULATION_STAFF);
    assert_eq!(t.usernames(&staff).await, ["alice", "bob", "carol"]);
    assert_eq!(t.usernames("enabled eq false").await, ["erin"]);
    assert_eq!(t.usernames("username sw \"ca\"").await, ["carol"]);
    assert_eq!(t.usernames("externalId eq \"E1001\"").await, ["alice"]);
    assert_eq!(
        t.usernames("name.family eq \"dunn\" or title eq \"Engineer\"")
            .await,
        ["bob", "dave"]
    );
    assert_eq!(
        t.usernames(&format!(
            "{staff} and (username eq \"bob\" or username eq \"dave\")"
        ))
        .await,
        ["bob"]
    );
    // Engineering: Alice and Bob directly, Carol through the nested Platform group.
    let eng = demo::ENGINEERING_ID;
    assert_eq!(
        t.usernames(&format!("memberOfGroups[id eq \"{eng}\"]"))
            .await,
        ["alice", "bob", "carol"]
    );
    assert_eq!(
        t.usernames(&format!(
            "memberOfGroups[id eq \"{eng}\" and type eq \"DIRECT\"]"
        ))
        .await,
        ["alice", "bob"]
    );
    // The dynamic group: its userFilter, and it follows changes of the users.
    let contractors = format!("memberOfGroups[id eq \"{}\"]", demo::CONTRACTORS_ID);
    assert_eq!(t.usernames(&contractors).await, ["dave", "erin"]);
    t.p1.update_user(demo::ALICE_ID, |u| {
        u.population_id = demo::POPULATION_CONTRACTORS.to_owned();
    })
    .unwrap();
    assert_eq!(t.usernames(&contractors).await, ["alice", "dave", "erin"]);
    t.p1.delete_user(demo::DAVE_ID).unwrap();
    assert_eq!(t.usernames(&contractors).await, ["alice", "erin"]);
}

#[tokio::test]
async fn unsupported_filters_are_400_invalid_filter() {
    let t = start().await;
    for (filter, needle) in [
        ("username ne \"bob\"", "'ne' is not supported"),
        ("username gt \"bob\"", "'gt' is not supported"),
        ("username pr", "'pr' is not supported"),
        ("not (username eq \"bob\")", "'not' is not supported"),
        ("mobilePhone eq \"1\"", "'mobilePhone' cannot be filtered"),
        ("username eq \"bob\" and", "end of the filter"),
    ] {
        let r = t.get_query("/users", &[("filter", filter)]).await;
        assert_p1_error(&r, 400, "INVALID_DATA", INVALID_DATA);
        let details = r.body["details"].as_array().unwrap();
        assert_eq!(details.len(), 1, "{}", r.body);
        assert_eq!(details[0]["code"], "INVALID_FILTER");
        assert_eq!(details[0]["target"], "filter");
        let message = details[0]["message"].as_str().unwrap();
        assert!(message.contains(needle), "{filter}: {message}");
    }
}

#[tokio::test]
async fn limit_outside_1_to_1000_is_400() {
    let t = start().await;
    for limit in ["0", "1001", "-1", "ten"] {
        let r = t.get_query("/users", &[("limit", limit)]).await;
        assert_p1_error(&r, 400, "INVALID_DATA", INVALID_DATA);
        assert_eq!(r.body["details"][0]["code"], "INVALID_VALUE");
        assert_eq!(r.body["details"][0]["target"], "limit");
    }
    let r = t.get_query("/users", &[("limit", "1000")]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body["size"], 5);
    let r = t.get_query("/users", &[("cursor", "!!not-a-cursor")]).await;
    assert_p1_error(&r, 400, "INVALID_DATA", INVALID_DATA);
    assert_eq!(r.body["details"][0]["target"], "cursor");
}

#[tokio::test]
async fn groups_nesting_and_dynamic_groups() {
    let t = start().await;
    let r = t.get("/groups").await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        names(&r.body["_embedded"]["groups"], "name"),
        ["Engineering", "Platform", "Contractors"]
    );
    assert_eq!(r.body["count"], 3);

    let r = t.get(&format!("/groups/{}", demo::ENGINEERING_ID)).await;
    assert_eq!(r.body["directMemberCounts"]["users"], 2);
    assert_eq!(r.body["directMemberCounts"]["groups"], 1);
    assert_eq!(r.body["environment"]["id"], demo::ENVIRONMENT_ID);
    let r = t.get(&format!("/groups/{}", demo::CONTRACTORS_ID)).await;
    assert_eq!(
        r.body["userFilter"],
        format!("population.id eq \"{}\"", demo::POPULATION_CONTRACTORS)
    );
    assert_eq!(r.body["directMemberCounts"]["users"], 2);

    let nested = format!(
        "memberOfGroups[id eq \"{}\" and type eq \"DIRECT\"]",
        demo::ENGINEERING_ID
    );
    let r = t.get_query("/groups", &[("filter", nested.as_str())]).await;
    assert_eq!(names(&r.body["_embedded"]["groups"], "name"), ["Platform"]);
    let staff = format!("population.id eq \"{}\"", demo::POPULATION_STAFF);
    let either = format!("id eq \"{}\" or name eq \"Engineering\"", demo::PLATFORM_ID);
    for (filter, want) in [
        (staff.as_str(), "Platform"),
        ("externalId eq \"grp-platform\"", "Platform"),
        (either.as_str(), "Engineering,Platform"),
    ] {
        let r = t.get_query("/groups", &[("filter", filter)]).await;
        assert_eq!(r.status, 200, "{filter}: {}", r.body);
        assert_eq!(
            names(&r.body["_embedded"]["groups"], "name").join(","),
            want,
            "{filter}"
        );
    }
    // Groups take `eq` only, and no user attribute.
    for filter in ["name sw \"Eng\"", "username eq \"alice\""] {
        let r = t.get_query("/groups", &[("filter", filter)]).await;
        assert_p1_error(&r, 400, "INVALID_DATA", INVALID_DATA);
        assert_eq!(r.body["details"][0]["code"], "INVALID_FILTER", "{filter}");
    }
    let r = t
        .get_query("/groups", &[("filter", "name eq \"contractors\"")])
        .await;
    assert_eq!(
        names(&r.body["_embedded"]["groups"], "id"),
        [demo::CONTRACTORS_ID]
    );

    let r = t
        .get(&format!("/groups/{}/memberOfGroups", demo::PLATFORM_ID))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let parents = &r.body["_embedded"]["groupMemberships"];
    assert_eq!(parents.as_array().unwrap().len(), 1, "{parents}");
    assert_eq!(parents[0]["id"], demo::ENGINEERING_ID);
    assert_eq!(parents[0]["name"], "Engineering");
    assert_eq!(parents[0]["type"], "DIRECT");

    let r = t.get(&format!("/groups/{}", uuid::Uuid::new_v4())).await;
    assert_p1_error(
        &r,
        404,
        "NOT_FOUND",
        "The requested resource was not found.",
    );
}

#[tokio::test]
async fn groups_and_members_added_by_tests_show_up() {
    let t = start().await;
    let sre = t.p1.add_group(GroupSeed::new("SRE")).unwrap();
    t.p1.nest_group(demo::PLATFORM_ID, &sre).unwrap();
    let frank =
        t.p1.add_user(UserSeed::new("frank", demo::POPULATION_STAFF));
    t.p1.add_member(&sre, &frank).unwrap();
    // Two levels of nesting: Engineering > Platform > SRE.
    let all = format!("memberOfGroups[id eq \"{}\"]", demo::ENGINEERING_ID);
    assert_eq!(t.usernames(&all).await, ["alice", "bob", "carol", "frank"]);
    // A dynamic group cannot take members; nesting cannot make a cycle.
    assert!(t.p1.add_member(demo::CONTRACTORS_ID, &frank).is_err());
    assert!(t.p1.nest_group(&sre, demo::ENGINEERING_ID).is_err());
    assert!(t.p1.add_member(&sre, "no-such-user").is_err());
}

#[tokio::test]
async fn writes_are_405() {
    let t = start().await;
    let r = resp(
        t.http
            .post(t.url("/users"))
            .bearer_auth(&t.token)
            .json(&serde_json::json!({"username": "zed"}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, 405, "{}", r.body);
    assert_eq!(r.body["code"], "METHOD_NOT_ALLOWED");
    correlation_id(&r);
}

#[tokio::test]
async fn populations() {
    let t = start().await;
    let r = t.get("/populations").await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        names(&r.body["_embedded"]["populations"], "name"),
        ["Staff", "Contractors"]
    );
    assert_eq!(
        r.body["_embedded"]["populations"][0]["id"],
        demo::POPULATION_STAFF
    );
    assert_eq!(
        (r.body["size"].as_u64(), r.body["count"].as_u64()),
        (Some(2), Some(2))
    );
}

#[tokio::test]
async fn throttle_knob_answers_429_with_retry_after() {
    let t = start().await;
    t.p1.throttle_next(2, 7);
    for _ in 0..2 {
        let r = t.get("/users").await;
        assert_p1_error(
            &r,
            429,
            "REQUEST_LIMITED",
            "The request was rejected because the rate limit was exceeded.",
        );
        assert_eq!(r.headers["retry-after"], "7");
    }
    let r = t.get("/users").await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.headers.get("retry-after").is_none());
    assert_eq!(
        t.p1.counters(),
        Counters {
            v1_requests: 3,
            token_requests: 1,
            activities_requests: 0,
        }
    );
}
