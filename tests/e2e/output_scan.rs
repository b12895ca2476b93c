//! The release gate end to end: an operator publishes a hash list through the scheduler's admin
//! API (audited); a generate job whose image is on it (the mocks' `[mock:flagged]` picture)
//! ends `blocked` with its outputs gone and a moderation record holding the prompt's SHA-256,
//! never the prompt; an ordinary one is released with the scan's details; the worker counts
//! both; a tenant configured with `scan_outputs = false` gets its result unscanned.

#![allow(clippy::unwrap_used)] // a panic is how a test reports failure

use crate::common;

use common::*;
use gantry_client::Client;
use gantry_codecs::pdq::{Prescale, hash_dihedral, luma_from_image};
use gantry_mocks::media::{FLAGGED_TINT, MediaCache};
use serde_json::{Value, json};

const ADMIN: (&str, &str) = ("Authorization", "Bearer demo-admin-key");

fn flagged_pdq() -> String {
    let png = MediaCache::default().image(1024, 1024, false, FLAGGED_TINT);
    let img = image::load_from_memory(&png).unwrap();
    let (luma, w, h) = luma_from_image(&img, Prescale::None);
    hash_dihedral(&luma, w, h).0[0].to_string()
}

/// The objects of job `id` of tenant studio-42, whichever user's folder holds it.
fn job_files(f: &Fleet, id: &str) -> usize {
    let users = std::fs::read_dir(f.logs.path().join("outputs/jobs/studio-42"));
    users
        .into_iter()
        .flatten()
        .flatten()
        .map(|u| std::fs::read_dir(u.path().join(id)).map_or(0, |r| r.count()))
        .sum()
}

fn as_user(mut job: Value, user: &str) -> Value {
    job["user"] = user.into();
    job
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_generated_output_is_scanned_before_release() {
    let metrics = format!("127.0.0.1:{}", gantry_testkit::free_port());
    let f = fleet_with(1, 4, &[], &["--metrics-addr", &metrics]);
    let sched = f.sched.addr.as_str();
    let studio = Client::new(&format!("http://{sched}"), "demo-studio-key").unwrap();

    // The admin API: only operators; a bad line refuses the whole list with its number.
    let body = format!("# demo list\npdq:{}\n", flagged_pdq());
    let put = |key: &'static str, body: String| {
        let auth = format!("Bearer {key}");
        let (s, _, b) = http_request(
            sched,
            "PUT",
            "/v1/admin/hashlists/known-bad?category=csam",
            &[("Authorization", &auth), ("Content-Type", "text/plain")],
            body.as_bytes(),
        );
        (s, b)
    };
    assert_eq!(put("demo-studio-key", body.clone()).0, 403);
    let (s, b) = put("demo-admin-key", format!("{body}not-a-hash\n"));
    assert_eq!(s, 400, "{b}");
    assert!(b.contains("line 3"), "{b}");
    let (s, b) = put("demo-admin-key", body);
    assert_eq!(s, 200, "{b}");
    let meta: Value = serde_json::from_str(&b).unwrap();
    assert_eq!((meta["version"].as_u64(), meta["pdq"].as_u64()), (Some(1), Some(1)));
    let (s, _, b) = http_request(sched, "GET", "/v1/admin/hashlists", &[ADMIN], b"");
    assert_eq!(s, 200);
    assert!(b.contains("known-bad"), "{b}");

    // An ordinary image: released, saying what it was scanned against.
    let ok = studio
        .submit(&generate(
            "openai",
            "gpt-image-1",
            &["US"],
            "a red fox in snow",
            json!({}),
        ))
        .await
        .unwrap();
    let j = settled(&studio, &ok.id).await;
    assert_eq!(j.status, "succeeded", "{j:?}");
    let d = &j.result.as_ref().unwrap()["details"];
    assert_eq!(
        (
            d["scan"].as_str(),
            d["scanned_files"].as_str(),
            d["scan_lists"].as_str()
        ),
        (Some("clean"), Some("1"), Some("known-bad@v1")),
        "{d}"
    );
    assert_eq!(job_files(&f, &ok.id), 1);

    // The flagged picture: blocked before release, nothing of it left, credits refunded.
    let prompt = "[mock:flagged] a portrait by the sea";
    let bad = studio
        .submit(&generate("openai", "gpt-image-1", &["US"], prompt, json!({})))
        .await
        .unwrap();
    let j = settled(&studio, &bad.id).await;
    assert_eq!((j.status.as_str(), j.attempts), ("blocked", 1), "{j:?}");
    assert!(j.result.is_none());
    assert_eq!(j.credits.as_ref().unwrap().state, "refunded", "{j:?}");
    assert_eq!(job_files(&f, &bad.id), 0, "the matched output is deleted");

    // The moderation record, through the admin API: the prompt's SHA-256, not the prompt.
    let (s, _, b) = http_request(sched, "GET", "/v1/admin/moderation-events?limit=10", &[ADMIN], b"");
    assert_eq!(s, 200, "{b}");
    assert!(!b.contains("portrait"), "no prompt text: {b}");
    let events: Value = serde_json::from_str(&b).unwrap();
    let e = &events["moderation_events"][0];
    let sha = sha2::Digest::finalize(<sha2::Sha256 as sha2::Digest>::new_with_prefix(prompt.as_bytes()));
    let sha: String = sha.iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(e["job_id"], bad.id.as_str());
    assert_eq!(e["prompt_sha256"], sha.as_str());
    assert_eq!(
        (e["category"].as_str(), e["list"].as_str()),
        (Some("csam"), Some("known-bad"))
    );

    // The worker's counters.
    let (_, text) = http_get(&metrics, "/metrics");
    for series in [
        r#"gantry_output_scans_total{kind="generate",verdict="clean"} 1"#,
        r#"gantry_output_scans_total{kind="generate",verdict="blocked"} 1"#,
        r#"gantry_moderation_events_total{category="csam",action="blocked_deleted"} 1"#,
    ] {
        assert!(text.contains(series), "{series} missing from\n{text}");
    }

    // A tenant that scans for itself: its results are released unscanned.
    let toml = include_str!("../../scheduler/src/demo.toml").replacen(
        "[tenants.studio-42]\n",
        "[tenants.studio-42]\nscan_outputs = false\n",
        1,
    );
    let own = SchedulerProcess::with_config(&f.redis.url(), &toml);
    let own_api = Client::new(&format!("http://{}", own.addr), "demo-studio-key").unwrap();
    let u = own_api
        .submit(&as_user(
            generate("openai", "gpt-image-1", &["US"], prompt, json!({})),
            "u-other",
        ))
        .await
        .unwrap();
    let j = settled(&own_api, &u.id).await;
    assert_eq!(j.status, "succeeded", "{j:?}");
    assert!(j.result.as_ref().unwrap()["details"].get("scan").is_none(), "{j:?}");

    // Removing the list, and the audit log of both changes, newest first.
    let (s, _, _) = http_request(sched, "DELETE", "/v1/admin/hashlists/known-bad", &[ADMIN], b"");
    assert_eq!(s, 204);
    let (s, _, _) = http_request(sched, "DELETE", "/v1/admin/hashlists/known-bad", &[ADMIN], b"");
    assert_eq!(s, 404);
    let (s, _, b) = http_request(sched, "GET", "/v1/admin/audit?limit=5", &[ADMIN], b"");
    assert_eq!(s, 200, "{b}");
    let audit: Value = serde_json::from_str(&b).unwrap();
    let entries = audit["audit"].as_array().unwrap();
    let seen: Vec<(&str, &str, &str)> = entries
        .iter()
        .map(|e| {
            (
                e["action"].as_str().unwrap(),
                e["target"].as_str().unwrap(),
                e["actor"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            ("hashlist.remove", "known-bad", "ops/key:ac5bb3526d3b"),
            ("hashlist.publish", "known-bad", "ops/key:ac5bb3526d3b"),
        ]
    );
    assert!(entries.iter().all(|e| e["at_ms"].as_u64().unwrap() > 1_700_000_000_000));
}
