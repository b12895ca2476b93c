//! Generate jobs end to end: redis-server, `gantry mock-providers`, `gantry scheduler` and
//! `gantry worker --mock-providers` as real processes, driven over HTTP with gantry-client.

#![allow(clippy::unwrap_used)] // a panic is how a test reports failure

use crate::common;

use std::collections::BTreeMap;

use common::*;
use gantry_client::Client;
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_provider_runs_through_the_fleet_and_is_charged_from_usage() {
    let f = fleet(1, 16, &[]);
    let api = Client::new(&format!("http://{}", f.sched.addr), "demo-studio-key").unwrap();
    let cases = [
        ("openai", "gpt-image-1", vec!["US"], json!({}), "image/png"),
        ("gemini", "gemini-2.5-flash-image", vec!["US"], json!({}), "image/png"),
        ("gemini", "imagen-4", vec!["US"], json!({}), "image/png"),
        (
            "veo",
            "veo-3-fast",
            vec!["US"],
            json!({"duration_secs": 8}),
            "video/mp4",
        ),
        (
            "kling",
            "kling-v3-std",
            vec!["SG"],
            json!({"duration_secs": 5}),
            "video/mp4",
        ),
        ("kling", "kling-image", vec!["CN"], json!({}), "image/png"),
        ("seedream", "seedream-4.0", vec!["SG"], json!({}), "image/jpeg"),
        (
            "flux",
            "flux-2-pro",
            vec!["EU"],
            json!({"width": 640, "height": 480}),
            "image/png",
        ),
    ];
    let mut ids = Vec::new();
    for (provider, model, regions, extra, _) in &cases {
        let prompt = format!("a red fox in snow, {model} [mock:pending=2]");
        let a = api
            .submit(&generate(provider, model, regions, &prompt, extra.clone()))
            .await
            .unwrap();
        assert_eq!(a.provider.as_deref(), Some(*provider));
        ids.push((a.id, a.credits_reserved));
    }
    for ((id, reserved), (provider, model, _, _, content_type)) in ids.iter().zip(&cases) {
        let j = settled(&api, id).await;
        assert_eq!(j.status, "succeeded", "{provider}/{model}: {j:?}");
        assert_eq!(
            j.result.as_ref().unwrap()["content_type"],
            *content_type,
            "{provider}/{model}"
        );
        let c = j.credits.unwrap();
        assert_eq!(
            (c.state.as_str(), c.charged),
            ("charged", *reserved),
            "{provider}/{model}: usage {:?}",
            j.usage
        );
        assert!(*reserved > 0);
    }
    // Refusals: moderation and an exhausted quota dead-letter at once and are refunded.
    let moderated = api
        .submit(&generate(
            "flux",
            "flux-2-pro",
            &["EU"],
            "[mock:moderated_output]",
            json!({}),
        ))
        .await
        .unwrap();
    let quota = api
        .submit(&generate("kling", "kling-image", &["SG"], "[mock:quota]", json!({})))
        .await
        .unwrap();
    let refused_prompt = api
        .submit(&generate(
            "openai",
            "gpt-image-1",
            &["US"],
            "[mock:moderated] zq-refusal",
            json!({}),
        ))
        .await
        .unwrap();
    for (id, class) in [
        (&moderated.id, "moderated"),
        (&quota.id, "quota_exhausted"),
        (&refused_prompt.id, "moderated"),
    ] {
        let j = settled(&api, id).await;
        assert_eq!((j.status.as_str(), j.attempts), ("dead", 1), "{class}: {j:?}");
        let msg = j.error.as_ref().unwrap()["message"].as_str().unwrap().to_owned();
        assert!(msg.contains(class), "{msg}");
        assert_eq!(j.credits.unwrap().state, "refunded");
    }
    // The providers' safety refusals are moderation events, with a trust penalty; the quota is
    // not. What was refused comes from the provider's code: BFL's "Content Moderated" is the
    // output, OpenAI's moderation_blocked the prompt. The prompt only by its SHA-256.
    let (s, _, body) = http_request(
        &f.sched.addr,
        "GET",
        "/v1/admin/moderation-events?limit=50",
        &[("Authorization", "Bearer demo-admin-key")],
        b"",
    );
    assert_eq!(s, 200, "{body}");
    let events: Value = serde_json::from_str(&body).unwrap();
    let events = events["moderation_events"].as_array().unwrap();
    let event_of = |id: &str| events.iter().find(|e| e["job_id"] == id).cloned();
    for (id, provider, category) in [
        (&moderated.id, "flux", "unsafe_output"),
        (&refused_prompt.id, "openai", "unsafe_prompt"),
    ] {
        let e = event_of(id).unwrap_or_else(|| panic!("no moderation event for {provider}'s refusal: {events:?}"));
        assert_eq!(e["list"], format!("provider:{provider}"), "{e}");
        assert_eq!(
            (e["category"].as_str(), e["action"].as_str()),
            (Some(category), Some("refused_by_provider")),
            "{e}"
        );
        assert!(e["trust_score"].as_f64().unwrap() < 1.0, "a trust penalty: {e}");
        assert_eq!(e["prompt_sha256"].as_str().map(str::len), Some(64), "{e}");
    }
    assert!(event_of(&quota.id).is_none(), "a spent quota is not a moderation event");
    assert!(!body.contains("zq-refusal"), "no prompt text in moderation events");

    // Trust administration: the operator sees the penalties in the user's history, and
    // changes the standing only with a reason, audited; a tenant's key may not.
    let admin = ("Authorization", "Bearer demo-admin-key");
    let json_body = ("Content-Type", "application/json");
    let trust = "/v1/admin/trust/studio-42/u-gen";
    let (s, _, body) = http_request(&f.sched.addr, "GET", trust, &[admin], b"");
    assert_eq!(s, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["user_key"], gantry_queue::user_key("studio-42", "u-gen"));
    let refusals = v["history"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["by"] == "provider_refusal" && c["action"] == "penalty")
        .count();
    assert_eq!(refusals, 2, "{v}");
    assert!(
        v["score"].as_f64().unwrap() < 1.0 && !body.contains("zq-refusal"),
        "{v}"
    );
    let (s, _, b) = http_request(
        &f.sched.addr,
        "POST",
        trust,
        &[admin, json_body],
        br#"{"action":"reset"}"#,
    );
    assert_eq!(s, 400, "a reason is required: {b}");
    let (s, _, b) = http_request(
        &f.sched.addr,
        "POST",
        trust,
        &[("Authorization", "Bearer demo-studio-key"), json_body],
        br#"{"action":"reset","reason":"mine"}"#,
    );
    assert_eq!(s, 403, "{b}");
    let (s, _, b) = http_request(
        &f.sched.addr,
        "POST",
        trust,
        &[admin, json_body],
        br#"{"action":"adjust","delta":0.2,"reason":"refusals were the provider's false positives"}"#,
    );
    assert_eq!(s, 200, "{b}");
    let (_, _, audit) = http_request(&f.sched.addr, "GET", "/v1/admin/audit?limit=10", &[admin], b"");
    assert!(
        audit.contains("trust.adjust") && audit.contains("false positives") && !audit.contains("u-gen"),
        "audited under the pseudonymous key: {audit}"
    );
    // Residency: a user who consented to EU only is never sent to OpenAI (US).
    let a = api
        .submit(&generate("openai", "gpt-image-1", &["EU"], "a lighthouse", json!({})))
        .await
        .unwrap();
    assert_eq!(a.provider.as_deref(), Some("flux"));
    assert_eq!(settled(&api, &a.id).await.status, "succeeded");
    let log = f.mock.requests().await;
    assert!(
        log.iter()
            .all(|e| !(e["provider"] == "openai" && e["key"] == gantry_mocks::prompt_key("a lighthouse"))),
        "no EU-only job reached a US provider"
    );
    assert!(
        log.iter().all(|e| !e.to_string().contains("a red fox")),
        "prompts never appear in the log"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fault_storm_of_1000_jobs_all_succeed_and_honour_retry_after() {
    // 30 % of provider calls answer 429 with Retry-After: 1, 5 % answer 500.
    let f = fleet(
        2,
        150,
        &["--rate-429", "0.3", "--rate-5xx", "0.05", "--retry-after-secs", "1"],
    );
    let api = Client::new(&format!("http://{}", f.sched.addr), "demo-studio-key").unwrap();
    let before = api.balance().await.unwrap();
    let jobs: Vec<Value> = (0..1000)
        .map(|i| {
            if i % 5 != 0 {
                generate("openai", "gpt-image-1", &["US"], &format!("storm {i}"), json!({}))
            } else {
                generate(
                    "flux",
                    "flux-2-pro",
                    &["EU"],
                    &format!("storm {i}"),
                    json!({"width": 512, "height": 512}),
                )
            }
        })
        .collect();
    let mut ids = Vec::new();
    for chunk in jobs.chunks(500) {
        ids.extend(
            api.submit_batch(chunk)
                .await
                .unwrap()
                .into_iter()
                .map(|a| (a.id, a.credits_reserved)),
        );
    }
    let mut outcomes: BTreeMap<String, usize> = BTreeMap::new();
    let mut charged = 0;
    let (mut span, mut attempts) = ((u64::MAX, 0u64), 0);
    // Each prompt's job and its attempts (a job is submitted once per attempt at most).
    let mut attempts_of: BTreeMap<String, u32> = BTreeMap::new();
    for (i, (id, reserved)) in ids.iter().enumerate() {
        let j = settled(&api, id).await;
        attempts_of.insert(gantry_mocks::prompt_key(&format!("storm {i}")), j.attempts);
        span = (span.0.min(j.enqueued_at_ms), span.1.max(j.finished_at_ms.unwrap_or(0)));
        attempts += j.attempts;
        *outcomes.entry(j.status.clone()).or_default() += 1;
        let c = j.credits.unwrap();
        assert_eq!(c.charged, *reserved, "{id}: charged from usage, once");
        charged += c.charged;
    }
    eprintln!(
        "storm: {} ms from first enqueue to last finish, {attempts} attempts",
        span.1 - span.0
    );
    assert_eq!(outcomes.get("succeeded"), Some(&1000), "{outcomes:?}");
    assert_eq!(
        api.balance().await.unwrap(),
        before - charged,
        "the balance moved by exactly the charges"
    );
    let log = f.mock.requests().await;
    let (mut limited, mut errors) = (0, 0);
    for (i, e) in log.iter().enumerate() {
        if e["status"] == 500 {
            errors += 1;
        }
        let Some(ra) = e["retry_after_secs"].as_u64().filter(|_| e["status"] == 429) else {
            continue;
        };
        limited += 1;
        let next = log[i + 1..]
            .iter()
            .filter(|n| n["key"] == e["key"] && n["provider"] == e["provider"])
            .min_by_key(|n| n["at_ms"].as_u64());
        if let Some(n) = next {
            let gap = n["at_ms"].as_u64().unwrap() - e["at_ms"].as_u64().unwrap();
            assert!(
                gap >= ra * 1000,
                "a retry {gap} ms after a {ra}s Retry-After: {e} then {n}"
            );
        }
    }
    assert!(
        limited > 300 && errors > 30,
        "the storm happened: {limited} 429s, {errors} 500s in {} calls",
        log.len()
    );
    // BFL caps an account at 24 tasks in flight; the workers share that cap through Redis.
    // Each task's polls lie inside the time its slot was held, so their spans never overlap
    // more than 24 deep.
    let mut spans: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    for e in log
        .iter()
        .filter(|e| e["provider"] == "flux" && e["path"] == "/v1/get_result")
    {
        let at = e["at_ms"].as_u64().unwrap();
        let s = spans.entry(e["key"].as_str().unwrap().to_owned()).or_insert((at, at));
        *s = (s.0.min(at), s.1.max(at));
    }
    let mut edges: Vec<(u64, i32)> = spans.values().flat_map(|&(a, b)| [(a, 1), (b + 1, -1)]).collect();
    edges.sort();
    let (mut depth, mut deepest) = (0, 0);
    for (_, d) in edges {
        depth += d;
        deepest = deepest.max(depth);
    }
    // Every accepted flux submit is one task, polled; no prompt was accepted more often than
    // its job had attempts (BFL cannot look a task up by our id, so an attempt that failed
    // after its submit — polls refused past their retries — submits again on the next one).
    // Besides the 200 flux jobs, a few OpenAI jobs may fall back to flux when the storm trips
    // OpenAI's circuit breaker (US-consented, and flux serves the US).
    let accepted: Vec<&str> = log
        .iter()
        .filter(|e| e["provider"] == "flux" && e["method"] == "POST" && e["status"] == 200)
        .filter_map(|e| e["key"].as_str())
        .collect();
    let mut per_prompt: BTreeMap<&str, u32> = BTreeMap::new();
    for k in &accepted {
        *per_prompt.entry(k).or_default() += 1;
    }
    for (k, n) in &per_prompt {
        let allowed = attempts_of.get(*k).copied().unwrap_or(1);
        assert!(
            *n <= allowed,
            "prompt {k} accepted {n} times by flux in {allowed} attempt(s)"
        );
    }
    assert!(
        spans.len() == accepted.len() && per_prompt.len() >= 200,
        "{} flux tasks polled, {} accepted, {} prompts",
        spans.len(),
        accepted.len(),
        per_prompt.len()
    );
    assert!(deepest <= 24, "at most {deepest} flux tasks in flight");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_mode_ends_tasks_on_the_providers_call_and_polling_covers_a_lost_one() {
    let port = gantry_testkit::free_port();
    let addr = format!("127.0.0.1:{port}");
    let base = format!("http://{addr}");
    let f = fleet_with(1, 8, &[], &["--metrics-addr", &addr, "--webhook-base", &base]);
    let api = Client::new(&format!("http://{}", f.sched.addr), "demo-studio-key").unwrap();
    // Thirty pending polls would take most of a minute at the safety-net pace; the mock calls
    // back after 1.5 s.
    let called = [
        generate(
            "flux",
            "flux-2-pro",
            &["EU"],
            "a kite festival [mock:pending=30]",
            json!({}),
        ),
        generate(
            "kling",
            "kling-v3-std",
            &["SG"],
            "waves on a pier [mock:pending=30]",
            json!({"duration_secs": 5}),
        ),
    ];
    let lost = generate(
        "flux",
        "flux-2-pro",
        &["US"],
        "a quiet library [mock:pending=4,lose_callback]",
        json!({}),
    );
    let mut ids: Vec<String> = Vec::new();
    for j in called.iter().chain([&lost]) {
        ids.push(api.submit(j).await.unwrap().id);
    }
    for id in &ids {
        let j = settled(&api, id).await;
        assert_eq!(j.status, "succeeded", "{j:?}");
        assert_eq!(j.credits.as_ref().unwrap().state, "charged");
    }
    for id in &ids[..2] {
        let j = api.job(id).await.unwrap();
        let took = j.finished_at_ms.unwrap() - j.enqueued_at_ms;
        assert!(took < 15_000, "ended by its webhook, not by 30 polls: {took} ms");
    }
    let log = f.mock.requests().await;
    let callbacks: Vec<&Value> = log.iter().filter(|e| e["method"] == "CALLBACK").collect();
    assert_eq!(
        callbacks.len(),
        2,
        "one call per task, none for the lost one: {callbacks:?}"
    );
    for c in &callbacks {
        assert_eq!(c["status"], 200, "the worker accepted the call: {c}");
        let polls = log
            .iter()
            .filter(|e| {
                e["method"] == "GET" && e["key"] == c["key"] && !e["path"].as_str().unwrap().starts_with("/files")
            })
            .count();
        assert!(polls < 10, "{polls} polls of a task that called back");
    }
    // A forged call is refused.
    let r = reqwest::Client::new()
        .post(format!("{base}/webhooks/flux/someone-else/0000"))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_circuit_falls_back_to_another_consented_provider() {
    let f = fleet_with(1, 4, &[], &["--breaker-open-secs", "8"]);
    let api = Client::new(&format!("http://{}", f.sched.addr), "demo-studio-key").unwrap();
    // Flux fails five calls in a row: that opens its EU circuit (for 8 s here).
    f.mock.script_faults("flux", "server_error", 5).await;
    // A user who consented to the EU and Singapore: Flux (EU) first, then Seedream (SG).
    let a = api
        .submit(&generate(
            "flux",
            "flux-2-pro",
            &["EU", "SG"],
            "a paper boat in rain",
            json!({}),
        ))
        .await
        .unwrap();
    let j = settled(&api, &a.id).await;
    assert_eq!(j.status, "succeeded", "{j:?}");
    assert_eq!(
        j.result.as_ref().unwrap()["content_type"],
        "image/jpeg",
        "made by Seedream"
    );
    assert_eq!(
        j.credits.as_ref().unwrap().charged,
        a.credits_reserved,
        "charged once, at the admitted price"
    );
    // An EU-only user is never sent to Singapore: while Flux's circuit is open the attempt
    // fails and the job waits until the circuit lets a probe through, then runs on Flux.
    let eu = api
        .submit(&generate(
            "flux",
            "flux-2-pro",
            &["EU"],
            "a lantern on a lake",
            json!({}),
        ))
        .await
        .unwrap();
    let j = settled(&api, &eu.id).await;
    assert_eq!((j.status.as_str(), j.attempts), ("succeeded", 2), "{j:?}");
    assert_eq!(j.result.as_ref().unwrap()["content_type"], "image/png", "made by Flux");
    let waited = j.finished_at_ms.unwrap() - j.enqueued_at_ms;
    assert!(waited >= 1_500, "the retry waited for the circuit ({waited} ms)");
    let log = f.mock.requests().await;
    let key = gantry_mocks::prompt_key("a lantern on a lake");
    assert!(
        log.iter().all(|e| !(e["key"] == key && e["region"] != "eu")),
        "an EU-only job reached no other region"
    );
}

/// A provider that reports how far along its task is (BFL's `progress`) shows through to the
/// job: stage `generating` with a percent that only grows, then none once it has succeeded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_providers_own_percent_shows_as_the_jobs_progress() {
    let f = fleet(1, 4, &[]);
    let api = Client::new(&format!("http://{}", f.sched.addr), "demo-studio-key").unwrap();
    let a = api
        .submit(&generate(
            "flux",
            "flux-kontext-pro",
            &["US"],
            "[mock:pending=14] a harbour at dawn",
            json!({}),
        ))
        .await
        .unwrap();
    let mut seen: Vec<f64> = Vec::new();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let j = api.job(&a.id).await.unwrap();
        if let Some(p) = j.progress.as_ref()
            && p["stage"] == "generating"
            && let Some(pct) = p["percent"].as_f64()
        {
            seen.push(pct);
        }
        if j.status == "succeeded" {
            assert!(j.progress.is_none(), "{j:?}");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{j:?} {seen:?}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(
        seen.iter().any(|p| *p > 0.0 && *p < 100.0),
        "a percent between: {seen:?}"
    );
    assert!(seen.windows(2).all(|w| w[0] <= w[1]), "only grows: {seen:?}");
}
