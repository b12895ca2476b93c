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
            loop {
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = tokio::time::sleep(EVERY) => {}
                }
                // The task's own receiver is not a watcher.
                if tx.receiver_count() <= 1 {
                    continue;
                }
                match snapshot(&queue, &cfg, &loads).await {
                    Ok(s) => {
                        tx.send_if_modified(|old| {
                            let changed = *old != s;
                            if changed {
                                *old = s;
                            }
                            changed
                        });
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
        });
    }
    Ok(serde_json::json!({ "pools": pools }).to_string())
}
