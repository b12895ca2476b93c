//! Gantry's queue as an apalis 1.0 backend.
//!
//! [`QueueBackend`] hands apalis the jobs that `gantry_queue`'s [`LeaseSource`] leases: the claim
//! loop stays ours (capacity-aware claims, VRAM ledger, wake tokens, work stealing, heartbeats),
//! and apalis's worker runs each job through its Tower layers. The backend's own layer,
//! [`SettleLayer`], sits outside every user layer, so it sees each attempt's final result, after
//! timeouts and caught panics, and settles the job's ticket with it: ack, fail (retry or
//! dead-letter by class), or release when a drain stopped it.
//!
//! Shutdown: the lease source stops claiming and ends the stream of jobs; apalis waits for the
//! running ones; the source's drain stops those past the grace period; then `poll_close` waits
//! until every outcome is recorded and stops the apalis worker.
//!
//! [`LeaseSource`]: gantry_queue::LeaseSource

use std::task::{Context, Poll};

use apalis::prelude::{Backend, BoxDynError, RandomId, Task, TaskBuilder, TaskId, WorkerContext};
use apalis_core::backend::BackendConfig;
use apalis_core::backend::finalize::Ephemeral;
use futures::FutureExt;
use futures::future::BoxFuture;
use gantry_queue::{
    ClaimedJob, Completion, ErrorClass, JobContext, JobOutcome, Leased, Leases, QueueError, Settlement, Ticket,
};
use tower::{Layer, Service};
use tracing::Instrument;

use crate::layers::{AttemptStopped, AttemptTimedOut, JobFailure};

/// What apalis hands the executors: the leased job and its stop token.
pub struct QueuedJob {
    /// The job.
    pub job: ClaimedJob,
    /// Fires when the job must stop.
    pub ctx: JobContext,
    span: tracing::Span,
    ticket: Option<Ticket>,
}

impl std::fmt::Debug for QueuedJob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueuedJob")
            .field("job_id", &self.job.lease.id)
            .field("kind", &self.job.lease.kind)
            .finish_non_exhaustive()
    }
}

impl QueuedJob {
    /// The job's span: id, kind, tenant, pool and attempt, never payload fields.
    pub fn span(&self) -> tracing::Span {
        self.span.clone()
    }
}

/// Why the backend stopped.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// Recording outcomes failed for good.
    #[error(transparent)]
    Queue(#[from] QueueError),
}

/// The apalis backend over a lease source. See the module docs.
#[derive(Debug)]
pub struct QueueBackend {
    leases: Leases,
    settlement: Option<Settlement>,
}

impl QueueBackend {
    /// A backend over a started lease source.
    pub fn new(leases: Leases, settlement: Settlement) -> Self {
        Self {
            leases,
            settlement: Some(settlement),
        }
    }
}

impl Backend for QueueBackend {
    type Task = Task<QueuedJob>;
    type Error = BackendError;

    fn poll_ready(&mut self, _cx: &mut Context<'_>, _worker: &WorkerContext) -> Poll<Result<(), Self::Error>> {
        // Readiness is the lease source's business: it claims only into free slots.
        Poll::Ready(Ok(()))
    }

    fn poll_next(
        &mut self,
        cx: &mut Context<'_>,
        _worker: &WorkerContext,
    ) -> Poll<Option<Result<Self::Task, Self::Error>>> {
        self.leases.poll_recv(cx).map(|next| {
            next.map(|Leased { job, ticket }| {
                let id = TaskId::from_string(job.lease.id.to_string());
                let attempt = job.attempt as usize;
                let max = job.max_attempts as usize;
                let args = QueuedJob {
                    span: gantry_queue::job_span(&job),
                    ctx: ticket.context(),
                    job,
                    ticket: Some(ticket),
                };
                // apalis counts attempts up as it starts one; ours is already this attempt's.
                Ok(TaskBuilder::new(args)
                    .task_id(id)
                    .attempt(attempt.saturating_sub(1))
                    .max_attempts(max)
                    .build())
            })
        })
    }

    fn poll_close(&mut self, cx: &mut Context<'_>, worker: &WorkerContext) -> Poll<Result<(), Self::Error>> {
        let Some(settlement) = self.settlement.as_mut() else {
            return Poll::Ready(Ok(()));
        };
        let done = std::task::ready!(settlement.poll_unpin(cx));
        self.settlement = None;
        // Every outcome is recorded and nothing more will come: the worker is done.
        if let Err(e) = worker.stop() {
            tracing::debug!(error = %e, "apalis worker already stopping");
        }
        Poll::Ready(done.map(|_| ()).map_err(BackendError::from))
    }
}

impl BackendConfig for QueueBackend {
    type Args = QueuedJob;
    type Id = RandomId;
    type Kind = Ephemeral;
    type Config = ();
    type Layer = SettleLayer;

    fn config(&self) -> &Self::Config {
        &()
    }

    fn middleware(&mut self, _worker: &mut WorkerContext) -> Self::Layer {
        SettleLayer
    }
}

/// Settles each job's ticket with its attempt's final result. See the module docs.
#[derive(Clone, Copy, Debug, Default)]
pub struct SettleLayer;

impl<S> Layer<S> for SettleLayer {
    type Service = Settle<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Settle { inner }
    }
}

/// See [`SettleLayer`].
#[derive(Clone, Debug)]
pub struct Settle<S> {
    inner: S,
}

impl<S> Service<Task<QueuedJob>> for Settle<S>
where
    S: Service<Task<QueuedJob>, Response = Completion>,
    S::Error: Into<BoxDynError>,
    S::Future: Send + 'static,
{
    type Response = ();
    type Error = BoxDynError;
    type Future = BoxFuture<'static, Result<(), BoxDynError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, mut task: Task<QueuedJob>) -> Self::Future {
        let ticket = task.args.ticket.take();
        let span = task.args.span();
        let fut = self.inner.call(task);
        Box::pin(
            async move {
                let result = fut.await.map_err(Into::into);
                let Some(ticket) = ticket else {
                    // Only this backend makes QueuedJobs, always with a ticket.
                    tracing::error!("job without a ticket; nothing to settle");
                    return Ok(());
                };
                // The job span (current here) records how the attempt ended, for traces.
                let span = tracing::Span::current();
                match result {
                    Ok(r) => {
                        span.record("outcome", "succeeded");
                        ticket.settle(JobOutcome::Succeeded(r));
                    }
                    Err(e) if e.is::<AttemptStopped>() => {
                        span.record("outcome", "stopped");
                        ticket.settle_stopped();
                    }
                    Err(e) => {
                        let out = failure(&e);
                        let class = match &out {
                            JobOutcome::Failed { class, .. } => class.as_str(),
                            _ => "retry_after",
                        };
                        span.record("outcome", class);
                        ticket.settle(out);
                    }
                }
                Ok(())
            }
            .instrument(span),
        )
    }
}

/// The outcome an attempt's error stands for.
fn failure(e: &BoxDynError) -> JobOutcome {
    if let Some(f) = e.downcast_ref::<JobFailure>() {
        return match f.retry_after {
            Some(after) => JobOutcome::RetryAfter {
                message: f.message.clone(),
                after,
            },
            None => JobOutcome::Failed {
                class: f.class,
                message: f.message.clone(),
            },
        };
    }
    let class = if e.is::<AttemptTimedOut>() {
        ErrorClass::TimedOut
    } else {
        // Panics, and anything a layer failed with: worth another attempt elsewhere.
        ErrorClass::Retryable
    };
    JobOutcome::Failed {
        class,
        message: e.to_string(),
    }
}
