//! The webhook handler: `POST /events/{connection}` with a Standard Webhooks signed event.
//!
//! In order, and nothing is applied unless every check passes:
//! 1. method and path (405, 404), body size (413, over `M365_WEBHOOK_MAX_BODY_BYTES`);
//! 2. the connection's configuration (404 when none is uploaded);
//! 3. the signature with the connection's `whsec_` secrets: headers, ±tolerance timestamp, any
//!    `v1` signature matching any secret, compared in constant time (401). When no signature
//!    matches, the secret is read again once (a rotated webhook secret; at most once a minute
//!    per connection) before refusing;
//! 4. the event body (400);
//! 5. the `webhook-id` is remembered for `M365_EVENT_RETENTION_DAYS`: a duplicate is answered
//!    200 and not applied again;
//! 6. the named identities are re-read from the source and provisioned through the engine (a
//!    focused sync under the connection's lease). When the run cannot take place (the lease is
//!    held: 503 with `Retry-After`; the tenant or the source cannot be reached: 503; a run
//!    failure: 500) the event id is forgotten, so the sender's retry is applied.
//!
//! Per-object failures (a bad value for one user) answer 200: they are recorded and retried by
//! the scheduled sync, and a sender retry would not fix them.

use std::collections::BTreeMap;

use lambda_http::http::{HeaderMap, Method, StatusCode};
use lambda_http::{Body, Request, Response};
use m365_core::engine::{RunError, SyncOptions};
use m365_core::planner::Focus;
use m365_core::{RunStatus, SecretStore, StateStore as _};
use serde_json::json;

use crate::context::{Deployment, SetupError};
use crate::events::parse_event;
use crate::metrics;
use crate::signature::{SignatureError, WebhookSecret, verify};

/// Seconds a sender is asked to wait when the connection is busy.
const RETRY_AFTER_SECS: u32 = 30;

fn respond(status: StatusCode, body: serde_json::Value) -> Response<Body> {
    let mut response = Response::new(Body::from(body.to_string()));
    *response.status_mut() = status;
    if let Ok(value) = "application/json".parse() {
        response.headers_mut().insert("content-type", value);
    }
    response
}

fn reject(status: StatusCode, message: impl Into<String>) -> Response<Body> {
    let message = message.into();
    tracing::info!(status = status.as_u16(), reason = %message, "webhook request rejected");
    respond(status, json!({ "error": message }))
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

/// Handles one Function URL request.
pub async fn handle(deployment: &Deployment, request: Request) -> Response<Body> {
    if request.method() != Method::POST {
        return reject(
            StatusCode::METHOD_NOT_ALLOWED,
            "only POST /events/{connection} is served",
        );
    }
    let Some(name) = connection_of(request.uri().path()).map(str::to_owned) else {
        return reject(
            StatusCode::NOT_FOUND,
            "not found: post events to /events/{connection}",
        );
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

    let (config, version, secret_store) = match deployment.configuration(&name).await {
        Ok(found) => found,
        Err(SetupError::NotConfigured(_)) => {
            return reject(
                StatusCode::NOT_FOUND,
                format!("unknown connection {name:?}"),
            );
        }
        Err(error) => return setup_failure(&name, &error),
    };
    let verified =
        match check_signature(deployment, &name, &secret_store, request.headers(), body).await {
            Ok(verified) => verified,
            Err(response) => return response,
        };
    let targets = match parse_event(body) {
        Ok(targets) => targets,
        Err(error) => return reject(StatusCode::BAD_REQUEST, error.to_string()),
    };

    // Reaches the tenant: only after the cheap checks above.
    let connection = match deployment
        .connection_from(&name, config, version, secret_store)
        .await
    {
        Ok(connection) => connection,
        Err(error) => return setup_failure(&name, &error),
    };
    let now = deployment.clock.now();
    let retention = i64::try_from(deployment.settings.event_retention.as_millis()).unwrap_or(0);
    match deployment
        .state
        .remember_event(&connection.key, &verified.id, now, now + retention)
        .await
    {
        Ok(true) => {}
        Ok(false) => {
            tracing::info!(connection = %name, event_id = %verified.id, "duplicate event: already applied");
            return respond(
                StatusCode::OK,
                json!({"status": "duplicate", "event": verified.id}),
            );
        }
        Err(error) => {
            tracing::error!(connection = %name, error = %error, "cannot record the event id");
            return respond(
                StatusCode::SERVICE_UNAVAILABLE,
                json!({"error": "the state store is unavailable; retry later"}),
            );
        }
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
            ..SyncOptions::default()
        })
        .await;
    let forget = async || {
        if let Err(error) = deployment
            .state
            .forget_event(&connection.key, &verified.id)
            .await
        {
            tracing::error!(connection = %name, error = %error, "cannot forget the event id; its retry will be taken for a duplicate");
        }
    };
    let outcome = match result {
        Ok(outcome) => outcome,
        Err(RunError::Busy { lease }) => {
            let owner = &lease.holder;
            forget().await;
            let mut response = reject(
                StatusCode::SERVICE_UNAVAILABLE,
                format!(
                    "connection {name} is being synced by {owner}; retry in {RETRY_AFTER_SECS} s"
                ),
            );
            if let Ok(value) = RETRY_AFTER_SECS.to_string().parse() {
                response.headers_mut().insert("retry-after", value);
            }
            return response;
        }
        Err(error) => {
            forget().await;
            connection.secret_store.invalidate(&name).await;
            tracing::error!(connection = %name, error = %error, "webhook run failed");
            return respond(
                StatusCode::INTERNAL_SERVER_ERROR,
                json!({"error": format!("the event could not be applied: {error}")}),
            );
        }
    };
    let run = &outcome.run;
    let duration = u64::try_from(deployment.clock.now() - started).unwrap_or(0);
    metrics::emit(&metrics::run_metrics(
        "webhook",
        &name,
        &run.counts,
        duration,
        deployment.clock.now(),
    ));
    let status = serde_json::to_value(run.status).unwrap_or_default();
    tracing::info!(
        connection = %name,
        event_id = %verified.id,
        event_type = %targets.event_type,
        users = targets.users.len(),
        groups = targets.groups.len(),
        status = %status,
        duration_ms = duration,
        counts = %serde_json::to_string(&run.counts).unwrap_or_default(),
        "webhook run summary"
    );
    if run.status == RunStatus::Failed {
        forget().await;
        connection.secret_store.invalidate(&name).await;
        return respond(
            StatusCode::INTERNAL_SERVER_ERROR,
            json!({"error": run.message.clone().unwrap_or_else(|| "the run failed".into())}),
        );
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

/// Verifies the signature with the cached secrets, and once more with secrets read again when
/// none matched (the sender may sign with a rotated secret already).
async fn check_signature(
    deployment: &Deployment,
    name: &str,
    store: &m365_aws::SecretsManagerSecretStore,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<crate::signature::Verified, Response<Body>> {
    let tolerance = deployment.settings.tolerance_secs;
    let mut refreshed = false;
    loop {
        let secrets = match store.connection_secrets(name).await {
            Ok(secrets) => secrets,
            Err(error) => {
                return Err(setup_failure(name, &SetupError::Invalid(error.to_string())));
            }
        };
        let keys = webhook_secrets(&secrets.extra);
        if keys.is_empty() {
            tracing::error!(
                connection = name,
                "the connection's secret has no webhook_secrets: every webhook is refused"
            );
            return Err(reject(
                StatusCode::UNAUTHORIZED,
                "webhooks are not enabled for this connection",
            ));
        }
        let now_secs = deployment.clock.now().div_euclid(1000);
        match verify(&keys, headers, body, now_secs, tolerance) {
            Ok(verified) => return Ok(verified),
            Err(SignatureError::NoValidSignature)
                if !refreshed && deployment.may_refresh_for_signature(name) =>
            {
                refreshed = true;
                store.invalidate(name).await;
            }
            Err(error) => return Err(reject(StatusCode::UNAUTHORIZED, error.to_string())),
        }
    }
}

fn setup_failure(name: &str, error: &SetupError) -> Response<Body> {
    tracing::error!(connection = name, error = %error, "webhook cannot reach what the connection needs");
    let status = match error {
        SetupError::NotConfigured(_) => StatusCode::NOT_FOUND,
        SetupError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        SetupError::Invalid(_) | SetupError::Credentials(_) => StatusCode::INTERNAL_SERVER_ERROR,
    };
    // The sender sees no configuration detail; the log has it.
    respond(
        status,
        json!({"error": "the connection cannot process events now; see the function's log"}),
    )
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
