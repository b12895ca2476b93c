//! `gantry demo` end to end: its own redis-server, scheduler and workers; jobs through the API;
//! the summary's ledger check must hold for both tenants.

#![allow(clippy::unwrap_used)] // a panic is how a test reports failure

use crate::common;

use std::process::{Command, Stdio};

#[test]
fn demo_runs_through_the_api_and_charges_each_job_once() {
    let logs = tempfile::tempdir().unwrap();
    let out = Command::new(common::GANTRY)
        .args(["demo", "--jobs", "60", "--log-dir"])
        .arg(logs.path())
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "demo failed: {text}\n{err}");
    for needle in [
        "no_allowed_provider",
        "unplaceable",
        "insufficient_credits",
        "rate_limited",
        "SIGKILLed worker-1",
        "/metrics",
        "prometheus: http://",
    ] {
        assert!(text.contains(needle), "summary lacks {needle:?}:\n{text}");
    }
    // 60 ordinary + 20 flaky + 10 delayed + 1 idempotent + 5 unbilled + 8 generate + 3
    // upscales of generated images + 2 clean CSAM-hash checks for the studio (a ninth generate
    // job is refused by the provider's safety system, a tenth's image is on the demo's hash
    // list); the video tenant's 100 + 1 no-ops and 2 videos.
    let row = |tenant: &str, status: &str| -> u64 {
        text.lines()
            .filter_map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                (f.len() == 4 && f[0] == tenant && f[2] == status).then(|| f[3].parse::<u64>().unwrap())
            })
            .sum()
    };
    assert_eq!(row("studio-42", "succeeded"), 109, "{text}");
    // Blocked before release: the flagged generated image and the flagged upload.
    assert_eq!(row("studio-42", "blocked"), 2, "{text}");
    assert!(
        text.contains("blocked, deleted at once:   csam_hash 1, generate 1"),
        "{text}"
    );
    assert!(
        text.contains("scanned clean and released: csam_hash 2, generate 10, transcode 2, upscale 3"),
        "{text}"
    );
    let events: Vec<&str> = text.lines().filter(|l| l.contains("moderation event:")).collect();
    assert_eq!(events.len(), 2, "{text}");
    assert!(
        events
            .iter()
            .any(|l| l.contains("user-0019") && !l.contains("prompt sha256 -")),
        "the generated image's record keeps the prompt's SHA-256: {events:?}"
    );
    assert!(!text.contains("a picture the hash list knows"), "never the prompt");
    assert!(text.contains("3 generated images upscaled 2x"), "{text}");
    let erased = text
        .lines()
        .find(|l| l.contains("erased user-0010 of studio-42"))
        .unwrap_or_else(|| panic!("no erasure in the summary:\n{text}"));
    assert!(erased.contains("complete: true"), "{erased}");
    let count = |word: &str| -> u64 {
        let before = erased.split(word).next().unwrap_or_default();
        before
            .split_whitespace()
            .last()
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    };
    // its generate job, the upscale of its image and the re-check of that image
    assert!(count("job records") >= 2, "{erased}");
    assert!(count("outputs deleted") >= 1, "{erased}");
    assert_eq!(row("studio-42", "dead"), 4, "{text}");
    assert_eq!(row("studio-42", "cancelled"), 3, "{text}");
    assert_eq!(row("videos-7", "succeeded"), 105, "{text}");
    assert!(text.contains("2 generated videos transcoded"), "{text}");
    assert!(text.contains("moderated"), "the refused generate job says why:\n{text}");
    for routed in [
        "openai/gpt-image-1",
        "flux/flux-2-pro x3",
        "kling/kling-v3-std",
        "veo/veo-3-fast",
    ] {
        assert!(text.contains(routed), "{routed}:\n{text}");
    }
    assert_eq!(
        text.matches("ok: each job charged once").count(),
        2,
        "both tenants' balances equal before minus charged:\n{text}"
    );
    assert!(!text.contains("MISMATCH"), "{text}");
}
