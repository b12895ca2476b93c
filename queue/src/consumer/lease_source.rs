//! The claim loop: leases jobs that fit what is free here and hands each out with its
//! [`Ticket`]; on shutdown, drains. It runs no job itself: a runner (the inline one in
//! [`Consumer::run`](super::Consumer::run), or the worker's apalis backend) takes the [`Leased`]
//! jobs from [`Leases`] and settles each ticket.
//!
//! Batching is what makes it fast: one claim script takes as many jobs as there are free slots,
//! and settlements that arrive while an ack is in flight go out together in the next one.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::{Notify, Semaphore, mpsc};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::client::{ClaimBatch, ClaimedJob, QueueClient};
use crate::error::QueueError;
use crate::job::JobId;
use crate::keys::Pool;
use crate::retry::Backoff;

use super::ledger::Ledger;
use super::settle::{ack_loop, heartbeat_loop, reap_loop};
use super::ticket::{InFlight, STOP_DRAIN, STOP_NONE, Ticket, TicketShared};
use super::{ConsumerConfig, ConsumerEvents, ConsumerStats, NoEvents};

/// A leased job and the duty to settle it.
#[derive(Debug)]
pub struct Leased {
    /// The job.
    pub job: ClaimedJob,
    /// Settle it exactly once with what running the job gave.
    pub ticket: Ticket,
}

/// The leased jobs, in claim order. Ends after a shutdown, once the claim loop has stopped.
#[derive(Debug)]
pub struct Leases {
    rx: mpsc::UnboundedReceiver<Leased>,
}

impl Leases {
    /// The next leased job; `None` once the source has stopped.
    pub async fn recv(&mut self) -> Option<Leased> {
        self.rx.recv().await
    }

    /// Polls for the next leased job (for a runner that is itself polled, like a backend).
    pub fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<Leased>> {
        self.rx.poll_recv(cx)
    }
}

/// The source's own task: it ends once the drain is over and every outcome is recorded.
#[derive(Debug)]
pub struct Settlement {
    handle: JoinHandle<Arc<ConsumerStats>>,
}

impl Future for Settlement {
    type Output = Result<Arc<ConsumerStats>, QueueError>;

    fn poll(mut self: std::pin::Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        std::pin::Pin::new(&mut self.handle)
            .poll(cx)
            .map(|r| r.map_err(QueueError::ConsumerTask))
    }
}

/// Claims jobs for one worker and hands them out with their tickets.
pub struct LeaseSource {
    client: QueueClient,
    cfg: ConsumerConfig,
    stats: Arc<ConsumerStats>,
    inflight: Arc<Mutex<HashMap<JobId, InFlight>>>,
    events: Arc<dyn ConsumerEvents>,
    /// What running jobs reserve; shared with the tickets, read by the fleet registry.
    ledger: Arc<Mutex<Ledger>>,
}

impl std::fmt::Debug for LeaseSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeaseSource")
            .field("cfg", &self.cfg)
            .finish_non_exhaustive()
    }
}

/// A blocking wait for a push on its own connection, which it gives back when it ends.
type WaitForWork =
    std::pin::Pin<Box<dyn std::future::Future<Output = (crate::conn::RedisConn, Result<bool, QueueError>)> + Send>>;

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl LeaseSource {
    /// A source of `cfg.kinds` jobs from `cfg.pool` (and its steal pools).
    pub fn new(client: QueueClient, cfg: ConsumerConfig) -> Self {
        Self {
            client,
            stats: Arc::default(),
            inflight: Arc::default(),
            events: Arc::new(NoEvents),
            ledger: Arc::new(Mutex::new(Ledger::new(&cfg.resources, cfg.concurrency))),
            cfg,
        }
    }

    /// Reports claims, starts, finishes and recorded failures to `events`.
    pub fn with_events(mut self, events: Arc<dyn ConsumerEvents>) -> Self {
        self.events = events;
        self
    }

    /// The configuration.
    pub fn config(&self) -> &ConsumerConfig {
        &self.cfg
    }

    /// Live counters.
    pub fn stats(&self) -> Arc<ConsumerStats> {
        self.stats.clone()
    }

    /// A handle that reads the number of jobs leased and not yet settled.
    pub fn in_flight_gauge(&self) -> impl Fn() -> usize + Send + Sync + 'static {
        let m = self.inflight.clone();
        move || m.lock().map(|m| m.len()).unwrap_or(0)
    }

    /// A handle that reads the VRAM running jobs reserve on each GPU, in bytes (as jobs ask,
    /// whole GiB), in the order of the configured GPUs.
    pub fn reserved_vram_gauge(&self) -> impl Fn() -> Vec<u64> + Send + Sync + 'static {
        let l = self.ledger.clone();
        move || l.lock().map(|l| l.reserved_bytes()).unwrap_or_default()
    }

    /// Starts claiming. Runs until `shutdown` is cancelled, then drains: stops claiming, lets
    /// running jobs finish within `drain_grace`, stops the rest (their tickets release their
    /// leases), and flushes every outcome; then [`Settlement`] completes.
    pub fn start(self, shutdown: CancellationToken) -> (Leases, Settlement) {
        let (tx, rx) = mpsc::unbounded_channel();
        let handle = tokio::spawn(self.run(tx, shutdown));
        (Leases { rx }, Settlement { handle })
    }

    async fn run(self, jobs: mpsc::UnboundedSender<Leased>, shutdown: CancellationToken) -> Arc<ConsumerStats> {
        let LeaseSource {
            client,
            cfg,
            stats,
            inflight,
            events,
            ledger,
        } = self;
        let cfg = Arc::new(cfg);
        let (done_tx, done_rx) = mpsc::unbounded_channel();
        let shared = Arc::new(TicketShared {
            ledger,
            freed: Notify::new(),
            done: done_tx,
            events: events.clone(),
            progress: Arc::default(),
        });
        let slots = Arc::new(Semaphore::new(cfg.concurrency));
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
        let progress = tokio::spawn(super::progress::progress_loop(
            client.clone(),
            shared.progress.clone(),
            cfg.progress_every,
            bg_stop.clone(),
        ));
        let reaper = tokio::spawn(reap_loop(client.clone(), cfg.clone(), stats.clone(), bg_stop.clone()));
        let pools: Vec<Pool> = std::iter::once(cfg.pool.clone())
            .chain(cfg.steal_from.iter().cloned())
            .collect();

        let mut blocking = None;
        // The blocking wait for a push, kept across the loop when something else (capacity
        // freed) ends a round first: a BLPOP abandoned mid-flight would still pop the next wake
        // token on the server, and the one after it on the same connection would wait its full
        // timeout for a token that was already taken.
        let mut pending: Option<WaitForWork> = None;
        let mut backoff = Backoff::default();
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
                let capacity = match shared.ledger.lock() {
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
                        if let Ok(mut l) = shared.ledger.lock() {
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
                shared.events.started(&job.pool, job.lease.kind, job.waited);
                let ticket = Ticket::new(
                    job.pool.clone(),
                    job.lease.clone(),
                    job.attempt,
                    job.gpus.clone(),
                    Ledger::vram_gib(&job),
                    cancel,
                    reason,
                    job.spec.traceparent.is_some(),
                    shared.clone(),
                    permit,
                );
                // A runner that went away drops the job here, and its ticket releases it.
                let _ = jobs.send(Leased { job, ticket });
            }
            drop(permits);
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
                    _ = shared.freed.notified() => {}
                    _ = tokio::time::sleep(wait) => {}
                    _ = shutdown.cancelled() => break 'claim,
                }
                continue;
            }
            if pending.is_none() {
                if blocking.is_none() {
                    match client.blocking_connection(cfg.idle_wait).await {
                        Ok(c) => blocking = Some(c),
                        Err(e) => {
                            tracing::warn!(error = %e, "blocking connection failed");
                            tokio::select! { _ = tokio::time::sleep(backoff.next_delay()) => continue, _ = shutdown.cancelled() => break 'claim }
                        }
                    }
                }
                if let Some(mut conn) = blocking.take() {
                    let (client, pool, kinds) = (client.clone(), cfg.pool.clone(), cfg.kinds.clone());
                    pending = Some(Box::pin(async move {
                        let r = client.wait_for_work(&mut conn, &pool, &kinds, wait).await;
                        (conn, r)
                    }));
                }
            }
            if let Some(wait_for_work) = pending.as_mut() {
                tokio::select! {
                    (conn, r) = wait_for_work => {
                        pending = None;
                        match r {
                            Ok(_) => blocking = Some(conn),
                            Err(e) => {
                                tracing::debug!(error = %e, "wait for work failed; reconnecting");
                                tokio::time::sleep(backoff.next_delay()).await;
                            }
                        }
                    }
                    // (the wait stays pending for the next round)
                    _ = shared.freed.notified() => {}
                    _ = shutdown.cancelled() => break 'claim,
                }
            }
        }
        // No more jobs: the runner sees the end of `Leases` once it has taken the last one.
        drop(jobs);

        // Drain: every slot comes back when every ticket is settled. Running jobs get the grace
        // period; then the rest are stopped, and their tickets release their leases.
        let all = u32::try_from(cfg.concurrency).unwrap_or(u32::MAX);
        let running = inflight.lock().map(|m| m.len()).unwrap_or(0);
        tracing::info!(running, grace_s = cfg.drain_grace.as_secs_f64(), "draining");
        let drained = tokio::time::timeout(cfg.drain_grace, slots.acquire_many(all)).await;
        if drained.is_err() {
            if let Ok(m) = inflight.lock() {
                for f in m.values() {
                    f.stop(STOP_DRAIN);
                }
            }
            let _ = slots.acquire_many(all).await;
        }
        // The acker ends once every outcome is flushed; heartbeats go on until then.
        drop(shared);
        let _ = acker.await;
        bg_stop.cancel();
        let _ = hb.await;
        let _ = reaper.await;
        let _ = progress.await;
        stats
    }
}
