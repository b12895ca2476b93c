//! Operator routes for trust and safety (`admin` scope): the abuse hash lists every worker
//! matches against, the moderation events, and the audit log of operators' actions.
//!
//! - `GET    /v1/admin/hashlists`: every list's current version and counts
//! - `PUT    /v1/admin/hashlists/{name}?category=csam&block_distance=31&review_distance=31`:
//!   publish the body (the list file's text: `pdq:HEX`, `md5:HEX`, `sha256:HEX` or bare PDQ hex
//!   per line, `#` comments) as the list's next version; a bad line refuses the whole body with
//!   its line number. PDQ matches at or under `block_distance` are acted on at once, those
//!   farther and at or under `review_distance` are withheld for review (both 31 by default: no
//!   review band; a lower `block_distance` alone opens a band up to 31)
//! - `DELETE /v1/admin/hashlists/{name}`: the list stops matching at once
//! - `GET    /v1/admin/moderation-events?limit=`: the newest moderation records
//! - `GET    /v1/admin/audit?limit=`: the newest audit entries
//! - `GET    /v1/admin/trust/{tenant}/{user}`: a user's standing and its history
//! - `POST   /v1/admin/trust/{tenant}/{user}`: unblock, block, adjust or reset it, with a reason
//!
//! Every change is written to the audit log with the caller's tenant and key fingerprint.

use crate::extract::{ApiQuery, LimitedBody, list_limit};
use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use gantry_safety::HashList;
use serde::Deserialize;

use crate::audit::{audited, safety_error};
use crate::auth::Admin;
use crate::problem::ApiError;
use crate::state::AppState;

/// Largest list body accepted (about a million PDQ hashes; bigger lists load from a file with
/// `gantry hashlists load`).
const MAX_LIST_BYTES: usize = 64 << 20;

/// The trust-and-safety operator routes.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/admin/hashlists", get(list_lists))
        .route(
            "/v1/admin/hashlists/{name}",
            axum::routing::put(publish)
                .delete(remove)
                .layer(DefaultBodyLimit::max(MAX_LIST_BYTES)),
        )
        .route("/v1/admin/moderation-events", get(moderation_events))
        .route("/v1/admin/audit", get(audit))
        .route("/v1/admin/trust/{tenant}/{user}", get(trust_show).post(trust_change))
}

/// `GET /v1/admin/trust/{tenant}/{user}`: the user's standing and history (newest first). The
/// answer names the user by the pseudonymous key the records are kept under.
#[derive(serde::Serialize)]
pub(crate) struct TrustView {
    pub(crate) tenant: String,
    pub(crate) user_key: String,
    pub(crate) score: f64,
    pub(crate) blocked: bool,
    pub(crate) history: Vec<gantry_safety::TrustChange>,
}

/// `POST /v1/admin/trust/{tenant}/{user}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TrustChangeBody {
    /// `unblock`, `block`, `adjust` (with `delta`) or `reset`.
    action: String,
    #[serde(default)]
    delta: Option<f64>,
    /// Why: required, kept in the user's history and the audit log.
    reason: String,
}

/// The tenant (a configured one) and user of a trust route.
fn trust_target(state: &AppState, tenant: &str, user: &str) -> Result<(), ApiError> {
    if !state.cfg.tenants.contains_key(tenant) {
        return Err(ApiError::NotFound);
    }
    // Counted in characters, as the OpenAPI document's maxLength counts them.
    if user.is_empty() || user.chars().count() > 128 || user.chars().any(char::is_control) {
        return Err(ApiError::InvalidRequest(
            "user: 1-128 characters, no control characters".into(),
        ));
    }
    Ok(())
}

async fn trust_show(
    State(state): State<AppState>,
    Admin(_): Admin,
    Path((tenant, user)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    Ok(axum::Json(trust_of(&state, &tenant, &user).await?).into_response())
}

async fn trust_change(
    State(state): State<AppState>,
    Admin(who): Admin,
    Path((tenant, user)): Path<(String, String)>,
    crate::extract::ApiJson(body): crate::extract::ApiJson<TrustChangeBody>,
) -> Result<Response, ApiError> {
    let action = trust_action(&body.action, body.delta)?;
    let now = change_trust(&state, &who, &tenant, &user, action, &body.reason).await?;
    Ok(axum::Json(now).into_response())
}

/// The trust action `action` (with `delta` for `adjust`) names.
pub(crate) fn trust_action(action: &str, delta: Option<f64>) -> Result<gantry_safety::TrustAction, ApiError> {
    use gantry_safety::TrustAction;
    match (action, delta) {
        ("unblock", None) => Ok(TrustAction::Unblock),
        ("block", None) => Ok(TrustAction::Block),
        ("reset", None) => Ok(TrustAction::Reset),
        ("appeal", None) => Ok(TrustAction::Appeal),
        ("adjust", Some(d)) if d.is_finite() && d != 0.0 && (-1.0..=1.0).contains(&d) => Ok(TrustAction::Adjust(d)),
        ("adjust", _) => Err(ApiError::InvalidRequest(
            "delta: a non-zero number in -1..=1 is required with adjust".into(),
        )),
        ("unblock" | "block" | "reset" | "appeal", Some(_)) => {
            Err(ApiError::InvalidRequest("delta goes with adjust only".into()))
        }
        _ => Err(ApiError::InvalidRequest(
            "action: one of unblock, block, adjust, reset, appeal".into(),
        )),
    }
}

/// Changes a user's trust standing for an operator, with a required reason (at most 500
/// characters), kept in the user's history and audited.
pub(crate) async fn change_trust(
    state: &AppState,
    who: &crate::auth::Caller,
    tenant: &str,
    user: &str,
    action: gantry_safety::TrustAction,
    reason: &str,
) -> Result<gantry_safety::TrustStatus, ApiError> {
    trust_target(state, tenant, user)?;
    let reason = crate::safety_cases::check_reason(reason)?;
    let by = format!("operator:{}", who.actor());
    let now = state.trust.administer(tenant, user, action, &by, reason).await?;
    let user_key = gantry_queue::user_key(tenant, user);
    tracing::info!(tenant = %tenant, user_key = %user_key, action = action.name(), "trust changed by an operator");
    let delta = match action {
        gantry_safety::TrustAction::Adjust(d) => Some(d),
        _ => None,
    };
    audited(
        state,
        who,
        &format!("trust.{}", action.name()),
        format!("trust:{tenant}/{user_key}"),
        serde_json::json!({
            "reason": reason, "delta": delta, "score": now.score, "blocked": now.blocked,
        }),
    )
    .await?;
    Ok(now)
}

/// A user's standing and its history, for an operator.
pub(crate) async fn trust_of(state: &AppState, tenant: &str, user: &str) -> Result<TrustView, ApiError> {
    trust_target(state, tenant, user)?;
    let now = state.trust.status(tenant, user).await?;
    let history = state.trust.history(tenant, user).await?;
    Ok(TrustView {
        user_key: gantry_queue::user_key(tenant, user),
        tenant: tenant.to_owned(),
        score: now.score,
        blocked: now.blocked,
        history,
    })
}

async fn list_lists(State(state): State<AppState>, Admin(_): Admin) -> Result<Response, ApiError> {
    let lists = state.hashlists.lists().await.map_err(safety_error)?;
    Ok(axum::Json(HashLists { hashlists: lists }).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PublishQuery {
    category: Option<String>,
    block_distance: Option<u32>,
    review_distance: Option<u32>,
}

async fn publish(
    State(state): State<AppState>,
    Admin(who): Admin,
    Path(name): Path<String>,
    ApiQuery(q): ApiQuery<PublishQuery>,
    LimitedBody(bytes): LimitedBody<MAX_LIST_BYTES>,
) -> Result<Response, ApiError> {
    let category = q.category.unwrap_or_else(|| "csam".into());
    if bytes.is_empty() {
        return Err(ApiError::InvalidRequest(
            "no body: send the list, one hash per line (pdq:, md5: or sha256:)".into(),
        ));
    }
    let text =
        std::str::from_utf8(&bytes).map_err(|_| ApiError::InvalidRequest("the list must be UTF-8 text".into()))?;
    let max = gantry_safety::hashlists::MAX_DISTANCE;
    let block = q.block_distance.unwrap_or(max);
    let thresholds =
        gantry_safety::hashlists::Thresholds::new(block, q.review_distance.unwrap_or(max)).map_err(safety_error)?;
    let meta = publish_list(&state, &who, &name, &category, thresholds, text).await?;
    Ok(axum::Json(meta).into_response())
}

/// Publishes `text` (a list file's text) as list `name`'s next version, for an operator, audited.
pub(crate) async fn publish_list(
    state: &AppState,
    who: &crate::auth::Caller,
    name: &str,
    category: &str,
    thresholds: gantry_safety::hashlists::Thresholds,
    text: &str,
) -> Result<gantry_safety::hashlists::ListMeta, ApiError> {
    let category_ok = !category.is_empty()
        && category.len() <= 32
        && category
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if !category_ok {
        return Err(ApiError::InvalidRequest(
            "category: 1-32 characters of a-z, 0-9, '_'".into(),
        ));
    }
    let list = HashList::parse(text).map_err(safety_error)?;
    let meta = state
        .hashlists
        .publish_with(name, category, thresholds, &list)
        .await
        .map_err(safety_error)?;
    tracing::info!(list = %meta.name, version = meta.version, category = %meta.category, "hash list published by an operator");
    audited(
        state,
        who,
        "hashlist.publish",
        &meta.name,
        serde_json::json!({
            "version": meta.version, "category": meta.category,
            "pdq": meta.pdq, "md5": meta.md5, "sha256": meta.sha256,
            "block_distance": meta.block_distance, "review_distance": meta.review_distance,
        }),
    )
    .await?;
    Ok(meta)
}

/// Removes list `name` for an operator, audited; `NotFound` if there is none.
pub(crate) async fn remove_list(state: &AppState, who: &crate::auth::Caller, name: &str) -> Result<(), ApiError> {
    gantry_safety::hashlists::check_name(name).map_err(safety_error)?;
    if !state.hashlists.remove(name).await.map_err(safety_error)? {
        return Err(ApiError::NotFound);
    }
    tracing::info!(list = %name, "hash list removed by an operator");
    audited(state, who, "hashlist.remove", name, serde_json::Value::Null).await
}

async fn remove(
    State(state): State<AppState>,
    Admin(who): Admin,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    remove_list(&state, &who, &name).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LimitQuery {
    limit: Option<usize>,
}

async fn moderation_events(
    State(state): State<AppState>,
    Admin(_): Admin,
    ApiQuery(q): ApiQuery<LimitQuery>,
) -> Result<Response, ApiError> {
    let events = state
        .moderation
        .recent(list_limit(q.limit)?)
        .await
        .map_err(safety_error)?;
    Ok(axum::Json(ModerationEvents {
        moderation_events: events,
    })
    .into_response())
}

async fn audit(
    State(state): State<AppState>,
    Admin(_): Admin,
    ApiQuery(q): ApiQuery<LimitQuery>,
) -> Result<Response, ApiError> {
    let entries = state.audit.recent(list_limit(q.limit)?).await.map_err(safety_error)?;
    Ok(axum::Json(AuditEntries { audit: entries }).into_response())
}

/// `GET /v1/admin/hashlists`: every list's current version and counts.
#[derive(serde::Serialize)]
struct HashLists {
    hashlists: Vec<gantry_safety::hashlists::ListMeta>,
}

/// `GET /v1/admin/moderation-events`: the newest first.
#[derive(serde::Serialize)]
struct ModerationEvents {
    moderation_events: Vec<gantry_safety::ModerationEvent>,
}

/// `GET /v1/admin/audit`: the newest first.
#[derive(serde::Serialize)]
struct AuditEntries {
    audit: Vec<gantry_safety::AuditEntry>,
}
