//! The process's logs and traces. Logs go to stderr (text or JSON, see [`LogFormat`]). Traces
//! go over OTLP/HTTP (protobuf; `/v1/traces` is appended to the base URL) or OTLP/gRPC
//! ([`OtlpProtocol`]) to `--otlp-endpoint` / `OTEL_EXPORTER_OTLP_ENDPOINT` (a collector's base
//! URL) and are off when neither is set. Spans are
//! batched on the SDK's own thread (`OTEL_BSP_SCHEDULE_DELAY`, default 5 s) and flushed when the
//! process ends ([`Telemetry::shutdown`]).
//!
//! What reaches a span is what reaches a log: span fields and event fields (job id, kind,
//! tenant, pool, route, status, a prompt's SHA-256), never a prompt, payload or user id.

use anyhow::Context as _;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig as _;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::Layer as _;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

/// How logs are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines (colours only on a terminal).
    Text,
    /// One JSON object per line: `timestamp`, `level`, `target`, the event's fields, `span`
    /// (the innermost span's fields), `spans` (every enclosing span's) and, when traces are on,
    /// `trace_id` and `span_id` ([`super::json_log`]).
    Json,
}

/// The OTLP transport (the values of `OTEL_EXPORTER_OTLP_PROTOCOL`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum OtlpProtocol {
    /// OTLP/HTTP with protobuf bodies (a collector's port 4318).
    #[default]
    #[value(name = "http/protobuf")]
    HttpProtobuf,
    /// OTLP/gRPC (a collector's port 4317), over the process's Tokio runtime.
    Grpc,
}

impl OtlpProtocol {
    /// The value `OTEL_EXPORTER_OTLP_PROTOCOL` spells it with.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::HttpProtobuf => "http/protobuf",
            Self::Grpc => "grpc",
        }
    }
}

/// Where traces go.
#[derive(Clone, Debug)]
pub struct TraceExport {
    /// The collector's base URL (`http://127.0.0.1:4318`, or `:4317` for gRPC).
    pub endpoint: String,
    /// How.
    pub protocol: OtlpProtocol,
    /// `service.name` of this process's spans.
    pub service: String,
}

/// The installed subscriber's exporters, to flush at exit.
#[derive(Debug)]
pub struct Telemetry {
    traces: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Installs the global subscriber: stderr logs at `verbose`'s level (`RUST_LOG` overrides),
    /// and an OpenTelemetry layer when `traces` says where to send them. Each has its own
    /// filter: quieter logs (`RUST_LOG=warn`) do not thin the traces, which take every span
    /// at `info` and above.
    pub fn init(verbose: u8, format: LogFormat, traces: Option<TraceExport>) -> anyhow::Result<Self> {
        let default = match verbose {
            0 => "info",
            1 => "debug",
            _ => "trace",
        };
        let filter = tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
        let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
        let fmt = match format {
            LogFormat::Text => {
                // Colours only on a terminal: log files and collectors get plain text.
                use std::io::IsTerminal;
                fmt.with_ansi(std::io::stderr().is_terminal())
                    .with_filter(filter)
                    .boxed()
            }
            LogFormat::Json => fmt
                .json()
                .event_format(super::json_log::JsonWithTrace)
                .with_filter(filter)
                .boxed(),
        };
        let provider = traces.map(|t| tracer_provider(&t)).transpose()?;
        let otel = provider.as_ref().map(|p| {
            tracing_opentelemetry::layer()
                .with_tracer(p.tracer("gantry"))
                .with_filter(tracing_subscriber::filter::LevelFilter::INFO)
        });
        // Executor steps' durations, from their spans (gantry_job_step_duration_seconds).
        let steps = gantry_worker::steps::StepTimer.with_filter(tracing_subscriber::filter::LevelFilter::INFO);
        tracing_subscriber::registry()
            .with(fmt)
            .with(steps)
            .with(otel)
            .try_init()
            .context("installing the log subscriber")?;
        Ok(Self { traces: provider })
    }

    /// Sends what spans are still batched, and stops the exporter.
    pub fn shutdown(self) {
        if let Some(p) = self.traces
            && let Err(e) = p.shutdown()
        {
            eprintln!("warning: flushing traces: {e}");
        }
    }
}

fn tracer_provider(t: &TraceExport) -> anyhow::Result<SdkTracerProvider> {
    let base = t.endpoint.trim_end_matches('/');
    let exporter = match t.protocol {
        OtlpProtocol::HttpProtobuf => opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
            .with_endpoint(format!("{base}/v1/traces"))
            .build(),
        // The channel is made here, on the runtime `main` runs in (it must be), and carries
        // the SDK thread's exports on that runtime.
        OtlpProtocol::Grpc => opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(base)
            .build(),
    }
    .with_context(|| format!("the OTLP exporter ({}) for {base}", t.protocol.as_str()))?;
    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name(t.service.clone())
        .with_attribute(opentelemetry::KeyValue::new(
            "service.version",
            env!("CARGO_PKG_VERSION"),
        ))
        .build();
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource)
        .build())
}
