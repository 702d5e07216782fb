//! The mesh as a picture: [`MeshGraph`] is a plain graph built from a [`MeshDocument`] —
//! virtual services, virtual routers, routes (with their match, retries and timeout), virtual
//! nodes (listeners, service discovery) — and the edges between them: a service's provider,
//! a router's routes, a route's weighted targets (weight and share), a node's backends.
//! Rendering is text only ([`MeshGraph::to_dot`] for Graphviz, [`MeshGraph::to_mermaid`]);
//! turning DOT into SVG is the caller's business (the `taskmesh mesh graph` command runs
//! Graphviz). The agent overlays live numbers on edges with [`MeshGraph::set_edge_stats`].
//!
//! Node ids are generated (`vs0`, `vr0`, `rt0`, `vn0`), so no user text ever lands in an id;
//! every label is escaped for its target language by [`dot`] and [`mermaid`].

mod describe;
mod dot;
mod mermaid;

use crate::MeshDocument;
use crate::model::{RouteSpec, VirtualServiceProvider};

/// What a graph node stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NodeKind {
    /// A virtual service.
    VirtualService,
    /// A virtual router.
    VirtualRouter,
    /// A route of a virtual router.
    Route,
    /// A virtual node.
    VirtualNode,
    /// A name referenced by the document but not defined in it (e.g. a backend's service).
    Missing,
}

impl NodeKind {
    /// Human title, as shown on the picture.
    pub fn title(self) -> &'static str {
        match self {
            NodeKind::VirtualService => "virtual service",
            NodeKind::VirtualRouter => "virtual router",
            NodeKind::Route => "route",
            NodeKind::VirtualNode => "virtual node",
            NodeKind::Missing => "not in the document",
        }
    }
}

/// What a graph edge stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EdgeKind {
    /// Virtual service → its provider (router or node).
    Provider,
    /// Virtual router → one of its routes.
    Route,
    /// Route → a weighted target node.
    Target,
    /// Virtual node → a backend virtual service.
    Backend,
}

/// One node of the picture.
#[derive(Debug, Clone, PartialEq)]
pub struct GraphNode {
    /// Generated id, unique in the graph, safe in any output language.
    pub id: String,
    /// Kind of resource.
    pub kind: NodeKind,
    /// The resource's name (a route's is `router/route`).
    pub name: String,
    /// Detail lines (listeners, match, discovery, …), unescaped.
    pub details: Vec<String>,
}

/// Live numbers for one edge (the agent's `/graph`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EdgeStats {
    /// Requests per second over the sampling window.
    pub requests_per_second: f64,
    /// Share of responses that were 5xx or failed to connect, 0–1.
    pub error_ratio: f64,
}

/// One edge of the picture.
#[derive(Debug, Clone, PartialEq)]
pub struct GraphEdge {
    /// Source node id.
    pub from: String,
    /// Destination node id.
    pub to: String,
    /// Kind of relation.
    pub kind: EdgeKind,
    /// Label lines, unescaped (priority, weight and share, …).
    pub label: Vec<String>,
    /// Live numbers, when an overlay set them.
    pub stats: Option<EdgeStats>,
}

/// The picture of one mesh.
#[derive(Debug, Clone, PartialEq)]
pub struct MeshGraph {
    mesh_name: String,
    egress_filter: &'static str,
    nodes: Vec<GraphNode>,
    edges: Vec<GraphEdge>,
}

impl MeshGraph {
    /// Builds the graph of a validated document: every resource once, in document order.
    pub fn from_document(doc: &MeshDocument) -> MeshGraph {
        let mut g = MeshGraph {
            mesh_name: doc.mesh_name().to_string(),
            egress_filter: match doc.spec().egress_filter_type() {
                crate::model::EgressFilterType::AllowAll => "ALLOW_ALL",
                crate::model::EgressFilterType::DropAll => "DROP_ALL",
            },
            nodes: Vec::new(),
            edges: Vec::new(),
        };
        for (i, vs) in doc.virtual_services().iter().enumerate() {
            let mut details = Vec::new();
            if vs.spec.provider.is_none() {
                details.push("no provider".to_string());
            }
            g.nodes.push(GraphNode {
                id: format!("vs{i}"),
                kind: NodeKind::VirtualService,
                name: vs.virtual_service_name.clone(),
                details,
            });
        }
        for (i, vr) in doc.virtual_routers().iter().enumerate() {
            g.nodes.push(GraphNode {
                id: format!("vr{i}"),
                kind: NodeKind::VirtualRouter,
                name: vr.virtual_router_name.clone(),
                details: vec![describe::router_listeners(&vr.spec.listeners)],
            });
        }
        for (i, vn) in doc.virtual_nodes().iter().enumerate() {
            g.nodes.push(GraphNode {
                id: format!("vn{i}"),
                kind: NodeKind::VirtualNode,
                name: vn.virtual_node_name.clone(),
                details: describe::node_details(&vn.spec),
            });
        }
        for (i, vs) in doc.virtual_services().iter().enumerate() {
            let to = match &vs.spec.provider {
                Some(VirtualServiceProvider::VirtualRouter(p)) => {
                    g.find_or_missing(NodeKind::VirtualRouter, &p.virtual_router_name)
                }
                Some(VirtualServiceProvider::VirtualNode(p)) => {
                    g.find_or_missing(NodeKind::VirtualNode, &p.virtual_node_name)
                }
                None => continue,
            };
            g.edges.push(GraphEdge {
                from: format!("vs{i}"),
                to,
                kind: EdgeKind::Provider,
                label: vec!["provider".to_string()],
                stats: None,
            });
        }
        for (i, route) in doc.routes().iter().enumerate() {
            let id = format!("rt{i}");
            let (kind, details, targets) = describe::route(&route.spec);
            g.nodes.push(GraphNode {
                id: id.clone(),
                kind: NodeKind::Route,
                name: format!("{}/{}", route.virtual_router_name, route.route_name),
                details: std::iter::once(kind.to_string()).chain(details).collect(),
            });
            let router = g.find_or_missing(NodeKind::VirtualRouter, &route.virtual_router_name);
            g.edges.push(GraphEdge {
                from: router,
                to: id.clone(),
                kind: EdgeKind::Route,
                label: vec![describe::priority(&route.spec)],
                stats: None,
            });
            let total: u64 = targets.iter().map(|t| u64::from(t.weight)).sum();
            for t in targets {
                let to = g.find_or_missing(NodeKind::VirtualNode, &t.virtual_node);
                let mut label = vec![describe::weight(t.weight, total)];
                if let Some(port) = t.port {
                    label.push(format!("port {port}"));
                }
                g.edges.push(GraphEdge {
                    from: id.clone(),
                    to,
                    kind: EdgeKind::Target,
                    label,
                    stats: None,
                });
            }
        }
        for (i, vn) in doc.virtual_nodes().iter().enumerate() {
            for b in &vn.spec.backends {
                let to = g.find_or_missing(NodeKind::VirtualService, b.virtual_service_name());
                g.edges.push(GraphEdge {
                    from: format!("vn{i}"),
                    to,
                    kind: EdgeKind::Backend,
                    label: vec!["backend".to_string()],
                    stats: None,
                });
            }
        }
        g
    }

    /// The mesh's name.
    pub fn mesh_name(&self) -> &str {
        &self.mesh_name
    }

    /// Nodes, services first, then routers, nodes, routes and missing names.
    pub fn nodes(&self) -> &[GraphNode] {
        &self.nodes
    }

    /// Edges.
    pub fn edges(&self) -> &[GraphEdge] {
        &self.edges
    }

    /// The node of a kind and name.
    pub fn node(&self, kind: NodeKind, name: &str) -> Option<&GraphNode> {
        self.nodes.iter().find(|n| n.kind == kind && n.name == name)
    }

    /// Sets live numbers on the edge from `(from_kind, from_name)` to `(to_kind, to_name)`;
    /// false when there is no such edge. A route is named `router/route`.
    pub fn set_edge_stats(
        &mut self,
        from: (NodeKind, &str),
        to: (NodeKind, &str),
        stats: EdgeStats,
    ) -> bool {
        let (Some(f), Some(t)) = (
            self.node(from.0, from.1).map(|n| n.id.clone()),
            self.node(to.0, to.1).map(|n| n.id.clone()),
        ) else {
            return false;
        };
        match self.edges.iter_mut().find(|e| e.from == f && e.to == t) {
            Some(e) => {
                e.stats = Some(stats);
                true
            }
            None => false,
        }
    }

    /// Graphviz DOT text (`dot -Tsvg` renders it).
    pub fn to_dot(&self) -> String {
        dot::render(self)
    }

    /// Mermaid flowchart text (GitHub and most wikis render it).
    pub fn to_mermaid(&self) -> String {
        mermaid::render(self)
    }

    fn find_or_missing(&mut self, kind: NodeKind, name: &str) -> String {
        if let Some(n) = self.node(kind, name) {
            return n.id.clone();
        }
        let wanted = kind.title();
        if let Some(n) = self
            .nodes
            .iter()
            .find(|n| n.kind == NodeKind::Missing && n.name == name && n.details[0] == wanted)
        {
            return n.id.clone();
        }
        let id = format!(
            "missing{}",
            self.nodes
                .iter()
                .filter(|n| n.kind == NodeKind::Missing)
                .count()
        );
        self.nodes.push(GraphNode {
            id: id.clone(),
            kind: NodeKind::Missing,
            name: name.to_string(),
            details: vec![wanted.to_string()],
        });
        id
    }
}

/// Which `RouteSpec` member is set, in App Mesh's spelling.
fn route_kind(spec: &RouteSpec) -> &'static str {
    if spec.http_route.is_some() {
        "httpRoute"
    } else if spec.http2_route.is_some() {
        "http2Route"
    } else if spec.grpc_route.is_some() {
        "grpcRoute"
    } else if spec.tcp_route.is_some() {
        "tcpRoute"
    } else {
        "no route kind"
    }
}

/// Fixed ordering of edge stats text (shared by both renderers).
fn stats_line(s: &EdgeStats) -> String {
    format!(
        "{:.2} req/s, {:.1}% errors",
        s.requests_per_second,
        s.error_ratio * 100.0
    )
}

#[cfg(test)]
mod tests;
