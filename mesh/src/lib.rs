//! taskmesh-mesh: the App Mesh resource model, the mesh document, validation, and the
//! compiled, immutable route table the agent reads on every request.
//!
//! The flow, one module per step:
//!
//! 1. [`model`] — serde types for App Mesh's `*Data` shapes (mesh, virtual service, virtual
//!    router, route, virtual node) with the API's camelCase names; `metadata`, `status`,
//!    timestamps and unknown fields are ignored.
//! 2. [`document`] — [`MeshDocument::from_slice`] reads JSON or YAML in every accepted shape
//!    (canonical document, `{"mesh": {...}}`, an array of `describe-*` outputs, raw API
//!    bodies), normalises it to the canonical form and runs `validate`, which lists every
//!    problem with its path ([`DocumentError::Invalid`]).
//! 3. [`table`] — [`RouteTable::compile`] turns a document plus the agent's [`NodeRef`] into
//!    an immutable table: this node's listeners, its backends' virtual services, each provider
//!    router compiled per listener port with routes in App Mesh order and indexed by path,
//!    target nodes with App Mesh defaults applied.
//! 4. [`router`] — [`RouteTable::route_http`] / [`RouteTable::route_tcp`] pick the virtual
//!    service, listener, route and ([`RouteMatch::pick`]) weighted target for one request or
//!    connection, without allocating, in time that does not grow with the number of routes.
//! 5. [`graph`] — [`MeshGraph`]: the document as a picture (Graphviz DOT or Mermaid text).
//!
//! ```
//! use taskmesh_mesh::{HttpRequestView, HttpRouting, MeshDocument, NodeRef, RouteTable};
//!
//! let doc = MeshDocument::from_slice(br#"
//! meshName: app
//! virtualServices:
//!   - virtualServiceName: api.app.local
//!     spec: {provider: {virtualRouter: {virtualRouterName: api}}}
//! virtualRouters:
//!   - virtualRouterName: api
//!     spec: {listeners: [{portMapping: {port: 8080, protocol: http}}]}
//! routes:
//!   - virtualRouterName: api
//!     routeName: all
//!     spec: {httpRoute: {match: {prefix: /}, action: {weightedTargets: [{virtualNode: api-v1, weight: 1}]}}}
//! virtualNodes:
//!   - virtualNodeName: api-v1
//!     spec:
//!       listeners: [{portMapping: {port: 8080, protocol: http}}]
//!       serviceDiscovery: {dns: {hostname: api-v1.app.local}}
//!   - virtualNodeName: web
//!     spec: {backends: [{virtualService: {virtualServiceName: api.app.local}}]}
//! "#).unwrap();
//! let table = RouteTable::compile(&doc, &NodeRef::parse("mesh/app/virtualNode/web").unwrap()).unwrap();
//! let headers = http::HeaderMap::new();
//! let req = HttpRequestView {
//!     authority: "API.app.local:8080", dest_port: None, method: &http::Method::GET,
//!     scheme: "http", path_and_query: "/users?id=1", headers: &headers,
//! };
//! let HttpRouting::Matched(m) = table.route_http(&req) else { panic!("no route") };
//! assert_eq!(&*table.targets()[m.pick(12345).node].name, "api-v1");
//! ```

pub mod document;
pub mod graph;
pub mod model;
mod node;
pub mod router;
pub mod table;
mod validate;

pub use document::{DocumentError, MeshDocument, Problem};
pub use graph::MeshGraph;
pub use node::{NodeRef, NodeRefError};
pub use router::{HttpRequestView, HttpRouting, RouteMatch, TcpRouting, normalize_path};
pub use table::{
    CompiledRoute, ConnectionPool, Discovery, DnsResponseType, EgressFilter, HealthCheck, Listener,
    ListenerTimeouts, ListenerTls, OutlierDetection, Protocol, RetryPolicy, RouteKind, RouteTable,
    RouteTimeouts, TargetNode, WeightedTarget,
};
