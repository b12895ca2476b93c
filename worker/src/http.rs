//! The worker's HTTP endpoints: `/metrics` (OpenMetrics), `/healthz` (the process answers) and
//! `/readyz` (Redis answers and the worker is not draining).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use tokio_util::sync::CancellationToken;

use crate::metrics::WorkerMetrics;

/// What the endpoints read.
#[derive(Clone, Debug)]
pub struct HttpState {
    /// The metrics.
    pub metrics: Arc<WorkerMetrics>,
    /// Set while Redis answers the worker's calls.
    pub redis_ok: Arc<AtomicBool>,
    /// Cancelled when the worker starts draining.
    pub shutdown: CancellationToken,
}

/// The router.
pub fn router(state: HttpState) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready))
        .with_state(state)
}

/// In the format the scraper's `Accept` asks for most (`gantry_queue::exposition`): the
/// protobuf one with native histograms, OpenMetrics, or the classic text.
async fn metrics(State(s): State<HttpState>, headers: axum::http::HeaderMap) -> impl IntoResponse {
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok());
    let (content_type, body) = s.metrics.render(accept);
    ([(header::CONTENT_TYPE, content_type)], body)
}

async fn ready(State(s): State<HttpState>) -> impl IntoResponse {
    if s.shutdown.is_cancelled() {
        (StatusCode::SERVICE_UNAVAILABLE, "draining\n")
    } else if !s.redis_ok.load(Ordering::Relaxed) {
        (StatusCode::SERVICE_UNAVAILABLE, "redis unreachable\n")
    } else {
        (StatusCode::OK, "ready\n")
    }
}

/// Binds `addr` and serves (with `extra` routes merged) until `stop`. Returns the bound address (port 0 picks a free one).
pub async fn serve(
    addr: SocketAddr,
    state: HttpState,
    extra: Option<Router>,
    stop: CancellationToken,
) -> std::io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let app = match extra {
        Some(more) => router(state).merge(more),
        None => router(state),
    };
    tokio::spawn(async move {
        let r = axum::serve(listener, app)
            .with_graceful_shutdown(async move { stop.cancelled().await })
            .await;
        if let Err(e) = r {
            tracing::warn!(error = %e, "metrics server stopped");
        }
    });
    Ok(bound)
}
