//! The `Custom::MeshTaskDefinition` custom resource: Create/Update register a meshed revision of the
//! source task definition (PhysicalResourceId = its ARN), Delete deregisters only revisions taskmesh
//! registered. Every request gets exactly one answer PUT to its `ResponseURL`, whatever happens
//! ([`guard`]); only a failed PUT fails the invocation, so Lambda's retry can deliver it.

pub mod guard;
pub mod properties;
pub mod response;

use std::collections::BTreeMap;
use std::time::SystemTime;

use aws_lambda_events::event::cloudformation::CloudFormationCustomResourceRequest;
use serde_json::Value;
use taskmesh::ecs::{self, EcsError};

use crate::services::Services;
use properties::MeshTaskDefinitionProperties;
use response::{CfnResponse, DeliveryError, ResponseTarget};

/// Tag on revisions registered by the custom resource: the CloudFormation RequestId, so a retried
/// request finds the revision an earlier attempt registered instead of registering another.
pub const REQUEST_TAG: &str = "taskmesh:request";

/// Why an invocation failed (the answer could not be delivered).
#[derive(thiserror::Error, Debug)]
pub enum CustomResourceError {
    #[error("custom resource event has no ResponseURL; nowhere to answer")]
    NoResponseUrl,
    #[error("answer for {logical_resource_id} not delivered: {source}")]
    Delivery {
        logical_resource_id: String,
        source: DeliveryError,
    },
}

/// Handles one custom-resource event that must be finished by `deadline`, and PUTs the answer.
pub async fn handle_custom_resource(
    event: &Value,
    deadline: SystemTime,
    services: &Services,
) -> Result<CfnResponse, CustomResourceError> {
    let target = ResponseTarget::from_event(event).ok_or(CustomResourceError::NoResponseUrl)?;
    let response = guard::answer_within(&target, deadline, work(event, &target, services)).await;
    deliver(&target, &response, services).await?;
    Ok(response)
}

/// PUTs `response` to the target's ResponseURL.
pub async fn deliver(
    target: &ResponseTarget,
    response: &CfnResponse,
    services: &Services,
) -> Result<(), CustomResourceError> {
    let delivery = async {
        services
            .responder()
            .await?
            .put(&target.response_url, response)
            .await
    };
    match delivery.await {
        Ok(()) => {
            tracing::info!(
                logical_resource_id = %target.logical_resource_id,
                status = ?response.status,
                physical_resource_id = %response.physical_resource_id,
                reason = response.reason.as_deref().unwrap_or(""),
                "answered CloudFormation"
            );
            Ok(())
        }
        Err(source) => Err(CustomResourceError::Delivery {
            logical_resource_id: target.logical_resource_id.clone(),
            source,
        }),
    }
}

async fn work(
    event: &Value,
    target: &ResponseTarget,
    services: &Services,
) -> Result<CfnResponse, String> {
    let request: CloudFormationCustomResourceRequest<Value, Value> =
        serde_json::from_value(event.clone()).map_err(|e| {
            format!(
                "{}: malformed custom resource request: {e}",
                target.logical_resource_id
            )
        })?;
    match request {
        CloudFormationCustomResourceRequest::Create(r) => {
            create_or_update(target, &r.resource_properties, services).await
        }
        CloudFormationCustomResourceRequest::Update(r) => {
            create_or_update(target, &r.resource_properties, services).await
        }
        CloudFormationCustomResourceRequest::Delete(r) => {
            delete(target, &r.physical_resource_id, services).await
        }
        _ => Err(format!(
            "{}: RequestType '{}' is not supported",
            target.logical_resource_id, target.request_type
        )),
    }
}

async fn create_or_update(
    target: &ResponseTarget,
    properties: &Value,
    services: &Services,
) -> Result<CfnResponse, String> {
    let id = &target.logical_resource_id;
    let props =
        MeshTaskDefinitionProperties::parse(properties).map_err(|e| format!("{id}: {e}"))?;
    let api = services.ecs().await;
    let described = api
        .describe_task_definition(&props.task_definition)
        .await
        .map_err(|e| {
            format!(
                "{id}: property TaskDefinition '{}': {e}",
                props.task_definition
            )
        })?;
    let family = described
        .task_definition
        .get("family")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();

    // A retry of this very request: the newest revision of the family is the one it registered.
    if !target.request_id.is_empty()
        && let Ok(latest) = api.describe_task_definition(&family).await
    {
        let active = latest.task_definition.get("status").and_then(Value::as_str) == Some("ACTIVE");
        if active && latest.tag(REQUEST_TAG) == Some(target.request_id.as_str()) {
            let registered =
                ecs::Registered::from_response(latest.task_definition, described.arn(), Vec::new());
            return Ok(success(
                target,
                &registered,
                Some("already registered by an earlier attempt of this request".into()),
            ));
        }
    }

    let (request, notes) = ecs::meshed_request(
        &described,
        &props.options,
        &[(REQUEST_TAG, target.request_id.as_str())],
    )
    .map_err(|e| format!("{id}: {e}"))?;
    let task_definition = api
        .register_task_definition(&request)
        .await
        .map_err(|e| format!("{id}: {e}"))?;
    let registered = ecs::Registered::from_response(task_definition, described.arn(), notes);
    let reason = (!registered.notes.is_empty()).then(|| {
        registered
            .notes
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; ")
    });
    Ok(success(target, &registered, reason))
}

fn success(
    target: &ResponseTarget,
    registered: &ecs::Registered,
    reason: Option<String>,
) -> CfnResponse {
    let data = BTreeMap::from([
        ("TaskDefinitionArn".to_string(), registered.arn.clone()),
        ("Family".to_string(), registered.family.clone()),
        ("Revision".to_string(), registered.revision.to_string()),
        (
            "SourceTaskDefinitionArn".to_string(),
            registered.source_arn.clone(),
        ),
    ]);
    target.succeeded(registered.arn.clone(), reason, data)
}

/// Whether `id` looks like a task definition ARN (anything else was never registered by us).
fn is_task_definition_arn(id: &str) -> bool {
    id.starts_with("arn:") && id.contains(":task-definition/")
}

fn not_found(e: &EcsError) -> bool {
    matches!(
        e.aws_code(),
        Some("ClientException" | "InvalidParameterException")
    )
}

async fn delete(
    target: &ResponseTarget,
    physical_id: &str,
    services: &Services,
) -> Result<CfnResponse, String> {
    let id = &target.logical_resource_id;
    let done = |reason: String| {
        Ok(target.succeeded(physical_id.to_string(), Some(reason), BTreeMap::new()))
    };
    if !is_task_definition_arn(physical_id) {
        return done(format!(
            "nothing to delete: '{physical_id}' is not a task definition taskmesh registered"
        ));
    }
    let api = services.ecs().await;
    let described = match api.describe_task_definition(physical_id).await {
        Ok(d) => d,
        Err(e) if not_found(&e) => return done(format!("{physical_id} is already gone ({e})")),
        Err(e) => return Err(format!("{id}: {e}")),
    };
    if !ecs::registered_by_taskmesh(&described) {
        return done(format!(
            "{physical_id} has no {} tag: not registered by taskmesh, left alone",
            ecs::SOURCE_TAG
        ));
    }
    if described
        .task_definition
        .get("status")
        .and_then(Value::as_str)
        == Some("INACTIVE")
    {
        return done(format!("{physical_id} is already deregistered"));
    }
    match api.deregister_task_definition(physical_id).await {
        Ok(()) => done(format!("deregistered {physical_id}")),
        Err(e) if not_found(&e) => done(format!("{physical_id} is already gone ({e})")),
        Err(e) => Err(format!("{id}: {e}")),
    }
}
