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
    let ours = || -> Vec<Got> {
        let all = got.lock().unwrap();
        all.iter().filter(|s| s.trace == TRACE_ID).cloned().collect()
    };
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
    for s in &everything {
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
