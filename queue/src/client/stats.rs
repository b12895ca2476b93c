//! Queue depths, in-flight and dead counts, the oldest waiting job; pausing a queue.

use super::QueueClient;
use crate::error::{During, QueueError};
use crate::job::JobKind;
use crate::keys::{Pool, QueueName};
use crate::scripts;

/// Depth and age of one queue.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct QueueStats {
    /// Pool.
    pub pool: String,
    /// Kind.
    pub kind: JobKind,
    /// Waiting, per priority: high, normal, bulk.
    pub waiting: [u64; 3],
    /// Leased to workers.
    pub in_flight: u64,
    /// Delayed or waiting for a retry.
    pub delayed: u64,
    /// In the dead-letter queue.
    pub dead: u64,
    /// Age of the oldest waiting job, in milliseconds.
    pub oldest_waiting_ms: Option<u64>,
    /// Paused: taking jobs, but no worker claims from it.
    pub paused: bool,
}

impl QueueStats {
    /// All waiting jobs.
    pub fn waiting_total(&self) -> u64 {
        self.waiting.iter().sum()
    }
}

impl QueueClient {
    /// Depth, in-flight count and oldest-job age of each of `kinds` in `pool`.
    pub async fn stats(&self, pool: &Pool, kinds: &[JobKind]) -> Result<Vec<QueueStats>, QueueError> {
        let mut inv = scripts::STATS.prepare_invoke();
        inv.key(pool.prefix());
        for k in kinds {
            inv.arg(k.as_str());
        }
        let mut c = self.conn.clone();
        let r: Vec<i64> = inv.invoke_async(&mut c).await.during("stats", pool)?;
        if r.len() != kinds.len() * 9 {
            return Err(QueueError::Protocol(format!(
                "stats reply of {} values for {} kinds",
                r.len(),
                kinds.len()
            )));
        }
        Ok(kinds
            .iter()
            .zip(r.chunks_exact(9))
            .map(|(kind, s)| {
                let now = s[7];
                QueueStats {
                    pool: pool.as_str().to_owned(),
                    kind: *kind,
                    waiting: [s[0] as u64, s[1] as u64, s[2] as u64],
                    in_flight: s[3] as u64,
                    delayed: s[4] as u64,
                    dead: s[5] as u64,
                    oldest_waiting_ms: (s[6] >= 0).then(|| (now - s[6]).max(0) as u64),
                    paused: s[8] == 1,
                }
            })
            .collect())
    }

    /// Pauses (`true`) or resumes a queue: while paused it takes jobs but no worker claims from
    /// it. Returns whether the state changed.
    pub async fn set_paused(&self, queue: &QueueName, paused: bool) -> Result<bool, QueueError> {
        let mut c = self.conn.clone();
        let changed: i64 = scripts::PAUSE
            .key(queue.pool.prefix())
            .arg(queue.kind.as_str())
            .arg(if paused { "pause" } else { "resume" })
            .arg(self.cfg.wake_cap)
            .invoke_async(&mut c)
            .await
            .during("pause", &queue.pool)?;
        Ok(changed == 1)
    }
}
