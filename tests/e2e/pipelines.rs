//! Pipelines with real processes: a scheduler, a CPU worker and a (fake-)GPU worker, on a
//! standalone redis-server and on a 3-master Cluster (where the two pools are different hash
//! tags, so every hand-off between them goes through the mover). A five-step DAG across both
//! pools runs each step once, after its parents; a failing step skips its dependents and
//! refunds them; an optional branch's failure does not fail the pipeline; a cancel stops every
//! step; a malformed pipeline is refused naming the step and the field.

#![allow(clippy::unwrap_used)] // a panic is how a test reports failure

use crate::common;

use std::time::Duration;

use common::*;
use gantry_testkit::{RedisCluster, RedisServer};
use serde_json::{Value, json};

const CONFIG: &str = r#"
require_data_keys = false
[plans.big]
jobs_per_second = 1000
burst = 1000
[tenants.studio]
plan = "big"
initial_credits = 100000
api_keys = [{ sha256 = "KEY", scopes = ["jobs:write", "jobs:read"] }]
[tenants.other]
plan = "big"
initial_credits = 100000
api_keys = [{ sha256 = "OTHER", scopes = ["jobs:write", "jobs:read"] }]
[prices]
noop = 5
[pools.cpu]
kinds = ["noop", "upscale"]
[pools.gpu]
kinds = ["noop"]
gpu_vram_gib = 80
# (a CPU step always looks quicker in the CPU pool: only GPU steps land here)
mean_service_secs = 1000
"#;

struct Fleet {
    sched: SchedulerProcess,
    _workers: Vec<WorkerProcess>,
    _logs: tempfile::TempDir,
}

fn fleet(url: &str) -> Fleet {
    let cfg = CONFIG
        .replace("KEY", &gantry_scheduler::auth::hash_key("key-studio"))
        .replace("OTHER", &gantry_scheduler::auth::hash_key("key-other"));
    let sched = SchedulerProcess::with_config(url, &cfg);
    let logs = tempfile::tempdir().unwrap();
    let workers = vec![
        WorkerProcess::start_in(url, "cpu", "w-cpu", 4, 10.0, &["--gpus", "none"], logs.path()),
        WorkerProcess::start_in(url, "gpu", "w-gpu", 4, 10.0, &["--gpus", "fake:1x80GiB"], logs.path()),
    ];
    Fleet {
        sched,
        _workers: workers,
        _logs: logs,
    }
}

fn call(f: &Fleet, method: &str, path: &str, key: &str, body: &Value) -> (u16, Value) {
    call_at(&f.sched.addr, method, path, key, body)
}

fn call_at(addr: &str, method: &str, path: &str, key: &str, body: &Value) -> (u16, Value) {
    let auth = format!("Bearer {key}");
    let headers = [("Content-Type", "application/json"), ("Authorization", auth.as_str())];
    let body = if body.is_null() {
        String::new()
    } else {
        body.to_string()
    };
    let (status, _, text) = http_request(addr, method, path, &headers, body.as_bytes());
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// A no-op step; `gpu` places it in the GPU pool.
fn step(name: &str, needs: &[&str], gpu: bool, payload: Value) -> Value {
    let mut s =
        json!({"name": name, "needs": needs, "user": "u-1", "kind": "noop", "payload": payload, "max_attempts": 1});
    if gpu {
        s["requirements"] = json!({"gpu": {"min_vram_bytes": 1u64 << 30}});
    }
    s
}

/// Polls the pipeline until its status is `want` (a minute at most; the panic shows the last).
async fn wait_for(f: &Fleet, id: &str, want: &str) -> Value {
    wait_at(&f.sched.addr, "key-studio", id, want).await
}

/// [`wait_for`] on the scheduler at `addr`, with `key`.
async fn wait_at(addr: &str, key: &str, id: &str, want: &str) -> Value {
    let mut last = Value::Null;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while std::time::Instant::now() < deadline {
        let (_, p) = call_at(addr, "GET", &format!("/v1/pipelines/{id}"), key, &Value::Null);
        if p["status"] == want {
            return p;
        }
        last = p;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("pipeline {id} did not become {want}: {last}");
}

fn steps(p: &Value) -> std::collections::BTreeMap<String, Value> {
    p["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["name"].as_str().unwrap().to_owned(), s.clone()))
        .collect()
}

async fn five_steps_across_two_pools(url: &str) {
    let f = fleet(url);
    // a (cpu) -> b (gpu), c (cpu) -> d (gpu) -> e (cpu)
    let body = json!({"steps": [
        step("e", &["d"], false, json!({"sleep_ms": 50})),
        step("a", &[], false, json!({"sleep_ms": 100})),
        step("b", &["a"], true, json!({"sleep_ms": 100})),
        step("c", &["a"], false, json!({"sleep_ms": 300})),
        step("d", &["b", "c"], true, json!({"sleep_ms": 50})),
    ]});
    let (s, created) = call(&f, "POST", "/v1/pipelines", "key-studio", &body);
    assert_eq!(s, 201, "{created}");
    assert_eq!(created["credits_reserved"], 25);
    let order: Vec<&str> = created["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(order.first(), Some(&"a"), "parents first: {order:?}");
    let pools: Vec<&str> = created["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["pool"].as_str().unwrap())
        .collect();
    assert!(pools.contains(&"cpu") && pools.contains(&"gpu"), "{pools:?}");
    let id = created["id"].as_str().unwrap().to_owned();
    // The Rust client follows it over SSE to its end.
    let client = gantry_client::Client::new(&format!("http://{}", f.sched.addr), "key-studio").unwrap();
    let waited = client.wait_pipeline(&id, Duration::from_secs(60)).await.unwrap();
    assert_eq!(waited.status, "succeeded", "{waited:?}");
    assert!(waited.steps.iter().all(|s| s.status == "succeeded" && s.attempts == 1));
    let done = wait_for(&f, &id, "succeeded").await;
    let by_name = steps(&done);
    // Each step ran once, and only after every step it needs had finished.
    let times = |name: &str| {
        let job = by_name[name]["job_id"].as_str().unwrap();
        let (_, j) = call(&f, "GET", &format!("/v1/jobs/{job}"), "key-studio", &Value::Null);
        assert_eq!(
            (j["status"].as_str(), j["attempts"].as_u64()),
            (Some("succeeded"), Some(1)),
            "{name}: {j}"
        );
        (
            j["started_at_ms"].as_u64().unwrap(),
            j["finished_at_ms"].as_u64().unwrap(),
        )
    };
    for (child, parents) in [
        ("b", vec!["a"]),
        ("c", vec!["a"]),
        ("d", vec!["b", "c"]),
        ("e", vec!["d"]),
    ] {
        for parent in parents {
            assert!(
                times(child).0 >= times(parent).1,
                "{child} started before {parent} finished"
            );
        }
    }
    // Credits: every step reserved 5 and, having succeeded, was charged 5.
    eventually("credits settled", Duration::from_secs(20), || {
        let (_, p) = call(&f, "GET", &format!("/v1/pipelines/{id}"), "key-studio", &Value::Null);
        async move { p["credits"]["charged"] == 25 }
    })
    .await;
    // Job search by pipeline: its five steps, newest first, a page at a time.
    let (s, page) = call(
        &f,
        "GET",
        &format!("/v1/jobs?pipeline={id}&limit=3"),
        "key-studio",
        &Value::Null,
    );
    assert_eq!((s, page["jobs"].as_array().unwrap().len()), (200, 3), "{page}");
    let next = page["next_cursor"].as_str().unwrap().to_owned();
    let (_, rest) = call(
        &f,
        "GET",
        &format!("/v1/jobs?pipeline={id}&limit=3&cursor={next}"),
        "key-studio",
        &Value::Null,
    );
    assert_eq!(rest["jobs"].as_array().unwrap().len(), 2, "{rest}");
    assert!(rest["next_cursor"].is_null());
    let (_, none) = call(
        &f,
        "GET",
        &format!("/v1/jobs?pipeline={id}&status=dead"),
        "key-studio",
        &Value::Null,
    );
    assert_eq!(none["jobs"].as_array().unwrap().len(), 0);
    let (s, _) = call(&f, "GET", &format!("/v1/jobs?pipeline={id}"), "key-other", &Value::Null);
    assert_eq!(s, 404, "another tenant's pipeline is not found");
    // The CLI shows the same, straight from Redis.
    let o = gantry(url, &["pipelines", "show", &id]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains(&format!("pipeline:  {id}  succeeded")), "{out}");
    for name in ["a", "b", "c", "d", "e"] {
        assert!(
            out.lines()
                .any(|l| l.starts_with(&format!("{name} ")) && l.contains("succeeded")),
            "{out}"
        );
    }
    let o = gantry(url, &["pipelines", "show", "01ARZ3NDEKTSV4RRFFQ69G5FAV"]);
    assert_eq!(o.status.code(), Some(2), "an unknown pipeline is refused");
    // Another tenant sees nothing of it.
    let (s, _) = call(&f, "GET", &format!("/v1/pipelines/{id}"), "key-other", &Value::Null);
    assert_eq!(s, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_five_step_pipeline_runs_across_two_pools() {
    let redis = RedisServer::start().expect("redis");
    five_steps_across_two_pools(&redis.url()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_five_step_pipeline_runs_across_two_pools_on_a_cluster() {
    let cluster = RedisCluster::start().expect("cluster");
    five_steps_across_two_pools(&cluster.url()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_skip_dependents_optional_branches_do_not_fail_and_cancel_stops_all() {
    let redis = RedisServer::start().expect("redis");
    let f = fleet(&redis.url());
    let fails = json!({"fail_attempts": 1, "fail_class": "permanent"});
    // A required step fails: what needs it is skipped and refunded; the other branch runs.
    let body = json!({"steps": [
        step("a", &[], false, json!({})),
        step("bad", &["a"], true, fails.clone()),
        step("after", &["bad"], false, json!({})),
        step("side", &["a"], false, json!({})),
    ]});
    let (s, created) = call(&f, "POST", "/v1/pipelines", "key-studio", &body);
    assert_eq!(s, 201, "{created}");
    let id = created["id"].as_str().unwrap().to_owned();
    let failed = wait_for(&f, &id, "failed").await;
    assert_eq!(steps(&failed)["bad"]["status"], "dead");
    // (the skip reaches the other pool through the mover)
    eventually("its dependent skipped", Duration::from_secs(20), || {
        let (_, p) = call(&f, "GET", &format!("/v1/pipelines/{id}"), "key-studio", &Value::Null);
        let after = steps(&p)["after"].clone();
        async move {
            after["status"] == "cancelled"
                && after["error"]["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("step bad"))
        }
    })
    .await;
    eventually("side branch done", Duration::from_secs(20), || {
        let (_, p) = call(
            &f,
            "GET",
            &format!("/v1/pipelines/{}", created["id"].as_str().unwrap()),
            "key-studio",
            &Value::Null,
        );
        async move {
            steps(&p)["side"]["status"] == "succeeded"
                && p["credits"]["refunded"] == 10
                && p["credits"]["charged"] == 10
        }
    })
    .await;
    // An optional step fails: its own dependent is skipped, the pipeline still succeeds.
    let body = json!({"steps": [
        step("a", &[], false, json!({})),
        {"name": "extra", "needs": ["a"], "continue_on_failure": true, "user": "u-1", "kind": "noop", "payload": fails, "max_attempts": 1},
        step("extra-after", &["extra"], false, json!({})),
        step("main", &["a"], true, json!({})),
    ]});
    let (_, created) = call(&f, "POST", "/v1/pipelines", "key-studio", &body);
    let ok = wait_for(&f, created["id"].as_str().unwrap(), "succeeded").await;
    let by = steps(&ok);
    // (succeeded means every step has ended: the skip has arrived)
    assert_eq!(
        (by["extra"]["status"].as_str(), by["extra-after"]["status"].as_str()),
        (Some("dead"), Some("cancelled"))
    );
    assert_eq!(by["main"]["status"], "succeeded");
    // A cancel stops the running root and everything waiting for it.
    let body = json!({"steps": [
        step("slow", &[], false, json!({"sleep_ms": 60000})),
        step("next", &["slow"], true, json!({})),
        step("last", &["next"], false, json!({})),
    ]});
    let (_, created) = call(&f, "POST", "/v1/pipelines", "key-studio", &body);
    let id = created["id"].as_str().unwrap().to_owned();
    eventually("the root runs", Duration::from_secs(20), || {
        let (_, p) = call(&f, "GET", &format!("/v1/pipelines/{id}"), "key-studio", &Value::Null);
        async move { steps(&p)["slow"]["status"] == "running" }
    })
    .await;
    let (s, c) = call(
        &f,
        "POST",
        &format!("/v1/pipelines/{id}:cancel"),
        "key-studio",
        &Value::Null,
    );
    // The root and its waiting child are told; the last step is either told too or already
    // skipped by its parent's cancellation (through the mover: the pools differ).
    assert_eq!(s, 202, "{c}");
    assert!((2..=3).contains(&c["steps_cancelled"].as_u64().unwrap_or(0)), "{c}");
    let cancelled = wait_for(&f, &id, "cancelled").await;
    eventually("every step ended cancelled", Duration::from_secs(20), || {
        let (_, p) = call(&f, "GET", &format!("/v1/pipelines/{id}"), "key-studio", &Value::Null);
        async move { steps(&p).values().all(|s| s["status"] == "cancelled") }
    })
    .await;
    assert_eq!(cancelled["status"], "cancelled");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_pipeline_is_refused_naming_the_step_and_field() {
    let redis = RedisServer::start().expect("redis");
    let cfg = CONFIG
        .replace("KEY", &gantry_scheduler::auth::hash_key("key-studio"))
        .replace("OTHER", &gantry_scheduler::auth::hash_key("key-other"));
    let sched = SchedulerProcess::with_config(&redis.url(), &cfg);
    let f = Fleet {
        sched,
        _workers: Vec::new(),
        _logs: tempfile::tempdir().unwrap(),
    };
    for (body, step_name, field) in [
        (
            json!({"steps": [step("a", &["b"], false, json!({})), step("b", &["a"], false, json!({}))]}),
            Some("a"),
            "needs",
        ),
        (
            json!({"steps": [step("a", &[], false, json!({})), step("b", &["nope"], false, json!({}))]}),
            Some("b"),
            "needs",
        ),
        (json!({"steps": []}), None, "steps"),
        (
            json!({"steps": [step("a", &[], false, json!({})), {"name": "b", "needs": ["a"], "user": "u", "kind": "upscale", "payload": {"input": "${steps.a.output}", "scale": 2}}]}),
            Some("b"),
            "payload.input",
        ),
        (
            json!({"steps": [step("a", &[], false, json!({})), {"name": "b", "for_each": "a", "user": "u", "kind": "upscale", "payload": {"input": "${each.output}", "scale": 2}}]}),
            Some("b"),
            "for_each",
        ),
    ] {
        let (s, e) = call(&f, "POST", "/v1/pipelines", "key-studio", &body);
        assert_eq!((s, e["code"].as_str()), (422, Some("invalid_pipeline")), "{e}");
        assert_eq!(
            (e["step"].as_str(), e["field"].as_str()),
            (step_name, Some(field)),
            "{e}"
        );
    }
    // A step's own job request is checked as POST /v1/jobs would, in the step's name.
    let bad_job = json!({"steps": [{"name": "a", "user": "u", "kind": "paint", "payload": {}}]});
    let (s, e) = call(&f, "POST", "/v1/pipelines", "key-studio", &bad_job);
    assert_eq!(s, 400, "{e}");
    assert!(e["detail"].as_str().unwrap().starts_with("step a: "), "{e}");
    // Nothing was stored or reserved for any of them.
    let (_, page) = call(&f, "GET", "/v1/jobs", "key-studio", &Value::Null);
    assert_eq!(page["jobs"].as_array().map(Vec::len), Some(0), "{page}");
    // An idempotency key returns the first pipeline.
    let once = json!({"steps": [step("a", &[], false, json!({}))]});
    let headers_call = |key: &str| {
        let auth = "Bearer key-studio".to_owned();
        let headers = [
            ("Content-Type", "application/json"),
            ("Authorization", auth.as_str()),
            ("Idempotency-Key", key),
        ];
        let (status, _, text) = http_request(
            &f.sched.addr,
            "POST",
            "/v1/pipelines",
            &headers,
            once.to_string().as_bytes(),
        );
        (status, serde_json::from_str::<Value>(&text).unwrap())
    };
    let (s1, first) = headers_call("order-1");
    let (s2, again) = headers_call("order-1");
    assert_eq!((s1, s2), (201, 200));
    assert_eq!(
        (again["id"].clone(), again["duplicate"].clone()),
        (first["id"].clone(), json!(true))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn erasing_a_user_erases_their_pipelines() {
    let redis = RedisServer::start().expect("redis");
    let outputs = tempfile::tempdir().unwrap();
    let cfg = format!("outputs = \"{}\"\n{CONFIG}", outputs.path().display())
        .replace("KEY", &gantry_scheduler::auth::hash_key("key-studio"))
        .replace("OTHER", &gantry_scheduler::auth::hash_key("key-other"));
    let sched = SchedulerProcess::with_config(&redis.url(), &cfg);
    let logs = tempfile::tempdir().unwrap();
    let f = Fleet {
        sched,
        _workers: vec![WorkerProcess::start_in(
            &redis.url(),
            "cpu",
            "w-cpu",
            4,
            10.0,
            &["--gpus", "none"],
            logs.path(),
        )],
        _logs: logs,
    };
    let body = json!({"steps": [step("a", &[], false, json!({})), step("b", &["a"], false, json!({}))]});
    let (_, created) = call(&f, "POST", "/v1/pipelines", "key-studio", &body);
    let id = created["id"].as_str().unwrap().to_owned();
    wait_for(&f, &id, "succeeded").await;
    let (s, receipt) = call(&f, "DELETE", "/v1/users/u-1/data", "key-studio", &Value::Null);
    assert_eq!(s, 200, "{receipt}");
    // The pipeline's record went with its steps' records.
    let (s, _) = call(&f, "GET", &format!("/v1/pipelines/{id}"), "key-studio", &Value::Null);
    assert_eq!(s, 404);
    let q = gantry_queue::QueueClient::connect(&redis.url(), gantry_queue::QueueConfig::default())
        .await
        .unwrap();
    let pool = gantry_queue::Pool::new("cpu").unwrap();
    let mut c = q.connection();
    let left: bool = redis::cmd("EXISTS")
        .arg(gantry_queue::QueueClient::pipeline_key(&pool, &id))
        .query_async(&mut c)
        .await
        .unwrap();
    assert!(!left);
}

/// The config with the test's keys.
fn keyed_config() -> String {
    CONFIG
        .replace("KEY", &gantry_scheduler::auth::hash_key("key-studio"))
        .replace("OTHER", &gantry_scheduler::auth::hash_key("key-other"))
}

fn job_of(p: &Value, step: &str) -> String {
    steps(p)[step]["job_id"].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hand_offs_survive_a_sigkill_at_each_point() {
    let redis = RedisServer::start().expect("redis");
    let url = redis.url();
    let logs = tempfile::tempdir().unwrap();
    let q = gantry_queue::QueueClient::connect(&url, gantry_queue::QueueConfig::default())
        .await
        .unwrap();
    let attempts = |id: String| {
        let q = q.clone();
        async move { q.job(id.parse().unwrap()).await.unwrap().attempts }
    };
    let _cpu = WorkerProcess::start_in(&url, "cpu", "w-cpu", 4, 1.0, &["--gpus", "none"], logs.path());
    // 1. The worker running the parent is SIGKILLed before its ack: its lease expires, the
    //    parent runs again elsewhere, and the child (in the other pool) runs once.
    let f = Fleet {
        sched: SchedulerProcess::with_config(&url, &keyed_config()),
        _workers: Vec::new(),
        _logs: tempfile::tempdir().unwrap(),
    };
    let mut g1 = WorkerProcess::start_in(&url, "gpu", "w-gpu-1", 4, 1.0, &["--gpus", "fake:1x80GiB"], logs.path());
    let mut parent = step("p", &[], true, json!({"sleep_ms": 1500}));
    parent["max_attempts"] = json!(3);
    let body = json!({"steps": [parent, step("c", &["p"], false, json!({}))]});
    let (_, created) = call(&f, "POST", "/v1/pipelines", "key-studio", &body);
    let id = created["id"].as_str().unwrap().to_owned();
    eventually("the parent runs", Duration::from_secs(20), || {
        let (_, p) = call(&f, "GET", &format!("/v1/pipelines/{id}"), "key-studio", &Value::Null);
        async move { steps(&p)["p"]["status"] == "running" }
    })
    .await;
    g1.sigkill();
    let gpu = WorkerProcess::start_in(&url, "gpu", "w-gpu-2", 4, 1.0, &["--gpus", "fake:1x80GiB"], logs.path());
    let done = wait_for(&f, &id, "succeeded").await;
    assert!(attempts(job_of(&done, "p")).await >= 2, "the parent ran again: {done}");
    assert_eq!(attempts(job_of(&done, "c")).await, 1, "the child ran once: {done}");
    drop(f);
    // 2. The mover dies between applying a hand-off in the child's pool and acking it: the
    //    next scheduler takes the entry over and applies it again, which changes nothing.
    let mut dying =
        SchedulerProcess::with_config_env(&url, &keyed_config(), &[("GANTRY_TEST_ABORT_AFTER_HANDOFF", "1")]);
    let body = json!({"steps": [step("p", &[], false, json!({})), step("c", &["p"], true, json!({}))]});
    let (s, created) = call_at(&dying.addr, "POST", "/v1/pipelines", "key-studio", &body);
    assert_eq!(s, 201, "{created}");
    let id = created["id"].as_str().unwrap().to_owned();
    let child = created["steps"][1]["job_id"].as_str().unwrap().to_owned();
    assert!(dying.exited_within(Duration::from_secs(30)), "the fault point fired");
    let f = Fleet {
        sched: SchedulerProcess::with_config_env(&url, &keyed_config(), &[("GANTRY_TEST_TAKE_OVER_MS", "500")]),
        _workers: Vec::new(),
        _logs: tempfile::tempdir().unwrap(),
    };
    let done = wait_for(&f, &id, "succeeded").await;
    assert_eq!(attempts(child).await, 1, "the child ran once: {done}");
    eventually("the entry taken over and acked", Duration::from_secs(20), || {
        let mut c = q.connection();
        async move {
            // XPENDING's summary: the count first.
            let pending: Vec<redis::Value> = redis::cmd("XPENDING")
                .arg("gantry:{cpu}:handoff")
                .arg("mover")
                .query_async(&mut c)
                .await
                .unwrap_or_default();
            matches!(pending.first(), Some(redis::Value::Int(0)))
        }
    })
    .await;
    drop(gpu);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_dead_step_resumes_its_pipeline() {
    let redis = RedisServer::start().expect("redis");
    let f = fleet(&redis.url());
    // The middle step fails until a moment from now (an outage that ends), once: dead.
    let until = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
        + 1500;
    let body = json!({"steps": [
        step("a", &[], false, json!({})),
        step("flaky", &["a"], true, json!({"fail_until_unix_ms": until, "fail_class": "permanent"})),
        step("after", &["flaky"], false, json!({})),
    ]});
    let (_, created) = call(&f, "POST", "/v1/pipelines", "key-studio", &body);
    let id = created["id"].as_str().unwrap().to_owned();
    wait_for(&f, &id, "failed").await;
    eventually("its dependent skipped", Duration::from_secs(20), || {
        let (_, p) = call(&f, "GET", &format!("/v1/pipelines/{id}"), "key-studio", &Value::Null);
        async move { steps(&p)["after"]["status"] == "cancelled" }
    })
    .await;
    // The outage is over; the operator replays the dead step, and the pipeline resumes.
    tokio::time::sleep(Duration::from_millis(1600)).await;
    let (_, p) = call(&f, "GET", &format!("/v1/pipelines/{id}"), "key-studio", &Value::Null);
    let flaky = job_of(&p, "flaky");
    let o = gantry(&redis.url(), &["dlq", "replay", &flaky]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let done = wait_for(&f, &id, "succeeded").await;
    assert!(steps(&done).values().all(|s| s["status"] == "succeeded"), "{done}");
    // The skipped step was refunded, then charged when it ran: the credits still balance.
    eventually("credits settled and balanced", Duration::from_secs(20), || {
        let (_, p) = call(&f, "GET", &format!("/v1/pipelines/{id}"), "key-studio", &Value::Null);
        let c = p["credits"].clone();
        async move { c["charged"] == 15 && c["reserved"] == 15 && c["refunded"] == 0 }
    })
    .await;
}

/// A generate of three samples; an upscale per sample (`for_each`), a scan per upscale (a
/// fan-out of a fan-out), and a step that needs every scan (fan-in): each copy takes its own
/// sample, the credits balance, and a step may not take a fanned-out step's output directly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_fans_out_per_generated_sample_and_fans_back_in() {
    let f = common::fleet(1, 8, &[]);
    let key = "demo-studio-key";
    let job = |name: &str, kind: &str, payload: Value| json!({"name": name, "user": "u-fan", "kind": kind, "allowed_regions": ["US"], "payload": payload, "max_attempts": 2});
    let mut up = job("up", "upscale", json!({"input": "${each.output}", "scale": 2}));
    up["for_each"] = json!("gen");
    let mut scan = job("scan", "csam_hash", json!({"input": "${each.output}"}));
    scan["for_each"] = json!("up");
    let mut done = job("done", "noop", json!({}));
    done["needs"] = json!(["scan"]);
    let body = json!({"steps": [
        job("gen", "generate", json!({"provider": "openai", "model": "gpt-image-1", "prompt": "three lighthouses", "samples": 3})),
        up, scan, done,
    ]});
    let (s, created) = call_at(&f.sched.addr, "POST", "/v1/pipelines", key, &body);
    assert_eq!(s, 201, "{created}");
    let names: Vec<&str> = created["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["gen", "up-0", "up-1", "up-2", "scan-0", "scan-1", "scan-2", "done"]
    );
    let id = created["id"].as_str().unwrap();
    let p = wait_at(&f.sched.addr, key, id, "succeeded").await;
    let st = steps(&p);
    assert_eq!(st["done"]["needs"], json!(["scan-0", "scan-1", "scan-2"]));
    assert_eq!(st["scan-1"]["copy_of"], "scan");
    assert_eq!(st["scan-1"]["needs"], json!(["up-1"]));
    // Each upscale took its own sample: three different inputs, the generate's three outputs.
    let samples: Vec<String> = (0..3)
        .map(|i| {
            st["gen"]["result"]["details"][i.to_string()]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    let distinct: std::collections::BTreeSet<&String> = samples.iter().collect();
    assert_eq!(distinct.len(), 3, "{samples:?}");
    // (the mock's samples are different pictures, so their upscales differ too)
    let mut upscaled = std::collections::BTreeSet::new();
    for i in 0..3 {
        assert_eq!(st[&format!("up-{i}")]["status"], "succeeded", "{p:#}");
        upscaled.insert(st[&format!("up-{i}")]["result"]["sha256"].as_str().unwrap().to_owned());
        assert_eq!(
            st[&format!("scan-{i}")]["result"]["details"]["verdict"],
            "clean",
            "{p:#}"
        );
    }
    assert_eq!(upscaled.len(), 3, "each copy took its own sample: {p:#}");
    // Once every step's credits settle (just after its job ends): reserved = charged + refunded.
    let mut c = p["credits"].clone();
    for _ in 0..100 {
        let balanced = |c: &Value| {
            c["reserved"].as_i64() == Some(c["charged"].as_i64().unwrap() + c["refunded"].as_i64().unwrap())
        };
        if balanced(&c) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        c = call_at(&f.sched.addr, "GET", &format!("/v1/pipelines/{id}"), key, &Value::Null).1["credits"].clone();
    }
    assert_eq!(
        c["reserved"].as_i64().unwrap(),
        c["charged"].as_i64().unwrap() + c["refunded"].as_i64().unwrap(),
        "{c}"
    );
    assert!(c["charged"].as_i64().unwrap() > 0, "{c}");
}

/// A scheduler that dies while storing a pipeline (its waiting steps queued, its roots not)
/// leaves it `creating`; the next scheduler's sweep cancels it whole: the queued steps are
/// cancelled and refunded at settlement, the root never queued is refunded directly, and the
/// tenant's balance is whole again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pipeline_left_half_stored_is_swept_and_refunded() {
    let redis = RedisServer::start().expect("redis");
    let url = redis.url();
    let cfg = format!("pipeline_stuck_secs = 1\n{}", keyed_config());
    let dying = SchedulerProcess::with_config_env(&url, &cfg, &[("GANTRY_TEST_ABORT_CREATING_PIPELINE", "1")]);
    let body = json!({"steps": [
        step("a", &[], false, json!({})),
        step("b", &["a"], false, json!({})),
        step("c", &["b"], true, json!({})),
    ]});
    let (s, _) = call_at(&dying.addr, "POST", "/v1/pipelines", "key-studio", &body);
    assert_eq!(s, 0, "the scheduler died answering");
    drop(dying);
    let q = gantry_queue::QueueClient::connect(&url, gantry_queue::QueueConfig::default())
        .await
        .unwrap();
    let cpu = gantry_queue::Pool::new("cpu").unwrap();
    let mut c = q.connection();
    let stuck: Vec<String> = redis::cmd("ZRANGE")
        .arg(gantry_queue::QueueClient::pipelines_creating_key(&cpu))
        .arg(0)
        .arg(-1)
        .query_async(&mut c)
        .await
        .unwrap();
    assert_eq!(stuck.len(), 1, "one pipeline left creating");
    let id = stuck[0].clone();
    let sched = SchedulerProcess::with_config(&url, &cfg);
    // The sweep marks the pipeline cancelled first, then its steps: wait for both.
    let mut p = wait_at(&sched.addr, "key-studio", &id, "cancelled").await;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let status = |p: &Value, name: &str| {
        p["steps"]
            .as_array()
            .and_then(|a| a.iter().find(|s| s["name"] == name))
            .map(|s| s["status"].clone())
    };
    while status(&p, "b") != Some(json!("cancelled")) || status(&p, "c") != Some(json!("cancelled")) {
        assert!(
            std::time::Instant::now() < deadline,
            "the waiting steps were not cancelled: {p:#}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
        p = call_at(
            &sched.addr,
            "GET",
            &format!("/v1/pipelines/{id}"),
            "key-studio",
            &Value::Null,
        )
        .1;
    }
    assert_eq!(steps(&p)["a"]["status"], "expired", "the root was never queued: {p:#}");
    eventually("every reservation refunded", Duration::from_secs(20), || {
        let (_, b) = call_at(&sched.addr, "GET", "/v1/credits", "key-studio", &Value::Null);
        let (_, p) = call_at(
            &sched.addr,
            "GET",
            &format!("/v1/pipelines/{id}"),
            "key-studio",
            &Value::Null,
        );
        async move { b["balance"] == 100_000 && p["credits"]["refunded"] == 15 && p["credits"]["reserved"] == 15 }
    })
    .await;
    let left: u64 = redis::cmd("ZCARD")
        .arg(gantry_queue::QueueClient::pipelines_creating_key(&cpu))
        .query_async(&mut c)
        .await
        .unwrap();
    assert_eq!(left, 0);
    // A pipeline stored whole is left alone by the sweep.
    let (s, ok) = call_at(&sched.addr, "POST", "/v1/pipelines", "key-studio", &body);
    assert_eq!(s, 201, "{ok}");
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let (_, p) = call_at(
        &sched.addr,
        "GET",
        &format!("/v1/pipelines/{}", ok["id"].as_str().unwrap()),
        "key-studio",
        &Value::Null,
    );
    assert_eq!(p["status"], "running", "no worker runs it, nothing cancels it: {p}");
}
