//! Cloud Map service discovery against a real moto server, through the real binary: instances
//! registered with attributes are where the agent routes (the node's `attributes` filter
//! respected, the listener port used), a deregistered instance disappears after a refresh,
//! and with moto stopped the last good instances keep serving while failed refreshes are
//! counted. The agent reaches moto through `TASKMESH_CLOUDMAP_ENDPOINT` only (no
//! `AWS_ENDPOINT_URL`), so this also proves DiscoverInstances' `data-` host prefix is not put
//! in front of `localhost`.

mod support;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use aws_sdk_servicediscovery::Client;
use serde_json::json;
use support::moto::{Moto, create_service, service_discovery as sd_client};
use support::{HttpClient, eventually, http_backend, http_backend_on};

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

async fn register(sd: &Client, service_id: &str, id: &str, ip: &str, version: &str) {
    sd.register_instance()
        .service_id(service_id)
        .instance_id(id)
        .attributes("AWS_INSTANCE_IPV4", ip)
        // App Mesh ignored the instance port; so does the agent (the listener port wins).
        .attributes("AWS_INSTANCE_PORT", "1")
        .attributes("version", version)
        .send()
        .await
        .expect("RegisterInstance");
}

fn mesh_doc(front_port: u16, port: u16) -> String {
    serde_json::to_string_pretty(&json!({
        "meshName": "m",
        "virtualServices": [{"virtualServiceName": "colors.apps.local",
            "spec": {"provider": {"virtualNode": {"virtualNodeName": "colors-v1"}}}}],
        "virtualNodes": [
            {"virtualNodeName": "front", "spec": {
                "listeners": [{"portMapping": {"port": front_port, "protocol": "http"}}],
                "serviceDiscovery": {"dns": {"hostname": "127.0.0.1"}},
                "backends": [{"virtualService": {"virtualServiceName": "colors.apps.local"}}]}},
            {"virtualNodeName": "colors-v1", "spec": {
                "listeners": [{"portMapping": {"port": port, "protocol": "http"}}],
                "serviceDiscovery": {"awsCloudMap": {"namespaceName": "apps.local",
                    "serviceName": "colors",
                    "attributes": [{"key": "version", "value": "v1"}]}}}}
        ]
    }))
    .unwrap()
}

/// Runs the agent binary for node `front`; Cloud Map at `endpoint`, refreshed every second.
fn spawn_agent(dir: &std::path::Path, endpoint: &str) -> (Proc, SocketAddr, SocketAddr) {
    let (egress, admin) = (free_port(), free_port());
    let child = Command::new(env!("CARGO_BIN_EXE_taskmesh-agent"))
        .env_clear()
        .env("APPMESH_RESOURCE_ARN", "mesh/m/virtualNode/front")
        .env(
            "TASKMESH_CONFIG",
            format!("file://{}", dir.join("mesh.json").display()),
        )
        .env("TASKMESH_INGRESS_PORT", free_port().to_string())
        .env("TASKMESH_EGRESS_PORT", egress.to_string())
        .env("TASKMESH_LISTEN_ADDR", "127.0.0.1")
        .env("ENVOY_ADMIN_ACCESS_PORT", admin.to_string())
        .env("TASKMESH_CACHE", dir.join("cache.json"))
        .env("TASKMESH_CLOUDMAP_ENDPOINT", endpoint)
        .env("TASKMESH_CLOUDMAP_REFRESH_SECONDS", "1")
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_REGION", "us-east-1")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("ENVOY_LOG_LEVEL", "warn")
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

/// The backends answering `n` requests through the agent (every answer must be 200).
async fn backends_seen(c: &HttpClient, egress: SocketAddr, n: usize) -> HashSet<String> {
    let mut seen = HashSet::new();
    for _ in 0..n {
        let r = c.get(egress, "colors.apps.local", "/").await;
        assert_eq!(r.status, 200, "{}", r.body);
        seen.insert(r.header("x-backend").to_string());
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cloud_map_instances_filter_refresh_and_last_good() {
    let moto = Moto::start();
    let sd = sd_client(&moto);
    let service_id = create_service(&sd, "apps.local", "colors").await;

    // Three instances on one port, told apart by address: two v1, one v2.
    let v1a = http_backend("v1a").await;
    let port = v1a.addr.port();
    let bind = |ip: &str| {
        let l = std::net::TcpListener::bind((ip, port)).expect("bind on the shared port");
        l.set_nonblocking(true).unwrap();
        tokio::net::TcpListener::from_std(l).unwrap()
    };
    let _v2 = http_backend_on(bind("127.0.0.2"), "v2");
    let _v1b = http_backend_on(bind("127.0.0.3"), "v1b");
    register(&sd, &service_id, "i-1", "127.0.0.1", "v1").await;
    register(&sd, &service_id, "i-2", "127.0.0.2", "v2").await;
    register(&sd, &service_id, "i-3", "127.0.0.3", "v1").await;

    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("mesh.json"), mesh_doc(free_port(), port)).unwrap();
    let (_agent, egress, admin) = spawn_agent(dir.path(), &moto.endpoint());
    wait_live(admin).await;

    // The first lookup is awaited (no 503 on the first request); only v1 instances are used,
    // and both of them (the load balancer draws at random: 30 requests miss one with
    // probability 2^-29).
    let c = HttpClient::new();
    let seen = backends_seen(&c, egress, 30).await;
    assert_eq!(
        seen,
        HashSet::from(["v1a".to_string(), "v1b".to_string()]),
        "attribute filter version=v1"
    );

    // Deregistered: gone after a refresh.
    sd.deregister_instance()
        .service_id(&service_id)
        .instance_id("i-3")
        .send()
        .await
        .expect("DeregisterInstance");
    let v1b_listed = || async {
        // A request brings the agent's endpoint set up to date with discovery.
        let _ = backends_seen(&c, egress, 1).await;
        support::admin_get(admin, "/clusters?format=text")
            .await
            .1
            .contains("::127.0.0.3:")
    };
    assert!(v1b_listed().await, "both v1 instances are endpoints");
    eventually("i-3 leaves the endpoint set", || async {
        !v1b_listed().await
    })
    .await;
    assert_eq!(
        backends_seen(&c, egress, 6).await,
        HashSet::from(["v1a".to_string()])
    );

    // Cloud Map unreachable: the last good instances keep serving, failures are counted.
    drop(moto);
    eventually("a failed refresh is counted", || async {
        let prom = support::admin_get(admin, "/stats/prometheus").await.1;
        prom.lines()
            .find_map(|l| l.strip_prefix("taskmesh_cloudmap_refresh_failures_total "))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .is_some_and(|n| n >= 2)
    })
    .await;
    assert_eq!(
        backends_seen(&c, egress, 4).await,
        HashSet::from(["v1a".to_string()])
    );
}
