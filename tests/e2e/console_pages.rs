//! The console's other pages over HTTP, against a real scheduler, worker and redis-server:
//! workers with their GPUs; tenants' credits and a top-up with a reason; trust and safety
//! (publish a hash list file, remove it with a confirmation, block and unblock a user with a
//! reason); the audit log showing each of those with the operator's identity; a pipeline
//! step's page drawing its pipeline as a graph. The read-only operator sees and cannot act.

use crate::common;

use common::console::*;
use common::*;
use gantry_testkit::RedisServer;
use serde_json::{Value, json};

fn api(addr: &str, method: &str, path: &str, key: &str, body: &Value) -> (u16, Value) {
    let auth = format!("Bearer {key}");
    let body = if body.is_null() {
        String::new()
    } else {
        body.to_string()
    };
    let (s, _, text) = http_request(
        addr,
        method,
        path,
        &[("Authorization", &auth), ("Content-Type", "application/json")],
        body.as_bytes(),
    );
    (s, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// A multipart form as a browser sends one: `fields` then one file.
fn multipart(fields: &[(&str, &str)], file_field: &str, file: &str) -> (String, Vec<u8>) {
    let boundary = "----gantry-test-7d1f";
    let mut body = String::new();
    for (k, v) in fields {
        body.push_str(&format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"{k}\"\r\n\r\n{v}\r\n"
        ));
    }
    body.push_str(&format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"{file_field}\"; filename=\"list.txt\"\r\nContent-Type: text/plain\r\n\r\n{file}\r\n--{boundary}--\r\n"
    ));
    (format!("multipart/form-data; boundary={boundary}"), body.into_bytes())
}

fn upload(addr: &str, cookie: &str, fields: &[(&str, &str)], file: &str) -> (u16, String) {
    let (ctype, body) = multipart(fields, "file", file);
    let cookie = format!("gantry_console={cookie}");
    let origin = format!("http://{addr}");
    let (s, _, page) = http_request(
        addr,
        "POST",
        "/console/safety/hashlists",
        &[("Content-Type", &ctype), ("Cookie", &cookie), ("Origin", &origin)],
        &body,
    );
    (s, page)
}

fn audit_has(addr: &str, cookie: &str, action: &str, actor: &str) -> bool {
    let (_, _, page) = send(
        addr,
        "GET",
        &format!("/console/audit?action={action}"),
        Some(cookie),
        "",
        None,
    );
    page.contains(&format!("data-action=\"{action}\"")) && page.contains(actor)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_tenants_and_the_audit_log() {
    let redis = RedisServer::start().expect("redis");
    let sched = SchedulerProcess::with_config(&redis.url(), &config());
    let addr = sched.addr.clone();
    let logs = tempfile::tempdir().unwrap();
    let _w = WorkerProcess::start_in(
        &redis.url(),
        "cpu",
        "w-gpu-1",
        2,
        10.0,
        &["--gpus", "fake:1x24GiB+nvenc", "--registry-heartbeat-secs", "0.5"],
        logs.path(),
    );
    let ops = sign_in(&addr, "key-ops");

    // Workers: the worker, its GPU and what is reserved on it.
    let mut page = String::new();
    eventually(
        "the worker on the workers page",
        std::time::Duration::from_secs(15),
        || {
            let (_, _, p) = send(&addr, "GET", "/console/workers", Some(&ops), "", None);
            page = p;
            let seen = page.contains("data-worker=\"w-gpu-1\"");
            async move { seen }
        },
    )
    .await;
    assert!(
        page.contains("24.0 GiB total") && page.contains("reserved by Gantry") && page.contains("NVENC yes"),
        "{page}"
    );
    let (s, _, _) = send(&addr, "GET", "/console/workers?pool=nope", Some(&ops), "", None);
    assert_eq!(s, 404);

    // Tenants: a job's credits count, then a top-up with a reason.
    let (s, job) = api(
        &addr,
        "POST",
        "/v1/jobs",
        "key-acme",
        &json!({"user": "u1", "kind": "noop", "payload": {}}),
    );
    assert_eq!(s, 201, "{job}");
    let (_, credits) = api(&addr, "GET", "/v1/credits", "key-acme", &Value::Null);
    let before = credits["balance"].as_i64().unwrap();
    let (s, _, list) = send(&addr, "GET", "/console/tenants", Some(&ops), "", None);
    assert_eq!(s, 200, "{list}");
    assert!(
        list.contains("data-tenant=\"acme\"") && list.contains("of 1000 now"),
        "{list}"
    );
    let (s, _, page) = send(&addr, "GET", "/console/tenants/acme", Some(&ops), "", None);
    assert_eq!(s, 200, "{page}");
    assert!(
        page.contains("Credits charged by hour") && page.contains("Top up acme"),
        "{page}"
    );
    let csrf = csrf_of(&page);
    // No reason, no top-up; a zero amount refused.
    for form in [
        format!("csrf={csrf}&amount=500&reason="),
        format!("csrf={csrf}&amount=0&reason=why"),
        format!("csrf={csrf}&amount=lots&reason=why"),
    ] {
        let (s, _, _) = send(&addr, "POST", "/console/tenants/acme/top-up", Some(&ops), &form, None);
        assert_eq!(s, 400, "{form}");
    }
    let (s, head, _) = send(
        &addr,
        "POST",
        "/console/tenants/acme/top-up",
        Some(&ops),
        &format!("csrf={csrf}&amount=500&reason=support+ticket+4411"),
        None,
    );
    assert_eq!((s, header(&head, "location")), (303, Some("/console/tenants/acme")));
    let (_, credits) = api(&addr, "GET", "/v1/credits", "key-acme", &Value::Null);
    assert_eq!(credits["balance"].as_i64().unwrap(), before + 500);
    assert!(audit_has(&addr, &ops, "console.credits.top_up", "support ticket 4411"));
    let (s, _, _) = send(&addr, "GET", "/console/tenants/nope", Some(&ops), "", None);
    assert_eq!(s, 404);

    // The read-only operator sees the tenant and cannot top it up.
    let ro = sign_in(&addr, "key-ro");
    let (_, _, page) = send(&addr, "GET", "/console/tenants/acme", Some(&ro), "", None);
    assert!(
        page.contains("id=\"balance\"") && !page.contains("Top up acme"),
        "{page}"
    );
    let ro_csrf = csrf_of(&page);
    let (s, _, _) = send(
        &addr,
        "POST",
        "/console/tenants/acme/top-up",
        Some(&ro),
        &format!("csrf={ro_csrf}&amount=500&reason=mine"),
        None,
    );
    assert_eq!(s, 403);
    let (_, credits) = api(&addr, "GET", "/v1/credits", "key-acme", &Value::Null);
    assert_eq!(credits["balance"].as_i64().unwrap(), before + 500);
    // Without the CSRF token, refused too.
    let (s, _, _) = send(
        &addr,
        "POST",
        "/console/tenants/acme/top-up",
        Some(&ops),
        "amount=500&reason=x",
        None,
    );
    assert_eq!(s, 403);

    // The audit log page names the operator (tenant and key fingerprint) for console actions.
    let (_, _, page) = send(&addr, "GET", "/console/audit", Some(&ops), "", None);
    let fingerprint = &gantry_scheduler::auth::hash_key("key-ops")[..12];
    assert!(
        page.contains("console.sign_in") && page.contains(&format!("ops/key:{fingerprint}")),
        "{page}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn safety_lists_and_trust_are_changed_with_reasons_and_audited() {
    let redis = RedisServer::start().expect("redis");
    let sched = SchedulerProcess::with_config(&redis.url(), &config());
    let addr = sched.addr.clone();
    let ops = sign_in(&addr, "key-ops");
    let (s, _, page) = send(&addr, "GET", "/console/safety", Some(&ops), "", None);
    assert_eq!(s, 200, "{page}");
    assert!(page.contains("No list is published"), "{page}");
    let csrf = csrf_of(&page);

    // Publish a list file; a bad line refuses the whole file, naming the line.
    let pdq = "f".repeat(64);
    let md5 = "0".repeat(32);
    let good = format!("# known material\npdq:{pdq}\nmd5:{md5}\n");
    let (s, page) = upload(
        &addr,
        &ops,
        &[("csrf", &csrf), ("name", "ncmec"), ("category", "csam")],
        &good,
    );
    assert_eq!(s, 303, "{page}");
    let (s, page) = upload(
        &addr,
        &ops,
        &[("csrf", &csrf), ("name", "ncmec"), ("category", "csam")],
        "pdq:zz\n",
    );
    assert_eq!(s, 400);
    assert!(page.contains("line 1"), "{page}");
    // Without the CSRF token: refused, nothing published.
    let (s, _) = upload(&addr, &ops, &[("name", "other"), ("category", "csam")], &good);
    assert_eq!(s, 403);
    let (_, lists) = api(&addr, "GET", "/v1/admin/hashlists", "key-ops", &Value::Null);
    let lists = lists["hashlists"].as_array().unwrap().clone();
    assert_eq!(lists.len(), 1, "{lists:?}");
    assert_eq!(
        (
            lists[0]["name"].as_str(),
            lists[0]["version"].as_u64(),
            lists[0]["pdq"].as_u64()
        ),
        (Some("ncmec"), Some(1), Some(1))
    );
    let (_, _, page) = send(&addr, "GET", "/console/safety", Some(&ops), "", None);
    assert!(page.contains("data-list=\"ncmec\""), "{page}");

    // Removing takes the confirmation.
    let (s, _, _) = send(
        &addr,
        "POST",
        "/console/safety/hashlists/ncmec/remove",
        Some(&ops),
        &format!("csrf={csrf}"),
        None,
    );
    assert_eq!(s, 400);
    let (s, _, _) = send(
        &addr,
        "POST",
        "/console/safety/hashlists/ncmec/remove",
        Some(&ops),
        &format!("csrf={csrf}&confirm=yes"),
        None,
    );
    assert_eq!(s, 303);
    let (_, lists) = api(&addr, "GET", "/v1/admin/hashlists", "key-ops", &Value::Null);
    assert!(lists["hashlists"].as_array().unwrap().is_empty(), "{lists}");

    // Trust: block, then unblock; each needs a reason, kept in the history.
    let change = |action: &str, reason: &str| {
        send(
            &addr,
            "POST",
            "/console/safety/trust/change",
            Some(&ops),
            &format!("csrf={csrf}&tenant=acme&user=u-9&action={action}&delta=&reason={reason}"),
            None,
        )
        .0
    };
    assert_eq!(change("block", "repeated+abuse+reports"), 303);
    let (_, _, page) = send(
        &addr,
        "GET",
        "/console/safety/trust?tenant=acme&user=u-9",
        Some(&ops),
        "",
        None,
    );
    assert!(
        page.contains("id=\"trust-standing\"><span class=\"paused\">blocked"),
        "{page}"
    );
    assert_eq!(change("unblock", ""), 400, "an unblock needs a reason");
    assert_eq!(change("unblock", "appeal+upheld"), 303);
    let (_, _, page) = send(
        &addr,
        "GET",
        "/console/safety/trust?tenant=acme&user=u-9",
        Some(&ops),
        "",
        None,
    );
    assert!(
        page.contains("id=\"trust-standing\">not blocked")
            && page.contains("appeal upheld")
            && page.contains("repeated abuse reports"),
        "{page}"
    );
    let (s, _, _) = send(
        &addr,
        "GET",
        "/console/safety/trust?tenant=nope&user=u-9",
        Some(&ops),
        "",
        None,
    );
    assert_eq!(s, 404);
    for action in ["hashlist.publish", "hashlist.remove", "trust.block", "trust.unblock"] {
        assert!(audit_has(&addr, &ops, action, "ops/key:"), "{action}");
    }

    // The read-only operator sees the standing, cannot change it.
    let ro = sign_in(&addr, "key-ro");
    let (_, _, page) = send(
        &addr,
        "GET",
        "/console/safety/trust?tenant=acme&user=u-9",
        Some(&ro),
        "",
        None,
    );
    assert!(
        page.contains("id=\"trust-score\"") && !page.contains("Change it"),
        "{page}"
    );
    let ro_csrf = csrf_of(&page);
    let (s, _, _) = send(
        &addr,
        "POST",
        "/console/safety/trust/change",
        Some(&ro),
        &format!("csrf={ro_csrf}&tenant=acme&user=u-9&action=block&reason=x"),
        None,
    );
    assert_eq!(s, 403);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pipeline_steps_page_draws_its_pipeline() {
    let redis = RedisServer::start().expect("redis");
    let sched = SchedulerProcess::with_config(&redis.url(), &config());
    let addr = sched.addr.clone();
    let step = |name: &str, needs: &[&str]| json!({"name": name, "needs": needs, "user": "u-1", "kind": "noop", "payload": {}});
    let (s, p) = api(
        &addr,
        "POST",
        "/v1/pipelines",
        "key-acme",
        &json!({"steps": [step("fetch", &[]), step("left", &["fetch"]), step("right", &["fetch"]), step("join", &["left", "right"])]}),
    );
    assert_eq!(s, 201, "{p}");
    let id = p["id"].as_str().unwrap();
    let (_, view) = api(&addr, "GET", &format!("/v1/pipelines/{id}"), "key-acme", &Value::Null);
    let join = view["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "join")
        .unwrap()["job_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let ops = sign_in(&addr, "key-ops");
    let (s, _, page) = send(&addr, "GET", &format!("/console/jobs/{join}"), Some(&ops), "", None);
    assert_eq!(s, 200, "{page}");
    assert!(
        page.contains("<svg") && page.contains(&format!("Pipeline <code>{id}</code>")),
        "{page}"
    );
    // Four steps, four arrows, each step a link to its job; the graph's facts as a list too.
    assert_eq!(page.matches("marker-end=\"url(#arrow)\"").count(), 4, "{page}");
    for s in view["steps"].as_array().unwrap() {
        let job = s["job_id"].as_str().unwrap();
        assert!(page.contains(&format!("href=\"/console/jobs/{job}\"")), "{page}");
    }
    assert!(page.contains("needs left, right (this job)"), "{page}");
}
