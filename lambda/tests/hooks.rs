//! The validating hooks: ECS blue/green lifecycle hook (task definitions read from moto) and the
//! CloudFormation Lambda hook (event files).

mod support;

use serde_json::{Value, json};
use support::*;
use taskmesh::InjectOptions;
use taskmesh_lambda::Services;
use taskmesh_lambda::cfn_hook::{CfnHookEvent, handle_cfn_hook};
use taskmesh_lambda::ecs_hook::{self, EcsHookEvent, HookStatus, handle_ecs_hook};
use taskmesh_lambda::macro_transform::handle_macro_event;

fn mesh_options() -> InjectOptions {
    InjectOptions {
        mesh: Some("colorapp".into()),
        config: Some("s3://colorapp-config/mesh.yaml".into()),
        ..InjectOptions::default()
    }
}

#[tokio::test]
async fn ecs_hook_admits_meshed_revisions_and_refuses_others() {
    let moto = moto();
    let api = ecs(&moto);
    let plain = register(&api, &source_task_definition("colorteller-black")).await;
    let meshed = taskmesh::ecs::register_meshed(&api, &plain, &mesh_options(), &[])
        .await
        .expect("register meshed");

    let described = api.describe_task_definition(&meshed.arn).await.unwrap();
    let ok = ecs_hook::validate(&described.task_definition, &meshed.arn);
    assert_eq!(ok.hook_status, HookStatus::Succeeded, "{}", ok.reason);
    let body = serde_json::to_value(&ok).unwrap();
    assert_eq!(body["hookStatus"], "SUCCEEDED");

    let described = api.describe_task_definition(&plain).await.unwrap();
    let refused = ecs_hook::validate(&described.task_definition, &plain);
    assert_eq!(refused.hook_status, HookStatus::Failed);
    assert!(refused.reason.contains(&plain), "{}", refused.reason);
    assert!(refused.reason.contains("not meshed"), "{}", refused.reason);
    assert_eq!(
        serde_json::to_value(&refused).unwrap()["hookStatus"],
        "FAILED"
    );

    // A meshed definition made inconsistent: the proxy's own traffic would loop back into it.
    let mut broken = api
        .describe_task_definition(&meshed.arn)
        .await
        .unwrap()
        .task_definition;
    broken["proxyConfiguration"]["properties"]
        .as_array_mut()
        .unwrap()
        .retain(|p| p["name"] != "IgnoredUID" && p["name"] != "IgnoredGID");
    let refused = ecs_hook::validate(&broken, &meshed.arn);
    assert_eq!(
        refused.hook_status,
        HookStatus::Failed,
        "{}",
        refused.reason
    );
}

#[tokio::test]
async fn ecs_hook_fails_closed_when_the_revision_cannot_be_read() {
    let moto = moto();
    let services = Services::with_ecs(ecs(&moto));
    let event: EcsHookEvent = serde_json::from_value(event("ecs-lifecycle-hook.json")).unwrap();
    let answer = handle_ecs_hook(&event, &services).await;
    assert_eq!(answer.hook_status, HookStatus::Failed);
    assert!(
        answer.reason.contains("DescribeServiceRevisions failed"),
        "{}",
        answer.reason
    );
    assert!(
        answer
            .reason
            .contains("service-revision/colorapp/colorteller-white/01275892"),
        "{}",
        answer.reason
    );

    let mut missing = event.clone();
    missing.execution_details.target_service_revision_arn = None;
    let answer = handle_ecs_hook(&missing, &services).await;
    assert_eq!(answer.hook_status, HookStatus::Failed);
    assert!(
        answer
            .reason
            .contains("targetServiceRevisionArn is missing")
    );
}

/// Every number and boolean turned into a string, as CloudFormation hands properties to hooks.
fn stringified(v: &Value) -> Value {
    match v {
        Value::Bool(b) => json!(b.to_string()),
        Value::Number(n) => json!(n.to_string()),
        Value::Array(items) => Value::Array(items.iter().map(stringified).collect()),
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| (k.clone(), stringified(v)))
                .collect(),
        ),
        other => other.clone(),
    }
}

fn cfn_hook(event: &Value) -> Value {
    let parsed: CfnHookEvent = serde_json::from_value(event.clone()).unwrap();
    serde_json::to_value(handle_cfn_hook(&parsed)).unwrap()
}

#[test]
fn cfn_hook_refuses_unmeshed_and_admits_meshed_task_definitions() {
    let input = event("cfn-lambda-hook-create.json");
    let out = cfn_hook(&input);
    assert_eq!(out["hookStatus"], "FAILED", "{out:#}");
    assert_eq!(out["errorCode"], "NonCompliant");
    assert_eq!(out["clientRequestToken"], input["clientRequestToken"]);
    let message = out["message"].as_str().unwrap();
    assert!(
        message.contains("resource ColorTellerWhiteTaskDef"),
        "{message}"
    );
    assert!(message.contains("not meshed"), "{message}");

    // The same properties after the macro meshed them pass.
    let mut macro_event = event("macro-fragment.json");
    macro_event["fragment"] = input["requestData"]["targetModel"]["resourceProperties"].clone();
    // CloudFormation hooks see strings; the macro sees the template's own types.
    macro_event["fragment"]["ContainerDefinitions"][0]["Essential"] = json!(true);
    macro_event["fragment"]["ContainerDefinitions"][0]["PortMappings"][0]["ContainerPort"] =
        json!(9080);
    let meshed = serde_json::to_value(handle_macro_event(&macro_event)).unwrap();
    assert_eq!(meshed["status"], "success", "{meshed:#}");
    let mut ok = input.clone();
    ok["requestData"]["targetModel"]["resourceProperties"] = meshed["fragment"].clone();
    let out = cfn_hook(&ok);
    assert_eq!(out["hookStatus"], "SUCCESS", "{out:#}");
    assert!(out.get("errorCode").is_none());
    // As a hook really receives them: every number and boolean a string.
    ok["requestData"]["targetModel"]["resourceProperties"] = stringified(&meshed["fragment"]);
    let out = cfn_hook(&ok);
    assert_eq!(out["hookStatus"], "SUCCESS", "{out:#}");

    // Deletes and other resource types are not its business.
    let mut delete = input.clone();
    delete["actionInvocationPoint"] = json!("DELETE_PRE_PROVISION");
    assert_eq!(cfn_hook(&delete)["hookStatus"], "SUCCESS");
    let mut bucket = input.clone();
    bucket["requestData"]["targetName"] = json!("AWS::S3::Bucket");
    bucket["requestData"]["targetType"] = json!("AWS::S3::Bucket");
    assert_eq!(cfn_hook(&bucket)["hookStatus"], "SUCCESS");
}
