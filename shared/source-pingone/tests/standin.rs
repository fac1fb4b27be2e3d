//! The PingOne source against the PingOne stand-in (`m365-pingone-sandbox`): what it reads,
//! how it pages, scopes, retries and fails.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a broken expectation should fail loudly"
)]

use std::collections::BTreeMap;

use m365_core::config::pingone_source::{PingOneSourceConfig, PingOneTokenAuth};
use m365_core::model::AttrValue;
use m365_core::secrets::ConnectionSecrets;
use m365_core::source::{Source, SourceError};
use m365_pingone_sandbox::{PingOneSandbox, Seed, UserSeed, demo};
use m365_source_pingone::PingOneSource;
use secrecy::SecretString;

fn config(sandbox: &PingOneSandbox) -> PingOneSourceConfig {
    let mut config: PingOneSourceConfig = toml::from_str(&format!(
        r#"
        environment_id = "{}"
        client_id = "{}"
        auth_url = "{}"
        api_url = "{}"
        "#,
        sandbox.environment_id(),
        demo::BASIC_CLIENT_ID,
        sandbox.url(),
        sandbox.url(),
    ))
    .unwrap();
    config.timeout_seconds = 10;
    config
}

fn secrets(secret: &str) -> ConnectionSecrets {
    ConnectionSecrets {
        additional_apps: Vec::new(),
        tenant: "t".into(),
        client_id: "c".into(),
        credential: m365_core::AppCredential::Secret(SecretString::from("s")),
        extra: BTreeMap::from([(
            "pingone_client_secret".to_owned(),
            SecretString::from(secret),
        )]),
    }
}

fn source(config: PingOneSourceConfig) -> PingOneSource {
    PingOneSource::new(config, &secrets(demo::BASIC_CLIENT_SECRET)).unwrap()
}

fn text(user: &m365_core::model::SourceUser, name: &str) -> Option<String> {
    user.attributes.get(name).and_then(AttrValue::as_text)
}

#[tokio::test]
async fn a_snapshot_reads_every_user_and_the_groups_with_nested_and_dynamic_members() {
    let sandbox = PingOneSandbox::start(Seed::demo()).await.unwrap();
    let source = source(config(&sandbox));
    let page = source.snapshot_page(None, 1000).await.unwrap();
    assert!(page.errors.is_empty(), "{:?}", page.errors);
    assert!(page.next.is_none());
    assert_eq!(page.users.len(), 5);
    let bob = page.users.iter().find(|u| u.id == demo::BOB_ID).unwrap();
    assert_eq!(text(bob, "name.given").as_deref(), Some("Bob"));
    assert_eq!(text(bob, "managerId").as_deref(), Some(demo::ALICE_ID));
    assert_eq!(
        text(bob, "population.id").as_deref(),
        Some(demo::POPULATION_STAFF)
    );
    let erin = page.users.iter().find(|u| u.id == demo::ERIN_ID).unwrap();
    assert!(!erin.enabled);
    let members = |id: &str| {
        let mut m = page
            .groups
            .iter()
            .find(|g| g.id == id)
            .unwrap()
            .members
            .clone();
        m.sort();
        m
    };
    let mut engineering = vec![demo::ALICE_ID, demo::BOB_ID, demo::CAROL_ID];
    engineering.sort();
    assert_eq!(
        members(demo::ENGINEERING_ID),
        engineering,
        "Platform's Carol counts"
    );
    let mut contractors = vec![demo::DAVE_ID, demo::ERIN_ID];
    contractors.sort();
    assert_eq!(members(demo::CONTRACTORS_ID), contractors);

    let direct = source_with(&sandbox, |c| c.nested_groups = false);
    let page = direct.snapshot_page(None, 1000).await.unwrap();
    let engineering = page
        .groups
        .iter()
        .find(|g| g.id == demo::ENGINEERING_ID)
        .unwrap();
    assert_eq!(engineering.members.len(), 2, "direct members only");
}

fn source_with(
    sandbox: &PingOneSandbox,
    change: impl FnOnce(&mut PingOneSourceConfig),
) -> PingOneSource {
    let mut c = config(sandbox);
    change(&mut c);
    source(c)
}

#[tokio::test]
async fn pages_follow_the_next_link_and_the_scope_is_pingones_filter() {
    let sandbox = PingOneSandbox::start(Seed::demo()).await.unwrap();
    for i in 0..450 {
        sandbox.add_user(UserSeed::new(
            &format!("bulk{i:03}"),
            demo::POPULATION_STAFF,
        ));
    }
    let source = source_with(&sandbox, |c| c.groups = false);
    let mut cursor = None;
    let mut sizes = Vec::new();
    loop {
        let page = source.snapshot_page(cursor.as_ref(), 1000).await.unwrap();
        assert!(page.groups.is_empty());
        sizes.push(page.users.len());
        match page.next {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    assert_eq!(sizes, vec![200, 200, 55]);

    let contractors = source_with(&sandbox, |c| {
        c.populations = vec![demo::POPULATION_CONTRACTORS.to_owned()];
        c.groups = false;
    });
    let page = contractors.snapshot_page(None, 1000).await.unwrap();
    let mut ids: Vec<&str> = page.users.iter().map(|u| u.id.as_str()).collect();
    ids.sort();
    let mut expected = vec![demo::DAVE_ID, demo::ERIN_ID];
    expected.sort();
    assert_eq!(ids, expected);
    // fetch_user applies the same scope: a staff user is not in it.
    assert!(
        contractors
            .fetch_user(demo::ALICE_ID)
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        contractors
            .fetch_user(demo::DAVE_ID)
            .await
            .unwrap()
            .is_some()
    );

    let engineers = source_with(&sandbox, |c| {
        c.member_of_groups = vec![demo::ENGINEERING_ID.to_owned()];
        c.user_filter = Some("username sw \"b\"".to_owned());
    });
    assert!(engineers.fetch_user(demo::BOB_ID).await.unwrap().is_some());
    assert!(
        engineers
            .fetch_user(demo::ALICE_ID)
            .await
            .unwrap()
            .is_none()
    );
    assert!(engineers.fetch_user(demo::DAVE_ID).await.unwrap().is_none());
    let unknown = "b0000000-0000-4000-8000-000000000000";
    assert!(engineers.fetch_user(unknown).await.unwrap().is_none());
}

#[tokio::test]
async fn throttling_is_waited_out_and_an_expired_token_renewed() {
    let sandbox = PingOneSandbox::start(Seed::demo()).await.unwrap();
    let source = source_with(&sandbox, |c| c.groups = false);
    source.snapshot_page(None, 1000).await.unwrap();
    sandbox.throttle_next(2, 1);
    sandbox.expire_tokens();
    let tokens_before = sandbox.counters().token_requests;
    let user = source.fetch_user(demo::BOB_ID).await.unwrap().unwrap();
    assert_eq!(user.id, demo::BOB_ID);
    assert_eq!(sandbox.counters().token_requests, tokens_before + 1);
}

#[tokio::test]
async fn refused_credentials_and_filters_name_the_setting_to_fix() {
    let sandbox = PingOneSandbox::start(Seed::demo()).await.unwrap();
    let wrong = PingOneSource::new(config(&sandbox), &secrets("not-the-secret")).unwrap();
    let error = wrong.snapshot_page(None, 1000).await.unwrap_err();
    let text = error.to_string();
    assert!(matches!(error, SourceError::Unavailable(_)), "{text}");
    assert!(text.contains(sandbox.environment_id()), "{text}");
    assert!(
        text.contains("client_secret_secret") && text.contains("invalid_client"),
        "{text}"
    );
    assert!(!text.contains("not-the-secret"), "{text}");

    let post = source_with(&sandbox, |c| {
        c.token_auth = PingOneTokenAuth::ClientSecretPost
    });
    let error = post
        .snapshot_page(None, 1000)
        .await
        .unwrap_err()
        .to_string();
    assert!(error.contains("token_auth"), "{error}");

    let missing = PingOneSource::new(
        config(&sandbox),
        &ConnectionSecrets {
            additional_apps: Vec::new(),
            extra: BTreeMap::new(),
            ..secrets("x")
        },
    )
    .unwrap();
    let error = missing
        .snapshot_page(None, 1000)
        .await
        .unwrap_err()
        .to_string();
    assert!(error.contains("pingone_client_secret"), "{error}");

    let filtered = source_with(&sandbox, |c| {
        c.user_filter = Some("nickname gt \"a\"".into())
    });
    let error = filtered
        .snapshot_page(None, 1000)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("INVALID_FILTER") && error.contains("user_filter"),
        "{error}"
    );
}
