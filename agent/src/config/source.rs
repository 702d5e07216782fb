//! Where the mesh document comes from: parsing `TASKMESH_CONFIG` into a source and fetching the
//! current document from it (`file://`, `s3://`, `http(s)://`, `appmesh:`). Each fetch answers
//! "unchanged" or "new bytes with a version tag"; errors say which source failed and why.

use std::path::PathBuf;

use taskmesh_mesh::NodeRef;

use super::appmesh::AppMeshSource;
use super::file::FileSource;
use super::http::HttpSource;
use super::s3::S3Source;

/// Result of one fetch.
#[derive(Debug)]
pub enum Fetched {
    /// Same document as last time (ETag matched, file unchanged).
    NotModified,
    /// A (possibly) new document.
    Document {
        /// Raw bytes (JSON or YAML).
        bytes: Vec<u8>,
        /// Version tag: ETag, content hash, …
        version: String,
    },
}

/// Why a fetch failed.
#[derive(thiserror::Error, Debug)]
pub enum SourceError {
    /// The URI is not one of the supported forms.
    #[error("TASKMESH_CONFIG {uri:?}: {why}")]
    BadUri {
        /// The offending value.
        uri: String,
        /// What is wrong.
        why: String,
    },
    /// File read failed.
    #[error("reading {path}: {source}")]
    File {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Network or protocol failure talking to an HTTP(S) source.
    #[error("fetching {url}: {why}")]
    Http {
        /// The URL.
        url: String,
        /// What failed.
        why: String,
    },
    /// S3 call failed.
    #[error("fetching s3://{bucket}/{key}: {why}")]
    S3 {
        /// Bucket.
        bucket: String,
        /// Key.
        key: String,
        /// What failed.
        why: String,
    },
    /// App Mesh API call failed.
    #[error("App Mesh {operation} {resource}: {why}")]
    AppMesh {
        /// API operation.
        operation: &'static str,
        /// Resource name.
        resource: String,
        /// What failed.
        why: String,
    },
}

/// A configured source.
pub enum Source {
    /// `file:///path`
    File(FileSource),
    /// `http(s)://…`
    Http(Box<HttpSource>),
    /// `s3://bucket/key`
    S3(S3Source),
    /// `appmesh:` (the App Mesh API)
    AppMesh(Box<AppMeshSource>),
}

impl Source {
    /// Builds the source named by `uri` for `node`.
    pub async fn from_uri(uri: &str, node: &NodeRef) -> Result<Source, SourceError> {
        let bad = |why: &str| SourceError::BadUri {
            uri: uri.to_string(),
            why: why.to_string(),
        };
        if let Some(path) = uri.strip_prefix("file://") {
            if path.is_empty() {
                return Err(bad(
                    "file:// needs a path, e.g. file:///etc/taskmesh/mesh.yaml",
                ));
            }
            Ok(Source::File(FileSource::new(PathBuf::from(path))))
        } else if uri.starts_with("http://") || uri.starts_with("https://") {
            HttpSource::new(uri).map(|s| Source::Http(Box::new(s)))
        } else if let Some(rest) = uri.strip_prefix("s3://") {
            let (bucket, key) = rest
                .split_once('/')
                .filter(|(b, k)| !b.is_empty() && !k.is_empty())
                .ok_or_else(|| bad("expected s3://bucket/key"))?;
            Ok(Source::S3(S3Source::new(bucket, key).await))
        } else if uri == "appmesh:" || uri.starts_with("appmesh:") {
            Ok(Source::AppMesh(Box::new(AppMeshSource::new(node).await)))
        } else if uri.starts_with('/') {
            Ok(Source::File(FileSource::new(PathBuf::from(uri))))
        } else {
            Err(bad(
                "expected file:///path, s3://bucket/key, http(s)://… or appmesh:",
            ))
        }
    }

    /// Fetches the current document (or learns it is unchanged).
    pub async fn fetch(&mut self) -> Result<Fetched, SourceError> {
        match self {
            Source::File(s) => s.fetch().await,
            Source::Http(s) => s.fetch().await,
            Source::S3(s) => s.fetch().await,
            Source::AppMesh(s) => s.fetch().await,
        }
    }

    /// The file to watch for changes, when the source is a file.
    pub fn watch_path(&self) -> Option<&std::path::Path> {
        match self {
            Source::File(s) => Some(s.path()),
            _ => None,
        }
    }
}

/// FNV-1a 64-bit content hash, as a version tag for sources without one.
pub fn content_hash(bytes: &[u8]) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}
