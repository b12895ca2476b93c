//! Regression tests for the attacks of issue 17 that reach the scheduler from the network or
//! its command line, each against the real binary on loopback: the embedded configuration is a
//! development mode only; published keys and plain-text payloads never serve beyond loopback;
//! an unauthenticated client cannot make the scheduler buffer uploads or hold connections
//! open; `/metrics` is not on the API's port.

#![allow(clippy::unwrap_used)] // a panic is how a test reports failure

use crate::common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use gantry_testkit::RedisServer;

const GANTRY: &str = env!("CARGO_BIN_EXE_gantry");

fn scheduler(args: &[&str]) -> std::process::Output {
    Command::new(GANTRY)
        .arg("scheduler")
        .args(args)
        .env_remove("GANTRY_SCHEDULER_CONFIG")
        .env_remove("GANTRY_DATA_KEYS")
        .env_remove("GANTRY_DATA_KEYS_FILE")
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

#[test]
fn without_a_configuration_the_scheduler_exits_2_and_says_how_to_write_one() {
    // No Redis is needed: it refuses before it connects.
    let o = scheduler(&["--redis-url", "redis://127.0.0.1:1"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    for needle in ["--config", "--print-dev-config", "--dev", "sha256sum"] {
        assert!(err.contains(needle), "the message lacks {needle}: {err}");
    }
    // The embedded configuration prints as a starting point.
    let o = scheduler(&["--print-dev-config"]);
    assert!(o.status.success());
    assert!(String::from_utf8_lossy(&o.stdout).contains("[tenants.studio-42]"));
}

#[test]
fn dev_mode_and_published_keys_serve_loopback_only() {
    // --dev with a public address: refused, exit 2.
    let o = scheduler(&["--dev", "--redis-url", "redis://127.0.0.1:1", "--listen", "0.0.0.0:0"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("loopback"), "{err}");
    let o = scheduler(&[
        "--dev",
        "--redis-url",
        "redis://127.0.0.1:1",
        "--metrics-listen",
        "[::]:0",
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", String::from_utf8_lossy(&o.stderr));

    // The demo configuration written to a file and served on every address, with data keys
    // given: still refused, because its API keys are published.
    let dir = tempfile::tempdir().unwrap();
    let copied = include_str!("../../scheduler/src/demo.toml").replace("require_data_keys = false", "");
    let path = dir.path().join("copied.toml");
    std::fs::write(&path, copied).unwrap();
    let o = Command::new(GANTRY)
        .args([
            "scheduler",
            "--redis-url",
            "redis://127.0.0.1:1",
            "--listen",
            "0.0.0.0:0",
        ])
        .arg("--config")
        .arg(&path)
        .env("GANTRY_DATA_KEYS", "k1=AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("published") && err.contains("0.0.0.0"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_mode_says_so_first_and_metrics_are_not_on_the_api_port() {
    let redis = RedisServer::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("scheduler.log");
    let s = SchedulerProcess::start_with(&redis.url(), None, &[], Some(&log));
    let first = std::fs::read_to_string(&log).unwrap();
    let first = first.lines().next().unwrap_or_default();
    assert!(
        first.contains("development mode") && first.contains("loopback"),
        "first log line: {first}"
    );
    assert!(s.addr.starts_with("127.0.0.1:") && s.metrics_addr.starts_with("127.0.0.1:"));
    let (status, _) = http_get(&s.addr, "/metrics");
    assert_eq!(status, 404, "the API port serves no metrics");
    let (status, text) = http_get(&s.metrics_addr, "/metrics");
    assert_eq!(status, 200);
    assert!(text.contains("gantry_pool_desired_workers"), "{text}");
    // And the metrics listener serves nothing of the API.
    let (status, _) = http_get(&s.metrics_addr, "/v1/credits");
    assert_eq!(status, 404);
}

/// Resident memory of `pid`, bytes.
fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap();
    kib * 1024
}

/// The status on an HTTP response head.
fn status_of(head: &[u8]) -> u16 {
    String::from_utf8_lossy(head)
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

/// Sends `PUT path` with a `len`-byte body, a MiB at a time, until it is all sent or the server
/// stops taking it; returns the status the server answered (0: none). The answer is looked for
/// as soon as the head is sent (a refusal comes before the body is read) and again at the end.
fn upload(addr: &str, path: &str, auth: Option<&str>, len: usize) -> u16 {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_write_timeout(Some(Duration::from_secs(20))).unwrap();
    let auth = auth
        .map(|k| format!("Authorization: Bearer {k}\r\n"))
        .unwrap_or_default();
    write!(
        s,
        "PUT {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Content-Type: text/plain\r\nContent-Length: {len}\r\n\r\n"
    )
    .unwrap();
    let mut head = [0u8; 64];
    s.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
    let early = s.read(&mut head).map(|n| status_of(&head[..n])).unwrap_or(0);
    // Send the body all the same: whatever the server does with it must not cost memory.
    let chunk = vec![b'0'; 1 << 20];
    let mut sent = 0;
    while sent < len {
        if s.write_all(&chunk).is_err() {
            break;
        }
        sent += chunk.len();
    }
    if early != 0 {
        return early;
    }
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s.read(&mut head).map(|n| status_of(&head[..n])).unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_without_a_valid_key_are_refused_before_their_body_is_read() {
    let redis = RedisServer::start().unwrap();
    let s = SchedulerProcess::start(&redis.url(), None);
    let (status, _) = http_get(&s.addr, "/healthz");
    assert_eq!(status, 200);
    let before = rss(s.pid());
    // 8 parallel 60 MiB hash-list uploads (the route takes 64 MiB): 4 with no key, 4 with a
    // tenant's key that lacks the admin scope.
    let addr = s.addr.clone();
    let threads: Vec<_> = (0..8)
        .map(|i| {
            let addr = addr.clone();
            std::thread::spawn(move || {
                let key = (i % 2 == 1).then_some("demo-studio-key");
                (key.is_some(), upload(&addr, "/v1/admin/hashlists/big", key, 60 << 20))
            })
        })
        .collect();
    for t in threads {
        let (with_key, status) = t.join().unwrap();
        assert_eq!(status, if with_key { 403 } else { 401 });
    }
    let after = rss(s.pid());
    let grown = after.saturating_sub(before);
    assert!(
        grown <= 16 << 20,
        "RSS grew by {} MiB ({} -> {} MiB)",
        grown >> 20,
        before >> 20,
        after >> 20
    );
    // The operator's key still uploads a list (the body is read once the caller is known).
    let (status, _, body) = http_request(
        &s.addr,
        "PUT",
        "/v1/admin/hashlists/small",
        &[("Authorization", "Bearer demo-admin-key")],
        format!("md5:{}\n", "0".repeat(32)).as_bytes(),
    );
    assert_eq!(status, 200, "{body}");
}

const LIMITS: &str = r#"
require_data_keys = false
[http]
header_read_timeout_secs = 2
body_timeout_secs = 2
max_connections = 64
[plans.p]
jobs_per_second = 10
burst = 10
# sha256("key-a")
[tenants.a]
plan = "p"
initial_credits = 10
api_keys = [{ sha256 = "KEY_A", scopes = ["jobs:write", "jobs:read"] }]
[pools.cpu]
kinds = ["noop"]
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_clients_are_cut_off() {
    let redis = RedisServer::start().unwrap();
    let key_a = gantry_scheduler::auth::hash_key("key-a");
    let s = SchedulerProcess::with_config(&redis.url(), &LIMITS.replace("KEY_A", &key_a));

    // Slowloris: a request head that never ends is closed within the header-read timeout.
    let mut c = TcpStream::connect(&s.addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    c.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ").unwrap();
    let t = Instant::now();
    let mut buf = [0u8; 256];
    let n = c.read(&mut buf).unwrap_or(0);
    let waited = t.elapsed();
    assert!(
        waited < Duration::from_secs(10),
        "an incomplete head held the connection {waited:?}"
    );
    // hyper answers 408 or just closes; either way the connection ends.
    let _ = n;
    assert_eq!(c.read(&mut buf).unwrap_or(0), 0, "the connection is closed");

    // A body that stops arriving: 408 within the body timeout.
    let mut c = TcpStream::connect(&s.addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(
        c,
        "POST /v1/jobs HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer key-a\r\nContent-Length: 1000\r\n\r\n{{\"kind\""
    )
    .unwrap();
    let t = Instant::now();
    let n = c.read(&mut buf).unwrap_or(0);
    let head = String::from_utf8_lossy(&buf[..n]);
    assert!(
        t.elapsed() < Duration::from_secs(10),
        "a stalled body was waited on {:?}",
        t.elapsed()
    );
    assert!(head.starts_with("HTTP/1.1 408"), "{head}");

    // The configured timeouts are checked: more than 30 s for a head is refused.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("slow.toml");
    std::fs::write(
        &path,
        LIMITS.replace("header_read_timeout_secs = 2", "header_read_timeout_secs = 300"),
    )
    .unwrap();
    let o = Command::new(GANTRY)
        .args(["scheduler", "--redis-url", &redis.url(), "--config"])
        .arg(&path)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", String::from_utf8_lossy(&o.stderr));
}

const BILLING: &str = r#"
require_data_keys = false
[plans.p]
jobs_per_second = 100
burst = 100
[tenants.broke]
plan = "p"
initial_credits = 0
api_keys = [{ sha256 = "KEY_BROKE", scopes = ["jobs:write", "jobs:read"] }]
[tenants.rich]
plan = "p"
initial_credits = 100000
api_keys = [{ sha256 = "KEY_RICH", scopes = ["jobs:write", "jobs:read"] }]
[prices]
noop = 0
[providers.veo]
jurisdictions = ["US"]
models."veo-3-fast" = { class = "video", price = { per = "second", credits = 150 } }
[providers.seedream]
jurisdictions = ["SG"]
models."seedream-4.0" = { class = "image", price = { per = "image", credits = 30 } }
[pools.cpu]
kinds = ["noop", "generate"]
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn billing_cannot_be_gamed_through_the_api() {
    let redis = RedisServer::start().unwrap();
    let config = BILLING
        .replace("KEY_BROKE", &gantry_scheduler::auth::hash_key("key-broke"))
        .replace("KEY_RICH", &gantry_scheduler::auth::hash_key("key-rich"));
    let s = SchedulerProcess::with_config(&redis.url(), &config);
    let submit = |key: &str, job: serde_json::Value| {
        let (status, _, body) = http_request(
            &s.addr,
            "POST",
            "/v1/jobs",
            &[
                ("Authorization", &format!("Bearer {key}")),
                ("Content-Type", "application/json"),
            ],
            job.to_string().as_bytes(),
        );
        (status, body)
    };
    let video = |secs: u32, samples: u32| {
        serde_json::json!({"user": "u", "kind": "generate", "allowed_regions": ["US"],
            "payload": {"provider": "veo", "model": "veo-3-fast", "prompt": "p", "duration_secs": secs, "samples": samples}})
    };
    // A zero-second video (the provider makes, and bills, its minimum) and absurd samples are
    // refused, not priced at 0: outside the API's bounds, 400; inside them but beyond what the
    // model does (Veo: 4-8 s, 1-2 clips), 422.
    for (job, field, want, code) in [
        (video(0, 1), "duration_secs", 400, "invalid_request"),
        (video(8, 1_000_000), "samples", 400, "invalid_request"),
        (video(3, 1), "duration_secs", 422, "unprocessable"),
        (video(8, 3), "samples", 422, "unprocessable"),
    ] {
        let (status, body) = submit("key-rich", job);
        assert_eq!(status, want, "{body}");
        assert!(body.contains(code) && body.contains(field), "{body}");
    }
    // A video with no length is reserved at the provider's default (8 s), not 5.
    let (status, body) = submit(
        "key-rich",
        serde_json::json!({"user": "u", "kind": "generate", "allowed_regions": ["US"],
            "payload": {"provider": "veo", "model": "veo-3-fast", "prompt": "p"}}),
    );
    assert_eq!(status, 201, "{body}");
    assert!(body.contains("\"credits_reserved\":1200"), "{body}");
    // A balance of zero takes no new work, even work priced at 0.
    let (status, body) = submit(
        "key-broke",
        serde_json::json!({"user": "u", "kind": "noop", "payload": {}}),
    );
    assert_eq!(status, 402, "{body}");
    assert!(body.contains("insufficient_credits"), "{body}");
    // Each reference URL is a fetch the worker makes for the tenant: at most 16.
    let refs: Vec<String> = (0..17).map(|i| format!("https://example.com/{i}.png")).collect();
    let (status, body) = submit(
        "key-rich",
        serde_json::json!({"user": "u", "kind": "generate", "allowed_regions": ["SG"],
            "payload": {"provider": "seedream", "model": "seedream-4.0", "prompt": "p", "reference_images": refs}}),
    );
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("reference_images"), "{body}");
    // A tenant cannot declare its own work unbilled.
    let (status, body) = submit(
        "key-rich",
        serde_json::json!({"user": "u", "kind": "noop", "payload": {"report_usage": {"billed": false}}}),
    );
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("report_usage"), "{body}");
}
