//! References from a pipeline step's payload to a parent step's outputs: a string field whose
//! whole value is `${steps.<name>.output}` (the parent's main output) or
//! `${steps.<name>.outputs.<label>}` (one it names in its result's details: a transcode's
//! `webm`, `poster`, `preview`). The scheduler checks them when the pipeline is submitted; the
//! queue puts the parent's object key in their place when the step is claimed.

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

/// Every string in `v` that looks like a reference, with its JSON pointer (`/input`,
/// `/reference_images/0`).
pub fn find(v: &Value) -> Vec<(String, &str)> {
    let mut out = Vec::new();
    walk(v, String::new(), &mut out);
    out
}

fn walk<'a>(v: &'a Value, at: String, out: &mut Vec<(String, &'a str)>) {
    match v {
        Value::String(s) if StepRef::looks_like(s) => out.push((at, s)),
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
        substitute(&mut v, &|r: &StepRef| Ok::<_, ()>(format!("key-of-{}", r.step))).expect("resolves");
        assert_eq!(
            v,
            serde_json::json!({"input": "key-of-a", "refs": ["x", "key-of-b"], "n": 2})
        );
    }
}
