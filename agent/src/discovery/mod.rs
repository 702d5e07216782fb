//! Endpoint discovery for target nodes: DNS names resolved with hickory-resolver and cached for
//! the records' TTL (clamped to [`MIN_TTL`]..=[`MAX_TTL`]); `LOADBALANCER` uses the first
//! address, `ENDPOINTS` every address ([`Resolver::pick`] spreads round-robin; routed traffic
//! balances over [`Resolver::endpoints`] in `crate::cluster`). The hosts file is read on every
//! resolution (so edits and `ip netns exec`'s `/etc/netns/<ns>/hosts` are seen) and its answers
//! live [`HOSTS_TTL`]. An expired answer is still served while one background refresh runs; a
//! failed refresh keeps the last good answer, is counted ([`Resolver::refresh_failures`]) and
//! retried after [`MIN_TTL`]. IP literals and `localhost` never touch DNS. Cloud Map targets
//! are looked up with the Cloud Map API (`cloudmap.rs`: DiscoverInstances, attribute filters,
//! periodic refresh), not DNS, so HTTP namespaces and attribute filters work as in App Mesh.
//! [`Resolver::endpoints`] hands the whole endpoint set to the cluster layer
//! (`crate::cluster`) as one shared list per answer and port.

pub mod cloudmap;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock, RwLock};
use std::time::{Duration, Instant};

use arc_swap::{ArcSwap, ArcSwapOption};
use hickory_resolver::config::{
    ConnectionConfig, LookupIpStrategy, NameServerConfig, ResolveHosts, ResolverConfig,
};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::op::Query;
use hickory_resolver::proto::rr::{Name, RData, RecordType};
use hickory_resolver::{Hosts, TokioResolver};
use taskmesh_mesh::{Discovery, DnsResponseType};

use cloudmap::{CloudMap, CloudMapSettings};

/// Shortest time an answer is cached (also the retry delay after a failed refresh).
pub const MIN_TTL: Duration = Duration::from_secs(1);
/// Longest time an answer is cached, whatever its TTL says.
pub const MAX_TTL: Duration = Duration::from_secs(60);
/// How long a hosts-file answer is cached, so edits to the file are seen quickly.
pub const HOSTS_TTL: Duration = Duration::from_secs(2);
/// The system hosts file.
pub const SYSTEM_HOSTS: &str = "/etc/hosts";
/// Per-attempt query timeout for resolvers built by [`Resolver::with_name_servers`].
const EXPLICIT_TIMEOUT: Duration = Duration::from_secs(1);

/// Why no endpoint could be found.
#[derive(thiserror::Error, Debug, Clone)]
pub enum DiscoveryError {
    /// DNS gave no usable answer.
    #[error("resolving {host}: {why}")]
    Resolve {
        /// The name.
        host: String,
        /// What went wrong.
        why: String,
    },
    /// The node has no service discovery configured.
    #[error("target node has no service discovery")]
    NoDiscovery,
}

/// One resolved answer and when it stops being fresh.
struct Answer {
    addrs: Arc<[IpAddr]>,
    expires: Instant,
    /// The last socket-address list built from `addrs` (see [`Resolver::endpoints`]), so the
    /// per-request path hands out the same `Arc` instead of building a new list.
    sockets: ArcSwapOption<Sockets>,
}

/// `addrs` (all, or the first only) with `port`.
struct Sockets {
    port: u16,
    all: bool,
    list: Arc<[SocketAddr]>,
}

impl Answer {
    fn new(addrs: Arc<[IpAddr]>, expires: Instant) -> Answer {
        Answer {
            addrs,
            expires,
            sockets: ArcSwapOption::empty(),
        }
    }

    /// Every address (`all`) or the first, on `port`; built once per (answer, port, all).
    fn sockets(&self, port: u16, all: bool) -> Arc<[SocketAddr]> {
        if let Some(s) = self.sockets.load().as_ref()
            && s.port == port
            && s.all == all
        {
            return s.list.clone();
        }
        let n = if all { self.addrs.len() } else { 1 };
        let list: Arc<[SocketAddr]> = self
            .addrs
            .iter()
            .take(n)
            .map(|ip| SocketAddr::new(*ip, port))
            .collect();
        self.sockets.store(Some(Arc::new(Sockets {
            port,
            all,
            list: list.clone(),
        })));
        list
    }
}

/// The cached state of one hostname.
struct Slot {
    answer: ArcSwap<Answer>,
    refreshing: AtomicBool,
    next: AtomicUsize,
}

/// Where DNS questions go.
enum NameServers {
    /// `/etc/resolv.conf` (read when the first DNS lookup is made).
    System,
    /// These servers over UDP, no search domains.
    Explicit(Vec<SocketAddr>),
}

struct Inner {
    servers: NameServers,
    hosts_file: Option<PathBuf>,
    dns: OnceLock<TokioResolver>,
    cache: RwLock<foldhash::HashMap<Box<str>, Arc<Slot>>>,
    refresh_failures: AtomicU64,
}

/// Cached resolver shared by all connections (cheap to clone; clones share the cache).
#[derive(Clone)]
pub struct Resolver {
    inner: Arc<Inner>,
    cloud_map: CloudMap,
}

impl Default for Resolver {
    /// The production resolver: `/etc/hosts`, then the name servers of `/etc/resolv.conf`.
    fn default() -> Resolver {
        Resolver::new(NameServers::System, Some(PathBuf::from(SYSTEM_HOSTS)))
    }
}

impl Resolver {
    /// A resolver asking `servers` (UDP) instead of the system configuration, consulting
    /// `hosts_file` first when given. Queries time out after 1 s (2 attempts).
    pub fn with_name_servers(servers: &[SocketAddr], hosts_file: Option<&Path>) -> Resolver {
        Resolver::new(
            NameServers::Explicit(servers.to_vec()),
            hosts_file.map(Path::to_path_buf),
        )
    }

    fn new(servers: NameServers, hosts_file: Option<PathBuf>) -> Resolver {
        Resolver {
            inner: Arc::new(Inner {
                servers,
                hosts_file,
                dns: OnceLock::new(),
                cache: RwLock::new(foldhash::HashMap::default()),
                refresh_failures: AtomicU64::new(0),
            }),
            cloud_map: CloudMap::new(CloudMapSettings::default()),
        }
    }

    /// This resolver with Cloud Map looked up as `settings` say (endpoint override, refresh).
    pub fn with_cloud_map(mut self, settings: CloudMapSettings) -> Resolver {
        self.cloud_map = CloudMap::new(settings);
        self
    }

    /// The Cloud Map instance cache.
    pub fn cloud_map(&self) -> &CloudMap {
        &self.cloud_map
    }

    /// Background refreshes that failed (the last good answer was kept).
    pub fn refresh_failures(&self) -> u64 {
        self.inner.refresh_failures.load(Ordering::Relaxed)
    }

    /// One endpoint for `discovery` on `port`.
    pub async fn endpoint(
        &self,
        discovery: &Discovery,
        port: u16,
    ) -> Result<SocketAddr, DiscoveryError> {
        match discovery {
            Discovery::Dns {
                hostname,
                response_type,
            } => {
                let all = matches!(response_type, DnsResponseType::Endpoints);
                self.pick(hostname, all)
                    .await
                    .map(|ip| SocketAddr::new(ip, port))
            }
            Discovery::CloudMap {
                namespace,
                service,
                attributes,
            } => self
                .cloud_map
                .pick(namespace, service, attributes)
                .await
                .map(|ip| SocketAddr::new(ip, port)),
            Discovery::None => Err(DiscoveryError::NoDiscovery),
        }
    }

    /// Every endpoint of `discovery` on `port`: all cached addresses for DNS `ENDPOINTS` and
    /// every Cloud Map instance, the first address for `LOADBALANCER`. Served from the caches
    /// like [`Self::pick`]; while the answer does not change the same list (`Arc`) is returned
    /// (IP literals and `localhost` are cached too: they never expire and never touch DNS).
    pub async fn endpoints(
        &self,
        discovery: &Discovery,
        port: u16,
    ) -> Result<Arc<[SocketAddr]>, DiscoveryError> {
        match discovery {
            Discovery::Dns {
                hostname,
                response_type,
            } => {
                let all = matches!(response_type, DnsResponseType::Endpoints);
                let slot = self.slot(hostname).await?;
                Ok(slot.answer.load().sockets(port, all))
            }
            Discovery::CloudMap {
                namespace,
                service,
                attributes,
            } => {
                // Served from its cache without allocating; the first discovery of a service is
                // boxed inside (as the first DNS lookup in `slot`).
                self.cloud_map
                    .endpoints(namespace, service, attributes, port)
                    .await
            }
            Discovery::None => Err(DiscoveryError::NoDiscovery),
        }
    }

    /// An address of `host`: the first one, or round-robin over all when `all`. Only the first
    /// resolution of a name waits for DNS; later ones are served from the cache (stale answers
    /// while a background refresh runs).
    pub async fn pick(&self, host: &str, all: bool) -> Result<IpAddr, DiscoveryError> {
        if let Ok(ip) = host.parse::<IpAddr>() {
            return Ok(ip);
        }
        if is_localhost(host) {
            return Ok(IpAddr::V4(Ipv4Addr::LOCALHOST));
        }
        let slot = self.slot(host).await?;
        let answer = slot.answer.load();
        let i = if all {
            slot.next.fetch_add(1, Ordering::Relaxed) % answer.addrs.len()
        } else {
            0
        };
        Ok(answer.addrs[i])
    }

    /// The cache slot of `host`, resolving it first if it is new. IP literals and `localhost`
    /// get a slot that never expires.
    async fn slot(&self, host: &str) -> Result<Arc<Slot>, DiscoveryError> {
        let cached = self
            .inner
            .cache
            .read()
            .ok()
            .and_then(|c| c.get(host).cloned());
        let slot = match cached {
            Some(slot) => {
                let expired = slot.answer.load().expires <= Instant::now();
                if expired && !slot.refreshing.swap(true, Ordering::AcqRel) {
                    self.spawn_refresh(host, slot.clone());
                }
                slot
            }
            None => {
                let answer = match static_addr(host) {
                    Some(ip) => Answer::new(Arc::new([ip]), far_future()),
                    // Boxed: the first resolution of a name is rare, and its future is large;
                    // inline, it would sit in every request's future.
                    None => Box::pin(self.inner.lookup(host)).await?,
                };
                let fresh = Arc::new(Slot {
                    answer: ArcSwap::from_pointee(answer),
                    refreshing: AtomicBool::new(false),
                    next: AtomicUsize::new(0),
                });
                match self.inner.cache.write() {
                    Ok(mut c) => c.entry(host.into()).or_insert(fresh).clone(),
                    Err(_) => fresh,
                }
            }
        };
        Ok(slot)
    }

    fn spawn_refresh(&self, host: &str, slot: Arc<Slot>) {
        let inner = self.inner.clone();
        let host = host.to_string();
        tokio::spawn(async move {
            match inner.lookup(&host).await {
                Ok(answer) => slot.answer.store(Arc::new(answer)),
                Err(err) => {
                    inner.refresh_failures.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(host, error = %err, "re-resolution failed; keeping last answer");
                    let addrs = slot.answer.load().addrs.clone();
                    slot.answer
                        .store(Arc::new(Answer::new(addrs, Instant::now() + MIN_TTL)));
                }
            }
            slot.refreshing.store(false, Ordering::Release);
        });
    }
}

impl Inner {
    /// Resolve `host` now: the hosts file first, then DNS.
    async fn lookup(&self, host: &str) -> Result<Answer, DiscoveryError> {
        let err = |why: String| DiscoveryError::Resolve {
            host: host.to_string(),
            why,
        };
        if let Some(path) = &self.hosts_file
            && let Some(addrs) = hosts_lookup(path, host).await
        {
            return Ok(Answer::new(addrs.into(), Instant::now() + HOSTS_TTL));
        }
        let lookup = self
            .dns()
            .map_err(|e| err(e.to_string()))?
            .lookup_ip(host)
            .await
            .map_err(|e| err(e.to_string()))?;
        let addrs: Vec<IpAddr> = lookup.iter().collect();
        if addrs.is_empty() {
            return Err(err("no addresses".into()));
        }
        let now = Instant::now();
        let ttl = lookup
            .valid_until()
            .saturating_duration_since(now)
            .clamp(MIN_TTL, MAX_TTL);
        Ok(Answer::new(addrs.into(), now + ttl))
    }

    /// The hickory resolver, built on first use (a failure is retried on the next lookup).
    fn dns(&self) -> Result<&TokioResolver, hickory_resolver::net::NetError> {
        if let Some(r) = self.dns.get() {
            return Ok(r);
        }
        let mut builder = match &self.servers {
            NameServers::System => TokioResolver::builder_tokio()?,
            NameServers::Explicit(addrs) => {
                let servers = addrs
                    .iter()
                    .map(|sa| {
                        let mut conn = ConnectionConfig::udp();
                        conn.port = sa.port();
                        let mut ns = NameServerConfig::udp(sa.ip());
                        ns.connections = vec![conn];
                        ns
                    })
                    .collect();
                let mut b = TokioResolver::builder_with_config(
                    ResolverConfig::from_name_servers(servers),
                    TokioRuntimeProvider::default(),
                );
                b.options_mut().timeout = EXPLICIT_TIMEOUT;
                b.options_mut().attempts = 2;
                b
            }
        };
        let opts = builder.options_mut();
        // The hosts file is read by us on every lookup; hickory's copy is read only once.
        opts.use_hosts_file = ResolveHosts::Never;
        // ECS tasks are IPv4 first (App Mesh's default ipPreference is IPv4_PREFERRED).
        opts.ip_strategy = LookupIpStrategy::Ipv4AndIpv6;
        // Our cache bounds the TTL; hickory's must not hold an answer longer.
        opts.positive_max_ttl = Some(MAX_TTL);
        let resolver = builder.build()?;
        Ok(self.dns.get_or_init(|| resolver))
    }
}

/// The address of an IP literal or `localhost`, which never need DNS.
fn static_addr(host: &str) -> Option<IpAddr> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Some(ip);
    }
    is_localhost(host).then_some(IpAddr::V4(Ipv4Addr::LOCALHOST))
}

/// An expiry that is never reached (static answers).
fn far_future() -> Instant {
    let now = Instant::now();
    now.checked_add(Duration::from_secs(100 * 365 * 86_400))
        .unwrap_or(now + MAX_TTL)
}

/// `localhost` and names under it (RFC 6761) are the loopback address.
fn is_localhost(host: &str) -> bool {
    let h = host.strip_suffix('.').unwrap_or(host);
    h.eq_ignore_ascii_case("localhost")
        || h.len() > 10 && h.as_bytes()[h.len() - 10..].eq_ignore_ascii_case(b".localhost")
}

/// The addresses `path` lists for `host` (IPv4 first), or `None` if it lists none or cannot be
/// read (a missing hosts file just means "ask DNS").
async fn hosts_lookup(path: &Path, host: &str) -> Option<Vec<IpAddr>> {
    let text = match tokio::fs::read(path).await {
        Ok(t) => t,
        Err(e) => {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::debug!(path = %path.display(), error = %e, "hosts file unreadable");
            }
            return None;
        }
    };
    let mut hosts = Hosts::default();
    if let Err(e) = hosts.read_hosts_conf(&text[..]) {
        tracing::debug!(path = %path.display(), error = %e, "hosts file unparsable");
        return None;
    }
    let name = Name::from_utf8(host).ok()?;
    let addrs: Vec<IpAddr> = [RecordType::A, RecordType::AAAA]
        .into_iter()
        .filter_map(|t| hosts.lookup_static_host(&Query::query(name.clone(), t)))
        .flat_map(|l| {
            l.answers()
                .iter()
                .filter_map(|r| match &r.data {
                    RData::A(a) => Some(IpAddr::V4(a.0)),
                    RData::AAAA(a) => Some(IpAddr::V6(a.0)),
                    _ => None,
                })
                .collect::<Vec<_>>()
        })
        .collect();
    (!addrs.is_empty()).then_some(addrs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn resolves_localhost_and_literals_without_dns() {
        // An unroutable name server: any DNS query would fail.
        let r = Resolver::with_name_servers(&["127.0.0.1:9".parse().unwrap()], None);
        assert!(r.pick("localhost", false).await.unwrap().is_loopback());
        assert!(r.pick("api.LOCALHOST.", true).await.unwrap().is_loopback());
        assert_eq!(
            r.pick("10.1.2.3", true).await.unwrap(),
            "10.1.2.3".parse::<IpAddr>().unwrap()
        );
        assert_eq!(
            r.pick("fd00::1", false).await.unwrap(),
            "fd00::1".parse::<IpAddr>().unwrap()
        );
        assert!(r.pick("no-such-host.invalid", false).await.is_err());
    }

    #[tokio::test]
    async fn system_resolver_builds_and_refuses_unknown_names() {
        let r = Resolver::default();
        assert!(r.pick("localhost", false).await.unwrap().is_loopback());
        assert!(r.pick("no-such-host.invalid", false).await.is_err());
    }

    #[tokio::test]
    async fn endpoints_list_every_address_and_reuse_the_list() {
        let dir = tempfile::tempdir().unwrap();
        let hosts = dir.path().join("hosts");
        std::fs::write(&hosts, "10.0.0.1 svc.test\n10.0.0.2 svc.test\n").unwrap();
        let r = Resolver::with_name_servers(&["127.0.0.1:9".parse().unwrap()], Some(&hosts));
        let dns = |name: &str, response_type| Discovery::Dns {
            hostname: name.into(),
            response_type,
        };
        let all = dns("svc.test", DnsResponseType::Endpoints);
        let a = r.endpoints(&all, 80).await.unwrap();
        let want: Vec<SocketAddr> = vec![
            "10.0.0.1:80".parse().unwrap(),
            "10.0.0.2:80".parse().unwrap(),
        ];
        assert_eq!(&a[..], &want[..]);
        assert!(
            Arc::ptr_eq(&a, &r.endpoints(&all, 80).await.unwrap()),
            "list rebuilt"
        );
        let lb = dns("svc.test", DnsResponseType::LoadBalancer);
        assert_eq!(
            &r.endpoints(&lb, 81).await.unwrap()[..],
            &want[..1]
                .iter()
                .map(|a| SocketAddr::new(a.ip(), 81))
                .collect::<Vec<_>>()[..]
        );
        let literal = dns("127.0.0.1", DnsResponseType::LoadBalancer);
        let l1 = r.endpoints(&literal, 9080).await.unwrap();
        assert_eq!(
            &l1[..],
            &["127.0.0.1:9080".parse::<SocketAddr>().unwrap()][..]
        );
        assert!(Arc::ptr_eq(
            &l1,
            &r.endpoints(&literal, 9080).await.unwrap()
        ));
        assert!(matches!(
            r.endpoints(&Discovery::None, 80).await,
            Err(DiscoveryError::NoDiscovery)
        ));
    }

    #[test]
    fn localhost_names() {
        assert!(is_localhost("localhost"));
        assert!(is_localhost("LocalHost."));
        assert!(is_localhost("a.localhost"));
        assert!(!is_localhost("notlocalhost"));
        assert!(!is_localhost("localhost.example.com"));
        assert!(!is_localhost("ééééé.localhos"));
    }
}
