//! References from a pipeline step's payload to a parent step's outputs: a string field whose
//! whole value is `${steps.<name>.output}` (the parent's main output) or
//! `${steps.<name>.outputs.<label>}` (one it names in its result's details: a transcode's
//! `webm`, `poster`, `preview`). The scheduler checks them when the pipeline is submitted; the
//! queue puts the parent's object key in their place when the step is claimed.
//!
//! A step that runs once per output of a parent (`for_each`) says `${each.output}` for the
//! output its copy takes; the scheduler rewrites it into one of the references above when it
//! fans the step out, so no stored job holds it.

use serde_json::Value;

/// One reference.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct StepRef {
    /// The parent step's name.
    pub step: String,
    /// The output's label (`None`: the main output).
    pub label: Option<String>,
}

impl StepRef {
    /// Reads a reference (`None`: the string is not one).
    pub fn parse(s: &str) -> Option<Self> {
        let inner = s.strip_prefix("${steps.")?.strip_suffix('}')?;
        let (step, rest) = inner.split_once('.')?;
        let name_ok = |n: &str| {
            !n.is_empty()
                && n.len() <= 64
                && n.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        };
        if !name_ok(step) {
            return None;
        }
        let label = match rest {
            "output" => None,
            _ => Some(rest.strip_prefix("outputs.").filter(|l| name_ok(l))?.to_owned()),
        };
        Some(Self {
            step: step.to_owned(),
            label,
        })
    }

    /// Whether `s` looks like a reference, well formed or not (`${steps.` …).
    pub fn looks_like(s: &str) -> bool {
        s.starts_with("${steps.")
    }
}

/// The output a `for_each` step's copy takes.
pub const EACH_OUTPUT: &str = "${each.output}";

/// Whether `s` looks like a `for_each` reference, well formed or not (`${each` …).
pub fn looks_like_each(s: &str) -> bool {
    s.starts_with("${each")
}

/// Every string in `v` that looks like a reference (to a step or `${each…}`), with its JSON pointer (`/input`,
/// `/reference_images/0`).
pub fn find(v: &Value) -> Vec<(String, &str)> {
    let mut out = Vec::new();
    walk(v, String::new(), &mut out);
    out
}

fn walk<'a>(v: &'a Value, at: String, out: &mut Vec<(String, &'a str)>) {
    match v {
        Value::String(s) if StepRef::looks_like(s) || looks_like_each(s) => out.push((at, s)),
        Value::Array(a) => {
            for (i, x) in a.iter().enumerate() {
                walk(x, format!("{at}/{i}"), out);
            }
        }
        Value::Object(o) => {
            for (k, x) in o {
                walk(x, format!("{at}/{k}"), out);
            }
        }
        _ => {}
    }
}

/// Replaces every `${each.output}` in `v` with `with`.
pub fn replace_each(v: &mut Value, with: &str) {
    match v {
        Value::String(s) if s == EACH_OUTPUT => *s = with.to_owned(),
        Value::Array(a) => a.iter_mut().for_each(|x| replace_each(x, with)),
        Value::Object(o) => o.values_mut().for_each(|x| replace_each(x, with)),
        _ => {}
    }
}

/// Replaces every reference in `v` with what `resolve` gives for it; the first error stops.
pub fn substitute<E>(v: &mut Value, resolve: &impl Fn(&StepRef) -> Result<String, E>) -> Result<(), E> {
    match v {
        Value::String(s) => {
            if let Some(r) = StepRef::parse(s) {
                *s = resolve(&r)?;
            }
        }
        Value::Array(a) => {
            for x in a {
                substitute(x, resolve)?;
            }
        }
        Value::Object(o) => {
            for x in o.values_mut() {
                substitute(x, resolve)?;
            }
        }
        _ => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_parse_strictly_and_are_found_and_replaced() {
        assert_eq!(
            StepRef::parse("${steps.image.output}"),
            Some(StepRef {
                step: "image".into(),
                label: None
            })
        );
        assert_eq!(
            StepRef::parse("${steps.web.outputs.webm}").and_then(|r| r.label),
            Some("webm".into())
        );
        for bad in [
            "${steps.Image.output}",
            "${steps.a.outputs}",
            "${steps.a.outputs.}",
            "${steps.a.output",
            "steps.a.output",
            "${steps..output}",
        ] {
            assert_eq!(StepRef::parse(bad), None, "{bad}");
        }
        let mut v =
            serde_json::json!({"input": "${steps.a.output}", "refs": ["x", "${steps.b.outputs.poster}"], "n": 2});
        let found: Vec<String> = find(&v).into_iter().map(|(at, _)| at).collect();
        assert_eq!(found, vec!["/input", "/refs/1"]);
        let mut each = serde_json::json!({"input": "${each.output}", "refs": ["${each.output}", "${each.outptu}"]});
        assert_eq!(find(&each).len(), 3, "a misspelt ${{each…}} is found, to be refused");
        replace_each(&mut each, "${steps.a.outputs.0}");
        assert_eq!(
            each,
            serde_json::json!({"input": "${steps.a.outputs.0}", "refs": ["${steps.a.outputs.0}", "${each.outptu}"]})
        );
        substitute(&mut v, &|r: &StepRef| Ok::<_, ()>(format!("key-of-{}", r.step))).expect("resolves");
        assert_eq!(
            v,
            serde_json::json!({"input": "key-of-a", "refs": ["x", "key-of-b"], "n": 2})
        );
    }
}
