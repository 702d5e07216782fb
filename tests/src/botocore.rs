//! Validates AWS API request bodies against botocore's service models with botocore's own
//! `ParamValidator` (the check boto3 runs before every call): unknown members, wrong types,
//! missing required members, enum-free shape errors.
//!
//! The work is done by `tests/support/validate_request.py`, run with the venv's Python; a
//! batch of files costs one Python start.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde::Deserialize;

use crate::HarnessError;
use crate::venv::venv;

/// The validator script shipped with this crate.
pub fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("support/validate_request.py")
}

/// What botocore said about one request body.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Validation {
    /// The file validated.
    pub file: PathBuf,
    /// One message per problem; empty when botocore accepts the body.
    pub errors: Vec<String>,
}

impl Validation {
    /// Whether botocore accepts the body.
    pub fn is_valid(&self) -> bool {
        self.errors.is_empty()
    }
}

#[derive(Deserialize)]
struct Report {
    results: Vec<Validation>,
}

/// Validates each file (one JSON request body per file) as input of `service`'s `operation`
/// (e.g. `"ecs"`, `"RegisterTaskDefinition"`). Results come in the order of `files`.
pub fn validate_files<P: AsRef<Path>>(
    service: &str,
    operation: &str,
    files: &[P],
) -> Result<Vec<Validation>, HarnessError> {
    if files.is_empty() {
        return Ok(Vec::new());
    }
    let python = venv().python();
    let mut command = Command::new(&python);
    command
        .arg(script())
        .arg(service)
        .arg(operation)
        .args(files.iter().map(AsRef::as_ref));
    let output = command.output().map_err(|source| HarnessError::Spawn {
        program: python.display().to_string(),
        source,
    })?;
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    if !output.status.success() {
        return Err(HarnessError::Tool {
            tool: "validate_request.py".to_owned(),
            status: output.status.to_string(),
            message: format!("validating {service} {operation} request bodies"),
            stderr,
        });
    }
    let report: Report =
        serde_json::from_slice(&output.stdout).map_err(|err| HarnessError::Tool {
            tool: "validate_request.py".to_owned(),
            status: output.status.to_string(),
            message: format!(
                "unreadable report ({err}): {}",
                String::from_utf8_lossy(&output.stdout)
            ),
            stderr: stderr.clone(),
        })?;
    if report.results.len() != files.len() {
        return Err(HarnessError::Tool {
            tool: "validate_request.py".to_owned(),
            status: output.status.to_string(),
            message: format!("{} results for {} files", report.results.len(), files.len()),
            stderr,
        });
    }
    Ok(report.results)
}

/// Validates in-memory bodies (named for messages) in one batch; returns, per body, its name
/// and botocore's errors.
pub fn validate_bodies(
    service: &str,
    operation: &str,
    bodies: &[(String, serde_json::Value)],
) -> Result<Vec<(String, Vec<String>)>, HarnessError> {
    let dir = tempfile::tempdir().map_err(|source| HarnessError::Io {
        path: std::env::temp_dir(),
        source,
    })?;
    let mut files = Vec::with_capacity(bodies.len());
    for (index, (_, body)) in bodies.iter().enumerate() {
        let path = dir.path().join(format!("{index}.json"));
        let text = serde_json::to_vec(body).map_err(|err| HarnessError::Io {
            path: path.clone(),
            source: std::io::Error::other(err),
        })?;
        std::fs::write(&path, text).map_err(|source| HarnessError::Io {
            path: path.clone(),
            source,
        })?;
        files.push(path);
    }
    let results = validate_files(service, operation, &files)?;
    Ok(bodies
        .iter()
        .zip(results)
        .map(|((name, _), result)| (name.clone(), result.errors))
        .collect())
}

/// Validates one in-memory body; returns botocore's errors (empty when valid).
pub fn validate_body(
    service: &str,
    operation: &str,
    body: &serde_json::Value,
) -> Result<Vec<String>, HarnessError> {
    let mut results = validate_bodies(service, operation, &[("body".to_owned(), body.clone())])?;
    Ok(results.pop().map(|(_, errors)| errors).unwrap_or_default())
}
