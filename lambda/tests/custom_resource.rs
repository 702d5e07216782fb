//! Custom::MeshTaskDefinition end to end through the handler: ECS is a moto server, the ResponseURL
//! is a real local HTTP server recording the PUT. Every failure mode must still PUT exactly one
//! answer: bad properties, an ECS error, a panic, the deadline.

mod support;

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::*;
use taskmesh_lambda::Services;
use taskmesh_lambda::custom_resource::response::{CREATE_FAILED_MARKER, MAX_BODY_BYTES};
use taskmesh_lambda::custom_resource::{REQUEST_TAG, guard, handle_custom_resource};

/// The Create event file, pointed at `url` and source `source_arn`.
fn create_event(url: &str, source_arn: &str) -> Value {
    let mut event = event("custom-resource-create.json");
    event["ResponseURL"] = json!(url);
    event["ResourceProperties"]["TaskDefinition"] = json!(source_arn);
    event
}

/// Checks the transport rules of an answer and returns its JSON body.
fn check_answer(recorder: &ResponseRecorder) -> Value {
    let put = recorder.single();
    assert_eq!(put.method, "PUT");
    assert!(
        put.path_and_query.ends_with("?X-Amz-Signature=abc"),
        "PUT went to the ResponseURL: {}",
        put.path_and_query
    );
    assert_eq!(
        put.header("content-type"),
        None,
        "no Content-Type: {:?}",
        put.headers
    );
    assert_eq!(
        put.header("content-length"),
        Some(put.body.len().to_string().as_str())
    );
    assert!(
        put.body.len() <= MAX_BODY_BYTES,
        "body is {} bytes",
        put.body.len()
    );
    let body = put.json();
    for key in [
        "StackId",
        "RequestId",
        "LogicalResourceId",
        "PhysicalResourceId",
        "Status",
    ] {
        assert!(body[key].is_string(), "{key} in {body}");
    }
    body
}

#[tokio::test]
async fn create_registers_a_meshed_revision_and_answers_success() {
    let moto = moto();
    let api = ecs(&moto);
    let source = register(&api, &source_task_definition("colorteller-white")).await;
    let recorder = ResponseRecorder::start().await;
    let services = Services::with_ecs(api.clone());
    let event = create_event(&recorder.url(), &source);

    let response = handle_custom_resource(&event, deadline_in(60.0), &services)
        .await
        .expect("delivered");
    let body = check_answer(&recorder);
    assert_eq!(body["Status"], "SUCCESS", "{body}");
    assert_eq!(body["RequestId"], event["RequestId"]);
    assert_eq!(body["StackId"], event["StackId"]);
    assert_eq!(body["LogicalResourceId"], "MeshedTaskDef");
    let arn = body["PhysicalResourceId"].as_str().unwrap().to_string();
    assert_eq!(body["Data"]["TaskDefinitionArn"], arn.as_str());
    assert_eq!(body["Data"]["SourceTaskDefinitionArn"], source.as_str());
    assert_eq!(body["Data"]["Revision"], "2");
    assert_ne!(arn, source);
    assert_eq!(response.physical_resource_id, arn);

    let registered = api.describe_task_definition(&arn).await.unwrap();
    assert!(
        taskmesh::is_meshed(&registered.task_definition),
        "{}",
        registered.task_definition
    );
    assert_eq!(registered.tag("taskmesh:source"), Some(source.as_str()));
    assert_eq!(registered.tag(REQUEST_TAG), event["RequestId"].as_str());
    assert_eq!(registered.tag("team"), Some("color"), "source tags kept");

    // A retry of the same request (Lambda async retry) answers with the same revision.
    let again = ResponseRecorder::start().await;
    let event = create_event(&again.url(), &source);
    handle_custom_resource(&event, deadline_in(60.0), &services)
        .await
        .unwrap();
    let body = check_answer(&again);
    assert_eq!(body["Status"], "SUCCESS");
    assert_eq!(
        body["PhysicalResourceId"],
        arn.as_str(),
        "no second registration"
    );
    let latest = api
        .describe_task_definition("colorteller-white")
        .await
        .unwrap();
    assert_eq!(latest.arn(), arn);
}

#[tokio::test]
async fn create_with_xray_registers_a_revision_with_the_daemon() {
    let moto = moto();
    let api = ecs(&moto);
    let source = register(&api, &source_task_definition("colorteller-traced")).await;
    let recorder = ResponseRecorder::start().await;
    let services = Services::with_ecs(api.clone());
    let mut event = create_event(&recorder.url(), &source);
    event["ResourceProperties"]["VirtualNode"] = json!("colorteller-traced");
    // CloudFormation sends every scalar as a string.
    event["ResourceProperties"]["Xray"] = json!("true");

    handle_custom_resource(&event, deadline_in(60.0), &services)
        .await
        .expect("delivered");
    let body = check_answer(&recorder);
    assert_eq!(body["Status"], "SUCCESS", "{body}");
    let arn = body["PhysicalResourceId"].as_str().unwrap().to_string();
    let registered = api.describe_task_definition(&arn).await.unwrap();
    let td = &registered.task_definition;
    assert!(taskmesh::is_meshed(td), "{td}");
    let list = td["containerDefinitions"].as_array().unwrap();
    let daemon = list
        .iter()
        .find(|c| c["name"] == "xray-daemon")
        .unwrap_or_else(|| panic!("no xray-daemon in {td:#}"));
    assert_eq!(daemon["image"], taskmesh::DEFAULT_XRAY_IMAGE);
    assert_eq!(daemon["user"], "1337");
    assert_eq!(daemon["portMappings"][0]["containerPort"], 2000);
    assert_eq!(daemon["portMappings"][0]["protocol"], "udp");
    let agent = list.iter().find(|c| c["name"] == "taskmesh-agent").unwrap();
    assert_eq!(
        agent["dependsOn"],
        json!([{"containerName": "xray-daemon", "condition": "START"}])
    );
    assert!(
        agent["environment"]
            .as_array()
            .unwrap()
            .contains(&json!({"name": "ENABLE_ENVOY_XRAY_TRACING", "value": "1"})),
        "{agent:#}"
    );
}

#[tokio::test]
async fn update_registers_a_replacement_and_delete_deregisters_only_its_own() {
    let moto = moto();
    let api = ecs(&moto);
    let source = register(&api, &source_task_definition("colorteller-blue")).await;
    let services = Services::with_ecs(api.clone());

    let recorder = ResponseRecorder::start().await;
    handle_custom_resource(
        &create_event(&recorder.url(), &source),
        deadline_in(60.0),
        &services,
    )
    .await
    .unwrap();
    let first = check_answer(&recorder)["PhysicalResourceId"]
        .as_str()
        .unwrap()
        .to_string();

    let recorder = ResponseRecorder::start().await;
    let mut update = event("custom-resource-update.json");
    update["ResponseURL"] = json!(recorder.url());
    update["PhysicalResourceId"] = json!(first);
    update["ResourceProperties"]["TaskDefinition"] = json!(source);
    handle_custom_resource(&update, deadline_in(60.0), &services)
        .await
        .unwrap();
    let body = check_answer(&recorder);
    assert_eq!(body["Status"], "SUCCESS", "{body}");
    let second = body["PhysicalResourceId"].as_str().unwrap().to_string();
    assert_ne!(second, first, "an update is a replacement");
    let described = api.describe_task_definition(&second).await.unwrap();
    let proxy_ignored_ports = described.task_definition["proxyConfiguration"]["properties"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| p["name"] == "EgressIgnoredPorts")
        .map(|p| p["value"].clone());
    assert_eq!(
        proxy_ignored_ports,
        Some(json!("22,443")),
        "{}",
        described.task_definition
    );

    // CloudFormation deletes the old one after the update.
    let recorder = ResponseRecorder::start().await;
    let mut delete = event("custom-resource-delete.json");
    delete["ResponseURL"] = json!(recorder.url());
    delete["PhysicalResourceId"] = json!(first);
    handle_custom_resource(&delete, deadline_in(60.0), &services)
        .await
        .unwrap();
    let body = check_answer(&recorder);
    assert_eq!(body["Status"], "SUCCESS", "{body}");
    assert_eq!(
        body["PhysicalResourceId"],
        first.as_str(),
        "Delete echoes the id"
    );
    let old = api.describe_task_definition(&first).await.unwrap();
    assert_eq!(old.task_definition["status"], "INACTIVE");

    // Deleting again (a retry) still succeeds.
    let recorder = ResponseRecorder::start().await;
    delete["ResponseURL"] = json!(recorder.url());
    handle_custom_resource(&delete, deadline_in(60.0), &services)
        .await
        .unwrap();
    assert_eq!(check_answer(&recorder)["Status"], "SUCCESS");

    // A revision taskmesh did not register is left alone.
    let recorder = ResponseRecorder::start().await;
    delete["ResponseURL"] = json!(recorder.url());
    delete["PhysicalResourceId"] = json!(source);
    handle_custom_resource(&delete, deadline_in(60.0), &services)
        .await
        .unwrap();
    let body = check_answer(&recorder);
    assert_eq!(body["Status"], "SUCCESS");
    assert!(
        body["Reason"].as_str().unwrap().contains("left alone"),
        "{body}"
    );
    let source_td = api.describe_task_definition(&source).await.unwrap();
    assert_eq!(source_td.task_definition["status"], "ACTIVE");
    let current = api.describe_task_definition(&second).await.unwrap();
    assert_eq!(current.task_definition["status"], "ACTIVE");
}

#[tokio::test]
async fn delete_of_an_id_it_never_made_succeeds_without_calling_ecs() {
    // ECS is a black hole: any call would hang past the deadline and turn the answer FAILED.
    let blackhole = Blackhole::start().await;
    let services = Services::with_ecs(ecs_at(&blackhole.endpoint()));
    for id in [
        format!("{CREATE_FAILED_MARKER}5d478078-13e9-baf0-464a-7ef285ecc786"),
        "MeshedTaskDef-1A2B3C".to_string(),
    ] {
        let recorder = ResponseRecorder::start().await;
        let mut delete = event("custom-resource-delete.json");
        delete["ResponseURL"] = json!(recorder.url());
        delete["PhysicalResourceId"] = json!(id);
        handle_custom_resource(&delete, deadline_in(3.0), &services)
            .await
            .unwrap();
        let body = check_answer(&recorder);
        assert_eq!(body["Status"], "SUCCESS", "{body}");
        assert_eq!(body["PhysicalResourceId"], id.as_str());
    }
}

#[tokio::test]
async fn bad_properties_answer_failed_naming_the_property() {
    let blackhole = Blackhole::start().await;
    let services = Services::with_ecs(ecs_at(&blackhole.endpoint()));
    let cases = [
        (
            "IngressPort",
            json!("15k"),
            "property IngressPort: '15k' is not a port number",
        ),
        (
            "Resize",
            json!("maybe"),
            "property Resize: 'maybe' is not true or false",
        ),
        (
            "AppPorts",
            json!("9080,http"),
            "property AppPorts[1]: 'http' is not a port number",
        ),
        (
            "Proxy",
            json!("linkerd"),
            "property Proxy: 'linkerd' is not one of: agent, envoy",
        ),
        ("Colour", json!("blue"), "property Colour: unknown property"),
        (
            "Xray",
            json!("sometimes"),
            "property Xray: 'sometimes' is not true or false",
        ),
        (
            "XrayImage",
            json!("amazon/aws-xray-daemon"),
            "property XrayImage: is the image of the X-Ray daemon that Xray: true adds",
        ),
    ];
    for (property, value, expected) in cases {
        let recorder = ResponseRecorder::start().await;
        let mut event = create_event(
            &recorder.url(),
            "arn:aws:ecs:us-east-1:123456789012:task-definition/x:1",
        );
        event["ResourceProperties"][property] = value;
        handle_custom_resource(&event, deadline_in(5.0), &services)
            .await
            .unwrap();
        let body = check_answer(&recorder);
        assert_eq!(body["Status"], "FAILED", "{body}");
        let reason = body["Reason"].as_str().unwrap();
        assert!(reason.starts_with("MeshedTaskDef: "), "{reason}");
        assert!(
            reason.contains(expected),
            "{reason} should contain {expected}"
        );
        assert_eq!(
            body["PhysicalResourceId"],
            format!(
                "{CREATE_FAILED_MARKER}{}",
                event["RequestId"].as_str().unwrap()
            ),
            "a failed Create answers the marker id its rollback Delete will skip"
        );
    }

    // A missing TaskDefinition.
    let recorder = ResponseRecorder::start().await;
    let mut event = create_event(&recorder.url(), "x");
    event["ResourceProperties"]
        .as_object_mut()
        .unwrap()
        .remove("TaskDefinition");
    handle_custom_resource(&event, deadline_in(5.0), &services)
        .await
        .unwrap();
    let body = check_answer(&recorder);
    assert!(
        body["Reason"]
            .as_str()
            .unwrap()
            .contains("property TaskDefinition: required"),
        "{body}"
    );

    // A malformed request (no ResourceProperties object) is still answered.
    let recorder = ResponseRecorder::start().await;
    let mut event = create_event(&recorder.url(), "x");
    event["ResourceProperties"] = json!("not an object");
    handle_custom_resource(&event, deadline_in(5.0), &services)
        .await
        .unwrap();
    let body = check_answer(&recorder);
    assert_eq!(body["Status"], "FAILED");
}

#[tokio::test]
async fn ecs_error_answers_failed_with_operation_and_code() {
    let moto = moto();
    let services = Services::with_ecs(ecs(&moto));
    let recorder = ResponseRecorder::start().await;
    let missing = "arn:aws:ecs:us-east-1:123456789012:task-definition/does-not-exist:7";
    let create = create_event(&recorder.url(), missing);
    handle_custom_resource(&create, deadline_in(60.0), &services)
        .await
        .unwrap();
    let body = check_answer(&recorder);
    assert_eq!(body["Status"], "FAILED", "{body}");
    let reason = body["Reason"].as_str().unwrap();
    assert!(
        reason.contains("DescribeTaskDefinition failed: ClientException"),
        "{reason}"
    );
    assert!(reason.contains(missing), "{reason}");
    assert!(
        reason.starts_with("MeshedTaskDef: property TaskDefinition"),
        "{reason}"
    );

    // An Update that fails keeps the old id: no replacement, no Delete of the old revision.
    let recorder = ResponseRecorder::start().await;
    let mut update = event("custom-resource-update.json");
    update["ResponseURL"] = json!(recorder.url());
    update["ResourceProperties"]["TaskDefinition"] = json!(missing);
    handle_custom_resource(&update, deadline_in(60.0), &services)
        .await
        .unwrap();
    let body = check_answer(&recorder);
    assert_eq!(body["Status"], "FAILED");
    assert_eq!(body["PhysicalResourceId"], update["PhysicalResourceId"]);
}

#[tokio::test]
async fn deadline_answers_failed_before_the_lambda_is_killed() {
    let blackhole = Blackhole::start().await;
    let services = Services::with_ecs(ecs_at(&blackhole.endpoint()));
    let recorder = ResponseRecorder::start().await;
    let event = create_event(
        &recorder.url(),
        "arn:aws:ecs:us-east-1:123456789012:task-definition/colorteller-white:1",
    );
    let started = Instant::now();
    let deadline = deadline_in(2.0);
    handle_custom_resource(&event, deadline, &services)
        .await
        .unwrap();
    let took = started.elapsed();
    assert!(
        took < Duration::from_millis(2000),
        "answered after {took:?}, past the deadline"
    );
    assert!(
        took >= Duration::from_millis(1000),
        "gave up too early: {took:?}"
    );
    let body = check_answer(&recorder);
    assert_eq!(body["Status"], "FAILED");
    assert!(
        body["Reason"]
            .as_str()
            .unwrap()
            .contains("shortly before the Lambda deadline"),
        "{body}"
    );
}

#[tokio::test]
async fn a_panic_is_caught_and_answered() {
    let services = Services::new();
    let recorder = ResponseRecorder::start().await;
    let event = create_event(&recorder.url(), "x");
    let target =
        taskmesh_lambda::custom_resource::response::ResponseTarget::from_event(&event).unwrap();
    let work = async {
        let values: Vec<u32> = Vec::new();
        // An out-of-bounds index: a bug, not an input problem.
        let index = values.len() + 3;
        Ok(target.failed(format!("unreachable {}", values[index])))
    };
    let response = guard::answer_within(&target, deadline_in(10.0), work).await;
    taskmesh_lambda::custom_resource::deliver(&target, &response, &services)
        .await
        .unwrap();
    let body = check_answer(&recorder);
    assert_eq!(body["Status"], "FAILED");
    let reason = body["Reason"].as_str().unwrap();
    assert!(
        reason.contains("internal error (panic: index out of bounds"),
        "{reason}"
    );
    assert!(!services.ecs_initialized(), "no ECS client was needed");
}

#[tokio::test]
async fn an_undeliverable_answer_fails_the_invocation_so_lambda_retries() {
    let services = Services::new();
    // A port nothing listens on.
    let port = taskmesh_e2e::ports::free_port();
    let mut event = create_event("http://127.0.0.1:1/x", "x");
    event["ResponseURL"] = json!(format!("http://127.0.0.1:{port}/response"));
    event["ResourceProperties"]["IngressPort"] = json!("nope");
    let err = handle_custom_resource(&event, deadline_in(5.0), &services)
        .await
        .expect_err("delivery fails");
    let text = err.to_string();
    assert!(
        text.contains("answer for MeshedTaskDef not delivered"),
        "{text}"
    );
}

#[test]
fn a_long_reason_is_cut_to_fit_4096_bytes() {
    let event = create_event("http://127.0.0.1:1/x", "x");
    let target =
        taskmesh_lambda::custom_resource::response::ResponseTarget::from_event(&event).unwrap();
    for reason in [
        "é\"\\".repeat(3000),
        "x".repeat(10_000),
        "short".to_string(),
    ] {
        let response = target.failed(reason.clone());
        let body = response.to_body();
        assert!(body.len() <= MAX_BODY_BYTES, "{} bytes", body.len());
        let parsed: Value = serde_json::from_slice(&body).unwrap();
        let got = parsed["Reason"].as_str().unwrap();
        if reason.len() < 100 {
            assert_eq!(got, reason);
        } else {
            assert!(got.ends_with('…'));
            assert!(
                body.len() > MAX_BODY_BYTES - 64,
                "cut no more than needed: {}",
                body.len()
            );
        }
    }
}
