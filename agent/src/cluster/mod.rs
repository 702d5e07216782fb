//! Endpoint sets ("clusters", as Envoy calls them): for each (target virtual node, listener
//! port) the endpoints discovery found, with per-endpoint state that outlives table reloads —
//! requests in flight, totals, errors and outlier ejection. A routed request asks
//! [`Clusters::route`] for its target; that refreshes the set from the resolver (the same shared
//! list while the DNS answer does not change, so nothing is allocated) and picks the first
//! endpoint by power of two choices over in-flight requests ([`balance`]), skipping ejected
//! endpoints ([`outlier`]) and endpoints cooling down after a connect failure ([`accrual`]). Retries ([`retry`]) pick again, preferring endpoints the request has
//! not tried, within the cluster's retry budget, replaying small bodies ([`replay`]). [`stats`]
//! renders all of it for `/clusters` and `/stats/prometheus`.

pub mod accrual;
pub mod balance;
pub mod outlier;
pub mod replay;
pub mod retry;
pub mod stats;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

use arc_swap::ArcSwap;
use taskmesh_mesh::{Discovery, OutlierDetection, TargetNode};

use crate::discovery::{DiscoveryError, Resolver};
use balance::Tried;

/// Every endpoint set of the agent, keyed by target node name and port. Sets are created on
/// first use and kept across reloads (ejections and counters survive a new document).
#[derive(Default)]
pub struct Clusters {
    by_node: RwLock<foldhash::HashMap<Box<str>, Vec<Arc<Cluster>>>>,
}

impl Clusters {
    /// The set of `node` on `port` (created on first use). Allocation-free once it exists.
    pub fn get(&self, node: &str, port: u16) -> Arc<Cluster> {
        if let Ok(map) = self.by_node.read()
            && let Some(c) = map
                .get(node)
                .and_then(|v| v.iter().find(|c| c.port == port))
        {
            return c.clone();
        }
        let fresh = Arc::new(Cluster::new(node, port));
        match self.by_node.write() {
            Ok(mut map) => {
                let list = map.entry(node.into()).or_default();
                match list.iter().find(|c| c.port == port) {
                    Some(c) => c.clone(),
                    None => {
                        list.push(fresh.clone());
                        fresh
                    }
                }
            }
            Err(_) => fresh,
        }
    }

    /// Routes a request to `target` on `port`: refreshes the endpoint set from discovery and
    /// picks the first endpoint (held as in flight until the attempt ends).
    pub async fn route(
        &self,
        resolver: &Resolver,
        target: &TargetNode,
        port: u16,
    ) -> Result<Routed, DiscoveryError> {
        let cluster = self.get(&target.name, port);
        let hosts = cluster.refresh(resolver, &target.discovery).await?;
        if hosts.hosts.is_empty() {
            return Err(DiscoveryError::Resolve {
                host: target.name.to_string(),
                why: "no endpoints".into(),
            });
        }
        let outlier = target.listener(port).and_then(|l| l.outlier_detection);
        let first = cluster.pick(&hosts, Tried::default());
        Ok(Routed {
            first_addr: first.addr(),
            cluster,
            hosts,
            outlier,
            first: Mutex::new(Some(first)),
        })
    }

    /// Every set, sorted by node and port (for admin and metrics).
    pub fn all(&self) -> Vec<Arc<Cluster>> {
        let mut all: Vec<Arc<Cluster>> = match self.by_node.read() {
            Ok(map) => map.values().flatten().cloned().collect(),
            Err(_) => Vec::new(),
        };
        all.sort_by(|a, b| (&a.node, a.port).cmp(&(&b.node, b.port)));
        all
    }
}

/// The endpoints of one target node on one port.
pub struct Cluster {
    node: Box<str>,
    port: u16,
    /// Time base of the nanosecond clocks below.
    epoch: Instant,
    hosts: ArcSwap<HostSet>,
    /// Requests routed here and not finished (retry budget base).
    active_requests: AtomicU64,
    /// Retry attempts in flight.
    active_retries: AtomicU64,
    /// Serialises ejection decisions (rare; never taken on the request path otherwise).
    eject_lock: Mutex<()>,
    stats: stats::ClusterStats,
}

/// One snapshot of a cluster's endpoints; a request keeps the snapshot it started with, so
/// indices (tried endpoints) stay valid across discovery changes.
pub struct HostSet {
    addrs: Arc<[SocketAddr]>,
    hosts: Box<[Arc<Host>]>,
}

impl HostSet {
    /// The endpoints.
    pub fn hosts(&self) -> &[Arc<Host>] {
        &self.hosts
    }
}

/// One endpoint and its counters and outlier state (kept while discovery keeps listing it).
pub struct Host {
    addr: SocketAddr,
    rq_active: AtomicU64,
    rq_total: AtomicU64,
    rq_error: AtomicU64,
    /// Current streak of consecutive server errors, and when it started (cluster nanos).
    consecutive_errors: AtomicU64,
    streak_start: AtomicU64,
    /// End of the current or last ejection (cluster nanos); 0 = never ejected.
    ejected_until: AtomicU64,
    /// Ejections counted for the back-off multiplier (decays while healthy).
    times_ejected: AtomicU32,
    /// End of the current or last connect-failure cool-down (cluster nanos); 0 = none.
    cooldown_until: AtomicU64,
    /// Consecutive connect failures that started a cool-down.
    connect_failures: AtomicU32,
}

impl Host {
    fn new(addr: SocketAddr) -> Host {
        Host {
            addr,
            rq_active: AtomicU64::new(0),
            rq_total: AtomicU64::new(0),
            rq_error: AtomicU64::new(0),
            consecutive_errors: AtomicU64::new(0),
            streak_start: AtomicU64::new(0),
            ejected_until: AtomicU64::new(0),
            times_ejected: AtomicU32::new(0),
            cooldown_until: AtomicU64::new(0),
            connect_failures: AtomicU32::new(0),
        }
    }

    /// The endpoint's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Whether the endpoint is ejected at `now` (cluster nanos).
    pub fn is_ejected(&self, now: u64) -> bool {
        self.ejected_until.load(Ordering::Relaxed) > now
    }

    /// Requests in flight.
    pub fn active(&self) -> u64 {
        self.rq_active.load(Ordering::Relaxed)
    }
}

impl Cluster {
    fn new(node: &str, port: u16) -> Cluster {
        Cluster {
            node: node.into(),
            port,
            epoch: Instant::now(),
            hosts: ArcSwap::from_pointee(HostSet {
                addrs: Arc::new([]),
                hosts: Box::new([]),
            }),
            active_requests: AtomicU64::new(0),
            active_retries: AtomicU64::new(0),
            eject_lock: Mutex::new(()),
            stats: stats::ClusterStats::default(),
        }
    }

    /// The target node's name.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// The listener port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Nanoseconds since the cluster was made (the clock of ejections).
    pub fn now(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// The current endpoint snapshot.
    pub fn hosts(&self) -> Arc<HostSet> {
        self.hosts.load_full()
    }

    /// The counters of this cluster.
    pub fn stats(&self) -> &stats::ClusterStats {
        &self.stats
    }

    /// Brings the endpoint set up to date with discovery. Endpoints that stay keep their state;
    /// new ones start fresh; gone ones are dropped. When discovery returns the same list as
    /// last time (the usual case) this only compares two pointers.
    pub async fn refresh(
        &self,
        resolver: &Resolver,
        discovery: &Discovery,
    ) -> Result<Arc<HostSet>, DiscoveryError> {
        let addrs = resolver.endpoints(discovery, self.port).await?;
        Ok(self.adopt(addrs))
    }

    /// Makes `addrs` the endpoint set, keeping the state of the endpoints that stay. Concurrent
    /// refreshes (the first requests of a new target all resolve at once) each build on the set
    /// the other installed (compare-and-swap, retried), so no two `Host`s for one address ever
    /// coexist and no request is counted on a set that is then thrown away.
    fn adopt(&self, addrs: Arc<[SocketAddr]>) -> Arc<HostSet> {
        let current = self.hosts.load_full();
        if Arc::ptr_eq(&current.addrs, &addrs) {
            // The usual case: discovery answered from its cache.
            return current;
        }
        let mut changed = false;
        self.hosts.rcu(|current| {
            changed = false;
            if Arc::ptr_eq(&current.addrs, &addrs) {
                return Arc::clone(current);
            }
            let hosts = if current.addrs[..] == addrs[..] {
                // Same endpoints in a new list: adopt the list so the next check is a pointer one.
                current.hosts.clone()
            } else {
                changed = true;
                addrs
                    .iter()
                    .map(|a| {
                        current
                            .hosts
                            .iter()
                            .find(|h| h.addr == *a)
                            .cloned()
                            .unwrap_or_else(|| Arc::new(Host::new(*a)))
                    })
                    .collect()
            };
            Arc::new(HostSet {
                addrs: addrs.clone(),
                hosts,
            })
        });
        let set = self.hosts.load_full();
        if changed {
            tracing::info!(
                target_node = &*self.node,
                port = self.port,
                endpoints = set.hosts.len(),
                "endpoint set changed"
            );
        }
        set
    }

    /// Picks an endpoint of `set` (power of two choices over in-flight requests, ejected,
    /// cooling and `tried` endpoints avoided) and counts it in flight until the returned guard is dropped.
    pub fn pick(&self, set: &HostSet, tried: Tried) -> InFlight {
        let now = self.now();
        let i = balance::choose(set.hosts(), now, tried, rand::random());
        let host = set.hosts[i].clone();
        host.rq_active.fetch_add(1, Ordering::Relaxed);
        host.rq_total.fetch_add(1, Ordering::Relaxed);
        InFlight { host, index: i }
    }
}

/// One endpoint held in flight by an attempt; dropping it ends the attempt.
pub struct InFlight {
    host: Arc<Host>,
    index: usize,
}

impl InFlight {
    /// The endpoint's address.
    pub fn addr(&self) -> SocketAddr {
        self.host.addr
    }

    /// The endpoint's index in the request's snapshot.
    pub fn index(&self) -> usize {
        self.index
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.host.rq_active.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Where a routed request goes: its cluster, the endpoint snapshot, the target listener's
/// outlier detection, and the first endpoint picked.
pub struct Routed {
    /// The endpoint set.
    pub cluster: Arc<Cluster>,
    /// The snapshot this request picks from.
    pub hosts: Arc<HostSet>,
    /// The target listener's `outlierDetection`.
    pub outlier: Option<OutlierDetection>,
    /// The first endpoint's address.
    pub first_addr: SocketAddr,
    first: Mutex<Option<InFlight>>,
}

impl Routed {
    /// Takes the first endpoint's in-flight guard (once).
    pub fn take_first(&self) -> Option<InFlight> {
        self.first.lock().ok().and_then(|mut f| f.take())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;
    use std::sync::{Arc, Barrier};

    use super::{Cluster, Tried};

    /// The first requests to a new target resolve it at the same time: every request must be
    /// counted on the endpoint objects that stay (the admin's `rq_total` once undercounted by
    /// the requests picked on a set another refresh replaced).
    #[test]
    fn concurrent_first_refreshes_share_their_endpoints() {
        const THREADS: usize = 8;
        for round in 0..200 {
            let cluster = Arc::new(Cluster::new("api", 8080));
            let addrs: Arc<[std::net::SocketAddr]> = Arc::from([
                "127.0.0.1:8080".parse().unwrap(),
                "127.0.0.2:8080".parse().unwrap(),
            ]);
            let barrier = Arc::new(Barrier::new(THREADS));
            let threads: Vec<_> = (0..THREADS)
                .map(|_| {
                    let (cluster, barrier) = (cluster.clone(), barrier.clone());
                    // Each thread resolves to an equal list of its own, as separate lookups do.
                    let addrs: Arc<[std::net::SocketAddr]> = Arc::from(&addrs[..]);
                    std::thread::spawn(move || {
                        barrier.wait();
                        let set = cluster.adopt(addrs);
                        drop(cluster.pick(&set, Tried::default()));
                    })
                })
                .collect();
            for t in threads {
                t.join().unwrap();
            }
            let set = cluster.hosts();
            let counted: u64 = set
                .hosts
                .iter()
                .map(|h| h.rq_total.load(Ordering::Relaxed))
                .sum();
            assert_eq!(counted, THREADS as u64, "round {round}");
            assert_eq!(set.hosts.len(), 2);
        }
    }
}
