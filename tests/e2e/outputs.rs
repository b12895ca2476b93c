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
