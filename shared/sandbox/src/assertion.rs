//! Validation of client assertions at the token endpoint, as Entra validates them
//! (<https://learn.microsoft.com/en-us/entra/identity-platform/certificate-credentials>): a JWT
//! whose header names a certificate registered on the app (`x5t#S256`, or the older SHA-1
//! `x5t`), signed RS256 or PS256 with that certificate's key, with `iss` = `sub` = the client id,
//! `aud` = the token endpoint URL the request was posted to, and `nbf` / `exp` around now.
//!
//! The checks run in this order, each refused with Entra's AADSTS code and text (sources on each
//! function): the assertion type, the JWT's form (50027), the certificate (700027), the
//! signature (700027), the client id (700021), the audience (700023), the time range (700024).
//! The order among the codes is this sandbox's choice; Entra does not document it. Signatures
//! are verified with the certificate's public key by `rustls-webpki`; `alg` values other than
//! RS256 and PS256 (`none`, HS256, …) are malformed tokens.

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use http::StatusCode;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use serde_json::{Map, Value};

use crate::config::AppSeed;
use crate::token::{AadError, missing_parameter};

/// The only `client_assertion_type` Entra accepts (RFC 7523).
pub(crate) const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
/// Clock skew allowed on `nbf` and `exp` (the 5 minutes of Microsoft's token validation default,
/// <https://learn.microsoft.com/en-us/dotnet/api/microsoft.identitymodel.tokens.tokenvalidationparameters.defaultclockskew>).
const SKEW_SECS: i64 = 300;
/// Where Entra's messages send the reader.
const DOCS: &str = "https://learn.microsoft.com/entra/identity-platform/certificate-credentials";

/// One assertion check: for which client, at which token URL, at which time.
pub(crate) struct AssertionCheck<'a> {
    pub client_id: &'a str,
    pub token_url: &'a str,
    pub now: i64,
}

/// A parsed JWT: its header, claims, signing input and signature.
struct Jwt<'a> {
    header: Map<String, Value>,
    claims: Map<String, Value>,
    signing_input: &'a str,
    signature: Vec<u8>,
}

impl AssertionCheck<'_> {
    /// Accepts `assertion` for `app`, or answers Entra's error.
    pub(crate) fn run(
        &self,
        app: &AppSeed,
        assertion: &str,
        assertion_type: Option<&str>,
    ) -> Result<(), AadError> {
        check_type(assertion_type)?;
        let jwt = parse(assertion).ok_or_else(malformed)?;
        let algorithm = match jwt.header.get("alg").and_then(Value::as_str) {
            Some("RS256") => webpki::aws_lc_rs::RSA_PKCS1_2048_8192_SHA256,
            Some("PS256") => webpki::aws_lc_rs::RSA_PSS_2048_8192_SHA256_LEGACY_KEY,
            _ => return Err(malformed()),
        };
        let certificate = registered_certificate(app, &jwt.header)?;
        let end_entity = webpki::EndEntityCert::try_from(&certificate)
            .map_err(|_| signature_failed(app, "The registered certificate cannot be read."))?;
        end_entity
            .verify_signature(algorithm, jwt.signing_input.as_bytes(), &jwt.signature)
            .map_err(|_| {
                signature_failed(
                    app,
                    "The key was found, but the signature does not verify with it.",
                )
            })?;
        self.check_claims(&jwt.claims)
    }

    /// `iss` and `sub` (700021), `aud` (700023), `nbf` and `exp` (700024).
    fn check_claims(&self, claims: &Map<String, Value>) -> Result<(), AadError> {
        let text = |name: &str| claims.get(name).and_then(Value::as_str);
        let is_client = |v: Option<&str>| v.is_some_and(|v| v.eq_ignore_ascii_case(self.client_id));
        if !is_client(text("iss")) || !is_client(text("sub")) {
            return Err(AadError::new(
                StatusCode::UNAUTHORIZED,
                "invalid_client",
                700021,
                format!(
                    "Client assertion application identifier doesn't match 'client_id' parameter. Review the documentation at {DOCS} ."
                ),
            ));
        }
        match claims.get("aud") {
            Some(Value::String(aud))
                if aud
                    .trim_end_matches('/')
                    .eq_ignore_ascii_case(self.token_url) => {}
            Some(Value::String(_)) => {
                return Err(AadError::new(
                    StatusCode::UNAUTHORIZED,
                    "invalid_client",
                    700023,
                    format!(
                        "Client assertion audience claim does not match Realm issuer. Review the documentation at {DOCS} ."
                    ),
                ));
            }
            // An array or missing audience: a malformed token
            // (https://github.com/panva/openid-client/issues/348).
            _ => return Err(malformed()),
        }
        let (Some(exp), nbf) = (
            claims.get("exp").and_then(Value::as_i64),
            claims.get("nbf").and_then(Value::as_i64),
        ) else {
            return Err(malformed());
        };
        if self.now >= exp + SKEW_SECS || nbf.is_some_and(|nbf| nbf > self.now + SKEW_SECS) {
            return Err(AadError::new(
                StatusCode::UNAUTHORIZED,
                "invalid_client",
                700024,
                format!(
                    "Client assertion is not within its valid time range. Current time: {}, assertion valid from {}, expiry time of assertion {}. Review the documentation at {DOCS} .",
                    iso(self.now),
                    iso(nbf.unwrap_or(0)),
                    iso(exp)
                ),
            ));
        }
        Ok(())
    }
}

/// `client_assertion_type`: required with an assertion (900144), and the JWT bearer type;
/// another type is answered AADSTS90011 "Unexpected client assertion type", as Entra did
/// (<https://github.com/AzureAD/azure-activedirectory-library-for-ruby/pull/49>).
fn check_type(assertion_type: Option<&str>) -> Result<(), AadError> {
    match assertion_type {
        None => Err(missing_parameter("client_assertion_type")),
        Some(JWT_BEARER) => Ok(()),
        Some(_) => Err(AadError::new(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            90011,
            "Unexpected client assertion type.",
        )),
    }
}

/// AADSTS50027 "JWT token is invalid or malformed." (the Azure SDK's troubleshooting table,
/// <https://learn.microsoft.com/en-us/azure/developer/java/sdk/troubleshooting-authentication-service-principal>).
fn malformed() -> AadError {
    AadError::new(
        StatusCode::BAD_REQUEST,
        "invalid_request",
        50027,
        "JWT token is invalid or malformed.",
    )
}

/// Three base64url parts, header and claims JSON objects.
fn parse(assertion: &str) -> Option<Jwt<'_>> {
    let (signing_input, signature) = assertion.rsplit_once('.')?;
    let (header, claims) = signing_input.split_once('.')?;
    let object = |part: &str| -> Option<Map<String, Value>> {
        let bytes = URL_SAFE_NO_PAD.decode(part.trim_end_matches('=')).ok()?;
        match serde_json::from_slice(&bytes).ok()? {
            Value::Object(map) => Some(map),
            _ => None,
        }
    };
    Some(Jwt {
        header: object(header)?,
        claims: object(claims)?,
        signing_input,
        signature: URL_SAFE_NO_PAD
            .decode(signature.trim_end_matches('='))
            .ok()?,
    })
}

/// The app's certificate the header names by `x5t#S256` (SHA-256) or `x5t` (SHA-1), both
/// base64url of the DER's digest; AADSTS700027 "not registered" when none matches
/// (<https://learn.microsoft.com/en-us/answers/questions/2262614/aadsts700027-the-certificate-with-identifier-used>).
fn registered_certificate(
    app: &AppSeed,
    header: &Map<String, Value>,
) -> Result<CertificateDer<'static>, AadError> {
    let s256 = header.get("x5t#S256").and_then(Value::as_str);
    let s1 = header.get("x5t").and_then(Value::as_str);
    let found = app
        .certificates
        .iter()
        .filter_map(|pem| certificate_der(pem))
        .find(|der| {
            let thumb = |algorithm| {
                URL_SAFE_NO_PAD.encode(aws_lc_rs::digest::digest(algorithm, der.as_ref()))
            };
            s256.is_some_and(|t| t == thumb(&aws_lc_rs::digest::SHA256))
                || s1.is_some_and(|t| t == thumb(&aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY))
        });
    found.ok_or_else(|| {
        AadError::new(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            700027,
            format!(
                "The certificate with identifier used to sign the client assertion is not registered on application. [Reason - The key was not found., Thumbprint of key used by client: '{}', Please visit the Azure Portal, Graph Explorer or directly use MS Graph to see configured keys for app Id '{}'.]",
                s256.or(s1).unwrap_or(""),
                app.client_id
            ),
        )
    })
}

/// AADSTS700027 for a signature that does not verify ("Client assertion contains an invalid
/// signature", the Azure SDK's troubleshooting table, link on [`malformed`]).
fn signature_failed(app: &AppSeed, reason: &str) -> AadError {
    AadError::new(
        StatusCode::UNAUTHORIZED,
        "invalid_client",
        700027,
        format!(
            "Client assertion failed signature validation. [Reason - {reason} Client assertion contains an invalid signature., app Id '{}']",
            app.client_id
        ),
    )
}

/// A seeded certificate: PEM, or base64 of its DER (as Graph's `keyCredentials.key`).
fn certificate_der(seeded: &str) -> Option<CertificateDer<'static>> {
    if seeded.contains("-----BEGIN") {
        return CertificateDer::from_pem_slice(seeded.as_bytes()).ok();
    }
    let compact: String = seeded.split_whitespace().collect();
    STANDARD.decode(compact).ok().map(CertificateDer::from)
}

/// `2024-10-02T22:05:03.0000000Z`, as Entra prints times.
fn iso(secs: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(secs)
        .map(|t| {
            format!(
                "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.0000000Z",
                t.year(),
                u8::from(t.month()),
                t.day(),
                t.hour(),
                t.minute(),
                t.second()
            )
        })
        .unwrap_or_default()
}
