//! [`ConfigStore`]: the connection configs of a deployment, as versioned items in its DynamoDB
//! table (the table of the [`DynamoStateStore`](crate::DynamoStateStore)).
//!
//! `m365-provisioner cloud config upload` writes them; the Lambda functions read the newest
//! version of a connection's config. A version is never changed or deleted on its own: a rollback
//! is the upload of the old text again, which becomes the newest version.
//!
//! # Items
//!
//! | Item    | `pk`                 | `sk`                            | Attributes                                                                          |
//! |---------|----------------------|---------------------------------|-------------------------------------------------------------------------------------|
//! | version | `CFG#<connection>`   | `V#<version, 10 digits>`        | `text` (the TOML), `sha256` (hex), `uploaded_at` (N, ms), `uploaded_by`, `version` (N) |
//! | index   | `CFG`                | `<connection>`                  | `version` (N, the newest), `sha256`, `uploaded_at` (N, ms), `uploaded_by`          |
//!
//! Versions count from 1. The zero-padded sort key orders them, so the newest is one Query
//! (`ScanIndexForward = false`, `Limit = 1`); the index item lists every connection with one
//! Query on `pk = "CFG"`.
//!
//! # Consistency
//!
//! An upload reads the newest version; the same text (by SHA-256) makes no new version. Otherwise
//! one `TransactWriteItems` puts version `newest + 1` (condition `attribute_not_exists(pk)`) and
//! the index item (condition `attribute_not_exists(pk) OR version = :previous`). Of concurrent
//! uploads one wins; a cancelled transaction reads again and retries, so each upload lands as its
//! own version, until [`UPLOAD_ATTEMPTS`] are used up ([`ConfigStoreError::Conflict`]).
//!
//! Reads are strongly consistent. [`ConfigStore::remove`] deletes the index item first, then
//! the versions (`BatchWriteItem`): interrupted, it leaves versions that are no longer listed,
//! and running it again finishes the job.
//!
//! Errors from DynamoDB name the operation, the table, the connection and DynamoDB's error code.

use std::collections::HashMap;
use std::fmt::Write as _;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::types::{
    AttributeValue, DeleteRequest, Put, TransactWriteItem, WriteRequest,
};
use m365_core::UnixMillis;
use sha2::{Digest as _, Sha256};
use tracing::instrument;

use crate::batch::{BATCH_ATTEMPTS, BatchWriteFailure, backoff, error_code, n, s};

type Item = HashMap<String, AttributeValue>;

/// Attempts at an upload that lost to concurrent uploads before giving up.
pub const UPLOAD_ATTEMPTS: u32 = 5;
/// The partition of the index items.
const INDEX_PK: &str = "CFG";
/// The largest version a 10-digit sort key holds.
const MAX_VERSION: u64 = 9_999_999_999;

/// One version of a connection's config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredConfig {
    pub connection: String,
    /// 1 for the first upload.
    pub version: u64,
    /// The TOML text, as uploaded.
    pub text: String,
    /// SHA-256 of `text`, lower-case hex.
    pub sha256: String,
    pub uploaded_at: UnixMillis,
    /// Who uploaded it (free text: a user, a pipeline).
    pub uploaded_by: String,
}

/// A version without its text: a line of `history` or `list`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigSummary {
    pub connection: String,
    pub version: u64,
    pub sha256: String,
    pub uploaded_at: UnixMillis,
    pub uploaded_by: String,
}

/// What an upload did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Uploaded {
    /// The new version, or (unchanged text) the newest one.
    pub config: StoredConfig,
    /// `false` when the text was the newest version's: nothing was written.
    pub created: bool,
}

/// Why the config store failed.
#[derive(Debug, thiserror::Error)]
pub enum ConfigStoreError {
    /// A request that cannot be made (a connection name that is not one).
    #[error("{0}")]
    Invalid(String),
    /// DynamoDB failed or refused; `code` is its error code when it answered.
    #[error("{message}")]
    Unavailable {
        code: Option<String>,
        message: String,
    },
    /// Concurrent uploads kept winning.
    #[error("{0}")]
    Conflict(String),
    /// An item is not in the documented layout.
    #[error("{0}")]
    Corrupt(String),
}

impl ConfigStoreError {
    /// Whether trying again later may succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Unavailable { code, .. } => !matches!(
                code.as_deref(),
                Some("ResourceNotFoundException" | "ValidationException" | "AccessDeniedException")
            ),
            Self::Conflict(_) => true,
            Self::Invalid(_) | Self::Corrupt(_) => false,
        }
    }

    /// DynamoDB's error code (`ResourceNotFoundException` for a missing table, …).
    pub fn code(&self) -> Option<&str> {
        match self {
            Self::Unavailable { code, .. } => code.as_deref(),
            _ => None,
        }
    }
}

pub type ConfigStoreResult<T> = Result<T, ConfigStoreError>;

/// Connection configs in a DynamoDB table laid out as the [module docs](self) describe.
#[derive(Debug, Clone)]
pub struct ConfigStore {
    client: Client,
    table: String,
}

impl ConfigStore {
    /// A store on `table` (which must exist; see [`crate::create_table`]). The client is built
    /// once by the caller and shared.
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

    /// Stores `text` as the newest version of `connection`'s config, unless it already is.
    #[instrument(level = "debug", skip_all, fields(table = %self.table, connection = %connection))]
    pub async fn upload(
        &self,
        connection: &str,
        text: &str,
        uploaded_by: &str,
        now_ms: UnixMillis,
    ) -> ConfigStoreResult<Uploaded> {
        check_connection(connection)?;
        let sha256 = sha256_hex(text);
        for attempt in 0..UPLOAD_ATTEMPTS {
            if attempt > 0 {
                tokio::time::sleep(backoff(attempt)).await;
            }
            let latest = self.latest(connection).await?;
            if let Some(latest) = latest.as_ref().filter(|l| l.sha256 == sha256) {
                return Ok(Uploaded {
                    config: latest.clone(),
                    created: false,
                });
            }
            let previous = latest.map_or(0, |l| l.version);
            if previous >= MAX_VERSION {
                return Err(ConfigStoreError::Invalid(format!(
                    "connection {connection} in table {}: version {previous} is the last one \
                     the table layout holds; remove the connection's configs and upload again",
                    self.table
                )));
            }
            let config = StoredConfig {
                connection: connection.to_owned(),
                version: previous + 1,
                text: text.to_owned(),
                sha256: sha256.clone(),
                uploaded_at: now_ms,
                uploaded_by: uploaded_by.to_owned(),
            };
            if self.write_version(&config, previous).await? {
                tracing::debug!(version = config.version, "config uploaded");
                return Ok(Uploaded {
                    config,
                    created: true,
                });
            }
            tracing::debug!(attempt, "upload lost to a concurrent one; reading again");
        }
        Err(ConfigStoreError::Conflict(format!(
            "uploading the config of connection {connection} to table {}: concurrent uploads \
             won {UPLOAD_ATTEMPTS} times in a row; run the upload again",
            self.table
        )))
    }

    /// The newest version of `connection`'s config.
    #[instrument(level = "debug", skip_all, fields(table = %self.table, connection = %connection))]
    pub async fn latest(&self, connection: &str) -> ConfigStoreResult<Option<StoredConfig>> {
        check_connection(connection)?;
        let out = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression("pk = :pk AND begins_with(sk, :v)")
            .expression_attribute_values(":pk", s(version_pk(connection)))
            .expression_attribute_values(":v", s("V#"))
            .scan_index_forward(false)
            .limit(1)
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| self.fail("Query (latest)", connection, &e))?;
        out.items()
            .first()
            .map(|item| stored_from(connection, item))
            .transpose()
    }

    /// Version `version` of `connection`'s config.
    #[instrument(level = "debug", skip_all, fields(table = %self.table, connection = %connection, version = version))]
    pub async fn version(
        &self,
        connection: &str,
        version: u64,
    ) -> ConfigStoreResult<Option<StoredConfig>> {
        check_connection(connection)?;
        if version == 0 || version > MAX_VERSION {
            return Ok(None);
        }
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("pk", s(version_pk(connection)))
            .key("sk", s(version_sk(version)))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| self.fail("GetItem", connection, &e))?;
        out.item()
            .map(|item| stored_from(connection, item))
            .transpose()
    }

    /// Every version of `connection`'s config, newest first, without their texts.
    #[instrument(level = "debug", skip_all, fields(table = %self.table, connection = %connection))]
    pub async fn history(&self, connection: &str) -> ConfigStoreResult<Vec<ConfigSummary>> {
        check_connection(connection)?;
        let items = self
            .query(
                connection,
                &version_pk(connection),
                Some("V#"),
                false,
                "sk, #v, sha256, uploaded_at, uploaded_by",
            )
            .await?;
        items
            .iter()
            .map(|item| {
                let what = format!("config version item of connection {connection}");
                summary_from(connection.to_owned(), item, &what)
            })
            .collect()
    }

    /// The newest version of every connection's config (the index items), by connection name.
    #[instrument(level = "debug", skip_all, fields(table = %self.table))]
    pub async fn list(&self) -> ConfigStoreResult<Vec<ConfigSummary>> {
        let items = self
            .query(
                "(all)",
                INDEX_PK,
                None,
                true,
                "sk, #v, sha256, uploaded_at, uploaded_by",
            )
            .await?;
        items
            .iter()
            .map(|item| {
                let connection = get_s(item, "sk", "config index item")?.to_owned();
                let what = format!("config index item of connection {connection}");
                summary_from(connection, item, &what)
            })
            .collect()
    }

    /// Deletes every version of `connection`'s config and its index item. Returns how many
    /// versions there were (0: nothing to remove).
    #[instrument(level = "debug", skip_all, fields(table = %self.table, connection = %connection))]
    pub async fn remove(&self, connection: &str) -> ConfigStoreResult<u64> {
        check_connection(connection)?;
        // The index item first: the connection leaves the list even if deleting the versions is
        // interrupted.
        self.client
            .delete_item()
            .table_name(&self.table)
            .key("pk", s(INDEX_PK))
            .key("sk", s(connection))
            .send()
            .await
            .map_err(|e| self.fail("DeleteItem (index)", connection, &e))?;
        let keys = self
            .query(
                connection,
                &version_pk(connection),
                Some("V#"),
                true,
                "pk, sk",
            )
            .await?;
        let removed = keys.len();
        let requests = keys
            .into_iter()
            .map(|key| {
                DeleteRequest::builder()
                    .set_key(Some(key))
                    .build()
                    .map(|del| WriteRequest::builder().delete_request(del).build())
                    .map_err(|e| build_error("BatchWriteItem", &e))
            })
            .collect::<ConfigStoreResult<Vec<_>>>()?;
        self.batch_write(connection, requests).await?;
        tracing::debug!(removed, "configs removed");
        Ok(u64::try_from(removed).unwrap_or(u64::MAX))
    }

    /// Writes `config` as the version after `previous`: `false` when a concurrent upload came
    /// first (the transaction was cancelled).
    async fn write_version(&self, config: &StoredConfig, previous: u64) -> ConfigStoreResult<bool> {
        let version_item: Item = HashMap::from([
            ("pk".to_owned(), s(version_pk(&config.connection))),
            ("sk".to_owned(), s(version_sk(config.version))),
            ("text".to_owned(), s(&config.text)),
            ("sha256".to_owned(), s(&config.sha256)),
            ("uploaded_at".to_owned(), n(config.uploaded_at)),
            ("uploaded_by".to_owned(), s(&config.uploaded_by)),
            ("version".to_owned(), n(config.version)),
        ]);
        let index_item: Item = HashMap::from([
            ("pk".to_owned(), s(INDEX_PK)),
            ("sk".to_owned(), s(&config.connection)),
            ("sha256".to_owned(), s(&config.sha256)),
            ("uploaded_at".to_owned(), n(config.uploaded_at)),
            ("uploaded_by".to_owned(), s(&config.uploaded_by)),
            ("version".to_owned(), n(config.version)),
        ]);
        let put_version = Put::builder()
            .table_name(&self.table)
            .set_item(Some(version_item))
            .condition_expression("attribute_not_exists(pk)")
            .build()
            .map_err(|e| build_error("TransactWriteItems", &e))?;
        let put_index = Put::builder()
            .table_name(&self.table)
            .set_item(Some(index_item))
            .condition_expression("attribute_not_exists(pk) OR #v = :previous")
            .expression_attribute_names("#v", "version")
            .expression_attribute_values(":previous", n(previous))
            .build()
            .map_err(|e| build_error("TransactWriteItems", &e))?;
        let result = self
            .client
            .transact_write_items()
            .transact_items(TransactWriteItem::builder().put(put_version).build())
            .transact_items(TransactWriteItem::builder().put(put_index).build())
            .send()
            .await;
        match result {
            Ok(_) => Ok(true),
            Err(e) if error_code(&e) == Some("TransactionCanceledException") => Ok(false),
            Err(e) => Err(self.fail("TransactWriteItems", &config.connection, &e)),
        }
    }

    /// Every item of partition `pk` (optionally with `sk` starting with `prefix`), paged.
    /// `connection` only names the request in errors.
    async fn query(
        &self,
        connection: &str,
        pk: &str,
        prefix: Option<&str>,
        forward: bool,
        projection: &str,
    ) -> ConfigStoreResult<Vec<Item>> {
        let mut out = Vec::new();
        let mut start: Option<Item> = None;
        loop {
            let mut request = self
                .client
                .query()
                .table_name(&self.table)
                .expression_attribute_values(":pk", s(pk))
                .scan_index_forward(forward)
                .consistent_read(true)
                .projection_expression(projection)
                .set_exclusive_start_key(start.take());
            if projection.contains("#v") {
                request = request.expression_attribute_names("#v", "version");
            }
            request = match prefix {
                Some(prefix) => request
                    .key_condition_expression("pk = :pk AND begins_with(sk, :p)")
                    .expression_attribute_values(":p", s(prefix)),
                None => request.key_condition_expression("pk = :pk"),
            };
            let page = request
                .send()
                .await
                .map_err(|e| self.fail("Query", connection, &e))?;
            out.extend(page.items().iter().cloned());
            start = page.last_evaluated_key().cloned();
            if start.is_none() {
                return Ok(out);
            }
        }
    }

    async fn batch_write(
        &self,
        connection: &str,
        requests: Vec<WriteRequest>,
    ) -> ConfigStoreResult<()> {
        crate::batch::write_all(&self.client, &self.table, requests)
            .await
            .map_err(|failure| match failure {
                BatchWriteFailure::Sdk(e) => self.fail("BatchWriteItem", connection, &e),
                BatchWriteFailure::Unprocessed(left) => ConfigStoreError::Unavailable {
                    code: None,
                    message: format!(
                        "DynamoDB BatchWriteItem on table {} for connection {connection}: {left} \
                         items still unprocessed after {BATCH_ATTEMPTS} attempts (throttled); \
                         run the command again",
                        self.table
                    ),
                },
            })
    }

    fn fail<E, R>(
        &self,
        operation: &str,
        connection: &str,
        err: &SdkError<E, R>,
    ) -> ConfigStoreError
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
        R: std::fmt::Debug,
    {
        let table = &self.table;
        match err.as_service_error() {
            Some(service) => {
                let code = service.code().unwrap_or("unknown error");
                let hint = if code == "ResourceNotFoundException" {
                    " (does the table exist in this account and region?)"
                } else {
                    ""
                };
                ConfigStoreError::Unavailable {
                    code: service.code().map(str::to_owned),
                    message: format!(
                        "DynamoDB {operation} on table {table} for connection {connection} \
                         failed: {code}: {}{hint}",
                        service.message().unwrap_or("no message")
                    ),
                }
            }
            None => ConfigStoreError::Unavailable {
                code: None,
                message: format!(
                    "DynamoDB {operation} on table {table} for connection {connection} failed: {}",
                    DisplayErrorContext(err)
                ),
            },
        }
    }
}

/// Connection names as the configuration allows them (and so safe in keys).
fn check_connection(connection: &str) -> ConfigStoreResult<()> {
    let ok = !connection.is_empty()
        && connection.len() <= 64
        && connection
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(ConfigStoreError::Invalid(format!(
            "{connection:?} is not a connection name: use 1 to 64 letters, digits, '-', '_' or '.'"
        )))
    }
}

/// SHA-256 of `text`, lower-case hex.
fn sha256_hex(text: &str) -> String {
    let digest = Sha256::digest(text.as_bytes());
    let mut out = String::with_capacity(64);
    for byte in digest.iter() {
        let _ = write!(out, "{byte:02x}");
    }
    out
}

fn version_pk(connection: &str) -> String {
    format!("CFG#{connection}")
}

fn version_sk(version: u64) -> String {
    format!("V#{version:010}")
}

fn build_error(operation: &str, err: &aws_sdk_dynamodb::error::BuildError) -> ConfigStoreError {
    ConfigStoreError::Unavailable {
        code: None,
        message: format!("DynamoDB {operation}: invalid request: {err}"),
    }
}

fn get_s<'a>(item: &'a Item, name: &str, what: &str) -> ConfigStoreResult<&'a str> {
    match item.get(name) {
        Some(AttributeValue::S(v)) => Ok(v),
        Some(_) => Err(ConfigStoreError::Corrupt(format!(
            "{what}: attribute {name} is not a string"
        ))),
        None => Err(ConfigStoreError::Corrupt(format!(
            "{what}: attribute {name} is missing"
        ))),
    }
}

fn get_n<T: std::str::FromStr>(item: &Item, name: &str, what: &str) -> ConfigStoreResult<T>
where
    T::Err: std::fmt::Display,
{
    match item.get(name) {
        Some(AttributeValue::N(v)) => v
            .parse()
            .map_err(|e| ConfigStoreError::Corrupt(format!("{what}: attribute {name} = {v}: {e}"))),
        Some(_) => Err(ConfigStoreError::Corrupt(format!(
            "{what}: attribute {name} is not a number"
        ))),
        None => Err(ConfigStoreError::Corrupt(format!(
            "{what}: attribute {name} is missing"
        ))),
    }
}

fn stored_from(connection: &str, item: &Item) -> ConfigStoreResult<StoredConfig> {
    let what = format!("config version item of connection {connection}");
    Ok(StoredConfig {
        connection: connection.to_owned(),
        version: get_n(item, "version", &what)?,
        text: get_s(item, "text", &what)?.to_owned(),
        sha256: get_s(item, "sha256", &what)?.to_owned(),
        uploaded_at: get_n(item, "uploaded_at", &what)?,
        uploaded_by: get_s(item, "uploaded_by", &what)?.to_owned(),
    })
}

fn summary_from(connection: String, item: &Item, what: &str) -> ConfigStoreResult<ConfigSummary> {
    Ok(ConfigSummary {
        version: get_n(item, "version", what)?,
        sha256: get_s(item, "sha256", what)?.to_owned(),
        uploaded_at: get_n(item, "uploaded_at", what)?,
        uploaded_by: get_s(item, "uploaded_by", what)?.to_owned(),
        connection,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha256_is_lower_case_hex() {
        assert_eq!(
            sha256_hex("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn version_keys_sort_by_number() {
        assert_eq!(version_sk(3), "V#0000000003");
        assert!(version_sk(9) < version_sk(10));
        assert_eq!(version_sk(MAX_VERSION).len(), 12);
    }

    #[test]
    fn connection_names_are_checked() {
        assert!(check_connection("contoso-prod.eu_1").is_ok());
        for bad in ["", "a#b", "a/b", &"x".repeat(65)] {
            assert!(check_connection(bad).is_err(), "{bad}");
        }
    }
}
