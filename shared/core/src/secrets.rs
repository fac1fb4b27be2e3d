//! The `SecretStore` port: credentials come from here, never from the config file.

use async_trait::async_trait;
use secrecy::SecretString;

/// The credentials of one connection.
#[derive(Clone)]
pub struct ConnectionSecrets {
    /// Tenant GUID or domain.
    pub tenant: String,
    pub client_id: String,
    pub client_secret: SecretString,
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
            .field("client_secret", &"[REDACTED]")
            .field("additional_apps", &self.additional_apps)
            .field("extra", &self.extra.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// One further app registration: its client id and secret.
#[derive(Clone)]
pub struct AppSecret {
    pub client_id: String,
    pub client_secret: SecretString,
}

impl std::fmt::Debug for AppSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppSecret")
            .field("client_id", &self.client_id)
            .field("client_secret", &"[REDACTED]")
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
