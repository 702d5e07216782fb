//! Tracing settings: the `aws-appmesh-envoy` X-Ray names (`ENABLE_ENVOY_XRAY_TRACING`,
//! `XRAY_DAEMON_PORT`, `XRAY_SAMPLING_RATE`, `XRAY_SEGMENT_NAME`), the X-Ray SDKs'
//! `AWS_XRAY_DAEMON_ADDRESS`, and taskmesh's own `TASKMESH_OTLP_ENDPOINT` and queue knobs, each
//! also a `--flag`; [`TraceSettings::resolve`] checks them into a [`TraceConfig`].

use std::net::{IpAddr, Ipv4Addr, SocketAddr, ToSocketAddrs};
use std::time::Duration;

use clap::Args;

/// App Mesh's default sampling rate (5 %).
pub const DEFAULT_SAMPLING: f64 = 0.05;
/// The X-Ray daemon's default UDP port.
pub const DEFAULT_XRAY_PORT: u16 = 2000;

/// Tracing knobs of `taskmesh-agent run` (flattened into [`crate::Settings`]).
#[derive(Args, Debug, Clone, Default)]
pub struct TraceSettings {
    /// `1` sends a segment per sampled request to the X-Ray daemon (UDP).
    #[arg(long = "xray-tracing", env = "ENABLE_ENVOY_XRAY_TRACING")]
    pub xray: Option<String>,

    /// The X-Ray daemon, `host:port` or the SDKs' `udp:host:port tcp:host:port` form.
    #[arg(long = "xray-daemon-address", env = "AWS_XRAY_DAEMON_ADDRESS")]
    pub xray_daemon_address: Option<String>,

    /// The X-Ray daemon's port on 127.0.0.1 when `AWS_XRAY_DAEMON_ADDRESS` is not set (2000).
    #[arg(long = "xray-daemon-port", env = "XRAY_DAEMON_PORT")]
    pub xray_daemon_port: Option<String>,

    /// Fraction of new traces sampled, 0 to 1 (App Mesh default 0.05).
    #[arg(long = "xray-sampling-rate", env = "XRAY_SAMPLING_RATE")]
    pub xray_sampling_rate: Option<String>,

    /// Fraction of new traces sampled, 0 to 1; wins over `XRAY_SAMPLING_RATE`.
    #[arg(long = "trace-sampling", env = "TASKMESH_TRACE_SAMPLING")]
    pub sampling: Option<String>,

    /// X-Ray segment name (default `<mesh>/<virtual node>`).
    #[arg(long = "xray-segment-name", env = "XRAY_SEGMENT_NAME")]
    pub segment_name: Option<String>,

    /// OpenTelemetry collector base URL; spans are POSTed to `<endpoint>/v1/traces` (OTLP/HTTP protobuf).
    #[arg(long = "otlp-endpoint", env = "TASKMESH_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,

    /// Finished spans waiting for export; more are dropped and counted (4096).
    #[arg(long = "trace-queue", env = "TASKMESH_TRACE_QUEUE")]
    pub queue: Option<String>,

    /// Most spans per export (512).
    #[arg(long = "trace-batch", env = "TASKMESH_TRACE_BATCH")]
    pub batch: Option<String>,

    /// Longest a span waits for its batch to fill, in milliseconds (1000).
    #[arg(long = "trace-flush-ms", env = "TASKMESH_TRACE_FLUSH_MS")]
    pub flush_ms: Option<String>,

    /// Longest one OTLP export may take, in milliseconds (10000).
    #[arg(long = "otlp-timeout-ms", env = "TASKMESH_OTLP_TIMEOUT_MS")]
    pub otlp_timeout_ms: Option<String>,
}

/// Checked tracing configuration (tracing is on when at least one exporter is set).
#[derive(Debug, Clone, PartialEq)]
pub struct TraceConfig {
    /// Fraction of new traces sampled.
    pub sampling: f64,
    /// X-Ray daemon address and segment name, when X-Ray is on.
    pub xray: Option<XrayConfig>,
    /// `<endpoint>/v1/traces`, when OTLP is on.
    pub otlp: Option<OtlpConfig>,
    /// Queue capacity (spans).
    pub queue: usize,
    /// Most spans per export.
    pub batch: usize,
    /// Longest wait for a batch to fill.
    pub flush: Duration,
}

/// X-Ray exporter settings.
#[derive(Debug, Clone, PartialEq)]
pub struct XrayConfig {
    /// The daemon's UDP address.
    pub daemon: SocketAddr,
    /// Segment name; `None`: `<mesh>/<virtual node>`.
    pub segment_name: Option<String>,
}

/// OTLP/HTTP exporter settings.
#[derive(Debug, Clone, PartialEq)]
pub struct OtlpConfig {
    /// Full URL of the traces endpoint.
    pub url: http::Uri,
    /// Longest one export may take.
    pub timeout: Duration,
}

/// A tracing setting that cannot be used.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum TraceConfigError {
    /// Not a rate between 0 and 1.
    #[error("{name}={value:?}: expected a sampling rate between 0 and 1 (e.g. 0.05)")]
    Rate {
        /// The variable.
        name: &'static str,
        /// Its value.
        value: String,
    },
    /// Not a positive whole number.
    #[error("{name}={value:?}: expected a positive whole number")]
    Number {
        /// The variable.
        name: &'static str,
        /// Its value.
        value: String,
    },
    /// A switch other than 1/0/true/false.
    #[error("ENABLE_ENVOY_XRAY_TRACING={0:?}: expected 1 or 0")]
    Switch(String),
    /// The daemon address does not resolve to a UDP address.
    #[error("{name}={value:?}: {why}")]
    Address {
        /// The variable.
        name: &'static str,
        /// Its value.
        value: String,
        /// Why.
        why: String,
    },
    /// The OTLP endpoint is not an http(s) URL.
    #[error("TASKMESH_OTLP_ENDPOINT={value:?}: {why}")]
    Endpoint {
        /// Its value.
        value: String,
        /// Why.
        why: String,
    },
}

fn set(v: &Option<String>) -> Option<&str> {
    v.as_deref().map(str::trim).filter(|s| !s.is_empty())
}

fn rate(name: &'static str, v: &str) -> Result<f64, TraceConfigError> {
    match v.parse::<f64>() {
        Ok(r) if (0.0..=1.0).contains(&r) => Ok(r),
        _ => Err(TraceConfigError::Rate {
            name,
            value: v.to_string(),
        }),
    }
}

fn number(name: &'static str, v: &Option<String>, default: u64) -> Result<u64, TraceConfigError> {
    match set(v) {
        None => Ok(default),
        Some(s) => match s.parse::<u64>() {
            Ok(n) if n > 0 => Ok(n),
            _ => Err(TraceConfigError::Number {
                name,
                value: s.to_string(),
            }),
        },
    }
}

/// The UDP address in `AWS_XRAY_DAEMON_ADDRESS` (`host:port`, or `udp:host:port tcp:host:port`).
pub fn daemon_address(value: &str) -> Result<SocketAddr, TraceConfigError> {
    let err = |why: &str| TraceConfigError::Address {
        name: "AWS_XRAY_DAEMON_ADDRESS",
        value: value.to_string(),
        why: why.to_string(),
    };
    let parts: Vec<&str> = value.split_whitespace().collect();
    let udp = match parts.as_slice() {
        [one] => one.strip_prefix("udp:").unwrap_or(one),
        many => many
            .iter()
            .find_map(|p| p.strip_prefix("udp:"))
            .ok_or_else(|| err("two addresses given but none is udp:host:port"))?,
    };
    udp.to_socket_addrs()
        .map_err(|e| err(&format!("not host:port ({e})")))?
        .next()
        .ok_or_else(|| err("the host name has no address"))
}

impl TraceSettings {
    /// `Ok(None)` when no exporter is configured (tracing off).
    pub fn resolve(&self) -> Result<Option<TraceConfig>, TraceConfigError> {
        let xray_on = match set(&self.xray) {
            None | Some("0") | Some("false") => false,
            Some("1") | Some("true") => true,
            Some(other) => return Err(TraceConfigError::Switch(other.to_string())),
        };
        let xray = if xray_on {
            let daemon = match set(&self.xray_daemon_address) {
                Some(a) => daemon_address(a)?,
                None => {
                    let port = match set(&self.xray_daemon_port) {
                        None => DEFAULT_XRAY_PORT,
                        Some(p) => p.parse::<u16>().ok().filter(|p| *p > 0).ok_or_else(|| {
                            TraceConfigError::Number {
                                name: "XRAY_DAEMON_PORT",
                                value: p.to_string(),
                            }
                        })?,
                    };
                    SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port)
                }
            };
            Some(XrayConfig {
                daemon,
                segment_name: set(&self.segment_name).map(str::to_string),
            })
        } else {
            None
        };
        let otlp = match set(&self.otlp_endpoint) {
            None => None,
            Some(base) => {
                let err = |why: &str| TraceConfigError::Endpoint {
                    value: base.to_string(),
                    why: why.to_string(),
                };
                let full = format!("{}/v1/traces", base.trim_end_matches('/'));
                let url: http::Uri = full.parse().map_err(|e| err(&format!("not a URL: {e}")))?;
                if !matches!(url.scheme_str(), Some("http") | Some("https"))
                    || url.authority().is_none()
                {
                    return Err(err("expected http://host:port or https://host:port"));
                }
                Some(OtlpConfig {
                    url,
                    timeout: Duration::from_millis(number(
                        "TASKMESH_OTLP_TIMEOUT_MS",
                        &self.otlp_timeout_ms,
                        10_000,
                    )?),
                })
            }
        };
        let sampling = match (set(&self.sampling), set(&self.xray_sampling_rate)) {
            (Some(v), _) => rate("TASKMESH_TRACE_SAMPLING", v)?,
            (None, Some(v)) => rate("XRAY_SAMPLING_RATE", v)?,
            (None, None) => DEFAULT_SAMPLING,
        };
        let queue = number("TASKMESH_TRACE_QUEUE", &self.queue, 4096)?;
        let batch = number("TASKMESH_TRACE_BATCH", &self.batch, 512)?;
        let flush = number("TASKMESH_TRACE_FLUSH_MS", &self.flush_ms, 1000)?;
        if xray.is_none() && otlp.is_none() {
            return Ok(None);
        }
        Ok(Some(TraceConfig {
            sampling,
            xray,
            otlp,
            queue: usize::try_from(queue).unwrap_or(usize::MAX),
            batch: usize::try_from(batch).unwrap_or(usize::MAX),
            flush: Duration::from_millis(flush),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s() -> TraceSettings {
        TraceSettings::default()
    }

    #[test]
    fn off_unless_an_exporter_is_set() {
        assert_eq!(s().resolve().unwrap(), None);
        let mut t = s();
        t.xray = Some("0".into());
        t.sampling = Some("1".into());
        assert_eq!(t.resolve().unwrap(), None);
    }

    #[test]
    fn xray_uses_the_envoy_names_and_defaults() {
        let mut t = s();
        t.xray = Some("1".into());
        let c = t.resolve().unwrap().unwrap();
        let x = c.xray.unwrap();
        assert_eq!(x.daemon, "127.0.0.1:2000".parse().unwrap());
        assert_eq!(x.segment_name, None);
        t.segment_name = Some("colorapp/front".into());
        assert_eq!(
            t.resolve()
                .unwrap()
                .unwrap()
                .xray
                .unwrap()
                .segment_name
                .as_deref(),
            Some("colorapp/front")
        );
        assert_eq!(c.sampling, 0.05);
        assert_eq!((c.queue, c.batch), (4096, 512));
        assert_eq!(c.flush, Duration::from_secs(1));
        t.xray_daemon_port = Some("2100".into());
        t.xray_sampling_rate = Some("0.5".into());
        let c = t.resolve().unwrap().unwrap();
        assert_eq!(c.xray.unwrap().daemon.port(), 2100);
        assert_eq!(c.sampling, 0.5);
        t.sampling = Some("1".into());
        assert_eq!(t.resolve().unwrap().unwrap().sampling, 1.0);
        t.xray_daemon_address = Some("tcp:127.0.0.1:2001 udp:127.0.0.1:2002".into());
        assert_eq!(
            t.resolve().unwrap().unwrap().xray.unwrap().daemon.port(),
            2002
        );
        t.xray_daemon_address = Some("127.0.0.1:2003".into());
        assert_eq!(
            t.resolve().unwrap().unwrap().xray.unwrap().daemon.port(),
            2003
        );
    }

    #[test]
    fn bad_values_name_the_variable() {
        let mut t = s();
        t.xray = Some("yes".into());
        assert_eq!(
            t.resolve().unwrap_err().to_string(),
            "ENABLE_ENVOY_XRAY_TRACING=\"yes\": expected 1 or 0"
        );
        t.xray = Some("1".into());
        t.xray_sampling_rate = Some("1.5".into());
        assert!(
            t.resolve()
                .unwrap_err()
                .to_string()
                .starts_with("XRAY_SAMPLING_RATE=\"1.5\"")
        );
        t.xray_sampling_rate = None;
        t.xray_daemon_address = Some("tcp:127.0.0.1:2000".into());
        assert!(matches!(t.resolve(), Err(TraceConfigError::Address { .. })));
        t.xray_daemon_address = None;
        t.queue = Some("0".into());
        assert!(
            t.resolve()
                .unwrap_err()
                .to_string()
                .contains("TASKMESH_TRACE_QUEUE")
        );
        let mut t = s();
        t.otlp_endpoint = Some("collector:4318".into());
        assert!(matches!(
            t.resolve(),
            Err(TraceConfigError::Endpoint { .. })
        ));
        t.otlp_endpoint = Some("http://127.0.0.1:4318/".into());
        let c = t.resolve().unwrap().unwrap();
        assert_eq!(c.otlp.unwrap().url, "http://127.0.0.1:4318/v1/traces");
        assert!(c.xray.is_none());
    }
}
