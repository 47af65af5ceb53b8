//! Shipping over real gRPC, on SQLite and on PostgreSQL.

use std::time::Duration;

use futures::StreamExt;
use ordermesh::config::ServiceConfig;
use ordermesh::proto::common::v1::{Address, SkuQuantity};
use ordermesh::proto::shipping::v1 as pb;
use ordermesh::proto::shipping::v1::shipping_service_client::ShippingServiceClient;
use ordermesh::testing::{
    eventually, health_status, spawn, Backend, Spawned, TestDatabase, SERVING,
};
use shipping_service::{App, TrackingFeed, SERVICE};
use tonic::transport::Channel;
use tonic::{Code, Streaming};

use pb::ShipmentStatus as S;

mod requests;
mod shipments;
mod tracking;

struct Harness {
    client: ShippingServiceClient<Channel>,
    feed: TrackingFeed,
    server: Spawned,
    _db: TestDatabase,
}

async fn start(backend: Backend) -> Harness {
    let db = TestDatabase::new(backend).await;
    let app = App::build(&ServiceConfig::for_test(SERVICE, &db.url))
        .await
        .expect("build shipping");
    let feed = app.feed.clone();
    let server = spawn(|l, s| app.serve(l, s)).await;
    let client = ShippingServiceClient::connect(server.uri())
        .await
        .expect("connect");
    Harness {
        client,
        feed,
        server,
        _db: db,
    }
}

fn address(country: &str) -> Option<Address> {
    Some(Address {
        recipient: "Ada Lovelace".into(),
        street: "12 Analytical Way".into(),
        city: "Springfield".into(),
        postal_code: "12345".into(),
        country_code: country.into(),
    })
}

fn items(lines: &[(&str, i32)]) -> Vec<SkuQuantity> {
    lines
        .iter()
        .map(|(sku, quantity)| SkuQuantity {
            sku: sku.to_string(),
            quantity: *quantity,
        })
        .collect()
}

fn create_req(order: &str, key: &str) -> pb::CreateShipmentRequest {
    pb::CreateShipmentRequest {
        order_id: order.into(),
        address: address("US"),
        items: items(&[("SKU-B", 2), ("SKU-A", 1)]),
        currency_code: String::new(),
        idempotency_key: key.into(),
    }
}

async fn create(c: &mut ShippingServiceClient<Channel>, order: &str, key: &str) -> pb::Shipment {
    c.create_shipment(create_req(order, key))
        .await
        .expect("create shipment")
        .into_inner()
        .shipment
        .expect("shipment")
}

async fn record(
    c: &mut ShippingServiceClient<Channel>,
    id: &str,
    status: S,
) -> Result<pb::Shipment, tonic::Status> {
    c.record_tracking_event(pb::RecordTrackingEventRequest {
        shipment_id: id.into(),
        status: status as i32,
        location: format!("hub for {}", status.as_str_name()),
        note: String::new(),
    })
    .await
    .map(|r| r.into_inner().shipment.expect("shipment"))
}

async fn cancel(
    c: &mut ShippingServiceClient<Channel>,
    id: &str,
    key: &str,
    reason: &str,
) -> Result<pb::Shipment, tonic::Status> {
    c.cancel_shipment(pb::CancelShipmentRequest {
        shipment_id: id.into(),
        idempotency_key: key.into(),
        reason: reason.into(),
        ..Default::default()
    })
    .await
    .map(|r| r.into_inner().shipment.expect("shipment"))
}

async fn get(c: &mut ShippingServiceClient<Channel>, id: &str) -> pb::Shipment {
    c.get_shipment(pb::GetShipmentRequest {
        shipment_id: id.into(),
    })
    .await
    .expect("get shipment")
    .into_inner()
    .shipment
    .expect("shipment")
}

async fn track(
    c: &mut ShippingServiceClient<Channel>,
    id: &str,
) -> Streaming<pb::TrackShipmentResponse> {
    c.track_shipment(pb::TrackShipmentRequest {
        shipment_id: id.into(),
    })
    .await
    .expect("track shipment")
    .into_inner()
}

/// The next event of a tracking stream, within five seconds.
async fn next_event(stream: &mut Streaming<pb::TrackShipmentResponse>) -> pb::TrackingEvent {
    tokio::time::timeout(Duration::from_secs(5), stream.next())
        .await
        .expect("an event within 5s")
        .expect("the stream is still open")
        .expect("an event, not an error")
        .tracking_event
        .expect("tracking event")
}

/// Asserts that a tracking stream ends cleanly within five seconds.
async fn assert_ends(stream: &mut Streaming<pb::TrackShipmentResponse>) {
    let end = tokio::time::timeout(Duration::from_secs(5), stream.next())
        .await
        .expect("the stream ends within 5s");
    assert!(end.is_none(), "expected the end of the stream, got {end:?}");
}

fn assert_invalid(r: Result<impl std::fmt::Debug, tonic::Status>, field: &str) {
    let e = r.expect_err("expected INVALID_ARGUMENT");
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    assert!(
        e.message().starts_with(&format!("{field}:")),
        "message {:?} should name {field}",
        e.message()
    );
}

async fn quote(
    c: &mut ShippingServiceClient<Channel>,
    country: &str,
    lines: &[(&str, i32)],
    currency: &str,
) -> Result<pb::Quote, tonic::Status> {
    c.get_quote(pb::GetQuoteRequest {
        address: address(country),
        items: items(lines),
        currency_code: currency.into(),
    })
    .await
    .map(|r| r.into_inner().quote.expect("quote"))
}

fn cost(q: &pb::Quote) -> (&str, i64, i32) {
    let m = q.cost.as_ref().expect("cost");
    (m.currency_code.as_str(), m.amount_minor, q.estimated_days)
}
