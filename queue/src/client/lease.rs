//! Leases: claim, heartbeat, ack, fail, release and reap, and the blocking wait for work.

use std::time::Duration;

use redis::Value;

use super::{QueueClient, bytes, decode_spec, int, parse_id, parse_kind};
use crate::conn::RedisConn;
use crate::error::{During, QueueError};
use crate::job::{Completion, ErrorClass, JobId, JobKind, JobSpec};
use crate::keys::Pool;
use crate::scripts;
use crate::seal::SealError;

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

impl QueueClient {
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
}
