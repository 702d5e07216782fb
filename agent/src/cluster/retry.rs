//! The attempts of one routed request: the route's `retryPolicy`, else App Mesh's implicit
//! default (2 retries on 503, gRPC UNAVAILABLE, connect failure, refused stream and reset).
//! A retry happens when the policy names the outcome (HTTP status, `grpc-status` in the response
//! headers — a trailers-only gRPC answer —, connect failure, reset, refused HTTP/2 stream,
//! per-try timeout), retries are
//! left, the request can be sent again (no body, or a body still within
//! [`super::replay::RETRY_BUFFER_BYTES`]), and the cluster's retry budget allows it: at most
//! max([`MIN_RETRY_CONCURRENCY`], [`BUDGET_PERCENT`] % of its active requests) retries in flight
//! at once (Envoy's default budget), so retries cannot multiply load in an outage; a retry over
//! budget is not made and is counted. Each retry waits a jittered back-off ([`backoff`]) and picks an endpoint
//! the request has not tried yet. Every attempt's outcome feeds outlier detection, and a connect
//! failure cools its endpoint down ([`super::accrual`]).

use std::sync::LazyLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use http::{HeaderMap, Response, StatusCode};
use http_body::Body;
use http_body_util::Either;
use taskmesh_mesh::RetryPolicy;

use super::balance::Tried;
use super::outlier::Outcome;
use super::replay::{RETRY_BUFFER_BYTES, Replay, ReplayBody};
use super::{Cluster, InFlight, Routed};
use crate::metrics::RouteStats;
use crate::proxy::body::Counted;
use crate::proxy::pool::{Upstream, UpstreamBody, UpstreamError};
use crate::proxy::{ProxyBody, RequestBody, http_forward, local_response};

/// Retries always allowed in flight per cluster (Envoy's `min_retry_concurrency`).
pub const MIN_RETRY_CONCURRENCY: u64 = 3;
/// Share of a cluster's active requests that may be retries (Envoy's `budget_percent`).
pub const BUDGET_PERCENT: u64 = 20;
/// Base of the retry back-off (Envoy's default): retry n waits a random time in
/// [0, (2^n - 1) × base], at most [`BACKOFF_MAX`].
pub const BACKOFF_BASE: Duration = Duration::from_millis(25);
/// Longest back-off (Envoy's default: 10 × the base).
pub const BACKOFF_MAX: Duration = Duration::from_millis(250);

/// The back-off before retry `n` (1-based) with `random` bits: full jitter, so retries of
/// many requests that failed together do not arrive together.
pub fn backoff(n: u32, random: u64) -> Duration {
    let ceiling = BACKOFF_BASE
        .saturating_mul((1u32 << n.min(16)) - 1)
        .min(BACKOFF_MAX);
    let nanos = u64::try_from(ceiling.as_nanos()).unwrap_or(u64::MAX);
    Duration::from_nanos(if nanos == 0 { 0 } else { random % (nanos + 1) })
}

/// App Mesh's implicit policy, built once.
static APP_MESH_DEFAULT: LazyLock<RetryPolicy> = LazyLock::new(RetryPolicy::app_mesh_default);

/// A routed request in flight (counted for the retry budget while alive).
struct ActiveRequest<'a>(&'a Cluster);

impl Drop for ActiveRequest<'_> {
    fn drop(&mut self) {
        self.0.active_requests.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A retry attempt in flight under the budget.
struct RetryToken<'a>(&'a Cluster);

impl Drop for RetryToken<'_> {
    fn drop(&mut self) {
        self.0.active_retries.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Cluster {
    fn request_started(&self) -> ActiveRequest<'_> {
        self.active_requests.fetch_add(1, Ordering::Relaxed);
        ActiveRequest(self)
    }

    /// A slot for one more retry, or `None` (counted) when the budget is spent.
    fn try_retry(&self) -> Option<RetryToken<'_>> {
        let active = self.active_requests.load(Ordering::Relaxed);
        let budget = MIN_RETRY_CONCURRENCY.max(active * BUDGET_PERCENT / 100);
        if self.active_retries.fetch_add(1, Ordering::Relaxed) >= budget {
            self.active_retries.fetch_sub(1, Ordering::Relaxed);
            self.stats.retry_overflow.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        self.stats.retries.fetch_add(1, Ordering::Relaxed);
        Some(RetryToken(self))
    }
}

/// The `grpc-status` of response headers (a trailers-only gRPC response), without allocating.
pub fn grpc_status(headers: &HeaderMap) -> Option<u32> {
    let v = headers.get("grpc-status")?;
    std::str::from_utf8(v.as_bytes()).ok()?.trim().parse().ok()
}

/// Whether `e` is an HTTP/2 stream the upstream refused (`REFUSED_STREAM`: not processed, so
/// App Mesh's `stream-error` event retries it).
fn refused_stream(e: &UpstreamError) -> bool {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cause {
        if let Some(h2) = err.downcast_ref::<h2::Error>() {
            return h2.reason() == Some(h2::Reason::REFUSED_STREAM);
        }
        cause = err.source();
    }
    false
}

/// What is kept, besides the request head (the caller's, borrowed by every attempt), to send
/// the request again.
enum Resend {
    /// Not retried (no policy, no retries, or a body over the bound).
    No,
    /// No body.
    Bodiless,
    /// The body is being kept as it streams.
    Body(Replay),
}

impl Resend {
    fn possible(&self) -> bool {
        match self {
            Resend::No => false,
            Resend::Bodiless => true,
            Resend::Body(r) => r.replayable(),
        }
    }

    /// Re-addresses `head` to `upstream` and gives the body to send again.
    fn rebuild(
        &self,
        head: &mut http::request::Parts,
        upstream: std::net::SocketAddr,
    ) -> Option<UpstreamBody> {
        let body = match self {
            Resend::No => return None,
            Resend::Bodiless => ReplayBody::empty(),
            Resend::Body(r) => r.body(),
        };
        let path_and_query = head
            .uri
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/"));
        head.uri = http::Uri::builder()
            .scheme(http::uri::Scheme::HTTP)
            .authority(http_forward::authority_for(upstream))
            .path_and_query(path_and_query)
            .build()
            .ok()?;
        Some(UpstreamBody::replay(body))
    }
}

/// Sends the request `head` + `body` (already addressed to `routed`'s first endpoint, or to a
/// pass-through destination when `routed` is `None`) to `upstream`, retrying as described in
/// the module documentation; `retries_made` follows the retries (for the request's span).
/// Returns the response for the client and the access-log flag.
///
/// The head is borrowed by every attempt (a retry re-addresses it), never copied: this future
/// is part of the client connection's own while a request is in flight.
pub async fn run(
    routed: Option<&Routed>,
    route_policy: Option<&RetryPolicy>,
    stats: &RouteStats,
    retries_made: &AtomicU32,
    head: &mut http::request::Parts,
    body: Counted<RequestBody>,
    upstream: &Upstream<'_>,
) -> (Response<ProxyBody>, &'static str) {
    let policy = match (route_policy, routed) {
        (Some(p), Some(_)) => Some(p),
        (None, Some(_)) => Some(&*APP_MESH_DEFAULT),
        _ => None,
    };
    let max = policy.map_or(0, |p| p.max_retries);
    let _active = routed.map(|r| r.cluster.request_started());
    let (resend, mut body) = if max == 0 {
        (Resend::No, UpstreamBody::client(body))
    } else if body.is_end_stream() {
        (Resend::Bodiless, UpstreamBody::client(body))
    } else if body.size_hint().lower() > RETRY_BUFFER_BYTES as u64 {
        (Resend::No, UpstreamBody::client(body))
    } else {
        let replay = Replay::new(body, RETRY_BUFFER_BYTES);
        let first = UpstreamBody::replay(replay.body());
        (Resend::Body(replay), first)
    };
    let per_try = policy.and_then(|p| p.per_retry_timeout).filter(|_| max > 0);
    let mut attempt: Option<InFlight> = routed.and_then(Routed::take_first);
    let mut tried = Tried::default();
    if let Some(a) = &attempt {
        tried.add(a.index());
    }
    let mut retries = 0u32;
    let mut _token: Option<RetryToken<'_>> = None;
    loop {
        // The future is made in the `.await` expression, not bound to a local first: a local
        // would be stored a second time in this future (see `proxy::egress::forward`).
        let result = match per_try {
            Some(t) => tokio::time::timeout(t, upstream.send(head, body))
                .await
                .ok(),
            None => Some(upstream.send(head, body).await),
        };
        let report = |attempt: &mut Option<InFlight>, outcome: Outcome| {
            if let (Some(r), Some(a)) = (routed, attempt.take()) {
                r.cluster.report(&a, outcome, r.outlier.as_ref());
            }
        };
        _token = None;
        let may_retry = retries < max && resend.possible();
        let (fallback, flag) = match result {
            Some(Ok(resp)) => {
                let status = resp.status().as_u16();
                let grpc = grpc_status(resp.headers());
                if let (Some(r), Some(code)) = (routed, grpc) {
                    r.cluster.stats.grpc_status(code);
                }
                let outcome = if status >= 500 {
                    Outcome::ServerError
                } else {
                    Outcome::Success
                };
                report(&mut attempt, outcome);
                let wanted = policy.is_some_and(|p| {
                    p.retries_status(status) || grpc.is_some_and(|c| p.retries_grpc_status(c))
                });
                let token = (wanted && may_retry)
                    .then(|| routed.and_then(|r| r.cluster.try_retry()))
                    .flatten();
                if token.is_none() {
                    if let Some(code) = grpc {
                        // A trailers-only answer (statuses in trailers: `proxy::body`).
                        stats.grpc_status(code);
                    }
                    let (mut parts, body) = resp.into_parts();
                    http_forward::prepare_response(&mut parts.headers);
                    return (Response::from_parts(parts, Either::Left(body)), "-");
                }
                _token = token;
                (
                    (StatusCode::SERVICE_UNAVAILABLE, "retries exhausted\n"),
                    "URX",
                )
            }
            Some(Err(e)) => {
                let outcome = if e.is_connect() {
                    Outcome::ConnectFailure
                } else {
                    Outcome::ServerError
                };
                report(&mut attempt, outcome);
                let (wanted, answer, flag) = if e.is_connect() {
                    stats.connect_failure();
                    tracing::warn!(error = %e, retries, "upstream connect failure");
                    let msg = if e.is_tls() {
                        "upstream connect error: TLS handshake failed\n"
                    } else {
                        "upstream connect error\n"
                    };
                    (
                        policy.is_some_and(|p| p.on_connect_failure),
                        (StatusCode::SERVICE_UNAVAILABLE, msg),
                        "UF",
                    )
                } else {
                    tracing::warn!(error = %e, retries, "upstream request failed");
                    (
                        policy.is_some_and(|p| {
                            p.on_reset || p.on_refused_stream && refused_stream(&e)
                        }),
                        (StatusCode::BAD_GATEWAY, "upstream request failed\n"),
                        "UC",
                    )
                };
                let token = (wanted && may_retry)
                    .then(|| routed.and_then(|r| r.cluster.try_retry()))
                    .flatten();
                if token.is_none() {
                    return (local_response(answer.0, answer.1), flag);
                }
                _token = token;
                (answer, flag)
            }
            None => {
                report(&mut attempt, Outcome::ServerError);
                let answer = (StatusCode::GATEWAY_TIMEOUT, "upstream request timeout\n");
                let token = may_retry
                    .then(|| routed.and_then(|r| r.cluster.try_retry()))
                    .flatten();
                if token.is_none() {
                    return (local_response(answer.0, answer.1), "UT");
                }
                _token = token;
                (answer, "UT")
            }
        };
        // A retry is on: a short back-off, then an endpoint this request has not tried.
        let Some(r) = routed else {
            return (local_response(fallback.0, fallback.1), flag);
        };
        retries += 1;
        retries_made.store(retries, Ordering::Relaxed);
        tokio::time::sleep(backoff(retries, rand::random())).await;
        let next = r.cluster.pick(&r.hosts, tried);
        tried.add(next.index());
        let Some(again) = resend.rebuild(head, next.addr()) else {
            return (local_response(fallback.0, fallback.1), flag);
        };
        attempt = Some(next);
        body = again;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_is_jittered_within_envoys_bounds() {
        assert_eq!(backoff(1, 0), Duration::ZERO);
        assert_eq!(
            backoff(1, u64::MAX),
            Duration::from_nanos(u64::MAX % 25_000_001)
        );
        for r in [1u64, 7, 123_456_789, u64::MAX / 3] {
            assert!(backoff(1, r) <= Duration::from_millis(25));
            assert!(backoff(2, r) <= Duration::from_millis(75));
            assert!(backoff(9, r) <= BACKOFF_MAX);
        }
        let spread: std::collections::BTreeSet<_> = (0..50u64)
            .map(|i| backoff(3, i.wrapping_mul(0x9E37_79B9_7F4A_7C15)))
            .collect();
        assert!(spread.len() > 40, "not jittered");
    }

    #[test]
    fn grpc_status_from_headers() {
        let mut h = HeaderMap::new();
        assert_eq!(grpc_status(&h), None);
        h.insert("grpc-status", "14".parse().unwrap());
        assert_eq!(grpc_status(&h), Some(14));
        h.insert("grpc-status", "x".parse().unwrap());
        assert_eq!(grpc_status(&h), None);
    }
}
