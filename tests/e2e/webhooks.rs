//! Webhooks from a real scheduler to a real receiver on loopback: registered through the API,
//! signed per Standard Webhooks (verified with the `standardwebhooks` library from PyPI),
//! retried with backoff that honours `Retry-After`, logged per endpoint, replayed, rotated, and
//! an endpoint that keeps failing disabled with its reason.

use crate::common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use common::*;
use serde_json::{Value, json};

#[derive(Clone, Debug)]
struct Received {
    path: String,
    headers: Vec<(String, String)>,
    body: String,
    at: Instant,
}

impl Received {
    fn header(&self, name: &str) -> &str {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map_or("", |(_, v)| v.as_str())
    }
}

#[derive(Clone, Default)]
struct Receiver {
    got: Arc<Mutex<Vec<Received>>>,
}

impl Receiver {
    fn on(&self, path: &str) -> Vec<Received> {
        self.got
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.path == path)
            .cloned()
            .collect()
    }
}

/// `/ok` answers 204; `/flaky` 503 with `Retry-After: 1` to its first two requests, then 200;
/// `/down` always 500.
async fn receive(
    State(r): State<Receiver>,
    Path(path): Path<String>,
    headers: HeaderMap,
    body: String,
) -> impl IntoResponse {
    let n = {
        let mut got = r.got.lock().unwrap();
        got.push(Received {
            path: path.clone(),
            headers: headers
                .iter()
                .map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap_or("").to_owned()))
                .collect(),
            body,
            at: Instant::now(),
        });
        got.iter().filter(|g| g.path == path).count()
    };
    match path.as_str() {
        "ok" | "late" => StatusCode::NO_CONTENT.into_response(),
        "flaky" if n <= 2 => (StatusCode::SERVICE_UNAVAILABLE, [("retry-after", "1")], "busy").into_response(),
        "flaky" => StatusCode::OK.into_response(),
        _ => (StatusCode::INTERNAL_SERVER_ERROR, "no").into_response(),
    }
}

async fn start_receiver() -> (Receiver, String) {
    let r = Receiver::default();
    let app = axum::Router::new()
        .route("/{path}", axum::routing::post(receive))
        .with_state(r.clone());
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap().to_string();
    tokio::spawn(async move { axum::serve(l, app).await });
    (r, addr)
}

async fn call(base: &str, key: &str, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    let c = reqwest::Client::new();
    let mut req = c
        .request(method.parse().unwrap(), format!("{base}{path}"))
        .header("Authorization", format!("Bearer {key}"));
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

async fn wait_for(what: &str, r: &Receiver, path: &str, n: usize) -> Vec<Received> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let got = r.on(path);
        if got.len() >= n {
            return got;
        }
        assert!(Instant::now() < deadline, "{what}: {} of {n} on /{path}", got.len());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Verifies each delivery with the `standardwebhooks` reference library, against `secrets`
/// (a delivery verifies if any one of them does); returns one line per delivery.
fn verify_with_library(secrets: &[&str], got: &[Received]) -> Vec<String> {
    let python = python_tool("webhooks-venv", &["standardwebhooks==1.0.0"], "python");
    let dir = tempfile::tempdir().unwrap();
    let input: Vec<Value> = got
        .iter()
        .map(|g| {
            json!({
                "body": g.body,
                "headers": {
                    "webhook-id": g.header("webhook-id"),
                    "webhook-timestamp": g.header("webhook-timestamp"),
                    "webhook-signature": g.header("webhook-signature"),
                }
            })
        })
        .collect();
    let file = dir.path().join("deliveries.json");
    std::fs::write(&file, serde_json::to_string(&input).unwrap()).unwrap();
    let script = r#"
import json, sys
from standardwebhooks.webhooks import Webhook
secrets = sys.argv[2:]
for d in json.load(open(sys.argv[1])):
    ok = []
    for s in secrets:
        try:
            Webhook(s).verify(d["body"], d["headers"])
            ok.append(s[-6:])
        except Exception as e:
            pass
    print("verified" if ok else "REJECTED", len(ok))
"#;
    let out = std::process::Command::new(python)
        .arg("-c")
        .arg(script)
        .arg(&file)
        .args(secrets)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_webhooks_are_delivered_retried_logged_replayed_and_disabled() {
    let (recv, raddr) = start_receiver().await;
    let redis = gantry_testkit::RedisServer::start().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("outputs");
    let out = out.to_str().unwrap();
    let sched = SchedulerProcess::start_with(
        &redis.url(),
        None,
        &[
            "--outputs",
            out,
            "--webhook-allow",
            &raddr,
            "--webhook-backoff-ms",
            "200",
            "--webhook-disable-after-secs",
            "2",
        ],
        Some(&tmp.path().join("scheduler.log")),
    );
    let _w = WorkerProcess::start(
        &redis.url(),
        "wh",
        4,
        10.0,
        &["--gpus", "none", "--outputs", out],
        tmp.path(),
    );
    let base = format!("http://{}", sched.addr);
    let key = "demo-studio-key";

    // Registration: a secret shown once; refused URLs and types say why.
    let (s, ok_ep) = call(
        &base,
        key,
        "POST",
        "/v1/webhooks",
        Some(json!({"url": format!("http://{raddr}/ok")})),
    )
    .await;
    assert_eq!(s, 201, "{ok_ep}");
    let ok_secret = ok_ep["secret"].as_str().unwrap().to_owned();
    assert!(ok_secret.starts_with("whsec_"));
    let ok_id = ok_ep["id"].as_str().unwrap().to_owned();
    let (s, flaky_ep) = call(
        &base,
        key,
        "POST",
        "/v1/webhooks",
        Some(json!({"url": format!("http://{raddr}/flaky"), "types": ["job.succeeded"]})),
    )
    .await;
    assert_eq!(s, 201, "{flaky_ep}");
    let flaky_id = flaky_ep["id"].as_str().unwrap().to_owned();
    let (s, down_ep) = call(
        &base,
        key,
        "POST",
        "/v1/webhooks",
        Some(json!({"url": format!("http://{raddr}/down")})),
    )
    .await;
    assert_eq!(s, 201);
    let down_id = down_ep["id"].as_str().unwrap().to_owned();
    for (body, why) in [
        (json!({"url": "http://169.254.169.254/latest"}), "link-local"),
        (json!({"url": "http://127.0.0.1:1/x"}), "loopback"),
        (json!({"url": "ftp://example.com/x"}), "ftp"),
        (json!({"url": "https://user:pw@example.com/x"}), "credentials"),
        (
            json!({"url": "https://example.com/x", "types": ["job.nope"]}),
            "job.nope",
        ),
    ] {
        let (s, p) = call(&base, key, "POST", "/v1/webhooks", Some(body.clone())).await;
        assert_eq!(s, 400, "{body}: {p}");
        assert!(p.to_string().contains(why), "{body}: {p}");
    }
    let (s, list) = call(&base, key, "GET", "/v1/webhooks", None).await;
    assert_eq!(s, 200);
    assert_eq!(list["webhooks"].as_array().unwrap().len(), 3);
    assert!(!list.to_string().contains("whsec_"), "secrets are shown once: {list}");
    let (s, _) = call(&base, "demo-video-key", "GET", &format!("/v1/webhooks/{ok_id}"), None).await;
    assert_eq!(s, 404, "another tenant's endpoint does not exist for it");

    // Two jobs: one succeeds, one is dead-lettered at once.
    let api = gantry_client::Client::new(&base, key).unwrap();
    let good = api
        .submit(&json!({"user": "u-1", "kind": "noop", "payload": {"output_bytes": 8}}))
        .await
        .unwrap()
        .id;
    let bad = api
        .submit(&json!({"user": "u-1", "kind": "noop", "payload": {"fail_attempts": 1, "fail_class": "permanent"}}))
        .await
        .unwrap()
        .id;

    // /ok: both outcomes, signed, verifiable by the reference library.
    let got = wait_for("both events", &recv, "ok", 2).await;
    let types: Vec<String> = got
        .iter()
        .map(|g| {
            serde_json::from_str::<Value>(&g.body).unwrap()["type"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert!(
        types.contains(&"job.succeeded".into()) && types.contains(&"job.dead".into()),
        "{types:?}"
    );
    for g in &got {
        assert_eq!(g.header("content-type"), "application/json");
        assert!(g.header("webhook-id").starts_with("msg_"), "{g:?}");
        assert!(!g.body.contains("u-1"), "the user never leaves in clear: {}", g.body);
        let v: Value = serde_json::from_str(&g.body).unwrap();
        let job = v["data"]["job_id"].as_str().unwrap();
        assert!(job == good || job == bad, "{v}");
    }
    assert_eq!(verify_with_library(&[&ok_secret], &got), ["verified 1", "verified 1"]);
    assert_eq!(
        verify_with_library(&["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"], &got[..1]),
        ["REJECTED 0"],
        "another secret does not verify"
    );

    // /flaky: 503 + Retry-After twice, then delivered; retries wait at least the Retry-After.
    let flaky = wait_for("the retried delivery", &recv, "flaky", 3).await;
    assert!(
        flaky
            .iter()
            .all(|g| g.header("webhook-id") == flaky[0].header("webhook-id")),
        "one id across retries"
    );
    for w in flaky.windows(2) {
        let gap = w[1].at - w[0].at;
        assert!(
            gap >= Duration::from_millis(950),
            "Retry-After: 1 honoured, waited {gap:?}"
        );
    }
    let log_path = format!("/v1/webhooks/{flaky_id}/deliveries");
    let log = eventually_json(&base, key, &log_path, |l| l["deliveries"][0]["status"] == "delivered").await;
    let d = &log["deliveries"][0];
    assert_eq!(
        (d["attempts"].as_u64(), d["last_status"].as_u64()),
        (Some(3), Some(200)),
        "{log}"
    );
    assert_eq!(d["event_type"], "job.succeeded");
    assert!(d["latency_ms"].is_u64(), "{log}");

    // /down: every delivery fails; after 2 s of failures the endpoint is disabled, saying why.
    let down = eventually_json(&base, key, &format!("/v1/webhooks/{down_id}"), |e| {
        e["disabled"].is_object()
    })
    .await;
    let reason = down["disabled"]["reason"].as_str().unwrap();
    assert!(reason.contains("HTTP 500"), "{reason}");
    // Several failing attempts reached the threshold; it was disabled (and counted) once.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (_, metrics) = http_get(&sched.metrics_addr, "/metrics");
    assert!(
        metrics.contains("gantry_webhook_endpoints_disabled_total 1\n"),
        "{metrics}"
    );
    // Re-enabled by its tenant, it receives again (and may be disabled again later).
    let (s, e) = call(&base, key, "POST", &format!("/v1/webhooks/{down_id}/enable"), None).await;
    assert_eq!(s, 200, "{e}");
    assert!(e.get("disabled").is_none() && e.get("failing_since").is_none(), "{e}");
    // (Deleted now, so the later jobs' failed deliveries to it do not disable it again.)
    let (s, _) = call(&base, key, "DELETE", &format!("/v1/webhooks/{down_id}"), None).await;
    assert_eq!(s, 204);

    // Replay one delivery: the same webhook-id arrives again.
    let (_, log) = call(&base, key, "GET", &format!("/v1/webhooks/{ok_id}/deliveries"), None).await;
    let first = log["deliveries"][0]["id"].as_str().unwrap().to_owned();
    let (s, r) = call(
        &base,
        key,
        "POST",
        &format!("/v1/webhooks/{ok_id}/deliveries/{first}/replay"),
        None,
    )
    .await;
    assert_eq!((s, r["replayed"].as_u64()), (202, Some(1)), "{r}");
    let again = wait_for("the replay", &recv, "ok", 3).await;
    assert_eq!(again[2].header("webhook-id"), first);
    let (s, _) = call(
        &base,
        key,
        "POST",
        &format!("/v1/webhooks/{ok_id}/deliveries/msg_nope/replay"),
        None,
    )
    .await;
    assert_eq!(s, 404);

    // Rotation: both secrets sign while the old one lasts, so either verifies.
    let (s, rot) = call(&base, key, "POST", &format!("/v1/webhooks/{ok_id}/rotate"), None).await;
    assert_eq!(s, 200, "{rot}");
    let new_secret = rot["secret"].as_str().unwrap().to_owned();
    let (s, r) = call(
        &base,
        key,
        "POST",
        &format!("/v1/webhooks/{ok_id}/replay"),
        Some(json!({"since_ms": 0})),
    )
    .await;
    assert_eq!((s, r["replayed"].as_u64()), (202, Some(2)), "{r}");
    let rotated = wait_for("deliveries after rotation", &recv, "ok", 5).await;
    for g in &rotated[3..] {
        assert_eq!(g.header("webhook-signature").split(' ').count(), 2, "{g:?}");
    }
    assert_eq!(
        verify_with_library(&[&ok_secret, &new_secret], &rotated[3..]),
        ["verified 2", "verified 2"]
    );

    // Metrics: attempts by endpoint and outcome; the backlog is drained.
    let (_, metrics) = http_get(&sched.metrics_addr, "/metrics");
    for want in [
        format!("gantry_webhook_deliveries_total{{tenant=\"studio-42\",endpoint=\"{flaky_id}\",outcome=\"failed\"}} 2"),
        format!(
            "gantry_webhook_deliveries_total{{tenant=\"studio-42\",endpoint=\"{flaky_id}\",outcome=\"delivered\"}} 1"
        ),
        "gantry_webhook_delivery_duration_seconds_count".to_owned(),
        "gantry_webhook_endpoints_disabled_total 1".to_owned(),
    ] {
        assert!(metrics.contains(&want), "{want} in\n{metrics}");
    }

    // An endpoint registered a moment after the tenant's last event gets the very next one
    // (the dispatcher reads endpoints per batch, never a stale list).
    let before = recv.on("ok").len();
    let j = api
        .submit(&json!({"user": "u-1", "kind": "noop", "payload": {}}))
        .await
        .unwrap()
        .id;
    wait_for("the dispatch before", &recv, "ok", before + 1).await;
    let (s, _) = call(
        &base,
        key,
        "POST",
        "/v1/webhooks",
        Some(json!({"url": format!("http://{raddr}/late")})),
    )
    .await;
    assert_eq!(s, 201);
    let k = api
        .submit(&json!({"user": "u-1", "kind": "noop", "payload": {}}))
        .await
        .unwrap()
        .id;
    let late = wait_for("the new endpoint's first delivery", &recv, "late", 1).await;
    let v: Value = serde_json::from_str(&late[0].body).unwrap();
    assert_eq!(v["data"]["job_id"], k.as_str(), "not {j}");

    // Deleting: gone from the list.
    let (s, _) = call(&base, key, "DELETE", &format!("/v1/webhooks/{flaky_id}"), None).await;
    assert_eq!(s, 204);
    let (s, _) = call(&base, key, "GET", &format!("/v1/webhooks/{flaky_id}"), None).await;
    assert_eq!(s, 404);
}

async fn eventually_json(base: &str, key: &str, path: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (s, v) = call(base, key, "GET", path, None).await;
        if s == 200 && done(&v) {
            return v;
        }
        assert!(Instant::now() < deadline, "{path}: {s} {v}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A tenant whose configuration turns events off has nothing to deliver: registering a webhook
/// is refused, saying why, rather than accepted and silent.
#[test]
fn a_tenant_without_events_cannot_register_a_webhook() {
    let redis = gantry_testkit::RedisServer::start().unwrap();
    let config = format!(
        r#"
require_data_keys = false
[plans.p]
jobs_per_second = 10
burst = 10
[tenants.quiet]
plan = "p"
events = false
api_keys = [{{ sha256 = "{}", scopes = ["jobs:write", "jobs:read"] }}]
[pools.cpu]
kinds = ["noop"]
"#,
        gantry_scheduler::auth::hash_key("key-quiet")
    );
    let sched = SchedulerProcess::with_config(&redis.url(), &config);
    let (s, _, body) = http_request(
        &sched.addr,
        "POST",
        "/v1/webhooks",
        &[
            ("Authorization", "Bearer key-quiet"),
            ("Content-Type", "application/json"),
        ],
        br#"{"url": "https://hooks.example/gantry"}"#,
    );
    assert_eq!(s, 409, "{body}");
    assert!(body.contains("events = false"), "{body}");
}
