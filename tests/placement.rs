//! GPU-aware placement with real worker processes and fake inventories on one pool: VRAM fit and
//! sharing, NVENC gating, CPU fallback.

#![allow(clippy::unwrap_used)] // a panic is how a test reports failure

mod common;

use std::time::Duration;

use common::*;
use gantry_queue::{GpuRequirement, JobId, JobKind, JobStatus, NewJob, NoopPayload, Payload, Pool, Requirements};
use gantry_testkit::RedisServer;

const GIB: u64 = 1 << 30;

fn job(sleep_ms: u64, gpu: Option<(u64, bool)>) -> NewJob {
    NewJob {
        requirements: Requirements {
            gpu: gpu.map(|(gib, nvenc)| GpuRequirement {
                min_vram_bytes: gib * GIB,
                nvenc,
            }),
            preferred_model: None,
        },
        ..NewJob::new(
            "t",
            "u",
            Payload::Noop(NoopPayload {
                sleep_ms,
                ..Default::default()
            }),
        )
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_job_runs_only_where_it_fits() {
    let redis = RedisServer::start().expect("redis");
    let url = redis.url();
    let logs = tempfile::tempdir().expect("tmp");
    let pool = Pool::new("gpu").unwrap();
    let q = client(&url).await;
    let big: Vec<JobId> = q
        .enqueue_batch(&pool, (0..4).map(|_| job(400, Some((40, false)))).collect())
        .await
        .unwrap()
        .iter()
        .map(|e| e.id)
        .collect();
    let enc: Vec<JobId> = q
        .enqueue_batch(&pool, (0..3).map(|_| job(100, Some((16, true)))).collect())
        .await
        .unwrap()
        .iter()
        .map(|e| e.id)
        .collect();
    let cpu_jobs: Vec<JobId> = q
        .enqueue_batch(&pool, (0..6).map(|_| job(50, None)).collect())
        .await
        .unwrap()
        .iter()
        .map(|e| e.id)
        .collect();

    let start = |id: &str, gpus: &str| {
        WorkerProcess::start_in(
            &url,
            "gpu",
            id,
            8,
            10.0,
            &["--gpus", gpus, "--cpu-slots", "2"],
            logs.path(),
        )
    };
    let _small = start("w-30g", "fake:1x30GiB");
    let _large = start("w-80g", "fake:1x80GiB");
    let _l4 = start("w-24g-nvenc", "fake:1x24GiB+nvenc");
    let _cpu = start("w-cpu", "none");

    eventually("every job finished", Duration::from_secs(60), || async {
        q.stats(&pool, &[JobKind::Noop])
            .await
            .map(|s| s[0].waiting_total() + s[0].in_flight == 0)
            .unwrap_or(false)
    })
    .await;

    let mut windows = Vec::new();
    for id in &big {
        let r = q.job_in(&pool, *id).await.unwrap();
        assert_eq!(r.status, JobStatus::Succeeded);
        assert_eq!(
            r.worker.as_deref(),
            Some("w-80g"),
            "a 40 GiB job runs only where 40 GiB are free"
        );
        windows.push((r.started_at_ms.unwrap(), r.finished_at_ms.unwrap()));
    }
    // Never more than two 40 GiB jobs at once on the 80 GiB GPU; two did share it. A record's
    // finish time is its ack in Redis, a few ms after the executor finished and freed the VRAM,
    // so 20 ms of each window are the ack's (a job runs 400 ms).
    const ACK_SLACK_MS: u64 = 20;
    let overlap_at = |t: u64| windows.iter().filter(|(s, f)| *s <= t && t + ACK_SLACK_MS < *f).count();
    let peak = windows.iter().map(|(s, _)| overlap_at(*s)).max().unwrap();
    assert_eq!(peak, 2, "windows {windows:?}");
    for id in &enc {
        let r = q.job_in(&pool, *id).await.unwrap();
        assert_eq!(
            r.worker.as_deref(),
            Some("w-24g-nvenc"),
            "NVENC jobs only where NVENC is proven"
        );
    }
    for id in &cpu_jobs {
        let r = q.job_in(&pool, *id).await.unwrap();
        assert_eq!(
            r.status,
            JobStatus::Succeeded,
            "CPU jobs run anywhere, the CPU-only worker included"
        );
    }
}
