//! Always answer: run the work with panics caught and a timer set shortly before the Lambda
//! deadline, and turn every outcome (done, failed, panicked, out of time) into a response.

use std::any::Any;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::time::{Duration, SystemTime};

use futures::FutureExt;

use super::response::{CfnResponse, ResponseTarget};

/// Time kept back before the deadline to deliver the answer (at most a quarter of what is left).
pub const DEADLINE_MARGIN: Duration = Duration::from_secs(2);

/// How long the work may run when the invocation must end at `deadline`.
pub fn time_budget(deadline: SystemTime, now: SystemTime) -> Duration {
    let remaining = deadline.duration_since(now).unwrap_or_default();
    remaining.saturating_sub(DEADLINE_MARGIN.min(remaining / 4))
}

/// Runs `work` and always returns a response for `target`: the work's own, or `FAILED` with the
/// error, the panic message, or a timeout reason.
pub async fn answer_within<F>(target: &ResponseTarget, deadline: SystemTime, work: F) -> CfnResponse
where
    F: Future<Output = Result<CfnResponse, String>>,
{
    let budget = time_budget(deadline, SystemTime::now());
    match tokio::time::timeout(budget, AssertUnwindSafe(work).catch_unwind()).await {
        Ok(Ok(Ok(response))) => response,
        Ok(Ok(Err(reason))) => target.failed(reason),
        Ok(Err(panic)) => target.failed(format!(
            "{} {} failed: internal error (panic: {}); nothing more was done",
            target.request_type,
            target.logical_resource_id,
            panic_message(panic.as_ref())
        )),
        Err(_) => target.failed(format!(
            "{} {} did not finish within {:.1}s, shortly before the Lambda deadline; \
             raise the function timeout or retry",
            target.request_type,
            target.logical_resource_id,
            budget.as_secs_f64()
        )),
    }
}

fn panic_message(panic: &(dyn Any + Send)) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "no message".to_string()
    }
}
