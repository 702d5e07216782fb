//! `VirtualServiceData`: a service name and its optional provider (a virtual router or node).

use serde::{Deserialize, Serialize};

/// The `VirtualServiceData` shape.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VirtualServiceData {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mesh_name: Option<String>,
    pub virtual_service_name: String,
    #[serde(default)]
    pub spec: VirtualServiceSpec,
}

/// `VirtualServiceSpec`: no provider = the service exists but routes nowhere yet.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VirtualServiceSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<VirtualServiceProvider>,
}

/// `VirtualServiceProvider` union.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum VirtualServiceProvider {
    VirtualNode(VirtualNodeServiceProvider),
    VirtualRouter(VirtualRouterServiceProvider),
}

/// `VirtualNodeServiceProvider`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VirtualNodeServiceProvider {
    pub virtual_node_name: String,
}

/// `VirtualRouterServiceProvider`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VirtualRouterServiceProvider {
    pub virtual_router_name: String,
}
