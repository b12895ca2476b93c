//! `GET /v1/events` and `GET /v1/jobs/{id}/events` (`jobs:read`): a tenant's job events as
//! Server-Sent Events.
//!
//! - Each event's `id` is a [`Cursor`]: a client that reconnects with `Last-Event-ID` (or
//!   `?after=`) resumes exactly after it, in every pool. Without one it starts now.
//! - A client that resumes from further back than retention kept is told so first
//!   (`event: gap`, the first position still held) rather than silently missing events.
//! - Keep-alive comments every 15 s; `Cache-Control: no-cache` and `X-Accel-Buffering: no` so
//!   proxies pass events on at once.
//! - Filters: `job=<id>,<id>` (up to 100) and `type=job.succeeded,job.dead`.
//! - `GET /v1/jobs/{id}/events` replays the job's events from its enqueue (what retention still
//!   holds) and ends after its final one; for a job that finished before its events were
//!   retained it sends one event made from the record.
//!
//! Every client is a task fed by the [`EventHub`]'s broadcast; it reads the stream itself only
//! to catch up (on resume, or when it fell behind the broadcast buffer).

use std::collections::HashSet;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use gantry_queue::events::{self, EventError, EventType, JobEvent, StreamPos};
use gantry_queue::{JobId, JobRecord, JobStatus, Pool};
use serde::Deserialize;
use tokio::sync::{broadcast, mpsc};

use crate::api::{owned_job, parse_id};
use crate::auth::JobsRead;
use crate::events::{Cursor, EventHub, EventPayload};
use crate::extract::ApiQuery;
use crate::problem::ApiError;
use crate::state::AppState;

/// Most job ids one filter names.
const MAX_JOBS: usize = 100;
/// Events read back per round trip while catching up.
const CATCH_UP_PAGE: usize = 1000;
/// Events queued for one client's connection before its task waits for it.
const CLIENT_BUFFER: usize = 256;
/// How often an idle stream sends a comment.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// The event routes.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/events", get(tenant_events))
        .route("/v1/jobs/{id}/events", get(job_events))
}

/// `GET /v1/events`'s query.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct EventsQuery {
    /// Comma-separated job ids.
    #[serde(default)]
    job: Option<String>,
    /// Comma-separated event types.
    #[serde(default, rename = "type")]
    types: Option<String>,
    /// Resume after this event id (as `Last-Event-ID` does; the header wins).
    #[serde(default)]
    after: Option<String>,
}

/// Which events a client wants.
#[derive(Clone, Debug, Default)]
struct Filter {
    tenant: String,
    jobs: Option<HashSet<JobId>>,
    types: Option<HashSet<EventType>>,
    /// End the stream after this job's final event.
    until_final_of: Option<JobId>,
}

impl Filter {
    fn matches(&self, e: &JobEvent) -> bool {
        e.tenant == self.tenant
            && self.jobs.as_ref().is_none_or(|j| j.contains(&e.job))
            && self.types.as_ref().is_none_or(|t| t.contains(&e.event_type))
    }

    fn ends_with(&self, e: &JobEvent) -> bool {
        self.until_final_of == Some(e.job) && e.event_type.is_final()
    }
}

fn parse_filter(tenant: &str, q: &EventsQuery) -> Result<Filter, ApiError> {
    let list = |s: &Option<String>| -> Option<Vec<String>> {
        s.as_ref().map(|s| {
            s.split(',')
                .map(str::trim)
                .filter(|p| !p.is_empty())
                .map(str::to_owned)
                .collect()
        })
    };
    let jobs = match list(&q.job) {
        Some(ids) if ids.len() > MAX_JOBS => {
            return Err(ApiError::InvalidRequest(format!("job names at most {MAX_JOBS} ids")));
        }
        Some(ids) if ids.is_empty() => return Err(ApiError::InvalidRequest("job names no id".into())),
        Some(ids) => Some(
            ids.iter()
                .map(|i| {
                    i.parse::<JobId>()
                        .map_err(|_| ApiError::InvalidRequest(format!("job: {:?} is not a job id", trunc(i))))
                })
                .collect::<Result<HashSet<_>, _>>()?,
        ),
        None => None,
    };
    let types = match list(&q.types) {
        Some(t) if t.is_empty() => return Err(ApiError::InvalidRequest("type names no event type".into())),
        Some(t) => Some(
            t.iter()
                .map(|t| {
                    t.parse::<EventType>()
                        .map_err(|e| ApiError::InvalidRequest(format!("type: {e}")))
                })
                .collect::<Result<HashSet<_>, _>>()?,
        ),
        None => None,
    };
    Ok(Filter {
        tenant: tenant.to_owned(),
        jobs,
        types,
        until_final_of: None,
    })
}

fn trunc(s: &str) -> String {
    s.chars().take(64).collect()
}

fn hub(state: &AppState) -> Result<&EventHub, ApiError> {
    state.events.as_ref().ok_or(ApiError::NotConfigured(
        "the event stream is not running on this scheduler",
    ))
}

async fn tenant_events(
    State(state): State<AppState>,
    JobsRead(c): JobsRead,
    ApiQuery(q): ApiQuery<EventsQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let hub = hub(&state)?.clone();
    let filter = parse_filter(&c.tenant, &q)?;
    let resume = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .or(q.after.clone());
    let cursor = match resume.as_deref().map(str::parse::<Cursor>) {
        Some(Ok(c)) => Some(c),
        Some(Err(e)) => return Err(ApiError::InvalidRequest(e.to_string())),
        None => None,
    };
    Ok(stream(hub, filter, cursor, None))
}

async fn job_events(
    State(state): State<AppState>,
    JobsRead(c): JobsRead,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let hub = hub(&state)?.clone();
    let id = parse_id(&id)?;
    let job = owned_job(&state, &c.tenant, id).await?;
    let pool = Pool::new(&job.spec.pool).map_err(|_| ApiError::Internal)?;
    // From just before its enqueue: every event of the job retention still holds.
    let mut start = Cursor::default();
    start.advance(
        &pool,
        StreamPos {
            ms: job.enqueued_at_ms.saturating_sub(1),
            seq: u64::MAX,
        },
    );
    let filter = Filter {
        tenant: c.tenant.clone(),
        jobs: Some(HashSet::from([id])),
        types: None,
        until_final_of: Some(id),
    };
    let finished = (job.status.is_final()).then(|| record_event(&pool, &job));
    Ok(stream(hub, filter, Some(start), finished))
}

/// A final job's event made from its record, for when its stream entry is gone.
fn record_event(pool: &Pool, job: &JobRecord) -> JobEvent {
    let event_type = match job.status {
        JobStatus::Succeeded => EventType::Succeeded,
        JobStatus::Blocked => EventType::Blocked,
        JobStatus::Cancelled => EventType::Cancelled,
        _ => EventType::Dead,
    };
    JobEvent {
        pool: pool.clone(),
        pos: StreamPos::ZERO,
        job: job.spec.id,
        tenant: job.spec.tenant.clone(),
        kind: Some(job.spec.kind()),
        event_type,
        at_ms: job.finished_at_ms.unwrap_or(job.enqueued_at_ms),
        result: job.result.clone(),
        error: job.error.as_ref().map(|e| EventError {
            class: e.class.as_str().to_owned(),
            message: e.message.clone(),
        }),
        traceparent: None,
    }
}

fn stream(hub: EventHub, filter: Filter, cursor: Option<Cursor>, finished: Option<JobEvent>) -> Response {
    let (tx, rx) = mpsc::channel::<Event>(CLIENT_BUFFER);
    // Subscribed before the task starts, so nothing broadcast from here on is missed.
    let sub = hub.subscribe();
    tokio::spawn(pump(hub, sub, filter, cursor, finished, tx));
    let body = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|e| (Ok::<_, Infallible>(e), rx))
    });
    let mut res = Sse::new(body)
        .keep_alive(KeepAlive::new().interval(KEEP_ALIVE))
        .into_response();
    let h = res.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    res
}

/// Why a client's task stopped.
enum Stop {
    /// The client went away, or the scheduler is stopping.
    Gone,
    /// The one job it followed has finished.
    Done,
}

struct Client {
    hub: EventHub,
    filter: Filter,
    cursor: Cursor,
    tx: mpsc::Sender<Event>,
}

impl Client {
    async fn send(&self, e: Event) -> Result<(), Stop> {
        self.tx.send(e).await.map_err(|_| Stop::Gone)
    }

    /// Moves past `e` and sends it if it matches.
    async fn offer(&mut self, e: &JobEvent) -> Result<(), Stop> {
        if self.cursor.get(&e.pool).is_some_and(|p| e.pos <= p) {
            return Ok(());
        }
        self.cursor.advance(&e.pool, e.pos);
        if !self.filter.matches(e) {
            return Ok(());
        }
        let payload = EventPayload::of(e).to_json();
        let ev = Event::default()
            .id(self.cursor.to_string())
            .event(e.event_type.as_str())
            .data(payload);
        self.send(ev).await?;
        if self.filter.ends_with(e) {
            return Err(Stop::Done);
        }
        Ok(())
    }

    /// Reads each pool's stream from the cursor to its end.
    async fn catch_up(&mut self) -> Result<(), Stop> {
        for pool in self.hub.pools().to_vec() {
            loop {
                let after = self.cursor.get(&pool).unwrap_or(StreamPos::ZERO);
                let (got, last) = match events::read_after(self.hub.conn(), &pool, after, CATCH_UP_PAGE).await {
                    Ok(r) => r,
                    Err(e) => {
                        tracing::warn!(pool = %pool, error = %e, "catching up on events failed");
                        break;
                    }
                };
                for e in &got {
                    self.offer(e).await?;
                }
                match last {
                    Some(l) => self.cursor.advance(&pool, l),
                    None => break,
                }
            }
        }
        Ok(())
    }

    /// Reports, per pool where the client resumed, whether retention dropped events it missed.
    async fn report_gaps(&mut self) -> Result<(), Stop> {
        for pool in self.hub.pools().to_vec() {
            let Some(after) = self.cursor.get(&pool) else { continue };
            if let Ok(Some(first)) = events::gap_after(self.hub.conn(), &pool, after).await {
                let data = serde_json::json!({
                    "pool": pool.as_str(),
                    "resumed_after": after.to_string(),
                    "first_available": first.to_string(),
                });
                self.send(Event::default().event("gap").data(data.to_string())).await?;
            }
        }
        Ok(())
    }
}

async fn pump(
    hub: EventHub,
    mut sub: broadcast::Receiver<Arc<JobEvent>>,
    filter: Filter,
    resume: Option<Cursor>,
    finished: Option<JobEvent>,
    tx: mpsc::Sender<Event>,
) {
    let stop = hub.stopping().clone();
    let resumed = resume.is_some();
    let mut client = Client {
        filter,
        cursor: resume.unwrap_or_default(),
        hub,
        tx,
    };
    let run = async {
        if resumed {
            client.report_gaps().await?;
        }
        // Pools the cursor does not name start where their reader is now.
        let heads = client.hub.heads();
        for pool in client.hub.pools().to_vec() {
            if client.cursor.get(&pool).is_none() {
                client
                    .cursor
                    .advance(&pool, heads.get(&pool).unwrap_or(StreamPos::ZERO));
            }
        }
        client.catch_up().await?;
        if let Some(f) = &finished {
            // The job finished and retention no longer holds its final event.
            let payload = EventPayload::of(f).to_json();
            let ev = Event::default()
                .id(client.cursor.to_string())
                .event(f.event_type.as_str())
                .data(payload);
            client.send(ev).await?;
            return Err(Stop::Done);
        }
        loop {
            match sub.recv().await {
                Ok(e) => client.offer(&e).await?,
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    tracing::debug!(missed = n, "an SSE client fell behind the broadcast; reading back");
                    client.catch_up().await?;
                }
                Err(broadcast::error::RecvError::Closed) => return Err(Stop::Gone),
            }
        }
    };
    tokio::select! {
        r = run => match r {
            Ok(()) | Err(Stop::Gone) | Err(Stop::Done) => {}
        },
        () = stop.cancelled() => {}
    }
}
