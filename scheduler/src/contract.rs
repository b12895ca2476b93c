//! The job schemas of the OpenAPI document (`openapi.json`), built from the rules admission
//! enforces ([`gantry_core::payload_rules`] and the queue's limits), so the document says
//! exactly what is accepted: a job request is one of five shapes, one per kind, each with its
//! typed payload; a pipeline step is the same with its step fields. Fields the server reads as
//! absent when `null` are `nullable`. A test proves the committed document holds exactly
//! these; `GANTRY_BLESS=1 cargo test -p gantry-scheduler contract` rewrites them.
//!
//! Status codes follow one rule: **400** when a request does not match the document (a field
//! out of bounds, an unknown field, malformed JSON); **422** when it does, but this deployment
//! will not do it (a provider or model it does not have, a model's own limits, no pool that can
//! run it, no provider the user consented to, a pipeline whose steps do not fit together);
//! **402**, **413** (the whole record too large, each field within bounds) and **409** as
//! documented per route.

use gantry_core::payload_rules as rules;
use gantry_queue::QueueConfig;
use serde_json::{Value, json};

/// A string of `min..=max` characters, none of them a control character.
fn text(min: usize, max: usize) -> Value {
    json!({"type": "string", "minLength": min, "maxLength": max, "pattern": "^[^\\u0000-\\u001f\\u007f-\\u009f]*$"})
}

/// A string of `min..=max` characters, any.
fn any_text(min: usize, max: usize) -> Value {
    json!({"type": "string", "minLength": min, "maxLength": max})
}

/// An integer in `min..=max`.
fn int(min: u64, max: u64) -> Value {
    json!({"type": "integer", "minimum": min, "maximum": max})
}

/// `s`, or `null` (read as absent).
fn nullable(mut s: Value) -> Value {
    if let Some(Value::Array(e)) = s.get_mut("enum") {
        e.push(Value::Null);
    }
    s["nullable"] = json!(true);
    s
}

fn strings(values: &[&str]) -> Value {
    json!({"type": "string", "enum": values})
}

fn object(required: &[&str], properties: Value) -> Value {
    json!({"type": "object", "additionalProperties": false, "required": required, "properties": properties})
}

fn described(mut s: Value, d: &str) -> Value {
    s["description"] = json!(d);
    s
}

fn generate_payload() -> Value {
    object(
        &["provider", "model", "prompt"],
        json!({
            "provider": described(text(1, rules::MAX_PROVIDER_CHARS), "A configured provider (`openai`, `gemini`, `kling`, `seedream`, `flux`, …); one this deployment lacks is 422 unknown_model"),
            "model": described(text(1, rules::MAX_MODEL_CHARS), "A model of that provider"),
            "prompt": described(any_text(1, rules::MAX_PROMPT_CHARS), "Never logged; only its SHA-256 leaves the job"),
            "negative_prompt": nullable(any_text(0, rules::MAX_NEGATIVE_PROMPT_CHARS)),
            "reference_images": {
                "type": "array",
                "maxItems": gantry_core::MAX_REFERENCE_IMAGES,
                "items": text(1, rules::MAX_REFERENCE_CHARS),
                "description": "Object keys of the tenant's, http(s) URLs or data: URIs; in a pipeline step, `${steps.<name>.output}` or `${each.output}`"
            },
            "width": nullable(int(1, rules::MAX_SIDE.into())),
            "height": nullable(int(1, rules::MAX_SIDE.into())),
            "duration_secs": nullable(described(int(1, rules::MAX_DURATION_SECS.into()), "Video models; beyond the model's own range is 422")),
            "samples": nullable(described(int(1, rules::MAX_SAMPLES.into()), "Outputs; beyond the model's own maximum is 422")),
        }),
    )
}

fn upscale_payload() -> Value {
    let scale = json!({"type": "integer", "enum": rules::SCALES});
    let fit = json!({"type": "array", "minItems": 2, "maxItems": 2, "items": int(1, rules::MAX_FIT_SIDE.into()),
        "description": "[width, height]: fit within this box instead of scaling"});
    let absent = json!({"nullable": true, "enum": [null]});
    let mut s = object(
        &["input"],
        json!({
            "input": described(text(1, rules::MAX_INPUT_CHARS), "An object key of the tenant's (in a pipeline step, a reference to a parent's output)"),
            "scale": nullable(scale.clone()),
            "fit_within": nullable(fit.clone()),
            "format": nullable(strings(&rules::IMAGE_FORMATS)),
            "quality": nullable(int(1, 100)),
            "method": nullable(described(strings(&["lanczos3", "neural"]),
                "How the new pixels are made: `lanczos3`, or `neural` (the pool's super-resolution network; 4x only, so with `scale` 4). Absent: `neural` where the worker has the network, `scale` is 4 and the input is at most 512x512 pixels, else `lanczos3`; the result's details say which ran and why")),
        }),
    );
    s["description"] = json!("Exactly one of `scale` and `fit_within`; `method` `neural` only with `scale` 4.");
    // (`neural` is 4x only: a 2x or a fit-within names another method or none)
    let not_neural = json!({"nullable": true, "enum": ["lanczos3", null]});
    s["oneOf"] = json!([
        {"required": ["scale"], "properties": {"scale": {"type": "integer", "enum": [4]}, "fit_within": absent}},
        {"required": ["scale"], "properties": {"scale": {"type": "integer", "enum": [2]}, "fit_within": absent, "method": not_neural}},
        {"required": ["fit_within"], "properties": {"fit_within": fit, "scale": absent, "method": not_neural}},
    ]);
    s
}

fn transcode_payload() -> Value {
    object(
        &["input"],
        json!({
            "input": described(text(1, rules::MAX_INPUT_CHARS), "An object key of the tenant's (in a pipeline step, a reference to a parent's output)"),
            "crf": nullable(int(0, rules::MAX_CRF.into())),
            "preset": nullable(strings(&rules::PRESETS)),
            "max_height": nullable(int(rules::HEIGHT_RANGE.0.into(), rules::HEIGHT_RANGE.1.into())),
            "max_fps": nullable(int(1, rules::MAX_FPS.into())),
            "webm": {"type": "boolean"},
            "previews": {"type": "boolean"},
        }),
    )
}

fn csam_payload() -> Value {
    object(
        &["input"],
        json!({
            "input": described(text(1, rules::MAX_INPUT_CHARS), "An object key of the tenant's (in a pipeline step, a reference to a parent's output)"),
            "media": nullable(strings(&rules::MEDIA)),
            "lists": {"type": "array", "maxItems": rules::MAX_LISTS,
                      "items": {"type": "string", "pattern": "^[A-Za-z0-9._-]{1,64}$"},
                      "description": "Hash lists to match; every configured one when empty"},
        }),
    )
}

fn noop_payload() -> Value {
    let u32_max = u64::from(u32::MAX);
    object(
        &[],
        json!({
            "sleep_ms": int(0, rules::MAX_SLEEP_MS),
            "fail_attempts": int(0, rules::MAX_FAIL_ATTEMPTS.into()),
            "fail_class": nullable(strings(&["retryable", "permanent", "cancelled", "timed_out", "blocked"])),
            "output_bytes": nullable(int(0, rules::MAX_NOOP_OUTPUT_BYTES.into())),
            "fail_until_unix_ms": nullable(int(0, u64::MAX)),
            "report_usage": nullable(described(object(&[], json!({
                "billed": {"type": "boolean"},
                "outputs": nullable(int(0, u32_max)),
                "seconds": nullable(int(0, u32_max)),
                "pixels": nullable(int(0, u64::MAX)),
                "provider_units": nullable(text(0, 256)),
            })), "Operators' drills only (403 for other tenants)")),
        }),
    )
}

/// The fields every job request has, whatever its kind.
fn common(q: &QueueConfig) -> serde_json::Map<String, Value> {
    let v = json!({
        "user": {
            "type": "string", "minLength": 1, "maxLength": 128,
            "pattern": "^[^\\u0000-\\u001f\\u007f-\\u009f]+$",
            "description": "Opaque end-user id (never an email or a name)."
        },
        "priority": strings(&["high", "normal", "bulk"]),
        "requirements": object(&[], json!({
            "gpu": nullable(object(&["min_vram_bytes"], json!({
                "min_vram_bytes": int(1, 1 << 40),
                "nvenc": {"type": "boolean"},
                "count": int(1, 8),
            }))),
            "preferred_model": nullable(json!({"type": "string", "pattern": "^[A-Za-z0-9._/@-]{1,64}$"})),
        })),
        "allowed_regions": {
            "type": "array",
            "items": {"type": "string"},
            "description": "Jurisdictions the user consented to (US, EU, CN, SG, ...)."
        },
        "idempotency_key": nullable(text(1, 256)),
        "max_attempts": nullable(int(1, q.max_attempts_limit.into())),
        "timeout_secs": nullable(int(1, q.max_timeout.as_secs())),
        "delay_ms": nullable(int(0, q.max_delay.as_millis() as u64)),
    });
    match v {
        Value::Object(m) => m,
        _ => serde_json::Map::new(),
    }
}

/// The kinds, their schema names and their payloads.
fn kinds() -> [(&'static str, &'static str, Value); 5] {
    [
        ("generate", "Generate", generate_payload()),
        ("upscale", "Upscale", upscale_payload()),
        ("transcode", "Transcode", transcode_payload()),
        ("csam_hash", "CsamHash", csam_payload()),
        ("noop", "Noop", noop_payload()),
    ]
}

/// The step fields of a pipeline step.
fn step_fields() -> Value {
    let name = json!({"type": "string", "pattern": "^[a-z0-9_-]{1,64}$"});
    json!({
        "name": name,
        "needs": {
            "type": "array", "maxItems": 64, "uniqueItems": true, "items": name,
            "description": "Steps that must succeed before this one runs"
        },
        "continue_on_failure": {
            "type": "boolean",
            "description": "This step's failure does not fail the pipeline (its own dependents are still skipped)"
        },
        "for_each": described(name.clone(), "Run this step once per output of that step (each sample of a multi-sample generate, each rendition of a transcode, each copy of a step that fans out itself), each copy taking its output as `${each.output}`; the copies are named `<name>-<label>` and a step that needs this one needs every copy. Implies `needs` on that step"),
    })
}

/// Every generated component schema, by name.
pub fn schemas(q: &QueueConfig) -> Vec<(String, Value)> {
    let mut out = Vec::new();
    let mut jobs = Vec::new();
    let mut steps = Vec::new();
    for (kind, name, payload) in kinds() {
        out.push((format!("{name}Payload"), payload));
        let mut props = common(q);
        props.insert("kind".into(), json!({"type": "string", "enum": [kind]}));
        props.insert(
            "payload".into(),
            json!({"$ref": format!("#/components/schemas/{name}Payload")}),
        );
        let job = json!({"type": "object", "additionalProperties": false,
            "required": ["user", "kind", "payload"], "properties": Value::Object(props.clone())});
        out.push((format!("{name}JobRequest"), job));
        if let Value::Object(extra) = step_fields() {
            props.extend(extra);
        }
        let step = json!({"type": "object", "additionalProperties": false,
            "required": ["name", "user", "kind", "payload"], "properties": Value::Object(props)});
        out.push((format!("{name}PipelineStep"), step));
        jobs.push(json!({"$ref": format!("#/components/schemas/{name}JobRequest")}));
        steps.push(json!({"$ref": format!("#/components/schemas/{name}PipelineStep")}));
    }
    let mapping = |suffix: &str| -> Value {
        kinds()
            .iter()
            .map(|(k, n, _)| ((*k).to_owned(), json!(format!("#/components/schemas/{n}{suffix}"))))
            .collect::<serde_json::Map<_, _>>()
            .into()
    };
    out.push((
        "JobRequest".into(),
        json!({"description": "A job: its kind and that kind's payload, with the options every job has.",
               "oneOf": jobs, "discriminator": {"propertyName": "kind", "mapping": mapping("JobRequest")}}),
    ));
    out.push((
        "PipelineStep".into(),
        json!({"description": "A job request as POST /v1/jobs takes it, named, with the steps it needs. A string field of the payload that takes an object key (upscale, transcode and csam_hash `input`, generate `reference_images[i]`) may instead be a reference to a parent's output: `${steps.<name>.output}` or `${steps.<name>.outputs.<label>}` (a transcode's `webm`, `poster`, `preview`; a multi-sample generate's `0`, `1`, …), or `${each.output}` in a `for_each` step.",
               "oneOf": steps, "discriminator": {"propertyName": "kind", "mapping": mapping("PipelineStep")}}),
    ));
    out
}

/// The document as served: the committed one with its generated schemas (the same, while the
/// committed one is current).
pub fn document(committed: &str) -> Value {
    let mut doc: Value = serde_json::from_str(committed).unwrap_or_default();
    if let Some(Value::Object(s)) = doc.pointer_mut("/components/schemas") {
        for (name, schema) in schemas(&QueueConfig::default()) {
            s.insert(name, schema);
        }
    }
    doc
}

#[cfg(test)]
mod tests {
    use super::*;

    const PATH: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/openapi.json");

    #[test]
    fn the_committed_document_holds_exactly_the_generated_schemas() {
        let committed = std::fs::read_to_string(PATH).expect("openapi.json");
        let want = document(&committed);
        let have: Value = serde_json::from_str(&committed).expect("JSON");
        if std::env::var_os("GANTRY_BLESS").is_some() {
            let text = serde_json::to_string_pretty(&want).expect("serializes") + "\n";
            std::fs::write(PATH, text).expect("writes openapi.json");
            return;
        }
        for (name, schema) in schemas(&QueueConfig::default()) {
            assert_eq!(
                have.pointer(&format!("/components/schemas/{name}")),
                Some(&schema),
                "{name} differs from the rules: GANTRY_BLESS=1 cargo test -p gantry-scheduler contract"
            );
        }
    }
}
