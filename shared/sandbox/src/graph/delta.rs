//! `GET /users/delta` and `GET /groups/delta`: change tracking read from the tenant's change log
//! (<https://learn.microsoft.com/graph/delta-query-overview>,
//! <https://learn.microsoft.com/graph/api/user-delta>,
//! <https://learn.microsoft.com/graph/api/group-delta>; docs/graph-behaviour.md#delta-queries).
//!
//! A round starts without a token and returns every object; its last page carries an
//! `@odata.deltaLink` whose token is the position reached on the tenant's sequence clock. The
//! next round, from that link, returns only the objects changed since. Query options go in the
//! first request only and travel inside the tokens: `$select` decides both what is returned and
//! which changes make an object appear.

use std::collections::HashMap;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::projection::Entity;
use super::request::{Permission, RequestContext, header, schema_error};
use crate::changes::{Change, ChangeLog, Relation, What};
use crate::tenant::{Obj, TenantState};
use crate::wire::{GraphError, GraphResponse, GraphResult, METADATA};

/// Properties kept outside the directory store: delta refuses to select them
/// (<https://learn.microsoft.com/graph/api/user-delta>, "Optional query parameters").
const OUTSIDE_DIRECTORY: &[&str] = &[
    "aboutMe",
    "birthday",
    "hireDate",
    "interests",
    "mySite",
    "pastProjects",
    "preferredName",
    "responsibilities",
    "schools",
    "skills",
    "signInActivity",
    "mailboxSettings",
];

/// `$filter` on delta scopes by object id only, at most this many.
const MAX_FILTER_IDS: usize = 50;

/// The collection a token belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
enum Set {
    Users,
    Groups,
}

impl From<Entity> for Set {
    fn from(entity: Entity) -> Self {
        match entity {
            Entity::User => Set::Users,
            Entity::Group => Set::Groups,
        }
    }
}

/// What a round tracks: the first request's `$select` (relationships included) and `$filter` ids.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Scope {
    #[serde(rename = "s", default, skip_serializing_if = "Option::is_none")]
    select: Option<Vec<String>>,
    #[serde(rename = "f", default, skip_serializing_if = "Vec::is_empty")]
    ids: Vec<String>,
}

/// The opaque content of `$skiptoken` (a round in progress) and `$deltatoken` (a round done).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Token {
    #[serde(rename = "e")]
    set: Set,
    #[serde(flatten)]
    scope: Scope,
    /// Changes after this sequence number are the round's; none: the first round (everything).
    #[serde(rename = "a", default, skip_serializing_if = "Option::is_none")]
    since: Option<u64>,
    /// A round in progress: the clock when it started, so its pages agree.
    #[serde(rename = "u", default, skip_serializing_if = "Option::is_none")]
    upto: Option<u64>,
    /// A round in progress: the items already returned.
    #[serde(rename = "o", default)]
    offset: usize,
    /// Unix ms when the token was issued.
    #[serde(rename = "t")]
    issued_ms: u64,
    #[serde(rename = "g", default)]
    generation: u32,
}

impl Token {
    fn encode(&self) -> String {
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(self).unwrap_or_default())
    }

    fn decode(text: &str) -> Option<Token> {
        let bytes = URL_SAFE_NO_PAD.decode(text.trim()).ok()?;
        serde_json::from_slice(&bytes).ok()
    }
}

/// What the caller asked for.
enum Request {
    /// `$deltatoken=latest`: no data, a deltaLink from now on.
    Latest(Scope),
    /// A page of a round.
    Page(Token),
}

/// The handler of both routes.
pub(super) fn delta(
    tenant: &TenantState,
    context: &RequestContext<'_>,
    entity: Entity,
) -> GraphResult {
    context.need(match entity {
        Entity::User => Permission::UserRead,
        Entity::Group => Permission::GroupRead,
    })?;
    let fresh = token_text(context).is_none();
    match read_request(tenant, context, entity)? {
        Request::Latest(scope) => {
            let token = Token {
                set: entity.into(),
                scope,
                since: Some(tenant.head_seq()),
                upto: None,
                offset: 0,
                issued_ms: context.now,
                generation: context.delta.reset_generation,
            };
            Ok(respond(
                context,
                entity,
                fresh,
                Vec::new(),
                Link::Delta(token),
            ))
        }
        Request::Page(token) => Ok(page(tenant, context, entity, token, fresh)),
    }
}

/// `$skiptoken` or `$deltatoken` (either spelling), when the request carries one.
fn token_text<'a>(context: &'a RequestContext<'_>) -> Option<&'a str> {
    context
        .query
        .get("$skiptoken")
        .or_else(|| context.query.get("$deltatoken"))
}

/// The request as a round page, or Graph's error for a token it cannot use.
fn read_request(
    tenant: &TenantState,
    context: &RequestContext<'_>,
    entity: Entity,
) -> Result<Request, GraphError> {
    let Some(text) = token_text(context) else {
        return Ok(Request::Page(Token {
            set: entity.into(),
            scope: read_scope(context, entity)?,
            since: None,
            upto: Some(tenant.head_seq()),
            offset: 0,
            issued_ms: context.now,
            generation: context.delta.reset_generation,
        }));
    };
    if text.eq_ignore_ascii_case("latest") {
        return Ok(Request::Latest(read_scope(context, entity)?));
    }
    let token = Token::decode(text)
        .filter(|t| t.set == Set::from(entity))
        .ok_or_else(invalid_token)?;
    if token.generation != context.delta.reset_generation {
        return Err(sync_reset(context, entity, &token.scope));
    }
    let age_ms = context.now.saturating_sub(token.issued_ms);
    let compacted = token
        .since
        .is_some_and(|since| since < tenant.changes.compacted_through);
    if compacted || age_ms / 1000 >= context.delta.token_lifetime_secs {
        return Err(GraphError::new(
            StatusCode::BAD_REQUEST,
            "syncStateNotFound",
            "The sync state generation is not found. The delta token is expired and data must be synchronized again.",
        ));
    }
    Ok(Request::Page(token))
}

fn invalid_token() -> GraphError {
    GraphError::new(
        StatusCode::BAD_REQUEST,
        "resyncRequired",
        "The delta token is not valid. The application must reset the sync state and start a new round.",
    )
}

/// `410 Gone` with the first request's URL in `Location`: Graph's answer after its sync state
/// was reset (<https://learn.microsoft.com/graph/delta-query-overview>, "Synchronization reset").
fn sync_reset(context: &RequestContext<'_>, entity: Entity, scope: &Scope) -> GraphError {
    let mut options: Vec<String> = Vec::new();
    if let Some(select) = &scope.select {
        options.push(format!("$select={}", select.join(",")));
    }
    if !scope.ids.is_empty() {
        let terms: Vec<String> = scope.ids.iter().map(|id| format!("id eq '{id}'")).collect();
        options.push(format!(
            "$filter={}",
            percent_encoding::utf8_percent_encode(
                &terms.join(" or "),
                percent_encoding::NON_ALPHANUMERIC
            )
        ));
    }
    let mut location = format!(
        "{}/v1.0/{}/delta",
        context.request.base_url,
        entity.set_name()
    );
    if !options.is_empty() {
        location = format!("{location}?{}", options.join("&"));
    }
    let mut error = GraphError::new(
        StatusCode::GONE,
        "resyncRequired",
        "The sync state was reset. Start a new round from the URL in the Location header.",
    );
    error.headers.push(("Location".to_owned(), location));
    error
}

/// The options of a round's first request, checked as Graph checks them.
fn read_scope(context: &RequestContext<'_>, entity: Entity) -> Result<Scope, GraphError> {
    if let Some(expand) = context.query.get("$expand") {
        return Err(not_for_delta(expand));
    }
    if context.query.get("$orderby").is_some() || context.query.get("$search").is_some() {
        return Err(GraphError::unsupported_query("Unsupported Query."));
    }
    // `$top` is not supported on delta, and ignored rather than refused.
    let ids = match context.query.get("$filter") {
        Some(filter) => filter_ids(filter)?,
        None => Vec::new(),
    };
    let select = match context.query.get("$select") {
        Some(select) => Some(select_names(select, entity)?),
        None => None,
    };
    Ok(Scope { select, ids })
}

/// 400 for options delta cannot serve, as Graph words it.
fn not_for_delta(properties: &str) -> GraphError {
    GraphError::new(
        StatusCode::BAD_REQUEST,
        "BadRequest",
        format!(
            "Invalid request for delta query: for this entity set, $expand/$select is not supported for the following properties: {properties}"
        ),
    )
}

/// The ids of `id eq '…' or id eq '…'`, the only filter delta takes.
fn filter_ids(filter: &str) -> Result<Vec<String>, GraphError> {
    let unsupported = || GraphError::unsupported_query("Unsupported Query.");
    let mut ids = Vec::new();
    for term in split_or(filter) {
        let term = term
            .trim()
            .trim_start_matches('(')
            .trim_end_matches(')')
            .trim();
        let (property, rest) = term
            .split_once(char::is_whitespace)
            .ok_or_else(unsupported)?;
        let (op, value) = rest
            .trim()
            .split_once(char::is_whitespace)
            .ok_or_else(unsupported)?;
        let value = value.trim();
        let id = value
            .strip_prefix('\'')
            .and_then(|v| v.strip_suffix('\''))
            .filter(|id| !id.contains('\''));
        match id {
            Some(id) if property == "id" && op.eq_ignore_ascii_case("eq") => {
                ids.push(id.to_owned());
            }
            _ => return Err(unsupported()),
        }
    }
    if ids.is_empty() || ids.len() > MAX_FILTER_IDS {
        return Err(unsupported());
    }
    Ok(ids)
}

/// The terms of a filter joined by ` or ` (any case).
fn split_or(filter: &str) -> Vec<&str> {
    let lower = filter.to_ascii_lowercase();
    let mut terms = Vec::new();
    let mut start = 0;
    let mut from = 0;
    while let Some(at) = lower.get(from..).and_then(|rest| rest.find(" or ")) {
        let at = from + at;
        terms.push(filter.get(start..at).unwrap_or(""));
        start = at + 4;
        from = start;
    }
    terms.push(filter.get(start..).unwrap_or(""));
    terms
}

/// `$select` names: properties (checked against the schema) and the relationships delta tracks.
fn select_names(select: &str, entity: Entity) -> Result<Vec<String>, GraphError> {
    let names: Vec<String> = select
        .split(',')
        .map(|p| p.trim().to_owned())
        .filter(|p| !p.is_empty())
        .collect();
    let outside: Vec<&str> = names
        .iter()
        .map(String::as_str)
        .filter(|n| OUTSIDE_DIRECTORY.iter().any(|o| o.eq_ignore_ascii_case(n)))
        .collect();
    if !outside.is_empty() {
        return Err(not_for_delta(&outside.join(",")));
    }
    let properties: Vec<&str> = names
        .iter()
        .map(String::as_str)
        .filter(|n| relation(entity, n).is_none())
        .collect();
    crate::schema::validate_select(entity.schema_name(), &properties)
        .map_err(|v| schema_error(&v))?;
    Ok(names)
}

/// The relationship `name` stands for on this entity, if any.
fn relation(entity: Entity, name: &str) -> Option<Relation> {
    match (entity, name) {
        (Entity::User, "manager") => Some(Relation::Manager),
        (Entity::Group, "members") => Some(Relation::Members),
        _ => None,
    }
}

/// What a round watches: properties (`None`: all) and relationships.
struct Tracking {
    properties: Option<Vec<String>>,
    relations: Vec<Relation>,
}

impl Tracking {
    fn of(entity: Entity, scope: &Scope) -> Tracking {
        match &scope.select {
            // Without `$select` every property is tracked, and a group's members.
            None => Tracking {
                properties: None,
                relations: match entity {
                    Entity::User => Vec::new(),
                    Entity::Group => vec![Relation::Members],
                },
            },
            Some(names) => Tracking {
                properties: Some(
                    names
                        .iter()
                        .filter(|n| relation(entity, n).is_none())
                        .cloned()
                        .collect(),
                ),
                relations: names.iter().filter_map(|n| relation(entity, n)).collect(),
            },
        }
    }

    fn property(&self, name: &str) -> bool {
        self.properties
            .as_ref()
            .is_none_or(|p| p.iter().any(|s| s == name))
    }

    fn relation(&self, relation: Relation) -> bool {
        self.relations.contains(&relation)
    }
}

/// One entry of a relationship's `@delta` array.
#[derive(Debug, Clone)]
struct LinkRef {
    target: String,
    added: bool,
}

/// One item of a round, before rendering.
enum Item {
    /// Gone: `"changed"` (soft-deleted, restorable) or `"deleted"` (for good).
    Removed { id: String, reason: &'static str },
    /// A live object: all selected properties (`changed` none) or only the changed ones, and a
    /// slice of one relationship's changes.
    Object {
        position: usize,
        changed: Option<Vec<String>>,
        relation: Option<Relation>,
        links: Vec<LinkRef>,
    },
}

/// The net effect of a round's changes on one object.
#[derive(Default)]
struct Net {
    fresh: bool,
    properties: Vec<String>,
    links: Vec<(Relation, LinkRef)>,
}

fn page(
    tenant: &TenantState,
    context: &RequestContext<'_>,
    entity: Entity,
    token: Token,
    fresh: bool,
) -> GraphResponse {
    let upto = token.upto.unwrap_or_else(|| tenant.head_seq());
    let tracking = Tracking::of(entity, &token.scope);
    let minimal = token.since.is_some()
        && header(&context.request.headers, "prefer")
            .is_some_and(|p| p.to_ascii_lowercase().contains("return=minimal"));
    let items = match token.since {
        None => first_round(tenant, entity, &token.scope, &tracking, upto),
        Some(since) => later_round(tenant, entity, &token, &tracking, since, upto, minimal),
    };
    let items = split_links(items, context.delta.page_size.max(1));
    let start = token.offset.min(items.len());
    let end = start
        .saturating_add(context.delta.page_size.max(1))
        .min(items.len());
    let value: Vec<Value> = items
        .get(start..end)
        .unwrap_or(&[])
        .iter()
        .map(|item| render(tenant, entity, &token.scope, item))
        .collect();
    let link = if end < items.len() {
        Link::Next(Token {
            upto: Some(upto),
            offset: end,
            issued_ms: context.now,
            ..token
        })
    } else {
        Link::Delta(Token {
            since: Some(upto),
            upto: None,
            offset: 0,
            issued_ms: context.now,
            ..token
        })
    };
    respond(context, entity, fresh, value, link)
}

/// Round one: every object that existed when it started, deleted ones as removed.
fn first_round(
    tenant: &TenantState,
    entity: Entity,
    scope: &Scope,
    tracking: &Tracking,
    upto: u64,
) -> Vec<Item> {
    objects(tenant, entity)
        .iter()
        .enumerate()
        .filter(|(_, o)| o.seq <= upto && in_scope(scope, o.id()))
        .map(|(position, o)| {
            if o.deleted {
                Item::Removed {
                    id: o.id().to_owned(),
                    reason: "changed",
                }
            } else {
                whole(o, position, tracking)
            }
        })
        .collect()
}

/// A live object with all its selected properties and its current links.
fn whole(o: &Obj, position: usize, tracking: &Tracking) -> Item {
    let (relation, links) = current_links(o, tracking);
    Item::Object {
        position,
        changed: None,
        relation,
        links,
    }
}

fn current_links(o: &Obj, tracking: &Tracking) -> (Option<Relation>, Vec<LinkRef>) {
    let added = |target: &String| LinkRef {
        target: target.clone(),
        added: true,
    };
    if tracking.relation(Relation::Members) && !o.members.is_empty() {
        (
            Some(Relation::Members),
            o.members.iter().map(added).collect(),
        )
    } else if tracking.relation(Relation::Manager)
        && let Some(manager) = &o.manager
    {
        (Some(Relation::Manager), vec![added(manager)])
    } else {
        (None, Vec::new())
    }
}

fn in_scope(scope: &Scope, id: &str) -> bool {
    scope.ids.is_empty() || scope.ids.iter().any(|i| i.eq_ignore_ascii_case(id))
}

/// A later round: the objects whose tracked state changed after `since`, in the order of their
/// first change.
fn later_round(
    tenant: &TenantState,
    entity: Entity,
    token: &Token,
    tracking: &Tracking,
    since: u64,
    upto: u64,
    minimal: bool,
) -> Vec<Item> {
    let log = match entity {
        Entity::User => &tenant.changes.users,
        Entity::Group => &tenant.changes.groups,
    };
    let (order, nets) = net_changes(ChangeLog::between(log, since, upto), &token.scope);
    let mut items = Vec::new();
    for id in order {
        let Some(net) = nets.get(id) else { continue };
        let position = match entity {
            Entity::User => tenant.user_exact(id),
            Entity::Group => tenant.group_exact(id),
        };
        let Some(position) = position else {
            // Created and purged within the round: it never shows.
            if !net.fresh {
                items.push(Item::Removed {
                    id: id.to_owned(),
                    reason: "deleted",
                });
            }
            continue;
        };
        let o = &objects(tenant, entity)[position];
        if o.deleted {
            items.push(Item::Removed {
                id: id.to_owned(),
                reason: "changed",
            });
        } else if net.fresh {
            items.push(whole(o, position, tracking));
        } else if let Some(item) = changed_item(net, position, tracking, minimal) {
            items.push(item);
        }
    }
    items
}

/// A live object's tracked changes as an item; none when nothing tracked changed.
fn changed_item(net: &Net, position: usize, tracking: &Tracking, minimal: bool) -> Option<Item> {
    let properties: Vec<String> = net
        .properties
        .iter()
        .filter(|p| tracking.property(p))
        .cloned()
        .collect();
    let mut relation = None;
    let mut links: Vec<LinkRef> = Vec::new();
    for (r, link) in net.links.iter().filter(|(r, _)| tracking.relation(*r)) {
        relation = Some(*r);
        // The last change to a link wins.
        links.retain(|l| l.target != link.target);
        links.push(link.clone());
    }
    if properties.is_empty() && links.is_empty() {
        return None;
    }
    Some(Item::Object {
        position,
        changed: minimal.then_some(properties),
        relation,
        links,
    })
}

/// The changes grouped by object, and the objects in the order of their first change.
fn net_changes<'a>(changes: &'a [Change], scope: &Scope) -> (Vec<&'a str>, HashMap<&'a str, Net>) {
    let mut order: Vec<&str> = Vec::new();
    let mut nets: HashMap<&str, Net> = HashMap::new();
    for change in changes.iter().filter(|c| in_scope(scope, &c.id)) {
        let net = nets.entry(change.id.as_str()).or_insert_with(|| {
            order.push(change.id.as_str());
            Net::default()
        });
        match &change.what {
            What::Created | What::Restored => net.fresh = true,
            What::Props { names } => {
                for name in names {
                    if !net.properties.contains(name) {
                        net.properties.push(name.clone());
                    }
                }
            }
            What::Link {
                relation,
                target,
                added,
            } => net.links.push((
                *relation,
                LinkRef {
                    target: target.clone(),
                    added: *added,
                },
            )),
            // The object's state now tells a removal apart.
            What::SoftDeleted | What::Purged => {}
        }
    }
    (order, nets)
}

/// Items whose links exceed a page split into several, the object repeated on each: Graph
/// spreads a large group's `members@delta` over pages the same way.
fn split_links(items: Vec<Item>, page_size: usize) -> Vec<Item> {
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        match item {
            Item::Object {
                position,
                changed,
                relation,
                links,
            } if links.len() > page_size => {
                for chunk in links.chunks(page_size) {
                    out.push(Item::Object {
                        position,
                        changed: changed.clone(),
                        relation,
                        links: chunk.to_vec(),
                    });
                }
            }
            other => out.push(other),
        }
    }
    out
}

fn render(tenant: &TenantState, entity: Entity, scope: &Scope, item: &Item) -> Value {
    match item {
        Item::Removed { id, reason } => json!({ "id": id, "@removed": { "reason": reason } }),
        Item::Object {
            position,
            changed,
            relation,
            links,
        } => {
            let o = &objects(tenant, entity)[*position];
            let mut body = match changed {
                None => {
                    let properties: Option<Vec<String>> = scope.select.as_ref().map(|names| {
                        names
                            .iter()
                            .filter(|n| self::relation(entity, n).is_none())
                            .cloned()
                            .collect()
                    });
                    // `id` always comes back, selected or not.
                    let mut body = Map::new();
                    body.insert("id".into(), json!(o.id()));
                    body.extend(entity.project(o, properties.as_deref()));
                    body
                }
                Some(names) => minimal_body(o, names),
            };
            if let (Some(relation), false) = (relation, links.is_empty()) {
                let entries: Vec<Value> = links.iter().map(|l| link_entry(tenant, l)).collect();
                body.insert(format!("{}@delta", relation.name()), Value::Array(entries));
            }
            Value::Object(body)
        }
    }
}

/// `id` and the changed properties, a cleared one as `null` (`Prefer: return=minimal`).
fn minimal_body(o: &Obj, names: &[String]) -> Map<String, Value> {
    let mut body = Map::new();
    body.insert("id".into(), json!(o.id()));
    for name in names {
        body.insert(
            name.clone(),
            o.props.get(name).cloned().unwrap_or(Value::Null),
        );
    }
    body
}

fn link_entry(tenant: &TenantState, link: &LinkRef) -> Value {
    let kind = if tenant.group_exact(&link.target).is_some() {
        "#microsoft.graph.group"
    } else {
        "#microsoft.graph.user"
    };
    let mut entry = json!({ "@odata.type": kind, "id": link.target });
    if !link.added
        && let Some(map) = entry.as_object_mut()
    {
        map.insert("@removed".into(), json!({ "reason": "deleted" }));
    }
    entry
}

fn objects(tenant: &TenantState, entity: Entity) -> &[Obj] {
    match entity {
        Entity::User => &tenant.users,
        Entity::Group => &tenant.groups,
    }
}

/// Where a page points the caller next.
enum Link {
    Next(Token),
    Delta(Token),
}

fn respond(
    context: &RequestContext<'_>,
    entity: Entity,
    fresh: bool,
    value: Vec<Value>,
    link: Link,
) -> GraphResponse {
    let set = entity.set_name();
    let scope = match &link {
        Link::Next(t) | Link::Delta(t) => &t.scope,
    };
    // The first page names the `$select` list; later pages the bare set.
    let context_set = match (&scope.select, fresh) {
        (Some(select), true) => format!("{set}({})", select.join(",")),
        _ => set.to_owned(),
    };
    let base = format!("{}/v1.0/{set}/delta", context.request.base_url);
    let (name, url) = match link {
        Link::Next(t) => (
            "@odata.nextLink",
            format!("{base}?$skiptoken={}", t.encode()),
        ),
        Link::Delta(t) => (
            "@odata.deltaLink",
            format!("{base}?$deltatoken={}", t.encode()),
        ),
    };
    let mut body = Map::new();
    body.insert(
        "@odata.context".into(),
        json!(format!("{METADATA}#{context_set}")),
    );
    body.insert(name.into(), json!(url));
    body.insert("value".into(), Value::Array(value));
    GraphResponse::json(StatusCode::OK, Value::Object(body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filter_takes_ids_joined_by_or_and_nothing_else() {
        assert_eq!(
            filter_ids("id eq 'a' or id eq 'b'").map_err(|e| e.code),
            Ok(vec!["a".to_owned(), "b".to_owned()])
        );
        assert_eq!(
            filter_ids("(id eq 'a') OR (id eq 'b')")
                .map(|v| v.len())
                .ok(),
            Some(2)
        );
        for refused in [
            "displayName eq 'a'",
            "id ne 'a'",
            "id eq a",
            "",
            "id eq 'a' and id eq 'b'",
        ] {
            assert_eq!(
                filter_ids(refused).map_err(|e| e.code),
                Err("Request_UnsupportedQuery"),
                "{refused}"
            );
        }
        let many: Vec<String> = (0..51).map(|i| format!("id eq '{i}'")).collect();
        assert!(filter_ids(&many.join(" or ")).is_err());
        assert!(filter_ids(&many[..50].join(" or ")).is_ok());
    }

    #[test]
    fn tokens_round_trip_and_garbage_is_refused() {
        let token = Token {
            set: Set::Users,
            scope: Scope {
                select: Some(vec!["displayName".to_owned(), "manager".to_owned()]),
                ids: Vec::new(),
            },
            since: Some(7),
            upto: None,
            offset: 0,
            issued_ms: 5,
            generation: 1,
        };
        let back = Token::decode(&token.encode());
        assert_eq!(
            back.map(|t| (t.since, t.scope)),
            Some((Some(7), token.scope))
        );
        assert!(Token::decode("not-a-token").is_none());
    }
}
