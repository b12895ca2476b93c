//! The worker's main loop: a queue consumer whose handler dispatches to the executors.

use std::sync::Arc;
use std::time::Duration;

use gantry_queue::{Consumer, ConsumerConfig, ConsumerStats, JobKind, Pool, QueueClient, QueueConfig, QueueError};
use tokio_util::sync::CancellationToken;

use crate::executors::ExecutorSet;

/// Why a worker stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// The queue failed in a way retrying cannot fix.
    #[error(transparent)]
    Queue(#[from] QueueError),
    /// Nothing to serve.
    #[error("no executor for any of the requested kinds")]
    NoKinds,
}

/// Typed worker configuration.
#[derive(Clone, Debug)]
pub struct WorkerConfig {
    /// `REDIS_URL`.
    pub redis_url: String,
    /// Pool this worker belongs to.
    pub pool: Pool,
    /// This worker's id.
    pub worker_id: String,
    /// Jobs run at once.
    pub concurrency: usize,
    /// Lease length.
    pub lease: Duration,
    /// Drain grace period on SIGTERM.
    pub drain_grace: Duration,
}

/// Runs a worker until `shutdown`, then drains. Returns its counters.
pub async fn run_worker(
    cfg: WorkerConfig,
    executors: ExecutorSet,
    shutdown: CancellationToken,
) -> Result<Arc<ConsumerStats>, WorkerError> {
    let kinds: Vec<JobKind> = executors.kinds();
    if kinds.is_empty() {
        return Err(WorkerError::NoKinds);
    }
    let client = connect_with_retry(&cfg.redis_url, &shutdown).await?;
    let mut ccfg = ConsumerConfig::new(cfg.pool.clone(), kinds.clone(), cfg.worker_id.clone());
    ccfg.concurrency = cfg.concurrency.max(1);
    ccfg.claim_batch = ccfg.concurrency.min(200);
    ccfg.lease = cfg.lease;
    ccfg.heartbeat_every = cfg.lease / 3;
    ccfg.drain_grace = cfg.drain_grace;
    tracing::info!(
        worker_id = %cfg.worker_id,
        pool = %cfg.pool,
        kinds = ?kinds.iter().map(|k| k.as_str()).collect::<Vec<_>>(),
        concurrency = ccfg.concurrency,
        "worker started"
    );
    let consumer = Consumer::new(client, ccfg, move |job, ctx| executors.dispatch(job, ctx));
    Ok(consumer.run(shutdown).await?)
}

/// Connects, retrying while Redis is unreachable (a worker may start before Redis does).
pub async fn connect_with_retry(url: &str, stop: &CancellationToken) -> Result<QueueClient, QueueError> {
    let mut backoff = gantry_queue::retry::Backoff::default();
    loop {
        match QueueClient::connect(url, QueueConfig::default()).await {
            Ok(c) => return Ok(c),
            Err(e) if e.is_transient() && !stop.is_cancelled() => {
                let d = backoff.next_delay();
                tracing::warn!(error = %e, "redis unreachable; retrying");
                tokio::time::sleep(d).await;
            }
            Err(e) => return Err(e),
        }
    }
}
