//! Trust per end user: a score (1.0 for a new user) and a block flag, in Redis. The CSAM-hash
//! path lowers scores (and blocks past a threshold); the scheduler's admission refuses a
//! blocked user, or one below its configured floor.
//!
//! A record is keyed by the user's pseudonymous key ([`gantry_core::user_key`]: a digest of
//! tenant and user id), never by the platform's user id, and expires [`TRUST_TTL_DAYS`] after
//! its last change. An erasure keeps it, since it holds no id and lifting a block on request
//! would let a user launder one; it goes when it expires. Records written under the raw user id
//! by earlier versions move to the pseudonymous key the first time they are read or changed.

use gantry_queue::{QueueError, RedisConn};

/// Days a trust record lives after its last change (a blocked user stays blocked that long).
pub const TRUST_TTL_DAYS: u64 = 730;

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

/// The record's key, and the raw-id key earlier versions wrote (same hash tag, same slot).
fn keys(tenant: &str, user: &str) -> [String; 2] {
    [
        format!("gantry:{{trust:{tenant}}}:user:{}", gantry_core::user_key(tenant, user)),
        format!("gantry:{{trust:{tenant}}}:user:{user}"),
    ]
}

/// Moves a legacy record to its pseudonymous key (KEYS[1] new, KEYS[2] legacy), then runs the
/// operation: ARGV[1] `read`, `block` (ARGV[2] 0/1) or `adjust` (ARGV[2] delta); ARGV[3] TTL
/// seconds. Returns {score or false, blocked or false}.
/// Compiled (hashed) once: admission runs it for every user of every request.
static TRUST_SCRIPT: std::sync::LazyLock<redis::Script> = std::sync::LazyLock::new(|| redis::Script::new(TRUST_LUA));

const TRUST_LUA: &str = r"
if KEYS[1] ~= KEYS[2] and redis.call('EXISTS', KEYS[2]) == 1 then
  if redis.call('EXISTS', KEYS[1]) == 0 then
    redis.call('RENAME', KEYS[2], KEYS[1])
    redis.call('EXPIRE', KEYS[1], ARGV[3])
  else
    redis.call('DEL', KEYS[2])
  end
end
local op = ARGV[1]
if op == 'block' then
  redis.call('HSET', KEYS[1], 'blocked', ARGV[2])
  redis.call('EXPIRE', KEYS[1], ARGV[3])
elseif op == 'adjust' then
  redis.call('HSETNX', KEYS[1], 'score', 1.0)
  local s = tonumber(redis.call('HINCRBYFLOAT', KEYS[1], 'score', ARGV[2]))
  if s < 0 then redis.call('HSET', KEYS[1], 'score', 0) elseif s > 1 then redis.call('HSET', KEYS[1], 'score', 1) end
  redis.call('EXPIRE', KEYS[1], ARGV[3])
end
return redis.call('HMGET', KEYS[1], 'score', 'blocked')
";

impl TrustRegistry {
    /// A registry on `conn`.
    pub fn new(conn: RedisConn) -> Self {
        Self { conn }
    }

    async fn run(&self, tenant: &str, user: &str, op: &str, arg: &str) -> Result<TrustStatus, QueueError> {
        let mut c = self.conn.clone();
        let [k, legacy] = keys(tenant, user);
        let (score, blocked): (Option<f64>, Option<i64>) = TRUST_SCRIPT
            .key(k)
            .key(legacy)
            .arg(op)
            .arg(arg)
            .arg(TRUST_TTL_DAYS * 86_400)
            .invoke_async(&mut c)
            .await?;
        Ok(TrustStatus {
            score: score.unwrap_or(1.0).clamp(0.0, 1.0),
            blocked: blocked.unwrap_or(0) == 1,
        })
    }

    /// The user's standing (a user never seen has score 1.0).
    pub async fn status(&self, tenant: &str, user: &str) -> Result<TrustStatus, QueueError> {
        self.run(tenant, user, "read", "").await
    }

    /// Blocks or unblocks a user.
    pub async fn set_blocked(&self, tenant: &str, user: &str, blocked: bool) -> Result<(), QueueError> {
        self.run(tenant, user, "block", if blocked { "1" } else { "0" })
            .await
            .map(|_| ())
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
        Ok(self.run(tenant, user, "adjust", &delta.to_string()).await?.score)
    }
}
