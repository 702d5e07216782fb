//! Distributed tracing of proxied requests (issue 8): trace-context propagation on every hop,
//! a span per sampled request with the mesh's attributes, and export off the request path.
//!
//! - [`context`]: the ids and the `X-Amzn-Trace-Id` / `traceparent` header forms.
//! - [`config`]: the settings (X-Ray names of `aws-appmesh-envoy`, `TASKMESH_OTLP_ENDPOINT`, queue).
//! - [`span`]: what one span holds.
//! - [`export`]: the background batcher and the OTLP/HTTP and X-Ray daemon exporters.
//!
//! Per request, [`Tracer::begin`] reads the incoming context (or starts a trace), decides
//! sampling (an incoming decision is kept; otherwise the configured rate), draws this hop's span
//! id and writes both headers for the next hop. That is all an unsampled request costs: no
//! allocation beyond the two header values. A sampled request gets a [`PendingSpan`], which
//! the response body ([`crate::proxy::body::Counted`]) finishes when it ends; the finished span
//! goes into a bounded queue with `try_send`, so a slow or dead collector drops spans (counted in
//! `taskmesh_trace_spans_dropped_total`) and never slows a request.
//!
//! When no exporter is configured tracing is off, like Envoy without a tracer: requests keep
//! their `x-request-id` and whatever trace headers they came with, and no new ones are added.

pub mod config;
pub mod context;
pub mod export;
pub mod span;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use http::HeaderMap;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::metrics::Metrics;
pub use config::{TraceConfig, TraceConfigError, TraceSettings};
pub use context::{SpanId, TraceId};
pub use span::{SpanData, SpanStart};

/// The agent's tracer: a cheap handle (disabled by default).
#[derive(Clone, Default)]
pub struct Tracer {
    inner: Option<Arc<Inner>>,
}

struct Inner {
    sampling: f64,
    tx: mpsc::Sender<SpanData>,
    metrics: Arc<Metrics>,
}

/// Who this agent is, for span resources and segment names.
#[derive(Debug, Clone)]
pub struct Identity {
    /// Mesh name.
    pub mesh: String,
    /// Virtual node name.
    pub virtual_node: String,
}

/// This hop's trace context, decided by [`Tracer::begin`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hop {
    /// The trace.
    pub trace_id: TraceId,
    /// This hop's span (the next hop's parent).
    pub span_id: SpanId,
    /// The caller's span.
    pub parent: Option<SpanId>,
    /// Whether this request is recorded.
    pub sampled: bool,
}

impl Tracer {
    /// A tracer that does nothing (no exporter configured).
    pub fn disabled() -> Tracer {
        Tracer { inner: None }
    }

    /// Starts the exporter task for `config` and returns the tracer feeding it.
    pub fn start(
        config: &TraceConfig,
        identity: Identity,
        metrics: Arc<Metrics>,
    ) -> (Tracer, JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(config.queue.max(1));
        let task = tokio::spawn(export::run(rx, config.clone(), identity, metrics.clone()));
        let tracer = Tracer {
            inner: Some(Arc::new(Inner {
                sampling: config.sampling,
                tx,
                metrics,
            })),
        };
        (tracer, task)
    }

    /// Whether tracing is on.
    pub fn enabled(&self) -> bool {
        self.inner.is_some()
    }

    /// Reads the request's trace context, decides sampling, and rewrites `headers` for the next
    /// hop (`X-Amzn-Trace-Id` and `traceparent` naming this hop's span as parent). `None` (and
    /// headers untouched) when tracing is off.
    pub fn begin(&self, headers: &mut HeaderMap) -> Option<Hop> {
        let inner = self.inner.as_ref()?;
        let incoming = context::extract(headers);
        let trace_id = match incoming {
            Some(i) => i.trace_id,
            None => TraceId::generate(epoch_secs_u32()),
        };
        let sampled = match incoming.and_then(|i| i.sampled) {
            Some(s) => s,
            None => inner.sampling > 0.0 && rand::random::<f64>() < inner.sampling,
        };
        let hop = Hop {
            trace_id,
            span_id: SpanId::generate(),
            parent: incoming.and_then(|i| i.parent),
            sampled,
        };
        context::inject(headers, hop.trace_id, hop.span_id, hop.sampled);
        Some(hop)
    }

    /// The span of a sampled hop (`None` when `hop` is not sampled). `request_bytes` is where
    /// the request body's counter adds what it forwarded.
    pub fn span(
        &self,
        hop: Option<Hop>,
        start: SpanStart<'_>,
        request_bytes: Option<Arc<AtomicU64>>,
    ) -> Option<PendingSpan> {
        let hop = hop.filter(|h| h.sampled)?;
        let tracer = self.clone();
        tracer.inner.as_ref()?;
        Some(PendingSpan {
            tracer,
            request_bytes,
            data: Box::new(SpanData {
                trace_id: hop.trace_id,
                span_id: hop.span_id,
                parent: hop.parent,
                direction: start.direction,
                start: start.start,
                end: start.start,
                method: start.method.clone(),
                authority: start.authority.to_string(),
                path: start.path.to_string(),
                status: 0,
                virtual_service: start.virtual_service.to_string(),
                route: start.route.to_string(),
                target_node: start.target_node.to_string(),
                endpoint: start.endpoint,
                retries: 0,
                flags: "-",
                request_bytes: 0,
                response_bytes: 0,
                grpc: start.grpc,
                client: start.client,
            }),
        })
    }

    /// [`Tracer::span`] for a call site forwarding a request body: a sampled hop's span with a
    /// byte count for the body ([`PendingSpan::request_bytes`], handed to the body's counter).
    /// `None`, and nothing allocated, when the hop is not sampled.
    pub fn start_span(&self, hop: Option<Hop>, start: SpanStart<'_>) -> Option<PendingSpan> {
        if !hop.is_some_and(|h| h.sampled) || self.inner.is_none() {
            return None;
        }
        self.span(hop, start, Some(Arc::new(AtomicU64::new(0))))
    }

    /// Queues a finished span for export; drops (and counts) it when the queue is full.
    pub fn submit(&self, span: SpanData) {
        let Some(inner) = &self.inner else { return };
        if inner.tx.try_send(span).is_err() {
            inner.metrics.trace_span_dropped();
        }
    }
}

fn epoch_secs_u32() -> u32 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| u32::try_from(d.as_secs()).unwrap_or(u32::MAX))
        .unwrap_or(0)
}

/// The span of a sampled request in flight; [`PendingSpan::finish`] queues it.
pub struct PendingSpan {
    tracer: Tracer,
    request_bytes: Option<Arc<AtomicU64>>,
    data: Box<SpanData>,
}

impl PendingSpan {
    /// The request body's byte count reported with the span, for the body's counter to add to
    /// (`None`: the span reports none).
    pub fn request_bytes(&self) -> Option<Arc<AtomicU64>> {
        self.request_bytes.clone()
    }

    /// Records the response: status, flag and retries.
    pub fn respond(&mut self, status: u16, flags: &'static str, retries: u32) {
        self.data.status = status;
        self.data.flags = flags;
        self.data.retries = retries;
    }

    /// Ends the span now with `response_bytes` sent, and queues it.
    pub fn finish(self, response_bytes: u64) {
        let PendingSpan {
            tracer,
            request_bytes,
            mut data,
        } = self;
        data.end = SystemTime::now();
        data.response_bytes = response_bytes;
        data.request_bytes = request_bytes.map_or(0, |b| b.load(Ordering::Relaxed));
        tracer.submit(*data);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn tracer(sampling: f64, queue: usize) -> (Tracer, mpsc::Receiver<SpanData>, Arc<Metrics>) {
        let (tx, rx) = mpsc::channel(queue);
        let metrics = Arc::new(Metrics::default());
        let t = Tracer {
            inner: Some(Arc::new(Inner {
                sampling,
                tx,
                metrics: metrics.clone(),
            })),
        };
        (t, rx, metrics)
    }

    #[test]
    fn disabled_tracer_leaves_headers_alone() {
        let mut h = HeaderMap::new();
        assert_eq!(Tracer::disabled().begin(&mut h), None);
        assert!(h.is_empty());
    }

    #[test]
    fn new_trace_with_both_headers_naming_this_hop() {
        let (t, _rx, _) = tracer(1.0, 8);
        let mut h = HeaderMap::new();
        let hop = t.begin(&mut h).unwrap();
        assert!(hop.sampled);
        assert_eq!(hop.parent, None);
        let x = context::parse_xray(h[&context::X_AMZN_TRACE_ID].as_bytes()).unwrap();
        let w = context::parse_traceparent(h[&context::TRACEPARENT].as_bytes()).unwrap();
        assert_eq!(x.trace_id, hop.trace_id);
        assert_eq!(w.trace_id, hop.trace_id);
        assert_eq!(x.parent, Some(hop.span_id));
        assert_eq!(w.parent, Some(hop.span_id));
    }

    #[test]
    fn incoming_decision_wins_over_the_rate() {
        let (t, _rx, _) = tracer(1.0, 8);
        let mut h = HeaderMap::new();
        h.insert(
            context::X_AMZN_TRACE_ID.clone(),
            HeaderValue::from_static(
                "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=0",
            ),
        );
        h.insert(
            context::TRACESTATE.clone(),
            HeaderValue::from_static("vendor=1"),
        );
        let hop = t.begin(&mut h).unwrap();
        assert!(!hop.sampled);
        assert_eq!(hop.parent.unwrap().to_hex(), "53995c3f42cd8ad8");
        assert_eq!(
            hop.trace_id.to_xray(),
            "1-5759e988-bd862e3fe1be46a994272793"
        );
        assert!(h[&context::TRACEPARENT].to_str().unwrap().ends_with("-00"));
        assert_eq!(h[&context::TRACESTATE], "vendor=1");
        let (never, _rx, _) = tracer(0.0, 8);
        for _ in 0..100 {
            assert!(!never.begin(&mut HeaderMap::new()).unwrap().sampled);
        }
    }

    #[test]
    fn a_full_queue_drops_and_counts() {
        let (t, mut rx, metrics) = tracer(1.0, 2);
        let method = http::Method::GET;
        let start = SpanStart {
            direction: crate::metrics::Direction::Egress,
            start: SystemTime::now(),
            method: &method,
            authority: "svc.local",
            path: "/",
            virtual_service: "svc.local",
            route: "r",
            target_node: "blue",
            endpoint: None,
            client: None,
            grpc: false,
        };
        for _ in 0..5 {
            let hop = t.begin(&mut HeaderMap::new());
            let mut s = t.span(hop, start, None).unwrap();
            s.respond(200, "-", 0);
            s.finish(3);
        }
        assert_eq!(metrics.trace_spans_dropped(), 3);
        let got = rx.try_recv().unwrap();
        assert_eq!((got.status, got.response_bytes), (200, 3));
        assert!(t.span(None, start, None).is_none());
    }
}
