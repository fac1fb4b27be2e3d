//! `[source] type = "ldap"`: an LDAP directory (OpenLDAP, 389 Directory Server, PingDirectory,
//! Active Directory). The adapter is `m365-source-ldap`.
//!
//! ```toml
//! [source]
//! type = "ldap"
//! url = "ldap://ldap.example.com:389"
//! starttls = true
//! ca_file = "/etc/ssl/certs/corp-ca.pem"
//! bind_dn = "cn=m365-provisioner,ou=Services,dc=example,dc=com"
//! # the bind password is the secret named here (never in this file)
//! bind_password_secret = "ldap_bind_password"
//! user_base_dns = ["ou=People,dc=example,dc=com"]
//! user_filter = "(&(objectClass=inetOrgPerson)(mail=*))"
//! group_base_dns = ["ou=Groups,dc=example,dc=com"]
//! ```

use serde::{Deserialize, Serialize};

/// The kind of directory server: it decides the defaults of the id attribute, the filters and
/// how a disabled account is recognised.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DirectoryKind {
    /// OpenLDAP, 389 Directory Server, PingDirectory: `entryUUID` ids, `inetOrgPerson` users,
    /// `groupOfNames` / `groupOfUniqueNames` groups.
    #[default]
    Openldap,
    /// Active Directory: `objectGUID` ids (binary, shown as a GUID string), `user` objects,
    /// `group` objects, disabled through `userAccountControl` (ACCOUNTDISABLE, 0x2).
    ActiveDirectory,
}

/// Settings of the LDAP source. Unknown keys are rejected.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LdapSourceConfig {
    /// `ldap://host[:389]` (plain, or StartTLS with `starttls = true`) or `ldaps://host[:636]`.
    pub url: String,
    #[serde(default)]
    pub directory: DirectoryKind,
    /// Upgrade an `ldap://` connection with StartTLS before binding.
    #[serde(default)]
    pub starttls: bool,
    /// A PEM file of the CA certificates the server's certificate must chain to (relative to
    /// the configuration file); absent: the platform's trusted roots.
    #[serde(default)]
    pub ca_file: Option<String>,
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout_seconds: u64,
    /// Limit of each LDAP operation (bind, one page of a search).
    #[serde(default = "default_operation_timeout")]
    pub operation_timeout_seconds: u64,
    /// The DN to bind as (a simple bind); absent: anonymous.
    #[serde(default)]
    pub bind_dn: Option<String>,
    /// The name of the connection secret that holds the bind password: a key of `[extra]` in a
    /// secrets file, `M365_SECRET_<NAME>` in the environment, a key of `extra` in the Secrets
    /// Manager secret.
    #[serde(default = "default_bind_password_secret")]
    pub bind_password_secret: String,
    /// Where users are searched (subtree).
    pub user_base_dns: Vec<String>,
    /// Which entries under them are users; default by `directory`.
    #[serde(default)]
    pub user_filter: Option<String>,
    /// Only members of these groups (DNs) are in scope; empty: every user the filter finds.
    #[serde(default)]
    pub member_of_groups: Vec<String>,
    /// Where groups are searched (subtree); empty: the source has no groups.
    #[serde(default)]
    pub group_base_dns: Vec<String>,
    /// Which entries under them are groups; default by `directory`.
    #[serde(default)]
    pub group_filter: Option<String>,
    /// Members of member groups count as members (flattened); off: direct user members only.
    #[serde(default)]
    pub nested_groups: bool,
    /// The attribute whose values mean "disabled" (OpenLDAP has no standard one); Active
    /// Directory uses `userAccountControl` and needs none.
    #[serde(default)]
    pub disabled_attribute: Option<String>,
    /// Values of `disabled_attribute` (compared case-insensitively) that mean disabled.
    #[serde(default)]
    pub disabled_values: Vec<String>,
    /// User attributes to read beside those the rule reads (its mapping, scope filter and label)
    /// and those the source reads itself (the id, `manager`, the disabled attribute). Only
    /// these are asked of the directory.
    #[serde(default)]
    pub attributes: Vec<String>,
    /// Entries per page of a search (RFC 2696 paged results).
    #[serde(default = "default_page_size")]
    pub page_size: u32,
    /// Read only what changed since the last run: through RFC 4533 content synchronization on
    /// OpenLDAP and its kin (OpenLDAP's syncprov overlay with a session log), or where the
    /// directory does not offer it, through a `modifyTimestamp` mark (deletions then wait for
    /// the periodic full pass, so only while `full_sync_every_hours` is above 0); through
    /// `uSNChanged` and the Show Deleted control on Active Directory. Off, or with
    /// `member_of_groups`: every run reads the whole directory.
    #[serde(default = "default_true")]
    pub content_sync: bool,
    /// With `content_sync`, still read the whole directory when the last full pass
    /// is this many hours old (a full pass finds what change reports can miss). 0: only when
    /// the directory no longer accepts the stored cookie.
    #[serde(default = "default_full_sync_hours")]
    pub full_sync_every_hours: u64,
}

fn default_true() -> bool {
    true
}

fn default_full_sync_hours() -> u64 {
    24
}

fn default_connect_timeout() -> u64 {
    10
}

fn default_operation_timeout() -> u64 {
    60
}

fn default_bind_password_secret() -> String {
    "ldap_bind_password".to_owned()
}

fn default_page_size() -> u32 {
    500
}

/// A setting of [`LdapSourceConfig`] that cannot work. Each message names the key and the fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LdapSourceConfigError {
    #[error("ldap source: url {0:?} is not an LDAP URL; write ldap://host:389 or ldaps://host:636")]
    Url(String),
    #[error(
        "ldap source: starttls = true with an ldaps:// url; use one: ldaps:// is TLS from the start"
    )]
    StartTlsOverLdaps,
    #[error("ldap source: `{0}` is empty; list at least one DN")]
    NoBaseDn(&'static str),
    #[error("ldap source: {key} {value:?} is not a DN; write it as attr=value,attr=value")]
    NotADn { key: &'static str, value: String },
    #[error("ldap source: `{0}` must be a filter in parentheses, e.g. (objectClass=person)")]
    Filter(&'static str),
    #[error("ldap source: `{0}` must be at least 1")]
    Zero(&'static str),
    #[error(
        "ldap source: page_size {0} is over 5000; directories cap pages at 1000 (Active Directory's MaxPageSize) to 5000"
    )]
    PageSize(u32),
    #[error(
        "ldap source: `disabled_values` needs `disabled_attribute` (and the reverse); set both or neither"
    )]
    DisabledHalf,
    #[error("ldap source: `bind_password_secret` is empty; name the secret holding the password")]
    NoPasswordSecret,
}

impl LdapSourceConfig {
    /// The user filter in use.
    pub fn user_filter(&self) -> &str {
        match (&self.user_filter, self.directory) {
            (Some(filter), _) => filter,
            (None, DirectoryKind::Openldap) => "(objectClass=inetOrgPerson)",
            (None, DirectoryKind::ActiveDirectory) => {
                "(&(objectCategory=person)(objectClass=user))"
            }
        }
    }

    /// The group filter in use.
    pub fn group_filter(&self) -> &str {
        match (&self.group_filter, self.directory) {
            (Some(filter), _) => filter,
            (None, DirectoryKind::Openldap) => {
                "(|(objectClass=groupOfNames)(objectClass=groupOfUniqueNames))"
            }
            (None, DirectoryKind::ActiveDirectory) => "(objectClass=group)",
        }
    }

    /// Whether runs read only the changes (`content_sync` is on and can serve this
    /// configuration).
    pub fn reads_changes(&self) -> bool {
        self.content_sync && self.member_of_groups.is_empty()
    }

    /// The attribute holding each entry's stable id.
    pub fn id_attribute(&self) -> &'static str {
        match self.directory {
            DirectoryKind::Openldap => "entryUUID",
            DirectoryKind::ActiveDirectory => "objectGUID",
        }
    }

    /// Checks the settings; the LDAP source refuses to start without this passing.
    pub fn validate(&self) -> Result<(), LdapSourceConfigError> {
        let url = self.url.trim().to_ascii_lowercase();
        let rest = url
            .strip_prefix("ldap://")
            .or_else(|| url.strip_prefix("ldaps://"))
            .ok_or_else(|| LdapSourceConfigError::Url(self.url.clone()))?;
        if rest.trim_end_matches('/').is_empty() || rest.contains(' ') {
            return Err(LdapSourceConfigError::Url(self.url.clone()));
        }
        if self.starttls && url.starts_with("ldaps://") {
            return Err(LdapSourceConfigError::StartTlsOverLdaps);
        }
        if self.user_base_dns.is_empty() {
            return Err(LdapSourceConfigError::NoBaseDn("user_base_dns"));
        }
        let dns = [
            ("user_base_dns", &self.user_base_dns),
            ("group_base_dns", &self.group_base_dns),
            ("member_of_groups", &self.member_of_groups),
        ];
        for (key, values) in dns {
            if let Some(bad) = values.iter().find(|dn| !looks_like_dn(dn)) {
                return Err(LdapSourceConfigError::NotADn {
                    key,
                    value: bad.clone(),
                });
            }
        }
        if let Some(bind) = &self.bind_dn
            && !looks_like_dn(bind)
        {
            return Err(LdapSourceConfigError::NotADn {
                key: "bind_dn",
                value: bind.clone(),
            });
        }
        for (key, filter) in [
            ("user_filter", &self.user_filter),
            ("group_filter", &self.group_filter),
        ] {
            if let Some(filter) = filter
                && !(filter.trim().starts_with('(') && filter.trim().ends_with(')'))
            {
                return Err(LdapSourceConfigError::Filter(key));
            }
        }
        if self.connect_timeout_seconds == 0 {
            return Err(LdapSourceConfigError::Zero("connect_timeout_seconds"));
        }
        if self.operation_timeout_seconds == 0 {
            return Err(LdapSourceConfigError::Zero("operation_timeout_seconds"));
        }
        if self.page_size == 0 {
            return Err(LdapSourceConfigError::Zero("page_size"));
        }
        if self.page_size > 5000 {
            return Err(LdapSourceConfigError::PageSize(self.page_size));
        }
        if self.disabled_attribute.is_some() == self.disabled_values.is_empty() {
            return Err(LdapSourceConfigError::DisabledHalf);
        }
        if self.bind_password_secret.trim().is_empty() {
            return Err(LdapSourceConfigError::NoPasswordSecret);
        }
        Ok(())
    }
}

/// `attr=value` pairs separated by commas (no full RFC 4514 parse: the server judges the rest).
fn looks_like_dn(text: &str) -> bool {
    let text = text.trim();
    !text.is_empty()
        && text.split(',').all(|rdn| {
            rdn.split_once('=')
                .is_some_and(|(attr, _)| !attr.trim().is_empty())
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> LdapSourceConfig {
        toml::from_str(
            r#"
            url = "ldap://127.0.0.1:389"
            user_base_dns = ["ou=People,dc=example,dc=com"]
            "#,
        )
        .unwrap()
    }

    #[test]
    fn defaults_follow_the_directory_kind() {
        let c = config();
        c.validate().unwrap();
        assert_eq!(c.id_attribute(), "entryUUID");
        assert_eq!(c.user_filter(), "(objectClass=inetOrgPerson)");
        assert_eq!(c.bind_password_secret, "ldap_bind_password");
        assert_eq!(c.page_size, 500);
        let ad = LdapSourceConfig {
            directory: DirectoryKind::ActiveDirectory,
            ..config()
        };
        assert_eq!(ad.id_attribute(), "objectGUID");
        assert_eq!(ad.group_filter(), "(objectClass=group)");
    }

    #[test]
    fn bad_settings_name_the_key() {
        let cases: Vec<(LdapSourceConfig, &str)> = vec![
            (
                LdapSourceConfig {
                    url: "http://ldap".into(),
                    ..config()
                },
                "url",
            ),
            (
                LdapSourceConfig {
                    url: "ldaps://ldap".into(),
                    starttls: true,
                    ..config()
                },
                "starttls",
            ),
            (
                LdapSourceConfig {
                    user_base_dns: vec![],
                    ..config()
                },
                "user_base_dns",
            ),
            (
                LdapSourceConfig {
                    member_of_groups: vec!["Accounting".into()],
                    ..config()
                },
                "member_of_groups",
            ),
            (
                LdapSourceConfig {
                    user_filter: Some("objectClass=person".into()),
                    ..config()
                },
                "user_filter",
            ),
            (
                LdapSourceConfig {
                    page_size: 0,
                    ..config()
                },
                "page_size",
            ),
            (
                LdapSourceConfig {
                    disabled_values: vec!["inactive".into()],
                    ..config()
                },
                "disabled_attribute",
            ),
        ];
        for (c, key) in cases {
            let error = c.validate().unwrap_err().to_string();
            assert!(error.contains(key), "{key}: {error}");
        }
    }
}
