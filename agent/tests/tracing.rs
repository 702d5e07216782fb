//! Tracing through real agents on real sockets: an OTLP/HTTP receiver in the test (a hyper
//! server decoding `ExportTraceServiceRequest` with the official `opentelemetry-proto` types)
//! checks spans, attributes and parent/child ids across two hops (client -> agent "front"
//! egress -> agent "back" ingress -> app, the app seeing both trace headers); a UDP listener
//! receives the X-Ray segments of the real `taskmesh-agent` binary configured with the
//! `aws-appmesh-envoy` variable names, each validated by Python's `jsonschema` against AWS's
//! segment document schema (tests/schemas/xray-segmentdocument-schema-v1.0.0.json); sampling
//! (incoming `Sampled=0`, rate 0, rate 1) and tracing-off behaviour; and a collector that never
//! answers, which must cost dropped (counted) spans and no slow requests.

mod support;

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{KeyValue, any_value::Value as Av};
use opentelemetry_proto::tonic::trace::v1::{Span, span::SpanKind};
use prost::Message;
use serde_json::{Value, json};
use support::{HttpClient, World, admin_get, http_backend};
use taskmesh_agent::{Agent, AgentHandle};
use tokio::net::{TcpListener, UdpSocket};

/// One span with its resource's attributes.
#[derive(Clone, Debug)]
struct Got {
    resource: Vec<KeyValue>,
    span: Span,
}

fn attr<'a>(kvs: &'a [KeyValue], key: &str) -> Option<&'a Av> {
    kvs.iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
        .and_then(|v| v.value.as_ref())
}

fn attr_str(kvs: &[KeyValue], key: &str) -> String {
    match attr(kvs, key) {
        Some(Av::StringValue(s)) => s.clone(),
        other => panic!("attribute {key}: {other:?} in {kvs:?}"),
    }
}

fn attr_int(kvs: &[KeyValue], key: &str) -> i64 {
    match attr(kvs, key) {
        Some(Av::IntValue(i)) => *i,
        other => panic!("attribute {key}: {other:?} in {kvs:?}"),
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// An OTLP/HTTP receiver on 127.0.0.1 (`hang`: accepts requests and never answers).
struct OtlpReceiver {
    addr: SocketAddr,
    spans: Arc<Mutex<Vec<Got>>>,
    posts: Arc<Mutex<u64>>,
}

impl OtlpReceiver {
    async fn start(hang: bool) -> OtlpReceiver {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let spans = Arc::new(Mutex::new(Vec::new()));
        let posts = Arc::new(Mutex::new(0u64));
        let (s, p) = (spans.clone(), posts.clone());
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let (s, p) = (s.clone(), p.clone());
                tokio::spawn(async move {
                    let svc = service_fn(move |req: Request<Incoming>| {
                        let (s, p) = (s.clone(), p.clone());
                        async move { Ok::<_, Infallible>(receive(req, s, p, hang).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        OtlpReceiver { addr, spans, posts }
    }

    fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn spans(&self) -> Vec<Got> {
        self.spans.lock().unwrap().clone()
    }

    /// Waits until a span satisfies `pred`; returns every span received so far.
    async fn wait_for(&self, what: &str, pred: impl Fn(&Got) -> bool) -> Vec<Got> {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let all = self.spans();
            if all.iter().any(&pred) {
                return all;
            }
            assert!(
                Instant::now() < deadline,
                "no span for {what} within 15 s; got {all:#?}"
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
}

async fn receive(
    req: Request<Incoming>,
    spans: Arc<Mutex<Vec<Got>>>,
    posts: Arc<Mutex<u64>>,
    hang: bool,
) -> Response<Full<Bytes>> {
    *posts.lock().unwrap() += 1;
    if hang {
        std::future::pending::<()>().await;
    }
    let ok = req.method() == http::Method::POST
        && req.uri().path() == "/v1/traces"
        && req
            .headers()
            .get("content-type")
            .is_some_and(|v| v == "application/x-protobuf");
    let body = req.into_body().collect().await.unwrap().to_bytes();
    let mut r = if ok {
        let decoded = ExportTraceServiceRequest::decode(body).expect("OTLP protobuf decodes");
        let mut got = spans.lock().unwrap();
        for rs in decoded.resource_spans {
            let resource = rs.resource.map(|r| r.attributes).unwrap_or_default();
            for ss in rs.scope_spans {
                assert_eq!(ss.scope.as_ref().unwrap().name, "taskmesh-agent");
                for span in ss.spans {
                    got.push(Got {
                        resource: resource.clone(),
                        span,
                    });
                }
            }
        }
        Response::new(Full::new(Bytes::from(
            ExportTraceServiceResponse::default().encode_to_vec(),
        )))
    } else {
        let mut r = Response::new(Full::new(Bytes::from_static(b"bad request")));
        *r.status_mut() = StatusCode::BAD_REQUEST;
        r
    };
    r.headers_mut().insert(
        "content-type",
        http::HeaderValue::from_static("application/x-protobuf"),
    );
    r
}

/// The two-hop mesh: node `front` (backend svc.local) -> route -> node `back`, whose endpoint
/// is `back_ip:<app port>` (where agent `back` listens); `back`'s ingress forwards to the app on
/// 127.0.0.1:<app port>.
fn two_hop_doc(app_port: u16, back_ip: &str) -> String {
    json!({
        "meshName": "m",
        "virtualServices": [{"virtualServiceName": "svc.local",
            "spec": {"provider": {"virtualRouter": {"virtualRouterName": "vr"}}}}],
        "virtualRouters": [{"virtualRouterName": "vr",
            "spec": {"listeners": [{"portMapping": {"port": app_port, "protocol": "http"}}]}}],
        "routes": [{"virtualRouterName": "vr", "routeName": "all", "spec": {"httpRoute": {
            "match": {"prefix": "/"},
            "action": {"weightedTargets": [{"virtualNode": "back", "weight": 1}]}}}}],
        "virtualNodes": [
            {"virtualNodeName": "front", "spec": {
                "listeners": [{"portMapping": {"port": 1, "protocol": "http"}}],
                "serviceDiscovery": {"dns": {"hostname": "127.0.0.1"}},
                "backends": [{"virtualService": {"virtualServiceName": "svc.local"}}]}},
            {"virtualNodeName": "back", "spec": {
                "listeners": [{"portMapping": {"port": app_port, "protocol": "http"}}],
                "serviceDiscovery": {"dns": {"hostname": back_ip}}}}
        ]
    })
    .to_string()
}

fn otlp_settings(
    world: &World,
    node: &str,
    endpoint: &str,
    sampling: &str,
) -> taskmesh_agent::Settings {
    let mut s = world.settings(node);
    s.trace.otlp_endpoint = Some(endpoint.to_string());
    s.trace.sampling = Some(sampling.to_string());
    s.trace.flush_ms = Some("30".into());
    s
}

async fn start(settings: taskmesh_agent::Settings) -> AgentHandle {
    let h = Agent::start(settings).await.expect("agent starts");
    assert!(h.wait_live(Duration::from_secs(10)).await, "agent not LIVE");
    h
}

/// Client -> front (egress) -> back (ingress) -> app, every agent tracing at `sampling`.
struct TwoHops {
    _world: World,
    front: AgentHandle,
    back: AgentHandle,
    app: support::Backend,
}

async fn two_hops(endpoint: &str, sampling: &str) -> TwoHops {
    let app = http_backend("app").await;
    let world = World::new(&two_hop_doc(app.addr.port(), "127.0.0.2"));
    let mut back = otlp_settings(&world, "back", endpoint, sampling);
    back.listen_addr = "127.0.0.2".parse().unwrap();
    back.ingress_port = app.addr.port();
    back.cache = world.dir.path().join("back-cache.json");
    let back = start(back).await;
    let front = start(otlp_settings(&world, "front", endpoint, sampling)).await;
    TwoHops {
        _world: world,
        front,
        back,
        app,
    }
}

async fn send(
    to: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> support::Reply {
    let mut b = Request::builder()
        .method(method)
        .uri(path)
        .header("host", "svc.local");
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    HttpClient::new()
        .send(
            to,
            b.body(Full::new(Bytes::from(body.to_string()))).unwrap(),
        )
        .await
        .unwrap_or_else(|e| panic!("{method} {path} via {to}: {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn otlp_spans_link_two_hops_and_the_app_sees_the_trace() {
    let rx = OtlpReceiver::start(false).await;
    let mesh = two_hops(&rx.endpoint(), "1").await;

    // A new trace: no trace headers from the client; a body both ways.
    let r = send(
        mesh.front.egress_addr,
        "POST",
        "/orders?id=7",
        &[("tracestate", "vendor=abc")],
        "hello world",
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body, "hello world");
    assert_eq!(r.header("x-backend"), "app");
    let tp = r.header("x-h-traceparent").to_string();
    let xray = r.header("x-h-x-amzn-trace-id").to_string();
    assert_eq!(
        r.header("x-h-tracestate"),
        "vendor=abc",
        "tracestate passes through"
    );
    // 00-<trace>-<parent>-01
    let parts: Vec<&str> = tp.split('-').collect();
    assert_eq!(parts.len(), 4, "traceparent {tp:?}");
    assert_eq!((parts[0], parts[3]), ("00", "01"));
    let (trace, app_parent) = (parts[1].to_string(), parts[2].to_string());
    assert_eq!(
        xray,
        format!(
            "Root=1-{}-{};Parent={app_parent};Sampled=1",
            &trace[..8],
            &trace[8..]
        ),
        "both headers carry the same trace and parent"
    );

    rx.wait_for("the ingress hop", |g| {
        hex(&g.span.trace_id) == trace && g.span.kind == SpanKind::Server as i32
    })
    .await;
    let all = rx
        .wait_for("the egress hop", |g| {
            hex(&g.span.trace_id) == trace && g.span.kind == SpanKind::Client as i32
        })
        .await;
    let of = |kind: SpanKind| {
        all.iter()
            .find(|g| hex(&g.span.trace_id) == trace && g.span.kind == kind as i32)
            .unwrap()
            .clone()
    };
    let egress = of(SpanKind::Client);
    let ingress = of(SpanKind::Server);
    // Parent/child across the hops: front's span is the root, back's span its child, and the
    // app's parent is back's span.
    assert!(egress.span.parent_span_id.is_empty(), "{egress:?}");
    assert_eq!(ingress.span.parent_span_id, egress.span.span_id);
    assert_eq!(hex(&ingress.span.span_id), app_parent);
    assert_eq!(attr_str(&egress.resource, "appmesh.virtual_node"), "front");
    assert_eq!(attr_str(&egress.resource, "appmesh.mesh"), "m");
    assert_eq!(attr_str(&egress.resource, "service.name"), "m/front");
    assert_eq!(attr_str(&ingress.resource, "appmesh.virtual_node"), "back");
    // Mesh attributes of the egress hop.
    let a = &egress.span.attributes;
    assert_eq!(egress.span.name, "svc.local");
    assert_eq!(attr_str(a, "appmesh.virtual_service"), "svc.local");
    assert_eq!(attr_str(a, "appmesh.route"), "all");
    assert_eq!(attr_str(a, "appmesh.target_virtual_node"), "back");
    assert_eq!(
        attr_str(a, "appmesh.endpoint"),
        format!("127.0.0.2:{}", mesh.app.addr.port())
    );
    assert_eq!(attr_str(a, "appmesh.direction"), "egress");
    assert_eq!(attr_int(a, "appmesh.retries"), 0);
    assert_eq!(attr_str(a, "http.request.method"), "POST");
    assert_eq!(attr_str(a, "url.path"), "/orders?id=7");
    assert_eq!(attr_int(a, "http.response.status_code"), 200);
    assert_eq!(attr_int(a, "http.request.body.size"), 11);
    assert_eq!(attr_int(a, "http.response.body.size"), 11);
    // And of the ingress hop.
    let b = &ingress.span.attributes;
    assert_eq!(ingress.span.name, "back");
    assert_eq!(attr_str(b, "appmesh.direction"), "ingress");
    assert_eq!(attr_str(b, "appmesh.target_virtual_node"), "back");
    assert_eq!(attr_str(b, "appmesh.endpoint"), mesh.app.addr.to_string());
    assert_eq!(attr_int(b, "http.response.status_code"), 200);
    assert_eq!(attr_int(b, "http.request.body.size"), 11);
    for s in [&egress.span, &ingress.span] {
        assert!(s.start_time_unix_nano > 1_600_000_000_000_000_000);
        assert!(s.end_time_unix_nano >= s.start_time_unix_nano);
    }
    assert!(ingress.span.start_time_unix_nano >= egress.span.start_time_unix_nano);

    // A trace that arrives (W3C, sampled) is continued: same trace id, the client's span is
    // the egress span's parent.
    let client_trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let r = send(
        mesh.front.egress_addr,
        "GET",
        "/status/503",
        &[(
            "traceparent",
            &format!("00-{client_trace}-00f067aa0ba902b7-01"),
        )],
        "",
    )
    .await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(r.header("x-h-traceparent").contains(client_trace));
    assert!(
        r.header("x-h-x-amzn-trace-id")
            .starts_with("Root=1-4bf92f35-77b34da6a3ce929d0e0e4736;")
    );
    let all = rx
        .wait_for("the continued trace's egress span", |g| {
            hex(&g.span.trace_id) == client_trace && g.span.kind == SpanKind::Client as i32
        })
        .await;
    let e = all
        .iter()
        .find(|g| hex(&g.span.trace_id) == client_trace && g.span.kind == SpanKind::Client as i32)
        .unwrap();
    assert_eq!(hex(&e.span.parent_span_id), "00f067aa0ba902b7");
    assert_eq!(
        attr_int(&e.span.attributes, "http.response.status_code"),
        503
    );
    // The default retry policy retried the 503 twice.
    assert_eq!(attr_int(&e.span.attributes, "appmesh.retries"), 2);
    assert_eq!(
        e.span.status.as_ref().unwrap().code,
        opentelemetry_proto::tonic::trace::v1::status::StatusCode::Error as i32
    );

    // The byte counters behind ProcessedBytes / TargetProcessedBytes, in Prometheus.
    let (_, prom) = admin_get(mesh.front.admin_addr, "/stats/prometheus").await;
    let line = prom
        .lines()
        .find(|l| {
            l.starts_with(
                "taskmesh_request_bytes_total{direction=\"egress\",virtual_service=\"svc.local\"",
            )
        })
        .unwrap_or_else(|| panic!("{prom}"));
    assert!(line.ends_with(" 11"), "{line}");
    assert!(
        prom.contains("taskmesh_trace_spans_dropped_total 0\n"),
        "{prom}"
    );
    drop(mesh.back);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sampling_follows_the_incoming_decision_and_the_rate() {
    let rx = OtlpReceiver::start(false).await;
    let app = http_backend("app").await;
    let doc = support::DocBuilder::new("DROP_ALL")
        .node("front", 1, "http", &["svc.local"])
        .node("back", app.addr.port(), "http", &[])
        .node_service("svc.local", "back")
        .json();
    let world = World::new(&doc);
    let mut always = otlp_settings(&world, "front", &rx.endpoint(), "1");
    always.cache = world.dir.path().join("a.json");
    let always = start(always).await;
    let mut never = otlp_settings(&world, "front", &rx.endpoint(), "0");
    never.cache = world.dir.path().join("n.json");
    let never = start(never).await;
    let mut off = world.settings("front");
    off.cache = world.dir.path().join("o.json");
    let off = start(off).await;

    // Rate 1 but the caller said Sampled=0: propagated as unsampled, nothing exported.
    let unsampled = "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=0";
    for _ in 0..5 {
        let r = send(
            always.egress_addr,
            "GET",
            "/",
            &[("x-amzn-trace-id", unsampled)],
            "",
        )
        .await;
        assert_eq!(r.status, StatusCode::OK);
        let x = r.header("x-h-x-amzn-trace-id");
        assert!(
            x.starts_with("Root=1-5759e988-bd862e3fe1be46a994272793;Parent="),
            "{x}"
        );
        assert!(x.ends_with(";Sampled=0"), "{x}");
        assert!(
            !x.contains("53995c3f42cd8ad8"),
            "this hop's span becomes the parent: {x}"
        );
        assert!(r.header("x-h-traceparent").ends_with("-00"));
    }
    // Rate 0: new traces are propagated, unsampled, and not exported.
    for _ in 0..20 {
        let r = send(never.egress_addr, "GET", "/", &[], "").await;
        assert!(
            r.header("x-h-traceparent").ends_with("-00"),
            "{}",
            r.header("x-h-traceparent")
        );
        assert!(r.header("x-h-x-amzn-trace-id").ends_with(";Sampled=0"));
    }
    // Tracing off (no exporter): no trace headers are added, x-request-id still is.
    let r = send(off.egress_addr, "GET", "/", &[], "").await;
    assert_eq!(r.header("x-h-traceparent"), "");
    assert_eq!(r.header("x-h-x-amzn-trace-id"), "");
    assert_eq!(r.header("x-h-x-request-id").len(), 36);
    // An incoming Sampled=1 is honoured even at rate 0: one such request through each agent
    // marks the end of what it could have exported (its spans leave in queue order).
    for (agent, marker) in [(&always, "beef1"), (&never, "beef2")] {
        let root = format!("Root=1-5759e988-0000000000000000000{marker};Sampled=1");
        send(
            agent.egress_addr,
            "GET",
            "/",
            &[("x-amzn-trace-id", &root)],
            "",
        )
        .await;
        rx.wait_for(marker, |g| hex(&g.span.trace_id).ends_with(marker))
            .await;
    }
    let got = rx.spans();
    assert_eq!(
        got.len(),
        2,
        "only the Sampled=1 requests are exported: {got:#?}"
    );

    // Rate 1: every request.
    for _ in 0..10 {
        send(always.egress_addr, "GET", "/", &[], "").await;
    }
    let deadline = Instant::now() + Duration::from_secs(15);
    while rx.spans().len() < 12 {
        assert!(Instant::now() < deadline, "{} spans", rx.spans().len());
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(rx.spans().len(), 12);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collector_that_never_answers_costs_dropped_spans_not_slow_requests() {
    let rx = OtlpReceiver::start(true).await;
    let app = http_backend("app").await;
    let doc = support::DocBuilder::new("DROP_ALL")
        .node("front", 1, "http", &["svc.local"])
        .node("back", app.addr.port(), "http", &[])
        .node_service("svc.local", "back")
        .json();
    let world = World::new(&doc);
    let mut s = otlp_settings(&world, "front", &rx.endpoint(), "1");
    s.trace.queue = Some("4".into());
    s.trace.batch = Some("1".into());
    s.trace.otlp_timeout_ms = Some("600000".into());
    let agent = start(s).await;
    let client = HttpClient::new();
    let started = Instant::now();
    for _ in 0..40 {
        let r = client.get(agent.egress_addr, "svc.local", "/").await;
        assert_eq!(r.status, StatusCode::OK);
    }
    // Each span is queued when its response body is dropped, just after the client read it.
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Generous: the point is that no request waited for the collector (each would otherwise
    // wait up to the 10-minute export timeout).
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "{:?}",
        started.elapsed()
    );
    assert!(*rx.posts.lock().unwrap() >= 1, "the exporter did try");
    let (_, prom) = admin_get(agent.admin_addr, "/stats/prometheus").await;
    let dropped: u64 = prom
        .lines()
        .find_map(|l| l.strip_prefix("taskmesh_trace_spans_dropped_total "))
        .unwrap_or_else(|| panic!("{prom}"))
        .parse()
        .unwrap();
    // 40 spans: one in the hung export, at most 4 queued (and one the batcher may hold).
    assert!((34..=39).contains(&dropped), "dropped {dropped}\n{prom}");
}

// ---- X-Ray, through the real binary and the App Mesh Envoy variable names -------------------

fn xray_schema_path() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/schemas/xray-segmentdocument-schema-v1.0.0.json")
}

/// Validates `segments` with Python's `jsonschema` (Draft 4, the schema's draft).
fn validate_segments(segments: &[Value]) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("segments.json");
    std::fs::write(&data, Value::Array(segments.to_vec()).to_string()).unwrap();
    let script = r#"
import json, sys, jsonschema
schema = json.load(open(sys.argv[1]))
jsonschema.Draft4Validator.check_schema(schema)
v = jsonschema.Draft4Validator(schema)
bad = [f"segment {i}: {e.message} at {list(e.absolute_path)}"
       for i, s in enumerate(json.load(open(sys.argv[2])))
       for e in v.iter_errors(s)]
print("\n".join(bad))
sys.exit(1 if bad else 0)
"#;
    let out = Command::new(taskmesh_e2e::venv::venv().python())
        .arg("-c")
        .arg(script)
        .arg(xray_schema_path())
        .arg(&data)
        .output()
        .expect("run the venv's python");
    assert!(
        out.status.success(),
        "X-Ray segments fail the segment document schema:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_schema_check_rejects_a_broken_segment() {
    // The validator is real: a segment with a short id and a bad annotation key fails.
    let bad = json!({"name": "m/front", "id": "abc", "start_time": 1.0,
        "trace_id": "1-5759e988-bd862e3fe1be46a994272793", "annotations": {"a-b": 1}});
    let r = std::panic::catch_unwind(|| validate_segments(&[bad]));
    assert!(r.is_err());
}

struct AgentProcess {
    child: Child,
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn xray_segments_from_the_envoy_variables_follow_the_schema() {
    let daemon = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let daemon_addr = daemon.local_addr().unwrap();
    let datagrams = Arc::new(Mutex::new(Vec::<String>::new()));
    let sink = datagrams.clone();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 65_536];
        while let Ok((n, _)) = daemon.recv_from(&mut buf).await {
            sink.lock()
                .unwrap()
                .push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
    });
    let app = http_backend("app").await;
    let doc = support::DocBuilder::new("DROP_ALL")
        .node("front", 1, "http", &["svc.local"])
        .node("back", app.addr.port(), "http", &[])
        .node_service("svc.local", "back")
        .json();
    let world = World::new(&doc);
    let (ingress, egress, admin) = (free_port(), free_port(), free_port());
    let _agent = AgentProcess {
        child: Command::new(env!("CARGO_BIN_EXE_taskmesh-agent"))
            .env_clear()
            .env(
                "APPMESH_RESOURCE_ARN",
                "arn:aws:appmesh:eu-west-1:111122223333:mesh/m/virtualNode/front",
            )
            .env("TASKMESH_CONFIG", world.uri())
            .env("TASKMESH_INGRESS_PORT", ingress.to_string())
            .env("TASKMESH_EGRESS_PORT", egress.to_string())
            .env("TASKMESH_LISTEN_ADDR", "127.0.0.1")
            .env("ENVOY_ADMIN_ACCESS_PORT", admin.to_string())
            .env("TASKMESH_CACHE", &world.cache)
            .env("ENABLE_ENVOY_XRAY_TRACING", "1")
            .env("AWS_XRAY_DAEMON_ADDRESS", daemon_addr.to_string())
            .env("XRAY_SAMPLING_RATE", "1")
            .env("TASKMESH_TRACE_FLUSH_MS", "20")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn taskmesh-agent"),
    };
    let egress: SocketAddr = format!("127.0.0.1:{egress}").parse().unwrap();
    support::eventually("agent routes svc.local", || async {
        tokio::net::TcpStream::connect(egress).await.is_ok()
            && HttpClient::new()
                .get(egress, "svc.local", "/warmup")
                .await
                .status
                == StatusCode::OK
    })
    .await;
    let mut sent = BTreeMap::new();
    for (path, status) in [
        ("/ok", 200u16),
        ("/status/404", 404),
        ("/status/429", 429),
        ("/status/500", 500),
    ] {
        let r = send(egress, "GET", path, &[], "").await;
        assert_eq!(r.status.as_u16(), status);
        let x = r.header("x-h-x-amzn-trace-id").to_string();
        let root = x
            .split(';')
            .next()
            .unwrap()
            .strip_prefix("Root=")
            .unwrap()
            .to_string();
        sent.insert(path, (root, status));
    }
    let deadline = Instant::now() + Duration::from_secs(15);
    let segments: Vec<Value> = loop {
        let got: Vec<Value> = datagrams
            .lock()
            .unwrap()
            .iter()
            .map(|d| {
                let body = d
                    .strip_prefix("{\"format\":\"json\",\"version\":1}\n")
                    .unwrap_or_else(|| panic!("datagram without the daemon header: {d}"));
                serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"))
            })
            .collect();
        let all_there = sent
            .values()
            .all(|(root, _)| got.iter().any(|s| s["trace_id"] == root.as_str()));
        if all_there {
            break got;
        }
        assert!(Instant::now() < deadline, "segments: {got:#?}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    };
    validate_segments(&segments);
    for (path, (root, status)) in &sent {
        let s = segments
            .iter()
            .find(|s| s["trace_id"] == root.as_str())
            .unwrap();
        assert_eq!(s["name"], "m/front", "App Mesh's default segment name");
        assert_eq!(s["origin"], "AWS::AppMesh::Proxy");
        assert!(
            s.get("parent_id").is_none(),
            "a new trace has no parent: {s}"
        );
        assert_eq!(s["http"]["response"]["status"], *status);
        assert_eq!(s["http"]["request"]["method"], "GET");
        assert_eq!(
            s["http"]["request"]["url"],
            format!("http://svc.local{path}")
        );
        assert_eq!(
            s["error"].as_bool().unwrap_or(false),
            (400..500).contains(status)
        );
        assert_eq!(s["throttle"].as_bool().unwrap_or(false), *status == 429);
        assert_eq!(s["fault"].as_bool().unwrap_or(false), *status >= 500);
        let a = &s["annotations"];
        assert_eq!(a["mesh"], "m");
        assert_eq!(a["virtual_node"], "front");
        assert_eq!(a["direction"], "egress");
        assert_eq!(a["virtual_service"], "svc.local");
        assert_eq!(a["target_virtual_node"], "back");
        assert_eq!(a["endpoint"], app.addr.to_string());
        assert_eq!(a["response_bytes"], 3, "the app answers \"app\"");
        let (start, end) = (
            s["start_time"].as_f64().unwrap(),
            s["end_time"].as_f64().unwrap(),
        );
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        assert!(
            start <= end && end <= now + 1.0 && now - start < 120.0,
            "{s}"
        );
        assert_eq!(s["id"].as_str().unwrap().len(), 16);
    }
}

#[test]
fn a_bad_xray_sampling_rate_stops_the_agent_with_a_clear_error() {
    let world = World::new("meshName: m\nvirtualNodes: []\n");
    let out = world
        .agent_command("front")
        .env("ENABLE_ENVOY_XRAY_TRACING", "1")
        .env("XRAY_SAMPLING_RATE", "5%")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("XRAY_SAMPLING_RATE=\"5%\""), "{err}");
}
