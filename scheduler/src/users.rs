//! The users routes: `DELETE /v1/users/{user_id}/data`, erasure on request through
//! [`crate::erasure::Eraser`]. A tenant's `jobs:write` key erases its own users; an operator's
//! `admin` key names the tenant with `?tenant=`. `200` when nothing is left, `202` when a
//! running job had not stopped in time (call again: the request is idempotent).

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::delete;
use serde::Deserialize;

use crate::auth::Caller;
use crate::config::Scope;
use crate::erasure::ErasureError;
use crate::extract::ApiQuery;
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

/// The tenant a users route acts for: the caller's own (with `own`, or `admin`), or any with
/// `admin` and `?tenant=`. An unknown tenant has no such user: not found.
pub(crate) fn acting_tenant(
    state: &AppState,
    who: &Caller,
    asked: Option<String>,
    own: Scope,
) -> Result<String, ApiError> {
    let tenant = match asked {
        Some(t) if t != who.tenant => {
            who.require(Scope::Admin)?;
            t
        }
        _ => {
            if who.require(Scope::Admin).is_err() {
                who.require(own)?;
            }
            who.tenant.clone()
        }
    };
    if !state.cfg.tenants.contains_key(&tenant) {
        return Err(ApiError::NotFound);
    }
    Ok(tenant)
}

async fn erase(
    State(state): State<AppState>,
    who: Caller,
    Path(user): Path<String>,
    ApiQuery(q): ApiQuery<EraseQuery>,
) -> Result<Response, ApiError> {
    let tenant = acting_tenant(&state, &who, q.tenant, Scope::JobsWrite)?;
    let eraser = state.eraser.as_ref().ok_or(ApiError::NotConfigured(
        "erasure needs the output store: set `outputs` in the scheduler config (or --outputs)",
    ))?;
    let receipt = eraser.erase(&who.actor(), &tenant, &user).await.map_err(|e| match e {
        ErasureError::InvalidUser => ApiError::InvalidRequest(e.to_string()),
        ErasureError::Queue(q) => q.into(),
        ErasureError::Store(_) => {
            tracing::error!(error = %e, "the output store failed during an erasure");
            ApiError::Unavailable
        }
        ErasureError::Audit(s) => crate::problem::safety_error(s),
    })?;
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
