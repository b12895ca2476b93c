//! The fleet registry: each worker heartbeats a record of itself (pool, kinds, inventory,
//! in-flight jobs, warm models, version) under its pool's hash tag, with an expiry of three
//! heartbeats, so a dead worker disappears after three missed heartbeats.
//!
//! ```text
//! gantry:{pool}:worker:<id>   string  JSON WorkerRecord, PX = 3 heartbeats
//! gantry:{pool}:workers       zset    id -> last heartbeat (index; pruned after a day)
//! ```

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::client::QueueClient;
use crate::error::QueueError;
use crate::job::JobKind;
use crate::keys::Pool;
use crate::scripts;

/// One GPU as the registry shows it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FleetGpu {
    /// Index on its host.
    pub index: u32,
    /// UUID.
    pub uuid: String,
    /// Model name.
    pub name: String,
    /// Memory, bytes.
    pub memory_total_bytes: u64,
    /// Free memory, bytes.
    pub memory_free_bytes: u64,
    /// Whether an NVENC session was proven (or declared, for a fake).
    pub nvenc: bool,
    /// Memory in use by anything (NVML's reading), bytes.
    #[serde(default)]
    pub memory_used_bytes: u64,
    /// Memory Gantry's running jobs reserve here, bytes.
    #[serde(default)]
    pub reserved_bytes: u64,
    /// Whether video decoding may use NVDEC here.
    #[serde(default)]
    pub nvdec: bool,
    /// Its MIG instances, when MIG is on.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mig: Vec<FleetMig>,
}

/// A MIG instance of a GPU, as the registry shows it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FleetMig {
    /// Index under its GPU.
    pub index: u32,
    /// UUID.
    pub uuid: String,
    /// Memory, bytes.
    pub memory_total_bytes: u64,
    /// What Gantry's running jobs reserve on it (each MIG instance is a unit jobs are placed
    /// on), bytes.
    #[serde(default)]
    pub reserved_bytes: u64,
}

/// What a worker says of itself at each heartbeat.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WorkerRecord {
    /// Worker id.
    pub id: String,
    /// Pool.
    pub pool: String,
    /// Host name.
    pub hostname: String,
    /// Gantry version.
    pub version: String,
    /// Kinds it claims.
    pub kinds: Vec<JobKind>,
    /// Job slots.
    pub concurrency: u32,
    /// Jobs leased now.
    pub in_flight: u32,
    /// `nvml`, `fake` or `none`.
    pub gpu_source: String,
    /// Its GPUs.
    pub gpus: Vec<FleetGpu>,
    /// Models loaded and warm.
    pub warm_models: Vec<String>,
    /// Started at (Unix ms).
    pub started_at_ms: u64,
    /// Heartbeat period, ms.
    pub heartbeat_ms: u64,
    /// Draining after SIGTERM.
    pub draining: bool,
    /// Where its `/metrics`, `/healthz` and `/readyz` answer, if served.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics_addr: Option<String>,
    /// Last heartbeat (Unix ms, Redis clock); filled in when listed.
    #[serde(default)]
    pub last_seen_ms: u64,
}

impl QueueClient {
    /// Writes (or refreshes) a worker's record; it expires after three `heartbeat`s.
    pub async fn register_worker(&self, rec: &WorkerRecord, heartbeat: Duration) -> Result<(), QueueError> {
        let pool = Pool::new(&rec.pool)?;
        let json = serde_json::to_string(rec).map_err(|e| QueueError::Protocol(format!("worker record: {e}")))?;
        let ttl_ms = (heartbeat.as_millis() as u64).saturating_mul(3).max(1);
        self.register_pool(&pool).await?;
        let mut inv = scripts::REGISTER.prepare_invoke();
        inv.key(pool.prefix()).arg(&rec.id).arg(json).arg(ttl_ms);
        let mut c = self.connection();
        let _: i64 = inv.invoke_async(&mut c).await?;
        Ok(())
    }

    /// Removes a worker's record at once (clean shutdown).
    pub async fn deregister_worker(&self, pool: &Pool, id: &str) -> Result<(), QueueError> {
        let mut c = self.connection();
        redis::cmd("DEL")
            .arg(format!("{}worker:{id}", pool.prefix()))
            .query_async::<()>(&mut c)
            .await?;
        redis::cmd("ZREM")
            .arg(format!("{}workers", pool.prefix()))
            .arg(id)
            .query_async::<()>(&mut c)
            .await?;
        Ok(())
    }

    /// The live workers of a pool (those whose record has not expired), by id.
    pub async fn workers(&self, pool: &Pool) -> Result<Vec<WorkerRecord>, QueueError> {
        let mut c = self.connection();
        let index: Vec<(String, f64)> = redis::cmd("ZRANGE")
            .arg(format!("{}workers", pool.prefix()))
            .arg(0)
            .arg(-1)
            .arg("WITHSCORES")
            .query_async(&mut c)
            .await?;
        let mut out = Vec::with_capacity(index.len());
        let mut expired = Vec::new();
        // One MGET per few hundred workers (all keys share the pool's hash tag).
        for chunk in index.chunks(256) {
            let mut get = redis::cmd("MGET");
            for (id, _) in chunk {
                get.arg(format!("{}worker:{id}", pool.prefix()));
            }
            let raws: Vec<Option<String>> = get.query_async(&mut c).await?;
            for ((id, seen), raw) in chunk.iter().zip(raws) {
                match raw.map(|r| serde_json::from_str::<WorkerRecord>(&r)) {
                    Some(Ok(mut rec)) => {
                        rec.last_seen_ms = *seen as u64;
                        out.push(rec);
                    }
                    Some(Err(e)) => tracing::warn!(worker = %id, error = %e, "unreadable worker record"),
                    // Expired: three heartbeats missed.
                    None => expired.push(id.clone()),
                }
            }
        }
        if !expired.is_empty() {
            // Drop them from the index.
            redis::cmd("ZREM")
                .arg(format!("{}workers", pool.prefix()))
                .arg(&expired)
                .query_async::<()>(&mut c)
                .await?;
        }
        out.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(out)
    }
}
