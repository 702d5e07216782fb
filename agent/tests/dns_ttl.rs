//! Discovery against a real DNS server: a UDP responder on 127.0.0.1 (hickory-proto wire
//! format) whose answer, TTL and silence the test controls, and which counts the queries it
//! gets. Checks TTL caching, re-resolution, serve-stale, last-good-on-failure, hosts-file
//! edits, and how LOADBALANCER / ENDPOINTS pick among the addresses.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, MessageType, ResponseCode};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{Name, RData, Record, RecordType};
use taskmesh_agent::discovery::{HOSTS_TTL, Resolver};
use taskmesh_mesh::{Discovery, DnsResponseType};
use tokio::net::UdpSocket;

#[derive(Default)]
struct Zone {
    /// name (lower case, with the final dot) → (A addresses, TTL)
    records: HashMap<String, (Vec<Ipv4Addr>, u32)>,
    /// Drop every query without answering.
    silent: bool,
    /// Queries received per name (any type, answered or not).
    queries: HashMap<String, usize>,
}

/// A small authoritative UDP DNS server.
#[derive(Clone)]
struct DnsServer {
    addr: SocketAddr,
    zone: Arc<Mutex<Zone>>,
}

impl DnsServer {
    async fn start() -> DnsServer {
        let sock = UdpSocket::bind("127.0.0.1:0")
            .await
            .expect("bind DNS socket");
        let addr = sock.local_addr().unwrap();
        let zone = Arc::new(Mutex::new(Zone::default()));
        let z = zone.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            loop {
                let Ok((n, peer)) = sock.recv_from(&mut buf).await else {
                    return;
                };
                let Some(reply) = answer(&z, &buf[..n]) else {
                    continue;
                };
                let _ = sock.send_to(&reply, peer).await;
            }
        });
        DnsServer { addr, zone }
    }

    fn set(&self, name: &str, addrs: &[&str], ttl: u32) {
        let addrs = addrs.iter().map(|a| a.parse().unwrap()).collect();
        self.zone
            .lock()
            .unwrap()
            .records
            .insert(fqdn(name), (addrs, ttl));
    }

    fn silent(&self, silent: bool) {
        self.zone.lock().unwrap().silent = silent;
    }

    fn queries(&self, name: &str) -> usize {
        let z = self.zone.lock().unwrap();
        z.queries.get(&fqdn(name)).copied().unwrap_or(0)
    }

    fn resolver(&self) -> Resolver {
        Resolver::with_name_servers(&[self.addr], None)
    }
}

fn fqdn(name: &str) -> String {
    format!("{}.", name.trim_end_matches('.').to_ascii_lowercase())
}

/// The reply to one datagram, or `None` to stay silent.
fn answer(zone: &Mutex<Zone>, datagram: &[u8]) -> Option<Vec<u8>> {
    let request = Message::from_vec(datagram).ok()?;
    let query = request.queries.first()?.clone();
    let name = query.name().to_ascii().to_ascii_lowercase();
    let mut z = zone.lock().ok()?;
    *z.queries.entry(name.clone()).or_default() += 1;
    if z.silent {
        return None;
    }
    let mut reply = Message::response(request.metadata.id, request.metadata.op_code);
    reply.metadata.message_type = MessageType::Response;
    reply.metadata.authoritative = true;
    reply.metadata.recursion_desired = request.metadata.recursion_desired;
    reply.metadata.recursion_available = true;
    reply.add_query(query.clone());
    match z.records.get(&name) {
        None => reply.metadata.response_code = ResponseCode::NXDomain,
        Some((addrs, ttl)) => {
            if query.query_type() == RecordType::A {
                let owner = Name::from_ascii(&name).ok()?;
                for a in addrs {
                    reply.add_answer(Record::from_rdata(owner.clone(), *ttl, RData::A(A(*a))));
                }
            }
        }
    }
    reply.to_vec().ok()
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// `pick` must answer from the cache without waiting for DNS.
async fn quick_pick(r: &Resolver, host: &str, all: bool) -> IpAddr {
    let started = Instant::now();
    let got = r.pick(host, all).await.expect("cached answer");
    assert!(
        started.elapsed() < Duration::from_millis(200),
        "pick of cached {host} took {:?}: it waited for DNS instead of serving the cached answer",
        started.elapsed()
    );
    got
}

/// Poll `pick` until it returns `want` or `within` passes.
async fn eventually(r: &Resolver, host: &str, want: IpAddr, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let got = quick_pick(r, host, false).await;
        if got == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{host} still resolves to {got}, expected {want} within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cached_for_ttl_then_re_resolved() {
    let dns = DnsServer::start().await;
    let host = "color.mesh.test";
    dns.set(host, &["10.0.0.1"], 2);
    let r = dns.resolver();

    assert_eq!(r.pick(host, false).await.unwrap(), ip("10.0.0.1"));
    let after_first = dns.queries(host);
    assert!(after_first >= 1, "the server saw no query");

    // Within the TTL: answered from the cache, the server is not asked again.
    dns.set(host, &["10.0.0.2"], 2);
    for _ in 0..20 {
        assert_eq!(quick_pick(&r, host, false).await, ip("10.0.0.1"));
    }
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(quick_pick(&r, host, true).await, ip("10.0.0.1"));
    assert_eq!(dns.queries(host), after_first, "re-queried within the TTL");

    // After the TTL: re-resolved (stale answer served meanwhile), the new address is used.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    eventually(&r, host, ip("10.0.0.2"), Duration::from_secs(3)).await;
    assert!(dns.queries(host) > after_first);
    assert_eq!(r.refresh_failures(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keeps_last_good_answer_while_server_is_silent() {
    let dns = DnsServer::start().await;
    let host = "backend.mesh.test";
    dns.set(host, &["10.0.0.3"], 1);
    let r = dns.resolver();
    assert_eq!(r.pick(host, false).await.unwrap(), ip("10.0.0.3"));

    dns.silent(true);
    let before = dns.queries(host);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    // Expired: the refresh goes to a silent server; requests keep getting the last answer.
    let deadline = Instant::now() + Duration::from_secs(8);
    while r.refresh_failures() == 0 {
        assert_eq!(quick_pick(&r, host, false).await, ip("10.0.0.3"));
        assert!(
            Instant::now() < deadline,
            "refresh against a silent server never failed"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        dns.queries(host) > before,
        "no refresh query reached the server"
    );
    assert_eq!(quick_pick(&r, host, false).await, ip("10.0.0.3"));

    // The server answers again: the next retry picks the new address up.
    dns.set(host, &["10.0.0.4"], 1);
    dns.silent(false);
    eventually(&r, host, ip("10.0.0.4"), Duration::from_secs(8)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoints_spread_loadbalancer_takes_first() {
    let dns = DnsServer::start().await;
    let host = "many.mesh.test";
    let addrs = ["10.0.1.1", "10.0.1.2", "10.0.1.3"];
    dns.set(host, &addrs, 30);
    let r = dns.resolver();

    let endpoints = Discovery::Dns {
        hostname: host.into(),
        response_type: DnsResponseType::Endpoints,
    };
    let mut seen: HashMap<SocketAddr, usize> = HashMap::new();
    for _ in 0..9 {
        *seen
            .entry(r.endpoint(&endpoints, 8080).await.unwrap())
            .or_default() += 1;
    }
    for a in addrs {
        assert_eq!(
            seen.get(&SocketAddr::new(ip(a), 8080)),
            Some(&3),
            "ENDPOINTS spread: {seen:?}"
        );
    }

    let lb = Discovery::Dns {
        hostname: host.into(),
        response_type: DnsResponseType::LoadBalancer,
    };
    for _ in 0..5 {
        assert_eq!(
            r.endpoint(&lb, 9090).await.unwrap(),
            SocketAddr::new(ip("10.0.1.1"), 9090)
        );
    }
    assert!(
        dns.queries(host) <= 2,
        "one resolution (A + AAAA) serves all picks"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_name_is_an_error_naming_the_host() {
    let dns = DnsServer::start().await;
    let r = dns.resolver();
    let err = r.pick("missing.mesh.test", false).await.unwrap_err();
    assert!(err.to_string().contains("missing.mesh.test"), "{err}");
    assert!(dns.queries("missing.mesh.test") >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hosts_file_wins_and_edits_are_seen() {
    let dns = DnsServer::start().await;
    let host = "pinned.mesh.test";
    dns.set(host, &["10.0.2.1"], 30);
    let dir = tempfile::tempdir().unwrap();
    let hosts = dir.path().join("hosts");
    std::fs::write(&hosts, format!("127.0.0.1 localhost\n10.9.9.9 {host}\n")).unwrap();
    let r = Resolver::with_name_servers(&[dns.addr], Some(&hosts));

    assert_eq!(r.pick(host, false).await.unwrap(), ip("10.9.9.9"));
    assert_eq!(dns.queries(host), 0, "a hosts-file name went to DNS");

    std::fs::write(&hosts, format!("10.9.9.8 {host}\n")).unwrap();
    eventually(&r, host, ip("10.9.9.8"), HOSTS_TTL + Duration::from_secs(2)).await;

    // Removed from the file: DNS answers.
    std::fs::write(&hosts, "127.0.0.1 localhost\n").unwrap();
    eventually(&r, host, ip("10.0.2.1"), HOSTS_TTL + Duration::from_secs(2)).await;
    assert!(dns.queries(host) >= 1);
}
