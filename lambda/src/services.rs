//! The clients handlers need, each built on first use (no SDK work before the first event that
//! needs it, so cold starts stay small) and then shared by every later invocation.

use taskmesh::ecs::EcsApi;
use tokio::sync::OnceCell;

use crate::custom_resource::response::{DeliveryError, Responder};

/// Lazily built clients.
#[derive(Debug, Default)]
pub struct Services {
    ecs: OnceCell<EcsApi>,
    responder: OnceCell<Responder>,
}

impl Services {
    /// Nothing built yet: the ECS client comes from the standard AWS chain on first use.
    pub fn new() -> Self {
        Self::default()
    }

    /// With a given ECS client (tests point one at a local endpoint).
    pub fn with_ecs(api: EcsApi) -> Self {
        Self {
            ecs: OnceCell::new_with(Some(api)),
            responder: OnceCell::new(),
        }
    }

    /// Whether the ECS client has been built.
    pub fn ecs_initialized(&self) -> bool {
        self.ecs.initialized()
    }

    /// The ECS client, built on first call.
    pub async fn ecs(&self) -> &EcsApi {
        self.ecs.get_or_init(EcsApi::from_env).await
    }

    /// The HTTP client for custom-resource answers, built on first call.
    pub async fn responder(&self) -> Result<&Responder, DeliveryError> {
        self.responder
            .get_or_try_init(|| async { Responder::new() })
            .await
    }
}
