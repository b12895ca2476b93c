//! Erasure on request (GDPR Art. 17, CCPA): `DELETE /v1/users/{user_id}/data`.
//!
//! A tenant's `jobs:write` key erases its own users; an operator's `admin` key names the tenant
//! with `?tenant=`. In every pool the user's waiting jobs are cancelled (credits refunded) and
//! deleted, running ones are asked to stop and deleted once they have, and finished and
//! dead-lettered records go with their dead-letter entries and idempotency keys; then every
//! object the user's jobs wrote is deleted from the object store, however old. What retention
//! requires for moderation stays: moderation events (category, list, action, time, the prompt's
//! SHA-256 — never its text) and the user's trust standing. The receipt counts what went;
//! `200` when nothing is left, `202` when a running job had not stopped within
//! `erasure_wait_secs` (call again: the request is idempotent). Every erasure is audited under
//! the user's pseudonymous key, never the user id.

use std::time::Duration;

use crate::extract::ApiQuery;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::delete;
use gantry_queue::ErasureCounts;
use serde::Deserialize;

use crate::auth::Caller;
use crate::config::Scope;
use crate::problem::ApiError;
use crate::state::AppState;

/// The erasure route.
pub fn routes() -> Router<AppState> {
    Router::new().route("/v1/users/{user_id}/data", delete(erase))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EraseQuery {
    tenant: Option<String>,
}

/// What an erasure removed and what it kept.
#[derive(Debug, serde::Serialize)]
struct Receipt {
    tenant: String,
    /// The user's pseudonymous key, as the audit log names this erasure.
    user_key: String,
    /// Nothing of the user's is left but what `kept` names.
    complete: bool,
    jobs: ErasureCounts,
    outputs_deleted: usize,
    kept: Kept,
    erased_at_ms: u64,
}

#[derive(Debug, serde::Serialize)]
struct Kept {
    moderation_events: &'static str,
    trust: &'static str,
}

async fn erase(
    State(state): State<AppState>,
    who: Caller,
    Path(user): Path<String>,
    ApiQuery(q): ApiQuery<EraseQuery>,
) -> Result<Response, ApiError> {
    let tenant = match q.tenant {
        Some(t) if t != who.tenant => {
            who.require(Scope::Admin)?;
            t
        }
        _ => {
            if who.require(Scope::Admin).is_err() {
                who.require(Scope::JobsWrite)?;
            }
            who.tenant.clone()
        }
    };
    let valid = |s: &str| !s.is_empty() && s.len() <= 128 && !s.chars().any(char::is_control);
    if !valid(&user) {
        return Err(ApiError::InvalidRequest(
            "user_id must be 1..=128 bytes without control characters".into(),
        ));
    }
    if !state.cfg.tenants.contains_key(&tenant) {
        return Err(ApiError::InvalidRequest("unknown tenant".into()));
    }
    let store = state.outputs.as_ref().ok_or(ApiError::NotConfigured(
        "erasure needs the output store: set `outputs` in the scheduler config (or --outputs)",
    ))?;
    let pools = state.queue.pools().await?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(state.cfg.erasure_wait_secs);
    let mut jobs = ErasureCounts::default();
    let running = loop {
        let mut running = 0;
        for pool in &pools {
            let c = state.queue.erase_user(pool, &tenant, &user).await?;
            running += c.running;
            jobs += ErasureCounts { running: 0, ..c };
        }
        if running == 0 || tokio::time::Instant::now() >= deadline {
            break running;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    jobs.running = running;
    // After the records: a job that stopped in the loop above wrote nothing later.
    let outputs_deleted = store.delete_user(&tenant, &user).await.map_err(|e| {
        tracing::error!(error = %e, "the output store failed during an erasure");
        ApiError::Unavailable
    })?;
    let receipt = Receipt {
        user_key: gantry_queue::user_key(&tenant, &user),
        tenant,
        complete: running == 0,
        jobs,
        outputs_deleted,
        kept: Kept {
            moderation_events: "kept for their retention period: category, list, action, time and the prompt's SHA-256, never its text",
            trust: "the user's trust standing, so a block still holds",
        },
        erased_at_ms: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64),
    };
    tracing::info!(
        tenant = %receipt.tenant,
        user_key = %receipt.user_key,
        deleted = jobs.deleted,
        cancelled = jobs.cancelled,
        outputs = outputs_deleted,
        still_running = running,
        "user data erased"
    );
    crate::audit::audited(
        &state,
        &who,
        "users.erase",
        format!("{}/{}", receipt.tenant, receipt.user_key),
        serde_json::json!({ "jobs": jobs, "outputs_deleted": outputs_deleted, "complete": receipt.complete }),
    )
    .await?;
    let (status, outcome) = if receipt.complete {
        (StatusCode::OK, "complete")
    } else {
        (StatusCode::ACCEPTED, "pending")
    };
    state
        .metrics
        .erasures
        .get_or_create(&crate::metrics::OutcomeLabels {
            outcome: outcome.into(),
        })
        .inc();
    Ok((status, axum::Json(receipt)).into_response())
}
