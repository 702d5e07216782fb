//! Listener TLS and backend client TLS on real sockets, with certificates made by rcgen: a
//! client agent's egress talks (m)TLS to a server agent's ingress (bound on 127.0.0.2, the
//! server node's discovery address) which forwards to the app on 127.0.0.1. STRICT refuses
//! plaintext, PERMISSIVE takes both, a wrong CA / SAN mismatch / missing client certificate
//! gives 503 with flag `UF` at the client agent, certificates are reloaded when their files
//! change, and ACM/SDS sources are refused naming the field while the last good document
//! keeps serving.

mod support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use serde_json::{Value, json};
use support::{HttpClient, admin_get, eventually, http_backend, tcp_echo_backend, write_atomic};
use taskmesh_agent::config::ActiveConfig;
use taskmesh_agent::{Agent, AgentHandle};
use taskmesh_mesh::NodeRef;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A test CA.
struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        Ca { issuer }
    }

    /// Writes the CA certificate to `dir/<file>`.
    fn write(&self, dir: &Path, file: &str) -> PathBuf {
        let p = dir.join(file);
        std::fs::write(&p, self.issuer.pem()).unwrap();
        p
    }

    /// Issues a leaf for `sans` and writes `<stem>.pem` and `<stem>.key`.
    fn leaf(&self, dir: &Path, stem: &str, sans: &[&str]) -> (PathBuf, PathBuf) {
        let mut params =
            CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
        params.distinguished_name.push(DnType::CommonName, stem);
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        let (c, k) = (
            dir.join(format!("{stem}.pem")),
            dir.join(format!("{stem}.key")),
        );
        write_atomic(&c, &cert.pem());
        write_atomic(&k, &key.serialize_pem());
        (c, k)
    }
}

/// Certificates of one test.
struct Pki {
    dir: tempfile::TempDir,
    ca: PathBuf,
    other_ca: PathBuf,
    server: (PathBuf, PathBuf),
    client: (PathBuf, PathBuf),
    ca_handle: Ca,
}

impl Pki {
    fn new() -> Pki {
        let dir = tempfile::tempdir().unwrap();
        let ca = Ca::new("taskmesh test CA");
        let other = Ca::new("some other CA");
        Pki {
            ca: ca.write(dir.path(), "ca.pem"),
            other_ca: other.write(dir.path(), "other-ca.pem"),
            server: ca.leaf(dir.path(), "server", &["server.m.local"]),
            client: ca.leaf(dir.path(), "client", &["client.m.local"]),
            ca_handle: ca,
            dir,
        }
    }

    fn path(p: &Path) -> String {
        p.display().to_string()
    }
}

/// The mesh: node `client` (backend `server.m.local` with `client_policy`) and node `server`
/// listening on `port` with `listener_tls`, found at 127.0.0.2.
fn doc(port: u16, listener_tls: Option<Value>, client_policy: Option<Value>, log: &Path) -> String {
    let mut listener = json!({"portMapping": {"port": port, "protocol": "http"}});
    if let Some(t) = listener_tls {
        listener["tls"] = t;
    }
    let mut backend = json!({"virtualServiceName": "server.m.local"});
    if let Some(p) = client_policy {
        backend["clientPolicy"] = json!({"tls": p});
    }
    serde_json::to_string_pretty(&json!({
        "meshName": "m",
        "virtualServices": [{"virtualServiceName": "server.m.local",
            "spec": {"provider": {"virtualNode": {"virtualNodeName": "server"}}}}],
        "virtualNodes": [
            {"virtualNodeName": "client", "spec": {
                "listeners": [{"portMapping": {"port": 1, "protocol": "http"}}],
                "serviceDiscovery": {"dns": {"hostname": "127.0.0.1"}},
                "backends": [{"virtualService": backend}],
                "logging": {"accessLog": {"file": {"path": log.display().to_string()}}}}},
            {"virtualNodeName": "server", "spec": {
                "listeners": [listener],
                "serviceDiscovery": {"dns": {"hostname": "127.0.0.2"}}}}
        ]
    }))
    .unwrap()
}

fn strict_mtls(pki: &Pki) -> Value {
    json!({"mode": "STRICT",
        "certificate": {"file": {"certificateChain": Pki::path(&pki.server.0),
                                 "privateKey": Pki::path(&pki.server.1)}},
        "validation": {"trust": {"file": {"certificateChain": Pki::path(&pki.ca)}},
                       "subjectAlternativeNames": {"match": {"exact": ["client.m.local"]}}}})
}

fn client_policy(trust: &Path, cert: Option<&(PathBuf, PathBuf)>, sans: Option<&[&str]>) -> Value {
    let mut p = json!({"validation": {"trust": {"file": {"certificateChain": Pki::path(trust)}}}});
    if let Some((c, k)) = cert {
        p["certificate"] =
            json!({"file": {"certificateChain": Pki::path(c), "privateKey": Pki::path(k)}});
    }
    if let Some(s) = sans {
        p["validation"]["subjectAlternativeNames"] = json!({"match": {"exact": s}});
    }
    p
}

/// Two agents from one document file: the server agent's ingress on 127.0.0.2:<app port>.
struct Pair {
    world: support::World,
    server: AgentHandle,
    client: AgentHandle,
    app_port: u16,
    log: PathBuf,
    _log_dir: tempfile::TempDir,
}

impl Pair {
    async fn start(listener_tls: Option<Value>, policy: Option<Value>) -> Pair {
        let app = http_backend("app").await;
        let port = app.addr.port();
        let log_dir = tempfile::tempdir().unwrap();
        let log = log_dir.path().join("access.log");
        let world = support::World::new(&doc(port, listener_tls, policy, &log));
        let mut s = world.settings("server");
        s.listen_addr = "127.0.0.2".parse().unwrap();
        s.ingress_port = port;
        s.cache = world.dir.path().join("server-cache.json");
        let server = Agent::start(s).await.expect("server agent starts");
        assert!(server.wait_live(Duration::from_secs(10)).await);
        let mut c = world.settings("client");
        c.cache = world.dir.path().join("client-cache.json");
        let client = Agent::start(c).await.expect("client agent starts");
        assert!(client.wait_live(Duration::from_secs(10)).await);
        Pair {
            world,
            server,
            client,
            app_port: port,
            log,
            _log_dir: log_dir,
        }
    }

    fn ingress(&self) -> SocketAddr {
        SocketAddr::new("127.0.0.2".parse().unwrap(), self.app_port)
    }

    async fn call(&self) -> support::Reply {
        HttpClient::new()
            .get(self.client.egress_addr, "server.m.local", "/hello")
            .await
    }

    /// Access-log lines of the client agent (JSON).
    async fn log_lines(&self) -> Vec<Value> {
        tokio::time::sleep(Duration::from_millis(200)).await;
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }
}

/// A plain HTTP/1.1 GET straight to `addr`; the raw answer (empty when the peer closed).
async fn plaintext_get(addr: SocketAddr) -> String {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /plain HTTP/1.1\r\nHost: server.m.local\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mtls_end_to_end_and_strict_refuses_plaintext() {
    let pki = Pki::new();
    let policy = client_policy(&pki.ca, Some(&pki.client), Some(&["server.m.local"]));
    let pair = Pair::start(Some(strict_mtls(&pki)), Some(policy)).await;
    for _ in 0..3 {
        let r = pair.call().await;
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.body, "app");
    }
    let plain = plaintext_get(pair.ingress()).await;
    assert!(plain.is_empty(), "STRICT answered plaintext: {plain:?}");
    // The refusal is counted on the server agent, by reason; the mTLS calls above were not.
    let (_, stats) = admin_get(pair.server.admin_addr, "/stats/prometheus").await;
    for line in [
        "taskmesh_ingress_tls_failures_total{reason=\"plaintext_on_strict\"} 1\n",
        "taskmesh_ingress_tls_failures_total{reason=\"handshake\"} 0\n",
    ] {
        assert!(stats.contains(line), "missing {line:?} in:\n{stats}");
    }
    let lines = pair.log_lines().await;
    assert!(
        lines
            .iter()
            .any(|l| l["code"] == 200 && l["virtual_service"] == "server.m.local"),
        "{lines:?}"
    );
    drop(pair.world);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_tls_defaults_to_the_virtual_service_name() {
    let pki = Pki::new();
    // No SANs on the client side: the server certificate must be valid for server.m.local.
    let policy = client_policy(&pki.ca, Some(&pki.client), None);
    let pair = Pair::start(Some(strict_mtls(&pki)), Some(policy)).await;
    let r = pair.call().await;
    assert_eq!(r.status, 200, "{}", r.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permissive_takes_plaintext_and_tls_on_one_port() {
    let pki = Pki::new();
    let tls = json!({"mode": "PERMISSIVE",
        "certificate": {"file": {"certificateChain": Pki::path(&pki.server.0),
                                 "privateKey": Pki::path(&pki.server.1)}}});
    let policy = client_policy(&pki.ca, None, None);
    let pair = Pair::start(Some(tls), Some(policy)).await;
    // TLS through the client agent (its policy enforces TLS: a plaintext answer would fail).
    let r = pair.call().await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body, "app");
    // Plaintext straight to the same port.
    let plain = plaintext_get(pair.ingress()).await;
    assert!(plain.starts_with("HTTP/1.1 200"), "{plain:?}");
    assert!(plain.ends_with("app"), "{plain:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disabled_listener_tls_is_plaintext() {
    let pki = Pki::new();
    let tls = json!({"mode": "DISABLED",
        "certificate": {"acm": {"certificateArn": "arn:aws:acm:us-east-1:1:certificate/x"}}});
    let pair = Pair::start(Some(tls), None).await;
    let plain = plaintext_get(pair.ingress()).await;
    assert!(plain.starts_with("HTTP/1.1 200"), "{plain:?}");
    let r = pair.call().await;
    assert_eq!(r.status, 200, "{}", r.body);
    drop(pki);
}

/// Calls through the client agent expecting a refused TLS handshake: 503, a body saying so,
/// and `UF` in the access log.
async fn expect_tls_refusal(pair: &Pair) {
    let r = pair.call().await;
    assert_eq!(r.status, 503, "{}", r.body);
    assert!(r.body.contains("TLS handshake failed"), "{}", r.body);
    let lines = pair.log_lines().await;
    let last = lines.last().expect("an access-log line");
    assert_eq!(last["code"], 503, "{last}");
    assert_eq!(last["flags"], "UF", "{last}");
    assert_eq!(last["virtual_service"], "server.m.local", "{last}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_ca_is_refused() {
    let pki = Pki::new();
    let policy = client_policy(&pki.other_ca, Some(&pki.client), None);
    let pair = Pair::start(Some(strict_mtls(&pki)), Some(policy)).await;
    expect_tls_refusal(&pair).await;
    // The client aborted the handshake: the server agent counts a failed handshake.
    let server = pair.server.admin_addr;
    eventually(
        "the server agent counts the failed handshake",
        || async move {
            let (_, stats) = admin_get(server, "/stats/prometheus").await;
            !stats.contains("taskmesh_ingress_tls_failures_total{reason=\"handshake\"} 0\n")
                && stats.contains("taskmesh_ingress_tls_failures_total{reason=\"handshake\"} ")
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn san_mismatch_is_refused_both_ways() {
    let pki = Pki::new();
    // The client wants a name the server certificate does not carry.
    let policy = client_policy(&pki.ca, Some(&pki.client), Some(&["other.m.local"]));
    let pair = Pair::start(Some(strict_mtls(&pki)), Some(policy)).await;
    expect_tls_refusal(&pair).await;

    // The server wants a client SAN the client certificate does not carry.
    let pki = Pki::new();
    let mut tls = strict_mtls(&pki);
    tls["validation"]["subjectAlternativeNames"]["match"]["exact"] = json!(["someone.m.local"]);
    let policy = client_policy(&pki.ca, Some(&pki.client), None);
    let pair = Pair::start(Some(tls), Some(policy)).await;
    expect_tls_refusal(&pair).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_client_certificate_is_refused() {
    let pki = Pki::new();
    let policy = client_policy(&pki.ca, None, None);
    let pair = Pair::start(Some(strict_mtls(&pki)), Some(policy)).await;
    expect_tls_refusal(&pair).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_are_reloaded_when_their_files_change() {
    let pki = Pki::new();
    // The client expects server-v2.m.local, which only the rotated certificate carries.
    let policy = client_policy(&pki.ca, Some(&pki.client), Some(&["server-v2.m.local"]));
    let pair = Pair::start(Some(strict_mtls(&pki)), Some(policy)).await;
    expect_tls_refusal(&pair).await;
    // Rotate the server's certificate in place (same file names).
    pki.ca_handle.leaf(
        pki.dir.path(),
        "server",
        &["server.m.local", "server-v2.m.local"],
    );
    eventually("the rotated certificate is served", || async {
        pair.call().await.status == 200
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acm_and_sds_sources_are_refused_naming_the_field() {
    let node = NodeRef::parse("mesh/m/virtualNode/server").unwrap();
    let log = Path::new("/dev/null");
    let acm = json!({"mode": "STRICT",
        "certificate": {"acm": {"certificateArn": "arn:aws:acm:us-east-1:1:certificate/x"}}});
    let err = ActiveConfig::compile(
        doc(8080, Some(acm), None, log).as_bytes(),
        &node,
        "v".into(),
        "t".into(),
    )
    .err()
    .expect("ACM certificate refused")
    .to_string();
    assert!(
        err.contains("virtualNodes[server].spec.listeners[0].tls.certificate.acm"),
        "{err}"
    );
    assert!(err.contains("not available outside App Mesh"), "{err}");

    let sds = json!({"mode": "PERMISSIVE",
        "certificate": {"file": {"certificateChain": "/x.pem", "privateKey": "/x.key"}},
        "validation": {"trust": {"sds": {"secretName": "ca"}}}});
    let err = ActiveConfig::compile(
        doc(8080, Some(sds), None, log).as_bytes(),
        &node,
        "v".into(),
        "t".into(),
    )
    .err()
    .expect("SDS trust refused")
    .to_string();
    assert!(
        err.contains("virtualNodes[server].spec.listeners[0].tls.validation.trust.sds"),
        "{err}"
    );

    let client = NodeRef::parse("mesh/m/virtualNode/client").unwrap();
    let acm_trust = json!({"validation": {"trust": {"acm": {"certificateAuthorityArns": ["arn:aws:acm-pca:x"]}}}});
    let err = ActiveConfig::compile(
        doc(8080, None, Some(acm_trust.clone()), log).as_bytes(),
        &client,
        "v".into(),
        "t".into(),
    )
    .err()
    .expect("ACM trust refused")
    .to_string();
    assert!(
        err.contains(
            "virtualNodes[client].spec.backends[0].virtualService.clientPolicy.tls.validation.trust.acm"
        ),
        "{err}"
    );
    // Not enforced: never used, so accepted.
    let mut off = acm_trust;
    off["enforce"] = json!(false);
    assert!(
        ActiveConfig::compile(
            doc(8080, None, Some(off), log).as_bytes(),
            &client,
            "v".into(),
            "t".into()
        )
        .is_ok()
    );

    // A missing certificate file is named with its field.
    let missing = json!({"mode": "STRICT",
        "certificate": {"file": {"certificateChain": "/nonexistent/chain.pem", "privateKey": "/nonexistent/key.pem"}}});
    let err = ActiveConfig::compile(
        doc(8080, Some(missing), None, log).as_bytes(),
        &node,
        "v".into(),
        "t".into(),
    )
    .err()
    .expect("missing file refused")
    .to_string();
    assert!(
        err.contains("listeners[0].tls.certificate.file: /nonexistent/chain.pem"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_acm_document_is_rejected_and_the_last_good_one_keeps_serving() {
    let pki = Pki::new();
    let policy = client_policy(&pki.ca, Some(&pki.client), None);
    let pair = Pair::start(Some(strict_mtls(&pki)), Some(policy.clone())).await;
    assert_eq!(pair.call().await.status, 200);
    let acm = json!({"mode": "STRICT",
        "certificate": {"acm": {"certificateArn": "arn:aws:acm:us-east-1:1:certificate/x"}}});
    write_atomic(
        &pair.world.doc,
        &doc(pair.app_port, Some(acm), Some(policy), &pair.log),
    );
    eventually("the server agent rejects the ACM document", || async {
        admin_get(pair.server.admin_addr, "/server_info")
            .await
            .1
            .contains("certificate.acm")
    })
    .await;
    let r = pair.call().await;
    assert_eq!(r.status, 200, "{}", r.body);
    let (_, stats) = admin_get(pair.server.admin_addr, "/stats/prometheus").await;
    assert!(
        stats.contains("taskmesh_config_reloads_total{result=\"rejected\"}"),
        "{stats}"
    );
    assert!(
        !stats.contains("taskmesh_config_reloads_total{result=\"rejected\"} 0"),
        "{stats}"
    );
}

/// tcpRoute targets: the client side's TLS around the byte stream (`ClientPolicy::forward_tcp`,
/// what egress uses for a redirected TCP connection) against a server agent whose TCP
/// listener is STRICT with client validation, in front of a TCP echo app.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_listener_tls_and_tcp_client_tls() {
    let pki = Pki::new();
    let echo = tcp_echo_backend("echo: ").await;
    let port = echo.port();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let policy = client_policy(&pki.ca, Some(&pki.client), None);
    let text = doc(port, Some(strict_mtls(&pki)), Some(policy), &log)
        .replace("\"protocol\": \"http\"", "\"protocol\": \"tcp\"");
    let world = support::World::new(&text);
    let mut s = world.settings("server");
    s.listen_addr = "127.0.0.2".parse().unwrap();
    s.ingress_port = port;
    let server = Agent::start(s).await.expect("server agent starts");
    assert!(server.wait_live(Duration::from_secs(10)).await);
    let ingress = SocketAddr::new("127.0.0.2".parse().unwrap(), port);

    let client = NodeRef::parse("mesh/m/virtualNode/client").unwrap();
    let cfg = ActiveConfig::compile(text.as_bytes(), &client, "v".into(), "t".into()).unwrap();
    let tls = cfg
        .tls
        .client("server.m.local", port)
        .expect("the enforced policy covers the port")
        .clone();
    let (mut app_side, proxy_side) = tokio::io::duplex(4096);
    let forward = tokio::spawn(async move { tls.forward_tcp(proxy_side, ingress, None).await });
    app_side.write_all(b"ping").await.unwrap();
    let mut got = vec![0u8; "echo: ping".len()];
    tokio::time::timeout(Duration::from_secs(10), app_side.read_exact(&mut got))
        .await
        .expect("echo in time")
        .unwrap();
    assert_eq!(got, b"echo: ping");
    drop(app_side);
    let _ = forward.await;

    // Plaintext to the STRICT TCP listener is closed before reaching the app.
    let mut plain = tokio::net::TcpStream::connect(ingress).await.unwrap();
    let _ = plain.write_all(b"ping").await;
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), plain.read_to_end(&mut out)).await;
    assert!(out.is_empty(), "{:?}", String::from_utf8_lossy(&out));

    // A client policy trusting another CA fails the handshake, naming the virtual service.
    let wrong = client_policy(&pki.other_ca, Some(&pki.client), None);
    let text = doc(port, None, Some(wrong), &log)
        .replace("\"protocol\": \"http\"", "\"protocol\": \"tcp\"");
    let cfg = ActiveConfig::compile(text.as_bytes(), &client, "v".into(), "t".into()).unwrap();
    let (_app_side, proxy_side) = tokio::io::duplex(4096);
    let err = cfg
        .tls
        .client("server.m.local", port)
        .unwrap()
        .forward_tcp(proxy_side, ingress, None)
        .await
        .expect_err("untrusted server certificate");
    assert!(
        err.to_string()
            .contains("for virtual service server.m.local failed"),
        "{err}"
    );
}

/// A PERMISSIVE TCP listener in front of a server-speaks-first app: a plaintext client that
/// sends nothing still gets the app's greeting (the listener stops waiting for a TLS hello).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permissive_tcp_listener_serves_server_first_protocols() {
    let pki = Pki::new();
    let greeter = tcp_echo_backend("220 smtp ready\r\n").await;
    let port = greeter.port();
    let dir = tempfile::tempdir().unwrap();
    let tls = json!({"mode": "PERMISSIVE",
        "certificate": {"file": {"certificateChain": Pki::path(&pki.server.0),
                                 "privateKey": Pki::path(&pki.server.1)}}});
    let text = doc(port, Some(tls), None, &dir.path().join("access.log"))
        .replace("\"protocol\": \"http\"", "\"protocol\": \"tcp\"");
    let world = support::World::new(&text);
    let mut s = world.settings("server");
    s.listen_addr = "127.0.0.2".parse().unwrap();
    s.ingress_port = port;
    let server = Agent::start(s).await.expect("server agent starts");
    assert!(server.wait_live(Duration::from_secs(10)).await);
    let mut c = tokio::net::TcpStream::connect(SocketAddr::new("127.0.0.2".parse().unwrap(), port))
        .await
        .unwrap();
    let mut got = vec![0u8; "220 smtp ready\r\n".len()];
    tokio::time::timeout(Duration::from_secs(5), c.read_exact(&mut got))
        .await
        .expect("greeting without sending first")
        .unwrap();
    assert_eq!(got, b"220 smtp ready\r\n");
}
