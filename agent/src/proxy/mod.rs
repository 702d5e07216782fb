//! The traffic path. `egress.rs` (the app's outbound connections, 15001), `ingress.rs`
//! (connections to the app, 15000), `tcp.rs` (opaque forwarding), `http_forward.rs` (request and
//! response rewriting), `body.rs` (byte counting and span completion), `pool.rs` (upstream keep-alive), `h1.rs` (the HTTP/1.1 client codec of pooled upstream connections), `original_dst.rs` (where a redirected
//! connection was going), `limits.rs` (hostile clients). This file runs the accept loops: the
//! connection cap, per-connection tasks, and graceful drain.

pub mod body;
pub mod egress;
pub mod h1;
pub mod http_forward;
pub mod ingress;
pub mod limits;
pub mod original_dst;
pub mod pool;
pub mod sni;
pub mod tcp;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::FutureExt as _;
use http::{Response, StatusCode, header};
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};

use crate::agent::Shared;
use crate::metrics::{Direction, LimitKind};

/// The downstream connection server (HTTP/1.1 and h2c).
pub type Server = hyper_util::server::conn::auto::Builder<hyper_util::rt::TokioExecutor>;

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

/// Serves HTTP/1 on `stream` with `handler`, shutting the connection down gracefully (after the
/// request in flight) when the agent drains.
pub async fn serve_http<S, F, Fut, B>(shared: &Shared, stream: S, builder: &Server, handler: F)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    F: Fn(http::Request<Incoming>) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Response<B>> + Send + 'static,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let mut drain = shared.lifecycle.drain_signal();
    // `map`, not `async move { Ok(fut.await) }`: an async block awaiting a future it owns holds
    // that future twice, and hyper keeps the service future per connection.
    let svc = service_fn(move |req| handler(req).map(Ok::<_, Infallible>));
    let conn = builder.serve_connection(TokioIo::new(stream), svc);
    tokio::pin!(conn);
    let res = tokio::select! {
        r = conn.as_mut() => r,
        _ = drained(&mut drain) => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = res {
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
