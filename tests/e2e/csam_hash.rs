//! CSAM-hash jobs end to end, with ThreatExchange's reference images standing in for known
//! material: a list published to the fleet's Redis; an upload that matches it (the bridge photo
//! rotated 90°, matched through a dihedral variant) ends `blocked` — its object gone from the
//! store, a moderation record without prompt or media, the user's trust lowered and, after a
//! second match, blocked by the scheduler; a clean upload succeeds with a report; an unknown
//! list and an unhashable file fail, never pass as clean.

#![allow(clippy::unwrap_used)] // a panic is how a test reports failure

use crate::common;

use std::path::PathBuf;

use common::*;
use gantry_client::Client;
use gantry_queue::{RedisConn, RedisTarget};
use gantry_safety::{HashList, HashListStore, ModerationLog, Retention, TrustRegistry};
use serde_json::json;

fn data(p: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("codecs/tests/data/pdq")
        .join(p)
}

fn job(user: &str, input: &str, lists: &[&str]) -> serde_json::Value {
    json!({"user": user, "kind": "csam_hash", "max_attempts": 3,
           "payload": {"input": input, "lists": lists}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn matched_content_is_blocked_deleted_recorded_and_costs_the_user_trust() {
    let f = fleet(1, 4, &[]);
    let studio = Client::new(&format!("http://{}", f.sched.addr), "demo-studio-key").unwrap();
    let conn = RedisConn::connect(&RedisTarget::parse(&f.redis.url()).unwrap(), None)
        .await
        .unwrap();
    let list = HashList::parse("# the bridge photo, as the Java reference hashes it\nf8f8f0cee0f4a84f06370a22038f63f0b36e2ed596621e1d33e6b39c4e9c9b22\n").unwrap();
    HashListStore::new(conn.clone())
        .publish("known-bad", "csam", &list)
        .await
        .unwrap();

    let outputs = f.logs.path().join("outputs");
    let uploads = outputs.join("inputs/studio-42");
    std::fs::create_dir_all(&uploads).unwrap();
    for (name, src) in [
        ("rotated.jpg", "pdq/data/reg-test-input/dih/bridge-2-rotate-90.jpg"),
        ("again.jpg", "pdq/data/reg-test-input/dih/bridge-1-original.jpg"),
        ("street.jpg", "pdq/data/reg-test-input/labelme-subset/q2821.jpg"),
    ] {
        std::fs::copy(data(src), uploads.join(name)).unwrap();
    }
    std::fs::write(uploads.join("broken.jpg"), b"\xff\xd8\xff\xe0 not really").unwrap();

    // A match: blocked at once (one attempt of three), the object deleted, credits refunded.
    let a = studio
        .submit(&job("u-bad", "inputs/studio-42/rotated.jpg", &["known-bad"]))
        .await
        .unwrap();
    let j = settled(&studio, &a.id).await;
    assert_eq!((j.status.as_str(), j.attempts), ("blocked", 1), "{j:?}");
    let err = j.error.as_ref().unwrap();
    assert_eq!(err["class"], "blocked");
    assert!(
        err["message"].as_str().unwrap().contains("known-bad v1 (csam)"),
        "{err}"
    );
    assert!(!uploads.join("rotated.jpg").exists(), "the matched object is gone");
    // The moderation record: who, which list, how close — no prompt, no media.
    let log = ModerationLog::new(conn.clone(), Retention::default());
    let e = log.get(&format!("{}-known-bad", a.id)).await.unwrap().unwrap();
    assert_eq!(
        (e.category.as_str(), e.list_version, e.tenant.as_str(), e.user.as_str()),
        ("csam", 1, "studio-42", "u-bad")
    );
    assert_eq!((e.match_kind.as_str(), e.action.as_str()), ("pdq", "blocked_deleted"));
    assert!(e.distance.unwrap() <= 31);
    assert!(
        log.ttl(&e.id).await.unwrap().unwrap() > 7 * 365 * 86_400,
        "csam is critical: kept 7 years"
    );
    let trust = TrustRegistry::new(conn.clone());
    let s = trust.status("studio-42", "u-bad").await.unwrap();
    // (The score recovers over 90 days: a few seconds add ~1e-7.)
    assert!((s.score - 0.5).abs() < 1e-4 && !s.blocked, "{s:?}");

    // A second match blocks the user; the scheduler then refuses them.
    let b = studio
        .submit(&job("u-bad", "inputs/studio-42/again.jpg", &[]))
        .await
        .unwrap();
    assert_eq!(settled(&studio, &b.id).await.status, "blocked");
    assert!(trust.status("studio-42", "u-bad").await.unwrap().blocked);
    let refused = studio.submit(&job("u-bad", "inputs/studio-42/street.jpg", &[])).await;
    assert!(format!("{refused:?}").contains("user_blocked"), "{refused:?}");

    // Clean content succeeds with a report of its hashes and the lists checked.
    let c = studio
        .submit(&job("u-ok", "inputs/studio-42/street.jpg", &["known-bad"]))
        .await
        .unwrap();
    let j = settled(&studio, &c.id).await;
    assert_eq!(j.status, "succeeded", "{j:?}");
    let d = &j.result.as_ref().unwrap()["details"];
    assert_eq!(
        (d["verdict"].as_str(), d["lists"].as_str()),
        (Some("clean"), Some("known-bad@v1"))
    );
    assert!(uploads.join("street.jpg").exists());

    // Never clean by default: an unknown list, an unhashable file.
    let u = studio
        .submit(&job("u-ok", "inputs/studio-42/street.jpg", &["no-such-list"]))
        .await
        .unwrap();
    let j = settled(&studio, &u.id).await;
    assert_eq!(
        (j.status.as_str(), j.error.as_ref().unwrap()["class"].as_str()),
        ("dead", Some("permanent"))
    );
    let x = studio
        .submit(&job("u-ok", "inputs/studio-42/broken.jpg", &[]))
        .await
        .unwrap();
    let j = settled(&studio, &x.id).await;
    assert_eq!(j.status, "dead", "{j:?}");
}
