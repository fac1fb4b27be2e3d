//! A whole read of the directory in one session: users under the user base DNs, groups under the
//! group base DNs, memberships resolved from member DNs to ids, the scope by group membership.

use std::collections::{BTreeSet, HashMap, HashSet};

use ldap3::SearchEntry;
use m365_core::config::ldap_source::{DirectoryKind, LdapSourceConfig};
use m365_core::{ObjectKind, RecordError, SourceError, SourceGroup, SourceUser};

use crate::connect::{SearchError, Session};
use crate::entry::{
    DN_ATTRIBUTE, ValueRange, attributes, enabled, entry_id, normalize_dn, texts, value_range,
};

/// The member attributes of the group classes read: `member` (groupOfNames, Active Directory)
/// and `uniqueMember` (groupOfUniqueNames).
pub const MEMBER_ATTRIBUTES: [&str; 2] = ["member", "uniqueMember"];

/// The members of an Active Directory group asked for in the group search: the first window of
/// Active Directory's default MaxValRange (1500 values,
/// <https://learn.microsoft.com/en-us/troubleshoot/windows-server/active-directory/view-set-ldap-policy-using-ntdsutil>).
/// Asking for the window explicitly keeps each answer's size bounded, and every server answers
/// alike: Samba, for one, answers a plain `member` with all values at once. The rest is read by
/// [`complete_ranges`].
pub const AD_FIRST_MEMBERS: &str = "member;range=0-1499";

/// Everything one full read found.
#[derive(Debug, Default)]
pub struct DirectoryRead {
    pub users: Vec<SourceUser>,
    pub groups: Vec<SourceGroup>,
    pub errors: Vec<RecordError>,
}

/// A group entry before its members are resolved.
struct RawGroup {
    id: String,
    dn: String,
    name: String,
    member_dns: Vec<String>,
}

/// The user attributes requested: those the rule reads (`mapped`; `None`: every user
/// attribute, `*`), the configured extra ones, and those the source reads itself.
pub fn user_attributes(
    config: &LdapSourceConfig,
    mapped: Option<&BTreeSet<String>>,
) -> Vec<String> {
    let mut wanted: Vec<String> = match mapped {
        Some(names) => names
            .iter()
            .filter(|name| name.as_str() != DN_ATTRIBUTE)
            .cloned()
            .collect(),
        None => vec!["*".to_owned()],
    };
    wanted.extend(config.attributes.iter().cloned());
    wanted.push(config.id_attribute().to_owned());
    wanted.push("manager".to_owned());
    if let Some(attribute) = &config.disabled_attribute {
        wanted.push(attribute.clone());
    }
    if config.directory == m365_core::config::ldap_source::DirectoryKind::ActiveDirectory {
        wanted.push("userAccountControl".to_owned());
    }
    wanted.sort_unstable();
    wanted.dedup();
    wanted
}

/// The group attributes requested.
pub fn group_attributes(config: &LdapSourceConfig) -> Vec<String> {
    let mut wanted = vec![
        config.id_attribute().to_owned(),
        "cn".to_owned(),
        "description".to_owned(),
    ];
    match config.directory {
        DirectoryKind::Openldap => wanted.extend(MEMBER_ATTRIBUTES.map(str::to_owned)),
        DirectoryKind::ActiveDirectory => wanted.push(AD_FIRST_MEMBERS.to_owned()),
    }
    wanted
}

/// Reads the rest of every ranged attribute of `entry` (`member;range=0-1499`, Active
/// Directory's range retrieval,
/// <https://learn.microsoft.com/en-us/windows/win32/adsi/attribute-range-retrieval>): base reads
/// of the entry ask for `member;range=1500-*` and so on until a window ends in `*`. The values
/// end up under the attribute's plain name (`member`). Entries without ranged attributes cost
/// nothing.
pub async fn complete_ranges(
    session: &mut Session,
    entry: &mut SearchEntry,
) -> Result<(), SourceError> {
    let ranged: Vec<(String, ValueRange)> = entry
        .attrs
        .keys()
        .filter_map(|key| value_range(key).map(|range| (key.clone(), range)))
        .collect();
    for (key, range) in ranged {
        let mut values = entry.attrs.remove(&key).unwrap_or_default();
        let odd = |detail: String| {
            SourceError::Unreadable(format!(
                "ldap source: the values of {} of {:?} came in windows that do not follow each other ({detail})",
                range.attribute, entry.dn
            ))
        };
        if range.first != 0 {
            return Err(odd(format!("the first window is {key}")));
        }
        let mut last = range.last;
        while let Some(end) = last {
            let next = end
                .checked_add(1)
                .ok_or_else(|| odd(format!("a window ends at {end}")))?;
            let wanted = format!("{};range={next}-*", range.attribute);
            let Some(mut answer) = session.read(&entry.dn, &[wanted]).await? else {
                return Err(SourceError::Unavailable(format!(
                    "ldap source: {:?} was removed while its {} were read; the next run reads it again",
                    entry.dn, range.attribute
                )));
            };
            let window = answer.attrs.keys().find_map(|key| {
                value_range(key)
                    .filter(|r| r.attribute.eq_ignore_ascii_case(&range.attribute))
                    .map(|r| (key.clone(), r))
            });
            // No window: no value from `next` on (the attribute lost values meanwhile).
            let Some((window_key, window)) = window else {
                break;
            };
            if window.first != next {
                return Err(odd(format!("{window_key} after a window ending at {end}")));
            }
            values.extend(answer.attrs.remove(&window_key).unwrap_or_default());
            last = window.last;
        }
        entry
            .attrs
            .entry(range.attribute.clone())
            .or_default()
            .extend(values);
    }
    Ok(())
}

/// A user entry as a record, or the error that keeps it out.
pub fn user_record(
    entry: &SearchEntry,
    config: &LdapSourceConfig,
) -> Result<SourceUser, RecordError> {
    let Some(id) = entry_id(entry, config) else {
        return Err(RecordError {
            kind: ObjectKind::User,
            location: entry.dn.clone(),
            source_id: None,
            message: format!(
                "the entry has no {} (it cannot be told apart from others); check that the \
                 bind DN may read it",
                config.id_attribute()
            ),
        });
    };
    Ok(SourceUser {
        id,
        enabled: enabled(entry, config),
        attributes: attributes(entry),
    })
}

fn raw_group(entry: &SearchEntry, config: &LdapSourceConfig) -> Result<RawGroup, RecordError> {
    let id = entry_id(entry, config).ok_or_else(|| RecordError {
        kind: ObjectKind::Group,
        location: entry.dn.clone(),
        source_id: None,
        message: format!("the group entry has no {}", config.id_attribute()),
    })?;
    let name = texts(entry, "cn")
        .and_then(|v| v.first().cloned())
        .ok_or_else(|| RecordError {
            kind: ObjectKind::Group,
            location: entry.dn.clone(),
            source_id: Some(id.clone()),
            message: "the group entry has no cn (its name in the tenant)".to_owned(),
        })?;
    let member_dns = MEMBER_ATTRIBUTES
        .iter()
        .filter_map(|attribute| texts(entry, attribute))
        .flatten()
        .map(|dn| normalize_dn(dn))
        .collect();
    Ok(RawGroup {
        id,
        dn: normalize_dn(&entry.dn),
        name,
        member_dns,
    })
}

/// Searches every base DN; a base that does not exist is an error naming the key to fix (a
/// typo must not read as "everyone was deleted").
async fn search_bases(
    session: &mut Session,
    key: &str,
    bases: &[String],
    filter: &str,
    attributes: &[String],
) -> Result<Vec<SearchEntry>, SourceError> {
    let mut entries = Vec::new();
    for base in bases {
        match session.search(base, filter, attributes).await {
            Ok(found) => entries.extend(found),
            Err(SearchError::NoSuchBase(base)) => {
                return Err(SourceError::Unavailable(format!(
                    "ldap source: {key} {base:?} does not exist in the directory; fix {key}"
                )));
            }
            Err(SearchError::Failed(error)) => return Err(error),
        }
    }
    Ok(entries)
}

/// Reads users and groups in one session.
pub async fn read_directory(
    session: &mut Session,
    config: &LdapSourceConfig,
    mapped: Option<&BTreeSet<String>>,
) -> Result<DirectoryRead, SourceError> {
    let mut read = DirectoryRead::default();
    let user_entries = search_bases(
        session,
        "user_base_dns",
        &config.user_base_dns,
        config.user_filter(),
        &user_attributes(config, mapped),
    )
    .await?;
    let mut users_by_dn = HashMap::new();
    for entry in &user_entries {
        match user_record(entry, config) {
            Ok(user) => {
                users_by_dn.insert(normalize_dn(&entry.dn), user.id.clone());
                read.users.push(user);
            }
            Err(error) => read.errors.push(error),
        }
    }
    let mut group_entries = search_bases(
        session,
        "group_base_dns",
        &config.group_base_dns,
        config.group_filter(),
        &group_attributes(config),
    )
    .await?;
    for entry in &mut group_entries {
        complete_ranges(session, entry).await?;
    }
    let mut raw_groups = Vec::new();
    for entry in &group_entries {
        match raw_group(entry, config) {
            Ok(group) => raw_groups.push(group),
            Err(error) => read.errors.push(error),
        }
    }
    if !config.member_of_groups.is_empty() {
        let scope = scope_members(session, config, &raw_groups, &users_by_dn).await?;
        read.users.retain(|user| scope.contains(&user.id));
    }
    let by_dn: HashMap<&str, &RawGroup> = raw_groups.iter().map(|g| (g.dn.as_str(), g)).collect();
    read.groups = raw_groups
        .iter()
        .map(|group| SourceGroup {
            id: group.id.clone(),
            name: group.name.clone(),
            members: resolve_members(group, &by_dn, &users_by_dn, config.nested_groups),
            attributes: Default::default(),
        })
        .collect();
    Ok(read)
}

/// The user ids among a group's members; with `nested`, members of member groups too (each
/// group visited once, so cycles end).
fn resolve_members(
    group: &RawGroup,
    groups: &HashMap<&str, &RawGroup>,
    users: &HashMap<String, String>,
    nested: bool,
) -> Vec<String> {
    let mut members = Vec::new();
    let mut seen_users = HashSet::new();
    let mut visited = HashSet::from([group.dn.as_str()]);
    let mut pending = vec![group];
    while let Some(current) = pending.pop() {
        for dn in &current.member_dns {
            if let Some(id) = users.get(dn) {
                if seen_users.insert(id.clone()) {
                    members.push(id.clone());
                }
            } else if nested
                && let Some(inner) = groups.get(dn.as_str())
                && visited.insert(inner.dn.as_str())
            {
                pending.push(inner);
            }
        }
    }
    members
}

/// The ids of the users in scope through `member_of_groups`: members of the named groups, read
/// by DN whether or not they are under the group base DNs.
async fn scope_members(
    session: &mut Session,
    config: &LdapSourceConfig,
    groups: &[RawGroup],
    users: &HashMap<String, String>,
) -> Result<HashSet<String>, SourceError> {
    let mut known: HashMap<&str, &RawGroup> = groups.iter().map(|g| (g.dn.as_str(), g)).collect();
    let mut extra = Vec::new();
    for dn in &config.member_of_groups {
        let dn = normalize_dn(dn);
        if known.contains_key(dn.as_str()) {
            continue;
        }
        let mut entry = session
            .read(&dn, &group_attributes(config))
            .await?
            .ok_or_else(|| {
                SourceError::Unavailable(format!(
                    "ldap source: member_of_groups names {dn:?}, which does not exist; fix member_of_groups"
                ))
            })?;
        complete_ranges(session, &mut entry).await?;
        let group = raw_group(&entry, config).map_err(|e| {
            SourceError::Unreadable(format!(
                "ldap source: member_of_groups {dn:?}: {}",
                e.message
            ))
        })?;
        extra.push(group);
    }
    known.extend(extra.iter().map(|g| (g.dn.as_str(), g)));
    let mut scope = HashSet::new();
    for dn in &config.member_of_groups {
        if let Some(group) = known.get(normalize_dn(dn).as_str()) {
            scope.extend(resolve_members(group, &known, users, config.nested_groups));
        }
    }
    Ok(scope)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn group(dn: &str, members: &[&str]) -> RawGroup {
        RawGroup {
            id: dn.to_owned(),
            dn: dn.to_owned(),
            name: dn.to_owned(),
            member_dns: members.iter().map(|m| (*m).to_owned()).collect(),
        }
    }

    #[test]
    fn nested_members_are_flattened_once_and_cycles_end() {
        // a ⊃ {u1, b}; b ⊃ {u2, a, u1}: a cycle, and u1 twice.
        let a = group("cn=a", &["uid=u1", "cn=b"]);
        let b = group("cn=b", &["uid=u2", "cn=a", "uid=u1", "uid=stranger"]);
        let groups: HashMap<&str, &RawGroup> = [("cn=a", &a), ("cn=b", &b)].into();
        let users: HashMap<String, String> = [
            ("uid=u1".to_owned(), "id-1".to_owned()),
            ("uid=u2".to_owned(), "id-2".to_owned()),
        ]
        .into();
        assert_eq!(resolve_members(&a, &groups, &users, false), vec!["id-1"]);
        let mut nested = resolve_members(&a, &groups, &users, true);
        nested.sort();
        assert_eq!(nested, vec!["id-1", "id-2"]);
    }
}
