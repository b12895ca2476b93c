//! Traces through a real collector endpoint: an OTLP/HTTP receiver on loopback, built on the
//! official OTLP protobuf definitions (`opentelemetry-proto`; no collector distribution is
//! installable here), takes what a scheduler and a worker export. A platform submits a generate
//! job and then an upscale of its image, both under one trace (W3C `traceparent`, as a platform
//! chaining steps sends it). The span tree must run from each request through admission and
//! enqueue to the worker's job span (the trace context travels in the job's record) and its
//! steps: provider submit and download, scan, store. And no span, attribute or event may carry
//! the prompt or the user's id.

#![allow(clippy::unwrap_used)] // a panic is how a test reports failure

use crate::common;

use std::time::Duration;

use common::otlp::{Got, receiver};
use common::*;
use gantry_client::Client;
use serde_json::{Value, json};

const TRACE_ID: &str = "5e1f0c2a9b8d47e3a6c1d2e3f4a5b6c7";
const CLIENT_SPAN: &str = "1a2b3c4d5e6f7081";
const PROMPT: &str = "a lighthouse at dusk, zq-trace-canary";
const USER: &str = "u-trace-7d41";

fn submit(sched: &SchedulerProcess, job: &Value) -> String {
    let traceparent = format!("00-{TRACE_ID}-{CLIENT_SPAN}-01");
    let (status, _, body) = http_request(
        &sched.addr,
        "POST",
        "/v1/jobs",
        &[
            ("Authorization", "Bearer demo-studio-key"),
            ("Content-Type", "application/json"),
            ("traceparent", traceparent.as_str()),
        ],
        job.to_string().as_bytes(),
    );
    assert_eq!(status, 201, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    v["id"].as_str().unwrap().to_owned()
}

/// The spans of our trace that descend from `root` (its id), root included.
fn subtree<'a>(spans: &'a [Got], root: &str) -> Vec<&'a Got> {
    let mut out: Vec<&Got> = spans.iter().filter(|s| s.id == root).collect();
    let mut frontier = vec![root.to_owned()];
    while let Some(p) = frontier.pop() {
        for s in spans.iter().filter(|s| s.parent == p) {
            out.push(s);
            frontier.push(s.id.clone());
        }
    }
    out
}

/// The received spans of our trace.
fn ours(got: &common::otlp::Received) -> Vec<Got> {
    let all = got.lock().unwrap();
    all.iter().filter(|s| s.trace == TRACE_ID).cloned().collect()
}

/// No span, attribute or event names the prompt or the user.
fn assert_no_canary(spans: &[Got]) {
    for s in spans {
        for t in s.text.iter().chain([&s.name]) {
            assert!(
                !t.contains("zq-trace-canary") && !t.contains(USER) && !t.contains("lighthouse"),
                "{} span {} carries {t:?}",
                s.service,
                s.name
            );
        }
    }
}

fn child<'a>(spans: &'a [Got], parent: &Got, name: &str) -> &'a Got {
    spans
        .iter()
        .find(|s| s.parent == parent.id && s.name == name)
        .unwrap_or_else(|| {
            let names: Vec<_> = spans
                .iter()
                .filter(|s| s.parent == parent.id)
                .map(|s| &s.name)
                .collect();
            panic!("no {name} under {} (children: {names:?})", parent.name)
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_trace_runs_from_each_request_to_the_workers_steps_and_carries_no_prompt() {
    let (endpoint, got) = receiver().await;
    let redis = gantry_testkit::RedisServer::start().unwrap();
    let mock = MockProvidersProcess::start(&[]);
    let sched = SchedulerProcess::start_with(&redis.url(), None, &["--otlp-endpoint", &endpoint], None);
    let logs = tempfile::tempdir().unwrap();
    let outputs = logs.path().join("outputs");
    let _worker = WorkerProcess::start(
        &redis.url(),
        "traced",
        4,
        10.0,
        &[
            "--otlp-endpoint",
            &endpoint,
            "--log-format",
            "json",
            "--mock-providers",
            &mock.url(),
            "--outputs",
            outputs.to_str().unwrap(),
        ],
        logs.path(),
    );
    let api = Client::new(&format!("http://{}", sched.addr), "demo-studio-key").unwrap();

    // Step 1: generate an image. Step 2: upscale it. One trace, as a platform chains them.
    let mut gen_job = generate("openai", "gpt-image-1", &["US"], PROMPT, json!({}));
    gen_job["user"] = USER.into();
    let gen_id = submit(&sched, &gen_job);
    let generated = settled(&api, &gen_id).await;
    assert_eq!(generated.status, "succeeded", "{generated:?}");
    let image = generated.result.as_ref().unwrap()["object_key"]
        .as_str()
        .unwrap()
        .to_owned();
    let up = json!({"user": USER, "kind": "upscale", "payload": {"input": image, "scale": 2}});
    let up_id = submit(&sched, &up);
    let upscaled = settled(&api, &up_id).await;
    assert_eq!(upscaled.status, "succeeded", "{upscaled:?}");

    // Both processes batch their spans (every 5 s by default): wait for both jobs' trees.
    let ours = || ours(&got);
    eventually("both jobs' spans arrive", Duration::from_secs(30), || {
        let spans = ours();
        async move {
            let jobs = spans.iter().filter(|s| s.name.starts_with("job ")).count();
            let stores = spans.iter().filter(|s| s.name.starts_with("store.put")).count();
            jobs >= 2 && stores >= 2 && spans.iter().filter(|s| s.name == "scan").count() >= 2
        }
    })
    .await;
    let spans = ours();

    // The scheduler's two requests, each a child of the platform's span.
    let requests: Vec<&Got> = spans.iter().filter(|s| s.name == "POST /v1/jobs").collect();
    assert_eq!(requests.len(), 2, "{spans:#?}");
    for r in &requests {
        assert_eq!(
            (r.service.as_str(), r.parent.as_str()),
            ("gantry-scheduler", CLIENT_SPAN)
        );
        assert_eq!(r.attrs.get("http.route").map(String::as_str), Some("/v1/jobs"));
        assert_eq!(
            r.attrs.get("http.response.status_code").map(String::as_str),
            Some("201")
        );
    }
    for (id, kind) in [(&gen_id, "generate"), (&up_id, "upscale")] {
        let job = spans
            .iter()
            .find(|s| s.name == format!("job {kind}") && s.attrs.get("job_id") == Some(id))
            .unwrap_or_else(|| panic!("no job span for {kind} {id}: {spans:#?}"));
        assert_eq!(job.service, "gantry-worker");
        assert_eq!(
            job.attrs.get("outcome").map(String::as_str),
            Some("succeeded"),
            "{job:?}"
        );
        assert!(
            job.attrs.get("waited_ms").is_some_and(|w| w.parse::<u64>().is_ok()),
            "{job:?}"
        );
        // The worker's span hangs under the scheduler's enqueue, under admission, under the
        // request: the context went through the job's record in Redis.
        let enqueue = spans
            .iter()
            .find(|s| s.id == job.parent)
            .expect("the job's parent span");
        assert_eq!(
            (enqueue.name.as_str(), enqueue.service.as_str()),
            ("enqueue", "gantry-scheduler")
        );
        let admission = spans.iter().find(|s| s.id == enqueue.parent).expect("enqueue's parent");
        assert_eq!(admission.name, "admission");
        assert!(
            requests.iter().any(|r| r.id == admission.parent),
            "admission under a request"
        );
        let steps: Vec<&str> = subtree(&spans, &job.id).iter().map(|s| s.name.as_str()).collect();
        let want: &[&str] = if kind == "generate" {
            &[
                "provider.submit",
                "provider.download",
                "scan",
                "scan.hash",
                "scan.match",
                "store.put",
            ]
        } else {
            &["store.get", "upscale.resize", "store.put", "scan", "scan.hash"]
        };
        for w in want {
            assert!(steps.contains(w), "{kind}: no {w} among {steps:?}");
        }
        if kind == "generate" {
            let submit = child(&spans, job, "provider.submit");
            assert_eq!(submit.attrs.get("provider").map(String::as_str), Some("openai"));
            assert_eq!(submit.attrs.get("outcome").map(String::as_str), Some("ok"));
        }
    }

    // The worker's JSON log lines name the trace and span they happened in.
    let log = std::fs::read_to_string(logs.path().join("traced.log")).unwrap();
    let generating = log
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|l| l["message"] == "generating" && l["span"]["job_id"] == gen_id.as_str())
        .unwrap_or_else(|| panic!("no JSON line for the generation in\n{log}"));
    assert_eq!(generating["trace_id"], TRACE_ID, "{generating}");
    let job_span = spans
        .iter()
        .find(|s| s.name == "job generate")
        .map(|s| s.id.clone())
        .unwrap();
    assert_eq!(generating["span_id"], job_span.as_str(), "{generating}");

    // The canary: nothing any process exported names the prompt or the user.
    let everything = got.lock().unwrap().clone();
    assert!(everything.len() > spans.len() / 2);
    assert_no_canary(&everything);
}

/// A generate→upscale pipeline, as a platform submits it under its own trace: one trace runs
/// from `POST /v1/pipelines` through enqueue to both steps' job spans (the second released by
/// the first's outcome, in Redis), each job's steps and its ack, and on to the webhook
/// deliveries its events make (the trace context travels in the job's record, its events and
/// the delivery's record).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pipelines_trace_runs_through_both_steps_their_acks_and_webhook_deliveries() {
    let (endpoint, got) = receiver().await;
    // A webhook endpoint on loopback that takes everything.
    let hooks = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hooks_addr = hooks.local_addr().unwrap().to_string();
    let delivered: std::sync::Arc<std::sync::Mutex<Vec<String>>> = std::sync::Arc::default();
    let seen = delivered.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: axum::http::HeaderMap| {
            let seen = seen.clone();
            async move {
                let id = headers
                    .get("webhook-id")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default();
                seen.lock().unwrap().push(id.to_owned());
                axum::http::StatusCode::OK
            }
        }),
    );
    tokio::spawn(async move { axum::serve(hooks, app).await });

    let redis = gantry_testkit::RedisServer::start().unwrap();
    let mock = MockProvidersProcess::start(&[]);
    let logs = tempfile::tempdir().unwrap();
    let outputs = logs.path().join("outputs");
    let outputs = outputs.to_str().unwrap();
    let sched = SchedulerProcess::start_with(
        &redis.url(),
        None,
        &[
            "--otlp-endpoint",
            &endpoint,
            "--outputs",
            outputs,
            "--webhook-allow",
            &hooks_addr,
        ],
        None,
    );
    let _worker = WorkerProcess::start(
        &redis.url(),
        "traced-pipeline",
        4,
        10.0,
        &[
            "--otlp-endpoint",
            &endpoint,
            "--mock-providers",
            &mock.url(),
            "--outputs",
            outputs,
        ],
        logs.path(),
    );
    let auth = [
        ("Authorization", "Bearer demo-studio-key"),
        ("Content-Type", "application/json"),
    ];
    let (s, _, body) = http_request(
        &sched.addr,
        "POST",
        "/v1/webhooks",
        &auth,
        json!({"url": format!("http://{hooks_addr}/hook"), "types": ["job.succeeded"]})
            .to_string()
            .as_bytes(),
    );
    assert_eq!(s, 201, "{body}");

    let traceparent = format!("00-{TRACE_ID}-{CLIENT_SPAN}-01");
    let pipeline = json!({"steps": [
        {"name": "image", "user": USER, "kind": "generate", "allowed_regions": ["US"],
         "payload": {"provider": "openai", "model": "gpt-image-1", "prompt": PROMPT}},
        {"name": "big", "needs": ["image"], "user": USER, "kind": "upscale",
         "payload": {"input": "${steps.image.output}", "scale": 2}},
    ]});
    let mut headers = auth.to_vec();
    headers.push(("traceparent", traceparent.as_str()));
    let (s, _, body) = http_request(
        &sched.addr,
        "POST",
        "/v1/pipelines",
        &headers,
        pipeline.to_string().as_bytes(),
    );
    assert_eq!(s, 201, "{body}");
    let created: Value = serde_json::from_str(&body).unwrap();
    let id = created["id"].as_str().unwrap().to_owned();
    let mut last = Value::Null;
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while last["status"] != "succeeded" {
        assert!(
            std::time::Instant::now() < deadline,
            "the pipeline did not succeed: {last:#}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
        let (_, _, b) = http_request(&sched.addr, "GET", &format!("/v1/pipelines/{id}"), &auth, b"");
        last = serde_json::from_str(&b).unwrap_or(Value::Null);
    }
    let job_of = |name: &str| -> String {
        last["steps"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == name)
            .unwrap()["job_id"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let (image_job, big_job) = (job_of("image"), job_of("big"));

    // Spans arrive in batches (every 5 s): wait for both acks and both deliveries.
    let ours = || ours(&got);
    eventually(
        "both steps' acks and deliveries in the trace",
        Duration::from_secs(40),
        || {
            let spans = ours();
            async move {
                let n = |name: &str| spans.iter().filter(|s| s.name == name).count();
                n("queue.ack") >= 2 && n("webhook.deliver") >= 2
            }
        },
    )
    .await;
    let spans = ours();
    let request = spans
        .iter()
        .find(|s| s.name == "POST /v1/pipelines")
        .unwrap_or_else(|| panic!("no request span: {spans:#?}"));
    assert_eq!(
        (request.service.as_str(), request.parent.as_str()),
        ("gantry-scheduler", CLIENT_SPAN)
    );
    let under_request = subtree(&spans, &request.id);
    for (job_id, kind, steps) in [
        (
            &image_job,
            "generate",
            &["provider.submit", "store.put", "scan", "queue.ack"][..],
        ),
        (
            &big_job,
            "upscale",
            &["store.get", "upscale.resize", "store.put", "queue.ack"][..],
        ),
    ] {
        let job = spans
            .iter()
            .find(|s| s.name == format!("job {kind}") && s.attrs.get("job_id") == Some(job_id))
            .unwrap_or_else(|| panic!("no job span for {kind} {job_id}: {spans:#?}"));
        // Both steps were enqueued by the request; the second waited in Redis for the first.
        let enqueue = spans.iter().find(|s| s.id == job.parent).expect("the job's parent");
        assert_eq!(
            (enqueue.name.as_str(), enqueue.service.as_str()),
            ("enqueue", "gantry-scheduler")
        );
        assert!(
            under_request.iter().any(|s| s.id == enqueue.id),
            "{kind}'s enqueue span is not under the request"
        );
        let names: Vec<&str> = subtree(&spans, &job.id).iter().map(|s| s.name.as_str()).collect();
        for step in steps {
            assert!(names.contains(step), "{kind}: no {step} among {names:?}");
        }
        let ack = child(&spans, job, "queue.ack");
        assert_eq!(ack.service, "gantry-worker");
        // Its success event's delivery joins the trace under the job's enqueue span.
        let delivery = spans
            .iter()
            .find(|s| {
                s.name == "webhook.deliver"
                    && s.parent == enqueue.id
                    && s.attrs.get("event_type").map(String::as_str) == Some("job.succeeded")
                    && delivered
                        .lock()
                        .unwrap()
                        .iter()
                        .any(|d| s.attrs.get("delivery") == Some(d))
                    && under_request.iter().any(|u| u.id == s.parent)
            })
            .unwrap_or_else(|| panic!("no delivery span for {kind} under {}: {spans:#?}", enqueue.id));
        assert_eq!(delivery.service, "gantry-scheduler");
        assert_eq!(delivery.attrs.get("outcome").map(String::as_str), Some("delivered"));
        assert_eq!(
            delivery.attrs.get("http.response.status_code").map(String::as_str),
            Some("200")
        );
    }
    // Two deliveries, one per step's success; the pipeline's jobs and nothing else.
    assert_eq!(delivered.lock().unwrap().len(), 2, "{:?}", delivered.lock().unwrap());
    assert_no_canary(&spans);
}

/// The same traces over OTLP/gRPC (`--otlp-protocol grpc`), to a receiver serving the
/// collector's `TraceService` from the official definitions: the scheduler's and the worker's
/// spans arrive, and the tree holds from the request to the job's ack.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traces_go_over_otlp_grpc_too() {
    let (endpoint, got) = common::otlp::grpc_receiver().await;
    let redis = gantry_testkit::RedisServer::start().unwrap();
    let mock = MockProvidersProcess::start(&[]);
    let grpc = ["--otlp-endpoint", endpoint.as_str(), "--otlp-protocol", "grpc"];
    let sched = SchedulerProcess::start_with(&redis.url(), None, &grpc, None);
    let logs = tempfile::tempdir().unwrap();
    let outputs = logs.path().join("outputs");
    let mut args = grpc.to_vec();
    let mock_url = mock.url();
    args.extend(["--mock-providers", &mock_url, "--outputs", outputs.to_str().unwrap()]);
    let _worker = WorkerProcess::start(&redis.url(), "traced-grpc", 2, 10.0, &args, logs.path());
    let api = Client::new(&format!("http://{}", sched.addr), "demo-studio-key").unwrap();
    let mut job = generate("openai", "gpt-image-1", &["US"], PROMPT, json!({}));
    job["user"] = USER.into();
    let id = submit(&sched, &job);
    assert_eq!(settled(&api, &id).await.status, "succeeded");
    let ours = || ours(&got);
    eventually("the job's ack arrives over gRPC", Duration::from_secs(30), || {
        let spans = ours();
        async move { spans.iter().any(|s| s.name == "queue.ack") }
    })
    .await;
    let spans = ours();
    let job = spans
        .iter()
        .find(|s| s.name == "job generate" && s.attrs.get("job_id") == Some(&id))
        .unwrap_or_else(|| panic!("no job span: {spans:#?}"));
    assert_eq!(job.service, "gantry-worker");
    child(&spans, job, "provider.submit");
    child(&spans, job, "queue.ack");
    let enqueue = spans.iter().find(|s| s.id == job.parent).expect("the job's parent");
    assert_eq!(
        (enqueue.name.as_str(), enqueue.service.as_str()),
        ("enqueue", "gantry-scheduler")
    );
    let admission = spans.iter().find(|s| s.id == enqueue.parent).expect("enqueue's parent");
    let request = spans
        .iter()
        .find(|s| s.id == admission.parent)
        .expect("admission's parent");
    assert_eq!(
        (request.name.as_str(), request.parent.as_str()),
        ("POST /v1/jobs", CLIENT_SPAN)
    );
}
