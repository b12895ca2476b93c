//! Operator routes (`admin` scope, held only by operator tenants): queue stats, pausing and
//! resuming a queue, and the dead-letter queue with the CLI's semantics (list with filters;
//! replay or purge one job by id, or every job a filter selects, or count them with
//! `dry_run`). Every change is audited.
//!
//! - `GET  /v1/admin/queues`
//! - `POST /v1/admin/queues/{pool}/{kind}:pause`, `…:resume`
//! - `GET  /v1/admin/dead-letters?pool=&kind=&class=&since_ms=&until_ms=&offset=&limit=`
//! - `POST /v1/admin/dead-letters:replay` `{"id"}` or `{pool?, kind?, class?, since_ms?, until_ms?, dry_run?}`
//! - `POST /v1/admin/dead-letters:purge`, the same body: delete for good

use axum::Router;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use gantry_queue::{DeadAction, DeadFilter, ErrorClass, JobId, JobKind, Pool, QueueError, QueueName};
use serde::Deserialize;

use crate::audit::audited;
use crate::auth::Admin;
use crate::dead_letters::{DeadLetterError, Selection, done_word};
use crate::extract::{ApiJson, ApiQuery, list_limit};
use crate::problem::ApiError;
use crate::state::AppState;

/// The largest `offset` a dead-letter listing takes (deeper pages: narrow the time range).
const MAX_OFFSET: usize = 1_000_000;

/// The operator routes.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/admin/queues", get(queues))
        .route("/v1/admin/queues/{pool}/{action}", post(queue_action))
        .route("/v1/admin/dead-letters", get(list_dead))
        .route("/v1/admin/dead-letters:replay", post(replay))
        .route("/v1/admin/dead-letters:purge", post(purge))
}

fn invalid(e: impl std::fmt::Display) -> ApiError {
    ApiError::InvalidRequest(e.to_string())
}

/// A declared pool, or `not_found`.
fn declared_pool(state: &AppState, name: &str) -> Result<Pool, ApiError> {
    if !state.cfg.pools.contains_key(name) {
        return Err(ApiError::NotFound);
    }
    Pool::new(name).map_err(|_| ApiError::NotFound)
}

async fn queues(State(state): State<AppState>, Admin(_): Admin) -> Result<Response, ApiError> {
    let mut out = Vec::new();
    for (name, p) in &state.cfg.pools {
        let pool = declared_pool(&state, name)?;
        out.extend(state.queue.stats(&pool, &p.kinds).await?);
    }
    Ok(axum::Json(Queues { queues: out }).into_response())
}

async fn queue_action(
    State(state): State<AppState>,
    Admin(who): Admin,
    Path((pool, action)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let Some((kind, verb)) = action.rsplit_once(':') else {
        return Err(ApiError::NoRoute);
    };
    let pause = match verb {
        "pause" => true,
        "resume" => false,
        _ => return Err(ApiError::NoRoute),
    };
    let pool = declared_pool(&state, &pool)?;
    let kind: JobKind = kind.parse().map_err(invalid)?;
    let queue = QueueName { pool, kind };
    let changed = state.queue.set_paused(&queue, pause).await?;
    tracing::info!(kind = %kind, paused = pause, changed, "queue pause state set by an operator");
    let action = if pause { "queue.pause" } else { "queue.resume" };
    let target = format!("{}/{kind}", queue.pool);
    audited(&state, &who, action, target, serde_json::json!({ "changed": changed })).await?;
    Ok(axum::Json(PauseState { paused: pause, changed }).into_response())
}

/// A dead-letter filter as the API and the console take it.
#[derive(Debug, Default)]
pub(crate) struct Filter {
    pub(crate) pool: Option<String>,
    pub(crate) kind: Option<String>,
    pub(crate) class: Option<String>,
    pub(crate) tenant: Option<String>,
    pub(crate) since_ms: Option<u64>,
    pub(crate) until_ms: Option<u64>,
}

impl Filter {
    /// The queues it covers (declared pools only) and the filter within them.
    pub(crate) fn resolve(&self, state: &AppState) -> Result<(Vec<QueueName>, DeadFilter), ApiError> {
        let pools = match &self.pool {
            Some(p) => vec![declared_pool(state, p)?],
            None => state
                .cfg
                .pools
                .keys()
                .map(|p| declared_pool(state, p))
                .collect::<Result<_, _>>()?,
        };
        let queues = QueueName::across(&pools, self.kind.as_deref()).map_err(invalid)?;
        if self.tenant.as_ref().is_some_and(|t| t.chars().count() > 64) {
            return Err(invalid("tenant: at most 64 characters"));
        }
        let filter = DeadFilter {
            class: self
                .class
                .as_deref()
                .map(str::parse::<ErrorClass>)
                .transpose()
                .map_err(invalid)?,
            since_ms: self.since_ms,
            until_ms: self.until_ms,
            tenant: self.tenant.clone(),
        };
        Ok((queues, filter))
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    pool: Option<String>,
    kind: Option<String>,
    class: Option<String>,
    tenant: Option<String>,
    since_ms: Option<u64>,
    until_ms: Option<u64>,
    #[serde(default)]
    offset: usize,
    limit: Option<usize>,
}

async fn list_dead(
    State(state): State<AppState>,
    Admin(_): Admin,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<Response, ApiError> {
    let limit = list_limit(q.limit)?;
    let (queues, filter) = Filter {
        pool: q.pool,
        kind: q.kind,
        class: q.class,
        tenant: q.tenant,
        since_ms: q.since_ms,
        until_ms: q.until_ms,
    }
    .resolve(&state)?;
    if q.offset > MAX_OFFSET {
        return Err(invalid(format!(
            "offset must be at most {MAX_OFFSET}; narrow the time range (since_ms, until_ms) instead"
        )));
    }
    let dead_letters = dead_page(&state, &queues, &filter, q.offset, limit)
        .await?
        .into_iter()
        .map(|(pool, d)| DeadLetterView {
            id: d.id,
            pool,
            kind: d.kind,
            dead_at_ms: d.dead_at_ms,
            class: d.class,
            message: d.message,
            attempts: d.attempts,
            tenant: d.tenant,
        })
        .collect();
    Ok(axum::Json(DeadLetters { dead_letters }).into_response())
}

/// A page of the dead letters `filter` selects in `queues`, each with its pool: oldest first
/// within each queue, the offset and limit running over the queues in order (the admin API's
/// listing and the console's).
pub(crate) async fn dead_page(
    state: &AppState,
    queues: &[QueueName],
    filter: &DeadFilter,
    offset: usize,
    limit: usize,
) -> Result<Vec<(String, gantry_queue::DeadLetter)>, ApiError> {
    let (mut skip, mut out) = (offset, Vec::new());
    for queue in queues {
        if skip > 0 {
            // Skip whole queues by their count (one ZCOUNT without a class filter).
            let n = usize::try_from(state.queue.count_dead(queue, filter).await?).unwrap_or(usize::MAX);
            if skip >= n {
                skip -= n;
                continue;
            }
        }
        let page = state.queue.dead_letters(queue, filter, skip, limit - out.len()).await?;
        out.extend(page.into_iter().map(|d| (queue.pool.to_string(), d)));
        skip = 0;
        if out.len() >= limit {
            break;
        }
    }
    Ok(out)
}

/// `GET /v1/admin/queues`: every declared pool's queues.
#[derive(serde::Serialize)]
struct Queues {
    queues: Vec<gantry_queue::QueueStats>,
}

/// `POST /v1/admin/queues/{pool}/{kind}:pause|resume`.
#[derive(serde::Serialize)]
struct PauseState {
    paused: bool,
    /// Whether this call changed it.
    changed: bool,
}

/// `GET /v1/admin/dead-letters` (`DeadLetter` in `openapi.json`).
#[derive(serde::Serialize)]
struct DeadLetters {
    dead_letters: Vec<DeadLetterView>,
}

#[derive(serde::Serialize)]
struct DeadLetterView {
    id: JobId,
    pool: String,
    kind: JobKind,
    dead_at_ms: u64,
    class: String,
    message: String,
    attempts: u32,
    tenant: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct DeadLetterRequest {
    id: Option<String>,
    pool: Option<String>,
    kind: Option<String>,
    class: Option<String>,
    tenant: Option<String>,
    since_ms: Option<u64>,
    until_ms: Option<u64>,
    #[serde(default)]
    dry_run: bool,
}

async fn replay(
    State(state): State<AppState>,
    who: Admin,
    ApiJson(req): ApiJson<DeadLetterRequest>,
) -> Result<Response, ApiError> {
    act_on_dead(state, who, req, DeadAction::Replay).await
}

async fn purge(
    State(state): State<AppState>,
    who: Admin,
    ApiJson(req): ApiJson<DeadLetterRequest>,
) -> Result<Response, ApiError> {
    act_on_dead(state, who, req, DeadAction::Purge).await
}

/// Replays or purges dead letters: one by id, or every one a filter selects (`dry_run`
/// counts them). Answers `{"replayed"|"purged": n}` or `{"would_replay"|"would_purge": n}`.
async fn act_on_dead(
    state: AppState,
    Admin(who): Admin,
    req: DeadLetterRequest,
    action: DeadAction,
) -> Result<Response, ApiError> {
    let (done_key, would_key) = (done_word(action), would_word(action));
    let actor = who.actor();
    if let Some(id) = &req.id {
        let id: JobId = id.parse().map_err(|_| ApiError::NotFound)?;
        if req.dry_run {
            let rec = state.queue.job(id).await.map_err(not_found)?;
            let n = u64::from(rec.status == gantry_queue::JobStatus::Dead);
            return Ok(axum::Json(DeadLetterCount::new(would_key, n)).into_response());
        }
        state
            .dead_letters
            .act_on_one(&actor, id, action)
            .await
            .map_err(dead_letter_error)?;
        return Ok(axum::Json(DeadLetterCount::new(done_key, 1)).into_response());
    }
    let selection = Selection {
        pool: req.pool.as_deref(),
        kind: req.kind.as_deref(),
    };
    let (queues, filter) = Filter {
        pool: req.pool.clone(),
        kind: req.kind.clone(),
        class: req.class.clone(),
        tenant: req.tenant.clone(),
        since_ms: req.since_ms,
        until_ms: req.until_ms,
    }
    .resolve(&state)?;
    let (key, n) = if req.dry_run {
        let n = state
            .dead_letters
            .count(&queues, &filter)
            .await
            .map_err(dead_letter_error)?;
        (would_key, n)
    } else {
        let n = state
            .dead_letters
            .act_on_matching(&actor, &queues, &filter, &selection, action, |_| {})
            .await
            .map_err(dead_letter_error)?;
        (done_key, n)
    };
    Ok(axum::Json(DeadLetterCount::new(key, n)).into_response())
}

/// The answer of a replay or purge: `{"replayed"|"purged"|"would_replay"|"would_purge": n}`,
/// one key, named by the action and whether it was a dry run.
#[derive(serde::Serialize)]
#[serde(transparent)]
struct DeadLetterCount(std::collections::BTreeMap<&'static str, u64>);

impl DeadLetterCount {
    fn new(key: &'static str, n: u64) -> Self {
        Self([(key, n)].into())
    }
}

fn would_word(action: DeadAction) -> &'static str {
    match action {
        DeadAction::Replay => "would_replay",
        DeadAction::Purge => "would_purge",
    }
}

fn dead_letter_error(e: DeadLetterError) -> ApiError {
    match e {
        DeadLetterError::Queue(QueueError::NotDeadLettered(_)) => {
            ApiError::Conflict("the job is not dead-lettered".into())
        }
        DeadLetterError::Queue(e) => not_found(e),
        DeadLetterError::Audit { source, .. } => crate::audit::safety_error(source),
    }
}

fn not_found(e: QueueError) -> ApiError {
    match e {
        QueueError::NotFound(_) => ApiError::NotFound,
        other => other.into(),
    }
}
