//! The two routers: the API (every route module's routes behind the authentication layer, the
//! OpenAPI document, `/healthz`) and the metrics listener's (`/metrics`: autoscaling signals,
//! see [`crate::metrics`]).

use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{HeaderMap, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use tracing::Instrument as _;

use crate::metrics::{RouteLabels, SchedulerMetrics};
use crate::problem::ApiError;
use crate::state::AppState;

/// The OpenAPI document, kept in the repo beside this file.
pub const OPENAPI: &str = include_str!("../openapi.json");

/// The API's router. Every `/v1` route runs behind [`crate::auth::authenticate`], so a request
/// without a valid key is answered 401 before its body is read; the body limits apply after it.
/// Every request, refused or not, is counted by route pattern and status ([`track`]).
/// `/metrics` is not here: it is served on a listener of its own ([`metrics_router`]).
pub fn router(state: AppState) -> Router {
    let metrics = state.metrics.clone();
    let limit = state.cfg.max_body_bytes;
    let authenticated = Router::new()
        .merge(crate::api::routes())
        .merge(crate::job_search::routes())
        .merge(crate::pipeline_routes::routes())
        .merge(crate::outputs::routes())
        .merge(crate::sse::routes())
        .merge(crate::webhook_routes::routes())
        .merge(crate::admin::routes())
        .merge(crate::safety_admin::routes())
        .merge(crate::safety_cases::routes())
        .merge(crate::users::routes())
        .merge(crate::exports::routes())
        .route_layer(axum::middleware::from_fn_with_state(
            state.keys.clone(),
            crate::auth::authenticate,
        ));
    Router::new()
        .merge(authenticated)
        .merge(crate::console::routes())
        .route("/openapi.json", get(openapi))
        .route("/healthz", get(|| async { "ok" }))
        .fallback(|| async { ApiError::NoRoute })
        .layer(DefaultBodyLimit::max(limit))
        .layer(axum::middleware::from_fn_with_state(metrics, track))
        .with_state(state)
}

/// Counts a request and times it, labelled by the route pattern it matched (`/v1/jobs/{id}`,
/// never the path itself: ids and user keys stay out of the metrics) and the status answered;
/// and runs it in a server span (`POST /v1/jobs`) that continues the caller's trace when the
/// request carries a W3C `traceparent` header. The span names the route, never the path.
async fn track(State(metrics): State<Arc<SchedulerMetrics>>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", MatchedPath::as_str)
        .to_owned();
    // Any token is a method to HTTP; only the standard ones become label values.
    let method = match *req.method() {
        Method::GET | Method::POST | Method::PUT | Method::PATCH | Method::DELETE | Method::HEAD | Method::OPTIONS => {
            req.method().as_str()
        }
        _ => "other",
    }
    .to_owned();
    let span = tracing::info_span!(
        "http.request",
        otel.name = %format_args!("{method} {route}"),
        otel.kind = "server",
        http.request.method = %method,
        http.route = %route,
        http.response.status_code = tracing::field::Empty,
    );
    if let Some(tp) = req.headers().get("traceparent").and_then(|v| v.to_str().ok()) {
        gantry_queue::trace::set_parent(&span, tp);
    }
    let began = Instant::now();
    let res = next.run(req).instrument(span.clone()).await;
    span.record("http.response.status_code", res.status().as_u16());
    metrics.observe_request(RouteLabels { route, method }, res.status().as_u16(), began.elapsed());
    res
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
    let lists = state.hashlists.lists().await;
    if let Err(e) = &lists {
        tracing::warn!(error = %e, "hash lists unreadable; their gauges keep the last readings");
    }
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    state.metrics.observe_hashlists(lists.ok().as_deref(), now_ms);
    match (state.reviews.backlog().await, state.reports.backlog().await) {
        (Ok(reviews), Ok(reports)) => state.metrics.observe_safety(reviews, &reports, now_ms),
        (Err(e), _) | (_, Err(e)) => {
            tracing::warn!(error = %e, "review and report backlogs unreadable; their gauges keep the last readings")
        }
    }
    if let Some(w) = &state.webhooks {
        match w.store.backlog_age_ms().await {
            Ok((age_ms, due)) => {
                state.metrics.webhook_backlog_age.set(age_ms as f64 / 1000.0);
                state
                    .metrics
                    .webhook_backlog
                    .set(i64::try_from(due).unwrap_or(i64::MAX));
            }
            Err(e) => tracing::warn!(error = %e, "webhook backlog unreadable; its gauges keep the last readings"),
        }
    }
    if let Some(hub) = &state.events {
        state
            .metrics
            .sse_clients
            .set(i64::try_from(hub.clients()).unwrap_or(i64::MAX));
    }
    let accept = headers.get(axum::http::header::ACCEPT).and_then(|v| v.to_str().ok());
    let (content_type, body) = state.metrics.render(&state.cfg, &state.loads, accept);
    ([(axum::http::header::CONTENT_TYPE, content_type)], body).into_response()
}

/// The document as served: the committed one, its job schemas built from the rules
/// admission enforces (the same, while the committed one is current: a test proves it).
static DOCUMENT: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| crate::contract::document(OPENAPI).to_string());

async fn openapi() -> Response {
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        DOCUMENT.as_str(),
    )
        .into_response()
}
