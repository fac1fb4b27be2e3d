//! [`S3FileLoader`]: the file source's [`FileLoader`] on S3 (`s3://bucket/key`).

use std::fmt;

use async_trait::async_trait;
use aws_sdk_s3::Client;
use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::operation::head_object::HeadObjectOutput;
use m365_core::SourceError;
use m365_source_file::FileLoader;

/// Whether `location` names an S3 object (`s3://`, scheme compared case-insensitively).
pub fn is_s3_location(location: &str) -> bool {
    location
        .get(..5)
        .is_some_and(|scheme| scheme.eq_ignore_ascii_case("s3://"))
}

/// An `s3://bucket/key` location. The key is taken literally (no percent-decoding), as the AWS
/// CLI does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Location {
    pub bucket: String,
    pub key: String,
}

impl S3Location {
    /// Parses `s3://bucket/key`. The file source hands the loader full object locations: a CSV
    /// prefix `s3://bucket/exports/` becomes `s3://bucket/exports/users.csv` before it gets here.
    pub fn parse(location: &str) -> Result<Self, SourceError> {
        let invalid = |why: &str| {
            SourceError::Unavailable(format!(
                "{location}: not an S3 object location ({why}); write s3://bucket/key"
            ))
        };
        if !is_s3_location(location) {
            return Err(invalid("it does not start with s3://"));
        }
        let rest = location.get(5..).unwrap_or_default();
        let (bucket, key) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(invalid("no bucket name"));
        }
        if key.is_empty() {
            return Err(invalid("no object key after the bucket"));
        }
        Ok(S3Location {
            bucket: bucket.to_owned(),
            key: key.to_owned(),
        })
    }
}

impl fmt::Display for S3Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "s3://{}/{}", self.bucket, self.key)
    }
}

/// Reads `s3://bucket/key` objects: `load` is GetObject, `version` the object's ETag and
/// LastModified (HeadObject), `exists` HeadObject.
///
/// Errors are [`SourceError::Unavailable`] naming the `s3://` location and the S3 error code
/// (`AccessDenied`, `NoSuchBucket`, `NoSuchKey`...). A missing object is told apart from a
/// missing bucket (a HEAD answer has no body, so a 404 is confirmed with HeadBucket): `exists` is
/// `false` only for a missing object in a bucket that exists, never on an error.
///
/// IAM: `s3:GetObject` on the objects and `s3:ListBucket` on the bucket. Without `ListBucket`
/// S3 answers `AccessDenied` instead of "not found" for a missing object, so an absent optional
/// `groups.csv` fails the read (safely) instead of reading as "no groups".
#[derive(Debug, Clone)]
pub struct S3FileLoader {
    client: Client,
}

impl S3FileLoader {
    /// A loader using `client` (built once by the caller, see [`crate::s3_client`]).
    pub fn new(client: Client) -> Self {
        S3FileLoader { client }
    }

    async fn head(&self, location: &S3Location) -> Result<Option<HeadObjectOutput>, SourceError> {
        let result = self
            .client
            .head_object()
            .bucket(&location.bucket)
            .key(&location.key)
            .send()
            .await;
        match result {
            Ok(output) => Ok(Some(output)),
            Err(e) if status(&e) == Some(404) => {
                // A HEAD 404 is the same for a missing key and a missing bucket.
                self.check_bucket(location).await?;
                Ok(None)
            }
            Err(e) => Err(unavailable(location, "HeadObject", &e)),
        }
    }

    /// Ok when the bucket exists; the error names `NoSuchBucket` (or whatever S3 said) otherwise.
    async fn check_bucket(&self, location: &S3Location) -> Result<(), SourceError> {
        let result = self
            .client
            .head_bucket()
            .bucket(&location.bucket)
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(e) if status(&e) == Some(404) => Err(SourceError::Unavailable(format!(
                "{location}: NoSuchBucket: the bucket {} does not exist (HTTP 404)",
                location.bucket
            ))),
            Err(e) => Err(unavailable(location, "HeadBucket", &e)),
        }
    }
}

/// The HTTP status of an S3 error, when S3 answered.
fn status<E>(e: &SdkError<E, HttpResponse>) -> Option<u16> {
    e.raw_response().map(|r| r.status().as_u16())
}

/// An error and its sources, `outer: inner: innermost` (the SDK's own Display is only the
/// outermost level, e.g. "dispatch failure").
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        let inner_text = inner.to_string();
        if !text.ends_with(&inner_text) {
            text.push_str(": ");
            text.push_str(&inner_text);
        }
        source = inner.source();
    }
    text
}

/// An SDK error as a [`SourceError::Unavailable`]: the location, the S3 error code and message.
/// The SDK's messages carry no credentials (nor does anything else put here).
fn unavailable<E>(
    location: &S3Location,
    operation: &str,
    e: &SdkError<E, HttpResponse>,
) -> SourceError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    let message = match e {
        SdkError::ServiceError(service) => {
            let err = service.err();
            let http = service.raw().status().as_u16();
            // HEAD answers have no body, hence no code: name the usual one for the status.
            let code = err.code().map(str::to_owned).unwrap_or_else(|| {
                match http {
                    301 => "PermanentRedirect",
                    403 => "AccessDenied",
                    404 => "NotFound",
                    _ => "Unknown",
                }
                .to_owned()
            });
            let detail = err.message().unwrap_or("");
            let hint = match code.as_str() {
                "AccessDenied" => {
                    " (check s3:GetObject on the object and s3:ListBucket on the bucket: without \
                     ListBucket S3 answers AccessDenied for a missing object)"
                }
                "PermanentRedirect" | "AuthorizationHeaderMalformed" => {
                    " (the bucket is in another region: set AWS_REGION to the bucket's region)"
                }
                _ => "",
            };
            format!("{code}: {detail} (HTTP {http}, {operation}){hint}")
        }
        SdkError::TimeoutError(_) => format!("{operation} timed out"),
        other => format!(
            "{operation} failed before S3 answered: {}",
            error_chain(other)
        ),
    };
    SourceError::Unavailable(format!("{location}: {message}"))
}

#[async_trait]
impl FileLoader for S3FileLoader {
    #[tracing::instrument(level = "debug", skip(self), err(Display))]
    async fn load(&self, location: &str) -> Result<Vec<u8>, SourceError> {
        let location = S3Location::parse(location)?;
        let output = self
            .client
            .get_object()
            .bucket(&location.bucket)
            .key(&location.key)
            .send()
            .await
            .map_err(|e| unavailable(&location, "GetObject", &e))?;
        let body = output.body.collect().await.map_err(|e| {
            SourceError::Unavailable(format!(
                "{location}: reading the object body failed: {}",
                error_chain(&e)
            ))
        })?;
        Ok(body.into_bytes().to_vec())
    }

    #[tracing::instrument(level = "debug", skip(self), err(Display))]
    async fn version(&self, location: &str) -> Result<String, SourceError> {
        let location = S3Location::parse(location)?;
        let head = self.head(&location).await?.ok_or_else(|| {
            SourceError::Unavailable(format!("{location}: NoSuchKey: the object does not exist"))
        })?;
        // The ETag changes with the content; LastModified catches a rewrite with equal content
        // (harmless) and the version id an object restored from an older version.
        let etag = head.e_tag().unwrap_or("");
        let modified = head.last_modified().map_or(0, |t| t.secs());
        let version_id = head.version_id().unwrap_or("");
        Ok(format!("{etag}:{modified}:{version_id}"))
    }

    #[tracing::instrument(level = "debug", skip(self), err(Display))]
    async fn exists(&self, location: &str) -> Result<bool, SourceError> {
        let location = S3Location::parse(location)?;
        Ok(self.head(&location).await?.is_some())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "test code")]

    use super::*;

    #[test]
    fn parses_bucket_and_key() {
        let table = [
            ("s3://bucket/source.json", "bucket", "source.json"),
            (
                "s3://bucket/exports/users.csv",
                "bucket",
                "exports/users.csv",
            ),
            ("S3://Bucket/a b/c%20d.csv", "Bucket", "a b/c%20d.csv"),
            ("s3://bucket/prefix/", "bucket", "prefix/"),
        ];
        for (input, bucket, key) in table {
            let parsed = S3Location::parse(input).unwrap();
            assert_eq!((parsed.bucket.as_str(), parsed.key.as_str()), (bucket, key));
        }
        assert_eq!(
            S3Location::parse("s3://bucket/k").unwrap().to_string(),
            "s3://bucket/k"
        );
    }

    #[test]
    fn refuses_locations_without_bucket_or_key() {
        for input in [
            "s3://",
            "s3:///key",
            "s3://bucket",
            "s3://bucket/",
            "/tmp/x.json",
        ] {
            let err = S3Location::parse(input).unwrap_err().to_string();
            assert!(err.contains(input), "{err}");
            assert!(err.contains("s3://bucket/key"), "{err}");
        }
    }

    #[test]
    fn recognises_the_scheme() {
        assert!(is_s3_location("s3://b/k"));
        assert!(is_s3_location("S3://b/k"));
        assert!(!is_s3_location("s3:/b/k"));
        assert!(!is_s3_location("./s3://b"));
        assert!(!is_s3_location("s3"));
    }
}
