//! The last good mesh document on disk (`TASKMESH_CACHE`): written atomically after every
//! successful install, read at start-up so a restart while the source is down still comes up LIVE.

use std::io::Write;
use std::path::{Path, PathBuf};

/// Cache read/write failure.
#[derive(thiserror::Error, Debug)]
pub enum CacheError {
    /// I/O on the cache file or its directory.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// Which path.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// Reads the cached document, `None` when there is none.
pub fn read(path: &Path) -> Result<Option<Vec<u8>>, CacheError> {
    match std::fs::read(path) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(CacheError::Io {
            op: "reading",
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Writes `bytes` to `path` atomically (temporary file in the same directory, fsync, rename).
pub fn write(path: &Path, bytes: &[u8]) -> Result<(), CacheError> {
    let io = |op, p: &Path| {
        let p = p.to_path_buf();
        move |source| CacheError::Io {
            op,
            path: p,
            source,
        }
    };
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(io("creating directory", dir))?;
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".tmp{}", std::process::id()));
    let tmp = PathBuf::from(tmp);
    let mut f = std::fs::File::create(&tmp).map_err(io("creating", &tmp))?;
    f.write_all(bytes).map_err(io("writing", &tmp))?;
    f.sync_all().map_err(io("syncing", &tmp))?;
    drop(f);
    std::fs::rename(&tmp, path).map_err(io("renaming into", path))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn round_trip_and_missing() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("sub/last-good.json");
        assert!(super::read(&p).unwrap().is_none());
        super::write(&p, b"{\"meshName\":\"m\"}").unwrap();
        assert_eq!(super::read(&p).unwrap().unwrap(), b"{\"meshName\":\"m\"}");
        super::write(&p, b"x").unwrap();
        assert_eq!(super::read(&p).unwrap().unwrap(), b"x");
    }
}
