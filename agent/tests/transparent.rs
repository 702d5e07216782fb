//! Transparent (redirected) egress inside a real network namespace with an iptables REDIRECT,
//! as ECS's proxy configuration sets it up: the original destination comes from
//! `SO_ORIGINAL_DST`; a tcpRoute forwards by port, HTTP is routed by Host on the backend's port,
//! and under DROP_ALL an unknown TCP destination is closed. Needs root (CI runs as root).

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::json;
use support::DocBuilder;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirected_tcp_and_http_use_the_original_destination() {
    let ns = Netns::create("tm-agent").expect("network namespace (needs root)");
    support::tcp_echo_on(std_listener(&ns, "127.0.0.1:7100"), "db says ");
    support::tcp_echo_on(std_listener(&ns, "127.0.0.1:7443"), "aws says ");
    let blue = support::http_backend_on(std_listener(&ns, "127.0.0.1:7200"), "blue");
    let doc = DocBuilder::new("DROP_ALL")
        .node("front", 8080, "http", &["svc.local", "db.local"])
        .node("blue", 7200, "http", &[])
        .node("db", 7100, "tcp", &[])
        .routed_service("svc.local", "r", 9080, "http")
        .http_route("r", "all", None, json!({"prefix": "/"}), &[("blue", 1)])
        .routed_service("db.local", "rdb", 7000, "tcp")
        .tcp_route("rdb", "db", &[("db", 1)])
        .json();
    let dir = tempfile::tempdir().unwrap();
    let docp = dir.path().join("mesh.json");
    std::fs::write(&docp, doc).unwrap();
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
        "-m",
        "multiport",
        "--dports",
        "7000,7300,7443,9080",
        "-j",
        "REDIRECT",
        "--to-ports",
        "15001",
    ])
    .expect("iptables REDIRECT inside the namespace");
    // The agent runs as uid 1337, exempt from the redirect (as ECS's IgnoredUID).
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

    // tcpRoute by original port 7000 -> node db on 7100.
    let mut s = connect(&ns, "127.0.0.1:7000").unwrap();
    s.write_all(b"ping").unwrap();
    let mut buf = [0u8; 12];
    s.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"db says ping");

    // HTTP on the router's port 9080, by Host -> blue on 7200.
    let mut s = connect(&ns, "127.0.0.1:9080").unwrap();
    s.write_all(b"GET /x HTTP/1.1\r\nHost: svc.local\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    assert!(out.contains("x-backend: blue"), "{out}");
    assert_eq!(blue.hits.load(std::sync::atomic::Ordering::Relaxed), 1);

    // DROP_ALL: an unknown TCP destination (7300) is closed without an answer.
    let mut s = connect(&ns, "127.0.0.1:7300").unwrap();
    s.write_all(b"\x16\x03\x01 not http").unwrap();
    let mut out = Vec::new();
    let n = s.read_to_end(&mut out).unwrap_or(0);
    assert_eq!(n, 0, "closed without data");

    // DROP_ALL still lets TLS to *.amazonaws.com through (by SNI) to the original destination.
    let hello = client_hello("sts.us-east-1.amazonaws.com");
    let mut s = connect(&ns, "127.0.0.1:7443").unwrap();
    s.write_all(&hello).unwrap();
    let mut buf = vec![0u8; 9 + hello.len()];
    s.read_exact(&mut buf).unwrap();
    assert_eq!(&buf[..9], b"aws says ");
    assert_eq!(&buf[9..], &hello[..]);
    let mut s = connect(&ns, "127.0.0.1:7443").unwrap();
    s.write_all(&client_hello("example.com")).unwrap();
    let mut out = Vec::new();
    assert_eq!(
        s.read_to_end(&mut out).unwrap_or(0),
        0,
        "other TLS destinations are closed"
    );

    let _ = child.kill();
    let _ = child.wait();
}

/// A real TLS ClientHello (from rustls) for `host`.
fn client_hello(host: &str) -> Vec<u8> {
    let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(rustls::RootCertStore::empty())
    .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from(host.to_string()).unwrap();
    let mut conn = rustls::ClientConnection::new(std::sync::Arc::new(config), name).unwrap();
    let mut out = Vec::new();
    conn.write_tls(&mut out).unwrap();
    out
}
