//! The HTTP API (axum). Routes:
//! - `POST /v1/jobs`, `POST /v1/jobs:batch` (`jobs:write`): admit and enqueue;
//! - `GET /v1/jobs/{id}` (`jobs:read`), `POST /v1/jobs/{id}:cancel` (`jobs:write`);
//! - `GET /v1/credits` (`jobs:read`): the tenant's balance;
//! - `DELETE /v1/users/{user_id}/data`: erase a user's jobs and outputs (see [`crate::erasure`]);
//! - operator routes under `/v1/admin` (see [`crate::admin`]);
//! - `GET /openapi.json`, `GET /healthz`;
//! - `GET /metrics` (autoscaling signals, see [`crate::metrics`]) on the metrics listener only.
//!
//! A tenant sees only its own jobs: another tenant's job is "not found".

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use gantry_queue::{CancelOutcome, JobId, JobRecord, QueueClient, QueueError};
use serde::Deserialize;

use crate::admission::Admission;
use crate::auth::{ApiKeys, JobsRead, JobsWrite};
use crate::config::SchedulerConfig;
use crate::problem::ApiError;

/// What every handler shares.
#[derive(Clone, Debug)]
pub struct AppState {
    /// Configuration.
    pub cfg: Arc<SchedulerConfig>,
    /// The queue.
    pub queue: QueueClient,
    /// API keys.
    pub keys: Arc<ApiKeys>,
    /// Admission.
    pub admission: Admission,
    /// Pool loads (placement and the autoscaling signals).
    pub loads: crate::placement::PoolLoads,
    /// Metrics.
    pub metrics: Arc<crate::metrics::SchedulerMetrics>,
    /// The abuse hash lists.
    pub hashlists: gantry_safety::HashListStore,
    /// The moderation log.
    pub moderation: gantry_safety::ModerationLog,
    /// The audit log of operators' actions.
    pub audit: gantry_safety::AuditLog,
    /// The workers' output store, for erasures (`outputs` in the config).
    pub outputs: Option<gantry_store::OutputStore>,
}

/// The OpenAPI document, kept in the repo beside this file.
pub const OPENAPI: &str = include_str!("../openapi.json");

/// The API's router. Every `/v1` route runs behind [`crate::auth::authenticate`], so a request
/// without a valid key is answered 401 before its body is read; the body limits apply after it.
/// `/metrics` is not here: it is served on a listener of its own ([`metrics_router`]).
pub fn router(state: AppState) -> Router {
    let limit = state.cfg.max_body_bytes;
    let authenticated = Router::new()
        .route("/v1/jobs", post(submit_one))
        .route("/v1/jobs:batch", post(submit_batch))
        .route("/v1/jobs/{id}", get(show).post(job_action))
        .route("/v1/credits", get(credits))
        .merge(crate::admin::routes())
        .merge(crate::safety_admin::routes())
        .merge(crate::erasure::routes())
        .route_layer(axum::middleware::from_fn_with_state(
            state.keys.clone(),
            crate::auth::authenticate,
        ));
    Router::new()
        .merge(authenticated)
        .route("/openapi.json", get(openapi))
        .route("/healthz", get(|| async { "ok" }))
        .fallback(|| async { ApiError::NoRoute })
        .layer(DefaultBodyLimit::max(limit))
        .with_state(state)
}

/// The metrics listener's router: `/metrics` (autoscaling signals, credit totals by provider
/// and plan) and `/healthz`, nothing a tenant reaches.
pub fn metrics_router(state: AppState) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok" }))
        .fallback(|| async { ApiError::NoRoute })
        .with_state(state)
}

/// OpenMetrics for Prometheus (its `Accept` asks for it), the classic text format otherwise.
async fn metrics(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let text = state.metrics.encode(&state.cfg, &state.loads);
    let accept = headers.get(axum::http::header::ACCEPT).and_then(|v| v.to_str().ok());
    let (content_type, body) = gantry_queue::exposition::negotiate(text, accept);
    ([(axum::http::header::CONTENT_TYPE, content_type)], body).into_response()
}

async fn openapi() -> Response {
    ([(axum::http::header::CONTENT_TYPE, "application/json")], OPENAPI).into_response()
}

pub(crate) fn json_body(state: &AppState, body: Result<Bytes, BytesRejection>) -> Result<serde_json::Value, ApiError> {
    let bytes = body.map_err(|e| ApiError::of_body(e, state.cfg.max_body_bytes))?;
    serde_json::from_slice(&bytes).map_err(|e| ApiError::MalformedJson(e.to_string()))
}

fn idempotency_key(headers: &HeaderMap) -> Result<Option<&str>, ApiError> {
    match headers.get("idempotency-key") {
        None => Ok(None),
        Some(v) => v
            .to_str()
            .ok()
            .filter(|k| !k.is_empty() && k.len() <= 256)
            .map(Some)
            .ok_or_else(|| ApiError::InvalidRequest("Idempotency-Key must be 1-256 visible ASCII characters".into())),
    }
}

async fn submit_one(
    State(state): State<AppState>,
    JobsWrite(c): JobsWrite,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let job = json_body(&state, body)?;
    let mut admitted = state.admission.admit(&c, vec![job], idempotency_key(&headers)?).await?;
    let a = admitted.pop().ok_or(ApiError::Internal)?;
    let status = if a.duplicate {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok((status, axum::Json(a)).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BatchRequest {
    jobs: Vec<serde_json::Value>,
}

async fn submit_batch(
    State(state): State<AppState>,
    JobsWrite(c): JobsWrite,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let v = json_body(&state, body)?;
    let req: BatchRequest = serde_json::from_value(v).map_err(|e| ApiError::InvalidRequest(e.to_string()))?;
    let max = state.queue.config().max_batch;
    if req.jobs.is_empty() || req.jobs.len() > max {
        return Err(ApiError::InvalidRequest(format!("a batch holds 1 to {max} jobs")));
    }
    if headers.contains_key("idempotency-key") {
        return Err(ApiError::InvalidRequest(
            "Idempotency-Key applies to single jobs; give each job its idempotency_key".into(),
        ));
    }
    let admitted = state.admission.admit(&c, req.jobs, None).await?;
    Ok((StatusCode::CREATED, axum::Json(serde_json::json!({ "jobs": admitted }))).into_response())
}

fn parse_id(s: &str) -> Result<JobId, ApiError> {
    s.parse::<JobId>().map_err(|_| ApiError::NotFound)
}

/// The job, if it is `tenant`'s.
async fn owned_job(state: &AppState, tenant: &str, id: JobId) -> Result<JobRecord, ApiError> {
    match state.queue.job(id).await {
        Ok(r) if r.spec.tenant == tenant => Ok(r),
        Ok(_) | Err(QueueError::NotFound(_)) => Err(ApiError::NotFound),
        Err(e) => Err(e.into()),
    }
}

async fn show(
    State(state): State<AppState>,
    JobsRead(c): JobsRead,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id = parse_id(&id)?;
    let r = owned_job(&state, &c.tenant, id).await?;
    let credits = state.admission.credits.entry(&c.tenant, id).await?;
    let (provider, model) = match &r.spec.body {
        gantry_queue::Payload::Generate(g) => (Some(g.provider.clone()), Some(g.model.clone())),
        _ => (None, None),
    };
    Ok(axum::Json(serde_json::json!({
        "id": id,
        "kind": r.spec.kind(),
        "pool": r.spec.pool,
        "status": r.status,
        "priority": r.spec.priority,
        "attempts": r.attempts,
        "max_attempts": r.spec.max_attempts,
        "enqueued_at_ms": r.enqueued_at_ms,
        "started_at_ms": r.started_at_ms,
        "finished_at_ms": r.finished_at_ms,
        "error": r.error.map(|e| serde_json::json!({"class": e.class, "message": e.message, "at_ms": e.at_ms})),
        "result": r.result,
        "usage": r.usage,
        "provider": provider,
        "model": model,
        "credits": credits,
    }))
    .into_response())
}

async fn credits(State(state): State<AppState>, JobsRead(c): JobsRead) -> Result<Response, ApiError> {
    let initial = state.cfg.tenants.get(&c.tenant).map_or(0, |t| t.initial_credits);
    let balance = state.admission.credits.balance(&c.tenant).await?.unwrap_or(initial);
    Ok(axum::Json(serde_json::json!({ "tenant": c.tenant, "balance": balance })).into_response())
}

/// `POST /v1/jobs/{id}:cancel` (axum matches the whole segment; the action is split off here).
async fn job_action(
    State(state): State<AppState>,
    JobsWrite(c): JobsWrite,
    Path(segment): Path<String>,
) -> Result<Response, ApiError> {
    let Some((id, "cancel")) = segment.rsplit_once(':') else {
        return Err(ApiError::NoRoute);
    };
    let id = parse_id(id)?;
    owned_job(&state, &c.tenant, id).await?;
    let outcome = state.queue.cancel(id).await?;
    let (status, word) = match outcome {
        CancelOutcome::Cancelled => (StatusCode::OK, "cancelled"),
        CancelOutcome::Requested => (StatusCode::ACCEPTED, "cancel_requested"),
    };
    Ok((status, axum::Json(serde_json::json!({ "id": id, "outcome": word }))).into_response())
}
