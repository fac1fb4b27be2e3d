//! The state hash of a linked user: what was last applied, reduced to one string. Planning
//! compares the hash of the desired state with the stored one and stops there when they agree,
//! so an unchanged user costs no Graph call and no attribute comparison.

use std::collections::BTreeMap;

use crate::model::LicenseAssignment;

/// FNV-1a, 64 bits: stable across versions and platforms (unlike `std`'s hasher), and plenty
/// against accidental collisions of one user's state with its own next state.
fn fnv1a(bytes: &[u8], mut hash: u64) -> u64 {
    for byte in bytes {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

/// `null` and `[]`: a property with no value.
pub fn is_empty_value(value: &serde_json::Value) -> bool {
    match value {
        serde_json::Value::Null => true,
        serde_json::Value::Array(items) => items.is_empty(),
        _ => false,
    }
}

/// Whether two property values are the same state (empty equals absent).
pub fn same_value(a: Option<&serde_json::Value>, b: Option<&serde_json::Value>) -> bool {
    let empty = |v: Option<&serde_json::Value>| v.is_none_or(is_empty_value);
    if empty(a) || empty(b) {
        return empty(a) && empty(b);
    }
    a == b
}

/// Hash of applied (or desired) user state: mapped properties, accountEnabled and the licenses
/// this rule manages. Managers and memberships are compared directly and are not part of it.
pub fn user_state_hash(
    properties: &BTreeMap<String, serde_json::Value>,
    enabled: bool,
    licenses: &[LicenseAssignment],
) -> String {
    let mut licenses: Vec<LicenseAssignment> = licenses.to_vec();
    for license in &mut licenses {
        license.disabled_plans.sort();
    }
    licenses.sort();
    // Empty and absent are the same state (a mapped-but-empty property is `null` or `[]`).
    let properties: BTreeMap<&String, &serde_json::Value> = properties
        .iter()
        .filter(|(_, v)| !is_empty_value(v))
        .collect();
    // serde_json writes BTreeMap keys in order: the text is canonical for equal states.
    let text = serde_json::json!({ "p": properties, "e": enabled, "l": licenses }).to_string();
    format!("v1:{:016x}", fnv1a(text.as_bytes(), 0xcbf2_9ce4_8422_2325))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn props(pairs: &[(&str, serde_json::Value)]) -> BTreeMap<String, serde_json::Value> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect()
    }

    #[test]
    fn equal_states_hash_equal_whatever_the_order() {
        let a = user_state_hash(
            &props(&[("givenName", json!("Ann")), ("surname", json!("Lee"))]),
            true,
            &[
                LicenseAssignment {
                    sku_id: "b".into(),
                    disabled_plans: vec!["y".into(), "x".into()],
                },
                LicenseAssignment {
                    sku_id: "a".into(),
                    disabled_plans: vec![],
                },
            ],
        );
        let b = user_state_hash(
            &props(&[("surname", json!("Lee")), ("givenName", json!("Ann"))]),
            true,
            &[
                LicenseAssignment {
                    sku_id: "a".into(),
                    disabled_plans: vec![],
                },
                LicenseAssignment {
                    sku_id: "b".into(),
                    disabled_plans: vec!["x".into(), "y".into()],
                },
            ],
        );
        assert_eq!(a, b);
    }

    #[test]
    fn any_difference_changes_the_hash() {
        let base = props(&[("jobTitle", json!("Clerk"))]);
        let h = user_state_hash(&base, true, &[]);
        assert_ne!(h, user_state_hash(&base, false, &[]));
        assert_ne!(
            h,
            user_state_hash(&props(&[("jobTitle", json!("Manager"))]), true, &[])
        );
        assert_ne!(
            h,
            user_state_hash(
                &base,
                true,
                &[LicenseAssignment {
                    sku_id: "a".into(),
                    disabled_plans: vec![]
                }]
            )
        );
        // Empty and absent hash alike.
        let mut with_empty = base.clone();
        with_empty.insert("department".into(), json!(null));
        with_empty.insert("otherMails".into(), json!([]));
        assert_eq!(h, user_state_hash(&with_empty, true, &[]));
        assert!(same_value(None, Some(&json!(null))));
        assert!(!same_value(Some(&json!("a")), None));
        // The stored format is versioned.
        assert!(h.starts_with("v1:"));
    }
}
