//! Operator routes for trust-and-safety cases: the review queue, reports to the authority,
//! preserved evidence and the categories' policies.
//!
//! - `GET  /v1/admin/reviews?status=pending|all&limit=` (`safety:review`): held jobs, newest
//!   first
//! - `GET  /v1/admin/reviews/{id}` (`safety:review`): one item (files, matches, decision)
//! - `GET  /v1/admin/reviews/{id}/files/{index}` (`safety:review`): a held file's bytes, for the
//!   reviewer to look at (each view audited)
//! - `POST /v1/admin/reviews/{id}` (`safety:review`): `{"decision": "clear" | "confirm",
//!   "reason": "…", "allow_list": bool}` — clear releases the job (and with `allow_list` the
//!   files' SHA-256 are not held again); confirm takes the content down (preserved, deleted,
//!   trust, events, a report queued where the category reports) and ends the job `blocked`
//! - `GET  /v1/admin/reports?limit=`, `GET /v1/admin/reports/{id}` (`safety:review`)
//! - `POST /v1/admin/reports/{id}/submit` (`safety:review`): `{"reason": "…"}` — submits a report
//!   awaiting confirmation, or retries a failed one
//! - `GET  /v1/admin/evidence/{id}?reason=…` (`safety:evidence`): a case's preserved files
//! - `GET  /v1/admin/evidence/{id}/files/{index}?reason=…` (`safety:evidence`): one, opened
//! - `GET  /v1/admin/safety/categories` (`admin`): every category's policy
//! - `PUT|DELETE /v1/admin/safety/categories/{category}` (`admin`): set or reset one
//!
//! Every decision, submission, evidence read and policy change is audited with the caller and
//! the reason.

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use gantry_safety::review::{Decision, ReviewItem, ReviewStatus};
use gantry_safety::{CategoryPolicy, Takedown};
use serde::Deserialize;

use crate::audit::audited;
use crate::auth::{Admin, Caller, SafetyEvidence, SafetyReview};
use crate::extract::{ApiJson, ApiQuery, list_limit};
use crate::problem::{ApiError, safety_error};
use crate::state::AppState;

/// Largest held file served to a reviewer.
const MAX_VIEW_BYTES: u64 = 512 << 20;

/// The routes.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/admin/reviews", get(list_reviews))
        .route("/v1/admin/reviews/{id}", get(show_review).post(decide))
        .route("/v1/admin/reviews/{id}/files/{index}", get(review_file))
        .route("/v1/admin/reports", get(list_reports))
        .route("/v1/admin/reports/{id}", get(show_report))
        .route("/v1/admin/reports/{id}/submit", post(submit_report))
        .route("/v1/admin/evidence/{id}", get(show_evidence))
        .route("/v1/admin/evidence/{id}/files/{index}", get(evidence_file))
        .route("/v1/admin/safety/categories", get(list_categories))
        .route(
            "/v1/admin/safety/categories/{category}",
            put(set_category).delete(reset_category),
        )
}

fn check_id(id: &str) -> Result<(), ApiError> {
    gantry_safety::hashlists::check_name(id).map_err(|_| ApiError::NotFound)
}

fn file_index(index: &str) -> Result<usize, ApiError> {
    index
        .parse()
        .map_err(|_| ApiError::InvalidRequest("index: a file's number, from 0".into()))
}

/// A reason an operator gives: 1 to 500 characters (400 otherwise, as the schema says), not
/// only whitespace (422: the schema's pattern, which not every client's regex engine applies
/// the same way to every whitespace character).
pub(crate) fn check_reason(reason: &str) -> Result<&str, ApiError> {
    if reason.is_empty() || reason.chars().count() > 500 {
        return Err(ApiError::InvalidRequest(
            "reason: required, at most 500 characters".into(),
        ));
    }
    let r = reason.trim();
    if r.is_empty() {
        return Err(ApiError::Unprocessable("reason: more than whitespace".into()));
    }
    Ok(r)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    status: Option<String>,
    limit: Option<usize>,
}

#[derive(serde::Serialize)]
struct Reviews {
    reviews: Vec<ReviewItem>,
    pending: u64,
}

async fn list_reviews(
    State(state): State<AppState>,
    SafetyReview(_): SafetyReview,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<Response, ApiError> {
    let pending_only = match q.status.as_deref() {
        None | Some("pending") => true,
        Some("all") => false,
        Some(_) => return Err(ApiError::InvalidRequest("status: pending or all".into())),
    };
    let reviews = state
        .reviews
        .list(pending_only, list_limit(q.limit)?)
        .await
        .map_err(safety_error)?;
    let pending = state.reviews.pending_count().await.map_err(safety_error)?;
    Ok(axum::Json(Reviews { reviews, pending }).into_response())
}

async fn review_of(state: &AppState, id: &str) -> Result<ReviewItem, ApiError> {
    check_id(id)?;
    state
        .reviews
        .get(id)
        .await
        .map_err(safety_error)?
        .ok_or(ApiError::NotFound)
}

async fn show_review(
    State(state): State<AppState>,
    SafetyReview(_): SafetyReview,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    Ok(axum::Json(review_of(&state, &id).await?).into_response())
}

async fn review_file(
    State(state): State<AppState>,
    SafetyReview(who): SafetyReview,
    Path((id, index)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let index = file_index(&index)?;
    let item = review_of(&state, &id).await?;
    if item.status != ReviewStatus::Pending {
        return Err(ApiError::Conflict(format!(
            "review {id} is {}: its files are no longer held here",
            item.status.as_str()
        )));
    }
    let file = item.files.get(index).ok_or(ApiError::NotFound)?;
    let store = state
        .outputs
        .as_ref()
        .ok_or(ApiError::NotConfigured("no output store is configured (outputs)"))?;
    let bytes = store.get_bounded(&file.object, MAX_VIEW_BYTES).await.map_err(|e| {
        if e.is_not_found() {
            ApiError::NotFound
        } else {
            ApiError::Unavailable
        }
    })?;
    audited(
        &state,
        &who,
        "review.view",
        format!("review:{id}"),
        serde_json::json!({ "file": index, "sha256": file.sha256 }),
    )
    .await?;
    Ok((
        [
            (header::CONTENT_TYPE, gantry_store::content_type_of(&file.name)),
            (header::CACHE_CONTROL, "no-store"),
        ],
        bytes,
    )
        .into_response())
}

/// `POST /v1/admin/reviews/{id}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DecisionBody {
    /// `clear` or `confirm`.
    decision: String,
    /// Why (required).
    reason: String,
    /// Clear only: put the files' SHA-256 on the allow list.
    #[serde(default)]
    allow_list: bool,
}

async fn decide(
    State(state): State<AppState>,
    SafetyReview(who): SafetyReview,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<DecisionBody>,
) -> Result<Response, ApiError> {
    let reason = check_reason(&body.reason)?.to_owned();
    let item = review_of(&state, &id).await?;
    if item.status != ReviewStatus::Pending {
        return Err(ApiError::Conflict(format!(
            "review {id} was already decided ({})",
            item.status.as_str()
        )));
    }
    let decided = match body.decision.as_str() {
        "clear" => clear(&state, &who, item, &reason, body.allow_list).await?,
        "confirm" if body.allow_list => {
            return Err(ApiError::InvalidRequest("allow_list goes with clear only".into()));
        }
        "confirm" => confirm(&state, &who, item, &reason).await?,
        _ => return Err(ApiError::InvalidRequest("decision: clear or confirm".into())),
    };
    Ok(axum::Json(decided).into_response())
}

/// Ends the held job: `release` as a success, else blocked. A job already ended the same way
/// (a retried decision) or gone (erased, expired) is no error.
async fn settle(state: &AppState, item: &ReviewItem, release: bool, message: &str) -> Result<(), ApiError> {
    let id = crate::api::parse_id(&item.id)?;
    let held = release.then_some(&item.held);
    match state.queue.settle_review(id, held, message).await {
        Ok(_) | Err(gantry_queue::QueueError::NotFound(_)) => Ok(()),
        Err(gantry_queue::QueueError::AlreadyFinished { status, .. })
            if status == if release { "succeeded" } else { "blocked" } =>
        {
            Ok(())
        }
        Err(e) => Err(e.into()),
    }
}

fn ttl_for(state: &AppState, category: &str) -> u64 {
    gantry_safety::Retention::from(&state.cfg.retention).ttl_secs(category)
}

async fn clear(
    state: &AppState,
    who: &Caller,
    mut item: ReviewItem,
    reason: &str,
    allow_list: bool,
) -> Result<ReviewItem, ApiError> {
    if allow_list {
        let shas: Vec<String> = item.files.iter().map(|f| f.sha256.clone()).collect();
        state.reviews.allow(&shas).await.map_err(safety_error)?;
    }
    settle(state, &item, true, "").await?;
    let standing = state.trust.status(&item.tenant, &item.user).await?;
    let t = Takedown {
        job_id: &item.id,
        tenant: &item.tenant,
        user: &item.user,
        prompt_sha256: item.prompt_sha256.clone(),
        input: None,
        matches: &item.matches,
        reviewer: Some(&who.actor()),
    };
    gantry_safety::enforce::record_events(&state.moderation, &t, "cleared_after_review", (0, standing), "-cleared")
        .await
        .map_err(safety_error)?;
    item.status = ReviewStatus::Cleared;
    item.decision = Some(Decision {
        by: who.actor(),
        at_ms: gantry_safety::trust::now_ms(),
        reason: reason.to_owned(),
        allow_listed: allow_list,
    });
    state
        .reviews
        .close(&item, ttl_for(state, &item.category))
        .await
        .map_err(safety_error)?;
    tracing::info!(review = %item.id, category = %item.category, allow_listed = allow_list, "review cleared: released");
    audited(
        state,
        who,
        "review.clear",
        format!("review:{}", item.id),
        serde_json::json!({ "reason": reason, "allow_listed": allow_list, "category": item.category }),
    )
    .await?;
    Ok(item)
}

async fn confirm(state: &AppState, who: &Caller, mut item: ReviewItem, reason: &str) -> Result<ReviewItem, ApiError> {
    let enforcer = state
        .enforcer
        .as_ref()
        .ok_or(ApiError::NotConfigured("no output store is configured (outputs)"))?;
    let actor = who.actor();
    let done = enforcer
        .take_down(&Takedown {
            job_id: &item.id,
            tenant: &item.tenant,
            user: &item.user,
            prompt_sha256: item.prompt_sha256.clone(),
            input: item.input.as_deref(),
            matches: &item.matches,
            reviewer: Some(&actor),
        })
        .await
        .map_err(safety_error)?;
    let first = item.matches.first().cloned();
    let message = match &first {
        Some(m) => format!(
            "blocked: a reviewer confirmed its match with list {} v{} ({}); {} object(s) deleted",
            m.list, m.list_version, m.category, done.deleted
        ),
        None => "blocked: a reviewer confirmed the match".into(),
    };
    settle(state, &item, false, &message).await?;
    item.status = ReviewStatus::Confirmed;
    item.evidence_id = done.evidence_id.clone();
    item.report_id = done.report.as_ref().map(|(id, _)| id.clone());
    item.decision = Some(Decision {
        by: actor,
        at_ms: gantry_safety::trust::now_ms(),
        reason: reason.to_owned(),
        allow_listed: false,
    });
    state
        .reviews
        .close(&item, ttl_for(state, &item.category))
        .await
        .map_err(safety_error)?;
    tracing::warn!(
        review = %item.id,
        category = %item.category,
        deleted = done.deleted,
        preserved = done.evidence_id.is_some(),
        reported = done.report.is_some(),
        user_blocked = done.standing.blocked,
        "review confirmed: taken down"
    );
    audited(
        state,
        who,
        "review.confirm",
        format!("review:{}", item.id),
        serde_json::json!({
            "reason": reason, "category": item.category, "deleted": done.deleted,
            "evidence": done.evidence_id, "report": item.report_id, "unpreserved": done.unpreserved,
        }),
    )
    .await?;
    Ok(item)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LimitQuery {
    limit: Option<usize>,
}

#[derive(serde::Serialize)]
struct ReportList {
    reports: Vec<gantry_safety::Report>,
    queued: u64,
}

async fn list_reports(
    State(state): State<AppState>,
    SafetyReview(_): SafetyReview,
    ApiQuery(q): ApiQuery<LimitQuery>,
) -> Result<Response, ApiError> {
    let reports = state.reports.list(list_limit(q.limit)?).await.map_err(safety_error)?;
    let queued = state.reports.queued_count().await.map_err(safety_error)?;
    Ok(axum::Json(ReportList { reports, queued }).into_response())
}

async fn show_report(
    State(state): State<AppState>,
    SafetyReview(_): SafetyReview,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    check_id(&id)?;
    let r = state
        .reports
        .get(&id)
        .await
        .map_err(safety_error)?
        .ok_or(ApiError::NotFound)?;
    Ok(axum::Json(r).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReasonBody {
    reason: String,
}

async fn submit_report(
    State(state): State<AppState>,
    SafetyReview(who): SafetyReview,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<ReasonBody>,
) -> Result<Response, ApiError> {
    let reason = check_reason(&body.reason)?;
    check_id(&id)?;
    let r = state.reports.queue(&id, &who.actor()).await.map_err(safety_error)?;
    audited(
        &state,
        &who,
        "report.submit",
        format!("report:{id}"),
        serde_json::json!({ "reason": reason }),
    )
    .await?;
    Ok(axum::Json(r).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EvidenceQuery {
    reason: Option<String>,
}

fn evidence_reason(q: &EvidenceQuery) -> Result<&str, ApiError> {
    check_reason(q.reason.as_deref().unwrap_or_default()).map_err(|e| match e {
        ApiError::InvalidRequest(_) => {
            ApiError::InvalidRequest("reason: required (why this evidence is read), at most 500 characters".into())
        }
        other => other,
    })
}

async fn show_evidence(
    State(state): State<AppState>,
    SafetyEvidence(who): SafetyEvidence,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<EvidenceQuery>,
) -> Result<Response, ApiError> {
    let reason = evidence_reason(&q)?;
    check_id(&id)?;
    let vault = state
        .enforcer
        .as_ref()
        .map(|e| e.vault())
        .ok_or(ApiError::NotConfigured("no output store is configured (outputs)"))?;
    let record = vault.get(&id).await.map_err(safety_error)?.ok_or(ApiError::NotFound)?;
    audited(
        &state,
        &who,
        "evidence.view",
        format!("evidence:{id}"),
        serde_json::json!({ "reason": reason }),
    )
    .await?;
    Ok(axum::Json(record).into_response())
}

async fn evidence_file(
    State(state): State<AppState>,
    SafetyEvidence(who): SafetyEvidence,
    Path((id, index)): Path<(String, String)>,
    ApiQuery(q): ApiQuery<EvidenceQuery>,
) -> Result<Response, ApiError> {
    let reason = evidence_reason(&q)?.to_owned();
    let index = file_index(&index)?;
    check_id(&id)?;
    let vault = state
        .enforcer
        .as_ref()
        .map(|e| e.vault())
        .ok_or(ApiError::NotConfigured("no output store is configured (outputs)"))?;
    let dir = tempfile::tempdir().map_err(|e| {
        tracing::error!(error = %e, "scratch space for evidence");
        ApiError::Internal
    })?;
    let path = dir.path().join("evidence");
    // Audited before a byte leaves: an access that fails half-way is still on record.
    audited(
        &state,
        &who,
        "evidence.read",
        format!("evidence:{id}"),
        serde_json::json!({ "file": index, "reason": reason }),
    )
    .await?;
    let file = vault.open_file(&id, index, &path).await.map_err(|e| match e {
        gantry_safety::SafetyError::NoRecord { .. } => ApiError::NotFound,
        gantry_safety::SafetyError::Evidence(m) if m.contains("no evidence keys") => {
            ApiError::NotConfigured("no evidence keys (GANTRY_EVIDENCE_KEYS) to open evidence with")
        }
        other => safety_error(other),
    })?;
    let handle = tokio::fs::File::open(&path).await.map_err(|_| ApiError::Internal)?;
    // The opened copy is unlinked at once; the open handle streams it and nothing stays behind.
    drop(dir);
    let body = Body::from_stream(tokio_util::io::ReaderStream::new(handle));
    Ok((
        StatusCode::OK,
        [
            (
                header::CONTENT_TYPE,
                gantry_store::content_type_of(&file.name).to_owned(),
            ),
            (header::CACHE_CONTROL, "no-store".to_owned()),
            (header::CONTENT_LENGTH, file.size.to_string()),
        ],
        body,
    )
        .into_response())
}

#[derive(serde::Serialize)]
struct Categories {
    categories: std::collections::BTreeMap<String, CategoryPolicy>,
}

async fn list_categories(State(state): State<AppState>, Admin(_): Admin) -> Result<Response, ApiError> {
    let categories = state.policies.all().await.map_err(safety_error)?;
    Ok(axum::Json(Categories { categories }).into_response())
}

async fn set_category(
    State(state): State<AppState>,
    Admin(who): Admin,
    Path(category): Path<String>,
    ApiJson(policy): ApiJson<CategoryPolicy>,
) -> Result<Response, ApiError> {
    state.policies.set(&category, &policy).await.map_err(safety_error)?;
    audited(
        &state,
        &who,
        "safety.category.set",
        format!("category:{category}"),
        serde_json::to_value(&policy).unwrap_or_default(),
    )
    .await?;
    Ok(axum::Json(policy).into_response())
}

async fn reset_category(
    State(state): State<AppState>,
    Admin(who): Admin,
    Path(category): Path<String>,
) -> Result<Response, ApiError> {
    if !state.policies.reset(&category).await.map_err(safety_error)? {
        return Err(ApiError::NotFound);
    }
    audited(
        &state,
        &who,
        "safety.category.reset",
        format!("category:{category}"),
        serde_json::Value::Null,
    )
    .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
