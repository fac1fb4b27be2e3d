//! JSON batching (docs/graph-behaviour.md#json-batching): chunks of ≤ 20, unique ids, `dependsOn`,
//! results correlated by id, per-item throttling retried in follow-up batches.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures::StreamExt;
use reqwest::Method;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value, json};

use crate::answer_times::{AnswerClass, WhenLate};
use crate::client::{GraphClient, decode, is_write, throttle_signal};
use crate::error::{ErrorContext, GraphError, classify, parse_retry_after};
use crate::odata::MAX_BATCH;
use crate::pacing::{Cost, request_cost};

/// One request inside a `$batch`. Its `Debug` shows no body (it may hold a password).
#[derive(Clone, PartialEq)]
pub struct BatchRequest {
    /// Unique (case-insensitively) across the whole call.
    pub id: String,
    pub method: Method,
    /// Relative to the version root, e.g. `/users/{id}` or `/users?$filter=…` (already encoded).
    pub url: String,
    pub headers: BTreeMap<String, String>,
    pub body: Option<Value>,
    /// Ids of requests (earlier in the list) that must succeed first; if one fails this one
    /// answers 424.
    pub depends_on: Vec<String>,
}

impl std::fmt::Debug for BatchRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BatchRequest")
            .field("id", &self.id)
            .field("method", &self.method)
            .field("url", &self.url)
            .field("headers", &self.headers.keys().collect::<Vec<_>>())
            .field("body", &self.body.as_ref().map(|_| "[REDACTED]"))
            .field("depends_on", &self.depends_on)
            .finish()
    }
}

impl BatchRequest {
    pub fn new(id: impl Into<String>, method: Method, url: impl Into<String>) -> Self {
        BatchRequest {
            id: id.into(),
            method,
            url: url.into(),
            headers: BTreeMap::new(),
            body: None,
            depends_on: Vec::new(),
        }
    }

    pub fn get(id: impl Into<String>, url: impl Into<String>) -> Self {
        BatchRequest::new(id, Method::GET, url)
    }

    pub fn with_body(mut self, body: Value) -> Self {
        self.body = Some(body);
        self
    }

    pub fn with_header(mut self, name: &str, value: &str) -> Self {
        self.headers.insert(name.to_string(), value.to_string());
        self
    }

    pub fn depending_on(mut self, id: impl Into<String>) -> Self {
        self.depends_on.push(id.into());
        self
    }

    /// Whether the request converges when Graph applies it twice (a re-send after an uncertain
    /// answer): every method but POST, and the POST of assignLicense
    /// (<https://learn.microsoft.com/graph/api/user-assignlicense>: assigning what is assigned
    /// changes nothing). A create would make a second object; a restore would fail.
    fn may_apply_twice(&self) -> bool {
        self.method != Method::POST || self.path_and_query().0.ends_with("/assignLicense")
    }

    fn path_and_query(&self) -> (&str, &str) {
        match self.url.split_once('?') {
            Some((p, q)) => (p, q),
            None => (self.url.as_str(), ""),
        }
    }

    fn cost(&self) -> Cost {
        let (p, q) = self.path_and_query();
        request_cost(self.method.as_str(), p, q)
    }
}

/// The answer to one [`BatchRequest`].
#[derive(Debug, Clone, PartialEq)]
pub struct BatchResponse {
    pub id: String,
    pub status: u16,
    pub headers: BTreeMap<String, String>,
    pub body: Option<Value>,
    method: Method,
    path: String,
}

impl BatchResponse {
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The item's failure, classified like a top-level response (conflict, not found, …);
    /// 424 (a dependency failed) comes back as `BadRequest` with status 424.
    pub fn error(&self) -> Option<GraphError> {
        if self.is_success() {
            return None;
        }
        let ctx = ErrorContext {
            method: self.method.to_string(),
            path: self.path.clone(),
            request_id: self
                .headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case("request-id"))
                .map(|(_, v)| v.clone()),
            ..ErrorContext::default()
        };
        let body = self
            .body
            .as_ref()
            .map(|b| serde_json::to_vec(b).unwrap_or_default())
            .unwrap_or_default();
        let retry_after = self
            .headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("retry-after"))
            .and_then(|(_, v)| parse_retry_after(v));
        Some(classify(ctx, self.status, &body, retry_after))
    }

    /// The body decoded as `T`, or the item's error.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, GraphError> {
        if let Some(e) = self.error() {
            return Err(e);
        }
        let body = self.body.clone().unwrap_or(Value::Null);
        serde_json::from_value(body).map_err(|e| {
            GraphError::decode(
                ErrorContext {
                    method: self.method.to_string(),
                    path: self.path.clone(),
                    status: Some(self.status),
                    ..ErrorContext::default()
                },
                e.to_string(),
            )
        })
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn synthetic(req: &BatchRequest, status: u16, code: &str, message: &str) -> BatchResponse {
        BatchResponse {
            id: req.id.clone(),
            status,
            headers: BTreeMap::new(),
            body: Some(json!({"error": {"code": code, "message": message}})),
            method: req.method.clone(),
            path: req.path_and_query().0.to_string(),
        }
    }
}

#[derive(Deserialize)]
struct WireBatch {
    #[serde(default)]
    responses: Vec<WireItem>,
}

#[derive(Deserialize)]
struct WireItem {
    id: String,
    status: u16,
    #[serde(default)]
    headers: Option<Map<String, Value>>,
    #[serde(default)]
    body: Option<Value>,
}

fn key(id: &str) -> String {
    id.to_ascii_lowercase()
}

impl GraphClient {
    /// Runs `requests` through `$batch` in chunks of ≤ 20 and returns one response per
    /// request, in input order. Items answered 429 (and 500/502/503/504 for items safe to apply
    /// twice: not a create or a restore) are re-sent in a follow-up batch after the largest `Retry-After`, together with
    /// the items that failed 424 only because of them. Each item is paced at its own cost.
    /// Item failures are in the responses (`BatchResponse::error`), not in the `Err` of this
    /// call, which reports invalid input or a failure of the envelope itself.
    pub async fn batch(
        &self,
        requests: Vec<BatchRequest>,
    ) -> Result<Vec<BatchResponse>, GraphError> {
        let requests = self.normalise_batch(requests)?;
        let has_deps = requests.iter().any(|r| !r.depends_on.is_empty());
        // Chunk in order; a dependency chain split across chunks still works because chunks
        // run in order when any dependency exists (see run_chunk).
        let chunks: Vec<Vec<BatchRequest>> =
            requests.chunks(MAX_BATCH).map(|c| c.to_vec()).collect();
        let mut results: HashMap<String, BatchResponse> = HashMap::new();
        if has_deps {
            for chunk in chunks {
                let done = self.run_chunk(chunk, &results).await?;
                results.extend(done);
            }
        } else {
            let width = self.settings().concurrency.max(1);
            let empty = HashMap::new();
            let outs: Vec<Result<HashMap<String, BatchResponse>, GraphError>> =
                futures::stream::iter(chunks)
                    .map(|c| self.run_chunk(c, &empty))
                    .buffer_unordered(width)
                    .collect()
                    .await;
            for o in outs {
                results.extend(o?);
            }
        }
        let mut out = Vec::with_capacity(requests.len());
        for r in &requests {
            match results.remove(&key(&r.id)) {
                Some(resp) => out.push(resp),
                None => out.push(BatchResponse::synthetic(
                    r,
                    503,
                    "serviceNotAvailable",
                    "no response for this item in the batch",
                )),
            }
        }
        Ok(out)
    }

    fn normalise_batch(
        &self,
        requests: Vec<BatchRequest>,
    ) -> Result<Vec<BatchRequest>, GraphError> {
        let mut seen: HashSet<String> = HashSet::new();
        let mut out = Vec::with_capacity(requests.len());
        for mut r in requests {
            if r.id.trim().is_empty() {
                return Err(GraphError::Config("a batch request has an empty id".into()));
            }
            for d in &r.depends_on {
                if !seen.contains(&key(d)) {
                    return Err(GraphError::Config(format!(
                        "batch request `{}` depends on `{d}`, which is not an earlier request",
                        r.id
                    )));
                }
            }
            if !seen.insert(key(&r.id)) {
                return Err(GraphError::Config(format!(
                    "batch request id `{}` is used twice; ids must be unique",
                    r.id
                )));
            }
            // Batch URLs are relative to the version root.
            if let Some(rest) = r.url.strip_prefix(self.graph_base()) {
                r.url = rest.to_string();
            }
            if !r.url.starts_with('/') {
                r.url = format!("/{}", r.url);
            }
            if r.body.is_some()
                && !r
                    .headers
                    .keys()
                    .any(|k| k.eq_ignore_ascii_case("content-type"))
            {
                r.headers
                    .insert("Content-Type".into(), "application/json".into());
            }
            out.push(r);
        }
        Ok(out)
    }

    /// One chunk (≤ 20), with follow-up rounds for throttled / unavailable items.
    async fn run_chunk(
        &self,
        chunk: Vec<BatchRequest>,
        earlier: &HashMap<String, BatchResponse>,
    ) -> Result<HashMap<String, BatchResponse>, GraphError> {
        let (mut pending, mut final_results) = settle_dependencies(chunk, earlier);
        let mut backoff = self.settings().transient_retry.backoff();
        let mut round: u32 = 0;
        while !pending.is_empty() {
            round += 1;
            let Some((mut by_id, lane)) = self.send_round(&pending).await? else {
                // The envelope was late: its items go again in two envelopes of half its size,
                // each with its own rounds.
                let second = pending.split_off(pending.len().div_ceil(2));
                let (first, second) = tokio::join!(
                    Box::pin(self.run_chunk(pending, earlier)),
                    Box::pin(self.run_chunk(second, earlier))
                );
                final_results.extend(first?);
                final_results.extend(second?);
                return Ok(final_results);
            };
            let (retry, wait) = self.to_retry(&pending, &by_id, lane);
            let exhausted = round >= self.settings().max_attempts;
            let delay = if retry.is_empty() || exhausted {
                None
            } else {
                match backoff.next() {
                    Some(d) => Some(wait.unwrap_or(d)),
                    None => wait,
                }
            };
            let mut next = Vec::new();
            for r in pending {
                let k = key(&r.id);
                if retry.contains(&k) && delay.is_some() {
                    next.push(r);
                } else {
                    let resp = by_id.remove(&k).unwrap_or_else(|| {
                        BatchResponse::synthetic(
                            &r,
                            503,
                            "serviceNotAvailable",
                            "no response for this item in the batch",
                        )
                    });
                    final_results.insert(k, resp);
                }
            }
            if let Some(d) = delay {
                for _ in &next {
                    self.inner.stats.count_retry();
                }
                tracing::warn!(
                    items = next.len(),
                    delay_ms = d.as_millis() as u64,
                    "batch items throttled or unavailable; re-sending them"
                );
                tokio::time::sleep(d).await;
            }
            pending = next;
        }
        Ok(final_results)
    }

    /// One envelope of `pending`, paced: the answers by item id, and the lane (app
    /// registration) the envelope went through; `None` when the envelope was given up as late
    /// ([`WhenLate::Split`]) and its items are to be sent again in smaller envelopes.
    async fn send_round(
        &self,
        pending: &[BatchRequest],
    ) -> Result<Option<(HashMap<String, BatchResponse>, usize)>, GraphError> {
        let cost = pending
            .iter()
            .fold(Cost::default(), |acc, r| acc.plus(r.cost()));
        for r in pending {
            self.inner.stats.count_request(&r.method);
        }
        let items = envelope_items(pending);
        let mut call = self.call(Method::POST, "/$batch", Some(json!({ "requests": items })));
        // Graph charges the items as if each were sent alone, to the app the envelope came
        // through (https://learn.microsoft.com/graph/throttling#throttling-and-batching).
        call.charge = Some(cost);
        // Re-sending an envelope whose fate is unknown could repeat creates.
        // A late envelope is sent again beside the first, and a failed one re-sent, only when
        // every item may be applied twice.
        let twice_is_safe = pending.iter().all(BatchRequest::may_apply_twice);
        call.retry_transient = twice_is_safe;
        call.class = AnswerClass::of_batch(pending.iter().any(|r| is_write(&r.method)));
        call.when_late = match (twice_is_safe, can_split(pending)) {
            (true, true) => WhenLate::Split,
            (true, false) => WhenLate::Hedge,
            (false, _) => WhenLate::Wait,
        };
        let raw = match self.send(&call).await {
            Ok(raw) => raw,
            Err(_) if call.given_up_late.load(Ordering::Relaxed) => return Ok(None),
            Err(e) => return Err(e),
        };
        let wire: WireBatch = decode(&call, &raw.body)?;
        let mut by_id: HashMap<String, BatchResponse> = HashMap::new();
        for item in wire.responses {
            let Some(req) = pending.iter().find(|r| key(&r.id) == key(&item.id)) else {
                continue;
            };
            let headers: BTreeMap<String, String> = item
                .headers
                .unwrap_or_default()
                .into_iter()
                .map(|(k, v)| {
                    let v = match v {
                        Value::String(s) => s,
                        other => other.to_string(),
                    };
                    (k, v)
                })
                .collect();
            by_id.insert(
                key(&item.id),
                BatchResponse {
                    id: req.id.clone(),
                    status: item.status,
                    headers,
                    body: item.body,
                    method: req.method.clone(),
                    path: req.path_and_query().0.to_string(),
                },
            );
        }
        Ok(Some((by_id, raw.lane)))
    }

    /// Items to send again (throttled, or unavailable and safe to apply twice, or failed 424 behind one
    /// of those), and the longest Retry-After among them; the pacer learns from every answer.
    fn to_retry(
        &self,
        pending: &[BatchRequest],
        by_id: &HashMap<String, BatchResponse>,
        lane: usize,
    ) -> (HashSet<String>, Option<Duration>) {
        let mut retry: HashSet<String> = HashSet::new();
        let mut wait: Option<Duration> = None;
        for r in pending {
            let k = key(&r.id);
            let Some(resp) = by_id.get(&k) else {
                retry.insert(k);
                continue;
            };
            let ra = resp.header("retry-after").and_then(parse_retry_after);
            let retryable = match resp.status {
                429 => {
                    self.inner.stats.count_throttled();
                    let scope = resp.header("x-ms-throttle-scope");
                    self.throttled_pacer(lane, scope)
                        .on_throttled(ra, throttle_signal(scope));
                    true
                }
                // A POST answered 5xx may have been applied
                // (docs/graph-behaviour.md#uncertain-creates): it is never re-sent blindly; the
                // caller looks the object up instead.
                500 | 502 | 503 | 504 => r.may_apply_twice(),
                s if (200..300).contains(&s) => {
                    self.inner.lanes.get(lane).pacer.on_success(
                        resp.header("x-ms-throttle-limit-percentage")
                            .and_then(|v| v.trim().parse::<f64>().ok()),
                    );
                    false
                }
                _ => false,
            };
            if retryable {
                retry.insert(k);
                if let Some(ra) = ra {
                    wait = Some(wait.map_or(ra, |w| w.max(ra)));
                }
            }
        }
        // Items that failed 424 because a retried item had not run go again too.
        loop {
            let before = retry.len();
            for r in pending {
                let k = key(&r.id);
                if retry.contains(&k) {
                    continue;
                }
                let status = by_id.get(&k).map(|b| b.status);
                if status == Some(424) && r.depends_on.iter().any(|d| retry.contains(&key(d))) {
                    retry.insert(k);
                }
            }
            if retry.len() == before {
                break;
            }
        }
        (retry, wait)
    }
}

/// A chunk's items to send, and those settled already: a dependency answered in an earlier
/// chunk is dropped when it succeeded, and fails its dependent with 424 when it did not.
fn settle_dependencies(
    chunk: Vec<BatchRequest>,
    earlier: &HashMap<String, BatchResponse>,
) -> (Vec<BatchRequest>, HashMap<String, BatchResponse>) {
    let mut settled: HashMap<String, BatchResponse> = HashMap::new();
    let mut pending: Vec<BatchRequest> = Vec::new();
    for mut r in chunk {
        let mut failed_dep = false;
        r.depends_on.retain(|d| match earlier.get(&key(d)) {
            Some(resp) => {
                failed_dep |= !resp.is_success();
                false
            }
            None => true,
        });
        if failed_dep {
            settled.insert(
                key(&r.id),
                BatchResponse::synthetic(
                    &r,
                    424,
                    "FailedDependency",
                    "a request this one depends on failed",
                ),
            );
        } else {
            pending.push(r);
        }
    }
    (pending, settled)
}

/// Whether `pending` may go in two envelopes: more than one item, none depending on another
/// of them (a `dependsOn` names only items of its own envelope).
fn can_split(pending: &[BatchRequest]) -> bool {
    let ids: HashSet<String> = pending.iter().map(|r| key(&r.id)).collect();
    pending.len() > 1
        && pending
            .iter()
            .all(|r| r.depends_on.iter().all(|d| !ids.contains(&key(d))))
}

/// The `requests` of a `$batch` envelope (https://learn.microsoft.com/graph/json-batching):
/// `dependsOn` names only items of this same envelope.
fn envelope_items(pending: &[BatchRequest]) -> Vec<Value> {
    let pending_ids: HashSet<String> = pending.iter().map(|r| key(&r.id)).collect();
    pending
        .iter()
        .map(|r| {
            let mut m = Map::new();
            m.insert("id".into(), r.id.clone().into());
            m.insert("method".into(), r.method.as_str().into());
            m.insert("url".into(), r.url.clone().into());
            if !r.headers.is_empty() {
                m.insert("headers".into(), json!(r.headers));
            }
            if let Some(b) = &r.body {
                m.insert("body".into(), b.clone());
            }
            let deps: Vec<&String> = r
                .depends_on
                .iter()
                .filter(|d| pending_ids.contains(&key(d)))
                .collect();
            if !deps.is_empty() {
                m.insert("dependsOn".into(), json!(deps));
            }
            Value::Object(m)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::SharedState;
    use crate::settings::{Credentials, GraphSettings};

    #[test]
    fn batch_request_debug_hides_the_body() {
        let r = BatchRequest::new("1", Method::POST, "/users").with_body(serde_json::json!({
            "passwordProfile": {"password": "B4tch-secret!"}
        }));
        let shown = format!("{r:?} {r:#?}");
        assert!(!shown.contains("B4tch-secret!"), "{shown}");
        assert!(shown.contains("/users"), "{shown}");
    }

    fn client() -> GraphClient {
        GraphClient::with_shared(
            GraphSettings::for_local("http://127.0.0.1:9"),
            Credentials::with_secret("t", "c", "s".into()),
            SharedState::isolated(),
        )
        .unwrap()
    }

    #[test]
    fn normalise_checks_ids_dependencies_and_headers() {
        let c = client();
        let ok = c
            .normalise_batch(vec![
                BatchRequest::new("1", Method::POST, "users").with_body(json!({"a": 1})),
                BatchRequest::get("2", "http://127.0.0.1:9/v1.0/users/x").depending_on("1"),
            ])
            .unwrap();
        assert_eq!(ok[0].url, "/users");
        assert_eq!(ok[0].headers["Content-Type"], "application/json");
        assert_eq!(ok[1].url, "/users/x");
        assert!(ok[1].headers.is_empty());
        let dup = c.normalise_batch(vec![
            BatchRequest::get("a", "/x"),
            BatchRequest::get("A", "/y"),
        ]);
        assert!(matches!(dup, Err(GraphError::Config(_))));
        let fwd = c.normalise_batch(vec![
            BatchRequest::get("a", "/x").depending_on("b"),
            BatchRequest::get("b", "/y"),
        ]);
        assert!(matches!(fwd, Err(GraphError::Config(_))));
    }

    #[test]
    fn item_errors_are_classified() {
        let r = BatchResponse {
            id: "1".into(),
            status: 400,
            headers: BTreeMap::new(),
            body: Some(json!({"error": {"code": "Request_BadRequest",
                "message": "Another object with the same value for property userPrincipalName already exists.",
                "details": [{"code": "ObjectConflict", "target": "userPrincipalName"}]}})),
            method: Method::POST,
            path: "/users".into(),
        };
        let e = r.error().unwrap();
        assert_eq!(e.property(), Some("userPrincipalName"));
        assert!(r.json::<Value>().is_err());
        let mut h = BTreeMap::new();
        h.insert("Retry-After".to_string(), "1.5".to_string());
        let t = BatchResponse {
            status: 429,
            headers: h,
            body: None,
            ..r.clone()
        };
        assert_eq!(
            t.error().unwrap().retry_after(),
            Some(Duration::from_millis(1500))
        );
    }
}
