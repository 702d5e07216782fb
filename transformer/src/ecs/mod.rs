//! ECS registration through the AWS SDK (cargo feature `aws`): read a task definition, mesh it,
//! register the meshed revision. Task definitions stay raw JSON end to end, so no field ECS knows
//! and the SDK does not is lost ([`raw_body`]).

mod client;
mod error;
pub mod raw_body;
mod registration;

pub use client::{DescribedTaskDefinition, EcsApi};
pub use error::EcsError;
pub use registration::{
    OUTPUT_ONLY_FIELDS, Registered, SOURCE_TAG, meshed_request, register_meshed, register_request,
    registered_by_taskmesh, registrable,
};
