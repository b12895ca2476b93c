//! Erasure on request, end to end: a user of studio-42 has a finished generate job (outputs in
//! the store), one under an idempotency key, a dead-lettered job, a delayed one, a running one
//! and a blocked one (its moderation record must stay); another user of the same tenant has a
//! finished job that must not be touched. `DELETE /v1/users/{id}/data` cancels, stops and
//! deletes, and its receipt counts it. Afterwards nothing of the erased user is left in Redis
//! (but the moderation record, which holds no prompt, and the trust standing), in the object
//! store, or in any process's log; the other user's job and outputs are intact, a second
//! request finds nothing, and only the user's own tenant or an operator may ask.

#![allow(clippy::unwrap_used)] // a panic is how a test reports failure

use crate::common;

use common::*;
use gantry_client::Client;
use gantry_codecs::pdq::{Prescale, hash_dihedral, luma_from_image};
use gantry_mocks::media::{FLAGGED_TINT, MediaCache};
use serde_json::{Value, json};

const CANARY: &str = "erase-canary-51c0";
const USER: &str = "user-to-erase-93b1";
const ADMIN: (&str, &str) = ("Authorization", "Bearer demo-admin-key");
const STUDIO: (&str, &str) = ("Authorization", "Bearer demo-studio-key");

fn as_user(mut job: Value, user: &str) -> Value {
    job["user"] = user.into();
    job
}

fn files_under(dir: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(files_under(&p));
        } else {
            out.push(p.display().to_string());
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn erasing_a_user_leaves_nothing_of_theirs_but_the_moderation_record() {
    let f = fleet(1, 8, &[]);
    let sched = f.sched.addr.as_str();
    let studio = Client::new(&format!("http://{sched}"), "demo-studio-key").unwrap();

    // A hash list that matches the mocks' flagged picture, so one job ends blocked.
    let png = MediaCache::default().image(1024, 1024, false, FLAGGED_TINT);
    let (luma, w, h) = luma_from_image(&image::load_from_memory(&png).unwrap(), Prescale::None);
    let list = format!("pdq:{}\n", hash_dihedral(&luma, w, h).0[0]);
    let (s, _, b) = http_request(
        sched,
        "PUT",
        "/v1/admin/hashlists/known-bad?category=csam",
        &[ADMIN, ("Content-Type", "text/plain")],
        list.as_bytes(),
    );
    assert_eq!(s, 200, "{b}");

    let job = |prompt: String| {
        let url = format!("http://{}/_mock/refs/{CANARY}.png", f.mock.addr);
        let extra = json!({"reference_images": [url]});
        as_user(generate("openai", "gpt-image-1", &["US"], &prompt, extra), USER)
    };
    let done = studio.submit(&job(format!("{CANARY} a lighthouse"))).await.unwrap();
    let keyed = studio
        .submit_idempotent(&job(format!("{CANARY} a harbour")), "order-93b1")
        .await
        .unwrap();
    let mut failing = job(format!("{CANARY} [mock:fail]"));
    failing["max_attempts"] = 1.into();
    let dead = studio.submit(&failing).await.unwrap();
    let blocked = studio
        .submit(&job(format!("[mock:flagged] {CANARY} a portrait")))
        .await
        .unwrap();
    let other = studio
        .submit(&as_user(
            generate("openai", "gpt-image-1", &["US"], "another user's garden", json!({})),
            "someone-else",
        ))
        .await
        .unwrap();
    for (id, want) in [
        (&done.id, "succeeded"),
        (&keyed.id, "succeeded"),
        (&dead.id, "dead"),
        (&blocked.id, "blocked"),
        (&other.id, "succeeded"),
    ] {
        assert_eq!(settled(&studio, id).await.status, want, "{id}");
    }
    let noop = |extra: Value| as_user(json!({"kind": "noop", "payload": extra, "user": "x"}), USER);
    let mut later = noop(json!({}));
    later["delay_ms"] = 600_000.into();
    let delayed = studio.submit(&later).await.unwrap();
    let running = studio.submit(&noop(json!({"sleep_ms": 120_000}))).await.unwrap();
    eventually("the long job runs", std::time::Duration::from_secs(20), || async {
        studio.job(&running.id).await.unwrap().status == "running"
    })
    .await;

    let outputs = f.logs.path().join("outputs");
    let user_folder = outputs
        .join("jobs/studio-42")
        .join(gantry_queue::user_key("studio-42", USER));
    assert!(files_under(&user_folder).len() >= 2, "the user's outputs are stored");
    let others_before = files_under(&outputs.join("jobs/studio-42"))
        .into_iter()
        .filter(|p| !p.starts_with(user_folder.to_str().unwrap()))
        .collect::<Vec<_>>();
    assert!(!others_before.is_empty());
    let (_, before) = everything_in(&f.redis.url()).await;
    assert!(
        before.contains(CANARY) && before.contains(USER),
        "the user's records exist"
    );

    // Another tenant may not erase studio-42's users; a tenant key may not name another tenant.
    let path = format!("/v1/users/{USER}/data");
    let video = ("Authorization", "Bearer demo-video-key");
    let (s, _, b) = http_request(sched, "DELETE", &format!("{path}?tenant=studio-42"), &[video], b"");
    assert_eq!(s, 403, "{b}");
    // Its own erasure of a user id it never had removes nothing of studio-42's.
    let (s, _, b) = http_request(sched, "DELETE", &path, &[video], b"");
    assert_eq!(s, 200, "{b}");
    let r: Value = serde_json::from_str(&b).unwrap();
    assert_eq!(r["jobs"]["deleted"], 0, "{b}");

    let (s, _, b) = http_request(sched, "DELETE", &path, &[STUDIO], b"");
    assert_eq!(s, 200, "{b}");
    let r: Value = serde_json::from_str(&b).unwrap();
    assert_eq!(r["complete"], true, "{b}");
    assert_eq!(r["tenant"], "studio-42");
    let jobs = &r["jobs"];
    // done, keyed, dead, blocked, delayed and the stopped running job
    assert_eq!(jobs["deleted"], 6, "{b}");
    assert_eq!(jobs["cancelled"], 1, "the delayed job: {b}");
    assert_eq!(jobs["dead_letters"], 1, "{b}");
    assert_eq!(jobs["running"], 0, "{b}");
    assert!(r["outputs_deleted"].as_u64().unwrap() >= 2, "{b}");
    assert!(!b.contains(CANARY));

    // Nothing of the user is left in the store; the other user's outputs are.
    assert!(files_under(&user_folder).is_empty(), "{:?}", files_under(&user_folder));
    // Not even the user's (pseudonymous) folder, empty.
    assert!(
        !user_folder.exists(),
        "an empty folder of the user is left: {}",
        user_folder.display()
    );
    for p in &others_before {
        assert!(std::path::Path::new(p).exists(), "{p} was not the erased user's");
    }
    // Nor through the API.
    for id in [&done.id, &keyed.id, &dead.id, &blocked.id, &delayed.id, &running.id] {
        let (s, _, _) = http_request(sched, "GET", &format!("/v1/jobs/{id}"), &[STUDIO], b"");
        assert_eq!(s, 404, "{id}");
    }
    assert_eq!(studio.job(&other.id).await.unwrap().status, "succeeded");
    // The idempotency key no longer leads to the erased job.
    let again = studio
        .submit_idempotent(&job("a new job".into()), "order-93b1")
        .await
        .unwrap();
    assert_ne!(again.id, keyed.id);
    assert!(!again.duplicate);
    let (s, _, _) = http_request(sched, "DELETE", &path, &[STUDIO], b"");
    assert_eq!(s, 200);

    // Nor in Redis: no prompt, no reference URL, no user id, except the moderation record of
    // the blocked job (category, list, time, the prompt's SHA-256 — no prompt), the report the
    // law requires of a CSAM match (it names the account; kept as a legal obligation) and the
    // trust standing it lowered.
    let (_, after) = everything_in(&f.redis.url()).await;
    assert!(!after.contains(CANARY), "the canary is still in Redis:\n{after}");
    for line in after.lines().filter(|l| l.contains(USER)) {
        assert!(
            line.starts_with("gantry:{moderation}:event:") || line.starts_with("gantry:{safety}:report:"),
            "the erased user is still in {line}"
        );
    }
    // The trust standing is kept (a block must survive an erasure), under the user's
    // pseudonymous key alone, and expires.
    let trust_key = format!(
        "gantry:{{trust:studio-42}}:user:{}",
        gantry_queue::user_key("studio-42", USER)
    );
    assert!(after.contains(&trust_key), "the trust standing is kept:\n{after}");
    assert!(
        after.contains("gantry:{moderation}:event:"),
        "the moderation record is kept"
    );
    assert!(after.contains("users.erase"), "the erasure is audited");

    // Nor in any log.
    for log in files_under(f.logs.path()).iter().filter(|p| p.ends_with(".log")) {
        let text = std::fs::read_to_string(log).unwrap();
        assert!(!text.contains(CANARY), "the canary is in {log}");
        assert!(!text.contains(USER), "the user id is in {log}");
    }
    let (_, metrics) = http_get(&f.sched.metrics_addr, "/metrics");
    assert!(
        metrics.contains(r#"gantry_user_erasures_total{outcome="complete"} 3"#),
        "{metrics}"
    );
    assert!(
        std::fs::read_to_string(f.logs.path().join("scheduler.log"))
            .unwrap()
            .contains("user data erased"),
        "the scheduler logged the erasure (by pseudonymous key)"
    );

    // An operator erases for any tenant by naming it; without a store configured, erasure is
    // refused rather than half done.
    let (s, _, b) = http_request(sched, "DELETE", &format!("{path}?tenant=studio-42"), &[ADMIN], b"");
    assert_eq!(s, 200, "{b}");
    let bare = SchedulerProcess::start(&f.redis.url(), None);
    let (s, _, b) = http_request(&bare.addr, "DELETE", &path, &[STUDIO], b"");
    assert_eq!(s, 503, "{b}");
    assert!(b.contains("not_configured"), "{b}");
    let (s, _, _) = http_request(&bare.addr, "DELETE", &path, &[], b"");
    assert_eq!(s, 401);
}

/// `gantry users erase` runs the same audited service as the API: the user's records and
/// outputs go, the other user's stay, the audit log names the CLI's operator, and a user id
/// the API would refuse is refused with exit status 2, nothing erased.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_erases_through_the_same_service_as_the_api() {
    let f = fleet(1, 8, &[]);
    let sched = f.sched.addr.as_str();
    let studio = Client::new(&format!("http://{sched}"), "demo-studio-key").unwrap();
    let user = "cli-erased-user-7d2e";
    let image = |who: &str| {
        as_user(
            generate("openai", "gpt-image-1", &["US"], "a quiet street", json!({})),
            who,
        )
    };
    let mine = studio.submit(&image(user)).await.unwrap();
    let theirs = studio.submit(&image("kept-user-7d2e")).await.unwrap();
    for id in [&mine.id, &theirs.id] {
        assert_eq!(settled(&studio, id).await.status, "succeeded", "{id}");
    }
    let mut later = as_user(json!({"kind": "noop", "payload": {}, "user": "x"}), user);
    later["delay_ms"] = 600_000.into();
    let delayed = studio.submit(&later).await.unwrap();
    let outputs = f.logs.path().join("outputs");
    let folder = |who: &str| {
        outputs
            .join("jobs/studio-42")
            .join(gantry_queue::user_key("studio-42", who))
    };
    assert!(!files_under(&folder(user)).is_empty(), "the user's output is stored");
    let url = f.redis.url();
    let outputs_arg = outputs.to_str().unwrap();

    // `gantry users erase --tenant studio-42 --outputs DIR ARGS...`
    let erase = |args: &[&str]| {
        let mut all = vec!["users", "erase", "--tenant", "studio-42", "--outputs", outputs_arg];
        all.extend_from_slice(args);
        gantry(&url, &all)
    };

    // A user id with a control character: refused, exit 2, nothing erased.
    let bad = erase(&["bad\u{7}user"]);
    assert_eq!(bad.status.code(), Some(2), "{}", String::from_utf8_lossy(&bad.stderr));
    assert_eq!(studio.job(&mine.id).await.unwrap().status, "succeeded");

    let out = erase(&["--json", user]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}\n{}", String::from_utf8_lossy(&out.stderr));
    let r: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(r["complete"], true, "{r}");
    assert_eq!(r["jobs"]["deleted"], 2, "the finished and the delayed job: {r}");
    assert_eq!(r["jobs"]["cancelled"], 1, "the delayed job: {r}");
    assert!(r["outputs_deleted"].as_u64().unwrap() >= 1, "{r}");
    assert_eq!(r["user_key"], gantry_queue::user_key("studio-42", user));
    assert!(!text.contains(user), "the receipt names the key, not the user");

    assert!(!folder(user).exists(), "the user's folder is gone");
    assert!(
        !files_under(&folder("kept-user-7d2e")).is_empty(),
        "the other user's output stays"
    );
    for id in [&mine.id, &delayed.id] {
        let (s, _, _) = http_request(sched, "GET", &format!("/v1/jobs/{id}"), &[STUDIO], b"");
        assert_eq!(s, 404, "{id}");
    }
    assert_eq!(studio.job(&theirs.id).await.unwrap().status, "succeeded");

    // Audited like the API's erasure, with the CLI's operator as the actor.
    let (s, _, b) = http_request(sched, "GET", "/v1/admin/audit?limit=10", &[ADMIN], b"");
    assert_eq!(s, 200, "{b}");
    let audit: Value = serde_json::from_str(&b).unwrap();
    let entry = audit["audit"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["action"] == "users.erase")
        .unwrap_or_else(|| panic!("no users.erase entry: {b}"));
    assert!(entry["actor"].as_str().unwrap().starts_with("cli/"), "{entry}");
    assert!(!b.contains(user), "the audit log names the pseudonymous key: {b}");

    // Idempotent: a second run finds nothing.
    let again = erase(&["--json", user]);
    let r: Value = serde_json::from_slice(&again.stdout).unwrap();
    assert_eq!(r["jobs"]["deleted"], 0, "{r}");
    assert_eq!(r["complete"], true, "{r}");
}
