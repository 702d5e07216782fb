//! Interceptors that keep ECS task definitions as raw JSON through the AWS SDK.
//!
//! The SDK's typed structs only know the fields of the model they were generated from; a field ECS
//! added later would be dropped on the way through. So the SDK still does what it is good at
//! (credentials, region, endpoint, retries, signing, typed errors), while these two interceptors
//! move the bodies: [`CaptureResponseBody`] keeps the raw body of a successful response, and
//! [`ReplaceRequestBody`] swaps the serialized request body for our own JSON just before signing
//! (so the signature covers exactly the bytes that are sent, on every retry attempt).

use std::sync::{Arc, Mutex, PoisonError};

use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::interceptors::context::{
    AfterDeserializationInterceptorContextRef, BeforeTransmitInterceptorContextMut,
};
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::body::SdkBody;
use aws_smithy_types::config_bag::ConfigBag;

/// Keeps a copy of the body of the last successful (2xx) response of the operation it is attached to.
#[derive(Debug, Clone, Default)]
pub struct CaptureResponseBody {
    captured: Arc<Mutex<Option<Vec<u8>>>>,
}

impl CaptureResponseBody {
    pub fn new() -> Self {
        Self::default()
    }

    /// The captured body, if a successful response was deserialized.
    pub fn take(&self) -> Option<Vec<u8>> {
        self.captured
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }
}

impl Intercept for CaptureResponseBody {
    fn name(&self) -> &'static str {
        "taskmesh::CaptureResponseBody"
    }

    fn read_after_deserialization(
        &self,
        context: &AfterDeserializationInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let response = context.response();
        if !response.status().is_success() {
            return Ok(());
        }
        // Non-streaming operations have their body read into memory before deserialization.
        let bytes = response
            .body()
            .bytes()
            .ok_or("the response body was not buffered; cannot keep the raw task definition")?;
        *self.captured.lock().unwrap_or_else(PoisonError::into_inner) = Some(bytes.to_vec());
        Ok(())
    }
}

/// Replaces the serialized request body with fixed JSON bytes before the request is signed.
#[derive(Debug, Clone)]
pub struct ReplaceRequestBody {
    body: Arc<Vec<u8>>,
}

impl ReplaceRequestBody {
    pub fn new(body: Vec<u8>) -> Self {
        Self {
            body: Arc::new(body),
        }
    }
}

impl Intercept for ReplaceRequestBody {
    fn name(&self) -> &'static str {
        "taskmesh::ReplaceRequestBody"
    }

    fn modify_before_signing(
        &self,
        context: &mut BeforeTransmitInterceptorContextMut<'_>,
        _runtime_components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let request = context.request_mut();
        *request.body_mut() = SdkBody::from(self.body.as_slice().to_vec());
        request
            .headers_mut()
            .insert("content-length", self.body.len().to_string());
        Ok(())
    }
}
