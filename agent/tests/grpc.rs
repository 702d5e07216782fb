//! HTTP/2 (h2c, as gRPC clients speak it) through egress to a target whose listener is `grpc`:
//! the upstream leg is HTTP/2 too, `te: trailers` survives, and response trailers
//! (`grpc-status`) reach the client.

mod support;

use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use support::{DocBuilder, World, http_backend};

/// An h2c server that answers every call with `hello <path>` and `grpc-status: 0` trailers,
/// echoing the request's version and `te` header.
async fn grpc_backend() -> std::net::SocketAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((s, _)) = l.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let svc = service_fn(|req: Request<Incoming>| async move {
                    let version = format!("{:?}", req.version());
                    let te = req.headers().get("te").cloned();
                    let path = req.uri().path().to_string();
                    let _ = req.into_body().collect().await;
                    let mut trailers = http::HeaderMap::new();
                    trailers.insert("grpc-status", "0".parse().unwrap());
                    let body = Full::new(Bytes::from(format!("hello {path}")))
                        .with_trailers(async move { Some(Ok(trailers)) });
                    let mut r = Response::new(body);
                    r.headers_mut()
                        .insert("x-version", version.parse().unwrap());
                    if let Some(te) = te {
                        r.headers_mut().insert("x-te", te);
                    }
                    Ok::<_, Infallible>(r)
                });
                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_grpc_call_with_trailers_through_egress() {
    let app = http_backend("app").await;
    let grpc = grpc_backend().await;
    let doc = DocBuilder::new("DROP_ALL")
        .node("front", app.addr.port(), "http", &["greeter.local"])
        .node("greeter", grpc.port(), "grpc", &[])
        .node_service("greeter.local", "greeter")
        .json();
    let world = World::new(&doc);
    let agent = world.start("front").await;
    let stream = tokio::net::TcpStream::connect(agent.egress_addr)
        .await
        .unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .expect("h2c handshake with the agent");
    tokio::spawn(conn);
    for _ in 0..3 {
        let req = Request::post("http://greeter.local/helloworld.Greeter/SayHello")
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(Full::new(Bytes::from_static(b"\0\0\0\0\0")))
            .unwrap();
        let resp = tokio::time::timeout(Duration::from_secs(10), sender.send_request(req))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(
            resp.headers()["x-version"],
            "HTTP/2.0",
            "upstream leg is HTTP/2"
        );
        assert_eq!(resp.headers()["x-te"], "trailers");
        let collected = resp.into_body().collect().await.unwrap();
        let trailers = collected
            .trailers()
            .cloned()
            .expect("trailers reach the client");
        assert_eq!(trailers["grpc-status"], "0");
        assert_eq!(collected.to_bytes(), "hello /helloworld.Greeter/SayHello");
    }
    agent.shutdown().await;
}
