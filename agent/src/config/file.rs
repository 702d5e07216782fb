//! `file://` source: the document on local disk, re-read on every poll and whenever the watcher
//! in the reload loop reports a change; unchanged content answers `NotModified`.

use std::path::{Path, PathBuf};

use super::source::{Fetched, SourceError, content_hash};

/// A mesh document file.
pub struct FileSource {
    path: PathBuf,
    last: Option<String>,
}

impl FileSource {
    /// A source reading `path`.
    pub fn new(path: PathBuf) -> FileSource {
        FileSource { path, last: None }
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads the file; `NotModified` when its content hash is unchanged.
    pub async fn fetch(&mut self) -> Result<Fetched, SourceError> {
        let bytes = tokio::fs::read(&self.path)
            .await
            .map_err(|source| SourceError::File {
                path: self.path.clone(),
                source,
            })?;
        let version = content_hash(&bytes);
        if self.last.as_deref() == Some(version.as_str()) {
            return Ok(Fetched::NotModified);
        }
        self.last = Some(version.clone());
        Ok(Fetched::Document { bytes, version })
    }
}
