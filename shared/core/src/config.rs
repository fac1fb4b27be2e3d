//! The configuration file (TOML): one connection — tenant, source, state, secrets — and its rule.
//! Validated when loaded: unknown keys are rejected, and every error names the key and the fix.
//!
//! ```toml
//! [connection]
//! name = "contoso"                     # names the state (links, cursors) of this connection
//! cloud = "global"                     # global | usgov-high | usgov-dod | china
//!
//! [source]
//! type = "file"                        # adapter settings follow, checked by the adapter
//! location = "examples/source.json"
//!
//! [state]
//! type = "sqlite"
//! path = ".state/contoso.sqlite"
//!
//! [secrets]
//! type = "env"                         # M365_TENANT, M365_CLIENT_ID, M365_CLIENT_SECRET
//!
//! [rule]
//! name = "staff"
//! [rule.mapping.attributes]
//! userPrincipalName = "{{ mail }}"
//! displayName = { attribute = "displayName" }
//! [rule.mapping.password]
//! source = "generate"
//! ```

use serde::{Deserialize, Serialize};

use crate::mapping::{GroupMappingSpec, MappingSpec};
use crate::rule::{BreakerSettings, GroupSettings, ManagerSettings, Preferences, ScopeSettings};

/// The whole file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub connection: ConnectionConfig,
    pub source: AdapterConfig,
    #[serde(default = "AdapterConfig::sqlite_default")]
    pub state: AdapterConfig,
    #[serde(default = "AdapterConfig::env_default")]
    pub secrets: AdapterConfig,
    pub rule: RuleConfig,
}

/// The tenant side of the connection.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConnectionConfig {
    /// Names the connection's state; letters, digits, `-`, `_`, `.`.
    pub name: String,
    /// `global` (also GCC), `usgov-high`, `usgov-dod`, `china`.
    #[serde(default = "global")]
    pub cloud: String,
    /// Override of the login host (a sandbox tenant: `http://127.0.0.1:PORT`).
    #[serde(default)]
    pub login_url: Option<String>,
    /// Override of the Graph host, without `/v1.0`.
    #[serde(default)]
    pub graph_url: Option<String>,
    /// Run against an embedded sandbox tenant (the quick start); no credentials needed.
    #[serde(default)]
    pub sandbox: bool,
    /// File where the embedded sandbox keeps its tenant between runs.
    #[serde(default)]
    pub sandbox_state: Option<String>,
    /// Graph requests in flight at once.
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,
    /// Tenant size class for the resource-unit quota: `small` (< 50 users), `medium`
    /// (50–500), `large` (> 500).
    #[serde(default)]
    pub tenant_size: Option<String>,
}

fn global() -> String {
    "global".to_owned()
}

fn default_concurrency() -> usize {
    8
}

/// An adapter section: `type` selects the adapter, the other keys are its own settings
/// (checked by the adapter, which names them).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AdapterConfig {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(flatten)]
    pub settings: serde_json::Map<String, serde_json::Value>,
}

impl AdapterConfig {
    fn sqlite_default() -> Self {
        Self {
            kind: "sqlite".to_owned(),
            settings: serde_json::Map::new(),
        }
    }

    fn env_default() -> Self {
        Self {
            kind: "env".to_owned(),
            settings: serde_json::Map::new(),
        }
    }
}

/// A rule: scope, mapping, preferences, breaker, groups, manager.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    pub name: String,
    /// Graph property that finds existing tenant users.
    #[serde(default = "upn")]
    pub match_attribute: String,
    #[serde(default)]
    pub scope: ScopeSettings,
    #[serde(default)]
    pub preferences: Preferences,
    #[serde(default)]
    pub breaker: BreakerSettings,
    #[serde(default)]
    pub groups: GroupSettings,
    #[serde(default)]
    pub manager: ManagerSettings,
    pub mapping: MappingSpec,
    #[serde(default)]
    pub group_mapping: GroupMappingSpec,
}

fn upn() -> String {
    "userPrincipalName".to_owned()
}

/// A configuration that cannot be used: the message names the key and the fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

impl Config {
    /// Parses and validates TOML text. `origin` names the file in messages.
    pub fn from_toml(text: &str, origin: &str) -> Result<Config, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| {
            ConfigError(format!(
                "{origin}: {}",
                e.to_string().trim_end().replace('\n', "\n  ")
            ))
        })?;
        config.validate(origin)?;
        Ok(config)
    }

    /// Checks what the types alone cannot.
    pub fn validate(&self, origin: &str) -> Result<(), ConfigError> {
        let fail =
            |key: &str, message: String| Err(ConfigError(format!("{origin}: {key}: {message}")));
        let name_ok = |name: &str| {
            !name.is_empty()
                && name.len() <= 64
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        };
        if !name_ok(&self.connection.name) {
            return fail(
                "connection.name",
                format!(
                    "{:?} is not a valid name: use 1 to 64 letters, digits, '-', '_' or '.'",
                    self.connection.name
                ),
            );
        }
        if !name_ok(&self.rule.name) {
            return fail(
                "rule.name",
                format!(
                    "{:?} is not a valid name: use 1 to 64 letters, digits, '-', '_' or '.'",
                    self.rule.name
                ),
            );
        }
        if !["global", "usgov-high", "usgov-dod", "china"].contains(&self.connection.cloud.as_str())
        {
            return fail(
                "connection.cloud",
                format!(
                    "{:?} is not a cloud: use global, usgov-high, usgov-dod or china",
                    self.connection.cloud
                ),
            );
        }
        if self.connection.concurrency == 0 || self.connection.concurrency > 64 {
            return fail(
                "connection.concurrency",
                format!(
                    "{} is out of range: use 1 to 64",
                    self.connection.concurrency
                ),
            );
        }
        if let Some(size) = &self.connection.tenant_size
            && !["small", "medium", "large"].contains(&size.as_str())
        {
            return fail(
                "connection.tenant_size",
                format!("{size:?} is not a size: use small, medium or large"),
            );
        }
        let mapping = &self.rule.mapping;
        if mapping.password.is_none() {
            return fail(
                "rule.mapping.password",
                "is missing: a rule must say how new users get their first password, e.g. [rule.mapping.password] source = \"generate\" (DESIGN §4)".to_owned(),
            );
        }
        if !mapping.attributes.contains_key("userPrincipalName") {
            return fail(
                "rule.mapping.attributes.userPrincipalName",
                "is missing: every user needs a userPrincipalName, e.g. userPrincipalName = \"{{ mail }}\"".to_owned(),
            );
        }
        if !mapping.attributes.contains_key("displayName") {
            return fail(
                "rule.mapping.attributes.displayName",
                "is missing: Graph requires a displayName for every user".to_owned(),
            );
        }
        if !mapping.attributes.contains_key(&self.rule.match_attribute) {
            return fail(
                "rule.match_attribute",
                format!(
                    "{:?} is not mapped in rule.mapping.attributes: the engine finds existing tenant users by the value it maps there",
                    self.rule.match_attribute
                ),
            );
        }
        if let Err(message) =
            crate::mapping::check_match_attribute(mapping, &self.rule.match_attribute)
        {
            return fail("rule.match_attribute", message);
        }
        let breaker = &self.rule.breaker;
        if !(0.0..=100.0).contains(&breaker.max_percent) {
            return fail(
                "rule.breaker.max_percent",
                format!("{} is out of range: use 0 to 100", breaker.max_percent),
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
[connection]
name = "contoso"

[source]
type = "file"
location = "users.json"

[rule]
name = "staff"
[rule.mapping.attributes]
userPrincipalName = "{{ mail }}"
displayName = { attribute = "displayName" }
[rule.mapping.password]
source = "generate"
"#;

    #[test]
    fn minimal_config_gets_the_documented_defaults() {
        let config = Config::from_toml(MINIMAL, "test.toml").unwrap();
        assert_eq!(config.connection.cloud, "global");
        assert_eq!(config.connection.concurrency, 8);
        assert_eq!(config.state.kind, "sqlite");
        assert_eq!(config.secrets.kind, "env");
        assert_eq!(config.source.kind, "file");
        assert_eq!(config.source.settings["location"], "users.json");
        assert_eq!(config.rule.match_attribute, "userPrincipalName");
        assert_eq!(config.rule.preferences, Preferences::default());
    }

    #[test]
    fn unknown_keys_are_rejected_with_their_name() {
        let text = MINIMAL.replace("[rule]\n", "[rule]\nallow_creat = true\n");
        let error = Config::from_toml(&text, "test.toml").unwrap_err().0;
        assert!(error.contains("allow_creat"), "{error}");
        assert!(error.starts_with("test.toml"), "{error}");
        let text = MINIMAL.replace(
            "[rule]\n",
            "[rule.preferences]\nallow_creat = true\n[rule]\n",
        );
        assert!(Config::from_toml(&text, "t").is_err());
    }

    #[test]
    fn a_rule_without_password_mapping_is_refused() {
        let text = MINIMAL.replace("[rule.mapping.password]\nsource = \"generate\"\n", "");
        let error = Config::from_toml(&text, "t").unwrap_err().0;
        assert!(error.contains("rule.mapping.password"), "{error}");
    }

    #[test]
    fn a_match_attribute_generated_by_unique_is_refused_at_load() {
        for upn in [
            "{{ unique(uid | lower, numbered(uid | lower)) }}@example.com",
            "{{ numbered(uid) | first }}@example.com",
        ] {
            let text = MINIMAL.replace("\"{{ mail }}\"", &format!("{upn:?}"));
            let error = Config::from_toml(&text, "test.toml").unwrap_err().0;
            assert!(
                error.starts_with("test.toml: rule.match_attribute: \"userPrincipalName\""),
                "{error}"
            );
            assert!(error.contains("not an identity"), "{error}");
            assert!(error.contains("employeeId"), "{error}");
        }
        // Matching on a source attribute while the UPN is generated is the safe setup.
        let text = MINIMAL
            .replace(
                "\"{{ mail }}\"",
                "\"{{ unique(uid, numbered(uid)) }}@example.com\"\nemployeeId = { attribute = \"employeeNumber\" }",
            )
            .replace("name = \"staff\"\n", "name = \"staff\"\nmatch_attribute = \"employeeId\"\n");
        Config::from_toml(&text, "test.toml").unwrap();
    }

    #[test]
    fn invalid_values_name_key_and_fix() {
        let cases = [
            (
                "name = \"contoso\"",
                "name = \"con toso\"",
                "connection.name",
            ),
            (
                "[connection]\n",
                "[connection]\ncloud = \"mars\"\n",
                "connection.cloud",
            ),
            (
                "[connection]\n",
                "[connection]\nconcurrency = 0\n",
                "connection.concurrency",
            ),
            (
                "[rule]\nname = \"staff\"\n",
                "[rule]\nname = \"staff\"\nmatch_attribute = \"employeeId\"\n",
                "rule.match_attribute",
            ),
        ];
        for (from, to, key) in cases {
            let text = MINIMAL.replacen(from, to, 1);
            let error = Config::from_toml(&text, "t").unwrap_err().0;
            assert!(error.contains(key), "{key}: {error}");
        }
    }
}
