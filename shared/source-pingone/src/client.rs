//! The PingOne Platform API as the source reads it: a worker application's client-credentials
//! token, cached and renewed; GET requests retried the way PingOne asks; collections followed
//! through `_links.next`.
//!
//! * Token: `POST {auth}/{envId}/as/token`, `grant_type=client_credentials`, the client
//!   authenticated by Basic or by form fields
//!   (<https://developer.pingidentity.com/pingone-api/auth/openid-connect-oauth-2/token-admin-app-client_credentials.html>).
//!   Renewed a minute before it expires, and once when the API answers 401.
//! * Retries: 429 (after `Retry-After`), 408, 500, 502, 503 and 504 with exponential backoff and
//!   jitter, as PingOne's retry guidance lists them
//!   (<https://developer.pingidentity.com/pingone-api/platform/working-with-pingone-apis/retry-best-practices.html>,
//!   <https://developer.pingidentity.com/pingone-api/platform/rate-limiting.html>).
//! * Errors: PingOne's error body (`P1Error` in the PingOne OpenAPI: `id`, `code`, `message`,
//!   `details[]` of `code`, `target`, `message`) is kept and shown to the operator.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use m365_core::config::pingone_source::{PingOneSourceConfig, PingOneTokenAuth};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::Value;
use tokio::time::Instant;

/// Attempts of one request (the first and the retries).
const ATTEMPTS: u32 = 6;
/// The first backoff; doubled at each retry.
const BACKOFF_BASE: Duration = Duration::from_millis(500);
/// The longest wait between attempts, a `Retry-After` included.
const WAIT_CAP: Duration = Duration::from_secs(60);
/// Pages followed in one collection read before the read is refused as runaway.
const PAGE_CAP: usize = 100_000;

/// PingOne's error body (`P1Error`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct P1Error {
    #[serde(default)]
    pub id: String,
    #[serde(default)]
    pub code: String,
    #[serde(default)]
    pub message: String,
    #[serde(default)]
    pub details: Vec<P1ErrorDetail>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct P1ErrorDetail {
    #[serde(default)]
    pub code: String,
    #[serde(default)]
    pub target: Option<String>,
    #[serde(default)]
    pub message: String,
}

impl std::fmt::Display for P1Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.code, self.message.trim_end_matches('.'))?;
        for d in &self.details {
            match &d.target {
                Some(target) => write!(f, "; {} on {target}: {}", d.code, d.message)?,
                None => write!(f, "; {}: {}", d.code, d.message)?,
            }
        }
        if !self.id.is_empty() {
            write!(f, " (PingOne correlation id {})", self.id)?;
        }
        Ok(())
    }
}

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The token endpoint refused the worker application's credentials.
    #[error(
        "PingOne refused the worker application's credentials at {url} ({status}: {error}); check \
         client_id, the secret named by client_secret_secret, and token_auth (the application's \
         Token Endpoint Authentication Method)"
    )]
    Credentials {
        url: String,
        status: u16,
        error: String,
    },
    /// The API refused the request (a status that retrying does not change).
    #[error("PingOne answered {status} to GET {resource}: {error}{hint}")]
    Refused {
        resource: String,
        status: u16,
        error: Box<P1Error>,
        hint: &'static str,
    },
    /// The resource does not exist.
    #[error("PingOne has no {resource}")]
    NotFound { resource: String },
    /// Still throttled or failing after every attempt, or unreachable.
    #[error("PingOne did not answer GET {resource} after {attempts} attempts: {last}")]
    Unavailable {
        resource: String,
        attempts: u32,
        last: String,
    },
    /// The answer is not what the API documents.
    #[error("PingOne's answer to GET {resource} cannot be read: {message}")]
    Unreadable { resource: String, message: String },
}

struct Token {
    value: SecretString,
    renew_at: Instant,
}

/// A client of one environment's API.
pub struct Api {
    http: reqwest::Client,
    token_url: String,
    environment_url: String,
    client_id: String,
    client_secret: Option<SecretString>,
    secret_name: String,
    auth: PingOneTokenAuth,
    token: tokio::sync::Mutex<Option<Token>>,
    requests: AtomicU64,
}

impl std::fmt::Debug for Api {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Api")
            .field("environment_url", &self.environment_url)
            .field("client_id", &self.client_id)
            .finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
struct TokenAnswer {
    access_token: String,
    #[serde(default = "default_expiry")]
    expires_in: u64,
}

fn default_expiry() -> u64 {
    3600
}

#[derive(Deserialize, Default)]
struct OAuthError {
    #[serde(default)]
    error: String,
    #[serde(default)]
    error_description: String,
}

impl Api {
    pub fn new(
        config: &PingOneSourceConfig,
        client_secret: Option<SecretString>,
    ) -> Result<Api, ApiError> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(config.timeout_seconds))
            .connect_timeout(Duration::from_secs(config.timeout_seconds.min(10)))
            .user_agent(concat!("m365-provisioner/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| ApiError::Unavailable {
                resource: "(client set-up)".to_owned(),
                attempts: 0,
                last: e.to_string(),
            })?;
        Ok(Api {
            http,
            token_url: config.token_url(),
            environment_url: config.environment_url(),
            client_id: config.client_id.clone(),
            client_secret,
            secret_name: config.client_secret_secret.clone(),
            auth: config.token_auth,
            token: tokio::sync::Mutex::new(None),
            requests: AtomicU64::new(0),
        })
    }

    /// `{api}/v1/environments/{envId}`.
    pub fn environment_url(&self) -> &str {
        &self.environment_url
    }

    /// API requests made (each attempt counts; token requests do not).
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    async fn bearer(&self, renew: bool) -> Result<SecretString, ApiError> {
        let mut slot = self.token.lock().await;
        if !renew
            && let Some(token) = slot.as_ref()
            && token.renew_at > Instant::now()
        {
            return Ok(token.value.clone());
        }
        let token = self.fetch_token().await?;
        let value = token.value.clone();
        *slot = Some(token);
        Ok(value)
    }

    async fn fetch_token(&self) -> Result<Token, ApiError> {
        let Some(secret) = &self.client_secret else {
            return Err(ApiError::Credentials {
                url: self.token_url.clone(),
                status: 0,
                error: format!(
                    "the connection has no secret named {:?} (no request was made)",
                    self.secret_name
                ),
            });
        };
        let mut form = vec![("grant_type", "client_credentials")];
        let mut request = self.http.post(&self.token_url);
        match self.auth {
            PingOneTokenAuth::ClientSecretBasic => {
                request = request.basic_auth(&self.client_id, Some(secret.expose_secret()));
            }
            PingOneTokenAuth::ClientSecretPost => {
                form.push(("client_id", self.client_id.as_str()));
                form.push(("client_secret", secret.expose_secret()));
            }
        }
        let unavailable = |last: String| ApiError::Unavailable {
            resource: format!("token ({})", self.token_url),
            attempts: 1,
            last,
        };
        let response = request
            .form(&form)
            .send()
            .await
            .map_err(|e| unavailable(e.without_url().to_string()))?;
        let status = response.status();
        let body = response.bytes().await.unwrap_or_default();
        if status.is_success() {
            let answer: TokenAnswer = serde_json::from_slice(&body)
                .map_err(|e| unavailable(format!("the token answer cannot be read: {e}")))?;
            let lifetime = Duration::from_secs(answer.expires_in);
            let early = Duration::from_secs(60).min(lifetime / 10);
            return Ok(Token {
                value: SecretString::from(answer.access_token),
                renew_at: Instant::now() + lifetime - early,
            });
        }
        if status.is_server_error() || status.as_u16() == 429 {
            return Err(unavailable(format!("HTTP {status}")));
        }
        let error = match serde_json::from_slice::<OAuthError>(&body) {
            Ok(oauth) if !oauth.error.is_empty() => {
                format!("{}: {}", oauth.error, oauth.error_description)
            }
            _ => match serde_json::from_slice::<P1Error>(&body) {
                Ok(p1) if !p1.code.is_empty() => {
                    let hint = if p1.code == "NOT_FOUND" {
                        " (no such environment: check environment_id and region)"
                    } else {
                        ""
                    };
                    format!("{p1}{hint}")
                }
                _ => String::from_utf8_lossy(&body).chars().take(300).collect(),
            },
        };
        Err(ApiError::Credentials {
            url: self.token_url.clone(),
            status: status.as_u16(),
            error,
        })
    }

    /// GET `{environment}/{path_and_query}` (or an absolute `_links` href of the same API).
    pub async fn get(&self, path_or_href: &str) -> Result<Value, ApiError> {
        let url = if path_or_href.starts_with("http://") || path_or_href.starts_with("https://") {
            path_or_href.to_owned()
        } else {
            format!("{}/{}", self.environment_url, path_or_href)
        };
        let resource = describe(&url, &self.environment_url);
        let mut renewed = false;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let token = self.bearer(false).await?;
            self.requests.fetch_add(1, Ordering::Relaxed);
            let sent = self
                .http
                .get(&url)
                .bearer_auth(token.expose_secret())
                .send()
                .await;
            let wait = match sent {
                Ok(response) => {
                    match self
                        .answer(response, &resource, attempt, &mut renewed)
                        .await?
                    {
                        Answer::Done(value) => return Ok(value),
                        Answer::Again => continue,
                        Answer::Wait(wait, last) if attempt < ATTEMPTS => {
                            tracing::info!(resource, attempt, wait_ms = wait.as_millis() as u64, %last, "PingOne asks to retry");
                            wait
                        }
                        Answer::Wait(_, last) => {
                            return Err(ApiError::Unavailable {
                                resource,
                                attempts: attempt,
                                last,
                            });
                        }
                    }
                }
                Err(e) if attempt < ATTEMPTS => {
                    tracing::info!(resource, attempt, error = %e.without_url(), "PingOne cannot be reached; retrying");
                    backoff(attempt)
                }
                Err(e) => {
                    return Err(ApiError::Unavailable {
                        resource,
                        attempts: attempt,
                        last: e.without_url().to_string(),
                    });
                }
            };
            tokio::time::sleep(wait).await;
        }
    }

    async fn answer(
        &self,
        response: reqwest::Response,
        resource: &str,
        attempt: u32,
        renewed: &mut bool,
    ) -> Result<Answer, ApiError> {
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_retry_after);
        let body = response.bytes().await.unwrap_or_default();
        let error = || serde_json::from_slice::<P1Error>(&body).unwrap_or_default();
        match status {
            200..=299 => serde_json::from_slice(&body)
                .map(Answer::Done)
                .map_err(|e| ApiError::Unreadable {
                    resource: resource.to_owned(),
                    message: e.to_string(),
                }),
            401 if !*renewed => {
                // A token revoked or expired early: one new token, then the request again.
                *renewed = true;
                self.bearer(true).await?;
                Ok(Answer::Again)
            }
            404 => Err(ApiError::NotFound {
                resource: resource.to_owned(),
            }),
            429 => Ok(Answer::Wait(
                retry_after
                    .unwrap_or_else(|| backoff(attempt))
                    .min(WAIT_CAP),
                format!("429 {}", error()),
            )),
            408 | 500 | 502 | 503 | 504 => Ok(Answer::Wait(
                retry_after.map_or_else(|| backoff(attempt), |w| w.min(WAIT_CAP)),
                format!("{status} {}", error()),
            )),
            _ => Err(ApiError::Refused {
                resource: resource.to_owned(),
                status,
                error: Box::new(error()),
                hint: hint(status),
            }),
        }
    }

    /// Every item of a collection: `GET path`, then each `_links.next.href`, items in
    /// `_embedded.{key}`.
    pub async fn collect(&self, path: &str, key: &str) -> Result<Vec<Value>, ApiError> {
        let mut items = Vec::new();
        let mut next = Some(path.to_owned());
        let mut pages = 0;
        while let Some(url) = next.take() {
            let page = self.get(&url).await?;
            let (page_items, link) =
                split_page(&page, key).map_err(|message| ApiError::Unreadable {
                    resource: describe(&url, &self.environment_url),
                    message,
                })?;
            items.extend(page_items);
            next = link;
            pages += 1;
            if pages >= PAGE_CAP {
                return Err(ApiError::Unreadable {
                    resource: describe(path, &self.environment_url),
                    message: format!("more than {PAGE_CAP} pages; the cursor does not end"),
                });
            }
        }
        Ok(items)
    }
}

enum Answer {
    Done(Value),
    /// Again at once (a renewed token).
    Again,
    /// Again after the wait; the text says why.
    Wait(Duration, String),
}

/// The items of one collection page and the href of the next page.
pub fn split_page(page: &Value, key: &str) -> Result<(Vec<Value>, Option<String>), String> {
    let items = match page.get("_embedded").and_then(|e| e.get(key)) {
        Some(Value::Array(items)) => items.clone(),
        None => Vec::new(),
        Some(_) => return Err(format!("_embedded.{key} is not a list")),
    };
    let next = page
        .pointer("/_links/next/href")
        .and_then(Value::as_str)
        .map(str::to_owned);
    Ok((items, next))
}

fn hint(status: u16) -> &'static str {
    match status {
        400 => "; correct the setting the detail names (a filter: user_filter or group_filter)",
        401 | 403 => {
            "; give the worker application the Identity Data Read Only role for this environment \
             (Applications > the worker > Roles)"
        }
        _ => "",
    }
}

/// `users?filter=…` of `https://api…/v1/environments/{env}/users?filter=…`: what a message
/// names (the environment is named once, by the source's errors).
fn describe(url: &str, environment_url: &str) -> String {
    let path = url.strip_prefix(environment_url).unwrap_or(url);
    let path = path.trim_start_matches('/');
    let decoded = percent_encoding::percent_decode_str(path).decode_utf8_lossy();
    // A cursor is long and means nothing to an operator.
    match decoded.split_once("cursor=") {
        Some((head, _)) => format!("{head}cursor=…"),
        None => decoded.into_owned(),
    }
}

fn backoff(attempt: u32) -> Duration {
    let exp = BACKOFF_BASE.saturating_mul(1 << attempt.saturating_sub(1).min(8));
    let jitter = rand::random_range(0.5..1.0);
    exp.mul_f64(jitter).min(WAIT_CAP)
}

/// `Retry-After` in seconds, or as an HTTP date (then the time until it).
fn parse_retry_after(value: &str) -> Option<Duration> {
    if let Ok(secs) = value.trim().parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let when =
        time::OffsetDateTime::parse(value.trim(), &time::format_description::well_known::Rfc2822)
            .ok()?;
    let delta = when - time::OffsetDateTime::now_utc();
    Some(Duration::from_secs(delta.whole_seconds().max(0) as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_is_read_in_seconds_or_as_a_date() {
        assert_eq!(parse_retry_after("3"), Some(Duration::from_secs(3)));
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon"), None);
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        assert!(backoff(1) <= BACKOFF_BASE);
        assert!(backoff(4) >= BACKOFF_BASE * 4);
        assert!(backoff(30) <= WAIT_CAP);
    }

    #[test]
    fn p1_errors_read_with_their_details_and_correlation_id() {
        let body = br#"{"id":"c-1","code":"INVALID_DATA","message":"The request could not be completed.","details":[{"code":"INVALID_FILTER","target":"filter","message":"Unsupported attribute nickname"}]}"#;
        let error: P1Error = serde_json::from_slice(body).unwrap();
        assert_eq!(
            error.to_string(),
            "INVALID_DATA The request could not be completed; INVALID_FILTER on filter: \
             Unsupported attribute nickname (PingOne correlation id c-1)"
        );
    }

    #[test]
    fn messages_name_the_resource_without_the_cursor() {
        let env = "https://api.pingone.eu/v1/environments/e";
        assert_eq!(
            describe(
                "https://api.pingone.eu/v1/environments/e/users?filter=population.id%20eq%20%22p%22&cursor=abc",
                env
            ),
            "users?filter=population.id eq \"p\"&cursor=…"
        );
    }
}
