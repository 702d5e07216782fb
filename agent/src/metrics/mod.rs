//! Agent metrics: lock-free counters and latency histograms, labelled by direction, virtual
//! service, route and target node, rendered in the Prometheus text format for
//! `/stats/prometheus`. Label sets are created once per (table, route, target) and cached, so
//! the per-request path only does atomic adds. [`emf`] writes the same counters as CloudWatch
//! Embedded Metric Format lines (App Mesh's metrics-extension set).

pub mod emf;

use std::collections::HashMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Latency bucket upper bounds in seconds.
const BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Traffic direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Into the task (15000).
    Ingress,
    /// Out of the task (15001).
    Egress,
}

impl Direction {
    /// Label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Ingress => "ingress",
            Direction::Egress => "egress",
        }
    }
    fn idx(self) -> usize {
        match self {
            Direction::Ingress => 0,
            Direction::Egress => 1,
        }
    }
}

/// Why listener TLS refused an ingress connection: a plaintext client on a STRICT listener, no
/// handshake in time, or a failed handshake (bad or missing client certificate, protocol
/// error).
pub const INGRESS_TLS_FAILURE_REASONS: [&str; 3] = ["plaintext_on_strict", "timeout", "handshake"];

/// Why a downstream request or connection was refused by a limit.
#[derive(Debug, Clone, Copy)]
pub enum LimitKind {
    /// Over the connection cap (503).
    ConnectionOverflow,
    /// Request head over the size or header-count limit (431).
    HeadTooLarge,
    /// Malformed or ambiguous request (400), e.g. request-smuggling shapes.
    Malformed,
    /// Request head too slow or connection idle too long.
    ClientTimeout,
    /// Over a listener's `connectionPool` (requests or TCP connections to the app) with the
    /// pending queue full: answered 503 at once (HTTP) or closed (TCP), Envoy's `UO`.
    PoolOverflow,
}

impl LimitKind {
    const ALL: [LimitKind; 5] = [
        LimitKind::ConnectionOverflow,
        LimitKind::HeadTooLarge,
        LimitKind::Malformed,
        LimitKind::ClientTimeout,
        LimitKind::PoolOverflow,
    ];
    fn as_str(self) -> &'static str {
        match self {
            LimitKind::ConnectionOverflow => "connection_overflow",
            LimitKind::HeadTooLarge => "head_too_large",
            LimitKind::Malformed => "malformed",
            LimitKind::ClientTimeout => "client_timeout",
            LimitKind::PoolOverflow => "pool_overflow",
        }
    }
}

/// What an idle timeout closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdleKind {
    /// An HTTP/HTTP2/gRPC stream (no body frame for the idle time, or no response head when the
    /// per-request timeout is disabled).
    Stream,
    /// An opaque TCP connection (no byte either way for the idle time).
    Tcp,
}

impl IdleKind {
    const ALL: [IdleKind; 2] = [IdleKind::Stream, IdleKind::Tcp];
    fn as_str(self) -> &'static str {
        match self {
            IdleKind::Stream => "stream",
            IdleKind::Tcp => "tcp",
        }
    }
}

/// Counters of one label set.
#[derive(Debug)]
pub struct RouteStats {
    direction: Direction,
    virtual_service: Box<str>,
    route: Box<str>,
    target_node: Box<str>,
    requests: AtomicU64,
    responses: [AtomicU64; 5],
    buckets: [AtomicU64; BUCKETS.len()],
    latency_count: AtomicU64,
    latency_sum_us: AtomicU64,
    connect_failures: AtomicU64,
    request_bytes: AtomicU64,
    response_bytes: AtomicU64,
    grpc_requests: AtomicU64,
    /// gRPC statuses of responses (0..=16, then any other), from headers or trailers.
    grpc_statuses: [AtomicU64; GRPC_STATUSES + 1],
    /// Idle timeouts, by [`IdleKind`].
    idle_timeouts: [AtomicU64; 2],
}

/// gRPC status codes with their own counter (0 OK … 16 UNAUTHENTICATED).
const GRPC_STATUSES: usize = 17;

impl RouteStats {
    fn new(direction: Direction, vs: &str, route: &str, node: &str) -> RouteStats {
        RouteStats {
            direction,
            virtual_service: vs.into(),
            route: route.into(),
            target_node: node.into(),
            requests: AtomicU64::new(0),
            responses: Default::default(),
            buckets: Default::default(),
            latency_count: AtomicU64::new(0),
            latency_sum_us: AtomicU64::new(0),
            connect_failures: AtomicU64::new(0),
            request_bytes: AtomicU64::new(0),
            response_bytes: AtomicU64::new(0),
            grpc_requests: AtomicU64::new(0),
            grpc_statuses: Default::default(),
            idle_timeouts: Default::default(),
        }
    }

    /// `n` body bytes went by in `flow` (request: client to upstream; response: back).
    pub fn bytes(&self, flow: crate::proxy::body::Flow, n: u64) {
        if n == 0 {
            return;
        }
        match flow {
            crate::proxy::body::Flow::Request => &self.request_bytes,
            crate::proxy::body::Flow::Response => &self.response_bytes,
        }
        .fetch_add(n, Ordering::Relaxed);
    }

    /// Body bytes counted so far in `flow`.
    pub fn bytes_total(&self, flow: crate::proxy::body::Flow) -> u64 {
        match flow {
            crate::proxy::body::Flow::Request => &self.request_bytes,
            crate::proxy::body::Flow::Response => &self.response_bytes,
        }
        .load(Ordering::Relaxed)
    }

    /// A response carried `grpc-status: code` (in its headers or its trailers).
    pub fn grpc_status(&self, code: u32) {
        let i = (code as usize).min(GRPC_STATUSES);
        self.grpc_statuses[i].fetch_add(1, Ordering::Relaxed);
    }

    /// A gRPC request (`content-type: application/grpc…`) started.
    pub fn grpc_request(&self) {
        self.grpc_requests.fetch_add(1, Ordering::Relaxed);
    }

    /// A request started.
    pub fn request(&self) {
        self.requests.fetch_add(1, Ordering::Relaxed);
    }

    /// A response with `status` after `elapsed`.
    pub fn response(&self, status: u16, elapsed: Duration) {
        let class = (status / 100).clamp(1, 5) as usize - 1;
        self.responses[class].fetch_add(1, Ordering::Relaxed);
        let secs = elapsed.as_secs_f64();
        if let Some(i) = BUCKETS.iter().position(|b| secs <= *b) {
            self.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        self.latency_count.fetch_add(1, Ordering::Relaxed);
        self.latency_sum_us
            .fetch_add(elapsed.as_micros() as u64, Ordering::Relaxed);
    }

    /// The upstream connection could not be made.
    pub fn connect_failure(&self) {
        self.connect_failures.fetch_add(1, Ordering::Relaxed);
    }

    /// An idle timeout closed a stream or a connection of this label set.
    pub fn idle_timeout(&self, kind: IdleKind) {
        self.idle_timeouts[kind as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Idle timeouts of `kind` counted so far.
    pub fn idle_timeouts(&self, kind: IdleKind) -> u64 {
        self.idle_timeouts[kind as usize].load(Ordering::Relaxed)
    }

    /// The label set's target node (ingress: this node).
    pub fn target_node(&self) -> &str {
        &self.target_node
    }

    /// Requests counted so far.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }
}

type LabelKey = (Direction, Box<str>, Box<str>, Box<str>);

/// All metrics of one agent.
#[derive(Debug, Default)]
pub struct Metrics {
    reloads_ok: AtomicU64,
    reloads_rejected: AtomicU64,
    fetch_failures: AtomicU64,
    connections_active: [AtomicI64; 2],
    connections_total: [AtomicU64; 2],
    limits: [AtomicU64; LimitKind::ALL.len()],
    routes: Mutex<HashMap<LabelKey, Arc<RouteStats>>>,
    trace_dropped: AtomicU64,
    /// Ingress connections refused by listener TLS, by [`INGRESS_TLS_FAILURE_REASONS`].
    ingress_tls_failures: [AtomicU64; INGRESS_TLS_FAILURE_REASONS.len()],
    /// Spans exported and failed exports, per exporter (0 OTLP, 1 X-Ray).
    trace_exported: [AtomicU64; 2],
    trace_failures: [AtomicU64; 2],
}

fn exporter_idx(name: &str) -> usize {
    usize::from(name != "otlp")
}

impl Metrics {
    /// The stats of a label set (created on first use; same handle across table reloads).
    pub fn route_stats(
        &self,
        direction: Direction,
        vs: &str,
        route: &str,
        node: &str,
    ) -> Arc<RouteStats> {
        let key: LabelKey = (direction, vs.into(), route.into(), node.into());
        match self.routes.lock() {
            Ok(mut map) => map
                .entry(key)
                .or_insert_with(|| Arc::new(RouteStats::new(direction, vs, route, node)))
                .clone(),
            Err(_) => Arc::new(RouteStats::new(direction, vs, route, node)),
        }
    }

    /// A document was installed.
    pub fn reload_ok(&self) {
        self.reloads_ok.fetch_add(1, Ordering::Relaxed);
    }
    /// A document was rejected.
    pub fn reload_rejected(&self) {
        self.reloads_rejected.fetch_add(1, Ordering::Relaxed);
    }
    /// The source could not be read.
    pub fn fetch_failed(&self) {
        self.fetch_failures.fetch_add(1, Ordering::Relaxed);
    }
    /// Rejected documents so far.
    pub fn rejected_count(&self) -> u64 {
        self.reloads_rejected.load(Ordering::Relaxed)
    }
    /// Installed documents so far.
    pub fn ok_count(&self) -> u64 {
        self.reloads_ok.load(Ordering::Relaxed)
    }
    /// A downstream connection opened (returns a guard that closes it on drop).
    pub fn connection_opened(self: &Arc<Self>, d: Direction) -> ConnectionGuard {
        self.connections_active[d.idx()].fetch_add(1, Ordering::Relaxed);
        self.connections_total[d.idx()].fetch_add(1, Ordering::Relaxed);
        ConnectionGuard {
            metrics: self.clone(),
            direction: d,
        }
    }
    /// Open downstream connections of a direction.
    pub fn active_connections(&self, d: Direction) -> i64 {
        self.connections_active[d.idx()].load(Ordering::Relaxed)
    }
    /// A limit refused something.
    pub fn limit_hit(&self, kind: LimitKind) {
        self.limits[kind as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// An ingress connection refused by listener TLS, for `reason` (one of
    /// [`INGRESS_TLS_FAILURE_REASONS`]; others are not counted).
    pub fn ingress_tls_failure(&self, reason: &str) {
        if let Some(i) = INGRESS_TLS_FAILURE_REASONS
            .iter()
            .position(|r| *r == reason)
        {
            self.ingress_tls_failures[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A finished span found the trace queue full.
    pub fn trace_span_dropped(&self) {
        self.trace_dropped.fetch_add(1, Ordering::Relaxed);
    }
    /// Spans dropped so far.
    pub fn trace_spans_dropped(&self) -> u64 {
        self.trace_dropped.load(Ordering::Relaxed)
    }
    /// `n` spans reached exporter `name` (`otlp` or `xray`).
    pub fn trace_spans_exported(&self, name: &str, n: u64) {
        self.trace_exported[exporter_idx(name)].fetch_add(n, Ordering::Relaxed);
    }
    /// An export to `name` failed.
    pub fn trace_export_failed(&self, name: &str) {
        self.trace_failures[exporter_idx(name)].fetch_add(1, Ordering::Relaxed);
    }

    /// Egress totals per (virtual service, route, target node): requests, 5xx responses plus
    /// connect failures. For `/graph`.
    pub fn egress_totals(&self) -> Vec<EgressTotals> {
        let routes: Vec<Arc<RouteStats>> = match self.routes.lock() {
            Ok(m) => m.values().cloned().collect(),
            Err(_) => Vec::new(),
        };
        routes
            .iter()
            .filter(|r| r.direction == Direction::Egress && !r.target_node.is_empty())
            .map(|r| EgressTotals {
                virtual_service: r.virtual_service.to_string(),
                route: r.route.to_string(),
                target_node: r.target_node.to_string(),
                requests: r.requests.load(Ordering::Relaxed),
                errors: r.responses[4].load(Ordering::Relaxed)
                    + r.connect_failures.load(Ordering::Relaxed),
            })
            .collect()
    }

    /// Prometheus text exposition; `state` is the numeric server state (0 live, 1 draining,
    /// 2 initializing, as Envoy's `server.state`).
    pub fn render(&self, state: u8, uptime: Duration) -> String {
        let mut out = String::with_capacity(8192);
        let _ = writeln!(out, "# TYPE taskmesh_server_state gauge");
        let _ = writeln!(out, "taskmesh_server_state {state}");
        let _ = writeln!(out, "# TYPE taskmesh_uptime_seconds gauge");
        let _ = writeln!(out, "taskmesh_uptime_seconds {}", uptime.as_secs());
        let _ = writeln!(out, "# TYPE taskmesh_config_reloads_total counter");
        let _ = writeln!(
            out,
            "taskmesh_config_reloads_total{{result=\"ok\"}} {}",
            self.reloads_ok.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "taskmesh_config_reloads_total{{result=\"rejected\"}} {}",
            self.reloads_rejected.load(Ordering::Relaxed)
        );
        let _ = writeln!(out, "# TYPE taskmesh_config_fetch_failures_total counter");
        let _ = writeln!(
            out,
            "taskmesh_config_fetch_failures_total {}",
            self.fetch_failures.load(Ordering::Relaxed)
        );
        let _ = writeln!(out, "# TYPE taskmesh_downstream_connections_active gauge");
        for d in [Direction::Ingress, Direction::Egress] {
            let _ = writeln!(
                out,
                "taskmesh_downstream_connections_active{{direction=\"{}\"}} {}",
                d.as_str(),
                self.connections_active[d.idx()].load(Ordering::Relaxed)
            );
        }
        let _ = writeln!(out, "# TYPE taskmesh_downstream_connections_total counter");
        for d in [Direction::Ingress, Direction::Egress] {
            let _ = writeln!(
                out,
                "taskmesh_downstream_connections_total{{direction=\"{}\"}} {}",
                d.as_str(),
                self.connections_total[d.idx()].load(Ordering::Relaxed)
            );
        }
        let _ = writeln!(out, "# TYPE taskmesh_limit_rejections_total counter");
        for k in LimitKind::ALL {
            let _ = writeln!(
                out,
                "taskmesh_limit_rejections_total{{reason=\"{}\"}} {}",
                k.as_str(),
                self.limits[k as usize].load(Ordering::Relaxed)
            );
        }
        let _ = writeln!(out, "# TYPE taskmesh_ingress_tls_failures_total counter");
        for (i, reason) in INGRESS_TLS_FAILURE_REASONS.iter().enumerate() {
            let _ = writeln!(
                out,
                "taskmesh_ingress_tls_failures_total{{reason=\"{reason}\"}} {}",
                self.ingress_tls_failures[i].load(Ordering::Relaxed)
            );
        }
        let _ = writeln!(out, "# TYPE taskmesh_trace_spans_dropped_total counter");
        let _ = writeln!(
            out,
            "taskmesh_trace_spans_dropped_total {}",
            self.trace_dropped.load(Ordering::Relaxed)
        );
        let _ = writeln!(out, "# TYPE taskmesh_trace_spans_exported_total counter");
        for (i, e) in ["otlp", "xray"].iter().enumerate() {
            let _ = writeln!(
                out,
                "taskmesh_trace_spans_exported_total{{exporter=\"{e}\"}} {}",
                self.trace_exported[i].load(Ordering::Relaxed)
            );
        }
        let _ = writeln!(out, "# TYPE taskmesh_trace_export_failures_total counter");
        for (i, e) in ["otlp", "xray"].iter().enumerate() {
            let _ = writeln!(
                out,
                "taskmesh_trace_export_failures_total{{exporter=\"{e}\"}} {}",
                self.trace_failures[i].load(Ordering::Relaxed)
            );
        }
        let mut routes: Vec<Arc<RouteStats>> = match self.routes.lock() {
            Ok(m) => m.values().cloned().collect(),
            Err(_) => Vec::new(),
        };
        routes.sort_by(|a, b| {
            (
                a.direction.idx(),
                &a.virtual_service,
                &a.route,
                &a.target_node,
            )
                .cmp(&(
                    b.direction.idx(),
                    &b.virtual_service,
                    &b.route,
                    &b.target_node,
                ))
        });
        // One `# TYPE` line, then the counter of every label set.
        let route_counter =
            |out: &mut String, name: &str, counter: fn(&RouteStats) -> &AtomicU64| {
                let _ = writeln!(out, "# TYPE {name} counter");
                for r in &routes {
                    let _ = writeln!(
                        out,
                        "{name}{{{}}} {}",
                        labels(r),
                        counter(r).load(Ordering::Relaxed)
                    );
                }
            };
        route_counter(&mut out, "taskmesh_requests_total", |r| &r.requests);
        let _ = writeln!(out, "# TYPE taskmesh_responses_total counter");
        for r in &routes {
            for (i, c) in r.responses.iter().enumerate() {
                let _ = writeln!(
                    out,
                    "taskmesh_responses_total{{{},class=\"{}xx\"}} {}",
                    labels(r),
                    i + 1,
                    c.load(Ordering::Relaxed)
                );
            }
        }
        route_counter(&mut out, "taskmesh_upstream_connect_failures_total", |r| {
            &r.connect_failures
        });
        let _ = writeln!(out, "# TYPE taskmesh_idle_timeouts_total counter");
        for r in &routes {
            for k in IdleKind::ALL {
                let _ = writeln!(
                    out,
                    "taskmesh_idle_timeouts_total{{{},kind=\"{}\"}} {}",
                    labels(r),
                    k.as_str(),
                    r.idle_timeouts[k as usize].load(Ordering::Relaxed)
                );
            }
        }
        route_counter(&mut out, "taskmesh_request_bytes_total", |r| {
            &r.request_bytes
        });
        route_counter(&mut out, "taskmesh_response_bytes_total", |r| {
            &r.response_bytes
        });
        route_counter(&mut out, "taskmesh_grpc_requests_total", |r| {
            &r.grpc_requests
        });
        let _ = writeln!(out, "# TYPE taskmesh_grpc_responses_total counter");
        for r in &routes {
            for (code, c) in r.grpc_statuses.iter().enumerate() {
                let n = c.load(Ordering::Relaxed);
                if n == 0 {
                    continue;
                }
                let _ = if code < GRPC_STATUSES {
                    writeln!(
                        out,
                        "taskmesh_grpc_responses_total{{{},grpc_status=\"{code}\"}} {n}",
                        labels(r)
                    )
                } else {
                    writeln!(
                        out,
                        "taskmesh_grpc_responses_total{{{},grpc_status=\"other\"}} {n}",
                        labels(r)
                    )
                };
            }
        }
        let _ = writeln!(out, "# TYPE taskmesh_request_duration_seconds histogram");
        for r in &routes {
            let l = labels(r);
            let mut cum = 0u64;
            for (i, b) in BUCKETS.iter().enumerate() {
                cum += r.buckets[i].load(Ordering::Relaxed);
                let _ = writeln!(
                    out,
                    "taskmesh_request_duration_seconds_bucket{{{l},le=\"{b}\"}} {cum}"
                );
            }
            let count = r.latency_count.load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "taskmesh_request_duration_seconds_bucket{{{l},le=\"+Inf\"}} {count}"
            );
            let _ = writeln!(
                out,
                "taskmesh_request_duration_seconds_sum{{{l}}} {}",
                r.latency_sum_us.load(Ordering::Relaxed) as f64 / 1e6
            );
            let _ = writeln!(
                out,
                "taskmesh_request_duration_seconds_count{{{l}}} {count}"
            );
        }
        out
    }
}

fn labels(r: &RouteStats) -> String {
    format!(
        "direction=\"{}\",virtual_service=\"{}\",route=\"{}\",target_node=\"{}\"",
        r.direction.as_str(),
        escape(&r.virtual_service),
        escape(&r.route),
        escape(&r.target_node)
    )
}

fn escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Totals of one egress label set (see [`Metrics::egress_totals`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EgressTotals {
    /// Virtual service.
    pub virtual_service: String,
    /// Route name.
    pub route: String,
    /// Target virtual node.
    pub target_node: String,
    /// Requests.
    pub requests: u64,
    /// 5xx responses and connect failures.
    pub errors: u64,
}

/// Decrements the active-connection gauge when dropped.
#[derive(Debug)]
pub struct ConnectionGuard {
    metrics: Arc<Metrics>,
    direction: Direction,
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.metrics.connections_active[self.direction.idx()].fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_labelled_counters_and_histogram() {
        let m = Arc::new(Metrics::default());
        let s = m.route_stats(Direction::Egress, "svc.local", "r1", "blue");
        s.request();
        s.response(204, Duration::from_millis(3));
        s.connect_failure();
        s.bytes(crate::proxy::body::Flow::Request, 10);
        s.bytes(crate::proxy::body::Flow::Response, 32);
        s.grpc_request();
        m.trace_span_dropped();
        m.trace_spans_exported("xray", 4);
        let again = m.route_stats(Direction::Egress, "svc.local", "r1", "blue");
        assert!(Arc::ptr_eq(&s, &again));
        m.reload_ok();
        m.reload_rejected();
        let g = m.connection_opened(Direction::Ingress);
        let text = m.render(0, Duration::from_secs(5));
        let l =
            "direction=\"egress\",virtual_service=\"svc.local\",route=\"r1\",target_node=\"blue\"";
        assert!(text.contains(&format!("taskmesh_requests_total{{{l}}} 1")));
        assert!(text.contains(&format!("taskmesh_responses_total{{{l},class=\"2xx\"}} 1")));
        assert!(text.contains(&format!(
            "taskmesh_upstream_connect_failures_total{{{l}}} 1"
        )));
        assert!(text.contains(&format!(
            "taskmesh_request_duration_seconds_bucket{{{l},le=\"0.005\"}} 1"
        )));
        assert!(text.contains(&format!(
            "taskmesh_request_duration_seconds_bucket{{{l},le=\"0.0025\"}} 0"
        )));
        assert!(text.contains("taskmesh_config_reloads_total{result=\"rejected\"} 1"));
        assert!(text.contains(&format!("taskmesh_request_bytes_total{{{l}}} 10")));
        assert!(text.contains(&format!("taskmesh_response_bytes_total{{{l}}} 32")));
        assert!(text.contains(&format!("taskmesh_grpc_requests_total{{{l}}} 1")));
        assert!(text.contains("taskmesh_trace_spans_dropped_total 1\n"));
        assert!(text.contains("taskmesh_trace_spans_exported_total{exporter=\"xray\"} 4\n"));
        assert!(text.contains("taskmesh_trace_spans_exported_total{exporter=\"otlp\"} 0\n"));
        assert!(text.contains("taskmesh_downstream_connections_active{direction=\"ingress\"} 1"));
        drop(g);
        assert_eq!(m.active_connections(Direction::Ingress), 0);
    }
}
