//! Endpoint discovery for target nodes: DNS names resolved with the system resolver
//! (`tokio::net::lookup_host`) and cached; `LOADBALANCER` uses the first address, `ENDPOINTS`
//! spreads over every address. Entries are re-resolved after [`REFRESH`] (the system resolver
//! does not expose record TTLs) and the last good answer is kept if a re-resolution fails.
//! Cloud Map targets resolve through their private DNS name `<service>.<namespace>`, which is
//! what Cloud Map DNS namespaces publish.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use taskmesh_mesh::{Discovery, DnsResponseType};

/// How long a resolved answer is used before it is refreshed.
pub const REFRESH: Duration = Duration::from_secs(5);

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

struct Entry {
    addrs: Arc<[IpAddr]>,
    fetched: Instant,
    next: AtomicUsize,
}

/// Cached resolver shared by all connections.
#[derive(Default)]
pub struct Resolver {
    cache: RwLock<HashMap<Box<str>, Arc<Entry>>>,
}

impl Resolver {
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
                namespace, service, ..
            } => {
                let name = format!("{service}.{namespace}");
                self.pick(&name, true)
                    .await
                    .map(|ip| SocketAddr::new(ip, port))
            }
            Discovery::None => Err(DiscoveryError::NoDiscovery),
        }
    }

    /// An address of `host`: the first one, or round-robin over all when `all`.
    pub async fn pick(&self, host: &str, all: bool) -> Result<IpAddr, DiscoveryError> {
        if let Ok(ip) = host.parse::<IpAddr>() {
            return Ok(ip);
        }
        let cached = self.cache.read().ok().and_then(|c| c.get(host).cloned());
        let entry = match cached {
            Some(e) if e.fetched.elapsed() < REFRESH => e,
            stale => match self.resolve(host).await {
                Ok(e) => e,
                Err(err) => match stale {
                    Some(e) => {
                        tracing::warn!(host, error = %err, "re-resolution failed; keeping last answer");
                        e
                    }
                    None => return Err(err),
                },
            },
        };
        let i = if all {
            entry.next.fetch_add(1, Ordering::Relaxed) % entry.addrs.len()
        } else {
            0
        };
        Ok(entry.addrs[i])
    }

    async fn resolve(&self, host: &str) -> Result<Arc<Entry>, DiscoveryError> {
        let err = |why: String| DiscoveryError::Resolve {
            host: host.to_string(),
            why,
        };
        let addrs: Vec<IpAddr> = tokio::net::lookup_host((host, 0))
            .await
            .map_err(|e| err(e.to_string()))?
            .map(|sa| sa.ip())
            .collect();
        if addrs.is_empty() {
            return Err(err("no addresses".into()));
        }
        let entry = Arc::new(Entry {
            addrs: addrs.into(),
            fetched: Instant::now(),
            next: AtomicUsize::new(0),
        });
        if let Ok(mut c) = self.cache.write() {
            c.insert(host.into(), entry.clone());
        }
        Ok(entry)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn resolves_localhost_and_literals() {
        let r = Resolver::default();
        let ip = r.pick("localhost", false).await.unwrap();
        assert!(ip.is_loopback());
        assert_eq!(
            r.pick("10.1.2.3", true).await.unwrap(),
            "10.1.2.3".parse::<IpAddr>().unwrap()
        );
        assert!(r.pick("no-such-host.invalid", false).await.is_err());
    }
}
