//! The environment's state (populations, users, groups, memberships) and how it renders as
//! PingOne JSON. A dynamic group's members are the users its `userFilter` matches
//! (<https://developer.pingidentity.com/pingone-api/platform/users/group-membership.html>).
//!
//! Every user and group gets a sequence number when created; lists are ordered by it, so paging
//! stays stable while users are added, updated or deleted.
//!
//! Every change after the seed is loaded appends one audit record ([`crate::audit`]).

use std::collections::{BTreeSet, HashSet, VecDeque};

use serde_json::{Map, Value, json};

use crate::PingOneSandboxError;
use crate::audit::{ActionType, Change, Log, Resource, ResourceType};
use crate::filter::{self, Expr};
use crate::seed::{GroupSeed, PopulationSeed, Seed, UserSeed};
use crate::wire::now_rfc3339;

#[derive(Debug, Clone)]
pub(crate) struct User {
    pub seq: u64,
    pub data: UserSeed,
    pub created_at: String,
    pub updated_at: String,
}

#[derive(Debug, Clone)]
pub(crate) struct Group {
    pub seq: u64,
    pub data: GroupSeed,
    /// The parsed `userFilter` of a dynamic group.
    pub dynamic: Option<Expr>,
    pub created_at: String,
    pub updated_at: String,
}

#[derive(Debug)]
pub(crate) struct Store {
    pub environment_id: String,
    pub populations: Vec<PopulationSeed>,
    pub users: Vec<User>,
    pub groups: Vec<Group>,
    pub audit: Log,
    next_seq: u64,
}

impl Store {
    pub fn from_seed(seed: &Seed) -> Result<Self, PingOneSandboxError> {
        let mut store = Self {
            environment_id: seed.environment_id.clone(),
            populations: seed.populations.clone(),
            users: Vec::new(),
            groups: Vec::new(),
            audit: Log::default(),
            next_seq: 0,
        };
        for user in &seed.users {
            store.add_user(user.clone());
        }
        // Groups first without nesting, so that nesting may refer to any seeded group.
        for group in &seed.groups {
            store.add_group(GroupSeed {
                member_group_ids: Vec::new(),
                ..group.clone()
            })?;
        }
        for group in &seed.groups {
            for child in &group.member_group_ids {
                store.nest_group(&group.id, child)?;
            }
        }
        Ok(store)
    }

    fn seq(&mut self) -> u64 {
        self.next_seq += 1;
        self.next_seq
    }

    pub fn add_user(&mut self, data: UserSeed) -> String {
        let now = now_rfc3339();
        let seq = self.seq();
        let id = data.id.clone();
        let change = Change {
            action: ActionType::UserCreated,
            resource: user_resource(&data),
            description: format!("Created User {}", data.username),
            modified_attributes: Vec::new(),
        };
        self.users.push(User {
            seq,
            data,
            created_at: now.clone(),
            updated_at: now,
        });
        self.audit.record(change);
        id
    }

    pub fn user(&self, id: &str) -> Option<&User> {
        self.users.iter().find(|u| u.data.id == id)
    }

    pub fn group(&self, id: &str) -> Option<&Group> {
        self.groups.iter().find(|g| g.data.id == id)
    }

    fn group_mut(&mut self, id: &str) -> Result<&mut Group, PingOneSandboxError> {
        self.groups
            .iter_mut()
            .find(|g| g.data.id == id)
            .ok_or_else(|| PingOneSandboxError::UnknownGroup(id.to_owned()))
    }

    /// Changes a user; records `USER.UPDATED` with the names of the top-level attributes of the
    /// user's JSON that changed as `_embedded.modifiedAttributes`.
    pub fn update_user(
        &mut self,
        id: &str,
        change: impl FnOnce(&mut UserSeed),
    ) -> Result<(), PingOneSandboxError> {
        let index = self
            .users
            .iter()
            .position(|u| u.data.id == id)
            .ok_or_else(|| PingOneSandboxError::UnknownUser(id.to_owned()))?;
        let before = self.user_json(&self.users[index]);
        let user = &mut self.users[index];
        change(&mut user.data);
        // The id is the user's identity: a change cannot move it.
        id.clone_into(&mut user.data.id);
        user.updated_at = now_rfc3339();
        let user = &self.users[index];
        let modified = changed_attributes(&before, &self.user_json(user));
        let description = if modified.is_empty() {
            format!("Updated User {}", user.data.username)
        } else {
            format!(
                "Updated {} for User {}",
                modified.join(", "),
                user.data.username
            )
        };
        let change = Change {
            action: ActionType::UserUpdated,
            resource: user_resource(&user.data),
            description,
            modified_attributes: modified,
        };
        self.audit.record(change);
        Ok(())
    }

    /// Removes the user and its direct memberships.
    pub fn delete_user(&mut self, id: &str) -> Result<(), PingOneSandboxError> {
        let index = self
            .users
            .iter()
            .position(|u| u.data.id == id)
            .ok_or_else(|| PingOneSandboxError::UnknownUser(id.to_owned()))?;
        let user = self.users.remove(index);
        for g in &mut self.groups {
            g.data.member_user_ids.retain(|m| m != id);
        }
        self.audit.record(Change {
            action: ActionType::UserDeleted,
            resource: user_resource(&user.data),
            description: format!("Deleted User {}", user.data.username),
            modified_attributes: Vec::new(),
        });
        Ok(())
    }

    pub fn add_group(&mut self, data: GroupSeed) -> Result<String, PingOneSandboxError> {
        if self.group(&data.id).is_some() {
            return Err(PingOneSandboxError::DuplicateGroup(data.id));
        }
        let dynamic = match &data.user_filter {
            Some(f) => Some(filter::parse(f, &filter::DYNAMIC_GROUP).map_err(|e| {
                PingOneSandboxError::InvalidUserFilter {
                    group: data.id.clone(),
                    message: e.0,
                }
            })?),
            None => None,
        };
        if dynamic.is_some() && !data.member_user_ids.is_empty() {
            return Err(PingOneSandboxError::DynamicGroup(data.id));
        }
        let known: HashSet<&str> = self.users.iter().map(|u| u.data.id.as_str()).collect();
        if let Some(missing) = data
            .member_user_ids
            .iter()
            .find(|m| !known.contains(m.as_str()))
        {
            return Err(PingOneSandboxError::UnknownUser(missing.clone()));
        }
        let children = data.member_group_ids.clone();
        let members = data.member_user_ids.clone();
        let id = data.id.clone();
        let now = now_rfc3339();
        let seq = self.seq();
        self.groups.push(Group {
            seq,
            data: GroupSeed {
                member_group_ids: Vec::new(),
                ..data
            },
            dynamic,
            created_at: now.clone(),
            updated_at: now,
        });
        self.record_group(ActionType::GroupCreated, &id, "Created");
        for user_id in &members {
            self.record_membership(ActionType::MemberOfGroupCreated, &id, user_id);
        }
        for child in &children {
            self.nest_group(&id, child)?;
        }
        Ok(id)
    }

    /// Changes a group's attributes (name, description, population, externalId, userFilter);
    /// its members and nested groups stay as they are.
    pub fn update_group(
        &mut self,
        id: &str,
        change: impl FnOnce(&mut GroupSeed),
    ) -> Result<(), PingOneSandboxError> {
        let group = self.group_mut(id)?;
        let mut data = group.data.clone();
        change(&mut data);
        id.clone_into(&mut data.id);
        data.member_user_ids.clone_from(&group.data.member_user_ids);
        data.member_group_ids
            .clone_from(&group.data.member_group_ids);
        let dynamic = match &data.user_filter {
            Some(f) => Some(filter::parse(f, &filter::DYNAMIC_GROUP).map_err(|e| {
                PingOneSandboxError::InvalidUserFilter {
                    group: id.to_owned(),
                    message: e.0,
                }
            })?),
            None => None,
        };
        if dynamic.is_some() && !data.member_user_ids.is_empty() {
            return Err(PingOneSandboxError::DynamicGroup(id.to_owned()));
        }
        group.data = data;
        group.dynamic = dynamic;
        group.updated_at = now_rfc3339();
        self.record_group(ActionType::GroupUpdated, id, "Updated");
        Ok(())
    }

    /// Deletes a group, its memberships and its nestings (in either direction).
    pub fn delete_group(&mut self, id: &str) -> Result<(), PingOneSandboxError> {
        let index = self
            .groups
            .iter()
            .position(|g| g.data.id == id)
            .ok_or_else(|| PingOneSandboxError::UnknownGroup(id.to_owned()))?;
        // Recorded first, while the group still has its name.
        self.record_group(ActionType::GroupDeleted, id, "Deleted");
        self.groups.remove(index);
        for g in &mut self.groups {
            g.data.member_group_ids.retain(|m| m != id);
        }
        Ok(())
    }

    pub fn add_member(&mut self, group_id: &str, user_id: &str) -> Result<(), PingOneSandboxError> {
        if self.user(user_id).is_none() {
            return Err(PingOneSandboxError::UnknownUser(user_id.to_owned()));
        }
        let group = self.group_mut(group_id)?;
        if group.dynamic.is_some() {
            return Err(PingOneSandboxError::DynamicGroup(group_id.to_owned()));
        }
        if !group.data.member_user_ids.iter().any(|m| m == user_id) {
            group.data.member_user_ids.push(user_id.to_owned());
            group.updated_at = now_rfc3339();
            self.record_membership(ActionType::MemberOfGroupCreated, group_id, user_id);
        }
        Ok(())
    }

    /// Removes a user's direct membership of a static group.
    pub fn remove_member(
        &mut self,
        group_id: &str,
        user_id: &str,
    ) -> Result<(), PingOneSandboxError> {
        if self.user(user_id).is_none() {
            return Err(PingOneSandboxError::UnknownUser(user_id.to_owned()));
        }
        let group = self.group_mut(group_id)?;
        let before = group.data.member_user_ids.len();
        group.data.member_user_ids.retain(|m| m != user_id);
        if group.data.member_user_ids.len() == before {
            return Err(PingOneSandboxError::NotAMember {
                group: group_id.to_owned(),
                member: user_id.to_owned(),
            });
        }
        group.updated_at = now_rfc3339();
        self.record_membership(ActionType::MemberOfGroupDeleted, group_id, user_id);
        Ok(())
    }

    /// Nests `child` directly in `parent`; refuses a nesting that would make a cycle.
    pub fn nest_group(&mut self, parent: &str, child: &str) -> Result<(), PingOneSandboxError> {
        if self.group(child).is_none() {
            return Err(PingOneSandboxError::UnknownGroup(child.to_owned()));
        }
        if parent == child || self.ancestors(&[parent]).contains(child) {
            return Err(PingOneSandboxError::NestingCycle {
                parent: parent.to_owned(),
                child: child.to_owned(),
            });
        }
        let group = self.group_mut(parent)?;
        if !group.data.member_group_ids.iter().any(|m| m == child) {
            group.data.member_group_ids.push(child.to_owned());
            group.updated_at = now_rfc3339();
            // PingOne does not document which event nesting raises; GROUP.UPDATED of the
            // nested group is the stand-in's choice.
            self.record_group(ActionType::GroupUpdated, child, "Updated");
        }
        Ok(())
    }

    /// Takes `child` out of `parent`.
    pub fn unnest_group(&mut self, parent: &str, child: &str) -> Result<(), PingOneSandboxError> {
        if self.group(child).is_none() {
            return Err(PingOneSandboxError::UnknownGroup(child.to_owned()));
        }
        let group = self.group_mut(parent)?;
        let before = group.data.member_group_ids.len();
        group.data.member_group_ids.retain(|m| m != child);
        if group.data.member_group_ids.len() == before {
            return Err(PingOneSandboxError::NotAMember {
                group: parent.to_owned(),
                member: child.to_owned(),
            });
        }
        group.updated_at = now_rfc3339();
        // Undocumented in PingOne, like nesting: GROUP.UPDATED of the nested group.
        self.record_group(ActionType::GroupUpdated, child, "Updated");
        Ok(())
    }

    /// Records `action` on group `id` ("{verb} Group {name}").
    fn record_group(&mut self, action: ActionType, id: &str, verb: &str) {
        let Some(g) = self.group(id) else { return };
        let change = Change {
            action,
            resource: Resource {
                kind: ResourceType::Group,
                id: id.to_owned(),
                name: g.data.name.clone(),
                path: format!("/groups/{id}"),
                population_id: None,
            },
            description: format!("{verb} Group {}", g.data.name),
            modified_attributes: Vec::new(),
        };
        self.audit.record(change);
    }

    /// Records a membership change of `user_id` in `group_id`.
    fn record_membership(&mut self, action: ActionType, group_id: &str, user_id: &str) {
        let Some(g) = self.group(group_id) else {
            return;
        };
        let verb = if action == ActionType::MemberOfGroupDeleted {
            "Deleted"
        } else {
            "Created"
        };
        let change = Change {
            action,
            resource: Resource {
                kind: ResourceType::MemberOfGroup,
                id: group_id.to_owned(),
                name: g.data.name.clone(),
                path: format!("/users/{user_id}/memberOfGroups/{group_id}"),
                population_id: None,
            },
            description: format!("{verb} Member Of Group {}", g.data.name),
            modified_attributes: Vec::new(),
        };
        self.audit.record(change);
    }

    /// The groups `child` is nested in directly, in group order.
    pub fn parents(&self, child: &str) -> Vec<&Group> {
        self.groups
            .iter()
            .filter(|g| g.data.member_group_ids.iter().any(|m| m == child))
            .collect()
    }

    /// `starts` and every group they are nested in, directly or not.
    fn ancestors(&self, starts: &[&str]) -> BTreeSet<String> {
        let mut seen: BTreeSet<String> = BTreeSet::new();
        let mut queue: VecDeque<String> = starts.iter().map(|s| (*s).to_owned()).collect();
        while let Some(id) = queue.pop_front() {
            if !seen.insert(id.clone()) {
                continue;
            }
            queue.extend(self.parents(&id).into_iter().map(|p| p.data.id.clone()));
        }
        seen
    }

    /// The groups a user is a direct member of: static memberships and dynamic groups whose
    /// filter matches `user_json`.
    fn direct_groups(&self, user_id: &str, user_json: &Value) -> Vec<&str> {
        let no_groups = |_: &str, _: bool| false;
        self.groups
            .iter()
            .filter(|g| match &g.dynamic {
                Some(f) => f.matches(user_json, &no_groups),
                None => g.data.member_user_ids.iter().any(|m| m == user_id),
            })
            .map(|g| g.data.id.as_str())
            .collect()
    }

    /// Every group the user is a member of, in group order, each with whether the membership is
    /// direct (a static membership or a dynamic group's filter) or through nesting.
    pub fn user_groups(&self, user: &User) -> Vec<(&Group, bool)> {
        let json = self.user_json(user);
        let direct = self.direct_groups(&user.data.id, &json);
        let all = self.ancestors(&direct);
        self.groups
            .iter()
            .filter(|g| all.contains(&g.data.id))
            .map(|g| (g, direct.contains(&g.data.id.as_str())))
            .collect()
    }

    /// `memberOfGroups[id eq group_id (and type eq "DIRECT")]` for a user.
    pub fn user_in_group(
        &self,
        user: &User,
        user_json: &Value,
        group_id: &str,
        direct: bool,
    ) -> bool {
        let groups = self.direct_groups(&user.data.id, user_json);
        if direct {
            groups.contains(&group_id)
        } else {
            self.ancestors(&groups).contains(group_id)
        }
    }

    /// `memberOfGroups[id eq parent (and type eq "DIRECT")]` for a group.
    pub fn group_in_group(&self, child: &str, parent: &str, direct: bool) -> bool {
        let parents: Vec<&str> = self
            .parents(child)
            .iter()
            .map(|p| p.data.id.as_str())
            .collect();
        if direct {
            parents.contains(&parent)
        } else {
            self.ancestors(&parents).contains(parent)
        }
    }

    pub fn user_json(&self, u: &User) -> Value {
        let d = &u.data;
        let mut name = Map::new();
        name.insert("given".into(), json!(d.given_name));
        name.insert("family".into(), json!(d.family_name));
        if let Some(f) = &d.formatted_name {
            name.insert("formatted".into(), json!(f));
        }
        // Custom attributes first, so that a custom attribute cannot hide a standard one.
        let mut obj = d.custom.clone();
        obj.insert("id".into(), json!(d.id));
        obj.insert("environment".into(), json!({"id": self.environment_id}));
        obj.insert("username".into(), json!(d.username));
        obj.insert("email".into(), json!(d.email));
        obj.insert("name".into(), Value::Object(name));
        if let Some(t) = &d.title {
            obj.insert("title".into(), json!(t));
        }
        obj.insert("enabled".into(), json!(d.enabled));
        obj.insert("population".into(), json!({"id": d.population_id}));
        if let Some(x) = &d.external_id {
            obj.insert("externalId".into(), json!(x));
        }
        obj.insert("createdAt".into(), json!(u.created_at));
        obj.insert("updatedAt".into(), json!(u.updated_at));
        obj.insert("lifecycle".into(), json!({"status": "ACCOUNT_OK"}));
        Value::Object(obj)
    }

    pub fn group_json(&self, g: &Group) -> Value {
        let d = &g.data;
        let users = match &g.dynamic {
            Some(f) => {
                let no_groups = |_: &str, _: bool| false;
                self.users
                    .iter()
                    .filter(|u| f.matches(&self.user_json(u), &no_groups))
                    .count()
            }
            None => d.member_user_ids.len(),
        };
        let mut obj = Map::new();
        obj.insert("id".into(), json!(d.id));
        obj.insert("environment".into(), json!({"id": self.environment_id}));
        obj.insert("name".into(), json!(d.name));
        if let Some(v) = &d.description {
            obj.insert("description".into(), json!(v));
        }
        if let Some(v) = &d.population_id {
            obj.insert("population".into(), json!({"id": v}));
        }
        if let Some(v) = &d.external_id {
            obj.insert("externalId".into(), json!(v));
        }
        if let Some(v) = &d.user_filter {
            obj.insert("userFilter".into(), json!(v));
        }
        obj.insert(
            "directMemberCounts".into(),
            json!({"users": users, "groups": d.member_group_ids.len()}),
        );
        obj.insert("createdAt".into(), json!(g.created_at));
        obj.insert("updatedAt".into(), json!(g.updated_at));
        Value::Object(obj)
    }
}

/// A user as the resource of a record: `name` is the username.
fn user_resource(u: &UserSeed) -> Resource {
    Resource {
        kind: ResourceType::User,
        id: u.id.clone(),
        name: u.username.clone(),
        path: format!("/users/{}", u.id),
        population_id: Some(u.population_id.clone()),
    }
}

/// The top-level attributes whose values differ between `before` and `after` (`updatedAt`
/// aside), in the order of `after`, then those `after` lost.
fn changed_attributes(before: &Value, after: &Value) -> Vec<String> {
    let (Some(b), Some(a)) = (before.as_object(), after.as_object()) else {
        return Vec::new();
    };
    let changed = a
        .iter()
        .filter(|(k, v)| b.get(k.as_str()) != Some(v))
        .map(|(k, _)| k);
    let lost = b.keys().filter(|k| !a.contains_key(k.as_str()));
    changed
        .chain(lost)
        .filter(|k| k.as_str() != "updatedAt")
        .cloned()
        .collect()
}
