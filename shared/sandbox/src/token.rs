//! Token endpoint `POST /{tenant}/oauth2/v2.0/token` (client credentials,
//! docs/graph-behaviour.md#tokens) and the validation of bearer tokens on `/v1.0/` routes.
//!
//! An app proves its identity with its client secret, or with a client assertion signed by the
//! key of a certificate registered on it ([`crate::assertion`],
//! <https://learn.microsoft.com/en-us/entra/identity-platform/certificate-credentials>); sending
//! both is refused.
//!
//! Tokens are JWTs signed HS256 with a random key per sandbox: a token from another sandbox (or
//! anything else) fails signature validation.

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use hmac::{KeyInit, Mac};
use http::{HeaderMap, StatusCode};
use serde_json::{Value, json};

use crate::config::AppSeed;
use crate::tenant::TenantState;
use crate::wire::{GraphError, now_secs};

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

/// An AADSTS error (docs/graph-behaviour.md#tokens).
pub(crate) struct AadError {
    pub status: StatusCode,
    pub error: &'static str,
    pub code: u32,
    pub text: String,
}

impl AadError {
    pub(crate) fn new(
        status: StatusCode,
        error: &'static str,
        code: u32,
        text: impl Into<String>,
    ) -> Self {
        Self {
            status,
            error,
            code,
            text: text.into(),
        }
    }

    /// The OAuth2 error body with `error_description` "AADSTSnnn: ...\r\nTrace ID: ...".
    pub fn body(&self) -> Value {
        let trace = uuid::Uuid::new_v4().to_string();
        let correlation = uuid::Uuid::new_v4().to_string();
        let now = time::OffsetDateTime::now_utc();
        let timestamp = format!(
            "{:04}-{:02}-{:02} {:02}:{:02}:{:02}Z",
            now.year(),
            u8::from(now.month()),
            now.day(),
            now.hour(),
            now.minute(),
            now.second()
        );
        json!({
            "error": self.error,
            "error_description": format!(
                "AADSTS{}: {}\r\nTrace ID: {trace}\r\nCorrelation ID: {correlation}\r\nTimestamp: {timestamp}",
                self.code, self.text
            ),
            "error_codes": [self.code],
            "timestamp": timestamp,
            "trace_id": trace,
            "correlation_id": correlation,
            "error_uri": format!("https://login.microsoftonline.com/error?code={}", self.code),
        })
    }
}

fn is_guid(s: &str) -> bool {
    s.len() == 36 && uuid::Uuid::parse_str(s).is_ok()
}

fn is_domain_name(s: &str) -> bool {
    s.contains('.')
        && s.len() <= 255
        && s.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        })
}

/// The fields of a token request, from the form or (client id and secret) HTTP Basic.
struct TokenRequest<'a> {
    grant_type: &'a str,
    client_id: Option<String>,
    secret: Option<String>,
    scope: &'a str,
    assertion: Option<&'a str>,
    assertion_type: Option<&'a str>,
}

impl<'a> TokenRequest<'a> {
    /// Client credentials: form fields, else HTTP Basic.
    fn read(headers: &HeaderMap, form: &'a [(String, String)]) -> TokenRequest<'a> {
        let field = |name: &str| {
            form.iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_str())
        };
        let mut client_id = field("client_id").map(str::to_owned);
        let mut secret = field("client_secret").map(str::to_owned);
        if let Some((id, pw)) = basic_auth(headers) {
            client_id.get_or_insert(id);
            secret.get_or_insert(pw);
        }
        TokenRequest {
            grant_type: field("grant_type").unwrap_or(""),
            client_id,
            secret,
            scope: field("scope").unwrap_or(""),
            assertion: field("client_assertion").filter(|a| !a.is_empty()),
            assertion_type: field("client_assertion_type").filter(|t| !t.is_empty()),
        }
    }
}

/// What a token request is checked against besides the tenant: the sandbox's signing key and
/// accepted resources, the token lifetime, and the URL the request was posted to (a client
/// assertion's `aud`).
pub(crate) struct Issuer<'a> {
    pub key: &'a [u8],
    pub accepted_resources: &'a [String],
    pub lifetime_secs: u64,
    pub token_url: &'a str,
}

/// A successful issue: the response body. The checks run in the order Entra answers them.
pub(crate) fn issue(
    state: &TenantState,
    issuer: &Issuer<'_>,
    tenant: &str,
    headers: &HeaderMap,
    form: &[(String, String)],
) -> Result<Value, AadError> {
    let Issuer {
        key,
        accepted_resources,
        lifetime_secs,
        token_url,
    } = *issuer;
    let request = TokenRequest::read(headers, form);
    check_tenant(state, tenant)?;
    check_grant_type(request.grant_type)?;
    let Some(client_id) = request.client_id.as_deref().filter(|c| !c.is_empty()) else {
        return Err(missing_parameter("client_id"));
    };
    if request.scope.is_empty() {
        return Err(missing_parameter("scope"));
    }
    let app = find_app(state, client_id)?;
    let resource = resource_of_scope(request.scope)?;
    match (request.secret.as_deref(), request.assertion) {
        (Some(_), Some(_)) => return Err(both_credentials()),
        (None, Some(assertion)) => {
            let check = crate::assertion::AssertionCheck {
                client_id,
                token_url,
                now: now_secs(),
            };
            check.run(app, assertion, request.assertion_type)?;
        }
        (secret, None) => check_secret(app, secret)?,
    }
    check_resource(state, accepted_resources, resource)?;
    let now = now_secs();
    let lifetime = i64::try_from(lifetime_secs).unwrap_or(3600);
    let token = sign(key, &claims(state, app, resource, now, lifetime));
    Ok(json!({
        "token_type": "Bearer",
        "expires_in": (lifetime - 1).max(0),
        "ext_expires_in": (lifetime - 1).max(0),
        "access_token": token,
    }))
}

/// A client secret and a client assertion in one request. RFC 6749 section 2.3 forbids more
/// than one authentication method per request (<https://www.rfc-editor.org/rfc/rfc6749#section-2.3>);
/// Entra's exact answer is not documented: an `invalid_request` like its ambiguous-request
/// AADSTS90011 (<https://learn.microsoft.com/en-us/entra/identity-platform/reference-error-codes>).
fn both_credentials() -> AadError {
    AadError::new(
        StatusCode::BAD_REQUEST,
        "invalid_request",
        90011,
        "Request is ambiguous, multiple client credentials found: send either 'client_secret' or 'client_assertion', not both.",
    )
}

/// 900144: a required form parameter is missing or empty.
pub(crate) fn missing_parameter(name: &str) -> AadError {
    AadError::new(
        StatusCode::BAD_REQUEST,
        "invalid_request",
        900144,
        format!("The request body must contain the following parameter: '{name}'."),
    )
}

/// Tenant: a GUID or a domain name (900023), and one that exists (90002).
fn check_tenant(state: &TenantState, tenant: &str) -> Result<(), AadError> {
    if !is_guid(tenant) && !is_domain_name(tenant) {
        return Err(AadError::new(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            900023,
            format!(
                "Specified tenant identifier '{tenant}' is neither a valid DNS name, nor a valid external domain."
            ),
        ));
    }
    let known = tenant.eq_ignore_ascii_case(&state.tenant_id)
        || state
            .domains
            .iter()
            .any(|d| d.id.eq_ignore_ascii_case(tenant));
    if !known {
        return Err(AadError::new(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            90002,
            format!(
                "Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID and are signing into the correct cloud. Check with your subscription administrator, this may happen if there are no active subscriptions for the tenant."
            ),
        ));
    }
    Ok(())
}

/// Only `client_credentials` (900144 when absent, 70003 otherwise).
fn check_grant_type(grant: &str) -> Result<(), AadError> {
    if grant.is_empty() {
        return Err(missing_parameter("grant_type"));
    }
    if grant != "client_credentials" {
        return Err(AadError::new(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            70003,
            format!("The app requested an unsupported grant type '{grant}'."),
        ));
    }
    Ok(())
}

/// The app registration of `client_id` (700016 when the tenant has none).
fn find_app<'a>(state: &'a TenantState, client_id: &str) -> Result<&'a AppSeed, AadError> {
    state
        .apps
        .iter()
        .find(|a| a.client_id.eq_ignore_ascii_case(client_id))
        .ok_or_else(|| {
            AadError::new(
                StatusCode::BAD_REQUEST,
                "unauthorized_client",
                700016,
                format!(
                    "Application with identifier '{client_id}' was not found in the directory '{}'. This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant. You may have sent your authentication request to the wrong tenant.",
                    state.display_name
                ),
            )
        })
}

/// Scope: one resource's `/.default` (1002012 for a resource without it, 70011 otherwise).
fn resource_of_scope(scope: &str) -> Result<&str, AadError> {
    let scopes: Vec<&str> = scope.split_whitespace().collect();
    match scopes.as_slice() {
        [one] => match one.strip_suffix("/.default") {
            Some(resource) if !resource.is_empty() => Ok(resource),
            _ if one.contains("://") => Err(AadError::new(
                StatusCode::BAD_REQUEST,
                "invalid_scope",
                1002012,
                format!(
                    "The provided value for scope {scope} is not valid. Client credential flows must have a scope value with /.default suffixed to the resource identifier (application ID URI)."
                ),
            )),
            _ => Err(invalid_scope(scope)),
        },
        _ => Err(invalid_scope(scope)),
    }
}

fn invalid_scope(scope: &str) -> AadError {
    AadError::new(
        StatusCode::BAD_REQUEST,
        "invalid_scope",
        70011,
        format!(
            "The provided request must include a 'scope' input parameter. The provided value for the input parameter 'scope' is not valid. The scope {scope} is not valid."
        ),
    )
}

/// The client secret: present (7000218), the app's (7000215), not expired (7000222).
fn check_secret(app: &AppSeed, secret: Option<&str>) -> Result<(), AadError> {
    let Some(secret) = secret.filter(|s| !s.is_empty()) else {
        return Err(AadError::new(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            7000218,
            "The request body must contain the following parameter: 'client_assertion' or 'client_secret'.",
        ));
    };
    if secret != app.client_secret {
        return Err(AadError::new(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            7000215,
            format!(
                "Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID, for a secret added to app '{}'.",
                app.client_id
            ),
        ));
    }
    if app.secret_expired {
        return Err(AadError::new(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            7000222,
            format!(
                "The provided client secret keys for app '{}' are expired. Visit the Azure portal to create new keys for your app: https://aka.ms/NewClientSecret, or consider using certificate credentials for added security: https://aka.ms/certCreds.",
                app.client_id
            ),
        ));
    }
    Ok(())
}

/// The resource must be one the sandbox serves (500011).
fn check_resource(
    state: &TenantState,
    accepted_resources: &[String],
    resource: &str,
) -> Result<(), AadError> {
    let accepted = accepted_resources.iter().any(|r| {
        r.trim_end_matches('/')
            .eq_ignore_ascii_case(resource.trim_end_matches('/'))
    });
    if accepted {
        return Ok(());
    }
    Err(AadError::new(
        StatusCode::BAD_REQUEST,
        "invalid_resource",
        500011,
        format!(
            "The resource principal named {resource} was not found in the tenant named {}. This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant. You might have sent your authentication request to the wrong tenant.",
            state.display_name
        ),
    ))
}

fn claims(state: &TenantState, app: &AppSeed, resource: &str, now: i64, lifetime: i64) -> Value {
    json!({
        "aud": resource,
        "iss": format!("https://sts.windows.net/{}/", state.tenant_id),
        "iat": now,
        "nbf": now,
        "exp": now + lifetime,
        "app_displayname": app.display_name,
        "appid": app.client_id,
        "appidacr": "1",
        "idp": format!("https://sts.windows.net/{}/", state.tenant_id),
        "idtyp": "app",
        "oid": app.client_id,
        "roles": app.roles,
        "sub": app.client_id,
        "tid": state.tenant_id,
        "uti": uuid::Uuid::new_v4().simple().to_string(),
        "ver": "1.0",
    })
}

fn basic_auth(headers: &HeaderMap) -> Option<(String, String)> {
    let value = headers.get(http::header::AUTHORIZATION)?.to_str().ok()?;
    let encoded = value
        .strip_prefix("Basic ")
        .or_else(|| value.strip_prefix("basic "))?;
    let decoded = String::from_utf8(STANDARD.decode(encoded.trim()).ok()?).ok()?;
    let (id, pw) = decoded.split_once(':')?;
    let dec = |s: &str| {
        url::form_urlencoded::parse(format!("x={s}").as_bytes())
            .next()
            .map(|(_, v)| v.into_owned())
            .unwrap_or_default()
    };
    Some((dec(id), dec(pw)))
}

fn mac(key: &[u8], data: &[u8]) -> Vec<u8> {
    match HmacSha256::new_from_slice(key) {
        Ok(mut m) => {
            m.update(data);
            m.finalize().into_bytes().to_vec()
        }
        Err(_) => Vec::new(),
    }
}

/// Signs claims as an HS256 JWT.
pub(crate) fn sign(key: &[u8], claims: &Value) -> String {
    let header = URL_SAFE_NO_PAD.encode(br#"{"typ":"JWT","alg":"HS256"}"#);
    let payload = URL_SAFE_NO_PAD.encode(claims.to_string().as_bytes());
    let signing_input = format!("{header}.{payload}");
    let sig = URL_SAFE_NO_PAD.encode(mac(key, signing_input.as_bytes()));
    format!("{signing_input}.{sig}")
}

/// The caller of a /v1.0 request, from a valid token.
#[derive(Debug, Clone)]
pub(crate) struct Caller {
    pub app_id: String,
    pub roles: Vec<String>,
}

fn invalid_token(message: &str) -> GraphError {
    GraphError::new(
        StatusCode::UNAUTHORIZED,
        "InvalidAuthenticationToken",
        message,
    )
    .with_header(
        "WWW-Authenticate",
        "Bearer realm=\"\", authorization_uri=\"https://login.microsoftonline.com/common/oauth2/authorize\", client_id=\"00000003-0000-0000-c000-000000000000\"",
    )
}

/// Validates `Authorization: Bearer` for /v1.0 (401 `InvalidAuthenticationToken` bodies).
pub(crate) fn authenticate(
    headers: &HeaderMap,
    key: &[u8],
    tenant_id: &str,
    accepted_resources: &[String],
) -> Result<Caller, GraphError> {
    let raw = headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .trim();
    let token = raw
        .strip_prefix("Bearer ")
        .or_else(|| raw.strip_prefix("bearer "))
        .map(str::trim)
        .unwrap_or("");
    if token.is_empty() {
        return Err(invalid_token("Access token is empty."));
    }
    let parts: Vec<&str> = token.split('.').collect();
    if parts.len() != 3 {
        return Err(invalid_token(
            "IDX14100: JWT is not well formed, there are no dots (.).\nThe token needs to be in JWS or JWE Compact Serialization Format. (JWS): 'EncodedHeader.EndcodedPayload.EncodedSignature'. (JWE): 'EncodedProtectedHeader.EncodedEncryptedKey.EncodedInitializationVector.EncodedCiphertext.EncodedAuthenticationTag'.",
        ));
    }
    let payload: Option<Value> = URL_SAFE_NO_PAD
        .decode(parts[1])
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok());
    let Some(payload) = payload else {
        return Err(invalid_token("Invalid JWT token. The token is malformed."));
    };
    let expected =
        URL_SAFE_NO_PAD.encode(mac(key, format!("{}.{}", parts[0], parts[1]).as_bytes()));
    if expected != parts[2] {
        return Err(invalid_token("Access token validation failure."));
    }
    let now = now_secs();
    let exp = payload.get("exp").and_then(Value::as_i64).unwrap_or(0);
    let nbf = payload.get("nbf").and_then(Value::as_i64).unwrap_or(0);
    if now >= exp || now + 300 < nbf {
        return Err(invalid_token(
            "Lifetime validation failed, the token is expired.",
        ));
    }
    let aud = payload.get("aud").and_then(Value::as_str).unwrap_or("");
    if !accepted_resources.iter().any(|r| {
        r.trim_end_matches('/')
            .eq_ignore_ascii_case(aud.trim_end_matches('/'))
    }) {
        return Err(invalid_token(
            "Access token validation failure. Invalid audience.",
        ));
    }
    if payload.get("tid").and_then(Value::as_str) != Some(tenant_id) {
        return Err(invalid_token("Access token validation failure."));
    }
    Ok(Caller {
        app_id: payload
            .get("appid")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned(),
        roles: payload
            .get("roles")
            .and_then(Value::as_array)
            .map(|r| {
                r.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default(),
    })
}
