//! `MeshData`: the mesh's name and its spec (egress filter, IP preference).

use serde::{Deserialize, Serialize};

/// The `MeshData` shape (`metadata` / `status` ignored).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MeshData {
    pub mesh_name: String,
    #[serde(default)]
    pub spec: MeshSpec,
}

/// `MeshSpec`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MeshSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub egress_filter: Option<EgressFilter>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_discovery: Option<MeshServiceDiscovery>,
}

impl MeshSpec {
    /// The egress filter in force: App Mesh's default is `DROP_ALL`.
    pub fn egress_filter_type(&self) -> EgressFilterType {
        self.egress_filter
            .map_or(EgressFilterType::DropAll, |f| f.kind)
    }

    /// The mesh-wide IP preference, if set.
    pub fn ip_preference(&self) -> Option<IpPreference> {
        self.service_discovery.and_then(|d| d.ip_preference)
    }
}

/// `EgressFilter`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct EgressFilter {
    #[serde(rename = "type")]
    pub kind: EgressFilterType,
}

/// `EgressFilter.type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum EgressFilterType {
    #[serde(rename = "ALLOW_ALL")]
    AllowAll,
    #[serde(rename = "DROP_ALL")]
    DropAll,
}

/// `MeshServiceDiscovery`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MeshServiceDiscovery {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip_preference: Option<IpPreference>,
}

/// `IpPreference` (mesh-wide or per service discovery).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum IpPreference {
    #[serde(rename = "IPv6_PREFERRED")]
    Ipv6Preferred,
    #[serde(rename = "IPv4_PREFERRED")]
    Ipv4Preferred,
    #[serde(rename = "IPv4_ONLY")]
    Ipv4Only,
    #[serde(rename = "IPv6_ONLY")]
    Ipv6Only,
}
