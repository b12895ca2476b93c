//! A small client for Gantry's scheduler API, for platform services: submit one job or a batch,
//! read a job, wait for it to finish (polling with exponential backoff, or over Server-Sent
//! Events), search jobs ([`Client::jobs`]), cancel one, read the credit balance; and, with an
//! operator key, the queues' counts and every tenant's jobs.
//!
//! ```no_run
//! # async fn f() -> Result<(), gantry_client::ClientError> {
//! use gantry_client::{Client, WaitOptions};
//! let gantry = Client::new("http://127.0.0.1:8080", "demo-studio-key")?;
//! let job = serde_json::json!({"user": "u-1", "kind": "noop", "payload": {"sleep_ms": 50}});
//! let submitted = gantry.submit(&job).await?;
//! let done = gantry.wait(&submitted.id, WaitOptions::default()).await?;
//! assert_eq!(done.status, "succeeded");
//! # Ok(()) }
//! ```
//!
//! Jobs are any `Serialize` value shaped as the API's job request (see `/openapi.json`); the
//! client does not depend on the queue's crates. Refusals come back as [`ClientError::Api`]
//! with the problem document's stable `code`; `429` is retried after its `Retry-After` when
//! [`Client::with_rate_limit_retries`] allows.

mod events;
mod exports;
mod jobs;
mod pipelines;

use std::time::Duration;

pub use events::{EventStream, ServerEvent, Webhook, take_events as take_sse_events};
pub use exports::{Export, ExportArchive, ExportIncludes};
pub use jobs::{JobFilter, JobList, Jobs};
pub use pipelines::{CreatedStep, Pipeline, PipelineCreated, PipelineCredits, PipelineStep};
use reqwest::StatusCode;
use serde::{Deserialize, Serialize};

/// An RFC 7807 problem the API answered with.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct Problem {
    /// HTTP status.
    pub status: u16,
    /// The stable machine-readable code (`insufficient_credits`, `rate_limited`, ...).
    pub code: String,
    /// Human-readable detail.
    #[serde(default)]
    pub detail: String,
    /// Seconds to wait, from `Retry-After`, on `429`.
    #[serde(skip)]
    pub retry_after: Option<Duration>,
}

/// What can go wrong talking to the scheduler.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The base URL is not an http(s) URL.
    #[error("invalid base URL {0:?}")]
    InvalidUrl(String),
    /// The API refused the request.
    #[error("{} {}: {}", .0.status, .0.code, .0.detail)]
    Api(Problem),
    /// The request did not complete (connection, timeout, TLS).
    #[error("http: {0}")]
    Http(#[from] reqwest::Error),
    /// The answer was not what the API documents.
    #[error("unexpected response ({status}): {detail}")]
    Unexpected {
        /// HTTP status.
        status: u16,
        /// What was wrong.
        detail: String,
    },
    /// [`Client::wait`] gave up.
    #[error("job {id} not finished after {waited:?} (last status {status})")]
    WaitTimedOut {
        /// The job.
        id: String,
        /// How long it waited.
        waited: Duration,
        /// The status last seen.
        status: String,
    },
}

impl ClientError {
    /// The problem code, when the API refused.
    pub fn code(&self) -> Option<&str> {
        match self {
            ClientError::Api(p) => Some(&p.code),
            _ => None,
        }
    }
}

/// One admitted job.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct Submitted {
    /// Its id (the first job's, for a repeated idempotency key).
    pub id: String,
    /// The pool it was queued on.
    pub pool: String,
    /// Credits reserved by this request.
    pub credits_reserved: i64,
    /// An earlier job with the same idempotency key was returned.
    pub duplicate: bool,
    /// The provider it was routed to (generate jobs).
    #[serde(default)]
    pub provider: Option<String>,
    /// The model it was routed to (generate jobs).
    #[serde(default)]
    pub model: Option<String>,
}

/// A job's credit entry.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct Credits {
    /// `reserved`, `charged` or `refunded`.
    pub state: String,
    /// Reserved at admission.
    pub reserved: i64,
    /// Charged at settlement.
    pub charged: i64,
}

/// A job as `GET /v1/jobs/{id}` shows it.
#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct JobView {
    /// Id.
    pub id: String,
    /// Kind.
    pub kind: String,
    /// `queued`, `delayed`, `running`, `retry_scheduled`, `succeeded`, `dead`, `cancelled`,
    /// `blocked` (its content matched an abuse hash list) or `review` (its content came close to
    /// one: held, nothing released, until a reviewer decides; not final).
    pub status: String,
    /// Attempts so far.
    pub attempts: u32,
    /// Pool.
    pub pool: String,
    /// Last error: `{class, message, at_ms}`.
    #[serde(default)]
    pub error: Option<serde_json::Value>,
    /// Where the output is: `{object_key, size_bytes, content_type, sha256}`.
    #[serde(default)]
    pub result: Option<serde_json::Value>,
    /// Usage the worker reported.
    #[serde(default)]
    pub usage: Option<serde_json::Value>,
    /// What it is doing while it runs: `{stage, percent, attempt, at_ms}` (its current
    /// attempt's last report; `percent` where known).
    #[serde(default)]
    pub progress: Option<serde_json::Value>,
    /// Credit entry (`None` once expired, or for free jobs).
    #[serde(default)]
    pub credits: Option<Credits>,
    /// The provider a generate job was routed to.
    #[serde(default)]
    pub provider: Option<String>,
    /// The model a generate job was routed to.
    #[serde(default)]
    pub model: Option<String>,
    /// Enqueue time, Unix ms.
    #[serde(default)]
    pub enqueued_at_ms: u64,
    /// Finish time, Unix ms.
    #[serde(default)]
    pub finished_at_ms: Option<u64>,
}

impl JobView {
    /// Whether the job will change no further (unless an operator replays it).
    pub fn is_final(&self) -> bool {
        matches!(self.status.as_str(), "succeeded" | "dead" | "cancelled" | "blocked")
    }
}

/// A queue's counts, as the operator route `GET /v1/admin/queues` shows them.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct QueueStats {
    /// Pool.
    pub pool: String,
    /// Job kind.
    pub kind: String,
    /// Waiting, per priority: high, normal, bulk.
    pub waiting: [u64; 3],
    /// Leased to workers.
    pub in_flight: u64,
    /// Delayed, or waiting for a retry.
    pub delayed: u64,
    /// In the dead-letter queue.
    pub dead: u64,
    /// Age of the oldest waiting job, in milliseconds.
    #[serde(default)]
    pub oldest_waiting_ms: Option<u64>,
    /// Paused by an operator.
    #[serde(default)]
    pub paused: bool,
}

impl QueueStats {
    /// Jobs not yet finished: waiting, running, delayed.
    pub fn open(&self) -> u64 {
        self.waiting.iter().sum::<u64>() + self.in_flight + self.delayed
    }
}

/// What a cancel did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cancelled {
    /// It had not started; it never will.
    Cancelled,
    /// It is running; its worker stops it at its next heartbeat.
    Requested,
}

/// How [`Client::wait`] polls.
#[derive(Clone, Copy, Debug)]
pub struct WaitOptions {
    /// First pause between polls.
    pub initial: Duration,
    /// Longest pause between polls.
    pub max: Duration,
    /// Give up after this long.
    pub timeout: Duration,
}

impl Default for WaitOptions {
    fn default() -> Self {
        Self {
            initial: Duration::from_millis(50),
            max: Duration::from_secs(2),
            timeout: Duration::from_secs(600),
        }
    }
}

/// The client. Cheap to clone; share one per process.
#[derive(Clone, Debug)]
pub struct Client {
    http: reqwest::Client,
    /// For event streams: no total timeout, a read timeout past the server's keep-alives.
    sse: reqwest::Client,
    base: String,
    auth: String,
    rate_limit_retries: u32,
}

#[derive(Serialize)]
struct Batch<'a, J> {
    jobs: &'a [J],
}

#[derive(Deserialize)]
struct BatchReply {
    jobs: Vec<Submitted>,
}

impl Client {
    /// A client for the scheduler at `base_url` (`http://host:port`) with `api_key`.
    pub fn new(base_url: &str, api_key: &str) -> Result<Self, ClientError> {
        let base = base_url.trim_end_matches('/');
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(ClientError::InvalidUrl(base_url.to_owned()));
        }
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .connect_timeout(Duration::from_secs(5))
            .build()?;
        let sse = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .read_timeout(Duration::from_secs(60))
            .build()?;
        Ok(Self {
            http,
            sse,
            base: base.to_owned(),
            auth: format!("Bearer {api_key}"),
            rate_limit_retries: 0,
        })
    }

    /// Retries a `429` up to `n` times, each after the `Retry-After` the API gave.
    pub fn with_rate_limit_retries(mut self, n: u32) -> Self {
        self.rate_limit_retries = n;
        self
    }

    /// Submits one job.
    pub async fn submit<J: Serialize + ?Sized>(&self, job: &J) -> Result<Submitted, ClientError> {
        self.send(reqwest::Method::POST, "/v1/jobs", Some(job), None).await
    }

    /// Submits one job under an idempotency key: a repeat returns the first job.
    pub async fn submit_idempotent<J: Serialize + ?Sized>(&self, job: &J, key: &str) -> Result<Submitted, ClientError> {
        self.send(reqwest::Method::POST, "/v1/jobs", Some(job), Some(key)).await
    }

    /// Submits up to 1,000 jobs, admitted all or none.
    pub async fn submit_batch<J: Serialize>(&self, jobs: &[J]) -> Result<Vec<Submitted>, ClientError> {
        let r: BatchReply = self
            .send(reqwest::Method::POST, "/v1/jobs:batch", Some(&Batch { jobs }), None)
            .await?;
        Ok(r.jobs)
    }

    /// Reads a job.
    pub async fn job(&self, id: &str) -> Result<JobView, ClientError> {
        self.send(reqwest::Method::GET, &format!("/v1/jobs/{id}"), None::<&()>, None)
            .await
    }

    /// Cancels a job.
    pub async fn cancel(&self, id: &str) -> Result<Cancelled, ClientError> {
        #[derive(Deserialize)]
        struct Reply {
            outcome: String,
        }
        let r: Reply = self
            .send(
                reqwest::Method::POST,
                &format!("/v1/jobs/{id}:cancel"),
                None::<&()>,
                None,
            )
            .await?;
        Ok(if r.outcome == "cancelled" {
            Cancelled::Cancelled
        } else {
            Cancelled::Requested
        })
    }

    /// The tenant's credit balance: what new jobs can reserve (unfinished jobs' reservations
    /// are already taken off).
    pub async fn balance(&self) -> Result<i64, ClientError> {
        #[derive(Deserialize)]
        struct Reply {
            balance: i64,
        }
        let r: Reply = self
            .send(reqwest::Method::GET, "/v1/credits", None::<&()>, None)
            .await?;
        Ok(r.balance)
    }

    /// Every declared queue's counts (an operator key: `admin` scope).
    pub async fn queues(&self) -> Result<Vec<QueueStats>, ClientError> {
        #[derive(Deserialize)]
        struct Reply {
            queues: Vec<QueueStats>,
        }
        let r: Reply = self
            .send(reqwest::Method::GET, "/v1/admin/queues", None::<&()>, None)
            .await?;
        Ok(r.queues)
    }

    /// Publishes `list` (a list file's text: `pdq:HEX`, `md5:HEX`, `sha256:HEX` or bare PDQ hex
    /// per line) as the next version of the abuse hash list `name`, whose matches are recorded
    /// under `category` (an operator key). Returns the new version's description.
    pub async fn publish_hash_list(
        &self,
        name: &str,
        category: &str,
        list: &str,
    ) -> Result<serde_json::Value, ClientError> {
        let url = format!(
            "{}/v1/admin/hashlists/{}?category={}",
            self.base,
            percent_encode(name),
            percent_encode(category)
        );
        self.put_hash_list(&url, list).await
    }

    async fn put_hash_list(&self, url: &str, list: &str) -> Result<serde_json::Value, ClientError> {
        let resp = self
            .http
            .put(url)
            .header(reqwest::header::AUTHORIZATION, &self.auth)
            .header(reqwest::header::CONTENT_TYPE, "text/plain")
            .body(list.to_owned())
            .send()
            .await?;
        let status = resp.status();
        if !status.is_success() {
            return Err(ClientError::Api(problem(resp).await?));
        }
        let bytes = resp.bytes().await?;
        serde_json::from_slice(&bytes).map_err(|e| ClientError::Unexpected {
            status: status.as_u16(),
            detail: e.to_string(),
        })
    }

    /// Erases everything of `user` (this key's tenant's user; an operator key names the tenant
    /// with `tenant`): their jobs are cancelled or stopped, their records, dead letters and
    /// outputs deleted. Returns the receipt (`complete: false` while a running job had not yet
    /// stopped: call again, it is idempotent).
    pub async fn erase_user(&self, user: &str, tenant: Option<&str>) -> Result<serde_json::Value, ClientError> {
        let mut path = format!("/v1/users/{}/data", percent_encode(user));
        if let Some(t) = tenant {
            path.push_str(&format!("?tenant={}", percent_encode(t)));
        }
        self.send(reqwest::Method::DELETE, &path, None::<&()>, None).await
    }

    /// One of a job's released outputs (`name` as its result names the file: `output.png`),
    /// its bytes whole (`GET /v1/jobs/{id}/outputs/{name}`). A job that has not released it
    /// answers a `conflict` problem; another tenant's job `not_found`.
    pub async fn output(&self, id: &str, name: &str) -> Result<Vec<u8>, ClientError> {
        let url = format!(
            "{}/v1/jobs/{}/outputs/{}",
            self.base,
            percent_encode(id),
            percent_encode(name)
        );
        let resp = self
            .http
            .get(&url)
            .header(reqwest::header::AUTHORIZATION, &self.auth)
            .send()
            .await?;
        if resp.status().is_success() {
            return Ok(resp.bytes().await?.to_vec());
        }
        Err(ClientError::Api(problem(resp).await?))
    }

    /// The review queue, newest first (`safety:review`): the pending items only, or all.
    pub async fn reviews(&self, pending_only: bool, limit: usize) -> Result<Vec<serde_json::Value>, ClientError> {
        #[derive(Deserialize)]
        struct Reply {
            reviews: Vec<serde_json::Value>,
        }
        let status = if pending_only { "pending" } else { "all" };
        let path = format!("/v1/admin/reviews?status={status}&limit={limit}");
        let r: Reply = self.send(reqwest::Method::GET, &path, None::<&()>, None).await?;
        Ok(r.reviews)
    }

    /// Decides a held job (`safety:review`): `clear` (released; with `allow_list` its bytes are
    /// not held again) or `confirm` (taken down, preserved, reported), with a reason.
    pub async fn decide_review(
        &self,
        id: &str,
        decision: &str,
        reason: &str,
        allow_list: bool,
    ) -> Result<serde_json::Value, ClientError> {
        let mut body = serde_json::json!({"decision": decision, "reason": reason});
        if allow_list {
            body["allow_list"] = true.into();
        }
        let path = format!("/v1/admin/reviews/{}", percent_encode(id));
        self.send(reqwest::Method::POST, &path, Some(&body), None).await
    }

    /// Reports to the authority, newest first (`safety:review`).
    pub async fn reports(&self, limit: usize) -> Result<Vec<serde_json::Value>, ClientError> {
        #[derive(Deserialize)]
        struct Reply {
            reports: Vec<serde_json::Value>,
        }
        let path = format!("/v1/admin/reports?limit={limit}");
        let r: Reply = self.send(reqwest::Method::GET, &path, None::<&()>, None).await?;
        Ok(r.reports)
    }

    /// A report to the authority (`safety:review`).
    pub async fn report(&self, id: &str) -> Result<serde_json::Value, ClientError> {
        let path = format!("/v1/admin/reports/{}", percent_encode(id));
        self.send(reqwest::Method::GET, &path, None::<&()>, None).await
    }

    /// Submits a report awaiting a reviewer's confirmation, or retries a failed one
    /// (`safety:review`).
    pub async fn submit_report(&self, id: &str, reason: &str) -> Result<serde_json::Value, ClientError> {
        let path = format!("/v1/admin/reports/{}/submit", percent_encode(id));
        let body = serde_json::json!({ "reason": reason });
        self.send(reqwest::Method::POST, &path, Some(&body), None).await
    }

    /// Publishes a hash list with a review band: PDQ matches within `block_distance` are acted on
    /// at once, those within `review_distance` held for review (admin).
    pub async fn publish_hash_list_with_band(
        &self,
        name: &str,
        category: &str,
        (block_distance, review_distance): (u32, u32),
        list: &str,
    ) -> Result<serde_json::Value, ClientError> {
        self.put_hash_list(
            &format!(
                "{}/v1/admin/hashlists/{}?category={}&block_distance={block_distance}&review_distance={review_distance}",
                self.base,
                percent_encode(name),
                percent_encode(category)
            ),
            list,
        )
        .await
    }

    /// The newest moderation events, newest first (an operator key).
    pub async fn moderation_events(&self, limit: usize) -> Result<Vec<serde_json::Value>, ClientError> {
        #[derive(Deserialize)]
        struct Reply {
            moderation_events: Vec<serde_json::Value>,
        }
        let path = format!("/v1/admin/moderation-events?limit={limit}");
        let r: Reply = self.send(reqwest::Method::GET, &path, None::<&()>, None).await?;
        Ok(r.moderation_events)
    }

    /// Polls a job until it is final, pausing `initial`, doubling up to `max`; gives up after
    /// `timeout` with [`ClientError::WaitTimedOut`].
    pub async fn wait(&self, id: &str, opts: WaitOptions) -> Result<JobView, ClientError> {
        let start = tokio::time::Instant::now();
        let mut pause = opts.initial;
        loop {
            let j = self.job(id).await?;
            if j.is_final() {
                return Ok(j);
            }
            let waited = start.elapsed();
            if waited >= opts.timeout {
                return Err(ClientError::WaitTimedOut {
                    id: id.to_owned(),
                    waited,
                    status: j.status,
                });
            }
            tokio::time::sleep(pause.min(opts.timeout - waited)).await;
            pause = (pause * 2).min(opts.max);
        }
    }

    async fn send<B: Serialize + ?Sized, T: serde::de::DeserializeOwned>(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&B>,
        idempotency_key: Option<&str>,
    ) -> Result<T, ClientError> {
        let url = format!("{}{path}", self.base);
        let mut retries = self.rate_limit_retries;
        loop {
            let mut req = self
                .http
                .request(method.clone(), &url)
                .header(reqwest::header::AUTHORIZATION, &self.auth);
            if let Some(b) = body {
                req = req.json(b);
            }
            if let Some(k) = idempotency_key {
                req = req.header("Idempotency-Key", k);
            }
            let resp = req.send().await?;
            let status = resp.status();
            if status.is_success() {
                let bytes = resp.bytes().await?;
                return serde_json::from_slice(&bytes).map_err(|e| ClientError::Unexpected {
                    status: status.as_u16(),
                    detail: e.to_string(),
                });
            }
            let problem = problem(resp).await?;
            match problem.retry_after {
                Some(d) if status == StatusCode::TOO_MANY_REQUESTS && retries > 0 => {
                    retries -= 1;
                    tracing::debug!(wait = ?d, "rate limited; retrying");
                    tokio::time::sleep(d).await;
                }
                _ => return Err(ClientError::Api(problem)),
            }
        }
    }
}

/// `s` as one URL path segment or query value: every byte but the unreserved ones
/// (RFC 3986: `A-Z a-z 0-9 - . _ ~`) percent-encoded.
fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'.' | b'-' | b'_' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

async fn problem(resp: reqwest::Response) -> Result<Problem, ClientError> {
    let status = resp.status().as_u16();
    let retry_after = resp
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs);
    let bytes = resp.bytes().await?;
    let mut p: Problem = serde_json::from_slice(&bytes).map_err(|_| ClientError::Unexpected {
        status,
        detail: String::from_utf8_lossy(&bytes).chars().take(200).collect(),
    })?;
    p.retry_after = retry_after;
    Ok(p)
}
