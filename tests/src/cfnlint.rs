//! Runs cfn-lint (from the test venv) with JSON output on CloudFormation templates and returns
//! its findings, split into errors, warnings and informational notes.
//!
//! cfn-lint is slow to start (it loads every resource schema), so [`lint_files`] takes a batch.
//! [`new_errors`] compares the findings on a transformed template with those on its input, so
//! tests can assert that a transformation adds no error while inputs keep their known findings.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde::Deserialize;

use crate::HarnessError;
use crate::venv::venv;

/// Severity of a finding (cfn-lint's `Level`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
pub enum Level {
    Error,
    Warning,
    Informational,
}

/// One cfn-lint finding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// Template file.
    pub file: PathBuf,
    /// Rule id, e.g. `E3030`.
    pub rule: String,
    pub level: Level,
    pub message: String,
    /// Path in the template, e.g. `["Resources", "TaskDef", "Properties", "Cpu"]`.
    pub path: Vec<String>,
    /// 1-based line of the start of the finding.
    pub line: u64,
}

impl Finding {
    /// The resource logical id the finding is about, if it is under `Resources`.
    pub fn resource(&self) -> Option<&str> {
        match self.path.as_slice() {
            [first, id, ..] if first == "Resources" => Some(id),
            _ => None,
        }
    }
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}: {} {:?} at {}: {}",
            self.file.display(),
            self.line,
            self.rule,
            self.level,
            self.path.join("/"),
            self.message
        )
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RawFinding {
    filename: PathBuf,
    level: Level,
    message: String,
    rule: RawRule,
    location: RawLocation,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RawRule {
    id: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RawLocation {
    #[serde(default)]
    path: Vec<serde_json::Value>,
    start: RawPosition,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RawPosition {
    line_number: u64,
}

/// Lints every file in one cfn-lint run (`cfn-lint --format json`; all regions' rules as
/// configured by default, i.e. us-east-1). Findings of all files, in cfn-lint's order.
pub fn lint_files<P: AsRef<Path>>(files: &[P]) -> Result<Vec<Finding>, HarnessError> {
    if files.is_empty() {
        return Ok(Vec::new());
    }
    let cfn_lint = venv().tool("cfn-lint");
    let output = Command::new(&cfn_lint)
        .args(["--format", "json", "--"])
        .args(files.iter().map(AsRef::as_ref))
        .output()
        .map_err(|source| HarnessError::Spawn {
            program: cfn_lint.display().to_string(),
            source,
        })?;
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    // Exit status is a bit set (2 errors, 4 warnings, 8 informational); 1 means cfn-lint
    // itself failed. Either way the JSON on stdout is the answer when it parses.
    let raw: Vec<RawFinding> =
        serde_json::from_slice(&output.stdout).map_err(|err| HarnessError::Tool {
            tool: "cfn-lint".to_owned(),
            status: output.status.to_string(),
            message: format!(
                "no JSON findings on stdout ({err}): {}",
                String::from_utf8_lossy(&output.stdout)
            ),
            stderr: stderr.clone(),
        })?;
    if output.status.code() == Some(1) && raw.is_empty() {
        return Err(HarnessError::Tool {
            tool: "cfn-lint".to_owned(),
            status: output.status.to_string(),
            message: "cfn-lint failed without findings".to_owned(),
            stderr,
        });
    }
    Ok(raw
        .into_iter()
        .map(|finding| Finding {
            file: finding.filename,
            rule: finding.rule.id,
            level: finding.level,
            message: finding.message,
            path: finding
                .location
                .path
                .iter()
                .map(|segment| match segment {
                    serde_json::Value::String(text) => text.clone(),
                    other => other.to_string(),
                })
                .collect(),
            line: finding.location.start.line_number,
        })
        .collect())
}

/// Lints one template.
pub fn lint_file(file: &Path) -> Result<Vec<Finding>, HarnessError> {
    lint_files(&[file])
}

/// The findings of `level` among `findings`.
pub fn of_level(findings: &[Finding], level: Level) -> Vec<&Finding> {
    findings.iter().filter(|f| f.level == level).collect()
}

/// Errors in `after` (a transformed template) that `before` (its input) does not have.
///
/// Two errors are the same when rule, resource and message agree; each error in `before`
/// excuses at most one in `after`. Paths and lines are not compared, because a transformation
/// moves text around.
pub fn new_errors<'a>(before: &[Finding], after: &'a [Finding]) -> Vec<&'a Finding> {
    let key = |f: &Finding| {
        (
            f.rule.clone(),
            f.resource().map(str::to_owned),
            f.message.clone(),
        )
    };
    let mut known: HashMap<_, usize> = HashMap::new();
    for finding in before.iter().filter(|f| f.level == Level::Error) {
        *known.entry(key(finding)).or_default() += 1;
    }
    after
        .iter()
        .filter(|f| f.level == Level::Error)
        .filter(|finding| match known.get_mut(&key(finding)) {
            Some(count) if *count > 0 => {
                *count -= 1;
                false
            }
            _ => true,
        })
        .collect()
}
