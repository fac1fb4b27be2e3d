//! `[source] type = "pingone"`: a PingOne environment, read through the PingOne Platform API
//! with a worker application's client credentials. The adapter is `m365-source-pingone`.
//!
//! ```toml
//! [source]
//! type = "pingone"
//! region = "eu"                                  # com | eu | asia | ca | com.au | sg
//! environment_id = "3b7f0b2e-6c5d-4f57-9d0e-2f7b2b8f1c11"
//! client_id = "9a3c6d5e-1b2f-4c8d-8e7f-0a1b2c3d4e5f"
//! # the client secret is the connection secret named here (never in this file)
//! client_secret_secret = "pingone_client_secret"
//! populations = ["b2e0…"]                        # empty: every population
//! ```

use serde::{Deserialize, Serialize};

/// A PingOne region: it decides both hosts, `auth.pingone.{tld}` and `api.pingone.{tld}`
/// (<https://developer.pingidentity.com/pingone-api/foundations/conventions/pingone-api-requests.html>).
/// Written as the top-level domain (`com`, `eu`, `asia`, `ca`, `com.au`, `sg`) or by name
/// (`north-america`, `europe`, `asia-pacific`, `canada`, `australia`, `singapore`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum PingOneRegion {
    #[default]
    NorthAmerica,
    Europe,
    AsiaPacific,
    Canada,
    Australia,
    Singapore,
}

impl PingOneRegion {
    /// The hosts' top-level domain.
    pub fn tld(self) -> &'static str {
        match self {
            PingOneRegion::NorthAmerica => "com",
            PingOneRegion::Europe => "eu",
            PingOneRegion::AsiaPacific => "asia",
            PingOneRegion::Canada => "ca",
            PingOneRegion::Australia => "com.au",
            PingOneRegion::Singapore => "sg",
        }
    }

    /// `https://auth.pingone.{tld}`: the authorization server (its token endpoint is
    /// `{auth}/{envId}/as/token`).
    pub fn auth_url(self) -> String {
        format!("https://auth.pingone.{}", self.tld())
    }

    /// `https://api.pingone.{tld}`: the Platform API, without `/v1`.
    pub fn api_url(self) -> String {
        format!("https://api.pingone.{}", self.tld())
    }
}

impl TryFrom<String> for PingOneRegion {
    type Error = String;

    fn try_from(name: String) -> Result<PingOneRegion, String> {
        let key = name.trim().to_ascii_lowercase().replace(['_', ' '], "-");
        match key.as_str() {
            "com" | "na" | "north-america" | "us" => Ok(PingOneRegion::NorthAmerica),
            "eu" | "europe" => Ok(PingOneRegion::Europe),
            "asia" | "ap" | "apac" | "asia-pacific" => Ok(PingOneRegion::AsiaPacific),
            "ca" | "canada" => Ok(PingOneRegion::Canada),
            "com.au" | "au" | "australia" => Ok(PingOneRegion::Australia),
            "sg" | "singapore" => Ok(PingOneRegion::Singapore),
            _ => Err(format!(
                "source.region: {name:?} is not a PingOne region: use com, eu, asia, ca, com.au \
                 or sg (the domain of your console's address, e.g. console.pingone.eu → eu)"
            )),
        }
    }
}

impl From<PingOneRegion> for String {
    fn from(region: PingOneRegion) -> String {
        region.tld().to_owned()
    }
}

/// How the worker application authenticates at the token endpoint: its
/// `tokenEndpointAuthMethod` in PingOne
/// (<https://developer.pingidentity.com/pingone-api/auth/openid-connect-oauth-2/token-admin-app-client_credentials.html>).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PingOneTokenAuth {
    /// `Authorization: Basic base64(client_id:client_secret)` (PingOne's default).
    #[default]
    ClientSecretBasic,
    /// `client_id` and `client_secret` as form fields.
    ClientSecretPost,
}

/// Settings of the PingOne source. Unknown keys are rejected.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PingOneSourceConfig {
    #[serde(default)]
    pub region: PingOneRegion,
    /// The environment's id (a UUID, shown under Environment > Properties).
    pub environment_id: String,
    /// The worker application's client id.
    pub client_id: String,
    /// The name of the connection secret holding the worker application's client secret: a key
    /// of `[extra]` in a secrets file, `M365_SECRET_<NAME>` in the environment, a key of `extra`
    /// in the Secrets Manager secret.
    #[serde(default = "default_client_secret_secret")]
    pub client_secret_secret: String,
    #[serde(default)]
    pub token_auth: PingOneTokenAuth,
    /// Override of the authorization server (a custom domain: `https://login.example.com`,
    /// whose token endpoint is `{auth_url}/as/token`; or a local stand-in on loopback, whose
    /// token endpoint is `{auth_url}/{environment_id}/as/token`).
    #[serde(default)]
    pub auth_url: Option<String>,
    /// Override of the API host, without `/v1` (a local stand-in on loopback).
    #[serde(default)]
    pub api_url: Option<String>,
    /// Only users of these populations (ids) are in scope; empty: every population.
    #[serde(default)]
    pub populations: Vec<String>,
    /// Only members of these groups (ids; nested and dynamic members count) are in scope;
    /// empty: no membership condition.
    #[serde(default)]
    pub member_of_groups: Vec<String>,
    /// A further PingOne SCIM filter on users, e.g. `title sw "Eng"`
    /// (<https://docs.pingidentity.com/pingone/directory/p1_scim_filter_language.html>).
    #[serde(default)]
    pub user_filter: Option<String>,
    /// Read groups (and their members); off: the source has no groups.
    #[serde(default = "default_true")]
    pub groups: bool,
    /// A PingOne filter on `/groups` (`population.id`, `name`, `externalId`, `id`).
    #[serde(default)]
    pub group_filter: Option<String>,
    /// Members of groups nested in a group count as its members (PingOne's own meaning of
    /// membership); off: direct members only. Dynamic groups' members always count.
    #[serde(default = "default_true")]
    pub nested_groups: bool,
    /// Users per page asked of the API (PingOne caps `/users` pages at 200 or lower; the source
    /// follows the size the API answers).
    #[serde(default = "default_page_size")]
    pub page_size: u32,
    /// Read only what changed since the last run through the Audit Activities API
    /// (`recordedAt`); off: every run reads the whole environment.
    #[serde(default = "default_true")]
    pub activities: bool,
    /// With `activities`, still read the whole environment when the last full pass is this
    /// many hours old (it finds what activities cannot say: a dynamic group's drift, records
    /// PingOne has not stored yet). 0: only when the activities cursor is no longer usable.
    #[serde(default = "default_full_sync_hours")]
    pub full_sync_every_hours: u64,
    /// Limit of each API request, in seconds.
    #[serde(default = "default_timeout")]
    pub timeout_seconds: u64,
    /// The static header PingOne's subscription sends with every webhook POST (its
    /// `httpEndpoint.headers`); its expected value is the connection secret named by
    /// `webhook_header_secret`.
    #[serde(default = "default_webhook_header")]
    pub webhook_header: String,
    #[serde(default = "default_webhook_header_secret")]
    pub webhook_header_secret: String,
}

fn default_true() -> bool {
    true
}

fn default_client_secret_secret() -> String {
    "pingone_client_secret".to_owned()
}

fn default_page_size() -> u32 {
    200
}

fn default_full_sync_hours() -> u64 {
    24
}

fn default_timeout() -> u64 {
    30
}

fn default_webhook_header() -> String {
    "Authorization".to_owned()
}

fn default_webhook_header_secret() -> String {
    "pingone_webhook_header".to_owned()
}

/// A setting of [`PingOneSourceConfig`] that cannot work. Each message names the key and the fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PingOneSourceConfigError {
    #[error(
        "pingone source: {key} {value:?} is not a PingOne id; copy the UUID from the console (e.g. Environment > Properties)"
    )]
    NotAnId { key: &'static str, value: String },
    #[error("pingone source: `{0}` is empty; {1}")]
    Empty(&'static str, &'static str),
    #[error(
        "pingone source: {key} {value:?} must be an https:// URL, or http:// on 127.0.0.1 or localhost for a local stand-in"
    )]
    Url { key: &'static str, value: String },
    #[error("pingone source: `{0}` must be at least 1")]
    Zero(&'static str),
    #[error("pingone source: page_size {0} is over 1000, the most PingOne accepts as `limit`")]
    PageSize(u32),
    #[error(
        "pingone source: webhook_header {0:?} is not an HTTP header name; use letters, digits and '-', e.g. Authorization or X-Webhook-Token"
    )]
    HeaderName(String),
}

impl PingOneSourceConfig {
    /// The token endpoint.
    pub fn token_url(&self) -> String {
        match &self.auth_url {
            Some(url) if is_loopback_http(url) => {
                format!(
                    "{}/{}/as/token",
                    url.trim_end_matches('/'),
                    self.environment_id
                )
            }
            Some(url) => format!("{}/as/token", url.trim_end_matches('/')),
            None => format!(
                "{}/{}/as/token",
                self.region.auth_url(),
                self.environment_id
            ),
        }
    }

    /// `{api}/v1/environments/{envId}`: the base of every API path the source reads.
    pub fn environment_url(&self) -> String {
        let api = self
            .api_url
            .as_deref()
            .map(|u| u.trim_end_matches('/').to_owned())
            .unwrap_or_else(|| self.region.api_url());
        format!("{api}/v1/environments/{}", self.environment_id)
    }

    /// Checks the settings; the PingOne source refuses to start without this passing.
    pub fn validate(&self) -> Result<(), PingOneSourceConfigError> {
        let ids = [("environment_id", std::slice::from_ref(&self.environment_id))];
        for (key, values) in ids.into_iter().chain([
            ("populations", self.populations.as_slice()),
            ("member_of_groups", self.member_of_groups.as_slice()),
        ]) {
            if let Some(bad) = values.iter().find(|v| !is_id(v)) {
                return Err(PingOneSourceConfigError::NotAnId {
                    key,
                    value: bad.clone(),
                });
            }
        }
        if self.client_id.trim().is_empty() {
            return Err(PingOneSourceConfigError::Empty(
                "client_id",
                "copy the worker application's Client ID from its Configuration tab",
            ));
        }
        if self.client_secret_secret.trim().is_empty() {
            return Err(PingOneSourceConfigError::Empty(
                "client_secret_secret",
                "name the connection secret holding the client secret",
            ));
        }
        for (key, url) in [("auth_url", &self.auth_url), ("api_url", &self.api_url)] {
            if let Some(url) = url
                && !(url.starts_with("https://") && url.len() > "https://".len()
                    || is_loopback_http(url))
            {
                return Err(PingOneSourceConfigError::Url {
                    key,
                    value: url.clone(),
                });
            }
        }
        if self.page_size == 0 {
            return Err(PingOneSourceConfigError::Zero("page_size"));
        }
        if self.page_size > 1000 {
            return Err(PingOneSourceConfigError::PageSize(self.page_size));
        }
        if self.timeout_seconds == 0 {
            return Err(PingOneSourceConfigError::Zero("timeout_seconds"));
        }
        let header = self.webhook_header.trim();
        if header.is_empty()
            || !header
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-')
        {
            return Err(PingOneSourceConfigError::HeaderName(
                self.webhook_header.clone(),
            ));
        }
        Ok(())
    }
}

/// PingOne ids are UUIDs: 36 characters of hex digits and dashes.
fn is_id(text: &str) -> bool {
    text.len() == 36
        && text.chars().enumerate().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => c == '-',
            _ => c.is_ascii_hexdigit(),
        })
}

/// `http://127.0.0.1[:port]`, `http://localhost[:port]` or `http://[::1][:port]`.
pub fn is_loopback_http(url: &str) -> bool {
    let Some(rest) = url.strip_prefix("http://") else {
        return false;
    };
    let host = rest.split('/').next().unwrap_or_default();
    let host = match host.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or_default(),
        None => host.split(':').next().unwrap_or_default(),
    };
    matches!(host, "127.0.0.1" | "localhost" | "::1")
}

#[cfg(test)]
mod tests {
    use super::*;

    const ENV: &str = "3b7f0b2e-6c5d-4f57-9d0e-2f7b2b8f1c11";

    fn config() -> PingOneSourceConfig {
        toml::from_str(&format!(
            r#"
            environment_id = "{ENV}"
            client_id = "worker"
            "#
        ))
        .unwrap()
    }

    #[test]
    fn defaults_and_region_hosts() {
        let c = config();
        c.validate().unwrap();
        assert_eq!(c.region, PingOneRegion::NorthAmerica);
        assert_eq!(
            c.token_url(),
            format!("https://auth.pingone.com/{ENV}/as/token")
        );
        assert_eq!(
            c.environment_url(),
            format!("https://api.pingone.com/v1/environments/{ENV}")
        );
        assert_eq!(c.client_secret_secret, "pingone_client_secret");
        assert_eq!(c.page_size, 200);
        assert!(c.groups && c.nested_groups && c.activities);
        let au = PingOneSourceConfig {
            region: PingOneRegion::try_from("australia".to_owned()).unwrap(),
            ..config()
        };
        assert_eq!(
            au.token_url(),
            format!("https://auth.pingone.com.au/{ENV}/as/token")
        );
        let custom = PingOneSourceConfig {
            auth_url: Some("https://login.example.com/".into()),
            ..config()
        };
        assert_eq!(custom.token_url(), "https://login.example.com/as/token");
        let local = PingOneSourceConfig {
            auth_url: Some("http://127.0.0.1:4000".into()),
            api_url: Some("http://127.0.0.1:4000/".into()),
            ..config()
        };
        local.validate().unwrap();
        assert_eq!(
            local.token_url(),
            format!("http://127.0.0.1:4000/{ENV}/as/token")
        );
        assert_eq!(
            local.environment_url(),
            format!("http://127.0.0.1:4000/v1/environments/{ENV}")
        );
    }

    #[test]
    fn every_region_is_written_by_its_domain() {
        for tld in ["com", "eu", "asia", "ca", "com.au", "sg"] {
            let region = PingOneRegion::try_from(tld.to_owned()).unwrap();
            assert_eq!(region.tld(), tld);
        }
        let error = PingOneRegion::try_from("mars".to_owned()).unwrap_err();
        assert!(
            error.contains("source.region") && error.contains("com.au"),
            "{error}"
        );
    }

    #[test]
    fn bad_settings_name_the_key() {
        let cases: Vec<(PingOneSourceConfig, &str)> = vec![
            (
                PingOneSourceConfig {
                    environment_id: "prod".into(),
                    ..config()
                },
                "environment_id",
            ),
            (
                PingOneSourceConfig {
                    populations: vec!["Sales".into()],
                    ..config()
                },
                "populations",
            ),
            (
                PingOneSourceConfig {
                    client_id: " ".into(),
                    ..config()
                },
                "client_id",
            ),
            (
                PingOneSourceConfig {
                    api_url: Some("http://api.example.com".into()),
                    ..config()
                },
                "api_url",
            ),
            (
                PingOneSourceConfig {
                    page_size: 5000,
                    ..config()
                },
                "page_size",
            ),
            (
                PingOneSourceConfig {
                    webhook_header: "X Token".into(),
                    ..config()
                },
                "webhook_header",
            ),
        ];
        for (c, key) in cases {
            let error = c.validate().unwrap_err().to_string();
            assert!(error.contains(key), "{key}: {error}");
        }
    }

    #[test]
    fn loopback_is_recognised_and_nothing_else() {
        assert!(is_loopback_http("http://127.0.0.1:8080/x"));
        assert!(is_loopback_http("http://localhost"));
        assert!(is_loopback_http("http://[::1]:9"));
        assert!(!is_loopback_http("http://127.0.0.1.example.com"));
        assert!(!is_loopback_http("https://127.0.0.1"));
    }
}
