//! The whole `bootstrap` under a real Lambda runtime emulator: `cargo lambda watch` runs the
//! function behind the Lambda Runtime API, `cargo lambda invoke --data-file` sends each event type.
//! cargo-lambda comes from the test venv (scripts/setup-test-env.sh); a missing one fails the test.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};
use support::*;
use taskmesh_e2e::ports::free_port;
use taskmesh_e2e::process::ChildProcess;
use taskmesh_e2e::venv::venv;

/// How long the first invocation may take: `watch` compiles the function then.
const FIRST_INVOKE: Duration = Duration::from_secs(900);

struct Emulator {
    process: ChildProcess,
    cargo_lambda: PathBuf,
    port: u16,
}

impl Emulator {
    /// Starts `cargo lambda watch` for this crate with `env` for the function.
    fn start(env: &[(String, String)]) -> Emulator {
        let cargo_lambda = venv().tool("cargo-lambda");
        let port = free_port();
        let mut command = Command::new(&cargo_lambda);
        command
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .args(["lambda", "watch", "--ignore-changes", "--quiet"])
            .args([
                "--invoke-address",
                "127.0.0.1",
                "--invoke-port",
                &port.to_string(),
            ])
            .args(["--timeout", &FIRST_INVOKE.as_secs().to_string()]);
        for (key, value) in env {
            command.arg("--env-var").arg(format!("{key}={value}"));
            command.env(key, value);
        }
        let mut process =
            ChildProcess::spawn("cargo-lambda-watch", command).expect("cargo lambda watch starts");
        process
            .wait_for_port(port, Duration::from_secs(120))
            .expect("cargo lambda watch listens");
        Emulator {
            process,
            cargo_lambda,
            port,
        }
    }

    /// Invokes `bootstrap` with the event in `file`: the function's result, or its error text.
    fn invoke(&self, file: &Path) -> Result<Value, String> {
        let output = Command::new(&self.cargo_lambda)
            .args(["lambda", "invoke", "bootstrap", "--output-format", "json"])
            .args([
                "--invoke-address",
                "127.0.0.1",
                "--invoke-port",
                &self.port.to_string(),
            ])
            .arg("--data-file")
            .arg(file)
            .output()
            .expect("cargo lambda invoke runs");
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        if output.status.success() {
            serde_json::from_str(&stdout)
                .map_err(|e| format!("{}: not JSON ({e}): {stdout} {stderr}", file.display()))
        } else {
            Err(format!("{stdout}\n{stderr}"))
        }
    }

    fn log(&self) -> String {
        self.process.log_tail()
    }
}

fn write_event(dir: &Path, name: &str, event: &Value) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, serde_json::to_vec_pretty(event).unwrap()).unwrap();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bootstrap_serves_every_event_type_through_cargo_lambda() {
    let moto = moto();
    let api = ecs(&moto);
    let source = register(&api, &source_task_definition("colorteller-white")).await;
    let recorder = ResponseRecorder::start().await;
    let dir = tempfile::tempdir().unwrap();

    let mut create = event("custom-resource-create.json");
    create["ResponseURL"] = json!(recorder.url());
    create["ResourceProperties"]["TaskDefinition"] = json!(source);
    let files = [
        event_path("macro-template.json"),
        event_path("macro-fragment.json"),
        event_path("cfn-lambda-hook-create.json"),
        event_path("ecs-lifecycle-hook.json"),
        write_event(dir.path(), "create.json", &create),
        event_path("unknown-s3-put.json"),
    ];

    let mut env = moto.env();
    env.push(("RUST_LOG".into(), "info".into()));
    let emulator = Emulator::start(&env);
    let results = tokio::task::spawn_blocking(move || {
        let results: Vec<_> = files.iter().map(|f| emulator.invoke(f)).collect();
        (results, emulator.log())
    })
    .await
    .unwrap();
    let (results, log) = results;
    let [
        macro_template,
        macro_fragment,
        cfn_hook,
        ecs_hook,
        custom_resource,
        unknown,
    ] = <[Result<Value, String>; 6]>::try_from(results).unwrap();

    let ok = |r: Result<Value, String>, what: &str| {
        r.unwrap_or_else(|e| panic!("{what} failed: {e}\nemulator log:\n{log}"))
    };
    let out = ok(macro_template, "macro (template)");
    assert_eq!(out["status"], "success", "{out:#}");
    assert_eq!(out["requestId"], "c8a9a7f6-5f3e-4c1d-9b2a-1d0e3f4a5b6c");
    let out = ok(macro_fragment, "macro (fragment)");
    assert_eq!(out["status"], "success", "{out:#}");

    let out = ok(cfn_hook, "CloudFormation hook");
    assert_eq!(out["hookStatus"], "FAILED");
    assert_eq!(out["errorCode"], "NonCompliant");

    // moto does not serve DescribeServiceRevisions: the hook refuses, naming the call.
    let out = ok(ecs_hook, "ECS lifecycle hook");
    assert_eq!(out["hookStatus"], "FAILED");
    assert!(
        out["reason"]
            .as_str()
            .unwrap()
            .contains("DescribeServiceRevisions"),
        "{out:#}"
    );

    let out = ok(custom_resource, "custom resource");
    assert_eq!(out["Status"], "SUCCESS", "{out:#}");
    let put = recorder.single();
    assert_eq!(put.method, "PUT");
    assert_eq!(put.header("content-type"), None);
    let body = put.json();
    assert_eq!(body["Status"], "SUCCESS");
    let arn = body["Data"]["TaskDefinitionArn"].as_str().unwrap();
    let registered = api.describe_task_definition(arn).await.unwrap();
    assert!(taskmesh::is_meshed(&registered.task_definition));
    assert_eq!(registered.tag("taskmesh:source"), Some(source.as_str()));

    let err = unknown.expect_err("an unknown event fails the invocation");
    assert!(err.contains("keys seen: [Records]"), "{err}");
    assert!(err.contains("UnknownEvent"), "{err}");
}
