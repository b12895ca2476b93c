//! A pipeline request, checked before anything is stored: named steps, each a job request as
//! `POST /v1/jobs` takes it plus `needs` (the steps it waits for) and `continue_on_failure`;
//! no cycle, at most [`MAX_STEPS`] steps and [`MAX_DEPTH`] levels; every reference to a
//! parent's output (`${steps.<name>.output}`, see [`gantry_core::step_ref`]) in a
//! field that takes one, naming a step it needs, of a kind and output type that field accepts.
//! Every refusal names the step and the field.

use std::collections::{BTreeMap, BTreeSet};

use gantry_core::step_ref::{self, StepRef};
use gantry_queue::Payload;
use serde_json::Value;

/// Most steps in one pipeline.
pub const MAX_STEPS: usize = 64;
/// Longest chain of steps (a root alone is 1).
pub const MAX_DEPTH: usize = 16;

/// Why a pipeline was refused: the step (absent: the pipeline as a whole), the field, and why.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{}{field}: {reason}", step.as_deref().map(|s| format!("step {s}: ")).unwrap_or_default())]
pub struct PipelineError {
    /// The step.
    pub step: Option<String>,
    /// The field (`needs`, `payload.input`, `steps`).
    pub field: String,
    /// Why.
    pub reason: String,
}

impl PipelineError {
    fn of(step: Option<&str>, field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            step: step.map(str::to_owned),
            field: field.into(),
            reason: reason.into(),
        }
    }
}

/// One step as submitted: its name, what it needs, its policy, and its job request.
#[derive(Clone, Debug, PartialEq)]
pub struct StepSpec {
    /// Its name (1..=64 of `a-z`, `0-9`, `-`, `_`).
    pub name: String,
    /// The steps it waits for.
    pub needs: Vec<String>,
    /// Its failure does not fail the pipeline (its own dependents are still skipped).
    pub optional: bool,
    /// The job request (`user`, `kind`, `payload`, …).
    pub job: Value,
}

/// A checked pipeline: its steps in an order where every step comes after the steps it needs.
#[derive(Clone, Debug, PartialEq)]
pub struct PipelineSpec {
    /// The steps, parents first.
    pub steps: Vec<StepSpec>,
}

fn name_ok(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 64
        && n.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

impl PipelineSpec {
    /// Reads and checks a `POST /v1/pipelines` body (the structure; output types are checked
    /// once the steps are planned, see [`check_types`]).
    pub fn parse(body: Value) -> Result<Self, PipelineError> {
        let Value::Object(mut top) = body else {
            return Err(PipelineError::of(None, "body", "a pipeline must be a JSON object"));
        };
        let Some(Value::Array(raw)) = top.remove("steps") else {
            return Err(PipelineError::of(None, "steps", "an array of steps is required"));
        };
        if let Some(other) = top.keys().next() {
            return Err(PipelineError::of(None, other.clone(), "unknown field"));
        }
        if raw.is_empty() || raw.len() > MAX_STEPS {
            return Err(PipelineError::of(
                None,
                "steps",
                format!("a pipeline has 1 to {MAX_STEPS} steps"),
            ));
        }
        let mut steps = Vec::with_capacity(raw.len());
        let mut names = BTreeSet::new();
        for (i, s) in raw.into_iter().enumerate() {
            let Value::Object(mut o) = s else {
                return Err(PipelineError::of(
                    None,
                    format!("steps[{i}]"),
                    "a step must be a JSON object",
                ));
            };
            let name = match o.remove("name") {
                Some(Value::String(n)) if name_ok(&n) => n,
                _ => {
                    return Err(PipelineError::of(
                        None,
                        format!("steps[{i}].name"),
                        "1-64 characters of a-z, 0-9, '-', '_' are required",
                    ));
                }
            };
            if !names.insert(name.clone()) {
                return Err(PipelineError::of(Some(&name), "name", "two steps have this name"));
            }
            let needs = match o.remove("needs") {
                None => Vec::new(),
                Some(Value::Array(a)) => {
                    let mut needs = Vec::with_capacity(a.len());
                    for n in a {
                        match n {
                            Value::String(n) if name_ok(&n) && !needs.contains(&n) => needs.push(n),
                            _ => {
                                return Err(PipelineError::of(
                                    Some(&name),
                                    "needs",
                                    "distinct step names are required",
                                ));
                            }
                        }
                    }
                    needs
                }
                Some(_) => {
                    return Err(PipelineError::of(
                        Some(&name),
                        "needs",
                        "an array of step names is required",
                    ));
                }
            };
            let optional = match o.remove("continue_on_failure") {
                None => false,
                Some(Value::Bool(b)) => b,
                Some(_) => {
                    return Err(PipelineError::of(
                        Some(&name),
                        "continue_on_failure",
                        "a boolean is required",
                    ));
                }
            };
            steps.push(StepSpec {
                name,
                needs,
                optional,
                job: Value::Object(o),
            });
        }
        for s in &steps {
            if let Some(n) = s.needs.iter().find(|n| !names.contains(*n) || **n == s.name) {
                let why = if *n == s.name {
                    "a step cannot need itself"
                } else {
                    "no step has this name"
                };
                return Err(PipelineError::of(Some(&s.name), "needs", format!("{n}: {why}")));
            }
            check_references(s)?;
        }
        let steps = order(steps)?;
        Ok(Self { steps })
    }
}

/// Sorts the steps parents first (Kahn's algorithm); refuses a cycle (naming a step on it) and
/// a chain longer than [`MAX_DEPTH`].
fn order(steps: Vec<StepSpec>) -> Result<Vec<StepSpec>, PipelineError> {
    let mut left: BTreeMap<String, StepSpec> = steps.into_iter().map(|s| (s.name.clone(), s)).collect();
    let mut depth: BTreeMap<String, usize> = BTreeMap::new();
    let mut out = Vec::with_capacity(left.len());
    while !left.is_empty() {
        let ready: Vec<String> = left
            .values()
            .filter(|s| s.needs.iter().all(|n| depth.contains_key(n)))
            .map(|s| s.name.clone())
            .collect();
        if ready.is_empty() {
            let on_cycle = left.keys().next().cloned().unwrap_or_default();
            return Err(PipelineError::of(
                Some(&on_cycle),
                "needs",
                "the steps' needs form a cycle",
            ));
        }
        for name in ready {
            let Some(s) = left.remove(&name) else { continue };
            let d = 1 + s.needs.iter().filter_map(|n| depth.get(n)).max().copied().unwrap_or(0);
            if d > MAX_DEPTH {
                return Err(PipelineError::of(
                    Some(&name),
                    "needs",
                    format!("a chain of steps is at most {MAX_DEPTH} long"),
                ));
            }
            depth.insert(name, d);
            out.push(s);
        }
    }
    Ok(out)
}

/// The fields of each kind that may hold a reference, and what they accept.
fn accepts(kind: &str, at: &str) -> Option<&'static [Media]> {
    const IMAGE: &[Media] = &[Media::Image];
    const VIDEO: &[Media] = &[Media::Video];
    const ANY: &[Media] = &[Media::Image, Media::Video];
    match (kind, at) {
        ("upscale", "/input") => Some(IMAGE),
        ("transcode", "/input") => Some(VIDEO),
        ("csam_hash", "/input") => Some(ANY),
        ("generate", p) if p.starts_with("/reference_images/") => Some(IMAGE),
        _ => None,
    }
}

/// What an output holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Media {
    /// An image.
    Image,
    /// A video.
    Video,
}

impl Media {
    fn as_str(self) -> &'static str {
        match self {
            Media::Image => "an image",
            Media::Video => "a video",
        }
    }
}

/// Each reference of a step: well formed, in a field that takes one, naming a step it needs.
fn check_references(s: &StepSpec) -> Result<(), PipelineError> {
    let kind = s.job.get("kind").and_then(Value::as_str).unwrap_or_default();
    let Some(payload) = s.job.get("payload") else {
        return Ok(());
    };
    for (at, text) in step_ref::find(payload) {
        let field = format!("payload{}", at.replace('/', "."));
        let r = StepRef::parse(text).ok_or_else(|| {
            PipelineError::of(
                Some(&s.name),
                field.clone(),
                "a reference is ${steps.<name>.output} or ${steps.<name>.outputs.<label>}",
            )
        })?;
        if accepts(kind, &at).is_none() {
            return Err(PipelineError::of(
                Some(&s.name),
                field,
                "this field does not take a step's output",
            ));
        }
        if !s.needs.contains(&r.step) {
            return Err(PipelineError::of(
                Some(&s.name),
                field,
                format!("step {} is not in this step's needs", r.step),
            ));
        }
    }
    Ok(())
}

/// What a planned step's output (or the output it names) holds: `None` when it has none a
/// step can take (a hash report, a no-op, a manifest of several generated outputs).
pub fn output_of(body: &Payload, video_model: bool, label: Option<&str>) -> Option<Media> {
    match (body, label) {
        (Payload::Generate(g), None) if g.samples.unwrap_or(1) <= 1 => {
            Some(if video_model { Media::Video } else { Media::Image })
        }
        (Payload::Upscale(_), None) => Some(Media::Image),
        (Payload::Transcode(_), None | Some("webm")) => Some(Media::Video),
        (Payload::Transcode(_), Some("poster" | "preview")) => Some(Media::Image),
        _ => None,
    }
}

/// Checks, once every step is planned (generate jobs routed to their model), that each
/// reference names an output its field accepts. `planned` holds each step's payload and
/// whether its model makes video.
pub fn check_types(steps: &[StepSpec], planned: &BTreeMap<String, (Payload, bool)>) -> Result<(), PipelineError> {
    for s in steps {
        let Some((body, _)) = planned.get(&s.name) else {
            continue;
        };
        let kind = body.kind();
        let v = serde_json::to_value(body).unwrap_or_default();
        let Some(payload) = v.get("payload") else { continue };
        for (at, text) in step_ref::find(payload) {
            let field = format!("payload{}", at.replace('/', "."));
            let (Some(r), Some(want)) = (StepRef::parse(text), accepts(kind.as_str(), &at)) else {
                continue;
            };
            let Some((parent, video)) = planned.get(&r.step) else {
                continue;
            };
            let got = output_of(parent, *video, r.label.as_deref());
            match got {
                Some(m) if want.contains(&m) => {}
                Some(m) => {
                    return Err(PipelineError::of(
                        Some(&s.name),
                        field,
                        format!(
                            "step {} makes {}; this field takes {}",
                            r.step,
                            m.as_str(),
                            want[0].as_str()
                        ),
                    ));
                }
                None => {
                    let what = r
                        .label
                        .as_deref()
                        .map(|l| format!("no output named {l:?}"))
                        .unwrap_or_else(|| format!("no single media output (a {} step)", parent.kind()));
                    return Err(PipelineError::of(
                        Some(&s.name),
                        field,
                        format!("step {} has {what}", r.step),
                    ));
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn step(name: &str, needs: &[&str], kind: &str, payload: Value) -> Value {
        json!({"name": name, "needs": needs, "user": "u", "kind": kind, "payload": payload})
    }

    #[test]
    fn a_pipeline_is_ordered_parents_first_and_bad_shapes_name_the_step_and_field() {
        let ok = PipelineSpec::parse(json!({"steps": [
            step("scan", &["big"], "csam_hash", json!({"input": "${steps.big.output}"})),
            step("image", &[], "generate", json!({"provider": "openai", "model": "gpt-image-1", "prompt": "p"})),
            step("big", &["image"], "upscale", json!({"input": "${steps.image.output}", "scale": 2})),
        ]}))
        .expect("valid");
        let names: Vec<&str> = ok.steps.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["image", "big", "scan"]);
        let refused = |body: Value| PipelineSpec::parse(body).expect_err("refused");
        let e = refused(json!({"steps": [step("a", &["b"], "noop", json!({})), step("b", &["a"], "noop", json!({}))]}));
        assert!(e.reason.contains("cycle"), "{e}");
        let e = refused(json!({"steps": [step("a", &["zz"], "noop", json!({}))]}));
        assert_eq!((e.step.as_deref(), e.field.as_str()), (Some("a"), "needs"));
        let e = refused(json!({"steps": [step("a", &["a"], "noop", json!({}))]}));
        assert!(e.reason.contains("itself"), "{e}");
        let e = refused(json!({"steps": [step("a", &[], "noop", json!({})), step("a", &[], "noop", json!({}))]}));
        assert_eq!(e.field, "name");
        let e = refused(
            json!({"steps": [step("a", &[], "noop", json!({})), step("b", &[], "upscale", json!({"input": "${steps.a.output}"}))]}),
        );
        assert_eq!((e.step.as_deref(), e.field.as_str()), (Some("b"), "payload.input"));
        assert!(e.reason.contains("not in this step's needs"), "{e}");
        let e = refused(
            json!({"steps": [step("a", &[], "noop", json!({})), step("b", &["a"], "upscale", json!({"input": "${steps.a.outptu}"}))]}),
        );
        assert!(e.reason.contains("a reference is"), "{e}");
        let e = refused(
            json!({"steps": [step("a", &[], "noop", json!({})), step("b", &["a"], "upscale", json!({"input": "x", "format": "${steps.a.output}"}))]}),
        );
        assert_eq!(e.field, "payload.format");
        let e = refused(json!({"steps": []}));
        assert_eq!(e.field, "steps");
        let e = refused(json!({"steps": [step("a", &[], "noop", json!({}))], "extra": 1}));
        assert_eq!(e.field, "extra");
        // 17 in a chain is too deep; 65 steps too many.
        let chain: Vec<Value> = (0..17)
            .map(|i| {
                let needs: Vec<String> = if i == 0 { vec![] } else { vec![format!("s{}", i - 1)] };
                json!({"name": format!("s{i}"), "needs": needs, "user": "u", "kind": "noop", "payload": {}})
            })
            .collect();
        assert!(refused(json!({"steps": chain})).reason.contains("at most 16"));
        let many: Vec<Value> = (0..65)
            .map(|i| step(&format!("s{i}"), &[], "noop", json!({})))
            .collect();
        assert!(refused(json!({"steps": many})).reason.contains("1 to 64"));
    }

    #[test]
    fn references_must_name_an_output_their_field_takes() {
        let p = |v: Value| -> Payload { serde_json::from_value(v).expect("payload") };
        let spec = PipelineSpec::parse(json!({"steps": [
            step("image", &[], "generate", json!({"provider": "openai", "model": "m", "prompt": "p"})),
            step("web", &["image"], "transcode", json!({"input": "${steps.image.output}"})),
        ]}))
        .expect("structure is fine");
        let mut planned = BTreeMap::new();
        planned.insert(
            "image".to_owned(),
            (
                p(json!({"kind": "generate", "payload": {"provider": "openai", "model": "m", "prompt": "p"}})),
                false,
            ),
        );
        planned.insert(
            "web".to_owned(),
            (
                p(json!({"kind": "transcode", "payload": {"input": "${steps.image.output}"}})),
                false,
            ),
        );
        let e = check_types(&spec.steps, &planned).expect_err("an image is not a video");
        assert_eq!((e.step.as_deref(), e.field.as_str()), (Some("web"), "payload.input"));
        assert!(e.reason.contains("makes an image"), "{e}");
        // A video model's output is.
        planned.get_mut("image").expect("planned").1 = true;
        check_types(&spec.steps, &planned).expect("a video goes to a transcode");
        assert_eq!(output_of(&planned["web"].0, false, Some("poster")), Some(Media::Image));
        assert_eq!(output_of(&planned["web"].0, false, Some("nope")), None);
    }
}
