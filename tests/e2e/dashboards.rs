//! The dashboards against a real Prometheus (Debian's package, installed by `./run setup`):
//! it scrapes a local fleet — scheduler, a worker with a fake GPU, mock providers answering
//! some calls 429 — while a workload of every kind runs (generate, upscale, transcode,
//! CSAM-hash with a blocked match, retried and dead-lettered jobs). Then every PromQL
//! expression of every panel in `dashboards/*.json`, and every template variable's selector,
//! is evaluated through Prometheus's HTTP API: none may error or return no series. And
//! `promtool check metrics` finds nothing to complain about in each `/metrics` output.

#![allow(clippy::unwrap_used)] // a panic is how a test reports failure

use crate::common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use gantry_client::Client;
use gantry_codecs::pdq::{Prescale, hash_dihedral, luma_from_image};
use gantry_mocks::media::{FLAGGED_TINT, MediaCache};
use serde_json::{Value, json};

const NAMESPACE: &str = "gantry-test";

struct Prometheus {
    child: Child,
    addr: String,
    _dir: tempfile::TempDir,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_prometheus(targets: &[&str]) -> Prometheus {
    start_prometheus_with(targets, &[])
}

/// [`start_prometheus`] with more command-line flags (`--enable-feature=…`).
fn start_prometheus_with(targets: &[&str], flags: &[&str]) -> Prometheus {
    let dir = tempfile::tempdir().unwrap();
    let list: Vec<String> = targets.iter().map(|t| format!("'{t}'")).collect();
    let rules = Path::new(env!("CARGO_MANIFEST_DIR")).join("helm/gantry/alerts/gantry-rules.yml");
    let config = format!(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files: ['{}']\nscrape_configs:\n  - job_name: gantry\n    static_configs:\n      - targets: [{}]\n        labels:\n          namespace: {NAMESPACE}\n",
        rules.display(),
        list.join(", ")
    );
    std::fs::write(dir.path().join("prometheus.yml"), config).unwrap();
    let addr = format!("127.0.0.1:{}", gantry_testkit::free_port());
    let log = std::fs::File::create(dir.path().join("prometheus.log")).unwrap();
    let child = Command::new("prometheus")
        .arg(format!("--config.file={}", dir.path().join("prometheus.yml").display()))
        .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
        .arg(format!("--web.listen-address={addr}"))
        .args(flags)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("prometheus (install it with ./run setup: Debian's `prometheus` package)");
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(&addr).is_err() || http_get(&addr, "/-/ready").0 != 200 {
        assert!(Instant::now() < deadline, "prometheus did not become ready");
        std::thread::sleep(Duration::from_millis(200));
    }
    Prometheus { child, addr, _dir: dir }
}

fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Evaluates `expr` now; returns the result vector (or the error Prometheus gave).
fn query(prom: &str, expr: &str) -> Result<Vec<Value>, String> {
    let (status, body) = http_get(prom, &format!("/api/v1/query?query={}", encode(expr)));
    let v: Value = serde_json::from_str(&body).map_err(|e| format!("HTTP {status}: {e}: {body}"))?;
    if v["status"] != "success" {
        return Err(format!("{}: {}", v["errorType"], v["error"]));
    }
    Ok(v["data"]["result"].as_array().cloned().unwrap_or_default())
}

fn substitute(expr: &str) -> String {
    expr.replace("$namespace", NAMESPACE)
        .replace("$pool", ".*")
        .replace("$__rate_interval", "1m")
}

fn dashboards() -> Vec<(PathBuf, Value)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("dashboards");
    let mut out: Vec<(PathBuf, Value)> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .map(|p| {
            let v = serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
            (p, v)
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

fn promtool_check(name: &str, text: &str) {
    use std::io::Write;
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian's `prometheus` package)");
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let o = child.wait_with_output().unwrap();
    let complaints = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(
        o.status.success() && complaints.trim().is_empty(),
        "promtool check metrics on {name}:\n{complaints}"
    );
}

async fn workload(f: &Fleet, api: &Client, ops_addr: &str) {
    // A hash list holding the mocks' flagged picture.
    let png = MediaCache::default().image(1024, 1024, false, FLAGGED_TINT);
    let img = image::load_from_memory(&png).unwrap();
    let (luma, w, h) = luma_from_image(&img, Prescale::None);
    let list = format!("pdq:{}\n", hash_dihedral(&luma, w, h).0[0]);
    let (s, _, b) = http_request(
        ops_addr,
        "PUT",
        "/v1/admin/hashlists/known?category=csam",
        &[("Authorization", "Bearer demo-admin-key")],
        list.as_bytes(),
    );
    assert_eq!(s, 200, "{b}");
    // A webhook endpoint whose host never resolves: every delivery to it fails (and is
    // retried), which is what the webhook panels chart.
    let (s, _, b) = http_request(
        ops_addr,
        "POST",
        "/v1/webhooks",
        &[
            ("Authorization", "Bearer demo-studio-key"),
            ("Content-Type", "application/json"),
        ],
        br#"{"url": "https://hooks.invalid/gantry"}"#,
    );
    assert_eq!(s, 201, "{b}");
    let uploads = f.logs.path().join("outputs/inputs/studio-42");
    std::fs::create_dir_all(&uploads).unwrap();
    std::fs::write(uploads.join("flagged.png"), png.as_slice()).unwrap();

    let mut jobs: Vec<Value> = vec![
        generate("openai", "gpt-image-1", &["US"], "a red kite", json!({})),
        generate("flux", "flux-2-pro", &["EU"], "a blue door", json!({})),
        generate("gemini", "gemini-2.5-flash-image", &["US"], "a green hill", json!({})),
        generate(
            "kling",
            "kling-v3-std",
            &["SG"],
            "a river at dawn",
            json!({"duration_secs": 5}),
        ),
        generate("openai", "gpt-image-1", &["US"], "[mock:flagged] blocked", json!({})),
        json!({"user": "u-safety", "kind": "csam_hash", "payload": {"input": "inputs/studio-42/flagged.png"}}),
        json!({"user": "u-1", "kind": "noop", "payload": {"sleep_ms": 10, "fail_attempts": 1}}),
        json!({"user": "u-1", "kind": "noop", "max_attempts": 1,
               "payload": {"fail_attempts": 9, "fail_class": "permanent"}}),
    ];
    jobs.extend((0..20).map(|i| generate("openai", "gpt-image-1", &["US"], &format!("kite {i}"), json!({}))));
    let admitted = api.submit_batch(&jobs).await.unwrap();
    let mut views = Vec::new();
    for a in &admitted {
        views.push(settled(api, &a.id).await);
    }
    // Post-processing of the first image and the video.
    let key = |kind: &str, ct: &str| {
        views
            .iter()
            .filter(|j| j.kind == kind && j.status == "succeeded")
            .filter_map(|j| j.result.clone())
            .find(|r| r["content_type"].as_str().is_some_and(|c| c.starts_with(ct)))
            .map(|r| r["object_key"].as_str().unwrap().to_owned())
            .unwrap()
    };
    let (image, video) = (key("generate", "image/"), key("generate", "video/"));
    let more = [
        json!({"user": "u-1", "kind": "upscale", "payload": {"input": image, "scale": 2}}),
        json!({"user": "u-1", "kind": "transcode", "payload": {"input": video, "max_height": 120, "preset": "ultrafast"}}),
        json!({"user": "u-1", "kind": "csam_hash", "payload": {"input": image}}),
    ];
    for a in api.submit_batch(&more).await.unwrap() {
        let j = settled(api, &a.id).await;
        assert_eq!(j.status, "succeeded", "{j:?}");
    }
}

#[test]
fn the_committed_dashboards_are_what_build_py_writes() {
    let dir = tempfile::tempdir().unwrap();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let o = Command::new("python3")
        .arg(root.join("dashboards/build.py"))
        .arg("--out")
        .arg(dir.path())
        .output()
        .expect("python3");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let committed = dashboards();
    assert_eq!(committed.len(), 5);
    for (path, v) in committed {
        let name = path.file_name().unwrap();
        let built: Value = serde_json::from_str(&std::fs::read_to_string(dir.path().join(name)).unwrap()).unwrap();
        assert_eq!(v, built, "{name:?} differs from dashboards/build.py's output: run it");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_dashboard_expression_returns_series_from_a_real_prometheus() {
    let redis = gantry_testkit::RedisServer::start().unwrap();
    let mock = MockProvidersProcess::start(&["--rate-429", "0.2", "--retry-after-secs", "1"]);
    let sched = SchedulerProcess::start(&redis.url(), None);
    let logs = tempfile::tempdir().unwrap();
    let metrics = format!("127.0.0.1:{}", gantry_testkit::free_port());
    let outputs = logs.path().join("outputs");
    let worker = WorkerProcess::start(
        &redis.url(),
        "gpu-box",
        8,
        10.0,
        &[
            "--gpus",
            "fake:1x24GiB+nvenc",
            "--mock-providers",
            &mock.url(),
            "--outputs",
            outputs.to_str().unwrap(),
            "--metrics-addr",
            &metrics,
            "--registry-heartbeat-secs",
            "1",
        ],
        logs.path(),
    );
    let f = Fleet {
        redis,
        mock,
        sched,
        workers: vec![worker],
        logs,
    };
    let prom = start_prometheus(&[&f.sched.metrics_addr, &metrics]);
    let api = Client::new(&format!("http://{}", f.sched.addr), "demo-studio-key").unwrap();
    workload(&f, &api, &f.sched.addr).await;
    // A few more scrapes, so every rate has two samples after the last job.
    tokio::time::sleep(Duration::from_secs(4)).await;

    let up = query(&prom.addr, "up").unwrap();
    assert_eq!(up.len(), 2, "both targets scraped: {up:?}");
    assert!(up.iter().all(|s| s["value"][1] == "1"), "{up:?}");

    let mut failures = Vec::new();
    let mut checked = 0;
    for (path, d) in dashboards() {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        for var in d["templating"]["list"].as_array().unwrap() {
            let Some(q) = var["definition"].as_str() else { continue };
            // label_values(SELECTOR, LABEL): the selector must find series carrying LABEL.
            let inner = q.trim_start_matches("label_values(").trim_end_matches(')');
            let (selector, label) = inner.rsplit_once(',').unwrap();
            match query(&prom.addr, &substitute(selector.trim())) {
                Ok(r) if r.iter().any(|s| s["metric"][label.trim()].is_string()) => {}
                other => failures.push(format!("{name} variable {}: {other:?}", var["name"])),
            }
            checked += 1;
        }
        for panel in d["panels"].as_array().unwrap() {
            for t in panel["targets"].as_array().unwrap() {
                let expr = substitute(t["expr"].as_str().unwrap());
                match query(&prom.addr, &expr) {
                    Ok(r) if !r.is_empty() => {}
                    Ok(_) => failures.push(format!("{name} / {}: no series for {expr}", panel["title"])),
                    Err(e) => failures.push(format!("{name} / {}: {e} in {expr}", panel["title"])),
                }
                checked += 1;
            }
        }
    }
    assert!(checked > 40, "{checked} expressions");
    assert!(
        failures.is_empty(),
        "{} of {checked} expressions failed:\n{}",
        failures.len(),
        failures.join("\n")
    );

    // The alert rules, loaded by the same Prometheus: every one evaluates without error, and
    // every metric one reads is exported by the fleet (a renamed metric would silence it).
    // (A long answer comes chunked, which http_get does not read: reqwest does.)
    let body = reqwest::get(format!("http://{}/api/v1/rules", prom.addr))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let rules: Value = serde_json::from_str(&body).unwrap();
    let mut names = std::collections::BTreeSet::new();
    let mut evaluated = 0;
    for g in rules["data"]["groups"].as_array().unwrap() {
        for r in g["rules"].as_array().unwrap() {
            assert_eq!(r["health"], "ok", "rule {} is unhealthy: {}", r["name"], r["lastError"]);
            let q = r["query"].as_str().unwrap();
            names.extend(
                q.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .filter(|w| w.starts_with("gantry_"))
                    .map(str::to_owned),
            );
            evaluated += 1;
        }
    }
    assert_eq!(evaluated, crate::alerts::alerts().len(), "every rule loaded");
    for name in &names {
        let found = query(&prom.addr, &format!("count({{__name__=\"{name}\"}})")).unwrap();
        assert!(
            !found.is_empty(),
            "an alert reads {name}, which the fleet does not export"
        );
    }

    // promtool on what a plain scrape (no OpenMetrics Accept) gets; and every family exported
    // is in the catalog.
    let catalog = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/metrics.md")).unwrap();
    for (name, addr) in [
        ("scheduler", f.sched.metrics_addr.as_str()),
        ("worker", metrics.as_str()),
    ] {
        let (status, text) = http_get(addr, "/metrics");
        assert_eq!(status, 200);
        promtool_check(name, &text);
        for family in text.lines().filter_map(|l| l.strip_prefix("# TYPE ")) {
            let family = family.split(' ').next().unwrap();
            assert!(
                catalog.contains(&format!("| `{family}` |")),
                "{name} exports {family}, missing from docs/metrics.md"
            );
        }
    }
}

/// A Prometheus that supports native histograms asks for the protobuf format and gets them;
/// their counts agree with the classic buckets the text formats carry, and PromQL's
/// native-histogram functions read them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn native_histograms_reach_a_prometheus_that_asks_for_them() {
    use gantry_queue::{NewJob, NoopPayload, Payload};
    let redis = gantry_testkit::RedisServer::start().unwrap();
    let url = redis.url();
    let logs = tempfile::tempdir().unwrap();
    let q = client(&url).await;
    let jobs = (0..12)
        .map(|i| {
            NewJob::new(
                "t",
                "u",
                Payload::Noop(NoopPayload {
                    sleep_ms: 5 * i,
                    ..Default::default()
                }),
            )
        })
        .collect();
    q.enqueue_batch(&cpu(), jobs).await.unwrap();
    let _w = WorkerProcess::start(
        &url,
        "native",
        4,
        10.0,
        &["--metrics-addr", "127.0.0.1:0", "--registry-heartbeat-secs", "0.2"],
        logs.path(),
    );
    eventually("jobs done", Duration::from_secs(20), || async { drained(&q).await }).await;
    let addr = worker_metrics_addr(&url).await;
    // What the text format says: the classic count of each histogram.
    let (_, text) = http_get(&addr, "/metrics");
    let classic = |name: &str| -> f64 {
        text.lines()
            .find(|l| l.starts_with(&format!("{name}_count{{")) && l.contains("kind=\"noop\""))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {name}_count in\n{text}"))
    };
    let waits = classic("gantry_job_queue_wait_seconds");
    let runs = classic("gantry_job_duration_seconds");
    assert_eq!(waits, 12.0, "{text}");

    let prom = start_prometheus_with(&[&addr], &["--enable-feature=native-histograms"]);
    let value = |r: &[Value]| -> f64 { r[0]["value"][1].as_str().unwrap().parse().unwrap() };
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while got.is_empty() {
        assert!(Instant::now() < deadline, "no native histogram was scraped");
        std::thread::sleep(Duration::from_millis(300));
        got = query(
            &prom.addr,
            "histogram_count(gantry_job_queue_wait_seconds{kind=\"noop\"})",
        )
        .unwrap();
    }
    assert_eq!(value(&got), waits, "{got:?}");
    let r = query(
        &prom.addr,
        "histogram_count(gantry_job_duration_seconds{kind=\"noop\"})",
    )
    .unwrap();
    assert_eq!(value(&r), runs, "{r:?}");
    // The median run: the jobs slept 0 to 55 ms, so it lies near the middle of that (the
    // native buckets grow by at most 1.1; a run also has its own overhead).
    let r = query(
        &prom.addr,
        "histogram_quantile(0.5, gantry_job_duration_seconds{kind=\"noop\"})",
    )
    .unwrap();
    let median = value(&r);
    assert!((0.015..0.1).contains(&median), "median {median}");
    // Native, not classic: the protobuf carried the sparse buckets, so no `_bucket` series.
    let r = query(&prom.addr, "gantry_job_duration_seconds_bucket").unwrap();
    assert!(r.is_empty(), "{r:?}");
}
