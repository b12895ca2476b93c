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
//!
//! [`run`] is a sequence of phases — start the fleet, submit, watch, chain post-processing on
//! the outputs, settle, report — each a function of its own. The report is one value
//! ([`report::DemoReport`]): printed as text, or as JSON with `--json`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use gantry_client::{Client, JobView, WaitOptions};
use gantry_testkit::RedisServer;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{Value, json};

use super::time::fmt_ms;

/// Under `--json`, stdout holds the report alone and the human text goes to stderr.
static TEXT_TO_STDERR: AtomicBool = AtomicBool::new(false);

fn text_to_stderr() -> bool {
    TEXT_TO_STDERR.load(Ordering::Relaxed)
}

/// `println!` for the demo's human text: stdout, or stderr under `--json`.
macro_rules! say {
    ($($t:tt)*) => {
        if $crate::cli::demo::text_to_stderr() {
            eprintln!($($t)*)
        } else {
            println!($($t)*)
        }
    };
}

mod fleet;
mod jobs;
mod report;
mod webhooks;

use fleet::Fleet;
use jobs::Submissions;
use report::{DemoReport, Download, KilledWorker, Ledger, Metrics, PostProcessing, SseFollow};

/// The demo tenants' API keys (their SHA-256 is in the embedded scheduler configuration).
const STUDIO_KEY: &str = "demo-studio-key";
const VIDEO_KEY: &str = "demo-video-key";
const ADMIN_KEY: &str = "demo-admin-key";
/// The hash list the demo publishes; every output is scanned against it.
const HASH_LIST: &str = "demo-known-bad";
/// The list with a review band: an entry 20 bits from the mocks' `[mock:near]` picture.
const NEAR_LIST: &str = "demo-near-match";

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
    /// and the idempotency key of the repeated order, with this word, to search the logs,
    /// metrics and Redis for it afterwards (the redaction test does).
    #[arg(long)]
    canary: Option<String>,
    /// Print the report as JSON on stdout (the progress and the text summary go to stderr).
    #[arg(long)]
    json: bool,
    /// The global `--otlp-endpoint` (or `OTEL_EXPORTER_OTLP_ENDPOINT`): every process of the
    /// fleet sends its traces there.
    #[arg(skip)]
    pub otlp_endpoint: Option<String>,
    /// The global `--otlp-protocol` (or `OTEL_EXPORTER_OTLP_PROTOCOL`), passed on the same way.
    #[arg(skip)]
    pub otlp_protocol: super::OtlpProtocol,
}

/// The running fleet and the API clients of its tenants and operator.
struct Stack {
    /// Dropped last: the fleet's processes stop first.
    redis: RedisServer,
    fleet: Fleet,
    url: String,
    base: String,
    keyring: gantry_queue::seal::Keyring,
    prometheus: Option<String>,
    log_dir: PathBuf,
    studio: Client,
    video: Client,
    video_retrying: Client,
    ops: Client,
    /// Each tenant's balance before the first job.
    before: BTreeMap<&'static str, i64>,
    /// studio-42's webhook receiver.
    hooks: webhooks::Receiver,
}

pub async fn run(a: DemoArgs) -> anyhow::Result<()> {
    TEXT_TO_STDERR.store(a.json, Ordering::Relaxed);
    let mut stack = start(&a).await?;
    let started = Instant::now();
    let (mut s_studio, mut s_video) = submit(&stack, &a, started).await?;
    let total = s_studio.ids.len() + s_video.ids.len();
    let killed = watch(&mut stack, total, started).await?;
    let mut post = chain(&stack, &mut s_studio, &mut s_video).await?;
    post.pipelines = pipelines(&stack, &mut s_studio, &mut s_video).await?;
    post.review = Some(review(&stack).await?);
    let wall = started.elapsed();
    let (v_studio, v_video) = settle(&stack, &s_studio, &s_video).await?;
    let report = report(
        &stack,
        wall,
        total,
        (&s_studio, &v_studio),
        (&s_video, &v_video),
        killed,
        post,
    )
    .await?;
    report::print(&report);
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    }
    if a.keep {
        say!(
            "\nThe fleet keeps running. Try:\n  curl -s -H 'Authorization: Bearer {ADMIN_KEY}' {}/v1/admin/queues\n  curl -s -H 'Authorization: Bearer {STUDIO_KEY}' {}/v1/credits\n  REDIS_URL={} gantry dlq list\nCtrl-C to stop.",
            stack.base,
            stack.base,
            stack.url
        );
        tokio::signal::ctrl_c().await?;
    } else {
        say!("  (metrics are served while the fleet runs: `gantry demo --keep` keeps it up)");
    }
    let Stack { redis, fleet, .. } = stack;
    drop(fleet);
    drop(redis);
    Ok(())
}

/// Phase 1: Redis, the scheduler, Prometheus, the mock providers and the workers; the tenants'
/// balances; the hash list.
async fn start(a: &DemoArgs) -> anyhow::Result<Stack> {
    say!("gantry demo: a local fleet processing sample jobs end to end, through the scheduler's API\n");
    let redis = RedisServer::start().context("starting redis-server (run `./run setup` to install it)")?;
    let url = redis.url();
    let log_dir = match &a.log_dir {
        Some(d) => d.clone(),
        None => tempfile::Builder::new().prefix("gantry-demo-").tempdir()?.keep(),
    };
    std::fs::create_dir_all(&log_dir)?;
    say!("  redis-server   {url} (private, started for this demo)");
    let mut fleet = Fleet {
        children: Vec::new(),
        metrics_ports: Vec::new(),
        stdouts: Vec::new(),
        exe: std::env::current_exe()?,
        url: url.clone(),
        mock_url: String::new(),
        log_dir: log_dir.clone(),
        scheduler_metrics_addr: String::new(),
        data_keys: fleet::demo_keys(),
        evidence_keys: fleet::evidence_keys(),
        otlp_endpoint: a.otlp_endpoint.clone(),
        otlp_protocol: a.otlp_protocol,
    };
    let keyring = gantry_queue::seal::Keyring::parse(&fleet.data_keys)?;
    say!(
        "  data keys      {} (AES-256-GCM-SIV; prompts, negative prompts and reference images are sealed before they reach Redis)",
        keyring.current()
    );
    let outputs = log_dir.join("outputs");
    let outputs_arg = outputs.to_string_lossy();
    let scheduler_metrics = format!("127.0.0.1:{}", gantry_testkit::free_port());
    // studio-42's webhook receiver, on loopback: the scheduler sends only to public addresses
    // unless told otherwise, so it is told to allow this one.
    let hook_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let hook_addr = hook_listener.local_addr()?.to_string();
    let hooks = webhooks::Receiver::serve(hook_listener, format!("http://{hook_addr}/hooks"));
    // The mock providers first: they serve the CyberTipline mock the scheduler reports to.
    fleet.mock_url = fleet.spawn_server("mock-providers", &["mock-providers", "--listen", "127.0.0.1:0"])?;
    let tipline = format!("{}/cybertipline/ispws", fleet.mock_url);
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
            "--webhook-allow",
            &hook_addr,
            "--cybertipline-url",
            &tipline,
        ],
    )?;
    say!(
        "  scheduler      {base} (`gantry scheduler --dev`: embedded demo configuration, loopback only; API at {base}/openapi.json)"
    );
    fleet.scheduler_metrics_addr = scheduler_metrics;
    let prometheus = fleet.spawn_prometheus()?;
    if let Some(p) = &prometheus {
        say!("  prometheus     {p} (scrapes the scheduler and every worker each second)");
    }
    say!(
        "  providers      {} (`gantry mock-providers`: OpenAI, Gemini/Imagen/Veo, Kling, Ark, BFL on loopback; request log at /_mock/requests)",
        fleet.mock_url
    );
    say!(
        "  cybertipline   {tipline} (the mock of NCMEC's reporting API, in `gantry mock-providers`; what it received at /_mock/cybertipline)"
    );
    for i in 1..=a.workers.max(1) {
        fleet.spawn_worker(&format!("worker-{i}"))?;
    }
    say!(
        "  workers        {} x `gantry worker --pool cpu --concurrency 16` (logs in {})",
        a.workers.max(1),
        log_dir.display()
    );

    let studio = Client::new(&base, STUDIO_KEY)?;
    let video = Client::new(&base, VIDEO_KEY)?;
    let video_retrying = Client::new(&base, VIDEO_KEY)?.with_rate_limit_retries(5);
    let ops = Client::new(&base, ADMIN_KEY)?;
    let mut before = BTreeMap::new();
    before.insert("studio-42", studio.balance().await?);
    before.insert("videos-7", video.balance().await?);
    say!(
        "  tenants        studio-42 (pro plan, weight 2, {} credits), videos-7 (starter plan, weight 1, {} credits)",
        before["studio-42"],
        before["videos-7"]
    );

    let hook = studio.create_webhook(&format!("http://{hook_addr}/hooks"), &[]).await?;
    hooks.registered(&hook.id, &hook.secret);
    say!(
        "  webhook        studio-42's receiver at http://{hook_addr}/hooks, registered through POST /v1/webhooks as {} (every job event, signed per Standard Webhooks)",
        hook.id
    );

    let (list, near) = jobs::safety_fixtures(&outputs)?;
    let meta = ops.publish_hash_list(HASH_LIST, "csam", &list).await?;
    say!(
        "  hash list      {} v{} ({}), published through PUT /v1/admin/hashlists: every output is scanned against it before release",
        meta["name"].as_str().unwrap_or("?"),
        meta["version"],
        meta["category"].as_str().unwrap_or("?")
    );
    let meta = ops
        .publish_hash_list_with_band(NEAR_LIST, "csam", (8, 31), &near)
        .await?;
    say!(
        "  hash list      {} v{} ({}), with a review band: PDQ within {} is blocked at once, within {} held for a reviewer",
        meta["name"].as_str().unwrap_or("?"),
        meta["version"],
        meta["category"].as_str().unwrap_or("?"),
        meta["block_distance"],
        meta["review_distance"]
    );
    Ok(Stack {
        redis,
        fleet,
        url,
        base,
        keyring,
        prometheus,
        log_dir,
        studio,
        video,
        video_retrying,
        ops,
        before,
        hooks,
    })
}

/// Phase 2: both tenants submit at once.
async fn submit(s: &Stack, a: &DemoArgs, started: Instant) -> anyhow::Result<(Submissions, Submissions)> {
    let (s_studio, s_video) = tokio::try_join!(
        jobs::submit_studio(&s.studio, a.jobs, &s.fleet.mock_url, a.canary.as_deref()),
        jobs::submit_video(&s.video, &s.video_retrying, a.canary.as_deref())
    )?;
    let total = s_studio.ids.len() + s_video.ids.len();
    say!(
        "  submitted      {total} jobs in {} through POST /v1/jobs and /v1/jobs:batch",
        fmt_ms(started.elapsed().as_millis() as u64),
    );
    say!(
        "                 studio-42: {} ordinary, 20 flaky, 3 broken, 10 delayed, 5 unbilled, 1 repeated idempotency key, 3 cancelled, 11 generate",
        a.jobs
    );
    say!("                 videos-7: a burst of 100 (its plan's whole burst), 40 more at once, 2 generate (video)");
    for (tenant, sub) in [("studio-42", &s_studio), ("videos-7", &s_video)] {
        for (code, (n, detail)) in &sub.refused {
            say!("  refused        {tenant}: {n} x {code}: {detail}");
        }
    }
    say!();
    Ok((s_studio, s_video))
}

/// Phase 3: progress until every job has finished; a third of the way in, one worker is
/// SIGKILLed while it runs jobs and a replacement started.
async fn watch(s: &mut Stack, total: usize, started: Instant) -> anyhow::Result<Option<KilledWorker>> {
    let bar = ProgressBar::new(total as u64);
    bar.set_style(
        ProgressStyle::with_template("  {bar:40.cyan/blue} {pos:>4}/{len} finished  {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let mut killed = None;
    let mut last_line = Instant::now();
    loop {
        let queues = s.ops.queues().await?;
        let sum = |f: fn(&gantry_client::QueueStats) -> u64| queues.iter().map(f).sum::<u64>();
        let (open, waiting, running) = (sum(|q| q.open()), sum(|q| q.waiting.iter().sum()), sum(|q| q.in_flight));
        bar.set_position(total as u64 - open.min(total as u64));
        bar.set_message(format!(
            "waiting {waiting} | running {running} | delayed {} | dead {}",
            sum(|q| q.delayed),
            sum(|q| q.dead)
        ));
        if killed.is_none() && bar.position() * 3 >= total as u64 && running > 0 {
            s.fleet.sigkill("worker-1");
            killed = Some(KilledWorker {
                name: "worker-1".into(),
                running_jobs: running,
            });
            let note = format!(
                "  ! SIGKILLed worker-1 while {running} jobs ran; a replacement starts and the reaper requeues worker-1's leases"
            );
            bar.suspend(|| say!("{note}"));
            s.fleet.spawn_worker("worker-replacement")?;
        }
        if bar.is_hidden() && (last_line.elapsed() >= Duration::from_secs(1) || open == 0) {
            // No terminal: one progress line a second instead of a bar.
            say!("  {:>4}/{total} finished  {}", bar.position(), bar.message());
            last_line = Instant::now();
        }
        if open == 0 {
            break;
        }
        if started.elapsed() > Duration::from_secs(300) {
            anyhow::bail!(
                "demo did not finish in 5 minutes; see the logs in {}",
                s.log_dir.display()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bar.finish();
    Ok(killed)
}

/// Phase 4: post-processing chained on the outputs, as a platform would: three generated
/// images upscaled, the generated videos transcoded, uploads and one image checked against the
/// hash list.
async fn chain(s: &Stack, s_studio: &mut Submissions, s_video: &mut Submissions) -> anyhow::Result<PostProcessing> {
    let mut post = PostProcessing::default();
    let object_keys = |v: Vec<JobView>| -> Vec<String> {
        v.iter()
            .filter(|j| j.kind == "generate" && j.status == "succeeded")
            .filter_map(|j| j.result.as_ref()?["object_key"].as_str().map(str::to_owned))
            .collect()
    };
    let images: Vec<String> = object_keys(jobs::views(&s.studio, &s_studio.ids).await?)
        .into_iter()
        .take(3)
        .collect();
    let ups: Vec<Value> = images
        .iter()
        .map(|k| json!({"user": "user-0010", "kind": "upscale", "payload": {"input": k, "scale": 2, "format": "webp"}}))
        .collect();
    if !ups.is_empty() {
        // Followed over the event stream, not by polling: opened before the submission, so
        // no event is missed.
        let mut stream = s.studio.events(&[], &[], None).await?;
        let admitted = s.studio.submit_batch(&ups).await?;
        let mut open: std::collections::BTreeSet<String> = admitted.iter().map(|a| a.id.clone()).collect();
        let mut events = 0;
        let deadline = Instant::now() + Duration::from_secs(120);
        while !open.is_empty() && Instant::now() < deadline {
            let e = match tokio::time::timeout(deadline.saturating_duration_since(Instant::now()), stream.next()).await
            {
                Ok(Ok(Some(e))) => e,
                _ => break,
            };
            if let Some(id) = e.job_id().filter(|id| open.contains(id)) {
                events += 1;
                if e.is_final() {
                    open.remove(&id);
                }
            }
        }
        post.followed_over_sse = Some(SseFollow {
            jobs: admitted.len(),
            events,
            finished: admitted.len() - open.len(),
        });
        say!(
            "  event stream: followed the {} upscale jobs over GET /v1/events (Server-Sent Events, no polling): {} events, {} finished",
            admitted.len(),
            events,
            admitted.len() - open.len()
        );
        let mut first = None;
        for a in &admitted {
            // Final already (or, if the stream fell short, waited for by polling).
            let j = s.studio.wait(&a.id, WaitOptions::default()).await?;
            first = first.or(Some(j));
        }
        post.upscaled = admitted.len();
        say!(
            "  post-processing: {} generated images upscaled 2x to WebP (upscale jobs)",
            post.upscaled
        );
        // A platform fetches the result through the API rather than from the bucket.
        if let Some(j) = first.filter(|j| j.status == "succeeded")
            && let Some(r) = &j.result
            && let Some(key) = r["object_key"].as_str()
        {
            let name = key.rsplit('/').next().unwrap_or(key);
            let bytes = s.studio.output(&j.id, name).await?;
            let d = Download {
                path: format!("/v1/jobs/{}/outputs/{name}", j.id),
                bytes: bytes.len(),
                sha256_matches: r["sha256"].as_str() == Some(gantry_worker::outputs::sha256_hex(&bytes).as_str()),
            };
            say!(
                "  download: GET {} -> {} bytes, SHA-256 {} the job's result",
                d.path,
                d.bytes,
                if d.sha256_matches { "matches" } else { "DOES NOT MATCH" }
            );
            post.download = Some(d);
        }
        s_studio.admitted(admitted);
    }
    // A small upload upscaled 4x with no method named: the worker's super-resolution network
    // when it has one (models/fetch.sh; on the CPU here), else Lanczos3; the result says which
    // ran and why.
    let sr = json!({"user": "user-0010", "kind": "upscale",
        "payload": {"input": "inputs/studio-42/upload-small.png", "scale": 4}});
    let admitted = s.studio.submit_batch(&[sr]).await?;
    if let Some(a) = admitted.first() {
        let started = Instant::now();
        let j = s.studio.wait(&a.id, WaitOptions::default()).await?;
        let d = j.result.as_ref().map(|r| &r["details"]);
        let line = match d {
            Some(d) if j.status == "succeeded" => format!(
                "{}{} ({}), 128x128 -> 512x512 in {:.1} s",
                d["method"].as_str().unwrap_or("?"),
                d["model"].as_str().map(|m| format!(" by {m}")).unwrap_or_default(),
                d["method_reason"].as_str().unwrap_or("?"),
                started.elapsed().as_secs_f64()
            ),
            _ => format!("{} ({:?})", j.status, j.error),
        };
        say!("  post-processing: a 128x128 upload upscaled 4x: {line}");
        post.super_resolution = Some(line);
    }
    s_studio.admitted(admitted);
    // The generated videos transcoded to 240p web-ready MP4; the first also gets a VP9 WebM,
    // a poster and an animated WebP preview.
    let clips: Vec<Value> = object_keys(jobs::views(&s.video, &s_video.ids).await?)
        .iter()
        .enumerate()
        .map(|(i, k)| {
            json!({"user": "viewer-9", "kind": "transcode", "payload": {"input": k, "max_height": 240,
            "preset": "veryfast", "webm": i == 0, "previews": i == 0}})
        })
        .collect();
    if !clips.is_empty() {
        let admitted = s.video_retrying.submit_batch(&clips).await?;
        for a in &admitted {
            let j = s.video.wait(&a.id, WaitOptions::default()).await?;
            if let Some(d) = j.result.as_ref().map(|r| &r["details"]) {
                post.encoders.push(format!(
                    "{} ({})",
                    d["encoder"].as_str().unwrap_or("?"),
                    d["encoder_reason"].as_str().unwrap_or("?")
                ));
                for extra in ["webm", "poster", "preview"] {
                    if let Some(k) = d[extra].as_str() {
                        post.extras.push(k.rsplit('/').next().unwrap_or(k).to_owned());
                    }
                }
            }
        }
        post.encoders.dedup();
        post.transcoded = admitted.len();
        say!(
            "  post-processing: {} generated videos transcoded to 240p H.264 MP4 (transcode jobs; encoder {}); also {}",
            post.transcoded,
            post.encoders.join(", "),
            if post.extras.is_empty() {
                "nothing else".to_owned()
            } else {
                post.extras.join(", ")
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
    if let Some(k) = images.first() {
        checks.push(json!({"user": "user-0010", "kind": "csam_hash", "payload": {"input": k, "lists": [HASH_LIST]}}));
    }
    let admitted = s.studio.submit_batch(&checks).await?;
    for a in &admitted {
        s.studio.wait(&a.id, WaitOptions::default()).await?;
    }
    post.csam_checks = admitted.len();
    say!(
        "  trust & safety: {} CSAM-hash jobs (2 uploads, 1 generated image)",
        post.csam_checks
    );
    s_studio.admitted(admitted);
    Ok(post)
}

/// Phase 4c: trust and safety's people. The generated image close to the list with a review
/// band is held (status `review`); the demo's reviewer (the operator key holds `safety:review`)
/// looks at it and confirms the match: the image is taken down, preserved sealed in the
/// quarantine, and the report goes to the CyberTipline mock, followed until it is submitted.
async fn review(s: &Stack) -> anyhow::Result<report::ReviewCase> {
    let deadline = Instant::now() + Duration::from_secs(60);
    let item = loop {
        if let Some(i) = s.ops.reviews(true, 10).await?.into_iter().next() {
            break i;
        }
        if Instant::now() > deadline {
            anyhow::bail!("no job was held for review; see the logs in {}", s.log_dir.display());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let id = item["id"].as_str().unwrap_or_default().to_owned();
    let list = item["matches"][0]["list"].as_str().unwrap_or("?").to_owned();
    let distance = item["matches"][0]["distance"].clone();
    say!(
        "  review: job {id} held (status review): its image is {distance} bits from an entry of {list}; nothing released"
    );
    let decided = s
        .ops
        .decide_review(
            &id,
            "confirm",
            "demo reviewer: the picture is the listed one, altered",
            false,
        )
        .await?;
    let evidence_id = decided["evidence_id"].as_str().map(str::to_owned);
    say!(
        "  review: a reviewer confirmed it: taken down, preserved sealed in the quarantine (evidence {}), a report queued for the CyberTipline",
        evidence_id.as_deref().unwrap_or("none")
    );
    let deadline = Instant::now() + Duration::from_secs(90);
    let report = loop {
        let r = s.ops.report(&id).await?;
        if matches!(r["status"].as_str(), Some("submitted" | "failed")) || Instant::now() > deadline {
            break r;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let case = report::ReviewCase {
        job_id: id,
        list,
        distance,
        decision: "confirmed".into(),
        evidence_id,
        report_status: report["status"].as_str().unwrap_or("?").to_owned(),
        authority_report_id: report["authority_report_id"].as_str().map(str::to_owned),
        files_uploaded: report["uploaded"].as_array().map_or(0, Vec::len),
        attempts: report["attempts"].as_u64().unwrap_or(0),
        awaiting_confirmation: s
            .ops
            .reports(100)
            .await?
            .iter()
            .filter(|r| r["status"] == "awaiting_confirmation")
            .count(),
    };
    say!(
        "  report: {} to the CyberTipline mock as report {} ({} file(s) uploaded and described, finished)",
        case.report_status,
        case.authority_report_id.as_deref().unwrap_or("-"),
        case.files_uploaded
    );
    Ok(case)
}

/// Phase 4b: the platform's real flows, each in one request: a studio's generate of two
/// samples → an upscale of each → a scan of each (`for_each`), and a video generated, transcoded for the web and both renditions scanned. Followed
/// over the event stream to their ends (no polling); their steps join the tenants' jobs.
async fn pipelines(
    s: &Stack,
    s_studio: &mut Submissions,
    s_video: &mut Submissions,
) -> anyhow::Result<Vec<report::PipelineRun>> {
    let studio = json!({"steps": [
        {"name": "image", "user": "user-0030", "kind": "generate", "allowed_regions": ["US"],
         "payload": {"provider": "openai", "model": "gpt-image-1", "prompt": "a paper boat on a pond", "samples": 2}},
        {"name": "big", "for_each": "image", "user": "user-0030", "kind": "upscale",
         "payload": {"input": "${each.output}", "scale": 2, "format": "webp"}},
        {"name": "scan", "for_each": "big", "user": "user-0030", "kind": "csam_hash",
         "payload": {"input": "${each.output}", "lists": [HASH_LIST]}},
    ]});
    // The whole chain a video platform runs: an image, upscaled, animated into a clip (the
    // upscaled image as the video model's reference), transcoded for the web, and both the
    // video and its poster scanned.
    let video = json!({"steps": [
        {"name": "image", "user": "viewer-9", "kind": "generate", "allowed_regions": ["US"],
         "payload": {"provider": "openai", "model": "gpt-image-1", "prompt": "a pier at dusk"}},
        {"name": "big", "needs": ["image"], "user": "viewer-9", "kind": "upscale",
         "payload": {"input": "${steps.image.output}", "scale": 2, "format": "png"}},
        {"name": "clip", "needs": ["big"], "user": "viewer-9", "kind": "generate", "allowed_regions": ["US"],
         "payload": {"provider": "veo", "model": "veo-3-fast", "prompt": "waves on a pier", "duration_secs": 4,
                     "reference_images": ["${steps.big.output}"]}},
        {"name": "web", "needs": ["clip"], "user": "viewer-9", "kind": "transcode",
         "payload": {"input": "${steps.clip.output}", "max_height": 240, "preset": "veryfast", "previews": true}},
        {"name": "scan-video", "needs": ["web"], "user": "viewer-9", "kind": "csam_hash",
         "payload": {"input": "${steps.web.output}"}},
        {"name": "scan-poster", "needs": ["web"], "user": "viewer-9", "kind": "csam_hash",
         "payload": {"input": "${steps.web.outputs.poster}"}},
    ]});
    let mut runs = Vec::new();
    for (client, tenant, subs, body, what) in [
        (
            &s.studio,
            "studio-42",
            &mut *s_studio,
            studio,
            "generate x2 -> upscale each -> scan each",
        ),
        (
            &s.video_retrying,
            "videos-7",
            &mut *s_video,
            video,
            "generate -> upscale -> image-to-video -> transcode -> scan",
        ),
    ] {
        let created = client.pipeline(&body).await?;
        subs.reserved += created.credits_reserved;
        subs.ids.extend(created.steps.iter().map(|st| st.job_id.clone()));
        let began = Instant::now();
        let done = client.wait_pipeline(&created.id, Duration::from_secs(180)).await?;
        say!(
            "  pipeline {} ({what}): {} in {} steps, {:.1} s from submit to done, followed over SSE",
            created.id,
            done.status,
            done.steps.len(),
            began.elapsed().as_secs_f64()
        );
        runs.push(report::PipelineRun {
            tenant: tenant.to_owned(),
            credits_balanced: false,
            id: created.id,
            flow: what.to_owned(),
            status: done.status,
            steps: done
                .steps
                .iter()
                .map(|st| format!("{}={}", st.name, st.status))
                .collect(),
            ms: began.elapsed().as_millis() as u64,
            credits: done.credits,
        });
    }
    Ok(runs)
}

/// Phase 5: the settler charges finished jobs from the credit stream; wait (up to 30 s) until
/// no finished job's credits are still only reserved.
async fn settle(
    s: &Stack,
    s_studio: &Submissions,
    s_video: &Submissions,
) -> anyhow::Result<(Vec<JobView>, Vec<JobView>)> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let v = (
            jobs::views(&s.studio, &s_studio.ids).await?,
            jobs::views(&s.video, &s_video.ids).await?,
        );
        if (jobs::settled(&v.0) && jobs::settled(&v.1)) || Instant::now() > deadline {
            return Ok(v);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Phase 6: the report — outcomes, ledgers, scans, the recovered leases, an erasure on
/// request (the first studio user: a generated image, its upscale and its re-check) and the
/// retention report.
async fn report(
    s: &Stack,
    wall: Duration,
    total: usize,
    (s_studio, v_studio): (&Submissions, &[JobView]),
    (s_video, v_video): (&Submissions, &[JobView]),
    killed: Option<KilledWorker>,
    post: PostProcessing,
) -> anyhow::Result<DemoReport> {
    let mut r = DemoReport {
        wall_ms: wall.as_millis() as u64,
        submitted: total,
        ..Default::default()
    };
    report::tally(&mut r, [("studio-42", v_studio), ("videos-7", v_video)]);
    r.refused = report::refusals([("studio-42", s_studio), ("videos-7", s_video)]);
    r.worker_killed = killed;
    r.post_processing = post;
    // The pipelines' credits once settled: every step's reservation charged or given back.
    for run in &mut r.post_processing.pipelines {
        let client = if run.tenant == "studio-42" { &s.studio } else { &s.video };
        run.credits = client.get_pipeline(&run.id).await?.credits;
        run.credits_balanced = run.credits.reserved == run.credits.charged + run.credits.refunded;
    }
    r.idempotent_duplicates = s_studio.duplicates + s_video.duplicates;
    let all: Vec<&JobView> = v_studio.iter().chain(v_video).collect();
    r.leases_recovered = report::recovered_leases(&s.url, &s.keyring, &all).await?;
    r.safety = report::safety(&s.ops, HASH_LIST, &all).await?;
    for (tenant, api, sub, v) in [
        ("studio-42", &s.studio, s_studio, v_studio),
        ("videos-7", &s.video, s_video, v_video),
    ] {
        let charged: i64 = v.iter().filter_map(|j| j.credits.as_ref()).map(|c| c.charged).sum();
        let refunded = v
            .iter()
            .filter(|j| j.credits.as_ref().is_some_and(|c| c.state == "refunded"))
            .count();
        let after = api.balance().await?;
        let before = s.before[tenant];
        r.credits.push(Ledger {
            tenant: tenant.into(),
            before,
            reserved: sub.reserved,
            charged,
            refunded,
            after,
            expected: before - charged,
            charged_once: after == before - charged,
        });
    }
    // Webhooks trail the outcomes by a moment: wait (up to 15 s) until a final event arrived
    // for every finished studio-42 job.
    let finished = v_studio.iter().filter(|j| j.is_final()).count();
    let deadline = Instant::now() + Duration::from_secs(15);
    while s.hooks.summary().jobs_finished < finished && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    r.webhooks = s.hooks.summary();
    r.export = export_user(s, "user-0010").await?;
    let receipt = s.studio.erase_user("user-0010", None).await?;
    r.erasure = report::erasure("studio-42", "user-0010", &receipt);
    r.export.deleted_by_erasure = matches!(
        s.studio.get_export("user-0010", &r.export.id, None).await,
        Err(gantry_client::ClientError::Api(p)) if p.status == 404
    );
    let outputs = s.log_dir.join("outputs");
    r.retention = report::retention(&s.url, &outputs).await?;
    r.metrics = Metrics {
        prometheus: s.prometheus.clone(),
        scheduler: format!("http://{}/metrics", s.fleet.scheduler_metrics_addr),
        workers: s
            .fleet
            .metrics_ports
            .iter()
            .filter(|(name, _)| r.worker_killed.as_ref().is_none_or(|k| &k.name != name))
            .map(|(name, port)| (name.clone(), format!("http://127.0.0.1:{port}/metrics")))
            .collect(),
        traces: s.fleet.otlp_endpoint.clone(),
        traces_protocol: s.fleet.otlp_protocol.as_str(),
        console: format!("{}/console", s.base),
        console_sign_in: console_link(s).await?,
    };
    r.outputs_dir = outputs.display().to_string();
    r.logs_dir = s.log_dir.display().to_string();
    Ok(r)
}

/// Exports `user`'s data (a studio-42 user), downloads the archive beside the logs and checks
/// its digest.
async fn export_user(s: &Stack, user: &str) -> anyhow::Result<report::ExportRun> {
    let started = s.studio.export_user(user, None).await?;
    let done = s
        .studio
        .wait_export(user, &started.id, None, Duration::from_secs(60))
        .await?;
    let mut run = report::ExportRun {
        tenant: "studio-42".into(),
        user: user.into(),
        id: done.id.clone(),
        status: done.status.clone(),
        ..Default::default()
    };
    if let Some(a) = &done.archive {
        let path = s.log_dir.join(format!("export-{user}.tar"));
        s.studio.download_export(&done, &path).await?;
        let bytes = std::fs::read(&path)?;
        let digest = gantry_worker::outputs::sha256_hex(&bytes);
        run.counts = a.counts.clone();
        run.size_bytes = a.size_bytes;
        run.verified = digest == a.sha256 && bytes.len() as u64 == a.size_bytes;
        run.saved_to = path.display().to_string();
    }
    Ok(run)
}

/// A one-time console sign-in link for the demo's operator key.
async fn console_link(s: &Stack) -> anyhow::Result<String> {
    let keys = gantry_scheduler::auth::ApiKeys::from_config(&gantry_scheduler::config::SchedulerConfig::demo());
    let operator = keys
        .by_key(ADMIN_KEY)
        .ok_or_else(|| anyhow::anyhow!("the demo configuration has no operator key"))?;
    let q = gantry_queue::QueueClient::connect(&s.url, gantry_queue::QueueConfig::default()).await?;
    let sessions = gantry_scheduler::console::session::Sessions::new(
        q.connection(),
        gantry_scheduler::config::ConsoleConfig::default(),
    );
    let token = sessions.one_time(&operator, 15 * 60).await?;
    Ok(format!("{}/console/login/once?token={token}", s.base))
}
