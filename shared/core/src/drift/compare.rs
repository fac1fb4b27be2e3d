//! What differs between a link's last applied state and the object as the tenant reported it,
//! and the link corrected to the tenant's state. Pure functions: the scan reads, these judge.

use serde_json::Value;

use super::DriftChange;
use crate::directory::{ObservedObject, Removal};
use crate::hash::same_value;
use crate::state::{Link, UnixMillis};

/// What the comparison of one object may consult beyond the object itself.
pub(super) struct Context<'a> {
    /// A full round: the object's relationships are complete, not just their changes.
    pub full: bool,
    /// Drift is repaired, not only reported.
    pub repair: bool,
    /// The rule manages licenses (`assignedLicenses` was read).
    pub licenses: bool,
    /// The rule manages managers (`manager` was read).
    pub manager: bool,
    /// The source id of a user this connection links, by tenant object id.
    pub linked_user: &'a (dyn Fn(&str) -> Option<String> + Sync),
}

/// A removal this connection did not make: `Deleted` or `Purged`. A link of an object this
/// connection deleted is no drift whatever the tenant says of it.
fn removal(link: &Link, observed: &ObservedObject) -> Option<Option<DriftChange>> {
    if link.is_deleted() {
        return Some(None);
    }
    observed.removed.map(|removed| {
        Some(match removed {
            Removal::Restorable => DriftChange::Deleted,
            Removal::Permanent => DriftChange::Purged,
        })
    })
}

/// The drift of a linked user.
pub(super) fn user_changes(
    link: &Link,
    observed: &ObservedObject,
    context: &Context<'_>,
) -> Vec<DriftChange> {
    if let Some(removed) = removal(link, observed) {
        return removed.into_iter().collect();
    }
    let mut changes: Vec<DriftChange> = Vec::new();
    for (name, applied) in &link.applied {
        let Some(found) = property(observed, name) else {
            continue;
        };
        if !same_value(Some(applied), Some(found)) {
            changes.push(DriftChange::Property {
                name: name.clone(),
                applied: applied.clone(),
                found: found.clone(),
            });
        }
    }
    if let Some(found) = observed
        .properties
        .get("accountEnabled")
        .and_then(Value::as_bool)
        && found != link.enabled
    {
        changes.push(DriftChange::Enabled {
            applied: link.enabled,
            found,
        });
    }
    if context.licenses {
        changes.extend(license_changes(link, observed));
    }
    if context.manager {
        changes.extend(manager_change(link, observed, context));
    }
    changes
}

/// A property as reported, a member of a complex property named dotted
/// (`onPremisesExtensionAttributes.extensionAttribute1`); `None` when it was not reported.
fn property<'a>(observed: &'a ObservedObject, name: &str) -> Option<&'a Value> {
    let mut parts = name.split('.');
    let mut value = observed.properties.get(parts.next()?)?;
    for part in parts {
        value = match value {
            Value::Object(map) => map.get(part).unwrap_or(&Value::Null),
            _ => &Value::Null,
        };
    }
    Some(value)
}

/// Licenses this connection assigned that the tenant no longer has, or has with other disabled
/// plans. Licenses assigned by anyone else are not this connection's.
fn license_changes(link: &Link, observed: &ObservedObject) -> Vec<DriftChange> {
    let Some(found) = observed
        .properties
        .get("assignedLicenses")
        .and_then(Value::as_array)
    else {
        return Vec::new();
    };
    let mut changes = Vec::new();
    for assigned in &link.licenses {
        let entry = found.iter().find(|f| {
            f.get("skuId")
                .and_then(Value::as_str)
                .is_some_and(|s| s.eq_ignore_ascii_case(&assigned.sku_id))
        });
        let Some(entry) = entry else {
            changes.push(DriftChange::LicenseRemoved {
                sku_id: assigned.sku_id.clone(),
            });
            continue;
        };
        let found_plans = plan_set(
            entry
                .get("disabledPlans")
                .and_then(Value::as_array)
                .map(|plans| plans.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default(),
        );
        let applied_plans = plan_set(assigned.disabled_plans.iter().map(String::as_str).collect());
        if found_plans != applied_plans {
            changes.push(DriftChange::LicensePlans {
                sku_id: assigned.sku_id.clone(),
                applied: assigned.disabled_plans.clone(),
                found: found_plans,
            });
        }
    }
    changes
}

/// Service plan ids, lowercased and sorted (GUIDs compare without case).
fn plan_set(plans: Vec<&str>) -> Vec<String> {
    let mut set: Vec<String> = plans.iter().map(|p| p.to_ascii_lowercase()).collect();
    set.sort();
    set.dedup();
    set
}

/// The manager, when the report says who it is now: always in a full round, and in a change
/// round when the manager changed (a user changed otherwise carries no manager news).
fn manager_change(
    link: &Link,
    observed: &ObservedObject,
    context: &Context<'_>,
) -> Option<DriftChange> {
    if !context.full && observed.links.is_empty() {
        return None;
    }
    let found = observed
        .links
        .iter()
        .find(|(_, linked)| **linked)
        .map(|(object_id, _)| {
            (context.linked_user)(object_id).unwrap_or_else(|| object_id.clone())
        });
    (found != link.manager).then(|| DriftChange::Manager {
        applied: link.manager.clone(),
        found,
    })
}

/// The drift of a linked group: deleted, managed members taken out, and (in a change round)
/// users this connection links put in by someone else. A full round reports no additions:
/// members that were in a matched group before this connection are not its to remove.
pub(super) fn group_changes(
    link: &Link,
    observed: &ObservedObject,
    context: &Context<'_>,
) -> Vec<DriftChange> {
    if let Some(removed) = removal(link, observed) {
        return removed.into_iter().collect();
    }
    let mut changes = Vec::new();
    if context.full {
        for member in &link.members {
            if observed.links.get(member) != Some(&true) {
                changes.push(DriftChange::MemberRemoved {
                    member: member.clone(),
                });
            }
        }
        return changes;
    }
    for (member, linked) in &observed.links {
        let managed = link.members.contains(member);
        match (*linked, managed) {
            (false, true) => changes.push(DriftChange::MemberRemoved {
                member: member.clone(),
            }),
            (true, false) if (context.linked_user)(member).is_some() => {
                changes.push(DriftChange::MemberAdded {
                    member: member.clone(),
                });
            }
            _ => {}
        }
    }
    changes
}

/// `link` as the tenant has it after `change`.
pub(super) fn correct_link(link: &mut Link, change: &DriftChange, now: UnixMillis) {
    match change {
        DriftChange::Property { name, found, .. } => {
            link.applied.insert(name.clone(), found.clone());
        }
        DriftChange::Enabled { found, .. } => link.enabled = *found,
        DriftChange::LicenseRemoved { sku_id } => link
            .licenses
            .retain(|l| !l.sku_id.eq_ignore_ascii_case(sku_id)),
        DriftChange::LicensePlans { sku_id, found, .. } => {
            for license in &mut link.licenses {
                if license.sku_id.eq_ignore_ascii_case(sku_id) {
                    license.disabled_plans = found.clone();
                }
            }
        }
        DriftChange::Manager { found, .. } => link.manager = found.clone(),
        DriftChange::MemberRemoved { member } => link.members.retain(|m| m != member),
        DriftChange::MemberAdded { member } => {
            if !link.members.contains(member) {
                link.members.push(member.clone());
                link.members.sort();
            }
        }
        // Restored by the plan (the link now says deleted, as after this connection's delete).
        DriftChange::Deleted => link.deleted_at = Some(now),
        // Nothing can bring it back: reported only.
        DriftChange::Purged => {}
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde_json::json;

    use super::*;
    use crate::model::{LicenseAssignment, ObjectKind};
    use crate::state::LinkOrigin;

    fn link() -> Link {
        let mut link = Link::new(
            ObjectKind::User,
            "s1",
            "o1",
            LinkOrigin::Created,
            BTreeMap::from([
                ("department".to_owned(), json!("Sales")),
                ("jobTitle".to_owned(), json!("Rep")),
                (
                    "onPremisesExtensionAttributes.extensionAttribute1".to_owned(),
                    json!("x"),
                ),
            ]),
            true,
            0,
        );
        link.licenses = vec![LicenseAssignment {
            sku_id: "SKU-A".to_owned(),
            disabled_plans: vec!["P1".to_owned()],
        }];
        link.manager = Some("boss".to_owned());
        link
    }

    fn observed(properties: Value) -> ObservedObject {
        ObservedObject {
            id: "o1".to_owned(),
            properties: serde_json::from_value(properties).unwrap_or_default(),
            ..ObservedObject::default()
        }
    }

    fn no_one(_: &str) -> Option<String> {
        None
    }

    fn context(full: bool) -> Context<'static> {
        Context {
            full,
            repair: false,
            licenses: true,
            manager: true,
            linked_user: &no_one,
        }
    }

    #[test]
    fn only_mapped_properties_that_differ_are_drift() {
        let o = observed(json!({
            "department": "Legal",
            "jobTitle": "Rep",
            "officeLocation": "anything: not mapped",
            "onPremisesExtensionAttributes": {"extensionAttribute1": "y"},
            "accountEnabled": false,
            "assignedLicenses": [{"skuId": "sku-a", "disabledPlans": ["p1"]}, {"skuId": "other"}]
        }));
        let changes = user_changes(&link(), &o, &context(false));
        assert_eq!(
            changes,
            vec![
                DriftChange::Property {
                    name: "department".to_owned(),
                    applied: json!("Sales"),
                    found: json!("Legal")
                },
                DriftChange::Property {
                    name: "onPremisesExtensionAttributes.extensionAttribute1".to_owned(),
                    applied: json!("x"),
                    found: json!("y")
                },
                DriftChange::Enabled {
                    applied: true,
                    found: false
                },
            ]
        );
    }

    #[test]
    fn licenses_this_connection_assigned_are_checked_and_no_others() {
        let gone = observed(json!({"assignedLicenses": [{"skuId": "OTHER"}]}));
        assert_eq!(
            user_changes(&link(), &gone, &context(false)),
            vec![DriftChange::LicenseRemoved {
                sku_id: "SKU-A".to_owned()
            }]
        );
        let plans =
            observed(json!({"assignedLicenses": [{"skuId": "SKU-A", "disabledPlans": []}]}));
        let changes = user_changes(&link(), &plans, &context(false));
        assert!(
            matches!(changes.as_slice(), [DriftChange::LicensePlans { found, .. }] if found.is_empty()),
            "{changes:?}"
        );
    }

    #[test]
    fn a_manager_is_judged_when_reported_and_resolved_to_its_source_id() {
        let quiet = observed(json!({"department": "Sales"}));
        assert_eq!(user_changes(&link(), &quiet, &context(false)), vec![]);
        // A full round without a manager: removed.
        assert_eq!(
            user_changes(&link(), &quiet, &context(true)),
            vec![DriftChange::Manager {
                applied: Some("boss".to_owned()),
                found: None
            }]
        );
        let mut moved = observed(json!({}));
        moved.links =
            BTreeMap::from([("obj-boss".to_owned(), false), ("obj-new".to_owned(), true)]);
        let resolve = |id: &str| (id == "obj-new").then(|| "newboss".to_owned());
        let ctx = Context {
            linked_user: &resolve,
            ..context(false)
        };
        assert_eq!(
            user_changes(&link(), &moved, &ctx),
            vec![DriftChange::Manager {
                applied: Some("boss".to_owned()),
                found: Some("newboss".to_owned())
            }]
        );
    }

    #[test]
    fn removals_not_made_by_this_connection_are_drift() {
        let mut gone = observed(json!({}));
        gone.removed = Some(Removal::Restorable);
        assert_eq!(
            user_changes(&link(), &gone, &context(false)),
            vec![DriftChange::Deleted]
        );
        gone.removed = Some(Removal::Permanent);
        assert_eq!(
            user_changes(&link(), &gone, &context(false)),
            vec![DriftChange::Purged]
        );
        let mut ours = link();
        ours.deleted_at = Some(5);
        assert_eq!(user_changes(&ours, &gone, &context(false)), vec![]);
    }

    #[test]
    fn group_members_removed_and_linked_users_added_out_of_band() {
        let mut group = Link::new(
            ObjectKind::Group,
            "g",
            "og",
            LinkOrigin::Created,
            BTreeMap::new(),
            true,
            0,
        );
        group.members = vec!["m1".to_owned(), "m2".to_owned()];
        let mut o = observed(json!({}));
        o.links = BTreeMap::from([
            ("m1".to_owned(), false),
            ("linked".to_owned(), true),
            ("stranger".to_owned(), true),
        ]);
        let resolve = |id: &str| (id == "linked").then(|| "s-linked".to_owned());
        let ctx = Context {
            linked_user: &resolve,
            ..context(false)
        };
        assert_eq!(
            group_changes(&group, &o, &ctx),
            vec![
                DriftChange::MemberAdded {
                    member: "linked".to_owned()
                },
                DriftChange::MemberRemoved {
                    member: "m1".to_owned()
                },
            ]
        );
        // A full round: managed members missing are removals; extra members are not judged.
        let full = Context {
            linked_user: &resolve,
            ..context(true)
        };
        let mut all = observed(json!({}));
        all.links = BTreeMap::from([("m2".to_owned(), true), ("linked".to_owned(), true)]);
        assert_eq!(
            group_changes(&group, &all, &full),
            vec![DriftChange::MemberRemoved {
                member: "m1".to_owned()
            }]
        );
    }

    #[test]
    fn corrections_make_the_link_what_the_tenant_holds() {
        let mut l = link();
        correct_link(
            &mut l,
            &DriftChange::LicenseRemoved {
                sku_id: "sku-a".to_owned(),
            },
            9,
        );
        correct_link(&mut l, &DriftChange::Deleted, 9);
        correct_link(
            &mut l,
            &DriftChange::Property {
                name: "department".to_owned(),
                applied: json!("Sales"),
                found: json!("Legal"),
            },
            9,
        );
        assert!(l.licenses.is_empty());
        assert_eq!(l.deleted_at, Some(9));
        assert_eq!(l.applied["department"], json!("Legal"));
    }
}
