//! `gantry bench generate`: what one worker costs while it holds many poll-mode generate jobs
//! in flight. A `gantry worker` process runs N Seedance video tasks against the in-process mock
//! providers (each pending for HOLD seconds of polling, on the mock's fast poll schedule:
//! 100 ms rising to 500 ms, harsher than production's); once all N are in flight its CPU
//! (from /proc: user + system time over the window) and resident memory are sampled. Side by
//! side, the same worker holding N no-op jobs that only sleep: the runtime's own cost.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use gantry_mocks::MockServer;
use gantry_queue::{GeneratePayload, JobKind, NewJob, NoopPayload, Payload, Pool, QueueClient, QueueConfig};

/// CPU and memory of a process over a window.
#[derive(Clone, Copy, Debug)]
struct Usage {
    cores: f64,
    rss_mib: f64,
    peak_mib: f64,
}

fn proc_ticks(pid: u32) -> anyhow::Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).context("bad /proc stat")?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = f.get(11).context("utime")?.parse()?;
    let stime: u64 = f.get(12).context("stime")?.parse()?;
    Ok(utime + stime)
}

fn proc_mib(pid: u32, field: &str) -> anyhow::Result<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status
        .lines()
        .find(|l| l.starts_with(field))
        .with_context(|| format!("{field} in /proc status"))?;
    let kib: f64 = line.split_whitespace().nth(1).context("value")?.parse()?;
    Ok(kib / 1024.0)
}

/// Clock ticks per second (USER_HZ): 100 on every Linux this runs on.
const TICKS: f64 = 100.0;

struct Worker(Child);

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn measure(url: &str, mock: &str, jobs: Vec<NewJob>, kind: JobKind, window: Duration) -> anyhow::Result<Usage> {
    let q = QueueClient::connect(url, QueueConfig::default()).await?;
    let pool = Pool::new("bench-gen")?;
    let n = jobs.len();
    let outputs = tempfile::tempdir()?;
    let child = Command::new(std::env::current_exe()?)
        .args(["worker", "--redis-url", url, "--pool", "bench-gen", "--gpus", "none"])
        .args(["--concurrency", &n.to_string(), "--kinds", kind.as_str()])
        .args(["--mock-providers", mock, "--outputs"])
        .arg(outputs.path())
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .context("starting the worker")?;
    let w = Worker(child);
    let pid = w.0.id();
    for chunk in jobs.chunks(500) {
        q.enqueue_batch(&pool, chunk.to_vec()).await?;
    }
    let start = Instant::now();
    loop {
        let s = q.stats(&pool, &[kind]).await?.remove(0);
        if s.in_flight as usize >= n {
            break;
        }
        anyhow::ensure!(
            start.elapsed() < Duration::from_secs(60),
            "only {} of {n} in flight",
            s.in_flight
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Let the claim burst settle, then measure a steady window.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (t0, c0) = (Instant::now(), proc_ticks(pid)?);
    let mut rss_max: f64 = 0.0;
    while t0.elapsed() < window {
        rss_max = rss_max.max(proc_mib(pid, "VmRSS:")?);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let cores = (proc_ticks(pid)? - c0) as f64 / TICKS / t0.elapsed().as_secs_f64();
    let peak = proc_mib(pid, "VmHWM:")?;
    let s = q.stats(&pool, &[kind]).await?.remove(0);
    anyhow::ensure!(
        s.in_flight as usize >= n,
        "the window outlasted the jobs ({} in flight at its end): raise --hold-secs",
        s.in_flight
    );
    drop(w);
    Ok(Usage {
        cores,
        rss_mib: rss_max,
        peak_mib: peak,
    })
}

pub async fn generate_bench(redis_port: u16, n: usize, hold_secs: u64, window_secs: u64) -> anyhow::Result<()> {
    let url = format!("redis://127.0.0.1:{redis_port}");
    let mock = MockServer::start("127.0.0.1:0".parse()?).await?;
    // The mock's poll schedule reaches 500 ms: HOLD seconds is about 2 polls a second.
    let pending = hold_secs * 2 + 4;
    let generate: Vec<NewJob> = (0..n)
        .map(|i| NewJob {
            allowed_regions: vec!["SG".into()],
            ..NewJob::new(
                "bench",
                format!("user-{i}"),
                Payload::Generate(GeneratePayload {
                    provider: "seedream".into(),
                    model: "seedance-1-pro".into(),
                    prompt: format!("bench clip {i} [mock:pending={pending}]"),
                    duration_secs: Some(5),
                    ..Default::default()
                }),
            )
        })
        .collect();
    let noop: Vec<NewJob> = (0..n)
        .map(|i| {
            NewJob::new(
                "bench",
                format!("user-{i}"),
                Payload::Noop(NoopPayload {
                    sleep_ms: hold_secs * 1000,
                    ..Default::default()
                }),
            )
        })
        .collect();
    let window = Duration::from_secs(window_secs);
    let g = measure(&url, &mock.url(), generate, JobKind::Generate, window).await?;
    let base = measure(&url, &mock.url(), noop, JobKind::Noop, window).await?;
    let polls = mock
        .state()
        .requests()
        .iter()
        .filter(|e| e.method == "GET" && e.path.starts_with("/api/v3/contents/generations/tasks/"))
        .count();
    println!("one worker, {n} jobs in flight, {window_secs} s window (release build, /proc)");
    println!(
        "  generate (Seedance tasks, polled):  {:.3} cores, RSS {:.1} MiB (peak {:.1} MiB)",
        g.cores, g.rss_mib, g.peak_mib
    );
    println!(
        "  noop (sleeping):                    {:.3} cores, RSS {:.1} MiB (peak {:.1} MiB)",
        base.cores, base.rss_mib, base.peak_mib
    );
    println!(
        "  ratio generate/noop: cpu {:.2}x, rss {:.2}x; {polls} provider polls in all",
        g.cores / base.cores.max(1e-3),
        g.rss_mib / base.rss_mib.max(1e-3)
    );
    println!(
        "  budget: under 1 core: {} ({:.3}); under 200 MiB RSS: {} ({:.1} MiB peak)",
        if g.cores < 1.0 { "yes" } else { "NO" },
        g.cores,
        if g.peak_mib < 200.0 { "yes" } else { "NO" },
        g.peak_mib
    );
    Ok(())
}
