//! `gantry demo` end to end: its own redis-server, scheduler and workers; jobs through the API;
//! the report's ledger check must hold for both tenants. The test reads the report that
//! `--json` prints on stdout, and checks that the text summary (then on stderr) still says it.

#![allow(clippy::unwrap_used)] // a panic is how a test reports failure

use crate::common;

use std::process::{Command, Stdio};

use serde_json::Value;

/// The demo's fleet, kept running (`--keep`) until the test is done with it.
struct KeptDemo {
    child: std::process::Child,
    /// Its text on stderr, as read so far.
    text: std::sync::Arc<std::sync::Mutex<String>>,
}

impl KeptDemo {
    /// Stops it as Ctrl-C would; its whole text.
    fn stop(mut self) -> String {
        let _ = Command::new("kill")
            .arg("-INT")
            .arg(self.child.id().to_string())
            .status();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while self.child.try_wait().unwrap().is_none() {
            assert!(std::time::Instant::now() < deadline, "the demo did not stop on SIGINT");
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
        self.text.lock().unwrap().clone()
    }
}

impl Drop for KeptDemo {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `gantry demo --keep --json`; its JSON report (read from stdout as it finishes).
fn keep_demo(logs: &std::path::Path) -> (KeptDemo, String) {
    use std::io::{BufRead as _, Read as _};
    let mut child = Command::new(common::GANTRY)
        .args(["demo", "--jobs", "60", "--json", "--keep", "--log-dir"])
        .arg(logs)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let text = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let mut stderr = child.stderr.take().unwrap();
    let sink = text.clone();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = stderr.read(&mut buf) {
            if n == 0 {
                break;
            }
            sink.lock().unwrap().push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    });
    let mut json = String::new();
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    // The report is pretty-printed: it ends with a line that is just "}".
    for line in lines.by_ref() {
        let line = line.unwrap();
        json.push_str(&line);
        json.push('\n');
        if line == "}" {
            break;
        }
    }
    std::thread::spawn(move || for _ in lines {});
    (KeptDemo { child, text }, json)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_runs_through_the_api_and_charges_each_job_once() {
    let logs = tempfile::tempdir().unwrap();
    let (demo, json) = keep_demo(logs.path());
    let r: Value = serde_json::from_str(&json).unwrap_or_else(|e| {
        panic!(
            "stdout is not the JSON report ({e}):\n{json}\n{}",
            demo.text.lock().unwrap()
        )
    });
    // The console, on the demo's fleet while it is kept running: each page, as an operator
    // sees it, through the one-time sign-in link the demo prints (screenshots, axe checks).
    let pipeline = r["post_processing"]["pipelines"][0]["id"].as_str().map(str::to_owned);
    crate::console_browser::tour(
        r["metrics"]["console_sign_in"].as_str().unwrap(),
        pipeline.as_deref(),
        "studio-42",
    )
    .await;
    let text = demo.stop();
    let list = |k: &str| r[k].as_array().cloned().unwrap_or_default();

    let refused: Vec<String> = list("refused")
        .iter()
        .map(|x| x["code"].as_str().unwrap().to_owned())
        .collect();
    for code in [
        "no_allowed_provider",
        "unplaceable",
        "insufficient_credits",
        "rate_limited",
    ] {
        assert!(refused.iter().any(|c| c == code), "no {code} refusal: {refused:?}");
    }
    assert_eq!(r["worker_killed"]["name"], "worker-1", "{r:#}");
    // The human summary is still printed, with where to see the metrics.
    for needle in [
        "SIGKILLed worker-1",
        "/metrics",
        "prometheus: http://",
        "ok: each job charged once",
    ] {
        assert!(text.contains(needle), "the text summary lacks {needle:?}:\n{text}");
    }
    assert!(
        r["metrics"]["prometheus"].as_str().unwrap().starts_with("http://"),
        "{r:#}"
    );
    assert!(
        r["metrics"]["scheduler"].as_str().unwrap().ends_with("/metrics"),
        "{r:#}"
    );
    // The console's address and a one-time sign-in link for the demo operator.
    let console = r["metrics"]["console"].as_str().unwrap();
    assert!(
        console.starts_with("http://127.0.0.1:") && console.ends_with("/console"),
        "{r:#}"
    );
    assert!(
        r["metrics"]["console_sign_in"]
            .as_str()
            .unwrap()
            .starts_with(&format!("{console}/login/once?token=")),
        "{r:#}"
    );
    assert!(text.contains("operator console: "), "{text}");

    // 60 ordinary + 20 flaky + 10 delayed + 1 idempotent + 5 unbilled + 8 generate + 3
    // upscales of generated images + 1 upscale 4x of a small upload + 2 clean CSAM-hash checks for the studio (a ninth generate
    // job is refused by the provider's safety system, a tenth's image is on the demo's hash
    // list), and the studio pipeline's 5 steps (two samples, each upscaled and scanned); the video tenant's 100 + 1 no-ops, 2 videos
    // and its pipeline's 6 steps.
    let row = |tenant: &str, status: &str| -> u64 {
        list("outcomes")
            .iter()
            .filter(|o| o["tenant"] == tenant && o["status"] == status)
            .map(|o| o["jobs"].as_u64().unwrap())
            .sum()
    };
    assert_eq!(row("studio-42", "succeeded"), 115, "{r:#}");
    // Blocked before release: the flagged generated image and the flagged upload; and the
    // generated image close to the list with a review band, held, then confirmed by the demo's
    // reviewer.
    assert_eq!(row("studio-42", "blocked"), 3, "{r:#}");
    let safety = &r["safety"];
    assert_eq!(
        safety["blocked"],
        serde_json::json!({"csam_hash": 1, "generate": 2}),
        "{safety:#}"
    );
    let review = &r["post_processing"]["review"];
    assert_eq!(
        (
            review["decision"].as_str(),
            review["report_status"].as_str(),
            review["list"].as_str()
        ),
        (Some("confirmed"), Some("submitted"), Some("demo-near-match")),
        "{review:#}"
    );
    assert!(
        review["distance"].as_u64().is_some_and(|d| (9..=31).contains(&d)),
        "{review:#}"
    );
    assert!(review["files_uploaded"].as_u64() >= Some(1), "{review:#}");
    assert!(review["evidence_id"].is_string(), "{review:#}");
    assert_eq!(
        review["awaiting_confirmation"], 2,
        "the automatic blocks' reports wait: {review:#}"
    );
    assert_eq!(
        safety["clean"],
        // (the pipelines add 4 scans, 3 generations, 1 transcode and 3 upscales; the small
        // upload's 4x is the seventh upscale)
        serde_json::json!({"csam_hash": 6, "generate": 13, "transcode": 3, "upscale": 7}),
        "{safety:#}"
    );
    // The two hash matches, the provider's refusal of the ninth generate job, and the near
    // match's hold and confirmation.
    let events = safety["moderation_events"].as_array().unwrap();
    assert_eq!(events.len(), 5, "{safety:#}");
    for action in ["withheld_for_review", "blocked_after_review"] {
        assert!(
            events.iter().any(|e| e["action"] == action && e["user"] == "user-0022"),
            "{action}: {events:?}"
        );
    }
    assert_eq!(
        events.iter().filter(|e| e["action"] == "refused_by_provider").count(),
        1,
        "{events:?}"
    );
    assert!(
        events
            .iter()
            .any(|e| e["user"] == "user-0019" && e["prompt_sha256"].as_str().is_some_and(|h| h.len() == 64)),
        "the generated image's record keeps the prompt's SHA-256: {events:?}"
    );
    assert!(
        !json.contains("a picture the hash list knows") && !text.contains("a picture the hash list knows"),
        "never the prompt"
    );
    assert_eq!(r["post_processing"]["upscaled"], 3, "{r:#}");
    // The small upload's 4x went through the super-resolution network `./run setup` fetched
    // (models/fetch.sh), on the CPU, and the result says so and why.
    let sr = r["post_processing"]["super_resolution"].as_str().unwrap_or_default();
    assert!(
        sr.starts_with("neural by esrgan-thick-x4 (default: this worker has the network esrgan-thick-x4 and the job asks for 4x), 128x128 -> 512x512"),
        "{sr}"
    );
    assert!(
        text.contains("upscale 4x of a small upload: neural by esrgan-thick-x4"),
        "{text}"
    );
    // The first upscale's output, downloaded through the API: the bytes its result describes.
    let download = &r["post_processing"]["download"];
    assert_eq!(download["sha256_matches"], true, "{download}");
    assert!(download["bytes"].as_u64().unwrap() > 0, "{download}");
    assert!(text.contains("download: GET /v1/jobs/"), "{text}");
    // The upscales were followed over the event stream, every one to its final event.
    let sse = &r["post_processing"]["followed_over_sse"];
    assert_eq!(
        (sse["jobs"].as_u64(), sse["finished"].as_u64()),
        (Some(3), Some(3)),
        "{sse}"
    );
    assert!(sse["events"].as_u64().unwrap() >= 3, "{sse}");
    // studio-42's webhook receiver got a signed final event for every one of its jobs, each
    // signature verified.
    let hooks = &r["webhooks"];
    let received = hooks["received"].as_u64().unwrap();
    assert!(received > 0 && hooks["verified"].as_u64() == Some(received), "{hooks}");
    let studio_jobs: u64 = r["outcomes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|o| o["tenant"] == "studio-42")
        .map(|o| o["jobs"].as_u64().unwrap())
        .sum();
    assert_eq!(hooks["jobs_finished"].as_u64(), Some(studio_jobs), "{hooks}");
    assert!(hooks["by_type"]["job.succeeded"].as_u64().unwrap() > 0, "{hooks}");
    assert!(
        text.contains("webhooks: ") && text.contains("with a verified signature"),
        "{text}"
    );
    // The user's data, exported before their erasure: the archive downloaded and its digest
    // checked; the erasure took the archive along.
    let export = &r["export"];
    assert_eq!(export["status"], "succeeded", "{export}");
    assert_eq!(export["verified"], true, "{export}");
    assert!(export["counts"]["jobs"].as_u64().unwrap() >= 2, "{export}");
    assert!(export["counts"]["outputs"].as_u64().unwrap() >= 1, "{export}");
    assert_eq!(export["deleted_by_erasure"], true, "{export}");
    assert!(text.contains("exported user-0010 of studio-42"), "{text}");
    let erased = &r["erasure"];
    assert_eq!(
        (erased["user"].as_str(), erased["tenant"].as_str()),
        (Some("user-0010"), Some("studio-42"))
    );
    assert_eq!(erased["complete"], true, "{erased}");
    // its generate job, the upscale of its image and the re-check of that image
    assert!(erased["job_records_deleted"].as_u64().unwrap() >= 2, "{erased}");
    assert!(erased["outputs_deleted"].as_u64().unwrap() >= 1, "{erased}");
    assert_eq!(row("studio-42", "dead"), 4, "{r:#}");
    assert_eq!(row("studio-42", "cancelled"), 3, "{r:#}");
    assert_eq!(row("videos-7", "succeeded"), 111, "{r:#}");
    assert_eq!(r["post_processing"]["transcoded"], 2, "{r:#}");
    // The two flows submitted as one pipeline each ran every step, and settled exactly.
    let pipelines = r["post_processing"]["pipelines"].as_array().unwrap();
    assert_eq!(pipelines.len(), 2, "{r:#}");
    for p in pipelines {
        assert_eq!(p["status"], "succeeded", "{p:#}");
        assert!(
            p["steps"]
                .as_array()
                .unwrap()
                .iter()
                .all(|s| s.as_str().unwrap().ends_with("=succeeded")),
            "{p:#}"
        );
        assert_eq!(p["credits_balanced"], true, "reserved = charged + refunded: {p:#}");
    }
    assert!(
        r["dead_letter_example"]["error"]
            .as_str()
            .unwrap()
            .contains("moderated"),
        "the refused generate job says why: {r:#}"
    );
    let routes: Vec<String> = list("generate_routes")
        .iter()
        .map(|g| format!("{} x{}", g["route"].as_str().unwrap(), g["jobs"]))
        .collect();
    for routed in [
        "openai/gpt-image-1 x",
        "flux/flux-2-pro x3",
        "kling/kling-v3-std x",
        "veo/veo-3-fast x",
    ] {
        assert!(routes.iter().any(|g| g.starts_with(routed)), "{routed}: {routes:?}");
    }
    let ledgers = list("credits");
    assert_eq!(ledgers.len(), 2, "{r:#}");
    for l in &ledgers {
        assert_eq!(l["charged_once"], true, "balance = before - charged: {l}");
        assert_eq!(l["after"], l["expected"], "{l}");
    }
    assert!(!text.contains("MISMATCH"), "{text}");
}
