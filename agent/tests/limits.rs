//! Hostile or broken clients: oversized heads and too many headers (431), smuggling shapes
//! (400), slow and idle clients timed out, the connection cap answered with 503.

mod support;

use std::time::{Duration, Instant};

use serde_json::json;
use support::{DocBuilder, World, http_backend};
use taskmesh_agent::Agent;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn world_and_agent(
    tune: impl FnOnce(&mut taskmesh_agent::Settings),
) -> (World, taskmesh_agent::AgentHandle) {
    let app = http_backend("app").await;
    let blue = http_backend("blue").await;
    let doc = DocBuilder::new("DROP_ALL")
        .node("front", app.addr.port(), "http", &["svc.local"])
        .node("blue", blue.addr.port(), "http", &[])
        .routed_service("svc.local", "r", 9080, "http")
        .http_route("r", "all", None, json!({"prefix": "/"}), &[("blue", 1)])
        .json();
    let world = World::new(&doc);
    let mut s = world.settings("front");
    tune(&mut s);
    let agent = Agent::start(s).await.unwrap();
    assert!(agent.wait_live(Duration::from_secs(10)).await);
    (world, agent)
}

/// Writes `raw`, then reads until the peer closes or 5 s pass.
async fn exchange(to: std::net::SocketAddr, raw: &[u8]) -> String {
    let mut s = TcpStream::connect(to).await.unwrap();
    let _ = s.write_all(raw).await;
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_head_and_too_many_headers_are_431() {
    let (_w, agent) = world_and_agent(|s| {
        s.max_header_bytes = 4096;
        s.max_headers = 20;
    })
    .await;
    let big = format!(
        "GET / HTTP/1.1\r\nHost: svc.local\r\nX-Big: {}\r\n\r\n",
        "a".repeat(10_000)
    );
    let r = exchange(agent.egress_addr, big.as_bytes()).await;
    assert!(r.starts_with("HTTP/1.1 431"), "{r}");
    let mut many = String::from("GET / HTTP/1.1\r\nHost: svc.local\r\n");
    for i in 0..30 {
        many.push_str(&format!("X-H{i}: v\r\n"));
    }
    many.push_str("Connection: close\r\n\r\n");
    let r = exchange(agent.egress_addr, many.as_bytes()).await;
    assert!(r.starts_with("HTTP/1.1 431"), "{r}");
    // Within the limits: fine.
    let ok = exchange(
        agent.egress_addr,
        b"GET / HTTP/1.1\r\nHost: svc.local\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
    agent.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smuggling_shapes_are_refused() {
    let (_w, agent) = world_and_agent(|_| {}).await;
    let shapes: [&[u8]; 4] = [
        b"POST / HTTP/1.1\r\nHost: svc.local\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\nabcde",
        b"POST / HTTP/1.1\r\nHost: svc.local\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: svc.local\r\nContent-Length: -1\r\n\r\n",
        b"POST / HTTP/1.0\r\nHost: svc.local\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    ];
    for raw in shapes {
        let r = exchange(agent.egress_addr, raw).await;
        assert!(
            r.starts_with("HTTP/1.1 400"),
            "{}: {r}",
            String::from_utf8_lossy(raw)
        );
    }
    // CL.TE: framed by chunked, Content-Length not forwarded, connection closed after the
    // response, so the request hidden behind it never reaches the upstream.
    let r = exchange(
        agent.egress_addr,
        b"POST / HTTP/1.1\r\nHost: svc.local\r\nContent-Length: 60\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: svc.local\r\n\r\n",
    )
    .await;
    assert_eq!(r.matches("HTTP/1.1 ").count(), 1, "one response only: {r}");
    assert!(!r.contains("/smuggled"), "{r}");
    assert!(
        !r.to_ascii_lowercase().contains("x-h-content-length"),
        "CL not forwarded: {r}"
    );
    let prom = support::admin_get(agent.admin_addr, "/stats/prometheus")
        .await
        .1;
    assert!(
        prom.contains("taskmesh_limit_rejections_total{reason=\"malformed\"} 4"),
        "{prom}"
    );
    agent.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_and_idle_clients_are_timed_out() {
    let (_w, agent) = world_and_agent(|s| s.client_timeout_seconds = 1).await;
    // Slow head: half a request line, then silence.
    let t0 = Instant::now();
    let mut s = TcpStream::connect(agent.egress_addr).await.unwrap();
    s.write_all(b"GET / HT").await.unwrap();
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf))
        .await
        .unwrap();
    let took = t0.elapsed();
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(4),
        "{took:?}"
    );
    // Idle keep-alive connection after one request.
    let t0 = Instant::now();
    let mut s = TcpStream::connect(agent.egress_addr).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: svc.local\r\n\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf))
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&buf);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(
        t0.elapsed() < Duration::from_secs(4),
        "idle connection closed by the timeout"
    );
    agent.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_cap_overflow_is_503() {
    let (_w, agent) = world_and_agent(|s| s.max_connections = 2).await;
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut s = TcpStream::connect(agent.egress_addr).await.unwrap();
        s.write_all(b"GET / HTTP/1.1\r\nHost: svc.local\r\n\r\n")
            .await
            .unwrap();
        let mut buf = [0u8; 12];
        s.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"HTTP/1.1 200");
        held.push(s);
    }
    let r = exchange(
        agent.egress_addr,
        b"GET / HTTP/1.1\r\nHost: svc.local\r\n\r\n",
    )
    .await;
    assert!(r.starts_with("HTTP/1.1 503"), "{r}");
    drop(held);
    support::eventually("a slot frees up", || async {
        exchange(
            agent.egress_addr,
            b"GET / HTTP/1.1\r\nHost: svc.local\r\nConnection: close\r\n\r\n",
        )
        .await
        .starts_with("HTTP/1.1 200")
    })
    .await;
    let prom = support::admin_get(agent.admin_addr, "/stats/prometheus")
        .await
        .1;
    assert!(
        !prom.contains("taskmesh_limit_rejections_total{reason=\"connection_overflow\"} 0"),
        "{prom}"
    );
    agent.shutdown().await;
}
