//! The overview's live updates: one task reads every pool's queues every [`EVERY`] while at
//! least one console watches, and shares the snapshot (JSON) with all of them through a watch
//! channel, so twenty open consoles cost what one does. Each console's
//! `GET /console/overview/stream` (Server-Sent Events) sends each new snapshot; the page's
//! script writes the numbers into its table. Without the script the page still works: it is
//! only not live.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::{session_of, to_login};
use crate::config::SchedulerConfig;
use crate::placement::PoolLoads;
use crate::state::AppState;
use gantry_queue::QueueClient;

/// How often the snapshot is read while someone watches.
pub const EVERY: Duration = Duration::from_secs(2);

/// One pool in a snapshot.
#[derive(Debug, Serialize)]
struct PoolSnapshot {
    pool: String,
    live_workers: u32,
    desired_workers: u32,
    queues: Vec<gantry_queue::QueueStats>,
}

/// The shared snapshot: subscribe to follow it. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Live {
    rx: watch::Receiver<String>,
}

impl Live {
    /// Starts the task that reads snapshots while anyone follows them.
    pub fn start(
        queue: QueueClient,
        cfg: std::sync::Arc<SchedulerConfig>,
        loads: PoolLoads,
        shutdown: CancellationToken,
    ) -> Self {
        let (tx, rx) = watch::channel(String::new());
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = tokio::time::sleep(EVERY) => {}
                }
                // The task's own receiver is not a watcher.
                if tx.receiver_count() <= 1 {
                    continue;
                }
                match snapshot(&queue, &cfg, &loads).await {
                    Ok(s) => {
                        tx.send_if_modified(|old| {
                            let changed = *old != s;
                            if changed {
                                *old = s;
                            }
                            changed
                        });
                    }
                    Err(e) => tracing::warn!(error = %e, "reading the console's overview failed"),
                }
            }
        });
        Self { rx }
    }

    /// A follower of the snapshot.
    fn follow(&self) -> watch::Receiver<String> {
        self.rx.clone()
    }
}

async fn snapshot(
    queue: &QueueClient,
    cfg: &SchedulerConfig,
    loads: &PoolLoads,
) -> Result<String, gantry_queue::QueueError> {
    let mut pools = Vec::with_capacity(cfg.pools.len());
    for (name, p) in &cfg.pools {
        let pool = gantry_queue::Pool::new(name)?;
        let load = loads.get(name);
        pools.push(PoolSnapshot {
            pool: name.clone(),
            live_workers: load.live_workers,
            desired_workers: crate::metrics::desired_workers(p, &load),
            queues: queue.stats(&pool, &p.kinds).await?,
        });
    }
    Ok(serde_json::json!({ "pools": pools }).to_string())
}

/// `GET /console/overview/stream`: the overview's snapshots, as they change (the first one at
/// once when there is one).
pub(super) async fn stream(State(state): State<AppState>, headers: HeaderMap) -> Response {
    if session_of(&state, &headers).await.is_none() {
        return to_login();
    }
    let mut rx = state.console_live.follow();
    rx.mark_changed();
    let body = futures::stream::unfold(rx, |mut rx| async move {
        loop {
            rx.changed().await.ok()?;
            let s = rx.borrow_and_update().clone();
            if !s.is_empty() {
                return Some((Ok::<_, Infallible>(Event::default().event("overview").data(s)), rx));
            }
        }
    });
    let mut res = Sse::new(body)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response();
    let h = res.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    res
}

/// The overview page's script: follows the stream and writes each snapshot into the table.
pub const SCRIPT: &str = include_str!("console.js");
