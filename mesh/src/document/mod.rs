//! The mesh document: one mesh's resources, read from JSON or YAML in any accepted shape,
//! normalised to the canonical form (`meshName`, `spec`, `virtualServices`, `virtualRouters`,
//! `routes`, `virtualNodes`) and validated as a whole before anyone may use it.

mod error;
mod parse;

pub use error::{DocumentError, Problem};

use serde_json::{Map, Value};

use crate::model::{MeshSpec, RouteData, VirtualNodeData, VirtualRouterData, VirtualServiceData};
use parse::Collected;
pub(crate) use parse::join;

/// A parsed, validated mesh document (one mesh). Immutable once built. Two documents are
/// equal when their content is, whatever shape they were read from.
#[derive(Debug, Clone)]
pub struct MeshDocument {
    mesh_name: String,
    spec: MeshSpec,
    virtual_services: Vec<VirtualServiceData>,
    virtual_routers: Vec<VirtualRouterData>,
    routes: Vec<RouteData>,
    virtual_nodes: Vec<VirtualNodeData>,
    origins: Origins,
}

impl PartialEq for MeshDocument {
    fn eq(&self, other: &Self) -> bool {
        self.mesh_name == other.mesh_name
            && self.spec == other.spec
            && self.virtual_services == other.virtual_services
            && self.virtual_routers == other.virtual_routers
            && self.routes == other.routes
            && self.virtual_nodes == other.virtual_nodes
    }
}

/// Where each element came from in the input (path prefixes for problems).
#[derive(Debug, Clone, Default)]
pub(crate) struct Origins {
    pub virtual_services: Vec<String>,
    pub virtual_routers: Vec<String>,
    pub routes: Vec<String>,
    pub virtual_nodes: Vec<String>,
}

impl MeshDocument {
    /// JSON or YAML; the canonical document, a JSON array of describe-* outputs, raw API
    /// bodies, `{"mesh": {...}}`; metadata/status/unknown fields/timestamps ignored.
    /// Validated: on failure every problem is listed with its path.
    pub fn from_slice(bytes: &[u8]) -> Result<MeshDocument, DocumentError> {
        Self::from_value(parse::parse_bytes(bytes)?)
    }

    /// Like [`MeshDocument::from_slice`], from an already parsed JSON value.
    pub fn from_value(value: Value) -> Result<MeshDocument, DocumentError> {
        let c = Collected::from_value(value);
        let mut problems = c.problems;
        let mut mesh_name: Option<&(String, String)> = None;
        for entry in &c.mesh_names {
            match mesh_name {
                None => mesh_name = Some(entry),
                Some((first, first_at)) if *first != entry.0 => problems.push(Problem::new(
                    entry.1.clone(),
                    format!(
                        "element of mesh \"{}\" in a document of mesh \"{first}\" (from {first_at}): \
                         one mesh per document",
                        entry.0
                    ),
                )),
                Some(_) => {}
            }
        }
        let mesh_name = match mesh_name {
            Some((name, _)) => name.clone(),
            None => {
                problems.push(Problem::new("meshName", "no mesh name: set meshName"));
                String::new()
            }
        };
        let (virtual_services, vs_o): (Vec<_>, Vec<_>) = c.virtual_services.into_iter().unzip();
        let (virtual_routers, vr_o): (Vec<_>, Vec<_>) = c.virtual_routers.into_iter().unzip();
        let (routes, r_o): (Vec<_>, Vec<_>) = c.routes.into_iter().unzip();
        let (virtual_nodes, vn_o): (Vec<_>, Vec<_>) = c.virtual_nodes.into_iter().unzip();
        let doc = MeshDocument {
            mesh_name,
            spec: c.spec.unwrap_or_default(),
            virtual_services,
            virtual_routers,
            routes,
            virtual_nodes,
            origins: Origins {
                virtual_services: vs_o,
                virtual_routers: vr_o,
                routes: r_o,
                virtual_nodes: vn_o,
            },
        };
        problems.extend(crate::validate::validate(&doc));
        if problems.is_empty() {
            Ok(doc)
        } else {
            Err(DocumentError::Invalid { problems })
        }
    }

    /// Canonical JSON form (what /config_dump shows and `mesh from-template` prints).
    pub fn to_json_value(&self) -> Value {
        let mut m = Map::new();
        m.insert("meshName".into(), Value::String(self.mesh_name.clone()));
        m.insert(
            "spec".into(),
            serde_json::to_value(&self.spec).unwrap_or_else(|_| Value::Object(Map::new())),
        );
        m.insert("virtualServices".into(), to_list(&self.virtual_services));
        m.insert("virtualRouters".into(), to_list(&self.virtual_routers));
        m.insert("routes".into(), to_list(&self.routes));
        m.insert("virtualNodes".into(), to_list(&self.virtual_nodes));
        Value::Object(m)
    }

    /// The mesh's name.
    pub fn mesh_name(&self) -> &str {
        &self.mesh_name
    }

    /// The mesh spec (egress filter, IP preference).
    pub fn spec(&self) -> &MeshSpec {
        &self.spec
    }

    /// Virtual services, in document order.
    pub fn virtual_services(&self) -> &[VirtualServiceData] {
        &self.virtual_services
    }

    /// Virtual routers, in document order.
    pub fn virtual_routers(&self) -> &[VirtualRouterData] {
        &self.virtual_routers
    }

    /// Routes, in document order (the creation order App Mesh's tie-break uses).
    pub fn routes(&self) -> &[RouteData] {
        &self.routes
    }

    /// Virtual nodes, in document order.
    pub fn virtual_nodes(&self) -> &[VirtualNodeData] {
        &self.virtual_nodes
    }

    /// The virtual node named `name`.
    pub fn virtual_node(&self, name: &str) -> Option<&VirtualNodeData> {
        self.virtual_nodes
            .iter()
            .find(|n| n.virtual_node_name == name)
    }

    /// The virtual service named `name`.
    pub fn virtual_service(&self, name: &str) -> Option<&VirtualServiceData> {
        self.virtual_services
            .iter()
            .find(|s| s.virtual_service_name == name)
    }

    /// The virtual router named `name`.
    pub fn virtual_router(&self, name: &str) -> Option<&VirtualRouterData> {
        self.virtual_routers
            .iter()
            .find(|r| r.virtual_router_name == name)
    }

    pub(crate) fn origins(&self) -> &Origins {
        &self.origins
    }
}

fn to_list<T: serde::Serialize>(items: &[T]) -> Value {
    Value::Array(
        items
            .iter()
            .map(|i| serde_json::to_value(i).unwrap_or(Value::Null))
            .collect(),
    )
}
