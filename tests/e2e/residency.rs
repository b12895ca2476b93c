//! Proof of data residency from the providers' side: jobs for users who consented to different
//! regions go through the scheduler and a worker to the mock providers, including a rerouted
//! request (a US-only model asked for by an EU-only user), a refused one (no provider in the
//! consented region) and circuit-breaker fallbacks. The mocks' request log — every call any
//! provider received, with its region — must show no call in a region the job's user did not
//! consent to.

#![allow(clippy::unwrap_used)] // a panic is how a test reports failure

use crate::common;

use std::collections::{BTreeMap, BTreeSet};

use common::*;
use gantry_client::Client;
use serde_json::{Value, json};

fn job(user: &str, provider: &str, model: &str, regions: &[&str], prompt: &str, extra: Value) -> Value {
    let mut j = generate(provider, model, regions, prompt, extra);
    j["user"] = user.into();
    j
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_provider_call_leaves_the_users_consented_regions() {
    let f = fleet_with(1, 8, &[], &["--breaker-open-secs", "20"]);
    let api = Client::new(&format!("http://{}", f.sched.addr), "demo-studio-key").unwrap();
    let no = json!({});
    // (user, provider, model, consented regions, prompt)
    let cases: Vec<(&str, &str, &str, Vec<&str>, String)> = vec![
        ("u-us", "openai", "gpt-image-1", vec!["US"], "us openai".into()),
        ("u-us", "gemini", "imagen-4", vec!["US"], "us imagen".into()),
        ("u-us", "flux", "flux-2-pro", vec!["US"], "us flux".into()),
        ("u-eu", "flux", "flux-2-pro", vec!["EU"], "eu flux".into()),
        // A US-only model for an EU-only user: admission reroutes it within the EU.
        ("u-eu", "openai", "gpt-image-1", vec!["EU"], "eu asks openai".into()),
        ("u-sg", "seedream", "seedream-4.0", vec!["SG"], "sg seedream".into()),
        ("u-sg", "kling", "kling-image", vec!["SG"], "sg kling".into()),
        ("u-cn", "kling", "kling-image", vec!["CN"], "cn kling".into()),
        ("u-sg", "kling", "kling-v3-std", vec!["SG"], "sg kling video".into()),
    ];
    let mut allowed: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut ids = Vec::new();
    for (user, provider, model, regions, prompt) in &cases {
        let extra = if model.contains("v3") {
            json!({"duration_secs": 5})
        } else {
            no.clone()
        };
        let a = api
            .submit(&job(user, provider, model, regions, prompt, extra))
            .await
            .unwrap();
        allowed.insert(
            gantry_mocks::prompt_key(prompt),
            regions.iter().map(|r| r.to_ascii_lowercase()).collect(),
        );
        ids.push(a.id);
    }
    // No provider in Brazil: refused at admission, nothing sent anywhere.
    let br = api
        .submit(&job("u-br", "openai", "gpt-image-1", &["BR"], "br openai", json!({})))
        .await;
    assert!(format!("{br:?}").contains("no_allowed_provider"), "{br:?}");
    allowed.insert(gantry_mocks::prompt_key("br openai"), BTreeSet::new());
    for id in &ids {
        let j = settled(&api, id).await;
        assert_eq!(j.status, "succeeded", "{j:?}");
    }

    // Fallbacks: Flux's EU circuit opens after five outages; an EU+SG user falls back to
    // Singapore, an EU-only user waits for Flux in the EU.
    f.mock.script_faults("flux", "server_error", 5).await;
    for (user, regions, prompt) in [
        ("u-eu-sg", vec!["EU", "SG"], "fallback eu sg"),
        ("u-eu", vec!["EU"], "fallback eu only"),
    ] {
        let a = api
            .submit(&job(user, "flux", "flux-2-pro", &regions, prompt, json!({})))
            .await
            .unwrap();
        allowed.insert(
            gantry_mocks::prompt_key(prompt),
            regions.iter().map(|r| r.to_ascii_lowercase()).collect(),
        );
        let j = settled(&api, &a.id).await;
        assert_eq!(j.status, "succeeded", "{user}: {j:?}");
    }

    let log = f.mock.requests().await;
    let mut seen: BTreeMap<(String, String), usize> = BTreeMap::new();
    let mut checked = 0;
    for e in &log {
        let (Some(key), Some(region), Some(provider)) =
            (e["key"].as_str(), e["region"].as_str(), e["provider"].as_str())
        else {
            continue;
        };
        let Some(ok) = allowed.get(key) else { continue };
        assert!(
            ok.contains(&region.to_ascii_lowercase()),
            "a call to {provider} in {region} for a user who consented to {ok:?}: {e}"
        );
        *seen.entry((provider.to_owned(), region.to_owned())).or_default() += 1;
        checked += 1;
    }
    let key = |p: &str| gantry_mocks::prompt_key(p);
    assert!(
        !log.iter().any(|e| e["key"] == key("br openai").as_str()),
        "the refused job reached no provider"
    );
    // The reroute and the fallback really happened, inside consent.
    let regions_of = |p: &str| -> BTreeSet<String> {
        log.iter()
            .filter(|e| e["key"] == key(p).as_str())
            .filter_map(|e| Some(format!("{}@{}", e["provider"].as_str()?, e["region"].as_str()?)))
            .collect()
    };
    assert!(
        regions_of("eu asks openai")
            .iter()
            .all(|r| r.ends_with("@eu") || r.ends_with("@EU")),
        "{:?}",
        regions_of("eu asks openai")
    );
    assert!(
        regions_of("fallback eu sg")
            .iter()
            .any(|r| r.to_ascii_lowercase().ends_with("@sg")),
        "the EU+SG user fell back to Singapore: {:?}",
        regions_of("fallback eu sg")
    );
    assert!(
        regions_of("fallback eu only")
            .iter()
            .all(|r| r.to_ascii_lowercase().ends_with("@eu")),
        "{:?}",
        regions_of("fallback eu only")
    );
    let distinct: BTreeSet<&str> = seen.keys().map(|(_, r)| r.as_str()).collect();
    assert!(distinct.len() >= 4, "calls in US, EU, SG and CN: {seen:?}");
    assert!(checked >= 11, "{checked} provider calls checked: {seen:?}");
}
