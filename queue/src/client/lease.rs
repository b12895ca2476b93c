//! Leases: claim, heartbeat, ack, fail, release and reap, and the blocking wait for work.

use std::time::Duration;

use redis::{FromRedisValue, ParsingError, RedisWrite, ToRedisArgs, Value};

use super::QueueClient;
use super::record::{RecordFields, decode_spec};
use super::wire::{bytes, int, int_codes, job_id, kind, one_per_record, records, str_codes, text};
use crate::conn::RedisConn;
use crate::error::{During, QueueError};
use crate::job::{Completion, ErrorClass, JobId, JobKind, JobSpec, Priority};
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
    /// The GPU (index on the worker) the claim placed it on; `None` for CPU jobs. For a job
    /// on several GPUs, the first of [`ClaimedJob::gpus`].
    pub gpu: Option<u32>,
    /// Every GPU the claim placed it on (one, or `requirements.gpu.count`; none for CPU jobs).
    pub gpus: Vec<u32>,
    /// How long it waited to be claimed, by Redis's clock: since it was enqueued, or since it
    /// was last made ready again (a delayed job or retry falling due, a requeue, a replay).
    pub waited: Duration,
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
    /// Held for a reviewer (content close to an abuse hash).
    Withheld,
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
        let reply: ClaimReply = inv.invoke_async(&mut c).await.during("claim", pool)?;
        let mut batch = ClaimBatch {
            unfit: reply.unfit,
            next_due_ms: reply.next_due_ms,
            ..Default::default()
        };
        let mut poisoned = Vec::new();
        for ClaimRecord {
            lease,
            attempt,
            max_attempts,
            spec,
            gpus,
            tenant,
            priority,
            waited,
        } in reply.jobs
        {
            let fields = RecordFields {
                pool: pool.as_str(),
                tenant: &tenant,
                priority,
                kind: lease.kind,
                max_attempts,
            };
            match decode_spec(lease.id, &spec, fields, self.keys.as_deref()) {
                Ok(spec) => batch.jobs.push(ClaimedJob {
                    lease,
                    pool: pool.clone(),
                    attempt,
                    max_attempts,
                    spec,
                    gpu: gpus.first().copied(),
                    gpus,
                    waited,
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
        // Pipeline steps get their parents' outputs in place of their references.
        let (ready, unresolved) = self.resolve_step_inputs(pool, std::mem::take(&mut batch.jobs)).await?;
        batch.jobs = ready;
        if !unresolved.is_empty() {
            tracing::warn!(count = unresolved.len(), %pool, "failing pipeline steps whose inputs cannot be resolved");
            self.fail(pool, &unresolved).await?;
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
            inv.arg(LeaseArg(l));
        }
        let mut c = self.conn.clone();
        let reply: HeartbeatReply = inv.invoke_async(&mut c).await.during("heartbeat", pool)?;
        one_per_record(reply.0, leases.len(), "heartbeat", pool)
    }

    /// Records successes.
    pub async fn ack(&self, pool: &Pool, acks: &[(LeaseRef, Completion)]) -> Result<Vec<AckOutcome>, QueueError> {
        if acks.is_empty() {
            return Ok(Vec::new());
        }
        let mut inv = scripts::ACK.prepare_invoke();
        inv.key(pool.prefix()).arg(self.cfg.finished_ttl.as_secs());
        for (lease, done) in acks {
            inv.arg(AckArg::new(lease, done)?);
        }
        let mut c = self.conn.clone();
        let reply: AckReply = inv.invoke_async(&mut c).await.during("ack", pool)?;
        one_per_record(reply.0, acks.len(), "ack", pool)
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
            inv.arg(FailArg {
                failure: f,
                delay_ms: backoff.max(asked).as_millis() as u64,
            });
        }
        let mut c = self.conn.clone();
        let reply: FailReply = inv.invoke_async(&mut c).await.during("fail", pool)?;
        one_per_record(reply.0, failures.len(), "fail", pool)
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
            inv.arg(LeaseArg(l));
        }
        let mut c = self.conn.clone();
        let reply: ReleaseReply = inv.invoke_async(&mut c).await.during("release", pool)?;
        let released = one_per_record(reply.0, leases.len(), "release", pool)?;
        Ok(released.into_iter().filter(|&r| r).count())
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
        inv.invoke_async(&mut c).await.during("reap", pool)
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

/// `heartbeat.lua`'s and `release.lua`'s record: id, kind, token.
pub(super) struct LeaseArg<'a>(pub(super) &'a LeaseRef);

impl ToRedisArgs for LeaseArg<'_> {
    fn write_redis_args<W: ?Sized + RedisWrite>(&self, out: &mut W) {
        let l = self.0;
        out.write_arg(l.id.to_string().as_bytes());
        out.write_arg(l.kind.as_str().as_bytes());
        out.write_arg(l.token.to_string().as_bytes());
    }
}

/// `ack.lua`'s record: the lease, the result and the usage as JSON ('' = none).
struct AckArg<'a> {
    lease: &'a LeaseRef,
    result: String,
    usage: String,
}

impl<'a> AckArg<'a> {
    fn new(lease: &'a LeaseRef, done: &Completion) -> Result<Self, QueueError> {
        let json = |v: Result<Option<String>, serde_json::Error>| {
            v.map(Option::unwrap_or_default)
                .map_err(|e| QueueError::Protocol(format!("ack of job {}: {e}", lease.id)))
        };
        Ok(Self {
            lease,
            result: json(done.output.as_ref().map(serde_json::to_string).transpose())?,
            usage: json(done.usage.as_ref().map(serde_json::to_string).transpose())?,
        })
    }
}

impl ToRedisArgs for AckArg<'_> {
    fn write_redis_args<W: ?Sized + RedisWrite>(&self, out: &mut W) {
        LeaseArg(self.lease).write_redis_args(out);
        out.write_arg(self.result.as_bytes());
        out.write_arg(self.usage.as_bytes());
    }
}

/// `fail.lua`'s record: the lease, the class, the message (at most 1,024 characters) and the
/// retry delay.
struct FailArg<'a> {
    failure: &'a Failure,
    delay_ms: u64,
}

impl ToRedisArgs for FailArg<'_> {
    fn write_redis_args<W: ?Sized + RedisWrite>(&self, out: &mut W) {
        let f = self.failure;
        LeaseArg(&f.lease).write_redis_args(out);
        out.write_arg(f.class.as_str().as_bytes());
        let msg: String = f.message.chars().take(1024).collect();
        out.write_arg(msg.as_bytes());
        out.write_arg(self.delay_ms.to_string().as_bytes());
    }
}

/// `claim.lua`'s reply: next due time, unfit flag, then groups (kind, priority, n) of n jobs.
struct ClaimReply {
    next_due_ms: Option<u64>,
    unfit: bool,
    jobs: Vec<ClaimRecord>,
}

/// One job of a claim, its spec still sealed.
struct ClaimRecord {
    lease: LeaseRef,
    attempt: u32,
    max_attempts: u32,
    spec: Vec<u8>,
    /// The GPUs it was placed on (none for a CPU job).
    gpus: Vec<u32>,
    /// The record's tenant and priority, which a compact spec leaves out.
    tenant: String,
    priority: Priority,
    /// Milliseconds it waited, as the claim measured them.
    waited: Duration,
}

/// Values in a claim reply before its groups.
const CLAIM_HEAD: usize = 2;
/// Values heading a group: kind, priority, how many jobs follow.
const CLAIM_GROUP_HEAD: usize = 3;
/// Values per job in a group.
const CLAIM_STRIDE: usize = 8;

/// The GPUs a claim placed a job on: a number (one GPU; -1 for none) or `a,b` (several).
fn placed_gpus(v: &Value) -> Result<Vec<u32>, ParsingError> {
    let bad = |g: &dyn std::fmt::Display| ParsingError::from(format!("claim gpu {g}"));
    match v {
        Value::Int(-1) => Ok(Vec::new()),
        Value::Int(g) => Ok(vec![u32::try_from(*g).map_err(|_| bad(g))?]),
        other => {
            let t = text(other, "claim gpu")?;
            t.split(',')
                .map(|g| g.trim().parse::<u32>().map_err(|_| bad(&t)))
                .collect()
        }
    }
}

impl FromRedisValue for ClaimReply {
    fn from_redis_value(v: Value) -> Result<Self, ParsingError> {
        let all = Vec::<Value>::from_redis_value(v)?;
        if all.len() < CLAIM_HEAD {
            return Err(format!("claim: a reply of {} values has no head", all.len()).into());
        }
        let next_due = int(&all[0], "claim next_due_ms")?;
        let unfit = match int(&all[1], "claim unfit")? {
            0 => false,
            1 => true,
            other => return Err(format!("claim: unfit flag {other}").into()),
        };
        let count = |v: &Value, what: &str| {
            u32::try_from(int(v, what)?).map_err(|_| ParsingError::from(format!("{what} out of range")))
        };
        let mut jobs = Vec::new();
        let mut it = all.into_iter().skip(CLAIM_HEAD);
        while let Some(kind_value) = it.next() {
            let head: Vec<Value> = std::iter::once(kind_value)
                .chain(it.by_ref().take(CLAIM_GROUP_HEAD - 1))
                .collect();
            if head.len() < CLAIM_GROUP_HEAD {
                return Err("claim: a group without its head".into());
            }
            let group_kind = kind(&head[0], "claim kind")?;
            let priority: Priority = text(&head[1], "claim priority")?
                .parse()
                .map_err(|e: crate::ValidationError| ParsingError::from(format!("claim priority: {e}")))?;
            let n = count(&head[2], "claim group size")? as usize;
            let values: Vec<Value> = it.by_ref().take(n * CLAIM_STRIDE).collect();
            if values.len() != n * CLAIM_STRIDE {
                return Err(format!("claim: a group of {n} jobs has {} values", values.len()).into());
            }
            for mut j in records(Value::Array(values), "claim", CLAIM_STRIDE)? {
                let spec = bytes(std::mem::replace(&mut j[4], Value::Nil), "claim spec")?;
                jobs.push(ClaimRecord {
                    lease: LeaseRef {
                        id: job_id(&j[0], "claim id")?,
                        kind: group_kind,
                        token: u64::try_from(int(&j[1], "claim token")?)
                            .map_err(|_| ParsingError::from("claim token out of range"))?,
                    },
                    attempt: count(&j[2], "claim attempts")?,
                    max_attempts: count(&j[3], "claim max_attempts")?,
                    spec,
                    gpus: placed_gpus(&j[5])?,
                    tenant: text(&j[6], "claim tenant")?,
                    priority,
                    waited: Duration::from_millis(u64::try_from(int(&j[7], "claim waited")?).unwrap_or(0)),
                });
            }
        }
        Ok(Self {
            next_due_ms: u64::try_from(next_due).ok(),
            unfit,
            jobs,
        })
    }
}

/// `heartbeat.lua`'s reply: one code per lease.
struct HeartbeatReply(Vec<LeaseState>);

impl FromRedisValue for HeartbeatReply {
    fn from_redis_value(v: Value) -> Result<Self, ParsingError> {
        int_codes(v, "heartbeat", |c| match c {
            0 => Some(LeaseState::Extended),
            1 => Some(LeaseState::CancelRequested),
            2 => Some(LeaseState::Lost),
            _ => None,
        })
        .map(Self)
    }
}

/// `ack.lua`'s reply: one code per ack.
struct AckReply(Vec<AckOutcome>);

impl FromRedisValue for AckReply {
    fn from_redis_value(v: Value) -> Result<Self, ParsingError> {
        int_codes(v, "ack", |c| match c {
            0 => Some(AckOutcome::Acked),
            1 => Some(AckOutcome::Stale),
            _ => None,
        })
        .map(Self)
    }
}

/// `fail.lua`'s reply: one code per failure.
struct FailReply(Vec<FailOutcome>);

impl FromRedisValue for FailReply {
    fn from_redis_value(v: Value) -> Result<Self, ParsingError> {
        str_codes(v, "fail", |c| match c {
            "retry" => Some(FailOutcome::Retry),
            "dead" => Some(FailOutcome::Dead),
            "cancelled" => Some(FailOutcome::Cancelled),
            "blocked" => Some(FailOutcome::Blocked),
            "withheld" => Some(FailOutcome::Withheld),
            "stale" => Some(FailOutcome::Stale),
            _ => None,
        })
        .map(Self)
    }
}

/// `release.lua`'s reply: per lease, whether it was released.
struct ReleaseReply(Vec<bool>);

impl FromRedisValue for ReleaseReply {
    fn from_redis_value(v: Value) -> Result<Self, ParsingError> {
        int_codes(v, "release", |c| match c {
            0 => Some(true),
            1 => Some(false),
            _ => None,
        })
        .map(Self)
    }
}

/// `reap.lua`'s reply: exactly requeued, dead-lettered, cancelled.
impl FromRedisValue for ReapReport {
    fn from_redis_value(v: Value) -> Result<Self, ParsingError> {
        match <[u64; 3]>::from_redis_value(v) {
            Ok([requeued, dead, cancelled]) => Ok(Self {
                requeued,
                dead,
                cancelled,
            }),
            Err(e) => Err(format!("reap: expected 3 counts: {e}").into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scripts;

    fn lease() -> LeaseRef {
        LeaseRef {
            id: JobId::new(),
            kind: JobKind::Upscale,
            token: 42,
        }
    }

    #[test]
    fn each_record_is_as_long_as_its_script_reads() {
        let l = lease();
        assert_eq!(LeaseArg(&l).to_redis_args().len(), scripts::HEARTBEAT.stride());
        assert_eq!(LeaseArg(&l).to_redis_args().len(), scripts::RELEASE.stride());
        let ack = AckArg::new(&l, &Completion::default()).expect("serializable");
        assert_eq!(ack.to_redis_args().len(), scripts::ACK.stride());
        let f = Failure {
            lease: l.clone(),
            attempt: 1,
            class: ErrorClass::Retryable,
            message: "x".repeat(5000),
            retry_after: None,
        };
        let args = FailArg {
            failure: &f,
            delay_ms: 1000,
        }
        .to_redis_args();
        assert_eq!(args.len(), scripts::FAIL.stride());
        assert_eq!(args[4].len(), 1024, "the message is cut to 1,024 characters");
    }

    #[test]
    fn the_claim_reply_is_read_whole_or_refused() {
        let id = JobId::new();
        let s = |t: &str| Value::BulkString(t.as_bytes().to_vec());
        let group = |kind: &str, prio: &str, gpus: &[i64]| {
            let mut v = vec![s(kind), s(prio), Value::Int(gpus.len() as i64)];
            for &gpu in gpus {
                v.extend([
                    s(&id.to_string()),
                    Value::Int(7),
                    Value::Int(1),
                    Value::Int(3),
                    s("{}"),
                    Value::Int(gpu),
                    s("studio-a"),
                    Value::Int(1500),
                ]);
            }
            v
        };
        let mut v = vec![Value::Int(-1), Value::Int(0)];
        v.extend(group("upscale", "high", &[-1, 1]));
        v.extend(group("noop", "bulk", &[-1]));
        let r = ClaimReply::from_redis_value(Value::Array(v.clone())).expect("well formed");
        assert_eq!((r.next_due_ms, r.unfit, r.jobs.len()), (None, false, 3));
        assert_eq!((&r.jobs[0].gpus, &r.jobs[1].gpus), (&vec![], &vec![1]));
        assert_eq!(placed_gpus(&s("0,2")).expect("several"), vec![0, 2]);
        assert!(placed_gpus(&s("0,x")).is_err() && placed_gpus(&Value::Int(-2)).is_err());
        assert_eq!(r.jobs[1].lease.token, 7);
        assert_eq!(
            (r.jobs[0].tenant.as_str(), r.jobs[0].priority, r.jobs[0].lease.kind),
            ("studio-a", Priority::High, JobKind::Upscale)
        );
        assert_eq!(
            (r.jobs[2].priority, r.jobs[2].lease.kind),
            (Priority::Bulk, JobKind::Noop)
        );
        // One value short of a whole group.
        v.pop();
        assert!(ClaimReply::from_redis_value(Value::Array(v)).is_err());
        // A group that promises more jobs than it has.
        let mut v = vec![Value::Int(-1), Value::Int(0)];
        let mut g = group("noop", "normal", &[-1]);
        g[2] = Value::Int(2);
        v.extend(g);
        assert!(ClaimReply::from_redis_value(Value::Array(v)).is_err());
        // A head cut short.
        let v = vec![Value::Int(-1), Value::Int(0), s("noop"), s("normal")];
        assert!(ClaimReply::from_redis_value(Value::Array(v)).is_err());
        // A kind or a priority Gantry does not know.
        for (kind, prio) in [("mine_bitcoin", "normal"), ("noop", "urgent")] {
            let mut v = vec![Value::Int(5), Value::Int(1)];
            v.extend(group(kind, prio, &[0]));
            assert!(ClaimReply::from_redis_value(Value::Array(v)).is_err(), "{kind} {prio}");
        }
        // No jobs at all.
        let r = ClaimReply::from_redis_value(Value::Array(vec![Value::Int(5), Value::Int(1)])).expect("empty");
        assert_eq!((r.next_due_ms, r.unfit, r.jobs.len()), (Some(5), true, 0));
    }

    #[test]
    fn codes_outside_the_header_are_errors() {
        let codes = |c: &[i64]| Value::Array(c.iter().map(|&i| Value::Int(i)).collect());
        assert_eq!(
            HeartbeatReply::from_redis_value(codes(&[0, 1, 2])).expect("known").0,
            vec![LeaseState::Extended, LeaseState::CancelRequested, LeaseState::Lost]
        );
        assert!(
            HeartbeatReply::from_redis_value(codes(&[3])).is_err(),
            "3 is not 'lost'"
        );
        assert!(AckReply::from_redis_value(codes(&[2])).is_err());
        assert!(ReleaseReply::from_redis_value(codes(&[-1])).is_err());
        assert_eq!(
            ReapReport::from_redis_value(codes(&[1, 2, 3])).expect("three"),
            ReapReport {
                requeued: 1,
                dead: 2,
                cancelled: 3
            }
        );
        assert!(
            ReapReport::from_redis_value(codes(&[1, 2])).is_err(),
            "a short reap reply is not zeros"
        );
    }
}
