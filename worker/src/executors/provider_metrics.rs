//! Metrics of the calls the generate executor makes to the model providers: a decorator around
//! each (provider, region) client counts every submit, poll and lookup by outcome (`ok` or the
//! provider error class — `rate_limited` for a 429, `transient` for a 5xx or a timeout…) and
//! times it; the executor sets each circuit breaker's state after every attempt.
//!
//! - `gantry_provider_requests_total{provider,region,call,outcome}`
//! - `gantry_provider_request_duration_seconds{provider,call}`
//! - `gantry_provider_circuit_open{provider,region}` (1 open, 0 closed or half-open)
//! - `gantry_provider_task_duration_seconds{provider,model,outcome}`: one generation from submit
//!   to its outputs downloaded (or its failure), as the user waits for it

use std::sync::Arc;
use std::time::Instant;

use futures::future::BoxFuture;
use gantry_providers::{GenerateRequest, Mode, Observed, Provider, ProviderError, Submitted, TaskHandle};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use tracing::Instrument as _;

/// Labels of `gantry_provider_requests_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// Provider (configured names only).
    pub provider: String,
    /// Region of the endpoint called.
    pub region: String,
    /// `submit`, `poll` or `find`.
    pub call: String,
    /// `ok`, or the error class.
    pub outcome: String,
}

/// Labels of `gantry_provider_request_duration_seconds`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CallLabels {
    /// Provider.
    pub provider: String,
    /// `submit`, `poll` or `find`.
    pub call: String,
}

/// Labels of `gantry_provider_task_duration_seconds`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TaskLabels {
    /// Provider.
    pub provider: String,
    /// Our model name, as the scheduler admitted it (its configuration lists them); `other` for
    /// a name that does not look like one.
    pub model: String,
    /// `ok`, or why it ended: the provider error class, `circuit_open`, `cancelled`, `timed_out`.
    pub outcome: String,
}

/// Labels of `gantry_provider_circuit_open`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CircuitLabels {
    /// Provider.
    pub provider: String,
    /// Region.
    pub region: String,
}

/// The provider-call metrics (cheap to clone: shared families).
#[derive(Clone, Debug)]
pub struct ProviderMetrics {
    requests: Family<RequestLabels, Counter>,
    duration: Family<CallLabels, Histogram>,
    circuit: Family<CircuitLabels, Gauge>,
    task: Family<TaskLabels, Histogram>,
}

impl Default for ProviderMetrics {
    fn default() -> Self {
        Self {
            requests: Family::default(),
            duration: Family::new_with_constructor(|| {
                gantry_queue::exposition::histogram([
                    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
                ])
            }),
            circuit: Family::default(),
            task: Family::new_with_constructor(|| {
                gantry_queue::exposition::histogram([
                    0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0,
                ])
            }),
        }
    }
}

impl ProviderMetrics {
    /// Registers the families.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "gantry_provider_requests",
            "Calls to model providers, by provider, region, call and outcome (ok or error class)",
            self.requests.clone(),
        );
        registry.register(
            "gantry_provider_request_duration_seconds",
            "Duration of one call to a model provider",
            self.duration.clone(),
        );
        registry.register(
            "gantry_provider_circuit_open",
            "Whether the provider's circuit breaker in a region is open (1) or not (0)",
            self.circuit.clone(),
        );
        registry.register(
            "gantry_provider_task_duration_seconds",
            "One generation at a provider, from submit to its outputs downloaded or its failure",
            self.task.clone(),
        );
    }

    /// Records one generation's duration at `provider` with `model`, ending in `outcome`.
    pub fn observe_task(&self, provider: &str, model: &str, outcome: &str, elapsed: std::time::Duration) {
        let plausible = !model.is_empty()
            && model.len() <= 64
            && model
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b':'));
        self.task
            .get_or_create(&TaskLabels {
                provider: provider.to_owned(),
                model: if plausible { model } else { "other" }.to_owned(),
                outcome: outcome.to_owned(),
            })
            .observe(elapsed.as_secs_f64());
    }

    /// Records a circuit's state.
    pub fn set_circuit(&self, provider: &str, region: &str, open: bool) {
        self.circuit
            .get_or_create(&CircuitLabels {
                provider: provider.to_owned(),
                region: region.to_owned(),
            })
            .set(i64::from(open));
    }

    /// Wraps `client` (of `provider` in `region`) so its calls are counted and timed.
    pub fn meter(&self, provider: &str, region: &str, client: Arc<dyn Provider>) -> Arc<dyn Provider> {
        self.set_circuit(provider, region, false);
        Arc::new(Metered {
            inner: client,
            provider: provider.to_owned(),
            region: region.to_owned(),
            metrics: self.clone(),
        })
    }

    fn observe(&self, provider: &str, region: &str, call: &str, started: Instant, outcome: &str) {
        self.requests
            .get_or_create(&RequestLabels {
                provider: provider.to_owned(),
                region: region.to_owned(),
                call: call.to_owned(),
                outcome: outcome.to_owned(),
            })
            .inc();
        self.duration
            .get_or_create(&CallLabels {
                provider: provider.to_owned(),
                call: call.to_owned(),
            })
            .observe(started.elapsed().as_secs_f64());
    }
}

#[derive(Debug)]
struct Metered {
    inner: Arc<dyn Provider>,
    provider: String,
    region: String,
    metrics: ProviderMetrics,
}

impl Metered {
    async fn timed<T>(&self, call: &str, f: BoxFuture<'_, Result<T, ProviderError>>) -> Result<T, ProviderError> {
        let started = Instant::now();
        // A client span per call: the provider and region, never the request.
        let span = tracing::info_span!(
            "provider.call",
            otel.name = %format_args!("provider.{call}"),
            otel.kind = "client",
            provider = %self.provider,
            region = %self.region,
            outcome = tracing::field::Empty,
        );
        let r = f.instrument(span.clone()).await;
        let outcome = match &r {
            Ok(_) => "ok",
            Err(e) => e.class.as_str(),
        };
        span.record("outcome", outcome);
        self.metrics
            .observe(&self.provider, &self.region, call, started, outcome);
        r
    }
}

impl Provider for Metered {
    fn name(&self) -> &'static str {
        self.inner.name()
    }

    fn mode(&self) -> Mode {
        self.inner.mode()
    }

    fn submit<'a>(&'a self, req: &'a GenerateRequest) -> BoxFuture<'a, Result<Submitted, ProviderError>> {
        Box::pin(self.timed("submit", self.inner.submit(req)))
    }

    fn poll<'a>(&'a self, task: &'a TaskHandle) -> BoxFuture<'a, Result<Observed, ProviderError>> {
        Box::pin(self.timed("poll", self.inner.poll(task)))
    }

    fn accepts_webhooks(&self) -> bool {
        self.inner.accepts_webhooks()
    }

    fn parse_webhook(
        &self,
        headers: &reqwest::header::HeaderMap,
        body: &[u8],
        secret: &str,
    ) -> Result<(String, Observed), ProviderError> {
        self.inner.parse_webhook(headers, body, secret)
    }

    fn can_find(&self) -> bool {
        self.inner.can_find()
    }

    fn find<'a>(&'a self, req: &'a GenerateRequest) -> BoxFuture<'a, Result<Option<TaskHandle>, ProviderError>> {
        Box::pin(self.timed("find", self.inner.find(req)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generations_are_timed_by_provider_model_and_outcome_with_models_bounded() {
        let m = ProviderMetrics::default();
        let mut registry = Registry::default();
        m.register(&mut registry);
        let secs = std::time::Duration::from_secs;
        m.observe_task("openai", "gpt-image-1", "ok", secs(7));
        m.observe_task("kling", "kling-v3-std", "timed_out", secs(900));
        // Whatever a job names is not a label value unless it looks like a model name.
        m.observe_task(
            "openai",
            "a prompt pasted into the model field",
            "invalid_request",
            secs(1),
        );
        m.observe_task("openai", &"m".repeat(65), "invalid_request", secs(1));
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).expect("encodes");
        for want in [
            r#"gantry_provider_task_duration_seconds_bucket{le="10.0",provider="openai",model="gpt-image-1",outcome="ok"} 1"#,
            r#"gantry_provider_task_duration_seconds_bucket{le="600.0",provider="kling",model="kling-v3-std",outcome="timed_out"} 0"#,
            r#"gantry_provider_task_duration_seconds_count{provider="openai",model="other",outcome="invalid_request"} 2"#,
        ] {
            assert!(text.contains(want), "missing {want} in\n{text}");
        }
        assert!(!text.contains("prompt pasted"));
    }
}
