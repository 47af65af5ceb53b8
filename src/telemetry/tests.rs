//! Settings, sampling and propagation, exercised through the public functions.

use std::collections::HashMap;
use std::sync::Mutex;

use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{
    SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState, TracerProvider as _,
};
use opentelemetry::Context;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::layer::SubscriberExt;

use crate::proto::common::v1::TraceContext;

use super::propagation::*;
use super::setup::*;
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
