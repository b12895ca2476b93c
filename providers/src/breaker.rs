//! A circuit breaker per provider and region. After `threshold` outage failures in a row
//! (5xx, timeouts, broken bodies: not rate limits or refusals of our request) it opens for
//! `open_for`: calls are refused at once, so jobs fall back to another allowed provider
//! instead of waiting on a dead one. Then one probe is let through (half-open); its success
//! closes the breaker, its failure opens it again.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The breaker's settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BreakerConfig {
    /// Outage failures in a row that open it.
    pub threshold: u32,
    /// How long it stays open.
    pub open_for: Duration,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            threshold: 5,
            open_for: Duration::from_secs(30),
        }
    }
}

/// What the breaker says now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BreakerState {
    /// Calls go through.
    Closed,
    /// Calls are refused until the instant given.
    Open {
        /// When one probe will be allowed.
        until: Instant,
    },
    /// One probe is in flight.
    HalfOpen,
}

#[derive(Debug)]
struct Inner {
    state: BreakerState,
    failures: u32,
}

/// One breaker.
#[derive(Clone, Debug)]
pub struct Breaker {
    cfg: BreakerConfig,
    inner: Arc<Mutex<Inner>>,
}

impl Breaker {
    /// A closed breaker.
    pub fn new(cfg: BreakerConfig) -> Self {
        Self {
            cfg,
            inner: Arc::new(Mutex::new(Inner {
                state: BreakerState::Closed,
                failures: 0,
            })),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A poisoned lock only means a panic elsewhere mid-update; the counters stay usable.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether a call may go now (moving open → half-open when its time is up).
    pub fn allow(&self) -> bool {
        let mut g = self.lock();
        match g.state {
            BreakerState::Closed => true,
            BreakerState::HalfOpen => false,
            BreakerState::Open { until } if Instant::now() >= until => {
                g.state = BreakerState::HalfOpen;
                true
            }
            BreakerState::Open { .. } => false,
        }
    }

    /// Records a call that worked (or failed for a reason that says nothing about health).
    pub fn success(&self) {
        let mut g = self.lock();
        g.failures = 0;
        g.state = BreakerState::Closed;
    }

    /// Records an outage failure.
    pub fn failure(&self) {
        let mut g = self.lock();
        g.failures += 1;
        if g.state == BreakerState::HalfOpen || g.failures >= self.cfg.threshold {
            g.state = BreakerState::Open {
                until: Instant::now() + self.cfg.open_for,
            };
        }
    }

    /// The state now.
    pub fn state(&self) -> BreakerState {
        self.lock().state
    }

    /// How long it stays open (`None`: it is not open, or its time is up).
    pub fn open_for(&self) -> Option<Duration> {
        match self.lock().state {
            BreakerState::Open { until } => until.checked_duration_since(Instant::now()).filter(|d| !d.is_zero()),
            _ => None,
        }
    }
}

/// Breakers by (provider, region), made on first use.
#[derive(Clone, Debug, Default)]
pub struct Breakers {
    cfg: BreakerConfig,
    map: Arc<Mutex<BTreeMap<(String, String), Breaker>>>,
}

impl Breakers {
    /// Breakers with `cfg`.
    pub fn new(cfg: BreakerConfig) -> Self {
        Self {
            cfg,
            map: Arc::default(),
        }
    }

    /// The breaker for `provider` in `region`.
    pub fn get(&self, provider: &str, region: &str) -> Breaker {
        let mut m = self.map.lock().unwrap_or_else(|p| p.into_inner());
        m.entry((provider.to_owned(), region.to_owned()))
            .or_insert_with(|| Breaker::new(self.cfg))
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_outages_probes_once_and_closes_on_success() {
        let b = Breaker::new(BreakerConfig {
            threshold: 3,
            open_for: Duration::from_millis(30),
        });
        for _ in 0..2 {
            assert!(b.allow());
            b.failure();
        }
        assert_eq!(b.state(), BreakerState::Closed);
        b.failure();
        assert!(!b.allow(), "open");
        std::thread::sleep(Duration::from_millis(40));
        assert!(b.allow(), "one probe");
        assert!(!b.allow(), "only one");
        b.failure();
        assert!(!b.allow(), "the probe failed: open again");
        std::thread::sleep(Duration::from_millis(40));
        assert!(b.allow());
        b.success();
        assert_eq!(b.state(), BreakerState::Closed);
        assert!(b.allow() && b.allow());
    }

    #[test]
    fn breakers_are_per_provider_and_region() {
        let all = Breakers::new(BreakerConfig {
            threshold: 1,
            open_for: Duration::from_secs(60),
        });
        all.get("kling", "SG").failure();
        assert!(!all.get("kling", "SG").allow());
        assert!(all.get("kling", "CN").allow());
        assert!(all.get("flux", "SG").allow());
    }
}
