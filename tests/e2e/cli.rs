//! The operator CLI against a real redis-server: happy paths, and typed errors for bad input.

#![allow(clippy::unwrap_used)] // a panic is how a test reports failure

use crate::common;

use std::time::Duration;

use common::*;
use gantry_testkit::RedisServer;

fn stdout(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}
fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[track_caller]
fn assert_refused(o: &std::process::Output, needle: &str) {
    assert_eq!(
        o.status.code(),
        Some(2),
        "exit 2 for refused input; stderr: {}",
        stderr(o)
    );
    assert!(
        stderr(o).contains(needle),
        "stderr {:?} should mention {needle:?}",
        stderr(o)
    );
    assert!(!stderr(o).contains("panicked"), "no panic: {}", stderr(o));
}

#[test]
fn bad_input_gets_clear_typed_errors_and_writes_nothing() {
    let redis = RedisServer::start().expect("redis");
    let url = redis.url();
    assert_refused(&gantry(&url, &["jobs", "enqueue", "{not json"]), "malformed job JSON");
    assert_refused(
        &gantry(
            &url,
            &[
                "jobs",
                "enqueue",
                r#"{"tenant":"t","user":"u","kind":"mine","payload":{}}"#,
            ],
        ),
        "unknown job kind \"mine\"",
    );
    let huge = format!(
        r#"{{"tenant":"t","user":"u","kind":"generate","payload":{{"provider":"p","model":"m","prompt":"{}"}}}}"#,
        "x".repeat(300_000)
    );
    assert_refused(&gantry_stdin(&url, &["jobs", "enqueue", "-"], &huge), "limit is 262144");
    let far = r#"{"tenant":"t","user":"u","kind":"noop","payload":{},"delay_ms":99999999999999}"#;
    assert_refused(&gantry(&url, &["jobs", "enqueue", far]), "exceeds the maximum");
    assert_refused(
        &gantry(
            &url,
            &[
                "jobs",
                "enqueue",
                "--pool",
                "GPU!",
                r#"{"tenant":"t","user":"u","kind":"noop","payload":{}}"#,
            ],
        ),
        "invalid pool name",
    );
    assert_refused(&gantry(&url, &["jobs", "show", "nope"]), "invalid job id");
    assert_refused(
        &gantry(&url, &["dlq", "replay", "01JAAAAAAAAAAAAAAAAAAAAAAA"]),
        "not found",
    );
    assert_refused(
        &gantry(&url, &["dlq", "list", "--class", "weird"]),
        "unknown error class",
    );
    // Nothing was written by any refused command.
    assert_eq!(redis.cli(&["DBSIZE"]).expect("cli").trim(), "0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enqueue_show_cancel_stats_and_dlq_round_trip() {
    let redis = RedisServer::start().expect("redis");
    let url = redis.url();
    let logs = tempfile::tempdir().expect("tmp");

    let o = gantry(
        &url,
        &[
            "jobs",
            "enqueue",
            r#"{"tenant":"t","user":"u","kind":"noop","payload":{},"delay_ms":600000}"#,
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let delayed = stdout(&o).trim().to_owned();
    let o = gantry(&url, &["queues", "stats"]);
    assert!(stdout(&o).contains("cpu/noop"), "{}", stdout(&o));
    let o = gantry(&url, &["jobs", "cancel", &delayed]);
    assert!(stdout(&o).contains("cancelled"), "{}", stderr(&o));
    assert_refused(&gantry(&url, &["jobs", "cancel", &delayed]), "already cancelled");

    // Three jobs that fail permanently land in the dead-letter queue; replay them in bulk.
    let batch = r#"[{"tenant":"t","user":"u","kind":"noop","payload":{"fail_attempts":1,"fail_class":"permanent"}},
                    {"tenant":"t","user":"u","kind":"noop","payload":{"fail_attempts":1,"fail_class":"permanent"}},
                    {"tenant":"t","user":"u","kind":"noop","payload":{"fail_attempts":1,"fail_class":"permanent"}}]"#;
    let o = gantry(&url, &["jobs", "enqueue", batch]);
    assert_eq!(stdout(&o).lines().count(), 3, "{}", stderr(&o));
    let first = stdout(&o).lines().next().unwrap_or_default().to_owned();
    let q = client(&url).await;
    let fail_them = |worker: &'static str| {
        let (url, q, logs) = (&url, &q, logs.path());
        async move {
            let w = WorkerProcess::start(url, worker, 4, 10.0, &[], logs);
            eventually("3 dead letters", Duration::from_secs(20), || async {
                q.stats(&cpu(), &[gantry_queue::JobKind::Noop])
                    .await
                    .map(|s| s[0].dead == 3)
                    .unwrap_or(false)
            })
            .await;
            drop(w);
        }
    };
    fail_them("w").await;
    let o = gantry(&url, &["jobs", "show", &first]);
    assert!(
        stdout(&o).contains("Dead") && stdout(&o).contains("permanent"),
        "{}",
        stdout(&o)
    );
    // Search: the three dead jobs (and the cancelled one), newest first, a page at a time.
    let o = gantry(&url, &["jobs", "list", "--tenant", "t", "--status", "dead", "--json"]);
    let dead: Vec<serde_json::Value> = stdout(&o).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(dead.len(), 3, "{}{}", stdout(&o), stderr(&o));
    assert!(
        dead.iter()
            .all(|j| j["status"] == "dead" && j["error"]["class"] == "permanent")
    );
    assert_eq!(
        dead[2]["id"].as_str(),
        Some(first.as_str()),
        "the first enqueued is listed last"
    );
    let o = gantry(&url, &["jobs", "list", "--since", "1h", "--limit", "2"]);
    assert_eq!(stdout(&o).lines().count(), 3, "a header and two jobs: {}", stdout(&o));
    // It says how to go on: the cursor, with the age resolved to the time it meant.
    let next = stderr(&o).trim().strip_prefix("next: ").unwrap_or_default().to_owned();
    let mut args = vec!["jobs", "list"];
    args.extend(next.split(' '));
    assert_eq!(args.len(), 6, "{next}");
    let cursor = args[5].to_owned();
    let o = gantry(&url, &args);
    assert!(
        stdout(&o).contains(&delayed) && stdout(&o).contains("cancelled"),
        "{}{}",
        stdout(&o),
        stderr(&o)
    );
    assert_refused(&gantry(&url, &["jobs", "list", "--cursor", &cursor]), "no such page");
    assert_refused(
        &gantry(&url, &["jobs", "list", "--user", "u"]),
        "needs the user's tenant",
    );
    let o = gantry(
        &url,
        &["dlq", "list", "--pool", "cpu", "--kind", "noop", "--class", "permanent"],
    );
    assert_eq!(stdout(&o).lines().count(), 3, "{}", stdout(&o));
    let o = gantry(&url, &["dlq", "replay", "--all", "--class", "permanent", "--dry-run"]);
    assert!(stdout(&o).contains("would replay 3"), "{}", stdout(&o));
    let o = gantry(&url, &["dlq", "replay", "--all", "--since", "1h"]);
    assert!(stdout(&o).contains("replayed 3"), "{} {}", stdout(&o), stderr(&o));
    let o = gantry(&url, &["dlq", "replay", "--all"]);
    assert!(stdout(&o).contains("replayed 0"), "never twice: {}", stdout(&o));
    let s = &q.stats(&cpu(), &[gantry_queue::JobKind::Noop]).await.unwrap()[0];
    assert_eq!((s.waiting_total(), s.dead), (3, 0));

    // They fail again; this time the operator purges: one by id, then the rest.
    fail_them("w2").await;
    let o = gantry(&url, &["dlq", "purge", &first, "--dry-run"]);
    assert!(stdout(&o).contains("would purge"), "{}", stdout(&o));
    let o = gantry(&url, &["dlq", "purge", &first]);
    assert!(stdout(&o).contains("purged"), "{} {}", stdout(&o), stderr(&o));
    assert_refused(&gantry(&url, &["jobs", "show", &first]), "not found");
    let o = gantry(&url, &["dlq", "purge", "--all", "--dry-run"]);
    assert!(stdout(&o).contains("would purge 2"), "{}", stdout(&o));
    let o = gantry(&url, &["dlq", "purge", "--all", "--class", "permanent"]);
    assert!(stdout(&o).contains("purged 2"), "{} {}", stdout(&o), stderr(&o));
    let s = &q.stats(&cpu(), &[gantry_queue::JobKind::Noop]).await.unwrap()[0];
    assert_eq!((s.waiting_total(), s.dead), (0, 0));
    // Every change above is in the audit log, with who ran it.
    let (_, all) = everything_in(&url).await;
    for action in ["dead_letters.replay", "dead_letters.purge", "cli/"] {
        assert!(all.contains(action), "{action} not audited");
    }
}
