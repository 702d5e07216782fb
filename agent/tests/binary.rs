//! The real `taskmesh-agent` binary: SIGTERM drain with no dropped in-flight request and exit 0,
//! the `health` subcommand as the container health check, JSON logs, usage errors.

mod support;

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use http::StatusCode;
use serde_json::json;
use support::{DocBuilder, HttpClient, World, admin_get, http_backend};

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Proc {
    child: Child,
    egress: u16,
    admin: u16,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn_agent(world: &World, node: &str, drain_s: u64) -> Proc {
    let (ingress, egress, admin) = (free_port(), free_port(), free_port());
    let child = Command::new(env!("CARGO_BIN_EXE_taskmesh-agent"))
        .env_clear()
        .env(
            "APPMESH_RESOURCE_ARN",
            format!("arn:aws:appmesh:us-east-1:123456789012:mesh/m/virtualNode/{node}"),
        )
        .env("TASKMESH_CONFIG", world.uri())
        .env("TASKMESH_INGRESS_PORT", ingress.to_string())
        .env("TASKMESH_EGRESS_PORT", egress.to_string())
        .env("TASKMESH_LISTEN_ADDR", "127.0.0.1")
        .env("ENVOY_ADMIN_ACCESS_PORT", admin.to_string())
        .env("LISTENER_DRAIN_WAIT_TIME_S", drain_s.to_string())
        .env("TASKMESH_CACHE", &world.cache)
        .env("TASKMESH_POLL_SECONDS", "1")
        // One worker: the current-thread runtime a task with one vCPU gets (the in-process
        // tests and the namespace tests run the multi-threaded one).
        .env("TASKMESH_WORKERS", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn taskmesh-agent");
    Proc {
        child,
        egress,
        admin,
    }
}

fn health(admin: u16) -> i32 {
    Command::new(env!("CARGO_BIN_EXE_taskmesh-agent"))
        .env_clear()
        .args(["health", "--admin-port", &admin.to_string()])
        .status()
        .unwrap()
        .code()
        .unwrap_or(-1)
}

async fn wait_health(admin: u16, want: i32) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        if tokio::task::spawn_blocking(move || health(admin))
            .await
            .unwrap()
            == want
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("health on admin port {admin} never exited {want}");
}

fn simple_doc(app: u16, blue: u16) -> String {
    DocBuilder::new("DROP_ALL")
        .node("front", app, "http", &["svc.local"])
        .node("blue", blue, "http", &[])
        .routed_service("svc.local", "r", 9080, "http")
        .http_route("r", "all", None, json!({"prefix": "/"}), &[("blue", 1)])
        .json()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_in_flight_requests_and_exits_zero() {
    let app = http_backend("app").await;
    let blue = http_backend("blue").await;
    // The access log on stdout, as App Mesh documents it (`/dev/stdout`).
    let mut doc: serde_json::Value =
        serde_json::from_str(&simple_doc(app.addr.port(), blue.addr.port())).unwrap();
    doc["virtualNodes"][0]["spec"]["logging"] =
        json!({"accessLog": {"file": {"path": "/dev/stdout"}}});
    let world = World::new(&doc.to_string());
    let mut p = spawn_agent(&world, "front", 10);
    wait_health(p.admin, 0).await;
    let eg: std::net::SocketAddr = format!("127.0.0.1:{}", p.egress).parse().unwrap();
    let mut inflight = Vec::new();
    for _ in 0..20 {
        inflight.push(tokio::spawn(async move {
            HttpClient::new()
                .get(eg, "svc.local", "/slow/1500")
                .await
                .status
        }));
    }
    tokio::time::sleep(Duration::from_millis(400)).await;
    let t0 = Instant::now();
    // SAFETY: plain kill(2) on our own child's pid.
    let rc = unsafe { libc::kill(p.child.id() as i32, libc::SIGTERM) };
    assert_eq!(rc, 0);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let info = admin_get(
        format!("127.0.0.1:{}", p.admin).parse().unwrap(),
        "/server_info",
    )
    .await
    .1;
    assert!(info.contains("\"DRAINING\""), "{info}");
    assert!(
        tokio::net::TcpStream::connect(eg).await.is_err(),
        "the egress listener stops accepting once draining"
    );
    for t in inflight {
        assert_eq!(
            t.await.unwrap(),
            StatusCode::OK,
            "an in-flight request was dropped"
        );
    }
    let (status, out) = tokio::task::spawn_blocking(move || {
        let mut out = String::new();
        use std::io::Read;
        p.child
            .stdout
            .take()
            .unwrap()
            .read_to_string(&mut out)
            .unwrap();
        (p.child.wait().unwrap(), out)
    })
    .await
    .unwrap();
    assert!(status.success(), "exit status {status:?}");
    assert!(
        t0.elapsed() < Duration::from_secs(8),
        "exited once drained, not after the full wait"
    );
    // Every request answered during the drain is in the access log: the batched lines still
    // pending at exit are written before the process goes.
    let logged = out
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["direction"] == "egress" && v["path"] == "/slow/1500" && v["code"] == 200)
        .count();
    assert_eq!(
        logged, 20,
        "access-log lines of the drained requests in:\n{out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_subcommand_follows_state_and_logs_are_json() {
    let world = World::new("meshName: m\nvirtualNodes: []\n");
    let mut p = spawn_agent(&world, "front", 1);
    // Node missing from the document: rejected, INITIALIZING -> health fails.
    let admin: std::net::SocketAddr = format!("127.0.0.1:{}", p.admin).parse().unwrap();
    support::eventually("admin answers", || async {
        tokio::net::TcpStream::connect(admin).await.is_ok()
    })
    .await;
    assert_eq!(health(p.admin), 1);
    let app = http_backend("app").await;
    let blue = http_backend("blue").await;
    support::write_atomic(&world.doc, &simple_doc(app.addr.port(), blue.addr.port()));
    wait_health(p.admin, 0).await;
    // /healthcheck/fail turns health off.
    let (s, _) = support::admin_call(admin, http::Method::POST, "/healthcheck/fail").await;
    assert_eq!(s, StatusCode::OK);
    wait_health(p.admin, 1).await;
    unsafe { libc::kill(p.child.id() as i32, libc::SIGTERM) };
    let out = tokio::task::spawn_blocking(move || {
        let mut out = String::new();
        use std::io::Read;
        p.child
            .stdout
            .take()
            .unwrap()
            .read_to_string(&mut out)
            .unwrap();
        let _ = p.child.wait();
        out
    })
    .await
    .unwrap();
    let lines: Vec<&str> = out.lines().filter(|l| !l.is_empty()).collect();
    assert!(!lines.is_empty());
    for l in lines {
        let v: serde_json::Value =
            serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l}: {e}"));
        assert!(v.get("level").is_some() || v.get("code").is_some(), "{l}");
    }
    // No agent at all: health fails.
    assert_eq!(health(free_port()), 1);
}

#[test]
fn missing_settings_are_usage_errors() {
    let out = Command::new(env!("CARGO_BIN_EXE_taskmesh-agent"))
        .env_clear()
        .env("TASKMESH_CONFIG", "file:///nonexistent")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("APPMESH_RESOURCE_ARN"));
    let out = Command::new(env!("CARGO_BIN_EXE_taskmesh-agent"))
        .env_clear()
        .env("APPMESH_RESOURCE_ARN", "mesh/m/virtualNode/n")
        .env("TASKMESH_CONFIG", "ftp://x")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("ftp://x"));
}
