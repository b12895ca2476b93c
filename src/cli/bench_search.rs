//! `gantry bench search`: job search over a large store. JOBS jobs are enqueued through the
//! protocol's own `enqueue.lua` (which writes the search indexes) into two pools, for 61
//! tenants of very different sizes, two kinds and a thousand users each; then their records
//! are given a spread of statuses (85% succeeded, 1% dead, 1% running, the rest queued) by
//! writing the status field, as the outcome scripts would. Reported:
//! - memory: `MEMORY USAGE` per job of the records, of the users' erasure index and of the
//!   search indexes (what the search adds), beside one sorted set per tenant (the usual index,
//!   measured on the same ids);
//! - latency p50/p99 of one filtered page (50 jobs) for a range of filters, each beside the floor
//!   of reading the same page's records directly (one pipelined `HMGET` each), and through the
//!   API (`GET /v1/jobs` of an in-process scheduler) for two of them.

use std::time::{Duration, Instant};

use anyhow::Context;
use gantry_client::{Client, JobFilter};
use gantry_queue::{JobId, JobKind, JobQuery, JobStatus, NewJob, NoopPayload, Payload, Pool, QueueClient, QueueConfig};
use gantry_scheduler::{Scheduler, SchedulerConfig};
use tokio_util::sync::CancellationToken;

const BATCH: usize = 1000;
const PAGE: usize = 50;

/// A small deterministic generator (xorshift), so every run stores the same mix.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Tenant of the i-th draw: `big` half the jobs, ten `mid-*` 4% each, fifty `small-*` 0.2% each.
fn tenant(r: &mut Rng) -> String {
    let x = r.below(1000);
    if x < 500 {
        "big".into()
    } else if x < 900 {
        format!("mid-{}", (x - 500) / 40)
    } else {
        format!("small-{}", (x - 900) / 2)
    }
}

fn config() -> String {
    let mut tenants = String::new();
    for t in ["big", "mid-0"] {
        tenants.push_str(&format!(
            "[tenants.{t}]\nplan = \"bench\"\napi_keys = [{{ sha256 = \"{}\", scopes = [\"jobs:read\"] }}]\n",
            gantry_scheduler::auth::hash_key(&format!("key-{t}"))
        ));
    }
    format!(
        r#"
listen = "127.0.0.1:0"
metrics_listen = "127.0.0.1:0"
require_data_keys = false
[plans.bench]
jobs_per_second = 100000
burst = 100000
{tenants}
[pools.cpu]
kinds = ["noop", "upscale"]
[pools.gpu]
kinds = ["noop", "upscale"]
"#
    )
}

use super::bench::quantile as pct;

/// Sum of `MEMORY USAGE` over the keys matching `pattern`, and how many there are.
async fn memory_of(q: &QueueClient, pattern: &str) -> anyhow::Result<(u64, usize)> {
    let mut conn = q.connection();
    let (mut cursor, mut total, mut keys) = (0u64, 0u64, 0usize);
    loop {
        let (next, page) = conn.scan_page(pattern, cursor, 1000).await?;
        for k in &page {
            let m: Option<u64> = redis::cmd("MEMORY")
                .arg("USAGE")
                .arg(k)
                .arg("SAMPLES")
                .arg(0)
                .query_async(&mut conn)
                .await?;
            total += m.unwrap_or(0);
        }
        keys += page.len();
        if next == 0 {
            return Ok((total, keys));
        }
        cursor = next;
    }
}

/// The jobs a fill stored: pool, id and tenant of each, and a window of their creation times.
pub(super) struct Stored {
    pub(super) ids: Vec<(Pool, JobId, String)>,
    window: (u64, u64),
}

/// Stores `jobs` jobs through `enqueue.lua` (two pools, 61 tenants, two kinds).
pub(super) async fn fill(q: &QueueClient, jobs: usize) -> anyhow::Result<Stored> {
    let (cpu, gpu) = (Pool::new("cpu")?, Pool::new("gpu")?);
    let mut r = Rng(0x9e37_79b9_7f4a_7c15);
    let mut ids = Vec::with_capacity(jobs);
    let began = Instant::now();
    let (mut window_start, mut window_end) = (0, 0);
    let mut in_flight = futures::stream::FuturesOrdered::new();
    use futures::StreamExt as _;
    let mut sent = 0;
    let mut done = 0;
    while done < jobs {
        while sent < jobs && in_flight.len() < 4 {
            let n = BATCH.min(jobs - sent);
            let pool = if r.below(10) == 0 { gpu.clone() } else { cpu.clone() };
            let batch: Vec<(NewJob, String)> = (0..n)
                .map(|_| {
                    let t = tenant(&mut r);
                    let user = format!("user-{}", r.below(1000));
                    let body = if r.below(5) == 0 {
                        Payload::Upscale(gantry_queue::UpscalePayload {
                            input: "in/a.png".into(),
                            scale: Some(2),
                            ..Default::default()
                        })
                    } else {
                        Payload::Noop(NoopPayload::default())
                    };
                    (NewJob::new(t.clone(), user, body), t)
                })
                .collect();
            let tenants: Vec<String> = batch.iter().map(|(_, t)| t.clone()).collect();
            let jobs_of: Vec<NewJob> = batch.into_iter().map(|(j, _)| j).collect();
            let q = q.clone();
            in_flight.push_back(async move {
                let e = q.enqueue_batch(&pool, jobs_of).await;
                (pool, tenants, e)
            });
            sent += n;
        }
        if let Some((pool, tenants, e)) = in_flight.next().await {
            let e = e?;
            done += e.len();
            for (x, t) in e.into_iter().zip(tenants) {
                ids.push((pool.clone(), x.id, t));
            }
            // A window in the middle of the run: a tenth of the jobs.
            let at = super::time::now_ms();
            if window_start == 0 && done >= jobs * 45 / 100 {
                window_start = at;
            }
            if window_end == 0 && done >= jobs * 55 / 100 {
                window_end = at;
            }
        }
    }
    let secs = began.elapsed().as_secs_f64();
    eprintln!(
        "stored {jobs} jobs in {secs:.1} s ({:.0} jobs/s through enqueue.lua)",
        jobs as f64 / secs
    );
    Ok(Stored {
        ids,
        window: (window_start, window_end.max(window_start + 1)),
    })
}

/// Gives the records a spread of statuses, as their outcomes would have.
pub(super) async fn set_statuses(q: &QueueClient, stored: &Stored) -> anyhow::Result<()> {
    let mut r = Rng(42);
    let mut conn = q.connection();
    let now = super::time::now_ms();
    for chunk in stored.ids.chunks(10_000) {
        let mut pipe = redis::pipe();
        for (pool, id, _) in chunk {
            let x = r.below(100);
            let key = pool.job_key(*id);
            if x < 85 {
                pipe.cmd("HSET")
                    .arg(&key)
                    .arg("status")
                    .arg("succeeded")
                    .arg("fin")
                    .arg(now)
                    .arg("attempts")
                    .arg(1)
                    .ignore();
            } else if x < 86 {
                pipe.cmd("HSET")
                    .arg(&key)
                    .arg("status")
                    .arg("dead")
                    .arg("eclass")
                    .arg("permanent")
                    .arg("emsg")
                    .arg("bench")
                    .arg("eat")
                    .arg(now)
                    .ignore();
            } else if x < 87 {
                pipe.cmd("HSET").arg(&key).arg("status").arg("running").ignore();
            }
        }
        pipe.query_async::<()>(&mut conn).await?;
    }
    Ok(())
}

/// The floor: the same page's records read directly (one pipelined HMGET of the fields a
/// search reads per job).
async fn read_directly(q: &QueueClient, page: &[(Pool, JobId)]) -> anyhow::Result<()> {
    let mut pipe = redis::pipe();
    for (pool, id) in page {
        pipe.cmd("HMGET").arg(pool.job_key(*id)).arg(&[
            "kind", "status", "prio", "ten", "attempts", "max", "enq", "started", "fin", "eclass", "emsg", "eat", "uk",
            "result",
        ]);
    }
    let mut conn = q.connection();
    let _: Vec<redis::Value> = pipe.query_async(&mut conn).await?;
    Ok(())
}

pub async fn search_bench(redis_port: u16, jobs: usize, samples: usize) -> anyhow::Result<()> {
    let url = format!("redis://127.0.0.1:{redis_port}");
    let q = QueueClient::connect(&url, QueueConfig::default()).await?;
    let stored = fill(&q, jobs).await?;
    set_statuses(&q, &stored).await?;

    // Memory, per job.
    let n = jobs as f64;
    let (mut ix, mut ix_keys, mut users) = (0, 0, 0);
    for pool in ["cpu", "gpu"] {
        let (bytes, keys) = memory_of(&q, &format!("gantry:{{{pool}}}:ix:*")).await?;
        ix += bytes;
        ix_keys += keys;
        users += memory_of(&q, &format!("gantry:{{{pool}}}:user:*")).await?.0;
    }
    let mut conn = q.connection();
    let mut record_sample = 0u64;
    let step = (stored.ids.len() / 2000).max(1);
    let sampled: Vec<&(Pool, JobId, String)> = stored.ids.iter().step_by(step).collect();
    for (pool, id, _) in &sampled {
        let m: Option<u64> = redis::cmd("MEMORY")
            .arg("USAGE")
            .arg(pool.job_key(*id))
            .query_async(&mut conn)
            .await?;
        record_sample += m.unwrap_or(0);
    }
    let record = record_sample as f64 / sampled.len() as f64;
    // The usual alternative: one sorted set per tenant, id -> enqueue time.
    let mut by_tenant: std::collections::BTreeMap<&str, Vec<&JobId>> = Default::default();
    for (_, id, t) in &stored.ids {
        by_tenant.entry(t).or_default().push(id);
    }
    for (t, ids) in &by_tenant {
        for chunk in ids.chunks(1000) {
            let mut cmd = redis::cmd("ZADD");
            cmd.arg(format!("bench:{{zset}}:{t}"));
            for (i, id) in chunk.iter().enumerate() {
                cmd.arg(i).arg(id.to_string());
            }
            cmd.query_async::<()>(&mut conn).await?;
        }
    }
    let (zsets, _) = memory_of(&q, "bench:{zset}:*").await?;
    let _: () = redis::cmd("EVAL")
        .arg("for _, k in ipairs(redis.call('KEYS', 'bench:{zset}:*')) do redis.call('DEL', k) end")
        .arg(0)
        .query_async(&mut conn)
        .await?;
    println!("memory per job ({jobs} jobs, MEMORY USAGE):");
    println!(
        "  job record              {record:>7.1} bytes (mean of {} records)",
        sampled.len()
    );
    println!(
        "  users' erasure index    {:>7.1} bytes (before search existed)",
        users as f64 / n
    );
    println!(
        "  search indexes          {:>7.1} bytes ({ix_keys} day lists: tenant, tenant x kind, every tenant)",
        ix as f64 / n
    );
    println!(
        "  one zset per tenant     {:>7.1} bytes (the usual index, for comparison: {:.2}x ours)",
        zsets as f64 / n,
        zsets as f64 / ix.max(1) as f64
    );
    println!(
        "  before -> after         {:>7.1} -> {:.1} bytes per job",
        record + users as f64 / n,
        record + (users + ix) as f64 / n
    );

    // Latency of one page, per filter, beside reading the same page's records directly.
    let big = Some("big".to_owned());
    let (w0, w1) = stored.window;
    let queries: Vec<(&str, JobQuery)> = vec![
        (
            "big tenant (50%), newest",
            JobQuery {
                tenant: big.clone(),
                ..Default::default()
            },
        ),
        (
            "big tenant, kind=upscale (20%)",
            JobQuery {
                tenant: big.clone(),
                kind: Some(JobKind::Upscale),
                ..Default::default()
            },
        ),
        (
            "big tenant, status=succeeded (85%)",
            JobQuery {
                tenant: big.clone(),
                status: Some(JobStatus::Succeeded),
                ..Default::default()
            },
        ),
        (
            "big tenant, status=dead (1%)",
            JobQuery {
                tenant: big.clone(),
                status: Some(JobStatus::Dead),
                ..Default::default()
            },
        ),
        (
            "big tenant, one user (0.1%)",
            JobQuery {
                tenant: big.clone(),
                user: Some("user-7".into()),
                ..Default::default()
            },
        ),
        (
            "big tenant, a window mid-run",
            JobQuery {
                tenant: big.clone(),
                created_after_ms: Some(w0),
                created_before_ms: Some(w1),
                ..Default::default()
            },
        ),
        (
            "small tenant (0.2%), newest",
            JobQuery {
                tenant: Some("small-3".into()),
                ..Default::default()
            },
        ),
        (
            "mid tenant (4%), upscale, succeeded",
            JobQuery {
                tenant: Some("mid-0".into()),
                kind: Some(JobKind::Upscale),
                status: Some(JobStatus::Succeeded),
                ..Default::default()
            },
        ),
        (
            "every tenant, status=running (1%)",
            JobQuery {
                status: Some(JobStatus::Running),
                ..Default::default()
            },
        ),
    ];
    println!("one page of {PAGE}, {samples} samples each (ms):");
    println!(
        "  {:<38} {:>7} {:>7} {:>6} {:>9} {:>7}",
        "filter", "p50", "p99", "jobs", "floor p50", "ratio"
    );
    for (name, query) in &queries {
        let (mut lat, mut floor) = (Vec::new(), Vec::new());
        let mut got = 0;
        let mut cursor: Option<String> = None;
        for i in 0..samples {
            // Alternate the first page with deeper ones (the cursor of the previous page).
            let from = if i % 2 == 0 { None } else { cursor.clone() };
            let t = Instant::now();
            let page = q.search(query, PAGE, from.as_deref()).await?;
            lat.push(t.elapsed().as_secs_f64() * 1e3);
            if i == 0 {
                got = page.jobs.len();
            }
            cursor = page.next_cursor.clone().or(cursor);
            let direct: Vec<(Pool, JobId)> = page
                .jobs
                .iter()
                .map(|j| Ok((Pool::new(&j.pool)?, j.id)))
                .collect::<Result<_, gantry_queue::ValidationError>>()?;
            let t = Instant::now();
            if !direct.is_empty() {
                read_directly(&q, &direct).await?;
            }
            floor.push(t.elapsed().as_secs_f64() * 1e3);
        }
        let (p50, p99, f50) = (pct(&mut lat, 0.5), pct(&mut lat, 0.99), pct(&mut floor, 0.5));
        println!(
            "  {name:<38} {p50:>7.2} {p99:>7.2} {got:>6} {f50:>9.2} {:>6.1}x",
            p50 / f50.max(0.001)
        );
    }

    // Through the API.
    let cfg = SchedulerConfig::from_toml(&config()).context("bench config")?;
    let stop = CancellationToken::new();
    let sched = Scheduler::start(cfg, &url, stop.clone()).await?;
    let api = Client::new(&format!("http://{}", sched.addr), "key-big")?;
    println!("through GET /v1/jobs (HTTP, JSON), {samples} samples each (ms):");
    for (name, filter) in [
        (
            "big tenant, newest",
            JobFilter {
                limit: Some(PAGE),
                ..Default::default()
            },
        ),
        (
            "big tenant, status=dead",
            JobFilter {
                limit: Some(PAGE),
                status: Some("dead".into()),
                ..Default::default()
            },
        ),
    ] {
        let mut lat = Vec::new();
        for _ in 0..samples {
            let t = Instant::now();
            api.jobs().list(&filter).await?;
            lat.push(t.elapsed().as_secs_f64() * 1e3);
        }
        println!(
            "  {name:<38} p50 {:>6.2}  p99 {:>6.2}",
            pct(&mut lat, 0.5),
            pct(&mut lat, 0.99)
        );
    }
    stop.cancel();
    tokio::time::sleep(Duration::from_millis(100)).await;
    Ok(())
}
