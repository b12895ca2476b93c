//! The safety path on a real redis-server: hash lists published, versioned, loaded and matched
//! by every worker's matcher; moderation records with their retention and without prompt text;
//! trust lowered until the user is blocked.

#![allow(clippy::unwrap_used)] // a panic is how a test reports failure

use std::time::Duration;

use gantry_codecs::pdq::Hash256;
use gantry_queue::{RedisConn, RedisTarget};
use gantry_safety::{
    HashList, HashListStore, MatchKind, Matcher, ModerationEvent, ModerationLog, Retention, SafetyError, TrustRegistry,
};
use gantry_testkit::RedisServer;

async fn conn(s: &RedisServer) -> RedisConn {
    RedisConn::connect(&RedisTarget::parse(&s.url()).unwrap(), None)
        .await
        .unwrap()
}

fn h(s: &str) -> Hash256 {
    s.parse().unwrap()
}

const BRIDGE: &str = "f8f8f0cee0f4a84f06370a22038f63f0b36e2ed596621e1d33e6b39c4e9c9b22";
const PEN: &str = "9c58a5a1b4d9e4dd2f1b27ed9bc32e4e91bd3c2d5c7f8e3c0b71b2e3c2d54b1a";

#[tokio::test]
async fn lists_publish_version_load_and_match() {
    let server = RedisServer::start().unwrap();
    let c = conn(&server).await;
    let store = HashListStore::new(c.clone());
    let v1 = HashList::parse(&format!(
        "# test list\n{BRIDGE}\nmd5:0cc175b9c0f1b6a831c399e269772661\n\
         sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855\n"
    ))
    .unwrap();
    let m1 = store.publish("known-bad", "csam", &v1).await.unwrap();
    assert_eq!((m1.version, m1.pdq, m1.md5, m1.sha256), (1, 1, 1, 1));
    let (meta, back) = store.load("known-bad").await.unwrap();
    assert_eq!((meta.version, &back), (1, &v1));

    let matcher = Matcher::new(store.clone(), Duration::ZERO);
    let lists = matcher.lists(&[]).await.unwrap();
    assert_eq!(lists.len(), 1);
    // A near duplicate (5 bits off) matches by PDQ; the digests match exactly.
    let mut near = h(BRIDGE);
    near.lanes[0] ^= 0b1_0101_0101;
    let found = lists[0].match_pdq(&[near], 31).unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(
        found[0].kind,
        MatchKind::Pdq {
            distance: 5,
            variant: "original"
        }
    );
    assert_eq!(
        (found[0].list.as_str(), found[0].version, found[0].category.as_str()),
        ("known-bad", 1, "csam")
    );
    assert!(lists[0].match_pdq(&[h(PEN)], 31).unwrap().is_empty());
    let d = lists[0].match_digests(
        "0cc175b9c0f1b6a831c399e269772661",
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    );
    assert_eq!(
        d.iter().map(|m| m.kind.clone()).collect::<Vec<_>>(),
        [MatchKind::Md5, MatchKind::Sha256]
    );

    // Version 2 replaces the content; the matcher picks it up, the old keys expire.
    let v2 = HashList::parse(&format!("{PEN}\n")).unwrap();
    assert_eq!(store.publish("known-bad", "csam", &v2).await.unwrap().version, 2);
    let lists = matcher.lists(&["known-bad".into()]).await.unwrap();
    assert_eq!(lists[0].meta.version, 2);
    assert!(lists[0].match_pdq(&[near], 31).unwrap().is_empty());
    assert_eq!(lists[0].match_pdq(&[h(PEN)], 31).unwrap().len(), 1);
    let ttl = server.cli(&["TTL", "gantry:{hashlist:known-bad}:v1:pdq:0"]).unwrap();
    let ttl: i64 = ttl.trim().parse().unwrap();
    assert!((1..=600).contains(&ttl), "v1 expires after the grace period: {ttl}");

    // A list that does not exist is an error, never a pass.
    assert!(matches!(
        matcher.lists(&["no-such-list".into()]).await,
        Err(SafetyError::NotFound(_))
    ));
    assert!(matches!(
        store.publish("bad name", "csam", &v2).await,
        Err(SafetyError::InvalidName(_))
    ));
    // Removal stops matching at once.
    assert!(store.remove("known-bad").await.unwrap());
    assert!(matcher.lists(&[]).await.unwrap().is_empty());
}

#[tokio::test]
async fn a_list_of_a_million_hashes_round_trips_in_chunks() {
    let server = RedisServer::start().unwrap();
    let store = HashListStore::new(conn(&server).await);
    let mut seed = 1u64;
    let mut next = || {
        seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        seed
    };
    let pdq: Vec<Hash256> = (0..(gantry_safety::hashlists::CHUNK + 1000))
        .map(|_| Hash256 {
            lanes: [next(), next(), next(), next()],
        })
        .collect();
    let list = HashList {
        pdq,
        ..Default::default()
    };
    store.publish("big", "ncii", &list).await.unwrap();
    let (meta, back) = store.load("big").await.unwrap();
    assert_eq!(meta.pdq as usize, list.pdq.len());
    assert_eq!(back.pdq, list.pdq);
}

/// While one job loads a changed list (seconds for millions of hashes), the others keep
/// matching against the version already loaded; a job naming a list that was never loaded
/// waits for it rather than passing without it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_keep_matching_while_a_new_version_loads() {
    let server = RedisServer::start().unwrap();
    let store = HashListStore::new(conn(&server).await);
    let small = HashList::parse(&format!("{BRIDGE}\n")).unwrap();
    store.publish("known-bad", "csam", &small).await.unwrap();
    let matcher = Matcher::new(store.clone(), Duration::ZERO);
    assert_eq!(matcher.lists(&["known-bad".into()]).await.unwrap()[0].meta.version, 1);

    let mut seed = 7u64;
    let mut next = || {
        seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        seed
    };
    let big = HashList {
        pdq: (0..1_500_000)
            .map(|_| Hash256 {
                lanes: [next(), next(), next(), next()],
            })
            .chain([h(PEN)])
            .collect(),
        ..Default::default()
    };
    store.publish("known-bad", "csam", &big).await.unwrap();
    store.publish("other", "ncii", &small).await.unwrap();

    let loader = matcher.clone();
    let started = std::time::Instant::now();
    let loading = tokio::spawn(async move { loader.lists(&["known-bad".into()]).await.unwrap()[0].meta.version });
    tokio::time::sleep(Duration::from_millis(50)).await;
    // The load of version 2 is under way: version 1 answers at once.
    let t = std::time::Instant::now();
    let during = matcher.lists(&["known-bad".into()]).await.unwrap();
    let waited = t.elapsed();
    let still_loading = !loading.is_finished();
    // A list this matcher never loaded: wait for the refresh, get it.
    let other = matcher.lists(&["other".into()]).await.unwrap();
    assert_eq!(other[0].meta.name, "other");
    assert_eq!(loading.await.unwrap(), 2);
    let load_time = started.elapsed();
    eprintln!("version 2 loaded in {load_time:?}; a job during it waited {waited:?}");
    assert!(
        still_loading,
        "the load took {load_time:?}; too fast to see a job during it"
    );
    assert_eq!(during[0].meta.version, 1, "the loaded version answered during the load");
    assert!(
        waited < load_time / 4,
        "a job waited {waited:?} of a {load_time:?} load"
    );
    assert_eq!(matcher.lists(&["known-bad".into()]).await.unwrap()[0].meta.version, 2);
}

#[tokio::test]
async fn moderation_records_keep_their_retention_and_no_prompt_and_trust_drops_to_a_block() {
    let server = RedisServer::start().unwrap();
    let c = conn(&server).await;
    let log = ModerationLog::new(c.clone(), Retention::default());
    let event = |id: &str, category: &str| ModerationEvent {
        id: id.into(),
        at_ms: 1_790_000_000_000,
        category: category.into(),
        list: "known-bad".into(),
        list_version: 3,
        match_kind: "pdq".into(),
        distance: Some(4),
        action: "blocked_deleted".into(),
        objects_deleted: 2,
        tenant: "studio-42".into(),
        user: "u-9".into(),
        job_id: "01JOB".into(),
        prompt_sha256: Some("ab".repeat(32)),
        trust_score: 0.5,
        user_blocked: false,
    };
    log.record(&event("e1", "csam")).await.unwrap();
    log.record(&event("e2", "spam")).await.unwrap();
    let day = 86_400;
    let critical = log.ttl("e1").await.unwrap().unwrap();
    let ordinary = log.ttl("e2").await.unwrap().unwrap();
    assert!(
        critical > 7 * 365 * day && critical <= (7 * 365 + 2) * day,
        "{critical}"
    );
    assert!(ordinary > 89 * day && ordinary <= 90 * day, "{ordinary}");
    assert_eq!(log.get("e1").await.unwrap().unwrap(), event("e1", "csam"));
    let raw = server.cli(&["GET", "gantry:{moderation}:event:e1"]).unwrap();
    assert!(!raw.contains("prompt\""), "only the prompt's hash is kept: {raw}");
    assert_eq!(log.recent(10).await.unwrap().len(), 2);
    // An expired record drops out of the listing.
    server.cli(&["DEL", "gantry:{moderation}:event:e2"]).unwrap();
    assert_eq!(log.recent(10).await.unwrap().len(), 1);

    // Exact scores here: no recovery (it is tested on its own below).
    let trust = TrustRegistry::new(c.clone()).with_recovery(None);
    let s = trust
        .penalize("studio-42", "u-9", 0.4, 0.3, ("hash_match", "test"))
        .await
        .unwrap();
    assert!((s.score - 0.6).abs() < 1e-9 && !s.blocked, "{s:?}");
    let s = trust
        .penalize("studio-42", "u-9", 0.4, 0.3, ("hash_match", "test"))
        .await
        .unwrap();
    assert!(s.blocked && s.score < 0.3, "{s:?}");
    assert!(trust.status("studio-42", "u-9").await.unwrap().blocked);
    // Issue 17: the record is keyed by the user's pseudonymous key, never the id, and expires.
    let pseudonymous = format!(
        "gantry:{{trust:studio-42}}:user:{}",
        gantry_core::user_key("studio-42", "u-9")
    );
    let keys = server.cli(&["KEYS", "gantry:{trust:*"]).unwrap();
    assert!(keys.contains(&pseudonymous) && !keys.contains("u-9"), "{keys}");
    let ttl: i64 = server.cli(&["TTL", &pseudonymous]).unwrap().trim().parse().unwrap();
    assert!(ttl > 700 * 86_400, "{ttl}");
    // A record an earlier version wrote under the raw id moves on first read, still blocking.
    server
        .cli(&[
            "HSET",
            "gantry:{trust:studio-42}:user:old-user",
            "blocked",
            "1",
            "score",
            "0.1",
        ])
        .unwrap();
    assert!(trust.status("studio-42", "old-user").await.unwrap().blocked);
    let keys = server.cli(&["KEYS", "gantry:{trust:*"]).unwrap();
    assert!(!keys.contains("old-user"), "the raw-id record moved: {keys}");

    // Issue 25: an operator lifts the block with a reason; the history has every change, newest
    // first, keyed by the pseudonymous key too, and expiring with the record.
    use gantry_safety::TrustAction;
    // The user's appeal, relayed by the platform: recorded, the standing unchanged.
    let before = trust.status("studio-42", "u-9").await.unwrap();
    let s = trust
        .administer(
            "studio-42",
            "u-9",
            TrustAction::Appeal,
            "operator:ops/ab12",
            "user says the image was their own drawing",
        )
        .await
        .unwrap();
    assert_eq!(s.blocked, before.blocked, "an appeal changes nothing by itself");
    assert!((s.score - before.score).abs() < 1e-6);
    let s = trust
        .administer(
            "studio-42",
            "u-9",
            TrustAction::Unblock,
            "operator:ops/ab12",
            "appeal upheld",
        )
        .await
        .unwrap();
    assert!(!s.blocked && s.score < 0.3, "unblocked, the score kept: {s:?}");
    let s = trust
        .administer(
            "studio-42",
            "u-9",
            TrustAction::Adjust(0.5),
            "operator:ops/ab12",
            "false positive",
        )
        .await
        .unwrap();
    assert!((s.score - 0.7).abs() < 1e-9, "{s:?}");
    let h = trust.history("studio-42", "u-9").await.unwrap();
    let seen: Vec<(&str, &str, &str)> = h
        .iter()
        .map(|c| (c.by.as_str(), c.action.as_str(), c.reason.as_str()))
        .collect();
    assert_eq!(
        seen,
        [
            ("operator:ops/ab12", "adjust", "false positive"),
            ("operator:ops/ab12", "unblock", "appeal upheld"),
            (
                "operator:ops/ab12",
                "appeal",
                "user says the image was their own drawing"
            ),
            ("hash_match", "penalty", "test"),
            ("hash_match", "penalty", "test"),
        ]
    );
    assert!(h[2].blocked && h[3].blocked && !h[1].blocked && h[0].delta == Some(0.5));
    let history_key = format!(
        "gantry:{{trust:studio-42}}:history:{}",
        gantry_core::user_key("studio-42", "u-9")
    );
    let ttl: i64 = server.cli(&["TTL", &history_key]).unwrap().trim().parse().unwrap();
    assert!(ttl > 700 * 86_400, "{ttl}");
    let s = trust
        .administer(
            "studio-42",
            "u-9",
            TrustAction::Reset,
            "operator:ops/ab12",
            "new account review",
        )
        .await
        .unwrap();
    assert_eq!((s.score, s.blocked), (1.0, false));

    // Penalties fade: a score recovers linearly from its last change, 1.0 per recovery period
    // (4 s here, 90 days by default); a block stays until an operator lifts it.
    let fading = TrustRegistry::new(c).with_recovery(Some(std::time::Duration::from_secs(4)));
    let s = fading
        .penalize("studio-42", "u-fade", 0.5, 0.3, ("hash_match", "test"))
        .await
        .unwrap();
    assert!((s.score - 0.5).abs() < 0.01, "{s:?}");
    fading.set_blocked("studio-42", "u-fade", true).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(1000)).await;
    let s = fading.status("studio-42", "u-fade").await.unwrap();
    assert!(s.score > 0.7 && s.score < 0.85, "a quarter back after a second: {s:?}");
    assert!(s.blocked, "blocks do not fade");
    // The next penalty starts from the recovered score.
    let s = fading
        .penalize("studio-42", "u-fade", 0.1, 0.3, ("hash_match", "test"))
        .await
        .unwrap();
    assert!(s.score > 0.6 && s.score < 0.75, "{s:?}");
}
