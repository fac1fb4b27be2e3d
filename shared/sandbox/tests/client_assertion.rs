//! Certificate credentials at the sandbox's token endpoint: a client assertion signed with a
//! registered certificate's key gets a token; everything Entra refuses is refused with its
//! AADSTS code (shared/sandbox/src/assertion.rs).

// Integration tests: helpers panic on broken expectations.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use aws_lc_rs::signature::{RSA_PKCS1_SHA256, RSA_PSS_SHA256, RsaEncoding, RsaKeyPair};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use common::*;
use m365_sandbox::{RunningSandbox, Sandbox, SandboxConfig, demo};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivatePkcs8KeyDer};
use serde_json::{Value, json};

const CERT: &str = include_str!("../../../tests/fixtures/certs/app.crt.pem");
const KEY: &str = include_str!("../../../tests/fixtures/certs/app.key.pem");
const OTHER_CERT: &str = include_str!("../../../tests/fixtures/certs/other.crt.pem");
const OTHER_KEY: &str = include_str!("../../../tests/fixtures/certs/other.key.pem");
const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
const SCOPE: &str = "https://graph.microsoft.com/.default";
/// A certificate-only app (no client secret).
const CERT_APP: &str = "7d2e4c1a-9b3f-4a65-8e07-1f2a3b4c5d6e";

fn thumbprint(pem: &str, algorithm: &'static aws_lc_rs::digest::Algorithm) -> String {
    let der = CertificateDer::from_pem_slice(pem.as_bytes()).unwrap();
    URL_SAFE_NO_PAD.encode(aws_lc_rs::digest::digest(algorithm, der.as_ref()))
}

fn s256(pem: &str) -> String {
    thumbprint(pem, &aws_lc_rs::digest::SHA256)
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// Signs `header`.`claims` with `key_pem` (RS256 or PS256 by the header's `alg`; anything else
/// is signed RS256 regardless).
fn sign(header: &Value, claims: &Value, key_pem: &str) -> String {
    let input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let der = PrivatePkcs8KeyDer::from_pem_slice(key_pem.as_bytes()).unwrap();
    let key = RsaKeyPair::from_pkcs8(der.secret_pkcs8_der()).unwrap();
    let encoding: &'static dyn RsaEncoding = if header["alg"] == "PS256" {
        &RSA_PSS_SHA256
    } else {
        &RSA_PKCS1_SHA256
    };
    let mut signature = vec![0; key.public_modulus_len()];
    key.sign(
        encoding,
        &aws_lc_rs::rand::SystemRandom::new(),
        input.as_bytes(),
        &mut signature,
    )
    .unwrap();
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature))
}

struct Tenant {
    rs: RunningSandbox,
}

impl Tenant {
    async fn start() -> Tenant {
        let mut config = SandboxConfig::demo();
        config.seed.apps[0].certificates.push(CERT.to_owned());
        let mut cert_only = config.seed.apps[0].clone();
        cert_only.client_id = CERT_APP.to_owned();
        cert_only.client_secret = String::new();
        config.seed.apps.push(cert_only);
        Tenant {
            rs: Sandbox::new(config).start().await.unwrap(),
        }
    }

    fn token_url(&self) -> String {
        format!(
            "{}/{}/oauth2/v2.0/token",
            self.rs.base_url(),
            demo::INITIAL_DOMAIN
        )
    }

    fn header(&self) -> Value {
        json!({"alg": "RS256", "typ": "JWT", "x5t#S256": s256(CERT)})
    }

    fn claims(&self, client_id: &str) -> Value {
        let now = now();
        json!({
            "aud": self.token_url(), "iss": client_id, "sub": client_id,
            "jti": uuid::Uuid::new_v4().to_string(),
            "nbf": now, "iat": now, "exp": now + 600,
        })
    }

    async fn post(&self, form: &[(&str, &str)]) -> (u16, Value) {
        let r = client()
            .post(self.token_url())
            .form(form)
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.json().await.unwrap())
    }

    /// A token request of `client_id` with `assertion` (and the JWT bearer type).
    async fn with_assertion(&self, client_id: &str, assertion: &str) -> (u16, Value) {
        self.post(&[
            ("client_id", client_id),
            ("scope", SCOPE),
            ("grant_type", "client_credentials"),
            ("client_assertion_type", JWT_BEARER),
            ("client_assertion", assertion),
        ])
        .await
    }
}

fn assert_aad(status: u16, body: &Value, want_status: u16, error: &str, code: u64, text: &str) {
    assert_eq!(status, want_status, "{body}");
    assert_eq!(body["error"], error, "{body}");
    assert_eq!(body["error_codes"][0], code, "{body}");
    let desc = body["error_description"].as_str().unwrap();
    assert!(desc.starts_with(&format!("AADSTS{code}: ")), "{desc}");
    assert!(desc.contains(text), "{desc}");
}

#[tokio::test]
async fn a_registered_certificates_assertion_gets_a_token_that_graph_accepts() {
    let t = Tenant::start().await;
    for alg in ["RS256", "PS256"] {
        let mut header = t.header();
        header["alg"] = json!(alg);
        let jwt = sign(&header, &t.claims(demo::CLIENT_ID), KEY);
        let (status, body) = t.with_assertion(demo::CLIENT_ID, &jwt).await;
        assert_eq!(status, 200, "{alg}: {body}");
        assert_eq!(body["token_type"], "Bearer");
        let token = body["access_token"].as_str().unwrap();
        let r = client()
            .get(format!("{}/v1.0/users", t.rs.base_url()))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    // The SHA-1 `x5t` names a certificate too; a certificate-only app gets a token.
    let header = json!({"alg": "RS256", "typ": "JWT",
        "x5t": thumbprint(CERT, &aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY)});
    let (status, body) = t
        .with_assertion(CERT_APP, &sign(&header, &t.claims(CERT_APP), KEY))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(t.rs.sandbox().stats().tokens_issued, 3);
}

#[tokio::test]
async fn the_assertion_type_must_be_the_jwt_bearer_type() {
    let t = Tenant::start().await;
    let jwt = sign(&t.header(), &t.claims(demo::CLIENT_ID), KEY);
    let base = [
        ("client_id", demo::CLIENT_ID),
        ("scope", SCOPE),
        ("grant_type", "client_credentials"),
        ("client_assertion", jwt.as_str()),
    ];
    let (s, b) = t.post(&base).await;
    assert_aad(
        s,
        &b,
        400,
        "invalid_request",
        900144,
        "'client_assertion_type'",
    );
    let mut wrong = base.to_vec();
    wrong.push((
        "client_assertion_type",
        "urn:ietf:params:oauth:client-assertion-type:saml2-bearer",
    ));
    let (s, b) = t.post(&wrong).await;
    assert_aad(
        s,
        &b,
        400,
        "invalid_request",
        90011,
        "Unexpected client assertion type",
    );
}

#[tokio::test]
async fn malformed_and_unsigned_assertions_are_invalid_jwts() {
    let t = Tenant::start().await;
    let claims = t.claims(demo::CLIENT_ID);
    let unsigned = format!(
        "{}.{}.",
        URL_SAFE_NO_PAD
            .encode(json!({"alg": "none", "typ": "JWT", "x5t#S256": s256(CERT)}).to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let mut hs = t.header();
    hs["alg"] = json!("HS256");
    let mut aud_array = claims.clone();
    aud_array["aud"] = json!([t.token_url()]);
    for bad in [
        "not-a-jwt".to_owned(),
        "a.b.c".to_owned(),
        unsigned,
        sign(&hs, &claims, KEY),
        sign(&t.header(), &aud_array, KEY),
    ] {
        let (s, b) = t.with_assertion(demo::CLIENT_ID, &bad).await;
        assert_aad(
            s,
            &b,
            400,
            "invalid_request",
            50027,
            "JWT token is invalid or malformed.",
        );
    }
}

#[tokio::test]
async fn unregistered_certificates_and_bad_signatures_are_700027() {
    let t = Tenant::start().await;
    let claims = t.claims(demo::CLIENT_ID);
    // Signed by a certificate that is not registered on the app.
    let other = json!({"alg": "RS256", "typ": "JWT", "x5t#S256": s256(OTHER_CERT)});
    let (s, b) = t
        .with_assertion(demo::CLIENT_ID, &sign(&other, &claims, OTHER_KEY))
        .await;
    assert_aad(
        s,
        &b,
        401,
        "invalid_client",
        700027,
        "The certificate with identifier used to sign the client assertion is not registered on application",
    );
    assert!(
        b["error_description"]
            .as_str()
            .unwrap()
            .contains(&s256(OTHER_CERT))
    );
    // The readonly app has no certificate at all.
    let (s, b) = t
        .with_assertion(
            demo::READONLY_CLIENT_ID,
            &sign(&t.header(), &t.claims(demo::READONLY_CLIENT_ID), KEY),
        )
        .await;
    assert_aad(s, &b, 401, "invalid_client", 700027, "not registered");
    // Naming the registered certificate but signed with another key.
    let (s, b) = t
        .with_assertion(demo::CLIENT_ID, &sign(&t.header(), &claims, OTHER_KEY))
        .await;
    assert_aad(
        s,
        &b,
        401,
        "invalid_client",
        700027,
        "Client assertion failed signature validation",
    );
    // A valid signature over other claims than the ones sent.
    let good = sign(&t.header(), &claims, KEY);
    let (input, signature) = good.rsplit_once('.').unwrap();
    let (header, _) = input.split_once('.').unwrap();
    let mut changed = claims.clone();
    changed["exp"] = json!(now() + 86_400);
    let forged = format!(
        "{header}.{}.{signature}",
        URL_SAFE_NO_PAD.encode(changed.to_string())
    );
    let (s, b) = t.with_assertion(demo::CLIENT_ID, &forged).await;
    assert_aad(s, &b, 401, "invalid_client", 700027, "signature validation");
    // PS256 declared, RS256 signature.
    let mut ps = t.header();
    ps["alg"] = json!("PS256");
    let rs_signed = sign(&t.header(), &claims, KEY);
    let (_, rs_sig) = rs_signed.rsplit_once('.').unwrap();
    let mixed = format!(
        "{}.{}.{rs_sig}",
        URL_SAFE_NO_PAD.encode(ps.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let (s, b) = t.with_assertion(demo::CLIENT_ID, &mixed).await;
    assert_aad(s, &b, 401, "invalid_client", 700027, "signature validation");
    assert_eq!(t.rs.sandbox().stats().tokens_issued, 0);
}

#[tokio::test]
async fn claims_must_name_the_client_the_endpoint_and_now() {
    let t = Tenant::start().await;
    let with = |change: &dyn Fn(&mut Value)| {
        let mut claims = t.claims(demo::CLIENT_ID);
        change(&mut claims);
        sign(&t.header(), &claims, KEY)
    };
    let cases: Vec<(String, u64, &str)> = vec![
        (
            with(&|c| c["iss"] = json!(demo::READONLY_CLIENT_ID)),
            700021,
            "Client assertion application identifier doesn't match 'client_id' parameter",
        ),
        (
            with(&|c| c["sub"] = json!("someone-else")),
            700021,
            "doesn't match 'client_id'",
        ),
        (
            with(&|c| {
                c["aud"] = json!(format!(
                    "https://login.microsoftonline.com/{}/oauth2/v2.0/token",
                    demo::INITIAL_DOMAIN
                ))
            }),
            700023,
            "Client assertion audience claim does not match Realm issuer",
        ),
        (
            with(&|c| {
                c["exp"] = json!(now() - 3600);
                c["nbf"] = json!(now() - 4200);
            }),
            700024,
            "Client assertion is not within its valid time range",
        ),
        (
            with(&|c| {
                c["nbf"] = json!(now() + 3600);
                c["exp"] = json!(now() + 4200);
            }),
            700024,
            "not within its valid time range",
        ),
    ];
    for (jwt, code, text) in cases {
        let (s, b) = t.with_assertion(demo::CLIENT_ID, &jwt).await;
        assert_aad(s, &b, 401, "invalid_client", code, text);
    }
    // Within the five minutes of skew either way: accepted.
    let skewed = with(&|c| {
        c["nbf"] = json!(now() + 120);
        c["exp"] = json!(now() - 120);
    });
    let (s, b) = t.with_assertion(demo::CLIENT_ID, &skewed).await;
    assert_eq!(s, 200, "{b}");
}

#[tokio::test]
async fn a_secret_and_an_assertion_together_are_refused_and_secrets_still_work() {
    let t = Tenant::start().await;
    let jwt = sign(&t.header(), &t.claims(demo::CLIENT_ID), KEY);
    let (s, b) = t
        .post(&[
            ("client_id", demo::CLIENT_ID),
            ("scope", SCOPE),
            ("grant_type", "client_credentials"),
            ("client_secret", demo::CLIENT_SECRET),
            ("client_assertion_type", JWT_BEARER),
            ("client_assertion", jwt.as_str()),
        ])
        .await;
    assert_aad(s, &b, 400, "invalid_request", 90011, "not both");
    // The app's secret alone still works; a certificate-only app has no secret to match.
    let token = token_for(
        &client(),
        t.rs.base_url(),
        demo::CLIENT_ID,
        demo::CLIENT_SECRET,
    )
    .await;
    assert!(!token.is_empty());
    let (s, b) = t
        .post(&[
            ("client_id", CERT_APP),
            ("scope", SCOPE),
            ("grant_type", "client_credentials"),
            ("client_secret", demo::CLIENT_SECRET),
        ])
        .await;
    assert_aad(
        s,
        &b,
        401,
        "invalid_client",
        7000215,
        "Invalid client secret",
    );
}

#[tokio::test]
async fn certificates_added_at_run_time_are_accepted() {
    let rs = Sandbox::demo().start().await.unwrap();
    let t = Tenant { rs };
    let jwt = sign(&t.header(), &t.claims(demo::READONLY_CLIENT_ID), KEY);
    let (s, _) = t.with_assertion(demo::READONLY_CLIENT_ID, &jwt).await;
    assert_eq!(s, 401);
    assert!(
        t.rs.sandbox()
            .add_certificate(demo::READONLY_CLIENT_ID, CERT)
    );
    assert!(!t.rs.sandbox().add_certificate("no-such-app", CERT));
    let (s, b) = t.with_assertion(demo::READONLY_CLIENT_ID, &jwt).await;
    assert_eq!(s, 200, "{b}");
    let shown = format!("{:?}", t.rs.sandbox().apps());
    assert!(!shown.contains(demo::READONLY_CLIENT_SECRET), "{shown}");
}
