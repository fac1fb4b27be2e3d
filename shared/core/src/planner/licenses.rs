//! Licenses: which SKUs the rule wants a user to have from it, and the step that gets them there.

use std::collections::{BTreeMap, HashMap};

use serde_json::Value;

use super::DesiredUser;
use super::draft::user_issue;
use crate::model::LicenseAssignment;
use crate::plan::{PlanIssue, Step};
use crate::rule::Preferences;

/// Whether the user has a usage location, which Graph requires before it assigns a license
/// (<https://learn.microsoft.com/en-us/graph/api/user-assignlicense>): mapped now, applied
/// earlier (`applied`: the link's applied values, or a matched user's tenant values), or implied
/// by licenses this rule already assigned (Graph cannot clear a usage location).
fn has_usage_location(
    desired: &DesiredUser,
    applied: &BTreeMap<String, Value>,
    assigned: &[LicenseAssignment],
) -> bool {
    let set = |v: Option<&Value>| {
        v.and_then(Value::as_str)
            .is_some_and(|s| !s.trim().is_empty())
    };
    set(desired.properties.get("usageLocation"))
        || set(applied.get("usageLocation"))
        || !assigned.is_empty()
}

/// The license step of one user (`None`: nothing changes), or the plan issue that holds its
/// additions back when the user has no usage location: a request Graph would refuse is never
/// sent, and the user's other steps go ahead.
pub(super) fn license_step(
    source_id: &str,
    upn: &str,
    desired: &DesiredUser,
    applied: &BTreeMap<String, Value>,
    assigned: &[LicenseAssignment],
    wanted: &[LicenseAssignment],
) -> Result<Option<Step>, PlanIssue> {
    let (add, remove) = license_diff(assigned, wanted);
    if add.is_empty() && remove.is_empty() {
        return Ok(None);
    }
    if !add.is_empty() && !has_usage_location(desired, applied, assigned) {
        let skus: Vec<&str> = add.iter().map(|l| l.sku_id.as_str()).collect();
        return Err(user_issue(
            source_id,
            "licenses",
            format!(
                "user {upn}: license(s) {} not assigned: usageLocation is empty, and Graph assigns \
                 licenses only to users with a usage location; map usageLocation in \
                 rule.mapping.attributes (e.g. usageLocation = {{ attribute = \"c\" }}, or a \
                 literal such as \"US\") or give this user a value at the source",
                skus.join(", ")
            ),
        ));
    }
    Ok(Some(Step::AssignLicenses {
        source_id: source_id.to_owned(),
        user_principal_name: upn.to_owned(),
        add,
        remove,
    }))
}

/// The licenses this rule wants the user to have from it:
/// mapped → the mapped SKUs; mapped and empty → none; not mapped → none when
/// `remove_licenses_when_sku_empty`, else whatever this rule assigned before (left alone).
/// Licenses this rule never assigned (group-based, manual) are never touched.
pub fn desired_licenses(
    prefs: &Preferences,
    desired: &DesiredUser,
    assigned: &[LicenseAssignment],
) -> Vec<LicenseAssignment> {
    match &desired.licenses {
        Some(licenses) => licenses.clone(),
        None if prefs.remove_licenses_when_sku_empty => Vec::new(),
        None => assigned.to_vec(),
    }
}

/// SKUs to add (new, or with other disabled plans) and to remove.
pub fn license_diff(
    assigned: &[LicenseAssignment],
    desired: &[LicenseAssignment],
) -> (Vec<LicenseAssignment>, Vec<String>) {
    let normalise = |l: &LicenseAssignment| {
        let mut plans = l.disabled_plans.clone();
        plans.sort();
        (l.sku_id.to_ascii_lowercase(), plans)
    };
    let have: HashMap<String, Vec<String>> = assigned.iter().map(normalise).collect();
    let want: HashMap<String, Vec<String>> = desired.iter().map(normalise).collect();
    let mut add: Vec<LicenseAssignment> = desired
        .iter()
        .filter(|l| {
            let (sku, plans) = normalise(l);
            have.get(&sku) != Some(&plans)
        })
        .cloned()
        .collect();
    add.sort();
    let mut remove: Vec<String> = assigned
        .iter()
        .filter(|l| !want.contains_key(&l.sku_id.to_ascii_lowercase()))
        .map(|l| l.sku_id.clone())
        .collect();
    remove.sort();
    (add, remove)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lic(sku: &str, plans: &[&str]) -> LicenseAssignment {
        LicenseAssignment {
            sku_id: sku.into(),
            disabled_plans: plans.iter().map(|p| (*p).into()).collect(),
        }
    }

    fn desired(licenses: Option<Vec<LicenseAssignment>>) -> DesiredUser {
        DesiredUser {
            properties: BTreeMap::new(),
            unique_candidates: BTreeMap::new(),
            password: None,
            password_problem: None,
            licenses,
            manager: None,
        }
    }

    #[test]
    fn remove_licenses_when_sku_empty_truth_table() {
        let assigned = vec![lic("e3", &[])];
        let on = Preferences {
            remove_licenses_when_sku_empty: true,
            ..Preferences::default()
        };
        let off = Preferences::default();
        // skuId mapped with a value: that value, whatever the flag.
        for prefs in [&on, &off] {
            assert_eq!(
                desired_licenses(prefs, &desired(Some(vec![lic("e5", &[])])), &assigned),
                vec![lic("e5", &[])]
            );
            // Mapped and cleared at the source: this rule's licenses go.
            assert!(desired_licenses(prefs, &desired(Some(vec![])), &assigned).is_empty());
        }
        // Not mapped: removed with the flag, left alone without it.
        assert!(desired_licenses(&on, &desired(None), &assigned).is_empty());
        assert_eq!(desired_licenses(&off, &desired(None), &assigned), assigned);
    }

    #[test]
    fn license_diff_adds_removes_and_replaces_disabled_plans() {
        let (add, remove) = license_diff(
            &[lic("e3", &["a"]), lic("ems", &[])],
            &[lic("e3", &["a", "b"]), lic("e5", &[])],
        );
        assert_eq!(add, vec![lic("e3", &["a", "b"]), lic("e5", &[])]);
        assert_eq!(remove, vec!["ems".to_owned()]);
        let (add, remove) = license_diff(&[lic("e3", &["b", "a"])], &[lic("E3", &["a", "b"])]);
        assert!(add.is_empty() && remove.is_empty());
    }
}
