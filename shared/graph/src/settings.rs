//! Connection settings: national clouds, endpoint overrides, credentials, retry and pacing policy.

use std::fmt;
use std::time::Duration;

use m365_core::secrets::{AppCredential, CredentialKind};
use secrecy::{ExposeSecret, SecretString};

use crate::assertion::{CertificateCredential, CertificateError};
use crate::error::GraphError;
pub use m365_core::config::{Cloud, TenantSize};

/// Where a client runs, which decides the endpoint overrides it accepts
/// ([`GraphSettings::check_endpoint_overrides`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum EndpointPolicy {
    /// Command line, tests and the sandbox: `login_url` / `graph_url` may name a Microsoft
    /// national-cloud host over https, or a loopback address (`127.0.0.0/8`, `::1`,
    /// `localhost`) over http or https.
    #[default]
    Local,
    /// A cloud deployment (the Lambda functions): no override at all; the hosts always come
    /// from `cloud`.
    Cloud,
}

/// Every national cloud, for host checks.
const CLOUDS: [Cloud; 4] = [
    Cloud::Global,
    Cloud::UsGovHigh,
    Cloud::UsGovDod,
    Cloud::China,
];

/// Which override a host check is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Endpoint {
    Login,
    Graph,
}

impl Endpoint {
    fn field(self) -> &'static str {
        match self {
            Endpoint::Login => "login_url",
            Endpoint::Graph => "graph_url",
        }
    }

    fn cloud_url(self, cloud: Cloud) -> &'static str {
        match self {
            Endpoint::Login => cloud.login_url(),
            Endpoint::Graph => cloud.graph_url(),
        }
    }

    /// The Microsoft hosts this override may name (`login.microsoftonline.com`, ...).
    fn microsoft_hosts(self) -> Vec<&'static str> {
        let mut hosts: Vec<&'static str> = CLOUDS
            .iter()
            .map(|c| {
                let url = self.cloud_url(*c);
                url.strip_prefix("https://").unwrap_or(url)
            })
            .collect();
        hosts.dedup();
        hosts
    }
}

/// `127.0.0.0/8`, `::1` or `localhost`.
/// Whether `url` parses and names a loopback host (`127.0.0.0/8`, `::1`, `localhost`).
pub fn is_loopback_url(url: &str) -> bool {
    url::Url::parse(url)
        .ok()
        .is_some_and(|u| u.host().is_some_and(|h| is_loopback(&h)))
}

fn is_loopback(host: &url::Host<&str>) -> bool {
    match host {
        url::Host::Ipv4(ip) => ip.is_loopback(),
        url::Host::Ipv6(ip) => ip.is_loopback(),
        url::Host::Domain(d) => d.eq_ignore_ascii_case("localhost"),
    }
}

/// How an app proves its identity to the token endpoint: a closed set.
#[derive(Clone)]
pub enum ClientCredential {
    /// A client secret's *Value* (not its ID), sent as `client_secret`.
    Secret(SecretString),
    /// A certificate: each token request carries a client assertion signed with its key
    /// ([`crate::assertion`]).
    Certificate(CertificateCredential),
}

impl ClientCredential {
    /// Which kind it is (for reports: `test-connection` names it).
    pub fn kind(&self) -> CredentialKind {
        match self {
            ClientCredential::Secret(_) => CredentialKind::Secret,
            ClientCredential::Certificate(_) => CredentialKind::Certificate,
        }
    }

    /// The credential a secret store holds, the certificate parsed and checked.
    pub fn from_stored(stored: &AppCredential) -> Result<Self, CertificateError> {
        Ok(match stored {
            AppCredential::Secret(secret) => ClientCredential::Secret(secret.clone()),
            AppCredential::Certificate(certificate) => {
                ClientCredential::Certificate(CertificateCredential::from_secret(certificate)?)
            }
        })
    }

    /// Whether `other` is the same credential (same secret, or same certificate and algorithm).
    pub(crate) fn same_as(&self, other: &ClientCredential) -> bool {
        match (self, other) {
            (ClientCredential::Secret(a), ClientCredential::Secret(b)) => {
                a.expose_secret() == b.expose_secret()
            }
            (ClientCredential::Certificate(a), ClientCredential::Certificate(b)) => a.same_as(b),
            _ => false,
        }
    }
}

impl fmt::Debug for ClientCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientCredential::Secret(_) => f.write_str("Secret([REDACTED])"),
            ClientCredential::Certificate(c) => f.debug_tuple("Certificate").field(c).finish(),
        }
    }
}

/// App registration credentials (client-credentials flow). The secret or private key never
/// appears in `Debug`, logs or errors.
#[derive(Clone)]
pub struct Credentials {
    /// Tenant GUID or a domain such as `contoso.onmicrosoft.com`.
    pub tenant: String,
    /// Application (client) ID.
    pub client_id: String,
    /// The client secret or certificate.
    pub credential: ClientCredential,
}

impl Credentials {
    /// Credentials with a client secret.
    pub fn with_secret(
        tenant: impl Into<String>,
        client_id: impl Into<String>,
        secret: SecretString,
    ) -> Self {
        Credentials {
            tenant: tenant.into(),
            client_id: client_id.into(),
            credential: ClientCredential::Secret(secret),
        }
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("tenant", &self.tenant)
            .field("client_id", &self.client_id)
            .field("credential", &self.credential)
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
    /// Replication-lag default (docs/graph-behaviour.md#replication-lag): 12 attempts from
    /// 250 ms, ×1.5 up to 4 s, jitter (24–48 s in total). A new object usually shows within a
    /// few seconds, so the first looks come soon after one another rather than a second apart.
    pub fn replication_default() -> Self {
        RetryPolicy {
            max_attempts: 12,
            base_delay: Duration::from_millis(250),
            max_delay: Duration::from_secs(4),
            factor: 1.5,
            jitter: true,
        }
    }

    /// Transient-failure default (5xx, timeouts, connection errors): 6 attempts from 250 ms,
    /// ×2.5, jitter (16–32 s in all). A sporadic 5xx is tried again soon; an outage is ridden
    /// out about as long as a few 1 s-based doublings would. A `Retry-After` Graph sends takes
    /// the place of the computed delay.
    pub fn transient_default() -> Self {
        RetryPolicy {
            max_attempts: 6,
            base_delay: Duration::from_millis(250),
            max_delay: Duration::from_secs(30),
            factor: 2.5,
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

/// Client-side pacing sized from Graph's identity quotas (docs/graph-behaviour.md#identity-quotas).
/// Every number is configurable because benchmarks run the sandbox with scaled quotas.
#[derive(Debug, Clone, PartialEq)]
pub struct PacingConfig {
    /// Writes allowed per `write_window` per app + tenant (Graph: 3,000 per 150 s).
    pub write_quota: u32,
    pub write_window: Duration,
    /// Resource units per `ru_window` per app + tenant (Graph: S 3,500, M 5,000, L 8,000 per 10 s).
    pub resource_unit_quota: u32,
    pub ru_window: Duration,
    /// Writes allowed per `tenant_write_window` per tenant, across all its apps (Graph: 18,000
    /// per 5 min). It binds only when a connection writes through several app registrations.
    pub tenant_write_quota: u32,
    pub tenant_write_window: Duration,
    /// Fraction of the quota the client aims at (leaves room for other callers and clock skew).
    pub safety_factor: f64,
    /// `false` turns client-side pacing off (429s are still honoured).
    pub enabled: bool,
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
            tenant_write_quota: 18_000,
            tenant_write_window: Duration::from_secs(300),
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
    /// Requests in flight at once per client (and its clones): at most this many when
    /// `adaptive_concurrency`, else exactly this many.
    pub concurrency: usize,
    /// Start at a few requests in flight and adapt to Graph's answer times, up to
    /// `concurrency` (see `shared/graph/src/limiter.rs`).
    pub adaptive_concurrency: bool,
    /// Send `x-ms-throttle-priority: Low` (background sync); `false` sends nothing.
    pub background_priority: bool,
    pub pacing: PacingConfig,
    /// Retries of reference operations while a new object replicates (404 / "do not exist").
    pub replication_retry: RetryPolicy,
    /// Backoff for transient failures (5xx, timeouts, connection errors); its `max_attempts`
    /// bounds the transient failures of one request, `GraphSettings::max_attempts` all of them.
    pub transient_retry: RetryPolicy,
    /// Which `login_url` / `graph_url` overrides are accepted: the cloud functions set
    /// [`EndpointPolicy::Cloud`] (none at all).
    pub endpoint_policy: EndpointPolicy,
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
            concurrency: 64,
            adaptive_concurrency: true,
            background_priority: true,
            pacing: PacingConfig::default(),
            replication_retry: RetryPolicy::replication_default(),
            transient_retry: RetryPolicy::transient_default(),
            endpoint_policy: EndpointPolicy::Local,
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
            cloud: connection.cloud,
            login_url: connection.login_url.clone(),
            graph_url: connection.graph_url.clone(),
            concurrency: connection.concurrency,
            adaptive_concurrency: connection.adaptive_concurrency,
            ..GraphSettings::default()
        };
        if let Some(size) = connection.tenant_size {
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

    /// Checks `login_url` and `graph_url` against `policy`: under [`EndpointPolicy::Local`] an
    /// override must be an https URL on a Microsoft national-cloud host of its kind (login or
    /// Graph), or an http(s) URL on a loopback address; under [`EndpointPolicy::Cloud`] no
    /// override is accepted. The bearer token goes to the Graph host and the client secret (or
    /// client assertion) to
    /// the login host, so neither may be any other host.
    pub fn check_endpoint_overrides(&self, policy: EndpointPolicy) -> Result<(), GraphError> {
        for (endpoint, value) in [
            (Endpoint::Login, &self.login_url),
            (Endpoint::Graph, &self.graph_url),
        ] {
            if let Some(value) = value {
                check_override(endpoint, value, policy, self.cloud)?;
            }
        }
        Ok(())
    }

    /// Resolves the endpoints, validating overrides.
    pub fn endpoints(&self) -> Result<Endpoints, GraphError> {
        self.check_endpoint_overrides(self.endpoint_policy)?;
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
                || p.tenant_write_quota == 0
                || p.tenant_write_window.is_zero()
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

/// One override against the host rules of [`GraphSettings::check_endpoint_overrides`].
fn check_override(
    endpoint: Endpoint,
    value: &str,
    policy: EndpointPolicy,
    cloud: Cloud,
) -> Result<(), GraphError> {
    let field = endpoint.field();
    let default = endpoint.cloud_url(cloud);
    // Only the host is ever quoted: a URL may carry credentials in its user-info part.
    let parsed = url::Url::parse(value.trim()).map_err(|e| {
        GraphError::Config(format!(
            "{field} is not a valid URL ({e}); remove it to use {default}, or use \
             http://127.0.0.1:PORT for a local sandbox"
        ))
    })?;
    let Some(host) = parsed.host() else {
        return Err(GraphError::Config(format!(
            "{field} has no host; remove it to use {default}"
        )));
    };
    if policy == EndpointPolicy::Cloud {
        return Err(GraphError::Config(format!(
            "{field} is set (host {host}), but a cloud deployment takes its hosts from the \
             cloud setting only; remove {field} from [connection] (the configured cloud \
             uses {default})"
        )));
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(GraphError::Config(format!(
            "{field} (host {host}) carries a user name or password; remove them from the URL"
        )));
    }
    if is_loopback(&host) && matches!(parsed.scheme(), "http" | "https") {
        return Ok(());
    }
    let microsoft = endpoint.microsoft_hosts();
    let is_microsoft = matches!(&host, url::Host::Domain(d) if microsoft.contains(d));
    if is_microsoft && parsed.scheme() == "https" && parsed.port().is_none() {
        return Ok(());
    }
    let reason = if is_loopback(&host) {
        "is a loopback address but the URL is not http or https"
    } else if is_microsoft {
        "must be https on the default port"
    } else {
        "is neither a Microsoft national-cloud host nor a loopback address"
    };
    Err(GraphError::Config(format!(
        "{field} points at host {host}, which {reason}: the client would send it {what}; \
         remove {field} and choose the cloud setting (allowed hosts: {allowed}), or use \
         http://127.0.0.1:PORT for a local sandbox",
        what = match endpoint {
            Endpoint::Login => "the client secret or client assertion",
            Endpoint::Graph => "bearer tokens",
        },
        allowed = microsoft.join(", "),
    )))
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

    fn with_override(endpoint: Endpoint, value: &str) -> GraphSettings {
        let mut s = GraphSettings::default();
        match endpoint {
            Endpoint::Login => s.login_url = Some(value.into()),
            Endpoint::Graph => s.graph_url = Some(value.into()),
        }
        s
    }

    #[test]
    fn overrides_may_name_microsoft_hosts_or_loopback_only() {
        let accepted = [
            (Endpoint::Graph, "https://graph.microsoft.com/v1.0"),
            (Endpoint::Graph, "https://graph.microsoft.us"),
            (Endpoint::Graph, "https://dod-graph.microsoft.us/"),
            (Endpoint::Graph, "https://microsoftgraph.chinacloudapi.cn"),
            (Endpoint::Login, "https://login.microsoftonline.com"),
            (Endpoint::Login, "https://login.microsoftonline.us"),
            (Endpoint::Login, "https://login.chinacloudapi.cn"),
            (Endpoint::Graph, "http://127.0.0.1:8750"),
            (Endpoint::Login, "http://127.42.0.9:1"),
            (Endpoint::Graph, "http://[::1]:8750"),
            (Endpoint::Login, "http://localhost:8750"),
            (Endpoint::Graph, "https://LOCALHOST"),
        ];
        for (endpoint, value) in accepted {
            let s = with_override(endpoint, value);
            assert!(s.validate().is_ok(), "{value}: {:?}", s.validate());
        }
        let refused = [
            (Endpoint::Graph, "https://evil.example", "evil.example"),
            (
                Endpoint::Graph,
                "https://graph.microsoft.com.evil.example",
                "graph.microsoft.com.evil.example",
            ),
            (
                Endpoint::Graph,
                "http://graph.microsoft.com",
                "graph.microsoft.com",
            ),
            (
                Endpoint::Graph,
                "https://graph.microsoft.com:8443",
                "graph.microsoft.com",
            ),
            (
                Endpoint::Login,
                "https://graph.microsoft.com",
                "graph.microsoft.com",
            ),
            (
                Endpoint::Graph,
                "https://login.microsoftonline.com",
                "login.microsoftonline.com",
            ),
            (Endpoint::Login, "http://10.0.0.1:8750", "10.0.0.1"),
            (Endpoint::Graph, "http://169.254.169.254", "169.254.169.254"),
            (
                Endpoint::Graph,
                "http://localhost.evil.example",
                "localhost.evil.example",
            ),
            (Endpoint::Graph, "ftp://127.0.0.1", "127.0.0.1"),
        ];
        for (endpoint, value, host) in refused {
            let s = with_override(endpoint, value);
            let Err(GraphError::Config(message)) = s.validate() else {
                panic!("{value} was accepted");
            };
            assert!(message.contains(endpoint.field()), "{message}");
            assert!(message.contains(&format!("host {host}")), "{message}");
            assert!(message.contains("http://127.0.0.1:PORT"), "{message}");
            // Refused at client construction too.
            let c = Credentials::with_secret("t", "c", SecretString::from("s"));
            assert!(matches!(
                crate::GraphClient::new(s, c),
                Err(GraphError::Config(_))
            ));
        }
    }

    #[test]
    fn override_credentials_are_refused_without_echoing_them() {
        let s = with_override(Endpoint::Graph, "https://user:hunter2@graph.microsoft.com");
        let Err(GraphError::Config(message)) = s.validate() else {
            panic!("accepted");
        };
        assert!(message.contains("graph_url"), "{message}");
        assert!(message.contains("user name or password"), "{message}");
        assert!(!message.contains("hunter2"), "{message}");
    }

    #[test]
    fn a_cloud_deployment_refuses_every_override() {
        for (endpoint, microsoft) in [
            (Endpoint::Login, "https://login.microsoftonline.us"),
            (Endpoint::Graph, "https://graph.microsoft.us"),
        ] {
            for value in ["http://127.0.0.1:8750", microsoft] {
                let s = GraphSettings {
                    endpoint_policy: EndpointPolicy::Cloud,
                    ..with_override(endpoint, value)
                };
                let Err(GraphError::Config(message)) = s.validate() else {
                    panic!("{value} was accepted");
                };
                assert!(message.contains(endpoint.field()), "{message}");
                assert!(message.contains("cloud deployment"), "{message}");
                assert!(
                    message.contains(&format!("remove {}", endpoint.field())),
                    "{message}"
                );
                // The same settings are fine on the command line...
                let local = with_override(endpoint, value);
                assert!(
                    local
                        .check_endpoint_overrides(EndpointPolicy::Local)
                        .is_ok()
                );
                // ...and the check can be asked for explicitly.
                assert!(
                    local
                        .check_endpoint_overrides(EndpointPolicy::Cloud)
                        .is_err()
                );
            }
        }
        let plain = GraphSettings {
            endpoint_policy: EndpointPolicy::Cloud,
            cloud: Cloud::China,
            ..GraphSettings::default()
        };
        assert!(plain.validate().is_ok());
    }

    #[test]
    fn cloud_names_parse() {
        assert_eq!("GCC-High".parse::<Cloud>(), Ok(Cloud::UsGovHigh));
        assert_eq!("dod".parse::<Cloud>(), Ok(Cloud::UsGovDod));
        assert_eq!("China".parse::<Cloud>(), Ok(Cloud::China));
        assert_eq!("global".parse::<Cloud>(), Ok(Cloud::Global));
        assert!("mars".parse::<Cloud>().unwrap_err().contains("use global"));
    }

    #[test]
    fn credentials_debug_hides_the_secret() {
        let c = Credentials::with_secret("t", "c", SecretString::from("s3cr3t-value"));
        assert!(!format!("{c:?}").contains("s3cr3t"));
        let key = include_str!("../../../tests/fixtures/certs/app.key.pem");
        let stored = AppCredential::Certificate(m365_core::secrets::CertificateSecret {
            certificate_pem: include_str!("../../../tests/fixtures/certs/app.crt.pem").into(),
            private_key_pem: SecretString::from(key),
            algorithm: Default::default(),
        });
        let c = Credentials {
            tenant: "t".into(),
            client_id: "c".into(),
            credential: ClientCredential::from_stored(&stored).unwrap(),
        };
        assert_eq!(c.credential.kind(), CredentialKind::Certificate);
        let shown = format!("{c:?} {c:#?} {stored:?}");
        for line in key.lines().filter(|l| !l.starts_with("-----")) {
            assert!(!shown.contains(line), "{shown}");
        }
    }
}
