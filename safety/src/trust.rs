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

/// Changes kept per user in the trust history (the newest).
pub const HISTORY_LEN: isize = 100;

/// One change to a user's standing, as the trust history keeps it: who or what made it and why.
/// Never the platform's user id (the history is keyed by the pseudonymous key).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TrustChange {
    /// When, ms since the epoch.
    pub at_ms: u64,
    /// What changed it: `hash_match`, `provider_refusal`, or an operator (`operator:<tenant>/<key
    /// fingerprint>`).
    pub by: String,
    /// `penalty`, `adjust`, `block`, `unblock` or `reset`.
    pub action: String,
    /// The score change asked for, when the action has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delta: Option<f64>,
    /// Why (an operator's reason is required; automatic changes name their cause).
    pub reason: String,
    /// The standing after it.
    pub score: f64,
    /// Whether the user was blocked after it.
    pub blocked: bool,
}

/// A user's standing.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
pub struct TrustStatus {
    /// 0.0 ..= 1.0.
    pub score: f64,
    /// Blocked outright.
    pub blocked: bool,
}

/// Days over which a lowered score recovers to 1.0 unless `GANTRY_TRUST_RECOVERY_DAYS` says
/// otherwise (0: never).
pub const DEFAULT_RECOVERY_DAYS: u64 = 90;

/// See the module docs.
#[derive(Clone, Debug)]
pub struct TrustRegistry {
    conn: RedisConn,
    /// How long a score takes to recover from 0 to 1.0 (linearly, from its last change); `None`:
    /// penalties never fade. Blocks never lift by themselves: an operator lifts them.
    recovery: Option<std::time::Duration>,
}

/// The user's trust history: a capped list of [`TrustChange`]s, newest first, beside the record.
fn history_key(tenant: &str, user: &str) -> String {
    format!(
        "gantry:{{trust:{tenant}}}:history:{}",
        gantry_core::user_key(tenant, user)
    )
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
-- ARGV[4]: score recovered per ms since the last change (0: none), so penalties fade.
local rate = tonumber(ARGV[4]) or 0
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local r = redis.call('HMGET', KEYS[1], 'score', 'at', 'blocked')
local score = tonumber(r[1])
if score and rate > 0 and r[2] and score < 1 then
  score = math.min(1, score + (now - tonumber(r[2])) * rate)
end
if op == 'block' then
  redis.call('HSET', KEYS[1], 'blocked', ARGV[2])
  redis.call('EXPIRE', KEYS[1], ARGV[3])
elseif op == 'adjust' then
  score = math.max(0, math.min(1, (score or 1.0) + tonumber(ARGV[2])))
  redis.call('HSET', KEYS[1], 'score', tostring(score), 'at', now)
  redis.call('EXPIRE', KEYS[1], ARGV[3])
end
local blocked = redis.call('HGET', KEYS[1], 'blocked')
return { score and tostring(score) or false, blocked or false }
";

impl TrustRegistry {
    /// A registry on `conn`; scores recover over `GANTRY_TRUST_RECOVERY_DAYS` days
    /// ([`DEFAULT_RECOVERY_DAYS`] when unset or unreadable; 0: never). Every process of a fleet
    /// reads the same environment, so admission and penalties agree on a score.
    pub fn new(conn: RedisConn) -> Self {
        let days = std::env::var("GANTRY_TRUST_RECOVERY_DAYS")
            .ok()
            .and_then(|d| d.trim().parse::<u64>().ok())
            .unwrap_or(DEFAULT_RECOVERY_DAYS);
        Self {
            conn,
            recovery: (days > 0).then(|| std::time::Duration::from_secs(days * 86_400)),
        }
    }

    /// The same registry with scores recovering over `recovery` (`None`: never).
    pub fn with_recovery(mut self, recovery: Option<std::time::Duration>) -> Self {
        self.recovery = recovery.filter(|d| !d.is_zero());
        self
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
            .arg(self.recovery.map_or(0.0, |d| 1.0 / d.as_millis().max(1) as f64))
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
    /// `block_below`; the history records it as `by`'s penalty for `reason`. Returns the new
    /// standing.
    pub async fn penalize(
        &self,
        tenant: &str,
        user: &str,
        penalty: f64,
        block_below: f64,
        (by, reason): (&str, &str),
    ) -> Result<TrustStatus, QueueError> {
        // The script answers the standing after the change: no second read for the block flag.
        let mut standing = self.run(tenant, user, "adjust", &(-penalty.abs()).to_string()).await?;
        if standing.score < block_below && !standing.blocked {
            standing = self.run(tenant, user, "block", "1").await?;
        }
        self.record_change(tenant, user, (by, "penalty", reason), Some(-penalty.abs()), standing)
            .await?;
        Ok(standing)
    }

    /// Lowers (negative) or raises a user's score by `delta`, clamped to 0..=1; returns the new one.
    pub async fn adjust(&self, tenant: &str, user: &str, delta: f64) -> Result<f64, QueueError> {
        Ok(self.run(tenant, user, "adjust", &delta.to_string()).await?.score)
    }

    /// Appends `change` to the user's history (the newest [`HISTORY_LEN`] are kept, as long as
    /// the record).
    pub async fn record(&self, tenant: &str, user: &str, change: &TrustChange) -> Result<(), QueueError> {
        let json = serde_json::to_string(change).map_err(|e| QueueError::Protocol(format!("trust change: {e}")))?;
        let key = history_key(tenant, user);
        let mut c = self.conn.clone();
        redis::pipe()
            .atomic()
            .cmd("LPUSH")
            .arg(&key)
            .arg(json)
            .ignore()
            .cmd("LTRIM")
            .arg(&key)
            .arg(0)
            .arg(HISTORY_LEN - 1)
            .ignore()
            .cmd("EXPIRE")
            .arg(&key)
            .arg(TRUST_TTL_DAYS * 86_400)
            .ignore()
            .query_async::<()>(&mut c)
            .await?;
        Ok(())
    }

    /// The user's history, newest first (unreadable entries are skipped).
    pub async fn history(&self, tenant: &str, user: &str) -> Result<Vec<TrustChange>, QueueError> {
        let mut c = self.conn.clone();
        let raw: Vec<String> = redis::cmd("LRANGE")
            .arg(history_key(tenant, user))
            .arg(0)
            .arg(HISTORY_LEN - 1)
            .query_async(&mut c)
            .await?;
        Ok(raw.iter().filter_map(|r| serde_json::from_str(r).ok()).collect())
    }

    /// An operator's change to a user's standing, recorded in the history with `by` and
    /// `reason`: `unblock`, `block`, `adjust` (by `delta`), or `reset` (score 1.0, unblocked).
    pub async fn administer(
        &self,
        tenant: &str,
        user: &str,
        action: TrustAction,
        by: &str,
        reason: &str,
    ) -> Result<TrustStatus, QueueError> {
        // Each script call answers the standing after it.
        let (now, delta) = match action {
            TrustAction::Unblock => (self.run(tenant, user, "block", "0").await?, None),
            TrustAction::Block => (self.run(tenant, user, "block", "1").await?, None),
            TrustAction::Adjust(d) => (self.run(tenant, user, "adjust", &d.to_string()).await?, Some(d)),
            TrustAction::Reset => {
                self.run(tenant, user, "adjust", "1").await?;
                (self.run(tenant, user, "block", "0").await?, None)
            }
            TrustAction::Appeal => (self.run(tenant, user, "read", "").await?, None),
        };
        self.record_change(tenant, user, (by, action.name(), reason), delta, now)
            .await?;
        Ok(now)
    }

    /// Appends one change, stamped now, with the standing it left.
    async fn record_change(
        &self,
        tenant: &str,
        user: &str,
        (by, action, reason): (&str, &str, &str),
        delta: Option<f64>,
        after: TrustStatus,
    ) -> Result<(), QueueError> {
        let change = TrustChange {
            at_ms: now_ms(),
            by: by.to_owned(),
            action: action.to_owned(),
            delta,
            reason: reason.to_owned(),
            score: after.score,
            blocked: after.blocked,
        };
        self.record(tenant, user, &change).await
    }
}

/// What an operator does to a user's standing.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum TrustAction {
    /// Lift a block (the score stays as it is).
    Unblock,
    /// Block outright.
    Block,
    /// Raise (positive) or lower the score, clamped to 0..=1.
    Adjust(f64),
    /// Score 1.0 and unblocked, as a new user.
    Reset,
    /// The user's appeal, as the platform relays it: recorded in the history (the reason holds
    /// it), the standing unchanged until an operator decides.
    Appeal,
}

impl TrustAction {
    /// Its name in the history.
    pub fn name(self) -> &'static str {
        match self {
            Self::Unblock => "unblock",
            Self::Block => "block",
            Self::Adjust(_) => "adjust",
            Self::Reset => "reset",
            Self::Appeal => "appeal",
        }
    }
}

/// Now, ms since the epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
