//! The command line's secret stores: environment variables, a TOML file, and fixed credentials
//! (the embedded sandbox tenant). The cloud's is AWS Secrets Manager (`m365-aws`).

use async_trait::async_trait;
use m365_core::secrets::{
    AppCredential, AppSecret, CLIENT_ASSERTION_ALGORITHM, CLIENT_CERTIFICATE_PEM,
    CLIENT_PRIVATE_KEY_PEM, CLIENT_SECRET, ConnectionSecrets, SecretError, SecretStore,
};
use secrecy::SecretString;

/// Credentials from environment variables: `M365_TENANT`, `M365_CLIENT_ID`, and the app's
/// credential: `M365_CLIENT_SECRET`, or a certificate in `M365_CLIENT_CERTIFICATE_PEM` and
/// `M365_CLIENT_PRIVATE_KEY_PEM` (PEM text, e.g. `export M365_CLIENT_PRIVATE_KEY_PEM="$(cat
/// key.pem)"`) with optionally `M365_CLIENT_ASSERTION_ALGORITHM` (`RS256` or `PS256`); see
/// docs/operations.md#certificate-credentials. `M365_SECRET_<NAME>` hold further named secrets
/// (the name lower-cased: `M365_SECRET_DEFAULT_PASSWORD` → `default_password`). Further app
/// registrations of the tenant, to write past one app's quota: `M365_CLIENT_ID_2` with
/// `M365_CLIENT_SECRET_2` (or `M365_CLIENT_CERTIFICATE_PEM_2` and `M365_CLIENT_PRIVATE_KEY_PEM_2`),
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
            credential: env_credential("")?,
            extra,
        })
    }

    async fn invalidate(&self, _connection: &str) {}
}

/// The environment variable of a secret key: `M365_` + the key in capitals + `suffix`.
fn env_name(key: &str, suffix: &str) -> String {
    format!("M365_{}{suffix}", key.to_ascii_uppercase())
}

/// The app credential of the environment's variables ending in `suffix` (`""`, `_2`, …).
/// Messages name the variables, never their values.
pub fn env_credential(suffix: &str) -> Result<AppCredential, SecretError> {
    let optional = |key: &str| {
        std::env::var(env_name(key, suffix))
            .ok()
            .filter(|v| !v.trim().is_empty())
            .map(|v| v.trim_end_matches(['\r', '\n']).to_owned())
    };
    AppCredential::from_parts(
        "",
        optional(CLIENT_SECRET).map(SecretString::from),
        optional(CLIENT_CERTIFICATE_PEM),
        optional(CLIENT_PRIVATE_KEY_PEM).map(SecretString::from),
        optional(CLIENT_ASSERTION_ALGORITHM).as_deref(),
    )
    .map_err(|message| {
        let mut message = message;
        for key in [
            CLIENT_SECRET,
            CLIENT_CERTIFICATE_PEM,
            CLIENT_PRIVATE_KEY_PEM,
            CLIENT_ASSERTION_ALGORITHM,
        ] {
            message = message.replace(key, &env_name(key, suffix));
        }
        let message = format!(
            "environment (secrets.type = \"env\"): {message}; or use secrets.type = \"file\""
        );
        if message.contains("no credential") {
            SecretError::Missing(message)
        } else {
            SecretError::Malformed(message)
        }
    })
}

/// Further app registrations of the environment: `M365_CLIENT_ID_<n>` with
/// `M365_CLIENT_SECRET_<n>` (or a certificate's `M365_CLIENT_CERTIFICATE_PEM_<n>` and
/// `M365_CLIENT_PRIVATE_KEY_PEM_<n>`), from n = 2 up to the first number without a client id.
pub fn env_additional_apps() -> Result<Vec<AppSecret>, SecretError> {
    let mut apps = Vec::new();
    for n in 2.. {
        let id = format!("M365_CLIENT_ID_{n}");
        if std::env::var(&id).map_or(true, |v| v.trim().is_empty()) {
            break;
        }
        apps.push(AppSecret {
            client_id: EnvSecretStore::read(&id)?,
            credential: env_credential(&format!("_{n}"))?,
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
///
/// A certificate instead of `client_secret` (docs/operations.md#certificate-credentials), here
/// or in an `[[additional_apps]]` entry:
///
/// ```toml
/// client_certificate_pem = '''
/// -----BEGIN CERTIFICATE-----
/// …
/// -----END CERTIFICATE-----
/// '''
/// client_private_key_pem = '''
/// -----BEGIN PRIVATE KEY-----
/// …
/// -----END PRIVATE KEY-----
/// '''
/// client_assertion_algorithm = "RS256"   # or "PS256"; optional
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
    #[serde(default)]
    client_secret: Option<SecretString>,
    #[serde(default)]
    client_certificate_pem: Option<String>,
    #[serde(default)]
    client_private_key_pem: Option<SecretString>,
    #[serde(default)]
    client_assertion_algorithm: Option<String>,
    #[serde(default)]
    additional_apps: Vec<AppSecretEntry>,
    #[serde(default)]
    extra: std::collections::BTreeMap<String, SecretString>,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct AppSecretEntry {
    client_id: String,
    #[serde(default)]
    client_secret: Option<SecretString>,
    #[serde(default)]
    client_certificate_pem: Option<String>,
    #[serde(default)]
    client_private_key_pem: Option<SecretString>,
    #[serde(default)]
    client_assertion_algorithm: Option<String>,
}

/// The credential of the file's (or an entry's) keys, by [`AppCredential::from_parts`].
macro_rules! credential_of {
    ($entry:expr, $prefix:expr) => {
        AppCredential::from_parts(
            $prefix,
            $entry.client_secret,
            $entry.client_certificate_pem,
            $entry.client_private_key_pem,
            $entry.client_assertion_algorithm.as_deref(),
        )
    };
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
                "the secrets file {shown} is not valid{at}: it needs tenant, client_id and client_secret (or client_certificate_pem and client_private_key_pem), and optionally an [extra] table and [[additional_apps]] tables of client_id and client_secret (or a certificate)"
            ))
        })?;
        let malformed = |message: String| {
            SecretError::Malformed(format!("the secrets file {shown}: {message}"))
        };
        let mut additional_apps = Vec::with_capacity(file.additional_apps.len());
        for (i, app) in file.additional_apps.into_iter().enumerate() {
            additional_apps.push(AppSecret {
                client_id: app.client_id,
                credential: credential_of!(app, &format!("additional_apps[{i}]."))
                    .map_err(malformed)?,
            });
        }
        Ok(ConnectionSecrets {
            additional_apps,
            tenant: file.tenant,
            client_id: file.client_id,
            credential: credential_of!(file, "").map_err(malformed)?,
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
    use m365_core::secrets::{AssertionAlgorithm, CredentialKind};

    fn secret_of(credential: &AppCredential) -> &str {
        match credential {
            AppCredential::Secret(s) => s.expose_secret(),
            AppCredential::Certificate(_) => panic!("a certificate"),
        }
    }

    const CERT: &str = include_str!("../../../tests/fixtures/certs/app.crt.pem");
    const KEY: &str = include_str!("../../../tests/fixtures/certs/app.key.pem");

    #[tokio::test]
    async fn file_store_reads_a_certificate_credential() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cert.toml");
        std::fs::write(
            &path,
            format!(
                "tenant = \"t\"\nclient_id = \"c\"\nclient_certificate_pem = \'\'\'\n{CERT}\'\'\'\n\
                 client_private_key_pem = \'\'\'\n{KEY}\'\'\'\nclient_assertion_algorithm = \"PS256\"\n\
                 [[additional_apps]]\nclient_id = \"c2\"\nclient_secret = \"s2\"\n"
            ),
        )
        .unwrap();
        let secrets = FileSecretStore { path: path.clone() }
            .connection_secrets("x")
            .await
            .unwrap();
        let AppCredential::Certificate(cert) = &secrets.credential else {
            panic!("{secrets:?}");
        };
        assert_eq!(cert.algorithm, AssertionAlgorithm::Ps256);
        assert_eq!(cert.private_key_pem.expose_secret().trim(), KEY.trim());
        assert_eq!(
            secrets.additional_apps[0].credential.kind(),
            CredentialKind::Secret
        );
        let body = KEY.lines().nth(1).unwrap();
        assert!(!format!("{secrets:?}").contains(body));
        // Both a secret and a certificate: refused, naming the keys, never a value.
        std::fs::write(
            &path,
            format!(
                "tenant = \"t\"\nclient_id = \"c\"\nclient_secret = \"leaky\"\n\
                 client_private_key_pem = \'\'\'\n{KEY}\'\'\'\n"
            ),
        )
        .unwrap();
        let error = FileSecretStore { path }
            .connection_secrets("x")
            .await
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("both client_secret and a certificate"),
            "{error}"
        );
        assert!(!error.contains("leaky") && !error.contains(body), "{error}");
    }

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
        assert_eq!(secret_of(&secrets.credential), "s3cr3t");
        assert_eq!(secrets.extra["default_password"].expose_secret(), "pw");
        let apps: Vec<(&str, &str)> = secrets
            .additional_apps
            .iter()
            .map(|a| (a.client_id.as_str(), secret_of(&a.credential)))
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
