//! `gantry worker`.

use std::time::Duration;

use anyhow::Context;
use gantry_providers::ProvidersConfig;
use gantry_providers::breaker::BreakerConfig;
use gantry_queue::{JobKind, Pool, ProviderSlots, RedisConn};
use gantry_safety::{HashListStore, Matcher, ModerationLog, Retention, TrustRegistry};
use gantry_worker::deletion_cost::DeletionCost;
use gantry_worker::executors::csam_hash::CsamHashExecutor;
use gantry_worker::executors::generate::{GenerateConfig, GenerateExecutor};
use gantry_worker::executors::noop::NoopExecutor;
use gantry_worker::executors::scanned::Scanned;
use gantry_worker::executors::transcode::TranscodeExecutor;
use gantry_worker::executors::upscale::UpscaleExecutor;
use gantry_worker::gpu::GpuMode;
use gantry_worker::outputs::OutputStore;
use gantry_worker::scan::{CsamPolicy, Scanner};
use gantry_worker::{ExecutorSet, KindTimeouts, WorkerConfig, run_worker};
use tokio_util::sync::CancellationToken;

#[derive(Debug, clap::Args)]
pub struct WorkerArgs {
    #[command(flatten)]
    redis: super::RedisArgs,
    /// Pool to serve.
    #[arg(long, env = "GANTRY_POOL", default_value = "cpu")]
    pool: String,
    /// Kinds to serve (default: every kind this build has an executor for).
    #[arg(long, value_delimiter = ',')]
    kinds: Vec<String>,
    /// Jobs run at once.
    #[arg(long, default_value_t = 10)]
    concurrency: usize,
    /// Lease length in seconds; a worker that stops heartbeating loses its jobs after this.
    #[arg(long, default_value_t = 30.0)]
    lease_secs: f64,
    /// Seconds running jobs get to finish after SIGTERM before their leases are released.
    #[arg(long, default_value_t = 30.0)]
    drain_grace_secs: f64,
    /// GPUs: `auto` (NVML; CPU-only without a driver), `none`, or a declared fake inventory
    /// for tests and demos such as `fake:2x80GiB+nvenc` or `fake:1x24GiB,2x80GiB`.
    #[arg(long, env = "GANTRY_GPUS", default_value = "auto")]
    gpus: String,
    /// Fleet-registry heartbeat period in seconds; a worker missing three is gone from the list.
    #[arg(long, default_value_t = 5.0)]
    registry_heartbeat_secs: f64,
    /// CPU-job slots (default: the concurrency). Set it to the cores for CPU-heavy pools.
    #[arg(long)]
    cpu_slots: Option<usize>,
    /// Models warm on this worker; jobs preferring them are claimed first.
    #[arg(long, value_delimiter = ',')]
    warm_models: Vec<String>,
    /// Pools whose jobs this worker takes when its own pool has none it can run.
    #[arg(long, value_delimiter = ',')]
    steal_from: Vec<String>,
    /// Serve /metrics, /healthz and /readyz here (e.g. 0.0.0.0:9464; port 0 picks a free one).
    #[arg(long, env = "GANTRY_METRICS_ADDR")]
    metrics_addr: Option<std::net::SocketAddr>,
    /// Where outputs go: a directory, file:///dir, s3://bucket[/prefix] (credentials from AWS_*
    /// variables) or memory://.
    #[arg(long, env = "GANTRY_OUTPUTS", default_value = ".gantry/outputs")]
    outputs: String,
    /// Where taken-down content is preserved, sealed with GANTRY_EVIDENCE_KEYS (a store URL as
    /// --outputs; default: the outputs' store under `quarantine/`).
    #[arg(long, env = "GANTRY_QUARANTINE_STORE")]
    quarantine_store: Option<String>,
    /// The super-resolution network for `upscale` jobs: an ONNX model (models/fetch.sh makes
    /// one). Default: .gantry/models/esrgan-thick-x4.onnx when it is there; `none`: no network
    /// (every upscale is Lanczos3).
    #[arg(long, env = "GANTRY_SR_MODEL")]
    sr_model: Option<String>,
    /// How many times larger --sr-model makes each side (checked when it loads).
    #[arg(long, default_value_t = gantry_worker::super_resolution::MODEL_SCALE)]
    sr_scale: u32,
    /// ONNX Runtime's shared library (libonnxruntime.so.*) for the network. Default: the one
    /// models/fetch.sh installed in .gantry/models/venv.
    #[arg(long, env = "GANTRY_ONNXRUNTIME")]
    onnxruntime: Option<std::path::PathBuf>,
    /// Worker id (default: hostname-pid).
    #[arg(long)]
    worker_id: Option<String>,
    /// An attempt's time limit for one kind, as KIND=SECONDS (repeatable; e.g. transcode=3600).
    /// Defaults: generate 600, upscale 300, transcode 1800, csam_hash 300. A job's own
    /// timeout applies when it is shorter.
    #[arg(long = "timeout", value_name = "KIND=SECONDS")]
    timeouts: Vec<String>,
    /// Generation providers (TOML: endpoints per region, key variables, models, caps); the
    /// embedded defaults (real endpoints, keys from OPENAI_API_KEY, GEMINI_API_KEY,
    /// KLING_ACCESS_KEY/KLING_SECRET_KEY, ARK_API_KEY, BFL_API_KEY) when absent.
    #[arg(long, env = "GANTRY_PROVIDERS")]
    providers: Option<std::path::PathBuf>,
    /// Send every provider call to `gantry mock-providers` at this URL instead.
    #[arg(long, env = "GANTRY_MOCK_PROVIDERS")]
    mock_providers: Option<String>,
    /// Webhook mode: the URL at which providers reach this worker's HTTP server (the
    /// --metrics-addr one), e.g. https://worker-3.gantry.internal:9464. Providers that can
    /// call back (Kling, BFL, Seedance) do; polling slows to a safety net.
    #[arg(long, env = "GANTRY_WEBHOOK_BASE", requires = "metrics_addr")]
    webhook_base: Option<String>,
    /// Provider outages in a row (5xx, timeouts) that open a provider's circuit in a region.
    #[arg(long, default_value_t = 5)]
    breaker_threshold: u32,
    /// Seconds an open circuit refuses calls before one probe is let through.
    #[arg(long, default_value_t = 30.0)]
    breaker_open_secs: f64,
    /// An address reference images and provider results may be fetched from although it is
    /// loopback or private (a mock server in tests and local development; never in
    /// production). Repeatable. --mock-providers adds its own address.
    #[arg(long = "allow-reference-addr", value_name = "IP:PORT")]
    allow_reference_addrs: Vec<std::net::SocketAddr>,
    /// Keep this pod's `controller.kubernetes.io/pod-deletion-cost` at its running-job count, so
    /// Kubernetes scales in idle workers first (needs get/patch on pods: the chart's
    /// `rbac.podDeletionCost`).
    #[arg(long, env = "GANTRY_POD_DELETION_COST")]
    pod_deletion_cost: bool,
    /// The pod's name (the downward API's metadata.name).
    #[arg(long, env = "POD_NAME")]
    pod_name: Option<String>,
    /// The pod's namespace (the downward API's metadata.namespace).
    #[arg(long, env = "POD_NAMESPACE")]
    pod_namespace: Option<String>,
    /// The Kubernetes API server.
    #[arg(long, env = "GANTRY_KUBE_API", default_value = "https://kubernetes.default.svc")]
    kube_api: String,
    /// Bearer token file for the API server (default: the pod's service account token).
    #[arg(long, env = "GANTRY_KUBE_TOKEN_FILE")]
    kube_token_file: Option<String>,
    /// Key for the webhook URLs' tokens (default: random per process).
    #[arg(long, env = "GANTRY_WEBHOOK_SECRET", hide_env_values = true)]
    webhook_secret: Option<String>,
    /// Users' data exports store their archive in parts of this many jobs, each with a
    /// checkpoint, so an export whose worker dies is resumed where it stopped.
    #[arg(long, default_value_t = gantry_worker::executors::export::DEFAULT_PART_JOBS)]
    export_part_jobs: u64,
}

/// The super-resolution network the flags name, or the one models/fetch.sh left in
/// .gantry/models; none with `--sr-model none`, or when there is none to find.
fn super_resolution(a: &WorkerArgs) -> anyhow::Result<Option<gantry_worker::super_resolution::Network>> {
    use gantry_worker::super_resolution::{
        DEFAULT_MODELS_DIR, DEFAULT_OVERLAP, DEFAULT_TILE, Network, SrConfig, find_runtime,
    };
    let dir = std::path::Path::new(DEFAULT_MODELS_DIR);
    let runtime = a.onnxruntime.clone().or_else(|| find_runtime(&dir.join("venv")));
    let cfg = match a.sr_model.as_deref() {
        Some("none") => None,
        Some(model) => {
            let model = std::path::PathBuf::from(model);
            if !model.is_file() {
                return Err(super::UsageError(format!("--sr-model {}: no such file", model.display())).into());
            }
            let Some(runtime) = runtime else {
                return Err(super::UsageError(
                    "--sr-model needs ONNX Runtime: give --onnxruntime, or run models/fetch.sh".into(),
                )
                .into());
            };
            Some(SrConfig {
                model,
                runtime,
                scale: a.sr_scale,
                tile: DEFAULT_TILE,
                overlap: DEFAULT_OVERLAP,
            })
        }
        None => SrConfig::discover(dir).map(|mut c| {
            if let Some(r) = a.onnxruntime.clone() {
                c.runtime = r;
            }
            c
        }),
    };
    match &cfg {
        Some(c) => {
            tracing::info!(model = %c.model.display(), runtime = %c.runtime.display(), "upscale: super-resolution network (neural by default for its scale)")
        }
        None => tracing::info!("upscale: no super-resolution network; every upscale is Lanczos3"),
    }
    Ok(cfg.map(Network::new))
}

pub async fn run(a: WorkerArgs) -> anyhow::Result<()> {
    let pool = Pool::new(&a.pool)?;
    let deletion_cost = if a.pod_deletion_cost {
        let target = DeletionCost::new(
            &a.kube_api,
            a.pod_namespace.as_deref().unwrap_or_default(),
            a.pod_name.as_deref().unwrap_or_default(),
            a.kube_token_file.as_deref(),
        )
        .map_err(super::refused)?;
        Some(target)
    } else {
        None
    };
    // Outputs are sealed at rest with the data keys job payloads are sealed with.
    let outputs = OutputStore::open(&a.outputs)?.with_keys(gantry_queue::seal::Keyring::from_env()?);
    tracing::info!(store = ?outputs, "outputs");
    // One multiplexed connection for the executors' own Redis state (provider slots, hash
    // lists, moderation, trust); the queue runtime opens its own.
    let conn = a.redis.conn().await?;
    // One scanner for the csam_hash jobs and the gate every media output passes before release.
    let retention = gantry_queue::RetentionPolicy::from_env().map_err(super::refused)?;
    let vault = gantry_safety::Vault::open(conn.clone(), &outputs, a.quarantine_store.as_deref())?;
    let scanner = scanner(conn.clone(), outputs.clone(), &retention).with_vault(vault);
    let mut upscale = UpscaleExecutor::new(outputs.clone());
    if let Some(network) = super_resolution(&a)? {
        let network = std::sync::Arc::new(network);
        // Loaded by the first neural upscale, or now when --warm-models names it.
        if a.warm_models.iter().any(|m| m == network.name()) {
            network.warm_up();
        }
        upscale = upscale.with_super_resolution(network);
    }
    let mut executors = ExecutorSet::default()
        .with(NoopExecutor::with_outputs(outputs.clone()))
        .with(Scanned::new(upscale, scanner.clone()))
        .with(Scanned::new(TranscodeExecutor::new(outputs.clone()), scanner.clone()))
        .with(CsamHashExecutor::new(scanner.clone()))
        .with(
            export_executor(&a.redis.redis_url, conn.clone(), outputs.clone(), &retention)
                .await?
                .with_part_jobs(a.export_part_jobs),
        );
    let breaker = BreakerConfig {
        threshold: a.breaker_threshold.max(1),
        open_for: Duration::try_from_secs_f64(a.breaker_open_secs)
            .map_err(|_| super::UsageError("--breaker-open-secs must be a non-negative number".into()))?,
    };
    // The mock providers live on loopback: their result URLs (and references the tests serve
    // from them) are allowed; nothing else special ever is.
    let mut allow = a.allow_reference_addrs.clone();
    if let Some(m) = a.mock_providers.as_deref() {
        let hostport = m.trim_start_matches("http://").trim_end_matches('/');
        let addr = hostport
            .parse::<std::net::SocketAddr>()
            .map_err(|_| super::UsageError(format!("--mock-providers {m}: expected http://IP:PORT")))?;
        allow.push(addr);
    }
    let references = gantry_providers::fetch::FetchConfig {
        allow,
        ..Default::default()
    };
    let webhooks = match &a.webhook_base {
        None => None,
        Some(base) => {
            if !(base.starts_with("http://") || base.starts_with("https://")) {
                return Err(super::UsageError(format!("--webhook-base {base}: expected an http(s) URL")).into());
            }
            let secret = match &a.webhook_secret {
                Some(s) => s.as_bytes().to_vec(),
                None => {
                    use rand::RngCore;
                    let mut k = vec![0u8; 32];
                    rand::rng().fill_bytes(&mut k);
                    k
                }
            };
            Some(gantry_worker::executors::generate::WebhookMode {
                base: base.clone(),
                secret,
            })
        }
    };
    let generate = generate_executor(
        conn,
        a.providers.as_deref(),
        a.mock_providers.as_deref(),
        outputs,
        GenerateConfig {
            breaker,
            references,
            webhooks,
            ..Default::default()
        },
    )
    .await?
    // Before anything else holds the executor: refusals are recorded from its first job.
    .with_refusals(scanner.clone());
    let extra_routes = generate.webhook_router();
    if generate.has_providers() {
        executors = executors.with(Scanned::new(generate, scanner));
    } else {
        tracing::warn!("no generation provider has credentials: generate jobs are not served");
    }
    if !a.kinds.is_empty() {
        let kinds = a
            .kinds
            .iter()
            .map(|k| k.parse::<JobKind>())
            .collect::<Result<Vec<_>, _>>()?;
        executors = executors.restrict(&kinds);
    }
    let worker_id = a.worker_id.unwrap_or_else(|| {
        let host = std::fs::read_to_string("/etc/hostname").unwrap_or_else(|_| "local".into());
        format!("{}-{}", host.trim(), std::process::id())
    });
    let cfg = WorkerConfig {
        redis_url: a.redis.redis_url,
        pool,
        worker_id,
        concurrency: a.concurrency,
        lease: Duration::from_secs_f64(a.lease_secs.max(0.1)),
        drain_grace: Duration::from_secs_f64(a.drain_grace_secs.max(0.0)),
        gpus: a.gpus.parse::<GpuMode>()?,
        registry_heartbeat: Duration::from_secs_f64(a.registry_heartbeat_secs.max(0.05)),
        cpu_slots: a.cpu_slots,
        warm_models: a.warm_models,
        steal_from: a.steal_from.iter().map(|p| Pool::new(p)).collect::<Result<_, _>>()?,
        metrics_addr: a.metrics_addr,
        kind_timeouts: parse_timeouts(&a.timeouts)?,
        retention,
        extra_routes,
        deletion_cost,
    };
    let shutdown = CancellationToken::new();
    super::spawn_signal_handler(shutdown.clone()).context("installing signal handlers")?;
    let stats = run_worker(cfg, executors, shutdown).await?;
    use std::sync::atomic::Ordering::Relaxed;
    tracing::info!(
        succeeded = stats.succeeded.load(Relaxed),
        retried = stats.retried.load(Relaxed),
        dead = stats.dead.load(Relaxed),
        released = stats.released.load(Relaxed),
        "worker stopped"
    );
    Ok(())
}

/// The generate executor for the configured (or mocked) providers, with fleet-wide slots.
async fn generate_executor(
    conn: RedisConn,
    file: Option<&std::path::Path>,
    mock: Option<&str>,
    outputs: OutputStore,
    gen_cfg: GenerateConfig,
) -> anyhow::Result<GenerateExecutor> {
    let mut cfg = match file {
        Some(path) => {
            let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
            ProvidersConfig::from_toml(&text).map_err(super::refused)?
        }
        None => ProvidersConfig::production(),
    };
    if let Some(url) = mock {
        cfg = cfg.mocked(url);
    }
    let slots = ProviderSlots::new(conn, Duration::from_secs(60));
    Ok(GenerateExecutor::new(cfg, outputs, Some(slots), gen_cfg)?)
}

/// The abuse-hash scanner: hash lists, moderation log and trust in the fleet's Redis.
fn scanner(conn: RedisConn, outputs: OutputStore, retention: &gantry_queue::RetentionPolicy) -> Scanner {
    let matcher = Matcher::new(HashListStore::new(conn.clone()), Duration::from_secs(10));
    Scanner::new(
        conn.clone(),
        outputs,
        matcher,
        (
            ModerationLog::new(conn.clone(), Retention::from(retention)),
            TrustRegistry::new(conn),
        ),
        CsamPolicy::default(),
    )
}

/// `--timeout KIND=SECONDS` flags over the defaults.
fn parse_timeouts(flags: &[String]) -> anyhow::Result<KindTimeouts> {
    let mut t = KindTimeouts::defaults();
    for f in flags {
        let (kind, secs) = f
            .split_once('=')
            .ok_or_else(|| super::UsageError(format!("--timeout {f}: expected KIND=SECONDS")))?;
        let kind = kind.trim().parse::<JobKind>()?;
        let limit = secs
            .trim()
            .parse::<f64>()
            .ok()
            .filter(|s| *s > 0.0)
            .and_then(|s| Duration::try_from_secs_f64(s).ok())
            .ok_or_else(|| super::UsageError(format!("--timeout {f}: seconds must be a positive number")))?;
        t = t.with(kind, limit);
    }
    Ok(t)
}

/// The executor of users' data exports: its own queue client (with the data keys, to open the
/// prompts it exports), the store, trust and moderation records.
async fn export_executor(
    url: &str,
    conn: RedisConn,
    outputs: OutputStore,
    retention: &gantry_queue::RetentionPolicy,
) -> anyhow::Result<gantry_worker::executors::export::ExportExecutor> {
    let queue = gantry_queue::QueueClient::connect(url, retention.apply(gantry_queue::QueueConfig::default())).await?;
    Ok(gantry_worker::executors::export::ExportExecutor::new(
        queue, outputs, conn, retention,
    ))
}
