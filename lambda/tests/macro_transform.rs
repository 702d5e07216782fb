//! The TaskMesh macro as a function, on the event files: template-level and per-resource
//! transforms, Metadata opt-out, intrinsics passed through, validation failures naming the resource
//! and field.

mod support;

use serde_json::{Value, json};
use support::event;
use taskmesh_lambda::admission::cfn_is_meshed;
use taskmesh_lambda::macro_transform::handle_macro_event;

fn run(event: &Value) -> Value {
    serde_json::to_value(handle_macro_event(event)).unwrap()
}

fn containers(props: &Value) -> Vec<Value> {
    props["ContainerDefinitions"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn container<'a>(list: &'a [Value], name: &str) -> &'a Value {
    list.iter()
        .find(|c| c["Name"] == name)
        .unwrap_or_else(|| panic!("container {name} in {list:#?}"))
}

#[test]
fn template_level_transform_meshes_every_task_definition_but_skipped_ones() {
    let input = event("macro-template.json");
    let out = run(&input);
    assert_eq!(out["status"], "success", "{out:#}");
    assert_eq!(out["requestId"], input["requestId"]);
    assert!(out.get("errorMessage").is_none());
    let fragment = &out["fragment"];
    let before = &input["fragment"];

    let white = &fragment["Resources"]["ColorTellerWhiteTaskDef"]["Properties"];
    assert!(cfn_is_meshed(white), "{white:#}");
    let list = containers(white);
    assert!(
        list.len()
            > containers(&before["Resources"]["ColorTellerWhiteTaskDef"]["Properties"]).len()
    );
    // The app container's intrinsics are untouched.
    let app = container(&list, "app");
    let app_before =
        &before["Resources"]["ColorTellerWhiteTaskDef"]["Properties"]["ContainerDefinitions"][0];
    assert_eq!(app["Image"], app_before["Image"]);
    assert_eq!(app["Environment"], app_before["Environment"]);
    assert_eq!(
        white["TaskRoleArn"],
        json!({"Fn::GetAtt": ["TaskRole", "Arn"]})
    );
    // The config parameter was a Ref to a stack parameter, resolved from templateParameterValues.
    let text = white.to_string();
    assert!(text.contains("s3://colorapp-config/mesh.yaml"), "{text}");
    assert!(text.contains("colorapp"), "{text}");

    // Skipped resource, other resources and sections are returned unchanged.
    assert_eq!(
        fragment["Resources"]["LegacyTaskDef"],
        before["Resources"]["LegacyTaskDef"]
    );
    assert_eq!(
        fragment["Resources"]["TaskRole"],
        before["Resources"]["TaskRole"]
    );
    for section in [
        "AWSTemplateFormatVersion",
        "Parameters",
        "Conditions",
        "Outputs",
    ] {
        assert_eq!(fragment[section], before[section], "{section}");
    }

    // Running the macro on its own output changes nothing.
    let mut again = input.clone();
    again["fragment"] = fragment.clone();
    let out2 = run(&again);
    assert_eq!(out2["status"], "success", "{out2:#}");
    assert_eq!(out2["fragment"], *fragment);
}

#[test]
fn per_resource_fragment_is_meshed() {
    let input = event("macro-fragment.json");
    let out = run(&input);
    assert_eq!(out["status"], "success", "{out:#}");
    assert!(cfn_is_meshed(&out["fragment"]));
    assert_eq!(out["fragment"]["Family"], "colorteller-blue");
    assert_eq!(
        container(&containers(&out["fragment"]), "app")["Environment"],
        input["fragment"]["ContainerDefinitions"][0]["Environment"]
    );

    // Fn::Transform beside Type: the fragment is the resource.
    let mut resource = input.clone();
    resource["fragment"] =
        json!({"Type": "AWS::ECS::TaskDefinition", "Properties": input["fragment"].clone()});
    let out = run(&resource);
    assert_eq!(out["status"], "success", "{out:#}");
    assert_eq!(out["fragment"]["Type"], "AWS::ECS::TaskDefinition");
    assert!(cfn_is_meshed(&out["fragment"]["Properties"]));
}

fn failure(event: &Value) -> String {
    let out = run(event);
    assert_eq!(out["status"], "failure", "{out:#}");
    assert_eq!(out["requestId"], event["requestId"]);
    assert_eq!(
        out["fragment"], event["fragment"],
        "a failure returns the original fragment"
    );
    out["errorMessage"].as_str().unwrap().to_string()
}

#[test]
fn failures_name_the_resource_and_field() {
    // Bridge networking cannot carry the ECS proxy configuration.
    let mut input = event("macro-template.json");
    input["fragment"]["Resources"]["ColorTellerWhiteTaskDef"]["Properties"]["NetworkMode"] =
        json!("bridge");
    let message = failure(&input);
    assert!(
        message.contains("resource ColorTellerWhiteTaskDef"),
        "{message}"
    );
    assert!(message.contains("NetworkMode"), "{message}");

    // No mesh name.
    let mut input = event("macro-template.json");
    input["params"].as_object_mut().unwrap().remove("Mesh");
    let message = failure(&input);
    assert!(
        message.contains("resource ColorTellerWhiteTaskDef"),
        "{message}"
    );
    assert!(message.to_lowercase().contains("mesh"), "{message}");

    // Unknown and bad parameters.
    let mut input = event("macro-template.json");
    input["params"]["Colour"] = json!("blue");
    let message = failure(&input);
    assert!(
        message.contains("transform parameter Colour is not known"),
        "{message}"
    );
    let mut input = event("macro-template.json");
    input["params"]["Proxy"] = json!("linkerd");
    assert!(failure(&input).contains("'linkerd' is not one of: agent, envoy"));
    let mut input = event("macro-template.json");
    input["params"]["Config"] = json!({"Ref": "Missing"});
    assert!(failure(&input).contains("Ref to Missing"));

    // A fragment with no Family and no VirtualNode parameter.
    let mut input = event("macro-fragment.json");
    input["fragment"].as_object_mut().unwrap().remove("Family");
    let message = failure(&input);
    assert!(message.contains("field Family"), "{message}");

    // Fn::Transform on something that is not a task definition.
    let mut input = event("macro-fragment.json");
    input["fragment"] = json!({"Type": "AWS::S3::Bucket", "Properties": {}});
    assert!(failure(&input).contains("AWS::S3::Bucket"));
    input["fragment"] = json!({"BucketName": "x"});
    assert!(failure(&input).contains("keys seen: [BucketName]"));
    input["fragment"] = json!([1, 2]);
    assert!(failure(&input).contains("not an object"));
}

#[test]
fn a_malformed_request_gets_a_failure_answer() {
    let out = run(
        &json!({"fragment": {}, "transformId": "x::TaskMesh", "requestId": "r-1", "params": "oops"}),
    );
    assert_eq!(out["status"], "failure");
    assert_eq!(out["requestId"], "r-1");
    assert!(
        out["errorMessage"]
            .as_str()
            .unwrap()
            .contains("malformed macro request")
    );
}

#[test]
fn xray_parameters_add_the_daemon_sidecar() {
    let mut input = event("macro-fragment.json");
    input["fragment"]["ContainerDefinitions"][0]["Memory"] = json!(256);
    input["params"]["Xray"] = json!("true");
    input["params"]["XrayImage"] = json!({"Ref": "XrayImage"});
    input["templateParameterValues"]["XrayImage"] =
        json!("111122223333.dkr.ecr.us-east-1.amazonaws.com/xray:3.3.14");
    let out = run(&input);
    assert_eq!(out["status"], "success", "{out:#}");
    let list = containers(&out["fragment"]);
    let daemon = container(&list, "xray-daemon");
    assert_eq!(
        daemon["Image"],
        "111122223333.dkr.ecr.us-east-1.amazonaws.com/xray:3.3.14"
    );
    assert_eq!(daemon["User"], "1337");
    assert_eq!(
        daemon["PortMappings"],
        json!([{"ContainerPort": 2000, "Protocol": "udp"}])
    );
    let agent = container(&list, "taskmesh-agent");
    assert_eq!(
        agent["DependsOn"],
        json!([{"ContainerName": "xray-daemon", "Condition": "START"}])
    );
    assert!(
        agent["Environment"]
            .as_array()
            .unwrap()
            .contains(&json!({"Name": "ENABLE_ENVOY_XRAY_TRACING", "Value": "1"})),
        "{agent:#}"
    );
    // The app's 256 MiB + the agent's 64 fit the task's 512 MiB; with the daemon's 256 they do
    // not, so the task grows to the next valid Fargate size (and shrinks back without Xray).
    assert_eq!(out["fragment"]["Cpu"], "256");
    assert_eq!(out["fragment"]["Memory"], "1024");

    // The macro on its own output changes nothing; without Xray the daemon it added goes.
    let mut again = input.clone();
    again["fragment"] = out["fragment"].clone();
    assert_eq!(run(&again)["fragment"], out["fragment"]);
    let mut off = again.clone();
    off["params"].as_object_mut().unwrap().remove("Xray");
    off["params"].as_object_mut().unwrap().remove("XrayImage");
    let plain = run(&off);
    assert_eq!(plain["status"], "success", "{plain:#}");
    let mut plain_input = event("macro-fragment.json");
    plain_input["fragment"]["ContainerDefinitions"][0]["Memory"] = json!(256);
    assert_eq!(plain["fragment"], run(&plain_input)["fragment"]);

    // Bad values fail naming the parameter.
    let mut bad = event("macro-fragment.json");
    bad["params"]["Xray"] = json!("sometimes");
    assert!(
        failure(&bad).contains("transform parameter Xray: 'sometimes' is not true or false"),
        "{}",
        failure(&bad)
    );
    let mut lone = event("macro-fragment.json");
    lone["params"]["XrayImage"] = json!("amazon/aws-xray-daemon");
    assert!(
        failure(&lone).contains("XrayImage") && failure(&lone).contains("Xray: true"),
        "{}",
        failure(&lone)
    );
}

#[test]
fn every_macro_parameter_and_resource_property_is_documented() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/deploy.md");
    let doc =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    let macro_section = doc
        .split("## 3. The `TaskMesh` macro")
        .nth(1)
        .and_then(|rest| rest.split("\n## ").next())
        .expect("docs/deploy.md has the macro section");
    for p in taskmesh_lambda::macro_transform::PARAMETERS {
        assert!(
            macro_section.contains(&format!("`{p}`")),
            "macro parameter {p} is not documented in docs/deploy.md §3"
        );
    }
    for p in taskmesh_lambda::custom_resource::properties::KNOWN_PROPERTIES {
        assert!(
            doc.contains(p),
            "Custom::MeshTaskDefinition property {p} is not documented in docs/deploy.md"
        );
    }
}
