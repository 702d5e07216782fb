//! The `taskmesh` command line: argument types ([`args`]), input/output with atomic
//! `--in-place` writes ([`io`]), and the commands ([`run`]). `main.rs` only parses and exits with
//! the code [`run::run`] returns: 0 done, 1 `check` found problems, 2 bad input or usage, 3 AWS
//! or I/O failure.
//!
//! Adding a subcommand (e.g. `register`, which reuses [`args::InjectArgs`]) means one variant in
//! [`Command`] and one arm in [`run::run`].

pub mod args;
pub mod graph;
pub mod io;
#[cfg(feature = "aws")]
pub mod register;
pub mod run;

use clap::{Parser, Subcommand};

pub use args::{FileArgs, InjectArgs, InjectCommand, MeshCommand, OutputArgs};

/// Meshes Amazon ECS task definitions: adds the taskmesh proxy sidecar, the traffic redirect and
/// the wiring, or removes them; checks ECS and mesh rules; validates mesh documents.
///
/// Input formats are detected: ECS API JSON, describe-task-definition output, CloudFormation
/// JSON or YAML. Output keeps the input's format, key order and intrinsics.
///
/// Exit codes: 0 done; 1 `check` found problems; 2 bad input or usage; 3 AWS or I/O failure.
#[derive(Debug, Parser)]
#[command(name = "taskmesh", version, about, long_about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Add the proxy sidecar, the redirect and the wiring to every task definition in FILE.
    Inject(InjectCommand),
    /// Remove what inject added, and legacy App Mesh Envoy / proxyinit wiring.
    Eject(FileArgs),
    /// Report ECS and mesh problems on stderr; exit 1 when there are any.
    Check(FileArgs),
    /// Mesh documents: validate one, compile one from a CloudFormation template, or draw one.
    #[command(subcommand)]
    Mesh(MeshCommand),
    /// Mesh a registered task definition: DescribeTaskDefinition -> inject ->
    /// RegisterTaskDefinition (tags kept, plus taskmesh:source); prints the new ARN.
    #[cfg(feature = "aws")]
    Register(register::RegisterCommand),
    /// Run the example application (templates/colorapp) locally through agents: no AWS, no
    /// root. Shows the split per color live; edit the mesh document's weights to move it.
    #[cfg(feature = "demo")]
    Demo(crate::demo::DemoArgs),
}
