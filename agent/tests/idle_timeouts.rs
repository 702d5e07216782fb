//! Idle timeouts on real sockets: a tcpRoute's `timeout.idle` (egress, through a real iptables
//! REDIRECT in a network namespace; needs root, as CI runs), a TCP listener's
//! `timeout.tcp.idle` (ingress), an HTTP route's `timeout.idle` cutting a response body that
//! stalls mid-stream but not one that streams slowly and steadily, and `perRequest: 0` with an
//! idle timeout answering 504 when no response head comes. Idle timeouts are 400 ms here.

mod support;

use std::convert::Infallible;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::StreamBody;
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::json;
use support::netns::{admin_get, connect, start_transparent_agent, std_listener};
use support::{DocBuilder, HttpClient, World, http_backend};
use taskmesh_e2e::netns::Netns;
use tokio::net::TcpListener;

const IDLE_MS: u64 = 400;

fn idle() -> serde_json::Value {
    json!({"value": IDLE_MS, "unit": "ms"})
}

/// An HTTP/1.1 backend whose chunked bodies stream on purpose: `/stall` sends `part1` and then
/// nothing (the body stays open); `/drip` sends ten chunks 150 ms apart (1.5 s in all, longer
/// than the idle timeout, never idle for it) and ends.
async fn streaming_backend() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let svc = service_fn(|req: Request<Incoming>| async move {
                    let (tx, rx) =
                        tokio::sync::mpsc::channel::<Result<Frame<Bytes>, Infallible>>(4);
                    let path = req.uri().path().to_string();
                    tokio::spawn(async move {
                        if path == "/drip" {
                            for i in 0..10 {
                                let chunk = Bytes::from(format!("chunk{i};"));
                                if tx.send(Ok(Frame::data(chunk))).await.is_err() {
                                    return;
                                }
                                tokio::time::sleep(Duration::from_millis(150)).await;
                            }
                        } else {
                            let _ = tx
                                .send(Ok(Frame::data(Bytes::from_static(b"part1;"))))
                                .await;
                            // Keep the body open, silent, until the proxy gives up on it.
                            tx.closed().await;
                        }
                    });
                    let body = StreamBody::new(tokio_stream_of(rx));
                    Ok::<_, Infallible>(Response::new(body))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    addr
}

fn tokio_stream_of<T: Send + 'static>(
    mut rx: tokio::sync::mpsc::Receiver<T>,
) -> impl futures::Stream<Item = T> + Send + Unpin {
    Box::pin(futures::stream::poll_fn(move |cx| rx.poll_recv(cx)))
}

/// Sends `GET path` with `Host: host` over a fresh connection and reads until the proxy closes
/// it (or 8 s pass). Returns (everything read, seconds until the close, closed?).
fn raw_get(to: SocketAddr, host: &str, path: &str) -> (String, Duration, bool) {
    let mut s = TcpStream::connect(to).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(8))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let t0 = Instant::now();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let closed = loop {
        match s.read(&mut buf) {
            Ok(0) => break true,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break true,
            Err(_) => break false,
        }
    };
    (
        String::from_utf8_lossy(&got).into_owned(),
        t0.elapsed(),
        closed,
    )
}

fn http_doc(app: u16, upstream: u16, timeout: serde_json::Value) -> String {
    let mut v: serde_json::Value = serde_json::from_str(
        &DocBuilder::new("DROP_ALL")
            .node("front", app, "http", &["svc.local"])
            .node("stream", upstream, "http", &[])
            .routed_service("svc.local", "r", 9080, "http")
            .http_route("r", "all", None, json!({"prefix": "/"}), &[("stream", 1)])
            .json(),
    )
    .unwrap();
    v["routes"][0]["spec"]["httpRoute"]["timeout"] = timeout;
    v.to_string()
}

async fn prom(admin: SocketAddr) -> String {
    support::admin_get(admin, "/stats/prometheus").await.1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn route_idle_cuts_a_stalled_body_but_not_a_steady_one() {
    let app = http_backend("app").await;
    let upstream = streaming_backend().await;
    let world = World::new(&http_doc(
        app.addr.port(),
        upstream.port(),
        json!({"idle": idle()}),
    ));
    let agent = world.start("front").await;
    let egress = agent.egress_addr;

    // Stalls after its first chunk: cut at the idle timeout, without the chunked end marker.
    let (text, took, closed) =
        tokio::task::spawn_blocking(move || raw_get(egress, "svc.local", "/stall"))
            .await
            .unwrap();
    assert!(closed, "the stalled body was not cut within 8 s: {text:?}");
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.contains("part1;"), "{text}");
    assert!(!text.ends_with("0\r\n\r\n"), "ended cleanly: {text:?}");
    assert!(
        took >= Duration::from_millis(IDLE_MS - 50) && took < Duration::from_secs(5),
        "{took:?}"
    );
    let series = "taskmesh_idle_timeouts_total{direction=\"egress\",virtual_service=\"svc.local\",route=\"all\",target_node=\"stream\",kind=\"stream\"}";
    let p = prom(agent.admin_addr).await;
    assert!(p.contains(&format!("{series} 1\n")), "{p}");

    // Streams for 1.5 s, never silent for 400 ms: arrives whole.
    let (text, took, closed) =
        tokio::task::spawn_blocking(move || raw_get(egress, "svc.local", "/drip"))
            .await
            .unwrap();
    assert!(closed, "{text}");
    for i in 0..10 {
        assert!(
            text.contains(&format!("chunk{i};")),
            "chunk {i} missing: {text:?}"
        );
    }
    assert!(text.ends_with("0\r\n\r\n"), "not ended cleanly: {text:?}");
    assert!(took >= Duration::from_millis(1300), "{took:?}");
    let p = prom(agent.admin_addr).await;
    assert!(p.contains(&format!("{series} 1\n")), "still one: {p}");
    agent.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_request_zero_with_idle_answers_504_when_no_head_comes() {
    let app = http_backend("app").await;
    let slow = http_backend("slow").await;
    let world = World::new(&http_doc(
        app.addr.port(),
        slow.addr.port(),
        json!({"perRequest": {"value": 0, "unit": "s"}, "idle": idle()}),
    ));
    let agent = world.start("front").await;
    let c = HttpClient::new();
    let t0 = Instant::now();
    let r = c.get(agent.egress_addr, "svc.local", "/slow/4000").await;
    assert_eq!(r.status, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(r.body, "upstream stream idle timeout\n");
    assert!(
        t0.elapsed() < Duration::from_millis(3000),
        "{:?}",
        t0.elapsed()
    );
    // A head that comes within the idle time is answered.
    let r = c.get(agent.egress_addr, "svc.local", "/slow/10").await;
    assert_eq!(r.status, StatusCode::OK);
    let p = prom(agent.admin_addr).await;
    assert!(
        p.contains("taskmesh_idle_timeouts_total{direction=\"egress\",virtual_service=\"svc.local\",route=\"all\",target_node=\"stream\",kind=\"stream\"} 1\n"),
        "{p}"
    );
    agent.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingress_http_listener_idle_cuts_a_stalled_body() {
    let upstream = streaming_backend().await;
    let mut v: serde_json::Value = serde_json::from_str(
        &DocBuilder::new("DROP_ALL")
            .node("stream", upstream.port(), "http", &[])
            .json(),
    )
    .unwrap();
    v["virtualNodes"][0]["spec"]["listeners"][0]["timeout"] = json!({"http": {"idle": idle()}});
    let world = World::new(&v.to_string());
    let agent = world.start("stream").await;
    let ingress = agent.ingress_addr;
    let (text, took, closed) =
        tokio::task::spawn_blocking(move || raw_get(ingress, "stream.local", "/stall"))
            .await
            .unwrap();
    assert!(closed, "the stalled body was not cut within 8 s: {text:?}");
    assert!(text.contains("part1;"), "{text}");
    assert!(!text.ends_with("0\r\n\r\n"), "ended cleanly: {text:?}");
    assert!(took >= Duration::from_millis(IDLE_MS - 50), "{took:?}");
    let (text, _, _) =
        tokio::task::spawn_blocking(move || raw_get(ingress, "stream.local", "/drip"))
            .await
            .unwrap();
    assert!(text.ends_with("0\r\n\r\n"), "steady body cut: {text:?}");
    let p = prom(agent.admin_addr).await;
    assert!(
        p.contains("taskmesh_idle_timeouts_total{direction=\"ingress\",virtual_service=\"\",route=\"\",target_node=\"stream\",kind=\"stream\"} 1\n"),
        "{p}"
    );
    agent.shutdown().await;
}

/// Talks to `s` (already past its greeting): a byte every 150 ms for `rounds`, each echoed.
fn steady(s: &mut TcpStream, rounds: usize) {
    for _ in 0..rounds {
        std::thread::sleep(Duration::from_millis(150));
        s.write_all(b"p").expect("write while steady");
        let mut b = [0u8; 1];
        s.read_exact(&mut b).expect("echo while steady");
        assert_eq!(&b, b"p");
    }
}

/// Then stays silent: how long until the proxy closes the connection (`None`: not within 8 s).
fn silent_until_closed(s: &mut TcpStream) -> Option<Duration> {
    s.set_read_timeout(Some(Duration::from_secs(8))).unwrap();
    let t0 = Instant::now();
    let mut b = [0u8; 16];
    match s.read(&mut b) {
        Ok(0) => Some(t0.elapsed()),
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => Some(t0.elapsed()),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingress_tcp_listener_idle_closes_a_silent_connection_only() {
    let echo = support::tcp_echo_backend("hello ").await;
    let mut v: serde_json::Value = serde_json::from_str(
        &DocBuilder::new("DROP_ALL")
            .node("db", echo.port(), "tcp", &[])
            .json(),
    )
    .unwrap();
    v["virtualNodes"][0]["spec"]["listeners"][0]["timeout"] = json!({"tcp": {"idle": idle()}});
    let world = World::new(&v.to_string());
    let agent = world.start("db").await;
    let ingress = agent.ingress_addr;
    let closed_after = tokio::task::spawn_blocking(move || {
        let mut s = TcpStream::connect(ingress).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut g = [0u8; 6];
        s.read_exact(&mut g).unwrap();
        assert_eq!(&g, b"hello ");
        // 1.5 s of steady traffic, longer than the idle timeout: stays open.
        steady(&mut s, 10);
        silent_until_closed(&mut s)
    })
    .await
    .unwrap();
    let took = closed_after.expect("silent connection not closed within 8 s");
    assert!(took >= Duration::from_millis(IDLE_MS - 50), "{took:?}");
    let p = prom(agent.admin_addr).await;
    assert!(
        p.contains("taskmesh_idle_timeouts_total{direction=\"ingress\",virtual_service=\"\",route=\"\",target_node=\"db\",kind=\"tcp\"} 1\n"),
        "{p}"
    );
    agent.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_route_idle_closes_a_silent_connection_only() {
    let ns = Netns::create("tm-idle").expect("network namespace (needs root)");
    support::tcp_echo_on(std_listener(&ns, "127.0.0.1:7100"), "hello ");
    let doc = json!({"meshName": "m",
        "virtualServices": [{"virtualServiceName": "db.local",
            "spec": {"provider": {"virtualRouter": {"virtualRouterName": "rdb"}}}}],
        "virtualRouters": [{"virtualRouterName": "rdb",
            "spec": {"listeners": [{"portMapping": {"port": 7000, "protocol": "tcp"}}]}}],
        "routes": [{"virtualRouterName": "rdb", "routeName": "db",
            "spec": {"tcpRoute": {"action": {"weightedTargets": [{"virtualNode": "db", "weight": 1}]},
                "timeout": {"idle": idle()}}}}],
        "virtualNodes": [
            {"virtualNodeName": "front", "spec": {
                "listeners": [{"portMapping": {"port": 8080, "protocol": "http"}}],
                "serviceDiscovery": {"dns": {"hostname": "127.0.0.1"}},
                "backends": [{"virtualService": {"virtualServiceName": "db.local"}}]}},
            {"virtualNodeName": "db", "spec": {
                "listeners": [{"portMapping": {"port": 7100, "protocol": "tcp"}}],
                "serviceDiscovery": {"dns": {"hostname": "127.0.0.1"}}}}]});
    let agent = start_transparent_agent(&ns, &doc.to_string(), "front", "7000");
    let ns = std::sync::Arc::new(ns);
    let ns2 = ns.clone();
    let (took, metrics) = tokio::task::spawn_blocking(move || {
        let ns = ns2;
        let mut s = connect(&ns, "127.0.0.1:7000").unwrap();
        let mut g = [0u8; 6];
        s.read_exact(&mut g).expect("greeting through the tcpRoute");
        assert_eq!(&g, b"hello ");
        steady(&mut s, 10);
        let took = silent_until_closed(&mut s);
        let metrics = admin_get(&ns, "/stats/prometheus");
        (took, metrics)
    })
    .await
    .unwrap();
    drop(agent);
    let took = took.expect("silent tcpRoute connection not closed within 8 s");
    assert!(took >= Duration::from_millis(IDLE_MS - 50), "{took:?}");
    assert!(
        metrics.contains("taskmesh_idle_timeouts_total{direction=\"egress\",virtual_service=\"db.local\",route=\"db\",target_node=\"db\",kind=\"tcp\"} 1\n"),
        "{metrics}"
    );
}
