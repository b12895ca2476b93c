//! The operator console over HTTP, against a real scheduler and redis-server: sign-in with an
//! operator key (a tenant's key refused), the session cookie's flags, the overview, pausing a
//! queue with a reason (audited), a POST without the CSRF token or from another origin refused,
//! a read-only operator who sees but cannot act, sign-out ending the session.

#![allow(clippy::unwrap_used)] // a panic is how a test reports failure

use crate::common;

use common::console::*;
use common::*;
use gantry_testkit::RedisServer;
use serde_json::Value;

#[test]
fn operators_sign_in_see_the_pools_and_pause_a_queue_with_csrf_and_audit() {
    let redis = RedisServer::start().expect("redis");
    let sched = SchedulerProcess::with_config(&redis.url(), &config());
    let addr = sched.addr.as_str();

    // No session: the sign-in page, never data.
    let (s, head, _) = send(addr, "GET", "/console", None, "", None);
    assert_eq!((s, header(&head, "location")), (303, Some("/console/login")));
    let (s, _, page) = send(addr, "GET", "/console/login", None, "", None);
    assert_eq!(s, 200);
    assert!(page.contains("Operator API key"), "{page}");
    // A tenant's key and an unknown key are refused.
    for (key, want) in [("key-acme", 403), ("nope", 401)] {
        let (s, head, body) = send(addr, "POST", "/console/login", None, &format!("key={key}"), None);
        assert_eq!(s, want, "{body}");
        assert!(header(&head, "set-cookie").is_none());
    }
    // A sign-in posted from another site is refused.
    let (s, _, _) = send(
        addr,
        "POST",
        "/console/login",
        None,
        "key=key-ops",
        Some("http://evil.example"),
    );
    assert_eq!(s, 403);

    let ops = sign_in(addr, "key-ops");
    let (s, head, page) = send(addr, "GET", "/console", Some(&ops), "", None);
    assert_eq!(s, 200, "{page}");
    assert!(header(&head, "content-security-policy").is_some_and(|c| c.contains("frame-ancestors 'none'")));
    assert!(
        page.contains("Pool cpu") && page.contains("data-queue=\"cpu/noop\""),
        "{page}"
    );
    assert!(page.contains("ops/key:"), "the operator is named: {page}");
    let csrf = csrf_of(&page);

    // Without the CSRF token, with a wrong one, or from another origin: refused, nothing changes.
    for (form, origin) in [
        ("reason=maintenance".to_owned(), None),
        (format!("reason=maintenance&csrf={}x", csrf), None),
        (format!("reason=maintenance&csrf={csrf}"), Some("http://evil.example")),
    ] {
        let (s, _, _) = send(
            addr,
            "POST",
            "/console/queues/cpu/noop/pause",
            Some(&ops),
            &form,
            origin,
        );
        assert_eq!(s, 403, "{form} {origin:?}");
    }
    assert!(!noop_paused(addr));
    // A reason is required.
    let (s, _, _) = send(
        addr,
        "POST",
        "/console/queues/cpu/noop/pause",
        Some(&ops),
        &format!("csrf={csrf}&reason="),
        None,
    );
    assert_eq!(s, 400);
    // Paused, with the reason in the audit log under the operator's name.
    let (s, head, _) = send(
        addr,
        "POST",
        "/console/queues/cpu/noop/pause",
        Some(&ops),
        &format!("csrf={csrf}&reason=disk+swap+on+node+7"),
        None,
    );
    assert_eq!((s, header(&head, "location")), (303, Some("/console")));
    assert!(noop_paused(addr));
    let (_, _, page) = send(addr, "GET", "/console", Some(&ops), "", None);
    assert!(page.contains("paused") && page.contains("resume cpu/noop"), "{page}");
    let audit = audit_entries(addr);
    let entry = audit
        .iter()
        .find(|e| e["action"] == "console.queue.pause")
        .unwrap_or_else(|| panic!("{audit:#?}"));
    assert_eq!(entry["target"], "cpu/noop");
    assert_eq!(entry["details"]["reason"], "disk swap on node 7");
    assert!(entry["actor"].as_str().unwrap().starts_with("ops/key:"), "{entry}");

    // A read-only operator sees the pools but has no forms, and a forged action is refused.
    let ro = sign_in(addr, "key-ro");
    let (_, _, page) = send(addr, "GET", "/console", Some(&ro), "", None);
    assert!(page.contains("Pool cpu") && page.contains("(read-only)"), "{page}");
    assert!(!page.contains("/console/queues/"), "no action forms: {page}");
    let ro_csrf = csrf_of(&page);
    let (s, _, _) = send(
        addr,
        "POST",
        "/console/queues/cpu/noop/resume",
        Some(&ro),
        &format!("csrf={ro_csrf}&reason=try"),
        None,
    );
    assert_eq!(s, 403);
    assert!(noop_paused(addr), "still paused");

    // Signing out ends the session: the old cookie no longer opens a page.
    let (s, head, _) = send(
        addr,
        "POST",
        "/console/logout",
        Some(&ops),
        &format!("csrf={csrf}"),
        None,
    );
    assert_eq!(s, 303);
    assert!(header(&head, "set-cookie").is_some_and(|c| c.contains("Max-Age=0")));
    let (s, _, _) = send(addr, "GET", "/console", Some(&ops), "", None);
    assert_eq!(s, 303);
}

/// A one-time sign-in link (what the demo prints): it opens a session once; a second use, or a
/// made-up token, gets the sign-in page.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_one_time_link_signs_in_once() {
    let redis = RedisServer::start().expect("redis");
    let sched = SchedulerProcess::with_config(&redis.url(), &config());
    let addr = sched.addr.clone();
    let keys = gantry_scheduler::auth::ApiKeys::from_config(
        &gantry_scheduler::config::SchedulerConfig::from_toml(&config()).unwrap(),
    );
    let operator = keys.by_key("key-ro").unwrap();
    let q = gantry_queue::QueueClient::connect(&redis.url(), gantry_queue::QueueConfig::default())
        .await
        .unwrap();
    let sessions = gantry_scheduler::console::session::Sessions::new(q.connection(), Default::default());
    let token = sessions.one_time(&operator, 60).await.unwrap();
    let path = format!("/console/login/once?token={token}");
    let (s, head, _) = send(&addr, "GET", &path, None, "", None);
    assert_eq!((s, header(&head, "location")), (303, Some("/console")));
    let cookie = header(&head, "set-cookie").unwrap();
    let session = cookie.split(';').next().unwrap().split_once('=').unwrap().1.to_owned();
    let (s, _, page) = send(&addr, "GET", "/console", Some(&session), "", None);
    assert_eq!(s, 200);
    assert!(
        page.contains("(read-only)"),
        "the link's operator, with its scopes: {page}"
    );
    for used in [path.as_str(), "/console/login/once?token=made-up"] {
        let (s, head, _) = send(&addr, "GET", used, None, "", None);
        assert_eq!(s, 401, "{used}");
        assert!(header(&head, "set-cookie").is_none());
    }
}

/// Dead letters: found by filter, one replayed (and it then succeeds), the rest purged after a
/// dry-run count and a confirmation; a read-only operator sees them but cannot act.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_are_found_replayed_and_purged_with_a_count_first() {
    let redis = RedisServer::start().expect("redis");
    let sched = SchedulerProcess::with_config(&redis.url(), &config());
    let addr = sched.addr.clone();
    let logs = tempfile::tempdir().unwrap();
    let _w = WorkerProcess::start_in(&redis.url(), "cpu", "w-cpu", 4, 10.0, &["--gpus", "none"], logs.path());
    // They fail until a moment from now (an outage that ends), permanently: dead at once.
    let until = now_ms() + 1500;
    let job = format!(
        r#"{{"user": "u1", "kind": "noop", "max_attempts": 1, "payload": {{"fail_until_unix_ms": {until}, "fail_class": "permanent"}}}}"#
    );
    let mut ids = Vec::new();
    for _ in 0..3 {
        let (s, _, body) = http_request(
            &addr,
            "POST",
            "/v1/jobs",
            &[
                ("Authorization", "Bearer key-acme"),
                ("Content-Type", "application/json"),
            ],
            job.as_bytes(),
        );
        assert_eq!(s, 201, "{body}");
        ids.push(
            serde_json::from_str::<Value>(&body).unwrap()["id"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    let dead = || dead_letter_count(&addr);
    eventually("three dead letters", std::time::Duration::from_secs(20), || {
        let n = dead();
        async move { n == 3 }
    })
    .await;

    let ops = sign_in(&addr, "key-ops");
    let (s, _, page) = send(
        &addr,
        "GET",
        "/console/dead-letters?class=permanent&pool=cpu",
        Some(&ops),
        "",
        None,
    );
    assert_eq!(s, 200, "{page}");
    assert!(page.contains("<strong>3</strong> dead letters match"), "{page}");
    for id in &ids {
        assert!(page.contains(&format!("data-job=\"{id}\"")), "{id}: {page}");
    }
    let csrf = csrf_of(&page);
    // By tenant: acme's three, none of the operators'.
    for (tenant, want) in [("acme", 3), ("ops", 0)] {
        let (_, _, page) = send(
            &addr,
            "GET",
            &format!("/console/dead-letters?tenant={tenant}"),
            Some(&ops),
            "",
            None,
        );
        assert!(
            page.contains(&format!("<strong>{want}</strong> dead letters match")),
            "{tenant}: {page}"
        );
    }
    // Rows ticked: the confirmation counts the selection.
    let (s, _, confirm) = send(
        &addr,
        "POST",
        "/console/dead-letters/preview",
        Some(&ops),
        &format!("csrf={csrf}&scope=selected&action=replay&ids={}&ids={}", ids[1], ids[2]),
        None,
    );
    assert_eq!(s, 200, "{confirm}");
    assert!(confirm.contains("This would replay the 2 selected"), "{confirm}");
    let (s, _, _) = send(
        &addr,
        "POST",
        "/console/dead-letters/preview",
        Some(&ops),
        &format!("csrf={csrf}&scope=selected&action=replay"),
        None,
    );
    assert_eq!(s, 400, "nothing ticked");
    // The outage is over. Replay one: it runs again, and succeeds.
    tokio::time::sleep(std::time::Duration::from_millis(until.saturating_sub(now_ms()) + 100)).await;
    let (s, head, _) = send(
        &addr,
        "POST",
        &format!("/console/dead-letters/{}/replay", ids[0]),
        Some(&ops),
        &format!("csrf={csrf}"),
        None,
    );
    assert_eq!(s, 303);
    assert!(header(&head, "location").unwrap().contains("done=replay&n=1"));
    eventually("the replayed job succeeded", std::time::Duration::from_secs(20), || {
        let (_, _, body) = http_request(
            &addr,
            "GET",
            &format!("/v1/jobs/{}", ids[0]),
            &[("Authorization", "Bearer key-acme")],
            b"",
        );
        let v: Value = serde_json::from_str(&body).unwrap();
        async move { v["status"] == "succeeded" }
    })
    .await;
    // Purge all matching: the count first, then the confirmed action.
    let filter = "pool=cpu&kind=noop&class=permanent&hours=";
    // A class filter is counted record by record, in the background: the page shows the
    // progress, then the count and the confirmation.
    let (s, head, _) = send(
        &addr,
        "POST",
        "/console/dead-letters/preview",
        Some(&ops),
        &format!("csrf={csrf}&action=purge&{filter}"),
        None,
    );
    assert_eq!(s, 303);
    let counting = header(&head, "location").unwrap().to_owned();
    assert!(counting.starts_with("/console/dead-letters/bulk/"), "{counting}");
    let mut confirm = String::new();
    eventually("the dry-run count", std::time::Duration::from_secs(20), || {
        let (_, _, p) = send(&addr, "GET", &counting, Some(&ops), "", None);
        confirm = p;
        let done = confirm.contains("id=\"would\"");
        async move { done }
    })
    .await;
    assert!(
        confirm.contains("This would purge <strong>2</strong> dead letters"),
        "{confirm}"
    );
    // A time-only filter is one count per queue: the confirmation at once.
    let (s, _, now) = send(
        &addr,
        "POST",
        "/console/dead-letters/preview",
        Some(&ops),
        &format!("csrf={csrf}&action=purge&pool=cpu&kind=noop"),
        None,
    );
    assert_eq!(s, 200, "{now}");
    assert!(
        now.contains("This would purge <strong>2</strong> dead letters"),
        "{now}"
    );
    assert_eq!(dead(), 2, "a preview changes nothing");
    // Without the confirmed count, nothing happens.
    let (s, _, _) = send(
        &addr,
        "POST",
        "/console/dead-letters/act",
        Some(&ops),
        &format!("csrf={csrf}&action=purge&{filter}"),
        None,
    );
    assert_eq!(s, 400);
    let (s, head, _) = send(
        &addr,
        "POST",
        "/console/dead-letters/act",
        Some(&ops),
        &format!("csrf={csrf}&action=purge&expected=2&{filter}"),
        None,
    );
    assert_eq!(s, 303);
    // It runs in the background; its progress page says when it is done, and how many.
    let progress = header(&head, "location").unwrap().to_owned();
    assert!(progress.starts_with("/console/dead-letters/bulk/"), "{progress}");
    let mut page = String::new();
    eventually("the bulk purge is done", std::time::Duration::from_secs(20), || {
        let (_, _, p) = send(&addr, "GET", &progress, Some(&ops), "", None);
        page = p;
        let done = page.contains("data-state=\"done\"");
        async move { done }
    })
    .await;
    assert!(page.contains("purge <strong>2</strong> of the 2 counted"), "{page}");
    assert_eq!(dead(), 0);
    let audit = audit_entries(&addr);
    assert!(
        audit
            .iter()
            .any(|e| e["action"].as_str().unwrap_or_default().contains("purge")
                && e["actor"].as_str().unwrap_or_default().starts_with("ops/key:")),
        "{audit:#?}"
    );

    // Read-only: the page without action forms; a forged preview refused.
    let ro = sign_in(&addr, "key-ro");
    let (_, _, page) = send(&addr, "GET", "/console/dead-letters", Some(&ro), "", None);
    assert!(
        page.contains("Dead letters") && !page.contains("/console/dead-letters/preview"),
        "{page}"
    );
    let ro_csrf = csrf_of(&page);
    let (s, _, _) = send(
        &addr,
        "POST",
        "/console/dead-letters/preview",
        Some(&ro),
        &format!("csrf={ro_csrf}&action=purge"),
        None,
    );
    assert_eq!(s, 403);
}

/// Jobs: found by tenant and status; a dead one's page shows its history and replays it (it
/// succeeds, and its page then shows the result's metadata); a delayed one is cancelled; a
/// read-only operator's job page has no actions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_are_searched_shown_with_their_history_replayed_and_cancelled() {
    let redis = RedisServer::start().expect("redis");
    let sched = SchedulerProcess::with_config(&redis.url(), &config());
    let addr = sched.addr.clone();
    let logs = tempfile::tempdir().unwrap();
    let _w = WorkerProcess::start_in(&redis.url(), "cpu", "w-cpu", 4, 10.0, &["--gpus", "none"], logs.path());
    let until = now_ms() + 1500;
    let submit = |body: String| {
        let (s, _, r) = http_request(
            &addr,
            "POST",
            "/v1/jobs",
            &[
                ("Authorization", "Bearer key-acme"),
                ("Content-Type", "application/json"),
            ],
            body.as_bytes(),
        );
        assert_eq!(s, 201, "{r}");
        serde_json::from_str::<Value>(&r).unwrap()["id"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let dead = submit(format!(
        r#"{{"user": "u7", "kind": "noop", "max_attempts": 1, "payload": {{"fail_until_unix_ms": {until}, "fail_class": "permanent"}}}}"#
    ));
    let later = submit(r#"{"user": "u7", "kind": "noop", "delay_ms": 600000, "payload": {}}"#.to_owned());
    let status_of = |id: &str| {
        let (_, _, body) = http_request(
            &addr,
            "GET",
            &format!("/v1/jobs/{id}"),
            &[("Authorization", "Bearer key-acme")],
            b"",
        );
        serde_json::from_str::<Value>(&body).unwrap()["status"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    };
    eventually("a dead job", std::time::Duration::from_secs(20), || {
        let s = status_of(&dead);
        async move { s == "dead" }
    })
    .await;

    let ops = sign_in(&addr, "key-ops");
    let (s, _, page) = send(
        &addr,
        "GET",
        "/console/jobs?tenant=acme&status=dead",
        Some(&ops),
        "",
        None,
    );
    assert_eq!(s, 200, "{page}");
    assert!(
        page.contains(&format!("data-job=\"{dead}\"")) && !page.contains(&format!("data-job=\"{later}\"")),
        "{page}"
    );
    let (_, _, page) = send(&addr, "GET", "/console/jobs?user=u7", Some(&ops), "", None);
    assert!(
        page.contains(&format!("data-job=\"{later}\"")),
        "a user id across tenants: {page}"
    );
    let (s, _, job) = send(&addr, "GET", &format!("/console/jobs/{dead}"), Some(&ops), "", None);
    assert_eq!(s, 200, "{job}");
    assert!(
        job.contains("id=\"job-status\">dead") && job.contains("permanent"),
        "{job}"
    );
    assert!(
        job.contains("Replay this job") && !job.contains("Cancel this job"),
        "{job}"
    );
    let csrf = csrf_of(&job);
    tokio::time::sleep(std::time::Duration::from_millis(until.saturating_sub(now_ms()) + 100)).await;
    let (s, head, _) = send(
        &addr,
        "POST",
        &format!("/console/jobs/{dead}/replay"),
        Some(&ops),
        &format!("csrf={csrf}"),
        None,
    );
    assert_eq!(
        (s, header(&head, "location")),
        (303, Some(format!("/console/jobs/{dead}").as_str()))
    );
    eventually("the replayed job succeeded", std::time::Duration::from_secs(20), || {
        let s = status_of(&dead);
        async move { s == "succeeded" }
    })
    .await;
    let (_, _, job) = send(&addr, "GET", &format!("/console/jobs/{dead}"), Some(&ops), "", None);
    assert!(
        job.contains("id=\"job-status\">succeeded") && job.contains("replay"),
        "the timeline shows the replay: {job}"
    );
    // The delayed one, cancelled from its page.
    let (_, _, page) = send(&addr, "GET", &format!("/console/jobs/{later}"), Some(&ops), "", None);
    assert!(page.contains("Cancel this job"), "{page}");
    let (s, _, _) = send(
        &addr,
        "POST",
        &format!("/console/jobs/{later}/cancel"),
        Some(&ops),
        &format!("csrf={csrf}"),
        None,
    );
    assert_eq!(s, 303);
    assert_eq!(status_of(&later), "cancelled");
    // Read-only: no actions on a job's page.
    let ro = sign_in(&addr, "key-ro");
    let (_, _, page) = send(&addr, "GET", &format!("/console/jobs/{dead}"), Some(&ro), "", None);
    assert!(page.contains("id=\"job-status\""), "{page}");
    assert!(
        !page.contains("Replay this job") && !page.contains("Cancel this job"),
        "{page}"
    );
}

/// An action the audit log cannot record is reported as failed (it is made, as the API's would
/// be), and no one signs in unaudited.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unauditable_action_is_reported_and_an_unauditable_sign_in_refused() {
    let redis = RedisServer::start().expect("redis");
    let sched = SchedulerProcess::with_config(&redis.url(), &config());
    let addr = sched.addr.clone();
    let ops = sign_in(&addr, "key-ops");
    let (_, _, page) = send(&addr, "GET", "/console", Some(&ops), "", None);
    let csrf = csrf_of(&page);
    // The audit log's stream, made a string: every append fails (WRONGTYPE).
    let client = redis::Client::open(redis.url()).unwrap();
    let mut c = client.get_multiplexed_async_connection().await.unwrap();
    let _: () = redis::cmd("SET")
        .arg("gantry:{audit}:log")
        .arg("not a stream")
        .query_async(&mut c)
        .await
        .unwrap();
    let (s, _, page) = send(
        &addr,
        "POST",
        "/console/queues/cpu/noop/pause",
        Some(&ops),
        &format!("csrf={csrf}&reason=node+7"),
        None,
    );
    assert_eq!(s, 503, "{page}");
    assert!(page.contains("writing the audit log failed"), "{page}");
    assert!(noop_paused(&addr), "the change itself was made");
    let (s, head, page) = send(&addr, "POST", "/console/login", None, "key=key-ops", None);
    assert_eq!(s, 503, "{page}");
    assert!(
        header(&head, "set-cookie").is_none(),
        "no session without its audit entry"
    );
}

/// A session lives in Redis, across restarts; it lasts only while the configuration still
/// grants its key (removed or narrowed since: the session ends at its next request).
#[test]
fn a_session_ends_when_the_configuration_no_longer_grants_its_key() {
    let redis = RedisServer::start().expect("redis");
    let before = SchedulerProcess::with_config(&redis.url(), &config());
    let (ops, ro) = (sign_in(&before.addr, "key-ops"), sign_in(&before.addr, "key-ro"));
    drop(before);
    // The read-only key is gone from the configuration the next scheduler starts with.
    let ro_line = format!(
        "  {{ sha256 = \"{}\", scopes = [\"admin:read\"] }},\n",
        gantry_scheduler::auth::hash_key("key-ro")
    );
    let without_ro = config().replace(&ro_line, "");
    assert_ne!(without_ro, config());
    let after = SchedulerProcess::with_config(&redis.url(), &without_ro);
    let (s, _, _) = send(&after.addr, "GET", "/console", Some(&ops), "", None);
    assert_eq!(s, 200, "the operator's key is still configured");
    let (s, head, _) = send(&after.addr, "GET", "/console", Some(&ro), "", None);
    assert_eq!((s, header(&head, "location")), (303, Some("/console/login")));
}
