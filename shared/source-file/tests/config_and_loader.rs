//! The config (defaults, unknown keys, validation) and the local loader's refusals.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests fail loudly on a broken expectation"
)]

mod common;

use common::{fixture, source, unavailable};
use m365_core::{Source, SourceError};
use m365_source_file::{
    FileFormat, FileLoader, FileSource, FileSourceConfig, FileSourceConfigError, LocalFileLoader,
};

#[test]
fn defaults_fill_every_key_but_location() {
    let config: FileSourceConfig = serde_json::from_str(r#"{"location": "hr/"}"#).unwrap();
    assert_eq!(config, FileSourceConfig::new("hr/"));
    assert_eq!(config.format, FileFormat::Auto);
    assert_eq!(config.id_column, "id");
    assert_eq!(config.enabled_column, "enabled");
    assert_eq!(config.enabled_values, ["true", "1", "yes", "enabled"]);
    assert_eq!(config.disabled_values, ["false", "0", "no", "disabled"]);
    let json: FileSourceConfig =
        serde_json::from_str(r#"{"location": "x", "format": "json"}"#).unwrap();
    assert_eq!(json.format, FileFormat::Json);
}

#[test]
fn unknown_keys_are_rejected() {
    let err = serde_json::from_str::<FileSourceConfig>(r#"{"location": "x", "idColumn": "uid"}"#)
        .unwrap_err();
    assert!(
        err.to_string()
            .starts_with("unknown field `idColumn`, expected one of `location`"),
        "{err}"
    );
}

#[test]
fn invalid_settings_are_refused_naming_the_key() {
    let mut same = FileSourceConfig::new("x");
    same.enabled_column = "id".into();
    assert_eq!(
        FileSource::local(same).unwrap_err().to_string(),
        "file source: `id_column` and `enabled_column` are both \"id\"; they must name different \
         columns"
    );
    let mut ambiguous = FileSourceConfig::new("x");
    ambiguous.enabled_values.push("No".into());
    assert_eq!(
        ambiguous.validate(),
        Err(FileSourceConfigError::AmbiguousValue("No".into()))
    );
    assert_eq!(
        FileSourceConfig::new(" ").validate(),
        Err(FileSourceConfigError::EmptyLocation)
    );
    let mut no_values = FileSourceConfig::new("x");
    no_values.disabled_values.clear();
    assert_eq!(
        no_values.validate().unwrap_err().to_string(),
        "file source: `disabled_values` is empty; list at least one value"
    );
}

#[tokio::test]
async fn s3_locations_need_the_aws_build() {
    let message = unavailable(
        source("s3://hr-exports/people.json")
            .snapshot_page(None, 10)
            .await,
    );
    assert_eq!(
        message,
        "s3://hr-exports/people.json: reading from S3 needs the AWS build (the S3 file loader of \
         the AWS adapters); this build reads local paths only"
    );
    match LocalFileLoader.load("s3://b/k").await {
        Err(SourceError::Unavailable(m)) => assert!(m.starts_with("s3://b/k: reading from S3")),
        other => panic!("expected Unavailable, got {other:?}"),
    }
}

#[tokio::test]
async fn a_missing_file_is_unavailable_and_retryable() {
    let path = fixture("json/missing.json");
    let source = source(&path);
    match source.snapshot_page(None, 10).await {
        Err(e @ SourceError::Unavailable(_)) => {
            assert!(e.is_retryable());
            assert_eq!(
                e.to_string(),
                format!("the source cannot be read: {path}: file not found")
            );
        }
        other => panic!("expected Unavailable, got {other:?}"),
    }
    match source.fetch_user("u1").await {
        Err(SourceError::Unavailable(m)) => assert_eq!(m, format!("{path}: file not found")),
        other => panic!("expected Unavailable, got {other:?}"),
    }
}

#[tokio::test]
async fn local_loader_versions_change_with_the_content() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f.json");
    let location = path.to_str().unwrap();
    std::fs::write(&path, "one").unwrap();
    let first = LocalFileLoader.version(location).await.unwrap();
    assert_eq!(LocalFileLoader.version(location).await.unwrap(), first);
    std::fs::write(&path, "two, longer").unwrap();
    assert_ne!(LocalFileLoader.version(location).await.unwrap(), first);
    assert!(LocalFileLoader.exists(location).await.unwrap());
    assert!(
        !LocalFileLoader
            .exists(dir.path().join("none").to_str().unwrap())
            .await
            .unwrap()
    );
    match LocalFileLoader.version(dir.path().to_str().unwrap()).await {
        Err(SourceError::Unavailable(m)) => {
            assert_eq!(m, format!("{}: not a regular file", dir.path().display()));
        }
        other => panic!("expected Unavailable, got {other:?}"),
    }
}
