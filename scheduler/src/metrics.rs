//! The scheduler's Prometheus metrics at `GET /metrics` (OpenMetrics text, no auth, like every
//! scrape target in the fleet). Per pool, the autoscaling signals KEDA's Prometheus trigger reads:
//!
//! - `gantry_pool_desired_workers`: ⌈(waiting + in flight) ÷ slots per worker⌉, within the pool's
//!   `min_workers..=max_workers`;
//! - `gantry_queue_oldest_job_age_seconds`: the oldest waiting job's age;
//!
//! with the readings they come from (`gantry_pool_backlog_jobs`, `gantry_pool_in_flight_jobs`,
//! `gantry_pool_live_workers`), the credit settler's counters and backlog, what privacy work
//! removed (retention sweeps by data class, erasures by outcome), the API's requests by route
//! and status, whether Redis answers, and how old each hash list is: what the alert rules
//! (`helm/gantry/alerts/`) read.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::admission::pricing::CreditLabels;
use crate::config::{PoolConfig, SchedulerConfig};
use crate::placement::{PoolLoad, PoolLoads};

type FGauge = Gauge<f64, AtomicU64>;

/// API request duration buckets: 1 ms to 30 s (an enqueue is milliseconds; an erasure may wait
/// for running jobs to stop).
const HTTP_BUCKETS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// An API request's route (the pattern it matched, never the path with its ids) and method.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    /// The route pattern, e.g. `/v1/jobs/{id}`; `unmatched` for a path no route has.
    pub route: String,
    /// The HTTP method.
    pub method: String,
}

/// A request's route, method and status code.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// Route and method.
    #[prometheus(flatten)]
    pub route: RouteLabels,
    /// The response's status code.
    pub status: String,
}

/// A pool's queue-wait objective, and the histogram bucket (`le`) it falls on.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SloLabels {
    /// Pool.
    pub pool: String,
    /// The `le` of `gantry_job_queue_wait_seconds`'s bucket at the objective, as the workers
    /// write it (`60.0`), so PromQL can join the two (`label_replace` it into `le`).
    pub slo_bucket: String,
}

/// A hash list.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ListLabels {
    /// Its name (operators name a handful of lists).
    pub list: String,
    /// Its category (`csam`, `ncii`, …).
    pub category: String,
}

/// A pool label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PoolLabels {
    /// Pool.
    pub pool: String,
}

/// Labels of the trust-and-safety backlog gauges.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SafetyLabels {
    /// `reviews_pending`, `reports_queued`, `reports_awaiting_confirmation`, `reports_failed`.
    pub queue: String,
}

/// Labels of settled jobs: what credits are counted by, and the outcome.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SettleLabels {
    /// Provider, model, kind, plan (never tenant or user).
    #[prometheus(flatten)]
    pub credit: CreditLabels,
    /// `charged` or `refunded`.
    pub outcome: String,
}

/// A data class the retention sweeper removes from.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ClassLabels {
    /// `outputs`, `audit_entries` or `moderation_index`.
    pub class: String,
}

/// An erasure's outcome.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    /// `complete`, or `pending` (a running job had not stopped yet).
    pub outcome: String,
}

/// A webhook delivery attempt's endpoint and outcome.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WebhookLabels {
    /// The tenant.
    pub tenant: String,
    /// The endpoint id (a tenant has at most a handful).
    pub endpoint: String,
    /// `delivered`, `failed` (will retry), `gave_up` (retries over), `skipped` (endpoint gone
    /// or disabled).
    pub outcome: String,
}

/// Webhook delivery duration buckets: 5 ms to the 15 s timeout.
const WEBHOOK_BUCKETS: [f64; 11] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 15.0];

/// The scheduler's metrics.
#[derive(Debug)]
pub struct SchedulerMetrics {
    registry: Registry,
    desired: Family<PoolLabels, Gauge>,
    oldest: Family<PoolLabels, FGauge>,
    backlog: Family<PoolLabels, Gauge>,
    in_flight: Family<PoolLabels, Gauge>,
    live: Family<PoolLabels, Gauge>,
    dead: Family<PoolLabels, Gauge>,
    delayed: Family<PoolLabels, Gauge>,
    /// Jobs settled, by provider, model, kind, plan and outcome.
    pub settled: Family<SettleLabels, Counter>,
    /// Credits charged, by provider, model, kind and plan.
    pub credits_charged: Family<CreditLabels, Counter>,
    /// Items the retention sweeper removed, by data class.
    pub retention_removed: Family<ClassLabels, Counter>,
    /// Erasure requests answered, by outcome.
    pub erasures: Family<OutcomeLabels, Counter>,
    slo: Family<SloLabels, FGauge>,
    slo_target: Family<PoolLabels, FGauge>,
    unsettled: Family<PoolLabels, Gauge>,
    credit_lag: Family<PoolLabels, FGauge>,
    handoffs: Family<PoolLabels, Gauge>,
    handoff_lag: Family<PoolLabels, FGauge>,
    redis_up: Gauge,
    hashlist_age: Family<ListLabels, FGauge>,
    hashlist_hashes: Family<ListLabels, Gauge>,
    safety_backlog: Family<SafetyLabels, Gauge>,
    safety_oldest: Family<SafetyLabels, FGauge>,
    /// API requests answered, by route, method and status.
    pub http_requests: Family<RequestLabels, Counter>,
    /// API request durations, by route and method.
    pub http_duration: Family<RouteLabels, Histogram, fn() -> Histogram>,
    /// Webhook delivery attempts, by endpoint and outcome.
    pub webhook_deliveries: Family<WebhookLabels, Counter>,
    /// Webhook delivery attempt durations.
    pub webhook_duration: Histogram,
    /// How long the oldest due webhook delivery has waited past its due time.
    pub webhook_backlog_age: FGauge,
    /// Webhook deliveries due now.
    pub webhook_backlog: Gauge,
    /// Endpoints disabled for failing.
    pub webhook_disabled: Counter,
    /// SSE clients connected.
    pub sse_clients: Gauge,
}

impl Default for SchedulerMetrics {
    fn default() -> Self {
        let mut registry = Registry::default();
        let m = Self {
            desired: Family::default(),
            oldest: Family::default(),
            backlog: Family::default(),
            in_flight: Family::default(),
            live: Family::default(),
            dead: Family::default(),
            delayed: Family::default(),
            settled: Family::default(),
            credits_charged: Family::default(),
            retention_removed: Family::default(),
            erasures: Family::default(),
            slo: Family::default(),
            slo_target: Family::default(),
            unsettled: Family::default(),
            credit_lag: Family::default(),
            handoffs: Family::default(),
            handoff_lag: Family::default(),
            redis_up: Gauge::default(),
            hashlist_age: Family::default(),
            hashlist_hashes: Family::default(),
            safety_backlog: Family::default(),
            safety_oldest: Family::default(),
            http_requests: Family::default(),
            http_duration: Family::new_with_constructor(|| gantry_queue::exposition::histogram(HTTP_BUCKETS)),
            webhook_deliveries: Family::default(),
            webhook_duration: gantry_queue::exposition::histogram(WEBHOOK_BUCKETS),
            webhook_backlog_age: FGauge::default(),
            webhook_backlog: Gauge::default(),
            webhook_disabled: Counter::default(),
            sse_clients: Gauge::default(),
            registry: Registry::default(),
        };
        registry.register(
            "gantry_pool_desired_workers",
            "Workers the pool should run: (waiting + in flight) / slots per worker, within its bounds",
            m.desired.clone(),
        );
        registry.register(
            "gantry_queue_oldest_job_age_seconds",
            "Age of the pool's oldest waiting job",
            m.oldest.clone(),
        );
        registry.register("gantry_pool_backlog_jobs", "Jobs waiting or running", m.backlog.clone());
        registry.register("gantry_pool_in_flight_jobs", "Jobs running", m.in_flight.clone());
        registry.register("gantry_pool_live_workers", "Live, not draining workers", m.live.clone());
        registry.register(
            "gantry_pool_dead_letters",
            "Jobs in the pool's dead-letter queues",
            m.dead.clone(),
        );
        registry.register(
            "gantry_pool_delayed_jobs",
            "Jobs waiting for their run-at time",
            m.delayed.clone(),
        );
        registry.register(
            "gantry_jobs_settled",
            "Jobs whose credits were settled",
            m.settled.clone(),
        );
        registry.register(
            "gantry_credits_charged",
            "Credits charged for finished jobs",
            m.credits_charged.clone(),
        );
        registry.register(
            "gantry_retention_removed",
            "Items the retention sweeper removed, by data class",
            m.retention_removed.clone(),
        );
        registry.register(
            "gantry_user_erasures",
            "User-data erasure requests answered, by outcome",
            m.erasures.clone(),
        );
        registry.register(
            "gantry_pool_queue_wait_slo_seconds",
            "The pool's queue-wait objective: a job should start within it",
            m.slo.clone(),
        );
        registry.register(
            "gantry_pool_queue_wait_slo_target_ratio",
            "The share of the pool's jobs that should start within its queue-wait objective",
            m.slo_target.clone(),
        );
        registry.register(
            "gantry_pool_unsettled_credit_events",
            "Credit events of finished jobs the settler has not settled yet",
            m.unsettled.clone(),
        );
        registry.register(
            "gantry_credit_settlement_lag_seconds",
            "Age of the pool's oldest unsettled credit event (0 when none)",
            m.credit_lag.clone(),
        );
        registry.register(
            "gantry_pipeline_handoffs_pending",
            "Pipeline hand-offs from this pool's steps to children in other pools the mover has not applied yet",
            m.handoffs.clone(),
        );
        registry.register(
            "gantry_pipeline_handoff_lag_seconds",
            "Age of the pool's oldest pipeline hand-off not applied yet (0 when none): a child step waits that long",
            m.handoff_lag.clone(),
        );
        registry.register(
            "gantry_redis_up",
            "1 when the scheduler's last reading of every pool from Redis succeeded, else 0",
            m.redis_up.clone(),
        );
        registry.register(
            "gantry_hashlist_age_seconds",
            "Time since the current version of a hash list was published",
            m.hashlist_age.clone(),
        );
        registry.register(
            "gantry_hashlist_hashes",
            "Hashes (PDQ, MD5 and SHA-256 together) in the current version of a hash list",
            m.hashlist_hashes.clone(),
        );
        registry.register(
            "gantry_safety_backlog",
            "Trust-and-safety work waiting for someone: reviews pending, reports queued, awaiting a reviewer's confirmation, or failed",
            m.safety_backlog.clone(),
        );
        registry.register(
            "gantry_safety_oldest_age_seconds",
            "How long the oldest item of a trust-and-safety backlog has waited",
            m.safety_oldest.clone(),
        );
        registry.register(
            "gantry_http_requests",
            "API requests answered, by route, method and status",
            m.http_requests.clone(),
        );
        registry.register(
            "gantry_http_request_duration_seconds",
            "API request duration, by route and method",
            m.http_duration.clone(),
        );
        registry.register(
            "gantry_webhook_deliveries",
            "Webhook delivery attempts, by tenant, endpoint and outcome",
            m.webhook_deliveries.clone(),
        );
        registry.register(
            "gantry_webhook_delivery_duration_seconds",
            "Webhook delivery attempt duration (to the response's end or the error)",
            m.webhook_duration.clone(),
        );
        registry.register(
            "gantry_webhook_backlog_age_seconds",
            "How long the oldest due webhook delivery has waited past its due time (0 when none)",
            m.webhook_backlog_age.clone(),
        );
        registry.register(
            "gantry_webhook_backlog_deliveries",
            "Webhook deliveries due now and not yet sent",
            m.webhook_backlog.clone(),
        );
        registry.register(
            "gantry_webhook_endpoints_disabled",
            "Webhook endpoints disabled because every delivery failed for too long",
            m.webhook_disabled.clone(),
        );
        registry.register(
            "gantry_sse_clients",
            "Event-stream (SSE) clients connected to this scheduler",
            m.sse_clients.clone(),
        );
        // Both families are shown from the start (at 0), so their series exist before the
        // first sweep or erasure.
        for class in ["outputs", "audit_entries", "moderation_index"] {
            m.retention_removed
                .get_or_create(&ClassLabels { class: class.into() })
                .inc_by(0);
        }
        for outcome in ["complete", "pending"] {
            m.erasures
                .get_or_create(&OutcomeLabels {
                    outcome: outcome.into(),
                })
                .inc_by(0);
        }
        Self { registry, ..m }
    }
}

/// The desired worker count of a pool with `load`.
pub fn desired_workers(p: &PoolConfig, load: &PoolLoad) -> u32 {
    let slots = u64::from(p.slots_per_worker.max(1));
    let want = load.backlog.div_ceil(slots).min(u64::from(u32::MAX)) as u32;
    want.clamp(p.min_workers, p.max_workers.max(p.min_workers))
}

impl SchedulerMetrics {
    /// Sets the hash-list gauges from the lists' current versions (a list removed since is
    /// dropped); `None` when they could not be read, which leaves the last readings.
    pub fn observe_hashlists(&self, lists: Option<&[gantry_safety::ListMeta]>, now_ms: u64) {
        let Some(lists) = lists else { return };
        self.hashlist_age.clear();
        self.hashlist_hashes.clear();
        for l in lists {
            let labels = ListLabels {
                list: l.name.clone(),
                category: l.category.clone(),
            };
            let age = now_ms.saturating_sub(l.updated_at_ms) as f64 / 1000.0;
            self.hashlist_age.get_or_create(&labels).set(age);
            let n = l.pdq.saturating_add(l.md5).saturating_add(l.sha256);
            self.hashlist_hashes
                .get_or_create(&labels)
                .set(i64::try_from(n).unwrap_or(i64::MAX));
        }
    }

    /// Sets the trust-and-safety backlog gauges: the reviews pending and the reports per status
    /// that needs someone, each with its oldest item's age (0 when empty).
    pub fn observe_safety(
        &self,
        reviews: (u64, Option<u64>),
        reports: &[(gantry_safety::ReportStatus, u64, Option<u64>)],
        now_ms: u64,
    ) {
        let set = |queue: &str, (n, oldest): (u64, Option<u64>)| {
            let labels = SafetyLabels { queue: queue.into() };
            self.safety_backlog
                .get_or_create(&labels)
                .set(i64::try_from(n).unwrap_or(i64::MAX));
            let age = oldest.map_or(0.0, |t| now_ms.saturating_sub(t) as f64 / 1000.0);
            self.safety_oldest.get_or_create(&labels).set(age);
        };
        set("reviews_pending", reviews);
        for (status, n, oldest) in reports {
            set(&format!("reports_{}", status.as_str()), (*n, *oldest));
        }
    }

    /// Counts one API request.
    pub fn observe_request(&self, route: RouteLabels, status: u16, elapsed: std::time::Duration) {
        self.http_duration.get_or_create(&route).observe(elapsed.as_secs_f64());
        self.http_requests
            .get_or_create(&RequestLabels {
                route,
                status: status.to_string(),
            })
            .inc();
    }

    /// The registry as a scraper whose `Accept` is `accept` asks (content type, body), with the
    /// pool gauges set from the latest loads.
    pub fn render(&self, cfg: &SchedulerConfig, loads: &PoolLoads, accept: Option<&str>) -> (&'static str, Vec<u8>) {
        self.redis_up.set(i64::from(loads.redis_up()));
        let all = loads.all();
        for (name, p) in &cfg.pools {
            let load = all.get(name).copied().unwrap_or_default();
            let l = PoolLabels { pool: name.clone() };
            self.desired.get_or_create(&l).set(i64::from(desired_workers(p, &load)));
            self.oldest.get_or_create(&l).set(load.oldest_age_secs);
            self.backlog.get_or_create(&l).set(load.backlog as i64);
            self.in_flight.get_or_create(&l).set(load.in_flight as i64);
            self.live.get_or_create(&l).set(i64::from(load.live_workers));
            self.dead.get_or_create(&l).set(load.dead as i64);
            self.delayed.get_or_create(&l).set(load.delayed as i64);
            let slo = SloLabels {
                pool: name.clone(),
                slo_bucket: format!("{:?}", p.queue_wait_slo_secs),
            };
            self.slo.get_or_create(&slo).set(p.queue_wait_slo_secs);
            self.slo_target.get_or_create(&l).set(p.queue_wait_slo_target);
            self.unsettled.get_or_create(&l).set(load.unsettled_credits as i64);
            self.credit_lag.get_or_create(&l).set(load.credit_lag_secs);
            self.handoffs
                .get_or_create(&l)
                .set(i64::try_from(load.handoffs_pending).unwrap_or(i64::MAX));
            self.handoff_lag.get_or_create(&l).set(load.handoff_lag_secs);
        }
        gantry_queue::exposition::render(&self.registry, accept)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn desired_workers_follow_the_backlog_within_bounds() {
        let cfg = SchedulerConfig::demo();
        let Some(p) = cfg.pools.values().next() else {
            panic!("demo has pools")
        };
        let p = PoolConfig {
            slots_per_worker: 4,
            min_workers: 1,
            max_workers: 5,
            ..p.clone()
        };
        let at = |backlog| {
            desired_workers(
                &p,
                &PoolLoad {
                    backlog,
                    ..Default::default()
                },
            )
        };
        assert_eq!((at(0), at(4), at(5), at(17), at(1000)), (1, 1, 2, 5, 5));
    }
}
