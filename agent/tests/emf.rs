//! CloudWatch EMF from the real `taskmesh-agent` binary (`TASKMESH_CLOUDWATCH_EMF=1`, a short
//! interval) serving real requests through its egress and ingress listeners: every EMF line on
//! stdout is validated by the `jsonschema` package (from the test venv) against a JSON Schema
//! written from the CloudWatch "Embedded metric format specification", then checked for what a
//! schema cannot say (every dimension and metric named in a directive is a top-level member;
//! at most 100 metrics per directive, 30 dimensions per set) and for the numbers: requests,
//! status classes and body bytes (`TargetProcessedBytes`) per target add up to what was sent,
//! inbound requests, gRPC requests and `ProcessedBytes` too.

mod support;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::{DocBuilder, HttpClient, World, http_backend};

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The EMF specification's structure as JSON Schema (draft 2020-12).
fn emf_schema() -> Value {
    let units = [
        "Seconds",
        "Microseconds",
        "Milliseconds",
        "Bytes",
        "Kilobytes",
        "Megabytes",
        "Gigabytes",
        "Terabytes",
        "Bits",
        "Kilobits",
        "Megabits",
        "Gigabits",
        "Terabits",
        "Percent",
        "Count",
        "Bytes/Second",
        "Kilobytes/Second",
        "Megabytes/Second",
        "Gigabytes/Second",
        "Terabytes/Second",
        "Bits/Second",
        "Kilobits/Second",
        "Megabits/Second",
        "Gigabits/Second",
        "Terabits/Second",
        "Count/Second",
        "None",
    ];
    json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "required": ["_aws"],
        "properties": {
            "_aws": {
                "type": "object",
                "required": ["Timestamp", "CloudWatchMetrics"],
                "properties": {
                    "Timestamp": {"type": "integer", "minimum": 0},
                    "CloudWatchMetrics": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "required": ["Namespace", "Dimensions", "Metrics"],
                            "properties": {
                                "Namespace": {"type": "string", "minLength": 1, "maxLength": 1024,
                                              "pattern": "^[^:].*$"},
                                "Dimensions": {
                                    "type": "array",
                                    "items": {
                                        "type": "array",
                                        "minItems": 1,
                                        "maxItems": 30,
                                        "items": {"type": "string", "minLength": 1, "maxLength": 250}
                                    }
                                },
                                "Metrics": {
                                    "type": "array",
                                    "maxItems": 100,
                                    "items": {
                                        "type": "object",
                                        "required": ["Name"],
                                        "properties": {
                                            "Name": {"type": "string", "minLength": 1, "maxLength": 1024},
                                            "Unit": {"enum": units},
                                            "StorageResolution": {"enum": [1, 60]}
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    })
}

/// Validates `lines` with Python's `jsonschema` (Draft 2020-12 validator); panics with every
/// error found.
fn validate_with_jsonschema(lines: &[Value]) {
    let dir = tempfile::tempdir().unwrap();
    let schema = dir.path().join("emf.schema.json");
    let data = dir.path().join("lines.json");
    std::fs::write(&schema, emf_schema().to_string()).unwrap();
    std::fs::write(&data, Value::Array(lines.to_vec()).to_string()).unwrap();
    let script = r#"
import json, sys, jsonschema
schema = json.load(open(sys.argv[1]))
jsonschema.Draft202012Validator.check_schema(schema)
v = jsonschema.Draft202012Validator(schema)
bad = [f"line {i}: {e.message} at {list(e.absolute_path)}"
       for i, line in enumerate(json.load(open(sys.argv[2])))
       for e in v.iter_errors(line)]
print("\n".join(bad))
sys.exit(1 if bad else 0)
"#;
    let out = Command::new(taskmesh_e2e::venv::venv().python())
        .arg("-c")
        .arg(script)
        .arg(&schema)
        .arg(&data)
        .output()
        .expect("run the venv's python");
    assert!(
        out.status.success(),
        "EMF lines fail the schema:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// What the JSON Schema cannot say: named members exist with the right types.
fn check_members(line: &Value) {
    let directives = line["_aws"]["CloudWatchMetrics"].as_array().unwrap();
    assert!(!directives.is_empty());
    for d in directives {
        for set in d["Dimensions"].as_array().unwrap() {
            for dim in set.as_array().unwrap() {
                let name = dim.as_str().unwrap();
                let v = &line[name];
                assert!(
                    v.as_str().is_some_and(|s| !s.is_empty() && s.len() <= 1024),
                    "dimension {name} must be a top-level string: {line}"
                );
            }
        }
        for m in d["Metrics"].as_array().unwrap() {
            let name = m["Name"].as_str().unwrap();
            let v = &line[name];
            let ok = v.is_number()
                || v.as_array()
                    .is_some_and(|a| a.len() <= 100 && a.iter().all(Value::is_number));
            assert!(ok, "metric {name} must be a top-level number: {line}");
        }
    }
}

struct Agent {
    child: Child,
    ingress: u16,
    egress: u16,
    stdout: Arc<Mutex<Vec<String>>>,
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn_agent(world: &World, node: &str) -> Agent {
    let (ingress, egress, admin) = (free_port(), free_port(), free_port());
    let mut child = world
        .agent_command(node)
        .env("TASKMESH_INGRESS_PORT", ingress.to_string())
        .env("TASKMESH_EGRESS_PORT", egress.to_string())
        .env("ENVOY_ADMIN_ACCESS_PORT", admin.to_string())
        .env("TASKMESH_CLOUDWATCH_EMF", "1")
        .env("TASKMESH_CLOUDWATCH_EMF_INTERVAL_SECONDS", "0.3")
        .env("TASKMESH_CLOUDWATCH_NAMESPACE", "AppMeshTest")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn taskmesh-agent");
    let stdout = Arc::new(Mutex::new(Vec::new()));
    let sink = stdout.clone();
    let pipe = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines() {
            let Ok(line) = line else { break };
            sink.lock().unwrap().push(line);
        }
    });
    Agent {
        child,
        ingress,
        egress,
        stdout,
    }
}

fn emf_lines(agent: &Agent) -> Vec<Value> {
    agent
        .stdout
        .lock()
        .unwrap()
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v.get("_aws").is_some())
        .collect()
}

/// Sums each metric over the lines whose dimensions equal `dims`.
fn totals(lines: &[Value], dims: &[(&str, &str)]) -> BTreeMap<String, f64> {
    let mut sums = BTreeMap::new();
    for l in lines {
        let names: Vec<&str> = l["_aws"]["CloudWatchMetrics"][0]["Dimensions"][0]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(Value::as_str)
            .collect();
        let want: Vec<&str> = dims.iter().map(|(k, _)| *k).collect();
        if names != want || dims.iter().any(|(k, v)| l[*k] != *v) {
            continue;
        }
        for m in l["_aws"]["CloudWatchMetrics"][0]["Metrics"]
            .as_array()
            .unwrap()
        {
            let name = m["Name"].as_str().unwrap().to_string();
            *sums.entry(name).or_insert(0.0) += l[m["Name"].as_str().unwrap()].as_f64().unwrap();
        }
    }
    sums
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn emf_lines_follow_the_spec_and_count_real_traffic() {
    let app = http_backend("app").await;
    let blue = http_backend("blue").await;
    let green = http_backend("green").await;
    let doc = DocBuilder::new("DROP_ALL")
        .node(
            "front",
            app.addr.port(),
            "http",
            &["svc.local", "other.local"],
        )
        .node("blue", blue.addr.port(), "http", &[])
        .node("green", green.addr.port(), "http", &[])
        .routed_service("svc.local", "r", 9080, "http")
        .http_route("r", "all", None, json!({"prefix": "/"}), &[("blue", 1)])
        .node_service("other.local", "green")
        .json();
    let world = World::new(&doc);
    let agent = spawn_agent(&world, "front");
    let egress: SocketAddr = format!("127.0.0.1:{}", agent.egress).parse().unwrap();
    let ingress: SocketAddr = format!("127.0.0.1:{}", agent.ingress).parse().unwrap();
    support::eventually("agent routes svc.local", || async {
        tokio::net::TcpStream::connect(egress).await.is_ok()
            && HttpClient::new()
                .get(egress, "svc.local", "/warmup")
                .await
                .status
                == http::StatusCode::OK
    })
    .await;
    // Count from a clean interval boundary: whatever the warm-up produced lands in earlier
    // lines, so sums below start after the first line written from now on.
    let start_len = {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let n = emf_lines(&agent).len();
            if n > 0 {
                tokio::time::sleep(Duration::from_millis(350)).await;
                break emf_lines(&agent).len();
            }
            assert!(
                Instant::now() < deadline,
                "no EMF line on stdout within 10 s"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    let client = HttpClient::new();
    let mut sent = BTreeMap::new();
    for (path, n) in [
        ("/status/200", 6u32),
        ("/status/302", 2),
        ("/status/404", 3),
        ("/status/500", 1),
    ] {
        for _ in 0..n {
            let r = client.get(egress, "svc.local", path).await;
            *sent.entry(r.status.as_u16() / 100).or_insert(0u32) += 1;
        }
    }
    assert_eq!(sent[&5], 1, "500 is not retried by the default policy");
    for _ in 0..4 {
        let r = client.get(egress, "other.local", "/").await;
        assert_eq!(r.status, http::StatusCode::OK);
    }
    for _ in 0..5 {
        let r = client.get(ingress, "front.local", "/").await;
        assert_eq!(r.status, http::StatusCode::OK);
    }
    // One gRPC-shaped request into the task, with a body the app echoes.
    let grpc = http::Request::post("/pkg.Svc/Call")
        .header("host", "front.local")
        .header("content-type", "application/grpc")
        .body(http_body_util::Full::new(bytes::Bytes::from_static(
            b"ping",
        )))
        .unwrap();
    let r = client.send(ingress, grpc).await.unwrap();
    assert_eq!(r.body, "ping");
    // Wait for two more intervals so every request has been reported.
    tokio::time::sleep(Duration::from_millis(900)).await;
    let all = emf_lines(&agent);
    assert!(all.len() > start_len, "no EMF line after the traffic");
    validate_with_jsonschema(&all);
    for l in &all {
        check_members(l);
        assert_eq!(
            l["_aws"]["CloudWatchMetrics"][0]["Namespace"],
            "AppMeshTest"
        );
        assert_eq!(l["Mesh"], "m");
        assert_eq!(l["VirtualNode"], "front");
        let ts = l["_aws"]["Timestamp"].as_u64().unwrap();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64;
        assert!(
            ts <= now && now - ts < 120_000,
            "timestamp {ts} is not now ({now})"
        );
    }
    let after = &all[start_len..];
    let blue_t = totals(
        after,
        &[
            ("Mesh", "m"),
            ("VirtualNode", "front"),
            ("TargetVirtualService", "svc.local"),
            ("TargetVirtualNode", "blue"),
        ],
    );
    assert_eq!(blue_t["RequestCountPerTarget"], 12.0, "{blue_t:?}");
    assert_eq!(blue_t["HTTPCode_Target_2XX_Count"], 6.0, "{blue_t:?}");
    assert_eq!(blue_t["HTTPCode_Target_3XX_Count"], 2.0, "{blue_t:?}");
    assert_eq!(blue_t["HTTPCode_Target_4XX_Count"], 3.0, "{blue_t:?}");
    assert_eq!(blue_t["HTTPCode_Target_5XX_Count"], 1.0, "{blue_t:?}");
    assert!(blue_t["TargetResponseTime"] > 0.0, "{blue_t:?}");
    // Body bytes both ways: 12 GETs without a body, each answered "blue".
    assert_eq!(blue_t["TargetProcessedBytes"], 48.0, "{blue_t:?}");
    let green_t = totals(
        after,
        &[
            ("Mesh", "m"),
            ("VirtualNode", "front"),
            ("TargetVirtualService", "other.local"),
            ("TargetVirtualNode", "green"),
        ],
    );
    assert_eq!(green_t["RequestCountPerTarget"], 4.0, "{green_t:?}");
    assert_eq!(green_t["HTTPCode_Target_2XX_Count"], 4.0, "{green_t:?}");
    assert_eq!(green_t["TargetProcessedBytes"], 20.0, "{green_t:?}");
    let inbound = totals(after, &[("Mesh", "m"), ("VirtualNode", "front")]);
    assert_eq!(inbound["RequestCount"], 6.0, "{inbound:?}");
    assert_eq!(inbound["GrpcRequestCount"], 1.0, "{inbound:?}");
    // Five answers "app", and "ping" in and out.
    assert_eq!(inbound["ProcessedBytes"], 23.0, "{inbound:?}");
    assert!(inbound["NewConnectionCount"] >= 1.0, "{inbound:?}");
    assert!(inbound.contains_key("ActiveConnectionCount"));
    // Every interval writes the inbound line, so the count of those lines follows the clock.
    let inbound_lines = all
        .iter()
        .filter(|l| l.get("TargetVirtualService").is_none())
        .count();
    assert!(
        inbound_lines >= 3,
        "one inbound line per interval: {inbound_lines}"
    );
}

#[test]
fn a_bad_emf_interval_stops_the_agent_with_a_clear_error() {
    let world = World::new("meshName: m\nvirtualNodes: []\n");
    let out = world
        .agent_command("front")
        .env("TASKMESH_CLOUDWATCH_EMF", "1")
        .env("TASKMESH_CLOUDWATCH_EMF_INTERVAL_SECONDS", "soon")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        all.contains("TASKMESH_CLOUDWATCH_EMF_INTERVAL_SECONDS=\\\"soon\\\"")
            || all.contains("TASKMESH_CLOUDWATCH_EMF_INTERVAL_SECONDS=\"soon\""),
        "{all}"
    );
}
