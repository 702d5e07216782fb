//! Errors of the ECS registration path: AWS failures name the operation and the AWS error code.

use crate::TransformError;

/// What can go wrong while reading, meshing and registering a task definition.
#[derive(thiserror::Error, Debug)]
pub enum EcsError {
    /// ECS (or the endpoint in front of it) answered with an error.
    #[error("{operation} failed: {code}: {message}")]
    Aws {
        operation: &'static str,
        code: String,
        message: String,
    },
    /// The call never got an answer (connection, timeout, credentials, signing).
    #[error("{operation} failed: {message}")]
    Dispatch {
        operation: &'static str,
        message: String,
    },
    /// ECS answered 2xx with a body we cannot use.
    #[error("{operation} returned an unusable response: {message}")]
    Response {
        operation: &'static str,
        message: String,
    },
    /// The task definition could not be meshed.
    #[error(transparent)]
    Transform(Box<TransformError>),
}

impl From<TransformError> for EcsError {
    fn from(e: TransformError) -> Self {
        EcsError::Transform(Box::new(e))
    }
}

impl EcsError {
    /// The CLI exit code: 2 for bad input (the transformer said no), 3 for AWS and I/O failures.
    pub fn exit_code(&self) -> i32 {
        match self {
            EcsError::Transform(_) => 2,
            _ => 3,
        }
    }

    /// The AWS error code, when AWS sent one (e.g. `ClientException`).
    pub fn aws_code(&self) -> Option<&str> {
        match self {
            EcsError::Aws { code, .. } => Some(code),
            _ => None,
        }
    }

    pub(crate) fn from_sdk<E, R>(
        operation: &'static str,
        err: aws_smithy_runtime_api::client::result::SdkError<E, R>,
    ) -> Self
    where
        E: aws_sdk_ecs::error::ProvideErrorMetadata + std::error::Error + 'static,
        R: std::fmt::Debug,
    {
        use aws_sdk_ecs::error::{DisplayErrorContext, ProvideErrorMetadata};
        match err.code() {
            Some(code) => EcsError::Aws {
                operation,
                code: code.to_string(),
                message: err
                    .message()
                    .map(str::to_string)
                    .unwrap_or_else(|| DisplayErrorContext(&err).to_string()),
            },
            None => EcsError::Dispatch {
                operation,
                message: DisplayErrorContext(&err).to_string(),
            },
        }
    }
}
