//! The scheduler as a real process over HTTP only, with a real worker and Redis: admission
//! (auth and scopes, credits, rate limits, trust, residency, placement), tenant isolation,
//! idempotency, and RFC 7807 errors for bad input.

#![allow(clippy::unwrap_used)] // a panic is how a test reports failure

use crate::common;

use std::time::Duration;

use common::*;
use gantry_testkit::RedisServer;
use serde_json::{Value, json};

// sha256("key-a"), sha256("key-b"), sha256("key-a-read")
const CONFIG: &str = r#"
min_trust_score = 0.2
# a test's development configuration: no data keys
require_data_keys = false
[plans.small]
jobs_per_second = 1
burst = 4
[plans.big]
jobs_per_second = 1000
burst = 1000
[tenants.a]
plan = "big"
initial_credits = 12
api_keys = [
  { sha256 = "KEY_A", scopes = ["jobs:write", "jobs:read"] },
  { sha256 = "KEY_A_READ", scopes = ["jobs:read"] },
]
[tenants.b]
plan = "small"
initial_credits = 100000
api_keys = [{ sha256 = "KEY_B", scopes = ["jobs:write", "jobs:read"] }]
[tenants.ops]
plan = "big"
operator = true
api_keys = [{ sha256 = "KEY_OPS", scopes = ["admin"] }]
[prices]
noop = 5
[providers.seedream]
jurisdictions = ["CN", "SG"]
models."seedream-4.0" = { class = "image", price = { per = "image", credits = 30 } }
[providers.openai]
jurisdictions = ["US"]
models."gpt-image-1" = { class = "image", price = { per = "image", credits = 40 } }
[providers.kling]
jurisdictions = ["CN"]
models."kling-v3-std" = { class = "video", price = { per = "second", credits = 84 } }
[pools.cpu]
kinds = ["noop", "generate"]
slots_per_worker = 2
min_workers = 1
max_workers = 3
[pools.gpu-h100]
kinds = ["noop"]
gpu_vram_gib = 80
"#;

fn sha(s: &str) -> String {
    gantry_scheduler::auth::hash_key(s)
}

struct Fixture {
    _redis: RedisServer,
    url: String,
    sched: SchedulerProcess,
}

fn fixture() -> Fixture {
    let redis = RedisServer::start().expect("redis");
    let cfg = CONFIG
        .replace("KEY_A_READ", &sha("key-a-read"))
        .replace("KEY_A", &sha("key-a"))
        .replace("KEY_B", &sha("key-b"))
        .replace("KEY_OPS", &sha("key-ops"));
    let sched = SchedulerProcess::with_config(&redis.url(), &cfg);
    Fixture {
        url: redis.url(),
        _redis: redis,
        sched,
    }
}

fn call(f: &Fixture, method: &str, path: &str, key: Option<&str>, body: &str) -> (u16, String, Value) {
    let auth = key.map(|k| format!("Bearer {k}"));
    let mut headers = vec![("Content-Type", "application/json")];
    if let Some(a) = &auth {
        headers.push(("Authorization", a.as_str()));
    }
    let (status, head, body) = http_request(&f.sched.addr, method, path, &headers, body.as_bytes());
    (status, head, serde_json::from_str(&body).unwrap_or(Value::Null))
}

fn noop(user: &str) -> String {
    json!({"user": user, "kind": "noop", "payload": {"sleep_ms": 10}}).to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_are_admitted_run_and_visible_only_to_their_tenant() {
    let f = fixture();
    let logs = tempfile::tempdir().unwrap();
    let _w = WorkerProcess::start_in(&f.url, "cpu", "w-cpu", 4, 10.0, &["--gpus", "none"], logs.path());

    let (s, _, a) = call(&f, "POST", "/v1/jobs", Some("key-a"), &noop("u1"));
    assert_eq!(s, 201, "{a}");
    assert_eq!(a["pool"], "cpu");
    assert_eq!(a["credits_reserved"], 5);
    let id = a["id"].as_str().unwrap().to_owned();
    eventually("job succeeded", Duration::from_secs(20), || {
        let (_, _, j) = call(&f, "GET", &format!("/v1/jobs/{id}"), Some("key-a"), "");
        async move { j["status"] == "succeeded" }
    })
    .await;
    let (_, _, j) = call(&f, "GET", &format!("/v1/jobs/{id}"), Some("key-a-read"), "");
    assert_eq!(
        (j["attempts"].as_u64(), j["credits"]["reserved"].as_i64()),
        (Some(1), Some(5))
    );

    // Another tenant sees nothing, and cannot cancel it.
    let (s, _, e) = call(&f, "GET", &format!("/v1/jobs/{id}"), Some("key-b"), "");
    assert_eq!((s, e["code"].as_str()), (404, Some("not_found")));
    let (s, _, _) = call(&f, "POST", &format!("/v1/jobs/{id}:cancel"), Some("key-b"), "");
    assert_eq!(s, 404);

    // Scopes and keys.
    let (s, head, e) = call(&f, "POST", "/v1/jobs", None, &noop("u1"));
    assert_eq!((s, e["code"].as_str()), (401, Some("unauthenticated")));
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: application/problem+json"),
        "{head}"
    );
    let (s, _, e) = call(&f, "POST", "/v1/jobs", Some("key-a-read"), &noop("u1"));
    assert_eq!((s, e["code"].as_str()), (403, Some("forbidden")));
    let (s, _, _) = call(&f, "POST", "/v1/jobs", Some("wrong"), &noop("u1"));
    assert_eq!(s, 401);

    // Credits: 12 to start, 5 per job: one more fits, the next does not.
    let (s, _, _) = call(&f, "POST", "/v1/jobs", Some("key-a"), &noop("u1"));
    assert_eq!(s, 201);
    let (s, _, e) = call(&f, "POST", "/v1/jobs", Some("key-a"), &noop("u1"));
    assert_eq!((s, e["code"].as_str()), (402, Some("insufficient_credits")), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admission_refuses_with_typed_problems() {
    let f = fixture();
    let post = |body: &str| call(&f, "POST", "/v1/jobs", Some("key-b"), body);
    let code = |r: (u16, String, Value)| (r.0, r.2["code"].as_str().unwrap_or("").to_owned());

    assert_eq!(code(post("{not json")), (400, "malformed_json".into()));
    assert_eq!(
        code(post(
            &json!({"user": "u", "kind": "noop", "payload": {}, "surprise": 1}).to_string()
        )),
        (400, "invalid_request".into())
    );
    assert_eq!(
        code(post(
            &json!({"user": "u", "tenant": "a", "kind": "noop", "payload": {}}).to_string()
        )),
        (400, "invalid_request".into()),
        "the tenant comes from the key"
    );
    let huge = format!(
        r#"{{"user":"u","kind":"noop","payload":{{}},"pad":"{}"}}"#,
        "x".repeat(5 << 20)
    );
    assert_eq!(code(post(&huge)), (413, "payload_too_large".into()));
    // Residency: seedream is CN/SG; a US-only user falls back to a US provider.
    let (s, _, a) = post(
        &json!({"user": "u", "kind": "generate", "allowed_regions": ["US"],
                "payload": {"provider": "seedream", "model": "seedream-4.0", "prompt": "a cat"}})
        .to_string(),
    );
    assert_eq!(
        (s, a["provider"].as_str(), a["credits_reserved"].as_i64()),
        (201, Some("openai"), Some(40)),
        "{a}"
    );
    assert_eq!(
        code(post(
            &json!({"user": "u", "kind": "generate", "allowed_regions": ["EU"],
                    "payload": {"provider": "kling", "model": "kling-v3-std", "prompt": "a cat"}})
            .to_string()
        )),
        (422, "no_allowed_provider".into())
    );
    assert_eq!(
        code(post(
            &json!({"user": "u", "kind": "generate", "payload": {"provider": "x", "model": "y", "prompt": "p"}})
                .to_string()
        )),
        (422, "unknown_model".into())
    );
    // Placement: no pool has 200 GiB.
    let (s, _, e) = post(
        &json!({"user": "u", "kind": "noop", "payload": {},
                "requirements": {"gpu": {"min_vram_bytes": 200u64 << 30}}})
        .to_string(),
    );
    assert_eq!((s, e["code"].as_str()), (422, Some("unplaceable")));
    assert!(e["detail"].as_str().unwrap().contains("min_vram_bytes"), "{e}");
    // Trust: a blocked user is refused.
    let q = client(&f.url).await;
    let mut c = q.connection();
    let _: () = redis::cmd("HSET")
        .arg("gantry:{trust:b}:user:bad")
        .arg("blocked")
        .arg(1)
        .query_async(&mut c)
        .await
        .unwrap();
    assert_eq!(code(post(&noop("bad"))), (403, "user_blocked".into()));
    // Rate: plan "small" allows a burst of 4 at 1/s; two were admitted above (the generate
    // fallback, the unplaceable and refused ones took nothing), so the burst runs out here.
    let mut limited = None;
    for _ in 0..6 {
        let r = post(&noop("u"));
        if r.0 == 429 {
            limited = Some(r);
            break;
        }
    }
    let (_, head, e) = limited.expect("rate limited within the burst");
    assert_eq!(e["code"], "rate_limited");
    assert!(head.to_ascii_lowercase().contains("retry-after: 1"), "{head}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idempotency_key_admits_and_charges_once() {
    let f = fixture();
    let balance = |key: &str| call(&f, "GET", "/v1/credits", Some(key), "").2["balance"].as_i64();
    assert_eq!(balance("key-a"), Some(12), "a new tenant starts at its initial credits");
    let send = || {
        http_request(
            &f.sched.addr,
            "POST",
            "/v1/jobs",
            &[("Authorization", "Bearer key-a"), ("Idempotency-Key", "order-77")],
            noop("u1").as_bytes(),
        )
    };
    let (s1, _, b1) = send();
    let (s2, _, b2) = send();
    let (a1, a2): (Value, Value) = (serde_json::from_str(&b1).unwrap(), serde_json::from_str(&b2).unwrap());
    assert_eq!((s1, s2), (201, 200));
    assert_eq!(a1["id"], a2["id"]);
    assert_eq!(
        (a2["duplicate"].as_bool(), a2["credits_reserved"].as_i64()),
        (Some(true), Some(0))
    );
    assert_eq!(balance("key-a"), Some(7), "reserved once");
    // 12 - 5 = 7 left: exactly one more 5-credit job fits.
    let (s, _, _) = call(&f, "POST", "/v1/jobs", Some("key-a"), &noop("u1"));
    assert_eq!(s, 201);
    let (s, _, _) = call(&f, "POST", "/v1/jobs", Some("key-a"), &noop("u1"));
    assert_eq!(s, 402);
    // A batch is all or none, and its size is bounded.
    let (s, _, e) = call(
        &f,
        "POST",
        "/v1/jobs:batch",
        Some("key-b"),
        &json!({"jobs": []}).to_string(),
    );
    assert_eq!((s, e["code"].as_str()), (400, Some("invalid_request")));
    let (s, _, _) = call(&f, "GET", "/openapi.json", None, "");
    assert_eq!(s, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operators_pause_queues_replay_dead_letters_and_read_autoscaling_signals() {
    let f = fixture();
    let logs = tempfile::tempdir().unwrap();
    let _w = WorkerProcess::start_in(&f.url, "cpu", "w-cpu", 4, 10.0, &["--gpus", "none"], logs.path());
    let ops = |method: &str, path: &str, body: &str| call(&f, method, path, Some("key-ops"), body);

    // Only operators: a tenant's key is refused on every admin route.
    for (m, path) in [
        ("GET", "/v1/admin/queues"),
        ("POST", "/v1/admin/queues/cpu/noop:pause"),
        ("GET", "/v1/admin/dead-letters"),
        ("POST", "/v1/admin/dead-letters:replay"),
        ("POST", "/v1/admin/dead-letters:purge"),
    ] {
        let (s, _, e) = call(&f, m, path, Some("key-b"), "{}");
        assert_eq!((s, e["code"].as_str()), (403, Some("forbidden")), "{m} {path}");
    }

    // Pause: a job waits; the stats say so; resume lets it run.
    let (s, _, r) = ops("POST", "/v1/admin/queues/cpu/noop:pause", "");
    assert_eq!((s, r["changed"].as_bool()), (200, Some(true)));
    let (_, _, a) = call(&f, "POST", "/v1/jobs", Some("key-b"), &noop("u1"));
    let id = a["id"].as_str().unwrap().to_owned();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (_, _, j) = call(&f, "GET", &format!("/v1/jobs/{id}"), Some("key-b"), "");
    assert_eq!(j["status"], "queued", "a paused queue is not claimed from");
    let (_, _, q) = ops("GET", "/v1/admin/queues", "");
    let noop_q = q["queues"]
        .as_array()
        .unwrap()
        .iter()
        .find(|q| q["pool"] == "cpu" && q["kind"] == "noop")
        .cloned()
        .unwrap();
    assert_eq!(
        (noop_q["paused"].as_bool(), noop_q["waiting"][1].as_u64()),
        (Some(true), Some(1))
    );
    // The autoscaling signals see the waiting job.
    eventually("metrics show the backlog", Duration::from_secs(5), || {
        let (_, text) = http_get(&f.sched.metrics_addr, "/metrics");
        async move {
            text.contains("gantry_pool_desired_workers{pool=\"cpu\"} 1")
                && text.contains("gantry_pool_backlog_jobs{pool=\"cpu\"} 1")
                && text.contains("gantry_queue_oldest_job_age_seconds{pool=\"cpu\"}")
        }
    })
    .await;
    let (s, _, _) = ops("POST", "/v1/admin/queues/cpu/noop:resume", "");
    assert_eq!(s, 200);
    eventually("the job ran after resume", Duration::from_secs(20), || {
        let (_, _, j) = call(&f, "GET", &format!("/v1/jobs/{id}"), Some("key-b"), "");
        async move { j["status"] == "succeeded" }
    })
    .await;
    let (s, _, e) = ops("POST", "/v1/admin/queues/nope/noop:pause", "");
    assert_eq!((s, e["code"].as_str()), (404, Some("not_found")));
    let (s, _, e) = ops("POST", "/v1/admin/queues/cpu/sing:pause", "");
    assert_eq!((s, e["code"].as_str()), (400, Some("invalid_request")));

    // Dead letters: list with filters, dry run, replay by id, and a second replay conflicts.
    let failing = json!({"user": "u1", "kind": "noop", "payload": {"fail_attempts": 9, "fail_class": "permanent"}});
    let (_, _, a) = call(&f, "POST", "/v1/jobs", Some("key-b"), &failing.to_string());
    let dead = a["id"].as_str().unwrap().to_owned();
    eventually("dead-lettered", Duration::from_secs(20), || {
        let (_, _, j) = call(&f, "GET", &format!("/v1/jobs/{dead}"), Some("key-b"), "");
        async move { j["status"] == "dead" }
    })
    .await;
    let (s, _, l) = ops(
        "GET",
        "/v1/admin/dead-letters?pool=cpu&kind=noop&class=permanent&limit=10",
        "",
    );
    assert_eq!(s, 200, "{l}");
    assert_eq!(l["dead_letters"][0]["id"].as_str(), Some(dead.as_str()), "{l}");
    let (_, _, l) = ops("GET", "/v1/admin/dead-letters?class=timed_out", "");
    assert_eq!(l["dead_letters"].as_array().map(Vec::len), Some(0));
    let (s, _, e) = ops("GET", "/v1/admin/dead-letters?limit=0", "");
    assert_eq!((s, e["code"].as_str()), (400, Some("invalid_request")));
    // Past the one dead letter: nothing; an offset past the bound (once a 503 from Redis): 400.
    let (s, _, l) = ops("GET", "/v1/admin/dead-letters?offset=1", "");
    assert_eq!((s, l["dead_letters"].as_array().map(Vec::len)), (200, Some(0)), "{l}");
    let (s, _, e) = ops(
        "GET",
        "/v1/admin/dead-letters?kind=noop&offset=10000000000000000001",
        "",
    );
    assert_eq!((s, e["code"].as_str()), (400, Some("invalid_request")), "{e}");
    let (_, _, r) = ops(
        "POST",
        "/v1/admin/dead-letters:replay",
        r#"{"class": "permanent", "dry_run": true}"#,
    );
    assert_eq!(r["would_replay"], 1, "{r}");
    let body = json!({ "id": dead }).to_string();
    // Paused, so the replayed job waits instead of failing again at once.
    ops("POST", "/v1/admin/queues/cpu/noop:pause", "");
    let (s, _, r) = ops("POST", "/v1/admin/dead-letters:replay", &body);
    assert_eq!((s, r["replayed"].as_u64()), (200, Some(1)), "{r}");
    let (s, _, e) = ops("POST", "/v1/admin/dead-letters:replay", &body);
    assert_eq!((s, e["code"].as_str()), (409, Some("conflict")), "{e}");
    let (s, _, e) = ops("POST", "/v1/admin/dead-letters:replay", r#"{"surprise": 1}"#);
    assert_eq!((s, e["code"].as_str()), (400, Some("invalid_request")));

    // Purge: it fails again (resumed), then goes for good; audited with the operator's key.
    ops("POST", "/v1/admin/queues/cpu/noop:resume", "");
    eventually("dead-lettered again", Duration::from_secs(20), || {
        let (_, _, j) = call(&f, "GET", &format!("/v1/jobs/{dead}"), Some("key-b"), "");
        async move { j["status"] == "dead" }
    })
    .await;
    let (_, _, r) = ops("POST", "/v1/admin/dead-letters:purge", r#"{"dry_run": true}"#);
    assert_eq!(r["would_purge"], 1, "{r}");
    let (s, _, r) = ops("POST", "/v1/admin/dead-letters:purge", r#"{"pool": "cpu"}"#);
    assert_eq!((s, r["purged"].as_u64()), (200, Some(1)), "{r}");
    let (s, _, _) = call(&f, "GET", &format!("/v1/jobs/{dead}"), Some("key-b"), "");
    assert_eq!(s, 404, "purged for good");
    let (s, _, e) = ops("POST", "/v1/admin/dead-letters:purge", &body);
    assert_eq!((s, e["code"].as_str()), (404, Some("not_found")), "{e}");
    let (_, _, a) = ops("GET", "/v1/admin/audit?limit=20", "");
    let actions: Vec<&str> = a["audit"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["action"].as_str())
        .collect();
    for want in [
        "dead_letters.purge",
        "dead_letters.replay",
        "queue.pause",
        "queue.resume",
    ] {
        assert!(actions.contains(&want), "{want} not in {actions:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_requests_by_route_and_keep_readings_while_redis_is_down() {
    let Fixture {
        _redis: redis,
        sched,
        url,
    } = fixture();
    let f = Fixture {
        _redis: RedisServer::start().expect("a spare"),
        url,
        sched,
    };
    // No worker: the job stays queued.
    let (s, _, a) = call(&f, "POST", "/v1/jobs", Some("key-a"), &noop("u1"));
    assert_eq!(s, 201, "{a}");
    let id = a["id"].as_str().unwrap().to_owned();
    assert_eq!(call(&f, "GET", &format!("/v1/jobs/{id}"), Some("key-a"), "").0, 200);
    let unknown = gantry_queue::JobId::new();
    assert_eq!(
        call(&f, "GET", &format!("/v1/jobs/{unknown}"), Some("key-a"), "").0,
        404
    );
    assert_eq!(call(&f, "GET", &format!("/v1/jobs/{id}"), None, "").0, 401);
    assert_eq!(call(&f, "GET", "/v1/no/such/route", Some("key-a"), "").0, 404);
    assert_eq!(call(&f, "BREW", "/v1/jobs", Some("key-a"), "").0, 405);

    let metrics = || http_get(&f.sched.metrics_addr, "/metrics").1;
    let text = metrics();
    for want in [
        r#"gantry_http_requests_total{route="/v1/jobs",method="POST",status="201"} 1"#,
        r#"gantry_http_requests_total{route="/v1/jobs/{id}",method="GET",status="200"} 1"#,
        r#"gantry_http_requests_total{route="/v1/jobs/{id}",method="GET",status="404"} 1"#,
        r#"gantry_http_requests_total{route="/v1/jobs/{id}",method="GET",status="401"} 1"#,
        r#"gantry_http_requests_total{route="unmatched",method="GET",status="404"} 1"#,
        r#"gantry_http_requests_total{route="/v1/jobs",method="other",status="405"} 1"#,
        r#"gantry_http_request_duration_seconds_count{route="/v1/jobs/{id}",method="GET"} 3"#,
        r#"gantry_pool_queue_wait_slo_seconds{pool="cpu",slo_bucket="300.0"} 300.0"#,
        r#"gantry_pool_queue_wait_slo_target_ratio{pool="cpu"} 0.99"#,
        r#"gantry_pool_unsettled_credit_events{pool="cpu"} 0"#,
        r#"gantry_credit_settlement_lag_seconds{pool="cpu"} 0"#,
        r#"gantry_pipeline_handoffs_pending{pool="cpu"} 0"#,
        r#"gantry_pipeline_handoff_lag_seconds{pool="cpu"} 0"#,
        "gantry_redis_up 1",
    ] {
        assert!(text.contains(want), "missing {want} in\n{text}");
    }
    // Routes, never paths: no job id reaches the metrics.
    assert!(!text.contains(&id) && !text.contains(&unknown.to_string()));
    eventually("the backlog is read", Duration::from_secs(5), || {
        let t = metrics();
        async move { t.contains(r#"gantry_pool_backlog_jobs{pool="cpu"} 1"#) }
    })
    .await;

    // Redis goes away: the scheduler says so, and the pools keep their last readings rather
    // than reading as empty (which would scale the fleet down in an outage).
    drop(redis);
    eventually("redis_up drops to 0", Duration::from_secs(15), || {
        let t = metrics();
        async move { t.contains("gantry_redis_up 0") }
    })
    .await;
    let text = metrics();
    assert!(text.contains(r#"gantry_pool_backlog_jobs{pool="cpu"} 1"#), "{text}");
    assert!(text.contains(r#"gantry_pool_desired_workers{pool="cpu"} 1"#), "{text}");
}

/// The contract's edges: a job resource answers only its documented methods, with their
/// `Allow`; a hash-list upload without a body is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_methods_say_what_is_allowed_and_an_empty_upload_is_refused() {
    let f = fixture();
    let (s, _, a) = call(&f, "POST", "/v1/jobs", Some("key-a"), &noop("u1"));
    assert_eq!(s, 201, "{a}");
    let id = a["id"].as_str().unwrap().to_owned();
    let allow = |head: &str| {
        head.lines()
            .find_map(|l| l.to_ascii_lowercase().strip_prefix("allow: ").map(str::to_owned))
            .unwrap_or_default()
    };
    for (method, path, want) in [
        ("OPTIONS", format!("/v1/jobs/{id}"), "get,head"),
        ("POST", format!("/v1/jobs/{id}"), "get,head"),
        ("DELETE", format!("/v1/jobs/{id}"), "get,head"),
        ("GET", format!("/v1/jobs/{id}:cancel"), "post"),
        ("OPTIONS", format!("/v1/jobs/{id}:cancel"), "post"),
    ] {
        let (s, head, _) = call(&f, method, &path, Some("key-a"), "");
        assert_eq!((s, allow(&head).as_str()), (405, want), "{method} {path}: {head}");
    }
    // The documented methods still work.
    assert_eq!(call(&f, "GET", &format!("/v1/jobs/{id}"), Some("key-a"), "").0, 200);
    let (s, _, b) = call(&f, "POST", &format!("/v1/jobs/{id}:cancel"), Some("key-a"), "");
    assert!(s == 200 || s == 409, "{s} {b}");
    // Unauthenticated is still 401 first.
    assert_eq!(call(&f, "DELETE", &format!("/v1/jobs/{id}"), None, "").0, 401);

    let (s, _, p) = call(
        &f,
        "PUT",
        "/v1/admin/hashlists/empty?category=csam",
        Some("key-ops"),
        "",
    );
    assert_eq!((s, p["code"].as_str()), (400, Some("invalid_request")), "{p}");
    assert!(p["detail"].as_str().unwrap().contains("no body"), "{p}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenants_search_their_own_jobs_and_operators_search_every_tenants() {
    let f = fixture();
    let mut a_ids = Vec::new();
    for user in ["u1", "u2"] {
        let (s, _, a) = call(&f, "POST", "/v1/jobs", Some("key-a"), &noop(user));
        assert_eq!(s, 201, "{a}");
        a_ids.push(a["id"].as_str().unwrap().to_owned());
    }
    for _ in 0..3 {
        let (s, _, a) = call(&f, "POST", "/v1/jobs", Some("key-b"), &noop("u1"));
        assert_eq!(s, 201, "{a}");
    }
    let ids = |page: &Value| -> Vec<String> {
        page["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|j| j["id"].as_str().unwrap().to_owned())
            .collect()
    };
    // A tenant's own jobs, newest first, with a read-only key; never another tenant's.
    let (s, _, page) = call(&f, "GET", "/v1/jobs", Some("key-a-read"), "");
    assert_eq!(s, 200, "{page}");
    assert_eq!(ids(&page), a_ids.iter().rev().cloned().collect::<Vec<_>>());
    assert!(page["next_cursor"].is_null());
    let j = &page["jobs"][0];
    assert_eq!(
        (j["tenant"].as_str(), j["status"].as_str(), j["kind"].as_str()),
        (Some("a"), Some("queued"), Some("noop"))
    );
    assert!(
        j.get("user").is_none() && j.get("spec").is_none(),
        "no user id, no request: {j}"
    );
    let (_, _, page) = call(&f, "GET", "/v1/jobs?user=u1&status=queued&kind=noop", Some("key-a"), "");
    assert_eq!(ids(&page), vec![a_ids[0].clone()]);
    let (_, _, page) = call(&f, "GET", "/v1/jobs", Some("key-b"), "");
    assert_eq!(ids(&page).len(), 3);
    // Pages of one, and the cursor is refused with other filters.
    let (_, _, first) = call(&f, "GET", "/v1/jobs?limit=1", Some("key-a"), "");
    assert_eq!(ids(&first), vec![a_ids[1].clone()]);
    let cursor = first["next_cursor"].as_str().unwrap().to_owned();
    let (_, _, second) = call(
        &f,
        "GET",
        &format!("/v1/jobs?limit=1&cursor={cursor}"),
        Some("key-a"),
        "",
    );
    assert_eq!(ids(&second), vec![a_ids[0].clone()]);
    for other in [format!("kind=noop&cursor={cursor}"), "cursor=garbage".into()] {
        let (s, _, e) = call(&f, "GET", &format!("/v1/jobs?{other}"), Some("key-a"), "");
        assert_eq!((s, e["code"].as_str()), (404, Some("unknown_cursor")), "{e}");
    }
    // A window that ends before it starts holds nothing.
    let (s, _, page) = call(
        &f,
        "GET",
        "/v1/jobs?created_after=9&created_before=5",
        Some("key-a"),
        "",
    );
    assert_eq!(
        (s, ids(&page).len(), page["next_cursor"].is_null()),
        (200, 0, true),
        "{page}"
    );
    // Bad filters are typed refusals; a tenant cannot name another tenant.
    for bad in [
        "tenant=b",
        "status=bogus",
        "limit=0",
        "limit=201",
        "kind=",
        "user=",
        "created_before=-1",
    ] {
        let (s, _, e) = call(&f, "GET", &format!("/v1/jobs?{bad}"), Some("key-a"), "");
        assert_eq!((s, e["code"].as_str()), (400, Some("invalid_request")), "{bad}: {e}");
    }
    // The Rust client pages through the same search.
    let client = gantry_client::Client::new(&format!("http://{}", f.sched.addr), "key-a").unwrap();
    let filter = gantry_client::JobFilter {
        status: Some("queued".into()),
        limit: Some(1),
        ..Default::default()
    };
    let all = client.jobs().list_all(&filter, 10).await.unwrap();
    assert_eq!(
        all.iter().map(|j| j.id.clone()).collect::<Vec<_>>(),
        a_ids.iter().rev().cloned().collect::<Vec<_>>()
    );
    let page = client.jobs().list(&filter).await.unwrap();
    assert_eq!((page.jobs.len(), page.next_cursor.is_some()), (1, true));
    let e = client.jobs().admin_list(&Default::default()).await.unwrap_err();
    assert_eq!(e.code(), Some("forbidden"));
    // Operators: every tenant's, or one's; a tenant's key is not an operator's.
    let (s, _, _) = call(&f, "GET", "/v1/admin/jobs", Some("key-a"), "");
    assert_eq!(s, 403);
    let (s, _, page) = call(&f, "GET", "/v1/admin/jobs", Some("key-ops"), "");
    assert_eq!((s, ids(&page).len()), (200, 5), "{page}");
    let (_, _, page) = call(&f, "GET", "/v1/admin/jobs?tenant=a&user=u2", Some("key-ops"), "");
    assert_eq!(ids(&page), vec![a_ids[1].clone()]);
    // Without a tenant, a user id names that id's user in each tenant.
    let (_, _, page) = call(&f, "GET", "/v1/admin/jobs?user=u1", Some("key-ops"), "");
    assert_eq!(ids(&page).len(), 4, "a's u1 and b's u1: {page}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_job_shows_its_progress_and_search_lists_it() {
    let f = fixture();
    let logs = tempfile::tempdir().unwrap();
    let _w = WorkerProcess::start_in(&f.url, "cpu", "w-cpu", 2, 10.0, &["--gpus", "none"], logs.path());
    let job = json!({"user": "u1", "kind": "noop", "payload": {"sleep_ms": 4000}}).to_string();
    let (s, _, a) = call(&f, "POST", "/v1/jobs", Some("key-b"), &job);
    assert_eq!(s, 201, "{a}");
    let id = a["id"].as_str().unwrap().to_owned();
    // The no-op executor reports its sleep as it goes: stored at most once a second.
    let mut seen = Vec::new();
    eventually("progress past 25%", Duration::from_secs(20), || {
        let (_, _, j) = call(&f, "GET", &format!("/v1/jobs/{id}"), Some("key-b"), "");
        if let Some(p) = j["progress"]["percent"].as_f64() {
            assert_eq!(
                (j["status"].as_str(), j["progress"]["stage"].as_str()),
                (Some("running"), Some("working")),
                "{j}"
            );
            assert_eq!(j["progress"]["attempt"], 1);
            seen.push(p);
        }
        let far = seen.last().is_some_and(|p| *p >= 25.0);
        async move { far }
    })
    .await;
    assert!(seen.windows(2).all(|w| w[0] <= w[1]), "progress only grows: {seen:?}");
    let (_, _, page) = call(&f, "GET", "/v1/jobs?status=running", Some("key-b"), "");
    assert_eq!(page["jobs"][0]["progress"]["stage"], "working", "{page}");
    // Once it has succeeded, no progress is shown.
    eventually("job succeeded", Duration::from_secs(20), || {
        let (_, _, j) = call(&f, "GET", &format!("/v1/jobs/{id}"), Some("key-b"), "");
        async move { j["status"] == "succeeded" && j["progress"].is_null() }
    })
    .await;
}
