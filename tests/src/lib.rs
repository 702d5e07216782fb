//! taskmesh-e2e: the shared test-support library of the taskmesh workspace, and (in `tests/`)
//! the end-to-end tests across crates.
//!
//! Every helper here drives a real component: the pinned Python venv that
//! `scripts/setup-test-env.sh` installs ([`venv`]), a `moto_server` process ([`moto`]),
//! botocore's parameter validation against the AWS service models ([`botocore`]), cfn-lint
//! ([`cfnlint`]), ECS register/describe round trips through moto ([`ecs`]), the real-world task
//! definitions in `tests/fixtures/` ([`fixtures`]), and child processes on free ports
//! ([`process`], [`ports`]). Nothing here is a mock, and nothing skips: a missing tool is a
//! failure with a message saying how to install it.
//!
//! This library depends on none of the other taskmesh crates (they dev-depend on it).

pub mod aws_front;
pub mod botocore;
pub mod cargo_bin;
pub mod cfnlint;
pub mod ecs;
pub mod error;
pub mod fixtures;
pub mod moto;
pub mod netns;
pub mod ports;
pub mod process;
pub mod task;
pub mod venv;

pub use error::HarnessError;
