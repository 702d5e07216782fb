//! Protection against hostile or broken clients: request-head size and header-count limits
//! (431, enforced by hyper's parser with our numbers), slow and idle client timeouts (hyper's
//! header-read timer, which also runs while a keep-alive connection waits for its next
//! request), and the per-listener connection cap (503).
//!
//! Request smuggling is handled by hyper's HTTP/1 parser as RFC 9112 §6 requires, and the
//! tests pin it: conflicting or invalid `Content-Length`, a `Transfer-Encoding` whose final
//! coding is not `chunked`, and `Transfer-Encoding` on HTTP/1.0 are answered 400; a request with
//! both `Transfer-Encoding: chunked` and `Content-Length` is framed by the chunked coding, its
//! `Content-Length` removed before forwarding, and the connection closed after the response, so
//! bytes smuggled behind it are never read as a request. Upstream framing is always re-generated
//! (hop-by-hop fields are stripped in `http_forward.rs`).

use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper_util::rt::TokioTimer;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::config::settings::Settings;

/// hyper's default header count; setting it explicitly makes hyper allocate per request.
const HYPER_DEFAULT_MAX_HEADERS: usize = 100;

/// The downstream HTTP/1 server configuration for our limits.
pub fn http1_builder(settings: &Settings) -> http1::Builder {
    let mut b = http1::Builder::new();
    b.timer(TokioTimer::new())
        .keep_alive(true)
        .half_close(false)
        .header_read_timeout(Duration::from_secs(settings.client_timeout_seconds.max(1)))
        .max_buf_size(settings.max_header_bytes.max(8192) + 8192)
        .max_header_size(settings.max_header_bytes);
    if settings.max_headers != HYPER_DEFAULT_MAX_HEADERS {
        b.max_headers(settings.max_headers);
    }
    b
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
        let _ = http1_builder(&s);
        let cap = ConnectionCap::new(1);
        let first = cap.try_acquire();
        assert!(first.is_some());
        assert!(cap.try_acquire().is_none());
        drop(first);
        assert!(cap.try_acquire().is_some());
    }
}
