//! Egress (15001): where an outbound connection of the app goes. A redirected connection's
//! original port first selects a tcpRoute; otherwise HTTP is routed by `Host` among the node's
//! backends -> route -> weighted target node -> an endpoint on the target's listener port.
//! Unknown destinations: `ALLOW_ALL` (and `*.amazonaws.com` always) pass through to the original
//! destination, `DROP_ALL` answers 404 (HTTP) or closes (TCP). Explicit mode (a direct
//! connection, no redirect) routes HTTP by `Host` alone.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use http::{Request, Response, StatusCode, header};
use taskmesh_mesh::{EgressFilter, HttpRequestView, HttpRouting, RouteTable, TcpRouting};
use tokio::net::TcpStream;

use super::body::Counted;
use super::pool::Upstream;
use super::{ProxyBody, RequestBody, http_forward, local_response, tcp};
use crate::access_log::{self, Entry};
use crate::agent::Shared;
use crate::cluster::retry;
use crate::config::ActiveConfig;
use crate::metrics::{Direction, IdleKind, RouteStats};
use crate::trace::PendingSpan;

/// How long an ALLOW_ALL connection may stay silent before it is treated as opaque TCP
/// (server-speaks-first protocols such as MySQL or SMTP).
const SNIFF_WAIT_ALLOW_ALL: Duration = Duration::from_millis(300);

/// Per-connection context shared by its requests.
struct Conn {
    shared: Arc<Shared>,
    peer: SocketAddr,
    orig_dst: Option<SocketAddr>,
}

/// Serves one accepted egress connection.
pub async fn serve_connection(
    shared: Arc<Shared>,
    stream: TcpStream,
    peer: SocketAddr,
    builder: &super::Server,
) {
    let orig_dst = super::original_dst::original_dst(&stream);
    if let Some(dst) = orig_dst
        && let Some(cfg) = shared.config.load_full()
    {
        if let TcpRouting::Matched(m) = cfg.table.route_tcp(dst.port()) {
            let t = m.pick(rand::random());
            let target = &cfg.table.targets()[t.node];
            let port = t.port.unwrap_or(target.port);
            let stats = route_stats(&shared, &cfg, m.route as *const _ as usize, t.node, || {
                (m.virtual_service, &m.route.name, &target.name)
            });
            stats.request();
            let start = Instant::now();
            match shared.clusters.route(&shared.resolver, target, port).await {
                Ok(routed) => {
                    // The endpoint counts this connection in flight until it ends.
                    let attempt = routed.take_first();
                    let up = routed.first_addr;
                    let idle = m.route.timeout.idle;
                    // Boxed, here and for pass-through below: these futures are large, and
                    // inline they would make every HTTP connection's task as large.
                    let forwarded = match cfg.tls.client(m.virtual_service, port) {
                        Some(tls) => Box::pin(tls.forward_tcp(stream, up, idle)).await,
                        None => Box::pin(tcp::forward(stream, up, idle)).await,
                    };
                    let outcome = match forwarded {
                        Ok(s) => {
                            if s.idle_timed_out {
                                stats.idle_timeout(IdleKind::Tcp);
                            }
                            stats.response(200, start.elapsed());
                            crate::cluster::outlier::Outcome::Success
                        }
                        Err(e) => {
                            stats.connect_failure();
                            tracing::warn!(upstream = %up, error = %e, "tcp route forwarding failed");
                            crate::cluster::outlier::Outcome::of_tcp_error(&e)
                        }
                    };
                    if let Some(a) = attempt {
                        routed.cluster.report(&a, outcome, routed.outlier.as_ref());
                    }
                }
                Err(e) => tracing::warn!(target_node = &*target.name, error = %e, "no endpoint"),
            }
            return;
        }
        let allow_all = matches!(cfg.table.egress_filter(), EgressFilter::AllowAll);
        let wait = if allow_all {
            SNIFF_WAIT_ALLOW_ALL
        } else {
            Duration::from_secs(shared.settings.client_timeout_seconds.max(1))
        };
        if super::sniff_http(&stream, wait).await != Some(true) {
            let aws = !allow_all
                && super::sni::peek_sni(&stream, wait)
                    .await
                    .is_some_and(|host| RouteTable::is_always_allowed(&host));
            if allow_all || aws {
                if let Err(e) = Box::pin(tcp::forward(stream, dst, None)).await {
                    tracing::debug!(destination = %dst, error = %e, "pass-through ended");
                }
            } else {
                tracing::debug!(destination = %dst, "DROP_ALL: closing unknown TCP destination");
            }
            return;
        }
    }
    let conn = Arc::new(Conn {
        shared: shared.clone(),
        peer,
        orig_dst,
    });
    super::serve_plain(&shared, stream, builder, move |req| {
        handle(conn.clone(), req)
    })
    .await;
}

fn route_stats<'a>(
    shared: &Shared,
    cfg: &ActiveConfig,
    route_key: usize,
    node: usize,
    labels: impl FnOnce() -> (&'a str, &'a str, &'a str),
) -> Arc<RouteStats> {
    cfg.stats_for((route_key, node), || {
        let (vs, route, target) = labels();
        shared
            .metrics
            .route_stats(Direction::Egress, vs, route, target)
    })
}

/// Where one request goes.
struct Decision<'t> {
    upstream: Result<SocketAddr, (StatusCode, &'static str, &'static str)>,
    virtual_service: &'t str,
    route: &'t str,
    target: &'t str,
    stats: Arc<RouteStats>,
    timeout: Option<Duration>,
    /// The route's stream idle timeout.
    idle: Option<Duration>,
    /// The route's retry policy (`None`: App Mesh's implicit default applies to routed targets).
    retry_policy: Option<&'t taskmesh_mesh::RetryPolicy>,
    /// Whether the upstream speaks HTTP/2 (target listener `http2` or `grpc`).
    h2: bool,
    /// The target's endpoint set and first pick (routed targets only; retries pick from it).
    routed: Option<crate::cluster::Routed>,
    /// The backend's client TLS policy, when it applies to the target port.
    tls: Option<Arc<crate::tls::client::ClientPolicy>>,
    /// Retries made so far (for the span).
    retries: AtomicU32,
}

/// One request of an egress connection.
///
/// Not an `async fn`: an `async fn` keeps its arguments twice in its future (as given, and
/// moved into its body), and this future is held by the client connection while the request
/// is in flight. The request's head is kept once, here, and borrowed by the attempts.
fn handle(
    conn: Arc<Conn>,
    req: Request<RequestBody>,
) -> impl Future<Output = Response<Counted<ProxyBody>>> + Send + 'static {
    let (mut head, body) = req.into_parts();
    async move {
        let start = Instant::now();
        let started_at = SystemTime::now();
        let shared = &conn.shared;
        let Some(cfg) = shared.config.load_full() else {
            return local_response(
                StatusCode::SERVICE_UNAVAILABLE,
                "taskmesh-agent: no mesh document loaded yet\n",
            )
            .map(Counted::uncounted);
        };
        // Cheap clones (shared buffers): no per-request string building.
        let authority_hv = authority_of(&head);
        let authority = authority_hv
            .as_ref()
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let decision = decide(&conn, &cfg, &head, authority).await;
        decision.stats.request();
        let request_id = http_forward::ensure_request_id(&mut head.headers);
        let method = head.method.clone();
        let path = head.uri.path_and_query().cloned();
        let bytes_received = content_length(&head.headers);
        let hop = shared.tracer.begin(&mut head.headers);
        let grpc = crate::trace::span::is_grpc(&head.headers);
        if grpc {
            decision.stats.grpc_request();
        }
        let mut span = shared.tracer.start_span(
            hop,
            crate::trace::SpanStart {
                direction: crate::metrics::Direction::Egress,
                start: started_at,
                method: &method,
                authority,
                path: path.as_ref().map(|p| p.as_str()).unwrap_or("/"),
                virtual_service: decision.virtual_service,
                route: decision.route,
                target_node: decision.target,
                endpoint: decision.upstream.as_ref().ok().copied(),
                client: Some(conn.peer.ip()),
                grpc,
            },
        );

        let (resp, upstream_authority, flags) = match decision.upstream {
            Err((status, msg, flag)) => (local_response(status, msg), None, flag),
            Ok(up) => {
                let span_bytes = span.as_ref().and_then(PendingSpan::request_bytes);
                let (r, flag) =
                    forward(shared, &decision, &mut head, body, span_bytes, &conn, up).await;
                (r, Some(http_forward::authority_for(up)), flag)
            }
        };
        let status = resp.status().as_u16();
        decision.stats.response(status, start.elapsed());
        // As App Mesh's Envoy: no access log unless the virtual node configures one.
        if let Some(log) = cfg.access_log_path.as_ref() {
            shared.access_log.write(
                log,
                &Entry {
                    start_time: access_log::epoch_secs(started_at),
                    direction: "egress",
                    method: method.as_str(),
                    path: path.as_ref().map(|p| p.as_str()).unwrap_or("/"),
                    authority,
                    code: status,
                    bytes_received,
                    bytes_sent: content_length(resp.headers()),
                    duration_ms: start.elapsed().as_secs_f64() * 1000.0,
                    upstream: upstream_authority.as_ref().map_or("", |a| a.as_str()),
                    virtual_service: decision.virtual_service,
                    route: decision.route,
                    target_node: decision.target,
                    request_id: request_id.to_str().unwrap_or(""),
                    flags,
                },
            );
        }
        if let Some(s) = span.as_mut() {
            s.respond(status, flags, decision.retries.load(Ordering::Relaxed));
        }
        resp.map(|b| Counted::response(b, decision.stats.clone(), span).with_idle(decision.idle))
    }
}

/// Sends the request (`head`, readied for the upstream here, and `body` with its span's byte
/// count, if sampled) with the route's timeouts and retries (`crate::cluster::retry`: the route
/// policy or App Mesh's implicit default, endpoints not yet tried, retry budget, small bodies
/// replayed).
async fn forward(
    shared: &Shared,
    d: &Decision<'_>,
    head: &mut http::request::Parts,
    body: RequestBody,
    span_bytes: Option<Arc<AtomicU64>>,
    conn: &Conn,
    up: SocketAddr,
) -> (Response<ProxyBody>, &'static str) {
    if let Err(e) = http_forward::prepare_request(head, conn.peer.ip(), up) {
        tracing::warn!(error = %e, "cannot build upstream request");
        return (
            local_response(StatusCode::BAD_REQUEST, "malformed request\n"),
            "DI",
        );
    }
    // The client's body is counted once, as it is read (a replayed retry does not count again).
    let body = Counted::request(body, d.stats.clone(), span_bytes);
    let upstream = Upstream {
        pool: &shared.pool,
        tls: d.tls.as_deref(),
        h2: d.h2,
    };
    let (routed, policy) = (d.routed.as_ref(), d.retry_policy);
    // Each branch makes its future in the `.await` expression: a future bound to a local and
    // then awaited is stored twice in this function's own future (the local and the awaited
    // copy), which every client connection holds while a request is in flight.
    match super::body::head_deadline(d.timeout, d.idle) {
        Some((t, kind)) => match tokio::time::timeout(
            t,
            retry::run(routed, policy, &d.stats, &d.retries, head, body, &upstream),
        )
        .await
        {
            Ok(r) => r,
            Err(_) => kind.answer(&d.stats),
        },
        None => retry::run(routed, policy, &d.stats, &d.retries, head, body, &upstream).await,
    }
}

async fn decide<'t>(
    conn: &Conn,
    cfg: &'t ActiveConfig,
    req: &http::request::Parts,
    authority: &str,
) -> Decision<'t> {
    let shared = &conn.shared;
    let table: &RouteTable = &cfg.table;
    let view = HttpRequestView {
        authority,
        dest_port: conn.orig_dst.map(|d| d.port()),
        method: &req.method,
        scheme: "http",
        path_and_query: req.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/"),
        headers: &req.headers,
    };
    match table.route_http(&view) {
        HttpRouting::Matched(m) => {
            let t = m.pick(rand::random());
            let target = &table.targets()[t.node];
            let port = t.port.unwrap_or(target.port);
            let stats = route_stats(shared, cfg, m.route as *const _ as usize, t.node, || {
                (m.virtual_service, &m.route.name, &target.name)
            });
            let routed = shared
                .clusters
                .route(&shared.resolver, target, port)
                .await
                .map_err(|e| {
                    tracing::warn!(target_node = &*target.name, error = %e, "no healthy upstream");
                    (
                        StatusCode::SERVICE_UNAVAILABLE,
                        "no healthy upstream\n",
                        "UH",
                    )
                });
            let upstream = routed.as_ref().map(|r| r.first_addr).map_err(|e| *e);
            Decision {
                upstream,
                virtual_service: m.virtual_service,
                route: &m.route.name,
                target: &target.name,
                stats,
                timeout: m.route.timeout.per_request,
                idle: m.route.timeout.idle,
                retry_policy: m.route.retry_policy.as_ref(),
                h2: speaks_h2(
                    target
                        .listeners
                        .iter()
                        .find(|l| l.port == port)
                        .map_or(target.protocol, |l| l.protocol),
                ),
                routed: routed.ok(),
                tls: cfg.tls.client(m.virtual_service, port).cloned(),
                retries: AtomicU32::new(0),
            }
        }
        HttpRouting::NoRoute { virtual_service } => Decision {
            upstream: Err((StatusCode::NOT_FOUND, "no route\n", "NR")),
            virtual_service,
            route: "",
            target: "",
            stats: route_stats(
                shared,
                cfg,
                virtual_service.as_ptr() as usize,
                usize::MAX,
                || (virtual_service, "", ""),
            ),
            timeout: None,
            idle: None,
            retry_policy: None,
            h2: false,
            routed: None,
            tls: None,
            retries: AtomicU32::new(0),
        },
        HttpRouting::UnknownDestination => {
            let host = host_only(authority);
            let allow = matches!(table.egress_filter(), EgressFilter::AllowAll)
                || RouteTable::is_always_allowed(host);
            let stats = route_stats(shared, cfg, usize::MAX - 1, usize::MAX, || {
                ("", "mesh-allow-all", "")
            });
            let upstream = if !allow {
                Err((
                    StatusCode::NOT_FOUND,
                    "unknown destination (egress filter DROP_ALL)\n",
                    "NR",
                ))
            } else if let Some(dst) = conn.orig_dst {
                Ok(dst)
            } else {
                let port = port_of(authority).unwrap_or(80);
                shared
                    .resolver
                    .pick(host, false)
                    .await
                    .map(|ip| SocketAddr::new(ip, port))
                    .map_err(|_| {
                        (
                            StatusCode::SERVICE_UNAVAILABLE,
                            "cannot resolve destination\n",
                            "UH",
                        )
                    })
            };
            Decision {
                upstream,
                virtual_service: "",
                route: "mesh-allow-all",
                target: "",
                stats,
                timeout: None,
                idle: None,
                retry_policy: None,
                h2: false,
                routed: None,
                tls: None,
                retries: AtomicU32::new(0),
            }
        }
    }
}

/// Whether a listener protocol is carried over HTTP/2.
pub fn speaks_h2(p: taskmesh_mesh::Protocol) -> bool {
    matches!(
        p,
        taskmesh_mesh::Protocol::Http2 | taskmesh_mesh::Protocol::Grpc
    )
}

/// `Host` header, else the URI authority (absolute-form requests).
pub fn authority_of(req: &http::request::Parts) -> Option<http::HeaderValue> {
    if let Some(h) = req.headers.get(header::HOST) {
        return Some(h.clone());
    }
    req.uri
        .authority()
        .and_then(|a| http::HeaderValue::from_str(a.as_str()).ok())
}

/// `name` of `name:port` (IPv6 literals in brackets kept whole).
pub fn host_only(authority: &str) -> &str {
    if authority.starts_with('[') {
        return authority
            .find(']')
            .map(|i| &authority[..=i])
            .unwrap_or(authority);
    }
    match authority.rsplit_once(':') {
        Some((h, p)) if p.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => authority,
    }
}

fn port_of(authority: &str) -> Option<u16> {
    authority.rsplit_once(':').and_then(|(_, p)| p.parse().ok())
}

fn content_length(h: &http::HeaderMap) -> u64 {
    h.get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    /// Every client connection holds its task for its whole life and, while a request is in
    /// flight, the request's future (boxed per connection): at 256 connections, each KiB here
    /// is 256 KiB of resident memory, and the request's future is written in full (moved into
    /// its box) and touched on every request, so its size is also cache misses per request. The
    /// bounds catch a cold path's large future inlined into the hot one: with the Cloud Map
    /// lookup not boxed, the request's future is 10.1 KiB and the egress connection's 9.6 KiB
    /// (debug build; 4.8 and 2.4 KiB boxed); with the h2c hand-off not boxed, the egress
    /// connection's is 6.0 KiB (2.6 KiB boxed). With the request (264 bytes) passed down by
    /// value through the attempts, as it was, the request's future is 4.8 KiB; with its head
    /// kept once and borrowed, 2.0 KiB.
    #[tokio::test]
    async fn per_connection_futures_stay_small() {
        let dir = tempfile::tempdir().unwrap();
        let agent = crate::Agent::start(crate::Settings::for_unit_test(dir.path()))
            .await
            .unwrap();
        let shared = agent.shared().clone();
        let builder = crate::proxy::limits::server_builder(&shared.settings);

        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let client = tokio::spawn(async move {
            let mut c = TcpStream::connect(addr).await.unwrap();
            c.write_all(b"GET /x HTTP/1.1\r\nhost: svc.local\r\n\r\n")
                .await
                .unwrap();
            let mut buf = [0u8; 256];
            let _ = c.read(&mut buf).await;
            TcpStream::connect(addr).await.unwrap()
        });
        let (stream, peer) = listener.accept().await.unwrap();

        // The request's future, made on a real request and dropped unpolled.
        let handle_size = Arc::new(AtomicUsize::new(0));
        let conn = Arc::new(super::Conn {
            shared: shared.clone(),
            peer,
            orig_dst: None,
        });
        let hs = handle_size.clone();
        let svc = hyper::service::service_fn(move |req| {
            let size = std::mem::size_of_val(&super::handle(
                conn.clone(),
                req.map(crate::proxy::RequestBody::hyper),
            ));
            hs.store(size, Ordering::SeqCst);
            async move {
                Ok::<_, std::convert::Infallible>(http::Response::new(http_body_util::Empty::<
                    bytes::Bytes,
                >::new()))
            }
        });
        hyper::server::conn::http1::Builder::new()
            .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
            .await
            .unwrap();
        let (second, peer) = listener.accept().await.unwrap();
        drop(client.await.unwrap());
        // The connection's future (its task), made and dropped unpolled.
        let ingress_size = std::mem::size_of_val(&crate::proxy::ingress::serve_connection(
            shared.clone(),
            second,
            peer,
            &builder,
        ));
        let (third, peer) = {
            let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let a = l.local_addr().unwrap();
            let _c = TcpStream::connect(a).await.unwrap();
            l.accept().await.unwrap()
        };
        let egress_size = std::mem::size_of_val(&super::serve_connection(
            shared.clone(),
            third,
            peer,
            &builder,
        ));
        let handle_size = handle_size.load(Ordering::SeqCst);
        // Moved several times per request on its way back to the client.
        let body_size = std::mem::size_of::<crate::proxy::pool::UpstreamResponseBody>();
        eprintln!(
            "egress request future {handle_size} B, egress connection {egress_size} B, ingress connection {ingress_size} B, upstream response body {body_size} B"
        );
        assert!(body_size <= 96, "upstream response body: {body_size} bytes");
        assert!(handle_size > 0);
        assert!(
            handle_size <= 3 * 1024,
            "egress request future: {handle_size} bytes"
        );
        assert!(
            egress_size <= 3 * 1024,
            "egress connection future: {egress_size} bytes"
        );
        assert!(
            ingress_size <= 3 * 1024,
            "ingress connection future: {ingress_size} bytes"
        );
        agent.shutdown().await;
    }

    #[test]
    fn host_and_port_split() {
        assert_eq!(super::host_only("svc.local:9080"), "svc.local");
        assert_eq!(super::host_only("svc.local"), "svc.local");
        assert_eq!(super::host_only("[::1]:80"), "[::1]");
        assert_eq!(super::port_of("svc.local:9080"), Some(9080));
        assert_eq!(super::port_of("svc.local"), None);
    }
}
