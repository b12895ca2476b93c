//! `gantry bench pipeline`: what a pipeline saves a platform. Side by side in one run, through
//! one in-process scheduler's API and one in-process worker (the queue's consumer with a no-op
//! executor): a 3-step pipeline of no-op jobs, submitted once and followed with
//! `wait_pipeline`, against the same three jobs chained by the client (submit, wait over SSE,
//! submit the next). Interleaved rounds; reported: p50 and p99 of first submit → last done for
//! each, and their ratio.

use std::time::{Duration, Instant};

use anyhow::Context;
use gantry_client::Client;
use gantry_queue::{Consumer, ConsumerConfig, JobKind, Pool, QueueClient, QueueConfig};
use gantry_scheduler::{Scheduler, SchedulerConfig};
use serde_json::json;
use tokio_util::sync::CancellationToken;

fn config() -> String {
    format!(
        r#"
listen = "127.0.0.1:0"
metrics_listen = "127.0.0.1:0"
require_data_keys = false
[plans.bench]
jobs_per_second = 100000
burst = 100000
[tenants.bench]
plan = "bench"
initial_credits = 1000000000
api_keys = [{{ sha256 = "{}", scopes = ["jobs:write", "jobs:read"] }}]
[prices]
noop = 1
[pools.cpu]
kinds = ["noop"]
"#,
        gantry_scheduler::auth::hash_key("bench-key")
    )
}

use super::bench::quantile as pct;

fn noop(user: &str) -> serde_json::Value {
    json!({"user": user, "kind": "noop", "payload": {}})
}

/// One pipeline of three steps, submit to done.
async fn as_pipeline(api: &Client) -> anyhow::Result<f64> {
    let body = json!({"steps": [
        {"name": "a", "user": "u", "kind": "noop", "payload": {}},
        {"name": "b", "needs": ["a"], "user": "u", "kind": "noop", "payload": {}},
        {"name": "c", "needs": ["b"], "user": "u", "kind": "noop", "payload": {}},
    ]});
    let t = Instant::now();
    let p = api.pipeline(&body).await?;
    let done = api.wait_pipeline(&p.id, Duration::from_secs(30)).await?;
    anyhow::ensure!(done.status == "succeeded", "pipeline {}: {}", p.id, done.status);
    Ok(t.elapsed().as_secs_f64() * 1e3)
}

/// The same three jobs, each submitted when the one before it is done (followed over SSE).
async fn chained(api: &Client) -> anyhow::Result<f64> {
    let t = Instant::now();
    for _ in 0..3 {
        let s = api.submit(&noop("u")).await?;
        let j = api.wait_over_sse(&s.id, Duration::from_secs(30)).await?;
        anyhow::ensure!(j.status == "succeeded", "job {}: {}", s.id, j.status);
    }
    Ok(t.elapsed().as_secs_f64() * 1e3)
}

pub async fn pipeline_bench(redis_port: u16, rounds: usize) -> anyhow::Result<()> {
    let url = format!("redis://127.0.0.1:{redis_port}");
    let cfg = SchedulerConfig::from_toml(&config()).context("bench config")?;
    let stop = CancellationToken::new();
    let sched = Scheduler::start(cfg, &url, stop.clone()).await?;
    let api = Client::new(&format!("http://{}", sched.addr), "bench-key")?;
    let queue = QueueClient::connect(&url, QueueConfig::default()).await?;
    let mut wcfg = ConsumerConfig::new(Pool::new("cpu")?, vec![JobKind::Noop], "bench-worker");
    wcfg.concurrency = 16;
    let worker = Consumer::new(queue, wcfg, |_job, _ctx| -> gantry_queue::HandlerFuture {
        Box::pin(async { gantry_queue::JobOutcome::Succeeded(Default::default()) })
    });
    let worker_stop = CancellationToken::new();
    let run = tokio::spawn(worker.run(worker_stop.clone()));
    // Warm up both paths (connections, the event hub's readers).
    as_pipeline(&api).await?;
    chained(&api).await?;
    let (mut pipe, mut chain) = (Vec::with_capacity(rounds), Vec::with_capacity(rounds));
    for _ in 0..rounds {
        pipe.push(as_pipeline(&api).await?);
        chain.push(chained(&api).await?);
    }
    let (p50, p99) = (pct(&mut pipe, 0.5), pct(&mut pipe, 0.99));
    let (c50, c99) = (pct(&mut chain, 0.5), pct(&mut chain, 0.99));
    println!("3 no-op steps, first submit -> last done, {rounds} rounds each, interleaved (ms):");
    println!("  pipeline (POST /v1/pipelines, wait_pipeline)        p50 {p50:>7.2}  p99 {p99:>7.2}");
    println!("  chained by the client (submit, wait over SSE) x3    p50 {c50:>7.2}  p99 {c99:>7.2}");
    println!("  pipeline / chained: p50 {:.2}x, p99 {:.2}x", p50 / c50, p99 / c99);
    worker_stop.cancel();
    let _ = run.await;
    stop.cancel();
    Ok(())
}
