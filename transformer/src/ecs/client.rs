//! The ECS calls taskmesh makes, with task definitions kept as raw JSON (see [`super::raw_body`]).

use aws_sdk_ecs::types::TaskDefinitionField;
use serde_json::Value;

use super::error::EcsError;
use super::raw_body::{CaptureResponseBody, ReplaceRequestBody};

/// A task definition as DescribeTaskDefinition returned it, untouched.
#[derive(Debug, Clone, PartialEq)]
pub struct DescribedTaskDefinition {
    /// The `taskDefinition` object (API camelCase shape, every field ECS sent).
    pub task_definition: Value,
    /// The `tags` list (`[{key, value}]`), empty when it has none.
    pub tags: Vec<Value>,
}

impl DescribedTaskDefinition {
    /// `taskDefinitionArn`, or "" when ECS sent none.
    pub fn arn(&self) -> &str {
        self.task_definition
            .get("taskDefinitionArn")
            .and_then(Value::as_str)
            .unwrap_or_default()
    }

    /// The value of tag `key`, if present.
    pub fn tag(&self, key: &str) -> Option<&str> {
        self.tags.iter().find_map(|t| {
            (t.get("key").and_then(Value::as_str) == Some(key))
                .then(|| t.get("value").and_then(Value::as_str).unwrap_or_default())
        })
    }
}

/// ECS task-definition calls through `aws-sdk-ecs`.
#[derive(Debug, Clone)]
pub struct EcsApi {
    client: aws_sdk_ecs::Client,
}

impl EcsApi {
    /// A client from the standard chain: credentials, region, `AWS_ENDPOINT_URL`, retries.
    pub async fn from_env() -> Self {
        let config = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
        Self::new(aws_sdk_ecs::Client::new(&config))
    }

    pub fn new(client: aws_sdk_ecs::Client) -> Self {
        Self { client }
    }

    pub fn client(&self) -> &aws_sdk_ecs::Client {
        &self.client
    }

    /// DescribeTaskDefinition (with tags) for `FAMILY`, `FAMILY:REV` or an ARN.
    pub async fn describe_task_definition(
        &self,
        reference: &str,
    ) -> Result<DescribedTaskDefinition, EcsError> {
        const OP: &str = "DescribeTaskDefinition";
        let capture = CaptureResponseBody::new();
        self.client
            .describe_task_definition()
            .task_definition(reference)
            .include(TaskDefinitionField::Tags)
            .customize()
            .interceptor(capture.clone())
            .send()
            .await
            .map_err(|e| EcsError::from_sdk(OP, e))?;
        let mut body = raw_json(OP, capture.take())?;
        let task_definition = match body.get_mut("taskDefinition").map(Value::take) {
            Some(td @ Value::Object(_)) => td,
            _ => {
                return Err(EcsError::Response {
                    operation: OP,
                    message: format!("no taskDefinition object for {reference}"),
                });
            }
        };
        let tags = match body.get_mut("tags").map(Value::take) {
            Some(Value::Array(tags)) => tags,
            _ => Vec::new(),
        };
        Ok(DescribedTaskDefinition {
            task_definition,
            tags,
        })
    }

    /// RegisterTaskDefinition with `request` (the whole request body: task definition fields and
    /// `tags`) sent byte for byte. Returns the registered `taskDefinition` object as ECS sent it.
    pub async fn register_task_definition(&self, request: &Value) -> Result<Value, EcsError> {
        const OP: &str = "RegisterTaskDefinition";
        let family = request
            .get("family")
            .and_then(Value::as_str)
            .ok_or_else(|| EcsError::Response {
                operation: OP,
                message: "the request has no family".into(),
            })?;
        let body = serde_json::to_vec(request).map_err(|e| EcsError::Response {
            operation: OP,
            message: e.to_string(),
        })?;
        let capture = CaptureResponseBody::new();
        // The typed input only has to pass the SDK's own checks; its body is replaced before signing.
        self.client
            .register_task_definition()
            .family(family)
            .customize()
            .interceptor(ReplaceRequestBody::new(body))
            .interceptor(capture.clone())
            .send()
            .await
            .map_err(|e| EcsError::from_sdk(OP, e))?;
        let mut body = raw_json(OP, capture.take())?;
        match body.get_mut("taskDefinition").map(Value::take) {
            Some(td @ Value::Object(_)) => Ok(td),
            _ => Err(EcsError::Response {
                operation: OP,
                message: "no taskDefinition object in the response".into(),
            }),
        }
    }

    /// DeregisterTaskDefinition.
    pub async fn deregister_task_definition(&self, arn: &str) -> Result<(), EcsError> {
        self.client
            .deregister_task_definition()
            .task_definition(arn)
            .send()
            .await
            .map_err(|e| EcsError::from_sdk("DeregisterTaskDefinition", e))?;
        Ok(())
    }

    /// The task definition ARN of an ECS service revision (DescribeServiceRevisions).
    pub async fn service_revision_task_definition(
        &self,
        service_revision_arn: &str,
    ) -> Result<String, EcsError> {
        const OP: &str = "DescribeServiceRevisions";
        let out = self
            .client
            .describe_service_revisions()
            .service_revision_arns(service_revision_arn)
            .send()
            .await
            .map_err(|e| EcsError::from_sdk(OP, e))?;
        out.service_revisions()
            .iter()
            .find_map(|r| r.task_definition().map(str::to_string))
            .ok_or_else(|| {
                let failure = out
                    .failures()
                    .iter()
                    .map(|f| format!("{}: {}", f.arn().unwrap_or("?"), f.reason().unwrap_or("?")))
                    .collect::<Vec<_>>()
                    .join("; ");
                EcsError::Response {
                    operation: OP,
                    message: format!(
                        "no task definition for service revision {service_revision_arn} {failure}"
                    ),
                }
            })
    }
}

fn raw_json(operation: &'static str, body: Option<Vec<u8>>) -> Result<Value, EcsError> {
    let body = body.ok_or_else(|| EcsError::Response {
        operation,
        message: "the response body was not captured".into(),
    })?;
    serde_json::from_slice(&body).map_err(|e| EcsError::Response {
        operation,
        message: format!("not JSON: {e}"),
    })
}
