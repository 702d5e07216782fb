//! The admin server (127.0.0.1:9901 by default), Envoy-compatible where users rely on it:
//! `GET /ready`, `GET /server_info` (`"state": "LIVE"` …), `GET /stats/prometheus`
//! (`/stats?format=prometheus`), `GET /config_dump`, `GET /clusters` (JSON, with each target's
//! endpoints and outlier state; `?format=text` for Envoy's lines), `POST /drain_listeners`,
//! `POST /healthcheck/fail`, and `GET /graph` (the live mesh as DOT or Mermaid with per-edge
//! request rates and error ratios, [`graph`]). It keeps answering while the agent drains.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::UNIX_EPOCH;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::json;
use tokio::net::TcpListener;

pub mod graph;

use crate::agent::Shared;
use crate::state::State;

/// The agent's version.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Serves admin requests until aborted.
pub async fn serve(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            continue;
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| {
                let shared = shared.clone();
                async move { Ok::<_, Infallible>(handle(&shared, req)) }
            });
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

fn respond(
    status: StatusCode,
    ctype: &'static str,
    body: impl Into<Bytes>,
) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(header::CONTENT_TYPE, http::HeaderValue::from_static(ctype));
    r
}

fn json_response(status: StatusCode, v: &serde_json::Value) -> Response<Full<Bytes>> {
    let mut body = serde_json::to_vec_pretty(v).unwrap_or_default();
    body.push(b'\n');
    respond(status, "application/json", body)
}

/// Answers one admin request.
pub fn handle(shared: &Shared, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let path = req.uri().path();
    let query = req.uri().query().unwrap_or("");
    match (req.method(), path) {
        (&Method::GET | &Method::HEAD, "/ready") => {
            let state = shared.lifecycle.state();
            let status = if state == State::Live {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            respond(status, "text/plain", format!("{}\n", state.as_str()))
        }
        (&Method::GET, "/server_info") => json_response(StatusCode::OK, &server_info(shared)),
        (&Method::GET, "/stats/prometheus") => prometheus(shared),
        (&Method::GET, "/stats") if query.contains("format=prometheus") => prometheus(shared),
        (&Method::GET, "/config_dump") => {
            let cfg = shared.config.load();
            let v = match cfg.as_ref() {
                Some(c) => json!({
                    "version": c.version,
                    "source": c.source,
                    "loadedAt": c.loaded_at.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0),
                    "node": {"mesh": shared.node.mesh, "virtualNode": shared.node.node},
                    "document": c.document,
                }),
                None => json!({"version": null, "source": shared.config_uri, "document": null}),
            };
            json_response(StatusCode::OK, &v)
        }
        (&Method::GET, "/clusters") if query.contains("format=text") => {
            respond(StatusCode::OK, "text/plain", clusters_text(shared))
        }
        (&Method::GET, "/clusters") => json_response(StatusCode::OK, &clusters(shared)),
        (&Method::GET, "/graph") => match graph::render(shared, query) {
            Ok((ctype, text)) => respond(StatusCode::OK, ctype, text),
            Err(why) => respond(StatusCode::SERVICE_UNAVAILABLE, "text/plain", why),
        },
        (&Method::POST, "/drain_listeners") => {
            shared.lifecycle.drain("POST /drain_listeners", true);
            respond(StatusCode::OK, "text/plain", "OK\n")
        }
        (&Method::POST, "/healthcheck/fail") => {
            shared.lifecycle.drain("POST /healthcheck/fail", false);
            respond(StatusCode::OK, "text/plain", "OK\n")
        }
        (
            _,
            "/ready" | "/server_info" | "/stats/prometheus" | "/config_dump" | "/clusters"
            | "/drain_listeners" | "/healthcheck/fail" | "/graph",
        ) => respond(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "method not allowed\n",
        ),
        _ => respond(
            StatusCode::NOT_FOUND,
            "text/plain",
            "admin endpoints: /ready /server_info /stats/prometheus /config_dump /clusters /graph POST /drain_listeners POST /healthcheck/fail\n",
        ),
    }
}

fn prometheus(shared: &Shared) -> Response<Full<Bytes>> {
    let state = match shared.lifecycle.state() {
        State::Live => 0,
        State::Draining => 1,
        State::Initializing => 2,
    };
    let mut text = shared.metrics.render(state, shared.started.elapsed());
    // Counters owned by the access log and the resolver rather than the metrics registry.
    use std::fmt::Write as _;
    let pool = shared.pool.http1().stats();
    let _ = write!(
        text,
        "# HELP taskmesh_access_log_dropped_total Access-log lines dropped because stdout or the log file could not keep up.\n\
         # TYPE taskmesh_access_log_dropped_total counter\n\
         taskmesh_access_log_dropped_total {}\n\
         # HELP taskmesh_dns_refresh_failures_total Background DNS refreshes that failed (the last good answer was kept).\n\
         # TYPE taskmesh_dns_refresh_failures_total counter\n\
         taskmesh_dns_refresh_failures_total {}\n\
         # HELP taskmesh_cloudmap_refresh_failures_total Background Cloud Map refreshes that failed (the last good instances were kept).\n\
         # TYPE taskmesh_cloudmap_refresh_failures_total counter\n\
         taskmesh_cloudmap_refresh_failures_total {}\n\
         # HELP taskmesh_upstream_http1_connections_opened_total Plaintext HTTP/1.1 upstream connections opened.\n\
         # TYPE taskmesh_upstream_http1_connections_opened_total counter\n\
         taskmesh_upstream_http1_connections_opened_total {}\n\
         # HELP taskmesh_upstream_http1_requests_reused_total Plaintext HTTP/1.1 upstream requests sent on a kept-alive connection.\n\
         # TYPE taskmesh_upstream_http1_requests_reused_total counter\n\
         taskmesh_upstream_http1_requests_reused_total {}\n\
         # HELP taskmesh_upstream_http1_connections_idle Plaintext HTTP/1.1 upstream connections idle in the keep-alive pool.\n\
         # TYPE taskmesh_upstream_http1_connections_idle gauge\n\
         taskmesh_upstream_http1_connections_idle {}\n",
        shared.access_log.dropped(),
        shared.resolver.refresh_failures(),
        shared.resolver.cloud_map().refresh_failures(),
        pool.opened,
        pool.reused,
        pool.idle,
    );
    shared.clusters.render_prometheus(&mut text);
    respond(StatusCode::OK, "text/plain; version=0.0.4", text)
}

/// The `/server_info` document.
pub fn server_info(shared: &Shared) -> serde_json::Value {
    let state = shared.lifecycle.state();
    let cfg = shared.config.load();
    let reason = shared.lifecycle.reason();
    let last_error = shared.last_error.lock().ok().and_then(|e| e.clone());
    json!({
        "state": state.as_str(),
        "version": VERSION,
        "uptime_current_epoch": format!("{}s", shared.started.elapsed().as_secs()),
        "uptime_seconds": shared.started.elapsed().as_secs(),
        "node": {
            "id": format!("mesh/{}/virtualNode/{}", shared.node.mesh, shared.node.node),
            "mesh": shared.node.mesh,
            "virtualNode": shared.node.node,
        },
        "config": {
            "source": cfg.as_ref().map(|c| c.source.clone()).unwrap_or_else(|| shared.config_uri.clone()),
            "version": cfg.as_ref().map(|c| c.version.clone()),
            "reloads_ok": shared.metrics.ok_count(),
            "reloads_rejected": shared.metrics.rejected_count(),
            "last_error": last_error,
        },
        "not_live_reason": if state == State::Live { serde_json::Value::Null } else { json!(reason) },
    })
}

/// Envoy's text `/clusters` (`?format=text`): `<cluster>::<host>::<stat>::<value>` lines.
fn clusters_text(shared: &Shared) -> String {
    let cfg = shared.config.load();
    let mesh = cfg.as_ref().map(|c| c.table.mesh_name().to_string());
    shared.clusters.admin_text(|node, port| {
        let protocol = cfg
            .as_ref()
            .and_then(|c| c.table.targets().iter().find(|t| &*t.name == node))
            .and_then(|t| t.listener(port))
            .map_or("http", |l| l.protocol.as_str());
        format!(
            "cds_egress_{}_{node}_{protocol}_{port}",
            mesh.as_deref().unwrap_or("")
        )
    })
}

fn clusters(shared: &Shared) -> serde_json::Value {
    let cfg = shared.config.load();
    let Some(c) = cfg.as_ref() else {
        return json!({"clusters": []});
    };
    let clusters: Vec<_> = c
        .table
        .targets()
        .iter()
        .map(|t| {
            let discovery = match &t.discovery {
                taskmesh_mesh::Discovery::Dns { hostname, response_type } => json!({
                    "dns": {"hostname": &**hostname, "responseType": format!("{response_type:?}")}
                }),
                taskmesh_mesh::Discovery::CloudMap { namespace, service, .. } => json!({
                    "awsCloudMap": {"namespaceName": &**namespace, "serviceName": &**service}
                }),
                taskmesh_mesh::Discovery::None => serde_json::Value::Null,
            };
            let mut v = json!({
                "name": format!("cds_egress_{}_{}_{}_{}", c.table.mesh_name(), t.name, t.protocol.as_str(), t.port),
                "virtualNode": &*t.name,
                "port": t.port,
                "protocol": t.protocol.as_str(),
                "serviceDiscovery": discovery,
            });
            // Endpoints, their counters and outlier state (`crate::cluster::stats`).
            if let (Some(obj), serde_json::Value::Object(extra)) =
                (v.as_object_mut(), shared.clusters.admin_json(&t.name))
            {
                obj.extend(extra);
            }
            v
        })
        .collect();
    json!({"clusters": clusters, "egressFilter": format!("{:?}", c.table.egress_filter())})
}
