//! The App Mesh resource model: serde types for the API's `*Data` shapes (MeshData,
//! VirtualServiceData, VirtualRouterData, RouteData, VirtualNodeData) with the API's camelCase
//! names. Unions are externally tagged single-key objects, exactly as on the wire. `metadata`,
//! `status`, timestamps and unknown fields are ignored on input and never written. Optional
//! settings stay `Option` so a document round-trips; the App Mesh defaults (agent-anchors §1.8)
//! are applied by the accessor methods and by the route table, not stored.

mod duration;
mod mesh;
mod route;
mod virtual_node;
mod virtual_router;
mod virtual_service;

pub use duration::{Duration, DurationUnit};
pub use mesh::{
    EgressFilter, EgressFilterType, IpPreference, MeshData, MeshServiceDiscovery, MeshSpec,
};
pub use route::{
    GrpcMetadataMatchMethod, GrpcRetryPolicy, GrpcRoute, GrpcRouteMatch, GrpcRouteMetadata,
    GrpcTimeout, HeaderMatchMethod, HttpMethod, HttpPathMatch, HttpQueryParameter, HttpRetryPolicy,
    HttpRoute, HttpRouteHeader, HttpRouteMatch, HttpScheme, HttpTimeout, MatchRange,
    QueryParameterMatch, RouteAction, RouteData, RouteSpec, TcpRoute, TcpRouteMatch, TcpTimeout,
    WeightedTargetSpec,
};
pub use virtual_node::{
    AccessLog, AwsCloudMapInstanceAttribute, AwsCloudMapServiceDiscovery, Backend, BackendDefaults,
    ClientPolicy, ClientPolicyTls, ClientTlsCertificate, ConnectionPoolSpec, DnsResponseType,
    DnsServiceDiscovery, FileAccessLog, HealthCheckPolicy, JsonFormatRef, ListenerSpec,
    ListenerTimeoutSpec, ListenerTlsCertificate, ListenerTlsSpec, ListenerTlsValidationContext,
    LoggingFormat, LoggingSpec, OutlierDetectionSpec, ServiceDiscovery,
    SubjectAlternativeNameMatchers, SubjectAlternativeNames, TlsMode, TlsValidationContext,
    TlsValidationTrust, VirtualNodeData, VirtualNodeSpec, VirtualServiceBackend,
};
pub use virtual_router::{
    PortMapping, PortProtocol, RouterListener, VirtualRouterData, VirtualRouterSpec,
};
pub use virtual_service::{
    VirtualNodeServiceProvider, VirtualRouterServiceProvider, VirtualServiceData,
    VirtualServiceProvider, VirtualServiceSpec,
};
