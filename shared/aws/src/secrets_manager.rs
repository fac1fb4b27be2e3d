//! [`SecretsManagerSecretStore`]: the `SecretStore` port on AWS Secrets Manager.
//!
//! # The secret
//!
//! One secret (name or ARN) per store, its `SecretString` a JSON object:
//!
//! ```json
//! {"tenant": "contoso.onmicrosoft.com",
//!  "client_id": "00000000-0000-0000-0000-000000000000",
//!  "client_secret": "…",
//!  "webhook_secrets": ["whsec_…", "whsec_…"],
//!  "additional_apps": [{"client_id": "11111111-…", "client_secret": "…"}],
//!  "extra": {"default_password": "…"}}
//! ```
//!
//! `tenant` and `client_id` are required, non-empty strings, and so is the app's credential:
//! `client_secret`, or a certificate instead — `client_certificate_pem` (the certificate, PEM) and
//! `client_private_key_pem` (its unencrypted RSA private key, PEM), with optionally
//! `client_assertion_algorithm` (`RS256`, the default, or `PS256`); see
//! docs/operations.md#certificate-credentials. Exactly one kind: both is refused. `webhook_secrets`
//! (optional) is one string or an array of them: several while a signing secret is rotated. They
//! land in [`ConnectionSecrets::extra`] under `webhook_secret.0`, `webhook_secret.1`, … (see
//! [`WEBHOOK_SECRET_PREFIX`]), next to the entries of `extra` (optional, strings only).
//! `additional_apps` (optional) lists further app registrations of the same tenant, each with its
//! `client_id` and `client_secret` (or certificate keys), to write past one app's quota. Any other
//! field is refused by name, so that a typo (`clientsecret`) does not pass unnoticed.
//!
//! # Caching
//!
//! The parsed secret is kept in the store for `max_age`: a store built once per Lambda container
//! serves later invocations without a call. [`invalidate`](SecretStore::invalidate) (after
//! Graph refused the credentials: they may have been rotated) drops the copy, and the next call
//! reads the secret again. One fetch at a time: concurrent callers wait for it rather than each
//! asking Secrets Manager. Failures are not cached.
//!
//! The store serves the same secret whatever connection it is asked for: build one store per
//! secret id.
//!
//! # Errors
//!
//! - [`SecretError::Missing`]: no such secret (`ResourceNotFoundException`); names the secret id
//!   and how to create it.
//! - [`SecretError::Malformed`]: not the JSON above (or a binary secret); names the field, never a
//!   value — not even in JSON syntax errors, which report a line and column only.
//! - [`SecretError::Unavailable`]: any other failure, with Secrets Manager's error code
//!   (`AccessDeniedException`, `DecryptionFailure`, …).
//!
//! IAM: `secretsmanager:GetSecretValue` on the secret (and `kms:Decrypt` on its key when that is a
//! customer-managed key).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_secretsmanager::Client;
use aws_sdk_secretsmanager::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use m365_core::secrets::{
    AppCredential, AppSecret, CLIENT_ASSERTION_ALGORITHM, CLIENT_CERTIFICATE_PEM,
    CLIENT_PRIVATE_KEY_PEM, CLIENT_SECRET, ConnectionSecrets, SecretError, SecretStore,
};
use secrecy::SecretString;
use serde_json::Value;
use tokio::sync::Mutex;
use tokio::time::Instant;
use tracing::instrument;

/// Keys of [`ConnectionSecrets::extra`] holding the webhook signing secrets: `webhook_secret.0`,
/// `webhook_secret.1`, … in the order of the secret's `webhook_secrets`.
pub const WEBHOOK_SECRET_PREFIX: &str = "webhook_secret.";

/// The credential fields of the secret and of each `additional_apps` entry.
const CREDENTIAL_FIELDS: [&str; 4] = [
    CLIENT_SECRET,
    CLIENT_CERTIFICATE_PEM,
    CLIENT_PRIVATE_KEY_PEM,
    CLIENT_ASSERTION_ALGORITHM,
];

/// The credential of an object's credential fields (optional strings), by
/// [`AppCredential::from_parts`]; `prefix` names the object in messages. Never a value.
fn credential_of(
    fields: &serde_json::Map<String, Value>,
    prefix: &str,
    malformed: &dyn Fn(String) -> SecretError,
) -> Result<AppCredential, SecretError> {
    let mut values: Vec<Option<String>> = Vec::with_capacity(CREDENTIAL_FIELDS.len());
    for name in CREDENTIAL_FIELDS {
        values.push(match fields.get(name) {
            None | Some(Value::Null) => None,
            Some(Value::String(v)) => Some(v.clone()),
            Some(other) => {
                return Err(malformed(format!(
                    "{prefix}{name} is {}, not a string",
                    kind(other)
                )));
            }
        });
    }
    let mut values = values.into_iter();
    let mut next = || values.next().flatten();
    let (secret, certificate, key, algorithm) = (next(), next(), next(), next());
    AppCredential::from_parts(
        prefix,
        secret.map(SecretString::from),
        certificate,
        key.map(SecretString::from),
        algorithm.as_deref(),
    )
    .map_err(malformed)
}

/// The fields a secret may have.
const FIELDS: [&str; 9] = [
    "tenant",
    "client_id",
    CLIENT_SECRET,
    CLIENT_CERTIFICATE_PEM,
    CLIENT_PRIVATE_KEY_PEM,
    CLIENT_ASSERTION_ALGORITHM,
    "webhook_secrets",
    "additional_apps",
    "extra",
];

/// The `SecretStore` on one Secrets Manager secret, cached as the [module docs](self) describe.
pub struct SecretsManagerSecretStore {
    client: Client,
    secret_id: String,
    max_age: Duration,
    cached: Mutex<Option<Cached>>,
    fetches: AtomicU64,
}

struct Cached {
    secrets: ConnectionSecrets,
    fetched_at: Instant,
}

impl std::fmt::Debug for SecretsManagerSecretStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the cached secrets, not even redacted: only where they come from.
        f.debug_struct("SecretsManagerSecretStore")
            .field("secret_id", &self.secret_id)
            .field("max_age", &self.max_age)
            .field("fetches", &self.fetches())
            .finish_non_exhaustive()
    }
}

impl SecretsManagerSecretStore {
    /// A store reading `secret_id` (a name or an ARN) with `client`, keeping what it read for
    /// `max_age`. The client is built once by the caller and shared.
    pub fn new(client: Client, secret_id: impl Into<String>, max_age: Duration) -> Self {
        Self {
            client,
            secret_id: secret_id.into(),
            max_age,
            cached: Mutex::new(None),
            fetches: AtomicU64::new(0),
        }
    }

    /// The secret's name or ARN, as given.
    pub fn secret_id(&self) -> &str {
        &self.secret_id
    }

    /// How many `GetSecretValue` calls this store has made.
    pub fn fetches(&self) -> u64 {
        self.fetches.load(Ordering::Relaxed)
    }

    async fn fetch(&self) -> Result<ConnectionSecrets, SecretError> {
        self.fetches.fetch_add(1, Ordering::Relaxed);
        let out = self
            .client
            .get_secret_value()
            .secret_id(&self.secret_id)
            .send()
            .await
            .map_err(|e| self.error(&e))?;
        let id = &self.secret_id;
        match (out.secret_string(), out.secret_binary()) {
            (Some(text), _) => parse_secret(text, id),
            (None, Some(_)) => Err(SecretError::Malformed(format!(
                "Secrets Manager secret {id} holds a binary value: it must be a SecretString \
                 holding JSON with tenant, client_id and client_secret (or a certificate); store it with \
                 aws secretsmanager put-secret-value --secret-id {id} --secret-string file://secret.json"
            ))),
            (None, None) => Err(SecretError::Malformed(format!(
                "Secrets Manager secret {id} has no value: store one with \
                 aws secretsmanager put-secret-value --secret-id {id} --secret-string file://secret.json"
            ))),
        }
    }

    fn error<E, R>(&self, err: &SdkError<E, R>) -> SecretError
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
        R: std::fmt::Debug,
    {
        let id = &self.secret_id;
        match err.as_service_error() {
            Some(service) if service.code() == Some("ResourceNotFoundException") => {
                SecretError::Missing(format!(
                    "Secrets Manager secret {id} does not exist (ResourceNotFoundException): \
                     create it with aws secretsmanager create-secret --name {id} \
                     --secret-string file://secret.json, the file holding \
                     {{\"tenant\": …, \"client_id\": …, \"client_secret\": …}}; or name another \
                     secret in [secrets] secret_id or M365_SECRET_ID"
                ))
            }
            Some(service) => SecretError::Unavailable(format!(
                "Secrets Manager GetSecretValue of {id} failed: {}: {}",
                service.code().unwrap_or("unknown error"),
                service.message().unwrap_or("no message")
            )),
            None => SecretError::Unavailable(format!(
                "Secrets Manager GetSecretValue of {id} failed: {}",
                DisplayErrorContext(err)
            )),
        }
    }
}

#[async_trait]
impl SecretStore for SecretsManagerSecretStore {
    #[instrument(level = "debug", skip_all, fields(connection = %connection, secret_id = %self.secret_id))]
    async fn connection_secrets(&self, connection: &str) -> Result<ConnectionSecrets, SecretError> {
        // Held across the fetch: concurrent callers wait for one GetSecretValue and share it.
        let mut cached = self.cached.lock().await;
        if let Some(hit) = cached.as_ref()
            && hit.fetched_at.elapsed() < self.max_age
        {
            return Ok(hit.secrets.clone());
        }
        let secrets = self.fetch().await?;
        tracing::debug!(fetches = self.fetches(), "secret read");
        *cached = Some(Cached {
            secrets: secrets.clone(),
            fetched_at: Instant::now(),
        });
        Ok(secrets)
    }

    #[instrument(level = "debug", skip_all, fields(connection = %connection, secret_id = %self.secret_id))]
    async fn invalidate(&self, connection: &str) {
        *self.cached.lock().await = None;
    }

    fn reads(&self) -> Option<u64> {
        Some(self.fetches())
    }
}

/// The secret's JSON as [`ConnectionSecrets`]. Messages name fields, never values.
pub fn parse_secret(text: &str, id: &str) -> Result<ConnectionSecrets, SecretError> {
    let malformed = |detail: String| {
        SecretError::Malformed(format!(
            "Secrets Manager secret {id}: {detail}; the secret must be a JSON object with \
             tenant, client_id and client_secret (strings) or, for a certificate, \
             client_certificate_pem and client_private_key_pem, and optionally webhook_secrets \
             (a string or an array of strings), additional_apps (an array of objects with \
             client_id and client_secret or the certificate keys) and extra (an object of strings)"
        ))
    };
    // serde_json's own messages may quote the text (`invalid type: string "…"`): only its
    // position is reported.
    let value: Value = serde_json::from_str(text).map_err(|e| {
        malformed(format!(
            "the value is not valid JSON (at line {} column {})",
            e.line(),
            e.column()
        ))
    })?;
    let Value::Object(fields) = value else {
        return Err(malformed(format!(
            "the value is {}, not a JSON object",
            kind(&value)
        )));
    };
    if let Some(unknown) = fields.keys().find(|k| !FIELDS.contains(&k.as_str())) {
        return Err(malformed(format!(
            "unknown field {:?} (known: {})",
            shorten(unknown),
            FIELDS.join(", ")
        )));
    }
    let required = |name: &str| -> Result<String, SecretError> {
        match fields.get(name) {
            None => Err(malformed(format!("field {name} is missing"))),
            Some(Value::String(v)) if v.trim().is_empty() => {
                Err(malformed(format!("field {name} is empty")))
            }
            Some(Value::String(v)) => Ok(v.clone()),
            Some(other) => Err(malformed(format!(
                "field {name} is {}, not a string",
                kind(other)
            ))),
        }
    };
    let tenant = required("tenant")?;
    let client_id = required("client_id")?;
    let credential = credential_of(&fields, "", &malformed)?;

    let mut extra = BTreeMap::new();
    match fields.get("extra") {
        None | Some(Value::Null) => {}
        Some(Value::Object(entries)) => {
            for (name, value) in entries {
                if name.starts_with(WEBHOOK_SECRET_PREFIX) {
                    return Err(malformed(format!(
                        "extra.{}: names starting with {WEBHOOK_SECRET_PREFIX} are reserved: put \
                         webhook signing secrets in webhook_secrets",
                        shorten(name)
                    )));
                }
                let Value::String(value) = value else {
                    return Err(malformed(format!(
                        "extra.{} is {}, not a string",
                        shorten(name),
                        kind(value)
                    )));
                };
                extra.insert(name.clone(), SecretString::from(value.clone()));
            }
        }
        Some(other) => {
            return Err(malformed(format!(
                "field extra is {}, not an object",
                kind(other)
            )));
        }
    }
    let webhook: Vec<&Value> = match fields.get("webhook_secrets") {
        None | Some(Value::Null) => Vec::new(),
        Some(one @ Value::String(_)) => vec![one],
        Some(Value::Array(many)) => many.iter().collect(),
        Some(other) => {
            return Err(malformed(format!(
                "field webhook_secrets is {}, not a string or an array of strings",
                kind(other)
            )));
        }
    };
    for (i, value) in webhook.into_iter().enumerate() {
        match value {
            Value::String(v) if !v.trim().is_empty() => {
                extra.insert(
                    format!("{WEBHOOK_SECRET_PREFIX}{i}"),
                    SecretString::from(v.clone()),
                );
            }
            Value::String(_) => {
                return Err(malformed(format!("webhook_secrets[{i}] is empty")));
            }
            other => {
                return Err(malformed(format!(
                    "webhook_secrets[{i}] is {}, not a string",
                    kind(other)
                )));
            }
        }
    }
    let additional_apps = additional_apps(fields.get("additional_apps"), &malformed)?;
    Ok(ConnectionSecrets {
        additional_apps,
        tenant,
        client_id,
        credential,
        extra,
    })
}

/// The secret's `additional_apps`: objects of `client_id` (a non-empty string) and the credential
/// fields. Messages name the entry and field, never a value.
fn additional_apps(
    value: Option<&Value>,
    malformed: &dyn Fn(String) -> SecretError,
) -> Result<Vec<AppSecret>, SecretError> {
    let entries = match value {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(entries)) => entries,
        Some(other) => {
            return Err(malformed(format!(
                "field additional_apps is {}, not an array",
                kind(other)
            )));
        }
    };
    let mut apps = Vec::with_capacity(entries.len());
    for (i, entry) in entries.iter().enumerate() {
        let Value::Object(fields) = entry else {
            return Err(malformed(format!(
                "additional_apps[{i}] is {}, not an object with client_id and client_secret",
                kind(entry)
            )));
        };
        if let Some(unknown) = fields
            .keys()
            .find(|k| k.as_str() != "client_id" && !CREDENTIAL_FIELDS.contains(&k.as_str()))
        {
            return Err(malformed(format!(
                "additional_apps[{i}]: unknown field {:?} (known: client_id, {})",
                shorten(unknown),
                CREDENTIAL_FIELDS.join(", ")
            )));
        }
        let field = |name: &str| match fields.get(name) {
            Some(Value::String(v)) if !v.trim().is_empty() => Ok(v.clone()),
            Some(Value::String(_)) => {
                Err(malformed(format!("additional_apps[{i}].{name} is empty")))
            }
            None => Err(malformed(format!("additional_apps[{i}].{name} is missing"))),
            Some(other) => Err(malformed(format!(
                "additional_apps[{i}].{name} is {}, not a string",
                kind(other)
            ))),
        };
        apps.push(AppSecret {
            client_id: field("client_id")?,
            credential: credential_of(fields, &format!("additional_apps[{i}]."), malformed)?,
        });
    }
    Ok(apps)
}

/// A JSON value's type with its article, for messages (never the value).
fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// A field name for a message: at most 40 characters (a value pasted as a key must not come out
/// whole).
fn shorten(name: &str) -> String {
    if name.chars().count() <= 40 {
        name.to_owned()
    } else {
        format!("{}…", name.chars().take(40).collect::<String>())
    }
}

#[cfg(test)]
mod tests {
    use secrecy::ExposeSecret as _;

    use super::*;

    #[test]
    fn a_full_secret_maps_webhook_secrets_into_extra() {
        let secrets = parse_secret(
            r#"{"tenant": "t.onmicrosoft.com", "client_id": "c", "client_secret": "s3cr3t",
                "webhook_secrets": ["whsec_a", "whsec_b"], "extra": {"default_password": "pw"}}"#,
            "id",
        )
        .unwrap();
        assert_eq!(secrets.tenant, "t.onmicrosoft.com");
        assert_eq!(secrets.client_id, "c");
        assert_eq!(secret_of(&secrets.credential), "s3cr3t");
        let extra: Vec<(&str, &str)> = secrets
            .extra
            .iter()
            .map(|(k, v)| (k.as_str(), v.expose_secret()))
            .collect();
        assert_eq!(
            extra,
            [
                ("default_password", "pw"),
                ("webhook_secret.0", "whsec_a"),
                ("webhook_secret.1", "whsec_b"),
            ]
        );
    }

    #[test]
    fn additional_apps_are_read_in_order() {
        let secrets = parse_secret(
            r#"{"tenant": "t", "client_id": "c", "client_secret": "s",
                "additional_apps": [{"client_id": "c2", "client_secret": "s2"},
                                    {"client_id": "c3", "client_secret": "s3"}]}"#,
            "id",
        )
        .unwrap();
        let apps: Vec<(&str, &str)> = secrets
            .additional_apps
            .iter()
            .map(|a| (a.client_id.as_str(), secret_of(&a.credential)))
            .collect();
        assert_eq!(apps, [("c2", "s2"), ("c3", "s3")]);
    }

    fn secret_of(credential: &AppCredential) -> &str {
        match credential {
            AppCredential::Secret(s) => s.expose_secret(),
            AppCredential::Certificate(_) => panic!("a certificate"),
        }
    }

    #[test]
    fn a_certificate_may_stand_in_for_the_secret() {
        let text = serde_json::json!({
            "tenant": "t", "client_id": "c",
            "client_certificate_pem": "-----BEGIN CERTIFICATE-----\nCERT\n-----END CERTIFICATE-----\n",
            "client_private_key_pem": "-----BEGIN PRIVATE KEY-----\nKEYMATERIAL\n-----END PRIVATE KEY-----\n",
            "client_assertion_algorithm": "PS256",
            "additional_apps": [{"client_id": "c2",
                "client_certificate_pem": "C2", "client_private_key_pem": "K2"}],
        })
        .to_string();
        let secrets = parse_secret(&text, "id").unwrap();
        let AppCredential::Certificate(cert) = &secrets.credential else {
            panic!("{secrets:?}");
        };
        assert_eq!(cert.algorithm, m365_core::AssertionAlgorithm::Ps256);
        assert!(cert.private_key_pem.expose_secret().contains("KEYMATERIAL"));
        assert!(matches!(
            secrets.additional_apps[0].credential,
            AppCredential::Certificate(_)
        ));
        assert!(!format!("{secrets:?}").contains("KEYMATERIAL"));
    }

    #[test]
    fn one_webhook_secret_may_be_a_plain_string() {
        let secrets = parse_secret(
            r#"{"tenant": "t", "client_id": "c", "client_secret": "s", "webhook_secrets": "whsec_x"}"#,
            "id",
        )
        .unwrap();
        assert_eq!(secrets.extra["webhook_secret.0"].expose_secret(), "whsec_x");
        assert_eq!(secrets.extra.len(), 1);
    }

    #[test]
    fn malformed_secrets_name_the_field_and_never_a_value() {
        let cases = [
            (
                r#"{"tenant": "t", "client_id": "c"}"#,
                "no credential: set client_secret",
            ),
            (
                r#"{"tenant": "t", "client_id": "c", "clientsecret": "LEAK"}"#,
                "unknown field \"clientsecret\"",
            ),
            (
                r#"{"tenant": "t", "client_id": "c", "client_secret": 12345}"#,
                "client_secret is a number",
            ),
            (
                r#"{"tenant": "t", "client_id": "c", "client_secret": "s", "extra": "LEAK"}"#,
                "extra is a string",
            ),
            (
                r#"{"tenant": "t", "client_id": "c", "client_secret": "s", "extra": {"x": ["LEAK"]}}"#,
                "extra.x is an array",
            ),
            (
                r#"{"tenant": "t", "client_id": "c", "client_secret": "s", "webhook_secrets": [""]}"#,
                "webhook_secrets[0] is empty",
            ),
            (
                r#"{"tenant": "t", "client_id": "c", "client_secret": "s", "extra": {"webhook_secret.0": "LEAK"}}"#,
                "reserved",
            ),
            (r#"{"tenant": "t", "client_secret": "LEAK" junk"#, "line 1"),
            (
                r#"{"tenant": "t", "client_id": "c", "client_secret": "s", "additional_apps": {"client_id": "LEAK"}}"#,
                "additional_apps is an object, not an array",
            ),
            (
                r#"{"tenant": "t", "client_id": "c", "client_secret": "s", "additional_apps": [{"client_id": "c2"}]}"#,
                "no credential: set additional_apps[0].client_secret",
            ),
            (
                r#"{"tenant": "t", "client_id": "c", "client_secret": "LEAK", "client_private_key_pem": "LEAK"}"#,
                "both client_secret and a certificate",
            ),
            (
                r#"{"tenant": "t", "client_id": "c", "client_certificate_pem": "LEAK"}"#,
                "client_private_key_pem is missing",
            ),
            (
                r#"{"tenant": "t", "client_id": "c", "client_secret": "s", "additional_apps": [{"client_id": "c2", "secret": "LEAK"}]}"#,
                "additional_apps[0]: unknown field \"secret\"",
            ),
            (r#"["LEAK"]"#, "value is an array, not a JSON object"),
        ];
        for (text, expected) in cases {
            let error = parse_secret(text, "prod/contoso").unwrap_err();
            assert!(matches!(error, SecretError::Malformed(_)), "{error:?}");
            let message = error.to_string();
            assert!(message.contains(expected), "{expected}: {message}");
            assert!(message.contains("prod/contoso"), "{message}");
            assert!(!message.contains("LEAK"), "{message}");
            assert!(!message.contains("12345"), "{message}");
        }
    }
}
