//! Command-line interface. Each subcommand lives in its own module.

mod bench;
mod bench_console;
mod bench_events;
mod bench_export;
#[cfg(feature = "dev-tools")]
mod bench_generate;
mod bench_outputs;
mod bench_pdq;
mod bench_pipeline;
mod bench_resize;
mod bench_scheduler;
mod bench_search;
mod bench_transcode;
#[cfg(feature = "dev-tools")]
mod demo;
mod dlq;
mod gpus;
mod hash;
mod hashlists;
mod jobs;
mod json_log;
mod keys;
mod media;
#[cfg(feature = "dev-tools")]
mod mock_providers;
mod pipelines;
mod queues;
mod redis_cost;
mod retention;
mod scheduler;
mod telemetry;
mod time;
mod users;
mod worker;
mod workers;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use gantry_queue::{QueueClient, QueueConfig, QueueError};

/// Gantry: a GPU-aware job-queue worker fleet.
#[derive(Debug, Parser)]
#[command(name = "gantry", version, about)]
pub struct Cli {
    /// More logging (repeat for more); RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Log format on stderr: `text` for people, `json` (one object per line, with the fields of
    /// the spans it happened in, e.g. the job's id) for log pipelines.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "GANTRY_LOG_FORMAT")]
    pub log_format: LogFormat,
    /// Send traces over OTLP to this collector (its base URL: http://127.0.0.1:4318 for
    /// OTLP/HTTP, http://127.0.0.1:4317 for OTLP/gRPC); no traces when unset.
    #[arg(long, global = true, env = "OTEL_EXPORTER_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,
    /// How traces reach the collector: `http/protobuf` (OTLP/HTTP, port 4318) or `grpc`
    /// (OTLP/gRPC, port 4317).
    #[arg(long, global = true, value_enum, default_value_t = OtlpProtocol::HttpProtobuf, env = "OTEL_EXPORTER_OTLP_PROTOCOL")]
    pub otlp_protocol: OtlpProtocol,
    #[command(subcommand)]
    command: Command,
}

pub use telemetry::{LogFormat, OtlpProtocol, Telemetry, TraceExport};

impl Cli {
    /// Where this process's traces go, if anywhere: `service.name` is `OTEL_SERVICE_NAME`, or
    /// `gantry-<command>` (`gantry-scheduler`, `gantry-worker`, …).
    pub fn trace_export(&self) -> Option<TraceExport> {
        let endpoint = self.otlp_endpoint.clone().filter(|e| !e.trim().is_empty())?;
        let service = std::env::var("OTEL_SERVICE_NAME").unwrap_or_else(|_| {
            let command = match &self.command {
                Command::Scheduler(_) => "scheduler",
                Command::Worker(_) => "worker",
                #[cfg(feature = "dev-tools")]
                Command::Demo(_) => "demo",
                #[cfg(feature = "dev-tools")]
                Command::MockProviders(_) => "mock-providers",
                _ => "cli",
            };
            format!("gantry-{command}")
        });
        Some(TraceExport {
            endpoint,
            protocol: self.otlp_protocol,
            service,
        })
    }
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the HTTP API: admission (credits, rate limits, trust, residency) and placement.
    Scheduler(scheduler::SchedulerArgs),
    /// Run a worker: claim and run jobs from one pool until SIGTERM, then drain.
    Worker(Box<worker::WorkerArgs>),
    /// The fleet registry: live workers and their GPUs.
    #[command(subcommand)]
    Workers(workers::WorkersCommand),
    /// Enqueue, show and cancel jobs.
    #[command(subcommand)]
    Jobs(jobs::JobsCommand),
    /// Pipelines: show one (every step's status, progress and credits), cancel one.
    #[command(subcommand)]
    Pipelines(pipelines::PipelinesCommand),
    /// Queue depths, in-flight counts and ages.
    #[command(subcommand)]
    Queues(queues::QueuesCommand),
    /// The dead-letter queues: list, show, replay.
    #[command(subcommand)]
    Dlq(dlq::DlqCommand),
    /// This machine's GPUs as a worker sees them (NVML, NVENC probe); no Redis needed.
    Gpus(gpus::GpusArgs),
    /// Benchmarks.
    #[command(subcommand)]
    Bench(bench::BenchCommand),
    /// A local fleet processing sample jobs end to end, with a summary.
    #[cfg(feature = "dev-tools")]
    Demo(demo::DemoArgs),
    /// The worker's media steps on local files: upscale, transcode, probe.
    #[command(subcommand)]
    Media(media::MediaCommand),
    /// Perceptual hashes (PDQ, vPDQ) of local files, and matching against a hash list.
    #[command(subcommand)]
    Hash(hash::HashCommand),
    /// The abuse hash lists in Redis that every worker matches against: load, list, remove.
    #[command(subcommand)]
    Hashlists(hashlists::HashListsCommand),
    /// Data keys: re-seal stored job payloads with the current key.
    #[command(subcommand)]
    Keys(keys::KeysCommand),
    /// Retention per data class: the report (what is kept, due, next) and the sweep.
    #[command(subcommand)]
    Retention(retention::RetentionCommand),
    /// Users' data: erasure on request.
    #[command(subcommand)]
    Users(users::UsersCommand),
    /// Mock generation providers on loopback (OpenAI, Gemini/Imagen/Veo, Kling, Ark, BFL).
    #[cfg(feature = "dev-tools")]
    MockProviders(mock_providers::MockProvidersArgs),
}

/// Connection options shared by the operator commands.
#[derive(Debug, clap::Args)]
pub struct RedisArgs {
    /// Redis: redis://host:port or redis+cluster://host:port,host:port,...
    #[arg(long, env = "REDIS_URL", default_value = "redis://127.0.0.1:6379")]
    pub redis_url: String,
}

impl RedisArgs {
    async fn client(&self) -> anyhow::Result<QueueClient> {
        let retention = gantry_queue::RetentionPolicy::from_env().map_err(refused)?;
        Ok(QueueClient::connect(&self.redis_url, retention.apply(QueueConfig::default())).await?)
    }

    /// A plain connection (hash lists, moderation, trust).
    async fn conn(&self) -> anyhow::Result<gantry_queue::RedisConn> {
        let target = gantry_queue::RedisTarget::parse(&self.redis_url)?;
        Ok(gantry_queue::RedisConn::connect(&target, None).await?)
    }

    /// The audit log, kept as long as `GANTRY_RETENTION` says.
    async fn audit_log(&self) -> anyhow::Result<gantry_safety::AuditLog> {
        let retention = gantry_queue::RetentionPolicy::from_env().map_err(refused)?;
        let keep = gantry_queue::retention::days(retention.audit_days);
        Ok(gantry_safety::AuditLog::new(self.conn().await?, keep))
    }

    /// Writes an operator's change to the audit log, naming the OS user who ran the CLI.
    async fn audit(&self, action: &str, target: &str, details: serde_json::Value) -> anyhow::Result<()> {
        let entry = gantry_safety::AuditEntry::new(cli_actor(), action, target).details(details);
        self.audit_log()
            .await?
            .record(&entry)
            .await
            .context("writing the audit log")?;
        Ok(())
    }
}

/// Who the audit log names for a CLI change: `cli/<the OS user>` (the one behind `sudo`).
fn cli_actor() -> String {
    let user = std::env::var("SUDO_USER")
        .or_else(|_| std::env::var("USER"))
        .unwrap_or_else(|_| "unknown".into());
    format!("cli/{user}")
}

/// The pool named by `--pool`, or every pool that has had a job or a worker.
async fn pools_or_all(client: &QueueClient, pool: Option<&str>) -> anyhow::Result<Vec<gantry_queue::Pool>> {
    Ok(match pool {
        Some(p) => vec![gantry_queue::Pool::new(p)?],
        None => client.pools().await?,
    })
}

/// 2 for input the queue refused (usage errors), 1 for everything else.
/// First SIGTERM/SIGINT: drain. Second: exit at once (leases expire and are reaped elsewhere).
pub fn spawn_signal_handler(shutdown: tokio_util::sync::CancellationToken) -> std::io::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::spawn(async move {
        for n in 0.. {
            tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
            if n == 0 {
                tracing::info!("signal received: draining (send again to exit at once)");
                shutdown.cancel();
            } else {
                tracing::warn!("second signal: exiting now");
                std::process::exit(130);
            }
        }
    });
    Ok(())
}

/// A command line the CLI refuses (exit status 2, like other refused input).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// Refused input that keeps the error that refused it, so its chain reaches the log
/// (`{:#}`) and the exit status is 2, like [`UsageError`].
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct Refused(Box<dyn std::error::Error + Send + Sync>);

/// Wraps `e` as [`Refused`] input: `.map_err(refused)?`.
pub fn refused(e: impl std::error::Error + Send + Sync + 'static) -> Refused {
    Refused(Box::new(e))
}

pub fn exit_code(e: &anyhow::Error) -> u8 {
    if e.downcast_ref::<gantry_queue::ValidationError>().is_some()
        || e.downcast_ref::<UsageError>().is_some()
        || e.downcast_ref::<Refused>().is_some()
        || e.downcast_ref::<gantry_worker::gpu::fake::FakeSpecError>().is_some()
        || matches!(
            e.downcast_ref::<gantry_scheduler::ServeError>(),
            Some(gantry_scheduler::ServeError::LoopbackOnly { .. } | gantry_scheduler::ServeError::NoDataKeys)
        )
    {
        return 2;
    }
    match e.downcast_ref::<QueueError>() {
        Some(
            QueueError::Invalid(_)
            | QueueError::NotFound(_)
            | QueueError::AlreadyFinished { .. }
            | QueueError::NotDeadLettered(_)
            | QueueError::UnknownCursor(_),
        ) => 2,
        _ => 1,
    }
}

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Scheduler(a) => scheduler::run(a).await,
        Command::Worker(a) => worker::run(*a).await,
        Command::Workers(c) => workers::run(c).await,
        Command::Jobs(c) => jobs::run(c).await,
        Command::Pipelines(c) => pipelines::run(c).await,
        Command::Queues(c) => queues::run(c).await,
        Command::Dlq(c) => dlq::run(c).await,
        Command::Gpus(a) => gpus::run(a).await,
        Command::Bench(c) => bench::run(c).await,
        #[cfg(feature = "dev-tools")]
        Command::Demo(mut a) => {
            a.otlp_endpoint = cli.otlp_endpoint.clone();
            a.otlp_protocol = cli.otlp_protocol;
            demo::run(a).await
        }
        #[cfg(feature = "dev-tools")]
        Command::MockProviders(a) => mock_providers::run(a).await,
        Command::Media(c) => media::run(c).await,
        Command::Hash(c) => hash::run(c).await,
        Command::Hashlists(c) => hashlists::run(c).await,
        Command::Keys(c) => keys::run(c).await,
        Command::Retention(c) => retention::run(c).await,
        Command::Users(c) => users::run(c).await,
    }
}
