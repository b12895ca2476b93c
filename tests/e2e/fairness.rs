//! Tenants share the fleet by weight within a priority: after one tenant's burst of 100,000 jobs,
//! another tenant's 10 jobs finish while nearly all of the burst still waits. Real redis-server,
//! scheduler and workers; jobs go in over HTTP through `gantry-client`.

#![allow(clippy::unwrap_used)] // a panic is how a test reports failure

use crate::common;

use std::time::{Duration, Instant};

use common::*;
use gantry_client::{Client, WaitOptions};
use gantry_queue::JobKind;
use gantry_testkit::RedisServer;
use serde_json::json;

const BURST: usize = 100_000;

fn config() -> String {
    let key = |k: &str| gantry_scheduler::auth::hash_key(k);
    format!(
        r#"
# a test's development configuration: no data keys
require_data_keys = false
[plans.bulk]
jobs_per_second = 1000000
burst = 100000
[tenants.big]
plan = "bulk"
# free work (noop costs 0) still needs a positive balance
initial_credits = 1
api_keys = [{{ sha256 = "{}", scopes = ["jobs:write", "jobs:read"] }}]
[tenants.small]
plan = "bulk"
# free work (noop costs 0) still needs a positive balance
initial_credits = 1
api_keys = [{{ sha256 = "{}", scopes = ["jobs:write", "jobs:read"] }}]
[pools.cpu]
kinds = ["noop"]
"#,
        key("key-big"),
        key("key-small")
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_does_not_starve_a_latecomer() {
    let redis = RedisServer::start().expect("redis");
    let url = redis.url();
    let dir = tempfile::tempdir().unwrap();
    let sched = SchedulerProcess::with_config(&url, &config());
    let base = format!("http://{}", sched.addr);
    let big = Client::new(&base, "key-big").unwrap();
    let small = Client::new(&base, "key-small").unwrap();
    let job = json!({"user": "u", "kind": "noop", "payload": {"sleep_ms": 1}});
    let batch = vec![job.clone(); 1000];
    for _ in 0..BURST / 1000 {
        big.submit_batch(&batch).await.unwrap();
    }
    let late = small.submit_batch(&vec![job; 10]).await.unwrap();
    // The fleet comes up to the whole backlog: the burst first in line, the ten behind it.
    let started = Instant::now();
    let _w = WorkerProcess::start(&url, "w1", 16, 30.0, &["--gpus", "none"], dir.path());
    let wait = WaitOptions {
        initial: Duration::from_millis(5),
        max: Duration::from_millis(20),
        timeout: Duration::from_secs(60),
    };
    for s in &late {
        assert_eq!(small.wait(&s.id, wait).await.unwrap().status, "succeeded");
    }
    let took = started.elapsed();
    let q = client(&url).await;
    let stats = q.stats(&cpu(), &[JobKind::Noop]).await.unwrap();
    let left = stats[0].waiting_total() + stats[0].in_flight;
    eprintln!("the 10 finished in {took:?} with {left} of the {BURST}-job burst still waiting or running");
    // First in, first out would have run all 100,000 first; fair shares leave nearly all of
    // them. (What ran meanwhile depends on how fast this machine polls and works under load:
    // 1,217 once in a full suite run, a few hundred alone.)
    assert!(
        left as f64 > BURST as f64 * 0.95,
        "the latecomer waited for the burst: only {left} of {BURST} left"
    );
}
