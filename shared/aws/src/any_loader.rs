//! [`AnyFileLoader`]: one [`FileLoader`] for every location a file source may name.

use async_trait::async_trait;
use m365_core::SourceError;
use m365_source_file::{FileLoader, LocalFileLoader};

use crate::s3::{S3FileLoader, is_s3_location};

/// Reads `s3://bucket/key` through an [`S3FileLoader`] and everything else as a local path
/// ([`LocalFileLoader`]).
///
/// The S3 client is optional so that a caller whose locations are all local never loads AWS
/// configuration; an `s3://` location without one is an error saying so.
#[derive(Debug, Clone, Default)]
pub struct AnyFileLoader {
    local: LocalFileLoader,
    s3: Option<S3FileLoader>,
}

impl AnyFileLoader {
    /// A loader reading local paths, and `s3://` locations when `s3` is given.
    pub fn new(s3: Option<aws_sdk_s3::Client>) -> Self {
        AnyFileLoader {
            local: LocalFileLoader,
            s3: s3.map(S3FileLoader::new),
        }
    }

    fn pick(&self, location: &str) -> Result<&dyn FileLoader, SourceError> {
        if !is_s3_location(location) {
            return Ok(&self.local);
        }
        match &self.s3 {
            Some(s3) => Ok(s3),
            None => Err(SourceError::Unavailable(format!(
                "{location}: no S3 client was configured for this source (the location was \
                 local when the source was built)"
            ))),
        }
    }
}

#[async_trait]
impl FileLoader for AnyFileLoader {
    async fn load(&self, location: &str) -> Result<Vec<u8>, SourceError> {
        self.pick(location)?.load(location).await
    }

    async fn version(&self, location: &str) -> Result<String, SourceError> {
        self.pick(location)?.version(location).await
    }

    async fn exists(&self, location: &str) -> Result<bool, SourceError> {
        self.pick(location)?.exists(location).await
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "test code")]

    use super::*;

    #[tokio::test]
    async fn local_paths_go_to_the_local_loader() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users.csv");
        std::fs::write(&path, "id,enabled\n").unwrap();
        let path = path.display().to_string();
        let loader = AnyFileLoader::new(None);
        assert_eq!(loader.load(&path).await.unwrap(), b"id,enabled\n");
        assert!(loader.exists(&path).await.unwrap());
        let missing = dir.path().join("groups.csv").display().to_string();
        assert!(!loader.exists(&missing).await.unwrap());
    }

    #[tokio::test]
    async fn s3_without_a_client_is_an_error_not_a_local_read() {
        let loader = AnyFileLoader::new(None);
        for result in [
            loader.exists("s3://bucket/groups.csv").await.map(|_| ()),
            loader.load("s3://bucket/groups.csv").await.map(|_| ()),
        ] {
            let err = result.unwrap_err();
            assert!(matches!(err, SourceError::Unavailable(_)), "{err}");
            assert!(err.to_string().contains("s3://bucket/groups.csv"), "{err}");
        }
    }
}
