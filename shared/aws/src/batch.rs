//! DynamoDB pieces shared by the state store and the config store, which word the errors for
//! their callers: attribute values, error codes, and `BatchWriteItem` of any number of requests
//! (chunks of 25, the unprocessed part of each sent again with backoff — DynamoDB returns it when
//! throttled — a bounded number of times).

use std::time::Duration;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::config::http::HttpResponse;
use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::operation::batch_write_item::BatchWriteItemError;
use aws_sdk_dynamodb::types::{AttributeValue, WriteRequest};

/// Items per `BatchWriteItem` (DynamoDB's maximum).
pub(crate) const WRITE_BATCH: usize = 25;
/// Attempts at a batch's unprocessed part before giving up (throttling).
pub(crate) const BATCH_ATTEMPTS: u32 = 10;

/// A string attribute.
pub(crate) fn s(value: impl Into<String>) -> AttributeValue {
    AttributeValue::S(value.into())
}

/// A number attribute.
pub(crate) fn n(value: impl std::fmt::Display) -> AttributeValue {
    AttributeValue::N(value.to_string())
}

/// DynamoDB's error code of a service error (`ConditionalCheckFailedException`, …).
pub(crate) fn error_code<E: ProvideErrorMetadata, R>(err: &SdkError<E, R>) -> Option<&str> {
    err.as_service_error().and_then(ProvideErrorMetadata::code)
}

/// Why a batch write did not complete.
pub(crate) enum BatchWriteFailure {
    /// DynamoDB refused a request.
    Sdk(Box<SdkError<BatchWriteItemError, HttpResponse>>),
    /// Items still unprocessed after [`BATCH_ATTEMPTS`] attempts.
    Unprocessed(usize),
}

/// The pause before attempt `attempt` (exponential, capped at 1.6 s).
pub(crate) fn backoff(attempt: u32) -> Duration {
    Duration::from_millis(25u64.saturating_mul(1 << attempt.min(6)))
}

/// Writes every request (idempotent puts and deletes; not atomic across chunks).
pub(crate) async fn write_all(
    client: &Client,
    table: &str,
    requests: Vec<WriteRequest>,
) -> Result<(), BatchWriteFailure> {
    for chunk in requests.chunks(WRITE_BATCH) {
        let mut pending = chunk.to_vec();
        let mut attempt = 0;
        while !pending.is_empty() {
            if attempt >= BATCH_ATTEMPTS {
                return Err(BatchWriteFailure::Unprocessed(pending.len()));
            }
            if attempt > 0 {
                tokio::time::sleep(backoff(attempt)).await;
            }
            attempt += 1;
            let out = client
                .batch_write_item()
                .request_items(table, pending)
                .send()
                .await
                .map_err(|e| BatchWriteFailure::Sdk(Box::new(e)))?;
            pending = out
                .unprocessed_items()
                .and_then(|m| m.get(table))
                .cloned()
                .unwrap_or_default();
        }
    }
    Ok(())
}
