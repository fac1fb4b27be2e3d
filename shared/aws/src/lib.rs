//! AWS adapters: the ports of `m365-core` (and the file loader of `m365-source-file`) on AWS
//! services.
//!
//! Layout — one module per service, each holding the adapter(s) built on it:
//! - [`config`]: the shared [`aws_config::SdkConfig`] and client builders. Callers build the SDK
//!   config and every client **once** (in `main`, or once per Lambda container) and pass the
//!   clients into the adapters.
//! - [`s3`]: [`S3FileLoader`], `s3://bucket/key` objects for the file source.
//! - [`any_loader`]: [`AnyFileLoader`], local paths and `s3://` locations behind one loader (what
//!   the CLI and the functions give the file source).
//! - [`dynamodb`]: [`DynamoStateStore`], the `StateStore` on one DynamoDB table (single-table
//!   design described there), and [`create_table`] for tests and local setups.
//! - [`config_store`]: [`ConfigStore`], the connection configs as versioned items in the same
//!   table (what `m365-provisioner cloud config upload` writes and the functions read).
//! - [`secrets_manager`]: [`SecretsManagerSecretStore`], the `SecretStore` on one Secrets
//!   Manager secret, cached for a warm Lambda container.
//!
//! The adapters never read credentials themselves: they come from the SDK's default chain (or, in
//! tests, from a static provider put into the SDK config), and no error message carries them.

pub mod any_loader;
mod batch;
pub mod config;
pub mod config_store;
pub mod dynamodb;
pub mod invoke;
pub mod s3;
pub mod secrets_manager;

pub use any_loader::AnyFileLoader;
pub use config::{dynamodb_client, s3_client, sdk_config};
pub use config_store::{ConfigStore, ConfigStoreError, ConfigSummary, StoredConfig, Uploaded};
pub use dynamodb::{DynamoStateStore, create_table};
pub use invoke::{FunctionInvoker, InvokeError};
pub use s3::{S3FileLoader, S3Location, is_s3_location};
pub use secrets_manager::{SecretsManagerSecretStore, WEBHOOK_SECRET_PREFIX};
