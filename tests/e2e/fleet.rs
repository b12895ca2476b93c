//! The fleet registry with real worker processes: fake GPU inventories are reported as fake, a
//! SIGKILLed worker disappears within three missed heartbeats, a drained one deregisters.

#![allow(clippy::unwrap_used)] // a panic is how a test reports failure

use crate::common;

use std::time::{Duration, Instant};

use common::*;
use gantry_queue::WorkerRecord;
use gantry_testkit::RedisServer;

fn listed(url: &str) -> Vec<WorkerRecord> {
    let o = gantry(url, &["workers", "list", "--pool", "cpu", "--json"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_tracks_live_workers_and_forgets_dead_ones() {
    let redis = RedisServer::start().expect("redis");
    let url = redis.url();
    let logs = tempfile::tempdir().expect("tmp");
    let beat = ["--registry-heartbeat-secs", "0.3"];
    let mut gpu = WorkerProcess::start(
        &url,
        "gpu-box",
        4,
        10.0,
        &[&beat[..], &["--gpus", "fake:2x80GiB+nvenc"]].concat(),
        logs.path(),
    );
    let mut cpu = WorkerProcess::start(
        &url,
        "cpu-box",
        2,
        10.0,
        &[&beat[..], &["--gpus", "none"]].concat(),
        logs.path(),
    );

    eventually("both workers registered", Duration::from_secs(20), || async {
        listed(&url).len() == 2
    })
    .await;
    let ws = listed(&url);
    let g = ws.iter().find(|w| w.id == "gpu-box").unwrap();
    assert_eq!(g.gpu_source, "fake", "a fake inventory says so");
    assert_eq!(g.gpus.len(), 2);
    assert!(
        g.gpus
            .iter()
            .all(|x| x.nvenc && x.memory_total_bytes == 80 << 30 && x.uuid.starts_with("GPU-fake-"))
    );
    // Without provider credentials the worker serves what it can run locally.
    use gantry_queue::JobKind::{CsamHash, Export, Noop, Transcode, Upscale};
    let mut kinds = g.kinds.clone();
    kinds.sort();
    let mut want = vec![Noop, Transcode, Upscale, CsamHash, Export];
    want.sort();
    assert_eq!(kinds, want);
    let c = ws.iter().find(|w| w.id == "cpu-box").unwrap();
    assert_eq!((c.gpu_source.as_str(), c.gpus.len()), ("none", 0));
    let table = String::from_utf8_lossy(&gantry(&url, &["workers", "list"]).stdout).into_owned();
    assert!(table.contains("FAKE") && table.contains("cpu-only"), "{table}");

    // SIGKILL: gone once three heartbeats (0.9 s) are missed.
    gpu.sigkill();
    let killed_at = Instant::now();
    eventually("the dead worker disappears", Duration::from_secs(10), || async {
        listed(&url).iter().all(|w| w.id != "gpu-box")
    })
    .await;
    assert!(
        killed_at.elapsed() < Duration::from_secs(5),
        "took {:?}",
        killed_at.elapsed()
    );
    assert_eq!(listed(&url).len(), 1);

    // SIGTERM: drains and deregisters at once.
    cpu.sigterm();
    assert_eq!(cpu.wait_exit(Duration::from_secs(20)), Some(0));
    assert!(listed(&url).is_empty());
}

#[test]
fn a_bad_gpu_spec_is_refused_with_exit_2() {
    let redis = RedisServer::start().expect("redis");
    let o = gantry(&redis.url(), &["worker", "--gpus", "fake:2x80GB"]);
    assert_eq!(o.status.code(), Some(2), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stderr).contains("bad fake GPU group"));
}

#[test]
fn a_bad_kind_timeout_is_refused_with_exit_2() {
    let redis = RedisServer::start().expect("redis");
    for (flag, says) in [
        ("transcode", "expected KIND=SECONDS"),
        ("transcode=-3", "positive number"),
        ("transcode=1e400", "positive number"),
        ("render=60", "unknown job kind"),
    ] {
        let o = gantry(&redis.url(), &["worker", "--timeout", flag]);
        assert_eq!(
            o.status.code(),
            Some(2),
            "{flag}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        assert!(String::from_utf8_lossy(&o.stderr).contains(says), "{flag}");
    }
}

#[test]
fn gpus_prints_the_inventory_a_worker_would_start_with() {
    let redis = RedisServer::start().expect("redis");
    let o = gantry(
        &redis.url(),
        &["gpus", "--gpus", "fake:1x24GiB+nvenc,1x80GiB", "--json"],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let inv: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(inv["source"], "fake");
    assert_eq!(inv["gpus"][0]["memory_total_bytes"], 24u64 << 30);
    assert_eq!(inv["gpus"][0]["nvenc"]["state"], "declared");
    assert_eq!(inv["gpus"][1]["nvenc"]["state"], "unavailable");
    // This machine (and CI) has no driver: CPU-only, with the reason, and exit 0.
    let o = gantry(&redis.url(), &["gpus", "--gpus", "auto"]);
    assert!(o.status.success());
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.starts_with("CPU-only mode") || out.starts_with("NVML"), "{out}");
}
