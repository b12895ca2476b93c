//! Time per executor step, from the spans the steps run in: a `tracing` layer times every span
//! whose name is a step (`provider.submit`, `provider.download`, `store.put`, `scan`,
//! `upscale.resize`, `transcode.ffmpeg`, …) from creation to close, and observes it in
//! `gantry_job_step_duration_seconds{kind, step}`, the kind read from the enclosing `job` span.
//! The spans that traces export and the histograms cannot disagree about what a step is.
//!
//! The layer is installed with the process's subscriber (before any worker exists), so the
//! histogram family is process-wide; a worker registers it in its registry ([`register`]).

use std::sync::LazyLock;
use std::time::Instant;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use tracing::span::{Attributes, Id};
use tracing::{Subscriber, field};
use tracing_subscriber::Layer;
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;

/// Step buckets: 1 ms to 30 min (a hash is milliseconds, a video generation minutes).
const STEP_BUCKETS: [f64; 18] = [
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 900.0, 1800.0,
];

/// The step spans' names, by prefix.
const STEP_PREFIXES: [&str; 5] = ["provider.", "store.", "scan", "upscale.", "transcode."];

/// Labels of `gantry_job_step_duration_seconds`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StepLabels {
    /// The job's kind (`none` outside a job).
    pub kind: String,
    /// The step (the span's name; a provider call's is `provider.<call>`).
    pub step: String,
}

type StepFamily = Family<StepLabels, Histogram, fn() -> Histogram>;

static STEPS: LazyLock<StepFamily> =
    LazyLock::new(|| Family::new_with_constructor(|| gantry_queue::exposition::histogram(STEP_BUCKETS)));

/// Registers the step histogram in a worker's registry.
pub fn register(registry: &mut Registry) {
    registry.register(
        "gantry_job_step_duration_seconds",
        "Duration of one executor step (provider call, download, store, scan, resize, ffmpeg), by kind",
        STEPS.clone(),
    );
}

/// The layer that times step spans.
#[derive(Clone, Copy, Debug, Default)]
pub struct StepTimer;

/// What the layer keeps in a span's extensions.
enum Kept {
    /// A step: its name and when it began.
    Step(String, Instant),
    /// A job span: its kind.
    Job(String),
}

/// Reads `kind` (a job span's) and `otel.name` (a provider call's step name).
#[derive(Default)]
struct Fields {
    kind: Option<String>,
    otel_name: Option<String>,
}

impl field::Visit for Fields {
    fn record_debug(&mut self, f: &field::Field, value: &dyn std::fmt::Debug) {
        match f.name() {
            "kind" => self.kind = Some(format!("{value:?}")),
            "otel.name" => self.otel_name = Some(format!("{value:?}")),
            _ => {}
        }
    }

    fn record_str(&mut self, f: &field::Field, value: &str) {
        match f.name() {
            "kind" => self.kind = Some(value.to_owned()),
            "otel.name" => self.otel_name = Some(value.to_owned()),
            _ => {}
        }
    }
}

impl<S> Layer<S> for StepTimer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let name = attrs.metadata().name();
        let is_job = name == "job";
        if !is_job && !STEP_PREFIXES.iter().any(|p| name.starts_with(p)) {
            return;
        }
        let Some(span) = ctx.span(id) else { return };
        let mut f = Fields::default();
        attrs.record(&mut f);
        let kept = if is_job {
            Kept::Job(f.kind.unwrap_or_default())
        } else {
            Kept::Step(f.otel_name.unwrap_or_else(|| name.to_owned()), Instant::now())
        };
        span.extensions_mut().insert(kept);
    }

    fn on_close(&self, id: Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(&id) else { return };
        let (step, began) = match span.extensions().get::<Kept>() {
            Some(Kept::Step(step, began)) => (step.clone(), *began),
            _ => return,
        };
        let kind = span
            .scope()
            .skip(1)
            .find_map(|s| match s.extensions().get::<Kept>() {
                Some(Kept::Job(kind)) => Some(kind.clone()),
                _ => None,
            })
            .unwrap_or_else(|| "none".to_owned());
        STEPS
            .get_or_create(&StepLabels { kind, step })
            .observe(began.elapsed().as_secs_f64());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing_subscriber::layer::SubscriberExt as _;

    #[test]
    fn step_spans_are_timed_by_their_job_s_kind() {
        let subscriber = tracing_subscriber::registry().with(StepTimer);
        tracing::subscriber::with_default(subscriber, || {
            let job = tracing::info_span!("job", kind = %"upscale-test");
            let _in_job = job.enter();
            drop(tracing::info_span!("upscale.resize", input_bytes = 3).entered());
            drop(tracing::info_span!("provider.call", otel.name = %"provider.submit").entered());
            // Not a step: not timed.
            drop(tracing::info_span!("unrelated").entered());
        });
        drop(tracing::info_span!("store.put").entered());
        let mut registry = Registry::default();
        register(&mut registry);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).expect("encodes");
        for want in [
            r#"gantry_job_step_duration_seconds_count{kind="upscale-test",step="upscale.resize"} 1"#,
            r#"gantry_job_step_duration_seconds_count{kind="upscale-test",step="provider.submit"} 1"#,
        ] {
            assert!(text.contains(want), "missing {want} in\n{text}");
        }
        assert!(!text.contains("unrelated"), "{text}");
    }
}
