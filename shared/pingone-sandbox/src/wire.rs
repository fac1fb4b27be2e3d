//! PingOne's wire shapes: the P1Error body every `/v1` failure carries, the HAL+JSON content type
//! of successful bodies, the `correlation-id` header and RFC 3339 timestamps.
//!
//! Error body: <https://developer.pingidentity.com/pingone-api/platform/reference/error-codes.html>
//! (`{id, code, message, details?: [{code, target, message, innerError?}]}`).

use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

/// Content type of successful `/v1` bodies.
pub(crate) const HAL_JSON: &str = "application/hal+json;charset=UTF-8";
/// Content type of error bodies (P1Error and OAuth errors).
pub(crate) const JSON: &str = "application/json";

/// The correlation id of one request: sent back in the `correlation-id` header, used as the
/// `id` of a P1Error body and quoted in OAuth error descriptions.
#[derive(Debug, Clone)]
pub(crate) struct CorrelationId(pub String);

impl CorrelationId {
    pub fn new() -> Self {
        Self(uuid::Uuid::new_v4().to_string())
    }
}

/// A `/v1` failure before it gets its correlation id.
#[derive(Debug, Clone)]
pub(crate) struct P1Error {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub details: Vec<Value>,
    /// Extra headers (`Retry-After`).
    pub headers: Vec<(&'static str, String)>,
}

impl P1Error {
    fn new(status: StatusCode, code: &'static str, message: &str) -> Self {
        Self {
            status,
            code,
            message: message.to_owned(),
            details: Vec::new(),
            headers: Vec::new(),
        }
    }

    pub fn not_found() -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
            "The requested resource was not found.",
        )
    }

    /// A method the stand-in does not serve (it answers reads only).
    pub fn method_not_allowed() -> Self {
        Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "METHOD_NOT_ALLOWED",
            "The request could not be completed. The HTTP method is not supported by this resource.",
        )
    }

    pub fn access_failed() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "ACCESS_FAILED",
            "The request could not be completed. You do not have access to this resource.",
        )
    }

    pub fn request_limited(retry_after_secs: u64) -> Self {
        let mut e = Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            "REQUEST_LIMITED",
            "The request was rejected because the rate limit was exceeded.",
        );
        e.headers
            .push(("retry-after", retry_after_secs.to_string()));
        e
    }

    /// 400 `INVALID_DATA` with one detail.
    pub fn invalid_data(detail_code: &'static str, target: &str, message: &str) -> Self {
        let mut e = Self::new(
            StatusCode::BAD_REQUEST,
            "INVALID_DATA",
            "The request could not be completed. One or more validation errors were in the request.",
        );
        e.details.push(json!({
            "code": detail_code,
            "target": target,
            "message": message,
        }));
        e
    }

    pub fn body(&self, correlation: &CorrelationId) -> Value {
        let mut body = json!({
            "id": correlation.0,
            "code": self.code,
            "message": self.message,
        });
        if !self.details.is_empty() {
            body["details"] = Value::Array(self.details.clone());
        }
        body
    }

    pub fn response(&self, correlation: &CorrelationId) -> Response {
        let mut builder = Response::builder()
            .status(self.status)
            .header("content-type", JSON);
        for (name, value) in &self.headers {
            builder = builder.header(*name, value.as_str());
        }
        finish(builder.body(Body::from(self.body(correlation).to_string())))
    }
}

/// A 200 HAL+JSON response.
pub(crate) fn hal(body: &Value) -> Response {
    json_response(StatusCode::OK, HAL_JSON, body)
}

pub(crate) fn json_response(status: StatusCode, content_type: &str, body: &Value) -> Response {
    finish(
        Response::builder()
            .status(status)
            .header("content-type", content_type)
            .body(Body::from(body.to_string())),
    )
}

fn finish(built: Result<Response, http::Error>) -> Response {
    built.unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

/// Adds the `correlation-id` header.
pub(crate) fn stamp(response: &mut Response, correlation: &CorrelationId) {
    if let Ok(value) = HeaderValue::from_str(&correlation.0) {
        response.headers_mut().insert("correlation-id", value);
    }
}

/// Now as RFC 3339 UTC with milliseconds (`2026-01-31T09:30:00.123Z`), the form PingOne uses for
/// `createdAt` and `updatedAt`.
pub(crate) fn now_rfc3339() -> String {
    rfc3339_from_millis(now_millis())
}

/// Milliseconds since the Unix epoch.
pub(crate) fn now_millis() -> u64 {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    since
        .as_secs()
        .saturating_mul(1000)
        .saturating_add(u64::from(since.subsec_millis()))
}

/// `unix_millis` as RFC 3339 UTC with milliseconds.
pub(crate) fn rfc3339_from_millis(unix_millis: u64) -> String {
    let millis = u32::try_from(unix_millis % 1000).unwrap_or(0);
    rfc3339_millis(unix_millis / 1000, millis)
}

/// An RFC 3339 timestamp (any offset, any fraction) as milliseconds since the Unix epoch, or
/// `None` if `text` is not one or lies before 1970.
pub(crate) fn parse_rfc3339_millis(text: &str) -> Option<u64> {
    let t =
        time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339).ok()?;
    u64::try_from(t.unix_timestamp_nanos() / 1_000_000).ok()
}

fn rfc3339_millis(unix_secs: u64, millis: u32) -> String {
    let days = unix_secs / 86_400;
    let rem = unix_secs % 86_400;
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian (H. Hinnant's algorithm,
/// <https://howardhinnant.github.io/date_algorithms.html#civil_from_days>).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_what_it_formats() {
        let ms = 1_767_225_599_999;
        assert_eq!(parse_rfc3339_millis(&rfc3339_from_millis(ms)), Some(ms));
        assert_eq!(
            parse_rfc3339_millis("2018-08-20T00:00:00Z"),
            Some(1_534_723_200_000)
        );
        assert_eq!(
            parse_rfc3339_millis("2018-08-20T02:00:00+02:00"),
            Some(1_534_723_200_000)
        );
        assert_eq!(parse_rfc3339_millis("2018-08-20"), None);
    }

    #[test]
    fn timestamps() {
        assert_eq!(rfc3339_millis(0, 0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339_millis(951_782_400, 7), "2000-02-29T00:00:00.007Z");
        assert_eq!(
            rfc3339_millis(1_767_225_599, 999),
            "2025-12-31T23:59:59.999Z"
        );
    }
}
