//! Encryption at rest: a scheduler and a worker sharing data keys (`GANTRY_DATA_KEYS`) run
//! generate jobs whose prompt, negative prompt and reference image carry a canary — one succeeds,
//! one dead-letters, one under an idempotency key. Afterwards every value of every Redis key is
//! read and none holds the canary (the stored specs hold an AES-256-GCM-SIV envelope instead); the
//! processes' logs (at debug level) and both `/metrics` outputs hold it nowhere either. A worker
//! without the keys cannot read the jobs and says why.

#![allow(clippy::unwrap_used)] // a panic is how a test reports failure

use crate::common;

use std::io::BufRead;
use std::process::{Child, Command, Stdio};

use base64::Engine as _;
use common::*;
use gantry_client::Client;
use serde_json::json;

const CANARY: &str = "canary-7f3a9c";

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn(args: &[&str], keys: &str, log: &std::path::Path) -> (Proc, Option<String>) {
    let mut child = Command::new(GANTRY)
        .args(args)
        .env("GANTRY_DATA_KEYS", keys)
        .env("RUST_LOG", "debug")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap();
    let mut line = String::new();
    let out = child.stdout.take().unwrap();
    let addr = if args[0] == "scheduler" {
        std::io::BufReader::new(out).read_line(&mut line).unwrap();
        line.trim().strip_prefix("listening on http://").map(str::to_owned)
    } else {
        None
    };
    (Proc(child), addr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_prompt_reaches_redis_logs_or_metrics_in_plain_text() {
    let redis = gantry_testkit::RedisServer::start().unwrap();
    let url = redis.url();
    let mock = MockProvidersProcess::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let key = base64::engine::general_purpose::STANDARD.encode([7u8; 32]);
    let keys = format!("k1={key}");
    let sched_metrics = format!("127.0.0.1:{}", gantry_testkit::free_port());
    let (_sched, addr) = spawn(
        &[
            "scheduler",
            "--dev",
            "--redis-url",
            &url,
            "--listen",
            "127.0.0.1:0",
            "--metrics-listen",
            &sched_metrics,
        ],
        &keys,
        &dir.path().join("scheduler.log"),
    );
    let addr = addr.unwrap();
    let metrics = format!("127.0.0.1:{}", gantry_testkit::free_port());
    let outputs = dir.path().join("outputs");
    let (_worker, _) = spawn(
        &[
            "worker",
            "--redis-url",
            &url,
            "--pool",
            "cpu",
            "--gpus",
            "none",
            "--mock-providers",
            &mock.url(),
            "--outputs",
            outputs.to_str().unwrap(),
            "--metrics-addr",
            &metrics,
            "--allow-reference-addr",
            &mock.addr,
        ],
        &keys,
        &dir.path().join("worker.log"),
    );
    let api = Client::new(&format!("http://{addr}"), "demo-studio-key").unwrap();
    // A webhook's signing secret is sealed at rest like a prompt.
    let hook = api.create_webhook("https://hooks.invalid/gantry", &[]).await.unwrap();
    let extra = json!({"negative_prompt": format!("no {CANARY} blur"),
                       "reference_images": [format!("http://{}/_mock/refs/{CANARY}.png", mock.addr)]});
    let ok = generate(
        "openai",
        "gpt-image-1",
        &["US"],
        &format!("{CANARY} a lighthouse"),
        extra.clone(),
    );
    let mut dead = generate(
        "openai",
        "gpt-image-1",
        &["US"],
        &format!("{CANARY} [mock:fail]"),
        extra,
    );
    dead["max_attempts"] = 1.into();
    let a = api.submit(&ok).await.unwrap();
    let b = api.submit(&dead).await.unwrap();
    let c = api.submit_idempotent(&ok, "order-1").await.unwrap();
    for (id, want) in [(&a.id, "succeeded"), (&b.id, "dead"), (&c.id, "succeeded")] {
        assert_eq!(settled(&api, id).await.status, want, "{id}");
    }

    // The output is sealed in the store: its own data key, wrapped by the ring's.
    let result = api.job(&a.id).await.unwrap().result.unwrap();
    let object_key = result["object_key"].as_str().unwrap().to_owned();
    let raw = std::fs::read(outputs.join(&object_key)).unwrap();
    assert!(raw.starts_with(b"GOE1"), "the output is sealed at rest");
    assert!(
        !raw.windows(8).any(|w| w == b"\x89PNG\r\n\x1a\n"),
        "no PNG in the store"
    );
    assert!(
        outputs.join("keys").join(&object_key).exists(),
        "its wrapped data key beside it"
    );
    let keyless_store = gantry_worker::outputs::OutputStore::open(outputs.to_str().unwrap()).unwrap();
    assert!(
        keyless_store.get(&object_key).await.is_err(),
        "unreadable without the keys"
    );

    let (n, all) = everything_in(&url).await;
    assert!(n > 10, "{n} keys");
    assert!(!all.contains(CANARY), "the canary is in Redis:\n{all}");
    assert!(all.contains("gk2:k1:"), "sealed envelopes (AES-256-GCM-SIV) are stored");
    assert!(
        !all.contains(&hook.secret),
        "a webhook secret is in Redis in plain text"
    );
    assert!(all.contains("gkt1:k1:"), "the webhook secret is sealed");
    let (s, _, body) = http_request(
        &addr,
        "GET",
        &format!("/v1/webhooks/{}", hook.id),
        &[("Authorization", "Bearer demo-studio-key")],
        b"",
    );
    assert_eq!(s, 200, "the sealed secret opens: {body}");
    // The platform's user id is sealed with them (records find the user by its digest).
    assert!(!all.contains("u-gen"), "the user id is in Redis in plain text:\n{all}");
    for log in ["scheduler.log", "worker.log"] {
        let text = std::fs::read_to_string(dir.path().join(log)).unwrap();
        assert!(text.contains("DEBUG") || text.contains("INFO"), "{log} is empty");
        assert!(!text.contains(CANARY), "the canary is in {log}");
        assert!(!text.contains(&hook.secret), "the webhook secret is in {log}");
    }
    for target in [sched_metrics.as_str(), metrics.as_str()] {
        let (status, text) = http_get(target, "/metrics");
        assert_eq!(status, 200);
        assert!(!text.contains(CANARY), "the canary is in {target}/metrics");
    }

    // Rotation: a new key first, the old one still listed; every record moves to the new key,
    // after which the new key alone reads them.
    let new_key = base64::engine::general_purpose::STANDARD.encode([9u8; 32]);
    let both = format!("k2={new_key},k1={key}");
    let cli = |keys: &str, args: &[&str]| {
        Command::new(GANTRY)
            .args(args)
            .env("GANTRY_DATA_KEYS", keys)
            .env("REDIS_URL", &url)
            .env("RUST_LOG", "warn")
            .output()
            .unwrap()
    };
    let o = cli(&both, &["keys", "rotate", "--outputs", outputs.to_str().unwrap()]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{out}{}", String::from_utf8_lossy(&o.stderr));
    assert!(out.contains("cpu: ") && out.contains(" 3 resealed with k2"), "{out}");
    // The outputs' data keys re-wrapped; their content untouched, and opened by the new key alone.
    assert!(
        out.contains("data keys re-wrapped with k2 (content untouched)"),
        "{out}"
    );
    assert_eq!(
        std::fs::read(outputs.join(&object_key)).unwrap(),
        raw,
        "no content re-encrypted"
    );
    let only_new_store = gantry_worker::outputs::OutputStore::open(outputs.to_str().unwrap())
        .unwrap()
        .with_keys(Some(
            gantry_queue::seal::Keyring::parse(&format!("k2={new_key}")).unwrap(),
        ));
    let opened = only_new_store.get(&object_key).await.unwrap();
    assert_eq!(
        gantry_worker::outputs::sha256_hex(&opened),
        result["sha256"].as_str().unwrap(),
        "the new key alone opens the output"
    );
    let (_, all) = everything_in(&url).await;
    assert!(
        all.contains("gk2:k2:") && !all.contains("gk2:k1:"),
        "every envelope moved to k2"
    );
    assert!(all.contains("keys.rotate"), "the rotation is in the audit log");
    let again = cli(&both, &["keys", "rotate"]);
    assert!(
        String::from_utf8_lossy(&again.stdout).contains(" 0 resealed"),
        "idempotent"
    );
    let only_new = format!("k2={new_key}");
    assert!(cli(&only_new, &["jobs", "show", &a.id]).status.success());
    let old_only = cli(&keys, &["jobs", "show", &a.id]);
    assert!(!old_only.status.success());
    assert!(
        String::from_utf8_lossy(&old_only.stderr).contains("sealed with key \"k2\""),
        "{old_only:?}"
    );

    // A worker without the keys cannot read a sealed job, and says so. (The keyed worker stops
    // first, so it cannot take the job.)
    drop(_worker);
    let d = api
        .submit(&generate("openai", "gpt-image-1", &["US"], CANARY, json!({})))
        .await
        .unwrap();
    let keyless = Command::new(GANTRY)
        .args(["worker", "--redis-url", &url, "--pool", "cpu", "--gpus", "none"])
        .args(["--mock-providers", &mock.url(), "--outputs", outputs.to_str().unwrap()])
        .env_remove("GANTRY_DATA_KEYS")
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.path().join("keyless.log")).unwrap())
        .spawn()
        .unwrap();
    let _keyless = Proc(keyless);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let j = api.job(&d.id).await.unwrap();
        if let Some(e) = &j.error {
            assert!(e["message"].as_str().unwrap().contains("no data keys"), "{j:?}");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{j:?}");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

#[test]
fn a_production_scheduler_refuses_to_start_without_data_keys() {
    let redis = gantry_testkit::RedisServer::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    // The embedded configuration without its development line is a production one.
    let prod = include_str!("../../scheduler/src/demo.toml").replace("require_data_keys = false", "");
    let path = dir.path().join("prod.toml");
    std::fs::write(&path, prod).unwrap();
    let o = Command::new(GANTRY)
        .args([
            "scheduler",
            "--redis-url",
            &redis.url(),
            "--listen",
            "127.0.0.1:0",
            "--metrics-listen",
            "127.0.0.1:0",
            "--config",
        ])
        .arg(&path)
        .env_remove("GANTRY_DATA_KEYS")
        .env_remove("GANTRY_DATA_KEYS_FILE")
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "started without keys: {err}");
    assert!(err.contains("no data keys: set GANTRY_DATA_KEYS"), "{err}");
    // With a key it starts.
    let key = base64::engine::general_purpose::STANDARD.encode([3u8; 32]);
    let (_s, addr) = spawn(
        &[
            "scheduler",
            "--redis-url",
            &redis.url(),
            "--listen",
            "127.0.0.1:0",
            "--metrics-listen",
            "127.0.0.1:0",
            "--config",
            path.to_str().unwrap(),
        ],
        &format!("k1={key}"),
        &dir.path().join("scheduler.log"),
    );
    assert!(addr.is_some_and(|a| a.starts_with("127.0.0.1:")));
}
