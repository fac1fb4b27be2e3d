//! The `SecretStore` port: credentials come from here, never from the config file.
//!
//! An app registration proves its identity with one [`AppCredential`]: a client secret, or a
//! certificate whose private key signs a client assertion
//! (<https://learn.microsoft.com/en-us/entra/identity-platform/certificate-credentials>). Every
//! store reads the same secret keys ([`CLIENT_SECRET`], or [`CLIENT_CERTIFICATE_PEM`] with
//! [`CLIENT_PRIVATE_KEY_PEM`] and optionally [`CLIENT_ASSERTION_ALGORITHM`]) and builds the
//! credential with [`AppCredential::from_parts`], so that which kind is used is decided by
//! which keys are present, the same way everywhere (docs/operations.md#certificate-credentials).
//! The PEM text is only held here; `m365-graph` parses and checks it.

use async_trait::async_trait;
use secrecy::{ExposeSecret, SecretString};

/// Secret key of a client secret's *Value*.
pub const CLIENT_SECRET: &str = "client_secret";
/// Secret key of the app's certificate, PEM (`-----BEGIN CERTIFICATE-----`): the public part
/// uploaded to the app registration.
pub const CLIENT_CERTIFICATE_PEM: &str = "client_certificate_pem";
/// Secret key of the certificate's RSA private key, PEM: PKCS#8 (`BEGIN PRIVATE KEY`) or
/// PKCS#1 (`BEGIN RSA PRIVATE KEY`), unencrypted.
pub const CLIENT_PRIVATE_KEY_PEM: &str = "client_private_key_pem";
/// Secret key of the client assertion's signature algorithm: `RS256` (default) or `PS256`.
pub const CLIENT_ASSERTION_ALGORITHM: &str = "client_assertion_algorithm";

/// The signature algorithm of a client assertion. Entra accepts both with an RSA certificate
/// (<https://learn.microsoft.com/en-us/entra/identity-platform/certificate-credentials>).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum AssertionAlgorithm {
    /// RSASSA-PKCS1-v1_5 with SHA-256.
    #[default]
    Rs256,
    /// RSASSA-PSS with SHA-256 (MGF1 SHA-256, salt of 32 bytes).
    Ps256,
}

impl AssertionAlgorithm {
    /// The JWS `alg` name.
    pub fn as_str(self) -> &'static str {
        match self {
            AssertionAlgorithm::Rs256 => "RS256",
            AssertionAlgorithm::Ps256 => "PS256",
        }
    }
}

impl std::fmt::Display for AssertionAlgorithm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for AssertionAlgorithm {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_uppercase().as_str() {
            "RS256" => Ok(AssertionAlgorithm::Rs256),
            "PS256" => Ok(AssertionAlgorithm::Ps256),
            _ => Err(format!(
                "{CLIENT_ASSERTION_ALGORITHM} is {:?}; use RS256 (the default) or PS256",
                s.chars().take(16).collect::<String>()
            )),
        }
    }
}

/// Which kind of credential an app uses, for messages and reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CredentialKind {
    Secret,
    Certificate,
}

impl CredentialKind {
    /// `client secret` or `certificate`.
    pub fn as_str(self) -> &'static str {
        match self {
            CredentialKind::Secret => "client secret",
            CredentialKind::Certificate => "certificate",
        }
    }
}

impl std::fmt::Display for CredentialKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A certificate credential as stored: the certificate (public) and its private key (secret).
#[derive(Clone)]
pub struct CertificateSecret {
    /// The certificate, PEM.
    pub certificate_pem: String,
    /// Its RSA private key, PEM; never shown.
    pub private_key_pem: SecretString,
    pub algorithm: AssertionAlgorithm,
}

impl std::fmt::Debug for CertificateSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertificateSecret")
            .field(
                "certificate_pem",
                &format_args!("{} bytes", self.certificate_pem.len()),
            )
            .field("private_key_pem", &"[REDACTED]")
            .field("algorithm", &self.algorithm)
            .finish()
    }
}

/// How an app registration proves its identity to the token endpoint.
#[derive(Clone)]
pub enum AppCredential {
    /// A client secret's *Value*.
    Secret(SecretString),
    /// A certificate: the token request carries a client assertion signed with its key.
    Certificate(CertificateSecret),
}

impl std::fmt::Debug for AppCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AppCredential::Secret(_) => f.write_str("Secret([REDACTED])"),
            AppCredential::Certificate(c) => f.debug_tuple("Certificate").field(c).finish(),
        }
    }
}

impl AppCredential {
    /// Which kind it is.
    pub fn kind(&self) -> CredentialKind {
        match self {
            AppCredential::Secret(_) => CredentialKind::Secret,
            AppCredential::Certificate(_) => CredentialKind::Certificate,
        }
    }

    /// The credential the secret keys present make: `client_secret` alone, or
    /// `client_certificate_pem` with `client_private_key_pem` (and optionally
    /// `client_assertion_algorithm`). Empty values count as absent. The error names the keys
    /// (as `prefix` + key, e.g. `additional_apps[0].client_secret`) and never a value.
    pub fn from_parts(
        prefix: &str,
        secret: Option<SecretString>,
        certificate_pem: Option<String>,
        private_key_pem: Option<SecretString>,
        algorithm: Option<&str>,
    ) -> Result<AppCredential, String> {
        let secret = secret.filter(|s| !s.expose_secret().trim().is_empty());
        let certificate_pem = certificate_pem.filter(|s| !s.trim().is_empty());
        let private_key_pem = private_key_pem.filter(|s| !s.expose_secret().trim().is_empty());
        let algorithm = algorithm.filter(|s| !s.trim().is_empty());
        let cert_keys =
            format!("{prefix}{CLIENT_CERTIFICATE_PEM} and {prefix}{CLIENT_PRIVATE_KEY_PEM}");
        match (secret, certificate_pem, private_key_pem) {
            (Some(_), Some(_), _) | (Some(_), _, Some(_)) => Err(format!(
                "both {prefix}{CLIENT_SECRET} and a certificate ({cert_keys}) are set; keep one \
                 credential: remove {prefix}{CLIENT_SECRET} to use the certificate, or the \
                 certificate keys to use the secret"
            )),
            (Some(secret), None, None) => match algorithm {
                Some(_) => Err(format!(
                    "{prefix}{CLIENT_ASSERTION_ALGORITHM} is set but the credential is a client \
                     secret; remove it, or use a certificate ({cert_keys})"
                )),
                None => Ok(AppCredential::Secret(secret)),
            },
            (None, Some(certificate_pem), Some(private_key_pem)) => {
                let algorithm = match algorithm {
                    Some(name) => name.parse().map_err(|e: String| format!("{prefix}{e}"))?,
                    None => AssertionAlgorithm::default(),
                };
                Ok(AppCredential::Certificate(CertificateSecret {
                    certificate_pem,
                    private_key_pem,
                    algorithm,
                }))
            }
            (None, Some(_), None) => Err(format!(
                "{prefix}{CLIENT_CERTIFICATE_PEM} is set but {prefix}{CLIENT_PRIVATE_KEY_PEM} is \
                 missing; store the certificate's private key (PEM) there"
            )),
            (None, None, Some(_)) => Err(format!(
                "{prefix}{CLIENT_PRIVATE_KEY_PEM} is set but {prefix}{CLIENT_CERTIFICATE_PEM} is \
                 missing; store the certificate (PEM, the public part uploaded to the app \
                 registration) there"
            )),
            (None, None, None) => Err(format!(
                "no credential: set {prefix}{CLIENT_SECRET} (a client secret's Value), or \
                 {cert_keys} (a certificate uploaded to the app registration and its private key)"
            )),
        }
    }
}

/// The credentials of one connection.
#[derive(Clone)]
pub struct ConnectionSecrets {
    /// Tenant GUID or domain.
    pub tenant: String,
    pub client_id: String,
    /// The app's client secret or certificate.
    pub credential: AppCredential,
    /// Further app registrations of the same tenant to write through, past one app's write
    /// quota (see `m365_graph::GraphClient::with_apps`).
    pub additional_apps: Vec<AppSecret>,
    /// Further named secrets (a default password, webhook signing secrets), never logged.
    pub extra: std::collections::BTreeMap<String, SecretString>,
}

impl std::fmt::Debug for ConnectionSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectionSecrets")
            .field("tenant", &self.tenant)
            .field("client_id", &self.client_id)
            .field("credential", &self.credential)
            .field("additional_apps", &self.additional_apps)
            .field("extra", &self.extra.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// One further app registration: its client id and credential.
#[derive(Clone)]
pub struct AppSecret {
    pub client_id: String,
    pub credential: AppCredential,
}

impl std::fmt::Debug for AppSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppSecret")
            .field("client_id", &self.client_id)
            .field("credential", &self.credential)
            .finish()
    }
}

/// Why secrets could not be had.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// Nothing stored under that name; the message says where it was looked for.
    #[error("{0}")]
    Missing(String),
    /// Stored, but not in the expected shape (names the field, never the value).
    #[error("{0}")]
    Malformed(String),
    #[error("the secret store is unavailable: {0}")]
    Unavailable(String),
}

/// Where credentials live: environment/file locally (`m365-wiring`), AWS Secrets Manager in
/// the cloud (`m365-aws`).
#[async_trait]
pub trait SecretStore: Send + Sync {
    /// The credentials of `connection`.
    async fn connection_secrets(&self, connection: &str) -> Result<ConnectionSecrets, SecretError>;

    /// Drops any cached copy so the next call reads the store again (after a credential was
    /// refused: it may have been rotated).
    async fn invalidate(&self, connection: &str);

    /// How many times the store has read its backing store rather than a cached copy, for a
    /// caller that must know whether what it got is fresh (the webhook reads a secret again
    /// once when no signature matches). `None`: the store keeps no copy, so every answer is
    /// fresh.
    fn reads(&self) -> Option<u64> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(s: &str) -> Option<SecretString> {
        Some(SecretString::from(s))
    }

    #[test]
    fn the_keys_present_choose_the_credential() {
        let c = AppCredential::from_parts("", secret("s3cr3t"), None, None, None).unwrap();
        assert_eq!(c.kind(), CredentialKind::Secret);
        let c = AppCredential::from_parts(
            "",
            secret(" "),
            Some("CERT".into()),
            secret("KEY-MATERIAL"),
            Some("ps256"),
        )
        .unwrap();
        let AppCredential::Certificate(cert) = &c else {
            panic!("{c:?}");
        };
        assert_eq!(cert.algorithm, AssertionAlgorithm::Ps256);
        let shown = format!("{c:?} {c:#?}");
        assert!(!shown.contains("KEY-MATERIAL"), "{shown}");
        let c = AppCredential::from_parts("", None, Some("C".into()), secret("K"), None).unwrap();
        assert!(matches!(
            c,
            AppCredential::Certificate(CertificateSecret {
                algorithm: AssertionAlgorithm::Rs256,
                ..
            })
        ));
    }

    #[test]
    fn conflicting_or_partial_keys_are_named_without_values() {
        let cases = [
            (
                AppCredential::from_parts("x.", secret("LEAK"), Some("C".into()), None, None),
                "both x.client_secret and a certificate",
            ),
            (
                AppCredential::from_parts("", None, Some("C".into()), None, None),
                "client_private_key_pem is missing",
            ),
            (
                AppCredential::from_parts("", None, None, secret("LEAK"), None),
                "client_certificate_pem is missing",
            ),
            (
                AppCredential::from_parts("", None, None, None, None),
                "no credential",
            ),
            (
                AppCredential::from_parts("", secret("LEAK"), None, None, Some("RS256")),
                "client_assertion_algorithm is set",
            ),
            (
                AppCredential::from_parts(
                    "",
                    None,
                    Some("C".into()),
                    secret("LEAK"),
                    Some("HS256"),
                ),
                "use RS256 (the default) or PS256",
            ),
        ];
        for (result, expected) in cases {
            let message = result.unwrap_err();
            assert!(message.contains(expected), "{message}");
            assert!(!message.contains("LEAK"), "{message}");
        }
    }
}
