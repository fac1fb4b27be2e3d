//! Certificate credentials: the token request proves the app's identity with a client assertion,
//! a JWT signed with the certificate's private key, instead of a client secret
//! (<https://learn.microsoft.com/en-us/entra/identity-platform/certificate-credentials>).
//!
//! The assertion's header is `{"alg": "RS256" | "PS256", "typ": "JWT", "x5t#S256": …}`, the
//! thumbprint being base64url(SHA-256 of the certificate's DER); its claims are `aud` (the token
//! endpoint URL the request is posted to), `iss` = `sub` = the client id, a fresh `jti`, and
//! `nbf` = `iat` = now, `exp` = now + [`ASSERTION_LIFETIME_SECS`]. A new assertion is signed for
//! every token request.
//!
//! [`CertificateCredential::from_pem`] parses and checks everything up front, so that a bad
//! certificate or key is a configuration error before any request: the certificate must be
//! X.509 PEM, the key an unencrypted RSA key (PKCS#8 or PKCS#1 PEM) of 2048 to 8192 bits, and the
//! key must be the certificate's (a test signature is verified against the certificate). Errors
//! name the part and the fix and never carry key material. The PEM text arrives in a
//! [`SecretString`] and is dropped once parsed; the parsed key lives inside `aws-lc-rs` (freed on
//! drop) and is never shown by `Debug`.

use std::fmt;
use std::sync::Arc;

use aws_lc_rs::signature::{RSA_PKCS1_SHA256, RSA_PSS_SHA256, RsaEncoding, RsaKeyPair};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use m365_core::secrets::{AssertionAlgorithm, CertificateSecret};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use secrecy::{ExposeSecret, SecretString};
use serde_json::json;

/// `client_assertion_type` of a JWT client assertion (RFC 7523).
pub const ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
/// How long a signed assertion is valid (Microsoft's examples use 10 minutes).
pub const ASSERTION_LIFETIME_SECS: i64 = 600;

/// The command that turns a PKCS#1 or other key into the PKCS#8 form this client reads.
const TO_PKCS8: &str = "openssl pkcs8 -topk8 -nocrypt -in key.pem -out key.pkcs8.pem";

/// Why a certificate or its key cannot be used. Names the part and the fix, never the content.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CertificateError {
    #[error(
        "the certificate is not a PEM certificate (no -----BEGIN CERTIFICATE----- block): store the certificate file's text, the public part uploaded to the app registration"
    )]
    CertificateNotPem,
    #[error(
        "the certificate is not a valid X.509 certificate: export it again, e.g. openssl x509 -in cert.pem -out cert.pem"
    )]
    CertificateInvalid,
    #[error(
        "the private key is encrypted: store it unencrypted, e.g. {TO_PKCS8} (the secret store protects it)"
    )]
    KeyEncrypted,
    #[error(
        "the private key is not a PEM private key (no -----BEGIN PRIVATE KEY----- or -----BEGIN RSA PRIVATE KEY----- block): store the key file's text; convert other forms with {TO_PKCS8}"
    )]
    KeyNotPem,
    #[error(
        "the private key is an EC key: client assertions here are RS256 or PS256 and need an RSA key of 2048 bits or more; create an RSA certificate (docs/operations.md#certificate-credentials)"
    )]
    KeyNotRsa,
    #[error(
        "the private key was refused ({reason}): it must be an RSA key of 2048 to 8192 bits in PKCS#8 or PKCS#1 PEM; convert it with {TO_PKCS8}"
    )]
    KeyRejected { reason: &'static str },
    #[error(
        "the private key does not belong to the certificate (a signature made with it does not verify against the certificate's public key): store the key the certificate was made with"
    )]
    KeyDoesNotMatch,
    #[error("signing the client assertion failed")]
    SigningFailed,
}

impl CertificateError {
    /// The secret key (`m365_core::secrets`) holding the part at fault.
    pub fn secret_key(&self) -> &'static str {
        match self {
            CertificateError::CertificateNotPem | CertificateError::CertificateInvalid => {
                m365_core::secrets::CLIENT_CERTIFICATE_PEM
            }
            _ => m365_core::secrets::CLIENT_PRIVATE_KEY_PEM,
        }
    }
}

/// A certificate and its private key, checked, ready to sign client assertions. Cheap to clone.
#[derive(Clone)]
pub struct CertificateCredential {
    inner: Arc<Inner>,
}

struct Inner {
    /// base64url(SHA-256 of the certificate's DER), the `x5t#S256` header.
    thumbprint_s256: String,
    key: RsaKeyPair,
    algorithm: AssertionAlgorithm,
}

impl fmt::Debug for CertificateCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertificateCredential")
            .field("x5t#S256", &self.inner.thumbprint_s256)
            .field("algorithm", &self.inner.algorithm)
            .field("private_key", &"[REDACTED]")
            .finish()
    }
}

impl CertificateCredential {
    /// Parses and checks a certificate (PEM) and its RSA private key (PKCS#8 or PKCS#1 PEM).
    pub fn from_pem(
        certificate_pem: &str,
        private_key_pem: &SecretString,
        algorithm: AssertionAlgorithm,
    ) -> Result<Self, CertificateError> {
        let certificate = CertificateDer::from_pem_slice(certificate_pem.as_bytes())
            .map_err(|_| CertificateError::CertificateNotPem)?;
        let end_entity = webpki::EndEntityCert::try_from(&certificate)
            .map_err(|_| CertificateError::CertificateInvalid)?;
        let key = parse_key(private_key_pem)?;
        // The key must be the certificate's: sign a probe and verify it with the certificate.
        let probe = b"m365-provisioner certificate and key check";
        let signature = sign(&key, &RSA_PKCS1_SHA256, probe)?;
        end_entity
            .verify_signature(
                webpki::aws_lc_rs::RSA_PKCS1_2048_8192_SHA256,
                probe,
                &signature,
            )
            .map_err(|_| CertificateError::KeyDoesNotMatch)?;
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, certificate.as_ref());
        Ok(CertificateCredential {
            inner: Arc::new(Inner {
                thumbprint_s256: URL_SAFE_NO_PAD.encode(digest.as_ref()),
                key,
                algorithm,
            }),
        })
    }

    /// [`Self::from_pem`] of a stored certificate credential.
    pub fn from_secret(secret: &CertificateSecret) -> Result<Self, CertificateError> {
        Self::from_pem(
            &secret.certificate_pem,
            &secret.private_key_pem,
            secret.algorithm,
        )
    }

    /// The `x5t#S256` thumbprint: base64url(SHA-256 of the certificate's DER).
    pub fn thumbprint_s256(&self) -> &str {
        &self.inner.thumbprint_s256
    }

    /// The signature algorithm of the assertions.
    pub fn algorithm(&self) -> AssertionAlgorithm {
        self.inner.algorithm
    }

    /// A client assertion for `client_id` at the token endpoint `audience`, valid from `now`
    /// (seconds since the epoch) for [`ASSERTION_LIFETIME_SECS`].
    pub fn assertion(
        &self,
        client_id: &str,
        audience: &str,
        now: i64,
    ) -> Result<SecretString, CertificateError> {
        let header = json!({
            "alg": self.inner.algorithm.as_str(),
            "typ": "JWT",
            "x5t#S256": self.inner.thumbprint_s256,
        });
        let claims = json!({
            "aud": audience,
            "iss": client_id,
            "sub": client_id,
            "jti": uuid::Uuid::new_v4().to_string(),
            "nbf": now,
            "iat": now,
            "exp": now + ASSERTION_LIFETIME_SECS,
        });
        let signing_input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let encoding: &'static dyn RsaEncoding = match self.inner.algorithm {
            AssertionAlgorithm::Rs256 => &RSA_PKCS1_SHA256,
            AssertionAlgorithm::Ps256 => &RSA_PSS_SHA256,
        };
        let signature = sign(&self.inner.key, encoding, signing_input.as_bytes())?;
        Ok(SecretString::from(format!(
            "{signing_input}.{}",
            URL_SAFE_NO_PAD.encode(signature)
        )))
    }

    /// Whether `other` is the same certificate and algorithm (its key is the certificate's).
    pub(crate) fn same_as(&self, other: &CertificateCredential) -> bool {
        self.inner.thumbprint_s256 == other.inner.thumbprint_s256
            && self.inner.algorithm == other.inner.algorithm
    }
}

/// The RSA key of a PEM: PKCS#8 or PKCS#1, unencrypted. Only PEM block labels are inspected
/// for messages, never the key's content.
fn parse_key(pem: &SecretString) -> Result<RsaKeyPair, CertificateError> {
    let text = pem.expose_secret();
    let has_label = |label: &str| text.contains(&format!("-----BEGIN {label}-----"));
    if has_label("ENCRYPTED PRIVATE KEY") || text.contains("Proc-Type: 4,ENCRYPTED") {
        return Err(CertificateError::KeyEncrypted);
    }
    if has_label("EC PRIVATE KEY") {
        return Err(CertificateError::KeyNotRsa);
    }
    let der =
        PrivateKeyDer::from_pem_slice(text.as_bytes()).map_err(|_| CertificateError::KeyNotPem)?;
    let parsed = match &der {
        PrivateKeyDer::Pkcs8(k) => RsaKeyPair::from_pkcs8(k.secret_pkcs8_der()),
        PrivateKeyDer::Pkcs1(k) => RsaKeyPair::from_der(k.secret_pkcs1_der()),
        PrivateKeyDer::Sec1(_) => return Err(CertificateError::KeyNotRsa),
        _ => return Err(CertificateError::KeyNotPem),
    };
    parsed.map_err(|e| CertificateError::KeyRejected {
        reason: e.description_(),
    })
}

fn sign(
    key: &RsaKeyPair,
    encoding: &'static dyn RsaEncoding,
    message: &[u8],
) -> Result<Vec<u8>, CertificateError> {
    let mut signature = vec![0; key.public_modulus_len()];
    key.sign(
        encoding,
        &aws_lc_rs::rand::SystemRandom::new(),
        message,
        &mut signature,
    )
    .map_err(|_| CertificateError::SigningFailed)?;
    Ok(signature)
}

#[cfg(test)]
mod tests {
    use super::*;

    const CERT: &str = include_str!("../../../tests/fixtures/certs/app.crt.pem");
    const KEY: &str = include_str!("../../../tests/fixtures/certs/app.key.pem");
    const KEY_PKCS1: &str = include_str!("../../../tests/fixtures/certs/app.rsa-key.pem");
    const OTHER_KEY: &str = include_str!("../../../tests/fixtures/certs/other.key.pem");
    /// `openssl x509 -in app.crt.pem -outform DER | openssl dgst -sha256 -binary | base64url`
    /// (tests/fixtures/certs/README.md): computed outside this code.
    const THUMBPRINT: &str = "3-fSv67gKuFGu4LZSAKvPDM8n5rJWW6kF6mYLIFJkNU";
    const AUD: &str = "http://127.0.0.1:9/contoso.onmicrosoft.com/oauth2/v2.0/token";

    fn credential(algorithm: AssertionAlgorithm) -> CertificateCredential {
        CertificateCredential::from_pem(CERT, &SecretString::from(KEY), algorithm).unwrap()
    }

    fn decode(part: &str) -> serde_json::Value {
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).unwrap()).unwrap()
    }

    #[test]
    fn assertion_header_and_claims_have_entras_shape() {
        let c = credential(AssertionAlgorithm::Rs256);
        assert_eq!(c.thumbprint_s256(), THUMBPRINT);
        let jwt = c.assertion("client-1", AUD, 1_700_000_000).unwrap();
        let parts: Vec<&str> = jwt.expose_secret().split('.').collect();
        assert_eq!(parts.len(), 3);
        assert_eq!(
            decode(parts[0]),
            json!({"alg": "RS256", "typ": "JWT", "x5t#S256": THUMBPRINT})
        );
        let claims = decode(parts[1]);
        assert_eq!(claims["aud"], AUD);
        assert_eq!(claims["iss"], "client-1");
        assert_eq!(claims["sub"], "client-1");
        assert_eq!(claims["nbf"], 1_700_000_000);
        assert_eq!(claims["iat"], 1_700_000_000);
        assert_eq!(claims["exp"], 1_700_000_600);
        let jti = claims["jti"].as_str().unwrap();
        assert_eq!(uuid::Uuid::parse_str(jti).unwrap().get_version_num(), 4);
        let again = c.assertion("client-1", AUD, 1_700_000_000).unwrap();
        assert_ne!(
            decode(again.expose_secret().split('.').nth(1).unwrap())["jti"],
            jti
        );
    }

    #[test]
    fn signatures_verify_against_the_certificate_with_either_algorithm() {
        let cert = CertificateDer::from_pem_slice(CERT.as_bytes()).unwrap();
        let ee = webpki::EndEntityCert::try_from(&cert).unwrap();
        for (algorithm, name, verifier) in [
            (
                AssertionAlgorithm::Rs256,
                "RS256",
                webpki::aws_lc_rs::RSA_PKCS1_2048_8192_SHA256,
            ),
            (
                AssertionAlgorithm::Ps256,
                "PS256",
                webpki::aws_lc_rs::RSA_PSS_2048_8192_SHA256_LEGACY_KEY,
            ),
        ] {
            let jwt = credential(algorithm).assertion("c", AUD, 1).unwrap();
            let (input, signature) = jwt.expose_secret().rsplit_once('.').unwrap();
            assert_eq!(decode(input.split('.').next().unwrap())["alg"], name);
            let signature = URL_SAFE_NO_PAD.decode(signature).unwrap();
            ee.verify_signature(verifier, input.as_bytes(), &signature)
                .unwrap();
            // A changed claim no longer verifies.
            let tampered = input.replacen('.', ".e", 1);
            assert!(
                ee.verify_signature(verifier, tampered.as_bytes(), &signature)
                    .is_err()
            );
        }
    }

    #[test]
    fn a_pkcs1_key_is_read_as_well() {
        let c = CertificateCredential::from_pem(
            CERT,
            &SecretString::from(KEY_PKCS1),
            AssertionAlgorithm::Rs256,
        )
        .unwrap();
        assert_eq!(c.thumbprint_s256(), THUMBPRINT);
    }

    #[test]
    fn bad_certificates_and_keys_are_named_never_shown() {
        let key = SecretString::from(KEY);
        let rs = AssertionAlgorithm::Rs256;
        let cases: Vec<(
            Result<CertificateCredential, CertificateError>,
            CertificateError,
        )> = vec![
            (
                CertificateCredential::from_pem("not a certificate", &key, rs),
                CertificateError::CertificateNotPem,
            ),
            (
                CertificateCredential::from_pem(
                    "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
                    &key,
                    rs,
                ),
                CertificateError::CertificateInvalid,
            ),
            (
                CertificateCredential::from_pem(CERT, &SecretString::from(CERT), rs),
                CertificateError::KeyNotPem,
            ),
            (
                CertificateCredential::from_pem(
                    CERT,
                    &SecretString::from(
                        "-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n",
                    ),
                    rs,
                ),
                CertificateError::KeyEncrypted,
            ),
            (
                CertificateCredential::from_pem(CERT, &SecretString::from(OTHER_KEY), rs),
                CertificateError::KeyDoesNotMatch,
            ),
        ];
        for (result, expected) in cases {
            let error = result.unwrap_err();
            assert_eq!(error, expected);
            let message = error.to_string();
            assert!(!message.contains("PRIVATE KEY-----\nMII"), "{message}");
        }
        assert!(
            CertificateError::KeyNotPem
                .to_string()
                .contains("openssl pkcs8 -topk8 -nocrypt")
        );
    }

    #[test]
    fn debug_never_shows_the_private_key() {
        let c = credential(AssertionAlgorithm::Ps256);
        let shown = format!("{c:?} {c:#?}");
        assert!(shown.contains(THUMBPRINT), "{shown}");
        assert!(shown.contains("REDACTED"), "{shown}");
        let body: String = KEY.lines().nth(1).unwrap().to_owned();
        assert!(!shown.contains(&body), "{shown}");
        assert!(!shown.contains("public_key"), "{shown}");
    }
}
