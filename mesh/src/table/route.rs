//! Compiled routes: kind, priority, retry policy and timeouts with App Mesh defaults, weighted
//! targets resolved to target-node indices (with cumulative weights for an O(log n) pick), the
//! compiled matcher, and the sort key that gives App Mesh's evaluation order.

use std::time::Duration;

use crate::model::{
    GrpcRetryPolicy, HttpRetryPolicy, HttpTimeout, RouteAction, RouteData, TcpTimeout,
};

use super::listener::{DEFAULT_IDLE_TIMEOUT, DEFAULT_PER_REQUEST_TIMEOUT, timeout_or};
use super::matcher::{Matcher, PathMatch};

/// Route kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RouteKind {
    Http,
    Http2,
    Grpc,
    Tcp,
}

impl RouteKind {
    /// The API spelling of the spec member (`httpRoute`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            RouteKind::Http => "httpRoute",
            RouteKind::Http2 => "http2Route",
            RouteKind::Grpc => "grpcRoute",
            RouteKind::Tcp => "tcpRoute",
        }
    }
}

/// A route ready for matching. For a virtual service whose provider is a virtual node, the
/// table holds one synthetic route per node listener: `name` = the node's name, `router` = "".
#[derive(Debug, Clone)]
pub struct CompiledRoute {
    pub name: Box<str>,
    pub router: Box<str>,
    pub kind: RouteKind,
    /// The route's priority (0 highest); `None` = unprioritised.
    pub priority: Option<u16>,
    /// The configured retry policy; `None` = none configured (App Mesh then applied its
    /// implicit policy: [`RetryPolicy::app_mesh_default`]).
    pub retry_policy: Option<RetryPolicy>,
    pub timeout: RouteTimeouts,
    pub(crate) targets: Box<[WeightedTarget]>,
    /// Running sum of weights, same length as `targets`.
    pub(crate) cumulative: Box<[u32]>,
    pub(crate) matcher: Matcher,
}

impl CompiledRoute {
    /// The weighted targets, in document order.
    pub fn targets(&self) -> &[WeightedTarget] {
        &self.targets
    }

    /// Sum of the weights.
    pub fn total_weight(&self) -> u32 {
        self.cumulative.last().copied().unwrap_or(0)
    }
}

/// A weighted target: `node` indexes `RouteTable::targets()`; `port` is the target node's
/// listener port to connect to (the target's explicit port, else the node's only listener).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WeightedTarget {
    pub node: usize,
    pub weight: u32,
    pub port: Option<u16>,
}

/// Route timeouts with defaults applied; `None` = disabled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteTimeouts {
    /// Per request: default 15 s (HTTP/HTTP2/gRPC); `None` for TCP or when set to 0.
    pub per_request: Option<Duration>,
    /// Idle: default 300 s.
    pub idle: Option<Duration>,
}

impl RouteTimeouts {
    pub(crate) fn http(t: Option<&HttpTimeout>) -> RouteTimeouts {
        RouteTimeouts {
            per_request: timeout_or(t.and_then(|t| t.per_request), DEFAULT_PER_REQUEST_TIMEOUT),
            idle: timeout_or(t.and_then(|t| t.idle), DEFAULT_IDLE_TIMEOUT),
        }
    }

    pub(crate) fn tcp(t: Option<&TcpTimeout>) -> RouteTimeouts {
        RouteTimeouts {
            per_request: None,
            idle: timeout_or(t.and_then(|t| t.idle), DEFAULT_IDLE_TIMEOUT),
        }
    }
}

/// A retry policy in data-plane terms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    pub max_retries: u32,
    /// Timeout of each attempt (`None`: the route's per-request timeout).
    pub per_retry_timeout: Option<Duration>,
    /// HTTP status codes that are retried.
    pub status_codes: Box<[u16]>,
    /// gRPC status codes (from `grpc-status`) that are retried.
    pub grpc_status_codes: Box<[u32]>,
    /// Retry on a reset connection / stream (server-error, gateway-error).
    pub on_reset: bool,
    /// Retry when connecting fails (`connection-error`).
    pub on_connect_failure: bool,
    /// Retry on a refused HTTP/2 stream (`stream-error`).
    pub on_refused_stream: bool,
}

const SERVER_ERROR: [u16; 10] = [500, 501, 502, 503, 504, 505, 506, 507, 508, 510];
const SERVER_ERROR_511: u16 = 511;

impl RetryPolicy {
    /// App Mesh's implicit policy: 2 retries on 503, gRPC UNAVAILABLE, connect failure,
    /// refused stream and reset.
    pub fn app_mesh_default() -> RetryPolicy {
        RetryPolicy {
            max_retries: 2,
            per_retry_timeout: None,
            status_codes: Box::new([503]),
            grpc_status_codes: Box::new([14]),
            on_reset: true,
            on_connect_failure: true,
            on_refused_stream: true,
        }
    }

    /// Whether a response with `status` is retried.
    pub fn retries_status(&self, status: u16) -> bool {
        self.status_codes.contains(&status)
    }

    /// Whether a gRPC status code is retried.
    pub fn retries_grpc_status(&self, code: u32) -> bool {
        self.grpc_status_codes.contains(&code)
    }

    fn compile(
        max: u64,
        per_retry: crate::model::Duration,
        http: &[String],
        tcp: &[String],
        grpc: &[String],
    ) -> RetryPolicy {
        let mut codes: Vec<u16> = Vec::new();
        let mut on_reset = false;
        let mut on_refused_stream = false;
        for e in http {
            match e.as_str() {
                "server-error" => {
                    codes.extend(SERVER_ERROR);
                    codes.push(SERVER_ERROR_511);
                    on_reset = true;
                }
                "gateway-error" => {
                    codes.extend([502, 503, 504]);
                    on_reset = true;
                }
                "client-error" => codes.push(409),
                "stream-error" => on_refused_stream = true,
                _ => {}
            }
        }
        codes.sort_unstable();
        codes.dedup();
        let grpc_status_codes: Vec<u32> = grpc
            .iter()
            .filter_map(|e| match e.as_str() {
                "cancelled" => Some(1),
                "deadline-exceeded" => Some(4),
                "resource-exhausted" => Some(8),
                "internal" => Some(13),
                "unavailable" => Some(14),
                _ => None,
            })
            .collect();
        RetryPolicy {
            max_retries: u32::try_from(max).unwrap_or(u32::MAX),
            per_retry_timeout: if per_retry.is_zero() {
                None
            } else {
                Some(per_retry.to_std())
            },
            status_codes: codes.into(),
            grpc_status_codes: grpc_status_codes.into(),
            on_reset,
            on_connect_failure: tcp.iter().any(|e| e == "connection-error"),
            on_refused_stream,
        }
    }

    pub(crate) fn http(p: &HttpRetryPolicy) -> RetryPolicy {
        Self::compile(
            p.max_retries,
            p.per_retry_timeout,
            &p.http_retry_events,
            &p.tcp_retry_events,
            &[],
        )
    }

    pub(crate) fn grpc(p: &GrpcRetryPolicy) -> RetryPolicy {
        Self::compile(
            p.max_retries,
            p.per_retry_timeout,
            &p.http_retry_events,
            &p.tcp_retry_events,
            &p.grpc_retry_events,
        )
    }
}

/// A route compiled but not yet placed: the route plus its listener port (if it names one)
/// and its App Mesh order key.
pub(crate) struct Compiled {
    pub route: CompiledRoute,
    pub port: Option<u16>,
    pub key: OrderKey,
}

/// App Mesh evaluation order: explicit priorities ascending first (0 = highest), then the
/// unprioritised routes; within equal priority (and among unprioritised routes) the more
/// specific route first — exact path, then the longest prefix / regex, then any path — then
/// the one with more method / scheme / header / query conditions, then document order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct OrderKey {
    unprioritised: bool,
    priority: u16,
    path_rank: u8,
    neg_len: std::cmp::Reverse<usize>,
    neg_conditions: std::cmp::Reverse<usize>,
    position: usize,
}

impl OrderKey {
    pub(crate) fn new(priority: Option<u16>, matcher: &Matcher, position: usize) -> OrderKey {
        let (path_rank, len) = match &matcher.path {
            PathMatch::Exact(p) => (0, p.len()),
            PathMatch::Prefix(p) => (1, p.len()),
            PathMatch::Regex(r) => (1, r.as_str().len().saturating_sub(6)),
            PathMatch::Any => (2, 0),
        };
        OrderKey {
            unprioritised: priority.is_none(),
            priority: priority.unwrap_or(0),
            path_rank,
            neg_len: std::cmp::Reverse(len),
            neg_conditions: std::cmp::Reverse(matcher.condition_count()),
            position,
        }
    }
}

/// Compiles route `r` (document position `position`); `target` maps a target node name and
/// optional port to its target index and resolved port.
pub(crate) fn compile(
    r: &RouteData,
    position: usize,
    mut target: impl FnMut(&str, Option<u32>) -> Option<(usize, Option<u16>)>,
) -> Result<Compiled, (String, String)> {
    let spec = &r.spec;
    let priority = spec.priority.and_then(|p| u16::try_from(p).ok());
    let (kind, matcher, retry_policy, timeout, port, action, kind_path) =
        if let Some(h) = &spec.http_route {
            let m = Matcher::http(&h.route_match)
                .map_err(|e| ("spec.httpRoute.match".to_owned(), e))?;
            (
                RouteKind::Http,
                m,
                h.retry_policy.as_ref().map(RetryPolicy::http),
                RouteTimeouts::http(h.timeout.as_ref()),
                h.route_match.port,
                &h.action,
                "spec.httpRoute",
            )
        } else if let Some(h) = &spec.http2_route {
            let m = Matcher::http(&h.route_match)
                .map_err(|e| ("spec.http2Route.match".to_owned(), e))?;
            (
                RouteKind::Http2,
                m,
                h.retry_policy.as_ref().map(RetryPolicy::http),
                RouteTimeouts::http(h.timeout.as_ref()),
                h.route_match.port,
                &h.action,
                "spec.http2Route",
            )
        } else if let Some(g) = &spec.grpc_route {
            let m = Matcher::grpc(&g.route_match)
                .map_err(|e| ("spec.grpcRoute.match".to_owned(), e))?;
            (
                RouteKind::Grpc,
                m,
                g.retry_policy.as_ref().map(RetryPolicy::grpc),
                RouteTimeouts::http(g.timeout.as_ref()),
                g.route_match.port,
                &g.action,
                "spec.grpcRoute",
            )
        } else if let Some(t) = &spec.tcp_route {
            (
                RouteKind::Tcp,
                Matcher::any(),
                None,
                RouteTimeouts::tcp(t.timeout.as_ref()),
                t.route_match.and_then(|m| m.port),
                &t.action,
                "spec.tcpRoute",
            )
        } else {
            return Err((
                "spec".to_owned(),
                "a route needs exactly one route kind".to_owned(),
            ));
        };
    let (targets, cumulative) = weighted(action, &mut target, kind_path)?;
    let key = OrderKey::new(priority, &matcher, position);
    Ok(Compiled {
        route: CompiledRoute {
            name: r.route_name.as_str().into(),
            router: r.virtual_router_name.as_str().into(),
            kind,
            priority,
            retry_policy,
            timeout,
            targets,
            cumulative,
            matcher,
        },
        port: port.and_then(|p| u16::try_from(p).ok()),
        key,
    })
}

type Weighted = (Box<[WeightedTarget]>, Box<[u32]>);

fn weighted(
    action: &RouteAction,
    target: &mut impl FnMut(&str, Option<u32>) -> Option<(usize, Option<u16>)>,
    kind_path: &str,
) -> Result<Weighted, (String, String)> {
    let mut targets = Vec::with_capacity(action.weighted_targets.len());
    let mut cumulative = Vec::with_capacity(action.weighted_targets.len());
    let mut sum: u32 = 0;
    for (i, w) in action.weighted_targets.iter().enumerate() {
        let Some((node, port)) = target(&w.virtual_node, w.port) else {
            return Err((
                format!("{kind_path}.action.weightedTargets[{i}].virtualNode"),
                format!("no virtual node \"{}\"", w.virtual_node),
            ));
        };
        sum = sum.saturating_add(w.weight);
        targets.push(WeightedTarget {
            node,
            weight: w.weight,
            port,
        });
        cumulative.push(sum);
    }
    if sum == 0 {
        return Err((
            format!("{kind_path}.action.weightedTargets"),
            "no weighted target with a weight above 0".to_owned(),
        ));
    }
    Ok((targets.into(), cumulative.into()))
}

/// The synthetic route of a virtual service whose provider is a virtual node: everything on
/// `port` goes to `node`.
pub(crate) fn provider_node_route(
    node_name: &str,
    node: usize,
    port: u16,
    kind: RouteKind,
    timeout: RouteTimeouts,
) -> CompiledRoute {
    CompiledRoute {
        name: node_name.into(),
        router: "".into(),
        kind,
        priority: None,
        retry_policy: None,
        timeout,
        targets: Box::new([WeightedTarget {
            node,
            weight: 1,
            port: Some(port),
        }]),
        cumulative: Box::new([1]),
        matcher: Matcher::any(),
    }
}
