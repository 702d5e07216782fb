//! Upstream connections with reuse, keyed by upstream address, idle connections kept for
//! `TASKMESH_UPSTREAM_IDLE_SECONDS`: HTTP/1.1 keep-alive connections in our own pool
//! ([`Http1Pool`]: connections speaking [`super::h1`], checked out per exchange and returned
//! when the response body ends), HTTP/2 multiplexed through hyper-util's pooled client.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tokio::net::TcpStream;

use super::{BoxError, RequestBody, h1};

/// How long to wait for an upstream TCP connection.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Why an upstream exchange failed.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// TCP connect failed or timed out.
    #[error("connect to {addr} failed: {source}")]
    Connect {
        /// The upstream.
        addr: String,
        /// What failed.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The exchange failed after connecting.
    #[error("upstream {addr}: {source}")]
    Exchange {
        /// The upstream.
        addr: String,
        /// What failed.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The TLS handshake towards a backend with a client TLS policy failed (untrusted or
    /// mismatched server certificate, client certificate refused, …).
    #[error("TLS to {addr} for virtual service {virtual_service} failed: {why}")]
    Tls {
        /// The upstream.
        addr: String,
        /// The backend virtual service whose client policy applied.
        virtual_service: String,
        /// What rustls said.
        why: String,
    },
}

impl UpstreamError {
    /// Whether the connection could not be established (TLS handshake failures included).
    pub fn is_connect(&self) -> bool {
        matches!(
            self,
            UpstreamError::Connect { .. } | UpstreamError::Tls { .. }
        )
    }

    /// Whether the TLS handshake failed.
    pub fn is_tls(&self) -> bool {
        matches!(self, UpstreamError::Tls { .. })
    }

    /// A hyper-util client error towards `addr`: [`UpstreamError::Connect`] when the connection
    /// could not be made, else [`UpstreamError::Exchange`].
    pub fn from_client(addr: String, source: hyper_util::client::legacy::Error) -> UpstreamError {
        if source.is_connect() {
            UpstreamError::Connect {
                addr,
                source: Box::new(source),
            }
        } else {
            UpstreamError::Exchange {
                addr,
                source: Box::new(source),
            }
        }
    }
}

/// Body of an upstream request: the client's stream (its bytes counted), or a replayable one
/// (retries, and requests whose small body is kept for them: `crate::cluster::replay`).
///
/// Boxed: a request is moved through the retry loop and the exchange, and stays small.
pub struct UpstreamBody(Pin<Box<dyn Body<Data = Bytes, Error = BoxError> + Send>>);

impl UpstreamBody {
    /// Any body (tests, and sources other than a client's request).
    pub fn new<B>(body: B) -> UpstreamBody
    where
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        UpstreamBody(Box::pin(http_body_util::BodyExt::map_err(body, Into::into)))
    }

    /// The client's body, streamed through (its bytes counted).
    pub fn client(body: super::body::Counted<RequestBody>) -> UpstreamBody {
        UpstreamBody::new(body)
    }

    /// A body kept for retries (or none: [`crate::cluster::replay::ReplayBody::empty`]).
    pub fn replay(body: crate::cluster::replay::ReplayBody) -> UpstreamBody {
        UpstreamBody::new(body)
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        self.0.as_mut().poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.0.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.0.size_hint()
    }
}

/// Pooled upstream client: HTTP/1.1 keep-alive connections in [`Http1Pool`], HTTP/2 (targets
/// whose listener is `http2` or `grpc`) multiplexed through hyper-util's pooled client.
#[derive(Clone)]
pub struct UpstreamPool {
    h1: Http1Pool,
    h2: Client<HttpConnector, UpstreamBody>,
}

impl UpstreamPool {
    /// A pool keeping idle connections for `idle`.
    pub fn new(idle: Duration) -> UpstreamPool {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(CONNECT_TIMEOUT));
        connector.enforce_http(true);
        let h2 = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(idle)
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .http2_only(true)
            .http2_keep_alive_interval(Duration::from_secs(30))
            .set_host(false)
            .build(connector);
        UpstreamPool {
            h1: Http1Pool::new(idle),
            h2,
        }
    }

    /// The HTTP/1.1 keep-alive pool.
    pub fn http1(&self) -> &Http1Pool {
        &self.h1
    }

    /// Sends the request `head` (absolute `http://ip:port/…` URI) and `body` over HTTP/1.1, or
    /// over HTTP/2 with prior knowledge when `h2` (targets whose listener is `http2` or
    /// `grpc`), and returns the streaming response. The caller keeps the head (for a retry):
    /// over HTTP/1.1 it is encoded from the borrow, over HTTP/2 (hyper's client takes a whole
    /// request) it is cloned.
    pub async fn send(
        &self,
        head: &http::request::Parts,
        body: UpstreamBody,
        h2: bool,
    ) -> Result<Response<UpstreamResponseBody>, UpstreamError> {
        if !h2 {
            return self.h1.send_head(head, body).await;
        }
        let mut req = Request::from_parts(head.clone(), body);
        let authority = req.uri().authority().cloned();
        *req.version_mut() = http::Version::HTTP_2;
        let resp = self.h2.request(req).await.map_err(|source| {
            UpstreamError::from_client(authority.map(|a| a.to_string()).unwrap_or_default(), source)
        })?;
        Ok(resp.map(UpstreamResponseBody::unpooled))
    }
}

/// Where a routed request's attempts go: the pool, over TLS when the backend's client TLS
/// policy covers the target port, HTTP/2 when the target's listener speaks it.
pub struct Upstream<'a> {
    /// The agent's upstream pool.
    pub pool: &'a UpstreamPool,
    /// The backend's client TLS policy, when it applies.
    pub tls: Option<&'a crate::tls::client::ClientPolicy>,
    /// The target's listener is `http2` or `grpc`.
    pub h2: bool,
}

impl Upstream<'_> {
    /// Sends one attempt: `head` (absolute `http://ip:port/…` URI, kept by the caller) and
    /// `body`.
    pub async fn send(
        &self,
        head: &http::request::Parts,
        body: UpstreamBody,
    ) -> Result<Response<UpstreamResponseBody>, UpstreamError> {
        match self.tls {
            // Boxed: a TLS exchange's future is large and a TLS handshake costs far more than
            // the allocation; inline, it would be held by every client connection.
            Some(tls) => Box::pin(tls.send(head, body, self.h2)).await,
            None => self.pool.send(head, body, self.h2).await,
        }
    }
}

/// Idle connections kept per upstream address at most; more are closed when they go idle.
const MAX_IDLE_PER_UPSTREAM: usize = 1024;

/// Reused connections found closed, in a row, before a request goes on a fresh connection.
const MAX_STALE_RETRIES: usize = 3;

/// HTTP/1.1 keep-alive connections by upstream address.
///
/// A connection is checked out for one exchange ([`super::h1`]: the request's own task writes
/// the request and reads the response) and comes back when its response body has been read to
/// the end ([`UpstreamResponseBody`] returns it; nothing is spawned per request). Idle
/// connections are reused last-in first-out, so the fewest stay warm, are checked for a close
/// by the upstream before reuse, and are closed after the idle timeout by a sweep every
/// `idle / 2` (at most every 5 s). A request the upstream cannot have acted on (a reused
/// connection it had already closed: [`super::h1::Failed::resend`]) is sent again on another
/// connection.
#[derive(Clone)]
pub struct Http1Pool {
    inner: Arc<Http1Inner>,
}

struct Http1Inner {
    idle: Mutex<foldhash::HashMap<SocketAddr, Vec<IdleConn>>>,
    idle_timeout: Duration,
    sweeping: AtomicBool,
    opened: AtomicU64,
    reused: AtomicU64,
}

struct IdleConn {
    conn: Box<h1::Conn>,
    since: Instant,
}

/// Connection counters of an [`Http1Pool`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Http1PoolStats {
    /// Connections opened since start.
    pub opened: u64,
    /// Requests sent on a reused connection since start.
    pub reused: u64,
    /// Connections idle in the pool now.
    pub idle: usize,
}

impl Http1Pool {
    /// An empty pool closing connections idle for `idle_timeout`.
    pub fn new(idle_timeout: Duration) -> Http1Pool {
        Http1Pool {
            inner: Arc::new(Http1Inner {
                idle: Mutex::new(foldhash::HashMap::default()),
                idle_timeout,
                sweeping: AtomicBool::new(false),
                opened: AtomicU64::new(0),
                reused: AtomicU64::new(0),
            }),
        }
    }

    /// Counters: connections opened, requests on reused connections, connections idle now.
    pub fn stats(&self) -> Http1PoolStats {
        let idle = self.inner.lock().values().map(Vec::len).sum();
        Http1PoolStats {
            opened: self.inner.opened.load(Ordering::Relaxed),
            reused: self.inner.reused.load(Ordering::Relaxed),
            idle,
        }
    }

    /// Sends `req` (absolute `http://ip:port/…` URI; sent in origin form, its `Host` field
    /// kept) on an idle connection to that address, or a new one.
    pub async fn send(
        &self,
        req: Request<UpstreamBody>,
    ) -> Result<Response<UpstreamResponseBody>, UpstreamError> {
        let (head, body) = req.into_parts();
        self.send_head(&head, body).await
    }

    /// [`Http1Pool::send`] of a request whose head the caller keeps: the head is encoded from
    /// the borrow, and this future holds no copy of it.
    pub async fn send_head(
        &self,
        head: &http::request::Parts,
        mut body: UpstreamBody,
    ) -> Result<Response<UpstreamResponseBody>, UpstreamError> {
        let addr = match head
            .uri
            .authority()
            .and_then(|a| a.as_str().parse::<SocketAddr>().ok())
        {
            Some(a) => a,
            None => {
                return Err(UpstreamError::Exchange {
                    addr: head.uri.to_string(),
                    source: "the upstream URI has no ip:port authority".into(),
                });
            }
        };
        let mut stale = 0;
        loop {
            let idle = if stale < MAX_STALE_RETRIES {
                self.inner.checkout(addr)
            } else {
                None
            };
            let (conn, reused) = match idle {
                Some(c) => (c, true),
                // Boxed: connecting is the cold path, and its future (connect, timeout) would
                // otherwise be part of every request's future, held per client connection.
                None => (Box::pin(self.connect(addr)).await?, false),
            };
            match h1::exchange(conn, head, body, reused).await {
                Ok(resp) => {
                    if reused {
                        self.inner.reused.fetch_add(1, Ordering::Relaxed);
                    }
                    return Ok(resp.map(|body| UpstreamResponseBody {
                        inner: Inner::H1(body),
                        lease: Some(Lease {
                            pool: self.clone(),
                            addr,
                        }),
                    }));
                }
                Err(h1::Failed {
                    error,
                    resend: Some(b),
                }) => {
                    tracing::debug!(upstream = %addr, %error, "reused connection was closed by the upstream; sending again");
                    stale += 1;
                    body = b;
                }
                Err(h1::Failed { error, .. }) => {
                    return Err(UpstreamError::Exchange {
                        addr: addr.to_string(),
                        source: Box::new(error),
                    });
                }
            }
        }
    }

    async fn connect(&self, addr: SocketAddr) -> Result<Box<h1::Conn>, UpstreamError> {
        let connect_error =
            |source: Box<dyn std::error::Error + Send + Sync>| UpstreamError::Connect {
                addr: addr.to_string(),
                source,
            };
        let stream = match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr)).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => return Err(connect_error(Box::new(e))),
            Err(_) => {
                return Err(connect_error(Box::new(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("no connection within {CONNECT_TIMEOUT:?}"),
                ))));
            }
        };
        let _ = stream.set_nodelay(true);
        self.inner.opened.fetch_add(1, Ordering::Relaxed);
        self.start_sweeping();
        // Boxed once per connection: the response body carrying it is moved several times per
        // request on its way to the client.
        Ok(Box::new(h1::Conn::new(stream)))
    }

    /// Starts the idle sweep (once, from the first connection: it needs a runtime).
    fn start_sweeping(&self) {
        if self.inner.sweeping.swap(true, Ordering::Relaxed) {
            return;
        }
        let every =
            (self.inner.idle_timeout / 2).clamp(Duration::from_millis(100), Duration::from_secs(5));
        let weak = Arc::downgrade(&self.inner);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(inner) = weak.upgrade() else { return };
                inner.sweep(Instant::now());
            }
        });
    }
}

impl Http1Inner {
    fn lock(&self) -> std::sync::MutexGuard<'_, foldhash::HashMap<SocketAddr, Vec<IdleConn>>> {
        self.idle.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The most recently returned connection to `addr` that the upstream has not closed.
    fn checkout(&self, addr: SocketAddr) -> Option<Box<h1::Conn>> {
        loop {
            let mut c = self.lock().get_mut(&addr)?.pop()?;
            // Checked outside the lock: it may take a system call.
            if c.conn.is_reusable() {
                return Some(c.conn);
            }
        }
    }

    fn checkin(&self, addr: SocketAddr, mut conn: Box<h1::Conn>) {
        if !conn.is_reusable() {
            return;
        }
        conn.idle();
        let now = Instant::now();
        let mut map = self.lock();
        let list = map.entry(addr).or_default();
        // The oldest are at the front: drop those past the idle timeout while here.
        let expired = list
            .iter()
            .take_while(|c| now.duration_since(c.since) >= self.idle_timeout)
            .count();
        if expired > 0 {
            list.drain(..expired);
        }
        if list.len() < MAX_IDLE_PER_UPSTREAM {
            list.push(IdleConn { conn, since: now });
        }
    }

    /// Closes connections idle for the idle timeout or closed by their upstream.
    fn sweep(&self, now: Instant) {
        let mut map = self.lock();
        map.retain(|_, list| {
            list.retain_mut(|c| {
                now.duration_since(c.since) < self.idle_timeout && c.conn.is_reusable()
            });
            !list.is_empty()
        });
    }
}

/// A connection checked out for one exchange: where it goes back.
struct Lease {
    pool: Http1Pool,
    addr: SocketAddr,
}

enum Inner {
    /// HTTP/2, or TLS: hyper's body (hyper-util pools those connections).
    Hyper(Incoming),
    /// Plaintext HTTP/1.1 over a pooled connection.
    H1(h1::ResponseBody),
}

/// The body of an upstream response. When it came over a pooled HTTP/1.1 connection, the
/// connection goes back to the pool once the body has been read to its end: with the body's last
/// frame, so it is free for another request while that frame is still being written to a
/// client; a body dropped before that takes its connection with it.
pub struct UpstreamResponseBody {
    inner: Inner,
    lease: Option<Lease>,
}

impl UpstreamResponseBody {
    /// A body whose connection is not ours to return (HTTP/2, TLS: hyper-util pools those).
    pub fn unpooled(inner: Incoming) -> UpstreamResponseBody {
        UpstreamResponseBody {
            inner: Inner::Hyper(inner),
            lease: None,
        }
    }

    fn release(&mut self) {
        if let Inner::H1(body) = &mut self.inner
            && let Some(conn) = body.reusable()
            && let Some(l) = self.lease.take()
        {
            l.pool.inner.checkin(l.addr, conn);
        }
    }
}

impl std::fmt::Debug for UpstreamResponseBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamResponseBody")
            .field("pooled", &self.lease.as_ref().map(|l| l.addr))
            .finish()
    }
}

impl Body for UpstreamResponseBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let r = match &mut self.inner {
            Inner::Hyper(b) => Pin::new(b).poll_frame(cx).map_err(Into::into),
            Inner::H1(b) => Pin::new(b).poll_frame(cx).map_err(Into::into),
        };
        match &r {
            Poll::Ready(None) => self.release(),
            // The last frame: everything of this exchange has been read from the connection.
            Poll::Ready(Some(Ok(_))) if self.is_end_stream() => self.release(),
            _ => {}
        }
        r
    }

    fn is_end_stream(&self) -> bool {
        match &self.inner {
            Inner::Hyper(b) => b.is_end_stream(),
            Inner::H1(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Inner::Hyper(b) => b.size_hint(),
            Inner::H1(b) => b.size_hint(),
        }
    }
}

impl Drop for UpstreamResponseBody {
    fn drop(&mut self) {
        // Servers stop polling once `is_end_stream` says the body is complete; a body that
        // did not end does not give its connection back (`h1::ResponseBody::reusable`).
        self.release();
    }
}
