//! Upstream connections with reuse: pooled hyper-util clients (HTTP/1.1 keep-alive, and HTTP/2
//! multiplexed for http2/grpc targets) keyed by upstream address, idle connections kept for `TASKMESH_UPSTREAM_IDLE_SECONDS`.

use std::time::Duration;

use http::{Request, Response};
use http_body_util::Either;
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};

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
        /// The client error.
        source: hyper_util::client::legacy::Error,
    },
    /// The exchange failed after connecting.
    #[error("upstream {addr}: {source}")]
    Exchange {
        /// The upstream.
        addr: String,
        /// The client error.
        source: hyper_util::client::legacy::Error,
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
}

/// Body of an upstream request: the client's stream (its bytes counted), or a replayable one
/// (retries, and requests whose small body is kept for them: `crate::cluster::replay`).
pub type UpstreamBody = Either<super::body::Counted<Incoming>, crate::cluster::replay::ReplayBody>;

/// Pooled upstream client.
#[derive(Clone)]
pub struct UpstreamPool {
    client: Client<HttpConnector, UpstreamBody>,
    h2: Client<HttpConnector, UpstreamBody>,
}

impl UpstreamPool {
    /// A pool keeping idle connections for `idle`.
    pub fn new(idle: Duration) -> UpstreamPool {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(CONNECT_TIMEOUT));
        connector.enforce_http(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(idle)
            .pool_timer(TokioTimer::new())
            .pool_max_idle_per_host(1024)
            .retry_canceled_requests(true)
            .set_host(false)
            .build(connector.clone());
        let h2 = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(idle)
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .http2_only(true)
            .http2_keep_alive_interval(Duration::from_secs(30))
            .set_host(false)
            .build(connector);
        UpstreamPool { client, h2 }
    }

    /// Sends `req` (absolute URI) over HTTP/1.1, or over HTTP/2 with prior knowledge when `h2`
    /// (targets whose listener is `http2` or `grpc`), and returns the streaming response.
    pub async fn send(
        &self,
        mut req: Request<UpstreamBody>,
        h2: bool,
    ) -> Result<Response<Incoming>, UpstreamError> {
        let addr = req
            .uri()
            .authority()
            .map(|a| a.as_str().to_string())
            .unwrap_or_default();
        let client = if h2 {
            *req.version_mut() = http::Version::HTTP_2;
            &self.h2
        } else {
            &self.client
        };
        client.request(req).await.map_err(|source| {
            if source.is_connect() {
                UpstreamError::Connect { addr, source }
            } else {
                UpstreamError::Exchange { addr, source }
            }
        })
    }
}
