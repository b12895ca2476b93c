//! What a payload may hold, whatever the deployment: lengths, ranges and the values a field
//! takes. The scheduler refuses a job that breaks one of these at admission (400, naming the
//! field) and publishes the same bounds in its OpenAPI document, built from these constants, so
//! the document says exactly what is accepted. What depends on the deployment (which providers
//! and models exist, what a model can make, which pools there are) is checked later, and
//! refused as 422.

use crate::error::ValidationError;
use crate::payload::{
    CsamHashPayload, GeneratePayload, MAX_REFERENCE_IMAGES, NoopPayload, Payload, TranscodePayload, UpscaleMethod,
    UpscalePayload,
};

/// Longest provider name.
pub const MAX_PROVIDER_CHARS: usize = 64;
/// Longest model name.
pub const MAX_MODEL_CHARS: usize = 128;
/// Longest prompt (OpenAI's image models take 32,000 characters, the most of any provider).
pub const MAX_PROMPT_CHARS: usize = 32_000;
/// Longest negative prompt.
pub const MAX_NEGATIVE_PROMPT_CHARS: usize = 10_000;
/// Longest reference image (an object key, a URL or a `data:` URI; the record's own size
/// limit bounds them together).
pub const MAX_REFERENCE_CHARS: usize = 262_144;
/// Largest width or height a generate job may ask for.
pub const MAX_SIDE: u32 = 16_384;
/// Longest clip a generate job may ask for, in seconds.
pub const MAX_DURATION_SECS: u32 = 600;
/// Most samples a generate job may ask for.
pub const MAX_SAMPLES: u32 = 16;
/// Longest input reference (an object key, or a pipeline step's reference).
pub const MAX_INPUT_CHARS: usize = 1_024;
/// Upscale factors.
pub const SCALES: [u8; 2] = [2, 4];
/// Largest side of an upscale's `fit_within` box.
pub const MAX_FIT_SIDE: u32 = 65_535;
/// Upscale output formats.
pub const IMAGE_FORMATS: [&str; 4] = ["png", "jpeg", "jpg", "webp"];
/// Highest x264 constant rate factor.
pub const MAX_CRF: u8 = 51;
/// x264 presets, fastest first.
pub const PRESETS: [&str; 10] = [
    "ultrafast",
    "superfast",
    "veryfast",
    "faster",
    "fast",
    "medium",
    "slow",
    "slower",
    "veryslow",
    "placebo",
];
/// Lowest and highest `max_height` of a transcode.
pub const HEIGHT_RANGE: (u32, u32) = (16, 8_640);
/// Highest `max_fps` of a transcode.
pub const MAX_FPS: u32 = 240;
/// What a CSAM-hash job's `media` may say.
pub const MEDIA: [&str; 2] = ["image", "video"];
/// Most hash lists one CSAM-hash job names.
pub const MAX_LISTS: usize = 32;
/// Longest no-op sleep (a day; the attempt's timeout stops it sooner).
pub const MAX_SLEEP_MS: u64 = 86_400_000;
/// Most attempts a no-op may be told to fail.
pub const MAX_FAIL_ATTEMPTS: u32 = 1_000;
/// Largest output a no-op writes.
pub const MAX_NOOP_OUTPUT_BYTES: u32 = 16 << 20;

/// Whether `s` is a hash list's name (1-64 of `A-Z`, `a-z`, `0-9`, `.`, `-`, `_`).
pub fn list_name_ok(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
}

fn invalid(field: &'static str, reason: impl Into<String>) -> ValidationError {
    ValidationError::InvalidField {
        field,
        reason: reason.into(),
    }
}

/// `s` has `min..=max` characters and no control character.
fn text(field: &'static str, s: &str, min: usize, max: usize) -> Result<(), ValidationError> {
    let n = s.chars().count();
    if n < min || n > max {
        return Err(invalid(field, format!("{min} to {max} characters")));
    }
    if s.chars().any(char::is_control) && !matches!(field, "payload.prompt" | "payload.negative_prompt") {
        return Err(invalid(field, "no control characters"));
    }
    Ok(())
}

fn range<T: PartialOrd + std::fmt::Display + Copy>(
    field: &'static str,
    v: Option<T>,
    min: T,
    max: T,
) -> Result<(), ValidationError> {
    match v {
        Some(v) if v < min || v > max => Err(invalid(field, format!("{min} to {max}"))),
        _ => Ok(()),
    }
}

impl Payload {
    /// Checks the payload against the rules above (see the module docs).
    pub fn check(&self) -> Result<(), ValidationError> {
        match self {
            Payload::Generate(g) => check_generate(g),
            Payload::Upscale(u) => check_upscale(u),
            Payload::Transcode(t) => check_transcode(t),
            Payload::CsamHash(c) => check_csam(c),
            Payload::Noop(n) => check_noop(n),
            Payload::Export(e) => text("payload.request_id", &e.request_id, 0, 128),
        }
    }
}

fn check_generate(g: &GeneratePayload) -> Result<(), ValidationError> {
    text("payload.provider", &g.provider, 1, MAX_PROVIDER_CHARS)?;
    text("payload.model", &g.model, 1, MAX_MODEL_CHARS)?;
    text("payload.prompt", &g.prompt, 1, MAX_PROMPT_CHARS)?;
    if let Some(n) = &g.negative_prompt {
        text("payload.negative_prompt", n, 0, MAX_NEGATIVE_PROMPT_CHARS)?;
    }
    if g.reference_images.len() > MAX_REFERENCE_IMAGES {
        return Err(invalid(
            "payload.reference_images",
            format!("at most {MAX_REFERENCE_IMAGES} reference images"),
        ));
    }
    for r in &g.reference_images {
        text("payload.reference_images", r, 1, MAX_REFERENCE_CHARS)?;
    }
    range("payload.width", g.width, 1, MAX_SIDE)?;
    range("payload.height", g.height, 1, MAX_SIDE)?;
    range("payload.duration_secs", g.duration_secs, 1, MAX_DURATION_SECS)?;
    range("payload.samples", g.samples, 1, MAX_SAMPLES)
}

fn check_upscale(u: &UpscalePayload) -> Result<(), ValidationError> {
    text("payload.input", &u.input, 1, MAX_INPUT_CHARS)?;
    match (u.scale, u.fit_within) {
        (Some(s), None) if !SCALES.contains(&s) => return Err(invalid("payload.scale", "2 or 4")),
        (Some(_), None) => {}
        (None, Some([w, h])) => {
            if !(1..=MAX_FIT_SIDE).contains(&w) || !(1..=MAX_FIT_SIDE).contains(&h) {
                return Err(invalid(
                    "payload.fit_within",
                    format!("[width, height], each 1 to {MAX_FIT_SIDE}"),
                ));
            }
        }
        _ => return Err(invalid("payload.scale", "give either scale (2 or 4) or fit_within")),
    }
    if u.method == Some(UpscaleMethod::Neural) && u.scale != Some(4) {
        return Err(invalid("payload.method", "the neural method upscales 4x: give scale 4"));
    }
    if let Some(f) = &u.format
        && !IMAGE_FORMATS.contains(&f.as_str())
    {
        return Err(invalid("payload.format", "png, jpeg, jpg or webp"));
    }
    range("payload.quality", u.quality, 1, 100)
}

fn check_transcode(t: &TranscodePayload) -> Result<(), ValidationError> {
    text("payload.input", &t.input, 1, MAX_INPUT_CHARS)?;
    range("payload.crf", t.crf, 0, MAX_CRF)?;
    if let Some(p) = &t.preset
        && !PRESETS.contains(&p.as_str())
    {
        return Err(invalid("payload.preset", format!("one of {}", PRESETS.join(", "))));
    }
    range("payload.max_height", t.max_height, HEIGHT_RANGE.0, HEIGHT_RANGE.1)?;
    range("payload.max_fps", t.max_fps, 1, MAX_FPS)
}

fn check_csam(c: &CsamHashPayload) -> Result<(), ValidationError> {
    text("payload.input", &c.input, 1, MAX_INPUT_CHARS)?;
    if let Some(m) = &c.media
        && !MEDIA.contains(&m.as_str())
    {
        return Err(invalid("payload.media", "image or video"));
    }
    if c.lists.len() > MAX_LISTS || !c.lists.iter().all(|l| list_name_ok(l)) {
        return Err(invalid(
            "payload.lists",
            format!("at most {MAX_LISTS} list names, each 1-64 of A-Z, a-z, 0-9, '.', '-', '_'"),
        ));
    }
    Ok(())
}

fn check_noop(n: &NoopPayload) -> Result<(), ValidationError> {
    range("payload.sleep_ms", Some(n.sleep_ms), 0, MAX_SLEEP_MS)?;
    range("payload.fail_attempts", Some(n.fail_attempts), 0, MAX_FAIL_ATTEMPTS)?;
    range("payload.output_bytes", n.output_bytes, 0, MAX_NOOP_OUTPUT_BYTES)?;
    if let Some(u) = &n.report_usage
        && let Some(p) = &u.provider_units
    {
        text("payload.report_usage.provider_units", p, 0, 256)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn payload(kind: &str, p: serde_json::Value) -> Payload {
        serde_json::from_value(json!({"kind": kind, "payload": p})).expect("parses")
    }

    #[test]
    fn payloads_inside_the_rules_pass_and_each_rule_names_its_field() {
        for (kind, p) in [
            (
                "generate",
                json!({"provider": "openai", "model": "m", "prompt": "p", "samples": 16}),
            ),
            (
                "upscale",
                json!({"input": "k", "scale": 4, "format": "webp", "quality": 100}),
            ),
            ("upscale", json!({"input": "k", "fit_within": [1, 65535]})),
            (
                "transcode",
                json!({"input": "k", "crf": 0, "preset": "placebo", "max_height": 16, "max_fps": 240}),
            ),
            (
                "csam_hash",
                json!({"input": "k", "media": "video", "lists": ["ncmec.v2"]}),
            ),
            ("noop", json!({"sleep_ms": 86_400_000u64, "output_bytes": 16 << 20})),
        ] {
            payload(kind, p.clone())
                .check()
                .unwrap_or_else(|e| panic!("{kind} {p}: {e}"));
        }
        for (kind, p, field) in [
            (
                "generate",
                json!({"provider": "", "model": "m", "prompt": "p"}),
                "payload.provider",
            ),
            (
                "generate",
                json!({"provider": "o", "model": "m", "prompt": ""}),
                "payload.prompt",
            ),
            (
                "generate",
                json!({"provider": "o", "model": "m\n", "prompt": "p"}),
                "payload.model",
            ),
            (
                "generate",
                json!({"provider": "o", "model": "m", "prompt": "p", "samples": 0}),
                "payload.samples",
            ),
            (
                "generate",
                json!({"provider": "o", "model": "m", "prompt": "p", "width": 16385}),
                "payload.width",
            ),
            ("upscale", json!({"input": "k", "scale": 3}), "payload.scale"),
            ("upscale", json!({"input": "k"}), "payload.scale"),
            (
                "upscale",
                json!({"input": "k", "scale": 2, "fit_within": [1, 1]}),
                "payload.scale",
            ),
            (
                "upscale",
                json!({"input": "k", "fit_within": [0, 1]}),
                "payload.fit_within",
            ),
            (
                "upscale",
                json!({"input": "k", "scale": 2, "format": "PNG"}),
                "payload.format",
            ),
            ("upscale", json!({"input": "", "scale": 2}), "payload.input"),
            (
                "upscale",
                json!({"input": "k", "scale": 2, "method": "neural"}),
                "payload.method",
            ),
            (
                "upscale",
                json!({"input": "k", "fit_within": [8, 8], "method": "neural"}),
                "payload.method",
            ),
            ("transcode", json!({"input": "k", "crf": 52}), "payload.crf"),
            ("transcode", json!({"input": "k", "preset": "quick"}), "payload.preset"),
            (
                "transcode",
                json!({"input": "k", "max_height": 8}),
                "payload.max_height",
            ),
            ("csam_hash", json!({"input": "k", "media": "audio"}), "payload.media"),
            ("csam_hash", json!({"input": "k", "lists": ["a b"]}), "payload.lists"),
            ("noop", json!({"output_bytes": (16 << 20) + 1}), "payload.output_bytes"),
        ] {
            match payload(kind, p.clone()).check() {
                Err(ValidationError::InvalidField { field: f, .. }) => assert_eq!(f, field, "{kind} {p}"),
                other => panic!("{kind} {p}: {other:?}"),
            }
        }
    }
}
