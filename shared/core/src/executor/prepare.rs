//! Prepare: every step of a chunk becomes the tenant operations that carry it out, or a reason
//! it does not run. The chunk's operations then go to the directory in one `apply` call.

use std::collections::{BTreeMap, HashMap};

use serde_json::Value;

use super::Key;
use crate::directory::{DirectoryError, DirectoryOp};
use crate::model::ObjectKind;
use crate::plan::{RemoveAction, Step};
use crate::planner::PlanExtras;
use crate::state::UnixMillis;

/// Users per `members@odata.bind` PATCH: Graph takes at most 20 references in one request
/// (<https://learn.microsoft.com/graph/api/group-post-members>).
const MEMBERS_PER_PATCH: usize = 20;

/// A step turned into tenant operations.
pub(super) enum Prepared {
    /// Nothing to send (a link of an existing object, a forgotten link).
    Local,
    Ops(Vec<DirectoryOp>),
    /// Cannot run: a step it depends on did not (its failure is recorded already).
    Skip,
    /// Must not run: recorded as the object's failure with this reason.
    Refused(DirectoryError),
}

/// What a step needs to become operations.
pub(super) struct PrepareInputs<'x> {
    /// Tenant ids of the objects known so far, by kind and source id.
    pub resolved: &'x HashMap<Key, String>,
    /// Passwords and known group members from the plan (a password is taken once).
    pub extras: &'x mut PlanExtras,
    /// Group creates an earlier run left in flight: when it sent them.
    pub in_flight: &'x HashMap<String, UnixMillis>,
    /// `passwordProfile.forceChangePasswordNextSignIn` of created users.
    pub force_change_password: bool,
}

impl PrepareInputs<'_> {
    fn object_id(&self, kind: ObjectKind, source_id: &str) -> Option<String> {
        self.resolved.get(&(kind, source_id.to_owned())).cloned()
    }

    /// One operation on the step's user, once the user is resolved.
    fn on_user(&self, source_id: &str, op: impl FnOnce(String) -> DirectoryOp) -> Prepared {
        match self.object_id(ObjectKind::User, source_id) {
            Some(id) => Prepared::Ops(vec![op(id)]),
            None => Prepared::Skip,
        }
    }
}

impl Step {
    /// The tenant operations of this step. Links of existing objects (`MatchGroup`, `LinkUser`)
    /// are [`Prepared::Local`] here; the executor checks first that no other identity holds the
    /// object.
    pub(super) fn operations(&self, inputs: &mut PrepareInputs<'_>) -> Prepared {
        match self {
            Step::MatchGroup { .. } | Step::LinkUser { .. } => Prepared::Local,
            Step::CreateGroup {
                source_id,
                display_name,
                mail_nickname,
                kind,
            } => Prepared::Ops(vec![DirectoryOp::CreateGroup {
                display_name: display_name.clone(),
                mail_nickname: mail_nickname.clone(),
                kind: *kind,
                description: None,
                earlier_attempt: inputs.in_flight.get(source_id).copied(),
            }]),
            Step::CreateUser {
                source_id,
                properties,
                enabled,
                ..
            } => {
                let mut properties = properties.clone();
                properties.insert("accountEnabled".into(), Value::Bool(*enabled));
                let password = inputs
                    .extras
                    .passwords
                    .remove(source_id)
                    .unwrap_or_else(crate::mapping::generate_password);
                Prepared::Ops(vec![DirectoryOp::CreateUser {
                    properties,
                    password,
                    force_change_password: inputs.force_change_password,
                }])
            }
            Step::RestoreUser { object_id, .. } => Prepared::Ops(vec![DirectoryOp::RestoreUser {
                id: object_id.clone(),
            }]),
            Step::UpdateUser {
                source_id, changes, ..
            } => inputs.on_user(source_id, |id| DirectoryOp::UpdateUser {
                id,
                properties: changes
                    .iter()
                    .map(|c| (c.name.clone(), c.new.clone()))
                    .collect(),
            }),
            Step::SetEnabled {
                source_id, enabled, ..
            } => inputs.on_user(source_id, |id| set_enabled(id, *enabled)),
            Step::AssignLicenses {
                source_id,
                add,
                remove,
                ..
            } => inputs.on_user(source_id, |id| DirectoryOp::AssignLicenses {
                id,
                add: add.clone(),
                remove: remove.clone(),
            }),
            Step::SetManager {
                source_id,
                manager_source_id,
                ..
            } => match (
                inputs.object_id(ObjectKind::User, source_id),
                inputs.object_id(ObjectKind::User, manager_source_id),
            ) {
                (Some(id), Some(manager_id)) => {
                    Prepared::Ops(vec![DirectoryOp::SetManager { id, manager_id }])
                }
                _ => Prepared::Skip,
            },
            Step::RemoveManager { source_id, .. } => {
                inputs.on_user(source_id, |id| DirectoryOp::RemoveManager { id })
            }
            Step::AddMembers {
                group_source_id,
                member_source_ids,
                ..
            } => add_members(group_source_id, member_source_ids, inputs),
            Step::RemoveMembers {
                group_source_id,
                member_object_ids,
                ..
            } => match inputs.object_id(ObjectKind::Group, group_source_id) {
                Some(group_id) => Prepared::Ops(
                    member_object_ids
                        .iter()
                        .map(|m| DirectoryOp::RemoveMember {
                            group_id: group_id.clone(),
                            member_id: m.clone(),
                        })
                        .collect(),
                ),
                None => Prepared::Skip,
            },
            Step::Deprovision {
                kind,
                object_id,
                action,
                reason,
                ..
            } => deprovision(*kind, object_id, *action, reason.touches_tenant()),
        }
    }
}

fn set_enabled(id: String, enabled: bool) -> DirectoryOp {
    DirectoryOp::UpdateUser {
        id,
        properties: BTreeMap::from([("accountEnabled".to_owned(), Value::Bool(enabled))]),
    }
}

/// Members to add to a group: those resolved and not in the group already, one operation per
/// PATCH so that the directory can send a large group's PATCHes concurrently.
fn add_members(
    group_source_id: &str,
    member_source_ids: &[String],
    inputs: &PrepareInputs<'_>,
) -> Prepared {
    let Some(group_id) = inputs.object_id(ObjectKind::Group, group_source_id) else {
        return Prepared::Skip;
    };
    let existing = inputs.extras.existing_members.get(group_source_id);
    let member_ids: Vec<String> = member_source_ids
        .iter()
        .filter_map(|m| inputs.object_id(ObjectKind::User, m))
        .filter(|m| !existing.is_some_and(|e| e.contains(m)))
        .collect();
    Prepared::Ops(
        member_ids
            .chunks(MEMBERS_PER_PATCH)
            .map(|chunk| DirectoryOp::AddMembers {
                group_id: group_id.clone(),
                member_ids: chunk.to_vec(),
            })
            .collect(),
    )
}

/// A linked object leaving: disabled or deleted. A stale link whose object another source id
/// holds now, or whose deleted object Graph has purged, is only forgotten; groups have no
/// enabled flag, so "disable" leaves a group as it is.
fn deprovision(
    kind: ObjectKind,
    object_id: &str,
    action: RemoveAction,
    touches_tenant: bool,
) -> Prepared {
    if !touches_tenant {
        return Prepared::Local;
    }
    let id = object_id.to_owned();
    match (kind, action) {
        (ObjectKind::User, RemoveAction::Disable) => Prepared::Ops(vec![set_enabled(id, false)]),
        (ObjectKind::User, RemoveAction::Delete) => {
            Prepared::Ops(vec![DirectoryOp::DeleteUser { id }])
        }
        (ObjectKind::Group, RemoveAction::Delete) => {
            Prepared::Ops(vec![DirectoryOp::DeleteGroup { id }])
        }
        (ObjectKind::Group, RemoveAction::Disable) => Prepared::Local,
    }
}

/// A chunk's operations in one list for one `apply` call, and where each step's operations sit
/// in it.
pub(super) struct Batch {
    pub ops: Vec<DirectoryOp>,
    /// Per step: the range of its operations' results (`None`: skipped).
    pub spans: Vec<Option<std::ops::Range<usize>>>,
    /// Steps refused before sending, by index.
    pub refused: HashMap<usize, DirectoryError>,
}

impl Batch {
    pub fn of(prepared: Vec<Prepared>) -> Batch {
        let mut batch = Batch {
            ops: Vec::new(),
            spans: Vec::with_capacity(prepared.len()),
            refused: HashMap::new(),
        };
        for (index, p) in prepared.into_iter().enumerate() {
            let start = batch.ops.len();
            let span = match p {
                Prepared::Ops(step_ops) => {
                    batch.ops.extend(step_ops);
                    Some(start..batch.ops.len())
                }
                Prepared::Local => Some(start..start),
                Prepared::Skip => None,
                Prepared::Refused(error) => {
                    batch.refused.insert(index, error);
                    Some(start..start)
                }
            };
            batch.spans.push(span);
        }
        batch
    }
}

/// The refusal of a link to a tenant object that another source id of the connection holds: a
/// tenant object is linked to at most one source identity.
pub(super) fn linked_elsewhere(
    kind: ObjectKind,
    source_id: &str,
    object_id: &str,
    holder: &str,
) -> DirectoryError {
    let what = match kind {
        ObjectKind::User => "user",
        ObjectKind::Group => "group",
    };
    DirectoryError::new(
        crate::directory::FailureKind::Conflict,
        format!(
            "source {what} {source_id:?} matches tenant {what} {object_id}, which is already linked to source id {holder:?}; \
             it is not linked twice. Fix the source (two identities share the match value) or the match attribute"
        ),
    )
}
