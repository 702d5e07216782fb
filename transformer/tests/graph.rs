//! `taskmesh mesh graph` through the real binary: SVG drawn by Graphviz and parsed (every
//! resource and weight present), DOT that Graphviz accepts, Mermaid text, stdin, a clear exit 3
//! when Graphviz is missing, and exit 2 with every problem for an invalid document.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn colorapp() -> String {
    root()
        .join("templates/colorapp/mesh.yaml")
        .display()
        .to_string()
}

fn every_kind() -> String {
    root()
        .join("mesh/tests/fixtures/graph-every-route-kind.yaml")
        .display()
        .to_string()
}

fn taskmesh(args: &[&str], env: &[(&str, &str)], stdin: Option<&str>) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_taskmesh"));
    cmd.args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("spawn taskmesh");
    let input = child.stdin.take().expect("stdin");
    if let Some(text) = stdin {
        let mut input = input;
        input.write_all(text.as_bytes()).expect("write stdin");
    } else {
        drop(input);
    }
    child.wait_with_output().expect("wait taskmesh")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Every `<text>` of the SVG grouped by the Graphviz element (`node`/`edge`) it belongs to.
fn svg_texts(svg: &str, class: &str) -> Vec<Vec<String>> {
    let opts = roxmltree::ParsingOptions {
        allow_dtd: true,
        ..Default::default()
    };
    let doc = roxmltree::Document::parse_with_options(svg, opts)
        .unwrap_or_else(|e| panic!("not XML: {e}\n{svg}"));
    assert_eq!(doc.root_element().tag_name().name(), "svg");
    doc.descendants()
        .filter(|g| g.has_tag_name("g") && g.attribute("class") == Some(class))
        .map(|g| {
            g.descendants()
                .filter(|t| t.has_tag_name("text"))
                .map(|t| {
                    t.descendants()
                        .filter(|x| x.is_text())
                        .filter_map(|x| x.text())
                        .collect::<String>()
                })
                .collect()
        })
        .collect()
}

#[test]
fn svg_of_colorapp_is_drawn_by_graphviz_with_every_resource() {
    let out = taskmesh(
        &["mesh", "graph", &colorapp(), "--format", "svg"],
        &[],
        None,
    );
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("svg rendered by Graphviz: dot - graphviz version"),
        "{stderr}"
    );
    let svg = text(&out.stdout);
    let nodes = svg_texts(&svg, "node");
    let edges = svg_texts(&svg, "edge");
    assert_eq!(nodes.len(), 8, "2 services, 1 router, 1 route, 4 nodes");
    assert_eq!(edges.len(), 7);
    for name in [
        "colorteller.colorapp.local",
        "colorgateway.colorapp.local",
        "colorteller-vr",
        "colorteller-vr/colorteller-canary",
        "colorgateway",
        "colorteller-white",
        "colorteller-blue",
        "colorteller-black",
    ] {
        assert!(
            nodes.iter().any(|n| n.contains(&name.to_string())),
            "{name} not drawn: {nodes:?}"
        );
    }
    let edge_labels: Vec<String> = edges.into_iter().flatten().collect();
    for label in [
        "weight 8 (80%)",
        "weight 1 (10%)",
        "priority 10",
        "backend",
        "provider",
    ] {
        assert!(
            edge_labels.contains(&label.to_string()),
            "{label}: {edge_labels:?}"
        );
    }
}

#[test]
fn dot_from_stdin_is_accepted_by_graphviz() {
    let doc = std::fs::read_to_string(every_kind()).unwrap();
    let out = taskmesh(&["mesh", "graph", "-"], &[], Some(&doc));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let dot = text(&out.stdout);
    assert!(dot.starts_with("digraph mesh {"), "{dot}");
    let mut child = Command::new("dot")
        .arg("-Tsvg")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("Graphviz `dot` must be installed (scripts/setup-test-env.sh installs graphviz)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(dot.as_bytes())
        .unwrap();
    let svg = child.wait_with_output().unwrap();
    assert!(svg.status.success(), "{}", text(&svg.stderr));
    assert!(text(&svg.stderr).is_empty(), "{}", text(&svg.stderr));
    let nodes = svg_texts(&text(&svg.stdout), "node");
    let kinds: Vec<&str> = ["httpRoute", "http2Route", "grpcRoute", "tcpRoute"]
        .into_iter()
        .filter(|k| nodes.iter().any(|n| n.contains(&k.to_string())))
        .collect();
    assert_eq!(kinds.len(), 4, "{nodes:?}");
}

#[test]
fn mermaid_lists_every_route_kind() {
    let out = taskmesh(
        &["mesh", "graph", &every_kind(), "--format", "mermaid"],
        &[],
        None,
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let m = text(&out.stdout);
    assert!(m.contains("\nflowchart LR\n"), "{m}");
    for k in ["httpRoute", "http2Route", "grpcRoute", "tcpRoute"] {
        assert!(m.contains(k), "{k}: {m}");
    }
    assert!(m.contains("weight 2 #40;66.7%#41;"), "{m}");
}

#[test]
fn svg_without_graphviz_says_to_install_it() {
    let out = taskmesh(
        &["mesh", "graph", &colorapp(), "--format", "svg"],
        &[("TASKMESH_DOT", "/nonexistent/dot")],
        None,
    );
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("install graphviz"), "{stderr}");
    assert!(out.stdout.is_empty());
}

#[test]
fn invalid_document_exits_2_with_every_problem() {
    let doc = "meshName: m\nvirtualServices:\n  - virtualServiceName: a\n    spec: {provider: {virtualRouter: {virtualRouterName: nope}}}\nvirtualNodes:\n  - virtualNodeName: n\n    spec: {backends: [{virtualService: {virtualServiceName: gone}}]}\n";
    let out = taskmesh(
        &["mesh", "graph", "-", "--format", "mermaid"],
        &[],
        Some(doc),
    );
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("no virtual router \"nope\""), "{stderr}");
    assert!(stderr.contains("no virtual service \"gone\""), "{stderr}");
    assert!(stderr.contains("2 problem(s)"), "{stderr}");
    assert!(out.stdout.is_empty());
}
