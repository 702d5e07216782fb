//! Is a task definition meshed and consistent? The one answer shared by the hooks (which admit or
//! refuse a deployment) and the macro (which never returns output that fails it).

use serde_json::{Map, Value};
use taskmesh::{Document, InjectOptions, Location, Severity};

/// The CloudFormation resource type the mesh applies to.
pub const TASK_DEFINITION_TYPE: &str = "AWS::ECS::TaskDefinition";

/// Checks an ECS API-shaped (camelCase) task definition, e.g. from DescribeTaskDefinition.
/// `source` names it in messages (usually its ARN).
pub fn validate_api_task_definition(td: &Value, source: &str) -> Result<(), String> {
    let mut problems = Vec::new();
    if !taskmesh::is_meshed(td) {
        problems.push(format!(
            "{source}: not meshed: no container carries the docker label {} (run taskmesh inject, \
             the TaskMesh macro or Custom::MeshTaskDefinition)",
            taskmesh::INJECTED_LABEL
        ));
    }
    problems.extend(
        taskmesh::check_task_definition(td, &Location::file(source))
            .into_iter()
            .filter(|f| f.severity == Severity::Error)
            .map(|f| f.to_string()),
    );
    verdict(problems)
}

/// Checks CloudFormation `Properties` of one `AWS::ECS::TaskDefinition` (PascalCase, intrinsics
/// allowed). `source` names the template in messages.
pub fn validate_cfn_task_definition(
    properties: &Value,
    logical_id: &str,
    source: &str,
) -> Result<(), String> {
    let template = serde_json::json!({
        "Resources": { logical_id: { "Type": TASK_DEFINITION_TYPE, "Properties": properties } }
    });
    validate_cfn_template(&template, &[logical_id.to_string()], source)
}

/// Checks the named task-definition resources of a CloudFormation template.
pub fn validate_cfn_template(
    template: &Value,
    logical_ids: &[String],
    source: &str,
) -> Result<(), String> {
    if logical_ids.is_empty() {
        return Ok(());
    }
    let resources = template.get("Resources").and_then(Value::as_object);
    let mut problems = Vec::new();
    for id in logical_ids {
        let props = resources
            .and_then(|r| r.get(id))
            .and_then(|r| r.get("Properties"));
        if !props.is_some_and(cfn_is_meshed) {
            problems.push(format!(
                "{}: not meshed: no container carries the docker label {}",
                Location::file(source).with_resource(id.clone()),
                taskmesh::INJECTED_LABEL
            ));
        }
    }
    let bytes = serde_json::to_vec(template).map_err(|e| e.to_string())?;
    let doc = Document::parse(&bytes, source).map_err(|e| e.to_string())?;
    let opts = InjectOptions {
        resources: logical_ids.to_vec(),
        ..InjectOptions::default()
    };
    problems.extend(
        taskmesh::check_document(&doc, &opts)
            .into_iter()
            .filter(|f| f.severity == Severity::Error)
            .map(|f| f.to_string()),
    );
    verdict(problems)
}

/// Whether CloudFormation task-definition properties carry an injected container (the label may
/// sit inside `Fn::If` branches, so every `DockerLabels` map is looked at).
pub fn cfn_is_meshed(properties: &Value) -> bool {
    properties
        .get("ContainerDefinitions")
        .is_some_and(has_injected_label)
}

fn has_injected_label(v: &Value) -> bool {
    match v {
        Value::Object(map) => {
            labels_injected(map.get("DockerLabels")) || map.values().any(has_injected_label)
        }
        Value::Array(items) => items.iter().any(has_injected_label),
        _ => false,
    }
}

fn labels_injected(labels: Option<&Value>) -> bool {
    labels
        .and_then(Value::as_object)
        .is_some_and(|m: &Map<String, Value>| m.contains_key(taskmesh::INJECTED_LABEL))
}

fn verdict(problems: Vec<String>) -> Result<(), String> {
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("; "))
    }
}
