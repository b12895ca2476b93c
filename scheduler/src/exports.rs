//! A user's data, exported on request (access and portability):
//! - `POST /v1/users/{user_id}/exports` starts an export: a job of its own (kind `export`, run
//!   by a worker of the pool that serves it, free, audited), answered `202` with its id. What
//!   it includes beyond the user's jobs and pipelines is the tenant's policy
//!   (`[tenants.<t>.exports]`: trust standing on, moderation records off by default).
//! - `GET /v1/users/{user_id}/exports/{id}` tells how it goes (status, progress) and, once done,
//!   where its archive is: `GET /v1/jobs/{id}/outputs/export.tar` (that download is audited).
//!
//! A tenant's `jobs:read` key exports its own users; an operator's `admin` key names the
//! tenant with `?tenant=`. Another tenant's export, or another user's, is not found. The
//! archive lives under the user's folder, so an erasure deletes it with everything else, and
//! an erasure cancels a running export as it cancels any job of the user's; an export that
//! starts after an erasure finds nothing and says so in its manifest.

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use gantry_queue::{ExportPayload, JobKind, JobRecord, JobStatus, Payload};
use gantry_safety::AuditEntry;
use serde::{Deserialize, Serialize};

use crate::api::parse_id;
use crate::auth::Caller;
use crate::config::Scope;
use crate::extract::ApiQuery;
use crate::problem::ApiError;
use crate::state::AppState;

/// The archive's name among the export job's outputs (the worker's `export::ARCHIVE`).
pub const ARCHIVE: &str = "export.tar";

/// The exports routes.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/users/{user_id}/exports", post(start))
        .route("/v1/users/{user_id}/exports/{id}", get(show))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TenantQuery {
    tenant: Option<String>,
}

/// An export, as the API shows it.
#[derive(Debug, Serialize)]
pub struct ExportView {
    /// Its id (its job's).
    pub id: String,
    /// `queued`, `running`, `succeeded`, `dead`, `cancelled`, ...
    pub status: String,
    /// When it was asked for (Unix ms).
    pub created_at_ms: u64,
    /// When it ended (Unix ms).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finished_at_ms: Option<u64>,
    /// How far it has come (percent of the user's index read), while it runs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub progress: Option<f32>,
    /// What it includes beyond the user's jobs and pipelines.
    pub includes: Includes,
    /// The archive, once it is made.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub archive: Option<ArchiveView>,
    /// Why it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// What an export includes beyond the user's jobs and pipelines.
#[derive(Debug, Serialize)]
pub struct Includes {
    /// The user's trust standing.
    pub trust: bool,
    /// The moderation records about the user.
    pub moderation: bool,
}

/// A made archive.
#[derive(Debug, Serialize)]
pub struct ArchiveView {
    /// Where to download it (the tenant's authenticated outputs route).
    pub download: String,
    /// Its size.
    pub size_bytes: u64,
    /// Its SHA-256.
    pub sha256: String,
    /// Jobs, pipelines, outputs, references and files in it.
    pub counts: std::collections::BTreeMap<String, u64>,
    /// When the retention sweeper deletes it (Unix ms).
    pub expires_at_ms: u64,
}

fn view(state: &AppState, r: &JobRecord, p: &ExportPayload) -> ExportView {
    let archive = (r.status == JobStatus::Succeeded)
        .then_some(r.result.as_ref())
        .flatten()
        .map(|res| ArchiveView {
            download: format!("/v1/jobs/{}/outputs/{ARCHIVE}", r.spec.id),
            size_bytes: res.size_bytes,
            sha256: res.sha256.clone(),
            counts: res
                .details
                .iter()
                .filter_map(|(k, v)| v.parse().ok().map(|n| (k.clone(), n)))
                .collect(),
            expires_at_ms: r.finished_at_ms.unwrap_or(r.enqueued_at_ms)
                + u64::from(state.cfg.retention.export_days()) * 86_400_000,
        });
    ExportView {
        id: r.spec.id.to_string(),
        status: r.status.as_str().to_owned(),
        created_at_ms: r.enqueued_at_ms,
        finished_at_ms: r.finished_at_ms,
        progress: r.progress.as_ref().and_then(|p| p.percent),
        includes: Includes {
            trust: p.trust,
            moderation: p.moderation,
        },
        archive,
        error: r.error.as_ref().map(|e| format!("{}: {}", e.class, e.message)),
    }
}

/// A request id the caller sent (`X-Request-Id`), if it is a fit one.
fn request_id(headers: &HeaderMap) -> Option<String> {
    headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128 && v.bytes().all(|b| b.is_ascii_graphic()))
        .map(str::to_owned)
}

async fn start(
    State(state): State<AppState>,
    who: Caller,
    Path(user): Path<String>,
    ApiQuery(q): ApiQuery<TenantQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let tenant = crate::users::acting_tenant(&state, &who, q.tenant, Scope::JobsRead)?;
    let policy = state.cfg.tenants.get(&tenant).map(|t| t.exports).unwrap_or_default();
    let payload = ExportPayload {
        request_id: request_id(&headers).unwrap_or_default(),
        trust: policy.trust,
        moderation: policy.moderation,
    };
    let admitted = state.admission.admit_export(&tenant, &user, payload.clone()).await?;
    let entry = AuditEntry::new(
        who.actor(),
        "users.export",
        format!("{tenant}/{}", gantry_queue::user_key(&tenant, &user)),
    )
    .details(serde_json::json!({
        "export": admitted.id.to_string(),
        "trust": payload.trust,
        "moderation": payload.moderation,
    }));
    state.audit.record(&entry).await.map_err(crate::problem::safety_error)?;
    let r = state.queue.job(admitted.id).await?;
    let mut v = view(&state, &r, &payload);
    // Fresh: whatever the record says, it was just queued.
    v.archive = None;
    Ok((StatusCode::ACCEPTED, axum::Json(v)).into_response())
}

async fn show(
    State(state): State<AppState>,
    who: Caller,
    Path((user, id)): Path<(String, String)>,
    ApiQuery(q): ApiQuery<TenantQuery>,
) -> Result<Response, ApiError> {
    let tenant = crate::users::acting_tenant(&state, &who, q.tenant, Scope::JobsRead)?;
    let id = parse_id(&id)?;
    let r = match state.queue.job(id).await {
        Ok(r) => r,
        Err(gantry_queue::QueueError::NotFound(_)) => return Err(ApiError::NotFound),
        Err(e) => return Err(e.into()),
    };
    let Payload::Export(p) = &r.spec.body else {
        return Err(ApiError::NotFound);
    };
    if r.spec.tenant != tenant || r.spec.user != user || r.spec.kind() != JobKind::Export {
        return Err(ApiError::NotFound);
    }
    Ok(axum::Json(view(&state, &r, p)).into_response())
}
