//! `VirtualNodeData`: listeners (port, timeouts, connection pool, outlier detection, health
//! check, TLS), backends, backend defaults, service discovery (DNS or Cloud Map) and logging.

use serde::{Deserialize, Serialize};

use super::{Duration, IpPreference, PortMapping, TcpTimeout};
use crate::model::HttpTimeout;

/// The `VirtualNodeData` shape.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VirtualNodeData {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mesh_name: Option<String>,
    pub virtual_node_name: String,
    #[serde(default)]
    pub spec: VirtualNodeSpec,
}

/// `VirtualNodeSpec`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VirtualNodeSpec {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub listeners: Vec<ListenerSpec>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub backends: Vec<Backend>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend_defaults: Option<BackendDefaults>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_discovery: Option<ServiceDiscovery>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logging: Option<LoggingSpec>,
}

/// `Listener` of a virtual node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListenerSpec {
    pub port_mapping: PortMapping,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<ListenerTimeoutSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection_pool: Option<ConnectionPoolSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outlier_detection: Option<OutlierDetectionSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_check: Option<HealthCheckPolicy>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<ListenerTlsSpec>,
}

/// `ListenerTimeout` union (one per protocol).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ListenerTimeoutSpec {
    Http(HttpTimeout),
    Http2(HttpTimeout),
    Grpc(HttpTimeout),
    Tcp(TcpTimeout),
}

/// `VirtualNodeConnectionPool` union (one per protocol).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ConnectionPoolSpec {
    #[serde(rename_all = "camelCase")]
    Tcp { max_connections: u32 },
    #[serde(rename_all = "camelCase")]
    Http {
        max_connections: u32,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        max_pending_requests: Option<u32>,
    },
    #[serde(rename_all = "camelCase")]
    Http2 { max_requests: u32 },
    #[serde(rename_all = "camelCase")]
    Grpc { max_requests: u32 },
}

/// `OutlierDetection` (all members required by the API).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OutlierDetectionSpec {
    pub max_server_errors: u64,
    pub interval: Duration,
    pub base_ejection_duration: Duration,
    pub max_ejection_percent: u32,
}

/// `HealthCheckPolicy`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HealthCheckPolicy {
    pub protocol: super::PortProtocol,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u32>,
    pub healthy_threshold: u32,
    pub unhealthy_threshold: u32,
    pub timeout_millis: u64,
    pub interval_millis: u64,
}

/// `ListenerTls`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListenerTlsSpec {
    pub mode: TlsMode,
    pub certificate: ListenerTlsCertificate,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub validation: Option<ListenerTlsValidationContext>,
}

/// `ListenerTls.mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TlsMode {
    Strict,
    Permissive,
    Disabled,
}

/// `ListenerTlsCertificate` union.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ListenerTlsCertificate {
    #[serde(rename_all = "camelCase")]
    Acm { certificate_arn: String },
    #[serde(rename_all = "camelCase")]
    File {
        certificate_chain: String,
        private_key: String,
    },
    #[serde(rename_all = "camelCase")]
    Sds { secret_name: String },
}

/// `ListenerTlsValidationContext` (mTLS on the listener).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListenerTlsValidationContext {
    pub trust: TlsValidationTrust,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject_alternative_names: Option<SubjectAlternativeNames>,
}

/// Trust union of validation contexts (`acm` only valid on the client side).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum TlsValidationTrust {
    #[serde(rename_all = "camelCase")]
    Acm {
        certificate_authority_arns: Vec<String>,
    },
    #[serde(rename_all = "camelCase")]
    File { certificate_chain: String },
    #[serde(rename_all = "camelCase")]
    Sds { secret_name: String },
}

/// `SubjectAlternativeNames`: `{"match": {"exact": [...]}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubjectAlternativeNames {
    #[serde(rename = "match")]
    pub san_match: SubjectAlternativeNameMatchers,
}

/// `SubjectAlternativeNameMatchers`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubjectAlternativeNameMatchers {
    pub exact: Vec<String>,
}

/// `Backend` union (only `virtualService` exists).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Backend {
    VirtualService(VirtualServiceBackend),
}

impl Backend {
    /// The backend's virtual service name.
    pub fn virtual_service_name(&self) -> &str {
        match self {
            Backend::VirtualService(b) => &b.virtual_service_name,
        }
    }
}

/// `VirtualServiceBackend`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VirtualServiceBackend {
    pub virtual_service_name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_policy: Option<ClientPolicy>,
}

/// `BackendDefaults`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BackendDefaults {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_policy: Option<ClientPolicy>,
}

/// `ClientPolicy`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ClientPolicy {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<ClientPolicyTls>,
}

/// `ClientPolicyTls` (`enforce` defaults to true; empty `ports` = all ports).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClientPolicyTls {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enforce: Option<bool>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate: Option<ClientTlsCertificate>,
    pub validation: TlsValidationContext,
}

impl ClientPolicyTls {
    /// App Mesh default: enforced.
    pub fn enforce(&self) -> bool {
        self.enforce.unwrap_or(true)
    }
}

/// `ClientTlsCertificate` union (client certificate for mTLS).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ClientTlsCertificate {
    #[serde(rename_all = "camelCase")]
    File {
        certificate_chain: String,
        private_key: String,
    },
    #[serde(rename_all = "camelCase")]
    Sds { secret_name: String },
}

/// `TlsValidationContext` (client side).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TlsValidationContext {
    pub trust: TlsValidationTrust,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject_alternative_names: Option<SubjectAlternativeNames>,
}

/// `ServiceDiscovery` union.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ServiceDiscovery {
    Dns(DnsServiceDiscovery),
    AwsCloudMap(AwsCloudMapServiceDiscovery),
}

/// `DnsServiceDiscovery` (`responseType` defaults to `LOADBALANCER`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DnsServiceDiscovery {
    pub hostname: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_type: Option<DnsResponseType>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip_preference: Option<IpPreference>,
}

/// `DnsResponseType`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum DnsResponseType {
    Loadbalancer,
    Endpoints,
}

/// `AwsCloudMapServiceDiscovery`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AwsCloudMapServiceDiscovery {
    pub namespace_name: String,
    pub service_name: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attributes: Vec<AwsCloudMapInstanceAttribute>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip_preference: Option<IpPreference>,
}

/// `AwsCloudMapInstanceAttribute`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AwsCloudMapInstanceAttribute {
    pub key: String,
    pub value: String,
}

/// `Logging`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LoggingSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_log: Option<AccessLog>,
}

/// `AccessLog` union.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum AccessLog {
    File(FileAccessLog),
}

/// `FileAccessLog`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FileAccessLog {
    pub path: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<LoggingFormat>,
}

/// `LoggingFormat` union.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum LoggingFormat {
    Text(String),
    Json(Vec<JsonFormatRef>),
}

/// `JsonFormatRef`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JsonFormatRef {
    pub key: String,
    pub value: String,
}
