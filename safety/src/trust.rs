//! Trust per end user: a score (1.0 for a new user) and a block flag, in Redis. The CSAM-hash
//! path lowers scores (and blocks past a threshold); the scheduler's admission refuses a
//! blocked user, or one below its configured floor.

use gantry_queue::{QueueError, RedisConn};
use redis::AsyncCommands;

/// A user's standing.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
pub struct TrustStatus {
    /// 0.0 ..= 1.0.
    pub score: f64,
    /// Blocked outright.
    pub blocked: bool,
}

/// See the module docs.
#[derive(Clone, Debug)]
pub struct TrustRegistry {
    conn: RedisConn,
}

fn key(tenant: &str, user: &str) -> String {
    format!("gantry:{{trust:{tenant}}}:user:{user}")
}

impl TrustRegistry {
    /// A registry on `conn`.
    pub fn new(conn: RedisConn) -> Self {
        Self { conn }
    }

    /// The user's standing (a user never seen has score 1.0).
    pub async fn status(&self, tenant: &str, user: &str) -> Result<TrustStatus, QueueError> {
        let mut c = self.conn.clone();
        let (score, blocked): (Option<f64>, Option<i64>) = redis::cmd("HMGET")
            .arg(key(tenant, user))
            .arg("score")
            .arg("blocked")
            .query_async(&mut c)
            .await?;
        Ok(TrustStatus {
            score: score.unwrap_or(1.0),
            blocked: blocked.unwrap_or(0) == 1,
        })
    }

    /// Blocks or unblocks a user.
    pub async fn set_blocked(&self, tenant: &str, user: &str, blocked: bool) -> Result<(), QueueError> {
        let mut c = self.conn.clone();
        let _: () = c.hset(key(tenant, user), "blocked", i64::from(blocked)).await?;
        Ok(())
    }

    /// Lowers the user's score by `penalty` and blocks the user once it falls below
    /// `block_below`. Returns the new standing.
    pub async fn penalize(
        &self,
        tenant: &str,
        user: &str,
        penalty: f64,
        block_below: f64,
    ) -> Result<TrustStatus, QueueError> {
        let score = self.adjust(tenant, user, -penalty.abs()).await?;
        let blocked = score < block_below;
        if blocked {
            self.set_blocked(tenant, user, true).await?;
        }
        Ok(TrustStatus {
            score,
            blocked: blocked || self.status(tenant, user).await?.blocked,
        })
    }

    /// Lowers (negative) or raises a user's score by `delta`, clamped to 0..=1; returns the new one.
    pub async fn adjust(&self, tenant: &str, user: &str, delta: f64) -> Result<f64, QueueError> {
        let mut c = self.conn.clone();
        let k = key(tenant, user);
        let _: bool = c.hset_nx(&k, "score", 1.0).await?;
        let s: f64 = c.hincr(&k, "score", delta).await?;
        let clamped = s.clamp(0.0, 1.0);
        if clamped != s {
            let _: () = c.hset(&k, "score", clamped).await?;
        }
        Ok(clamped)
    }
}
