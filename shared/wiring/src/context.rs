//! What a Lambda container builds once ([`Deployment`]: settings, SDK clients, the state store,
//! the config store, cached secret stores, the Graph token cache and pacers) and what each
//! invocation builds from it ([`Connection`]: the connection's newest configuration, its
//! credentials, its source, its tenant and its compiled rule).
//!
//! A connection's configuration is read from the table at every scheduled invocation (one
//! Query), so an upload takes effect on the next run without redeploying; its credentials come
//! from the secret store's cache, which outlives invocations and is refreshed once when the
//! tenant refuses them (a rotated client secret).
//!
//! The webhook answers requests before it knows they are genuine, so what it reads to check
//! them is cached for `M365_CONFIG_CACHE_SECONDS` (60) per container
//! ([`Deployment::webhook_configuration`], [`Deployment::webhook_secrets`]): the list of
//! configured connections with their newest version (one Query on the config index), each
//! connection's configuration of that version, and a failure to read a connection's secret.
//! A name that is not in the list costs no read at all, so requests for made-up connections
//! cannot make every call a DynamoDB Query, nor bad requests for a real one a Secrets Manager
//! read. An upload reaches the webhook within that time. A failure to read the list is not
//! cached (it says nothing about one connection, and the next request tries again).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use aws_config::SdkConfig;
use m365_aws::{ConfigStore, ConfigStoreError, DynamoStateStore};
use m365_core::config::{Config, ConfigError};
use m365_core::planner::Rule;
use m365_core::rule_mapping::{CompileError, compile_connection_rule};
use m365_core::secrets::{ConnectionSecrets, SecretError, SecretStore};
use m365_core::{Clock, Source, StateStore, SystemClock, UnixMillis};
use m365_graph::{EndpointPolicy, GraphClient, GraphDirectory, GraphSettings, SharedState};
use m365_source_file::FileLoader;

use crate::cloud_config::{parse_cloud_config, secret_id};
use crate::connect::{
    CHUNK_SIZE, ConnectError, OpenSourceError, PAGE_SIZE, Tenant, connect_tenant, open_source,
    state_key,
};
use crate::ports::{ConfigVersions, Ports, SecretStores, SecretsManagerStores};

/// The functions' settings, from their environment (contracts in `infra/template.yaml`).
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// `M365_TABLE`: the DynamoDB table of state and connection configs.
    pub table: String,
    /// `M365_SECRET_ID`: the secret of connections whose config names none.
    pub default_secret_id: Option<String>,
    /// `M365_DEADLINE_MARGIN_SECONDS` (60): a sync stops starting work this long before the
    /// invocation's deadline.
    pub deadline_margin: Duration,
    /// `M365_MAX_HOPS` (100): invocations of one state machine execution.
    pub max_hops: u32,
    /// `M365_WEBHOOK_MAX_BODY_BYTES` (1 MiB).
    pub max_body_bytes: usize,
    /// `M365_WEBHOOK_TOLERANCE_SECONDS` (300): accepted clock difference of a webhook timestamp.
    pub tolerance_secs: i64,
    /// `M365_EVENT_RETENTION_DAYS` (8): how long a webhook id is remembered (senders retry for
    /// days; Standard Webhooks' example schedule spans about 3).
    pub event_retention: Duration,
    /// `M365_SECRET_MAX_AGE_SECONDS` (900): cached credentials are read again after this.
    pub secret_max_age: Duration,
    /// `M365_WEBHOOK_DEADLINE_MARGIN_SECONDS` (5): a webhook run stops starting work this long
    /// before the invocation's deadline.
    pub webhook_deadline_margin: Duration,
    /// `M365_EVENT_CLAIM_SECONDS` (300): how long a webhook id is held as in progress while its
    /// event is applied; longer than the function's timeout, so that a retry arriving meanwhile
    /// waits, and short, so that an attempt killed mid-run does not hold the id for long.
    pub event_claim: Duration,
    /// `M365_CONFIG_CACHE_SECONDS` (60): how long the webhook keeps what it read to
    /// authenticate requests (module docs).
    pub config_cache: Duration,
    /// `M365_LOCAL_TENANT_URL`: a loopback URL (the sandbox tenant) that replaces Microsoft's
    /// login and Graph hosts, for running the functions locally and in tests. Connection configs
    /// cannot name hosts at all (they are data any config uploader controls); only the
    /// function's environment, which the template never sets, can, and only to loopback.
    pub local_tenant_url: Option<String>,
}

/// Why the functions' environment is not usable. The message names the variable and the fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SettingsError {
    /// A variable the functions cannot do without is not set.
    #[error("{name} is not set: {needed_for} (the template sets it)")]
    Missing {
        name: &'static str,
        needed_for: &'static str,
    },
    /// A number is not a whole number.
    #[error("{name}={value:?} is not a whole number; fix the function's environment")]
    NotANumber { name: &'static str, value: String },
    /// A number is below its least value.
    #[error("{name} must be at least {least}")]
    TooSmall { name: &'static str, least: u64 },
    /// `M365_LOCAL_TENANT_URL` is not a loopback URL the Graph client accepts.
    #[error("M365_LOCAL_TENANT_URL: {reason}")]
    LocalTenantUrl { reason: String },
}

impl Settings {
    /// Reads the settings through `lookup` (the environment in `main`, a map in tests).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Settings, SettingsError> {
        fn number<T: std::str::FromStr>(
            lookup: &impl Fn(&str) -> Option<String>,
            name: &'static str,
            default: T,
        ) -> Result<T, SettingsError> {
            match lookup(name) {
                None => Ok(default),
                Some(text) if text.trim().is_empty() => Ok(default),
                Some(text) => text
                    .trim()
                    .parse()
                    .map_err(|_| SettingsError::NotANumber { name, value: text }),
            }
        }
        let table = lookup("M365_TABLE")
            .filter(|t| !t.trim().is_empty())
            .ok_or(SettingsError::Missing {
                name: "M365_TABLE",
                needed_for: "the function needs the name of its DynamoDB table",
            })?;
        let max_hops: u32 = number(&lookup, "M365_MAX_HOPS", 100)?;
        if max_hops == 0 {
            return Err(SettingsError::TooSmall {
                name: "M365_MAX_HOPS",
                least: 1,
            });
        }
        let max_body_bytes: usize = number(&lookup, "M365_WEBHOOK_MAX_BODY_BYTES", 1 << 20)?;
        let seconds = |name: &'static str, default: u64| -> Result<Duration, SettingsError> {
            Ok(Duration::from_secs(number(&lookup, name, default)?))
        };
        Ok(Settings {
            table,
            default_secret_id: lookup("M365_SECRET_ID").filter(|s| !s.trim().is_empty()),
            deadline_margin: seconds("M365_DEADLINE_MARGIN_SECONDS", 60)?,
            max_hops,
            max_body_bytes,
            tolerance_secs: number(&lookup, "M365_WEBHOOK_TOLERANCE_SECONDS", 300)?,
            event_retention: Duration::from_secs(
                number::<u64>(&lookup, "M365_EVENT_RETENTION_DAYS", 8)?.saturating_mul(86_400),
            ),
            secret_max_age: seconds("M365_SECRET_MAX_AGE_SECONDS", 900)?,
            webhook_deadline_margin: seconds("M365_WEBHOOK_DEADLINE_MARGIN_SECONDS", 5)?,
            event_claim: seconds("M365_EVENT_CLAIM_SECONDS", 300)?,
            config_cache: seconds("M365_CONFIG_CACHE_SECONDS", 60)?,
            local_tenant_url: local_tenant_url(&lookup)?,
        })
    }
}

/// `M365_LOCAL_TENANT_URL`, which must be a loopback URL.
fn local_tenant_url(
    lookup: &impl Fn(&str) -> Option<String>,
) -> Result<Option<String>, SettingsError> {
    let Some(url) = lookup("M365_LOCAL_TENANT_URL").filter(|u| !u.trim().is_empty()) else {
        return Ok(None);
    };
    GraphSettings::for_local(url.trim())
        .check_endpoint_overrides(EndpointPolicy::Local)
        .map_err(|e| SettingsError::LocalTenantUrl {
            reason: e.to_string(),
        })?;
    if !m365_graph::is_loopback_url(url.trim()) {
        return Err(SettingsError::LocalTenantUrl {
            reason: "must be a loopback URL (http://127.0.0.1:PORT of a sandbox tenant); \
                     remove it to reach Microsoft's hosts"
                .to_owned(),
        });
    }
    Ok(Some(url.trim().to_owned()))
}

/// What kind of failure keeps a connection from running: what callers decide by (the Step
/// Functions error type, the webhook's status, the command line's exit code).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetupFailure {
    /// No configuration uploaded for the connection.
    NotConfigured,
    /// The stored configuration or the secret is not usable: fix it, then run again.
    Invalid,
    /// The table, Secrets Manager or the tenant cannot be reached now; worth retrying.
    Unavailable,
    /// The tenant refused the credentials, also after reading them again.
    CredentialsRefused,
}

/// Why a connection cannot run at all, with the cause as its own type. The message names the
/// connection, the setting and the fix; it never holds a secret. Causes are shared (`Arc`) so
/// that the webhook can cache an outcome and answer it again.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SetupError {
    /// No configuration uploaded for this connection.
    #[error(
        "connection {connection:?} has no configuration in the table; upload one with `m365-provisioner cloud config upload --table <table> --file <config.toml>`"
    )]
    NotConfigured { connection: String },
    /// The table of configurations could not be read.
    #[error("connection {connection}: cannot read its configuration: {cause}")]
    ConfigStore {
        connection: String,
        cause: Arc<ConfigStoreError>,
    },
    /// The stored configuration is not valid (the error names its origin and key).
    #[error(transparent)]
    Configuration(Arc<ConfigError>),
    /// The configuration is stored under another connection's name.
    #[error(
        "{origin}: connection.name is {found:?}, but it is stored under {connection:?}; upload it again"
    )]
    NameMismatch {
        origin: String,
        connection: String,
        found: String,
    },
    /// `[source]` cannot be opened.
    #[error("connection {connection}: {cause}")]
    Source {
        connection: String,
        cause: Arc<OpenSourceError>,
    },
    /// The connection's secret cannot be read, or is malformed.
    #[error(transparent)]
    Secret(Arc<SecretError>),
    /// The tenant cannot be reached, or refused the credentials.
    #[error(transparent)]
    Tenant(Arc<ConnectError>),
    /// The rule does not compile against the tenant.
    #[error("connection {connection} configuration version {version}: [rule]: {cause}")]
    Rule {
        connection: String,
        version: u64,
        cause: Arc<CompileError>,
    },
}

impl SetupError {
    /// What kind of failure this is.
    pub fn failure(&self) -> SetupFailure {
        match self {
            SetupError::NotConfigured { .. } => SetupFailure::NotConfigured,
            SetupError::ConfigStore { .. } => SetupFailure::Unavailable,
            SetupError::Configuration(_)
            | SetupError::NameMismatch { .. }
            | SetupError::Source { .. }
            | SetupError::Rule { .. } => SetupFailure::Invalid,
            SetupError::Secret(cause) => secret_failure(cause),
            SetupError::Tenant(cause) => match cause.as_ref() {
                ConnectError::Secrets(cause) => secret_failure(cause),
                ConnectError::Unreachable { .. } => SetupFailure::Unavailable,
                ConnectError::Refused { .. } => SetupFailure::CredentialsRefused,
                ConnectError::Client { .. } => SetupFailure::Invalid,
            },
        }
    }
}

fn secret_failure(error: &SecretError) -> SetupFailure {
    match error {
        SecretError::Unavailable(_) => SetupFailure::Unavailable,
        _ => SetupFailure::Invalid,
    }
}

/// Built once per container and kept across warm invocations.
pub struct Deployment {
    pub settings: Settings,
    /// Sync state: links, checkpoints, leases, runs, webhook event ids.
    pub state: Arc<dyn StateStore>,
    pub clock: Arc<dyn Clock>,
    configs: Arc<dyn ConfigVersions>,
    secret_stores: Arc<dyn SecretStores>,
    files: Arc<dyn FileLoader>,
    graph: SharedState,
    /// When each connection's secret was last read again because a webhook signature did not
    /// match: bad requests cannot make every call a Secrets Manager read.
    refreshed: std::sync::Mutex<HashMap<String, m365_core::UnixMillis>>,
    /// What the webhook read to authenticate requests (module docs).
    webhook_cache: tokio::sync::Mutex<WebhookCache>,
    /// Reads of connection configurations from the table (config index or a configuration).
    config_reads: AtomicU64,
}

/// A connection's configuration as the webhook caches it.
#[derive(Clone)]
pub struct Configured {
    pub config: Config,
    pub version: u64,
    pub secret_store: Arc<dyn SecretStore>,
}

/// The webhook's per-container cache (module docs).
#[derive(Default)]
struct WebhookCache {
    /// When the config index was read, and each configured connection's newest version.
    index: Option<(UnixMillis, HashMap<String, u64>)>,
    /// Per connection: the version its entry was read for, and what reading it gave.
    configs: HashMap<String, (u64, Result<Configured, SetupError>)>,
    /// Per connection: when reading its secret failed, and why.
    secret_failures: HashMap<String, (UnixMillis, SetupError)>,
}

/// Secrets are read again for unmatched webhook signatures at most this often per connection.
const REFRESH_INTERVAL_MS: i64 = 60_000;

impl Deployment {
    /// The deployment of a Lambda container: settings from the environment, AWS from the SDK's
    /// default chain, the system clock.
    pub async fn from_env() -> Result<Deployment, SettingsError> {
        let settings = Settings::from_lookup(|name| std::env::var(name).ok())?;
        let sdk = m365_aws::sdk_config(None).await;
        Ok(Deployment::new(
            &sdk,
            settings,
            Arc::new(SystemClock),
            SharedState::default(),
        ))
    }

    /// A deployment on AWS (DynamoDB, Secrets Manager, S3) with given settings, clock and Graph
    /// token cache/pacers (tests give moto, a manual clock and an isolated cache).
    pub fn new(
        sdk: &SdkConfig,
        settings: Settings,
        clock: Arc<dyn Clock>,
        graph: SharedState,
    ) -> Deployment {
        let dynamodb = m365_aws::dynamodb_client(sdk);
        let ports = Ports {
            state: Arc::new(DynamoStateStore::new(
                dynamodb.clone(),
                settings.table.clone(),
            )),
            configs: Arc::new(ConfigStore::new(dynamodb, settings.table.clone())),
            secrets: Arc::new(SecretsManagerStores::new(
                aws_sdk_secretsmanager::Client::new(sdk),
                settings.secret_max_age,
            )),
            files: crate::connect::file_loader(Some(m365_aws::s3_client(sdk))),
        };
        Deployment::on(ports, settings, clock, graph)
    }

    /// A deployment on any [`Ports`]: the handlers run the same on AWS and on in-memory ones.
    pub fn on(
        ports: Ports,
        settings: Settings,
        clock: Arc<dyn Clock>,
        graph: SharedState,
    ) -> Deployment {
        Deployment {
            state: ports.state,
            configs: ports.configs,
            secret_stores: ports.secrets,
            files: ports.files,
            clock,
            graph,
            refreshed: std::sync::Mutex::new(HashMap::new()),
            webhook_cache: tokio::sync::Mutex::new(WebhookCache::default()),
            config_reads: AtomicU64::new(0),
            settings,
        }
    }

    /// The secret store of a secret id, the same for the container's life.
    pub fn secret_store(&self, secret_id: &str) -> Arc<dyn SecretStore> {
        self.secret_stores.store(secret_id)
    }

    /// Whether `connection`'s secret may be read again now for an unmatched webhook signature
    /// (at most once a minute); records the refresh when it may.
    pub fn may_refresh_for_signature(&self, connection: &str) -> bool {
        let now = self.clock.now();
        let Ok(mut refreshed) = self.refreshed.lock() else {
            return false;
        };
        match refreshed.get(connection) {
            Some(last) if now - last < REFRESH_INTERVAL_MS => false,
            _ => {
                refreshed.insert(connection.to_owned(), now);
                true
            }
        }
    }

    /// Records that `connection`'s secret was just read and matched no webhook signature: it is
    /// as fresh as a read again would make it, so the next minute reads it no more.
    pub fn secret_read_for_signature(&self, connection: &str) {
        if let Ok(mut refreshed) = self.refreshed.lock() {
            refreshed.insert(connection.to_owned(), self.clock.now());
        }
    }

    /// The newest configuration of `name`, validated for the cloud, and its secret store.
    pub async fn configuration(
        &self,
        name: &str,
    ) -> Result<(Config, u64, Arc<dyn SecretStore>), SetupError> {
        self.config_reads.fetch_add(1, Ordering::Relaxed);
        let stored = self
            .configs
            .latest(name)
            .await
            .map_err(|e| SetupError::ConfigStore {
                connection: name.to_owned(),
                cause: Arc::new(e),
            })?
            .ok_or_else(|| SetupError::NotConfigured {
                connection: name.to_owned(),
            })?;
        let origin = format!("connection {name} configuration version {}", stored.version);
        let config = parse_cloud_config(&stored.text, &origin)
            .map_err(|e| SetupError::Configuration(Arc::new(e)))?;
        if config.connection.name != name {
            return Err(SetupError::NameMismatch {
                origin,
                connection: name.to_owned(),
                found: config.connection.name,
            });
        }
        let secret_id =
            secret_id(&config, self.settings.default_secret_id.as_deref()).map_err(|mut e| {
                e.origin = origin;
                SetupError::Configuration(Arc::new(e))
            })?;
        let store = self.secret_store(&secret_id);
        Ok((config, stored.version, store))
    }

    /// How many times a connection configuration or the config index was read from the table.
    pub fn config_reads(&self) -> u64 {
        self.config_reads.load(Ordering::Relaxed)
    }

    /// [`Self::configuration`] through the webhook's cache (module docs): a connection missing
    /// from the config index is [`SetupError::NotConfigured`] without a read of its own, and
    /// what reading a configuration gave (a failure too, but for [`SetupFailure::Unavailable`]) is
    /// kept until the index names a newer version.
    pub async fn webhook_configuration(&self, name: &str) -> Result<Configured, SetupError> {
        let now = self.clock.now();
        let mut cache = self.webhook_cache.lock().await;
        let ttl = self.cache_ttl_ms();
        let fresh = cache
            .index
            .as_ref()
            .is_some_and(|(read_at, _)| now - read_at < ttl);
        if !fresh {
            self.config_reads.fetch_add(1, Ordering::Relaxed);
            let listed = self
                .configs
                .list()
                .await
                .map_err(|e| SetupError::ConfigStore {
                    connection: name.to_owned(),
                    cause: Arc::new(e),
                })?;
            let index: HashMap<String, u64> = listed
                .into_iter()
                .map(|summary| (summary.connection, summary.version))
                .collect();
            cache
                .configs
                .retain(|name, (version, _)| index.get(name) == Some(version));
            cache
                .secret_failures
                .retain(|name, _| index.contains_key(name));
            cache.index = Some((now, index));
        }
        let newest = cache
            .index
            .as_ref()
            .and_then(|(_, index)| index.get(name).copied());
        let Some(newest) = newest else {
            return Err(SetupError::NotConfigured {
                connection: name.to_owned(),
            });
        };
        if let Some((version, outcome)) = cache.configs.get(name)
            && *version == newest
        {
            return outcome.clone();
        }
        let outcome = self
            .configuration(name)
            .await
            .map(|(config, version, secret_store)| Configured {
                config,
                version,
                secret_store,
            });
        let unavailable = outcome
            .as_ref()
            .is_err_and(|e| e.failure() == SetupFailure::Unavailable);
        if !unavailable {
            cache
                .configs
                .insert(name.to_owned(), (newest, outcome.clone()));
        }
        outcome
    }

    /// `connection`'s secrets for the webhook: a failure to read them is kept for
    /// `M365_CONFIG_CACHE_SECONDS` and answered again without a Secrets Manager call.
    pub async fn webhook_secrets(
        &self,
        connection: &str,
        store: &dyn SecretStore,
    ) -> Result<ConnectionSecrets, SetupError> {
        let now = self.clock.now();
        let ttl = self.cache_ttl_ms();
        {
            let cache = self.webhook_cache.lock().await;
            if let Some((failed_at, error)) = cache.secret_failures.get(connection)
                && now - failed_at < ttl
            {
                return Err(error.clone());
            }
        }
        let result = store.connection_secrets(connection).await;
        let mut cache = self.webhook_cache.lock().await;
        match result {
            Ok(secrets) => {
                cache.secret_failures.remove(connection);
                Ok(secrets)
            }
            Err(error) => {
                let error = SetupError::Secret(Arc::new(error));
                cache
                    .secret_failures
                    .insert(connection.to_owned(), (now, error.clone()));
                Err(error)
            }
        }
    }

    fn cache_ttl_ms(&self) -> i64 {
        i64::try_from(self.settings.config_cache.as_millis()).unwrap_or(i64::MAX)
    }

    /// Everything a run of `name` needs. Reaches the tenant once (its domains); when the tenant
    /// refuses the credentials, they are read again from Secrets Manager and tried once more.
    pub async fn connection(&self, name: &str) -> Result<Connection, SetupError> {
        let (config, version, secret_store) = self.configuration(name).await?;
        self.connection_from(name, config, version, secret_store)
            .await
    }

    /// [`Self::connection`] with the configuration already read (by [`Self::configuration`]).
    pub async fn connection_from(
        &self,
        name: &str,
        config: Config,
        version: u64,
        secret_store: Arc<dyn SecretStore>,
    ) -> Result<Connection, SetupError> {
        let tenant = connect_tenant(name, secret_store.as_ref(), |credentials| {
            GraphClient::with_apps(
                self.graph_settings(&config),
                credentials,
                self.graph.clone(),
            )
        })
        .await
        .map_err(|e| SetupError::Tenant(Arc::new(e)))?;
        let Tenant {
            secrets,
            directory,
            domains,
        } = tenant;
        let source = open_source(&config.source, self.files.clone(), &secrets, &config.rule)
            .map_err(|e| SetupError::Source {
                connection: name.to_owned(),
                cause: Arc::new(e),
            })?;
        let rule =
            compile_connection_rule(&config, &domains, &secrets).map_err(|e| SetupError::Rule {
                connection: name.to_owned(),
                version,
                cause: Arc::new(e),
            })?;
        Ok(Connection {
            key: state_key(&config),
            name: name.to_owned(),
            version,
            config,
            secrets,
            secret_store,
            source,
            directory,
            rule,
        })
    }

    /// The Graph settings of a connection in the cloud: only `cloud`'s hosts, unless the
    /// deployment names a local test tenant.
    fn graph_settings(&self, config: &Config) -> GraphSettings {
        let mut graph = GraphSettings::from_connection(&config.connection);
        graph.endpoint_policy = EndpointPolicy::Cloud;
        if let Some(url) = &self.settings.local_tenant_url {
            graph.login_url = Some(url.clone());
            graph.graph_url = Some(url.clone());
            graph.endpoint_policy = EndpointPolicy::Local;
        }
        graph
    }
}

/// One invocation's connection.
pub struct Connection {
    /// The connection's name (the Scheduler event's, the webhook path's).
    pub name: String,
    /// State key of its rule: `<connection>/<rule>`.
    pub key: String,
    /// Configuration version in use.
    pub version: u64,
    pub config: Config,
    pub secrets: ConnectionSecrets,
    pub secret_store: Arc<dyn SecretStore>,
    pub source: Box<dyn Source>,
    pub directory: GraphDirectory,
    pub rule: Rule,
}

impl Connection {
    /// The engine on this connection's ports and the deployment's state and clock.
    pub fn engine<'a>(&'a self, deployment: &'a Deployment) -> m365_core::engine::Engine<'a> {
        m365_core::engine::Engine {
            connection: &self.key,
            rule: &self.rule,
            source: self.source.as_ref(),
            directory: &self.directory,
            state: deployment.state.as_ref(),
            clock: deployment.clock.as_ref(),
            page_size: PAGE_SIZE,
            chunk_size: CHUNK_SIZE,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lookup(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        move |name| map.get(name).cloned()
    }

    #[test]
    fn a_local_tenant_url_must_be_loopback() {
        let local = Settings::from_lookup(lookup(&[
            ("M365_TABLE", "t"),
            ("M365_LOCAL_TENANT_URL", "http://127.0.0.1:8750"),
        ]))
        .unwrap();
        assert_eq!(
            local.local_tenant_url.as_deref(),
            Some("http://127.0.0.1:8750")
        );
        for url in [
            "https://graph.microsoft.com",
            "http://attacker.example",
            "not a url",
        ] {
            let error = Settings::from_lookup(lookup(&[
                ("M365_TABLE", "t"),
                ("M365_LOCAL_TENANT_URL", url),
            ]))
            .unwrap_err();
            assert!(
                error.to_string().contains("M365_LOCAL_TENANT_URL"),
                "{url}: {error}"
            );
        }
        let unset = Settings::from_lookup(lookup(&[("M365_TABLE", "t")])).unwrap();
        assert_eq!(unset.local_tenant_url, None);
    }

    #[test]
    fn setup_errors_keep_their_cause_and_say_what_kind_of_failure_they_are() {
        let refused = SetupError::Tenant(Arc::new(ConnectError::Refused {
            connection: "contoso".into(),
            message: "AADSTS7000215: invalid client secret".into(),
        }));
        assert_eq!(refused.failure(), SetupFailure::CredentialsRefused);
        assert!(refused.to_string().contains("contoso"), "{refused}");
        let down = SetupError::Secret(Arc::new(SecretError::Unavailable("timeout".into())));
        assert_eq!(down.failure(), SetupFailure::Unavailable);
        let missing = SetupError::Tenant(Arc::new(ConnectError::Secrets(SecretError::Missing(
            "no secret m365/contoso".into(),
        ))));
        assert_eq!(missing.failure(), SetupFailure::Invalid);
        let table = SetupError::ConfigStore {
            connection: "contoso".into(),
            cause: Arc::new(ConfigStoreError::Unavailable {
                code: None,
                message: "throttled".into(),
            }),
        };
        assert_eq!(table.failure(), SetupFailure::Unavailable);
        assert!(table.to_string().contains("throttled"), "{table}");
        let none = SetupError::NotConfigured {
            connection: "fabrikam".into(),
        };
        assert_eq!(none.failure(), SetupFailure::NotConfigured);
        assert!(none.to_string().contains("cloud config upload"), "{none}");
    }

    #[test]
    fn settings_have_documented_defaults() {
        let s = Settings::from_lookup(lookup(&[("M365_TABLE", "t")])).unwrap();
        assert_eq!(s.table, "t");
        assert_eq!(s.default_secret_id, None);
        assert_eq!(s.deadline_margin, Duration::from_secs(60));
        assert_eq!(s.max_hops, 100);
        assert_eq!(s.max_body_bytes, 1 << 20);
        assert_eq!(s.tolerance_secs, 300);
        assert_eq!(s.event_retention, Duration::from_secs(8 * 86_400));
        assert_eq!(s.webhook_deadline_margin, Duration::from_secs(5));
        assert_eq!(s.event_claim, Duration::from_secs(300));
        assert_eq!(s.config_cache, Duration::from_secs(60));
    }

    #[test]
    fn bad_settings_name_the_variable() {
        let e = Settings::from_lookup(lookup(&[])).unwrap_err();
        assert!(
            matches!(
                e,
                SettingsError::Missing {
                    name: "M365_TABLE",
                    ..
                }
            ),
            "{e:?}"
        );
        assert!(e.to_string().contains("M365_TABLE"), "{e}");
        let e = Settings::from_lookup(lookup(&[("M365_TABLE", "t"), ("M365_MAX_HOPS", "x")]))
            .unwrap_err();
        assert_eq!(
            e,
            SettingsError::NotANumber {
                name: "M365_MAX_HOPS",
                value: "x".to_owned()
            }
        );
        assert!(e.to_string().contains("M365_MAX_HOPS"), "{e}");
        let e = Settings::from_lookup(lookup(&[("M365_TABLE", "t"), ("M365_MAX_HOPS", "0")]))
            .unwrap_err();
        assert_eq!(
            e,
            SettingsError::TooSmall {
                name: "M365_MAX_HOPS",
                least: 1
            }
        );
        assert!(e.to_string().contains("M365_MAX_HOPS"), "{e}");
    }
}
