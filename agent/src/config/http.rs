//! `http(s)://` source: GET with `If-None-Match` on the last ETag (304 = unchanged).
//!
//! Client choice: hyper-util's pooled client (already the proxy's upstream client) with
//! hyper-rustls on the `ring` provider, chosen explicitly because the AWS SDK compiles aws-lc-rs
//! into the same tree and rustls refuses to guess between two providers. reqwest would add a
//! second HTTP stack for one GET.

use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode, header};
use http_body_util::{BodyExt, Empty};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use super::source::{Fetched, SourceError, content_hash};

/// Biggest document accepted from a URL (16 MiB).
const MAX_DOCUMENT_BYTES: usize = 16 << 20;

/// A mesh document served over HTTP(S).
pub struct HttpSource {
    url: String,
    uri: http::Uri,
    client: Client<HttpsConnector<HttpConnector>, Empty<Bytes>>,
    etag: Option<http::HeaderValue>,
    last_hash: Option<String>,
}

impl HttpSource {
    /// A source for `url`.
    pub fn new(url: &str) -> Result<HttpSource, SourceError> {
        let err = |why: String| SourceError::BadUri {
            uri: url.to_string(),
            why,
        };
        let uri: http::Uri = url.parse().map_err(|e| err(format!("not a URL: {e}")))?;
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_provider_and_webpki_roots(rustls::crypto::ring::default_provider())
            .map_err(|e| err(format!("TLS setup: {e}")))?
            .https_or_http()
            .enable_http1()
            .build();
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(https);
        Ok(HttpSource {
            url: url.to_string(),
            uri,
            client,
            etag: None,
            last_hash: None,
        })
    }

    /// Conditional GET.
    pub async fn fetch(&mut self) -> Result<Fetched, SourceError> {
        let err = |why: String| SourceError::Http {
            url: self.url.clone(),
            why,
        };
        let mut req = Request::get(self.uri.clone());
        if let Some(tag) = &self.etag {
            req = req.header(header::IF_NONE_MATCH, tag.clone());
        }
        let req = req
            .body(Empty::new())
            .map_err(|e| err(format!("request: {e}")))?;
        let resp = tokio::time::timeout(Duration::from_secs(30), self.client.request(req))
            .await
            .map_err(|_| err("timed out after 30 s".into()))?
            .map_err(|e| err(format!("{e}")))?;
        let status = resp.status();
        if status == StatusCode::NOT_MODIFIED {
            return Ok(Fetched::NotModified);
        }
        if !status.is_success() {
            return Err(err(format!("HTTP status {status}")));
        }
        let etag = resp.headers().get(header::ETAG).cloned();
        let body = http_body_util::Limited::new(resp.into_body(), MAX_DOCUMENT_BYTES);
        let bytes = body
            .collect()
            .await
            .map_err(|e| err(format!("reading body: {e}")))?
            .to_bytes()
            .to_vec();
        let hash = content_hash(&bytes);
        self.etag = etag.clone();
        if self.last_hash.as_deref() == Some(hash.as_str()) {
            return Ok(Fetched::NotModified);
        }
        self.last_hash = Some(hash.clone());
        let version = etag
            .and_then(|t| t.to_str().ok().map(|s| s.trim_matches('"').to_string()))
            .unwrap_or(hash);
        Ok(Fetched::Document { bytes, version })
    }
}
