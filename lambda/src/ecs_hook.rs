//! ECS blue/green deployment lifecycle hook (e.g. at `PRE_SCALE_UP`): admit the target service
//! revision only if its task definition is meshed and consistent. Validation only: the answer is
//! `hookStatus` SUCCEEDED or FAILED, with the reason.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::admission;
use crate::services::Services;

/// The invocation payload (lambda-anchors §3a); unknown fields are kept, not rejected.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct EcsHookEvent {
    pub execution_details: ExecutionDetails,
    pub hook_details: Value,
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

/// `executionDetails`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ExecutionDetails {
    pub service_arn: Option<String>,
    pub target_service_revision_arn: Option<String>,
    pub test_traffic_weights: Map<String, Value>,
    pub production_traffic_weights: Map<String, Value>,
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

/// `SUCCEEDED` or `FAILED`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum HookStatus {
    Succeeded,
    Failed,
}

/// The hook's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EcsHookResponse {
    pub hook_status: HookStatus,
    /// Why (also logged): the ECS console and the function's logs show it.
    pub reason: String,
}

impl EcsHookResponse {
    fn failed(reason: String) -> Self {
        tracing::warn!(%reason, "ECS lifecycle hook: refusing the deployment");
        Self {
            hook_status: HookStatus::Failed,
            reason,
        }
    }
}

/// Looks up the target revision's task definition and validates it.
pub async fn handle_ecs_hook(event: &EcsHookEvent, services: &Services) -> EcsHookResponse {
    let Some(revision) = event
        .execution_details
        .target_service_revision_arn
        .as_deref()
    else {
        return EcsHookResponse::failed(
            "executionDetails.targetServiceRevisionArn is missing: cannot tell which revision to check"
                .into(),
        );
    };
    let api = services.ecs().await;
    let td_arn = match api.service_revision_task_definition(revision).await {
        Ok(arn) => arn,
        Err(e) => return EcsHookResponse::failed(format!("service revision {revision}: {e}")),
    };
    let described = match api.describe_task_definition(&td_arn).await {
        Ok(d) => d,
        Err(e) => return EcsHookResponse::failed(format!("service revision {revision}: {e}")),
    };
    validate(&described.task_definition, &td_arn)
}

/// The verdict on one task definition (API shape).
pub fn validate(task_definition: &Value, arn: &str) -> EcsHookResponse {
    match admission::validate_api_task_definition(task_definition, arn) {
        Ok(()) => EcsHookResponse {
            hook_status: HookStatus::Succeeded,
            reason: format!("{arn} is meshed and consistent"),
        },
        Err(problems) => EcsHookResponse::failed(problems),
    }
}
