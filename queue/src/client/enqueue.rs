//! Enqueue: validation, sealing, idempotency and the `enqueue` script, one round trip per batch.

use redis::{FromRedisValue, ParsingError, RedisWrite, ToRedisArgs, Value};

use super::QueueClient;
use super::wire::{int, job_id, records};
use crate::error::{During, QueueError, ValidationError};
use crate::job::{JobId, JobKind, JobSpec, NewJob, Priority};
use crate::keys::{POOLS_KEY, Pool};
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
    /// The W3C `traceparent` of the span that admitted it, stored with the job so the worker's
    /// spans join that trace. Anything that is not a valid traceparent is left out.
    pub traceparent: Option<String>,
    /// The tenant subscribes to events: the job's final outcome goes on its pool's events
    /// stream (`gantry:{pool}:events`), for webhooks and the SSE stream. Off by default, so a
    /// job nobody listens for costs the outcome script nothing.
    pub events: bool,
    /// The job is a pipeline step: with parents, it waits until they have succeeded; with
    /// children, it tells them of its outcome (`common.lua` says how).
    pub step: Option<StepLink>,
}

/// A pipeline step's place in its pipeline, as its job's record keeps it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StepLink {
    /// The pipeline's id.
    pub pipeline: String,
    /// The step's name (1..=64 of `a-z`, `0-9`, `-`, `_`).
    pub step: String,
    /// Parents to wait for (0: it runs at once).
    pub need: u32,
    /// Its children: each one's pool and job id.
    pub kids: Vec<(Pool, JobId)>,
    /// Its failure does not fail the pipeline (its own children are still skipped).
    pub optional: bool,
}

impl StepLink {
    /// The link as `enqueue.lua` reads it.
    fn json(&self) -> String {
        let kids: Vec<[String; 2]> = self
            .kids
            .iter()
            .map(|(p, id)| [p.as_str().to_owned(), id.to_string()])
            .collect();
        serde_json::json!({
            "pl": self.pipeline,
            "step": self.step,
            "need": self.need,
            "kids": kids,
            "opt": self.optional,
        })
        .to_string()
    }

    fn validate(&self) -> Result<(), ValidationError> {
        let name_ok = |s: &str| {
            !s.is_empty()
                && s.len() <= 64
                && s.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        };
        if !name_ok(&self.step) {
            return Err(ValidationError::InvalidField {
                field: "step",
                reason: "1-64 characters of a-z, 0-9, '-', '_'".into(),
            });
        }
        if self.pipeline.is_empty() || self.pipeline.len() > 64 || self.kids.len() > 64 || self.need > 64 {
            return Err(ValidationError::InvalidField {
                field: "pipeline",
                reason: "a pipeline id of at most 64 characters, at most 64 children and parents".into(),
            });
        }
        Ok(())
    }
}

impl Default for Accounting {
    fn default() -> Self {
        Self {
            weight: 1,
            credits_reserved: 0,
            price_rule: String::new(),
            scan_outputs: true,
            traceparent: None,
            events: false,
            step: None,
        }
    }
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
    /// The (valid) traceparent the spec carries: its events carry it too.
    traceparent: Option<String>,
}

/// Largest VRAM a job may ask for.
const MAX_VRAM_BYTES: u64 = 1 << 40;

impl QueueClient {
    /// Checks `job` as enqueueing it in `pool` would, storing nothing: for callers that must
    /// know every job of a group is acceptable before they store any (a pipeline's steps).
    pub fn check(&self, pool: &Pool, job: &NewJob) -> Result<(), QueueError> {
        self.validate(pool, JobId::new(), job.clone(), &Accounting::default())
            .map(|_| ())
    }

    fn validate(&self, pool: &Pool, id: JobId, job: NewJob, acct: &Accounting) -> Result<Prepared, QueueError> {
        let scan_outputs = acct.scan_outputs;
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
        if let Some(gpu) = &job.requirements.gpu
            && !(1..=8).contains(&gpu.count)
        {
            return Err(ValidationError::InvalidField {
                field: "requirements.gpu.count",
                reason: "must be 1..=8 GPUs of one worker".into(),
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
            traceparent: acct
                .traceparent
                .clone()
                .filter(|t| t.parse::<gantry_core::trace::TraceParent>().is_ok()),
            body: job.body,
        };
        let json = super::record::encode_spec(&spec, self.cfg.record_format, self.keys.as_deref())?;
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
            traceparent: spec.traceparent,
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
        let ids: Vec<JobId> = jobs.iter().map(|(id, _, _)| *id).collect();
        for (id, job, accounting) in jobs {
            let tenant = job.tenant.clone();
            if let Some(link) = &accounting.step {
                link.validate()?;
            }
            let prepared = self.validate(pool, id, job, &accounting)?;
            inv.arg(EnqueueArg {
                prepared,
                tenant,
                accounting,
            });
        }
        self.register_pool(pool).await?;
        let mut c = self.conn.clone();
        let reply: EnqueueReply = inv.invoke_async(&mut c).await.during("enqueue", pool)?;
        reply
            .outcomes(&ids)
            .map_err(|e| QueueError::Protocol(format!("enqueue on pool {pool}: {e}")))
    }
}

pub(super) fn check_text(field: &'static str, v: &str, max: usize) -> Result<(), ValidationError> {
    if v.is_empty() || v.chars().count() > max || v.chars().any(char::is_control) {
        return Err(ValidationError::InvalidField {
            field,
            reason: format!("must be 1..={max} characters, none of them a control character"),
        });
    }
    Ok(())
}

/// `enqueue.lua`'s record of 15: the prepared job, its tenant and its accounting.
struct EnqueueArg {
    prepared: Prepared,
    tenant: String,
    accounting: Accounting,
}

impl ToRedisArgs for EnqueueArg {
    fn write_redis_args<W: ?Sized + RedisWrite>(&self, out: &mut W) {
        let (p, a) = (&self.prepared, &self.accounting);
        out.write_arg(p.id.to_string().as_bytes());
        out.write_arg(p.kind.as_str().as_bytes());
        out.write_arg(p.priority.as_str().as_bytes());
        out.write_arg(p.delay_ms.to_string().as_bytes());
        out.write_arg(p.idem.as_bytes());
        out.write_arg(p.json.as_bytes());
        out.write_arg(p.max_attempts.to_string().as_bytes());
        out.write_arg(p.shape.as_bytes());
        out.write_arg(self.tenant.as_bytes());
        out.write_arg(a.weight.max(1).to_string().as_bytes());
        out.write_arg(a.credits_reserved.max(0).to_string().as_bytes());
        out.write_arg(a.price_rule.as_bytes());
        out.write_arg(p.user_key.as_bytes());
        // Events: '' none; '1', or the job's traceparent, which its events then carry.
        let events: &[u8] = match (a.events, p.traceparent.as_deref()) {
            (false, _) => b"",
            (true, Some(tp)) => tp.as_bytes(),
            (true, None) => b"1",
        };
        out.write_arg(events);
        out.write_arg(a.step.as_ref().map(StepLink::json).unwrap_or_default().as_bytes());
    }
}

/// `enqueue.lua`'s reply: each duplicate's place in the batch (from 1) and the first job's id.
struct EnqueueReply(Vec<(usize, JobId)>);

impl FromRedisValue for EnqueueReply {
    fn from_redis_value(v: Value) -> Result<Self, ParsingError> {
        records(v, "enqueue", 2)?
            .iter()
            .map(|r| {
                let place = usize::try_from(int(&r[0], "enqueue duplicate's place")?)
                    .map_err(|_| ParsingError::from("enqueue: a negative place"))?;
                Ok((place, job_id(&r[1], "enqueue first id")?))
            })
            .collect::<Result<_, ParsingError>>()
            .map(Self)
    }
}

impl EnqueueReply {
    /// One outcome per job sent (`ids`, in order): its own id, or the first job's for a
    /// duplicate. A place outside the batch, or named twice, is a protocol error.
    fn outcomes(self, ids: &[JobId]) -> Result<Vec<Enqueued>, String> {
        let mut out: Vec<Enqueued> = ids.iter().map(|&id| Enqueued { id, duplicate: false }).collect();
        for (place, first) in self.0 {
            let slot = place
                .checked_sub(1)
                .and_then(|i| out.get_mut(i))
                .ok_or_else(|| format!("duplicate at place {place} of a batch of {}", ids.len()))?;
            if slot.duplicate {
                return Err(format!("place {place} named twice"));
            }
            *slot = Enqueued {
                id: first,
                duplicate: true,
            };
        }
        Ok(out)
    }
}

#[cfg(test)]
mod wire_tests {
    use super::*;

    #[test]
    fn the_enqueue_record_is_as_long_as_the_script_reads() {
        let arg = EnqueueArg {
            prepared: Prepared {
                id: JobId::new(),
                kind: JobKind::Noop,
                priority: Priority::Normal,
                delay_ms: 0,
                idem: String::new(),
                json: "{}".into(),
                max_attempts: 3,
                shape: String::new(),
                user_key: "k".into(),
                traceparent: None,
            },
            tenant: "t".into(),
            accounting: Accounting::default(),
        };
        assert_eq!(arg.to_redis_args().len(), crate::scripts::ENQUEUE.stride());
    }

    #[test]
    fn the_enqueue_reply_names_only_duplicates_by_their_place() {
        let (a, b, first) = (JobId::new(), JobId::new(), JobId::new());
        let rec = |place: i64| vec![Value::Int(place), Value::BulkString(first.to_string().into_bytes())];
        let reply = EnqueueReply::from_redis_value(Value::Array(rec(2))).expect("one duplicate");
        let got = reply.outcomes(&[a, b]).expect("in the batch");
        assert_eq!(
            got,
            vec![
                Enqueued {
                    id: a,
                    duplicate: false
                },
                Enqueued {
                    id: first,
                    duplicate: true
                }
            ]
        );
        for bad in [vec![0], vec![3], vec![1, 1]] {
            let v = Value::Array(bad.iter().flat_map(|&p| rec(p)).collect());
            let reply = EnqueueReply::from_redis_value(v).expect("well formed");
            assert!(reply.outcomes(&[a, b]).is_err(), "{bad:?}");
        }
        assert!(
            EnqueueReply::from_redis_value(Value::Array(rec(1)[..1].to_vec())).is_err(),
            "half a record"
        );
        assert!(
            EnqueueReply::from_redis_value(Value::Array(rec(-1))).is_err(),
            "negative"
        );
    }
}
