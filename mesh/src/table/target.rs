//! Target virtual nodes: where a weighted target sends traffic (service discovery, listener
//! port and protocol, the node's listeners for health checks and outlier detection).

use crate::model::{IpPreference, ServiceDiscovery, VirtualNodeData};

use super::{Listener, Protocol};

/// A virtual node reachable from this node (index = `WeightedTarget::node`).
#[derive(Debug, Clone, PartialEq)]
pub struct TargetNode {
    pub name: Box<str>,
    pub discovery: Discovery,
    /// Its first listener port (0 when it has none).
    pub port: u16,
    /// Its first listener's protocol (`Tcp` when it has none).
    pub protocol: Protocol,
    pub listeners: Vec<Listener>,
    /// The node's IP preference, else the mesh's.
    pub ip_preference: Option<IpPreference>,
}

/// How to find a node's endpoints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Discovery {
    Dns {
        hostname: Box<str>,
        response_type: DnsResponseType,
    },
    CloudMap {
        namespace: Box<str>,
        service: Box<str>,
        attributes: Vec<(Box<str>, Box<str>)>,
    },
    None,
}

/// DNS response type: `LoadBalancer` (App Mesh default) uses the first address per
/// connection, `Endpoints` treats every address as a host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DnsResponseType {
    LoadBalancer,
    Endpoints,
}

impl TargetNode {
    pub(crate) fn compile(node: &VirtualNodeData, mesh_ip: Option<IpPreference>) -> TargetNode {
        let listeners: Vec<Listener> = node.spec.listeners.iter().map(Listener::compile).collect();
        let (discovery, ip) = match &node.spec.service_discovery {
            Some(ServiceDiscovery::Dns(d)) => (
                Discovery::Dns {
                    hostname: d.hostname.as_str().into(),
                    response_type: match d.response_type {
                        Some(crate::model::DnsResponseType::Endpoints) => {
                            DnsResponseType::Endpoints
                        }
                        _ => DnsResponseType::LoadBalancer,
                    },
                },
                d.ip_preference,
            ),
            Some(ServiceDiscovery::AwsCloudMap(c)) => (
                Discovery::CloudMap {
                    namespace: c.namespace_name.as_str().into(),
                    service: c.service_name.as_str().into(),
                    attributes: c
                        .attributes
                        .iter()
                        .map(|a| (a.key.as_str().into(), a.value.as_str().into()))
                        .collect(),
                },
                c.ip_preference,
            ),
            None => (Discovery::None, None),
        };
        TargetNode {
            name: node.virtual_node_name.as_str().into(),
            discovery,
            port: listeners.first().map_or(0, |l| l.port),
            protocol: listeners.first().map_or(Protocol::Tcp, |l| l.protocol),
            listeners,
            ip_preference: ip.or(mesh_ip),
        }
    }

    /// The listener on `port`.
    pub fn listener(&self, port: u16) -> Option<&Listener> {
        self.listeners.iter().find(|l| l.port == port)
    }
}
