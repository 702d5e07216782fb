//! `perf-backend`: the upstream of the proxy benchmark (`tests/perf/run.sh`). It answers every
//! request on every address it is given with `200`, a fixed 64-byte body and an `x-backend`
//! header naming the address that answered (so the benchmark can check each proxy's weighted
//! split), over HTTP/1.1
//! (keep-alive) and HTTP/2 with prior knowledge (h2c), on one thread, so that the proxy in
//! front of it, not the backend, is what a benchmark measures.
//!
//! Usage: `perf-backend ADDR...` (e.g. `127.0.0.1:18081 127.0.0.1:18082`). It prints
//! `ready` on stdout once every address is bound and runs until killed.
//!
//! It is also the benchmark's OTLP/HTTP sink (the "agent + tracing" run points
//! `TASKMESH_OTLP_ENDPOINT` at one on 127.0.0.1:4318): a POST's body is read to its end (so the
//! exporter's keep-alive connection stays reusable) and answered `200`, which an OTLP/HTTP
//! exporter takes as success; the spans are not decoded.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::process::ExitCode;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;

/// Which listener answered.
const X_BACKEND: header::HeaderName = header::HeaderName::from_static("x-backend");

/// The answer body: 64 bytes, like a small JSON reply.
const BODY: &[u8; 64] =
    b"{\"ok\":true,\"from\":\"perf-backend\",\"pad\":\"xxxxxxxxxxxxxxxxxxxxx\"}\n";

fn main() -> ExitCode {
    let addrs: Result<Vec<SocketAddr>, String> = std::env::args()
        .skip(1)
        .map(|a| a.parse().map_err(|e| format!("address {a:?}: {e}")))
        .collect();
    let addrs = match addrs {
        Ok(a) if !a.is_empty() => a,
        Ok(_) => {
            eprintln!("usage: perf-backend ADDR...");
            return ExitCode::from(2);
        }
        Err(e) => {
            eprintln!("perf-backend: {e}");
            return ExitCode::from(2);
        }
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("perf-backend: starting the runtime: {e}");
            return ExitCode::from(3);
        }
    };
    match rt.block_on(serve(addrs)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("perf-backend: {e}");
            ExitCode::from(3)
        }
    }
}

async fn serve(addrs: Vec<SocketAddr>) -> Result<(), String> {
    let mut listeners = Vec::with_capacity(addrs.len());
    for a in addrs {
        let l = TcpListener::bind(a)
            .await
            .map_err(|e| format!("binding {a}: {e}"))?;
        listeners.push(l);
    }
    println!("ready");
    let mut tasks = tokio::task::JoinSet::new();
    for l in listeners {
        let name = l
            .local_addr()
            .map_err(|e| format!("listener address: {e}"))?
            .to_string();
        let name = HeaderValue::from_str(&name).map_err(|e| format!("{name}: {e}"))?;
        tasks.spawn(accept_loop(l, name));
    }
    while let Some(r) = tasks.join_next().await {
        r.map_err(|e| format!("accept loop ended: {e}"))?;
    }
    Ok(())
}

async fn accept_loop(listener: TcpListener, name: HeaderValue) {
    let builder = auto::Builder::new(TokioExecutor::new());
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(x) => x,
            // Out of descriptors or a reset before accept: back off briefly, keep serving.
            Err(_) => {
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let builder = builder.clone();
        let name = name.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| answer(req, name.clone()));
            let _ = builder.serve_connection(TokioIo::new(stream), svc).await;
        });
    }
}

async fn answer(
    req: Request<Incoming>,
    name: HeaderValue,
) -> Result<Response<Full<Bytes>>, Infallible> {
    if req.method() == hyper::Method::POST {
        let _ = req.into_body().collect().await;
    }
    let mut r = Response::new(Full::new(Bytes::from_static(BODY)));
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(X_BACKEND, name);
    Ok(r)
}
