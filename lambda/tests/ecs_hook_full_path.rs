//! The ECS blue/green lifecycle hook's whole path, through the Lambda's handler function:
//! event → DescribeServiceRevisions → DescribeTaskDefinition of the target revision → admission
//! check → `hookStatus` SUCCEEDED/FAILED with the reason.
//!
//! moto has no DescribeServiceRevisions, so the ECS client talks to a recorded-response front
//! ([`taskmesh_e2e::aws_front`]): DescribeServiceRevisions is answered from
//! `tests/recorded/ecs-describe-service-revisions.json` (the real API's documented output, checked
//! against botocore's output shape below), and every other call (RegisterTaskDefinition,
//! DescribeTaskDefinition) goes to a real moto server unchanged. The recording names task
//! definitions `colorteller-white:1` (plain), `:2` (meshed) and `:3` (meshed, proxy `user` changed),
//! which the tests register in moto in that order.

mod support;

use std::path::PathBuf;

use serde_json::{Value, json};
use support::*;
use taskmesh::InjectOptions;
use taskmesh::ecs::{EcsApi, registrable};
use taskmesh_e2e::aws_front::{
    AMZ_JSON_1_1, FrontRequest, RecordedFront, Recording, Route, validate_output_files,
};
use taskmesh_e2e::moto::MotoServer;
use taskmesh_lambda::Services;
use taskmesh_lambda::dispatch::dispatch;

const ECS_TARGET_PREFIX: &str = "AmazonEC2ContainerServiceV20141113";
const FAMILY: &str = "colorteller-white";
const REVISION: &str =
    "arn:aws:ecs:us-east-1:123456789012:service-revision/colorapp/colorteller-white/0127589";

fn recording_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/recorded/ecs-describe-service-revisions.json")
}

fn recorded() -> Value {
    let path = recording_path();
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// What ECS answers to DescribeServiceRevisions, from the recording: the recorded revisions
/// asked for, in request order, and a `MISSING` failure for every other ARN (as ECS's Describe*
/// calls report ARNs they do not know).
fn describe_service_revisions(recorded: &Value, request: &Value) -> Value {
    let known = recorded["serviceRevisions"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let mut revisions = Vec::new();
    let mut failures = Vec::new();
    for arn in request["serviceRevisionArns"]
        .as_array()
        .into_iter()
        .flatten()
    {
        match known.iter().find(|r| r["serviceRevisionArn"] == *arn) {
            Some(revision) => revisions.push(revision.clone()),
            None => failures.push(json!({"arn": arn, "reason": "MISSING"})),
        }
    }
    json!({"serviceRevisions": revisions, "failures": failures})
}

fn answer(recorded: &Value, request: &FrontRequest) -> Recording {
    match request.json() {
        Ok(body) => Recording::json(AMZ_JSON_1_1, &describe_service_revisions(recorded, &body)),
        // What ECS answers to a body it cannot read.
        Err(e) => Recording {
            status: 400,
            content_type: AMZ_JSON_1_1.into(),
            body: json!({"__type": "SerializationException", "message": e.to_string()})
                .to_string()
                .into_bytes(),
        },
    }
}

/// moto plus the front that answers DescribeServiceRevisions from the recording.
fn front(moto: &MotoServer) -> RecordedFront {
    let recorded = recorded();
    RecordedFront::builder(moto.port())
        .answer(
            Route::json_target(ECS_TARGET_PREFIX, "DescribeServiceRevisions"),
            move |request| answer(&recorded, request),
        )
        .start()
        .expect("the recorded-response front starts")
}

fn mesh_options() -> InjectOptions {
    InjectOptions {
        mesh: Some("colorapp".into()),
        config: Some("s3://colorapp-config/mesh.yaml".into()),
        ..InjectOptions::default()
    }
}

/// The task definitions the recording names, registered in moto through the front:
/// `:1` plain, `:2` meshed, `:3` meshed with the proxy's `user` changed to `1000`. Returns the
/// proxy container's name.
async fn register_revisions(api: &EcsApi) -> String {
    let plain = register(api, &source_task_definition(FAMILY)).await;
    let meshed = taskmesh::ecs::register_meshed(api, &plain, &mesh_options(), &[])
        .await
        .expect("register the meshed revision in moto");

    let mut wrong_user = registrable(&meshed.task_definition);
    let proxy = wrong_user["proxyConfiguration"]["containerName"]
        .as_str()
        .expect("the meshed revision names its proxy container")
        .to_string();
    let containers = wrong_user["containerDefinitions"].as_array_mut().unwrap();
    let proxy_container = containers
        .iter_mut()
        .find(|c| c["name"] == proxy.as_str())
        .expect("the proxy container exists");
    assert_eq!(
        proxy_container["user"], "1337",
        "the injected proxy runs as the IgnoredUID"
    );
    proxy_container["user"] = json!("1000");
    let wrong_user = register(api, &wrong_user).await;

    let td = |n: u32| format!("arn:aws:ecs:us-east-1:123456789012:task-definition/{FAMILY}:{n}");
    assert_eq!(
        [plain.as_str(), meshed.arn.as_str(), wrong_user.as_str()],
        [td(1), td(2), td(3)],
        "moto numbered the revisions differently from what the recording names"
    );
    proxy
}

/// Runs one event file through the Lambda's handler (dispatch → ECS hook).
async fn invoke(services: &Services, event_file: &str) -> (String, String) {
    let answer = dispatch(event(event_file), deadline_in(60.0), services)
        .await
        .unwrap_or_else(|e| panic!("{event_file}: the handler returned an error: {e}"));
    let status = answer["hookStatus"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let reason = answer["reason"].as_str().unwrap_or_default().to_string();
    eprintln!("{event_file}: {status}: {reason}");
    assert!(
        status == "SUCCEEDED" || status == "FAILED",
        "{event_file}: hookStatus must be SUCCEEDED or FAILED: {answer:#}"
    );
    (status, reason)
}

#[test]
fn the_recording_is_a_faithful_describe_service_revisions_output() {
    let recorded = recorded();
    let dir = tempfile::tempdir().unwrap();
    // The recording itself, and what the front serves from it (found and missing ARNs).
    let served = describe_service_revisions(
        &recorded,
        &json!({"serviceRevisionArns": [format!("{REVISION}3"), format!("{REVISION}9")]}),
    );
    assert_eq!(served["serviceRevisions"].as_array().unwrap().len(), 1);
    assert_eq!(served["failures"][0]["reason"], "MISSING");
    let served_path = dir.path().join("served.json");
    std::fs::write(&served_path, served.to_string()).unwrap();
    let files = [recording_path(), served_path];
    let results = validate_output_files("ecs", "DescribeServiceRevisions", &files)
        .expect("botocore validates the recording (scripts/setup-test-env.sh installs it)");
    assert_eq!(results.len(), files.len());
    for result in results {
        assert!(
            result.is_valid(),
            "{}: not a DescribeServiceRevisions output per botocore:\n{}",
            result.file.display(),
            result.errors.join("\n")
        );
    }
    // The validator does catch an unfaithful body (so the check above can fail): moto-style
    // string timestamps, an unknown member, a missing required one.
    let mut bad = recorded.clone();
    bad["serviceRevisions"][0]["createdAt"] = json!("25/11/2026, 17:15:11");
    bad["serviceRevisions"][1]["revision"] = json!(3);
    bad["serviceRevisions"][2]["capacityProviderStrategy"][0]
        .as_object_mut()
        .unwrap()
        .remove("capacityProvider");
    let bad_path = dir.path().join("bad.json");
    std::fs::write(&bad_path, bad.to_string()).unwrap();
    let errors = validate_output_files("ecs", "DescribeServiceRevisions", &[&bad_path])
        .unwrap()
        .remove(0)
        .errors
        .join("\n");
    for expected in [
        "serviceRevisions[0].createdAt",
        "\"revision\"",
        "capacityProviderStrategy[0]: \"capacityProvider\"",
    ] {
        assert!(
            errors.contains(expected),
            "expected {expected:?} in:\n{errors}"
        );
    }
}

#[tokio::test]
async fn ecs_hook_full_path_through_describe_service_revisions() {
    let moto = moto();
    let front = front(&moto);
    let api = ecs_at(&front.endpoint());
    let proxy = register_revisions(&api).await;
    let services = Services::with_ecs(api);
    let td = |n: u32| format!("arn:aws:ecs:us-east-1:123456789012:task-definition/{FAMILY}:{n}");

    // The meshed target revision is admitted.
    let (status, reason) = invoke(&services, "ecs-lifecycle-hook.json").await;
    assert_eq!(status, "SUCCEEDED", "{reason}");
    assert!(reason.contains(&td(2)), "{reason}");
    assert!(reason.contains("meshed and consistent"), "{reason}");

    // The plain revision is refused, naming the revision's task definition and the label.
    let (status, reason) = invoke(&services, "ecs-lifecycle-hook-unmeshed.json").await;
    assert_eq!(status, "FAILED", "{reason}");
    assert!(reason.contains(&td(1)), "{reason}");
    assert!(reason.contains("not meshed"), "{reason}");
    assert!(reason.contains(taskmesh::INJECTED_LABEL), "{reason}");

    // The proxy runs as 1000 while IgnoredUID is 1337: refused, naming the container, the
    // field and both values.
    let (status, reason) = invoke(&services, "ecs-lifecycle-hook-proxy-user.json").await;
    assert_eq!(status, "FAILED", "{reason}");
    assert!(reason.contains(&td(3)), "{reason}");
    assert!(reason.contains(&format!("container '{proxy}'")), "{reason}");
    assert!(reason.contains("field user"), "{reason}");
    assert!(reason.contains("user '1000'"), "{reason}");
    assert!(reason.contains("IgnoredUID 1337"), "{reason}");

    // A revision ECS does not know: ECS reports it MISSING, the hook fails closed naming it.
    let (status, reason) = invoke(&services, "ecs-lifecycle-hook-unknown-revision.json").await;
    assert_eq!(status, "FAILED", "{reason}");
    assert!(reason.contains(&format!("{REVISION}9")), "{reason}");
    assert!(reason.contains("MISSING"), "{reason}");

    // After the registrations, each hook made exactly one DescribeServiceRevisions (answered
    // from the recording) and, when it got a task definition, one DescribeTaskDefinition
    // (forwarded to moto).
    let calls = front.targets();
    let op = |name: &str| format!("{ECS_TARGET_PREFIX}.{name}");
    let revisions = (op("DescribeServiceRevisions"), true);
    let describe = (op("DescribeTaskDefinition"), false);
    let hook_calls: Vec<_> = calls
        .iter()
        .skip_while(|c| **c != revisions)
        .cloned()
        .collect();
    assert_eq!(
        hook_calls,
        vec![
            revisions.clone(),
            describe.clone(),
            revisions.clone(),
            describe.clone(),
            revisions.clone(),
            describe,
            revisions,
        ],
        "calls through the front: {calls:#?}"
    );
    let asked: Vec<Value> = front
        .requests()
        .iter()
        .filter(|r| r.answered)
        .map(|r| r.json().unwrap()["serviceRevisionArns"].clone())
        .collect();
    assert_eq!(
        asked,
        ["2", "3", "4", "9"]
            .map(|n| json!([format!("{REVISION}{n}")]))
            .to_vec()
    );
}
