//! The overview's live updates: `GET /console/overview/stream` (Server-Sent Events) sends each
//! new snapshot of [`crate::console_feed`]; the page's script writes the numbers into its
//! table. Without the script the page still works: it is only not live.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};

use super::{session_of, to_login};
use crate::state::AppState;

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
