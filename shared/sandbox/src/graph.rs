//! The `/v1.0` request pipeline and its routes.
//!
//! Every request (and every `$batch` item) runs through [`execute_single`]: token (§1) →
//! throttling (§8) → scripted/random faults (§8.1, gotcha 13) → latency → permission check →
//! the route, which validates as Graph does (§2–§6) → request log and stats → state file.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use http::{HeaderMap, Method, StatusCode};
use rand::Rng;
use serde_json::{Map, Value, json};

use crate::config::FaultStatus;
use crate::filter;
use crate::tenant::{Obj, TenantState, add_mail_proxy};
use crate::token::{Caller, authenticate};
use crate::validate;
use crate::wire::{GErr, GResp, GResult, METADATA, now_iso, now_ms};
use crate::{Inner, LoggedRequest};

/// A request to the version root, from HTTP or from a `$batch` item. Its `Debug` shows header
/// names only (the bearer token) and no body (a password).
#[derive(Clone)]
pub(crate) struct GReq {
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

impl std::fmt::Debug for GReq {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GReq")
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

/// Outcome of a request for the log.
pub(crate) struct Outcome {
    pub resp: GResp,
    pub app_id: Option<String>,
    pub resource_units: u32,
    pub throttled: bool,
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

fn is_write(method: &Method) -> bool {
    matches!(
        *method,
        Method::POST | Method::PATCH | Method::PUT | Method::DELETE
    )
}

enum Fault {
    None,
    Before(u16, Option<f64>),
    After(u16, Option<f64>),
    Timeout,
}

fn decide_fault(inner: &Inner, method: &Method, path: &str) -> Fault {
    {
        let mut rules = inner.lock_faults();
        if let Some(pos) = rules
            .iter()
            .position(|r| r.count > 0 && r.matches(method.as_str(), path))
        {
            let rule = rules[pos].clone();
            rules[pos].count -= 1;
            if rules[pos].count == 0 {
                rules.remove(pos);
            }
            return match rule.status {
                FaultStatus::Timeout(_) => Fault::Timeout,
                FaultStatus::Status(429) => Fault::Before(429, rule.retry_after),
                FaultStatus::Status(s) if rule.applied => Fault::After(s, rule.retry_after),
                FaultStatus::Status(s) => Fault::Before(s, rule.retry_after),
            };
        }
    }
    let knobs = inner.knobs();
    let f = &knobs.faults;
    let total = f.share_429 + f.share_500 + f.share_503 + f.share_timeout;
    if total <= 0.0 {
        return Fault::None;
    }
    let mut rng = inner.lock_rng();
    let roll: f64 = rng.random();
    let retry = Some(f.retry_after_secs);
    let after = is_write(method) && rng.random::<f64>() < f.after_write_share;
    if roll < f.share_429 {
        Fault::Before(429, retry)
    } else if roll < f.share_429 + f.share_500 {
        if after {
            Fault::After(500, None)
        } else {
            Fault::Before(500, None)
        }
    } else if roll < f.share_429 + f.share_500 + f.share_503 {
        if after {
            Fault::After(503, retry)
        } else {
            Fault::Before(503, retry)
        }
    } else if roll < total {
        Fault::Timeout
    } else {
        Fault::None
    }
}

fn fmt_secs(s: f64) -> String {
    let text = format!("{s:.3}");
    text.trim_end_matches('0').trim_end_matches('.').to_owned()
}

fn fault_error(status: u16, retry_after: Option<f64>) -> GErr {
    let mut e = match status {
        429 => {
            let mut e = GErr::new(
                StatusCode::TOO_MANY_REQUESTS,
                "TooManyRequests",
                "Please retry again later.",
            );
            e.inner_code = Some("429");
            e
        }
        503 => GErr::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "serviceNotAvailable",
            "The service is temporarily unavailable. Please retry later.",
        ),
        504 => GErr::new(
            StatusCode::GATEWAY_TIMEOUT,
            "timeout",
            "The operation timed out.",
        ),
        _ => GErr::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Service_InternalServerError",
            "Encountered an internal server error.",
        ),
    };
    if let Some(r) = retry_after {
        e = e.with_header("Retry-After", fmt_secs(r));
    }
    e
}

/// Runs one request (not `$batch`) through the whole pipeline.
pub(crate) async fn execute_single(inner: &Arc<Inner>, req: GReq) -> GResp {
    let started = Instant::now();
    let request_id = uuid::Uuid::new_v4().to_string();
    let client_request_id = header(&req.headers, "client-request-id")
        .map(str::to_owned)
        .unwrap_or_else(|| request_id.clone());
    let outcome = pipeline(inner, &req).await;
    let Outcome {
        resp,
        app_id,
        resource_units,
        throttled,
    } = outcome;
    let mut resp = resp;
    stamp(&mut resp, &request_id, &client_request_id);
    let path_and_query = if req.query.is_empty() {
        format!("/v1.0{}", req.path)
    } else {
        format!("/v1.0{}?{}", req.path, req.query)
    };
    inner.record(LoggedRequest {
        method: req.method.to_string(),
        path: path_and_query,
        status: resp.status.as_u16(),
        app_id,
        resource_units,
        write: is_write(&req.method),
        throttled,
        batch_item: req.batch_item,
        duration_ms: started.elapsed().as_secs_f64() * 1000.0,
        request_id,
    });
    resp
}

/// Adds `request-id`/`client-request-id` headers and fills them into an error's `innerError`.
pub(crate) fn stamp(resp: &mut GResp, request_id: &str, client_request_id: &str) {
    resp.headers
        .push(("request-id".to_owned(), request_id.to_owned()));
    resp.headers
        .push(("client-request-id".to_owned(), client_request_id.to_owned()));
    if let Some(body) = resp.body.as_mut()
        && let Some(inner_err) = body
            .get_mut("error")
            .and_then(|e| e.get_mut("innerError"))
            .and_then(Value::as_object_mut)
    {
        inner_err.insert("request-id".into(), Value::String(request_id.to_owned()));
        inner_err.insert(
            "client-request-id".into(),
            Value::String(client_request_id.to_owned()),
        );
    }
}

async fn pipeline(inner: &Arc<Inner>, req: &GReq) -> Outcome {
    let mut out = Outcome {
        resp: GResp::no_content(),
        app_id: None,
        resource_units: 0,
        throttled: false,
    };
    let fail = |e: GErr| e.into_resp("", "");
    let (tenant_id, users) = {
        let st = inner.lock_state();
        (st.tenant_id.clone(), st.live_user_count())
    };
    let caller = match authenticate(
        &req.headers,
        &inner.key,
        &tenant_id,
        &inner.accepted_resources,
    ) {
        Ok(c) => c,
        Err(e) => {
            out.resp = fail(e);
            return out;
        }
    };
    out.app_id = Some(caller.app_id.clone());
    let priority_low = header(&req.headers, "x-ms-throttle-priority")
        .is_some_and(|p| p.eq_ignore_ascii_case("low"));
    let mut extra_headers = Vec::new();
    match inner.throttle.charge(
        &caller.app_id,
        &tenant_id,
        users,
        &req.method,
        &req.path,
        &req.query,
        priority_low,
    ) {
        Ok(charge) => {
            out.resource_units = charge.resource_units;
            extra_headers.push((
                "x-ms-resource-unit".to_owned(),
                charge.resource_units.to_string(),
            ));
            if let Some(p) = charge.limit_percentage {
                extra_headers.push((
                    "x-ms-throttle-limit-percentage".to_owned(),
                    format!("{p:.1}"),
                ));
            }
        }
        Err(t) => {
            out.throttled = true;
            let e = fault_error(429, Some(t.retry_after_secs))
                .with_header("x-ms-throttle-scope", t.scope)
                .with_header("x-ms-throttle-information", t.information);
            out.resp = fail(e);
            return out;
        }
    }
    let fault = decide_fault(inner, &req.method, &req.path);
    let knobs = inner.knobs();
    let latency = if is_write(&req.method) {
        knobs.write_latency_ms
    } else {
        knobs.read_latency_ms
    };
    if latency > 0 {
        tokio::time::sleep(Duration::from_millis(latency)).await;
    }
    if let Fault::Before(status, retry) = fault {
        inner.count_fault();
        out.throttled = status == 429;
        out.resp = fail(fault_error(status, retry));
        return out;
    }
    let (result, mutated) = {
        let mut st = inner.lock_state();
        let mut cx = Cx {
            caller: &caller,
            now: now_ms(),
            lag: knobs.replication_lag_ms,
            req,
            query: parse_query(&req.query),
            mutated: false,
        };
        let r = route(&mut st, &mut cx);
        (r, cx.mutated)
    };
    if mutated {
        inner.persist();
    }
    let mut resp = match result {
        Ok(r) => r,
        Err(e) => fail(e),
    };
    resp.headers.extend(extra_headers);
    match fault {
        Fault::After(status, retry) => {
            inner.count_fault();
            out.resp = fail(fault_error(status, retry));
        }
        Fault::Timeout => {
            inner.count_fault();
            tokio::time::sleep(Duration::from_millis(knobs.faults.timeout_ms)).await;
            out.resp = resp;
        }
        _ => out.resp = resp,
    }
    out
}

/// Parsed system query options.
#[derive(Debug, Default)]
pub(crate) struct Query {
    pub pairs: Vec<(String, String)>,
}

impl Query {
    fn get(&self, name: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

fn parse_query(q: &str) -> Query {
    let pairs = q
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

struct Cx<'a> {
    caller: &'a Caller,
    now: u64,
    lag: u64,
    req: &'a GReq,
    query: Query,
    mutated: bool,
}

#[derive(Clone, Copy)]
enum Perm {
    UserRead,
    UserWrite,
    GroupRead,
    GroupWrite,
    MemberWrite,
    OrgRead,
    LicenseWrite,
}

fn allowed(perm: Perm) -> &'static [&'static str] {
    match perm {
        Perm::UserRead => &[
            "User.Read.All",
            "User.ReadWrite.All",
            "Directory.Read.All",
            "Directory.ReadWrite.All",
        ],
        Perm::UserWrite => &["User.ReadWrite.All", "Directory.ReadWrite.All"],
        Perm::GroupRead => &[
            "Group.Read.All",
            "Group.ReadWrite.All",
            "GroupMember.Read.All",
            "GroupMember.ReadWrite.All",
            "Directory.Read.All",
            "Directory.ReadWrite.All",
        ],
        Perm::GroupWrite => &["Group.ReadWrite.All", "Directory.ReadWrite.All"],
        Perm::MemberWrite => &[
            "GroupMember.ReadWrite.All",
            "Group.ReadWrite.All",
            "Directory.ReadWrite.All",
        ],
        Perm::OrgRead => &[
            "Organization.Read.All",
            "Organization.ReadWrite.All",
            "Directory.Read.All",
            "Directory.ReadWrite.All",
            "Domain.Read.All",
        ],
        Perm::LicenseWrite => &[
            "User.ReadWrite.All",
            "Directory.ReadWrite.All",
            "LicenseAssignment.ReadWrite.All",
        ],
    }
}

impl Cx<'_> {
    fn need(&self, perm: Perm) -> Result<(), GErr> {
        let ok = allowed(perm)
            .iter()
            .any(|p| self.caller.roles.iter().any(|r| r.eq_ignore_ascii_case(p)));
        if ok { Ok(()) } else { Err(GErr::forbidden()) }
    }

    fn body_object(&self) -> Result<Map<String, Value>, GErr> {
        let unreadable = || {
            GErr::new(
                StatusCode::BAD_REQUEST,
                "BadRequest",
                "Unable to read JSON request payload. Please ensure Content-Type header is set and payload is of valid JSON format.",
            )
        };
        if self.req.body.is_empty() {
            return Err(unreadable());
        }
        if !self.req.batch_item {
            let ct = header(&self.req.headers, "content-type").unwrap_or("");
            if !ct.to_ascii_lowercase().contains("json") {
                return Err(GErr::new(
                    StatusCode::BAD_REQUEST,
                    "BadRequest",
                    "Write requests (excluding DELETE) must contain the Content-Type header declaration.",
                ));
            }
        }
        match serde_json::from_slice::<Value>(&self.req.body) {
            Ok(Value::Object(m)) => Ok(m),
            _ => Err(unreadable()),
        }
    }

    fn consistency_eventual(&self) -> bool {
        header(&self.req.headers, "consistencylevel")
            .is_some_and(|v| v.eq_ignore_ascii_case("eventual"))
    }
}

fn schema_err(v: &crate::schema::SchemaViolation) -> GErr {
    let status = StatusCode::from_u16(v.status()).unwrap_or(StatusCode::BAD_REQUEST);
    GErr::new(status, v.code(), v.message())
}

fn seg_decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s)
        .decode_utf8_lossy()
        .into_owned()
}

fn route(st: &mut TenantState, cx: &mut Cx<'_>) -> GResult {
    let segs: Vec<String> = cx
        .req
        .path
        .trim_matches('/')
        .split('/')
        .filter(|s| !s.is_empty())
        .map(seg_decode)
        .collect();
    let s: Vec<&str> = segs.iter().map(String::as_str).collect();
    let m = cx.req.method.clone();
    match (m.as_str(), s.as_slice()) {
        ("GET", ["organization"]) => {
            cx.need(Perm::OrgRead)?;
            Ok(organization(st))
        }
        ("GET", ["domains"]) => {
            cx.need(Perm::OrgRead)?;
            Ok(domains(st))
        }
        ("GET", ["subscribedSkus"]) => {
            cx.need(Perm::OrgRead)?;
            if cx.query.get("$filter").is_some() {
                return Err(GErr::new(
                    StatusCode::BAD_REQUEST,
                    "BadRequest",
                    "Query option 'Filter' is not allowed. To allow it, set the 'AllowedQueryOptions' property on EnableQueryAttribute or QueryValidationSettings.",
                ));
            }
            Ok(subscribed_skus(st))
        }
        ("GET", ["users"]) => {
            cx.need(Perm::UserRead)?;
            list(st, cx, "user")
        }
        ("GET", ["users" | "groups", "$count"]) => {
            cx.need(if s[0] == "users" {
                Perm::UserRead
            } else {
                Perm::GroupRead
            })?;
            if !cx.consistency_eventual() {
                return Err(GErr::bad_request("$count is not currently supported."));
            }
            let n = if s[0] == "users" {
                st.users
                    .iter()
                    .filter(|u| !u.deleted && u.visible(cx.now))
                    .count()
            } else {
                st.groups
                    .iter()
                    .filter(|g| !g.deleted && g.visible(cx.now))
                    .count()
            };
            Ok(GResp::json(StatusCode::OK, json!(n)))
        }
        ("POST", ["users"]) => {
            cx.need(Perm::UserWrite)?;
            create_user(st, cx)
        }
        ("GET", ["users", key]) => {
            cx.need(Perm::UserRead)?;
            let i = find_user(st, key, cx)?;
            let select = select_list(&cx.query, "user")?;
            let mut body = project_user(&st.users[i], select.as_deref());
            body.insert(
                "@odata.context".into(),
                json!(format!(
                    "{METADATA}#{}/$entity",
                    ctx_set("users", select.as_deref())
                )),
            );
            Ok(GResp::json(StatusCode::OK, Value::Object(body)))
        }
        ("PATCH", ["users", key]) => {
            cx.need(Perm::UserWrite)?;
            update_user(st, cx, key)
        }
        ("DELETE", ["users", key]) => {
            cx.need(Perm::UserWrite)?;
            let i = find_user(st, key, cx)?;
            if st.users[i].admin {
                return Err(GErr::forbidden());
            }
            st.set_user_deleted(i, true);
            st.users[i]
                .props
                .insert("deletedDateTime".into(), json!(now_iso()));
            cx.mutated = true;
            Ok(GResp::no_content())
        }
        ("POST", ["users", key, "assignLicense"]) => {
            cx.need(Perm::LicenseWrite)?;
            assign_license(st, cx, key)
        }
        ("GET", ["users", key, "licenseDetails"]) => {
            cx.need(Perm::UserRead)?;
            let i = find_user(st, key, cx)?;
            Ok(license_details(st, i))
        }
        ("GET", ["users", key, "manager"]) => {
            cx.need(Perm::UserRead)?;
            let i = find_user(st, key, cx)?;
            let mgr = st.users[i]
                .manager
                .clone()
                .and_then(|m| st.user_index(&m, cx.now))
                .ok_or_else(|| GErr::not_found("manager"))?;
            let select = select_list(&cx.query, "user")?;
            let mut body = Map::new();
            body.insert(
                "@odata.context".into(),
                json!(format!("{METADATA}#directoryObjects/$entity")),
            );
            body.insert("@odata.type".into(), json!("#microsoft.graph.user"));
            body.extend(project_user(&st.users[mgr], select.as_deref()));
            Ok(GResp::json(StatusCode::OK, Value::Object(body)))
        }
        ("PUT", ["users", key, "manager", "$ref"]) => {
            cx.need(Perm::UserWrite)?;
            let i = find_user(st, key, cx)?;
            let body = cx.body_object()?;
            let target = ref_id(&body)?;
            let m = match st.user_index_any(&target) {
                Some(m) if st.users[m].visible(cx.now) => m,
                _ => return Err(GErr::not_found(&target)),
            };
            let mid = st.users[m].id().to_owned();
            if mid == st.users[i].id() {
                return Err(GErr::bad_request(
                    "Invalid value specified for property 'manager' of resource 'User'.",
                ));
            }
            st.users[i].manager = Some(mid);
            cx.mutated = true;
            Ok(GResp::no_content())
        }
        ("DELETE", ["users", key, "manager", "$ref"]) => {
            cx.need(Perm::UserWrite)?;
            let i = find_user(st, key, cx)?;
            if st.users[i].manager.take().is_none() {
                return Err(GErr::not_found("manager"));
            }
            cx.mutated = true;
            Ok(GResp::no_content())
        }
        ("GET", ["groups"]) => {
            cx.need(Perm::GroupRead)?;
            list(st, cx, "group")
        }
        ("POST", ["groups"]) => {
            cx.need(Perm::GroupWrite)?;
            create_group(st, cx)
        }
        ("GET", ["groups", id]) => {
            cx.need(Perm::GroupRead)?;
            let g = find_group(st, id, cx)?;
            let select = select_list(&cx.query, "group")?;
            let mut body = project_group(&st.groups[g], select.as_deref());
            body.insert(
                "@odata.context".into(),
                json!(format!(
                    "{METADATA}#{}/$entity",
                    ctx_set("groups", select.as_deref())
                )),
            );
            Ok(GResp::json(StatusCode::OK, Value::Object(body)))
        }
        ("PATCH", ["groups", id]) => {
            cx.need(Perm::GroupWrite)?;
            update_group(st, cx, id)
        }
        ("DELETE", ["groups", id]) => {
            cx.need(Perm::GroupWrite)?;
            let g = find_group(st, id, cx)?;
            if st.groups[g].is_unified() {
                st.groups[g].deleted = true;
                st.groups[g]
                    .props
                    .insert("deletedDateTime".into(), json!(now_iso()));
            } else {
                // Deleted security groups are gone for good (graph-facts §2.4).
                st.remove_group(g);
            }
            cx.mutated = true;
            Ok(GResp::no_content())
        }
        ("GET", ["groups", id, "members"]) => {
            cx.need(Perm::GroupRead)?;
            list_members(st, cx, id)
        }
        ("POST", ["groups", id, "members", "$ref"]) => {
            cx.need(Perm::MemberWrite)?;
            add_member(st, cx, id)
        }
        ("DELETE", ["groups", id, "members", mid, "$ref"]) => {
            cx.need(Perm::MemberWrite)?;
            let g = find_group(st, id, cx)?;
            let pos = st.groups[g]
                .members
                .iter()
                .position(|m| m.eq_ignore_ascii_case(mid))
                .ok_or_else(|| {
                    GErr::new(
                        StatusCode::NOT_FOUND,
                        "Request_ResourceNotFound",
                        "One or more removed object references do not exist for the following modified properties: 'members'.",
                    )
                })?;
            st.groups[g].members.remove(pos);
            cx.mutated = true;
            Ok(GResp::no_content())
        }
        (
            "GET",
            [
                "directory",
                "deletedItems",
                kind @ ("microsoft.graph.user" | "microsoft.graph.group"),
            ],
        ) => {
            let users = *kind == "microsoft.graph.user";
            cx.need(if users {
                Perm::UserRead
            } else {
                Perm::GroupRead
            })?;
            let list = if users { &st.users } else { &st.groups };
            let value: Vec<Value> = list
                .iter()
                .filter(|o| o.deleted)
                .map(|o| {
                    let mut m = if users {
                        project_user(o, None)
                    } else {
                        project_group(o, None)
                    };
                    m.insert(
                        "deletedDateTime".into(),
                        o.props
                            .get("deletedDateTime")
                            .cloned()
                            .unwrap_or(Value::Null),
                    );
                    Value::Object(m)
                })
                .collect();
            Ok(GResp::json(
                StatusCode::OK,
                json!({
                    "@odata.context": format!("{METADATA}#directory/deletedItems/{kind}"),
                    "value": value,
                }),
            ))
        }
        ("GET", ["directory", "deletedItems", id]) => {
            let (users, idx) = find_deleted(st, id)?;
            cx.need(if users {
                Perm::UserRead
            } else {
                Perm::GroupRead
            })?;
            Ok(GResp::json(
                StatusCode::OK,
                Value::Object(deleted_view(st, users, idx)),
            ))
        }
        ("POST", ["directory", "deletedItems", id, "restore"]) => {
            let (users, idx) = find_deleted(st, id)?;
            cx.need(if users {
                Perm::UserWrite
            } else {
                Perm::GroupWrite
            })?;
            if users && st.users[idx].admin {
                return Err(GErr::forbidden());
            }
            // Another object took its UPN or an address meanwhile: Graph refuses the restore
            // with the same conflict as a create.
            if let Some(property) = st.restore_conflict(users, idx) {
                return Err(GErr::conflict(property));
            }
            if users {
                st.set_user_deleted(idx, false);
                st.users[idx].props.remove("deletedDateTime");
            } else {
                st.groups[idx].deleted = false;
                st.groups[idx].props.remove("deletedDateTime");
            }
            cx.mutated = true;
            Ok(GResp::json(
                StatusCode::OK,
                Value::Object(deleted_view(st, users, idx)),
            ))
        }
        ("DELETE", ["directory", "deletedItems", id]) => {
            let (users, idx) = find_deleted(st, id)?;
            cx.need(if users {
                Perm::UserWrite
            } else {
                Perm::GroupWrite
            })?;
            if users {
                let uid = st.users[idx].id().to_owned();
                st.remove_user(idx);
                for g in &mut st.groups {
                    g.members.retain(|m| *m != uid);
                }
                for u in &mut st.users {
                    if u.manager.as_deref() == Some(uid.as_str()) {
                        u.manager = None;
                    }
                }
            } else {
                st.remove_group(idx);
            }
            cx.mutated = true;
            Ok(GResp::no_content())
        }
        ("POST", ["$batch"]) => Err(GErr::new(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "Nested batch requests are not supported.",
        )),
        (_, [first, ..]) if known_route(&s) => {
            let _ = first;
            Err(GErr::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "Request_BadRequest",
                "Specified HTTP method is not allowed for the request target.",
            ))
        }
        (_, [first, ..]) => Err(GErr::new(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            format!("Resource not found for the segment '{first}'."),
        )),
        (_, []) => Err(GErr::new(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "Invalid request.",
        )),
    }
}

fn known_route(s: &[&str]) -> bool {
    matches!(
        s,
        ["organization" | "domains" | "subscribedSkus" | "users" | "groups" | "$batch"]
            | ["users" | "groups", _]
            | ["users", _, "assignLicense" | "licenseDetails" | "manager"]
            | ["users", _, "manager", "$ref"]
            | ["groups", _, "members"]
            | ["groups", _, "members", "$ref"]
            | ["groups", _, "members", _, "$ref"]
            | ["directory", "deletedItems", _]
            | ["directory", "deletedItems", _, "restore"]
    )
}

/// A live, replicated user by id or UPN, else 404 (graph-facts §2.5, §9).
fn find_user(st: &TenantState, key: &str, cx: &Cx<'_>) -> Result<usize, GErr> {
    st.user_index(key, cx.now)
        .ok_or_else(|| GErr::not_found(key))
}

fn find_group(st: &TenantState, id: &str, cx: &Cx<'_>) -> Result<usize, GErr> {
    st.group_index(id, cx.now)
        .ok_or_else(|| GErr::not_found(id))
}

fn find_deleted(st: &TenantState, id: &str) -> Result<(bool, usize), GErr> {
    if let Some(i) = st.deleted_user_index(id) {
        return Ok((true, i));
    }
    if let Some(i) = st.deleted_group_index(id) {
        return Ok((false, i));
    }
    Err(GErr::not_found(id))
}

fn deleted_view(st: &TenantState, users: bool, idx: usize) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert(
        "@odata.context".into(),
        json!(format!("{METADATA}#directoryObjects/$entity")),
    );
    if users {
        m.insert("@odata.type".into(), json!("#microsoft.graph.user"));
        m.extend(project_user(&st.users[idx], None));
        m.insert(
            "deletedDateTime".into(),
            st.users[idx]
                .props
                .get("deletedDateTime")
                .cloned()
                .unwrap_or(Value::Null),
        );
    } else {
        m.insert("@odata.type".into(), json!("#microsoft.graph.group"));
        m.extend(project_group(&st.groups[idx], None));
    }
    m
}

/// The `@odata.id` of a `$ref` body as an object id (`.../users/{id}` or `.../directoryObjects/{id}`).
fn ref_id(body: &Map<String, Value>) -> Result<String, GErr> {
    let url = body
        .get("@odata.id")
        .and_then(Value::as_str)
        .ok_or_else(|| GErr::bad_request("Invalid request body: '@odata.id' is required."))?;
    ref_from_url(url)
}

fn ref_from_url(url: &str) -> Result<String, GErr> {
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
    let last = seg_decode(&last);
    if last.is_empty() {
        return Err(GErr::bad_request(format!(
            "Invalid object identifier '{url}'."
        )));
    }
    Ok(last)
}

const USER_DEFAULT: &[&str] = &[
    "businessPhones",
    "displayName",
    "givenName",
    "jobTitle",
    "mail",
    "mobilePhone",
    "officeLocation",
    "preferredLanguage",
    "surname",
    "userPrincipalName",
    "id",
];

const GROUP_DEFAULT: &[&str] = &[
    "id",
    "deletedDateTime",
    "classification",
    "createdDateTime",
    "creationOptions",
    "description",
    "displayName",
    "expirationDateTime",
    "groupTypes",
    "isAssignableToRole",
    "mail",
    "mailEnabled",
    "mailNickname",
    "membershipRule",
    "membershipRuleProcessingState",
    "onPremisesDomainName",
    "onPremisesLastSyncDateTime",
    "onPremisesNetBiosName",
    "onPremisesSamAccountName",
    "onPremisesSecurityIdentifier",
    "onPremisesSyncEnabled",
    "preferredDataLocation",
    "preferredLanguage",
    "proxyAddresses",
    "renewedDateTime",
    "resourceBehaviorOptions",
    "resourceProvisioningOptions",
    "securityEnabled",
    "securityIdentifier",
    "theme",
    "visibility",
    "onPremisesProvisioningErrors",
    "serviceProvisioningErrors",
];

fn collection_prop(name: &str) -> bool {
    matches!(
        name,
        "businessPhones"
            | "otherMails"
            | "proxyAddresses"
            | "assignedLicenses"
            | "assignedPlans"
            | "imAddresses"
            | "groupTypes"
            | "creationOptions"
            | "resourceBehaviorOptions"
            | "resourceProvisioningOptions"
            | "onPremisesProvisioningErrors"
            | "serviceProvisioningErrors"
            | "identities"
            | "licenseAssignmentStates"
    )
}

fn project(obj: &Obj, props: &[&str]) -> Map<String, Value> {
    let mut m = Map::new();
    for p in props {
        let v = obj.props.get(*p).cloned().unwrap_or_else(|| {
            if collection_prop(p) {
                Value::Array(Vec::new())
            } else {
                Value::Null
            }
        });
        m.insert((*p).to_owned(), v);
    }
    m
}

fn project_user(obj: &Obj, select: Option<&[String]>) -> Map<String, Value> {
    match select {
        Some(sel) => {
            let refs: Vec<&str> = sel.iter().map(String::as_str).collect();
            let mut m = project(obj, &refs);
            // Graph never returns a password.
            if m.contains_key("passwordProfile") {
                m.insert("passwordProfile".into(), Value::Null);
            }
            m
        }
        None => project(obj, USER_DEFAULT),
    }
}

fn project_group(obj: &Obj, select: Option<&[String]>) -> Map<String, Value> {
    match select {
        Some(sel) => {
            let refs: Vec<&str> = sel.iter().map(String::as_str).collect();
            project(obj, &refs)
        }
        None => project(obj, GROUP_DEFAULT),
    }
}

/// `$select` list, checked against the schema (graph-facts §6).
fn select_list(q: &Query, entity: &str) -> Result<Option<Vec<String>>, GErr> {
    let Some(sel) = q.get("$select") else {
        return Ok(None);
    };
    let props: Vec<String> = sel
        .split(',')
        .map(|p| p.trim().to_owned())
        .filter(|p| !p.is_empty())
        .collect();
    let refs: Vec<&str> = props.iter().map(String::as_str).collect();
    crate::schema::validate_select(entity, &refs).map_err(|v| schema_err(&v))?;
    Ok(Some(props))
}

fn ctx_set(set: &str, select: Option<&[String]>) -> String {
    match select {
        Some(sel) => format!("{set}({})", sel.join(",")),
        None => set.to_owned(),
    }
}

fn page_size(q: &Query) -> Result<usize, GErr> {
    match q.get("$top") {
        None => Ok(100),
        Some(t) => match t.trim().parse::<i64>() {
            Ok(n) if (1..=999).contains(&n) => Ok(usize::try_from(n).unwrap_or(100)),
            _ => Err(GErr::unsupported_query(format!(
                "Invalid page size specified: '{t}'. Must be between 1 and 999 inclusive."
            ))),
        },
    }
}

fn skip_cursor(q: &Query) -> Result<u64, GErr> {
    let Some(tok) = q.get("$skiptoken") else {
        return Ok(0);
    };
    URL_SAFE_NO_PAD
        .decode(tok)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .and_then(|s| s.strip_prefix("RFNwd:").and_then(|n| n.parse::<u64>().ok()))
        .ok_or_else(|| GErr::bad_request("Invalid paging token."))
}

const QUERY_VALUE: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~')
    .remove(b'\'')
    .remove(b',')
    .remove(b'(')
    .remove(b')')
    .remove(b'/')
    .remove(b':');

fn next_link(cx: &Cx<'_>, last_seq: u64) -> String {
    let mut parts: Vec<String> = cx
        .query
        .pairs
        .iter()
        .filter(|(k, _)| !k.eq_ignore_ascii_case("$skiptoken"))
        .map(|(k, v)| {
            format!(
                "{}={}",
                percent_encoding::utf8_percent_encode(k, QUERY_VALUE)
                    .to_string()
                    .replace("%24", "$"),
                percent_encoding::utf8_percent_encode(v, QUERY_VALUE)
            )
        })
        .collect();
    parts.push(format!(
        "$skiptoken={}",
        URL_SAFE_NO_PAD.encode(format!("RFNwd:{last_seq}"))
    ));
    format!(
        "{}/v1.0{}?{}",
        cx.req.base_url,
        cx.req.path,
        parts.join("&")
    )
}

/// Common checks of list queries: `$search`, `$orderby`, `$filter`.
fn list_filter(cx: &Cx<'_>, entity: &str) -> Result<Option<filter::Expr>, GErr> {
    if cx.query.get("$search").is_some() {
        return Err(GErr::unsupported_query(
            "Request with $search query parameter only works through MSGraph with a special request header: 'ConsistencyLevel: eventual'",
        ));
    }
    if cx.query.get("$orderby").is_some() {
        return Err(GErr::unsupported_query(
            "Sorting not supported for current query.",
        ));
    }
    match cx.query.get("$filter") {
        None => Ok(None),
        Some(f) => {
            let e = filter::parse(f)?;
            filter::check(entity, &e)?;
            Ok(Some(e))
        }
    }
}

fn list(st: &TenantState, cx: &Cx<'_>, entity: &str) -> GResult {
    let expr = list_filter(cx, entity)?;
    let select = select_list(&cx.query, entity)?;
    let top = page_size(&cx.query)?;
    let after = skip_cursor(&cx.query)?;
    let objs = if entity == "user" {
        &st.users
    } else {
        &st.groups
    };
    let matching: Vec<&Obj> = objs
        .iter()
        .filter(|o| !o.deleted && o.visible(cx.now))
        .filter(|o| expr.as_ref().is_none_or(|e| filter::eval(e, &o.props)))
        .collect();
    let total = matching.len();
    let rest: Vec<&Obj> = matching.into_iter().filter(|o| o.seq > after).collect();
    let page: Vec<&Obj> = rest.iter().take(top).copied().collect();
    let value: Vec<Value> = page
        .iter()
        .map(|o| {
            Value::Object(if entity == "user" {
                project_user(o, select.as_deref())
            } else {
                project_group(o, select.as_deref())
            })
        })
        .collect();
    let set = if entity == "user" { "users" } else { "groups" };
    let mut body = Map::new();
    body.insert(
        "@odata.context".into(),
        json!(format!("{METADATA}#{}", ctx_set(set, select.as_deref()))),
    );
    let count_requested = cx
        .query
        .get("$count")
        .is_some_and(|c| c.eq_ignore_ascii_case("true"));
    if count_requested && cx.consistency_eventual() && after == 0 {
        body.insert("@odata.count".into(), json!(total));
    }
    if rest.len() > top
        && let Some(last) = page.last()
    {
        body.insert("@odata.nextLink".into(), json!(next_link(cx, last.seq)));
    }
    body.insert("value".into(), Value::Array(value));
    Ok(GResp::json(StatusCode::OK, Value::Object(body)))
}

fn list_members(st: &TenantState, cx: &Cx<'_>, id: &str) -> GResult {
    let g = find_group(st, id, cx)?;
    let select = select_list(&cx.query, "user")?;
    if cx.query.get("$filter").is_some() && !cx.consistency_eventual() {
        return Err(GErr::unsupported_query(
            "Unsupported or invalid query filter clause specified for property 'members' of resource 'Group'.",
        ));
    }
    let top = page_size(&cx.query)?;
    let after = skip_cursor(&cx.query)?;
    let mut members: Vec<(u64, Value)> = Vec::new();
    for mid in &st.groups[g].members {
        if let Some(u) = st.live_user_exact(mid).map(|i| &st.users[i]) {
            let mut m = Map::new();
            m.insert("@odata.type".into(), json!("#microsoft.graph.user"));
            m.extend(project_user(u, select.as_deref()));
            members.push((u.seq, Value::Object(m)));
        } else if let Some(gr) = st.live_group_exact(mid).map(|i| &st.groups[i]) {
            let mut m = Map::new();
            m.insert("@odata.type".into(), json!("#microsoft.graph.group"));
            m.extend(project_group(gr, select.as_deref()));
            members.push((gr.seq, Value::Object(m)));
        }
    }
    members.sort_by_key(|(seq, _)| *seq);
    let rest: Vec<(u64, Value)> = members.into_iter().filter(|(s, _)| *s > after).collect();
    let mut body = Map::new();
    body.insert(
        "@odata.context".into(),
        json!(format!("{METADATA}#directoryObjects")),
    );
    if rest.len() > top {
        body.insert(
            "@odata.nextLink".into(),
            json!(next_link(cx, rest[top - 1].0)),
        );
    }
    body.insert(
        "value".into(),
        Value::Array(rest.into_iter().take(top).map(|(_, v)| v).collect()),
    );
    Ok(GResp::json(StatusCode::OK, Value::Object(body)))
}

fn organization(st: &TenantState) -> GResp {
    let verified: Vec<Value> = st
        .domains
        .iter()
        .filter(|d| d.is_verified)
        .map(|d| {
            json!({
                "capabilities": "Email, OfficeCommunicationsOnline",
                "isDefault": d.is_default,
                "isInitial": d.is_initial,
                "name": d.id,
                "type": d.authentication_type,
            })
        })
        .collect();
    GResp::json(
        StatusCode::OK,
        json!({
            "@odata.context": format!("{METADATA}#organization"),
            "value": [{
                "id": st.tenant_id,
                "displayName": st.display_name,
                "createdDateTime": st.created_date_time,
                "countryLetterCode": "US",
                "preferredLanguage": "en",
                "tenantType": "AAD",
                "businessPhones": [],
                "technicalNotificationMails": [],
                "assignedPlans": [],
                "provisionedPlans": [],
                "verifiedDomains": verified,
                "onPremisesSyncEnabled": null,
            }]
        }),
    )
}

fn domains(st: &TenantState) -> GResp {
    let value: Vec<Value> = st
        .domains
        .iter()
        .map(|d| {
            json!({
                "id": d.id,
                "authenticationType": d.authentication_type,
                "availabilityStatus": null,
                "isAdminManaged": true,
                "isDefault": d.is_default,
                "isInitial": d.is_initial,
                "isRoot": true,
                "isVerified": d.is_verified,
                "supportedServices": if d.is_verified { json!(["Email", "OfficeCommunicationsOnline"]) } else { json!([]) },
                "passwordValidityPeriodInDays": 2147483647,
                "passwordNotificationWindowInDays": 14,
                "state": null,
            })
        })
        .collect();
    GResp::json(
        StatusCode::OK,
        json!({ "@odata.context": format!("{METADATA}#domains"), "value": value }),
    )
}

fn subscribed_skus(st: &TenantState) -> GResp {
    let value: Vec<Value> = st
        .skus
        .iter()
        .map(|s| {
            json!({
                "accountName": st.display_name,
                "accountId": st.tenant_id,
                "appliesTo": "User",
                "capabilityStatus": "Enabled",
                "consumedUnits": st.consumed_units(&s.sku_id),
                "id": format!("{}_{}", st.tenant_id, s.sku_id),
                "skuId": s.sku_id,
                "skuPartNumber": s.sku_part_number,
                "subscriptionIds": [],
                "prepaidUnits": { "enabled": s.enabled, "suspended": 0, "warning": 0, "lockedOut": 0 },
                "servicePlans": s.service_plans.iter().map(|p| json!({
                    "servicePlanId": p.service_plan_id,
                    "servicePlanName": p.service_plan_name,
                    "provisioningStatus": "Success",
                    "appliesTo": "User",
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    GResp::json(
        StatusCode::OK,
        json!({ "@odata.context": format!("{METADATA}#subscribedSkus"), "value": value }),
    )
}

fn license_details(st: &TenantState, i: usize) -> GResp {
    let user = &st.users[i];
    let assigned = user
        .props
        .get("assignedLicenses")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let value: Vec<Value> = assigned
        .iter()
        .filter_map(|a| {
            let sku_id = a.get("skuId")?.as_str()?;
            let sku = st.skus.iter().find(|s| s.sku_id.eq_ignore_ascii_case(sku_id))?;
            let disabled: Vec<&str> = a
                .get("disabledPlans")
                .and_then(Value::as_array)
                .map(|d| d.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            Some(json!({
                "id": format!("{}{}", user.id().replace('-', ""), sku.sku_id.replace('-', "")),
                "skuId": sku.sku_id,
                "skuPartNumber": sku.sku_part_number,
                "servicePlans": sku.service_plans.iter().map(|p| json!({
                    "servicePlanId": p.service_plan_id,
                    "servicePlanName": p.service_plan_name,
                    "provisioningStatus": if disabled.iter().any(|d| d.eq_ignore_ascii_case(&p.service_plan_id)) { "Disabled" } else { "Success" },
                    "appliesTo": "User",
                })).collect::<Vec<_>>(),
            }))
        })
        .collect();
    GResp::json(
        StatusCode::OK,
        json!({
            "@odata.context": format!("{METADATA}#users('{}')/licenseDetails", user.id()),
            "value": value,
        }),
    )
}

/// Properties Graph does not let a client write on users.
const USER_READ_ONLY: &[&str] = &[
    "proxyAddresses",
    "createdDateTime",
    "deletedDateTime",
    "assignedLicenses",
    "assignedPlans",
    "provisionedPlans",
    "licenseAssignmentStates",
    "onPremisesSyncEnabled",
    "onPremisesLastSyncDateTime",
    "onPremisesSecurityIdentifier",
    "signInSessionsValidFromDateTime",
    "securityIdentifier",
    "creationType",
    "externalUserState",
];

fn read_only_error(prop: &str) -> GErr {
    GErr::bad_request(format!("Property '{prop}' is read-only and cannot be set."))
}

fn check_upn(
    st: &TenantState,
    upn: &str,
    body: &Map<String, Value>,
    creating: bool,
) -> Result<(), GErr> {
    if !validate::upn_syntax_ok(upn) {
        return Err(
            GErr::bad_request("Property userPrincipalName is invalid.").with_details(vec![
                json!({"code": "InvalidValue", "target": "userPrincipalName"}),
            ]),
        );
    }
    let domain = upn.rsplit_once('@').map(|(_, d)| d).unwrap_or("");
    let d = st
        .domains
        .iter()
        .find(|d| d.id.eq_ignore_ascii_case(domain) && d.is_verified);
    let Some(d) = d else {
        return Err(GErr::bad_request(
            "The domain portion of the userPrincipalName property is invalid. You must use one of the verified domain names in your organization.",
        )
        .with_details(vec![json!({"code": "InvalidValue", "target": "userPrincipalName"})]));
    };
    if creating && d.authentication_type.eq_ignore_ascii_case("Federated") {
        match body.get("onPremisesImmutableId").and_then(Value::as_str) {
            None | Some("") => return Err(GErr::required("onPremisesImmutableId")),
            Some(_) => {}
        }
    }
    Ok(())
}

fn check_password(body: &Map<String, Value>, existing_policies: Option<&str>) -> Result<(), GErr> {
    let Some(profile) = body.get("passwordProfile") else {
        return Ok(());
    };
    let Some(pw) = profile.get("password").and_then(Value::as_str) else {
        return Err(GErr::required("passwordProfile"));
    };
    let policies = body
        .get("passwordPolicies")
        .and_then(Value::as_str)
        .or(existing_policies)
        .unwrap_or("");
    let ok = if policies.contains("DisableStrongPassword") {
        (1..=256).contains(&pw.chars().count())
    } else {
        validate::password_ok(pw)
    };
    if ok {
        Ok(())
    } else {
        Err(GErr::bad_request(validate::WEAK_PASSWORD))
    }
}

/// Checks shared by user create and update.
fn check_user_props(
    st: &TenantState,
    body: &Map<String, Value>,
    self_id: Option<&str>,
) -> Result<(), GErr> {
    validate::check_lengths("user", "User", body)?;
    if let Some(v) = body.get("mailNickname") {
        match v.as_str() {
            Some(n) if validate::mail_nickname_ok(n, false) => {}
            _ => return Err(GErr::invalid_value("mailNickname", "User")),
        }
    }
    if let Some(v) = body.get("usageLocation") {
        match v.as_str() {
            Some(c) if validate::usage_location_ok(c) => {}
            _ => return Err(GErr::invalid_value("usageLocation", "User")),
        }
    }
    if let Some(v) = body.get("onPremisesImmutableId")
        && let Some(s) = v.as_str()
        && !validate::immutable_id_ok(s)
    {
        return Err(GErr::invalid_value("onPremisesImmutableId", "User"));
    }
    if let Some(bp) = body.get("businessPhones").and_then(Value::as_array)
        && bp.len() > 1
    {
        return Err(GErr::invalid_value("businessPhones", "User"));
    }
    if let Some(mail) = body.get("mail").and_then(Value::as_str) {
        if !mail.is_ascii() || !mail.contains('@') {
            return Err(GErr::invalid_value("mail", "User"));
        }
        if st.address_taken(mail, self_id) {
            return Err(GErr::conflict("proxyAddresses"));
        }
    }
    Ok(())
}

fn create_user(st: &mut TenantState, cx: &mut Cx<'_>) -> GResult {
    let mut body = cx.body_object()?;
    crate::schema::validate_body("user", &body).map_err(|v| schema_err(&v))?;
    if let Some(p) = USER_READ_ONLY.iter().find(|p| body.contains_key(**p)) {
        return Err(read_only_error(p));
    }
    body.remove("id");
    for prop in [
        "accountEnabled",
        "displayName",
        "mailNickname",
        "passwordProfile",
    ] {
        match body.get(prop) {
            None | Some(Value::Null) => return Err(GErr::required(prop)),
            Some(Value::String(s)) if s.is_empty() => return Err(GErr::required(prop)),
            _ => {}
        }
    }
    if !body.get("accountEnabled").is_some_and(Value::is_boolean) {
        return Err(GErr::invalid_value("accountEnabled", "User"));
    }
    let upn = match body.get("userPrincipalName").and_then(Value::as_str) {
        Some(u) if !u.is_empty() => u.to_owned(),
        _ => return Err(GErr::required("userPrincipalName")),
    };
    check_user_props(st, &body, None)?;
    check_upn(st, &upn, &body, true)?;
    check_password(&body, None)?;
    // Live users only: a deleted user's UPN may be taken (see `TenantState::upn_taken`).
    if st.upn_taken(&upn, None) {
        return Err(GErr::conflict("userPrincipalName"));
    }
    body.remove("passwordProfile");
    let visible_at = cx.now + cx.lag;
    let id = st.insert_user(Value::Object(body), visible_at);
    cx.mutated = true;
    let obj = st
        .user_exact(&id)
        .map(|i| &st.users[i])
        .ok_or_else(|| GErr::bad_request("create failed"))?;
    let mut out = Map::new();
    out.insert(
        "@odata.context".into(),
        json!(format!("{METADATA}#users/$entity")),
    );
    out.extend(project_user(obj, None));
    let mut resp = GResp::json(StatusCode::CREATED, Value::Object(out));
    resp.headers.push((
        "Location".to_owned(),
        format!(
            "https://graph.microsoft.com/v2/{}/directoryObjects/{id}/Microsoft.DirectoryServices.User",
            st.tenant_id
        ),
    ));
    Ok(resp)
}

/// Properties app-only `User.ReadWrite.All` may not change on admins (graph-facts gotcha 15).
const SENSITIVE: &[&str] = &[
    "accountEnabled",
    "passwordProfile",
    "userPrincipalName",
    "mobilePhone",
    "businessPhones",
    "otherMails",
    "onPremisesImmutableId",
    "mail",
];

fn update_user(st: &mut TenantState, cx: &mut Cx<'_>, key: &str) -> GResult {
    let i = find_user(st, key, cx)?;
    let mut body = cx.body_object()?;
    crate::schema::validate_body("user", &body).map_err(|v| schema_err(&v))?;
    if let Some(p) = USER_READ_ONLY.iter().find(|p| body.contains_key(**p)) {
        return Err(read_only_error(p));
    }
    body.remove("id");
    if st.users[i].admin && SENSITIVE.iter().any(|p| body.contains_key(*p)) {
        return Err(GErr::forbidden());
    }
    if let Some(v) = body.get("displayName") {
        match v {
            Value::String(s) if !s.is_empty() => {}
            _ => return Err(GErr::invalid_value("displayName", "User")),
        }
    }
    for prop in [
        "accountEnabled",
        "mailNickname",
        "userPrincipalName",
        "usageLocation",
        "passwordProfile",
    ] {
        if matches!(body.get(prop), Some(Value::Null)) {
            return Err(GErr::invalid_value(prop, "User"));
        }
    }
    let self_id = st.users[i].id().to_owned();
    check_user_props(st, &body, Some(&self_id))?;
    if let Some(upn) = body.get("userPrincipalName").and_then(Value::as_str) {
        let upn = upn.to_owned();
        check_upn(st, &upn, &body, false)?;
        if st.upn_taken(&upn, Some(&self_id)) {
            return Err(GErr::conflict("userPrincipalName"));
        }
    }
    let policies = st.users[i].str_prop("passwordPolicies").map(str::to_owned);
    check_password(&body, policies.as_deref())?;
    body.remove("passwordProfile");
    let user = &mut st.users[i];
    for (k, v) in body {
        if v.is_null() {
            user.props.remove(&k);
        } else {
            user.props.insert(k, v);
        }
    }
    add_mail_proxy(&mut user.props);
    st.index_user(i);
    cx.mutated = true;
    Ok(GResp::no_content())
}

fn assign_license(st: &mut TenantState, cx: &mut Cx<'_>, key: &str) -> GResult {
    let i = find_user(st, key, cx)?;
    let body = cx.body_object()?;
    let (Some(add), Some(remove)) = (
        body.get("addLicenses").and_then(Value::as_array).cloned(),
        body.get("removeLicenses")
            .and_then(Value::as_array)
            .cloned(),
    ) else {
        let missing = if body.get("addLicenses").and_then(Value::as_array).is_none() {
            "addLicenses"
        } else {
            "removeLicenses"
        };
        return Err(GErr::bad_request(format!(
            "Property {missing} value is required but is empty or missing."
        )));
    };
    let location_ok = st.users[i]
        .str_prop("usageLocation")
        .is_some_and(validate::usage_location_ok);
    if !location_ok {
        return Err(GErr::bad_request(
            "License assignment cannot be done for user with invalid usage location.",
        ));
    }
    let mut assigned: Vec<Value> = st.users[i]
        .props
        .get("assignedLicenses")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let has = |list: &[Value], sku: &str| {
        list.iter().any(|a| {
            a.get("skuId")
                .and_then(Value::as_str)
                .is_some_and(|s| s.eq_ignore_ascii_case(sku))
        })
    };
    let mut additions = Vec::new();
    for a in &add {
        let sku_id = a.get("skuId").and_then(Value::as_str).unwrap_or("");
        let Some(sku) = st
            .skus
            .iter()
            .find(|s| s.sku_id.eq_ignore_ascii_case(sku_id))
        else {
            return Err(GErr::bad_request(format!(
                "License {sku_id} does not correspond to a valid company License."
            )));
        };
        let disabled: Vec<String> = a
            .get("disabledPlans")
            .and_then(Value::as_array)
            .map(|d| {
                d.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default();
        for plan in &disabled {
            if !sku
                .service_plans
                .iter()
                .any(|p| p.service_plan_id.eq_ignore_ascii_case(plan))
            {
                return Err(GErr::bad_request(format!(
                    "Service plan {plan} is not part of the SKU {}.",
                    sku.sku_id
                )));
            }
        }
        if !has(&assigned, &sku.sku_id) && st.consumed_units(&sku.sku_id) >= sku.enabled {
            return Err(GErr::bad_request(format!(
                "Subscription with SKU {} does not have any available licenses.",
                sku.sku_id
            )));
        }
        additions.push(json!({"disabledPlans": disabled, "skuId": sku.sku_id}));
    }
    for r in &remove {
        let sku = r.as_str().unwrap_or("");
        assigned.retain(|a| {
            !a.get("skuId")
                .and_then(Value::as_str)
                .is_some_and(|s| s.eq_ignore_ascii_case(sku))
        });
    }
    for a in additions {
        let sku = a
            .get("skuId")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned();
        assigned.retain(|x| {
            !x.get("skuId")
                .and_then(Value::as_str)
                .is_some_and(|s| s.eq_ignore_ascii_case(&sku))
        });
        assigned.push(a);
    }
    st.set_user_licenses(i, assigned);
    cx.mutated = true;
    let mut out = Map::new();
    out.insert(
        "@odata.context".into(),
        json!(format!("{METADATA}#users/$entity")),
    );
    out.extend(project_user(&st.users[i], None));
    Ok(GResp::json(StatusCode::OK, Value::Object(out)))
}

const GROUP_READ_ONLY: &[&str] = &[
    "proxyAddresses",
    "createdDateTime",
    "deletedDateTime",
    "renewedDateTime",
    "securityIdentifier",
    "onPremisesSyncEnabled",
    "onPremisesSecurityIdentifier",
    "onPremisesLastSyncDateTime",
    "mail",
];

/// Resolves `members@odata.bind`/`owners@odata.bind` URLs to object ids (graph-facts §5.1, §5.3).
fn resolve_binds(
    st: &TenantState,
    cx: &Cx<'_>,
    urls: &[Value],
    unified: bool,
) -> Result<Vec<String>, GErr> {
    let mut ids = Vec::new();
    for u in urls {
        let url = u
            .as_str()
            .ok_or_else(|| GErr::bad_request("Invalid object identifier."))?;
        let id = ref_from_url(url)?;
        if let Some(ui) = st.user_index_any(&id) {
            if !st.users[ui].visible(cx.now) {
                return Err(GErr::reference_missing());
            }
            ids.push(st.users[ui].id().to_owned());
        } else if let Some(gi) = st.group_index_any(&id) {
            if !st.groups[gi].visible(cx.now) {
                return Err(GErr::reference_missing());
            }
            if unified {
                return Err(unified_users_only());
            }
            ids.push(st.groups[gi].id().to_owned());
        } else {
            return Err(GErr::not_found(&id));
        }
    }
    Ok(ids)
}

fn unified_users_only() -> GErr {
    GErr::bad_request("Only users can be added as members of a Microsoft 365 group.")
}

/// Members and owners count together (microsoftgraph/microsoft-graph-docs issue #6016: one owner
/// and 20 members fail with this text).
fn too_many_refs() -> GErr {
    GErr::bad_request("A resource cannot contain more than 20 link changes")
}

fn create_group(st: &mut TenantState, cx: &mut Cx<'_>) -> GResult {
    let mut body = cx.body_object()?;
    let members = body.remove("members@odata.bind");
    let owners = body.remove("owners@odata.bind");
    crate::schema::validate_body("group", &body).map_err(|v| schema_err(&v))?;
    if let Some(p) = GROUP_READ_ONLY.iter().find(|p| body.contains_key(**p)) {
        return Err(read_only_error(p));
    }
    body.remove("id");
    for prop in [
        "displayName",
        "mailEnabled",
        "mailNickname",
        "securityEnabled",
    ] {
        match body.get(prop) {
            None | Some(Value::Null) => return Err(GErr::required(prop)),
            Some(Value::String(s)) if s.is_empty() => return Err(GErr::required(prop)),
            _ => {}
        }
    }
    validate::check_lengths("group", "Group", &body)?;
    let nick = body
        .get("mailNickname")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    if !validate::mail_nickname_ok(&nick, true) {
        return Err(GErr::invalid_value("mailNickname", "Group"));
    }
    let types: Vec<String> = body
        .get("groupTypes")
        .and_then(Value::as_array)
        .map(|t| {
            t.iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    let unified = types.iter().any(|t| t == "Unified");
    let dynamic = types.iter().any(|t| t == "DynamicMembership");
    let mail_enabled = body
        .get("mailEnabled")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    if mail_enabled && !unified {
        return Err(GErr::bad_request(
            "The service does not currently support writes of mail-enabled groups. Please ensure that the mail-enablement property is unset or is set to false.",
        ));
    }
    if dynamic
        && body
            .get("membershipRule")
            .and_then(Value::as_str)
            .is_none_or(str::is_empty)
    {
        return Err(GErr::invalid_value("membershipRule", "Group"));
    }
    let bind_urls: Vec<Value> = members
        .as_ref()
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let owner_urls: Vec<Value> = owners
        .as_ref()
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if bind_urls.len() + owner_urls.len() > 20 {
        return Err(too_many_refs());
    }
    if dynamic && !bind_urls.is_empty() {
        return Err(dynamic_refused());
    }
    let member_ids = resolve_binds(st, cx, &bind_urls, unified)?;
    resolve_binds(st, cx, &owner_urls, unified)?;
    if unified {
        if st.unified_nick_taken(&nick, None) {
            return Err(GErr::conflict("mailNickname"));
        }
        let domain = st
            .domains
            .iter()
            .find(|d| d.is_default)
            .or_else(|| st.domains.iter().find(|d| d.is_initial))
            .map(|d| d.id.clone())
            .unwrap_or_default();
        let mail = format!("{nick}@{domain}");
        if st.address_taken(&mail, None) {
            return Err(GErr::conflict("proxyAddresses"));
        }
        body.insert("mail".into(), json!(mail));
        add_mail_proxy(&mut body);
        body.entry("visibility").or_insert(json!("Public"));
    }
    if dynamic {
        body.entry("membershipRuleProcessingState")
            .or_insert(json!("On"));
    }
    let visible_at = cx.now + cx.lag;
    let id = st.insert_group(Value::Object(body), visible_at);
    let g = st
        .group_exact(&id)
        .ok_or_else(|| GErr::bad_request("create failed"))?;
    let g = &mut st.groups[g];
    g.members = member_ids;
    cx.mutated = true;
    let mut out = Map::new();
    out.insert(
        "@odata.context".into(),
        json!(format!("{METADATA}#groups/$entity")),
    );
    out.extend(project_group(g, None));
    Ok(GResp::json(StatusCode::CREATED, Value::Object(out)))
}

fn dynamic_refused() -> GErr {
    GErr::bad_request(
        "Insufficient privileges to complete the operation. Members of a group with dynamic membership cannot be changed manually.",
    )
}

fn already_member() -> GErr {
    GErr::bad_request(
        "One or more added object references already exist for the following modified properties: 'members'.",
    )
}

fn update_group(st: &mut TenantState, cx: &mut Cx<'_>, id: &str) -> GResult {
    let g = match st.group_index(id, cx.now) {
        Some(g) => g,
        None => return Err(GErr::not_found(id)),
    };
    let mut body = cx.body_object()?;
    let binds = body.remove("members@odata.bind");
    let owner_binds = body.remove("owners@odata.bind");
    crate::schema::validate_body("group", &body).map_err(|v| schema_err(&v))?;
    if let Some(p) = GROUP_READ_ONLY.iter().find(|p| body.contains_key(**p)) {
        return Err(read_only_error(p));
    }
    body.remove("id");
    if let Some(v) = body.get("displayName") {
        match v {
            Value::String(s) if !s.is_empty() => {}
            _ => return Err(GErr::invalid_value("displayName", "Group")),
        }
    }
    validate::check_lengths("group", "Group", &body)?;
    if let Some(v) = body.get("mailNickname") {
        match v.as_str() {
            Some(n) if validate::mail_nickname_ok(n, true) => {
                if st.groups[g].is_unified() {
                    let gid = st.groups[g].id().to_owned();
                    if st.unified_nick_taken(n, Some(&gid)) {
                        return Err(GErr::conflict("mailNickname"));
                    }
                }
            }
            _ => return Err(GErr::invalid_value("mailNickname", "Group")),
        }
    }
    let urls: Vec<Value> = binds
        .as_ref()
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let owner_urls: Vec<Value> = owner_binds
        .as_ref()
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let mut new_members = Vec::new();
    if !urls.is_empty() || !owner_urls.is_empty() {
        // All-or-nothing and capped at 20 (graph-facts §5.3, gotcha 3).
        if urls.len() + owner_urls.len() > 20 {
            return Err(too_many_refs());
        }
        if st.groups[g].is_dynamic() && !urls.is_empty() {
            return Err(dynamic_refused());
        }
        let unified = st.groups[g].is_unified();
        new_members = resolve_binds(st, cx, &urls, unified)?;
        resolve_binds(st, cx, &owner_urls, unified)?;
        let existing = &st.groups[g].members;
        let mut seen = std::collections::HashSet::new();
        for m in &new_members {
            if existing.iter().any(|e| e.eq_ignore_ascii_case(m))
                || !seen.insert(m.to_ascii_lowercase())
            {
                return Err(already_member());
            }
        }
    }
    let group = &mut st.groups[g];
    for (k, v) in body {
        if v.is_null() {
            group.props.remove(&k);
        } else {
            group.props.insert(k, v);
        }
    }
    group.members.extend(new_members);
    st.index_group(g);
    cx.mutated = true;
    Ok(GResp::no_content())
}

fn add_member(st: &mut TenantState, cx: &mut Cx<'_>, id: &str) -> GResult {
    // A group still replicating answers 400 "do not exist" (graph-facts §5.3, §9).
    let g = match st.group_index_any(id) {
        Some(g) if st.groups[g].visible(cx.now) => g,
        Some(_) => return Err(GErr::reference_missing()),
        None => return Err(GErr::not_found(id)),
    };
    let body = cx.body_object()?;
    let target = ref_id(&body)?;
    if st.groups[g].is_dynamic() {
        return Err(dynamic_refused());
    }
    let unified = st.groups[g].is_unified();
    let ids = resolve_binds(st, cx, &[json!(target)], unified)?;
    let mid = ids.into_iter().next().unwrap_or_default();
    if mid.eq_ignore_ascii_case(st.groups[g].id()) {
        return Err(GErr::bad_request("A group cannot be a member of itself."));
    }
    if st.groups[g]
        .members
        .iter()
        .any(|m| m.eq_ignore_ascii_case(&mid))
    {
        return Err(already_member());
    }
    st.groups[g].members.push(mid);
    cx.mutated = true;
    Ok(GResp::no_content())
}

/// Headers of a response as a JSON object (for `$batch` items).
pub(crate) fn headers_json(headers: &[(String, String)], has_body: bool) -> Value {
    let mut m: HashMap<String, String> = HashMap::new();
    for (k, v) in headers {
        m.insert(k.clone(), v.clone());
    }
    if has_body {
        m.insert(
            "Content-Type".to_owned(),
            "application/json;odata.metadata=minimal;odata.streaming=true;IEEE754Compatible=false;charset=utf-8".to_owned(),
        );
    }
    let mut out = Map::new();
    let mut keys: Vec<_> = m.into_iter().collect();
    keys.sort();
    for (k, v) in keys {
        out.insert(k, Value::String(v));
    }
    Value::Object(out)
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
        let req = GReq {
            method: Method::POST,
            path: "/users".to_owned(),
            query: String::new(),
            headers,
            body: Bytes::from_static(br#"{"passwordProfile":{"password":"Sandb0x-pw!"}}"#),
            base_url: "http://127.0.0.1:1".to_owned(),
            batch_item: false,
        };
        let shown = format!("{req:?} {req:#?}");
        assert!(!shown.contains("T0ken-value"), "{shown}");
        assert!(!shown.contains("Sandb0x-pw!"), "{shown}");
        assert!(shown.contains("authorization"), "{shown}");
    }
}
