//! Fleet-wide concurrency slots: how many tasks one provider account has in flight across every
//! worker (providers cap them per account: Kling per resource pack, BFL 24). A counting
//! semaphore in Redis whose holders expire, so a SIGKILLed worker's slots come back after their
//! lease; a live holder refreshes its lease while its task runs. Every key of an account shares
//! the hash tag `{slots:<account>}` (Cluster safe).

use std::sync::LazyLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use redis::Script;

use crate::conn::RedisConn;
use crate::error::QueueError;

static SLOTS: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("scripts/slots.lua")));

/// The slots of provider accounts.
#[derive(Clone, Debug)]
pub struct ProviderSlots {
    conn: RedisConn,
    lease: Duration,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn key(account: &str) -> String {
    format!("gantry:{{slots:{account}}}:holders")
}

impl ProviderSlots {
    /// Slots on `conn`; a holder that stops refreshing loses its slot after `lease`.
    pub fn new(conn: RedisConn, lease: Duration) -> Self {
        Self { conn, lease }
    }

    /// The lease.
    pub fn lease(&self) -> Duration {
        self.lease
    }

    async fn call(&self, op: &str, account: &str, holder: &str, cap: u32) -> Result<bool, QueueError> {
        let mut c = self.conn.clone();
        let held: i64 = SLOTS
            .key(key(account))
            .arg(op)
            .arg(holder)
            .arg(cap)
            .arg(now_ms())
            .arg(self.lease.as_millis() as u64)
            .invoke_async(&mut c)
            .await?;
        Ok(held == 1)
    }

    /// Takes a slot for `holder` if fewer than `cap` are held (holding one already counts).
    pub async fn try_acquire(&self, account: &str, holder: &str, cap: u32) -> Result<bool, QueueError> {
        self.call("acquire", account, holder, cap).await
    }

    /// Extends `holder`'s lease; `false` if it no longer holds a slot.
    pub async fn refresh(&self, account: &str, holder: &str) -> Result<bool, QueueError> {
        self.call("refresh", account, holder, 0).await
    }

    /// Gives the slot back.
    pub async fn release(&self, account: &str, holder: &str) -> Result<(), QueueError> {
        self.call("release", account, holder, 0).await.map(|_| ())
    }

    /// Slots held now (expired holders not counted).
    pub async fn held(&self, account: &str) -> Result<u64, QueueError> {
        let mut c = self.conn.clone();
        let n: u64 = redis::cmd("ZCOUNT")
            .arg(key(account))
            .arg(now_ms())
            .arg("+inf")
            .query_async(&mut c)
            .await?;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use crate::scripts::{Layout, Tail, check_contract};

    #[test]
    fn the_slot_script_matches_its_header() {
        let wrong = check_contract(
            "slots.lua",
            include_str!("scripts/slots.lua"),
            Layout {
                fixed: 5,
                tail: Tail::None,
            },
            "KEYS[1]    the holders zset",
        );
        assert!(wrong.is_empty(), "{wrong:#?}");
    }
}
