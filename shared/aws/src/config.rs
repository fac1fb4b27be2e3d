//! The SDK configuration and the clients built from it.

use aws_config::{BehaviorVersion, SdkConfig};

/// The SDK configuration from the default chain (environment, profile, container / instance
/// role), with `endpoint_url`, when given, overriding every configured endpoint (a local emulator
/// such as moto, or an S3-compatible store).
///
/// Without an explicit endpoint the default chain still honours `AWS_ENDPOINT_URL` (and the
/// per-service `AWS_ENDPOINT_URL_S3`, resolved when the client is built) and the profile's
/// `endpoint_url`.
pub async fn sdk_config(endpoint_url: Option<&str>) -> SdkConfig {
    let loader = aws_config::defaults(BehaviorVersion::latest());
    match endpoint_url {
        Some(url) => loader.endpoint_url(url).load().await,
        None => loader.load().await,
    }
}

/// An S3 client for `config`. When the config carries a custom endpoint (moto, MinIO, a
/// LocalStack) the client addresses buckets path-style (`http://host/bucket/key`): emulators
/// and S3-compatible stores generally do not serve `bucket.host` names.
pub fn s3_client(config: &SdkConfig) -> aws_sdk_s3::Client {
    let mut builder = aws_sdk_s3::config::Builder::from(config);
    if config.endpoint_url().is_some() {
        builder = builder.force_path_style(true);
    }
    aws_sdk_s3::Client::from_conf(builder.build())
}

/// A DynamoDB client for the [`crate::DynamoStateStore`].
pub fn dynamodb_client(config: &SdkConfig) -> aws_sdk_dynamodb::Client {
    aws_sdk_dynamodb::Client::new(config)
}
