//! Finds the Python virtual environment with the pinned test tools (moto, cfn-lint,
//! botocore/boto3, cargo-lambda) that `scripts/setup-test-env.sh` installs.
//!
//! Lookup order: `$TASKMESH_VENV`, then `<workspace root>/.venv`. A missing venv or tool is a
//! panic that says to run `scripts/setup-test-env.sh`: tests never skip.

use std::path::{Path, PathBuf};

/// The workspace root (the directory holding the root `Cargo.toml`).
pub fn workspace_root() -> PathBuf {
    // This crate lives in `<root>/tests`.
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")))
}

/// A located virtual environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Venv {
    root: PathBuf,
}

impl Venv {
    /// Finds the venv, or explains what is missing (`Err` holds the full message).
    pub fn locate() -> Result<Venv, String> {
        let (root, origin) = match std::env::var_os("TASKMESH_VENV") {
            Some(dir) if !dir.is_empty() => (PathBuf::from(dir), "$TASKMESH_VENV"),
            _ => (workspace_root().join(".venv"), "<workspace>/.venv"),
        };
        let venv = Venv { root };
        if venv.bin("python").is_file() {
            Ok(venv)
        } else {
            Err(format!(
                "no Python venv with the test tools at {} ({origin}): run scripts/setup-test-env.sh \
                 (as root on a fresh Debian machine) or point TASKMESH_VENV at such a venv",
                venv.root.display()
            ))
        }
    }

    /// The venv root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Path of an executable in the venv's `bin/` (whether or not it exists).
    pub fn bin(&self, name: &str) -> PathBuf {
        self.root.join("bin").join(name)
    }

    /// Path of an executable in the venv's `bin/`; panics with the setup hint if it is missing.
    pub fn tool(&self, name: &str) -> PathBuf {
        let path = self.bin(name);
        assert!(
            path.is_file(),
            "{} is missing from the test venv {}: run scripts/setup-test-env.sh \
             (it installs scripts/requirements-test.txt)",
            name,
            self.root.display()
        );
        path
    }

    /// The venv's Python interpreter.
    pub fn python(&self) -> PathBuf {
        self.tool("python")
    }
}

/// The test venv; panics with a "run scripts/setup-test-env.sh" message when it is missing.
pub fn venv() -> Venv {
    match Venv::locate() {
        Ok(venv) => venv,
        Err(message) => panic!("{message}"),
    }
}
