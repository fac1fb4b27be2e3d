//! Wiring: the configuration file → the engine's ports, built once per command.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use m365_core::config::{Config, SecretsConfig, SourceConfig, StateConfig};
use m365_core::planner::Rule;
use m365_core::rule_mapping::compile_connection_rule;
use m365_core::secrets::{ConnectionSecrets, SecretStore};
use m365_core::{Source, SystemClock};
use m365_graph::{GraphClient, GraphDirectory, GraphSettings, SharedState};
use m365_sandbox::{RunningSandbox, Sandbox, demo};
use m365_state_sqlite::SqliteStateStore;
pub use m365_wiring::connect::state_key;
use m365_wiring::connect::{
    CHUNK_SIZE, ConnectError, PAGE_SIZE, Tenant, connect_tenant, file_loader, open_source,
};
use m365_wiring::local_secrets::{
    EnvSecretStore, FileSecretStore, StaticSecretStore, env_extra_secrets,
};
use secrecy::SecretString;

use crate::exit::Code;

/// A failure to set up, with the exit code it maps to.
#[derive(Debug)]
pub struct SetupError {
    pub code: Code,
    pub message: String,
}

impl SetupError {
    fn config(message: impl Into<String>) -> Self {
        Self {
            code: Code::Config,
            message: message.into(),
        }
    }

    fn connection(message: impl Into<String>) -> Self {
        Self {
            code: Code::Connection,
            message: message.into(),
        }
    }
}

/// Everything a command needs, built from one configuration file.
pub struct App {
    /// State key of the connection's rule: `<connection>/<rule>`.
    pub connection: String,
    pub config: Config,
    pub source: Box<dyn Source>,
    pub state: SqliteStateStore,
    pub directory: GraphDirectory,
    pub rule: Rule,
    pub clock: SystemClock,
    /// The embedded sandbox tenant, when the connection uses one; stopped on drop.
    pub _sandbox: Option<RunningSandbox>,
}

/// The configuration file and what it is relative to.
pub fn load_config(path: &Path) -> Result<Config, SetupError> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        SetupError::config(format!(
            "cannot read the configuration file {}: {e}; pass another with --config",
            path.display()
        ))
    })?;
    Config::from_toml(&text, &path.display().to_string())
        .map_err(|e| SetupError::config(e.to_string()))
}

/// `location` resolved against the configuration's folder, unless it is a URL or absolute.
pub fn relative_to(base: &Path, location: &str) -> String {
    if location.contains("://") || Path::new(location).is_absolute() {
        location.to_owned()
    } else {
        base.join(location).display().to_string()
    }
}

/// The folder relative paths of the configuration file are resolved against.
pub fn config_base(config_path: &Path) -> PathBuf {
    config_path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .to_path_buf()
}

/// Where the connection's SQLite state lives, as `[state]` configures it (absent: beside the
/// configuration, `.state/<connection>.sqlite`).
pub fn state_path(config: &Config, base: &Path) -> Result<PathBuf, SetupError> {
    match &config.state {
        None | Some(StateConfig::Sqlite { path: None }) => Ok(base
            .join(".state")
            .join(format!("{}.sqlite", config.connection.name))),
        Some(StateConfig::Sqlite { path: Some(p) }) => Ok(PathBuf::from(relative_to(base, p))),
        Some(StateConfig::Dynamodb {}) => Err(SetupError::config(
            "[state] type = \"dynamodb\" is the cloud deployment's table: on the command line \
             use type = \"sqlite\" (or `m365-provisioner cloud` for a deployment)"
                .to_owned(),
        )),
    }
}

/// The connection's state store, as `[state]` configures it.
pub fn open_state(config: &Config, base: &Path) -> Result<SqliteStateStore, SetupError> {
    let path = state_path(config, base)?;
    SqliteStateStore::open(&path)
        .map_err(|e| SetupError::config(format!("[state] cannot open {}: {e}", path.display())))
}

impl App {
    /// Builds every port. Reaches the tenant once (its domains, for UPN validation).
    pub async fn build(config_path: &Path) -> Result<App, SetupError> {
        let config = load_config(config_path)?;
        let base = config_base(config_path);

        let state = open_state(&config, &base)?;

        // Secrets and the tenant.
        let mut sandbox = None;
        let mut graph = GraphSettings::from_connection(&config.connection);
        let secret_store: Arc<dyn SecretStore> = if config.connection.sandbox {
            let mut embedded = Sandbox::demo();
            if let Some(file) = &config.connection.sandbox_state {
                let file = relative_to(&base, file);
                embedded = embedded.with_state_file(&file).map_err(|e| {
                    SetupError::config(format!("connection.sandbox_state: cannot use {file}: {e}"))
                })?;
            }
            let running = embedded.start().await.map_err(|e| {
                SetupError::connection(format!("cannot start the embedded sandbox tenant: {e}"))
            })?;
            graph.login_url = Some(running.base_url().to_owned());
            graph.graph_url = Some(running.base_url().to_owned());
            sandbox = Some(running);
            Arc::new(StaticSecretStore(ConnectionSecrets {
                additional_apps: Vec::new(),
                tenant: demo::INITIAL_DOMAIN.to_owned(),
                client_id: demo::CLIENT_ID.to_owned(),
                credential: m365_core::AppCredential::Secret(SecretString::from(
                    demo::CLIENT_SECRET,
                )),
                // The source's own secrets (an LDAP bind password) from the environment.
                extra: env_extra_secrets(),
            }))
        } else {
            match &config.secrets {
                None | Some(SecretsConfig::Env {}) => Arc::new(EnvSecretStore),
                Some(SecretsConfig::File { path }) => Arc::new(FileSecretStore {
                    path: PathBuf::from(relative_to(&base, path)),
                }),
                Some(SecretsConfig::AwsSecretsManager { .. }) => {
                    return Err(SetupError::config(
                        "[secrets] type = \"aws-secrets-manager\" is read by the cloud functions: \
                         on the command line use type = \"env\" or \"file\""
                            .to_owned(),
                    ));
                }
            }
        };
        let tenant = connect_tenant(
            &config.connection.name,
            secret_store.as_ref(),
            |credentials| {
                GraphClient::with_apps(graph.clone(), credentials, SharedState::default())
            },
        )
        .await
        .map_err(|e| match e {
            ConnectError::Secrets(_) | ConnectError::Client { .. } => {
                SetupError::config(e.to_string())
            }
            ConnectError::Refused { .. } | ConnectError::Unreachable { .. } => {
                SetupError::connection(e.to_string())
            }
        })?;
        let Tenant {
            secrets,
            directory,
            domains,
        } = tenant;
        let source = Self::source(&config, &base, &secrets).await?;

        // The rule.
        let rule = compile_connection_rule(&config, &domains, &secrets)
            .map_err(|e| SetupError::config(format!("[rule]: {e}")))?;
        Ok(App {
            connection: state_key(&config),
            config,
            source,
            state,
            directory,
            rule,
            clock: SystemClock,
            _sandbox: sandbox,
        })
    }

    /// `[source]`, paths relative to the configuration. AWS configuration is loaded only for an
    /// s3:// location: local runs never touch it. Endpoint, region and credentials come from the
    /// SDK's default chain (AWS_ENDPOINT_URL, AWS_REGION, AWS_PROFILE, ...).
    async fn source(
        config: &Config,
        base: &Path,
        secrets: &ConnectionSecrets,
    ) -> Result<Box<dyn Source>, SetupError> {
        let (source, s3) = match &config.source {
            SourceConfig::File(settings) => {
                let mut settings = settings.clone();
                settings.location = relative_to(base, &settings.location);
                let s3 = if m365_aws::is_s3_location(&settings.location) {
                    Some(m365_aws::s3_client(&m365_aws::sdk_config(None).await))
                } else {
                    None
                };
                (SourceConfig::File(settings), s3)
            }
            SourceConfig::Ldap(settings) => {
                let mut settings = settings.clone();
                settings.ca_file = settings.ca_file.map(|file| relative_to(base, &file));
                (SourceConfig::Ldap(settings), None)
            }
            SourceConfig::Pingone(settings) => (SourceConfig::Pingone(settings.clone()), None),
        };
        open_source(&source, file_loader(s3), secrets, &config.rule)
            .map_err(|e| SetupError::config(e.to_string()))
    }

    pub fn engine(&self) -> m365_core::engine::Engine<'_> {
        m365_core::engine::Engine {
            connection: &self.connection,
            rule: &self.rule,
            source: self.source.as_ref(),
            directory: &self.directory,
            state: &self.state,
            clock: &self.clock,
            page_size: PAGE_SIZE,
            chunk_size: CHUNK_SIZE,
        }
    }
}
