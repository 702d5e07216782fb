//! Endpoint sets for the balancing, outlier, retry and fault tests: real HTTP/1.1 backends on
//! 127.0.0.1, 127.0.0.2, 127.0.0.3 … sharing one port, listed under one name in a hosts file the
//! agent's resolver reads (DNS `ENDPOINTS`), whose answers a test changes while they run (status,
//! delay, a number of failures to come), and which can be killed: listener closed and every open
//! connection reset (SO_LINGER 0).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use taskmesh_agent::discovery::Resolver;
use taskmesh_agent::{Agent, AgentHandle};
use tokio::net::{TcpListener, TcpSocket};
use tokio::task::AbortHandle;

use super::{World, admin_get};

/// The DNS name of the endpoint set in the hosts file.
pub const API_HOST: &str = "api.test";

/// One backend of a set.
pub struct Endpoint {
    pub addr: SocketAddr,
    hits: Arc<AtomicU64>,
    status: Arc<AtomicU16>,
    delay_ms: Arc<AtomicU64>,
    fail_next: Arc<AtomicU64>,
    conns: Arc<Mutex<Vec<AbortHandle>>>,
    accept: AbortHandle,
}

impl Endpoint {
    /// Requests answered so far.
    pub fn hits(&self) -> u64 {
        self.hits.load(Ordering::Relaxed)
    }
    /// The status of later answers (200 at start).
    pub fn set_status(&self, s: u16) {
        self.status.store(s, Ordering::Relaxed);
    }
    /// A delay before each answer.
    pub fn set_delay(&self, ms: u64) {
        self.delay_ms.store(ms, Ordering::Relaxed);
    }
    /// The next `n` requests are answered 503 (after their body was read).
    pub fn fail_next(&self, n: u64) {
        self.fail_next.store(n, Ordering::Relaxed);
    }
    /// Dies: the listener closes (connects are refused) and open connections are reset.
    pub fn kill(&self) {
        self.accept.abort();
        for c in self.conns.lock().unwrap().drain(..) {
            c.abort();
        }
    }
}

/// `n` endpoints on 127.0.0.1 … 127.0.0.n, one port.
pub async fn endpoint_set(n: usize) -> Vec<Endpoint> {
    'again: for _ in 0..50 {
        let first = bind("127.0.0.1:0".parse().unwrap()).await.expect("bind");
        let port = first.local_addr().unwrap().port();
        let mut listeners = vec![first];
        for i in 2..=n {
            match bind(format!("127.0.0.{i}:{port}").parse().unwrap()).await {
                Ok(l) => listeners.push(l),
                Err(_) => continue 'again,
            }
        }
        return listeners.into_iter().map(serve).collect();
    }
    panic!("no port free on 127.0.0.1-{n}");
}

async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let s = TcpSocket::new_v4()?;
    s.bind(addr)?;
    s.listen(1024)
}

fn serve(listener: TcpListener) -> Endpoint {
    let addr = listener.local_addr().unwrap();
    let hits = Arc::new(AtomicU64::new(0));
    let status = Arc::new(AtomicU16::new(200));
    let delay_ms = Arc::new(AtomicU64::new(0));
    let fail_next = Arc::new(AtomicU64::new(0));
    let conns: Arc<Mutex<Vec<AbortHandle>>> = Arc::default();
    let (h, st, d, f, c) = (
        hits.clone(),
        status.clone(),
        delay_ms.clone(),
        fail_next.clone(),
        conns.clone(),
    );
    let accept = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            // Dropping the stream (kill) then sends RST instead of FIN.
            let _ = socket2::SockRef::from(&stream).set_linger(Some(Duration::ZERO));
            let (h, st, d, f) = (h.clone(), st.clone(), d.clone(), f.clone());
            let task = tokio::spawn(async move {
                let svc = service_fn(move |req: Request<Incoming>| {
                    let (h, st, d, f) = (h.clone(), st.clone(), d.clone(), f.clone());
                    async move {
                        let delay = d.load(Ordering::Relaxed);
                        if delay > 0 {
                            tokio::time::sleep(Duration::from_millis(delay)).await;
                        }
                        let path = req.uri().path().to_string();
                        let body = req
                            .into_body()
                            .collect()
                            .await
                            .map(|b| b.to_bytes())
                            .unwrap_or_default();
                        h.fetch_add(1, Ordering::Relaxed);
                        let failing = f
                            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                                n.checked_sub(1)
                            })
                            .is_ok();
                        let code = if failing {
                            503
                        } else {
                            st.load(Ordering::Relaxed)
                        };
                        let body = if path == "/echo" {
                            body
                        } else {
                            Bytes::from(addr.ip().to_string())
                        };
                        let mut r = Response::new(Full::new(body));
                        *r.status_mut() =
                            StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
                        r.headers_mut()
                            .insert("x-endpoint", addr.ip().to_string().parse().unwrap());
                        Ok::<_, Infallible>(r)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
            c.lock().unwrap().push(task.abort_handle());
        }
    });
    Endpoint {
        addr,
        hits,
        status,
        delay_ms,
        fail_next,
        conns,
        accept: accept.abort_handle(),
    }
}

/// A hosts file in `dir` listing every endpoint under [`API_HOST`].
pub fn hosts_file(dir: &Path, eps: &[Endpoint]) -> PathBuf {
    let path = dir.join("hosts");
    let text: String = eps
        .iter()
        .map(|e| format!("{} {API_HOST}\n", e.addr.ip()))
        .collect();
    std::fs::write(&path, text).unwrap();
    path
}

/// A mesh: node `front` with backend `api.local`, served by router `api-vr` whose route `r`
/// sends everything to node `api` (`ENDPOINTS` discovery of [`API_HOST`] on `port`), with the
/// `api` listener's `outlierDetection` and the route's extra fields when given.
pub fn api_mesh(port: u16, outlier: Option<Value>, route_extras: Option<Value>) -> String {
    let mut listener = json!({"portMapping": {"port": port, "protocol": "http"}});
    if let Some(od) = outlier {
        listener["outlierDetection"] = od;
    }
    let mut route = json!({"match": {"prefix": "/"}, "action": {"weightedTargets": [{"virtualNode": "api", "weight": 1}]}});
    if let Some(Value::Object(extra)) = route_extras {
        for (k, v) in extra {
            route[k] = v;
        }
    }
    json!({
        "meshName": "m",
        "virtualNodes": [
            {"virtualNodeName": "front", "spec": {
                "listeners": [{"portMapping": {"port": 8080, "protocol": "http"}}],
                "serviceDiscovery": {"dns": {"hostname": "127.0.0.1"}},
                "backends": [{"virtualService": {"virtualServiceName": "api.local"}}]}},
            {"virtualNodeName": "api", "spec": {
                "listeners": [listener],
                "serviceDiscovery": {"dns": {"hostname": API_HOST, "responseType": "ENDPOINTS"}}}}
        ],
        "virtualServices": [{"virtualServiceName": "api.local",
            "spec": {"provider": {"virtualRouter": {"virtualRouterName": "api-vr"}}}}],
        "virtualRouters": [{"virtualRouterName": "api-vr",
            "spec": {"listeners": [{"portMapping": {"port": port, "protocol": "http"}}]}}],
        "routes": [{"virtualRouterName": "api-vr", "routeName": "r", "spec": {"httpRoute": route}}]
    })
    .to_string()
}

/// Starts node `front` of `world` with endpoints resolved through `hosts` only (DNS questions
/// would go to a closed port), and waits until LIVE.
pub async fn start_front(world: &World, hosts: &Path) -> AgentHandle {
    let resolver = Resolver::with_name_servers(&["127.0.0.1:9".parse().unwrap()], Some(hosts));
    let h = Agent::start_with_resolver(world.settings("front"), resolver)
        .await
        .expect("agent starts");
    assert!(
        h.wait_live(Duration::from_secs(10)).await,
        "agent not LIVE: {}",
        admin_get(h.admin_addr, "/server_info").await.1
    );
    h
}

/// `/clusters` entry of target node `node`.
pub async fn cluster_of(admin: SocketAddr, node: &str) -> Value {
    let v: Value = serde_json::from_str(&admin_get(admin, "/clusters").await.1).unwrap();
    v["clusters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["virtualNode"] == node)
        .cloned()
        .unwrap_or_else(|| panic!("no cluster for {node}: {v}"))
}

/// The `/clusters` host entry of `addr` in `cluster` (Null when not listed yet).
pub fn host_of(cluster: &Value, addr: SocketAddr) -> Value {
    cluster["hosts"]
        .as_array()
        .and_then(|hs| hs.iter().find(|h| h["address"] == addr.to_string()))
        .cloned()
        .unwrap_or(Value::Null)
}

/// The value of the Prometheus series `line_prefix` (`name{labels}`) on the admin port.
pub async fn prom_value(admin: SocketAddr, line_prefix: &str) -> Option<f64> {
    let text = admin_get(admin, "/stats/prometheus").await.1;
    text.lines()
        .find_map(|l| l.strip_prefix(line_prefix)?.trim().parse().ok())
}

/// Collects a response body as text.
pub async fn body_text(resp: Response<Incoming>) -> String {
    let b = resp.into_body().collect().await.unwrap().to_bytes();
    String::from_utf8_lossy(&b).into_owned()
}
