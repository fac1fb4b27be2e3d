//! Connection settings: national clouds, endpoint overrides, credentials, retry and pacing policy.

use std::fmt;
use std::time::Duration;

use secrecy::SecretString;

use crate::error::GraphError;

/// The Microsoft cloud a tenant lives in. Login host, Graph host and token scope are always
/// chosen together from this value (graph-facts §1 "National clouds"): a token of one cloud is
/// useless against another cloud's Graph.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Cloud {
    /// Worldwide service, also used by GCC (moderate) tenants.
    #[default]
    Global,
    /// US Government L4 (GCC High).
    UsGovHigh,
    /// US Government L5 (DoD).
    UsGovDod,
    /// China, operated by 21Vianet.
    China,
}

impl Cloud {
    /// Token (login) host of this cloud.
    pub fn login_url(self) -> &'static str {
        match self {
            Cloud::Global => "https://login.microsoftonline.com",
            Cloud::UsGovHigh | Cloud::UsGovDod => "https://login.microsoftonline.us",
            Cloud::China => "https://login.chinacloudapi.cn",
        }
    }

    /// Graph host of this cloud, without the version segment.
    pub fn graph_url(self) -> &'static str {
        match self {
            Cloud::Global => "https://graph.microsoft.com",
            Cloud::UsGovHigh => "https://graph.microsoft.us",
            Cloud::UsGovDod => "https://dod-graph.microsoft.us",
            Cloud::China => "https://microsoftgraph.chinacloudapi.cn",
        }
    }

    /// The `.default` scope to request for this cloud's Graph.
    pub fn scope(self) -> &'static str {
        match self {
            Cloud::Global => "https://graph.microsoft.com/.default",
            Cloud::UsGovHigh => "https://graph.microsoft.us/.default",
            Cloud::UsGovDod => "https://dod-graph.microsoft.us/.default",
            Cloud::China => "https://microsoftgraph.chinacloudapi.cn/.default",
        }
    }

    /// Parses the names operators write in configuration.
    pub fn parse(name: &str) -> Option<Cloud> {
        match name
            .trim()
            .to_ascii_lowercase()
            .replace(['-', '_', ' '], "")
            .as_str()
        {
            "global" | "worldwide" | "public" | "gcc" | "azurepublic" => Some(Cloud::Global),
            "usgovhigh" | "gcchigh" | "usgov" | "usgovl4" | "l4" => Some(Cloud::UsGovHigh),
            "usgovdod" | "dod" | "usgovl5" | "l5" => Some(Cloud::UsGovDod),
            "china" | "21vianet" | "mooncake" => Some(Cloud::China),
            _ => None,
        }
    }
}

/// App registration credentials (client-credentials flow). The secret never appears in
/// `Debug`, logs or errors.
#[derive(Clone)]
pub struct Credentials {
    /// Tenant GUID or a domain such as `contoso.onmicrosoft.com`.
    pub tenant: String,
    /// Application (client) ID.
    pub client_id: String,
    /// The client secret's *Value* (not its ID).
    pub client_secret: SecretString,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("tenant", &self.tenant)
            .field("client_id", &self.client_id)
            .field("client_secret", &"[REDACTED]")
            .finish()
    }
}

/// Backoff policy: `max_attempts` tries in all, delays `base_delay * factor^n` capped at
/// `max_delay`, optionally with full jitter.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    /// Total attempts including the first one (1 = no retry).
    pub max_attempts: u32,
    pub base_delay: Duration,
    pub max_delay: Duration,
    pub factor: f32,
    pub jitter: bool,
}

impl RetryPolicy {
    /// Replication-lag default (graph-facts §9): 6 attempts, 1 s, ×2, jitter (~30 s in total).
    pub fn replication_default() -> Self {
        RetryPolicy {
            max_attempts: 6,
            base_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(16),
            factor: 2.0,
            jitter: true,
        }
    }

    /// Transient-failure default (5xx, timeouts, connection errors): 5 attempts, 1 s, ×2, jitter.
    pub fn transient_default() -> Self {
        RetryPolicy {
            max_attempts: 5,
            base_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(30),
            factor: 2.0,
            jitter: true,
        }
    }

    /// A fast policy for tests: `attempts` tries, `delay` base, ×2, no jitter.
    pub fn fast(attempts: u32, delay: Duration) -> Self {
        RetryPolicy {
            max_attempts: attempts,
            base_delay: delay,
            max_delay: delay.saturating_mul(16),
            factor: 2.0,
            jitter: false,
        }
    }

    pub(crate) fn backoff(&self) -> backon::ExponentialBackoff {
        use backon::BackoffBuilder;
        let mut b = backon::ExponentialBuilder::default()
            .with_min_delay(self.base_delay)
            .with_max_delay(self.max_delay.max(self.base_delay))
            .with_factor(self.factor.max(1.0))
            .with_max_times(self.max_attempts.saturating_sub(1) as usize);
        if self.jitter {
            b = b.with_jitter();
        }
        b.build()
    }
}

/// Client-side pacing sized from Graph's identity quotas (graph-facts §8.2). Every number is
/// configurable because benchmarks run the sandbox with scaled quotas.
#[derive(Debug, Clone, PartialEq)]
pub struct PacingConfig {
    /// Writes allowed per `write_window` per app + tenant (Graph: 3,000 per 150 s).
    pub write_quota: u32,
    pub write_window: Duration,
    /// Resource units per `ru_window` per app + tenant (Graph: S 3,500, M 5,000, L 8,000 per 10 s).
    pub resource_unit_quota: u32,
    pub ru_window: Duration,
    /// Fraction of the quota the client aims at (leaves room for other callers and clock skew).
    pub safety_factor: f64,
    /// `false` turns client-side pacing off (429s are still honoured).
    pub enabled: bool,
}

/// Tenant size classes of the resource-unit quota (S < 50 users, M 50–500, L > 500).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TenantSize {
    Small,
    Medium,
    Large,
}

impl TenantSize {
    /// Resource units per 10 s for this tenant size.
    pub fn resource_unit_quota(self) -> u32 {
        match self {
            TenantSize::Small => 3_500,
            TenantSize::Medium => 5_000,
            TenantSize::Large => 8_000,
        }
    }
}

impl PacingConfig {
    /// Graph's published quota for a tenant of the given size.
    pub fn for_tenant_size(size: TenantSize) -> Self {
        PacingConfig {
            resource_unit_quota: size.resource_unit_quota(),
            ..PacingConfig::default()
        }
    }

    /// No client-side pacing.
    pub fn disabled() -> Self {
        PacingConfig {
            enabled: false,
            ..PacingConfig::default()
        }
    }
}

impl Default for PacingConfig {
    /// Sized for a small tenant, the most conservative RU class.
    fn default() -> Self {
        PacingConfig {
            write_quota: 3_000,
            write_window: Duration::from_secs(150),
            resource_unit_quota: TenantSize::Small.resource_unit_quota(),
            ru_window: Duration::from_secs(10),
            safety_factor: 0.97,
            enabled: true,
        }
    }
}

/// Everything the client needs besides the credentials.
#[derive(Debug, Clone)]
pub struct GraphSettings {
    pub cloud: Cloud,
    /// Overrides the cloud's login host (e.g. the sandbox `http://127.0.0.1:PORT`).
    pub login_url: Option<String>,
    /// Overrides the cloud's Graph host; a base WITHOUT version, the client appends `/v1.0`.
    pub graph_url: Option<String>,
    /// Overrides the cloud's `.default` scope.
    pub scope: Option<String>,
    /// Timeout of one HTTP request (connect + response).
    pub request_timeout: Duration,
    /// Hard cap on attempts for one request, throttling included.
    pub max_attempts: u32,
    /// Requests in flight at once per client (and its clones).
    pub concurrency: usize,
    /// Send `x-ms-throttle-priority: Low` (background sync); `false` sends nothing.
    pub background_priority: bool,
    pub pacing: PacingConfig,
    /// Retries of reference operations while a new object replicates (404 / "do not exist").
    pub replication_retry: RetryPolicy,
    /// Backoff for transient failures (5xx, timeouts, connection errors); its `max_attempts`
    /// bounds the transient failures of one request, `GraphSettings::max_attempts` all of them.
    pub transient_retry: RetryPolicy,
}

impl Default for GraphSettings {
    fn default() -> Self {
        GraphSettings {
            cloud: Cloud::Global,
            login_url: None,
            graph_url: None,
            scope: None,
            request_timeout: Duration::from_secs(60),
            max_attempts: 10,
            concurrency: 8,
            background_priority: true,
            pacing: PacingConfig::default(),
            replication_retry: RetryPolicy::replication_default(),
            transient_retry: RetryPolicy::transient_default(),
        }
    }
}

/// Login host, Graph base (with `/v1.0`) and scope after applying overrides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoints {
    pub login_url: String,
    /// Graph host without version, no trailing slash.
    pub graph_host: String,
    /// `{graph_host}/v1.0`.
    pub graph_base: String,
    pub scope: String,
}

impl GraphSettings {
    /// The settings a configuration file's `[connection]` asks for (cloud, host overrides,
    /// concurrency, tenant size), defaults for the rest. The CLI and the functions both use it.
    pub fn from_connection(connection: &m365_core::config::ConnectionConfig) -> Self {
        let mut settings = GraphSettings {
            cloud: Cloud::parse(&connection.cloud).unwrap_or(Cloud::Global),
            login_url: connection.login_url.clone(),
            graph_url: connection.graph_url.clone(),
            concurrency: connection.concurrency,
            ..GraphSettings::default()
        };
        if let Some(size) = &connection.tenant_size {
            let size = match size.as_str() {
                "medium" => TenantSize::Medium,
                "large" => TenantSize::Large,
                _ => TenantSize::Small,
            };
            settings.pacing = PacingConfig::for_tenant_size(size);
        }
        settings
    }

    /// Settings for a local sandbox tenant: login and Graph both at `url`, small test-friendly
    /// retry delays are left to the caller.
    pub fn for_local(url: &str) -> Self {
        GraphSettings {
            login_url: Some(url.to_string()),
            graph_url: Some(url.to_string()),
            ..GraphSettings::default()
        }
    }

    /// Resolves the endpoints, validating overrides.
    pub fn endpoints(&self) -> Result<Endpoints, GraphError> {
        let login = normalise_base(
            "login_url",
            self.login_url.as_deref().unwrap_or(self.cloud.login_url()),
        )?;
        let mut graph = normalise_base(
            "graph_url",
            self.graph_url.as_deref().unwrap_or(self.cloud.graph_url()),
        )?;
        // Accept a base that already ends in /v1.0 rather than producing /v1.0/v1.0.
        if let Some(stripped) = graph.strip_suffix("/v1.0") {
            graph = stripped.to_string();
        }
        let scope = self
            .scope
            .clone()
            .unwrap_or_else(|| self.cloud.scope().to_string());
        if scope.trim().is_empty() {
            return Err(GraphError::Config(
                "scope is empty; leave it unset to use the cloud's .default scope".into(),
            ));
        }
        Ok(Endpoints {
            graph_base: format!("{graph}/v1.0"),
            graph_host: graph,
            login_url: login,
            scope,
        })
    }

    pub(crate) fn validate(&self) -> Result<(), GraphError> {
        if self.max_attempts == 0 {
            return Err(GraphError::Config("max_attempts must be at least 1".into()));
        }
        if self.concurrency == 0 {
            return Err(GraphError::Config("concurrency must be at least 1".into()));
        }
        if self.request_timeout.is_zero() {
            return Err(GraphError::Config(
                "request_timeout must be greater than zero".into(),
            ));
        }
        let p = &self.pacing;
        if p.enabled
            && (p.write_quota == 0
                || p.resource_unit_quota == 0
                || p.write_window.is_zero()
                || p.ru_window.is_zero()
                || !(p.safety_factor > 0.0 && p.safety_factor <= 1.0))
        {
            return Err(GraphError::Config(
                "pacing: quotas and windows must be positive and safety_factor in (0, 1]".into(),
            ));
        }
        self.endpoints().map(|_| ())
    }
}

fn normalise_base(field: &str, raw: &str) -> Result<String, GraphError> {
    let trimmed = raw.trim().trim_end_matches('/');
    let parsed = url::Url::parse(trimmed).map_err(|e| {
        GraphError::Config(format!(
            "{field} `{trimmed}` is not a valid URL ({e}); use e.g. https://graph.microsoft.com"
        ))
    })?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
        return Err(GraphError::Config(format!(
            "{field} `{trimmed}` must be an http(s) URL with a host"
        )));
    }
    if parsed.query().is_some() || parsed.fragment().is_some() {
        return Err(GraphError::Config(format!(
            "{field} `{trimmed}` must not carry a query or fragment"
        )));
    }
    Ok(trimmed.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clouds_select_login_graph_and_scope_together() {
        let cases = [
            (
                Cloud::Global,
                "https://login.microsoftonline.com",
                "https://graph.microsoft.com",
                "https://graph.microsoft.com/.default",
            ),
            (
                Cloud::UsGovHigh,
                "https://login.microsoftonline.us",
                "https://graph.microsoft.us",
                "https://graph.microsoft.us/.default",
            ),
            (
                Cloud::UsGovDod,
                "https://login.microsoftonline.us",
                "https://dod-graph.microsoft.us",
                "https://dod-graph.microsoft.us/.default",
            ),
            (
                Cloud::China,
                "https://login.chinacloudapi.cn",
                "https://microsoftgraph.chinacloudapi.cn",
                "https://microsoftgraph.chinacloudapi.cn/.default",
            ),
        ];
        for (cloud, login, graph, scope) in cases {
            let s = GraphSettings {
                cloud,
                ..GraphSettings::default()
            };
            let e = s.endpoints().unwrap();
            assert_eq!(e.login_url, login);
            assert_eq!(e.graph_host, graph);
            assert_eq!(e.graph_base, format!("{graph}/v1.0"));
            assert_eq!(e.scope, scope);
        }
    }

    #[test]
    fn overrides_keep_the_clouds_scope() {
        let s = GraphSettings {
            cloud: Cloud::UsGovHigh,
            ..GraphSettings::for_local("http://127.0.0.1:8750/")
        };
        let e = s.endpoints().unwrap();
        assert_eq!(e.login_url, "http://127.0.0.1:8750");
        assert_eq!(e.graph_base, "http://127.0.0.1:8750/v1.0");
        assert_eq!(e.scope, "https://graph.microsoft.us/.default");

        let s = GraphSettings {
            graph_url: Some("https://graph.microsoft.com/v1.0".into()),
            scope: Some("api://x/.default".into()),
            ..GraphSettings::default()
        };
        let e = s.endpoints().unwrap();
        assert_eq!(e.graph_base, "https://graph.microsoft.com/v1.0");
        assert_eq!(e.scope, "api://x/.default");
    }

    #[test]
    fn bad_overrides_are_config_errors() {
        for bad in ["not a url", "ftp://x", "https://graph.microsoft.com?x=1"] {
            let s = GraphSettings {
                graph_url: Some(bad.into()),
                ..GraphSettings::default()
            };
            assert!(matches!(s.endpoints(), Err(GraphError::Config(_))), "{bad}");
        }
    }

    #[test]
    fn cloud_names_parse() {
        assert_eq!(Cloud::parse("GCC-High"), Some(Cloud::UsGovHigh));
        assert_eq!(Cloud::parse("dod"), Some(Cloud::UsGovDod));
        assert_eq!(Cloud::parse("China"), Some(Cloud::China));
        assert_eq!(Cloud::parse("global"), Some(Cloud::Global));
        assert_eq!(Cloud::parse("mars"), None);
    }

    #[test]
    fn credentials_debug_hides_the_secret() {
        let c = Credentials {
            tenant: "t".into(),
            client_id: "c".into(),
            client_secret: SecretString::from("s3cr3t-value"),
        };
        assert!(!format!("{c:?}").contains("s3cr3t"));
    }
}
