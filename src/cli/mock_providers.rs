//! `gantry mock-providers`: the providers' APIs on loopback, for the demo and for trying a
//! fleet without provider accounts (`gantry worker --mock-providers URL`).

use anyhow::Context;
use gantry_mocks::{Faults, MockServer};

#[derive(Debug, clap::Args)]
pub struct MockProvidersArgs {
    /// Listen here, on loopback only (port 0 picks a free one; the first line on stdout says
    /// where).
    #[arg(long, default_value = "127.0.0.1:8090")]
    listen: std::net::SocketAddr,
    /// Share of calls answered 429 with Retry-After (0..1).
    #[arg(long, default_value_t = 0.0)]
    rate_429: f64,
    /// Share of calls answered 5xx (0..1).
    #[arg(long, default_value_t = 0.0)]
    rate_5xx: f64,
    /// The Retry-After sent with a 429, in seconds.
    #[arg(long, default_value_t = 1)]
    retry_after_secs: u64,
}

pub async fn run(a: MockProvidersArgs) -> anyhow::Result<()> {
    for (name, rate) in [("--rate-429", a.rate_429), ("--rate-5xx", a.rate_5xx)] {
        if !(0.0..=1.0).contains(&rate) {
            return Err(super::UsageError(format!("{name} must be within 0..=1")).into());
        }
    }
    if !a.listen.ip().is_loopback() {
        // The mocks answer anyone with made-up results and log every request they see.
        return Err(super::UsageError(format!(
            "mock providers serve loopback only; {} is not a loopback address",
            a.listen
        ))
        .into());
    }
    let server = MockServer::start(a.listen)
        .await
        .with_context(|| format!("listening on {}", a.listen))?;
    server.state().set_faults(Faults {
        rate_429: a.rate_429,
        rate_5xx: a.rate_5xx,
        retry_after_secs: a.retry_after_secs,
        latency_ms: 0,
    });
    // One line on stdout for scripts and tests that start it on port 0.
    println!("listening on {}", server.url());
    tokio::select! {
        _ = server.wait() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    Ok(())
}
