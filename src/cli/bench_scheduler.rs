//! `gantry bench scheduler`: what admission costs. On one redis-server, side by side: raw
//! `enqueue_batch` of 1,000 no-op jobs per call against `POST /v1/jobs:batch` of 1,000 through an
//! in-process scheduler (auth, validation, residency, pricing, placement, trust, rate limit,
//! credit reservation, enqueue), interleaved over rounds; then single `POST /v1/jobs` sent
//! open-loop at a fixed rate, with latency percentiles.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use gantry_client::Client;
use gantry_queue::{NewJob, NoopPayload, Payload, Pool, QueueClient, QueueConfig};
use gantry_scheduler::{Scheduler, SchedulerConfig};
use tokio_util::sync::CancellationToken;

const BATCH: usize = 1000;

fn config(listen: &str) -> String {
    format!(
        r#"
listen = "{listen}"
# the benchmark measures admission, not sealing
require_data_keys = false
[plans.bench]
jobs_per_second = 10000000
burst = 10000000
[tenants.bench]
plan = "bench"
initial_credits = 1000000000000
api_keys = [{{ sha256 = "{}", scopes = ["jobs:write", "jobs:read"] }}]
[prices]
noop = 1
[pools.cpu]
kinds = ["noop"]
"#,
        gantry_scheduler::auth::hash_key("bench-key")
    )
}

use super::bench::median;

pub async fn scheduler_bench(
    redis_port: u16,
    batches: usize,
    rounds: usize,
    rate: u32,
    secs: u64,
) -> anyhow::Result<()> {
    let url = format!("redis://127.0.0.1:{redis_port}");
    let cfg = SchedulerConfig::from_toml(&config("127.0.0.1:0")).context("bench config")?;
    let stop = CancellationToken::new();
    let sched = Scheduler::start(cfg, &url, stop.clone()).await?;
    let api = Client::new(&format!("http://{}", sched.addr), "bench-key")?;
    let queue = QueueClient::connect(&url, QueueConfig::default()).await?;
    let pool = Pool::new("raw")?;
    let raw_job = || NewJob::new("bench", "u", Payload::Noop(NoopPayload::default()));
    let api_batch: Vec<_> = (0..BATCH)
        .map(|_| serde_json::json!({"user": "u", "kind": "noop", "payload": {}}))
        .collect();

    let (mut raw, mut admitted) = (Vec::new(), Vec::new());
    for _ in 0..rounds.max(1) {
        let t = Instant::now();
        for _ in 0..batches {
            queue
                .enqueue_batch(&pool, (0..BATCH).map(|_| raw_job()).collect())
                .await?;
        }
        raw.push((batches * BATCH) as f64 / t.elapsed().as_secs_f64());
        let t = Instant::now();
        for _ in 0..batches {
            api.submit_batch(&api_batch).await?;
        }
        admitted.push((batches * BATCH) as f64 / t.elapsed().as_secs_f64());
    }
    let (raw, admitted) = (median(raw), median(admitted));
    println!("raw enqueue_batch:        {raw:>10.0} jobs/s");
    println!("POST /v1/jobs:batch:      {admitted:>10.0} jobs/s (admission + enqueue)");
    println!("admission cost per job:   {:.2}x the raw enqueue", raw / admitted);

    // Single jobs, open loop: one request every 1/rate s whatever the answers take.
    let single = serde_json::json!({"user": "u", "kind": "noop", "payload": {}});
    let latencies = Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(rate.max(1))));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let total = u64::from(rate) * secs;
    let mut tasks = tokio::task::JoinSet::new();
    let mut errors = 0u64;
    for _ in 0..total {
        tick.tick().await;
        let (api, single, latencies) = (api.clone(), single.clone(), latencies.clone());
        tasks.spawn(async move {
            let t = Instant::now();
            let r = api.submit(&single).await;
            if let Ok(mut l) = latencies.lock() {
                l.push(t.elapsed().as_secs_f64());
            }
            r.is_ok()
        });
    }
    while let Some(ok) = tasks.join_next().await {
        if !matches!(ok, Ok(true)) {
            errors += 1;
        }
    }
    let mut l = latencies.lock().map(|l| l.clone()).unwrap_or_default();
    l.sort_by(f64::total_cmp);
    let pct = |p: f64| {
        l.get(((l.len() as f64 * p) as usize).min(l.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0.0)
            * 1e3
    };
    println!(
        "POST /v1/jobs at {rate}/s for {secs} s: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms, {errors} errors of {total}",
        pct(0.5),
        pct(0.99),
        pct(1.0)
    );
    stop.cancel();
    Ok(())
}
