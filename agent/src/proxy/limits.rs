//! Protection against hostile or broken clients: request-head size and header-count limits
//! (431: `--max-header-bytes`, `--max-headers`; HTTP/2: header list size), slow and idle client
//! timeouts (`--client-timeout-seconds` to send a complete head, which also bounds an idle
//! keep-alive connection waiting for its next request), and the per-listener connection cap
//! (503).
//!
//! Request smuggling is refused by the HTTP/1.1 server (`h1_server.rs`; hyper's on TLS
//! connections) as RFC 9112 §6 requires, and the tests pin it: conflicting or invalid
//! `Content-Length`, a `Transfer-Encoding` whose final coding is not `chunked`, and
//! `Transfer-Encoding` on HTTP/1.0 are answered 400; a request with both
//! `Transfer-Encoding: chunked` and `Content-Length` is framed by the chunked coding, its
//! `Content-Length` removed before forwarding, and the connection closed after the response, so
//! bytes smuggled behind it are never read as a request. Upstream framing is always re-generated
//! (hop-by-hop fields are stripped in `http_forward.rs`).

use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http2;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::{Server, h1_server};
use crate::config::settings::Settings;

/// hyper's default header count; setting it explicitly makes hyper allocate per request.
const HYPER_DEFAULT_MAX_HEADERS: usize = 100;

/// The downstream servers, configured with our limits: our HTTP/1.1 codec and hyper's HTTP/2
/// server (h2c, as gRPC clients speak it inside a task) on plaintext connections, hyper's
/// HTTP/1.1 and HTTP/2 on TLS ones.
pub fn server_builder(settings: &Settings) -> Server {
    let client_timeout = Duration::from_secs(settings.client_timeout_seconds.max(1));
    let h1 = h1_server::Limits {
        max_head_bytes: settings.max_header_bytes.max(1024),
        max_headers: settings.max_headers.clamp(1, h1_server::MAX_HEADERS_CAP),
        header_timeout: client_timeout,
    };
    let mut h2 = http2::Builder::new(TokioExecutor::new());
    h2.timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(settings.max_header_bytes).unwrap_or(u32::MAX))
        .keep_alive_interval(Duration::from_secs(30))
        .keep_alive_timeout(client_timeout);
    let mut tls = auto::Builder::new(TokioExecutor::new());
    tls.http1()
        .timer(TokioTimer::new())
        .keep_alive(true)
        .half_close(false)
        .header_read_timeout(client_timeout)
        .max_buf_size(settings.max_header_bytes.max(8192));
    if settings.max_headers != HYPER_DEFAULT_MAX_HEADERS {
        tls.http1().max_headers(settings.max_headers);
    }
    tls.http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(settings.max_header_bytes).unwrap_or(u32::MAX))
        .keep_alive_interval(Duration::from_secs(30))
        .keep_alive_timeout(client_timeout);
    Server { h1, h2, tls }
}

/// The connection cap of one listener.
#[derive(Clone)]
pub struct ConnectionCap {
    sem: Arc<Semaphore>,
}

impl ConnectionCap {
    /// At most `max` concurrent connections.
    pub fn new(max: usize) -> ConnectionCap {
        ConnectionCap {
            sem: Arc::new(Semaphore::new(max.max(1))),
        }
    }

    /// A slot, or `None` when full.
    pub fn try_acquire(&self) -> Option<OwnedSemaphorePermit> {
        self.sem.clone().try_acquire_owned().ok()
    }
}

/// Answers an over-cap connection with 503 and closes it.
pub async fn reject_overflow(mut stream: TcpStream) {
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        let _ = stream
            .write_all(
                b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 24\r\ncontent-type: text/plain\r\nconnection: close\r\n\r\nconnection limit reached",
            )
            .await;
        let _ = stream.shutdown().await;
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_limits_configure_the_parser() {
        let s = Settings::new("mesh/m/virtualNode/n", "file:///x");
        let _ = server_builder(&s);
        let cap = ConnectionCap::new(1);
        let first = cap.try_acquire();
        assert!(first.is_some());
        assert!(cap.try_acquire().is_none());
        drop(first);
        assert!(cap.try_acquire().is_some());
    }
}
