//! Groups: each source group the rule manages is linked (or matched by displayName, or created),
//! and its membership brought to the source's, among the users this rule provisions.

use std::collections::{HashMap, HashSet};

use super::draft::Draft;
use super::{DesiredGroup, Kept, PlanError, Planner};
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
            .map(|l| (l.source_id.clone(), self.as_in_tenant(l)))
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
    let (add, remove) = membership_changes(group, managed, &draft.kept);
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

/// The members to add (source ids, sorted) and to remove (tenant ids, sorted). The managed ids
/// are searched sorted rather than hashed: a large group's run where nothing changed looks
/// every member up once and copies nothing.
fn membership_changes(
    group: &SourceGroup,
    mut managed: Vec<String>,
    kept: &HashMap<String, Kept>,
) -> (Vec<String>, Vec<String>) {
    managed.sort_unstable();
    managed.dedup();
    let mut wanted = vec![false; managed.len()];
    let mut add: Vec<String> = Vec::new();
    for member in &group.members {
        let Some(kept) = kept.get(member) else {
            continue;
        };
        match kept.object_id.as_deref() {
            // A member the tenant group already has stays in the step: the executor sends
            // no write for it but records it as managed.
            Some(object_id) => match managed.binary_search_by(|m| m.as_str().cmp(object_id)) {
                Ok(at) => wanted[at] = true,
                Err(_) => add.push(member.clone()),
            },
            // Created or linked by this plan: its id is known once that step ran.
            None => add.push(member.clone()),
        }
    }
    add.sort();
    add.dedup();
    let remove = managed
        .into_iter()
        .zip(wanted)
        .filter_map(|(m, wanted)| (!wanted).then_some(m))
        .collect();
    (add, remove)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Attributes;

    fn kept(object_id: Option<&str>) -> Kept {
        Kept {
            upn: String::new(),
            linked_manager: None,
            manager_ref: None,
            provisioned: true,
            object_id: object_id.map(str::to_owned),
        }
    }

    #[test]
    fn members_are_added_and_removed_against_the_managed_ones() {
        let kept: HashMap<String, Kept> = [
            ("u1", kept(Some("o1"))),
            ("u2", kept(Some("o2"))),
            ("u3", kept(None)),
            ("u4", kept(Some("o4"))),
        ]
        .into_iter()
        .map(|(id, k)| (id.to_owned(), k))
        .collect();
        let group = SourceGroup {
            id: "g".into(),
            name: "G".into(),
            // u9 is not kept (out of scope, in error): neither added nor a reason to keep o9.
            members: ["u4", "u1", "u3", "u9", "u1"].map(String::from).to_vec(),
            attributes: Attributes::new(),
        };
        // Managed: o1 stays, o2 and o9 leave (listed unsorted and twice, as a store might).
        let managed = ["o9", "o1", "o2", "o9"].map(String::from).to_vec();
        let (add, remove) = membership_changes(&group, managed, &kept);
        assert_eq!(add, ["u3", "u4"]);
        assert_eq!(remove, ["o2", "o9"]);
    }
}
