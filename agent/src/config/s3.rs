//! `s3://bucket/key` source: GetObject with `If-None-Match` on the last ETag (aws-sdk-s3).
//! Endpoint, region and credentials come from the standard AWS environment; with a custom
//! endpoint (`AWS_ENDPOINT_URL[_S3]`, e.g. a local S3) path-style addressing is used.

use super::source::{Fetched, SourceError};

/// A mesh document in S3.
pub struct S3Source {
    client: aws_sdk_s3::Client,
    bucket: String,
    key: String,
    etag: Option<String>,
}

impl S3Source {
    /// A source for `bucket`/`key`, configured from the environment.
    pub async fn new(bucket: &str, key: &str) -> S3Source {
        let shared = aws_config::load_from_env().await;
        let custom_endpoint = std::env::var_os("AWS_ENDPOINT_URL_S3").is_some()
            || std::env::var_os("AWS_ENDPOINT_URL").is_some();
        let conf = aws_sdk_s3::config::Builder::from(&shared)
            .force_path_style(custom_endpoint)
            .build();
        S3Source {
            client: aws_sdk_s3::Client::from_conf(conf),
            bucket: bucket.to_string(),
            key: key.to_string(),
            etag: None,
        }
    }

    /// Conditional GetObject.
    pub async fn fetch(&mut self) -> Result<Fetched, SourceError> {
        let err = |why: String| SourceError::S3 {
            bucket: self.bucket.clone(),
            key: self.key.clone(),
            why,
        };
        let mut req = self.client.get_object().bucket(&self.bucket).key(&self.key);
        if let Some(tag) = &self.etag {
            req = req.if_none_match(tag);
        }
        let out = match req.send().await {
            Ok(out) => out,
            Err(e) => {
                let status = e.raw_response().map(|r| r.status().as_u16());
                if status == Some(304) {
                    return Ok(Fetched::NotModified);
                }
                let detail = aws_sdk_s3::error::DisplayErrorContext(&e).to_string();
                return Err(err(match status {
                    Some(code) => format!("HTTP {code}: {detail}"),
                    None => detail,
                }));
            }
        };
        let etag = out.e_tag().map(str::to_string);
        let bytes = out
            .body
            .collect()
            .await
            .map_err(|e| err(format!("reading body: {e}")))?
            .into_bytes()
            .to_vec();
        if etag.is_some() && etag == self.etag {
            return Ok(Fetched::NotModified);
        }
        self.etag = etag.clone();
        let version = etag
            .map(|t| t.trim_matches('"').to_string())
            .unwrap_or_else(|| super::source::content_hash(&bytes));
        Ok(Fetched::Document { bytes, version })
    }
}
