//! The state hash of a linked user: what was last applied, reduced to one string. Planning
//! compares the hash of the desired state with the stored one and stops there when they agree,
//! so an unchanged user costs no Graph call and no attribute comparison.

use std::collections::BTreeMap;

use crate::model::LicenseAssignment;

/// FNV-1a, 64 bits: stable across versions and platforms (unlike `std`'s hasher), and plenty
/// against accidental collisions of one user's state with its own next state.
pub(crate) fn fnv1a(bytes: &[u8], mut hash: u64) -> u64 {
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

/// The text a state hash is taken of, in this order: `{"p":{…},"e":…,"l":[…]}`.
#[derive(serde::Serialize)]
struct HashedState<'a> {
    p: BTreeMap<&'a String, &'a serde_json::Value>,
    e: bool,
    l: Vec<LicenseAssignment>,
}

/// FNV-1a over whatever is written to it: the canonical text is hashed as it is produced, never
/// held whole.
struct FnvWriter(u64);

impl std::io::Write for FnvWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 = fnv1a(buf, self.0);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
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
    // A BTreeMap serializes its keys in order: the text is canonical for equal states.
    let state = HashedState {
        p: properties
            .iter()
            .filter(|(_, v)| !is_empty_value(v))
            .collect(),
        e: enabled,
        l: licenses,
    };
    let mut writer = FnvWriter(0xcbf2_9ce4_8422_2325);
    // Writing to the hasher cannot fail, and neither can serializing strings, numbers and maps
    // with string keys.
    let _ = serde_json::to_writer(&mut writer, &state);
    format!("v1:{:016x}", writer.0)
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

    /// Hashes stored by earlier versions stay valid: the text hashed is exactly what the first
    /// version built through a `serde_json::Value` (`{"p":…,"e":…,"l":…}`, in that order).
    #[test]
    fn the_hashed_text_is_the_stored_format() {
        let properties = props(&[
            ("userPrincipalName", json!("ann.lee@example.com")),
            ("otherMails", json!(["a@example.org", "é\"quoted\""])),
            (
                "employeeOrgData",
                json!({"division": "R&D", "costCenter": "42"}),
            ),
            ("department", json!(null)),
            (
                "onPremisesExtensionAttributes",
                json!({"extensionAttribute1": 1.5}),
            ),
        ]);
        let licenses = [LicenseAssignment {
            sku_id: "c7df2760-2c81-4ef7-b578-5b5392b571df".into(),
            disabled_plans: vec!["b".into(), "a".into()],
        }];
        let filtered: BTreeMap<&String, &serde_json::Value> = properties
            .iter()
            .filter(|(_, v)| !is_empty_value(v))
            .collect();
        let mut sorted = licenses.to_vec();
        sorted[0].disabled_plans.sort();
        let text = json!({ "p": filtered, "e": false, "l": sorted }).to_string();
        let expected = format!("v1:{:016x}", fnv1a(text.as_bytes(), 0xcbf2_9ce4_8422_2325));
        assert_eq!(user_state_hash(&properties, false, &licenses), expected);
        assert_eq!(expected, "v1:3dc255174fd8d61b");
    }
}
