//! `taskmesh register` and the `ecs` module: the real binary against a moto server
//! (DescribeTaskDefinition -> inject -> RegisterTaskDefinition, tags, exit codes), the request body
//! checked by botocore's model, and the raw-JSON interceptors on the wire (a field the SDK does not
//! model survives both directions byte for byte).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::process::Command;
use std::sync::mpsc;

use serde_json::{Value, json};
use taskmesh::ecs::{self, EcsApi, OUTPUT_ONLY_FIELDS};
use taskmesh::{InjectOptions, Location};
use taskmesh_e2e::moto::{CREDENTIAL, MotoServer, REGION};
use taskmesh_e2e::venv::venv;

fn api_at(endpoint: &str) -> EcsApi {
    let config = aws_sdk_ecs::Config::builder()
        .behavior_version(aws_sdk_ecs::config::BehaviorVersion::latest())
        .region(aws_sdk_ecs::config::Region::new(REGION))
        .endpoint_url(endpoint)
        .credentials_provider(aws_sdk_ecs::config::Credentials::new(
            CREDENTIAL,
            CREDENTIAL,
            None,
            None,
            "taskmesh-tests",
        ))
        .build();
    EcsApi::new(aws_sdk_ecs::Client::from_conf(config))
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn source(family: &str, network_mode: &str) -> Value {
    json!({
        "family": family,
        "networkMode": network_mode,
        "requiresCompatibilities": ["FARGATE"],
        "cpu": "256",
        "memory": "512",
        "executionRoleArn": "arn:aws:iam::123456789012:role/ecsTaskExecutionRole",
        "containerDefinitions": [{
            "name": "app",
            "image": "public.ecr.aws/example/colorteller:latest",
            "essential": true,
            "portMappings": [{"containerPort": 9080, "protocol": "tcp"}],
            "environment": [{"name": "COLOR", "value": "white"}]
        }],
        "tags": [{"key": "team", "value": "color"}, {"key": "cost-center", "value": "42"}]
    })
}

fn taskmesh(moto: &MotoServer, args: &[&str]) -> (i32, String, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_taskmesh"));
    moto.configure(&mut command).arg("register").args(args);
    let out = command.output().expect("run taskmesh");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn register_meshes_a_registered_revision_and_keeps_its_tags() {
    let moto = MotoServer::start().expect("moto_server");
    let api = api_at(&moto.endpoint());
    let rt = runtime();
    let src = source("colorteller-white", "awsvpc");
    let source_td = rt.block_on(api.register_task_definition(&src)).unwrap();
    let source_arn = source_td["taskDefinitionArn"].as_str().unwrap().to_string();

    let (code, stdout, stderr) = taskmesh(
        &moto,
        &[
            "--task-definition",
            "colorteller-white",
            "--mesh",
            "colorapp",
            "--config",
            "s3://colorapp/mesh.yaml",
        ],
    );
    assert_eq!(code, 0, "stderr: {stderr}");
    let arn = stdout.trim();
    assert!(
        arn.ends_with(":task-definition/colorteller-white:2"),
        "{stdout}"
    );

    let meshed = rt.block_on(api.describe_task_definition(arn)).unwrap();
    assert!(
        taskmesh::is_meshed(&meshed.task_definition),
        "{}",
        meshed.task_definition
    );
    assert_eq!(meshed.tag(ecs::SOURCE_TAG), Some(source_arn.as_str()));
    assert_eq!(meshed.tag("team"), Some("color"));
    assert_eq!(meshed.tag("cost-center"), Some("42"));

    // eject(what was registered) gives back every field of the source.
    let ejected = taskmesh::eject_task_definition(
        &ecs::registrable(&meshed.task_definition),
        &Location::file(arn),
    )
    .unwrap();
    let original = ecs::registrable(
        &rt.block_on(api.describe_task_definition(&source_arn))
            .unwrap()
            .task_definition,
    );
    for (key, value) in original.as_object().unwrap() {
        assert_eq!(
            ejected.get(key),
            Some(value),
            "field {key} after eject(inject(x))"
        );
    }

    // Registering the meshed revision again changes nothing but the revision.
    let (code, stdout, stderr) = taskmesh(&moto, &["--task-definition", arn]);
    assert_eq!(code, 0, "stderr: {stderr}");
    let again = rt
        .block_on(api.describe_task_definition(stdout.trim()))
        .unwrap();
    assert_eq!(again.tag(ecs::SOURCE_TAG), Some(arn));
    let strip = |v: &Value| ecs::registrable(v);
    assert_eq!(
        strip(&again.task_definition)["containerDefinitions"],
        strip(&meshed.task_definition)["containerDefinitions"]
    );
}

#[test]
fn aws_errors_exit_3_and_bad_definitions_exit_2() {
    let moto = MotoServer::start().expect("moto_server");
    let (code, stdout, stderr) = taskmesh(
        &moto,
        &[
            "--task-definition",
            "no-such-family:3",
            "--mesh",
            "m",
            "--config",
            "s3://b/k",
        ],
    );
    assert_eq!(code, 3, "stdout: {stdout} stderr: {stderr}");
    assert!(
        stderr.contains("DescribeTaskDefinition failed: ClientException"),
        "{stderr}"
    );
    assert!(stdout.is_empty());

    let api = api_at(&moto.endpoint());
    let rt = runtime();
    let mut bridge = source("legacy", "bridge");
    bridge
        .as_object_mut()
        .unwrap()
        .remove("requiresCompatibilities");
    rt.block_on(api.register_task_definition(&bridge)).unwrap();
    let (code, stdout, stderr) = taskmesh(
        &moto,
        &[
            "--task-definition",
            "legacy",
            "--mesh",
            "m",
            "--config",
            "s3://b/k",
        ],
    );
    assert_eq!(code, 2, "stdout: {stdout} stderr: {stderr}");
    assert!(stderr.contains("networkMode"), "{stderr}");
    // Nothing was registered.
    let latest = rt.block_on(api.describe_task_definition("legacy")).unwrap();
    assert_eq!(latest.task_definition["revision"], 1);

    // Unreachable endpoint: still exit 3, naming the operation.
    let mut command = Command::new(env!("CARGO_BIN_EXE_taskmesh"));
    moto.configure(&mut command)
        .env(
            "AWS_ENDPOINT_URL",
            format!("http://127.0.0.1:{}", taskmesh_e2e::ports::free_port()),
        )
        .env("AWS_MAX_ATTEMPTS", "1")
        .args(["register", "--task-definition", "x"]);
    let out = command.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("DescribeTaskDefinition failed"), "{stderr}");
}

#[test]
fn the_register_request_is_valid_for_botocore() {
    let described = ecs::DescribedTaskDefinition {
        task_definition: {
            let mut td = source("colorteller-blue", "awsvpc");
            td.as_object_mut().unwrap().remove("tags");
            td["taskDefinitionArn"] =
                json!("arn:aws:ecs:us-east-1:123456789012:task-definition/colorteller-blue:4");
            td["revision"] = json!(4);
            td["status"] = json!("ACTIVE");
            td["compatibilities"] = json!(["EC2", "FARGATE"]);
            td["registeredAt"] = json!(1764086400.0);
            td["registeredBy"] = json!("arn:aws:iam::123456789012:role/deployer");
            td["requiresAttributes"] =
                json!([{"name": "com.amazonaws.ecs.capability.docker-remote-api.1.18"}]);
            td
        },
        tags: vec![
            json!({"key": "team", "value": "color"}),
            json!({"key": "aws:cloudformation:stack-name", "value": "app"}),
        ],
    };
    let opts = InjectOptions {
        mesh: Some("colorapp".into()),
        config: Some("s3://colorapp/mesh.yaml".into()),
        ..InjectOptions::default()
    };
    let (request, _) =
        ecs::meshed_request(&described, &opts, &[("taskmesh:request", "r-1")]).unwrap();
    for field in OUTPUT_ONLY_FIELDS {
        assert!(request.get(*field).is_none(), "{field} is output-only");
    }
    let tags: Vec<&str> = request["tags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["key"].as_str().unwrap())
        .collect();
    assert_eq!(
        tags,
        ["team", "taskmesh:source", "taskmesh:request"],
        "aws: tags are reserved"
    );
    let errors =
        taskmesh_e2e::botocore::validate_body("ecs", "RegisterTaskDefinition", &request).unwrap();
    assert!(errors.is_empty(), "botocore: {errors:#?}\n{request:#}");
}

#[test]
fn output_only_fields_match_the_service_model() {
    let script = r#"
import botocore.session, json
m = botocore.session.get_session().get_service_model('ecs')
td = set(m.shape_for('TaskDefinition').members)
rq = set(m.shape_for('RegisterTaskDefinitionRequest').members)
print(json.dumps(sorted(td - rq)))
"#;
    let out = Command::new(venv().python())
        .arg("-c")
        .arg(script)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let model: Vec<String> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(model, OUTPUT_ONLY_FIELDS);
}

/// Headers (lower-case names) and body of one request.
type Exchange = (Vec<(String, String)>, Vec<u8>);

/// One HTTP exchange on a real socket: records the request, answers `response` with 200.
fn serve_once(response: Value) -> (String, mpsc::Receiver<Exchange>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        let mut reader = BufReader::new(stream);
        let mut headers = Vec::new();
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        loop {
            line.clear();
            reader.read_line(&mut line).unwrap();
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            let (k, v) = l.split_once(':').unwrap();
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
        let len: usize = headers
            .iter()
            .find(|(k, _)| k == "content-length")
            .map(|(_, v)| v.parse().unwrap())
            .unwrap_or(0);
        let mut body = vec![0; len];
        reader.read_exact(&mut body).unwrap();
        let payload = serde_json::to_vec(&response).unwrap();
        let mut stream = reader.into_inner();
        write!(
            stream,
            "HTTP/1.1 200 OK\r\ncontent-type: application/x-amz-json-1.1\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
            payload.len()
        )
        .unwrap();
        stream.write_all(&payload).unwrap();
        tx.send((headers, body)).unwrap();
    });
    (endpoint, rx)
}

#[test]
fn fields_the_sdk_does_not_model_survive_both_ways() {
    let rt = runtime();
    // RegisterTaskDefinition: the body on the wire is exactly our JSON, signed.
    let request = json!({
        "family": "future",
        "containerDefinitions": [{"name": "app", "image": "x", "futureContainerField": {"a": [1, 2]}}],
        "futureTaskField": "kept"
    });
    let registered = json!({"taskDefinition": {
        "taskDefinitionArn": "arn:aws:ecs:us-east-1:123456789012:task-definition/future:1",
        "family": "future", "revision": 1, "futureTaskField": "kept",
        "containerDefinitions": [{"name": "app", "image": "x", "futureContainerField": {"a": [1, 2]}}]
    }});
    let (endpoint, rx) = serve_once(registered.clone());
    let answer = rt
        .block_on(api_at(&endpoint).register_task_definition(&request))
        .unwrap();
    let (headers, body) = rx.recv().unwrap();
    assert_eq!(
        body,
        serde_json::to_vec(&request).unwrap(),
        "the body sent is our JSON, byte for byte"
    );
    let header = |k: &str| {
        headers
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.as_str())
    };
    assert_eq!(
        header("x-amz-target"),
        Some("AmazonEC2ContainerServiceV20141113.RegisterTaskDefinition")
    );
    assert!(
        header("authorization").is_some_and(|a| a.starts_with("AWS4-HMAC-SHA256 ")),
        "{headers:?}"
    );
    assert_eq!(
        answer, registered["taskDefinition"],
        "the response keeps unmodelled fields"
    );

    // DescribeTaskDefinition: unmodelled fields and the tags come back untouched.
    let described = json!({
        "taskDefinition": registered["taskDefinition"].clone(),
        "tags": [{"key": "team", "value": "color"}]
    });
    let (endpoint, rx) = serve_once(described.clone());
    let got = rt
        .block_on(api_at(&endpoint).describe_task_definition("future:1"))
        .unwrap();
    let (_, body) = rx.recv().unwrap();
    let sent: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        sent,
        json!({"taskDefinition": "future:1", "include": ["TAGS"]})
    );
    assert_eq!(got.task_definition, described["taskDefinition"]);
    assert_eq!(got.tag("team"), Some("color"));
}

#[test]
fn register_with_xray_adds_the_daemon_and_ejects_back() {
    let moto = MotoServer::start().expect("moto_server");
    let api = api_at(&moto.endpoint());
    let rt = runtime();
    let src = source("colorteller-traced", "awsvpc");
    let source_td = rt.block_on(api.register_task_definition(&src)).unwrap();
    let source_arn = source_td["taskDefinitionArn"].as_str().unwrap().to_string();
    let args = [
        "--task-definition",
        "colorteller-traced",
        "--mesh",
        "colorapp",
        "--config",
        "s3://colorapp/mesh.yaml",
        "--xray",
        "--xray-image",
        "public.ecr.aws/xray/aws-xray-daemon:3.x",
    ];
    let (code, stdout, stderr) = taskmesh(&moto, &args);
    assert_eq!(code, 0, "stderr: {stderr}");
    let arn = stdout.trim().to_string();
    let meshed = rt.block_on(api.describe_task_definition(&arn)).unwrap();
    let td = &meshed.task_definition;
    assert!(taskmesh::is_meshed(td), "{td}");
    let list = td["containerDefinitions"].as_array().unwrap();
    let daemon = list
        .iter()
        .find(|c| c["name"] == "xray-daemon")
        .unwrap_or_else(|| panic!("no daemon registered: {td:#}"));
    assert_eq!(daemon["image"], "public.ecr.aws/xray/aws-xray-daemon:3.x");
    assert_eq!(daemon["user"], "1337");
    let agent = list.iter().find(|c| c["name"] == "taskmesh-agent").unwrap();
    assert_eq!(
        agent["dependsOn"],
        json!([{"containerName": "xray-daemon", "condition": "START"}])
    );

    // eject(what was registered) gives back every field of the source.
    let ejected =
        taskmesh::eject_task_definition(&ecs::registrable(td), &Location::file(&arn)).unwrap();
    let original = ecs::registrable(
        &rt.block_on(api.describe_task_definition(&source_arn))
            .unwrap()
            .task_definition,
    );
    for (key, value) in original.as_object().unwrap() {
        assert_eq!(ejected.get(key), Some(value), "field {key} after eject");
    }

    // Registering the traced revision again with --xray keeps one daemon and the same containers.
    let mut again_args = args.to_vec();
    again_args[1] = &arn;
    let (code, stdout, stderr) = taskmesh(&moto, &again_args);
    assert_eq!(code, 0, "stderr: {stderr}");
    let again = rt
        .block_on(api.describe_task_definition(stdout.trim()))
        .unwrap();
    assert_eq!(
        ecs::registrable(&again.task_definition)["containerDefinitions"],
        ecs::registrable(td)["containerDefinitions"]
    );
}
