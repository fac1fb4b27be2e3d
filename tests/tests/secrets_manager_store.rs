//! The Secrets Manager `SecretStore` against moto: reading and mapping the secret, the cache
//! (one fetch, invalidation, rotation), and errors that name the field but never a value.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a broken expectation should fail loudly"
)]

use std::sync::Arc;
use std::time::Duration;

use aws_sdk_secretsmanager::primitives::Blob;
use m365_aws::{SecretsManagerSecretStore, WEBHOOK_SECRET_PREFIX};
use m365_core::secrets::{SecretError, SecretStore};
use m365_integration_tests::moto::Moto;
use secrecy::ExposeSecret as _;

const SECRET_ID: &str = "m365/contoso";
const HOUR: Duration = Duration::from_secs(3600);

/// Every secret value used below: none may appear in an error or a Debug output.
const VALUES: [&str; 6] = [
    "cs-FIRST-value",
    "cs-SECOND-value",
    "whsec_Zmlyc3Qtc2lnbmluZw==",
    "whsec_bmV4dC1zaWduaW5n",
    "pw-default-SECRET",
    "leaky-typo-value",
];

fn secret_json(client_secret: &str) -> String {
    serde_json::json!({
        "tenant": "contoso.onmicrosoft.com",
        "client_id": "11111111-2222-3333-4444-555555555555",
        "client_secret": client_secret,
        "webhook_secrets": [VALUES[2], VALUES[3]],
        "extra": {"default_password": VALUES[4]},
    })
    .to_string()
}

async fn moto_with_secret(value: &str) -> (Moto, aws_sdk_secretsmanager::Client) {
    let moto = Moto::start().await;
    let client = moto.secretsmanager_client().await;
    client
        .create_secret()
        .name(SECRET_ID)
        .secret_string(value)
        .send()
        .await
        .unwrap();
    (moto, client)
}

fn assert_no_values(text: &str) {
    for value in VALUES {
        assert!(!text.contains(value), "a secret value leaked: {text}");
    }
}

#[tokio::test]
async fn reads_the_secret_and_maps_the_webhook_secrets_into_extra() {
    let (_moto, client) = moto_with_secret(&secret_json(VALUES[0])).await;
    let store = SecretsManagerSecretStore::new(client, SECRET_ID, HOUR);

    let secrets = store.connection_secrets("contoso").await.unwrap();
    assert_eq!(secrets.tenant, "contoso.onmicrosoft.com");
    assert_eq!(secrets.client_id, "11111111-2222-3333-4444-555555555555");
    assert!(
        matches!(&secrets.credential, m365_core::AppCredential::Secret(s) if s.expose_secret() == VALUES[0])
    );
    assert_eq!(
        secrets.extra[&format!("{WEBHOOK_SECRET_PREFIX}0")].expose_secret(),
        VALUES[2]
    );
    assert_eq!(secrets.extra["webhook_secret.1"].expose_secret(), VALUES[3]);
    assert_eq!(secrets.extra["default_password"].expose_secret(), VALUES[4]);
    assert_eq!(secrets.extra.len(), 3);
    assert_no_values(&format!("{secrets:?}"));
    assert_no_values(&format!("{store:?}"));
    assert_eq!(store.fetches(), 1);
}

#[tokio::test]
async fn the_cache_serves_later_calls_until_invalidated_and_then_reads_the_rotated_value() {
    let (_moto, client) = moto_with_secret(&secret_json(VALUES[0])).await;
    let store = SecretsManagerSecretStore::new(client.clone(), SECRET_ID, HOUR);

    for _ in 0..3 {
        let secrets = store.connection_secrets("contoso").await.unwrap();
        assert!(
            matches!(&secrets.credential, m365_core::AppCredential::Secret(s) if s.expose_secret() == VALUES[0])
        );
    }
    assert_eq!(store.fetches(), 1, "later calls are served from the cache");

    // Rotation: the new value is not seen until the cache is dropped.
    client
        .put_secret_value()
        .secret_id(SECRET_ID)
        .secret_string(secret_json(VALUES[1]))
        .send()
        .await
        .unwrap();
    let cached = store.connection_secrets("contoso").await.unwrap();
    assert!(
        matches!(&cached.credential, m365_core::AppCredential::Secret(s) if s.expose_secret() == VALUES[0])
    );
    assert_eq!(store.fetches(), 1);

    store.invalidate("contoso").await;
    let rotated = store.connection_secrets("contoso").await.unwrap();
    assert!(
        matches!(&rotated.credential, m365_core::AppCredential::Secret(s) if s.expose_secret() == VALUES[1])
    );
    assert_eq!(store.fetches(), 2);
    let again = store.connection_secrets("contoso").await.unwrap();
    assert!(
        matches!(&again.credential, m365_core::AppCredential::Secret(s) if s.expose_secret() == VALUES[1])
    );
    assert_eq!(store.fetches(), 2);
}

#[tokio::test]
async fn concurrent_callers_share_one_fetch_and_a_zero_max_age_reads_every_time() {
    let (_moto, client) = moto_with_secret(&secret_json(VALUES[0])).await;
    let store = Arc::new(SecretsManagerSecretStore::new(
        client.clone(),
        SECRET_ID,
        HOUR,
    ));
    let calls: Vec<_> = (0..8)
        .map(|_| {
            let store = Arc::clone(&store);
            tokio::spawn(async move { store.connection_secrets("contoso").await })
        })
        .collect();
    for call in calls {
        let secrets = call.await.unwrap().unwrap();
        assert!(
            matches!(&secrets.credential, m365_core::AppCredential::Secret(s) if s.expose_secret() == VALUES[0])
        );
    }
    assert_eq!(store.fetches(), 1, "no stampede");

    let uncached = SecretsManagerSecretStore::new(client, SECRET_ID, Duration::ZERO);
    uncached.connection_secrets("contoso").await.unwrap();
    uncached.connection_secrets("contoso").await.unwrap();
    assert_eq!(uncached.fetches(), 2);
}

#[tokio::test]
async fn a_missing_secret_names_the_id_and_how_to_create_it() {
    let moto = Moto::start().await;
    let store =
        SecretsManagerSecretStore::new(moto.secretsmanager_client().await, "m365/nowhere", HOUR);
    let error = store.connection_secrets("contoso").await.unwrap_err();
    let text = error.to_string();
    assert!(matches!(error, SecretError::Missing(_)), "{error:?}");
    assert!(text.contains("m365/nowhere"), "{text}");
    assert!(text.contains("ResourceNotFoundException"), "{text}");
    assert!(text.contains("create-secret"), "{text}");
    assert!(
        !text.contains(m365_integration_tests::moto::SECRET_ACCESS_KEY),
        "{text}"
    );
    // Failures are not cached: the next call asks again.
    let _ = store.connection_secrets("contoso").await.unwrap_err();
    assert_eq!(store.fetches(), 2);
}

#[tokio::test]
async fn malformed_secrets_name_the_field_and_never_a_value() {
    let moto = Moto::start().await;
    let client = moto.secretsmanager_client().await;
    let cases: [(&str, String, &str); 6] = [
        (
            "not-json",
            format!(r#"{{"tenant": "t", "client_secret": "{}" oops"#, VALUES[0]),
            "not valid JSON",
        ),
        (
            "missing-field",
            format!(r#"{{"tenant": "t", "client_secret": "{}"}}"#, VALUES[0]),
            "client_id is missing",
        ),
        (
            "unknown-field",
            format!(
                r#"{{"tenant": "t", "client_id": "c", "clientsecret": "{}"}}"#,
                VALUES[5]
            ),
            "unknown field \"clientsecret\"",
        ),
        (
            "wrong-type",
            format!(
                r#"{{"tenant": "t", "client_id": "c", "client_secret": "{}", "extra": "{}"}}"#,
                VALUES[0], VALUES[4]
            ),
            "field extra is a string, not an object",
        ),
        (
            "bad-webhook",
            format!(
                r#"{{"tenant": "t", "client_id": "c", "client_secret": "{}", "webhook_secrets": ["{}", 7]}}"#,
                VALUES[0], VALUES[2]
            ),
            "webhook_secrets[1] is a number",
        ),
        (
            "not-an-object",
            format!(r#"["{}"]"#, VALUES[0]),
            "the value is an array",
        ),
    ];
    for (name, value, expected) in &cases {
        let id = format!("m365/{name}");
        client
            .create_secret()
            .name(&id)
            .secret_string(value)
            .send()
            .await
            .unwrap();
        let store = SecretsManagerSecretStore::new(client.clone(), &id, HOUR);
        let error = store.connection_secrets("contoso").await.unwrap_err();
        assert!(
            matches!(error, SecretError::Malformed(_)),
            "{name}: {error:?}"
        );
        let text = error.to_string();
        assert!(text.contains(expected), "{name}: {text}");
        assert!(text.contains(&id), "{name}: {text}");
        assert_no_values(&text);
        assert_no_values(&format!("{error:?}"));
    }

    client
        .create_secret()
        .name("m365/binary")
        .secret_binary(Blob::new(secret_json(VALUES[0]).into_bytes()))
        .send()
        .await
        .unwrap();
    let store = SecretsManagerSecretStore::new(client, "m365/binary", HOUR);
    let error = store.connection_secrets("contoso").await.unwrap_err();
    assert!(matches!(error, SecretError::Malformed(_)), "{error:?}");
    let text = error.to_string();
    assert!(text.contains("binary"), "{text}");
    assert!(text.contains("m365/binary"), "{text}");
    assert_no_values(&text);
    assert_no_values(&format!("{error:?}"));
}
