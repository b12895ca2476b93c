//! The credit ledger: a balance per tenant and one entry per job, in Redis, all under the
//! tenant's hash tag. Reserve at admission (all of a batch or none), then settle exactly once:
//! charge what the work cost, or refund where nothing was billed. Every step is idempotent per
//! job id, so retries, replays and duplicate submissions never charge twice.

use std::sync::LazyLock;
use std::time::Duration;

use gantry_queue::{JobId, QueueError, RedisConn};
use redis::{AsyncCommands, Script};

static RESERVE: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("../scripts/reserve.lua")));
static SETTLE: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("../scripts/settle.lua")));

/// How long a job's ledger entry is kept (longer than the dead-letter retention, so a replay
/// still finds it settled).
const ENTRY_TTL: Duration = Duration::from_secs(45 * 24 * 3600);

/// A reservation's outcome.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reservation {
    /// Reserved; the balance after it.
    Reserved {
        /// Balance left.
        balance: i64,
    },
    /// The balance does not cover the jobs.
    Insufficient {
        /// Balance.
        balance: i64,
        /// Credits the jobs need.
        needed: i64,
    },
}

/// A job's entry in the ledger.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct CreditEntry {
    /// `reserved`, `charged` or `refunded`.
    pub state: String,
    /// Credits reserved at admission.
    pub reserved: i64,
    /// Credits charged at settlement.
    pub charged: i64,
}

/// The credit ledger. See the module docs.
#[derive(Clone, Debug)]
pub struct CreditLedger {
    conn: RedisConn,
}

fn balance_key(tenant: &str) -> String {
    format!("gantry:{{credits:{tenant}}}:balance")
}

fn totals_key(tenant: &str) -> String {
    format!("gantry:{{credits:{tenant}}}:totals")
}

/// The counter of credits charged in hour `hour` (hours since the Unix epoch).
fn hour_key(tenant: &str, hour: u64) -> String {
    format!("gantry:{{credits:{tenant}}}:charged:h:{hour}")
}

/// The counter of credits charged on day `day` (days since the Unix epoch, UTC).
fn day_key(tenant: &str, day: u64) -> String {
    format!("gantry:{{credits:{tenant}}}:charged:d:{day}")
}

const HOUR_MS: u64 = 3_600_000;
const DAY_MS: u64 = 24 * HOUR_MS;
/// Hours of hourly counters kept (two days: the chart shows the last 24).
const HOURS_KEPT: u64 = 48;
/// Days of daily counters kept (the chart shows the last 30).
const DAYS_KEPT: u64 = 32;

/// A tenant's credits beyond its balance: open reservations, what was charged, what refunded
/// jobs were given back (counted from when the ledger started keeping totals).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct TenantCredits {
    /// Reserved by jobs not yet settled.
    pub reserved: i64,
    /// Charged, ever.
    pub charged: i64,
    /// Given back by jobs refunded (and not charged after a replay since).
    pub refunded: i64,
}

/// Credits charged over time: the last 24 hours by hour and the last 30 days by day, oldest
/// first; each entry is (start of the period, Unix ms; credits).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct ChargedSeries {
    /// By hour.
    pub hourly: Vec<(u64, i64)>,
    /// By day (UTC).
    pub daily: Vec<(u64, i64)>,
}

fn entry_key(tenant: &str, job: JobId) -> String {
    gantry_queue::credit_entry_key(tenant, job)
}

impl CreditLedger {
    /// A ledger on `conn`.
    pub fn new(conn: RedisConn) -> Self {
        Self { conn }
    }

    /// Reserves `credits` for each job, all or none; a new tenant starts at `initial`.
    pub async fn reserve(&self, tenant: &str, initial: i64, jobs: &[(JobId, i64)]) -> Result<Reservation, QueueError> {
        let mut inv = RESERVE.prepare_invoke();
        inv.key(balance_key(tenant))
            .key(totals_key(tenant))
            .arg(initial)
            .arg(ENTRY_TTL.as_secs());
        for (id, credits) in jobs {
            inv.key(entry_key(tenant, *id)).arg(*credits);
        }
        let mut c = self.conn.clone();
        let (ok, balance, needed): (i64, i64, i64) = inv.invoke_async(&mut c).await?;
        Ok(if ok == 1 {
            Reservation::Reserved { balance }
        } else {
            Reservation::Insufficient { balance, needed }
        })
    }

    /// Charges `credits` for a job whose work was billed, returning the difference from its
    /// reservation to the balance (or taking the whole charge, for a refunded job that was
    /// replayed and succeeded). `false`: it was already charged.
    pub async fn charge(&self, tenant: &str, job: JobId, credits: i64) -> Result<bool, QueueError> {
        Ok(self.settle(tenant, &[(job, Some(credits))]).await?.first() == Some(&true))
    }

    /// Refunds a job's whole reservation (nothing was billed). `false`: already settled.
    pub async fn refund(&self, tenant: &str, job: JobId) -> Result<bool, QueueError> {
        Ok(self.settle(tenant, &[(job, None)]).await?.first() == Some(&true))
    }

    /// Settles several of a tenant's jobs in one round trip, in order: `Some(credits)` charges,
    /// `None` refunds. Returns, per job, whether its entry moved.
    pub async fn settle(&self, tenant: &str, jobs: &[(JobId, Option<i64>)]) -> Result<Vec<bool>, QueueError> {
        if jobs.is_empty() {
            return Ok(Vec::new());
        }
        let now = gantry_core::time::now_ms();
        let mut inv = SETTLE.prepare_invoke();
        inv.key(balance_key(tenant))
            .key(totals_key(tenant))
            .key(hour_key(tenant, now / HOUR_MS))
            .key(day_key(tenant, now / DAY_MS))
            .arg(HOURS_KEPT * 3600)
            .arg(DAYS_KEPT * 24 * 3600);
        for (job, credits) in jobs {
            inv.key(entry_key(tenant, *job)).arg(credits.map_or(-1, |c| c.max(0)));
        }
        let mut c = self.conn.clone();
        let moved: Vec<i64> = inv.invoke_async(&mut c).await?;
        Ok(moved.into_iter().map(|m| m == 1).collect())
    }

    /// The tenant's balance (`None` before its first reservation).
    pub async fn balance(&self, tenant: &str) -> Result<Option<i64>, QueueError> {
        let mut c = self.conn.clone();
        Ok(c.get(balance_key(tenant)).await?)
    }

    /// The tenant's open reservations and its charged and refunded totals.
    pub async fn totals(&self, tenant: &str) -> Result<TenantCredits, QueueError> {
        let mut c = self.conn.clone();
        let (reserved, charged, refunded): (Option<i64>, Option<i64>, Option<i64>) = redis::cmd("HMGET")
            .arg(totals_key(tenant))
            .arg("reserved")
            .arg("charged")
            .arg("refunded")
            .query_async(&mut c)
            .await?;
        Ok(TenantCredits {
            // Reservations made before totals were kept settle against none: never below 0.
            reserved: reserved.unwrap_or(0).max(0),
            charged: charged.unwrap_or(0),
            refunded: refunded.unwrap_or(0),
        })
    }

    /// Credits charged over the last 24 hours (by hour) and 30 days (by day), as of `now_ms`.
    pub async fn charged_series(&self, tenant: &str, now_ms: u64) -> Result<ChargedSeries, QueueError> {
        let (hour, day) = (now_ms / HOUR_MS, now_ms / DAY_MS);
        let hours: Vec<u64> = (0..24).map(|i| hour.saturating_sub(23 - i)).collect();
        let days: Vec<u64> = (0..30).map(|i| day.saturating_sub(29 - i)).collect();
        let mut get = redis::cmd("MGET");
        for h in &hours {
            get.arg(hour_key(tenant, *h));
        }
        for d in &days {
            get.arg(day_key(tenant, *d));
        }
        let mut c = self.conn.clone();
        let values: Vec<Option<i64>> = get.query_async(&mut c).await?;
        let (hv, dv) = values.split_at(hours.len().min(values.len()));
        Ok(ChargedSeries {
            hourly: hours
                .iter()
                .zip(hv)
                .map(|(h, v)| (h * HOUR_MS, v.unwrap_or(0)))
                .collect(),
            daily: days.iter().zip(dv).map(|(d, v)| (d * DAY_MS, v.unwrap_or(0))).collect(),
        })
    }

    /// Adds credits (a top-up; negative to take some away).
    pub async fn grant(&self, tenant: &str, initial: i64, credits: i64) -> Result<i64, QueueError> {
        let mut c = self.conn.clone();
        let key = balance_key(tenant);
        let _: bool = c.set_nx(&key, initial).await?;
        Ok(c.incr(&key, credits).await?)
    }

    /// A job's entry (`None`: never reserved, or expired).
    pub async fn entry(&self, tenant: &str, job: JobId) -> Result<Option<CreditEntry>, QueueError> {
        let mut c = self.conn.clone();
        let (state, reserved, charged): (Option<String>, Option<i64>, Option<i64>) = redis::cmd("HMGET")
            .arg(entry_key(tenant, job))
            .arg("state")
            .arg("reserved")
            .arg("charged")
            .query_async(&mut c)
            .await?;
        Ok(state.map(|state| CreditEntry {
            state,
            reserved: reserved.unwrap_or(0),
            charged: charged.unwrap_or(0),
        }))
    }
}
