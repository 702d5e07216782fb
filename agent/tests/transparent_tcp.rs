//! tcpRoutes use the endpoint sets too, through a real iptables REDIRECT in a network namespace
//! (`SO_ORIGINAL_DST` is how a tcpRoute is found): three endpoints behind one `ENDPOINTS` name
//! in the namespace's hosts file, one of them dead (nothing listens). The first connection that
//! lands on it fails and, with `outlierDetection {maxServerErrors: 1}`, ejects it; every later
//! connection reaches a live endpoint, and both live ones get connections. Needs root (CI runs
//! as root).

mod support;

use std::io::{Read, Write};

use serde_json::json;
use support::netns::{admin_get, connect, start_transparent_agent, std_listener};
use taskmesh_e2e::netns::Netns;

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
    let agent = start_transparent_agent(&ns, &doc.to_string(), "front", "7000");

    let mut failed = 0;
    let mut reached = std::collections::BTreeMap::<String, u32>::new();
    for _ in 0..30 {
        match greeting(&ns) {
            Some(g) => *reached.entry(g).or_default() += 1,
            None => failed += 1,
        }
    }
    let clusters = admin_get(&ns, "/clusters?format=text");
    drop(agent);

    // Without the endpoint sets (one endpoint per connection, round robin) a third would fail.
    assert!(failed <= 1, "{failed} connections failed: {reached:?}");
    assert_eq!(reached.len(), 2, "both live endpoints used: {reached:?}");
    assert!(
        clusters.contains("::127.0.0.2:7100::health_flags::/failed_outlier_check"),
        "{clusters}"
    );
}
