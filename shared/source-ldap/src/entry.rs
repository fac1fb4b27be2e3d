//! Directory entries as the engine's records: the stable id, DNs in one normal form, attribute
//! values, the enabled flag.

use ldap3::SearchEntry;
use m365_core::config::ldap_source::{DirectoryKind, LdapSourceConfig};
use m365_core::{AttrValue, Attributes};

/// The attribute under which every user carries its own DN (the engine's default
/// `manager.dn_attribute`).
pub const DN_ATTRIBUTE: &str = "dn";

/// Active Directory's ACCOUNTDISABLE bit of `userAccountControl`
/// (<https://learn.microsoft.com/en-us/troubleshoot/windows-server/active-directory/useraccountcontrol-manipulate-account-properties>).
const ACCOUNTDISABLE: i64 = 0x2;

/// A DN in one form, so that the same entry written two ways compares equal: no spaces around
/// the separators, attribute types in lower case, values lower-cased (DN values of the usual
/// naming attributes compare case-insensitively). Escaped commas (`\,`) stay inside their value.
pub fn normalize_dn(dn: &str) -> String {
    let mut rdns = Vec::new();
    let mut current = String::new();
    let mut escaped = false;
    for c in dn.chars() {
        if escaped {
            current.push(c);
            escaped = false;
        } else if c == '\\' {
            current.push(c);
            escaped = true;
        } else if c == ',' {
            rdns.push(std::mem::take(&mut current));
        } else {
            current.push(c);
        }
    }
    rdns.push(current);
    rdns.iter()
        .map(|rdn| match rdn.split_once('=') {
            Some((attr, value)) => format!(
                "{}={}",
                attr.trim().to_ascii_lowercase(),
                value.trim().to_lowercase()
            ),
            None => rdn.trim().to_lowercase(),
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// A 16-byte `objectGUID` in its string form (the first three fields little-endian,
/// <https://learn.microsoft.com/en-us/windows/win32/adschema/a-objectguid>).
pub fn guid_string(bytes: &[u8]) -> Option<String> {
    let b: &[u8; 16] = bytes.try_into().ok()?;
    Some(format!(
        "{:02x}{:02x}{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}{:02x}{:02x}{:02x}{:02x}",
        b[3],
        b[2],
        b[1],
        b[0],
        b[5],
        b[4],
        b[7],
        b[6],
        b[8],
        b[9],
        b[10],
        b[11],
        b[12],
        b[13],
        b[14],
        b[15]
    ))
}

/// The bytes of a GUID string, for a search filter by `objectGUID` (the reverse of
/// [`guid_string`]).
pub fn guid_bytes(text: &str) -> Option<[u8; 16]> {
    let hex: String = text.chars().filter(|c| *c != '-').collect();
    if hex.len() != 32 {
        return None;
    }
    let mut raw = [0u8; 16];
    for (i, slot) in raw.iter_mut().enumerate() {
        *slot = u8::from_str_radix(hex.get(i * 2..i * 2 + 2)?, 16).ok()?;
    }
    Some([
        raw[3], raw[2], raw[1], raw[0], raw[5], raw[4], raw[7], raw[6], raw[8], raw[9], raw[10],
        raw[11], raw[12], raw[13], raw[14], raw[15],
    ])
}

/// The values of attribute `name` (any case) as text.
pub fn texts<'e>(entry: &'e SearchEntry, name: &str) -> Option<&'e Vec<String>> {
    entry
        .attrs
        .iter()
        .find(|(key, _)| key.eq_ignore_ascii_case(name))
        .map(|(_, values)| values)
}

/// The raw bytes of attribute `name`: ldap3 keeps a value as text when it happens to be valid
/// UTF-8, so a binary attribute may be in either map.
pub fn binary(entry: &SearchEntry, name: &str) -> Option<Vec<u8>> {
    entry
        .bin_attrs
        .iter()
        .find(|(key, _)| key.eq_ignore_ascii_case(name))
        .and_then(|(_, values)| values.first().cloned())
        .or_else(|| texts(entry, name).and_then(|v| v.first().map(|s| s.clone().into_bytes())))
}

/// The range option of an attribute description (`member;range=0-1499`): Active Directory hands
/// out the values of a large multi-valued attribute a window at a time, each window named by the
/// indexes of its first and last value, the last window ending in `*`
/// (<https://learn.microsoft.com/en-us/windows/win32/adsi/attribute-range-retrieval>).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValueRange {
    /// The attribute description without its range option (`member`).
    pub attribute: String,
    /// The index of the window's first value.
    pub first: usize,
    /// The index of its last value; `None` (`*`): the window holds the attribute's last value.
    pub last: Option<usize>,
}

/// The range option of `description`, `None` when it has none (or a malformed one).
pub fn value_range(description: &str) -> Option<ValueRange> {
    let mut parts = description.split(';');
    let mut attribute = parts.next()?.to_owned();
    let mut range = None;
    for option in parts {
        match option.get(..6) {
            Some(name) if name.eq_ignore_ascii_case("range=") && range.is_none() => {
                range = option.get(6..);
            }
            _ => {
                attribute.push(';');
                attribute.push_str(option);
            }
        }
    }
    let (first, last) = range?.split_once('-')?;
    let first = first.trim().parse().ok()?;
    let last = match last.trim() {
        "*" => None,
        index => Some(index.parse().ok()?),
    };
    if attribute.is_empty() || last.is_some_and(|last| last < first) {
        return None;
    }
    Some(ValueRange {
        attribute,
        first,
        last,
    })
}

/// The entry's stable id, `None` when the entry lacks it (or it is malformed).
pub fn entry_id(entry: &SearchEntry, config: &LdapSourceConfig) -> Option<String> {
    match config.directory {
        DirectoryKind::Openldap => texts(entry, config.id_attribute())
            .and_then(|values| values.first())
            .map(|id| id.to_ascii_lowercase()),
        DirectoryKind::ActiveDirectory => {
            binary(entry, config.id_attribute()).and_then(|bytes| guid_string(&bytes))
        }
    }
}

/// Whether the account is enabled: Active Directory's ACCOUNTDISABLE bit, else the configured
/// `disabled_attribute` / `disabled_values`; enabled when neither says otherwise.
pub fn enabled(entry: &SearchEntry, config: &LdapSourceConfig) -> bool {
    if config.directory == DirectoryKind::ActiveDirectory
        && let Some(flags) = texts(entry, "userAccountControl")
            .and_then(|v| v.first())
            .and_then(|v| v.trim().parse::<i64>().ok())
    {
        return flags & ACCOUNTDISABLE == 0;
    }
    match &config.disabled_attribute {
        Some(attribute) => !texts(entry, attribute).is_some_and(|values| {
            values.iter().any(|value| {
                config
                    .disabled_values
                    .iter()
                    .any(|d| d.trim().eq_ignore_ascii_case(value.trim()))
            })
        }),
        None => true,
    }
}

/// The entry's attributes for the mapping: one value as text, several as a list, binary values
/// as bytes; `dn` is the entry's own DN and `manager` a DN, both in normal form.
pub fn attributes(entry: &SearchEntry) -> Attributes {
    let mut attributes = Attributes::new();
    for (name, values) in &entry.attrs {
        let value =
            if name.eq_ignore_ascii_case("manager") || name.eq_ignore_ascii_case("secretary") {
                dn_values(values)
            } else {
                match values.as_slice() {
                    [one] => AttrValue::Text(one.clone()),
                    many => AttrValue::List(many.to_vec()),
                }
            };
        attributes.insert(name.clone(), value);
    }
    for (name, values) in &entry.bin_attrs {
        if let Some(first) = values.first() {
            attributes.insert(name.clone(), AttrValue::Binary(first.clone()));
        }
    }
    attributes.insert(
        DN_ATTRIBUTE.to_owned(),
        AttrValue::Text(normalize_dn(&entry.dn)),
    );
    attributes
}

fn dn_values(values: &[String]) -> AttrValue {
    match values {
        [one] => AttrValue::Text(normalize_dn(one)),
        many => AttrValue::List(many.iter().map(|dn| normalize_dn(dn)).collect()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_written_two_ways_normalize_alike() {
        assert_eq!(
            normalize_dn("uid=jwallace, ou=People, dc=example,dc=com"),
            normalize_dn("UID=JWallace,ou=people,DC=Example,DC=com")
        );
        assert_eq!(
            normalize_dn(r"cn=Smith\, John , ou=People"),
            r"cn=smith\, john,ou=people"
        );
    }

    #[test]
    fn guids_round_trip_through_their_string_form() {
        let bytes = [
            0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0a, 0x0b, 0x0c, 0x0d, 0x0e,
            0x0f, 0x10,
        ];
        let text = guid_string(&bytes).unwrap();
        assert_eq!(text, "04030201-0605-0807-090a-0b0c0d0e0f10");
        assert_eq!(guid_bytes(&text), Some(bytes));
        assert_eq!(guid_string(&bytes[..15]), None);
        assert_eq!(guid_bytes("not-a-guid"), None);
    }

    #[test]
    fn range_options_are_parsed_and_malformed_ones_ignored() {
        assert_eq!(
            value_range("member;range=0-1499"),
            Some(ValueRange {
                attribute: "member".to_owned(),
                first: 0,
                last: Some(1499)
            })
        );
        assert_eq!(
            value_range("member;Range=1500-*"),
            Some(ValueRange {
                attribute: "member".to_owned(),
                first: 1500,
                last: None
            })
        );
        // Other options stay with the attribute.
        assert_eq!(
            value_range("member;binary;range=3-4").map(|r| r.attribute),
            Some("member;binary".to_owned())
        );
        for plain_or_malformed in [
            "member",
            "member;binary",
            "member;range=",
            "member;range=5",
            "member;range=a-9",
            "member;range=9-2",
            "member;range=-1-2",
            ";range=0-1",
        ] {
            assert_eq!(
                value_range(plain_or_malformed),
                None,
                "{plain_or_malformed}"
            );
        }
    }
}
