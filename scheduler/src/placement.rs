//! Placement: which declared pool a job goes to. A pool can take a job when it runs the job's
//! kind and its GPUs meet the job's needs (VRAM, NVENC). Among those, a pool with live workers
//! and the shortest estimated wait (backlog × mean service time ÷ live workers) wins; when none
//! has live workers, the first that fits still gets it (autoscaling starts its workers). A job no
//! declared pool can ever run is refused, naming the unmet requirement.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use gantry_queue::{JobKind, Pool, QueueClient, QueueError, Requirements};
use tokio_util::sync::CancellationToken;

use crate::config::{PoolConfig, SchedulerConfig};

/// Why no pool can ever run a job.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("no declared pool can run this job: {unmet}")]
pub struct Unplaceable {
    /// The requirement no pool meets (`kind upscale`, `min_vram_bytes 100 GiB`, `nvenc`).
    pub unmet: String,
}

/// What placement knows of a pool now.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct PoolLoad {
    /// Jobs waiting or running.
    pub backlog: u64,
    /// Jobs running.
    pub in_flight: u64,
    /// Live workers in the fleet registry.
    pub live_workers: u32,
    /// Age of the oldest waiting job, seconds.
    pub oldest_age_secs: f64,
    /// Jobs in the dead-letter queues.
    pub dead: u64,
    /// Jobs waiting for their run-at time.
    pub delayed: u64,
    /// Credit events of finished jobs not settled yet.
    pub unsettled_credits: u64,
    /// Age of the oldest unsettled credit event, seconds (0 when none).
    pub credit_lag_secs: f64,
    /// Pipeline hand-offs to other pools not applied yet.
    pub handoffs_pending: u64,
    /// Age of the oldest, seconds (0 when none).
    pub handoff_lag_secs: f64,
}

/// The pools' loads, refreshed in the background.
#[derive(Clone, Debug, Default)]
pub struct PoolLoads {
    inner: Arc<RwLock<BTreeMap<String, PoolLoad>>>,
    /// Whether the last refresh read everything it asked Redis for.
    redis_up: Arc<AtomicBool>,
}

impl PoolLoads {
    /// The last reading for `pool`.
    pub fn get(&self, pool: &str) -> PoolLoad {
        self.inner
            .read()
            .ok()
            .and_then(|m| m.get(pool).copied())
            .unwrap_or_default()
    }

    /// Every pool's last reading.
    pub fn all(&self) -> BTreeMap<String, PoolLoad> {
        self.inner.read().map(|m| m.clone()).unwrap_or_default()
    }

    /// Whether the last refresh could read everything from Redis. While it cannot, each pool
    /// keeps its last reading (a Redis outage does not read as an empty backlog).
    pub fn redis_up(&self) -> bool {
        self.redis_up.load(Ordering::Relaxed)
    }

    /// Reads every declared pool's queue stats, live workers and credit backlog now.
    pub async fn refresh(&self, q: &QueueClient, cfg: &SchedulerConfig) {
        let before = self.all();
        let mut next = BTreeMap::new();
        let mut up = true;
        for (name, p) in &cfg.pools {
            let Ok(pool) = Pool::new(name) else { continue };
            match read_load(q, &pool, &p.kinds).await {
                Ok(load) => {
                    next.insert(name.clone(), load);
                }
                Err(e) => {
                    up = false;
                    tracing::warn!(pool = %name, error = %e, "pool load unreadable; keeping the last reading");
                    next.insert(name.clone(), before.get(name).copied().unwrap_or_default());
                }
            }
        }
        self.redis_up.store(up, Ordering::Relaxed);
        if let Ok(mut m) = self.inner.write() {
            *m = next;
        }
    }

    /// Refreshes every `every` until `stop`.
    pub async fn run(self, q: QueueClient, cfg: Arc<SchedulerConfig>, every: Duration, stop: CancellationToken) {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! { _ = tick.tick() => {}, _ = stop.cancelled() => return }
            self.refresh(&q, &cfg).await;
        }
    }
}

async fn read_load(q: &QueueClient, pool: &Pool, kinds: &[JobKind]) -> Result<PoolLoad, QueueError> {
    let mut load = PoolLoad::default();
    for s in q.stats(pool, kinds).await? {
        load.backlog += s.waiting_total() + s.in_flight;
        load.in_flight += s.in_flight;
        load.dead += s.dead;
        load.delayed += s.delayed;
        load.oldest_age_secs = load
            .oldest_age_secs
            .max(s.oldest_waiting_ms.unwrap_or(0) as f64 / 1000.0);
    }
    load.live_workers = q.workers(pool).await?.iter().filter(|w| !w.draining).count() as u32;
    let credits = q.credit_backlog(pool).await?;
    load.unsettled_credits = credits.events;
    load.credit_lag_secs = credits.oldest_ms.unwrap_or(0) as f64 / 1000.0;
    let handoffs = q.handoff_backlog(pool).await?;
    load.handoffs_pending = handoffs.events;
    load.handoff_lag_secs = handoffs.oldest_ms.unwrap_or(0) as f64 / 1000.0;
    Ok(load)
}

fn fits(p: &PoolConfig, kind: JobKind, req: &Requirements) -> bool {
    p.kinds.contains(&kind)
        && match &req.gpu {
            None => true,
            Some(g) => p.gpu_vram_gib.is_some_and(|v| v << 30 >= g.min_vram_bytes) && (!g.nvenc || p.nvenc),
        }
}

/// Chooses the pool for a job. See the module docs.
pub fn place(
    cfg: &SchedulerConfig,
    loads: &PoolLoads,
    kind: JobKind,
    req: &Requirements,
) -> Result<String, Unplaceable> {
    let candidates: Vec<(&String, &PoolConfig)> = cfg.pools.iter().filter(|(_, p)| fits(p, kind, req)).collect();
    if candidates.is_empty() {
        let serving: Vec<&PoolConfig> = cfg.pools.values().filter(|p| p.kinds.contains(&kind)).collect();
        let unmet = match &req.gpu {
            _ if serving.is_empty() => format!("kind {kind}"),
            Some(g) if g.nvenc && !serving.iter().any(|p| p.nvenc) => "nvenc".to_owned(),
            Some(g) => format!(
                "min_vram_bytes {} ({} GiB)",
                g.min_vram_bytes,
                g.min_vram_bytes.div_ceil(1 << 30)
            ),
            None => format!("kind {kind}"),
        };
        return Err(Unplaceable { unmet });
    }
    let wait = |name: &str, p: &PoolConfig| {
        let l = loads.get(name);
        (l.backlog as f64 + 1.0) * p.mean_service_secs / f64::from(l.live_workers.max(1))
    };
    let live = candidates
        .iter()
        .filter(|(n, _)| loads.get(n).live_workers > 0)
        .min_by(|a, b| wait(a.0, a.1).total_cmp(&wait(b.0, b.1)));
    Ok(match live {
        Some((n, _)) => (*n).clone(),
        None => candidates[0].0.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use gantry_queue::GpuRequirement;

    fn gpu(gib: u64, nvenc: bool) -> Requirements {
        Requirements {
            gpu: Some(GpuRequirement {
                min_vram_bytes: gib << 30,
                nvenc,
                count: 1,
            }),
            preferred_model: None,
        }
    }

    #[test]
    fn requirements_pick_the_pools_and_load_picks_among_them() {
        let cfg = SchedulerConfig::demo();
        let loads = PoolLoads::default();
        // Nothing live anywhere: the first pool that fits.
        assert_eq!(
            place(&cfg, &loads, JobKind::Upscale, &gpu(40, false)).expect("a declared pool fits"),
            "gpu-h100"
        );
        assert_eq!(
            place(&cfg, &loads, JobKind::Transcode, &gpu(8, true)).expect("a declared pool fits"),
            "gpu-l4"
        );
        assert_eq!(
            place(&cfg, &loads, JobKind::Upscale, &gpu(200, false))
                .unwrap_err()
                .unmet,
            "min_vram_bytes 214748364800 (200 GiB)"
        );
        assert_eq!(
            place(&cfg, &loads, JobKind::Upscale, &gpu(40, true)).unwrap_err().unmet,
            "min_vram_bytes 42949672960 (40 GiB)"
        );
        assert_eq!(
            place(&cfg, &loads, JobKind::Generate, &gpu(8, false))
                .unwrap_err()
                .unmet,
            "min_vram_bytes 8589934592 (8 GiB)"
        );
        // A CPU job: the live pool with the shorter wait.
        if let Ok(mut m) = loads.inner.write() {
            m.insert(
                "cpu".into(),
                PoolLoad {
                    backlog: 500,
                    live_workers: 1,
                    ..Default::default()
                },
            );
            m.insert(
                "gpu-l4".into(),
                PoolLoad {
                    backlog: 10,
                    live_workers: 2,
                    ..Default::default()
                },
            );
        }
        assert_eq!(
            place(&cfg, &loads, JobKind::Noop, &Requirements::default()).expect("a declared pool fits"),
            "gpu-l4"
        );
        assert_eq!(
            place(&cfg, &loads, JobKind::Generate, &Requirements::default()).expect("a declared pool fits"),
            "cpu"
        );
    }
}
