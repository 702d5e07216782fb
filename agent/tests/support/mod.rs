//! Test support for the agent's integration tests: real HTTP/TCP backends on ephemeral ports,
//! a keep-alive HTTP client, mesh-document writers, agent start-up helpers, and a moto server.
#![allow(dead_code)]

pub mod alloc;
pub mod endpoints;
pub mod moto;
pub mod netns;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use taskmesh_agent::{Agent, AgentHandle, Settings};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// A running HTTP backend.
pub struct Backend {
    pub addr: SocketAddr,
    pub name: String,
    pub hits: Arc<AtomicU64>,
}

/// Starts an HTTP/1.1 backend that answers every request with `200`, body = its name (or the
/// request body), `x-backend: <name>`, `x-path`, and every request header echoed as
/// `x-h-<name>`. `/slow/<ms>` waits that long first; `/status/<code>` answers <code>;
/// `/flaky` answers 503 except on every third request to this backend.
pub async fn http_backend(name: &str) -> Backend {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind backend");
    http_backend_on(listener, name)
}

/// [`http_backend`] on an already bound listener (e.g. one made inside a network namespace).
pub fn http_backend_on(listener: TcpListener, name: &str) -> Backend {
    let addr = listener.local_addr().unwrap();
    let hits = Arc::new(AtomicU64::new(0));
    let name_s = name.to_string();
    let h = hits.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let name = name_s.clone();
            let hits = h.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req: Request<Incoming>| {
                    let name = name.clone();
                    let hits = hits.clone();
                    async move {
                        let n = hits.fetch_add(1, Ordering::Relaxed);
                        Ok::<_, Infallible>(answer(&name, n, req).await)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    Backend {
        addr,
        name: name.to_string(),
        hits,
    }
}

async fn answer(name: &str, hit: u64, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let path = req.uri().path().to_string();
    let seen: Vec<(String, http::HeaderValue)> = req
        .headers()
        .iter()
        .map(|(k, v)| (format!("x-h-{k}"), v.clone()))
        .collect();
    let status = if let Some(ms) = path.strip_prefix("/slow/") {
        tokio::time::sleep(Duration::from_millis(ms.parse().unwrap_or(0))).await;
        StatusCode::OK
    } else if path == "/flaky" && hit % 3 != 2 {
        StatusCode::SERVICE_UNAVAILABLE
    } else if let Some(code) = path.strip_prefix("/status/") {
        StatusCode::from_u16(code.parse().unwrap_or(500))
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    } else {
        StatusCode::OK
    };
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let mut r = Response::new(Full::new(if body.is_empty() {
        Bytes::from(name.to_string())
    } else {
        body
    }));
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert("x-backend", name.parse().unwrap());
    h.insert("x-path", path.parse().unwrap());
    for (k, v) in seen {
        if let Ok(k) = http::HeaderName::from_bytes(k.as_bytes()) {
            h.append(k, v);
        }
    }
    h.insert("keep-alive", "timeout=5".parse().unwrap());
    h.insert("x-drop-me", "1".parse().unwrap());
    h.insert("connection", "x-drop-me".parse().unwrap());
    r
}

/// A TCP backend that writes `greeting` then echoes everything back.
pub async fn tcp_echo_backend(greeting: &'static str) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    tcp_echo_on(listener, greeting)
}

/// [`tcp_echo_backend`] on an already bound listener.
pub fn tcp_echo_on(listener: TcpListener, greeting: &'static str) -> SocketAddr {
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let _ = s.write_all(greeting.as_bytes()).await;
                let mut buf = [0u8; 4096];
                loop {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            if s.write_all(&buf[..n]).await.is_err() {
                                break;
                            }
                        }
                    }
                }
            });
        }
    });
    addr
}

/// Keep-alive HTTP client used to talk to the agent.
#[derive(Clone)]
pub struct HttpClient {
    client: Client<HttpConnector, Full<Bytes>>,
}

/// A collected response.
pub struct Reply {
    pub status: StatusCode,
    pub headers: http::HeaderMap,
    pub body: String,
}

impl Reply {
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }
}

impl Default for HttpClient {
    fn default() -> Self {
        HttpClient::new()
    }
}

impl HttpClient {
    pub fn new() -> HttpClient {
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build_http();
        HttpClient { client }
    }

    /// Sends `req` to `to` (the agent's listener), keeping its Host header.
    pub async fn send(
        &self,
        to: SocketAddr,
        mut req: Request<Full<Bytes>>,
    ) -> Result<Reply, String> {
        let pq = req
            .uri()
            .path_and_query()
            .map(|p| p.as_str().to_string())
            .unwrap_or("/".into());
        *req.uri_mut() = format!("http://{to}{pq}")
            .parse()
            .map_err(|e| format!("{e}"))?;
        let resp = tokio::time::timeout(Duration::from_secs(20), self.client.request(req))
            .await
            .map_err(|_| "timed out".to_string())?
            .map_err(|e| format!("{e:?}"))?;
        let (parts, body) = resp.into_parts();
        let body = body.collect().await.map_err(|e| format!("{e}"))?.to_bytes();
        Ok(Reply {
            status: parts.status,
            headers: parts.headers,
            body: String::from_utf8_lossy(&body).into_owned(),
        })
    }

    /// GET `path` with `Host: host` through `to`.
    pub async fn get(&self, to: SocketAddr, host: &str, path: &str) -> Reply {
        let req = Request::get(path)
            .header("host", host)
            .body(Full::new(Bytes::new()))
            .unwrap();
        self.send(to, req)
            .await
            .unwrap_or_else(|e| panic!("GET {host}{path} via {to}: {e}"))
    }
}

/// A plain GET to an admin endpoint; returns (status, body).
pub async fn admin_get(admin: SocketAddr, path: &str) -> (StatusCode, String) {
    admin_call(admin, http::Method::GET, path).await
}

/// An admin request.
pub async fn admin_call(
    admin: SocketAddr,
    method: http::Method,
    path: &str,
) -> (StatusCode, String) {
    let client: Client<HttpConnector, Empty<Bytes>> =
        Client::builder(TokioExecutor::new()).build_http();
    let req = Request::builder()
        .method(method)
        .uri(format!("http://{admin}{path}"))
        .body(Empty::new())
        .unwrap();
    let resp = client.request(req).await.expect("admin request");
    let status = resp.status();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// Writes `text` to `path` atomically (temporary file + rename), as config tools do.
pub fn write_atomic(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp-write");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// Settings for an in-process agent on ephemeral ports.
pub fn settings(node: &str, config: &str, cache: &Path) -> Settings {
    let mut s = Settings::new(format!("mesh/m/virtualNode/{node}"), config);
    s.listen_addr = "127.0.0.1".parse().unwrap();
    s.ingress_port = 0;
    s.egress_port = 0;
    s.admin_addr = Some("127.0.0.1:0".into());
    s.poll_seconds = 0;
    s.drain_seconds = 5;
    s.cache = cache.to_path_buf();
    s
}

/// A test world: a temp dir with the mesh document and cache.
pub struct World {
    pub dir: tempfile::TempDir,
    pub doc: PathBuf,
    pub cache: PathBuf,
}

impl World {
    pub fn new(doc: &str) -> World {
        let dir = tempfile::tempdir().unwrap();
        let docp = dir.path().join("mesh.yaml");
        write_atomic(&docp, doc);
        let cache = dir.path().join("cache/last-good.json");
        World {
            dir,
            doc: docp,
            cache,
        }
    }

    pub fn uri(&self) -> String {
        format!("file://{}", self.doc.display())
    }

    /// The agent binary as node `node` of this world's document: a clean environment, the
    /// document and cache of this world, listeners on 127.0.0.1 with kernel-chosen ports
    /// (override `TASKMESH_*_PORT` / `ENVOY_ADMIN_ACCESS_PORT` to pick them).
    pub fn agent_command(&self, node: &str) -> std::process::Command {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_taskmesh-agent"));
        cmd.env_clear()
            .env("APPMESH_RESOURCE_ARN", format!("mesh/m/virtualNode/{node}"))
            .env("TASKMESH_CONFIG", self.uri())
            .env("TASKMESH_CACHE", &self.cache)
            .env("TASKMESH_LISTEN_ADDR", "127.0.0.1")
            .env("TASKMESH_INGRESS_PORT", "0")
            .env("TASKMESH_EGRESS_PORT", "0")
            .env("ENVOY_ADMIN_ACCESS_PORT", "0");
        cmd
    }

    pub fn settings(&self, node: &str) -> Settings {
        settings(node, &self.uri(), &self.cache)
    }

    /// Starts an agent for `node` and waits until LIVE.
    pub async fn start(&self, node: &str) -> AgentHandle {
        let h = Agent::start(self.settings(node))
            .await
            .expect("agent starts");
        assert!(
            h.wait_live(Duration::from_secs(10)).await,
            "agent not LIVE: {}",
            admin_get(h.admin_addr, "/server_info").await.1
        );
        h
    }
}

/// Waits until `f` is true (polling), or panics with `what`.
pub async fn eventually<F, Fut>(what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..200 {
        if f().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for: {what}");
}

/// A virtual node YAML entry listening on `port` and found at 127.0.0.1.
pub fn node_yaml(name: &str, port: u16, backends: &[&str]) -> String {
    let mut s = format!(
        "  - virtualNodeName: {name}\n    spec:\n      listeners: [{{portMapping: {{port: {port}, protocol: http}}}}]\n      serviceDiscovery: {{dns: {{hostname: 127.0.0.1}}}}\n"
    );
    if !backends.is_empty() {
        s.push_str("      backends:\n");
        for b in backends {
            s.push_str(&format!(
                "        - virtualService: {{virtualServiceName: {b}}}\n"
            ));
        }
    }
    s
}

/// Builds a mesh document (JSON) for tests.
pub struct DocBuilder {
    doc: serde_json::Value,
}

impl DocBuilder {
    pub fn new(egress: &str) -> DocBuilder {
        DocBuilder {
            doc: serde_json::json!({"meshName": "m", "spec": {"egressFilter": {"type": egress}},
                "virtualServices": [], "virtualRouters": [], "routes": [], "virtualNodes": []}),
        }
    }

    fn push(&mut self, key: &str, v: serde_json::Value) {
        self.doc[key].as_array_mut().unwrap().push(v);
    }

    /// A node at 127.0.0.1:`port` (protocol http or tcp) with `backends`.
    pub fn node(mut self, name: &str, port: u16, protocol: &str, backends: &[&str]) -> Self {
        let backends: Vec<_> = backends
            .iter()
            .map(|b| serde_json::json!({"virtualService": {"virtualServiceName": b}}))
            .collect();
        self.push(
            "virtualNodes",
            serde_json::json!({"virtualNodeName": name, "spec": {
            "listeners": [{"portMapping": {"port": port, "protocol": protocol}}],
            "serviceDiscovery": {"dns": {"hostname": "127.0.0.1"}},
            "backends": backends}}),
        );
        self
    }

    /// A virtual service provided by router `router` listening on `port`.
    pub fn routed_service(
        mut self,
        service: &str,
        router: &str,
        port: u16,
        protocol: &str,
    ) -> Self {
        self.push(
            "virtualServices",
            serde_json::json!({"virtualServiceName": service,
            "spec": {"provider": {"virtualRouter": {"virtualRouterName": router}}}}),
        );
        self.push(
            "virtualRouters",
            serde_json::json!({"virtualRouterName": router,
            "spec": {"listeners": [{"portMapping": {"port": port, "protocol": protocol}}]}}),
        );
        self
    }

    /// A virtual service provided straight by a node.
    pub fn node_service(mut self, service: &str, node: &str) -> Self {
        self.push(
            "virtualServices",
            serde_json::json!({"virtualServiceName": service,
            "spec": {"provider": {"virtualNode": {"virtualNodeName": node}}}}),
        );
        self
    }

    /// An httpRoute with `match` and weighted `targets`.
    pub fn http_route(
        mut self,
        router: &str,
        name: &str,
        priority: Option<u32>,
        m: serde_json::Value,
        targets: &[(&str, u32)],
    ) -> Self {
        let targets: Vec<_> = targets
            .iter()
            .map(|(n, w)| serde_json::json!({"virtualNode": n, "weight": w}))
            .collect();
        let mut spec =
            serde_json::json!({"httpRoute": {"match": m, "action": {"weightedTargets": targets}}});
        if let Some(p) = priority {
            spec["priority"] = serde_json::json!(p);
        }
        self.push(
            "routes",
            serde_json::json!({"virtualRouterName": router, "routeName": name, "spec": spec}),
        );
        self
    }

    /// A tcpRoute to weighted `targets`.
    pub fn tcp_route(mut self, router: &str, name: &str, targets: &[(&str, u32)]) -> Self {
        let targets: Vec<_> = targets
            .iter()
            .map(|(n, w)| serde_json::json!({"virtualNode": n, "weight": w}))
            .collect();
        self.push(
            "routes",
            serde_json::json!({"virtualRouterName": router, "routeName": name,
            "spec": {"tcpRoute": {"action": {"weightedTargets": targets}}}}),
        );
        self
    }

    pub fn json(&self) -> String {
        serde_json::to_string_pretty(&self.doc).unwrap()
    }
}
