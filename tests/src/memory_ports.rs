//! In-memory ports for a deployment of the functions without AWS: connection configurations in
//! a map, files in a map (read as `s3://` locations are), one secret store. The handlers run on
//! them exactly as on DynamoDB, S3 and Secrets Manager, so a handler test needs moto only where
//! it tests AWS itself.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test ports: a poisoned lock should fail the test loudly"
)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use m365_aws::config_store::{ConfigStoreResult, ConfigSummary, StoredConfig};
use m365_aws::secrets_manager::parse_secret;
use m365_core::secrets::{ConnectionSecrets, SecretError, SecretStore};
use m365_core::source::SourceError;
use m365_runtime::cloud_config::parse_cloud_config;
use m365_source_file::FileLoader;
use m365_wiring::ports::{ConfigVersions, SecretStores};

/// Connection configurations by name, every version kept.
#[derive(Default)]
pub struct MemoryConfigs {
    versions: Mutex<HashMap<String, Vec<StoredConfig>>>,
}

impl MemoryConfigs {
    /// Stores `text` as `connection`'s next version after checking it as an upload does.
    pub fn upload(&self, connection: &str, text: &str) -> u64 {
        parse_cloud_config(text, "upload").expect("a valid cloud configuration");
        let mut versions = self.versions.lock().unwrap();
        let list = versions.entry(connection.to_owned()).or_default();
        let version = list.len() as u64 + 1;
        list.push(StoredConfig {
            connection: connection.to_owned(),
            version,
            text: text.to_owned(),
            sha256: String::new(),
            uploaded_at: 0,
            uploaded_by: "tests".to_owned(),
        });
        version
    }
}

#[async_trait]
impl ConfigVersions for MemoryConfigs {
    async fn latest(&self, connection: &str) -> ConfigStoreResult<Option<StoredConfig>> {
        let versions = self.versions.lock().unwrap();
        Ok(versions
            .get(connection)
            .and_then(|list| list.last().cloned()))
    }

    async fn list(&self) -> ConfigStoreResult<Vec<ConfigSummary>> {
        let versions = self.versions.lock().unwrap();
        Ok(versions
            .values()
            .filter_map(|list| list.last())
            .map(|c| ConfigSummary {
                connection: c.connection.clone(),
                version: c.version,
                sha256: c.sha256.clone(),
                uploaded_at: c.uploaded_at,
                uploaded_by: c.uploaded_by.clone(),
            })
            .collect())
    }
}

/// Files by location; each write gives the file a new version tag.
#[derive(Default)]
pub struct MemoryFiles {
    files: Mutex<HashMap<String, (u64, Vec<u8>)>>,
    writes: AtomicU64,
}

impl MemoryFiles {
    pub fn put(&self, location: &str, content: Vec<u8>) {
        let version = self.writes.fetch_add(1, Ordering::Relaxed) + 1;
        self.files
            .lock()
            .unwrap()
            .insert(location.to_owned(), (version, content));
    }

    fn get(&self, location: &str) -> Result<(u64, Vec<u8>), SourceError> {
        self.files
            .lock()
            .unwrap()
            .get(location)
            .cloned()
            .ok_or_else(|| SourceError::Unavailable(format!("{location}: no such file")))
    }
}

#[async_trait]
impl FileLoader for MemoryFiles {
    async fn load(&self, location: &str) -> Result<Vec<u8>, SourceError> {
        Ok(self.get(location)?.1)
    }

    async fn version(&self, location: &str) -> Result<String, SourceError> {
        Ok(format!("v{}", self.get(location)?.0))
    }

    async fn exists(&self, location: &str) -> Result<bool, SourceError> {
        Ok(self.files.lock().unwrap().contains_key(location))
    }
}

/// One secret, in Secrets Manager's JSON layout: replaceable (a rotation), possibly missing,
/// cached until invalidated as Secrets Manager's store is, and counting its reads.
#[derive(Default)]
pub struct MemorySecret {
    current: Mutex<Option<String>>,
    cached: Mutex<Option<ConnectionSecrets>>,
    reads: AtomicU64,
}

#[async_trait]
impl SecretStore for MemorySecret {
    async fn connection_secrets(
        &self,
        _connection: &str,
    ) -> Result<ConnectionSecrets, SecretError> {
        let mut cached = self.cached.lock().unwrap();
        if let Some(secrets) = cached.as_ref() {
            return Ok(secrets.clone());
        }
        self.reads.fetch_add(1, Ordering::Relaxed);
        let current = self.current.lock().unwrap().clone();
        let Some(json) = current else {
            return Err(SecretError::Missing("no such test secret".to_owned()));
        };
        let secrets = parse_secret(&json, "the test secret")?;
        *cached = Some(secrets.clone());
        Ok(secrets)
    }

    async fn invalidate(&self, _connection: &str) {
        *self.cached.lock().unwrap() = None;
    }

    fn reads(&self) -> Option<u64> {
        Some(self.reads.load(Ordering::Relaxed))
    }
}

/// Secrets by id; an id never stored is a missing secret.
#[derive(Default)]
pub struct MemorySecretStores {
    stores: Mutex<HashMap<String, Arc<MemorySecret>>>,
}

impl MemorySecretStores {
    fn get(&self, secret_id: &str) -> Arc<MemorySecret> {
        self.stores
            .lock()
            .unwrap()
            .entry(secret_id.to_owned())
            .or_default()
            .clone()
    }

    /// Stores `json` as the secret `secret_id`; a cached copy stays until invalidated.
    pub fn put(&self, secret_id: &str, json: &str) {
        *self.get(secret_id).current.lock().unwrap() = Some(json.to_owned());
    }
}

impl SecretStores for MemorySecretStores {
    fn store(&self, secret_id: &str) -> Arc<dyn SecretStore> {
        self.get(secret_id)
    }
}
