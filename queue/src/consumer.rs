//! The worker side of the protocol: claims jobs (blocking while idle), runs them with a bounded
//! concurrency, heartbeats their leases, batches acks, reaps expired leases, and drains.
//!
//! Batching is what makes it fast: one claim script takes as many jobs as there are free slots,
//! and completions that arrive while an ack is in flight go out together in the next one.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::FutureExt;
use tokio::sync::{Notify, Semaphore, mpsc};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::client::{ClaimBatch, ClaimCapacity, ClaimedJob, FailOutcome, Failure, LeaseRef, LeaseState, QueueClient};
use crate::error::QueueError;
use crate::job::{ErrorClass, JobId, JobKind, ResultRef};
use crate::keys::Pool;
use crate::retry::{Backoff, retry_transient};

/// What a handler reports for one attempt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum JobOutcome {
    /// Done; the optional result is recorded on the job.
    Succeeded(Option<ResultRef>),
    /// Failed; the class decides between retry and dead-letter.
    Failed {
        /// Error class.
        class: ErrorClass,
        /// For operators; never prompt text or other private data.
        message: String,
    },
}

/// Handed to a handler with each job.
#[derive(Clone, Debug)]
pub struct JobContext {
    /// Cancelled when the job must stop: cancellation requested, lease lost, or drain timeout.
    pub cancel: CancellationToken,
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
}

/// One GPU as the claim sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GpuResource {
    /// VRAM, bytes.
    pub total_bytes: u64,
    /// NVENC proven to open a session.
    pub nvenc: bool,
}

/// Reservations held by running jobs: VRAM per GPU (whole GiB, as jobs ask) and CPU slots.
#[derive(Debug)]
struct Ledger {
    gpu_total_gib: Vec<u64>,
    gpu_nvenc: Vec<bool>,
    gpu_reserved_gib: Vec<u64>,
    cpu_slots: usize,
    cpu_used: usize,
    warm: Vec<String>,
}

impl Ledger {
    fn new(r: &Resources, concurrency: usize) -> Self {
        Self {
            gpu_total_gib: r.gpus.iter().map(|g| g.total_bytes >> 30).collect(),
            gpu_nvenc: r.gpus.iter().map(|g| g.nvenc).collect(),
            gpu_reserved_gib: vec![0; r.gpus.len()],
            cpu_slots: r.cpu_slots.unwrap_or(concurrency),
            cpu_used: 0,
            warm: r.warm_models.clone(),
        }
    }

    fn capacity(&self) -> ClaimCapacity {
        ClaimCapacity {
            cpu: self.cpu_slots.saturating_sub(self.cpu_used),
            gpus: self
                .gpu_total_gib
                .iter()
                .zip(&self.gpu_reserved_gib)
                .zip(&self.gpu_nvenc)
                .map(|((t, r), n)| (t.saturating_sub(*r), *n))
                .collect(),
            warm: self.warm.clone(),
        }
    }

    fn vram_gib(job: &ClaimedJob) -> u64 {
        job.spec
            .requirements
            .gpu
            .as_ref()
            .map(|g| g.min_vram_bytes.div_ceil(1 << 30))
            .unwrap_or(0)
    }

    fn reserve(&mut self, job: &ClaimedJob) {
        match job.gpu.and_then(|g| self.gpu_reserved_gib.get_mut(g as usize)) {
            Some(r) => *r += Self::vram_gib(job),
            None => self.cpu_used += 1,
        }
    }

    fn release(&mut self, job_gpu: Option<u32>, gib: u64) {
        match job_gpu.and_then(|g| self.gpu_reserved_gib.get_mut(g as usize)) {
            Some(r) => *r = r.saturating_sub(gib),
            None => self.cpu_used = self.cpu_used.saturating_sub(1),
        }
    }
}

/// Hooks for observing a consumer (metrics). Every method has a no-op default.
pub trait ConsumerEvents: Send + Sync + 'static {
    /// One claim round trip to `pool` took `elapsed` and returned `jobs` jobs.
    fn claim(&self, _pool: &Pool, _elapsed: Duration, _jobs: usize) {}
    /// A job started.
    fn started(&self, _pool: &Pool, _kind: JobKind) {}
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

const STOP_NONE: u8 = 0;
const STOP_CANCEL: u8 = 1;
const STOP_LOST: u8 = 2;
const STOP_DRAIN: u8 = 3;

struct InFlight {
    pool: Pool,
    lease: LeaseRef,
    cancel: CancellationToken,
    reason: Arc<AtomicU8>,
}

enum Outcome {
    Ack(LeaseRef, Option<ResultRef>),
    Fail(Failure),
    Release(LeaseRef),
    Drop(LeaseRef),
}

/// A settled attempt, to record in its pool.
struct Completion {
    pool: Pool,
    outcome: Outcome,
}

/// Claims and runs jobs until shut down.
pub struct Consumer {
    client: QueueClient,
    cfg: ConsumerConfig,
    handler: Arc<dyn JobHandler>,
    stats: Arc<ConsumerStats>,
    inflight: Arc<Mutex<HashMap<JobId, InFlight>>>,
    events: Arc<dyn ConsumerEvents>,
}

impl std::fmt::Debug for Consumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Consumer")
            .field("cfg", &self.cfg)
            .finish_non_exhaustive()
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl Consumer {
    /// A consumer running `handler` on jobs of `cfg.kinds` in `cfg.pool`.
    pub fn new(client: QueueClient, cfg: ConsumerConfig, handler: impl JobHandler) -> Self {
        Self {
            client,
            cfg,
            handler: Arc::new(handler),
            stats: Arc::default(),
            inflight: Arc::default(),
            events: Arc::new(NoEvents),
        }
    }

    /// Reports claims, starts, finishes and recorded failures to `events`.
    pub fn with_events(mut self, events: Arc<dyn ConsumerEvents>) -> Self {
        self.events = events;
        self
    }

    /// Live counters.
    pub fn stats(&self) -> Arc<ConsumerStats> {
        self.stats.clone()
    }

    /// Jobs leased and not yet settled.
    pub fn in_flight(&self) -> usize {
        self.inflight.lock().map(|m| m.len()).unwrap_or(0)
    }

    /// A handle that reads the number of jobs in flight while the consumer runs.
    pub fn in_flight_gauge(&self) -> impl Fn() -> usize + Send + Sync + 'static {
        let m = self.inflight.clone();
        move || m.lock().map(|m| m.len()).unwrap_or(0)
    }

    /// Runs until `shutdown` is cancelled, then drains: stops claiming, lets running jobs finish
    /// within `drain_grace`, releases the leases of those that did not, flushes acks.
    pub async fn run(self, shutdown: CancellationToken) -> Result<Arc<ConsumerStats>, QueueError> {
        let Consumer {
            client,
            cfg,
            handler,
            stats,
            inflight,
            events,
        } = self;
        let cfg = Arc::new(cfg);
        let ledger = Arc::new(Mutex::new(Ledger::new(&cfg.resources, cfg.concurrency)));
        let freed = Arc::new(Notify::new());
        let slots = Arc::new(Semaphore::new(cfg.concurrency));
        let (done_tx, done_rx) = mpsc::channel::<Completion>(cfg.concurrency * 4 + 64);
        // Background tasks stop on `bg_stop`, after the drain.
        let bg_stop = CancellationToken::new();
        let acker = tokio::spawn(ack_loop(
            client.clone(),
            done_rx,
            inflight.clone(),
            stats.clone(),
            events.clone(),
            bg_stop.clone(),
        ));
        let hb = tokio::spawn(heartbeat_loop(
            client.clone(),
            cfg.clone(),
            inflight.clone(),
            bg_stop.clone(),
        ));
        let reaper = tokio::spawn(reap_loop(client.clone(), cfg.clone(), stats.clone(), bg_stop.clone()));
        let pools: Vec<Pool> = std::iter::once(cfg.pool.clone())
            .chain(cfg.steal_from.iter().cloned())
            .collect();

        let mut blocking = None;
        let mut backoff = Backoff::default();
        let mut tasks = tokio::task::JoinSet::new();
        'claim: loop {
            // Wait for a free slot, then take every other free slot, up to the batch size.
            let first = tokio::select! {
                p = slots.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break 'claim },
                _ = shutdown.cancelled() => break 'claim,
            };
            let mut permits = vec![first];
            while permits.len() < cfg.claim_batch {
                match slots.clone().try_acquire_owned() {
                    Ok(p) => permits.push(p),
                    Err(_) => break,
                }
            }
            // Own pool first; the steal pools only when the own pool gave nothing.
            let mut claimed = ClaimBatch::default();
            let mut unfit = false;
            let mut failed = None;
            for (i, pool) in pools.iter().enumerate() {
                let capacity = match ledger.lock() {
                    Ok(l) => l.capacity(),
                    Err(_) => break 'claim,
                };
                stats.claim_calls.fetch_add(1, Ordering::Relaxed);
                let asked = std::time::Instant::now();
                match client
                    .claim(pool, &cfg.worker_id, &cfg.kinds, permits.len(), cfg.lease, &capacity)
                    .await
                {
                    Ok(b) => {
                        events.claim(pool, asked.elapsed(), b.jobs.len());
                        if i == 0 {
                            claimed.next_due_ms = b.next_due_ms;
                            unfit = b.unfit;
                        } else if !b.jobs.is_empty() {
                            stats.stolen.fetch_add(b.jobs.len() as u64, Ordering::Relaxed);
                        }
                        if let Ok(mut l) = ledger.lock() {
                            for j in &b.jobs {
                                l.reserve(j);
                            }
                        }
                        claimed.jobs.extend(b.jobs);
                    }
                    Err(e) => failed = Some(e),
                }
                if !claimed.jobs.is_empty() {
                    break;
                }
            }
            if let Some(e) = failed.filter(|_| claimed.jobs.is_empty()) {
                let d = backoff.next_delay();
                tracing::warn!(error = %e, retry_in_ms = d.as_millis() as u64, "claim failed");
                drop(permits);
                tokio::select! { _ = tokio::time::sleep(d) => continue, _ = shutdown.cancelled() => break 'claim }
            }
            backoff.reset();
            let idle = claimed.jobs.is_empty();
            stats.claimed.fetch_add(claimed.jobs.len() as u64, Ordering::Relaxed);
            for job in claimed.jobs {
                let Some(permit) = permits.pop() else { break };
                let cancel = CancellationToken::new();
                let reason = Arc::new(AtomicU8::new(STOP_NONE));
                if let Ok(mut m) = inflight.lock() {
                    m.insert(
                        job.lease.id,
                        InFlight {
                            pool: job.pool.clone(),
                            lease: job.lease.clone(),
                            cancel: cancel.clone(),
                            reason: reason.clone(),
                        },
                    );
                }
                let handler = handler.clone();
                let tx = done_tx.clone();
                let ledger = ledger.clone();
                let freed = freed.clone();
                let events = events.clone();
                // Everything logged while the job runs carries these fields, and only these: no
                // payload field (prompt, image, URL) can reach a log through the span.
                let span = tracing::info_span!(
                    "job",
                    job_id = %job.lease.id,
                    kind = %job.lease.kind,
                    tenant = %job.spec.tenant,
                    pool = %job.pool,
                    attempt = job.attempt,
                );
                tasks.spawn(
                    async move {
                        let (gpu, gib, pool, kind) =
                            (job.gpu, Ledger::vram_gib(&job), job.pool.clone(), job.lease.kind);
                        events.started(&pool, kind);
                        let began = std::time::Instant::now();
                        let outcome = run_one(handler, job, cancel, reason).await;
                        let class = match &outcome {
                            Outcome::Fail(f) => {
                                tracing::warn!(class = f.class.as_str(), error = %f.message, "attempt failed");
                                Some(f.class)
                            }
                            _ => None,
                        };
                        if !matches!(outcome, Outcome::Release(_) | Outcome::Drop(_)) {
                            events.finished(&pool, kind, class, began.elapsed());
                        }
                        if let Ok(mut l) = ledger.lock() {
                            l.release(gpu, gib);
                        }
                        drop(permit);
                        freed.notify_one();
                        let _ = tx.send(Completion { pool, outcome }).await;
                    }
                    .instrument(span),
                );
            }
            drop(permits);
            while tasks.try_join_next().is_some() {}
            if !idle {
                continue;
            }
            // Idle. If jobs waited that do not fit what is free here, wait for a running job to
            // free capacity (the wake-up went on to other workers); else block until a push, the
            // next delayed job, or idle_wait.
            let mut wait = cfg.idle_wait;
            if let Some(due) = claimed.next_due_ms {
                wait = wait.min(Duration::from_millis(due.saturating_sub(now_ms()).max(1)));
            }
            if unfit {
                tokio::select! {
                    _ = freed.notified() => {}
                    _ = tokio::time::sleep(wait) => {}
                    _ = shutdown.cancelled() => break 'claim,
                }
                continue;
            }
            if blocking.is_none() {
                match client.blocking_connection(cfg.idle_wait).await {
                    Ok(c) => blocking = Some(c),
                    Err(e) => {
                        tracing::warn!(error = %e, "blocking connection failed");
                        tokio::select! { _ = tokio::time::sleep(backoff.next_delay()) => continue, _ = shutdown.cancelled() => break 'claim }
                    }
                }
            }
            if let Some(conn) = blocking.as_mut() {
                tokio::select! {
                    r = client.wait_for_work(conn, &cfg.pool, &cfg.kinds, wait) => {
                        if let Err(e) = r {
                            tracing::debug!(error = %e, "wait for work failed; reconnecting");
                            blocking = None;
                            tokio::time::sleep(backoff.next_delay()).await;
                        }
                    }
                    _ = freed.notified() => {}
                    _ = shutdown.cancelled() => break 'claim,
                }
            }
        }

        // Drain: let running jobs finish within the grace period.
        let running = inflight.lock().map(|m| m.len()).unwrap_or(0);
        tracing::info!(running, grace_s = cfg.drain_grace.as_secs_f64(), "draining");
        let drained = tokio::time::timeout(cfg.drain_grace, async { while tasks.join_next().await.is_some() {} }).await;
        if drained.is_err() {
            if let Ok(m) = inflight.lock() {
                for f in m.values() {
                    let _ = f
                        .reason
                        .compare_exchange(STOP_NONE, STOP_DRAIN, Ordering::SeqCst, Ordering::SeqCst);
                    f.cancel.cancel();
                }
            }
            while tasks.join_next().await.is_some() {}
        }
        drop(done_tx);
        // The acker ends once every completion is flushed; heartbeats go on until then.
        let _ = acker.await;
        bg_stop.cancel();
        let _ = hb.await;
        let _ = reaper.await;
        Ok(stats)
    }
}

async fn run_one(
    handler: Arc<dyn JobHandler>,
    job: ClaimedJob,
    cancel: CancellationToken,
    reason: Arc<AtomicU8>,
) -> Outcome {
    let lease = job.lease.clone();
    let attempt = job.attempt;
    let timeout = Duration::from_secs(job.spec.timeout_secs);
    // The handler runs inline in this job's task; a panic is caught and becomes a retryable
    // failure, and a timeout or stop drops (cancels) the handler's future.
    let run = std::panic::AssertUnwindSafe(handler.handle(job, JobContext { cancel: cancel.clone() })).catch_unwind();
    let outcome = tokio::select! {
        r = run => match r {
            Ok(o) => o,
            Err(_) => JobOutcome::Failed { class: ErrorClass::Retryable, message: "executor panicked".into() },
        },
        _ = tokio::time::sleep(timeout) => {
            JobOutcome::Failed { class: ErrorClass::TimedOut, message: format!("attempt exceeded its {}s timeout", timeout.as_secs()) }
        }
        _ = cancel.cancelled() => {
            match reason.load(Ordering::SeqCst) {
                STOP_DRAIN => return Outcome::Release(lease),
                STOP_LOST => return Outcome::Drop(lease),
                _ => JobOutcome::Failed { class: ErrorClass::Cancelled, message: "cancelled by request".into() },
            }
        }
    };
    // The executor may have seen the stop before this select did: decide by the stop's reason,
    // not by which branch won. Work that succeeded anyway is still acked.
    match (reason.load(Ordering::SeqCst), &outcome) {
        (STOP_LOST, _) => return Outcome::Drop(lease),
        (STOP_DRAIN, JobOutcome::Failed { .. }) => return Outcome::Release(lease),
        _ => {}
    }
    match outcome {
        JobOutcome::Succeeded(r) => Outcome::Ack(lease, r),
        JobOutcome::Failed { class, message } => Outcome::Fail(Failure {
            lease,
            attempt,
            class,
            message,
        }),
    }
}

#[derive(Default)]
struct PoolBatch {
    acks: Vec<(LeaseRef, Option<ResultRef>)>,
    fails: Vec<Failure>,
    releases: Vec<LeaseRef>,
}

async fn ack_loop(
    client: QueueClient,
    mut rx: mpsc::Receiver<Completion>,
    inflight: Arc<Mutex<HashMap<JobId, InFlight>>>,
    stats: Arc<ConsumerStats>,
    events: Arc<dyn ConsumerEvents>,
    hard_stop: CancellationToken,
) {
    const MAX: usize = 1000;
    let mut buf = Vec::with_capacity(MAX);
    while rx.recv_many(&mut buf, MAX).await > 0 {
        let mut by_pool: HashMap<Pool, PoolBatch> = HashMap::new();
        let mut settled = Vec::with_capacity(buf.len());
        for c in buf.drain(..) {
            let b = by_pool.entry(c.pool).or_default();
            match c.outcome {
                Outcome::Ack(l, r) => {
                    settled.push(l.id);
                    b.acks.push((l, r));
                }
                Outcome::Fail(f) => {
                    settled.push(f.lease.id);
                    b.fails.push(f);
                }
                Outcome::Release(l) => {
                    settled.push(l.id);
                    b.releases.push(l);
                }
                Outcome::Drop(l) => settled.push(l.id),
            }
        }
        for (pool, b) in by_pool {
            settle(&client, &pool, b, &stats, events.as_ref(), &hard_stop).await;
        }
        // Only now stop heartbeating them: the outcome is durable. Where recording it failed for
        // good, stopping the heartbeats lets the leases expire, and the reaper runs them again.
        if let Ok(mut m) = inflight.lock() {
            for id in settled {
                m.remove(&id);
            }
        }
    }
}

async fn settle(
    client: &QueueClient,
    pool: &Pool,
    b: PoolBatch,
    stats: &ConsumerStats,
    events: &dyn ConsumerEvents,
    hard_stop: &CancellationToken,
) {
    if !b.acks.is_empty() {
        stats.ack_calls.fetch_add(1, Ordering::Relaxed);
        match retry_transient("ack", hard_stop, || client.ack(pool, &b.acks)).await {
            Ok(r) => {
                let ok = r.iter().filter(|o| **o == crate::client::AckOutcome::Acked).count() as u64;
                stats.succeeded.fetch_add(ok, Ordering::Relaxed);
                stats.stale.fetch_add(r.len() as u64 - ok, Ordering::Relaxed);
            }
            Err(e) => unsettled(&e, "ack", b.acks.len()),
        }
    }
    if !b.fails.is_empty() {
        match retry_transient("fail", hard_stop, || client.fail(pool, &b.fails)).await {
            Ok(outcomes) => {
                for (o, f) in outcomes.into_iter().zip(&b.fails) {
                    events.failure_recorded(pool, f.lease.kind, o);
                    let c = match o {
                        FailOutcome::Retry => &stats.retried,
                        FailOutcome::Dead => &stats.dead,
                        FailOutcome::Cancelled => &stats.cancelled,
                        FailOutcome::Stale => &stats.stale,
                    };
                    c.fetch_add(1, Ordering::Relaxed);
                }
            }
            Err(e) => unsettled(&e, "fail", b.fails.len()),
        }
    }
    if !b.releases.is_empty() {
        match retry_transient("release", hard_stop, || client.release(pool, &b.releases)).await {
            Ok(n) => {
                stats.released.fetch_add(n as u64, Ordering::Relaxed);
            }
            Err(e) => unsettled(&e, "release", b.releases.len()),
        }
    }
}

/// A batch whose outcome could not be recorded (a non-transient error, or Redis still down at a
/// hard stop). Its jobs are not lost: their leases expire and the reaper requeues them.
fn unsettled(e: &QueueError, what: &str, n: usize) {
    tracing::error!(error = %e, jobs = n, "{what} not recorded; the leases will expire and the jobs run again");
}

async fn heartbeat_loop(
    client: QueueClient,
    cfg: Arc<ConsumerConfig>,
    inflight: Arc<Mutex<HashMap<JobId, InFlight>>>,
    stop: CancellationToken,
) {
    let mut tick = tokio::time::interval(cfg.heartbeat_every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tokio::select! { _ = tick.tick() => {}, _ = stop.cancelled() => return }
        let mut by_pool: HashMap<Pool, Vec<LeaseRef>> = HashMap::new();
        match inflight.lock() {
            Ok(m) => {
                for f in m.values() {
                    by_pool.entry(f.pool.clone()).or_default().push(f.lease.clone());
                }
            }
            Err(_) => return,
        }
        for (pool, leases) in by_pool {
            for chunk in leases.chunks(500) {
                match client.heartbeat(&pool, chunk, cfg.lease).await {
                    Ok(states) => {
                        let Ok(m) = inflight.lock() else { return };
                        for (l, s) in chunk.iter().zip(states) {
                            let Some(f) = m.get(&l.id) else { continue };
                            match s {
                                LeaseState::Extended => {}
                                LeaseState::CancelRequested => {
                                    let _ = f.reason.compare_exchange(
                                        STOP_NONE,
                                        STOP_CANCEL,
                                        Ordering::SeqCst,
                                        Ordering::SeqCst,
                                    );
                                    f.cancel.cancel();
                                }
                                LeaseState::Lost => {
                                    tracing::warn!(job_id = %l.id, "lease lost; stopping the job without acking");
                                    f.reason.store(STOP_LOST, Ordering::SeqCst);
                                    f.cancel.cancel();
                                }
                            }
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "heartbeat failed"),
                }
            }
        }
    }
}

async fn reap_loop(client: QueueClient, cfg: Arc<ConsumerConfig>, stats: Arc<ConsumerStats>, stop: CancellationToken) {
    let mut tick = tokio::time::interval(cfg.reap_every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let pools: Vec<Pool> = std::iter::once(cfg.pool.clone())
        .chain(cfg.steal_from.iter().cloned())
        .collect();
    loop {
        tokio::select! { _ = tick.tick() => {}, _ = stop.cancelled() => return }
        for pool in &pools {
            match client.reap(pool, &cfg.kinds, 1000).await {
                Ok(r) if r.requeued + r.dead + r.cancelled > 0 => {
                    stats
                        .reaped
                        .fetch_add(r.requeued + r.dead + r.cancelled, Ordering::Relaxed);
                    tracing::info!(requeued = r.requeued, dead = r.dead, cancelled = r.cancelled, %pool, "reaped expired leases");
                }
                Ok(_) => {}
                Err(e) => tracing::debug!(error = %e, "reap failed"),
            }
        }
    }
}
