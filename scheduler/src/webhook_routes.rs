//! The webhook routes, each on the caller's own tenant's endpoints:
//!
//! - `POST /v1/webhooks` (`jobs:write`): register an endpoint (URL, event types); the answer
//!   holds its signing secret, shown this once.
//! - `GET /v1/webhooks`, `GET /v1/webhooks/{id}` (`jobs:read`): endpoints, without secrets,
//!   with why one was disabled.
//! - `DELETE /v1/webhooks/{id}` (`jobs:write`).
//! - `POST /v1/webhooks/{id}/rotate` (`jobs:write`): a new secret; the previous one keeps
//!   signing beside it for a day, so receivers can switch without losing a delivery.
//! - `POST /v1/webhooks/{id}/enable` (`jobs:write`): re-enable one disabled for failing.
//! - `GET /v1/webhooks/{id}/deliveries` (`jobs:read`): the delivery log (status, attempts,
//!   latency), newest first, optionally within `since_ms..until_ms`.
//! - `POST /v1/webhooks/{id}/deliveries/{delivery}/replay` and `POST /v1/webhooks/{id}/replay`
//!   (`{"since_ms", "until_ms"}`) (`jobs:write`): send again, from attempt one.

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use gantry_core::time::now_ms;
use gantry_queue::events::EventType;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::audit::audited;
use crate::auth::{JobsRead, JobsWrite};
use crate::extract::{ApiJson, ApiQuery, list_limit};
use crate::problem::ApiError;
use crate::state::AppState;
use crate::webhooks::signing;
use crate::webhooks::store::{DeliveryView, Disabled, Endpoint, Secret, Source};

/// How long a rotated-out secret keeps signing.
const ROTATION_OVERLAP_MS: u64 = 86_400_000;
/// Deliveries one range replay re-sends at most.
const MAX_REPLAY: usize = 10_000;

/// The webhook routes.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/webhooks", post(create).get(list))
        .route("/v1/webhooks/{id}", get(show).delete(remove))
        .route("/v1/webhooks/{id}/rotate", post(rotate))
        .route("/v1/webhooks/{id}/enable", post(enable))
        .route("/v1/webhooks/{id}/deliveries", get(deliveries))
        .route("/v1/webhooks/{id}/deliveries/{delivery}/replay", post(replay_one))
        .route("/v1/webhooks/{id}/replay", post(replay_range))
}

fn ctx(state: &AppState) -> Result<&crate::webhooks::Webhooks, ApiError> {
    state
        .webhooks
        .as_ref()
        .ok_or(ApiError::NotConfigured("webhooks are not running on this scheduler"))
}

/// An endpoint as the API shows it: never its secrets.
#[derive(Debug, Serialize)]
struct EndpointView {
    id: String,
    url: String,
    /// Event types; empty means all.
    types: Vec<EventType>,
    #[serde(skip_serializing_if = "Option::is_none")]
    description: Option<String>,
    source: Source,
    created_at: String,
    /// Set when it was disabled for failing.
    #[serde(skip_serializing_if = "Option::is_none")]
    disabled: Option<DisabledView>,
    #[serde(skip_serializing_if = "Option::is_none")]
    failing_since: Option<String>,
    /// Secrets signing now (two during a rotation).
    signing_secrets: usize,
}

#[derive(Debug, Serialize)]
struct DisabledView {
    at: String,
    reason: String,
}

impl EndpointView {
    fn of(e: &Endpoint) -> Self {
        let t = gantry_core::time::rfc3339_ms;
        Self {
            id: e.id.clone(),
            url: e.url.clone(),
            types: e.types.clone(),
            description: e.description.clone(),
            source: e.source,
            created_at: t(e.created_ms),
            disabled: e.disabled.as_ref().map(|d: &Disabled| DisabledView {
                at: t(d.at_ms),
                reason: d.reason.clone(),
            }),
            failing_since: e.failing_since_ms.map(t),
            signing_secrets: e.signing_secrets(now_ms()).count(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateBody {
    url: String,
    #[serde(default)]
    types: Vec<EventType>,
    #[serde(default)]
    description: Option<String>,
}

async fn create(
    State(state): State<AppState>,
    JobsWrite(c): JobsWrite,
    ApiJson(body): ApiJson<CreateBody>,
) -> Result<Response, ApiError> {
    let w = ctx(&state)?;
    if state.cfg.tenants.get(&c.tenant).is_some_and(|t| !t.events) {
        return Err(ApiError::Conflict(
            "webhooks are sent from job events, which this tenant's configuration turns off (events = false)".into(),
        ));
    }
    if body.url.chars().count() > 2048 {
        return Err(ApiError::InvalidRequest("url: at most 2048 characters".into()));
    }
    w.check_url(&body.url)
        .map_err(|why| ApiError::InvalidRequest(format!("url: {why}")))?;
    // The document's pattern, exactly: a host name, or a literal address the operator allows.
    if !w.url_shape_ok(&body.url) {
        return Err(ApiError::InvalidRequest(
            "url: http(s)://<host name>[:port][/path]; a literal address only where the operator allows it".into(),
        ));
    }
    if let Some(d) = &body.description
        && (d.chars().count() > 200 || d.chars().any(char::is_control))
    {
        return Err(ApiError::InvalidRequest(
            "description: at most 200 characters, no control characters".into(),
        ));
    }
    let existing = w.store.endpoints(&c.tenant).await?;
    if existing.len() >= w.cfg.max_endpoints_per_tenant {
        return Err(ApiError::Conflict(format!(
            "a tenant has at most {} webhook endpoints",
            w.cfg.max_endpoints_per_tenant
        )));
    }
    let mut types = body.types;
    types.sort();
    types.dedup();
    let secret = signing::new_secret();
    let ep = Endpoint {
        id: format!("ep_{}", ulid::Ulid::new()),
        url: body.url,
        types,
        secrets: vec![Secret {
            value: secret.clone(),
            expires_ms: None,
        }],
        created_ms: now_ms(),
        source: Source::Api,
        description: body.description,
        disabled: None,
        failing_since_ms: None,
    };
    w.store.put(&c.tenant, &ep).await?;
    tracing::info!(tenant = %c.tenant, endpoint = %ep.id, "webhook endpoint registered");
    let mut view = serde_json::to_value(EndpointView::of(&ep)).map_err(|_| ApiError::Internal)?;
    view["secret"] = json!(secret);
    Ok((StatusCode::CREATED, axum::Json(view)).into_response())
}

async fn list(State(state): State<AppState>, JobsRead(c): JobsRead) -> Result<Response, ApiError> {
    let w = ctx(&state)?;
    let eps = w.store.endpoints(&c.tenant).await?;
    let views: Vec<EndpointView> = eps.iter().map(EndpointView::of).collect();
    Ok(axum::Json(json!({ "webhooks": views })).into_response())
}

async fn owned(state: &AppState, tenant: &str, id: &str) -> Result<Endpoint, ApiError> {
    ctx(state)?.store.endpoint(tenant, id).await?.ok_or(ApiError::NotFound)
}

async fn show(
    State(state): State<AppState>,
    JobsRead(c): JobsRead,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let ep = owned(&state, &c.tenant, &id).await?;
    Ok(axum::Json(EndpointView::of(&ep)).into_response())
}

async fn remove(
    State(state): State<AppState>,
    JobsWrite(c): JobsWrite,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let ep = owned(&state, &c.tenant, &id).await?;
    if ep.source == Source::Config {
        return Err(ApiError::Conflict(
            "this endpoint is defined in the scheduler's configuration".into(),
        ));
    }
    ctx(&state)?.store.delete(&c.tenant, &id).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn rotate(
    State(state): State<AppState>,
    JobsWrite(c): JobsWrite,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let mut ep = owned(&state, &c.tenant, &id).await?;
    if ep.source == Source::Config {
        return Err(ApiError::Conflict(
            "this endpoint's secret comes from the scheduler's configuration".into(),
        ));
    }
    let now = now_ms();
    let until = now + ROTATION_OVERLAP_MS;
    // The current secret signs for one more day; anything older goes now.
    ep.secrets.retain(|s| s.expires_ms.is_none());
    for s in &mut ep.secrets {
        s.expires_ms = Some(until);
    }
    let secret = signing::new_secret();
    ep.secrets.push(Secret {
        value: secret.clone(),
        expires_ms: None,
    });
    ctx(&state)?.store.put(&c.tenant, &ep).await?;
    Ok(axum::Json(json!({
        "id": ep.id,
        "secret": secret,
        "previous_expires_at": gantry_core::time::rfc3339_ms(until),
    }))
    .into_response())
}

async fn enable(
    State(state): State<AppState>,
    JobsWrite(c): JobsWrite,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let mut ep = owned(&state, &c.tenant, &id).await?;
    let was = ep.disabled.take();
    ep.failing_since_ms = None;
    let w = ctx(&state)?;
    w.store.put(&c.tenant, &ep).await?;
    w.store.clear_disable(&c.tenant, &ep.id).await?;
    if let Some(d) = was {
        audited(
            &state,
            &c,
            "webhook.enable",
            &ep.id,
            json!({ "was_disabled_for": d.reason }),
        )
        .await?;
    }
    Ok(axum::Json(EndpointView::of(&ep)).into_response())
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct LogQuery {
    #[serde(default)]
    limit: Option<usize>,
    #[serde(default)]
    since_ms: Option<u64>,
    #[serde(default)]
    until_ms: Option<u64>,
}

async fn deliveries(
    State(state): State<AppState>,
    JobsRead(c): JobsRead,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<LogQuery>,
) -> Result<Response, ApiError> {
    owned(&state, &c.tenant, &id).await?;
    let limit = list_limit(q.limit)?;
    let log: Vec<DeliveryView> = ctx(&state)?
        .store
        .log(
            &c.tenant,
            &id,
            q.since_ms.unwrap_or(0),
            q.until_ms.unwrap_or(u64::MAX >> 11),
            limit,
        )
        .await?;
    Ok(axum::Json(json!({ "deliveries": log })).into_response())
}

async fn replay_one(
    State(state): State<AppState>,
    JobsWrite(c): JobsWrite,
    Path((id, delivery)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    owned(&state, &c.tenant, &id).await?;
    let w = ctx(&state)?;
    let n = w.store.replay(&c.tenant, &id, &[delivery]).await?;
    if n == 0 {
        return Err(ApiError::NotFound);
    }
    w.wake.notify_one();
    Ok((StatusCode::ACCEPTED, axum::Json(json!({ "replayed": n }))).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RangeBody {
    since_ms: u64,
    #[serde(default)]
    until_ms: Option<u64>,
}

async fn replay_range(
    State(state): State<AppState>,
    JobsWrite(c): JobsWrite,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<RangeBody>,
) -> Result<Response, ApiError> {
    owned(&state, &c.tenant, &id).await?;
    // An empty range (until before since) replays nothing.
    let until = body.until_ms.unwrap_or(u64::MAX >> 11);
    let w = ctx(&state)?;
    let ids: Vec<String> = w
        .store
        .log(&c.tenant, &id, body.since_ms, until, MAX_REPLAY)
        .await?
        .into_iter()
        .map(|d| d.id)
        .collect();
    let n = w.store.replay(&c.tenant, &id, &ids).await?;
    w.wake.notify_one();
    Ok((StatusCode::ACCEPTED, axum::Json(json!({ "replayed": n }))).into_response())
}
