//! Tasks joined by a [`Lan`]: addresses, TCP over IPv4 and IPv6 between namespaces, the bridge
//! kept inside its hub namespace, distinct subnets per LAN, and cleanup. Needs root.

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::process::Command;

use taskmesh_e2e::netns::{Lan, Netns};

/// Sends a line from `client` to a listener in `server` at `ip`, and returns what arrived
/// and the peer address the server saw.
fn round_trip(server: &Netns, client: &Netns, ip: IpAddr) -> (String, IpAddr) {
    let listener = server
        .enter(|| TcpListener::bind(SocketAddr::new(ip, 0)))
        .expect("enter server")
        .expect("bind on the LAN address");
    let port = listener.local_addr().expect("addr").port();
    let mut stream = client
        .enter(|| TcpStream::connect(SocketAddr::new(ip, port)))
        .expect("enter client")
        .expect("connect across the bridge");
    stream.write_all(b"hello over the bridge").expect("write");
    drop(stream);
    let (mut accepted, peer) = listener.accept().expect("accept");
    let mut text = String::new();
    accepted.read_to_string(&mut text).expect("read");
    (text, peer.ip())
}

#[test]
fn tasks_on_a_lan_reach_each_other_over_ipv4_and_ipv6() {
    let lan = Lan::create("tmx-lan").expect("create LAN");
    let a = lan.join("tmx-lan").expect("join a");
    let b = lan.join("tmx-lan").expect("join b");
    let (a4, b4) = (a.ipv4().expect("a v4"), b.ipv4().expect("b v4"));
    let (a6, b6) = (a.ipv6().expect("a v6"), b.ipv6().expect("b v6"));
    assert_eq!((a4, b4), (lan.ipv4_host(1), lan.ipv4_host(2)));
    assert_eq!((a6, b6), (lan.ipv6_host(1), lan.ipv6_host(2)));

    let (text, peer) = round_trip(&a, &b, IpAddr::V4(a4));
    assert_eq!(text, "hello over the bridge");
    assert_eq!(peer, IpAddr::V4(b4));
    let (text, peer) = round_trip(&b, &a, IpAddr::V6(b6));
    assert_eq!(text, "hello over the bridge");
    assert_eq!(peer, IpAddr::V6(a6));

    let addresses = a
        .exec(&["ip", "-o", "addr", "show", "dev", "eth0"])
        .expect("ip addr");
    assert!(addresses.contains(&format!("{a4}/24")), "{addresses}");
    assert!(addresses.contains(&format!("{a6}/64")), "{addresses}");
}

#[test]
fn names_in_the_hosts_file_resolve_to_lan_addresses() {
    let lan = Lan::create("tmx-lan").expect("create LAN");
    let app = lan.join("tmx-lan").expect("join app");
    let teller = lan.join("tmx-lan").expect("join teller");
    let teller_ip = IpAddr::V4(teller.ipv4().expect("v4"));
    app.add_host(teller_ip, &["colorteller-white.colorapp.local"])
        .expect("hosts entry");
    let out = app
        .exec(&["getent", "ahostsv4", "colorteller-white.colorapp.local"])
        .expect("getent");
    assert!(out.starts_with(&teller_ip.to_string()), "{out}");
}

#[test]
fn the_bridge_and_addresses_stay_inside_our_namespaces() {
    let lan = Lan::create("tmx-lan").expect("create LAN");
    let task = lan.join("tmx-lan").expect("join");
    let ip = task.ipv4().expect("v4").to_string();
    let root = Command::new("ip")
        .args(["-o", "addr"])
        .output()
        .expect("ip addr");
    let root = String::from_utf8_lossy(&root.stdout);
    assert!(
        !root.contains(&format!("{ip}/")),
        "{ip} appeared in the root namespace"
    );
    let hub = lan
        .hub()
        .exec(&["ip", "-o", "link", "show", "master", "br0"])
        .expect("ports");
    assert_eq!(hub.lines().count(), 1, "one task port on the bridge: {hub}");

    let hub_path = lan.hub().path();
    let task_path = task.path();
    drop(task);
    let hub = lan
        .hub()
        .exec(&["ip", "-o", "link", "show", "master", "br0"])
        .expect("ports");
    assert_eq!(hub.trim(), "", "the task's port left with the task");
    drop(lan);
    assert!(!hub_path.exists() && !task_path.exists());
}

#[test]
fn every_lan_gets_its_own_subnets() {
    let one = Lan::create("tmx-lan").expect("create LAN");
    let two = Lan::create("tmx-lan").expect("create LAN");
    assert_ne!(one.ipv4_subnet(), two.ipv4_subnet());
    assert_ne!(one.ipv6_subnet(), two.ipv6_subnet());
    assert_eq!(one.ipv4_subnet().1, 24);
    assert_eq!(one.ipv6_subnet().1, 64);
}
