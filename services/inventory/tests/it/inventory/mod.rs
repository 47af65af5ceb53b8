//! Inventory over real gRPC, on SQLite and on PostgreSQL.

use std::time::Duration;

use futures::StreamExt;
use inventory_service::{App, InventoryApi, StockFeed, SERVICE};
use ordermesh::config::ServiceConfig;
use ordermesh::proto::common::v1::{Money, SkuQuantity};
use ordermesh::proto::inventory::v1 as pb;
use ordermesh::proto::inventory::v1::inventory_service_client::InventoryServiceClient;
use ordermesh::testing::{
    eventually, health_status, spawn, Backend, Spawned, TestDatabase, SERVING,
};
use tonic::transport::Channel;
use tonic::Code;

mod health;
mod items;
mod reservations;
mod streams;

struct Harness {
    client: InventoryServiceClient<Channel>,
    feed: StockFeed,
    api: InventoryApi,
    server: Spawned,
    _db: TestDatabase,
}

async fn start(backend: Backend) -> Harness {
    let db = TestDatabase::new(backend).await;
    let app = App::build(&ServiceConfig::for_test(SERVICE, &db.url))
        .await
        .expect("build inventory");
    let feed = app.feed.clone();
    let api = app.api.clone();
    let server = spawn(|l, s| app.serve(l, s)).await;
    let client = InventoryServiceClient::connect(server.uri())
        .await
        .expect("connect");
    Harness {
        client,
        feed,
        api,
        server,
        _db: db,
    }
}

fn usd(amount_minor: i64) -> Option<Money> {
    Some(Money {
        currency_code: "USD".into(),
        amount_minor,
    })
}

async fn create(c: &mut InventoryServiceClient<Channel>, sku: &str, stock: i64) -> pb::Item {
    c.create_item(pb::CreateItemRequest {
        sku: sku.into(),
        name: format!("Item {sku}"),
        price: usd(1999),
        initial_stock: stock,
        low_stock_threshold: 2,
    })
    .await
    .expect("create item")
    .into_inner()
    .item
    .expect("item")
}

fn reserve_req(order: &str, key: &str, lines: &[(&str, i32)]) -> pb::ReserveStockRequest {
    pb::ReserveStockRequest {
        order_id: order.into(),
        lines: lines
            .iter()
            .map(|(s, q)| SkuQuantity {
                sku: s.to_string(),
                quantity: *q,
            })
            .collect(),
        ttl_seconds: 0,
        idempotency_key: key.into(),
    }
}

async fn item(c: &mut InventoryServiceClient<Channel>, sku: &str) -> pb::Item {
    c.get_item(pb::GetItemRequest { sku: sku.into() })
        .await
        .expect("get item")
        .into_inner()
        .item
        .expect("item")
}

fn assert_invalid(r: Result<impl std::fmt::Debug, tonic::Status>, field: &str) {
    let e = r.expect_err("expected INVALID_ARGUMENT");
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    assert!(
        e.message().starts_with(field),
        "message {:?} should name {field}",
        e.message()
    );
}
