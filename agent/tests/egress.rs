//! Egress in explicit mode (direct connections to the egress listener, routed by Host): every
//! match kind end to end, priority, provider nodes, weighted split, DROP_ALL and ALLOW_ALL,
//! forwarding headers, upstream connection reuse, and upstream HTTP/1.1 framing (chunked
//! decoded, an ambiguous length refused).

mod support;

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::Full;
use serde_json::json;
use support::{DocBuilder, HttpClient, World, http_backend};

fn req(method: Method, host: &str, path: &str, headers: &[(&str, &str)]) -> Request<Full<Bytes>> {
    let mut b = Request::builder()
        .method(method)
        .uri(path)
        .header("host", host);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(Full::new(Bytes::new())).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_match_kind_and_priority_end_to_end() {
    let app = http_backend("app").await;
    let blue = http_backend("blue").await;
    let green = http_backend("green").await;
    let red = http_backend("red").await;
    let gray = http_backend("gray").await;
    let direct = http_backend("direct").await;
    let r = "svc-router";
    let doc = DocBuilder::new("DROP_ALL")
        .node(
            "front",
            app.addr.port(),
            "http",
            &["svc.local", "direct.local", "ports.local"],
        )
        .node("blue", blue.addr.port(), "http", &[])
        .node("green", green.addr.port(), "http", &[])
        .node("red", red.addr.port(), "http", &[])
        .node("gray", gray.addr.port(), "http", &[])
        .node("direct", direct.addr.port(), "http", &[])
        .node_service("direct.local", "direct")
        .routed_service("svc.local", r, 9080, "http")
        .http_route(r, "hdr-exact", Some(1), json!({"prefix": "/hx", "headers": [{"name": "x-color", "match": {"exact": "blue"}}]}), &[("blue", 1)])
        .http_route(r, "hdr-prefix", Some(2), json!({"prefix": "/hp", "headers": [{"name": "x-user", "match": {"prefix": "beta-"}}]}), &[("green", 1)])
        .http_route(r, "hdr-suffix", Some(3), json!({"prefix": "/hs", "headers": [{"name": "x-user", "match": {"suffix": "-admin"}}]}), &[("red", 1)])
        .http_route(r, "hdr-regex", Some(4), json!({"prefix": "/hr", "headers": [{"name": "x-ver", "match": {"regex": "^v[0-9]+$"}}]}), &[("blue", 1)])
        .http_route(r, "hdr-range", Some(5), json!({"prefix": "/hn", "headers": [{"name": "x-n", "match": {"range": {"start": 10, "end": 20}}}]}), &[("green", 1)])
        .http_route(r, "hdr-invert", Some(6), json!({"prefix": "/hi", "headers": [{"name": "x-team", "invert": true, "match": {"exact": "core"}}]}), &[("red", 1)])
        .http_route(r, "path-exact", Some(7), json!({"path": {"exact": "/exact"}}), &[("blue", 1)])
        .http_route(r, "path-regex", Some(8), json!({"path": {"regex": "/re/[0-9]+"}}), &[("green", 1)])
        .http_route(r, "method", Some(9), json!({"prefix": "/m", "method": "POST"}), &[("red", 1)])
        .http_route(r, "query", Some(10), json!({"prefix": "/q", "queryParameters": [{"name": "a", "match": {"exact": "1"}}]}), &[("blue", 1)])
        .http_route(r, "scheme", Some(11), json!({"prefix": "/s", "scheme": "http"}), &[("green", 1)])
        .http_route(r, "prio-low", Some(30), json!({"prefix": "/prio"}), &[("green", 1)])
        .http_route(r, "prio-high", Some(0), json!({"prefix": "/prio"}), &[("blue", 1)])
        .http_route(r, "default", Some(100), json!({"prefix": "/"}), &[("gray", 1)])
        .routed_service("ports.local", "pr", 9080, "http")
        .http_route("pr", "p9080", None, json!({"prefix": "/", "port": 9080}), &[("blue", 1)])
        .http_route("pr", "p9090", None, json!({"prefix": "/", "port": 9090}), &[("red", 1)])
        .json();
    // Router "pr" also listens on 9090: with two listeners every route names its port.
    let mut v: serde_json::Value = serde_json::from_str(&doc).unwrap();
    v["virtualRouters"][1]["spec"]["listeners"]
        .as_array_mut()
        .unwrap()
        .push(json!({"portMapping": {"port": 9090, "protocol": "http"}}));
    let doc = v.to_string();
    let world = World::new(&doc);
    let agent = world.start("front").await;
    let c = HttpClient::new();
    let eg = agent.egress_addr;
    let cases: Vec<(Request<Full<Bytes>>, &str)> = vec![
        (
            req(Method::GET, "svc.local", "/hx", &[("x-color", "blue")]),
            "blue",
        ),
        (
            req(Method::GET, "svc.local", "/hx", &[("x-color", "red")]),
            "gray",
        ),
        (
            req(Method::GET, "svc.local", "/hp", &[("x-user", "beta-joe")]),
            "green",
        ),
        (
            req(Method::GET, "svc.local", "/hp", &[("x-user", "joe")]),
            "gray",
        ),
        (
            req(Method::GET, "svc.local", "/hs", &[("x-user", "joe-admin")]),
            "red",
        ),
        (
            req(Method::GET, "svc.local", "/hs", &[("x-user", "joe")]),
            "gray",
        ),
        (
            req(Method::GET, "svc.local", "/hr", &[("x-ver", "v42")]),
            "blue",
        ),
        (
            req(Method::GET, "svc.local", "/hr", &[("x-ver", "v4x")]),
            "gray",
        ),
        (
            req(Method::GET, "svc.local", "/hn", &[("x-n", "15")]),
            "green",
        ),
        (
            req(Method::GET, "svc.local", "/hn", &[("x-n", "25")]),
            "gray",
        ),
        (
            req(Method::GET, "svc.local", "/hi", &[("x-team", "web")]),
            "red",
        ),
        (
            req(Method::GET, "svc.local", "/hi", &[("x-team", "core")]),
            "gray",
        ),
        (req(Method::GET, "svc.local", "/exact", &[]), "blue"),
        (req(Method::GET, "svc.local", "/exact/more", &[]), "gray"),
        (req(Method::GET, "svc.local", "/re/123", &[]), "green"),
        (req(Method::GET, "svc.local", "/re/abc", &[]), "gray"),
        (req(Method::POST, "svc.local", "/m", &[]), "red"),
        (req(Method::GET, "svc.local", "/m", &[]), "gray"),
        (req(Method::GET, "svc.local", "/q?a=1", &[]), "blue"),
        (req(Method::GET, "svc.local", "/q?a=2", &[]), "gray"),
        (req(Method::GET, "svc.local", "/s", &[]), "green"),
        (req(Method::GET, "svc.local", "/prio", &[]), "blue"),
        (req(Method::GET, "ports.local:9090", "/", &[]), "red"),
        (req(Method::GET, "ports.local:9080", "/", &[]), "blue"),
        (req(Method::GET, "svc.local:9080", "/prio", &[]), "blue"),
        (req(Method::GET, "direct.local", "/anything", &[]), "direct"),
    ];
    for (request, want) in cases {
        let desc = format!(
            "{} {} {:?}",
            request.method(),
            request.uri(),
            request.headers()
        );
        let r = c
            .send(eg, request)
            .await
            .unwrap_or_else(|e| panic!("{desc}: {e}"));
        assert_eq!(r.status, StatusCode::OK, "{desc}: {}", r.body);
        assert_eq!(r.header("x-backend"), want, "{desc}");
    }
    // Unknown destination under DROP_ALL: 404; a known service with no matching route: 404.
    let r = c.get(eg, "unknown.example", "/").await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let prom = support::admin_get(agent.admin_addr, "/stats/prometheus")
        .await
        .1;
    assert!(
        prom.contains("taskmesh_requests_total{direction=\"egress\",virtual_service=\"svc.local\",route=\"hdr-exact\",target_node=\"blue\"} 1"),
        "{prom}"
    );
    agent.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_matching_route_is_404() {
    let app = http_backend("app").await;
    let blue = http_backend("blue").await;
    let doc = DocBuilder::new("DROP_ALL")
        .node("front", app.addr.port(), "http", &["svc.local"])
        .node("blue", blue.addr.port(), "http", &[])
        .routed_service("svc.local", "r", 9080, "http")
        .http_route(
            "r",
            "only-api",
            None,
            json!({"prefix": "/api"}),
            &[("blue", 1)],
        )
        .json();
    let world = World::new(&doc);
    let agent = world.start("front").await;
    let c = HttpClient::new();
    assert_eq!(
        c.get(agent.egress_addr, "svc.local", "/api/x").await.status,
        StatusCode::OK
    );
    assert_eq!(
        c.get(agent.egress_addr, "svc.local", "/other").await.status,
        StatusCode::NOT_FOUND
    );
    agent.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weighted_split_within_two_percent_over_ten_thousand_requests() {
    let app = http_backend("app").await;
    let a = http_backend("a").await;
    let b = http_backend("b").await;
    let z = http_backend("zero").await;
    let doc = DocBuilder::new("DROP_ALL")
        .node("front", app.addr.port(), "http", &["split.local"])
        .node("a", a.addr.port(), "http", &[])
        .node("b", b.addr.port(), "http", &[])
        .node("zero", z.addr.port(), "http", &[])
        .routed_service("split.local", "r", 9080, "http")
        .http_route(
            "r",
            "canary",
            None,
            json!({"prefix": "/"}),
            &[("a", 3), ("b", 1), ("zero", 0)],
        )
        .json();
    let world = World::new(&doc);
    let agent = world.start("front").await;
    let c = HttpClient::new();
    let n = 10_000u64;
    let eg = agent.egress_addr;
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let c = c.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..n / 8 {
                let r = c.get(eg, "split.local", "/").await;
                assert_eq!(r.status, StatusCode::OK);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let (ha, hb, hz) = (
        a.hits.load(std::sync::atomic::Ordering::Relaxed),
        b.hits.load(std::sync::atomic::Ordering::Relaxed),
        z.hits.load(std::sync::atomic::Ordering::Relaxed),
    );
    assert_eq!(ha + hb, n);
    assert_eq!(hz, 0, "weight 0 must never be picked");
    let share = ha as f64 / n as f64;
    assert!(
        (share - 0.75).abs() <= 0.02,
        "a got {share:.4} of traffic, want 0.75 ± 0.02"
    );
    agent.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allow_all_passes_unknown_hosts_through_and_headers_are_rewritten() {
    let app = http_backend("app").await;
    let outside = http_backend("outside").await;
    let doc = DocBuilder::new("ALLOW_ALL")
        .node("front", app.addr.port(), "http", &[])
        .json();
    let world = World::new(&doc);
    let agent = world.start("front").await;
    let c = HttpClient::new();
    let host = format!("127.0.0.1:{}", outside.addr.port());
    let request = req(
        Method::GET,
        &host,
        "/x",
        &[
            ("connection", "x-secret"),
            ("x-secret", "s"),
            ("x-request-id", "abc-123"),
            ("te", "gzip"),
        ],
    );
    let r = c.send(agent.egress_addr, request).await.unwrap();
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.header("x-backend"), "outside");
    assert_eq!(r.header("x-h-x-request-id"), "abc-123", "request id kept");
    assert_eq!(
        r.header("x-h-x-secret"),
        "",
        "Connection-named field removed"
    );
    assert_eq!(r.header("x-h-te"), "", "TE removed");
    assert_eq!(r.header("x-h-x-forwarded-for"), "127.0.0.1");
    assert_eq!(r.header("x-h-host"), host, "Host kept");
    assert_eq!(
        r.header("x-drop-me"),
        "",
        "response Connection-named field removed"
    );
    assert_eq!(r.header("keep-alive"), "", "response Keep-Alive removed");
    // A request without an id gets a generated one.
    let r = c.get(agent.egress_addr, &host, "/y").await;
    assert_eq!(r.header("x-h-x-request-id").len(), 36);
    agent.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_connections_are_reused() {
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
    let c = HttpClient::new();
    for _ in 0..50 {
        assert_eq!(
            c.get(agent.egress_addr, "svc.local", "/").await.status,
            StatusCode::OK
        );
    }
    // Sequential requests over one downstream connection reuse one upstream connection:
    // the backend counts accepted connections through its peers' ports.
    let open = count_established_to(blue.addr.port());
    assert!(
        open <= 2,
        "expected pooled upstream connections, found {open}"
    );
    // The pool's own counters agree: one connection opened, the other 49 requests reused it.
    let prom = support::admin_get(agent.admin_addr, "/stats/prometheus")
        .await
        .1;
    for line in [
        "taskmesh_upstream_http1_connections_opened_total 1\n",
        "taskmesh_upstream_http1_requests_reused_total 49\n",
        "taskmesh_upstream_http1_connections_idle 1\n",
    ] {
        assert!(prom.contains(line), "missing {line:?} in:\n{prom}");
    }
    agent.shutdown().await;
}

/// ESTABLISHED TCP connections to local `port` (from /proc/net/tcp{,6}).
fn count_established_to(port: u16) -> usize {
    let mut n = 0;
    for f in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(f) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let cols: Vec<&str> = line.split_whitespace().collect();
            if cols.len() > 3 && cols[3] == "01" {
                let local_port = cols[1]
                    .rsplit(':')
                    .next()
                    .and_then(|p| u16::from_str_radix(p, 16).ok());
                if local_port == Some(port) {
                    n += 1;
                }
            }
        }
    }
    n
}

/// An upstream speaking raw HTTP/1.1: a chunked answer with trailers to `/chunked`, an answer
/// with two different `Content-Length` values (a response-splitting shape) to anything else.
async fn raw_upstream() -> std::net::SocketAddr {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (mut s, _) = l.accept().await.unwrap();
            tokio::spawn(async move {
                loop {
                    let mut head = Vec::new();
                    let mut b = [0u8; 1024];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                        match s.read(&mut b).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => head.extend_from_slice(&b[..n]),
                        }
                    }
                    let answer: &[u8] = if head.starts_with(b"GET /chunked ") {
                        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nhe\r\n3\r\nllo\r\n0\r\nx-sum: 5\r\n\r\n"
                    } else {
                        b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\ncontent-length: 50\r\n\r\nhello"
                    };
                    if s.write_all(answer).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_framing_is_decoded_and_an_ambiguous_answer_is_502() {
    let app = http_backend("app").await;
    let upstream = raw_upstream().await;
    let doc = DocBuilder::new("ALLOW_ALL")
        .node("front", app.addr.port(), "http", &[])
        .json();
    let world = World::new(&doc);
    let agent = world.start("front").await;
    let c = HttpClient::new();
    let host = format!("127.0.0.1:{}", upstream.port());
    // Chunked from the upstream, decoded and sent on to the client whole, twice on one
    // upstream connection.
    for _ in 0..2 {
        let r = c.get(agent.egress_addr, &host, "/chunked").await;
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(r.body, "hello");
    }
    let prom = support::admin_get(agent.admin_addr, "/stats/prometheus")
        .await
        .1;
    for line in [
        "taskmesh_upstream_http1_connections_opened_total 1\n",
        "taskmesh_upstream_http1_requests_reused_total 1\n",
    ] {
        assert!(prom.contains(line), "missing {line:?} in:\n{prom}");
    }
    // Two lengths: the agent does not guess, the client gets 502.
    let r = c.get(agent.egress_addr, &host, "/split").await;
    assert_eq!(r.status, StatusCode::BAD_GATEWAY);
    assert_eq!(r.body, "upstream request failed\n");
    agent.shutdown().await;
}
