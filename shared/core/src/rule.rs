//! A rule's behaviour: the eight preferences (docs/design.md#preferences), the circuit breaker,
//! scope, groups and manager settings. These are the parts of a rule that are not mapping
//! expressions; the configuration file fills them in.

use serde::{Deserialize, Serialize};

use crate::directory::GroupKind;
use crate::plan::RemoveAction;

/// The preferences (docs/design.md#preferences), with their defaults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Preferences {
    /// Create users in the tenant when they enter scope.
    pub allow_create: bool,
    /// Push changes of mapped attributes.
    pub allow_update: bool,
    /// `accountEnabled = false` when the source user is disabled (true again when re-enabled).
    pub allow_disable: bool,
    /// Act on users that leave scope or are deleted at the source.
    pub allow_deprovision: bool,
    /// What deprovisioning does: `disable` or `delete` (a soft delete: the same identity back in
    /// scope within the 30 days Graph keeps the user is restored, not created anew).
    pub remove_action: RemoveAction,
    /// Create users that are disabled at the source (created with accountEnabled=false).
    pub provision_disabled_users: bool,
    /// When the rule does not map licenses: remove the licenses it assigned earlier
    /// (docs/design.md#licenses-and-manager).
    pub remove_licenses_when_sku_empty: bool,
    /// When the rule is deleted, deprovision every user it provisioned.
    pub deprovision_on_rule_deletion: bool,
}

impl Default for Preferences {
    fn default() -> Self {
        Self {
            allow_create: true,
            allow_update: true,
            allow_disable: true,
            allow_deprovision: true,
            remove_action: RemoveAction::Disable,
            provision_disabled_users: false,
            remove_licenses_when_sku_empty: false,
            deprovision_on_rule_deletion: false,
        }
    }
}

/// The deletion circuit breaker (docs/design.md#safety): a run that would disable or delete more
/// than `max_count` users, or more than `max_percent` of the linked users (and likewise for group
/// deletes, membership removals and license removals, each against its own base: see
/// [`crate::plan::BreakerVerdict`]), carries out none of its destructive operations unless
/// overridden.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BreakerSettings {
    pub max_count: u64,
    pub max_percent: f64,
}

impl Default for BreakerSettings {
    fn default() -> Self {
        Self {
            max_count: 50,
            max_percent: 10.0,
        }
    }
}

impl BreakerSettings {
    /// Whether `destructive` operations over `linked` users trip the breaker. Either limit trips
    /// it; with no linked users (a first run) only the count applies.
    pub fn trips(&self, destructive: u64, linked: u64) -> bool {
        if destructive == 0 {
            return false;
        }
        if destructive > self.max_count {
            return true;
        }
        linked > 0 && (destructive as f64) * 100.0 / (linked as f64) > self.max_percent
    }

    /// Whether any kind of removal trips the breaker against its own base.
    pub fn trips_by_kind(
        &self,
        removals: &crate::plan::RemovalCounts,
        managed: &crate::plan::RemovalCounts,
    ) -> bool {
        [
            (removals.users, managed.users),
            (removals.groups, managed.groups),
            (removals.memberships, managed.memberships),
            (removals.licenses, managed.licenses),
        ]
        .into_iter()
        .any(|(n, base)| self.trips(n, base))
    }
}

/// Which source users a rule provisions.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ScopeSettings {
    /// Source group ids: only their members are in scope. Empty: every user.
    pub groups: Vec<String>,
    /// A condition over source attributes (template expression); users for which it is false
    /// are out of scope. Example: `department != "Contractors"`.
    pub filter: Option<String>,
}

/// Whether and how source groups become tenant groups.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GroupSettings {
    /// Provision groups and memberships at all.
    pub enabled: bool,
    /// Source group ids to provision; empty: every source group.
    pub only: Vec<String>,
    /// Kind of the groups this rule creates.
    pub kind: GroupKind,
    /// Groups that leave scope: `delete` deletes them; `disable` leaves them as they are
    /// (groups have no enabled flag) and only unlinks them.
    pub remove_action: RemoveAction,
}

impl Default for GroupSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            only: Vec::new(),
            kind: GroupKind::Security,
            remove_action: RemoveAction::Disable,
        }
    }
}

/// What a manager reference in the source holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ManagerReference {
    /// The manager's source id.
    #[default]
    Id,
    /// The manager's DN (PingFederate's `pingSourceDN`); resolved through `dn_attribute`.
    Dn,
}

/// How managers are resolved.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ManagerSettings {
    pub reference: ManagerReference,
    /// The source attribute holding every user's own DN (for `reference = "dn"`).
    pub dn_attribute: String,
}

impl Default for ManagerSettings {
    fn default() -> Self {
        Self {
            reference: ManagerReference::Id,
            dn_attribute: "dn".to_owned(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_follow_design_section_3() {
        let p = Preferences::default();
        assert!(p.allow_create && p.allow_update && p.allow_disable && p.allow_deprovision);
        assert_eq!(p.remove_action, RemoveAction::Disable);
        assert!(!p.provision_disabled_users);
        assert!(!p.remove_licenses_when_sku_empty);
        assert!(!p.deprovision_on_rule_deletion);
    }

    #[test]
    fn breaker_trips_on_count_or_percentage() {
        let b = BreakerSettings {
            max_count: 5,
            max_percent: 10.0,
        };
        let cases = [
            (0, 0, false),
            (0, 100, false),
            (5, 100, false),
            (6, 1000, true),
            (5, 40, true),
            (4, 40, false),
            (3, 0, false),
        ];
        for (destructive, linked, tripped) in cases {
            assert_eq!(
                b.trips(destructive, linked),
                tripped,
                "{destructive}/{linked}"
            );
        }
    }
}
