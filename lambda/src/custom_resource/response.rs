//! The answer to CloudFormation: the response object and its PUT to the pre-signed `ResponseURL`
//! (no Content-Type, so the S3 signature matches; body at most 4096 bytes).

use std::collections::BTreeMap;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::Serialize;
use serde_json::Value;

/// The largest response body CloudFormation accepts.
pub const MAX_BODY_BYTES: usize = 4096;

/// `SUCCESS` or `FAILED`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Status {
    Success,
    Failed,
}

/// Where the answer goes and what it must echo: read leniently from the raw event, so even a
/// request that fails to parse gets an answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseTarget {
    pub response_url: String,
    pub stack_id: String,
    pub request_id: String,
    pub logical_resource_id: String,
    pub request_type: String,
    pub physical_resource_id: Option<String>,
}

impl ResponseTarget {
    /// Reads the fields from a raw custom-resource event; `None` without a `ResponseURL`.
    pub fn from_event(event: &Value) -> Option<Self> {
        let s = |k: &str| event.get(k).and_then(Value::as_str).map(str::to_string);
        Some(Self {
            response_url: s("ResponseURL")?,
            stack_id: s("StackId").unwrap_or_default(),
            request_id: s("RequestId").unwrap_or_default(),
            logical_resource_id: s("LogicalResourceId").unwrap_or_default(),
            request_type: s("RequestType").unwrap_or_default(),
            physical_resource_id: s("PhysicalResourceId").filter(|id| !id.is_empty()),
        })
    }

    /// The id to answer with when the work failed: the request's own id (Update, Delete) or, for a
    /// failed Create, a marker that the rollback Delete recognises and skips.
    pub fn failure_physical_id(&self) -> String {
        self.physical_resource_id
            .clone()
            .unwrap_or_else(|| format!("{CREATE_FAILED_MARKER}{}", self.request_id))
    }

    /// A `FAILED` answer with `reason`.
    pub fn failed(&self, reason: impl Into<String>) -> CfnResponse {
        CfnResponse {
            status: Status::Failed,
            reason: Some(reason.into()),
            physical_resource_id: self.failure_physical_id(),
            stack_id: self.stack_id.clone(),
            request_id: self.request_id.clone(),
            logical_resource_id: self.logical_resource_id.clone(),
            no_echo: false,
            data: BTreeMap::new(),
        }
    }

    /// A `SUCCESS` answer.
    pub fn succeeded(
        &self,
        physical_resource_id: String,
        reason: Option<String>,
        data: BTreeMap<String, String>,
    ) -> CfnResponse {
        CfnResponse {
            status: Status::Success,
            reason,
            physical_resource_id,
            stack_id: self.stack_id.clone(),
            request_id: self.request_id.clone(),
            logical_resource_id: self.logical_resource_id.clone(),
            no_echo: false,
            data,
        }
    }
}

/// The PhysicalResourceId prefix of a Create that failed (nothing was registered).
pub const CREATE_FAILED_MARKER: &str = "taskmesh:create-failed:";

/// The response object (crpg-ref-responses).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct CfnResponse {
    pub status: Status,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub physical_resource_id: String,
    pub stack_id: String,
    pub request_id: String,
    pub logical_resource_id: String,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub no_echo: bool,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub data: BTreeMap<String, String>,
}

impl CfnResponse {
    /// The JSON body, at most [`MAX_BODY_BYTES`]: a long `Reason` is shortened (marked with `…`).
    pub fn to_body(&self) -> Vec<u8> {
        let body = to_json(self);
        if body.len() <= MAX_BODY_BYTES {
            return body;
        }
        let mut shorter = self.clone();
        let reason = shorter.reason.take().unwrap_or_default();
        let with_prefix = |shorter: &mut CfnResponse, len: usize| {
            shorter.reason = Some(format!("{}…", &reason[..floor_char_boundary(&reason, len)]));
            to_json(shorter)
        };
        // The longest prefix of the reason that fits (JSON escaping makes the body length a
        // monotonic but not linear function of the prefix length): binary search.
        let (mut lo, mut hi) = (0, reason.len());
        while lo < hi {
            let mid = (lo + hi).div_ceil(2);
            if with_prefix(&mut shorter, mid).len() <= MAX_BODY_BYTES {
                lo = mid;
            } else {
                hi = mid - 1;
            }
        }
        let body = with_prefix(&mut shorter, lo);
        if body.len() <= MAX_BODY_BYTES {
            return body;
        }
        // Even an empty reason does not fit: the data is too large; drop it.
        shorter.data.clear();
        to_json(&shorter)
    }
}

fn floor_char_boundary(s: &str, mut index: usize) -> usize {
    index = index.min(s.len());
    while !s.is_char_boundary(index) {
        index -= 1;
    }
    index
}

fn to_json(r: &CfnResponse) -> Vec<u8> {
    // Serializing plain strings and maps cannot fail.
    serde_json::to_vec(r).unwrap_or_default()
}

/// Why an answer could not be delivered (the invocation then fails so Lambda retries it).
#[derive(thiserror::Error, Debug)]
pub enum DeliveryError {
    #[error("cannot set up TLS for the ResponseURL: {0}")]
    Tls(String),
    #[error("the ResponseURL is not a valid URL: {0}")]
    Url(String),
    #[error("PUT to the ResponseURL failed: {0}")]
    Transport(String),
    #[error("PUT to the ResponseURL answered HTTP {status}: {body}")]
    Status { status: u16, body: String },
}

/// PUTs answers to pre-signed URLs (HTTPS, or HTTP for local endpoints).
#[derive(Clone)]
pub struct Responder {
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
}

impl std::fmt::Debug for Responder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Responder")
    }
}

impl Responder {
    pub fn new() -> Result<Self, DeliveryError> {
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_provider_and_webpki_roots(rustls::crypto::ring::default_provider())
            .map_err(|e| DeliveryError::Tls(e.to_string()))?
            .https_or_http()
            .enable_http1()
            .build();
        Ok(Self {
            client: Client::builder(TokioExecutor::new()).build(https),
        })
    }

    /// PUT `response` to `url`: body only, Content-Length set, no Content-Type.
    pub async fn put(&self, url: &str, response: &CfnResponse) -> Result<(), DeliveryError> {
        let body = response.to_body();
        let uri: hyper::Uri = url
            .parse()
            .map_err(|e| DeliveryError::Url(format!("{e}")))?;
        let request = hyper::Request::put(uri)
            .header(hyper::header::CONTENT_LENGTH, body.len())
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| DeliveryError::Url(e.to_string()))?;
        let answer = self
            .client
            .request(request)
            .await
            .map_err(|e| DeliveryError::Transport(error_chain(&e)))?;
        let status = answer.status();
        let text = answer
            .into_body()
            .collect()
            .await
            .map(|b| String::from_utf8_lossy(&b.to_bytes()).into_owned())
            .unwrap_or_default();
        if status.is_success() {
            Ok(())
        } else {
            Err(DeliveryError::Status {
                status: status.as_u16(),
                body: text.chars().take(512).collect(),
            })
        }
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}
