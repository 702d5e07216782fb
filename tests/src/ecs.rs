//! ECS task-definition round trips through a moto server: register each request body with
//! boto3 (`RegisterTaskDefinition`), describe it back (`DescribeTaskDefinition`, with tags),
//! and return what ECS stored. Runs `tests/support/ecs_roundtrip.py` once per batch.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde::Deserialize;
use serde_json::Value;

use crate::HarnessError;
use crate::moto::MotoServer;
use crate::venv::venv;

/// What happened to one request body.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct RoundTrip {
    /// The request body file.
    pub file: PathBuf,
    /// The registered revision's ARN (absent when registration failed).
    pub arn: Option<String>,
    /// `DescribeTaskDefinition`'s `taskDefinition` (absent when registration failed).
    #[serde(rename = "taskDefinition")]
    pub task_definition: Option<Value>,
    /// `DescribeTaskDefinition`'s `tags`.
    #[serde(default)]
    pub tags: Vec<Value>,
    /// The API's error message when registration failed.
    pub error: Option<String>,
}

#[derive(Deserialize)]
struct Report {
    results: Vec<RoundTrip>,
}

/// The round-trip script shipped with this crate.
pub fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("support/ecs_roundtrip.py")
}

/// Registers every file (one RegisterTaskDefinition body each) with `moto` and describes it
/// back. Results come in the order of `files`; a body the API refuses has `error` set.
pub fn register_and_describe<P: AsRef<Path>>(
    moto: &MotoServer,
    files: &[P],
) -> Result<Vec<RoundTrip>, HarnessError> {
    if files.is_empty() {
        return Ok(Vec::new());
    }
    let python = venv().python();
    let mut command = Command::new(&python);
    command.arg(script()).args(files.iter().map(AsRef::as_ref));
    moto.configure(&mut command);
    let output = command.output().map_err(|source| HarnessError::Spawn {
        program: python.display().to_string(),
        source,
    })?;
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    let failure = |message: String| HarnessError::Tool {
        tool: "ecs_roundtrip.py".to_owned(),
        status: output.status.to_string(),
        message,
        stderr: format!("{stderr}\n--- moto log ---\n{}", moto.log()),
    };
    if !output.status.success() {
        return Err(failure("registering task definitions".to_owned()));
    }
    let report: Report = serde_json::from_slice(&output.stdout).map_err(|err| {
        failure(format!(
            "unreadable report ({err}): {}",
            String::from_utf8_lossy(&output.stdout)
        ))
    })?;
    if report.results.len() != files.len() {
        return Err(failure(format!(
            "{} results for {} files",
            report.results.len(),
            files.len()
        )));
    }
    Ok(report.results)
}
