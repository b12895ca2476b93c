//! The queue protocol against a real redis-server and a real 3-master Redis Cluster.

#![allow(clippy::unwrap_used)] // a panic is how a test reports failure

use std::time::Duration;

use gantry_queue::*;
use gantry_testkit::{RedisCluster, RedisServer};

enum Backend {
    Single(#[allow(dead_code)] RedisServer),
    Cluster(#[allow(dead_code)] RedisCluster),
}

struct Fixture {
    url: String,
    _backend: Backend,
}

impl Fixture {
    fn single() -> Self {
        let s = RedisServer::start().expect("redis-server");
        Self {
            url: s.url(),
            _backend: Backend::Single(s),
        }
    }
    fn cluster() -> Self {
        let c = RedisCluster::start().expect("redis cluster");
        Self {
            url: c.url(),
            _backend: Backend::Cluster(c),
        }
    }
    async fn client(&self) -> QueueClient {
        self.client_with(fast_config()).await
    }
    async fn client_with(&self, cfg: QueueConfig) -> QueueClient {
        QueueClient::connect(&self.url, cfg).await.expect("connect")
    }
}

fn fast_config() -> QueueConfig {
    QueueConfig {
        backoff_base: Duration::from_millis(10),
        backoff_cap: Duration::from_millis(40),
        ..Default::default()
    }
}

macro_rules! on_both {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn standalone() { super::$name(super::Fixture::single()).await }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn cluster() { super::$name(super::Fixture::cluster()).await }
        }
    )*};
}

on_both!(
    fifo_claim_and_ack,
    strict_priority_across_kinds,
    batch_enqueue_and_limits,
    idempotency_keys,
    delayed_jobs,
    retries_then_dead_letter_then_replay_once,
    permanent_failure_dead_letters_at_once,
    expired_lease_is_reaped_and_fenced,
    heartbeat_keeps_long_job,
    cancel_in_every_state,
    stats_report_depths,
    bad_input_gets_typed_errors,
    idle_worker_wakes_on_push,
    consumer_runs_jobs_to_completion,
    replay_by_class_filter,
    unreadable_record_does_not_poison_queue,
);

fn noop() -> NewJob {
    NewJob::new("tenant-a", "user-1", Payload::Noop(NoopPayload::default()))
}

fn pool(name: &str) -> Pool {
    Pool::new(name).expect("pool")
}

const LEASE: Duration = Duration::from_secs(30);

async fn fifo_claim_and_ack(f: Fixture) {
    let q = f.client().await;
    let p = pool("cpu");
    let ids: Vec<JobId> = q
        .enqueue_batch(&p, vec![noop(), noop(), noop()])
        .await
        .unwrap()
        .iter()
        .map(|e| e.id)
        .collect();
    let b = q.claim(&p, "w1", &[JobKind::Noop], 10, LEASE).await.unwrap();
    let got: Vec<JobId> = b.jobs.iter().map(|j| j.lease.id).collect();
    assert_eq!(got, ids, "FIFO within a priority");
    assert!(b.jobs.iter().all(|j| j.attempt == 1));
    assert_eq!(q.job(ids[0]).await.unwrap().status, JobStatus::Running);
    let acks: Vec<_> = b.jobs.iter().map(|j| (j.lease.clone(), None)).collect();
    assert_eq!(q.ack(&p, &acks).await.unwrap(), vec![AckOutcome::Acked; 3]);
    let rec = q.job(ids[1]).await.unwrap();
    assert_eq!(rec.status, JobStatus::Succeeded);
    assert!(rec.finished_at_ms.is_some());
    // Finished records expire after the finished TTL (7 days by default).
    let mut c = q.connection();
    let ttl: i64 = redis::cmd("TTL")
        .arg(p.job_key(ids[1]))
        .query_async(&mut c)
        .await
        .unwrap();
    assert!(ttl > 7 * 86400 - 60 && ttl <= 7 * 86400, "ttl {ttl}");
    // A second ack of the same lease is stale, not a second success.
    assert_eq!(q.ack(&p, &acks[..1]).await.unwrap(), vec![AckOutcome::Stale]);
    let s = &q.stats(&p, &[JobKind::Noop]).await.unwrap()[0];
    assert_eq!((s.waiting_total(), s.in_flight), (0, 0));
}

async fn strict_priority_across_kinds(f: Fixture) {
    let q = f.client().await;
    let p = pool("gpu-80g");
    let mk = |prio: Priority, kind: JobKind| {
        let body = match kind {
            JobKind::Upscale => Payload::Upscale(UpscalePayload {
                input: "in.png".into(),
                scale: Some(2),
                ..Default::default()
            }),
            _ => Payload::Noop(NoopPayload::default()),
        };
        NewJob {
            priority: prio,
            ..NewJob::new("t", "u", body)
        }
    };
    let bulk = q.enqueue(&p, mk(Priority::Bulk, JobKind::Noop)).await.unwrap().id;
    let normal1 = q.enqueue(&p, mk(Priority::Normal, JobKind::Upscale)).await.unwrap().id;
    let high = q.enqueue(&p, mk(Priority::High, JobKind::Upscale)).await.unwrap().id;
    let normal2 = q.enqueue(&p, mk(Priority::Normal, JobKind::Noop)).await.unwrap().id;
    let mut order = Vec::new();
    for _ in 0..4 {
        let b = q
            .claim(&p, "w", &[JobKind::Upscale, JobKind::Noop], 1, LEASE)
            .await
            .unwrap();
        order.push(b.jobs[0].lease.id);
    }
    assert_eq!(order, vec![high, normal1, normal2, bulk]);
    // A worker that serves only noop never sees upscale jobs.
    q.enqueue(&p, mk(Priority::High, JobKind::Upscale)).await.unwrap();
    assert!(
        q.claim(&p, "w", &[JobKind::Noop], 5, LEASE)
            .await
            .unwrap()
            .jobs
            .is_empty()
    );
}

async fn batch_enqueue_and_limits(f: Fixture) {
    let q = f.client().await;
    let p = pool("cpu");
    let r = q.enqueue_batch(&p, (0..1000).map(|_| noop()).collect()).await.unwrap();
    assert_eq!(r.len(), 1000);
    let err = q
        .enqueue_batch(&p, (0..1001).map(|_| noop()).collect())
        .await
        .unwrap_err();
    assert!(matches!(
        err,
        QueueError::Invalid(ValidationError::BatchTooLarge { size: 1001, max: 1000 })
    ));
    // One bad job refuses the whole batch: nothing is written.
    let mut batch: Vec<NewJob> = (0..5).map(|_| noop()).collect();
    batch[3].max_attempts = Some(0);
    assert!(q.enqueue_batch(&p, batch).await.is_err());
    assert_eq!(q.stats(&p, &[JobKind::Noop]).await.unwrap()[0].waiting_total(), 1000);
}

async fn idempotency_keys(f: Fixture) {
    let q = f.client().await;
    let p = pool("cpu");
    let with_key = |tenant: &str| NewJob {
        idempotency_key: Some("order-42".into()),
        ..NewJob::new(tenant, "u", Payload::Noop(NoopPayload::default()))
    };
    let a = q.enqueue(&p, with_key("t1")).await.unwrap();
    let b = q.enqueue(&p, with_key("t1")).await.unwrap();
    assert!(!a.duplicate);
    assert!(b.duplicate);
    assert_eq!(a.id, b.id);
    // In one batch too.
    let r = q.enqueue_batch(&p, vec![with_key("t2"), with_key("t2")]).await.unwrap();
    assert_eq!(r[0].id, r[1].id);
    assert!(r[1].duplicate);
    assert_ne!(r[0].id, a.id, "keys are per tenant");
    assert_eq!(q.stats(&p, &[JobKind::Noop]).await.unwrap()[0].waiting_total(), 2);
}

async fn delayed_jobs(f: Fixture) {
    let q = f.client().await;
    let p = pool("cpu");
    let id = q
        .enqueue(
            &p,
            NewJob {
                delay_ms: Some(300),
                ..noop()
            },
        )
        .await
        .unwrap()
        .id;
    assert_eq!(q.job(id).await.unwrap().status, JobStatus::Delayed);
    let b = q.claim(&p, "w", &[JobKind::Noop], 5, LEASE).await.unwrap();
    assert!(b.jobs.is_empty());
    assert!(b.next_due_ms.is_some());
    tokio::time::sleep(Duration::from_millis(400)).await;
    let b = q.claim(&p, "w", &[JobKind::Noop], 5, LEASE).await.unwrap();
    assert_eq!(b.jobs.len(), 1);
    assert_eq!(b.jobs[0].lease.id, id);
}

async fn claim_one(q: &QueueClient, p: &Pool) -> ClaimedJob {
    for _ in 0..200 {
        if let Some(j) = q.claim(p, "w", &JobKind::ALL, 1, LEASE).await.unwrap().jobs.pop() {
            return j;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("no job became claimable");
}

fn failure(j: &ClaimedJob, class: ErrorClass) -> Failure {
    Failure {
        lease: j.lease.clone(),
        attempt: j.attempt,
        class,
        message: "boom".into(),
    }
}

async fn retries_then_dead_letter_then_replay_once(f: Fixture) {
    let q = f.client().await;
    let p = pool("cpu");
    let id = q
        .enqueue(
            &p,
            NewJob {
                max_attempts: Some(2),
                ..noop()
            },
        )
        .await
        .unwrap()
        .id;
    let j = claim_one(&q, &p).await;
    assert_eq!(
        q.fail(&p, &[failure(&j, ErrorClass::Retryable)]).await.unwrap(),
        vec![FailOutcome::Retry]
    );
    let rec = q.job(id).await.unwrap();
    assert_eq!(rec.status, JobStatus::RetryScheduled);
    assert!(rec.due_at_ms.is_some());
    let j = claim_one(&q, &p).await;
    assert_eq!(j.attempt, 2);
    assert_eq!(
        q.fail(&p, &[failure(&j, ErrorClass::TimedOut)]).await.unwrap(),
        vec![FailOutcome::Dead]
    );
    let rec = q.job(id).await.unwrap();
    assert_eq!(rec.status, JobStatus::Dead);
    assert_eq!(rec.error.as_ref().map(|e| e.class.as_str()), Some("timed_out"));
    assert_eq!(rec.history.iter().filter(|h| h.event == "failed").count(), 2);
    let queue = QueueName {
        pool: p.clone(),
        kind: JobKind::Noop,
    };
    let dead = q.dead_letters(&queue, &DeadFilter::default(), 0, 10).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].id, id);
    // Two racing replays: exactly one wins.
    let (a, b) = tokio::join!(q.replay_one(id), q.replay_one(id));
    assert!(a.is_ok() ^ b.is_ok(), "exactly one replay succeeds: {a:?} {b:?}");
    assert!(matches!(q.replay_one(id).await, Err(QueueError::NotDeadLettered(_))));
    let j = claim_one(&q, &p).await;
    assert_eq!(j.lease.id, id);
    assert_eq!(j.attempt, 1, "attempts reset by replay");
    assert_eq!(
        q.stats(&p, &[JobKind::Noop]).await.unwrap()[0].waiting_total(),
        0,
        "queued once, not twice"
    );
}

async fn permanent_failure_dead_letters_at_once(f: Fixture) {
    let q = f.client().await;
    let p = pool("cpu");
    let id = q
        .enqueue(
            &p,
            NewJob {
                max_attempts: Some(9),
                ..noop()
            },
        )
        .await
        .unwrap()
        .id;
    let j = claim_one(&q, &p).await;
    assert_eq!(
        q.fail(&p, &[failure(&j, ErrorClass::Permanent)]).await.unwrap(),
        vec![FailOutcome::Dead]
    );
    assert_eq!(q.job(id).await.unwrap().status, JobStatus::Dead);
    assert_eq!(q.stats(&p, &[JobKind::Noop]).await.unwrap()[0].dead, 1);
    // Dead-lettered records are kept 30 days.
    let mut c = q.connection();
    let ttl: i64 = redis::cmd("TTL").arg(p.job_key(id)).query_async(&mut c).await.unwrap();
    assert!(ttl > 30 * 86400 - 60 && ttl <= 30 * 86400, "ttl {ttl}");
}

async fn expired_lease_is_reaped_and_fenced(f: Fixture) {
    let q = f.client().await;
    let p = pool("cpu");
    let id = q.enqueue(&p, noop()).await.unwrap().id;
    let j = q
        .claim(&p, "w-dead", &[JobKind::Noop], 1, Duration::from_millis(100))
        .await
        .unwrap()
        .jobs
        .remove(0);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let r = q.reap(&p, &[JobKind::Noop], 100).await.unwrap();
    assert_eq!(r.requeued, 1);
    let rec = q.job(id).await.unwrap();
    assert_eq!(rec.status, JobStatus::Queued);
    assert!(
        rec.history
            .iter()
            .any(|h| h.event == "lease_expired" && h.worker.as_deref() == Some("w-dead"))
    );
    // The old holder is fenced off.
    assert_eq!(
        q.ack(&p, &[(j.lease.clone(), None)]).await.unwrap(),
        vec![AckOutcome::Stale]
    );
    assert_eq!(
        q.heartbeat(&p, std::slice::from_ref(&j.lease), LEASE).await.unwrap(),
        vec![LeaseState::Lost]
    );
    let j2 = claim_one(&q, &p).await;
    assert_eq!(j2.attempt, 2, "an expired lease counts as an attempt");
    assert_eq!(q.ack(&p, &[(j2.lease, None)]).await.unwrap(), vec![AckOutcome::Acked]);
}

async fn heartbeat_keeps_long_job(f: Fixture) {
    let q = f.client().await;
    let p = pool("cpu");
    q.enqueue(&p, noop()).await.unwrap();
    let lease = Duration::from_millis(300);
    let j = q
        .claim(&p, "w", &[JobKind::Noop], 1, lease)
        .await
        .unwrap()
        .jobs
        .remove(0);
    for _ in 0..10 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(
            q.heartbeat(&p, std::slice::from_ref(&j.lease), lease).await.unwrap(),
            vec![LeaseState::Extended]
        );
        assert_eq!(q.reap(&p, &[JobKind::Noop], 100).await.unwrap().requeued, 0);
    }
    assert_eq!(q.ack(&p, &[(j.lease, None)]).await.unwrap(), vec![AckOutcome::Acked]);
}

async fn cancel_in_every_state(f: Fixture) {
    let q = f.client().await;
    let p = pool("cpu");
    let queued = q.enqueue(&p, noop()).await.unwrap().id;
    let delayed = q
        .enqueue(
            &p,
            NewJob {
                delay_ms: Some(60_000),
                ..noop()
            },
        )
        .await
        .unwrap()
        .id;
    assert_eq!(q.cancel(queued).await.unwrap(), CancelOutcome::Cancelled);
    assert_eq!(q.cancel(delayed).await.unwrap(), CancelOutcome::Cancelled);
    assert_eq!(q.job(queued).await.unwrap().status, JobStatus::Cancelled);
    let s = &q.stats(&p, &[JobKind::Noop]).await.unwrap()[0];
    assert_eq!((s.waiting_total(), s.delayed), (0, 0));
    // Running: flagged, learnt at the next heartbeat; the worker then fails it as cancelled.
    let running = q.enqueue(&p, noop()).await.unwrap().id;
    let j = claim_one(&q, &p).await;
    assert_eq!(j.lease.id, running);
    assert_eq!(q.cancel(running).await.unwrap(), CancelOutcome::Requested);
    assert_eq!(
        q.heartbeat(&p, std::slice::from_ref(&j.lease), LEASE).await.unwrap(),
        vec![LeaseState::CancelRequested]
    );
    assert_eq!(
        q.fail(&p, &[failure(&j, ErrorClass::Cancelled)]).await.unwrap(),
        vec![FailOutcome::Cancelled]
    );
    // Finished jobs and unknown ids get typed errors.
    assert!(matches!(
        q.cancel(running).await,
        Err(QueueError::AlreadyFinished { .. })
    ));
    assert!(matches!(q.cancel(JobId::new()).await, Err(QueueError::NotFound(_))));
}

async fn stats_report_depths(f: Fixture) {
    let q = f.client().await;
    let p = pool("cpu");
    for prio in [Priority::High, Priority::Normal, Priority::Normal, Priority::Bulk] {
        q.enqueue(
            &p,
            NewJob {
                priority: prio,
                ..noop()
            },
        )
        .await
        .unwrap();
    }
    q.enqueue(
        &p,
        NewJob {
            delay_ms: Some(60_000),
            ..noop()
        },
    )
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    q.claim(&p, "w", &[JobKind::Noop], 1, LEASE).await.unwrap();
    let s = &q.stats(&p, &[JobKind::Noop]).await.unwrap()[0];
    assert_eq!(s.waiting, [0, 2, 1]);
    assert_eq!((s.in_flight, s.delayed, s.dead), (1, 1, 0));
    assert!(s.oldest_waiting_ms.unwrap_or(0) >= 10);
    assert_eq!(q.pools().await.unwrap(), vec![p]);
}

async fn bad_input_gets_typed_errors(f: Fixture) {
    let q = f
        .client_with(QueueConfig {
            max_payload_bytes: 4096,
            ..fast_config()
        })
        .await;
    let p = pool("cpu");
    assert!(matches!(
        NewJob::from_json(b"{not json"),
        Err(QueueError::Invalid(ValidationError::MalformedJson(_)))
    ));
    let unknown = br#"{"tenant":"t","user":"u","kind":"mine_bitcoin","payload":{}}"#;
    assert!(
        matches!(NewJob::from_json(unknown), Err(QueueError::Invalid(ValidationError::UnknownKind(k))) if k == "mine_bitcoin")
    );
    let typo = br#"{"tenant":"t","user":"u","kind":"noop","payload":{"sleep_msec":1}}"#;
    assert!(matches!(
        NewJob::from_json(typo),
        Err(QueueError::Invalid(ValidationError::MalformedJson(_)))
    ));
    let big = NewJob::new(
        "t",
        "u",
        Payload::Generate(GeneratePayload {
            prompt: "x".repeat(10_000),
            ..Default::default()
        }),
    );
    assert!(matches!(
        q.enqueue(&p, big).await,
        Err(QueueError::Invalid(ValidationError::PayloadTooLarge { .. }))
    ));
    let far = NewJob {
        delay_ms: Some(u64::MAX),
        ..noop()
    };
    assert!(matches!(
        q.enqueue(&p, far).await,
        Err(QueueError::Invalid(ValidationError::DelayTooLong { .. }))
    ));
    let nameless = NewJob::new("", "u", Payload::Noop(NoopPayload::default()));
    assert!(matches!(
        q.enqueue(&p, nameless).await,
        Err(QueueError::Invalid(ValidationError::InvalidField {
            field: "tenant",
            ..
        }))
    ));
    assert!(matches!(Pool::new("GPU 80G!"), Err(ValidationError::InvalidPool(_))));
    assert!("not-a-ulid".parse::<JobId>().is_err());
    assert!(matches!(q.replay_one(JobId::new()).await, Err(QueueError::NotFound(_))));
    // Nothing was written by any of the refused calls.
    assert!(q.pools().await.unwrap().is_empty());
}

async fn idle_worker_wakes_on_push(f: Fixture) {
    let q = f.client().await;
    let p = pool("cpu");
    let mut conn = q.blocking_connection(Duration::from_secs(5)).await.unwrap();
    assert!(
        q.claim(&p, "w", &[JobKind::Noop], 1, LEASE)
            .await
            .unwrap()
            .jobs
            .is_empty()
    );
    let producer = q.clone();
    let pp = p.clone();
    let push = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(100)).await;
        producer.enqueue(&pp, noop()).await.unwrap();
    });
    let started = std::time::Instant::now();
    let woken = q
        .wait_for_work(
            &mut conn,
            &p,
            &[JobKind::Noop, JobKind::Upscale],
            Duration::from_secs(5),
        )
        .await
        .unwrap();
    assert!(woken, "woken by the push, not by the 5 s timeout");
    assert!(started.elapsed() < Duration::from_secs(4));
    push.await.unwrap();
    assert_eq!(
        q.claim(&p, "w", &[JobKind::Noop], 1, LEASE).await.unwrap().jobs.len(),
        1
    );
}

async fn consumer_runs_jobs_to_completion(f: Fixture) {
    let q = f.client().await;
    let p = pool("cpu");
    let mut jobs: Vec<NewJob> = (0..300).map(|_| noop()).collect();
    // Ten jobs fail once, retryably: they succeed on their second attempt.
    for j in jobs.iter_mut().take(10) {
        j.body = Payload::Noop(NoopPayload {
            fail_attempts: 1,
            ..Default::default()
        });
    }
    let ids: Vec<JobId> = q.enqueue_batch(&p, jobs).await.unwrap().iter().map(|e| e.id).collect();
    let mut cfg = ConsumerConfig::new(p.clone(), vec![JobKind::Noop], "consumer-test");
    cfg.concurrency = 16;
    let handler = |job: ClaimedJob, _ctx: JobContext| -> HandlerFuture {
        Box::pin(async move {
            match &job.spec.body {
                Payload::Noop(n) if job.attempt <= n.fail_attempts => JobOutcome::Failed {
                    class: ErrorClass::Retryable,
                    message: "scripted failure".into(),
                },
                _ => JobOutcome::Succeeded(None),
            }
        })
    };
    let consumer = Consumer::new(q.clone(), cfg, handler);
    let stats = consumer.stats();
    let stop = tokio_util::sync::CancellationToken::new();
    let run = tokio::spawn(consumer.run(stop.clone()));
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while stats.succeeded.load(std::sync::atomic::Ordering::Relaxed) < 300 {
        assert!(std::time::Instant::now() < deadline, "consumer did not finish");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.cancel();
    run.await.unwrap().unwrap();
    assert_eq!(stats.retried.load(std::sync::atomic::Ordering::Relaxed), 10);
    for id in ids {
        let rec = q.job(id).await.unwrap();
        assert_eq!(rec.status, JobStatus::Succeeded);
    }
}

async fn replay_by_class_filter(f: Fixture) {
    let q = f.client().await;
    let p = pool("cpu");
    let queue = QueueName {
        pool: p.clone(),
        kind: JobKind::Noop,
    };
    for class in [ErrorClass::Permanent, ErrorClass::Permanent, ErrorClass::Retryable] {
        q.enqueue(
            &p,
            NewJob {
                max_attempts: Some(1),
                ..noop()
            },
        )
        .await
        .unwrap();
        let j = claim_one(&q, &p).await;
        q.fail(&p, &[failure(&j, class)]).await.unwrap();
    }
    let perm = DeadFilter {
        class: Some(ErrorClass::Permanent),
        ..Default::default()
    };
    let listed = q.dead_letters(&queue, &perm, 0, 100).await.unwrap();
    assert_eq!(listed.len(), 2);
    let ids: Vec<JobId> = q
        .dead_letters(&queue, &DeadFilter::default(), 0, 100)
        .await
        .unwrap()
        .iter()
        .map(|d| d.id)
        .collect();
    let r = q.replay(&queue, &ids, Some(ErrorClass::Permanent)).await.unwrap();
    assert_eq!(r.iter().filter(|o| **o == ReplayOutcome::Replayed).count(), 2);
    assert_eq!(r.iter().filter(|o| **o == ReplayOutcome::ClassMismatch).count(), 1);
    let r = q.replay(&queue, &ids, None).await.unwrap();
    assert_eq!(
        r.iter().filter(|o| **o == ReplayOutcome::Replayed).count(),
        1,
        "never twice"
    );
}

async fn unreadable_record_does_not_poison_queue(f: Fixture) {
    let q = f.client().await;
    let p = pool("cpu");
    let bad = q.enqueue(&p, noop()).await.unwrap().id;
    let good = q.enqueue(&p, noop()).await.unwrap().id;
    let mut c = q.connection();
    redis::cmd("HSET")
        .arg(p.job_key(bad))
        .arg("spec")
        .arg("{garbage")
        .query_async::<()>(&mut c)
        .await
        .unwrap();
    let b = q.claim(&p, "w", &[JobKind::Noop], 10, LEASE).await.unwrap();
    assert_eq!(b.poisoned, 1);
    assert_eq!(b.jobs.len(), 1);
    assert_eq!(b.jobs[0].lease.id, good);
    assert_eq!(q.stats(&p, &[JobKind::Noop]).await.unwrap()[0].dead, 1);
}
