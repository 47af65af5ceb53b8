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

async fn items_are_created_read_and_paged(backend: Backend) {
    let mut h = start(backend).await;
    for sku in ["A-1", "B-2", "C-3", "D-4", "E-5"] {
        create(&mut h.client, sku, 10).await;
    }
    let got = item(&mut h.client, "C-3").await;
    assert_eq!(got.name, "Item C-3");
    assert_eq!(got.price, usd(1999));
    assert_eq!((got.on_hand, got.reserved, got.available), (10, 0, 10));

    let dup = h
        .client
        .create_item(pb::CreateItemRequest {
            sku: "A-1".into(),
            name: "again".into(),
            price: usd(1),
            ..Default::default()
        })
        .await;
    assert_eq!(dup.unwrap_err().code(), Code::AlreadyExists);
    let missing = h
        .client
        .get_item(pb::GetItemRequest { sku: "NOPE".into() })
        .await;
    assert_eq!(missing.unwrap_err().code(), Code::NotFound);

    let mut seen = vec![];
    let mut token = String::new();
    loop {
        let page = h
            .client
            .list_items(pb::ListItemsRequest {
                page_size: 2,
                page_token: token,
                low_stock_only: false,
            })
            .await
            .unwrap()
            .into_inner();
        assert!(page.items.len() <= 2);
        seen.extend(page.items.into_iter().map(|i| i.sku));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(seen, ["A-1", "B-2", "C-3", "D-4", "E-5"]);

    // A token minted without the low-stock filter is refused with it.
    let first = h
        .client
        .list_items(pb::ListItemsRequest {
            page_size: 2,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let mismatched = h
        .client
        .list_items(pb::ListItemsRequest {
            page_size: 2,
            page_token: first.next_page_token,
            low_stock_only: true,
        })
        .await;
    assert_invalid(mismatched, "page_token");

    h.client
        .adjust_stock(pb::AdjustStockRequest {
            sku: "B-2".into(),
            delta: -9,
            reason: "breakage".into(),
        })
        .await
        .unwrap();
    let low = h
        .client
        .list_items(pb::ListItemsRequest {
            low_stock_only: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        low.items.iter().map(|i| i.sku.as_str()).collect::<Vec<_>>(),
        ["B-2"]
    );
}

async fn bad_input_is_refused_with_the_field_named(backend: Backend) {
    let mut h = start(backend).await;
    create(&mut h.client, "SKU", 5).await;
    let c = &mut h.client;
    let base = pb::CreateItemRequest {
        sku: "X".into(),
        name: "x".into(),
        price: usd(1),
        initial_stock: 1,
        low_stock_threshold: 0,
    };
    assert_invalid(
        c.create_item(pb::CreateItemRequest {
            sku: "".into(),
            ..base.clone()
        })
        .await,
        "sku",
    );
    assert_invalid(
        c.create_item(pb::CreateItemRequest {
            sku: "a b".into(),
            ..base.clone()
        })
        .await,
        "sku",
    );
    assert_invalid(
        c.create_item(pb::CreateItemRequest {
            name: " ".into(),
            ..base.clone()
        })
        .await,
        "name",
    );
    assert_invalid(
        c.create_item(pb::CreateItemRequest {
            initial_stock: -1,
            ..base.clone()
        })
        .await,
        "initial_stock",
    );
    let unknown_currency = pb::CreateItemRequest {
        price: Some(Money {
            currency_code: "ABC".into(),
            amount_minor: 100,
        }),
        ..base.clone()
    };
    let e = c.create_item(unknown_currency).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(
        e.message().starts_with("price") && e.message().contains("ABC"),
        "{}",
        e.message()
    );
    assert_invalid(
        c.create_item(pb::CreateItemRequest {
            price: usd(-5),
            ..base.clone()
        })
        .await,
        "price",
    );
    assert_invalid(
        c.create_item(pb::CreateItemRequest {
            price: None,
            ..base
        })
        .await,
        "price",
    );
    assert_invalid(
        c.get_item(pb::GetItemRequest { sku: "".into() }).await,
        "sku",
    );
    assert_invalid(
        c.list_items(pb::ListItemsRequest {
            page_size: 101,
            ..Default::default()
        })
        .await,
        "page_size",
    );
    assert_invalid(
        c.list_items(pb::ListItemsRequest {
            page_size: -1,
            ..Default::default()
        })
        .await,
        "page_size",
    );
    assert_invalid(
        c.list_items(pb::ListItemsRequest {
            page_token: "not-a-token".into(),
            ..Default::default()
        })
        .await,
        "page_token",
    );
    assert_invalid(
        c.adjust_stock(pb::AdjustStockRequest {
            sku: "SKU".into(),
            delta: 0,
            reason: "".into(),
        })
        .await,
        "delta",
    );
    assert_invalid(
        c.reserve_stock(reserve_req("", "k", &[("SKU", 1)])).await,
        "order_id",
    );
    assert_invalid(
        c.reserve_stock(reserve_req("o1", "", &[("SKU", 1)])).await,
        "idempotency_key",
    );
    assert_invalid(c.reserve_stock(reserve_req("o1", "k", &[])).await, "lines");
    assert_invalid(
        c.reserve_stock(reserve_req("o1", "k", &[("SKU", -2)]))
            .await,
        "lines[0].quantity",
    );
    assert_invalid(
        c.reserve_stock(reserve_req("o1", "k", &[("SKU", 0)])).await,
        "lines[0].quantity",
    );
    assert_invalid(
        c.reserve_stock(reserve_req("o1", "k", &[("SKU", 1), ("", 1)]))
            .await,
        "lines[1].sku",
    );
    assert_invalid(
        c.reserve_stock(reserve_req("o1", "k", &[("SKU", 1), ("SKU", 1)]))
            .await,
        "lines[1].sku",
    );
    assert_invalid(
        c.watch_stock(pb::WatchStockRequest { skus: vec![] })
            .await
            .map(|_| ()),
        "skus",
    );
    // Nothing above changed the stock.
    let i = item(c, "SKU").await;
    assert_eq!((i.on_hand, i.reserved), (5, 0));
}

async fn concurrent_reservations_never_oversell(backend: Backend) {
    let mut h = start(backend).await;
    create(&mut h.client, "HOT", 10).await;
    create(&mut h.client, "ALSO", 100).await;
    let mut tasks = vec![];
    for n in 0..24 {
        let mut c = h.client.clone();
        tasks.push(tokio::spawn(async move {
            // Half the orders lock HOT first by name order, half also take ALSO.
            let lines: &[(&str, i32)] = if n % 2 == 0 {
                &[("HOT", 1)]
            } else {
                &[("ALSO", 1), ("HOT", 1)]
            };
            c.reserve_stock(reserve_req(
                &format!("order-{n}"),
                &format!("key-{n}"),
                lines,
            ))
            .await
        }));
    }
    let mut ok = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(_) => ok += 1,
            Err(e) => assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}"),
        }
    }
    assert_eq!(ok, 10, "exactly the stock on hand can be reserved");
    let hot = item(&mut h.client, "HOT").await;
    assert_eq!((hot.on_hand, hot.reserved, hot.available), (10, 10, 0));
    // ALSO was reserved only by the successful odd orders: all-or-nothing per reservation.
    let also = item(&mut h.client, "ALSO").await;
    let mut odd_ok = 0;
    for n in (1..24).step_by(2) {
        let r = h
            .client
            .get_reservation(pb::GetReservationRequest {
                order_id: format!("order-{n}"),
            })
            .await;
        if r.is_ok() {
            odd_ok += 1;
        }
    }
    assert_eq!(also.reserved, odd_ok);
}

async fn reservations_commit_release_and_replay(backend: Backend) {
    let mut h = start(backend).await;
    create(&mut h.client, "A", 10).await;
    create(&mut h.client, "B", 10).await;
    let c = &mut h.client;

    let first = c
        .reserve_stock(reserve_req("o-1", "saga-1/reserve", &[("A", 3), ("B", 2)]))
        .await
        .unwrap()
        .into_inner();
    let again = c
        .reserve_stock(reserve_req("o-1", "saga-1/reserve", &[("A", 3), ("B", 2)]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(first, again, "a repeated key returns the first result");
    assert_eq!(item(c, "A").await.reserved, 3, "and does not reserve twice");
    let conflict = c
        .reserve_stock(reserve_req("o-1", "saga-1/reserve", &[("A", 4)]))
        .await
        .unwrap_err();
    assert_eq!(conflict.code(), Code::AlreadyExists);
    let other_key = c
        .reserve_stock(reserve_req("o-1", "another-key", &[("A", 1)]))
        .await
        .unwrap_err();
    assert_eq!(other_key.code(), Code::AlreadyExists);

    let committed = c
        .commit_reservation(pb::CommitReservationRequest {
            order_id: "o-1".into(),
            idempotency_key: "saga-1/commit".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .reservation
        .unwrap();
    assert_eq!(committed.status, pb::ReservationStatus::Committed as i32);
    let a = item(c, "A").await;
    assert_eq!((a.on_hand, a.reserved), (7, 0));
    let release_after_commit = c
        .release_reservation(pb::ReleaseReservationRequest {
            order_id: "o-1".into(),
            idempotency_key: "r1".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(release_after_commit.code(), Code::FailedPrecondition);

    c.reserve_stock(reserve_req("o-2", "saga-2/reserve", &[("B", 5)]))
        .await
        .unwrap();
    let released = c
        .release_reservation(pb::ReleaseReservationRequest {
            order_id: "o-2".into(),
            idempotency_key: "saga-2/release".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .reservation
        .unwrap();
    assert_eq!(released.status, pb::ReservationStatus::Released as i32);
    assert_eq!(item(c, "B").await.reserved, 0);
    let commit_after_release = c
        .commit_reservation(pb::CommitReservationRequest {
            order_id: "o-2".into(),
            idempotency_key: "c2".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(commit_after_release.code(), Code::FailedPrecondition);
    let missing = c
        .commit_reservation(pb::CommitReservationRequest {
            order_id: "o-404".into(),
            idempotency_key: "c404".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);

    // A release that arrives before its reserve leaves a tombstone: the late reserve is refused.
    let tomb = c
        .release_reservation(pb::ReleaseReservationRequest {
            order_id: "o-3".into(),
            idempotency_key: "saga-3/release".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .reservation
        .unwrap();
    assert_eq!(tomb.status, pb::ReservationStatus::Released as i32);
    assert!(tomb.lines.is_empty());
    let late = c
        .reserve_stock(reserve_req("o-3", "saga-3/reserve", &[("A", 1)]))
        .await
        .unwrap_err();
    assert_eq!(late.code(), Code::FailedPrecondition);
    assert_eq!(item(c, "A").await.reserved, 0);

    // Insufficient stock reserves nothing, not even the lines that would fit.
    let short = c
        .reserve_stock(reserve_req("o-4", "saga-4/reserve", &[("A", 1), ("B", 11)]))
        .await
        .unwrap_err();
    assert_eq!(short.code(), Code::FailedPrecondition);
    assert!(short.message().contains("'B'"), "{}", short.message());
    assert_eq!(item(c, "A").await.reserved, 0);
    // ...and the failed attempt did not burn its key: a retry after restock succeeds.
    c.adjust_stock(pb::AdjustStockRequest {
        sku: "B".into(),
        delta: 10,
        reason: "restock".into(),
    })
    .await
    .unwrap();
    c.reserve_stock(reserve_req("o-4", "saga-4/reserve", &[("A", 1), ("B", 11)]))
        .await
        .unwrap();
}

async fn reservations_expire(backend: Backend) {
    let mut h = start(backend).await;
    create(&mut h.client, "A", 5).await;
    let mut req = reserve_req("o-exp", "k-exp", &[("A", 4)]);
    req.ttl_seconds = 1;
    h.client.reserve_stock(req).await.unwrap();
    assert_eq!(h.api.expire_due().await.unwrap(), 0, "not yet due");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(h.api.expire_due().await.unwrap(), 1);
    let r = h
        .client
        .get_reservation(pb::GetReservationRequest {
            order_id: "o-exp".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        r.reservation.unwrap().status,
        pb::ReservationStatus::Expired as i32
    );
    assert_eq!(item(&mut h.client, "A").await.available, 5);
    assert_eq!(h.api.expire_due().await.unwrap(), 0, "expiry happens once");
}

async fn adjustments_never_go_below_reserved(backend: Backend) {
    let mut h = start(backend).await;
    create(&mut h.client, "A", 5).await;
    h.client
        .reserve_stock(reserve_req("o", "k", &[("A", 3)]))
        .await
        .unwrap();
    let e = h
        .client
        .adjust_stock(pb::AdjustStockRequest {
            sku: "A".into(),
            delta: -3,
            reason: "".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);
    let ok = h
        .client
        .adjust_stock(pb::AdjustStockRequest {
            sku: "A".into(),
            delta: -2,
            reason: "".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .item
        .unwrap();
    assert_eq!((ok.on_hand, ok.reserved, ok.available), (3, 3, 0));
    let e = h
        .client
        .adjust_stock(pb::AdjustStockRequest {
            sku: "ZZ".into(),
            delta: 1,
            reason: "".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
}

async fn watch_stock_streams_changes_and_frees_a_dropped_client(backend: Backend) {
    let mut h = start(backend).await;
    create(&mut h.client, "W", 10).await;
    create(&mut h.client, "OTHER", 10).await;
    let mut stream = h
        .client
        .watch_stock(pb::WatchStockRequest {
            skus: vec!["W".into()],
        })
        .await
        .unwrap()
        .into_inner();
    let first = stream.next().await.unwrap().unwrap().stock_level.unwrap();
    assert_eq!((first.sku.as_str(), first.available), ("W", 10));
    assert_eq!(h.feed.active_watchers(), 1);

    h.client
        .adjust_stock(pb::AdjustStockRequest {
            sku: "OTHER".into(),
            delta: 1,
            reason: "".into(),
        })
        .await
        .unwrap();
    h.client
        .adjust_stock(pb::AdjustStockRequest {
            sku: "W".into(),
            delta: 5,
            reason: "".into(),
        })
        .await
        .unwrap();
    let next = tokio::time::timeout(Duration::from_secs(5), stream.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let level = next.stock_level.unwrap();
    assert_eq!(
        (level.sku.as_str(), level.on_hand),
        ("W", 15),
        "changes of other SKUs are filtered out"
    );

    h.client
        .reserve_stock(reserve_req("o", "k", &[("W", 4)]))
        .await
        .unwrap();
    let next = tokio::time::timeout(Duration::from_secs(5), stream.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let level = next.stock_level.unwrap();
    assert_eq!((level.reserved, level.available), (4, 11));

    // The client goes away mid-stream: the server side ends.
    drop(stream);
    assert!(
        eventually(Duration::from_secs(5), || async {
            h.feed.active_watchers() == 0
        })
        .await
    );

    let unknown = h
        .client
        .watch_stock(pb::WatchStockRequest {
            skus: vec!["W".into(), "NOPE".into()],
        })
        .await;
    assert_eq!(unknown.err().map(|e| e.code()), Some(Code::NotFound));
}

async fn import_stock_applies_a_client_stream(backend: Backend) {
    let mut h = start(backend).await;
    create(&mut h.client, "A", 0).await;
    create(&mut h.client, "B", 0).await;
    let msgs = vec![
        pb::ImportStockRequest {
            sku: "A".into(),
            delta: 5,
            reason: "receipt".into(),
        },
        pb::ImportStockRequest {
            sku: "NOPE".into(),
            delta: 5,
            reason: "".into(),
        },
        pb::ImportStockRequest {
            sku: "B".into(),
            delta: 7,
            reason: "".into(),
        },
        pb::ImportStockRequest {
            sku: "A".into(),
            delta: 0,
            reason: "".into(),
        },
        pb::ImportStockRequest {
            sku: "B".into(),
            delta: -20,
            reason: "".into(),
        },
        pb::ImportStockRequest {
            sku: "A".into(),
            delta: 2,
            reason: "".into(),
        },
    ];
    let summary = h
        .client
        .import_stock(futures::stream::iter(msgs))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((summary.applied, summary.rejected), (3, 3));
    assert!(
        summary.errors[0].starts_with("#1 (NOPE)"),
        "{:?}",
        summary.errors
    );
    assert!(summary.errors[1].contains("delta"), "{:?}", summary.errors);
    assert_eq!(item(&mut h.client, "A").await.on_hand, 7);
    assert_eq!(item(&mut h.client, "B").await.on_hand, 7);
}

async fn sync_stock_answers_each_count_and_survives_a_dropped_client(backend: Backend) {
    let mut h = start(backend).await;
    create(&mut h.client, "A", 10).await;
    h.client
        .reserve_stock(reserve_req("o", "k", &[("A", 4)]))
        .await
        .unwrap();
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let mut replies = h
        .client
        .sync_stock(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    tx.send(pb::SyncStockRequest {
        sku: "A".into(),
        counted: 12,
    })
    .await
    .unwrap();
    let r = replies.next().await.unwrap().unwrap();
    assert_eq!((r.delta, r.on_hand, r.error.as_str()), (2, 12, ""));
    tx.send(pb::SyncStockRequest {
        sku: "A".into(),
        counted: 3,
    })
    .await
    .unwrap();
    let r = replies.next().await.unwrap().unwrap();
    assert!(
        r.error.contains("below"),
        "count below reserved is refused: {r:?}"
    );
    tx.send(pb::SyncStockRequest {
        sku: "A".into(),
        counted: -1,
    })
    .await
    .unwrap();
    let r = replies.next().await.unwrap().unwrap();
    assert!(r.error.contains("counted"), "{r:?}");
    assert_eq!(item(&mut h.client, "A").await.on_hand, 12);
    // The client disconnects mid-stream; the service keeps serving.
    drop(tx);
    drop(replies);
    let i = item(&mut h.client, "A").await;
    assert_eq!((i.on_hand, i.reserved), (12, 4));
}

async fn health_serves_and_shutdown_drains_streams(backend: Backend) {
    let mut h = start(backend).await;
    for service in ["", inventory_service::GRPC_SERVICE] {
        let status = health_status(&h.server.uri(), service).await.unwrap();
        assert_eq!(status, SERVING, "health of {service:?}");
    }
    create(&mut h.client, "A", 1).await;
    let mut stream = h
        .client
        .watch_stock(pb::WatchStockRequest {
            skus: vec!["A".into()],
        })
        .await
        .unwrap()
        .into_inner();
    stream.next().await.unwrap().unwrap();
    // Shutdown ends the open stream instead of waiting out the grace period.
    let started = std::time::Instant::now();
    h.server.stop().await.unwrap();
    assert!(
        started.elapsed() < Duration::from_millis(1900),
        "drain took {:?}",
        started.elapsed()
    );
    let end = tokio::time::timeout(Duration::from_secs(2), stream.next())
        .await
        .unwrap();
    assert!(end.is_none() || end.unwrap().is_err());
}

ordermesh::backend_tests!(
    items_are_created_read_and_paged,
    bad_input_is_refused_with_the_field_named,
    concurrent_reservations_never_oversell,
    reservations_commit_release_and_replay,
    reservations_expire,
    adjustments_never_go_below_reserved,
    watch_stock_streams_changes_and_frees_a_dropped_client,
    import_stock_applies_a_client_stream,
    sync_stock_answers_each_count_and_survives_a_dropped_client,
    health_serves_and_shutdown_drains_streams,
);

/// Health follows the database: NOT_SERVING while PostgreSQL refuses the service's database,
/// SERVING again once it is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn health_is_not_serving_while_the_database_is_unreachable() {
    use sea_orm::{ConnectionTrait, Database};
    let db = TestDatabase::new(Backend::Postgres).await;
    let name = db.url.rsplit('/').next().unwrap().to_string();
    let app = App::build(&ServiceConfig::for_test(SERVICE, &db.url))
        .await
        .unwrap();
    let server = spawn(|l, s| app.serve(l, s)).await;
    let uri = server.uri();
    assert_eq!(health_status(&uri, "").await.unwrap(), SERVING);

    let admin = Database::connect(ordermesh::testing::postgres_admin_url())
        .await
        .unwrap();
    let offline = format!("{name}_offline");
    // Renaming needs no open sessions; the pool reconnects, so terminate and rename until it sticks.
    let mut renamed = false;
    for _ in 0..50 {
        let _ = admin
            .execute_unprepared(&format!(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'"
            ))
            .await;
        if admin
            .execute_unprepared(&format!(
                "ALTER DATABASE \"{name}\" RENAME TO \"{offline}\""
            ))
            .await
            .is_ok()
        {
            renamed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(renamed, "could not take the database away");
    let down = eventually(Duration::from_secs(10), || async {
        health_status(&uri, inventory_service::GRPC_SERVICE)
            .await
            .ok()
            == Some(ordermesh::testing::NOT_SERVING)
    })
    .await;
    // Put it back before asserting, so the database is dropped either way.
    admin
        .execute_unprepared(&format!(
            "ALTER DATABASE \"{offline}\" RENAME TO \"{name}\""
        ))
        .await
        .unwrap();
    assert!(
        down,
        "health should report NOT_SERVING while the database is gone"
    );
    let up = eventually(Duration::from_secs(10), || async {
        health_status(&uri, inventory_service::GRPC_SERVICE)
            .await
            .ok()
            == Some(SERVING)
    })
    .await;
    assert!(up, "health should recover");
    let mut client = InventoryServiceClient::connect(uri).await.unwrap();
    create(&mut client, "AFTER", 1).await;
}
