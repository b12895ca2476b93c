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

fn entry_key(tenant: &str, job: JobId) -> String {
    format!("gantry:{{credits:{tenant}}}:job:{job}")
}

impl CreditLedger {
    /// A ledger on `conn`.
    pub fn new(conn: RedisConn) -> Self {
        Self { conn }
    }

    /// Reserves `credits` for each job, all or none; a new tenant starts at `initial`.
    pub async fn reserve(&self, tenant: &str, initial: i64, jobs: &[(JobId, i64)]) -> Result<Reservation, QueueError> {
        let mut inv = RESERVE.prepare_invoke();
        inv.key(balance_key(tenant)).arg(initial).arg(ENTRY_TTL.as_secs());
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
        let mut inv = SETTLE.prepare_invoke();
        inv.key(balance_key(tenant));
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
