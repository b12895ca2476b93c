//! Rate limits per tenant, fleet-wide: GCRA in Redis (one key per tenant), so every scheduler
//! replica enforces the same limit. A job costs one unit; a batch of n costs n.

use std::sync::LazyLock;
use std::time::Duration;

use gantry_queue::{QueueError, RedisConn};
use redis::Script;

use crate::config::PlanConfig;

static GCRA: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("../scripts/rate_limit.lua")));

/// A rate-limit decision.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RateDecision {
    /// Go ahead.
    Allowed,
    /// Come back after this long.
    RetryAfter(Duration),
    /// More jobs at once than the plan's burst: split the batch.
    ExceedsBurst,
}

/// A tenant's rate-limit state.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
pub struct Allowance {
    /// Jobs it could submit at once now.
    pub available: u32,
    /// Its plan's burst (the most at once, from idle).
    pub burst: u32,
    /// Its plan's sustained rate.
    pub jobs_per_second: f64,
}

/// See the module docs.
#[derive(Clone, Debug)]
pub struct RateLimiter {
    conn: RedisConn,
}

impl RateLimiter {
    /// A limiter on `conn`.
    pub fn new(conn: RedisConn) -> Self {
        Self { conn }
    }

    /// How many jobs `tenant` could submit at once now under `plan` (read only).
    pub async fn allowance(&self, tenant: &str, plan: &PlanConfig) -> Result<Allowance, QueueError> {
        let interval_us = (1_000_000.0 / plan.jobs_per_second).max(1.0);
        let burst = plan.burst.max(1);
        let tolerance_us = interval_us * f64::from(burst);
        let mut c = self.conn.clone();
        let (tat, time): (Option<String>, (String, String)) = redis::pipe()
            .cmd("GET")
            .arg(format!("gantry:{{rate:{tenant}}}:tat"))
            .cmd("TIME")
            .query_async(&mut c)
            .await?;
        let now_us = time.0.parse::<f64>().unwrap_or(0.0) * 1e6 + time.1.parse::<f64>().unwrap_or(0.0);
        let tat_us = tat.and_then(|t| t.parse::<f64>().ok()).unwrap_or(now_us).max(now_us);
        let free = ((tolerance_us - (tat_us - now_us)) / interval_us).floor();
        Ok(Allowance {
            available: free.clamp(0.0, f64::from(burst)) as u32,
            burst,
            jobs_per_second: plan.jobs_per_second,
        })
    }

    /// Takes `jobs` units from `tenant`'s allowance under `plan`.
    pub async fn take(&self, tenant: &str, plan: &PlanConfig, jobs: u32) -> Result<RateDecision, QueueError> {
        let interval_us = (1_000_000.0 / plan.jobs_per_second).max(1.0);
        let tolerance_us = interval_us * f64::from(plan.burst.max(1));
        let mut c = self.conn.clone();
        let (ok, retry_us): (i64, i64) = GCRA
            .key(format!("gantry:{{rate:{tenant}}}:tat"))
            .arg(interval_us)
            .arg(tolerance_us)
            .arg(jobs)
            .invoke_async(&mut c)
            .await?;
        Ok(match (ok, retry_us) {
            (1, _) => RateDecision::Allowed,
            (_, r) if r < 0 => RateDecision::ExceedsBurst,
            (_, r) => RateDecision::RetryAfter(Duration::from_micros(r as u64)),
        })
    }
}
