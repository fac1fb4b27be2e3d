//! The steps every entry point takes to build a connection: its source from `[source]`, its
//! tenant reached with its credentials, and the engine's sizes and state key.

use std::sync::Arc;

use m365_core::config::ldap_source::LdapSourceConfigError;
use m365_core::config::{Config, RuleConfig, SourceConfig};
use m365_core::secrets::{ConnectionSecrets, SecretError, SecretStore};
use m365_core::{Directory, FailureKind, Source, TenantDomain};
use m365_graph::{ClientCredential, Credentials, GraphClient, GraphDirectory, GraphError};
use m365_source_file::{FileLoader, FileSource, FileSourceConfigError};
use m365_source_ldap::LdapSource;
use m365_source_pingone::{PingOneSource, PingOneSourceConfigError};

/// Source records the engine reads per page.
pub const PAGE_SIZE: usize = 1000;
/// Plan steps the engine applies (and records) per chunk.
pub const CHUNK_SIZE: usize = 200;

/// The state key of a configuration's rule: `<connection>/<rule>`.
pub fn state_key(config: &Config) -> String {
    format!("{}/{}", config.connection.name, config.rule.name)
}

/// The source adapter a `[source]` names. `files`: what reads a file source's locations
/// ([`file_loader`] for local paths and `s3://`); `secrets`: the connection's, for a source
/// that authenticates (an LDAP bind password); `rule`: what the source must read for it.
pub fn open_source(
    source: &SourceConfig,
    files: Arc<dyn FileLoader>,
    secrets: &ConnectionSecrets,
    rule: &RuleConfig,
) -> Result<Box<dyn Source>, OpenSourceError> {
    match source {
        SourceConfig::Ldap(settings) => {
            LdapSource::new(settings.clone(), secrets, rule.user_source_attributes())
                .map(|source| Box::new(source) as Box<dyn Source>)
                .map_err(OpenSourceError::Ldap)
        }
        SourceConfig::Pingone(settings) => PingOneSource::new(settings.clone(), secrets)
            .map(|source| Box::new(source) as Box<dyn Source>)
            .map_err(OpenSourceError::PingOne),
        SourceConfig::File(settings) => FileSource::new(settings.clone(), files)
            .map(|source| Box::new(source) as Box<dyn Source>)
            .map_err(OpenSourceError::File),
    }
}

/// The file loader of local paths and, given an S3 client, of `s3://` locations.
pub fn file_loader(s3: Option<aws_sdk_s3::Client>) -> Arc<dyn FileLoader> {
    Arc::new(m365_aws::AnyFileLoader::new(s3))
}

/// Why a `[source]` cannot be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenSourceError {
    #[error("[source]: {0}")]
    File(#[source] FileSourceConfigError),
    #[error("[source]: {0}")]
    Ldap(#[source] LdapSourceConfigError),
    #[error("[source]: {0}")]
    PingOne(#[source] PingOneSourceConfigError),
}

/// A tenant reached with a connection's credentials.
pub struct Tenant {
    pub secrets: ConnectionSecrets,
    pub directory: GraphDirectory,
    /// Its domains (UPN validation needs them), read once to prove the credentials work.
    pub domains: Vec<TenantDomain>,
}

/// Why a tenant could not be reached.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The credentials could not be read.
    #[error(transparent)]
    Secrets(#[from] SecretError),
    /// The Graph client refused the settings or credentials before any request.
    #[error("connection {connection}: {source}")]
    Client {
        connection: String,
        source: GraphError,
    },
    /// The tenant refused the credentials, read afresh once.
    #[error("connection {connection}: the tenant refuses the credentials: {message}")]
    Refused { connection: String, message: String },
    #[error("connection {connection}: cannot reach the tenant: {message}")]
    Unreachable { connection: String, message: String },
}

/// The Graph credentials of every app registration of `secrets`, its own first: a client
/// secret as it is, a certificate parsed and checked (docs/operations.md#certificate-credentials).
/// A certificate or key that cannot be used is a configuration error naming the secret key
/// (`client_private_key_pem`, `additional_apps[1].client_certificate_pem`) and the fix, never
/// its content.
pub fn credentials_of(secrets: &ConnectionSecrets) -> Result<Vec<Credentials>, GraphError> {
    let apps = std::iter::once(("", &secrets.client_id, &secrets.credential)).chain(
        secrets
            .additional_apps
            .iter()
            .map(|app| ("additional_apps", &app.client_id, &app.credential)),
    );
    apps.enumerate()
        .map(|(i, (list, client_id, stored))| {
            let credential = ClientCredential::from_stored(stored).map_err(|e| {
                let key = if list.is_empty() {
                    e.secret_key().to_owned()
                } else {
                    format!("{list}[{}].{}", i - 1, e.secret_key())
                };
                GraphError::Config(format!(
                    "secret {key} (certificate of app {client_id}): {e}"
                ))
            })?;
            Ok(Credentials {
                tenant: secrets.tenant.clone(),
                client_id: client_id.clone(),
                credential,
            })
        })
        .collect()
}

/// Reads `connection`'s credentials from `store`, builds its Graph client with `client` (given
/// every app registration of the connection, its own first) and reads the tenant's domains. When the tenant refuses the credentials they are read again (the
/// client secret may have been rotated under a cached copy) and tried once more.
pub async fn connect_tenant(
    connection: &str,
    store: &dyn SecretStore,
    client: impl Fn(Vec<Credentials>) -> Result<GraphClient, GraphError>,
) -> Result<Tenant, ConnectError> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let secrets = store.connection_secrets(connection).await?;
        let credentials = credentials_of(&secrets).map_err(|source| ConnectError::Client {
            connection: connection.to_owned(),
            source,
        })?;
        let directory =
            GraphDirectory::new(client(credentials).map_err(|source| ConnectError::Client {
                connection: connection.to_owned(),
                source,
            })?);
        match directory.domains().await {
            Ok(domains) => {
                return Ok(Tenant {
                    secrets,
                    directory,
                    domains,
                });
            }
            Err(e) if e.kind == FailureKind::Authentication && attempt == 1 => {
                tracing::warn!(
                    connection,
                    error = %e,
                    "the tenant refused the credentials; reading them again (rotated?)"
                );
                store.invalidate(connection).await;
            }
            Err(e) if e.kind == FailureKind::Authentication => {
                return Err(ConnectError::Refused {
                    connection: connection.to_owned(),
                    message: e.to_string(),
                });
            }
            Err(e) => {
                return Err(ConnectError::Unreachable {
                    connection: connection.to_owned(),
                    message: e.to_string(),
                });
            }
        }
    }
}
