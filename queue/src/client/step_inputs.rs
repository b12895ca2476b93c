//! A claimed pipeline step's references to its parents' outputs (`${steps.<name>.output}`, see
//! [`gantry_core::step_ref`]) replaced by the object keys its parents' results name. Each
//! parent's result was noted on the step's record (`in:<parent>`) by the script that recorded
//! the parent's success. A reference that cannot be resolved fails the attempt permanently.

use std::collections::BTreeSet;

use gantry_core::step_ref::{self, StepRef};

use super::QueueClient;
use super::lease::{ClaimedJob, Failure};
use crate::Payload;
use crate::error::QueueError;
use crate::job::{ErrorClass, ResultRef};
use crate::keys::Pool;

/// A step's payload as JSON and the parents it refers to.
type Parents = (serde_json::Value, Vec<String>);

/// Whether a field that may hold a reference (the ones the scheduler accepts them in) looks
/// like one: checked on the payload itself, so a claim serializes nothing for the jobs that
/// are not pipeline steps.
fn may_refer(body: &Payload) -> bool {
    match body {
        Payload::Upscale(p) => StepRef::looks_like(&p.input),
        Payload::Transcode(p) => StepRef::looks_like(&p.input),
        Payload::CsamHash(p) => StepRef::looks_like(&p.input),
        Payload::Generate(g) => g.reference_images.iter().any(|r| StepRef::looks_like(r)),
        Payload::Noop(_) | Payload::Export(_) => false,
    }
}

/// The parents a job's payload refers to (`None` for a job that is not a pipeline step).
fn parents_of(job: &ClaimedJob) -> Option<Parents> {
    if !may_refer(&job.spec.body) {
        return None;
    }
    let v = serde_json::to_value(&job.spec.body).ok()?;
    let steps: BTreeSet<String> = step_ref::find(&v)
        .into_iter()
        .filter_map(|(_, s)| StepRef::parse(s).map(|r| r.step))
        .collect();
    (!steps.is_empty()).then(|| (v, steps.into_iter().collect()))
}

fn resolve(noted: &[(String, Option<String>)], r: &StepRef) -> Result<String, String> {
    let value = noted
        .iter()
        .find(|(s, _)| *s == r.step)
        .and_then(|(_, v)| v.as_deref())
        .filter(|v| *v != "!")
        .ok_or_else(|| format!("no output from step {} (it has not succeeded)", r.step))?;
    let result: ResultRef =
        serde_json::from_str(value).map_err(|_| format!("step {} succeeded without an output", r.step))?;
    match &r.label {
        None => Ok(result.object_key),
        Some(l) => result
            .details
            .get(l)
            .cloned()
            .ok_or_else(|| format!("step {} has no output named {l:?}", r.step)),
    }
}

impl QueueClient {
    /// Resolves the references of the pipeline steps among `jobs` (one round trip for all);
    /// returns the jobs ready to run and the attempts to fail.
    pub(super) async fn resolve_step_inputs(
        &self,
        pool: &Pool,
        jobs: Vec<ClaimedJob>,
    ) -> Result<(Vec<ClaimedJob>, Vec<Failure>), QueueError> {
        let mut steps: Vec<(ClaimedJob, Option<Parents>)> = jobs
            .into_iter()
            .map(|j| {
                let p = parents_of(&j);
                (j, p)
            })
            .collect();
        if steps.iter().all(|(_, p)| p.is_none()) {
            return Ok((steps.into_iter().map(|(j, _)| j).collect(), Vec::new()));
        }
        let mut pipe = redis::pipe();
        for (j, p) in &steps {
            if let Some((_, parents)) = p {
                let fields: Vec<String> = parents.iter().map(|s| format!("in:{s}")).collect();
                pipe.cmd("HMGET").arg(pool.job_key(j.lease.id)).arg(fields);
            }
        }
        let mut c = self.conn.clone();
        let mut noted: std::collections::VecDeque<Vec<Option<String>>> =
            pipe.query_async::<Vec<Vec<Option<String>>>>(&mut c).await?.into();
        let (mut ready, mut failed) = (Vec::new(), Vec::new());
        for (mut j, p) in steps.drain(..) {
            let Some((mut v, parents)) = p else {
                ready.push(j);
                continue;
            };
            let values = noted.pop_front().unwrap_or_default();
            let pairs: Vec<(String, Option<String>)> = parents.into_iter().zip(values).collect();
            let outcome = step_ref::substitute(&mut v, &|r: &StepRef| resolve(&pairs, r)).and_then(|()| {
                serde_json::from_value::<Payload>(v).map_err(|e| format!("the resolved payload is invalid: {e}"))
            });
            match outcome {
                Ok(body) => {
                    j.spec.body = body;
                    ready.push(j);
                }
                Err(message) => failed.push(Failure {
                    lease: j.lease,
                    attempt: j.attempt,
                    class: ErrorClass::Permanent,
                    message: format!("pipeline input: {message}"),
                    retry_after: None,
                }),
            }
        }
        Ok((ready, failed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_resolve_to_the_parents_object_keys_or_say_why_not() {
        let result = serde_json::json!({"object_key": "t/u/1/output.mp4", "size_bytes": 1, "content_type": "video/mp4",
            "sha256": "00", "details": {"webm": "t/u/1/output.webm"}})
        .to_string();
        let noted = vec![
            ("web".to_owned(), Some(result)),
            ("bad".to_owned(), Some("!".to_owned())),
            ("gone".to_owned(), None),
        ];
        let r = |s: &str| StepRef::parse(s).expect("a reference");
        assert_eq!(
            resolve(&noted, &r("${steps.web.output}")).as_deref(),
            Ok("t/u/1/output.mp4")
        );
        assert_eq!(
            resolve(&noted, &r("${steps.web.outputs.webm}")).as_deref(),
            Ok("t/u/1/output.webm")
        );
        assert!(resolve(&noted, &r("${steps.web.outputs.poster}")).is_err());
        assert!(resolve(&noted, &r("${steps.bad.output}")).is_err());
        assert!(resolve(&noted, &r("${steps.gone.output}")).is_err());
    }
}
