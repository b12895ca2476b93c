//! `gantry bench queue`: the no-op throughput benchmark, in the peers harness's format.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use futures::StreamExt;
use gantry_queue::{
    ClaimedJob, Consumer, ConsumerConfig, ConsumerStats, HandlerFuture, JobContext, JobKind, JobOutcome, NewJob,
    NoopPayload, Payload, Pool, QueueClient, QueueConfig,
};
use tokio::sync::mpsc;

use super::redis_cost::{CostPerJob, InfoSnapshot, per_job};
use tokio_util::sync::CancellationToken;

/// The `q` quantile of `v` (sorted in place), nearest rank; 0 for none.
pub(super) fn quantile(v: &mut [f64], q: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        return 0.0;
    }
    v[((v.len() as f64 - 1.0) * q).round() as usize]
}

/// The median of side-by-side samples (0 for none), shared by every benchmark.
pub(super) fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

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
    /// The worker runtime against the queue core: N no-op jobs processed by the queue's own
    /// in-process consumer, then N more by a `gantry worker` process (executors, registry,
    /// metrics, inventory), on the same redis-server, both watched the same way (from the first
    /// finished job to the last); prints both rates, their ratio, and the worker's start-up.
    Worker {
        /// Port of a redis-server on 127.0.0.1.
        #[arg(long)]
        redis_port: u16,
        /// Jobs per round.
        n: usize,
        /// Concurrency of both.
        concurrency: usize,
        /// Rounds (each runs both, interleaved); the median is reported.
        #[arg(long, default_value_t = 3)]
        rounds: usize,
    },
    /// The transcode path against the `ffmpeg` CLI with identical settings, interleaved.
    Transcode {
        /// Seconds of 1080p30 input.
        #[arg(long, default_value_t = 10)]
        secs: u32,
        /// Rounds; the medians are compared.
        #[arg(long, default_value_t = 3)]
        rounds: usize,
        /// x264 preset.
        #[arg(long, default_value = "veryfast")]
        preset: String,
        /// Output height.
        #[arg(long, default_value_t = 720)]
        height: u32,
    },
    /// A 1024x1024 -> 2048x2048 RGBA upscale through the codecs against the `image` crate's
    /// own resize, side by side; then thumbnails per second on one core.
    Resize {
        /// Rounds; the medians are compared.
        #[arg(long, default_value_t = 5)]
        rounds: usize,
        /// Seconds of thumbnailing.
        #[arg(long, default_value_t = 3)]
        thumb_secs: u64,
    },
    /// PDQ hashes per second per core on 1024x1024 images, beside the reference C++ (the
    /// `pdqhash` PyPI package, through PYTHON) on the same kind of pixels, interleaved.
    Pdq {
        /// A Python with `pdqhash` and `numpy` (benches/pdq.sh makes one).
        #[arg(long, default_value = "python3")]
        python: String,
        /// Images per round.
        #[arg(long, default_value_t = 200)]
        images: usize,
        /// Rounds; the medians are compared.
        #[arg(long, default_value_t = 3)]
        rounds: usize,
    },
    /// The PDQ multi-index over N random hashes: build time, one query, the 8 dihedral variants
    /// of an image, against a linear scan of the same hashes.
    PdqIndex {
        /// Hashes indexed.
        #[arg(long, default_value_t = 10_000_000)]
        hashes: usize,
        /// Queries timed.
        #[arg(long, default_value_t = 1000)]
        queries: usize,
        /// Queries for the linear-scan baseline.
        #[arg(long, default_value_t = 10)]
        scan_queries: usize,
    },
    /// One worker holding N poll-mode generate jobs in flight (mock providers): its CPU and
    /// RSS, side by side with the same worker holding N sleeping no-op jobs.
    #[cfg(feature = "dev-tools")]
    Generate {
        /// Port of a redis-server on 127.0.0.1.
        #[arg(long)]
        redis_port: u16,
        /// Jobs in flight.
        #[arg(long, default_value_t = 500)]
        jobs: usize,
        /// Seconds each task stays pending at the provider.
        #[arg(long, default_value_t = 25)]
        hold_secs: u64,
        /// Seconds of measurement once all are in flight.
        #[arg(long, default_value_t = 10)]
        window_secs: u64,
    },
    /// SSE fan-out: CLIENTS event streams on a `gantry scheduler` process while events arrive
    /// at RATE per second, against a plain XREAD reader on the same stream; latency and the
    /// scheduler's memory per client.
    Events {
        /// Port of a redis-server on 127.0.0.1.
        #[arg(long)]
        redis_port: u16,
        /// Concurrent SSE clients.
        #[arg(long, default_value_t = 1000)]
        clients: usize,
        /// Events per second.
        #[arg(long, default_value_t = 2000)]
        rate: u32,
        /// Seconds measured (after a 2 s warm-up).
        #[arg(long, default_value_t = 10)]
        secs: u64,
    },
    /// One user's data export at scale: the export job's streaming archive beside a naive
    /// exporter that holds every document in memory (jobs per second, peak memory).
    Export {
        /// Port of a redis-server on 127.0.0.1 (fresh: the benchmark fills it).
        #[arg(long)]
        redis_port: u16,
        /// Jobs of the large user (the small one has a tenth).
        #[arg(long, default_value_t = 100_000)]
        jobs: usize,
        /// One job in this many succeeded with a 4 KiB output.
        #[arg(long, default_value_t = 100)]
        outputs_every: usize,
    },
    /// What sealing outputs at rest costs: a large output written, read whole and by ranges,
    /// and small images, plain beside sealed in one run.
    Outputs {
        /// The large output's size, MiB.
        #[arg(long, default_value_t = 256)]
        video_mib: u64,
        /// Range reads of 64 KiB at scattered offsets.
        #[arg(long, default_value_t = 1000)]
        ranges: usize,
        /// Images of 256 KiB written and read.
        #[arg(long, default_value_t = 200)]
        images: usize,
    },
    /// Job search over a large store: memory per job of the indexes (beside one sorted set per
    /// tenant) and one page's latency per filter (beside reading its records directly), then
    /// through `GET /v1/jobs`.
    Search {
        /// Port of a redis-server on 127.0.0.1 (fresh: the benchmark fills it).
        #[arg(long)]
        redis_port: u16,
        /// Jobs stored.
        #[arg(long, default_value_t = 1_000_000)]
        jobs: usize,
        /// Pages measured per filter.
        #[arg(long, default_value_t = 200)]
        samples: usize,
    },
    /// The operator console at scale: each page's time over loopback HTTP (beside the admin
    /// API's JSON for the same data), and the CPU of open consoles' live overviews.
    Console {
        /// Port of a redis-server on 127.0.0.1 (fresh: the benchmark fills it).
        #[arg(long)]
        redis_port: u16,
        /// Jobs stored.
        #[arg(long, default_value_t = 1_000_000)]
        jobs: usize,
        /// Of them, dead-lettered.
        #[arg(long, default_value_t = 100_000)]
        dead: usize,
        /// Workers in the fleet registry.
        #[arg(long, default_value_t = 500)]
        workers: usize,
        /// Requests per page.
        #[arg(long, default_value_t = 100)]
        samples: usize,
        /// Consoles following the overview.
        #[arg(long, default_value_t = 20)]
        consoles: usize,
        /// Seconds of each CPU measurement.
        #[arg(long, default_value_t = 20)]
        secs: u64,
    },
    /// A 3-step pipeline of no-op jobs against the same three jobs chained by the client, both
    /// through the API with one worker: first submit to last done, p50 and p99.
    Pipeline {
        /// Port of a redis-server on 127.0.0.1.
        #[arg(long)]
        redis_port: u16,
        /// Rounds of each (interleaved).
        #[arg(long, default_value_t = 200)]
        rounds: usize,
    },
    /// Admission against raw enqueue: batches of 1,000 through `POST /v1/jobs:batch` of an
    /// in-process scheduler vs `enqueue_batch`, interleaved; then single `POST /v1/jobs`
    /// open-loop at RATE per second with latency percentiles.
    Scheduler {
        /// Port of a redis-server on 127.0.0.1.
        #[arg(long)]
        redis_port: u16,
        /// Batches of 1,000 per round and side.
        #[arg(long, default_value_t = 20)]
        batches: usize,
        /// Rounds; the median is reported.
        #[arg(long, default_value_t = 3)]
        rounds: usize,
        /// Single-job requests per second.
        #[arg(long, default_value_t = 500)]
        rate: u32,
        /// Seconds of single-job requests.
        #[arg(long, default_value_t = 10)]
        secs: u64,
    },
}

pub async fn run(c: BenchCommand) -> anyhow::Result<()> {
    let (redis_port, n, concurrency, latency_samples, enqueue_parallel) = match c {
        BenchCommand::Queue {
            redis_port,
            n,
            concurrency,
            latency_samples,
            enqueue_parallel,
        } => (redis_port, n, concurrency, latency_samples, enqueue_parallel),
        BenchCommand::Worker {
            redis_port,
            n,
            concurrency,
            rounds,
        } => {
            return worker_bench(redis_port, n, concurrency, rounds).await;
        }
        BenchCommand::Transcode {
            secs,
            rounds,
            preset,
            height,
        } => {
            return tokio::task::spawn_blocking(move || {
                super::bench_transcode::transcode_bench(secs, rounds, &preset, height)
            })
            .await?;
        }
        BenchCommand::Pdq { python, images, rounds } => {
            return tokio::task::spawn_blocking(move || super::bench_pdq::pdq_bench(&python, images, rounds)).await?;
        }
        BenchCommand::PdqIndex {
            hashes,
            queries,
            scan_queries,
        } => {
            return tokio::task::spawn_blocking(move || super::bench_pdq::index_bench(hashes, queries, scan_queries))
                .await?;
        }
        BenchCommand::Resize { rounds, thumb_secs } => {
            return tokio::task::spawn_blocking(move || super::bench_resize::resize_bench(rounds, thumb_secs)).await?;
        }
        #[cfg(feature = "dev-tools")]
        BenchCommand::Generate {
            redis_port,
            jobs,
            hold_secs,
            window_secs,
        } => {
            return super::bench_generate::generate_bench(redis_port, jobs, hold_secs, window_secs).await;
        }
        BenchCommand::Events {
            redis_port,
            clients,
            rate,
            secs,
        } => {
            return super::bench_events::events_bench(redis_port, clients, rate, secs).await;
        }
        BenchCommand::Pipeline { redis_port, rounds } => {
            return super::bench_pipeline::pipeline_bench(redis_port, rounds).await;
        }
        BenchCommand::Console {
            redis_port,
            jobs,
            dead,
            workers,
            samples,
            consoles,
            secs,
        } => {
            return super::bench_console::console_bench(redis_port, jobs, dead, workers, samples, consoles, secs).await;
        }
        BenchCommand::Export {
            redis_port,
            jobs,
            outputs_every,
        } => {
            return super::bench_export::export_bench(redis_port, jobs, outputs_every).await;
        }
        BenchCommand::Outputs {
            video_mib,
            ranges,
            images,
        } => {
            return super::bench_outputs::outputs_bench(video_mib, ranges, images).await;
        }
        BenchCommand::Search {
            redis_port,
            jobs,
            samples,
        } => {
            return super::bench_search::search_bench(redis_port, jobs, samples).await;
        }
        BenchCommand::Scheduler {
            redis_port,
            batches,
            rounds,
            rate,
            secs,
        } => {
            return super::bench_scheduler::scheduler_bench(redis_port, batches, rounds, rate, secs).await;
        }
    };
    let url = format!("redis://127.0.0.1:{redis_port}");
    let r = queue_bench(&url, n, concurrency, latency_samples, enqueue_parallel).await?;
    println!(
        "{}",
        serde_json::json!({"peer": "gantry", "n": n, "concurrency": concurrency,
            "enqueue_per_s": r.enqueue_per_s.round(), "process_per_s": r.process_per_s.round(),
            "redis_per_job": {"enqueue": r.enqueue_cost, "process": r.process_cost}})
    );
    let (e, p) = (&r.enqueue_cost, &r.process_cost);
    eprintln!(
        "redis per job: {:.1} us script ({:.1} enqueue + {:.1} claim/ack), {:.2} scripts, {:.1} commands, {:.1} us server cpu; {:.0} bytes per waiting job",
        e.script_us + p.script_us,
        e.script_us,
        p.script_us,
        e.scripts + p.scripts,
        e.commands + p.commands,
        e.cpu_us + p.cpu_us,
        e.memory_bytes
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
    /// What Redis spent per job enqueuing (its memory growth: bytes per waiting job).
    pub enqueue_cost: CostPerJob,
    /// What Redis spent per job claiming and acking.
    pub process_cost: CostPerJob,
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

    let info = client.connection();
    // 1. Enqueue N jobs in batches of 1,000.
    let s0 = InfoSnapshot::take(&info).await?;
    let enqueue_per_s = enqueue_noops(&client, &pool, n, enqueue_parallel).await?;
    let s1 = InfoSnapshot::take(&info).await?;
    // 2. One worker with `concurrency` slots, timed from its start to the N-th ack.
    let (process_per_s, stats) = consume_noops(&client, &pool, n, concurrency).await?;
    let s2 = InfoSnapshot::take(&info).await?;
    let (enqueue_cost, process_cost) = (per_job(&s0, &s1, n), per_job(&s1, &s2, n));
    tracing::info!(
        claims = stats.claim_calls.load(Ordering::Relaxed),
        acks = stats.ack_calls.load(Ordering::Relaxed),
        "round trips for {n} jobs"
    );

    // 3. Idle claim latency: push one job at a time to an idle worker.
    let idle_latency = if latency_samples > 0 {
        let (tx, mut rx) = mpsc::unbounded_channel::<Instant>();
        let tx = Arc::new(tx);
        let handler = move |_job: ClaimedJob, _ctx: JobContext| -> HandlerFuture {
            let _ = tx.send(Instant::now());
            Box::pin(async { JobOutcome::Succeeded(Default::default()) })
        };
        let stop = CancellationToken::new();
        let run = tokio::spawn(
            Consumer::new(client.clone(), noop_consumer_config(&pool, concurrency), handler).run(stop.clone()),
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
        let mut samples = Vec::with_capacity(latency_samples);
        for _ in 0..latency_samples {
            tokio::time::sleep(Duration::from_millis(5)).await;
            let t0 = Instant::now();
            client.enqueue(&pool, noop_job()).await?;
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
        enqueue_cost,
        process_cost,
        idle_latency,
    })
}

fn noop_job() -> NewJob {
    NewJob::new("bench", "bench", Payload::Noop(NoopPayload::default()))
}

/// The queue core's handler in the benchmarks: every job succeeds at once.
fn noop_handler(_job: ClaimedJob, _ctx: JobContext) -> HandlerFuture {
    Box::pin(async { JobOutcome::Succeeded(Default::default()) })
}

fn noop_consumer_config(pool: &Pool, concurrency: usize) -> ConsumerConfig {
    let mut cfg = ConsumerConfig::new(pool.clone(), vec![JobKind::Noop], "bench-worker");
    cfg.concurrency = concurrency.max(1);
    cfg.claim_batch = cfg.concurrency;
    cfg
}

/// Enqueues `n` no-op jobs in batches of 1,000, `parallel` batches in flight; returns jobs/s.
async fn enqueue_noops(client: &QueueClient, pool: &Pool, n: usize, parallel: usize) -> anyhow::Result<f64> {
    let started = Instant::now();
    let batches: Vec<usize> = (0..n).step_by(1000).map(|i| (n - i).min(1000)).collect();
    let mut results = futures::stream::iter(batches)
        .map(|size| {
            let client = client.clone();
            let pool = pool.clone();
            async move {
                client
                    .enqueue_batch(&pool, (0..size).map(|_| noop_job()).collect())
                    .await
            }
        })
        .buffer_unordered(parallel.max(1));
    while let Some(r) = results.next().await {
        r?;
    }
    Ok(n as f64 / started.elapsed().as_secs_f64())
}

/// The queue core alone: its in-process consumer with a no-op handler, timed from its start to
/// the `n`-th ack. Returns jobs/s and the consumer's counters.
async fn consume_noops(
    client: &QueueClient,
    pool: &Pool,
    n: usize,
    concurrency: usize,
) -> anyhow::Result<(f64, Arc<ConsumerStats>)> {
    let started = Instant::now();
    let consumer = Consumer::new(client.clone(), noop_consumer_config(pool, concurrency), noop_handler);
    let stats = consumer.stats();
    let stop = CancellationToken::new();
    let run = tokio::spawn(consumer.run(stop.clone()));
    while (stats.succeeded.load(Ordering::Relaxed) as usize) < n {
        if run.is_finished() {
            anyhow::bail!("worker stopped early");
        }
        tokio::time::sleep(Duration::from_micros(500)).await;
    }
    let per_s = n as f64 / started.elapsed().as_secs_f64();
    stop.cancel();
    run.await??;
    Ok((per_s, stats))
}

async fn open_jobs(client: &QueueClient, pool: &Pool) -> anyhow::Result<u64> {
    let s = client.stats(pool, &[JobKind::Noop]).await?.remove(0);
    Ok(s.waiting_total() + s.in_flight + s.delayed)
}

/// How a pool drained, watched from outside through its stats (the same way for the in-process
/// consumer and the worker process): the rate from the first finished job to the last, and how
/// long after `started` that first job finished (start-up: connecting, registering, the first
/// claim).
struct Drain {
    per_s: f64,
    startup: Duration,
}

async fn watch_drain(client: &QueueClient, pool: &Pool, n: usize, started: Instant) -> anyhow::Result<Drain> {
    let (first, left) = loop {
        let open = open_jobs(client, pool).await?;
        if open < n as u64 {
            break (Instant::now(), open);
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    };
    while open_jobs(client, pool).await? > 0 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    Ok(Drain {
        per_s: left as f64 / first.elapsed().as_secs_f64(),
        startup: first - started,
    })
}

async fn worker_bench(port: u16, n: usize, concurrency: usize, rounds: usize) -> anyhow::Result<()> {
    let url = format!("redis://127.0.0.1:{port}");
    let client = QueueClient::connect(&url, QueueConfig::default()).await?;
    let (mut core, mut worker, mut spawn_to_done, mut startup) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for round in 1..=rounds.max(1) {
        // Queue core: the in-process consumer with a no-op handler.
        let pool = Pool::new(&format!("bench-core-{round}"))?;
        enqueue_noops(&client, &pool, n, 4).await?;
        let started = Instant::now();
        let consumer = Consumer::new(client.clone(), noop_consumer_config(&pool, concurrency), noop_handler);
        let stop = CancellationToken::new();
        let run = tokio::spawn(consumer.run(stop.clone()));
        let drained = watch_drain(&client, &pool, n, started).await?;
        stop.cancel();
        run.await??;
        core.push(drained.per_s);

        // The worker runtime: a `gantry worker` process, watched the same way.
        let pool = Pool::new(&format!("bench-worker-{round}"))?;
        enqueue_noops(&client, &pool, n, 4).await?;
        let started = Instant::now();
        let mut child = tokio::process::Command::new(std::env::current_exe()?)
            .args([
                "worker",
                "--redis-url",
                &url,
                "--pool",
                pool.as_str(),
                "--kinds",
                "noop",
                "--gpus",
                "none",
            ])
            .args(["--concurrency", &concurrency.to_string(), "--worker-id", "bench-worker"])
            .env("RUST_LOG", "warn")
            .kill_on_drop(true)
            .spawn()?;
        let drained = watch_drain(&client, &pool, n, started).await?;
        spawn_to_done.push(n as f64 / started.elapsed().as_secs_f64());
        worker.push(drained.per_s);
        startup.push(drained.startup.as_secs_f64() * 1000.0);
        child.start_kill()?;
        let _ = child.wait().await;
        eprintln!(
            "round {round}: queue core {:.0}/s, worker {:.0}/s ({:.0}/s counting its {:.0} ms start-up)",
            core[round - 1],
            worker[round - 1],
            spawn_to_done[round - 1],
            startup[round - 1]
        );
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (c, w) = (median(&mut core), median(&mut worker));
    let (whole, up) = (median(&mut spawn_to_done), median(&mut startup));
    println!(
        "{}",
        serde_json::json!({"n": n, "concurrency": concurrency, "queue_core_per_s": c.round(),
            "worker_per_s": w.round(), "worker_to_core_ratio": (w / c * 100.0).round() / 100.0,
            "worker_spawn_to_done_per_s": whole.round(), "worker_startup_ms": up.round(),
            "worker_spawn_to_done_to_core_ratio": (whole / c * 100.0).round() / 100.0})
    );
    Ok(())
}
