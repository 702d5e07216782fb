//! The task definition as a JSON tree in its own casing: key naming (API camelCase vs
//! CloudFormation PascalCase), opaque intrinsics, numbers written as strings, the Fargate size
//! table, and recognising proxy wiring (ours, App Mesh Envoy, preview `proxyinit`).

pub mod fargate;
pub mod naming;
pub mod numbers;
pub mod wiring;

pub use naming::Casing;
