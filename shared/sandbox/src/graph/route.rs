//! The endpoints of `/v1.0`: [`Route::parse`] turns a method and path into one, [`dispatch`] runs
//! its handler.

use http::{Method, StatusCode};

use super::projection::Entity;
use super::request::{RequestContext, decode_segment};
use super::{delta, directory, groups, licenses, members, organization, users};
use crate::tenant::TenantState;
use crate::wire::{GraphError, GraphResult};

/// One endpoint, with its path parameters percent-decoded. A user `key` is an id or a UPN.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Route {
    GetOrganization,
    ListDomains,
    ListSubscribedSkus,
    ListUsers,
    CountUsers,
    /// `/users/delta` or `/groups/delta` (also spelt `microsoft.graph.delta`).
    Delta {
        entity: Entity,
    },
    CreateUser,
    GetUser {
        key: String,
    },
    UpdateUser {
        key: String,
    },
    DeleteUser {
        key: String,
    },
    AssignLicense {
        key: String,
    },
    ListLicenseDetails {
        key: String,
    },
    GetManager {
        key: String,
    },
    SetManager {
        key: String,
    },
    RemoveManager {
        key: String,
    },
    ListGroups,
    CountGroups,
    CreateGroup,
    GetGroup {
        id: String,
    },
    UpdateGroup {
        id: String,
    },
    DeleteGroup {
        id: String,
    },
    ListMembers {
        group: String,
    },
    CountMembers {
        group: String,
    },
    AddMember {
        group: String,
    },
    RemoveMember {
        group: String,
        member: String,
    },
    ListDeleted {
        entity: Entity,
    },
    GetDeleted {
        id: String,
    },
    RestoreDeleted {
        id: String,
    },
    PurgeDeleted {
        id: String,
    },
    /// `$batch` inside a `$batch`: refused.
    NestedBatch,
}

impl Route {
    /// The route of `method` on `path` (relative to `/v1.0`, still percent-encoded); Graph's
    /// error when there is none: 405 for a known path, 400 otherwise.
    pub(super) fn parse(method: &Method, path: &str) -> Result<Route, GraphError> {
        let segments: Vec<String> = path
            .trim_matches('/')
            .split('/')
            .filter(|s| !s.is_empty())
            .map(decode_segment)
            .collect();
        let segments: Vec<&str> = segments.iter().map(String::as_str).collect();
        Route::from_segments(method, &segments).ok_or_else(|| no_route(&segments))
    }

    fn from_segments(method: &Method, segments: &[&str]) -> Option<Route> {
        let key = |s: &str| s.to_owned();
        Some(match (method.as_str(), segments) {
            ("GET", ["organization"]) => Route::GetOrganization,
            ("GET", ["domains"]) => Route::ListDomains,
            ("GET", ["subscribedSkus"]) => Route::ListSubscribedSkus,
            ("GET", ["users"]) => Route::ListUsers,
            ("GET", ["users", "$count"]) => Route::CountUsers,
            ("GET", ["groups", "$count"]) => Route::CountGroups,
            ("GET", ["users", "delta" | "microsoft.graph.delta"]) => Route::Delta {
                entity: Entity::User,
            },
            ("GET", ["groups", "delta" | "microsoft.graph.delta"]) => Route::Delta {
                entity: Entity::Group,
            },
            ("POST", ["users"]) => Route::CreateUser,
            ("GET", ["users", k]) => Route::GetUser { key: key(k) },
            ("PATCH", ["users", k]) => Route::UpdateUser { key: key(k) },
            ("DELETE", ["users", k]) => Route::DeleteUser { key: key(k) },
            ("POST", ["users", k, "assignLicense"]) => Route::AssignLicense { key: key(k) },
            ("GET", ["users", k, "licenseDetails"]) => Route::ListLicenseDetails { key: key(k) },
            ("GET", ["users", k, "manager"]) => Route::GetManager { key: key(k) },
            ("PUT", ["users", k, "manager", "$ref"]) => Route::SetManager { key: key(k) },
            ("DELETE", ["users", k, "manager", "$ref"]) => Route::RemoveManager { key: key(k) },
            ("GET", ["groups"]) => Route::ListGroups,
            ("POST", ["groups"]) => Route::CreateGroup,
            ("GET", ["groups", id]) => Route::GetGroup { id: key(id) },
            ("PATCH", ["groups", id]) => Route::UpdateGroup { id: key(id) },
            ("DELETE", ["groups", id]) => Route::DeleteGroup { id: key(id) },
            ("GET", ["groups", id, "members"]) => Route::ListMembers { group: key(id) },
            ("GET", ["groups", id, "members", "$count"]) => Route::CountMembers { group: key(id) },
            ("POST", ["groups", id, "members", "$ref"]) => Route::AddMember { group: key(id) },
            ("DELETE", ["groups", id, "members", member, "$ref"]) => Route::RemoveMember {
                group: key(id),
                member: key(member),
            },
            ("GET", ["directory", "deletedItems", "microsoft.graph.user"]) => Route::ListDeleted {
                entity: Entity::User,
            },
            ("GET", ["directory", "deletedItems", "microsoft.graph.group"]) => Route::ListDeleted {
                entity: Entity::Group,
            },
            ("GET", ["directory", "deletedItems", id]) => Route::GetDeleted { id: key(id) },
            ("POST", ["directory", "deletedItems", id, "restore"]) => {
                Route::RestoreDeleted { id: key(id) }
            }
            ("DELETE", ["directory", "deletedItems", id]) => Route::PurgeDeleted { id: key(id) },
            ("POST", ["$batch"]) => Route::NestedBatch,
            _ => return None,
        })
    }
}

/// Graph's answer to a method and path that name no route.
fn no_route(segments: &[&str]) -> GraphError {
    match segments {
        [] => GraphError::new(StatusCode::BAD_REQUEST, "BadRequest", "Invalid request."),
        _ if known_path(segments) => GraphError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "Request_BadRequest",
            "Specified HTTP method is not allowed for the request target.",
        ),
        [first, ..] => GraphError::new(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            format!("Resource not found for the segment '{first}'."),
        ),
    }
}

/// Paths that have a route for some method.
fn known_path(segments: &[&str]) -> bool {
    matches!(
        segments,
        ["organization" | "domains" | "subscribedSkus" | "users" | "groups" | "$batch"]
            | ["users" | "groups", _]
            | ["users", _, "assignLicense" | "licenseDetails" | "manager"]
            | ["users", _, "manager", "$ref"]
            | ["groups", _, "members"]
            | ["groups", _, "members", "$ref" | "$count"]
            | ["groups", _, "members", _, "$ref"]
            | ["directory", "deletedItems", _]
            | ["directory", "deletedItems", _, "restore"]
    )
}

/// Runs the route's handler. Handlers check the caller's permissions themselves.
pub(super) fn dispatch(
    route: Route,
    tenant: &mut TenantState,
    context: &mut RequestContext<'_>,
) -> GraphResult {
    match route {
        Route::GetOrganization => organization::get(tenant, context),
        Route::ListDomains => organization::list_domains(tenant, context),
        Route::ListSubscribedSkus => licenses::list_subscribed_skus(tenant, context),
        Route::ListUsers => users::list(tenant, context),
        Route::CountUsers => users::count(tenant, context),
        Route::Delta { entity } => delta::delta(tenant, context, entity),
        Route::CreateUser => users::create(tenant, context),
        Route::GetUser { key } => users::get(tenant, context, &key),
        Route::UpdateUser { key } => users::update(tenant, context, &key),
        Route::DeleteUser { key } => users::delete(tenant, context, &key),
        Route::AssignLicense { key } => licenses::assign(tenant, context, &key),
        Route::ListLicenseDetails { key } => licenses::list_details(tenant, context, &key),
        Route::GetManager { key } => users::get_manager(tenant, context, &key),
        Route::SetManager { key } => users::set_manager(tenant, context, &key),
        Route::RemoveManager { key } => users::remove_manager(tenant, context, &key),
        Route::ListGroups => groups::list(tenant, context),
        Route::CountGroups => groups::count(tenant, context),
        Route::CreateGroup => groups::create(tenant, context),
        Route::GetGroup { id } => groups::get(tenant, context, &id),
        Route::UpdateGroup { id } => groups::update(tenant, context, &id),
        Route::DeleteGroup { id } => groups::delete(tenant, context, &id),
        Route::ListMembers { group } => members::list(tenant, context, &group),
        Route::CountMembers { group } => members::count(tenant, context, &group),
        Route::AddMember { group } => members::add(tenant, context, &group),
        Route::RemoveMember { group, member } => members::remove(tenant, context, &group, &member),
        Route::ListDeleted { entity } => directory::list_deleted(tenant, context, entity),
        Route::GetDeleted { id } => directory::get_deleted(tenant, context, &id),
        Route::RestoreDeleted { id } => directory::restore(tenant, context, &id),
        Route::PurgeDeleted { id } => directory::purge(tenant, context, &id),
        Route::NestedBatch => Err(GraphError::new(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "Nested batch requests are not supported.",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(method: Method, path: &str) -> Result<Route, u16> {
        Route::parse(&method, path).map_err(|e| e.status.as_u16())
    }

    #[test]
    fn parses_path_parameters_percent_decoded() {
        assert_eq!(
            parse(Method::GET, "/users/a%40example.com"),
            Ok(Route::GetUser {
                key: "a@example.com".to_owned()
            })
        );
        assert_eq!(
            parse(Method::DELETE, "/groups/g1/members/u1/$ref"),
            Ok(Route::RemoveMember {
                group: "g1".to_owned(),
                member: "u1".to_owned()
            })
        );
        assert_eq!(
            parse(Method::GET, "/directory/deletedItems/microsoft.graph.group"),
            Ok(Route::ListDeleted {
                entity: Entity::Group
            })
        );
        assert_eq!(
            parse(Method::GET, "/directory/deletedItems/x1"),
            Ok(Route::GetDeleted {
                id: "x1".to_owned()
            })
        );
    }

    #[test]
    fn count_wins_over_a_user_key() {
        assert_eq!(parse(Method::GET, "/users/$count"), Ok(Route::CountUsers));
        assert_eq!(parse(Method::GET, "/groups/$count"), Ok(Route::CountGroups));
        assert_eq!(
            parse(Method::PATCH, "/users/$count"),
            Ok(Route::UpdateUser {
                key: "$count".to_owned()
            })
        );
    }

    #[test]
    fn unknown_targets_answer_as_graph() {
        assert_eq!(parse(Method::PUT, "/users"), Err(405));
        assert_eq!(parse(Method::POST, "/users/u1/manager"), Err(405));
        assert_eq!(parse(Method::GET, "/contacts"), Err(400));
        assert_eq!(parse(Method::GET, "/"), Err(400));
        assert_eq!(parse(Method::POST, "/$batch"), Ok(Route::NestedBatch));
        assert_eq!(parse(Method::GET, "/$batch"), Err(405));
    }
}
