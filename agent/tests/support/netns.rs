//! The agent as ECS runs it, inside a real network namespace: the binary as uid 1337 (ECS's
//! `IgnoredUID`, exempt from the redirect) and an iptables `REDIRECT` of the app's outbound ports
//! to the egress listener, so the agent learns each connection's original destination from
//! `SO_ORIGINAL_DST`. Needs root (CI runs as root). Used by `transparent*.rs` and
//! `idle_timeouts.rs`.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use taskmesh_e2e::netns::Netns;

/// A listener bound inside `ns`.
pub fn std_listener(ns: &Netns, addr: &str) -> tokio::net::TcpListener {
    let l = ns
        .enter(|| std::net::TcpListener::bind(addr))
        .expect("enter namespace")
        .expect("bind inside namespace");
    l.set_nonblocking(true).unwrap();
    tokio::net::TcpListener::from_std(l).unwrap()
}

/// A blocking connection made from inside `ns` (5 s read timeout).
pub fn connect(ns: &Netns, addr: &str) -> std::io::Result<TcpStream> {
    let s = ns
        .enter(|| TcpStream::connect(addr))
        .expect("enter namespace")?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    Ok(s)
}

/// The agent binary running in a namespace; killed when dropped.
pub struct TransparentAgent {
    child: Child,
    _dir: tempfile::TempDir,
}

impl Drop for TransparentAgent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Redirects the app's (every uid but 1337) outbound TCP to `dports` (comma-separated) to
/// 127.0.0.1:15001, starts the agent binary as uid 1337 as node `node` of the mesh document
/// `doc`, and waits (up to 15 s) until its admin port answers.
pub fn start_transparent_agent(
    ns: &Netns,
    doc: &str,
    node: &str,
    dports: &str,
) -> TransparentAgent {
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
        dports,
        "-j",
        "REDIRECT",
        "--to-ports",
        "15001",
    ])
    .expect("iptables REDIRECT inside the namespace");
    // uid 1337 must be able to write its cache beside the document.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let mut cmd = ns.command_as(1337, 1337, env!("CARGO_BIN_EXE_taskmesh-agent"));
    cmd.env("APPMESH_RESOURCE_ARN", format!("mesh/m/virtualNode/{node}"))
        .env("TASKMESH_CONFIG", format!("file://{}", docp.display()))
        .env("TASKMESH_CACHE", dir.path().join("cache.json"))
        .stdout(Stdio::null());
    let child = cmd.spawn().unwrap();
    let agent = TransparentAgent { child, _dir: dir };
    let deadline = Instant::now() + Duration::from_secs(15);
    while connect(ns, "127.0.0.1:9901").is_err() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(300));
    agent
}

/// `GET path` on the namespaced agent's admin port; the whole answer (head and body).
pub fn admin_get(ns: &Netns, path: &str) -> String {
    let mut s = connect(ns, "127.0.0.1:9901").unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}
