//! Audit activities: one ACTIVITY record per change the tests make, in the shape the Audit
//! Activities API returns and PingOne subscriptions deliver with the `ACTIVITY` format
//! (<https://developer.pingidentity.com/pingone-api/platform/audit-activities.html>,
//! <https://developer.pingidentity.com/pingone-api/platform/subscriptions-webhooks.html>).
//!
//! A record: `{id, recordedAt, createdAt, correlationId, action {type, description}, actors
//! {client {id, name, type, environment {id}}}, resources [{type, id, name, environment {id},
//! href, population {id}?}], result {status, description}, _embedded {modifiedAttributes}?}`.
//! `resources` is an array of flat objects, `actors` an object. The OpenAPI file of the PingOne
//! SDK declares no schema for these bodies, so the shape follows the data model of the Audit
//! Activities page.
//!
//! `recordedAt` is strictly increasing from one record to the next (a record that falls in the
//! same millisecond as the one before is put 1 ms later), so that a client polling with
//! `recordedat gt "<last recordedAt seen>"` neither misses nor repeats a record.

use std::collections::VecDeque;

use serde_json::{Value, json};

use crate::webhook::Subscription;
use crate::wire::{now_millis, rfc3339_from_millis};

/// The action types the stand-in records (the `action.type` of a record), from PingOne's
/// audit reporting events
/// (<https://developer.pingidentity.com/pingone-api/platform/reference/audit-reporting-events.html>).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ActionType {
    UserCreated,
    UserUpdated,
    UserDeleted,
    GroupCreated,
    GroupUpdated,
    GroupDeleted,
    /// A user was added to a group.
    MemberOfGroupCreated,
    /// A user was removed from a group.
    MemberOfGroupDeleted,
}

impl ActionType {
    pub const ALL: [Self; 8] = [
        Self::UserCreated,
        Self::UserUpdated,
        Self::UserDeleted,
        Self::GroupCreated,
        Self::GroupUpdated,
        Self::GroupDeleted,
        Self::MemberOfGroupCreated,
        Self::MemberOfGroupDeleted,
    ];

    /// The `action.type` string, e.g. `USER.CREATED`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::UserCreated => "USER.CREATED",
            Self::UserUpdated => "USER.UPDATED",
            Self::UserDeleted => "USER.DELETED",
            Self::GroupCreated => "GROUP.CREATED",
            Self::GroupUpdated => "GROUP.UPDATED",
            Self::GroupDeleted => "GROUP.DELETED",
            Self::MemberOfGroupCreated => "MEMBER_OF_GROUP.CREATED",
            Self::MemberOfGroupDeleted => "MEMBER_OF_GROUP.DELETED",
        }
    }

    /// The `action.description`.
    fn description(self) -> &'static str {
        match self {
            Self::UserCreated => "User Created",
            Self::UserUpdated => "User Updated",
            Self::UserDeleted => "User Deleted",
            Self::GroupCreated => "Group Created",
            Self::GroupUpdated => "Group Updated",
            Self::GroupDeleted => "Group Deleted",
            Self::MemberOfGroupCreated => "Member Of Group Created",
            Self::MemberOfGroupDeleted => "Member Of Group Deleted",
        }
    }
}

/// The `type` of a record's resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ResourceType {
    User,
    Group,
    /// A user's membership of a group: `id` and `name` are the group's, `href` is
    /// `.../users/{userId}/memberOfGroups/{groupId}`.
    MemberOfGroup,
}

impl ResourceType {
    fn as_str(self) -> &'static str {
        match self {
            Self::User => "USER",
            Self::Group => "GROUP",
            Self::MemberOfGroup => "MEMBER_OF_GROUP",
        }
    }
}

/// The resource a change touched.
#[derive(Debug, Clone)]
pub(crate) struct Resource {
    pub kind: ResourceType,
    pub id: String,
    pub name: String,
    /// The path under `/v1/environments/{envId}` (`/users/{id}`, ...).
    pub path: String,
    pub population_id: Option<String>,
}

/// One change to record.
#[derive(Debug, Clone)]
pub(crate) struct Change {
    pub action: ActionType,
    pub resource: Resource,
    /// The `result.description`, e.g. `Created User alice`.
    pub description: String,
    /// For `USER.UPDATED`: the names of the attributes that changed.
    pub modified_attributes: Vec<String>,
}

/// A subscription and the records waiting for delivery to it.
#[derive(Debug)]
pub(crate) struct Queued {
    pub subscription: Subscription,
    pub queue: VecDeque<Value>,
}

/// Every record so far, and the subscriptions' queues.
#[derive(Debug, Default)]
pub(crate) struct Log {
    /// Off while the seed is loaded: seeded data records no activity.
    enabled: bool,
    /// `http://127.0.0.1:PORT`, the base of the records' hrefs.
    base_url: String,
    environment_id: String,
    client_id: String,
    records: Vec<Value>,
    last_recorded_ms: u64,
    pub subscriptions: Vec<Queued>,
}

impl Log {
    /// Starts recording; `client_id` is the worker app named as the actor of every record.
    pub fn enable(&mut self, base_url: &str, environment_id: &str, client_id: &str) {
        self.enabled = true;
        base_url.clone_into(&mut self.base_url);
        environment_id.clone_into(&mut self.environment_id);
        client_id.clone_into(&mut self.client_id);
    }

    /// Every record, oldest first; a record's sequence number is its position plus one.
    pub fn records(&self) -> &[Value] {
        &self.records
    }

    /// Appends the record of `change` and queues it for the subscriptions that want it.
    pub fn record(&mut self, change: Change) {
        if !self.enabled {
            return;
        }
        let ms = now_millis().max(self.last_recorded_ms + 1);
        self.last_recorded_ms = ms;
        let record = self.render(change, &rfc3339_from_millis(ms));
        let action = record["action"]["type"].as_str().unwrap_or_default();
        for q in &mut self.subscriptions {
            if q.subscription
                .included_action_types
                .iter()
                .any(|t| t == action)
            {
                q.queue.push_back(record.clone());
            }
        }
        self.records.push(record);
    }

    fn render(&self, change: Change, at: &str) -> Value {
        let env = json!({"id": self.environment_id});
        let r = &change.resource;
        let mut resource = json!({
            "type": r.kind.as_str(),
            "id": r.id,
            "name": r.name,
            "environment": env,
            "href": format!("{}/v1/environments/{}{}", self.base_url, self.environment_id, r.path),
        });
        if let Some(p) = &r.population_id {
            resource["population"] = json!({"id": p});
        }
        let mut record = json!({
            "id": uuid::Uuid::new_v4().to_string(),
            "recordedAt": at,
            "createdAt": at,
            "correlationId": uuid::Uuid::new_v4().to_string(),
            "action": {"type": change.action.as_str(), "description": change.action.description()},
            "actors": {"client": {
                "id": self.client_id,
                "name": "Worker",
                "type": "CLIENT",
                "environment": env,
            }},
            "resources": [resource],
            "result": {"status": "SUCCESS", "description": change.description},
        });
        if !change.modified_attributes.is_empty() {
            record["_embedded"] = json!({"modifiedAttributes": change.modified_attributes});
        }
        record
    }
}
