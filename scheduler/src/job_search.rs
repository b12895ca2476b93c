//! Job search:
//! - `GET /v1/jobs` (`jobs:read`): the calling tenant's own jobs;
//! - `GET /v1/admin/jobs` (operators): any tenant's, or every tenant's.
//!
//! Newest first, filtered by status, kind, user and creation time, a page at a time with an
//! opaque cursor ([`gantry_queue::QueueClient::search`] says how). A page may hold fewer jobs
//! than asked, even none, and still have a `next_cursor`: each page reads a bounded stretch
//! of the index, so a filter that rarely matches answers quickly rather than slowly.

use axum::Router;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use gantry_queue::{JobKind, JobPage, JobQuery, JobStatus, JobSummary};
use serde::Deserialize;

use crate::auth::{Admin, JobsRead};
use crate::extract::ApiQuery;
use crate::problem::ApiError;
use crate::state::AppState;

/// A page's size when `limit` is absent.
const DEFAULT_LIMIT: usize = 50;

/// The search routes (`GET /v1/jobs` shares its path with `POST /v1/jobs`, see
/// [`crate::api::routes`]).
pub fn routes() -> Router<AppState> {
    Router::new().route("/v1/admin/jobs", get(admin_search))
}

/// The filters both routes take.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct TenantParams {
    status: Option<JobStatus>,
    kind: Option<JobKind>,
    user: Option<String>,
    created_after: Option<u64>,
    created_before: Option<u64>,
    limit: Option<usize>,
    cursor: Option<String>,
}

/// The operators' filters: the tenant's, and the tenant (absent: every tenant).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AdminParams {
    tenant: Option<String>,
    status: Option<JobStatus>,
    kind: Option<JobKind>,
    user: Option<String>,
    created_after: Option<u64>,
    created_before: Option<u64>,
    limit: Option<usize>,
    cursor: Option<String>,
}

/// `GET /v1/jobs` and `GET /v1/admin/jobs`: a page of jobs.
#[derive(serde::Serialize)]
struct Page {
    jobs: Vec<JobSummary>,
    next_cursor: Option<String>,
}

impl From<JobPage> for Page {
    fn from(p: JobPage) -> Self {
        Self {
            jobs: p.jobs,
            next_cursor: p.next_cursor,
        }
    }
}

/// `GET /v1/jobs`.
pub(crate) async fn tenant_search(
    State(state): State<AppState>,
    JobsRead(c): JobsRead,
    ApiQuery(p): ApiQuery<TenantParams>,
) -> Result<Response, ApiError> {
    let query = JobQuery {
        tenant: Some(c.tenant),
        user: p.user,
        user_tenants: Vec::new(),
        kind: p.kind,
        status: p.status,
        created_after_ms: p.created_after,
        created_before_ms: p.created_before,
    };
    search(&state, &query, p.limit, p.cursor.as_deref()).await
}

async fn admin_search(
    State(state): State<AppState>,
    Admin(_): Admin,
    ApiQuery(p): ApiQuery<AdminParams>,
) -> Result<Response, ApiError> {
    // A user id is its tenant's own: without a tenant, the user of that id in every tenant.
    let user_tenants = match (&p.tenant, &p.user) {
        (None, Some(_)) => state.cfg.tenants.keys().cloned().collect(),
        _ => Vec::new(),
    };
    let query = JobQuery {
        tenant: p.tenant,
        user: p.user,
        user_tenants,
        kind: p.kind,
        status: p.status,
        created_after_ms: p.created_after,
        created_before_ms: p.created_before,
    };
    search(&state, &query, p.limit, p.cursor.as_deref()).await
}

async fn search(
    state: &AppState,
    query: &JobQuery,
    limit: Option<usize>,
    cursor: Option<&str>,
) -> Result<Response, ApiError> {
    let page = state
        .queue
        .search(query, limit.unwrap_or(DEFAULT_LIMIT), cursor)
        .await?;
    Ok(axum::Json(Page::from(page)).into_response())
}
