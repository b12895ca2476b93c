//! The job routes a platform service calls:
//! - `POST /v1/jobs`, `POST /v1/jobs:batch` (`jobs:write`): admit and enqueue;
//! - `GET /v1/jobs` (`jobs:read`): search, see [`crate::job_search`];
//! - `GET /v1/jobs/{id}` (`jobs:read`), `POST /v1/jobs/{id}:cancel` (`jobs:write`);
//! - `GET /v1/credits` (`jobs:read`): the tenant's balance.
//!
//! The rest of the API: erasure ([`crate::erasure`]), operator routes ([`crate::admin`],
//! [`crate::safety_admin`]); [`crate::router`] puts them together behind authentication.
//! A tenant sees only its own jobs: another tenant's job is "not found".

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use gantry_queue::{CancelOutcome, JobId, JobRecord, QueueError};
use serde::Deserialize;

use crate::auth::{JobsRead, JobsWrite};
use crate::extract::ApiJson;
use crate::problem::ApiError;
use crate::state::AppState;

/// The job routes.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/jobs", post(submit_one).get(crate::job_search::tenant_search))
        .route("/v1/jobs:batch", post(submit_batch))
        .route(
            "/v1/jobs/{id}",
            get(show)
                .post(job_action)
                .layer(axum::middleware::from_fn(methods_by_action)),
        )
        .route("/v1/credits", get(credits))
}

/// `/v1/jobs/{id}` and `/v1/jobs/{id}:cancel` share one route pattern (the action is part of
/// the last segment) but not their methods: the job is read with GET, the action taken with
/// POST. Anything else is `405` with the `Allow` of the resource the path names, as its
/// OpenAPI entry documents it.
pub(crate) async fn methods_by_action(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let action = req
        .uri()
        .path()
        .rsplit('/')
        .next()
        .is_some_and(|last| last.contains(':'));
    let (ok, allow) = if action {
        (req.method() == axum::http::Method::POST, "POST")
    } else {
        (
            matches!(*req.method(), axum::http::Method::GET | axum::http::Method::HEAD),
            "GET,HEAD",
        )
    };
    if !ok {
        return (StatusCode::METHOD_NOT_ALLOWED, [(axum::http::header::ALLOW, allow)]).into_response();
    }
    next.run(req).await
}

pub(crate) fn idempotency_key(headers: &HeaderMap) -> Result<Option<&str>, ApiError> {
    match headers.get("idempotency-key") {
        None => Ok(None),
        Some(v) => v
            .to_str()
            .ok()
            .filter(|k| !k.is_empty() && k.len() <= 256 && k.bytes().all(|b| b.is_ascii_graphic()))
            .map(Some)
            .ok_or_else(|| ApiError::InvalidRequest("Idempotency-Key must be 1-256 visible ASCII characters".into())),
    }
}

async fn submit_one(
    State(state): State<AppState>,
    JobsWrite(c): JobsWrite,
    headers: HeaderMap,
    ApiJson(job): ApiJson<serde_json::Value>,
) -> Result<Response, ApiError> {
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
    ApiJson(req): ApiJson<BatchRequest>,
) -> Result<Response, ApiError> {
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
    Ok((StatusCode::CREATED, axum::Json(BatchAdmitted { jobs: admitted })).into_response())
}

pub(crate) fn parse_id(s: &str) -> Result<JobId, ApiError> {
    s.parse::<JobId>().map_err(|_| ApiError::NotFound)
}

/// The job, if it is `tenant`'s.
pub(crate) async fn owned_job(state: &AppState, tenant: &str, id: JobId) -> Result<JobRecord, ApiError> {
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
    Ok(axum::Json(JobView {
        id,
        kind: r.spec.kind(),
        pool: &r.spec.pool,
        status: r.status,
        priority: r.spec.priority,
        attempts: r.attempts,
        max_attempts: r.spec.max_attempts,
        enqueued_at_ms: r.enqueued_at_ms,
        started_at_ms: r.started_at_ms,
        finished_at_ms: r.finished_at_ms,
        error: r.error.as_ref().map(|e| ErrorView {
            class: &e.class,
            message: &e.message,
            at_ms: e.at_ms,
        }),
        result: r.result.as_ref(),
        usage: r.usage.as_ref(),
        progress: r
            .progress
            .as_ref()
            .filter(|_| r.status == gantry_queue::JobStatus::Running),
        provider,
        model,
        credits,
    })
    .into_response())
}

/// `GET /v1/jobs/{id}`: a job as its tenant sees it (`Job` in `openapi.json`).
#[derive(serde::Serialize)]
struct JobView<'a> {
    id: JobId,
    kind: gantry_queue::JobKind,
    pool: &'a str,
    status: gantry_queue::JobStatus,
    priority: gantry_queue::Priority,
    attempts: u32,
    max_attempts: u32,
    enqueued_at_ms: u64,
    started_at_ms: Option<u64>,
    finished_at_ms: Option<u64>,
    /// The last failure: its class, the fixed sentence a tenant may read, and when.
    error: Option<ErrorView<'a>>,
    result: Option<&'a gantry_queue::ResultRef>,
    usage: Option<&'a gantry_queue::Usage>,
    /// What it is doing while it runs: its current attempt's last report.
    progress: Option<&'a gantry_queue::Progress>,
    /// The provider and model a generate job was routed to.
    provider: Option<String>,
    model: Option<String>,
    credits: Option<crate::admission::credits::CreditEntry>,
}

#[derive(serde::Serialize)]
struct ErrorView<'a> {
    class: &'a str,
    message: &'a str,
    at_ms: u64,
}

/// `GET /v1/credits`.
#[derive(serde::Serialize)]
struct Balance {
    tenant: String,
    balance: i64,
}

/// `POST /v1/jobs/{id}:cancel`: `cancelled` (it was waiting) or `cancel_requested` (it runs;
/// its worker stops it at its next heartbeat).
#[derive(serde::Serialize)]
struct Cancelled {
    id: JobId,
    outcome: &'static str,
}

/// `POST /v1/jobs:batch`: one entry per job, in order.
#[derive(serde::Serialize)]
struct BatchAdmitted {
    jobs: Vec<crate::admission::Admitted>,
}

async fn credits(State(state): State<AppState>, JobsRead(c): JobsRead) -> Result<Response, ApiError> {
    let initial = state.cfg.tenants.get(&c.tenant).map_or(0, |t| t.initial_credits);
    let balance = state.admission.credits.balance(&c.tenant).await?.unwrap_or(initial);
    Ok(axum::Json(Balance {
        tenant: c.tenant,
        balance,
    })
    .into_response())
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
    Ok((status, axum::Json(Cancelled { id, outcome: word })).into_response())
}
