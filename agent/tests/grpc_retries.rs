//! gRPC retries through egress: a real h2c server answers its first calls with a trailers-only
//! error (`grpc-status` in the response headers), then OK with `grpc-status: 0` trailers. App
//! Mesh's implicit policy retries UNAVAILABLE (14); a route's `grpcRetryEvents` retry exactly
//! the statuses they name; the statuses seen are counted in Prometheus.

mod support;

use std::collections::VecDeque;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::json;
use support::endpoints::prom_value;
use support::{World, http_backend};

/// An h2c gRPC server: calls take the next status from `script` (trailers-only answer), or
/// answer OK with a message and `grpc-status: 0` trailers when it is empty.
struct GrpcServer {
    addr: SocketAddr,
    calls: Arc<AtomicU64>,
    script: Arc<Mutex<VecDeque<u32>>>,
}

async fn grpc_server() -> GrpcServer {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let calls = Arc::new(AtomicU64::new(0));
    let script: Arc<Mutex<VecDeque<u32>>> = Arc::default();
    let (c, s) = (calls.clone(), script.clone());
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = l.accept().await else {
                continue;
            };
            let (c, s) = (c.clone(), s.clone());
            tokio::spawn(async move {
                let svc = service_fn(move |req: Request<Incoming>| {
                    let (c, s) = (c.clone(), s.clone());
                    async move {
                        let msg = req.into_body().collect().await.unwrap().to_bytes();
                        c.fetch_add(1, Ordering::Relaxed);
                        let next = s.lock().unwrap().pop_front();
                        // Trailers-only error (status in the headers), or the message and OK trailers.
                        let (body, status, trailers) = match next {
                            Some(code) => (Bytes::new(), Some(code), None),
                            None => {
                                let mut t = http::HeaderMap::new();
                                t.insert("grpc-status", "0".parse().unwrap());
                                (msg, None, Some(t))
                            }
                        };
                        let mut r =
                            Response::new(Full::new(body).with_trailers(std::future::ready(
                                trailers.map(Ok::<_, Infallible>),
                            )));
                        r.headers_mut()
                            .insert("content-type", "application/grpc".parse().unwrap());
                        if let Some(code) = status {
                            r.headers_mut()
                                .insert("grpc-status", code.to_string().parse().unwrap());
                        }
                        Ok::<_, Infallible>(r)
                    }
                });
                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    GrpcServer {
        addr,
        calls,
        script,
    }
}

/// One unary call over h2c through `egress`; returns the grpc-status (headers or trailers).
async fn call(egress: SocketAddr, authority: &str) -> u32 {
    let stream = tokio::net::TcpStream::connect(egress).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    let req = Request::post(format!("http://{authority}/helloworld.Greeter/SayHello"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(Full::new(Bytes::from_static(b"\0\0\0\0\x02hi")))
        .unwrap();
    let resp = tokio::time::timeout(Duration::from_secs(20), sender.send_request(req))
        .await
        .unwrap()
        .unwrap();
    if let Some(s) = resp.headers().get("grpc-status") {
        return s.to_str().unwrap().parse().unwrap();
    }
    let collected = resp.into_body().collect().await.unwrap();
    let trailers = collected.trailers().cloned().expect("trailers");
    assert_eq!(
        &collected.to_bytes()[..],
        b"\0\0\0\0\x02hi",
        "message echoed"
    );
    trailers["grpc-status"].to_str().unwrap().parse().unwrap()
}

fn mesh(app: u16, grpc: u16, retry_policy: Option<serde_json::Value>) -> String {
    let mut route = json!({"match": {"serviceName": "helloworld.Greeter"},
        "action": {"weightedTargets": [{"virtualNode": "greeter", "weight": 1}]}});
    if let Some(p) = retry_policy {
        route["retryPolicy"] = p;
    }
    json!({
        "meshName": "m",
        "virtualNodes": [
            {"virtualNodeName": "front", "spec": {
                "listeners": [{"portMapping": {"port": app, "protocol": "http"}}],
                "serviceDiscovery": {"dns": {"hostname": "127.0.0.1"}},
                "backends": [{"virtualService": {"virtualServiceName": "greeter.local"}}]}},
            {"virtualNodeName": "greeter", "spec": {
                "listeners": [{"portMapping": {"port": grpc, "protocol": "grpc"}}],
                "serviceDiscovery": {"dns": {"hostname": "127.0.0.1"}}}}
        ],
        "virtualServices": [{"virtualServiceName": "greeter.local",
            "spec": {"provider": {"virtualRouter": {"virtualRouterName": "greeter-vr"}}}}],
        "virtualRouters": [{"virtualRouterName": "greeter-vr",
            "spec": {"listeners": [{"portMapping": {"port": grpc, "protocol": "grpc"}}]}}],
        "routes": [{"virtualRouterName": "greeter-vr", "routeName": "g",
            "spec": {"grpcRoute": route}}]
    })
    .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_policy_retries_unavailable_and_counts_statuses() {
    let app = http_backend("app").await;
    let g = grpc_server().await;
    let world = World::new(&mesh(app.addr.port(), g.addr.port(), None));
    let agent = world.start("front").await;
    g.script.lock().unwrap().extend([14, 14]);
    assert_eq!(call(agent.egress_addr, "greeter.local").await, 0);
    assert_eq!(g.calls.load(Ordering::Relaxed), 3, "1 try + 2 retries");
    // Not in the default policy: INTERNAL comes back at once.
    g.script.lock().unwrap().extend([13]);
    assert_eq!(call(agent.egress_addr, "greeter.local").await, 13);
    assert_eq!(g.calls.load(Ordering::Relaxed), 4);
    // Every upstream attempt's header status, per endpoint set …
    let l = format!("target_node=\"greeter\",port=\"{}\"", g.addr.port());
    let attempts = |code: &str| {
        let prefix = format!("taskmesh_upstream_grpc_status_total{{{l},grpc_status=\"{code}\"}}");
        async move { prom_value(agent.admin_addr, &prefix).await }
    };
    assert_eq!(attempts("14").await, Some(2.0));
    assert_eq!(attempts("13").await, Some(1.0));
    // … and the status each client got, from the trailers or a trailers-only answer, per route.
    let r = "direction=\"egress\",virtual_service=\"greeter.local\",route=\"g\",target_node=\"greeter\"";
    let answers = |code: &str| {
        let prefix = format!("taskmesh_grpc_responses_total{{{r},grpc_status=\"{code}\"}}");
        async move { prom_value(agent.admin_addr, &prefix).await }
    };
    assert_eq!(answers("0").await, Some(1.0));
    assert_eq!(answers("13").await, Some(1.0));
    assert_eq!(
        answers("14").await,
        None,
        "retried attempts are not answers"
    );
    agent.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_retry_events_retry_the_statuses_they_name() {
    let app = http_backend("app").await;
    let g = grpc_server().await;
    let policy = json!({"maxRetries": 2, "perRetryTimeout": {"value": 5, "unit": "s"},
        "grpcRetryEvents": ["internal", "resource-exhausted"]});
    let world = World::new(&mesh(app.addr.port(), g.addr.port(), Some(policy)));
    let agent = world.start("front").await;
    g.script.lock().unwrap().extend([13, 8]);
    assert_eq!(call(agent.egress_addr, "greeter.local").await, 0);
    assert_eq!(g.calls.load(Ordering::Relaxed), 3);
    // UNAVAILABLE is not named by this route: no retry.
    g.script.lock().unwrap().extend([14]);
    assert_eq!(call(agent.egress_addr, "greeter.local").await, 14);
    assert_eq!(g.calls.load(Ordering::Relaxed), 4);
    // Retries exhausted: the last answer is the client's.
    g.script.lock().unwrap().extend([13, 13, 13]);
    assert_eq!(call(agent.egress_addr, "greeter.local").await, 13);
    assert_eq!(g.calls.load(Ordering::Relaxed), 7);
    agent.shutdown().await;
}

/// An HTTP/2 server on the h2 crate (which can reset a stream) that refuses its first `refuse`
/// streams with `REFUSED_STREAM` and answers the others OK (`grpc-status: 0` trailers).
async fn refusing_server(refuse: u64) -> (SocketAddr, Arc<AtomicU64>) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let streams = Arc::new(AtomicU64::new(0));
    let n = streams.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = l.accept().await else {
                continue;
            };
            let n = n.clone();
            tokio::spawn(async move {
                let Ok(mut conn) = h2::server::handshake(stream).await else {
                    return;
                };
                while let Some(Ok((req, mut respond))) = conn.accept().await {
                    if n.fetch_add(1, Ordering::Relaxed) < refuse {
                        respond.send_reset(h2::Reason::REFUSED_STREAM);
                        continue;
                    }
                    tokio::spawn(async move {
                        let mut body = req.into_body();
                        while let Some(Ok(chunk)) = body.data().await {
                            let _ = body.flow_control().release_capacity(chunk.len());
                        }
                        let head = Response::builder()
                            .header("content-type", "application/grpc")
                            .body(())
                            .unwrap();
                        let Ok(mut send) = respond.send_response(head, false) else {
                            return;
                        };
                        let _ = send.send_data(Bytes::from_static(b"\0\0\0\0\x02hi"), false);
                        let mut t = http::HeaderMap::new();
                        t.insert("grpc-status", "0".parse().unwrap());
                        let _ = send.send_trailers(t);
                    });
                }
            });
        }
    });
    (addr, streams)
}

/// One call over h2c through `egress`; returns the HTTP status only.
async fn call_status(egress: SocketAddr, authority: &str) -> u16 {
    let stream = tokio::net::TcpStream::connect(egress).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    let req = Request::post(format!("http://{authority}/helloworld.Greeter/SayHello"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(Full::new(Bytes::from_static(b"\0\0\0\0\x02hi")))
        .unwrap();
    let resp = tokio::time::timeout(Duration::from_secs(20), sender.send_request(req))
        .await
        .unwrap()
        .unwrap();
    let status = resp.status().as_u16();
    let _ = resp.into_body().collect().await;
    status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_error_retries_a_refused_stream() {
    let app = http_backend("app").await;
    let (addr, streams) = refusing_server(1).await;
    let policy = json!({"maxRetries": 1, "perRetryTimeout": {"value": 5, "unit": "s"},
        "httpRetryEvents": ["stream-error"]});
    let world = World::new(&mesh(app.addr.port(), addr.port(), Some(policy)));
    let agent = world.start("front").await;
    assert_eq!(call(agent.egress_addr, "greeter.local").await, 0);
    assert_eq!(streams.load(Ordering::Relaxed), 2, "refused, then retried");
    agent.shutdown().await;

    // A policy without stream-error (nor server-error / gateway-error) does not retry it.
    let (addr, streams) = refusing_server(1).await;
    let policy = json!({"maxRetries": 1, "perRetryTimeout": {"value": 5, "unit": "s"},
        "grpcRetryEvents": ["internal"]});
    let world = World::new(&mesh(app.addr.port(), addr.port(), Some(policy)));
    let agent = world.start("front").await;
    assert_eq!(call_status(agent.egress_addr, "greeter.local").await, 502);
    assert_eq!(streams.load(Ordering::Relaxed), 1);
    agent.shutdown().await;
}
