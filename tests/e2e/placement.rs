//! GPU-aware placement with real worker processes and fake inventories: VRAM fit and sharing,
//! NVENC gating, CPU fallback, warm-model preference, work stealing by an idle large GPU,
//! memory another process holds on a GPU.

#![allow(clippy::unwrap_used)] // a panic is how a test reports failure

use crate::common;

use std::time::Duration;

use common::*;
use gantry_queue::{GpuRequirement, JobId, JobStatus, NewJob, NoopPayload, Payload, Pool, Requirements};
use gantry_testkit::RedisServer;

const GIB: u64 = 1 << 30;

fn job(sleep_ms: u64, gpu: Option<(u64, bool)>) -> NewJob {
    model_job(sleep_ms, gpu, None)
}

fn model_job(sleep_ms: u64, gpu: Option<(u64, bool)>, model: Option<&str>) -> NewJob {
    NewJob {
        requirements: Requirements {
            gpu: gpu.map(|(gib, nvenc)| GpuRequirement {
                min_vram_bytes: gib * GIB,
                nvenc,
                count: 1,
            }),
            preferred_model: model.map(str::to_owned),
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
    let big: Vec<JobId> = enqueue_all(&q, &pool, (0..4).map(|_| job(400, Some((40, false)))).collect()).await;
    let enc: Vec<JobId> = enqueue_all(&q, &pool, (0..3).map(|_| job(100, Some((16, true)))).collect()).await;
    let cpu_jobs: Vec<JobId> = enqueue_all(&q, &pool, (0..6).map(|_| job(50, None)).collect()).await;

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

    eventually("every job finished", Duration::from_secs(60), || drained_in(&q, &pool)).await;

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

async fn enqueue_all(q: &gantry_queue::QueueClient, pool: &Pool, jobs: Vec<NewJob>) -> Vec<JobId> {
    q.enqueue_batch(pool, jobs)
        .await
        .unwrap()
        .iter()
        .map(|e| e.id)
        .collect()
}

/// Waits until `n` workers of `pool` are in the fleet registry (so none gets a head start).
async fn registered(q: &gantry_queue::QueueClient, pool: &Pool, n: usize) {
    eventually("workers registered", Duration::from_secs(20), || async {
        q.workers(pool).await.map(|w| w.len() >= n).unwrap_or(false)
    })
    .await;
}

async fn ran_on(q: &gantry_queue::QueueClient, pool: &Pool, ids: &[JobId]) -> Vec<String> {
    let mut on = Vec::new();
    for id in ids {
        let r = q.job_in(pool, *id).await.unwrap();
        assert_eq!(r.status, JobStatus::Succeeded);
        on.push(r.worker.unwrap_or_default());
    }
    on
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_go_where_their_model_is_warm() {
    let redis = RedisServer::start().expect("redis");
    let url = redis.url();
    let logs = tempfile::tempdir().expect("tmp");
    let pool = Pool::new("gpu").unwrap();
    let q = client(&url).await;
    let start = |id: &str, warm: &str| {
        WorkerProcess::start_in(
            &url,
            "gpu",
            id,
            1,
            10.0,
            &["--gpus", "fake:1x80GiB", "--warm-models", warm],
            logs.path(),
        )
    };
    let _flux = start("w-flux", "flux-dev");
    let _seedream = start("w-seedream", "seedream-4");
    registered(&q, &pool, 2).await;
    // Interleaved, so arrival order alone would split each model across both workers.
    let mut jobs = Vec::new();
    for _ in 0..4 {
        jobs.push(model_job(250, Some((20, false)), Some("flux-dev")));
        jobs.push(model_job(250, Some((20, false)), Some("seedream-4")));
    }
    let ids = enqueue_all(&q, &pool, jobs).await;
    eventually("every job finished", Duration::from_secs(60), || drained_in(&q, &pool)).await;
    let on = ran_on(&q, &pool, &ids).await;
    for (i, w) in on.iter().enumerate() {
        let want = if i % 2 == 0 { "w-flux" } else { "w-seedream" };
        assert_eq!(w, want, "job {i} prefers the model warm on {want}: {on:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_large_gpu_takes_small_jobs_from_another_pool() {
    let redis = RedisServer::start().expect("redis");
    let url = redis.url();
    let logs = tempfile::tempdir().expect("tmp");
    let small = Pool::new("gpu-small").unwrap();
    let large = Pool::new("gpu-large").unwrap();
    let q = client(&url).await;
    let _l4 = WorkerProcess::start_in(
        &url,
        "gpu-small",
        "w-small",
        1,
        10.0,
        &["--gpus", "fake:1x24GiB"],
        logs.path(),
    );
    let _h100 = WorkerProcess::start_in(
        &url,
        "gpu-large",
        "w-large",
        4,
        10.0,
        &["--gpus", "fake:1x80GiB", "--steal-from", "gpu-small"],
        logs.path(),
    );
    registered(&q, &small, 1).await;
    registered(&q, &large, 1).await;
    // Ten small jobs queue up behind one 24 GiB worker; the 80 GiB worker's own pool is empty.
    let small_ids = enqueue_all(&q, &small, (0..10).map(|_| job(400, Some((16, false)))).collect()).await;
    eventually("small jobs finished", Duration::from_secs(60), || {
        drained_in(&q, &small)
    })
    .await;
    let on = ran_on(&q, &small, &small_ids).await;
    let stolen = on.iter().filter(|w| *w == "w-large").count();
    assert!(stolen >= 4, "the idle 80 GiB GPU took small jobs: {on:?}");
    assert!(
        on.iter().any(|w| w == "w-small"),
        "the small pool's own worker ran some: {on:?}"
    );
    // Its own pool comes first: a large job enqueued now runs on it and succeeds.
    let big = enqueue_all(&q, &large, vec![job(100, Some((70, false)))]).await;
    eventually("large job finished", Duration::from_secs(30), || async {
        q.job_in(&large, big[0]).await.map(|r| r.status).ok() == Some(JobStatus::Succeeded)
    })
    .await;
}

/// Memory another process holds on a GPU is not offered: a 24 GiB GPU with 20 GiB in use by
/// someone else runs the 2 GiB jobs and leaves the 8 GiB one to a worker where it fits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_other_processes_hold_is_not_offered() {
    let redis = RedisServer::start().expect("redis");
    let url = redis.url();
    let logs = tempfile::tempdir().expect("tmp");
    let pool = Pool::new("gpu").unwrap();
    let q = client(&url).await;
    let small: Vec<JobId> = enqueue_all(&q, &pool, (0..3).map(|_| job(50, Some((2, false)))).collect()).await;
    let big: Vec<JobId> = enqueue_all(&q, &pool, vec![job(50, Some((8, false)))]).await;
    let start =
        |id: &str, gpus: &str| WorkerProcess::start_in(&url, "gpu", id, 4, 10.0, &["--gpus", gpus], logs.path());
    let _busy = start("w-busy", "fake:1x24GiB+used=20GiB");
    eventually("the small jobs ran", Duration::from_secs(30), || {
        let (q, pool, small) = (q.clone(), pool.clone(), small.clone());
        async move { all_succeeded(&q, &pool, &small).await }
    })
    .await;
    for id in &small {
        assert_eq!(q.job_in(&pool, *id).await.unwrap().worker.as_deref(), Some("w-busy"));
    }
    // 4 GiB are free there; the 8 GiB job waits.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(q.job_in(&pool, big[0]).await.unwrap().status, JobStatus::Queued);
    let _free = start("w-free", "fake:1x24GiB");
    eventually("the 8 GiB job ran", Duration::from_secs(30), || drained_in(&q, &pool)).await;
    let r = q.job_in(&pool, big[0]).await.unwrap();
    assert_eq!((r.status, r.worker.as_deref()), (JobStatus::Succeeded, Some("w-free")));
}

/// A GPU in MIG mode is placed on instance by instance: two 30 GiB jobs run side by side, one
/// per 40 GiB instance (the registry shows each instance's reservation), and a 50 GiB job,
/// which no instance holds, waits for a whole GPU elsewhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_mig_instance_is_a_unit_of_its_own() {
    let redis = RedisServer::start().expect("redis");
    let url = redis.url();
    let logs = tempfile::tempdir().expect("tmp");
    let pool = Pool::new("gpu").unwrap();
    let q = client(&url).await;
    let pair: Vec<JobId> = enqueue_all(&q, &pool, (0..2).map(|_| job(2500, Some((30, false)))).collect()).await;
    let big: Vec<JobId> = enqueue_all(&q, &pool, vec![job(50, Some((50, false)))]).await;
    let start = |id: &str, gpus: &str| {
        WorkerProcess::start_in(
            &url,
            "gpu",
            id,
            4,
            10.0,
            &["--gpus", gpus, "--registry-heartbeat-secs", "0.2"],
            logs.path(),
        )
    };
    let _mig = start("w-mig", "fake:1x80GiB+mig=2x40GiB");
    // While both run, the registry shows 30 GiB reserved on each instance, 60 on the GPU.
    eventually("both instances reserved", Duration::from_secs(20), || async {
        let o = gantry(&url, &["workers", "list", "--json"]);
        String::from_utf8_lossy(&o.stdout)
            .lines()
            .filter_map(|l| serde_json::from_str::<gantry_queue::WorkerRecord>(l).ok())
            .any(|w| {
                w.gpus.first().is_some_and(|g| {
                    g.reserved_bytes == 60 * GIB
                        && g.mig.len() == 2
                        && g.mig
                            .iter()
                            .all(|m| m.reserved_bytes == 30 * GIB && m.memory_total_bytes == 40 * GIB)
                })
            })
    })
    .await;
    eventually("the pair ran", Duration::from_secs(30), || {
        let (q, pool, pair) = (q.clone(), pool.clone(), pair.clone());
        async move { all_succeeded(&q, &pool, &pair).await }
    })
    .await;
    let a = q.job_in(&pool, pair[0]).await.unwrap();
    let b = q.job_in(&pool, pair[1]).await.unwrap();
    assert!(
        a.started_at_ms.unwrap() < b.finished_at_ms.unwrap() && b.started_at_ms.unwrap() < a.finished_at_ms.unwrap(),
        "the two 30 GiB jobs ran side by side, one per instance"
    );
    assert_eq!(
        q.job_in(&pool, big[0]).await.unwrap().status,
        JobStatus::Queued,
        "no instance holds 50 GiB"
    );
    let _whole = start("w-whole", "fake:1x80GiB");
    eventually("the 50 GiB job ran", Duration::from_secs(30), || drained_in(&q, &pool)).await;
    assert_eq!(
        q.job_in(&pool, big[0]).await.unwrap().worker.as_deref(),
        Some("w-whole")
    );
}

/// Whether every job of `ids` in `pool` has succeeded.
async fn all_succeeded(q: &gantry_queue::QueueClient, pool: &Pool, ids: &[JobId]) -> bool {
    for id in ids {
        if !q
            .job_in(pool, *id)
            .await
            .is_ok_and(|r| r.status == JobStatus::Succeeded)
        {
            return false;
        }
    }
    true
}
