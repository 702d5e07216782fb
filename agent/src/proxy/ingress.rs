//! Ingress (15000): connections redirected from the app's ports go to the app on
//! `127.0.0.1:<original port>` (explicit mode: the node's first listener port). The node's
//! listener for that port decides HTTP or opaque TCP and its per-request timeout.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use http::{Request, Response, StatusCode};
use http_body_util::Either;
use tokio::net::TcpStream;

use super::body::Counted;
use super::{ProxyBody, RequestBody, http_forward, local_response, tcp};
use crate::access_log::{self, Entry};
use crate::agent::Shared;
use crate::metrics::{Direction, LimitKind, RouteStats};
use crate::tls::server::IngressStream;
use crate::trace::PendingSpan;

struct Conn {
    shared: Arc<Shared>,
    limit: Option<Arc<crate::config::PoolLimit>>,
    h2: bool,
    peer: SocketAddr,
    app: SocketAddr,
    app_authority: http::uri::Authority,
    timeout: Option<Duration>,
    idle: Option<Duration>,
    stats: Arc<RouteStats>,
}

/// Serves one accepted ingress connection.
pub async fn serve_connection(
    shared: Arc<Shared>,
    stream: TcpStream,
    peer: SocketAddr,
    builder: &super::Server,
) {
    let orig = super::original_dst::original_dst(&stream);
    let cfg = shared.config.load_full();
    let listener = cfg.as_ref().and_then(|c| match orig {
        Some(dst) => c.table.listener_for_port(dst.port()).cloned(),
        None => c.table.listeners().first().cloned(),
    });
    let port = match (orig, &listener) {
        (Some(dst), _) => dst.port(),
        (None, Some(l)) => l.port,
        (None, None) => {
            tracing::warn!(%peer, "ingress: no original destination and no listener known; closing");
            return;
        }
    };
    let app = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port);
    let node = cfg
        .as_ref()
        .map(|c| c.table.node_name().to_string())
        .unwrap_or_default();
    let stats = match &cfg {
        Some(c) => c.stats_for((usize::MAX - 2, usize::from(port)), || {
            shared
                .metrics
                .route_stats(Direction::Ingress, "", "", &node)
        }),
        None => shared.metrics.route_stats(Direction::Ingress, "", "", ""),
    };
    let is_tcp = match &listener {
        Some(l) => !l.protocol.is_http(),
        // No document yet: only pass through what is clearly not HTTP.
        None => super::sniff_http(&stream, Duration::from_millis(300)).await != Some(true),
    };
    // Listener TLS (STRICT / PERMISSIVE) is terminated here, before HTTP or TCP handling.
    let tls = cfg.as_ref().and_then(|c| c.tls.listener(port).cloned());
    // The handshake's future is boxed: inline, it would make every connection's task larger.
    let accepted = match tls.as_deref() {
        None => Ok(IngressStream::Plain(stream)),
        Some(t) => Box::pin(crate::tls::server::accept(Some(t), stream)).await,
    };
    let stream = match accepted {
        Ok(s) => s,
        Err(e) => {
            shared.metrics.ingress_tls_failure(e.reason());
            tracing::warn!(%peer, port, error = %e, "ingress TLS: connection refused");
            return;
        }
    };
    let limit = cfg
        .as_ref()
        .and_then(|c| c.ingress_limits.get(&port).cloned());
    if is_tcp {
        let _slot = match &limit {
            Some(l) => match l.acquire().await {
                Some(p) => Some(p),
                None => {
                    shared.metrics.limit_hit(LimitKind::PoolOverflow);
                    tracing::info!(%peer, port, "listener connection pool full; closing");
                    return;
                }
            },
            None => None,
        };
        stats.request();
        let start = Instant::now();
        let idle = listener.as_ref().and_then(|l| l.timeout.idle);
        // Boxed: inline, this large future would make every HTTP connection's task as large.
        match Box::pin(tcp::forward(stream, app, idle)).await {
            Ok(s) => {
                if s.idle_timed_out {
                    stats.idle_timeout(crate::metrics::IdleKind::Tcp);
                }
                stats.response(200, start.elapsed())
            }
            Err(e) => {
                stats.connect_failure();
                tracing::warn!(app = %app, error = %e, "ingress tcp forwarding failed");
            }
        }
        return;
    }
    let conn = Arc::new(Conn {
        shared: shared.clone(),
        limit,
        peer,
        app,
        app_authority: http_forward::authority_for(app),
        h2: listener
            .as_ref()
            .is_some_and(|l| super::egress::speaks_h2(l.protocol)),
        timeout: listener.as_ref().and_then(|l| l.timeout.per_request),
        idle: listener.and_then(|l| l.timeout.idle),
        stats,
    });
    let handler = move |req| handle(conn.clone(), req);
    match stream {
        IngressStream::Plain(s) => super::serve_plain(&shared, s, builder, handler).await,
        // Boxed: hyper's connection state is large, and a TLS handshake costs far more than the
        // allocation; inline, it would make every plaintext connection's future as large.
        tls => Box::pin(super::serve_tls(&shared, tls, builder, handler)).await,
    }
}

/// One request of an ingress connection. Not an `async fn`, so that its future holds the
/// request's head once (see `egress::handle`).
fn handle(
    conn: Arc<Conn>,
    req: Request<RequestBody>,
) -> impl Future<Output = Response<Counted<ProxyBody>>> + Send + 'static {
    let (mut head, body) = req.into_parts();
    async move {
        let start = Instant::now();
        let started_at = SystemTime::now();
        let shared = &conn.shared;
        conn.stats.request();
        let _slot = match &conn.limit {
            Some(l) => match l.acquire().await {
                Some(p) => Some(p),
                None => {
                    shared.metrics.limit_hit(LimitKind::PoolOverflow);
                    let r = local_response(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "upstream connection pool overflow\n",
                    );
                    conn.stats.response(503, start.elapsed());
                    return r.map(|b| Counted::response(b, conn.stats.clone(), None));
                }
            },
            None => None,
        };
        let method = head.method.clone();
        let path = head.uri.path_and_query().cloned();
        let authority = super::egress::authority_of(&head);
        let hop = shared.tracer.begin(&mut head.headers);
        let grpc = crate::trace::span::is_grpc(&head.headers);
        if grpc {
            conn.stats.grpc_request();
        }
        let mut span = shared.tracer.start_span(
            hop,
            crate::trace::SpanStart {
                direction: crate::metrics::Direction::Ingress,
                start: started_at,
                method: &method,
                authority: authority
                    .as_ref()
                    .and_then(|a| a.to_str().ok())
                    .unwrap_or(""),
                path: path.as_ref().map(|p| p.as_str()).unwrap_or("/"),
                virtual_service: "",
                route: "",
                target_node: conn.stats.target_node(),
                endpoint: Some(conn.app),
                client: Some(conn.peer.ip()),
                grpc,
            },
        );
        http_forward::ensure_request_id(&mut head.headers);
        let (resp, flags) = match http_forward::prepare_request(&mut head, conn.peer.ip(), conn.app)
        {
            Err(_) => (
                local_response(StatusCode::BAD_REQUEST, "malformed request\n"),
                "DI",
            ),
            Ok(_) => {
                let body = crate::proxy::pool::UpstreamBody::client(Counted::request(
                    body,
                    conn.stats.clone(),
                    span.as_ref().and_then(PendingSpan::request_bytes),
                ));
                // Made in the `.await` expression: bound to a local first, the future would be
                // stored twice (see `egress::forward`).
                let res = match super::body::head_deadline(conn.timeout, conn.idle) {
                    Some((t, kind)) => {
                        tokio::time::timeout(t, shared.pool.send(&head, body, conn.h2))
                            .await
                            .map_err(|_| kind)
                    }
                    None => Ok(shared.pool.send(&head, body, conn.h2).await),
                };
                match res {
                    Err(kind) => kind.answer(&conn.stats),
                    Ok(Ok(r)) => {
                        let (mut parts, body) = r.into_parts();
                        http_forward::prepare_response(&mut parts.headers);
                        (Response::from_parts(parts, Either::Left(body)), "-")
                    }
                    Ok(Err(e)) if e.is_connect() => {
                        conn.stats.connect_failure();
                        tracing::warn!(error = %e, "app connect failure");
                        (
                            local_response(
                                StatusCode::SERVICE_UNAVAILABLE,
                                "upstream connect error\n",
                            ),
                            "UF",
                        )
                    }
                    Ok(Err(e)) => {
                        tracing::warn!(error = %e, "app request failed");
                        (
                            local_response(StatusCode::BAD_GATEWAY, "upstream request failed\n"),
                            "UC",
                        )
                    }
                }
            }
        };
        let status = resp.status().as_u16();
        conn.stats.response(status, start.elapsed());
        let cfg = shared.config.load();
        // As App Mesh's Envoy: no access log unless the virtual node configures one.
        if let Some(log) = cfg.as_ref().and_then(|c| c.access_log_path.as_ref()) {
            shared.access_log.write(
                log,
                &Entry {
                    start_time: access_log::epoch_secs(started_at),
                    direction: "ingress",
                    method: method.as_str(),
                    path: path.as_ref().map(|p| p.as_str()).unwrap_or("/"),
                    authority: authority
                        .as_ref()
                        .and_then(|a| a.to_str().ok())
                        .unwrap_or(""),
                    code: status,
                    bytes_received: 0,
                    bytes_sent: 0,
                    duration_ms: start.elapsed().as_secs_f64() * 1000.0,
                    upstream: conn.app_authority.as_str(),
                    virtual_service: "",
                    route: "",
                    target_node: cfg.as_ref().map(|c| c.table.node_name()).unwrap_or(""),
                    request_id: "",
                    flags,
                },
            );
        }
        if let Some(s) = span.as_mut() {
            s.respond(status, flags, 0);
        }
        resp.map(|b| Counted::response(b, conn.stats.clone(), span).with_idle(conn.idle))
    }
}
