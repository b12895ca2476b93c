//! What a worker logs about a job: the job's span fields (id, kind, tenant, pool, attempt) and
//! the failure class and message, never its payload; plain text when not on a terminal.

#![allow(clippy::unwrap_used)] // a panic is how a test reports failure

use crate::common;

use std::time::Duration;

use common::*;
use gantry_queue::{ErrorClass, JobStatus, NewJob, NoopPayload, Payload};
use gantry_testkit::RedisServer;

/// Runs one no-op job that fails permanently (its payload holds 1357, its user is `user-7`)
/// on a worker started with `extra` flags, and returns the job's id and the worker's log.
async fn failing_job_logged(extra: &[&str]) -> (gantry_queue::JobId, String) {
    let redis = RedisServer::start().expect("redis");
    let logs = tempfile::tempdir().expect("tmp");
    let q = client(&redis.url()).await;
    let job = NewJob {
        max_attempts: Some(1),
        ..NewJob::new(
            "studio-42",
            "user-7",
            Payload::Noop(NoopPayload {
                sleep_ms: 1357,
                fail_attempts: 1,
                fail_class: Some(ErrorClass::Permanent),
                ..Default::default()
            }),
        )
    };
    let id = q.enqueue(&cpu(), job).await.unwrap().id;
    let w = WorkerProcess::start(&redis.url(), "logger", 1, 30.0, extra, logs.path());
    eventually("dead-lettered", Duration::from_secs(30), || async {
        status_of(&q, id).await == JobStatus::Dead
    })
    .await;
    drop(w);
    (id, std::fs::read_to_string(logs.path().join("logger.log")).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_attempts_are_logged_with_the_job_span_and_no_payload() {
    let (id, log) = failing_job_logged(&[]).await;
    let line = log
        .lines()
        .find(|l| l.contains("attempt failed"))
        .unwrap_or_else(|| panic!("no failure line in\n{log}"));
    let job_id = format!("job_id={id}");
    for needle in [
        job_id.as_str(),
        "kind=noop",
        "tenant=studio-42",
        "pool=cpu",
        "attempt=1",
        "class=\"permanent\"",
    ] {
        assert!(line.contains(needle), "{needle} missing from {line}");
    }
    assert!(
        !log.contains("user-7") && !has_number(&log, "1357"),
        "no payload or user id in the log:\n{log}"
    );
    assert!(!log.contains('\u{1b}'), "no ANSI escapes in a log file");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_are_one_object_per_line_with_the_job_span_and_no_payload() {
    let (id, log) = failing_job_logged(&["--log-format", "json"]).await;
    let lines: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    assert!(lines.len() >= 2, "{log}");
    for l in &lines {
        assert!(
            l["timestamp"].is_string() && l["level"].is_string() && l["message"].is_string(),
            "{l}"
        );
    }
    let failed = lines
        .iter()
        .find(|l| l["message"] == "attempt failed")
        .unwrap_or_else(|| panic!("no failure line in\n{log}"));
    assert_eq!(failed["class"], "permanent", "{failed}");
    // The job's span, with its fields, for a log pipeline to index on.
    let span = &failed["span"];
    assert_eq!(span["job_id"], id.to_string(), "{failed}");
    assert_eq!(
        (span["kind"].as_str(), span["tenant"].as_str()),
        (Some("noop"), Some("studio-42"))
    );
    assert!(failed["spans"].as_array().is_some_and(|s| !s.is_empty()), "{failed}");
    assert!(
        !log.contains("user-7") && !has_number(&log, "1357"),
        "no payload or user id in the log:\n{log}"
    );
}

/// Whether `n` appears in `text` as a number of its own (not inside a timestamp's digits, as
/// `.801357Z` holds `1357`).
fn has_number(text: &str, n: &str) -> bool {
    text.match_indices(n).any(|(i, _)| {
        let before = text[..i].chars().next_back();
        let after = text[i + n.len()..].chars().next();
        !before.is_some_and(|c| c.is_ascii_digit()) && !after.is_some_and(|c| c.is_ascii_digit())
    })
}
