//! `taskmesh-agent proxy-init` for real, as root, in network namespaces of its own: the exact
//! nat rules for IPv4 and IPv6 (read back with `iptables-save`), idempotence, `--clean`, the
//! preview-era `APPMESH_*` names, and live traffic: egress redirected to the egress port with its
//! original destination intact, except for the ignored uid, ports and IPs; ingress to the app
//! port landing on the ingress port. Missing iptables and missing NET_ADMIN fail clearly.

use std::collections::BTreeMap;
use std::io::{ErrorKind, Read};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, Socket, Type};
use taskmesh_e2e::netns::{Lan, Netns};

const AGENT: &str = env!("CARGO_BIN_EXE_taskmesh-agent");
const PREFIX: &str = "tmx-pi";
const APP_UID: u32 = 1000;
const AGENT_UID: u32 = 1337;
const INGRESS_PORT: u16 = 15000;
const EGRESS_PORT: u16 = 15001;
const APP_PORT: u16 = 9080;
const IGNORED_PORT: u16 = 2222;
const SERVICE_PORT: u16 = 8080;

/// `taskmesh-agent proxy-init ARGS` inside `ns` with only `env` (and PATH) in its environment.
fn proxy_init(ns: &Netns, args: &[&str], env: &[(&str, String)]) -> Output {
    let path = std::env::var("PATH").unwrap_or_else(|_| "/usr/sbin:/usr/bin:/sbin:/bin".into());
    ns.command(AGENT)
        .arg("proxy-init")
        .args(args)
        .env_clear()
        .env("PATH", path)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .output()
        .expect("start taskmesh-agent")
}

fn assert_ok(output: &Output, what: &str) {
    assert!(
        output.status.success(),
        "{what} failed ({}):\nstdout: {}\nstderr: {}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// The transformer's environment for a task with app port 9080 and the ignored entries given.
fn task_env(ignored_ips: &str) -> Vec<(&'static str, String)> {
    vec![
        ("TASKMESH_IGNORED_UID", AGENT_UID.to_string()),
        ("TASKMESH_PROXY_INGRESS_PORT", INGRESS_PORT.to_string()),
        ("TASKMESH_PROXY_EGRESS_PORT", EGRESS_PORT.to_string()),
        ("TASKMESH_APP_PORTS", APP_PORT.to_string()),
        ("TASKMESH_EGRESS_IGNORED_IPS", ignored_ips.to_owned()),
        ("TASKMESH_EGRESS_IGNORED_PORTS", IGNORED_PORT.to_string()),
        ("TASKMESH_ENABLE_IPV6", "true".to_owned()),
    ]
}

/// `iptables-save -t nat` (or ip6tables) without comments and counters.
fn nat_table(ns: &Netns, save: &str) -> String {
    ns.exec(&[save, "-t", "nat"])
        .expect("save nat table")
        .lines()
        .filter(|line| !line.starts_with('#'))
        .map(|line| line.replace(" [0:0]", ""))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Chain declarations and each chain's rules, in order.
fn chains(table: &str) -> BTreeMap<String, Vec<String>> {
    let mut chains: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for line in table.lines() {
        if let Some(decl) = line.strip_prefix(':') {
            let name = decl.split_whitespace().next().unwrap_or_default();
            chains.entry(name.to_owned()).or_default();
        } else if let Some(rule) = line.strip_prefix("-A ") {
            let (chain, spec) = rule.split_once(' ').unwrap_or((rule, ""));
            chains
                .entry(chain.to_owned())
                .or_default()
                .push(spec.to_owned());
        }
    }
    chains
}

fn expected(entries: &[(&str, &[&str])]) -> BTreeMap<String, Vec<String>> {
    entries
        .iter()
        .map(|(chain, rules)| {
            (
                (*chain).to_owned(),
                rules.iter().map(|r| (*r).to_owned()).collect(),
            )
        })
        .collect()
}

fn expected_v4(ignored: Ipv4Addr) -> BTreeMap<String, Vec<String>> {
    let ignored = format!("-d {ignored}/32 -p tcp -j RETURN");
    expected(&[
        (
            "PREROUTING",
            &["-p tcp -m addrtype ! --src-type LOCAL -j APPMESH_INGRESS"],
        ),
        ("INPUT", &[]),
        (
            "OUTPUT",
            &["-p tcp -m addrtype ! --dst-type LOCAL -j APPMESH_EGRESS"],
        ),
        ("POSTROUTING", &[]),
        (
            "APPMESH_INGRESS",
            &["-p tcp -m multiport --dports 9080 -j REDIRECT --to-ports 15000"],
        ),
        (
            "APPMESH_EGRESS",
            &[
                "-m owner --uid-owner 1337 -j RETURN",
                "-p tcp -m multiport --dports 2222 -j RETURN",
                &ignored,
                "-d 169.254.170.2/32 -p tcp -j RETURN",
                "-d 169.254.169.254/32 -p tcp -j RETURN",
                "-p tcp -j REDIRECT --to-ports 15001",
            ],
        ),
    ])
}

fn expected_v6(ignored: Ipv6Addr) -> BTreeMap<String, Vec<String>> {
    let ignored = format!("-d {ignored}/128 -p tcp -j RETURN");
    expected(&[
        (
            "PREROUTING",
            &["-p tcp -m addrtype ! --src-type LOCAL -j APPMESH_INGRESS"],
        ),
        ("INPUT", &[]),
        (
            "OUTPUT",
            &["-p tcp -m addrtype ! --dst-type LOCAL -j APPMESH_EGRESS"],
        ),
        ("POSTROUTING", &[]),
        (
            "APPMESH_INGRESS",
            &["-p tcp -m multiport --dports 9080 -j REDIRECT --to-ports 15000"],
        ),
        (
            "APPMESH_EGRESS",
            &[
                "-m owner --uid-owner 1337 -j RETURN",
                "-p tcp -m multiport --dports 2222 -j RETURN",
                &ignored,
                "-p tcp -j REDIRECT --to-ports 15001",
            ],
        ),
    ])
}

fn builtin_only() -> BTreeMap<String, Vec<String>> {
    expected(&[
        ("PREROUTING", &[]),
        ("INPUT", &[]),
        ("OUTPUT", &[]),
        ("POSTROUTING", &[]),
    ])
}

#[test]
fn installs_the_cni_rules_for_both_families_idempotently_and_cleans_them() {
    let lan = Lan::create(PREFIX).expect("create LAN");
    let app = lan.join(PREFIX).expect("join app task");
    let ignored4 = Ipv4Addr::new(192, 0, 2, 10);
    let ignored6: Ipv6Addr = "2001:db8::10".parse().expect("v6");
    let env = task_env(&format!("{ignored4},{ignored6}"));

    assert_ok(&proxy_init(&app, &[], &env), "first proxy-init");
    let first4 = nat_table(&app, "iptables-save");
    let first6 = nat_table(&app, "ip6tables-save");
    assert_eq!(chains(&first4), expected_v4(ignored4), "{first4}");
    assert_eq!(chains(&first6), expected_v6(ignored6), "{first6}");

    assert_ok(&proxy_init(&app, &[], &env), "second proxy-init");
    assert_eq!(
        nat_table(&app, "iptables-save"),
        first4,
        "IPv4 changed on rerun"
    );
    assert_eq!(
        nat_table(&app, "ip6tables-save"),
        first6,
        "IPv6 changed on rerun"
    );

    // Someone else's rule and chain stay; stray jumps into our chains (a duplicate, and one
    // inserted with another match) are removed, leaving exactly the plan.
    for rule in [
        "-A OUTPUT -p tcp -m addrtype ! --dst-type LOCAL -j APPMESH_EGRESS",
        "-I PREROUTING -p tcp -j APPMESH_INGRESS",
        "-N OTHER",
        "-A OTHER -p udp --dport 53 -j RETURN",
        "-A OUTPUT -p udp -j OTHER",
    ] {
        let mut args = vec!["iptables", "-t", "nat"];
        args.extend(rule.split(' '));
        app.exec(&args).expect("add a foreign rule");
    }
    assert_ok(&proxy_init(&app, &[], &env), "proxy-init over stray rules");
    let mut want = expected_v4(ignored4);
    want.get_mut("OUTPUT")
        .expect("OUTPUT")
        .push("-p udp -j OTHER".into());
    want.insert(
        "OTHER".into(),
        vec!["-p udp -m udp --dport 53 -j RETURN".into()],
    );
    let table = nat_table(&app, "iptables-save");
    assert_eq!(chains(&table), want, "{table}");

    // Reconfigured as egress only: the ingress chain and its jump go away.
    let egress_only: Vec<_> = env
        .iter()
        .filter(|(k, _)| !matches!(*k, "TASKMESH_APP_PORTS" | "TASKMESH_PROXY_INGRESS_PORT"))
        .cloned()
        .collect();
    assert_ok(
        &proxy_init(&app, &[], &egress_only),
        "egress-only proxy-init",
    );
    want.remove("APPMESH_INGRESS");
    want.insert("PREROUTING".into(), vec![]);
    assert_eq!(chains(&nat_table(&app, "iptables-save")), want);

    // --clean removes our chains and jumps, and nothing else.
    assert_ok(&proxy_init(&app, &["--clean"], &[]), "proxy-init --clean");
    let mut want = builtin_only();
    want.insert("OUTPUT".into(), vec!["-p udp -j OTHER".into()]);
    want.insert(
        "OTHER".into(),
        vec!["-p udp -m udp --dport 53 -j RETURN".into()],
    );
    let table = nat_table(&app, "iptables-save");
    assert_eq!(
        chains(&table),
        want,
        "iptables-save after --clean:\n{table}"
    );
    let table = nat_table(&app, "ip6tables-save");
    assert_eq!(
        chains(&table),
        builtin_only(),
        "ip6tables-save after --clean:\n{table}"
    );
    assert_ok(&proxy_init(&app, &["--clean"], &[]), "second --clean");
}

#[test]
fn preview_era_appmesh_names_install_the_same_rules() {
    let lan = Lan::create(PREFIX).expect("create LAN");
    let app = lan.join(PREFIX).expect("join app task");
    let legacy = [
        ("APPMESH_START_ENABLED", "1".to_owned()),
        ("APPMESH_IGNORE_UID", "1337".to_owned()),
        ("APPMESH_ENVOY_INGRESS_PORT", "15000".to_owned()),
        ("APPMESH_ENVOY_EGRESS_PORT", "15001".to_owned()),
        ("APPMESH_APP_PORTS", "9080".to_owned()),
        (
            "APPMESH_EGRESS_IGNORED_IP",
            "192.0.2.10,2001:db8::10".to_owned(),
        ),
        ("APPMESH_EGRESS_IGNORED_PORTS", "2222".to_owned()),
        ("APPMESH_ENABLE_IPV6", "1".to_owned()),
    ];
    assert_ok(
        &proxy_init(&app, &[], &legacy),
        "proxy-init with APPMESH_* names",
    );
    assert_eq!(
        chains(&nat_table(&app, "iptables-save")),
        expected_v4(Ipv4Addr::new(192, 0, 2, 10))
    );
    assert_eq!(
        chains(&nat_table(&app, "ip6tables-save")),
        expected_v6("2001:db8::10".parse().expect("v6"))
    );
}

#[test]
fn invalid_configuration_is_rejected_and_changes_nothing() {
    let ns = Netns::create(PREFIX).expect("create namespace");
    let mut env = task_env("");
    env.retain(|(k, _)| *k != "TASKMESH_PROXY_INGRESS_PORT");
    let output = proxy_init(&ns, &[], &env);
    assert!(
        !output.status.success(),
        "app ports without ingress port accepted"
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("proxyIngressPort"), "{stderr}");
    assert!(stderr.contains("TASKMESH_PROXY_INGRESS_PORT"), "{stderr}");
    assert_eq!(chains(&nat_table(&ns, "iptables-save")), builtin_only());
}

#[test]
fn missing_iptables_is_a_clear_error() {
    let ns = Netns::create(PREFIX).expect("create namespace");
    let empty = tempfile::tempdir().expect("empty dir");
    let mut command = ns.command("env");
    command
        .arg("-i")
        .arg(format!("PATH={}", empty.path().display()))
        .args(task_env("").iter().map(|(k, v)| format!("{k}={v}")))
        .args([AGENT, "proxy-init"]);
    let output = command.output().expect("start taskmesh-agent");
    assert!(!output.status.success(), "succeeded without iptables");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("`iptables-save` not found in PATH"),
        "{stderr}"
    );
    assert!(stderr.contains("apt-get install iptables"), "{stderr}");
}

#[test]
fn missing_net_admin_is_a_clear_error() {
    let ns = Netns::create(PREFIX).expect("create namespace");
    let env: Vec<String> = task_env("")
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    // Root without NET_ADMIN (dropped from the bounding set), then a plain user.
    let drop_cap = ns
        .command("setpriv")
        .args(["--bounding-set=-net_admin", "--inh-caps=-net_admin", "env"])
        .args(&env)
        .args([AGENT, "proxy-init"])
        .output()
        .expect("start taskmesh-agent");
    let as_user = ns
        .command_as(APP_UID, APP_UID, "env")
        .args(&env)
        .args([AGENT, "proxy-init"])
        .output()
        .expect("start taskmesh-agent");
    for output in [drop_cap, as_user] {
        assert!(!output.status.success(), "succeeded without NET_ADMIN");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains("NET_ADMIN"), "{stderr}");
        assert!(stderr.contains("was refused"), "{stderr}");
    }
    assert_eq!(chains(&nat_table(&ns, "iptables-save")), builtin_only());
}

/// A listener bound inside `ns`; `v6only` keeps IPv4 and IPv6 listeners on one port apart.
fn listen(ns: &Netns, addr: SocketAddr) -> TcpListener {
    ns.enter(move || -> std::io::Result<TcpListener> {
        let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
        if addr.is_ipv6() {
            socket.set_only_v6(true)?;
        }
        socket.set_reuse_address(true)?;
        socket.bind(&addr.into())?;
        socket.listen(16)?;
        socket.set_nonblocking(true)?;
        Ok(socket.into())
    })
    .expect("enter namespace")
    .unwrap_or_else(|err| panic!("listen on {addr} in {}: {err}", ns.name()))
}

/// A client in `ns`, as `uid`, that connects to `target` and sends `tag` (bash's /dev/tcp).
fn send_as(ns: &Netns, uid: u32, target: SocketAddr, tag: &str) {
    send_as_ids(ns, uid, uid, target, tag);
}

/// Like [`send_as`], with a gid of its own.
fn send_as_ids(ns: &Netns, uid: u32, gid: u32, target: SocketAddr, tag: &str) {
    let script = "exec 3<>\"/dev/tcp/$0/$1\" && printf %s \"$2\" >&3";
    let mut child = ns
        .command_as(uid, gid, "bash")
        .args(["-c", script])
        .arg(target.ip().to_string())
        .arg(target.port().to_string())
        .arg(tag)
        .spawn()
        .expect("start client");
    // A client whose SYN goes nowhere would hang: it fails the test by timeout instead.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match child.try_wait().expect("client status") {
            Some(status) => {
                assert!(
                    status.success(),
                    "client {tag} -> {target} failed: {status}"
                );
                return;
            }
            None if Instant::now() > deadline => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("client {tag} -> {target} (uid {uid}) did not connect within 10 s");
            }
            None => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

/// Accepts the next connection on `listener` (within 5 s) and returns what it sent and the
/// stream, for asking its original destination.
fn accept_tag(listener: &TcpListener, what: &str) -> (String, TcpStream) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match listener.accept() {
            Ok((stream, _)) => {
                stream.set_nonblocking(false).expect("blocking");
                stream
                    .set_read_timeout(Some(Duration::from_secs(5)))
                    .expect("timeout");
                let mut tag = String::new();
                (&stream).read_to_string(&mut tag).expect("read tag");
                return (tag, stream);
            }
            Err(err) if err.kind() == ErrorKind::WouldBlock && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(err) => panic!("nothing arrived at {what}: {err}"),
        }
    }
}

fn assert_nothing_pending(listener: &TcpListener, what: &str) {
    match listener.accept() {
        Err(err) if err.kind() == ErrorKind::WouldBlock => {}
        Ok((_, peer)) => panic!("unexpected connection from {peer} at {what}"),
        Err(err) => panic!("{what}: {err}"),
    }
}

/// The original destination of a redirected connection, through the agent's own
/// `SO_ORIGINAL_DST` / `IP6T_SO_ORIGINAL_DST` reader.
fn original_dst(stream: TcpStream) -> Option<SocketAddr> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .expect("tokio runtime");
    runtime.block_on(async move {
        stream.set_nonblocking(true).expect("nonblocking");
        let stream = tokio::net::TcpStream::from_std(stream).expect("tokio stream");
        taskmesh_agent::proxy::original_dst::original_dst(&stream)
    })
}

#[test]
fn egress_is_redirected_except_the_ignored_uid_ports_and_ips() {
    let lan = Lan::create(PREFIX).expect("create LAN");
    let app = lan.join(PREFIX).expect("join app task");
    let service = lan.join(PREFIX).expect("join service task");
    let ignored = lan.join(PREFIX).expect("join ignored task");
    let (svc4, svc6) = (
        IpAddr::V4(service.ipv4().expect("v4")),
        IpAddr::V6(service.ipv6().expect("v6")),
    );
    let (ign4, ign6) = (
        IpAddr::V4(ignored.ipv4().expect("v4")),
        IpAddr::V6(ignored.ipv6().expect("v6")),
    );
    let env = task_env(&format!("{ign4},{ign6}"));
    assert_ok(&proxy_init(&app, &[], &env), "proxy-init");

    let egress4 = listen(
        &app,
        SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), EGRESS_PORT),
    );
    let egress6 = listen(
        &app,
        SocketAddr::new(Ipv6Addr::UNSPECIFIED.into(), EGRESS_PORT),
    );
    let local = listen(&app, SocketAddr::new(Ipv4Addr::LOCALHOST.into(), 9999));
    let svc_listeners: Vec<_> = [svc4, svc6]
        .into_iter()
        .map(|ip| listen(&service, SocketAddr::new(ip, SERVICE_PORT)))
        .collect();
    let svc_ignored_port = listen(&service, SocketAddr::new(svc4, IGNORED_PORT));
    let ign_listeners: Vec<_> = [ign4, ign6]
        .into_iter()
        .map(|ip| listen(&ignored, SocketAddr::new(ip, SERVICE_PORT)))
        .collect();

    // The app (uid 1000) to another task: redirected, original destination kept.
    for (ip, listener) in [(svc4, &egress4), (svc6, &egress6)] {
        let target = SocketAddr::new(ip, SERVICE_PORT);
        send_as(&app, APP_UID, target, "app");
        let (tag, stream) = accept_tag(listener, "the egress port");
        assert_eq!(tag, "app");
        assert_eq!(original_dst(stream), Some(target), "original destination");
    }
    // The agent's uid (1337) is not looped back into itself.
    for (ip, listener) in [(svc4, &svc_listeners[0]), (svc6, &svc_listeners[1])] {
        send_as(&app, AGENT_UID, SocketAddr::new(ip, SERVICE_PORT), "agent");
        assert_eq!(accept_tag(listener, "the service (agent uid)").0, "agent");
    }
    // Ignored port and ignored IPs (both families) go straight out.
    send_as(&app, APP_UID, SocketAddr::new(svc4, IGNORED_PORT), "port");
    assert_eq!(accept_tag(&svc_ignored_port, "the ignored port").0, "port");
    for (ip, listener) in [(ign4, &ign_listeners[0]), (ign6, &ign_listeners[1])] {
        send_as(&app, APP_UID, SocketAddr::new(ip, SERVICE_PORT), "ip");
        assert_eq!(accept_tag(listener, "the ignored IP").0, "ip");
    }
    // Local destinations are never redirected.
    send_as(
        &app,
        APP_UID,
        SocketAddr::new(Ipv4Addr::LOCALHOST.into(), 9999),
        "local",
    );
    assert_eq!(accept_tag(&local, "a local listener").0, "local");

    for (listener, what) in [(&egress4, "egress v4"), (&egress6, "egress v6")] {
        assert_nothing_pending(listener, what);
    }
    for listener in svc_listeners.iter().chain(&ign_listeners) {
        assert_nothing_pending(listener, "a destination");
    }
}

#[test]
fn ingress_to_an_app_port_lands_on_the_ingress_port() {
    let lan = Lan::create(PREFIX).expect("create LAN");
    let app = lan.join(PREFIX).expect("join app task");
    let caller = lan.join(PREFIX).expect("join caller task");
    assert_ok(&proxy_init(&app, &[], &task_env("")), "proxy-init");

    let ingress4 = listen(
        &app,
        SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), INGRESS_PORT),
    );
    let ingress6 = listen(
        &app,
        SocketAddr::new(Ipv6Addr::UNSPECIFIED.into(), INGRESS_PORT),
    );
    let app4 = listen(
        &app,
        SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), APP_PORT),
    );
    for (ip, listener) in [
        (IpAddr::V4(app.ipv4().expect("v4")), &ingress4),
        (IpAddr::V6(app.ipv6().expect("v6")), &ingress6),
    ] {
        let target = SocketAddr::new(ip, APP_PORT);
        send_as(&caller, APP_UID, target, "inbound");
        let (tag, stream) = accept_tag(listener, "the ingress port");
        assert_eq!(tag, "inbound");
        assert_eq!(original_dst(stream), Some(target), "original destination");
    }
    // From inside the task (local source) the app port is reached directly.
    let own = SocketAddr::new(IpAddr::V4(app.ipv4().expect("v4")), APP_PORT);
    send_as(&app, APP_UID, own, "in-task");
    assert_eq!(accept_tag(&app4, "the app port").0, "in-task");
    assert_nothing_pending(&ingress4, "ingress v4");
    assert_nothing_pending(&app4, "the app port");
}

#[test]
fn dry_run_prints_the_plan_without_root_or_changes() {
    let output = Command::new(AGENT)
        .args(["proxy-init", "--dry-run"])
        .env_clear()
        .envs(
            task_env("10.9.8.7,fd00::7")
                .iter()
                .map(|(k, v)| (*k, v.as_str())),
        )
        .output()
        .expect("start taskmesh-agent");
    assert_ok(&output, "proxy-init --dry-run");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(
        stdout.lines().collect::<Vec<_>>(),
        [
            "iptables -t nat -N APPMESH_INGRESS",
            "iptables -t nat -A APPMESH_INGRESS -p tcp -m multiport --dports 9080 -j REDIRECT --to-port 15000",
            "iptables -t nat -A PREROUTING -p tcp -m addrtype ! --src-type LOCAL -j APPMESH_INGRESS",
            "iptables -t nat -N APPMESH_EGRESS",
            "iptables -t nat -A APPMESH_EGRESS -m owner --uid-owner 1337 -j RETURN",
            "iptables -t nat -A APPMESH_EGRESS -p tcp -m multiport --dports 2222 -j RETURN",
            "iptables -t nat -A APPMESH_EGRESS -p tcp -d 10.9.8.7,169.254.170.2,169.254.169.254 -j RETURN",
            "iptables -t nat -A APPMESH_EGRESS -p tcp -j REDIRECT --to 15001",
            "iptables -t nat -A OUTPUT -p tcp -m addrtype ! --dst-type LOCAL -j APPMESH_EGRESS",
            "ip6tables -t nat -N APPMESH_INGRESS",
            "ip6tables -t nat -A APPMESH_INGRESS -p tcp -m multiport --dports 9080 -j REDIRECT --to-port 15000",
            "ip6tables -t nat -A PREROUTING -p tcp -m addrtype ! --src-type LOCAL -j APPMESH_INGRESS",
            "ip6tables -t nat -N APPMESH_EGRESS",
            "ip6tables -t nat -A APPMESH_EGRESS -m owner --uid-owner 1337 -j RETURN",
            "ip6tables -t nat -A APPMESH_EGRESS -p tcp -m multiport --dports 2222 -j RETURN",
            "ip6tables -t nat -A APPMESH_EGRESS -p tcp -d fd00::7 -j RETURN",
            "ip6tables -t nat -A APPMESH_EGRESS -p tcp -j REDIRECT --to 15001",
            "ip6tables -t nat -A OUTPUT -p tcp -m addrtype ! --dst-type LOCAL -j APPMESH_EGRESS",
        ]
    );
}

/// `program` in `PATH`, or a failure saying which package provides it.
fn find_in_path(program: &str) -> std::path::PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
        .unwrap_or_else(|| {
            panic!(
                "{program} not found in PATH: install the iptables package (it ships both backends)"
            )
        })
}

#[test]
fn the_legacy_iptables_backend_gets_the_same_rules() {
    let ns = Netns::create(PREFIX).expect("create namespace");
    // A PATH whose iptables tools are the legacy (x_tables) ones.
    let tools = tempfile::tempdir().expect("tools dir");
    for family in ["iptables", "ip6tables"] {
        for tool in ["save", "restore"] {
            let legacy = find_in_path(&format!("{family}-legacy-{tool}"));
            let link = tools.path().join(format!("{family}-{tool}"));
            std::os::unix::fs::symlink(&legacy, &link).expect("symlink legacy tool");
        }
    }
    let path = format!(
        "{}:{}",
        tools.path().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let ignored4 = Ipv4Addr::new(192, 0, 2, 10);
    let ignored6: Ipv6Addr = "2001:db8::10".parse().expect("v6");
    let mut env = task_env(&format!("{ignored4},{ignored6}"));
    env.push(("PATH", path.clone()));

    for run in ["first", "second"] {
        assert_ok(
            &proxy_init(&ns, &[], &env),
            &format!("{run} legacy proxy-init"),
        );
        let v4 = nat_table(&ns, "iptables-legacy-save");
        let v6 = nat_table(&ns, "ip6tables-legacy-save");
        assert_eq!(chains(&v4), expected_v4(ignored4), "{run} run:\n{v4}");
        assert_eq!(chains(&v6), expected_v6(ignored6), "{run} run:\n{v6}");
    }
    assert_ok(
        &proxy_init(&ns, &["--clean"], &[("PATH", path)]),
        "legacy --clean",
    );
    for save in ["iptables-legacy-save", "ip6tables-legacy-save"] {
        assert_eq!(chains(&nat_table(&ns, save)), builtin_only(), "{save}");
    }
}

#[test]
fn an_ignored_gid_alone_bypasses_the_redirect() {
    let lan = Lan::create(PREFIX).expect("create LAN");
    let app = lan.join(PREFIX).expect("join app task");
    let service = lan.join(PREFIX).expect("join service task");
    let env = [
        ("TASKMESH_IGNORED_GID", "1338".to_owned()),
        ("TASKMESH_PROXY_EGRESS_PORT", EGRESS_PORT.to_string()),
        ("TASKMESH_ENABLE_IPV6", "false".to_owned()),
    ];
    assert_ok(
        &proxy_init(&app, &[], &env),
        "egress-only proxy-init with a gid",
    );
    let table = nat_table(&app, "iptables-save");
    assert_eq!(
        chains(&table).get("APPMESH_EGRESS").map(Vec::as_slice),
        Some(
            &[
                "-m owner --gid-owner 1338 -j RETURN".to_owned(),
                "-d 169.254.170.2/32 -p tcp -j RETURN".to_owned(),
                "-d 169.254.169.254/32 -p tcp -j RETURN".to_owned(),
                "-p tcp -j REDIRECT --to-ports 15001".to_owned(),
            ][..]
        ),
        "{table}"
    );
    assert!(!table.contains("APPMESH_INGRESS"), "{table}");

    let egress = listen(
        &app,
        SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), EGRESS_PORT),
    );
    let target = SocketAddr::new(IpAddr::V4(service.ipv4().expect("v4")), SERVICE_PORT);
    let direct = listen(&service, target);
    send_as_ids(&app, APP_UID, 1338, target, "gid");
    assert_eq!(accept_tag(&direct, "the service (ignored gid)").0, "gid");
    send_as_ids(&app, APP_UID, APP_UID, target, "app");
    assert_eq!(accept_tag(&egress, "the egress port").0, "app");
    assert_nothing_pending(&egress, "the egress port");
    assert_nothing_pending(&direct, "the service");
}

#[test]
fn ports_beyond_fifteen_are_dropped_with_a_warning() {
    let ports: Vec<String> = (9001..=9017).map(|p| p.to_string()).collect();
    let mut env = task_env("");
    env.retain(|(k, _)| *k != "TASKMESH_APP_PORTS");
    env.push(("TASKMESH_APP_PORTS", ports.join(",")));
    let output = Command::new(AGENT)
        .args(["proxy-init", "--dry-run", "--enable-ipv6", "false"])
        .env_clear()
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .output()
        .expect("start taskmesh-agent");
    assert_ok(&output, "proxy-init --dry-run");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let first_fifteen = ports[..15].join(",");
    assert!(
        stdout.contains(&format!(
            "iptables -t nat -A APPMESH_INGRESS -p tcp -m multiport --dports {first_fifteen} -j REDIRECT --to-port 15000\n"
        )),
        "{stdout}"
    );
    assert!(!stdout.contains(",9016"), "{stdout}");
    assert!(
        stdout.contains("multiport limit 15 exceeded: app ports [9016, 9017] are ignored"),
        "{stdout}"
    );
}
