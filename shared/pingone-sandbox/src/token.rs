//! `POST /{envId}/as/token` with `grant_type=client_credentials`, as PingOne's authorization
//! server answers it
//! (<https://developer.pingidentity.com/pingone-api/auth/openid-connect-oauth-2/token-admin-app-client_credentials.html>,
//! <https://developer.pingidentity.com/pingone-api/auth/openid-connect-oauth-2/token-client_credentials-client-secret-post.html>).
//!
//! Each worker app has exactly one configured client authentication method; a request using the
//! other one is refused like an unknown client. Failures are OAuth error bodies
//! (RFC 6749 §5.2, <https://www.rfc-editor.org/rfc/rfc6749#section-5.2>), except an unknown
//! environment, which gets PingOne's 404 P1Error.

use std::time::{Duration, Instant};

use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use serde_json::json;

use crate::Inner;
use crate::seed::TokenAuthMethod;
use crate::wire::{CorrelationId, JSON, P1Error, json_response};

/// Lifetime of an access token, in seconds (PingOne's default for worker apps).
pub(crate) const LIFETIME_SECS: u64 = 3600;

/// A token the stand-in handed out.
#[derive(Debug, Clone)]
pub(crate) struct Issued {
    pub environment_id: String,
    pub expires: Instant,
}

/// An OAuth error answer.
struct OAuthError {
    status: StatusCode,
    error: &'static str,
    description: String,
}

impl OAuthError {
    fn unsupported_method(cid: &CorrelationId) -> Self {
        Self {
            status: StatusCode::UNAUTHORIZED,
            error: "invalid_client",
            description: format!(
                "Request denied: Unsupported authentication method (Correlation ID: {})",
                cid.0
            ),
        }
    }

    fn invalid_credentials(cid: &CorrelationId) -> Self {
        Self {
            status: StatusCode::UNAUTHORIZED,
            error: "invalid_client",
            description: format!(
                "Request denied: Invalid client credentials (Correlation ID: {})",
                cid.0
            ),
        }
    }

    fn bad_request(error: &'static str, description: &str) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            error,
            description: description.to_owned(),
        }
    }

    fn response(&self) -> Response {
        json_response(
            self.status,
            JSON,
            &json!({"error": self.error, "error_description": self.description}),
        )
    }
}

/// The client credentials a request presented, and how.
struct Presented {
    client_id: String,
    client_secret: String,
    method: TokenAuthMethod,
}

/// Reads the client authentication: Basic header or form fields, not both.
fn presented(headers: &HeaderMap, form: &[(String, String)]) -> Option<Presented> {
    let field = |name: &str| form.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
    let basic = headers
        .get(http::header::AUTHORIZATION)
        .and_then(|h| h.to_str().ok())
        .and_then(|h| h.strip_prefix("Basic "));
    match (basic, field("client_secret")) {
        (Some(encoded), None) => {
            let decoded = STANDARD.decode(encoded.trim()).ok()?;
            let text = String::from_utf8(decoded).ok()?;
            let (id, secret) = text.split_once(':')?;
            Some(Presented {
                client_id: id.to_owned(),
                client_secret: secret.to_owned(),
                method: TokenAuthMethod::ClientSecretBasic,
            })
        }
        (None, Some(secret)) => Some(Presented {
            client_id: field("client_id")?,
            client_secret: secret,
            method: TokenAuthMethod::ClientSecretPost,
        }),
        _ => None,
    }
}

/// Answers one token request.
pub(crate) fn issue(
    inner: &Inner,
    environment_id: &str,
    headers: &HeaderMap,
    body: &[u8],
    cid: &CorrelationId,
) -> Response {
    if environment_id != inner.environment_id {
        return P1Error::not_found().response(cid);
    }
    let is_form = headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|h| h.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/x-www-form-urlencoded"));
    if !is_form {
        return OAuthError::bad_request(
            "invalid_request",
            "The request must be sent as application/x-www-form-urlencoded.",
        )
        .response();
    }
    let form: Vec<(String, String)> = url::form_urlencoded::parse(body)
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    let Some(p) = presented(headers, &form) else {
        return OAuthError::unsupported_method(cid).response();
    };
    let Some(app) = inner
        .apps
        .iter()
        .find(|a| a.client_id == p.client_id && a.auth_method == p.method)
    else {
        return OAuthError::unsupported_method(cid).response();
    };
    if app.client_secret != p.client_secret {
        return OAuthError::invalid_credentials(cid).response();
    }
    match form
        .iter()
        .find(|(k, _)| k == "grant_type")
        .map(|(_, v)| v.as_str())
    {
        Some("client_credentials") => {}
        Some(other) => {
            return OAuthError::bad_request(
                "unsupported_grant_type",
                &format!("Unsupported grant type: {other}"),
            )
            .response();
        }
        None => {
            return OAuthError::bad_request("invalid_request", "grant_type is required").response();
        }
    }
    let token = URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>());
    inner.remember_token(
        token.clone(),
        Issued {
            environment_id: environment_id.to_owned(),
            expires: Instant::now() + Duration::from_secs(LIFETIME_SECS),
        },
    );
    json_response(
        StatusCode::OK,
        JSON,
        &json!({"access_token": token, "token_type": "Bearer", "expires_in": LIFETIME_SECS}),
    )
}
