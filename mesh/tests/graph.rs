//! The mesh picture against real renderers' rules: the DOT text of the ColorApp document and of
//! a document with every route kind (and hostile characters everywhere) is rendered by Graphviz
//! (`dot -Tsvg`, installed by scripts/setup-test-env.sh) and the SVG is parsed: every node, every
//! edge and every label is there, with the user text exactly as written. The Mermaid text is
//! checked structurally: one statement per line, every id defined once, every edge between
//! defined ids, quotes balanced, no raw character Mermaid would read as syntax inside a label.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::process::{Command, Stdio};

use taskmesh_mesh::graph::{EdgeKind, NodeKind};
use taskmesh_mesh::{MeshDocument, MeshGraph};

const COLORAPP: &str = include_str!("../../templates/colorapp/mesh.yaml");
const EVERY_KIND: &str = include_str!("fixtures/graph-every-route-kind.yaml");

fn graph(src: &str) -> MeshGraph {
    MeshGraph::from_document(&MeshDocument::from_slice(src.as_bytes()).unwrap())
}

/// Runs Graphviz; fails (never skips) when it is missing.
fn dot_svg(dot: &str) -> String {
    let mut child = Command::new("dot")
        .arg("-Tsvg")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run Graphviz `dot` ({e}): install the graphviz package \
                 (scripts/setup-test-env.sh does)"
            )
        });
    child
        .stdin
        .take()
        .unwrap()
        .write_all(dot.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "dot -Tsvg failed: {stderr}\n--- input ---\n{dot}"
    );
    assert!(
        !stderr.contains("Warning") && !stderr.contains("Error"),
        "Graphviz complained: {stderr}\n--- input ---\n{dot}"
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The SVG's nodes (title -> all text) and edges (title -> all text), as Graphviz writes them:
/// `<g class="node"><title>ID</title>…<text>…</text></g>`.
struct Svg {
    nodes: BTreeMap<String, Vec<String>>,
    edges: BTreeMap<String, Vec<String>>,
}

/// Graphviz's SVG carries a DOCTYPE; allow it.
fn parse_xml(svg: &str) -> roxmltree::Document<'_> {
    let opts = roxmltree::ParsingOptions {
        allow_dtd: true,
        ..Default::default()
    };
    roxmltree::Document::parse_with_options(svg, opts)
        .unwrap_or_else(|e| panic!("SVG is not XML: {e}"))
}

fn parse_svg(svg: &str) -> Svg {
    let doc = parse_xml(svg);
    let mut nodes = BTreeMap::new();
    let mut edges = BTreeMap::new();
    for g in doc.descendants().filter(|n| n.has_tag_name("g")) {
        let class = g.attribute("class").unwrap_or("");
        if class != "node" && class != "edge" {
            continue;
        }
        let title = g
            .children()
            .find(|c| c.has_tag_name("title"))
            .and_then(|t| t.text())
            .unwrap_or_default()
            .to_string();
        let texts: Vec<String> = g
            .descendants()
            .filter(|c| c.has_tag_name("text"))
            .map(|t| {
                t.descendants()
                    .filter(|x| x.is_text())
                    .filter_map(|x| x.text())
                    .collect::<String>()
            })
            .collect();
        if class == "node" {
            nodes.insert(title, texts);
        } else {
            edges.insert(title, texts);
        }
    }
    Svg { nodes, edges }
}

fn check_svg_matches_graph(g: &MeshGraph) -> Svg {
    let svg = parse_svg(&dot_svg(&g.to_dot()));
    assert_eq!(svg.nodes.len(), g.nodes().len(), "nodes: {:?}", svg.nodes);
    assert_eq!(svg.edges.len(), g.edges().len(), "edges: {:?}", svg.edges);
    for n in g.nodes() {
        let texts = svg
            .nodes
            .get(&n.id)
            .unwrap_or_else(|| panic!("node {} ({}) not in the SVG", n.id, n.name));
        assert!(texts.contains(&n.name), "{}: {texts:?}", n.name);
        assert!(texts.contains(&n.kind.title().to_string()), "{texts:?}");
        for d in &n.details {
            assert!(
                texts.contains(d),
                "{}: detail {d:?} not in {texts:?}",
                n.name
            );
        }
    }
    for e in g.edges() {
        let texts = svg
            .edges
            .get(&format!("{}->{}", e.from, e.to))
            .unwrap_or_else(|| panic!("edge {}->{} not in the SVG", e.from, e.to));
        for l in &e.label {
            assert!(texts.contains(l), "edge label {l:?} not in {texts:?}");
        }
    }
    svg
}

#[test]
fn colorapp_renders_through_graphviz_with_every_label() {
    let g = graph(COLORAPP);
    let svg = check_svg_matches_graph(&g);
    let route = &g
        .node(NodeKind::Route, "colorteller-vr/colorteller-canary")
        .unwrap()
        .id;
    let white = &g
        .node(NodeKind::VirtualNode, "colorteller-white")
        .unwrap()
        .id;
    assert_eq!(
        svg.edges[&format!("{route}->{white}")],
        vec!["weight 8 (80%)".to_string()]
    );
    let gw = &g.node(NodeKind::VirtualNode, "colorgateway").unwrap().id;
    assert!(svg.nodes[gw].contains(&"dns colorgateway.colorapp.local".to_string()));
}

#[test]
fn every_route_kind_and_hostile_text_render_through_graphviz() {
    let g = graph(EVERY_KIND);
    check_svg_matches_graph(&g);
    let kinds: BTreeSet<String> = g
        .nodes()
        .iter()
        .filter(|n| n.kind == NodeKind::Route)
        .map(|n| n.details[0].clone())
        .collect();
    assert_eq!(
        kinds,
        ["grpcRoute", "http2Route", "httpRoute", "tcpRoute"]
            .map(String::from)
            .into()
    );
    let canary = g
        .node(NodeKind::Route, "api-router/canary \"beta\" <users>")
        .unwrap();
    for want in [
        "prefix /users",
        "method POST",
        "scheme https",
        "header x-canary = yes & \"no\" | <maybe>",
        "header x-version not in [1, 3)",
        "query debug = a#b{c}[d]",
        "retries 3 x 250ms on server-error, gateway-error",
        "timeout 5s",
    ] {
        assert!(
            canary.details.iter().any(|d| d == want),
            "{want}: {:?}",
            canary.details
        );
    }
    let regex = g.node(NodeKind::Route, "api-router/regex").unwrap();
    assert!(
        regex
            .details
            .contains(&"path ~ ^/item/[0-9]+\\.json\\\\n\"x\"$".to_string()),
        "{:?}",
        regex.details
    );
    let grpc = g.node(NodeKind::Route, "grpc-router/orders").unwrap();
    assert!(
        grpc.details
            .contains(&"service shop.Orders method Place".to_string())
    );
    assert!(
        grpc.details
            .contains(&"metadata tenant prefix acme".to_string())
    );
    let tcp = g.node(NodeKind::Route, "db-router/tcp").unwrap();
    assert_eq!(tcp.details, vec!["tcpRoute", "any connection", "idle 600s"]);
    let v2 = g.node(NodeKind::VirtualNode, "api-v2").unwrap();
    assert!(
        v2.details
            .contains(&"cloud map api.shop.local version=v2".to_string())
    );
    let shares: Vec<&Vec<String>> = g
        .edges()
        .iter()
        .filter(|e| e.kind == EdgeKind::Target && e.from == canary.id)
        .map(|e| &e.label)
        .collect();
    assert_eq!(
        shares,
        vec![
            &vec!["weight 2 (66.7%)".to_string()],
            &vec!["weight 1 (33.3%)".to_string()]
        ]
    );
    // The mesh name with markup and quotes stays text in the picture's title.
    let dot = g.to_dot();
    let svg = dot_svg(&dot);
    let doc = parse_xml(&svg);
    let all_text: String = doc
        .descendants()
        .filter(|n| n.has_tag_name("text"))
        .flat_map(|t| {
            t.descendants()
                .filter(|x| x.is_text())
                .filter_map(|x| x.text())
        })
        .collect::<Vec<_>>()
        .join("\n");
    assert!(all_text.contains("shop<&\"'>|#"), "{all_text}");
}

/// Structural check of Mermaid flowchart text as [`MeshGraph::to_mermaid`] writes it.
fn check_mermaid(g: &MeshGraph) {
    let text = g.to_mermaid();
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("---"));
    let title = lines.next().unwrap();
    assert!(
        title.starts_with("title: '") && title.ends_with('\''),
        "{title}"
    );
    assert_eq!(lines.next(), Some("---"));
    assert_eq!(lines.next(), Some("flowchart LR"));
    let mut defined = BTreeMap::new();
    let mut edges = Vec::new();
    let id_re = regex::Regex::new(r"^  ([a-z]+[0-9]+)(.*):::(vs|vr|rt|vn|missing)$").unwrap();
    let edge_re =
        regex::Regex::new(r#"^  ([a-z]+[0-9]+) (-->|---|-\.->)\|"([^"]*)"\| ([a-z]+[0-9]+)$"#)
            .unwrap();
    let shape_re = regex::Regex::new(
        r#"^(\(\["([^"]*)"\]\)|\{\{"([^"]*)"\}\}|\["([^"]*)"\]|\("([^"]*)"\)|\[/"([^"]*)"/\])$"#,
    )
    .unwrap();
    for line in lines {
        if line.starts_with("  classDef ") {
            continue;
        }
        if let Some(c) = id_re.captures(line) {
            let shape = c.get(2).unwrap().as_str();
            let s = shape_re
                .captures(shape)
                .unwrap_or_else(|| panic!("bad node shape or unescaped label: {line}"));
            let label = s.iter().skip(2).flatten().next().unwrap().as_str();
            check_label(label, line);
            assert!(
                defined
                    .insert(c[1].to_string(), label.to_string())
                    .is_none(),
                "{} defined twice",
                &c[1]
            );
        } else if let Some(c) = edge_re.captures(line) {
            check_label(&c[3], line);
            edges.push((c[1].to_string(), c[4].to_string()));
        } else {
            panic!("not a node, edge or classDef statement: {line:?}");
        }
    }
    assert_eq!(defined.len(), g.nodes().len());
    assert_eq!(edges.len(), g.edges().len());
    for (a, b) in &edges {
        assert!(
            defined.contains_key(a) && defined.contains_key(b),
            "{a} -> {b}"
        );
    }
    for n in g.nodes() {
        let label = &defined[&n.id];
        assert_eq!(
            unescape(label).split("<br/>").nth(1),
            Some(&*format!("<b>{}</b>", n.name))
        );
    }
}

fn check_label(label: &str, line: &str) {
    let without_markup = label
        .replace("<br/>", "")
        .replace("<b>", "")
        .replace("</b>", "");
    for c in ['"', '<', '>', '|', '`', '[', ']', '{', '}', '(', ')'] {
        assert!(!without_markup.contains(c), "raw {c:?} in label: {line}");
    }
    // Every '#' opens an entity code `#NNN;`.
    let re = regex::Regex::new(r"#[0-9]+;").unwrap();
    assert!(
        !re.replace_all(&without_markup, "").contains('#'),
        "stray # in {line}"
    );
}

fn unescape(label: &str) -> String {
    let re = regex::Regex::new(r"#([0-9]+);").unwrap();
    re.replace_all(label, |c: &regex::Captures| {
        char::from_u32(c[1].parse().unwrap()).unwrap().to_string()
    })
    .into_owned()
}

#[test]
fn mermaid_text_is_well_formed_for_both_documents() {
    check_mermaid(&graph(COLORAPP));
    check_mermaid(&graph(EVERY_KIND));
    let text = graph(EVERY_KIND).to_mermaid();
    assert!(text.starts_with("---\ntitle: 'mesh shop<&\"''>|# (egress ALLOW_ALL)'\n"));
}
