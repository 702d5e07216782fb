//! `register`: DescribeTaskDefinition -> inject -> RegisterTaskDefinition, keeping every field and tag.

use serde_json::{Map, Value};

use super::client::{DescribedTaskDefinition, EcsApi};
use super::error::EcsError;
use crate::{InjectOptions, Location, Note};

/// Tag put on every revision taskmesh registers: the ARN of the revision it was made from.
pub const SOURCE_TAG: &str = "taskmesh:source";

/// Fields of a described task definition that RegisterTaskDefinition does not take
/// (botocore's `TaskDefinition` members minus `RegisterTaskDefinitionRequest` members).
pub const OUTPUT_ONLY_FIELDS: &[&str] = &[
    "compatibilities",
    "deleteRequestedAt",
    "deregisteredAt",
    "registeredAt",
    "registeredBy",
    "requiresAttributes",
    "revision",
    "status",
    "taskDefinitionArn",
];

/// What a registration produced.
#[derive(Debug, Clone)]
pub struct Registered {
    /// The new revision's ARN.
    pub arn: String,
    pub family: String,
    pub revision: i64,
    /// The ARN of the revision it was made from.
    pub source_arn: String,
    /// The registered task definition as ECS returned it.
    pub task_definition: Value,
    /// Notes from the transformer (e.g. Fargate size changes).
    pub notes: Vec<Note>,
}

/// The task definition without its output-only fields: the shape RegisterTaskDefinition takes.
pub fn registrable(task_definition: &Value) -> Value {
    match task_definition {
        Value::Object(map) => Value::Object(
            map.iter()
                .filter(|(k, _)| !OUTPUT_ONLY_FIELDS.contains(&k.as_str()))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        ),
        other => other.clone(),
    }
}

/// The RegisterTaskDefinition request body: `task_definition` (already registrable) plus the source's
/// tags (user tags only: `aws:`-prefixed ones are reserved) with `extra_tags` set on top, replacing
/// any tag of the same key.
pub fn register_request(
    task_definition: &Value,
    source_tags: &[Value],
    extra_tags: &[(&str, &str)],
) -> Value {
    let mut request = match registrable(task_definition) {
        Value::Object(map) => map,
        _ => Map::new(),
    };
    let mut tags: Vec<Value> = source_tags
        .iter()
        .filter(|t| {
            let key = t.get("key").and_then(Value::as_str).unwrap_or_default();
            !key.starts_with("aws:") && !extra_tags.iter().any(|(k, _)| *k == key)
        })
        .cloned()
        .collect();
    for (key, value) in extra_tags {
        tags.push(serde_json::json!({"key": key, "value": value}));
    }
    if !tags.is_empty() {
        request.insert("tags".into(), Value::Array(tags));
    }
    Value::Object(request)
}

/// Whether a described revision is one taskmesh registered (it carries [`SOURCE_TAG`]).
pub fn registered_by_taskmesh(described: &DescribedTaskDefinition) -> bool {
    described.tag(SOURCE_TAG).is_some()
}

/// The RegisterTaskDefinition request that meshes `described`: injected with `opts`, the source's
/// tags kept, `taskmesh:source=<source ARN>` and `extra_tags` added.
pub fn meshed_request(
    described: &DescribedTaskDefinition,
    opts: &InjectOptions,
    extra_tags: &[(&str, &str)],
) -> Result<(Value, Vec<Note>), crate::TransformError> {
    let source_arn = described.arn();
    let injected = crate::inject_task_definition(
        &registrable(&described.task_definition),
        opts,
        &Location::file(source_arn),
    )?;
    let mut tags = vec![(SOURCE_TAG, source_arn)];
    tags.extend_from_slice(extra_tags);
    Ok((
        register_request(&injected.value, &described.tags, &tags),
        injected.notes,
    ))
}

impl Registered {
    /// The result of a registration from ECS's answer.
    pub fn from_response(task_definition: Value, source_arn: &str, notes: Vec<Note>) -> Self {
        Self {
            arn: str_field(&task_definition, "taskDefinitionArn"),
            family: str_field(&task_definition, "family"),
            revision: task_definition
                .get("revision")
                .and_then(Value::as_i64)
                .unwrap_or_default(),
            source_arn: source_arn.to_string(),
            task_definition,
            notes,
        }
    }
}

/// Describe `reference`, inject with `opts`, register the result in the same family with the
/// source's tags, `taskmesh:source=<source ARN>` and `extra_tags`.
pub async fn register_meshed(
    api: &EcsApi,
    reference: &str,
    opts: &InjectOptions,
    extra_tags: &[(&str, &str)],
) -> Result<Registered, EcsError> {
    let described = api.describe_task_definition(reference).await?;
    let (request, notes) = meshed_request(&described, opts, extra_tags)?;
    let task_definition = api.register_task_definition(&request).await?;
    Ok(Registered::from_response(
        task_definition,
        described.arn(),
        notes,
    ))
}

fn str_field(v: &Value, key: &str) -> String {
    v.get(key)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}
