//! `gantry demo`: a local fleet processing sample jobs end to end.
//!
//! It starts its own redis-server on a free port, two `gantry worker` processes, submits a mix
//! of jobs (priorities, retries, a dead letter, delays, a duplicate, cancellations), SIGKILLs
//! one worker half-way to show its leases being recovered, and prints a summary.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use gantry_queue::{
    ErrorClass, JobId, JobKind, JobStatus, NewJob, NoopPayload, Payload, Pool, Priority, QueueClient, QueueConfig,
};
use gantry_testkit::RedisServer;
use indicatif::{ProgressBar, ProgressStyle};

use super::time::fmt_ms;

#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// Ordinary jobs to submit (plus the scripted special cases).
    #[arg(long, default_value_t = 300)]
    jobs: usize,
    /// Worker processes.
    #[arg(long, default_value_t = 2)]
    workers: usize,
    /// Where worker logs go (default: a fresh temporary directory, kept).
    #[arg(long)]
    log_dir: Option<PathBuf>,
    /// Keep the fleet and Redis running after the summary until Ctrl-C, to explore with the CLI.
    #[arg(long)]
    keep: bool,
}

struct Fleet {
    children: Vec<(String, Child)>,
    metrics_ports: Vec<(String, u16)>,
    exe: PathBuf,
    url: String,
    log_dir: PathBuf,
}

impl Fleet {
    fn spawn(&mut self, name: &str) -> anyhow::Result<()> {
        let log = std::fs::File::create(self.log_dir.join(format!("{name}.log")))?;
        let port = gantry_testkit::free_port();
        let child = Command::new(&self.exe)
            .args(["worker", "--redis-url", &self.url, "--pool", "cpu", "--worker-id", name])
            .args([
                "--metrics-addr",
                &format!("127.0.0.1:{port}"),
                "--registry-heartbeat-secs",
                "1",
            ])
            .args(["--concurrency", "16", "--lease-secs", "3"])
            .arg("--outputs")
            .arg(self.log_dir.join("outputs"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting worker {name}"))?;
        self.children.push((name.to_owned(), child));
        self.metrics_ports.push((name.to_owned(), port));
        Ok(())
    }

    fn sigkill(&mut self, name: &str) {
        if let Some((_, c)) = self.children.iter_mut().find(|(n, _)| n == name) {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        for (_, c) in &mut self.children {
            if matches!(c.try_wait(), Ok(Some(_))) {
                continue;
            }
            let _ = Command::new("kill").args(["-TERM", &c.id().to_string()]).status();
        }
        for (_, c) in &mut self.children {
            let _ = c.wait();
        }
    }
}

fn noop(sleep_ms: u64) -> NewJob {
    NewJob::new(
        "demo-studio",
        "user-0001",
        Payload::Noop(NoopPayload {
            sleep_ms,
            output_bytes: Some(4096),
            ..Default::default()
        }),
    )
}

pub async fn run(a: DemoArgs) -> anyhow::Result<()> {
    println!("gantry demo: a local fleet processing sample jobs end to end\n");
    let redis = RedisServer::start().context("starting redis-server (run `make setup` to install it)")?;
    let url = redis.url();
    let log_dir = match a.log_dir {
        Some(d) => d,
        None => tempfile::Builder::new().prefix("gantry-demo-").tempdir()?.keep(),
    };
    std::fs::create_dir_all(&log_dir)?;
    println!("  redis-server   {url} (private, started for this demo)");
    let mut fleet = Fleet {
        children: Vec::new(),
        metrics_ports: Vec::new(),
        exe: std::env::current_exe()?,
        url: url.clone(),
        log_dir: log_dir.clone(),
    };
    for i in 1..=a.workers.max(1) {
        fleet.spawn(&format!("worker-{i}"))?;
    }
    println!(
        "  workers        {} x `gantry worker --pool cpu --concurrency 16` (logs in {})",
        a.workers.max(1),
        log_dir.display()
    );

    let q = QueueClient::connect(
        &url,
        QueueConfig {
            backoff_base: Duration::from_millis(200),
            ..Default::default()
        },
    )
    .await?;
    let pool = Pool::new("cpu")?;
    let mut jobs = Vec::new();
    let mut rng_state = 0x9e3779b97f4a7c15u64;
    let mut rand = move || {
        rng_state ^= rng_state << 13;
        rng_state ^= rng_state >> 7;
        rng_state ^= rng_state << 17;
        rng_state
    };
    for i in 0..a.jobs {
        let priority = match i % 10 {
            0 => Priority::High,
            9 => Priority::Bulk,
            _ => Priority::Normal,
        };
        jobs.push(NewJob {
            priority,
            ..noop(20 + rand() % 180)
        });
    }
    for _ in 0..20 {
        jobs.push(NewJob::new(
            "demo-studio",
            "user-0002",
            Payload::Noop(NoopPayload {
                sleep_ms: 30,
                fail_attempts: 1,
                output_bytes: Some(4096),
                ..Default::default()
            }),
        ));
    }
    for _ in 0..3 {
        jobs.push(NewJob {
            max_attempts: Some(3),
            ..NewJob::new(
                "demo-studio",
                "user-0003",
                Payload::Noop(NoopPayload {
                    sleep_ms: 10,
                    fail_attempts: 99,
                    fail_class: Some(ErrorClass::Permanent),
                    ..Default::default()
                }),
            )
        });
    }
    for _ in 0..10 {
        jobs.push(NewJob {
            delay_ms: Some(2000),
            ..noop(10)
        });
    }
    jobs.push(NewJob {
        idempotency_key: Some("order-7731".into()),
        ..noop(10)
    });
    jobs.push(NewJob {
        idempotency_key: Some("order-7731".into()),
        ..noop(10)
    });
    let started = Instant::now();
    let mut ids: Vec<JobId> = Vec::new();
    let mut duplicates = 0;
    for chunk in jobs.chunks(500) {
        for e in q.enqueue_batch(&pool, chunk.to_vec()).await? {
            if e.duplicate {
                duplicates += 1;
            } else {
                ids.push(e.id);
            }
        }
    }
    let mut cancelled = Vec::new();
    for _ in 0..3 {
        let id = q
            .enqueue(
                &pool,
                NewJob {
                    delay_ms: Some(60_000),
                    ..noop(10)
                },
            )
            .await?
            .id;
        q.cancel(id).await?;
        cancelled.push(id);
        ids.push(id);
    }
    println!(
        "  submitted      {} jobs in {} ({} ordinary, 20 flaky, 3 broken, 10 delayed, 1 duplicate key, 3 cancelled)\n",
        ids.len(),
        fmt_ms(started.elapsed().as_millis() as u64),
        a.jobs
    );

    let bar = ProgressBar::new(ids.len() as u64);
    bar.set_style(
        ProgressStyle::with_template("  {bar:40.cyan/blue} {pos:>4}/{len} finished  {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let mut killed = false;
    let mut last_line = Instant::now();
    loop {
        let s = q.stats(&pool, &[JobKind::Noop]).await?.remove(0);
        let open = s.waiting_total() + s.in_flight + s.delayed;
        bar.set_position(ids.len() as u64 - open.min(ids.len() as u64));
        bar.set_message(format!(
            "waiting {} | running {} | delayed {} | dead {}",
            s.waiting_total(),
            s.in_flight,
            s.delayed,
            s.dead
        ));
        if !killed && bar.position() * 3 >= ids.len() as u64 && s.in_flight > 0 {
            killed = true;
            fleet.sigkill("worker-1");
            let note = format!(
                "  ! SIGKILLed worker-1 while {} jobs ran in the pool; a replacement starts and the reaper requeues worker-1's leases",
                s.in_flight
            );
            bar.suspend(|| println!("{note}"));
            fleet.spawn("worker-replacement")?;
        }
        if bar.is_hidden() && (last_line.elapsed() >= Duration::from_secs(1) || open == 0) {
            // No terminal: one progress line a second instead of a bar.
            println!("  {:>4}/{} finished  {}", bar.position(), ids.len(), bar.message());
            last_line = Instant::now();
        }
        if open == 0 {
            break;
        }
        if started.elapsed() > Duration::from_secs(300) {
            anyhow::bail!(
                "demo did not finish in 5 minutes; see the worker logs in {}",
                log_dir.display()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bar.finish();
    let wall = started.elapsed();

    // Summary from the job records themselves.
    let mut outcomes: BTreeMap<(String, String), u64> = BTreeMap::new();
    let mut latencies = Vec::new();
    let (mut attempts, mut recovered) = (0u64, 0u64);
    let (mut outputs, mut output_bytes) = (0u64, 0u64);
    let mut dead_example = None;
    for id in &ids {
        let r = q.job_in(&pool, *id).await?;
        *outcomes
            .entry((r.spec.kind().to_string(), format!("{:?}", r.status).to_lowercase()))
            .or_default() += 1;
        attempts += r.attempts as u64;
        if r.history.iter().any(|h| h.event == "lease_expired") {
            recovered += 1;
        }
        if r.status == JobStatus::Succeeded
            && let Some(fin) = r.finished_at_ms
        {
            latencies.push(fin.saturating_sub(r.enqueued_at_ms));
        }
        if let Some(res) = &r.result {
            outputs += 1;
            output_bytes += res.size_bytes;
        }
        if r.status == JobStatus::Dead && dead_example.is_none() {
            dead_example = Some(r);
        }
    }
    latencies.sort_unstable();
    let pct = |p: f64| {
        latencies
            .get(((latencies.len() as f64 * p).ceil() as usize).saturating_sub(1))
            .copied()
            .unwrap_or(0)
    };

    println!("\nSummary ({} wall clock)", fmt_ms(wall.as_millis() as u64));
    println!("  {:<12} {:<12} {:>6}", "kind", "outcome", "jobs");
    for ((kind, status), n) in &outcomes {
        println!("  {kind:<12} {status:<12} {n:>6}");
    }
    println!("  duplicates returned the first job's id: {duplicates}");
    println!(
        "  attempts: {attempts} for {} jobs; leases recovered after the SIGKILL: {recovered}",
        ids.len()
    );
    println!(
        "  latency enqueue->done (succeeded): p50 {}  p95 {}  p99 {}  max {}",
        fmt_ms(pct(0.50)),
        fmt_ms(pct(0.95)),
        fmt_ms(pct(0.99)),
        fmt_ms(latencies.last().copied().unwrap_or(0))
    );
    println!("  throughput: {:.0} jobs/s", ids.len() as f64 / wall.as_secs_f64());
    if let Some(d) = dead_example {
        println!(
            "  dead letter example: {} — {} ({} attempt(s)); replay with `gantry dlq replay {}`",
            d.spec.id,
            d.error
                .map(|e| format!("{}: {}", e.class, e.message))
                .unwrap_or_default(),
            d.attempts,
            d.spec.id
        );
    }
    println!(
        "  outputs: {outputs} objects, {} KiB, one per job (retries overwrite), under {}",
        output_bytes / 1024,
        log_dir.join("outputs").display()
    );
    println!("  worker logs: {}", log_dir.display());
    for (name, port) in &fleet.metrics_ports {
        if name != "worker-1" {
            println!("  metrics: {name} http://127.0.0.1:{port}/metrics (while the fleet runs; `--keep` keeps it)");
        }
    }
    if a.keep {
        println!(
            "\nThe fleet keeps running. Try:\n  REDIS_URL={url} gantry queues stats\n  REDIS_URL={url} gantry dlq list\nCtrl-C to stop."
        );
        tokio::signal::ctrl_c().await?;
    } else {
        println!("  explore a live fleet: `gantry demo --keep`, then `REDIS_URL={url} gantry queues stats`");
    }
    drop(fleet);
    drop(redis);
    Ok(())
}
