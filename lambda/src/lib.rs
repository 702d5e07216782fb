//! taskmesh-lambda: the taskmesh transformation inside deployments. One function (`bootstrap`)
//! serves the CloudFormation macro `TaskMesh` ([`macro_transform`]), the custom resource
//! `Custom::MeshTaskDefinition` ([`custom_resource`]), the ECS blue/green lifecycle hook
//! ([`ecs_hook`]) and the CloudFormation Lambda hook ([`cfn_hook`]); [`dispatch`] tells them apart
//! by the event's keys. Handlers are plain async functions over typed events; `main` only wires the
//! Lambda runtime.

pub mod admission;
pub mod cfn_hook;
pub mod custom_resource;
pub mod dispatch;
pub mod ecs_hook;
pub mod macro_transform;
pub mod services;

pub use dispatch::{DispatchError, EventKind, classify, dispatch, invocation_deadline};
pub use services::Services;
