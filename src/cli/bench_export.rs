//! `gantry bench export`: one user's data export at scale. JOBS no-op jobs of one user are
//! enqueued through the protocol's own `enqueue.lua` (which writes the user's index); one in
//! OUTPUTS_EVERY is marked succeeded with a 4 KiB output in a directory store. Then, side by
//! side, for JOBS/10 and JOBS:
//! - **ours**: the export job's own code (`ExportExecutor::write_archive`) streaming the tar to
//!   a file, a page of the index at a time;
//! - **baseline**: the naive exporter — read the whole index, fetch each record with its own
//!   `HGETALL`, build every document in memory, then write them out.
//!
//! Each with its wall time, jobs per second, archive bytes per second, and the process's peak
//! resident memory during the run (`VmHWM`, reset before each through `/proc/self/clear_refs`).
//! Flat memory means ours peaks at about the same for JOBS/10 and JOBS.

use std::time::Instant;

use anyhow::Context;
use gantry_queue::{JobId, NewJob, NoopPayload, Payload, Pool, QueueClient, QueueConfig};
use gantry_worker::executors::export::ExportExecutor;
use gantry_worker::outputs::OutputStore;

const TENANT: &str = "bench";
const BATCH: usize = 1000;

/// The process's peak resident memory since the last reset, KiB.
fn peak_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// Resets the peak to the current resident size (Linux 4.0+).
fn reset_peak() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// Stores `n` jobs of `user`; one in `every` succeeded with a 4 KiB output.
async fn fill(q: &QueueClient, store: &OutputStore, user: &str, n: usize, every: usize) -> anyhow::Result<()> {
    let pool = Pool::new("cpu")?;
    let mut c = q.connection();
    let scratch = tempfile::tempdir()?;
    let body = scratch.path().join("output.bin");
    std::fs::write(&body, vec![7u8; 4096])?;
    let mut done = 0;
    while done < n {
        let k = BATCH.min(n - done);
        let jobs: Vec<NewJob> = (0..k)
            .map(|_| NewJob::new(TENANT, user, Payload::Noop(NoopPayload::default())))
            .collect();
        let enqueued = q.enqueue_batch(&pool, jobs).await?;
        let mut p = redis::pipe();
        for (i, e) in enqueued.iter().enumerate() {
            if (done + i) % every == 0 {
                let rec = q.job_in(&pool, e.id).await?;
                let r = store
                    .put_file(&rec.spec, "output.bin", &body, "application/octet-stream")
                    .await?;
                p.cmd("HSET")
                    .arg(pool.job_key(e.id))
                    .arg("status")
                    .arg("succeeded")
                    .arg("result")
                    .arg(serde_json::to_string(&r)?)
                    .ignore();
            }
        }
        p.query_async::<()>(&mut c).await?;
        done += k;
    }
    Ok(())
}

/// The naive exporter: the whole index, one `HGETALL` per record, every document in memory.
async fn naive(q: &QueueClient, user: &str, out: &std::path::Path) -> anyhow::Result<u64> {
    use std::io::Write;
    let pool = Pool::new("cpu")?;
    let mut c = q.connection();
    let pattern = format!("{}user:{}:*", pool.prefix(), gantry_queue::user_key(TENANT, user));
    let mut keys: Vec<String> = Vec::new();
    let mut cursor = 0u64;
    loop {
        let (next, page): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(&pattern)
            .arg("COUNT")
            .arg(1000)
            .query_async(&mut c)
            .await?;
        keys.extend(page);
        if next == 0 {
            break;
        }
        cursor = next;
    }
    let mut ids: Vec<String> = Vec::new();
    for k in keys {
        let part: Vec<String> = redis::cmd("LRANGE").arg(k).arg(0).arg(-1).query_async(&mut c).await?;
        ids.extend(part);
    }
    let mut docs = Vec::with_capacity(ids.len());
    for id in &ids {
        let id: JobId = id.parse()?;
        let r = q.job_in(&pool, id).await?;
        docs.push(serde_json::to_vec_pretty(&r)?);
    }
    let mut f = std::io::BufWriter::new(std::fs::File::create(out)?);
    for d in &docs {
        f.write_all(d)?;
    }
    f.flush()?;
    Ok(ids.len() as u64)
}

struct Run {
    secs: f64,
    jobs: u64,
    bytes: u64,
    peak_growth_kib: u64,
}

fn show(what: &str, n: usize, r: &Run) {
    println!(
        "  {what:<9} {n:>8} jobs: {:>7.2} s, {:>9.0} jobs/s, {:>7.1} MiB/s, peak memory +{:.1} MiB",
        r.secs,
        r.jobs as f64 / r.secs.max(1e-9),
        r.bytes as f64 / r.secs.max(1e-9) / 1_048_576.0,
        r.peak_growth_kib as f64 / 1024.0
    );
}

pub async fn export_bench(redis_port: u16, jobs: usize, outputs_every: usize) -> anyhow::Result<()> {
    let url = format!("redis://127.0.0.1:{redis_port}");
    let q = QueueClient::connect(&url, QueueConfig::default()).await?;
    let dir = tempfile::tempdir()?;
    let store = OutputStore::open(dir.path().join("store").to_str().context("utf-8 path")?)?;
    std::fs::create_dir_all(dir.path().join("store"))?;
    let exporter = ExportExecutor::new(q.clone(), store.clone(), q.connection(), &Default::default());
    let every = outputs_every.max(1);
    println!("export of one user's jobs (1 in {every} succeeded with a 4 KiB output), this machine, one redis-server:");
    let mut ours_peaks = Vec::new();
    for (user, n) in [("user-small", (jobs / 10).max(1)), ("user-large", jobs)] {
        let filled = Instant::now();
        fill(&q, &store, user, n, every).await?;
        eprintln!("  stored {n} jobs of {user} in {:.1} s", filled.elapsed().as_secs_f64());
        let payload = gantry_queue::ExportPayload::default();
        let path = dir.path().join(format!("{user}.tar"));
        reset_peak();
        let before = peak_kib();
        let t = Instant::now();
        let s = exporter
            .write_archive(TENANT, user, "bench", &payload, &path, &Default::default(), None)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let ours = Run {
            secs: t.elapsed().as_secs_f64(),
            jobs: s.jobs,
            bytes: std::fs::metadata(&path)?.len(),
            peak_growth_kib: peak_kib().saturating_sub(before),
        };
        anyhow::ensure!(s.jobs == n as u64, "exported {} of {n} jobs", s.jobs);
        std::fs::remove_file(&path)?;
        let naive_path = dir.path().join(format!("{user}.naive"));
        reset_peak();
        let before = peak_kib();
        let t = Instant::now();
        let got = naive(&q, user, &naive_path).await?;
        let base = Run {
            secs: t.elapsed().as_secs_f64(),
            jobs: got,
            bytes: std::fs::metadata(&naive_path)?.len(),
            peak_growth_kib: peak_kib().saturating_sub(before),
        };
        std::fs::remove_file(&naive_path)?;
        show("ours", n, &ours);
        show("baseline", n, &base);
        println!(
            "  ratio (ours / baseline): {:.2}x the jobs per second, {:.2}x the peak memory",
            (ours.jobs as f64 / ours.secs) / (base.jobs as f64 / base.secs).max(1e-9),
            ours.peak_growth_kib as f64 / (base.peak_growth_kib as f64).max(1.0)
        );
        ours_peaks.push(ours.peak_growth_kib);
    }
    println!(
        "  ours, peak memory for {} jobs vs {} jobs: +{:.1} MiB vs +{:.1} MiB (flat: the archive streams to disk, a page of the index at a time)",
        jobs,
        (jobs / 10).max(1),
        ours_peaks[1] as f64 / 1024.0,
        ours_peaks[0] as f64 / 1024.0
    );
    Ok(())
}
