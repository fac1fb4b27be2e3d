//! The command line's secret stores: environment variables, a TOML file, and fixed credentials
//! (the embedded sandbox tenant). The cloud's is AWS Secrets Manager (`m365-aws`).

use async_trait::async_trait;
use m365_core::secrets::{AppSecret, ConnectionSecrets, SecretError, SecretStore};
use secrecy::SecretString;

/// Credentials from environment variables: `M365_TENANT`, `M365_CLIENT_ID`,
/// `M365_CLIENT_SECRET`, and `M365_SECRET_<NAME>` for further named secrets (the name
/// lower-cased: `M365_SECRET_DEFAULT_PASSWORD` → `default_password`). Further app registrations
/// of the tenant, to write past one app's quota: `M365_CLIENT_ID_2` and `M365_CLIENT_SECRET_2`,
/// then `_3`, … up to the first number without a client id. The same variables serve every
/// connection.
#[derive(Debug, Clone, Default)]
pub struct EnvSecretStore;

impl EnvSecretStore {
    fn read(name: &str) -> Result<String, SecretError> {
        match std::env::var(name) {
            Ok(value) if !value.trim().is_empty() => {
                Ok(value.trim_end_matches(['\r', '\n']).to_owned())
            }
            _ => Err(SecretError::Missing(format!(
                "environment variable {name} is not set (secrets.type = \"env\"); set it, or use secrets.type = \"file\""
            ))),
        }
    }
}

#[async_trait]
impl SecretStore for EnvSecretStore {
    async fn connection_secrets(
        &self,
        _connection: &str,
    ) -> Result<ConnectionSecrets, SecretError> {
        let extra = env_extra_secrets();
        Ok(ConnectionSecrets {
            additional_apps: env_additional_apps()?,
            tenant: Self::read("M365_TENANT")?,
            client_id: Self::read("M365_CLIENT_ID")?,
            client_secret: SecretString::from(Self::read("M365_CLIENT_SECRET")?),
            extra,
        })
    }

    async fn invalidate(&self, _connection: &str) {}
}

/// Further app registrations of the environment: `M365_CLIENT_ID_<n>` with
/// `M365_CLIENT_SECRET_<n>`, from n = 2 up to the first number without a client id.
pub fn env_additional_apps() -> Result<Vec<AppSecret>, SecretError> {
    let mut apps = Vec::new();
    for n in 2.. {
        let id = format!("M365_CLIENT_ID_{n}");
        if std::env::var(&id).map_or(true, |v| v.trim().is_empty()) {
            break;
        }
        apps.push(AppSecret {
            client_id: EnvSecretStore::read(&id)?,
            client_secret: SecretString::from(EnvSecretStore::read(&format!(
                "M365_CLIENT_SECRET_{n}"
            ))?),
        });
    }
    Ok(apps)
}

/// The named secrets of the environment: `M365_SECRET_<NAME>` as `<name>` (lower-cased).
pub fn env_extra_secrets() -> std::collections::BTreeMap<String, SecretString> {
    std::env::vars()
        .filter_map(|(k, v)| {
            k.strip_prefix("M365_SECRET_")
                .map(|name| (name.to_ascii_lowercase(), SecretString::from(v)))
        })
        .collect()
}

/// Credentials from a TOML file kept out of the configuration (and out of version control):
///
/// ```toml
/// tenant = "contoso.onmicrosoft.com"
/// client_id = "00000000-0000-0000-0000-000000000000"
/// client_secret = "…"
/// [extra]
/// default_password = "…"
///
/// # further app registrations of the tenant, to write past one app's quota (optional)
/// [[additional_apps]]
/// client_id = "11111111-1111-1111-1111-111111111111"
/// client_secret = "…"
/// ```
#[derive(Debug, Clone)]
pub struct FileSecretStore {
    pub path: std::path::PathBuf,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct SecretFile {
    tenant: String,
    client_id: String,
    client_secret: SecretString,
    #[serde(default)]
    additional_apps: Vec<AppSecretEntry>,
    #[serde(default)]
    extra: std::collections::BTreeMap<String, SecretString>,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct AppSecretEntry {
    client_id: String,
    client_secret: SecretString,
}

#[async_trait]
impl SecretStore for FileSecretStore {
    async fn connection_secrets(
        &self,
        _connection: &str,
    ) -> Result<ConnectionSecrets, SecretError> {
        let shown = self.path.display();
        let text = std::fs::read_to_string(&self.path).map_err(|e| {
            SecretError::Missing(format!("cannot read the secrets file {shown}: {e}"))
        })?;
        // toml's error text quotes the offending line, which may hold a secret: report only
        // where it is.
        let file: SecretFile = toml::from_str(&text).map_err(|e| {
            let at = e
                .span()
                .map(|s| {
                    let line = text[..s.start.min(text.len())].matches('\n').count() + 1;
                    format!(" at line {line}")
                })
                .unwrap_or_default();
            SecretError::Malformed(format!(
                "the secrets file {shown} is not valid{at}: it needs tenant, client_id and client_secret, and optionally an [extra] table and [[additional_apps]] tables of client_id and client_secret"
            ))
        })?;
        Ok(ConnectionSecrets {
            additional_apps: file
                .additional_apps
                .into_iter()
                .map(|a| AppSecret {
                    client_id: a.client_id,
                    client_secret: a.client_secret,
                })
                .collect(),
            tenant: file.tenant,
            client_id: file.client_id,
            client_secret: file.client_secret,
            extra: file.extra,
        })
    }

    async fn invalidate(&self, _connection: &str) {}
}

/// Fixed credentials (the embedded sandbox tenant's demo app; tests).
#[derive(Debug, Clone)]
pub struct StaticSecretStore(pub ConnectionSecrets);

#[async_trait]
impl SecretStore for StaticSecretStore {
    async fn connection_secrets(
        &self,
        _connection: &str,
    ) -> Result<ConnectionSecrets, SecretError> {
        Ok(self.0.clone())
    }

    async fn invalidate(&self, _connection: &str) {}
}

#[cfg(test)]
mod tests {
    use secrecy::ExposeSecret;

    use super::*;

    #[tokio::test]
    async fn file_store_reads_credentials_and_extras() {
        let dir = std::env::temp_dir().join(format!("m365-secrets-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("ok.toml");
        std::fs::write(
            &path,
            "tenant = \"t\"\nclient_id = \"c\"\nclient_secret = \"s3cr3t\"\n[extra]\ndefault_password = \"pw\"\n\
             [[additional_apps]]\nclient_id = \"c2\"\nclient_secret = \"s3cr3t-2\"\n\
             [[additional_apps]]\nclient_id = \"c3\"\nclient_secret = \"s3cr3t-3\"\n",
        )
        .unwrap();
        let secrets = FileSecretStore { path }
            .connection_secrets("x")
            .await
            .unwrap();
        assert_eq!(secrets.tenant, "t");
        assert_eq!(secrets.client_secret.expose_secret(), "s3cr3t");
        assert_eq!(secrets.extra["default_password"].expose_secret(), "pw");
        let apps: Vec<(&str, &str)> = secrets
            .additional_apps
            .iter()
            .map(|a| (a.client_id.as_str(), a.client_secret.expose_secret()))
            .collect();
        assert_eq!(apps, [("c2", "s3cr3t-2"), ("c3", "s3cr3t-3")]);
        assert!(!format!("{secrets:?}").contains("s3cr3t"));
    }

    #[tokio::test]
    async fn a_malformed_secrets_file_never_echoes_its_content() {
        let dir = std::env::temp_dir().join(format!("m365-secrets-bad-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("bad.toml");
        std::fs::write(
            &path,
            "tenant = \"t\"\nclient_secret = \"leaky-value\" junk\n",
        )
        .unwrap();
        let error = FileSecretStore { path }
            .connection_secrets("x")
            .await
            .unwrap_err()
            .to_string();
        assert!(error.contains("line 2"), "{error}");
        assert!(!error.contains("leaky-value"), "{error}");
    }
}
