//! tcpRoutes use the endpoint sets too, through a real iptables REDIRECT in a network namespace
//! (`SO_ORIGINAL_DST` is how a tcpRoute is found): three endpoints behind one `ENDPOINTS` name
//! in the namespace's hosts file, one of them dead (nothing listens). The first connection that
//! lands on it fails and, with `outlierDetection {maxServerErrors: 1}`, ejects it; every later
//! connection reaches a live endpoint, and both live ones get connections. Needs root (CI runs
//! as root).

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::json;
use taskmesh_e2e::netns::Netns;

fn std_listener(ns: &Netns, addr: &str) -> tokio::net::TcpListener {
    let l = ns
        .enter(|| std::net::TcpListener::bind(addr))
        .expect("enter namespace")
        .expect("bind inside namespace");
    l.set_nonblocking(true).unwrap();
    tokio::net::TcpListener::from_std(l).unwrap()
}

fn connect(ns: &Netns, addr: &str) -> std::io::Result<TcpStream> {
    let s = ns
        .enter(|| TcpStream::connect(addr))
        .expect("enter namespace")?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    Ok(s)
}

/// One connection to the tcpRoute's port: the greeting of the endpoint it reached, or `None`
/// when the agent closed it (no endpoint reached).
fn greeting(ns: &Netns) -> Option<String> {
    let mut s = connect(ns, "127.0.0.1:7000").unwrap();
    s.write_all(b"ping").ok()?;
    let mut buf = [0u8; 10];
    s.read_exact(&mut buf).ok()?;
    let text = String::from_utf8_lossy(&buf).into_owned();
    assert!(text.ends_with("ping"), "{text}");
    Some(text[..6].to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_route_connections_avoid_an_ejected_endpoint() {
    let ns = Netns::create("tm-tcplb").expect("network namespace (needs root)");
    support::tcp_echo_on(std_listener(&ns, "127.0.0.1:7100"), "one   ");
    support::tcp_echo_on(std_listener(&ns, "127.0.0.3:7100"), "three ");
    for ip in ["127.0.0.1", "127.0.0.2", "127.0.0.3"] {
        ns.add_host(ip.parse().unwrap(), &["db.test"]).unwrap();
    }
    let doc = json!({"meshName": "m",
        "virtualServices": [{"virtualServiceName": "db.local",
            "spec": {"provider": {"virtualRouter": {"virtualRouterName": "rdb"}}}}],
        "virtualRouters": [{"virtualRouterName": "rdb",
            "spec": {"listeners": [{"portMapping": {"port": 7000, "protocol": "tcp"}}]}}],
        "routes": [{"virtualRouterName": "rdb", "routeName": "db",
            "spec": {"tcpRoute": {"action": {"weightedTargets": [{"virtualNode": "db", "weight": 1}]}}}}],
        "virtualNodes": [
            {"virtualNodeName": "front", "spec": {
                "listeners": [{"portMapping": {"port": 8080, "protocol": "http"}}],
                "serviceDiscovery": {"dns": {"hostname": "127.0.0.1"}},
                "backends": [{"virtualService": {"virtualServiceName": "db.local"}}]}},
            {"virtualNodeName": "db", "spec": {
                "listeners": [{"portMapping": {"port": 7100, "protocol": "tcp"},
                    "outlierDetection": {"maxServerErrors": 1, "interval": {"value": 10, "unit": "s"},
                        "baseEjectionDuration": {"value": 60, "unit": "s"}, "maxEjectionPercent": 50}}],
                "serviceDiscovery": {"dns": {"hostname": "db.test", "responseType": "ENDPOINTS"}}}}]});
    let dir = tempfile::tempdir().unwrap();
    let docp = dir.path().join("mesh.json");
    std::fs::write(&docp, doc.to_string()).unwrap();
    ns.exec(&[
        "iptables",
        "-t",
        "nat",
        "-A",
        "OUTPUT",
        "-p",
        "tcp",
        "-m",
        "owner",
        "!",
        "--uid-owner",
        "1337",
        "--dport",
        "7000",
        "-j",
        "REDIRECT",
        "--to-ports",
        "15001",
    ])
    .expect("iptables REDIRECT inside the namespace");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let mut cmd = ns.command_as(1337, 1337, env!("CARGO_BIN_EXE_taskmesh-agent"));
    cmd.env("APPMESH_RESOURCE_ARN", "mesh/m/virtualNode/front")
        .env("TASKMESH_CONFIG", format!("file://{}", docp.display()))
        .env("TASKMESH_CACHE", dir.path().join("cache.json"))
        .stdout(Stdio::null());
    let mut child = cmd.spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    while connect(&ns, "127.0.0.1:9901").is_err() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(300));

    let mut failed = 0;
    let mut reached = std::collections::BTreeMap::<String, u32>::new();
    for _ in 0..30 {
        match greeting(&ns) {
            Some(g) => *reached.entry(g).or_default() += 1,
            None => failed += 1,
        }
    }
    let mut s = connect(&ns, "127.0.0.1:9901").unwrap();
    s.write_all(b"GET /clusters?format=text HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut clusters = String::new();
    let _ = s.read_to_string(&mut clusters);
    let _ = child.kill();
    let _ = child.wait();

    // Without the endpoint sets (one endpoint per connection, round robin) a third would fail.
    assert!(failed <= 1, "{failed} connections failed: {reached:?}");
    assert_eq!(reached.len(), 2, "both live endpoints used: {reached:?}");
    assert!(
        clusters.contains("::127.0.0.2:7100::health_flags::/failed_outlier_check"),
        "{clusters}"
    );
}
