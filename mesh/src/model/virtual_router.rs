//! `VirtualRouterData`: a router's listeners (port + protocol).

use serde::{Deserialize, Serialize};

/// The `VirtualRouterData` shape.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VirtualRouterData {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mesh_name: Option<String>,
    pub virtual_router_name: String,
    #[serde(default)]
    pub spec: VirtualRouterSpec,
}

/// `VirtualRouterSpec`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VirtualRouterSpec {
    #[serde(default)]
    pub listeners: Vec<RouterListener>,
}

/// `VirtualRouterListener`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RouterListener {
    pub port_mapping: PortMapping,
}

/// `PortMapping` (port 1–65535; checked by validation).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortMapping {
    pub port: u32,
    pub protocol: PortProtocol,
}

/// `PortProtocol`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PortProtocol {
    Http,
    Tcp,
    Http2,
    Grpc,
}

impl PortProtocol {
    /// The API spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            PortProtocol::Http => "http",
            PortProtocol::Tcp => "tcp",
            PortProtocol::Http2 => "http2",
            PortProtocol::Grpc => "grpc",
        }
    }
}
