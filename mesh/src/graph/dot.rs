//! Graphviz DOT output. Every label is an HTML-like label (`<…>`): user text gets XML
//! escaping (`&`, `<`, `>`, `"`, `'`; control characters become spaces) plus doubled
//! backslashes, because Graphviz still folds `\\` into one there (checked against `dot -Tsvg`
//! in mesh/tests/graph.rs). Ids are generated, never user text.

use std::fmt::Write;

use super::{EdgeKind, MeshGraph, NodeKind, stats_line};

/// XML-escapes `s` for an HTML-like label.
pub(super) fn escape_html(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            // Graphviz still reads `\\` in an HTML-like label as one backslash.
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

fn node_style(kind: NodeKind) -> &'static str {
    match kind {
        NodeKind::VirtualService => {
            r##"shape=box, style="rounded,filled", fillcolor="#dbeafe", color="#1d4ed8""##
        }
        NodeKind::VirtualRouter => {
            r##"shape=box, style="filled", fillcolor="#ede9fe", color="#6d28d9""##
        }
        NodeKind::Route => r##"shape=box, style="filled", fillcolor="#fef9c3", color="#a16207""##,
        NodeKind::VirtualNode => {
            r##"shape=box, style="rounded,filled,bold", fillcolor="#dcfce7", color="#15803d""##
        }
        NodeKind::Missing => {
            r##"shape=box, style="dashed,filled", fillcolor="#fee2e2", color="#b91c1c""##
        }
    }
}

fn edge_style(kind: EdgeKind) -> &'static str {
    match kind {
        EdgeKind::Provider => r##"color="#1d4ed8""##,
        EdgeKind::Route => r##"color="#6d28d9", arrowhead=none"##,
        EdgeKind::Target => r##"color="#15803d""##,
        EdgeKind::Backend => r##"color="#475569", style=dashed"##,
    }
}

pub(super) fn render(g: &MeshGraph) -> String {
    let mut out = String::with_capacity(4096);
    let _ = writeln!(out, "digraph mesh {{");
    let _ = writeln!(
        out,
        "  graph [rankdir=LR, fontname=\"Helvetica\", fontsize=16, nodesep=0.4, ranksep=0.9, \
         labelloc=t, label=<<B>mesh {}</B>   egress {}>];",
        escape_html(&g.mesh_name),
        g.egress_filter
    );
    let _ = writeln!(out, "  node [fontname=\"Helvetica\", fontsize=12];");
    let _ = writeln!(out, "  edge [fontname=\"Helvetica\", fontsize=10];");
    for n in &g.nodes {
        let mut label = format!(
            "<FONT POINT-SIZE=\"9\">{}</FONT><BR/><B>{}</B>",
            escape_html(n.kind.title()),
            escape_html(&n.name)
        );
        for d in &n.details {
            let _ = write!(
                label,
                "<BR/><FONT POINT-SIZE=\"10\">{}</FONT>",
                escape_html(d)
            );
        }
        let _ = writeln!(
            out,
            "  {} [{}, label=<{}>];",
            n.id,
            node_style(n.kind),
            label
        );
    }
    for e in &g.edges {
        let mut lines: Vec<String> = e.label.iter().map(|l| escape_html(l)).collect();
        let mut extra = String::new();
        if let Some(s) = &e.stats {
            lines.push(format!("<B>{}</B>", escape_html(&stats_line(s))));
            let width = 1.0 + (s.requests_per_second.max(0.0) + 1.0).log10().min(4.0);
            let _ = write!(extra, ", penwidth={width:.2}");
            if s.error_ratio > 0.05 {
                extra.push_str(", color=\"#b91c1c\", fontcolor=\"#b91c1c\"");
            }
        }
        let _ = writeln!(
            out,
            "  {} -> {} [{}{}, label=<{}>];",
            e.from,
            e.to,
            edge_style(e.kind),
            extra,
            lines.join("<BR/>")
        );
    }
    out.push_str("}\n");
    out
}
