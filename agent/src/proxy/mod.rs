//! The traffic path. `egress.rs` (the app's outbound connections, 15001), `ingress.rs`
//! (connections to the app, 15000), `tcp.rs` (opaque forwarding), `http_forward.rs` (request and
//! response rewriting), `body.rs` (byte counting and span completion), `pool.rs` (upstream
//! keep-alive), `h1.rs` (the HTTP/1.1 client codec of pooled upstream connections),
//! `h1_server.rs` (the HTTP/1.1 server codec of plaintext client connections),
//! `original_dst.rs` (where a redirected connection was going), `limits.rs` (hostile clients). This file runs the accept loops: the
//! connection cap, per-connection tasks, and graceful drain.

pub mod body;
pub mod egress;
pub mod h1;
pub mod h1_server;
pub mod http_forward;
pub mod ingress;
pub mod limits;
pub mod original_dst;
pub mod pool;
pub mod sni;
pub mod tcp;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::FutureExt as _;
use http::{Response, StatusCode, header};
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::{TcpListener, TcpStream};

use crate::agent::Shared;
use crate::metrics::{Direction, LimitKind};

/// The downstream connection servers, configured with the agent's limits
/// ([`limits::server_builder`]).
pub struct Server {
    /// HTTP/1.1 on plaintext connections ([`h1_server`]).
    pub h1: h1_server::Limits,
    /// HTTP/2 with prior knowledge (h2c) on plaintext connections.
    pub h2: hyper::server::conn::http2::Builder<TokioExecutor>,
    /// HTTP/1.1 and HTTP/2 on TLS connections (ingress listener TLS).
    pub tls: hyper_util::server::conn::auto::Builder<TokioExecutor>,
}

pub use h1_server::RequestBody;

/// Body of every proxied response: the upstream's stream, or a small local answer.
pub type ProxyBody = Either<pool::UpstreamResponseBody, Full<Bytes>>;

/// A locally generated response (404 no route, 503 no upstream, …).
pub fn local_response(status: StatusCode, msg: &'static str) -> Response<ProxyBody> {
    let mut r = Response::new(Either::Right(Full::new(Bytes::from_static(msg.as_bytes()))));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain"),
    );
    r
}

/// Accepts connections on `listener` until the agent drains.
pub async fn serve(listener: TcpListener, shared: Arc<Shared>, direction: Direction) {
    let cap = limits::ConnectionCap::new(shared.settings.max_connections);
    let builder = Arc::new(limits::server_builder(&shared.settings));
    let mut drain = shared.lifecycle.drain_signal();
    loop {
        let accepted = tokio::select! {
            biased;
            _ = drained(&mut drain) => break,
            r = listener.accept() => r,
        };
        let (stream, peer) = match accepted {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(direction = direction.as_str(), error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
        };
        let Some(permit) = cap.try_acquire() else {
            shared.metrics.limit_hit(LimitKind::ConnectionOverflow);
            tokio::spawn(limits::reject_overflow(stream));
            continue;
        };
        let _ = stream.set_nodelay(true);
        let shared = shared.clone();
        let builder = builder.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let _guard = shared.metrics.connection_opened(direction);
            match direction {
                Direction::Egress => egress::serve_connection(shared, stream, peer, &builder).await,
                Direction::Ingress => {
                    ingress::serve_connection(shared, stream, peer, &builder).await
                }
            }
        });
    }
    tracing::info!(direction = direction.as_str(), "listener closed (draining)");
}

/// Serves a plaintext client connection: HTTP/1.1 ([`h1_server`]) or h2c.
pub async fn serve_plain<F, Fut, B>(shared: &Shared, stream: TcpStream, server: &Server, handler: F)
where
    F: Fn(http::Request<RequestBody>) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Response<B>> + Send + 'static,
    B: http_body::Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<BoxError>,
{
    h1_server::serve(shared, stream, server.h1, &server.h2, handler).await;
}

/// Serves a TLS client connection (HTTP/1.1 or HTTP/2) with hyper, shutting it down gracefully
/// (after the request in flight) when the agent drains.
pub async fn serve_tls<S, F, Fut, B>(shared: &Shared, stream: S, server: &Server, handler: F)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    F: Fn(http::Request<RequestBody>) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Response<B>> + Send + 'static,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    // `map`, not `async move { Ok(fut.await) }`: an async block awaiting a future it owns holds
    // that future twice, and hyper keeps the service future per connection.
    let svc = service_fn(move |req: http::Request<Incoming>| {
        handler(req.map(RequestBody::hyper)).map(Ok::<_, Infallible>)
    });
    let conn = server.tls.serve_connection(TokioIo::new(stream), svc);
    run_hyper_connection(shared, conn, |c| c.graceful_shutdown()).await;
}

/// The boxed error of bodies and connections whose errors come from several sources.
pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Runs a hyper server connection to its end, shutting it down gracefully (`shutdown`) when the
/// agent drains, and counts the limits its error shows were hit.
pub async fn run_hyper_connection<C, E>(
    shared: &Shared,
    conn: C,
    shutdown: impl FnOnce(Pin<&mut C>),
) where
    C: std::future::Future<Output = Result<(), E>>,
    E: Into<BoxError>,
{
    let mut drain = shared.lifecycle.drain_signal();
    tokio::pin!(conn);
    let res = tokio::select! {
        r = conn.as_mut() => r,
        _ = drained(&mut drain) => {
            shutdown(conn.as_mut());
            conn.await
        }
    };
    if let Err(e) = res {
        let e: BoxError = e.into();
        let Some(e) = e.downcast_ref::<hyper::Error>() else {
            tracing::debug!(error = %e, "downstream connection ended with an error");
            return;
        };
        if e.is_timeout() {
            shared.metrics.limit_hit(LimitKind::ClientTimeout);
        } else if e.is_parse_too_large() {
            shared.metrics.limit_hit(LimitKind::HeadTooLarge);
        } else if e.is_parse() {
            shared.metrics.limit_hit(LimitKind::Malformed);
        }
        tracing::debug!(error = %e, "downstream connection ended with an error");
    }
}

/// Resolves when the agent starts draining.
pub async fn drained(rx: &mut tokio::sync::watch::Receiver<bool>) {
    let _ = rx.wait_for(|d| *d).await;
}

/// Peeks at the first bytes: does this look like an HTTP/1 request line (`TOKEN SP`)?
/// `None` when nothing arrived within `wait`.
pub async fn sniff_http(stream: &TcpStream, wait: Duration) -> Option<bool> {
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(wait, stream.peek(&mut buf))
        .await
        .ok()?
        .ok()?;
    if n == 0 {
        return Some(false);
    }
    let head = &buf[..n];
    let token_len = head.iter().take_while(|b| b.is_ascii_uppercase()).count();
    Some(token_len >= 3 && (token_len < n && head[token_len] == b' ' || token_len == n))
}

/// The peer's address as the client IP for x-forwarded-for.
pub fn client_ip(peer: SocketAddr) -> std::net::IpAddr {
    peer.ip()
}
