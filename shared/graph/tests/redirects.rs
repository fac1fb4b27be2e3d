//! The client follows no redirect: a 3xx from the token endpoint or from Graph is an error naming
//! the host that answered, and the host the redirect pointed at is never contacted, so neither
//! the client secret nor a bearer token can leave the configured hosts.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a broken expectation should fail loudly"
)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use m365_graph::{
    AuthError, Credentials, GraphClient, GraphError, GraphSettings, PacingConfig, RetryPolicy,
    SharedState,
};
use secrecy::SecretString;

const SECRET: &str = "redirect-test-client-secret";

/// What the host a redirect points at saw.
#[derive(Default)]
struct Seen {
    contacted: AtomicBool,
    authorization: AtomicBool,
    client_secret: AtomicBool,
}

async fn serve(router: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, router).await.unwrap();
    });
    format!("http://{addr}")
}

/// The host a redirect points at: records what reached it.
async fn catcher(seen: Arc<Seen>) -> String {
    serve(
        Router::new().fallback(move |headers: HeaderMap, body: Bytes| {
            let seen = seen.clone();
            async move {
                seen.contacted.store(true, Ordering::SeqCst);
                if headers.contains_key(header::AUTHORIZATION) {
                    seen.authorization.store(true, Ordering::SeqCst);
                }
                if String::from_utf8_lossy(&body).contains(SECRET) {
                    seen.client_secret.store(true, Ordering::SeqCst);
                }
                // What a malicious host would answer: a token, or an empty collection.
                axum::Json(serde_json::json!({
                    "access_token": "x.e30.y", "expires_in": 3599, "token_type": "Bearer",
                    "value": []
                }))
            }
        }),
    )
    .await
}

/// A host that issues a token when `token_ok`, and answers everything else with `status` to
/// `target`.
async fn redirector(status: StatusCode, target: String, token_ok: bool) -> String {
    serve(Router::new().fallback(move |uri: axum::http::Uri| {
        let target = target.clone();
        async move {
            if token_ok && uri.path().ends_with("/oauth2/v2.0/token") {
                return axum::Json(serde_json::json!({
                    "access_token": "x.e30.y", "expires_in": 3599, "token_type": "Bearer"
                }))
                .into_response();
            }
            Response::builder()
                .status(status)
                .header(header::LOCATION, format!("{target}{uri}"))
                .body(axum::body::Body::empty())
                .unwrap()
        }
    }))
    .await
}

fn client(login: &str, graph: &str) -> GraphClient {
    let settings = GraphSettings {
        login_url: Some(login.to_owned()),
        graph_url: Some(graph.to_owned()),
        request_timeout: Duration::from_secs(10),
        pacing: PacingConfig::disabled(),
        replication_retry: RetryPolicy::fast(2, Duration::from_millis(5)),
        transient_retry: RetryPolicy::fast(2, Duration::from_millis(5)),
        ..GraphSettings::default()
    };
    let credentials = Credentials::with_secret(
        "contoso.onmicrosoft.com",
        "11111111-1111-1111-1111-111111111111",
        SecretString::from(SECRET),
    );
    GraphClient::with_shared(settings, credentials, SharedState::isolated()).unwrap()
}

fn host_of(url: &str) -> &str {
    url.trim_start_matches("http://")
}

#[tokio::test]
async fn a_redirect_from_the_token_endpoint_is_not_followed() {
    for status in [
        StatusCode::FOUND,
        StatusCode::TEMPORARY_REDIRECT,
        StatusCode::PERMANENT_REDIRECT,
    ] {
        let seen = Arc::new(Seen::default());
        let target = catcher(seen.clone()).await;
        let login = redirector(status, target.clone(), false).await;
        let c = client(&login, &login);
        let e = c.authenticate().await.unwrap_err();
        let GraphError::Auth(AuthError::Redirected { status: got, .. }) = &e else {
            panic!("{status}: {e:?}");
        };
        assert_eq!(*got, status.as_u16());
        let text = e.to_string();
        assert!(text.contains(&login), "names the login host: {text}");
        assert!(text.contains(host_of(&target)), "names the target: {text}");
        assert!(text.contains("login_url"), "names the fix: {text}");
        assert!(!text.contains(SECRET), "{text}");
        assert!(
            !seen.contacted.load(Ordering::SeqCst),
            "{status}: target contacted"
        );
        assert!(
            !seen.client_secret.load(Ordering::SeqCst),
            "{status}: secret sent"
        );
    }
}

#[tokio::test]
async fn a_redirect_from_graph_is_not_followed() {
    for status in [StatusCode::FOUND, StatusCode::TEMPORARY_REDIRECT] {
        let seen = Arc::new(Seen::default());
        let target = catcher(seen.clone()).await;
        let graph = redirector(status, target.clone(), true).await;
        let c = client(&graph, &graph);
        let e = c.organization().await.unwrap_err();
        assert!(
            matches!(e, GraphError::BadRequest { .. }),
            "{status}: {e:?}"
        );
        assert_eq!(e.status(), Some(status.as_u16()));
        assert!(!e.is_retryable());
        let text = e.to_string();
        assert!(text.contains(&graph), "names the Graph host: {text}");
        assert!(text.contains(host_of(&target)), "names the target: {text}");
        assert!(text.contains("graph_url"), "names the fix: {text}");
        assert!(
            !seen.contacted.load(Ordering::SeqCst),
            "{status}: target contacted"
        );
        assert!(
            !seen.authorization.load(Ordering::SeqCst),
            "{status}: token sent"
        );
    }
}
