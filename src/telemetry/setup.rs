//! `init`: one subscriber per process (logs, and spans when exported), the tracer provider
//! and its exporter, and `Telemetry::shutdown` that flushes what is buffered.

use std::sync::Mutex;
use std::time::Duration;

use opentelemetry::propagation::TextMapCompositePropagator;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::propagation::{BaggagePropagator, TraceContextPropagator};
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::Resource;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use super::*;

use super::sampling::*;

/// The process's tracer provider, kept so `shutdown` can flush it.
pub(crate) static PROVIDER: Mutex<Option<SdkTracerProvider>> = Mutex::new(None);

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

/// The log filter when `RUST_LOG` is unset: INFO, except hickory's DNS server, which logs every
/// answered query at INFO (the mesh zone answers each process's re-resolution every few
/// seconds: most of an idle `make run` log). The zone logs each query at DEBUG itself.
pub const DEFAULT_LOG_FILTER: &str = "info,hickory_server::server=warn";

/// Installs the global subscriber: logs (filter from `RUST_LOG`, default [`DEFAULT_LOG_FILTER`]; JSON lines
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
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_LOG_FILTER));
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
pub(crate) fn provider(settings: &TraceSettings) -> Option<SdkTracerProvider> {
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
pub(crate) fn propagator() -> &'static TextMapCompositePropagator {
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
pub(crate) fn tracer() -> Option<&'static opentelemetry_sdk::trace::Tracer> {
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
