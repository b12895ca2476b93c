//! The `noop` executor: sleeps as asked, fails the first N attempts as asked. Benchmarks,
//! canaries and tests use it.

use std::time::Duration;

use gantry_queue::{
    ClaimedJob, Completion, ErrorClass, HandlerFuture, JobContext, JobKind, JobOutcome, Payload, Stage,
};

use super::Executor;
use crate::outputs::OutputStore;

/// Runs `noop` jobs; with an output store, writes the outputs they ask for.
#[derive(Clone, Debug, Default)]
pub struct NoopExecutor {
    outputs: Option<OutputStore>,
}

impl NoopExecutor {
    /// A noop executor writing outputs to `outputs`.
    pub fn with_outputs(outputs: OutputStore) -> Self {
        Self { outputs: Some(outputs) }
    }
}

/// Largest output a noop job may ask for.
const MAX_NOOP_OUTPUT: u32 = 16 << 20;

impl Executor for NoopExecutor {
    fn kind(&self) -> JobKind {
        JobKind::Noop
    }

    fn run(&self, job: ClaimedJob, ctx: JobContext) -> HandlerFuture {
        let outputs = self.outputs.clone();
        Box::pin(async move {
            let Payload::Noop(p) = &job.spec.body else {
                return JobOutcome::Failed {
                    class: ErrorClass::Permanent,
                    message: "not a noop payload".into(),
                };
            };
            if p.sleep_ms > 0 {
                // The sleep in up to 20 steps (of 100 ms at least), its progress reported at each.
                let steps = (p.sleep_ms / 100).clamp(1, 20);
                for i in 0..steps {
                    ctx.progress
                        .report(Stage::Working, Some(100.0 * i as f32 / steps as f32));
                    let step = p.sleep_ms / steps + u64::from(i == 0) * (p.sleep_ms % steps);
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_millis(step)) => {}
                        _ = ctx.cancel.cancelled() => {
                            return JobOutcome::Failed { class: ErrorClass::Cancelled, message: "stopped".into() };
                        }
                    }
                }
            }
            let mut result = None;
            if let Some(n) = p.output_bytes {
                if n > MAX_NOOP_OUTPUT {
                    return JobOutcome::Failed {
                        class: ErrorClass::Permanent,
                        message: format!("output_bytes {n} exceeds {MAX_NOOP_OUTPUT}"),
                    };
                }
                let Some(store) = &outputs else {
                    return JobOutcome::Failed {
                        class: ErrorClass::Permanent,
                        message: "no output store configured".into(),
                    };
                };
                // Content depends only on the job, so every attempt writes the same bytes.
                let seed = job.spec.id.to_string().into_bytes();
                let body: Vec<u8> = (0..n as usize).map(|i| seed[i % seed.len()]).collect();
                match store
                    .put(&job.spec, "output.bin", body.into(), "application/octet-stream")
                    .await
                {
                    Ok(r) => result = Some(r),
                    Err(e) => {
                        return JobOutcome::Failed {
                            class: ErrorClass::Retryable,
                            message: format!("writing output: {e}"),
                        };
                    }
                }
            }
            if job.attempt <= p.fail_attempts {
                return JobOutcome::Failed {
                    class: p.fail_class.unwrap_or(ErrorClass::Retryable),
                    message: format!("scripted failure of attempt {}", job.attempt),
                };
            }
            let now_ms = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or(0);
            if p.fail_until_unix_ms.is_some_and(|until| now_ms < until) {
                return JobOutcome::Failed {
                    class: p.fail_class.unwrap_or(ErrorClass::Retryable),
                    message: "scripted outage".into(),
                };
            }
            JobOutcome::Succeeded(Completion {
                output: result,
                usage: p.report_usage.clone(),
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gantry_queue::{JobId, JobSpec, LeaseRef, NoopPayload, Pool, Priority, Requirements};

    fn job(attempt: u32, p: NoopPayload) -> ClaimedJob {
        let id = JobId::new();
        ClaimedJob {
            lease: LeaseRef {
                id,
                kind: JobKind::Noop,
                token: 1,
            },
            pool: Pool::new("cpu").expect("pool"),
            attempt,
            max_attempts: 5,
            spec: JobSpec {
                id,
                pool: "cpu".into(),
                tenant: "t".into(),
                user: "u".into(),
                priority: Priority::Normal,
                requirements: Requirements::default(),
                allowed_regions: vec![],
                idempotency_key: None,
                max_attempts: 5,
                timeout_secs: 10,
                scan_outputs: true,
                traceparent: None,
                body: Payload::Noop(p),
            },
            gpu: None,
            gpus: Vec::new(),
            waited: Duration::ZERO,
        }
    }

    fn ctx() -> JobContext {
        JobContext::default()
    }

    #[tokio::test]
    async fn fails_the_scripted_attempts_then_succeeds() {
        let p = NoopPayload {
            fail_attempts: 2,
            fail_class: Some(ErrorClass::Permanent),
            ..Default::default()
        };
        let e = NoopExecutor::default();
        assert!(matches!(
            e.run(job(2, p.clone()), ctx()).await,
            JobOutcome::Failed {
                class: ErrorClass::Permanent,
                ..
            }
        ));
        assert_eq!(
            e.run(job(3, p), ctx()).await,
            JobOutcome::Succeeded(Completion::default())
        );
    }

    #[tokio::test]
    async fn stops_sleeping_when_cancelled() {
        let c = ctx();
        c.cancel.cancel();
        let out = NoopExecutor::default()
            .run(
                job(
                    1,
                    NoopPayload {
                        sleep_ms: 60_000,
                        ..Default::default()
                    },
                ),
                c,
            )
            .await;
        assert!(matches!(
            out,
            JobOutcome::Failed {
                class: ErrorClass::Cancelled,
                ..
            }
        ));
    }

    #[test]
    fn executor_set_serves_only_its_kinds() {
        let set = crate::ExecutorSet::default().with(NoopExecutor::default());
        assert_eq!(set.kinds(), vec![JobKind::Noop]);
        assert!(set.restrict(&[JobKind::Upscale]).kinds().is_empty());
    }
}
