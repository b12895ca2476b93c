//! Pipelines left half stored. Storing one writes its record (state `creating`, its id in the
//! pool's `pl-creating` set), queues its waiting steps, then its roots, then marks it
//! `created`. A scheduler that dies in between leaves steps that would wait forever, and
//! reservations for steps never queued. Any replica's sweep finds such a pipeline once it has
//! been `creating` for `pipeline_stuck_secs`, and cancels it whole: each queued step is
//! cancelled (its reservation refunded at settlement), each step never queued is refunded
//! directly. Both are idempotent, so replicas sweeping together, or a sweep racing the
//! creator's own cleanup, do no harm; the state moves only from `creating`.

use std::sync::LazyLock;
use std::time::Duration;

use gantry_queue::{Pool, QueueClient, QueueError};
use redis::Script;
use tokio_util::sync::CancellationToken;

use super::{PipelineStore, StoredStep, field};
use crate::problem::ApiError;

static STATE: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("../scripts/pipeline_state.lua")));

/// Most stuck pipelines one sweep handles per pool.
const BATCH: isize = 100;

impl PipelineStore {
    /// Moves pipeline `id`'s record in `pool` to `state` (only from `from`, if given) and out of
    /// the `creating` set. Returns whether it moved.
    pub(super) async fn set_state(
        &self,
        pool: &Pool,
        id: &str,
        state: &str,
        from: Option<&str>,
    ) -> Result<bool, ApiError> {
        let mut c = self.queue.connection();
        let moved: i64 = STATE
            .key(QueueClient::pipeline_key(pool, id))
            .key(QueueClient::pipelines_creating_key(pool))
            .arg(id)
            .arg(state)
            .arg(from.unwrap_or_default())
            .invoke_async(&mut c)
            .await
            .map_err(QueueError::from)?;
        Ok(moved == 1)
    }

    /// Cancels every step of a pipeline that could not be stored whole: the queued ones through
    /// the queue, the ones never queued by refunding their reservations.
    pub(super) async fn cancel_unfinished(&self, tenant: &str, steps: &[StoredStep]) {
        for s in steps {
            match self.queue.cancel(s.job_id).await {
                Ok(_) | Err(QueueError::AlreadyFinished { .. }) => {}
                Err(QueueError::NotFound(_)) => {
                    if let Err(e) = self.credits.refund(tenant, s.job_id).await {
                        tracing::error!(error = %e, job_id = %s.job_id, "refunding a step never queued failed");
                    }
                }
                Err(e) => tracing::warn!(error = %e, job_id = %s.job_id, "cancelling a pipeline step failed"),
            }
        }
    }

    /// Cancels, whole, each pipeline in `pools` that has been `creating` for longer than
    /// `stuck_after`. Returns how many it cancelled.
    pub async fn sweep_stuck(&self, pools: &[Pool], stuck_after: Duration) -> Result<usize, QueueError> {
        let mut c = self.queue.connection();
        let (secs, micros): (u64, u64) = redis::cmd("TIME").query_async(&mut c).await?;
        let now_ms = secs * 1000 + micros / 1000;
        let before = now_ms.saturating_sub(stuck_after.as_millis() as u64);
        let mut swept = 0;
        for pool in pools {
            let ids: Vec<String> = redis::cmd("ZRANGEBYSCORE")
                .arg(QueueClient::pipelines_creating_key(pool))
                .arg("-inf")
                .arg(before)
                .arg("LIMIT")
                .arg(0)
                .arg(BATCH)
                .query_async(&mut c)
                .await?;
            for id in ids {
                match self.sweep_one(pool, &id).await {
                    Ok(true) => swept += 1,
                    Ok(false) => {}
                    Err(e) => tracing::warn!(pipeline = %id, error = %e, "sweeping a stuck pipeline failed"),
                }
            }
        }
        Ok(swept)
    }

    async fn sweep_one(&self, pool: &Pool, id: &str) -> Result<bool, ApiError> {
        let mut c = self.queue.connection();
        let h: std::collections::BTreeMap<String, String> = redis::cmd("HGETALL")
            .arg(QueueClient::pipeline_key(pool, id))
            .query_async(&mut c)
            .await
            .map_err(QueueError::from)?;
        let steps: Option<Vec<StoredStep>> = h.get(field::STEPS).and_then(|s| serde_json::from_str(s).ok());
        let (Some(steps), Some(tenant)) = (steps, h.get(field::TENANT)) else {
            // Gone (erased, expired) or unreadable: nothing to cancel; it leaves the set.
            self.set_state(pool, id, "cancelled", Some("creating")).await?;
            return Ok(false);
        };
        if h.get(field::STATE).map(String::as_str) != Some("creating") {
            self.set_state(pool, id, "cancelled", Some("creating")).await?;
            return Ok(false);
        }
        tracing::warn!(pipeline = %id, steps = steps.len(), "a pipeline was left half stored; cancelling it whole");
        // The state first: from now on its own cancel and status see it cancelled.
        if !self.set_state(pool, id, "cancelled", Some("creating")).await? {
            return Ok(false);
        }
        self.cancel_unfinished(tenant, &steps).await;
        Ok(true)
    }

    /// Sweeps every `every` until `shutdown` (see the module docs).
    pub async fn run_sweeper(self, pools: Vec<Pool>, stuck_after: Duration, shutdown: CancellationToken) {
        let every = stuck_after.min(Duration::from_secs(30)).max(Duration::from_millis(200));
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(every) => {}
            }
            match self.sweep_stuck(&pools, stuck_after).await {
                Ok(0) => {}
                Ok(n) => tracing::warn!(pipelines = n, "cancelled pipelines left half stored"),
                Err(e) => tracing::warn!(error = %e, "sweeping stuck pipelines failed"),
            }
        }
    }
}
