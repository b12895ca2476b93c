//! The JSON log line: one object per event with `timestamp`, `level`, `target`, the event's
//! fields (`message`, …), `span` (the innermost span's fields), `spans` (every enclosing span's,
//! outermost first) and, when traces are on, `trace_id` and `span_id` (W3C hex) of the span it
//! happened in, so a log pipeline joins lines to traces. The shape is tracing-subscriber's own
//! JSON format (flattened event) plus the two ids, which that format does not know.

use std::fmt;

use opentelemetry::trace::TraceContextExt as _;
use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::{JsonFields, Writer};
use tracing_subscriber::fmt::time::{FormatTime as _, SystemTime};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormattedFields};
use tracing_subscriber::registry::LookupSpan;

/// The event formatter (use with [`JsonFields`], as `fmt::layer().json()` sets it).
#[derive(Clone, Copy, Debug, Default)]
pub struct JsonWithTrace;

/// An event's fields as JSON values.
struct Fields<'a>(&'a mut Map<String, Value>);

impl Visit for Fields<'_> {
    fn record_debug(&mut self, f: &Field, value: &dyn fmt::Debug) {
        self.0.insert(f.name().to_owned(), Value::String(format!("{value:?}")));
    }
    fn record_str(&mut self, f: &Field, value: &str) {
        self.0.insert(f.name().to_owned(), Value::String(value.to_owned()));
    }
    fn record_i64(&mut self, f: &Field, value: i64) {
        self.0.insert(f.name().to_owned(), value.into());
    }
    fn record_u64(&mut self, f: &Field, value: u64) {
        self.0.insert(f.name().to_owned(), value.into());
    }
    fn record_bool(&mut self, f: &Field, value: bool) {
        self.0.insert(f.name().to_owned(), value.into());
    }
    fn record_f64(&mut self, f: &Field, value: f64) {
        self.0.insert(f.name().to_owned(), value.into());
    }
}

impl<S> FormatEvent<S, JsonFields> for JsonWithTrace
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, JsonFields>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let mut line = Map::new();
        let mut timestamp = String::new();
        SystemTime.format_time(&mut Writer::new(&mut timestamp))?;
        line.insert("timestamp".into(), timestamp.into());
        let meta = event.metadata();
        line.insert("level".into(), meta.level().as_str().into());
        event.record(&mut Fields(&mut line));
        line.insert("target".into(), meta.target().into());
        // Each span's fields, as the JSON field formatter stored them when the span was made.
        let span_fields = |span: &tracing_subscriber::registry::SpanRef<'_, S>| {
            let mut fields = span
                .extensions()
                .get::<FormattedFields<JsonFields>>()
                .and_then(|f| serde_json::from_str::<Map<String, Value>>(f).ok())
                .unwrap_or_default();
            fields.insert("name".into(), span.name().into());
            Value::Object(fields)
        };
        if let Some(scope) = ctx.event_scope() {
            let spans: Vec<Value> = scope.from_root().map(|s| span_fields(&s)).collect();
            if let Some(current) = spans.last() {
                line.insert("span".into(), current.clone());
            }
            line.insert("spans".into(), Value::Array(spans));
        }
        if let Some(span) = ctx.lookup_current() {
            let ids = tracing::dispatcher::get_default(|d| tracing_opentelemetry::get_otel_context(&span.id(), d));
            if let Some(cx) = ids {
                let sc = cx.span().span_context().clone();
                if sc.is_valid() {
                    line.insert("trace_id".into(), sc.trace_id().to_string().into());
                    line.insert("span_id".into(), sc.span_id().to_string().into());
                }
            }
        }
        let text = serde_json::to_string(&Value::Object(line)).map_err(|_| fmt::Error)?;
        writeln!(writer, "{text}")
    }
}
