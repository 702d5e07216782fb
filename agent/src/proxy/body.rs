//! The body wrapper of proxied requests and responses: counts the bytes of each data frame as
//! it streams past (a field add per frame, no allocation), counts the `grpc-status` of response
//! trailers, and when the body is dropped (after
//! its last frame, or when the exchange is cut short) adds the total to the label set's
//! counters (`ProcessedBytes` / `TargetProcessedBytes`) and, on a sampled response, finishes the
//! request's span with the bytes sent.
//!
//! A response body also carries the stream idle timeout (route `timeout.idle` on egress, the
//! listener's `timeout.<protocol>.idle` on ingress): when no frame arrives from the upstream for
//! that long, the body ends with [`StreamIdleTimeout`] and the downstream stream is aborted
//! (HTTP/1: the connection is closed mid-body; HTTP/2: the stream is reset). The timer is made
//! lazily, the first time the upstream body is not ready, so a response that is already
//! buffered (the common small answer) never allocates one.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};

use crate::metrics::{IdleKind, RouteStats};
use crate::trace::PendingSpan;

/// The error a response body ends with when its stream idle timeout fires.
#[derive(Debug, thiserror::Error)]
#[error("upstream stream idle timeout: no body frame for {0:?}")]
pub struct StreamIdleTimeout(pub Duration);

/// Body error types that can carry a [`StreamIdleTimeout`]: the boxed error of proxied
/// responses can; the others (an unwrapped `Incoming` request body) never arm the timer.
pub trait IdleError: Sized {
    /// The error for an idle timeout of `idle`, if this type can express one.
    fn stream_idle(idle: Duration) -> Option<Self>;
}

impl IdleError for Box<dyn std::error::Error + Send + Sync> {
    fn stream_idle(idle: Duration) -> Option<Self> {
        Some(Box::new(StreamIdleTimeout(idle)))
    }
}

impl IdleError for hyper::Error {
    fn stream_idle(_: Duration) -> Option<Self> {
        None
    }
}

impl IdleError for Infallible {
    fn stream_idle(_: Duration) -> Option<Self> {
        None
    }
}

/// Which way the body flows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    /// Request body: from the client towards the upstream.
    Request,
    /// Response body: from the upstream back to the client.
    Response,
}

/// Which timeout bounds the wait for the response head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeadTimeout {
    /// The per-request timeout (504 `upstream request timeout`, flag `UT`).
    PerRequest,
    /// The per-request timeout is disabled (0): the stream idle timeout bounds the wait
    /// (504 `upstream stream idle timeout`, flag `SI`, counted as a stream idle timeout).
    Idle,
}

impl HeadTimeout {
    /// The local answer when the wait ran out (counted in `stats` for an idle timeout).
    pub fn answer(self, stats: &RouteStats) -> (http::Response<super::ProxyBody>, &'static str) {
        match self {
            HeadTimeout::PerRequest => (
                super::local_response(
                    http::StatusCode::GATEWAY_TIMEOUT,
                    "upstream request timeout\n",
                ),
                "UT",
            ),
            HeadTimeout::Idle => {
                stats.idle_timeout(IdleKind::Stream);
                (
                    super::local_response(
                        http::StatusCode::GATEWAY_TIMEOUT,
                        "upstream stream idle timeout\n",
                    ),
                    "SI",
                )
            }
        }
    }
}

/// How long to wait for the response head: the per-request timeout, else (per-request
/// disabled) the idle timeout, else forever.
pub fn head_deadline(
    per_request: Option<Duration>,
    idle: Option<Duration>,
) -> Option<(Duration, HeadTimeout)> {
    match (per_request, idle) {
        (Some(t), _) => Some((t, HeadTimeout::PerRequest)),
        (None, Some(i)) => Some((i, HeadTimeout::Idle)),
        (None, None) => None,
    }
}

/// A body whose bytes are counted.
pub struct Counted<B> {
    inner: B,
    flow: Flow,
    bytes: u64,
    stats: Option<Arc<RouteStats>>,
    /// A sampled request's byte count shared with its span.
    span_bytes: Option<Arc<AtomicU64>>,
    /// A sampled response's span, finished on drop.
    span: Option<PendingSpan>,
    /// Stream idle timeout (`None`: none).
    idle: Option<Duration>,
    /// The idle timer, created the first time the inner body is not ready.
    idle_timer: Option<Pin<Box<tokio::time::Sleep>>>,
    /// A frame arrived since the timer was last armed.
    progressed: bool,
}

impl<B> Counted<B> {
    /// A request body counted into `stats` (and into `span_bytes` for a sampled request).
    pub fn request(
        inner: B,
        stats: Arc<RouteStats>,
        span_bytes: Option<Arc<AtomicU64>>,
    ) -> Counted<B> {
        Counted {
            inner,
            flow: Flow::Request,
            bytes: 0,
            stats: Some(stats),
            span_bytes,
            span: None,
            idle: None,
            idle_timer: None,
            progressed: false,
        }
    }

    /// A response body counted into `stats`, finishing `span` when it ends.
    pub fn response(inner: B, stats: Arc<RouteStats>, span: Option<PendingSpan>) -> Counted<B> {
        Counted {
            inner,
            flow: Flow::Response,
            bytes: 0,
            stats: Some(stats),
            span_bytes: None,
            span,
            idle: None,
            idle_timer: None,
            progressed: false,
        }
    }

    /// A body that is not counted (answers made before any route was known).
    pub fn uncounted(inner: B) -> Counted<B> {
        Counted {
            inner,
            flow: Flow::Response,
            bytes: 0,
            stats: None,
            span_bytes: None,
            span: None,
            idle: None,
            idle_timer: None,
            progressed: false,
        }
    }

    /// Ends the body with [`StreamIdleTimeout`] when no frame arrives for `idle` (`None`:
    /// never). Counted as an idle timeout of kind `stream` in the label set.
    pub fn with_idle(mut self, idle: Option<Duration>) -> Counted<B> {
        self.idle = idle;
        self
    }
}

impl<B> Body for Counted<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: IdleError,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_frame(cx);
        if r.is_pending() {
            return this.poll_idle(cx);
        }
        if let Poll::Ready(Some(Ok(frame))) = &r {
            this.progressed = true;
            if let Some(data) = frame.data_ref() {
                this.bytes += data.len() as u64;
            } else if this.flow == Flow::Response
                && let (Some(trailers), Some(stats)) = (frame.trailers_ref(), &this.stats)
                && let Some(code) = crate::cluster::retry::grpc_status(trailers)
            {
                // The gRPC status of a normal (not trailers-only) response.
                stats.grpc_status(code);
            }
        }
        r
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl<B> Counted<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: IdleError,
{
    /// The inner body is not ready: arm (or re-arm after progress) the idle timer and end the
    /// body with an error if it has fired.
    #[allow(clippy::type_complexity)]
    fn poll_idle(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let Some(idle) = self.idle else {
            return Poll::Pending;
        };
        let timer = match &mut self.idle_timer {
            Some(t) => {
                if self.progressed {
                    t.as_mut().reset(tokio::time::Instant::now() + idle);
                }
                t
            }
            None => self.idle_timer.insert(Box::pin(tokio::time::sleep(idle))),
        };
        self.progressed = false;
        if timer.as_mut().poll(cx).is_pending() {
            return Poll::Pending;
        }
        self.idle = None;
        self.idle_timer = None;
        let Some(err) = B::Error::stream_idle(idle) else {
            return Poll::Pending;
        };
        if let Some(stats) = &self.stats {
            stats.idle_timeout(IdleKind::Stream);
        }
        tracing::info!(
            idle_ms = idle.as_millis() as u64,
            bytes = self.bytes,
            "stream idle timeout: aborting the body"
        );
        Poll::Ready(Some(Err(err)))
    }
}

impl<B> Drop for Counted<B> {
    fn drop(&mut self) {
        if let Some(stats) = &self.stats {
            stats.bytes(self.flow, self.bytes);
        }
        if let Some(b) = &self.span_bytes {
            b.fetch_add(self.bytes, Ordering::Relaxed);
        }
        if let Some(span) = self.span.take() {
            span.finish(self.bytes);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, Full, StreamBody};

    #[tokio::test]
    async fn counts_streamed_bytes_into_the_label_set() {
        let m = crate::metrics::Metrics::default();
        let stats = m.route_stats(crate::metrics::Direction::Egress, "s", "r", "n");
        let frames = futures::stream::iter(vec![
            Ok::<_, std::convert::Infallible>(Frame::data(Bytes::from_static(b"abc"))),
            Ok(Frame::data(Bytes::from_static(b"defgh"))),
            Ok(Frame::trailers(http::HeaderMap::new())),
        ]);
        let shared = Arc::new(AtomicU64::new(0));
        let body = Counted::request(StreamBody::new(frames), stats.clone(), Some(shared.clone()));
        let got = body.collect().await.unwrap().to_bytes();
        assert_eq!(&got[..], b"abcdefgh");
        assert_eq!(stats.bytes_total(Flow::Request), 8);
        assert_eq!(shared.load(Ordering::Relaxed), 8);
        let resp = Counted::response(Full::new(Bytes::from_static(b"xyz")), stats.clone(), None);
        drop(resp.collect().await.unwrap());
        assert_eq!(stats.bytes_total(Flow::Response), 3);
        // Dropped before the end: what streamed so far counts.
        drop(Counted::response(
            Full::new(Bytes::from_static(b"zz")),
            stats.clone(),
            None,
        ));
        assert_eq!(stats.bytes_total(Flow::Response), 3);
    }

    #[tokio::test]
    async fn idle_timer_is_lazy_and_cuts_a_stalled_body() {
        type BoxError = Box<dyn std::error::Error + Send + Sync>;
        let m = crate::metrics::Metrics::default();
        let stats = m.route_stats(crate::metrics::Direction::Egress, "s", "r", "n");
        // A buffered body ends without ever making a timer.
        let mut body = Counted::response(Full::new(Bytes::from_static(b"ok")), stats.clone(), None)
            .with_idle(Some(Duration::from_millis(20)));
        while let Some(f) = body.frame().await {
            f.unwrap();
        }
        assert!(body.idle_timer.is_none());
        // A body that never sends is cut at the idle time, and counted.
        let stalled = StreamBody::new(futures::stream::pending::<Result<Frame<Bytes>, BoxError>>());
        let mut body = Counted::response(stalled, stats.clone(), None)
            .with_idle(Some(Duration::from_millis(50)));
        let err = body
            .frame()
            .await
            .expect("a frame")
            .expect_err("idle error");
        assert!(err.is::<StreamIdleTimeout>(), "{err}");
        assert_eq!(stats.idle_timeouts(IdleKind::Stream), 1);
    }
}
