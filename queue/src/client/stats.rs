//! Queue depths, in-flight and dead counts, the oldest waiting job; pausing a queue.

use redis::{FromRedisValue, ParsingError, Value};

use super::QueueClient;
use super::wire::{int, one_per_record, records};
use crate::error::{During, QueueError};
use crate::job::JobKind;
use crate::keys::{Pool, QueueName};
use crate::scripts;

/// Depth and age of one queue.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct QueueStats {
    /// Pool.
    pub pool: String,
    /// Kind.
    pub kind: JobKind,
    /// Waiting, per priority: high, normal, bulk.
    pub waiting: [u64; 3],
    /// Leased to workers.
    pub in_flight: u64,
    /// Delayed or waiting for a retry.
    pub delayed: u64,
    /// In the dead-letter queue.
    pub dead: u64,
    /// Age of the oldest waiting job, in milliseconds.
    pub oldest_waiting_ms: Option<u64>,
    /// Paused: taking jobs, but no worker claims from it.
    pub paused: bool,
}

impl QueueStats {
    /// All waiting jobs.
    pub fn waiting_total(&self) -> u64 {
        self.waiting.iter().sum()
    }
}

/// Entries of a pool's stream its reader has not handled yet: credit events the scheduler's
/// settler has not settled (it deletes each one once the ledger has it), or pipeline hand-offs
/// the mover has not applied.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct CreditBacklog {
    /// Events waiting to be settled.
    pub events: u64,
    /// Age of the oldest, in milliseconds (by Redis's clock).
    pub oldest_ms: Option<u64>,
}

impl QueueClient {
    /// The pool's unsettled credit events: how many, and how old the oldest is.
    pub async fn credit_backlog(&self, pool: &Pool) -> Result<CreditBacklog, QueueError> {
        self.stream_backlog(pool, "credits", "credit backlog").await
    }

    /// The pool's pipeline hand-offs to other pools that the mover has not applied yet (it
    /// deletes each once applied): how many, and how old the oldest is.
    pub async fn handoff_backlog(&self, pool: &Pool) -> Result<CreditBacklog, QueueError> {
        self.stream_backlog(pool, "handoff", "hand-off backlog").await
    }

    /// A stream of the pool whose reader deletes what it has handled: its length and the age
    /// of its oldest entry.
    async fn stream_backlog(&self, pool: &Pool, suffix: &str, op: &'static str) -> Result<CreditBacklog, QueueError> {
        let key = format!("{}{suffix}", pool.prefix());
        let mut c = self.conn.clone();
        let ((secs, micros), events, first): ((u64, u64), u64, Vec<(String, Value)>) = redis::pipe()
            .cmd("TIME")
            .cmd("XLEN")
            .arg(&key)
            .cmd("XRANGE")
            .arg(&key)
            .arg("-")
            .arg("+")
            .arg("COUNT")
            .arg(1)
            .query_async(&mut c)
            .await
            .during(op, pool)?;
        let now_ms = secs * 1000 + micros / 1000;
        // A stream entry's id is `<ms>-<seq>`, the time it was added.
        let oldest_ms = first
            .first()
            .and_then(|(id, _)| id.split('-').next()?.parse::<u64>().ok())
            .map(|at| now_ms.saturating_sub(at));
        Ok(CreditBacklog { events, oldest_ms })
    }

    /// Depth, in-flight count and oldest-job age of each of `kinds` in `pool`.
    pub async fn stats(&self, pool: &Pool, kinds: &[JobKind]) -> Result<Vec<QueueStats>, QueueError> {
        let mut inv = scripts::STATS.prepare_invoke();
        inv.key(pool.prefix());
        for k in kinds {
            inv.arg(k.as_str());
        }
        let mut c = self.conn.clone();
        let reply: StatsReply = inv.invoke_async(&mut c).await.during("stats", pool)?;
        let per_kind = one_per_record(reply.0, kinds.len(), "stats", pool)?;
        Ok(kinds
            .iter()
            .zip(per_kind)
            .map(|(kind, s)| {
                let now = s[7];
                QueueStats {
                    pool: pool.as_str().to_owned(),
                    kind: *kind,
                    waiting: [s[0] as u64, s[1] as u64, s[2] as u64],
                    in_flight: s[3] as u64,
                    delayed: s[4] as u64,
                    dead: s[5] as u64,
                    oldest_waiting_ms: (s[6] >= 0).then(|| (now - s[6]).max(0) as u64),
                    paused: s[8] == 1,
                }
            })
            .collect())
    }

    /// Pauses (`true`) or resumes a queue: while paused it takes jobs but no worker claims from
    /// it. Returns whether the state changed.
    pub async fn set_paused(&self, queue: &QueueName, paused: bool) -> Result<bool, QueueError> {
        let mut c = self.conn.clone();
        let changed: i64 = scripts::PAUSE
            .prepare_invoke()
            .key(queue.pool.prefix())
            .arg(queue.kind.as_str())
            .arg(if paused { "pause" } else { "resume" })
            .arg(self.cfg.wake_cap)
            .invoke_async(&mut c)
            .await
            .during("pause", &queue.pool)?;
        Ok(changed == 1)
    }
}

/// `stats.lua`'s reply: 9 values per kind.
struct StatsReply(Vec<[i64; 9]>);

impl FromRedisValue for StatsReply {
    fn from_redis_value(v: Value) -> Result<Self, ParsingError> {
        records(v, "stats", 9)?
            .iter()
            .map(|r| {
                let mut out = [0i64; 9];
                for (o, v) in out.iter_mut().zip(r) {
                    *o = int(v, "stats")?;
                }
                Ok(out)
            })
            .collect::<Result<_, ParsingError>>()
            .map(Self)
    }
}
