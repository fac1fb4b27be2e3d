//! The plan while it is being built: its steps by stage, its issues, and what one part of the
//! planning leaves for the next (the users kept after their page, those not to touch).

use std::collections::{HashMap, HashSet};

use super::licenses::SkuTable;
use super::{Kept, PlanExtras};
use crate::model::{ObjectKind, SourceGroup};
use crate::plan::{PlanIssue, Step};

/// Steps in the order they run: groups, users (link, restore or create), updates, licenses,
/// managers, memberships, then disables and deprovisions.
#[derive(Default)]
pub(super) struct StepLists {
    pub groups: Vec<Step>,
    pub users: Vec<Step>,
    /// Attribute updates, enables and the disables of users disabled at the source.
    pub updates: Vec<Step>,
    pub licenses: Vec<Step>,
    pub managers: Vec<Step>,
    pub members: Vec<Step>,
    pub removals: Vec<Step>,
}

impl StepLists {
    /// Every step in execution order. Disables of users disabled at the source count for the
    /// breaker like deprovisions, and run with them, first; enables run after the updates.
    pub fn into_ordered(self) -> Vec<Step> {
        let StepLists {
            groups,
            users,
            updates,
            licenses,
            managers,
            members,
            mut removals,
        } = self;
        let mut kept_updates = Vec::new();
        let mut enables = Vec::new();
        for step in updates {
            match step {
                Step::SetEnabled { enabled: false, .. } => removals.insert(0, step),
                Step::SetEnabled { enabled: true, .. } => enables.push(step),
                other => kept_updates.push(other),
            }
        }
        let mut steps = groups;
        steps.extend(users);
        steps.extend(kept_updates);
        steps.extend(enables);
        steps.extend(licenses);
        steps.extend(managers);
        steps.extend(members);
        steps.extend(removals);
        steps
    }
}

/// Everything planning gathers.
pub(super) struct Draft {
    pub steps: StepLists,
    pub issues: Vec<PlanIssue>,
    pub extras: PlanExtras,
    /// Users planned (or, in a focused plan, linked ones read as context), by source id.
    pub kept: HashMap<String, Kept>,
    /// Users present but not to be touched (record errors, mapping errors, backoff).
    pub protected: HashSet<String>,
    /// Groups whose source record had a problem: never deprovisioned on that basis.
    pub protected_groups: HashSet<String>,
    /// Source ids by distinguished name (lower case), for managers referenced by DN.
    pub dn_index: HashMap<String, String>,
    /// (property, value) pairs of unique values picked by this plan.
    pub claimed: HashSet<(String, String)>,
    pub source_groups: Vec<SourceGroup>,
    /// The tenant's SKUs, read the first time a user names one by part number.
    pub skus: SkuTable,
    /// The breaker's bases of licenses and memberships: what the plan read.
    pub managed_licenses: u64,
    pub managed_memberships: u64,
    /// Every user record was read: links not seen may be swept.
    pub snapshot_complete: bool,
    /// Every group record was read (and the source can say which groups it has): groups not
    /// seen may be swept.
    pub groups_complete: bool,
}

impl Draft {
    pub fn new() -> Draft {
        Draft {
            steps: StepLists::default(),
            issues: Vec::new(),
            extras: PlanExtras::default(),
            kept: HashMap::new(),
            protected: HashSet::new(),
            protected_groups: HashSet::new(),
            dn_index: HashMap::new(),
            claimed: HashSet::new(),
            source_groups: Vec::new(),
            skus: SkuTable::NotRead,
            managed_licenses: 0,
            managed_memberships: 0,
            snapshot_complete: true,
            groups_complete: true,
        }
    }

    /// A problem with one user; the rest of the plan is unaffected.
    pub fn user_issue(&mut self, source_id: &str, operation: &str, message: String) {
        self.issues.push(user_issue(source_id, operation, message));
    }

    /// A problem with one group.
    pub fn group_issue(&mut self, source_id: &str, operation: &str, message: String) {
        self.issues.push(PlanIssue {
            kind: ObjectKind::Group,
            source_id: source_id.to_owned(),
            operation: operation.to_owned(),
            message,
        });
    }
}

pub(super) fn user_issue(source_id: &str, operation: &str, message: String) -> PlanIssue {
    PlanIssue {
        kind: ObjectKind::User,
        source_id: source_id.to_owned(),
        operation: operation.to_owned(),
        message,
    }
}
