//! One job by id: its record, its status, cancelling it; re-sealing a pool's records under a new key.

use redis::{FromRedisValue, ParsingError, Value};

use std::collections::HashMap;

use super::{QueueClient, parse_record, stored_status};
use crate::error::{During, QueueError};
use crate::job::{JobId, JobRecord, JobStatus};
use crate::keys::Pool;
use crate::scripts;

/// Outcome of a cancel request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CancelOutcome {
    /// It was waiting and is now cancelled.
    Cancelled,
    /// It is running; its worker stops it at its next heartbeat.
    Requested,
}

/// What [`QueueClient::reseal`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ResealReport {
    /// Job records looked at.
    pub scanned: u64,
    /// Rewritten under the current key.
    pub resealed: u64,
    /// Not readable with the keys in force (left as they are).
    pub unreadable: u64,
}

impl QueueClient {
    /// Everything known about a job.
    pub async fn job(&self, id: JobId) -> Result<JobRecord, QueueError> {
        let pool = self.locate(id).await?;
        self.job_in(&pool, id).await
    }

    /// Everything known about a job in a known pool.
    pub async fn job_in(&self, pool: &Pool, id: JobId) -> Result<JobRecord, QueueError> {
        let mut c = self.conn.clone();
        let h: HashMap<String, Vec<u8>> = redis::cmd("HGETALL").arg(pool.job_key(id)).query_async(&mut c).await?;
        if h.is_empty() {
            return Err(QueueError::NotFound(id));
        }
        parse_record(id, pool, &h, self.keys.as_deref())
    }

    /// A job's status alone (no spec to open: works without the data keys).
    pub async fn status(&self, id: JobId) -> Result<JobStatus, QueueError> {
        let pool = self.locate(id).await?;
        let mut c = self.conn.clone();
        let s: Option<String> = redis::cmd("HGET")
            .arg(pool.job_key(id))
            .arg(crate::fields::job::STATUS)
            .query_async(&mut c)
            .await?;
        stored_status(&s.ok_or(QueueError::NotFound(id))?)
    }

    /// Cancels a job: a waiting one at once, a running one at its worker's next heartbeat.
    pub async fn cancel(&self, id: JobId) -> Result<CancelOutcome, QueueError> {
        let pool = self.locate(id).await?;
        let mut inv = scripts::CANCEL.prepare_invoke();
        inv.key(pool.prefix())
            .arg(id.to_string())
            .arg(self.cfg.finished_ttl.as_secs());
        let mut c = self.conn.clone();
        match inv.invoke_async(&mut c).await.during("cancel", &pool)? {
            CancelReply::Cancelled => Ok(CancelOutcome::Cancelled),
            CancelReply::Requested => Ok(CancelOutcome::Requested),
            CancelReply::NotFound => Err(QueueError::NotFound(id)),
            CancelReply::Finished(status) => Err(QueueError::AlreadyFinished { id, status }),
        }
    }

    /// Ends a job held for review (status `review`): `Some(done)` releases it as a success
    /// with the result and usage its worker held back; `None` blocks it with `message`. Either
    /// way what its hold left reserved is settled (credits, its tenant's event, a pipeline's
    /// next steps). A job no longer held is refused with its status.
    pub async fn settle_review(
        &self,
        id: JobId,
        release: Option<&crate::Completion>,
        message: &str,
    ) -> Result<JobStatus, QueueError> {
        let pool = self.locate(id).await?;
        let json = |v: Option<Result<String, serde_json::Error>>| {
            v.transpose()
                .map(Option::unwrap_or_default)
                .map_err(|e| QueueError::Protocol(format!("release of job {id}: {e}")))
        };
        let (outcome, result, usage) = match release {
            Some(done) => (
                "succeeded",
                json(done.output.as_ref().map(serde_json::to_string))?,
                json(done.usage.as_ref().map(serde_json::to_string))?,
            ),
            None => ("blocked", String::new(), String::new()),
        };
        let mut inv = scripts::REVIEW.prepare_invoke();
        inv.key(pool.prefix())
            .arg(self.cfg.finished_ttl.as_secs())
            .arg(id.to_string())
            .arg(outcome)
            .arg(result)
            .arg(usage)
            .arg(message.chars().take(1024).collect::<String>());
        let mut c = self.conn.clone();
        let reply: String = inv.invoke_async(&mut c).await.during("review", &pool)?;
        match reply.as_str() {
            "succeeded" => Ok(JobStatus::Succeeded),
            "blocked" => Ok(JobStatus::Blocked),
            "not_found" => Err(QueueError::NotFound(id)),
            other => match other.strip_prefix("not_held:") {
                Some(status) => Err(QueueError::AlreadyFinished {
                    id,
                    status: status.to_owned(),
                }),
                None => Err(QueueError::Protocol(format!("review.lua answered {other:?}"))),
            },
        }
    }

    /// Re-seals, with the current data key, every stored job spec of `pool` that is sealed with
    /// another key (or not sealed at all), while the fleet runs: each record is rewritten only
    /// if it has not changed since it was read. Afterwards the old key can be retired. On a
    /// Cluster the pool's keys share one slot, so the scan runs on the node that owns it.
    pub async fn reseal(&self, pool: &Pool) -> Result<ResealReport, QueueError> {
        let keys = self.keys.as_deref().ok_or(crate::seal::SealError::NoKeys)?;
        let mut c = self.conn.clone();
        let pattern = format!("{}job:*", pool.prefix());
        let mut report = ResealReport::default();
        let mut cursor: u64 = 0;
        loop {
            let (next, batch) = self.conn.scan_page(&pattern, cursor, 500).await?;
            for key in batch {
                report.scanned += 1;
                let (raw, tenant, kind): (Option<String>, Option<String>, Option<String>) = redis::cmd("HMGET")
                    .arg(&key)
                    .arg(crate::fields::job::SPEC)
                    .arg(crate::fields::job::TENANT)
                    .arg(crate::fields::job::KIND)
                    .query_async(&mut c)
                    .await?;
                let (Some(raw), Some(id)) = (raw, key.rsplit(':').next()) else {
                    continue;
                };
                let Ok(mut v) = serde_json::from_str::<serde_json::Value>(&raw) else {
                    report.unreadable += 1;
                    continue;
                };
                // Bound to the record's tenant and kind (a v1 spec holds the same values).
                let ctx = crate::seal::SealContext::new(
                    tenant.as_deref().unwrap_or_default(),
                    pool.as_str(),
                    kind.as_deref().unwrap_or_default(),
                    id,
                );
                if crate::seal::sealed_current(&v, keys) {
                    continue;
                }
                if crate::seal::open(&mut v, &ctx, Some(keys)).is_err() {
                    report.unreadable += 1;
                    continue;
                }
                keys.seal(&mut v, &ctx)?;
                if crate::seal::sealed_with(&v).is_none() {
                    // Nothing sensitive in this job.
                    continue;
                }
                let swapped: i64 = redis::Script::new(
                    "if redis.call('HGET', KEYS[1], 'spec') == ARGV[1] then \
                     redis.call('HSET', KEYS[1], 'spec', ARGV[2]) return 1 end return 0",
                )
                .key(&key)
                .arg(&raw)
                .arg(v.to_string())
                .invoke_async(&mut c)
                .await
                .during("reseal", pool)?;
                report.resealed += u64::try_from(swapped).unwrap_or(0);
            }
            if next == 0 {
                break;
            }
            cursor = next;
        }
        Ok(report)
    }
}

/// `cancel.lua`'s reply.
#[derive(Debug, PartialEq, Eq)]
enum CancelReply {
    Cancelled,
    Requested,
    NotFound,
    /// `finished:<status>`.
    Finished(String),
}

impl FromRedisValue for CancelReply {
    fn from_redis_value(v: Value) -> Result<Self, ParsingError> {
        let s = String::from_redis_value(v)?;
        Ok(match s.as_str() {
            "cancelled" => Self::Cancelled,
            "requested" => Self::Requested,
            "not_found" => Self::NotFound,
            other => match other.strip_prefix("finished:") {
                Some(status) if !status.is_empty() => Self::Finished(status.to_owned()),
                _ => return Err(format!("cancel: unknown reply {other:?}").into()),
            },
        })
    }
}

#[cfg(test)]
mod wire_tests {
    use super::*;

    #[test]
    fn the_cancel_reply_is_one_of_four() {
        let read = |s: &str| CancelReply::from_redis_value(Value::BulkString(s.as_bytes().to_vec()));
        assert_eq!(read("requested").expect("known"), CancelReply::Requested);
        assert_eq!(
            read("finished:dead").expect("known"),
            CancelReply::Finished("dead".into())
        );
        assert!(read("finished:").is_err());
        assert!(read("maybe").is_err());
    }
}
