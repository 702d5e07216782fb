//! One proxied request as a span: what the hop knew when it started (ids, method, mesh
//! decision) and what it learnt when the response body ended (status, bytes, end time). Built
//! only for sampled requests; the exporters turn it into OTLP spans and X-Ray segments.

use std::net::SocketAddr;
use std::time::SystemTime;

use super::context::{SpanId, TraceId};
use crate::metrics::Direction;

/// A finished (or, before [`super::PendingSpan::finish`], started) span.
#[derive(Debug, Clone)]
pub struct SpanData {
    /// The trace.
    pub trace_id: TraceId,
    /// This hop's span.
    pub span_id: SpanId,
    /// The caller's span.
    pub parent: Option<SpanId>,
    /// Ingress (server span) or egress (client span).
    pub direction: Direction,
    /// When the request arrived.
    pub start: SystemTime,
    /// When the response body ended.
    pub end: SystemTime,
    /// Request method.
    pub method: http::Method,
    /// `Host` / `:authority`.
    pub authority: String,
    /// Path and query.
    pub path: String,
    /// Response status sent to the client.
    pub status: u16,
    /// Virtual service the request went to (egress).
    pub virtual_service: String,
    /// Route that matched (egress).
    pub route: String,
    /// Target virtual node (egress) or this node (ingress).
    pub target_node: String,
    /// Upstream endpoint the request was sent to.
    pub endpoint: Option<SocketAddr>,
    /// Retries made (egress).
    pub retries: u32,
    /// Envoy-style response flag (`-`, `NR`, `UF`, `UT`, …).
    pub flags: &'static str,
    /// Request body bytes forwarded.
    pub request_bytes: u64,
    /// Response body bytes sent to the client.
    pub response_bytes: u64,
    /// A gRPC request (`content-type: application/grpc…`).
    pub grpc: bool,
    /// The downstream peer.
    pub client: Option<std::net::IpAddr>,
}

/// What a hop knows about its request when it decides where it goes (borrowed; copied into a
/// [`SpanData`] only when the request is sampled).
#[derive(Debug, Clone, Copy)]
pub struct SpanStart<'a> {
    /// Ingress or egress.
    pub direction: Direction,
    /// When the request arrived.
    pub start: SystemTime,
    /// Request method.
    pub method: &'a http::Method,
    /// `Host` / `:authority`.
    pub authority: &'a str,
    /// Path and query.
    pub path: &'a str,
    /// Virtual service.
    pub virtual_service: &'a str,
    /// Route.
    pub route: &'a str,
    /// Target virtual node.
    pub target_node: &'a str,
    /// Upstream endpoint.
    pub endpoint: Option<SocketAddr>,
    /// Downstream peer.
    pub client: Option<std::net::IpAddr>,
    /// Whether it is gRPC.
    pub grpc: bool,
}

/// Whether `content-type` says gRPC (`application/grpc`, `application/grpc+proto`, …).
pub fn is_grpc(headers: &http::HeaderMap) -> bool {
    headers
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
}

/// Seconds since the epoch (X-Ray's time unit), microsecond precision.
pub fn epoch_secs(t: SystemTime) -> f64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// Nanoseconds since the epoch (OTLP's time unit).
pub fn epoch_nanos(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}
