//! Backoff between tries: exponential with full jitter (a random wait between zero and the
//! exponential ceiling, so callers that failed together do not retry together), never sooner
//! than the provider's `Retry-After`.

use std::time::Duration;

use rand::Rng;

/// The retry policy within one job attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    /// Ceiling of the first wait.
    pub base: Duration,
    /// Largest ceiling.
    pub max: Duration,
    /// Tries after the first.
    pub max_retries: u32,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            base: Duration::from_millis(200),
            max: Duration::from_secs(20),
            max_retries: 8,
        }
    }
}

impl Backoff {
    /// The wait before retry number `n` (0-based). With a `Retry-After`, at least that, plus up
    /// to a tenth more so a crowd told the same second spreads out.
    pub fn wait(&self, n: u32, retry_after: Option<Duration>) -> Duration {
        let mut rng = rand::rng();
        match retry_after {
            Some(ra) => {
                let spread = (ra / 10).max(Duration::from_millis(10));
                ra + spread.mul_f64(rng.random::<f64>())
            }
            None => {
                let ceiling = self.base.saturating_mul(1u32 << n.min(20)).min(self.max);
                ceiling.mul_f64(rng.random::<f64>())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_are_jittered_under_the_ceiling_and_honour_retry_after() {
        let b = Backoff {
            base: Duration::from_millis(100),
            max: Duration::from_millis(800),
            max_retries: 5,
        };
        for n in 0..10 {
            let w = b.wait(n, None);
            assert!(w <= Duration::from_millis(100 << n.min(3)), "{n}: {w:?}");
        }
        let distinct: std::collections::BTreeSet<_> = (0..20).map(|_| b.wait(3, None)).collect();
        assert!(distinct.len() > 10, "full jitter spreads waits");
        for _ in 0..100 {
            let w = b.wait(0, Some(Duration::from_secs(2)));
            assert!(w >= Duration::from_secs(2) && w <= Duration::from_millis(2200), "{w:?}");
        }
    }
}
