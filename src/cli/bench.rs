//! `gantry bench queue`: the no-op throughput benchmark, in the peers harness's format.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use futures::StreamExt;
use gantry_queue::{
    ClaimedJob, Consumer, ConsumerConfig, HandlerFuture, JobContext, JobKind, JobOutcome, NewJob, NoopPayload, Payload,
    Pool, QueueClient, QueueConfig,
};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

#[derive(Debug, clap::Subcommand)]
pub enum BenchCommand {
    /// Enqueue N no-op jobs in batches, then one worker claims and acks them with CONCURRENCY
    /// slots. Prints one JSON line (the ../shared/peers format) on stdout and the idle claim
    /// latency p50/p99 on stderr.
    Queue {
        /// Port of a redis-server on 127.0.0.1 (flushed by the caller).
        #[arg(long)]
        redis_port: u16,
        /// Jobs.
        n: usize,
        /// Worker concurrency.
        concurrency: usize,
        /// Idle claim latency samples.
        #[arg(long, default_value_t = 200)]
        latency_samples: usize,
        /// Enqueue batches in flight at once.
        #[arg(long, default_value_t = 4)]
        enqueue_parallel: usize,
    },
}

pub async fn run(c: BenchCommand) -> anyhow::Result<()> {
    let BenchCommand::Queue {
        redis_port,
        n,
        concurrency,
        latency_samples,
        enqueue_parallel,
    } = c;
    let url = format!("redis://127.0.0.1:{redis_port}");
    let r = queue_bench(&url, n, concurrency, latency_samples, enqueue_parallel).await?;
    println!(
        "{}",
        serde_json::json!({"peer": "gantry", "n": n, "concurrency": concurrency,
            "enqueue_per_s": r.enqueue_per_s.round(), "process_per_s": r.process_per_s.round()})
    );
    if let Some((p50, p99)) = r.idle_latency {
        eprintln!(
            "idle claim latency: p50 {:.3} ms, p99 {:.3} ms ({latency_samples} samples)",
            p50 * 1e3,
            p99 * 1e3
        );
    }
    Ok(())
}

/// What one queue benchmark run measured.
#[derive(Debug)]
pub struct QueueBench {
    pub enqueue_per_s: f64,
    pub process_per_s: f64,
    /// p50 and p99 seconds from push to claim by an idle worker.
    pub idle_latency: Option<(f64, f64)>,
}

pub async fn queue_bench(
    url: &str,
    n: usize,
    concurrency: usize,
    latency_samples: usize,
    enqueue_parallel: usize,
) -> anyhow::Result<QueueBench> {
    let client = QueueClient::connect(url, QueueConfig::default()).await?;
    let pool = Pool::new("bench")?;
    let job = || NewJob::new("bench", "bench", Payload::Noop(NoopPayload::default()));

    // 1. Enqueue N jobs in batches of 1,000.
    let started = Instant::now();
    let batches: Vec<usize> = (0..n).step_by(1000).map(|i| (n - i).min(1000)).collect();
    let mut results = futures::stream::iter(batches)
        .map(|size| {
            let client = client.clone();
            let pool = pool.clone();
            async move { client.enqueue_batch(&pool, (0..size).map(|_| job()).collect()).await }
        })
        .buffer_unordered(enqueue_parallel.max(1));
    while let Some(r) = results.next().await {
        r?;
    }
    let enqueue_per_s = n as f64 / started.elapsed().as_secs_f64();

    // 2. One worker with `concurrency` slots, timed from its start to the N-th ack.
    let mut cfg = ConsumerConfig::new(pool.clone(), vec![JobKind::Noop], "bench-worker");
    cfg.concurrency = concurrency.max(1);
    cfg.claim_batch = cfg.concurrency;
    let handler =
        |_job: ClaimedJob, _ctx: JobContext| -> HandlerFuture { Box::pin(async { JobOutcome::Succeeded(None) }) };
    let started = Instant::now();
    let consumer = Consumer::new(client.clone(), cfg.clone(), handler);
    let stats = consumer.stats();
    let stop = CancellationToken::new();
    let run = tokio::spawn(consumer.run(stop.clone()));
    while (stats.succeeded.load(Ordering::Relaxed) as usize) < n {
        if run.is_finished() {
            anyhow::bail!("worker stopped early");
        }
        tokio::time::sleep(Duration::from_micros(500)).await;
    }
    let process_per_s = n as f64 / started.elapsed().as_secs_f64();
    tracing::info!(
        claims = stats.claim_calls.load(Ordering::Relaxed),
        acks = stats.ack_calls.load(Ordering::Relaxed),
        "round trips for {n} jobs"
    );
    stop.cancel();
    run.await??;

    // 3. Idle claim latency: push one job at a time to an idle worker.
    let idle_latency = if latency_samples > 0 {
        let (tx, mut rx) = mpsc::unbounded_channel::<Instant>();
        let tx = Arc::new(tx);
        let handler = move |_job: ClaimedJob, _ctx: JobContext| -> HandlerFuture {
            let _ = tx.send(Instant::now());
            Box::pin(async { JobOutcome::Succeeded(None) })
        };
        let stop = CancellationToken::new();
        let run = tokio::spawn(Consumer::new(client.clone(), cfg, handler).run(stop.clone()));
        tokio::time::sleep(Duration::from_millis(100)).await;
        let mut samples = Vec::with_capacity(latency_samples);
        for _ in 0..latency_samples {
            tokio::time::sleep(Duration::from_millis(5)).await;
            let t0 = Instant::now();
            client.enqueue(&pool, job()).await?;
            let Some(t1) = tokio::time::timeout(Duration::from_secs(5), rx.recv())
                .await
                .ok()
                .flatten()
            else {
                anyhow::bail!("an idle worker did not claim a pushed job within 5 s");
            };
            samples.push(t1.duration_since(t0).as_secs_f64());
        }
        stop.cancel();
        run.await??;
        samples.sort_by(f64::total_cmp);
        let pct = |p: f64| samples[((samples.len() as f64 * p).ceil() as usize).clamp(1, samples.len()) - 1];
        Some((pct(0.50), pct(0.99)))
    } else {
        None
    };
    Ok(QueueBench {
        enqueue_per_s,
        process_per_s,
        idle_latency,
    })
}
