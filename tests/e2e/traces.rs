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

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use gantry_client::Client;
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use prost::Message as _;
use serde_json::{Value, json};

const TRACE_ID: &str = "5e1f0c2a9b8d47e3a6c1d2e3f4a5b6c7";
const CLIENT_SPAN: &str = "1a2b3c4d5e6f7081";
const PROMPT: &str = "a lighthouse at dusk, zq-trace-canary";
const USER: &str = "u-trace-7d41";

/// One received span, flattened.
#[derive(Clone, Debug)]
struct Got {
    service: String,
    name: String,
    trace: String,
    id: String,
    parent: String,
    /// Every attribute and event attribute, as text, and the events' names.
    text: Vec<String>,
    attrs: BTreeMap<String, String>,
}

fn value_text(v: &Option<AnyValue>) -> String {
    match v.as_ref().and_then(|v| v.value.as_ref()) {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        Some(any_value::Value::BoolValue(b)) => b.to_string(),
        Some(any_value::Value::DoubleValue(d)) => d.to_string(),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}

fn attrs(kvs: &[KeyValue]) -> BTreeMap<String, String> {
    kvs.iter().map(|kv| (kv.key.clone(), value_text(&kv.value))).collect()
}

type Received = Arc<Mutex<Vec<Got>>>;

/// An OTLP/HTTP trace receiver on a free loopback port: `POST /v1/traces` (protobuf).
async fn receiver() -> (String, Received) {
    let got: Received = Arc::default();
    let store = got.clone();
    let app = axum::Router::new().route(
        "/v1/traces",
        axum::routing::post(move |body: axum::body::Bytes| {
            let store = store.clone();
            async move {
                let Ok(req) = ExportTraceServiceRequest::decode(body) else {
                    return (axum::http::StatusCode::BAD_REQUEST, Vec::new());
                };
                let mut out = Vec::new();
                for rs in req.resource_spans {
                    let res = rs.resource.map(|r| attrs(&r.attributes)).unwrap_or_default();
                    let service = res.get("service.name").cloned().unwrap_or_default();
                    for ss in rs.scope_spans {
                        for s in ss.spans {
                            let a = attrs(&s.attributes);
                            let mut text: Vec<String> = a.iter().flat_map(|(k, v)| [k.clone(), v.clone()]).collect();
                            for e in &s.events {
                                text.push(e.name.clone());
                                text.extend(attrs(&e.attributes).into_values());
                            }
                            out.push(Got {
                                service: service.clone(),
                                name: s.name.clone(),
                                trace: hex(&s.trace_id),
                                id: hex(&s.span_id),
                                parent: hex(&s.parent_span_id),
                                text,
                                attrs: a,
                            });
                        }
                    }
                }
                store.lock().unwrap().extend(out);
                (
                    axum::http::StatusCode::OK,
                    ExportTraceServiceResponse::default().encode_to_vec(),
                )
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}"), got)
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

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
