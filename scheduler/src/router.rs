//! The two routers: the API (every route module's routes behind the authentication layer, the
//! OpenAPI document, `/healthz`) and the metrics listener's (`/metrics`: autoscaling signals,
//! see [`crate::metrics`]).

use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::problem::ApiError;
use crate::state::AppState;

/// The OpenAPI document, kept in the repo beside this file.
pub const OPENAPI: &str = include_str!("../openapi.json");

/// The API's router. Every `/v1` route runs behind [`crate::auth::authenticate`], so a request
/// without a valid key is answered 401 before its body is read; the body limits apply after it.
/// `/metrics` is not here: it is served on a listener of its own ([`metrics_router`]).
pub fn router(state: AppState) -> Router {
    let limit = state.cfg.max_body_bytes;
    let authenticated = Router::new()
        .merge(crate::api::routes())
        .merge(crate::admin::routes())
        .merge(crate::safety_admin::routes())
        .merge(crate::users::routes())
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
