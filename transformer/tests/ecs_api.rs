//! The `taskmesh` binary against the real AWS tools: every real-world fixture goes through
//! `taskmesh inject`; API-JSON results must pass botocore's RegisterTaskDefinition validation
//! and register in a moto server with the proxy container and the redirect intact;
//! CloudFormation results must not add cfn-lint errors to those the input already has.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;
use taskmesh::INJECTED_LABEL;
use taskmesh_e2e::botocore;
use taskmesh_e2e::cfnlint;
use taskmesh_e2e::ecs::{self, RoundTrip};
use taskmesh_e2e::fixtures::{self, Fixture};
use taskmesh_e2e::moto::MotoServer;

/// The options every injection here needs (no fixture names a mesh or a config URI).
const MESH_ARGS: [&str; 4] = [
    "--mesh",
    "colorapp",
    "--config",
    "file:///etc/taskmesh/mesh.json",
];

/// Fixtures inject must refuse (exit 2): no `awsvpc`, or Windows (SOURCES.md #10, #11, #20,
/// #22, #24).
const REFUSED: [&str; 5] = [
    "nginx__nginx_ec2.json",
    "consul__ConsulClient.json",
    "windows-fargate-webserver.json",
    "windows-svc-test.stack.yml",
    "product-service__service.yaml",
];

/// API fixtures ECS itself refuses to register, injected or not, with the reason. For these the
/// injected output must fail in moto with exactly the input's error (inject adds no problem).
const UNREGISTRABLE: [(&str, &str); 1] = [(
    "container-dependency.json",
    "EC2 task without task memory whose container 'app' has neither memory nor \
     memoryReservation (the ECS guide example omits them)",
)];

fn unregistrable(name: &str) -> Option<&'static str> {
    UNREGISTRABLE
        .iter()
        .find(|(needle, _)| name.contains(needle))
        .map(|(_, reason)| *reason)
}

fn is_refused(fixture: &Fixture) -> bool {
    REFUSED.iter().any(|needle| fixture.name().contains(needle))
}

/// Runs `taskmesh inject FILE <MESH_ARGS> <extra>`.
fn inject(input: &Path, extra: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_taskmesh"))
        .arg("inject")
        .arg(input)
        .args(MESH_ARGS)
        .args(extra)
        .output()
        .expect("run the taskmesh binary")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Injects `fixture`, expecting success, and writes the output under `dir` (same extension).
fn inject_ok(fixture: &Fixture, extra: &[&str], dir: &Path, tag: &str) -> PathBuf {
    let output = inject(&fixture.path, extra);
    assert!(
        output.status.success(),
        "taskmesh inject {} {extra:?} failed ({}):\n{}",
        fixture.name(),
        output.status,
        text(&output.stderr)
    );
    let extension = fixture
        .path
        .extension()
        .map(|e| e.to_string_lossy().into_owned())
        .unwrap_or_default();
    let out = dir.join(format!("{tag}.{extension}"));
    std::fs::write(&out, &output.stdout).expect("write injected output");
    out
}

/// Asserts that `taskmesh inject` refuses `fixture` with exit 2 and a message naming the file.
fn assert_refused(fixture: &Fixture) {
    let output = inject(&fixture.path, &[]);
    let stderr = text(&output.stderr);
    assert_eq!(
        output.status.code(),
        Some(2),
        "{} must be refused with exit 2; stderr:\n{stderr}",
        fixture.name()
    );
    assert!(
        stderr.contains(&fixture.name()),
        "the refusal of {} must name the file:\n{stderr}",
        fixture.name()
    );
    assert!(
        output.stdout.is_empty(),
        "nothing may be written on failure ({})",
        fixture.name()
    );
}

fn read_json(path: &Path) -> Value {
    let bytes = std::fs::read(path).expect("read output");
    serde_json::from_slice(&bytes)
        .unwrap_or_else(|err| panic!("{} is not JSON: {err}", path.display()))
}

/// Every member of `sent` is in `stored` with the same value (objects recursively, arrays
/// element by element); `stored` may hold more (ECS defaults). Returns the differing paths.
fn missing_from(sent: &Value, stored: &Value, path: &str, out: &mut Vec<String>) {
    match (sent, stored) {
        (Value::Object(a), Value::Object(b)) => {
            for (key, value) in a {
                let here = format!("{path}.{key}");
                match b.get(key) {
                    Some(other) => missing_from(value, other, &here, out),
                    None => out.push(format!("{here}: sent {value}, not stored")),
                }
            }
        }
        (Value::Array(a), Value::Array(b)) if a.len() == b.len() => {
            for (index, (x, y)) in a.iter().zip(b).enumerate() {
                missing_from(x, y, &format!("{path}[{index}]"), out);
            }
        }
        (a, b) if a == b => {}
        (a, b) => out.push(format!("{path}: sent {a}, stored {b}")),
    }
}

fn containers(td: &Value) -> &[Value] {
    td["containerDefinitions"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
}

/// The containers inject added (they carry the `taskmesh.injected` docker label).
fn injected(td: &Value) -> Vec<&Value> {
    containers(td)
        .iter()
        .filter(|c| c["dockerLabels"].get(INJECTED_LABEL).is_some())
        .collect()
}

fn property<'a>(td: &'a Value, name: &str) -> Option<&'a str> {
    td["proxyConfiguration"]["properties"]
        .as_array()?
        .iter()
        .find(|p| p["name"] == name)?["value"]
        .as_str()
}

/// Checks an ECS-redirect injection as sent and as moto stored it: the proxy container, the
/// `proxyConfiguration` naming it, the UID match, the app containers' `dependsOn`, and that
/// everything sent came back.
fn assert_meshed_and_survived(name: &str, sent: &Value, trip: &RoundTrip) {
    let stored = trip.task_definition.as_ref().unwrap_or_else(|| {
        panic!(
            "{name}: moto refused the injected definition: {:?}",
            trip.error
        )
    });
    // DescribeTaskDefinition returns the tags beside the definition, not in it.
    let mut body = sent.clone();
    let sent_tags = body
        .as_object_mut()
        .and_then(|m| m.remove("tags"))
        .unwrap_or_else(|| Value::Array(Vec::new()));
    assert_eq!(sent_tags, Value::Array(trip.tags.clone()), "{name}: tags");
    let mut diffs = Vec::new();
    missing_from(&body, stored, "", &mut diffs);
    assert!(
        diffs.is_empty(),
        "{name}: lost in ECS round trip:\n{}",
        diffs.join("\n")
    );

    for td in [sent, stored] {
        let proxies = injected(td);
        assert_eq!(
            proxies.len(),
            1,
            "{name}: exactly one injected proxy container"
        );
        let proxy = proxies[0];
        let proxy_name = proxy["name"].as_str().expect("proxy name");
        assert_eq!(td["proxyConfiguration"]["type"], "APPMESH", "{name}");
        assert_eq!(
            td["proxyConfiguration"]["containerName"], proxy_name,
            "{name}"
        );
        assert_eq!(td["networkMode"], "awsvpc", "{name}");
        let uid = property(td, "IgnoredUID").expect("IgnoredUID");
        let user = proxy["user"].as_str().expect("proxy user");
        assert_eq!(
            user.split(':').next(),
            Some(uid),
            "{name}: proxy user vs IgnoredUID"
        );
        for key in ["ProxyIngressPort", "ProxyEgressPort", "EgressIgnoredIPs"] {
            assert!(
                property(td, key).is_some(),
                "{name}: proxyConfiguration lacks {key}"
            );
        }
        assert!(
            proxy["healthCheck"]["command"].is_array(),
            "{name}: proxy health check"
        );
        assert_ne!(proxy["essential"], false, "{name}: the proxy is essential");
        // Sidecars that run as the ignored UID bypass the proxy (X-Ray, agents) and may be
        // what the proxy itself waits for, so they need not wait for it.
        let proxy_deps: Vec<&Value> = proxy["dependsOn"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|d| &d["containerName"])
            .collect();
        for app in containers(td).iter().filter(|c| c["name"] != proxy_name) {
            let bypasses = app["user"]
                .as_str()
                .is_some_and(|u| u.split(':').next() == Some(uid));
            if app["essential"] == false || bypasses || proxy_deps.contains(&&app["name"]) {
                continue;
            }
            let waits = app["dependsOn"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|d| d["containerName"] == proxy_name && d["condition"] == "HEALTHY");
            assert!(
                waits,
                "{name}: container {} must wait for the proxy",
                app["name"]
            );
        }
    }
}

/// Validates `files` as RegisterTaskDefinition bodies in one botocore run; panics listing
/// every error.
fn assert_valid_requests(files: &[(String, PathBuf)]) {
    let paths: Vec<&PathBuf> = files.iter().map(|(_, path)| path).collect();
    let results = botocore::validate_files("ecs", "RegisterTaskDefinition", &paths)
        .expect("run botocore validation");
    let problems: Vec<String> = files
        .iter()
        .zip(&results)
        .filter(|(_, result)| !result.is_valid())
        .map(|((name, _), result)| format!("{name}:\n  {}", result.errors.join("\n  ")))
        .collect();
    assert!(
        problems.is_empty(),
        "botocore rejects injected task definitions:\n{}",
        problems.join("\n")
    );
}

#[test]
fn api_json_fixtures_become_valid_registrable_meshed_task_definitions() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut accepted = Vec::new();
    let mut refused = BTreeSet::new();
    for (index, fixture) in fixtures::ecs_taskdefs()
        .iter()
        .filter(|f| !f.kind.is_cfn())
        .enumerate()
    {
        if is_refused(fixture) {
            assert_refused(fixture);
            refused.insert(fixture.name());
        } else {
            let out = inject_ok(fixture, &[], dir.path(), &format!("api-{index}"));
            accepted.push((fixture.name(), out));
        }
    }
    assert_eq!(refused.len(), 3, "refused API fixtures: {refused:?}");
    assert_eq!(accepted.len(), 9, "accepted API fixtures");

    assert_valid_requests(&accepted);

    let moto = MotoServer::start().expect("start moto");
    let paths: Vec<&PathBuf> = accepted.iter().map(|(_, path)| path).collect();
    let trips = ecs::register_and_describe(&moto, &paths).expect("register in moto");
    let mut registered = 0;
    for ((name, path), trip) in accepted.iter().zip(&trips) {
        match unregistrable(name) {
            None => {
                assert_meshed_and_survived(name, &read_json(path), trip);
                registered += 1;
            }
            Some(reason) => {
                let input = fixtures::ecs_taskdef(name);
                let raw = ecs::register_and_describe(&moto, &[&input.path])
                    .expect("register the raw input in moto");
                assert!(
                    raw[0].error.is_some(),
                    "{name} is listed as unregistrable ({reason}) but registers as it is"
                );
                assert_eq!(
                    trip.error, raw[0].error,
                    "{name}: the injected definition must fail only as its input does ({reason})"
                );
            }
        }
    }
    assert_eq!(registered, accepted.len() - UNREGISTRABLE.len());
}

#[test]
fn envoy_proxy_variant_is_valid_and_registers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fixture = fixtures::ecs_taskdef("nginx__nginx_fargate.json");
    let out = inject_ok(&fixture, &["--proxy", "envoy"], dir.path(), "envoy");
    let files = [(format!("{} --proxy envoy", fixture.name()), out.clone())];
    assert_valid_requests(&files);

    let sent = read_json(&out);
    let proxies = injected(&sent);
    assert_eq!(proxies.len(), 1);
    let proxy = proxies[0];
    assert!(
        proxy["image"]
            .as_str()
            .unwrap_or_default()
            .contains("aws-appmesh-envoy"),
        "envoy image: {}",
        proxy["image"]
    );
    let arn = proxy["environment"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|e| e["name"] == "APPMESH_RESOURCE_ARN")
        .and_then(|e| e["value"].as_str())
        .expect("APPMESH_RESOURCE_ARN on the envoy container");
    assert!(arn.starts_with("mesh/colorapp/virtualNode/"), "{arn}");

    let moto = MotoServer::start().expect("start moto");
    let trips = ecs::register_and_describe(&moto, &[&out]).expect("register in moto");
    assert_meshed_and_survived(&files[0].0, &sent, &trips[0]);
}

#[test]
fn proxy_init_redirect_variant_is_valid_and_registers() {
    let dir = tempfile::tempdir().expect("tempdir");
    // EC2 + awsvpc: the only place NET_ADMIN (and so proxy-init) is allowed.
    let fixture = fixtures::ecs_taskdef("tomcat__tomcat_ec2.json");
    let out = inject_ok(&fixture, &["--redirect", "proxy-init"], dir.path(), "init");
    let name = format!("{} --redirect proxy-init", fixture.name());
    assert_valid_requests(&[(name.clone(), out.clone())]);

    let sent = read_json(&out);
    let moto = MotoServer::start().expect("start moto");
    let trips = ecs::register_and_describe(&moto, &[&out]).expect("register in moto");
    let stored = trips[0]
        .task_definition
        .as_ref()
        .unwrap_or_else(|| panic!("{name}: moto refused it: {:?}", trips[0].error));
    let mut diffs = Vec::new();
    missing_from(&sent, stored, "", &mut diffs);
    assert!(
        diffs.is_empty(),
        "{name}: lost in ECS round trip:\n{}",
        diffs.join("\n")
    );

    for td in [&sent, stored] {
        assert!(
            td.get("proxyConfiguration").is_none(),
            "{name}: no proxyConfiguration"
        );
        let added = injected(td);
        assert_eq!(
            added.len(),
            2,
            "{name}: the proxy and proxy-init containers"
        );
        let init = added
            .iter()
            .find(|c| {
                c["linuxParameters"]["capabilities"]["add"]
                    .as_array()
                    .is_some_and(|caps| caps.iter().any(|cap| cap == "NET_ADMIN"))
            })
            .unwrap_or_else(|| panic!("{name}: no injected container adds NET_ADMIN"));
        assert_eq!(
            init["essential"], false,
            "{name}: proxy-init is not essential"
        );
        let command = init["command"].to_string();
        assert!(
            command.contains("proxy-init"),
            "{name}: proxy-init command {command}"
        );
        let proxy = added
            .iter()
            .find(|c| c["name"] != init["name"])
            .expect("the proxy container");
        for app in containers(td)
            .iter()
            .filter(|c| c["dockerLabels"].get(INJECTED_LABEL).is_none())
        {
            let deps = app["dependsOn"].as_array().cloned().unwrap_or_default();
            let waits_for = |container: &Value, condition: &str| {
                deps.iter()
                    .any(|d| d["containerName"] == *container && d["condition"] == condition)
            };
            assert!(
                waits_for(&init["name"], "SUCCESS"),
                "{name}: {} waits for proxy-init",
                app["name"]
            );
            assert!(
                waits_for(&proxy["name"], "HEALTHY"),
                "{name}: {} waits for the proxy",
                app["name"]
            );
        }
    }
}

#[test]
fn cfn_fixtures_inject_without_new_cfn_lint_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut pairs = Vec::new();
    let mut refused = BTreeSet::new();
    for (index, fixture) in fixtures::ecs_taskdefs()
        .iter()
        .filter(|f| f.kind.is_cfn())
        .enumerate()
    {
        if is_refused(fixture) {
            assert_refused(fixture);
            refused.insert(fixture.name());
            continue;
        }
        let out = inject_ok(fixture, &[], dir.path(), &format!("cfn-{index}"));
        let rendered = std::fs::read_to_string(&out).expect("read output");
        assert!(
            rendered.contains(INJECTED_LABEL),
            "{}: no injected container in the output",
            fixture.name()
        );
        pairs.push((fixture.clone(), out));
    }
    assert_eq!(refused.len(), 2, "refused CFN fixtures: {refused:?}");
    assert_eq!(pairs.len(), 10, "accepted CFN fixtures");

    let mut files: Vec<PathBuf> = Vec::new();
    for (fixture, out) in &pairs {
        files.push(fixture.path.clone());
        files.push(out.clone());
    }
    let findings = cfnlint::lint_files(&files).expect("run cfn-lint");
    let of = |file: &Path| -> Vec<cfnlint::Finding> {
        findings
            .iter()
            .filter(|f| f.file == file)
            .cloned()
            .collect()
    };
    let mut problems = Vec::new();
    for (fixture, out) in &pairs {
        let before = of(&fixture.path);
        let after = of(out);
        for error in cfnlint::new_errors(&before, &after) {
            problems.push(format!("{}: {error}", fixture.name()));
        }
    }
    assert!(
        problems.is_empty(),
        "inject added cfn-lint errors:\n{}",
        problems.join("\n")
    );
}

#[test]
fn wrapped_describe_output_becomes_a_registrable_definition_with_its_tags() {
    // What `aws ecs describe-task-definition --include TAGS` prints for a registered revision of
    // fixture #15: the definition wrapped, with every read-only member and the tags beside it.
    let fixture = fixtures::ecs_taskdef("task-definition.json.at-777e820.json");
    let mut td = read_json(&fixture.path);
    let extra = serde_json::json!({
        "taskDefinitionArn": "arn:aws:ecs:us-east-1:123456789012:task-definition/httpd:7",
        "revision": 7,
        "status": "ACTIVE",
        "requiresAttributes": [{"name": "com.amazonaws.ecs.capability.docker-remote-api.1.18"}],
        "compatibilities": ["EC2", "FARGATE"],
        "registeredAt": "2026-11-20T10:00:00.000000+00:00",
        "registeredBy": "arn:aws:iam::123456789012:user/ci",
        "deregisteredAt": null,
        "pidMode": null
    });
    for (key, value) in extra.as_object().expect("object") {
        td[key.as_str()] = value.clone();
    }
    let tags = serde_json::json!([{"key": "team", "value": "web"}]);
    let describe = serde_json::json!({"taskDefinition": td, "tags": tags});
    let dir = tempfile::tempdir().expect("tempdir");
    let input = dir.path().join("describe.json");
    std::fs::write(&input, serde_json::to_vec_pretty(&describe).expect("json")).expect("write");
    let wrapped = Fixture {
        path: input,
        kind: fixtures::FixtureKind::DescribeOutput,
    };
    let out = inject_ok(&wrapped, &[], dir.path(), "from-describe");
    let name = "describe-task-definition output of fixture #15".to_owned();
    assert_valid_requests(&[(name.clone(), out.clone())]);

    let sent = read_json(&out);
    assert_eq!(
        sent["tags"], tags,
        "{name}: the tags must be kept for registration"
    );
    let moto = MotoServer::start().expect("start moto");
    let trips = ecs::register_and_describe(&moto, &[&out]).expect("register in moto");
    assert_meshed_and_survived(&name, &sent, &trips[0]);
    assert_eq!(trips[0].tags, tags.as_array().cloned().unwrap_or_default());
}

/// Whether a container is an X-Ray daemon (image `aws-xray-daemon`, name `xray-daemon`, or
/// 2000/udp).
fn is_xray_daemon(container: &Value) -> bool {
    container["image"]
        .as_str()
        .is_some_and(|i| i.contains("aws-xray-daemon"))
        || container["name"] == "xray-daemon"
        || container["portMappings"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|pm| pm["containerPort"] == 2000 && pm["protocol"] == "udp")
}

#[test]
fn xray_variant_is_valid_registers_and_lints_clean() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut api = Vec::new();
    let mut cfn = Vec::new();
    for (index, fixture) in fixtures::ecs_taskdefs().iter().enumerate() {
        if is_refused(fixture) {
            continue;
        }
        let out = inject_ok(fixture, &["--xray"], dir.path(), &format!("xray-{index}"));
        if fixture.kind.is_cfn() {
            cfn.push((fixture.clone(), out));
        } else {
            api.push((format!("{} --xray", fixture.name()), out));
        }
    }
    assert_eq!(api.len(), 9, "accepted API fixtures");
    assert_eq!(cfn.len(), 10, "accepted CFN fixtures");

    // API JSON: botocore accepts every request; ECS (moto) stores all of it.
    assert_valid_requests(&api);
    let moto = MotoServer::start().expect("start moto");
    let paths: Vec<&PathBuf> = api.iter().map(|(_, path)| path).collect();
    let trips = ecs::register_and_describe(&moto, &paths).expect("register in moto");
    let mut registered = 0;
    for ((name, path), trip) in api.iter().zip(&trips) {
        if unregistrable(name).is_some() {
            assert!(trip.error.is_some(), "{name}: registers now?");
            continue;
        }
        let sent = read_json(path);
        let stored = trip
            .task_definition
            .as_ref()
            .unwrap_or_else(|| panic!("{name}: moto refused it: {:?}", trip.error));
        let mut body = sent.clone();
        if let Some(m) = body.as_object_mut() {
            m.remove("tags");
        }
        let mut diffs = Vec::new();
        missing_from(&body, stored, "", &mut diffs);
        assert!(diffs.is_empty(), "{name}: lost:\n{}", diffs.join("\n"));
        for td in [&sent, stored] {
            let daemons: Vec<&Value> = containers(td)
                .iter()
                .filter(|c| is_xray_daemon(c))
                .collect();
            assert_eq!(daemons.len(), 1, "{name}: one X-Ray daemon");
            let daemon = daemons[0];
            assert_eq!(daemon["user"], "1337", "{name}: daemon user");
            let proxy_name = td["proxyConfiguration"]["containerName"].clone();
            let proxy = containers(td)
                .iter()
                .find(|c| c["name"] == proxy_name)
                .unwrap_or_else(|| panic!("{name}: no proxy"));
            assert_eq!(
                proxy["dependsOn"],
                serde_json::json!([{"containerName": daemon["name"], "condition": "START"}]),
                "{name}"
            );
            assert!(
                proxy["environment"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|e| e["name"] == "ENABLE_ENVOY_XRAY_TRACING" && e["value"] == "1"),
                "{name}: tracing env"
            );
        }
        registered += 1;
    }
    assert_eq!(registered, api.len() - UNREGISTRABLE.len());

    // CloudFormation: no cfn-lint error the input does not already have.
    let mut files: Vec<PathBuf> = Vec::new();
    for (fixture, out) in &cfn {
        files.push(fixture.path.clone());
        files.push(out.clone());
    }
    let findings = cfnlint::lint_files(&files).expect("run cfn-lint");
    let of = |file: &Path| -> Vec<cfnlint::Finding> {
        findings
            .iter()
            .filter(|f| f.file == file)
            .cloned()
            .collect()
    };
    let mut problems = Vec::new();
    for (fixture, out) in &cfn {
        for error in cfnlint::new_errors(&of(&fixture.path), &of(out)) {
            problems.push(format!("{} --xray: {error}", fixture.name()));
        }
    }
    assert!(
        problems.is_empty(),
        "inject --xray added cfn-lint errors:\n{}",
        problems.join("\n")
    );
}
