//! Whole ECS-like tasks of the colorapp mesh, end to end, as root: each task is a network
//! namespace on a shared LAN with its own hosts file; its task definition is the output of
//! `taskmesh inject --redirect proxy-init` (the library call the CLI makes); `proxy-init` runs
//! with exactly the environment of the injected proxy-init container; the real
//! `taskmesh-agent` binary runs as the proxy container's user (1337) with that container's
//! environment; the apps (`taskmesh-e2e-app`) run as uid 1000 and know nothing of the mesh.
//!
//! Proved here: plain outbound HTTP of the app to a virtual service name goes through its
//! agent and lands on the weighted targets, each through the receiving task's agent; ignored
//! IPs, ignored ports and the agent's own uid bypass the redirect (so the agent's upstream
//! traffic is not looped back into it); DROP_ALL blocks an unknown destination and ALLOW_ALL
//! passes it; changing the weights in the mesh document moves live traffic with no failed
//! request.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};
use taskmesh::{InjectOptions, Location, Redirect};
use taskmesh_e2e::cargo_bin;
use taskmesh_e2e::netns::{Lan, Netns};
use taskmesh_e2e::process::ChildProcess;
use taskmesh_e2e::task::{self, TaskDefinition};

/// The app container of every task.
const APP: &str = env!("CARGO_BIN_EXE_taskmesh-e2e-app");
/// [`APP`], where the app users can execute it.
fn app_binary() -> PathBuf {
    task::executable_by_all(Path::new(APP)).expect("taskmesh-e2e-app binary")
}

/// The colorteller's (and the gateway's) container port.
const APP_PORT: u16 = 9080;
/// Where the servers outside the mesh listen.
const OUTSIDE_PORT: u16 = 8080;
/// A destination port the gateway's redirect ignores.
const IGNORED_PORT: u16 = 9999;
/// Namespace name prefix of this file's tests.
const PREFIX: &str = "tmx-tasks";
const MESH: &str = "colorapp";
const COLORS: [&str; 3] = ["white", "blue", "black"];
const SERVICE: &str = "colorteller.colorapp.local";

/// The colorapp mesh document with the given weights and egress filter.
fn mesh_doc(weights: [u32; 3], egress_filter: &str) -> String {
    let targets: Vec<Value> = COLORS
        .iter()
        .zip(weights)
        .map(|(c, w)| json!({"virtualNode": format!("colorteller-{c}"), "weight": w}))
        .collect();
    let mut nodes = vec![json!({
        "virtualNodeName": "colorgateway",
        "spec": {
            "listeners": [{"portMapping": {"port": APP_PORT, "protocol": "http"}}],
            "serviceDiscovery": {"dns": {"hostname": "colorgateway.colorapp.local"}},
            "backends": [{"virtualService": {"virtualServiceName": SERVICE}}]
        }
    })];
    for c in COLORS {
        nodes.push(json!({
            "virtualNodeName": format!("colorteller-{c}"),
            "spec": {
                "listeners": [{"portMapping": {"port": APP_PORT, "protocol": "http"}}],
                "serviceDiscovery": {"dns": {"hostname": format!("colorteller-{c}.colorapp.local")}}
            }
        }));
    }
    let doc = json!({
        "meshName": MESH,
        "spec": {"egressFilter": {"type": egress_filter}},
        "virtualServices": [{
            "virtualServiceName": SERVICE,
            "spec": {"provider": {"virtualRouter": {"virtualRouterName": "colorteller-vr"}}}
        }],
        "virtualRouters": [{
            "virtualRouterName": "colorteller-vr",
            "spec": {"listeners": [{"portMapping": {"port": APP_PORT, "protocol": "http"}}]}
        }],
        "routes": [{
            "virtualRouterName": "colorteller-vr",
            "routeName": "colorteller-route",
            "spec": {"httpRoute": {"match": {"prefix": "/"}, "action": {"weightedTargets": targets}}}
        }],
        "virtualNodes": nodes,
    });
    serde_json::to_string_pretty(&doc).expect("serialise")
}

/// Writes the mesh document the way a deploy would: a new file renamed over the old one.
fn write_doc(path: &Path, text: &str) {
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, text).expect("write mesh document");
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    std::fs::rename(&tmp, path).expect("rename mesh document");
}

/// One meshed task: its namespace, transformed definition and running containers.
struct MeshTask {
    // Fields drop in order: processes before the namespace they run in.
    _app: Option<ChildProcess>,
    agent: ChildProcess,
    definition: TaskDefinition,
    ns: Netns,
}

impl MeshTask {
    fn admin_port(&self) -> u16 {
        self.definition
            .proxy()
            .and_then(|p| p.env_port("ENVOY_ADMIN_ACCESS_PORT"))
            .expect("admin port")
    }

    fn admin(&self, path: &str) -> String {
        let (status, body) = task::admin_get(&self.ns, self.admin_port(), path)
            .unwrap_or_else(|e| panic!("{path}: {e}\n{}", self.agent.log_tail()));
        assert_eq!(status, 200, "{path}: {body}");
        body
    }

    fn metric(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        task::prometheus_sum(&self.admin("/stats/prometheus"), name, labels)
    }

    fn config_version(&self) -> String {
        let dump: Value = serde_json::from_str(&self.admin("/config_dump")).expect("json");
        dump["version"].as_str().unwrap_or_default().to_owned()
    }
}

/// A plain server outside the mesh (no proxy-init, no agent).
struct Outside {
    _servers: Vec<ChildProcess>,
    ns: Netns,
}

/// The colorapp: a gateway task, one colorteller task per color, and two servers outside the
/// mesh ("outside.example", and one at an address the gateway's redirect ignores).
struct Colorapp {
    gateway: MeshTask,
    tellers: Vec<(String, MeshTask)>,
    outside: Outside,
    ignored: Outside,
    doc: PathBuf,
    _lan: Lan,
    _dir: tempfile::TempDir,
}

/// The transformed task definition of `node`: an app container (uid 1000, port 9080) through
/// `inject --redirect proxy-init`.
fn inject(node: &str, config: &str, ignored_ip: Ipv4Addr) -> TaskDefinition {
    let source = json!({
        "family": node,
        "networkMode": "awsvpc",
        "requiresCompatibilities": ["EC2"],
        "containerDefinitions": [{
            "name": "app",
            "image": format!("example/{node}:latest"),
            "essential": true,
            "user": "1000",
            "portMappings": [{"containerPort": APP_PORT, "protocol": "tcp"}]
        }]
    });
    let options = InjectOptions {
        virtual_node: Some(node.to_owned()),
        mesh: Some(MESH.to_owned()),
        config: Some(config.to_owned()),
        redirect: Redirect::ProxyInit,
        egress_ignored_ips: Some(vec![
            ignored_ip.to_string(),
            "169.254.170.2".to_owned(),
            "169.254.169.254".to_owned(),
        ]),
        egress_ignored_ports: Some(vec![IGNORED_PORT]),
        ..InjectOptions::default()
    };
    let injected = taskmesh::inject_task_definition(&source, &options, &Location::file(node))
        .unwrap_or_else(|e| panic!("inject {node}: {e}"));
    TaskDefinition::from_json(&injected.value).expect("transformed task definition")
}

/// Waits until something in `ns` accepts connections on 127.0.0.1:`port`.
fn wait_listening(child: &mut ChildProcess, ns: &Netns, port: u16) {
    child
        .wait_until(
            Duration::from_secs(10),
            &format!("listen on {port}"),
            || {
                ns.enter(|| {
                    TcpStream::connect_timeout(
                        &SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
                        Duration::from_millis(200),
                    )
                    .is_ok()
                })
                .unwrap_or(false)
            },
        )
        .expect("server up");
}

fn serve(ns: &Netns, uid: u32, port: u16, name: &str) -> ChildProcess {
    let mut command = ns.command_as(uid, uid, app_binary());
    command.args(["serve", &port.to_string(), name]);
    let mut child = ChildProcess::spawn(&format!("{name}-{port}"), command).expect("spawn server");
    wait_listening(&mut child, ns, port);
    child
}

/// Starts a meshed task: proxy-init exactly as its definition says, then its agent, then (for
/// a colorteller) its app.
fn start_task(
    lan_ns: Netns,
    definition: TaskDefinition,
    agent_binary: &Path,
    dir: &Path,
    color: Option<&str>,
) -> MeshTask {
    let ns = lan_ns;
    task::run_proxy_init(&ns, &definition, agent_binary).expect("proxy-init");
    let proxy = definition.proxy().expect("proxy container");
    let (uid, gid) = proxy.uid_gid().expect("proxy user");
    assert_eq!(uid, 1337, "the proxy runs as the ignored uid");
    let cache = dir.join(format!("cache-{}", definition.family));
    std::fs::create_dir_all(&cache).expect("cache dir");
    std::os::unix::fs::chown(&cache, Some(uid), Some(gid)).expect("chown cache dir");
    let agent = task::start_proxy(
        &ns,
        &definition,
        agent_binary,
        &[
            (
                "TASKMESH_CACHE",
                cache.join("last-good.json").display().to_string(),
            ),
            ("TASKMESH_POLL_SECONDS", "1".to_owned()),
        ],
    )
    .expect("agent");
    let app = color.map(|c| {
        let container = definition.container("app").expect("app container");
        let (uid, _) = container.uid_gid().expect("app user");
        assert_eq!(uid, 1000);
        serve(&ns, uid, container.ports[0], c)
    });
    MeshTask {
        _app: app,
        agent,
        definition,
        ns,
    }
}

impl Colorapp {
    fn start(weights: [u32; 3], egress_filter: &str) -> Colorapp {
        let agent_binary = cargo_bin::taskmesh_agent()
            .and_then(|p| task::executable_by_all(&p))
            .expect("taskmesh-agent binary");
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
            .expect("chmod tempdir");
        let doc = dir.path().join("mesh.json");
        write_doc(&doc, &mesh_doc(weights, egress_filter));
        let config = format!("file://{}", doc.display());

        let lan = Lan::create(PREFIX).expect("LAN");
        let gateway_ns = lan.join(PREFIX).expect("gateway task");
        let teller_ns: Vec<Netns> = COLORS
            .iter()
            .map(|_| lan.join(PREFIX).expect("teller task"))
            .collect();
        let outside_ns = lan.join(PREFIX).expect("outside host");
        let ignored_ns = lan.join(PREFIX).expect("ignored host");
        let ip = |ns: &Netns| ns.ipv4().expect("LAN address");
        let ignored_ip = ip(&ignored_ns);

        let mut hosts: Vec<(Ipv4Addr, String)> = vec![
            (ip(&gateway_ns), "colorgateway.colorapp.local".to_owned()),
            (ip(&teller_ns[0]), SERVICE.to_owned()),
            (ip(&outside_ns), "outside.example".to_owned()),
        ];
        for (c, ns) in COLORS.iter().zip(&teller_ns) {
            hosts.push((ip(ns), format!("colorteller-{c}.colorapp.local")));
        }
        for ns in std::iter::once(&gateway_ns).chain(&teller_ns) {
            for (addr, name) in &hosts {
                ns.add_host(IpAddr::V4(*addr), &[name])
                    .expect("hosts entry");
            }
        }

        let outside = Outside {
            _servers: vec![
                serve(&outside_ns, 0, OUTSIDE_PORT, "outside"),
                serve(&outside_ns, 0, IGNORED_PORT, "outside-ignored-port"),
            ],
            ns: outside_ns,
        };
        let ignored = Outside {
            _servers: vec![serve(&ignored_ns, 0, OUTSIDE_PORT, "ignored-ip")],
            ns: ignored_ns,
        };

        let mut tellers = Vec::new();
        for (c, ns) in COLORS.iter().zip(teller_ns) {
            let node = format!("colorteller-{c}");
            let definition = inject(&node, &config, ignored_ip);
            tellers.push((
                (*c).to_owned(),
                start_task(ns, definition, &agent_binary, dir.path(), Some(c)),
            ));
        }
        let definition = inject("colorgateway", &config, ignored_ip);
        let gateway = start_task(gateway_ns, definition, &agent_binary, dir.path(), None);
        Colorapp {
            gateway,
            tellers,
            outside,
            ignored,
            doc,
            _lan: lan,
            _dir: dir,
        }
    }

    fn gateway_ip(&self) -> Ipv4Addr {
        self.gateway.ns.ipv4().expect("gateway address")
    }

    /// The command for the gateway's app container: `taskmesh-e2e-app get URL COUNT INTERVAL`
    /// as the container's user (uid 1000) in the gateway task.
    fn client(&self, uid: u32, url: &str, count: u32, interval_ms: u32) -> std::process::Command {
        let mut command = self.gateway.ns.command_as(uid, uid, app_binary());
        command.args(["get", url, &count.to_string(), &interval_ms.to_string()]);
        command
    }

    /// Runs the gateway app's requests to completion as `uid`; one result per request.
    fn get_as(&self, uid: u32, url: &str, count: u32) -> Vec<Value> {
        let output = self
            .client(uid, url, count, 0)
            .output()
            .expect("run the app client");
        assert!(
            output.status.success(),
            "client failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        parse_results(&String::from_utf8_lossy(&output.stdout))
    }

    /// Runs requests as the gateway's app user.
    fn get(&self, url: &str, count: u32) -> Vec<Value> {
        let app = self.gateway.definition.container("app").expect("app");
        let (uid, _) = app.uid_gid().expect("app user");
        assert_eq!(uid, 1000);
        self.get_as(uid, url, count)
    }

    fn egress_requests(&self) -> f64 {
        self.gateway
            .metric("taskmesh_requests_total", &[("direction", "egress")])
    }

    /// Rewrites the mesh document and waits until the gateway's agent serves the new version;
    /// returns the epoch milliseconds before the write and after the agent had it.
    fn change_doc(&self, weights: [u32; 3], egress_filter: &str) -> (u64, u64) {
        let before = self.gateway.config_version();
        let written = now_ms();
        write_doc(&self.doc, &mesh_doc(weights, egress_filter));
        let deadline = Instant::now() + Duration::from_secs(15);
        while self.gateway.config_version() == before {
            assert!(
                Instant::now() < deadline,
                "the gateway's agent did not load the new document:\n{}",
                self.gateway.agent.log_tail()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        (written, now_ms())
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The complete JSON result lines of the client's output (a line still being written, with
/// no newline yet, is left for the next read).
fn parse_results(text: &str) -> Vec<Value> {
    let complete = text.rfind('\n').map_or("", |end| &text[..end]);
    complete
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

fn status(r: &Value) -> u64 {
    r["status"].as_u64().unwrap_or(0)
}

fn body(r: &Value) -> &str {
    r["body"].as_str().unwrap_or("")
}

/// `NAME from PEER` -> (NAME, PEER).
fn name_and_peer(r: &Value) -> (&str, &str) {
    body(r).split_once(" from ").unwrap_or(("", ""))
}

/// Packet counts of the rules of the nat chain `chain` in `ns`, keyed by the rule's text.
fn rule_counts(ns: &Netns, chain: &str) -> Vec<(u64, String)> {
    let out = ns
        .exec(&["iptables", "-t", "nat", "-L", chain, "-n", "-v", "-x"])
        .expect("iptables -L");
    out.lines()
        .skip(2)
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            let packets = words.next()?.parse().ok()?;
            Some((packets, words.skip(1).collect::<Vec<_>>().join(" ")))
        })
        .collect()
}

#[test]
fn outbound_http_to_a_virtual_service_goes_through_both_agents_to_the_weighted_targets() {
    let app = Colorapp::start([2, 1, 1], "DROP_ALL");
    let n = 400u32;
    let results = app.get(&format!("http://{SERVICE}:{APP_PORT}/"), n);
    assert_eq!(results.len(), n as usize);
    let mut counts: BTreeMap<String, u64> = BTreeMap::new();
    for r in &results {
        assert_eq!(status(r), 200, "{r}");
        let (color, peer) = name_and_peer(r);
        // The colorteller saw the request come from 127.0.0.1: its own agent's ingress
        // delivered it, not the gateway task's address.
        assert_eq!(peer, "127.0.0.1", "{r}");
        *counts.entry(color.to_owned()).or_default() += 1;
    }
    for (color, share) in [("white", 0.5), ("blue", 0.25), ("black", 0.25)] {
        let measured = counts.get(color).copied().unwrap_or(0) as f64 / f64::from(n);
        let tolerance = 5.0 * (share * (1.0 - share) / f64::from(n)).sqrt();
        assert!(
            (measured - share).abs() <= tolerance,
            "{color}: {measured:.3} vs {share} ± {tolerance:.3}; {counts:?}"
        );
    }
    // Each colorteller's agent counted exactly the requests of its color on its ingress.
    for (color, teller) in &app.tellers {
        let ingress = teller.metric("taskmesh_requests_total", &[("direction", "ingress")]);
        assert_eq!(
            ingress as u64,
            counts.get(color).copied().unwrap_or(0),
            "{color}'s agent ingress count"
        );
    }
    // The gateway's agent saw each request exactly once on egress: its own upstream
    // connections (uid 1337) were not redirected back into it.
    assert_eq!(app.egress_requests() as u64, u64::from(n));
    for (color, _) in &app.tellers {
        let node = format!("colorteller-{color}");
        let routed = app.gateway.metric(
            "taskmesh_requests_total",
            &[("direction", "egress"), ("target_node", &node)],
        );
        assert_eq!(routed as u64, counts[color.as_str()], "{node}");
    }
    let rules = rule_counts(&app.gateway.ns, "APPMESH_EGRESS");
    let returned = rules
        .iter()
        .find(|(_, r)| r.contains("owner UID match 1337"))
        .map(|(p, _)| *p);
    let redirected = rules
        .iter()
        .find(|(_, r)| r.contains("redir ports 15001"))
        .map(|(p, _)| *p);
    assert!(
        returned.is_some_and(|p| p > 0),
        "the agent's connections to the tellers passed the uid-1337 RETURN rule: {rules:?}"
    );
    assert!(
        redirected.is_some_and(|p| p > 0),
        "the app's connections were redirected: {rules:?}"
    );
}

#[test]
fn ignored_ips_ports_and_the_agent_uid_bypass_while_drop_all_blocks_unknown_destinations() {
    let app = Colorapp::start([1, 1, 1], "DROP_ALL");
    let gateway_ip = app.gateway_ip().to_string();
    let outside = format!("http://outside.example:{OUTSIDE_PORT}/");
    let before = app.egress_requests();

    // An unknown destination: redirected to the agent, which refuses it under DROP_ALL.
    let blocked = app.get(&outside, 1);
    assert_eq!(status(&blocked[0]), 404, "{:?}", blocked);
    assert!(!body(&blocked[0]).contains("from"), "{:?}", blocked);
    assert_eq!(app.egress_requests() - before, 1.0, "the agent saw it");

    // The same host on an ignored port, and a host at an ignored IP: straight there.
    let port = app.get(&format!("http://outside.example:{IGNORED_PORT}/"), 1);
    assert_eq!(status(&port[0]), 200, "{:?}", port);
    assert_eq!(
        name_and_peer(&port[0]),
        ("outside-ignored-port", gateway_ip.as_str())
    );
    let ignored_ip = app.ignored.ns.ipv4().expect("ip");
    let ip = app.get(&format!("http://{ignored_ip}:{OUTSIDE_PORT}/"), 1);
    assert_eq!(status(&ip[0]), 200, "{:?}", ip);
    assert_eq!(name_and_peer(&ip[0]), ("ignored-ip", gateway_ip.as_str()));

    // The agent's uid is never redirected: what the agent itself sends is not looped back.
    let agent_uid = app
        .gateway
        .definition
        .proxy()
        .and_then(|p| p.uid_gid())
        .expect("proxy user")
        .0;
    let direct = app.get_as(agent_uid, &outside, 1);
    assert_eq!(status(&direct[0]), 200, "{:?}", direct);
    assert_eq!(name_and_peer(&direct[0]), ("outside", gateway_ip.as_str()));
    assert_eq!(
        app.egress_requests() - before,
        1.0,
        "only the blocked request went through the agent"
    );
    let outside_ip = app.outside.ns.ipv4().expect("ip");
    assert_ne!(outside_ip, ignored_ip);
}

#[test]
fn allow_all_passes_an_unknown_destination_through_the_agent() {
    let app = Colorapp::start([1, 1, 1], "ALLOW_ALL");
    let gateway_ip = app.gateway_ip().to_string();
    let outside = format!("http://outside.example:{OUTSIDE_PORT}/");
    let before = app.egress_requests();
    let passed = app.get(&outside, 3);
    for r in &passed {
        assert_eq!(status(r), 200, "{r}");
        assert_eq!(name_and_peer(r), ("outside", gateway_ip.as_str()));
    }
    assert_eq!(
        app.egress_requests() - before,
        3.0,
        "the requests went through the agent"
    );
    // The filter is what decides: the same request under DROP_ALL is refused.
    app.change_doc([1, 1, 1], "DROP_ALL");
    let blocked = app.get(&outside, 1);
    assert_eq!(status(&blocked[0]), 404, "{:?}", blocked);
}

#[test]
fn changing_the_weights_moves_live_traffic_without_a_failed_request() {
    let app = Colorapp::start([1, 0, 0], "DROP_ALL");
    // Far more requests than the test needs: it stops the client once enough answers
    // arrived after the change, however long the agent took to reload.
    let mut client = ChildProcess::spawn(
        "gateway-app",
        app.client(1000, &format!("http://{SERVICE}:{APP_PORT}/"), 100_000, 10),
    )
    .expect("start the app's client");
    let at = |r: &Value| r["t"].as_u64().unwrap_or(0);
    wait_for_results(&mut client, Duration::from_secs(30), |r| r.len() >= 100);
    let (written, live) = app.change_doc([0, 0, 1], "DROP_ALL");
    // A request already on its way (keep-alive, in flight) when the agent swapped may still
    // take the old route: allow 250 ms for it.
    let settled = live + 250;
    wait_for_results(&mut client, Duration::from_secs(60), |r| {
        r.iter().filter(|r| at(r) > settled).count() >= 100
    });
    client.kill();
    let results = parse_results(&client.log());
    let failed: Vec<&Value> = results.iter().filter(|r| status(r) != 200).collect();
    assert!(failed.is_empty(), "failed requests: {failed:?}");
    let before: Vec<&str> = results
        .iter()
        .filter(|r| at(r) < written)
        .map(|r| name_and_peer(r).0)
        .collect();
    let after: Vec<&str> = results
        .iter()
        .filter(|r| at(r) > settled)
        .map(|r| name_and_peer(r).0)
        .collect();
    assert!(
        before.len() >= 50,
        "{} answers before the change",
        before.len()
    );
    assert!(
        after.len() >= 100,
        "{} answers after the change",
        after.len()
    );
    assert!(before.iter().all(|c| *c == "white"), "{before:?}");
    assert!(after.iter().all(|c| *c == "black"), "{after:?}");
}

/// Waits until the client's results satisfy `enough`; fails with its output if it exits
/// first or `timeout` passes.
fn wait_for_results(
    client: &mut ChildProcess,
    timeout: Duration,
    enough: impl Fn(&[Value]) -> bool,
) {
    let deadline = Instant::now() + timeout;
    loop {
        let results = parse_results(&client.log());
        if enough(&results) {
            return;
        }
        if let Some(status) = client.exited() {
            panic!(
                "the client exited ({status}) after {} results:\n{}",
                results.len(),
                client.log_tail()
            );
        }
        assert!(
            Instant::now() < deadline,
            "{} results, not enough within {timeout:?}",
            results.len()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}
