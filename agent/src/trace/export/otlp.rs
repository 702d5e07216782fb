//! OTLP/HTTP exporter: a batch of spans as one `ExportTraceServiceRequest` (the official
//! OpenTelemetry protobuf types from `opentelemetry-proto`, encoded with prost), POSTed as
//! `application/x-protobuf` to `<TASKMESH_OTLP_ENDPOINT>/v1/traces` with the agent's own
//! hyper client (https through rustls with the web PKI roots, as the HTTP config source).
//!
//! Span names and attributes: the name is the virtual service (egress) or the local virtual
//! node (ingress); kind CLIENT (egress) or SERVER (ingress); attributes are the HTTP semantic
//! conventions (`http.request.method`, `http.response.status_code`, `url.path`,
//! `server.address`, body sizes, `client.address`) and the mesh's, under `appmesh.`
//! (`appmesh.virtual_service`, `appmesh.route`, `appmesh.target_virtual_node`,
//! `appmesh.endpoint`, `appmesh.retries`, `appmesh.direction`, `appmesh.response_flags`). The
//! resource carries `service.name` (`<mesh>/<virtual node>`), `appmesh.mesh` and
//! `appmesh.virtual_node`. Status is ERROR for 5xx, and for 4xx on client spans (the
//! OpenTelemetry HTTP conventions).

use std::time::Duration;

use bytes::Bytes;
use http::{Request, header};
use http_body_util::{BodyExt, Full};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{
    AnyValue, InstrumentationScope, KeyValue, any_value::Value,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{
    ResourceSpans, ScopeSpans, Span, Status, span, status,
};
use prost::Message;

use super::super::config::OtlpConfig;
use super::super::span::epoch_nanos;
use super::super::{Identity, SpanData};
use crate::metrics::Direction;

/// Why a batch did not reach the collector.
#[derive(Debug, thiserror::Error)]
pub enum OtlpError {
    /// The TLS set-up failed.
    #[error("TLS set-up for {url}: {why}")]
    Tls {
        /// Endpoint.
        url: String,
        /// Why.
        why: String,
    },
    /// The POST failed.
    #[error("POST {url}: {why}")]
    Send {
        /// Endpoint.
        url: String,
        /// Why.
        why: String,
    },
    /// The collector answered with an error status.
    #[error("POST {url}: collector answered {status}")]
    Status {
        /// Endpoint.
        url: String,
        /// Its status.
        status: http::StatusCode,
    },
    /// No answer within the timeout.
    #[error("POST {url}: no answer within {timeout:?}")]
    Timeout {
        /// Endpoint.
        url: String,
        /// The timeout.
        timeout: Duration,
    },
}

/// Sends batches to one collector.
pub struct OtlpExporter {
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    url: http::Uri,
    timeout: Duration,
    resource: Resource,
    service: String,
    virtual_node: String,
}

fn kv(key: &str, v: Value) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value: Some(AnyValue { value: Some(v) }),
        ..Default::default()
    }
}

fn s(key: &str, v: &str) -> KeyValue {
    kv(key, Value::StringValue(v.to_string()))
}

fn i(key: &str, v: i64) -> KeyValue {
    kv(key, Value::IntValue(v))
}

impl OtlpExporter {
    /// An exporter for `config`.
    pub fn new(config: &OtlpConfig, identity: &Identity) -> Result<OtlpExporter, OtlpError> {
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_provider_and_webpki_roots(rustls::crypto::ring::default_provider())
            .map_err(|e| OtlpError::Tls {
                url: config.url.to_string(),
                why: e.to_string(),
            })?
            .https_or_http()
            .enable_http1()
            .build();
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(https);
        let service = format!("{}/{}", identity.mesh, identity.virtual_node);
        let resource = Resource {
            attributes: vec![
                s("service.name", &service),
                s("appmesh.mesh", &identity.mesh),
                s("appmesh.virtual_node", &identity.virtual_node),
                s("telemetry.sdk.name", "taskmesh-agent"),
                s("telemetry.sdk.version", env!("CARGO_PKG_VERSION")),
            ],
            ..Default::default()
        };
        Ok(OtlpExporter {
            client,
            url: config.url.clone(),
            timeout: config.timeout,
            resource,
            service,
            virtual_node: identity.virtual_node.clone(),
        })
    }

    /// The request for `spans`.
    pub fn request(&self, spans: &[SpanData]) -> ExportTraceServiceRequest {
        ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: Some(self.resource.clone()),
                scope_spans: vec![ScopeSpans {
                    scope: Some(InstrumentationScope {
                        name: "taskmesh-agent".into(),
                        version: env!("CARGO_PKG_VERSION").into(),
                        ..Default::default()
                    }),
                    spans: spans.iter().map(|d| self.span(d)).collect(),
                    schema_url: String::new(),
                }],
                schema_url: String::new(),
            }],
        }
    }

    fn span(&self, d: &SpanData) -> Span {
        let client_span = d.direction == Direction::Egress;
        let name = match d.direction {
            Direction::Egress if !d.virtual_service.is_empty() => d.virtual_service.clone(),
            Direction::Egress => crate::proxy::egress::host_only(&d.authority).to_string(),
            Direction::Ingress => self.virtual_node.clone(),
        };
        let mut attributes = vec![
            s("http.request.method", d.method.as_str()),
            i("http.response.status_code", i64::from(d.status)),
            s("url.path", &d.path),
            s("server.address", &d.authority),
            i("http.request.body.size", d.request_bytes as i64),
            i("http.response.body.size", d.response_bytes as i64),
            s("appmesh.direction", d.direction.as_str()),
            s("appmesh.response_flags", d.flags),
            i("appmesh.retries", i64::from(d.retries)),
        ];
        for (k, v) in [
            ("appmesh.virtual_service", &d.virtual_service),
            ("appmesh.route", &d.route),
            ("appmesh.target_virtual_node", &d.target_node),
        ] {
            if !v.is_empty() {
                attributes.push(s(k, v));
            }
        }
        if let Some(e) = d.endpoint {
            attributes.push(s("appmesh.endpoint", &e.to_string()));
        }
        if let Some(c) = d.client {
            attributes.push(s("client.address", &c.to_string()));
        }
        if d.grpc {
            attributes.push(s("rpc.system", "grpc"));
        }
        let error = d.status >= 500 || (client_span && d.status >= 400) || d.status == 0;
        Span {
            trace_id: d.trace_id.0.to_vec(),
            span_id: d.span_id.0.to_vec(),
            parent_span_id: d.parent.map(|p| p.0.to_vec()).unwrap_or_default(),
            flags: 1,
            name,
            kind: if client_span {
                span::SpanKind::Client as i32
            } else {
                span::SpanKind::Server as i32
            },
            start_time_unix_nano: epoch_nanos(d.start),
            end_time_unix_nano: epoch_nanos(d.end),
            attributes,
            status: Some(Status {
                message: if error {
                    format!("HTTP {} ({})", d.status, d.flags)
                } else {
                    String::new()
                },
                code: if error {
                    status::StatusCode::Error as i32
                } else {
                    status::StatusCode::Unset as i32
                },
            }),
            ..Default::default()
        }
    }

    /// POSTs `spans` as one request.
    pub async fn export(&self, spans: &[SpanData]) -> Result<(), OtlpError> {
        let body = self.request(spans).encode_to_vec();
        let url = || self.url.to_string();
        let req = Request::post(self.url.clone())
            .header(header::CONTENT_TYPE, "application/x-protobuf")
            .header(
                header::USER_AGENT,
                concat!("taskmesh-agent/", env!("CARGO_PKG_VERSION")),
            )
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| OtlpError::Send {
                url: url(),
                why: e.to_string(),
            })?;
        let exchange = async {
            let resp = self
                .client
                .request(req)
                .await
                .map_err(|e| OtlpError::Send {
                    url: url(),
                    why: e.to_string(),
                })?;
            let status = resp.status();
            // Read the (small) answer so the connection can be reused.
            let _ = resp.into_body().collect().await;
            if status.is_success() {
                Ok(())
            } else {
                Err(OtlpError::Status { url: url(), status })
            }
        };
        match tokio::time::timeout(self.timeout, exchange).await {
            Ok(r) => r,
            Err(_) => Err(OtlpError::Timeout {
                url: url(),
                timeout: self.timeout,
            }),
        }
    }

    /// `service.name` of the resource.
    pub fn service_name(&self) -> &str {
        &self.service
    }
}
