//! The scheduler's typed configuration: tenants and their API keys (stored hashed), plans (rate
//! limits), providers (jurisdictions, models), the price table, and the worker pools jobs are
//! placed on. Read from TOML; `SchedulerConfig::demo()` is the embedded default the demo runs on.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use gantry_queue::JobKind;
use serde::Deserialize;

/// Why a configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// Not readable.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// Not valid TOML for this schema.
    #[error("invalid scheduler config: {0}")]
    Parse(#[from] toml::de::Error),
    /// Valid TOML that contradicts itself.
    #[error("invalid scheduler config: {0}")]
    Invalid(String),
}

/// Everything the scheduler is told.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SchedulerConfig {
    /// Where the HTTP API listens.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Where `/metrics` is served: a listener of its own, apart from the API, because the
    /// metrics name credit totals by provider and plan, which are the fleet's business, not a
    /// tenant's. Loopback by default; Helm binds it on the pod IP for Prometheus alone.
    #[serde(default = "default_metrics_listen")]
    pub metrics_listen: SocketAddr,
    /// Limits of the API's listener (timeouts, connections).
    #[serde(default)]
    pub http: HttpConfig,
    /// Largest request body, bytes (a larger one gets 413).
    #[serde(default = "default_max_body")]
    pub max_body_bytes: usize,
    /// Plans by name.
    #[serde(default)]
    pub plans: BTreeMap<String, PlanConfig>,
    /// Tenants by id.
    #[serde(default)]
    pub tenants: BTreeMap<String, TenantConfig>,
    /// Model providers by name.
    #[serde(default)]
    pub providers: BTreeMap<String, ProviderConfig>,
    /// Prices, in credits (1 credit = 0.001 USD in the demo table).
    #[serde(default)]
    pub prices: PriceTable,
    /// Worker pools, by name.
    #[serde(default)]
    pub pools: BTreeMap<String, PoolConfig>,
    /// A user whose trust score falls below this is refused (`user_blocked`).
    #[serde(default = "default_min_trust")]
    pub min_trust_score: f64,
    /// The object store the workers write outputs to (a directory, `file:///dir`,
    /// `s3://bucket[/prefix]`), so an erasure deletes the user's outputs too; without it,
    /// `DELETE /v1/users/{id}/data` answers 503 `not_configured`.
    #[serde(default)]
    pub outputs: Option<String>,
    /// How long an erasure waits for the user's running jobs to stop (they learn at their
    /// worker's next heartbeat) before it answers 202 with what is still running.
    #[serde(default = "default_erasure_wait")]
    pub erasure_wait_secs: u64,
    /// Seconds between retention sweeps (outputs past `outputs_days`, audit entries past
    /// `audit_days`); one replica sweeps per interval.
    #[serde(default = "default_sweep_every")]
    pub retention_sweep_secs: u64,
    /// A pipeline still being stored this long after it began (its scheduler died between
    /// storing its record and queueing its roots) is cancelled whole, every reservation
    /// refunded. Storing one takes milliseconds.
    #[serde(default = "default_pipeline_stuck")]
    pub pipeline_stuck_secs: u64,
    /// Refuse to start without data keys (`GANTRY_DATA_KEYS`), so no prompt or reference image
    /// is ever stored in plain text (default). Only a development configuration turns it off;
    /// the embedded demo configuration does, and says so at start.
    #[serde(default = "require_keys_default")]
    pub require_data_keys: bool,
    /// The job events streams behind webhooks and `GET /v1/events`.
    #[serde(default)]
    pub events: EventsConfig,
    /// Webhook delivery: retries, timeouts, which private addresses may receive.
    #[serde(default)]
    pub webhooks: WebhooksConfig,
    /// The operator console at `/console`: its sessions.
    #[serde(default)]
    pub console: ConsoleConfig,
    /// Trust and safety: the evidence quarantine and reports to the authority.
    #[serde(default)]
    pub safety: SafetyConfig,
    /// The retention policy: not in this file but in `GANTRY_RETENTION`, which every process
    /// of the fleet reads, so workers and scheduler apply the same TTLs.
    #[serde(skip)]
    pub retention: gantry_queue::RetentionPolicy,
}

/// Trust and safety (`[safety]`).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SafetyConfig {
    /// Where taken-down content is preserved, sealed with `GANTRY_EVIDENCE_KEYS` (a store URL as
    /// `outputs`); the outputs' store under `quarantine/` when absent.
    #[serde(default)]
    pub quarantine: Option<String>,
    /// Seconds between the report submitter's passes.
    #[serde(default = "default_report_every")]
    pub report_every_secs: u64,
    /// NCMEC's CyberTipline; reports wait, unsubmitted, while it is not configured.
    #[serde(default)]
    pub cybertipline: Option<CyberTiplineSettings>,
}

impl Default for SafetyConfig {
    fn default() -> Self {
        Self {
            quarantine: None,
            report_every_secs: default_report_every(),
            cybertipline: None,
        }
    }
}

fn default_report_every() -> u64 {
    2
}

/// `[safety.cybertipline]`: where and as whom reports are made.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CyberTiplineSettings {
    /// The API's base URL: `https://report.cybertip.org/ispws` (production),
    /// `https://exttest.cybertip.org/ispws` (NCMEC's test environment); plain http only on
    /// loopback (a mock).
    pub url: String,
    /// The variable holding the username NCMEC issued.
    #[serde(default = "default_tipline_user_env")]
    pub username_env: String,
    /// The variable holding its password.
    #[serde(default = "default_tipline_password_env")]
    pub password_env: String,
    /// The reporting person's first name.
    pub reporter_first_name: String,
    /// Last name.
    pub reporter_last_name: String,
    /// Email.
    pub reporter_email: String,
}

fn default_tipline_user_env() -> String {
    "GANTRY_CYBERTIPLINE_USERNAME".into()
}

fn default_tipline_password_env() -> String {
    "GANTRY_CYBERTIPLINE_PASSWORD".into()
}

impl CyberTiplineSettings {
    /// Checks the URL: https, or http to a loopback address.
    pub fn validate(&self) -> Result<(), String> {
        let loopback_http = self.url.strip_prefix("http://").is_some_and(|rest| {
            let host = rest.split('/').next().unwrap_or_default();
            let host = host.rsplit_once(':').map_or(host, |(h, _)| h);
            host == "localhost"
                || host
                    .trim_matches(['[', ']'])
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback())
        });
        if !(self.url.starts_with("https://") || loopback_http) {
            return Err(format!(
                "safety.cybertipline.url {:?}: https, or http to a loopback mock",
                self.url.chars().take(200).collect::<String>()
            ));
        }
        if !self.reporter_email.contains('@') {
            return Err("safety.cybertipline.reporter_email: an email address".into());
        }
        Ok(())
    }
}

/// How long each pool's events stream keeps events: what an SSE client can resume into, and
/// what a webhook replay of a time range reaches. The scheduler trims every minute.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventsConfig {
    /// Events younger than this are kept (default one day).
    #[serde(default = "default_events_retention")]
    pub retention_secs: u64,
    /// At most about this many per pool (default 1,000,000; the outcome scripts cap there too).
    #[serde(default = "default_events_max_len")]
    pub max_len: usize,
}

impl Default for EventsConfig {
    fn default() -> Self {
        Self {
            retention_secs: default_events_retention(),
            max_len: default_events_max_len(),
        }
    }
}

/// The operator console's sessions.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsoleConfig {
    /// A session ends after this long without a request (default 30 minutes).
    #[serde(default = "default_console_idle")]
    pub idle_secs: u64,
    /// A session ends this long after sign-in whatever happens (default 12 hours).
    #[serde(default = "default_console_absolute")]
    pub absolute_secs: u64,
    /// Mark the session cookie `Secure` (set it wherever the console is reached over TLS,
    /// directly or through a proxy).
    #[serde(default)]
    pub secure_cookies: bool,
    /// Sign-in through an OpenID Connect provider (authorization code + PKCE), beside operator
    /// keys.
    #[serde(default)]
    pub oidc: Option<OidcConfig>,
}

/// The console's OpenID Connect provider. A signed-in person acts as the operator tenant
/// `tenant`, with `admin` if their (verified) email is in `admins`, `admin:read` if in
/// `readers`; anyone else is refused. The audit log names them `tenant/oidc:<email>`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OidcConfig {
    /// The issuer (its discovery document is `<issuer>/.well-known/openid-configuration`):
    /// `https://`, or `http://` on a loopback address only.
    pub issuer: String,
    /// The console's client id at the provider.
    pub client_id: String,
    /// The environment variable holding the client secret, for a confidential client (PKCE
    /// is used either way).
    #[serde(default)]
    pub client_secret_env: Option<String>,
    /// Where the provider sends the browser back: the console's
    /// `…/console/oidc/callback`, as registered at the provider.
    pub redirect_url: String,
    /// The operator tenant signed-in people act as.
    pub tenant: String,
    /// Emails that may act (`admin`).
    #[serde(default)]
    pub admins: Vec<String>,
    /// Emails that may look (`admin:read`).
    #[serde(default)]
    pub readers: Vec<String>,
    /// The scopes asked for.
    #[serde(default = "default_oidc_scopes")]
    pub scopes: String,
}

fn default_oidc_scopes() -> String {
    "openid email".into()
}

/// Whether `url` is `https://…`, or `http://` to a loopback host.
pub fn https_or_loopback(url: &str) -> bool {
    if url.starts_with("https://") {
        return true;
    }
    let Some(rest) = url.strip_prefix("http://") else {
        return false;
    };
    let host = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host = match host.rsplit_once(':') {
        Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => host,
    };
    host == "localhost"
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

fn default_console_idle() -> u64 {
    1800
}

fn default_console_absolute() -> u64 {
    12 * 3600
}

impl Default for ConsoleConfig {
    fn default() -> Self {
        Self {
            idle_secs: default_console_idle(),
            absolute_secs: default_console_absolute(),
            secure_cookies: false,
            oidc: None,
        }
    }
}

/// How webhooks are delivered.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhooksConfig {
    /// Keep retrying a delivery this long after its first attempt (default 24 h).
    #[serde(default = "default_retry_for")]
    pub retry_for_secs: u64,
    /// The first retry's delay, ms (doubling each time, jittered; default 5 s).
    #[serde(default = "default_backoff_base")]
    pub backoff_base_ms: u64,
    /// The longest delay between retries (default 1 h), unless `Retry-After` asks for more.
    #[serde(default = "default_backoff_cap")]
    pub backoff_cap_secs: u64,
    /// An endpoint whose every delivery failed for this long is disabled (default 5 days).
    #[serde(default = "default_disable_after")]
    pub disable_after_secs: u64,
    /// Longest wait to connect to an endpoint.
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout_secs: u64,
    /// Longest wait for an endpoint's whole answer.
    #[serde(default = "default_webhook_timeout")]
    pub timeout_secs: u64,
    /// Most bytes of an endpoint's answer read (the rest is dropped).
    #[serde(default = "default_max_response")]
    pub max_response_bytes: usize,
    /// Deliveries in flight at once, per scheduler.
    #[serde(default = "default_webhook_concurrency")]
    pub concurrency: usize,
    /// Endpoints a tenant may register.
    #[serde(default = "default_max_endpoints")]
    pub max_endpoints_per_tenant: usize,
    /// Private, loopback or otherwise special addresses (`ip:port`) webhooks may be sent to
    /// all the same (an operator's choice; empty by default: only public addresses).
    #[serde(default)]
    pub allow: Vec<SocketAddr>,
}

impl Default for WebhooksConfig {
    fn default() -> Self {
        Self {
            retry_for_secs: default_retry_for(),
            backoff_base_ms: default_backoff_base(),
            backoff_cap_secs: default_backoff_cap(),
            disable_after_secs: default_disable_after(),
            connect_timeout_secs: default_connect_timeout(),
            timeout_secs: default_webhook_timeout(),
            max_response_bytes: default_max_response(),
            concurrency: default_webhook_concurrency(),
            max_endpoints_per_tenant: default_max_endpoints(),
            allow: Vec::new(),
        }
    }
}

fn default_retry_for() -> u64 {
    86_400
}
fn default_backoff_base() -> u64 {
    5_000
}
fn default_backoff_cap() -> u64 {
    3_600
}
fn default_disable_after() -> u64 {
    5 * 86_400
}
fn default_connect_timeout() -> u64 {
    5
}
fn default_webhook_timeout() -> u64 {
    15
}
fn default_max_response() -> usize {
    64 * 1024
}
fn default_webhook_concurrency() -> usize {
    32
}
fn default_max_endpoints() -> usize {
    20
}

fn default_events_retention() -> u64 {
    86_400
}

fn default_events_max_len() -> usize {
    1_000_000
}

fn default_sweep_every() -> u64 {
    3600
}

fn require_keys_default() -> bool {
    true
}

fn default_pipeline_stuck() -> u64 {
    60
}

fn default_erasure_wait() -> u64 {
    30
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8080))
}
fn default_metrics_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 9465))
}
fn default_max_body() -> usize {
    4 << 20
}
fn default_min_trust() -> f64 {
    0.2
}

/// The API listener's limits: what keeps one client from starving the others.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// Seconds a client has to send a request's head (line and headers) before its connection
    /// is closed (1 to 30).
    #[serde(default = "default_header_timeout")]
    pub header_read_timeout_secs: u64,
    /// Seconds a client has to send a request's whole body before it is answered 408.
    #[serde(default = "default_body_timeout")]
    pub body_timeout_secs: u64,
    /// Connections served at once (one request each at a time); more wait to be accepted.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            header_read_timeout_secs: default_header_timeout(),
            body_timeout_secs: default_body_timeout(),
            max_connections: default_max_connections(),
        }
    }
}

impl HttpConfig {
    /// The listener's limits.
    pub fn limits(&self) -> crate::http::HttpLimits {
        crate::http::HttpLimits {
            header_read_timeout: std::time::Duration::from_secs(self.header_read_timeout_secs),
            body_timeout: std::time::Duration::from_secs(self.body_timeout_secs),
            max_connections: self.max_connections,
            ..Default::default()
        }
    }
}

fn default_header_timeout() -> u64 {
    10
}
fn default_body_timeout() -> u64 {
    120
}
fn default_max_connections() -> usize {
    1024
}

/// A plan: how fast its tenants may submit.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlanConfig {
    /// Sustained jobs per second.
    pub jobs_per_second: f64,
    /// Jobs that may arrive at once above the sustained rate.
    pub burst: u32,
}

/// A tenant (one platform).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantConfig {
    /// Its plan.
    pub plan: String,
    /// Its share of the fleet against other tenants at the same priority.
    #[serde(default = "default_weight")]
    pub weight: u32,
    /// The fleet's operators (SREs), not a platform tenant: only their keys may hold the `admin`
    /// scope, which sees and replays every tenant's queues.
    #[serde(default)]
    pub operator: bool,
    /// Lets the tenant's `noop` jobs report usage as a provider would (`report_usage`, e.g.
    /// `{"billed": false}`), for drills and the demo. A tenant that may set it can make its
    /// own noop jobs free, so it is off unless the operator's configuration turns it on;
    /// operator tenants may always.
    #[serde(default)]
    pub synthetic_usage: bool,
    /// Credits granted when the tenant is first seen (its balance lives in Redis after that).
    #[serde(default)]
    pub initial_credits: i64,
    /// Scan every output of its generate, upscale and transcode jobs against the abuse hash
    /// lists before the result is released (on by default; a tenant that turns it off must run
    /// its own scanning).
    #[serde(default = "scan_outputs_default")]
    pub scan_outputs: bool,
    /// Its jobs' outcomes go on their pool's events stream, for its webhooks and
    /// `GET /v1/events` (on by default). Off, its jobs cost the outcome scripts one write less
    /// (about 1 µs of Redis time each), and it receives no events.
    #[serde(default = "events_default")]
    pub events: bool,
    /// Webhook endpoints defined here rather than through `POST /v1/webhooks` (ids
    /// `cfg_<name>`; the API cannot change or delete them).
    #[serde(default)]
    pub webhooks: BTreeMap<String, ConfigWebhook>,
    /// Its API keys.
    #[serde(default)]
    pub api_keys: Vec<ApiKeyConfig>,
    /// What an export of a user's data includes beyond their jobs and pipelines (the
    /// platform's policy).
    #[serde(default)]
    pub exports: ExportPolicy,
}

/// What an export of a user's data (`POST /v1/users/{user_id}/exports`) includes beyond their
/// jobs, outputs, references and pipelines.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ExportPolicy {
    /// Their trust standing and its history (on by default).
    #[serde(default = "trust_in_exports_default")]
    pub trust: bool,
    /// The moderation records about them (off by default: the law may forbid telling a user
    /// about a report).
    #[serde(default)]
    pub moderation: bool,
}

impl Default for ExportPolicy {
    fn default() -> Self {
        Self {
            trust: trust_in_exports_default(),
            moderation: false,
        }
    }
}

fn trust_in_exports_default() -> bool {
    true
}

fn default_weight() -> u32 {
    1
}

fn scan_outputs_default() -> bool {
    true
}

fn events_default() -> bool {
    true
}

/// A webhook endpoint in the configuration. Its secret is not in the file but in the
/// environment variable it names.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigWebhook {
    /// Where deliveries are POSTed.
    pub url: String,
    /// Event types (`job.succeeded`, …); empty or absent means all.
    #[serde(default)]
    pub types: Vec<String>,
    /// The environment variable holding its `whsec_…` secret.
    pub secret_env: String,
}

/// One API key: only its SHA-256 is kept.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyConfig {
    /// Lowercase hex SHA-256 of the key.
    pub sha256: String,
    /// What it may do.
    pub scopes: Vec<Scope>,
}

/// What an API key may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize, serde::Serialize)]
pub enum Scope {
    /// Submit and cancel jobs.
    #[serde(rename = "jobs:write")]
    JobsWrite,
    /// Read jobs.
    #[serde(rename = "jobs:read")]
    JobsRead,
    /// SRE routes: queue stats, pause/resume, dead letters.
    #[serde(rename = "admin")]
    Admin,
    /// The console, read-only: an operator who sees but cannot act.
    #[serde(rename = "admin:read")]
    AdminRead,
    /// Trust-and-safety reviewers: the review queue (see held content, confirm or clear a
    /// match) and the reports (submit one awaiting confirmation).
    #[serde(rename = "safety:review")]
    SafetyReview,
    /// Preserved evidence: read it back (every read audited with its reason).
    #[serde(rename = "safety:evidence")]
    SafetyEvidence,
}

impl Scope {
    /// The name used in keys and errors.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::JobsWrite => "jobs:write",
            Scope::JobsRead => "jobs:read",
            Scope::Admin => "admin",
            Scope::AdminRead => "admin:read",
            Scope::SafetyReview => "safety:review",
            Scope::SafetyEvidence => "safety:evidence",
        }
    }
}

/// A model provider.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderConfig {
    /// The API it speaks (`openai`, `google`, `kling`, `ark`, `bfl`), which decides the samples,
    /// clip lengths and sizes a job may ask of it; known from the name for the usual names
    /// (`openai`, `gemini`, `veo`, `kling`, `seedream`, `seedance`, `flux`).
    #[serde(default)]
    pub api: Option<gantry_providers::Api>,
    /// Jurisdictions where it processes data (`US`, `EU`, `CN`, `SG`, ...).
    pub jurisdictions: Vec<String>,
    /// Its models by id, each with a class (`image`, `video`) used to pick a fallback.
    pub models: BTreeMap<String, ModelConfig>,
}

/// One model.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// What it makes: jobs may fall back to another model of the same class.
    pub class: String,
    /// How it is priced (`per`: image, second, megapixel; minute and job also parse).
    pub price: crate::rate::Rate,
}

/// Prices of the local job kinds, per job.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PriceTable {
    /// Per upscale job.
    #[serde(default = "one")]
    pub upscale: i64,
    /// Per started minute of transcoded video.
    #[serde(default = "one")]
    pub transcode_per_minute: i64,
    /// The longest transcode input the workers accept, seconds (their limit, 3600 by
    /// default): a transcode reserves this many minutes, since its length is known only once
    /// probed, and is charged the minutes probed.
    #[serde(default = "default_transcode_max_secs")]
    pub transcode_max_secs: u32,
    /// Per CSAM-hash job (usually free to the tenant: 0).
    #[serde(default)]
    pub csam_hash: i64,
    /// Per no-op job.
    #[serde(default)]
    pub noop: i64,
}

fn default_transcode_max_secs() -> u32 {
    3600
}

fn one() -> i64 {
    1
}

impl Default for PriceTable {
    fn default() -> Self {
        Self {
            upscale: 1,
            transcode_per_minute: 1,
            transcode_max_secs: default_transcode_max_secs(),
            csam_hash: 0,
            noop: 0,
        }
    }
}

/// A worker pool jobs can be placed on.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoolConfig {
    /// Kinds its workers run.
    pub kinds: Vec<JobKind>,
    /// VRAM of each of its GPUs, GiB (absent: CPU-only pool).
    #[serde(default)]
    pub gpu_vram_gib: Option<u64>,
    /// Whether its GPUs have NVENC (L4, L40S, A10: yes; H100, H200: no).
    #[serde(default)]
    pub nvenc: bool,
    /// Models its workers keep warm.
    #[serde(default)]
    pub models: Vec<String>,
    /// Job slots per worker (for the autoscaling signal).
    #[serde(default = "default_slots")]
    pub slots_per_worker: u32,
    /// Autoscaling bounds.
    #[serde(default)]
    pub min_workers: u32,
    /// Autoscaling bounds.
    #[serde(default = "default_max_workers")]
    pub max_workers: u32,
    /// Mean service time per job, seconds, until measured (for the wait estimate).
    #[serde(default = "default_service_secs")]
    pub mean_service_secs: f64,
    /// The pool's queue-wait objective, seconds: a job should start within it. One of the
    /// queue-wait histogram's bucket bounds ([`gantry_queue::QUEUE_WAIT_BUCKETS`]: … 10, 30, 60,
    /// 300, 900, 3600), so the share of jobs within it is one bucket's. Exported as
    /// `gantry_pool_queue_wait_slo_seconds`, which the backlog alert and the SLO dashboard use.
    #[serde(default = "default_queue_wait_slo_secs")]
    pub queue_wait_slo_secs: f64,
    /// The share of jobs that should start within `queue_wait_slo_secs` (0.99: 1% may wait
    /// longer, the error budget).
    #[serde(default = "default_queue_wait_slo_target")]
    pub queue_wait_slo_target: f64,
}

fn default_slots() -> u32 {
    10
}
fn default_max_workers() -> u32 {
    10
}
fn default_service_secs() -> f64 {
    1.0
}
fn default_queue_wait_slo_secs() -> f64 {
    300.0
}
fn default_queue_wait_slo_target() -> f64 {
    0.99
}

/// The embedded default: the demo's tenants, providers (the mock ones), prices and pools.
const DEMO: &str = include_str!("demo.toml");

impl SchedulerConfig {
    /// Parses and checks a configuration.
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        let cfg: SchedulerConfig = toml::from_str(text)?;
        cfg.check()?;
        Ok(cfg)
    }

    /// Reads a configuration file.
    pub fn load(path: &str) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::from_toml(&text)
    }

    /// The API provider `name` speaks: its `api`, else the one its name says.
    pub fn provider_api(&self, name: &str) -> Option<gantry_providers::Api> {
        self.providers
            .get(name)
            .and_then(|p| p.api)
            .or_else(|| gantry_providers::Api::for_name(name))
    }

    /// The embedded configuration's TOML text (`gantry scheduler --print-dev-config`), a
    /// starting point for one's own.
    pub fn demo_text() -> &'static str {
        DEMO
    }

    /// Why this configuration may serve only a loopback address, if it may: it turns off data
    /// keys, or it holds one of the API keys published in this repository (the embedded
    /// configuration's). Empty: fit for any address.
    pub fn loopback_only_reasons(&self) -> Vec<String> {
        let mut why = Vec::new();
        if !self.require_data_keys {
            why.push("it sets require_data_keys = false (prompts would be stored in plain text)".to_owned());
        }
        let published: std::collections::BTreeSet<String> = Self::demo()
            .tenants
            .values()
            .flat_map(|t| t.api_keys.iter().map(|k| k.sha256.clone()))
            .collect();
        for (id, t) in &self.tenants {
            if t.api_keys
                .iter()
                .any(|k| published.contains(&k.sha256.to_ascii_lowercase()))
            {
                why.push(format!(
                    "tenant {id} has an API key published in Gantry's repository (a demo key)"
                ));
            }
        }
        why
    }

    /// The embedded demo configuration.
    pub fn demo() -> Self {
        match Self::from_toml(DEMO) {
            Ok(c) => c,
            // The file is part of the binary and checked by a unit test.
            Err(e) => unreachable!("embedded demo config: {e}"),
        }
    }

    fn check(&self) -> Result<(), ConfigError> {
        let bad = |m: String| Err(ConfigError::Invalid(m));
        if let Some(t) = &self.safety.cybertipline {
            t.validate().map_err(ConfigError::Invalid)?;
        }
        for (id, t) in &self.tenants {
            if !self.plans.contains_key(&t.plan) {
                return bad(format!("tenant {id}: unknown plan {:?}", t.plan));
            }
            if t.weight == 0 {
                return bad(format!("tenant {id}: weight must be at least 1"));
            }
            if !t.webhooks.is_empty() && !t.events {
                return bad(format!(
                    "tenant {id}: webhooks are sent from job events, which events = false turns off"
                ));
            }
            for (name, w) in &t.webhooks {
                let name_ok = !name.is_empty()
                    && name.len() <= 64
                    && name
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
                if !name_ok {
                    return bad(format!("tenant {id}: webhook name {name:?}: 1-64 of A-Z a-z 0-9 - _"));
                }
                if let Some(t) = w
                    .types
                    .iter()
                    .find(|t| t.parse::<gantry_queue::events::EventType>().is_err())
                {
                    return bad(format!("tenant {id}: webhook {name}: unknown event type {t:?}"));
                }
                if !(w.url.starts_with("https://") || w.url.starts_with("http://")) {
                    return bad(format!("tenant {id}: webhook {name}: the url must be http(s)"));
                }
            }
            for k in &t.api_keys {
                let operator_scope = k.scopes.iter().any(|s| {
                    matches!(
                        s,
                        Scope::Admin | Scope::AdminRead | Scope::SafetyReview | Scope::SafetyEvidence
                    )
                });
                if operator_scope && !t.operator {
                    return bad(format!(
                        "tenant {id}: the operator scopes (admin, admin:read, safety:review, safety:evidence) reach every tenant's jobs; only an operator tenant (operator = true) may hold them"
                    ));
                }
                if k.sha256.len() != 64
                    || !k
                        .sha256
                        .bytes()
                        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
                {
                    return bad(format!("tenant {id}: api key sha256 must be 64 lowercase hex digits"));
                }
            }
        }
        if let Some(o) = &self.console.oidc {
            if !https_or_loopback(&o.issuer) || !https_or_loopback(&o.redirect_url) {
                return bad("console.oidc: the issuer and the redirect_url must be https:// (http:// only on a loopback address)".into());
            }
            if !o.redirect_url.ends_with("/console/oidc/callback") {
                return bad("console.oidc.redirect_url must be the console's …/console/oidc/callback".into());
            }
            if !self.tenants.get(&o.tenant).is_some_and(|t| t.operator) {
                return bad(format!(
                    "console.oidc.tenant {:?} must be an operator tenant (operator = true)",
                    o.tenant
                ));
            }
            if o.client_id.is_empty() || !o.scopes.split(' ').any(|s| s == "openid") {
                return bad("console.oidc: a client_id is required, and the scopes must include openid".into());
            }
        }
        if !(1..=30).contains(&self.http.header_read_timeout_secs) {
            return bad("http.header_read_timeout_secs must be 1..=30".into());
        }
        if self.http.body_timeout_secs == 0 || self.http.max_connections == 0 {
            return bad("http.body_timeout_secs and http.max_connections must be positive".into());
        }
        for name in self.providers.keys() {
            if self.provider_api(name).is_none() {
                return bad(format!(
                    "provider {name}: say which API it speaks (api = \"openai\" | \"google\" | \"kling\" | \"ark\" | \"bfl\")"
                ));
            }
        }
        for (name, p) in &self.plans {
            if !(p.jobs_per_second.is_finite() && p.jobs_per_second > 0.0) {
                return bad(format!("plan {name}: jobs_per_second must be positive"));
            }
        }
        for (name, p) in &self.pools {
            if gantry_queue::Pool::new(name).is_err() {
                return bad(format!("pool {name:?}: not a valid pool name"));
            }
            if p.kinds.is_empty() {
                return bad(format!("pool {name}: serves no kinds"));
            }
            if p.min_workers > p.max_workers {
                return bad(format!("pool {name}: min_workers above max_workers"));
            }
            if !(p.mean_service_secs.is_finite() && p.mean_service_secs > 0.0) {
                return bad(format!("pool {name}: mean_service_secs must be positive"));
            }
            if !gantry_queue::QUEUE_WAIT_BUCKETS.contains(&p.queue_wait_slo_secs) {
                return bad(format!(
                    "pool {name}: queue_wait_slo_secs must be one of the queue-wait histogram's bucket bounds {:?}",
                    gantry_queue::QUEUE_WAIT_BUCKETS
                ));
            }
            if !(p.queue_wait_slo_target > 0.0 && p.queue_wait_slo_target < 1.0) {
                return bad(format!(
                    "pool {name}: queue_wait_slo_target must be between 0 and 1 (e.g. 0.99)"
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_embedded_demo_config_is_valid() {
        let c = SchedulerConfig::from_toml(DEMO).expect("demo.toml");
        assert!(c.tenants.len() >= 2 && c.pools.len() >= 2 && c.providers.len() >= 5);
    }

    #[test]
    fn contradictions_are_refused() {
        let e = SchedulerConfig::from_toml("[tenants.a]\nplan = \"nope\"\n").unwrap_err();
        assert!(e.to_string().contains("unknown plan"), "{e}");
        let e = SchedulerConfig::from_toml("[pools.gpu]\nkinds = []\n").unwrap_err();
        assert!(e.to_string().contains("serves no kinds"), "{e}");
        // A queue-wait objective must fall on a bucket of the histogram it is read from.
        let pool = |extra: &str| SchedulerConfig::from_toml(&format!("[pools.cpu]\nkinds = [\"noop\"]\n{extra}"));
        assert!(pool("queue_wait_slo_secs = 60").is_ok());
        let e = pool("queue_wait_slo_secs = 45").unwrap_err();
        assert!(e.to_string().contains("bucket bounds"), "{e}");
        let e = pool("queue_wait_slo_target = 1.0").unwrap_err();
        assert!(e.to_string().contains("between 0 and 1"), "{e}");
        assert!(SchedulerConfig::from_toml("bogus = 1").is_err());
        // Webhooks need events; their names, types and URLs are checked.
        let hook = |events: bool, name: &str, types: &str, url: &str| {
            SchedulerConfig::from_toml(&format!(
                "[plans.p]\njobs_per_second = 1\nburst = 1\n[tenants.a]\nplan = \"p\"\nevents = {events}\n\
                 [tenants.a.webhooks.{name}]\nurl = \"{url}\"\ntypes = [{types}]\nsecret_env = \"S\"\n"
            ))
        };
        assert!(hook(true, "ok", "\"job.dead\"", "https://x.example/h").is_ok());
        for (e, why) in [
            (hook(false, "ok", "", "https://x.example/h"), "events = false"),
            (
                hook(true, "ok", "\"job.nope\"", "https://x.example/h"),
                "unknown event type",
            ),
            (hook(true, "ok", "", "ftp://x.example/h"), "http(s)"),
        ] {
            let e = e.unwrap_err().to_string();
            assert!(e.contains(why), "{e}");
        }
        let tenant_admin = format!(
            "[plans.p]\njobs_per_second = 1\nburst = 1\n[tenants.a]\nplan = \"p\"\napi_keys = [{{ sha256 = \"{}\", scopes = [\"admin\"] }}]\n",
            "a".repeat(64)
        );
        let e = SchedulerConfig::from_toml(&tenant_admin).unwrap_err();
        assert!(e.to_string().contains("only an operator tenant"), "{e}");
        assert!(
            SchedulerConfig::from_toml(&tenant_admin.replace("plan = \"p\"", "plan = \"p\"\noperator = true")).is_ok()
        );
    }

    #[test]
    fn published_keys_and_plain_text_payloads_are_loopback_only() {
        let demo = SchedulerConfig::demo();
        let why = demo.loopback_only_reasons();
        assert!(why.iter().any(|w| w.contains("require_data_keys")), "{why:?}");
        assert!(why.iter().any(|w| w.contains("tenant ops")), "{why:?}");
        // One published key copied into an otherwise private configuration is still refused.
        let copied = format!(
            "[plans.p]\njobs_per_second = 1\nburst = 1\n[tenants.a]\nplan = \"p\"\napi_keys = [{{ sha256 = \"{}\", scopes = [\"jobs:read\"] }}]\n",
            demo.tenants["studio-42"].api_keys[0].sha256
        );
        let c = SchedulerConfig::from_toml(&copied).expect("valid");
        assert_eq!(c.loopback_only_reasons().len(), 1);
        let private = copied.replace(&demo.tenants["studio-42"].api_keys[0].sha256, &"b".repeat(64));
        let c = SchedulerConfig::from_toml(&private).expect("valid");
        assert!(c.loopback_only_reasons().is_empty());
    }
}
