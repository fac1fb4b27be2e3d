//! The mapping module seen through the planner's [`RuleMapping`]: user and group mappers, the
//! scope filter, and the rule's default password.

use minijinja::Environment;
use secrecy::SecretString;

use crate::mapping::{
    GroupMapper, GroupMappingSpec, Mapper, MappingConfigError, MappingError, MappingSpec,
    PasswordOrigin,
};
use crate::model::{SourceGroup, SourceUser};
use crate::planner::{DesiredGroup, DesiredUser, RuleMapping};

/// A rule's compiled mapping.
pub struct CompiledMapping {
    users: Mapper,
    groups: GroupMapper,
    /// The scope filter, as the source of a template expression (compiled at construction to
    /// report errors, evaluated per user).
    filter: Option<String>,
    env: Environment<'static>,
    /// The SecretStore's default password, for `password.source = { secret = ... }`.
    default_password: Option<SecretString>,
}

/// Why a rule's mapping cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum CompileError {
    #[error(transparent)]
    Mapping(#[from] MappingConfigError),
    #[error("scope.filter {filter:?} is not a valid expression: {detail}")]
    Filter { filter: String, detail: String },
    /// The match attribute is generated (`unique`, `numbered`): see
    /// [`crate::mapping::check_match_attribute`].
    #[error("match_attribute: {0}")]
    MatchAttribute(String),
}

impl CompiledMapping {
    pub fn new(
        users: &MappingSpec,
        groups: &GroupMappingSpec,
        filter: Option<&str>,
        default_password: Option<SecretString>,
    ) -> Result<Self, CompileError> {
        let env = Environment::new();
        if let Some(filter) = filter {
            env.compile_expression(filter)
                .map_err(|e| CompileError::Filter {
                    filter: filter.to_owned(),
                    detail: e.to_string(),
                })?;
        }
        Ok(Self {
            users: Mapper::new(users)?,
            groups: GroupMapper::new(groups)?,
            filter: filter.map(str::to_owned),
            env,
            default_password,
        })
    }

    /// The user mapper (to give it the tenant's domain policy).
    pub fn users_mut(&mut self) -> &mut Mapper {
        &mut self.users
    }
}

impl RuleMapping for CompiledMapping {
    fn in_scope(&self, user: &SourceUser) -> Result<bool, String> {
        let Some(filter) = &self.filter else {
            return Ok(true);
        };
        let expression = self
            .env
            .compile_expression(filter)
            .map_err(|e| format!("scope.filter cannot be evaluated: {e}"))?;
        let context = crate::mapping::attributes_value(&user.attributes);
        expression
            .eval(context)
            .map(|v| v.is_true())
            .map_err(|e| format!("scope.filter cannot be evaluated for this user: {e}"))
    }

    fn map_user(&self, user: &SourceUser) -> Result<DesiredUser, Vec<MappingError>> {
        let mapped = self.users.map_user(user)?;
        let (password, password_problem) = match mapped.password.map(|p| p.origin) {
            Some(PasswordOrigin::Value(secret)) => (Some(secret), None),
            Some(PasswordOrigin::Secret(name)) => match &self.default_password {
                Some(secret) => (Some(secret.clone()), None),
                None => (
                    None,
                    Some(format!(
                        "the default password secret {name:?} is not in the secret store; add it there (never in the config file)"
                    )),
                ),
            },
            Some(PasswordOrigin::Generate) | None => (None, None),
            Some(PasswordOrigin::Unusable(error)) => (None, Some(error.to_string())),
        };
        Ok(DesiredUser {
            properties: mapped.properties,
            unique_candidates: mapped.unique_candidates,
            password,
            password_problem,
            licenses: mapped.licenses,
            sku_plans: mapped.sku_plans,
            license_problem: None,
            manager: mapped.manager_ref,
        })
    }

    fn map_group(&self, group: &SourceGroup) -> Result<DesiredGroup, Vec<MappingError>> {
        let mapped = self.groups.map_group(group)?;
        Ok(DesiredGroup {
            display_name: mapped.display_name,
            mail_nickname: mapped.mail_nickname,
        })
    }
}

/// Compiles a configured rule: its mapping (with the tenant's domains for UPN checks and the
/// SecretStore's default password, when the rule uses one) and its settings.
pub fn compile_rule(
    config: &crate::config::RuleConfig,
    domains: &[crate::directory::TenantDomain],
    secrets: &crate::secrets::ConnectionSecrets,
) -> Result<crate::planner::Rule, CompileError> {
    compile_rule_with(
        config,
        crate::mapping::DomainPolicy::from_tenant(domains),
        secrets,
    )
}

fn compile_rule_with(
    config: &crate::config::RuleConfig,
    domains: crate::mapping::DomainPolicy,
    secrets: &crate::secrets::ConnectionSecrets,
) -> Result<crate::planner::Rule, CompileError> {
    crate::mapping::check_match_attribute(&config.mapping, &config.match_attribute)
        .map_err(CompileError::MatchAttribute)?;
    let default_password = match config.mapping.password.as_ref().map(|p| &p.source) {
        Some(crate::mapping::PasswordSource::Secret(name)) => secrets.extra.get(name).cloned(),
        _ => None,
    };
    let mut mapping = CompiledMapping::new(
        &config.mapping,
        &config.group_mapping,
        config.scope.filter.as_deref(),
        default_password,
    )?;
    mapping.users_mut().set_domain_policy(domains);
    Ok(crate::planner::Rule {
        name: config.name.clone(),
        match_attribute: config.match_attribute.clone(),
        preferences: config.preferences.clone(),
        breaker: config.breaker.clone(),
        scope: config.scope.clone(),
        groups: config.groups.clone(),
        manager: config.manager.clone(),
        mapping: Box::new(mapping),
        force_change_password: config
            .mapping
            .password
            .as_ref()
            .is_none_or(|p| p.reset_password),
        history_days: config.history_days,
        drift: crate::drift::DriftSettings::for_mapping(
            config.mapping.attributes.keys(),
            config.mapping.licenses.is_some(),
            config.mapping.manager.is_some(),
            config.groups.enabled,
        ),
    })
}

/// Compiles the rule of a connection's configuration ([`compile_rule`]) with the connection's
/// own settings for it: how drift is handled (docs/design.md#drift).
pub fn compile_connection_rule(
    config: &crate::config::Config,
    domains: &[crate::directory::TenantDomain],
    secrets: &crate::secrets::ConnectionSecrets,
) -> Result<crate::planner::Rule, CompileError> {
    let mut rule = compile_rule(&config.rule, domains, secrets)?;
    rule.drift.mode = config.connection.drift;
    rule.drift.full_every_ms = i64::from(config.connection.drift_full_every_hours) * 3_600_000;
    Ok(rule)
}

/// Compiles a rule without a tenant or secrets, as a configuration is checked before it is used
/// (`validate`, `cloud config upload`): templates, scope filter, match attribute and mapping
/// settings. UPN domains are not checked (they are the tenant's), and a password from the secret
/// store is reported missing when a user is mapped.
pub fn compile_rule_offline(
    config: &crate::config::RuleConfig,
) -> Result<crate::planner::Rule, CompileError> {
    let no_secrets = crate::secrets::ConnectionSecrets {
        tenant: String::new(),
        client_id: String::new(),
        credential: crate::secrets::AppCredential::Secret(SecretString::from(String::new())),
        additional_apps: Vec::new(),
        extra: std::collections::BTreeMap::new(),
    };
    compile_rule_with(
        config,
        crate::mapping::DomainPolicy::unchecked(),
        &no_secrets,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compiling_a_rule_refuses_a_generated_match_attribute() {
        // A rule that never went through `Config::validate` (built in code) is refused too.
        let config: crate::config::RuleConfig = toml::from_str(
            r#"
name = "staff"
[mapping.attributes]
userPrincipalName = "{{ unique(uid, numbered(uid)) }}@example.com"
displayName = { attribute = "cn" }
[mapping.password]
source = "generate"
"#,
        )
        .unwrap();
        let secrets = crate::secrets::ConnectionSecrets {
            additional_apps: Vec::new(),
            tenant: "t".into(),
            client_id: "c".into(),
            credential: crate::secrets::AppCredential::Secret(SecretString::from("s")),
            extra: Default::default(),
        };
        let error = compile_rule(&config, &[], &secrets).err().unwrap();
        assert!(matches!(error, CompileError::MatchAttribute(_)), "{error}");
        let text = error.to_string();
        assert!(
            text.starts_with(
                "match_attribute: \"userPrincipalName\" cannot be the match attribute"
            ),
            "{text}"
        );
    }
}
