//! Orders over real gRPC, on SQLite and on PostgreSQL.

use std::time::Duration;

use futures::StreamExt;
use order_service::domain::OrderStatus;
use order_service::{App, OrderApi, OrderFeed, SERVICE};
use ordermesh::config::ServiceConfig;
use ordermesh::proto::common::v1::{Address, Money};
use ordermesh::proto::order::v1 as pb;
use ordermesh::proto::order::v1::order_service_client::OrderServiceClient;
use ordermesh::testing::{
    bad_request_field, eventually, health_status, spawn, Backend, Spawned, TestDatabase, SERVING,
};
use ordermesh::types::ids::OrderId;
use tonic::transport::Channel;
use tonic::Code;

mod history;
mod import;
mod placing;
mod status;
mod watching;

struct Harness {
    client: OrderServiceClient<Channel>,
    api: OrderApi,
    feed: OrderFeed,
    server: Spawned,
    _db: TestDatabase,
}

async fn start(backend: Backend) -> Harness {
    start_with(backend, order_service::store::DEFAULT_SNAPSHOT_EVERY).await
}

/// A harness whose orders are snapshotted every `every` events.
async fn start_with(backend: Backend, every: i64) -> Harness {
    let db = TestDatabase::new(backend).await;
    let writer = order_service::store::Writer {
        snapshot_every: every,
    };
    let app = App::build_with(&ServiceConfig::for_test(SERVICE, &db.url), writer)
        .await
        .expect("build order");
    let api = app.api.clone();
    let feed = app.feed.clone();
    let server = spawn(|l, s| app.serve(l, s)).await;
    let client = OrderServiceClient::connect(server.uri())
        .await
        .expect("connect");
    Harness {
        client,
        api,
        feed,
        server,
        _db: db,
    }
}

fn money(cur: &str, minor: i64) -> Option<Money> {
    Some(Money {
        currency_code: cur.into(),
        amount_minor: minor,
    })
}

fn address() -> Option<Address> {
    Some(Address {
        recipient: "Ada Lovelace".into(),
        street: "12 St James's Square".into(),
        city: "London".into(),
        postal_code: "SW1Y 4JH".into(),
        country_code: "GB".into(),
    })
}

fn line(sku: &str, quantity: i32, minor: i64) -> pb::PlaceOrderLine {
    pb::PlaceOrderLine {
        sku: sku.into(),
        quantity,
        unit_price: money("USD", minor),
    }
}

fn place_req(customer: &str, key: &str, lines: Vec<pb::PlaceOrderLine>) -> pb::PlaceOrderRequest {
    pb::PlaceOrderRequest {
        customer_id: customer.into(),
        lines,
        shipping_address: address(),
        card_token: "tok_visa".into(),
        idempotency_key: key.into(),
    }
}

async fn place(c: &mut OrderServiceClient<Channel>, customer: &str, key: &str) -> pb::Order {
    c.place_order(place_req(customer, key, vec![line("SKU-1", 2, 1999)]))
        .await
        .expect("place order")
        .into_inner()
        .order
        .expect("order")
}

fn oid(s: &str) -> OrderId {
    OrderId::parse(s).expect("order id")
}

fn status(o: &pb::Order) -> pb::OrderStatus {
    pb::OrderStatus::try_from(o.status).unwrap()
}
