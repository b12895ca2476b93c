//! Credits are charged exactly once per job, end to end: real redis-server, the scheduler and
//! workers as processes, driven over HTTP through `gantry-client`. Jobs retry, a worker is
//! SIGKILLed mid-job, an outage dead-letters jobs that an operator then replays, a credit event is
//! delivered twice; the ledger still ends with each job charged once (or refunded) and the
//! balance equal to the initial credits less exactly those charges.

#![allow(clippy::unwrap_used)] // a panic is how a test reports failure

use crate::common;

use std::time::Duration;

use common::*;
use gantry_client::{Client, JobView, WaitOptions};
use gantry_testkit::RedisServer;
use serde_json::{Value, json};

const PRICE: i64 = 10;
const INITIAL: i64 = 100_000;

fn config() -> String {
    format!(
        r#"
# a test's development configuration: no data keys
require_data_keys = false
[plans.big]
jobs_per_second = 1000
burst = 1000
[tenants.a]
plan = "big"
# its noop jobs may say they were not billed (a drill); a tenant without this may not
synthetic_usage = true
initial_credits = {INITIAL}
api_keys = [{{ sha256 = "{}", scopes = ["jobs:write", "jobs:read"] }}]
[prices]
noop = {PRICE}
[pools.cpu]
kinds = ["noop"]
"#,
        gantry_scheduler::auth::hash_key("key-a")
    )
}

fn noop(payload: Value, max_attempts: u32) -> Value {
    json!({"user": "u1", "kind": "noop", "max_attempts": max_attempts, "payload": payload})
}

async fn settled(api: &Client, id: &str) -> JobView {
    let mut last = None;
    for _ in 0..200 {
        let j = api.job(id).await.unwrap();
        let done = j.is_final() && j.credits.as_ref().is_some_and(|c| c.state != "reserved");
        if done {
            return j;
        }
        last = Some(j);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("job {id} never settled: {last:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_job_is_charged_exactly_once() {
    let redis = RedisServer::start().expect("redis");
    let url = redis.url();
    let dir = tempfile::tempdir().unwrap();
    let sched = SchedulerProcess::with_config(&url, &config());
    let api = Client::new(&format!("http://{}", sched.addr), "key-a").unwrap();
    let wait = WaitOptions {
        timeout: Duration::from_secs(60),
        ..Default::default()
    };

    // A slow job is taken by the first worker, which is killed in the middle of it; the second
    // worker picks it up once its lease expires.
    let mut w1 = WorkerProcess::start(&url, "w1", 2, 1.0, &["--gpus", "none"], dir.path());
    let slow = api.submit(&noop(json!({"sleep_ms": 5000}), 3)).await.unwrap();
    let q = client(&url).await;
    let slow_id: gantry_queue::JobId = slow.id.parse().unwrap();
    eventually("slow job running", Duration::from_secs(20), || {
        let q = q.clone();
        async move { status_of(&q, slow_id).await == gantry_queue::JobStatus::Running }
    })
    .await;
    w1.sigkill();
    let _w2 = WorkerProcess::start(&url, "w2", 8, 1.0, &["--gpus", "none"], dir.path());

    // Plain jobs, jobs that fail twice before succeeding, an outage that dead-letters jobs until
    // it ends, a job the provider did not bill, and one cancelled before it runs.
    let outage_ends = now_ms() + 4000;
    let mut jobs = Vec::new();
    jobs.extend((0..20).map(|_| noop(json!({"sleep_ms": 20}), 3)));
    jobs.extend((0..5).map(|_| noop(json!({"fail_attempts": 2}), 3)));
    jobs.extend((0..5).map(|_| noop(json!({"fail_until_unix_ms": outage_ends, "fail_class": "permanent"}), 3)));
    jobs.push(noop(json!({"report_usage": {"billed": false}}), 3));
    let admitted = api.submit_batch(&jobs).await.unwrap();
    assert!(admitted.iter().all(|a| a.credits_reserved == PRICE && !a.duplicate));
    let mut later = noop(json!({}), 3);
    later["delay_ms"] = json!(60_000);
    let cancelled = api.submit(&later).await.unwrap();
    assert_eq!(
        api.cancel(&cancelled.id).await.unwrap(),
        gantry_client::Cancelled::Cancelled
    );

    let ids: Vec<String> = admitted.iter().map(|a| a.id.clone()).collect();
    let (plain, rest) = ids.split_at(20);
    let (retried, rest) = rest.split_at(5);
    let (outage, unbilled) = rest.split_at(5);
    for id in outage {
        let j = settled(&api, id).await;
        assert_eq!(j.status, "dead");
        let c = j.credits.unwrap();
        assert_eq!((c.state.as_str(), c.charged), ("refunded", 0), "{id}");
    }
    // The outage ends; the operator replays the dead letters with the CLI, twice (the second
    // finds nothing).
    tokio::time::sleep(Duration::from_millis(outage_ends.saturating_sub(now_ms()) + 100)).await;
    for _ in 0..2 {
        let o = gantry(&url, &["dlq", "replay", "--all"]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }

    let mut charged = 0;
    for id in plain.iter().chain(retried).chain(outage).chain([&slow.id]) {
        let j = api.wait(id, wait).await.unwrap();
        assert_eq!(j.status, "succeeded", "{j:?}");
        let mut j = settled(&api, id).await;
        // A replayed job's entry reads "refunded" (from its death) until the settler has its
        // success, up to one idle poll later.
        for _ in 0..50 {
            if j.credits.as_ref().is_none_or(|c| c.state != "refunded") {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            j = api.job(id).await.unwrap();
        }
        let c = j.credits.unwrap();
        assert_eq!(
            (c.state.as_str(), c.reserved, c.charged),
            ("charged", PRICE, PRICE),
            "{id}"
        );
        charged += c.charged;
    }
    assert!(api.job(&retried[0]).await.unwrap().attempts == 3);
    assert!(
        api.job(&slow.id).await.unwrap().attempts >= 2,
        "the killed attempt counted"
    );
    for id in unbilled.iter().chain([&cancelled.id]) {
        let c = settled(&api, id).await.credits.unwrap();
        assert_eq!((c.state.as_str(), c.charged), ("refunded", 0), "{id}");
    }

    // At-least-once delivery: the same success event arrives again; nothing moves.
    let balance = || async {
        let mut c = q.connection();
        redis::cmd("GET")
            .arg("gantry:{credits:a}:balance")
            .query_async::<i64>(&mut c)
            .await
            .unwrap()
    };
    eventually("balance settles", Duration::from_secs(10), || async {
        balance().await == INITIAL - charged
    })
    .await;
    for (id, outcome) in [(&plain[0], "succeeded"), (&outage[0], "dead")] {
        let fields = ["id", id, "ten", "a", "out", outcome, "cr", "10", "pr", "", "usage", ""];
        let mut c = q.connection();
        let _: String = redis::cmd("XADD")
            .arg("gantry:{cpu}:credits")
            .arg("*")
            .arg(&fields)
            .query_async(&mut c)
            .await
            .unwrap();
    }
    eventually("the duplicates are consumed", Duration::from_secs(10), || {
        let mut c = q.connection();
        async move {
            redis::cmd("XLEN")
                .arg("gantry:{cpu}:credits")
                .query_async::<u64>(&mut c)
                .await
                .unwrap()
                == 0
        }
    })
    .await;
    assert_eq!(balance().await, INITIAL - charged, "a redelivered event charged twice");
    // The totals the console shows agree: nothing reserved, each charge counted once (in the
    // hourly and daily counters too), the refunded jobs' reservations given back.
    let mut c = q.connection();
    let totals: std::collections::HashMap<String, i64> = redis::cmd("HGETALL")
        .arg("gantry:{credits:a}:totals")
        .query_async(&mut c)
        .await
        .unwrap();
    let refunded = PRICE * (unbilled.len() as i64 + 1);
    assert_eq!(
        (totals.get("reserved"), totals.get("charged"), totals.get("refunded")),
        (Some(&0), Some(&charged), Some(&refunded)),
        "{totals:?}"
    );
    for pattern in ["gantry:{credits:a}:charged:h:*", "gantry:{credits:a}:charged:d:*"] {
        let keys: Vec<String> = redis::cmd("KEYS").arg(pattern).query_async(&mut c).await.unwrap();
        let mut sum = 0;
        for k in keys {
            sum += redis::cmd("GET").arg(&k).query_async::<i64>(&mut c).await.unwrap();
        }
        assert_eq!(sum, charged, "{pattern}");
    }
    assert_eq!(charged, PRICE * 31);
}
