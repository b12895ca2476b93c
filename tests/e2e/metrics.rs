//! The worker's /metrics, /healthz and /readyz, scraped from a real worker process.

#![allow(clippy::unwrap_used)] // a panic is how a test reports failure

use crate::common;

use std::time::Duration;

use common::*;
use gantry_queue::{ErrorClass, NewJob, NoopPayload, Payload};
use gantry_testkit::RedisServer;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_exports_job_and_gpu_metrics() {
    let redis = RedisServer::start().expect("redis");
    let url = redis.url();
    let logs = tempfile::tempdir().expect("tmp");
    let q = client(&url).await;
    let ok = (0..5).map(|_| {
        NewJob::new(
            "t",
            "u",
            Payload::Noop(NoopPayload {
                sleep_ms: 20,
                ..Default::default()
            }),
        )
    });
    let flaky = (0..2).map(|_| NewJob {
        max_attempts: Some(1),
        ..NewJob::new(
            "t",
            "u",
            Payload::Noop(NoopPayload {
                fail_attempts: 1,
                fail_class: Some(ErrorClass::Permanent),
                ..Default::default()
            }),
        )
    });
    q.enqueue_batch(&cpu(), ok.chain(flaky).collect()).await.unwrap();
    let _w = WorkerProcess::start(
        &url,
        "metered",
        4,
        10.0,
        &[
            "--gpus",
            "fake:1x80GiB+nvenc",
            "--metrics-addr",
            "127.0.0.1:0",
            "--registry-heartbeat-secs",
            "0.2",
        ],
        logs.path(),
    );
    eventually("jobs done", Duration::from_secs(20), || async { drained(&q).await }).await;
    let addr = worker_metrics_addr(&url).await;

    assert_eq!(http_get(&addr, "/healthz").0, 200);
    assert_eq!(http_get(&addr, "/readyz").0, 200);
    let (status, text) = http_get(&addr, "/metrics");
    assert_eq!(status, 200);
    for needle in [
        r#"gantry_jobs_succeeded_total{pool="cpu",kind="noop"} 5"#,
        r#"gantry_jobs_failed_total{pool="cpu",kind="noop",class="permanent"} 2"#,
        r#"gantry_jobs_dead_lettered_total{pool="cpu",kind="noop"} 2"#,
        r#"gantry_job_duration_seconds_count{pool="cpu",kind="noop"} 7"#,
        r#"gantry_gpu_memory_total_bytes{gpu="0",model="fake 80GiB nvenc"} 85899345920"#,
        r#"gantry_worker_info{worker="metered",pool="cpu""#,
        "gantry_claim_duration_seconds_bucket",
        "gantry_jobs_in_flight",
        // Without an OpenMetrics `Accept`: the classic text format, counters named `_total`.
        "# TYPE gantry_jobs_succeeded_total counter",
    ] {
        assert!(text.contains(needle), "missing {needle} in\n{text}");
    }
}
