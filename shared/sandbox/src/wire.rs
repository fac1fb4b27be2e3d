//! Graph's wire shapes: error bodies (docs/graph-behaviour.md#error-bodies), `@odata.context`,
//! timestamps.

use http::StatusCode;
use serde_json::{Map, Value, json};

/// Graph's metadata root, used in `@odata.context` as Graph itself sends it.
pub(crate) const METADATA: &str = "https://graph.microsoft.com/v1.0/$metadata";

/// A response before it becomes HTTP (also the shape of a `$batch` item).
#[derive(Debug, Clone)]
pub(crate) struct GraphResponse {
    pub status: StatusCode,
    pub headers: Vec<(String, String)>,
    pub body: Option<Value>,
}

impl GraphResponse {
    pub fn json(status: StatusCode, body: Value) -> Self {
        Self {
            status,
            headers: Vec::new(),
            body: Some(body),
        }
    }

    pub fn no_content() -> Self {
        Self {
            status: StatusCode::NO_CONTENT,
            headers: Vec::new(),
            body: None,
        }
    }
}

/// A Graph error before `innerError` is filled in.
#[derive(Debug, Clone)]
pub(crate) struct GraphError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub details: Option<Vec<Value>>,
    pub inner_code: Option<&'static str>,
    pub headers: Vec<(String, String)>,
}

pub(crate) type GraphResult = Result<GraphResponse, GraphError>;

impl GraphError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            details: None,
            inner_code: None,
            headers: Vec::new(),
        }
    }

    /// 400 `Request_BadRequest`, the directory's catch-all (docs/graph-behaviour.md#error-bodies).
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "Request_BadRequest", message)
    }

    /// 400 `Request_BadRequest` "Invalid value specified for property 'p' of resource 'R'."
    pub fn invalid_value(prop: &str, resource: &str) -> Self {
        Self::bad_request(format!(
            "Invalid value specified for property '{prop}' of resource '{resource}'."
        ))
        .with_details(vec![json!({"code": "InvalidValue", "target": prop})])
    }

    /// 400 "Property p value is required but is empty or missing."
    pub fn required(prop: &str) -> Self {
        Self::bad_request(format!(
            "Property {prop} value is required but is empty or missing."
        ))
        .with_details(vec![json!({"code": "PropertyRequired", "target": prop})])
    }

    /// 400 uniqueness conflict with `ObjectConflict` details (docs/graph-behaviour.md#error-bodies,
    /// #uniqueness-conflicts).
    pub fn conflict(prop: &str) -> Self {
        Self::bad_request(format!(
            "Another object with the same value for property {prop} already exists."
        ))
        .with_details(vec![json!({"code": "ObjectConflict", "target": prop})])
    }

    /// 404 `Request_ResourceNotFound` (docs/graph-behaviour.md#error-bodies, #replication-lag).
    pub fn not_found(what: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "Request_ResourceNotFound",
            format!(
                "Resource '{what}' does not exist or one of its queried reference-property objects are not present."
            ),
        )
    }

    /// 403 `Authorization_RequestDenied` (docs/graph-behaviour.md#error-bodies).
    pub fn forbidden() -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            "Authorization_RequestDenied",
            "Insufficient privileges to complete the operation.",
        )
    }

    /// 400 "The source resource object or one of the objects being referenced do not exist."
    /// (docs/graph-behaviour.md#replication-lag)
    pub fn reference_missing() -> Self {
        Self::bad_request(
            "The source resource object or one of the objects being referenced do not exist.",
        )
    }

    /// 400 `Request_UnsupportedQuery`.
    pub fn unsupported_query(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "Request_UnsupportedQuery", message)
    }

    pub fn with_details(mut self, details: Vec<Value>) -> Self {
        self.details = Some(details);
        self
    }

    pub fn with_header(mut self, name: &str, value: impl Into<String>) -> Self {
        self.headers.push((name.to_owned(), value.into()));
        self
    }

    /// The final response with `innerError` (date, request-id, client-request-id).
    pub fn into_resp(self, request_id: &str, client_request_id: &str) -> GraphResponse {
        let mut inner = Map::new();
        inner.insert("date".into(), Value::String(inner_date()));
        inner.insert("request-id".into(), Value::String(request_id.to_owned()));
        inner.insert(
            "client-request-id".into(),
            Value::String(client_request_id.to_owned()),
        );
        if let Some(code) = self.inner_code {
            inner.insert("code".into(), Value::String(code.to_owned()));
        }
        let mut error = Map::new();
        error.insert("code".into(), Value::String(self.code.to_owned()));
        error.insert("message".into(), Value::String(self.message));
        error.insert("innerError".into(), Value::Object(inner));
        if let Some(details) = self.details {
            error.insert("details".into(), Value::Array(details));
        }
        GraphResponse {
            status: self.status,
            headers: self.headers,
            body: Some(json!({ "error": Value::Object(error) })),
        }
    }
}

/// `innerError.date` as Graph sends it: `2024-05-01T12:00:00` (UTC, no zone).
pub(crate) fn inner_date() -> String {
    let now = time::OffsetDateTime::now_utc();
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
        now.year(),
        u8::from(now.month()),
        now.day(),
        now.hour(),
        now.minute(),
        now.second()
    )
}

/// A DateTimeOffset property value: `2024-05-01T12:00:00Z`.
pub(crate) fn now_iso() -> String {
    format!("{}Z", inner_date())
}

/// Milliseconds since the Unix epoch (replication lag bookkeeping).
pub(crate) fn now_ms() -> u64 {
    let nanos = time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000;
    u64::try_from(nanos).unwrap_or(0)
}

/// Seconds since the Unix epoch.
pub(crate) fn now_secs() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}
