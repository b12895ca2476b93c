//! Reference images named by URL, end to end: the worker fetches them itself, SSRF-safe, and
//! the providers receive bytes, never the URL. A reference on a loopback address that is not
//! the allowed mock, on the cloud-metadata address, behind a redirect to loopback, too large,
//! not an image or gone fails the job permanently with a reason that names no URL — and
//! without counting against the provider (its circuit stays closed). In process, the fetcher
//! gives up on a body that dribbles past its timeout.

#![allow(clippy::unwrap_used)] // a panic is how a test reports failure

use crate::common;

use std::time::Duration;

use common::*;
use gantry_client::Client;
use gantry_providers::fetch::{FetchConfig, FetchError, ReferenceFetcher};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn references_are_fetched_by_the_fleet_and_never_from_private_addresses() {
    let f = fleet(1, 8, &[]);
    let api = Client::new(&format!("http://{}", f.sched.addr), "demo-studio-key").unwrap();
    let mock = f.mock.addr.clone();
    let port = mock.rsplit(':').next().unwrap().to_owned();
    let refs = |url: String, provider: &str, model: &str, prompt: &str| {
        generate(provider, model, &["US"], prompt, json!({"reference_images": [url]}))
    };

    // Good references: bytes reach OpenAI's edit endpoint and BFL, through a redirect too.
    let ok = format!("http://{mock}/_mock/refs/portrait.png");
    let redirected = format!("http://{mock}/_mock/refs/redirect?to=http://{mock}/_mock/refs/pose.png");
    let good = [
        api.submit(&refs(ok.clone(), "openai", "gpt-image-1", "edit with a reference"))
            .await
            .unwrap(),
        api.submit(&refs(redirected, "flux", "flux-2-pro", "flux with a reference"))
            .await
            .unwrap(),
    ];
    for a in &good {
        let j = settled(&api, &a.id).await;
        assert_eq!(j.status, "succeeded", "{j:?}");
    }
    let log = f.mock.requests().await;
    let edits = log.iter().filter(|e| e["path"] == "/v1/images/edits").count();
    assert!(edits >= 1, "the reference made it an edit: {log:?}");
    assert!(
        log.iter().all(|e| e["reference_url_in_body"] == false),
        "no provider was handed a reference URL: {log:?}"
    );

    // Refused references: each fails the job for good, saying why, naming no URL.
    let cases = [
        (
            format!("http://127.0.0.2:{port}/_mock/refs/a.png"),
            "127.0.0.2 is a loopback address",
        ),
        (
            "http://169.254.169.254/latest/meta-data/iam/".to_owned(),
            "link-local (cloud metadata) address",
        ),
        ("http://[::ffff:10.0.0.7]/x.png".to_owned(), "is a private address"),
        (
            format!("http://{mock}/_mock/refs/redirect?to=http://127.0.0.2:{port}/_mock/refs/a.png"),
            "127.0.0.2 is a loopback address",
        ),
        (
            format!("http://{mock}/_mock/refs/big.png"),
            "larger than 20971520 bytes",
        ),
        (format!("http://{mock}/_mock/refs/text.png"), "reference image 1:"),
        (format!("http://{mock}/_mock/refs/gone.png"), "HTTP 404"),
        (
            "file:///etc/passwd".to_owned(),
            "only http(s) URLs, data: URIs and the tenant's own object keys",
        ),
    ];
    let before = f.mock.requests().await.len();
    for (url, why) in &cases {
        let a = api
            .submit(&refs(url.clone(), "openai", "gpt-image-1", "a refused reference"))
            .await
            .unwrap();
        let j = settled(&api, &a.id).await;
        assert_eq!((j.status.as_str(), j.attempts), ("dead", 1), "{url}: {j:?}");
        let e = j.error.as_ref().unwrap();
        assert_eq!(e["class"], "permanent", "{url}: {j:?}");
        let msg = e["message"].as_str().unwrap();
        assert!(msg.contains(why), "{url}: {msg}");
        assert!(
            !msg.contains("/_mock/refs") && !msg.contains("meta-data"),
            "no URL in {msg}"
        );
    }
    assert_eq!(
        f.mock.requests().await.len(),
        before,
        "no provider was called for a refused reference"
    );
    // The provider's circuit stayed closed: the next job goes to OpenAI itself, no fallback.
    let after = api
        .submit(&refs(ok, "openai", "gpt-image-1", "after the refusals"))
        .await
        .unwrap();
    assert_eq!(settled(&api, &after.id).await.status, "succeeded");
    let last = f.mock.requests().await;
    assert!(
        last[before..].iter().all(|e| e["provider"] == "openai"),
        "{:?}",
        &last[before..]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dribbling_reference_times_out_as_transient() {
    let mock = MockProvidersProcess::start(&[]);
    let addr = mock.addr.parse().unwrap();
    let fetcher = ReferenceFetcher::new(FetchConfig {
        timeout: Duration::from_secs(2),
        allow: vec![addr],
        ..Default::default()
    });
    let started = std::time::Instant::now();
    let r = fetcher
        .fetch(1, &format!("http://{}/_mock/refs/slow.png", mock.addr))
        .await;
    assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
    match r {
        Err(e @ FetchError::Unreachable { .. }) => {
            assert!(e.is_transient());
            assert!(e.to_string().contains("timed out"), "{e}");
        }
        other => panic!("{other:?}"),
    }
    // An allowed address is fetched; the same server on another loopback address is not.
    let (bytes, ty) = fetcher
        .fetch(1, &format!("http://{}/_mock/refs/x.png", mock.addr))
        .await
        .unwrap();
    assert_eq!((ty, bytes.starts_with(b"\x89PNG")), ("image/png", true));
    let port = addr.port();
    assert!(matches!(
        fetcher
            .fetch(1, &format!("http://127.0.0.3:{port}/_mock/refs/x.png"))
            .await,
        Err(FetchError::Forbidden { class: "loopback", .. })
    ));
}
