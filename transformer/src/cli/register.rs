//! `taskmesh register --task-definition FAMILY[:REV]|ARN [inject options]`: reads a registered task
//! definition (DescribeTaskDefinition, with tags), meshes it and registers the result as a new
//! revision of the same family, with the tags kept plus `taskmesh:source=<source ARN>`; prints the
//! new ARN. AWS settings come from the standard chain (`AWS_ENDPOINT_URL` included). Exit 2 when
//! the definition cannot be meshed, 3 on AWS errors (operation and AWS error code in the message).

use anyhow::Context;
use clap::Args;

use super::args::InjectArgs;
use super::run::EXIT_OK;
use crate::ecs::{EcsApi, EcsError, register_meshed};

/// `taskmesh register`.
#[derive(Debug, Clone, Args)]
pub struct RegisterCommand {
    /// The task definition to mesh: family (latest ACTIVE revision), family:revision, or ARN
    #[arg(long, value_name = "FAMILY[:REV]|ARN")]
    pub task_definition: String,
    #[command(flatten)]
    pub inject: InjectArgs,
}

/// Runs `register`; prints the new revision's ARN on stdout and notes on stderr.
pub fn register(cmd: &RegisterCommand) -> anyhow::Result<i32> {
    let opts = cmd.inject.to_options()?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let registered = runtime
        .block_on(async {
            let api = EcsApi::from_env().await;
            register_meshed(&api, &cmd.task_definition, &opts, &[]).await
        })
        .map_err(|e| match e {
            // Keep the transformer's error itself in the chain: it selects exit code 2.
            EcsError::Transform(t) => anyhow::Error::from(*t),
            other => anyhow::Error::from(other),
        })
        .with_context(|| format!("taskmesh register {}", cmd.task_definition))?;
    for note in &registered.notes {
        eprintln!("{note}");
    }
    println!("{}", registered.arn);
    Ok(EXIT_OK)
}
