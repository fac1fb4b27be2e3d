//! `POST /pingone/{connection}`: a PingOne subscription's batch of ACTIVITY records
//! (<https://developer.pingidentity.com/pingone-api/platform/subscriptions-webhooks.html>).
//!
//! PingOne signs nothing: a subscription authenticates with static headers it sends with every
//! POST (`httpEndpoint.headers`). The connection names the header (`[source] webhook_header`,
//! default `Authorization`) and the secret holding its value (`webhook_header_secret`, default
//! `pingone_webhook_header`); the value presented is compared with it in constant time. Any
//! failure — no such connection, a connection whose source is not PingOne, no such secret, a
//! wrong or missing header — is the same 401, whose reason only the log has. When the header
//! does not match the cached secret, the secret is read again once (a rotated value; at most
//! once a minute per connection) before refusing.
//!
//! PingOne sends a batch again until it gets 200, and holds back every later event meanwhile.
//! So the content of a batch never earns another answer: records that cannot be read, or of a
//! type the connector does not act on, are logged (`pingone webhook record skipped`, with their
//! place, id, type and reason) and listed in the 200's body. The records read are deduplicated by
//! their `id` (claimed for `M365_EVENT_CLAIM_SECONDS`, then kept done for
//! `M365_EVENT_RETENTION_DAYS`); the users and groups they name are coalesced (three updates of
//! one user are one read) and provisioned by one focused run that reads each of them again from
//! PingOne — the record's content is never trusted.
//!
//! Answers that are not about content: another run holds the connection, the tenant or PingOne
//! cannot be reached (503 with `Retry-After`), the run failed (500), a record of the batch is
//! being applied by an earlier attempt (409 with `Retry-After`); the records' claims are then
//! forgotten and PingOne's retry applies them. A run that reaches the invocation's deadline
//! answers 200: what it applied is recorded, and the scheduled sync finishes the rest (its
//! activities cursor names the same changes; a full pass finds them in any case).

use std::collections::BTreeMap;

use lambda_http::http::{HeaderMap, StatusCode};
use lambda_http::{Body, Request, Response};
use m365_core::RunStatus;
use m365_core::config::SourceConfig;
use m365_core::config::pingone_source::PingOneSourceConfig;
use m365_core::engine::{RunError, SyncOptions};
use m365_core::planner::Focus;
use m365_core::state::EventClaim;
use secrecy::{ExposeSecret as _, SecretString};
use serde_json::json;
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq as _;

use crate::context::{Configured, Connection, Deployment};
use crate::metrics;
use crate::pingone_batch::{Activity, Batch, coalesce, parse_batch};
use crate::webhook::{
    Invocation, RETRY_AFTER_SECS, failure, reject, respond, webhook_configuration, with_retry_after,
};

/// The body of every 401: the same whatever the reason, which only the log has.
const UNAUTHENTICATED: &str = "the request is not authenticated: send the header and value the \
                               connection expects from its PingOne subscription";

/// The connection name of `/pingone/{connection}`.
pub fn connection_of(path: &str) -> Option<&str> {
    let name = path.strip_prefix("/pingone/")?.trim_end_matches('/');
    let valid = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    valid.then_some(name)
}

fn unauthenticated(name: &str, reason: &str) -> Response<Body> {
    tracing::warn!(
        connection = name,
        reason,
        "PingOne webhook request not authenticated"
    );
    respond(
        StatusCode::UNAUTHORIZED,
        json!({ "error": UNAUTHENTICATED }),
    )
}

/// Whether `presented` equals `expected`, in time that does not depend on where they differ or
/// on their lengths (both are hashed first).
fn same_secret(presented: &[u8], expected: &SecretString) -> bool {
    let a = Sha256::digest(presented);
    let b = Sha256::digest(expected.expose_secret().as_bytes());
    a.ct_eq(&b).into()
}

/// Handles one PingOne delivery to `name` (method, path and body size already checked).
pub(crate) async fn handle(
    deployment: &Deployment,
    invocation: &Invocation,
    name: &str,
    request: &Request,
) -> Response<Body> {
    let configured =
        match webhook_configuration(deployment, invocation, name, unauthenticated).await {
            Ok(configured) => configured,
            Err(response) => return response,
        };
    let SourceConfig::Pingone(settings) = &configured.config.source else {
        return unauthenticated(name, "the connection's source is not PingOne");
    };
    let settings = settings.clone();
    if let Err(response) =
        check_header(deployment, name, &configured, &settings, request.headers()).await
    {
        return response;
    }
    let batch = parse_batch(request.body().as_ref());
    for skipped in &batch.skipped {
        tracing::warn!(
            connection = name,
            index = skipped.index,
            event_id = skipped.id.as_deref().unwrap_or_default(),
            action = skipped.action.as_deref().unwrap_or_default(),
            reason = %skipped.reason,
            "pingone webhook record skipped"
        );
    }
    if batch.activities.is_empty() {
        return respond(
            StatusCode::OK,
            json!({"status": "nothing to apply", "events": batch.skipped.len(), "skipped": batch.skipped}),
        );
    }
    apply(deployment, invocation, name, configured, &batch).await
}

/// Checks the static header against the connection's secret, reading the secret again once
/// when it does not match a cached copy.
async fn check_header(
    deployment: &Deployment,
    name: &str,
    configured: &Configured,
    settings: &PingOneSourceConfig,
    headers: &HeaderMap,
) -> Result<(), Response<Body>> {
    let store = configured.secret_store.as_ref();
    let presented = headers
        .get(settings.webhook_header.trim())
        .map(|v| v.as_bytes().to_vec());
    let mut refreshed = false;
    loop {
        let reads = store.reads();
        let secrets = deployment
            .webhook_secrets(name, store)
            .await
            .map_err(|error| {
                tracing::error!(connection = name, error = %error, "cannot read the connection's secret: every PingOne webhook is refused");
                unauthenticated(name, "the connection's secret cannot be read")
            })?;
        let just_read = reads.is_none() || store.reads() != reads;
        let Some(expected) = secrets.extra.get(&settings.webhook_header_secret) else {
            tracing::error!(
                connection = name,
                secret = %settings.webhook_header_secret,
                "the connection's secret has no value for the PingOne webhook header: every PingOne webhook is refused"
            );
            return Err(unauthenticated(
                name,
                "PingOne webhooks are not enabled for this connection",
            ));
        };
        let Some(presented) = &presented else {
            return Err(unauthenticated(
                name,
                &format!("no {} header", settings.webhook_header),
            ));
        };
        if same_secret(presented, expected) {
            return Ok(());
        }
        if just_read {
            deployment.secret_read_for_signature(name);
        } else if !refreshed && deployment.may_refresh_for_signature(name) {
            refreshed = true;
            store.invalidate(name).await;
            continue;
        }
        return Err(unauthenticated(
            name,
            &format!("the {} header does not match", settings.webhook_header),
        ));
    }
}

/// Claims the batch's records, runs one focused sync of what they name, and answers.
async fn apply(
    deployment: &Deployment,
    invocation: &Invocation,
    name: &str,
    configured: Configured,
    batch: &Batch,
) -> Response<Body> {
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
            tracing::error!(connection = name, request_id = %invocation.request_id, error = %error, "PingOne webhook cannot reach what the connection needs");
            let status = match error.failure() {
                crate::context::SetupFailure::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
                _ => StatusCode::INTERNAL_SERVER_ERROR,
            };
            return failure(status, invocation);
        }
    };
    let claims = match claim(deployment, invocation, &connection, &batch.activities).await {
        Ok(claims) => claims,
        Err(response) => return response,
    };
    if claims.new.is_empty() {
        tracing::info!(
            connection = name,
            duplicates = claims.duplicates,
            "PingOne batch already applied"
        );
        return respond(
            StatusCode::OK,
            json!({"status": "duplicate", "events": batch.activities.len() + batch.skipped.len(),
                   "duplicates": claims.duplicates, "skipped": batch.skipped}),
        );
    }
    let (users, groups) = coalesce(claims.new.iter().copied());
    let focus = Focus { users, groups };
    let engine = connection.engine(deployment);
    let started = deployment.clock.now();
    let result = engine
        .sync(SyncOptions {
            holder: m365_core::LeaseHolder {
                owner: format!("pingone webhook {}", invocation.request_id),
                host: None,
                pid: None,
            },
            focus: Some(&focus),
            deadline: invocation.stop_at,
            ..SyncOptions::default()
        })
        .await;
    let report = Report {
        batch,
        claims: &claims,
        focus: &focus,
        started,
    };
    answer(deployment, invocation, &connection, result, &report).await
}

/// What claiming a batch's records gave.
struct Claims<'a> {
    /// Records not seen before, now claimed.
    new: Vec<&'a Activity>,
    /// Records already applied.
    duplicates: usize,
}

async fn claim<'a>(
    deployment: &Deployment,
    invocation: &Invocation,
    connection: &Connection,
    activities: &'a [Activity],
) -> Result<Claims<'a>, Response<Body>> {
    let now = deployment.clock.now();
    let span = i64::try_from(deployment.settings.event_claim.as_millis()).unwrap_or(0);
    let claimed_until = (now + span).max(invocation.deadline.unwrap_or(0) + 1_000);
    let mut claims = Claims {
        new: Vec::new(),
        duplicates: 0,
    };
    // One record can appear twice in a batch; it is claimed once.
    let mut seen = BTreeMap::new();
    for activity in activities {
        if seen.insert(activity.id.as_str(), ()).is_some() {
            claims.duplicates += 1;
            continue;
        }
        let claim = deployment
            .state
            .remember_event(&connection.key, &activity.id, now, claimed_until)
            .await;
        match claim {
            Ok(EventClaim::New) => claims.new.push(activity),
            Ok(EventClaim::Done) => claims.duplicates += 1,
            Ok(EventClaim::InProgress) => {
                forget(deployment, connection, &claims.new).await;
                tracing::info!(connection = %connection.name, event_id = %activity.id, "a record of the batch is being applied by an earlier attempt");
                return Err(with_retry_after(respond(
                    StatusCode::CONFLICT,
                    json!({"error": format!(
                        "record {} is being applied by an earlier delivery attempt; retry in {RETRY_AFTER_SECS} s",
                        activity.id
                    )}),
                )));
            }
            Err(error) => {
                forget(deployment, connection, &claims.new).await;
                tracing::error!(connection = %connection.name, request_id = %invocation.request_id, error = %error, "cannot record the batch's record ids");
                return Err(failure(StatusCode::SERVICE_UNAVAILABLE, invocation));
            }
        }
    }
    Ok(claims)
}

async fn forget(deployment: &Deployment, connection: &Connection, activities: &[&Activity]) {
    for activity in activities {
        if let Err(error) = deployment
            .state
            .forget_event(&connection.key, &activity.id)
            .await
        {
            tracing::error!(connection = %connection.name, event_id = %activity.id, error = %error, "cannot forget a record id; its retries are refused as in progress until the claim expires");
        }
    }
}

struct Report<'a> {
    batch: &'a Batch,
    claims: &'a Claims<'a>,
    focus: &'a Focus,
    started: m365_core::UnixMillis,
}

/// Records the run's outcome for the claimed records (done or forgotten) and answers.
async fn answer(
    deployment: &Deployment,
    invocation: &Invocation,
    connection: &Connection,
    result: Result<m365_core::engine::SyncOutcome, RunError>,
    report: &Report<'_>,
) -> Response<Body> {
    let name = connection.name.as_str();
    let outcome = match result {
        Ok(outcome) if outcome.run.status != RunStatus::Failed => outcome,
        Ok(outcome) => {
            forget(deployment, connection, &report.claims.new).await;
            connection.secret_store.invalidate(name).await;
            tracing::error!(connection = name, request_id = %invocation.request_id, message = outcome.run.message.as_deref().unwrap_or_default(), "PingOne webhook run failed");
            return failure(StatusCode::INTERNAL_SERVER_ERROR, invocation);
        }
        Err(RunError::Busy { lease }) => {
            forget(deployment, connection, &report.claims.new).await;
            return with_retry_after(reject(
                StatusCode::SERVICE_UNAVAILABLE,
                format!(
                    "connection {name} is being synced by {}; retry in {RETRY_AFTER_SECS} s",
                    lease.holder
                ),
            ));
        }
        Err(error) => {
            forget(deployment, connection, &report.claims.new).await;
            connection.secret_store.invalidate(name).await;
            tracing::error!(connection = name, request_id = %invocation.request_id, error = %error, "PingOne webhook run failed");
            return failure(StatusCode::INTERNAL_SERVER_ERROR, invocation);
        }
    };
    let run = &outcome.run;
    let now = deployment.clock.now();
    let duration = u64::try_from(now - report.started).unwrap_or(0);
    metrics::emit(&metrics::run_metrics(
        "webhook",
        name,
        &run.counts,
        duration,
        now,
    ));
    let retention = i64::try_from(deployment.settings.event_retention.as_millis()).unwrap_or(0);
    for activity in &report.claims.new {
        if let Err(error) = deployment
            .state
            .complete_event(&connection.key, &activity.id, now + retention)
            .await
        {
            // Applied all the same; a retry after the claim expires applies it again (no change).
            tracing::error!(connection = name, event_id = %activity.id, error = %error, "cannot mark a record id done");
        }
    }
    let status = serde_json::to_value(run.status).unwrap_or_default();
    tracing::info!(
        connection = name,
        request_id = %invocation.request_id,
        records = report.claims.new.len(),
        duplicates = report.claims.duplicates,
        skipped = report.batch.skipped.len(),
        users = report.focus.users.len(),
        groups = report.focus.groups.len(),
        status = %status,
        duration_ms = duration,
        counts = %serde_json::to_string(&run.counts).unwrap_or_default(),
        "PingOne webhook run summary"
    );
    let finished_later = (run.status == RunStatus::Checkpointed).then_some(
        "the run reached the invocation's deadline: the scheduled sync applies the rest",
    );
    respond(
        StatusCode::OK,
        json!({
            "status": status,
            "events": report.batch.activities.len() + report.batch.skipped.len(),
            "applied": report.claims.new.len(),
            "duplicates": report.claims.duplicates,
            "skipped": report.batch.skipped,
            "users": report.focus.users.len(),
            "groups": report.focus.groups.len(),
            "run": run.id,
            "counts": run.counts,
            "message": finished_later.map(str::to_owned).or_else(|| run.message.clone()),
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_names_come_from_the_pingone_path() {
        assert_eq!(connection_of("/pingone/contoso"), Some("contoso"));
        assert_eq!(connection_of("/pingone/contoso/"), Some("contoso"));
        assert_eq!(connection_of("/pingone/"), None);
        assert_eq!(connection_of("/pingone/a/b"), None);
        assert_eq!(connection_of("/events/contoso"), None);
    }

    #[test]
    fn the_header_value_is_compared_whole() {
        let secret = SecretString::from("Basic dXNlcjpwYXNz");
        assert!(same_secret(b"Basic dXNlcjpwYXNz", &secret));
        assert!(!same_secret(b"Basic dXNlcjpwYXN", &secret));
        assert!(!same_secret(b"Basic dXNlcjpwYXNz ", &secret));
        assert!(!same_secret(b"", &secret));
    }
}
