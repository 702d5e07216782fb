//! `s3://` and `appmesh:` sources against a real moto server, through the real binary (the AWS
//! settings come from the environment, as in a task).
//!
//! moto lacks every App Mesh VirtualService operation (HTTP 404) and sends timestamps as
//! `"25/11/2026, 17:15:11"` strings. The agent's App Mesh reader tolerates the timestamps itself
//! (see `config/appmesh.rs`); for the missing calls this test puts a small recorded-response
//! server in front of moto: `GET …/virtualServices/<name>` is answered with a recorded App Mesh
//! wire body (epoch-second timestamps, as the real API sends), everything else is forwarded to
//! moto unchanged.

mod support;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::json;
use support::moto::Moto;
use support::{DocBuilder, HttpClient, eventually, http_backend};

struct Proc(Child);
impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Runs the agent binary for node `front` with `config` and AWS pointed at `endpoint`.
fn spawn_agent(
    config: &str,
    endpoint: &str,
    cache: &std::path::Path,
) -> (Proc, SocketAddr, SocketAddr) {
    let (egress, admin) = (free_port(), free_port());
    let child = Command::new(env!("CARGO_BIN_EXE_taskmesh-agent"))
        .env_clear()
        .env("APPMESH_RESOURCE_ARN", "mesh/m/virtualNode/front")
        .env("TASKMESH_CONFIG", config)
        .env("TASKMESH_INGRESS_PORT", free_port().to_string())
        .env("TASKMESH_EGRESS_PORT", egress.to_string())
        .env("TASKMESH_LISTEN_ADDR", "127.0.0.1")
        .env("ENVOY_ADMIN_ACCESS_PORT", admin.to_string())
        .env("TASKMESH_CACHE", cache)
        .env("TASKMESH_POLL_SECONDS", "1")
        .env("AWS_ENDPOINT_URL", endpoint)
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_REGION", "us-east-1")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    (
        Proc(child),
        format!("127.0.0.1:{egress}").parse().unwrap(),
        format!("127.0.0.1:{admin}").parse().unwrap(),
    )
}

async fn wait_live(admin: SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut last = String::new();
    while Instant::now() < deadline {
        if tokio::net::TcpStream::connect(admin).await.is_ok() {
            last = support::admin_get(admin, "/server_info").await.1;
            if last.contains("\"LIVE\"") {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("agent never became LIVE: {last}");
}

fn creds() -> aws_sdk_s3::config::Credentials {
    aws_sdk_s3::config::Credentials::new("testing", "testing", None, None, "test")
}

fn doc(app: u16, target: &str, port: u16) -> String {
    DocBuilder::new("DROP_ALL")
        .node("front", app, "http", &["svc.local"])
        .node(target, port, "http", &[])
        .routed_service("svc.local", "r", 9080, "http")
        .http_route("r", "all", None, json!({"prefix": "/"}), &[(target, 1)])
        .json()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_source_against_moto() {
    let moto = Moto::start();
    let conf = aws_sdk_s3::Config::builder()
        .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
        .endpoint_url(moto.endpoint())
        .region(aws_sdk_s3::config::Region::new("us-east-1"))
        .credentials_provider(creds())
        .force_path_style(true)
        .build();
    let s3 = aws_sdk_s3::Client::from_conf(conf);
    s3.create_bucket()
        .bucket("meshes")
        .send()
        .await
        .expect("create bucket in moto");
    let app = http_backend("app").await;
    let blue = http_backend("blue").await;
    let green = http_backend("green").await;
    let put = |body: String| {
        s3.put_object()
            .bucket("meshes")
            .key("m/mesh.json")
            .body(body.into_bytes().into())
            .send()
    };
    put(doc(app.addr.port(), "blue", blue.addr.port()))
        .await
        .expect("put object");
    let dir = tempfile::tempdir().unwrap();
    let (_p, egress, admin) = spawn_agent(
        "s3://meshes/m/mesh.json",
        &moto.endpoint(),
        &dir.path().join("c.json"),
    );
    wait_live(admin).await;
    let c = HttpClient::new();
    assert_eq!(
        c.get(egress, "svc.local", "/").await.header("x-backend"),
        "blue"
    );
    let dump = support::admin_get(admin, "/config_dump").await.1;
    assert!(
        dump.contains("\"source\": \"s3://meshes/m/mesh.json\""),
        "{dump}"
    );
    put(doc(app.addr.port(), "green", green.addr.port()))
        .await
        .expect("put object");
    eventually("the updated object is installed", || async {
        c.get(egress, "svc.local", "/").await.header("x-backend") == "green"
    })
    .await;
    let prom = support::admin_get(admin, "/stats/prometheus").await.1;
    assert!(
        prom.contains("taskmesh_config_reloads_total{result=\"ok\"} 2"),
        "unchanged ETag is not a reload:\n{prom}"
    );
}

/// The recorded-response server in front of moto (see the module docs).
async fn front_for_moto(moto_port: u16) -> SocketAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    tokio::spawn(async move {
        loop {
            let Ok((s, _)) = l.accept().await else {
                continue;
            };
            let client = client.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req: Request<Incoming>| {
                    let client = client.clone();
                    async move { Ok::<_, Infallible>(front(client, moto_port, req).await) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    addr
}

async fn front(
    client: Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>,
    moto_port: u16,
    req: Request<Incoming>,
) -> Response<Full<Bytes>> {
    let path = req.uri().path().to_string();
    if let Some(rest) = path.strip_prefix("/v20190125/meshes/m/virtualServices/") {
        // Recorded DescribeVirtualService wire body (payload = VirtualServiceData).
        let body = json!({
            "meshName": "m",
            "metadata": {"arn": format!("arn:aws:appmesh:us-east-1:123456789012:mesh/m/virtualService/{rest}"),
                "createdAt": 1764090911.749, "lastUpdatedAt": 1764090911.749, "meshOwner": "123456789012",
                "resourceOwner": "123456789012", "uid": "a1b2c3d4-5678-90ab-cdef-EXAMPLE11111", "version": 1},
            "spec": {"provider": {"virtualRouter": {"virtualRouterName": "r"}}},
            "status": {"status": "ACTIVE"},
            "virtualServiceName": rest,
        });
        let mut r = Response::new(Full::new(Bytes::from(body.to_string())));
        r.headers_mut()
            .insert("content-type", "application/json".parse().unwrap());
        return r;
    }
    let (mut parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let pq = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_default();
    parts.uri = format!("http://127.0.0.1:{moto_port}{pq}").parse().unwrap();
    let resp = match client
        .request(Request::from_parts(parts, Full::new(body)))
        .await
    {
        Ok(r) => r,
        Err(e) => {
            let mut r = Response::new(Full::new(Bytes::from(format!("front: {e}"))));
            *r.status_mut() = StatusCode::BAD_GATEWAY;
            return r;
        }
    };
    let (parts, body) = resp.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let mut r = Response::from_parts(parts, Full::new(body));
    r.headers_mut().remove("transfer-encoding");
    r
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appmesh_source_against_moto() {
    use aws_sdk_appmesh::types::*;
    let moto = Moto::start();
    let conf = aws_sdk_appmesh::Config::builder()
        .behavior_version(aws_sdk_appmesh::config::BehaviorVersion::latest())
        .endpoint_url(moto.endpoint())
        .region(aws_sdk_appmesh::config::Region::new("us-east-1"))
        .credentials_provider(creds())
        .build();
    let am = aws_sdk_appmesh::Client::from_conf(conf);
    let app = http_backend("app").await;
    let blue = http_backend("blue").await;
    let green = http_backend("green").await;
    // moto's answers carry timestamps aws-smithy-json cannot read, so a create call may report a
    // deserialization error after moto stored the resource; the agent's read below proves it.
    let ok = |r: Result<(), String>| {
        if let Err(e) = r {
            assert!(
                e.contains("deserializ") || e.contains("Deserializ") || e.contains("response"),
                "{e}"
            );
        }
    };
    let dbg = |e: &dyn std::fmt::Debug| format!("{e:?}");
    ok(am
        .create_mesh()
        .mesh_name("m")
        .spec(
            MeshSpec::builder()
                .egress_filter(
                    EgressFilter::builder()
                        .r#type(EgressFilterType::DropAll)
                        .build()
                        .unwrap(),
                )
                .build(),
        )
        .send()
        .await
        .map(|_| ())
        .map_err(|e| dbg(&e)));
    let listener = |port: i32| {
        Listener::builder()
            .port_mapping(
                PortMapping::builder()
                    .port(port)
                    .protocol(PortProtocol::Http)
                    .build()
                    .unwrap(),
            )
            .build()
    };
    let dns = ServiceDiscovery::Dns(
        DnsServiceDiscovery::builder()
            .hostname("127.0.0.1")
            .build()
            .unwrap(),
    );
    for (name, port, backends) in [
        ("front", app.addr.port(), vec!["svc.local"]),
        ("blue", blue.addr.port(), vec![]),
        ("green", green.addr.port(), vec![]),
    ] {
        let mut spec = VirtualNodeSpec::builder()
            .listeners(listener(i32::from(port)))
            .service_discovery(dns.clone());
        for b in backends {
            spec = spec.backends(Backend::VirtualService(
                VirtualServiceBackend::builder()
                    .virtual_service_name(b)
                    .build()
                    .unwrap(),
            ));
        }
        ok(am
            .create_virtual_node()
            .mesh_name("m")
            .virtual_node_name(name)
            .spec(spec.build())
            .send()
            .await
            .map(|_| ())
            .map_err(|e| dbg(&e)));
    }
    ok(am
        .create_virtual_router()
        .mesh_name("m")
        .virtual_router_name("r")
        .spec(
            VirtualRouterSpec::builder()
                .listeners(
                    VirtualRouterListener::builder()
                        .port_mapping(
                            PortMapping::builder()
                                .port(9080)
                                .protocol(PortProtocol::Http)
                                .build()
                                .unwrap(),
                        )
                        .build(),
                )
                .build(),
        )
        .send()
        .await
        .map(|_| ())
        .map_err(|e| dbg(&e)));
    let target = |n: &str| {
        WeightedTarget::builder()
            .virtual_node(n)
            .weight(1)
            .build()
            .unwrap()
    };
    ok(am
        .create_route()
        .mesh_name("m")
        .virtual_router_name("r")
        .route_name("to-green")
        .spec(
            RouteSpec::builder()
                .priority(0)
                .http_route(
                    HttpRoute::builder()
                        .r#match(
                            HttpRouteMatch::builder()
                                .prefix("/")
                                .headers(
                                    HttpRouteHeader::builder()
                                        .name("x-color")
                                        .r#match(HeaderMatchMethod::Exact("green".into()))
                                        .build()
                                        .unwrap(),
                                )
                                .build(),
                        )
                        .action(
                            HttpRouteAction::builder()
                                .weighted_targets(target("green"))
                                .build()
                                .unwrap(),
                        )
                        .build(),
                )
                .build(),
        )
        .send()
        .await
        .map(|_| ())
        .map_err(|e| dbg(&e)));
    ok(am
        .create_route()
        .mesh_name("m")
        .virtual_router_name("r")
        .route_name("default")
        .spec(
            RouteSpec::builder()
                .priority(10)
                .http_route(
                    HttpRoute::builder()
                        .r#match(HttpRouteMatch::builder().prefix("/").build())
                        .action(
                            HttpRouteAction::builder()
                                .weighted_targets(target("blue"))
                                .build()
                                .unwrap(),
                        )
                        .build(),
                )
                .build(),
        )
        .send()
        .await
        .map(|_| ())
        .map_err(|e| dbg(&e)));

    let front = front_for_moto(moto.port).await;
    let dir = tempfile::tempdir().unwrap();
    let (_p, egress, admin) = spawn_agent(
        "appmesh:",
        &format!("http://{front}"),
        &dir.path().join("c.json"),
    );
    wait_live(admin).await;
    let c = HttpClient::new();
    assert_eq!(
        c.get(egress, "svc.local", "/").await.header("x-backend"),
        "blue"
    );
    let req = Request::get("/")
        .header("host", "svc.local")
        .header("x-color", "green")
        .body(Full::new(Bytes::new()))
        .unwrap();
    assert_eq!(
        c.send(egress, req).await.unwrap().header("x-backend"),
        "green"
    );
    let dump: serde_json::Value =
        serde_json::from_str(&support::admin_get(admin, "/config_dump").await.1).unwrap();
    let routes = dump["document"]["routes"].as_array().unwrap();
    assert_eq!(routes.len(), 2, "{dump}");
    assert_eq!(dump["source"], "appmesh:");
}
