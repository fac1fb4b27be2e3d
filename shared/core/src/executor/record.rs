//! Record: what each step's answers change in the connection's state, gathered for the chunk
//! and written (fenced) before the next chunk starts.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde_json::Value;

use super::Key;
use crate::counts::RunCounts;
use crate::directory::{DirectoryError, DirectoryResult, FailureKind, OpOutcome};
use crate::hash::{is_empty_value, user_state_hash};
use crate::model::ObjectKind;
use crate::plan::{RemoveAction, Step};
use crate::planner::PlanExtras;
use crate::state::{Link, LinkOrigin, UnixMillis};

/// What a step that went through changes in the state.
pub(super) enum Recorded {
    /// The object's link, new or changed.
    Link(Box<Link>),
    /// The link is forgotten.
    Unlink,
    Nothing,
}

/// What recording a step reads and counts.
pub(super) struct RecordInputs<'x> {
    /// The plan's starting points of users linked by match (taken once).
    pub extras: &'x mut PlanExtras,
    /// Tenant ids known so far (members added are recorded by tenant id).
    pub resolved: &'x HashMap<Key, String>,
    pub counts: &'x mut RunCounts,
    pub now: UnixMillis,
}

impl Recorded {
    fn link(link: Link) -> Recorded {
        Recorded::Link(Box::new(link))
    }
}

impl Step {
    /// The state change of this step, which went through: `current` is the object's link as
    /// this chunk left it so far, `first` the answer to its first operation.
    pub(super) fn record(
        &self,
        current: Option<Link>,
        first: Option<&DirectoryResult<OpOutcome>>,
        inputs: &mut RecordInputs<'_>,
    ) -> Recorded {
        let now = inputs.now;
        let counts = &mut *inputs.counts;
        let created = match first {
            Some(Ok(OpOutcome::Created { id })) => Some(id.as_str()),
            _ => None,
        };
        match self {
            Step::MatchGroup {
                source_id,
                display_name,
                object_id,
            } => {
                counts.groups_matched += 1;
                Recorded::link(group_link(
                    source_id,
                    object_id,
                    LinkOrigin::Matched,
                    display_name,
                    now,
                ))
            }
            Step::CreateGroup {
                source_id,
                display_name,
                ..
            } => match created {
                Some(id) => {
                    counts.groups_created += 1;
                    Recorded::link(group_link(
                        source_id,
                        id,
                        LinkOrigin::Created,
                        display_name,
                        now,
                    ))
                }
                None => Recorded::Nothing,
            },
            Step::LinkUser {
                source_id,
                object_id,
                ..
            } => {
                let mut applied = inputs.extras.matched.remove(source_id).unwrap_or_default();
                let enabled = applied
                    .remove("accountEnabled")
                    .and_then(|v| v.as_bool())
                    .unwrap_or(true);
                counts.linked += 1;
                Recorded::link(new_link(
                    ObjectKind::User,
                    source_id,
                    object_id,
                    LinkOrigin::Matched,
                    applied,
                    enabled,
                    now,
                ))
            }
            Step::CreateUser {
                source_id,
                properties,
                enabled,
                ..
            } => match created {
                Some(id) => {
                    counts.created += 1;
                    Recorded::link(new_link(
                        ObjectKind::User,
                        source_id,
                        id,
                        LinkOrigin::Created,
                        properties.clone(),
                        *enabled,
                        now,
                    ))
                }
                None => Recorded::Nothing,
            },
            _ => self.record_change(current, inputs),
        }
    }

    /// The steps that change an existing link.
    fn record_change(&self, current: Option<Link>, inputs: &mut RecordInputs<'_>) -> Recorded {
        let now = inputs.now;
        let counts = &mut *inputs.counts;
        match self {
            Step::UpdateUser { changes, .. } => {
                counts.updated += 1;
                update(current, now, |link| {
                    for change in changes {
                        if is_empty_value(&change.new) {
                            link.applied.remove(&change.name);
                        } else {
                            link.applied.insert(change.name.clone(), change.new.clone());
                        }
                    }
                })
            }
            Step::SetEnabled { enabled, .. } => {
                if *enabled {
                    counts.enabled += 1;
                } else {
                    counts.disabled += 1;
                }
                update(current, now, |link| link.enabled = *enabled)
            }
            Step::AssignLicenses { add, remove, .. } => {
                counts.licensed += 1;
                update(current, now, |link| {
                    link.licenses.retain(|l| {
                        !remove.iter().any(|r| r.eq_ignore_ascii_case(&l.sku_id))
                            && !add.iter().any(|a| a.sku_id.eq_ignore_ascii_case(&l.sku_id))
                    });
                    link.licenses.extend(add.iter().cloned());
                    link.licenses.sort();
                })
            }
            Step::SetManager {
                manager_source_id, ..
            } => {
                counts.managers += 1;
                update(current, now, |link| {
                    link.manager = Some(manager_source_id.clone());
                })
            }
            Step::RemoveManager { .. } => {
                counts.managers += 1;
                update(current, now, |link| link.manager = None)
            }
            Step::AddMembers {
                member_source_ids, ..
            } => {
                let Some(link) = current else {
                    return Recorded::Nothing;
                };
                let added: Vec<String> = member_source_ids
                    .iter()
                    .filter_map(|m| inputs.resolved.get(&(ObjectKind::User, m.clone())).cloned())
                    .collect();
                counts.members_added += added.len() as u64;
                update(Some(link), now, |link| {
                    link.members.extend(added);
                    link.members.sort();
                    link.members.dedup();
                })
            }
            Step::RemoveMembers {
                member_object_ids, ..
            } => {
                counts.members_removed += member_object_ids.len() as u64;
                update(current, now, |link| {
                    link.members.retain(|m| !member_object_ids.contains(m));
                })
            }
            Step::RestoreUser { .. } => {
                counts.restored += 1;
                update(current, now, |link| link.deleted_at = None)
            }
            _ => self.record_departure(current, inputs),
        }
    }

    /// Deprovisions. A deleted user's link is kept, marked deleted: the same identity back in
    /// scope within the 30 days Graph keeps the user is restored, not created anew. Any other
    /// departure forgets the link.
    fn record_departure(&self, current: Option<Link>, inputs: &mut RecordInputs<'_>) -> Recorded {
        let Step::Deprovision {
            kind,
            action,
            reason,
            ..
        } = self
        else {
            return Recorded::Nothing;
        };
        let counts = &mut *inputs.counts;
        if !reason.touches_tenant() {
            counts.unlinked += 1;
            return Recorded::Unlink;
        }
        counts.deprovisioned += 1;
        if (*kind, *action) != (ObjectKind::User, RemoveAction::Delete) {
            return Recorded::Unlink;
        }
        match current {
            Some(mut link) => {
                link.deleted_at = Some(inputs.now);
                link.updated_at = inputs.now;
                Recorded::link(link)
            }
            None => Recorded::Nothing,
        }
    }
}

/// The link changed by `change`, its hash recomputed; nothing when there is no link.
fn update(current: Option<Link>, now: UnixMillis, change: impl FnOnce(&mut Link)) -> Recorded {
    match current {
        Some(mut link) => {
            change(&mut link);
            Recorded::link(touch(link, now))
        }
        None => Recorded::Nothing,
    }
}

fn group_link(
    source_id: &str,
    object_id: &str,
    origin: LinkOrigin,
    display_name: &str,
    now: UnixMillis,
) -> Link {
    let applied = BTreeMap::from([(
        "displayName".to_owned(),
        Value::String(display_name.to_owned()),
    )]);
    new_link(
        ObjectKind::Group,
        source_id,
        object_id,
        origin,
        applied,
        true,
        now,
    )
}

pub(super) fn new_link(
    kind: ObjectKind,
    source_id: &str,
    object_id: &str,
    origin: LinkOrigin,
    applied: BTreeMap<String, Value>,
    enabled: bool,
    now: UnixMillis,
) -> Link {
    touch(
        Link::new(kind, source_id, object_id, origin, applied, enabled, now),
        now,
    )
}

/// Recomputes the hash from what the link says is applied, so that it never claims more than
/// the tenant holds.
fn touch(mut link: Link, now: UnixMillis) -> Link {
    link.hash = user_state_hash(&link.applied, link.enabled, &link.licenses);
    link.updated_at = now;
    link
}

/// A failed step: the object, the operation and why.
pub(super) struct Failure {
    pub kind: ObjectKind,
    pub source_id: String,
    pub operation: String,
    pub error: DirectoryError,
}

/// What a chunk leaves to write in the state.
#[derive(Default)]
pub(super) struct ChunkOutcome {
    /// Links new or changed.
    pub changed: HashMap<Key, Link>,
    /// Links to forget.
    pub unlinked: Vec<Key>,
    pub failed: Vec<Failure>,
    /// Objects whose steps went through (their earlier errors are cleared).
    pub succeeded: HashSet<Key>,
    /// An entry per step, for the objects' histories.
    pub history: Vec<crate::state::HistoryEntry>,
}

impl ChunkOutcome {
    /// The step of `key` went through with this state change.
    pub fn apply(&mut self, key: Key, recorded: Recorded, from_chunk: Option<Link>) {
        match recorded {
            Recorded::Link(link) => {
                self.changed.insert(key, *link);
            }
            Recorded::Unlink => self.unlinked.push(key),
            Recorded::Nothing => {
                if let Some(link) = from_chunk {
                    self.changed.insert(key, link);
                }
            }
        }
    }

    pub fn fail(&mut self, step: &Step, error: DirectoryError) {
        let (kind, source_id) = step.subject();
        self.failed.push(Failure {
            kind,
            source_id: source_id.to_owned(),
            operation: step.operation().to_owned(),
            error,
        });
    }

    /// An object the store cannot hold: its failure, and nothing of it written.
    pub fn refuse_record(&mut self, kind: ObjectKind, source_id: &str, reason: &str) {
        self.changed
            .retain(|(k, id), _| !(*k == kind && source_id_matches(id, source_id)));
        self.succeeded
            .retain(|(k, id)| !(*k == kind && source_id_matches(id, source_id)));
        self.failed.push(Failure {
            kind,
            source_id: source_id.to_owned(),
            operation: "record".to_owned(),
            error: DirectoryError::new(
                FailureKind::Other,
                format!("{kind} {source_id:?} cannot be recorded: {reason}"),
            ),
        });
    }

    /// Links to write: the changed ones that are not forgotten.
    pub fn links_to_put(&self) -> Vec<Link> {
        self.changed
            .values()
            .filter(|l| !self.unlinked.contains(&(l.kind, l.source_id.clone())))
            .cloned()
            .collect()
    }

    /// Source ids of `kind` whose errors are cleared: they went through and did not fail.
    pub fn cleared(&self, kind: ObjectKind) -> Vec<String> {
        self.succeeded
            .iter()
            .filter(|(k, id)| {
                *k == kind
                    && !self
                        .failed
                        .iter()
                        .any(|f| f.kind == kind && &f.source_id == id)
            })
            .map(|(_, id)| id.clone())
            .collect()
    }

    pub fn unlinked_ids(&self, kind: ObjectKind) -> Vec<String> {
        self.unlinked
            .iter()
            .filter(|(k, _)| *k == kind)
            .map(|(_, id)| id.clone())
            .collect()
    }
}

/// Whether a stored-object error names `id` (the store shortens an overlong id to its first 80
/// characters and an ellipsis).
fn source_id_matches(id: &str, named: &str) -> bool {
    id == named
        || named
            .strip_suffix('…')
            .is_some_and(|prefix| id.len() > prefix.len() && id.starts_with(prefix))
}

/// A restore Graph refused because another object took the deleted user's UPN or an address
/// since: says which user, and the two ways out.
pub(super) fn explain_refused_restore(step: &Step, error: DirectoryError) -> DirectoryError {
    let Step::RestoreUser {
        user_principal_name,
        object_id,
        deleted_at,
        ..
    } = step
    else {
        return error;
    };
    if error.kind != FailureKind::Conflict {
        return error;
    }
    let property = error.property.as_deref().unwrap_or("a unique property");
    DirectoryError {
        message: format!(
            "user {user_principal_name} (object {object_id}, deleted {}) cannot be restored: \
             another object took its {property} since. Rename or remove that object and the next \
             run restores the user; or delete {object_id} permanently from the tenant's deleted \
             items and the next run creates a new account ({})",
            crate::clock::format_utc(*deleted_at),
            error.message
        ),
        ..error
    }
}
