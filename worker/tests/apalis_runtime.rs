//! The worker's apalis runtime against a real Redis: each way an attempt can end reaches the
//! queue as the right outcome through apalis's layers and the backend's settle layer.

#![allow(clippy::unwrap_used)] // a panic is how a test reports failure

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use gantry_queue::{
    ClaimedJob, ErrorClass, HandlerFuture, JobContext, JobId, JobKind, JobOutcome, JobStatus, NewJob, NoopPayload,
    Payload, Pool, QueueClient, QueueConfig,
};
use gantry_testkit::RedisServer;
use gantry_worker::gpu::GpuMode;
use gantry_worker::{Executor, ExecutorSet, KindTimeouts, WorkerConfig, run_worker};
use tokio_util::sync::CancellationToken;

/// Does what the job's `sleep_ms` code says: 1 panics, 2 hangs, 3 fails for good, 4 waits for
/// its stop token, anything else succeeds after that many milliseconds.
#[derive(Clone, Default)]
struct Scripted {
    ran: Arc<AtomicUsize>,
}

impl Executor for Scripted {
    fn kind(&self) -> JobKind {
        JobKind::Noop
    }

    fn run(&self, job: ClaimedJob, ctx: JobContext) -> HandlerFuture {
        self.ran.fetch_add(1, Ordering::SeqCst);
        Box::pin(async move {
            let Payload::Noop(p) = &job.spec.body else {
                return JobOutcome::Failed {
                    class: ErrorClass::Permanent,
                    message: "not noop".into(),
                };
            };
            match p.sleep_ms {
                1 => panic!("scripted panic"),
                2 => {
                    tokio::time::sleep(Duration::from_secs(3600)).await;
                    JobOutcome::Succeeded(Default::default())
                }
                3 => JobOutcome::Failed {
                    class: ErrorClass::Permanent,
                    message: "scripted permanent failure".into(),
                },
                4 => {
                    ctx.cancel.cancelled().await;
                    JobOutcome::Failed {
                        class: ErrorClass::Cancelled,
                        message: "stopped".into(),
                    }
                }
                ms => {
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                    JobOutcome::Succeeded(Default::default())
                }
            }
        })
    }
}

fn cfg(url: &str, drain_grace: Duration) -> WorkerConfig {
    WorkerConfig {
        redis_url: url.to_owned(),
        pool: Pool::new("cpu").unwrap(),
        worker_id: "apalis-test".into(),
        concurrency: 8,
        lease: Duration::from_secs(10),
        drain_grace,
        gpus: GpuMode::None,
        registry_heartbeat: Duration::from_secs(1),
        cpu_slots: None,
        warm_models: Vec::new(),
        steal_from: Vec::new(),
        metrics_addr: None,
        kind_timeouts: KindTimeouts::default().with(JobKind::Noop, Duration::from_millis(300)),
        extra_routes: None,
        deletion_cost: None,
        retention: Default::default(),
    }
}

fn job(code: u64) -> NewJob {
    NewJob {
        max_attempts: Some(1),
        ..NewJob::new(
            "t",
            "u",
            Payload::Noop(NoopPayload {
                sleep_ms: code,
                ..Default::default()
            }),
        )
    }
}

async fn wait_for(q: &QueueClient, id: JobId, want: JobStatus) -> gantry_queue::JobRecord {
    let pool = Pool::new("cpu").unwrap();
    for _ in 0..200 {
        let r = q.job_in(&pool, id).await.unwrap();
        if r.status == want {
            return r;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("job {id} never became {want:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_ending_of_an_attempt_is_settled_as_its_class() {
    let redis = RedisServer::start().expect("redis");
    let q = QueueClient::connect(&redis.url(), QueueConfig::default())
        .await
        .unwrap();
    let pool = Pool::new("cpu").unwrap();
    let ids: Vec<JobId> = q
        .enqueue_batch(&pool, vec![job(20), job(1), job(2), job(3)])
        .await
        .unwrap()
        .iter()
        .map(|e| e.id)
        .collect();
    let exec = Scripted::default();
    let shutdown = CancellationToken::new();
    let worker = tokio::spawn(run_worker(
        cfg(&redis.url(), Duration::from_secs(5)),
        ExecutorSet::default().with(exec.clone()),
        shutdown.clone(),
    ));

    wait_for(&q, ids[0], JobStatus::Succeeded).await;
    let panicked = wait_for(&q, ids[1], JobStatus::Dead).await.error.unwrap();
    assert_eq!(
        (panicked.class.as_str(), panicked.message.as_str()),
        ("retryable", "executor panicked"),
        "a panic is caught, and its message is not kept"
    );
    let hung = wait_for(&q, ids[2], JobStatus::Dead).await.error.unwrap();
    assert_eq!(hung.class, "timed_out", "noop's kind timeout (300 ms) stopped it");
    let failed = wait_for(&q, ids[3], JobStatus::Dead).await.error.unwrap();
    assert_eq!(
        (failed.class.as_str(), failed.message.as_str()),
        ("permanent", "scripted permanent failure")
    );

    shutdown.cancel();
    let stats = worker.await.unwrap().expect("worker stops cleanly");
    assert_eq!(stats.succeeded.load(Ordering::SeqCst), 1);
    assert_eq!(stats.dead.load(Ordering::SeqCst), 3);
    assert_eq!(exec.ran.load(Ordering::SeqCst), 4, "each job ran exactly once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_releases_what_outlives_the_grace_and_acks_what_finished() {
    let redis = RedisServer::start().expect("redis");
    let q = QueueClient::connect(&redis.url(), QueueConfig::default())
        .await
        .unwrap();
    let pool = Pool::new("cpu").unwrap();
    // Three quick jobs finish inside the grace; three wait for their stop token and are released.
    let mut jobs: Vec<NewJob> = (0..3).map(|_| job(100)).collect();
    jobs.extend((0..3).map(|_| NewJob {
        timeout_secs: Some(60),
        ..job(4)
    }));
    let ids: Vec<JobId> = q
        .enqueue_batch(&pool, jobs)
        .await
        .unwrap()
        .iter()
        .map(|e| e.id)
        .collect();
    let mut c = cfg(&redis.url(), Duration::from_millis(500));
    c.kind_timeouts = KindTimeouts::default();
    let shutdown = CancellationToken::new();
    let worker = tokio::spawn(run_worker(
        c,
        ExecutorSet::default().with(Scripted::default()),
        shutdown.clone(),
    ));
    for id in &ids[3..] {
        wait_for(&q, *id, JobStatus::Running).await;
    }
    shutdown.cancel();
    let stats = tokio::time::timeout(Duration::from_secs(10), worker)
        .await
        .expect("drain ends after the grace")
        .unwrap()
        .unwrap();
    assert_eq!(stats.succeeded.load(Ordering::SeqCst), 3);
    assert_eq!(stats.released.load(Ordering::SeqCst), 3);
    for id in &ids[..3] {
        assert_eq!(q.job_in(&pool, *id).await.unwrap().status, JobStatus::Succeeded);
    }
    for id in &ids[3..] {
        let r = q.job_in(&pool, *id).await.unwrap();
        assert_eq!(r.status, JobStatus::Queued, "released, not failed");
        assert!(r.error.is_none(), "a release records no failure");
    }
}
