//! X-Ray exporter: each span as a segment document sent to the X-Ray daemon over UDP, one
//! datagram per segment, `{"format":"json","version":1}` and a newline before the JSON (the
//! daemon protocol of the X-Ray SDKs).
//!
//! The segment (X-Ray developer guide, "AWS X-Ray segment documents"): `name` is
//! `XRAY_SEGMENT_NAME` or `<mesh>/<virtual node>` (App Mesh's default), `id` the hop's span id,
//! `trace_id` in `1-<8 hex>-<24 hex>` form, `parent_id` the caller's span, `start_time` and
//! `end_time` in epoch seconds, `origin` `AWS::AppMesh::Proxy`, `http.request` (method, url,
//! client_ip) and `http.response` (status, content_length), `error` for 4xx, `throttle` for
//! 429, `fault` for 5xx, and the mesh attributes as `annotations` (searchable in X-Ray filter
//! expressions): `mesh`, `virtual_node`, `direction`, `virtual_service`, `route`,
//! `target_virtual_node`, `endpoint`, `retries`, `response_flags`, `request_bytes`,
//! `response_bytes`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use serde_json::{Map, Value, json};
use tokio::net::UdpSocket;

use super::super::config::XrayConfig;
use super::super::span::epoch_secs;
use super::super::{Identity, SpanData};

/// The daemon protocol's header line.
pub const HEADER: &str = "{\"format\":\"json\",\"version\":1}\n";

/// Longest `http.request.url` the segment schema accepts.
const MAX_URL: usize = 250;
/// Longest annotation value the segment schema accepts.
const MAX_ANNOTATION: usize = 1000;

/// Why segments were not sent.
#[derive(Debug, thiserror::Error)]
pub enum XrayError {
    /// No UDP socket.
    #[error("UDP socket for the X-Ray daemon: {0}")]
    Socket(std::io::Error),
    /// A send failed.
    #[error("sending a segment to the X-Ray daemon at {daemon}: {source}")]
    Send {
        /// Daemon address.
        daemon: SocketAddr,
        /// The error.
        source: std::io::Error,
    },
}

/// Sends segments to one daemon.
pub struct XrayExporter {
    socket: UdpSocket,
    daemon: SocketAddr,
    name: String,
    identity: Identity,
}

/// Keeps the characters a segment name may hold (letters, digits, whitespace and
/// `_.:/%&#=+\-@`), at most 200.
pub fn segment_name(raw: &str) -> String {
    let name: String = raw
        .chars()
        .map(|c| {
            if c.is_alphanumeric() || c == ' ' || "_.:/%&#=+-@".contains(c) {
                c
            } else {
                '_'
            }
        })
        .take(200)
        .collect();
    if name.is_empty() {
        "taskmesh".into()
    } else {
        name
    }
}

fn clip(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

impl XrayExporter {
    /// Binds a UDP socket of the daemon's address family.
    pub async fn new(config: &XrayConfig, identity: &Identity) -> Result<XrayExporter, XrayError> {
        let local = match config.daemon {
            SocketAddr::V4(_) => SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0),
            SocketAddr::V6(_) => SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), 0),
        };
        let socket = UdpSocket::bind(local).await.map_err(XrayError::Socket)?;
        let name = segment_name(
            config
                .segment_name
                .as_deref()
                .unwrap_or(&format!("{}/{}", identity.mesh, identity.virtual_node)),
        );
        Ok(XrayExporter {
            socket,
            daemon: config.daemon,
            name,
            identity: identity.clone(),
        })
    }

    /// The segment document of `d`.
    pub fn segment(&self, d: &SpanData) -> Value {
        let mut annotations = Map::new();
        let mut note = |k: &str, v: &str| {
            if !v.is_empty() {
                annotations.insert(k.into(), Value::String(clip(v, MAX_ANNOTATION).into()));
            }
        };
        note("mesh", &self.identity.mesh);
        note("virtual_node", &self.identity.virtual_node);
        note("direction", d.direction.as_str());
        note("virtual_service", &d.virtual_service);
        note("route", &d.route);
        note("target_virtual_node", &d.target_node);
        note("response_flags", d.flags);
        if let Some(e) = d.endpoint {
            note("endpoint", &e.to_string());
        }
        annotations.insert("retries".into(), json!(d.retries));
        annotations.insert("request_bytes".into(), json!(d.request_bytes));
        annotations.insert("response_bytes".into(), json!(d.response_bytes));
        let url = format!("http://{}{}", d.authority, d.path);
        let mut request = Map::new();
        request.insert("method".into(), json!(d.method.as_str()));
        request.insert("url".into(), json!(clip(&url, MAX_URL)));
        if let Some(c) = d.client {
            request.insert("client_ip".into(), json!(c.to_string()));
        }
        let start = epoch_secs(d.start);
        let mut seg = Map::new();
        seg.insert("name".into(), json!(self.name));
        seg.insert("id".into(), json!(d.span_id.to_hex()));
        seg.insert("trace_id".into(), json!(d.trace_id.to_xray()));
        if let Some(p) = d.parent {
            seg.insert("parent_id".into(), json!(p.to_hex()));
        }
        seg.insert("start_time".into(), json!(start));
        seg.insert("end_time".into(), json!(epoch_secs(d.end).max(start)));
        seg.insert("origin".into(), json!("AWS::AppMesh::Proxy"));
        seg.insert(
            "http".into(),
            json!({
                "request": request,
                "response": {"status": d.status, "content_length": d.response_bytes},
            }),
        );
        if (400..500).contains(&d.status) {
            seg.insert("error".into(), json!(true));
        }
        if d.status == 429 {
            seg.insert("throttle".into(), json!(true));
        }
        if d.status >= 500 || d.status == 0 {
            seg.insert("fault".into(), json!(true));
        }
        seg.insert("annotations".into(), Value::Object(annotations));
        seg.insert(
            "aws".into(),
            json!({"app_mesh": {
                "mesh_name": self.identity.mesh,
                "virtual_node_name": self.identity.virtual_node,
            }}),
        );
        Value::Object(seg)
    }

    /// Sends one datagram per span; the first failure is returned after trying them all.
    pub async fn export(&self, spans: &[SpanData]) -> Result<(), XrayError> {
        let mut first_err = None;
        let mut buf = Vec::with_capacity(1024);
        for d in spans {
            buf.clear();
            buf.extend_from_slice(HEADER.as_bytes());
            if serde_json::to_writer(&mut buf, &self.segment(d)).is_err() {
                continue;
            }
            if let Err(source) = self.socket.send_to(&buf, self.daemon).await {
                first_err.get_or_insert(XrayError::Send {
                    daemon: self.daemon,
                    source,
                });
            }
        }
        match first_err {
            None => Ok(()),
            Some(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segment_names_keep_only_allowed_characters() {
        assert_eq!(
            segment_name("colorapp/colorteller-white"),
            "colorapp/colorteller-white"
        );
        assert_eq!(segment_name("a<b>\"c"), "a_b__c");
        assert_eq!(segment_name(""), "taskmesh");
        assert_eq!(segment_name(&"x".repeat(300)).len(), 200);
        assert_eq!(clip("ab€", 3), "ab");
    }
}
