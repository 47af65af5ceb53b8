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

struct Harness {
    client: OrderServiceClient<Channel>,
    api: OrderApi,
    feed: OrderFeed,
    server: Spawned,
    _db: TestDatabase,
}

async fn start(backend: Backend) -> Harness {
    let db = TestDatabase::new(backend).await;
    let app = App::build(&ServiceConfig::for_test(SERVICE, &db.url))
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

async fn orders_are_placed_with_totals_and_replayed_by_key(backend: Backend) {
    let mut h = start(backend).await;
    let c = &mut h.client;
    let req = place_req(
        "cust-1",
        "place-1",
        vec![line("SKU-1", 2, 1999), line("SKU-2", 3, 250)],
    );
    let o = c
        .place_order(req.clone())
        .await
        .unwrap()
        .into_inner()
        .order
        .unwrap();
    assert!(o.order_id.starts_with("ord_"));
    assert_eq!(status(&o), pb::OrderStatus::Pending);
    assert_eq!(o.version, 1);
    assert_eq!(o.total, money("USD", 2 * 1999 + 3 * 250));
    assert_eq!(o.lines[0].line_total, money("USD", 3998));
    assert_eq!(
        o.lines[1].sku, "SKU-2",
        "lines keep the order they were placed in"
    );
    assert_eq!(o.shipping_address, address());

    let again = c
        .place_order(req.clone())
        .await
        .unwrap()
        .into_inner()
        .order
        .unwrap();
    assert_eq!(again, o, "a repeat of the key returns the first order");
    let mut changed = req.clone();
    changed.lines[0].quantity = 5;
    let e = c.place_order(changed).await.unwrap_err();
    assert_eq!(e.code(), Code::AlreadyExists);

    let got = c
        .get_order(pb::GetOrderRequest {
            order_id: o.order_id.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .order
        .unwrap();
    assert_eq!(got, o);
    let all = c
        .list_orders(pb::ListOrdersRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(all.orders.len(), 1, "the replay stored nothing new");

    // Concurrent repeats of one key make one order.
    let mut tasks = Vec::new();
    for _ in 0..6 {
        let mut c = h.client.clone();
        tasks.push(tokio::spawn(async move {
            c.place_order(place_req("cust-2", "same-key", vec![line("A", 1, 100)]))
                .await
        }));
    }
    let mut ids = std::collections::HashSet::new();
    for t in tasks {
        match t.await.unwrap() {
            Ok(r) => {
                ids.insert(r.into_inner().order.unwrap().order_id);
            }
            Err(e) => assert_eq!(e.code(), Code::Unavailable, "{e:?}"),
        }
    }
    assert_eq!(ids.len(), 1, "{ids:?}");
    let cust2 = h
        .client
        .list_orders(pb::ListOrdersRequest {
            customer_id: "cust-2".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(cust2.orders.len(), 1);
    h.server.stop().await.unwrap();
}

async fn bad_input_is_refused_with_the_field_named(backend: Backend) {
    let mut h = start(backend).await;
    let c = &mut h.client;
    let good = || place_req("cust", "k", vec![line("A", 1, 100)]);
    let mut bad_country = good();
    bad_country.shipping_address.as_mut().unwrap().country_code = "Britain".into();
    let cases: Vec<(pb::PlaceOrderRequest, &str)> = vec![
        (
            pb::PlaceOrderRequest {
                customer_id: String::new(),
                ..good()
            },
            "customer_id",
        ),
        (
            pb::PlaceOrderRequest {
                lines: vec![],
                ..good()
            },
            "lines",
        ),
        (
            pb::PlaceOrderRequest {
                lines: vec![line("A", 1, 100), line("B", -2, 100)],
                ..good()
            },
            "lines[1].quantity",
        ),
        (
            pb::PlaceOrderRequest {
                lines: vec![line("", 1, 100)],
                ..good()
            },
            "lines[0].sku",
        ),
        (
            pb::PlaceOrderRequest {
                lines: vec![pb::PlaceOrderLine {
                    sku: "A".into(),
                    quantity: 1,
                    unit_price: money("ABC", 100),
                }],
                ..good()
            },
            "lines[0].unit_price",
        ),
        (
            pb::PlaceOrderRequest {
                lines: vec![
                    line("A", 1, 100),
                    pb::PlaceOrderLine {
                        sku: "B".into(),
                        quantity: 1,
                        unit_price: money("EUR", 100),
                    },
                ],
                ..good()
            },
            "lines[1].unit_price.currency_code",
        ),
        (
            pb::PlaceOrderRequest {
                shipping_address: None,
                ..good()
            },
            "shipping_address",
        ),
        (bad_country, "shipping_address.country_code"),
        (
            pb::PlaceOrderRequest {
                card_token: String::new(),
                ..good()
            },
            "card_token",
        ),
        (
            pb::PlaceOrderRequest {
                idempotency_key: String::new(),
                ..good()
            },
            "idempotency_key",
        ),
    ];
    for (req, field) in cases {
        let e = c.place_order(req.clone()).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{req:?}");
        assert_eq!(bad_request_field(&e), field, "{}", e.message());
    }
    let e = c
        .place_order(pb::PlaceOrderRequest {
            lines: vec![pb::PlaceOrderLine {
                sku: "A".into(),
                quantity: 1,
                unit_price: money("ABC", 1),
            }],
            ..good()
        })
        .await
        .unwrap_err();
    assert!(e.message().contains("unknown currency"), "{}", e.message());

    let list = |req: pb::ListOrdersRequest| {
        let mut c = c.clone();
        async move { c.list_orders(req).await }
    };
    let e = list(pb::ListOrdersRequest {
        page_size: 101,
        ..Default::default()
    })
    .await
    .unwrap_err();
    assert_eq!(bad_request_field(&e), "page_size");
    let e = list(pb::ListOrdersRequest {
        statuses: vec![pb::OrderStatus::Pending as i32, 42],
        ..Default::default()
    })
    .await
    .unwrap_err();
    assert_eq!(bad_request_field(&e), "statuses[1]");
    let e = list(pb::ListOrdersRequest {
        page_token: "not-a-token".into(),
        ..Default::default()
    })
    .await
    .unwrap_err();
    assert_eq!(bad_request_field(&e), "page_token");
    let e = c
        .get_order(pb::GetOrderRequest {
            order_id: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(bad_request_field(&e), "order_id");
    let e = c
        .get_order(pb::GetOrderRequest {
            order_id: "ord_missing".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    let e = c
        .cancel_order(pb::CancelOrderRequest {
            order_id: "ord_missing".into(),
            reason: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    // Nothing half-written.
    let all = c
        .list_orders(pb::ListOrdersRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(all.orders.is_empty());
    h.server.stop().await.unwrap();
}

async fn orders_are_listed_newest_first_with_filters_and_pages(backend: Backend) {
    let mut h = start(backend).await;
    let mut placed = Vec::new();
    for i in 0..5 {
        let customer = if i % 2 == 0 { "cust-a" } else { "cust-b" };
        placed.push(place(&mut h.client, customer, &format!("k{i}")).await);
    }
    h.api
        .advance(&oid(&placed[0].order_id), OrderStatus::Confirmed, "paid")
        .await
        .unwrap();
    h.api
        .advance(&oid(&placed[2].order_id), OrderStatus::Rejected, "declined")
        .await
        .unwrap();

    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let page = h
            .client
            .list_orders(pb::ListOrdersRequest {
                page_size: 2,
                page_token: token.clone(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert!(page.orders.len() <= 2);
        seen.extend(page.orders.into_iter().map(|o| o.order_id));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    let newest_first: Vec<String> = placed.iter().rev().map(|o| o.order_id.clone()).collect();
    assert_eq!(seen, newest_first);

    let a = h
        .client
        .list_orders(pb::ListOrdersRequest {
            customer_id: "cust-a".into(),
            page_size: 2,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(a.orders.len(), 2);
    assert!(a.orders.iter().all(|o| o.customer_id == "cust-a"));
    assert!(!a.next_page_token.is_empty());
    // A token is bound to the filters it was minted for.
    let e = h
        .client
        .list_orders(pb::ListOrdersRequest {
            customer_id: "cust-b".into(),
            page_token: a.next_page_token.clone(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);

    let settled = h
        .client
        .list_orders(pb::ListOrdersRequest {
            customer_id: "cust-a".into(),
            statuses: vec![
                pb::OrderStatus::Confirmed as i32,
                pb::OrderStatus::Rejected as i32,
            ],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let ids: Vec<&str> = settled.orders.iter().map(|o| o.order_id.as_str()).collect();
    assert_eq!(
        ids,
        [placed[2].order_id.as_str(), placed[0].order_id.as_str()]
    );
    assert_eq!(settled.orders[0].status_reason, "declined");
    h.server.stop().await.unwrap();
}

async fn the_status_machine_holds_under_concurrent_writers(backend: Backend) {
    let mut h = start(backend).await;
    let o = place(&mut h.client, "cust", "k").await;
    let cancel = |id: &str| pb::CancelOrderRequest {
        order_id: id.into(),
        reason: "changed my mind".into(),
    };

    // Cancel and confirm race: exactly one wins, and the loser learns why.
    let mut tasks = Vec::new();
    for i in 0..8 {
        let api = h.api.clone();
        let mut c = h.client.clone();
        let id = o.order_id.clone();
        tasks.push(tokio::spawn(async move {
            if i % 2 == 0 {
                api.advance(&oid(&id), OrderStatus::Confirmed, "paid").await
            } else {
                c.cancel_order(cancel(&id))
                    .await
                    .map(|r| r.into_inner().order.unwrap())
            }
        }));
    }
    let mut outcomes = Vec::new();
    for t in tasks {
        outcomes.push(t.await.unwrap());
    }
    let now = h
        .client
        .get_order(pb::GetOrderRequest {
            order_id: o.order_id.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .order
        .unwrap();
    // PENDING -> CONFIRMED -> CANCELLED is legal, so either one or two changes happened;
    // what matters is that every change bumped the version exactly once.
    let expected_version = match status(&now) {
        pb::OrderStatus::Cancelled => {
            let confirmed_first = outcomes.iter().any(|r| {
                r.as_ref()
                    .map(|o| status(o) == pb::OrderStatus::Confirmed)
                    .unwrap_or(false)
            });
            if confirmed_first {
                3
            } else {
                2
            }
        }
        pb::OrderStatus::Confirmed => 2,
        other => panic!("unexpected {other:?}"),
    };
    assert_eq!(now.version, expected_version, "{outcomes:?}");
    for r in &outcomes {
        if let Err(e) = r {
            assert!(
                matches!(e.code(), Code::FailedPrecondition | Code::Aborted),
                "{e:?}"
            );
        }
    }

    // A shipped order cannot be cancelled; cancelling a cancelled one is a no-op.
    let o2 = place(&mut h.client, "cust", "k2").await;
    h.api
        .advance(&oid(&o2.order_id), OrderStatus::Confirmed, "")
        .await
        .unwrap();
    let shipped = h
        .api
        .advance(&oid(&o2.order_id), OrderStatus::Shipped, "")
        .await
        .unwrap();
    assert_eq!(shipped.version, 3);
    let e = h
        .client
        .cancel_order(cancel(&o2.order_id))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);
    assert!(e.message().contains("SHIPPED"), "{}", e.message());
    let e = h
        .api
        .advance(&oid(&o2.order_id), OrderStatus::Pending, "")
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);

    let o3 = place(&mut h.client, "cust", "k3").await;
    let c1 = h
        .client
        .cancel_order(cancel(&o3.order_id))
        .await
        .unwrap()
        .into_inner()
        .order
        .unwrap();
    let c2 = h
        .client
        .cancel_order(cancel(&o3.order_id))
        .await
        .unwrap()
        .into_inner()
        .order
        .unwrap();
    assert_eq!(status(&c1), pb::OrderStatus::Cancelled);
    assert_eq!(c1.status_reason, "changed my mind");
    assert_eq!(c2.version, c1.version, "a repeat cancel changes nothing");
    h.server.stop().await.unwrap();
}

async fn next(
    s: &mut tonic::Streaming<pb::WatchOrderResponse>,
) -> Option<Result<pb::WatchOrderResponse, tonic::Status>> {
    tokio::time::timeout(Duration::from_secs(10), s.next())
        .await
        .expect("stream answers in time")
}

async fn watch_order_streams_changes_and_ends_at_a_final_status(backend: Backend) {
    let mut h = start(backend).await;
    let o = place(&mut h.client, "cust", "k").await;
    let mut stream = h
        .client
        .watch_order(pb::WatchOrderRequest {
            order_id: o.order_id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    let first = next(&mut stream).await.unwrap().unwrap().order.unwrap();
    assert_eq!(status(&first), pb::OrderStatus::Pending);
    for to in [
        OrderStatus::Confirmed,
        OrderStatus::Shipped,
        OrderStatus::Delivered,
    ] {
        h.api.advance(&oid(&o.order_id), to, "").await.unwrap();
    }
    let mut seen = Vec::new();
    while let Some(msg) = next(&mut stream).await {
        seen.push(status(&msg.unwrap().order.unwrap()));
    }
    assert_eq!(
        seen,
        [
            pb::OrderStatus::Confirmed,
            pb::OrderStatus::Shipped,
            pb::OrderStatus::Delivered
        ],
        "the stream ends after the final status"
    );

    // Watching an order that is already final sends it once and ends.
    let mut done = h
        .client
        .watch_order(pb::WatchOrderRequest {
            order_id: o.order_id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(next(&mut done).await.is_some());
    assert!(next(&mut done).await.is_none());

    // A client that leaves mid-stream is released.
    let o2 = place(&mut h.client, "cust", "k2").await;
    let mut leaving = h
        .client
        .watch_order(pb::WatchOrderRequest {
            order_id: o2.order_id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(next(&mut leaving).await.is_some());
    assert!(h.feed.active_watchers() >= 1);
    drop(leaving);
    h.api
        .advance(&oid(&o2.order_id), OrderStatus::Confirmed, "")
        .await
        .unwrap();
    let feed = h.feed.clone();
    assert!(
        eventually(Duration::from_secs(5), || {
            let feed = feed.clone();
            async move { feed.active_watchers() == 0 }
        })
        .await,
        "watcher still counted after its client left"
    );

    let e = h
        .client
        .watch_order(pb::WatchOrderRequest {
            order_id: "ord_missing".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    h.server.stop().await.unwrap();
}

async fn health_serves_and_shutdown_ends_watch_streams(backend: Backend) {
    let mut h = start(backend).await;
    assert_eq!(health_status(&h.server.uri(), "").await.unwrap(), SERVING);
    assert_eq!(
        health_status(&h.server.uri(), order_service::GRPC_SERVICE)
            .await
            .unwrap(),
        SERVING
    );
    let o = place(&mut h.client, "cust", "k").await;
    let mut stream = h
        .client
        .watch_order(pb::WatchOrderRequest {
            order_id: o.order_id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(stream.next().await.is_some());
    let stopped = tokio::time::timeout(Duration::from_secs(15), h.server.stop()).await;
    assert!(matches!(stopped, Ok(Ok(()))), "server drained: {stopped:?}");
    let end = tokio::time::timeout(Duration::from_secs(5), stream.next())
        .await
        .expect("stream ends when the server drains");
    assert!(!matches!(end, Some(Ok(_))), "{end:?}");
}

ordermesh::backend_tests!(
    orders_are_placed_with_totals_and_replayed_by_key,
    bad_input_is_refused_with_the_field_named,
    orders_are_listed_newest_first_with_filters_and_pages,
    the_status_machine_holds_under_concurrent_writers,
    watch_order_streams_changes_and_ends_at_a_final_status,
    health_serves_and_shutdown_ends_watch_streams,
);
