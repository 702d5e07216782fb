//! The demo's reading of a mesh document (pure: data in, data out). It finds the example
//! application in it — the gateway node, the virtual service the gateway calls, the nodes that
//! serve that service (the colortellers) — computes the weights a request takes exactly as the
//! agent does (through the compiled route table), and renders the runtime copy of the document
//! the demo's agents read, where every task sits on its own loopback address.

use std::net::Ipv4Addr;
use std::path::Path;

use serde_json::{Value, json};
use taskmesh_mesh::model::{Backend, VirtualServiceProvider};
use taskmesh_mesh::{HttpRequestView, HttpRouting, MeshDocument, NodeRef, RouteTable};

/// The virtual node the demo runs as the gateway.
pub const GATEWAY_NODE: &str = "colorgateway";
/// The name prefix of the colorteller nodes; what follows it is the color they answer.
pub const TELLER_PREFIX: &str = "colorteller-";
/// The path the demo's load asks the gateway for, and the gateway asks the colorteller for.
pub const REQUEST_PATH: &str = "/";

/// Why a mesh document does not describe an application the demo can run.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LayoutError {
    /// No gateway node.
    #[error("the mesh document has no virtual node \"{GATEWAY_NODE}\" (the demo's gateway)")]
    NoGateway,
    /// The gateway calls nothing.
    #[error("virtual node \"{GATEWAY_NODE}\" has no backends: it must call a virtual service")]
    NoBackend,
    /// The backend is not served by any node.
    #[error("virtual service \"{service}\" (the gateway's backend) is served by no virtual node")]
    NoTellers {
        /// The service.
        service: String,
    },
    /// The compiled table does not route the gateway's request.
    #[error("GET {REQUEST_PATH} to \"{service}\" from \"{GATEWAY_NODE}\" matches no route: {why}")]
    NoRoute {
        /// The service.
        service: String,
        /// What the router said.
        why: String,
    },
}

/// One node the backend service can send a request to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Teller {
    /// Virtual node name (`colorteller-white`).
    pub node: String,
    /// The color its app answers (`white`).
    pub color: String,
}

/// The example application found in a mesh document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Application {
    /// The mesh name.
    pub mesh: String,
    /// The virtual service the gateway calls (`colorteller.colorapp.local`).
    pub backend: String,
    /// Every node a route of that service can pick, in document order.
    pub tellers: Vec<Teller>,
}

/// The weighted targets a request takes, as the gateway's agent computes them.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Weights {
    /// The route that matches.
    pub route: String,
    /// (color, weight) per target, in route order.
    pub targets: Vec<(String, u32)>,
}

impl Weights {
    /// Sum of the weights.
    pub fn total(&self) -> u32 {
        self.targets.iter().map(|(_, w)| *w).sum()
    }

    /// The weight of `color` (0 when it is not a target).
    pub fn of(&self, color: &str) -> u32 {
        self.targets
            .iter()
            .filter(|(c, _)| c == color)
            .map(|(_, w)| *w)
            .sum()
    }

    /// The share (0..=1) of `color`.
    pub fn share(&self, color: &str) -> f64 {
        match self.total() {
            0 => 0.0,
            total => f64::from(self.of(color)) / f64::from(total),
        }
    }
}

/// Where the demo runs one task: its agent's loopback address and its app's port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    /// The task's virtual node.
    pub node: String,
    /// The address its agent listens on (the node's "DNS" answer in the runtime document).
    pub agent_ip: Ipv4Addr,
    /// The app's port on 127.0.0.1, which is also the agent's ingress port on `agent_ip`.
    pub app_port: u16,
}

/// The color a colorteller node answers: its name without the `colorteller-` prefix.
pub fn color_of(node: &str) -> String {
    node.strip_prefix(TELLER_PREFIX).unwrap_or(node).to_owned()
}

/// The node reference of `node` in the mesh of `doc`.
pub fn node_ref(doc: &MeshDocument, node: &str) -> String {
    format!("mesh/{}/virtualNode/{node}", doc.mesh_name())
}

impl Application {
    /// Finds the application: the gateway's first backend and every node its routes can pick.
    pub fn from_document(doc: &MeshDocument) -> Result<Application, LayoutError> {
        let gateway = doc
            .virtual_node(GATEWAY_NODE)
            .ok_or(LayoutError::NoGateway)?;
        let backend = gateway
            .spec
            .backends
            .iter()
            .map(|Backend::VirtualService(b)| b.virtual_service_name.clone())
            .next()
            .ok_or(LayoutError::NoBackend)?;
        let mut nodes: Vec<String> = Vec::new();
        let mut add = |n: &str| {
            if !nodes.iter().any(|m| m == n) {
                nodes.push(n.to_owned());
            }
        };
        match doc
            .virtual_service(&backend)
            .and_then(|s| s.spec.provider.as_ref())
        {
            Some(VirtualServiceProvider::VirtualNode(p)) => add(&p.virtual_node_name),
            Some(VirtualServiceProvider::VirtualRouter(p)) => {
                for route in doc
                    .routes()
                    .iter()
                    .filter(|r| r.virtual_router_name == p.virtual_router_name)
                {
                    let spec = &route.spec;
                    let actions = [
                        spec.http_route.as_ref().map(|h| &h.action),
                        spec.http2_route.as_ref().map(|h| &h.action),
                        spec.grpc_route.as_ref().map(|g| &g.action),
                        spec.tcp_route.as_ref().map(|t| &t.action),
                    ];
                    for action in actions.into_iter().flatten() {
                        for t in &action.weighted_targets {
                            add(&t.virtual_node);
                        }
                    }
                }
            }
            None => {}
        }
        let tellers: Vec<Teller> = nodes
            .into_iter()
            .filter(|n| doc.virtual_node(n).is_some())
            .map(|node| Teller {
                color: color_of(&node),
                node,
            })
            .collect();
        if tellers.is_empty() {
            return Err(LayoutError::NoTellers { service: backend });
        }
        Ok(Application {
            mesh: doc.mesh_name().to_owned(),
            backend,
            tellers,
        })
    }

    /// The nodes the demo runs a task for: the gateway, then the tellers.
    pub fn nodes(&self) -> Vec<String> {
        std::iter::once(GATEWAY_NODE.to_owned())
            .chain(self.tellers.iter().map(|t| t.node.clone()))
            .collect()
    }
}

/// The weights the gateway's request takes under `table` (the gateway's compiled table).
pub fn weights_in(table: &RouteTable, backend: &str) -> Result<Weights, LayoutError> {
    let headers = http::HeaderMap::new();
    let request = HttpRequestView {
        authority: backend,
        dest_port: None,
        method: &http::Method::GET,
        scheme: "http",
        path_and_query: REQUEST_PATH,
        headers: &headers,
    };
    match table.route_http(&request) {
        HttpRouting::Matched(m) => Ok(Weights {
            route: m.route.name.to_string(),
            targets: m
                .route
                .targets()
                .iter()
                .map(|t| (color_of(&table.targets()[t.node].name), t.weight))
                .collect(),
        }),
        other => Err(LayoutError::NoRoute {
            service: backend.to_owned(),
            why: format!("{other:?}"),
        }),
    }
}

/// The weights the gateway's request takes under `doc`.
pub fn weights(doc: &MeshDocument, backend: &str) -> Result<Weights, LayoutError> {
    let no_route = |why: String| LayoutError::NoRoute {
        service: backend.to_owned(),
        why,
    };
    let node = NodeRef::parse(&node_ref(doc, GATEWAY_NODE)).map_err(|e| no_route(e.to_string()))?;
    let table = RouteTable::compile(doc, &node).map_err(|e| no_route(e.to_string()))?;
    weights_in(&table, backend)
}

/// The document the demo's agents read: `doc` with each placed node's service discovery
/// pointing at its agent's loopback address, its first listener on its app's port (and
/// weighted targets naming the old port moved with it), and its access log in `log_dir`.
pub fn runtime_document(doc: &MeshDocument, placements: &[Placement], log_dir: &Path) -> Value {
    let mut value = doc.to_json_value();
    let mut moved: Vec<(String, u64, u16)> = Vec::new();
    if let Some(nodes) = value.get_mut("virtualNodes").and_then(Value::as_array_mut) {
        for node in nodes {
            let Some(name) = node
                .get("virtualNodeName")
                .and_then(Value::as_str)
                .map(str::to_owned)
            else {
                continue;
            };
            let Some(place) = placements.iter().find(|p| p.node == name) else {
                continue;
            };
            let Some(spec) = node.get_mut("spec").and_then(Value::as_object_mut) else {
                continue;
            };
            if let Some(port) = spec
                .get_mut("listeners")
                .and_then(Value::as_array_mut)
                .and_then(|l| l.first_mut())
                .and_then(|l| l.get_mut("portMapping"))
                .and_then(|p| p.get_mut("port"))
            {
                if let Some(old) = port.as_u64() {
                    moved.push((name.clone(), old, place.app_port));
                }
                *port = json!(place.app_port);
            }
            spec.insert(
                "serviceDiscovery".into(),
                json!({"dns": {"hostname": place.agent_ip.to_string()}}),
            );
            let log = log_dir.join(format!("{name}.access.log"));
            spec.insert(
                "logging".into(),
                json!({"accessLog": {"file": {"path": log.to_string_lossy()}}}),
            );
        }
    }
    if let Some(routes) = value.get_mut("routes").and_then(Value::as_array_mut) {
        for route in routes {
            let Some(spec) = route.get_mut("spec").and_then(Value::as_object_mut) else {
                continue;
            };
            for (_, kind) in spec.iter_mut() {
                let Some(targets) = kind
                    .pointer_mut("/action/weightedTargets")
                    .and_then(Value::as_array_mut)
                else {
                    continue;
                };
                for t in targets {
                    let node = t.get("virtualNode").and_then(Value::as_str).unwrap_or("");
                    let port = t.get("port").and_then(Value::as_u64);
                    if let Some((_, _, new)) = moved
                        .iter()
                        .find(|(n, old, _)| n == node && Some(*old) == port)
                    {
                        t["port"] = json!(new);
                    }
                }
            }
        }
    }
    value
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = r#"
meshName: colorapp
virtualServices:
  - virtualServiceName: colorteller.colorapp.local
    spec: {provider: {virtualRouter: {virtualRouterName: colorteller-vr}}}
virtualRouters:
  - virtualRouterName: colorteller-vr
    spec: {listeners: [{portMapping: {port: 9080, protocol: http}}]}
routes:
  - virtualRouterName: colorteller-vr
    routeName: canary
    spec:
      priority: 10
      httpRoute:
        match: {prefix: /}
        action: {weightedTargets: [{virtualNode: colorteller-white, weight: 3, port: 9080},
                                   {virtualNode: colorteller-blue, weight: 1}]}
virtualNodes:
  - virtualNodeName: colorgateway
    spec:
      listeners: [{portMapping: {port: 9080, protocol: http}}]
      serviceDiscovery: {dns: {hostname: colorgateway.colorapp.local}}
      backends: [{virtualService: {virtualServiceName: colorteller.colorapp.local}}]
  - virtualNodeName: colorteller-white
    spec:
      listeners: [{portMapping: {port: 9080, protocol: http}}]
      serviceDiscovery: {dns: {hostname: colorteller.colorapp.local}}
  - virtualNodeName: colorteller-blue
    spec:
      listeners: [{portMapping: {port: 9080, protocol: http}}]
      serviceDiscovery: {dns: {hostname: colorteller-blue.colorapp.local}}
"#;

    fn doc() -> MeshDocument {
        MeshDocument::from_slice(DOC.as_bytes()).expect("valid")
    }

    #[test]
    fn finds_the_gateway_backend_and_tellers() {
        let app = Application::from_document(&doc()).expect("app");
        assert_eq!(app.mesh, "colorapp");
        assert_eq!(app.backend, "colorteller.colorapp.local");
        let colors: Vec<_> = app.tellers.iter().map(|t| t.color.as_str()).collect();
        assert_eq!(colors, ["white", "blue"]);
        assert_eq!(
            app.nodes(),
            ["colorgateway", "colorteller-white", "colorteller-blue"]
        );
    }

    #[test]
    fn weights_come_from_the_compiled_route() {
        let w = weights(&doc(), "colorteller.colorapp.local").expect("weights");
        assert_eq!(w.route, "canary");
        assert_eq!(w.targets, [("white".into(), 3), ("blue".into(), 1)]);
        assert_eq!(w.total(), 4);
        assert!((w.share("white") - 0.75).abs() < 1e-9);
        assert_eq!(w.of("black"), 0);
    }

    #[test]
    fn a_document_without_gateway_or_backend_is_refused() {
        let no_gw = DOC.replace("colorgateway", "other");
        let d = MeshDocument::from_slice(no_gw.as_bytes()).expect("valid");
        assert_eq!(Application::from_document(&d), Err(LayoutError::NoGateway));
        let no_route = weights(&doc(), "nothing.local").unwrap_err();
        assert!(
            matches!(no_route, LayoutError::NoRoute { .. }),
            "{no_route}"
        );
    }

    #[test]
    fn the_runtime_document_places_tasks_on_loopback() {
        let places = [
            Placement {
                node: "colorteller-white".into(),
                agent_ip: Ipv4Addr::new(127, 0, 77, 2),
                app_port: 40001,
            },
            Placement {
                node: "colorteller-blue".into(),
                agent_ip: Ipv4Addr::new(127, 0, 77, 3),
                app_port: 40002,
            },
        ];
        let v = runtime_document(&doc(), &places, Path::new("/tmp/demo"));
        let white = &v["virtualNodes"][1]["spec"];
        assert_eq!(white["serviceDiscovery"]["dns"]["hostname"], "127.0.77.2");
        assert_eq!(white["listeners"][0]["portMapping"]["port"], 40001);
        assert_eq!(
            white["logging"]["accessLog"]["file"]["path"],
            "/tmp/demo/colorteller-white.access.log"
        );
        let targets = &v["routes"][0]["spec"]["httpRoute"]["action"]["weightedTargets"];
        assert_eq!(targets[0]["port"], 40001);
        assert!(targets[1].get("port").is_none());
        // The gateway was not placed: unchanged.
        assert_eq!(
            v["virtualNodes"][0]["spec"]["serviceDiscovery"]["dns"]["hostname"],
            "colorgateway.colorapp.local"
        );
        let again = MeshDocument::from_value(v).expect("still valid");
        assert_eq!(
            weights(&again, "colorteller.colorapp.local")
                .expect("w")
                .targets,
            [("white".into(), 3), ("blue".into(), 1)]
        );
    }
}
