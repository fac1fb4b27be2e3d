//! The webhook handler: `POST /events/{connection}` with a Standard Webhooks signed event.
//!
//! In order, and nothing is applied unless every check passes:
//! 1. method and path (405, 404), body size (413, over `M365_WEBHOOK_MAX_BODY_BYTES`);
//! 2. authentication: the connection's configuration and its `whsec_` secrets (both cached per
//!    container, see [`crate::context`]), then the signature: headers, ±tolerance timestamp, any
//!    `v1` signature matching any secret, compared in constant time. When no signature matches,
//!    the secret is read again once (a rotated webhook secret; at most once a minute per
//!    connection, counting a read whose secrets matched no signature) before refusing. An unknown
//!    connection, a connection without webhook secrets, an unusable configuration or secret,
//!    missing headers, a stale timestamp and a wrong signature all get the **same** 401 and
//!    body, so that nobody can tell which connections exist; the reason goes to the log. Only a
//!    failure to read the config index (the same for every name) answers 503;
//! 3. the event body (400);
//! 4. the `webhook-id` is claimed: recorded as in progress for `M365_EVENT_CLAIM_SECONDS`
//!    (longer than the function's timeout). Already in progress (a retry while the first attempt
//!    still runs): 409 with `Retry-After`, nothing applied. Done: 200 `duplicate`, not applied
//!    again;
//! 5. the named identities are re-read from the source and provisioned through the engine (a
//!    focused sync under the connection's lease) with the invocation's deadline less
//!    `M365_WEBHOOK_DEADLINE_MARGIN_SECONDS` as the run's deadline. When the run succeeds
//!    (also with per-object failures) the id is marked done for `M365_EVENT_RETENTION_DAYS`.
//!    Otherwise it is forgotten, so that the sender's retry is applied: the lease is held by
//!    another run (503 with `Retry-After`); the run stopped at the deadline with work left (503
//!    with `Retry-After`: what it applied is recorded, and the retry finishes the rest); the
//!    tenant or the source cannot be reached (503); the run failed (500).
//!
//! Per-object failures (a bad value for one user) answer 200: they are recorded and retried by
//! the scheduled sync, and a sender retry would not fix them.
//!
//! 500 and 503 bodies say nothing about the configuration or the failure: they carry the
//! invocation's request id (Lambda's, or one made up when there is no Lambda context), and the
//! log has the details under the same id.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

use lambda_http::http::{HeaderMap, Method, StatusCode};
use lambda_http::{Body, Request, RequestExt as _, Response};
use m365_core::RunStatus;
use m365_core::UnixMillis;
use m365_core::engine::{RunError, SyncOptions};
use m365_core::planner::Focus;
use m365_core::state::EventClaim;
use serde_json::json;

use crate::context::{Configured, Deployment, SetupFailure};
use crate::events::{EventTargets, parse_event};
use crate::metrics;
use crate::signature::{SignatureError, Verified, WebhookSecret, verify};

/// Seconds a sender is asked to wait when the connection is busy or the event is in progress.
pub(crate) const RETRY_AFTER_SECS: u32 = 30;

/// The body of every 401: the same whatever the reason, which only the log has.
const UNAUTHENTICATED: &str = "the request is not authenticated: sign it as Standard Webhooks \
                               specify, with a webhook secret of the connection it is posted to";

pub(crate) fn respond(status: StatusCode, body: serde_json::Value) -> Response<Body> {
    let mut response = Response::new(Body::from(body.to_string()));
    *response.status_mut() = status;
    if let Ok(value) = "application/json".parse() {
        response.headers_mut().insert("content-type", value);
    }
    response
}

pub(crate) fn reject(status: StatusCode, message: impl Into<String>) -> Response<Body> {
    let message = message.into();
    tracing::info!(status = status.as_u16(), reason = %message, "webhook request rejected");
    respond(status, json!({ "error": message }))
}

pub(crate) fn with_retry_after(mut response: Response<Body>) -> Response<Body> {
    if let Ok(value) = RETRY_AFTER_SECS.to_string().parse() {
        response.headers_mut().insert("retry-after", value);
    }
    response
}

/// The 401 of every authentication failure; `reason` is logged only.
pub(crate) fn unauthenticated(name: &str, reason: &str) -> Response<Body> {
    tracing::warn!(
        connection = name,
        reason,
        "webhook request not authenticated"
    );
    respond(
        StatusCode::UNAUTHORIZED,
        json!({ "error": UNAUTHENTICATED }),
    )
}

/// A 500 or 503 whose body names the request id only; the caller logged the details.
pub(crate) fn failure(status: StatusCode, invocation: &Invocation) -> Response<Body> {
    let message = if status == StatusCode::SERVICE_UNAVAILABLE {
        "the event cannot be processed now; retry later"
    } else {
        "the event could not be applied"
    };
    let response = respond(
        status,
        json!({"error": message, "request_id": invocation.request_id}),
    );
    if status == StatusCode::SERVICE_UNAVAILABLE {
        with_retry_after(response)
    } else {
        response
    }
}

/// The invocation a request arrived in: Lambda's request id and deadline, when there is a
/// Lambda context.
pub(crate) struct Invocation {
    pub(crate) request_id: String,
    /// When the run must stop: the invocation's deadline less the webhook's margin.
    pub(crate) stop_at: Option<UnixMillis>,
    /// The invocation's deadline itself.
    pub(crate) deadline: Option<UnixMillis>,
}

impl Invocation {
    fn of(request: &Request, deployment: &Deployment) -> Invocation {
        static GENERATED: AtomicU64 = AtomicU64::new(0);
        let context = request.lambda_context_ref();
        let request_id = context
            .map(|c| c.request_id.clone())
            .filter(|id| !id.is_empty())
            .unwrap_or_else(|| {
                let n = GENERATED.fetch_add(1, Ordering::Relaxed);
                format!("local-{}-{n}", deployment.clock.now())
            });
        let deadline = context
            .map(|c| c.deadline)
            .filter(|d| *d > 0)
            .map(|d| i64::try_from(d).unwrap_or(i64::MAX));
        let margin =
            i64::try_from(deployment.settings.webhook_deadline_margin.as_millis()).unwrap_or(0);
        Invocation {
            request_id,
            stop_at: deadline.map(|d| d.saturating_sub(margin)),
            deadline,
        }
    }
}

/// The connection name of `/events/{connection}`.
fn connection_of(path: &str) -> Option<&str> {
    let name = path.strip_prefix("/events/")?.trim_end_matches('/');
    let valid = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    valid.then_some(name)
}

/// The `whsec_` secrets among a connection's secrets. A malformed one is logged (by name) and
/// skipped.
fn webhook_secrets(extra: &BTreeMap<String, secrecy::SecretString>) -> Vec<WebhookSecret> {
    use secrecy::ExposeSecret as _;
    extra
        .iter()
        .filter(|(name, _)| name.starts_with(m365_aws::WEBHOOK_SECRET_PREFIX))
        .filter_map(|(name, value)| match WebhookSecret::parse(value.expose_secret()) {
            Ok(secret) => Some(secret),
            Err(error) => {
                tracing::error!(secret = %name, error = %error, "unusable webhook secret skipped");
                None
            }
        })
        .collect()
}

/// The two kinds of delivery the function accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    /// `POST /events/{connection}`: one Standard Webhooks signed event.
    StandardWebhooks,
    /// `POST /pingone/{connection}`: a PingOne subscription's batch of activities.
    PingOne,
}

/// Handles one Function URL request.
pub async fn handle(deployment: &Deployment, request: Request) -> Response<Body> {
    let invocation = Invocation::of(&request, deployment);
    if request.method() != Method::POST {
        return reject(
            StatusCode::METHOD_NOT_ALLOWED,
            "only POST /events/{connection} and POST /pingone/{connection} are served",
        );
    }
    let path = request.uri().path();
    let (name, route) = match (
        connection_of(path),
        crate::pingone_webhook::connection_of(path),
    ) {
        (Some(name), _) => (name.to_owned(), Route::StandardWebhooks),
        (None, Some(name)) => (name.to_owned(), Route::PingOne),
        (None, None) => {
            return reject(
                StatusCode::NOT_FOUND,
                "not found: post Standard Webhooks events to /events/{connection}, PingOne \
                 subscription batches to /pingone/{connection}",
            );
        }
    };
    let limit = deployment.settings.max_body_bytes;
    let declared = request
        .headers()
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    let body: &[u8] = request.body().as_ref();
    if body.len() > limit || declared.is_some_and(|n| n > limit) {
        return reject(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the body is over {limit} bytes; send fewer identities per event"),
        );
    }

    if route == Route::PingOne {
        return crate::pingone_webhook::handle(deployment, &invocation, &name, &request).await;
    }
    let (configured, verified) =
        match authenticate(deployment, &invocation, &name, request.headers(), body).await {
            Ok(authenticated) => authenticated,
            Err(response) => return response,
        };
    let targets = match parse_event(body) {
        Ok(targets) => targets,
        Err(error) => return reject(StatusCode::BAD_REQUEST, error.to_string()),
    };
    apply(
        deployment,
        &invocation,
        &name,
        configured,
        &verified,
        &targets,
    )
    .await
}

/// The connection's configuration and the verified delivery, or the response refusing it.
async fn authenticate(
    deployment: &Deployment,
    invocation: &Invocation,
    name: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<(Configured, Verified), Response<Body>> {
    let configured = webhook_configuration(deployment, invocation, name, unauthenticated).await?;
    let verified = check_signature(deployment, name, &configured, headers, body).await?;
    Ok((configured, verified))
}

/// The configuration of the connection a delivery names, or the response refusing it: the same
/// 401 (`unauthenticated`) for a connection that does not exist as for one that cannot be used,
/// and 503 only when the config index itself cannot be read.
pub(crate) async fn webhook_configuration(
    deployment: &Deployment,
    invocation: &Invocation,
    name: &str,
    unauthenticated: impl Fn(&str, &str) -> Response<Body>,
) -> Result<Configured, Response<Body>> {
    match deployment.webhook_configuration(name).await {
        Ok(configured) => Ok(configured),
        Err(error) if error.failure() == SetupFailure::NotConfigured => {
            Err(unauthenticated(name, "no such connection"))
        }
        Err(error) if error.failure() == SetupFailure::Unavailable => {
            // The config index could not be read: the same for every connection name.
            tracing::error!(connection = name, request_id = %invocation.request_id, error = %error, "cannot read the connection configurations");
            Err(failure(StatusCode::SERVICE_UNAVAILABLE, invocation))
        }
        Err(error) => {
            tracing::error!(connection = name, error = %error, "the connection's configuration is unusable: every webhook is refused until it is fixed");
            Err(unauthenticated(
                name,
                "the connection's configuration is unusable",
            ))
        }
    }
}

/// Claims the event id, runs the focused sync and answers with its outcome.
async fn apply(
    deployment: &Deployment,
    invocation: &Invocation,
    name: &str,
    configured: Configured,
    verified: &Verified,
    targets: &EventTargets,
) -> Response<Body> {
    let request_id = invocation.request_id.as_str();
    // Reaches the tenant: only after the cheap checks above.
    let connection = match deployment
        .connection_from(
            name,
            configured.config,
            configured.version,
            configured.secret_store,
        )
        .await
    {
        Ok(connection) => connection,
        Err(error) => {
            tracing::error!(connection = name, request_id, error = %error, "webhook cannot reach what the connection needs");
            let status = match error.failure() {
                SetupFailure::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
                _ => StatusCode::INTERNAL_SERVER_ERROR,
            };
            return failure(status, invocation);
        }
    };
    if let Err(response) =
        claim_event(deployment, invocation, &connection.key, name, verified).await
    {
        return response;
    }

    let focus = Focus {
        users: targets.users.clone(),
        groups: targets.groups.clone(),
    };
    let engine = connection.engine(deployment);
    let started = deployment.clock.now();
    let result = engine
        .sync(SyncOptions {
            holder: m365_core::LeaseHolder {
                owner: format!("webhook {}", verified.id),
                host: None,
                pid: None,
            },
            focus: Some(&focus),
            deadline: invocation.stop_at,
            ..SyncOptions::default()
        })
        .await;
    answer(
        deployment,
        invocation,
        &connection,
        verified,
        targets,
        result,
        started,
    )
    .await
}

/// Records the run's outcome for the event id (done or forgotten) and answers the sender.
async fn answer(
    deployment: &Deployment,
    invocation: &Invocation,
    connection: &crate::context::Connection,
    verified: &Verified,
    targets: &EventTargets,
    result: Result<m365_core::engine::SyncOutcome, RunError>,
    started: UnixMillis,
) -> Response<Body> {
    let name = connection.name.as_str();
    let request_id = invocation.request_id.as_str();
    let forget = async || {
        if let Err(error) = deployment
            .state
            .forget_event(&connection.key, &verified.id)
            .await
        {
            tracing::error!(connection = name, error = %error, "cannot forget the event id; its retries are refused as in progress until the claim expires");
        }
    };
    let outcome = match result {
        Ok(outcome) => outcome,
        Err(RunError::Busy { lease }) => {
            let owner = &lease.holder;
            forget().await;
            return with_retry_after(reject(
                StatusCode::SERVICE_UNAVAILABLE,
                format!(
                    "connection {name} is being synced by {owner}; retry in {RETRY_AFTER_SECS} s"
                ),
            ));
        }
        Err(error) => {
            forget().await;
            connection.secret_store.invalidate(name).await;
            tracing::error!(connection = name, request_id, error = %error, "webhook run failed");
            return failure(StatusCode::INTERNAL_SERVER_ERROR, invocation);
        }
    };
    let run = &outcome.run;
    let duration = u64::try_from(deployment.clock.now() - started).unwrap_or(0);
    metrics::emit(&metrics::run_metrics(
        "webhook",
        name,
        &run.counts,
        duration,
        deployment.clock.now(),
    ));
    let status = serde_json::to_value(run.status).unwrap_or_default();
    tracing::info!(
        connection = name,
        request_id,
        event_id = %verified.id,
        event_type = %targets.event_type,
        users = targets.users.len(),
        groups = targets.groups.len(),
        status = %status,
        duration_ms = duration,
        counts = %serde_json::to_string(&run.counts).unwrap_or_default(),
        message = run.message.as_deref().unwrap_or_default(),
        "webhook run summary"
    );
    match run.status {
        RunStatus::Failed => {
            forget().await;
            connection.secret_store.invalidate(name).await;
            return failure(StatusCode::INTERNAL_SERVER_ERROR, invocation);
        }
        RunStatus::Checkpointed => {
            // Stopped at the deadline: what it applied is recorded; the retry does the rest.
            forget().await;
            return with_retry_after(respond(
                StatusCode::SERVICE_UNAVAILABLE,
                json!({
                    "error": format!(
                        "the event's run reached the invocation's deadline before it finished; retry in {RETRY_AFTER_SECS} s to apply the rest"
                    ),
                    "event": verified.id,
                    "run": run.id,
                    "counts": run.counts,
                }),
            ));
        }
        _ => {}
    }
    let retention = i64::try_from(deployment.settings.event_retention.as_millis()).unwrap_or(0);
    let done_until = deployment.clock.now() + retention;
    if let Err(error) = deployment
        .state
        .complete_event(&connection.key, &verified.id, done_until)
        .await
    {
        // Applied all the same; a retry after the claim expires applies it again (no change).
        tracing::error!(connection = name, request_id, event_id = %verified.id, error = %error, "cannot mark the event id done");
    }
    respond(
        StatusCode::OK,
        json!({
            "status": status,
            "event": verified.id,
            "run": run.id,
            "counts": run.counts,
            "message": run.message,
        }),
    )
}

/// Claims the event id (module docs, step 4); `Err` holds the answer when the event is not to
/// be applied now.
async fn claim_event(
    deployment: &Deployment,
    invocation: &Invocation,
    key: &str,
    name: &str,
    verified: &Verified,
) -> Result<(), Response<Body>> {
    let now = deployment.clock.now();
    let claim = i64::try_from(deployment.settings.event_claim.as_millis()).unwrap_or(0);
    // Held at least until the invocation cannot be running any more.
    let claimed_until = (now + claim).max(invocation.deadline.unwrap_or(0) + 1_000);
    match deployment
        .state
        .remember_event(key, &verified.id, now, claimed_until)
        .await
    {
        Ok(EventClaim::New) => Ok(()),
        Ok(EventClaim::InProgress) => {
            tracing::info!(connection = name, event_id = %verified.id, "event in progress in another attempt");
            Err(with_retry_after(respond(
                StatusCode::CONFLICT,
                json!({
                    "error": format!(
                        "event {} is being applied by an earlier delivery attempt; retry in {RETRY_AFTER_SECS} s",
                        verified.id
                    ),
                    "event": verified.id,
                }),
            )))
        }
        Ok(EventClaim::Done) => {
            tracing::info!(connection = name, event_id = %verified.id, "duplicate event: already applied");
            Err(respond(
                StatusCode::OK,
                json!({"status": "duplicate", "event": verified.id}),
            ))
        }
        Err(error) => {
            tracing::error!(connection = name, request_id = %invocation.request_id, error = %error, "cannot record the event id");
            Err(failure(StatusCode::SERVICE_UNAVAILABLE, invocation))
        }
    }
}

/// Verifies the signature with the cached secrets, and once more with secrets read again when
/// none matched (the sender may sign with a rotated secret already): at most once a minute per
/// connection, counting reads whose secrets matched no signature. Every refusal is the same 401.
async fn check_signature(
    deployment: &Deployment,
    name: &str,
    configured: &Configured,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Verified, Response<Body>> {
    let store = configured.secret_store.as_ref();
    let tolerance = deployment.settings.tolerance_secs;
    let mut refreshed = false;
    loop {
        let reads = store.reads();
        let secrets = match deployment.webhook_secrets(name, store).await {
            Ok(secrets) => secrets,
            Err(error) => {
                tracing::error!(connection = name, error = %error, "cannot read the connection's secret: every webhook is refused");
                return Err(unauthenticated(
                    name,
                    "the connection's secret cannot be read",
                ));
            }
        };
        // A store without a cache reads afresh every time.
        let just_read = reads.is_none() || store.reads() != reads;
        let keys = webhook_secrets(&secrets.extra);
        if keys.is_empty() {
            tracing::error!(
                connection = name,
                "the connection's secret has no webhook_secrets: every webhook is refused"
            );
            return Err(unauthenticated(
                name,
                "webhooks are not enabled for this connection",
            ));
        }
        let now_secs = deployment.clock.now().div_euclid(1000);
        match verify(&keys, headers, body, now_secs, tolerance) {
            Ok(verified) => return Ok(verified),
            Err(SignatureError::NoValidSignature) if just_read => {
                deployment.secret_read_for_signature(name);
                return Err(unauthenticated(
                    name,
                    &SignatureError::NoValidSignature.to_string(),
                ));
            }
            Err(SignatureError::NoValidSignature)
                if !refreshed && deployment.may_refresh_for_signature(name) =>
            {
                refreshed = true;
                store.invalidate(name).await;
            }
            Err(error) => return Err(unauthenticated(name, &error.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_names_come_from_the_events_path() {
        assert_eq!(connection_of("/events/contoso"), Some("contoso"));
        assert_eq!(connection_of("/events/contoso/"), Some("contoso"));
        assert_eq!(connection_of("/events/"), None);
        assert_eq!(connection_of("/events/a/b"), None);
        assert_eq!(connection_of("/other/contoso"), None);
        assert_eq!(connection_of("/events/con toso"), None);
    }
}
