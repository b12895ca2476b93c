//! The credit settler: turns the credit events that finished jobs leave on their pool's stream
//! (`gantry:{pool}:credits`, written by the same Lua script as the outcome, so none is lost) into
//! charges and refunds on the ledger. Success charges the job's locked price rule applied to the
//! usage its worker reported; dead-lettered and cancelled jobs are refunded.
//!
//! Delivery is at least once: every scheduler replica reads through one consumer group, acks an
//! event only after the ledger has it, and takes over events another replica left pending. The
//! ledger makes that exactly once: each job's entry is charged at most once, whatever order or
//! number of times its outcomes arrive.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use gantry_queue::{JobId, Pool, QueueError, RedisConn, Usage};
use redis::streams::{StreamAutoClaimReply, StreamId, StreamReadReply};
use tokio_util::sync::CancellationToken;

use crate::admission::credits::CreditLedger;
use crate::admission::pricing::{CreditLabels, LockedPrice, PriceRule};
use crate::metrics::{SchedulerMetrics, SettleLabels};

/// The consumer group every scheduler reads credit events through.
const GROUP: &str = "settler";
/// Events read per round trip.
const BATCH: usize = 256;
/// How long to wait when every stream was empty.
const IDLE_POLL: Duration = Duration::from_millis(200);
/// An event pending this long (its reader stopped or failed) is taken over.
const TAKE_OVER_AFTER: Duration = Duration::from_secs(30);

/// One finished job's credit event.
#[derive(Clone, Debug, PartialEq)]
struct CreditEvent {
    job: JobId,
    tenant: String,
    succeeded: bool,
    reserved: i64,
    rule: Option<PriceRule>,
    labels: CreditLabels,
    usage: Option<Usage>,
}

impl CreditEvent {
    fn parse(e: &StreamId) -> Option<Self> {
        use gantry_queue::fields::credit_event as f;
        let s = |k: &str| e.get::<String>(k);
        let non_empty = |k: &str| s(k).filter(|v| !v.is_empty());
        Some(Self {
            job: s(f::JOB)?.parse().ok()?,
            tenant: non_empty(f::TENANT)?,
            succeeded: s(f::OUTCOME)? == "succeeded",
            reserved: s(f::RESERVED)?.parse().ok()?,
            rule: non_empty(f::PRICE_RULE).and_then(|r| serde_json::from_str(&r).ok()),
            labels: non_empty(f::PRICE_RULE)
                .and_then(|r| serde_json::from_str::<LockedPrice>(&r).ok())
                .map(|l| l.labels)
                .unwrap_or_default(),
            usage: non_empty(f::USAGE).and_then(|u| serde_json::from_str(&u).ok()),
        })
    }

    /// What to charge; `None` refunds.
    fn charge(&self) -> Option<i64> {
        if !self.succeeded {
            return None;
        }
        let credits = match &self.rule {
            Some(r) => {
                let charged = r.charge(self.usage.as_ref());
                let metered = r.metered(self.usage.as_ref());
                if metered > charged {
                    // No top-up rule: what admission reserved is the most a job costs.
                    tracing::warn!(
                        job_id = %self.job,
                        metered,
                        charged,
                        "reported usage prices above the reservation; the reservation is charged"
                    );
                }
                charged
            }
            None => self.reserved,
        };
        (credits > 0).then_some(credits)
    }
}

/// Settles credit events. See the module docs.
#[derive(Debug)]
pub struct CreditSettler {
    conn: RedisConn,
    ledger: CreditLedger,
    consumer: String,
    streams: Vec<String>,
    metrics: Arc<SchedulerMetrics>,
}

impl CreditSettler {
    /// A settler over the credit streams of `pools`.
    pub fn new(conn: RedisConn, pools: impl IntoIterator<Item = Pool>, metrics: Arc<SchedulerMetrics>) -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        Self {
            ledger: CreditLedger::new(conn.clone()),
            conn,
            consumer: format!("scheduler-{}-{nanos:08x}", std::process::id()),
            streams: pools.into_iter().map(|p| format!("{}credits", p.prefix())).collect(),
            metrics,
        }
    }

    /// Settles until `stop`.
    pub async fn run(self, stop: CancellationToken) {
        let mut ready = HashSet::new();
        let mut last_take_over: Option<Instant> = None;
        while !stop.is_cancelled() {
            let take_over = last_take_over.is_none_or(|t| t.elapsed() >= TAKE_OVER_AFTER / 2);
            if take_over {
                last_take_over = Some(Instant::now());
            }
            let mut busy = false;
            for key in &self.streams {
                if !ready.contains(key) {
                    match self.create_group(key).await {
                        Ok(()) => {
                            ready.insert(key.clone());
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, stream = %key, "credit stream unavailable");
                            continue;
                        }
                    }
                }
                let round = async {
                    let mut n = 0;
                    if take_over {
                        n += self.take_over(key).await?;
                    }
                    Ok::<_, QueueError>(n + self.read(key).await?)
                };
                match round.await {
                    Ok(n) => busy |= n > 0,
                    Err(e) => {
                        tracing::warn!(error = %e, stream = %key, "settling credits failed; will retry");
                        ready.remove(key);
                    }
                }
            }
            if !busy {
                tokio::select! {
                    _ = tokio::time::sleep(IDLE_POLL) => {}
                    _ = stop.cancelled() => {}
                }
            }
        }
    }

    async fn create_group(&self, key: &str) -> Result<(), QueueError> {
        let mut c = self.conn.clone();
        let r: Result<(), redis::RedisError> = redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(key)
            .arg(GROUP)
            .arg("0")
            .arg("MKSTREAM")
            .query_async(&mut c)
            .await;
        match r {
            Err(e) if e.code() != Some("BUSYGROUP") => Err(e.into()),
            _ => Ok(()),
        }
    }

    async fn read(&self, key: &str) -> Result<usize, QueueError> {
        let mut c = self.conn.clone();
        let reply: Option<StreamReadReply> = redis::cmd("XREADGROUP")
            .arg("GROUP")
            .arg(GROUP)
            .arg(&self.consumer)
            .arg("COUNT")
            .arg(BATCH)
            .arg("STREAMS")
            .arg(key)
            .arg(">")
            .query_async(&mut c)
            .await?;
        let events = reply.into_iter().flat_map(|r| r.keys).flat_map(|k| k.ids).collect();
        self.apply(key, events).await
    }

    async fn take_over(&self, key: &str) -> Result<usize, QueueError> {
        let mut c = self.conn.clone();
        let reply: StreamAutoClaimReply = redis::cmd("XAUTOCLAIM")
            .arg(key)
            .arg(GROUP)
            .arg(&self.consumer)
            .arg(TAKE_OVER_AFTER.as_millis() as u64)
            .arg("0-0")
            .arg("COUNT")
            .arg(BATCH)
            .query_async(&mut c)
            .await?;
        self.apply(key, reply.claimed).await
    }

    fn count(&self, ev: &CreditEvent, charge: Option<i64>) {
        let outcome = SettleLabels {
            credit: ev.labels.clone(),
            outcome: if charge.is_some() { "charged" } else { "refunded" }.to_owned(),
        };
        self.metrics.settled.get_or_create(&outcome).inc();
        if let Some(c) = charge {
            self.metrics
                .credits_charged
                .get_or_create(&ev.labels)
                .inc_by(u64::try_from(c).unwrap_or(0));
        }
    }

    /// Settles `events`, then acks and deletes them. An event the ledger did not take stays
    /// pending (to be taken over); an unreadable one is logged and dropped.
    async fn apply(&self, key: &str, events: Vec<StreamId>) -> Result<usize, QueueError> {
        if events.is_empty() {
            return Ok(0);
        }
        // One ledger round trip per tenant in the batch, each tenant's events in stream order.
        let mut done = Vec::with_capacity(events.len());
        let mut by_tenant: BTreeMap<String, Vec<(&StreamId, CreditEvent)>> = BTreeMap::new();
        for e in &events {
            match CreditEvent::parse(e) {
                Some(ev) => by_tenant.entry(ev.tenant.clone()).or_default().push((e, ev)),
                None => {
                    tracing::error!(stream = %key, event = %e.id, "unreadable credit event dropped");
                    done.push(e.id.clone());
                }
            }
        }
        let mut failed = None;
        for (tenant, evs) in &by_tenant {
            let jobs: Vec<(JobId, Option<i64>)> = evs.iter().map(|(_, ev)| (ev.job, ev.charge())).collect();
            match self.ledger.settle(tenant, &jobs).await {
                Ok(moved) => {
                    for ((e, ev), (moved, (_, charge))) in evs.iter().zip(moved.into_iter().zip(&jobs)) {
                        tracing::debug!(job_id = %ev.job, ?charge, moved, "credits settled");
                        if moved {
                            self.count(ev, *charge);
                        }
                        done.push(e.id.clone());
                    }
                }
                // The rest stay pending, to be taken over.
                Err(err) => failed = Some(err),
            }
        }
        if !done.is_empty() {
            let mut c = self.conn.clone();
            redis::pipe()
                .cmd("XACK")
                .arg(key)
                .arg(GROUP)
                .arg(&done)
                .ignore()
                .cmd("XDEL")
                .arg(key)
                .arg(&done)
                .ignore()
                .query_async::<()>(&mut c)
                .await?;
        }
        match failed {
            Some(e) => Err(e),
            None => Ok(events.len()),
        }
    }
}
