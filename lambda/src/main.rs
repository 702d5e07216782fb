//! `bootstrap`: wires the Lambda runtime to [`taskmesh_lambda::dispatch`]. No AWS client is built
//! here; each is made on the first event that needs it.

use lambda_runtime::{Error, LambdaEvent, run, service_fn, tracing};
use serde_json::Value;
use taskmesh_lambda::{Services, dispatch, invocation_deadline};

#[tokio::main]
async fn main() -> Result<(), Error> {
    tracing::init_default_subscriber();
    let services = Services::new();
    let services = &services;
    run(service_fn(move |event: LambdaEvent<Value>| async move {
        let deadline = invocation_deadline(event.context.deadline, std::time::SystemTime::now());
        // Boxed: the handler future is deep; keep the runtime's future type small.
        Box::pin(dispatch(event.payload, deadline, services)).await
    }))
    .await
}
