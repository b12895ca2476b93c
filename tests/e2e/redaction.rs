//! Redaction over the whole demo workload: `gantry demo --canary WORD --keep` marks every
//! generate job's prompt, negative prompt and reference URL signature, and an idempotency key,
//! with a canary, sends every process's traces to an OTLP receiver, runs the
//! demo's generate (every provider, a reference fetched by URL, a video), upscale, transcode,
//! CSAM-hash, failing, blocked and erased jobs with every process logging JSON at debug level, and
//! keeps the fleet up. Then every log, every `/metrics` output, every value in Redis, every span
//! attribute and event the fleet exported and the mock providers' request log are searched: for the canary, for the providers' API keys, for
//! the tenants' API keys, for image bytes (base64 PNG) and for URL signatures. None may appear.

#![allow(clippy::unwrap_used)] // a panic is how a test reports failure

use crate::common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

const CANARY: &str = "zq-canary-5b7e";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_of_the_demo_workload_reaches_logs_metrics_or_redis() {
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    let (otlp, spans) = common::otlp::receiver().await;
    let mut demo = Command::new(GANTRY)
        .args(["--otlp-endpoint", &otlp])
        .args(["demo", "--jobs", "20", "--keep", "--canary", CANARY, "--log-dir"])
        .arg(&logs)
        .env("RUST_LOG", "debug")
        // JSON logs carry every enclosing span's fields on every line: the stricter search.
        // (Every process of the fleet inherits it.)
        .env("GANTRY_LOG_FORMAT", "json")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(dir.path().join("demo.err")).unwrap())
        .spawn()
        .unwrap();
    let stdout = demo.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut out = String::new();
    let deadline = Instant::now() + Duration::from_secs(240);
    while !out.contains("Ctrl-C to stop") {
        match rx.recv_timeout(Duration::from_secs(1)) {
            Ok(line) => {
                out.push_str(&line);
                out.push('\n');
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
            Err(_) => panic!("the demo ended early:\n{out}"),
        }
        assert!(Instant::now() < deadline, "the demo did not finish:\n{out}");
    }
    // The workload really carried the canary through the fleet.
    assert!(out.contains("gemini/gemini-2.5-flash-image"), "{out}");
    assert!(out.contains("complete: true"), "the erasure ran:\n{out}");

    let redis_url = out
        .split_whitespace()
        .find_map(|w| w.strip_prefix("REDIS_URL="))
        .unwrap()
        .to_owned();
    let mut outputs: Vec<(String, String)> = Vec::new();
    for w in out.split_whitespace().filter(|w| w.ends_with("/metrics")) {
        let addr = w.trim_start_matches("http://").trim_end_matches("/metrics");
        let (status, text) = http_get(addr, "/metrics");
        assert_eq!(status, 200, "{w}");
        outputs.push((w.to_owned(), text));
    }
    assert!(outputs.len() >= 3, "the scheduler's and the workers' /metrics: {out}");
    let (n, redis) = everything_in(&redis_url).await;
    assert!(n > 100, "{n} keys");
    outputs.push(("redis".into(), redis));
    let mock = out
        .split_whitespace()
        .skip_while(|w| *w != "providers")
        .nth(1)
        .unwrap()
        .to_owned();
    let log = reqwest::get(format!("{mock}/_mock/requests"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(log.contains("/v1/images/edits") || log.contains("gemini"), "{log}");
    assert!(!log.contains("\"reference_url_in_body\":true"), "a provider got a URL");
    outputs.push(("mock request log".into(), log));
    // The review queue, the reports and the quarantine: a canary-marked generated image was held
    // for review, confirmed, preserved and reported.
    assert!(out.contains("review: a reviewer confirmed it"), "{out}");
    let tips = reqwest::get(format!("{mock}/_mock/cybertipline"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        tips.contains("\"finished\":true"),
        "the report reached the mock: {tips}"
    );
    outputs.push(("the CyberTipline mock's reports".into(), tips));
    let mut quarantined = 0;
    let mut stack = vec![logs.join("outputs/quarantine")];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                quarantined += 1;
                let raw = std::fs::read(&p).unwrap();
                outputs.push((p.display().to_string(), String::from_utf8_lossy(&raw).into_owned()));
            }
        }
    }
    assert!(quarantined > 0, "the confirmed case's evidence is in the quarantine");
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(demo.id()).unwrap()),
        nix::sys::signal::Signal::SIGINT,
    );
    let _ = demo.wait();

    for e in std::fs::read_dir(&logs).unwrap().flatten() {
        let p = e.path();
        if p.extension().is_some_and(|x| x == "log") {
            outputs.push((p.display().to_string(), std::fs::read_to_string(&p).unwrap()));
        }
    }
    // The fleet flushed its spans as it stopped: the API's requests and the jobs' steps.
    let spans = spans.lock().unwrap().clone();
    let names: std::collections::BTreeSet<&str> = spans.iter().map(|s| s.name.as_str()).collect();
    for want in [
        "POST /v1/jobs",
        "admission",
        "enqueue",
        "job generate",
        "provider.submit",
        "scan",
    ] {
        assert!(names.contains(want), "no {want} span among {names:?}");
    }
    assert!(out.contains(&format!("traces: sent over OTLP/HTTP to {otlp}")), "{out}");
    let exported: String = spans
        .iter()
        .flat_map(|s| std::iter::once(s.name.clone()).chain(s.text.iter().cloned()))
        .collect::<Vec<_>>()
        .join("\n");
    outputs.push(("exported spans".into(), exported));
    let err = std::fs::read_to_string(dir.path().join("demo.err")).unwrap();
    assert!(err.contains("DEBUG"), "debug logging was on");
    outputs.push(("demo stderr".into(), err));
    let logged = outputs.iter().filter(|(w, _)| w.ends_with(".log")).count();
    assert!(logged >= 4, "scheduler, workers and mocks logged");
    // Gantry's own processes' logs (Prometheus, which the demo also runs, logs logfmt).
    for (w, text) in outputs
        .iter()
        .filter(|(w, _)| w.ends_with(".log") && !w.ends_with("prometheus.log"))
    {
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            assert!(
                serde_json::from_str::<serde_json::Value>(line).is_ok(),
                "{w}: a line that is not JSON: {line}"
            );
        }
    }

    let secrets = [
        CANARY,
        gantry_providers::MOCK_API_KEY,
        gantry_providers::MOCK_ACCESS_KEY,
        gantry_providers::MOCK_SECRET_KEY,
        "demo-studio-key",
        "demo-video-key",
        "demo-admin-key",
        "X-Amz-Signature",
        // A PNG's first bytes in base64: image bytes (a reference as a data: URI, an output).
        "iVBORw0KGgo",
    ];
    for (where_, text) in &outputs {
        for s in secrets {
            assert!(!text.contains(s), "{s:?} found in {where_}");
        }
    }
    // The demo's own summary holds no prompt either (it may name its keys in its instructions).
    assert!(!out.contains(CANARY), "{out}");
}
