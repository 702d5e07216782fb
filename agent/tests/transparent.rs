//! Transparent (redirected) egress inside a real network namespace with an iptables REDIRECT,
//! as ECS's proxy configuration sets it up: the original destination comes from
//! `SO_ORIGINAL_DST`; a tcpRoute forwards by port, HTTP is routed by Host on the backend's port,
//! and under DROP_ALL an unknown TCP destination is closed. Needs root (CI runs as root).

mod support;

use std::io::{Read, Write};

use serde_json::json;
use support::DocBuilder;
use support::netns::{connect, start_transparent_agent, std_listener};
use taskmesh_e2e::netns::Netns;

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
    let agent = start_transparent_agent(&ns, &doc, "front", "7000,7300,7443,9080");

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

    drop(agent);
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
