//! The network-namespace test support itself: names, loopback, exec as root and as another
//! uid, hosts entries, entering from a thread, cleanup on drop and on panic, and the sweep of
//! namespaces left by crashed runs. Needs root, like every namespace test.

use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use taskmesh_e2e::netns::{Netns, sweep_stale};

fn exists(path: impl AsRef<Path>) -> bool {
    path.as_ref().exists()
}

#[test]
fn create_gives_a_unique_named_namespace_with_loopback_up() {
    let a = Netns::create("tmx-ns").expect("create namespace");
    let b = Netns::create("tmx-ns").expect("create namespace");
    assert_ne!(a.name(), b.name());
    let own = format!("tmx-ns-{}-", std::process::id());
    assert!(a.name().starts_with(&own), "{}", a.name());
    assert!(exists(a.path()), "{} missing", a.path().display());
    let hosts = std::fs::read_to_string(a.hosts_path()).expect("hosts file");
    assert!(hosts.contains("127.0.0.1\tlocalhost"), "{hosts}");

    let lo = a
        .exec(&["ip", "-o", "link", "show", "lo"])
        .expect("ip link");
    assert!(lo.contains(",UP,"), "loopback not up: {lo}");
    // Only loopback: nothing of the machine's interfaces is visible inside.
    let links = a.exec(&["ip", "-o", "link", "show"]).expect("ip link");
    assert_eq!(links.lines().count(), 1, "{links}");
}

#[test]
fn drop_deletes_the_namespace_its_processes_and_hosts_dir() {
    let ns = Netns::create("tmx-ns").expect("create namespace");
    let (path, etc) = (ns.path(), ns.hosts_path().parent().map(Path::to_path_buf));
    let mut sleeper = ns
        .command("sleep")
        .arg("600")
        .stdin(Stdio::null())
        .spawn()
        .expect("start sleep in the namespace");
    let deadline = Instant::now() + Duration::from_secs(5);
    while !ns.pids().contains(&sleeper.id()) {
        assert!(
            Instant::now() < deadline,
            "sleep never showed up in {}",
            ns.name()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(ns);
    assert!(!exists(&path), "{} still exists", path.display());
    let etc = etc.expect("hosts file has a directory");
    assert!(!exists(&etc), "{} still exists", etc.display());
    let status = sleeper.wait().expect("reap sleep");
    assert!(!status.success(), "sleep should have been killed: {status}");
}

#[test]
fn a_panicking_test_still_cleans_up() {
    let mut name = None;
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let ns = Netns::create("tmx-ns").expect("create namespace");
        name = Some((ns.path(), ns.hosts_path()));
        panic!("test failure inside a namespace test");
    }));
    assert!(result.is_err());
    let (path, hosts) = name.expect("namespace was created");
    assert!(!exists(&path), "{} survived the panic", path.display());
    assert!(!exists(&hosts), "{} survived the panic", hosts.display());
}

#[test]
fn exec_as_runs_with_that_uid_and_gid_only() {
    let ns = Netns::create("tmx-ns").expect("create namespace");
    assert_eq!(ns.exec(&["id", "-u"]).expect("id").trim(), "0");
    assert_eq!(
        ns.exec_as(1000, 1001, &["id", "-u"]).expect("id").trim(),
        "1000"
    );
    assert_eq!(
        ns.exec_as(1000, 1001, &["id", "-G"]).expect("id").trim(),
        "1001"
    );
    let err = ns
        .exec_as(1000, 1000, &["ip", "link", "add", "d0", "type", "dummy"])
        .expect_err("uid 1000 has no NET_ADMIN");
    assert!(err.to_string().contains("ip link add d0"), "{err}");
}

#[test]
fn hosts_entries_resolve_inside_only() {
    let ns = Netns::create("tmx-ns").expect("create namespace");
    let ip = "10.254.0.7".parse().expect("ip");
    ns.add_host(ip, &["colorteller.colorapp.local", "colorteller"])
        .expect("add host");
    let resolved = ns
        .exec(&["getent", "hosts", "colorteller.colorapp.local"])
        .expect("getent inside");
    assert_eq!(
        resolved.split_whitespace().collect::<Vec<_>>(),
        ["10.254.0.7", "colorteller.colorapp.local", "colorteller"]
    );
    let outside = Command::new("getent")
        .args(["hosts", "colorteller.colorapp.local"])
        .output()
        .expect("getent outside");
    assert!(!outside.status.success(), "resolved outside the namespace");
}

#[test]
fn enter_creates_sockets_inside_the_namespace() {
    let ns = Netns::create("tmx-ns").expect("create namespace");
    let listener = ns
        .enter(|| TcpListener::bind((Ipv4Addr::LOCALHOST, 0)))
        .expect("enter")
        .expect("bind inside");
    let port = listener.local_addr().expect("addr").port();
    // The test thread is still in the root namespace: the port is not there.
    let outside = TcpStream::connect_timeout(
        &(Ipv4Addr::LOCALHOST, port).into(),
        Duration::from_millis(300),
    );
    // (Another process may own the same port number outside; then it is not our listener.)
    listener.set_nonblocking(true).expect("nonblocking");
    drop(outside);
    assert!(
        listener.accept().is_err(),
        "a root-namespace connect reached the namespace"
    );
    let inside = ns
        .enter(|| TcpStream::connect((Ipv4Addr::LOCALHOST, port)))
        .expect("enter")
        .expect("connect inside");
    drop(inside);
    listener.set_nonblocking(false).expect("blocking");
    listener
        .accept()
        .expect("accept the connection made inside");
}

#[test]
fn stale_namespaces_of_dead_runs_are_swept_live_ones_kept() {
    let prefix = "tmx-sweep";
    // A pid that is gone: a child that already exited and was reaped.
    let mut done = Command::new("true").spawn().expect("spawn true");
    let dead = done.id();
    done.wait().expect("reap true");
    assert!(
        !exists(format!("/proc/{dead}")),
        "pid {dead} was reused already"
    );
    // A pid that is alive and not ours.
    let mut alive = Command::new("sleep")
        .arg("600")
        .spawn()
        .expect("spawn sleep");
    let live = alive.id();

    let stale = format!("{prefix}-{dead}-0");
    let kept = format!("{prefix}-{live}-0");
    for name in [&stale, &kept] {
        let status = Command::new("ip")
            .args(["netns", "add", name])
            .status()
            .expect("ip netns add");
        assert!(status.success(), "ip netns add {name}");
        std::fs::create_dir_all(format!("/etc/netns/{name}")).expect("etc dir");
    }

    let removed = sweep_stale(prefix);
    let stale_gone =
        !exists(format!("/run/netns/{stale}")) && !exists(format!("/etc/netns/{stale}"));
    let kept_there = exists(format!("/run/netns/{kept}"));
    // Clean up the live one ourselves before asserting.
    let _ = Command::new("ip").args(["netns", "del", &kept]).status();
    let _ = std::fs::remove_dir_all(format!("/etc/netns/{kept}"));
    let _ = alive.kill();
    let _ = alive.wait();

    assert_eq!(removed, vec![stale.clone()]);
    assert!(stale_gone, "{stale} was not swept");
    assert!(kept_there, "{kept} belongs to a live process and must stay");
}
