//! Turning job events into webhook deliveries, and sending them.
//!
//! - **Dispatch:** every scheduler replica reads the pools' events streams through one consumer
//!   group (`webhooks`), expands each event into one delivery per endpoint of its tenant that
//!   wants its type, creates them (each once: the delivery id is the event's place and the
//!   endpoint, so an event read again after a crash creates nothing new), then acks the event.
//!   Events another replica left pending are taken over, as the credit settler does.
//! - **Sending:** due deliveries are leased (their due time moved a lease ahead), signed per
//!   Standard Webhooks and POSTed through the SSRF-guarded client, with connect and total
//!   timeouts and a cap on the answer read. A 2xx delivers. Anything else retries with
//!   exponential backoff and jitter, never before a `Retry-After`, for `retry_for_secs`
//!   after the first attempt. An endpoint whose every delivery failed for
//!   `disable_after_secs` is disabled, with the reason stored on it and an audit entry.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use gantry_core::time::now_ms;
use gantry_providers::fetch::GuardedClient;
use gantry_queue::events::JobEvent;
use gantry_queue::{Pool, QueueError, RedisConn};
use redis::streams::StreamId;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

use super::signing;
use super::store::{AttemptOutcome, Disabled, DueDelivery, Endpoint, NewDelivery, WebhookStore};
use crate::config::WebhooksConfig;
use crate::events::EventPayload;
use crate::metrics::{SchedulerMetrics, WebhookLabels};
use crate::stream_group::{Handler, Start, StreamGroup};

/// The consumer group webhooks read events through.
const GROUP: &str = "webhooks";
/// How long a sender holds a delivery before another may take it (past the request timeout).
const LEASE_MS: u64 = 60_000;

/// The delivery id of `event` to endpoint `ep`: stable across retries and re-reads.
pub fn delivery_id(e: &JobEvent, ep: &str) -> String {
    format!("msg_{}_{}_{}_{ep}", e.pool.as_str(), e.pos.ms, e.pos.seq)
}

/// Reads events and creates deliveries. See the module docs.
#[derive(Debug)]
pub struct Dispatcher {
    group: StreamGroup,
    store: WebhookStore,
    /// Each events stream's key and its pool.
    streams: Vec<(String, Pool)>,
    wake: Arc<Notify>,
}

impl Dispatcher {
    /// A dispatcher over `pools`' events streams; `wake` is notified when deliveries are made.
    /// Its group starts at the streams' end: endpoints receive what happens after the
    /// scheduler first ran, not the retained past (replay reaches the deliveries made since).
    pub fn new(conn: RedisConn, store: WebhookStore, pools: Vec<Pool>, wake: Arc<Notify>) -> Self {
        Self {
            group: StreamGroup::new(conn, GROUP, Start::End),
            store,
            streams: pools
                .into_iter()
                .map(|p| (gantry_queue::events::events_key(&p), p))
                .collect(),
            wake,
        }
    }

    /// Dispatches until `stop`.
    pub async fn run(self, stop: CancellationToken) {
        let keys: Vec<String> = self.streams.iter().map(|(k, _)| k.clone()).collect();
        self.group.run(&keys, &self, "dispatching webhooks", stop).await;
    }
}

impl Handler for Dispatcher {
    /// Creates the deliveries of `entries`, then acks them (the stream keeps them for SSE).
    async fn apply(&self, key: &str, entries: Vec<StreamId>) -> Result<usize, QueueError> {
        if entries.is_empty() {
            return Ok(0);
        }
        let Some((_, pool)) = self.streams.iter().find(|(k, _)| k == key) else {
            return Ok(0);
        };
        let mut deliveries = Vec::new();
        // Each tenant's endpoints, read once per batch: an endpoint registered a moment ago
        // receives the next event, never a cached absence.
        let mut endpoints: HashMap<String, Vec<Endpoint>> = HashMap::new();
        for entry in &entries {
            let Some(e) = JobEvent::parse(pool, entry) else {
                tracing::error!(stream = %key, event = %entry.id, "unreadable job event skipped");
                continue;
            };
            if !endpoints.contains_key(&e.tenant) {
                let eps = self.store.endpoints(&e.tenant).await?;
                endpoints.insert(e.tenant.clone(), eps);
            }
            for ep in endpoints.get(&e.tenant).into_iter().flatten() {
                if ep.wants(e.event_type) {
                    deliveries.push(NewDelivery {
                        id: delivery_id(&e, &ep.id),
                        tenant: e.tenant.clone(),
                        endpoint: ep.id.clone(),
                        event_type: e.event_type.as_str().to_owned(),
                        job: e.job.to_string(),
                        body: EventPayload::of(&e).to_json(),
                        traceparent: e.traceparent.clone(),
                    });
                }
            }
        }
        if self.store.enqueue(&deliveries).await? > 0 {
            self.wake.notify_one();
        }
        // Acked, never deleted: the SSE routes read the same stream.
        let ids: Vec<&str> = entries.iter().map(|e| e.id.as_str()).collect();
        self.group.ack(key, &ids, false).await?;
        Ok(entries.len())
    }
}

/// Sends due deliveries. See the module docs.
#[derive(Debug)]
pub struct Sender {
    store: WebhookStore,
    http: GuardedClient,
    cfg: WebhooksConfig,
    metrics: Arc<SchedulerMetrics>,
    audit: gantry_safety::AuditLog,
    wake: Arc<Notify>,
}

/// What one POST came to.
struct Sent {
    outcome: AttemptOutcome,
    latency: Duration,
}

impl Sender {
    /// A sender under `cfg`.
    pub fn new(
        store: WebhookStore,
        cfg: WebhooksConfig,
        metrics: Arc<SchedulerMetrics>,
        audit: gantry_safety::AuditLog,
        wake: Arc<Notify>,
    ) -> Result<Self, reqwest::Error> {
        let http = GuardedClient::new(cfg.allow.clone(), Duration::from_secs(cfg.connect_timeout_secs.max(1)))?;
        Ok(Self {
            store,
            http,
            cfg,
            metrics,
            audit,
            wake,
        })
    }

    /// Sends until `stop`.
    pub async fn run(self, stop: CancellationToken) {
        let this = Arc::new(self);
        while !stop.is_cancelled() {
            let n = this.cfg.concurrency.max(1);
            let due = match this.store.claim(n, LEASE_MS).await {
                Ok(d) => d,
                Err(e) => {
                    tracing::warn!(error = %e, "taking due webhook deliveries failed; will retry");
                    Vec::new()
                }
            };
            let got = due.len();
            futures::stream::iter(due)
                .for_each_concurrent(n, |d| {
                    let this = this.clone();
                    async move { this.deliver(d).await }
                })
                .await;
            if got < n {
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_millis(250)) => {}
                    () = this.wake.notified() => {}
                    () = stop.cancelled() => {}
                }
            }
        }
    }

    /// One attempt at `d`, in a span of the job's trace when the job was traced.
    async fn deliver(&self, d: DueDelivery) {
        let span = tracing::info_span!(
            "webhook.deliver",
            otel.kind = "client",
            delivery = %d.delivery.id,
            endpoint = %d.delivery.endpoint,
            event_type = %d.delivery.event_type,
            attempt = d.attempts + 1,
            outcome = tracing::field::Empty,
            http.response.status_code = tracing::field::Empty,
        );
        if let Some(tp) = &d.delivery.traceparent {
            gantry_queue::trace::set_parent(&span, tp);
        }
        self.attempt(d).instrument(span).await;
    }

    async fn attempt(&self, d: DueDelivery) {
        let del = &d.delivery;
        let ep = match self.store.endpoint(&del.tenant, &del.endpoint).await {
            Ok(ep) => ep,
            Err(e) => {
                tracing::warn!(error = %e, delivery = %del.id, "reading a webhook endpoint failed; will retry");
                return;
            }
        };
        let now = now_ms();
        let sent = match &ep {
            None => Sent {
                outcome: AttemptOutcome::Skipped {
                    reason: "the endpoint was deleted".into(),
                },
                latency: Duration::ZERO,
            },
            Some(ep) if ep.disabled.is_some() => Sent {
                outcome: AttemptOutcome::Skipped {
                    reason: "the endpoint is disabled".into(),
                },
                latency: Duration::ZERO,
            },
            Some(ep) => self.post(ep, &d, now).await,
        };
        let outcome_label = match &sent.outcome {
            AttemptOutcome::Delivered { .. } => "delivered",
            AttemptOutcome::Failed {
                retry_at_ms: Some(_), ..
            } => "failed",
            AttemptOutcome::Failed { retry_at_ms: None, .. } => "gave_up",
            AttemptOutcome::Skipped { .. } => "skipped",
        };
        let span = tracing::Span::current();
        span.record("outcome", outcome_label);
        if let AttemptOutcome::Delivered { status }
        | AttemptOutcome::Failed {
            status: Some(status), ..
        } = &sent.outcome
        {
            span.record("http.response.status_code", status);
        }
        self.metrics
            .webhook_deliveries
            .get_or_create(&WebhookLabels {
                tenant: del.tenant.clone(),
                endpoint: del.endpoint.clone(),
                outcome: outcome_label.to_owned(),
            })
            .inc();
        let latency = (!matches!(sent.outcome, AttemptOutcome::Skipped { .. })).then(|| {
            self.metrics.webhook_duration.observe(sent.latency.as_secs_f64());
            sent.latency.as_millis() as u64
        });
        tracing::info!(
            delivery = %del.id,
            tenant = %del.tenant,
            endpoint = %del.endpoint,
            event_type = %del.event_type,
            attempt = d.attempts + 1,
            outcome = outcome_label,
            latency_ms = latency.unwrap_or(0),
            "webhook delivery attempt"
        );
        if let Err(e) = self.store.record(&del.id, &sent.outcome, latency).await {
            tracing::warn!(error = %e, delivery = %del.id, "recording a webhook attempt failed; it will be sent again");
        }
        // Only a failure, or a success that ends a run of failures, changes the endpoint: a
        // delivery to a healthy endpoint costs no second read.
        let changes = match (&ep, &sent.outcome) {
            (Some(_), AttemptOutcome::Failed { .. }) => true,
            (Some(e), AttemptOutcome::Delivered { .. }) => e.failing_since_ms.is_some(),
            _ => false,
        };
        if changes {
            self.track_endpoint(&del.tenant, &del.endpoint, &sent.outcome, now)
                .await;
        }
    }

    async fn post(&self, ep: &Endpoint, d: &DueDelivery, now: u64) -> Sent {
        let del = &d.delivery;
        let ts = now / 1000;
        let sig = signing::signature_header(ep.signing_secrets(now), &del.id, ts, del.body.as_bytes());
        let began = Instant::now();
        let req = match self.http.post(&ep.url) {
            Ok(r) => r,
            Err(why) => {
                return Sent {
                    outcome: self.failed(d, None, format!("refused to send: {why}"), None, now),
                    latency: Duration::ZERO,
                };
            }
        };
        let res = req
            .timeout(Duration::from_secs(self.cfg.timeout_secs.max(1)))
            .header("content-type", "application/json")
            .header("user-agent", concat!("gantry-webhooks/", env!("CARGO_PKG_VERSION")))
            .header("webhook-id", &del.id)
            .header("webhook-timestamp", ts.to_string())
            .header("webhook-signature", sig)
            .body(del.body.clone())
            .send()
            .await;
        let outcome = match res {
            Err(e) => self.failed(d, None, error_chain(&e), None, now),
            Ok(mut resp) => {
                let status = resp.status().as_u16();
                let retry_after = resp
                    .headers()
                    .get(reqwest::header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.trim().parse::<u64>().ok());
                // Read (a bounded part of) the answer, so the connection can be reused.
                let mut read = 0usize;
                while read < self.cfg.max_response_bytes {
                    match resp.chunk().await {
                        Ok(Some(c)) => read += c.len(),
                        _ => break,
                    }
                }
                if (200..300).contains(&status) {
                    AttemptOutcome::Delivered { status }
                } else {
                    self.failed(d, Some(status), format!("HTTP {status}"), retry_after, now)
                }
            }
        };
        Sent {
            outcome,
            latency: began.elapsed(),
        }
    }

    /// A failed attempt: when to try again (backoff with jitter, at least `Retry-After`), or
    /// not at all once `retry_for_secs` have passed since the delivery was created.
    fn failed(
        &self,
        d: &DueDelivery,
        status: Option<u16>,
        error: String,
        retry_after_secs: Option<u64>,
        now: u64,
    ) -> AttemptOutcome {
        let retry_at_ms = next_attempt(&self.cfg, d.attempts + 1, retry_after_secs, now)
            .filter(|_| now.saturating_sub(d.created_ms) < self.cfg.retry_for_secs.saturating_mul(1000));
        AttemptOutcome::Failed {
            status,
            error,
            retry_at_ms,
        }
    }

    /// Keeps the endpoint's run of failures: cleared by a success, started by a first failure,
    /// and the endpoint disabled once it has lasted `disable_after_secs`. Decided on the
    /// endpoint as stored now (so a concurrent rotation or re-enabling is not undone), and the
    /// disabling claimed in Redis, so concurrent failures (or replicas) disable, count and audit
    /// it once.
    async fn track_endpoint(&self, tenant: &str, id: &str, outcome: &AttemptOutcome, now: u64) {
        let current = match self.store.endpoint(tenant, id).await {
            Ok(Some(c)) => c,
            Ok(None) => return,
            Err(e) => {
                tracing::warn!(error = %e, "reading a webhook endpoint failed");
                return;
            }
        };
        let mut next = current.clone();
        match outcome {
            AttemptOutcome::Delivered { .. } => next.failing_since_ms = None,
            AttemptOutcome::Failed { error, .. } => match current.failing_since_ms {
                None => next.failing_since_ms = Some(now),
                Some(since)
                    if current.disabled.is_none()
                        && now.saturating_sub(since) >= self.cfg.disable_after_secs.saturating_mul(1000) =>
                {
                    match self.store.claim_disable(tenant, id).await {
                        Ok(true) => {
                            let reason = format!(
                                "every delivery failed since {} (last: {error}); disabled after {} s of failures",
                                gantry_core::time::rfc3339_ms(since),
                                self.cfg.disable_after_secs
                            );
                            tracing::warn!(tenant = %tenant, endpoint = %id, %reason, "webhook endpoint disabled");
                            self.metrics.webhook_disabled.inc();
                            let entry = gantry_safety::AuditEntry::new("scheduler/webhooks", "webhook.disabled", id)
                                .details(serde_json::json!({"tenant": tenant, "reason": reason}));
                            if let Err(e) = self.audit.record(&entry).await {
                                tracing::warn!(error = %e, "auditing a disabled webhook endpoint failed");
                            }
                            next.disabled = Some(Disabled { at_ms: now, reason });
                        }
                        // Another attempt is disabling it.
                        Ok(false) => {}
                        Err(e) => tracing::warn!(error = %e, "claiming a webhook endpoint's disabling failed"),
                    }
                }
                Some(_) => {}
            },
            AttemptOutcome::Skipped { .. } => {}
        }
        if next != current
            && let Err(e) = self.store.put(tenant, &next).await
        {
            tracing::warn!(error = %e, "updating a webhook endpoint failed");
        }
    }
}

/// When attempt `attempt` (from 1) that failed at `now` is tried again: the base delay doubled
/// per attempt up to the cap, jittered to between half and all of it, and never before a
/// `Retry-After` (capped at a day). `None` never happens here; the caller decides when to stop.
pub fn next_attempt(cfg: &WebhooksConfig, attempt: u32, retry_after_secs: Option<u64>, now: u64) -> Option<u64> {
    let cap = cfg.backoff_cap_secs.saturating_mul(1000).max(cfg.backoff_base_ms);
    let exp = cfg
        .backoff_base_ms
        .saturating_mul(1u64 << attempt.saturating_sub(1).min(32))
        .min(cap);
    let jittered = exp / 2 + rand::random_range(0..=exp / 2);
    let floor = retry_after_secs.map_or(0, |s| s.min(86_400).saturating_mul(1000));
    Some(now + jittered.max(floor))
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(inner) = src {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        src = inner.source();
    }
    s.chars().take(300).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_back_off_exponentially_with_jitter_and_honour_retry_after() {
        let cfg = WebhooksConfig::default();
        for attempt in 1..=20u32 {
            let exp = (5_000u64 << (attempt - 1).min(32)).min(3_600_000);
            let at = next_attempt(&cfg, attempt, None, 1_000).unwrap_or(0) - 1_000;
            assert!((exp / 2..=exp).contains(&at), "attempt {attempt}: {at} vs {exp}");
        }
        let at = next_attempt(&cfg, 1, Some(120), 0).unwrap_or(0);
        assert_eq!(at, 120_000, "Retry-After beats a shorter backoff");
        let at = next_attempt(&cfg, 1, Some(10 * 86_400), 0).unwrap_or(0);
        assert_eq!(at, 86_400_000, "a Retry-After is honoured up to a day");
        // Enough attempts fit in the first day that none waits more than the cap.
        let mut t = 0;
        let mut n = 0;
        while t < 86_400_000 {
            n += 1;
            t = next_attempt(&cfg, n, None, t).unwrap_or(u64::MAX);
        }
        assert!(n > 20, "{n} attempts in 24 h");
    }
}
