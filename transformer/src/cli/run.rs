//! Running the commands. Library errors ([`TransformError`]) become exit code 2, everything else
//! (files, stdin/stdout, AWS) exit code 3; `check` returns 1 when it finds problems.

use std::path::Path;

use anyhow::Context;

use super::args::{FileArgs, InjectCommand, MeshCommand, OutputArg, OutputArgs};
use super::{Cli, Command, io};
use crate::error::{Location, Severity, TransformError};
use crate::format::Document;
use crate::options::InjectOptions;

/// Exit code: success.
pub const EXIT_OK: i32 = 0;
/// Exit code: `check` found problems.
pub const EXIT_FINDINGS: i32 = 1;
/// Exit code: bad input or usage.
pub const EXIT_USAGE: i32 = 2;
/// Exit code: AWS or I/O failure.
pub const EXIT_IO: i32 = 3;

/// The exit code for an error: 2 when a [`TransformError`] (bad input or usage) is in its
/// chain, else 3.
pub fn exit_code(e: &anyhow::Error) -> i32 {
    let bad_input = e.chain().any(|c| {
        c.downcast_ref::<TransformError>().is_some()
            || c.downcast_ref::<crate::meshdoc::FromTemplateError>()
                .is_some()
    });
    if bad_input { EXIT_USAGE } else { EXIT_IO }
}

/// Run a parsed command line; returns the exit code on success (0, or 1 from `check`).
pub fn run(cli: Cli) -> anyhow::Result<i32> {
    match cli.command {
        Command::Inject(cmd) => inject(&cmd),
        Command::Eject(args) => eject(&args),
        Command::Check(args) => check(&args),
        Command::Mesh(cmd) => mesh(&cmd),
        #[cfg(feature = "aws")]
        Command::Register(cmd) => super::register::register(&cmd),
        #[cfg(feature = "demo")]
        Command::Demo(args) => crate::demo::run(&args),
    }
}

fn load(path: &Path) -> anyhow::Result<Document> {
    let bytes = io::read_input(path)?;
    Ok(Document::parse(&bytes, &io::display(path))?)
}

fn emit(doc: &Document, path: &Path, out: &OutputArgs) -> anyhow::Result<()> {
    let text = match out.output {
        Some(o) => doc.render_as(o.into()),
        None => doc.render(),
    };
    if out.in_place {
        io::write_atomic(path, &text)
    } else {
        io::write_stdout(&text)
    }
}

fn refuse_stdin_in_place(path: &Path, out: &OutputArgs) -> anyhow::Result<()> {
    if out.in_place && io::is_stdin(path) {
        return Err(TransformError::usage(
            Location::file("-"),
            "--in-place needs a FILE, not standard input",
        )
        .into());
    }
    Ok(())
}

fn inject(cmd: &InjectCommand) -> anyhow::Result<i32> {
    refuse_stdin_in_place(&cmd.file, &cmd.output)?;
    let opts = cmd.inject.to_options()?;
    let doc = load(&cmd.file)?;
    let (out, notes) = crate::inject_document(&doc, &opts)?;
    for n in &notes {
        eprintln!("{n}");
    }
    emit(&out, &cmd.file, &cmd.output)?;
    Ok(EXIT_OK)
}

fn eject(args: &FileArgs) -> anyhow::Result<i32> {
    refuse_stdin_in_place(&args.file, &args.output)?;
    let opts = InjectOptions {
        resources: args.resources.clone(),
        ..InjectOptions::default()
    };
    let doc = load(&args.file)?;
    let out = crate::eject_document(&doc, &opts)?;
    emit(&out, &args.file, &args.output)?;
    Ok(EXIT_OK)
}

fn check(args: &FileArgs) -> anyhow::Result<i32> {
    let opts = InjectOptions {
        resources: args.resources.clone(),
        ..InjectOptions::default()
    };
    let doc = load(&args.file)?;
    let findings = crate::check_document(&doc, &opts);
    for f in &findings {
        eprintln!("{f}");
    }
    if findings.is_empty() {
        eprintln!("{}: no problems found", io::display(&args.file));
        Ok(EXIT_OK)
    } else {
        let errors = findings
            .iter()
            .filter(|f| f.severity == Severity::Error)
            .count();
        eprintln!(
            "{}: {} problem(s), {errors} error(s)",
            io::display(&args.file),
            findings.len()
        );
        Ok(EXIT_FINDINGS)
    }
}

fn mesh(cmd: &MeshCommand) -> anyhow::Result<i32> {
    match cmd {
        MeshCommand::Graph { doc, format } => super::graph::graph(doc, *format),
        MeshCommand::Check { doc } => {
            let bytes = io::read_input(doc)?;
            let name = io::display(doc);
            match taskmesh_mesh::MeshDocument::from_slice(&bytes) {
                Ok(mesh) => {
                    eprintln!(
                        "{name}: mesh {}: {} virtual service(s), {} virtual router(s), {} route(s), {} virtual node(s): no problems found",
                        mesh.mesh_name(),
                        mesh.virtual_services().len(),
                        mesh.virtual_routers().len(),
                        mesh.routes().len(),
                        mesh.virtual_nodes().len()
                    );
                    Ok(EXIT_OK)
                }
                Err(e @ taskmesh_mesh::DocumentError::Syntax { .. }) => {
                    Err(TransformError::Parse {
                        location: Location::file(name),
                        message: e.to_string(),
                    }
                    .into())
                }
                Err(e) => {
                    for p in e.problems() {
                        eprintln!("error: {name}: {p}");
                    }
                    eprintln!("{name}: {} problem(s)", e.problems().len());
                    Ok(EXIT_FINDINGS)
                }
            }
        }
        MeshCommand::FromTemplate {
            template,
            output,
            parameters,
            attributes,
            mesh,
        } => {
            let bytes = io::read_input(template)?;
            let name = io::display(template);
            let yaml: serde_yaml_ng::Value =
                serde_yaml_ng::from_slice(&bytes).map_err(|e| TransformError::Parse {
                    location: Location::file(name.clone()),
                    message: format!("invalid JSON/YAML: {e}"),
                })?;
            let inputs = crate::meshdoc::TemplateInputs {
                parameters: key_values("--parameter", parameters)?,
                attributes: key_values("--attribute", attributes)?,
                mesh: mesh.clone(),
            };
            let doc = crate::meshdoc::from_template_with(&yaml, &name, &inputs)?;
            let text = match output {
                OutputArg::Json => {
                    let mut s = serde_json::to_string_pretty(&doc)
                        .context("rendering the mesh document")?;
                    s.push('\n');
                    s
                }
                OutputArg::Yaml => {
                    serde_yaml_ng::to_string(&doc).context("rendering the mesh document")?
                }
            };
            io::write_stdout(&text)?;
            Ok(EXIT_OK)
        }
    }
}

fn key_values(
    flag: &str,
    items: &[String],
) -> Result<std::collections::BTreeMap<String, String>, TransformError> {
    items
        .iter()
        .map(|kv| {
            kv.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .ok_or_else(|| {
                    TransformError::usage(
                        Location::file("-"),
                        format!("{flag} {kv}: expected KEY=VALUE"),
                    )
                })
        })
        .collect()
}
