//! `gantry bench events`: SSE fan-out under load. A `gantry scheduler` process (its memory read
//! from /proc) serves CLIENTS concurrent `GET /v1/events` streams, each filtered to its own
//! jobs, while job events are appended to the pool's stream at RATE per second. Side by side in
//! the same run, a plain `XREAD BLOCK` reader on the same stream gives the floor: the latency
//! Redis alone adds. Reported: delivery latency percentiles over SSE and over XREAD (and their
//! ratio), events delivered of those sent, and the scheduler's memory per connected client.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use gantry_client::Client;
use gantry_queue::JobId;
use tokio::io::AsyncBufReadExt as _;

const STREAM: &str = "gantry:{cpu}:events";
/// Jobs each client follows.
const JOBS_PER_CLIENT: usize = 4;

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

fn config(clients: usize) -> String {
    format!(
        r#"
listen = "127.0.0.1:0"
metrics_listen = "127.0.0.1:0"
require_data_keys = false
[http]
max_connections = {}
[plans.bench]
jobs_per_second = 1000
burst = 1000
[tenants.bench]
plan = "bench"
api_keys = [{{ sha256 = "{}", scopes = ["jobs:read"] }}]
[pools.cpu]
kinds = ["noop"]
"#,
        clients + 64,
        gantry_scheduler::auth::hash_key("bench-key")
    )
}

/// Resident and peak memory of `pid`, KiB.
fn memory_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// Lets this process (and the scheduler it starts) hold one socket per client.
fn raise_fd_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    if let Ok((_, hard)) = getrlimit(Resource::RLIMIT_NOFILE)
        && let Err(e) = setrlimit(Resource::RLIMIT_NOFILE, hard, hard)
    {
        eprintln!("could not raise the open-file limit to {hard}: {e}");
    }
}

pub async fn events_bench(redis_port: u16, clients: usize, rate: u32, secs: u64) -> anyhow::Result<()> {
    raise_fd_limit();
    let url = format!("redis://127.0.0.1:{redis_port}");
    let dir = tempfile::tempdir()?;
    let cfg_path = dir.path().join("scheduler.toml");
    std::fs::write(&cfg_path, config(clients))?;
    let mut child = tokio::process::Command::new(std::env::current_exe()?)
        .args(["scheduler", "--redis-url", &url, "--config"])
        .arg(&cfg_path)
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .context("starting gantry scheduler")?;
    let pid = child.id().context("scheduler pid")?;
    let mut lines = tokio::io::BufReader::new(child.stdout.take().context("scheduler stdout")?).lines();
    let mut base = None;
    while let Some(l) = lines.next_line().await? {
        if let Some(a) = l.strip_prefix("listening on ") {
            base = Some(a.to_owned());
            break;
        }
    }
    let base = base.context("the scheduler did not say where it listens")?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (idle_kib, _) = memory_kib(pid);

    // Each client follows its own jobs; events go round-robin over every client's jobs.
    let jobs: Vec<Vec<JobId>> = (0..clients)
        .map(|_| (0..JOBS_PER_CLIENT).map(|_| JobId::new()).collect())
        .collect();
    let api = Client::new(&base, "bench-key")?;
    let lat_sse: Arc<Mutex<Vec<u64>>> = Arc::default();
    // Events sent within [from, to] µs are measured, wherever their delivery falls.
    let window = Arc::new((AtomicU64::new(u64::MAX), AtomicU64::new(u64::MAX)));
    let connect_started = Instant::now();
    let mut streams = Vec::with_capacity(clients);
    for js in &jobs {
        let ids: Vec<String> = js.iter().map(ToString::to_string).collect();
        let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
        streams.push(api.events(&refs, &[], None).await?);
    }
    let connect_s = connect_started.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (connected_kib, _) = memory_kib(pid);
    let mut tasks = Vec::with_capacity(clients);
    for mut s in streams {
        let (lat, w) = (lat_sse.clone(), window.clone());
        tasks.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            while let Ok(Some(e)) = s.next().await {
                let now = now_us();
                if let Some(sent) = sent_us(&e.data)
                    && in_window(&w, sent)
                {
                    mine.push(now.saturating_sub(sent));
                }
            }
            if let Ok(mut l) = lat.lock() {
                l.extend(mine);
            }
        }));
    }

    // The floor: one XREAD BLOCK reader on the same stream.
    let lat_redis: Arc<Mutex<Vec<u64>>> = Arc::default();
    let stop = tokio_util::sync::CancellationToken::new();
    let reader = {
        let (lat, w, stop) = (lat_redis.clone(), window.clone(), stop.clone());
        let client = redis::Client::open(url.as_str())?;
        let mut c = client.get_multiplexed_async_connection().await?;
        tokio::spawn(async move {
            let mut last = "$".to_owned();
            while !stop.is_cancelled() {
                let r: redis::RedisResult<Option<redis::streams::StreamReadReply>> = redis::cmd("XREAD")
                    .arg("COUNT")
                    .arg(1000)
                    .arg("BLOCK")
                    .arg(200)
                    .arg("STREAMS")
                    .arg(STREAM)
                    .arg(&last)
                    .query_async(&mut c)
                    .await;
                let Ok(Some(reply)) = r else { continue };
                let now = now_us();
                for k in reply.keys {
                    for e in k.ids {
                        if let Some(r) = e.get::<String>("result")
                            && let Some(sent) = sent_us(&format!("{{\"data\":{{\"result\":{r}}}}}"))
                            && in_window(&w, sent)
                            && let Ok(mut l) = lat.lock()
                        {
                            l.push(now.saturating_sub(sent));
                        }
                        last = e.id;
                    }
                }
            }
        })
    };

    // The producer: RATE events a second, in 10 ms ticks.
    let client = redis::Client::open(url.as_str())?;
    let mut c = client.get_multiplexed_async_connection().await?;
    let flat: Vec<JobId> = jobs.iter().flatten().copied().collect();
    let per_tick = (rate as usize).div_ceil(100).max(1);
    let mut sent = 0usize;
    let mut sent_measured = 0usize;
    let warmup = Duration::from_secs(2);
    let began = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    let mut rss_peak_load = 0;
    while began.elapsed() < warmup + Duration::from_secs(secs) {
        tick.tick().await;
        let in_window = began.elapsed() >= warmup;
        if in_window && window.0.load(Ordering::Relaxed) == u64::MAX {
            window.0.store(now_us(), Ordering::Relaxed);
        }
        let mut p = redis::pipe();
        for _ in 0..per_tick {
            let job = flat[sent % flat.len()];
            let result = format!(
                r#"{{"object_key":"bench/{}","size_bytes":0,"content_type":"application/octet-stream","sha256":""}}"#,
                now_us()
            );
            p.cmd("XADD")
                .arg(STREAM)
                .arg("MAXLEN")
                .arg("~")
                .arg(100_000)
                .arg("*")
                .arg(&[
                    ("id", job.to_string()),
                    ("ten", "bench".into()),
                    ("kind", "noop".into()),
                    ("type", "job.succeeded".into()),
                    ("at", (now_us() / 1000).to_string()),
                    ("result", result),
                ])
                .ignore();
            sent += 1;
            if in_window {
                sent_measured += 1;
            }
        }
        p.query_async::<()>(&mut c).await?;
        if sent % (rate as usize).max(1) < per_tick {
            rss_peak_load = rss_peak_load.max(memory_kib(pid).0);
        }
    }
    window.1.store(now_us(), Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (_, hwm_kib) = memory_kib(pid);
    drop(child);
    stop.cancel();
    let _ = reader.await;
    for t in tasks {
        t.abort();
        let _ = t.await;
    }

    let mut sse: Vec<u64> = lat_sse.lock().map(|l| l.clone()).unwrap_or_default();
    let mut raw: Vec<u64> = lat_redis.lock().map(|l| l.clone()).unwrap_or_default();
    sse.sort_unstable();
    raw.sort_unstable();
    let ms = |v: &[u64], p: f64| percentile(v, p) as f64 / 1000.0;
    let per_client_kib = connected_kib.saturating_sub(idle_kib) as f64 / clients.max(1) as f64;
    let report = serde_json::json!({
        "clients": clients, "rate_per_s": rate, "secs": secs,
        "events_sent": sent_measured, "sse_delivered": sse.len(), "xread_delivered": raw.len(),
        "sse_ms": {"p50": ms(&sse, 0.50), "p99": ms(&sse, 0.99), "max": ms(&sse, 1.0)},
        "xread_ms": {"p50": ms(&raw, 0.50), "p99": ms(&raw, 0.99), "max": ms(&raw, 1.0)},
        "p99_ratio_sse_over_xread": ms(&sse, 0.99) / ms(&raw, 0.99).max(0.001),
        "scheduler_kib": {"idle": idle_kib, "clients_connected": connected_kib, "under_load": rss_peak_load, "peak": hwm_kib},
        "memory_per_client_kib": (per_client_kib * 10.0).round() / 10.0,
        "connect_all_s": (connect_s * 100.0).round() / 100.0,
    });
    println!(
        "{clients} SSE clients, {rate} events/s for {secs} s: delivered {} of {sent_measured} (SSE) and {} (XREAD)",
        sse.len(),
        raw.len()
    );
    println!(
        "  latency SSE    p50 {:.1} ms  p99 {:.1} ms  max {:.1} ms",
        ms(&sse, 0.5),
        ms(&sse, 0.99),
        ms(&sse, 1.0)
    );
    println!(
        "  latency XREAD  p50 {:.1} ms  p99 {:.1} ms  max {:.1} ms   (p99 ratio SSE/XREAD {:.2})",
        ms(&raw, 0.5),
        ms(&raw, 0.99),
        ms(&raw, 1.0),
        ms(&sse, 0.99) / ms(&raw, 0.99).max(0.001)
    );
    println!(
        "  scheduler memory: {} MiB idle, {} MiB with the clients connected ({per_client_kib:.1} KiB per client), {} MiB peak under load",
        idle_kib / 1024,
        connected_kib / 1024,
        hwm_kib / 1024
    );
    println!("{report}");
    Ok(())
}

fn in_window(w: &(AtomicU64, AtomicU64), sent: u64) -> bool {
    sent >= w.0.load(Ordering::Relaxed) && sent <= w.1.load(Ordering::Relaxed)
}

/// The `p` quantile of sorted `v` (0 when empty).
fn percentile(v: &[u64], p: f64) -> u64 {
    if v.is_empty() {
        return 0;
    }
    let i = ((v.len() - 1) as f64 * p).round() as usize;
    v[i.min(v.len() - 1)]
}

/// The send time the producer put in the event's result (`bench/<µs>`).
fn sent_us(data: &str) -> Option<u64> {
    let v: serde_json::Value = serde_json::from_str(data).ok()?;
    v["data"]["result"]["object_key"]
        .as_str()?
        .strip_prefix("bench/")?
        .parse()
        .ok()
}
