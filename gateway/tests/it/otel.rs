//! One trace from the edge through every service: a real OTLP/gRPC receiver (a tonic server on
//! the OTLP `TraceService` definition) collects what the process exports over OTLP while an
//! order placed over REST, with a caller's `traceparent`, runs through the gateway, the order
//! service, its saga, and inventory, payment and shipping. Every "process" here shares the
//! one tracer provider, so all their spans reach the one exporter; the links between them
//! are checked by span ids.

use crate::helpers;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use opentelemetry_proto::tonic::trace::v1::Span;
use ordermesh::telemetry::LogFormat;

/// Spans received, with the `service.name` of the resource that sent them.
#[derive(Clone, Default)]
struct Receiver {
    spans: Arc<Mutex<Vec<(String, Span)>>>,
}

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut spans = self.spans.lock().unwrap();
        for rs in request.into_inner().resource_spans {
            let service = rs
                .resource
                .as_ref()
                .and_then(|r| r.attributes.iter().find(|a| a.key == "service.name"))
                .and_then(|a| value(a.value.as_ref()?.value.as_ref()?))
                .unwrap_or_default();
            for ss in rs.scope_spans {
                for s in ss.spans {
                    spans.push((service.clone(), s));
                }
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

impl Receiver {
    /// The spans received so far of one trace.
    fn in_trace(&self, trace: &str) -> Vec<Span> {
        self.spans
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, s)| hex(&s.trace_id) == trace)
            .map(|(_, s)| s.clone())
            .collect()
    }

    /// Waits (flushing) for the completed saga span of `trace`: the saga's span ends once the
    /// saga does, a moment after the order reads CONFIRMED.
    async fn saga_completed(&self, trace: &str) -> bool {
        ordermesh::testing::eventually(Duration::from_secs(15), || async {
            ordermesh::telemetry::flush().await;
            self.in_trace(trace)
                .iter()
                .any(|s| attr(s, "saga.outcome").as_deref() == Some("completed"))
        })
        .await
    }
}

/// A receiver, and this process's telemetry exporting to it (flushed every 100ms).
// telemetry::init reads the OTEL_* variables as a deployment sets them; nextest gives each
// test a process of its own, so nothing else reads this environment.
#[allow(clippy::disallowed_methods)]
async fn exporting_to_a_receiver() -> (Receiver, ordermesh::telemetry::Telemetry) {
    let (received, addr) = receiver().await;
    std::env::set_var("OTEL_EXPORTER_OTLP_ENDPOINT", format!("http://{addr}"));
    std::env::set_var("OTEL_SERVICE_NAME", "ordermesh-test");
    std::env::set_var("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=test");
    std::env::set_var("OTEL_BSP_SCHEDULE_DELAY", "100");
    let telemetry = ordermesh::telemetry::init("test", LogFormat::Json);
    assert!(
        telemetry.exports(),
        "telemetry was set up before in this process: run each test in a process of its own (cargo nextest)"
    );
    (received, telemetry)
}

async fn receiver() -> (Receiver, SocketAddr) {
    let r = Receiver::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let svc = TraceServiceServer::new(r.clone());
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(svc)
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
            .await
            .unwrap();
    });
    (r, addr)
}

fn value(v: &AnyValue) -> Option<String> {
    Some(match v {
        AnyValue::StringValue(s) => s.clone(),
        AnyValue::IntValue(i) => i.to_string(),
        AnyValue::BoolValue(b) => b.to_string(),
        AnyValue::DoubleValue(d) => d.to_string(),
        _ => return None,
    })
}

fn attr(s: &Span, key: &str) -> Option<String> {
    s.attributes
        .iter()
        .find(|a| a.key == key)
        .and_then(|a| value(a.value.as_ref()?.value.as_ref()?))
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER: &str = "00f067aa0ba902b7";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_trace_covers_the_gateway_the_saga_and_every_participant() {
    let (received, telemetry) = exporting_to_a_receiver().await;

    let m = helpers::mesh::mesh().await;
    m.create_item("TEA-1").await;
    let traceparent = format!("00-{TRACE}-{CALLER}-01");
    let id = m
        .place(
            "TEA-1",
            "otel/1",
            &[
                ("traceparent", traceparent.as_str()),
                ("baggage", "tenant=acme"),
            ],
        )
        .await;
    assert!(m.confirmed(&id).await, "the saga did not confirm {id}");

    let done = received.saga_completed(TRACE).await;
    assert!(done, "no completed saga span arrived");
    // The same caller then records the warehouse's first scan of the shipment (same trace).
    // Shipping records ShipmentStatusChanged in that call's transaction; the order service
    // consumes shipping's events, and its span joins this trace as a child of that call's span.
    let shipments: serde_json::Value = helpers::client()
        .get(m.gateway.url(&format!("/v1/shipments?orderId={id}")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let shipment_id = shipments["shipments"][0]["shipmentId"]
        .as_str()
        .expect("a shipment")
        .to_string();
    let scan = helpers::client()
        .post(
            m.gateway
                .url(&format!("/v1/shipments/{shipment_id}/events")),
        )
        .header("traceparent", traceparent.as_str())
        .json(&serde_json::json!({"status": "SHIPMENT_STATUS_LABEL_CREATED", "location": "Berlin"}))
        .send()
        .await
        .unwrap();
    assert_eq!(scan.status(), 200, "{:?}", scan.text().await);
    let consumed = ordermesh::testing::eventually(Duration::from_secs(15), || async {
        ordermesh::telemetry::flush().await;
        received
            .in_trace(TRACE)
            .iter()
            .any(|s| s.name == "process ShipmentStatusChanged")
    })
    .await;
    assert!(
        consumed,
        "no consumer span of ShipmentStatusChanged arrived in the trace"
    );
    telemetry.shutdown().await;
    let spans = received.in_trace(TRACE);
    let by_id: HashMap<String, &Span> = spans.iter().map(|s| (hex(&s.span_id), s)).collect();
    let services: Vec<String> = received
        .spans
        .lock()
        .unwrap()
        .iter()
        .map(|(svc, _)| svc.clone())
        .collect();
    assert!(
        services.iter().all(|s| s == "ordermesh-test"),
        "{services:?}"
    );

    // Every span of the trace hangs off the caller's span or another span of the trace.
    for s in &spans {
        let parent = hex(&s.parent_span_id);
        assert!(
            parent == CALLER || by_id.contains_key(&parent),
            "span {} has a parent {parent} outside the trace",
            s.name
        );
    }
    let one = |what: &str, f: &dyn Fn(&Span) -> bool| -> &Span {
        let found: Vec<&Span> = spans.iter().filter(|s| f(s)).collect();
        assert_eq!(
            found.len(),
            1,
            "{what}: {:?}",
            found.iter().map(|s| &s.name).collect::<Vec<_>>()
        );
        found[0]
    };
    let parent_of = |s: &Span| by_id.get(&hex(&s.parent_span_id)).copied();

    // The gateway's HTTP span continues the caller's trace.
    let http = one("gateway HTTP span", &|s| {
        s.kind == SpanKind::Server as i32 && attr(s, "http.route").as_deref() == Some("/v1/orders")
    });
    assert_eq!(hex(&http.parent_span_id), CALLER);
    assert_eq!(http.name, "POST /v1/orders");
    assert_eq!(attr(http, "http.request.method").as_deref(), Some("POST"));
    assert_eq!(
        attr(http, "http.response.status_code").as_deref(),
        Some("200")
    );

    let rpc = |kind: SpanKind, service: &str, method: &str| -> Vec<&Span> {
        spans
            .iter()
            .filter(|s| {
                s.kind == kind as i32
                    && attr(s, "rpc.system").as_deref() == Some("grpc")
                    && attr(s, "rpc.service").as_deref() == Some(service)
                    && attr(s, "rpc.method").as_deref() == Some(method)
            })
            .collect()
    };
    // gateway -> order: a client span under the HTTP span, the order's server span under it.
    let place_client = rpc(
        SpanKind::Client,
        "ordermesh.order.v1.OrderService",
        "PlaceOrder",
    );
    assert_eq!(place_client.len(), 1);
    assert_eq!(place_client[0].parent_span_id, http.span_id);
    let place_server = rpc(
        SpanKind::Server,
        "ordermesh.order.v1.OrderService",
        "PlaceOrder",
    );
    assert_eq!(place_server.len(), 1);
    assert_eq!(place_server[0].parent_span_id, place_client[0].span_id);
    assert_eq!(
        attr(place_server[0], "rpc.grpc.status_code").as_deref(),
        Some("0")
    );

    // The saga, a child of the PlaceOrder call, with one span per step attempt.
    let saga = one("saga span", &|s| s.name == "saga place_order");
    assert_eq!(saga.parent_span_id, place_server[0].span_id);
    assert_eq!(
        attr(saga, "saga.id").as_deref(),
        Some(format!("saga-{id}").as_str())
    );
    assert_eq!(attr(saga, "saga.outcome").as_deref(), Some("completed"));
    let steps: Vec<&Span> = spans
        .iter()
        .filter(|s| s.parent_span_id == saga.span_id && attr(s, "saga.step").is_some())
        .collect();
    let mut names: Vec<String> = steps.iter().filter_map(|s| attr(s, "saga.step")).collect();
    names.sort();
    assert_eq!(
        names,
        [
            "authorize_payment",
            "capture_payment",
            "commit_stock",
            "confirm_order",
            "create_shipment",
            "reserve_stock"
        ]
    );
    for s in &steps {
        assert_eq!(attr(s, "saga.outcome").as_deref(), Some("ok"), "{}", s.name);
        assert_eq!(attr(s, "saga.attempt").as_deref(), Some("1"), "{}", s.name);
    }

    // Each participant call: order's client span under its step, the participant's server
    // span under that.
    for (service, method, step) in [
        (
            "ordermesh.inventory.v1.InventoryService",
            "ReserveStock",
            "reserve_stock",
        ),
        (
            "ordermesh.payment.v1.PaymentService",
            "AuthorizePayment",
            "authorize_payment",
        ),
        (
            "ordermesh.shipping.v1.ShippingService",
            "CreateShipment",
            "create_shipment",
        ),
        (
            "ordermesh.payment.v1.PaymentService",
            "CapturePayment",
            "capture_payment",
        ),
        (
            "ordermesh.inventory.v1.InventoryService",
            "CommitReservation",
            "commit_stock",
        ),
    ] {
        let servers = rpc(SpanKind::Server, service, method);
        assert_eq!(servers.len(), 1, "{service}/{method}");
        let server = servers[0];
        assert_eq!(attr(server, "rpc.grpc.status_code").as_deref(), Some("0"));
        let client = parent_of(server).expect("server span's parent");
        assert_eq!(client.kind, SpanKind::Client as i32, "{method}");
        assert_eq!(attr(client, "rpc.method").as_deref(), Some(method));
        let step_span = parent_of(client).expect("client span's parent");
        assert_eq!(
            attr(step_span, "saga.step").as_deref(),
            Some(step),
            "{method}"
        );
        assert_eq!(step_span.parent_span_id, saga.span_id);
    }
    // Database calls: every participant's server span has statements under it (client spans
    // with the database conventions), inside its time, with placeholders and never a value.
    let under = |span: &Span, ancestor: &Span| {
        let mut at = parent_of(span);
        while let Some(p) = at {
            if p.span_id == ancestor.span_id {
                return true;
            }
            at = parent_of(p);
        }
        false
    };
    let statements: Vec<&Span> = spans
        .iter()
        .filter(|s| attr(s, "db.system.name").is_some())
        .collect();
    for (service, method) in [
        ("ordermesh.inventory.v1.InventoryService", "ReserveStock"),
        ("ordermesh.payment.v1.PaymentService", "AuthorizePayment"),
        ("ordermesh.shipping.v1.ShippingService", "CreateShipment"),
    ] {
        let server = rpc(SpanKind::Server, service, method)[0];
        let mine: Vec<&&Span> = statements.iter().filter(|d| under(d, server)).collect();
        assert!(!mine.is_empty(), "no database span under {method}");
        for d in mine {
            assert_eq!(d.kind, SpanKind::Client as i32);
            assert_eq!(attr(d, "db.system.name").as_deref(), Some("sqlite"));
            let op = attr(d, "db.operation.name").expect("db.operation.name");
            assert!(d.name.starts_with(&op), "{} / {op}", d.name);
            let text = attr(d, "db.query.text").expect("db.query.text");
            assert!(!text.contains("TEA-1"), "a bound value in {text}");
            assert!(
                d.start_time_unix_nano >= server.start_time_unix_nano
                    && d.end_time_unix_nano <= server.end_time_unix_nano,
                "{} outside {method}",
                d.name
            );
        }
    }
    // The saga's own writes (its log of steps) sit under the saga.
    assert!(
        statements
            .iter()
            .any(|d| under(d, saga) && attr(d, "db.operation.name").as_deref() != Some("SELECT")),
        "no saga write among {:?}",
        statements.iter().map(|d| &d.name).collect::<Vec<_>>()
    );

    // The event's consumer span: a child of shipping's RecordTrackingEvent server span (where
    // the event was recorded, in the same transaction as the scan).
    let process = spans
        .iter()
        .find(|s| s.name == "process ShipmentStatusChanged")
        .expect("consumer span");
    assert_eq!(process.kind, SpanKind::Consumer as i32);
    assert_eq!(
        attr(process, "messaging.consumer.group.name").as_deref(),
        Some("order")
    );
    let recorded_in = parent_of(process).expect("the consumer span's parent is in the trace");
    assert_eq!(
        recorded_in.kind,
        SpanKind::Server as i32,
        "{}",
        recorded_in.name
    );
    assert_eq!(
        attr(recorded_in, "rpc.method").as_deref(),
        Some("RecordTrackingEvent")
    );
    let servers = spans
        .iter()
        .filter(|s| s.kind == SpanKind::Server as i32)
        .count();
    let clients = spans
        .iter()
        .filter(|s| s.kind == SpanKind::Client as i32)
        .count();
    println!(
        "trace {TRACE}: {} spans ({servers} server, {clients} client of which {} database, {} saga steps)",
        spans.len(),
        statements.len(),
        steps.len()
    );
}

/// A caller whose trace is not sampled (`traceparent` flags `00`) leaves no span anywhere: not
/// at the gateway, not in any service the order goes through, not in the saga or the
/// database. The not-sampled decision travels with the calls (the services make no span of
/// their own for it); a sampled order placed after it is traced in full.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unsampled_caller_leaves_no_span_anywhere() {
    const UNSAMPLED: &str = "0af7651916cd43dd8448eb211c80319c";
    // The sampled order's trace, not the first test's.
    const TRACE: &str = "5b8efff798038103d269b633813fc60c";
    let (received, telemetry) = exporting_to_a_receiver().await;

    let m = helpers::mesh::mesh().await;
    m.create_item("TEA-2").await;
    let quiet = format!("00-{UNSAMPLED}-b7ad6b7169203331-00");
    let id = m
        .place("TEA-2", "otel/quiet", &[("traceparent", quiet.as_str())])
        .await;
    assert!(m.confirmed(&id).await, "the saga did not confirm {id}");
    let traced = format!("00-{TRACE}-{CALLER}-01");
    let marker = m
        .place("TEA-2", "otel/marker", &[("traceparent", traced.as_str())])
        .await;
    assert!(
        m.confirmed(&marker).await,
        "the saga did not confirm {marker}"
    );
    let done = received.saga_completed(TRACE).await;
    assert!(done, "the sampled order's saga span did not arrive");
    telemetry.shutdown().await;
    let quiet_spans = received.in_trace(UNSAMPLED);
    assert!(
        quiet_spans.is_empty(),
        "spans of the unsampled trace: {:?}",
        quiet_spans.iter().map(|s| &s.name).collect::<Vec<_>>()
    );
    // Nor did the unsampled order's saga, which runs in a task of its own, start a trace.
    let quiet_saga = format!("saga-{id}");
    assert!(
        !received
            .spans
            .lock()
            .unwrap()
            .iter()
            .any(|(_, s)| attr(s, "saga.id").as_deref() == Some(quiet_saga.as_str())),
        "the unsampled order's saga made spans"
    );
    // And the calls it made carried the decision: no participant started a trace of its own
    // for them (each saga call shows up once, from the sampled order, as client and server).
    let all = received.spans.lock().unwrap().clone();
    for method in [
        "PlaceOrder",
        "ReserveStock",
        "AuthorizePayment",
        "CreateShipment",
        "CapturePayment",
        "CommitReservation",
    ] {
        let traces: Vec<String> = all
            .iter()
            .filter(|(_, s)| attr(s, "rpc.method").as_deref() == Some(method))
            .map(|(_, s)| hex(&s.trace_id))
            .collect();
        assert_eq!(traces, [TRACE, TRACE], "{method}");
    }
    // One order's HTTP span: the sampled one (the gateway did not start a trace of its own for
    // the unsampled request either).
    let orders_http: Vec<String> = all
        .iter()
        .filter(|(_, s)| attr(s, "http.route").as_deref() == Some("/v1/orders"))
        .map(|(_, s)| hex(&s.trace_id))
        .collect();
    assert_eq!(orders_http, [TRACE]);
    let sampled = received.in_trace(TRACE);
    assert!(
        sampled.iter().any(|s| attr(s, "db.system.name").is_some())
            && sampled
                .iter()
                .any(|s| attr(s, "rpc.method").as_deref() == Some("CapturePayment")),
        "the sampled order is not traced in full"
    );
}
