//! `gantry worker --pod-deletion-cost` against a stand-in for the Kubernetes API server on
//! loopback: while the worker runs jobs its pod's `controller.kubernetes.io/pod-deletion-cost`
//! is patched up to the number running, and back to 0 when it is idle — a JSON merge patch on
//! its own pod, with the service account's bearer token.

#![allow(clippy::unwrap_used)] // a panic is how a test reports failure

use crate::common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use gantry_client::Client;
use serde_json::{Value, json};

/// One request the stand-in received: method, path, authorization, content type, body.
type Seen = (String, String, String, String, String);

fn api_server() -> (String, Arc<Mutex<Vec<Seen>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
    let log = seen.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { continue };
            let mut r = BufReader::new(s.try_clone().unwrap());
            let mut line = String::new();
            if r.read_line(&mut line).is_err() {
                continue;
            }
            let mut parts = line.split_whitespace();
            let (method, path) = (
                parts.next().unwrap_or("").to_owned(),
                parts.next().unwrap_or("").to_owned(),
            );
            let (mut len, mut auth, mut ctype) = (0usize, String::new(), String::new());
            loop {
                let mut h = String::new();
                if r.read_line(&mut h).is_err() || h.trim().is_empty() {
                    break;
                }
                let (k, v) = h.split_once(':').unwrap_or((&h, ""));
                match k.trim().to_ascii_lowercase().as_str() {
                    "content-length" => len = v.trim().parse().unwrap_or(0),
                    "authorization" => auth = v.trim().to_owned(),
                    "content-type" => ctype = v.trim().to_owned(),
                    _ => {}
                }
            }
            let mut body = vec![0u8; len];
            let _ = r.read_exact(&mut body);
            log.lock()
                .unwrap()
                .push((method, path, auth, ctype, String::from_utf8_lossy(&body).into_owned()));
            let reply = "{}";
            let _ = write!(
                s,
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{reply}",
                reply.len()
            );
        }
    });
    (format!("http://{addr}"), seen)
}

fn costs(seen: &Mutex<Vec<Seen>>) -> Vec<u64> {
    seen.lock()
        .unwrap()
        .iter()
        .filter_map(|(_, _, _, _, body)| {
            let v: Value = serde_json::from_str(body).ok()?;
            v["metadata"]["annotations"]["controller.kubernetes.io/pod-deletion-cost"]
                .as_str()?
                .parse()
                .ok()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_worker_raises_its_pods_deletion_cost_and_lowers_it_when_idle() {
    let (api, seen) = api_server();
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "sa-token-123\n").unwrap();
    let f = fleet_with(
        1,
        4,
        &[],
        &[
            "--pod-deletion-cost",
            "--pod-name",
            "gantry-worker-cpu-7d9f",
            "--pod-namespace",
            "media",
            "--kube-api",
            &api,
            "--kube-token-file",
            token.to_str().unwrap(),
            "--registry-heartbeat-secs",
            "0.2",
        ],
    );
    let studio = Client::new(&format!("http://{}", f.sched.addr), "demo-studio-key").unwrap();
    // Idle at start: 0.
    let deadline = Instant::now() + Duration::from_secs(10);
    while costs(&seen).is_empty() {
        assert!(Instant::now() < deadline, "no patch while idle");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(costs(&seen), [0]);
    let jobs: Vec<Value> = (0..4)
        .map(|_| json!({"user": "u-1", "kind": "noop", "payload": {"sleep_ms": 2000}}))
        .collect();
    let admitted = studio.submit_batch(&jobs).await.unwrap();
    for a in &admitted {
        assert_eq!(settled(&studio, &a.id).await.status, "succeeded");
    }
    tokio::time::sleep(Duration::from_millis(800)).await;
    let c = costs(&seen);
    assert!(
        c.iter().any(|&n| n >= 2),
        "busy: the cost rose with the jobs running: {c:?}"
    );
    assert_eq!(c.last(), Some(&0), "idle again: {c:?}");
    assert!(c.windows(2).all(|w| w[0] != w[1]), "patched only on change: {c:?}");
    for (method, path, auth, ctype, _) in seen.lock().unwrap().iter() {
        assert_eq!(method, "PATCH");
        assert_eq!(path, "/api/v1/namespaces/media/pods/gantry-worker-cpu-7d9f");
        assert_eq!(auth, "Bearer sa-token-123");
        assert_eq!(ctype, "application/merge-patch+json");
    }
}

#[test]
fn without_the_pods_name_the_worker_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "t").unwrap();
    let o = gantry(
        "redis://127.0.0.1:1",
        &[
            "worker",
            "--pod-deletion-cost",
            "--pod-namespace",
            "media",
            "--kube-token-file",
            token.to_str().unwrap(),
        ],
    );
    assert_eq!(o.status.code(), Some(2), "{o:?}");
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("POD_NAME is not set"),
        "{o:?}"
    );
}
