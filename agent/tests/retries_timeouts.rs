//! Route retry policies (explicit and App Mesh's implicit default), per-request timeouts, and
//! the access log written to the virtual node's `logging.accessLog.file.path`.

mod support;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::Full;
use serde_json::json;
use support::{DocBuilder, HttpClient, World, http_backend};

fn with_route_extras(doc: String, extras: serde_json::Value) -> String {
    let mut v: serde_json::Value = serde_json::from_str(&doc).unwrap();
    let route = &mut v["routes"][0]["spec"]["httpRoute"];
    for (k, val) in extras.as_object().unwrap() {
        route[k] = val.clone();
    }
    v.to_string()
}

fn base(app: u16, flaky: u16) -> String {
    DocBuilder::new("DROP_ALL")
        .node("front", app, "http", &["svc.local"])
        .node("flaky", flaky, "http", &[])
        .routed_service("svc.local", "r", 9080, "http")
        .http_route("r", "all", None, json!({"prefix": "/"}), &[("flaky", 1)])
        .json()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explicit_retry_policy_retries_server_errors() {
    let app = http_backend("app").await;
    let flaky = http_backend("flaky").await;
    let doc = with_route_extras(
        base(app.addr.port(), flaky.addr.port()),
        json!({"retryPolicy": {"maxRetries": 2, "perRetryTimeout": {"value": 2, "unit": "s"},
            "httpRetryEvents": ["server-error"]}}),
    );
    let world = World::new(&doc);
    let agent = world.start("front").await;
    let c = HttpClient::new();
    let r = c.get(agent.egress_addr, "svc.local", "/flaky").await;
    assert_eq!(r.status, StatusCode::OK, "third attempt succeeds");
    assert_eq!(flaky.hits.load(Ordering::Relaxed), 3);
    // A small body is kept while it streams and replayed (tests/cluster.rs: the bound).
    let req = Request::post("/flaky")
        .header("host", "svc.local")
        .body(Full::new(Bytes::from_static(b"payload")))
        .unwrap();
    let r = c.send(agent.egress_addr, req).await.unwrap();
    assert_eq!((r.status, r.body.as_str()), (StatusCode::OK, "payload"));
    assert_eq!(flaky.hits.load(Ordering::Relaxed), 6);
    agent.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn implicit_default_policy_retries_503_twice() {
    let app = http_backend("app").await;
    let flaky = http_backend("flaky").await;
    let world = World::new(&base(app.addr.port(), flaky.addr.port()));
    let agent = world.start("front").await;
    let r = HttpClient::new()
        .get(agent.egress_addr, "svc.local", "/flaky")
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        flaky.hits.load(Ordering::Relaxed),
        3,
        "1 try + 2 default retries"
    );
    agent.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn route_per_request_timeout_is_504() {
    let app = http_backend("app").await;
    let slow = http_backend("slow").await;
    let doc = with_route_extras(
        base(app.addr.port(), slow.addr.port()),
        json!({"timeout": {"perRequest": {"value": 300, "unit": "ms"}}}),
    );
    let world = World::new(&doc);
    let agent = world.start("front").await;
    let c = HttpClient::new();
    let t0 = Instant::now();
    let r = c.get(agent.egress_addr, "svc.local", "/slow/3000").await;
    assert_eq!(r.status, StatusCode::GATEWAY_TIMEOUT);
    assert!(
        t0.elapsed() < Duration::from_millis(2000),
        "{:?}",
        t0.elapsed()
    );
    assert_eq!(
        c.get(agent.egress_addr, "svc.local", "/slow/10")
            .await
            .status,
        StatusCode::OK
    );
    agent.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_log_goes_to_the_nodes_file() {
    let app = http_backend("app").await;
    let blue = http_backend("blue").await;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let mut v: serde_json::Value =
        serde_json::from_str(&base(app.addr.port(), blue.addr.port())).unwrap();
    v["virtualNodes"][0]["spec"]["logging"] =
        json!({"accessLog": {"file": {"path": log.to_str().unwrap()}}});
    let world = World::new(&v.to_string());
    let agent = world.start("front").await;
    let req = Request::get("/p?q=1")
        .header("host", "svc.local")
        .header("x-request-id", "rid-7")
        .body(Full::new(Bytes::new()))
        .unwrap();
    assert_eq!(
        HttpClient::new()
            .send(agent.egress_addr, req)
            .await
            .unwrap()
            .status,
        StatusCode::OK
    );
    support::eventually("the access log line is written", || async {
        std::fs::read_to_string(&log).is_ok_and(|t| !t.is_empty())
    })
    .await;
    let text = std::fs::read_to_string(&log).unwrap();
    let line: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    assert_eq!(line["method"], "GET");
    assert_eq!(line["path"], "/p?q=1");
    assert_eq!(line["authority"], "svc.local");
    assert_eq!(line["code"], 200);
    assert_eq!(line["route"], "all");
    assert_eq!(line["target_node"], "flaky");
    assert_eq!(line["virtual_service"], "svc.local");
    assert_eq!(line["request_id"], "rid-7");
    assert_eq!(line["upstream"], blue.addr.to_string());
    assert!(line["duration_ms"].as_f64().unwrap() >= 0.0);
    assert_eq!(agent.shared().access_log.queued_bytes(), text.len() as u64);
    agent.shutdown().await;
}

/// As App Mesh's Envoy: a virtual node without a `logging` block has no access log (nothing is
/// encoded, nothing goes to stdout).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_logging_block_means_no_access_log() {
    let app = http_backend("app").await;
    let blue = http_backend("blue").await;
    let doc = base(app.addr.port(), blue.addr.port());
    assert!(!doc.contains("accessLog"));
    let world = World::new(&doc);
    let agent = world.start("front").await;
    let c = HttpClient::new();
    for _ in 0..5 {
        assert_eq!(
            c.get(agent.egress_addr, "svc.local", "/p").await.status,
            StatusCode::OK
        );
    }
    assert_eq!(agent.shared().access_log.queued_bytes(), 0);
    agent.shutdown().await;
}
