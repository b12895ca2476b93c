//! A Server-Sent Events client for the tests: the status and headers of a live response, and
//! its events as `gantry-client` parses them.

use std::collections::VecDeque;
use std::time::Duration;

/// One event.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SseEvent {
    pub event: String,
    pub id: Option<String>,
    pub data: String,
}

impl SseEvent {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.data).unwrap_or_else(|e| panic!("event data is not JSON ({e}): {}", self.data))
    }
}

/// An open stream.
pub struct SseStream {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    resp: reqwest::Response,
    buf: String,
    ready: VecDeque<SseEvent>,
}

impl SseStream {
    /// Opens `url` with `key` and, when given, a `Last-Event-ID`.
    pub async fn open(url: &str, key: &str, last_event_id: Option<&str>) -> Self {
        let mut req = reqwest::Client::new()
            .get(url)
            .header("Authorization", format!("Bearer {key}"))
            .header("Accept", "text/event-stream");
        if let Some(id) = last_event_id {
            req = req.header("Last-Event-ID", id);
        }
        let resp = req.send().await.unwrap();
        Self {
            status: resp.status().as_u16(),
            headers: resp.headers().clone(),
            resp,
            buf: String::new(),
            ready: VecDeque::new(),
        }
    }

    /// The next event within `within`; `None` when none came or the stream ended.
    pub async fn next(&mut self, within: Duration) -> Option<SseEvent> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if let Some(e) = self.ready.pop_front() {
                return Some(e);
            }
            let chunk = tokio::time::timeout_at(deadline, self.resp.chunk()).await.ok()?;
            match chunk.unwrap() {
                Some(bytes) => {
                    self.buf.push_str(&String::from_utf8_lossy(&bytes));
                    self.parse();
                }
                None => return self.ready.pop_front(),
            }
        }
    }

    /// Events until `within` passes with none, or the stream ends.
    pub async fn drain(&mut self, within: Duration) -> Vec<SseEvent> {
        let mut out = Vec::new();
        while let Some(e) = self.next(within).await {
            out.push(e);
        }
        out
    }

    /// Whether the server ended the stream (reads what is left).
    pub async fn ended(&mut self, within: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            match tokio::time::timeout_at(deadline, self.resp.chunk()).await {
                Ok(Ok(None)) | Ok(Err(_)) => return true,
                Ok(Ok(Some(_))) => continue,
                Err(_) => return false,
            }
        }
    }

    /// Complete events off the buffer, parsed as the Rust client parses them.
    fn parse(&mut self) {
        for e in gantry_client::take_sse_events(&mut self.buf) {
            self.ready.push_back(SseEvent {
                event: e.event,
                id: e.id,
                data: e.data,
            });
        }
    }
}
