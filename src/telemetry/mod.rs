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

#[cfg(feature = "db")]
pub mod db;
mod json;
pub mod metrics;
pub mod rpc;

use std::cell::Cell;
use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use opentelemetry::context::WithContext;
use opentelemetry::propagation::{
    Extractor, Injector, TextMapCompositePropagator, TextMapPropagator,
};
use opentelemetry::trace::{
    SpanContext, SpanId, SpanKind, TraceContextExt, TraceFlags, TraceId, TraceState,
    TracerProvider as _,
};
use opentelemetry::Context;
use opentelemetry_sdk::propagation::{BaggagePropagator, TraceContextPropagator};
use opentelemetry_sdk::trace::{
    IdGenerator, Sampler, SamplingDecision, SdkTracerProvider, ShouldSample,
};
use opentelemetry_sdk::Resource;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::proto::common::v1::TraceContext;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Json,
    Pretty,
}

/// How traces are sampled and where they go, read from the `OTEL_*` variables.
#[derive(Clone, Debug, PartialEq)]
pub struct TraceSettings {
    /// `OTEL_SDK_DISABLED=true`: no OpenTelemetry layer at all.
    pub disabled: bool,
    /// OTLP/gRPC endpoint (`OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` or `OTEL_EXPORTER_OTLP_ENDPOINT`);
    /// `None` exports nothing. `OTEL_TRACES_EXPORTER=none` clears it.
    pub endpoint: Option<String>,
    /// `OTEL_SERVICE_NAME`, else the process's own name.
    pub service_name: String,
    /// Share of new traces sampled, 0..=1; a call that arrives with a sampled (or unsampled)
    /// parent follows its parent unless `parent_based` is false.
    pub ratio: f64,
    pub parent_based: bool,
}

impl TraceSettings {
    /// From the environment; `service` names the process when `OTEL_SERVICE_NAME` does not.
    pub fn from_env(service: &str) -> Result<Self, String> {
        Self::from_lookup(service, |k| {
            std::env::var(k).ok().filter(|v| !v.trim().is_empty())
        })
    }

    /// `from_env` over any lookup (tests pass a map).
    pub fn from_lookup(
        service: &str,
        get: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, String> {
        let disabled =
            get("OTEL_SDK_DISABLED").is_some_and(|v| v.trim().eq_ignore_ascii_case("true"));
        let exporter = get("OTEL_TRACES_EXPORTER").unwrap_or_else(|| "otlp".into());
        let endpoint = match exporter.trim() {
            "otlp" => get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
                .or_else(|| get("OTEL_EXPORTER_OTLP_ENDPOINT")),
            "none" => None,
            other => {
                return Err(format!(
                    "OTEL_TRACES_EXPORTER: '{other}' is not otlp or none"
                ))
            }
        };
        let arg = |default: f64| -> Result<f64, String> {
            match get("OTEL_TRACES_SAMPLER_ARG") {
                None => Ok(default),
                Some(v) => v
                    .trim()
                    .parse::<f64>()
                    .ok()
                    .filter(|r| (0.0..=1.0).contains(r))
                    .ok_or_else(|| {
                        format!("OTEL_TRACES_SAMPLER_ARG: '{v}' is not a number from 0 to 1")
                    }),
            }
        };
        let sampler = get("OTEL_TRACES_SAMPLER").unwrap_or_else(|| "parentbased_always_on".into());
        let (ratio, parent_based) = match sampler.trim() {
            "always_on" => (1.0, false),
            "always_off" => (0.0, false),
            "traceidratio" => (arg(1.0)?, false),
            "parentbased_always_on" => (1.0, true),
            "parentbased_always_off" => (0.0, true),
            "parentbased_traceidratio" => (arg(1.0)?, true),
            other => {
                return Err(format!(
                    "OTEL_TRACES_SAMPLER: '{other}' is not always_on, always_off, traceidratio or their parentbased_ forms"
                ))
            }
        };
        Ok(Self {
            disabled,
            endpoint,
            service_name: get("OTEL_SERVICE_NAME").unwrap_or_else(|| service.to_string()),
            ratio,
            parent_based,
        })
    }

    /// The sampler of new traces (no parent), by ratio.
    fn root_sampler(&self) -> Sampler {
        if self.ratio >= 1.0 {
            Sampler::AlwaysOn
        } else if self.ratio <= 0.0 {
            Sampler::AlwaysOff
        } else {
            Sampler::TraceIdRatioBased(self.ratio)
        }
    }

    fn sampler(&self) -> Sampler {
        let root = self.root_sampler();
        if self.parent_based {
            Sampler::ParentBased(Box::new(root))
        } else {
            root
        }
    }
}

thread_local! {
    /// The trace id `entry` rolled the ratio on, for the root span it starts next.
    static PRESET_TRACE: Cell<Option<TraceId>> = const { Cell::new(None) };
}

/// Random ids, except the trace id `entry` has already sampled a new trace on: the root span
/// it starts gets that id, so the SDK's own ratio sampler (a function of the trace id) comes
/// to the same decision, and so does every later span of the trace that is sampled on its id
/// (`traceidratio`, which ignores the parent).
#[derive(Debug, Default)]
struct PresetIds(opentelemetry_sdk::trace::RandomIdGenerator);

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
struct Preset;

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
struct Active {
    root: Sampler,
    parent_based: bool,
    /// `None` when nothing is exported: then no span is made, only trace context.
    tracer: Option<opentelemetry_sdk::trace::Tracer>,
}

static ACTIVE: OnceLock<Active> = OnceLock::new();

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

/// The process's tracer provider, kept so `shutdown` can flush it.
static PROVIDER: Mutex<Option<SdkTracerProvider>> = Mutex::new(None);

/// What `init` set up; `shutdown` flushes the spans still buffered.
#[must_use = "call shutdown() before the process exits, or buffered spans are lost"]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Whether this `init` set up an exporter (false when an earlier `init` in the process
    /// already installed telemetry, or when no endpoint is set).
    pub fn exports(&self) -> bool {
        self.provider.is_some()
    }

    /// Exports what is buffered and stops the exporter (bounded: 5s).
    pub async fn shutdown(self) {
        if let Some(p) = self.provider {
            let done = tokio::task::spawn_blocking(move || {
                p.shutdown_with_timeout(Duration::from_secs(5))
            });
            match done.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => eprintln!("telemetry: flushing spans on shutdown failed: {e}"),
                Err(e) => eprintln!("telemetry: flushing spans on shutdown failed: {e}"),
            }
        }
    }
}

/// Exports the spans buffered so far without stopping (tests, and before a planned exit).
pub async fn flush() {
    let provider = PROVIDER.lock().ok().and_then(|p| p.clone());
    if let Some(p) = provider {
        let _ = tokio::task::spawn_blocking(move || p.force_flush()).await;
    }
}

/// Installs the global subscriber: logs (filter from `RUST_LOG`, default `info`; JSON lines
/// carry `trace_id` and `span_id`) and, unless `OTEL_SDK_DISABLED`, OpenTelemetry spans from
/// the `OTEL_*` settings. Calling it twice is harmless (the second call does nothing and
/// returns a `Telemetry` with nothing to flush), which tests rely on. A bad `OTEL_*` value is
/// reported on stderr and tracing stays off rather than stopping the process.
/// Must be called inside a Tokio runtime when an endpoint is set (the exporter's channel).
pub fn init(service: &str, format: LogFormat) -> Telemetry {
    let settings = TraceSettings::from_env(service).unwrap_or_else(|e| {
        eprintln!("telemetry: {e}; OpenTelemetry is off");
        TraceSettings {
            disabled: true,
            endpoint: None,
            service_name: service.to_string(),
            ratio: 1.0,
            parent_based: true,
        }
    });
    init_with(&settings, format)
}

/// `init` with explicit settings.
pub fn init_with(settings: &TraceSettings, format: LogFormat) -> Telemetry {
    if tracing::dispatcher::has_been_set() {
        return Telemetry { provider: None };
    }
    // RUST_LOG filters the log lines only: spans at INFO and above are traced whatever it says.
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // Spans are made only to be exported: without an exporter the trace context still flows
    // (calls, events, log lines), with no span made anywhere.
    let provider = if settings.disabled {
        None
    } else {
        provider(settings)
    };
    let otel = provider.as_ref().map(|p| {
        tracing_opentelemetry::layer()
            .with_tracer(p.tracer("ordermesh"))
            .with_tracked_inactivity(false)
            // Code locations and thread names on every span cost more than they tell here.
            .with_location(false)
            .with_threads(false)
            .with_filter(tracing_subscriber::filter::LevelFilter::INFO)
    });
    let fmt = match format {
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .event_format(json::JsonWithTrace)
            .boxed(),
        LogFormat::Pretty => tracing_subscriber::fmt::layer().compact().boxed(),
    }
    .with_filter(filter);
    let installed = tracing_subscriber::registry()
        .with(otel)
        .with(fmt)
        .try_init()
        .is_ok();
    if !installed {
        return Telemetry { provider: None };
    }
    if !settings.disabled {
        opentelemetry::global::set_text_map_propagator(TextMapCompositePropagator::new(vec![
            Box::new(TraceContextPropagator::new()),
            Box::new(BaggagePropagator::new()),
        ]));
        if let Some(p) = &provider {
            opentelemetry::global::set_tracer_provider(p.clone());
            if let Ok(mut g) = PROVIDER.lock() {
                *g = Some(p.clone());
            }
        }
        let _ = ACTIVE.set(Active {
            root: settings.root_sampler(),
            parent_based: settings.parent_based,
            tracer: provider.as_ref().map(|p| p.tracer("ordermesh")),
        });
    }
    Telemetry { provider }
}

/// The tracer provider exporting to the configured endpoint; `None` when there is none (or
/// its exporter cannot be made, which is reported).
fn provider(settings: &TraceSettings) -> Option<SdkTracerProvider> {
    let endpoint = settings.endpoint.as_ref()?;
    #[cfg(not(feature = "otlp"))]
    {
        eprintln!(
            "telemetry: built without the otlp feature; spans are not exported to {endpoint}"
        );
        None
    }
    #[cfg(feature = "otlp")]
    {
        use opentelemetry_otlp::WithExportConfig;
        let exporter = match opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(endpoint.clone())
            .build()
        {
            Ok(exporter) => exporter,
            Err(e) => {
                eprintln!("telemetry: OTLP exporter to {endpoint}: {e}; spans are not exported");
                return None;
            }
        };
        // Resource::builder() also reads OTEL_RESOURCE_ATTRIBUTES and OTEL_SERVICE_NAME.
        let resource = Resource::builder()
            .with_service_name(settings.service_name.clone())
            .build();
        Some(
            SdkTracerProvider::builder()
                .with_sampler(settings.sampler())
                .with_id_generator(PresetIds::default())
                .with_resource(resource)
                .with_batch_exporter(exporter)
                .build(),
        )
    }
}

/// W3C trace context and baggage, made once.
fn propagator() -> &'static TextMapCompositePropagator {
    static PROPAGATOR: std::sync::LazyLock<TextMapCompositePropagator> =
        std::sync::LazyLock::new(|| {
            TextMapCompositePropagator::new(vec![
                Box::new(TraceContextPropagator::new()),
                Box::new(BaggagePropagator::new()),
            ])
        });
    &PROPAGATOR
}

/// The tracer spans made outside `tracing` use (database calls), when OpenTelemetry is on.
fn tracer() -> Option<&'static opentelemetry_sdk::trace::Tracer> {
    ACTIVE.get().and_then(|a| a.tracer.as_ref())
}

/// Whether this process takes part in traces: it propagates W3C context (and exports spans
/// when an endpoint is set). False with `OTEL_SDK_DISABLED=true`.
pub fn enabled() -> bool {
    ACTIVE.get().is_some()
}

/// Whether this process exports spans (an OTLP endpoint is set).
pub fn exporting() -> bool {
    tracer().is_some()
}

struct Headers<'a>(&'a mut http::HeaderMap);

const TRACEPARENT: http::HeaderName = http::HeaderName::from_static("traceparent");
const TRACESTATE: http::HeaderName = http::HeaderName::from_static("tracestate");
const BAGGAGE: http::HeaderName = http::HeaderName::from_static("baggage");

/// The propagators' header names, made once (they are written and read on every call).
fn header_name(key: &str) -> Option<http::HeaderName> {
    match key {
        "traceparent" => Some(TRACEPARENT),
        "tracestate" => Some(TRACESTATE),
        "baggage" => Some(BAGGAGE),
        other => http::HeaderName::from_bytes(other.as_bytes()).ok(),
    }
}

impl Injector for Headers<'_> {
    fn set(&mut self, key: &str, value: String) {
        let Some(k) = header_name(key) else {
            return;
        };
        // An empty value (`tracestate`, usually) is not sent, and none forwarded from a caller
        // whose trace this one does not continue goes on with it.
        if value.is_empty() {
            self.0.remove(k);
        } else if let Ok(v) = http::HeaderValue::try_from(value) {
            self.0.insert(k, v);
        }
    }
}

struct ReadHeaders<'a>(&'a http::HeaderMap);

impl Extractor for ReadHeaders<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        let value = match key {
            "traceparent" => self.0.get(TRACEPARENT),
            "tracestate" => self.0.get(TRACESTATE),
            "baggage" => self.0.get(BAGGAGE),
            other => self.0.get(other),
        };
        value.and_then(|v| v.to_str().ok())
    }
    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

/// The W3C context (`traceparent`, `tracestate`, `baggage`) carried by HTTP headers or gRPC
/// metadata; an empty context when there is none.
pub fn context_from_headers(headers: &http::HeaderMap) -> Context {
    propagator().extract(&ReadHeaders(headers))
}

/// Writes `span`'s context into HTTP headers or gRPC metadata (replacing what was there).
/// Writes nothing when OpenTelemetry is off.
pub fn inject_headers(span: &tracing::Span, headers: &mut http::HeaderMap) {
    let cx = span.context();
    if cx.span().span_context().is_valid() {
        propagator().inject_context(&cx, &mut Headers(headers));
    }
}

/// Writes the current span's context into a string map (an event's headers, a broker
/// message's properties). Call it where the event is made, inside the request that makes it.
pub fn inject_into(carrier: &mut HashMap<String, String>) {
    let cx = current_context();
    if cx.span().span_context().is_valid() {
        propagator().inject_context(&cx, carrier);
    }
}

/// The context a string map carries (see `inject_into`).
pub fn context_from(carrier: &HashMap<String, String>) -> Context {
    propagator().extract(carrier)
}

/// The current span's context as the event envelope's `TraceContext` (empty fields when
/// OpenTelemetry is off). The outbox stores it with the event it writes.
pub fn trace_context() -> TraceContext {
    let mut map = HashMap::new();
    inject_into(&mut map);
    TraceContext {
        traceparent: map.remove("traceparent").unwrap_or_default(),
        tracestate: map.remove("tracestate").unwrap_or_default(),
        baggage: map.remove("baggage").unwrap_or_default(),
    }
}

/// The context an event envelope's `TraceContext` carries.
pub fn context_from_trace_context(tc: &TraceContext) -> Context {
    let mut map = HashMap::new();
    for (k, v) in [
        ("traceparent", &tc.traceparent),
        ("tracestate", &tc.tracestate),
        ("baggage", &tc.baggage),
    ] {
        if !v.is_empty() {
            map.insert(k.to_string(), v.clone());
        }
    }
    context_from(&map)
}

/// How one delivered event is handled: in a consumer span made a *child* of the producer's
/// span (the one current when the event was written), so the consumer's work sits inside the
/// producer's trace; or, when that trace is not sampled (or nothing is exported), in its
/// context alone. Events are delivered after the producer's request has ended, so its span is
/// usually closed by then; a child is still correct (and is what the OTel messaging
/// conventions call the "process" span). Run the handler with `Traced::instrument`.
pub fn event_span(
    tc: Option<&TraceContext>,
    event_type: &str,
    producer: &str,
    consumer: &str,
) -> Traced {
    let parent = tc.map(context_from_trace_context).unwrap_or_default();
    entry(parent, || {
        tracing::info_span!(
            "event.process",
            otel.name = format!("process {event_type}"),
            otel.kind = "consumer",
            messaging.system = "ordermesh",
            messaging.operation.type = "process",
            messaging.destination.name = producer,
            messaging.consumer.group.name = consumer,
            messaging.message.type = event_type,
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lookup(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn settings_follow_the_otel_variables() {
        let s = TraceSettings::from_lookup("order", lookup(&[])).unwrap();
        assert_eq!(
            s,
            TraceSettings {
                disabled: false,
                endpoint: None,
                service_name: "order".into(),
                ratio: 1.0,
                parent_based: true
            }
        );
        let s = TraceSettings::from_lookup(
            "order",
            lookup(&[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4317"),
                ("OTEL_SERVICE_NAME", "order-eu"),
                ("OTEL_TRACES_SAMPLER", "parentbased_traceidratio"),
                ("OTEL_TRACES_SAMPLER_ARG", "0.01"),
            ]),
        )
        .unwrap();
        assert_eq!(s.endpoint.as_deref(), Some("http://collector:4317"));
        assert_eq!(s.service_name, "order-eu");
        assert_eq!((s.ratio, s.parent_based), (0.01, true));
        let s = TraceSettings::from_lookup(
            "x",
            lookup(&[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4317"),
                ("OTEL_TRACES_EXPORTER", "none"),
            ]),
        )
        .unwrap();
        assert_eq!(s.endpoint, None);
        assert!(
            TraceSettings::from_lookup("x", lookup(&[("OTEL_SDK_DISABLED", "true")]))
                .unwrap()
                .disabled
        );
        for (k, v) in [
            ("OTEL_TRACES_SAMPLER", "sometimes"),
            ("OTEL_TRACES_EXPORTER", "jaeger"),
        ] {
            let e = TraceSettings::from_lookup("x", lookup(&[(k, v)])).unwrap_err();
            assert!(e.starts_with(k), "{e}");
        }
        let e = TraceSettings::from_lookup(
            "x",
            lookup(&[
                ("OTEL_TRACES_SAMPLER", "traceidratio"),
                ("OTEL_TRACES_SAMPLER_ARG", "2"),
            ]),
        )
        .unwrap_err();
        assert!(e.starts_with("OTEL_TRACES_SAMPLER_ARG"), "{e}");
    }

    /// Keeps what it is given (the SDK's in-memory exporter needs its `testing` feature).
    #[derive(Clone, Debug, Default)]
    struct Collect(std::sync::Arc<Mutex<Vec<opentelemetry_sdk::trace::SpanData>>>);

    impl opentelemetry_sdk::trace::SpanExporter for Collect {
        async fn export(
            &self,
            batch: Vec<opentelemetry_sdk::trace::SpanData>,
        ) -> opentelemetry_sdk::error::OTelSdkResult {
            self.0.lock().unwrap().extend(batch);
            Ok(())
        }
    }

    #[test]
    fn an_event_consumer_span_is_a_child_of_the_span_that_wrote_the_event() {
        let spans = Collect::default();
        let provider = SdkTracerProvider::builder()
            .with_simple_exporter(spans.clone())
            .build();
        let subscriber = tracing_subscriber::registry()
            .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
        tracing::subscriber::with_default(subscriber, || {
            // The producer writes the event inside its request's span...
            let producer = tracing::info_span!("PlaceOrder");
            let envelope_context = producer.in_scope(trace_context);
            drop(producer);
            assert!(envelope_context.traceparent.starts_with("00-"));
            // ... and the consumer, later, handles it inside the event's span.
            let consumer = event_span(Some(&envelope_context), "OrderPlaced", "order", "shipping");
            consumer.in_scope(|| tracing::info!("handled"));
            drop(consumer);
            // An envelope without context starts a trace of its own.
            drop(event_span(None, "OrderPlaced", "order", "shipping"));
        });
        let _ = provider.force_flush();
        let spans = spans.0.lock().unwrap();
        let producer = spans.iter().find(|s| s.name == "PlaceOrder").unwrap();
        let consumers: Vec<_> = spans
            .iter()
            .filter(|s| s.name == "process OrderPlaced")
            .collect();
        assert_eq!(consumers.len(), 2);
        let (linked, alone) = if consumers[0].parent_span_id == producer.span_context.span_id() {
            (consumers[0], consumers[1])
        } else {
            (consumers[1], consumers[0])
        };
        assert_eq!(
            linked.span_context.trace_id(),
            producer.span_context.trace_id()
        );
        assert_eq!(linked.parent_span_id, producer.span_context.span_id());
        assert_eq!(linked.span_kind, opentelemetry::trace::SpanKind::Consumer);
        assert_ne!(
            alone.span_context.trace_id(),
            producer.span_context.trace_id()
        );
    }

    #[test]
    fn a_forwarded_tracestate_does_not_outlive_its_trace() {
        // Headers forwarded from a caller, then the context of a trace this process started.
        let mut headers = http::HeaderMap::new();
        headers.insert("tracestate", http::HeaderValue::from_static("vendor=old"));
        let cx = Context::new().with_remote_span_context(SpanContext::new(
            TraceId::from_hex("0af7651916cd43dd8448eb211c80319c").unwrap(),
            SpanId::from_hex("b7ad6b7169203331").unwrap(),
            TraceFlags::SAMPLED,
            false,
            TraceState::default(),
        ));
        propagator().inject_context(&cx, &mut Headers(&mut headers));
        assert_eq!(
            headers["traceparent"],
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
        );
        assert!(headers.get("tracestate").is_none(), "{headers:?}");
    }

    #[test]
    fn an_envelope_context_round_trips() {
        let tc = TraceContext {
            traceparent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into(),
            tracestate: "vendor=x".into(),
            baggage: String::new(),
        };
        let cx = context_from_trace_context(&tc);
        let sc = cx.span().span_context().clone();
        assert!(sc.is_valid() && sc.is_remote() && sc.is_sampled());
        assert_eq!(
            sc.trace_id().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        let mut out = HashMap::new();
        propagator().inject_context(&cx, &mut out);
        assert_eq!(out["traceparent"], tc.traceparent);
        assert_eq!(out["tracestate"], "vendor=x");
    }
}
