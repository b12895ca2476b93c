//! Trace context across the queue: the span that enqueues a job writes its W3C `traceparent`
//! into the job's spec ([`crate::Accounting::traceparent`]), and the worker's span for the job
//! ([`crate::job_span`]) takes it as its parent, so one trace runs from the API request through
//! admission and enqueue to every step a worker takes. Both are no-ops when no OpenTelemetry
//! layer is installed (the default): then no span has a trace context and nothing is stored.

use gantry_core::trace::TraceParent;
use opentelemetry::Context;
use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState};
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The `traceparent` of `span`, when it belongs to a trace.
pub fn traceparent(span: &tracing::Span) -> Option<String> {
    let cx = span.context();
    let sc = cx.span().span_context().clone();
    if !sc.is_valid() {
        return None;
    }
    let tp = TraceParent {
        trace_id: u128::from_be_bytes(sc.trace_id().to_bytes()),
        span_id: u64::from_be_bytes(sc.span_id().to_bytes()),
        flags: sc.trace_flags().to_u8(),
    };
    Some(tp.to_string())
}

/// Makes the span `traceparent` names the parent of `span` (which must not have been entered
/// yet). Anything but a valid traceparent is ignored.
pub fn set_parent(span: &tracing::Span, traceparent: &str) {
    let Ok(tp) = traceparent.parse::<TraceParent>() else {
        return;
    };
    let sc = SpanContext::new(
        TraceId::from_bytes(tp.trace_id.to_be_bytes()),
        SpanId::from_bytes(tp.span_id.to_be_bytes()),
        TraceFlags::new(tp.flags),
        true,
        TraceState::default(),
    );
    if let Err(e) = span.set_parent(Context::new().with_remote_span_context(sc)) {
        tracing::debug!(error = %e, "trace parent not set");
    }
}
