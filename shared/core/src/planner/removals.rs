//! Removals: linked objects that left the source or the rule's scope are deprovisioned — by the
//! sweep of a complete snapshot (mark and sweep), or, in a focused plan, when they are named.

use std::collections::{BTreeSet, HashSet};

use serde_json::Value;

use super::draft::Draft;
use super::{Focus, Kept, PlanError, Planner};
use crate::model::{ObjectKind, SourceGroup};
use crate::plan::{DeprovisionReason, RemoveAction, Step};
use crate::rule::{GroupSettings, ManagerReference};
use crate::state::{Link, LinkPages};

/// Links read per page by the sweep.
const SWEEP_PAGE: usize = 1000;

impl Planner<'_> {
    /// The plan's deprovisions, when the rule allows them: a focused plan's named departures, and
    /// the sweep of a complete snapshot.
    pub(super) async fn plan_removals(&self, draft: &mut Draft) -> Result<(), PlanError> {
        if !self.rule.preferences.allow_deprovision {
            return Ok(());
        }
        if let Some(focus) = self.focus {
            self.plan_focused_removals(focus, draft).await?;
        }
        if draft.snapshot_complete {
            self.sweep_users(draft).await?;
            if draft.groups_complete && self.rule.groups.enabled {
                self.sweep_groups(draft).await?;
            }
        }
        Ok(())
    }

    /// The named identities that are linked but were not planned: gone from the source or out of
    /// scope now. Deprovisioned like a sweep would (held back ones are left alone).
    async fn plan_focused_removals(
        &self,
        focus: &Focus,
        draft: &mut Draft,
    ) -> Result<(), PlanError> {
        let action = self.rule.preferences.remove_action;
        let departed: Vec<String> = focus
            .users
            .iter()
            .filter(|id| !draft.kept.contains_key(*id) && !draft.protected.contains(*id))
            .cloned()
            .collect();
        let held = held_objects(draft);
        let mut links = self
            .state
            .get_links(self.connection, ObjectKind::User, &departed)
            .await?;
        // Deleted already; the sweep forgets them once Graph has purged them.
        links.retain(|link| !link.is_deleted());
        links.sort_by(|a, b| a.source_id.cmp(&b.source_id));
        draft.steps.removals.extend(
            links
                .iter()
                .filter_map(|link| user_departure(link, action, &held)),
        );
        let settings = &self.rule.groups;
        if !settings.enabled {
            return Ok(());
        }
        let wanted = groups_in_scope(settings, &draft.source_groups);
        let departed: Vec<String> = focus
            .groups
            .iter()
            .filter(|id| !wanted.contains(id.as_str()) && !draft.protected_groups.contains(*id))
            .cloned()
            .collect();
        let mut links = self
            .state
            .get_links(self.connection, ObjectKind::Group, &departed)
            .await?;
        links.sort_by(|a, b| a.source_id.cmp(&b.source_id));
        for link in links {
            draft.steps.removals.push(deprovision_step(
                &link,
                settings.remove_action,
                DeprovisionReason::LeftScope,
            ));
        }
        Ok(())
    }

    /// Linked users not in the complete snapshot (or out of scope now): deprovisioned. A user
    /// deleted by an earlier deprovision keeps its link while Graph can restore it, and the link
    /// is forgotten after.
    ///
    /// The sweep lists ids and reads whole links only for the ids the snapshot did not keep: in
    /// a run where little changed, that is almost none of them.
    async fn sweep_users(&self, draft: &mut Draft) -> Result<(), PlanError> {
        let action = self.rule.preferences.remove_action;
        // Built when the first departure is found: most runs have none.
        let mut held: Option<HashSet<String>> = None;
        let mut after: Option<String> = None;
        loop {
            let ids = self
                .state
                .list_link_ids(
                    self.connection,
                    ObjectKind::User,
                    after.as_deref(),
                    SWEEP_PAGE,
                )
                .await?;
            let Some(last) = ids.last().cloned() else {
                break;
            };
            after = Some(last);
            let departed: Vec<String> = ids
                .into_iter()
                .filter(|id| !draft.kept.contains_key(id) && !draft.protected.contains(id))
                .collect();
            if departed.is_empty() {
                continue;
            }
            let mut links = self
                .state
                .get_links(self.connection, ObjectKind::User, &departed)
                .await?;
            links.sort_by(|a, b| a.source_id.cmp(&b.source_id));
            let held = held.get_or_insert_with(|| held_objects(draft));
            for link in &links {
                let step = if link.is_deleted() {
                    (!link.restorable_at(self.now)).then(|| {
                        deprovision_step(link, action, DeprovisionReason::RestoreWindowPassed)
                    })
                } else {
                    user_departure(link, action, held)
                };
                draft.steps.removals.extend(step);
            }
        }
        Ok(())
    }

    /// Linked groups not in the complete group snapshot (or no longer among `groups.only`).
    async fn sweep_groups(&self, draft: &mut Draft) -> Result<(), PlanError> {
        let settings = &self.rule.groups;
        let wanted = groups_in_scope(settings, &draft.source_groups);
        let mut pages = LinkPages::new(self.state, self.connection, ObjectKind::Group, SWEEP_PAGE);
        while let Some(page) = pages.next_page().await? {
            for link in page.iter().filter(|l| {
                !wanted.contains(l.source_id.as_str())
                    && !draft.protected_groups.contains(&l.source_id)
            }) {
                draft.steps.removals.push(deprovision_step(
                    link,
                    settings.remove_action,
                    DeprovisionReason::LeftScope,
                ));
            }
        }
        Ok(())
    }

    /// A focused plan's users are planned against the rest of the rule's identities as they were
    /// last applied: managers (referenced by id) and members of the named groups that are linked
    /// already join `kept` as context, so that their references resolve and a group's other
    /// managed members are not taken for departures. Named users never join as context: not
    /// planned means out of scope, gone or held back.
    pub(super) async fn add_linked_context(
        &self,
        focus: &Focus,
        draft: &mut Draft,
    ) -> Result<(), PlanError> {
        let mut wanted: BTreeSet<String> = BTreeSet::new();
        if self.rule.manager.reference == ManagerReference::Id {
            wanted.extend(
                draft
                    .kept
                    .values()
                    .filter_map(|k| k.manager_ref.clone().flatten()),
            );
        }
        for group in &draft.source_groups {
            wanted.extend(group.members.iter().cloned());
        }
        let wanted: Vec<String> = wanted
            .into_iter()
            .filter(|id| {
                !draft.kept.contains_key(id)
                    && !focus.users.contains(id)
                    && !draft.protected.contains(id)
            })
            .collect();
        for chunk in wanted.chunks(self.page_size.max(1)) {
            for link in self
                .state
                .get_links(self.connection, ObjectKind::User, chunk)
                .await?
                .into_iter()
                // A user this connection deleted is nobody's member or manager.
                .filter(|link| !link.is_deleted())
            {
                draft
                    .kept
                    .insert(link.source_id.clone(), Kept::linked(&link, None));
            }
        }
        Ok(())
    }
}

/// Tenant objects held by an identity of this plan. A stale link to one of them (the source
/// re-issued the person under a new id, matched again by the match attribute) is only forgotten:
/// disabling or deleting would lock out the identity that holds it now.
fn held_objects(draft: &Draft) -> HashSet<String> {
    draft
        .kept
        .values()
        .filter_map(|k| k.object_id.as_deref())
        .map(str::to_ascii_lowercase)
        .collect()
}

/// The step of a linked user that left: forgotten when another identity holds its object now,
/// nothing when a `disable` deprovision already disabled it, else deprovisioned.
fn user_departure(link: &Link, action: RemoveAction, held: &HashSet<String>) -> Option<Step> {
    let superseded = held.contains(&link.object_id.to_ascii_lowercase());
    if !superseded && action == RemoveAction::Disable && !link.enabled {
        return None;
    }
    let reason = if superseded {
        DeprovisionReason::Superseded
    } else {
        DeprovisionReason::LeftScope
    };
    Some(deprovision_step(link, action, reason))
}

/// Source ids of the groups the rule manages among `groups`.
fn groups_in_scope<'g>(settings: &GroupSettings, groups: &'g [SourceGroup]) -> HashSet<&'g str> {
    groups
        .iter()
        .filter(|g| settings.only.is_empty() || settings.only.contains(&g.id))
        .map(|g| g.id.as_str())
        .collect()
}

/// The step deprovisioning a linked object, named by its last applied UPN or displayName.
pub fn deprovision_step(link: &Link, action: RemoveAction, reason: DeprovisionReason) -> Step {
    let name_key = match link.kind {
        ObjectKind::User => "userPrincipalName",
        ObjectKind::Group => "displayName",
    };
    Step::Deprovision {
        kind: link.kind,
        source_id: link.source_id.clone(),
        name: link
            .applied
            .get(name_key)
            .and_then(Value::as_str)
            .unwrap_or(&link.object_id)
            .to_owned(),
        object_id: link.object_id.clone(),
        action,
        reason,
    }
}
