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

pub mod file_source;
pub mod ldap_source;
pub mod pingone_source;

use serde::{Deserialize, Serialize};

pub use file_source::FileSourceConfig;

use crate::mapping::{GroupMappingSpec, MappingSpec};
use crate::rule::{BreakerSettings, GroupSettings, ManagerSettings, Preferences, ScopeSettings};

/// The Microsoft cloud a tenant lives in. Login host, Graph host and token scope are always
/// chosen together from this value: a token of one cloud is useless against another cloud's
/// Graph (<https://learn.microsoft.com/graph/deployments>). Written `global`, `usgov-high`,
/// `usgov-dod` or `china`; parsed once, here.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum Cloud {
    /// Worldwide service, also used by GCC (moderate) tenants.
    #[default]
    Global,
    /// US Government L4 (GCC High).
    UsGovHigh,
    /// US Government L5 (DoD).
    UsGovDod,
    /// China, operated by 21Vianet.
    China,
}

impl Cloud {
    /// Token (login) host of this cloud.
    pub fn login_url(self) -> &'static str {
        match self {
            Cloud::Global => "https://login.microsoftonline.com",
            Cloud::UsGovHigh | Cloud::UsGovDod => "https://login.microsoftonline.us",
            Cloud::China => "https://login.chinacloudapi.cn",
        }
    }

    /// Graph host of this cloud, without the version segment.
    pub fn graph_url(self) -> &'static str {
        match self {
            Cloud::Global => "https://graph.microsoft.com",
            Cloud::UsGovHigh => "https://graph.microsoft.us",
            Cloud::UsGovDod => "https://dod-graph.microsoft.us",
            Cloud::China => "https://microsoftgraph.chinacloudapi.cn",
        }
    }

    /// The `.default` scope to request for this cloud's Graph.
    pub fn scope(self) -> &'static str {
        match self {
            Cloud::Global => "https://graph.microsoft.com/.default",
            Cloud::UsGovHigh => "https://graph.microsoft.us/.default",
            Cloud::UsGovDod => "https://dod-graph.microsoft.us/.default",
            Cloud::China => "https://microsoftgraph.chinacloudapi.cn/.default",
        }
    }

    /// The name configuration files use.
    pub fn name(self) -> &'static str {
        match self {
            Cloud::Global => "global",
            Cloud::UsGovHigh => "usgov-high",
            Cloud::UsGovDod => "usgov-dod",
            Cloud::China => "china",
        }
    }
}

impl std::str::FromStr for Cloud {
    type Err = String;

    /// The configuration names, and the names operators also use for them (`gcc-high`, `dod`,
    /// `21vianet`…), in any case, with or without `-`, `_` or spaces.
    fn from_str(name: &str) -> Result<Cloud, String> {
        match name
            .trim()
            .to_ascii_lowercase()
            .replace(['-', '_', ' '], "")
            .as_str()
        {
            "global" | "worldwide" | "public" | "gcc" | "azurepublic" => Ok(Cloud::Global),
            "usgovhigh" | "gcchigh" | "usgov" | "usgovl4" | "l4" => Ok(Cloud::UsGovHigh),
            "usgovdod" | "dod" | "usgovl5" | "l5" => Ok(Cloud::UsGovDod),
            "china" | "21vianet" | "mooncake" => Ok(Cloud::China),
            _ => Err(format!(
                "{name:?} is not a cloud: use global, usgov-high, usgov-dod or china"
            )),
        }
    }
}

impl TryFrom<String> for Cloud {
    type Error = String;

    fn try_from(name: String) -> Result<Cloud, String> {
        name.parse()
            .map_err(|message| format!("connection.cloud: {message}"))
    }
}

impl From<Cloud> for String {
    fn from(cloud: Cloud) -> String {
        cloud.name().to_owned()
    }
}

/// Tenant size classes of Graph's resource-unit quota for identity and access requests
/// (S < 50 users, M 50–500, L > 500: <https://learn.microsoft.com/graph/throttling-limits>).
/// Written `small`, `medium` or `large`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum TenantSize {
    Small,
    Medium,
    Large,
}

impl TenantSize {
    /// Resource units per 10 s for this tenant size.
    pub fn resource_unit_quota(self) -> u32 {
        match self {
            TenantSize::Small => 3_500,
            TenantSize::Medium => 5_000,
            TenantSize::Large => 8_000,
        }
    }
}

impl TryFrom<String> for TenantSize {
    type Error = String;

    fn try_from(name: String) -> Result<TenantSize, String> {
        match name.as_str() {
            "small" => Ok(TenantSize::Small),
            "medium" => Ok(TenantSize::Medium),
            "large" => Ok(TenantSize::Large),
            _ => Err(format!(
                "connection.tenant_size: {name:?} is not a size: use small, medium or large"
            )),
        }
    }
}

impl From<TenantSize> for String {
    fn from(size: TenantSize) -> String {
        match size {
            TenantSize::Small => "small",
            TenantSize::Medium => "medium",
            TenantSize::Large => "large",
        }
        .to_owned()
    }
}

/// The whole file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub connection: ConnectionConfig,
    pub source: SourceConfig,
    /// Absent: where the run keeps state by default (a local SQLite file on the command line,
    /// the deployment's DynamoDB table in the cloud).
    #[serde(default)]
    pub state: Option<StateConfig>,
    /// Absent: the run's default (environment variables on the command line, the deployment's
    /// Secrets Manager secret in the cloud).
    #[serde(default)]
    pub secrets: Option<SecretsConfig>,
    pub rule: RuleConfig,
}

/// The tenant side of the connection.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConnectionConfig {
    /// Names the connection's state; letters, digits, `-`, `_`, `.`.
    pub name: String,
    /// `global` (also GCC), `usgov-high`, `usgov-dod`, `china`.
    #[serde(default)]
    pub cloud: Cloud,
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
    /// Graph requests in flight at once: at most this many when `adaptive_concurrency`, else
    /// exactly this many.
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,
    /// Start with a few requests in flight and grow while Graph answers in its usual time,
    /// shrinking when answers slow down or throttling begins; `false` keeps `concurrency` fixed.
    #[serde(default = "default_true")]
    pub adaptive_concurrency: bool,
    /// Tenant size class for the resource-unit quota: `small` (< 50 users), `medium`
    /// (50–500), `large` (> 500).
    #[serde(default)]
    pub tenant_size: Option<TenantSize>,
    /// Out-of-band changes in the tenant to what this connection manages (docs/design.md#drift):
    /// `report` (the default) lists them with the plan and in the objects' history, `repair`
    /// also writes the applied state back, `off` does not look.
    #[serde(default)]
    pub drift: crate::drift::DriftMode,
    /// Read every user and group of the tenant to compare at least this often (hours); between
    /// these full reconciliations a run reads only what Graph reports changed. 0: every run.
    #[serde(default = "drift_full_every_hours")]
    pub drift_full_every_hours: u32,
}

fn drift_full_every_hours() -> u32 {
    crate::drift::DEFAULT_FULL_EVERY_HOURS
}

fn default_concurrency() -> usize {
    64
}

fn default_true() -> bool {
    true
}

/// `[source]`: where the identities come from, by `type`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum SourceConfig {
    /// A JSON file, or CSV files, local or in S3.
    File(FileSourceConfig),
    /// An LDAP directory or Active Directory.
    Ldap(ldap_source::LdapSourceConfig),
    /// A PingOne environment, through the PingOne Platform API.
    Pingone(pingone_source::PingOneSourceConfig),
}

impl SourceConfig {
    /// The `type` it is written with.
    pub fn type_name(&self) -> &'static str {
        match self {
            SourceConfig::File(_) => "file",
            SourceConfig::Ldap(_) => "ldap",
            SourceConfig::Pingone(_) => "pingone",
        }
    }
}

/// `[state]`: where the connection's links, checkpoints, errors and runs are kept, by `type`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case", deny_unknown_fields)]
pub enum StateConfig {
    /// A local SQLite file; `path` relative to the configuration file, default
    /// `.state/<connection>.sqlite`.
    Sqlite {
        #[serde(default)]
        path: Option<String>,
    },
    /// The cloud deployment's DynamoDB table (`M365_TABLE`).
    Dynamodb {},
}

impl SourceConfig {
    /// The `type`s there are.
    pub const TYPES: &[&str] = &["file", "ldap", "pingone"];
}

impl StateConfig {
    /// The `type`s there are.
    pub const TYPES: &[&str] = &["sqlite", "dynamodb"];

    /// The `type` it is written with.
    pub fn type_name(&self) -> &'static str {
        match self {
            StateConfig::Sqlite { .. } => "sqlite",
            StateConfig::Dynamodb {} => "dynamodb",
        }
    }
}

/// `[secrets]`: where the tenant id, client id and client secret (or certificate,
/// docs/operations.md#certificate-credentials) come from, by `type`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case", deny_unknown_fields)]
pub enum SecretsConfig {
    /// `M365_TENANT`, `M365_CLIENT_ID`, `M365_CLIENT_SECRET` (or `M365_CLIENT_CERTIFICATE_PEM`
    /// and `M365_CLIENT_PRIVATE_KEY_PEM`).
    Env {},
    /// A TOML file with `tenant`, `client_id`, `client_secret` (or `client_certificate_pem` and
    /// `client_private_key_pem`); `path` relative to the configuration file.
    File { path: String },
    /// An AWS Secrets Manager secret (name or ARN); absent: the deployment's default.
    AwsSecretsManager {
        #[serde(default)]
        secret_id: Option<String>,
    },
}

impl SecretsConfig {
    /// The `type`s there are.
    pub const TYPES: &[&str] = &["env", "file", "aws-secrets-manager"];

    /// The `type` it is written with.
    pub fn type_name(&self) -> &'static str {
        match self {
            SecretsConfig::Env {} => "env",
            SecretsConfig::File { .. } => "file",
            SecretsConfig::AwsSecretsManager { .. } => "aws-secrets-manager",
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
    /// Days each object's history (steps applied, failed or held, with the tenant's answer) is
    /// kept: `status --object` reads it; 90 by default, 0 keeps none. DynamoDB removes expired
    /// entries by its TTL.
    #[serde(default = "history_days")]
    pub history_days: u32,
}

/// The default of `history_days` (0 keeps none).
fn history_days() -> u32 {
    90
}

impl RuleConfig {
    /// Every source attribute of a user the rule reads: its mapping's, its scope filter's, and
    /// the attribute holding a user's DN when managers are referenced by DN. `None` when that
    /// cannot be known (a template that does not parse): a source then reads every attribute.
    pub fn user_source_attributes(&self) -> Option<std::collections::BTreeSet<String>> {
        let mut names = self.mapping.source_attributes()?;
        if let Some(filter) = &self.scope.filter {
            let env = minijinja::Environment::new();
            let expression = env.compile_expression(filter).ok()?;
            names.extend(expression.undeclared_variables(false));
        }
        if self.manager.reference == crate::rule::ManagerReference::Dn {
            names.insert(self.manager.dn_attribute.clone());
        }
        Some(names)
    }
}

fn upn() -> String {
    "userPrincipalName".to_owned()
}

/// What is wrong with `[source]`, `[state]` or `[secrets]` of `text`, if anything: a missing
/// or unknown `type` (naming the types there are), or a setting the type does not have.
fn adapter_section_error(text: &str) -> Option<String> {
    let table: toml::Table = toml::from_str(text).ok()?;
    section_error::<SourceConfig>(&table, "source", SourceConfig::TYPES)
        .or_else(|| section_error::<StateConfig>(&table, "state", StateConfig::TYPES))
        .or_else(|| section_error::<SecretsConfig>(&table, "secrets", SecretsConfig::TYPES))
}

fn section_error<T: serde::de::DeserializeOwned>(
    table: &toml::Table,
    name: &str,
    types: &[&str],
) -> Option<String> {
    let section = table.get(name)?;
    let choices = types
        .iter()
        .map(|t| format!("type = \"{t}\""))
        .collect::<Vec<_>>()
        .join(" or ");
    let kind = match section.get("type") {
        None => return Some(format!("[{name}] has no type: write {choices}")),
        Some(toml::Value::String(kind)) => kind,
        Some(other) => return Some(format!("[{name}] type = {other}: write {choices}")),
    };
    if !types.contains(&kind.as_str()) {
        return Some(format!(
            "[{name}] type = {kind:?} is not available in this build: use {choices}"
        ));
    }
    let error = T::deserialize(section.clone()).err()?.message().to_owned();
    Some(match error.strip_prefix("unknown field `") {
        Some(rest) => {
            let (field, expected) = rest.split_once('`').unwrap_or((rest, ""));
            format!(
                "[{name}] {field} is not a setting of type = {kind:?}{expected}; remove the key \
                 or correct its name"
            )
        }
        None => format!("[{name}] (type = {kind:?}): {error}"),
    })
}

/// A configuration that cannot be used: where it came from, the key at fault and the fix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The file, or the stored version, the configuration came from.
    pub origin: String,
    /// The key at fault (`connection.cloud`, `rule.mapping.password`), when one is named apart
    /// from the message.
    pub key: Option<String>,
    /// What is wrong, and the fix.
    pub message: String,
}

impl ConfigError {
    pub fn new(origin: impl Into<String>, key: Option<&str>, message: impl Into<String>) -> Self {
        ConfigError {
            origin: origin.into(),
            key: key.map(str::to_owned),
            message: message.into(),
        }
    }
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.key {
            Some(key) => write!(f, "{}: {key}: {}", self.origin, self.message),
            None => write!(f, "{}: {}", self.origin, self.message),
        }
    }
}

impl std::error::Error for ConfigError {}

impl Config {
    /// Parses and validates TOML text. `origin` names the file in messages.
    pub fn from_toml(text: &str, origin: &str) -> Result<Config, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| {
            // An adapter section's mistake is said in the section's terms; any other keeps
            // the parser's message, which points at the line.
            let message = adapter_section_error(text)
                .unwrap_or_else(|| e.to_string().trim_end().replace('\n', "\n  "));
            ConfigError::new(origin, None, message)
        })?;
        config.validate(origin)?;
        Ok(config)
    }

    /// Checks what the types alone cannot.
    pub fn validate(&self, origin: &str) -> Result<(), ConfigError> {
        let fail = |key: &str, message: String| Err(ConfigError::new(origin, Some(key), message));
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
        if self.connection.concurrency == 0 || self.connection.concurrency > 64 {
            return fail(
                "connection.concurrency",
                format!(
                    "{} is out of range: use 1 to 64",
                    self.connection.concurrency
                ),
            );
        }
        match &self.source {
            SourceConfig::File(file) => {
                if let Err(e) = file.validate() {
                    return fail("source", e.to_string());
                }
            }
            SourceConfig::Ldap(ldap) => {
                if let Err(e) = ldap.validate() {
                    return fail("source", e.to_string());
                }
            }
            SourceConfig::Pingone(pingone) => {
                if let Err(e) = pingone.validate() {
                    return fail("source", e.to_string());
                }
            }
        }
        let mapping = &self.rule.mapping;
        if mapping.password.is_none() {
            return fail(
                "rule.mapping.password",
                "is missing: a rule must say how new users get their first password, e.g. [rule.mapping.password] source = \"generate\"".to_owned(),
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
        assert_eq!(config.connection.cloud, Cloud::Global);
        assert_eq!(config.connection.concurrency, 64);
        assert!(config.connection.adaptive_concurrency);
        assert_eq!(config.state, None);
        assert_eq!(config.secrets, None);
        let SourceConfig::File(file) = &config.source else {
            panic!("a file source: {:?}", config.source);
        };
        assert_eq!(file.location, "users.json");
        assert_eq!(config.rule.match_attribute, "userPrincipalName");
        assert_eq!(config.rule.preferences, Preferences::default());
        assert_eq!(config.connection.drift, crate::drift::DriftMode::Report);
        assert_eq!(config.connection.drift_full_every_hours, 24);
    }

    #[test]
    fn drift_is_read_and_a_wrong_mode_is_refused() {
        let text = MINIMAL.replace(
            "name = \"contoso\"",
            "name = \"contoso\"\ndrift = \"repair\"\ndrift_full_every_hours = 6",
        );
        let config = Config::from_toml(&text, "t").unwrap();
        assert_eq!(config.connection.drift, crate::drift::DriftMode::Repair);
        assert_eq!(config.connection.drift_full_every_hours, 6);
        let wrong = MINIMAL.replace("name = \"contoso\"", "name = \"contoso\"\ndrift = \"fix\"");
        let error = Config::from_toml(&wrong, "t").unwrap_err().to_string();
        for word in ["drift", "off", "report", "repair"] {
            assert!(error.contains(word), "{word}: {error}");
        }
    }

    #[test]
    fn the_user_attributes_a_rule_reads_are_known() {
        let text = MINIMAL.replace(
            "[rule.mapping.password]",
            "[rule.scope]\nfilter = \"department != 'x'\"\n[rule.mapping.password]",
        );
        let config = Config::from_toml(&text, "t").unwrap();
        let names = config.rule.user_source_attributes().unwrap();
        for name in ["mail", "displayName", "department", "uid"] {
            assert!(names.contains(name), "{name}: {names:?}");
        }
        assert!(!names.contains("title"), "{names:?}");
    }

    #[test]
    fn csv_delimiter_and_encoding_are_read_and_a_bad_one_is_named() {
        let excel = MINIMAL.replace(
            "location = \"users.json\"",
            "location = \"exports/\"\ndelimiter = \";\"\nencoding = \"windows-1252\"",
        );
        assert_ne!(excel, MINIMAL, "the replacement applies");
        let config = Config::from_toml(&excel, "test.toml").unwrap();
        let SourceConfig::File(file) = &config.source else {
            panic!("a file source: {:?}", config.source);
        };
        assert_eq!(file.delimiter, ';');
        assert_eq!(file.encoding, file_source::CsvEncoding::Windows1252);
        let tab = excel.replace("delimiter = \";\"", "delimiter = \"\\t\"");
        let config = Config::from_toml(&tab, "test.toml").unwrap();
        let SourceConfig::File(file) = &config.source else {
            panic!("a file source: {:?}", config.source);
        };
        assert_eq!(file.delimiter, '\t');
        let unknown = excel.replace("windows-1252", "ebcdic");
        let error = Config::from_toml(&unknown, "test.toml")
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("ebcdic") && error.contains("windows-1252"),
            "{error}"
        );
    }

    #[test]
    fn an_ldap_source_is_read_and_its_errors_name_the_key() {
        let ldap = MINIMAL.replace(
            "type = \"file\"\nlocation = \"users.json\"",
            "type = \"ldap\"\nurl = \"ldaps://ldap.example.com\"\nuser_base_dns = [\"ou=People,dc=example,dc=com\"]",
        );
        assert_ne!(ldap, MINIMAL, "the replacement applies");
        let config = Config::from_toml(&ldap, "test.toml").unwrap();
        let SourceConfig::Ldap(source) = &config.source else {
            panic!("an ldap source: {:?}", config.source);
        };
        assert_eq!(source.url, "ldaps://ldap.example.com");
        let bad = ldap.replace("ldaps://", "https://");
        let error = Config::from_toml(&bad, "test.toml")
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("url") && error.contains("ldap://"),
            "{error}"
        );
        let typo = ldap.replace("user_base_dns", "user_base_dn");
        let error = Config::from_toml(&typo, "test.toml")
            .unwrap_err()
            .to_string();
        assert!(error.contains("user_base_dn"), "{error}");
    }

    #[test]
    fn unknown_keys_are_rejected_with_their_name() {
        let text = MINIMAL.replace("[rule]\n", "[rule]\nallow_creat = true\n");
        let error = Config::from_toml(&text, "test.toml")
            .unwrap_err()
            .to_string();
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
        let error = Config::from_toml(&text, "t").unwrap_err().to_string();
        assert!(error.contains("rule.mapping.password"), "{error}");
    }

    #[test]
    fn a_match_attribute_generated_by_unique_is_refused_at_load() {
        for upn in [
            "{{ unique(uid | lower, numbered(uid | lower)) }}@example.com",
            "{{ numbered(uid) | first }}@example.com",
        ] {
            let text = MINIMAL.replace("\"{{ mail }}\"", &format!("{upn:?}"));
            let error = Config::from_toml(&text, "test.toml")
                .unwrap_err()
                .to_string();
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
    fn cloud_and_tenant_size_are_parsed_once_into_their_types() {
        let text = MINIMAL.replacen(
            "[connection]\n",
            "[connection]\ncloud = \"GCC-High\"\ntenant_size = \"large\"\n",
            1,
        );
        let config = Config::from_toml(&text, "t").unwrap();
        assert_eq!(config.connection.cloud, Cloud::UsGovHigh);
        assert_eq!(config.connection.tenant_size, Some(TenantSize::Large));
        let written = toml::to_string(&config.connection).unwrap();
        assert!(written.contains("cloud = \"usgov-high\""), "{written}");
        assert!(written.contains("tenant_size = \"large\""), "{written}");
    }

    #[test]
    fn adapter_sections_say_what_is_wrong_in_their_own_terms() {
        let cases = [
            (
                "type = \"file\"",
                "type = \"scim\"",
                "[source] type = \"scim\" is not available in this build: use type = \"file\" or type = \"ldap\" or type = \"pingone\"",
            ),
            (
                "type = \"file\"\n",
                "",
                "[source] has no type: write type = \"file\" or type = \"ldap\" or type = \"pingone\"",
            ),
            (
                "location =",
                "locaton = \"x\"\nlocation =",
                "[source] locaton is not a setting of type = \"file\"",
            ),
            (
                "[rule]\n",
                "[state]\ntype = \"sqlite\"\nfile = \"x\"\n[rule]\n",
                "[state] file is not a setting of type = \"sqlite\"",
            ),
            (
                "[rule]\n",
                "[secrets]\ntype = \"vault\"\n[rule]\n",
                "use type = \"env\" or type = \"file\" or type = \"aws-secrets-manager\"",
            ),
        ];
        for (from, to, expected) in cases {
            let text = MINIMAL.replacen(from, to, 1);
            assert_ne!(text, MINIMAL, "{from}");
            let error = Config::from_toml(&text, "t").unwrap_err().to_string();
            assert!(error.contains(expected), "{expected}: {error}");
        }
        for (name, types) in [
            ("sqlite", StateConfig::TYPES),
            ("dynamodb", StateConfig::TYPES),
        ] {
            assert!(types.contains(&name));
        }
        assert_eq!(StateConfig::Dynamodb {}.type_name(), "dynamodb");
        assert!(SecretsConfig::TYPES.contains(&SecretsConfig::Env {}.type_name()));
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
                "[connection]\n",
                "[connection]\ntenant_size = \"huge\"\n",
                "connection.tenant_size",
            ),
            (
                "[rule]\nname = \"staff\"\n",
                "[rule]\nname = \"staff\"\nmatch_attribute = \"employeeId\"\n",
                "rule.match_attribute",
            ),
        ];
        for (from, to, key) in cases {
            let text = MINIMAL.replacen(from, to, 1);
            let error = Config::from_toml(&text, "t").unwrap_err().to_string();
            assert!(error.contains(key), "{key}: {error}");
        }
    }
}
