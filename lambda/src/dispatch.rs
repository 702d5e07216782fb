//! One entry point for every event: decide what kind of event arrived from its keys and hand it
//! to that handler. An event of no known kind is an error naming the keys it had.

use std::time::{Duration, SystemTime};

use serde::Deserialize;
use serde_json::Value;

use crate::cfn_hook::{self, CfnHookEvent};
use crate::custom_resource::{self, CustomResourceError};
use crate::ecs_hook::{self, EcsHookEvent};
use crate::macro_transform;
use crate::services::Services;

/// The kinds of event the function serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// CloudFormation custom resource (`RequestType` + `ResponseURL`).
    CustomResource,
    /// CloudFormation macro (`fragment` + `transformId`).
    Macro,
    /// ECS blue/green lifecycle hook (`executionDetails`).
    EcsHook,
    /// CloudFormation Lambda hook (`actionInvocationPoint` + `requestData`).
    CfnHook,
}

/// Why an invocation failed.
#[derive(thiserror::Error, Debug)]
pub enum DispatchError {
    #[error(
        "unknown event: expected a CloudFormation macro (fragment, transformId), custom resource \
         (RequestType, ResponseURL), ECS lifecycle hook (executionDetails) or CloudFormation hook \
         (actionInvocationPoint, requestData); keys seen: [{}]", keys.join(", ")
    )]
    UnknownEvent { keys: Vec<String> },
    #[error("unknown event: expected a JSON object, got {0}")]
    NotAnObject(&'static str),
    #[error("malformed {kind:?} event: {message}")]
    Malformed { kind: EventKind, message: String },
    #[error(transparent)]
    CustomResource(#[from] CustomResourceError),
}

/// Deadlines before this (2001-09-09, in epoch milliseconds) are not points in time.
const EPOCH_MS_FLOOR: u64 = 1_000_000_000_000;

/// The invocation deadline from the runtime's `lambda-runtime-deadline-ms` value. Lambda sends epoch
/// milliseconds; `cargo lambda watch` (1.9) sends the function timeout itself (e.g. `600000`), which
/// is read as that long from `now`.
pub fn invocation_deadline(deadline_ms: u64, now: SystemTime) -> SystemTime {
    if deadline_ms < EPOCH_MS_FLOOR {
        now + Duration::from_millis(deadline_ms)
    } else {
        SystemTime::UNIX_EPOCH + Duration::from_millis(deadline_ms)
    }
}

/// Which kind of event `event` is.
pub fn classify(event: &Value) -> Result<EventKind, DispatchError> {
    let Value::Object(map) = event else {
        return Err(DispatchError::NotAnObject(match event {
            Value::Null => "null",
            Value::Bool(_) => "a boolean",
            Value::Number(_) => "a number",
            Value::String(_) => "a string",
            Value::Array(_) => "a list",
            Value::Object(_) => "an object",
        }));
    };
    let has = |k: &str| map.contains_key(k);
    if has("RequestType") && has("ResponseURL") {
        Ok(EventKind::CustomResource)
    } else if has("fragment") && has("transformId") {
        Ok(EventKind::Macro)
    } else if has("actionInvocationPoint") && has("requestData") {
        Ok(EventKind::CfnHook)
    } else if has("executionDetails") {
        Ok(EventKind::EcsHook)
    } else {
        let mut keys: Vec<String> = map.keys().cloned().collect();
        keys.sort();
        Err(DispatchError::UnknownEvent { keys })
    }
}

/// Handles one event that must be done by `deadline`; returns the function's result.
pub async fn dispatch(
    event: Value,
    deadline: SystemTime,
    services: &Services,
) -> Result<Value, DispatchError> {
    let kind = classify(&event)?;
    let remaining_ms = deadline
        .duration_since(SystemTime::now())
        .map(|d| d.as_millis())
        .unwrap_or(0);
    tracing::info!(?kind, remaining_ms, "event");
    let malformed = |message: String| DispatchError::Malformed { kind, message };
    let answer = match kind {
        EventKind::Macro => to_value(&macro_transform::handle_macro_event(&event)),
        EventKind::CustomResource => {
            let response =
                custom_resource::handle_custom_resource(&event, deadline, services).await?;
            to_value(&response)
        }
        EventKind::EcsHook => {
            let hook = EcsHookEvent::deserialize(&event).map_err(|e| malformed(e.to_string()))?;
            to_value(&ecs_hook::handle_ecs_hook(&hook, services).await)
        }
        EventKind::CfnHook => {
            let hook = CfnHookEvent::deserialize(&event).map_err(|e| malformed(e.to_string()))?;
            to_value(&cfn_hook::handle_cfn_hook(&hook))
        }
    };
    Ok(answer)
}

fn to_value<T: serde::Serialize>(v: &T) -> Value {
    // Our response types are plain strings, maps and enums: serializing them cannot fail.
    serde_json::to_value(v).unwrap_or(Value::Null)
}

impl From<DispatchError> for lambda_runtime::Diagnostic {
    fn from(e: DispatchError) -> Self {
        let error_type = match &e {
            DispatchError::UnknownEvent { .. } | DispatchError::NotAnObject(_) => "UnknownEvent",
            DispatchError::Malformed { .. } => "MalformedEvent",
            DispatchError::CustomResource(_) => "ResponseNotDelivered",
        };
        lambda_runtime::Diagnostic {
            error_type: error_type.into(),
            error_message: e.to_string(),
        }
    }
}
