//! A connection config for the cloud functions: [`Config::from_toml`] plus the rules of a Lambda
//! deployment, checked before a config is uploaded (`m365-provisioner cloud config upload`) and
//! again when a function loads it.
//!
//! - `[source]`: readable from Lambda — for `type = "file"` an `s3://bucket/key` location (or an
//!   `s3://bucket/prefix/` of CSV files).
//! - `[state]`: absent or `type = "dynamodb"` with no other key: the state always lives in the
//!   deployment's table (`M365_TABLE`).
//! - `[secrets]`: absent (the secret named by `M365_SECRET_ID`) or
//!   `type = "aws-secrets-manager"` with an optional `secret_id` (name or ARN).
//! - `connection.sandbox` false: the embedded sandbox tenant runs only on the command line.
//!
//! The parsed [`Config`] says what the functions use: an absent `[state]` comes back as
//! `type = "dynamodb"` and an absent `[secrets]` as `type = "aws-secrets-manager"` (never the
//! command line's `sqlite` / `env` defaults). Every error names the key and the fix.

use m365_core::config::{Config, ConfigError, SecretsConfig, SourceConfig, StateConfig};

/// `[state] type` of the cloud: the deployment's DynamoDB table.
pub const STATE_TYPE: &str = "dynamodb";
/// `[secrets] type` of the cloud.
pub const SECRETS_TYPE: &str = "aws-secrets-manager";
/// The environment variable naming the default secret.
pub const SECRET_ID_ENV: &str = "M365_SECRET_ID";

/// Parses `text` (`origin` names it in messages) and checks the cloud rules of the
/// [module docs](self).
pub fn parse_cloud_config(text: &str, origin: &str) -> Result<Config, ConfigError> {
    let mut config = Config::from_toml(text, origin)?;
    let fail = |message: String| ConfigError::new(origin, None, message);

    if config.connection.sandbox {
        return Err(fail(
            "connection.sandbox = true: the embedded sandbox tenant runs only on the command \
             line; remove the key and store the tenant's credentials in Secrets Manager"
                .to_owned(),
        ));
    }
    if config.connection.sandbox_state.is_some() {
        return Err(fail(
            "connection.sandbox_state names a local file of the embedded sandbox tenant, which \
             the cloud functions do not run; remove the key"
                .to_owned(),
        ));
    }

    if config.connection.login_url.is_some() || config.connection.graph_url.is_some() {
        return Err(fail(
            "connection.login_url / connection.graph_url: the cloud functions reach Microsoft's \
             login and Graph hosts of connection.cloud only (global, usgovhigh, usgovdod, china), \
             so that no uploaded configuration can send credentials elsewhere; remove the keys \
             and set `cloud` instead"
                .to_owned(),
        ));
    }

    check_source(&config.source).map_err(fail)?;
    match &config.state {
        None => config.state = Some(StateConfig::Dynamodb {}),
        Some(state) => check_state(state).map_err(fail)?,
    }
    match &config.secrets {
        None => {
            config.secrets = Some(SecretsConfig::AwsSecretsManager { secret_id: None });
        }
        Some(secrets) => check_secrets(secrets).map_err(fail)?,
    }
    // The rule's templates, scope filter and match attribute, as `validate` checks them.
    m365_core::rule_mapping::compile_rule_offline(&config.rule)
        .map_err(|e| ConfigError::new(origin, Some("rule"), e.to_string()))?;
    Ok(config)
}

/// Whether the secret `id` (a name, or an ARN whose name carries Secrets Manager's `-XXXXXX`
/// suffix) is named for `connection`: `<connection>` or `<anything>/<connection>`. A config can
/// then never borrow another connection's credentials, even among the secrets the functions may
/// read.
fn names_own_secret(id: &str, connection: &str) -> bool {
    let name = match id.split_once(":secret:") {
        Some((_, rest)) => match rest.rsplit_once('-') {
            Some((base, suffix))
                if suffix.len() == 6 && suffix.chars().all(|c| c.is_ascii_alphanumeric()) =>
            {
                base
            }
            _ => rest,
        },
        None => id,
    };
    name == connection || name.ends_with(&format!("/{connection}"))
}

/// The Secrets Manager secret (name or ARN) of a config's connection: its `[secrets] secret_id`,
/// else `default` (the functions pass `M365_SECRET_ID`).
pub fn secret_id(config: &Config, default: Option<&str>) -> Result<String, ConfigError> {
    let name = &config.connection.name;
    let from_config = match &config.secrets {
        Some(SecretsConfig::AwsSecretsManager { secret_id: None }) | None => None,
        Some(SecretsConfig::AwsSecretsManager {
            secret_id: Some(id),
        }) if valid_secret_id(id) => Some(id.clone()),
        Some(SecretsConfig::AwsSecretsManager { secret_id: Some(_) }) => {
            return Err(ConfigError::new(
                format!("connection {name}"),
                None,
                format!(
                    "[secrets] secret_id is not a secret name or ARN; \
                 write secret_id = \"m365/{name}\" or remove it to use {SECRET_ID_ENV}"
                ),
            ));
        }
        Some(other) => {
            return Err(ConfigError::new(
                format!("connection {name}"),
                None,
                format!(
                    "[secrets] type = {:?} cannot be used by the cloud \
                 functions; use type = \"{SECRETS_TYPE}\"",
                    other.type_name()
                ),
            ));
        }
    };
    if let Some(id) = from_config {
        if !names_own_secret(&id, name) {
            return Err(ConfigError::new(
                format!("connection {name}"),
                None,
                format!(
                    "[secrets] secret_id = {id:?} is not this connection's secret; \
                 a connection reads only its own secret, named for it (e.g. \
                 \"m365-provisioner/{name}\" or its ARN), or the deployment's default when \
                 secret_id is absent"
                ),
            ));
        }
        return Ok(id);
    }
    match default.map(str::trim).filter(|d| !d.is_empty()) {
        Some(id) => Ok(id.to_owned()),
        None => Err(ConfigError::new(
            format!("connection {name}"),
            None,
            format!(
                "no Secrets Manager secret is named: set {SECRET_ID_ENV} on the \
             function, or write [secrets] type = \"{SECRETS_TYPE}\" with secret_id = \"name or \
             ARN\" in the config"
            ),
        )),
    }
}

fn check_source(source: &SourceConfig) -> Result<(), String> {
    let settings = match source {
        SourceConfig::File(settings) => settings,
        // The directory must be reachable from the function (VPC settings of the template);
        // its bind password is a field of the connection's secret.
        SourceConfig::Ldap(_) => return Ok(()),
        // PingOne is on the internet; its client secret is a field of the connection's secret.
        SourceConfig::Pingone(_) => return Ok(()),
    };
    let location = &settings.location;
    if !m365_aws::is_s3_location(location) {
        return Err(format!(
            "[source] location {location:?} is a local path: a Lambda function cannot read it; \
             upload the file to S3 and use s3://bucket/key"
        ));
    }
    let bucket = location
        .get(5..)
        .unwrap_or_default()
        .split('/')
        .next()
        .unwrap_or_default();
    if bucket.is_empty() {
        return Err(format!(
            "[source] location {location:?} names no bucket; write s3://bucket/key"
        ));
    }
    Ok(())
}

fn check_state(state: &StateConfig) -> Result<(), String> {
    match state {
        StateConfig::Dynamodb {} => Ok(()),
        other => Err(format!(
            "[state] type = {:?} cannot be used by the cloud functions: they keep the state in \
             the deployment's DynamoDB table (M365_TABLE); remove the [state] section or write \
             type = \"{STATE_TYPE}\"",
            other.type_name()
        )),
    }
}

fn check_secrets(secrets: &SecretsConfig) -> Result<(), String> {
    match secrets {
        SecretsConfig::AwsSecretsManager { secret_id: None } => Ok(()),
        SecretsConfig::AwsSecretsManager {
            secret_id: Some(id),
        } if valid_secret_id(id) => Ok(()),
        SecretsConfig::AwsSecretsManager { .. } => Err(
            "[secrets] secret_id is not a secret name or ARN: use letters, digits and \
             /_+=.@-: only, e.g. secret_id = \"m365/contoso\" or an \
             arn:aws:secretsmanager:… ARN; or remove it to use M365_SECRET_ID"
                .to_owned(),
        ),
        other => Err(format!(
            "[secrets] type = {:?} cannot be used by the cloud functions: remove the [secrets] \
             section (the secret named by {SECRET_ID_ENV} is used) or write type = \
             \"{SECRETS_TYPE}\" with secret_id = \"name or ARN\"",
            other.type_name()
        )),
    }
}

/// A Secrets Manager name (`/_+=.@-` and alphanumerics) or ARN (also `:`), at most 2,048
/// characters (an ARN's limit).
fn valid_secret_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 2048
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "/_+=.@-:".contains(c))
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALID: &str = r#"
[connection]
name = "contoso"

[source]
type = "file"
location = "s3://hr-exports/users.json"

[rule]
name = "staff"
[rule.mapping.attributes]
userPrincipalName = "{{ mail }}"
displayName = { attribute = "displayName" }
[rule.mapping.password]
source = "generate"
"#;

    fn with(section: &str) -> String {
        VALID.replace("[rule]\n", &format!("{section}\n[rule]\n"))
    }

    #[test]
    fn an_ldap_source_may_run_in_the_cloud() {
        let ldap = VALID.replace(
            "type = \"file\"\nlocation = \"s3://hr-exports/users.json\"",
            "type = \"ldap\"\nurl = \"ldaps://ldap.contoso.com\"\nbind_dn = \"cn=svc,dc=contoso,dc=com\"\nuser_base_dns = [\"ou=People,dc=contoso,dc=com\"]",
        );
        assert_ne!(ldap, VALID, "the replacement applies");
        let config = parse_cloud_config(&ldap, "upload").unwrap();
        assert!(matches!(config.source, SourceConfig::Ldap(_)));
    }

    #[test]
    fn a_config_names_only_its_own_connections_secret() {
        for own in [
            "m365-provisioner/contoso",
            "contoso",
            "arn:aws:secretsmanager:eu-west-1:123456789012:secret:m365-provisioner/contoso-AbCdEf",
        ] {
            assert!(names_own_secret(own, "contoso"), "{own}");
        }
        for other in [
            "m365-provisioner/fabrikam",
            "m365-provisioner/contoso-old",
            "arn:aws:secretsmanager:eu-west-1:123456789012:secret:m365-provisioner/fabrikam-AbCdEf",
            "m365-provisioner/xcontoso",
        ] {
            assert!(!names_own_secret(other, "contoso"), "{other}");
        }
        let text = with(
            "[secrets]\ntype = \"aws-secrets-manager\"\nsecret_id = \"m365-provisioner/fabrikam\"",
        );
        let config = parse_cloud_config(&text, "t").unwrap();
        let error = secret_id(&config, None).unwrap_err().to_string();
        assert!(error.contains("not this connection's secret"), "{error}");
        assert!(error.contains("m365-provisioner/contoso"), "{error}");
    }

    #[test]
    fn a_config_naming_login_or_graph_hosts_is_refused() {
        for key in ["login_url", "graph_url"] {
            let text = VALID.replacen(
                "[connection]\n",
                &format!("[connection]\n{key} = \"https://login.microsoftonline.us\"\n"),
                1,
            );
            let error = parse_cloud_config(&text, "contoso.toml")
                .unwrap_err()
                .to_string();
            assert!(
                error.contains("connection.login_url / connection.graph_url"),
                "{error}"
            );
            assert!(error.contains("set `cloud` instead"), "{error}");
        }
    }

    #[test]
    fn absent_state_and_secrets_become_the_cloud_adapters() {
        let config = parse_cloud_config(VALID, "contoso.toml").unwrap();
        assert_eq!(config.state, Some(StateConfig::Dynamodb {}));
        assert_eq!(
            config.secrets,
            Some(SecretsConfig::AwsSecretsManager { secret_id: None })
        );
        assert_eq!(
            secret_id(&config, Some("m365/default")).unwrap(),
            "m365/default"
        );
    }

    #[test]
    fn explicit_cloud_sections_are_accepted() {
        let text = with(
            "[state]\ntype = \"dynamodb\"\n[secrets]\ntype = \"aws-secrets-manager\"\nsecret_id = \"arn:aws:secretsmanager:eu-west-1:123456789012:secret:m365/contoso-AbCdEf\"",
        );
        let config = parse_cloud_config(&text, "t").unwrap();
        assert_eq!(config.state, Some(StateConfig::Dynamodb {}));
        assert_eq!(
            secret_id(&config, Some("ignored")).unwrap(),
            "arn:aws:secretsmanager:eu-west-1:123456789012:secret:m365/contoso-AbCdEf"
        );
        // A CSV prefix in S3 is fine too.
        let text = VALID.replace("s3://hr-exports/users.json", "s3://hr-exports/csv/");
        parse_cloud_config(&text, "t").unwrap();
    }

    #[test]
    fn secret_id_without_config_or_default_names_the_variable() {
        let config = parse_cloud_config(VALID, "t").unwrap();
        for default in [None, Some(""), Some("  ")] {
            let error = secret_id(&config, default).unwrap_err().to_string();
            assert!(error.contains("M365_SECRET_ID"), "{error}");
            assert!(error.contains("contoso"), "{error}");
        }
    }

    #[test]
    fn secret_id_of_a_plain_config_uses_the_default() {
        let config = Config::from_toml(VALID, "t").unwrap();
        assert_eq!(config.secrets, None);
        assert_eq!(secret_id(&config, Some("m365/x")).unwrap(), "m365/x");
    }

    #[test]
    fn rule_breaks_name_the_key_and_the_fix() {
        let cases: Vec<(String, &str, &str)> = vec![
            (
                VALID.replace("s3://hr-exports/users.json", "users.json"),
                "[source] location \"users.json\" is a local path",
                "s3://bucket/key",
            ),
            (
                VALID.replace("s3://hr-exports/users.json", "s3:///users.json"),
                "[source] location",
                "names no bucket",
            ),
            (
                VALID.replace("type = \"file\"", "type = \"scim\""),
                "[source] type = \"scim\"",
                "use type = \"file\" or type = \"ldap\"",
            ),
            (
                VALID.replace("location =", "locaton = \"x\"\nlocation ="),
                "[source]",
                "locaton",
            ),
            (
                with("[state]\ntype = \"sqlite\"\npath = \".state/c.sqlite\""),
                "[state] type = \"sqlite\"",
                "remove the [state] section",
            ),
            (
                with("[state]\ntype = \"sqlite\""),
                "[state] type = \"sqlite\"",
                "M365_TABLE",
            ),
            (
                with("[state]\ntype = \"dynamodb\"\ntable = \"other\""),
                "[state] table",
                "remove the key",
            ),
            (
                with("[secrets]\ntype = \"env\""),
                "[secrets] type = \"env\"",
                "M365_SECRET_ID",
            ),
            (
                with("[secrets]\ntype = \"file\"\npath = \"secrets.toml\""),
                "[secrets] type = \"file\"",
                "aws-secrets-manager",
            ),
            (
                with("[secrets]\ntype = \"aws-secrets-manager\"\nsecretid = \"x\""),
                "[secrets] secretid",
                "secret_id",
            ),
            (
                with("[secrets]\ntype = \"aws-secrets-manager\"\nsecret_id = \"has space\""),
                "[secrets] secret_id",
                "name or ARN",
            ),
            (
                VALID.replace("name = \"contoso\"", "name = \"contoso\"\nsandbox = true"),
                "connection.sandbox",
                "Secrets Manager",
            ),
            (
                VALID.replace(
                    "name = \"contoso\"",
                    "name = \"contoso\"\nsandbox_state = \"t.json\"",
                ),
                "connection.sandbox_state",
                "remove the key",
            ),
        ];
        for (text, key, fix) in cases {
            let error = parse_cloud_config(&text, "contoso.toml")
                .unwrap_err()
                .to_string();
            assert!(error.starts_with("contoso.toml: "), "{error}");
            assert!(error.contains(key), "{key}: {error}");
            assert!(error.contains(fix), "{fix}: {error}");
        }
    }

    #[test]
    fn core_errors_come_through() {
        let text = VALID.replace("[rule]\n", "[rule]\nallow_creat = true\n");
        let error = parse_cloud_config(&text, "t").unwrap_err().to_string();
        assert!(error.contains("allow_creat"), "{error}");
    }

    #[test]
    fn sections_are_found_in_every_toml_form() {
        let base = VALID.replace(
            "[connection]",
            "state = { type = \"sqlite\" }\n[connection]",
        );
        let dotted = VALID.replace("[connection]", "state.type = \"sqlite\"\n[connection]");
        // Each of them is refused, not taken for the default.
        for text in [base, dotted, with("[state]\ntype = \"sqlite\"")] {
            let error = parse_cloud_config(&text, "t").unwrap_err().to_string();
            assert!(error.contains("[state] type = \"sqlite\""), "{error}");
        }
    }
}
