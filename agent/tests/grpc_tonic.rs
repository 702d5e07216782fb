//! gRPC through egress against real tonic servers and clients (h2c): the `grpc.health.v1`
//! service of `tonic-health` as the target node, a tonic `HealthClient` calling the virtual
//! service through the agent. Unary calls, a real NOT_FOUND status in the trailers, server
//! streaming (`Watch`), routing on `serviceName`/`methodName`, and retries on UNAVAILABLE with
//! the status each client got counted in Prometheus.

mod support;

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use futures::Stream;
use serde_json::{Value, json};
use support::endpoints::prom_value;
use support::{World, http_backend};
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Channel, Endpoint, Server};
use tonic::{Code, Request, Response, Status};
use tonic_health::ServingStatus;
use tonic_health::pb::health_check_response::ServingStatus as PbStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::health_server::{Health, HealthServer};
use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};
use tonic_health::server::HealthReporter;

const HEALTH: &str = "grpc.health.v1.Health";
const CALL: Duration = Duration::from_secs(20);

/// Serves `svc` with tonic on a fresh loopback port; returns its address.
async fn serve<T: Health>(svc: HealthServer<T>) -> SocketAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        Server::builder()
            .serve_with_incoming(svc, TcpIncoming::from(l))
            .await
            .expect("tonic server");
    });
    addr
}

/// A real `tonic-health` server: `""` is SERVING, `grpc.health.v1.Health` reports `status`.
async fn health_server(status: ServingStatus) -> (SocketAddr, HealthReporter) {
    let (reporter, svc) = tonic_health::server::health_reporter();
    reporter.set_service_status(HEALTH, status).await;
    (serve(svc).await, reporter)
}

/// A tonic client on a connection to the agent's egress whose requests carry
/// `:authority: <service>`, as an application in explicit mode addresses the virtual service.
async fn client(egress: SocketAddr, service: &str) -> HealthClient<Channel> {
    let channel = Endpoint::from_shared(format!("http://{egress}"))
        .unwrap()
        .origin(format!("http://{service}").parse().unwrap())
        .connect_timeout(CALL)
        .timeout(CALL)
        .connect()
        .await
        .expect("h2c connection to the agent's egress");
    HealthClient::new(channel)
}

fn req(service: &str) -> HealthCheckRequest {
    HealthCheckRequest {
        service: service.to_string(),
    }
}

async fn check(c: &mut HealthClient<Channel>, service: &str) -> Result<PbStatus, Status> {
    let r = c.check(req(service)).await?;
    Ok(r.into_inner().status())
}

/// The first message of a `Watch` call, and the stream for the next ones.
async fn watch(
    c: &mut HealthClient<Channel>,
    service: &str,
) -> (PbStatus, tonic::Streaming<HealthCheckResponse>) {
    let mut stream = c.watch(req(service)).await.expect("watch").into_inner();
    let first = next(&mut stream).await;
    (first, stream)
}

async fn next(stream: &mut tonic::Streaming<HealthCheckResponse>) -> PbStatus {
    tokio::time::timeout(CALL, stream.message())
        .await
        .expect("a watch message in time")
        .expect("watch stream ok")
        .expect("watch stream still open")
        .status()
}

/// `front` (explicit egress) with backend `health.local`, a virtual service on router `vr`
/// whose listener is `grpc`; `nodes` are (name, port) with `grpc` listeners and `routes` the
/// router's routes as given.
fn mesh(app: u16, nodes: &[(&str, u16)], routes: Vec<Value>) -> String {
    let mut vns = vec![json!({"virtualNodeName": "front", "spec": {
        "listeners": [{"portMapping": {"port": app, "protocol": "http"}}],
        "serviceDiscovery": {"dns": {"hostname": "127.0.0.1"}},
        "backends": [{"virtualService": {"virtualServiceName": "health.local"}}]}})];
    for (name, port) in nodes {
        vns.push(json!({"virtualNodeName": name, "spec": {
            "listeners": [{"portMapping": {"port": port, "protocol": "grpc"}}],
            "serviceDiscovery": {"dns": {"hostname": "127.0.0.1"}}}}));
    }
    json!({
        "meshName": "m",
        "virtualNodes": vns,
        "virtualServices": [{"virtualServiceName": "health.local",
            "spec": {"provider": {"virtualRouter": {"virtualRouterName": "vr"}}}}],
        "virtualRouters": [{"virtualRouterName": "vr",
            "spec": {"listeners": [{"portMapping": {"port": nodes[0].1, "protocol": "grpc"}}]}}],
        "routes": routes,
    })
    .to_string()
}

fn grpc_route(
    name: &str,
    priority: u32,
    matcher: Value,
    node: &str,
    retry: Option<Value>,
) -> Value {
    let mut route = json!({"match": matcher,
        "action": {"weightedTargets": [{"virtualNode": node, "weight": 1}]}});
    if let Some(p) = retry {
        route["retryPolicy"] = p;
    }
    json!({"virtualRouterName": "vr", "routeName": name,
        "spec": {"priority": priority, "grpcRoute": route}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tonic_health_check_status_and_watch_through_egress() {
    let app = http_backend("app").await;
    let (addr, reporter) = health_server(ServingStatus::Serving).await;
    let routes = vec![grpc_route(
        "all",
        0,
        json!({"serviceName": HEALTH}),
        "health",
        None,
    )];
    let world = World::new(&mesh(app.addr.port(), &[("health", addr.port())], routes));
    let agent = world.start("front").await;
    let mut c = client(agent.egress_addr, "health.local").await;

    assert_eq!(check(&mut c, "").await.unwrap(), PbStatus::Serving);
    assert_eq!(check(&mut c, HEALTH).await.unwrap(), PbStatus::Serving);
    // The real server's NOT_FOUND (a trailers-only answer from tonic) reaches the client.
    let err = check(&mut c, "unknown.Service").await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err:?}");

    // Server streaming: the current status, then the change the reporter makes.
    let (first, mut stream) = watch(&mut c, HEALTH).await;
    assert_eq!(first, PbStatus::Serving);
    reporter
        .set_service_status(HEALTH, ServingStatus::NotServing)
        .await;
    assert_eq!(next(&mut stream).await, PbStatus::NotServing);
    reporter
        .set_service_status(HEALTH, ServingStatus::Serving)
        .await;
    assert_eq!(next(&mut stream).await, PbStatus::Serving);
    drop(stream);

    // The answers per status as the client got them: 3 OK checks … plus the NOT_FOUND (5).
    let r = "direction=\"egress\",virtual_service=\"health.local\",route=\"all\",target_node=\"health\"";
    let nf = format!("taskmesh_grpc_responses_total{{{r},grpc_status=\"5\"}}");
    assert_eq!(prom_value(agent.admin_addr, &nf).await, Some(1.0));
    agent.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_routes_match_service_and_method_names() {
    let app = http_backend("app").await;
    let (checker, _r1) = health_server(ServingStatus::Serving).await;
    let (watcher, _r2) = health_server(ServingStatus::NotServing).await;
    let routes = vec![
        grpc_route(
            "check",
            0,
            json!({"serviceName": HEALTH, "methodName": "Check"}),
            "checker",
            None,
        ),
        grpc_route("rest", 1, json!({"serviceName": HEALTH}), "watcher", None),
    ];
    let nodes = [("checker", checker.port()), ("watcher", watcher.port())];
    let world = World::new(&mesh(app.addr.port(), &nodes, routes));
    let agent = world.start("front").await;
    let mut c = client(agent.egress_addr, "health.local").await;
    for _ in 0..3 {
        // Check matches the method route: the SERVING server answers …
        assert_eq!(check(&mut c, HEALTH).await.unwrap(), PbStatus::Serving);
        // … Watch only the service route: the NOT_SERVING server answers.
        let (first, stream) = watch(&mut c, HEALTH).await;
        assert_eq!(first, PbStatus::NotServing);
        drop(stream);
    }
    let r = "direction=\"egress\",virtual_service=\"health.local\"";
    let ok = |route: &str, node: &str| {
        format!(
            "taskmesh_grpc_responses_total{{{r},route=\"{route}\",target_node=\"{node}\",grpc_status=\"0\"}}"
        )
    };
    assert_eq!(
        prom_value(agent.admin_addr, &ok("check", "checker")).await,
        Some(3.0)
    );
    agent.shutdown().await;
}

/// `grpc.health.v1.Health` answering UNAVAILABLE to its first `fail` checks, SERVING after.
struct Flaky {
    calls: Arc<AtomicU32>,
    fail: u32,
}

#[tonic::async_trait]
impl Health for Flaky {
    async fn check(
        &self,
        _: Request<HealthCheckRequest>,
    ) -> Result<Response<HealthCheckResponse>, Status> {
        if self.calls.fetch_add(1, Ordering::SeqCst) < self.fail {
            return Err(Status::unavailable("warming up"));
        }
        Ok(Response::new(HealthCheckResponse {
            status: PbStatus::Serving as i32,
        }))
    }

    type WatchStream =
        Pin<Box<dyn Stream<Item = Result<HealthCheckResponse, Status>> + Send + 'static>>;

    async fn watch(
        &self,
        _: Request<HealthCheckRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        Err(Status::unimplemented("watch"))
    }
}

async fn flaky(fail: u32) -> (SocketAddr, Arc<AtomicU32>) {
    let calls = Arc::new(AtomicU32::new(0));
    let svc = HealthServer::new(Flaky {
        calls: calls.clone(),
        fail,
    });
    (serve(svc).await, calls)
}

async fn retry_case(fail: u32, retry: Option<Value>) -> (Result<PbStatus, Status>, u32, String) {
    let app = http_backend("app").await;
    let (addr, calls) = flaky(fail).await;
    let routes = vec![grpc_route(
        "r",
        0,
        json!({"serviceName": HEALTH}),
        "flaky",
        retry,
    )];
    let world = World::new(&mesh(app.addr.port(), &[("flaky", addr.port())], routes));
    let agent = world.start("front").await;
    let mut c = client(agent.egress_addr, "health.local").await;
    let got = check(&mut c, HEALTH).await;
    let (_, metrics) = support::admin_get(agent.admin_addr, "/stats/prometheus").await;
    agent.shutdown().await;
    (got, calls.load(Ordering::SeqCst), metrics)
}

fn answers(metrics: &str, code: &str) -> Option<f64> {
    let prefix = format!(
        "taskmesh_grpc_responses_total{{direction=\"egress\",virtual_service=\"health.local\",\
         route=\"r\",target_node=\"flaky\",grpc_status=\"{code}\"}}"
    );
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(prefix.as_str()))
        .map(|v| v.trim().parse().expect("a number"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_policy_retries_tonic_unavailable() {
    // No retry policy on the route: App Mesh's default (2 retries on UNAVAILABLE) applies.
    let (got, calls, metrics) = retry_case(2, None).await;
    assert_eq!(got.unwrap(), PbStatus::Serving);
    assert_eq!(calls, 3, "2 UNAVAILABLE + 1 SERVING");
    assert_eq!(answers(&metrics, "0"), Some(1.0), "{metrics}");
    assert_eq!(
        answers(&metrics, "14"),
        None,
        "retried attempts are not answers"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zero_max_retries_returns_tonic_unavailable() {
    let policy = json!({"maxRetries": 0, "perRetryTimeout": {"value": 5, "unit": "s"},
        "grpcRetryEvents": ["unavailable"]});
    let (got, calls, metrics) = retry_case(2, Some(policy)).await;
    let err = got.unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    assert_eq!(calls, 1, "no retry");
    assert_eq!(answers(&metrics, "14"), Some(1.0), "{metrics}");
    assert_eq!(answers(&metrics, "0"), None);
}
