//! `RouteData`: one route of a virtual router. `RouteSpec` carries exactly one of
//! `httpRoute` / `http2Route` / `grpcRoute` / `tcpRoute` (validation checks "exactly one") and
//! an optional `priority` (0 = highest).

use serde::{Deserialize, Serialize};

use super::Duration;

/// The `RouteData` shape.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RouteData {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mesh_name: Option<String>,
    pub virtual_router_name: String,
    pub route_name: String,
    #[serde(default)]
    pub spec: RouteSpec,
}

/// `RouteSpec`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RouteSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_route: Option<HttpRoute>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http2_route: Option<HttpRoute>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grpc_route: Option<GrpcRoute>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp_route: Option<TcpRoute>,
}

/// `HttpRoute` (also the shape of `http2Route`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HttpRoute {
    #[serde(rename = "match")]
    pub route_match: HttpRouteMatch,
    pub action: RouteAction,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_policy: Option<HttpRetryPolicy>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<HttpTimeout>,
}

/// `HttpRouteMatch`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HttpRouteMatch {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<HttpPathMatch>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<HttpMethod>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheme: Option<HttpScheme>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u32>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<HttpRouteHeader>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub query_parameters: Vec<HttpQueryParameter>,
}

/// `HttpPathMatch`: `exact` or `regex` (validation checks exactly one).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HttpPathMatch {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exact: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regex: Option<String>,
}

/// `HttpMethod`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[allow(clippy::upper_case_acronyms)]
pub enum HttpMethod {
    GET,
    HEAD,
    POST,
    PUT,
    DELETE,
    CONNECT,
    OPTIONS,
    TRACE,
    PATCH,
}

impl HttpMethod {
    /// The `http` crate's method.
    pub fn to_http(self) -> http::Method {
        match self {
            HttpMethod::GET => http::Method::GET,
            HttpMethod::HEAD => http::Method::HEAD,
            HttpMethod::POST => http::Method::POST,
            HttpMethod::PUT => http::Method::PUT,
            HttpMethod::DELETE => http::Method::DELETE,
            HttpMethod::CONNECT => http::Method::CONNECT,
            HttpMethod::OPTIONS => http::Method::OPTIONS,
            HttpMethod::TRACE => http::Method::TRACE,
            HttpMethod::PATCH => http::Method::PATCH,
        }
    }
}

/// `HttpScheme`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HttpScheme {
    Http,
    Https,
}

/// `HttpRouteHeader`: `match` absent = the header must be present.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HttpRouteHeader {
    pub name: String,
    #[serde(default)]
    pub invert: bool,
    #[serde(default, rename = "match", skip_serializing_if = "Option::is_none")]
    pub header_match: Option<HeaderMatchMethod>,
}

/// `HeaderMatchMethod` union.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum HeaderMatchMethod {
    Exact(String),
    Prefix(String),
    Suffix(String),
    Regex(String),
    Range(MatchRange),
}

/// `MatchRange`: `start` inclusive, `end` exclusive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct MatchRange {
    pub start: i64,
    pub end: i64,
}

/// `HttpQueryParameter`: `match` absent = the parameter must be present.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HttpQueryParameter {
    pub name: String,
    #[serde(default, rename = "match", skip_serializing_if = "Option::is_none")]
    pub parameter_match: Option<QueryParameterMatch>,
}

/// `QueryParameterMatch`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QueryParameterMatch {
    pub exact: String,
}

/// `HttpRouteAction` / `GrpcRouteAction` / `TcpRouteAction`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RouteAction {
    #[serde(default)]
    pub weighted_targets: Vec<WeightedTargetSpec>,
}

/// `WeightedTarget` (weight 0–100; port needed when the node has several listeners).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WeightedTargetSpec {
    pub virtual_node: String,
    pub weight: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u32>,
}

/// `HttpRetryPolicy`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HttpRetryPolicy {
    pub max_retries: u64,
    pub per_retry_timeout: Duration,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub http_retry_events: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tcp_retry_events: Vec<String>,
}

/// `GrpcRetryPolicy`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GrpcRetryPolicy {
    pub max_retries: u64,
    pub per_retry_timeout: Duration,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub grpc_retry_events: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub http_retry_events: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tcp_retry_events: Vec<String>,
}

/// `HttpTimeout` (default per request 15 s, `0` disables; idle 300 s).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HttpTimeout {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_request: Option<Duration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle: Option<Duration>,
}

/// `GrpcTimeout` (same shape as `HttpTimeout`).
pub type GrpcTimeout = HttpTimeout;

/// `TcpTimeout`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TcpTimeout {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle: Option<Duration>,
}

/// `GrpcRoute`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GrpcRoute {
    #[serde(default, rename = "match")]
    pub route_match: GrpcRouteMatch,
    pub action: RouteAction,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_policy: Option<GrpcRetryPolicy>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<GrpcTimeout>,
}

/// `GrpcRouteMatch`: no `serviceName` = any service; `methodName` needs `serviceName`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GrpcRouteMatch {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method_name: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub metadata: Vec<GrpcRouteMetadata>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u32>,
}

/// `GrpcRouteMetadata`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GrpcRouteMetadata {
    pub name: String,
    #[serde(default)]
    pub invert: bool,
    #[serde(default, rename = "match", skip_serializing_if = "Option::is_none")]
    pub metadata_match: Option<GrpcMetadataMatchMethod>,
}

/// `GrpcRouteMetadataMatchMethod` (same union as the header match).
pub type GrpcMetadataMatchMethod = HeaderMatchMethod;

/// `TcpRoute`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TcpRoute {
    pub action: RouteAction,
    #[serde(default, rename = "match", skip_serializing_if = "Option::is_none")]
    pub route_match: Option<TcpRouteMatch>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<TcpTimeout>,
}

/// `TcpRouteMatch`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TcpRouteMatch {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u32>,
}
