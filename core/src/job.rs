//! The job model: what a platform service submits ([`NewJob`]), what is stored ([`JobSpec`]) and
//! what anyone can read back ([`JobRecord`]).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use ulid::Ulid;

use crate::error::ValidationError;
use crate::payload::Payload;

/// A job id: a ULID, so ids sort by creation time and carry no information about the user.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct JobId(Ulid);

impl JobId {
    /// A fresh id.
    pub fn new() -> Self {
        Self(Ulid::new())
    }
}

impl Default for JobId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl FromStr for JobId {
    type Err = ValidationError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ulid::from_string(s.trim())
            .map(Self)
            .map_err(|_| ValidationError::InvalidJobId(s.chars().take(64).collect()))
    }
}

/// What a job does. Each kind has its own payload type and its own queue in every pool.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobKind {
    /// Call a remote generation model (images, video).
    Generate,
    /// Resize or upscale an image.
    Upscale,
    /// Transcode a video through ffmpeg.
    Transcode,
    /// Perceptual hashing (PDQ, vPDQ) against lists of known abuse material.
    CsamHash,
    /// Does nothing but optionally sleep or fail: benchmarks, canaries and tests.
    Noop,
    /// A user's data, exported as one archive (access and portability requests). Made by the
    /// scheduler's exports route, never submitted as a job.
    Export,
}

impl JobKind {
    /// Every kind, in a stable order.
    pub const ALL: [JobKind; 6] = [
        JobKind::Generate,
        JobKind::Upscale,
        JobKind::Transcode,
        JobKind::CsamHash,
        JobKind::Noop,
        JobKind::Export,
    ];

    /// The name used on the wire, in Redis keys and in metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            JobKind::Generate => "generate",
            JobKind::Upscale => "upscale",
            JobKind::Transcode => "transcode",
            JobKind::CsamHash => "csam_hash",
            JobKind::Noop => "noop",
            JobKind::Export => "export",
        }
    }
}

impl fmt::Display for JobKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for JobKind {
    type Err = ValidationError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        JobKind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| ValidationError::UnknownKind(s.chars().take(64).collect()))
    }
}

/// Scheduling priority. Claims are strict: no `normal` job is claimed while a `high` one waits in
/// a queue the worker serves; FIFO within a priority.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Priority {
    /// Interactive work a user waits for.
    High,
    /// The default.
    #[default]
    Normal,
    /// Backfills and batch work.
    Bulk,
}

impl Priority {
    /// Every priority, highest first.
    pub const ALL: [Priority; 3] = [Priority::High, Priority::Normal, Priority::Bulk];

    /// The name used on the wire and in Redis keys.
    pub fn as_str(self) -> &'static str {
        match self {
            Priority::High => "high",
            Priority::Normal => "normal",
            Priority::Bulk => "bulk",
        }
    }
}

impl FromStr for Priority {
    type Err = ValidationError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Priority::ALL
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| ValidationError::UnknownPriority(s.chars().take(64).collect()))
    }
}

/// The hardware a job needs.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Requirements {
    /// `None`: runs on CPU. `Some`: needs a GPU with at least this much free memory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu: Option<GpuRequirement>,
    /// A model the job would rather find already loaded ("warm") on its worker.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preferred_model: Option<String>,
}

impl Requirements {
    /// The shape of these requirements: the queue list a job waits in within its priority.
    /// Empty for CPU jobs; `g<GiB>[n][x<count>][:<model>]` for GPU jobs (VRAM per GPU rounded
    /// up to whole GiB; `x<count>` when it takes several GPUs).
    pub fn shape(&self) -> String {
        let Some(gpu) = &self.gpu else { return String::new() };
        let gib = gpu.min_vram_bytes.div_ceil(1 << 30);
        let mut s = format!("g{gib}{}", if gpu.nvenc { "n" } else { "" });
        if gpu.count > 1 {
            s.push_str(&format!("x{}", gpu.count));
        }
        if let Some(m) = &self.preferred_model {
            s.push(':');
            s.push_str(m);
        }
        s
    }
}

/// GPU needs of a job.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GpuRequirement {
    /// Minimum free VRAM, in bytes, reserved for the job on each of its GPUs while it runs.
    pub min_vram_bytes: u64,
    /// Needs a hardware video encoder (NVENC) proven to open an encode session.
    #[serde(default)]
    pub nvenc: bool,
    /// How many GPUs of one worker it takes, each with `min_vram_bytes` free (1 to 8: a local
    /// model split across GPUs).
    #[serde(default = "one_gpu", skip_serializing_if = "is_one_gpu")]
    pub count: u32,
}

impl Default for GpuRequirement {
    fn default() -> Self {
        Self {
            min_vram_bytes: 0,
            nvenc: false,
            count: 1,
        }
    }
}

fn one_gpu() -> u32 {
    1
}

fn is_one_gpu(n: &u32) -> bool {
    *n == 1
}

/// A job as submitted by a platform service. Everything but `kind`, `tenant`, `user` and
/// `payload` has a default.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewJob {
    /// Platform tenant that owns the job (and pays for it).
    pub tenant: String,
    /// Opaque id of the end user on whose behalf the job runs. Never an email or a name.
    pub user: String,
    /// Priority; `normal` when absent.
    #[serde(default)]
    pub priority: Priority,
    /// Hardware needs.
    #[serde(default)]
    pub requirements: Requirements,
    /// Regions (jurisdictions) the user consented to; empty means no restriction was stated.
    #[serde(default)]
    pub allowed_regions: Vec<String>,
    /// A second submission with the same key (per tenant) returns the first job's id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
    /// Attempts before the job is dead-lettered; the queue's default when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_attempts: Option<u32>,
    /// Wall-clock limit of one attempt, in seconds; the kind's default when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_secs: Option<u64>,
    /// Run no earlier than this many milliseconds from now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay_ms: Option<u64>,
    /// The kind and its typed payload: `{"kind": "upscale", "payload": {...}}`.
    #[serde(flatten)]
    pub body: Payload,
}

impl NewJob {
    /// A job with default options.
    pub fn new(tenant: impl Into<String>, user: impl Into<String>, body: Payload) -> Self {
        Self {
            tenant: tenant.into(),
            user: user.into(),
            priority: Priority::Normal,
            requirements: Requirements::default(),
            allowed_regions: Vec::new(),
            idempotency_key: None,
            max_attempts: None,
            timeout_secs: None,
            delay_ms: None,
            body,
        }
    }

    /// Parses a job from JSON, mapping serde's complaints to typed errors.
    pub fn from_json(bytes: &[u8]) -> Result<Self, ValidationError> {
        serde_json::from_slice(bytes).map_err(|e| {
            let msg = e.to_string();
            if let Some(rest) = msg.strip_prefix("unknown variant `") {
                let kind = rest.split('`').next().unwrap_or_default();
                ValidationError::UnknownKind(kind.to_owned())
            } else {
                ValidationError::MalformedJson(msg)
            }
        })
    }

    /// The job's kind.
    pub fn kind(&self) -> JobKind {
        self.body.kind()
    }
}

/// The immutable part of a stored job, serialized once at enqueue.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JobSpec {
    /// The job's id.
    pub id: JobId,
    /// Pool whose queue holds the job.
    pub pool: String,
    /// Owning tenant.
    pub tenant: String,
    /// Opaque user id.
    pub user: String,
    /// Priority.
    pub priority: Priority,
    /// Hardware needs.
    pub requirements: Requirements,
    /// Consented regions.
    pub allowed_regions: Vec<String>,
    /// Idempotency key, as given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
    /// Attempts before dead-lettering.
    pub max_attempts: u32,
    /// Limit of one attempt, in seconds.
    pub timeout_secs: u64,
    /// Scan every output against the abuse hash lists before the result is released (absent in
    /// a stored spec: scanned; nothing is released unscanned by default).
    #[serde(default = "scan_by_default")]
    pub scan_outputs: bool,
    /// The W3C `traceparent` of the span that enqueued it ([`crate::trace::TraceParent`]), so
    /// the worker's spans join the trace that admitted it; absent when nobody traced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
    /// Kind and payload.
    #[serde(flatten)]
    pub body: Payload,
}

fn scan_by_default() -> bool {
    true
}

impl JobSpec {
    /// The job's kind.
    pub fn kind(&self) -> JobKind {
        self.body.kind()
    }
}

/// Where a job is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobStatus {
    /// A pipeline step waiting for the steps it needs to succeed (on no queue yet).
    Waiting,
    /// Waiting in its queue.
    Queued,
    /// Waiting for its run-at time.
    Delayed,
    /// Leased by a worker.
    Running,
    /// Failed retryably; waiting for its backoff to pass.
    RetryScheduled,
    /// Done; its result is recorded.
    Succeeded,
    /// In the dead-letter queue: permanent error, or attempts used up.
    Dead,
    /// Cancelled by request.
    Cancelled,
    /// Its content matched an abuse hash list: ended at once, never retried or replayed, its
    /// outputs deleted, its credits refunded.
    Blocked,
    /// Its outputs came close to an abuse hash (within a list's review band): withheld, not
    /// released, until a reviewer clears them (→ `succeeded`) or confirms the match
    /// (→ `blocked`). Its credits stay reserved meanwhile.
    Review,
}

impl JobStatus {
    /// Its name, as the API and Redis write it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Waiting => "waiting",
            Self::Queued => "queued",
            Self::Delayed => "delayed",
            Self::Running => "running",
            Self::RetryScheduled => "retry_scheduled",
            Self::Succeeded => "succeeded",
            Self::Dead => "dead",
            Self::Cancelled => "cancelled",
            Self::Blocked => "blocked",
            Self::Review => "review",
        }
    }

    /// Whether the job will change no further (unless replayed).
    pub fn is_final(self) -> bool {
        matches!(
            self,
            JobStatus::Succeeded | JobStatus::Dead | JobStatus::Cancelled | JobStatus::Blocked
        )
    }
}

impl FromStr for JobStatus {
    type Err = ValidationError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "waiting" => Self::Waiting,
            "queued" => Self::Queued,
            "delayed" => Self::Delayed,
            "running" => Self::Running,
            "retry_scheduled" => Self::RetryScheduled,
            "succeeded" => Self::Succeeded,
            "dead" => Self::Dead,
            "cancelled" => Self::Cancelled,
            "blocked" => Self::Blocked,
            "review" => Self::Review,
            other => return Err(ValidationError::UnknownStatus(other.to_owned())),
        })
    }
}

/// Why an attempt failed; decides what happens next.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorClass {
    /// Try again after a backoff, until attempts are used up.
    Retryable,
    /// Retrying cannot help (bad input, moderation): dead-letter at once.
    Permanent,
    /// Stopped on request.
    Cancelled,
    /// The attempt ran out of time (or its lease expired); retried like `retryable`.
    TimedOut,
    /// Prohibited content matched: the job ends `blocked` at once (no retry, no dead-letter
    /// queue, so no replay) and its credits are refunded.
    Blocked,
    /// Content close to an abuse hash: the job is held (status `review`), its outputs not
    /// released, until a reviewer decides.
    Withheld,
}

impl ErrorClass {
    /// The name used on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorClass::Retryable => "retryable",
            ErrorClass::Permanent => "permanent",
            ErrorClass::Cancelled => "cancelled",
            ErrorClass::TimedOut => "timed_out",
            ErrorClass::Blocked => "blocked",
            ErrorClass::Withheld => "withheld",
        }
    }
}

impl FromStr for ErrorClass {
    type Err = ValidationError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "retryable" => Self::Retryable,
            "permanent" => Self::Permanent,
            "cancelled" => Self::Cancelled,
            "timed_out" => Self::TimedOut,
            "blocked" => Self::Blocked,
            "withheld" => Self::Withheld,
            other => return Err(ValidationError::UnknownErrorClass(other.chars().take(64).collect())),
        })
    }
}

/// Where a job's output lives.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResultRef {
    /// Object-store key, deterministic per job so a retry overwrites.
    pub object_key: String,
    /// Size in bytes.
    pub size_bytes: u64,
    /// MIME type.
    pub content_type: String,
    /// Hex SHA-256 of the bytes.
    pub sha256: String,
    /// What the executor decided on the way (a transcode's encoder and why, its audio); never
    /// private data.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub details: std::collections::BTreeMap<String, String>,
}

/// What a successful job's work consumed, as its worker reports it (from the provider's
/// response, or measured locally). Credits are settled from it at the price locked at admission;
/// a quantity left out is settled at what was reserved for it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Usage {
    /// Whether the work was billed at all; `false` refunds the job's reservation.
    #[serde(default = "billed_default")]
    pub billed: bool,
    /// Outputs produced (images, videos).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outputs: Option<u32>,
    /// Seconds of media: generated video length, or the transcoded input's duration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seconds: Option<u32>,
    /// Pixels of each output (width × height), for per-megapixel prices.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pixels: Option<u64>,
    /// The provider's own billing figure, verbatim, to reconcile with its invoice (Kling's
    /// `final_unit_deduction` units, OpenAI's and Ark's tokens). Credits do not depend on it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider_units: Option<String>,
}

fn billed_default() -> bool {
    true
}

impl Default for Usage {
    fn default() -> Self {
        Self {
            billed: true,
            outputs: None,
            seconds: None,
            pixels: None,
            provider_units: None,
        }
    }
}

/// What a successful attempt hands back: its stored output and the usage to bill.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Completion {
    /// Where the output was stored.
    pub output: Option<ResultRef>,
    /// What the work consumed.
    pub usage: Option<Usage>,
}

impl From<Option<ResultRef>> for Completion {
    fn from(output: Option<ResultRef>) -> Self {
        Self { output, usage: None }
    }
}

/// The last error a job met.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobError {
    /// Its class.
    pub class: String,
    /// A message fit for operators (never prompt text).
    pub message: String,
    /// When, in Unix milliseconds (Redis server time).
    pub at_ms: u64,
}

/// One event in a job's history: failures, expired leases, releases, replays, cancellation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HistoryEvent {
    /// Unix milliseconds (Redis server time).
    pub at: u64,
    /// `failed`, `lease_expired`, `released`, `replayed`, `cancelled`, `revived` (a pipeline
    /// step skipped for a parent that was then replayed).
    pub event: String,
    /// Attempt number, where it applies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempt: Option<u32>,
    /// Error class, where it applies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub class: Option<String>,
    /// Message, where it applies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Worker that held the lease, where it applies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker: Option<String>,
}

/// Everything known about a job.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct JobRecord {
    /// What was submitted.
    pub spec: JobSpec,
    /// Current status.
    pub status: JobStatus,
    /// Attempts started (reset by a replay).
    pub attempts: u32,
    /// Enqueued at (Unix ms).
    pub enqueued_at_ms: u64,
    /// Last attempt started at (Unix ms).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub started_at_ms: Option<u64>,
    /// Finished at (Unix ms).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finished_at_ms: Option<u64>,
    /// Next run at, for delayed and retry-scheduled jobs (Unix ms).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub due_at_ms: Option<u64>,
    /// Worker holding the lease.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub worker: Option<String>,
    /// A cancellation was requested while it ran.
    pub cancel_requested: bool,
    /// Last error.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<JobError>,
    /// Output, once succeeded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result: Option<ResultRef>,
    /// The usage its worker reported on success.
    pub usage: Option<Usage>,
    /// What its current attempt reported doing last (absent before its first report, and once
    /// another attempt began).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<crate::progress::Progress>,
    /// Credits reserved for it at admission (`None`: not admitted through the scheduler).
    pub credits_reserved: Option<i64>,
    /// Failures, expired leases, releases, replays.
    pub history: Vec<HistoryEvent>,
    /// For a pipeline step: its pipeline's id and its step's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step_of: Option<(String, String)>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::payload::{NoopPayload, UpscalePayload};

    #[test]
    fn new_job_round_trips_through_json_with_its_kind() {
        let json = br#"{"tenant":"t","user":"u","priority":"high","kind":"upscale",
                        "payload":{"input":"a.png","scale":4},"requirements":{"gpu":{"min_vram_bytes":1024}}}"#;
        let job = NewJob::from_json(json).expect("parses");
        assert_eq!(job.kind(), JobKind::Upscale);
        assert_eq!(job.priority, Priority::High);
        assert_eq!(
            job.body,
            Payload::Upscale(UpscalePayload {
                input: "a.png".into(),
                scale: Some(4),
                ..Default::default()
            })
        );
        let back = NewJob::from_json(serde_json::to_string(&job).expect("ser").as_bytes()).expect("again");
        assert_eq!(back.body, job.body);
    }

    #[test]
    fn kinds_priorities_and_ids_parse_strictly() {
        for k in JobKind::ALL {
            assert_eq!(k.as_str().parse::<JobKind>().ok(), Some(k));
        }
        assert!("Generate".parse::<JobKind>().is_err());
        assert!("urgent".parse::<Priority>().is_err());
        assert!("01ARZ3NDEKTSV4RRFFQ69G5FAV".parse::<JobId>().is_ok());
        assert!("01ARZ3NDEKTSV4RRFFQ69G5FA".parse::<JobId>().is_err());
        assert!(matches!(
            NewJob::from_json(br#"{"tenant":"t","user":"u","kind":"noop","payload":{"sleep_ms":"soon"}}"#),
            Err(ValidationError::MalformedJson(_))
        ));
        let ok = NewJob::from_json(br#"{"tenant":"t","user":"u","kind":"noop","payload":{}}"#).expect("noop");
        assert_eq!(ok.body, Payload::Noop(NoopPayload::default()));
    }
}
