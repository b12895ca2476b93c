//! The demo's webhook receiver: a platform's endpoint on loopback that checks every delivery's
//! Standard Webhooks signature (HMAC-SHA256 over `id.timestamp.body` with the secret the
//! registration returned) and timestamp, and counts what arrived.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use serde::Serialize;

/// How far a delivery's timestamp may be from the receiver's clock (the specification's
/// replay protection).
const TOLERANCE_SECS: u64 = 300;

/// What the receiver saw.
#[derive(Debug, Default, Serialize, Clone)]
pub(super) struct WebhookSummary {
    /// Where it listened.
    pub url: String,
    /// The endpoint id the scheduler gave it.
    pub endpoint: String,
    /// Deliveries received (retries and replays included).
    pub received: u64,
    /// Of them, with a valid signature and a fresh timestamp.
    pub verified: u64,
    /// By event type.
    pub by_type: BTreeMap<String, u64>,
    /// Distinct jobs a final event arrived for.
    pub jobs_finished: usize,
}

#[derive(Debug, Default)]
struct Seen {
    summary: WebhookSummary,
    finished: BTreeSet<String>,
}

/// A running receiver.
#[derive(Clone, Debug)]
pub(super) struct Receiver {
    seen: Arc<Mutex<Seen>>,
    secret: Arc<Mutex<Option<String>>>,
}

impl Receiver {
    /// Serves on `listener` (bound before the scheduler starts, so the scheduler can be told
    /// to allow its loopback address).
    pub fn serve(listener: tokio::net::TcpListener, url: String) -> Self {
        let r = Self {
            seen: Arc::new(Mutex::new(Seen {
                summary: WebhookSummary {
                    url,
                    ..Default::default()
                },
                ..Default::default()
            })),
            secret: Arc::new(Mutex::new(None)),
        };
        let app = axum::Router::new()
            .route("/hooks", axum::routing::post(receive))
            .with_state(r.clone());
        tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                tracing::warn!(error = %e, "the demo's webhook receiver stopped");
            }
        });
        r
    }

    /// The endpoint's id and secret, once registered.
    pub fn registered(&self, endpoint: &str, secret: &str) {
        if let Ok(mut s) = self.secret.lock() {
            *s = Some(secret.to_owned());
        }
        if let Ok(mut s) = self.seen.lock() {
            s.summary.endpoint = endpoint.to_owned();
        }
    }

    /// What arrived so far.
    pub fn summary(&self) -> WebhookSummary {
        self.seen
            .lock()
            .map(|s| WebhookSummary {
                jobs_finished: s.finished.len(),
                ..s.summary.clone()
            })
            .unwrap_or_default()
    }
}

async fn receive(State(r): State<Receiver>, headers: HeaderMap, body: String) -> StatusCode {
    let h = |n: &str| headers.get(n).and_then(|v| v.to_str().ok()).unwrap_or_default();
    let secret = r.secret.lock().ok().and_then(|s| s.clone());
    let verified = secret.is_some_and(|s| {
        verify(
            &s,
            h("webhook-id"),
            h("webhook-timestamp"),
            h("webhook-signature"),
            &body,
        )
    });
    let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
    let event = v["type"].as_str().unwrap_or("?").to_owned();
    if let Ok(mut s) = r.seen.lock() {
        s.summary.received += 1;
        if verified {
            s.summary.verified += 1;
        }
        *s.summary.by_type.entry(event.clone()).or_default() += 1;
        if event != "job.failed"
            && let Some(j) = v["data"]["job_id"].as_str()
        {
            s.finished.insert(j.to_owned());
        }
    }
    // A receiver refuses what it cannot verify; the scheduler would retry it.
    if verified {
        StatusCode::NO_CONTENT
    } else {
        StatusCode::UNAUTHORIZED
    }
}

/// Whether one of the `v1,` signatures is ours and the timestamp is fresh.
fn verify(secret: &str, id: &str, ts: &str, sigs: &str, body: &str) -> bool {
    let Ok(t) = ts.parse::<u64>() else { return false };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    if now.abs_diff(t) > TOLERANCE_SECS {
        return false;
    }
    let Ok(want) = gantry_scheduler::webhooks::signing::sign(secret, id, t, body.as_bytes()) else {
        return false;
    };
    sigs.split(' ').any(|s| constant_time_eq(s.as_bytes(), want.as_bytes()))
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_fresh_signature_by_the_secret_verifies() {
        let secret = gantry_scheduler::webhooks::signing::new_secret();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let sig = gantry_scheduler::webhooks::signing::sign(&secret, "msg_1", now, b"{}").unwrap_or_default();
        assert!(verify(
            &secret,
            "msg_1",
            &now.to_string(),
            &format!("v1,zzz {sig}"),
            "{}"
        ));
        assert!(!verify(&secret, "msg_2", &now.to_string(), &sig, "{}"), "another id");
        assert!(!verify(&secret, "msg_1", &now.to_string(), &sig, "{ }"), "another body");
        let old = now - 3600;
        let stale = gantry_scheduler::webhooks::signing::sign(&secret, "msg_1", old, b"{}").unwrap_or_default();
        assert!(
            !verify(&secret, "msg_1", &old.to_string(), &stale, "{}"),
            "an old timestamp"
        );
    }
}
