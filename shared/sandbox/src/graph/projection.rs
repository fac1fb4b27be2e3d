//! What a user or group looks like in a response: default properties, `$select`, and the
//! `@odata.context` entity set.

use serde_json::{Map, Value};

use super::request::{Query, schema_error};
use crate::tenant::Obj;
use crate::wire::GraphError;

/// The two kinds of directory object the sandbox holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Entity {
    User,
    Group,
}

impl Entity {
    /// The entity type's name in the schema (`user`, `group`).
    pub(super) fn schema_name(self) -> &'static str {
        match self {
            Entity::User => "user",
            Entity::Group => "group",
        }
    }

    /// The entity set (`users`, `groups`).
    pub(super) fn set_name(self) -> &'static str {
        match self {
            Entity::User => "users",
            Entity::Group => "groups",
        }
    }

    /// An object of this kind as Graph returns it, `$select` applied.
    pub(super) fn project(self, obj: &Obj, select: Option<&[String]>) -> Map<String, Value> {
        match self {
            Entity::User => project_user(obj, select),
            Entity::Group => project_group(obj, select),
        }
    }

    /// The `@odata.type` of an object of this kind among directory objects.
    pub(super) fn odata_type(self) -> &'static str {
        match self {
            Entity::User => "#microsoft.graph.user",
            Entity::Group => "#microsoft.graph.group",
        }
    }

    /// An object of this kind in a collection of directory objects (group members, an expanded
    /// manager): its `@odata.type`, then its properties with `$select` applied.
    pub(super) fn directory_object(self, obj: &Obj, select: Option<&[String]>) -> Value {
        let mut m = Map::new();
        m.insert(
            "@odata.type".into(),
            Value::String(self.odata_type().to_owned()),
        );
        m.extend(self.project(obj, select));
        Value::Object(m)
    }
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

pub(super) fn project_user(obj: &Obj, select: Option<&[String]>) -> Map<String, Value> {
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

pub(super) fn project_group(obj: &Obj, select: Option<&[String]>) -> Map<String, Value> {
    match select {
        Some(sel) => {
            let refs: Vec<&str> = sel.iter().map(String::as_str).collect();
            project(obj, &refs)
        }
        None => project(obj, GROUP_DEFAULT),
    }
}

/// `$select` list, checked against the schema (docs/graph-behaviour.md#queries-and-filters).
pub(super) fn select_list(
    query: &Query,
    entity: Entity,
) -> Result<Option<Vec<String>>, GraphError> {
    let Some(sel) = query.get("$select") else {
        return Ok(None);
    };
    let props: Vec<String> = sel
        .split(',')
        .map(|p| p.trim().to_owned())
        .filter(|p| !p.is_empty())
        .collect();
    let refs: Vec<&str> = props.iter().map(String::as_str).collect();
    crate::schema::validate_select(entity.schema_name(), &refs).map_err(|v| schema_error(&v))?;
    Ok(Some(props))
}

/// The entity set as `@odata.context` names it: `users` or, with `$select`, `users(id,mail)`.
pub(super) fn context_entity_set(entity: Entity, select: Option<&[String]>) -> String {
    let set = entity.set_name();
    match select {
        Some(sel) => format!("{set}({})", sel.join(",")),
        None => set.to_owned(),
    }
}
