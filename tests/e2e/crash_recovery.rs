//! Invariant 1, nothing accepted is lost: workers SIGKILLed while holding leases, and Redis
//! restarted with `appendfsync always` in the middle of a workload.

#![allow(clippy::unwrap_used)] // a panic is how a test reports failure

use crate::common;

use std::time::Duration;

use common::*;
use gantry_queue::{JobId, JobStatus, NewJob, NoopPayload, Payload};
use gantry_testkit::{RedisOptions, RedisServer};

fn sleeper(ms: u64) -> NewJob {
    NewJob::new(
        "t",
        "u",
        Payload::Noop(NoopPayload {
            sleep_ms: ms,
            ..Default::default()
        }),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkilled_worker_with_100_leases_loses_nothing() {
    let redis = RedisServer::start().expect("redis");
    let logs = tempfile::tempdir().expect("tmp");
    let q = client(&redis.url()).await;
    let ids: Vec<JobId> = q
        .enqueue_batch(&cpu(), (0..100).map(|_| sleeper(1500)).collect())
        .await
        .unwrap()
        .iter()
        .map(|e| e.id)
        .collect();

    let mut doomed = WorkerProcess::start(&redis.url(), "doomed", 100, 2.0, &[], logs.path());
    eventually(
        "the doomed worker holds all 100 leases",
        Duration::from_secs(20),
        || async { in_flight(&q).await == 100 },
    )
    .await;
    doomed.sigkill();

    let _rescuer = WorkerProcess::start(&redis.url(), "rescuer", 100, 2.0, &[], logs.path());
    eventually("every job succeeded", Duration::from_secs(60), || async {
        drained(&q).await
    })
    .await;
    for id in ids {
        let rec = q.job_in(&cpu(), id).await.unwrap();
        assert_eq!(rec.status, JobStatus::Succeeded, "job {id}");
        assert_eq!(rec.attempts, 2, "the expired lease counted as an attempt");
        assert!(
            rec.history
                .iter()
                .any(|h| h.event == "lease_expired" && h.worker.as_deref() == Some("doomed"))
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restart_with_aof_always_loses_no_acknowledged_job() {
    let mut redis = RedisServer::start_with(RedisOptions {
        aof_always: true,
        ..Default::default()
    })
    .expect("redis");
    let url = redis.url();
    let logs = tempfile::tempdir().expect("tmp");
    let _w1 = WorkerProcess::start(&url, "w1", 50, 3.0, &[], logs.path());
    let _w2 = WorkerProcess::start(&url, "w2", 50, 3.0, &[], logs.path());
    let q = client(&url).await;

    // Produce 10,000 jobs in batches of 100; restart Redis (SIGKILL, then reload the AOF) after
    // the 50th batch. A batch whose reply was lost is sent again with the same idempotency
    // keys, so retrying never duplicates a job.
    let mut acknowledged: Vec<JobId> = Vec::with_capacity(10_000);
    let mut restarted = false;
    let mut retried_batches = 0;
    for b in 0..100 {
        if b == 50 {
            redis.restart().expect("restart redis");
            restarted = true;
        }
        let batch = || -> Vec<NewJob> {
            (0..100)
                .map(|i| NewJob {
                    idempotency_key: Some(format!("job-{b}-{i}")),
                    ..sleeper(0)
                })
                .collect()
        };
        let mut tries = 0;
        loop {
            match q.enqueue_batch(&cpu(), batch()).await {
                Ok(r) => {
                    acknowledged.extend(r.iter().map(|e| e.id));
                    break;
                }
                Err(e) => {
                    assert!(e.is_transient(), "unexpected error: {e}");
                    tries += 1;
                    retried_batches += 1;
                    assert!(tries < 200, "redis never came back");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }
    assert!(restarted);
    let distinct: std::collections::HashSet<_> = acknowledged.iter().collect();
    assert_eq!(
        distinct.len(),
        10_000,
        "no duplicates from retried batches ({retried_batches} retries)"
    );

    eventually("every acknowledged job finished", Duration::from_secs(120), || async {
        drained(&q).await
    })
    .await;
    let mut not_succeeded = Vec::new();
    for id in &acknowledged {
        let s = status_of(&q, *id).await;
        if s != JobStatus::Succeeded {
            not_succeeded.push((*id, s));
        }
    }
    assert!(
        not_succeeded.is_empty(),
        "{} jobs did not succeed: {:?}",
        not_succeeded.len(),
        &not_succeeded[..not_succeeded.len().min(5)]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_running_jobs_then_exits_zero() {
    let redis = RedisServer::start().expect("redis");
    let logs = tempfile::tempdir().expect("tmp");
    let q = client(&redis.url()).await;
    let ids: Vec<JobId> = q
        .enqueue_batch(&cpu(), (0..20).map(|_| sleeper(2000)).collect())
        .await
        .unwrap()
        .iter()
        .map(|e| e.id)
        .collect();
    let mut w = WorkerProcess::start(
        &redis.url(),
        "drainer",
        20,
        10.0,
        &["--drain-grace-secs", "10"],
        logs.path(),
    );
    eventually("20 two-second jobs running", Duration::from_secs(20), || async {
        in_flight(&q).await == 20
    })
    .await;
    w.sigterm();
    assert_eq!(w.wait_exit(Duration::from_secs(20)), Some(0), "drained and exited 0");
    for id in ids {
        let rec = q.job_in(&cpu(), id).await.unwrap();
        assert_eq!(
            (rec.status, rec.attempts),
            (JobStatus::Succeeded, 1),
            "finished where it ran, once"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_past_grace_releases_leases_without_counting_an_attempt() {
    let redis = RedisServer::start().expect("redis");
    let logs = tempfile::tempdir().expect("tmp");
    let q = client(&redis.url()).await;
    let ids: Vec<JobId> = q
        .enqueue_batch(&cpu(), (0..10).map(|_| sleeper(3000)).collect())
        .await
        .unwrap()
        .iter()
        .map(|e| e.id)
        .collect();
    let mut w = WorkerProcess::start(
        &redis.url(),
        "impatient",
        10,
        10.0,
        &["--drain-grace-secs", "0.2"],
        logs.path(),
    );
    eventually("10 jobs running", Duration::from_secs(20), || async {
        in_flight(&q).await == 10
    })
    .await;
    w.sigterm();
    assert_eq!(w.wait_exit(Duration::from_secs(20)), Some(0));
    // Released at once, not left to expire: they are waiting again, attempts unchanged.
    let s = &q.stats(&cpu(), &[gantry_queue::JobKind::Noop]).await.unwrap()[0];
    assert_eq!((s.waiting_total(), s.in_flight), (10, 0));
    let _next = WorkerProcess::start(&redis.url(), "next", 10, 10.0, &[], logs.path());
    eventually("all rerun elsewhere", Duration::from_secs(30), || async {
        drained(&q).await
    })
    .await;
    for id in ids {
        let rec = q.job_in(&cpu(), id).await.unwrap();
        assert_eq!((rec.status, rec.attempts), (JobStatus::Succeeded, 1));
        assert!(rec.history.iter().any(|h| h.event == "released"));
    }
}
