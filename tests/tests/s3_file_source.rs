//! The file source reading `s3://` locations through `AnyFileLoader`, against moto.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a broken expectation should fail loudly"
)]

use std::path::Path;
use std::sync::Arc;

use aws_sdk_s3::Client;
use aws_sdk_s3::primitives::ByteStream;
use m365_aws::AnyFileLoader;
use m365_core::{Source, SourceError, SourceGroup, SourceUser};
use m365_integration_tests::moto::Moto;
use m365_source_file::{FileLoader, FileSource, FileSourceConfig};
use serde_json::Value;

const BUCKET: &str = "m365-sources";

/// moto with one bucket, and a client for it.
async fn moto_with_bucket() -> (Moto, Client) {
    let moto = Moto::start().await;
    let s3 = moto.s3_client().await;
    s3.create_bucket().bucket(BUCKET).send().await.unwrap();
    (moto, s3)
}

async fn put(s3: &Client, key: &str, body: impl Into<Vec<u8>>) {
    s3.put_object()
        .bucket(BUCKET)
        .key(key)
        .body(ByteStream::from(body.into()))
        .send()
        .await
        .unwrap();
}

fn loader(s3: &Client) -> AnyFileLoader {
    AnyFileLoader::new(Some(s3.clone()))
}

fn source(s3: &Client, location: &str) -> FileSource {
    FileSource::new(FileSourceConfig::new(location), Arc::new(loader(s3))).unwrap()
}

fn examples_source_json() -> Vec<u8> {
    std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/source.json")).unwrap()
}

/// Every page of a snapshot: (users, groups, number of pages).
async fn snapshot(
    source: &FileSource,
    page_size: usize,
) -> (Vec<SourceUser>, Vec<SourceGroup>, usize) {
    let (mut users, mut groups, mut pages) = (Vec::new(), Vec::new(), 0);
    let mut cursor = None;
    loop {
        let page = source
            .snapshot_page(cursor.as_ref(), page_size)
            .await
            .unwrap();
        pages += 1;
        assert!(page.errors.is_empty(), "{:?}", page.errors.first());
        users.extend(page.users);
        groups.extend(page.groups);
        match page.next {
            Some(next) => cursor = Some(next),
            None => return (users, groups, pages),
        }
    }
}

fn unavailable(err: SourceError) -> String {
    match err {
        SourceError::Unavailable(message) => message,
        other => panic!("expected Unavailable, got {other:?}"),
    }
}

const USERS_CSV: &str = "id,enabled,mail,department\n\
    u1,true,ann@example.com,Sales\n\
    u2,false,bob@example.com,Sales\n\
    u3,yes,cy@example.com,Engineering\n";
const GROUPS_CSV: &str = "id,name,members\ng-sales,Sales,u1;u2\n";

#[tokio::test]
async fn a_json_object_reads_page_by_page_and_fetches_users() {
    let (_moto, s3) = moto_with_bucket().await;
    put(&s3, "exports/source.json", examples_source_json()).await;
    let expected: Value = serde_json::from_slice(&examples_source_json()).unwrap();
    let source = source(&s3, &format!("s3://{BUCKET}/exports/source.json"));

    let (users, groups, pages) = snapshot(&source, 20).await;
    assert_eq!(users.len(), expected["users"].as_array().unwrap().len());
    assert_eq!(groups.len(), expected["groups"].as_array().unwrap().len());
    assert_eq!(pages, users.len().div_ceil(20));
    assert_eq!(users[0].id, expected["users"][0]["id"].as_str().unwrap());

    let fetched = source.fetch_user(&users[7].id).await.unwrap();
    assert_eq!(fetched.as_ref(), Some(&users[7]));
    assert_eq!(source.fetch_user("nobody").await.unwrap(), None);
}

#[tokio::test]
async fn a_csv_prefix_reads_users_csv_and_groups_csv_under_it() {
    let (_moto, s3) = moto_with_bucket().await;
    put(&s3, "hr/2026/users.csv", USERS_CSV).await;
    put(&s3, "hr/2026/groups.csv", GROUPS_CSV).await;

    // The prefix, the same without its slash, and the users.csv file itself.
    for location in [
        format!("s3://{BUCKET}/hr/2026/"),
        format!("s3://{BUCKET}/hr/2026"),
        format!("s3://{BUCKET}/hr/2026/users.csv"),
    ] {
        let source = source(&s3, &location);
        let (users, groups, pages) = snapshot(&source, 2).await;
        let ids: Vec<&str> = users.iter().map(|u| u.id.as_str()).collect();
        assert_eq!(ids, ["u1", "u2", "u3"], "{location}");
        assert_eq!(
            users.iter().map(|u| u.enabled).collect::<Vec<_>>(),
            [true, false, true]
        );
        assert_eq!(pages, 2, "{location}");
        assert_eq!(groups.len(), 1, "{location}");
        assert_eq!(groups[0].name, "Sales");
        assert_eq!(groups[0].members, ["u1", "u2"]);
        assert_eq!(
            source.fetch_user("u3").await.unwrap().unwrap().id,
            "u3",
            "{location}"
        );
    }
}

#[tokio::test]
async fn overwriting_the_object_mid_snapshot_expires_the_cursor() {
    let (_moto, s3) = moto_with_bucket().await;
    let key = "source.json";
    let location = format!("s3://{BUCKET}/{key}");
    put(&s3, key, examples_source_json()).await;
    let source = source(&s3, &location);
    let before = loader(&s3).version(&location).await.unwrap();

    let first = source.snapshot_page(None, 10).await.unwrap();
    let cursor = first.next.expect("more than one page");

    let mut changed: Value = serde_json::from_slice(&examples_source_json()).unwrap();
    changed["users"].as_array_mut().unwrap().truncate(5);
    changed["groups"] = Value::Array(Vec::new());
    put(&s3, key, changed.to_string()).await;
    let after = loader(&s3).version(&location).await.unwrap();
    assert_ne!(before, after);

    let err = source.snapshot_page(Some(&cursor), 10).await.unwrap_err();
    match err {
        SourceError::CursorExpired(message) => assert!(message.contains(&location), "{message}"),
        other => panic!("expected CursorExpired, got {other:?}"),
    }
    // A restarted snapshot reads the new content.
    let (users, _, _) = snapshot(&source, 10).await;
    assert_eq!(users.len(), 5);
}

#[tokio::test]
async fn a_missing_object_is_unavailable_naming_the_url_and_the_code() {
    let (_moto, s3) = moto_with_bucket().await;
    let location = format!("s3://{BUCKET}/nothing-here.json");

    let source = source(&s3, &location);
    let message = unavailable(source.snapshot_page(None, 10).await.unwrap_err());
    assert!(message.contains(&location), "{message}");
    assert!(message.contains("NoSuchKey"), "{message}");

    let loader = loader(&s3);
    let message = unavailable(loader.load(&location).await.unwrap_err());
    assert!(message.contains(&location), "{message}");
    assert!(message.contains("NoSuchKey"), "{message}");
    assert!(!loader.exists(&location).await.unwrap());
}

#[tokio::test]
async fn a_missing_groups_csv_with_groups_false_means_no_groups() {
    let (_moto, s3) = moto_with_bucket().await;
    put(&s3, "only-users/users.csv", USERS_CSV).await;

    let groups = format!("s3://{BUCKET}/only-users/groups.csv");
    assert!(!loader(&s3).exists(&groups).await.unwrap());
    assert!(
        loader(&s3)
            .exists(&format!("s3://{BUCKET}/only-users/users.csv"))
            .await
            .unwrap()
    );

    // Without `groups = false` a missing groups.csv is an incomplete group snapshot (the file
    // source's own tests cover that); with it, the source has no groups.
    let config = FileSourceConfig {
        groups: false,
        ..FileSourceConfig::new(format!("s3://{BUCKET}/only-users/"))
    };
    let source = FileSource::new(config, Arc::new(loader(&s3))).unwrap();
    let (users, groups, _) = snapshot(&source, 10).await;
    assert_eq!(users.len(), 3);
    assert!(groups.is_empty());
}

#[tokio::test]
async fn a_missing_bucket_is_an_error_never_no_groups() {
    let (_moto, s3) = moto_with_bucket().await;
    let groups = "s3://no-such-bucket/exports/groups.csv";

    let message = unavailable(loader(&s3).exists(groups).await.unwrap_err());
    assert!(message.contains(groups), "{message}");
    assert!(message.contains("NoSuchBucket"), "{message}");

    let message = unavailable(loader(&s3).load(groups).await.unwrap_err());
    assert!(message.contains("NoSuchBucket"), "{message}");

    let source = source(&s3, "s3://no-such-bucket/exports/");
    let message = unavailable(source.snapshot_page(None, 10).await.unwrap_err());
    assert!(
        message.contains("s3://no-such-bucket/exports/users.csv"),
        "{message}"
    );
    assert!(message.contains("NoSuchBucket"), "{message}");
}

#[tokio::test]
async fn an_unreachable_endpoint_is_an_error_never_false() {
    // A port nothing listens on (bound, then released).
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .endpoint_url(format!("http://127.0.0.1:{port}"))
        .region(aws_config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_s3::config::Credentials::new(
            "testing", "testing", None, None, "static",
        ))
        .retry_config(aws_config::retry::RetryConfig::disabled())
        .load()
        .await;
    let loader = AnyFileLoader::new(Some(m365_aws::s3_client(&config)));
    let groups = "s3://bucket/groups.csv";
    let message = unavailable(loader.exists(groups).await.unwrap_err());
    assert!(message.contains(groups), "{message}");
    assert!(
        !message.contains("testing"),
        "no credential in errors: {message}"
    );
}

#[tokio::test]
async fn moto_reset_forgets_every_bucket() {
    let (moto, s3) = moto_with_bucket().await;
    moto.reset().await;
    let buckets = s3.list_buckets().send().await.unwrap();
    assert!(buckets.buckets().is_empty(), "{buckets:?}");
}
