//! Binaries of other workspace packages for end-to-end tests. `env!("CARGO_BIN_EXE_…")` only
//! names binaries of the test's own package, so tests find `taskmesh-agent` (and the like)
//! where cargo puts them: `target/<profile>/`, the parent of the test executable's `deps/`.
//! A binary that is missing, or older than any source file of its package or of the crates it
//! is built from, is (re)built once per test process with
//! `cargo build -p <package> --bin <name>` in the same profile.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::SystemTime;

use crate::HarnessError;

/// The workspace root (this crate lives in `<root>/tests`).
pub fn workspace_root() -> PathBuf {
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    here.parent().unwrap_or(here).to_path_buf()
}

/// `target/<profile>` of the running test executable (`target/<profile>/deps/<test>-<hash>`).
pub fn profile_dir() -> Result<PathBuf, HarnessError> {
    let exe = std::env::current_exe().map_err(|source| HarnessError::Io {
        path: PathBuf::from("/proc/self/exe"),
        source,
    })?;
    exe.parent()
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .ok_or_else(|| HarnessError::Tool {
            tool: "cargo".to_owned(),
            status: "-".to_owned(),
            message: format!("{} is not inside target/<profile>/deps", exe.display()),
            stderr: String::new(),
        })
}

/// The path of binary `bin` of workspace package `package`, built if missing or stale.
/// `sources` are the workspace-relative directories whose files the binary is built from.
pub fn workspace_binary(
    package: &str,
    bin: &str,
    sources: &[&str],
) -> Result<PathBuf, HarnessError> {
    static BUILT: Mutex<Vec<String>> = Mutex::new(Vec::new());
    let dir = profile_dir()?;
    let path = dir.join(bin);
    let mut built = BUILT.lock().unwrap_or_else(|p| p.into_inner());
    if built.iter().any(|b| b == bin) {
        return Ok(path);
    }
    let root = workspace_root();
    let binary_time = std::fs::metadata(&path).and_then(|m| m.modified()).ok();
    let mut inputs: Vec<PathBuf> = vec![root.join("Cargo.toml"), root.join("Cargo.lock")];
    inputs.extend(sources.iter().map(|s| root.join(s)));
    let newest = inputs.iter().filter_map(|p| newest_mtime(p)).max();
    let stale = match (binary_time, newest) {
        (None, _) => true,
        (Some(b), Some(n)) => n > b,
        (Some(_), None) => false,
    };
    if stale {
        let profile = match dir.file_name().and_then(|n| n.to_str()) {
            Some("debug") | None => "dev".to_owned(),
            Some(other) => other.to_owned(),
        };
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let output = Command::new(&cargo)
            .args(["build", "-p", package, "--bin", bin, "--profile", &profile])
            .current_dir(&root)
            .output()
            .map_err(|source| HarnessError::Spawn {
                program: format!("{} build -p {package}", cargo.to_string_lossy()),
                source,
            })?;
        if !output.status.success() {
            return Err(HarnessError::Tool {
                tool: "cargo".to_owned(),
                status: output.status.to_string(),
                message: format!("building {bin} of {package}"),
                stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
            });
        }
    }
    if !path.is_file() {
        return Err(HarnessError::Tool {
            tool: "cargo".to_owned(),
            status: "-".to_owned(),
            message: format!(
                "{} is missing after `cargo build -p {package} --bin {bin}`",
                path.display()
            ),
            stderr: String::new(),
        });
    }
    built.push(bin.to_owned());
    Ok(path)
}

/// `target/<profile>/taskmesh-agent`, built if missing or older than the agent's or the mesh
/// crate's sources.
pub fn taskmesh_agent() -> Result<PathBuf, HarnessError> {
    workspace_binary(
        "taskmesh-agent",
        "taskmesh-agent",
        &[
            "agent/src",
            "agent/Cargo.toml",
            "mesh/src",
            "mesh/Cargo.toml",
        ],
    )
}

/// The newest modification time of `path` or, for a directory, of any file below it.
fn newest_mtime(path: &Path) -> Option<SystemTime> {
    let meta = std::fs::metadata(path).ok()?;
    if !meta.is_dir() {
        return meta.modified().ok();
    }
    std::fs::read_dir(path)
        .ok()?
        .filter_map(Result::ok)
        .filter_map(|e| newest_mtime(&e.path()))
        .max()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_workspace_and_this_profile() {
        let root = workspace_root();
        let manifest = std::fs::read_to_string(root.join("Cargo.toml")).expect("root manifest");
        assert!(manifest.contains("[workspace]"), "{}", root.display());
        let dir = profile_dir().expect("profile dir");
        let exe = std::env::current_exe().expect("exe");
        assert_eq!(exe.parent().and_then(Path::parent), Some(dir.as_path()));
    }

    #[test]
    fn the_newest_file_below_a_directory_counts() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert_eq!(newest_mtime(&dir.path().join("missing")), None);
        let nested = dir.path().join("a/b");
        std::fs::create_dir_all(&nested).expect("mkdir");
        let file = nested.join("f.rs");
        std::fs::write(&file, "x").expect("write");
        let file_time = std::fs::metadata(&file)
            .and_then(|m| m.modified())
            .expect("mtime");
        assert!(newest_mtime(dir.path()).is_some_and(|t| t >= file_time));
    }
}
