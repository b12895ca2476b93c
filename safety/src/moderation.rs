//! The moderation log: one record per action taken on matched content. A record names the
//! violation category, the list and version that matched, the distance, the action, when, and
//! whose job it was (tenant, user id, job id, the prompt's SHA-256) — never the prompt and never
//! the media. Records expire after 90 days, or 7 years for categories configured as critical.
//!
//! Keys: `gantry:{moderation}:event:{id}` (JSON, with its TTL), `gantry:{moderation}:index`
//! (sorted set of ids by time, for listing; ids whose record expired are dropped as they are met)
//! and `gantry:{moderation}:user:<user key>` (a set of the user's record ids, for an export of
//! their data; keyed by the pseudonymous user key, kept as long as their longest-lived record).

use gantry_queue::RedisConn;
use redis::AsyncCommands;

use crate::error::SafetyError;

const INDEX: &str = "gantry:{moderation}:index";

fn event_key(id: &str) -> String {
    format!("gantry:{{moderation}}:event:{id}")
}

fn user_index_key(tenant: &str, user: &str) -> String {
    format!("gantry:{{moderation}}:user:{}", gantry_queue::user_key(tenant, user))
}

/// How long records are kept.
#[derive(Clone, Debug, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
pub struct Retention {
    /// Days for ordinary categories (90).
    pub default_days: u32,
    /// Days for critical categories (7 years).
    pub critical_days: u32,
    /// Categories kept `critical_days`.
    pub critical: Vec<String>,
}

impl Default for Retention {
    fn default() -> Self {
        Self {
            default_days: 90,
            critical_days: 7 * 365 + 2,
            critical: vec!["csam".into()],
        }
    }
}

impl From<&gantry_queue::RetentionPolicy> for Retention {
    fn from(p: &gantry_queue::RetentionPolicy) -> Self {
        Self {
            default_days: p.moderation_days,
            critical_days: p.moderation_critical_days,
            critical: p.critical_categories.clone(),
        }
    }
}

impl Retention {
    /// Seconds a record of `category` is kept.
    pub fn ttl_secs(&self, category: &str) -> u64 {
        let days = if self.critical.iter().any(|c| c == category) {
            self.critical_days
        } else {
            self.default_days
        };
        u64::from(days) * 86_400
    }
}

/// One moderation event.
#[derive(Clone, Debug, PartialEq, serde::Deserialize, serde::Serialize)]
pub struct ModerationEvent {
    /// Unique id (the job id and the match's position).
    pub id: String,
    /// When, ms since the epoch.
    pub at_ms: u64,
    /// Violation category (the list's).
    pub category: String,
    /// The list that matched.
    pub list: String,
    /// Its version.
    pub list_version: u64,
    /// `pdq`, `md5` or `sha256`.
    pub match_kind: String,
    /// PDQ distance (absent for exact digests).
    pub distance: Option<u32>,
    /// What was done (`blocked_deleted`, …).
    pub action: String,
    /// Objects deleted from the store.
    pub objects_deleted: u32,
    /// Tenant.
    pub tenant: String,
    /// End user id.
    pub user: String,
    /// Job id.
    pub job_id: String,
    /// SHA-256 of the job's prompt, if it had one (never the prompt).
    pub prompt_sha256: Option<String>,
    /// The user's trust score after the action.
    pub trust_score: f64,
    /// Whether the user is now blocked.
    pub user_blocked: bool,
}

/// The log, in Redis.
#[derive(Clone, Debug)]
pub struct ModerationLog {
    conn: RedisConn,
    retention: Retention,
}

impl ModerationLog {
    /// A log on `conn` keeping records per `retention`.
    pub fn new(conn: RedisConn, retention: Retention) -> Self {
        Self { conn, retention }
    }

    /// The retention in force.
    pub fn retention(&self) -> &Retention {
        &self.retention
    }

    /// Records `event` (idempotent by id: a retried attempt rewrites the same record).
    pub async fn record(&self, event: &ModerationEvent) -> Result<(), SafetyError> {
        let json = serde_json::to_string(event).map_err(|source| SafetyError::Json {
            what: "moderation event",
            source,
        })?;
        let mut c = self.conn.clone();
        let ttl = self.retention.ttl_secs(&event.category);
        let _: () = c.set_ex(event_key(&event.id), json, ttl).await?;
        let _: () = c.zadd(INDEX, &event.id, event.at_ms).await?;
        let user = user_index_key(&event.tenant, &event.user);
        redis::pipe()
            .cmd("SADD")
            .arg(&user)
            .arg(&event.id)
            .ignore()
            // Never shortened: the index lives as long as the user's longest-lived record.
            .cmd("EXPIRE")
            .arg(&user)
            .arg(ttl)
            .arg("GT")
            .ignore()
            .cmd("EXPIRE")
            .arg(&user)
            .arg(ttl)
            .arg("NX")
            .ignore()
            .query_async::<()>(&mut c)
            .await?;
        Ok(())
    }

    /// Every record of `user` of `tenant` still kept (recorded since per-user indexes exist),
    /// oldest first.
    pub async fn for_user(&self, tenant: &str, user: &str) -> Result<Vec<ModerationEvent>, SafetyError> {
        let mut c = self.conn.clone();
        let ids: Vec<String> = c.smembers(user_index_key(tenant, user)).await?;
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(e) = self.get(&id).await?
                && e.tenant == tenant
                && e.user == user
            {
                out.push(e);
            }
        }
        out.sort_by(|a, b| (a.at_ms, &a.id).cmp(&(b.at_ms, &b.id)));
        Ok(out)
    }

    /// One record, if it has not expired.
    pub async fn get(&self, id: &str) -> Result<Option<ModerationEvent>, SafetyError> {
        let mut c = self.conn.clone();
        let raw: Option<String> = c.get(event_key(id)).await?;
        raw.map(|r| {
            serde_json::from_str(&r).map_err(|source| SafetyError::Json {
                what: "stored moderation event",
                source,
            })
        })
        .transpose()
    }

    /// Seconds left before `id` expires (`None` if gone).
    pub async fn ttl(&self, id: &str) -> Result<Option<u64>, SafetyError> {
        let mut c = self.conn.clone();
        let t: i64 = c.ttl(event_key(id)).await?;
        Ok(u64::try_from(t).ok())
    }

    /// Drops from the listing index the ids whose record has expired, oldest first, looking at
    /// no more than `batch` ids younger than the longest retention (anything older is dropped
    /// unread). Returns how many were dropped.
    pub async fn prune_index(&self, now_ms: u64, batch: usize) -> Result<u64, SafetyError> {
        let mut c = self.conn.clone();
        let day_ms = 86_400_000u64;
        let longest = u64::from(self.retention.critical_days.max(self.retention.default_days)) * day_ms;
        let shortest = u64::from(self.retention.critical_days.min(self.retention.default_days)) * day_ms;
        let mut dropped: u64 = redis::cmd("ZREMRANGEBYSCORE")
            .arg(INDEX)
            .arg("-inf")
            .arg(now_ms.saturating_sub(longest))
            .query_async(&mut c)
            .await?;
        let candidates: Vec<String> = redis::cmd("ZRANGEBYSCORE")
            .arg(INDEX)
            .arg("-inf")
            .arg(now_ms.saturating_sub(shortest))
            .arg("LIMIT")
            .arg(0)
            .arg(batch)
            .query_async(&mut c)
            .await?;
        for id in candidates {
            let exists: bool = c.exists(event_key(&id)).await?;
            if !exists {
                let _: () = c.zrem(INDEX, &id).await?;
                dropped += 1;
            }
        }
        Ok(dropped)
    }

    /// The most recent records, newest first (expired ones are dropped from the index).
    pub async fn recent(&self, limit: usize) -> Result<Vec<ModerationEvent>, SafetyError> {
        let mut c = self.conn.clone();
        let ids: Vec<String> = c.zrevrange(INDEX, 0, limit.saturating_sub(1) as isize).await?;
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            match self.get(&id).await? {
                Some(e) => out.push(e),
                None => {
                    let _: () = c.zrem(INDEX, &id).await?;
                }
            }
        }
        Ok(out)
    }
}
