//! `GET /v1/events` and `GET /v1/jobs/{id}/events`: a tenant follows its jobs over Server-Sent
//! Events from a real scheduler, with a real worker running them, and resumes where it stopped.

use crate::common;

use std::time::Duration;

use common::sse::{SseEvent, SseStream};
use common::*;
use serde_json::json;

const WAIT: Duration = Duration::from_secs(40);

/// Reads `s` until `done` holds for what was read (or `WAIT` passes).
async fn read_until(s: &mut SseStream, done: impl Fn(&[SseEvent]) -> bool) -> Vec<SseEvent> {
    let mut got = Vec::new();
    let deadline = tokio::time::Instant::now() + WAIT;
    while !done(&got) {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match s.next(left).await {
            Some(e) => got.push(e),
            None => panic!("the stream stopped short: {got:#?}"),
        }
    }
    got
}

fn of_job<'a>(evs: &'a [SseEvent], id: &str) -> Vec<&'a str> {
    evs.iter()
        .filter(|e| e.event.starts_with("job.") && e.json()["data"]["job_id"] == id)
        .map(|e| e.event.as_str())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenants_follow_their_jobs_over_sse_and_resume_where_they_stopped() {
    let f = fleet(1, 4, &[]);
    let base = format!("http://{}", f.sched.addr);
    let api = gantry_client::Client::new(&base, "demo-studio-key").unwrap();
    let events = format!("{base}/v1/events");
    let mut all = SseStream::open(&events, "demo-studio-key", None).await;
    assert_eq!(all.status, 200);
    let header = |s: &SseStream, h: &str| {
        s.headers
            .get(h)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    assert_eq!(header(&all, "content-type"), "text/event-stream");
    assert_eq!(header(&all, "cache-control"), "no-cache");
    assert_eq!(header(&all, "x-accel-buffering"), "no", "proxies must not buffer");
    let mut dead_only = SseStream::open(&format!("{events}?type=job.dead"), "demo-studio-key", None).await;
    let mut other_tenant = SseStream::open(&events, "demo-video-key", None).await;

    let ok = api
        .submit(&json!({"user": "u-1", "kind": "noop", "payload": {"output_bytes": 16}}))
        .await
        .unwrap()
        .id;
    let bad = api
        .submit(&json!({"user": "u-1", "kind": "noop", "max_attempts": 2, "payload": {"fail_attempts": 5}}))
        .await
        .unwrap()
        .id;
    let got = read_until(&mut all, |evs| {
        of_job(evs, &ok) == ["job.succeeded"] && of_job(evs, &bad).last() == Some(&"job.dead")
    })
    .await;
    assert_eq!(of_job(&got, &bad), ["job.failed", "job.dead"], "{got:#?}");
    let done = got.iter().find(|e| e.event == "job.succeeded").unwrap();
    let payload = done.json();
    assert_eq!(payload["type"], "job.succeeded");
    assert!(payload["timestamp"].as_str().unwrap().ends_with('Z'), "{payload}");
    let data = &payload["data"];
    assert_eq!(
        (data["kind"].as_str(), data["status"].as_str()),
        (Some("noop"), Some("succeeded"))
    );
    let key = data["result"]["object_key"].as_str().unwrap();
    let name = key.rsplit('/').next().unwrap();
    assert_eq!(data["output_url"], format!("/v1/jobs/{ok}/outputs/{name}"));
    let dead = got.iter().find(|e| e.event == "job.dead").unwrap().json();
    assert_eq!(dead["data"]["error"]["class"], "retryable", "{dead}");
    for e in &got {
        // Never the user, never a prompt: the platform has its own job id.
        assert!(!e.data.contains("u-1") && !e.data.contains("\"user\""), "{}", e.data);
        assert!(e.id.as_deref().is_some_and(|i| i.starts_with("cpu=")), "{e:?}");
    }

    // Filtered by type: only the dead letter. Another tenant: nothing at all.
    let d = read_until(&mut dead_only, |evs| !evs.is_empty()).await;
    assert_eq!(of_job(&d, &bad), ["job.dead"]);
    assert!(dead_only.drain(Duration::from_millis(500)).await.is_empty());
    assert!(
        other_tenant.drain(Duration::from_secs(1)).await.is_empty(),
        "another tenant's events leaked"
    );

    // Resuming with Last-Event-ID gives exactly what came after that event.
    let first_id = got[0].id.clone().unwrap();
    let mut resumed = SseStream::open(&events, "demo-studio-key", Some(&first_id)).await;
    let again = read_until(&mut resumed, |evs| evs.len() == got.len() - 1).await;
    let names = |v: &[SseEvent]| v.iter().map(|e| (e.event.clone(), e.data.clone())).collect::<Vec<_>>();
    assert_eq!(names(&again), names(&got[1..]));
    assert!(
        resumed.drain(Duration::from_millis(500)).await.is_empty(),
        "nothing twice"
    );

    // One job's events: its whole story from its enqueue, then the stream ends.
    let mut one = SseStream::open(&format!("{base}/v1/jobs/{bad}/events"), "demo-studio-key", None).await;
    let story = read_until(&mut one, |evs| evs.len() == 2).await;
    assert_eq!(of_job(&story, &bad), ["job.failed", "job.dead"]);
    assert!(
        one.ended(Duration::from_secs(5)).await,
        "the stream ends after the final event"
    );
    let foreign = SseStream::open(&format!("{base}/v1/jobs/{bad}/events"), "demo-video-key", None).await;
    assert_eq!(foreign.status, 404, "another tenant's job does not exist for it");

    // Bad filters and cursors are refused, saying why.
    for (q, last) in [
        ("?type=job.nope", None),
        ("?job=not-a-job", None),
        ("?colour=red", None),
        ("", Some("garbage")),
    ] {
        let s = SseStream::open(&format!("{events}{q}"), "demo-studio-key", last).await;
        assert_eq!(s.status, 400, "{q} {last:?}");
    }

    // Retention dropped what a client would resume into: it is told, not silently skipped.
    let redis = redis::Client::open(f.redis.url()).unwrap();
    let mut c = redis.get_multiplexed_async_connection().await.unwrap();
    let _: i64 = redis::cmd("XTRIM")
        .arg("gantry:{cpu}:events")
        .arg("MAXLEN")
        .arg(0)
        .query_async(&mut c)
        .await
        .unwrap();
    let mut late = SseStream::open(&events, "demo-studio-key", Some(&first_id)).await;
    let gap = late.next(WAIT).await.unwrap();
    assert_eq!(gap.event, "gap", "{gap:?}");
    assert_eq!(gap.json()["pool"], "cpu");
}
