//! Telemetry: one `init` per process for logs and traces, W3C trace-context propagation, the
//! RPC spans and RED metrics added by the server and client stacks (`rpc`), and the process's
//! Prometheus registry with its `/metrics` listener (`metrics`).
//!
//! Traces go to an OTLP/gRPC collector when `OTEL_EXPORTER_OTLP_ENDPOINT` is set (batch
//! export; `OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`, `OTEL_TRACES_SAMPLER` and
//! `OTEL_TRACES_SAMPLER_ARG` as the OpenTelemetry specification defines them; the default
//! sampler is `parentbased_always_on`). Sampling is decided before a span is made (`entry`):
//! an unsampled call runs in its trace context with no span. Without an endpoint no span is
//! made at all, but trace context still flows (calls, events, log lines).
//! `OTEL_SDK_DISABLED=true` turns OpenTelemetry off altogether.
//!
//! The seams: `settings` (what the environment asks for), `setup` (`init` and the exporter),
//! `sampling` (the decision before a span, `Traced`), `propagation` (W3C headers, event trace
//! context), `rpc`, `db`, `json` and `metrics`.

#[cfg(feature = "db")]
pub mod db;
mod json;
pub mod metrics;
mod propagation;
pub mod rpc;
mod sampling;
mod settings;
mod setup;

pub use propagation::{
    context_from, context_from_headers, context_from_trace_context, event_span, inject_headers,
    inject_into, trace_context,
};
pub use sampling::{carry, current_context, entry, Traced};
pub use settings::{LogFormat, TraceSettings};
pub use setup::{enabled, exporting, flush, init, init_with, Telemetry, DEFAULT_LOG_FILTER};

#[cfg(test)]
pub(crate) mod capture;
#[cfg(test)]
mod tests;
