//! The compiled route table of one virtual node: built once per document, immutable, `Send +
//! Sync`. It holds this node's listeners (ingress), its backends' virtual services indexed by
//! lowercase name, each provider (router or node) compiled per listener port into a
//! [`index::RouteIndex`], every reachable target node, and the TCP routes by port. The
//! per-request side (`crate::router`) only reads it.

pub(crate) mod index;
mod listener;
pub(crate) mod matcher;
mod route;
mod target;

use std::collections::HashMap;

pub use listener::{
    ConnectionPool, DEFAULT_IDLE_TIMEOUT, DEFAULT_PER_REQUEST_TIMEOUT, HealthCheck, Listener,
    ListenerTimeouts, ListenerTls, OutlierDetection, Protocol, UNLIMITED,
};
pub use route::{CompiledRoute, RetryPolicy, RouteKind, RouteTimeouts, WeightedTarget};
pub use target::{Discovery, DnsResponseType, TargetNode};

use crate::document::{DocumentError, MeshDocument, Problem, join};
use crate::model::{ClientPolicyTls, EgressFilterType, LoggingSpec, VirtualServiceProvider};
use crate::node::NodeRef;
use index::RouteIndex;

/// The hasher of the per-request maps (host and exact-path lookups): foldhash, fast on short
/// keys and seeded per process.
pub(crate) type FastHash = foldhash::fast::RandomState;

/// What happens to traffic for destinations that are not backends of this node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EgressFilter {
    /// Pass through to the original destination.
    AllowAll,
    /// Refuse (HTTP 404 / TCP close); `*.amazonaws.com` is still allowed. App Mesh's default.
    DropAll,
}

/// The immutable routing table of one virtual node.
#[derive(Debug, Clone)]
pub struct RouteTable {
    pub(crate) mesh: Box<str>,
    pub(crate) node: Box<str>,
    pub(crate) egress: EgressFilter,
    pub(crate) listeners: Vec<Listener>,
    pub(crate) targets: Vec<TargetNode>,
    pub(crate) services: Vec<Service>,
    /// Lowercase virtual-service name → index into `services`.
    pub(crate) by_host: HashMap<Box<str>, u32, FastHash>,
    pub(crate) providers: Vec<Provider>,
    /// (port, service, provider, provider port) of TCP listeners, sorted by port; the first
    /// backend on a port wins (two TCP backends on one port cannot be told apart).
    pub(crate) tcp: Vec<(u16, u32, u32, u32)>,
    pub(crate) access_log: Option<Box<str>>,
}

/// A backend virtual service of this node.
#[derive(Debug, Clone)]
pub(crate) struct Service {
    pub name: Box<str>,
    pub provider: Option<u32>,
    /// The backend's client TLS policy, else the node's backend defaults.
    pub client_tls: Option<ClientPolicyTls>,
}

/// A compiled provider (virtual router, or virtual node reached directly).
#[derive(Debug, Clone)]
pub(crate) struct Provider {
    pub ports: Box<[ProviderPort]>,
}

/// One listener of a provider with its routes.
#[derive(Debug, Clone)]
pub(crate) struct ProviderPort {
    pub port: u16,
    pub protocol: Protocol,
    pub index: RouteIndex,
}

impl RouteTable {
    /// Compiles the table of `node` from a validated document.
    pub fn compile(doc: &MeshDocument, node: &NodeRef) -> Result<RouteTable, DocumentError> {
        if node.mesh != doc.mesh_name() {
            return Err(DocumentError::one(
                "meshName",
                format!(
                    "this node belongs to mesh \"{}\" but the document is for mesh \"{}\"",
                    node.mesh,
                    doc.mesh_name()
                ),
            ));
        }
        let Some(me) = doc.virtual_node(&node.node) else {
            return Err(DocumentError::one(
                "virtualNodes",
                format!(
                    "no virtual node \"{}\" in mesh \"{}\"",
                    node.node,
                    doc.mesh_name()
                ),
            ));
        };
        let mut b = Builder {
            doc,
            targets: Vec::new(),
            target_ix: HashMap::new(),
            problems: Vec::new(),
        };
        let mut services = Vec::new();
        let mut by_host: HashMap<Box<str>, u32, FastHash> = HashMap::default();
        let mut providers: Vec<Provider> = Vec::new();
        let mut provider_ix: HashMap<(bool, &str), u32> = HashMap::new();
        for backend in &me.spec.backends {
            let name = backend.virtual_service_name();
            let lower: Box<str> = name.to_ascii_lowercase().into();
            if by_host.contains_key(&lower) {
                continue;
            }
            let Some(vs) = doc.virtual_service(name) else {
                continue;
            };
            let provider = match &vs.spec.provider {
                None => None,
                Some(p) => {
                    let key = match p {
                        VirtualServiceProvider::VirtualRouter(r) => {
                            (true, r.virtual_router_name.as_str())
                        }
                        VirtualServiceProvider::VirtualNode(n) => {
                            (false, n.virtual_node_name.as_str())
                        }
                    };
                    match provider_ix.get(&key) {
                        Some(&i) => Some(i),
                        None => {
                            let compiled = if key.0 {
                                b.router(key.1)
                            } else {
                                b.provider_node(key.1)
                            };
                            compiled.map(|p| {
                                let i = u32::try_from(providers.len()).unwrap_or(u32::MAX);
                                providers.push(p);
                                provider_ix.insert(key, i);
                                i
                            })
                        }
                    }
                }
            };
            by_host.insert(lower, u32::try_from(services.len()).unwrap_or(u32::MAX));
            let crate::model::Backend::VirtualService(vsb) = backend;
            let client_tls = vsb
                .client_policy
                .as_ref()
                .and_then(|p| p.tls.clone())
                .or_else(|| {
                    let defaults = me.spec.backend_defaults.as_ref()?;
                    defaults.client_policy.as_ref()?.tls.clone()
                });
            services.push(Service {
                name: name.into(),
                provider,
                client_tls,
            });
        }
        if !b.problems.is_empty() {
            return Err(DocumentError::Invalid {
                problems: b.problems,
            });
        }
        let mut tcp: Vec<(u16, u32, u32, u32)> = Vec::new();
        for (si, s) in services.iter().enumerate() {
            let Some(pi) = s.provider else { continue };
            for (ppi, pp) in providers[pi as usize].ports.iter().enumerate() {
                if pp.protocol == Protocol::Tcp
                    && !pp.index.routes.is_empty()
                    && !tcp.iter().any(|t| t.0 == pp.port)
                {
                    tcp.push((pp.port, si as u32, pi, ppi as u32));
                }
            }
        }
        tcp.sort_by_key(|t| t.0);
        let access_log = match &me.spec.logging {
            Some(LoggingSpec {
                access_log: Some(crate::model::AccessLog::File(f)),
            }) => Some(f.path.as_str().into()),
            _ => None,
        };
        Ok(RouteTable {
            mesh: doc.mesh_name().into(),
            node: me.virtual_node_name.as_str().into(),
            egress: match doc.spec().egress_filter_type() {
                EgressFilterType::AllowAll => EgressFilter::AllowAll,
                EgressFilterType::DropAll => EgressFilter::DropAll,
            },
            listeners: me.spec.listeners.iter().map(Listener::compile).collect(),
            targets: b.targets,
            services,
            by_host,
            providers,
            tcp,
            access_log,
        })
    }

    /// The mesh's name.
    pub fn mesh_name(&self) -> &str {
        &self.mesh
    }

    /// This virtual node's name.
    pub fn node_name(&self) -> &str {
        &self.node
    }

    /// The mesh's egress filter (App Mesh default `DropAll`).
    pub fn egress_filter(&self) -> EgressFilter {
        self.egress
    }

    /// This node's listeners (the ingress side), in document order.
    pub fn listeners(&self) -> &[Listener] {
        &self.listeners
    }

    /// This node's listener on `port`.
    pub fn listener_for_port(&self, port: u16) -> Option<&Listener> {
        self.listeners.iter().find(|l| l.port == port)
    }

    /// Every target node reachable from this node.
    pub fn targets(&self) -> &[TargetNode] {
        &self.targets
    }

    /// The names of this node's backend virtual services, in backend order.
    pub fn backend_services(&self) -> impl Iterator<Item = &str> {
        self.services.iter().map(|s| &*s.name)
    }

    /// The protocol of the backends listening on egress `port` (the first backend on that
    /// port decides), so the agent knows whether to speak HTTP or forward bytes.
    pub fn egress_protocol(&self, port: u16) -> Option<Protocol> {
        self.services
            .iter()
            .filter_map(|s| s.provider)
            .find_map(|p| {
                self.providers[p as usize]
                    .ports
                    .iter()
                    .find(|pp| pp.port == port)
                    .map(|pp| pp.protocol)
            })
    }

    /// The client TLS policy towards backend `virtual_service` (its own `clientPolicy`, else
    /// the node's `backendDefaults`); `enforce()` defaults to true, empty `ports` = all ports.
    pub fn client_tls(&self, virtual_service: &str) -> Option<&ClientPolicyTls> {
        let i = crate::router::lookup_host(&self.by_host, virtual_service)?;
        self.services.get(i as usize)?.client_tls.as_ref()
    }

    /// The access-log path of this node (`logging.accessLog.file.path`), if set.
    pub fn access_log_path(&self) -> Option<&str> {
        self.access_log.as_deref()
    }

    /// Every compiled route, for dumps and metrics (each router listener's routes in
    /// App Mesh order; provider-node services contribute their synthetic routes).
    pub fn routes(&self) -> impl Iterator<Item = &CompiledRoute> {
        self.providers
            .iter()
            .flat_map(|p| p.ports.iter().flat_map(|pp| pp.index.routes.iter()))
    }
}

struct Builder<'d> {
    doc: &'d MeshDocument,
    targets: Vec<TargetNode>,
    target_ix: HashMap<&'d str, usize>,
    problems: Vec<Problem>,
}

impl<'d> Builder<'d> {
    /// The target index of node `name` (compiled on first use).
    fn target(&mut self, name: &str) -> Option<usize> {
        if let Some(&i) = self.target_ix.get(name) {
            return Some(i);
        }
        let node = self.doc.virtual_node(name)?;
        let i = self.targets.len();
        self.targets
            .push(TargetNode::compile(node, self.doc.spec().ip_preference()));
        self.target_ix.insert(&node.virtual_node_name, i);
        Some(i)
    }

    fn router(&mut self, name: &str) -> Option<Provider> {
        let doc = self.doc;
        let router = doc.virtual_router(name)?;
        let single = router.spec.listeners.len() == 1;
        let mut placed: Vec<(u16, route::Compiled)> = Vec::new();
        for (position, r) in doc.routes().iter().enumerate() {
            if r.virtual_router_name != name {
                continue;
            }
            let compiled = route::compile(r, position, |node, port| {
                let i = self.target(node)?;
                let t = &self.targets[i];
                let port = match port {
                    Some(p) => u16::try_from(p).ok(),
                    None => t.listeners.first().map(|l| l.port),
                };
                Some((i, port))
            });
            match compiled {
                Ok(c) => {
                    let port = match (c.port, single) {
                        (Some(p), _) => p,
                        (None, true) => router
                            .spec
                            .listeners
                            .first()
                            .map_or(0, |l| l.port_mapping.port as u16),
                        (None, false) => continue,
                    };
                    placed.push((port, c));
                }
                Err((path, message)) => {
                    let origin = &doc.origins().routes[position];
                    self.problems
                        .push(Problem::new(join(origin, &path), message));
                }
            }
        }
        let mut ports = Vec::new();
        for l in &router.spec.listeners {
            let port = u16::try_from(l.port_mapping.port).unwrap_or(0);
            let mut mine: Vec<route::Compiled> = Vec::new();
            let mut rest = Vec::new();
            for (p, c) in placed.drain(..) {
                if p == port {
                    mine.push(c)
                } else {
                    rest.push((p, c))
                }
            }
            placed = rest;
            mine.sort_by_key(|c| c.key);
            ports.push(ProviderPort {
                port,
                protocol: Protocol::from(l.port_mapping.protocol),
                index: RouteIndex::build(mine.into_iter().map(|c| c.route).collect()),
            });
        }
        Some(Provider {
            ports: ports.into(),
        })
    }

    fn provider_node(&mut self, name: &str) -> Option<Provider> {
        let i = self.target(name)?;
        let t = &self.targets[i];
        let ports = t
            .listeners
            .iter()
            .map(|l| {
                let kind = match l.protocol {
                    Protocol::Http => RouteKind::Http,
                    Protocol::Http2 => RouteKind::Http2,
                    Protocol::Grpc => RouteKind::Grpc,
                    Protocol::Tcp => RouteKind::Tcp,
                };
                let timeout = RouteTimeouts {
                    per_request: l.timeout.per_request,
                    idle: l.timeout.idle,
                };
                ProviderPort {
                    port: l.port,
                    protocol: l.protocol,
                    index: RouteIndex::build(vec![route::provider_node_route(
                        &t.name, i, l.port, kind, timeout,
                    )]),
                }
            })
            .collect();
        Some(Provider { ports })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_is_shareable_across_threads() {
        fn assert_send_sync<T: Send + Sync + 'static>() {}
        assert_send_sync::<RouteTable>();
        assert_send_sync::<MeshDocument>();
    }
}
