//! The console overview's live snapshot: one task reads every pool's queues every [`EVERY`]
//! while at least one console watches, and shares the snapshot (JSON) with all of them through a
//! watch channel, so twenty open consoles cost what one does (`console::live` streams it).

use std::time::Duration;

use serde::Serialize;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::config::SchedulerConfig;
use crate::placement::PoolLoads;
use gantry_queue::QueueClient;

/// How often the snapshot is read while someone watches.
pub const EVERY: Duration = Duration::from_secs(2);

/// One pool in a snapshot.
#[derive(Debug, Serialize)]
struct PoolSnapshot {
    pool: String,
    live_workers: u32,
    desired_workers: u32,
    queues: Vec<gantry_queue::QueueStats>,
    /// The last hour, in the overview's words.
    last_hour: String,
}

/// The shared snapshot: subscribe to follow it. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Live {
    rx: watch::Receiver<String>,
}

impl Live {
    /// Starts the task that reads snapshots while anyone follows them.
    pub fn start(
        queue: QueueClient,
        cfg: std::sync::Arc<SchedulerConfig>,
        loads: PoolLoads,
        shutdown: CancellationToken,
    ) -> Self {
        let (tx, rx) = watch::channel(String::new());
        tokio::spawn(async move {
            // The pools as last sent: a snapshot goes out only when they change.
            let mut last = String::new();
            loop {
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = tokio::time::sleep(EVERY) => {}
                }
                // The task's own receiver is not a watcher.
                if tx.receiver_count() <= 1 {
                    continue;
                }
                // When the read began: a page rendered later than this ignores the snapshot (its
                // own numbers are at least as new).
                let at_ms = gantry_core::time::now_ms();
                match snapshot(&queue, &cfg, &loads).await {
                    Ok(pools) => {
                        if pools != last {
                            tx.send_replace(format!(r#"{{"at_ms":{at_ms},"pools":{pools}}}"#));
                            last = pools;
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "reading the console's overview failed"),
                }
            }
        });
        Self { rx }
    }

    /// A follower of the snapshot.
    pub fn follow(&self) -> watch::Receiver<String> {
        self.rx.clone()
    }
}

/// The width of the buckets finished jobs are counted in.
const BUCKET_MS: u64 = 5 * 60_000;
/// Buckets kept (a little over the hour shown).
const BUCKET_TTL_SECS: u64 = 2 * 3600;

fn bucket_key(prefix: &str, bucket: u64) -> String {
    format!("{prefix}outcomes:{bucket}")
}

/// Counts finished jobs of the pool whose keys begin `prefix` by outcome, in the current
/// five-minute bucket (the credit settler calls this once per batch it settles, so each job is
/// counted once, fleet-wide).
pub async fn count_outcomes(
    conn: &gantry_queue::RedisConn,
    prefix: &str,
    outcomes: &std::collections::BTreeMap<&str, u64>,
) -> Result<(), gantry_queue::QueueError> {
    if outcomes.is_empty() {
        return Ok(());
    }
    let key = bucket_key(prefix, gantry_core::time::now_ms() / BUCKET_MS);
    let mut pipe = redis::pipe();
    for (outcome, n) in outcomes {
        pipe.cmd("HINCRBY").arg(&key).arg(*outcome).arg(*n).ignore();
    }
    pipe.cmd("EXPIRE").arg(&key).arg(BUCKET_TTL_SECS).ignore();
    let mut c = conn.clone();
    pipe.query_async::<()>(&mut c).await?;
    Ok(())
}

/// A pool's finished jobs over about the last hour (the current five-minute bucket and the
/// twelve before it).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct LastHour {
    /// Succeeded.
    pub succeeded: u64,
    /// Dead-lettered (failed for good).
    pub dead: u64,
    /// Cancelled.
    pub cancelled: u64,
    /// Blocked by the safety scan.
    pub blocked: u64,
}

impl LastHour {
    /// Finished, whatever the outcome.
    pub fn finished(&self) -> u64 {
        self.succeeded + self.dead + self.cancelled + self.blocked
    }

    /// In words, as the overview shows it (and its live updates write it).
    pub fn describe(&self) -> String {
        let rate = match self.failure_percent() {
            Some(p) => format!("{p:.1}% failed"),
            None => "no failure rate yet".to_owned(),
        };
        format!(
            "{} finished ({:.1}/min): {} succeeded, {} dead ({rate}), {} cancelled, {} blocked",
            self.finished(),
            self.finished() as f64 / 60.0,
            self.succeeded,
            self.dead,
            self.cancelled,
            self.blocked
        )
    }

    /// Dead-lettered per job that succeeded or died, in percent (`None` with neither).
    pub fn failure_percent(&self) -> Option<f64> {
        let n = self.succeeded + self.dead;
        (n > 0).then(|| self.dead as f64 * 100.0 / n as f64)
    }
}

/// [`LastHour`] of `pool`.
pub async fn last_hour(queue: &QueueClient, pool: &gantry_queue::Pool) -> Result<LastHour, gantry_queue::QueueError> {
    let now = gantry_core::time::now_ms() / BUCKET_MS;
    let mut pipe = redis::pipe();
    for b in now.saturating_sub(12)..=now {
        pipe.cmd("HGETALL").arg(bucket_key(&pool.prefix(), b));
    }
    let mut c = queue.connection();
    let buckets: Vec<std::collections::HashMap<String, u64>> = pipe.query_async(&mut c).await?;
    let mut out = LastHour::default();
    for b in buckets {
        let n = |k: &str| b.get(k).copied().unwrap_or(0);
        out.succeeded += n("succeeded");
        out.dead += n("dead");
        out.cancelled += n("cancelled");
        out.blocked += n("blocked");
    }
    Ok(out)
}

async fn snapshot(
    queue: &QueueClient,
    cfg: &SchedulerConfig,
    loads: &PoolLoads,
) -> Result<String, gantry_queue::QueueError> {
    let mut pools = Vec::with_capacity(cfg.pools.len());
    for (name, p) in &cfg.pools {
        let pool = gantry_queue::Pool::new(name)?;
        let load = loads.get(name);
        pools.push(PoolSnapshot {
            pool: name.clone(),
            live_workers: load.live_workers,
            desired_workers: crate::metrics::desired_workers(p, &load),
            queues: queue.stats(&pool, &p.kinds).await?,
            last_hour: last_hour(queue, &pool).await?.describe(),
        });
    }
    serde_json::to_string(&pools).map_err(|e| gantry_queue::QueueError::Protocol(format!("overview snapshot: {e}")))
}
