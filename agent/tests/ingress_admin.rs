//! Ingress to the app (HTTP and TCP listeners, explicit mode) and the admin endpoints.

mod support;

use std::time::Duration;

use http::{Method, StatusCode};
use serde_json::json;
use support::{
    DocBuilder, HttpClient, World, admin_call, admin_get, http_backend, tcp_echo_backend,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingress_http_goes_to_the_app_port() {
    let app = http_backend("app").await;
    let doc = DocBuilder::new("DROP_ALL")
        .node("front", app.addr.port(), "http", &[])
        .json();
    let world = World::new(&doc);
    let agent = world.start("front").await;
    let c = HttpClient::new();
    let r = c.get(agent.ingress_addr, "front.local", "/hello?x=1").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.header("x-backend"), "app");
    assert_eq!(r.header("x-path"), "/hello");
    assert_eq!(r.header("x-h-x-forwarded-for"), "127.0.0.1");
    // A caller outside the mesh sent no request id: the app gets a generated one.
    assert_eq!(r.header("x-h-x-request-id").len(), 36);
    let prom = admin_get(agent.admin_addr, "/stats/prometheus").await.1;
    assert!(
        prom.contains("taskmesh_responses_total{direction=\"ingress\",virtual_service=\"\",route=\"\",target_node=\"front\",class=\"2xx\"} 1"),
        "{prom}"
    );
    agent.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingress_tcp_listener_splices_bytes() {
    let echo = tcp_echo_backend("hello ").await;
    let doc = DocBuilder::new("DROP_ALL")
        .node("db", echo.port(), "tcp", &[])
        .json();
    let world = World::new(&doc);
    let agent = world.start("db").await;
    let mut s = tokio::net::TcpStream::connect(agent.ingress_addr)
        .await
        .unwrap();
    s.write_all(b"ping").await.unwrap();
    let mut buf = vec![0u8; 10];
    tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&buf, b"hello ping");
    drop(s);
    agent.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_endpoints() {
    let app = http_backend("app").await;
    let blue = http_backend("blue").await;
    let doc = DocBuilder::new("DROP_ALL")
        .node("front", app.addr.port(), "http", &["svc.local"])
        .node("blue", blue.addr.port(), "http", &[])
        .routed_service("svc.local", "r", 9080, "http")
        .http_route("r", "all", None, json!({"prefix": "/"}), &[("blue", 1)])
        .json();
    let world = World::new(&doc);
    let agent = world.start("front").await;
    let a = agent.admin_addr;

    let (s, body) = admin_get(a, "/server_info").await;
    assert_eq!(s, StatusCode::OK);
    let info: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(info["state"], "LIVE");
    assert_eq!(info["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(info["node"]["virtualNode"], "front");
    assert!(
        info["config"]["version"]
            .as_str()
            .is_some_and(|v| !v.is_empty())
    );
    assert!(
        info["config"]["source"]
            .as_str()
            .unwrap()
            .starts_with("file://")
    );
    assert!(info["uptime_seconds"].is_u64());
    // The stock App Mesh health check greps for "state" and LIVE on one line.
    assert!(
        body.lines()
            .any(|l| l.contains("state") && l.contains("LIVE"))
    );

    let (s, body) = admin_get(a, "/ready").await;
    assert_eq!((s, body.trim()), (StatusCode::OK, "LIVE"));

    let dump: serde_json::Value =
        serde_json::from_str(&admin_get(a, "/config_dump").await.1).unwrap();
    assert_eq!(dump["document"]["meshName"], "m");
    assert_eq!(dump["node"]["virtualNode"], "front");

    let clusters: serde_json::Value =
        serde_json::from_str(&admin_get(a, "/clusters").await.1).unwrap();
    let names: Vec<&str> = clusters["clusters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["virtualNode"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["blue"]);

    let c = HttpClient::new();
    assert_eq!(
        c.get(agent.egress_addr, "svc.local", "/").await.status,
        StatusCode::OK
    );
    let prom = admin_get(a, "/stats/prometheus").await.1;
    for needle in [
        "taskmesh_server_state 0",
        "taskmesh_config_reloads_total{result=\"ok\"} 1",
        "taskmesh_request_duration_seconds_bucket{direction=\"egress\",virtual_service=\"svc.local\",route=\"all\",target_node=\"blue\",le=\"+Inf\"} 1",
        "taskmesh_downstream_connections_total{direction=\"egress\"}",
        "taskmesh_upstream_connect_failures_total{direction=\"egress\",virtual_service=\"svc.local\",route=\"all\",target_node=\"blue\"} 0",
        "# TYPE taskmesh_access_log_dropped_total counter\ntaskmesh_access_log_dropped_total 0\n",
        "# TYPE taskmesh_dns_refresh_failures_total counter\ntaskmesh_dns_refresh_failures_total 0\n",
    ] {
        assert!(prom.contains(needle), "missing {needle} in\n{prom}");
    }
    assert!(
        admin_get(a, "/stats?format=prometheus")
            .await
            .1
            .contains("taskmesh_server_state")
    );
    assert_eq!(admin_get(a, "/nope").await.0, StatusCode::NOT_FOUND);
    assert_eq!(
        admin_call(a, Method::GET, "/drain_listeners").await.0,
        StatusCode::METHOD_NOT_ALLOWED
    );

    // POST /drain_listeners: DRAINING, not ready, listeners closed, admin still up.
    assert_eq!(
        admin_call(a, Method::POST, "/drain_listeners").await.0,
        StatusCode::OK
    );
    assert_eq!(
        admin_get(a, "/ready").await.0,
        StatusCode::SERVICE_UNAVAILABLE
    );
    support::eventually("egress stops accepting", || async {
        tokio::net::TcpStream::connect(agent.egress_addr)
            .await
            .is_err()
    })
    .await;
    let info: serde_json::Value =
        serde_json::from_str(&admin_get(a, "/server_info").await.1).unwrap();
    assert_eq!(info["state"], "DRAINING");
    assert!(
        info["not_live_reason"]
            .as_str()
            .unwrap()
            .contains("drain_listeners")
    );
    agent.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_connect_failure_is_503_and_counted() {
    let app = http_backend("app").await;
    // A port with nothing listening; App Mesh's default policy retries connect failures twice.
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let doc = DocBuilder::new("DROP_ALL")
        .node("front", app.addr.port(), "http", &["svc.local"])
        .node("dead", dead, "http", &[])
        .routed_service("svc.local", "r", 9080, "http")
        .http_route("r", "all", None, json!({"prefix": "/"}), &[("dead", 1)])
        .json();
    let world = World::new(&doc);
    let agent = world.start("front").await;
    let r = HttpClient::new()
        .get(agent.egress_addr, "svc.local", "/")
        .await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    let prom = admin_get(agent.admin_addr, "/stats/prometheus").await.1;
    assert!(prom.contains("taskmesh_upstream_connect_failures_total{direction=\"egress\",virtual_service=\"svc.local\",route=\"all\",target_node=\"dead\"} 3"), "{prom}");
    assert!(prom.contains("class=\"5xx\"} 1"));
    agent.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingress_listener_connection_pool_overflow_is_503() {
    let app = http_backend("app").await;
    let mut v: serde_json::Value = serde_json::from_str(
        &DocBuilder::new("DROP_ALL")
            .node("front", app.addr.port(), "http", &[])
            .json(),
    )
    .unwrap();
    v["virtualNodes"][0]["spec"]["listeners"][0]["connectionPool"] =
        json!({"http": {"maxConnections": 1, "maxPendingRequests": 1}});
    let world = World::new(&v.to_string());
    let agent = world.start("front").await;
    let ing = agent.ingress_addr;
    let mut calls = Vec::new();
    for _ in 0..3 {
        calls.push(tokio::spawn(async move {
            HttpClient::new()
                .get(ing, "front", "/slow/600")
                .await
                .status
        }));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut got = Vec::new();
    for c in calls {
        got.push(c.await.unwrap());
    }
    got.sort();
    assert_eq!(
        got,
        vec![
            StatusCode::OK,
            StatusCode::OK,
            StatusCode::SERVICE_UNAVAILABLE
        ],
        "one in flight, one queued, one over the pool"
    );
    let prom = admin_get(agent.admin_addr, "/stats/prometheus").await.1;
    assert!(
        prom.contains("taskmesh_limit_rejections_total{reason=\"pool_overflow\"} 1\n"),
        "the overflow is counted:\n{prom}"
    );
    agent.shutdown().await;
}
