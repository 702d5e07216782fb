//! The link between the file the user edits and the file the demo's agents read: on every
//! change of the user's mesh document it is validated, and a good one is rendered (tasks on
//! their loopback addresses, see [`super::layout::runtime_document`]) and written atomically
//! to the runtime file; a bad one is reported and the agents keep their last good document.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use taskmesh_mesh::MeshDocument;

use super::layout::{self, Placement};

/// What became of the latest version of the user's file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileState {
    /// Written for the agents (local time of day, HH:MM:SS UTC).
    Applied(String),
    /// Not valid; the agents keep the last good document.
    Rejected(String),
}

impl std::fmt::Display for FileState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FileState::Applied(at) => write!(f, "applied at {at} UTC"),
            FileState::Rejected(why) => {
                write!(f, "REJECTED, the agents keep the last good document: {why}")
            }
        }
    }
}

/// The user's file and its runtime rendering.
#[derive(Debug)]
pub struct MeshFile {
    user: PathBuf,
    runtime: PathBuf,
    log_dir: PathBuf,
    placements: Vec<Placement>,
    last: Option<Vec<u8>>,
}

impl MeshFile {
    /// Links `user` to `runtime` for tasks at `placements`, with access logs in `log_dir`.
    pub fn new(user: &Path, runtime: &Path, log_dir: &Path, placements: Vec<Placement>) -> Self {
        MeshFile {
            user: user.to_path_buf(),
            runtime: runtime.to_path_buf(),
            log_dir: log_dir.to_path_buf(),
            placements,
            last: None,
        }
    }

    /// Re-reads the user's file; `Some(state)` when its content changed since the last call.
    pub fn sync(&mut self) -> Option<FileState> {
        let bytes = match std::fs::read(&self.user) {
            Ok(b) => b,
            Err(e) => {
                // Editors may replace the file by rename; a missing file for a moment is normal.
                let state = FileState::Rejected(format!("{}: {e}", self.user.display()));
                self.last = None;
                return Some(state);
            }
        };
        if self.last.as_deref() == Some(&bytes[..]) {
            return None;
        }
        self.last = Some(bytes.clone());
        Some(self.apply(&bytes))
    }

    fn apply(&self, bytes: &[u8]) -> FileState {
        let doc = match MeshDocument::from_slice(bytes) {
            Ok(d) => d,
            Err(e) => return FileState::Rejected(one_line(&e.to_string())),
        };
        if let Err(e) = layout::Application::from_document(&doc) {
            return FileState::Rejected(e.to_string());
        }
        let value = layout::runtime_document(&doc, &self.placements, &self.log_dir);
        let text = match serde_json::to_vec_pretty(&value) {
            Ok(t) => t,
            Err(e) => return FileState::Rejected(e.to_string()),
        };
        match write_atomic(&self.runtime, &text) {
            Ok(()) => FileState::Applied(time_of_day(SystemTime::now())),
            Err(e) => FileState::Rejected(format!("{}: {e}", self.runtime.display())),
        }
    }
}

/// Writes `bytes` to a sibling temporary file and renames it over `path`.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    std::io::Write::write_all(&mut tmp, bytes)?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

fn one_line(s: &str) -> String {
    s.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ")
}

/// `HH:MM:SS` (UTC) of `t`.
pub fn time_of_day(t: SystemTime) -> String {
    let secs = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
        % 86_400;
    format!("{:02}:{:02}:{:02}", secs / 3600, secs / 60 % 60, secs % 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn good_edits_are_rendered_and_bad_ones_rejected() {
        let dir = tempfile::tempdir().expect("tempdir");
        let user = dir.path().join("mesh.yaml");
        let runtime = dir.path().join("runtime.json");
        std::fs::write(&user, super::super::BUNDLED_MESH_DOCUMENT).expect("write");
        let mut file = MeshFile::new(&user, &runtime, dir.path(), Vec::new());
        assert!(matches!(file.sync(), Some(FileState::Applied(_))));
        assert_eq!(file.sync(), None, "unchanged content is not re-applied");
        let written = std::fs::read(&runtime).expect("runtime file");
        MeshDocument::from_slice(&written).expect("the runtime document is valid");

        std::fs::write(&user, "meshName: colorapp\nroutes: [{}]\n").expect("write");
        let Some(FileState::Rejected(why)) = file.sync() else {
            panic!("a bad document must be rejected");
        };
        assert!(why.contains("routes"), "{why}");
        assert_eq!(std::fs::read(&runtime).expect("kept"), written);
        assert_eq!(time_of_day(SystemTime::UNIX_EPOCH), "00:00:00");
    }
}
