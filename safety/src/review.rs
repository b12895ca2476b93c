//! The review queue: outputs that came close to an abuse hash — within a list's review band,
//! or of a category whose policy is `review` — are withheld (the job held in status `review`,
//! nothing released) and wait here for a person with the `safety:review` scope to confirm the
//! match (the block path: taken down, preserved, reported) or clear it (released; the content's
//! SHA-256 may go on the allow list so the same bytes are not held again).
//!
//! Keys: `gantry:{safety}:review:{id}` (the item, JSON; the id is the job's), and two sorted
//! sets of ids by time, `gantry:{safety}:reviews` (all) and `gantry:{safety}:reviews:pending`.
//! A decided item keeps its category's moderation retention; ids whose item expired are
//! dropped from the index as they are met. `gantry:{safety}:allow:sha256` is the allow list.
//!
//! An item names the content by object key and digests, the matches by list, entry and
//! distance, the prompt only by its SHA-256.

use gantry_queue::{Completion, RedisConn};
use redis::AsyncCommands;

use crate::error::SafetyError;

const ALL: &str = "gantry:{safety}:reviews";
const PENDING: &str = "gantry:{safety}:reviews:pending";
const ALLOW: &str = "gantry:{safety}:allow:sha256";

fn item_key(id: &str) -> String {
    format!("gantry:{{safety}}:review:{id}")
}

/// A file of the held job.
#[derive(Clone, Debug, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
pub struct ReviewFile {
    /// Its name (`output-0.png`).
    pub name: String,
    /// Its object key in the outputs' store (where the reviewer's route reads it).
    pub object: String,
    /// SHA-256 of its bytes.
    pub sha256: String,
    /// MD5 of its bytes.
    pub md5: String,
}

/// One match that held it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
pub struct ReviewMatch {
    /// The index of the file in [`ReviewItem::files`].
    pub file: usize,
    /// The list.
    pub list: String,
    /// Its version.
    pub list_version: u64,
    /// Its category.
    pub category: String,
    /// `pdq`, `md5` or `sha256`.
    pub match_kind: String,
    /// PDQ distance.
    pub distance: Option<u32>,
    /// The list entry matched.
    pub entry: String,
}

/// Where an item stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ReviewStatus {
    /// Waiting for a reviewer.
    Pending,
    /// A reviewer cleared it: released.
    Cleared,
    /// A reviewer confirmed the match: taken down.
    Confirmed,
}

impl ReviewStatus {
    /// Its name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Cleared => "cleared",
            Self::Confirmed => "confirmed",
        }
    }
}

/// A reviewer's decision.
#[derive(Clone, Debug, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
pub struct Decision {
    /// Who (`tenant/key:FINGERPRINT`).
    pub by: String,
    /// When, ms since the epoch.
    pub at_ms: u64,
    /// Why (required).
    pub reason: String,
    /// Whether the files' SHA-256 went on the allow list (clear only).
    pub allow_listed: bool,
}

/// A held job waiting for (or past) review.
#[derive(Clone, Debug, PartialEq, serde::Deserialize, serde::Serialize)]
pub struct ReviewItem {
    /// The job's id.
    pub id: String,
    /// When it was held, ms since the epoch.
    pub created_at_ms: u64,
    /// Where it stands.
    pub status: ReviewStatus,
    /// The category of its closest match.
    pub category: String,
    /// Tenant.
    pub tenant: String,
    /// The platform's id of the user (what a report names the account by).
    pub user: String,
    /// The user's pseudonymous key.
    pub user_key: String,
    /// The job's kind.
    pub kind: String,
    /// SHA-256 of the prompt, for a generate job (never the prompt).
    pub prompt_sha256: Option<String>,
    /// The input an upscale or transcode was made from (taken down with the outputs on a
    /// confirmation).
    pub input: Option<String>,
    /// The job's media files.
    pub files: Vec<ReviewFile>,
    /// What matched.
    pub matches: Vec<ReviewMatch>,
    /// What the worker held back: released as the job's result on a clear.
    pub held: Completion,
    /// The decision, once made.
    pub decision: Option<Decision>,
    /// The preserved evidence, on a confirmation that preserved.
    pub evidence_id: Option<String>,
    /// The report, on a confirmation that reports.
    pub report_id: Option<String>,
}

/// The queue, in Redis.
#[derive(Clone, Debug)]
pub struct ReviewQueue {
    conn: RedisConn,
}

fn decode(json: &str) -> Result<ReviewItem, SafetyError> {
    serde_json::from_str(json).map_err(|source| SafetyError::Json {
        what: "review item",
        source,
    })
}

fn encode(item: &ReviewItem) -> Result<String, SafetyError> {
    serde_json::to_string(item).map_err(|source| SafetyError::Json {
        what: "review item",
        source,
    })
}

impl ReviewQueue {
    /// The queue on `conn`.
    pub fn new(conn: RedisConn) -> Self {
        Self { conn }
    }

    /// Holds `item` for review. A retried attempt of the same job replaces its pending item;
    /// a decided one is never replaced (the decision stands).
    pub async fn open(&self, item: &ReviewItem) -> Result<(), SafetyError> {
        if let Some(old) = self.get(&item.id).await?
            && old.status != ReviewStatus::Pending
        {
            return Err(SafetyError::Conflict(format!(
                "review {} was already decided ({})",
                item.id,
                old.status.as_str()
            )));
        }
        let mut c = self.conn.clone();
        let _: () = redis::pipe()
            .atomic()
            .set(item_key(&item.id), encode(item)?)
            .zadd(ALL, &item.id, item.created_at_ms)
            .zadd(PENDING, &item.id, item.created_at_ms)
            .query_async(&mut c)
            .await?;
        Ok(())
    }

    /// An item.
    pub async fn get(&self, id: &str) -> Result<Option<ReviewItem>, SafetyError> {
        let mut c = self.conn.clone();
        let raw: Option<String> = c.get(item_key(id)).await?;
        raw.as_deref().map(decode).transpose()
    }

    /// The newest items, pending only or all, at most `limit`. Ids whose item expired are
    /// dropped from the index.
    pub async fn list(&self, pending_only: bool, limit: usize) -> Result<Vec<ReviewItem>, SafetyError> {
        let index = if pending_only { PENDING } else { ALL };
        let mut c = self.conn.clone();
        let mut out = Vec::new();
        let mut start = 0isize;
        while out.len() < limit {
            let ids: Vec<String> = c.zrevrange(index, start, start + limit as isize - 1).await?;
            if ids.is_empty() {
                break;
            }
            start += ids.len() as isize;
            let keys: Vec<String> = ids.iter().map(|i| item_key(i)).collect();
            let raws: Vec<Option<String>> = redis::cmd("MGET").arg(&keys).query_async(&mut c).await?;
            for (id, raw) in ids.iter().zip(raws) {
                match raw {
                    Some(json) if out.len() < limit => out.push(decode(&json)?),
                    Some(_) => {}
                    None => {
                        let _: () = redis::pipe()
                            .zrem(ALL, id)
                            .zrem(PENDING, id)
                            .query_async(&mut c)
                            .await?;
                    }
                }
            }
        }
        Ok(out)
    }

    /// How many wait for a reviewer.
    pub async fn pending_count(&self) -> Result<u64, SafetyError> {
        let mut c = self.conn.clone();
        Ok(c.zcard(PENDING).await?)
    }

    /// How many wait for a reviewer, and since when the oldest has (ms).
    pub async fn backlog(&self) -> Result<(u64, Option<u64>), SafetyError> {
        let mut c = self.conn.clone();
        let n: u64 = c.zcard(PENDING).await?;
        let oldest: Vec<(String, f64)> = c.zrange_withscores(PENDING, 0, 0).await?;
        Ok((n, oldest.first().map(|(_, s)| *s as u64)))
    }

    /// Writes a decided item: off the pending index, kept `ttl_secs` more.
    pub async fn close(&self, item: &ReviewItem, ttl_secs: u64) -> Result<(), SafetyError> {
        let mut c = self.conn.clone();
        let _: () = redis::pipe()
            .atomic()
            .set_ex(item_key(&item.id), encode(item)?, ttl_secs.max(1))
            .zrem(PENDING, &item.id)
            .query_async(&mut c)
            .await?;
        Ok(())
    }

    /// Puts content digests on the allow list: bytes a reviewer cleared are not held again.
    pub async fn allow(&self, sha256s: &[String]) -> Result<(), SafetyError> {
        if sha256s.is_empty() {
            return Ok(());
        }
        let mut c = self.conn.clone();
        let _: () = c.sadd(ALLOW, sha256s).await?;
        Ok(())
    }

    /// Whether a reviewer cleared these bytes before.
    pub async fn is_allowed(&self, sha256: &str) -> Result<bool, SafetyError> {
        let mut c = self.conn.clone();
        Ok(c.sismember(ALLOW, sha256).await?)
    }
}
