//! Reading FILE or stdin, and writing stdout or FILE atomically (`--in-place`: a temporary file
//! in the same directory, permissions copied, then renamed over FILE; on any error nothing is
//! written).

use std::io::{Read, Write};
use std::path::Path;

use anyhow::Context;

/// Whether `path` means standard input.
pub fn is_stdin(path: &Path) -> bool {
    path.as_os_str() == "-"
}

/// The name used in messages.
pub fn display(path: &Path) -> String {
    path.display().to_string()
}

/// Read all of FILE, or stdin for `-`.
pub fn read_input(path: &Path) -> anyhow::Result<Vec<u8>> {
    if is_stdin(path) {
        let mut buf = Vec::new();
        std::io::stdin()
            .read_to_end(&mut buf)
            .context("reading standard input")?;
        Ok(buf)
    } else {
        std::fs::read(path).with_context(|| format!("reading {}", path.display()))
    }
}

/// Replace `path` with `contents` atomically.
pub fn write_atomic(path: &Path, contents: &str) -> anyhow::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let mut tmp = tempfile::NamedTempFile::new_in(dir)
        .with_context(|| format!("creating a temporary file in {}", dir.display()))?;
    tmp.write_all(contents.as_bytes())
        .with_context(|| format!("writing {}", tmp.path().display()))?;
    tmp.as_file()
        .sync_all()
        .with_context(|| format!("syncing {}", tmp.path().display()))?;
    if let Ok(meta) = std::fs::metadata(path) {
        std::fs::set_permissions(tmp.path(), meta.permissions())
            .with_context(|| format!("copying permissions of {}", path.display()))?;
    }
    tmp.persist(path)
        .map_err(|e| e.error)
        .with_context(|| format!("replacing {}", path.display()))?;
    Ok(())
}

/// Print to stdout.
pub fn write_stdout(contents: &str) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(contents.as_bytes())
        .context("writing standard output")?;
    out.flush().context("writing standard output")
}
