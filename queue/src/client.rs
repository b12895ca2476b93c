//! [`QueueClient`]: every queue operation, each one Redis round trip through a Lua script.

use crate::seal::{Keyring, SealError};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::Value;

use crate::config::QueueConfig;
use crate::conn::{RedisConn, RedisTarget};
use crate::error::{During, QueueError, ValidationError};
use crate::job::{
    Completion, ErrorClass, HistoryEvent, JobError, JobId, JobKind, JobRecord, JobSpec, JobStatus, NewJob, Priority,
    ResultRef, Usage,
};
use crate::keys::{POOLS_KEY, Pool, QueueName};
use crate::scripts;

/// The result of enqueuing one job.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Enqueued {
    /// The job's id (the first job's, for a duplicate idempotency key).
    pub id: JobId,
    /// Whether an earlier job with the same idempotency key was returned instead.
    pub duplicate: bool,
}

/// How an enqueued job is accounted for and guarded: its tenant's fair share of the fleet, the
/// credits the scheduler reserved for it, and whether its outputs are scanned before release.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Accounting {
    /// The tenant's weight: within a priority, tenants' jobs are claimed in proportion to it.
    pub weight: u32,
    /// Credits reserved at admission. A job with a reservation or a price rule (a free job
    /// the scheduler admitted) leaves a credit event on its pool's stream when it finishes.
    pub credits_reserved: i64,
    /// The price rule locked at admission, opaque to the queue (handed back with the event).
    pub price_rule: String,
    /// Scan every output against the abuse hash lists before the result is released (the
    /// tenant's setting; on unless the tenant's configuration turns it off).
    pub scan_outputs: bool,
}

impl Default for Accounting {
    fn default() -> Self {
        Self {
            weight: 1,
            credits_reserved: 0,
            price_rule: String::new(),
            scan_outputs: true,
        }
    }
}

/// Identifies one lease: a claimed attempt of a job. The token fences stale workers: an ack,
/// failure or heartbeat with an old token is ignored.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct LeaseRef {
    /// The job.
    pub id: JobId,
    /// Its kind (names its queue within the pool).
    pub kind: JobKind,
    /// The lease token from the claim.
    pub token: u64,
}

/// A job handed to a worker.
#[derive(Clone, Debug)]
pub struct ClaimedJob {
    /// The lease to heartbeat, ack or fail with.
    pub lease: LeaseRef,
    /// Pool it came from.
    pub pool: Pool,
    /// This attempt's number, from 1.
    pub attempt: u32,
    /// Attempts allowed.
    pub max_attempts: u32,
    /// What to run.
    pub spec: JobSpec,
    /// The GPU (index on the worker) the claim placed it on; `None` for CPU jobs.
    pub gpu: Option<u32>,
}

/// What a worker can take on now, sent with each claim so only jobs that fit are claimed.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct ClaimCapacity {
    /// Free CPU-job slots.
    pub cpu: usize,
    /// Per GPU: free (unreserved) VRAM in whole GiB, and whether NVENC is proven there.
    pub gpus: Vec<(u64, bool)>,
    /// Models loaded and warm on this worker.
    pub warm: Vec<String>,
}

impl ClaimCapacity {
    /// CPU-only capacity of `slots` jobs.
    pub fn cpu(slots: usize) -> Self {
        Self {
            cpu: slots,
            ..Default::default()
        }
    }

    fn to_json(&self) -> String {
        let gpus: Vec<(u64, u8)> = self.gpus.iter().map(|(g, n)| (*g, u8::from(*n))).collect();
        serde_json::json!({ "cpu": self.cpu, "gpus": gpus, "warm": self.warm }).to_string()
    }
}

/// What one claim returned.
#[derive(Debug, Default)]
pub struct ClaimBatch {
    /// Jobs now leased to the caller.
    pub jobs: Vec<ClaimedJob>,
    /// The earliest due time of a delayed job in these queues (Unix ms, Redis clock).
    pub next_due_ms: Option<u64>,
    /// Records that could not be read and were dead-lettered as permanent at once.
    pub poisoned: usize,
    /// Jobs were waiting that did not fit the capacity offered: wait for capacity to free up
    /// rather than for pushes (the wake-up was handed on to other workers).
    pub unfit: bool,
}

/// Outcome of an ack.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AckOutcome {
    /// Recorded as succeeded.
    Acked,
    /// The lease was no longer ours; nothing changed.
    Stale,
}

/// One failed attempt to record.
#[derive(Clone, Debug)]
pub struct Failure {
    /// The lease.
    pub lease: LeaseRef,
    /// The attempt number that failed (for the backoff).
    pub attempt: u32,
    /// Why.
    pub class: ErrorClass,
    /// For operators; must not carry prompts or other private data.
    pub message: String,
    /// Retry no sooner than this (at most an hour); the backoff applies when it is longer.
    pub retry_after: Option<Duration>,
}

/// The longest delay a failure may ask for.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

/// Outcome of a failure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailOutcome {
    /// Scheduled to run again after a backoff.
    Retry,
    /// Moved to the dead-letter queue.
    Dead,
    /// Ended as cancelled.
    Cancelled,
    /// Ended as blocked (prohibited content).
    Blocked,
    /// The lease was no longer ours; nothing changed.
    Stale,
}

/// State of a lease after a heartbeat.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LeaseState {
    /// Extended.
    Extended,
    /// Extended, and the job's cancellation was requested: stop it.
    CancelRequested,
    /// The lease is gone (expired and reaped, or the job was replaced): stop and do not ack.
    Lost,
}

/// What one pass of [`QueueClient::erase_user`] did in one pool.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct ErasureCounts {
    /// Waiting (queued, delayed, retry-scheduled) jobs cancelled, their credits refunded.
    pub cancelled: u64,
    /// Running jobs asked to stop; erased by a later pass once they have ended.
    pub running: u64,
    /// Job records deleted (with their results, history and sealed payloads).
    pub deleted: u64,
    /// Dead-letter entries removed.
    pub dead_letters: u64,
}

impl std::ops::AddAssign for ErasureCounts {
    fn add_assign(&mut self, o: Self) {
        self.cancelled += o.cancelled;
        self.running += o.running;
        self.deleted += o.deleted;
        self.dead_letters += o.dead_letters;
    }
}

/// Outcome of a cancel request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CancelOutcome {
    /// It was waiting and is now cancelled.
    Cancelled,
    /// It is running; its worker stops it at its next heartbeat.
    Requested,
}

/// What the reaper did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReapReport {
    /// Expired leases returned to their queue.
    pub requeued: u64,
    /// Expired leases on a last attempt, dead-lettered.
    pub dead: u64,
    /// Expired leases of jobs whose cancellation was requested.
    pub cancelled: u64,
}

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

/// Selects dead-lettered jobs.
#[derive(Clone, Debug, Default)]
pub struct DeadFilter {
    /// Only this error class.
    pub class: Option<ErrorClass>,
    /// Dead-lettered at or after (Unix ms).
    pub since_ms: Option<u64>,
    /// Dead-lettered at or before (Unix ms).
    pub until_ms: Option<u64>,
}

impl DeadFilter {
    /// The dead set's score bounds for the time range.
    fn score_range(&self) -> (String, String) {
        (
            self.since_ms.map(|v| v.to_string()).unwrap_or_else(|| "-inf".into()),
            self.until_ms.map(|v| v.to_string()).unwrap_or_else(|| "+inf".into()),
        )
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
    /// Dead-lettered with another error class than the filter asked.
    ClassMismatch,
}

/// A validated job, serialized and ready for the enqueue script.
struct Prepared {
    id: JobId,
    kind: JobKind,
    priority: Priority,
    delay_ms: u64,
    /// `tenant:<SHA-256 of the key>`, or empty.
    idem: String,
    json: String,
    max_attempts: u32,
    /// Requirements shape; empty for CPU jobs.
    shape: String,
    /// The user's pseudonymous key ([`crate::user_key`]): the job joins that user's index.
    user_key: String,
}

/// Largest VRAM a job may ask for.
const MAX_VRAM_BYTES: u64 = 1 << 40;

/// The client for producers, workers and admin tools. Cheap to clone.
#[derive(Clone, Debug)]
pub struct QueueClient {
    conn: RedisConn,
    target: RedisTarget,
    cfg: Arc<QueueConfig>,
    known_pools: Arc<Mutex<HashSet<String>>>,
    /// The data keys that seal sensitive fields at rest (from the environment).
    keys: Option<Arc<Keyring>>,
}

impl QueueClient {
    /// Connects to `url` (see [`RedisTarget::parse`]).
    pub async fn connect(url: &str, cfg: QueueConfig) -> Result<Self, QueueError> {
        let target = RedisTarget::parse(url)?;
        let keys = Keyring::from_env()?.map(Arc::new);
        let conn = RedisConn::connect(&target, Some(Duration::from_secs(5))).await?;
        Ok(Self {
            conn,
            target,
            cfg: Arc::new(cfg),
            known_pools: Arc::default(),
            keys,
        })
    }

    /// Seals sensitive fields with these keys from now on (replacing the environment's).
    pub fn with_keys(mut self, keys: Keyring) -> Self {
        self.keys = Some(Arc::new(keys));
        self
    }

    /// The data keys in force, if any.
    pub fn keys(&self) -> Option<&Keyring> {
        self.keys.as_deref()
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
                let raw: Option<String> = redis::cmd("HGET")
                    .arg(&key)
                    .arg(crate::fields::job::SPEC)
                    .query_async(&mut c)
                    .await?;
                let (Some(raw), Some(id)) = (raw, key.rsplit(':').next()) else {
                    continue;
                };
                let Ok(mut v) = serde_json::from_str::<serde_json::Value>(&raw) else {
                    report.unreadable += 1;
                    continue;
                };
                if crate::seal::sealed_current(&v, keys) {
                    continue;
                }
                if crate::seal::open(&mut v, id, Some(keys)).is_err() {
                    report.unreadable += 1;
                    continue;
                }
                keys.seal(&mut v, id)?;
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

    /// The configuration in force.
    pub fn config(&self) -> &QueueConfig {
        &self.cfg
    }

    /// Where this client connects.
    pub fn target(&self) -> &RedisTarget {
        &self.target
    }

    /// A fresh connection for blocking waits (see [`QueueClient::wait_for_work`]).
    pub async fn blocking_connection(&self, block: Duration) -> Result<RedisConn, QueueError> {
        RedisConn::connect_blocking(&self.target, block).await
    }

    /// The shared multiplexed connection, for callers with their own commands.
    pub fn connection(&self) -> RedisConn {
        self.conn.clone()
    }

    fn validate(&self, pool: &Pool, id: JobId, job: NewJob, scan_outputs: bool) -> Result<Prepared, QueueError> {
        check_text("tenant", &job.tenant, 128)?;
        check_text("user", &job.user, 128)?;
        if let Some(k) = &job.idempotency_key {
            check_text("idempotency_key", k, 256)?;
        }
        let max_attempts = job.max_attempts.unwrap_or(self.cfg.default_max_attempts);
        if max_attempts == 0 || max_attempts > self.cfg.max_attempts_limit {
            return Err(ValidationError::InvalidField {
                field: "max_attempts",
                reason: format!("must be 1..={}", self.cfg.max_attempts_limit),
            }
            .into());
        }
        let timeout_secs = job.timeout_secs.unwrap_or(self.cfg.default_timeout.as_secs());
        if timeout_secs == 0 || timeout_secs > self.cfg.max_timeout.as_secs() {
            return Err(ValidationError::InvalidField {
                field: "timeout_secs",
                reason: format!("must be 1..={}", self.cfg.max_timeout.as_secs()),
            }
            .into());
        }
        let delay_ms = job.delay_ms.unwrap_or(0);
        let max_ms = self.cfg.max_delay.as_millis() as u64;
        if delay_ms > max_ms {
            return Err(ValidationError::DelayTooLong { delay_ms, max_ms }.into());
        }
        if let Some(gpu) = &job.requirements.gpu
            && (gpu.min_vram_bytes == 0 || gpu.min_vram_bytes > MAX_VRAM_BYTES)
        {
            return Err(ValidationError::InvalidField {
                field: "requirements.gpu.min_vram_bytes",
                reason: format!("must be 1..={MAX_VRAM_BYTES} (1 TiB)"),
            }
            .into());
        }
        if let Some(m) = &job.requirements.preferred_model
            && (m.is_empty()
                || m.len() > 64
                || !m
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'/' | b'@')))
        {
            return Err(ValidationError::InvalidField {
                field: "requirements.preferred_model",
                reason: "1-64 characters of A-Z, a-z, 0-9, '-', '_', '.', '/', '@'".into(),
            }
            .into());
        }
        if let crate::Payload::Generate(g) = &job.body
            && g.reference_images.len() > crate::payload::MAX_REFERENCE_IMAGES
        {
            // Each URL is a fetch the worker makes on the tenant's behalf: bounded.
            return Err(ValidationError::InvalidField {
                field: "payload.reference_images",
                reason: format!("at most {} reference images", crate::payload::MAX_REFERENCE_IMAGES),
            }
            .into());
        }
        let shape = job.requirements.shape();
        let kind = job.kind();
        let priority = job.priority;
        // The key's SHA-256, not the key: a platform's idempotency key (an order id, perhaps
        // more) never appears in a Redis key name.
        let idem = job
            .idempotency_key
            .as_ref()
            .map(|k| format!("{}:{}", job.tenant, crate::keys::digest_hex(k.as_bytes())))
            .unwrap_or_default();
        let user_key = crate::user_key(&job.tenant, &job.user);
        let spec = JobSpec {
            id,
            pool: pool.as_str().to_owned(),
            tenant: job.tenant,
            user: job.user,
            priority,
            requirements: job.requirements,
            allowed_regions: job.allowed_regions,
            idempotency_key: job.idempotency_key,
            max_attempts,
            timeout_secs,
            scan_outputs,
            body: job.body,
        };
        let protocol = |e: serde_json::Error| QueueError::Protocol(e.to_string());
        let json = match &self.keys {
            Some(keys) => {
                let mut value = serde_json::to_value(&spec).map_err(protocol)?;
                keys.seal(&mut value, &id.to_string())?;
                value.to_string()
            }
            None => serde_json::to_string(&spec).map_err(protocol)?,
        };
        if json.len() > self.cfg.max_payload_bytes {
            return Err(ValidationError::PayloadTooLarge {
                size: json.len(),
                limit: self.cfg.max_payload_bytes,
            }
            .into());
        }
        Ok(Prepared {
            id,
            kind,
            priority,
            delay_ms,
            idem,
            json,
            max_attempts,
            shape,
            user_key,
        })
    }

    /// Adds a pool to the set [`QueueClient::pools`] lists (once per client; cached).
    pub(crate) async fn register_pool(&self, pool: &Pool) -> Result<(), QueueError> {
        if self
            .known_pools
            .lock()
            .map(|s| s.contains(pool.as_str()))
            .unwrap_or(false)
        {
            return Ok(());
        }
        let mut c = self.conn.clone();
        redis::cmd("SADD")
            .arg(POOLS_KEY)
            .arg(pool.as_str())
            .query_async::<()>(&mut c)
            .await?;
        if let Ok(mut s) = self.known_pools.lock() {
            s.insert(pool.as_str().to_owned());
        }
        Ok(())
    }

    /// Enqueues one job.
    pub async fn enqueue(&self, pool: &Pool, job: NewJob) -> Result<Enqueued, QueueError> {
        let mut v = self.enqueue_batch(pool, vec![job]).await?;
        v.pop()
            .ok_or_else(|| QueueError::Protocol("empty enqueue reply".into()))
    }

    /// Enqueues up to `max_batch` jobs in one round trip, atomically: all are validated first,
    /// and either all are stored or none.
    pub async fn enqueue_batch(&self, pool: &Pool, jobs: Vec<NewJob>) -> Result<Vec<Enqueued>, QueueError> {
        self.enqueue_batch_with_ids(
            pool,
            jobs.into_iter()
                .map(|j| (JobId::new(), j, Accounting::default()))
                .collect(),
        )
        .await
    }

    /// [`QueueClient::enqueue_batch`] with ids chosen by the caller (fresh ULIDs), for callers that
    /// record something under the id before the job exists (the scheduler's credit reservation),
    /// and each job's [`Accounting`].
    /// A job whose idempotency key was seen before comes back with the first job's id instead.
    pub async fn enqueue_batch_with_ids(
        &self,
        pool: &Pool,
        jobs: Vec<(JobId, NewJob, Accounting)>,
    ) -> Result<Vec<Enqueued>, QueueError> {
        if jobs.len() > self.cfg.max_batch {
            return Err(ValidationError::BatchTooLarge {
                size: jobs.len(),
                max: self.cfg.max_batch,
            }
            .into());
        }
        if jobs.is_empty() {
            return Ok(Vec::new());
        }
        let mut inv = scripts::ENQUEUE.prepare_invoke();
        inv.key(pool.prefix())
            .arg(self.cfg.idempotency_ttl.as_secs())
            .arg(self.cfg.wake_cap)
            .arg(self.cfg.user_index_ttl().as_secs());
        for (id, job, acct) in jobs {
            let tenant = job.tenant.clone();
            let p = self.validate(pool, id, job, acct.scan_outputs)?;
            inv.arg(p.id.to_string())
                .arg(p.kind.as_str())
                .arg(p.priority.as_str())
                .arg(p.delay_ms)
                .arg(p.idem)
                .arg(p.json)
                .arg(p.max_attempts)
                .arg(p.shape)
                .arg(tenant)
                .arg(acct.weight.max(1))
                .arg(acct.credits_reserved.max(0))
                .arg(acct.price_rule)
                .arg(p.user_key);
        }
        self.register_pool(pool).await?;
        let mut c = self.conn.clone();
        let reply: Vec<Value> = inv.invoke_async(&mut c).await.during("enqueue", pool)?;
        reply
            .chunks(2)
            .map(|p| {
                Ok(Enqueued {
                    id: parse_id(&p[0])?,
                    duplicate: int(p.get(1))? == 1,
                })
            })
            .collect()
    }

    /// Claims up to `max` jobs for `worker` from `kinds` in `pool` that fit `capacity`: strict
    /// priority across the kinds; within a priority warm-model jobs first, then the tightest
    /// VRAM fit, CPU jobs last; FIFO within a shape. Each job is leased for `lease`; heartbeat to
    /// keep it. GPU jobs come back placed on a GPU (`ClaimedJob::gpu`).
    pub async fn claim(
        &self,
        pool: &Pool,
        worker: &str,
        kinds: &[JobKind],
        max: usize,
        lease: Duration,
        capacity: &ClaimCapacity,
    ) -> Result<ClaimBatch, QueueError> {
        let mut inv = scripts::CLAIM.prepare_invoke();
        inv.key(pool.prefix())
            .arg(worker)
            .arg(lease.as_millis() as u64)
            .arg(max)
            .arg(self.cfg.wake_cap)
            .arg(capacity.to_json());
        for k in kinds {
            inv.arg(k.as_str());
        }
        let mut c = self.conn.clone();
        let reply: Vec<Value> = inv.invoke_async(&mut c).await.during("claim", pool)?;
        let next_due = int(reply.first())?;
        let unfit = int(reply.get(1))? == 1;
        let mut batch = ClaimBatch {
            unfit,
            next_due_ms: (next_due >= 0).then_some(next_due as u64),
            ..Default::default()
        };
        let mut poisoned = Vec::new();
        for j in reply.get(2..).unwrap_or_default().chunks(7) {
            if j.len() < 7 {
                return Err(QueueError::Protocol("short claim reply".into()));
            }
            let lease = LeaseRef {
                id: parse_id(&j[0])?,
                kind: parse_kind(&j[1])?,
                token: int(Some(&j[2]))? as u64,
            };
            let attempt = int(Some(&j[3]))? as u32;
            let max_attempts = int(Some(&j[4]))? as u32;
            let gpu = u32::try_from(int(Some(&j[6]))?).ok();
            match decode_spec(lease.id, &bytes(&j[5])?, self.keys.as_deref()) {
                Ok(spec) => batch.jobs.push(ClaimedJob {
                    lease,
                    pool: pool.clone(),
                    attempt,
                    max_attempts,
                    spec,
                    gpu,
                }),
                Err(e) => poisoned.push(Failure {
                    lease,
                    attempt,
                    // A worker without the key may hand the job to one that has it.
                    class: if matches!(e, QueueError::Seal(SealError::NoKeys | SealError::UnknownKey(_))) {
                        ErrorClass::Retryable
                    } else {
                        ErrorClass::Permanent
                    },
                    message: format!("unreadable job record: {e}"),
                    retry_after: None,
                }),
            }
        }
        if !poisoned.is_empty() {
            batch.poisoned = poisoned.len();
            tracing::warn!(count = poisoned.len(), %pool, "dead-lettering unreadable job records");
            self.fail(pool, &poisoned).await?;
        }
        Ok(batch)
    }

    /// Extends leases; learns of cancellations and lost leases.
    pub async fn heartbeat(
        &self,
        pool: &Pool,
        leases: &[LeaseRef],
        lease: Duration,
    ) -> Result<Vec<LeaseState>, QueueError> {
        if leases.is_empty() {
            return Ok(Vec::new());
        }
        let mut inv = scripts::HEARTBEAT.prepare_invoke();
        inv.key(pool.prefix()).arg(lease.as_millis() as u64);
        for l in leases {
            inv.arg(l.id.to_string()).arg(l.kind.as_str()).arg(l.token);
        }
        let mut c = self.conn.clone();
        let reply: Vec<i64> = inv.invoke_async(&mut c).await.during("heartbeat", pool)?;
        Ok(reply
            .into_iter()
            .map(|c| match c {
                0 => LeaseState::Extended,
                1 => LeaseState::CancelRequested,
                _ => LeaseState::Lost,
            })
            .collect())
    }

    /// Records successes.
    pub async fn ack(&self, pool: &Pool, acks: &[(LeaseRef, Completion)]) -> Result<Vec<AckOutcome>, QueueError> {
        if acks.is_empty() {
            return Ok(Vec::new());
        }
        let mut inv = scripts::ACK.prepare_invoke();
        inv.key(pool.prefix()).arg(self.cfg.finished_ttl.as_secs());
        let json = |v: Option<String>| v.unwrap_or_default();
        for (l, done) in acks {
            let r = done.output.as_ref().map(serde_json::to_string).transpose();
            let u = done.usage.as_ref().map(serde_json::to_string).transpose();
            let (r, u) = (
                r.map_err(|e| QueueError::Protocol(e.to_string()))?,
                u.map_err(|e| QueueError::Protocol(e.to_string()))?,
            );
            inv.arg(l.id.to_string())
                .arg(l.kind.as_str())
                .arg(l.token)
                .arg(json(r))
                .arg(json(u));
        }
        let mut c = self.conn.clone();
        let reply: Vec<i64> = inv.invoke_async(&mut c).await.during("ack", pool)?;
        Ok(reply
            .into_iter()
            .map(|c| if c == 0 { AckOutcome::Acked } else { AckOutcome::Stale })
            .collect())
    }

    /// Records failures: retryable ones are retried after a backoff until attempts run out, then
    /// dead-lettered; permanent ones are dead-lettered at once.
    pub async fn fail(&self, pool: &Pool, failures: &[Failure]) -> Result<Vec<FailOutcome>, QueueError> {
        if failures.is_empty() {
            return Ok(Vec::new());
        }
        let mut inv = scripts::FAIL.prepare_invoke();
        inv.key(pool.prefix())
            .arg(self.cfg.finished_ttl.as_secs())
            .arg(self.cfg.dead_ttl.as_secs());
        for f in failures {
            let backoff = self.cfg.retry_delay(f.attempt);
            let asked = f.retry_after.unwrap_or_default().min(MAX_RETRY_AFTER);
            let delay = backoff.max(asked).as_millis() as u64;
            let msg: String = f.message.chars().take(1024).collect();
            inv.arg(f.lease.id.to_string())
                .arg(f.lease.kind.as_str())
                .arg(f.lease.token)
                .arg(f.class.as_str())
                .arg(msg)
                .arg(delay);
        }
        let mut c = self.conn.clone();
        let reply: Vec<String> = inv.invoke_async(&mut c).await.during("fail", pool)?;
        reply
            .into_iter()
            .map(|s| match s.as_str() {
                "retry" => Ok(FailOutcome::Retry),
                "dead" => Ok(FailOutcome::Dead),
                "cancelled" => Ok(FailOutcome::Cancelled),
                "blocked" => Ok(FailOutcome::Blocked),
                "stale" => Ok(FailOutcome::Stale),
                other => Err(QueueError::Protocol(format!("fail reply {other:?}"))),
            })
            .collect()
    }

    /// Gives leases back without counting the attempt (a draining worker's unfinished jobs).
    /// Returns how many were released (the others were no longer ours).
    pub async fn release(&self, pool: &Pool, leases: &[LeaseRef]) -> Result<usize, QueueError> {
        if leases.is_empty() {
            return Ok(0);
        }
        let mut inv = scripts::RELEASE.prepare_invoke();
        inv.key(pool.prefix()).arg(self.cfg.wake_cap);
        for l in leases {
            inv.arg(l.id.to_string()).arg(l.kind.as_str()).arg(l.token);
        }
        let mut c = self.conn.clone();
        let reply: Vec<i64> = inv.invoke_async(&mut c).await.during("release", pool)?;
        Ok(reply.into_iter().filter(|&c| c == 0).count())
    }

    /// Returns expired leases to their queue (at most `max_per_kind` per kind per call) and
    /// prunes old dead-letter entries.
    pub async fn reap(&self, pool: &Pool, kinds: &[JobKind], max_per_kind: usize) -> Result<ReapReport, QueueError> {
        let mut inv = scripts::REAP.prepare_invoke();
        inv.key(pool.prefix())
            .arg(max_per_kind)
            .arg(self.cfg.finished_ttl.as_secs())
            .arg(self.cfg.dead_ttl.as_secs())
            .arg(self.cfg.wake_cap);
        for k in kinds {
            inv.arg(k.as_str());
        }
        let mut c = self.conn.clone();
        let r: Vec<u64> = inv.invoke_async(&mut c).await.during("reap", pool)?;
        Ok(ReapReport {
            requeued: r.first().copied().unwrap_or(0),
            dead: r.get(1).copied().unwrap_or(0),
            cancelled: r.get(2).copied().unwrap_or(0),
        })
    }

    /// Blocks on `conn` (a connection of its own, see [`QueueClient::blocking_connection`])
    /// until a job is pushed to one of the queues or `timeout` passes. Returns whether it was
    /// woken by a push. Wake-ups are tokens, so a push that happens just before the wait is not
    /// missed.
    pub async fn wait_for_work(
        &self,
        conn: &mut RedisConn,
        pool: &Pool,
        kinds: &[JobKind],
        timeout: Duration,
    ) -> Result<bool, QueueError> {
        let mut cmd = redis::cmd("BLPOP");
        for k in kinds {
            cmd.arg(pool.queue_key(*k, "wake"));
        }
        // BLPOP takes seconds as a decimal; 0 would block forever.
        cmd.arg(format!("{:.3}", timeout.as_secs_f64().max(0.001)));
        let v: Value = cmd.query_async(conn).await?;
        Ok(!matches!(v, Value::Nil))
    }

    /// Every pool that has had a job or a worker.
    pub async fn pools(&self) -> Result<Vec<Pool>, QueueError> {
        let mut c = self.conn.clone();
        let names: Vec<String> = redis::cmd("SMEMBERS").arg(POOLS_KEY).query_async(&mut c).await?;
        let mut pools: Vec<Pool> = names.iter().filter_map(|n| Pool::new(n).ok()).collect();
        pools.sort();
        Ok(pools)
    }

    /// Finds the pool holding a job.
    pub async fn locate(&self, id: JobId) -> Result<Pool, QueueError> {
        for pool in self.pools().await? {
            let mut c = self.conn.clone();
            let exists: bool = redis::cmd("EXISTS").arg(pool.job_key(id)).query_async(&mut c).await?;
            if exists {
                return Ok(pool);
            }
        }
        Err(QueueError::NotFound(id))
    }

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
        parse_record(id, &h, self.keys.as_deref())
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
        let r: String = inv.invoke_async(&mut c).await.during("cancel", &pool)?;
        match r.as_str() {
            "cancelled" => Ok(CancelOutcome::Cancelled),
            "requested" => Ok(CancelOutcome::Requested),
            "not_found" => Err(QueueError::NotFound(id)),
            other => match other.strip_prefix("finished:") {
                Some(status) => Err(QueueError::AlreadyFinished {
                    id,
                    status: status.to_owned(),
                }),
                None => Err(QueueError::Protocol(format!("cancel reply {other:?}"))),
            },
        }
    }

    /// Erases `user` of `tenant` from `pool`, through the user's index ([`crate::user_key`]):
    /// waiting jobs are cancelled and deleted, finished and dead-lettered ones deleted, and
    /// running ones asked to stop, to be deleted by a later pass once they have ended
    /// (`running` counts them). Idempotent and Cluster-safe; each script call handles a
    /// bounded page of the user's index, so a user with a million jobs never blocks Redis.
    pub async fn erase_user(&self, pool: &Pool, tenant: &str, user: &str) -> Result<ErasureCounts, QueueError> {
        const PAGE: usize = 500;
        check_text("tenant", tenant, 128)?;
        check_text("user", user, 128)?;
        let ukey = crate::user_key(tenant, user);
        let mut total = ErasureCounts::default();
        let mut cursor = "0".to_owned();
        let mut c = self.conn.clone();
        loop {
            let mut inv = scripts::ERASE.prepare_invoke();
            inv.key(pool.prefix())
                .arg(&ukey)
                .arg(tenant)
                .arg(user)
                .arg(&cursor)
                .arg(PAGE);
            let r: (u64, u64, u64, u64, String) = inv.invoke_async(&mut c).await.during("erase", pool)?;
            total += ErasureCounts {
                cancelled: r.0,
                running: r.1,
                deleted: r.2,
                dead_letters: r.3,
            };
            if r.4 == "0" {
                return Ok(total);
            }
            cursor = r.4;
        }
    }

    /// Depth, in-flight count and oldest-job age of each of `kinds` in `pool`.
    pub async fn stats(&self, pool: &Pool, kinds: &[JobKind]) -> Result<Vec<QueueStats>, QueueError> {
        let mut inv = scripts::STATS.prepare_invoke();
        inv.key(pool.prefix());
        for k in kinds {
            inv.arg(k.as_str());
        }
        let mut c = self.conn.clone();
        let r: Vec<i64> = inv.invoke_async(&mut c).await.during("stats", pool)?;
        if r.len() != kinds.len() * 9 {
            return Err(QueueError::Protocol(format!(
                "stats reply of {} values for {} kinds",
                r.len(),
                kinds.len()
            )));
        }
        Ok(kinds
            .iter()
            .zip(r.chunks_exact(9))
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
            .key(queue.pool.prefix())
            .arg(queue.kind.as_str())
            .arg(if paused { "pause" } else { "resume" })
            .arg(self.cfg.wake_cap)
            .invoke_async(&mut c)
            .await
            .during("pause", &queue.pool)?;
        Ok(changed == 1)
    }

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
        let Some(class) = filter.class else {
            return Ok(self.dead_page(queue, filter, offset, limit).await?.0);
        };
        const PAGE: usize = 1000;
        let (mut skip, mut from, mut out) = (offset, 0, Vec::new());
        while out.len() < limit {
            let (page, read) = self.dead_page(queue, filter, from, PAGE).await?;
            for d in page.into_iter().filter(|d| d.class == class.as_str()) {
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
                .arg(crate::fields::job::ATTEMPTS);
        }
        let rows: Vec<(Option<String>, Option<String>, Option<u32>)> = pipe.query_async(&mut c).await?;
        let page = page
            .into_iter()
            .zip(rows)
            .map(|((id, score), (class, message, attempts))| DeadLetter {
                id,
                kind: queue.kind,
                dead_at_ms: score as u64,
                class: class.unwrap_or_default(),
                message: message.unwrap_or_default(),
                attempts: attempts.unwrap_or(0),
            })
            .collect();
        Ok((page, read))
    }

    /// How many dead-lettered jobs of a queue `filter` selects: one `ZCOUNT` without a class
    /// filter, else a walk over the time range's pages.
    pub async fn count_dead(&self, queue: &QueueName, filter: &DeadFilter) -> Result<u64, QueueError> {
        const PAGE: usize = 1000;
        if filter.class.is_none() {
            let (min, max) = filter.score_range();
            let mut c = self.conn.clone();
            let n: u64 = redis::cmd("ZCOUNT")
                .arg(queue.pool.queue_key(queue.kind, "dead"))
                .arg(min)
                .arg(max)
                .query_async(&mut c)
                .await?;
            return Ok(n);
        }
        let (mut total, mut offset) = (0u64, 0);
        loop {
            let (page, read) = self.dead_page(queue, filter, offset, PAGE).await?;
            total += page
                .iter()
                .filter(|d| filter.class.is_none_or(|c| c.as_str() == d.class))
                .count() as u64;
            if read < PAGE {
                return Ok(total);
            }
            offset += PAGE;
        }
    }

    /// Replays dead-lettered jobs of one queue, attempts reset. A job is replayed at most once
    /// per dead-lettering, however many replays race.
    pub async fn replay(
        &self,
        queue: &QueueName,
        ids: &[JobId],
        class: Option<ErrorClass>,
    ) -> Result<Vec<DeadLetterOutcome>, QueueError> {
        self.act_on_dead(queue, ids, class, DeadAction::Replay).await
    }

    /// Replays or purges dead-lettered jobs of one queue (only those still dead-lettered, and
    /// of `class` when given), atomically per call.
    pub async fn act_on_dead(
        &self,
        queue: &QueueName,
        ids: &[JobId],
        class: Option<ErrorClass>,
        action: DeadAction,
    ) -> Result<Vec<DeadLetterOutcome>, QueueError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let class = class.map(ErrorClass::as_str).unwrap_or("");
        let mut inv = scripts::DEAD_LETTERS.prepare_invoke();
        inv.key(queue.pool.prefix())
            .arg(action.as_str())
            .arg(queue.kind.as_str())
            .arg(self.cfg.wake_cap)
            .arg(class)
            .arg(self.cfg.user_index_ttl().as_secs());
        for id in ids {
            inv.arg(id.to_string());
        }
        let mut c = self.conn.clone();
        let r: Vec<String> = inv.invoke_async(&mut c).await.during("dead_letters", &queue.pool)?;
        Ok(r.iter()
            .map(|s| match s.as_str() {
                "done" => DeadLetterOutcome::Done,
                "class_mismatch" => DeadLetterOutcome::ClassMismatch,
                _ => DeadLetterOutcome::NotDead,
            })
            .collect())
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
            ..filter.clone()
        };
        let mut replayed = 0;
        // Replayed jobs leave the dead set, so re-reading from offset 0 pages through it; jobs
        // of another class stay and are skipped past.
        let mut skip = 0;
        loop {
            let (page, read) = self.dead_page(queue, &by_time, skip, PAGE).await?;
            if read == 0 {
                break;
            }
            let ids: Vec<JobId> = page.iter().map(|d| d.id).collect();
            let outcomes = self.act_on_dead(queue, &ids, filter.class, action).await?;
            let n = outcomes.iter().filter(|o| **o == DeadLetterOutcome::Done).count();
            skip += outcomes
                .iter()
                .filter(|o| **o == DeadLetterOutcome::ClassMismatch)
                .count();
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
        match self.act_on_dead(&queue, &[id], None, action).await?.first() {
            Some(DeadLetterOutcome::Done) => Ok(()),
            _ => Err(QueueError::NotDeadLettered(id)),
        }
    }
}

fn check_text(field: &'static str, v: &str, max: usize) -> Result<(), ValidationError> {
    if v.is_empty() || v.len() > max || v.chars().any(char::is_control) {
        return Err(ValidationError::InvalidField {
            field,
            reason: format!("must be 1..={max} bytes without control characters"),
        });
    }
    Ok(())
}

fn bytes(v: &Value) -> Result<Vec<u8>, QueueError> {
    match v {
        Value::BulkString(b) => Ok(b.clone()),
        Value::SimpleString(s) => Ok(s.as_bytes().to_vec()),
        other => Err(QueueError::Protocol(format!("expected a string, got {other:?}"))),
    }
}

fn int(v: Option<&Value>) -> Result<i64, QueueError> {
    match v {
        Some(Value::Int(i)) => Ok(*i),
        Some(Value::BulkString(b)) => std::str::from_utf8(b)
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| QueueError::Protocol("expected an integer".into())),
        other => Err(QueueError::Protocol(format!("expected an integer, got {other:?}"))),
    }
}

fn parse_id(v: &Value) -> Result<JobId, QueueError> {
    let b = bytes(v)?;
    std::str::from_utf8(&b)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| QueueError::Protocol("bad job id in reply".into()))
}

fn parse_kind(v: &Value) -> Result<JobKind, QueueError> {
    let b = bytes(v)?;
    std::str::from_utf8(&b)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| QueueError::Protocol("bad kind in reply".into()))
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

/// A stored spec, its sealed fields opened with `keys`.
fn decode_spec(id: JobId, raw: &[u8], keys: Option<&Keyring>) -> Result<JobSpec, QueueError> {
    let unreadable = |e: serde_json::Error| QueueError::Protocol(format!("job {id}: unreadable spec: {e}"));
    // Most specs are not sealed (or have nothing to seal): straight to the struct.
    if !raw.windows(9).any(|w| w == b"\"sealed\":") {
        return serde_json::from_slice(raw).map_err(unreadable);
    }
    let mut v: serde_json::Value = serde_json::from_slice(raw).map_err(unreadable)?;
    crate::seal::open(&mut v, &id.to_string(), keys)?;
    serde_json::from_value(v).map_err(unreadable)
}

/// A status read back from Redis: one Gantry does not know is a protocol error (a foreign or
/// newer writer), not bad input.
fn stored_status(s: &str) -> Result<JobStatus, QueueError> {
    s.parse()
        .map_err(|e: crate::ValidationError| QueueError::Protocol(e.to_string()))
}

fn parse_record(id: JobId, h: &HashMap<String, Vec<u8>>, keys: Option<&Keyring>) -> Result<JobRecord, QueueError> {
    use crate::fields::job as f;
    let s = |k: &str| h.get(k).and_then(|v| std::str::from_utf8(v).ok());
    let n = |k: &str| s(k).and_then(|v| v.parse::<u64>().ok());
    let spec = decode_spec(id, h.get(f::SPEC).map(Vec::as_slice).unwrap_or_default(), keys)?;
    let status = stored_status(s(f::STATUS).unwrap_or("queued"))?;
    let error = s(f::ERROR_CLASS).map(|class| JobError {
        class: class.to_owned(),
        message: s(f::ERROR_MESSAGE).unwrap_or_default().to_owned(),
        at_ms: n(f::ERROR_AT).unwrap_or(0),
    });
    let result = s(f::RESULT).and_then(|r| serde_json::from_str::<ResultRef>(r).ok());
    let usage = s(f::USAGE).and_then(|r| serde_json::from_str::<Usage>(r).ok());
    let history = s(f::HISTORY)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<HistoryEvent>(l).ok())
        .collect();
    Ok(JobRecord {
        spec,
        status,
        attempts: n(f::ATTEMPTS).unwrap_or(0) as u32,
        enqueued_at_ms: n(f::ENQUEUED_AT).unwrap_or(0),
        started_at_ms: n(f::STARTED_AT),
        finished_at_ms: n(f::FINISHED_AT),
        due_at_ms: n(f::DUE_AT),
        worker: s(f::WORKER).map(str::to_owned),
        cancel_requested: s(f::CANCEL).is_some(),
        error,
        result,
        usage,
        credits_reserved: s(f::CREDITS_RESERVED).and_then(|v| v.parse().ok()),
        history,
    })
}
