//! The worker side of the protocol: claims jobs (blocking while idle), runs them with a bounded
//! concurrency, heartbeats their leases, batches acks, reaps expired leases, and drains.
//!
//! [`LeaseSource`] claims and hands out [`Leased`] jobs, each with a [`Ticket`] that settles it;
//! it runs nothing itself. [`Consumer`] is the simplest runner over it: each job in its own task,
//! with the job's timeout, panic capture and span. The worker runs jobs through apalis instead
//! (`gantry-worker`'s backend), over the same source.

mod lease_source;
mod ledger;
mod progress;
mod settle;
mod ticket;

pub use lease_source::{LeaseSource, Leased, Leases, Settlement};
pub use progress::ProgressHandle;
pub use ticket::Ticket;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use futures::FutureExt;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::client::{ClaimedJob, FailOutcome, QueueClient};
use crate::error::QueueError;
use crate::job::{Completion, ErrorClass, JobKind};
use crate::keys::Pool;

/// What a handler reports for one attempt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum JobOutcome {
    /// Done; the output and usage are recorded on the job.
    Succeeded(Completion),
    /// Failed; the class decides between retry and dead-letter.
    Failed {
        /// Error class.
        class: ErrorClass,
        /// For operators; never prompt text or other private data.
        message: String,
    },
    /// Failed, worth retrying, but not sooner than `after` (a provider's `Retry-After`, or the
    /// time its circuit stays open); the queue's own backoff applies when it is longer.
    RetryAfter {
        /// For operators; never prompt text or other private data.
        message: String,
        /// The earliest retry.
        after: Duration,
    },
}

/// Handed to a handler with each job.
#[derive(Clone, Debug, Default)]
pub struct JobContext {
    /// Cancelled when the job must stop: cancellation requested, lease lost, or drain timeout.
    pub cancel: CancellationToken,
    /// Where the attempt reports what it is doing (stage, percent).
    pub progress: ProgressHandle,
}

/// A boxed handler future.
pub type HandlerFuture = Pin<Box<dyn Future<Output = JobOutcome> + Send + 'static>>;

/// Runs jobs. Implemented by the worker's executors.
pub trait JobHandler: Send + Sync + 'static {
    /// Runs one attempt of `job`.
    fn handle(&self, job: ClaimedJob, ctx: JobContext) -> HandlerFuture;
}

impl<F> JobHandler for F
where
    F: Fn(ClaimedJob, JobContext) -> HandlerFuture + Send + Sync + 'static,
{
    fn handle(&self, job: ClaimedJob, ctx: JobContext) -> HandlerFuture {
        self(job, ctx)
    }
}

/// The hardware a consumer claims against. Jobs are claimed only when they fit what is free.
#[derive(Clone, Debug, Default)]
pub struct Resources {
    /// The GPUs: total VRAM in bytes and whether NVENC is proven there.
    pub gpus: Vec<GpuResource>,
    /// CPU-job slots; `None` means as many as the concurrency.
    pub cpu_slots: Option<usize>,
    /// Models warm on this worker; their jobs are preferred.
    pub warm_models: Vec<String>,
    /// What each GPU has in use right now, whoever uses it (NVML's reading), read at every
    /// claim: a GPU offers its total less the larger of Gantry's reservations and that, so
    /// memory another process holds is not offered. `None`: reservations alone.
    pub vram_used: Option<VramProbe>,
}

/// Reads the memory in use on each GPU, in bytes (by index); see [`Resources::vram_used`].
#[derive(Clone)]
pub struct VramProbe(pub Arc<dyn Fn() -> Vec<u64> + Send + Sync>);

impl std::fmt::Debug for VramProbe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("VramProbe")
    }
}

/// One GPU as the claim sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GpuResource {
    /// VRAM, bytes.
    pub total_bytes: u64,
    /// NVENC proven to open a session.
    pub nvenc: bool,
}

/// The bucket bounds (seconds) of the workers' queue-wait histogram
/// (`gantry_job_queue_wait_seconds`): 1 ms to 1 hour. A pool's queue-wait objective must be one
/// of them, so the share of jobs that started within it can be read off one bucket.
pub const QUEUE_WAIT_BUCKETS: [f64; 17] = [
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0,
];

/// Hooks for observing a consumer (metrics). Every method has a no-op default.
pub trait ConsumerEvents: Send + Sync + 'static {
    /// One claim round trip to `pool` took `elapsed` and returned `jobs` jobs.
    fn claim(&self, _pool: &Pool, _elapsed: Duration, _jobs: usize) {}
    /// A job started, after waiting `waited` to be claimed (see [`ClaimedJob::waited`]).
    fn started(&self, _pool: &Pool, _kind: JobKind, _waited: Duration) {}
    /// A job's attempt ended after `elapsed`: `None` for success, else its error class.
    fn finished(&self, _pool: &Pool, _kind: JobKind, _class: Option<ErrorClass>, _elapsed: Duration) {}
    /// A failure was recorded as `outcome` (retry, dead-letter, ...).
    fn failure_recorded(&self, _pool: &Pool, _kind: JobKind, _outcome: FailOutcome) {}
}

/// Observes nothing.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoEvents;

impl ConsumerEvents for NoEvents {}

/// Typed configuration of a consumer.
#[derive(Clone, Debug)]
pub struct ConsumerConfig {
    /// Pool to claim from.
    pub pool: Pool,
    /// Kinds to claim, in order of preference at equal priority.
    pub kinds: Vec<JobKind>,
    /// This worker's id (shown on leased jobs).
    pub worker_id: String,
    /// Jobs run at once.
    pub concurrency: usize,
    /// Most jobs taken in one claim round trip.
    pub claim_batch: usize,
    /// Lease length; a lease not extended for this long is reaped.
    pub lease: Duration,
    /// Heartbeat period (default: a third of the lease).
    pub heartbeat_every: Duration,
    /// How often running jobs' latest progress is stored (default: every second, so at most
    /// one Redis write a second per job, batched across jobs).
    pub progress_every: Duration,
    /// Reaper period.
    pub reap_every: Duration,
    /// Longest single blocking wait while idle.
    pub idle_wait: Duration,
    /// On shutdown, how long running jobs may take before their leases are released.
    pub drain_grace: Duration,
    /// What the worker has; only jobs that fit are claimed.
    pub resources: Resources,
    /// Other pools whose jobs this worker takes when its own pool has none it can run (an idle
    /// large GPU takes small jobs rather than sit idle while they wait).
    pub steal_from: Vec<Pool>,
}

impl ConsumerConfig {
    /// Defaults for `pool` and `kinds`: 10 slots, 30 s leases, 10 s heartbeats, CPU only.
    pub fn new(pool: Pool, kinds: Vec<JobKind>, worker_id: impl Into<String>) -> Self {
        Self {
            pool,
            kinds,
            worker_id: worker_id.into(),
            concurrency: 10,
            claim_batch: 100,
            lease: Duration::from_secs(30),
            heartbeat_every: Duration::from_secs(10),
            progress_every: Duration::from_secs(1),
            reap_every: Duration::from_secs(1),
            idle_wait: Duration::from_secs(1),
            drain_grace: Duration::from_secs(30),
            resources: Resources::default(),
            steal_from: Vec::new(),
        }
    }
}

/// Counters of one consumer's life.
#[derive(Debug, Default)]
pub struct ConsumerStats {
    /// Jobs claimed.
    pub claimed: AtomicU64,
    /// Acked as succeeded.
    pub succeeded: AtomicU64,
    /// Failures scheduled for retry.
    pub retried: AtomicU64,
    /// Dead-lettered.
    pub dead: AtomicU64,
    /// Ended as cancelled.
    pub cancelled: AtomicU64,
    /// Ended as blocked (prohibited content).
    pub blocked: AtomicU64,
    /// Held for a reviewer.
    pub withheld: AtomicU64,
    /// Released on drain.
    pub released: AtomicU64,
    /// Acks or failures refused because the lease was lost.
    pub stale: AtomicU64,
    /// Expired leases this consumer's reaper requeued or dead-lettered.
    pub reaped: AtomicU64,
    /// Claim round trips.
    pub claim_calls: AtomicU64,
    /// Ack round trips.
    pub ack_calls: AtomicU64,
    /// Jobs taken from a steal pool.
    pub stolen: AtomicU64,
}

/// The span every job runs in. Everything logged while it runs carries these fields, and only
/// these: no payload field (prompt, image, URL) can reach a log through it.
pub fn job_span(job: &ClaimedJob) -> tracing::Span {
    let span = tracing::info_span!(
        "job",
        otel.name = %format_args!("job {}", job.lease.kind),
        job_id = %job.lease.id,
        kind = %job.lease.kind,
        tenant = %job.spec.tenant,
        pool = %job.pool,
        attempt = job.attempt,
        // How long it waited to be claimed; how it ended (set when it is settled).
        waited_ms = u64::try_from(job.waited.as_millis()).unwrap_or(u64::MAX),
        outcome = tracing::field::Empty,
    );
    // Joins the trace that admitted it (see `crate::trace`).
    if let Some(tp) = &job.spec.traceparent {
        crate::trace::set_parent(&span, tp);
    }
    span
}

/// Claims and runs jobs until shut down: a [`LeaseSource`] whose jobs each run in their own task.
pub struct Consumer {
    source: LeaseSource,
    handler: Arc<dyn JobHandler>,
}

impl std::fmt::Debug for Consumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Consumer")
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

impl Consumer {
    /// A consumer running `handler` on jobs of `cfg.kinds` in `cfg.pool`.
    pub fn new(client: QueueClient, cfg: ConsumerConfig, handler: impl JobHandler) -> Self {
        Self {
            source: LeaseSource::new(client, cfg),
            handler: Arc::new(handler),
        }
    }

    /// Reports claims, starts, finishes and recorded failures to `events`.
    pub fn with_events(mut self, events: Arc<dyn ConsumerEvents>) -> Self {
        self.source = self.source.with_events(events);
        self
    }

    /// Live counters.
    pub fn stats(&self) -> Arc<ConsumerStats> {
        self.source.stats()
    }

    /// A handle that reads the number of jobs in flight while the consumer runs.
    pub fn in_flight_gauge(&self) -> impl Fn() -> usize + Send + Sync + 'static {
        self.source.in_flight_gauge()
    }

    /// A handle that reads the VRAM running jobs reserve per GPU, bytes.
    pub fn reserved_vram_gauge(&self) -> impl Fn() -> Vec<u64> + Send + Sync + 'static {
        self.source.reserved_vram_gauge()
    }

    /// Runs until `shutdown` is cancelled, then drains: stops claiming, lets running jobs finish
    /// within `drain_grace`, releases the leases of those that did not, flushes acks.
    pub async fn run(self, shutdown: CancellationToken) -> Result<Arc<ConsumerStats>, QueueError> {
        let (mut leases, settlement) = self.source.start(shutdown);
        let mut tasks = tokio::task::JoinSet::new();
        while let Some(Leased { job, ticket }) = leases.recv().await {
            let span = job_span(&job);
            tasks.spawn(run_inline(self.handler.clone(), job, ticket).instrument(span));
            while tasks.try_join_next().is_some() {}
        }
        while tasks.join_next().await.is_some() {}
        settlement.await
    }
}

/// Runs one attempt in the calling task: the job's own timeout, a caught panic becomes a
/// retryable failure, and a stop (cancel, lost lease, drain) drops the handler's future.
async fn run_inline(handler: Arc<dyn JobHandler>, job: ClaimedJob, ticket: Ticket) {
    let ctx = ticket.context();
    let stop = ctx.cancel.clone();
    let timeout = Duration::from_secs(job.spec.timeout_secs);
    let run = std::panic::AssertUnwindSafe(handler.handle(job, ctx)).catch_unwind();
    tokio::select! {
        r = run => ticket.settle(r.unwrap_or_else(|_| JobOutcome::Failed {
            class: ErrorClass::Retryable,
            message: "executor panicked".into(),
        })),
        _ = tokio::time::sleep(timeout) => ticket.settle(JobOutcome::Failed {
            class: ErrorClass::TimedOut,
            message: format!("attempt exceeded its {}s timeout", timeout.as_secs()),
        }),
        _ = stop.cancelled() => ticket.settle_stopped(),
    }
}
