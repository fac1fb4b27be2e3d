//! Webhook delivery as PingOne subscriptions deliver the `ACTIVITY` format
//! (<https://developer.pingidentity.com/pingone-api/platform/subscriptions-webhooks.html>):
//! each POST carries one JSON array of at most 500 records, with the subscription's static
//! headers; PingOne retries the same batch until it is answered 200 and sends nothing behind it
//! meanwhile (head-of-line). The stand-in delivers only when a test calls
//! [`crate::PingOneSandbox::deliver`], so that tests decide when events arrive.

use std::time::Duration;

use serde_json::Value;

use crate::{Inner, PingOneSandboxError};

/// The most records one POST carries.
pub(crate) const MAX_BATCH: usize = 500;

/// A subscription to the environment's activities (the `httpEndpoint` and
/// `filterOptions.includedActionTypes` of PingOne's `Subscription` schema).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscription {
    /// Where batches are POSTed: `http://127.0.0.1:PORT/...`, `localhost` or `[::1]` only.
    pub url: String,
    /// Static headers sent with every POST (`httpEndpoint.headers`).
    pub headers: Vec<(String, String)>,
    /// The `action.type` values delivered, e.g. `USER.CREATED`
    /// ([`crate::ActionType::as_str`]).
    pub included_action_types: Vec<String>,
}

/// Refuses a URL that does not point at this machine: the stand-in posts to tests' receivers
/// only.
pub(crate) fn check_local(url: &str) -> Result<(), PingOneSandboxError> {
    let parsed = url::Url::parse(url).map_err(|_| PingOneSandboxError::NotLocal(url.to_owned()))?;
    let local = matches!(parsed.scheme(), "http" | "https")
        && matches!(parsed.host_str(), Some("127.0.0.1" | "localhost" | "[::1]"));
    if local {
        Ok(())
    } else {
        Err(PingOneSandboxError::NotLocal(url.to_owned()))
    }
}

/// The head batch of subscription `index`: its URL, headers and at most [`MAX_BATCH`] records.
fn head_batch(inner: &Inner, index: usize) -> Option<(Subscription, Vec<Value>)> {
    let store = inner.lock_store();
    let q = store.audit.subscriptions.get(index)?;
    if q.queue.is_empty() {
        return None;
    }
    let batch = q.queue.iter().take(MAX_BATCH).cloned().collect();
    Some((q.subscription.clone(), batch))
}

/// POSTs one batch; a connection failure or timeout is status 0.
async fn post(http: &reqwest::Client, subscription: &Subscription, batch: &[Value]) -> u16 {
    let mut req = http
        .post(&subscription.url)
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(Value::Array(batch.to_vec()).to_string());
    for (name, value) in &subscription.headers {
        req = req.header(name.as_str(), value.as_str());
    }
    match req.send().await {
        Ok(response) => response.status().as_u16(),
        Err(e) => {
            tracing::debug!(error = %e, url = %subscription.url, "webhook POST failed");
            0
        }
    }
}

/// Delivers the queued records, subscription by subscription, batch by batch. A batch answered
/// 200 leaves its queue; the first other answer (0 for a connection failure) stops the delivery
/// with that batch and everything behind it still queued. Returns the status of every POST made.
pub(crate) async fn deliver(inner: &Inner) -> Result<Vec<u16>, PingOneSandboxError> {
    let http = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(30))
        .build()
        .map_err(|e| PingOneSandboxError::Webhook(e.to_string()))?;
    let subscriptions = inner.lock_store().audit.subscriptions.len();
    let mut statuses = Vec::new();
    for index in 0..subscriptions {
        while let Some((subscription, batch)) = head_batch(inner, index) {
            let status = post(&http, &subscription, &batch).await;
            statuses.push(status);
            if status != 200 {
                return Ok(statuses);
            }
            let mut store = inner.lock_store();
            if let Some(q) = store.audit.subscriptions.get_mut(index) {
                let delivered = batch.len().min(q.queue.len());
                q.queue.drain(..delivered);
            }
        }
    }
    Ok(statuses)
}
