//! `$expand` on users and groups (docs/graph-behaviour.md#expand): `manager` on a user,
//! `members` on a group, one relationship per request, optionally with a nested `$select`.
//!
//! Graph parses `$expand` in its OData layer, so its refusals are that layer's texts with code
//! `BadRequest`: more than one item, an unknown name, a property that is not a relationship, a
//! malformed term. Relationships Graph expands but the sandbox does not hold (`memberOf`,
//! `owners`, `$levels`, ...) are refused with 501 rather than answered wrongly.

use http::StatusCode;
use serde_json::{Map, Value};

use super::members::member_objects;
use super::projection::Entity;
use super::request::{Query, RequestContext, schema_error};
use crate::schema::{self, ExpandName};
use crate::tenant::{Obj, TenantState};
use crate::wire::GraphError;

/// Expanded directory relationships hold at most 20 objects and no nextLink
/// (<https://learn.microsoft.com/graph/query-parameters>, "expand parameter").
const EXPANDED_MAX: usize = 20;

/// The relationships the sandbox expands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Navigation {
    /// A user's manager: a user, absent when the user has none.
    Manager,
    /// A group's members: users and groups, in the order they were created.
    Members,
}

/// The one relationship a request expands, with the `$select` nested in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Expand {
    navigation: Navigation,
    select: Option<Vec<String>>,
}

fn odata_error(message: String) -> GraphError {
    GraphError::new(
        StatusCode::BAD_REQUEST,
        "BadRequest",
        format!("Parsing OData Select and Expand failed: {message}"),
    )
}

fn bad_term(term: &str) -> GraphError {
    odata_error(format!(
        "Term '{term}' is not valid in a $select or $expand expression."
    ))
}

fn not_served(what: &str) -> GraphError {
    GraphError::new(
        StatusCode::NOT_IMPLEMENTED,
        "NotImplemented",
        format!(
            "The sandbox does not serve {what}: it expands only manager on users and members on groups, with an optional nested $select."
        ),
    )
}

/// The items of an `$expand` value: split at commas outside parentheses. `None` when the
/// parentheses do not balance.
fn items(text: &str) -> Option<Vec<&str>> {
    let mut out = Vec::new();
    let (mut depth, mut start) = (0usize, 0usize);
    for (i, c) in text.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth = depth.checked_sub(1)?,
            ',' if depth == 0 => {
                out.push(text[start..i].trim());
                start = i + 1;
            }
            _ => {}
        }
    }
    (depth == 0).then(|| {
        out.push(text[start..].trim());
        out
    })
}

/// The `$select` nested in an item's parentheses (`$select=id,displayName`); any other nested
/// option is one the sandbox does not serve.
fn nested_select(item: &str, options: &str) -> Result<Option<Vec<String>>, GraphError> {
    let mut select = None;
    for option in options.split(';').map(str::trim).filter(|o| !o.is_empty()) {
        let Some((key, value)) = option.split_once('=') else {
            return Err(bad_term(item));
        };
        let key = key.trim();
        if key.eq_ignore_ascii_case("$select") {
            let props: Vec<String> = value
                .split(',')
                .map(|p| p.trim().to_owned())
                .filter(|p| !p.is_empty())
                .collect();
            let refs: Vec<&str> = props.iter().map(String::as_str).collect();
            // Members are directory objects; the sandbox holds users and groups, and Graph
            // takes user properties there (`$expand=members($select=id,userPrincipalName)`).
            schema::validate_select("user", &refs).map_err(|v| schema_error(&v))?;
            select = Some(props);
        } else if key.starts_with('$') {
            return Err(not_served(&format!("{key} inside $expand")));
        } else {
            return Err(bad_term(item));
        }
    }
    Ok(select)
}

/// The request's `$expand` on `entity` (`user`, `group`, or `directoryObject` for the members
/// of a group, which have no relationship the sandbox expands).
pub(super) fn parse(query: &Query, entity: &str) -> Result<Option<Expand>, GraphError> {
    let Some(text) = query
        .get("$expand")
        .map(str::trim)
        .filter(|t| !t.is_empty())
    else {
        return Ok(None);
    };
    let items = items(text).ok_or_else(|| bad_term(text))?;
    if items.len() > 1 {
        // Graph expands one relationship per request on users (and directory objects).
        return Err(GraphError::new(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            format!(
                "The result of parsing $expand contained at least {} items, but the maximum allowed is 1.",
                items.len()
            ),
        ));
    }
    let item = items.first().copied().unwrap_or_default();
    let (name, options) = match item.split_once('(') {
        None => (item, ""),
        Some((name, rest)) => match rest.strip_suffix(')') {
            Some(options) => (name.trim(), options),
            None => return Err(bad_term(item)),
        },
    };
    if name == "*" {
        return Err(not_served("$expand=*"));
    }
    if name.is_empty() || !name.chars().all(|c| c.is_alphanumeric() || c == '_') {
        return Err(bad_term(item));
    }
    let Some((type_name, found)) = schema::expand_name(entity, name) else {
        return Err(GraphError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalServerError",
            format!("The sandbox has no schema for '{entity}'."),
        ));
    };
    let navigation = match (found, entity) {
        (ExpandName::Navigation("manager"), "user") => Navigation::Manager,
        (ExpandName::Navigation("members"), "group") => Navigation::Members,
        (ExpandName::Navigation(other), _) => {
            return Err(not_served(&format!("$expand={other}")));
        }
        (ExpandName::Structural(_), _) => {
            return Err(odata_error(format!(
                "Property '{name}' on type '{type_name}' is not a navigation property or complex property. Only navigation properties can be expanded."
            )));
        }
        (ExpandName::Unknown, _) => {
            return Err(odata_error(format!(
                "Could not find a property named '{name}' on type '{type_name}'."
            )));
        }
    };
    let select = nested_select(item, options)?;
    Ok(Some(Expand { navigation, select }))
}

impl Expand {
    /// Adds the expanded relationship of `obj` to its projection `body`.
    pub(super) fn apply(
        &self,
        tenant: &TenantState,
        context: &RequestContext<'_>,
        obj: &Obj,
        body: &mut Map<String, Value>,
    ) {
        let select = self.select.as_deref();
        match self.navigation {
            Navigation::Manager => {
                // No manager: no `manager` property at all (a `$select` naming it aside).
                body.remove("manager");
                let manager = obj
                    .manager
                    .as_deref()
                    .and_then(|m| tenant.user_index(m, context.now));
                if let Some(m) = manager {
                    let value = Entity::User.directory_object(&tenant.users[m], select);
                    body.insert("manager".into(), value);
                }
            }
            Navigation::Members => {
                let members: Vec<Value> = member_objects(tenant, obj)
                    .into_iter()
                    .take(EXPANDED_MAX)
                    .map(|(entity, member)| entity.directory_object(member, select))
                    .collect();
                body.insert("members".into(), Value::Array(members));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::request::parse_query;

    fn expand(entity: &str, text: &str) -> Result<Option<Expand>, (u16, String)> {
        let query = parse_query(&format!("$expand={text}"));
        parse(&query, entity).map_err(|e| (e.status.as_u16(), e.message))
    }

    #[test]
    fn parses_one_relationship_with_a_nested_select() {
        let e = expand("user", "Manager($select=id,displayName)")
            .unwrap()
            .unwrap();
        assert_eq!(e.navigation, Navigation::Manager);
        assert_eq!(
            e.select,
            Some(vec!["id".to_owned(), "displayName".to_owned()])
        );
        let e = expand("group", "members").unwrap().unwrap();
        assert_eq!((e.navigation, e.select), (Navigation::Members, None));
    }

    #[test]
    fn refuses_as_graphs_odata_layer_does() {
        let refused = [
            (
                "user",
                "manager,memberOf",
                "The result of parsing $expand contained at least 2 items, but the maximum allowed is 1.",
            ),
            (
                "user",
                "foo",
                "Parsing OData Select and Expand failed: Could not find a property named 'foo' on type 'microsoft.graph.user'.",
            ),
            (
                "user",
                "displayName",
                "Parsing OData Select and Expand failed: Property 'displayName' on type 'microsoft.graph.user' is not a navigation property or complex property. Only navigation properties can be expanded.",
            ),
            (
                "directoryObject",
                "manager",
                "Parsing OData Select and Expand failed: Could not find a property named 'manager' on type 'microsoft.graph.directoryObject'.",
            ),
            (
                "user",
                "manager($select=id",
                "Parsing OData Select and Expand failed: Term 'manager($select=id' is not valid in a $select or $expand expression.",
            ),
        ];
        for (entity, text, message) in refused {
            assert_eq!(
                expand(entity, text),
                Err((400, message.to_owned())),
                "{text}"
            );
        }
        for text in ["memberOf", "manager($levels=max)", "*"] {
            assert_eq!(expand("user", text).map_err(|e| e.0), Err(501), "{text}");
        }
        assert_eq!(expand("group", "manager").map_err(|e| e.0), Err(400));
    }
}
