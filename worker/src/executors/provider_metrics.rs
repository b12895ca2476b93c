//! Metrics of the calls the generate executor makes to the model providers: a decorator around
//! each (provider, region) client counts every submit, poll and lookup by outcome (`ok` or the
//! provider error class — `rate_limited` for a 429, `transient` for a 5xx or a timeout…) and
//! times it; the executor sets each circuit breaker's state after every attempt.
//!
//! - `gantry_provider_requests_total{provider,region,call,outcome}`
//! - `gantry_provider_request_duration_seconds{provider,call}`
//! - `gantry_provider_circuit_open{provider,region}` (1 open, 0 closed or half-open)

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
}

impl Default for ProviderMetrics {
    fn default() -> Self {
        Self {
            requests: Family::default(),
            duration: Family::new_with_constructor(|| {
                Histogram::new([
                    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
                ])
            }),
            circuit: Family::default(),
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

    fn observe<T>(&self, provider: &str, region: &str, call: &str, started: Instant, r: &Result<T, ProviderError>) {
        let outcome = match r {
            Ok(_) => "ok",
            Err(e) => e.class.as_str(),
        };
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
        let r = f.await;
        self.metrics.observe(&self.provider, &self.region, call, started, &r);
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
