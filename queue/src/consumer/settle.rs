//! Settlement and upkeep: batched acks, failures and releases per pool; lease heartbeats, which
//! also carry cancellation requests and lost leases back to running jobs; the lease reaper.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::client::{FailOutcome, Failure, LeaseRef, LeaseState, QueueClient};
use crate::error::QueueError;
use crate::job::{Completion, JobId};
use crate::keys::Pool;
use crate::retry::retry_transient;

use super::ticket::{InFlight, Outcome, STOP_CANCEL, STOP_LOST, Settled};
use super::{ConsumerConfig, ConsumerEvents, ConsumerStats};

#[derive(Default)]
struct PoolBatch {
    acks: Vec<(LeaseRef, Completion)>,
    fails: Vec<Failure>,
    releases: Vec<LeaseRef>,
}

pub(crate) async fn ack_loop(
    client: QueueClient,
    mut rx: mpsc::UnboundedReceiver<Settled>,
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
        // Closed once the batch is recorded: each traced job's span covers its wait for the
        // batch and the round trip.
        let mut spans = Vec::new();
        for c in buf.drain(..) {
            spans.extend(c.span);
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
        drop(spans);
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
                        FailOutcome::Blocked => &stats.blocked,
                        FailOutcome::Withheld => &stats.withheld,
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

pub(crate) async fn heartbeat_loop(
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
                                LeaseState::CancelRequested => f.stop(STOP_CANCEL),
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

pub(crate) async fn reap_loop(
    client: QueueClient,
    cfg: Arc<ConsumerConfig>,
    stats: Arc<ConsumerStats>,
    stop: CancellationToken,
) {
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
