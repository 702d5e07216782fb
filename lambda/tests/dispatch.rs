//! Dispatch on the event's keys: every event file goes to its handler; anything else is an error
//! naming the keys seen. No AWS client is built for events that do not need one.

mod support;

use serde_json::json;
use support::*;
use taskmesh_lambda::{DispatchError, EventKind, Services, classify, dispatch};

#[test]
fn every_event_file_is_classified() {
    for (file, kind) in [
        ("custom-resource-create.json", EventKind::CustomResource),
        ("custom-resource-update.json", EventKind::CustomResource),
        ("custom-resource-delete.json", EventKind::CustomResource),
        ("macro-template.json", EventKind::Macro),
        ("macro-fragment.json", EventKind::Macro),
        ("ecs-lifecycle-hook.json", EventKind::EcsHook),
        ("cfn-lambda-hook-create.json", EventKind::CfnHook),
    ] {
        assert_eq!(classify(&event(file)).unwrap(), kind, "{file}");
    }
}

#[tokio::test]
async fn unknown_events_name_the_keys_seen() {
    let services = Services::new();
    let err = dispatch(event("unknown-s3-put.json"), deadline_in(5.0), &services)
        .await
        .unwrap_err();
    assert!(matches!(err, DispatchError::UnknownEvent { .. }));
    assert!(err.to_string().contains("keys seen: [Records]"), "{err}");
    let err = dispatch(json!({"b": 1, "a": 2}), deadline_in(5.0), &services)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("keys seen: [a, b]"), "{err}");
    let err = dispatch(json!([1]), deadline_in(5.0), &services)
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("expected a JSON object, got a list"),
        "{err}"
    );
    assert!(!services.ecs_initialized());
}

#[tokio::test]
async fn macro_and_cfn_hook_events_build_no_aws_client() {
    let services = Services::new();
    let out = dispatch(event("macro-template.json"), deadline_in(5.0), &services)
        .await
        .unwrap();
    assert_eq!(out["status"], "success", "{out:#}");
    let out = dispatch(
        event("cfn-lambda-hook-create.json"),
        deadline_in(5.0),
        &services,
    )
    .await
    .unwrap();
    assert_eq!(out["hookStatus"], "FAILED", "{out:#}");
    assert!(
        !services.ecs_initialized(),
        "the ECS client is built only when an event needs it"
    );
}

#[tokio::test]
async fn custom_resource_event_is_answered_through_dispatch() {
    let recorder = ResponseRecorder::start().await;
    let blackhole = Blackhole::start().await;
    let services = Services::with_ecs(ecs_at(&blackhole.endpoint()));
    let mut event = event("custom-resource-create.json");
    event["ResponseURL"] = json!(recorder.url());
    event["ResourceProperties"]["AdminPort"] = json!("99999");
    let out = dispatch(event, deadline_in(5.0), &services).await.unwrap();
    assert_eq!(out["Status"], "FAILED");
    let put = recorder.single();
    assert_eq!(put.json()["Reason"], out["Reason"]);
    assert!(
        out["Reason"]
            .as_str()
            .unwrap()
            .contains("property AdminPort"),
        "{out}"
    );
}

#[test]
fn deadlines_are_epoch_milliseconds_or_a_relative_timeout() {
    use std::time::{Duration, SystemTime, UNIX_EPOCH};
    let now = SystemTime::now();
    let real = 1_795_630_331_211;
    assert_eq!(
        taskmesh_lambda::invocation_deadline(real, now),
        UNIX_EPOCH + Duration::from_millis(real)
    );
    // cargo lambda watch sends the timeout itself.
    assert_eq!(
        taskmesh_lambda::invocation_deadline(600_000, now),
        now + Duration::from_secs(600)
    );
}
