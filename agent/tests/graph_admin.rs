//! `GET /graph` on a real agent after real traffic: the DOT is rendered by Graphviz
//! (`dot -Tsvg`) and the SVG carries the live numbers on the right edges (requests per second,
//! error share from real 500s); `?format=mermaid` carries them too; before any document the
//! endpoint says so with 503.

mod support;

use std::io::Write;
use std::process::{Command, Stdio};

use http::StatusCode;
use serde_json::json;
use support::{DocBuilder, HttpClient, World, admin_get, http_backend};

fn svg_edge_texts(svg: &str) -> Vec<Vec<String>> {
    let opts = roxmltree::ParsingOptions {
        allow_dtd: true,
        ..Default::default()
    };
    let doc = roxmltree::Document::parse_with_options(svg, opts).expect("SVG is XML");
    doc.descendants()
        .filter(|g| g.has_tag_name("g") && g.attribute("class") == Some("edge"))
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graph_shows_live_rates_and_error_ratios() {
    let app = http_backend("app").await;
    let blue = http_backend("blue").await;
    let doc = DocBuilder::new("DROP_ALL")
        .node("front", app.addr.port(), "http", &["svc.local"])
        .node("blue", blue.addr.port(), "http", &[])
        .routed_service("svc.local", "r", 9080, "http")
        .http_route("r", "all", None, json!({"prefix": "/"}), &[("blue", 1)])
        .json();
    let world = World::new(&doc);
    let agent = world.start("front").await;
    let client = HttpClient::new();
    for path in ["/", "/", "/", "/status/500"] {
        client.get(agent.egress_addr, "svc.local", path).await;
    }
    let (status, dot) = admin_get(agent.admin_addr, "/graph").await;
    assert_eq!(status, StatusCode::OK, "{dot}");
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
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let edges = svg_edge_texts(&String::from_utf8_lossy(&out.stdout));
    let target = edges
        .iter()
        .find(|e| e.contains(&"weight 1 (100%)".to_string()))
        .unwrap_or_else(|| panic!("no route -> blue edge: {edges:?}"));
    assert!(
        target.iter().any(|t| t.ends_with("req/s, 25.0% errors")),
        "{target:?}"
    );
    let backend = edges
        .iter()
        .find(|e| e.contains(&"backend".to_string()))
        .unwrap_or_else(|| panic!("no front -> svc.local edge: {edges:?}"));
    assert!(
        backend.iter().any(|t| t.ends_with("req/s, 25.0% errors")),
        "{backend:?}"
    );
    let (status, mermaid) = admin_get(agent.admin_addr, "/graph?format=mermaid").await;
    assert_eq!(status, StatusCode::OK);
    assert!(mermaid.contains("\nflowchart LR\n"), "{mermaid}");
    assert!(mermaid.contains("req/s, 25.0% errors"), "{mermaid}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graph_before_any_document_is_503() {
    let world = World::new("meshName: m\nvirtualNodes: []\n");
    let agent = taskmesh_agent::Agent::start(world.settings("front"))
        .await
        .expect("agent starts");
    let (status, body) = admin_get(agent.admin_addr, "/graph").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(body.contains("no mesh document loaded yet"), "{body}");
}
