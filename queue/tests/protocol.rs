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
    claims_report_how_long_each_job_waited,
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
    purge_deletes_dead_letters_for_good,
    erase_user_removes_every_record_of_one_user,
    a_users_index_reads_back_every_record_of_theirs_and_no_other,
    unreadable_record_does_not_poison_queue,
    placement_vram_fit_and_best_fit_sharing,
    placement_nvenc_gating,
    a_job_on_several_gpus_takes_them_best_fit_on_one_worker,
    placement_warm_model_then_tightest_fit,
    placement_cpu_and_gpu_jobs_go_where_they_fit,
    placement_priority_stays_strict_across_shapes,
    consumer_reserves_vram_per_gpu,
    idle_large_gpu_steals_small_jobs_from_another_pool,
    a_panicking_executor_fails_the_attempt_not_the_worker,
    tenants_share_claims_by_weight,
    finished_jobs_with_reservations_leave_one_credit_event,
    subscribed_tenants_jobs_leave_job_events,
    provider_slots_cap_holders_fleet_wide_and_expire,
    a_failure_can_ask_for_a_later_retry,
    a_blocked_job_ends_at_once_and_is_never_replayed,
    records_written_by_protocol_v1_still_run,
    search_lists_jobs_newest_first_across_pools,
    search_with_a_rare_match_pages_through_without_loss,
    search_of_a_time_window_starts_near_its_end,
    progress_is_stored_under_the_lease_and_shown_for_the_running_attempt,
    a_consumer_stores_its_jobs_latest_progress_once_a_tick,
    pipeline_steps_run_when_their_parents_succeed,
    a_failed_step_skips_its_descendants_and_refunds_them,
    a_step_in_another_pool_is_handed_off_once,
    a_claimed_step_gets_its_parents_outputs_in_place_of_its_references,
    a_replayed_step_brings_back_the_steps_its_failure_skipped,
);

async fn a_blocked_job_ends_at_once_and_is_never_replayed(f: Fixture) {
    let q = f.client().await;
    let p = pool("cpu");
    let id = q
        .enqueue(
            &p,
            NewJob {
                max_attempts: Some(5),
                ..noop()
            },
        )
        .await
        .unwrap()
        .id;
    let j = claim_one(&q, &p).await;
    assert_eq!(
        q.fail(&p, &[failure(&j, ErrorClass::Blocked)]).await.unwrap(),
        vec![FailOutcome::Blocked]
    );
    let rec = q.job(id).await.unwrap();
    assert_eq!(rec.status, JobStatus::Blocked);
    assert!(rec.status.is_final());
    assert_eq!(rec.attempts, 1, "no retry although 5 attempts were allowed");
    assert_eq!(rec.error.as_ref().map(|e| e.class.as_str()), Some("blocked"));
    let queue = QueueName {
        pool: p.clone(),
        kind: JobKind::Noop,
    };
    assert!(
        q.dead_letters(&queue, &DeadFilter::default(), 0, 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(q.replay_one(id).await.is_err(), "a blocked job cannot be replayed");
}

async fn a_failure_can_ask_for_a_later_retry(f: Fixture) {
    let q = f.client().await;
    let p = pool("cpu");
    let id = q.enqueue(&p, noop()).await.unwrap().id;
    let j = claim_one(&q, &p).await;
    let asked = Failure {
        retry_after: Some(Duration::from_millis(700)),
        ..failure(&j, ErrorClass::Retryable)
    };
    assert_eq!(q.fail(&p, &[asked]).await.unwrap(), vec![FailOutcome::Retry]);
    let due = q.job(id).await.unwrap().due_at_ms.unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    // fast_config's backoff is at most 40 ms: the job's own ask wins.
    assert!(due >= now + 600, "due in {} ms", due.saturating_sub(now));
    let early = q.claim(&p, "w1", &[JobKind::Noop], 1, LEASE, &cpu()).await.unwrap();
    assert!(early.jobs.is_empty(), "not before its retry_after");
    let j = claim_one(&q, &p).await;
    assert_eq!((j.lease.id, j.attempt), (id, 2));
}

async fn provider_slots_cap_holders_fleet_wide_and_expire(f: Fixture) {
    let q = f.client().await;
    let slots = ProviderSlots::new(q.connection(), Duration::from_millis(300));
    assert!(slots.try_acquire("kling", "job-1", 2).await.unwrap());
    assert!(slots.try_acquire("kling", "job-2", 2).await.unwrap());
    assert!(!slots.try_acquire("kling", "job-3", 2).await.unwrap(), "cap of 2");
    assert!(
        slots.try_acquire("kling", "job-1", 2).await.unwrap(),
        "a holder keeps its slot"
    );
    assert!(
        slots.try_acquire("flux", "job-3", 2).await.unwrap(),
        "accounts are separate"
    );
    slots.release("kling", "job-2").await.unwrap();
    assert!(slots.try_acquire("kling", "job-3", 2).await.unwrap());
    assert_eq!(slots.held("kling").await.unwrap(), 2);
    // job-1 keeps refreshing; job-3's worker "dies": its slot comes back after the lease.
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(slots.refresh("kling", "job-1").await.unwrap());
    }
    assert!(!slots.refresh("kling", "job-3").await.unwrap(), "expired");
    assert_eq!(slots.held("kling").await.unwrap(), 1);
    assert!(slots.try_acquire("kling", "job-4", 2).await.unwrap());
}

fn noop() -> NewJob {
    NewJob::new("tenant-a", "user-1", Payload::Noop(NoopPayload::default()))
}

fn pool(name: &str) -> Pool {
    Pool::new(name).expect("pool")
}

const LEASE: Duration = Duration::from_secs(30);

fn cpu() -> ClaimCapacity {
    ClaimCapacity::cpu(1000)
}

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
    let b = q.claim(&p, "w1", &[JobKind::Noop], 10, LEASE, &cpu()).await.unwrap();
    let got: Vec<JobId> = b.jobs.iter().map(|j| j.lease.id).collect();
    assert_eq!(got, ids, "FIFO within a priority");
    assert!(b.jobs.iter().all(|j| j.attempt == 1));
    assert_eq!(q.job(ids[0]).await.unwrap().status, JobStatus::Running);
    let acks: Vec<_> = b.jobs.iter().map(|j| (j.lease.clone(), Default::default())).collect();
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
            .claim(&p, "w", &[JobKind::Upscale, JobKind::Noop], 1, LEASE, &cpu())
            .await
            .unwrap();
        order.push(b.jobs[0].lease.id);
    }
    assert_eq!(order, vec![high, normal1, normal2, bulk]);
    // A worker that serves only noop never sees upscale jobs.
    q.enqueue(&p, mk(Priority::High, JobKind::Upscale)).await.unwrap();
    assert!(
        q.claim(&p, "w", &[JobKind::Noop], 5, LEASE, &cpu())
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
    let b = q.claim(&p, "w", &[JobKind::Noop], 5, LEASE, &cpu()).await.unwrap();
    assert!(b.jobs.is_empty());
    assert!(b.next_due_ms.is_some());
    tokio::time::sleep(Duration::from_millis(400)).await;
    let b = q.claim(&p, "w", &[JobKind::Noop], 5, LEASE, &cpu()).await.unwrap();
    assert_eq!(b.jobs.len(), 1);
    assert_eq!(b.jobs[0].lease.id, id);
    // Its wait counts from when it fell due (~100 ms ago), not from its enqueue (~400 ms ago)
    // nor from the claim that promoted it.
    let waited = b.jobs[0].waited;
    assert!(
        waited >= Duration::from_millis(50) && waited < Duration::from_millis(350),
        "a delayed job waited {waited:?}"
    );
}

async fn claims_report_how_long_each_job_waited(f: Fixture) {
    let q = f.client().await;
    let p = pool("cpu");
    let early = q.enqueue(&p, noop()).await.unwrap().id;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let late = q.enqueue(&p, noop()).await.unwrap().id;
    let b = q.claim(&p, "w", &[JobKind::Noop], 5, LEASE, &cpu()).await.unwrap();
    let waited = |id| b.jobs.iter().find(|j| j.lease.id == id).map(|j| j.waited);
    let (Some(early_wait), Some(late_wait)) = (waited(early), waited(late)) else {
        panic!(
            "both claimed: {:?}",
            b.jobs.iter().map(|j| j.lease.id).collect::<Vec<_>>()
        )
    };
    assert!(early_wait >= Duration::from_millis(300), "waited {early_wait:?}");
    assert!(late_wait < early_wait, "{late_wait:?} vs {early_wait:?}");
    // Released (a worker shutting down) and claimed again: the wait restarts.
    let j = b.jobs.into_iter().find(|j| j.lease.id == early).map(|j| j.lease);
    let Some(lease) = j else { unreachable!() };
    q.release(&p, &[lease]).await.unwrap();
    let b = q.claim(&p, "w", &[JobKind::Noop], 5, LEASE, &cpu()).await.unwrap();
    assert_eq!(b.jobs.len(), 1);
    assert!(
        b.jobs[0].waited < Duration::from_millis(250),
        "waited {:?}",
        b.jobs[0].waited
    );
}

async fn claim_one(q: &QueueClient, p: &Pool) -> ClaimedJob {
    for _ in 0..200 {
        if let Some(j) = q
            .claim(p, "w", &JobKind::ALL, 1, LEASE, &cpu())
            .await
            .unwrap()
            .jobs
            .pop()
        {
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
        retry_after: None,
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
        .claim(&p, "w-dead", &[JobKind::Noop], 1, Duration::from_millis(100), &cpu())
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
        q.ack(&p, &[(j.lease.clone(), Default::default())]).await.unwrap(),
        vec![AckOutcome::Stale]
    );
    assert_eq!(
        q.heartbeat(&p, std::slice::from_ref(&j.lease), LEASE).await.unwrap(),
        vec![LeaseState::Lost]
    );
    let j2 = claim_one(&q, &p).await;
    assert_eq!(j2.attempt, 2, "an expired lease counts as an attempt");
    assert_eq!(
        q.ack(&p, &[(j2.lease, Default::default())]).await.unwrap(),
        vec![AckOutcome::Acked]
    );
}

async fn heartbeat_keeps_long_job(f: Fixture) {
    let q = f.client().await;
    let p = pool("cpu");
    q.enqueue(&p, noop()).await.unwrap();
    let lease = Duration::from_millis(300);
    let j = q
        .claim(&p, "w", &[JobKind::Noop], 1, lease, &cpu())
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
    assert_eq!(
        q.ack(&p, &[(j.lease, Default::default())]).await.unwrap(),
        vec![AckOutcome::Acked]
    );
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
    q.claim(&p, "w", &[JobKind::Noop], 1, LEASE, &cpu()).await.unwrap();
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
        NewJob::from_json(b"{not json").map_err(QueueError::from),
        Err(QueueError::Invalid(ValidationError::MalformedJson(_)))
    ));
    let unknown = br#"{"tenant":"t","user":"u","kind":"mine_bitcoin","payload":{}}"#;
    assert!(
        matches!(NewJob::from_json(unknown).map_err(QueueError::from), Err(QueueError::Invalid(ValidationError::UnknownKind(k))) if k == "mine_bitcoin")
    );
    let typo = br#"{"tenant":"t","user":"u","kind":"noop","payload":{"sleep_msec":1}}"#;
    assert!(matches!(
        NewJob::from_json(typo).map_err(QueueError::from),
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
        q.claim(&p, "w", &[JobKind::Noop], 1, LEASE, &cpu())
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
        q.claim(&p, "w", &[JobKind::Noop], 1, LEASE, &cpu())
            .await
            .unwrap()
            .jobs
            .len(),
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
                _ => JobOutcome::Succeeded(Default::default()),
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
    // The class filter pages among the class's own entries: the retryable one comes after two
    // permanent ones, yet a page of one finds it; offset 1 of the permanent ones is the second.
    let retryable = DeadFilter {
        class: Some(ErrorClass::Retryable),
        ..Default::default()
    };
    let one = q.dead_letters(&queue, &retryable, 0, 1).await.unwrap();
    assert_eq!(one.len(), 1);
    assert_eq!(one[0].class, "retryable");
    assert_eq!(q.dead_letters(&queue, &retryable, 1, 1).await.unwrap().len(), 0);
    let second = q.dead_letters(&queue, &perm, 1, 1).await.unwrap();
    assert_eq!(second.len(), 1);
    assert_eq!(second[0].id, listed[1].id);
    assert_eq!(q.count_dead(&queue, &retryable).await.unwrap(), 1);
    let ids: Vec<JobId> = q
        .dead_letters(&queue, &DeadFilter::default(), 0, 100)
        .await
        .unwrap()
        .iter()
        .map(|d| d.id)
        .collect();
    let r = q.replay(&queue, &ids, Some(ErrorClass::Permanent)).await.unwrap();
    assert_eq!(r.iter().filter(|o| **o == DeadLetterOutcome::Done).count(), 2);
    assert_eq!(r.iter().filter(|o| **o == DeadLetterOutcome::Unmatched).count(), 1);
    let r = q.replay(&queue, &ids, None).await.unwrap();
    assert_eq!(
        r.iter().filter(|o| **o == DeadLetterOutcome::Done).count(),
        1,
        "never twice"
    );
}

async fn purge_deletes_dead_letters_for_good(f: Fixture) {
    let q = f.client().await;
    let p = pool("cpu");
    let queue = QueueName {
        pool: p.clone(),
        kind: JobKind::Noop,
    };
    let mut ids = Vec::new();
    for (i, class) in [ErrorClass::Permanent, ErrorClass::Permanent, ErrorClass::Retryable]
        .into_iter()
        .enumerate()
    {
        let id = q
            .enqueue(
                &p,
                NewJob {
                    max_attempts: Some(1),
                    idempotency_key: Some(format!("order-{i}")),
                    ..noop()
                },
            )
            .await
            .unwrap()
            .id;
        let j = claim_one(&q, &p).await;
        q.fail(&p, &[failure(&j, class)]).await.unwrap();
        ids.push(id);
    }
    let alive = q.enqueue(&p, noop()).await.unwrap().id;
    let perm = DeadFilter {
        class: Some(ErrorClass::Permanent),
        ..Default::default()
    };
    assert_eq!(
        q.act_on_matching(&queue, &perm, DeadAction::Purge, |_| {})
            .await
            .unwrap(),
        2
    );
    assert_eq!(q.count_dead(&queue, &DeadFilter::default()).await.unwrap(), 1);
    for id in &ids[..2] {
        assert!(matches!(q.job(*id).await, Err(QueueError::NotFound(_))), "{id} is gone");
    }
    // A purged job's idempotency key leads nowhere: the same key makes a new job.
    let again = q
        .enqueue(
            &p,
            NewJob {
                idempotency_key: Some("order-0".into()),
                ..noop()
            },
        )
        .await
        .unwrap();
    assert!(!again.duplicate && again.id != ids[0]);
    // Only dead letters go; purging twice finds nothing.
    assert!(matches!(
        q.act_on_one(alive, DeadAction::Purge).await,
        Err(QueueError::NotDeadLettered(_))
    ));
    q.act_on_one(ids[2], DeadAction::Purge).await.unwrap();
    assert!(matches!(
        q.act_on_one(ids[2], DeadAction::Purge).await,
        Err(QueueError::NotFound(_))
    ));
    assert_eq!(q.count_dead(&queue, &DeadFilter::default()).await.unwrap(), 0);
    assert_eq!(q.job(alive).await.unwrap().status, JobStatus::Queued);
}

async fn erase_user_removes_every_record_of_one_user(f: Fixture) {
    let q = f.client().await;
    let p = pool("cpu");
    let mine = |delay: Option<u64>| NewJob {
        delay_ms: delay,
        max_attempts: Some(1),
        ..NewJob::new("t", "alice", Payload::Noop(NoopPayload::default()))
    };
    let waiting = q.enqueue(&p, mine(None)).await.unwrap().id;
    // Alice's job runs.
    let running = claim_one(&q, &p).await;
    assert_eq!(running.spec.id, waiting);
    let delayed = q.enqueue(&p, mine(Some(60_000))).await.unwrap().id;
    let theirs = q
        .enqueue(&p, NewJob::new("t", "bob", Payload::Noop(NoopPayload::default())))
        .await
        .unwrap()
        .id;
    let other_tenant = q
        .enqueue(&p, NewJob::new("t2", "alice", Payload::Noop(NoopPayload::default())))
        .await
        .unwrap()
        .id;
    let c = q.erase_user(&p, "t", "alice").await.unwrap();
    assert_eq!((c.cancelled, c.running, c.deleted), (1, 1, 1), "{c:?}");
    assert!(matches!(q.job(delayed).await, Err(QueueError::NotFound(_))));
    // The index stays while a job of its day still runs.
    assert_eq!(user_index(&q, &p, "t", "alice").await.len(), 1);
    assert_eq!(q.job(waiting).await.unwrap().status, JobStatus::Running);
    // Its worker learns at the heartbeat and stops; the next pass deletes it.
    q.fail(&p, &[failure(&running, ErrorClass::Cancelled)]).await.unwrap();
    let c = q.erase_user(&p, "t", "alice").await.unwrap();
    assert_eq!((c.running, c.deleted), (0, 1), "{c:?}");
    assert!(matches!(q.job(waiting).await, Err(QueueError::NotFound(_))));
    assert_eq!(q.erase_user(&p, "t", "alice").await.unwrap(), ErasureCounts::default());
    assert!(user_index(&q, &p, "t", "alice").await.is_empty(), "the index goes too");
    assert_eq!(user_index(&q, &p, "t", "bob").await.len(), 1, "bob's stays");
    assert_eq!(q.job(theirs).await.unwrap().status, JobStatus::Queued);
    assert_eq!(q.job(other_tenant).await.unwrap().status, JobStatus::Queued);
    assert!(q.erase_user(&p, "t", "").await.is_err(), "an empty user id is refused");
    // A user with more jobs than one page of the index: every one goes.
    for _ in 0..3 {
        let jobs = (0..500)
            .map(|_| NewJob::new("t", "carol", Payload::Noop(NoopPayload::default())))
            .collect();
        q.enqueue_batch(&p, jobs).await.unwrap();
    }
    let c = q.erase_user(&p, "t", "carol").await.unwrap();
    assert_eq!((c.cancelled, c.deleted), (1500, 1500), "{c:?}");
    assert_eq!(q.job(theirs).await.unwrap().status, JobStatus::Queued);
    // An index written before the day lists (one set of ids) is still walked, then removed.
    let old = q
        .enqueue(&p, NewJob::new("t", "dave", Payload::Noop(NoopPayload::default())))
        .await
        .unwrap()
        .id;
    let mut c = q.connection();
    for key in user_index(&q, &p, "t", "dave").await {
        redis::cmd("DEL").arg(key).query_async::<()>(&mut c).await.unwrap();
    }
    let set = format!("{}user:{}", p.prefix(), user_key("t", "dave"));
    redis::cmd("SADD")
        .arg(&set)
        .arg(old.to_string())
        .query_async::<()>(&mut c)
        .await
        .unwrap();
    let e = q.erase_user(&p, "t", "dave").await.unwrap();
    assert_eq!((e.cancelled, e.deleted), (1, 1), "{e:?}");
    assert!(matches!(q.job(old).await, Err(QueueError::NotFound(_))));
    assert!(user_index(&q, &p, "t", "dave").await.is_empty());
}

async fn a_users_index_reads_back_every_record_of_theirs_and_no_other(f: Fixture) {
    use gantry_queue::{UserCursor, UserItem};
    let q = f.client().await;
    let p = pool("cpu");
    // 1,203 of erin's jobs, one of them finished; bob's and another tenant's erin's beside them.
    let mut ids = std::collections::BTreeSet::new();
    for n in [600, 600, 3] {
        let jobs = (0..n)
            .map(|_| NewJob::new("t", "erin", Payload::Noop(NoopPayload::default())))
            .collect();
        for e in q.enqueue_batch(&p, jobs).await.unwrap() {
            ids.insert(e.id);
        }
    }
    let done = claim_one(&q, &p).await;
    let out = ResultRef {
        object_key: "jobs/t/x/out.png".into(),
        size_bytes: 1,
        content_type: "image/png".into(),
        sha256: "ab".repeat(32),
        details: Default::default(),
    };
    let completion = Completion {
        output: Some(out.clone()),
        usage: None,
    };
    q.ack(&p, &[(done.lease.clone(), completion)]).await.unwrap();
    q.enqueue(&p, NewJob::new("t", "bob", Payload::Noop(NoopPayload::default())))
        .await
        .unwrap();
    q.enqueue(&p, NewJob::new("t2", "erin", Payload::Noop(NoopPayload::default())))
        .await
        .unwrap();
    let walk = |user: &'static str, tenant: &'static str| {
        let q = q.clone();
        let p = p.clone();
        async move {
            let (mut got, mut cursor, mut pages) = (Vec::new(), None::<UserCursor>, 0);
            loop {
                let page = q.user_page(&p, tenant, user, cursor, 500).await.unwrap();
                assert!(page.read <= 500);
                pages += 1;
                for item in page.items {
                    match item {
                        UserItem::Job(r) => got.push(*r),
                        UserItem::Pipeline(pl) => panic!("no pipeline here: {pl:?}"),
                    }
                }
                match page.next {
                    Some(c) => cursor = Some(c),
                    None => return (got, pages),
                }
            }
        }
    };
    let (got, pages) = walk("erin", "t").await;
    assert!(pages >= 3, "{pages} pages");
    let seen: std::collections::BTreeSet<JobId> = got.iter().map(|r| r.spec.id).collect();
    assert_eq!(seen, ids, "every job of erin's, once each");
    assert_eq!(got.len(), ids.len());
    assert!(got.iter().all(|r| r.spec.tenant == "t" && r.spec.user == "erin"));
    let finished = got.iter().find(|r| r.spec.id == done.spec.id).unwrap();
    assert_eq!(
        (finished.status, finished.result.as_ref()),
        (JobStatus::Succeeded, Some(&out))
    );
    // Another tenant's user of the same name is another user; one with nothing is empty.
    let (theirs, _) = walk("erin", "t2").await;
    assert_eq!(theirs.len(), 1);
    assert!(walk("nobody", "t").await.0.is_empty());
    // After an erasure there is nothing left to read.
    q.erase_user(&p, "t", "erin").await.unwrap();
    q.erase_user(&p, "t", "erin").await.unwrap();
    assert!(walk("erin", "t").await.0.is_empty());
    assert!(
        q.user_page(&p, "t", "", None, 10).await.is_err(),
        "an empty user id is refused"
    );
}

/// The keys of a user's index in a pool (its day lists, or a set written before them).
async fn user_index(q: &QueueClient, p: &Pool, tenant: &str, user: &str) -> Vec<String> {
    let pattern = format!("{}user:{}*", p.prefix(), user_key(tenant, user));
    let (mut cursor, mut keys) = (0, Vec::new());
    loop {
        let (next, page) = q.connection().scan_page(&pattern, cursor, 1000).await.unwrap();
        keys.extend(page);
        if next == 0 {
            return keys;
        }
        cursor = next;
    }
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
    let b = q.claim(&p, "w", &[JobKind::Noop], 10, LEASE, &cpu()).await.unwrap();
    assert_eq!(b.poisoned, 1);
    assert_eq!(b.jobs.len(), 1);
    assert_eq!(b.jobs[0].lease.id, good);
    assert_eq!(q.stats(&p, &[JobKind::Noop]).await.unwrap()[0].dead, 1);
}

/// Issue 23's migration path: a fleet upgrades with jobs in flight. A record as protocol v1
/// wrote it (the whole spec as JSON, sealed with the spec's own tenant, pool and kind as the
/// context; attempts and lease token stored as 0) reads, claims and acks the same under v2.
async fn records_written_by_protocol_v1_still_run(f: Fixture) {
    let keys = seal::Keyring::parse("k1=BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=").unwrap();
    let q = f.client().await.with_keys(keys.clone());
    let p = pool("cpu");
    let secret = NewJob::new(
        "studio-a",
        "alice@example.com",
        Payload::Generate(GeneratePayload {
            provider: "openai".into(),
            model: "gpt-image-1".into(),
            prompt: "a red fox".into(),
            ..Default::default()
        }),
    );
    let mut ids = Vec::new();
    for job in [noop(), secret] {
        let id = q.enqueue(&p, job).await.unwrap().id;
        let expected = q.job(id).await.unwrap().spec;
        // Rewrite the record as v1 wrote it.
        let mut v1 = serde_json::to_value(&expected).unwrap();
        let ctx = seal::SealContext::of_spec(&v1, &id.to_string());
        keys.seal(&mut v1, &ctx).unwrap();
        let v1 = v1.to_string();
        assert!(v1.contains(r#""pool":"cpu""#) && !v1.contains("red fox"), "{v1}");
        let mut c = q.connection();
        redis::cmd("HSET")
            .arg(p.job_key(id))
            .arg("spec")
            .arg(&v1)
            .arg("attempts")
            .arg(0)
            .arg("lease")
            .arg(0)
            .query_async::<()>(&mut c)
            .await
            .unwrap();
        assert_eq!(q.job(id).await.unwrap().spec, expected, "read back");
        ids.push((id, expected));
    }
    let kinds = [JobKind::Noop, JobKind::Generate];
    let b = q.claim(&p, "w", &kinds, 10, LEASE, &cpu()).await.unwrap();
    assert_eq!((b.jobs.len(), b.poisoned), (2, 0));
    for j in &b.jobs {
        let (_, expected) = ids.iter().find(|(id, _)| *id == j.lease.id).unwrap();
        assert_eq!(&j.spec, expected, "claimed");
        assert_eq!(j.attempt, 1);
    }
    let acks: Vec<_> = b
        .jobs
        .iter()
        .map(|j| (j.lease.clone(), Completion::default()))
        .collect();
    assert_eq!(q.ack(&p, &acks).await.unwrap(), vec![AckOutcome::Acked; 2]);
    for (id, _) in &ids {
        assert_eq!(q.job(*id).await.unwrap().status, JobStatus::Succeeded);
    }
    // During a rolling upgrade, new binaries can still write v1 for old ones to read.
    let old_style = f
        .client_with(QueueConfig {
            record_format: RecordFormat::V1,
            ..fast_config()
        })
        .await;
    let id = old_style.enqueue(&p, noop()).await.unwrap().id;
    let mut c = q.connection();
    let spec: String = redis::cmd("HGET")
        .arg(p.job_key(id))
        .arg("spec")
        .query_async(&mut c)
        .await
        .unwrap();
    assert!(
        spec.contains(&format!(r#""id":"{id}""#)) && spec.contains(r#""pool":"cpu""#),
        "{spec}"
    );
    let b = q.claim(&p, "w", &kinds, 10, LEASE, &cpu()).await.unwrap();
    assert_eq!((b.jobs.len(), b.jobs[0].lease.id), (1, id));
}

const GIB: u64 = 1 << 30;

fn gpu_job(gib: u64, nvenc: bool, model: Option<&str>) -> NewJob {
    NewJob {
        requirements: Requirements {
            gpu: Some(GpuRequirement {
                min_vram_bytes: gib * GIB,
                nvenc,
                count: 1,
            }),
            preferred_model: model.map(str::to_owned),
        },
        ..noop()
    }
}

fn gpus(g: &[(u64, bool)]) -> ClaimCapacity {
    ClaimCapacity {
        cpu: 0,
        gpus: g.to_vec(),
        warm: vec![],
    }
}

async fn placement_vram_fit_and_best_fit_sharing(f: Fixture) {
    let q = f.client().await;
    let p = pool("gpu");
    q.enqueue_batch(&p, (0..3).map(|_| gpu_job(40, false, None)).collect())
        .await
        .unwrap();
    // A 40 GiB job never lands on a GPU with 30 GiB free.
    let b = q
        .claim(&p, "small", &[JobKind::Noop], 10, LEASE, &gpus(&[(30, false)]))
        .await
        .unwrap();
    assert!(b.jobs.is_empty());
    assert!(b.unfit, "jobs waited that did not fit");
    // Two share one 80 GiB GPU (best fit) before the second GPU is used.
    let b = q
        .claim(
            &p,
            "big",
            &[JobKind::Noop],
            10,
            LEASE,
            &gpus(&[(80, false), (80, false)]),
        )
        .await
        .unwrap();
    let placed: Vec<Option<u32>> = b.jobs.iter().map(|j| j.gpu).collect();
    assert_eq!(placed, vec![Some(0), Some(0), Some(1)]);
    assert!(!b.unfit);
}

async fn a_job_on_several_gpus_takes_them_best_fit_on_one_worker(f: Fixture) {
    let q = f.client().await;
    let p = pool("gpu");
    let pair = |gib: u64| NewJob {
        requirements: Requirements {
            gpu: Some(GpuRequirement {
                min_vram_bytes: gib * GIB,
                nvenc: false,
                count: 2,
            }),
            preferred_model: None,
        },
        ..noop()
    };
    let a = q.enqueue(&p, pair(30)).await.unwrap().id;
    let b = q.enqueue(&p, pair(30)).await.unwrap().id;
    // One worker with an 80 GiB GPU beside two 40 GiB ones: the first job takes the two
    // tightest fits (the 40s); the second needs two GPUs with 30 GiB free, and only one has.
    let caps = |frees: &[u64]| gpus(&frees.iter().map(|f| (*f, false)).collect::<Vec<_>>());
    let got = q
        .claim(&p, "w", &[JobKind::Noop], 10, LEASE, &caps(&[80, 40, 40]))
        .await
        .unwrap();
    assert_eq!(got.jobs.len(), 1);
    assert_eq!(
        (got.jobs[0].lease.id, &got.jobs[0].gpus, got.jobs[0].gpu),
        (a, &vec![1, 2], Some(1))
    );
    let got = q
        .claim(&p, "w", &[JobKind::Noop], 10, LEASE, &caps(&[80, 10, 10]))
        .await
        .unwrap();
    assert!(got.jobs.is_empty() && got.unfit, "one GPU with room is not two");
    // A single-GPU worker never takes it; a worker with two free GPUs does.
    let got = q
        .claim(&p, "one", &[JobKind::Noop], 10, LEASE, &caps(&[80]))
        .await
        .unwrap();
    assert!(got.jobs.is_empty());
    let got = q
        .claim(&p, "two", &[JobKind::Noop], 10, LEASE, &caps(&[40, 80]))
        .await
        .unwrap();
    assert_eq!((got.jobs[0].lease.id, &got.jobs[0].gpus), (b, &vec![0, 1]));
    // More than 8 GPUs is refused at enqueue.
    let mut big = pair(1);
    if let Some(g) = big.requirements.gpu.as_mut() {
        g.count = 9;
    }
    assert!(q.enqueue(&p, big).await.is_err());
}

async fn placement_nvenc_gating(f: Fixture) {
    let q = f.client().await;
    let p = pool("gpu");
    let id = q.enqueue(&p, gpu_job(16, true, None)).await.unwrap().id;
    let b = q
        .claim(&p, "h100", &[JobKind::Noop], 5, LEASE, &gpus(&[(80, false)]))
        .await
        .unwrap();
    assert!(b.jobs.is_empty(), "no NVENC on this GPU: not claimed");
    let b = q
        .claim(&p, "l4", &[JobKind::Noop], 5, LEASE, &gpus(&[(24, true)]))
        .await
        .unwrap();
    assert_eq!(b.jobs.iter().map(|j| j.lease.id).collect::<Vec<_>>(), vec![id]);
}

async fn placement_warm_model_then_tightest_fit(f: Fixture) {
    let q = f.client().await;
    let p = pool("gpu");
    let cold = q.enqueue(&p, gpu_job(10, false, Some("sdxl"))).await.unwrap().id;
    let small = q.enqueue(&p, gpu_job(8, false, None)).await.unwrap().id;
    let big = q.enqueue(&p, gpu_job(70, false, None)).await.unwrap().id;
    let warm = q.enqueue(&p, gpu_job(10, false, Some("flux-dev"))).await.unwrap().id;
    let cap = |free: u64| ClaimCapacity {
        cpu: 0,
        gpus: vec![(free, false)],
        warm: vec!["flux-dev".into()],
    };
    let mut order = Vec::new();
    for _ in 0..4 {
        // Each claim sees an idle 80 GiB GPU (the previous job finished).
        let b = q.claim(&p, "w", &[JobKind::Noop], 1, LEASE, &cap(80)).await.unwrap();
        order.push(b.jobs[0].lease.id);
    }
    // Warm model first, then the tightest fit: the largest need that fits, down to the smallest.
    assert_eq!(order, vec![warm, big, cold, small]);
}

async fn placement_cpu_and_gpu_jobs_go_where_they_fit(f: Fixture) {
    let q = f.client().await;
    let p = pool("mixed");
    let gpu = q.enqueue(&p, gpu_job(20, false, None)).await.unwrap().id;
    let cpu_job = q.enqueue(&p, noop()).await.unwrap().id;
    // A CPU-only worker takes the CPU job and never the GPU one.
    let b = q.claim(&p, "cpu", &[JobKind::Noop], 10, LEASE, &cpu()).await.unwrap();
    assert_eq!(
        b.jobs.iter().map(|j| (j.lease.id, j.gpu)).collect::<Vec<_>>(),
        vec![(cpu_job, None)]
    );
    assert!(b.unfit);
    // CPU slots bound CPU jobs: with none free, a GPU worker takes only GPU work.
    q.enqueue(&p, noop()).await.unwrap();
    let b = q
        .claim(&p, "gpu", &[JobKind::Noop], 10, LEASE, &gpus(&[(24, false)]))
        .await
        .unwrap();
    assert_eq!(
        b.jobs.iter().map(|j| (j.lease.id, j.gpu)).collect::<Vec<_>>(),
        vec![(gpu, Some(0))]
    );
    let s = &q.stats(&p, &[JobKind::Noop]).await.unwrap()[0];
    assert_eq!(s.waiting_total(), 1, "stats count every shape's list");
}

async fn placement_priority_stays_strict_across_shapes(f: Fixture) {
    let q = f.client().await;
    let p = pool("gpu");
    let big_normal = q.enqueue(&p, gpu_job(70, false, None)).await.unwrap().id;
    let small_high = q
        .enqueue(
            &p,
            NewJob {
                priority: Priority::High,
                ..gpu_job(8, false, None)
            },
        )
        .await
        .unwrap()
        .id;
    let b = q
        .claim(&p, "w", &[JobKind::Noop], 1, LEASE, &gpus(&[(80, false)]))
        .await
        .unwrap();
    assert_eq!(b.jobs[0].lease.id, small_high);
    let b = q
        .claim(&p, "w", &[JobKind::Noop], 1, LEASE, &gpus(&[(72, false)]))
        .await
        .unwrap();
    assert_eq!(b.jobs[0].lease.id, big_normal);
    // Cancel, replay and reap find jobs in their shape's list too.
    let id = q.enqueue(&p, gpu_job(30, true, Some("m"))).await.unwrap().id;
    assert_eq!(q.cancel(id).await.unwrap(), CancelOutcome::Cancelled);
}

/// A handler that sleeps 200 ms and records the most jobs it saw running at once.
fn sleepy(
    running: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    peak: std::sync::Arc<std::sync::atomic::AtomicUsize>,
) -> impl JobHandler {
    use std::sync::atomic::Ordering::SeqCst;
    move |_job: ClaimedJob, _ctx: JobContext| -> HandlerFuture {
        let (running, peak) = (running.clone(), peak.clone());
        Box::pin(async move {
            let now = running.fetch_add(1, SeqCst) + 1;
            peak.fetch_max(now, SeqCst);
            tokio::time::sleep(Duration::from_millis(200)).await;
            running.fetch_sub(1, SeqCst);
            JobOutcome::Succeeded(Default::default())
        })
    }
}

async fn run_until(consumer: Consumer, done: impl Fn(&ConsumerStats) -> bool) -> std::sync::Arc<ConsumerStats> {
    let stats = consumer.stats();
    let stop = tokio_util::sync::CancellationToken::new();
    let run = tokio::spawn(consumer.run(stop.clone()));
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !done(&stats) {
        assert!(std::time::Instant::now() < deadline, "consumer did not finish");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.cancel();
    run.await.unwrap().unwrap()
}

async fn consumer_reserves_vram_per_gpu(f: Fixture) {
    use std::sync::atomic::Ordering::Relaxed;
    let q = f.client().await;
    let p = pool("gpu-80g");
    q.enqueue_batch(&p, (0..6).map(|_| gpu_job(40, false, None)).collect())
        .await
        .unwrap();
    let mut cfg = ConsumerConfig::new(p.clone(), vec![JobKind::Noop], "one-80g");
    cfg.concurrency = 10;
    cfg.resources = Resources {
        gpus: vec![GpuResource {
            total_bytes: 80 * GIB,
            nvenc: false,
        }],
        ..Default::default()
    };
    let (running, peak) = (
        std::sync::Arc::default(),
        std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0)),
    );
    let consumer = Consumer::new(q.clone(), cfg, sleepy(running, peak.clone()));
    run_until(consumer, |s| s.succeeded.load(Relaxed) == 6).await;
    assert_eq!(
        peak.load(Relaxed),
        2,
        "two 40 GiB jobs at a time on one 80 GiB GPU, despite 10 slots"
    );
}

async fn idle_large_gpu_steals_small_jobs_from_another_pool(f: Fixture) {
    use std::sync::atomic::Ordering::Relaxed;
    let q = f.client().await;
    let small_pool = pool("gpu-24g");
    let ids: Vec<JobId> = q
        .enqueue_batch(&small_pool, (0..3).map(|_| gpu_job(16, false, None)).collect())
        .await
        .unwrap()
        .iter()
        .map(|e| e.id)
        .collect();
    let mut cfg = ConsumerConfig::new(pool("gpu-80g"), vec![JobKind::Noop], "idle-80g");
    cfg.resources = Resources {
        gpus: vec![GpuResource {
            total_bytes: 80 * GIB,
            nvenc: false,
        }],
        ..Default::default()
    };
    cfg.steal_from = vec![small_pool.clone()];
    let (running, peak) = (
        std::sync::Arc::default(),
        std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0)),
    );
    let stats = run_until(Consumer::new(q.clone(), cfg, sleepy(running, peak)), |s| {
        s.succeeded.load(Relaxed) == 3
    })
    .await;
    assert_eq!(stats.stolen.load(Relaxed), 3);
    for id in ids {
        let rec = q.job_in(&small_pool, id).await.unwrap();
        assert_eq!(
            (rec.status, rec.spec.pool.as_str()),
            (JobStatus::Succeeded, "gpu-24g"),
            "acked in its own pool"
        );
    }
}

async fn a_panicking_executor_fails_the_attempt_not_the_worker(f: Fixture) {
    use std::sync::atomic::Ordering::Relaxed;
    let q = f.client().await;
    let p = pool("cpu");
    let ids: Vec<JobId> = q
        .enqueue_batch(&p, (0..4).map(|_| noop()).collect())
        .await
        .unwrap()
        .iter()
        .map(|e| e.id)
        .collect();
    // Every first attempt panics; second attempts succeed.
    let handler = |job: ClaimedJob, _ctx: JobContext| -> HandlerFuture {
        Box::pin(async move {
            if job.attempt == 1 {
                panic!("executor bug");
            }
            JobOutcome::Succeeded(Default::default())
        })
    };
    let mut cfg = ConsumerConfig::new(p.clone(), vec![JobKind::Noop], "panicky");
    cfg.concurrency = 4;
    let stats = run_until(Consumer::new(q.clone(), cfg, handler), |s| {
        s.succeeded.load(Relaxed) == 4
    })
    .await;
    assert_eq!(stats.retried.load(Relaxed), 4);
    for id in ids {
        let rec = q.job(id).await.unwrap();
        assert_eq!((rec.status, rec.attempts), (JobStatus::Succeeded, 2));
        assert!(
            rec.history
                .iter()
                .any(|h| h.message.as_deref() == Some("executor panicked"))
        );
    }
}

fn of(tenant: &str) -> NewJob {
    NewJob::new(tenant, "user-1", Payload::Noop(NoopPayload::default()))
}

fn weighted(tenant: &str, weight: u32, n: usize) -> Vec<(JobId, NewJob, Accounting)> {
    (0..n)
        .map(|_| {
            let acct = Accounting {
                weight,
                ..Default::default()
            };
            (JobId::new(), of(tenant), acct)
        })
        .collect()
}

async fn claim_tenants(q: &QueueClient, p: &Pool, n: usize) -> Vec<String> {
    let b = q.claim(p, "w1", &[JobKind::Noop], n, LEASE, &cpu()).await.unwrap();
    b.jobs.iter().map(|j| j.spec.tenant.clone()).collect()
}

async fn tenants_share_claims_by_weight(f: Fixture) {
    let q = f.client().await;
    let p = pool("fair");
    // A burst from one tenant, then a few jobs from another: the latecomer is served at once,
    // alternating, not after the burst.
    for _ in 0..3 {
        q.enqueue_batch_with_ids(&p, weighted("burst", 1, 100)).await.unwrap();
    }
    q.enqueue_batch_with_ids(&p, weighted("late", 1, 5)).await.unwrap();
    let got = claim_tenants(&q, &p, 10).await;
    assert_eq!(got.iter().filter(|t| *t == "late").count(), 5, "{got:?}");
    // FIFO within a tenant: the burst's first jobs came first.
    let late_done = claim_tenants(&q, &p, 10).await;
    assert!(late_done.iter().all(|t| t == "burst"), "{late_done:?}");
    // Weights: 3 to 1 while both have work.
    q.enqueue_batch_with_ids(&p, weighted("gold", 3, 100)).await.unwrap();
    let got = claim_tenants(&q, &p, 40).await;
    let gold = got.iter().filter(|t| *t == "gold").count();
    assert!((29..=31).contains(&gold), "gold got {gold} of 40: {got:?}");
    // A tenant alone is served in one batch, and the stats count every tenant's jobs.
    let s = q.stats(&p, &[JobKind::Noop]).await.unwrap();
    assert_eq!(s[0].waiting[1], 300 + 5 + 100 - 10 - 10 - 40);
    let rest = claim_tenants(&q, &p, 1000).await;
    assert_eq!(rest.len() as u64, s[0].waiting[1]);
    assert_eq!(q.stats(&p, &[JobKind::Noop]).await.unwrap()[0].waiting[1], 0);
}

async fn credit_events(q: &QueueClient, p: &Pool) -> Vec<(String, String, String)> {
    let mut c = q.connection();
    let reply: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
        .arg(format!("{}credits", p.prefix()))
        .arg("-")
        .arg("+")
        .query_async(&mut c)
        .await
        .unwrap();
    reply
        .ids
        .iter()
        .map(|e| {
            let s = |k: &str| e.get::<String>(k).unwrap_or_default();
            (s("id"), s("out"), s("usage"))
        })
        .collect()
}

async fn finished_jobs_with_reservations_leave_one_credit_event(f: Fixture) {
    let q = f.client().await;
    let p = pool("credits");
    let reserved = |n: usize| -> Vec<(JobId, NewJob, Accounting)> {
        (0..n)
            .map(|_| {
                let mut j = noop();
                j.max_attempts = Some(2);
                let acct = Accounting {
                    credits_reserved: 7,
                    price_rule: "{}".into(),
                    ..Default::default()
                };
                (JobId::new(), j, acct)
            })
            .collect()
    };
    let ok = q.enqueue_batch_with_ids(&p, reserved(1)).await.unwrap()[0].id;
    let dead = q.enqueue_batch_with_ids(&p, reserved(1)).await.unwrap()[0].id;
    let cancelled = q.enqueue_batch_with_ids(&p, reserved(1)).await.unwrap()[0].id;
    let free = q.enqueue(&p, noop()).await.unwrap().id;
    assert_eq!(q.cancel(cancelled).await.unwrap(), CancelOutcome::Cancelled);
    let b = q.claim(&p, "w1", &[JobKind::Noop], 10, LEASE, &cpu()).await.unwrap();
    assert_eq!(b.jobs.len(), 3);
    let usage = Usage {
        outputs: Some(2),
        ..Default::default()
    };
    for j in &b.jobs {
        // The token's low bit marks a reservation; flipping it makes another lease, not a
        // free job: the ack is stale and leaves nothing.
        assert_eq!(j.lease.token % 2 == 1, j.lease.id != free, "{:?}", j.lease);
        let flipped = LeaseRef {
            token: j.lease.token ^ 1,
            ..j.lease.clone()
        };
        assert_eq!(
            q.ack(&p, &[(flipped, Completion::default())]).await.unwrap(),
            vec![AckOutcome::Stale]
        );
        if j.lease.id == dead {
            // a retryable failure is not final: no event until the job is dead
            q.fail(&p, &[failure(j, ErrorClass::Retryable)]).await.unwrap();
        } else {
            let done = Completion {
                output: None,
                usage: Some(usage.clone()),
            };
            q.ack(&p, &[(j.lease.clone(), done)]).await.unwrap();
        }
    }
    assert_eq!(q.job(ok).await.unwrap().usage, Some(usage.clone()));
    assert_eq!(q.job(ok).await.unwrap().credits_reserved, Some(7));
    assert_eq!(q.job(free).await.unwrap().credits_reserved, None);
    let mut events = credit_events(&q, &p).await;
    assert_eq!(events.len(), 2, "{events:?}");
    tokio::time::sleep(Duration::from_millis(60)).await;
    let j = claim_one(&q, &p).await;
    assert_eq!(j.lease.id, dead);
    q.fail(&p, &[failure(&j, ErrorClass::Permanent)]).await.unwrap();
    events = credit_events(&q, &p).await;
    let json = serde_json::to_string(&usage).unwrap();
    assert_eq!(
        events,
        vec![
            (cancelled.to_string(), "cancelled".into(), String::new()),
            (ok.to_string(), "succeeded".into(), json),
            (dead.to_string(), "dead".into(), String::new()),
        ]
    );
    // Unsettled until a settler deletes them: the backlog counts them and ages the oldest.
    let backlog = q.credit_backlog(&p).await.unwrap();
    assert_eq!(backlog.events, 3);
    assert!(backlog.oldest_ms.is_some_and(|ms| ms >= 60), "{backlog:?}");
    let empty = q.credit_backlog(&pool("no-credits")).await.unwrap();
    assert_eq!((empty.events, empty.oldest_ms), (0, None));
}

async fn subscribed_tenants_jobs_leave_job_events(f: Fixture) {
    use gantry_queue::events::{self, EventType, StreamPos};
    let q = f.client().await;
    let p = pool("events");
    let subscribed = |max: u32| {
        let mut j = noop();
        j.max_attempts = Some(max);
        let acct = Accounting {
            events: true,
            ..Default::default()
        };
        (JobId::new(), j, acct)
    };
    let ok = q.enqueue_batch_with_ids(&p, vec![subscribed(2)]).await.unwrap()[0].id;
    // A traced job: its events carry its trace context (its webhook deliveries join the trace).
    const TP: &str = "00-5e1f0c2a9b8d47e3a6c1d2e3f4a5b6c7-1a2b3c4d5e6f7081-01";
    let mut traced = subscribed(2);
    traced.2.traceparent = Some(TP.into());
    let dead = q.enqueue_batch_with_ids(&p, vec![traced]).await.unwrap()[0].id;
    let blocked = q.enqueue_batch_with_ids(&p, vec![subscribed(2)]).await.unwrap()[0].id;
    let cancelled = q.enqueue_batch_with_ids(&p, vec![subscribed(2)]).await.unwrap()[0].id;
    let quiet = q.enqueue(&p, noop()).await.unwrap().id;
    assert_eq!(q.cancel(cancelled).await.unwrap(), CancelOutcome::Cancelled);
    let b = q.claim(&p, "w1", &[JobKind::Noop], 10, LEASE, &cpu()).await.unwrap();
    assert_eq!(b.jobs.len(), 4);
    let result = ResultRef {
        object_key: "out/1.png".into(),
        size_bytes: 3,
        content_type: "image/png".into(),
        sha256: "ab".repeat(32),
        details: Default::default(),
    };
    for j in &b.jobs {
        // An outbox to fill sets the token's low bit; a job nobody listens for has none.
        assert_eq!(j.lease.token % 2 == 1, j.lease.id != quiet, "{:?}", j.lease);
        if j.lease.id == ok || j.lease.id == quiet {
            let done = Completion {
                output: Some(result.clone()),
                usage: None,
            };
            q.ack(&p, &[(j.lease.clone(), done)]).await.unwrap();
        } else if j.lease.id == dead {
            q.fail(&p, &[failure(j, ErrorClass::Retryable)]).await.unwrap();
        } else {
            q.fail(&p, &[failure(j, ErrorClass::Blocked)]).await.unwrap();
        }
    }
    tokio::time::sleep(Duration::from_millis(60)).await;
    let j = claim_one(&q, &p).await;
    assert_eq!(j.lease.id, dead);
    q.fail(&p, &[failure(&j, ErrorClass::Retryable)]).await.unwrap();

    let conn = q.connection();
    let (got, last) = events::read_after(&conn, &p, StreamPos::ZERO, 100).await.unwrap();
    let seen: Vec<(JobId, EventType)> = got.iter().map(|e| (e.job, e.event_type)).collect();
    assert_eq!(
        seen,
        vec![
            (cancelled, EventType::Cancelled),
            (ok, EventType::Succeeded),
            (dead, EventType::Failed),
            (blocked, EventType::Blocked),
            (dead, EventType::Dead),
        ]
    );
    assert!(
        got.iter()
            .all(|e| e.tenant == "tenant-a" && e.kind == Some(JobKind::Noop))
    );
    assert_eq!(got[1].result.as_ref(), Some(&result));
    assert_eq!(got[4].error.as_ref().map(|e| e.class.as_str()), Some("retryable"));
    assert_eq!(got[4].error.as_ref().map(|e| e.message.as_str()), Some("boom"));
    for e in &got {
        let want = (e.job == dead).then_some(TP);
        assert_eq!(e.traceparent.as_deref(), want, "{e:?}");
    }
    // Positions are increasing; reading after the last one finds nothing more.
    assert!(got.windows(2).all(|w| w[0].pos < w[1].pos));
    assert_eq!(last, Some(got[4].pos));
    let (rest, _) = events::read_after(&conn, &p, got[4].pos, 100).await.unwrap();
    assert!(rest.is_empty());
    let (first, newest) = events::bounds(&conn, &p).await.unwrap().expect("not empty");
    assert_eq!((first, newest), (got[0].pos, got[4].pos));
    // Retention: nothing is as old as an hour; a length of 0 trims (approximately) all.
    assert_eq!(events::trim(&conn, &p, 3_600_000, 1_000).await.unwrap(), 0);
    assert!(events::bounds(&conn, &pool("no-events")).await.unwrap().is_none());
}

/// Every page of a search, followed to its end: the jobs and how many pages it took.
async fn search_all(q: &QueueClient, query: &JobQuery, limit: usize) -> (Vec<JobSummary>, usize) {
    let (mut jobs, mut cursor, mut pages) = (Vec::new(), None::<String>, 0);
    loop {
        let page = q.search(query, limit, cursor.as_deref()).await.unwrap();
        pages += 1;
        assert!(page.jobs.len() <= limit);
        jobs.extend(page.jobs);
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => return (jobs, pages),
        }
        assert!(pages < 10_000, "the search does not end");
    }
}

fn ids(jobs: &[JobSummary]) -> Vec<JobId> {
    jobs.iter().map(|j| j.id).collect()
}

async fn search_lists_jobs_newest_first_across_pools(f: Fixture) {
    let q = f.client().await;
    let (p1, p2) = (pool("search-a"), pool("search-b"));
    let job = |tenant: &str, user: &str, kind: JobKind| {
        let body = match kind {
            JobKind::Upscale => {
                Payload::Upscale(serde_json::from_value(serde_json::json!({"input": "in/a.png", "scale": 2})).unwrap())
            }
            _ => Payload::Noop(NoopPayload::default()),
        };
        NewJob::new(tenant, user, body)
    };
    // Enqueued one at a time, alternating pools, so creation times are distinct and known.
    let mut made: Vec<(JobId, &str, &str, JobKind)> = Vec::new();
    for i in 0..12 {
        let (tenant, user) = if i % 3 == 2 {
            ("tenant-b", "bob")
        } else {
            ("tenant-a", if i % 2 == 0 { "ann" } else { "al" })
        };
        let kind = if i % 4 == 1 { JobKind::Upscale } else { JobKind::Noop };
        let p = if i % 2 == 0 { &p1 } else { &p2 };
        let id = q.enqueue(p, job(tenant, user, kind)).await.unwrap().id;
        made.push((id, tenant, user, kind));
        tokio::time::sleep(Duration::from_millis(3)).await;
    }
    type Made<'a> = (JobId, &'a str, &'a str, JobKind);
    let newest_first =
        |keep: &dyn Fn(&Made) -> bool| -> Vec<JobId> { made.iter().rev().filter(|m| keep(m)).map(|m| m.0).collect() };
    let tenant_a = JobQuery {
        tenant: Some("tenant-a".into()),
        ..Default::default()
    };
    // Page sizes that split the pools' runs differently give the same list, newest first.
    for limit in [1, 2, 3, 5, 200] {
        let (jobs, _) = search_all(&q, &tenant_a, limit).await;
        assert_eq!(ids(&jobs), newest_first(&|m| m.1 == "tenant-a"), "limit {limit}");
    }
    let (jobs, _) = search_all(&q, &tenant_a, 4).await;
    assert!(
        jobs.iter()
            .all(|j| j.tenant == "tenant-a" && j.status == JobStatus::Queued)
    );
    assert_eq!(
        jobs[0].pool, "search-a",
        "the newest of tenant A's jobs went to the first pool"
    );
    // Kind and user filters (their own indexes), and every tenant for an operator.
    let upscales = JobQuery {
        kind: Some(JobKind::Upscale),
        ..tenant_a.clone()
    };
    assert_eq!(
        ids(&search_all(&q, &upscales, 2).await.0),
        newest_first(&|m| m.1 == "tenant-a" && m.3 == JobKind::Upscale)
    );
    let ann = JobQuery {
        user: Some("ann".into()),
        ..tenant_a.clone()
    };
    assert_eq!(ids(&search_all(&q, &ann, 2).await.0), newest_first(&|m| m.2 == "ann"));
    // The same user id in several tenants (an operator's search): each tenant's own user.
    let al_anywhere = JobQuery {
        user: Some("al".into()),
        user_tenants: vec!["tenant-a".into(), "tenant-b".into()],
        ..Default::default()
    };
    assert_eq!(
        ids(&search_all(&q, &al_anywhere, 2).await.0),
        newest_first(&|m| m.2 == "al")
    );
    let everyone = JobQuery::default();
    assert_eq!(ids(&search_all(&q, &everyone, 5).await.0), newest_first(&|_| true));
    // Status is the record's now: two of tenant A's jobs run and one succeeds.
    let b = q.claim(&p1, "w1", &[JobKind::Noop], 2, LEASE, &cpu()).await.unwrap();
    let done = b.jobs[0].lease.clone();
    q.ack(&p1, &[(done.clone(), Completion::default())]).await.unwrap();
    let succeeded = JobQuery {
        status: Some(JobStatus::Succeeded),
        ..Default::default()
    };
    let found = search_all(&q, &succeeded, 10).await.0;
    assert_eq!(ids(&found), vec![done.id]);
    assert!(found[0].finished_at_ms.is_some());
    let running = JobQuery {
        status: Some(JobStatus::Running),
        ..Default::default()
    };
    assert_eq!(ids(&search_all(&q, &running, 10).await.0), vec![b.jobs[1].lease.id]);
    // Creation time: the middle four.
    let all = search_all(&q, &everyone, 200).await.0;
    let (after, before) = (all[7].enqueued_at_ms, all[3].enqueued_at_ms);
    let window = JobQuery {
        created_after_ms: Some(after),
        created_before_ms: Some(before),
        ..Default::default()
    };
    assert_eq!(ids(&search_all(&q, &window, 3).await.0), ids(&all[4..8]));
    // A cursor is only good for the search that made it; garbage is a typed refusal.
    let page = q.search(&tenant_a, 2, None).await.unwrap();
    let cursor = page.next_cursor.expect("more pages");
    assert!(matches!(
        q.search(&upscales, 2, Some(&cursor)).await,
        Err(QueueError::UnknownCursor(_))
    ));
    assert!(matches!(
        q.search(&tenant_a, 2, Some("%%%")).await,
        Err(QueueError::UnknownCursor(_))
    ));
    assert!(matches!(
        q.search(&tenant_a, 0, None).await,
        Err(QueueError::Invalid(_))
    ));
    assert!(matches!(
        q.search(
            &JobQuery {
                user: Some("ann".into()),
                ..Default::default()
            },
            2,
            None
        )
        .await,
        Err(QueueError::Invalid(_))
    ));
    // An erased user's jobs are gone from every index's results.
    q.erase_user(&p1, "tenant-a", "ann").await.unwrap();
    q.erase_user(&p2, "tenant-a", "ann").await.unwrap();
    let left = ids(&search_all(&q, &tenant_a, 3).await.0);
    let anns: Vec<JobId> = made.iter().filter(|m| m.2 == "ann").map(|m| m.0).collect();
    // (ann's job that runs stays until its worker stops it)
    let left_anns: Vec<&JobId> = left.iter().filter(|id| anns.contains(id)).collect();
    assert!(left_anns.iter().all(|id| **id == b.jobs[1].lease.id), "{left_anns:?}");
    assert_eq!(
        left.len() - left_anns.len(),
        made.iter().filter(|m| m.2 == "al").count()
    );
}

async fn search_with_a_rare_match_pages_through_without_loss(f: Fixture) {
    let q = f.client().await;
    let (p1, p2) = (pool("rare-a"), pool("rare-b"));
    // 2,500 jobs in one pool, a few in the other; one job in all succeeds.
    for _ in 0..5 {
        q.enqueue_batch(&p1, (0..500).map(|_| noop()).collect()).await.unwrap();
    }
    let few: Vec<JobId> = q
        .enqueue_batch(&p2, (0..3).map(|_| noop()).collect())
        .await
        .unwrap()
        .iter()
        .map(|e| e.id)
        .collect();
    let b = q.claim(&p1, "w1", &[JobKind::Noop], 1, LEASE, &cpu()).await.unwrap();
    let first = b.jobs[0].lease.clone();
    q.ack(&p1, &[(first.clone(), Completion::default())]).await.unwrap();
    let succeeded = JobQuery {
        tenant: Some("tenant-a".into()),
        status: Some(JobStatus::Succeeded),
        ..Default::default()
    };
    // The oldest job is the match: each page reads a bounded stretch of the index, so the
    // search takes several (short, even empty) pages, and finds it exactly once.
    let (jobs, pages) = search_all(&q, &succeeded, 50).await;
    assert_eq!(ids(&jobs), vec![first.id]);
    assert!(pages >= 3, "{pages} pages");
    // Everything, in pages of 200: 2,503 jobs, no repeats, newest (the other pool's) first.
    let (all, _) = search_all(
        &q,
        &JobQuery {
            tenant: Some("tenant-a".into()),
            ..Default::default()
        },
        200,
    )
    .await;
    assert_eq!(all.len(), 2503);
    let unique: std::collections::HashSet<JobId> = all.iter().map(|j| j.id).collect();
    assert_eq!(unique.len(), 2503);
    assert_eq!(ids(&all[..3]), few.iter().rev().copied().collect::<Vec<_>>());
    assert!(all.windows(2).all(|w| w[0].enqueued_at_ms >= w[1].enqueued_at_ms));
}

/// A job id made at `ms` (a ULID's time part), as a scheduler with that clock would make it.
fn id_at(ms: u64) -> JobId {
    ulid::Ulid::from_parts(ms, rand_bits()).to_string().parse().unwrap()
}

fn rand_bits() -> u128 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(0);
    u128::from(h.finish()) << 40 | u128::from(h.finish() >> 24)
}

async fn search_of_a_time_window_starts_near_its_end(f: Fixture) {
    let q = f.client().await;
    let p = pool("window");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let batch = |ms: u64| {
        (0..1000)
            .map(move |_| (id_at(ms), noop(), Accounting::default()))
            .collect::<Vec<_>>()
    };
    let old: Vec<JobId> = q
        .enqueue_batch_with_ids(&p, batch(now))
        .await
        .unwrap()
        .iter()
        .map(|e| e.id)
        .collect();
    tokio::time::sleep(Duration::from_millis(5)).await;
    // The newer thousand's ids say ten minutes later: the search goes by the records' times.
    q.enqueue_batch_with_ids(&p, batch(now + 600_000)).await.unwrap();
    let boundary = search_all(&q, &JobQuery::default(), 1).await.0;
    let before = boundary.iter().find(|j| !old.contains(&j.id)).unwrap().enqueued_at_ms;
    // Records gone on both sides of the boundary (expired, erased) leave bare ids in the list.
    let newer: Vec<JobId> = boundary.iter().map(|j| j.id).filter(|id| !old.contains(id)).collect();
    let mut conn = q.connection();
    for id in old[950..].iter().chain(&newer[newer.len() - 50..]) {
        redis::cmd("DEL")
            .arg(p.job_key(*id))
            .query_async::<()>(&mut conn)
            .await
            .unwrap();
    }
    let old = old[..950].to_vec();
    let window = JobQuery {
        created_before_ms: Some(before),
        ..Default::default()
    };
    // The first page is full: the walk started at the older thousand's end, not the list's.
    let first = q.search(&window, 50, None).await.unwrap();
    assert_eq!(first.jobs.len(), 50);
    assert!(first.jobs.iter().all(|j| old.contains(&j.id)));
    let (all, _) = search_all(&q, &window, 200).await;
    let mut got = ids(&all);
    got.sort();
    let mut want = old.clone();
    want.sort();
    assert_eq!(got, want);
}

async fn progress_is_stored_under_the_lease_and_shown_for_the_running_attempt(f: Fixture) {
    let q = f.client().await;
    let p = pool("progress");
    let mut job = noop();
    job.max_attempts = Some(3);
    let id = q.enqueue(&p, job).await.unwrap().id;
    let first = claim_one(&q, &p).await;
    let report = |lease: &LeaseRef, attempt: u32, stage: Stage, percent: Option<f32>| ProgressReport {
        lease: lease.clone(),
        attempt,
        stage,
        percent,
    };
    let stored = q
        .report_progress(&p, &[report(&first.lease, 1, Stage::Encoding, Some(40.04))])
        .await
        .unwrap();
    assert_eq!(stored, vec![true]);
    let shown = q.job(id).await.unwrap().progress.expect("progress");
    assert_eq!(
        (shown.stage, shown.percent, shown.attempt),
        (Stage::Encoding, Some(40.0), 1)
    );
    assert!(shown.at_ms > 0);
    // The next attempt has reported nothing yet: the first one's progress is not shown for it.
    q.fail(&p, &[failure(&first, ErrorClass::Retryable)]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(60)).await;
    let second = claim_one(&q, &p).await;
    assert_eq!(second.attempt, 2);
    assert!(q.job(id).await.unwrap().progress.is_none());
    // The first attempt's lease is gone: its late report is not written.
    let stale = q
        .report_progress(
            &p,
            &[
                report(&first.lease, 1, Stage::Uploading, None),
                report(&second.lease, 2, Stage::Hashing, None),
            ],
        )
        .await
        .unwrap();
    assert_eq!(stale, vec![false, true]);
    assert_eq!(q.job(id).await.unwrap().progress.map(|p| p.stage), Some(Stage::Hashing));
    // Search shows it too, while the job runs.
    let page = q.search(&JobQuery::default(), 10, None).await.unwrap();
    assert_eq!(
        page.jobs[0].progress.map(|p| (p.stage, p.attempt)),
        Some((Stage::Hashing, 2))
    );
    q.ack(&p, &[(second.lease.clone(), Completion::default())])
        .await
        .unwrap();
    let late = q
        .report_progress(&p, &[report(&second.lease, 2, Stage::Uploading, None)])
        .await
        .unwrap();
    assert_eq!(late, vec![false], "nothing is written after the ack");
}

async fn a_consumer_stores_its_jobs_latest_progress_once_a_tick(f: Fixture) {
    let q = f.client().await;
    let p = pool("progress-consumer");
    let ids: Vec<JobId> = q
        .enqueue_batch(&p, vec![noop(), noop()])
        .await
        .unwrap()
        .iter()
        .map(|e| e.id)
        .collect();
    let mut cfg = ConsumerConfig::new(p.clone(), vec![JobKind::Noop], "progress-test");
    cfg.progress_every = Duration::from_millis(200);
    let release = tokio_util::sync::CancellationToken::new();
    let gate = release.clone();
    let handler = move |_job: ClaimedJob, ctx: JobContext| -> HandlerFuture {
        let gate = gate.clone();
        Box::pin(async move {
            // A chatty executor: a thousand reports, of which the last is the one stored.
            for i in 0..=1000 {
                ctx.progress.report(Stage::Encoding, Some(i as f32 / 10.0));
            }
            gate.cancelled().await;
            JobOutcome::Succeeded(Default::default())
        })
    };
    let consumer = Consumer::new(q.clone(), cfg, handler);
    let stats = consumer.stats();
    let stop = tokio_util::sync::CancellationToken::new();
    let run = tokio::spawn(consumer.run(stop.clone()));
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    for id in &ids {
        loop {
            let progress = q.job(*id).await.unwrap().progress;
            // A tick may store a report from the middle of the burst (the ticker runs beside
            // the handler); the next tick stores the last one, and that is what stays.
            if let Some(pr) = progress
                && pr.percent == Some(100.0)
            {
                assert_eq!((pr.stage, pr.percent, pr.attempt), (Stage::Encoding, Some(100.0), 1));
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the last progress was not stored: {progress:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    release.cancel();
    while stats.succeeded.load(std::sync::atomic::Ordering::Relaxed) < 2 {
        assert!(std::time::Instant::now() < deadline, "consumer did not finish");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.cancel();
    run.await.unwrap().unwrap();
}

/// A pipeline's steps as the scheduler would enqueue them: `steps` is (name, pool, parents).
fn pipeline_jobs(steps: &[(&str, &Pool, &[&str])], credits: i64) -> Vec<(Pool, JobId, NewJob, Accounting)> {
    let ids: std::collections::HashMap<&str, JobId> = steps.iter().map(|(n, _, _)| (*n, JobId::new())).collect();
    let pl = JobId::new().to_string();
    steps
        .iter()
        .map(|(name, pool, needs)| {
            let kids = steps
                .iter()
                .filter(|(_, _, n)| n.contains(name))
                .map(|(k, kp, _)| ((*kp).clone(), ids[k]))
                .collect();
            let acct = Accounting {
                credits_reserved: credits,
                events: true,
                step: Some(StepLink {
                    pipeline: pl.clone(),
                    step: (*name).to_owned(),
                    need: needs.len() as u32,
                    kids,
                    optional: false,
                }),
                ..Default::default()
            };
            ((*pool).clone(), ids[name], noop(), acct)
        })
        .collect()
}

async fn enqueue_pipeline(q: &QueueClient, jobs: &[(Pool, JobId, NewJob, Accounting)]) {
    let mut by_pool: std::collections::BTreeMap<Pool, Vec<(JobId, NewJob, Accounting)>> = Default::default();
    for (p, id, j, a) in jobs {
        by_pool.entry(p.clone()).or_default().push((*id, j.clone(), a.clone()));
    }
    for (p, batch) in by_pool {
        q.enqueue_batch_with_ids(&p, batch).await.unwrap();
    }
}

async fn status_of(q: &QueueClient, id: JobId) -> JobStatus {
    q.job(id).await.unwrap().status
}

async fn field(q: &QueueClient, p: &Pool, id: JobId, f: &str) -> Option<String> {
    redis::cmd("HGET")
        .arg(p.job_key(id))
        .arg(f)
        .query_async(&mut q.connection())
        .await
        .unwrap()
}

async fn pipeline_steps_run_when_their_parents_succeed(f: Fixture) {
    let q = f.client().await;
    let p = pool("pipe");
    // a -> (b, c) -> d: a fan-out and a fan-in, in one pool.
    let jobs = pipeline_jobs(
        &[
            ("a", &p, &[]),
            ("b", &p, &["a"]),
            ("c", &p, &["a"]),
            ("d", &p, &["b", "c"]),
        ],
        0,
    );
    let id = |i: usize| jobs[i].1;
    enqueue_pipeline(&q, &jobs).await;
    for i in 1..4 {
        assert_eq!(status_of(&q, id(i)).await, JobStatus::Waiting);
    }
    let s = &q.stats(&p, &[JobKind::Noop]).await.unwrap()[0];
    assert_eq!(s.waiting_total(), 1, "only the root is on a queue");
    let a = claim_one(&q, &p).await;
    assert_eq!(a.lease.id, id(0));
    let result = ResultRef {
        object_key: "t/u/a/output-0.png".into(),
        size_bytes: 3,
        content_type: "image/png".into(),
        sha256: "ab".repeat(32),
        details: Default::default(),
    };
    let done = |r: Option<ResultRef>| Completion { output: r, usage: None };
    // Its outbox bit is set: it has children to tell.
    assert_eq!(a.lease.token % 2, 1);
    q.ack(&p, &[(a.lease.clone(), done(Some(result.clone())))])
        .await
        .unwrap();
    // Both children are queued in the same call; each holds the parent's result.
    assert_eq!(status_of(&q, id(1)).await, JobStatus::Queued);
    assert_eq!(status_of(&q, id(2)).await, JobStatus::Queued);
    assert_eq!(status_of(&q, id(3)).await, JobStatus::Waiting);
    let noted: ResultRef = serde_json::from_str(&field(&q, &p, id(1), "in:a").await.unwrap()).unwrap();
    assert_eq!(noted, result);
    let b = q.claim(&p, "w1", &[JobKind::Noop], 10, LEASE, &cpu()).await.unwrap();
    assert_eq!(b.jobs.len(), 2);
    q.ack(&p, &[(b.jobs[0].lease.clone(), done(None))]).await.unwrap();
    assert_eq!(
        status_of(&q, id(3)).await,
        JobStatus::Waiting,
        "the fan-in waits for both"
    );
    assert_eq!(field(&q, &p, id(3), "need").await.as_deref(), Some("1"));
    q.ack(&p, &[(b.jobs[1].lease.clone(), done(None))]).await.unwrap();
    assert_eq!(status_of(&q, id(3)).await, JobStatus::Queued);
    let d = claim_one(&q, &p).await;
    assert_eq!(d.lease.id, id(3));
    q.ack(&p, &[(d.lease.clone(), done(None))]).await.unwrap();
    // Every step succeeded once; nothing is left on the queue.
    for i in 0..4 {
        assert_eq!(status_of(&q, id(i)).await, JobStatus::Succeeded);
    }
    let s = &q.stats(&p, &[JobKind::Noop]).await.unwrap()[0];
    assert_eq!((s.waiting_total(), s.in_flight), (0, 0));
    // Cancelling a waiting step skips what needs it.
    let more = pipeline_jobs(&[("x", &p, &[]), ("y", &p, &["x"]), ("z", &p, &["y"])], 0);
    enqueue_pipeline(&q, &more).await;
    assert_eq!(q.cancel(more[1].1).await.unwrap(), CancelOutcome::Cancelled);
    assert_eq!(status_of(&q, more[2].1).await, JobStatus::Cancelled);
    assert_eq!(
        status_of(&q, more[0].1).await,
        JobStatus::Queued,
        "its parent is not its business"
    );
}

async fn a_failed_step_skips_its_descendants_and_refunds_them(f: Fixture) {
    let q = f.client().await;
    let p = pool("pipe-fail");
    let jobs = pipeline_jobs(
        &[("a", &p, &[]), ("b", &p, &["a"]), ("c", &p, &["b"]), ("d", &p, &[])],
        7,
    );
    enqueue_pipeline(&q, &jobs).await;
    let claimed = q.claim(&p, "w1", &[JobKind::Noop], 10, LEASE, &cpu()).await.unwrap();
    assert_eq!(claimed.jobs.len(), 2, "the two roots");
    let a = claimed.jobs.iter().find(|j| j.lease.id == jobs[0].1).unwrap();
    q.fail(&p, &[failure(a, ErrorClass::Permanent)]).await.unwrap();
    assert_eq!(status_of(&q, jobs[0].1).await, JobStatus::Dead);
    for i in [1, 2] {
        let r = q.job(jobs[i].1).await.unwrap();
        assert_eq!(r.status, JobStatus::Cancelled);
        let msg = r.error.unwrap().message;
        assert!(msg.starts_with("skipped: step "), "{msg}");
    }
    assert!(
        q.job(jobs[1].1)
            .await
            .unwrap()
            .error
            .unwrap()
            .message
            .contains("step a")
    );
    assert!(
        q.job(jobs[2].1)
            .await
            .unwrap()
            .error
            .unwrap()
            .message
            .contains("step b")
    );
    // The other branch runs on.
    assert_eq!(status_of(&q, jobs[3].1).await, JobStatus::Running);
    // One credit event each: the dead step's and the two skipped ones' refunds.
    let events = credit_events(&q, &p).await;
    let refunded: std::collections::HashSet<String> = events.iter().map(|(id, _, _)| id.clone()).collect();
    assert_eq!(events.len(), 3, "{events:?}");
    for j in &jobs[..3] {
        assert!(refunded.contains(&j.1.to_string()));
    }
    assert!(
        events
            .iter()
            .all(|(_, outcome, _)| outcome == "dead" || outcome == "cancelled")
    );
    // A late hand-off (a duplicate delivery) changes nothing.
    q.apply_handoffs(
        &p,
        &[gantry_queue::client::handoff::HandOff {
            pool: p.clone(),
            child: jobs[1].1,
            parent: "a".into(),
            outcome: gantry_queue::client::handoff::ParentOutcome::Succeeded,
            result: String::new(),
            ttl_secs: 60,
        }],
    )
    .await
    .unwrap();
    assert_eq!(status_of(&q, jobs[1].1).await, JobStatus::Cancelled);
    assert_eq!(credit_events(&q, &p).await.len(), 3);
}

async fn a_step_in_another_pool_is_handed_off_once(f: Fixture) {
    let q = f.client().await;
    let (cpu_pool, gpu_pool) = (pool("pipe-cpu"), pool("pipe-gpu"));
    let jobs = pipeline_jobs(
        &[
            ("a", &cpu_pool, &[]),
            ("b", &gpu_pool, &["a"]),
            ("c", &cpu_pool, &["b"]),
        ],
        0,
    );
    enqueue_pipeline(&q, &jobs).await;
    let a = claim_one(&q, &cpu_pool).await;
    q.ack(&cpu_pool, &[(a.lease.clone(), Completion::default())])
        .await
        .unwrap();
    // The child in the other pool waits until the hand-off is applied there.
    assert_eq!(status_of(&q, jobs[1].1).await, JobStatus::Waiting);
    let backlog = q.handoff_backlog(&cpu_pool).await.unwrap();
    assert_eq!(backlog.events, 1);
    assert!(backlog.oldest_ms.is_some());
    let key = QueueClient::handoff_key(&cpu_pool);
    let entries: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
        .arg(&key)
        .arg("-")
        .arg("+")
        .query_async(&mut q.connection())
        .await
        .unwrap();
    assert_eq!(entries.ids.len(), 1);
    let h = gantry_queue::client::handoff::HandOff::parse(|k| entries.ids[0].get::<String>(k)).unwrap();
    assert_eq!(
        (h.pool.clone(), h.child, h.parent.as_str(), h.outcome),
        (
            gpu_pool.clone(),
            jobs[1].1,
            "a",
            gantry_queue::client::handoff::ParentOutcome::Succeeded
        )
    );
    // Applied twice (a mover killed before its ack, then the entry taken over): queued once.
    q.apply_handoffs(&gpu_pool, std::slice::from_ref(&h)).await.unwrap();
    q.apply_handoffs(&gpu_pool, std::slice::from_ref(&h)).await.unwrap();
    assert_eq!(status_of(&q, jobs[1].1).await, JobStatus::Queued);
    let s = &q.stats(&gpu_pool, &[JobKind::Noop]).await.unwrap()[0];
    assert_eq!(s.waiting_total(), 1);
    // Handed to the wrong pool, it is refused rather than misapplied.
    assert!(q.apply_handoffs(&cpu_pool, &[h]).await.is_err());
    // And back: b's success is handed to c in the first pool.
    let b = claim_one(&q, &gpu_pool).await;
    q.ack(&gpu_pool, &[(b.lease.clone(), Completion::default())])
        .await
        .unwrap();
    let back: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
        .arg(QueueClient::handoff_key(&gpu_pool))
        .arg("-")
        .arg("+")
        .query_async(&mut q.connection())
        .await
        .unwrap();
    let h = gantry_queue::client::handoff::HandOff::parse(|k| back.ids[0].get::<String>(k)).unwrap();
    q.apply_handoffs(&cpu_pool, &[h]).await.unwrap();
    assert_eq!(status_of(&q, jobs[2].1).await, JobStatus::Queued);
}

async fn a_claimed_step_gets_its_parents_outputs_in_place_of_its_references(f: Fixture) {
    let q = f.client().await;
    let p = pool("pipe-refs");
    let mut jobs = pipeline_jobs(&[("a", &p, &[]), ("big", &p, &["a"]), ("odd", &p, &["a"])], 0);
    let upscale = |input: &str| {
        NewJob::new(
            "tenant-a",
            "user-1",
            Payload::Upscale(serde_json::from_value(serde_json::json!({"input": input, "scale": 2})).unwrap()),
        )
    };
    jobs[1].2 = upscale("${steps.a.output}");
    jobs[2].2 = upscale("${steps.a.outputs.poster}");
    enqueue_pipeline(&q, &jobs).await;
    let a = claim_one(&q, &p).await;
    let mut details = std::collections::BTreeMap::new();
    details.insert("webm".to_owned(), "tenant-a/x/output.webm".to_owned());
    let result = ResultRef {
        object_key: "tenant-a/x/output-0.png".into(),
        size_bytes: 3,
        content_type: "image/png".into(),
        sha256: "ab".repeat(32),
        details,
    };
    q.ack(
        &p,
        &[(
            a.lease.clone(),
            Completion {
                output: Some(result),
                usage: None,
            },
        )],
    )
    .await
    .unwrap();
    let got = q.claim(&p, "w1", &[JobKind::Upscale], 10, LEASE, &cpu()).await.unwrap();
    // The step with a resolvable reference runs with the parent's object key as its input...
    assert_eq!(got.jobs.len(), 1);
    assert_eq!(got.jobs[0].lease.id, jobs[1].1);
    let Payload::Upscale(u) = &got.jobs[0].spec.body else {
        panic!("an upscale")
    };
    assert_eq!(u.input, "tenant-a/x/output-0.png");
    // ...the other (no output of that name) fails at once, saying why.
    let odd = q.job(jobs[2].1).await.unwrap();
    assert_eq!(odd.status, JobStatus::Dead);
    let msg = odd.error.unwrap().message;
    assert!(msg.contains("no output named \"poster\""), "{msg}");
}

/// Applies every entry of `from`'s hand-off stream (as the mover would) and empties it.
async fn move_handoffs(q: &QueueClient, from: &Pool) {
    let key = QueueClient::handoff_key(from);
    let entries: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
        .arg(&key)
        .arg("-")
        .arg("+")
        .query_async(&mut q.connection())
        .await
        .unwrap();
    for e in &entries.ids {
        let h = gantry_queue::client::handoff::HandOff::parse(|k| e.get::<String>(k)).unwrap();
        q.apply_handoffs(&h.pool.clone(), &[h]).await.unwrap();
        redis::cmd("XDEL")
            .arg(&key)
            .arg(&e.id)
            .query_async::<()>(&mut q.connection())
            .await
            .unwrap();
    }
}

async fn a_replayed_step_brings_back_the_steps_its_failure_skipped(f: Fixture) {
    let q = f.client().await;
    let (p, other) = (pool("revive"), pool("revive-other"));
    // a -> b -> c (another pool); x and a -> y.
    let jobs = pipeline_jobs(
        &[
            ("a", &p, &[]),
            ("b", &p, &["a"]),
            ("c", &other, &["b"]),
            ("x", &p, &[]),
            ("y", &p, &["a", "x"]),
        ],
        3,
    );
    let id = |name: &str| jobs[["a", "b", "c", "x", "y"].iter().position(|n| *n == name).unwrap()].1;
    enqueue_pipeline(&q, &jobs).await;
    // Both roots fail for good: everything below them is skipped (and refunded).
    let roots = q.claim(&p, "w1", &[JobKind::Noop], 10, LEASE, &cpu()).await.unwrap();
    assert_eq!(roots.jobs.len(), 2);
    for j in &roots.jobs {
        q.fail(&p, &[failure(j, ErrorClass::Permanent)]).await.unwrap();
    }
    move_handoffs(&q, &p).await;
    for n in ["b", "c", "y"] {
        assert_eq!(status_of(&q, id(n)).await, JobStatus::Cancelled, "{n}");
    }
    // Replaying a brings back b, and through b the step in the other pool; y still waits for
    // x's replay.
    q.replay_one(id("a")).await.unwrap();
    move_handoffs(&q, &p).await;
    assert_eq!(status_of(&q, id("b")).await, JobStatus::Waiting);
    assert_eq!(status_of(&q, id("c")).await, JobStatus::Waiting);
    assert_eq!(
        status_of(&q, id("y")).await,
        JobStatus::Cancelled,
        "x has not been replayed"
    );
    let revived = q.job(id("b")).await.unwrap();
    assert!(revived.error.is_none() && revived.history.iter().any(|h| h.event == "revived"));
    // The pipeline runs on from there.
    let a = claim_one(&q, &p).await;
    assert_eq!(a.lease.id, id("a"));
    q.ack(&p, &[(a.lease.clone(), Completion::default())]).await.unwrap();
    let b = claim_one(&q, &p).await;
    assert_eq!(b.lease.id, id("b"));
    q.ack(&p, &[(b.lease.clone(), Completion::default())]).await.unwrap();
    move_handoffs(&q, &p).await;
    assert_eq!(status_of(&q, id("c")).await, JobStatus::Queued);
    q.replay_one(id("x")).await.unwrap();
    assert_eq!(
        status_of(&q, id("y")).await,
        JobStatus::Waiting,
        "a succeeded; it waits for x alone"
    );
    let x = claim_one(&q, &p).await;
    assert_eq!(x.lease.id, id("x"));
    q.ack(&p, &[(x.lease.clone(), Completion::default())]).await.unwrap();
    assert_eq!(status_of(&q, id("y")).await, JobStatus::Queued);
}
