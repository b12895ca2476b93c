//! `gantry scheduler`.

use anyhow::Context;
use gantry_scheduler::{Scheduler, SchedulerConfig};
use tokio_util::sync::CancellationToken;

#[derive(Debug, clap::Args)]
pub struct SchedulerArgs {
    #[command(flatten)]
    redis: super::RedisArgs,
    /// Configuration file (TOML). Required unless --dev.
    #[arg(long, env = "GANTRY_SCHEDULER_CONFIG")]
    config: Option<String>,
    /// Development mode: the embedded demo configuration (its API keys are published in
    /// Gantry's repository, and it stores prompts in plain text without data keys) when no
    /// --config is given, served on loopback only.
    #[arg(long)]
    dev: bool,
    /// Print the embedded development configuration (a starting point for one's own) and exit.
    #[arg(long, exclusive = true)]
    print_dev_config: bool,
    /// Listen here instead of the configuration's address (port 0 picks a free one).
    #[arg(long, env = "GANTRY_LISTEN")]
    listen: Option<std::net::SocketAddr>,
    /// Serve /metrics here instead of the configuration's `metrics_listen` (port 0 picks one).
    #[arg(long, env = "GANTRY_METRICS_LISTEN")]
    metrics_listen: Option<std::net::SocketAddr>,
    /// The workers' output store (as their --outputs), so erasures delete outputs too;
    /// overrides the configuration's `outputs`.
    #[arg(long, env = "GANTRY_OUTPUTS")]
    outputs: Option<String>,
    /// A private or loopback address (`ip:port`) webhooks may be delivered to all the same
    /// (repeatable; added to the configuration's `webhooks.allow`). By default only public
    /// addresses receive webhooks.
    #[arg(long = "webhook-allow", env = "GANTRY_WEBHOOK_ALLOW", value_delimiter = ',')]
    webhook_allow: Vec<std::net::SocketAddr>,
    /// Where reports go: the CyberTipline API's base URL (overrides `safety.cybertipline.url`;
    /// the demo points it at `gantry mock-providers`' mock).
    #[arg(long, env = "GANTRY_CYBERTIPLINE_URL")]
    cybertipline_url: Option<String>,
    /// Where taken-down content is preserved (overrides `safety.quarantine`).
    #[arg(long, env = "GANTRY_QUARANTINE_STORE")]
    quarantine_store: Option<String>,
    /// The first webhook retry's delay in ms (overrides `webhooks.backoff_base_ms`; for drills).
    #[arg(long, env = "GANTRY_WEBHOOK_BACKOFF_MS")]
    webhook_backoff_ms: Option<u64>,
    /// Disable an endpoint after this many seconds of failed deliveries (overrides
    /// `webhooks.disable_after_secs`; for drills).
    #[arg(long, env = "GANTRY_WEBHOOK_DISABLE_AFTER_SECS")]
    webhook_disable_after_secs: Option<u64>,
}

/// What to say when there is no configuration.
const NO_CONFIG: &str = "no scheduler configuration: pass --config FILE (or set GANTRY_SCHEDULER_CONFIG). \
Start from `gantry scheduler --print-dev-config > scheduler.toml`, replace every API key hash with your own \
(`printf %s \"$KEY\" | sha256sum`), drop `require_data_keys = false` and set GANTRY_DATA_KEYS. \
To try Gantry on this machine only, run `gantry scheduler --dev` (loopback, published demo keys).";

pub async fn run(a: SchedulerArgs) -> anyhow::Result<()> {
    if a.print_dev_config {
        print!("{}", SchedulerConfig::demo_text());
        return Ok(());
    }
    let mut cfg = match (&a.config, a.dev) {
        (Some(path), _) => SchedulerConfig::load(path).map_err(super::refused)?,
        (None, true) => SchedulerConfig::demo(),
        (None, false) => return Err(super::UsageError(NO_CONFIG.into()).into()),
    };
    if let Some(l) = a.listen {
        cfg.listen = l;
    }
    if let Some(l) = a.metrics_listen {
        cfg.metrics_listen = l;
    }
    if a.dev {
        for (flag, addr) in [("--listen", cfg.listen), ("--metrics-listen", cfg.metrics_listen)] {
            if !addr.ip().is_loopback() {
                return Err(super::UsageError(format!(
                    "--dev serves loopback only, and {flag} resolves to {addr}; use a 127.0.0.1 address, or a configuration of your own without --dev"
                ))
                .into());
            }
        }
        tracing::warn!(
            listen = %cfg.listen,
            metrics = %cfg.metrics_listen,
            embedded = a.config.is_none(),
            "development mode: loopback only; the embedded configuration's API keys are published, never expose it"
        );
    }
    if let Some(o) = a.outputs {
        cfg.outputs = Some(o);
    }
    if let Some(url) = a.cybertipline_url {
        let Some(t) = cfg.safety.cybertipline.as_mut() else {
            return Err(super::UsageError(
                "--cybertipline-url: the configuration has no [safety.cybertipline] (the reporter's name and email)"
                    .into(),
            )
            .into());
        };
        t.url = url;
        t.validate().map_err(super::UsageError)?;
    }
    if let Some(q) = a.quarantine_store {
        cfg.safety.quarantine = Some(q);
    }
    cfg.webhooks.allow.extend(a.webhook_allow);
    if let Some(ms) = a.webhook_backoff_ms {
        cfg.webhooks.backoff_base_ms = ms;
    }
    if let Some(s) = a.webhook_disable_after_secs {
        cfg.webhooks.disable_after_secs = s;
    }
    cfg.retention = gantry_queue::RetentionPolicy::from_env().map_err(super::refused)?;
    let shutdown = CancellationToken::new();
    super::spawn_signal_handler(shutdown.clone()).context("installing signal handlers")?;
    let s = Scheduler::start(cfg, &a.redis.redis_url, shutdown)
        .await
        .context("starting the scheduler")?;
    // Two lines on stdout for scripts and tests that start it on port 0, written at once; a
    // reader that has gone away (it read the first line and closed the pipe) is no error.
    {
        use std::io::Write as _;
        let lines = format!("listening on http://{}\nmetrics on http://{}\n", s.addr, s.metrics_addr);
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(lines.as_bytes()).and_then(|()| out.flush());
    }
    s.wait().await?;
    Ok(())
}
