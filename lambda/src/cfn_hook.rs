//! CloudFormation Lambda hook: before an `AWS::ECS::TaskDefinition` is created or updated, check
//! that it is meshed and consistent (an account-wide guardrail). Validation only.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::admission::{self, TASK_DEFINITION_TYPE};

/// Resource-operation input (lambda-anchors §3d).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct CfnHookEvent {
    pub aws_account_id: String,
    pub stack_id: String,
    pub client_request_token: String,
    pub hook_type_name: String,
    pub action_invocation_point: String,
    pub request_data: RequestData,
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

/// `requestData`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct RequestData {
    pub target_name: String,
    pub target_type: String,
    pub target_logical_id: String,
    pub target_model: TargetModel,
    /// For STACK / CHANGE_SET targets: a pre-signed URL to the template (not handled here).
    pub payload: Option<Value>,
}

/// `requestData.targetModel`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct TargetModel {
    pub resource_properties: Value,
    pub previous_resource_properties: Value,
}

/// `SUCCESS`, `FAILED`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum CfnHookStatus {
    Success,
    Failed,
}

/// The hook's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CfnHookResponse {
    pub hook_status: CfnHookStatus,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_code: Option<String>,
    pub message: String,
    pub client_request_token: String,
}

/// Most CloudFormation keeps of `message`.
const MAX_MESSAGE_CHARS: usize = 4096;

/// Validates the target of one resource operation.
pub fn handle_cfn_hook(event: &CfnHookEvent) -> CfnHookResponse {
    let data = &event.request_data;
    let token = event.client_request_token.clone();
    let ok = |message: String| CfnHookResponse {
        hook_status: CfnHookStatus::Success,
        error_code: None,
        message,
        client_request_token: token.clone(),
    };
    let target = if data.target_type.is_empty() {
        &data.target_name
    } else {
        &data.target_type
    };
    if target != TASK_DEFINITION_TYPE {
        return ok(format!("{target}: not a task definition; nothing to check"));
    }
    if event.action_invocation_point.starts_with("DELETE") {
        return ok(format!(
            "{}: deletion is always allowed",
            data.target_logical_id
        ));
    }
    if data.payload.is_some() && data.target_model.resource_properties.is_null() {
        return CfnHookResponse {
            hook_status: CfnHookStatus::Failed,
            error_code: Some("InternalFailure".into()),
            message: "this hook validates RESOURCE targets; configure TargetOperations: [RESOURCE]"
                .into(),
            client_request_token: token,
        };
    }
    let logical_id = if data.target_logical_id.is_empty() {
        "TaskDefinition"
    } else {
        &data.target_logical_id
    };
    let source = if event.stack_id.is_empty() {
        "stack"
    } else {
        &event.stack_id
    };
    match admission::validate_cfn_task_definition(
        &data.target_model.resource_properties,
        logical_id,
        source,
    ) {
        Ok(()) => ok(format!("{logical_id} is meshed and consistent")),
        Err(problems) => CfnHookResponse {
            hook_status: CfnHookStatus::Failed,
            error_code: Some("NonCompliant".into()),
            message: problems.chars().take(MAX_MESSAGE_CHARS).collect(),
            client_request_token: token,
        },
    }
}
