//! Groups: each source group the rule manages is linked (or matched by displayName, or created),
//! and its membership brought to the source's, among the users this rule provisions.

use std::collections::{HashMap, HashSet};

use super::draft::Draft;
use super::{DesiredGroup, PlanError, Planner};
use crate::model::{ObjectKind, SourceGroup};
use crate::plan::Step;
use crate::state::Link;

impl Planner<'_> {
    /// Group steps and membership steps of every group in scope; the memberships the rule
    /// manages count as the breaker's base.
    pub(super) async fn plan_groups(&self, draft: &mut Draft) -> Result<(), PlanError> {
        let settings = &self.rule.groups;
        let groups = std::mem::take(&mut draft.source_groups);
        let in_scope: Vec<&SourceGroup> = groups
            .iter()
            .filter(|g| settings.only.is_empty() || settings.only.contains(&g.id))
            .collect();
        let ids: Vec<String> = in_scope.iter().map(|g| g.id.clone()).collect();
        let links: HashMap<String, Link> = self
            .state
            .get_links(self.connection, ObjectKind::Group, &ids)
            .await?
            .into_iter()
            .map(|l| (l.source_id.clone(), l))
            .collect();
        draft.managed_memberships = links.values().map(|l| l.members.len() as u64).sum();
        for group in in_scope {
            let desired = match self.rule.mapping.map_group(group) {
                Ok(desired) => desired,
                Err(errors) => {
                    for error in errors {
                        draft.group_issue(&group.id, "mapping", error.to_string());
                    }
                    continue;
                }
            };
            // Members this rule manages in the group (none yet for a group matched or created now).
            let managed = match links.get(&group.id) {
                Some(link) => link.members.clone(),
                None => match self.link_or_create(group, &desired, draft).await? {
                    Some(members) => members,
                    None => continue,
                },
            };
            membership_steps(group, &desired, managed, draft);
        }
        draft.source_groups = groups;
        Ok(())
    }

    /// An unlinked group: matched to the one tenant group of its displayName (whose current
    /// members need no write), or created. `None` when several tenant groups have the name.
    async fn link_or_create(
        &self,
        group: &SourceGroup,
        desired: &DesiredGroup,
        draft: &mut Draft,
    ) -> Result<Option<Vec<String>>, PlanError> {
        let found = self
            .directory
            .find_groups_by_name(&desired.display_name)
            .await?;
        match found.as_slice() {
            [] => {
                draft.steps.groups.push(Step::CreateGroup {
                    source_id: group.id.clone(),
                    display_name: desired.display_name.clone(),
                    mail_nickname: desired.mail_nickname.clone(),
                    kind: self.rule.groups.kind,
                });
            }
            [tenant_group] => {
                draft.steps.groups.push(Step::MatchGroup {
                    source_id: group.id.clone(),
                    display_name: tenant_group.display_name.clone(),
                    object_id: tenant_group.id.clone(),
                });
                // Its current members: adding them again would be a wasted write.
                let existing: HashSet<String> = self
                    .directory
                    .group_members(&tenant_group.id)
                    .await?
                    .into_iter()
                    .collect();
                draft
                    .extras
                    .existing_members
                    .insert(group.id.clone(), existing);
            }
            several => {
                draft.group_issue(
                    &group.id,
                    "match",
                    format!(
                        "{} tenant groups are named {:?}; rename all but one, or delete the extras",
                        several.len(),
                        desired.display_name
                    ),
                );
                return Ok(None);
            }
        }
        Ok(Some(Vec::new()))
    }
}

/// Members to add (provisioned users of the source group the rule does not manage in it yet)
/// and to remove (managed members no longer in the source group). Tenant ids come from the
/// users' links or this plan's matches, kept while their pages were planned.
fn membership_steps(
    group: &SourceGroup,
    desired: &DesiredGroup,
    managed: Vec<String>,
    draft: &mut Draft,
) {
    let managed: HashSet<String> = managed.into_iter().collect();
    let mut desired_object_ids: HashSet<String> = HashSet::new();
    let mut add: Vec<String> = Vec::new();
    for member in &group.members {
        let Some(kept) = draft.kept.get(member) else {
            continue;
        };
        match kept.object_id.as_deref() {
            Some(object_id) => {
                desired_object_ids.insert(object_id.to_owned());
                // A member the tenant group already has stays in the step: the executor sends
                // no write for it but records it as managed.
                if !managed.contains(object_id) {
                    add.push(member.clone());
                }
            }
            // Created or linked by this plan: its id is known once that step ran.
            None => add.push(member.clone()),
        }
    }
    add.sort();
    add.dedup();
    let mut remove: Vec<String> = managed
        .iter()
        .filter(|m| !desired_object_ids.contains(*m))
        .cloned()
        .collect();
    remove.sort();
    if !add.is_empty() {
        draft.steps.members.push(Step::AddMembers {
            group_source_id: group.id.clone(),
            display_name: desired.display_name.clone(),
            member_source_ids: add,
        });
    }
    if !remove.is_empty() {
        draft.steps.members.push(Step::RemoveMembers {
            group_source_id: group.id.clone(),
            display_name: desired.display_name.clone(),
            member_object_ids: remove,
        });
    }
}
