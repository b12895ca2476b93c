//! The credit settler: turns the credit events that finished jobs leave on their pool's stream
//! (`gantry:{pool}:credits`, written by the same Lua script as the outcome, so none is lost) into
//! charges and refunds on the ledger. Success charges the job's locked price rule applied to the
//! usage its worker reported; dead-lettered and cancelled jobs are refunded.
//!
//! Delivery is at least once: every scheduler replica reads through one consumer group, acks an
//! event only after the ledger has it, and takes over events another replica left pending. The
//! ledger makes that exactly once: each job's entry is charged at most once, whatever order or
//! number of times its outcomes arrive.

use std::collections::BTreeMap;
use std::sync::Arc;

use gantry_queue::{JobId, Pool, QueueError, RedisConn, Usage};
use redis::streams::StreamId;
use tokio_util::sync::CancellationToken;

use crate::admission::credits::CreditLedger;
use crate::admission::pricing::{CreditLabels, LockedPrice, PriceRule};
use crate::metrics::{SchedulerMetrics, SettleLabels};
use crate::stream_group::{Handler, Start, StreamGroup};

/// The consumer group every scheduler reads credit events through.
const GROUP: &str = "settler";

/// One finished job's credit event.
#[derive(Clone, Debug, PartialEq)]
struct CreditEvent {
    job: JobId,
    tenant: String,
    succeeded: bool,
    /// `succeeded`, `dead`, `cancelled`, `blocked`…
    outcome: String,
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
            outcome: s(f::OUTCOME)?,
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
    group: StreamGroup,
    ledger: CreditLedger,
    streams: Vec<String>,
    metrics: Arc<SchedulerMetrics>,
    conn: RedisConn,
}

impl CreditSettler {
    /// A settler over the credit streams of `pools`.
    pub fn new(conn: RedisConn, pools: impl IntoIterator<Item = Pool>, metrics: Arc<SchedulerMetrics>) -> Self {
        Self {
            ledger: CreditLedger::new(conn.clone()),
            group: StreamGroup::new(conn.clone(), GROUP, Start::Beginning),
            conn,
            streams: pools.into_iter().map(|p| format!("{}credits", p.prefix())).collect(),
            metrics,
        }
    }

    /// Settles until `stop`.
    pub async fn run(self, stop: CancellationToken) {
        self.group.run(&self.streams, &self, "settling credits", stop).await;
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
}

impl Handler for CreditSettler {
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
        let mut outcomes: BTreeMap<&str, u64> = BTreeMap::new();
        for (tenant, evs) in &by_tenant {
            let jobs: Vec<(JobId, Option<i64>)> = evs.iter().map(|(_, ev)| (ev.job, ev.charge())).collect();
            match self.ledger.settle(tenant, &jobs).await {
                Ok(moved) => {
                    for ((e, ev), (moved, (_, charge))) in evs.iter().zip(moved.into_iter().zip(&jobs)) {
                        tracing::debug!(job_id = %ev.job, ?charge, moved, "credits settled");
                        if moved {
                            self.count(ev, *charge);
                            *outcomes.entry(ev.outcome.as_str()).or_default() += 1;
                        }
                        done.push(e.id.clone());
                    }
                }
                // The rest stay pending, to be taken over.
                Err(err) => failed = Some(err),
            }
        }
        if let Some(prefix) = key.strip_suffix("credits")
            && let Err(e) = crate::console_feed::count_outcomes(&self.conn, prefix, &outcomes).await
        {
            // Only the console's last-hour numbers miss them.
            tracing::warn!(error = %e, "counting finished jobs for the console failed");
        }
        let done: Vec<&str> = done.iter().map(String::as_str).collect();
        self.group.ack(key, &done, true).await?;
        match failed {
            Some(e) => Err(e),
            None => Ok(events.len()),
        }
    }
}
