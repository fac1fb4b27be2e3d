//! What goes on the wire, checked with a minimal raw HTTP listener: token form, headers on Graph
//! requests (User-Agent, client-request-id, throttle priority, bearer) and no secret in them.

// The capture server is test code outside a #[test] fn; a broken socket should fail the test.
#![allow(clippy::unwrap_used)]

use std::sync::{Arc, Mutex};

use m365_graph::{GraphSettings, PacingConfig};
use m365_integration_tests::graph_client::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// Serves `Connection: close` responses: token requests get a token, anything else `{"value":[]}`.
/// Returns the base URL and the raw requests seen.
async fn capture_server() -> (String, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            let log = log.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    let n = sock.read(&mut chunk).await.unwrap_or(0);
                    if n == 0 {
                        break;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    let text = String::from_utf8_lossy(&buf).to_string();
                    if let Some(end) = text.find("\r\n\r\n") {
                        let len = text[..end]
                            .lines()
                            .find_map(|l| {
                                let (k, v) = l.split_once(':')?;
                                k.eq_ignore_ascii_case("content-length")
                                    .then(|| v.trim().parse::<usize>().ok())?
                            })
                            .unwrap_or(0);
                        if buf.len() >= end + 4 + len {
                            break;
                        }
                    }
                }
                let text = String::from_utf8_lossy(&buf).to_string();
                let body = if text.contains("/oauth2/v2.0/token") {
                    r#"{"token_type":"Bearer","expires_in":3599,"access_token":"aaa.eyJyb2xlcyI6W119.sig"}"#
                } else {
                    r#"{"value":[]}"#
                };
                log.lock().unwrap().push(text);
                let resp = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = sock.write_all(resp.as_bytes()).await;
                let _ = sock.shutdown().await;
            });
        }
    });
    (base, seen)
}

#[tokio::test]
async fn token_form_and_graph_headers() {
    let (base, seen) = capture_server().await;
    let settings = GraphSettings {
        pacing: PacingConfig::disabled(),
        ..GraphSettings::for_local(&base)
    };
    let c = client_with(settings, demo_credentials());
    let domains = c.domains().await.unwrap();
    assert!(domains.is_empty());
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 2, "one token request, one Graph request");

    let token = &seen[0];
    assert!(token.starts_with(&format!(
        "POST /{}/oauth2/v2.0/token HTTP/1.1",
        m365_sandbox::demo::TENANT_ID
    )));
    assert!(
        token
            .to_ascii_lowercase()
            .contains("content-type: application/x-www-form-urlencoded")
    );
    assert!(token.contains("grant_type=client_credentials"));
    assert!(token.contains("scope=https%3A%2F%2Fgraph.microsoft.com%2F.default"));

    let graph = &seen[1];
    let lower = graph.to_ascii_lowercase();
    assert!(graph.starts_with("GET /v1.0/domains HTTP/1.1"), "{graph}");
    assert!(lower.contains("authorization: bearer aaa.eyjyb2xlcyi6w119.sig"));
    assert!(lower.contains("user-agent: m365-provisioner/"));
    assert!(lower.contains("x-ms-throttle-priority: low"));
    let crid = graph
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("client-request-id: ")
                .map(str::to_string)
        })
        .expect("client-request-id header");
    assert!(uuid_like(&crid), "{crid}");
    assert!(!graph.contains(m365_sandbox::demo::CLIENT_SECRET));
}

#[tokio::test]
async fn foreground_clients_send_no_low_priority() {
    let (base, seen) = capture_server().await;
    let settings = GraphSettings {
        background_priority: false,
        pacing: PacingConfig::disabled(),
        ..GraphSettings::for_local(&base)
    };
    client_with(settings, demo_credentials())
        .domains()
        .await
        .unwrap();
    let seen = seen.lock().unwrap().clone();
    assert!(
        !seen[1]
            .to_ascii_lowercase()
            .contains("x-ms-throttle-priority")
    );
}

fn uuid_like(s: &str) -> bool {
    let s = s.trim();
    s.len() == 36 && s.chars().filter(|c| *c == '-').count() == 4
}
