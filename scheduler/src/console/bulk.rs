//! Bulk dead-letter work with progress, in the scheduler's background, a page at a time,
//! writing how far it got to Redis (`gantry:{console}:bulk:<id>`, a hash kept a day) so its
//! page, served by any replica, shows it: a progress bar that refreshes itself each second
//! while the work runs (a `<meta refresh>`, so it needs no script).
//! - **A confirmed action** (replay, purge) on a selection or on all matching.
//! - **The dry-run count** before an action on all matching, when the filter names a class or a
//!   tenant: Redis indexes dead letters by time alone, so such a count reads every record in
//!   the range. The page then shows the count and the confirmation.

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

/// Starts counting what `filter` selects in `queues` before `action` (`back`: the filter as a
/// query, for the confirmation); returns the count's id, for its page.
pub(super) async fn start_count(
    state: &AppState,
    action: DeadAction,
    queues: Vec<QueueName>,
    filter: DeadFilter,
    back: String,
) -> Result<String, QueueError> {
    let id = gantry_queue::JobId::new().to_string();
    // What the time range holds, for the progress bar (one ZCOUNT per queue).
    let by_time = DeadFilter {
        class: None,
        tenant: None,
        ..filter.clone()
    };
    let mut total = 0;
    for q in &queues {
        total += state.queue.count_dead(q, &by_time).await?;
    }
    let fields = [
        ("work", "count".to_owned()),
        ("state", "running".to_owned()),
        ("action", action.as_str().to_owned()),
        ("back", back),
        ("total", total.to_string()),
        ("read", "0".to_owned()),
        ("matched", "0".to_owned()),
    ];
    create(state, &id, &fields).await?;
    let (state, count) = (state.clone(), id.clone());
    tokio::spawn(async move { run_count(state, count, queues, filter).await });
    Ok(id)
}

async fn run_count(state: AppState, id: String, queues: Vec<QueueName>, filter: DeadFilter) {
    const PAGE: usize = 1000;
    let (mut read, mut matched) = (0u64, 0u64);
    for q in &queues {
        let mut offset = 0;
        loop {
            match state.queue.count_dead_range(q, &filter, offset, PAGE).await {
                Ok((m, n)) => {
                    matched += m;
                    read += n as u64;
                    offset += n;
                    write(
                        &state,
                        &id,
                        &[("read", read.to_string()), ("matched", matched.to_string())],
                    )
                    .await;
                    if n < PAGE {
                        break;
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "counting dead letters failed");
                    let fields = [("state", "failed".to_owned()), ("error", e.to_string())];
                    return write(&state, &id, &fields).await;
                }
            }
        }
    }
    write(&state, &id, &[("state", "done".to_owned())]).await;
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
    let fields = [
        ("action", action.as_str().to_owned()),
        ("expected", expected.to_string()),
        ("done", "0".to_owned()),
        ("state", "running".to_owned()),
        ("actor", actor.to_owned()),
        ("back", back),
    ];
    create(state, &id, &fields).await?;
    let (state, actor, bulk) = (state.clone(), actor.to_owned(), id.clone());
    tokio::spawn(async move { run(state, actor, bulk, action, work).await });
    Ok(id)
}

/// Creates bulk work `id`'s record with `fields`, kept a day.
async fn create(state: &AppState, id: &str, fields: &[(&str, String)]) -> Result<(), QueueError> {
    let mut hset = redis::cmd("HSET");
    hset.arg(key(id));
    for (k, v) in fields {
        hset.arg(*k).arg(v);
    }
    let mut c = state.queue.connection();
    redis::pipe()
        .atomic()
        .add_command(hset)
        .ignore()
        .cmd("EXPIRE")
        .arg(key(id))
        .arg(KEPT_SECS)
        .ignore()
        .query_async::<()>(&mut c)
        .await?;
    Ok(())
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
    if h.get("work").is_some_and(|w| w == "count") {
        return count_page(&s, &h, action, num("read"), num("total"), num("matched"));
    }
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

/// A dry-run count's page: its progress while it runs, then the confirmation.
fn count_page(
    s: &super::session::Session,
    h: &std::collections::HashMap<String, String>,
    action: &str,
    read: u64,
    total: u64,
    matched: u64,
) -> Response {
    let st = h.get("state").map_or("running", String::as_str);
    let back = h.get("back").cloned().unwrap_or_default();
    if st == "done" {
        let f = super::dead_letters::BulkForm::parse(back.as_bytes());
        let action = match action {
            "replay" => DeadAction::Replay,
            _ => DeadAction::Purge,
        };
        return page_response(
            StatusCode::OK,
            super::dead_letters::confirm_view(s, action, matched, &f),
        );
    }
    let page = pages::page(
        "Counting",
        Some(s),
        html! {
            @if st == "running" { meta http-equiv="refresh" content="1"; }
            h1 { "Counting before " (action) }
            p { "A class or tenant filter is checked against each dead letter's record." }
            label for="count-progress" { "Dead letters read" }
            progress #count-progress max=(total.max(read).max(1)) value=(read) { (read) " of " (total) }
            p #bulk-state role="status" aria-live="polite" data-state=(st) {
                @if st == "failed" { "The count stopped: " (h.get("error").map_or("", String::as_str)) }
                @else { "Read " (read) " of " (total) "; " (matched) " match so far…" }
            }
            p { a href=(format!("/console/dead-letters?{back}")) { "Cancel" } }
        },
    );
    page_response(StatusCode::OK, page)
}
