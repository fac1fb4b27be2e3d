//! JSON `$batch` (docs/graph-behaviour.md#json-batching): ≤ 20 items, unique ids
//! (case-insensitive), `headers` with `Content-Type` whenever a `body` is present, relative URLs,
//! `dependsOn` with 424 for dependents of a failed item, responses in a shuffled (seeded) order.
//! Each item runs through the full pipeline of [`crate::graph::execute_single`] (auth, throttling,
//! faults, validation) and is logged and counted on its own.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use rand::seq::SliceRandom;
use serde_json::{Map, Value, json};

use crate::Inner;
use crate::graph::{GraphRequest, execute_single};
use crate::token::authenticate;
use crate::wire::{GraphError, GraphResponse};

fn bad(code: &'static str, message: impl Into<String>) -> GraphError {
    GraphError::new(StatusCode::BAD_REQUEST, code, message)
}

struct Item {
    id: String,
    method: Method,
    url: String,
    headers: Vec<(String, String)>,
    body: Option<Value>,
    depends_on: Vec<String>,
}

fn parse(body: &[u8]) -> Result<Vec<Item>, GraphError> {
    let invalid = || bad("BadRequest", "Invalid batch payload format.");
    let v: Value = serde_json::from_slice(body).map_err(|_| invalid())?;
    let requests = v
        .get("requests")
        .and_then(Value::as_array)
        .ok_or_else(invalid)?;
    if requests.len() > 20 {
        return Err(bad(
            "MaximumValueExceeded",
            "Number of batch request steps exceeds the maximum value of 20.",
        ));
    }
    let mut items: Vec<Item> = Vec::new();
    for r in requests {
        let item = parse_item(r, &items)?;
        items.push(item);
    }
    check_depends_on(&items)?;
    Ok(items)
}

/// One entry of `requests`; `earlier` are the entries before it (ids are unique).
fn parse_item(r: &Value, earlier: &[Item]) -> Result<Item, GraphError> {
    let invalid = || bad("BadRequest", "Invalid batch payload format.");
    let id = match r.get("id") {
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        _ => return Err(bad("BadRequest", "Request Id is a required field.")),
    };
    if earlier.iter().any(|i| i.id.eq_ignore_ascii_case(&id)) {
        return Err(bad(
            "BadRequest",
            format!("Request Id {id} has to be unique in a batch."),
        ));
    }
    let method = r
        .get("method")
        .and_then(Value::as_str)
        .and_then(|m| Method::from_bytes(m.to_ascii_uppercase().as_bytes()).ok())
        .ok_or_else(|| {
            bad(
                "BadRequest",
                format!("Request {id} has an invalid or missing method."),
            )
        })?;
    let url = r
        .get("url")
        .and_then(Value::as_str)
        .ok_or_else(|| {
            bad(
                "BadRequest",
                format!("Request {id} has an invalid or missing url."),
            )
        })?
        .to_owned();
    if url.contains("://") {
        return Err(bad(
            "BadRequest",
            format!(
                "Invalid request URI for request id {id}. The URL must be relative to the version root."
            ),
        ));
    }
    let headers: Vec<(String, String)> = r
        .get("headers")
        .and_then(Value::as_object)
        .map(|h| {
            h.iter()
                .map(|(k, v)| {
                    (
                        k.clone(),
                        v.as_str()
                            .map(str::to_owned)
                            .unwrap_or_else(|| v.to_string()),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    let body = r.get("body").filter(|b| !b.is_null()).cloned();
    if body.is_some()
        && !headers
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case("content-type"))
    {
        return Err(bad(
            "BadRequest",
            format!("Write request id : {id} does not contain Content-Type header or body."),
        ));
    }
    let depends_on = match r.get("dependsOn") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(d)) => d
            .iter()
            .map(|x| {
                x.as_str()
                    .map(str::to_owned)
                    .unwrap_or_else(|| x.to_string())
            })
            .collect(),
        Some(_) => return Err(invalid()),
    };
    Ok(Item {
        id,
        method,
        url,
        headers,
        body,
        depends_on,
    })
}

/// Every `dependsOn` names an item of the batch.
fn check_depends_on(items: &[Item]) -> Result<(), GraphError> {
    for item in items {
        for d in &item.depends_on {
            if !items.iter().any(|i| i.id.eq_ignore_ascii_case(d)) {
                return Err(bad(
                    "BadRequest",
                    format!("Request dependsOn id {d} does not exist in the batch."),
                ));
            }
        }
    }
    Ok(())
}

/// Runs a `$batch` envelope. The envelope is 200 when it parsed, whatever the items answered.
pub(crate) async fn run(inner: &Arc<Inner>, envelope: GraphRequest) -> GraphResponse {
    let tenant_id = inner.lock_state().tenant_id.clone();
    if let Err(e) = authenticate(
        &envelope.headers,
        &inner.key,
        &tenant_id,
        &inner.accepted_resources,
    ) {
        return e.into_resp("", "");
    }
    let items = match parse(&envelope.body) {
        Ok(i) => i,
        Err(e) => return e.into_resp("", ""),
    };
    let mut status: Vec<Option<u16>> = vec![None; items.len()];
    let mut responses: Vec<Value> = Vec::new();
    // Graph runs the items whose dependencies are answered side by side, in no set order
    // (https://learn.microsoft.com/graph/json-batching#sequencing-requests-with-the-dependson-property):
    // a round at a time, so the envelope takes as long as its slowest chain, not the sum.
    loop {
        let ready: Vec<usize> = (0..items.len())
            .filter(|&i| {
                status[i].is_none()
                    && items[i].depends_on.iter().all(|d| {
                        items
                            .iter()
                            .position(|x| x.id.eq_ignore_ascii_case(d))
                            .is_some_and(|j| status[j].is_some())
                    })
            })
            .collect();
        if ready.is_empty() {
            // Anything left waits on a cycle: fail it as a failed dependency.
            for (i, item) in items.iter().enumerate() {
                if status[i].is_none() {
                    status[i] = Some(424);
                    responses.push(failed_dependency(&item.id));
                }
            }
            break;
        }
        let mut running = Vec::new();
        for &i in &ready {
            let item = &items[i];
            let dep_failed = item.depends_on.iter().any(|d| {
                items
                    .iter()
                    .position(|x| x.id.eq_ignore_ascii_case(d))
                    .and_then(|j| status[j])
                    .is_some_and(|s| s >= 400)
            });
            if dep_failed {
                status[i] = Some(424);
                responses.push(failed_dependency(&item.id));
            } else {
                running.push(i);
            }
        }
        let answers = futures::future::join_all(
            running
                .iter()
                .map(|&i| execute_single(inner, item_request(&envelope, &items[i]))),
        )
        .await;
        for (i, resp) in running.into_iter().zip(answers) {
            status[i] = Some(resp.status.as_u16());
            responses.push(json!({
                "id": items[i].id,
                "status": resp.status.as_u16(),
                "headers": headers_json(&resp.headers, resp.body.is_some()),
                "body": resp.body.unwrap_or(Value::Null),
            }));
        }
    }
    if inner.knobs().shuffle_batch_responses {
        let mut rng = inner.lock_rng();
        responses.shuffle(&mut *rng);
    }
    GraphResponse::json(StatusCode::OK, json!({ "responses": responses }))
}

fn failed_dependency(id: &str) -> Value {
    json!({
        "id": id,
        "status": 424,
        "headers": {},
        "body": {
            "error": {
                "code": "FailedDependency",
                "message": "The request failed because it depended on another request that failed.",
            }
        },
    })
}

fn item_request(envelope: &GraphRequest, item: &Item) -> GraphRequest {
    let mut headers = HeaderMap::new();
    // Items inherit the envelope's credentials.
    for name in ["authorization", "client-request-id"] {
        if let Some(v) = envelope.headers.get(name) {
            headers.insert(HeaderName::from_static(name), v.clone());
        }
    }
    for (k, v) in &item.headers {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(k.to_ascii_lowercase().as_bytes()),
            HeaderValue::from_str(v),
        ) {
            headers.insert(name, value);
        }
    }
    let url = if item.url.starts_with('/') {
        item.url.clone()
    } else {
        format!("/{}", item.url)
    };
    let (path, query) = match url.split_once('?') {
        Some((p, q)) => (p.to_owned(), q.to_owned()),
        None => (url, String::new()),
    };
    GraphRequest {
        method: item.method.clone(),
        path,
        query,
        headers,
        body: item
            .body
            .as_ref()
            .map(|b| Bytes::from(b.to_string()))
            .unwrap_or_default(),
        base_url: envelope.base_url.clone(),
        batch_item: true,
    }
}

/// Headers of a response as a JSON object (for `$batch` items).
fn headers_json(headers: &[(String, String)], has_body: bool) -> Value {
    let mut m: HashMap<String, String> = HashMap::new();
    for (k, v) in headers {
        m.insert(k.clone(), v.clone());
    }
    if has_body {
        m.insert(
            "Content-Type".to_owned(),
            "application/json;odata.metadata=minimal;odata.streaming=true;IEEE754Compatible=false;charset=utf-8".to_owned(),
        );
    }
    let mut out = Map::new();
    let mut keys: Vec<_> = m.into_iter().collect();
    keys.sort();
    for (k, v) in keys {
        out.insert(k, Value::String(v));
    }
    Value::Object(out)
}
