//! [`QueueClient`]: every queue operation, each one Redis round trip through a Lua script. One
//! module per concern: enqueue, leases (claim, heartbeat, ack, fail, release, reap), one job by
//! id, dead letters, erasure, stats; this module holds the client and the reply decoding they
//! share.

mod dead_letters;
mod enqueue;
mod erasure;
pub mod handoff;
mod jobs;
mod lease;
pub mod pipelines;
mod progress;
mod record;
mod search;
mod stats;
mod step_inputs;
mod user_data;
mod wire;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::config::QueueConfig;
use crate::conn::{RedisConn, RedisTarget};
use crate::error::QueueError;
use crate::job::{HistoryEvent, JobError, JobId, JobRecord, JobStatus, ResultRef, Usage};
use crate::keys::{POOLS_KEY, Pool};
use crate::seal::Keyring;

pub use dead_letters::{DeadAction, DeadFilter, DeadLetter, DeadLetterOutcome};
pub use enqueue::{Accounting, Enqueued, StepLink};
pub use erasure::ErasureCounts;
pub use jobs::{CancelOutcome, ResealReport};
pub use lease::{
    AckOutcome, ClaimBatch, ClaimCapacity, ClaimedJob, FailOutcome, Failure, LeaseRef, LeaseState, ReapReport,
};
pub use progress::ProgressReport;
pub use search::{JobPage, JobQuery, JobSummary, MAX_PAGE};
pub use stats::{CreditBacklog, QueueStats};
pub use user_data::{UserCursor, UserItem, UserPage, UserPipeline};

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
        let cfg = match crate::config::RecordFormat::from_env()? {
            Some(record_format) => QueueConfig { record_format, ..cfg },
            None => cfg,
        };
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
}

/// A status read back from Redis: one Gantry does not know is a protocol error (a foreign or
/// newer writer), not bad input.
fn stored_status(s: &str) -> Result<JobStatus, QueueError> {
    s.parse()
        .map_err(|e: crate::ValidationError| QueueError::Protocol(e.to_string()))
}

/// The stored progress (`prog`, `pat`), if the attempt now running reported it. A progress
/// field that does not parse is dropped (it is advisory), not an error.
pub(super) fn current_progress(json: &str, at_ms: Option<u64>, attempts: u32) -> Option<crate::Progress> {
    let mut p: crate::Progress = serde_json::from_str(json).ok()?;
    p.at_ms = at_ms.unwrap_or(0);
    (p.attempt == attempts).then_some(p)
}

fn parse_record(
    id: JobId,
    pool: &Pool,
    h: &HashMap<String, Vec<u8>>,
    keys: Option<&Keyring>,
) -> Result<JobRecord, QueueError> {
    use crate::fields::job as f;
    let s = |k: &str| h.get(k).and_then(|v| std::str::from_utf8(v).ok());
    let n = |k: &str| s(k).and_then(|v| v.parse::<u64>().ok());
    let protocol = |e: crate::ValidationError| QueueError::Protocol(format!("job {id}: {e}"));
    let field = |k: &'static str| {
        s(k).ok_or_else(|| QueueError::Protocol(format!("job {id}: the record has no readable {k:?}")))
    };
    let fields = record::RecordFields {
        pool: pool.as_str(),
        tenant: field(f::TENANT)?,
        priority: field(f::PRIORITY)?.parse().map_err(protocol)?,
        kind: field(f::KIND)?.parse().map_err(protocol)?,
        max_attempts: field(f::MAX_ATTEMPTS)?
            .parse()
            .map_err(|e| QueueError::Protocol(format!("job {id}: max attempts: {e}")))?,
    };
    let spec = record::decode_spec(id, h.get(f::SPEC).map(Vec::as_slice).unwrap_or_default(), fields, keys)?;
    let status = stored_status(s(f::STATUS).unwrap_or("queued"))?;
    let error = s(f::ERROR_CLASS).map(|class| JobError {
        class: class.to_owned(),
        message: s(f::ERROR_MESSAGE).unwrap_or_default().to_owned(),
        at_ms: n(f::ERROR_AT).unwrap_or(0),
    });
    // A field that is there but unreadable is an error: dropping it would show a succeeded
    // job without its output, or a charge without its usage.
    let unreadable =
        |field: &str, e: serde_json::Error| QueueError::Protocol(format!("job {id}: unreadable {field}: {e}"));
    let result = s(f::RESULT)
        .map(|r| serde_json::from_str::<ResultRef>(r).map_err(|e| unreadable("result", e)))
        .transpose()?;
    let usage = s(f::USAGE)
        .map(|r| serde_json::from_str::<Usage>(r).map_err(|e| unreadable("usage", e)))
        .transpose()?;
    let history = s(f::HISTORY)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str::<HistoryEvent>(l).map_err(|e| unreadable("history", e)))
        .collect::<Result<_, _>>()?;
    let attempts = n(f::ATTEMPTS).unwrap_or(0) as u32;
    let progress = s(f::PROGRESS).and_then(|p| current_progress(p, n(f::PROGRESS_AT), attempts));
    Ok(JobRecord {
        spec,
        status,
        attempts,
        enqueued_at_ms: n(f::ENQUEUED_AT).unwrap_or(0),
        started_at_ms: n(f::STARTED_AT),
        finished_at_ms: n(f::FINISHED_AT),
        due_at_ms: n(f::DUE_AT),
        worker: s(f::WORKER).map(str::to_owned),
        cancel_requested: s(f::CANCEL).is_some(),
        error,
        result,
        usage,
        progress,
        credits_reserved: s(f::CREDITS_RESERVED).and_then(|v| v.parse().ok()),
        history,
        step_of: s(f::PIPELINE).map(|p| (p.to_owned(), s(f::STEP).unwrap_or_default().to_owned())),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored(fields: &[(&str, &str)]) -> HashMap<String, Vec<u8>> {
        let id = JobId::new();
        let spec = crate::JobSpec {
            id,
            pool: "cpu".into(),
            tenant: "t".into(),
            user: "u".into(),
            priority: crate::Priority::Normal,
            requirements: Default::default(),
            allowed_regions: Vec::new(),
            idempotency_key: None,
            max_attempts: 3,
            timeout_secs: 60,
            scan_outputs: false,
            traceparent: None,
            body: crate::Payload::Noop(Default::default()),
        };
        let mut h: HashMap<String, Vec<u8>> = fields
            .iter()
            .map(|(k, v)| ((*k).into(), v.as_bytes().to_vec()))
            .collect();
        h.insert(crate::fields::job::SPEC.into(), serde_json::to_vec(&spec).expect("ser"));
        for (k, v) in [("ten", "t"), ("prio", "normal"), ("kind", "noop"), ("max", "3")] {
            h.entry(k.into()).or_insert_with(|| v.as_bytes().to_vec());
        }
        h
    }

    fn pool() -> Pool {
        Pool::new("cpu").expect("valid")
    }

    #[test]
    fn an_unreadable_result_or_usage_is_an_error_not_a_missing_field() {
        use crate::fields::job as f;
        let ok = stored(&[(f::STATUS, "succeeded")]);
        let id = JobId::new();
        assert!(parse_record(id, &pool(), &ok, None).is_ok());
        for field in [f::RESULT, f::USAGE, f::HISTORY] {
            let bad = stored(&[(f::STATUS, "succeeded"), (field, "{not json")]);
            let e = parse_record(id, &pool(), &bad, None).expect_err("unreadable");
            assert!(
                matches!(e, QueueError::Protocol(ref m) if m.contains("unreadable")),
                "{field}: {e}"
            );
        }
        let odd = stored(&[(f::STATUS, "half-done")]);
        assert!(matches!(
            parse_record(id, &pool(), &odd, None),
            Err(QueueError::Protocol(_))
        ));
        // The fields a compact spec leans on must be there and readable.
        for (field, value) in [
            (f::PRIORITY, "urgent"),
            (f::KIND, "mine_bitcoin"),
            (f::MAX_ATTEMPTS, "-1"),
        ] {
            let bad = stored(&[(field, value)]);
            assert!(
                matches!(parse_record(id, &pool(), &bad, None), Err(QueueError::Protocol(_))),
                "{field}={value}"
            );
        }
    }
}
