//! Sampling decided before a span is made (`entry`): a call whose trace is not sampled runs in
//! its trace context with no span; a new trace is rolled once, and its root span gets the very
//! trace id the ratio was rolled on.

use std::cell::Cell;
use std::sync::OnceLock;

use opentelemetry::context::WithContext;
use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{
    SpanContext, SpanId, SpanKind, TraceContextExt, TraceFlags, TraceId, TraceState,
};
use opentelemetry::Context;
use opentelemetry_sdk::trace::{IdGenerator, Sampler, SamplingDecision, ShouldSample};
use tracing_opentelemetry::OpenTelemetrySpanExt;

use super::propagation::*;
use super::setup::*;

thread_local! {
    /// The trace id `entry` rolled the ratio on, for the root span it starts next.
    static PRESET_TRACE: Cell<Option<TraceId>> = const { Cell::new(None) };
}

/// Random ids, except the trace id `entry` has already sampled a new trace on: the root span
/// it starts gets that id, so the SDK's own ratio sampler (a function of the trace id) comes
/// to the same decision, and so does every later span of the trace that is sampled on its id
/// (`traceidratio`, which ignores the parent).
#[derive(Debug, Default)]
pub(crate) struct PresetIds(opentelemetry_sdk::trace::RandomIdGenerator);

impl IdGenerator for PresetIds {
    fn new_trace_id(&self) -> TraceId {
        PRESET_TRACE
            .with(Cell::take)
            .unwrap_or_else(|| self.0.new_trace_id())
    }

    fn new_span_id(&self) -> SpanId {
        self.0.new_span_id()
    }
}

/// Clears `PRESET_TRACE` however the span start it was set for ends.
pub(crate) struct Preset;

impl Preset {
    fn set(id: TraceId) -> Self {
        PRESET_TRACE.with(|p| p.set(Some(id)));
        Preset
    }
}

impl Drop for Preset {
    fn drop(&mut self) {
        PRESET_TRACE.with(|p| p.set(None));
    }
}

/// What `init` installed, read on every call by `entry` (no lock).
pub(crate) struct Active {
    pub(crate) root: Sampler,
    pub(crate) parent_based: bool,
    /// `None` when nothing is exported: then no span is made, only trace context.
    pub(crate) tracer: Option<opentelemetry_sdk::trace::Tracer>,
}

pub(crate) static ACTIVE: OnceLock<Active> = OnceLock::new();

/// How one call is traced: by a span of its own, or, when its trace is not sampled, by the
/// trace context alone (attached while the call runs, so its log lines and the calls and
/// events it makes still carry the trace id and the not-sampled decision downstream).
pub enum Traced {
    Span(tracing::Span),
    Context(Context),
}

impl Traced {
    /// The call's span (`Span::none()` when it has none): fields recorded on it are kept
    /// only when the trace is sampled.
    pub fn span(&self) -> tracing::Span {
        match self {
            Traced::Span(s) => s.clone(),
            Traced::Context(_) => tracing::Span::none(),
        }
    }

    /// Runs `f` inside the call's span or context.
    pub fn in_scope<R>(&self, f: impl FnOnce() -> R) -> R {
        match self {
            Traced::Span(s) => s.in_scope(f),
            Traced::Context(cx) => {
                let _attached = cx.clone().attach();
                f()
            }
        }
    }

    /// `fut` run inside the call's span or context.
    pub fn instrument<F: std::future::Future>(
        self,
        fut: F,
    ) -> futures::future::Either<tracing::instrument::Instrumented<F>, WithContext<F>> {
        use futures::future::Either;
        use opentelemetry::context::FutureExt as _;
        use tracing::Instrument as _;
        match self {
            Traced::Span(s) => Either::Left(fut.instrument(s)),
            Traced::Context(cx) => Either::Right(fut.with_context(cx)),
        }
    }

    /// Writes the call's context into outgoing HTTP headers or gRPC metadata.
    pub fn inject(&self, headers: &mut http::HeaderMap) {
        match self {
            Traced::Span(s) => inject_headers(s, headers),
            Traced::Context(cx) => propagator().inject_context(cx, &mut Headers(headers)),
        }
    }
}

/// Decides how a call is traced before any span is made. `parent` is the context it arrives
/// with (a server: the caller's `traceparent`; a client: `current_context()`), possibly
/// empty. A parent that was not sampled (parent-based sampling) gives `Traced::Context`; a
/// new trace is sampled here at the configured ratio, and only a sampled one gets the span
/// `make` builds. Without an exporter no span is made: the caller's context flows on as it
/// came, and a new trace gets a context of its own (sampled at the ratio, for the services
/// after this one). With OpenTelemetry off, `make`'s span is used as it is (log context only).
pub fn entry(parent: Context, make: impl FnOnce() -> tracing::Span) -> Traced {
    let (valid, sampled) = {
        let sc = parent.span();
        let sc = sc.span_context();
        (sc.is_valid(), sc.is_sampled())
    };
    let Some(active) = ACTIVE.get() else {
        let span = make();
        if valid {
            let _ = span.set_parent(parent);
        }
        return Traced::Span(span);
    };
    let exporting = active.tracer.is_some();
    if valid {
        if !exporting || (active.parent_based && !sampled) {
            return Traced::Context(parent);
        }
        let span = make();
        let _ = span.set_parent(parent);
        return Traced::Span(span);
    }
    let ids = opentelemetry_sdk::trace::RandomIdGenerator::default();
    let trace_id = ids.new_trace_id();
    let decision = active
        .root
        .should_sample(None, trace_id, "", &SpanKind::Internal, &[], &[])
        .decision;
    let sampled = decision == SamplingDecision::RecordAndSample;
    if sampled && exporting {
        let span = make();
        // Start the span now, with the trace id the ratio was rolled on.
        let _preset = Preset::set(trace_id);
        let _ = span.context();
        return Traced::Span(span);
    }
    let flags = if sampled {
        TraceFlags::SAMPLED
    } else {
        TraceFlags::default()
    };
    let sc = SpanContext::new(
        trace_id,
        ids.new_span_id(),
        flags,
        false,
        TraceState::default(),
    );
    Traced::Context(Context::new().with_remote_span_context(sc))
}

/// `fut`, to be spawned, carried in the current span and trace context: its spans, calls and
/// events join the trace of the code that spawns it (and an unsampled trace stays unsampled
/// rather than a new one starting in the task).
pub fn carry<F: std::future::Future>(fut: F) -> WithContext<tracing::instrument::Instrumented<F>> {
    use opentelemetry::context::FutureExt as _;
    use tracing::Instrument as _;
    fut.in_current_span().with_context(Context::current())
}

/// The context calls and events made here belong to: that of the innermost span entered (the
/// OpenTelemetry layer attaches a span's context while it is entered), else the context
/// attached by `Traced::Context`. Read from the thread's attached context alone, which is
/// cheaper than asking the current `tracing` span for it.
pub fn current_context() -> Context {
    Context::current()
}
