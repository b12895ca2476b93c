//! Retention per data class, with real processes: a worker started with a `GANTRY_RETENTION`
//! policy gives the records it finishes that policy's TTL; `gantry retention report` lists
//! per class what is stored, active, due and next; `gantry retention sweep` removes outputs
//! past `outputs_days`, audit entries past `audit_days` and expired moderation index ids (a dry
//! run removes nothing); a bad policy is refused with its reason; and a scheduler sweeps on
//! its own every `retention_sweep_secs`.

#![allow(clippy::unwrap_used)] // a panic is how a test reports failure

use crate::common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, SystemTime};

use common::*;
use gantry_queue::{JobStatus, NewJob, NoopPayload, Payload};
use serde_json::Value;

const POLICY: &str = "job_records_days = 3;outputs_days = 2;audit_days = 10";
const DAY: Duration = Duration::from_secs(86_400);

fn cli(url: &str, policy: &str, args: &[&str]) -> Output {
    Command::new(GANTRY)
        .args(args)
        .env("REDIS_URL", url)
        .env("GANTRY_RETENTION", policy)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// An object in the store's directory, written `age` ago.
fn object(root: &Path, key: &str, age: Duration) -> PathBuf {
    let p = root.join(key);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(&p, b"pixels").unwrap();
    let f = std::fs::File::options().write(true).open(&p).unwrap();
    f.set_modified(SystemTime::now() - age).unwrap();
    p
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_policy_sets_ttls_the_report_lists_them_and_the_sweep_removes_what_is_due() {
    let redis = gantry_testkit::RedisServer::start().unwrap();
    let url = redis.url();
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("outputs");
    let store_arg = store.to_str().unwrap();
    let mut c = redis::Client::open(url.as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    // An audit entry from 20 days ago, written before any other; a moderation index id from
    // 100 days ago whose record has expired.
    let old_ms = (SystemTime::now() - 20 * DAY)
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let _: String = redis::cmd("XADD")
        .arg("gantry:{audit}:log")
        .arg(format!("{old_ms}-0"))
        .arg("entry")
        .arg(r#"{"actor":"cli/old","action":"queue.pause","target":"cpu/noop"}"#)
        .query_async(&mut c)
        .await
        .unwrap();
    let _: () = redis::cmd("ZADD")
        .arg("gantry:{moderation}:index")
        .arg(old_ms - 80 * DAY.as_millis() as u64)
        .arg("gone-event")
        .query_async(&mut c)
        .await
        .unwrap();

    // A worker under the policy finishes one job; another waits, delayed.
    let q = client(&url).await;
    let done = q
        .enqueue(&cpu(), NewJob::new("t", "u", Payload::Noop(NoopPayload::default())))
        .await
        .unwrap()
        .id;
    let mut later = NewJob::new("t", "u", Payload::Noop(NoopPayload::default()));
    later.delay_ms = Some(3_600_000);
    q.enqueue(&cpu(), later).await.unwrap();
    let worker = Command::new(GANTRY)
        .args(["worker", "--redis-url", &url, "--pool", "cpu", "--gpus", "none"])
        .args(["--outputs", store_arg])
        .env("GANTRY_RETENTION", POLICY)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let _worker = KillOnDrop(worker);
    eventually("the job succeeded", Duration::from_secs(30), || async {
        status_of(&q, done).await == JobStatus::Succeeded
    })
    .await;
    let ttl: i64 = redis::cmd("TTL")
        .arg(cpu().job_key(done))
        .query_async(&mut c)
        .await
        .unwrap();
    assert!(
        ttl > 3 * 86_400 - 120 && ttl <= 3 * 86_400,
        "the finished record lives job_records_days: {ttl}"
    );

    // Outputs: one past outputs_days, two within it.
    let stale = object(&store, "jobs/t/u1/01OLD/output.png", 3 * DAY);
    let fresh = [
        object(&store, "jobs/t/u1/01NEW/output.png", Duration::ZERO),
        object(&store, "jobs/t/u2/01MID/output.png", DAY),
    ];

    let o = cli(&url, POLICY, &["retention", "report", "--outputs", store_arg]);
    let report = text(&o);
    assert!(o.status.success(), "{report}");
    let row = |class: &str| -> Vec<String> {
        report
            .lines()
            .find(|l| l.starts_with(class))
            .unwrap_or_else(|| panic!("no {class} row:\n{report}"))
            .split_whitespace()
            .map(str::to_owned)
            .collect()
    };
    // class stored active due-now next...
    assert_eq!(row("job_records")[1..4], ["2", "1", "0"], "{report}");
    assert!(report.contains("3 days after a job ends"), "{report}");
    assert_eq!(row("outputs")[1..5], ["3", "0", "1", "now"], "{report}");
    assert_eq!(row("audit_log")[1..5], ["1", "0", "1", "now"], "{report}");
    assert!(report.contains("2557 days for csam"), "{report}");
    let o = cli(&url, POLICY, &["retention", "report", "--outputs", store_arg, "--json"]);
    let json: Vec<Value> = serde_json::from_slice(&o.stdout).unwrap();
    let classes: Vec<&str> = json.iter().map(|c| c["class"].as_str().unwrap()).collect();
    assert_eq!(
        classes,
        [
            "job_records",
            "dead_letters",
            "idempotency_keys",
            "moderation_events",
            "audit_log",
            "outputs",
            "export_archives"
        ]
    );
    assert_eq!(
        row("export_archives")[1..4],
        ["0", "0", "0"],
        "no export was made: {report}"
    );
    let next = json[0]["next_removal_ms"].as_u64().unwrap();
    assert!(
        next > old_ms + 22 * DAY.as_millis() as u64,
        "the record's TTL is days away"
    );

    let o = cli(
        &url,
        POLICY,
        &["retention", "sweep", "--outputs", store_arg, "--dry-run"],
    );
    assert!(text(&o).contains("would remove: outputs 1"), "{}", text(&o));
    assert!(stale.exists(), "a dry run removes nothing");

    let o = cli(&url, POLICY, &["retention", "sweep", "--outputs", store_arg]);
    let out = text(&o);
    assert!(o.status.success(), "{out}");
    assert!(
        out.contains("removed: outputs 1 (6 bytes), audit entries 1, moderation index ids 1"),
        "{out}"
    );
    assert!(!stale.exists());
    assert!(fresh.iter().all(|p| p.exists()));
    let (_, all) = everything_in(&url).await;
    assert!(!all.contains("cli/old") && !all.contains("gone-event"), "{all}");
    assert!(all.contains("retention.sweep"), "the sweep is audited");

    // A policy that breaks a rule is refused, saying which.
    let o = cli(&url, "outputs_days = 0", &["retention", "report"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("outputs_days must be 1..=36500"), "{}", text(&o));
    let o = cli(&url, "outputs_dayz = 3", &["retention", "report"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));

    // The scheduler sweeps by itself (default policy: 30 days of outputs).
    let ancient = object(&store, "jobs/t/u3/01ANCIENT/output.png", 40 * DAY);
    let toml = format!(
        "outputs = \"{store_arg}\"\nretention_sweep_secs = 1\n{}",
        include_str!("../../scheduler/src/demo.toml")
    );
    let sched = SchedulerProcess::with_config(&url, &toml);
    eventually(
        "the scheduler swept the old output",
        Duration::from_secs(20),
        || async { !ancient.exists() },
    )
    .await;
    eventually("the sweep is counted", Duration::from_secs(5), || async {
        http_get(&sched.metrics_addr, "/metrics")
            .1
            .contains(r#"gantry_retention_removed_total{class="outputs"} 1"#)
    })
    .await;
    assert!(fresh.iter().all(|p| p.exists()));
}

struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
