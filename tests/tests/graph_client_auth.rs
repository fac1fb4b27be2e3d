//! Tokens: success and roles, each AADSTS configuration error as its own variant, renewal before
//! expiry, renewal once on a 401, endpoint overrides; certificate credentials.

#![allow(
    clippy::expect_used,
    reason = "test code: a broken expectation should fail loudly"
)]

use std::time::Duration;

use m365_graph::{AuthError, GraphError, SharedState, TokenCache};
use m365_integration_tests::graph_client::*;
use m365_sandbox::{Sandbox, demo};

#[tokio::test]
async fn token_is_obtained_and_roles_are_decoded() {
    let sb = start_demo().await;
    let c = client(&sb);
    let mut roles = c.token_roles().await.unwrap();
    roles.sort();
    assert_eq!(
        roles,
        vec![
            "Group.ReadWrite.All",
            "Organization.Read.All",
            "User.ReadWrite.All"
        ]
    );
    let claims = c.token_claims().await.unwrap();
    assert_eq!(claims.tid.as_deref(), Some(demo::TENANT_ID));
    assert_eq!(claims.appid.as_deref(), Some(demo::CLIENT_ID));
    // One token fetch, cached for the second call.
    assert_eq!(c.stats().token_requests, 1);

    let ro = client_with(
        settings(&sb),
        credentials(demo::READONLY_CLIENT_ID, demo::READONLY_CLIENT_SECRET),
    );
    let roles = ro.token_roles().await.unwrap();
    assert!(roles.contains(&"User.Read.All".to_string()));
    assert!(!roles.contains(&"User.ReadWrite.All".to_string()));
}

#[tokio::test]
async fn wrong_secret_is_its_own_error_and_names_the_fix() {
    let sb = start_demo().await;
    let c = client_with(
        settings(&sb),
        credentials(demo::CLIENT_ID, "not-the-secret"),
    );
    let e = c.authenticate().await.unwrap_err();
    assert!(
        matches!(e, GraphError::Auth(AuthError::InvalidClientSecret { .. })),
        "{e:?}"
    );
    assert!(!e.is_retryable());
    let text = e.to_string();
    assert!(text.contains("Value, not its ID"), "{text}");
    assert!(!text.contains("not-the-secret"), "{text}");
    assert!(!format!("{e:?}").contains("not-the-secret"));
}

#[tokio::test]
async fn expired_secret_is_its_own_error() {
    let sb = start_demo().await;
    let c = client_with(
        settings(&sb),
        credentials(demo::EXPIRED_CLIENT_ID, demo::EXPIRED_CLIENT_SECRET),
    );
    let e = c.authenticate().await.unwrap_err();
    assert!(
        matches!(e, GraphError::Auth(AuthError::ExpiredClientSecret { .. })),
        "{e:?}"
    );
    assert!(e.to_string().contains("create a new client secret"));
}

#[tokio::test]
async fn unknown_app_is_its_own_error() {
    let sb = start_demo().await;
    let c = client_with(
        settings(&sb),
        credentials("00000000-1111-2222-3333-444444444444", "whatever"),
    );
    let e = c.authenticate().await.unwrap_err();
    assert!(
        matches!(e, GraphError::Auth(AuthError::UnknownApplication { .. })),
        "{e:?}"
    );
}

#[tokio::test]
async fn unknown_and_malformed_tenants_are_their_own_errors() {
    let sb = start_demo().await;
    let mut creds = demo_credentials();
    creds.tenant = "nosuchtenant.onmicrosoft.com".into();
    let e = client_with(settings(&sb), creds)
        .authenticate()
        .await
        .unwrap_err();
    assert!(
        matches!(e, GraphError::Auth(AuthError::UnknownTenant { .. })),
        "{e:?}"
    );

    let mut creds = demo_credentials();
    creds.tenant = "not a tenant!".into();
    let e = client_with(settings(&sb), creds)
        .authenticate()
        .await
        .unwrap_err();
    assert!(
        matches!(e, GraphError::Auth(AuthError::MalformedTenant { .. })),
        "{e:?}"
    );
}

#[tokio::test]
async fn tenant_can_be_given_as_a_domain() {
    let sb = start_demo().await;
    let mut creds = demo_credentials();
    creds.tenant = demo::INITIAL_DOMAIN.into();
    let c = client_with(settings(&sb), creds);
    let org = c.organization().await.unwrap();
    assert_eq!(org.len(), 1);
    assert_eq!(org[0].id, demo::TENANT_ID);
}

#[tokio::test]
async fn short_lived_tokens_are_renewed_before_expiry() {
    let sb = start_demo().await;
    let mut knobs = sb.sandbox().knobs();
    knobs.token_lifetime_secs = 2;
    sb.sandbox().set_knobs(knobs);
    let c = client(&sb);
    c.organization().await.unwrap();
    assert_eq!(c.stats().token_requests, 1);
    tokio::time::sleep(Duration::from_millis(2200)).await;
    // The token is past its lifetime: the client renews it instead of sending it and failing.
    c.organization().await.unwrap();
    let s = c.stats();
    assert_eq!(s.token_requests, 2);
    assert_eq!(
        sb.sandbox()
            .request_log()
            .iter()
            .filter(|r| r.status == 401)
            .count(),
        0,
        "no request went out with an expired token"
    );
}

#[tokio::test]
async fn a_401_renews_the_token_once_and_succeeds() {
    // A token from one sandbox instance is rejected by a new instance on the same port (new
    // signing key), exactly like a revoked token: Graph answers 401.
    let first = Sandbox::demo().start().await.unwrap();
    let addr: std::net::SocketAddr = first
        .base_url()
        .trim_start_matches("http://")
        .parse()
        .unwrap();
    let shared = SharedState::isolated();
    let c =
        m365_graph::GraphClient::with_shared(settings(&first), demo_credentials(), shared.clone())
            .unwrap();
    c.organization().await.unwrap();
    first.stop().await;

    let second = Sandbox::demo().start_on(addr).await.unwrap();
    let org = c.organization().await.unwrap();
    assert_eq!(org.len(), 1);
    assert_eq!(c.stats().token_requests, 2);
    let statuses: Vec<u16> = second
        .sandbox()
        .request_log()
        .iter()
        .filter(|r| r.path.starts_with("/v1.0/organization"))
        .map(|r| r.status)
        .collect();
    assert_eq!(statuses, vec![401, 200]);
}

#[tokio::test]
async fn a_persistent_401_is_renewed_only_once() {
    // Tokens from one sandbox, Graph of another: every token is foreign.
    let login = start_demo().await;
    let graph = start_demo().await;
    let mut s = settings(&graph);
    s.login_url = Some(login.login_url());
    let c = client_with(s, demo_credentials());
    let e = c.organization().await.unwrap_err();
    assert!(matches!(e, GraphError::Unauthorized { .. }), "{e:?}");
    assert_eq!(c.stats().token_requests, 2, "one renewal, no loop");
    assert_eq!(graph.sandbox().stats().requests, 2);
}

#[tokio::test]
async fn token_cache_is_shared_between_clients() {
    let sb = start_demo().await;
    let shared = SharedState {
        tokens: std::sync::Arc::new(TokenCache::new()),
        pacers: SharedState::isolated().pacers,
    };
    let a = m365_graph::GraphClient::with_shared(settings(&sb), demo_credentials(), shared.clone())
        .unwrap();
    let b = m365_graph::GraphClient::with_shared(settings(&sb), demo_credentials(), shared.clone())
        .unwrap();
    a.organization().await.unwrap();
    b.organization().await.unwrap();
    assert_eq!(shared.tokens.fetch_count(), 1);
    // A client with a different (wrong) secret for the same app does not ride on the cache.
    let bad = m365_graph::GraphClient::with_shared(
        settings(&sb),
        credentials(demo::CLIENT_ID, "wrong"),
        shared.clone(),
    )
    .unwrap();
    assert!(matches!(
        bad.authenticate().await,
        Err(GraphError::Auth(AuthError::InvalidClientSecret { .. }))
    ));
    // ...and does not spoil it for the good clients.
    a.organization().await.unwrap();
    assert_eq!(a.stats().token_requests, 1);
}

#[tokio::test]
async fn tokens_are_not_shared_between_graph_hosts() {
    // Same login host, tenant, client and scope; different Graph hosts: a token obtained for
    // one Graph host is never handed to a client of the other.
    let login = start_demo().await;
    let other_graph = start_demo().await;
    let shared = SharedState {
        tokens: std::sync::Arc::new(TokenCache::new()),
        pacers: SharedState::isolated().pacers,
    };
    let a =
        m365_graph::GraphClient::with_shared(settings(&login), demo_credentials(), shared.clone())
            .unwrap();
    let mut s = settings(&login);
    s.graph_url = Some(other_graph.graph_url());
    let b = m365_graph::GraphClient::with_shared(s, demo_credentials(), shared.clone()).unwrap();
    assert_eq!(a.endpoints().login_url, b.endpoints().login_url);
    assert_eq!(a.endpoints().scope, b.endpoints().scope);
    a.authenticate().await.unwrap();
    b.authenticate().await.unwrap();
    assert_eq!(shared.tokens.fetch_count(), 2, "one token per Graph host");
    assert_eq!(b.stats().token_requests, 1);
    assert_eq!(login.sandbox().stats().tokens_issued, 2);
    // Each host's clients still share their own token.
    let a2 =
        m365_graph::GraphClient::with_shared(settings(&login), demo_credentials(), shared.clone())
            .unwrap();
    a2.authenticate().await.unwrap();
    assert_eq!(shared.tokens.fetch_count(), 2);
}

/// Credentials of the demo app with a certificate of tests/fixtures/certs.
fn certificate_credentials(
    certificate: &str,
    key: &str,
    algorithm: m365_graph::AssertionAlgorithm,
) -> m365_graph::Credentials {
    let stored = m365_core::AppCredential::Certificate(m365_core::CertificateSecret {
        certificate_pem: certificate.to_owned(),
        private_key_pem: secrecy::SecretString::from(key),
        algorithm,
    });
    m365_graph::Credentials {
        tenant: demo::INITIAL_DOMAIN.to_owned(),
        client_id: demo::CLIENT_ID.to_owned(),
        credential: m365_graph::ClientCredential::from_stored(&stored)
            .expect("the test certificate and key are valid"),
    }
}

const CERT: &str = include_str!("../fixtures/certs/app.crt.pem");
const KEY: &str = include_str!("../fixtures/certs/app.key.pem");
const OTHER_CERT: &str = include_str!("../fixtures/certs/other.crt.pem");
const OTHER_KEY: &str = include_str!("../fixtures/certs/other.key.pem");

#[tokio::test]
async fn certificate_credentials_get_tokens_graph_accepts() {
    use m365_graph::AssertionAlgorithm::{Ps256, Rs256};
    let sb = start_demo().await;
    assert!(sb.sandbox().add_certificate(demo::CLIENT_ID, CERT));
    for algorithm in [Rs256, Ps256] {
        let c = client_with(settings(&sb), certificate_credentials(CERT, KEY, algorithm));
        let organization = c.organization().await.unwrap();
        assert_eq!(organization[0].id, demo::TENANT_ID);
        assert!(
            c.token_roles()
                .await
                .unwrap()
                .contains(&"User.ReadWrite.All".to_owned())
        );
    }
    // A certificate the app does not have: its own error, naming the thumbprint.
    let c = client_with(
        settings(&sb),
        certificate_credentials(OTHER_CERT, OTHER_KEY, Rs256),
    );
    let e = c.authenticate().await.unwrap_err();
    let GraphError::Auth(AuthError::AssertionRejected {
        code, thumbprint, ..
    }) = &e
    else {
        panic!("{e:?}");
    };
    assert_eq!(*code, 700027);
    assert_eq!(thumbprint, "B7_Niv56-wnPNF9g478diWIWVV2zQtwnyOKfCwfphGw");
    assert!(!e.is_retryable());
    for line in OTHER_KEY.lines().filter(|l| !l.starts_with("-----")) {
        assert!(!format!("{e} {e:?}").contains(line));
    }
}

#[tokio::test]
async fn a_shared_token_cache_never_lends_one_credentials_token_to_another() {
    let sb = start_demo().await;
    assert!(sb.sandbox().add_certificate(demo::CLIENT_ID, CERT));
    let shared = SharedState::isolated();
    let good = m365_graph::GraphClient::with_shared(
        settings(&sb),
        certificate_credentials(CERT, KEY, m365_graph::AssertionAlgorithm::Rs256),
        shared.clone(),
    )
    .unwrap();
    good.authenticate().await.unwrap();
    // Same app, tenant and scope, an unregistered certificate: asks the endpoint and is refused.
    let other = m365_graph::GraphClient::with_shared(
        settings(&sb),
        certificate_credentials(OTHER_CERT, OTHER_KEY, m365_graph::AssertionAlgorithm::Rs256),
        shared.clone(),
    )
    .unwrap();
    assert!(other.authenticate().await.is_err());
    // And the app's secret is a credential of its own too.
    let secret = m365_graph::GraphClient::with_shared(
        settings(&sb),
        m365_graph::Credentials {
            tenant: demo::INITIAL_DOMAIN.to_owned(),
            ..credentials(demo::CLIENT_ID, "not-the-secret")
        },
        shared,
    )
    .unwrap();
    assert!(secret.authenticate().await.is_err());
}
