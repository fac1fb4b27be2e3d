//! Errors: one enum for the crate, classified from the HTTP status, `error.code`,
//! `details[].code/target` and, where Graph leaves no better signal, the message text
//! (docs/graph-behaviour.md#error-bodies, #licenses, #group-membership, #uniqueness-conflicts,
//! #manager, #tokens).

use std::fmt;
use std::time::Duration;

use serde::Deserialize;

/// Where a failure happened and what Graph said. Never holds a token, secret or query string.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ErrorContext {
    pub method: String,
    /// Path below the version root, without the query string (e.g. `/users/{id}/manager/$ref`).
    pub path: String,
    pub status: Option<u16>,
    /// Graph's `error.code` (e.g. `Request_BadRequest`).
    pub code: Option<String>,
    pub message: String,
    /// `request-id` (response header or `innerError`), for Microsoft support.
    pub request_id: Option<String>,
    /// The `client-request-id` this client sent.
    pub client_request_id: Option<String>,
}

impl fmt::Display for ErrorContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.method, self.path)?;
        if let Some(s) = self.status {
            write!(f, " → {s}")?;
        }
        if let Some(c) = &self.code {
            write!(f, " {c}")?;
        }
        if !self.message.is_empty() {
            write!(f, ": {}", self.message)?;
        }
        if let Some(r) = &self.request_id {
            write!(f, " (request-id {r})")?;
        }
        Ok(())
    }
}

/// Token-endpoint failures that an operator fixes in configuration
/// (docs/graph-behaviour.md#tokens). Branches on the OAuth `error` value and `error_codes`, never
/// on the description text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error(
        "the client secret for app {client_id} is wrong (AADSTS7000215): use the secret's Value, not its ID, from Certificates & secrets in the app registration"
    )]
    InvalidClientSecret { client_id: String },
    #[error(
        "the client secret for app {client_id} has expired (AADSTS7000222): create a new client secret in the app registration and update the stored credentials"
    )]
    ExpiredClientSecret { client_id: String },
    #[error(
        "the token endpoint refused the client assertion of app {client_id}, signed with certificate x5t#S256 {thumbprint} (AADSTS{code}): {fix}"
    )]
    AssertionRejected {
        client_id: String,
        /// The certificate's `x5t#S256`, to compare with the app registration's.
        thumbprint: String,
        code: u64,
        /// What to do, by code.
        fix: &'static str,
    },
    #[error(
        "app {client_id} was not found in tenant {tenant} (AADSTS700016): check the client ID and the tenant, and that an administrator has consented to the app in this tenant"
    )]
    UnknownApplication { client_id: String, tenant: String },
    #[error(
        "tenant {tenant} was not found (AADSTS90002): check the tenant ID or domain name, and the national cloud setting"
    )]
    UnknownTenant { tenant: String },
    #[error(
        "tenant `{tenant}` is not a valid tenant ID or domain (AADSTS900023): use the directory (tenant) GUID or a domain such as contoso.onmicrosoft.com"
    )]
    MalformedTenant { tenant: String },
    #[error(
        "the token scope `{scope}` was rejected (AADSTS{code}): use a single resource's .default scope, e.g. https://graph.microsoft.com/.default"
    )]
    InvalidScope { scope: String, code: u64 },
    #[error(
        "the token endpoint refused the request: {error} (AADSTS codes {codes:?}, HTTP {status})"
    )]
    Rejected {
        error: String,
        codes: Vec<u64>,
        status: u16,
        /// Correlation / trace id for Microsoft support.
        trace_id: Option<String>,
    },
    #[error(
        "the token endpoint is unavailable: {detail}; it was retried and may be tried again later"
    )]
    Unavailable { detail: String },
    #[error(
        "the token endpoint at {login_url} answered HTTP {status}, a redirect to {target}; redirects are not followed so the client secret is never sent to another host: set login_url to the login host itself, or leave it unset"
    )]
    Redirected {
        /// The login host that answered.
        login_url: String,
        status: u16,
        /// Host of the `Location` header (never its path or query).
        target: String,
    },
}

impl AuthError {
    /// Only an unavailable token endpoint is worth retrying; the rest need an operator.
    pub fn is_retryable(&self) -> bool {
        matches!(self, AuthError::Unavailable { .. })
    }
}

/// Coarse classification for callers that branch (engine error policy, metrics).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    Conflict,
    NotFound,
    InvalidValue,
    NoLicenseSeats,
    MissingUsageLocation,
    PermissionDenied,
    Throttled,
    Transient,
    Unauthorized,
    Auth,
    BadRequest,
    Config,
    Decode,
}

/// Every failure of the Graph client.
#[derive(Debug, Clone, thiserror::Error)]
pub enum GraphError {
    #[error("{}: an object with the same {} already exists in the tenant; link to it or choose a unique value", .ctx, .property.as_deref().unwrap_or("unique property value"))]
    Conflict {
        /// The property that collided (`userPrincipalName`, `mailNickname`, `proxyAddresses`, …).
        property: Option<String>,
        ctx: Box<ErrorContext>,
    },
    #[error("{ctx}: the object does not exist (or has not replicated yet)")]
    NotFound { ctx: Box<ErrorContext> },
    #[error("{}: Graph rejected the value of {}; fix the mapping or source value", .ctx, .property.as_deref().map(|p| format!("property '{p}'")).unwrap_or_else(|| "a property".to_string()))]
    InvalidValue {
        property: Option<String>,
        ctx: Box<ErrorContext>,
    },
    #[error(
        "{ctx}: the subscription has no free licenses; buy more seats or free some before assigning"
    )]
    NoLicenseSeats { ctx: Box<ErrorContext> },
    #[error(
        "{ctx}: the user has no usageLocation; set a two-letter country code (e.g. US) before assigning a license"
    )]
    MissingUsageLocation { ctx: Box<ErrorContext> },
    #[error(
        "{ctx}: the app lacks the Graph permission (or the target is a privileged user it may not change); grant the application permission and admin consent"
    )]
    PermissionDenied { ctx: Box<ErrorContext> },
    #[error("{ctx}: throttled by Graph{}", .retry_after.map(|d| format!(", retry after {:.3} s", d.as_secs_f64())).unwrap_or_default())]
    Throttled {
        retry_after: Option<Duration>,
        ctx: Box<ErrorContext>,
    },
    #[error("{ctx}: transient failure, safe to retry later")]
    Transient {
        retry_after: Option<Duration>,
        ctx: Box<ErrorContext>,
    },
    #[error(
        "{ctx}: the access token was refused even after renewing it; check that the app, tenant and cloud match"
    )]
    Unauthorized { ctx: Box<ErrorContext> },
    #[error("authentication failed: {0}")]
    Auth(#[from] AuthError),
    #[error("{ctx}: request rejected")]
    BadRequest { ctx: Box<ErrorContext> },
    #[error("invalid Graph client configuration: {0}")]
    Config(String),
    #[error("{ctx}: unexpected response body: {detail}")]
    Decode {
        detail: String,
        ctx: Box<ErrorContext>,
    },
}

impl GraphError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            GraphError::Conflict { .. } => ErrorKind::Conflict,
            GraphError::NotFound { .. } => ErrorKind::NotFound,
            GraphError::InvalidValue { .. } => ErrorKind::InvalidValue,
            GraphError::NoLicenseSeats { .. } => ErrorKind::NoLicenseSeats,
            GraphError::MissingUsageLocation { .. } => ErrorKind::MissingUsageLocation,
            GraphError::PermissionDenied { .. } => ErrorKind::PermissionDenied,
            GraphError::Throttled { .. } => ErrorKind::Throttled,
            GraphError::Transient { .. } => ErrorKind::Transient,
            GraphError::Unauthorized { .. } => ErrorKind::Unauthorized,
            GraphError::Auth(_) => ErrorKind::Auth,
            GraphError::BadRequest { .. } => ErrorKind::BadRequest,
            GraphError::Config(_) => ErrorKind::Config,
            GraphError::Decode { .. } => ErrorKind::Decode,
        }
    }

    /// Worth retrying later without operator action (throttling, 5xx, timeouts, token endpoint
    /// down). Everything else needs a fix in data, configuration or permissions.
    pub fn is_retryable(&self) -> bool {
        match self {
            GraphError::Throttled { .. } | GraphError::Transient { .. } => true,
            GraphError::Auth(a) => a.is_retryable(),
            _ => false,
        }
    }

    /// `Retry-After` the service asked for, if any.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            GraphError::Throttled { retry_after, .. }
            | GraphError::Transient { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    pub fn context(&self) -> Option<&ErrorContext> {
        match self {
            GraphError::Conflict { ctx, .. }
            | GraphError::NotFound { ctx }
            | GraphError::InvalidValue { ctx, .. }
            | GraphError::NoLicenseSeats { ctx }
            | GraphError::MissingUsageLocation { ctx }
            | GraphError::PermissionDenied { ctx }
            | GraphError::Throttled { ctx, .. }
            | GraphError::Transient { ctx, .. }
            | GraphError::Unauthorized { ctx }
            | GraphError::BadRequest { ctx }
            | GraphError::Decode { ctx, .. } => Some(ctx),
            GraphError::Auth(_) | GraphError::Config(_) => None,
        }
    }

    pub fn status(&self) -> Option<u16> {
        self.context().and_then(|c| c.status)
    }

    /// The property named by a conflict or invalid-value error.
    pub fn property(&self) -> Option<&str> {
        match self {
            GraphError::Conflict { property, .. } | GraphError::InvalidValue { property, .. } => {
                property.as_deref()
            }
            _ => None,
        }
    }

    /// A reference to an object that is not (yet) visible: 404 `Request_ResourceNotFound`, or a
    /// 400 whose message says the referenced objects "do not exist"
    /// (docs/graph-behaviour.md#replication-lag).
    pub fn is_replication_lag(&self) -> bool {
        let Some(ctx) = self.context() else {
            return false;
        };
        match ctx.status {
            Some(404) => true,
            Some(400) => {
                let m = ctx.message.to_ascii_lowercase();
                (m.contains("do not exist") || m.contains("does not exist"))
                    && !m.contains("declared property")
                    && !m.contains("removed object references")
            }
            _ => false,
        }
    }

    /// "One or more added object references already exist…": the member is already there.
    pub fn is_reference_already_present(&self) -> bool {
        self.context().is_some_and(|c| {
            c.status == Some(400)
                && c.message
                    .to_ascii_lowercase()
                    .contains("added object references already exist")
        })
    }

    /// "Not a member": 404, or 400 "One or more removed object references do not exist…".
    pub fn is_reference_absent(&self) -> bool {
        self.context().is_some_and(|c| {
            c.status == Some(404)
                || (c.status == Some(400)
                    && c.message
                        .to_ascii_lowercase()
                        .contains("removed object references do not exist"))
        })
    }

    pub(crate) fn transport(ctx: ErrorContext) -> GraphError {
        GraphError::Transient {
            retry_after: None,
            ctx: Box::new(ctx),
        }
    }

    pub(crate) fn decode(ctx: ErrorContext, detail: impl Into<String>) -> GraphError {
        GraphError::Decode {
            detail: detail.into(),
            ctx: Box::new(ctx),
        }
    }
}

#[derive(Debug, Default, Deserialize)]
struct WireEnvelope {
    error: Option<WireError>,
}

#[derive(Debug, Default, Deserialize)]
struct WireError {
    #[serde(default)]
    code: Option<String>,
    #[serde(default)]
    message: Option<String>,
    #[serde(default, rename = "innerError", alias = "innererror")]
    inner_error: Option<WireInner>,
    #[serde(default)]
    details: Vec<WireDetail>,
}

#[derive(Debug, Default, Deserialize)]
struct WireInner {
    #[serde(default, rename = "request-id")]
    request_id: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct WireDetail {
    #[serde(default)]
    code: Option<String>,
    #[serde(default)]
    target: Option<String>,
}

/// Builds the error for a non-success Graph response. `ctx` carries method, path, status and
/// request ids; code and message are filled from the body.
pub fn classify(
    mut ctx: ErrorContext,
    status: u16,
    body: &[u8],
    retry_after: Option<Duration>,
) -> GraphError {
    let wire: WireError = serde_json::from_slice::<WireEnvelope>(body)
        .ok()
        .and_then(|e| e.error)
        .unwrap_or_default();
    ctx.status = Some(status);
    ctx.code = wire.code.clone();
    ctx.message = wire
        .message
        .clone()
        .unwrap_or_else(|| String::from_utf8_lossy(body).chars().take(300).collect());
    if ctx.request_id.is_none() {
        ctx.request_id = wire.inner_error.as_ref().and_then(|i| i.request_id.clone());
    }
    let code = wire.code.as_deref().unwrap_or("");
    let msg = ctx.message.clone();
    let lower = msg.to_ascii_lowercase();
    let ctx = Box::new(ctx);

    match status {
        429 => return GraphError::Throttled { retry_after, ctx },
        500 | 502 | 503 | 504 => return GraphError::Transient { retry_after, ctx },
        401 => return GraphError::Unauthorized { ctx },
        403 => return GraphError::PermissionDenied { ctx },
        _ => {}
    }
    if status >= 500 {
        return GraphError::Transient { retry_after, ctx };
    }

    // Conflicts: details first (docs/graph-behaviour.md#uniqueness-conflicts), then the message
    // forms.
    if let Some(d) = wire
        .details
        .iter()
        .find(|d| d.code.as_deref() == Some("ObjectConflict"))
    {
        return GraphError::Conflict {
            property: d.target.clone().filter(|t| !t.is_empty()),
            ctx,
        };
    }
    if let Some(p) = between(
        &msg,
        "Another object with the same value for property ",
        " already exists",
    ) {
        return GraphError::Conflict {
            property: Some(p.trim().to_string()),
            ctx,
        };
    }
    if lower.contains("property netid is invalid") {
        return GraphError::Conflict {
            property: Some("mailNickname".into()),
            ctx,
        };
    }
    if lower.contains("conflicting object") && lower.contains("present in the directory") {
        return GraphError::Conflict {
            property: None,
            ctx,
        };
    }
    if status == 409 {
        return GraphError::Conflict {
            property: wire.details.iter().find_map(|d| d.target.clone()),
            ctx,
        };
    }
    if lower.contains("does not have any available licenses") {
        return GraphError::NoLicenseSeats { ctx };
    }
    if lower.contains("invalid usage location") {
        return GraphError::MissingUsageLocation { ctx };
    }
    if let Some(p) = invalid_property(&msg, &wire.details) {
        return GraphError::InvalidValue { property: p, ctx };
    }
    if status == 404 || code == "Request_ResourceNotFound" || code == "ResourceNotFound" {
        return GraphError::NotFound { ctx };
    }
    if status == 400 && (lower.contains("do not exist") || lower.contains("does not exist")) {
        // A referenced object is missing (often replication lag,
        // docs/graph-behaviour.md#replication-lag).
        return GraphError::NotFound { ctx };
    }
    GraphError::BadRequest { ctx }
}

/// Property named by an invalid-value message, `Some(None)` for a generic invalid value.
fn invalid_property(msg: &str, details: &[WireDetail]) -> Option<Option<String>> {
    let lower = msg.to_ascii_lowercase();
    if let Some(p) = between(msg, "Invalid value specified for property '", "'") {
        return Some(Some(p.to_string()));
    }
    if lower.contains("password complexity")
        || lower.contains("password") && lower.contains("banned")
    {
        return Some(Some("passwordProfile".into()));
    }
    // Unknown property: "Property 'foo' does not exist as a declared property or extension property."
    if lower.contains("declared property") {
        if let Some(p) = between(msg, "Property '", "'") {
            return Some(Some(p.to_string()));
        }
        return Some(None);
    }
    if let Some(p) = between(msg, "Invalid property '", "'") {
        return Some(Some(p.to_string()));
    }
    if let Some(p) = between(msg, "Property ", " is invalid") {
        let p = p.trim().trim_matches('\'');
        if !p.is_empty() && !p.contains(' ') {
            return Some(Some(p.to_string()));
        }
    }
    // "Property onPremisesImmutableId value is required but is empty or missing."
    if let Some(p) = between(msg, "Property ", " value is required") {
        let p = p.trim().trim_matches('\'');
        if !p.is_empty() && !p.contains(' ') {
            return Some(Some(p.to_string()));
        }
    }
    // "The domain portion of the userPrincipalName property is invalid. …"
    if let Some(i) = msg.find(" property is invalid")
        && let Some(word) = msg[..i].split_whitespace().last()
    {
        let word = word.trim_matches('\'');
        if !word.is_empty() {
            return Some(Some(word.to_string()));
        }
    }
    if let Some(p) = between(msg, "Cannot set property '", "'") {
        return Some(Some(p.to_string()));
    }
    if lower.contains("one or more properties contains invalid values")
        || lower.contains("invalid value")
    {
        let target = details
            .iter()
            .find_map(|d| d.target.clone().filter(|t| !t.is_empty()));
        return Some(target);
    }
    None
}

fn between<'a>(s: &'a str, start: &str, end: &str) -> Option<&'a str> {
    let i = s.find(start)? + start.len();
    let rest = &s[i..];
    let j = rest.find(end)?;
    Some(&rest[..j])
}

/// Parses `Retry-After`: decimal seconds ("2.128", "5") or an HTTP date. Negative, NaN or absurd
/// values yield `None`; values are capped at 10 minutes so a bad header cannot park a worker.
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    let v = value.trim();
    if v.is_empty() {
        return None;
    }
    if let Ok(secs) = v.parse::<f64>() {
        if !secs.is_finite() || secs < 0.0 {
            return None;
        }
        return Some(Duration::from_secs_f64(secs.min(600.0)));
    }
    let when = httpdate::parse_http_date(v).ok()?;
    let d = when
        .duration_since(std::time::SystemTime::now())
        .unwrap_or(Duration::ZERO);
    Some(d.min(Duration::from_secs(600)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx() -> ErrorContext {
        ErrorContext {
            method: "POST".into(),
            path: "/users".into(),
            ..ErrorContext::default()
        }
    }

    fn body(code: &str, message: &str, details: serde_json::Value) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({
            "error": {"code": code, "message": message,
                      "innerError": {"date": "2024-01-01T00:00:00", "request-id": "rid-1", "client-request-id": "c-1"},
                      "details": details}
        }))
        .unwrap()
    }

    #[test]
    fn classifies_wire_bodies() {
        let cases: Vec<(u16, Vec<u8>, ErrorKind, Option<&str>)> = vec![
            (
                400,
                body(
                    "Request_BadRequest",
                    "Another object with the same value for property userPrincipalName already exists.",
                    serde_json::json!([{"code": "ObjectConflict", "message": "…", "target": "userPrincipalName"}]),
                ),
                ErrorKind::Conflict,
                Some("userPrincipalName"),
            ),
            (
                400,
                body(
                    "Request_BadRequest",
                    "Another object with the same value for property proxyAddresses already exists.",
                    serde_json::json!([]),
                ),
                ErrorKind::Conflict,
                Some("proxyAddresses"),
            ),
            (
                400,
                body(
                    "Request_BadRequest",
                    "Property netId is invalid.",
                    serde_json::json!([]),
                ),
                ErrorKind::Conflict,
                Some("mailNickname"),
            ),
            (
                400,
                body(
                    "Request_BadRequest",
                    "A conflicting object with one or more of the specified property values is present in the directory.",
                    serde_json::json!([]),
                ),
                ErrorKind::Conflict,
                None,
            ),
            (
                400,
                body(
                    "Request_BadRequest",
                    "The specified password does not comply with password complexity requirements. Please provide a different password.",
                    serde_json::json!([]),
                ),
                ErrorKind::InvalidValue,
                Some("passwordProfile"),
            ),
            (
                400,
                body(
                    "Request_BadRequest",
                    "Invalid value specified for property 'mailNickname' of resource 'User'.",
                    serde_json::json!([]),
                ),
                ErrorKind::InvalidValue,
                Some("mailNickname"),
            ),
            (
                400,
                body(
                    "Request_BadRequest",
                    "Property userPrincipalName is invalid.",
                    serde_json::json!([]),
                ),
                ErrorKind::InvalidValue,
                Some("userPrincipalName"),
            ),
            (
                400,
                body(
                    "Request_BadRequest",
                    "Property 'favouriteColour' does not exist as a declared property or extension property.",
                    serde_json::json!([]),
                ),
                ErrorKind::InvalidValue,
                Some("favouriteColour"),
            ),
            (
                400,
                body(
                    "Request_BadRequest",
                    "Invalid property 'favouriteColour'.",
                    serde_json::json!([]),
                ),
                ErrorKind::InvalidValue,
                Some("favouriteColour"),
            ),
            (
                400,
                body(
                    "Request_BadRequest",
                    "One or more properties contains invalid values.",
                    serde_json::json!([]),
                ),
                ErrorKind::InvalidValue,
                None,
            ),
            (
                400,
                body(
                    "Request_BadRequest",
                    "Subscription with SKU 6fd2c87f-b296-42f0-b197-1e91e994b900 does not have any available licenses.",
                    serde_json::json!([]),
                ),
                ErrorKind::NoLicenseSeats,
                None,
            ),
            (
                400,
                body(
                    "Request_BadRequest",
                    "License assignment cannot be done for user with invalid usage location.",
                    serde_json::json!([]),
                ),
                ErrorKind::MissingUsageLocation,
                None,
            ),
            (
                404,
                body(
                    "Request_ResourceNotFound",
                    "Resource 'manager' does not exist or one of its queried reference-property objects are not present.",
                    serde_json::json!([]),
                ),
                ErrorKind::NotFound,
                None,
            ),
            (
                400,
                body(
                    "Request_BadRequest",
                    "The source resource object or one of the objects being referenced do not exist.",
                    serde_json::json!([]),
                ),
                ErrorKind::NotFound,
                None,
            ),
            (
                403,
                body(
                    "Authorization_RequestDenied",
                    "Insufficient privileges to complete the operation.",
                    serde_json::json!([]),
                ),
                ErrorKind::PermissionDenied,
                None,
            ),
            (
                429,
                body(
                    "TooManyRequests",
                    "Please retry again later.",
                    serde_json::json!([]),
                ),
                ErrorKind::Throttled,
                None,
            ),
            (
                503,
                body(
                    "serviceNotAvailable",
                    "Service unavailable",
                    serde_json::json!([]),
                ),
                ErrorKind::Transient,
                None,
            ),
            (
                504,
                b"<html>gateway</html>".to_vec(),
                ErrorKind::Transient,
                None,
            ),
            (
                401,
                body(
                    "InvalidAuthenticationToken",
                    "Access token has expired or is not yet valid.",
                    serde_json::json!([]),
                ),
                ErrorKind::Unauthorized,
                None,
            ),
            (
                400,
                body(
                    "Request_BadRequest",
                    "$count is not currently supported.",
                    serde_json::json!([]),
                ),
                ErrorKind::BadRequest,
                None,
            ),
            (
                400,
                body(
                    "Request_BadRequest",
                    "One or more added object references already exist for the following modified properties: 'members'.",
                    serde_json::json!([]),
                ),
                ErrorKind::BadRequest,
                None,
            ),
        ];
        for (status, b, kind, prop) in cases {
            let e = classify(ctx(), status, &b, None);
            assert_eq!(e.kind(), kind, "{e}");
            assert_eq!(e.property(), prop, "{e}");
            let c = e.context().unwrap();
            assert_eq!(c.status, Some(status));
            assert_eq!(c.method, "POST");
            assert_eq!(c.path, "/users");
            if status != 504 {
                assert_eq!(c.request_id.as_deref(), Some("rid-1"));
            }
        }
    }

    #[test]
    fn membership_idempotency_helpers() {
        let present = classify(
            ctx(),
            400,
            &body(
                "Request_BadRequest",
                "One or more added object references already exist for the following modified properties: 'members'.",
                serde_json::json!([]),
            ),
            None,
        );
        assert!(present.is_reference_already_present());
        assert!(!present.is_replication_lag());
        let absent = classify(
            ctx(),
            400,
            &body(
                "Request_BadRequest",
                "One or more removed object references do not exist for the following modified properties: 'members'.",
                serde_json::json!([]),
            ),
            None,
        );
        assert!(absent.is_reference_absent());
        assert!(!absent.is_replication_lag());
        let lag = classify(
            ctx(),
            400,
            &body(
                "Request_BadRequest",
                "The source resource object or one of the objects being referenced do not exist.",
                serde_json::json!([]),
            ),
            None,
        );
        assert!(lag.is_replication_lag());
        let unknown_prop = classify(
            ctx(),
            400,
            &body(
                "Request_BadRequest",
                "Property 'x' does not exist as a declared property or extension property.",
                serde_json::json!([]),
            ),
            None,
        );
        assert!(!unknown_prop.is_replication_lag());
        let nf = classify(
            ctx(),
            404,
            &body(
                "Request_ResourceNotFound",
                "Resource 'abc' does not exist or one of its queried reference-property objects are not present.",
                serde_json::json!([]),
            ),
            None,
        );
        assert!(nf.is_replication_lag());
        assert!(!nf.is_retryable());
    }

    #[test]
    fn throttled_keeps_retry_after_and_is_retryable() {
        let e = classify(ctx(), 429, b"{}", Some(Duration::from_millis(2128)));
        assert!(e.is_retryable());
        assert_eq!(e.retry_after(), Some(Duration::from_millis(2128)));
        assert!(e.to_string().contains("2.128"));
    }

    #[test]
    fn retry_after_parsing() {
        assert_eq!(
            parse_retry_after("2.128"),
            Some(Duration::from_millis(2128))
        );
        assert_eq!(parse_retry_after(" 5 "), Some(Duration::from_secs(5)));
        assert_eq!(parse_retry_after("0"), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("-1"), None);
        assert_eq!(parse_retry_after("NaN"), None);
        assert_eq!(parse_retry_after(""), None);
        assert_eq!(parse_retry_after("soon"), None);
        assert_eq!(parse_retry_after("99999"), Some(Duration::from_secs(600)));
        // An HTTP date in the past means "now".
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"),
            Some(Duration::ZERO)
        );
    }

    #[test]
    fn display_is_actionable_and_names_the_request() {
        let e = classify(
            ctx(),
            400,
            &body(
                "Request_BadRequest",
                "Another object with the same value for property userPrincipalName already exists.",
                serde_json::json!([{"code":"ObjectConflict","target":"userPrincipalName"}]),
            ),
            None,
        );
        let s = e.to_string();
        assert!(s.contains("POST /users"), "{s}");
        assert!(s.contains("userPrincipalName"), "{s}");
        assert!(s.contains("rid-1"), "{s}");
    }
}
