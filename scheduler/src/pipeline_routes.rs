//! The pipeline routes ([`crate::pipelines`] says what a pipeline is):
//! - `POST /v1/pipelines` (`jobs:write`): admit and store a pipeline, all or nothing;
//! - `GET /v1/pipelines/{id}` (`jobs:read`): its status, every step's and the credits;
//! - `POST /v1/pipelines/{id}:cancel` (`jobs:write`): cancel every step that has not ended.
//!
//! A tenant sees only its own pipelines: another tenant's is "not found".

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

use crate::auth::{JobsRead, JobsWrite};
use crate::extract::ApiJson;
use crate::problem::ApiError;
use crate::state::AppState;

/// The pipeline routes.
pub fn routes() -> Router<AppState> {
    Router::new().route("/v1/pipelines", post(create)).route(
        "/v1/pipelines/{id}",
        get(show)
            .post(action)
            .layer(axum::middleware::from_fn(crate::api::methods_by_action)),
    )
}

async fn create(
    State(state): State<AppState>,
    JobsWrite(c): JobsWrite,
    headers: HeaderMap,
    ApiJson(body): ApiJson<serde_json::Value>,
) -> Result<Response, ApiError> {
    let key = crate::api::idempotency_key(&headers)?;
    let created = state.pipelines.create(&c, body, key).await?;
    let status = if created.duplicate {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok((status, axum::Json(created)).into_response())
}

async fn show(
    State(state): State<AppState>,
    JobsRead(c): JobsRead,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    Ok(axum::Json(state.pipelines.get(Some(&c.tenant), &id).await?).into_response())
}

/// `POST /v1/pipelines/{id}:cancel`.
#[derive(serde::Serialize)]
struct Cancelled {
    id: String,
    /// Steps told to stop (waiting and queued ones are cancelled at once, running ones at their
    /// next heartbeat).
    steps_cancelled: usize,
}

async fn action(
    State(state): State<AppState>,
    JobsWrite(c): JobsWrite,
    Path(segment): Path<String>,
) -> Result<Response, ApiError> {
    let Some((id, "cancel")) = segment.rsplit_once(':') else {
        return Err(ApiError::NoRoute);
    };
    let steps_cancelled = state.pipelines.cancel(Some(&c.tenant), id).await?;
    Ok((
        StatusCode::ACCEPTED,
        axum::Json(Cancelled {
            id: id.to_owned(),
            steps_cancelled,
        }),
    )
        .into_response())
}
