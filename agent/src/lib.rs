//! taskmesh-agent: the sidecar that replaces Envoy in each ECS task. It reads the App Mesh
//! model (a mesh document from a file, S3, HTTP(S) or the App Mesh API), compiles it into an
//! immutable route table, and proxies the task's ingress (15000) and egress (15001) traffic,
//! with Envoy-compatible admin endpoints (9901).
//!
//! Layout, one file per role in the traffic path: [`config`] (settings, sources, cache, reload),
//! [`state`] (lifecycle), [`proxy`] (egress, ingress, tcp, forwarding, pool, limits),
//! [`discovery`] (endpoints), [`cluster`] (endpoint sets: balancing, outlier detection,
//! retries), [`admin`], [`metrics`], [`access_log`], [`trace`] (trace-context propagation,
//! spans, OTLP and X-Ray export), and [`agent`] which wires them together ([`Agent::start`]).

pub mod access_log;
pub mod admin;
pub mod agent;
pub mod cluster;
pub mod config;
pub mod discovery;
pub mod metrics;
pub mod proxy;
pub mod proxy_init;
pub mod state;
pub mod tls;
pub mod trace;

pub use agent::{Agent, AgentHandle, StartError};
pub use config::settings::Settings;
pub use state::State;
