//! Outputs through the object store from a real worker process: a deterministic key per job, so
//! a retried job leaves one object, and a result that describes the bytes.

#![allow(clippy::unwrap_used)] // a panic is how a test reports failure

use crate::common;

use std::time::Duration;

use common::*;
use gantry_queue::{JobStatus, NewJob, NoopPayload, Payload};
use gantry_testkit::RedisServer;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retried_job_leaves_one_output_described_by_its_result() {
    let redis = RedisServer::start().expect("redis");
    let tmp = tempfile::tempdir().expect("tmp");
    let out_dir = tmp.path().join("outputs");
    let q = client(&redis.url()).await;
    let flaky = NewJob::new(
        "studio-9",
        "u",
        Payload::Noop(NoopPayload {
            fail_attempts: 1,
            output_bytes: Some(1000),
            ..Default::default()
        }),
    );
    let id = q.enqueue(&cpu(), flaky).await.unwrap().id;
    let _w = WorkerProcess::start(
        &redis.url(),
        "writer",
        2,
        10.0,
        &["--outputs", out_dir.to_str().unwrap()],
        tmp.path(),
    );
    eventually("the job succeeded", Duration::from_secs(30), || async {
        q.job_in(&cpu(), id)
            .await
            .map(|r| r.status == JobStatus::Succeeded)
            .unwrap_or(false)
    })
    .await;
    let rec = q.job_in(&cpu(), id).await.unwrap();
    assert_eq!(rec.attempts, 2, "the first attempt wrote its output, then failed");
    let res = rec.result.expect("result recorded");
    let user_folder = format!("jobs/studio-9/{}", gantry_queue::user_key("studio-9", "u"));
    assert_eq!(res.object_key, format!("{user_folder}/{id}/output.bin"));
    assert_eq!(
        (res.size_bytes, res.content_type.as_str()),
        (1000, "application/octet-stream")
    );
    let on_disk = std::fs::read(out_dir.join(&res.object_key)).unwrap();
    assert_eq!(on_disk.len(), 1000);
    let files = std::fs::read_dir(out_dir.join(&user_folder).join(id.to_string()))
        .unwrap()
        .count();
    assert_eq!(files, 1, "the retry overwrote; no duplicate");
    let digest = std::process::Command::new("sha256sum")
        .arg(out_dir.join(&res.object_key))
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&digest.stdout).starts_with(&res.sha256),
        "sha256 matches the bytes"
    );
}

/// `GET /v1/jobs/{id}/outputs/{name}`: a tenant downloads its released outputs through the API.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenants_download_their_released_outputs_with_ranges_and_etags() {
    use serde_json::json;
    let redis = RedisServer::start().expect("redis");
    let tmp = tempfile::tempdir().expect("tmp");
    let out_dir = tmp.path().join("outputs");
    let out = out_dir.to_str().unwrap();
    let mock = MockProvidersProcess::start(&[]);
    let sched = SchedulerProcess::start_with(&redis.url(), None, &["--outputs", out], None);
    let _w = WorkerProcess::start(
        &redis.url(),
        "dl",
        4,
        10.0,
        &["--mock-providers", &mock.url(), "--outputs", out],
        tmp.path(),
    );
    let api = gantry_client::Client::new(&format!("http://{}", sched.addr), "demo-studio-key").unwrap();
    let get = |path: &str, key: &str, extra: &[(&str, &str)]| {
        let auth = format!("Bearer {key}");
        let mut h = vec![("Authorization", auth.as_str())];
        h.extend_from_slice(extra);
        http_request(&sched.addr, "GET", path, &h, b"")
    };

    let a = api
        .submit(&generate("openai", "gpt-image-1", &["US"], "a red kite", json!({})))
        .await
        .unwrap();
    let job = settled(&api, &a.id).await;
    assert_eq!(job.status, "succeeded", "{job:?}");
    let result = job.result.clone().unwrap();
    let key = result["object_key"].as_str().unwrap();
    let name = key.rsplit('/').next().unwrap();
    let on_disk = std::fs::read(out_dir.join(key)).unwrap();
    let path = format!("/v1/jobs/{}/outputs/{name}", a.id);

    // The whole output: the stored bytes, typed, tagged, with its length.
    let (s, head, body) = get(&path, "demo-studio-key", &[]);
    assert_eq!(s, 200, "{head}");
    let head_l = head.to_ascii_lowercase();
    assert!(head_l.contains("content-type: image/png"), "{head}");
    assert!(head_l.contains(&format!("content-length: {}", on_disk.len())), "{head}");
    assert!(head_l.contains("accept-ranges: bytes") && head_l.contains("x-content-type-options: nosniff"));
    // (http_request reads the body as text, lossily: compare it read the same way.)
    assert_eq!(body, String::from_utf8_lossy(&on_disk), "the stored bytes");
    let etag = head
        .lines()
        .find_map(|l| l.strip_prefix("etag: ").or_else(|| l.strip_prefix("ETag: ")))
        .unwrap_or_else(|| panic!("an ETag in {head}"))
        .trim()
        .to_owned();

    // A range: 206 with exactly those bytes.
    let (s, head, body) = get(&path, "demo-studio-key", &[("Range", "bytes=1-3")]);
    assert_eq!(s, 206, "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains(&format!("content-range: bytes 1-3/{}", on_disk.len())),
        "{head}"
    );
    assert_eq!(body.as_bytes(), &on_disk[1..4]);
    let (s, head, _) = get(&path, "demo-studio-key", &[("Range", "bytes=999999999-")]);
    assert_eq!(s, 416, "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains(&format!("content-range: bytes */{}", on_disk.len()))
    );
    // Unchanged since the client's copy: 304.
    let (s, _, body) = get(&path, "demo-studio-key", &[("If-None-Match", etag.as_str())]);
    assert_eq!((s, body.as_str()), (304, ""));
    // Not a pre-signed URL on a directory store: the bytes themselves.
    assert_eq!(get(&format!("{path}?redirect=1"), "demo-studio-key", &[]).0, 200);

    // Never another tenant's (not found, as if it did not exist), never a missing name, never
    // a name that climbs out of the job's folder.
    assert_eq!(get(&path, "demo-video-key", &[]).0, 404);
    let other = format!("/v1/jobs/{}/outputs/nope.png", a.id);
    assert_eq!(get(&other, "demo-studio-key", &[]).0, 404);
    let climb = format!("/v1/jobs/{}/outputs/..%2F..%2Fsecret", a.id);
    assert_eq!(get(&climb, "demo-studio-key", &[]).0, 404);
    assert_eq!(get(&path, "wrong-key", &[]).0, 401);

    // A job that has not finished has released nothing; nor has one whose outputs were never
    // scanned (a no-op with bytes: not media the gate scans).
    let running = api
        .submit(&json!({"user": "u-1", "kind": "noop", "payload": {"sleep_ms": 60000}}))
        .await
        .unwrap();
    eventually("it runs", Duration::from_secs(20), || async {
        api.job(&running.id).await.unwrap().status == "running"
    })
    .await;
    let (s, _, body) = get(
        &format!("/v1/jobs/{}/outputs/output.bin", running.id),
        "demo-studio-key",
        &[],
    );
    assert_eq!(s, 409, "{body}");
    assert!(body.contains("running"), "{body}");
    let unscanned = api
        .submit(&json!({"user": "u-1", "kind": "noop", "payload": {"output_bytes": 64}}))
        .await
        .unwrap();
    let done = settled(&api, &unscanned.id).await;
    assert_eq!(done.status, "succeeded");
    let unscanned_name = done.result.as_ref().unwrap()["object_key"]
        .as_str()
        .unwrap()
        .rsplit('/')
        .next()
        .unwrap()
        .to_owned();
    let (s, _, body) = get(
        &format!("/v1/jobs/{}/outputs/{unscanned_name}", unscanned.id),
        "demo-studio-key",
        &[],
    );
    assert_eq!(s, 409, "{body}");
}
