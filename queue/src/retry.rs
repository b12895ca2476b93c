//! Retrying transient Redis errors (connection refused, Redis loading its AOF, Cluster failover)
//! with exponential backoff, so a Redis restart never stops a producer or worker for good.

use std::future::Future;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::error::QueueError;

/// Backoff between reconnect attempts: 50 ms doubling to 2 s, with jitter.
#[derive(Clone, Debug)]
pub struct Backoff {
    next: Duration,
    max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            next: Duration::from_millis(50),
            max: Duration::from_secs(2),
        }
    }
}

impl Backoff {
    /// The next delay to sleep.
    pub fn next_delay(&mut self) -> Duration {
        let d = self.next;
        self.next = (self.next * 2).min(self.max);
        let ms = d.as_millis() as u64;
        Duration::from_millis(ms / 2 + rand::random_range(0..=ms / 2))
    }

    /// Starts over after a success.
    pub fn reset(&mut self) {
        *self = Self::default();
    }
}

/// Runs `op` until it succeeds, fails with a non-transient error, or `stop` is cancelled (then
/// the last error is returned). Each transient failure is logged once at `warn`.
pub async fn retry_transient<T, F, Fut>(what: &str, stop: &CancellationToken, mut op: F) -> Result<T, QueueError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, QueueError>>,
{
    let mut backoff = Backoff::default();
    loop {
        match op().await {
            Ok(v) => return Ok(v),
            Err(e) if e.is_transient() && !stop.is_cancelled() => {
                let d = backoff.next_delay();
                tracing::warn!(error = %e, retry_in_ms = d.as_millis() as u64, "{what}: redis unavailable, retrying");
                tokio::select! {
                    _ = tokio::time::sleep(d) => {}
                    _ = stop.cancelled() => return Err(e),
                }
            }
            Err(e) => return Err(e),
        }
    }
}
