//! AWS Cloud Map discovery for `serviceDiscovery.awsCloudMap {namespaceName, serviceName,
//! attributes}`: `DiscoverInstances` (aws-sdk-servicediscovery) with the attributes as
//! `QueryParameters` (instances must match all of them) and `HEALTHY_OR_ELSE_ALL`, as App
//! Mesh's control plane asked for. Each instance's address is its `AWS_INSTANCE_IPV4`
//! attribute (else `AWS_INSTANCE_IPV6`); the port is always the target node's listener port
//! (App Mesh ignored `AWS_INSTANCE_PORT`, and so does this).
//!
//! Instance lists are cached per (namespace, service, attributes); a lookup hashes the borrowed
//! names and compares them with the stored key, so serving a request allocates nothing.
//!
//! The first lookup of a service is awaited; afterwards a background task refreshes it every
//! [`CloudMapSettings::refresh`] (default 10 s, `TASKMESH_CLOUDMAP_REFRESH_SECONDS`). A failed
//! refresh keeps the last good instance list, is logged and counted
//! ([`CloudMap::refresh_failures`]). The task ends once nobody holds the resolver.
//!
//! `DiscoverInstances` is modelled with the host prefix `data-` (the SDK calls
//! `data-servicediscovery.<region>.amazonaws.com`). Against an endpoint override
//! (`TASKMESH_CLOUDMAP_ENDPOINT`, `AWS_ENDPOINT_URL_SERVICEDISCOVERY`, `AWS_ENDPOINT_URL`; e.g.
//! moto at `http://localhost:5000`) that prefix would make `data-localhost`, so an interceptor
//! removes it ([`NoHostPrefix`]); `AWS_DISABLE_HOST_PREFIX_INJECTION=true` does the same for
//! any endpoint. The default AWS endpoint keeps the prefix.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use aws_sdk_servicediscovery::Client;
use aws_sdk_servicediscovery::types::HealthStatusFilter;
use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::endpoint::EndpointPrefix;
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::interceptors::context::BeforeTransmitInterceptorContextMut;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::config_bag::ConfigBag;
use tokio::sync::OnceCell;

use super::DiscoveryError;

/// Default refresh period.
pub const DEFAULT_REFRESH: Duration = Duration::from_secs(10);
/// Instance attribute holding the IPv4 address.
pub const ATTR_IPV4: &str = "AWS_INSTANCE_IPV4";
/// Instance attribute holding the IPv6 address.
pub const ATTR_IPV6: &str = "AWS_INSTANCE_IPV6";
/// How many instances one `DiscoverInstances` call returns at most (the API's maximum).
const MAX_RESULTS: i32 = 1000;

/// How the Cloud Map client is set up.
#[derive(Debug, Clone, Default)]
pub struct CloudMapSettings {
    /// Endpoint override (`TASKMESH_CLOUDMAP_ENDPOINT`); the host prefix is not added to it.
    pub endpoint: Option<String>,
    /// Refresh period (`TASKMESH_CLOUDMAP_REFRESH_SECONDS`; `None`: [`DEFAULT_REFRESH`]).
    pub refresh: Option<Duration>,
}

/// `(port, addresses, sockets)`: the sockets of `addresses` on `port`.
type SocketsFor = (u16, Arc<Vec<IpAddr>>, Arc<[SocketAddr]>);

/// Which instances: namespace, service and attribute filter.
type Key = (Box<str>, Box<str>, Vec<(Box<str>, Box<str>)>);

/// Cache entries whose keys share a hash.
type Bucket = Vec<(Key, Arc<Entry>)>;

/// The instance list of one service.
struct Entry {
    addrs: ArcSwapOption<Vec<IpAddr>>,
    /// Socket lists already built, per port, with the address list they were built from.
    sockets: Mutex<Vec<SocketsFor>>,
    first: tokio::sync::Mutex<()>,
    next: AtomicUsize,
}

struct Inner {
    settings: CloudMapSettings,
    client: OnceCell<Client>,
    /// Entries by the hash of their key (see [`Inner::hash`]); colliding keys share a bucket.
    entries: Mutex<HashMap<u64, Bucket>>,
    hasher: RandomState,
    refresh_failures: AtomicU64,
}

/// Cloud Map instance cache shared by all connections (cheap to clone).
#[derive(Clone)]
pub struct CloudMap {
    inner: Arc<Inner>,
}

impl CloudMap {
    /// A cache using `settings`; the AWS client is built on the first lookup.
    pub fn new(settings: CloudMapSettings) -> CloudMap {
        CloudMap {
            inner: Arc::new(Inner {
                settings,
                client: OnceCell::new(),
                entries: Mutex::new(HashMap::new()),
                hasher: RandomState::new(),
                refresh_failures: AtomicU64::new(0),
            }),
        }
    }

    /// Refreshes that failed (the last good instance list was kept).
    pub fn refresh_failures(&self) -> u64 {
        self.inner.refresh_failures.load(Ordering::Relaxed)
    }

    /// Every instance address of the service (IPv4 instances first). The first call for a
    /// service waits for Cloud Map; later ones read the list the background refresh keeps.
    pub async fn instances(
        &self,
        namespace: &str,
        service: &str,
        attributes: &[(Box<str>, Box<str>)],
    ) -> Result<Arc<Vec<IpAddr>>, DiscoveryError> {
        Ok(self.entry(namespace, service, attributes).await?.0)
    }

    /// One instance address, round-robin over the service's instances.
    pub async fn pick(
        &self,
        namespace: &str,
        service: &str,
        attributes: &[(Box<str>, Box<str>)],
    ) -> Result<IpAddr, DiscoveryError> {
        let (addrs, entry) = self.entry(namespace, service, attributes).await?;
        if addrs.is_empty() {
            return Err(no_instances(namespace, service));
        }
        let i = entry.next.fetch_add(1, Ordering::Relaxed) % addrs.len();
        Ok(addrs[i])
    }

    /// Every instance of the service on `port` (IPv4 first), for load balancing. The list is
    /// built once per port and instance set, so repeated calls only clone an `Arc`.
    pub async fn endpoints(
        &self,
        namespace: &str,
        service: &str,
        attributes: &[(Box<str>, Box<str>)],
        port: u16,
    ) -> Result<Arc<[SocketAddr]>, DiscoveryError> {
        let (addrs, entry) = self.entry(namespace, service, attributes).await?;
        if addrs.is_empty() {
            return Err(no_instances(namespace, service));
        }
        Ok(entry.sockets_on(&addrs, port))
    }

    async fn entry(
        &self,
        namespace: &str,
        service: &str,
        attributes: &[(Box<str>, Box<str>)],
    ) -> Result<(Arc<Vec<IpAddr>>, Arc<Entry>), DiscoveryError> {
        let hash = self.inner.hash(namespace, service, attributes);
        let is_key = |k: &Key| &*k.0 == namespace && &*k.1 == service && k.2[..] == *attributes;
        let entry = {
            let Ok(mut map) = self.inner.entries.lock() else {
                return Err(DiscoveryError::Resolve {
                    host: format!("cloudmap:{namespace}/{service}"),
                    why: "instance cache poisoned".into(),
                });
            };
            let bucket = map.entry(hash).or_default();
            match bucket.iter().find(|(k, _)| is_key(k)) {
                Some((_, e)) => e.clone(),
                None => {
                    let e = Arc::new(Entry {
                        addrs: ArcSwapOption::empty(),
                        sockets: Mutex::new(Vec::new()),
                        first: tokio::sync::Mutex::new(()),
                        next: AtomicUsize::new(0),
                    });
                    let key: Key = (namespace.into(), service.into(), attributes.to_vec());
                    bucket.push((key, e.clone()));
                    e
                }
            }
        };
        if let Some(a) = entry.addrs.load_full() {
            return Ok((a, entry));
        }
        // The first discovery of a service, boxed: its future (an AWS SDK call) is large, and
        // inline it would be part of every request's future.
        let addrs = Box::pin(self.first_discovery(&entry, namespace, service, attributes)).await?;
        Ok((addrs, entry))
    }

    /// Waits for (or makes) the first DiscoverInstances answer of `entry`, and starts its
    /// refresh.
    async fn first_discovery(
        &self,
        entry: &Arc<Entry>,
        namespace: &str,
        service: &str,
        attributes: &[(Box<str>, Box<str>)],
    ) -> Result<Arc<Vec<IpAddr>>, DiscoveryError> {
        let _first = entry.first.lock().await;
        if let Some(a) = entry.addrs.load_full() {
            return Ok(a);
        }
        let key: Key = (namespace.into(), service.into(), attributes.to_vec());
        let addrs = Arc::new(self.inner.discover(&key).await?);
        entry.addrs.store(Some(addrs.clone()));
        self.spawn_refresh(key, Arc::downgrade(entry));
        Ok(addrs)
    }

    fn spawn_refresh(&self, key: Key, entry: Weak<Entry>) {
        let inner = Arc::downgrade(&self.inner);
        let every = self.inner.settings.refresh.unwrap_or(DEFAULT_REFRESH);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                let (Some(inner), Some(entry)) = (inner.upgrade(), entry.upgrade()) else {
                    return;
                };
                match inner.discover(&key).await {
                    Ok(addrs) => {
                        let changed = entry.addrs.load().as_deref() != Some(&addrs);
                        if changed {
                            tracing::info!(namespace = %key.0, service = %key.1, instances = addrs.len(), "Cloud Map instances changed");
                        }
                        entry.addrs.store(Some(Arc::new(addrs)));
                    }
                    Err(e) => {
                        inner.refresh_failures.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(namespace = %key.0, service = %key.1, error = %e, "Cloud Map refresh failed; keeping the last good instances");
                    }
                }
            }
        });
    }
}

impl Entry {
    /// The sockets of `addrs` on `port`, from the per-port cache when `addrs` is still the
    /// list they were built from.
    fn sockets_on(&self, addrs: &Arc<Vec<IpAddr>>, port: u16) -> Arc<[SocketAddr]> {
        let build =
            || -> Arc<[SocketAddr]> { addrs.iter().map(|ip| SocketAddr::new(*ip, port)).collect() };
        let Ok(mut cache) = self.sockets.lock() else {
            return build();
        };
        if let Some((_, _, s)) = cache
            .iter()
            .find(|(p, a, _)| *p == port && Arc::ptr_eq(a, addrs))
        {
            return s.clone();
        }
        let s = build();
        cache.retain(|(p, a, _)| *p != port && Arc::ptr_eq(a, addrs));
        cache.push((port, addrs.clone(), s.clone()));
        s
    }
}

fn no_instances(namespace: &str, service: &str) -> DiscoveryError {
    DiscoveryError::Resolve {
        host: format!("cloudmap:{namespace}/{service}"),
        why: "Cloud Map lists no instance with an AWS_INSTANCE_IPV4/IPV6 address".into(),
    }
}

impl Inner {
    /// The hash of an entry's key, from borrowed parts (no allocation).
    fn hash(&self, namespace: &str, service: &str, attributes: &[(Box<str>, Box<str>)]) -> u64 {
        self.hasher.hash_one((namespace, service, attributes))
    }

    async fn client(&self) -> &Client {
        self.client
            .get_or_init(|| async {
                let shared = aws_config::load_from_env().await;
                build_client(&shared, self.settings.endpoint.as_deref())
            })
            .await
    }

    /// One `DiscoverInstances` call: the addresses of the matching instances.
    async fn discover(&self, key: &Key) -> Result<Vec<IpAddr>, DiscoveryError> {
        let (namespace, service, attributes) = key;
        let err = |why: String| DiscoveryError::Resolve {
            host: format!("cloudmap:{namespace}/{service}"),
            why,
        };
        let mut req = self
            .client()
            .await
            .discover_instances()
            .namespace_name(namespace.as_ref())
            .service_name(service.as_ref())
            .health_status(HealthStatusFilter::HealthyOrElseAll)
            .max_results(MAX_RESULTS);
        for (k, v) in attributes {
            req = req.query_parameters(k.as_ref(), v.as_ref());
        }
        let out = req.send().await.map_err(|e| {
            err(format!(
                "DiscoverInstances: {}",
                aws_sdk_servicediscovery::error::DisplayErrorContext(&e)
            ))
        })?;
        Ok(addresses(out.instances()))
    }
}

/// The addresses of `instances` (`AWS_INSTANCE_IPV4`, else `AWS_INSTANCE_IPV6`), IPv4 first;
/// instances with neither are skipped.
fn addresses(instances: &[aws_sdk_servicediscovery::types::HttpInstanceSummary]) -> Vec<IpAddr> {
    let mut v4 = Vec::new();
    let mut v6 = Vec::new();
    for i in instances {
        let attrs = i.attributes();
        let ip = |k: &str| {
            attrs
                .and_then(|a| a.get(k))
                .and_then(|s| s.trim().parse::<IpAddr>().ok())
        };
        match (ip(ATTR_IPV4), ip(ATTR_IPV6)) {
            (Some(a), _) => v4.push(a),
            (None, Some(a)) => v6.push(a),
            (None, None) => tracing::debug!(
                instance = i.instance_id().unwrap_or(""),
                "Cloud Map instance without AWS_INSTANCE_IPV4/IPV6; skipped"
            ),
        }
    }
    v4.extend(v6);
    v4
}

/// The Cloud Map client: `shared` AWS settings, `endpoint` overriding the endpoint. With any
/// endpoint override (or `AWS_DISABLE_HOST_PREFIX_INJECTION=true`) the `data-` host prefix is
/// not added.
pub fn build_client(shared: &aws_config::SdkConfig, endpoint: Option<&str>) -> Client {
    let mut conf = aws_sdk_servicediscovery::config::Builder::from(shared);
    if let Some(url) = endpoint {
        conf = conf.endpoint_url(url);
    }
    let overridden = endpoint.is_some()
        || shared.endpoint_url().is_some()
        || env_set("AWS_ENDPOINT_URL_SERVICEDISCOVERY")
        || std::env::var("AWS_DISABLE_HOST_PREFIX_INJECTION")
            .is_ok_and(|v| v.trim().eq_ignore_ascii_case("true"));
    if overridden {
        conf = conf.interceptor(NoHostPrefix);
    }
    Client::from_conf(conf.build())
}

fn env_set(name: &str) -> bool {
    std::env::var_os(name).is_some_and(|v| !v.is_empty())
}

/// Removes the operation's endpoint host prefix (`data-` for `DiscoverInstances`) before the
/// endpoint is applied: the prefix is stored by the operation before serialization and read
/// when each attempt resolves its endpoint, so clearing it here leaves the override's host as
/// it is.
#[derive(Debug)]
pub struct NoHostPrefix;

impl Intercept for NoHostPrefix {
    fn name(&self) -> &'static str {
        "taskmesh::NoHostPrefix"
    }

    fn modify_before_retry_loop(
        &self,
        _context: &mut BeforeTransmitInterceptorContextMut<'_>,
        _runtime_components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        cfg.interceptor_state().unset::<EndpointPrefix>();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_servicediscovery::config::{BehaviorVersion, Credentials, Region};
    use aws_smithy_runtime_api::client::interceptors::context::BeforeTransmitInterceptorContextRef;

    /// Records the URI of the request about to be sent, then stops it (no network).
    #[derive(Debug, Clone, Default)]
    struct Capture(Arc<Mutex<Option<String>>>);

    impl Intercept for Capture {
        fn name(&self) -> &'static str {
            "capture"
        }
        fn read_before_transmit(
            &self,
            context: &BeforeTransmitInterceptorContextRef<'_>,
            _rc: &RuntimeComponents,
            _cfg: &mut ConfigBag,
        ) -> Result<(), BoxError> {
            *self.0.lock().unwrap() = Some(context.request().uri().to_string());
            Err("captured".into())
        }
    }

    async fn uri_called(endpoint: Option<&str>) -> String {
        let shared = aws_config::SdkConfig::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new("us-east-1"))
            .credentials_provider(
                aws_sdk_servicediscovery::config::SharedCredentialsProvider::new(
                    Credentials::for_tests(),
                ),
            )
            .build();
        let client = build_client(&shared, endpoint);
        let cap = Capture::default();
        let _ = client
            .discover_instances()
            .namespace_name("ns")
            .service_name("svc")
            .customize()
            .interceptor(cap.clone())
            .send()
            .await;
        let uri = cap.0.lock().unwrap().clone();
        uri.expect("request reached transmit")
    }

    #[tokio::test]
    async fn the_default_endpoint_keeps_the_data_prefix_an_override_does_not() {
        let default = uri_called(None).await;
        assert!(
            default.starts_with("https://data-servicediscovery.us-east-1.amazonaws.com"),
            "{default}"
        );
        let local = uri_called(Some("http://localhost:5055")).await;
        assert!(local.starts_with("http://localhost:5055"), "{local}");
    }

    #[test]
    fn sockets_are_built_once_per_port_and_instance_set() {
        let entry = Entry {
            addrs: ArcSwapOption::empty(),
            sockets: Mutex::new(Vec::new()),
            first: tokio::sync::Mutex::new(()),
            next: AtomicUsize::new(0),
        };
        let a = Arc::new(vec![
            "10.0.0.1".parse::<IpAddr>().unwrap(),
            "fd00::1".parse().unwrap(),
        ]);
        let s1 = entry.sockets_on(&a, 8080);
        assert_eq!(
            &*s1,
            &[
                "10.0.0.1:8080".parse::<SocketAddr>().unwrap(),
                "[fd00::1]:8080".parse().unwrap()
            ]
        );
        assert!(Arc::ptr_eq(&s1, &entry.sockets_on(&a, 8080)));
        let s2 = entry.sockets_on(&a, 9090);
        assert_eq!(s2[0], "10.0.0.1:9090".parse::<SocketAddr>().unwrap());
        assert!(
            Arc::ptr_eq(&s1, &entry.sockets_on(&a, 8080)),
            "ports kept apart"
        );
        // A refreshed instance list (a new Arc) gets new sockets, old ones are dropped.
        let b = Arc::new(vec!["10.0.0.2".parse::<IpAddr>().unwrap()]);
        let s3 = entry.sockets_on(&b, 8080);
        assert_eq!(&*s3, &["10.0.0.2:8080".parse::<SocketAddr>().unwrap()]);
        assert_eq!(entry.sockets.lock().unwrap().len(), 1);
    }

    #[test]
    fn addresses_prefer_ipv4_and_skip_instances_without_one() {
        use aws_sdk_servicediscovery::types::HttpInstanceSummary;
        let inst = |id: &str, attrs: &[(&str, &str)]| {
            HttpInstanceSummary::builder()
                .instance_id(id)
                .set_attributes(Some(
                    attrs
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                ))
                .build()
        };
        let got = addresses(&[
            inst("a", &[(ATTR_IPV6, "fd00::1")]),
            inst("b", &[(ATTR_IPV4, "10.0.0.2"), (ATTR_IPV6, "fd00::2")]),
            inst("c", &[("AWS_INSTANCE_PORT", "80")]),
            inst("d", &[(ATTR_IPV4, "not-an-ip")]),
        ]);
        assert_eq!(
            got,
            vec![
                "10.0.0.2".parse::<IpAddr>().unwrap(),
                "fd00::1".parse().unwrap()
            ]
        );
    }
}
