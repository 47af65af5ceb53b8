//! W3C trace context (and baggage) across HTTP/gRPC headers and event envelopes.

use std::collections::HashMap;

use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::TraceContextExt;
use opentelemetry::Context;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::proto::common::v1::TraceContext;

use super::sampling::*;
use super::setup::*;

pub(crate) struct Headers<'a>(pub(crate) &'a mut http::HeaderMap);

pub(crate) const TRACEPARENT: http::HeaderName = http::HeaderName::from_static("traceparent");
pub(crate) const TRACESTATE: http::HeaderName = http::HeaderName::from_static("tracestate");
pub(crate) const BAGGAGE: http::HeaderName = http::HeaderName::from_static("baggage");

/// The propagators' header names, made once (they are written and read on every call).
pub(crate) fn header_name(key: &str) -> Option<http::HeaderName> {
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

pub(crate) struct ReadHeaders<'a>(&'a http::HeaderMap);

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
