//! What a handler gets to work with: the request (from HTTP or a `$batch` item), its query
//! options, the caller's permissions, and helpers to read a JSON body or a `$ref`.

use bytes::Bytes;
use http::{HeaderMap, Method, StatusCode};
use serde_json::{Map, Value};

use crate::config::DeltaKnobs;
use crate::token::Caller;
use crate::wire::GraphError;

/// A request to the version root, from HTTP or from a `$batch` item. Its `Debug` shows header
/// names only (the bearer token) and no body (a password).
#[derive(Clone)]
pub(crate) struct GraphRequest {
    pub method: Method,
    /// Path relative to `/v1.0`, still percent-encoded: `/users/a%40b.com`.
    pub path: String,
    /// Raw query string without `?`.
    pub query: String,
    pub headers: HeaderMap,
    pub body: Bytes,
    /// `http://host:port` this server is reached at (for `@odata.nextLink`).
    pub base_url: String,
    pub batch_item: bool,
}

impl std::fmt::Debug for GraphRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GraphRequest")
            .field("method", &self.method)
            .field("path", &self.path)
            .field("query", &self.query)
            .field("headers", &self.headers.keys().collect::<Vec<_>>())
            .field("body_bytes", &self.body.len())
            .field("base_url", &self.base_url)
            .field("batch_item", &self.batch_item)
            .finish()
    }
}

pub(super) fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// Parsed system query options.
#[derive(Debug, Default)]
pub(crate) struct Query {
    pub pairs: Vec<(String, String)>,
}

impl Query {
    pub(super) fn get(&self, name: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

pub(super) fn parse_query(query: &str) -> Query {
    let pairs = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            let dec = |s: &str| {
                percent_encoding::percent_decode_str(&s.replace('+', " "))
                    .decode_utf8_lossy()
                    .into_owned()
            };
            (dec(k), dec(v))
        })
        .collect();
    Query { pairs }
}

/// One request as its handler sees it.
pub(super) struct RequestContext<'a> {
    pub caller: &'a Caller,
    /// Milliseconds since the Unix epoch when the request reached the tenant.
    pub now: u64,
    /// Replication lag: a created object becomes visible to reads `lag` ms after `now`.
    pub lag: u64,
    pub request: &'a GraphRequest,
    pub query: Query,
    /// Set by a handler that changed the tenant (the state file is written after the request).
    pub mutated: bool,
    /// How delta queries answer.
    pub delta: &'a DeltaKnobs,
}

/// Application permissions (app roles) a route needs: any one of [`allowed`]'s list will do.
#[derive(Clone, Copy)]
pub(super) enum Permission {
    UserRead,
    UserWrite,
    GroupRead,
    GroupWrite,
    MemberWrite,
    OrgRead,
    LicenseWrite,
}

fn allowed(permission: Permission) -> &'static [&'static str] {
    match permission {
        Permission::UserRead => &[
            "User.Read.All",
            "User.ReadWrite.All",
            "Directory.Read.All",
            "Directory.ReadWrite.All",
        ],
        Permission::UserWrite => &["User.ReadWrite.All", "Directory.ReadWrite.All"],
        Permission::GroupRead => &[
            "Group.Read.All",
            "Group.ReadWrite.All",
            "GroupMember.Read.All",
            "GroupMember.ReadWrite.All",
            "Directory.Read.All",
            "Directory.ReadWrite.All",
        ],
        Permission::GroupWrite => &["Group.ReadWrite.All", "Directory.ReadWrite.All"],
        Permission::MemberWrite => &[
            "GroupMember.ReadWrite.All",
            "Group.ReadWrite.All",
            "Directory.ReadWrite.All",
        ],
        Permission::OrgRead => &[
            "Organization.Read.All",
            "Organization.ReadWrite.All",
            "Directory.Read.All",
            "Directory.ReadWrite.All",
            "Domain.Read.All",
        ],
        Permission::LicenseWrite => &[
            "User.ReadWrite.All",
            "Directory.ReadWrite.All",
            "LicenseAssignment.ReadWrite.All",
        ],
    }
}

impl RequestContext<'_> {
    pub(super) fn need(&self, permission: Permission) -> Result<(), GraphError> {
        let ok = allowed(permission)
            .iter()
            .any(|p| self.caller.roles.iter().any(|r| r.eq_ignore_ascii_case(p)));
        if ok {
            Ok(())
        } else {
            Err(GraphError::forbidden())
        }
    }

    pub(super) fn body_object(&self) -> Result<Map<String, Value>, GraphError> {
        let unreadable = || {
            GraphError::new(
                StatusCode::BAD_REQUEST,
                "BadRequest",
                "Unable to read JSON request payload. Please ensure Content-Type header is set and payload is of valid JSON format.",
            )
        };
        if self.request.body.is_empty() {
            return Err(unreadable());
        }
        if !self.request.batch_item {
            let ct = header(&self.request.headers, "content-type").unwrap_or("");
            if !ct.to_ascii_lowercase().contains("json") {
                return Err(GraphError::new(
                    StatusCode::BAD_REQUEST,
                    "BadRequest",
                    "Write requests (excluding DELETE) must contain the Content-Type header declaration.",
                ));
            }
        }
        match serde_json::from_slice::<Value>(&self.request.body) {
            Ok(Value::Object(m)) => Ok(m),
            _ => Err(unreadable()),
        }
    }

    pub(super) fn consistency_eventual(&self) -> bool {
        header(&self.request.headers, "consistencylevel")
            .is_some_and(|v| v.eq_ignore_ascii_case("eventual"))
    }
}

pub(super) fn schema_error(violation: &crate::schema::SchemaViolation) -> GraphError {
    let status = StatusCode::from_u16(violation.status()).unwrap_or(StatusCode::BAD_REQUEST);
    GraphError::new(status, violation.code(), violation.message())
}

pub(super) fn decode_segment(s: &str) -> String {
    percent_encoding::percent_decode_str(s)
        .decode_utf8_lossy()
        .into_owned()
}

/// The `@odata.id` of a `$ref` body as an object id (`.../users/{id}` or `.../directoryObjects/{id}`).
pub(super) fn ref_id(body: &Map<String, Value>) -> Result<String, GraphError> {
    let url = body
        .get("@odata.id")
        .and_then(Value::as_str)
        .ok_or_else(|| GraphError::bad_request("Invalid request body: '@odata.id' is required."))?;
    ref_from_url(url)
}

pub(super) fn ref_from_url(url: &str) -> Result<String, GraphError> {
    let last = url
        .trim_end_matches('/')
        .rsplit('/')
        .next()
        .unwrap_or("")
        .to_owned();
    // `directoryObjects('id')` form.
    let last = last
        .split_once("('")
        .map(|(_, rest)| rest.trim_end_matches("')").to_owned())
        .unwrap_or(last);
    let last = decode_segment(&last);
    if last.is_empty() {
        return Err(GraphError::bad_request(format!(
            "Invalid object identifier '{url}'."
        )));
    }
    Ok(last)
}

pub(super) fn read_only_error(prop: &str) -> GraphError {
    GraphError::bad_request(format!("Property '{prop}' is read-only and cannot be set."))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_debug_hides_the_token_and_the_body() {
        let mut headers = HeaderMap::new();
        headers.insert(
            http::header::AUTHORIZATION,
            http::HeaderValue::from_static("Bearer eyJ.T0ken-value.sig"),
        );
        let request = GraphRequest {
            method: Method::POST,
            path: "/users".to_owned(),
            query: String::new(),
            headers,
            body: Bytes::from_static(br#"{"passwordProfile":{"password":"Sandb0x-pw!"}}"#),
            base_url: "http://127.0.0.1:1".to_owned(),
            batch_item: false,
        };
        let shown = format!("{request:?} {request:#?}");
        assert!(!shown.contains("T0ken-value"), "{shown}");
        assert!(!shown.contains("Sandb0x-pw!"), "{shown}");
        assert!(shown.contains("authorization"), "{shown}");
    }
}
