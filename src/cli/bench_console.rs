//! `gantry bench console`: the operator console at scale. The store gets JOBS jobs (as the
//! search bench stores them: two pools, 61 tenants), DEAD of them dead-lettered, WORKERS workers
//! in the fleet registry (one to eight GPUs each) and a few thousand audit entries; then an
//! in-process scheduler serves the console. Reported:
//! - each page's time to answer over loopback HTTP (a signed-in operator, the session checked
//!   on every request), p50 and p99, beside the admin API's JSON for the same data where there
//!   is one;
//! - the CPU the scheduler process spends with CONSOLES overviews open and following their live
//!   stream, beside none open, while the queues change (a job a tenth of a second).

use std::time::{Duration, Instant};

use anyhow::Context;
use gantry_queue::{FleetGpu, JobKind, QueueClient, QueueConfig, WorkerRecord};
use gantry_scheduler::{Scheduler, SchedulerConfig};
use tokio_util::sync::CancellationToken;

use super::bench::quantile as pct;

fn config() -> String {
    let key = |k: &str| gantry_scheduler::auth::hash_key(k);
    format!(
        r#"
listen = "127.0.0.1:0"
metrics_listen = "127.0.0.1:0"
require_data_keys = false
[plans.bench]
jobs_per_second = 100000
burst = 100000
[tenants.ops]
plan = "bench"
operator = true
api_keys = [{{ sha256 = "{}", scopes = ["admin"] }}]
[tenants.big]
plan = "bench"
api_keys = [{{ sha256 = "{}", scopes = ["jobs:read", "jobs:write"] }}]
[tenants.mid-0]
plan = "bench"
[pools.cpu]
kinds = ["noop", "upscale"]
[pools.gpu]
kinds = ["noop", "upscale"]
"#,
        key("key-ops"),
        key("key-big")
    )
}

/// Dead-letters `n` of the stored jobs (their records and their queues' dead sets), as the
/// outcome script would.
async fn dead_letter(q: &QueueClient, stored: &super::bench_search::Stored, n: usize) -> anyhow::Result<()> {
    let mut conn = q.connection();
    let now = super::time::now_ms();
    let step = (stored.ids.len() / n.max(1)).max(1);
    let chosen: Vec<_> = stored.ids.iter().step_by(step).take(n).collect();
    for (i, chunk) in chosen.chunks(5_000).enumerate() {
        let mut kinds = redis::pipe();
        for (pool, id, _) in chunk {
            kinds.cmd("HGET").arg(pool.job_key(*id)).arg("kind");
        }
        let kinds: Vec<Option<String>> = kinds.query_async(&mut conn).await?;
        let mut pipe = redis::pipe();
        for (j, ((pool, id, _), kind)) in chunk.iter().zip(kinds).enumerate() {
            let kind: JobKind = kind.as_deref().unwrap_or("noop").parse().unwrap_or(JobKind::Noop);
            let class = if (i + j) % 3 == 0 { "permanent" } else { "retryable" };
            let at = now - ((i * 5_000 + j) as u64 * 10);
            pipe.cmd("HSET")
                .arg(pool.job_key(*id))
                .arg(&["status", "dead", "eclass", class, "emsg", "bench: the provider refused"])
                .arg("fin")
                .arg(at)
                .ignore();
            pipe.cmd("ZADD")
                .arg(pool.queue_key(kind, "dead"))
                .arg(at)
                .arg(id.to_string())
                .ignore();
        }
        pipe.query_async::<()>(&mut conn).await?;
    }
    Ok(())
}

async fn register_workers(q: &QueueClient, n: usize) -> anyhow::Result<()> {
    for i in 0..n {
        let pool = if i % 4 == 0 { "gpu" } else { "cpu" };
        let gpus = (0..(1 + i % 8) as u32)
            .map(|g| FleetGpu {
                index: g,
                uuid: format!("GPU-bench-{i}-{g}"),
                name: "NVIDIA L4".into(),
                memory_total_bytes: 24 << 30,
                memory_free_bytes: 16 << 30,
                nvenc: true,
                memory_used_bytes: 8 << 30,
                reserved_bytes: 6 << 30,
                nvdec: true,
                mig: Vec::new(),
            })
            .collect();
        let rec = WorkerRecord {
            id: format!("bench-{i:04}"),
            pool: pool.into(),
            hostname: format!("host-{}", i / 8),
            version: env!("CARGO_PKG_VERSION").into(),
            kinds: vec![JobKind::Noop, JobKind::Upscale],
            concurrency: 16,
            in_flight: (i % 17) as u32,
            gpu_source: "fake".into(),
            gpus,
            warm_models: vec!["flux-2-pro".into()],
            started_at_ms: super::time::now_ms(),
            heartbeat_ms: 600_000,
            draining: i % 50 == 0,
            metrics_addr: None,
            last_seen_ms: 0,
        };
        q.register_worker(&rec, Duration::from_secs(600)).await?;
    }
    Ok(())
}

/// The process's CPU time so far (user + system), from `/proc/self/stat`.
fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command's closing parenthesis: utime and stime are the 12th and 13th.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<u64> = rest.split_whitespace().filter_map(|x| x.parse().ok()).collect();
    let ticks = f.get(10).copied().unwrap_or(0) + f.get(11).copied().unwrap_or(0);
    // Linux reports in clock ticks of 1/100 s (USER_HZ).
    Duration::from_millis(ticks * 10)
}

async fn time_get(
    http: &reqwest::Client,
    url: &str,
    headers: &[(&str, &str)],
    samples: usize,
) -> anyhow::Result<Vec<f64>> {
    let mut lat = Vec::with_capacity(samples);
    for _ in 0..samples {
        let mut req = http.get(url);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let t = Instant::now();
        let r = req.send().await?;
        let status = r.status();
        let _ = r.bytes().await?;
        lat.push(t.elapsed().as_secs_f64() * 1e3);
        anyhow::ensure!(status.is_success(), "{url}: HTTP {status}");
    }
    Ok(lat)
}

/// CPU of this process, in percent of one core, over `secs` while `open` consoles follow the
/// overview and a job is submitted every 100 ms.
async fn cpu_with(base: &str, open: usize, secs: u64, cookie: &str) -> anyhow::Result<(f64, u64)> {
    let stop = CancellationToken::new();
    let events = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..open {
        let (url, cookie, stop, events) = (
            format!("{base}/console/overview/stream"),
            cookie.to_owned(),
            stop.clone(),
            events.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let Ok(mut r) = reqwest::Client::new().get(url).header("cookie", cookie).send().await else {
                return;
            };
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    c = r.chunk() => match c {
                        Ok(Some(c)) if c.windows(6).any(|w| w == b"event:") => {
                            events.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        }
                        Ok(Some(_)) => {}
                        _ => return,
                    }
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let submit = reqwest::Client::new();
    let (t0, c0) = (Instant::now(), cpu_time());
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        let _ = submit
            .post(format!("{base}/v1/jobs"))
            .bearer_auth("key-big")
            .json(&serde_json::json!({"user": "u1", "kind": "noop", "payload": {}}))
            .send()
            .await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (wall, cpu) = (t0.elapsed(), cpu_time().saturating_sub(c0));
    stop.cancel();
    for t in tasks {
        let _ = t.await;
    }
    Ok((
        cpu.as_secs_f64() * 100.0 / wall.as_secs_f64(),
        events.load(std::sync::atomic::Ordering::Relaxed),
    ))
}

pub async fn console_bench(
    redis_port: u16,
    jobs: usize,
    dead: usize,
    workers: usize,
    samples: usize,
    consoles: usize,
    secs: u64,
) -> anyhow::Result<()> {
    let url = format!("redis://127.0.0.1:{redis_port}");
    let q = QueueClient::connect(&url, QueueConfig::default()).await?;
    let stored = super::bench_search::fill(&q, jobs).await?;
    super::bench_search::set_statuses(&q, &stored).await?;
    dead_letter(&q, &stored, dead).await?;
    register_workers(&q, workers).await?;
    let audit = gantry_safety::AuditLog::new(q.connection(), gantry_safety::AuditLog::DEFAULT_RETENTION);
    for i in 0..5_000 {
        let e = gantry_safety::AuditEntry::new("ops/key:bench", "dead_letters.replay", format!("job {i}"))
            .details(serde_json::json!({"replayed": 1}));
        audit.record(&e).await?;
    }
    eprintln!("store: {jobs} jobs, {dead} dead letters, {workers} workers, 5000 audit entries");

    let cfg = SchedulerConfig::from_toml(&config()).context("bench config")?;
    let stop = CancellationToken::new();
    let sched = Scheduler::start(cfg, &url, stop.clone()).await?;
    let base = format!("http://{}", sched.addr);
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    let login = http
        .post(format!("{base}/console/login"))
        .header("origin", &base)
        .header("content-type", "application/x-www-form-urlencoded")
        .body("key=key-ops")
        .send()
        .await?;
    let cookie = login
        .headers()
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .and_then(|c| c.split(';').next())
        .context("no session cookie: sign-in failed")?
        .to_owned();
    let job = stored.ids[stored.ids.len() / 2].1;
    let session = [("cookie", cookie.as_str())];
    let admin = [("authorization", "Bearer key-ops")];
    // (page, console path, admin API path for the same data)
    let pages: Vec<(&str, String, Option<String>)> = vec![
        ("overview", "/console".into(), Some("/v1/admin/queues".into())),
        ("workers", "/console/workers".into(), None),
        (
            "jobs, newest",
            "/console/jobs".into(),
            Some("/v1/admin/jobs?limit=50".into()),
        ),
        (
            "jobs, tenant big + dead",
            "/console/jobs?tenant=big&status=dead".into(),
            Some("/v1/admin/jobs?tenant=big&status=dead&limit=50".into()),
        ),
        ("a job", format!("/console/jobs/{job}"), None),
        (
            "dead letters",
            "/console/dead-letters".into(),
            Some("/v1/admin/dead-letters?limit=50".into()),
        ),
        (
            "dead letters, pool cpu, noop",
            "/console/dead-letters?pool=cpu&kind=noop".into(),
            Some("/v1/admin/dead-letters?pool=cpu&kind=noop&limit=50".into()),
        ),
        (
            "dead letters, class permanent",
            "/console/dead-letters?class=permanent".into(),
            Some("/v1/admin/dead-letters?class=permanent&limit=50".into()),
        ),
        (
            "dead letters, tenant big",
            "/console/dead-letters?tenant=big".into(),
            Some("/v1/admin/dead-letters?tenant=big&limit=50".into()),
        ),
        (
            "safety",
            "/console/safety".into(),
            Some("/v1/admin/moderation-events?limit=50".into()),
        ),
        ("tenants", "/console/tenants".into(), None),
        ("a tenant", "/console/tenants/big".into(), None),
        (
            "audit log",
            "/console/audit".into(),
            Some("/v1/admin/audit?limit=200".into()),
        ),
    ];
    println!(
        "console pages over loopback HTTP, {samples} samples each (ms); {jobs} jobs, {dead} dead letters, {workers} workers:"
    );
    println!(
        "  {:<32} {:>7} {:>7} {:>9} {:>9} {:>7}",
        "page", "p50", "p99", "API p50", "API p99", "p99/API"
    );
    let mut worst: f64 = 0.0;
    for (name, path, api) in &pages {
        let mut lat = time_get(&http, &format!("{base}{path}"), &session, samples).await?;
        let (p50, p99) = (pct(&mut lat, 0.5), pct(&mut lat, 0.99));
        worst = worst.max(p99);
        match api {
            Some(api) => {
                let mut a = time_get(&http, &format!("{base}{api}"), &admin, samples).await?;
                let (a50, a99) = (pct(&mut a, 0.5), pct(&mut a, 0.99));
                println!(
                    "  {name:<32} {p50:>7.2} {p99:>7.2} {a50:>9.2} {a99:>9.2} {:>6.2}x",
                    p99 / a99.max(0.001)
                );
            }
            None => println!("  {name:<32} {p50:>7.2} {p99:>7.2} {:>9} {:>9} {:>7}", "-", "-", "-"),
        }
    }
    println!("  slowest page p99: {worst:.1} ms (the goal: under 100 ms)");

    // The confirmation of an action on all matching: a full count (a dry run), by filter.
    let page = http
        .get(format!("{base}/console/dead-letters"))
        .header("cookie", &cookie)
        .send()
        .await?
        .text()
        .await?;
    let csrf = page
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .context("no CSRF token on the dead-letters page")?
        .to_owned();
    println!(
        "the dry-run count before a purge of all matching, {} samples (ms): the POST, the slowest page while it counts, the count done",
        samples.min(10)
    );
    println!(
        "  {:<32} {:>9} {:>9} {:>11} {:>11}",
        "filter", "POST p50", "POST p99", "page max", "done p50"
    );
    for (name, filter) in [
        ("every dead letter", ""),
        ("class permanent", "&class=permanent"),
        ("tenant big", "&tenant=big"),
    ] {
        let (mut post, mut done, mut page_max) = (Vec::new(), Vec::new(), 0f64);
        for _ in 0..samples.min(10) {
            let t = Instant::now();
            let r = http
                .post(format!("{base}/console/dead-letters/preview"))
                .header("cookie", &cookie)
                .header("origin", &base)
                .header("content-type", "application/x-www-form-urlencoded")
                .body(format!("csrf={csrf}&action=purge{filter}"))
                .send()
                .await?;
            let status = r.status();
            let location = r
                .headers()
                .get("location")
                .and_then(|l| l.to_str().ok())
                .map(str::to_owned);
            let body = r.text().await?;
            post.push(t.elapsed().as_secs_f64() * 1e3);
            anyhow::ensure!(
                status.is_success() || status.is_redirection(),
                "preview {name}: HTTP {status}"
            );
            if let Some(loc) = location {
                // Counting in the background: its page until it shows the confirmation.
                loop {
                    let p = Instant::now();
                    let page = http
                        .get(format!("{base}{loc}"))
                        .header("cookie", &cookie)
                        .send()
                        .await?
                        .text()
                        .await?;
                    page_max = page_max.max(p.elapsed().as_secs_f64() * 1e3);
                    if page.contains("id=\"would\"") {
                        break;
                    }
                    anyhow::ensure!(
                        t.elapsed() < Duration::from_secs(120),
                        "{name}: the count did not finish"
                    );
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            } else {
                anyhow::ensure!(body.contains("id=\"would\""), "{name}: no confirmation");
            }
            done.push(t.elapsed().as_secs_f64() * 1e3);
        }
        println!(
            "  {name:<32} {:>9.2} {:>9.2} {:>11.2} {:>11.2}",
            pct(&mut post, 0.5),
            pct(&mut post, 0.99),
            page_max,
            pct(&mut done, 0.5)
        );
    }

    let (idle, _) = cpu_with(&base, 0, secs, &cookie).await?;
    let (busy, events) = cpu_with(&base, consoles, secs, &cookie).await?;
    println!("live overview, {secs} s each, a job submitted every 100 ms (this process: scheduler + clients):");
    println!("  no console open          {idle:>6.2}% of a core");
    println!(
        "  {consoles} consoles following    {busy:>6.2}% of a core ({events} snapshots delivered; {:+.2} points, the goal: under 5)",
        busy - idle
    );
    stop.cancel();
    Ok(())
}
