//! Every provider client against its mock: the happy path with real media, every error class,
//! polling to completion, expired result URLs, `Retry-After` honoured, Kling's JWT checked.

#![allow(clippy::unwrap_used)] // a panic is how a test reports failure

use std::time::Duration;

use gantry_mocks::{Faults, MockServer, prompt_key};
use gantry_providers::breaker::{Breaker, BreakerConfig};
use gantry_providers::media::{self, MediaLimits};
use gantry_providers::retry::Backoff;
use gantry_providers::run::{NoHooks, RunError, RunOptions, run};
use gantry_providers::task::PollSchedule;
use gantry_providers::{GenerateRequest, ProviderErrorClass, ProvidersConfig, Registry};
use tokio_util::sync::CancellationToken;

/// (provider, region, our model, video, results are URLs)
const TARGETS: &[(&str, &str, &str, bool, bool)] = &[
    ("openai", "US", "gpt-image-1", false, false),
    ("gemini", "US", "gemini-2.5-flash-image", false, false),
    ("gemini", "US", "imagen-4", false, false),
    ("veo", "US", "veo-3-fast", true, false),
    ("kling", "SG", "kling-v3-std", true, true),
    ("kling", "CN", "kling-image", false, true),
    ("seedream", "SG", "seedream-4.0", false, true),
    ("seedream", "SG", "seedance-1-0-pro", true, true),
    ("flux", "EU", "flux-2-pro", false, true),
];

fn registry(mock: &MockServer) -> Registry {
    let mut cfg = ProvidersConfig::production().mocked(&mock.url());
    for p in cfg.providers.values_mut() {
        p.poll_initial_ms = 5;
        p.poll_max_ms = 20;
        p.request_timeout_secs = 3;
    }
    Registry::build(&cfg).unwrap()
}

fn request(model: &str, video: bool, prompt: &str) -> GenerateRequest {
    GenerateRequest {
        external_id: format!("job-{}", prompt_key(prompt)),
        model: model.into(),
        prompt: prompt.into(),
        negative_prompt: None,
        reference_images: vec![],
        width: Some(640),
        height: Some(480),
        duration_secs: video.then_some(5),
        samples: 1,
        video,
        callback: None,
    }
}

fn options() -> RunOptions {
    RunOptions {
        backoff: Backoff {
            base: Duration::from_millis(5),
            max: Duration::from_millis(50),
            max_retries: 3,
        },
        poll: PollSchedule {
            initial: Duration::from_millis(5),
            max: Duration::from_millis(20),
        },
        deadline: tokio::time::Instant::now() + Duration::from_secs(30),
        resume: None,
        webhook: None,
    }
}

/// Runs one generation and downloads its results; `Ok(content types)` or the error's class and code.
async fn generate(
    reg: &Registry,
    t: (&str, &str, &str, bool, bool),
    prompt: &str,
) -> Result<Vec<&'static str>, (ProviderErrorClass, Option<String>)> {
    let (provider, region, model, video, _) = t;
    let (_, client) = reg.client(provider, &[region.to_owned()]).unwrap();
    let breaker = Breaker::new(BreakerConfig::default());
    let req = request(model, video, prompt);
    let got = run(
        client.as_ref(),
        &breaker,
        &req,
        &options(),
        &CancellationToken::new(),
        &mut NoHooks,
    )
    .await;
    let g = match got {
        Ok(g) => g,
        Err(RunError::Provider(e)) => return Err((e.class, e.code)),
        Err(other) => panic!("{provider}/{model}: {other}"),
    };
    assert_eq!(
        g.usage.outputs,
        Some(g.artifacts.len() as u32),
        "{provider}/{model}: usage counts outputs"
    );
    let mut types = Vec::new();
    for a in g.artifacts {
        // The mock serves results on loopback, which the guarded client fetches only when told.
        let allow = match &a {
            gantry_providers::Artifact::Url { url } => reqwest::Url::parse(url)
                .ok()
                .and_then(|u| u.socket_addrs(|| None).ok())
                .unwrap_or_default(),
            _ => Vec::new(),
        };
        let http = gantry_providers::fetch::GuardedClient::new(allow, Duration::from_secs(5)).unwrap();
        match media::fetch(client.name(), &http, a, &MediaLimits::default()).await {
            Ok(m) => types.push(m.content_type),
            Err(e) => return Err((e.class, e.code)),
        }
    }
    Ok(types)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_provider_succeeds_with_real_media_after_polling() {
    let mock = MockServer::start("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let reg = registry(&mock);
    for &t in TARGETS {
        let types = generate(&reg, t, &format!("a lighthouse at dawn for {} [mock:pending=3]", t.2))
            .await
            .unwrap_or_else(|e| panic!("{t:?}: {e:?}"));
        let want = if t.3 { "video/mp4" } else { "image/" };
        assert!(
            !types.is_empty() && types.iter().all(|c| c.starts_with(want)),
            "{t:?}: {types:?}"
        );
    }
    // Poll-mode tasks were polled through their pending states.
    let log = mock.state().requests();
    let kling_polls = log
        .iter()
        .filter(|e| e.provider == "kling" && e.method == "GET" && !e.path.starts_with("/files"))
        .count();
    assert!(kling_polls >= 8, "two Kling tasks, four polls each: {kling_polls}");
    assert!(
        log.iter()
            .all(|e| e.headers.get("authorization").is_none_or(|v| v == "<redacted>")
                && e.headers.get("x-key").is_none_or(|v| v == "<redacted>")),
        "the log keeps no secrets"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_error_class_is_classified_per_provider() {
    let mock = MockServer::start("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let reg = registry(&mock);
    for &t in TARGETS {
        let p = |d: &str| format!("{} {} [mock:{d}]", t.0, t.2);
        let class = |r: Result<Vec<&str>, (ProviderErrorClass, Option<String>)>| r.err().map(|e| e.0);
        assert_eq!(
            class(generate(&reg, t, &p("quota")).await),
            Some(ProviderErrorClass::QuotaExhausted),
            "{t:?} quota"
        );
        assert_eq!(
            class(generate(&reg, t, &p("moderated")).await),
            Some(ProviderErrorClass::Moderated),
            "{t:?} moderated"
        );
        assert_eq!(
            class(generate(&reg, t, &p("moderated_output,pending=1")).await),
            Some(ProviderErrorClass::Moderated),
            "{t:?} output moderated"
        );
        assert_eq!(
            class(generate(&reg, t, &p("5xx=10")).await),
            Some(ProviderErrorClass::Transient),
            "{t:?} outage"
        );
        for recoverable in ["5xx=1", "malformed=1", "truncated=1", "concurrency=1"] {
            let r = generate(&reg, t, &p(recoverable)).await;
            assert!(r.is_ok(), "{t:?} {recoverable} is retried: {r:?}");
        }
        if t.4 {
            let e = generate(&reg, t, &p("expired")).await.unwrap_err();
            assert_eq!(
                e,
                (ProviderErrorClass::Transient, Some("result_expired".into())),
                "{t:?}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limits_are_retried_never_before_retry_after() {
    let mock = MockServer::start("127.0.0.1:0".parse().unwrap()).await.unwrap();
    mock.state().set_faults(Faults {
        retry_after_secs: 1,
        ..Default::default()
    });
    let reg = registry(&mock);
    let runs = TARGETS.iter().map(|&t| {
        let reg = reg.clone();
        async move {
            let prompt = format!("{} {} [mock:429=2]", t.0, t.2);
            (t, generate(&reg, t, &prompt).await)
        }
    });
    for (t, r) in futures::future::join_all(runs).await {
        assert!(r.is_ok(), "{t:?}: {r:?}");
    }
    let log = mock.state().requests();
    let mut checked = 0;
    for (i, e) in log.iter().enumerate() {
        let Some(ra) = e.retry_after_secs.filter(|_| e.status == 429) else {
            continue;
        };
        let next = log[i + 1..].iter().find(|n| n.key == e.key && n.provider == e.provider);
        let next = next.unwrap_or_else(|| panic!("no retry after {e:?}"));
        assert!(
            next.at_ms >= e.at_ms + ra * 1000,
            "retried {} ms after a {ra}s Retry-After: {e:?}",
            next.at_ms - e.at_ms
        );
        checked += 1;
    }
    assert!(checked >= 10, "Retry-After given and honoured: {checked}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_credentials_are_unauthorized_and_kling_checks_its_jwt() {
    let mock = MockServer::start("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let mut cfg = ProvidersConfig::production().mocked(&mock.url());
    for p in cfg.providers.values_mut() {
        p.credentials.api_key_value = Some("wrong".into());
        p.credentials.secret_key_value = Some("wrong".into());
    }
    let reg = Registry::build(&cfg).unwrap();
    for &t in TARGETS {
        let e = generate(&reg, t, "anything").await.unwrap_err();
        assert_eq!(e.0, ProviderErrorClass::Unauthorized, "{t:?}");
    }
    // Kling's claims: a token past its exp is 1004, one before its nbf 1003.
    let signer = gantry_providers::kling::Signer::new(
        gantry_providers::MOCK_ACCESS_KEY.into(),
        gantry_providers::MOCK_SECRET_KEY.into(),
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let http = reqwest::Client::new();
    for (at, code) in [(now - 4000, 1004), (now + 600, 1003), (now, 1200)] {
        let r = http
            .get(format!("{}/kling/sg/v1/videos/text2video/nope", mock.url()))
            .bearer_auth(signer.sign_at(at))
            .send()
            .await
            .unwrap();
        let v: serde_json::Value = r.json().await.unwrap();
        assert_eq!(v["code"], code, "token signed at {at}: {v}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kling_submit_with_an_unknown_outcome_is_found_not_repeated() {
    let mock = MockServer::start("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let mut cfg = ProvidersConfig::production().mocked(&mock.url());
    let k = cfg.providers.get_mut("kling").unwrap();
    k.request_timeout_secs = 1;
    let reg = Registry::build(&cfg).unwrap();
    let (_, kling) = reg.client("kling", &["SG".into()]).unwrap();
    // The submit is slower than our timeout: the task is created, the reply is lost.
    let req = request("kling-v3-std", true, "a harbour at night [mock:slow_reply=1500]");
    let breaker = Breaker::new(BreakerConfig::default());
    let g = run(
        kling.as_ref(),
        &breaker,
        &req,
        &options(),
        &CancellationToken::new(),
        &mut NoHooks,
    )
    .await;
    assert!(g.is_ok(), "{g:?}");
    // The submit is logged when its slow reply is finally written.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let log = mock.state().requests();
    let submits = log
        .iter()
        .filter(|e| e.provider == "kling" && e.method == "POST")
        .count();
    assert_eq!(submits, 1, "one submit, then a lookup: {log:#?} {g:?}");
    assert!(
        log.iter()
            .any(|e| e.method == "GET" && e.path == "/v1/videos/text2video"),
        "looked up by external_task_id"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_slower_than_the_request_timeout_is_a_transient_failure() {
    let mock = MockServer::start("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let mut cfg = ProvidersConfig::production().mocked(&mock.url());
    cfg.providers.get_mut("openai").unwrap().request_timeout_secs = 1;
    let reg = Registry::build(&cfg).unwrap();
    let (_, openai) = reg.client("openai", &["US".into()]).unwrap();
    let req = request("gpt-image-1", false, "a slow answer [mock:slow_body]");
    let mut opts = options();
    opts.backoff.max_retries = 1;
    let started = std::time::Instant::now();
    let got = run(
        openai.as_ref(),
        &Breaker::new(BreakerConfig::default()),
        &req,
        &opts,
        &CancellationToken::new(),
        &mut NoHooks,
    )
    .await;
    let Err(RunError::Provider(e)) = got else {
        panic!("{got:?}")
    };
    assert_eq!(
        (e.class, e.code.as_deref(), e.outcome_unknown),
        (ProviderErrorClass::Transient, Some("timeout"), true),
        "{e}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "two tries of one second each"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reference_images_reach_the_endpoints_that_take_them() {
    use base64::Engine;
    let mock = MockServer::start("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let reg = registry(&mock);
    let png = mock.state().media.image(64, 48, false, 7);
    let data_uri = format!(
        "data:image/png;base64,{}",
        base64::engine::general_purpose::STANDARD.encode(png.as_slice())
    );
    let breaker = Breaker::new(BreakerConfig::default());
    for (provider, region, model, video, path) in [
        ("openai", "US", "gpt-image-1", false, "/v1/images/edits"),
        (
            "gemini",
            "US",
            "gemini-2.5-flash-image",
            false,
            "/v1beta/models/gemini-2.5-flash-image:generateContent",
        ),
        ("kling", "SG", "kling-v3-std", true, "/v1/videos/image2video"),
        ("flux", "EU", "flux-kontext-pro", false, "/v1/flux-kontext-pro"),
        ("seedream", "SG", "seedream-4.0", false, "/api/v3/images/generations"),
    ] {
        let (_, client) = reg.client(provider, &[region.to_owned()]).unwrap();
        let mut req = request(model, video, &format!("make it winter, {provider}"));
        req.reference_images = vec![data_uri.clone()];
        let got = run(
            client.as_ref(),
            &breaker,
            &req,
            &options(),
            &CancellationToken::new(),
            &mut NoHooks,
        )
        .await;
        assert!(got.is_ok(), "{provider}: {got:?}");
        let log = mock.state().requests();
        assert!(
            log.iter()
                .any(|e| e.provider == provider && e.method == "POST" && e.path == path && e.status == 200),
            "{provider} used {path}"
        );
        // A reference that is not an image is the request's fault where we send bytes.
        if matches!(provider, "openai" | "gemini") {
            req.reference_images = vec!["data:image/png;base64,bm90IGFuIGltYWdl".into()];
            let e = run(
                client.as_ref(),
                &breaker,
                &req,
                &options(),
                &CancellationToken::new(),
                &mut NoHooks,
            )
            .await;
            let Err(RunError::Provider(e)) = e else {
                panic!("{provider}: {e:?}")
            };
            assert_eq!(
                (e.class, e.code.as_deref()),
                (ProviderErrorClass::InvalidRequest, Some("bad_reference")),
                "{provider}"
            );
        }
    }
}
