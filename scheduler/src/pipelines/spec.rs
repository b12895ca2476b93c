//! A pipeline request, checked before anything is stored: named steps, each a job request as
//! `POST /v1/jobs` takes it plus `needs` (the steps it waits for) and `continue_on_failure`;
//! no cycle, at most [`MAX_STEPS`] steps and [`MAX_DEPTH`] levels; every reference to a
//! parent's output (`${steps.<name>.output}`, see [`gantry_core::step_ref`]) in a
//! field that takes one, naming a step it needs, of a kind and output type that field accepts.
//! Every refusal names the step and the field.
//!
//! **Fan-out**: a step with `for_each: <parent>` runs once per output of that parent (each
//! sample of a multi-sample generate, each rendition of a transcode, or once per copy of a
//! parent that fans out itself), each copy taking its output as `${each.output}`. The copies
//! are steps of their own, named `<step>-<label>` (`up-0`, `scan-webm`); a step that needs a
//! fanned-out step needs every copy (fan-in). How many copies there are is known once the
//! parent is planned ([`expand`]); the pipeline's step limit counts the copies.

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
    /// The parent it runs once per output of.
    pub for_each: Option<String>,
    /// For a copy of a fanned-out step: the step as submitted.
    pub copy_of: Option<String>,
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
            let mut needs = needs;
            let for_each = match o.remove("for_each") {
                None => None,
                Some(Value::String(t)) if name_ok(&t) && t != name => {
                    if !needs.contains(&t) {
                        needs.push(t.clone());
                    }
                    Some(t)
                }
                Some(_) => {
                    return Err(PipelineError::of(
                        Some(&name),
                        "for_each",
                        "the name of another step is required",
                    ));
                }
            };
            steps.push(StepSpec {
                name,
                needs,
                optional,
                job: Value::Object(o),
                for_each,
                copy_of: None,
            });
        }
        let fanned: BTreeSet<&str> = steps
            .iter()
            .filter(|s| s.for_each.is_some())
            .map(|s| s.name.as_str())
            .collect();
        for s in &steps {
            if let Some(n) = s.needs.iter().find(|n| !names.contains(*n) || **n == s.name) {
                let why = if *n == s.name {
                    "a step cannot need itself"
                } else {
                    "no step has this name"
                };
                return Err(PipelineError::of(Some(&s.name), "needs", format!("{n}: {why}")));
            }
            check_references(s, &fanned)?;
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

/// Each reference of a step: well formed, in a field that takes one, naming a step it needs
/// (not one that fans out: its copies are taken one each by a `for_each` step).
fn check_references(s: &StepSpec, fanned: &BTreeSet<&str>) -> Result<(), PipelineError> {
    let kind = s.job.get("kind").and_then(Value::as_str).unwrap_or_default();
    let Some(payload) = s.job.get("payload") else {
        return Ok(());
    };
    for (at, text) in step_ref::find(payload) {
        let field = format!("payload{}", at.replace('/', "."));
        if text == step_ref::EACH_OUTPUT {
            if s.for_each.is_none() {
                return Err(PipelineError::of(
                    Some(&s.name),
                    field,
                    "${each.output} is for a step with for_each",
                ));
            }
            if accepts(kind, &at).is_none() {
                return Err(PipelineError::of(
                    Some(&s.name),
                    field,
                    "this field does not take a step's output",
                ));
            }
            continue;
        }
        let r = StepRef::parse(text).ok_or_else(|| {
            PipelineError::of(
                Some(&s.name),
                field.clone(),
                "a reference is ${steps.<name>.output}, ${steps.<name>.outputs.<label>} or ${each.output}",
            )
        })?;
        if fanned.contains(r.step.as_str()) {
            return Err(PipelineError::of(
                Some(&s.name),
                field,
                format!(
                    "step {} runs once per output of another; take its copies one each with for_each: {}",
                    r.step, r.step
                ),
            ));
        }
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
/// step can take (a hash report, a no-op, a manifest of several generated outputs, a
/// rendition its payload does not ask for).
pub fn output_of(body: &Payload, video_model: bool, label: Option<&str>) -> Option<Media> {
    let generated = if video_model { Media::Video } else { Media::Image };
    match (body, label) {
        (Payload::Generate(g), None) if g.samples.unwrap_or(1) <= 1 => Some(generated),
        (Payload::Generate(g), Some(l)) if g.samples.unwrap_or(1) > 1 => l
            .parse::<u32>()
            .ok()
            .filter(|i| *i < g.samples.unwrap_or(1))
            .map(|_| generated),
        (Payload::Upscale(_), None) => Some(Media::Image),
        (Payload::Transcode(_), None) => Some(Media::Video),
        (Payload::Transcode(t), Some("webm")) if t.webm => Some(Media::Video),
        (Payload::Transcode(t), Some("poster" | "preview")) if t.previews => Some(Media::Image),
        _ => None,
    }
}

/// The outputs of a planned step a `for_each` step runs once each: their labels (`None`: the
/// main output). A multi-sample generate's samples are labelled `0`, `1`, …; a transcode's
/// renditions are its main output and each one its payload asks for.
pub fn for_each_outputs(body: &Payload) -> Vec<Option<String>> {
    match body {
        Payload::Generate(g) => match g.samples.unwrap_or(1) {
            0 | 1 => vec![None],
            n => (0..n).map(|i| Some(i.to_string())).collect(),
        },
        Payload::Upscale(_) => vec![None],
        Payload::Transcode(t) => {
            let mut out = vec![None];
            if t.webm {
                out.push(Some("webm".to_owned()));
            }
            if t.previews {
                out.extend([Some("poster".to_owned()), Some("preview".to_owned())]);
            }
            out
        }
        Payload::CsamHash(_) | Payload::Noop(_) | Payload::Export(_) => Vec::new(),
    }
}

/// A step as it runs, once the steps before it are planned: a step that needs a fanned-out
/// step needs every copy of it; a `for_each` step becomes one copy per output of its parent
/// (`outputs` gives a planned step's, see [`for_each_outputs`]), or one per copy where the
/// parent fanned out itself. `fanned` maps each fanned-out step to its copies' names.
pub fn expand(
    s: StepSpec,
    fanned: &BTreeMap<String, Vec<String>>,
    outputs: impl Fn(&str) -> Vec<Option<String>>,
) -> Result<Vec<StepSpec>, PipelineError> {
    let widen = |needs: &[String], except: Option<&str>| -> Vec<String> {
        let mut out = Vec::new();
        for n in needs.iter().filter(|n| Some(n.as_str()) != except) {
            match fanned.get(n) {
                Some(copies) => out.extend(copies.iter().cloned()),
                None => out.push(n.clone()),
            }
        }
        out
    };
    let Some(parent) = s.for_each.clone() else {
        let needs = widen(&s.needs, None);
        return Ok(vec![StepSpec { needs, ..s }]);
    };
    // (the copy's suffix, the parent or parent's copy it needs, the reference it takes)
    let each: Vec<(String, String, String)> = match fanned.get(&parent) {
        Some(copies) => copies
            .iter()
            .map(|c| {
                let suffix = c.strip_prefix(&format!("{parent}-")).unwrap_or(c).to_owned();
                (suffix, c.clone(), format!("${{steps.{c}.output}}"))
            })
            .collect(),
        None => outputs(&parent)
            .into_iter()
            .map(|label| match label {
                None => (
                    "output".to_owned(),
                    parent.clone(),
                    format!("${{steps.{parent}.output}}"),
                ),
                Some(l) => (l.clone(), parent.clone(), format!("${{steps.{parent}.outputs.{l}}}")),
            })
            .collect(),
    };
    if each.is_empty() {
        return Err(PipelineError::of(
            Some(&s.name),
            "for_each",
            format!("step {parent} makes no output a step can take"),
        ));
    }
    let others = widen(&s.needs, Some(&parent));
    each.into_iter()
        .map(|(suffix, needs_one, reference)| {
            let name = format!("{}-{suffix}", s.name);
            if name.len() > 64 {
                return Err(PipelineError::of(
                    Some(&s.name),
                    "name",
                    format!("its copy {name} would be longer than 64 characters"),
                ));
            }
            let mut job = s.job.clone();
            if let Some(p) = job.get_mut("payload") {
                step_ref::replace_each(p, &reference);
            }
            let mut needs = others.clone();
            needs.push(needs_one);
            Ok(StepSpec {
                name,
                needs,
                optional: s.optional,
                job,
                for_each: None,
                copy_of: Some(s.name.clone()),
            })
        })
        .collect()
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
        assert_eq!(
            output_of(&planned["web"].0, false, Some("poster")),
            None,
            "no previews asked for"
        );
        assert_eq!(output_of(&planned["web"].0, false, Some("nope")), None);
    }

    #[test]
    fn a_for_each_step_fans_out_per_output_and_its_dependents_fan_in() {
        let p = |v: Value| -> Payload { serde_json::from_value(v).expect("payload") };
        let spec = PipelineSpec::parse(json!({"steps": [
            step("gen", &[], "generate", json!({"provider": "openai", "model": "m", "prompt": "p", "samples": 3})),
            {"name": "up", "for_each": "gen", "user": "u", "kind": "upscale", "payload": {"input": "${each.output}", "scale": 2}},
            {"name": "scan", "for_each": "up", "user": "u", "kind": "csam_hash", "payload": {"input": "${each.output}"}},
            step("done", &["scan", "gen"], "noop", json!({})),
        ]}))
        .expect("valid");
        assert_eq!(spec.steps[1].needs, ["gen"], "for_each implies needs");
        let gen_body = p(
            json!({"kind": "generate", "payload": {"provider": "openai", "model": "m", "prompt": "p", "samples": 3}}),
        );
        let outputs = |_: &str| for_each_outputs(&gen_body);
        let mut fanned = BTreeMap::new();
        let mut all = Vec::new();
        for s in spec.steps {
            let (name, fans) = (s.name.clone(), s.for_each.is_some());
            let copies = expand(s, &fanned, outputs).expect("expands");
            if fans {
                fanned.insert(name, copies.iter().map(|c| c.name.clone()).collect::<Vec<_>>());
            }
            all.extend(copies);
        }
        let by: BTreeMap<&str, &StepSpec> = all.iter().map(|s| (s.name.as_str(), s)).collect();
        let names: Vec<&str> = all.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(
            names,
            ["gen", "up-0", "up-1", "up-2", "scan-0", "scan-1", "scan-2", "done"]
        );
        assert_eq!(by["up-1"].job["payload"]["input"], "${steps.gen.outputs.1}");
        assert_eq!(by["up-1"].copy_of.as_deref(), Some("up"));
        assert_eq!(by["scan-2"].needs, ["up-2"]);
        assert_eq!(by["scan-2"].job["payload"]["input"], "${steps.up-2.output}");
        assert_eq!(by["done"].needs, ["scan-0", "scan-1", "scan-2", "gen"]);
        // A transcode fans out per rendition its payload asks for.
        let web = p(json!({"kind": "transcode", "payload": {"input": "k", "webm": true, "previews": true}}));
        assert_eq!(
            for_each_outputs(&web),
            [None, Some("webm".into()), Some("poster".into()), Some("preview".into())]
        );
        assert_eq!(output_of(&web, false, Some("poster")), Some(Media::Image));
        let plain = p(json!({"kind": "transcode", "payload": {"input": "k"}}));
        assert_eq!(output_of(&plain, false, Some("webm")), None, "not asked for");
        assert_eq!(output_of(&gen_body, false, Some("2")), Some(Media::Image));
        assert_eq!(output_of(&gen_body, false, Some("3")), None);
        assert_eq!(
            output_of(&gen_body, false, None),
            None,
            "three samples: no single output"
        );
        // Nothing to fan out over; references that cannot work.
        let scan = StepSpec {
            name: "s".into(),
            needs: vec!["h".into()],
            optional: false,
            job: json!({"kind": "csam_hash", "payload": {"input": "${each.output}"}}),
            for_each: Some("h".into()),
            copy_of: None,
        };
        let e = expand(scan, &BTreeMap::new(), |_| Vec::new()).expect_err("no outputs");
        assert_eq!((e.step.as_deref(), e.field.as_str()), (Some("s"), "for_each"));
        let refused = |body: Value| PipelineSpec::parse(body).expect_err("refused");
        let e = refused(json!({"steps": [
            step("gen", &[], "generate", json!({"provider": "openai", "model": "m", "prompt": "p"})),
            step("up", &["gen"], "upscale", json!({"input": "${each.output}"})),
        ]}));
        assert!(e.reason.contains("for a step with for_each"), "{e}");
        let e = refused(json!({"steps": [
            step("gen", &[], "generate", json!({"provider": "openai", "model": "m", "prompt": "p"})),
            {"name": "up", "for_each": "gen", "user": "u", "kind": "upscale", "payload": {"input": "${each.output}"}},
            step("scan", &["up"], "csam_hash", json!({"input": "${steps.up.output}"})),
        ]}));
        assert_eq!((e.step.as_deref(), e.field.as_str()), (Some("scan"), "payload.input"));
        assert!(e.reason.contains("for_each: up"), "{e}");
        let e = refused(json!({"steps": [
            {"name": "up", "for_each": "up", "user": "u", "kind": "upscale", "payload": {"input": "${each.output}"}},
        ]}));
        assert_eq!(e.field, "for_each");
        let e = refused(json!({"steps": [
            {"name": "up", "for_each": "nope", "user": "u", "kind": "upscale", "payload": {"input": "${each.output}"}},
        ]}));
        assert_eq!(e.field, "needs");
    }
}
