//! Where the bytes of a file source come from.

use async_trait::async_trait;
use m365_core::SourceError;

/// Reads the files of a file source. The local loader is here; an `s3://bucket/key` loader lives
/// in the AWS adapters crate.
#[async_trait]
pub trait FileLoader: Send + Sync {
    /// The whole content of the file at `location`. A missing file is
    /// [`SourceError::Unavailable`] naming the location.
    async fn load(&self, location: &str) -> Result<Vec<u8>, SourceError>;

    /// A cheap tag that changes whenever the content changes (size + mtime, an S3 ETag). Snapshot
    /// cursors carry it, so that one snapshot never mixes two versions of a file.
    async fn version(&self, location: &str) -> Result<String, SourceError>;

    /// Whether a file exists at `location`, for optional files (`groups.csv`). A failure to find
    /// out (network, permissions) must be an error, never `false`: an optional file wrongly read
    /// as absent would look like "every group was deleted".
    async fn exists(&self, location: &str) -> Result<bool, SourceError>;
}

/// Reads local paths.
#[derive(Debug, Clone, Copy, Default)]
pub struct LocalFileLoader;

fn refuse_s3(location: &str) -> Result<(), SourceError> {
    if location.starts_with("s3://") {
        return Err(SourceError::Unavailable(format!(
            "{location}: reading from S3 needs the AWS build (the S3 file loader of the AWS \
             adapters); this build reads local paths only"
        )));
    }
    Ok(())
}

fn io_error(location: &str, e: &std::io::Error) -> SourceError {
    if e.kind() == std::io::ErrorKind::NotFound {
        SourceError::Unavailable(format!("{location}: file not found"))
    } else {
        SourceError::Unavailable(format!("{location}: {e}"))
    }
}

#[async_trait]
impl FileLoader for LocalFileLoader {
    async fn load(&self, location: &str) -> Result<Vec<u8>, SourceError> {
        refuse_s3(location)?;
        tokio::fs::read(location)
            .await
            .map_err(|e| io_error(location, &e))
    }

    async fn version(&self, location: &str) -> Result<String, SourceError> {
        refuse_s3(location)?;
        let meta = tokio::fs::metadata(location)
            .await
            .map_err(|e| io_error(location, &e))?;
        if !meta.is_file() {
            return Err(SourceError::Unavailable(format!(
                "{location}: not a regular file"
            )));
        }
        let mtime = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_nanos());
        // The inode catches a file replaced by rename (the usual atomic export) even when size
        // and mtime happen to match.
        #[cfg(unix)]
        let inode = std::os::unix::fs::MetadataExt::ino(&meta);
        #[cfg(not(unix))]
        let inode = 0u64;
        Ok(format!("{}:{mtime}:{inode}", meta.len()))
    }

    async fn exists(&self, location: &str) -> Result<bool, SourceError> {
        refuse_s3(location)?;
        match tokio::fs::metadata(location).await {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(io_error(location, &e)),
        }
    }
}
