//! Access tokens by the client-credentials flow (docs/graph-behaviour.md#tokens), with a client
//! secret or a certificate's client assertion ([`crate::assertion`]): the form carries either
//! `client_secret`, or `client_assertion_type` and a `client_assertion` signed afresh for each
//! request with `aud` = the token URL the request is posted to.
//!
//! Tokens are cached per (login host, Graph host, tenant, client id, scope) in a [`TokenCache`]
//! that many clients can share (by default one per process), renewed ahead of expiry, and renewed
//! once when Graph answers 401. Fetches for one key are single-flight: concurrent callers wait for one
//! request instead of stampeding the token endpoint.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use backon::Retryable;
use base64::Engine;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use tokio::time::Instant;

use crate::assertion::ASSERTION_TYPE;
use crate::error::{AuthError, GraphError};
use crate::settings::{ClientCredential, Credentials, Endpoints, RetryPolicy};

/// Renew when less than this much of the lifetime remains...
const RENEW_BEFORE_MAX: Duration = Duration::from_secs(300);
/// ...or less than this fraction of it, whichever is smaller (so 60 s test tokens are not
/// renewed on every call).
const RENEW_FRACTION: f64 = 0.10;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct TokenKey {
    login_url: String,
    /// The Graph host the token is sent to: two settings that differ only in their Graph host
    /// must not hand one's token to the other's host.
    graph_host: String,
    tenant: String,
    client_id: String,
    scope: String,
}

struct CachedToken {
    access_token: SecretString,
    /// The credential that obtained this token: a client holding a different secret or
    /// certificate for the same app must not ride on it (a wrong one would go unnoticed).
    credential: ClientCredential,
    renew_at: Instant,
    expires_at: Instant,
}

type Slot = Arc<tokio::sync::Mutex<Option<CachedToken>>>;

/// Shared token cache. Cheap to share via `Arc`; see [`TokenCache::global`].
#[derive(Default)]
pub struct TokenCache {
    slots: Mutex<HashMap<TokenKey, Slot>>,
    fetches: AtomicU64,
}

impl std::fmt::Debug for TokenCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenCache")
            .field("fetches", &self.fetches.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

/// A token handed to a request: the bearer value and an identity to invalidate it by.
#[derive(Clone)]
pub(crate) struct IssuedToken {
    pub(crate) value: SecretString,
}

/// Decoded claims of an access token that the product uses.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct TokenClaims {
    /// Application permissions granted (e.g. `User.ReadWrite.All`).
    #[serde(default)]
    pub roles: Vec<String>,
    /// Tenant id.
    #[serde(default)]
    pub tid: Option<String>,
    /// Application id (`appid` in v1 tokens, `azp` in v2).
    #[serde(default, alias = "azp")]
    pub appid: Option<String>,
    /// Audience (the Graph resource).
    #[serde(default)]
    pub aud: Option<String>,
    /// Expiry, seconds since the epoch.
    #[serde(default)]
    pub exp: Option<i64>,
}

/// Decodes the JWT payload (base64url, padding optional). No signature check: the token came
/// straight from the token endpoint over TLS and is only read for diagnostics.
pub fn decode_claims(token: &str) -> Option<TokenClaims> {
    let payload = token.split('.').nth(1)?;
    let trimmed = payload.trim_end_matches('=');
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(trimmed)
        .ok()?;
    serde_json::from_slice(&bytes).ok()
}

impl TokenCache {
    pub fn new() -> Self {
        TokenCache::default()
    }

    /// The process-wide cache used by clients that are not given one.
    pub fn global() -> Arc<TokenCache> {
        static GLOBAL: OnceLock<Arc<TokenCache>> = OnceLock::new();
        GLOBAL.get_or_init(|| Arc::new(TokenCache::new())).clone()
    }

    /// Tokens fetched from the token endpoint through this cache (successful or not).
    pub fn fetch_count(&self) -> u64 {
        self.fetches.load(Ordering::Relaxed)
    }

    /// Forgets every cached token.
    pub fn clear(&self) {
        if let Ok(mut slots) = self.slots.lock() {
            slots.clear();
        }
    }

    fn slot(&self, key: TokenKey) -> Slot {
        match self.slots.lock() {
            Ok(mut slots) => slots.entry(key).or_default().clone(),
            // A poisoned map only means another thread panicked mid-insert; a fresh slot is safe.
            Err(_) => Slot::default(),
        }
    }

    /// A valid token, fetching one when missing, due for renewal, or equal to `rejected`
    /// (the token Graph just answered 401 to).
    pub(crate) async fn get(
        &self,
        fetcher: &TokenFetcher<'_>,
        rejected: Option<&IssuedToken>,
    ) -> Result<(IssuedToken, bool), GraphError> {
        let key = TokenKey {
            login_url: fetcher.endpoints.login_url.to_ascii_lowercase(),
            graph_host: fetcher.endpoints.graph_host.to_ascii_lowercase(),
            tenant: fetcher.credentials.tenant.trim().to_ascii_lowercase(),
            client_id: fetcher.credentials.client_id.trim().to_ascii_lowercase(),
            scope: fetcher.endpoints.scope.clone(),
        };
        let slot = self.slot(key);
        let mut guard = slot.lock().await;
        let now = Instant::now();
        if let Some(cached) = guard.as_ref() {
            let same_secret = cached.credential.same_as(&fetcher.credentials.credential);
            let was_rejected = rejected
                .is_some_and(|r| r.value.expose_secret() == cached.access_token.expose_secret());
            if same_secret && !was_rejected && now < cached.renew_at && now < cached.expires_at {
                return Ok((
                    IssuedToken {
                        value: cached.access_token.clone(),
                    },
                    false,
                ));
            }
            if same_secret && !was_rejected && rejected.is_some() {
                // Someone else already renewed after the 401: use theirs.
                if now < cached.expires_at {
                    return Ok((
                        IssuedToken {
                            value: cached.access_token.clone(),
                        },
                        false,
                    ));
                }
            }
        }
        self.fetches.fetch_add(1, Ordering::Relaxed);
        let fresh = fetcher.fetch().await?;
        let issued = IssuedToken {
            value: fresh.access_token.clone(),
        };
        *guard = Some(fresh);
        Ok((issued, true))
    }
}

/// What a fetch needs; borrowed from the client.
pub(crate) struct TokenFetcher<'a> {
    pub(crate) http: &'a reqwest::Client,
    pub(crate) endpoints: &'a Endpoints,
    pub(crate) credentials: &'a Credentials,
    pub(crate) policy: &'a RetryPolicy,
}

/// The token request's form body. Its `Debug` never shows the secret or the assertion.
struct TokenForm<'a> {
    client_id: &'a str,
    scope: &'a str,
    grant_type: &'static str,
    proof: Proof<'a>,
}

/// How the form proves the app's identity.
enum Proof<'a> {
    /// `client_secret`.
    Secret(&'a str),
    /// `client_assertion_type` and `client_assertion` (a signed JWT, itself a credential for
    /// its lifetime).
    Assertion(SecretString),
}

impl TokenForm<'_> {
    /// The form's fields, in order.
    fn fields(&self) -> Vec<(&str, &str)> {
        let mut fields = vec![
            ("client_id", self.client_id),
            ("scope", self.scope),
            ("grant_type", self.grant_type),
        ];
        match &self.proof {
            Proof::Secret(secret) => fields.push(("client_secret", secret)),
            Proof::Assertion(assertion) => {
                fields.push(("client_assertion_type", ASSERTION_TYPE));
                fields.push(("client_assertion", assertion.expose_secret()));
            }
        }
        fields
    }
}

impl std::fmt::Debug for TokenForm<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut d = f.debug_struct("TokenForm");
        d.field("client_id", &self.client_id)
            .field("scope", &self.scope)
            .field("grant_type", &self.grant_type);
        match self.proof {
            Proof::Secret(_) => d.field("client_secret", &"[REDACTED]"),
            Proof::Assertion(_) => d
                .field("client_assertion_type", &ASSERTION_TYPE)
                .field("client_assertion", &"[REDACTED]"),
        };
        d.finish()
    }
}

#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
    #[serde(default)]
    expires_in: Option<serde_json::Value>,
}

#[derive(Deserialize, Default)]
struct TokenErrorBody {
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    error_codes: Vec<u64>,
    #[serde(default)]
    trace_id: Option<String>,
    #[serde(default)]
    correlation_id: Option<String>,
}

impl TokenFetcher<'_> {
    fn token_url(&self) -> String {
        let tenant = crate::odata::encode_path_segment(self.credentials.tenant.trim());
        format!("{}/{}/oauth2/v2.0/token", self.endpoints.login_url, tenant)
    }

    async fn fetch(&self) -> Result<CachedToken, GraphError> {
        let attempt = || self.fetch_once();
        attempt
            .retry(self.policy.backoff())
            .sleep(tokio::time::sleep)
            .when(|e: &GraphError| e.is_retryable())
            .notify(|e, d| {
                tracing::warn!(error = %e, delay_ms = d.as_millis() as u64, "token request failed; retrying");
            })
            .await
    }

    /// The form of one token request; a certificate signs a fresh assertion whose `aud` is
    /// `token_url`.
    fn form(&self, token_url: &str) -> Result<TokenForm<'_>, GraphError> {
        let client_id = self.credentials.client_id.trim();
        let proof = match &self.credentials.credential {
            ClientCredential::Secret(secret) => Proof::Secret(secret.expose_secret()),
            ClientCredential::Certificate(certificate) => {
                let now = time::OffsetDateTime::now_utc().unix_timestamp();
                let assertion = certificate
                    .assertion(client_id, token_url, now)
                    .map_err(|e| {
                        GraphError::Config(format!("app {client_id}: certificate: {e}"))
                    })?;
                Proof::Assertion(assertion)
            }
        };
        Ok(TokenForm {
            client_id,
            scope: self.endpoints.scope.as_str(),
            grant_type: "client_credentials",
            proof,
        })
    }

    async fn fetch_once(&self) -> Result<CachedToken, GraphError> {
        let token_url = self.token_url();
        let form = self.form(&token_url)?;
        let started = Instant::now();
        let resp = self
            .http
            .post(&token_url)
            .header("client-request-id", uuid::Uuid::new_v4().to_string())
            .form(&form.fields())
            .send()
            .await
            .map_err(|e| {
                // reqwest errors carry the URL (no secret: the secret is in the body), but keep
                // only the kind to be safe.
                AuthError::Unavailable {
                    detail: transport_kind(&e).to_string(),
                }
            })?;
        let status = resp.status().as_u16();
        if (300..400).contains(&status) {
            let location = resp
                .headers()
                .get(reqwest::header::LOCATION)
                .and_then(|v| v.to_str().ok());
            return Err(GraphError::Auth(AuthError::Redirected {
                login_url: self.endpoints.login_url.clone(),
                status,
                target: redirect_target(location),
            }));
        }
        let body = resp.bytes().await.map_err(|e| AuthError::Unavailable {
            detail: transport_kind(&e).to_string(),
        })?;
        if (200..300).contains(&status) {
            let parsed: TokenResponse =
                serde_json::from_slice(&body).map_err(|_| AuthError::Rejected {
                    error: "the token response was not the expected JSON".into(),
                    codes: vec![],
                    status,
                    trace_id: None,
                })?;
            let lifetime = parse_expires_in(parsed.expires_in.as_ref());
            let renew_before = RENEW_BEFORE_MAX.min(lifetime.mul_f64(RENEW_FRACTION));
            tracing::debug!(expires_in_s = lifetime.as_secs(), "token obtained");
            return Ok(CachedToken {
                access_token: SecretString::from(parsed.access_token),
                credential: self.credentials.credential.clone(),
                renew_at: started + lifetime.saturating_sub(renew_before),
                expires_at: started + lifetime,
            });
        }
        let err: TokenErrorBody = serde_json::from_slice(&body).unwrap_or_default();
        Err(GraphError::Auth(map_token_error(
            status,
            &err,
            self.credentials,
            &self.endpoints.scope,
        )))
    }
}

/// What to do about a refused client assertion, by AADSTS code
/// (<https://learn.microsoft.com/en-us/entra/identity-platform/reference-error-codes>).
fn assertion_fix(code: u64) -> Option<&'static str> {
    Some(match code {
        700_027 => {
            "the certificate is not registered on the app, or the key is not its own: upload the \
             certificate (the public part, .cer/.crt/.pem) under Certificates & secrets → \
             Certificates of the app registration, or store the key and certificate of one \
             registered there"
        }
        700_024 => {
            "the assertion is not within its valid time range: check this machine's clock \
             (NTP); it must be within minutes of UTC"
        }
        7_000_274 | 700_021 | 700_023 | 50_027 | 90_011 => {
            "the assertion does not have the form Entra expects (client id, audience, JWT \
             shape); this is a defect of the client, please report it"
        }
        _ => return None,
    })
}

fn parse_expires_in(v: Option<&serde_json::Value>) -> Duration {
    let secs = match v {
        Some(serde_json::Value::Number(n)) => n.as_f64(),
        Some(serde_json::Value::String(s)) => s.trim().parse::<f64>().ok(),
        _ => None,
    };
    match secs {
        Some(s) if s.is_finite() && s > 0.0 => Duration::from_secs_f64(s.min(86_400.0)),
        // Unknown lifetime: assume a short one so it is renewed soon.
        _ => Duration::from_secs(300),
    }
}

fn map_token_error(
    status: u16,
    body: &TokenErrorBody,
    credentials: &Credentials,
    scope: &str,
) -> AuthError {
    let codes = &body.error_codes;
    let has = |c: u64| codes.contains(&c);
    let client_id = credentials.client_id.trim().to_string();
    let tenant = credentials.tenant.trim().to_string();
    let error = body.error.as_deref().unwrap_or("");
    if has(7_000_215) {
        return AuthError::InvalidClientSecret { client_id };
    }
    if has(7_000_222) {
        return AuthError::ExpiredClientSecret { client_id };
    }
    if let ClientCredential::Certificate(certificate) = &credentials.credential
        && let Some((code, fix)) = codes
            .iter()
            .find_map(|c| assertion_fix(*c).map(|f| (*c, f)))
    {
        return AuthError::AssertionRejected {
            client_id,
            thumbprint: certificate.thumbprint_s256().to_owned(),
            code,
            fix,
        };
    }
    if has(700_016) {
        return AuthError::UnknownApplication { client_id, tenant };
    }
    if has(90_002) {
        return AuthError::UnknownTenant { tenant };
    }
    if has(900_023) {
        return AuthError::MalformedTenant { tenant };
    }
    if let Some(&code) = codes.iter().find(|c| matches!(**c, 70_011 | 1_002_012)) {
        return AuthError::InvalidScope {
            scope: scope.to_string(),
            code,
        };
    }
    if error == "invalid_scope" {
        return AuthError::InvalidScope {
            scope: scope.to_string(),
            code: codes.first().copied().unwrap_or(70_011),
        };
    }
    if error == "temporarily_unavailable" || status >= 500 || status == 429 {
        return AuthError::Unavailable {
            detail: format!("HTTP {status} {error}"),
        };
    }
    AuthError::Rejected {
        error: if error.is_empty() {
            format!("HTTP {status}")
        } else {
            error.to_string()
        },
        codes: codes.clone(),
        status,
        trace_id: body
            .trace_id
            .clone()
            .or_else(|| body.correlation_id.clone()),
    }
}

/// Where a redirect pointed, for error messages: the host (and port) of an absolute
/// `Location`, never its path or query, which may carry anything.
pub(crate) fn redirect_target(location: Option<&str>) -> String {
    let Some(location) = location else {
        return "no Location".to_string();
    };
    match url::Url::parse(location.trim()) {
        Ok(u) => match (u.host_str(), u.port()) {
            (Some(h), Some(p)) => format!("host {h}:{p}"),
            (Some(h), None) => format!("host {h}"),
            (None, _) => "a URL without a host".to_string(),
        },
        Err(_) => "a path on the same host".to_string(),
    }
}

pub(crate) fn transport_kind(e: &reqwest::Error) -> &'static str {
    if e.is_timeout() {
        "request timed out"
    } else if e.is_connect() {
        "connection failed"
    } else if e.is_body() || e.is_decode() {
        "response body could not be read"
    } else if e.is_request() {
        "request could not be sent"
    } else {
        "transport error"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn creds() -> Credentials {
        Credentials::with_secret(
            "contoso.onmicrosoft.com",
            "11111111-1111-1111-1111-111111111111",
            SecretString::from("super-secret"),
        )
    }

    fn cert_creds() -> Credentials {
        let stored =
            m365_core::secrets::AppCredential::Certificate(m365_core::secrets::CertificateSecret {
                certificate_pem: include_str!("../../../tests/fixtures/certs/app.crt.pem").into(),
                private_key_pem: SecretString::from(include_str!(
                    "../../../tests/fixtures/certs/app.key.pem"
                )),
                algorithm: Default::default(),
            });
        Credentials {
            credential: ClientCredential::from_stored(&stored).unwrap(),
            ..creds()
        }
    }

    fn err(error: &str, codes: &[u64]) -> TokenErrorBody {
        TokenErrorBody {
            error: Some(error.into()),
            error_codes: codes.to_vec(),
            trace_id: Some("trace".into()),
            correlation_id: None,
        }
    }

    #[test]
    fn aadsts_codes_map_to_distinct_config_errors() {
        let c = creds();
        let s = "https://graph.microsoft.com/.default";
        let m = |status, e: TokenErrorBody| map_token_error(status, &e, &c, s);
        assert!(matches!(
            m(401, err("invalid_client", &[7000215])),
            AuthError::InvalidClientSecret { .. }
        ));
        assert!(matches!(
            m(401, err("invalid_client", &[7000222])),
            AuthError::ExpiredClientSecret { .. }
        ));
        assert!(matches!(
            m(400, err("unauthorized_client", &[700016])),
            AuthError::UnknownApplication { .. }
        ));
        assert!(matches!(
            m(400, err("invalid_request", &[90002])),
            AuthError::UnknownTenant { .. }
        ));
        assert!(matches!(
            m(400, err("invalid_request", &[900023])),
            AuthError::MalformedTenant { .. }
        ));
        assert!(matches!(
            m(400, err("invalid_scope", &[70011])),
            AuthError::InvalidScope { .. }
        ));
        assert!(matches!(
            m(400, err("temporarily_unavailable", &[])),
            AuthError::Unavailable { .. }
        ));
        assert!(matches!(
            m(503, TokenErrorBody::default()),
            AuthError::Unavailable { .. }
        ));
        assert!(matches!(
            m(400, err("invalid_grant", &[12345])),
            AuthError::Rejected { .. }
        ));
        // Messages name the fix and never carry the secret.
        let msg = m(401, err("invalid_client", &[7000215])).to_string();
        assert!(msg.contains("Value, not its ID"), "{msg}");
        assert!(!msg.contains("super-secret"));
        let msg = m(401, err("invalid_client", &[7000222])).to_string();
        assert!(msg.contains("create a new client secret"), "{msg}");
        assert!(m(503, TokenErrorBody::default()).is_retryable());
        assert!(!m(401, err("invalid_client", &[7000215])).is_retryable());
    }

    #[test]
    fn token_form_debug_hides_the_secret() {
        let form = TokenForm {
            client_id: "c",
            scope: "https://graph.microsoft.com/.default",
            grant_type: "client_credentials",
            proof: Proof::Secret("form-s3cret-value"),
        };
        let shown = format!("{form:?} {form:#?}");
        assert!(!shown.contains("form-s3cret-value"), "{shown}");
        assert!(shown.contains("REDACTED"), "{shown}");
        assert!(
            form.fields()
                .contains(&("client_secret", "form-s3cret-value"))
        );
    }

    #[test]
    fn a_certificate_sends_an_assertion_for_the_token_url_and_never_shows_it() {
        let credentials = cert_creds();
        let endpoints = Endpoints {
            login_url: "http://127.0.0.1:9".into(),
            graph_host: "http://127.0.0.1:9".into(),
            graph_base: "http://127.0.0.1:9/v1.0".into(),
            scope: "https://graph.microsoft.com/.default".into(),
        };
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(1))
            .build()
            .unwrap();
        let policy = RetryPolicy::fast(1, Duration::from_millis(1));
        let fetcher = TokenFetcher {
            http: &http,
            endpoints: &endpoints,
            credentials: &credentials,
            policy: &policy,
        };
        let url = fetcher.token_url();
        assert_eq!(
            url,
            "http://127.0.0.1:9/contoso.onmicrosoft.com/oauth2/v2.0/token"
        );
        let form = fetcher.form(&url).unwrap();
        let fields = form.fields();
        let names: Vec<&str> = fields.iter().map(|(k, _)| *k).collect();
        assert_eq!(
            names,
            [
                "client_id",
                "scope",
                "grant_type",
                "client_assertion_type",
                "client_assertion"
            ]
        );
        assert!(fields.contains(&("client_assertion_type", ASSERTION_TYPE)));
        let assertion = fields[4].1;
        let claims = decode_claims(assertion).unwrap();
        assert_eq!(claims.aud.as_deref(), Some(url.as_str()));
        let shown = format!("{form:?} {form:#?}");
        assert!(!shown.contains(assertion), "{shown}");
        assert!(shown.contains("REDACTED"), "{shown}");
    }

    #[test]
    fn refused_assertions_name_the_certificate_and_the_fix() {
        let c = cert_creds();
        let s = "https://graph.microsoft.com/.default";
        let e = map_token_error(401, &err("invalid_client", &[700027]), &c, s);
        let AuthError::AssertionRejected {
            code, thumbprint, ..
        } = &e
        else {
            panic!("{e:?}");
        };
        assert_eq!(*code, 700027);
        assert_eq!(thumbprint, "3-fSv67gKuFGu4LZSAKvPDM8n5rJWW6kF6mYLIFJkNU");
        assert!(e.to_string().contains("Certificates & secrets"), "{e}");
        let e = map_token_error(400, &err("invalid_client", &[700024]), &c, s);
        assert!(e.to_string().contains("clock"), "{e}");
        assert!(!e.is_retryable());
        // A secret's refusal stays a secret's.
        let e = map_token_error(401, &err("invalid_client", &[700027]), &creds(), s);
        assert!(matches!(e, AuthError::Rejected { .. }), "{e:?}");
    }

    #[test]
    fn redirect_targets_name_the_host_only() {
        assert_eq!(
            redirect_target(Some("http://127.0.0.1:9/steal?client_secret=x")),
            "host 127.0.0.1:9"
        );
        assert_eq!(
            redirect_target(Some("https://evil.example/a")),
            "host evil.example"
        );
        assert_eq!(
            redirect_target(Some("/elsewhere")),
            "a path on the same host"
        );
        assert_eq!(redirect_target(None), "no Location");
    }

    #[test]
    fn decodes_roles_from_jwt_payload() {
        let payload = serde_json::json!({
            "aud": "https://graph.microsoft.com", "tid": "t-1", "appid": "a-1",
            "roles": ["User.ReadWrite.All", "Group.ReadWrite.All"], "exp": 1700000000
        });
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(serde_json::to_vec(&payload).unwrap());
        let token = format!("eyJhbGciOiJub25lIn0.{b64}.sig");
        let claims = decode_claims(&token).unwrap();
        assert_eq!(
            claims.roles,
            vec!["User.ReadWrite.All", "Group.ReadWrite.All"]
        );
        assert_eq!(claims.tid.as_deref(), Some("t-1"));
        assert_eq!(claims.appid.as_deref(), Some("a-1"));
        // Padded base64url is accepted too; garbage is not.
        let padded = format!("x.{}==.y", b64.trim_end_matches('='));
        assert!(decode_claims(&padded).is_some());
        assert!(decode_claims("not-a-jwt").is_none());
        let no_roles = format!(
            "x.{}.y",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b"{\"tid\":\"t\"}")
        );
        assert!(decode_claims(&no_roles).unwrap().roles.is_empty());
    }

    #[test]
    fn expires_in_parsing() {
        assert_eq!(
            parse_expires_in(Some(&serde_json::json!(3599))),
            Duration::from_secs(3599)
        );
        assert_eq!(
            parse_expires_in(Some(&serde_json::json!("3599"))),
            Duration::from_secs(3599)
        );
        assert_eq!(parse_expires_in(None), Duration::from_secs(300));
        assert_eq!(
            parse_expires_in(Some(&serde_json::json!(-5))),
            Duration::from_secs(300)
        );
        // Renewal margin: 10 % or 5 min, whichever is smaller.
        let l = Duration::from_secs(3599);
        assert_eq!(
            RENEW_BEFORE_MAX.min(l.mul_f64(RENEW_FRACTION)),
            Duration::from_secs(300)
        );
        let l = Duration::from_secs(60);
        assert_eq!(
            RENEW_BEFORE_MAX.min(l.mul_f64(RENEW_FRACTION)),
            Duration::from_secs(6)
        );
    }
}
