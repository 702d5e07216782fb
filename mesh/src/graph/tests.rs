//! Unit tests of the graph model and of both escapers.

use super::*;

const COLORAPP: &str = include_str!("../../../templates/colorapp/mesh.yaml");

fn colorapp() -> MeshGraph {
    MeshGraph::from_document(&MeshDocument::from_slice(COLORAPP.as_bytes()).unwrap())
}

fn edge<'a>(g: &'a MeshGraph, from: (NodeKind, &str), to: (NodeKind, &str)) -> &'a GraphEdge {
    let f = &g.node(from.0, from.1).unwrap().id;
    let t = &g.node(to.0, to.1).unwrap().id;
    g.edges()
        .iter()
        .find(|e| &e.from == f && &e.to == t)
        .unwrap_or_else(|| panic!("no edge {from:?} -> {to:?}"))
}

#[test]
fn colorapp_has_every_resource_and_relation() {
    let g = colorapp();
    assert_eq!(g.mesh_name(), "colorapp");
    let count = |k| g.nodes().iter().filter(|n| n.kind == k).count();
    assert_eq!(count(NodeKind::VirtualService), 2);
    assert_eq!(count(NodeKind::VirtualRouter), 1);
    assert_eq!(count(NodeKind::Route), 1);
    assert_eq!(count(NodeKind::VirtualNode), 4);
    assert_eq!(count(NodeKind::Missing), 0);
    // 2 providers + 1 router->route + 3 targets + 1 backend
    assert_eq!(g.edges().len(), 7);
    let route = "colorteller-vr/colorteller-canary";
    let e = edge(
        &g,
        (NodeKind::Route, route),
        (NodeKind::VirtualNode, "colorteller-white"),
    );
    assert_eq!(e.kind, EdgeKind::Target);
    assert_eq!(e.label, vec!["weight 8 (80%)".to_string()]);
    let e = edge(
        &g,
        (NodeKind::Route, route),
        (NodeKind::VirtualNode, "colorteller-black"),
    );
    assert_eq!(e.label, vec!["weight 1 (10%)".to_string()]);
    let e = edge(
        &g,
        (NodeKind::VirtualNode, "colorgateway"),
        (NodeKind::VirtualService, "colorteller.colorapp.local"),
    );
    assert_eq!(e.kind, EdgeKind::Backend);
    let r = g.node(NodeKind::Route, route).unwrap();
    assert_eq!(
        r.details,
        vec![
            "httpRoute",
            "prefix /",
            "retries 2 x 2000ms on gateway-error, connection-error",
            "timeout 15s"
        ]
    );
    let e = edge(
        &g,
        (NodeKind::VirtualRouter, "colorteller-vr"),
        (NodeKind::Route, route),
    );
    assert_eq!(e.label, vec!["priority 10".to_string()]);
}

#[test]
fn shares_that_are_not_whole_show_one_decimal() {
    assert_eq!(describe::weight(1, 3), "weight 1 (33.3%)");
    assert_eq!(describe::weight(2, 3), "weight 2 (66.7%)");
    assert_eq!(describe::weight(0, 0), "weight 0 (0%)");
}

#[test]
fn edge_stats_land_on_the_named_edge_only() {
    let mut g = colorapp();
    let stats = EdgeStats {
        requests_per_second: 12.5,
        error_ratio: 0.25,
    };
    let route = (NodeKind::Route, "colorteller-vr/colorteller-canary");
    assert!(g.set_edge_stats(route, (NodeKind::VirtualNode, "colorteller-blue"), stats));
    assert!(!g.set_edge_stats(route, (NodeKind::VirtualNode, "nope"), stats));
    assert!(!g.set_edge_stats(
        (NodeKind::VirtualNode, "colorteller-blue"),
        (NodeKind::VirtualNode, "colorteller-white"),
        stats
    ));
    assert_eq!(g.edges().iter().filter(|e| e.stats.is_some()).count(), 1);
    let dot = g.to_dot();
    assert!(dot.contains("12.50 req/s, 25.0% errors"), "{dot}");
    assert!(dot.contains("color=\"#b91c1c\""), "{dot}");
    assert!(g.to_mermaid().contains("12.50 req/s, 25.0% errors"));
}

#[test]
fn dot_escaping_leaves_no_markup_or_quote() {
    let s = dot::escape_html("a<b>&\"c'\nd\\n");
    assert_eq!(s, "a&lt;b&gt;&amp;&quot;c&#39; d\\\\n");
}

#[test]
fn mermaid_escaping_uses_entity_codes() {
    let s = mermaid::escape("x\"#&<>|`[]{}();\ny");
    assert_eq!(
        s,
        "x#34;#35;#38;#60;#62;#124;#96;#91;#93;#123;#125;#40;#41;#59; y"
    );
}
