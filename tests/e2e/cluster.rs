//! The fleet on a real 3-master Redis Cluster: worker processes, the fleet registry and the
//! operator CLI all work with a `redis+cluster://` URL (invariant 5: one hash tag per script);
//! key rotation and erasure find every record of a pool on the node that owns its slot.

#![allow(clippy::unwrap_used)] // a panic is how a test reports failure

use crate::common;

use std::time::Duration;

use common::*;
use gantry_queue::seal::Keyring;
use gantry_queue::{GeneratePayload, JobId, JobStatus, NewJob, NoopPayload, Payload, Pool, QueueClient, QueueConfig};
use gantry_testkit::RedisCluster;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_and_cli_run_on_a_cluster() {
    let cluster = RedisCluster::start().expect("cluster");
    let url = cluster.url();
    let logs = tempfile::tempdir().expect("tmp");
    let q = QueueClient::connect(&url, QueueConfig::default()).await.unwrap();
    // Two pools land on different slots (and, most likely, different masters).
    let mut ids: Vec<(Pool, JobId)> = Vec::new();
    for pool in ["cpu", "gpu-80g"] {
        let p = Pool::new(pool).unwrap();
        let jobs = (0..100).map(|_| {
            NewJob::new(
                "t",
                "u",
                Payload::Noop(NoopPayload {
                    sleep_ms: 5,
                    ..Default::default()
                }),
            )
        });
        for e in q.enqueue_batch(&p, jobs.collect()).await.unwrap() {
            ids.push((p.clone(), e.id));
        }
    }
    let beat = ["--registry-heartbeat-secs", "0.3"];
    let _a = WorkerProcess::start_in(&url, "cpu", "c1", 8, 10.0, &beat, logs.path());
    let _b = WorkerProcess::start_in(
        &url,
        "gpu-80g",
        "g1",
        8,
        10.0,
        &[&beat[..], &["--gpus", "fake:1x80GiB"]].concat(),
        logs.path(),
    );
    eventually("all 200 jobs succeeded", Duration::from_secs(60), || async {
        let mut done = 0;
        for (p, id) in &ids {
            if q.job_in(p, *id)
                .await
                .map(|r| r.status == JobStatus::Succeeded)
                .unwrap_or(false)
            {
                done += 1;
            }
        }
        done == ids.len()
    })
    .await;

    let stats = gantry(&url, &["queues", "stats"]);
    let table = String::from_utf8_lossy(&stats.stdout);
    assert!(stats.status.success(), "{}", String::from_utf8_lossy(&stats.stderr));
    let workers = gantry(&url, &["workers", "list", "--pool", "gpu-80g"]);
    assert!(
        String::from_utf8_lossy(&workers.stdout).contains("g1"),
        "{}",
        String::from_utf8_lossy(&workers.stdout)
    );
    let (p, id) = &ids[0];
    let show = gantry(&url, &["jobs", "show", &id.to_string()]);
    assert!(String::from_utf8_lossy(&show.stdout).contains("Succeeded"), "{table}");
    assert!(q.job_in(p, *id).await.unwrap().worker.is_some());

    // Sealed generate jobs in both pools (delayed, so no worker takes them), then a rotation
    // and an erasure: each pool's scan runs on the node that owns the pool's slot.
    let k1 = "k1=AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=";
    let k2 = "k2=AgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgI=";
    let old = QueueClient::connect(&url, QueueConfig::default())
        .await
        .unwrap()
        .with_keys(Keyring::parse(k1).unwrap());
    for pool in ["cpu", "gpu-80g"] {
        let jobs = (0..20).map(|i| {
            let mut j = NewJob::new(
                "t",
                "u-sealed",
                Payload::Generate(GeneratePayload {
                    provider: "openai".into(),
                    model: "gpt-image-1".into(),
                    prompt: format!("sealed prompt {i}"),
                    ..Default::default()
                }),
            );
            j.delay_ms = Some(600_000);
            j
        });
        old.enqueue_batch(&Pool::new(pool).unwrap(), jobs.collect())
            .await
            .unwrap();
    }
    let both = QueueClient::connect(&url, QueueConfig::default())
        .await
        .unwrap()
        .with_keys(Keyring::parse(&format!("{k2},{k1}")).unwrap());
    for pool in ["cpu", "gpu-80g"] {
        let p = Pool::new(pool).unwrap();
        let r = both.reseal(&p).await.unwrap();
        // The 20 sealed generate jobs move to k2, and the 100 no-ops enqueued without keys
        // get their user id sealed.
        assert_eq!(r.resealed, 120, "{pool}: {r:?}");
        assert_eq!(both.reseal(&p).await.unwrap().resealed, 0, "{pool}: idempotent");
        let e = both.erase_user(&p, "t", "u-sealed").await.unwrap();
        assert_eq!((e.deleted, e.cancelled), (20, 20), "{pool}: {e:?}");
    }
}
