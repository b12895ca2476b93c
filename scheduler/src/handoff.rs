//! The pipeline mover: applies the hand-offs that pipeline steps leave on their pool's stream
//! (`gantry:{pool}:handoff`, written by the same Lua script as the step's outcome) to their
//! children in other pools (another hash tag on a Cluster), through `handoff.lua` there.
//!
//! Delivery is at least once: every scheduler replica reads through one consumer group, acks
//! an entry only after its child's pool has it, and takes over entries another replica left
//! pending (it was killed between the two). Applying is idempotent per child and parent, so a
//! second delivery changes nothing: no child is lost, none is queued twice.

use std::collections::BTreeMap;

use gantry_queue::client::handoff::HandOff;
use gantry_queue::{Pool, QueueClient, QueueError};
use redis::streams::StreamId;
use tokio_util::sync::CancellationToken;

use crate::stream_group::{Handler, Start, StreamGroup};

/// The consumer group every scheduler reads hand-offs through.
const GROUP: &str = "mover";

/// Moves hand-offs between pools. See the module docs.
#[derive(Debug)]
pub struct HandOffMover {
    group: StreamGroup,
    queue: QueueClient,
    streams: Vec<String>,
}

impl HandOffMover {
    /// A mover over the hand-off streams of `pools`.
    pub fn new(queue: QueueClient, pools: impl IntoIterator<Item = Pool>) -> Self {
        Self {
            group: StreamGroup::new(queue.connection(), GROUP, Start::Beginning),
            streams: pools.into_iter().map(|p| QueueClient::handoff_key(&p)).collect(),
            queue,
        }
    }

    /// Moves until `stop`.
    pub async fn run(self, stop: CancellationToken) {
        self.group
            .run(&self.streams, &self, "moving pipeline hand-offs", stop)
            .await;
    }
}

impl Handler for HandOffMover {
    /// Applies `entries` in their children's pools (one call per pool), then acks and deletes
    /// them. A pool that fails leaves its entries pending, to be taken over; an unreadable entry
    /// is logged and dropped.
    async fn apply(&self, key: &str, entries: Vec<StreamId>) -> Result<usize, QueueError> {
        if entries.is_empty() {
            return Ok(0);
        }
        let mut done = Vec::with_capacity(entries.len());
        let mut by_pool: BTreeMap<Pool, Vec<(&StreamId, HandOff)>> = BTreeMap::new();
        for e in &entries {
            match HandOff::parse(|k| e.get::<String>(k)) {
                Some(h) => by_pool.entry(h.pool.clone()).or_default().push((e, h)),
                None => {
                    tracing::error!(stream = %key, entry = %e.id, "unreadable pipeline hand-off dropped");
                    done.push(e.id.clone());
                }
            }
        }
        let mut failed = None;
        for (pool, hs) in &by_pool {
            let handoffs: Vec<HandOff> = hs.iter().map(|(_, h)| h.clone()).collect();
            match self.queue.apply_handoffs(pool, &handoffs).await {
                Ok(()) => {
                    for (e, h) in hs {
                        tracing::debug!(child = %h.child, parent = %h.parent, %pool, outcome = ?h.outcome, "pipeline hand-off applied");
                        done.push(e.id.clone());
                    }
                }
                Err(err) => failed = Some(err),
            }
        }
        // The crash tests' fault point (debug builds only): die between applying and acking,
        // the worst moment, so a takeover must apply the same entries again.
        #[cfg(debug_assertions)]
        if std::env::var_os("GANTRY_TEST_ABORT_AFTER_HANDOFF").is_some() && !by_pool.is_empty() {
            tracing::error!("GANTRY_TEST_ABORT_AFTER_HANDOFF: aborting between applying hand-offs and acking them");
            std::process::abort();
        }
        let done: Vec<&str> = done.iter().map(String::as_str).collect();
        self.group.ack(key, &done, true).await?;
        match failed {
            Some(e) => Err(e),
            None => Ok(entries.len()),
        }
    }
}
