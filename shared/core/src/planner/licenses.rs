//! Licenses: which SKUs the rule wants a user to have from it, and the step that gets them there.
//!
//! A rule names a SKU by its skuId GUID or by its part number (`ENTERPRISEPACK`, `SPE_E3`).
//! Graph's `assignLicense` takes only skuIds, so part numbers are resolved through the tenant's
//! subscribed SKUs (<https://learn.microsoft.com/en-us/graph/api/subscribedsku-list>), read
//! through the [`Directory`](crate::directory::Directory) port at most once per plan and only
//! when some mapped value or `disabled_plans` key is not a GUID ([`SkuTable`]). Part numbers
//! compare case-insensitively. A part number the tenant does not have is a problem of that user
//! alone ([`DesiredUser::license_problem`]): its licenses stay as they are, its other steps go
//! ahead, and the other users are planned as usual.

use std::collections::{BTreeMap, HashMap};

use serde_json::Value;

use super::DesiredUser;
use super::draft::user_issue;
use crate::directory::{DirectoryResult, TenantSku};
use crate::mapping::validate::parse_guid;
use crate::model::LicenseAssignment;
use crate::plan::{PlanIssue, Step};
use crate::rule::Preferences;

/// The tenant's subscribed SKUs as the planner resolves part numbers with them.
#[derive(Debug, Clone, Default)]
pub(super) enum SkuTable {
    /// Not needed so far: every reference was a GUID.
    #[default]
    NotRead,
    /// Read: skuId (lower-cased) by lower-cased part number, and the part numbers as Graph
    /// spells them, sorted, for messages.
    Read {
        by_part_number: HashMap<String, String>,
        part_numbers: Vec<String>,
    },
    /// Reading failed (not fatally): why, for every user that needed it.
    Unreadable(String),
}

impl SkuTable {
    /// The table of a `GET /subscribedSkus` answer: a failure that must stop the run is
    /// returned, any other is kept as the reason users naming part numbers are held.
    pub(super) fn from_answer(
        answer: DirectoryResult<Vec<TenantSku>>,
    ) -> DirectoryResult<SkuTable> {
        match answer {
            Ok(skus) => {
                let mut part_numbers: Vec<String> = skus
                    .iter()
                    .filter(|s| !s.sku_part_number.is_empty())
                    .map(|s| s.sku_part_number.clone())
                    .collect();
                part_numbers.sort_by_key(|p| p.to_ascii_lowercase());
                let by_part_number = skus
                    .into_iter()
                    .filter(|s| !s.sku_part_number.is_empty())
                    .map(|s| {
                        (
                            s.sku_part_number.to_ascii_lowercase(),
                            s.sku_id.to_ascii_lowercase(),
                        )
                    })
                    .collect();
                Ok(SkuTable::Read {
                    by_part_number,
                    part_numbers,
                })
            }
            Err(error) if error.is_fatal() => Err(error),
            Err(error) => Ok(SkuTable::Unreadable(error.message)),
        }
    }
}

/// Whether the user's mapped licenses name a SKU by part number (as a value, or as the key of
/// disabled plans), so that the tenant's SKU table is needed to plan them.
pub(super) fn needs_sku_table(desired: &DesiredUser) -> bool {
    desired.licenses.as_ref().is_some_and(|licenses| {
        !desired.sku_plans.is_empty() || licenses.iter().any(|l| parse_guid(&l.sku_id).is_none())
    })
}

/// Resolves the user's mapped licenses to skuIds: each part number through `table`, and the
/// disabled plans of keys in the other form ([`DesiredUser::sku_plans`]) added to the SKU they
/// name. On success `licenses` holds only skuIds; otherwise `license_problem` says which values
/// the tenant does not have (`user`: how the message names the user).
pub(super) fn resolve_licenses(desired: &mut DesiredUser, table: &SkuTable, user: &str) {
    let Some(mapped) = desired.licenses.take() else {
        return;
    };
    let parts: Vec<&str> = mapped
        .iter()
        .filter(|l| parse_guid(&l.sku_id).is_none())
        .map(|l| l.sku_id.as_str())
        .collect();
    let (by_part_number, known) = match table {
        SkuTable::Read {
            by_part_number,
            part_numbers,
        } => (by_part_number, part_numbers),
        SkuTable::NotRead | SkuTable::Unreadable(_) => {
            let why = match table {
                SkuTable::Unreadable(why) => why.as_str(),
                _ => "they were not read",
            };
            let mut named = parts.clone();
            named.extend(desired.sku_plans.keys().map(String::as_str));
            desired.license_problem = Some(format!(
                "user {user}: rule.mapping.licenses names SKUs by part number ({}), and the \
                 tenant's subscribed SKUs could not be read to resolve them ({why}); grant the \
                 app Organization.Read.All (or LicenseAssignment.Read.All), or map skuId GUIDs. \
                 This user's licenses are left as they are",
                quoted(&named)
            ));
            desired.licenses = Some(mapped);
            return;
        }
    };
    let unknown: Vec<&str> = parts
        .iter()
        .copied()
        .filter(|p| !by_part_number.contains_key(&p.to_ascii_lowercase()))
        .collect();
    if !unknown.is_empty() {
        let has = if known.is_empty() {
            "none".to_owned()
        } else {
            known.join(", ")
        };
        desired.license_problem = Some(format!(
            "user {user}: license SKU part number(s) {} from rule.mapping.licenses.sku_ids are not \
             among the tenant's subscribed SKUs (it has: {has}); correct the value at the source \
             or in the mapping (part numbers compare case-insensitively), or map the skuId GUID. \
             This user's licenses are left as they are",
            quoted(&unknown)
        ));
        desired.licenses = Some(mapped);
        return;
    }
    let part_of: HashMap<&str, &str> = by_part_number
        .iter()
        .map(|(part, id)| (id.as_str(), part.as_str()))
        .collect();
    let mut resolved: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for license in mapped {
        let id = by_part_number
            .get(&license.sku_id.to_ascii_lowercase())
            .cloned()
            .unwrap_or_else(|| license.sku_id.to_ascii_lowercase());
        let plans = resolved.entry(id.clone()).or_default();
        plans.extend(license.disabled_plans);
        for key in [Some(id.as_str()), part_of.get(id.as_str()).copied()]
            .into_iter()
            .flatten()
        {
            plans.extend(desired.sku_plans.get(key).into_iter().flatten().cloned());
        }
    }
    desired.licenses = Some(
        resolved
            .into_iter()
            .map(|(sku_id, mut disabled_plans)| {
                disabled_plans.sort();
                disabled_plans.dedup();
                LicenseAssignment {
                    sku_id,
                    disabled_plans,
                }
            })
            .collect(),
    );
    desired.sku_plans.clear();
}

/// Values quoted and joined for a message.
fn quoted(values: &[&str]) -> String {
    values
        .iter()
        .map(|v| format!("{v:?}"))
        .collect::<Vec<_>>()
        .join(", ")
}

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
/// a license problem ([`DesiredUser::license_problem`]) → what it has now, untouched;
/// mapped → the mapped SKUs; mapped and empty → none; not mapped → none when
/// `remove_licenses_when_sku_empty`, else whatever this rule assigned before (left alone).
/// Licenses this rule never assigned (group-based, manual) are never touched.
pub fn desired_licenses(
    prefs: &Preferences,
    desired: &DesiredUser,
    assigned: &[LicenseAssignment],
) -> Vec<LicenseAssignment> {
    if desired.license_problem.is_some() {
        return assigned.to_vec();
    }
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
            sku_plans: BTreeMap::new(),
            license_problem: None,
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
