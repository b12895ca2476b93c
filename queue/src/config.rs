//! Typed configuration of the queue protocol. The doc comments are the user documentation.

use std::time::Duration;

use crate::error::QueueError;

/// Limits and timings shared by producers and workers.
#[derive(Clone, Debug)]
pub struct QueueConfig {
    /// Largest serialized job accepted, in bytes (default 256 KiB).
    pub max_payload_bytes: usize,
    /// Largest batch in one enqueue round trip (default 1,000).
    pub max_batch: usize,
    /// Longest delay a job may ask for (default 30 days).
    pub max_delay: Duration,
    /// Attempts when a job does not say (default 5).
    pub default_max_attempts: u32,
    /// Upper bound on any job's `max_attempts` (default 100).
    pub max_attempts_limit: u32,
    /// Attempt time limit when a job does not say (default 10 minutes).
    pub default_timeout: Duration,
    /// Upper bound on a job's timeout (default 6 hours).
    pub max_timeout: Duration,
    /// How long finished (succeeded, cancelled) job records are kept (default 7 days).
    pub finished_ttl: Duration,
    /// How long dead-lettered jobs are kept (default 30 days).
    pub dead_ttl: Duration,
    /// How long an idempotency key maps to its first job (default 7 days).
    pub idempotency_ttl: Duration,
    /// Retry backoff: first delay (default 1 s), doubled per attempt.
    pub backoff_base: Duration,
    /// Retry backoff: largest delay (default 10 minutes).
    pub backoff_cap: Duration,
    /// Most wake tokens kept per queue (default 256).
    pub wake_cap: u32,
    /// How job records are written (default: compact, v2); every format is read. The
    /// environment's `GANTRY_RECORD_FORMAT` (`v1` or `v2`) overrides it.
    pub record_format: RecordFormat,
}

/// How a job's record stores its spec (issue 23; docs/design/queue-v2.md). Readers take every
/// format, so the choice matters only to binaries older than protocol v2, which read only v1.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum RecordFormat {
    /// The whole spec, with the tenant, pool, priority, kind and attempts allowed repeated
    /// inside it, as protocol v1 wrote it. For a rolling upgrade: new binaries write v1 until
    /// no old one is left to read the records, then switch.
    V1,
    /// Only what the record's own fields do not hold: a no-op record is a third of v1's size.
    #[default]
    V2,
}

impl RecordFormat {
    /// The environment variable that overrides [`QueueConfig::record_format`].
    pub const ENV: &'static str = "GANTRY_RECORD_FORMAT";

    /// `v1` or `v2` (also `1` or `2`).
    pub fn parse(s: &str) -> Result<Self, QueueError> {
        match s.trim() {
            "v1" | "1" => Ok(Self::V1),
            "v2" | "2" => Ok(Self::V2),
            other => Err(QueueError::InvalidConfig(format!(
                "{}={other:?}: expected v1 or v2",
                Self::ENV
            ))),
        }
    }

    /// The environment's choice, if it makes one.
    pub fn from_env() -> Result<Option<Self>, QueueError> {
        match std::env::var(Self::ENV) {
            Ok(v) if !v.trim().is_empty() => Self::parse(&v).map(Some),
            _ => Ok(None),
        }
    }
}

impl Default for QueueConfig {
    fn default() -> Self {
        Self {
            max_payload_bytes: 256 * 1024,
            max_batch: 1000,
            max_delay: Duration::from_secs(30 * 24 * 3600),
            default_max_attempts: 5,
            max_attempts_limit: 100,
            default_timeout: Duration::from_secs(600),
            max_timeout: Duration::from_secs(6 * 3600),
            finished_ttl: Duration::from_secs(7 * 24 * 3600),
            dead_ttl: Duration::from_secs(30 * 24 * 3600),
            idempotency_ttl: Duration::from_secs(7 * 24 * 3600),
            backoff_base: Duration::from_secs(1),
            backoff_cap: Duration::from_secs(600),
            wake_cap: 256,
            record_format: RecordFormat::V2,
        }
    }
}

impl QueueConfig {
    /// How long a user's index of job ids outlives its newest job (or newest replay): past
    /// every record's TTL (the longest delay, a day of attempts, then the longer of the
    /// finished and dead-letter TTLs), so an erasure finds every record that still exists.
    pub fn user_index_ttl(&self) -> Duration {
        self.max_delay + Duration::from_secs(24 * 3600) + self.finished_ttl.max(self.dead_ttl)
    }

    /// The retry delay after `attempt` (1-based) failed: exponential from `backoff_base`, capped
    /// at `backoff_cap`, with "equal jitter" (uniform in the upper half), so retries of jobs that
    /// failed together spread out but none comes back almost at once.
    pub fn retry_delay(&self, attempt: u32) -> Duration {
        let exp = attempt.saturating_sub(1).min(32);
        let base = self.backoff_base.as_millis() as u64;
        let full = base
            .saturating_mul(1u64 << exp)
            .min(self.backoff_cap.as_millis() as u64);
        let half = full / 2;
        let jitter = if half > 0 { rand::random_range(0..=half) } else { 0 };
        Duration::from_millis(full - half + jitter)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_formats_parse_and_anything_else_is_refused() {
        assert_eq!(RecordFormat::parse("v1").expect("v1"), RecordFormat::V1);
        assert_eq!(RecordFormat::parse(" 2 ").expect("2"), RecordFormat::V2);
        assert!(
            matches!(RecordFormat::parse("v3"), Err(QueueError::InvalidConfig(m)) if m.contains("GANTRY_RECORD_FORMAT"))
        );
    }

    #[test]
    fn retry_delay_grows_exponentially_with_jitter_and_caps() {
        let cfg = QueueConfig {
            backoff_base: Duration::from_millis(100),
            backoff_cap: Duration::from_secs(1),
            ..Default::default()
        };
        for _ in 0..200 {
            let first = cfg.retry_delay(1).as_millis();
            assert!((50..=100).contains(&first), "attempt 1: {first}");
            let third = cfg.retry_delay(3).as_millis();
            assert!((200..=400).contains(&third), "attempt 3: {third}");
            let late = cfg.retry_delay(40).as_millis();
            assert!((500..=1000).contains(&late), "capped: {late}");
        }
    }
}
