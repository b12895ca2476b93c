//! The worker's main loop: an apalis 1.0 worker over Gantry's queue backend, running the
//! executors through apalis's Tower layers; a GPU inventory; a heartbeat into the fleet registry.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use apalis::layers::catch_panic::CatchPanicLayer;
use apalis::layers::tracing::{DefaultOnFailure, TraceLayer};
use apalis::prelude::{ParallelizeExt, Task, WorkerBuilder, WorkerBuilderExt};
use gantry_queue::{
    ConsumerConfig, ConsumerStats, FleetGpu, FleetMig, GpuResource, JobKind, LeaseSource, Pool, QueueClient,
    QueueConfig, QueueError, Resources, WorkerRecord,
};
use tokio_util::sync::CancellationToken;

use std::sync::atomic::{AtomicBool, Ordering};

use crate::backend::{QueueBackend, QueuedJob};
use crate::executors::ExecutorSet;
use crate::gpu::{GpuInventory, GpuMode, GpuMonitor};
use crate::http::{HttpState, serve};
use crate::layers::{ExecutorPanicked, KindTimeoutLayer, KindTimeouts, StopLayer};
use crate::metrics::WorkerMetrics;

/// Why a worker stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// The queue failed in a way retrying cannot fix.
    #[error(transparent)]
    Queue(#[from] QueueError),
    /// Nothing to serve.
    #[error("no executor for any of the requested kinds")]
    NoKinds,
    /// The GPU inventory task died.
    #[error("gpu inventory: {0}")]
    Inventory(#[source] tokio::task::JoinError),
    /// The metrics address could not be bound.
    #[error("cannot serve metrics on {0}: {1}")]
    Http(std::net::SocketAddr, std::io::Error),
    /// apalis's worker stopped with an error.
    #[error("worker runtime: {0}")]
    Runtime(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// Typed worker configuration.
#[derive(Clone, Debug)]
pub struct WorkerConfig {
    /// `REDIS_URL`.
    pub redis_url: String,
    /// Pool this worker belongs to.
    pub pool: Pool,
    /// This worker's id.
    pub worker_id: String,
    /// Jobs run at once.
    pub concurrency: usize,
    /// Lease length.
    pub lease: Duration,
    /// Drain grace period on SIGTERM.
    pub drain_grace: Duration,
    /// How GPUs are found: NVML, none, or a declared fake.
    pub gpus: GpuMode,
    /// Fleet-registry heartbeat period; the record expires after three.
    pub registry_heartbeat: Duration,
    /// CPU-job slots (`None`: as many as the concurrency).
    pub cpu_slots: Option<usize>,
    /// Models warm here; their jobs are claimed first.
    pub warm_models: Vec<String>,
    /// Pools whose jobs this worker takes when its own has none it can run.
    pub steal_from: Vec<Pool>,
    /// Where to serve `/metrics`, `/healthz` and `/readyz` (`None`: not served).
    pub metrics_addr: Option<std::net::SocketAddr>,
    /// Each attempt's time limit by job kind (capped by the job's own timeout).
    pub kind_timeouts: KindTimeouts,
    /// More routes for the HTTP server (the generate executor's webhooks).
    pub extra_routes: Option<axum::Router>,
    /// Keep this pod's deletion cost at its running-job count (Kubernetes; `None`: off).
    pub deletion_cost: Option<crate::deletion_cost::DeletionCost>,
    /// How long the records this worker finishes are kept (`GANTRY_RETENTION`).
    pub retention: gantry_queue::RetentionPolicy,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Runs a worker until `shutdown`, then drains and deregisters. Returns its counters.
pub async fn run_worker(
    cfg: WorkerConfig,
    executors: ExecutorSet,
    shutdown: CancellationToken,
) -> Result<Arc<ConsumerStats>, WorkerError> {
    let kinds: Vec<JobKind> = executors.kinds();
    if kinds.is_empty() {
        return Err(WorkerError::NoKinds);
    }
    let mode = cfg.gpus.clone();
    let monitor = tokio::task::spawn_blocking(move || GpuMonitor::start(&mode))
        .await
        .map_err(WorkerError::Inventory)?;
    tracing::info!(worker_id = %cfg.worker_id, "{}", monitor.initial().summary());
    let monitor = Arc::new(monitor);

    let qcfg = cfg.retention.apply(QueueConfig::default());
    let client = connect_with_retry(&cfg.redis_url, qcfg, &shutdown).await?;
    let mut ccfg = ConsumerConfig::new(cfg.pool.clone(), kinds.clone(), cfg.worker_id.clone());
    ccfg.concurrency = cfg.concurrency.max(1);
    ccfg.claim_batch = ccfg.concurrency.min(200);
    ccfg.lease = cfg.lease;
    ccfg.heartbeat_every = cfg.lease / 3;
    ccfg.drain_grace = cfg.drain_grace;
    ccfg.steal_from = cfg.steal_from.clone();
    ccfg.resources = Resources {
        // Each GPU, or each MIG instance of a GPU in MIG mode, is a unit a job is placed on.
        gpus: monitor
            .initial()
            .units()
            .iter()
            .map(|u| GpuResource {
                total_bytes: u.total_bytes,
                nvenc: u.nvenc,
            })
            .collect(),
        cpu_slots: cfg.cpu_slots,
        warm_models: cfg.warm_models.clone(),
        // Read at every claim: memory other processes hold on a GPU is not offered.
        vram_used: (!monitor.initial().gpus.is_empty()).then(|| {
            let m = monitor.clone();
            gantry_queue::VramProbe(Arc::new(move || m.memory_used()))
        }),
    };
    tracing::info!(
        worker_id = %cfg.worker_id,
        pool = %cfg.pool,
        kinds = ?kinds.iter().map(|k| k.as_str()).collect::<Vec<_>>(),
        concurrency = ccfg.concurrency,
        "worker started"
    );
    let source = monitor.initial().source.as_str();
    let mut metrics = WorkerMetrics::new(&cfg.worker_id, cfg.pool.as_str(), source);
    executors.register_metrics(metrics.registry_mut());
    executors.set_gpus(monitor.initial());
    let metrics = Arc::new(metrics);
    metrics.observe_gpus(monitor.initial());
    let redis_ok = Arc::new(AtomicBool::new(true));
    let http_stop = CancellationToken::new();
    let metrics_addr = match cfg.metrics_addr {
        Some(addr) => {
            let state = HttpState {
                metrics: metrics.clone(),
                redis_ok: redis_ok.clone(),
                shutdown: shutdown.clone(),
            };
            let bound = serve(addr, state, cfg.extra_routes.clone(), http_stop.clone())
                .await
                .map_err(|e| WorkerError::Http(addr, e))?;
            tracing::info!("metrics on http://{bound}/metrics");
            Some(bound.to_string())
        }
        None => None,
    };
    let source = LeaseSource::new(client.clone(), ccfg).with_events(metrics.clone());
    let in_flight = source.in_flight_gauge();
    let reserved_vram = source.reserved_vram_gauge();
    let stats = source.stats();

    let registry_stop = CancellationToken::new();
    let registry = tokio::spawn(registry_loop(
        client.clone(),
        RegistryCtx {
            cfg: cfg.clone(),
            kinds,
            monitor,
            in_flight: Box::new(in_flight),
            reserved_vram: Box::new(reserved_vram),
            metrics,
            redis_ok,
            metrics_addr,
        },
        shutdown.clone(),
        registry_stop.clone(),
    ));
    let concurrency = source.config().concurrency;
    let (leases, settlement) = source.start(shutdown);
    let ran = apalis_worker(&cfg, concurrency, QueueBackend::new(leases, settlement), executors).await;
    registry_stop.cancel();
    let _ = registry.await;
    http_stop.cancel();
    if let Err(e) = client.deregister_worker(&cfg.pool, &cfg.worker_id).await {
        tracing::warn!(error = %e, "deregistering failed; the record expires by itself");
    }
    ran.map(|()| stats)
}

/// The apalis worker over `backend`. The layers, from the outside in (the backend's settle
/// layer wraps them all, and settles in the job's span): at most `concurrency` jobs; each in its
/// own task; stopped when told to; stopped at its kind's timeout (outside the trace, as apalis
/// advises); in its span; a panic caught and turned into a retryable failure.
///
/// The worker's stream runs as a task of this runtime, so each job it spawns lands on the
/// spawning thread's own queue. (It used to run with `block_on` on a blocking thread, which put
/// a cross-thread wake-up between the stream and every job: `benches/worker.sh 50000 50 5`
/// went from 0.83 of the queue core's rate to 0.99 when it moved.)
fn apalis_worker(
    cfg: &WorkerConfig,
    concurrency: usize,
    backend: QueueBackend,
    executors: ExecutorSet,
) -> futures::future::BoxFuture<'static, Result<(), WorkerError>> {
    let worker = WorkerBuilder::new(cfg.worker_id.as_str())
        .backend(backend)
        .concurrency(concurrency)
        .parallelize(tokio::spawn)
        .layer(StopLayer)
        .layer(KindTimeoutLayer::new(cfg.kind_timeouts.clone()))
        .layer(
            TraceLayer::new()
                .make_span_with(|t: &Task<QueuedJob>| t.args.span())
                .on_failure(DefaultOnFailure::new().level(tracing::Level::DEBUG)),
        )
        .layer(CatchPanicLayer::with_panic_handler(panicked as PanicHandler))
        .build(executors);
    // Each job runs as a task of its own (the parallelize layer spawns it).
    let run = tokio::spawn(worker.run());
    Box::pin(async move {
        match run.await {
            Ok(r) => r.map_err(|e| WorkerError::Runtime(Box::new(e))),
            Err(e) => Err(WorkerError::Runtime(Box::new(e))),
        }
    })
}

type PanicHandler = fn(&Box<dyn std::any::Any + Send>) -> ExecutorPanicked;

/// What a caught panic becomes: its message is not kept (it could carry anything).
fn panicked(_: &Box<dyn std::any::Any + Send>) -> ExecutorPanicked {
    ExecutorPanicked
}

fn record(
    ctx: &RegistryCtx,
    hostname: &str,
    inv: &GpuInventory,
    in_flight: usize,
    reserved: &[u64],
    started_at_ms: u64,
    draining: bool,
) -> WorkerRecord {
    let (cfg, kinds) = (&ctx.cfg, &ctx.kinds);
    // Reservations are per placement unit: a GPU's are its own, or its MIG instances'.
    let units = inv.units();
    let reserved_on = |gpu: usize, mig: Option<u32>| -> u64 {
        units
            .iter()
            .zip(reserved)
            .filter(|(u, _)| u.gpu == gpu && (mig.is_none() || u.mig == mig))
            .map(|(_, r)| *r)
            .sum()
    };
    WorkerRecord {
        id: cfg.worker_id.clone(),
        pool: cfg.pool.as_str().to_owned(),
        hostname: hostname.to_owned(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        kinds: kinds.to_vec(),
        concurrency: cfg.concurrency as u32,
        in_flight: in_flight as u32,
        gpu_source: inv.source.as_str().to_owned(),
        gpus: inv
            .gpus
            .iter()
            .enumerate()
            .map(|(i, g)| FleetGpu {
                index: g.index,
                uuid: g.uuid.clone(),
                name: g.name.clone(),
                memory_total_bytes: g.memory_total_bytes,
                memory_free_bytes: g.memory_free_bytes,
                nvenc: g.nvenc.usable(),
                memory_used_bytes: g.memory_used_bytes,
                reserved_bytes: reserved_on(i, None),
                // The decoder opens NVDEC on a real GPU (falling back to software if its
                // session does not open); declared GPUs decode nothing.
                nvdec: inv.source == crate::gpu::InventorySource::Nvml,
                mig: g
                    .mig_devices
                    .iter()
                    .map(|m| FleetMig {
                        index: m.index,
                        uuid: m.uuid.clone(),
                        memory_total_bytes: m.memory_total_bytes,
                        reserved_bytes: reserved_on(i, Some(m.index)),
                    })
                    .collect(),
            })
            .collect(),
        warm_models: cfg.warm_models.clone(),
        started_at_ms,
        heartbeat_ms: cfg.registry_heartbeat.as_millis() as u64,
        draining,
        last_seen_ms: 0,
        metrics_addr: None,
    }
}

type Gauge = Box<dyn Fn() -> usize + Send + Sync>;
type VramGauge = Box<dyn Fn() -> Vec<u64> + Send + Sync>;

struct RegistryCtx {
    cfg: WorkerConfig,
    kinds: Vec<JobKind>,
    monitor: Arc<GpuMonitor>,
    in_flight: Gauge,
    reserved_vram: VramGauge,
    metrics: Arc<WorkerMetrics>,
    redis_ok: Arc<AtomicBool>,
    metrics_addr: Option<String>,
}

/// Every registry heartbeat: refresh the GPU readings and gauges, write the fleet record.
async fn registry_loop(client: QueueClient, ctx: RegistryCtx, shutdown: CancellationToken, stop: CancellationToken) {
    let started = now_ms();
    let hostname = std::fs::read_to_string("/etc/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_default();
    let mut tick = tokio::time::interval(ctx.cfg.registry_heartbeat);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut deletion_cost = ctx
        .cfg
        .deletion_cost
        .clone()
        .map(crate::deletion_cost::CostTracker::new);
    loop {
        tokio::select! { _ = tick.tick() => {}, _ = stop.cancelled() => return }
        let m = ctx.monitor.clone();
        let inv = match tokio::task::spawn_blocking(move || m.refresh()).await {
            Ok(inv) => inv,
            Err(_) => ctx.monitor.initial().clone(),
        };
        let in_flight = (ctx.in_flight)();
        ctx.metrics.observe_gpus(&inv);
        ctx.metrics.set_in_flight(ctx.cfg.pool.as_str(), in_flight);
        if let Some(t) = deletion_cost.as_mut() {
            t.observe(in_flight).await;
        }
        let mut rec = record(
            &ctx,
            &hostname,
            &inv,
            in_flight,
            &(ctx.reserved_vram)(),
            started,
            shutdown.is_cancelled(),
        );
        rec.metrics_addr = ctx.metrics_addr.clone();
        match client.register_worker(&rec, ctx.cfg.registry_heartbeat).await {
            Ok(()) => ctx.redis_ok.store(true, Ordering::Relaxed),
            Err(e) => {
                ctx.redis_ok.store(false, Ordering::Relaxed);
                tracing::warn!(error = %e, "fleet registry heartbeat failed");
            }
        }
    }
}

/// Connects, retrying while Redis is unreachable (a worker may start before Redis does).
pub async fn connect_with_retry(
    url: &str,
    cfg: QueueConfig,
    stop: &CancellationToken,
) -> Result<QueueClient, QueueError> {
    let mut backoff = gantry_queue::retry::Backoff::default();
    loop {
        match QueueClient::connect(url, cfg.clone()).await {
            Ok(c) => return Ok(c),
            Err(e) if e.is_transient() && !stop.is_cancelled() => {
                let d = backoff.next_delay();
                tracing::warn!(error = %e, "redis unreachable; retrying");
                tokio::time::sleep(d).await;
            }
            Err(e) => return Err(e),
        }
    }
}
