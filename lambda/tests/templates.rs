//! Templates under cfn-lint (from the test venv; no skipping): templates/taskmesh.yaml and the
//! ColorApp stack as written, the ColorApp stack after the TaskMesh macro, and the macro's output on
//! every CloudFormation fixture template (no error that the input did not already have).

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{Value, json};
use taskmesh_e2e::cfnlint::{self, Level};
use taskmesh_e2e::venv::{venv, workspace_root};
use taskmesh_lambda::admission::{TASK_DEFINITION_TYPE, cfn_is_meshed};
use taskmesh_lambda::macro_transform::handle_macro_event;

/// The repository's verbatim copy of shared/fixtures/ecs-taskdefs (see tests/src/fixtures.rs),
/// so the tests need nothing outside the checkout.
fn fixtures_dir() -> PathBuf {
    workspace_root().join("tests/fixtures/ecs-taskdefs")
}

/// Reads CloudFormation templates (YAML short-form tags or JSON) into long-form JSON, the way
/// CloudFormation hands them to a macro, with cfn-lint's own template decoder.
fn decode(paths: &[PathBuf], out_dir: &Path) -> Vec<Value> {
    let script = r#"
import json, sys
from cfnlint.decode import decode
out_dir = sys.argv[1]
for i, path in enumerate(sys.argv[2:]):
    template, problems = decode(path)
    if template is None:
        sys.exit(f"{path}: cannot decode: {problems}")
    with open(f"{out_dir}/{i}.json", "w") as f:
        json.dump(template, f, default=str)
"#;
    let status = Command::new(venv().python())
        .arg("-c")
        .arg(script)
        .arg(out_dir)
        .args(paths)
        .status()
        .expect("run the venv's python (scripts/setup-test-env.sh installs it)");
    assert!(status.success(), "decoding templates failed");
    (0..paths.len())
        .map(|i| {
            let text = std::fs::read_to_string(out_dir.join(format!("{i}.json"))).unwrap();
            serde_json::from_str(&text).unwrap()
        })
        .collect()
}

/// Runs the macro as CloudFormation would for a template with a template-level Transform.
fn run_macro(template: &Value, params: Value, stack_params: Value) -> Value {
    let mut fragment = template.clone();
    if let Some(map) = fragment.as_object_mut() {
        map.remove("Transform");
    }
    let event = json!({
        "region": "us-east-1",
        "accountId": "123456789012",
        "fragment": fragment,
        "transformId": "123456789012::TaskMesh",
        "params": params,
        "requestId": "templates-test",
        "templateParameterValues": stack_params,
    });
    serde_json::to_value(handle_macro_event(&event)).unwrap()
}

fn task_definition_ids(template: &Value) -> Vec<String> {
    template["Resources"]
        .as_object()
        .map(|r| {
            r.iter()
                .filter(|(_, v)| v["Type"] == TASK_DEFINITION_TYPE)
                .map(|(k, _)| k.clone())
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn shipped_templates_pass_cfn_lint() {
    let root = workspace_root();
    let mut files: Vec<PathBuf> = std::fs::read_dir(root.join("templates"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    for expected in ["taskmesh.yaml", "custom-resource-example.yaml"] {
        assert!(
            files.iter().any(|f| f.ends_with(expected)),
            "templates/{expected} is linted"
        );
    }
    files.push(root.join("templates/colorapp/colorapp.yaml"));
    let findings = cfnlint::lint_files(&files).expect("cfn-lint runs");
    let errors = cfnlint::of_level(&findings, Level::Error);
    assert!(errors.is_empty(), "cfn-lint errors: {errors:#?}");
    let warnings = cfnlint::of_level(&findings, Level::Warning);
    assert!(warnings.is_empty(), "cfn-lint warnings: {warnings:#?}");
}

#[test]
fn colorapp_after_the_macro_passes_cfn_lint() {
    let root = workspace_root();
    let dir = tempfile::tempdir().unwrap();
    let template = decode(&[root.join("templates/colorapp/colorapp.yaml")], dir.path())
        .pop()
        .unwrap();
    let params = template["Transform"][0]["Parameters"].clone();
    assert_eq!(template["Transform"][0]["Name"], "TaskMesh");
    let out = run_macro(
        &template,
        params,
        json!({"ConfigBucket": "colorapp-config", "ConfigKey": "colorapp/mesh.yaml"}),
    );
    assert_eq!(out["status"], "success", "{out:#}");
    let fragment = &out["fragment"];
    let ids = task_definition_ids(fragment);
    assert_eq!(ids.len(), 4);
    for id in &ids {
        let props = &fragment["Resources"][id]["Properties"];
        assert!(cfn_is_meshed(props), "{id} meshed");
        let text = props.to_string();
        assert!(
            text.contains("s3://colorapp-config/colorapp/mesh.yaml"),
            "{id}: {text}"
        );
    }
    let path = dir.path().join("colorapp-transformed.json");
    std::fs::write(&path, serde_json::to_vec_pretty(fragment).unwrap()).unwrap();
    let findings = cfnlint::lint_file(&path).expect("cfn-lint runs");
    let errors = cfnlint::of_level(&findings, Level::Error);
    assert!(
        errors.is_empty(),
        "cfn-lint errors on the macro output: {errors:#?}"
    );
}

#[test]
fn macro_output_on_every_fixture_template_adds_no_cfn_lint_error() {
    let dir = tempfile::tempdir().unwrap();
    let mut inputs: Vec<PathBuf> = std::fs::read_dir(fixtures_dir())
        .expect("the fixtures directory (shared/fixtures/ecs-taskdefs)")
        .map(|e| e.unwrap().path())
        .filter(|p| {
            matches!(
                p.extension().and_then(|e| e.to_str()),
                Some("yaml" | "yml" | "json")
            )
        })
        .collect();
    inputs.sort();
    let decoded = decode(&inputs, dir.path());
    let mut linted_inputs = Vec::new();
    let mut outputs = Vec::new();
    let mut failures = Vec::new();
    for (path, template) in inputs.iter().zip(&decoded) {
        let ids = task_definition_ids(template);
        if ids.is_empty() {
            continue; // an ECS API task definition, not a template
        }
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        let out = run_macro(
            template,
            json!({"Mesh": "fixtures", "Config": "s3://taskmesh-fixtures/mesh.yaml"}),
            json!({}),
        );
        if out["status"] == "success" {
            let out_path = dir.path().join(format!("out-{}.json", outputs.len()));
            std::fs::write(
                &out_path,
                serde_json::to_vec_pretty(&out["fragment"]).unwrap(),
            )
            .unwrap();
            let in_path = dir.path().join(format!("in-{}.json", outputs.len()));
            std::fs::write(&in_path, serde_json::to_vec_pretty(template).unwrap()).unwrap();
            linted_inputs.push(in_path);
            outputs.push((name, out_path));
        } else {
            // A refusal must say which resource is the problem.
            let message = out["errorMessage"].as_str().unwrap_or_default().to_string();
            assert!(
                ids.iter()
                    .any(|id| message.contains(&format!("resource {id}"))),
                "{name}: failure names no task definition resource: {message}"
            );
            failures.push((name, message));
        }
    }
    eprintln!("macro refused {} fixture template(s):", failures.len());
    for (name, message) in &failures {
        eprintln!("  {name}: {message}");
    }
    assert!(
        outputs.len() >= 8,
        "the macro should mesh most fixture templates; meshed {}, refused {failures:#?}",
        outputs.len()
    );
    let before = cfnlint::lint_files(&linted_inputs).expect("cfn-lint runs on the inputs");
    let after = cfnlint::lint_files(&outputs.iter().map(|(_, p)| p.clone()).collect::<Vec<_>>())
        .expect("cfn-lint runs on the outputs");
    let mut problems = Vec::new();
    for (i, (name, out_path)) in outputs.iter().enumerate() {
        let in_path = &linted_inputs[i];
        let b: Vec<_> = before
            .iter()
            .filter(|f| &f.file == in_path)
            .cloned()
            .collect();
        let a: Vec<_> = after
            .iter()
            .filter(|f| &f.file == out_path)
            .cloned()
            .collect();
        for e in cfnlint::new_errors(&b, &a) {
            problems.push(format!("{name}: {e}"));
        }
    }
    assert!(
        problems.is_empty(),
        "new cfn-lint errors:\n{}",
        problems.join("\n")
    );
}
