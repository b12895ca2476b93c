//! `gantry scheduler`: the HTTP API over a Redis queue, with pool loads refreshed beside it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use gantry_queue::{QueueClient, QueueConfig, QueueError};
use tokio_util::sync::CancellationToken;

use crate::admission::Admission;
use crate::auth::ApiKeys;
use crate::config::SchedulerConfig;
use crate::metrics::SchedulerMetrics;
use crate::placement::PoolLoads;
use crate::router::{metrics_router, router};
use crate::settler::CreditSettler;
use crate::state::AppState;

/// Why the scheduler stopped.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// Redis unusable.
    #[error(transparent)]
    Queue(#[from] QueueError),
    /// The console's OpenID Connect provider cannot be set up (its secret is missing).
    #[error("console.oidc: {0}")]
    Oidc(#[from] crate::oidc::OidcError),
    /// No data keys, and the configuration requires them.
    #[error(
        "no data keys: set GANTRY_DATA_KEYS (or GANTRY_DATA_KEYS_FILE) so prompts and reference images are sealed at rest; only a development configuration may set require_data_keys = false"
    )]
    NoDataKeys,
    /// The output store named in the configuration cannot be opened.
    #[error(transparent)]
    Outputs(#[from] gantry_store::OutputError),
    /// The configuration is fit only for loopback (published demo keys, plain-text payloads)
    /// and was asked to serve another address.
    #[error(
        "refusing to serve {addr}: this configuration may only listen on loopback because {reasons}; give it private API keys and data keys, or listen on 127.0.0.1"
    )]
    LoopbackOnly {
        /// The address asked for.
        addr: SocketAddr,
        /// Why, joined.
        reasons: String,
    },
    /// Trust and safety could not start (the evidence keys or quarantine, the reporting client).
    #[error("safety: {0}")]
    Safety(String),
    /// Webhook delivery could not start (its HTTP client).
    #[error("webhooks: {0}")]
    Webhooks(String),
    /// The listen address could not be bound, or serving failed.
    #[error("http on {0}: {1}")]
    Http(SocketAddr, std::io::Error),
}

/// Refuses to serve a loopback-only configuration on any other address, API and metrics alike.
/// This is the scheduler's own check, whoever starts it (the CLI's `--dev`, a test, an embedder):
/// the demo's keys are published, so a fleet that serves them beyond this host is open to all.
pub fn check_exposure(cfg: &SchedulerConfig) -> Result<(), ServeError> {
    let reasons = cfg.loopback_only_reasons();
    if reasons.is_empty() {
        return Ok(());
    }
    for addr in [cfg.listen, cfg.metrics_listen] {
        if !addr.ip().is_loopback() {
            return Err(ServeError::LoopbackOnly {
                addr,
                reasons: reasons.join("; "),
            });
        }
    }
    Ok(())
}

/// A running scheduler.
#[derive(Debug)]
pub struct Scheduler {
    /// Where the API listens (the port resolved when 0 was asked).
    pub addr: SocketAddr,
    /// Where `/metrics` is served.
    pub metrics_addr: SocketAddr,
    task: tokio::task::JoinHandle<Result<(), ServeError>>,
}

async fn bind(addr: SocketAddr) -> Result<(tokio::net::TcpListener, SocketAddr), ServeError> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| ServeError::Http(addr, e))?;
    let local = listener.local_addr().map_err(|e| ServeError::Http(addr, e))?;
    Ok((listener, local))
}

/// Starts webhook delivery: the configured endpoints written to the store, one dispatcher
/// and one sender.
async fn start_webhooks(
    queue: &QueueClient,
    cfg: &Arc<SchedulerConfig>,
    metrics: Arc<SchedulerMetrics>,
    audit: gantry_safety::AuditLog,
    shutdown: &CancellationToken,
) -> Result<crate::webhooks::Webhooks, ServeError> {
    let store = crate::webhooks::store::WebhookStore::new(queue.connection(), queue.keys().cloned());
    crate::webhooks::sync_config(&store, cfg).await;
    let wake = Arc::new(tokio::sync::Notify::new());
    let pools: Vec<_> = cfg
        .pools
        .keys()
        .filter_map(|p| gantry_queue::Pool::new(p).ok())
        .collect();
    let dispatcher = crate::webhooks::delivery::Dispatcher::new(queue.connection(), store.clone(), pools, wake.clone());
    tokio::spawn(dispatcher.run(shutdown.clone()));
    let sender =
        crate::webhooks::delivery::Sender::new(store.clone(), cfg.webhooks.clone(), metrics, audit, wake.clone())
            .map_err(|e| ServeError::Webhooks(e.to_string()))?;
    tokio::spawn(sender.run(shutdown.clone()));
    let guard =
        gantry_providers::fetch::GuardedClient::new(cfg.webhooks.allow.clone(), std::time::Duration::from_secs(1))
            .map_err(|e| ServeError::Webhooks(e.to_string()))?;
    Ok(crate::webhooks::Webhooks {
        store,
        cfg: cfg.webhooks.clone(),
        guard,
        wake,
    })
}

/// Starts the report submitter when the CyberTipline is configured (and an output store holds
/// the evidence it uploads); otherwise reports wait, queued.
fn start_submitter(
    queue: &QueueClient,
    cfg: &SchedulerConfig,
    enforcer: Option<&gantry_safety::Enforcer>,
    reports: &gantry_safety::Reports,
    shutdown: &CancellationToken,
) -> Result<(), ServeError> {
    let Some(t) = &cfg.safety.cybertipline else {
        tracing::info!("no [safety.cybertipline]: reports are kept, not submitted");
        return Ok(());
    };
    let Some(enforcer) = enforcer else {
        tracing::warn!(
            "[safety.cybertipline] without an output store (outputs): no evidence to upload, reports are not submitted"
        );
        return Ok(());
    };
    let var = |name: &str| std::env::var(name).unwrap_or_default();
    let tipline = gantry_safety::cybertipline::CyberTipline::new(gantry_safety::cybertipline::CyberTiplineConfig {
        url: t.url.clone(),
        username: var(&t.username_env),
        password: var(&t.password_env),
        reporter: (
            t.reporter_first_name.clone(),
            t.reporter_last_name.clone(),
            t.reporter_email.clone(),
        ),
    })
    .map_err(|e| ServeError::Safety(e.to_string()))?;
    let submitter =
        gantry_safety::Submitter::new(queue.connection(), reports.clone(), enforcer.vault().clone(), tipline);
    let every = Duration::from_secs(cfg.safety.report_every_secs.max(1));
    let stop = shutdown.clone();
    tracing::info!(url = %t.url, "reports are submitted to the CyberTipline");
    tokio::spawn(async move {
        loop {
            match submitter.pass(Duration::from_secs(300)).await {
                Ok(p) if p.submitted + p.retried + p.failed > 0 => {
                    tracing::info!(
                        submitted = p.submitted,
                        retried = p.retried,
                        failed = p.failed,
                        "report submitter pass"
                    )
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "report submitter pass failed"),
            }
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = stop.cancelled() => return,
            }
        }
    });
    Ok(())
}

impl Scheduler {
    /// Connects to `redis_url`, binds `cfg.listen`, and serves until `shutdown`.
    pub async fn start(cfg: SchedulerConfig, redis_url: &str, shutdown: CancellationToken) -> Result<Self, ServeError> {
        check_exposure(&cfg)?;
        let queue = QueueClient::connect(redis_url, cfg.retention.apply(QueueConfig::default())).await?;
        match queue.keys() {
            Some(k) => tracing::info!(key = k.current(), "job payloads sealed at rest (AES-256-GCM-SIV)"),
            None if cfg.require_data_keys => return Err(ServeError::NoDataKeys),
            None => tracing::warn!(
                "no data keys: prompts and reference images are stored in plain text (development configuration)"
            ),
        }
        let cfg = Arc::new(cfg);
        let loads = PoolLoads::default();
        loads.refresh(&queue, &cfg).await;
        tokio::spawn(
            loads
                .clone()
                .run(queue.clone(), cfg.clone(), Duration::from_secs(1), shutdown.clone()),
        );
        let metrics = Arc::new(SchedulerMetrics::default());
        let pools = cfg.pools.keys().filter_map(|p| gantry_queue::Pool::new(p).ok());
        let pools: Vec<gantry_queue::Pool> = pools.collect();
        let settler = CreditSettler::new(queue.connection(), pools.clone(), metrics.clone());
        tokio::spawn(settler.run(shutdown.clone()));
        let mover = crate::handoff::HandOffMover::new(queue.clone(), pools.clone());
        tokio::spawn(mover.run(shutdown.clone()));
        tokio::spawn(crate::pipelines::PipelineStore::new(queue.clone()).run_sweeper(
            pools,
            Duration::from_secs(cfg.pipeline_stuck_secs.max(1)),
            shutdown.clone(),
        ));
        let outputs = cfg
            .outputs
            .as_deref()
            .map(gantry_store::OutputStore::open)
            .transpose()?
            .map(|o| o.with_keys(queue.keys().cloned()));

        let audit = gantry_safety::AuditLog::new(
            queue.connection(),
            gantry_queue::retention::days(cfg.retention.audit_days),
        );
        let eraser = outputs.clone().map(|store| {
            crate::erasure::Eraser::new(
                queue.clone(),
                store,
                audit.clone(),
                Duration::from_secs(cfg.erasure_wait_secs),
            )
        });
        let reports = gantry_safety::Reports::new(queue.connection());
        let policies = gantry_safety::Policies::new(queue.connection());
        let enforcer = outputs
            .as_ref()
            .map(|store| -> Result<gantry_safety::Enforcer, ServeError> {
                let vault = gantry_safety::Vault::open(queue.connection(), store, cfg.safety.quarantine.as_deref())
                    .map_err(|e| ServeError::Safety(e.to_string()))?;
                Ok(gantry_safety::Enforcer::new(
                    store.clone(),
                    vault,
                    (
                        policies.clone(),
                        gantry_safety::ModerationLog::new(queue.connection(), (&cfg.retention).into()),
                        gantry_safety::TrustRegistry::new(queue.connection()),
                        reports.clone(),
                    ),
                    gantry_safety::Penalty::default(),
                ))
            })
            .transpose()?;
        start_submitter(&queue, &cfg, enforcer.as_ref(), &reports, &shutdown)?;
        let mut sweeper = crate::retention::Sweeper::new(cfg.retention.clone(), queue.connection(), outputs.clone())
            .with_metrics(metrics.clone());
        if let Some(e) = &enforcer {
            sweeper = sweeper.with_vault(e.vault().clone());
        }
        tokio::spawn(sweeper.run(Duration::from_secs(cfg.retention_sweep_secs.max(1)), shutdown.clone()));
        let hub = crate::events::EventHub::new(
            &queue,
            cfg.pools
                .keys()
                .filter_map(|p| gantry_queue::Pool::new(p).ok())
                .collect(),
            shutdown.clone(),
        );
        hub.start(&queue, cfg.events.clone());
        let webhooks = start_webhooks(&queue, &cfg, metrics.clone(), audit.clone(), &shutdown).await?;
        let admission = Admission::new(cfg.clone(), queue.clone(), loads.clone());
        let console_live =
            crate::console_feed::Live::start(queue.clone(), cfg.clone(), loads.clone(), shutdown.clone());
        let state = AppState {
            events: Some(hub),
            webhooks: Some(webhooks),
            eraser,
            outputs,
            keys: Arc::new(ApiKeys::from_config(&cfg)),
            admission: admission.clone(),
            pipelines: crate::pipelines::Pipelines::new(cfg.clone(), queue.clone(), admission),
            loads,
            metrics,
            hashlists: gantry_safety::HashListStore::new(queue.connection()),
            reviews: gantry_safety::ReviewQueue::new(queue.connection()),
            reports,
            policies,
            enforcer,
            trust: gantry_safety::TrustRegistry::new(queue.connection()),
            moderation: gantry_safety::ModerationLog::new(queue.connection(), (&cfg.retention).into()),
            audit: audit.clone(),
            dead_letters: crate::dead_letters::DeadLetters::new(queue.clone(), audit),
            console: crate::console_session::Sessions::new(queue.connection(), cfg.console.clone()),
            console_live,
            oidc: cfg.console.oidc.clone().map(crate::oidc::OidcClient::new).transpose()?,
            queue,
            cfg: cfg.clone(),
        };
        let (listener, addr) = bind(cfg.listen).await?;
        let (metrics_listener, metrics_addr) = bind(cfg.metrics_listen).await?;
        tracing::info!(
            "scheduler API on http://{addr} (OpenAPI at /openapi.json, console at /console), metrics on http://{metrics_addr}/metrics"
        );
        let limits = cfg.http.limits();
        let metrics = crate::http::serve(
            metrics_listener,
            metrics_router(state.clone()),
            limits,
            shutdown.clone(),
        );
        let api = crate::http::serve(listener, router(state), limits, shutdown);
        let task = tokio::spawn(async move {
            let (a, m) = tokio::join!(api, metrics);
            a.map_err(|e| ServeError::Http(addr, e))?;
            m.map_err(|e| ServeError::Http(metrics_addr, e))
        });
        Ok(Self {
            addr,
            metrics_addr,
            task,
        })
    }

    /// Waits until it has stopped.
    pub async fn wait(self) -> Result<(), ServeError> {
        match self.task.await {
            Ok(r) => r,
            Err(e) => Err(ServeError::Http(self.addr, std::io::Error::other(e.to_string()))),
        }
    }
}
