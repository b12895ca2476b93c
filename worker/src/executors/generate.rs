//! The `generate` executor: runs a job on its remote model through [`gantry_providers`].
//!
//! Per attempt: pick the job's provider in the first of its consented regions that the worker
//! has configured (never a region outside them); if that provider's circuit is open, fall back
//! to the configured alternatives of the same output class, still only within the consented
//! regions. Take a fleet-wide slot of the provider account (Redis, refreshed while the task
//! runs). On a retry, where the provider can look tasks up by our id, find the earlier
//! attempts' tasks first and resume one that is still running or done, instead of paying for
//! it again. Then submit and poll to the end, download and verify the results, store them, and
//! report usage for credit settlement. Prompts are never logged: only their SHA-256.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use gantry_providers::breaker::{BreakerConfig, BreakerState, Breakers};
use gantry_providers::fetch::{FetchConfig, ReferenceFetcher};
use gantry_providers::media::{self, Media, MediaLimits};
use gantry_providers::retry::Backoff;
use gantry_providers::run::{RunError, RunHooks, RunOptions, run};
use gantry_providers::webhook::{Delivery, WebhookError, WebhookInbox};
use gantry_providers::{GenerateRequest, Observed, Provider, ProvidersConfig, Registry};
use gantry_queue::{
    ClaimedJob, Completion, ErrorClass, GeneratePayload, HandlerFuture, JobContext, JobKind, JobOutcome, Payload,
    ProgressHandle, ProviderSlots, ResultRef, Stage, Usage,
};
use rand::Rng;
use tokio_util::sync::CancellationToken;

use tracing::Instrument as _;

use super::provider_metrics::ProviderMetrics;
use super::{Executor, failed};
use crate::outputs::OutputStore;

/// The executor's settings.
#[derive(Clone, Debug)]
pub struct GenerateConfig {
    /// Longest an attempt may take (the kind's timeout; the job's own applies when shorter).
    pub attempt_limit: Duration,
    /// Retries within an attempt.
    pub backoff: Backoff,
    /// Limits on results.
    pub media: MediaLimits,
    /// Circuit breakers.
    pub breaker: BreakerConfig,
    /// Fetching reference images named by URL (SSRF-safe; providers get the bytes).
    pub references: FetchConfig,
    /// Webhook mode: providers that can call back report a task's end at this worker; polling
    /// slows to a safety net. Serve [`GenerateExecutor::webhook_router`] there.
    pub webhooks: Option<WebhookMode>,
}

/// Where providers reach this worker, and the secret its per-task tokens are keyed by.
#[derive(Clone)]
pub struct WebhookMode {
    /// The worker's HTTP server as providers reach it (`https://worker-3.example:9464`).
    pub base: String,
    /// The key of the per-task tokens.
    pub secret: Vec<u8>,
}

impl std::fmt::Debug for WebhookMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookMode")
            .field("base", &self.base)
            .field("secret", &"<redacted>")
            .finish()
    }
}

impl Default for GenerateConfig {
    fn default() -> Self {
        Self {
            attempt_limit: Duration::from_secs(600),
            backoff: Backoff::default(),
            media: MediaLimits::default(),
            breaker: BreakerConfig::default(),
            references: FetchConfig::default(),
            webhooks: None,
        }
    }
}

#[derive(Debug)]
struct Inner {
    providers: ProvidersConfig,
    registry: Registry,
    breakers: Breakers,
    outputs: OutputStore,
    slots: Option<ProviderSlots>,
    downloads: gantry_providers::fetch::GuardedClient,
    references: ReferenceFetcher,
    webhooks: Option<Arc<WebhookInbox>>,
    cfg: GenerateConfig,
    metrics: ProviderMetrics,
    /// Where providers' safety refusals are recorded (moderation log, trust), when set.
    refusals: Option<crate::scan::Scanner>,
}

/// Runs `generate` jobs.
#[derive(Clone, Debug)]
pub struct GenerateExecutor {
    inner: Arc<Inner>,
}

/// Why the executor could not be built.
#[derive(Debug, thiserror::Error)]
pub enum GenerateSetupError {
    /// A provider client could not be built.
    #[error(transparent)]
    Build(#[from] gantry_providers::BuildError),
    /// The download client could not be built.
    #[error("http client: {0}")]
    Http(#[from] reqwest::Error),
}

impl GenerateExecutor {
    /// An executor for `providers`, storing results in `outputs`; with `slots`, provider
    /// accounts' `max_in_flight` is enforced fleet-wide.
    pub fn new(
        providers: ProvidersConfig,
        outputs: OutputStore,
        slots: Option<ProviderSlots>,
        cfg: GenerateConfig,
    ) -> Result<Self, GenerateSetupError> {
        let mut registry = Registry::build(&providers)?;
        let metrics = ProviderMetrics::default();
        registry.wrap(|provider, region, client| metrics.meter(provider, region, client));
        let downloads =
            gantry_providers::fetch::GuardedClient::new(cfg.references.allow.clone(), Duration::from_secs(10))?;
        Ok(Self {
            inner: Arc::new(Inner {
                breakers: Breakers::new(cfg.breaker),
                providers,
                registry,
                outputs,
                slots,
                downloads,
                references: ReferenceFetcher::new(cfg.references.clone()),
                webhooks: cfg
                    .webhooks
                    .as_ref()
                    .map(|w| Arc::new(WebhookInbox::new(&w.base, &w.secret))),
                cfg,
                metrics,
                refusals: None,
            }),
        })
    }

    /// Records providers' safety refusals through `scanner`: a moderation event and a trust
    /// penalty per refused generation ([`crate::scan::Scanner::provider_refusal`]). Call it
    /// before the executor is cloned (a clone would keep the executor without it).
    pub fn with_refusals(mut self, scanner: crate::scan::Scanner) -> Self {
        match Arc::get_mut(&mut self.inner) {
            Some(inner) => inner.refusals = Some(scanner),
            None => tracing::error!("with_refusals on a shared executor: provider refusals are not recorded"),
        }
        self
    }

    /// The route providers call (`POST /webhooks/{provider}/{external_id}/{token}`), when in
    /// webhook mode.
    pub fn webhook_router(&self) -> Option<axum::Router> {
        self.inner.webhooks.as_ref()?;
        Some(
            axum::Router::new()
                .route(
                    "/webhooks/{provider}/{external_id}/{token}",
                    axum::routing::post(webhook),
                )
                .with_state(self.inner.clone()),
        )
    }

    /// Whether any provider is usable (credentials present).
    pub fn has_providers(&self) -> bool {
        self.inner.registry.endpoints().next().is_some()
    }
}

impl Executor for GenerateExecutor {
    fn kind(&self) -> JobKind {
        JobKind::Generate
    }

    fn run(&self, job: ClaimedJob, ctx: JobContext) -> HandlerFuture {
        let inner = self.inner.clone();
        Box::pin(async move { inner.run(job, ctx.cancel, ctx.progress).await })
    }

    fn register_metrics(&self, registry: &mut prometheus_client::registry::Registry) {
        self.inner.metrics.register(registry);
    }
}

impl Inner {
    /// The (provider, model) targets in order: the job's own, then the class's fallbacks.
    fn targets(&self, g: &GeneratePayload) -> (bool, Vec<(String, String)>) {
        let video = self
            .providers
            .providers
            .get(&g.provider)
            .is_some_and(|p| p.video_models.contains(&g.model));
        let fallbacks = if video {
            &self.providers.fallbacks.video
        } else {
            &self.providers.fallbacks.image
        };
        let mut t = vec![(g.provider.clone(), g.model.clone())];
        t.extend(
            fallbacks
                .iter()
                .filter(|f| f.provider != g.provider)
                .map(|f| (f.provider.clone(), f.model.clone())),
        );
        (video, t)
    }

    async fn run(&self, job: ClaimedJob, cancel: CancellationToken, progress: ProgressHandle) -> JobOutcome {
        let Payload::Generate(g) = &job.spec.body else {
            return failed(ErrorClass::Permanent, "not a generate payload");
        };
        let limit = self
            .cfg
            .attempt_limit
            .min(Duration::from_secs(job.spec.timeout_secs.max(1)));
        // Finish (and record why) a little before the runtime's own timeout would cut us off.
        let deadline = tokio::time::Instant::now() + limit.mul_f64(0.95);
        let (video, targets) = self.targets(g);
        let prompt_sha256 = crate::outputs::sha256_hex(g.prompt.as_bytes());
        // Reference URLs are fetched here, once, SSRF-safe: providers get the verified bytes,
        // never the user's (perhaps signed) URL, and a bad reference is the job's fault, not
        // the provider's (it must not open a circuit).
        // A reference that is an object key (a pipeline parent's output, or an earlier job's) is
        // read from the store: only the tenant's own objects, and only images.
        let mut refs = Vec::with_capacity(g.reference_images.len());
        for r in &g.reference_images {
            // Anything with a scheme (data:, http(s):, and the ones the fetcher refuses, such as
            // file:) goes to the fetcher; a bare key is an object.
            if r.starts_with("data:") || r.contains("://") {
                refs.push(r.clone());
                continue;
            }
            let bytes = match super::media_job::read_input(&self.outputs, &job.spec, r, MAX_STORED_REFERENCE).await {
                Ok(b) => b,
                Err(out) => return out,
            };
            let Ok(format) = gantry_codecs::images::sniff(&bytes) else {
                return failed(
                    ErrorClass::Permanent,
                    format!("reference image {r}: not a PNG, JPEG or WebP image"),
                );
            };
            refs.push(format!(
                "data:{};base64,{}",
                format.content_type(),
                base64::Engine::encode(&base64::engine::general_purpose::STANDARD, &bytes)
            ));
        }
        let references = match self.references.resolve(&refs).await {
            Ok(r) => r,
            Err(e) => {
                tracing::info!(job = %job.spec.id, error = %e, "reference image refused");
                let class = if e.is_transient() {
                    ErrorClass::Retryable
                } else {
                    ErrorClass::Permanent
                };
                return failed(class, e.to_string());
            }
        };
        // Providers whose circuit is open, and the soonest one closes.
        let mut open: Vec<String> = Vec::new();
        let mut reopens: Option<Duration> = None;
        let mut note_open = |provider: &str, b: &gantry_providers::breaker::Breaker, open: &mut Vec<String>| {
            open.push(provider.to_owned());
            if let Some(d) = b.open_for() {
                reopens = Some(reopens.map_or(d, |r| r.min(d)));
            }
        };
        for (i, (provider, model)) in targets.iter().enumerate() {
            let Some((region, client)) = self.registry.client(provider, &job.spec.allowed_regions) else {
                if i == 0 {
                    tracing::warn!(job = %job.spec.id, provider, "provider not configured in the job's consented regions");
                }
                continue;
            };
            let breaker = self.breakers.get(provider, &region);
            if matches!(breaker.state(), BreakerState::Open { until } if until > std::time::Instant::now()) {
                note_open(provider, &breaker, &mut open);
                continue;
            }
            if i > 0 {
                tracing::info!(job = %job.spec.id, from = %g.provider, to = %provider, region = %region, "falling back while the provider's circuit is open");
            }
            tracing::info!(job = %job.spec.id, provider = %provider, region = %region, model = %model, prompt_sha256 = %prompt_sha256, attempt = job.attempt, "generating");
            let asked = gantry_providers::shape::Asked {
                samples: g.samples,
                duration_secs: g.duration_secs,
                width: g.width,
                height: g.height,
            };
            // Admission shaped the request for the job's own provider; a fallback takes what it
            // can of it (its bounds may be narrower).
            let asked = match self.providers.providers.get(provider.as_str()) {
                Some(p) if i > 0 => p.api.fit(video, &asked),
                _ => asked,
            };
            let req = GenerateRequest {
                external_id: format!("{}-{}", job.spec.id, job.attempt),
                model: model.clone(),
                prompt: g.prompt.clone(),
                negative_prompt: g.negative_prompt.clone(),
                reference_images: references.clone(),
                width: asked.width,
                height: asked.height,
                duration_secs: asked.duration_secs,
                samples: asked.samples.unwrap_or(1).max(1),
                video,
                callback: None,
            };
            let began = std::time::Instant::now();
            let result = self
                .attempt(&job, client.as_ref(), &breaker, req, deadline, &cancel, &progress)
                .await;
            let outcome = match &result {
                Ok(_) => "ok",
                Err(RunError::Provider(p)) => p.class.as_str(),
                Err(RunError::CircuitOpen { .. }) => "circuit_open",
                Err(RunError::Cancelled) => "cancelled",
                Err(RunError::TimedOut { .. }) => "timed_out",
            };
            self.metrics.observe_task(provider, model, outcome, began.elapsed());
            let open_now = matches!(breaker.state(), BreakerState::Open { until } if until > std::time::Instant::now());
            self.metrics.set_circuit(provider, &region, open_now);
            match result {
                Err(RunError::CircuitOpen { provider }) => note_open(provider, &breaker, &mut open),
                Err(e) => {
                    if let (RunError::Provider(p), Some(scanner)) = (&e, &self.refusals)
                        && p.class == gantry_providers::ProviderErrorClass::Moderated
                    {
                        scanner.provider_refusal(&job.spec, provider, p.code.as_deref()).await;
                    }
                    return outcome_of(e);
                }
                Ok((media, usage)) => {
                    progress.report(Stage::Uploading, None);
                    return self.store(&job, media, usage, video, g).await;
                }
            }
        }
        if open.is_empty() {
            failed(
                ErrorClass::Permanent,
                format!(
                    "provider {} is not configured in any of the consented regions {:?}",
                    g.provider, job.spec.allowed_regions
                ),
            )
        } else {
            // Try again when the first circuit lets a probe through, not before.
            JobOutcome::RetryAfter {
                message: format!(
                    "circuit open for {} and no allowed fallback is available",
                    open.join(", ")
                ),
                after: reopens.unwrap_or(Duration::from_secs(1)),
            }
        }
    }

    /// Runs one provider for the job, holding an account slot while the task is in flight.
    #[allow(clippy::too_many_arguments)]
    async fn attempt(
        &self,
        job: &ClaimedJob,
        client: &dyn Provider,
        breaker: &gantry_providers::breaker::Breaker,
        req: GenerateRequest,
        deadline: tokio::time::Instant,
        cancel: &CancellationToken,
        progress: &ProgressHandle,
    ) -> Result<(Vec<Media>, Usage), RunError> {
        let account = client.name();
        let cap = self.providers.providers.get(account).and_then(|p| p.max_in_flight);
        let holder = job.spec.id.to_string();
        let slots = self.slots.as_ref().zip(cap);
        if let Some((slots, cap)) = slots {
            self.take_slot(slots, account, &holder, cap, deadline, cancel).await?;
        }
        // Webhook mode: register before submitting, so an early call is not missed.
        let mut req = req;
        let inbox = self.webhooks.as_ref().filter(|_| client.accepts_webhooks());
        let registration = inbox.map(|i| {
            req.callback = Some(i.callback(client.name(), &req.external_id));
            i.register(&req.external_id)
        });
        let work = async {
            let mut opts = RunOptions {
                backoff: self.cfg.backoff,
                poll: self
                    .providers
                    .providers
                    .get(account)
                    .map(|p| p.poll_schedule())
                    .unwrap_or(gantry_providers::task::PollSchedule {
                        initial: Duration::from_secs(1),
                        max: Duration::from_secs(10),
                    }),
                deadline,
                resume: None,
                webhook: registration.as_ref().map(|r| r.rx.clone()),
            };
            if opts.webhook.is_some() {
                // Polling is only the safety net for a lost call.
                opts.poll.initial *= 4;
                opts.poll.max *= 4;
            }
            if job.attempt > 1 && client.can_find() {
                opts.resume = self.earlier_task(job, client, &req).await;
            }
            let g = run(client, breaker, &req, &opts, cancel, &mut ProgressHooks(progress)).await?;
            let mut out = Vec::with_capacity(g.artifacts.len());
            let n = g.artifacts.len().max(1);
            for (i, a) in g.artifacts.into_iter().enumerate() {
                progress.report(Stage::Downloading, Some(100.0 * i as f32 / n as f32));
                let span = tracing::info_span!("provider.download", provider = client.name());
                out.push(
                    media::fetch(client.name(), &self.downloads, a, &self.cfg.media)
                        .instrument(span)
                        .await?,
                );
            }
            Ok::<_, RunError>((out, g.usage))
        };
        match slots {
            Some((slots, _)) => {
                let refresh = async {
                    loop {
                        tokio::time::sleep(slots.lease() / 3).await;
                        if let Err(e) = slots.refresh(account, &holder).await {
                            tracing::warn!(error = %e, "refreshing the provider slot");
                        }
                    }
                };
                let r = tokio::select! {
                    r = work => r,
                    _ = refresh => unreachable_refresh(),
                };
                if let Err(e) = slots.release(account, &holder).await {
                    tracing::warn!(error = %e, "releasing the provider slot (it expires on its own)");
                }
                r
            }
            None => work.await,
        }
    }

    /// Waits for a slot of `account`, up to the deadline.
    async fn take_slot(
        &self,
        slots: &ProviderSlots,
        account: &str,
        holder: &str,
        cap: u32,
        deadline: tokio::time::Instant,
        cancel: &CancellationToken,
    ) -> Result<(), RunError> {
        let mut wait = Duration::from_millis(50);
        loop {
            match slots.try_acquire(account, holder, cap).await {
                Ok(true) => return Ok(()),
                Ok(false) => {}
                // Without Redis the limit cannot be kept; the attempt is retried later.
                Err(e) => {
                    return Err(RunError::Provider(gantry_providers::ProviderError::new(
                        account_static(account),
                        gantry_providers::ProviderErrorClass::Transient,
                        format!("provider slots: {e}"),
                    )));
                }
            }
            let pause = wait.mul_f64(0.5 + rand::rng().random::<f64>() / 2.0);
            if tokio::time::Instant::now() + pause > deadline {
                return Err(RunError::TimedOut {
                    state: "waiting for a provider slot",
                });
            }
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                _ = cancel.cancelled() => return Err(RunError::Cancelled),
            }
            // Short waits: a freed slot should not sit idle (the account's capacity is paid for).
            wait = (wait * 2).min(Duration::from_millis(250));
        }
    }

    /// A task an earlier attempt left at the provider that is still running or done.
    async fn earlier_task(
        &self,
        job: &ClaimedJob,
        client: &dyn Provider,
        req: &GenerateRequest,
    ) -> Option<gantry_providers::TaskHandle> {
        for a in (1..job.attempt).rev() {
            let mut earlier = req.clone();
            earlier.external_id = format!("{}-{a}", job.spec.id);
            let Ok(Some(h)) = client.find(&earlier).await else {
                continue;
            };
            match client.poll(&h).await {
                Ok(Observed::Failed(_) | Observed::Cancelled) | Err(_) => continue,
                Ok(_) => {
                    tracing::info!(job = %job.spec.id, earlier_attempt = a, "resuming the task an earlier attempt started");
                    return Some(h);
                }
            }
        }
        None
    }

    /// Stores the verified results and reports usage.
    async fn store(
        &self,
        job: &ClaimedJob,
        media: Vec<Media>,
        mut usage: Usage,
        video: bool,
        g: &GeneratePayload,
    ) -> JobOutcome {
        if usage.pixels.is_none()
            && let Some(m) = media.first()
            && let (Some(w), Some(h)) = (m.width, m.height)
        {
            usage.pixels = Some(u64::from(w) * u64::from(h));
        }
        let mut refs: Vec<ResultRef> = Vec::with_capacity(media.len());
        for (i, m) in media.into_iter().enumerate() {
            let name = format!("output-{i}.{}", m.extension());
            // The bytes move into the store's buffer: a video is not copied on the way.
            match self
                .outputs
                .put(&job.spec, &name, Bytes::from(m.bytes), m.content_type)
                .await
            {
                Ok(r) => refs.push(r),
                Err(e) => return failed(ErrorClass::Retryable, format!("storing the result: {e}")),
            }
        }
        usage.outputs = usage.outputs.or(Some(refs.len() as u32));
        if video && usage.seconds.is_none() {
            // Seconds per clip (a per-second price multiplies by the outputs); absent, the
            // settlement takes the length admission priced, the provider's default.
            usage.seconds = g.duration_secs;
        }
        let output = if refs.len() == 1 {
            refs.pop()
        } else {
            // Each sample by its index, as a pipeline step's `${steps.<name>.outputs.<i>}`
            // (and a `for_each` step's copies) name them.
            let samples: Vec<(String, String)> = refs
                .iter()
                .enumerate()
                .map(|(i, r)| (i.to_string(), r.object_key.clone()))
                .collect();
            let manifest = serde_json::json!({ "outputs": refs });
            match self
                .outputs
                .put(
                    &job.spec,
                    "manifest.json",
                    Bytes::from(manifest.to_string()),
                    "application/json",
                )
                .await
            {
                Ok(mut r) => {
                    r.details.extend(samples);
                    Some(r)
                }
                Err(e) => return failed(ErrorClass::Retryable, format!("storing the manifest: {e}")),
            }
        };
        JobOutcome::Succeeded(Completion {
            output,
            usage: Some(usage),
        })
    }
}

/// Largest stored object a generate job takes as a reference image.
const MAX_STORED_REFERENCE: u64 = 20 << 20;

/// The provider task's states as the job's progress: waiting in the provider's queue, then
/// generating. (The providers' APIs say how far along a task is inconsistently, where at all;
/// the stage is what every one of them reports.)
struct ProgressHooks<'a>(&'a ProgressHandle);

impl RunHooks for ProgressHooks<'_> {
    fn accepted(&mut self, _: &gantry_providers::task::TaskHandle) -> futures::future::BoxFuture<'_, ()> {
        Box::pin(async {})
    }

    fn state(&mut self, state: gantry_providers::task::TaskState) {
        use gantry_providers::task::TaskState;
        match state {
            TaskState::Queued => self.0.report(Stage::QueuedAtProvider, None),
            TaskState::Running => self.0.report(Stage::Generating, None),
            _ => {}
        }
    }

    fn percent(&mut self, percent: u8) {
        self.0.report(Stage::Generating, Some(f32::from(percent)));
    }
}

/// `POST /webhooks/{provider}/{external_id}/{token}`: a provider reporting a task's end.
async fn webhook(
    axum::extract::State(inner): axum::extract::State<Arc<Inner>>,
    axum::extract::Path((provider, external_id, token)): axum::extract::Path<(String, String, String)>,
    headers: axum::http::HeaderMap,
    body: Bytes,
) -> (axum::http::StatusCode, &'static str) {
    use axum::http::StatusCode;
    let (Some(inbox), Some(client)) = (inner.webhooks.as_ref(), inner.registry.any_client(&provider)) else {
        return (StatusCode::NOT_FOUND, "unknown provider\n");
    };
    match inbox.deliver(client.as_ref(), &external_id, &token, &headers, &body) {
        Ok(Delivery::Woken) => (StatusCode::OK, "ok\n"),
        Ok(Delivery::NobodyWaiting) => (StatusCode::OK, "nobody waiting; polling covers it\n"),
        Err(WebhookError::BadToken) => (StatusCode::UNAUTHORIZED, "bad token\n"),
        Err(e) => {
            tracing::warn!(provider = %provider, error = %e, "webhook refused");
            (StatusCode::BAD_REQUEST, "unreadable call\n")
        }
    }
}

/// The refresh loop never ends; `select!` needs a value of the work's type from its arm.
fn unreachable_refresh() -> Result<(Vec<Media>, Usage), RunError> {
    Err(RunError::Cancelled)
}

fn account_static(account: &str) -> &'static str {
    gantry_providers::static_name(account)
}

/// The job outcome for a run that ended without results.
fn outcome_of(e: RunError) -> JobOutcome {
    match e {
        RunError::Provider(p) => {
            // The provider's own words go to the operators' log; the job (which its tenant
            // reads) gets a fixed sentence for the class.
            tracing::warn!(provider = p.provider, class = %p.class, code = ?p.code, status = ?p.status, detail = %p.message, "provider call failed");
            match p.retry_after() {
                // The provider said when: the job's next attempt waits at least that long.
                Some(after) if p.class.is_retryable() => JobOutcome::RetryAfter {
                    message: p.tenant_message(),
                    after,
                },
                _ => failed(p.class.job_class(), p.tenant_message()),
            }
        }
        RunError::CircuitOpen { provider } => failed(ErrorClass::Retryable, format!("{provider}: circuit open")),
        RunError::Cancelled => failed(ErrorClass::Cancelled, "stopped"),
        RunError::TimedOut { state } => failed(ErrorClass::TimedOut, format!("attempt deadline passed ({state})")),
    }
}
