//! The worker's Prometheus metrics (prometheus-client, OpenMetrics text). Names follow the
//! Prometheus conventions: `gantry_` prefix, base units, `_total` on counters; labels are
//! bounded (pool, kind, error class, GPU index and model), never job or user ids.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use gantry_queue::{ConsumerEvents, ErrorClass, FailOutcome, JobKind, Pool};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;

use crate::gpu::GpuInventory;

/// Job duration buckets: 5 ms to 30 minutes.
const DURATION_BUCKETS: [f64; 18] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0,
];
/// Claim round-trip buckets: 100 µs to 5 s.
const CLAIM_BUCKETS: [f64; 12] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 1.0, 5.0,
];

/// Labels of per-job series.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct JobLabels {
    /// Pool.
    pub pool: String,
    /// Kind.
    pub kind: String,
}

/// Labels of failure series.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FailLabels {
    /// Pool.
    pub pool: String,
    /// Kind.
    pub kind: String,
    /// Error class.
    pub class: String,
}

/// Labels of pool series.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PoolLabels {
    /// Pool.
    pub pool: String,
}

/// Labels of GPU series.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct GpuLabels {
    /// Index on this host.
    pub gpu: String,
    /// Model name.
    pub model: String,
}

type FGauge = Gauge<f64, AtomicU64>;

/// Every worker metric, registered in one registry.
#[derive(Debug)]
pub struct WorkerMetrics {
    registry: Registry,
    started: Family<JobLabels, Counter>,
    succeeded: Family<JobLabels, Counter>,
    failed: Family<FailLabels, Counter>,
    retried: Family<JobLabels, Counter>,
    dead_lettered: Family<JobLabels, Counter>,
    duration: Family<JobLabels, Histogram, fn() -> Histogram>,
    queue_wait: Family<JobLabels, Histogram, fn() -> Histogram>,
    claim_latency: Family<PoolLabels, Histogram, fn() -> Histogram>,
    in_flight: Family<PoolLabels, Gauge>,
    gpu_memory_used: Family<GpuLabels, FGauge>,
    gpu_memory_total: Family<GpuLabels, FGauge>,
    gpu_memory_free: Family<GpuLabels, FGauge>,
    gpu_decoder_utilization: Family<GpuLabels, FGauge>,
    gpu_utilization: Family<GpuLabels, FGauge>,
    gpu_encoder_utilization: Family<GpuLabels, FGauge>,
    gpu_power: Family<GpuLabels, FGauge>,
    gpu_temperature: Family<GpuLabels, FGauge>,
    /// The per-job series of each (pool, kind) seen, so a job's events do not build label
    /// sets and look them up (two allocations and a hash each) every time.
    series: std::sync::RwLock<Vec<(Pool, JobKind, Arc<JobSeries>)>>,
}

/// One (pool, kind)'s per-job series (handles into the families above).
#[derive(Debug)]
struct JobSeries {
    started: Counter,
    succeeded: Counter,
    duration: Histogram,
    queue_wait: Histogram,
}

impl WorkerMetrics {
    /// A registry with every metric, and the `gantry_worker_info` series set.
    pub fn new(worker_id: &str, pool: &str, gpu_source: &str) -> Self {
        let mut registry = Registry::default();
        let started = Family::<JobLabels, Counter>::default();
        let succeeded = Family::<JobLabels, Counter>::default();
        let failed = Family::<FailLabels, Counter>::default();
        let retried = Family::<JobLabels, Counter>::default();
        let dead_lettered = Family::<JobLabels, Counter>::default();
        let duration: Family<JobLabels, Histogram, fn() -> Histogram> =
            Family::new_with_constructor(|| gantry_queue::exposition::histogram(DURATION_BUCKETS));
        let queue_wait: Family<JobLabels, Histogram, fn() -> Histogram> =
            Family::new_with_constructor(|| gantry_queue::exposition::histogram(gantry_queue::QUEUE_WAIT_BUCKETS));
        let claim_latency: Family<PoolLabels, Histogram, fn() -> Histogram> =
            Family::new_with_constructor(|| gantry_queue::exposition::histogram(CLAIM_BUCKETS));
        let in_flight = Family::<PoolLabels, Gauge>::default();
        registry.register("gantry_jobs_started", "Job attempts started", started.clone());
        registry.register(
            "gantry_jobs_succeeded",
            "Job attempts that succeeded",
            succeeded.clone(),
        );
        registry.register(
            "gantry_jobs_failed",
            "Job attempts that failed, by error class",
            failed.clone(),
        );
        registry.register(
            "gantry_jobs_retried",
            "Failures scheduled for another attempt",
            retried.clone(),
        );
        registry.register(
            "gantry_jobs_dead_lettered",
            "Jobs moved to the dead-letter queue",
            dead_lettered.clone(),
        );
        registry.register(
            "gantry_job_duration_seconds",
            "Duration of one job attempt",
            duration.clone(),
        );
        crate::steps::register(&mut registry);
        registry.register(
            "gantry_job_queue_wait_seconds",
            "Time a job waited to be claimed: from enqueue, or from when it was last made ready again",
            queue_wait.clone(),
        );
        registry.register(
            "gantry_claim_duration_seconds",
            "Claim round trip to Redis",
            claim_latency.clone(),
        );
        registry.register(
            "gantry_jobs_in_flight",
            "Jobs running on this worker",
            in_flight.clone(),
        );
        let gauges: [(&str, &str); 8] = [
            ("gantry_gpu_memory_used_bytes", "GPU memory in use"),
            ("gantry_gpu_memory_total_bytes", "GPU memory"),
            ("gantry_gpu_memory_free_bytes", "GPU memory free"),
            (
                "gantry_gpu_decoder_utilization_ratio",
                "Video decoder utilization (0-1)",
            ),
            ("gantry_gpu_utilization_ratio", "GPU utilization (0-1)"),
            (
                "gantry_gpu_encoder_utilization_ratio",
                "Video encoder utilization (0-1)",
            ),
            ("gantry_gpu_power_watts", "GPU power draw"),
            ("gantry_gpu_temperature_celsius", "GPU temperature"),
        ];
        let families: Vec<Family<GpuLabels, FGauge>> = gauges.iter().map(|_| Family::default()).collect();
        for ((name, help), f) in gauges.iter().zip(&families) {
            registry.register(*name, *help, f.clone());
        }
        registry.register(
            "gantry_worker",
            "This worker: id, pool, version, GPU source",
            Info::new(vec![
                ("worker".to_owned(), worker_id.to_owned()),
                ("pool".to_owned(), pool.to_owned()),
                ("version".to_owned(), env!("CARGO_PKG_VERSION").to_owned()),
                ("gpu_source".to_owned(), gpu_source.to_owned()),
            ]),
        );
        let mut f = families.into_iter();
        let mut next = || f.next().unwrap_or_default();
        Self {
            registry,
            started,
            succeeded,
            failed,
            retried,
            dead_lettered,
            duration,
            queue_wait,
            claim_latency,
            in_flight,
            gpu_memory_used: next(),
            gpu_memory_total: next(),
            gpu_memory_free: next(),
            gpu_decoder_utilization: next(),
            gpu_utilization: next(),
            gpu_encoder_utilization: next(),
            gpu_power: next(),
            gpu_temperature: next(),
            series: Default::default(),
        }
    }

    fn series(&self, pool: &Pool, kind: JobKind) -> Arc<JobSeries> {
        if let Ok(known) = self.series.read()
            && let Some((_, _, s)) = known.iter().find(|(p, k, _)| *k == kind && p == pool)
        {
            return s.clone();
        }
        let l = job(pool, kind);
        let s = Arc::new(JobSeries {
            started: self.started.get_or_create(&l).clone(),
            succeeded: self.succeeded.get_or_create(&l).clone(),
            duration: self.duration.get_or_create(&l).clone(),
            queue_wait: self.queue_wait.get_or_create(&l).clone(),
        });
        // Another thread may have added it meanwhile: both handles count into the same series.
        if let Ok(mut known) = self.series.write() {
            known.push((pool.clone(), kind, s.clone()));
        }
        s
    }

    /// Sets the per-GPU gauges from an inventory; readings a GPU does not report are left out.
    pub fn observe_gpus(&self, inv: &GpuInventory) {
        for g in &inv.gpus {
            let l = GpuLabels {
                gpu: g.index.to_string(),
                model: g.name.clone(),
            };
            self.gpu_memory_used.get_or_create(&l).set(g.memory_used_bytes as f64);
            self.gpu_memory_total.get_or_create(&l).set(g.memory_total_bytes as f64);
            self.gpu_memory_free.get_or_create(&l).set(g.memory_free_bytes as f64);
            let optional = [
                (&self.gpu_utilization, g.utilization_ratio),
                (&self.gpu_encoder_utilization, g.encoder_utilization_ratio),
                (&self.gpu_decoder_utilization, g.decoder_utilization_ratio),
                (&self.gpu_power, g.power_watts),
                (&self.gpu_temperature, g.temperature_celsius),
            ];
            for (family, value) in optional {
                if let Some(v) = value {
                    family.get_or_create(&l).set(v);
                }
            }
        }
    }

    /// Sets the in-flight gauge.
    pub fn set_in_flight(&self, pool: &str, n: usize) {
        self.in_flight
            .get_or_create(&PoolLabels { pool: pool.to_owned() })
            .set(n as i64);
    }

    /// The registry, for executors' own metrics (before the worker starts serving).
    pub fn registry_mut(&mut self) -> &mut Registry {
        &mut self.registry
    }

    /// The OpenMetrics text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }

    /// The registry as a scraper whose `Accept` is `accept` asks (content type, body).
    pub fn render(&self, accept: Option<&str>) -> (&'static str, Vec<u8>) {
        gantry_queue::exposition::render(&self.registry, accept)
    }
}

fn job(pool: &Pool, kind: JobKind) -> JobLabels {
    JobLabels {
        pool: pool.as_str().to_owned(),
        kind: kind.as_str().to_owned(),
    }
}

impl ConsumerEvents for WorkerMetrics {
    fn claim(&self, pool: &Pool, elapsed: Duration, _jobs: usize) {
        self.claim_latency
            .get_or_create(&PoolLabels {
                pool: pool.as_str().to_owned(),
            })
            .observe(elapsed.as_secs_f64());
    }

    fn started(&self, pool: &Pool, kind: JobKind, waited: Duration) {
        let series = self.series(pool, kind);
        series.started.inc();
        series.queue_wait.observe(waited.as_secs_f64());
    }

    fn finished(&self, pool: &Pool, kind: JobKind, class: Option<ErrorClass>, elapsed: Duration) {
        let series = self.series(pool, kind);
        series.duration.observe(elapsed.as_secs_f64());
        match class {
            None => {
                series.succeeded.inc();
            }
            Some(c) => {
                let l = FailLabels {
                    pool: pool.as_str().to_owned(),
                    kind: kind.as_str().to_owned(),
                    class: c.as_str().to_owned(),
                };
                self.failed.get_or_create(&l).inc();
            }
        }
    }

    fn failure_recorded(&self, pool: &Pool, kind: JobKind, outcome: FailOutcome) {
        match outcome {
            FailOutcome::Retry => {
                self.retried.get_or_create(&job(pool, kind)).inc();
            }
            FailOutcome::Dead => {
                self.dead_lettered.get_or_create(&job(pool, kind)).inc();
            }
            FailOutcome::Cancelled | FailOutcome::Blocked | FailOutcome::Withheld | FailOutcome::Stale => {}
        }
    }
}

/// Shared handle.
pub type SharedMetrics = Arc<WorkerMetrics>;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gpu::GpuMode;

    #[test]
    fn exposes_job_and_gpu_metrics_in_base_units() {
        let m = WorkerMetrics::new("w1", "gpu", "fake");
        let pool = Pool::new("gpu").expect("pool");
        m.started(&pool, JobKind::Upscale, Duration::from_millis(1500));
        m.finished(&pool, JobKind::Upscale, None, Duration::from_millis(30));
        m.finished(
            &pool,
            JobKind::Upscale,
            Some(ErrorClass::Retryable),
            Duration::from_millis(3),
        );
        m.failure_recorded(&pool, JobKind::Upscale, FailOutcome::Retry);
        let GpuMode::Fake(spec) = "fake:1x80GiB+nvenc".parse::<GpuMode>().expect("spec") else {
            panic!()
        };
        m.observe_gpus(&spec.inventory());
        let text = m.encode();
        for needle in [
            r#"gantry_jobs_started_total{pool="gpu",kind="upscale"} 1"#,
            r#"gantry_jobs_succeeded_total{pool="gpu",kind="upscale"} 1"#,
            r#"gantry_jobs_failed_total{pool="gpu",kind="upscale",class="retryable"} 1"#,
            r#"gantry_jobs_retried_total{pool="gpu",kind="upscale"} 1"#,
            r#"gantry_job_duration_seconds_bucket{le="0.05",pool="gpu",kind="upscale"} 2"#,
            r#"gantry_job_queue_wait_seconds_bucket{le="1.0",pool="gpu",kind="upscale"} 0"#,
            r#"gantry_job_queue_wait_seconds_bucket{le="2.5",pool="gpu",kind="upscale"} 1"#,
            // The scheduler's SLO gauge names its bucket the same way (`slo_bucket`).
            r#"gantry_job_queue_wait_seconds_bucket{le="60.0",pool="gpu",kind="upscale"} 1"#,
            r#"gantry_gpu_memory_total_bytes{gpu="0",model="fake 80GiB nvenc"} 85899345920"#,
            r#"gantry_worker_info{worker="w1",pool="gpu""#,
        ] {
            assert!(text.contains(needle), "missing {needle} in\n{text}");
        }
    }
}
