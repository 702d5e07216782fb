//! Tests of the test-support library itself, against the real tools: moto answers ECS calls,
//! botocore's validator accepts valid and rejects invalid request bodies, cfn-lint findings are
//! read and compared, child processes are killed on drop.

use std::io::Read;
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::process::Command;
use std::time::Duration;

use serde_json::json;
use taskmesh_e2e::botocore;
use taskmesh_e2e::cfnlint::{self, Level};
use taskmesh_e2e::moto::MotoServer;
use taskmesh_e2e::ports::free_port;
use taskmesh_e2e::process::ChildProcess;
use taskmesh_e2e::venv::venv;

/// Runs a boto3 snippet against `moto` with the server's environment; returns stdout.
fn boto3(moto: &MotoServer, code: &str) -> String {
    let mut command = Command::new(venv().python());
    command.args(["-c", code]);
    moto.configure(&mut command);
    let output = command.output().expect("run venv python");
    assert!(
        output.status.success(),
        "boto3 snippet failed: {}\n{}",
        String::from_utf8_lossy(&output.stderr),
        moto.log()
    );
    String::from_utf8(output.stdout).expect("utf-8 stdout")
}

#[test]
fn moto_answers_ecs_and_forgets_on_reset() {
    let moto = MotoServer::start().expect("start moto");
    assert!(moto.endpoint().ends_with(&format!(":{}", moto.port())));
    let env = moto.env();
    let get = |key: &str| env.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str());
    assert_eq!(get("AWS_ENDPOINT_URL"), Some(moto.endpoint().as_str()));
    assert_eq!(get("AWS_ACCESS_KEY_ID"), Some("testing"));
    assert_eq!(get("AWS_SECRET_ACCESS_KEY"), Some("testing"));
    assert_eq!(get("AWS_REGION"), Some("us-east-1"));

    let register = r#"
import boto3, json
ecs = boto3.client("ecs")
ecs.register_task_definition(family="harness", containerDefinitions=[
    {"name": "app", "image": "nginx", "memory": 128}])
print(json.dumps(ecs.list_task_definition_families()["families"]))
"#;
    let families: Vec<String> =
        serde_json::from_str(boto3(&moto, register).trim()).expect("families JSON");
    assert_eq!(families, ["harness"]);

    moto.reset().expect("reset moto");
    let list = r#"
import boto3, json
print(json.dumps(boto3.client("ecs").list_task_definition_families()["families"]))
"#;
    let families: Vec<String> =
        serde_json::from_str(boto3(&moto, list).trim()).expect("families JSON");
    assert!(families.is_empty(), "reset kept {families:?}");
}

#[test]
fn moto_servers_are_independent_and_die_on_drop() {
    let first = MotoServer::start().expect("start first moto");
    let second = MotoServer::start().expect("start second moto");
    assert_ne!(first.port(), second.port());
    let port = first.port();
    drop(first);
    // The port is closed once the server is gone.
    let closed = (0..100).any(|_| {
        std::thread::sleep(Duration::from_millis(50));
        TcpStream::connect((Ipv4Addr::LOCALHOST, port)).is_err()
    });
    assert!(closed, "moto on port {port} still answers after drop");
    let families = boto3(
        &second,
        "import boto3; print(len(boto3.client('ecs').list_task_definition_families()['families']))",
    );
    assert_eq!(families.trim(), "0");
}

#[test]
fn botocore_accepts_a_valid_register_task_definition_body() {
    let body = json!({
        "family": "web",
        "networkMode": "awsvpc",
        "containerDefinitions": [{
            "name": "app", "image": "nginx", "cpu": 256, "memory": 512, "essential": true,
            "portMappings": [{"containerPort": 80, "protocol": "tcp"}],
            "dependsOn": [{"containerName": "proxy", "condition": "HEALTHY"}]
        }],
        "proxyConfiguration": {"type": "APPMESH", "containerName": "proxy",
            "properties": [{"name": "IgnoredUID", "value": "1337"}]},
        "cpu": "512",
        "memory": "1024"
    });
    let errors = botocore::validate_body("ecs", "RegisterTaskDefinition", &body).expect("validate");
    assert!(errors.is_empty(), "valid body rejected: {errors:?}");
}

#[test]
fn botocore_rejects_wrong_types_unknown_members_and_missing_required() {
    let bodies = vec![
        (
            "string cpu".to_owned(),
            json!({"family": "web", "containerDefinitions": [{"name": "app", "image": "nginx", "cpu": "256"}]}),
        ),
        (
            "read-only member".to_owned(),
            json!({"family": "web", "revision": 3, "containerDefinitions": [{"name": "app", "image": "nginx"}]}),
        ),
        ("no containers".to_owned(), json!({"family": "web"})),
        ("not an object".to_owned(), json!(["family"])),
    ];
    let results =
        botocore::validate_bodies("ecs", "RegisterTaskDefinition", &bodies).expect("validate");
    assert_eq!(results.len(), 4);
    let errors = |name: &str| {
        results
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, e)| e.join("\n"))
            .unwrap_or_default()
    };
    assert!(
        errors("string cpu").contains("Invalid type for parameter containerDefinitions[0].cpu"),
        "{}",
        errors("string cpu")
    );
    assert!(errors("read-only member").contains("Unknown parameter in input: \"revision\""));
    assert!(
        errors("no containers")
            .contains("Missing required parameter in input: \"containerDefinitions\"")
    );
    assert!(errors("not an object").contains("must be a JSON object"));
}

#[test]
fn botocore_refuses_an_unknown_operation() {
    let err = botocore::validate_body("ecs", "RegisterTaskDefinitionTypo", &json!({}))
        .expect_err("unknown operation must fail");
    assert!(
        err.to_string().contains("RegisterTaskDefinitionTypo"),
        "{err}"
    );
}

#[test]
fn cfnlint_reports_errors_and_new_errors_are_told_apart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let template = |container_port: &str| {
        format!(
            r#"AWSTemplateFormatVersion: "2010-09-09"
Resources:
  TaskDef:
    Type: AWS::ECS::TaskDefinition
    Properties:
      Family: web
      ContainerDefinitions:
        - Name: app
          Image: nginx
          Memory: 128
          PortMappings:
            - ContainerPort: {container_port}
              Protocol: tcp
"#
        )
    };
    let clean = dir.path().join("clean.yaml");
    let broken = dir.path().join("broken.yaml");
    std::fs::write(&clean, template("80")).expect("write");
    std::fs::write(&broken, template("eighty")).expect("write");

    let findings = cfnlint::lint_files(&[&clean, &broken]).expect("cfn-lint");
    let in_clean: Vec<_> = findings
        .iter()
        .filter(|f| f.file == clean)
        .cloned()
        .collect();
    let in_broken: Vec<_> = findings
        .iter()
        .filter(|f| f.file == broken)
        .cloned()
        .collect();
    assert!(
        cfnlint::of_level(&in_clean, Level::Error).is_empty(),
        "{in_clean:?}"
    );
    let errors = cfnlint::of_level(&in_broken, Level::Error);
    assert!(
        !errors.is_empty(),
        "a string ContainerPort must be an error"
    );
    assert!(
        errors.iter().all(|f| f.resource() == Some("TaskDef")),
        "{errors:?}"
    );
    assert!(
        errors[0].path.iter().any(|p| p == "ContainerPort"),
        "{errors:?}"
    );

    // The broken template's errors are new relative to the clean one, not relative to itself.
    assert_eq!(
        cfnlint::new_errors(&in_clean, &in_broken).len(),
        errors.len()
    );
    assert!(cfnlint::new_errors(&in_broken, &in_broken).is_empty());
    assert!(cfnlint::new_errors(&in_broken, &in_clean).is_empty());
}

#[test]
fn child_process_logs_output_and_waits_for_its_port() {
    let port = free_port();
    let script = format!(
        "import socket, sys, time\nprint('starting', flush=True)\nprint('to stderr', file=sys.stderr, flush=True)\n\
         time.sleep(0.3)\ns = socket.socket()\ns.bind(('127.0.0.1', {port}))\ns.listen()\n\
         print('listening', flush=True)\ntime.sleep(600)\n"
    );
    let mut command = Command::new(venv().python());
    command.args(["-c", &script]);
    let mut child = ChildProcess::spawn("listener", command).expect("spawn");
    child
        .wait_for_port(port, Duration::from_secs(30))
        .expect("listener comes up");
    let log = child.log();
    assert!(
        log.contains("starting") && log.contains("to stderr"),
        "{log}"
    );
    let pid = child.pid();
    drop(child);
    // The process is gone (no zombie either: it was reaped).
    assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists());
    assert!(TcpStream::connect((Ipv4Addr::LOCALHOST, port)).is_err());
}

#[test]
fn child_process_that_exits_early_fails_with_its_output() {
    let mut command = Command::new(venv().python());
    command.args([
        "-c",
        "import sys; print('bad flag --frobnicate'); sys.exit(3)",
    ]);
    let mut child = ChildProcess::spawn("quitter", command).expect("spawn");
    let err = child
        .wait_for_port(free_port(), Duration::from_secs(30))
        .expect_err("exited process is never ready");
    let text = err.to_string();
    assert!(
        text.contains("exited") && text.contains("bad flag --frobnicate"),
        "{text}"
    );
}

#[test]
fn free_ports_are_distinct_and_bindable() {
    let ports: Vec<u16> = (0..20).map(|_| free_port()).collect();
    let mut unique = ports.clone();
    unique.sort_unstable();
    unique.dedup();
    assert_eq!(unique.len(), ports.len());
    for port in ports {
        TcpListener::bind((Ipv4Addr::LOCALHOST, port)).expect("free port binds");
    }
}

#[test]
fn venv_holds_the_pinned_tools() {
    let venv = venv();
    for tool in ["python", "moto_server", "cfn-lint"] {
        assert!(
            venv.bin(tool).is_file(),
            "{tool} missing in {}",
            venv.root().display()
        );
    }
    let mut output = String::new();
    let mut child = Command::new(venv.python())
        .args(["-c", "import botocore, boto3, moto; print(botocore.__version__, boto3.__version__, moto.__version__)"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("venv python");
    child
        .stdout
        .take()
        .expect("stdout")
        .read_to_string(&mut output)
        .expect("read");
    assert!(child.wait().expect("wait").success());
    let requirements = std::fs::read_to_string(
        taskmesh_e2e::venv::workspace_root().join("scripts/requirements-test.txt"),
    )
    .expect("requirements");
    let versions: Vec<&str> = output.split_whitespace().collect();
    assert_eq!(versions.len(), 3, "{output}");
    assert!(
        requirements.contains(&format!("botocore=={}", versions[0])),
        "{output}"
    );
    assert!(
        requirements.contains(&format!("boto3=={}", versions[1])),
        "{output}"
    );
    assert!(
        requirements.contains(&format!("moto[server]=={}", versions[2])),
        "{output}"
    );
}

#[test]
fn fixtures_are_all_there_and_classified() {
    use taskmesh_e2e::fixtures::{self, FixtureKind};
    let all = fixtures::ecs_taskdefs();
    assert_eq!(all.len(), 24, "SOURCES.md lists 24 fixtures");
    let count = |kind| all.iter().filter(|f| f.kind == kind).count();
    assert_eq!(count(FixtureKind::CfnYaml), 10);
    assert_eq!(count(FixtureKind::CfnJson), 2);
    assert_eq!(count(FixtureKind::DescribeOutput), 1);
    assert_eq!(count(FixtureKind::ApiJson), 11);
    assert_eq!(
        fixtures::ecs_taskdef("testing.json").kind,
        FixtureKind::DescribeOutput
    );
}

#[test]
fn ecs_round_trip_registers_describes_and_reports_refusals() {
    use taskmesh_e2e::ecs;
    let moto = MotoServer::start().expect("start moto");
    let dir = tempfile::tempdir().expect("tempdir");
    let good = dir.path().join("good.json");
    let bad = dir.path().join("bad.json");
    let body = json!({
        "family": "roundtrip",
        "networkMode": "awsvpc",
        "containerDefinitions": [
            {"name": "app", "image": "nginx", "memory": 128,
             "dependsOn": [{"containerName": "proxy", "condition": "HEALTHY"}]},
            {"name": "proxy", "image": "agent", "memory": 64, "user": "1337",
             "healthCheck": {"command": ["CMD", "true"], "interval": 5, "timeout": 2, "retries": 3}}
        ],
        "proxyConfiguration": {"type": "APPMESH", "containerName": "proxy",
            "properties": [{"name": "IgnoredUID", "value": "1337"}, {"name": "AppPorts", "value": "80"}]},
        "tags": [{"key": "team", "value": "mesh"}]
    });
    std::fs::write(&good, body.to_string()).expect("write");
    std::fs::write(
        &bad,
        json!({"family": "x", "containerDefinitions": "nope"}).to_string(),
    )
    .expect("write");
    let results = ecs::register_and_describe(&moto, &[&good, &bad]).expect("round trip");
    assert_eq!(results.len(), 2);
    let stored = results[0]
        .task_definition
        .as_ref()
        .unwrap_or_else(|| panic!("{:?}", results[0].error));
    assert_eq!(stored["proxyConfiguration"], body["proxyConfiguration"]);
    assert_eq!(
        stored["containerDefinitions"][0]["dependsOn"],
        body["containerDefinitions"][0]["dependsOn"]
    );
    assert_eq!(stored["revision"], 1);
    assert!(
        results[0]
            .arn
            .as_deref()
            .unwrap_or_default()
            .ends_with("task-definition/roundtrip:1")
    );
    assert_eq!(results[0].tags, [json!({"key": "team", "value": "mesh"})]);
    assert!(results[1].task_definition.is_none());
    assert!(
        results[1]
            .error
            .as_deref()
            .unwrap_or_default()
            .contains("containerDefinitions"),
        "{:?}",
        results[1].error
    );
}
