//! Compiled virtual-node listeners: port, protocol and the listener's policies with App Mesh
//! defaults applied (per-request timeout 15 s, idle 300 s, `0` disables; `maxPendingRequests`
//! 2147483647).

use std::time::Duration;

use crate::model::{
    ConnectionPoolSpec, ListenerSpec, ListenerTimeoutSpec, ListenerTlsCertificate,
    ListenerTlsValidationContext, PortProtocol, TlsMode,
};

/// App Mesh's default per-request timeout (route and listener).
pub const DEFAULT_PER_REQUEST_TIMEOUT: Duration = Duration::from_secs(15);
/// App Mesh's default idle timeout (User Guide).
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(300);
/// App Mesh's default `maxPendingRequests` (and its fixed circuit-breaker values).
pub const UNLIMITED: u32 = 2_147_483_647;

/// Listener / route protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    Http,
    Http2,
    Grpc,
    Tcp,
}

impl Protocol {
    /// The API spelling (`http`, `http2`, `grpc`, `tcp`).
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Http => "http",
            Protocol::Http2 => "http2",
            Protocol::Grpc => "grpc",
            Protocol::Tcp => "tcp",
        }
    }

    /// True for the L7 protocols (http, http2, grpc).
    pub fn is_http(self) -> bool {
        !matches!(self, Protocol::Tcp)
    }
}

impl From<PortProtocol> for Protocol {
    fn from(p: PortProtocol) -> Self {
        match p {
            PortProtocol::Http => Protocol::Http,
            PortProtocol::Http2 => Protocol::Http2,
            PortProtocol::Grpc => Protocol::Grpc,
            PortProtocol::Tcp => Protocol::Tcp,
        }
    }
}

/// A virtual-node listener with defaults applied.
#[derive(Debug, Clone, PartialEq)]
pub struct Listener {
    pub port: u16,
    pub protocol: Protocol,
    pub timeout: ListenerTimeouts,
    pub connection_pool: Option<ConnectionPool>,
    pub outlier_detection: Option<OutlierDetection>,
    pub health_check: Option<HealthCheck>,
    pub tls: Option<ListenerTls>,
}

/// Listener timeouts; `None` = disabled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListenerTimeouts {
    /// Per request (HTTP/HTTP2/gRPC): default 15 s; always `None` for TCP.
    pub per_request: Option<Duration>,
    /// Idle: default 300 s.
    pub idle: Option<Duration>,
}

/// Connection-pool limits towards the local app (destination side).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectionPool {
    Tcp {
        max_connections: u32,
    },
    Http {
        max_connections: u32,
        max_pending_requests: u32,
    },
    Http2 {
        max_requests: u32,
    },
    Grpc {
        max_requests: u32,
    },
}

/// Outlier detection (applied by callers).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutlierDetection {
    pub max_server_errors: u64,
    pub interval: Duration,
    pub base_ejection_duration: Duration,
    pub max_ejection_percent: u32,
}

/// Active health check (run by callers against each endpoint).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheck {
    pub protocol: Protocol,
    pub path: Option<Box<str>>,
    pub port: u16,
    pub healthy_threshold: u32,
    pub unhealthy_threshold: u32,
    pub timeout: Duration,
    pub interval: Duration,
}

/// Listener TLS termination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerTls {
    pub mode: TlsMode,
    pub certificate: ListenerTlsCertificate,
    pub validation: Option<ListenerTlsValidationContext>,
}

/// A timeout with App Mesh's rule: absent → `default`, `0` → disabled.
pub(crate) fn timeout_or(d: Option<crate::model::Duration>, default: Duration) -> Option<Duration> {
    match d {
        None => Some(default),
        Some(d) if d.is_zero() => None,
        Some(d) => Some(d.to_std()),
    }
}

impl Listener {
    /// Compiles a validated listener spec.
    pub(crate) fn compile(spec: &ListenerSpec) -> Listener {
        let protocol = Protocol::from(spec.port_mapping.protocol);
        let port = u16::try_from(spec.port_mapping.port).unwrap_or(0);
        let (per_request, idle) = match spec.timeout {
            Some(
                ListenerTimeoutSpec::Http(t)
                | ListenerTimeoutSpec::Http2(t)
                | ListenerTimeoutSpec::Grpc(t),
            ) => (t.per_request, t.idle),
            Some(ListenerTimeoutSpec::Tcp(t)) => (None, t.idle),
            None => (None, None),
        };
        let timeout = ListenerTimeouts {
            per_request: if protocol.is_http() {
                timeout_or(per_request, DEFAULT_PER_REQUEST_TIMEOUT)
            } else {
                None
            },
            idle: timeout_or(idle, DEFAULT_IDLE_TIMEOUT),
        };
        let connection_pool = spec.connection_pool.map(|cp| match cp {
            ConnectionPoolSpec::Tcp { max_connections } => ConnectionPool::Tcp { max_connections },
            ConnectionPoolSpec::Http {
                max_connections,
                max_pending_requests,
            } => ConnectionPool::Http {
                max_connections,
                max_pending_requests: max_pending_requests.unwrap_or(UNLIMITED),
            },
            ConnectionPoolSpec::Http2 { max_requests } => ConnectionPool::Http2 { max_requests },
            ConnectionPoolSpec::Grpc { max_requests } => ConnectionPool::Grpc { max_requests },
        });
        let outlier_detection = spec.outlier_detection.map(|o| OutlierDetection {
            max_server_errors: o.max_server_errors,
            interval: o.interval.to_std(),
            base_ejection_duration: o.base_ejection_duration.to_std(),
            max_ejection_percent: o.max_ejection_percent,
        });
        let health_check = spec.health_check.as_ref().map(|h| HealthCheck {
            protocol: Protocol::from(h.protocol),
            path: h.path.as_deref().map(Into::into),
            port: h.port.and_then(|p| u16::try_from(p).ok()).unwrap_or(port),
            healthy_threshold: h.healthy_threshold,
            unhealthy_threshold: h.unhealthy_threshold,
            timeout: Duration::from_millis(h.timeout_millis),
            interval: Duration::from_millis(h.interval_millis),
        });
        let tls = spec.tls.as_ref().map(|t| ListenerTls {
            mode: t.mode,
            certificate: t.certificate.clone(),
            validation: t.validation.clone(),
        });
        Listener {
            port,
            protocol,
            timeout,
            connection_pool,
            outlier_detection,
            health_check,
            tls,
        }
    }
}
