//! `gantry scheduler`.

use anyhow::Context;
use gantry_scheduler::{Scheduler, SchedulerConfig};
use tokio_util::sync::CancellationToken;

#[derive(Debug, clap::Args)]
pub struct SchedulerArgs {
    #[command(flatten)]
    redis: super::RedisArgs,
    /// Configuration file (TOML); the embedded demo configuration when absent.
    #[arg(long, env = "GANTRY_SCHEDULER_CONFIG")]
    config: Option<String>,
    /// Listen here instead of the configuration's address (port 0 picks a free one).
    #[arg(long, env = "GANTRY_LISTEN")]
    listen: Option<std::net::SocketAddr>,
    /// The workers' output store (as their --outputs), so erasures delete outputs too;
    /// overrides the configuration's `outputs`.
    #[arg(long, env = "GANTRY_OUTPUTS")]
    outputs: Option<String>,
}

pub async fn run(a: SchedulerArgs) -> anyhow::Result<()> {
    let mut cfg = match &a.config {
        Some(path) => SchedulerConfig::load(path).map_err(|e| super::UsageError(e.to_string()))?,
        None => SchedulerConfig::demo(),
    };
    if let Some(l) = a.listen {
        cfg.listen = l;
    }
    if let Some(o) = a.outputs {
        cfg.outputs = Some(o);
    }
    cfg.retention = gantry_queue::RetentionPolicy::from_env().map_err(|e| super::UsageError(e.to_string()))?;
    let shutdown = CancellationToken::new();
    super::spawn_signal_handler(shutdown.clone()).context("installing signal handlers")?;
    let s = Scheduler::start(cfg, &a.redis.redis_url, shutdown)
        .await
        .context("starting the scheduler")?;
    // One line on stdout for scripts and tests that start it on port 0.
    println!("listening on http://{}", s.addr);
    s.wait().await?;
    Ok(())
}
