//! The Tower layers Gantry adds to apalis's own, and the errors a job's attempt can end with.
//!
//! The worker's stack, from the outside in (see [`crate::runtime`]): the backend's
//! [`SettleLayer`](crate::backend::SettleLayer), apalis's concurrency limit, apalis's
//! `parallelize` (each job in its own task), [`StopLayer`], [`KindTimeoutLayer`], apalis's
//! `TraceLayer` (the job's span), apalis's `CatchPanicLayer`, then the executors.
//!
//! apalis's `timeout()` takes one duration for every task; jobs need one per kind, capped by the
//! job's own timeout, so that layer is ours, in the same Tower shape.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use apalis::prelude::{BoxDynError, Task};
use futures::future::BoxFuture;
use gantry_queue::{ClaimedJob, ErrorClass, JobKind};
use tower::{Layer, Service};

use crate::backend::QueuedJob;

/// An executor reported a failure.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{}: {message}", class.as_str())]
pub struct JobFailure {
    /// Decides between retry and dead-letter.
    pub class: ErrorClass,
    /// For operators; never prompt text or other private data.
    pub message: String,
    /// Retry no sooner than this (a provider's `Retry-After`, an open circuit).
    pub retry_after: Option<std::time::Duration>,
}

/// The attempt ran past its kind's (or its own) timeout and was stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("attempt exceeded its {}s timeout", after.as_secs())]
pub struct AttemptTimedOut {
    /// The limit it ran into.
    pub after: Duration,
}

/// The job was told to stop (cancellation requested, lease lost, drain) before it finished.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("attempt stopped before it finished")]
pub struct AttemptStopped;

/// The executor panicked; apalis's catch-panic layer turned the panic into this error. The
/// panic's message is not kept: it could carry anything the executor had in hand.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("executor panicked")]
pub struct ExecutorPanicked;

/// Timeouts per job kind. A job's attempt is stopped after the smaller of its kind's timeout
/// and its own `timeout_secs`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KindTimeouts {
    by_kind: BTreeMap<JobKind, Duration>,
}

impl KindTimeouts {
    /// Gantry's defaults: a remote generation may take ten minutes, a video transcode half an
    /// hour; hashing and upscaling are quicker. `noop` has none (its job's own timeout applies).
    pub fn defaults() -> Self {
        Self::default()
            .with(JobKind::Generate, Duration::from_secs(600))
            .with(JobKind::Upscale, Duration::from_secs(300))
            .with(JobKind::Transcode, Duration::from_secs(1800))
            .with(JobKind::CsamHash, Duration::from_secs(300))
    }

    /// Sets `kind`'s timeout.
    pub fn with(mut self, kind: JobKind, timeout: Duration) -> Self {
        self.by_kind.insert(kind, timeout);
        self
    }

    /// The limit for one attempt of `job`.
    pub fn limit_for(&self, job: &ClaimedJob) -> Duration {
        let own = Duration::from_secs(job.spec.timeout_secs);
        match self.by_kind.get(&job.lease.kind) {
            Some(k) => own.min(*k),
            None => own,
        }
    }
}

/// Stops each attempt at its [`KindTimeouts`] limit with [`AttemptTimedOut`].
#[derive(Clone, Debug)]
pub struct KindTimeoutLayer {
    timeouts: Arc<KindTimeouts>,
}

impl KindTimeoutLayer {
    /// A layer applying `timeouts`.
    pub fn new(timeouts: KindTimeouts) -> Self {
        Self {
            timeouts: Arc::new(timeouts),
        }
    }
}

impl<S> Layer<S> for KindTimeoutLayer {
    type Service = KindTimeout<S>;

    fn layer(&self, inner: S) -> Self::Service {
        KindTimeout {
            inner,
            timeouts: self.timeouts.clone(),
        }
    }
}

/// See [`KindTimeoutLayer`].
#[derive(Clone, Debug)]
pub struct KindTimeout<S> {
    inner: S,
    timeouts: Arc<KindTimeouts>,
}

impl<S> Service<Task<QueuedJob>> for KindTimeout<S>
where
    S: Service<Task<QueuedJob>>,
    S::Error: Into<BoxDynError>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = BoxDynError;
    type Future = BoxFuture<'static, Result<S::Response, BoxDynError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, task: Task<QueuedJob>) -> Self::Future {
        let after = self.timeouts.limit_for(&task.args.job);
        let fut = self.inner.call(task);
        Box::pin(async move {
            match tokio::time::timeout(after, fut).await {
                Ok(r) => r.map_err(Into::into),
                Err(_) => Err(Box::new(AttemptTimedOut { after }) as BoxDynError),
            }
        })
    }
}

/// Ends an attempt with [`AttemptStopped`] as soon as its job's cancel token fires, dropping
/// (and so cancelling) the executor's future. An executor that finished first keeps its result.
#[derive(Clone, Copy, Debug, Default)]
pub struct StopLayer;

impl<S> Layer<S> for StopLayer {
    type Service = Stop<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Stop { inner }
    }
}

/// See [`StopLayer`].
#[derive(Clone, Debug)]
pub struct Stop<S> {
    inner: S,
}

impl<S> Service<Task<QueuedJob>> for Stop<S>
where
    S: Service<Task<QueuedJob>>,
    S::Error: Into<BoxDynError>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = BoxDynError;
    type Future = BoxFuture<'static, Result<S::Response, BoxDynError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, task: Task<QueuedJob>) -> Self::Future {
        let stop = task.args.ctx.cancel.clone();
        let fut = self.inner.call(task);
        Box::pin(async move {
            tokio::select! {
                biased;
                r = fut => r.map_err(Into::into),
                _ = stop.cancelled() => Err(Box::new(AttemptStopped) as BoxDynError),
            }
        })
    }
}
