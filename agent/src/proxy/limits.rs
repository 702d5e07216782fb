//! Protection against hostile or broken clients: request-head size and header-count limits
//! (431, enforced by hyper's parser with our numbers), request-smuggling shapes (400), slow and
//! idle client timeouts (hyper's header-read timer, which also runs while a keep-alive
//! connection waits for its next request), and the per-listener connection cap (503).

use std::sync::Arc;
use std::time::Duration;

use http::{HeaderMap, header};
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

/// Why a request is refused before routing.
#[derive(Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Ambiguous message framing (request smuggling shapes): 400 and close.
    Smuggling(&'static str),
}

/// Checks framing: both `Content-Length` and `Transfer-Encoding`, several `Transfer-Encoding`
/// codings other than a final `chunked`, or disagreeing `Content-Length` values are refused.
/// (hyper already refuses malformed lengths and non-chunked final codings; this closes the rest.)
pub fn check_framing(headers: &HeaderMap) -> Result<(), Refusal> {
    let has_te = headers.contains_key(header::TRANSFER_ENCODING);
    let mut cls = headers.get_all(header::CONTENT_LENGTH).iter();
    let first_cl = cls.next();
    if has_te && first_cl.is_some() {
        return Err(Refusal::Smuggling(
            "both Content-Length and Transfer-Encoding",
        ));
    }
    if let Some(first) = first_cl
        && cls.any(|v| v != first)
    {
        return Err(Refusal::Smuggling("conflicting Content-Length values"));
    }
    if has_te {
        let mut te = headers.get_all(header::TRANSFER_ENCODING).iter();
        let all_chunked_last = te
            .next_back()
            .and_then(|v| v.to_str().ok())
            .map(|s| {
                s.rsplit(',')
                    .next()
                    .is_some_and(|c| c.trim().eq_ignore_ascii_case("chunked"))
            })
            .unwrap_or(false);
        if !all_chunked_last {
            return Err(Refusal::Smuggling(
                "Transfer-Encoding does not end in chunked",
            ));
        }
    }
    Ok(())
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
    use http::HeaderValue;

    #[test]
    fn framing_shapes() {
        let mut h = HeaderMap::new();
        assert_eq!(check_framing(&h), Ok(()));
        h.insert(header::CONTENT_LENGTH, HeaderValue::from_static("5"));
        assert_eq!(check_framing(&h), Ok(()));
        h.append(header::CONTENT_LENGTH, HeaderValue::from_static("6"));
        assert!(check_framing(&h).is_err());
        let mut h = HeaderMap::new();
        h.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        assert_eq!(check_framing(&h), Ok(()));
        h.insert(header::CONTENT_LENGTH, HeaderValue::from_static("5"));
        assert!(check_framing(&h).is_err());
        let mut h = HeaderMap::new();
        h.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked, gzip"),
        );
        assert!(check_framing(&h).is_err());
    }
}
