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

/// The filters both routes take (`tenant` only from operators).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Params {
    pub(crate) tenant: Option<String>,
    pub(crate) pipeline: Option<String>,
    pub(crate) status: Option<JobStatus>,
    pub(crate) kind: Option<JobKind>,
    pub(crate) user: Option<String>,
    pub(crate) created_after: Option<u64>,
    pub(crate) created_before: Option<u64>,
    pub(crate) limit: Option<usize>,
    pub(crate) cursor: Option<String>,
}

/// `GET /v1/jobs` and `GET /v1/admin/jobs`: a page of jobs.
#[derive(serde::Serialize)]
pub(crate) struct Page {
    pub(crate) jobs: Vec<JobSummary>,
    pub(crate) next_cursor: Option<String>,
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
    ApiQuery(p): ApiQuery<Params>,
) -> Result<Response, ApiError> {
    if p.tenant.is_some() {
        return Err(ApiError::InvalidRequest(
            "unknown field `tenant`: a tenant's search is its own (the tenant comes from the API key)".into(),
        ));
    }
    Ok(axum::Json(run(&state, Some(c.tenant), Vec::new(), p).await?).into_response())
}

async fn admin_search(
    State(state): State<AppState>,
    Admin(_): Admin,
    ApiQuery(p): ApiQuery<Params>,
) -> Result<Response, ApiError> {
    Ok(axum::Json(operator_search(&state, p).await?).into_response())
}

/// An operator's search (the admin API's and the console's): any tenant, or every tenant; a
/// user id without a tenant is that id's user in every tenant.
pub(crate) async fn operator_search(state: &AppState, p: Params) -> Result<Page, ApiError> {
    let user_tenants = match (&p.tenant, &p.user) {
        (None, Some(_)) => state.cfg.tenants.keys().cloned().collect(),
        _ => Vec::new(),
    };
    let tenant = p.tenant.clone();
    run(state, tenant, user_tenants, p).await
}

async fn run(state: &AppState, tenant: Option<String>, user_tenants: Vec<String>, p: Params) -> Result<Page, ApiError> {
    let query = JobQuery {
        tenant,
        user: p.user,
        user_tenants,
        kind: p.kind,
        status: p.status,
        created_after_ms: p.created_after,
        created_before_ms: p.created_before,
    };
    match p.pipeline {
        Some(pl) => pipeline_page(state, &query, &pl, p.limit, p.cursor.as_deref()).await,
        None => search(state, &query, p.limit, p.cursor.as_deref()).await,
    }
}

/// One pipeline's steps' jobs (at most 64, read from its record rather than an index), the
/// other filters applied, newest first; the cursor is an offset bound to the filters.
async fn pipeline_page(
    state: &AppState,
    query: &JobQuery,
    pipeline: &str,
    limit: Option<usize>,
    cursor: Option<&str>,
) -> Result<Page, ApiError> {
    use base64::Engine as _;
    let limit = limit.unwrap_or(DEFAULT_LIMIT);
    if limit == 0 || limit > gantry_queue::client::MAX_PAGE {
        return Err(ApiError::InvalidRequest(format!(
            "invalid field limit: must be 1..={}",
            gantry_queue::client::MAX_PAGE
        )));
    }
    let digest = gantry_queue::keys::digest_hex(format!("{pipeline}\0{query:?}").as_bytes())[..12].to_owned();
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let offset = match cursor {
        None => 0,
        Some(c) => b64
            .decode(c)
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .and_then(|t| {
                let rest = t.strip_prefix("pl1.")?;
                let (d, off) = rest.split_once('.')?;
                if d == digest { off.parse::<usize>().ok() } else { None }
            })
            .ok_or_else(|| ApiError::UnknownCursor("no such page: not a cursor of this search".into()))?,
    };
    let steps = state.pipelines.store().steps(query.tenant.as_deref(), pipeline).await?;
    let mut jobs = Vec::with_capacity(steps.len());
    for s in steps {
        let Ok(pool) = gantry_queue::Pool::new(&s.pool) else {
            continue;
        };
        match state.queue.job_in(&pool, s.job_id).await {
            Ok(r) if query.user.as_ref().is_none_or(|u| *u == r.spec.user) => {
                let j = JobSummary::of(&r);
                if j.matches(query) {
                    jobs.push(j);
                }
            }
            Ok(_) | Err(gantry_queue::QueueError::NotFound(_)) => {}
            Err(e) => return Err(e.into()),
        }
    }
    jobs.sort_by_key(|j| std::cmp::Reverse((j.enqueued_at_ms, j.id)));
    let rest: Vec<JobSummary> = jobs.into_iter().skip(offset).collect();
    let more = rest.len() > limit;
    let next_cursor = more.then(|| b64.encode(format!("pl1.{digest}.{}", offset + limit)));
    let jobs = rest.into_iter().take(limit).collect();
    Ok(Page { jobs, next_cursor })
}

async fn search(
    state: &AppState,
    query: &JobQuery,
    limit: Option<usize>,
    cursor: Option<&str>,
) -> Result<Page, ApiError> {
    let page = state
        .queue
        .search(query, limit.unwrap_or(DEFAULT_LIMIT), cursor)
        .await?;
    Ok(Page::from(page))
}
