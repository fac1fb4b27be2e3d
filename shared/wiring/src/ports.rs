//! The ports a deployment of the functions is built on, beside the engine's own (source,
//! directory, state, clock): where connection configurations are stored and where each
//! connection's secret is read. In AWS they are the DynamoDB table ([`ConfigStore`]) and
//! Secrets Manager ([`SecretsManagerStores`]), and S3 for file sources; a handler test gives
//! in-memory ones.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use m365_aws::config_store::{ConfigStoreResult, ConfigSummary, StoredConfig};
use m365_aws::{ConfigStore, SecretsManagerSecretStore};
use m365_core::{SecretStore, StateStore};
use m365_source_file::FileLoader;

/// Where connection configurations are read from: each connection's newest version, and the
/// list of configured connections.
#[async_trait]
pub trait ConfigVersions: Send + Sync {
    /// `connection`'s newest configuration, `None` when none was uploaded.
    async fn latest(&self, connection: &str) -> ConfigStoreResult<Option<StoredConfig>>;
    /// Every configured connection with its newest version.
    async fn list(&self) -> ConfigStoreResult<Vec<ConfigSummary>>;
}

#[async_trait]
impl ConfigVersions for ConfigStore {
    async fn latest(&self, connection: &str) -> ConfigStoreResult<Option<StoredConfig>> {
        ConfigStore::latest(self, connection).await
    }

    async fn list(&self) -> ConfigStoreResult<Vec<ConfigSummary>> {
        ConfigStore::list(self).await
    }
}

/// The secret store of each secret id. A store caches what it read, so the same id gives the
/// same store for the deployment's life.
pub trait SecretStores: Send + Sync {
    fn store(&self, secret_id: &str) -> Arc<dyn SecretStore>;
}

/// Secrets Manager: one cached [`SecretsManagerSecretStore`] per secret id.
pub struct SecretsManagerStores {
    client: aws_sdk_secretsmanager::Client,
    max_age: Duration,
    stores: Mutex<HashMap<String, Arc<SecretsManagerSecretStore>>>,
}

impl SecretsManagerStores {
    /// Stores on `client` whose cached secrets are read again after `max_age`.
    pub fn new(client: aws_sdk_secretsmanager::Client, max_age: Duration) -> Self {
        Self {
            client,
            max_age,
            stores: Mutex::new(HashMap::new()),
        }
    }
}

impl SecretStores for SecretsManagerStores {
    fn store(&self, secret_id: &str) -> Arc<dyn SecretStore> {
        let make = || {
            Arc::new(SecretsManagerSecretStore::new(
                self.client.clone(),
                secret_id.to_owned(),
                self.max_age,
            ))
        };
        match self.stores.lock() {
            Ok(mut stores) => stores
                .entry(secret_id.to_owned())
                .or_insert_with(make)
                .clone(),
            // A panic elsewhere poisoned the map: a fresh store still reads the right secret.
            Err(_) => make(),
        }
    }
}

/// What a deployment is built on.
pub struct Ports {
    /// Sync state: links, checkpoints, leases, runs, webhook event ids.
    pub state: Arc<dyn StateStore>,
    pub configs: Arc<dyn ConfigVersions>,
    pub secrets: Arc<dyn SecretStores>,
    /// What reads a file source's locations (`s3://` in AWS).
    pub files: Arc<dyn FileLoader>,
}
