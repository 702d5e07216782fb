//! Telling the input formats apart. JSON first (an object with `Resources` /
//! `AWSTemplateFormatVersion` is a template; `taskDefinition` or read-only fields mark describe
//! output; `containerDefinitions` is API JSON), then YAML, which must be a CloudFormation template.

use serde_json::Value;

use super::{Format, describe, yaml};
use crate::error::{Location, TransformError};

/// Detect the format of `text` and parse it.
pub fn detect(text: &str, loc: &Location) -> Result<(Format, Value), TransformError> {
    let trimmed = text.trim_start();
    if trimmed.is_empty() {
        return Err(parse_err(
            loc,
            "the input is empty; expected a task definition or a CloudFormation template",
        ));
    }
    let looks_json = trimmed.starts_with('{') || trimmed.starts_with('[');
    match serde_json::from_str::<Value>(text) {
        Ok(v) => return classify_json(v, loc),
        Err(e) if looks_json => {
            return Err(parse_err(
                loc,
                format!(
                    "invalid JSON at line {}, column {}: {e}",
                    e.line(),
                    e.column()
                ),
            ));
        }
        Err(_) => {}
    }
    let v = yaml::from_yaml_str(text).map_err(|m| parse_err(loc, m))?;
    match &v {
        Value::Object(m) if is_template(m) => Ok((Format::CfnYaml, v)),
        Value::Object(m)
            if m.contains_key("containerDefinitions") || m.contains_key("taskDefinition") =>
        {
            Err(parse_err(
                loc,
                "a task definition in YAML is not supported; convert it to JSON (the register-task-definition --cli-input-json shape) or give a CloudFormation template",
            ))
        }
        _ => Err(parse_err(
            loc,
            "YAML input must be a CloudFormation template with a Resources section",
        )),
    }
}

fn is_template(m: &serde_json::Map<String, Value>) -> bool {
    m.contains_key("Resources") || m.contains_key("AWSTemplateFormatVersion")
}

fn classify_json(v: Value, loc: &Location) -> Result<(Format, Value), TransformError> {
    let Value::Object(m) = &v else {
        return Err(parse_err(
            loc,
            "expected a JSON object (a task definition or a CloudFormation template)",
        ));
    };
    if is_template(m) {
        return Ok((Format::CfnJson, v));
    }
    if m.get("taskDefinition").is_some_and(Value::is_object) {
        return Ok((Format::DescribeOutput, v));
    }
    if m.contains_key("containerDefinitions") {
        let described = describe::READ_ONLY_FIELDS
            .iter()
            .any(|f| m.contains_key(*f));
        return Ok((
            if described {
                Format::DescribeOutput
            } else {
                Format::ApiJson
            },
            v,
        ));
    }
    Err(parse_err(
        loc,
        "not a task definition or template: expected `containerDefinitions` (ECS API JSON), `taskDefinition` (describe-task-definition output) or `Resources` (CloudFormation)",
    ))
}

fn parse_err(loc: &Location, message: impl Into<String>) -> TransformError {
    TransformError::Parse {
        location: loc.clone(),
        message: message.into(),
    }
}

/// The indentation unit of a JSON text (the leading whitespace of its first indented line),
/// so output keeps the input's layout; two spaces when there is none.
pub fn json_indent(text: &str) -> String {
    text.lines()
        .skip(1)
        .map(|l| &l[..l.len() - l.trim_start().len()])
        .find(|ws| !ws.is_empty())
        .map_or_else(|| "  ".to_string(), str::to_string)
}
