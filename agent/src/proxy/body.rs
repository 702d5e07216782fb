//! The body wrapper of proxied requests and responses: counts the bytes of each data frame as
//! it streams past (a field add per frame, no allocation), counts the `grpc-status` of response
//! trailers, and when the body is dropped (after
//! its last frame, or when the exchange is cut short) adds the total to the label set's
//! counters (`ProcessedBytes` / `TargetProcessedBytes`) and, on a sampled response, finishes the
//! request's span with the bytes sent.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};

use crate::metrics::RouteStats;
use crate::trace::PendingSpan;

/// Which way the body flows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    /// Request body: from the client towards the upstream.
    Request,
    /// Response body: from the upstream back to the client.
    Response,
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
        }
    }
}

impl<B> Body for Counted<B>
where
    B: Body<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &r {
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
}
