//! Webhook endpoints and deliveries in Redis, every key under the `{webhooks}` hash tag so each
//! script touches one Cluster slot.
//!
//! ```text
//! gantry:{webhooks}:ep:<tenant>           hash  endpoint id -> endpoint (JSON, secrets included)
//! gantry:{webhooks}:due                   zset  delivery id -> when it is next due (ms)
//! gantry:{webhooks}:d:<delivery>          hash  tenant, endpoint, type, job, body, attempts, status, …
//! gantry:{webhooks}:log:<tenant>:<ep>     zset  delivery id -> created (ms): the delivery log
//! ```

use std::sync::LazyLock;

use gantry_queue::events::EventType;
use gantry_queue::{QueueError, RedisConn};
use redis::Script;
use serde::{Deserialize, Serialize};

const PREFIX: &str = "gantry:{webhooks}:";
/// Deliveries kept in each endpoint's log (older ones leave it, records and all).
pub const LOG_LEN: usize = 10_000;
/// How long a finished delivery's record is kept.
const FINISHED_TTL_SECS: u64 = 7 * 86_400;

static ENQUEUE: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("scripts/enqueue.lua")));
static CLAIM: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("scripts/claim.lua")));

/// A signing secret and, once a newer one replaced it, when it stops being used.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Secret {
    /// `whsec_…`.
    pub value: String,
    /// Ms since the epoch after which it no longer signs; `None` while it is the current one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_ms: Option<u64>,
}

/// Why an endpoint stopped receiving deliveries.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Disabled {
    /// When (ms since the epoch).
    pub at_ms: u64,
    /// Why, for the operator and the tenant.
    pub reason: String,
}

/// Where an endpoint was defined.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// `POST /v1/webhooks`.
    Api,
    /// The scheduler's configuration (changed there, not through the API).
    Config,
}

/// A tenant's webhook endpoint.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoint {
    /// `ep_<ulid>`, or `cfg_<name>` for one from the configuration.
    pub id: String,
    /// Where deliveries are POSTed.
    pub url: String,
    /// The event types it receives; empty means all.
    #[serde(default)]
    pub types: Vec<EventType>,
    /// Its secrets, the current one last.
    pub secrets: Vec<Secret>,
    /// When it was registered (ms).
    pub created_ms: u64,
    /// Where it was defined.
    pub source: Source,
    /// A note of the tenant's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Set when it was disabled for failing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disabled: Option<Disabled>,
    /// When its current run of failures began (cleared by a success).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failing_since_ms: Option<u64>,
}

impl Endpoint {
    /// Whether it wants events of `t`.
    pub fn wants(&self, t: EventType) -> bool {
        self.disabled.is_none() && (self.types.is_empty() || self.types.contains(&t))
    }

    /// The secrets that sign at `now_ms`.
    pub fn signing_secrets(&self, now_ms: u64) -> impl Iterator<Item = &str> {
        self.secrets
            .iter()
            .filter(move |s| s.expires_ms.is_none_or(|e| e > now_ms))
            .map(|s| s.value.as_str())
    }
}

/// A delivery to make.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewDelivery {
    /// Its id (the `webhook-id`), the same on every attempt.
    pub id: String,
    /// The tenant.
    pub tenant: String,
    /// The endpoint.
    pub endpoint: String,
    /// The event's type.
    pub event_type: String,
    /// The job.
    pub job: String,
    /// The JSON body.
    pub body: String,
    /// The trace context of the job the event is about (its `traceparent`), when it was
    /// traced: each attempt's span joins that trace. Never sent.
    pub traceparent: Option<String>,
}

/// A delivery taken to send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DueDelivery {
    /// What it is.
    pub delivery: NewDelivery,
    /// Attempts made so far.
    pub attempts: u32,
    /// When it was created (ms).
    pub created_ms: u64,
}

/// How one attempt went.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AttemptOutcome {
    /// A 2xx.
    Delivered {
        /// The status.
        status: u16,
    },
    /// Anything else; `retry_at_ms` is when to try again, `None` when retries are over.
    Failed {
        /// The status, when one came.
        status: Option<u16>,
        /// What went wrong.
        error: String,
        /// The next attempt.
        retry_at_ms: Option<u64>,
    },
    /// Not sent: its endpoint is gone or disabled.
    Skipped {
        /// Why.
        reason: String,
    },
}

/// A delivery as its log shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DeliveryView {
    /// Its id (the `webhook-id` header).
    pub id: String,
    /// The event type.
    pub event_type: String,
    /// The job.
    pub job_id: String,
    /// `pending`, `delivered`, `failed` (retries over), `skipped`.
    pub status: String,
    /// Attempts made.
    pub attempts: u32,
    /// The last attempt's HTTP status.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_status: Option<u16>,
    /// The last attempt's error.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// The last attempt's latency, ms.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<u64>,
    /// Created (ms since the epoch).
    pub created_ms: u64,
    /// The next attempt (ms), while pending.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_attempt_ms: Option<u64>,
}

/// Endpoints and deliveries. With data keys, signing secrets are sealed at rest (AES-256-GCM-SIV,
/// bound to the tenant and endpoint), as job payloads are.
#[derive(Clone, Debug)]
pub struct WebhookStore {
    conn: RedisConn,
    keys: Option<gantry_queue::seal::Keyring>,
}

/// What a sealed secret is bound to.
fn secret_context(tenant: &str, ep: &str) -> Vec<u8> {
    format!("gantry-webhook-secret/{}/{tenant}/{ep}", tenant.len()).into_bytes()
}

fn ep_key(tenant: &str) -> String {
    format!("{PREFIX}ep:{tenant}")
}

fn d_key(id: &str) -> String {
    format!("{PREFIX}d:{id}")
}

fn log_key(tenant: &str, ep: &str) -> String {
    format!("{PREFIX}log:{tenant}:{ep}")
}

const DUE: &str = "gantry:{webhooks}:due";

impl WebhookStore {
    /// Over `conn`; secrets sealed with `keys` when there are keys.
    pub fn new(conn: RedisConn, keys: Option<gantry_queue::seal::Keyring>) -> Self {
        Self { conn, keys }
    }

    /// An endpoint as stored: its secrets sealed (with keys).
    fn sealed(&self, tenant: &str, ep: &Endpoint) -> Result<Endpoint, QueueError> {
        let mut out = ep.clone();
        if let Some(keys) = &self.keys {
            let ctx = secret_context(tenant, &ep.id);
            for s in &mut out.secrets {
                if !gantry_queue::seal::is_sealed_text(&s.value) {
                    s.value = keys
                        .seal_text(&s.value, &ctx)
                        .map_err(|e| QueueError::Protocol(format!("sealing a webhook secret: {e}")))?;
                }
            }
        }
        Ok(out)
    }

    /// An endpoint as read: its secrets opened; `None` (logged) when one does not open.
    fn opened(&self, tenant: &str, mut ep: Endpoint) -> Option<Endpoint> {
        let ctx = secret_context(tenant, &ep.id);
        for s in &mut ep.secrets {
            if gantry_queue::seal::is_sealed_text(&s.value) {
                match gantry_queue::seal::open_text(&s.value, &ctx, self.keys.as_ref()) {
                    Ok(plain) => s.value = plain,
                    Err(e) => {
                        tracing::error!(tenant, endpoint = %ep.id, error = %e, "a webhook secret does not open; endpoint skipped");
                        return None;
                    }
                }
            }
        }
        Some(ep)
    }

    /// The tenant's endpoints (unreadable entries are logged and left out).
    pub async fn endpoints(&self, tenant: &str) -> Result<Vec<Endpoint>, QueueError> {
        let mut c = self.conn.clone();
        let all: Vec<(String, String)> = redis::cmd("HGETALL").arg(ep_key(tenant)).query_async(&mut c).await?;
        let mut out: Vec<Endpoint> = all
            .into_iter()
            .filter_map(|(id, json)| match serde_json::from_str(&json) {
                Ok(e) => self.opened(tenant, e),
                Err(e) => {
                    tracing::error!(tenant, endpoint = %id, error = %e, "unreadable webhook endpoint");
                    None
                }
            })
            .collect();
        out.sort_by(|a, b| a.created_ms.cmp(&b.created_ms).then(a.id.cmp(&b.id)));
        Ok(out)
    }

    /// One endpoint.
    pub async fn endpoint(&self, tenant: &str, id: &str) -> Result<Option<Endpoint>, QueueError> {
        let mut c = self.conn.clone();
        let json: Option<String> = redis::cmd("HGET")
            .arg(ep_key(tenant))
            .arg(id)
            .query_async(&mut c)
            .await?;
        Ok(json
            .and_then(|j| serde_json::from_str(&j).ok())
            .and_then(|e| self.opened(tenant, e)))
    }

    /// Stores (creates or replaces) an endpoint.
    pub async fn put(&self, tenant: &str, ep: &Endpoint) -> Result<(), QueueError> {
        let json = serde_json::to_string(&self.sealed(tenant, ep)?).map_err(|e| QueueError::Protocol(e.to_string()))?;
        let mut c = self.conn.clone();
        redis::cmd("HSET")
            .arg(ep_key(tenant))
            .arg(&ep.id)
            .arg(json)
            .query_async::<()>(&mut c)
            .await?;
        Ok(())
    }

    /// Deletes an endpoint and its log; its pending deliveries are dropped when they come due.
    pub async fn delete(&self, tenant: &str, id: &str) -> Result<bool, QueueError> {
        let mut c = self.conn.clone();
        let (n, _): (u64, u64) = redis::pipe()
            .atomic()
            .cmd("HDEL")
            .arg(ep_key(tenant))
            .arg(id)
            .cmd("DEL")
            .arg(log_key(tenant, id))
            .query_async(&mut c)
            .await?;
        Ok(n > 0)
    }

    /// Whether this caller is the one to disable endpoint `ep` now: the first to ask within
    /// five minutes (concurrent failing attempts, or replicas, all reach the threshold).
    pub async fn claim_disable(&self, tenant: &str, ep: &str) -> Result<bool, QueueError> {
        let mut c = self.conn.clone();
        let set: Option<String> = redis::cmd("SET")
            .arg(format!("{PREFIX}disabling:{tenant}:{ep}"))
            .arg(1)
            .arg("NX")
            .arg("EX")
            .arg(300)
            .query_async(&mut c)
            .await?;
        Ok(set.is_some())
    }

    /// Forgets a disabling claim (the endpoint was re-enabled).
    pub async fn clear_disable(&self, tenant: &str, ep: &str) -> Result<(), QueueError> {
        let mut c = self.conn.clone();
        redis::cmd("DEL")
            .arg(format!("{PREFIX}disabling:{tenant}:{ep}"))
            .query_async::<()>(&mut c)
            .await?;
        Ok(())
    }

    /// Creates deliveries not created before; returns how many were new.
    pub async fn enqueue(&self, deliveries: &[NewDelivery]) -> Result<u64, QueueError> {
        if deliveries.is_empty() {
            return Ok(0);
        }
        let mut inv = ENQUEUE.prepare_invoke();
        inv.key(PREFIX).arg(LOG_LEN);
        for d in deliveries {
            inv.arg(&d.id)
                .arg(&d.tenant)
                .arg(&d.endpoint)
                .arg(&d.event_type)
                .arg(&d.job)
                .arg(&d.body)
                .arg(d.traceparent.as_deref().unwrap_or_default());
        }
        let mut c = self.conn.clone();
        Ok(inv.invoke_async(&mut c).await?)
    }

    /// Takes up to `n` due deliveries, leased for `lease_ms`.
    pub async fn claim(&self, n: usize, lease_ms: u64) -> Result<Vec<DueDelivery>, QueueError> {
        let mut inv = CLAIM.prepare_invoke();
        inv.key(PREFIX).arg(n).arg(lease_ms);
        let mut c = self.conn.clone();
        let flat: Vec<Option<String>> = inv.invoke_async(&mut c).await?;
        Ok(flat
            .chunks(9)
            .filter_map(|r| {
                let s = |i: usize| r.get(i).cloned().flatten();
                Some(DueDelivery {
                    delivery: NewDelivery {
                        id: s(0)?,
                        tenant: s(1)?,
                        endpoint: s(2)?,
                        event_type: s(3)?,
                        job: s(4)?,
                        body: s(5)?,
                        traceparent: s(8).filter(|t| !t.is_empty()),
                    },
                    attempts: s(6).and_then(|a| a.parse().ok()).unwrap_or(0),
                    created_ms: s(7).and_then(|a| a.parse().ok()).unwrap_or(0),
                })
            })
            .collect())
    }

    /// Records an attempt at `id` (made at `now_ms`, taking `latency_ms`).
    pub async fn record(&self, id: &str, outcome: &AttemptOutcome, latency_ms: Option<u64>) -> Result<(), QueueError> {
        let dk = d_key(id);
        let mut p = redis::pipe();
        p.atomic();
        p.cmd("HINCRBY").arg(&dk).arg("attempts").arg(1).ignore();
        if let Some(l) = latency_ms {
            p.cmd("HSET").arg(&dk).arg("lat").arg(l).ignore();
        }
        match outcome {
            AttemptOutcome::Delivered { status } => {
                p.cmd("HSET")
                    .arg(&dk)
                    .arg("status")
                    .arg("delivered")
                    .arg("code")
                    .arg(status)
                    .ignore();
                p.cmd("HDEL").arg(&dk).arg("err").arg("next").ignore();
                p.cmd("ZREM").arg(DUE).arg(id).ignore();
                p.cmd("EXPIRE").arg(&dk).arg(FINISHED_TTL_SECS).ignore();
            }
            AttemptOutcome::Failed {
                status,
                error,
                retry_at_ms,
            } => {
                p.cmd("HSET").arg(&dk).arg("err").arg(error).ignore();
                match status {
                    Some(s) => p.cmd("HSET").arg(&dk).arg("code").arg(s).ignore(),
                    None => p.cmd("HDEL").arg(&dk).arg("code").ignore(),
                };
                match retry_at_ms {
                    Some(at) => {
                        p.cmd("HSET").arg(&dk).arg("next").arg(at).ignore();
                        p.cmd("ZADD").arg(DUE).arg(at).arg(id).ignore();
                    }
                    None => {
                        p.cmd("HSET").arg(&dk).arg("status").arg("failed").ignore();
                        p.cmd("HDEL").arg(&dk).arg("next").ignore();
                        p.cmd("ZREM").arg(DUE).arg(id).ignore();
                        p.cmd("EXPIRE").arg(&dk).arg(FINISHED_TTL_SECS).ignore();
                    }
                }
            }
            AttemptOutcome::Skipped { reason } => {
                p.cmd("HINCRBY").arg(&dk).arg("attempts").arg(-1).ignore();
                p.cmd("HSET")
                    .arg(&dk)
                    .arg("status")
                    .arg("skipped")
                    .arg("err")
                    .arg(reason)
                    .ignore();
                p.cmd("HDEL").arg(&dk).arg("next").ignore();
                p.cmd("ZREM").arg(DUE).arg(id).ignore();
                p.cmd("EXPIRE").arg(&dk).arg(FINISHED_TTL_SECS).ignore();
            }
        }
        let mut c = self.conn.clone();
        p.query_async::<()>(&mut c).await?;
        Ok(())
    }

    /// The endpoint's deliveries, newest first, created in `[since_ms, until_ms]`, at most `limit`.
    pub async fn log(
        &self,
        tenant: &str,
        ep: &str,
        since_ms: u64,
        until_ms: u64,
        limit: usize,
    ) -> Result<Vec<DeliveryView>, QueueError> {
        let mut c = self.conn.clone();
        let ids: Vec<String> = redis::cmd("ZREVRANGEBYSCORE")
            .arg(log_key(tenant, ep))
            .arg(until_ms)
            .arg(since_ms)
            .arg("LIMIT")
            .arg(0)
            .arg(limit)
            .query_async(&mut c)
            .await?;
        let mut p = redis::pipe();
        for id in &ids {
            p.cmd("HMGET").arg(d_key(id)).arg(&[
                "type", "job", "status", "attempts", "code", "err", "lat", "created", "next",
            ]);
        }
        let rows: Vec<Vec<Option<String>>> = if ids.is_empty() {
            Vec::new()
        } else {
            p.query_async(&mut c).await?
        };
        Ok(ids
            .into_iter()
            .zip(rows)
            .filter_map(|(id, r)| {
                let s = |i: usize| r.get(i).cloned().flatten();
                let n = |i: usize| s(i).and_then(|v| v.parse::<u64>().ok());
                Some(DeliveryView {
                    id,
                    event_type: s(0)?,
                    job_id: s(1)?,
                    status: s(2)?,
                    attempts: n(3).unwrap_or(0) as u32,
                    last_status: n(4).and_then(|c| u16::try_from(c).ok()),
                    last_error: s(5),
                    latency_ms: n(6),
                    created_ms: n(7).unwrap_or(0),
                    next_attempt_ms: n(8),
                })
            })
            .collect())
    }

    /// Sends the endpoint's deliveries `ids` again, from attempt 0; returns how many were found.
    pub async fn replay(&self, tenant: &str, ep: &str, ids: &[String]) -> Result<u64, QueueError> {
        let mut c = self.conn.clone();
        let mut n = 0;
        for id in ids {
            let dk = d_key(id);
            let owner: (Option<String>, Option<String>) = redis::cmd("HMGET")
                .arg(&dk)
                .arg("ten")
                .arg("ep")
                .query_async(&mut c)
                .await?;
            if owner.0.as_deref() != Some(tenant) || owner.1.as_deref() != Some(ep) {
                continue;
            }
            let (secs, micros): (u64, u64) = redis::cmd("TIME").query_async(&mut c).await?;
            let now = secs * 1000 + micros / 1000;
            redis::pipe()
                .atomic()
                .cmd("HSET")
                .arg(&dk)
                .arg("status")
                .arg("pending")
                .arg("attempts")
                .arg(0)
                .arg("created")
                .arg(now)
                .arg("next")
                .arg(now)
                .ignore()
                .cmd("PERSIST")
                .arg(&dk)
                .ignore()
                .cmd("ZADD")
                .arg(DUE)
                .arg(now)
                .arg(id)
                .ignore()
                .query_async::<()>(&mut c)
                .await?;
            n += 1;
        }
        Ok(n)
    }

    /// The oldest due delivery's wait (ms past its due time), `0` with none overdue.
    pub async fn backlog_age_ms(&self) -> Result<(u64, u64), QueueError> {
        let mut c = self.conn.clone();
        let (secs, micros): (u64, u64) = redis::cmd("TIME").query_async(&mut c).await?;
        let now = secs * 1000 + micros / 1000;
        let (oldest, due): (Vec<(String, f64)>, u64) = redis::pipe()
            .cmd("ZRANGE")
            .arg(DUE)
            .arg(0)
            .arg(0)
            .arg("WITHSCORES")
            .cmd("ZCOUNT")
            .arg(DUE)
            .arg("-inf")
            .arg(now)
            .query_async(&mut c)
            .await?;
        let age = oldest.first().map(|(_, s)| now.saturating_sub(*s as u64)).unwrap_or(0);
        Ok((age, due))
    }
}
