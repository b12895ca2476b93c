//! Executors: one per job kind. A worker claims only the kinds it has an executor for.

pub mod csam_hash;
pub mod export;
pub mod generate;
pub(crate) mod media_job;
pub mod noop;
pub mod provider_metrics;
pub mod scanned;
pub mod transcode;
pub mod upscale;

use std::collections::BTreeMap;
use std::sync::Arc;

use std::task::{Context, Poll};

use apalis::prelude::Task;
use futures::future::BoxFuture;
use gantry_queue::{ClaimedJob, Completion, ErrorClass, HandlerFuture, JobContext, JobKind, JobOutcome};

use prometheus_client::registry::Registry;

use crate::backend::QueuedJob;
use crate::gpu::GpuInventory;
use crate::layers::JobFailure;

/// A failed attempt of `class`.
pub(crate) fn failed(class: ErrorClass, message: impl Into<String>) -> JobOutcome {
    JobOutcome::Failed {
        class,
        message: message.into(),
    }
}

/// Runs one kind of job.
pub trait Executor: Send + Sync + 'static {
    /// The kind it runs.
    fn kind(&self) -> JobKind;
    /// Runs one attempt.
    fn run(&self, job: ClaimedJob, ctx: JobContext) -> HandlerFuture;
    /// Learns the worker's GPUs, as read and probed at start-up, before any job runs.
    fn set_gpus(&self, _inventory: &GpuInventory) {}
    /// Registers its own metrics in the worker's registry.
    fn register_metrics(&self, _registry: &mut Registry) {}
}

/// The executors a worker has, by kind.
#[derive(Clone, Default)]
pub struct ExecutorSet {
    by_kind: BTreeMap<JobKind, Arc<dyn Executor>>,
}

impl std::fmt::Debug for ExecutorSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.by_kind.keys()).finish()
    }
}

impl ExecutorSet {
    /// Adds (or replaces) the executor of its kind.
    pub fn with(mut self, e: impl Executor) -> Self {
        self.by_kind.insert(e.kind(), Arc::new(e));
        self
    }

    /// The kinds served.
    pub fn kinds(&self) -> Vec<JobKind> {
        self.by_kind.keys().copied().collect()
    }

    /// Tells every executor the worker's GPUs.
    pub fn set_gpus(&self, inventory: &GpuInventory) {
        for e in self.by_kind.values() {
            e.set_gpus(inventory);
        }
    }

    /// Registers every executor's metrics.
    pub fn register_metrics(&self, registry: &mut Registry) {
        for e in self.by_kind.values() {
            e.register_metrics(registry);
        }
    }

    /// Keeps only `kinds`.
    pub fn restrict(mut self, kinds: &[JobKind]) -> Self {
        self.by_kind.retain(|k, _| kinds.contains(k));
        self
    }

    /// Dispatches a job to its kind's executor. A job of a kind without an executor cannot be
    /// claimed (the worker never asks for it), so this is a permanent failure if it happens.
    pub fn dispatch(&self, job: ClaimedJob, ctx: JobContext) -> HandlerFuture {
        match self.by_kind.get(&job.spec.kind()) {
            Some(e) => e.run(job, ctx),
            None => {
                let kind = job.spec.kind();
                Box::pin(async move {
                    JobOutcome::Failed {
                        class: gantry_queue::ErrorClass::Retryable,
                        message: format!("worker has no executor for kind {kind}"),
                    }
                })
            }
        }
    }
}

/// The executors as apalis's innermost service: a job's outcome becomes its result or a
/// [`JobFailure`] carrying the error class.
impl tower::Service<Task<QueuedJob>> for ExecutorSet {
    type Response = Completion;
    type Error = JobFailure;
    type Future = BoxFuture<'static, Result<Completion, JobFailure>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, task: Task<QueuedJob>) -> Self::Future {
        let QueuedJob { job, ctx, .. } = task.args;
        let run = self.dispatch(job, ctx);
        Box::pin(async move {
            match run.await {
                JobOutcome::Succeeded(r) => Ok(r),
                JobOutcome::Failed { class, message } => Err(JobFailure {
                    class,
                    message,
                    retry_after: None,
                }),
                JobOutcome::RetryAfter { message, after } => Err(JobFailure {
                    class: gantry_queue::ErrorClass::Retryable,
                    message,
                    retry_after: Some(after),
                }),
            }
        })
    }
}
