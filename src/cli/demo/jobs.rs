//! What the demo's two tenants submit: ordinary work across priorities and the special cases
//! (retries, a dead letter, delays, an idempotent repeat, cancellations, refusals), generate
//! jobs for every mock provider, and the fixtures of the trust-and-safety checks.

use std::collections::BTreeMap;

use anyhow::Context;
use futures::StreamExt;
use gantry_client::{Client, ClientError, JobView};
use serde_json::{Value, json};

/// A generate job with `canary` in its prompt, its negative prompt and its reference URLs'
/// signatures (other jobs, or no canary: unchanged).
fn mark(mut job: Value, canary: Option<&str>) -> Value {
    let Some(c) = canary else { return job };
    if job["kind"] != "generate" {
        return job;
    }
    let p = &mut job["payload"];
    if let Some(prompt) = p["prompt"].as_str() {
        p["prompt"] = format!("{prompt} {c}").into();
    }
    p["negative_prompt"] = format!("no {c} artefacts").into();
    if let Some(refs) = p.get_mut("reference_images").and_then(Value::as_array_mut) {
        for r in refs {
            if let Some(u) = r.as_str() {
                *r = format!("{u}?X-Amz-Expires=300&X-Amz-Signature={c}").into();
            }
        }
    }
    job
}

/// A synthetic job: sleeps, writes a small output.
pub(super) fn noop(user: &str, payload: Value) -> Value {
    json!({"user": user, "kind": "noop", "payload": payload})
}

/// A generate job for the mock providers; `pending=2` makes poll-mode tasks poll twice.
fn generate(user: &str, provider: &str, model: &str, regions: &[&str], prompt: &str, extra: Value) -> Value {
    let mut payload = json!({"provider": provider, "model": model, "prompt": format!("{prompt} [mock:pending=2]")});
    if let (Value::Object(p), Value::Object(e)) = (&mut payload, extra) {
        p.extend(e);
    }
    json!({"user": user, "kind": "generate", "allowed_regions": regions, "payload": payload, "max_attempts": 4})
}

/// The studio's generate jobs: one per image provider (one with a reference image by URL,
/// which the worker fetches SSRF-safe and hands the provider as bytes), a residency fallback,
/// a rate-limited call retried after its `Retry-After`, and an output the provider's safety
/// system refuses.
fn studio_generate(mock_url: &str) -> Vec<Value> {
    let no = json!({});
    vec![
        generate(
            "user-0010",
            "openai",
            "gpt-image-1",
            &["US"],
            "a virtual influencer in a cafe, golden hour",
            no.clone(),
        ),
        generate(
            "user-0011",
            "gemini",
            "gemini-2.5-flash-image",
            &["US"],
            "a character sheet of a fox knight",
            json!({"reference_images": [format!("{mock_url}/_mock/refs/fox-knight.png")]}),
        ),
        generate(
            "user-0012",
            "gemini",
            "imagen-4",
            &["US"],
            "a product shot of a glass perfume bottle",
            no.clone(),
        ),
        generate(
            "user-0013",
            "seedream",
            "seedream-4.0",
            &["SG"],
            "a watercolour harbour town",
            no.clone(),
        ),
        generate(
            "user-0014",
            "flux",
            "flux-2-pro",
            &["EU"],
            "a studio portrait, soft light",
            json!({"width": 1024, "height": 768}),
        ),
        generate(
            "user-0015",
            "flux",
            "flux-kontext-pro",
            &["EU", "US"],
            "the same portrait in winter",
            no.clone(),
        ),
        // EU-only consent: OpenAI (US) is never used; admission routes to an EU provider.
        generate(
            "user-0016",
            "openai",
            "gpt-image-1",
            &["EU"],
            "a poster for a jazz night",
            no.clone(),
        ),
        generate(
            "user-0017",
            "openai",
            "gpt-image-1",
            &["US"],
            "a sticker of a happy cloud [mock:429=1]",
            no.clone(),
        ),
        generate(
            "user-0018",
            "flux",
            "flux-2-pro",
            &["EU"],
            "a scene the safety system refuses [mock:moderated_output]",
            no.clone(),
        ),
        // The provider returns the picture on the demo's hash list: the scan before release
        // blocks it, deletes it and records the prompt's SHA-256.
        generate(
            "user-0019",
            "openai",
            "gpt-image-1",
            &["US"],
            "a picture the hash list knows [mock:flagged]",
            no.clone(),
        ),
        // Close to an entry of the list with a review band: held (status `review`) until the
        // demo's reviewer confirms it; then taken down, preserved and reported.
        generate(
            "user-0022",
            "openai",
            "gpt-image-1",
            &["US"],
            "a picture close to a listed one [mock:near]",
            no,
        ),
    ]
}

/// The demo's abuse hash lists: the PDQ hash of the mocks' flagged picture, and a hash 20 bits
/// from their `[mock:near]` picture (for the list with a review band). Also writes two uploads
/// for the CSAM-hash jobs — the flagged picture, and an ordinary photo-like image.
pub(super) fn safety_fixtures(outputs: &std::path::Path) -> anyhow::Result<(String, String)> {
    use gantry_codecs::pdq::{Prescale, hash_dihedral, luma_from_image};
    use gantry_mocks::media::{FLAGGED_TINT, MediaCache, NEAR_TINT};
    let media = MediaCache::default();
    let pdq = |bytes: &[u8]| -> anyhow::Result<gantry_codecs::pdq::Hash256> {
        let img = image::load_from_memory(bytes).context("decoding a mock picture")?;
        let (luma, w, h) = luma_from_image(&img, Prescale::None);
        Ok(hash_dihedral(&luma, w, h).0[0])
    };
    let flagged = media.image(1024, 1024, false, FLAGGED_TINT);
    let hash = pdq(&flagged)?;
    // 20 of the 256 bits flipped: inside a review band of 8..=31, outside the block distance.
    let mut near = pdq(&media.image(1024, 1024, false, NEAR_TINT))?.to_bytes();
    for b in near.iter_mut().take(5) {
        *b ^= 0x0f;
    }
    let near = gantry_codecs::pdq::Hash256::from_bytes(&near);
    let uploads = outputs.join("inputs/studio-42");
    std::fs::create_dir_all(&uploads)?;
    std::fs::write(uploads.join("upload-flagged.png"), flagged.as_slice())?;
    std::fs::write(
        uploads.join("upload-clean.jpg"),
        media.image(640, 480, true, 32).as_slice(),
    )?;
    // A small photo for the 4x upscale: the super-resolution package's own fixture (a
    // flower) when models/fetch.sh fetched it, else a mock picture.
    let small =
        std::path::Path::new(gantry_worker::super_resolution::DEFAULT_MODELS_DIR).join("esrgan-thick-fixture.png");
    let small = match std::fs::read(&small) {
        Ok(bytes) => bytes,
        Err(_) => media.image(128, 128, false, 48).to_vec(),
    };
    std::fs::write(uploads.join("upload-small.png"), small)?;
    Ok((
        format!("# gantry demo: the mocks' [mock:flagged] picture\npdq:{hash}\n"),
        format!("# gantry demo: 20 bits from the mocks' [mock:near] picture\npdq:{near}\n"),
    ))
}

/// What one tenant submitted and what admission said.
#[derive(Default)]
pub(super) struct Submissions {
    pub(super) ids: Vec<String>,
    pub(super) duplicates: usize,
    pub(super) reserved: i64,
    /// Refusals by problem code, with one example detail.
    pub(super) refused: BTreeMap<String, (usize, String)>,
}

impl Submissions {
    pub(super) fn admitted(&mut self, s: Vec<gantry_client::Submitted>) {
        for a in s {
            if a.duplicate {
                self.duplicates += 1;
            } else {
                self.reserved += a.credits_reserved;
                self.ids.push(a.id);
            }
        }
    }

    /// Records a refusal; anything but an API refusal is an error.
    fn refused(&mut self, e: ClientError) -> anyhow::Result<()> {
        let ClientError::Api(p) = e else {
            return Err(e.into());
        };
        let detail = match p.retry_after {
            Some(d) => format!("{} (Retry-After {}s)", p.detail, d.as_secs()),
            None => p.detail,
        };
        self.refused.entry(p.code).or_insert((0, detail)).0 += 1;
        Ok(())
    }
}

/// The first tenant's jobs: ordinary work across priorities, plus the special cases.
pub(super) async fn submit_studio(
    api: &Client,
    ordinary: usize,
    mock_url: &str,
    canary: Option<&str>,
) -> anyhow::Result<Submissions> {
    let mut s = Submissions::default();
    let mut rng_state = 0x9e3779b97f4a7c15u64;
    let mut rand = move || {
        rng_state ^= rng_state << 13;
        rng_state ^= rng_state >> 7;
        rng_state ^= rng_state << 17;
        rng_state
    };
    let mut jobs: Vec<Value> = (0..ordinary)
        .map(|i| {
            let mut j = noop(
                "user-0001",
                json!({"sleep_ms": 20 + rand() % 180, "output_bytes": 4096}),
            );
            j["priority"] = match i % 10 {
                0 => "high",
                9 => "bulk",
                _ => "normal",
            }
            .into();
            j
        })
        .collect();
    // Flaky: the first attempt fails, the retry succeeds.
    jobs.extend((0..20).map(|_| {
        noop(
            "user-0002",
            json!({"sleep_ms": 30, "fail_attempts": 1, "output_bytes": 4096}),
        )
    }));
    // Broken: a permanent error dead-letters at once.
    jobs.extend((0..3).map(|_| {
        let mut j = noop(
            "user-0003",
            json!({"sleep_ms": 10, "fail_attempts": 99, "fail_class": "permanent"}),
        );
        j["max_attempts"] = 3.into();
        j
    }));
    // Delayed by two seconds.
    jobs.extend((0..10).map(|_| {
        let mut j = noop("user-0001", json!({"sleep_ms": 10}));
        j["delay_ms"] = 2000.into();
        j
    }));
    // Finished, but the provider did not bill (a moderation rejection): refunded.
    jobs.extend((0..5).map(|_| noop("user-0004", json!({"sleep_ms": 10, "report_usage": {"billed": false}}))));
    jobs.extend(studio_generate(mock_url).into_iter().map(|j| mark(j, canary)));
    for chunk in jobs.chunks(500) {
        s.admitted(api.submit_batch(chunk).await?);
    }
    // The same order twice under one idempotency key: one job, reserved once.
    let order = canary.map_or_else(|| "order-7731".to_owned(), |c| format!("order-7731-{c}"));
    for _ in 0..2 {
        let job = noop("user-0001", json!({"sleep_ms": 10}));
        s.admitted(vec![api.submit_idempotent(&job, &order).await?]);
    }
    // Submitted for later, then cancelled before it runs: refunded.
    for _ in 0..3 {
        let mut job = noop("user-0001", json!({"sleep_ms": 10}));
        job["delay_ms"] = 60_000.into();
        let a = api.submit(&job).await?;
        api.cancel(&a.id).await?;
        s.admitted(vec![a]);
    }
    // Refused: no provider in the user's consented regions; no pool with 200 GiB of VRAM.
    let residency = json!({"user": "user-0005", "kind": "generate", "allowed_regions": ["BR"],
        "payload": {"provider": "openai", "model": "gpt-image-1", "prompt": "a lighthouse at dawn"}});
    let mut vram = noop("user-0001", json!({}));
    vram["requirements"] = json!({"gpu": {"min_vram_bytes": 200u64 << 30}});
    for job in [residency, vram] {
        match api.submit(&job).await {
            Ok(a) => s.admitted(vec![a]),
            Err(e) => s.refused(e)?,
        }
    }
    Ok(s)
}

/// The second tenant (starter plan: 20 jobs/s, bursts of 100) spends its burst at once.
pub(super) async fn submit_video(api: &Client, retrying: &Client, canary: Option<&str>) -> anyhow::Result<Submissions> {
    let mut s = Submissions::default();
    let burst: Vec<Value> = (0..100)
        .map(|_| noop("viewer-9", json!({"sleep_ms": 50, "output_bytes": 4096})))
        .collect();
    s.admitted(api.submit_batch(&burst).await?);
    // Forty more at once: refused (rate_limited) unless two seconds of refill passed, so a slow
    // machine shows the refusal as reliably as a fast one. A batch is all or none.
    let more: Vec<Value> = (0..40).map(|_| noop("viewer-9", json!({"sleep_ms": 50}))).collect();
    match api.submit_batch(&more).await {
        Ok(a) => s.admitted(a),
        Err(e) => s.refused(e)?,
    }
    let one = noop("viewer-9", json!({"sleep_ms": 50}));
    // The same job again through a client that honours Retry-After.
    s.admitted(vec![retrying.submit(&one).await?]);
    // Two short videos: Kling (submit, poll, download) and Veo (a long-running operation).
    let videos = [
        generate(
            "viewer-9",
            "kling",
            "kling-v3-std",
            &["SG"],
            "a drone shot over rice terraces",
            json!({"duration_secs": 5}),
        ),
        generate(
            "viewer-9",
            "veo",
            "veo-3-fast",
            &["US"],
            "a timelapse of a city at night",
            json!({"duration_secs": 8}),
        ),
    ];
    let videos: Vec<Value> = videos.into_iter().map(|j| mark(j, canary)).collect();
    s.admitted(retrying.submit_batch(&videos).await?);
    // Two 8-second Veo clips (150 credits a second: 2,400) cost more than the tenant has left.
    // Sent through the client that waits out a 429, so the refusal shown is the credit one
    // however little of the rate limit the burst left.
    let video = json!({"user": "viewer-9", "kind": "generate", "allowed_regions": ["US"],
        "payload": {"provider": "veo", "model": "veo-3-fast", "prompt": "a drone shot over a harbour", "duration_secs": 8, "samples": 2}});
    match retrying.submit(&video).await {
        Ok(a) => s.admitted(vec![a]),
        Err(e) => s.refused(e)?,
    }
    Ok(s)
}

/// Reads every job, 16 requests at a time.
pub(super) async fn views(api: &Client, ids: &[String]) -> anyhow::Result<Vec<JobView>> {
    let got: Vec<Result<JobView, ClientError>> = futures::stream::iter(ids)
        .map(|id| api.job(id))
        .buffered(16)
        .collect()
        .await;
    Ok(got.into_iter().collect::<Result<_, _>>()?)
}

/// Whether every finished job's credits are settled.
pub(super) fn settled(v: &[JobView]) -> bool {
    v.iter()
        .all(|j| j.is_final() && j.credits.as_ref().is_none_or(|c| c.state != "reserved"))
}
