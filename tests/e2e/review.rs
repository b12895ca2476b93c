//! Trust and safety's cases end to end, with real processes: a list with a review band (PDQ
//! within 8 blocks, within 31 is held); a csam_hash upload close to it is held (status
//! `review`, nothing released, nothing deleted), a reviewer looks at it and clears it with the
//! allow list (released; the same bytes pass next time); a generated image close to it is held,
//! a reviewer confirms it: taken down (preserved sealed in the quarantine first, then deleted),
//! the job `blocked` with its credits refunded, a report submitted through an outage to the
//! CyberTipline mock (report, file, description, finish), the evidence readable only through the
//! audited `safety:evidence` route with a reason, and deleted by the retention sweep at its
//! expiry (audited). No record, report or quarantined object holds the prompt.

#![allow(clippy::unwrap_used)] // a panic is how a test reports failure

use crate::common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::*;
use gantry_client::Client;
use gantry_codecs::pdq::{Prescale, hash_dihedral, luma_from_image};
use gantry_mocks::media::{FLAGGED_TINT, MediaCache};
use serde_json::{Value, json};

const EVIDENCE_KEYS: &str = "ev1=ZXZpZGVuY2Uta2V5LWZvci10aGUtZTJlLXRlc3RzISE=";
/// Job data keys: prompts are sealed in Redis (`dk1`: 32 bytes, base64).
const DATA_KEYS: &str = "dk1=ZGF0YS1rZXktZm9yLXRoZS1yZXZpZXctdGVzdHMhISE=";
const PROMPT: &str = "zq-review-canary-41d3 a lighthouse [mock:flagged]";

fn pdq_of(bytes: &[u8]) -> String {
    let img = image::load_from_memory(bytes).unwrap();
    let (luma, w, h) = luma_from_image(&img, Prescale::None);
    hash_dihedral(&luma, w, h).0[0].to_string()
}

/// `hex` with its first five nibbles inverted: 20 bits away, inside the review band.
fn twenty_bits_from(hex: &str) -> String {
    hex.chars()
        .enumerate()
        .map(|(i, c)| {
            if i < 5 {
                let v = c.to_digit(16).unwrap() ^ 0xf;
                std::char::from_digit(v, 16).unwrap()
            } else {
                c
            }
        })
        .collect()
}

fn street() -> Vec<u8> {
    std::fs::read(
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("codecs/tests/data/pdq/pdq/data/reg-test-input/labelme-subset/q2821.jpg"),
    )
    .unwrap()
}

struct Rig {
    f_redis: gantry_testkit::RedisServer,
    mock: MockProvidersProcess,
    sched: SchedulerProcess,
    _worker: WorkerProcess,
    dir: tempfile::TempDir,
}

impl Rig {
    fn outputs(&self) -> PathBuf {
        self.dir.path().join("outputs")
    }
}

fn rig() -> Rig {
    let redis = gantry_testkit::RedisServer::start().expect("redis-server");
    let mock = MockProvidersProcess::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let outputs = dir.path().join("outputs");
    let out = outputs.to_str().unwrap();
    let tipline = format!("{}/cybertipline/ispws", mock.url());
    let envs = [
        ("GANTRY_EVIDENCE_KEYS", EVIDENCE_KEYS),
        ("GANTRY_DATA_KEYS", DATA_KEYS),
        ("GANTRY_CYBERTIPLINE_USERNAME", gantry_mocks::cybertipline::USERNAME),
        ("GANTRY_CYBERTIPLINE_PASSWORD", gantry_mocks::cybertipline::PASSWORD),
    ];
    let sched = SchedulerProcess::start_with_env(
        &redis.url(),
        None,
        &["--outputs", out, "--cybertipline-url", &tipline],
        Some(&dir.path().join("scheduler.log")),
        &envs,
    );
    let mock_url = mock.url();
    let worker = WorkerProcess::start_in_env(
        &redis.url(),
        "cpu",
        "t-and-s",
        4,
        10.0,
        &[
            "--gpus",
            "none",
            "--mock-providers",
            &mock_url,
            "--outputs",
            out,
            "--allow-reference-addr",
            &mock.addr,
        ],
        dir.path(),
        &envs[..2],
    );
    Rig {
        f_redis: redis,
        mock,
        sched,
        _worker: worker,
        dir,
    }
}

async fn until_status(api: &Client, id: &str, want: &str) -> gantry_client::JobView {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let j = api.job(id).await.unwrap();
        if j.status == want {
            return j;
        }
        assert!(Instant::now() < deadline, "{id} never reached {want}: {j:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn admin(addr: &str, method: &str, path: &str, body: &Value) -> (u16, Value) {
    call(addr, "demo-admin-key", method, path, body)
}

fn call(addr: &str, key: &str, method: &str, path: &str, body: &Value) -> (u16, Value) {
    let auth = format!("Bearer {key}");
    let payload = if body.is_null() {
        Vec::new()
    } else {
        body.to_string().into_bytes()
    };
    let (s, _, b) = http_request(
        addr,
        method,
        path,
        &[("Authorization", &auth), ("Content-Type", "application/json")],
        &payload,
    );
    (s, serde_json::from_str(&b).unwrap_or(Value::String(b)))
}

/// Every file under `dir`, as bytes.
fn files_under(dir: &std::path::Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push((p.clone(), std::fs::read(&p).unwrap()));
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn near_matches_are_held_for_review_then_cleared_or_confirmed_preserved_and_reported() {
    let r = rig();
    let sched = r.sched.addr.as_str();
    let studio = Client::new(&format!("http://{sched}"), "demo-studio-key").unwrap();
    let flagged = MediaCache::default().image(1024, 1024, false, FLAGGED_TINT);
    let street = street();

    // A list with a review band: entries 20 bits from the street photo and the flagged picture.
    let list = format!(
        "pdq:{}\npdq:{}\n",
        twenty_bits_from(&pdq_of(&street)),
        twenty_bits_from(&pdq_of(&flagged))
    );
    let auth = ("Authorization", "Bearer demo-admin-key");
    let (s, _, b) = http_request(
        sched,
        "PUT",
        "/v1/admin/hashlists/near?category=csam&block_distance=8&review_distance=31",
        &[auth, ("Content-Type", "text/plain")],
        list.as_bytes(),
    );
    assert_eq!(s, 200, "{b}");
    let meta: Value = serde_json::from_str(&b).unwrap();
    assert_eq!(
        (meta["block_distance"].as_u64(), meta["review_distance"].as_u64()),
        (Some(8), Some(31))
    );
    let (s, _, b) = http_request(
        sched,
        "PUT",
        "/v1/admin/hashlists/near?block_distance=20&review_distance=10",
        &[auth, ("Content-Type", "text/plain")],
        list.as_bytes(),
    );
    assert_eq!(s, 422, "a band upside down is refused: {b}");

    // 1. An upload close to the list: held, not released, not deleted.
    let uploads = r.outputs().join("inputs/studio-42");
    std::fs::create_dir_all(&uploads).unwrap();
    std::fs::write(uploads.join("street.jpg"), &street).unwrap();
    let scan = json!({"user": "u-near", "kind": "csam_hash", "max_attempts": 3,
                      "payload": {"input": "inputs/studio-42/street.jpg", "lists": ["near"]}});
    let a = studio.submit(&scan).await.unwrap();
    let held = until_status(&studio, &a.id, "review").await;
    assert!(held.result.is_none(), "nothing released while held: {held:?}");
    assert_eq!(held.credits.as_ref().map(|c| c.state.as_str()), Some("reserved"));
    assert!(uploads.join("street.jpg").exists(), "held, not deleted");
    let (s, _, _) = http_request(
        sched,
        "GET",
        &format!("/v1/jobs/{}/outputs/report.json", a.id),
        &[("Authorization", "Bearer demo-studio-key")],
        b"",
    );
    assert_eq!(s, 409, "a held job's files are not served");
    let (s, metrics) = http_get(&r.sched.metrics_addr, "/metrics");
    assert_eq!(s, 200);
    assert!(
        metrics.contains("gantry_safety_backlog{queue=\"reviews_pending\"} 1"),
        "the backlog gauge: {metrics}"
    );
    let (s, _) = call(sched, "demo-studio-key", "GET", "/v1/admin/reviews", &Value::Null);
    assert_eq!(s, 403, "reviewing needs safety:review");
    let (s, q) = admin(sched, "GET", "/v1/admin/reviews", &Value::Null);
    assert_eq!(s, 200, "{q}");
    let item = q["reviews"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["id"] == a.id.as_str())
        .unwrap()
        .clone();
    assert_eq!(
        (item["status"].as_str(), item["category"].as_str()),
        (Some("pending"), Some("csam"))
    );
    let d = item["matches"][0]["distance"].as_u64().unwrap();
    assert!((9..=31).contains(&d), "in the band: {d}");
    // The reviewer looks at it (audited), then clears it with the allow list.
    let bytes = reqwest::Client::new()
        .get(format!("http://{sched}/v1/admin/reviews/{}/files/0", a.id))
        .bearer_auth("demo-admin-key")
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(bytes.as_ref(), street.as_slice());
    let (s, e) = admin(
        sched,
        "POST",
        &format!("/v1/admin/reviews/{}", a.id),
        &json!({"decision": "clear", "reason": ""}),
    );
    assert_eq!(s, 400, "a reason is required: {e}");
    let (s, cleared) = admin(
        sched,
        "POST",
        &format!("/v1/admin/reviews/{}", a.id),
        &json!({"decision": "clear", "reason": "a street scene, no person", "allow_list": true}),
    );
    assert_eq!(s, 200, "{cleared}");
    assert_eq!(cleared["status"], "cleared");
    assert_eq!(cleared["decision"]["allow_listed"], true);
    let j = settled(&studio, &a.id).await;
    assert_eq!(j.status, "succeeded", "{j:?}");
    assert_eq!(j.result.as_ref().unwrap()["details"]["verdict"], "clean");
    let (s, again) = admin(
        sched,
        "POST",
        &format!("/v1/admin/reviews/{}", a.id),
        &json!({"decision": "confirm", "reason": "changed my mind"}),
    );
    assert_eq!(s, 409, "a decision stands: {again}");
    // The same bytes are not held again.
    let a2 = studio.submit(&scan).await.unwrap();
    assert_eq!(settled(&studio, &a2.id).await.status, "succeeded");

    // 2. A generated image close to the list: held, then confirmed.
    let mut job = generate("openai", "gpt-image-1", &["US"], PROMPT, json!({}));
    job["user"] = "u-flagged".into();
    let b = studio.submit(&job).await.unwrap();
    until_status(&studio, &b.id, "review").await;
    // Held outputs are sealed at rest (the fleet has data keys); the reviewer sees them opened.
    let held_files: Vec<_> = files_under(&r.outputs().join("jobs"))
        .into_iter()
        .filter(|(p, _)| p.to_string_lossy().contains(&b.id))
        .collect();
    assert!(!held_files.is_empty());
    for (p, raw) in &held_files {
        assert!(raw.starts_with(b"GOE1"), "{} is sealed", p.display());
    }
    let seen = reqwest::Client::new()
        .get(format!("http://{sched}/v1/admin/reviews/{}/files/0", b.id))
        .bearer_auth("demo-admin-key")
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(seen.as_ref(), flagged.as_slice(), "the reviewer sees the output opened");
    // The report endpoint is down for its first two calls: the submitter retries.
    let faults = reqwest::Client::new()
        .put(format!("{}/_mock/cybertipline/faults", r.mock.url()))
        .json(&json!({"fail_next": 2}))
        .send()
        .await
        .unwrap();
    assert_eq!(faults.status(), 204);
    let (s, confirmed) = admin(
        sched,
        "POST",
        &format!("/v1/admin/reviews/{}", b.id),
        &json!({"decision": "confirm", "reason": "apparent CSAM; escalated per policy"}),
    );
    assert_eq!(s, 200, "{confirmed}");
    assert_eq!(confirmed["status"], "confirmed");
    assert_eq!(confirmed["evidence_id"], b.id.as_str());
    assert_eq!(confirmed["report_id"], b.id.as_str());
    let j = settled(&studio, &b.id).await;
    assert_eq!(j.status, "blocked", "{j:?}");
    assert_eq!(j.credits.as_ref().unwrap().state, "refunded", "{j:?}");
    // Gone from the user-facing store; in the quarantine, sealed.
    let job_dir: Vec<_> = files_under(&r.outputs().join("jobs"))
        .into_iter()
        .filter(|(p, _)| p.to_string_lossy().contains(&b.id))
        .collect();
    assert!(job_dir.is_empty(), "taken down: {job_dir:?}");
    let quarantined = files_under(&r.outputs().join("quarantine"));
    assert!(!quarantined.is_empty(), "preserved");
    for (p, raw) in &quarantined {
        assert!(raw.starts_with(b"GEV1"), "{} is sealed", p.display());
        assert!(
            !raw.windows(8).any(|w| w == b"\x89PNG\r\n\x1a\n"),
            "no PNG in {}",
            p.display()
        );
    }
    // The user's trust dropped; moderation events say what happened.
    let (s, trust) = admin(sched, "GET", "/v1/admin/trust/studio-42/u-flagged", &Value::Null);
    assert_eq!(s, 200);
    assert!(trust["score"].as_f64().unwrap() < 0.6, "{trust}");
    let (_, events) = admin(sched, "GET", "/v1/admin/moderation-events?limit=50", &Value::Null);
    let actions: Vec<&str> = events["moderation_events"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["action"].as_str())
        .collect();
    for want in ["withheld_for_review", "cleared_after_review", "blocked_after_review"] {
        assert!(actions.contains(&want), "{want} in {actions:?}");
    }

    // 3. The report reaches the CyberTipline, through the outage.
    let deadline = Instant::now() + Duration::from_secs(60);
    let report = loop {
        let (s, rep) = admin(sched, "GET", &format!("/v1/admin/reports/{}", b.id), &Value::Null);
        assert_eq!(s, 200, "{rep}");
        if rep["status"] == "submitted" {
            break rep;
        }
        assert!(Instant::now() < deadline, "never submitted: {rep}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert!(report["attempts"].as_u64().unwrap() >= 2, "retried: {report}");
    assert_eq!(report["viewed_by_reviewer"], true);
    let got: Value = reqwest::get(format!("{}/_mock/cybertipline", r.mock.url()))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let tips = got["reports"].as_array().unwrap();
    assert_eq!(tips.len(), 1, "one report, not one per attempt: {got}");
    let tip = &tips[0];
    assert_eq!(
        tip["report_id"].to_string(),
        report["authority_report_id"].as_str().unwrap()
    );
    assert_eq!(
        (
            tip["esp_identifier"].as_str(),
            tip["esp_service"].as_str(),
            tip["finished"].as_bool()
        ),
        (Some("u-flagged"), Some("studio-42"), Some(true))
    );
    assert_eq!(
        tip["incident_type"],
        "Child Pornography (possession, manufacture, and distribution)"
    );
    let files = tip["files"].as_array().unwrap();
    let png_md5 = {
        use md5::Digest as _;
        gantry_worker::outputs::hex(&md5::Md5::digest(flagged.as_slice()))
    };
    let image = files
        .iter()
        .find(|f| f["md5"] == png_md5.as_str())
        .unwrap_or_else(|| panic!("the flagged image was uploaded: {got}"));
    assert_eq!(
        (image["described"].as_bool(), image["viewed_by_esp"].as_bool()),
        (Some(true), Some(true))
    );
    assert_eq!(image["described_md5"], png_md5.as_str());

    // 4. Evidence: only through the audited route, with a reason.
    let ev_path = format!("/v1/admin/evidence/{}", b.id);
    assert_eq!(
        call(
            sched,
            "demo-studio-key",
            "GET",
            &format!("{ev_path}?reason=x"),
            &Value::Null
        )
        .0,
        403
    );
    assert_eq!(
        admin(sched, "GET", &ev_path, &Value::Null).0,
        400,
        "no reason, no evidence"
    );
    let (s, record) = admin(
        sched,
        "GET",
        &format!("{ev_path}?reason=NCMEC%20follow-up"),
        &Value::Null,
    );
    assert_eq!(s, 200, "{record}");
    let index = record["files"]
        .as_array()
        .unwrap()
        .iter()
        .position(|f| f["md5"] == png_md5.as_str())
        .unwrap();
    let opened = reqwest::Client::new()
        .get(format!(
            "http://{sched}{ev_path}/files/{index}?reason=NCMEC%20follow-up"
        ))
        .bearer_auth("demo-admin-key")
        .send()
        .await
        .unwrap();
    assert_eq!(opened.status(), 200);
    assert_eq!(opened.bytes().await.unwrap().as_ref(), flagged.as_slice());
    let (_, audit) = admin(sched, "GET", "/v1/admin/audit?limit=100", &Value::Null);
    let audit = audit.to_string();
    for want in [
        "review.view",
        "review.clear",
        "review.confirm",
        "evidence.view",
        "evidence.read",
        "NCMEC follow-up",
    ] {
        assert!(audit.contains(want), "{want} audited: {audit}");
    }

    // 5. No record, report or quarantined object holds the prompt.
    let (_, everything) = everything_in(&r.f_redis.url()).await;
    assert!(everything.contains(&b.id), "the records are there");
    assert!(!everything.contains("zq-review-canary-41d3"), "the prompt in Redis");
    assert!(
        !got.to_string().contains("zq-review-canary-41d3"),
        "the prompt in a report"
    );
    for (p, raw) in &quarantined {
        assert!(
            !raw.windows(21).any(|w| w == b"zq-review-canary-41d3"),
            "the prompt in {}",
            p.display()
        );
    }

    // 6. At its expiry, the retention sweep deletes the evidence (audited).
    let client = redis::Client::open(r.f_redis.url()).unwrap();
    let mut c = client.get_multiplexed_async_connection().await.unwrap();
    let _: () = redis::cmd("ZADD")
        .arg("gantry:{safety}:evidence:expiry")
        .arg(1)
        .arg(&b.id)
        .query_async(&mut c)
        .await
        .unwrap();
    let out = gantry(
        &r.f_redis.url(),
        &["retention", "sweep", "--outputs", r.outputs().to_str().unwrap()],
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("evidence cases 1"),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        files_under(&r.outputs().join("quarantine")).is_empty(),
        "deleted at expiry"
    );
    assert_eq!(
        admin(sched, "GET", &format!("{ev_path}?reason=again"), &Value::Null).0,
        404
    );
    let (_, audit) = admin(sched, "GET", "/v1/admin/audit?limit=100", &Value::Null);
    assert!(audit.to_string().contains("evidence.expire"), "{audit}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sure_match_is_reported_only_once_a_reviewer_submits_it() {
    let r = rig();
    let sched = r.sched.addr.as_str();
    let studio = Client::new(&format!("http://{sched}"), "demo-studio-key").unwrap();
    let flagged = MediaCache::default().image(1024, 1024, false, FLAGGED_TINT);
    let (s, _, b) = http_request(
        sched,
        "PUT",
        "/v1/admin/hashlists/known?category=csam",
        &[
            ("Authorization", "Bearer demo-admin-key"),
            ("Content-Type", "text/plain"),
        ],
        format!("pdq:{}\n", pdq_of(&flagged)).as_bytes(),
    );
    assert_eq!(s, 200, "{b}");
    let mut job = generate("openai", "gpt-image-1", &["US"], PROMPT, json!({}));
    job["user"] = "u-sure".into();
    let j = studio.submit(&job).await.unwrap();
    assert_eq!(settled(&studio, &j.id).await.status, "blocked");
    // Blocked and preserved at once; the report waits for a person.
    let (s, rep) = admin(sched, "GET", &format!("/v1/admin/reports/{}", j.id), &Value::Null);
    assert_eq!(s, 200, "{rep}");
    assert_eq!(
        (rep["status"].as_str(), rep["viewed_by_reviewer"].as_bool()),
        (Some("awaiting_confirmation"), Some(false))
    );
    assert!(rep["evidence_id"].is_string(), "{rep}");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let got: Value = reqwest::get(format!("{}/_mock/cybertipline", r.mock.url()))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        got["reports"].as_array().unwrap().is_empty(),
        "nothing submitted unconfirmed: {got}"
    );
    assert_eq!(
        call(
            sched,
            "demo-studio-key",
            "POST",
            &format!("/v1/admin/reports/{}/submit", j.id),
            &json!({"reason": "x"})
        )
        .0,
        403
    );
    let (s, rep) = admin(
        sched,
        "POST",
        &format!("/v1/admin/reports/{}/submit", j.id),
        &json!({"reason": "reviewed the preserved evidence"}),
    );
    assert_eq!(s, 200, "{rep}");
    assert_eq!(rep["status"], "queued");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, rep) = admin(sched, "GET", &format!("/v1/admin/reports/{}", j.id), &Value::Null);
        if rep["status"] == "submitted" {
            break;
        }
        assert!(Instant::now() < deadline, "never submitted: {rep}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let got: Value = reqwest::get(format!("{}/_mock/cybertipline", r.mock.url()))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let tip = &got["reports"][0];
    assert_eq!(
        (tip["finished"].as_bool(), tip["esp_identifier"].as_str()),
        (Some(true), Some("u-sure"))
    );
    assert_eq!(
        tip["files"][0]["viewed_by_esp"], false,
        "an automatic match was not viewed: {got}"
    );
    // A report is submitted once.
    assert_eq!(
        admin(
            sched,
            "POST",
            &format!("/v1/admin/reports/{}/submit", j.id),
            &json!({"reason": "again"})
        )
        .0,
        409
    );
}
