//! The request pipeline: token → throttling → scripted/random faults → latency → the route
//! (which checks permissions and validates as Graph does) → request log and stats → state file.

use std::sync::Arc;
use std::time::{Duration, Instant};

use http::Method;
use serde_json::Value;

use super::faults::{Fault, decide_fault, fault_error};
use super::request::{GraphRequest, RequestContext, header, parse_query};
use super::route::{Route, dispatch};
use crate::config::Knobs;
use crate::throttle::Throttled;
use crate::token::{Caller, authenticate};
use crate::wire::{GraphError, GraphResponse, now_ms};
use crate::{Inner, LoggedRequest};

/// Outcome of a request for the log.
struct Outcome {
    response: GraphResponse,
    app_id: Option<String>,
    resource_units: u32,
    throttled: bool,
}

impl Outcome {
    /// A request refused before it reached the tenant.
    fn refused(error: GraphError, app_id: Option<String>) -> Outcome {
        Outcome {
            response: error.into_resp("", ""),
            app_id,
            resource_units: 0,
            throttled: false,
        }
    }

    /// A request refused with 429 because the caller's throttling buckets are empty.
    fn throttled(throttled: Throttled, app_id: String) -> Outcome {
        let error = fault_error(429, Some(throttled.retry_after_secs))
            .with_header("x-ms-throttle-scope", throttled.scope)
            .with_header("x-ms-throttle-information", throttled.information);
        Outcome {
            throttled: true,
            ..Outcome::refused(error, Some(app_id))
        }
    }
}

pub(super) fn is_write(method: &Method) -> bool {
    matches!(
        *method,
        Method::POST | Method::PATCH | Method::PUT | Method::DELETE
    )
}

/// Runs one request (not `$batch`) through the whole pipeline.
pub(crate) async fn execute_single(inner: &Arc<Inner>, req: GraphRequest) -> GraphResponse {
    let started = Instant::now();
    let request_id = uuid::Uuid::new_v4().to_string();
    let client_request_id = header(&req.headers, "client-request-id")
        .map(str::to_owned)
        .unwrap_or_else(|| request_id.clone());
    let Outcome {
        mut response,
        app_id,
        resource_units,
        throttled,
    } = pipeline(inner, &req).await;
    stamp(&mut response, &request_id, &client_request_id);
    let path_and_query = if req.query.is_empty() {
        format!("/v1.0{}", req.path)
    } else {
        format!("/v1.0{}?{}", req.path, req.query)
    };
    inner.record(LoggedRequest {
        method: req.method.to_string(),
        path: path_and_query,
        status: response.status.as_u16(),
        app_id,
        resource_units,
        write: is_write(&req.method),
        throttled,
        batch_item: req.batch_item,
        duration_ms: started.elapsed().as_secs_f64() * 1000.0,
        request_id,
    });
    response
}

/// Adds `request-id`/`client-request-id` headers and fills them into an error's `innerError`.
pub(crate) fn stamp(response: &mut GraphResponse, request_id: &str, client_request_id: &str) {
    response
        .headers
        .push(("request-id".to_owned(), request_id.to_owned()));
    response
        .headers
        .push(("client-request-id".to_owned(), client_request_id.to_owned()));
    if let Some(body) = response.body.as_mut()
        && let Some(inner_err) = body
            .get_mut("error")
            .and_then(|e| e.get_mut("innerError"))
            .and_then(Value::as_object_mut)
    {
        inner_err.insert("request-id".into(), Value::String(request_id.to_owned()));
        inner_err.insert(
            "client-request-id".into(),
            Value::String(client_request_id.to_owned()),
        );
    }
}

async fn pipeline(inner: &Arc<Inner>, req: &GraphRequest) -> Outcome {
    let (tenant_id, users) = {
        let tenant = inner.lock_state();
        (tenant.tenant_id.clone(), tenant.live_user_count())
    };
    let caller = match authenticate(
        &req.headers,
        &inner.key,
        &tenant_id,
        &inner.accepted_resources,
    ) {
        Ok(caller) => caller,
        Err(e) => return Outcome::refused(e, None),
    };
    let charged = match charge(inner, req, &caller, &tenant_id, users) {
        Ok(charged) => charged,
        Err(throttled) => return Outcome::throttled(throttled, caller.app_id.clone()),
    };
    let fault = decide_fault(inner, &req.method, &req.path);
    let knobs = inner.knobs();
    let latency = if is_write(&req.method) {
        knobs.write_latency_ms
    } else {
        knobs.read_latency_ms
    };
    if latency > 0 {
        tokio::time::sleep(Duration::from_millis(latency)).await;
    }
    let mut outcome = Outcome {
        response: GraphResponse::no_content(),
        app_id: Some(caller.app_id.clone()),
        resource_units: charged.resource_units,
        throttled: false,
    };
    if let Fault::Before(status, retry) = fault {
        inner.count_fault(Some(status));
        outcome.throttled = status == 429;
        outcome.response = fault_error(status, retry).into_resp("", "");
        return outcome;
    }
    let mut response = run_route(inner, req, &caller, &knobs);
    response.headers.extend(charged.headers);
    outcome.response = apply_late_fault(inner, fault, &knobs, response).await;
    outcome
}

/// What throttling charged a request: its resource units and the headers that say so.
struct Charged {
    resource_units: u32,
    headers: Vec<(String, String)>,
}

/// Charges the request to the caller's throttling buckets.
fn charge(
    inner: &Inner,
    req: &GraphRequest,
    caller: &Caller,
    tenant_id: &str,
    users: usize,
) -> Result<Charged, Throttled> {
    let priority_low = header(&req.headers, "x-ms-throttle-priority")
        .is_some_and(|p| p.eq_ignore_ascii_case("low"));
    let charge = inner.throttle.charge(
        &caller.app_id,
        tenant_id,
        users,
        &req.method,
        &req.path,
        &req.query,
        priority_low,
    )?;
    let mut headers = vec![(
        "x-ms-resource-unit".to_owned(),
        charge.resource_units.to_string(),
    )];
    if let Some(p) = charge.limit_percentage {
        headers.push((
            "x-ms-throttle-limit-percentage".to_owned(),
            format!("{p:.1}"),
        ));
    }
    Ok(Charged {
        resource_units: charge.resource_units,
        headers,
    })
}

/// Parses the route and runs its handler under the tenant lock; writes the state file when the
/// handler changed the tenant.
fn run_route(inner: &Inner, req: &GraphRequest, caller: &Caller, knobs: &Knobs) -> GraphResponse {
    let (result, mutated) = {
        let mut tenant = inner.lock_state();
        let mut context = RequestContext {
            caller,
            now: now_ms(),
            lag: knobs.replication_lag_ms,
            request: req,
            query: parse_query(&req.query),
            mutated: false,
            delta: &knobs.delta,
        };
        let result = Route::parse(&req.method, &req.path)
            .and_then(|route| dispatch(route, &mut tenant, &mut context));
        if context.mutated {
            let lifetime_ms = knobs.delta.token_lifetime_secs.saturating_mul(1000);
            tenant
                .changes
                .compact(context.now.saturating_sub(lifetime_ms));
        }
        (result, context.mutated)
    };
    if mutated {
        inner.persist();
    }
    result.unwrap_or_else(|e| e.into_resp("", ""))
}

/// A fault that strikes after the tenant has applied the request: an error in place of the
/// response, or the response after the timeout delay.
async fn apply_late_fault(
    inner: &Inner,
    fault: Fault,
    knobs: &Knobs,
    response: GraphResponse,
) -> GraphResponse {
    match fault {
        Fault::After(status, retry) => {
            inner.count_fault(Some(status));
            fault_error(status, retry).into_resp("", "")
        }
        Fault::Timeout => {
            inner.count_fault(None);
            tokio::time::sleep(Duration::from_millis(knobs.faults.timeout_ms)).await;
            response
        }
        Fault::None | Fault::Before(..) => response,
    }
}
