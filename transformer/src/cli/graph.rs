//! `taskmesh mesh graph DOC [--format dot|mermaid|svg]`: the mesh document as a picture. DOT and
//! Mermaid text come from [`taskmesh_mesh::MeshGraph`]; SVG is Graphviz's rendering of the DOT
//! (`dot -Tsvg`), and stderr says which renderer and version drew it. Without Graphviz, `svg`
//! fails with exit 3 and a message saying to install it; `dot` and `mermaid` need nothing.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{Context, bail};
use clap::ValueEnum;
use taskmesh_mesh::{DocumentError, MeshDocument, MeshGraph};

use super::io;
use super::run::EXIT_OK;
use crate::error::{Location, TransformError};

/// `--format` of `taskmesh mesh graph`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum GraphFormat {
    /// Graphviz DOT text.
    Dot,
    /// Mermaid flowchart text (renders on GitHub and in most wikis).
    Mermaid,
    /// SVG, drawn by Graphviz (`dot -Tsvg`; the graphviz package must be installed).
    Svg,
}

/// The Graphviz program; `TASKMESH_DOT` overrides it (a path or a name on PATH).
fn dot_program() -> String {
    std::env::var("TASKMESH_DOT").unwrap_or_else(|_| "dot".to_string())
}

/// Renders `doc` (a mesh document file, or `-`) and prints it.
pub fn graph(doc: &Path, format: GraphFormat) -> anyhow::Result<i32> {
    let bytes = io::read_input(doc)?;
    let name = io::display(doc);
    let mesh = match MeshDocument::from_slice(&bytes) {
        Ok(m) => m,
        Err(e @ DocumentError::Syntax { .. }) => {
            return Err(TransformError::Parse {
                location: Location::file(name),
                message: e.to_string(),
            }
            .into());
        }
        Err(e) => {
            for p in e.problems() {
                eprintln!("error: {name}: {p}");
            }
            return Err(TransformError::Parse {
                location: Location::file(name),
                message: format!(
                    "not a valid mesh document ({} problem(s)); nothing drawn",
                    e.problems().len()
                ),
            }
            .into());
        }
    };
    let graph = MeshGraph::from_document(&mesh);
    let text = match format {
        GraphFormat::Dot => graph.to_dot(),
        GraphFormat::Mermaid => graph.to_mermaid(),
        GraphFormat::Svg => render_svg(&graph.to_dot())?,
    };
    io::write_stdout(&text)?;
    Ok(EXIT_OK)
}

/// `dot -Tsvg` over `dot_text`; names the renderer on stderr.
fn render_svg(dot_text: &str) -> anyhow::Result<String> {
    let program = dot_program();
    let version = Command::new(&program).arg("-V").output().map_err(|e| {
        anyhow::anyhow!(
            "--format svg needs Graphviz, and `{program}` could not be run ({e}): install \
                 graphviz (apt-get install graphviz, brew install graphviz, …) or use \
                 --format dot / --format mermaid"
        )
    })?;
    // `dot -V` prints its version on stderr.
    let version = String::from_utf8_lossy(&version.stderr).trim().to_string();
    let mut child = Command::new(&program)
        .arg("-Tsvg")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("running {program} -Tsvg"))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(dot_text.as_bytes())
            .with_context(|| format!("writing the graph to {program} -Tsvg"))?;
    }
    let out = child
        .wait_with_output()
        .with_context(|| format!("waiting for {program} -Tsvg"))?;
    if !out.status.success() {
        bail!(
            "{program} -Tsvg failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    eprintln!("svg rendered by Graphviz: {version}");
    String::from_utf8(out.stdout).with_context(|| format!("{program} -Tsvg wrote non-UTF-8 output"))
}
