//! Sampling is decided once per trace, where the trace starts, before any span is made: at a
//! ratio of 0.5 about half the new traces get a span (and every one of those is sampled,
//! not rolled a second time by the SDK), the rest carry a not-sampled context and no span;
//! a caller's decision is followed either way. Its own process (nextest), as telemetry is
//! global.

use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState};
use opentelemetry::Context;
use ordermesh::telemetry::{self, LogFormat, TraceSettings, Traced};
use tracing_opentelemetry::OpenTelemetrySpanExt;

fn remote(sampled: bool) -> Context {
    let flags = if sampled {
        TraceFlags::SAMPLED
    } else {
        TraceFlags::default()
    };
    Context::new().with_remote_span_context(SpanContext::new(
        TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap(),
        SpanId::from_hex("00f067aa0ba902b7").unwrap(),
        flags,
        true,
        TraceState::default(),
    ))
}

/// Settings exporting to `endpoint` (nothing listens there; nothing is flushed).
fn settings(endpoint: Option<&str>, ratio: f64, parent_based: bool) -> TraceSettings {
    TraceSettings {
        disabled: false,
        endpoint: endpoint.map(str::to_string),
        service_name: "sampling-test".into(),
        ratio,
        parent_based,
    }
}

fn sampled(t: &Traced) -> Option<(String, bool)> {
    let cx = match t {
        Traced::Span(s) => s.context(),
        Traced::Context(cx) => cx.clone(),
    };
    let sc = cx.span().span_context().clone();
    sc.is_valid()
        .then(|| (sc.trace_id().to_string(), sc.is_sampled()))
}

#[tokio::test]
async fn a_new_trace_is_sampled_once_at_the_ratio_and_a_parent_is_followed() {
    // Spans are made only to be exported: an endpoint.
    let settings = settings(Some("http://127.0.0.1:9"), 0.5, true);
    let _telemetry = telemetry::init_with(&settings, LogFormat::Json);
    assert!(telemetry::enabled() && telemetry::exporting());

    const N: usize = 4000;
    let mut spans = 0;
    for _ in 0..N {
        let t = telemetry::entry(Context::new(), || tracing::info_span!("root"));
        let (_, is_sampled) = sampled(&t).expect("every new trace has a valid context");
        match &t {
            Traced::Span(_) => {
                spans += 1;
                assert!(is_sampled, "a span made for a new trace was not sampled");
                // Its children agree.
                let child = t.in_scope(|| {
                    let child = tracing::info_span!("child");
                    child.context().span().span_context().clone()
                });
                assert!(child.is_sampled());
            }
            Traced::Context(_) => assert!(!is_sampled),
        }
    }
    // Binomial(4000, 0.5): sd 32. Sampling twice would give about 1000.
    assert!(
        (1700..=2300).contains(&spans),
        "{spans} of {N} new traces sampled at ratio 0.5"
    );

    let caller = "4bf92f3577b34da6a3ce929d0e0e4736".to_string();
    let t = telemetry::entry(remote(true), || tracing::info_span!("server"));
    assert!(matches!(t, Traced::Span(_)));
    assert_eq!(sampled(&t), Some((caller.clone(), true)));
    let t = telemetry::entry(remote(false), || tracing::info_span!("server"));
    assert!(matches!(t, Traced::Context(_)));
    assert_eq!(sampled(&t), Some((caller.clone(), false)));

    // Inside an unsampled call, an outgoing call carries the same not-sampled context.
    let t = telemetry::entry(remote(false), || tracing::info_span!("server"));
    let inner = t.in_scope(|| {
        telemetry::entry(telemetry::current_context(), || {
            tracing::info_span!("client")
        })
    });
    assert!(matches!(inner, Traced::Context(_)));
    let mut headers = http::HeaderMap::new();
    inner.inject(&mut headers);
    let traceparent = headers["traceparent"].to_str().unwrap();
    assert!(
        traceparent.starts_with(&format!("00-{caller}-")) && traceparent.ends_with("-00"),
        "{traceparent}"
    );
}

/// Without an exporter no span is made at all, but the context flows: a caller's as it came,
/// and a new trace gets one of its own, sampled at the ratio for the services after this one.
#[test]
fn without_an_exporter_no_span_is_made_and_the_context_flows() {
    let settings = settings(None, 1.0, true);
    let _telemetry = telemetry::init_with(&settings, LogFormat::Json);
    assert!(telemetry::enabled() && !telemetry::exporting());
    let caller = "4bf92f3577b34da6a3ce929d0e0e4736".to_string();
    for parent_sampled in [true, false] {
        let t = telemetry::entry(remote(parent_sampled), || tracing::info_span!("server"));
        assert!(matches!(t, Traced::Context(_)));
        assert_eq!(sampled(&t), Some((caller.clone(), parent_sampled)));
        let mut headers = http::HeaderMap::new();
        t.inject(&mut headers);
        assert_eq!(
            headers["traceparent"],
            format!("00-{caller}-00f067aa0ba902b7-0{}", u8::from(parent_sampled))
        );
    }
    let mut traces = std::collections::HashSet::new();
    for _ in 0..100 {
        let t = telemetry::entry(Context::new(), || tracing::info_span!("root"));
        assert!(matches!(t, Traced::Context(_)));
        let (trace, is_sampled) = sampled(&t).expect("a new trace has a context");
        assert!(is_sampled, "ratio 1.0");
        traces.insert(trace);
    }
    assert_eq!(traces.len(), 100, "every new trace has an id of its own");
}

/// With `traceidratio` (no parent-based sampling) every span of a trace is sampled on the
/// trace id alone: the root span `entry` makes carries the very id the ratio was rolled on, so
/// the spans below it (rolled again by the SDK) agree with it.
#[tokio::test]
async fn with_traceidratio_every_span_of_a_sampled_trace_agrees() {
    let settings = settings(Some("http://127.0.0.1:9"), 0.3, false);
    let _telemetry = telemetry::init_with(&settings, LogFormat::Json);
    let mut roots = 0;
    for _ in 0..3000 {
        let t = telemetry::entry(Context::new(), || tracing::info_span!("root"));
        if let Traced::Span(_) = &t {
            roots += 1;
            let (children, root) = t.in_scope(|| {
                let kids: Vec<bool> = (0..3)
                    .map(|_| {
                        tracing::info_span!("child")
                            .context()
                            .span()
                            .span_context()
                            .is_sampled()
                    })
                    .collect();
                (kids, sampled(&t))
            });
            assert_eq!(root.map(|r| r.1), Some(true));
            assert_eq!(children, [true, true, true], "a child was not sampled");
        }
    }
    // Binomial(3000, 0.3): mean 900, sd 25.
    assert!(
        (750..=1050).contains(&roots),
        "{roots} of 3000 sampled at 0.3"
    );
}
