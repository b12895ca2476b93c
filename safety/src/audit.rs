//! The audit log of operators' actions (replays, pauses, hash-list changes…): who (tenant and
//! key fingerprint, or the CLI's OS user), what (action, target, details), when. One Redis
//! stream, `gantry:{audit}:log`; every append trims entries older than the retention (a year by
//! default) with `XADD … MINID`, so the log keeps itself within its promise without a sweeper.

use std::time::Duration;

use gantry_queue::RedisConn;
use serde::{Deserialize, Serialize};

use crate::error::SafetyError;

const STREAM: &str = "gantry:{audit}:log";

/// One operator action.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// When, ms since the epoch (Redis server time; the stream id's).
    #[serde(default)]
    pub at_ms: u64,
    /// Who: `tenant/key:<fingerprint>` for an API key, `cli/<user>` for the CLI.
    pub actor: String,
    /// What (`hashlist.publish`, `hashlist.remove`, `queue.pause`, `dead_letters.replay`…).
    pub action: String,
    /// On what (a list name, a queue, a job id).
    pub target: String,
    /// Further facts (a version, a count); never private data.
    #[serde(default)]
    pub details: serde_json::Value,
}

impl AuditEntry {
    /// An entry for `action` on `target` by `actor` (time set when recorded).
    pub fn new(actor: impl Into<String>, action: impl Into<String>, target: impl Into<String>) -> Self {
        Self {
            at_ms: 0,
            actor: actor.into(),
            action: action.into(),
            target: target.into(),
            details: serde_json::Value::Null,
        }
    }

    /// With `details`.
    pub fn details(mut self, details: serde_json::Value) -> Self {
        self.details = details;
        self
    }
}

/// The log, in Redis.
#[derive(Clone, Debug)]
pub struct AuditLog {
    conn: RedisConn,
    retention: Duration,
}

impl AuditLog {
    /// The default retention: a year, as the platforms' log promise.
    pub const DEFAULT_RETENTION: Duration = Duration::from_secs(365 * 86_400);

    /// A log on `conn` keeping entries for `retention`.
    pub fn new(conn: RedisConn, retention: Duration) -> Self {
        Self { conn, retention }
    }

    /// Appends `entry`, trimming what is past retention. Returns its id.
    pub async fn record(&self, entry: &AuditEntry) -> Result<String, SafetyError> {
        let json = serde_json::to_string(entry).map_err(|source| SafetyError::Json {
            what: "audit entry",
            source,
        })?;
        let mut c = self.conn.clone();
        let (secs, micros): (u64, u64) = redis::cmd("TIME").query_async(&mut c).await?;
        let now_ms = secs * 1000 + micros / 1000;
        let min_id = now_ms.saturating_sub(self.retention.as_millis() as u64);
        let id: String = redis::cmd("XADD")
            .arg(STREAM)
            .arg("MINID")
            .arg("~")
            .arg(min_id)
            .arg("*")
            .arg("entry")
            .arg(json)
            .query_async(&mut c)
            .await?;
        Ok(id)
    }

    /// Removes the entries older than the retention (an append trims too, but a quiet log
    /// would keep them). Returns how many went.
    pub async fn trim(&self, now_ms: u64) -> Result<u64, SafetyError> {
        let mut c = self.conn.clone();
        let min_id = now_ms.saturating_sub(self.retention.as_millis() as u64);
        Ok(redis::cmd("XTRIM")
            .arg(STREAM)
            .arg("MINID")
            .arg(min_id)
            .query_async(&mut c)
            .await?)
    }

    /// How many entries the log holds, and when the oldest was written (ms since the epoch).
    pub async fn extent(&self) -> Result<(u64, Option<u64>), SafetyError> {
        let mut c = self.conn.clone();
        let len: u64 = redis::cmd("XLEN").arg(STREAM).query_async(&mut c).await?;
        let first: Vec<(String, Vec<(String, String)>)> = redis::cmd("XRANGE")
            .arg(STREAM)
            .arg("-")
            .arg("+")
            .arg("COUNT")
            .arg(1)
            .query_async(&mut c)
            .await?;
        let oldest = first
            .first()
            .and_then(|(id, _)| id.split('-').next())
            .and_then(|t| t.parse().ok());
        Ok((len, oldest))
    }

    /// How long entries are kept.
    pub fn retention(&self) -> Duration {
        self.retention
    }

    /// The most recent entries, newest first.
    pub async fn recent(&self, limit: usize) -> Result<Vec<AuditEntry>, SafetyError> {
        let mut c = self.conn.clone();
        let rows: Vec<(String, Vec<(String, String)>)> = redis::cmd("XREVRANGE")
            .arg(STREAM)
            .arg("+")
            .arg("-")
            .arg("COUNT")
            .arg(limit.max(1))
            .query_async(&mut c)
            .await?;
        let mut out = Vec::with_capacity(rows.len());
        for (id, fields) in rows {
            let Some((_, json)) = fields.into_iter().find(|(k, _)| k == "entry") else {
                continue;
            };
            let mut e: AuditEntry = serde_json::from_str(&json).map_err(|source| SafetyError::Json {
                what: "stored audit entry",
                source,
            })?;
            e.at_ms = id.split('-').next().and_then(|t| t.parse().ok()).unwrap_or(0);
            out.push(e);
        }
        Ok(out)
    }
}
