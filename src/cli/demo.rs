//! `gantry demo`: a local fleet processing sample jobs end to end, driven through the
//! scheduler's HTTP API.
//!
//! It starts its own redis-server on a free port, `gantry scheduler` on the embedded demo
//! configuration and two `gantry worker` processes. Two tenants submit a mix of jobs with
//! `gantry-client` (batches, priorities, retries, a dead letter, delays, an idempotent repeat,
//! cancellations, work the provider did not bill) and meet admission's refusals (rate limit,
//! credits, data residency, placement). Half-way it SIGKILLs a worker to show its leases being
//! recovered; progress comes from the operator route; the summary (jobs per kind and outcome,
//! latency, credits charged against each tenant's balance) from the API.

use std::collections::BTreeMap;
use std::io::BufRead;
use std::path::PathBuf;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use futures::StreamExt;
use gantry_client::{Client, ClientError, JobView, WaitOptions};
use gantry_queue::{JobId, Pool, QueueClient, QueueConfig};
use gantry_testkit::RedisServer;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{Value, json};

use super::time::fmt_ms;

/// The demo tenants' API keys (their SHA-256 is in the embedded scheduler configuration).
const STUDIO_KEY: &str = "demo-studio-key";
const VIDEO_KEY: &str = "demo-video-key";
const ADMIN_KEY: &str = "demo-admin-key";

#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// Ordinary jobs the first tenant submits (plus the scripted special cases).
    #[arg(long, default_value_t = 300)]
    jobs: usize,
    /// Worker processes.
    #[arg(long, default_value_t = 2)]
    workers: usize,
    /// Where the scheduler's and workers' logs go (default: a fresh temporary directory, kept).
    #[arg(long)]
    log_dir: Option<PathBuf>,
    /// Keep the fleet and Redis running after the summary until Ctrl-C, to explore with the CLI.
    #[arg(long)]
    keep: bool,
    /// Mark every generate job's prompt, negative prompt and reference URL (as a signature),
    /// and the idempotency key of the repeated order, with this word, to search the logs, metrics and Redis for it afterwards (the redaction
    /// test does).
    #[arg(long)]
    canary: Option<String>,
}

/// A generate job with `canary` in its prompt, its negative prompt and its reference URLs'
/// signatures (other jobs, or no canary: unchanged).
fn mark(mut job: Value, canary: Option<&str>) -> Value {
    let Some(c) = canary else { return job };
    if job["kind"] != "generate" {
        return job;
    }
    let p = &mut job["payload"];
    if let Some(prompt) = p["prompt"].as_str() {
        p["prompt"] = format!("{prompt} {c}").into();
    }
    p["negative_prompt"] = format!("no {c} artefacts").into();
    if let Some(refs) = p.get_mut("reference_images").and_then(Value::as_array_mut) {
        for r in refs {
            if let Some(u) = r.as_str() {
                *r = format!("{u}?X-Amz-Expires=300&X-Amz-Signature={c}").into();
            }
        }
    }
    job
}

/// The processes the demo started; stopped (SIGTERM, then waited for) when dropped.
struct Fleet {
    children: Vec<(String, Child)>,
    metrics_ports: Vec<(String, u16)>,
    /// Held so the servers' stdouts stay open.
    stdouts: Vec<ChildStdout>,
    exe: PathBuf,
    url: String,
    /// `gantry mock-providers`, once started.
    mock_url: String,
    log_dir: PathBuf,
    /// The scheduler's metrics listener, `host:port`, scraped by the demo's Prometheus.
    scheduler_metrics_addr: String,
    /// The data keys every process seals prompts with (`GANTRY_DATA_KEYS`): the caller's, or
    /// one made for this demo.
    data_keys: String,
}

impl Fleet {
    fn log(&self, name: &str) -> anyhow::Result<std::fs::File> {
        Ok(std::fs::File::create(self.log_dir.join(format!("{name}.log")))?)
    }

    /// Starts `gantry ARGS` (a server on port 0) as `name` and returns the base URL it prints.
    fn spawn_server(&mut self, name: &str, args: &[&str]) -> anyhow::Result<String> {
        let mut child = Command::new(&self.exe)
            .args(args)
            .env("GANTRY_DATA_KEYS", &self.data_keys)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(self.log(name)?)
            .spawn()
            .with_context(|| format!("starting {name}"))?;
        let mut out = std::io::BufReader::new(child.stdout.take().context("stdout")?);
        self.children.push((name.into(), child));
        let mut line = String::new();
        blocking(|| out.read_line(&mut line)).with_context(|| format!("reading {name}'s address"))?;
        let base = line
            .trim()
            .strip_prefix("listening on ")
            .with_context(|| {
                format!(
                    "{name} did not start; see {}",
                    self.log_dir.join(format!("{name}.log")).display()
                )
            })?
            .to_owned();
        self.stdouts.push(out.into_inner());
        Ok(base)
    }

    fn spawn_worker(&mut self, name: &str) -> anyhow::Result<()> {
        let port = gantry_testkit::free_port();
        let child = Command::new(&self.exe)
            .env("GANTRY_DATA_KEYS", &self.data_keys)
            .args(["worker", "--redis-url", &self.url, "--pool", "cpu", "--worker-id", name])
            .args([
                "--metrics-addr",
                &format!("127.0.0.1:{port}"),
                "--registry-heartbeat-secs",
                "1",
            ])
            .args(["--concurrency", "16", "--lease-secs", "3"])
            .args(["--mock-providers", &self.mock_url])
            // The mocks serve the reference images too; only their address is let through.
            .args(["--allow-reference-addr", self.mock_url.trim_start_matches("http://")])
            .arg("--outputs")
            .arg(self.log_dir.join("outputs"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(self.log(name)?)
            .spawn()
            .with_context(|| format!("starting worker {name}"))?;
        self.children.push((name.to_owned(), child));
        self.metrics_ports.push((name.to_owned(), port));
        self.write_scrape_targets()
    }

    /// The scheduler and every worker, as Prometheus file-based discovery reads them (re-read
    /// when a worker is added).
    fn write_scrape_targets(&self) -> anyhow::Result<()> {
        let mut targets = vec![self.scheduler_metrics_addr.clone()];
        targets.extend(self.metrics_ports.iter().map(|(_, p)| format!("127.0.0.1:{p}")));
        let sd = json!([{"targets": targets, "labels": {"namespace": "demo"}}]);
        let tmp = self.log_dir.join("scrape-targets.json.tmp");
        std::fs::write(&tmp, sd.to_string())?;
        std::fs::rename(tmp, self.log_dir.join("scrape-targets.json"))?;
        Ok(())
    }

    /// A local Prometheus (Debian's package) scraping the fleet every second; `None` (with the
    /// reason printed) when it is not installed.
    fn spawn_prometheus(&mut self) -> anyhow::Result<Option<String>> {
        let config = format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: gantry\n    file_sd_configs:\n      - files: ['{}']\n        refresh_interval: 1s\n",
            self.log_dir.join("scrape-targets.json").display()
        );
        std::fs::write(self.log_dir.join("prometheus.yml"), config)?;
        self.write_scrape_targets()?;
        let addr = format!("127.0.0.1:{}", gantry_testkit::free_port());
        let spawned = Command::new("prometheus")
            .arg(format!(
                "--config.file={}",
                self.log_dir.join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                self.log_dir.join("prometheus-data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(self.log("prometheus")?)
            .spawn();
        match spawned {
            Ok(child) => {
                self.children.push(("prometheus".into(), child));
                Ok(Some(format!("http://{addr}")))
            }
            Err(e) => {
                println!("  prometheus     not started ({e}); `./run setup` installs it");
                Ok(None)
            }
        }
    }

    fn sigkill(&mut self, name: &str) {
        if let Some((_, c)) = self.children.iter_mut().find(|(n, _)| n == name) {
            let _ = c.kill();
            let _ = blocking(|| c.wait());
        }
    }
}

/// Runs blocking `f` (reading a child's first line, waiting for it to exit) without stalling
/// the runtime's other tasks: on the demo's multi-thread runtime the worker thread hands its
/// tasks over first.
fn blocking<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => tokio::task::block_in_place(f),
        _ => f(),
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        for (_, c) in &mut self.children {
            if matches!(c.try_wait(), Ok(Some(_))) {
                continue;
            }
            // SIGTERM, so each drains as in production (a signal, not a `kill` process).
            if let Ok(pid) = i32::try_from(c.id()) {
                let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGTERM);
            }
        }
        blocking(|| {
            for (_, c) in &mut self.children {
                let _ = c.wait();
            }
        });
    }
}

/// A synthetic job: sleeps, writes a small output.
fn noop(user: &str, payload: Value) -> Value {
    json!({"user": user, "kind": "noop", "payload": payload})
}

/// A generate job for the mock providers; `pending=2` makes poll-mode tasks poll twice.
fn generate(user: &str, provider: &str, model: &str, regions: &[&str], prompt: &str, extra: Value) -> Value {
    let mut payload = json!({"provider": provider, "model": model, "prompt": format!("{prompt} [mock:pending=2]")});
    if let (Value::Object(p), Value::Object(e)) = (&mut payload, extra) {
        p.extend(e);
    }
    json!({"user": user, "kind": "generate", "allowed_regions": regions, "payload": payload, "max_attempts": 4})
}

/// The studio's generate jobs: one per image provider (one with a reference image by URL,
/// which the worker fetches SSRF-safe and hands the provider as bytes), a residency fallback,
/// a rate-limited call retried after its `Retry-After`, and an output the provider's safety
/// system refuses.
fn studio_generate(mock_url: &str) -> Vec<Value> {
    let no = json!({});
    vec![
        generate(
            "user-0010",
            "openai",
            "gpt-image-1",
            &["US"],
            "a virtual influencer in a cafe, golden hour",
            no.clone(),
        ),
        generate(
            "user-0011",
            "gemini",
            "gemini-2.5-flash-image",
            &["US"],
            "a character sheet of a fox knight",
            json!({"reference_images": [format!("{mock_url}/_mock/refs/fox-knight.png")]}),
        ),
        generate(
            "user-0012",
            "gemini",
            "imagen-4",
            &["US"],
            "a product shot of a glass perfume bottle",
            no.clone(),
        ),
        generate(
            "user-0013",
            "seedream",
            "seedream-4.0",
            &["SG"],
            "a watercolour harbour town",
            no.clone(),
        ),
        generate(
            "user-0014",
            "flux",
            "flux-2-pro",
            &["EU"],
            "a studio portrait, soft light",
            json!({"width": 1024, "height": 768}),
        ),
        generate(
            "user-0015",
            "flux",
            "flux-kontext-pro",
            &["EU", "US"],
            "the same portrait in winter",
            no.clone(),
        ),
        // EU-only consent: OpenAI (US) is never used; admission routes to an EU provider.
        generate(
            "user-0016",
            "openai",
            "gpt-image-1",
            &["EU"],
            "a poster for a jazz night",
            no.clone(),
        ),
        generate(
            "user-0017",
            "openai",
            "gpt-image-1",
            &["US"],
            "a sticker of a happy cloud [mock:429=1]",
            no.clone(),
        ),
        generate(
            "user-0018",
            "flux",
            "flux-2-pro",
            &["EU"],
            "a scene the safety system refuses [mock:moderated_output]",
            no.clone(),
        ),
        // The provider returns the picture on the demo's hash list: the scan before release
        // blocks it, deletes it and records the prompt's SHA-256.
        generate(
            "user-0019",
            "openai",
            "gpt-image-1",
            &["US"],
            "a picture the hash list knows [mock:flagged]",
            no,
        ),
    ]
}

/// The demo's abuse hash list: the PDQ hash of the mocks' flagged picture. Also writes two
/// uploads for the CSAM-hash jobs — that picture, and an ordinary photo-like image.
fn safety_fixtures(outputs: &std::path::Path) -> anyhow::Result<String> {
    use gantry_codecs::pdq::{Prescale, hash_dihedral, luma_from_image};
    use gantry_mocks::media::{FLAGGED_TINT, MediaCache};
    let media = MediaCache::default();
    let flagged = media.image(1024, 1024, false, FLAGGED_TINT);
    let img = image::load_from_memory(&flagged).context("decoding the flagged picture")?;
    let (luma, w, h) = luma_from_image(&img, Prescale::None);
    let hash = hash_dihedral(&luma, w, h).0[0];
    let uploads = outputs.join("inputs/studio-42");
    std::fs::create_dir_all(&uploads)?;
    std::fs::write(uploads.join("upload-flagged.png"), flagged.as_slice())?;
    std::fs::write(
        uploads.join("upload-clean.jpg"),
        media.image(640, 480, true, 32).as_slice(),
    )?;
    Ok(format!(
        "# gantry demo: the mocks' [mock:flagged] picture\npdq:{hash}\n"
    ))
}

/// What one tenant submitted and what admission said.
#[derive(Default)]
struct Submissions {
    ids: Vec<String>,
    duplicates: usize,
    reserved: i64,
    /// Refusals by problem code, with one example detail.
    refused: BTreeMap<String, (usize, String)>,
}

impl Submissions {
    fn admitted(&mut self, s: Vec<gantry_client::Submitted>) {
        for a in s {
            if a.duplicate {
                self.duplicates += 1;
            } else {
                self.reserved += a.credits_reserved;
                self.ids.push(a.id);
            }
        }
    }

    /// Records a refusal; anything but an API refusal is an error.
    fn refused(&mut self, e: ClientError) -> anyhow::Result<()> {
        let ClientError::Api(p) = e else {
            return Err(e.into());
        };
        let detail = match p.retry_after {
            Some(d) => format!("{} (Retry-After {}s)", p.detail, d.as_secs()),
            None => p.detail,
        };
        self.refused.entry(p.code).or_insert((0, detail)).0 += 1;
        Ok(())
    }
}

/// The first tenant's jobs: ordinary work across priorities, plus the special cases.
async fn submit_studio(
    api: &Client,
    ordinary: usize,
    mock_url: &str,
    canary: Option<&str>,
) -> anyhow::Result<Submissions> {
    let mut s = Submissions::default();
    let mut rng_state = 0x9e3779b97f4a7c15u64;
    let mut rand = move || {
        rng_state ^= rng_state << 13;
        rng_state ^= rng_state >> 7;
        rng_state ^= rng_state << 17;
        rng_state
    };
    let mut jobs: Vec<Value> = (0..ordinary)
        .map(|i| {
            let mut j = noop(
                "user-0001",
                json!({"sleep_ms": 20 + rand() % 180, "output_bytes": 4096}),
            );
            j["priority"] = match i % 10 {
                0 => "high",
                9 => "bulk",
                _ => "normal",
            }
            .into();
            j
        })
        .collect();
    // Flaky: the first attempt fails, the retry succeeds.
    jobs.extend((0..20).map(|_| {
        noop(
            "user-0002",
            json!({"sleep_ms": 30, "fail_attempts": 1, "output_bytes": 4096}),
        )
    }));
    // Broken: a permanent error dead-letters at once.
    jobs.extend((0..3).map(|_| {
        let mut j = noop(
            "user-0003",
            json!({"sleep_ms": 10, "fail_attempts": 99, "fail_class": "permanent"}),
        );
        j["max_attempts"] = 3.into();
        j
    }));
    // Delayed by two seconds.
    jobs.extend((0..10).map(|_| {
        let mut j = noop("user-0001", json!({"sleep_ms": 10}));
        j["delay_ms"] = 2000.into();
        j
    }));
    // Finished, but the provider did not bill (a moderation rejection): refunded.
    jobs.extend((0..5).map(|_| noop("user-0004", json!({"sleep_ms": 10, "report_usage": {"billed": false}}))));
    jobs.extend(studio_generate(mock_url).into_iter().map(|j| mark(j, canary)));
    for chunk in jobs.chunks(500) {
        s.admitted(api.submit_batch(chunk).await?);
    }
    // The same order twice under one idempotency key: one job, reserved once.
    let order = canary.map_or_else(|| "order-7731".to_owned(), |c| format!("order-7731-{c}"));
    for _ in 0..2 {
        let job = noop("user-0001", json!({"sleep_ms": 10}));
        s.admitted(vec![api.submit_idempotent(&job, &order).await?]);
    }
    // Submitted for later, then cancelled before it runs: refunded.
    for _ in 0..3 {
        let mut job = noop("user-0001", json!({"sleep_ms": 10}));
        job["delay_ms"] = 60_000.into();
        let a = api.submit(&job).await?;
        api.cancel(&a.id).await?;
        s.admitted(vec![a]);
    }
    // Refused: no provider in the user's consented regions; no pool with 200 GiB of VRAM.
    let residency = json!({"user": "user-0005", "kind": "generate", "allowed_regions": ["BR"],
        "payload": {"provider": "openai", "model": "gpt-image-1", "prompt": "a lighthouse at dawn"}});
    let mut vram = noop("user-0001", json!({}));
    vram["requirements"] = json!({"gpu": {"min_vram_bytes": 200u64 << 30}});
    for job in [residency, vram] {
        match api.submit(&job).await {
            Ok(a) => s.admitted(vec![a]),
            Err(e) => s.refused(e)?,
        }
    }
    Ok(s)
}

/// The second tenant (starter plan: 20 jobs/s, bursts of 100) spends its burst at once.
async fn submit_video(api: &Client, retrying: &Client, canary: Option<&str>) -> anyhow::Result<Submissions> {
    let mut s = Submissions::default();
    let burst: Vec<Value> = (0..100)
        .map(|_| noop("viewer-9", json!({"sleep_ms": 50, "output_bytes": 4096})))
        .collect();
    s.admitted(api.submit_batch(&burst).await?);
    // Forty more at once: refused (rate_limited) unless two seconds of refill passed, so a slow
    // machine shows the refusal as reliably as a fast one. A batch is all or none.
    let more: Vec<Value> = (0..40).map(|_| noop("viewer-9", json!({"sleep_ms": 50}))).collect();
    match api.submit_batch(&more).await {
        Ok(a) => s.admitted(a),
        Err(e) => s.refused(e)?,
    }
    let one = noop("viewer-9", json!({"sleep_ms": 50}));
    // The same job again through a client that honours Retry-After.
    s.admitted(vec![retrying.submit(&one).await?]);
    // Two short videos: Kling (submit, poll, download) and Veo (a long-running operation).
    let videos = [
        generate(
            "viewer-9",
            "kling",
            "kling-v3-std",
            &["SG"],
            "a drone shot over rice terraces",
            json!({"duration_secs": 5}),
        ),
        generate(
            "viewer-9",
            "veo",
            "veo-3-fast",
            &["US"],
            "a timelapse of a city at night",
            json!({"duration_secs": 8}),
        ),
    ];
    let videos: Vec<Value> = videos.into_iter().map(|j| mark(j, canary)).collect();
    s.admitted(retrying.submit_batch(&videos).await?);
    // Two 8-second Veo clips (150 credits a second: 2,400) cost more than the tenant has left.
    let video = json!({"user": "viewer-9", "kind": "generate", "allowed_regions": ["US"],
        "payload": {"provider": "veo", "model": "veo-3-fast", "prompt": "a drone shot over a harbour", "duration_secs": 8, "samples": 2}});
    match api.submit(&video).await {
        Ok(a) => s.admitted(vec![a]),
        Err(e) => s.refused(e)?,
    }
    Ok(s)
}

/// Reads every job, 16 requests at a time.
async fn views(api: &Client, ids: &[String]) -> anyhow::Result<Vec<JobView>> {
    let got: Vec<Result<JobView, ClientError>> = futures::stream::iter(ids)
        .map(|id| api.job(id))
        .buffered(16)
        .collect()
        .await;
    Ok(got.into_iter().collect::<Result<_, _>>()?)
}

/// Whether every finished job's credits are settled.
fn settled(v: &[JobView]) -> bool {
    v.iter()
        .all(|j| j.is_final() && j.credits.as_ref().is_none_or(|c| c.state != "reserved"))
}

pub async fn run(a: DemoArgs) -> anyhow::Result<()> {
    println!("gantry demo: a local fleet processing sample jobs end to end, through the scheduler's API\n");
    let redis = RedisServer::start().context("starting redis-server (run `./run setup` to install it)")?;
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
        stdouts: Vec::new(),
        exe: std::env::current_exe()?,
        url: url.clone(),
        mock_url: String::new(),
        log_dir: log_dir.clone(),
        scheduler_metrics_addr: String::new(),
        data_keys: demo_keys(),
    };
    let keyring = gantry_queue::seal::Keyring::parse(&fleet.data_keys)?;
    println!(
        "  data keys      {} (AES-256-GCM-SIV; prompts, negative prompts and reference images are sealed before they reach Redis)",
        keyring.current()
    );
    let outputs = log_dir.join("outputs");
    let outputs_arg = outputs.to_string_lossy();
    let scheduler_metrics = format!("127.0.0.1:{}", gantry_testkit::free_port());
    let base = fleet.spawn_server(
        "scheduler",
        &[
            "scheduler",
            "--dev",
            "--redis-url",
            &url,
            "--listen",
            "127.0.0.1:0",
            "--metrics-listen",
            &scheduler_metrics,
            "--outputs",
            &outputs_arg,
        ],
    )?;
    println!(
        "  scheduler      {base} (`gantry scheduler --dev`: embedded demo configuration, loopback only; API at {base}/openapi.json)"
    );
    fleet.scheduler_metrics_addr = scheduler_metrics.clone();
    let prometheus = fleet.spawn_prometheus()?;
    if let Some(p) = &prometheus {
        println!("  prometheus     {p} (scrapes the scheduler and every worker each second)");
    }
    fleet.mock_url = fleet.spawn_server("mock-providers", &["mock-providers", "--listen", "127.0.0.1:0"])?;
    println!(
        "  providers      {} (`gantry mock-providers`: OpenAI, Gemini/Imagen/Veo, Kling, Ark, BFL on loopback; request log at /_mock/requests)",
        fleet.mock_url
    );
    for i in 1..=a.workers.max(1) {
        fleet.spawn_worker(&format!("worker-{i}"))?;
    }
    println!(
        "  workers        {} x `gantry worker --pool cpu --concurrency 16` (logs in {})",
        a.workers.max(1),
        log_dir.display()
    );

    let studio = Client::new(&base, STUDIO_KEY)?;
    let video = Client::new(&base, VIDEO_KEY)?;
    let video_retrying = Client::new(&base, VIDEO_KEY)?.with_rate_limit_retries(5);
    let ops = Client::new(&base, ADMIN_KEY)?;
    let tenants = [("studio-42", &studio), ("videos-7", &video)];
    let mut before = BTreeMap::new();
    for (name, api) in tenants {
        before.insert(name, api.balance().await?);
    }
    println!(
        "  tenants        studio-42 (pro plan, weight 2, {} credits), videos-7 (starter plan, weight 1, {} credits)",
        before["studio-42"], before["videos-7"]
    );

    let list = safety_fixtures(&log_dir.join("outputs"))?;
    let meta = ops.publish_hash_list("demo-known-bad", "csam", &list).await?;
    println!(
        "  hash list      {} v{} ({}), published through PUT /v1/admin/hashlists: every output is scanned against it before release",
        meta["name"].as_str().unwrap_or("?"),
        meta["version"],
        meta["category"].as_str().unwrap_or("?")
    );

    let started = Instant::now();
    let (s_studio, s_video) = tokio::try_join!(
        submit_studio(&studio, a.jobs, &fleet.mock_url, a.canary.as_deref()),
        submit_video(&video, &video_retrying, a.canary.as_deref())
    )?;
    let total = s_studio.ids.len() + s_video.ids.len();
    println!(
        "  submitted      {total} jobs in {} through POST /v1/jobs and /v1/jobs:batch",
        fmt_ms(started.elapsed().as_millis() as u64),
    );
    println!(
        "                 studio-42: {} ordinary, 20 flaky, 3 broken, 10 delayed, 5 unbilled, 1 repeated idempotency key, 3 cancelled, 10 generate",
        a.jobs
    );
    println!("                 videos-7: a burst of 100 (its plan's whole burst), 40 more at once, 2 generate (video)");
    for (tenant, s) in [("studio-42", &s_studio), ("videos-7", &s_video)] {
        for (code, (n, detail)) in &s.refused {
            println!("  refused        {tenant}: {n} x {code}: {detail}");
        }
    }
    println!();

    let bar = ProgressBar::new(total as u64);
    bar.set_style(
        ProgressStyle::with_template("  {bar:40.cyan/blue} {pos:>4}/{len} finished  {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let mut killed = false;
    let mut last_line = Instant::now();
    loop {
        let queues = ops.queues().await?;
        let sum = |f: fn(&gantry_client::QueueStats) -> u64| queues.iter().map(f).sum::<u64>();
        let (open, waiting, running) = (sum(|q| q.open()), sum(|q| q.waiting.iter().sum()), sum(|q| q.in_flight));
        bar.set_position(total as u64 - open.min(total as u64));
        bar.set_message(format!(
            "waiting {waiting} | running {running} | delayed {} | dead {}",
            sum(|q| q.delayed),
            sum(|q| q.dead)
        ));
        if !killed && bar.position() * 3 >= total as u64 && running > 0 {
            killed = true;
            fleet.sigkill("worker-1");
            let note = format!(
                "  ! SIGKILLed worker-1 while {running} jobs ran; a replacement starts and the reaper requeues worker-1's leases"
            );
            bar.suspend(|| println!("{note}"));
            fleet.spawn_worker("worker-replacement")?;
        }
        if bar.is_hidden() && (last_line.elapsed() >= Duration::from_secs(1) || open == 0) {
            // No terminal: one progress line a second instead of a bar.
            println!("  {:>4}/{total} finished  {}", bar.position(), bar.message());
            last_line = Instant::now();
        }
        if open == 0 {
            break;
        }
        if started.elapsed() > Duration::from_secs(300) {
            anyhow::bail!(
                "demo did not finish in 5 minutes; see the logs in {}",
                log_dir.display()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bar.finish();

    // Post-processing: three of the generated images upscaled 2x to WebP, as a platform would
    // chain them (the input is the generate job's stored output).
    let mut s_studio = s_studio;
    let generated = views(&studio, &s_studio.ids).await?;
    let inputs: Vec<String> = generated
        .iter()
        .filter(|j| j.kind == "generate" && j.status == "succeeded")
        .filter_map(|j| j.result.as_ref()?["object_key"].as_str().map(str::to_owned))
        .take(3)
        .collect();
    let ups: Vec<Value> = inputs
        .iter()
        .map(|k| json!({"user": "user-0010", "kind": "upscale", "payload": {"input": k, "scale": 2, "format": "webp"}}))
        .collect();
    if !ups.is_empty() {
        let admitted = studio.submit_batch(&ups).await?;
        for a in &admitted {
            studio.wait(&a.id, WaitOptions::default()).await?;
        }
        println!(
            "  post-processing: {} generated images upscaled 2x to WebP (upscale jobs)",
            admitted.len()
        );
        s_studio.admitted(admitted);
    }
    // ... and the generated videos transcoded to 240p web-ready MP4.
    let mut s_video = s_video;
    let clips: Vec<Value> = views(&video, &s_video.ids)
        .await?
        .iter()
        .filter(|j| j.kind == "generate" && j.status == "succeeded")
        .filter_map(|j| j.result.as_ref()?["object_key"].as_str().map(str::to_owned))
        .enumerate()
        // The first also gets a VP9 WebM, a poster and an animated WebP preview.
        .map(|(i, k)| {
            json!({"user": "viewer-9", "kind": "transcode", "payload": {"input": k, "max_height": 240,
            "preset": "veryfast", "webm": i == 0, "previews": i == 0}})
        })
        .collect();
    if !clips.is_empty() {
        let admitted = video_retrying.submit_batch(&clips).await?;
        let (mut encoders, mut extras) = (Vec::new(), Vec::new());
        for a in &admitted {
            let j = video.wait(&a.id, WaitOptions::default()).await?;
            if let Some(d) = j.result.as_ref().map(|r| &r["details"]) {
                encoders.push(format!(
                    "{} ({})",
                    d["encoder"].as_str().unwrap_or("?"),
                    d["encoder_reason"].as_str().unwrap_or("?")
                ));
                for extra in ["webm", "poster", "preview"] {
                    if let Some(k) = d[extra].as_str() {
                        extras.push(k.rsplit('/').next().unwrap_or(k).to_owned());
                    }
                }
            }
        }
        encoders.dedup();
        println!(
            "  post-processing: {} generated videos transcoded to 240p H.264 MP4 (transcode jobs; encoder {}); also {}",
            admitted.len(),
            encoders.join(", "),
            if extras.is_empty() {
                "nothing else".to_owned()
            } else {
                extras.join(", ")
            }
        );
        s_video.admitted(admitted);
    }
    // Trust and safety: uploads checked by CSAM-hash jobs (one is the listed picture), and a
    // generated image checked again as a platform might.
    let mut checks = vec![
        json!({"user": "user-0020", "kind": "csam_hash", "payload": {"input": "inputs/studio-42/upload-clean.jpg"}}),
        json!({"user": "user-0021", "kind": "csam_hash", "payload": {"input": "inputs/studio-42/upload-flagged.png"}}),
    ];
    if let Some(k) = inputs.first() {
        checks.push(
            json!({"user": "user-0010", "kind": "csam_hash", "payload": {"input": k, "lists": ["demo-known-bad"]}}),
        );
    }
    let admitted = studio.submit_batch(&checks).await?;
    for a in &admitted {
        studio.wait(&a.id, WaitOptions::default()).await?;
    }
    println!(
        "  trust & safety: {} CSAM-hash jobs (2 uploads, 1 generated image)",
        admitted.len()
    );
    s_studio.admitted(admitted);
    let wall = started.elapsed();

    // The settler charges finished jobs from the credit stream; wait for it to catch up.
    let settle_deadline = Instant::now() + Duration::from_secs(30);
    let (v_studio, v_video) = loop {
        let v = (views(&studio, &s_studio.ids).await?, views(&video, &s_video.ids).await?);
        if (settled(&v.0) && settled(&v.1)) || Instant::now() > settle_deadline {
            break v;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };

    summary(&v_studio, &v_video, wall, total);
    println!(
        "  idempotent repeats returned the first job's id: {}",
        s_studio.duplicates + s_video.duplicates
    );
    recovered_leases(&url, &keyring, &v_studio.iter().chain(&v_video).collect::<Vec<_>>()).await?;
    safety_summary(&ops, &v_studio.iter().chain(&v_video).collect::<Vec<_>>()).await?;
    println!("\nCredits (reserved at admission, settled from the usage workers report)");
    println!(
        "  {:<10} {:>10} {:>9} {:>8} {:>9} {:>10} {:>10}  ledger",
        "tenant", "before", "reserved", "charged", "refunded", "after", "expected"
    );
    for ((name, api), (s, v)) in tenants.iter().zip([(&s_studio, &v_studio), (&s_video, &v_video)]) {
        let charged: i64 = v.iter().filter_map(|j| j.credits.as_ref()).map(|c| c.charged).sum();
        let refunded = v
            .iter()
            .filter(|j| j.credits.as_ref().is_some_and(|c| c.state == "refunded"))
            .count();
        let after = api.balance().await?;
        let expected = before[name] - charged;
        println!(
            "  {name:<10} {:>10} {:>9} {charged:>8} {refunded:>9} {after:>10} {expected:>10}  {}",
            before[name],
            s.reserved,
            if after == expected {
                "ok: each job charged once"
            } else {
                "MISMATCH"
            }
        );
    }

    // Erasure on request: the first studio user (a generated image, its upscale and its
    // re-check) asks for deletion.
    let receipt = studio.erase_user("user-0010", None).await?;
    let n = |k: &str| receipt["jobs"][k].as_u64().unwrap_or(0);
    println!("\nPrivacy");
    println!(
        "  erased user-0010 of studio-42 (DELETE /v1/users/user-0010/data): {} job records and {} outputs deleted, {} jobs cancelled; complete: {}; audited as users.erase",
        n("deleted"),
        receipt["outputs_deleted"].as_u64().unwrap_or(0),
        n("cancelled"),
        receipt["complete"]
    );
    println!("  kept by retention: moderation records (no prompt text) and trust standing");
    retention_summary(&url, &outputs).await?;

    println!("\nWhere to look");
    if let Some(p) = &prometheus {
        println!("  prometheus: {p}/graph (e.g. sum by (kind) (rate(gantry_jobs_succeeded_total[1m])));");
        println!("    Grafana dashboards to point at it: dashboards/*.json");
    }
    println!(
        "  scheduler metrics (autoscaling signals, credits): http://{}/metrics (a listener apart from the API)",
        fleet.scheduler_metrics_addr
    );
    for (name, port) in &fleet.metrics_ports {
        if name != "worker-1" {
            println!("  {name} metrics: http://127.0.0.1:{port}/metrics");
        }
    }
    println!(
        "  outputs under {}; logs in {}",
        log_dir.join("outputs").display(),
        log_dir.display()
    );
    if a.keep {
        println!(
            "\nThe fleet keeps running. Try:\n  curl -s -H 'Authorization: Bearer {ADMIN_KEY}' {base}/v1/admin/queues\n  curl -s -H 'Authorization: Bearer {STUDIO_KEY}' {base}/v1/credits\n  REDIS_URL={url} gantry dlq list\nCtrl-C to stop."
        );
        tokio::signal::ctrl_c().await?;
    } else {
        println!("  (metrics are served while the fleet runs: `gantry demo --keep` keeps it up)");
    }
    drop(fleet);
    drop(redis);
    Ok(())
}

/// Jobs per kind and outcome, attempts and latency, from the API's view of each job.
fn summary(v_studio: &[JobView], v_video: &[JobView], wall: Duration, total: usize) {
    let mut outcomes: BTreeMap<(&str, &str, &str), u64> = BTreeMap::new();
    let mut latencies = Vec::new();
    let mut attempts = 0u64;
    let (mut outputs, mut dead_example) = (0u64, None);
    for (tenant, v) in [("studio-42", v_studio), ("videos-7", v_video)] {
        for j in v {
            *outcomes.entry((tenant, &j.kind, &j.status)).or_default() += 1;
            attempts += u64::from(j.attempts);
            if j.status == "succeeded"
                && let Some(fin) = j.finished_at_ms
            {
                latencies.push(fin.saturating_sub(j.enqueued_at_ms));
            }
            outputs += u64::from(j.result.is_some());
            // Show a refused generate job if there is one: it says what the provider said.
            if j.status == "dead" && (dead_example.is_none() || j.kind == "generate") {
                dead_example = Some(j);
            }
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
    println!("  {:<10} {:<10} {:<11} {:>6}", "tenant", "kind", "outcome", "jobs");
    for ((tenant, kind, status), n) in &outcomes {
        println!("  {tenant:<10} {kind:<10} {status:<11} {n:>6}");
    }
    println!("  attempts: {attempts} for {total} jobs; outputs stored: {outputs}");
    let mut by_provider: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    for j in v_studio.iter().chain(v_video).filter(|j| j.kind == "generate") {
        let e = by_provider
            .entry(format!(
                "{}/{}",
                j.provider.as_deref().unwrap_or("?"),
                j.model.as_deref().unwrap_or("?")
            ))
            .or_default();
        e.0 += 1;
        e.1 += j.credits.as_ref().map_or(0, |c| c.charged) as u64;
    }
    if !by_provider.is_empty() {
        let list: Vec<String> = by_provider
            .iter()
            .map(|(p, (n, c))| format!("{p} x{n} ({c} credits)"))
            .collect();
        println!("  generate, by provider/model as routed: {}", list.join(", "));
    }
    println!(
        "  latency submit->done (succeeded): p50 {}  p95 {}  p99 {}  max {}",
        fmt_ms(pct(0.50)),
        fmt_ms(pct(0.95)),
        fmt_ms(pct(0.99)),
        fmt_ms(latencies.last().copied().unwrap_or(0))
    );
    println!("  throughput: {:.0} jobs/s", total as f64 / wall.as_secs_f64());
    if let Some(d) = dead_example {
        let err = d
            .error
            .as_ref()
            .map(|e| {
                format!(
                    "{}: {}",
                    e["class"].as_str().unwrap_or("?"),
                    e["message"].as_str().unwrap_or("")
                )
            })
            .unwrap_or_default();
        println!(
            "  dead letter example: {} ({err}, {} attempt(s)); replay: POST /v1/admin/dead-letters:replay {{\"id\": \"{}\"}} or `gantry dlq replay {}`",
            d.id, d.attempts, d.id, d.id
        );
    }
}

/// One line per data class of `gantry retention report`.
async fn retention_summary(url: &str, outputs: &std::path::Path) -> anyhow::Result<()> {
    let policy = gantry_queue::RetentionPolicy::from_env()?;
    let q = QueueClient::connect(url, policy.apply(QueueConfig::default())).await?;
    let store = gantry_worker::outputs::OutputStore::open(&outputs.to_string_lossy())?;
    println!("  retention (`gantry retention report`; GANTRY_RETENTION sets the days):");
    for c in gantry_scheduler::retention::report(&policy, &q, Some(&store)).await? {
        println!(
            "    {:<18} {:>5} stored, {:>4} active  kept {}",
            c.class, c.stored, c.active, c.kept
        );
    }
    Ok(())
}

/// What the hash-list scans found: outputs released after a clean scan, jobs blocked, and the
/// moderation events (category, action, the prompt's SHA-256 — never the prompt).
async fn safety_summary(ops: &Client, v: &[&JobView]) -> anyhow::Result<()> {
    let mut clean: BTreeMap<&str, u64> = BTreeMap::new();
    let mut blocked: BTreeMap<&str, u64> = BTreeMap::new();
    for j in v {
        let details = j.result.as_ref().map(|r| &r["details"]);
        let verdict = details.and_then(|d| d["scan"].as_str().or(d["verdict"].as_str()));
        if verdict == Some("clean") {
            *clean.entry(&j.kind).or_default() += 1;
        } else if j.status == "blocked" {
            *blocked.entry(&j.kind).or_default() += 1;
        }
    }
    let show = |m: &BTreeMap<&str, u64>| {
        let v: Vec<String> = m.iter().map(|(k, n)| format!("{k} {n}")).collect();
        if v.is_empty() { "none".to_owned() } else { v.join(", ") }
    };
    println!("\nTrust and safety (hash list demo-known-bad)");
    println!("  scanned clean and released: {}", show(&clean));
    println!("  blocked, deleted at once:   {}", show(&blocked));
    for e in ops.moderation_events(10).await? {
        println!(
            "  moderation event: job {} category {} list {} v{} by {} (distance {}) -> {}; user {} trust {:.2}{}; prompt sha256 {}",
            e["job_id"].as_str().unwrap_or("?"),
            e["category"].as_str().unwrap_or("?"),
            e["list"].as_str().unwrap_or("?"),
            e["list_version"],
            e["match_kind"].as_str().unwrap_or("?"),
            e["distance"],
            e["action"].as_str().unwrap_or("?"),
            e["user"].as_str().unwrap_or("?"),
            e["trust_score"].as_f64().unwrap_or(0.0),
            if e["user_blocked"] == true { " (blocked)" } else { "" },
            e["prompt_sha256"]
                .as_str()
                .map_or("-".to_owned(), |s| format!("{}…", &s[..s.len().min(12)])),
        );
    }
    Ok(())
}

/// How many jobs a SIGKILLed worker's lease expiry handed to another worker (the job history
/// is the queue's; the API does not show it).
async fn recovered_leases(url: &str, keys: &gantry_queue::seal::Keyring, v: &[&JobView]) -> anyhow::Result<()> {
    let q = QueueClient::connect(url, QueueConfig::default())
        .await?
        .with_keys(keys.clone());
    let mut recovered = 0;
    for j in v {
        let (Ok(id), Ok(pool)) = (j.id.parse::<JobId>(), Pool::new(&j.pool)) else {
            continue;
        };
        if let Ok(r) = q.job_in(&pool, id).await
            && r.history.iter().any(|h| h.event == "lease_expired")
        {
            recovered += 1;
        }
    }
    println!("  leases recovered after the SIGKILL: {recovered} (their jobs ran again elsewhere)");
    Ok(())
}

/// `GANTRY_DATA_KEYS` as given, or a fresh key for this demo's processes.
fn demo_keys() -> String {
    use base64::Engine as _;
    std::env::var("GANTRY_DATA_KEYS").unwrap_or_else(|_| {
        let key: [u8; 32] = rand::random();
        format!("demo-1={}", base64::engine::general_purpose::STANDARD.encode(key))
    })
}
