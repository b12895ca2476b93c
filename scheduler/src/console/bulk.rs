//! Bulk dead-letter actions with progress: the confirmed action runs in the scheduler's
//! background, a page at a time, writing how far it got to Redis
//! (`gantry:{console}:bulk:<id>`, a hash kept a day) so its progress page, served by any
//! replica, shows it: a progress bar that refreshes itself each second while the action runs
//! (a `<meta refresh>`, so it needs no script).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use maud::html;

use super::{html as page_response, pages, refusal, session_of, to_login};
use crate::dead_letters::Selection;
use crate::state::AppState;
use gantry_queue::{DeadAction, DeadFilter, JobId, QueueError, QueueName};

/// How long a bulk action's progress is kept.
const KEPT_SECS: u64 = 24 * 3600;
/// How often a running action writes its progress.
const PROGRESS_EVERY: Duration = Duration::from_millis(250);

/// What a bulk action works on.
#[derive(Debug)]
pub(super) enum Work {
    /// The rows an operator ticked.
    Selected(Vec<JobId>),
    /// Every dead letter a filter selects.
    Matching {
        queues: Vec<QueueName>,
        filter: DeadFilter,
        pool: Option<String>,
        kind: Option<String>,
    },
}

fn key(id: &str) -> String {
    format!("gantry:{{console}}:bulk:{id}")
}

/// Starts `action` on `work` for `actor` (the count the confirmation showed is `expected`);
/// returns the action's id, for its progress page. `back` is the dead-letter page's query to
/// return to.
pub(super) async fn start(
    state: &AppState,
    actor: &str,
    action: DeadAction,
    expected: u64,
    work: Work,
    back: String,
) -> Result<String, QueueError> {
    let id = gantry_queue::JobId::new().to_string();
    let mut c = state.queue.connection();
    redis::pipe()
        .atomic()
        .cmd("HSET")
        .arg(key(&id))
        .arg("action")
        .arg(action.as_str())
        .arg("expected")
        .arg(expected)
        .arg("done")
        .arg(0)
        .arg("state")
        .arg("running")
        .arg("actor")
        .arg(actor)
        .arg("back")
        .arg(&back)
        .ignore()
        .cmd("EXPIRE")
        .arg(key(&id))
        .arg(KEPT_SECS)
        .ignore()
        .query_async::<()>(&mut c)
        .await?;
    let (state, actor, bulk) = (state.clone(), actor.to_owned(), id.clone());
    tokio::spawn(async move { run(state, actor, bulk, action, work).await });
    Ok(id)
}

async fn write(state: &AppState, id: &str, fields: &[(&str, String)]) {
    let mut c = state.queue.connection();
    let mut cmd = redis::cmd("HSET");
    cmd.arg(key(id));
    for (k, v) in fields {
        cmd.arg(*k).arg(v);
    }
    if let Err(e) = cmd.query_async::<()>(&mut c).await {
        tracing::warn!(error = %e, "writing a bulk action's progress failed");
    }
}

async fn run(state: AppState, actor: String, id: String, action: DeadAction, work: Work) {
    let done = Arc::new(AtomicU64::new(0));
    let stop = tokio_util::sync::CancellationToken::new();
    // A writer that reports progress while the action runs.
    let writer = {
        let (state, id, done, stop) = (state.clone(), id.clone(), done.clone(), stop.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(PROGRESS_EVERY);
            loop {
                tokio::select! { _ = tick.tick() => {}, _ = stop.cancelled() => return }
                write(&state, &id, &[("done", done.load(Ordering::Relaxed).to_string())]).await;
            }
        })
    };
    let outcome = match work {
        Work::Selected(ids) => {
            let mut skipped = 0u64;
            for job in ids {
                match state.dead_letters.act_on_one(&actor, job, action).await {
                    Ok(()) => {
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                    // No longer dead (replayed or purged meanwhile): skipped, not failed.
                    Err(crate::dead_letters::DeadLetterError::Queue(
                        QueueError::NotFound(_) | QueueError::NotDeadLettered(_),
                    )) => {
                        skipped += 1;
                    }
                    Err(e) => {
                        stop.cancel();
                        let _ = writer.await;
                        return finish(&state, &id, done.load(Ordering::Relaxed), Some(e.to_string()), skipped).await;
                    }
                }
            }
            Ok(skipped)
        }
        Work::Matching {
            queues,
            filter,
            pool,
            kind,
        } => {
            let selection = Selection {
                pool: pool.as_deref(),
                kind: kind.as_deref(),
            };
            let counter = done.clone();
            state
                .dead_letters
                .act_on_matching(&actor, &queues, &filter, &selection, action, |n| {
                    counter.fetch_add(n, Ordering::Relaxed);
                })
                .await
                .map(|_| 0)
        }
    };
    stop.cancel();
    let _ = writer.await;
    let n = done.load(Ordering::Relaxed);
    match outcome {
        Ok(skipped) => finish(&state, &id, n, None, skipped).await,
        Err(e) => finish(&state, &id, n, Some(e.to_string()), 0).await,
    }
}

async fn finish(state: &AppState, id: &str, done: u64, error: Option<String>, skipped: u64) {
    let mut fields = vec![
        ("done", done.to_string()),
        ("skipped", skipped.to_string()),
        ("finished", gantry_core::time::now_ms().to_string()),
    ];
    match error {
        Some(e) => {
            tracing::warn!(error = %e, "a bulk dead-letter action failed part way");
            fields.push(("state", "failed".into()));
            fields.push(("error", e));
        }
        None => fields.push(("state", "done".into())),
    }
    write(state, id, &fields).await;
}

/// `GET /console/dead-letters/bulk/{id}`: a bulk action's progress.
pub(super) async fn progress(State(state): State<AppState>, headers: HeaderMap, Path(id): Path<String>) -> Response {
    let Some(s) = session_of(&state, &headers).await else {
        return to_login();
    };
    if id.parse::<JobId>().is_err() {
        return refusal(&s, StatusCode::NOT_FOUND, "no such bulk action");
    }
    let mut c = state.queue.connection();
    let h: std::collections::HashMap<String, String> =
        match redis::cmd("HGETALL").arg(key(&id)).query_async(&mut c).await {
            Ok(h) => h,
            Err(e) => return refusal(&s, StatusCode::SERVICE_UNAVAILABLE, &e.to_string()),
        };
    let Some(action) = h.get("action") else {
        return refusal(&s, StatusCode::NOT_FOUND, "no such bulk action (they are kept a day)");
    };
    let num = |k: &str| h.get(k).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    let (done, expected, skipped) = (num("done"), num("expected"), num("skipped"));
    let st = h.get("state").map_or("running", String::as_str);
    let running = st == "running";
    let back = h.get("back").cloned().unwrap_or_default();
    let page = pages::page(
        "Bulk action",
        Some(&s),
        html! {
            @if running { meta http-equiv="refresh" content="1"; }
            h1 { "Bulk " (action) }
            p { "By " (h.get("actor").map_or("", String::as_str)) "." }
            label for="bulk-progress" { (action) " progress" }
            progress #bulk-progress max=(expected.max(done).max(1)) value=(done) { (done) " of " (expected) }
            p #bulk-state role="status" aria-live="polite" data-state=(st) {
                @match st {
                    "done" => { "Done: " (action) " " strong { (done) } " of the " (expected) " counted."
                        @if skipped > 0 { " " (skipped) " were no longer dead letters." } }
                    "failed" => { "Stopped after " (done) ": " (h.get("error").map_or("", String::as_str)) }
                    _ => { "Running: " (done) " of " (expected) " so far…" }
                }
            }
            p { a href=(format!("/console/dead-letters?{back}")) { "Back to the dead letters" } }
        },
    );
    page_response(StatusCode::OK, page)
}
