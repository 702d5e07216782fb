//! Running the commands. Library errors ([`TransformError`]) become exit code 2, everything else
//! (files, stdin/stdout, AWS) exit code 3; `check` returns 1 when it finds problems.

use std::path::Path;

use anyhow::Context;

use super::args::{FileArgs, InjectCommand, MeshCommand, OutputArgs};
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
    if e.chain()
        .any(|c| c.downcast_ref::<TransformError>().is_some())
    {
        EXIT_USAGE
    } else {
        EXIT_IO
    }
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
        MeshCommand::Check { doc } => {
            let _bytes = io::read_input(doc)?;
            Err(TransformError::usage(
                Location::file(io::display(doc)),
                "mesh check: the mesh document validator is not wired in yet",
            )
            .into())
        }
        MeshCommand::FromTemplate { template, .. } => {
            let _bytes = io::read_input(template).context("mesh from-template")?;
            Err(TransformError::usage(
                Location::file(io::display(template)),
                "mesh from-template: not wired in yet",
            )
            .into())
        }
    }
}
