//! The overview's live updates: `GET /console/overview/stream` (Server-Sent Events) sends each
//! new snapshot of [`crate::console_feed`]; the page's script writes the numbers into its
//! table. Without the script the page still works: it is only not live.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};

use super::{session_of, to_login};
use crate::state::AppState;
use gantry_queue::JobId;

/// How often an open stream checks that its session still lives (signed out, timed out: the
/// stream ends).
const SESSION_CHECK: Duration = Duration::from_secs(30);
/// How often a job's page stream reads the job.
const JOB_EVERY: Duration = Duration::from_secs(1);
/// The longest a job's page stream runs (the page reconnects if still open).
const JOB_STREAM_FOR: Duration = Duration::from_secs(600);

/// Whether the session `headers` carry still lives.
async fn alive(state: &AppState, headers: &HeaderMap) -> bool {
    session_of(state, headers).await.is_some()
}

/// `GET /console/overview/stream`: the overview's snapshots, as they change (the first one at
/// once when there is one). It ends when the session does.
pub(super) async fn stream(State(state): State<AppState>, headers: HeaderMap) -> Response {
    if session_of(&state, &headers).await.is_none() {
        return to_login();
    }
    let mut rx = state.console_live.follow();
    rx.mark_changed();
    let checked = tokio::time::Instant::now();
    let body = futures::stream::unfold(
        (rx, state, headers, checked),
        |(mut rx, state, headers, mut checked)| async move {
            loop {
                let until_check = SESSION_CHECK.saturating_sub(checked.elapsed());
                tokio::select! {
                    r = rx.changed() => r.ok()?,
                    () = tokio::time::sleep(until_check) => {
                        if !alive(&state, &headers).await {
                            return None;
                        }
                        checked = tokio::time::Instant::now();
                        continue;
                    }
                }
                let s = rx.borrow_and_update().clone();
                if !s.is_empty() {
                    let event = Event::default().event("overview").data(s);
                    return Some((Ok::<_, Infallible>(event), (rx, state, headers, checked)));
                }
            }
        },
    );
    sse(body)
}

fn sse(body: impl futures::Stream<Item = Result<Event, Infallible>> + Send + 'static) -> Response {
    let mut res = Sse::new(body)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response();
    let h = res.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    res
}

/// What a job's page shows live.
#[derive(serde::Serialize, PartialEq)]
struct JobLive {
    status: &'static str,
    attempts: u32,
    progress: Option<String>,
}

async fn job_live(state: &AppState, id: JobId) -> Option<JobLive> {
    let r = state.queue.job(id).await.ok()?;
    Some(JobLive {
        status: r.status.as_str(),
        attempts: r.attempts,
        progress: r.progress.map(|p| match p.percent {
            Some(pc) => format!("{} {pc:.0}%", p.stage.as_str()),
            None => p.stage.as_str().to_owned(),
        }),
    })
}

/// `GET /console/jobs/{id}/stream`: the job's status, attempts and progress each time they
/// change (read each second, for ten minutes at most); it ends when the session does.
pub(super) async fn job_stream(State(state): State<AppState>, headers: HeaderMap, Path(id): Path<String>) -> Response {
    if session_of(&state, &headers).await.is_none() {
        return to_login();
    }
    let Ok(id) = id.parse::<JobId>() else {
        return axum::http::StatusCode::NOT_FOUND.into_response();
    };
    let begun = tokio::time::Instant::now();
    let seed = (state, headers, None::<JobLive>, begun, begun);
    let body = futures::stream::unfold(seed, move |(state, headers, last, begun, mut checked)| async move {
        loop {
            if begun.elapsed() >= JOB_STREAM_FOR {
                return None;
            }
            if checked.elapsed() >= SESSION_CHECK {
                if !alive(&state, &headers).await {
                    return None;
                }
                checked = tokio::time::Instant::now();
            }
            let now = job_live(&state, id).await;
            if let Some(now) = now
                && last.as_ref() != Some(&now)
            {
                let data = serde_json::to_string(&now).unwrap_or_default();
                let event = Event::default().event("job").data(data);
                return Some((Ok::<_, Infallible>(event), (state, headers, Some(now), begun, checked)));
            }
            tokio::time::sleep(JOB_EVERY).await;
        }
    });
    sse(body)
}

/// The overview page's script: follows the stream and writes each snapshot into the table.
pub const SCRIPT: &str = include_str!("console.js");
