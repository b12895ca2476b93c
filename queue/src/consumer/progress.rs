//! Progress reports: an executor tells its [`ProgressHandle`] what it is doing as often as it
//! likes; the consumer keeps only each job's latest report and stores them, for all its jobs of
//! a pool in one Redis call, once per `progress_every` (a second by default). So a job's
//! progress costs Redis at most one write a second, however chatty its executor, and each write
//! is fenced by the job's lease (`progress.lua`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::Stage;
use crate::client::{LeaseRef, ProgressReport, QueueClient};
use crate::job::JobId;
use crate::keys::Pool;

/// The latest unstored report of each job, shared by a consumer's jobs and its flusher.
#[derive(Debug, Default)]
pub(crate) struct ProgressBoard {
    pending: Mutex<HashMap<JobId, (Pool, ProgressReport)>>,
}

impl ProgressBoard {
    fn take(&self) -> HashMap<Pool, Vec<ProgressReport>> {
        let mut by_pool: HashMap<Pool, Vec<ProgressReport>> = HashMap::new();
        if let Ok(mut m) = self.pending.lock() {
            for (_, (pool, r)) in m.drain() {
                by_pool.entry(pool).or_default().push(r);
            }
        }
        by_pool
    }
}

/// Where one attempt reports its progress. A handle made outside a consumer
/// ([`Default`]) reports nowhere.
#[derive(Clone, Debug, Default)]
pub struct ProgressHandle {
    target: Option<Arc<Target>>,
}

#[derive(Debug)]
struct Target {
    board: Arc<ProgressBoard>,
    pool: Pool,
    lease: LeaseRef,
    attempt: u32,
}

impl ProgressHandle {
    pub(crate) fn new(board: Arc<ProgressBoard>, pool: Pool, lease: LeaseRef, attempt: u32) -> Self {
        Self {
            target: Some(Arc::new(Target {
                board,
                pool,
                lease,
                attempt,
            })),
        }
    }

    /// The attempt is at `stage`, `percent` done where known (clamped to 0..=100). Cheap: it
    /// replaces the job's pending report in memory; the consumer stores the latest one.
    pub fn report(&self, stage: Stage, percent: Option<f32>) {
        let Some(t) = &self.target else { return };
        let report = ProgressReport {
            lease: t.lease.clone(),
            attempt: t.attempt,
            stage,
            percent,
        };
        if let Ok(mut m) = t.board.pending.lock() {
            m.insert(t.lease.id, (t.pool.clone(), report));
        }
    }
}

/// Stores the pending reports every `every` until `stop`, then once more.
pub(crate) async fn progress_loop(
    client: QueueClient,
    board: Arc<ProgressBoard>,
    every: Duration,
    stop: CancellationToken,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let stopping = tokio::select! { _ = tick.tick() => false, _ = stop.cancelled() => true };
        for (pool, reports) in board.take() {
            for chunk in reports.chunks(500) {
                if let Err(e) = client.report_progress(&pool, chunk).await {
                    // Advisory: the next report replaces it.
                    tracing::debug!(error = %e, %pool, "storing progress failed");
                }
            }
        }
        if stopping {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_latest_report_of_each_job_is_kept_and_a_detached_handle_reports_nowhere() {
        let board = Arc::new(ProgressBoard::default());
        let pool = Pool::new("cpu").expect("pool");
        let lease = |id| LeaseRef {
            id,
            kind: crate::JobKind::Noop,
            token: 1,
        };
        let (a, b) = (JobId::new(), JobId::new());
        let ha = ProgressHandle::new(board.clone(), pool.clone(), lease(a), 1);
        let hb = ProgressHandle::new(board.clone(), pool.clone(), lease(b), 3);
        for p in 0..100 {
            ha.report(Stage::Encoding, Some(p as f32));
        }
        hb.report(Stage::Hashing, None);
        ProgressHandle::default().report(Stage::Working, Some(1.0));
        let taken = board.take();
        let mut reports = taken[&pool].clone();
        reports.sort_by_key(|r| r.attempt);
        assert_eq!(reports.len(), 2);
        assert_eq!((reports[0].stage, reports[0].percent), (Stage::Encoding, Some(99.0)));
        assert_eq!((reports[1].stage, reports[1].attempt), (Stage::Hashing, 3));
        assert!(board.take().is_empty(), "taken once");
    }
}
