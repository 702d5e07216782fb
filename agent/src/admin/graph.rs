//! `GET /graph` on the admin port: the picture of the live mesh document
//! ([`taskmesh_mesh::MeshGraph`]) with this agent's egress numbers on its edges — requests per
//! second (averaged since the agent started) and the share of 5xx or failed connections, on
//! each route → target edge and on this node → backend service edges. `?format=mermaid` for
//! Mermaid, DOT otherwise (render with `dot -Tsvg`).

use std::collections::HashMap;

use taskmesh_mesh::graph::{EdgeStats, NodeKind};
use taskmesh_mesh::model::VirtualServiceProvider;
use taskmesh_mesh::{MeshDocument, MeshGraph};

use crate::agent::Shared;

/// The picture's text and its content type, or why there is none (no document yet).
pub fn render(shared: &Shared, query: &str) -> Result<(&'static str, String), String> {
    let cfg = shared.config.load();
    let Some(cfg) = cfg.as_ref() else {
        return Err("no mesh document loaded yet\n".to_string());
    };
    let doc = MeshDocument::from_value(cfg.document.clone())
        .map_err(|e| format!("the live document does not rebuild: {e}\n"))?;
    let mut graph = MeshGraph::from_document(&doc);
    let secs = shared.started.elapsed().as_secs_f64().max(1e-3);
    let stats = |requests: u64, errors: u64| EdgeStats {
        requests_per_second: requests as f64 / secs,
        error_ratio: if requests == 0 {
            0.0
        } else {
            (errors as f64 / requests as f64).min(1.0)
        },
    };
    let mut per_service: HashMap<String, (u64, u64)> = HashMap::new();
    for t in shared.metrics.egress_totals() {
        let e = per_service.entry(t.virtual_service.clone()).or_default();
        e.0 += t.requests;
        e.1 += t.errors;
        if let Some(VirtualServiceProvider::VirtualRouter(p)) = doc
            .virtual_service(&t.virtual_service)
            .and_then(|s| s.spec.provider.as_ref())
        {
            let route = format!("{}/{}", p.virtual_router_name, t.route);
            graph.set_edge_stats(
                (NodeKind::Route, &route),
                (NodeKind::VirtualNode, &t.target_node),
                stats(t.requests, t.errors),
            );
        }
    }
    for (service, (requests, errors)) in per_service {
        graph.set_edge_stats(
            (NodeKind::VirtualNode, &shared.node.node),
            (NodeKind::VirtualService, &service),
            stats(requests, errors),
        );
    }
    Ok(if query.split('&').any(|p| p == "format=mermaid") {
        ("text/plain; charset=utf-8", graph.to_mermaid())
    } else {
        ("text/vnd.graphviz; charset=utf-8", graph.to_dot())
    })
}
