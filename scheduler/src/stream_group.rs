//! Reading Redis streams through a consumer group that every scheduler replica shares: what the
//! credit settler and the webhook dispatcher both do. Each round reads new entries per stream;
//! every half of [`TAKE_OVER_AFTER`] it also takes over entries another replica read and left
//! pending (it stopped, or failed to handle them). A stream whose round fails is set up again
//! (its group created) on the next round, and the loop sleeps only when every stream was idle.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use gantry_queue::{QueueError, RedisConn};
use redis::streams::{StreamAutoClaimReply, StreamId, StreamReadReply};
use tokio_util::sync::CancellationToken;

/// Entries read per round trip.
const BATCH: usize = 256;
/// How long to wait when every stream was empty.
const IDLE_POLL: Duration = Duration::from_millis(200);
/// An entry pending this long (its reader stopped or failed) is taken over.
pub(crate) const TAKE_OVER_AFTER: Duration = Duration::from_secs(30);

/// [`TAKE_OVER_AFTER`], or in a debug build `GANTRY_TEST_TAKE_OVER_MS` (the crash tests'
/// way to see a takeover without waiting half a minute).
fn take_over_after() -> Duration {
    #[cfg(debug_assertions)]
    if let Some(ms) = std::env::var("GANTRY_TEST_TAKE_OVER_MS")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        return Duration::from_millis(ms);
    }
    TAKE_OVER_AFTER
}

/// Where a new group starts reading.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Start {
    /// From the stream's first entry (nothing may be missed: credit events).
    Beginning,
    /// From the stream's end (only what happens from now on: webhook dispatch).
    End,
}

/// What a group's reader does with the entries it reads.
pub(crate) trait Handler {
    /// Handles `entries` of stream `key` (acking what it is done with); returns how many it
    /// took. An error leaves the rest pending, to be taken over.
    async fn apply(&self, key: &str, entries: Vec<StreamId>) -> Result<usize, QueueError>;
}

/// One replica's membership of a consumer group.
#[derive(Debug)]
pub(crate) struct StreamGroup {
    conn: RedisConn,
    group: &'static str,
    consumer: String,
    start: Start,
}

impl StreamGroup {
    /// A member of `group` with a name of its own (process id and a clock reading).
    pub(crate) fn new(conn: RedisConn, group: &'static str, start: Start) -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        Self {
            conn,
            group,
            consumer: format!("scheduler-{}-{nanos:08x}", std::process::id()),
            start,
        }
    }

    async fn create(&self, key: &str) -> Result<(), QueueError> {
        let mut c = self.conn.clone();
        let start = match self.start {
            Start::Beginning => "0",
            Start::End => "$",
        };
        let r: Result<(), redis::RedisError> = redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(key)
            .arg(self.group)
            .arg(start)
            .arg("MKSTREAM")
            .query_async(&mut c)
            .await;
        match r {
            Err(e) if e.code() != Some("BUSYGROUP") => Err(e.into()),
            _ => Ok(()),
        }
    }

    async fn read(&self, key: &str) -> Result<Vec<StreamId>, QueueError> {
        let mut c = self.conn.clone();
        let reply: Option<StreamReadReply> = redis::cmd("XREADGROUP")
            .arg("GROUP")
            .arg(self.group)
            .arg(&self.consumer)
            .arg("COUNT")
            .arg(BATCH)
            .arg("STREAMS")
            .arg(key)
            .arg(">")
            .query_async(&mut c)
            .await?;
        Ok(reply.into_iter().flat_map(|r| r.keys).flat_map(|k| k.ids).collect())
    }

    async fn take_over(&self, key: &str) -> Result<Vec<StreamId>, QueueError> {
        let mut c = self.conn.clone();
        let reply: StreamAutoClaimReply = redis::cmd("XAUTOCLAIM")
            .arg(key)
            .arg(self.group)
            .arg(&self.consumer)
            .arg(take_over_after().as_millis() as u64)
            .arg("0-0")
            .arg("COUNT")
            .arg(BATCH)
            .query_async(&mut c)
            .await?;
        Ok(reply.claimed)
    }

    /// Acks `ids` of stream `key`, and deletes them too when `delete` (a stream nobody else
    /// reads).
    pub(crate) async fn ack(&self, key: &str, ids: &[&str], delete: bool) -> Result<(), QueueError> {
        if ids.is_empty() {
            return Ok(());
        }
        let mut c = self.conn.clone();
        let mut p = redis::pipe();
        p.cmd("XACK").arg(key).arg(self.group).arg(ids).ignore();
        if delete {
            p.cmd("XDEL").arg(key).arg(ids).ignore();
        }
        p.query_async::<()>(&mut c).await?;
        Ok(())
    }

    /// Reads `keys` through the group and hands what it reads to `handler` until `stop`;
    /// `what` names the work in the log.
    pub(crate) async fn run(&self, keys: &[String], handler: &impl Handler, what: &str, stop: CancellationToken) {
        let mut ready = HashSet::new();
        let mut last_take_over: Option<Instant> = None;
        while !stop.is_cancelled() {
            let take_over = last_take_over.is_none_or(|t| t.elapsed() >= take_over_after() / 2);
            if take_over {
                last_take_over = Some(Instant::now());
            }
            let mut busy = false;
            for key in keys {
                if !ready.contains(key) {
                    match self.create(key).await {
                        Ok(()) => {
                            ready.insert(key.clone());
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, stream = %key, "{what}: stream unavailable");
                            continue;
                        }
                    }
                }
                let round = async {
                    let mut n = 0;
                    if take_over {
                        n += handler.apply(key, self.take_over(key).await?).await?;
                    }
                    Ok::<_, QueueError>(n + handler.apply(key, self.read(key).await?).await?)
                };
                match round.await {
                    Ok(n) => busy |= n > 0,
                    Err(e) => {
                        tracing::warn!(error = %e, stream = %key, "{what} failed; will retry");
                        ready.remove(key);
                    }
                }
            }
            if !busy {
                tokio::select! {
                    () = tokio::time::sleep(IDLE_POLL) => {}
                    () = stop.cancelled() => {}
                }
            }
        }
    }
}
