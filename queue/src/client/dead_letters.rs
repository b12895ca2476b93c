//! The dead-letter queue: listing with filters, counting, replaying and purging.

use redis::{FromRedisValue, ParsingError, Value};

use super::QueueClient;
use super::wire::{one_per_record, str_codes};
use crate::error::{During, QueueError};
use crate::job::{ErrorClass, JobId, JobKind};
use crate::keys::QueueName;
use crate::scripts;

/// Selects dead-lettered jobs.
#[derive(Clone, Debug, Default)]
pub struct DeadFilter {
    /// Only this error class.
    pub class: Option<ErrorClass>,
    /// Dead-lettered at or after (Unix ms).
    pub since_ms: Option<u64>,
    /// Dead-lettered at or before (Unix ms).
    pub until_ms: Option<u64>,
    /// Only this tenant's.
    pub tenant: Option<String>,
}

impl DeadFilter {
    /// The dead set's score bounds for the time range.
    fn score_range(&self) -> (String, String) {
        (
            self.since_ms.map(|v| v.to_string()).unwrap_or_else(|| "-inf".into()),
            self.until_ms.map(|v| v.to_string()).unwrap_or_else(|| "+inf".into()),
        )
    }

    /// Whether it filters on more than time (so Redis cannot count or page it alone).
    fn by_record(&self) -> bool {
        self.class.is_some() || self.tenant.is_some()
    }

    /// Whether `d` passes the class and tenant filters.
    fn matches(&self, d: &DeadLetter) -> bool {
        self.class.is_none_or(|c| c.as_str() == d.class) && self.tenant.as_deref().is_none_or(|t| t == d.tenant)
    }
}

/// One dead-lettered job, as listed.
#[derive(Clone, Debug, serde::Serialize)]
pub struct DeadLetter {
    /// The job.
    pub id: JobId,
    /// Its queue's kind.
    pub kind: JobKind,
    /// When it was dead-lettered (Unix ms).
    pub dead_at_ms: u64,
    /// Last error class.
    pub class: String,
    /// Its tenant.
    pub tenant: String,
    /// Last error message.
    pub message: String,
    /// Attempts made.
    pub attempts: u32,
}

/// What an operator does with dead letters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeadAction {
    /// Back on the queue, attempts reset.
    Replay,
    /// Deleted for good: record, dead-letter entry, idempotency key.
    Purge,
}

impl DeadAction {
    /// `replay` or `purge`.
    pub fn as_str(self) -> &'static str {
        match self {
            DeadAction::Replay => "replay",
            DeadAction::Purge => "purge",
        }
    }
}

/// Outcome of replaying or purging one dead letter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeadLetterOutcome {
    /// Replayed (back on its queue) or purged.
    Done,
    /// Not (or no longer) dead-lettered: left alone.
    NotDead,
    /// Dead-lettered, but of another error class or tenant than the filter asked.
    Unmatched,
}

/// A dead letter's fields as read: error class, message, attempts, tenant.
type DeadRow = (Option<String>, Option<String>, Option<u32>, Option<String>);

impl QueueClient {
    /// Lists dead-lettered jobs of a queue, oldest first: `limit` from `offset` among those
    /// `filter` selects. Redis pages by time alone; with a class filter the time range is read
    /// a page at a time until `offset + limit` of the class were seen or the range ends.
    pub async fn dead_letters(
        &self,
        queue: &QueueName,
        filter: &DeadFilter,
        offset: usize,
        limit: usize,
    ) -> Result<Vec<DeadLetter>, QueueError> {
        if !filter.by_record() {
            return Ok(self.dead_page(queue, filter, offset, limit).await?.0);
        }
        const PAGE: usize = 1000;
        let (mut skip, mut from, mut out) = (offset, 0, Vec::new());
        while out.len() < limit {
            let (page, read) = self.dead_page(queue, filter, from, PAGE).await?;
            for d in page.into_iter().filter(|d| filter.matches(d)) {
                if skip > 0 {
                    skip -= 1;
                } else if out.len() < limit {
                    out.push(d);
                }
            }
            if read < PAGE {
                break;
            }
            from += PAGE;
        }
        Ok(out)
    }

    /// One page of a queue's dead set by time (`filter`'s class ignored), with how many entries
    /// the dead set gave (records whose id does not parse are left out of the page).
    async fn dead_page(
        &self,
        queue: &QueueName,
        filter: &DeadFilter,
        offset: usize,
        limit: usize,
    ) -> Result<(Vec<DeadLetter>, usize), QueueError> {
        let key = queue.pool.queue_key(queue.kind, "dead");
        let (min, max) = filter.score_range();
        let mut c = self.conn.clone();
        let page: Vec<(String, f64)> = redis::cmd("ZRANGE")
            .arg(&key)
            .arg(&min)
            .arg(&max)
            .arg("BYSCORE")
            .arg("LIMIT")
            .arg(offset)
            .arg(limit)
            .arg("WITHSCORES")
            .query_async(&mut c)
            .await?;
        let read = page.len();
        let page: Vec<(JobId, f64)> = page
            .into_iter()
            .filter_map(|(id, s)| Some((id.parse().ok()?, s)))
            .collect();
        if page.is_empty() {
            return Ok((Vec::new(), read));
        }
        // The page's records in one round trip (every key is in the pool's slot).
        let mut pipe = redis::pipe();
        for (id, _) in &page {
            pipe.cmd("HMGET")
                .arg(queue.pool.job_key(*id))
                .arg("eclass")
                .arg("emsg")
                .arg(crate::fields::job::ATTEMPTS)
                .arg(crate::fields::job::TENANT);
        }
        let rows: Vec<DeadRow> = pipe.query_async(&mut c).await?;
        let page = page
            .into_iter()
            .zip(rows)
            .map(|((id, score), (class, message, attempts, tenant))| DeadLetter {
                id,
                kind: queue.kind,
                dead_at_ms: score as u64,
                class: class.unwrap_or_default(),
                message: message.unwrap_or_default(),
                attempts: attempts.unwrap_or(0),
                tenant: tenant.unwrap_or_default(),
            })
            .collect();
        Ok((page, read))
    }

    /// How many dead-lettered jobs of a queue `filter` selects: one `ZCOUNT` without a class
    /// or tenant filter, else a walk over the time range's pages.
    pub async fn count_dead(&self, queue: &QueueName, filter: &DeadFilter) -> Result<u64, QueueError> {
        Ok(self.count_dead_within(queue, filter, usize::MAX).await?.0)
    }

    /// [`QueueClient::count_dead`], reading at most `budget` records for a class or tenant
    /// filter (a time-only filter is one `ZCOUNT` whatever the budget). Returns the count, how
    /// many records were read, and whether the count is complete (else it is a lower bound).
    pub async fn count_dead_within(
        &self,
        queue: &QueueName,
        filter: &DeadFilter,
        budget: usize,
    ) -> Result<(u64, usize, bool), QueueError> {
        const PAGE: usize = 1000;
        if !filter.by_record() {
            let (min, max) = filter.score_range();
            let mut c = self.conn.clone();
            let n: u64 = redis::cmd("ZCOUNT")
                .arg(queue.pool.queue_key(queue.kind, "dead"))
                .arg(min)
                .arg(max)
                .query_async(&mut c)
                .await?;
            return Ok((n, 0, true));
        }
        let (mut total, mut offset) = (0u64, 0);
        loop {
            let want = PAGE.min(budget - offset);
            let (matched, read) = self.count_dead_range(queue, filter, offset, want).await?;
            total += matched;
            offset += read;
            if read < want {
                return Ok((total, offset, true));
            }
            if offset >= budget {
                return Ok((total, offset, false));
            }
        }
    }

    /// Of `limit` entries of a queue's dead set from `offset` (by time, within `filter`'s
    /// range), how many `filter`'s class and tenant select, and how many entries were read (fewer
    /// than `limit`: the range ended). A count a page at a time, for a caller that reports
    /// progress.
    pub async fn count_dead_range(
        &self,
        queue: &QueueName,
        filter: &DeadFilter,
        offset: usize,
        limit: usize,
    ) -> Result<(u64, usize), QueueError> {
        let (page, read) = self.dead_page(queue, filter, offset, limit).await?;
        Ok((page.iter().filter(|d| filter.matches(d)).count() as u64, read))
    }

    /// Replays dead-lettered jobs of one queue, attempts reset. A job is replayed at most once
    /// per dead-lettering, however many replays race.
    pub async fn replay(
        &self,
        queue: &QueueName,
        ids: &[JobId],
        class: Option<ErrorClass>,
    ) -> Result<Vec<DeadLetterOutcome>, QueueError> {
        let filter = DeadFilter {
            class,
            ..DeadFilter::default()
        };
        self.act_on_dead(queue, ids, &filter, DeadAction::Replay).await
    }

    /// Replays or purges dead-lettered jobs of one queue (only those still dead-lettered, and
    /// of `filter`'s class and tenant when it names them; its time range is not checked),
    /// atomically per call.
    pub async fn act_on_dead(
        &self,
        queue: &QueueName,
        ids: &[JobId],
        filter: &DeadFilter,
        action: DeadAction,
    ) -> Result<Vec<DeadLetterOutcome>, QueueError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let class = filter.class.map(ErrorClass::as_str).unwrap_or("");
        let mut inv = scripts::DEAD_LETTERS.prepare_invoke();
        inv.key(queue.pool.prefix())
            .arg(action.as_str())
            .arg(queue.kind.as_str())
            .arg(self.cfg.wake_cap)
            .arg(class)
            .arg(self.cfg.user_index_ttl().as_secs())
            .arg(filter.tenant.as_deref().unwrap_or(""));
        for id in ids {
            inv.arg(id.to_string());
        }
        let mut c = self.conn.clone();
        let reply: DeadLettersReply = inv.invoke_async(&mut c).await.during("dead_letters", &queue.pool)?;
        one_per_record(reply.0, ids.len(), "dead_letters", &queue.pool)
    }

    /// Replays every dead letter of `queue` that `filter` selects, a page at a time (the CLI's
    /// and the admin API's `replay --all`); `progress` gets each page's count. Returns how many
    /// were replayed.
    pub async fn replay_matching(
        &self,
        queue: &QueueName,
        filter: &DeadFilter,
        progress: impl FnMut(u64),
    ) -> Result<u64, QueueError> {
        self.act_on_matching(queue, filter, DeadAction::Replay, progress).await
    }

    /// Replays or purges every dead letter of `queue` that `filter` selects, a page at a time;
    /// `progress` gets each page's count. Returns how many were acted on.
    pub async fn act_on_matching(
        &self,
        queue: &QueueName,
        filter: &DeadFilter,
        action: DeadAction,
        mut progress: impl FnMut(u64),
    ) -> Result<u64, QueueError> {
        const PAGE: usize = 500;
        let by_time = DeadFilter {
            class: None,
            tenant: None,
            ..filter.clone()
        };
        let mut replayed = 0;
        // Replayed jobs leave the dead set, so re-reading from offset 0 pages through it; jobs
        // of another class or tenant stay and are skipped past.
        let mut skip = 0;
        loop {
            let (page, read) = self.dead_page(queue, &by_time, skip, PAGE).await?;
            if read == 0 {
                break;
            }
            let ids: Vec<JobId> = page.iter().map(|d| d.id).collect();
            let outcomes = self.act_on_dead(queue, &ids, filter, action).await?;
            let n = outcomes.iter().filter(|o| **o == DeadLetterOutcome::Done).count();
            skip += outcomes.iter().filter(|o| **o == DeadLetterOutcome::Unmatched).count();
            replayed += n as u64;
            progress(n as u64);
            if n == 0 && page.len() < PAGE {
                break;
            }
        }
        Ok(replayed)
    }

    /// Replays one dead-lettered job by id.
    pub async fn replay_one(&self, id: JobId) -> Result<(), QueueError> {
        self.act_on_one(id, DeadAction::Replay).await
    }

    /// Replays or purges one dead-lettered job by id.
    pub async fn act_on_one(&self, id: JobId, action: DeadAction) -> Result<(), QueueError> {
        let pool = self.locate(id).await?;
        // The kind alone (the spec may be sealed with keys this process lacks).
        let mut c = self.conn.clone();
        let kind: Option<String> = redis::cmd("HGET")
            .arg(pool.job_key(id))
            .arg(crate::fields::job::KIND)
            .query_async(&mut c)
            .await?;
        let kind = kind.ok_or(QueueError::NotFound(id))?.parse::<JobKind>()?;
        let queue = QueueName { pool, kind };
        match self
            .act_on_dead(&queue, &[id], &DeadFilter::default(), action)
            .await?
            .first()
        {
            Some(DeadLetterOutcome::Done) => Ok(()),
            _ => Err(QueueError::NotDeadLettered(id)),
        }
    }
}

/// `dead_letters.lua`'s reply: one outcome per id.
struct DeadLettersReply(Vec<DeadLetterOutcome>);

impl FromRedisValue for DeadLettersReply {
    fn from_redis_value(v: Value) -> Result<Self, ParsingError> {
        str_codes(v, "dead_letters", |c| match c {
            "done" => Some(DeadLetterOutcome::Done),
            "not_dead" => Some(DeadLetterOutcome::NotDead),
            "unmatched" => Some(DeadLetterOutcome::Unmatched),
            _ => None,
        })
        .map(Self)
    }
}
