//! Mermaid flowchart output. Labels are always quoted (`id["…"]`, `-->|"…"|`) and every
//! character Mermaid could read as syntax or markup (`"`, `#`, `&`, `<`, `>`, `|`, backtick,
//! brackets, braces) is written as a Mermaid entity code (`#34;`); lines are joined with
//! `<br/>`, and ids are generated, never user text.

use std::fmt::Write;

use super::{EdgeKind, MeshGraph, NodeKind, stats_line};

/// Escapes `s` for a quoted Mermaid label.
pub(super) fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '"' | '#' | '&' | '<' | '>' | '|' | '`' | '[' | ']' | '{' | '}' | '(' | ')' | ';' => {
                let _ = write!(out, "#{};", u32::from(c));
            }
            c if c.is_control() => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

/// The inside of a YAML single-quoted scalar (front-matter title): `'` doubled, control
/// characters as spaces.
fn yaml_single_quoted(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect::<String>()
        .replace('\'', "''")
}

fn shape(kind: NodeKind, label: &str) -> String {
    match kind {
        NodeKind::VirtualService => format!("([\"{label}\"])"),
        NodeKind::VirtualRouter => format!("{{{{\"{label}\"}}}}"),
        NodeKind::Route => format!("[\"{label}\"]"),
        NodeKind::VirtualNode => format!("(\"{label}\")"),
        NodeKind::Missing => format!("[/\"{label}\"/]"),
    }
}

fn class(kind: NodeKind) -> &'static str {
    match kind {
        NodeKind::VirtualService => "vs",
        NodeKind::VirtualRouter => "vr",
        NodeKind::Route => "rt",
        NodeKind::VirtualNode => "vn",
        NodeKind::Missing => "missing",
    }
}

pub(super) fn render(g: &MeshGraph) -> String {
    let mut out = String::with_capacity(4096);
    let _ = writeln!(out, "---");
    let _ = writeln!(
        out,
        "title: 'mesh {} (egress {})'",
        yaml_single_quoted(&g.mesh_name),
        g.egress_filter
    );
    let _ = writeln!(out, "---");
    let _ = writeln!(out, "flowchart LR");
    for n in &g.nodes {
        let mut label = format!("{}<br/><b>{}</b>", escape(n.kind.title()), escape(&n.name));
        for d in &n.details {
            let _ = write!(label, "<br/>{}", escape(d));
        }
        let _ = writeln!(
            out,
            "  {}{}:::{}",
            n.id,
            shape(n.kind, &label),
            class(n.kind)
        );
    }
    for e in &g.edges {
        let mut lines: Vec<String> = e.label.iter().map(|l| escape(l)).collect();
        if let Some(s) = &e.stats {
            lines.push(escape(&stats_line(s)));
        }
        let arrow = match e.kind {
            EdgeKind::Backend => "-.->",
            EdgeKind::Route => "---",
            EdgeKind::Provider | EdgeKind::Target => "-->",
        };
        let _ = writeln!(
            out,
            "  {} {}|\"{}\"| {}",
            e.from,
            arrow,
            lines.join("<br/>"),
            e.to
        );
    }
    let _ = writeln!(
        out,
        "  classDef vs fill:#dbeafe,stroke:#1d4ed8\n  classDef vr fill:#ede9fe,stroke:#6d28d9\n  \
         classDef rt fill:#fef9c3,stroke:#a16207\n  classDef vn fill:#dcfce7,stroke:#15803d\n  \
         classDef missing fill:#fee2e2,stroke:#b91c1c,stroke-dasharray:4"
    );
    out
}
