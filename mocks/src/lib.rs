//! Mock generation providers on loopback, for the demo and the tests: each provider's API shape
//! (OpenAI Images, Gemini/Imagen/Veo, Kling, BytePlus Ark, BFL Flux) under
//! `/{provider}/{region}/…`, returning real media, with behaviour scripted
//!
//! - **per prompt**, by directives in the prompt: `[mock:pending=3]` (polls before ready),
//!   `[mock:429=2]` (the first two calls answer 429 with `Retry-After`), `[mock:5xx=1]`,
//!   `[mock:quota]`, `[mock:concurrency=1]`, `[mock:moderated]` (refused at submit),
//!   `[mock:moderated_output]` (the task ends moderated), `[mock:fail]`, `[mock:malformed=1]`,
//!   `[mock:truncated=1]`, `[mock:expired]` (the result URL answers 403), `[mock:slow=MS]`
//!   (every call waits first), `[mock:slow_reply=MS]` (Kling: the task is created, then the
//!   reply waits, so a client that times out does not know it exists), `[mock:slow_body]`,
//!   `[mock:lose_callback]` (a webhook task never calls back: polling must find its end),
//!   `[mock:flagged]` (the image is [`media::FLAGGED_TINT`]'s picture, for abuse-list tests),
//!   `[mock:near]` ([`media::NEAR_TINT`]'s picture, another far from every gradient, for the
//!   review band);
//! - **per request**, by `POST /_mock/script` (`[{"provider": "kling", "fault": "rate_limited"}, …]`,
//!   each used by the next matching call);
//! - **at random**, by `PUT /_mock/faults` (`{"rate_429": 0.3, "rate_5xx": 0.05, "retry_after_secs": 1}`).
//!
//! `GET /_mock/requests` is the request log (provider, region, method, path, the call's key —
//! the prompt's SHA-256 or the task id —, status, `Retry-After`, headers without secrets);
//! `DELETE /_mock/requests` clears it. `GET /_mock/refs/{name}` serves reference images for the
//! worker's SSRF-safe fetcher (and misbehaving ones: a redirect, an oversize, a slow, a
//! non-image and a missing one).

mod apis;
pub mod cybertipline;
pub mod media;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, RawQuery, State as AxState};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post, put};
use rand::Rng;
use serde::{Deserialize, Serialize};
use sha2::Digest;

use media::MediaCache;

/// Random faults applied to API calls (not to result downloads).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Faults {
    /// Share of calls answered 429 with `Retry-After`.
    pub rate_429: f64,
    /// Share of calls answered 5xx.
    pub rate_5xx: f64,
    /// The `Retry-After` sent with a 429, in seconds.
    pub retry_after_secs: u64,
    /// Added to every call, in milliseconds.
    pub latency_ms: u64,
}

/// A failure a call can be made to answer with, in its provider's own shape.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Fault {
    /// 429, slow down, with `Retry-After`.
    RateLimited,
    /// The account's quota is used up.
    Quota,
    /// The account's concurrency is full.
    Concurrency,
    /// The safety system refused the request.
    Moderated,
    /// 500.
    ServerError,
    /// 200 with a body that is not JSON.
    Malformed,
    /// The body stops half-way (the connection is cut).
    Truncated,
    /// The body arrives slowly (5 s).
    SlowBody,
}

/// One scripted behaviour for the next matching call.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scripted {
    /// Only calls to this provider (any when absent).
    #[serde(default)]
    pub provider: Option<String>,
    /// What to answer.
    pub fault: Fault,
}

/// One call, as logged.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LogEntry {
    /// Order of arrival.
    pub seq: u64,
    /// Arrival, Unix ms.
    pub at_ms: u64,
    /// Provider (path segment).
    pub provider: String,
    /// Region (path segment).
    pub region: String,
    /// HTTP method.
    pub method: String,
    /// Path below `/{provider}/{region}`, without the query.
    pub path: String,
    /// What the call was about: the prompt's SHA-256 for a submit, the task id for a poll.
    pub key: String,
    /// Status answered.
    pub status: u16,
    /// The delay answered (`Retry-After`, or the body's `retry_after` / `RetryInfo`), in seconds.
    pub retry_after_secs: Option<u64>,
    /// Request headers, secrets redacted.
    pub headers: BTreeMap<String, String>,
    /// Whether the request body names a reference image by URL (a `/_mock/refs/` URL): the
    /// fleet hands providers the bytes, never the user's URL, so this stays `false`.
    #[serde(default)]
    pub reference_url_in_body: bool,
}

/// Directives read from a prompt.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Directives {
    pub(crate) pending: u32,
    rate_limited: u32,
    server_errors: u32,
    concurrency: u32,
    malformed: u32,
    truncated: u32,
    quota: bool,
    moderated: bool,
    moderated_output: bool,
    fail: bool,
    expired: bool,
    slow_ms: u64,
    slow_reply_ms: u64,
    slow_body: bool,
    lose_callback: bool,
    pub(crate) flagged: bool,
    pub(crate) near: bool,
}

impl Directives {
    /// Reads `[mock:…]` directives from a prompt.
    pub fn parse(prompt: &str) -> Self {
        let mut d = Self::default();
        let mut rest = prompt;
        while let Some(start) = rest.find("[mock:") {
            let after = &rest[start + 6..];
            let Some(end) = after.find(']') else { break };
            for item in after[..end].split(',') {
                let (name, value) = item.split_once('=').unwrap_or((item, "1"));
                let n: u64 = value.trim().parse().unwrap_or(1);
                let n32 = n.min(1000) as u32;
                match name.trim() {
                    "pending" => d.pending = n32,
                    "429" => d.rate_limited = n32,
                    "5xx" => d.server_errors = n32,
                    "concurrency" => d.concurrency = n32,
                    "malformed" => d.malformed = n32,
                    "truncated" => d.truncated = n32,
                    "quota" => d.quota = true,
                    "moderated" => d.moderated = true,
                    "moderated_output" => d.moderated_output = true,
                    "fail" => d.fail = true,
                    "expired" => d.expired = true,
                    "slow" => d.slow_ms = n.min(600_000),
                    "slow_reply" => d.slow_reply_ms = n.min(600_000),
                    "slow_body" => d.slow_body = true,
                    "lose_callback" => d.lose_callback = true,
                    "flagged" => d.flagged = true,
                    "near" => d.near = true,
                    _ => {}
                }
            }
            rest = &after[end..];
        }
        d
    }
}

/// A task a mock accepted.
#[derive(Clone, Debug)]
pub(crate) struct MockTask {
    pub id: String,
    pub provider: String,
    pub region: String,
    pub family: String,
    pub model: String,
    pub directives: Directives,
    pub polls: u32,
    pub video: bool,
    pub outputs: u32,
    pub width: u32,
    pub height: u32,
    pub duration: u32,
    pub external_id: Option<String>,
    pub tint: u8,
}

/// The server's shared state.
#[derive(Debug)]
pub struct MockState {
    /// Media made on demand.
    pub media: MediaCache,
    base: String,
    log: Mutex<Vec<LogEntry>>,
    faults: Mutex<Faults>,
    scripts: Mutex<VecDeque<Scripted>>,
    counters: Mutex<HashMap<(String, &'static str), u32>>,
    tasks: Mutex<HashMap<String, MockTask>>,
    seq: AtomicU64,
    /// The CyberTipline mock's reports.
    pub tipline: cybertipline::TipState,
    /// For webhook calls.
    pub(crate) http: reqwest::Client,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// SHA-256 of a prompt, hex.
pub fn prompt_key(prompt: &str) -> String {
    sha2::Sha256::digest(prompt.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

impl MockState {
    fn new(base: String) -> Self {
        Self {
            media: MediaCache::default(),
            base,
            log: Mutex::default(),
            faults: Mutex::default(),
            scripts: Mutex::default(),
            counters: Mutex::default(),
            tasks: Mutex::default(),
            seq: AtomicU64::new(0),
            tipline: cybertipline::TipState::default(),
            http: reqwest::Client::new(),
        }
    }

    /// The URL prefix of a provider's region on this server.
    pub(crate) fn prefix(&self, provider: &str, region: &str) -> String {
        format!("{}/{provider}/{region}", self.base)
    }

    /// The request log.
    pub fn requests(&self) -> Vec<LogEntry> {
        lock(&self.log).clone()
    }

    /// Sets the random faults.
    pub fn set_faults(&self, f: Faults) {
        *lock(&self.faults) = f;
    }

    /// Queues scripted behaviours.
    pub fn script(&self, s: impl IntoIterator<Item = Scripted>) {
        lock(&self.scripts).extend(s);
    }

    pub(crate) fn next_id(&self, prefix: &str) -> String {
        format!("{prefix}{:012}", self.seq.fetch_add(1, Ordering::Relaxed) + 1)
    }

    pub(crate) fn insert_task(&self, t: MockTask) {
        lock(&self.tasks).insert(t.id.clone(), t);
    }

    /// A task by id, counting this look as a poll.
    pub(crate) fn poll_task(&self, id: &str) -> Option<MockTask> {
        let mut g = lock(&self.tasks);
        let t = g.get_mut(id)?;
        t.polls += 1;
        Some(t.clone())
    }

    /// Ends a task's pending time (a webhook task's clock ran out) and returns it.
    pub(crate) fn complete(&self, id: &str) -> Option<MockTask> {
        let mut g = lock(&self.tasks);
        let t = g.get_mut(id)?;
        t.polls = t.polls.max(t.directives.pending + 1);
        Some(t.clone())
    }

    /// Logs a webhook call the mock made.
    pub(crate) fn log_callback(&self, t: &MockTask, url: &str, status: u16) {
        let path = reqwest::Url::parse(url)
            .map(|u| u.path().to_owned())
            .unwrap_or_default();
        let mut log = lock(&self.log);
        let seq = log.len() as u64 + 1;
        log.push(LogEntry {
            seq,
            at_ms: now_ms(),
            provider: t.provider.clone(),
            region: t.region.clone(),
            method: "CALLBACK".into(),
            path,
            key: t.id.clone(),
            status,
            retry_after_secs: None,
            headers: BTreeMap::new(),
            reference_url_in_body: false,
        });
    }

    pub(crate) fn task(&self, id: &str) -> Option<MockTask> {
        lock(&self.tasks).get(id).cloned()
    }

    pub(crate) fn task_by_external(&self, provider: &str, ext: &str) -> Option<MockTask> {
        lock(&self.tasks)
            .values()
            .find(|t| t.provider == provider && t.external_id.as_deref() == Some(ext))
            .cloned()
    }

    /// Counts one use of a counted directive for `key`; true while uses remain.
    fn take(&self, key: &str, what: &'static str, allowed: u32) -> bool {
        if allowed == 0 {
            return false;
        }
        let mut g = lock(&self.counters);
        let used = g.entry((key.to_owned(), what)).or_insert(0);
        if *used < allowed {
            *used += 1;
            true
        } else {
            false
        }
    }

    /// The failure this call should answer with, if any: a scripted one first, then the
    /// prompt's counted directives, then the random faults.
    pub(crate) async fn gate(&self, provider: &str, key: &str, d: &Directives) -> Option<Fault> {
        let faults = lock(&self.faults).clone();
        let delay = faults.latency_ms + d.slow_ms;
        if delay > 0 {
            tokio::time::sleep(Duration::from_millis(delay)).await;
        }
        {
            let mut s = lock(&self.scripts);
            if let Some(i) = s
                .iter()
                .position(|x| x.provider.as_deref().is_none_or(|p| p == provider))
                && let Some(x) = s.remove(i)
            {
                return Some(x.fault);
            }
        }
        let counted = [
            (d.rate_limited, "429", Fault::RateLimited),
            (d.server_errors, "5xx", Fault::ServerError),
            (d.concurrency, "concurrency", Fault::Concurrency),
            (d.malformed, "malformed", Fault::Malformed),
            (d.truncated, "truncated", Fault::Truncated),
        ];
        for (n, name, fault) in counted {
            if self.take(key, name, n) {
                return Some(fault);
            }
        }
        if d.slow_body {
            return Some(Fault::SlowBody);
        }
        let mut rng = rand::rng();
        if faults.rate_429 > 0.0 && rng.random::<f64>() < faults.rate_429 {
            return Some(Fault::RateLimited);
        }
        if faults.rate_5xx > 0.0 && rng.random::<f64>() < faults.rate_5xx {
            return Some(Fault::ServerError);
        }
        None
    }

    pub(crate) fn retry_after_secs(&self) -> u64 {
        lock(&self.faults).retry_after_secs.max(1)
    }
}

/// What a provider handler gets.
#[derive(Debug)]
pub(crate) struct Call {
    pub provider: String,
    pub region: String,
    pub method: Method,
    pub path: String,
    pub query: HashMap<String, String>,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Call {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_default()
    }
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
    pub fn bearer(&self) -> Option<&str> {
        self.header("authorization").and_then(|v| v.strip_prefix("Bearer "))
    }
}

/// A response plus the key the log files it under.
pub(crate) struct Answer {
    pub response: Response,
    pub key: String,
}

/// JSON with a status.
pub(crate) fn json(status: u16, v: serde_json::Value) -> Response {
    (
        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        axum::Json(v),
    )
        .into_response()
}

/// Adds `Retry-After`.
pub(crate) fn with_retry_after(mut r: Response, secs: u64) -> Response {
    if let Ok(v) = secs.to_string().parse() {
        r.headers_mut().insert("retry-after", v);
    }
    r
}

/// The provider-independent faults' answers.
pub(crate) fn generic(fault: Fault) -> Option<Response> {
    match fault {
        Fault::Malformed => Some(
            (
                StatusCode::OK,
                [("content-type", "application/json")],
                "{\"data\": [{\"url\": ",
            )
                .into_response(),
        ),
        Fault::Truncated => {
            let chunks: Vec<Result<Bytes, std::io::Error>> = vec![
                Ok(Bytes::from_static(b"{\"id\": \"trunc")),
                Err(std::io::Error::other("connection cut")),
            ];
            Some(
                Response::builder()
                    .status(200)
                    .header("content-type", "application/json")
                    .header("content-length", "4096")
                    .body(Body::from_stream(futures::stream::iter(chunks)))
                    .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response()),
            )
        }
        Fault::SlowBody => {
            let stream = futures::stream::unfold(0u8, |i| async move {
                if i >= 5 {
                    return None;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
                Some((Ok::<_, std::io::Error>(Bytes::from_static(b" ")), i + 1))
            });
            Some(
                Response::builder()
                    .status(200)
                    .header("content-type", "application/json")
                    .body(Body::from_stream(stream))
                    .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response()),
            )
        }
        _ => None,
    }
}

/// A running mock server.
#[derive(Debug)]
pub struct MockServer {
    /// Where it listens.
    pub addr: SocketAddr,
    state: Arc<MockState>,
    task: tokio::task::JoinHandle<()>,
}

impl MockServer {
    /// Listens on `addr` (port 0 picks one) and serves until dropped.
    pub async fn start(addr: SocketAddr) -> std::io::Result<Self> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(MockState::new(format!("http://{addr}")));
        // The sample clip is made by the ffmpeg CLI: once, here, off the async threads, so no
        // handler ever waits on a child process (a failure is kept and answered as a 500).
        let warm = state.clone();
        let _ = tokio::task::spawn_blocking(move || warm.media.video().map(|_| ())).await;
        let app = router(state.clone());
        let task = tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                tracing::error!(error = %e, "mock providers stopped");
            }
        });
        Ok(Self { addr, state, task })
    }

    /// `http://ADDR`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The shared state (log, faults, scripts).
    pub fn state(&self) -> &Arc<MockState> {
        &self.state
    }

    /// Serves until the process is stopped.
    pub async fn wait(mut self) {
        let task = std::mem::replace(&mut self.task, tokio::spawn(async {}));
        let _ = task.await;
    }
}

impl Drop for MockServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn router(state: Arc<MockState>) -> Router {
    Router::new()
        .route("/_mock/health", get(|| async { "ok" }))
        .route("/_mock/requests", get(requests).delete(clear_requests))
        .route("/_mock/faults", put(set_faults).get(get_faults))
        .route("/_mock/script", post(script))
        .route("/_mock/refs/{name}", get(reference))
        .merge(cybertipline::routes())
        .route("/{provider}/{region}/{*rest}", any(dispatch))
        .with_state(state)
}

async fn requests(AxState(s): AxState<Arc<MockState>>) -> Response {
    axum::Json(s.requests()).into_response()
}

async fn clear_requests(AxState(s): AxState<Arc<MockState>>) -> StatusCode {
    lock(&s.log).clear();
    StatusCode::NO_CONTENT
}

async fn set_faults(AxState(s): AxState<Arc<MockState>>, body: Bytes) -> Response {
    match serde_json::from_slice::<Faults>(&body) {
        Ok(f) if (0.0..=1.0).contains(&f.rate_429) && (0.0..=1.0).contains(&f.rate_5xx) => {
            s.set_faults(f.clone());
            axum::Json(f).into_response()
        }
        Ok(_) => (StatusCode::BAD_REQUEST, "rates must be within 0..=1").into_response(),
        Err(e) => (StatusCode::BAD_REQUEST, e.to_string()).into_response(),
    }
}

async fn get_faults(AxState(s): AxState<Arc<MockState>>) -> Response {
    axum::Json(lock(&s.faults).clone()).into_response()
}

async fn script(AxState(s): AxState<Arc<MockState>>, body: Bytes) -> Response {
    match serde_json::from_slice::<Vec<Scripted>>(&body) {
        Ok(v) => {
            let n = v.len();
            s.script(v);
            axum::Json(serde_json::json!({"queued": n})).into_response()
        }
        Err(e) => (StatusCode::BAD_REQUEST, e.to_string()).into_response(),
    }
}

/// Where the mock serves reference images (for the worker's SSRF-safe fetcher).
pub const REFS_PATH: &str = "/_mock/refs/";

/// `GET /_mock/refs/{name}`: a reference image, or a misbehaving server: `redirect?to=URL`
/// (302 there), `big.png` (21 MiB), `slow.png` (a byte a second), `text.png` (not an image),
/// `gone.png` (404); any other name is a 64x64 PNG.
async fn reference(
    AxState(s): AxState<Arc<MockState>>,
    Path(name): Path<String>,
    RawQuery(query): RawQuery,
) -> Response {
    match name.as_str() {
        "redirect" => {
            let to = query
                .as_deref()
                .and_then(|q| q.strip_prefix("to="))
                .map(|t| t.replace("%2F", "/").replace("%3A", ":"))
                .unwrap_or_default();
            Response::builder()
                .status(StatusCode::FOUND)
                .header("location", to)
                .body(Body::empty())
                .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
        }
        "big.png" => {
            let mut b = vec![0u8; 21 << 20];
            b[..8].copy_from_slice(b"\x89PNG\r\n\x1a\n");
            ([("content-type", "image/png")], b).into_response()
        }
        "slow.png" => {
            let stream = futures::stream::unfold(0u8, |i| async move {
                if i >= 60 {
                    return None;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
                Some((Ok::<_, std::io::Error>(Bytes::from_static(b"x")), i + 1))
            });
            Response::builder()
                .header("content-type", "image/png")
                .body(Body::from_stream(stream))
                .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
        }
        "text.png" => ([("content-type", "image/png")], "not an image").into_response(),
        "gone.png" => StatusCode::NOT_FOUND.into_response(),
        _ => {
            let png = s.media.image(64, 64, false, 90);
            ([("content-type", "image/png")], png.as_ref().clone()).into_response()
        }
    }
}

const SECRET_HEADERS: [&str; 4] = ["authorization", "x-key", "x-goog-api-key", "api-key"];

async fn dispatch(
    AxState(s): AxState<Arc<MockState>>,
    Path((provider, region, rest)): Path<(String, String, String)>,
    RawQuery(query): RawQuery,
    method: Method,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let query: HashMap<String, String> = query
        .as_deref()
        .unwrap_or("")
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.replace("%2F", "/").replace("%3A", ":")))
        .collect();
    let logged_headers = headers
        .iter()
        .map(|(k, v)| {
            let k = k.as_str().to_ascii_lowercase();
            let v = if SECRET_HEADERS.contains(&k.as_str()) {
                "<redacted>".to_owned()
            } else {
                v.to_str().unwrap_or("<binary>").to_owned()
            };
            (k, v)
        })
        .collect();
    let call = Call {
        provider: provider.clone(),
        region: region.clone(),
        method: method.clone(),
        path: format!("/{rest}"),
        query,
        headers,
        body,
    };
    let at_ms = now_ms();
    let reference_url_in_body = call.body.windows(REFS_PATH.len()).any(|w| w == REFS_PATH.as_bytes());
    // A provider finishes what it received even if the caller hangs up: run the call on its
    // own task, so a client timeout does not undo the call's effects (or its log entry).
    let handled = tokio::spawn(async move {
        let Answer { response, key } = apis::handle(&s, call).await;
        let retry_after_secs = response.extensions().get::<apis::RetryHint>().map(|h| h.0).or_else(|| {
            response
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse().ok())
        });
        let mut log = lock(&s.log);
        let seq = log.len() as u64 + 1;
        log.push(LogEntry {
            seq,
            at_ms,
            provider,
            region,
            method: method.to_string(),
            path: format!("/{rest}"),
            key,
            status: response.status().as_u16(),
            retry_after_secs,
            headers: logged_headers,
            reference_url_in_body,
        });
        response
    })
    .await;
    handled.unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directives_are_read_from_prompts() {
        let d = Directives::parse("a fox [mock:pending=3,429=2] in snow [mock:moderated_output]");
        assert_eq!((d.pending, d.rate_limited, d.moderated_output), (3, 2, true));
        assert_eq!(Directives::parse("plain prompt"), Directives::default());
        assert_eq!(Directives::parse("[mock:pending=x"), Directives::default());
    }
}
