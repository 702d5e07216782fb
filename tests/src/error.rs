//! The one error type of the test-support library: which helper failed, on what, and the
//! captured output of the tool that failed.

use std::path::PathBuf;

/// A failure of a test-support helper. Every variant names the tool or file involved and
/// carries enough of its output to diagnose the failure from the test log alone.
#[derive(Debug, thiserror::Error)]
pub enum HarnessError {
    /// A child process could not be started.
    #[error("cannot start {program}: {source}")]
    Spawn {
        program: String,
        #[source]
        source: std::io::Error,
    },
    /// A child process exited (or never listened) before it was ready.
    #[error("{name} did not become ready: {reason}\n--- {name} output ({log}) ---\n{output}")]
    NotReady {
        name: String,
        reason: String,
        log: PathBuf,
        output: String,
    },
    /// A tool ran but failed or printed something we cannot read.
    #[error("{tool} failed ({status}): {message}\n--- stderr ---\n{stderr}")]
    Tool {
        tool: String,
        status: String,
        message: String,
        stderr: String,
    },
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}
