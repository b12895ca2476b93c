//! The `noop` executor: sleeps as asked, fails the first N attempts as asked. Benchmarks,
//! canaries and tests use it.

use std::time::Duration;

use gantry_queue::{ClaimedJob, ErrorClass, HandlerFuture, JobContext, JobKind, JobOutcome, Payload};

use super::Executor;

/// Runs `noop` jobs.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoopExecutor;

impl Executor for NoopExecutor {
    fn kind(&self) -> JobKind {
        JobKind::Noop
    }

    fn run(&self, job: ClaimedJob, ctx: JobContext) -> HandlerFuture {
        Box::pin(async move {
            let Payload::Noop(p) = &job.spec.body else {
                return JobOutcome::Failed {
                    class: ErrorClass::Permanent,
                    message: "not a noop payload".into(),
                };
            };
            if p.sleep_ms > 0 {
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(p.sleep_ms)) => {}
                    _ = ctx.cancel.cancelled() => {
                        return JobOutcome::Failed { class: ErrorClass::Cancelled, message: "stopped".into() };
                    }
                }
            }
            if job.attempt <= p.fail_attempts {
                return JobOutcome::Failed {
                    class: p.fail_class.unwrap_or(ErrorClass::Retryable),
                    message: format!("scripted failure of attempt {}", job.attempt),
                };
            }
            JobOutcome::Succeeded(None)
        })
    }
}
