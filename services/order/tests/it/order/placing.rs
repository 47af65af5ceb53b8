//! Placing orders: totals, replay by key, and the requests the order service refuses.

use super::*;

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
            ..Default::default()
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
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(bad_request_field(&e), "order_id");
    let e = c
        .get_order(pb::GetOrderRequest {
            order_id: "ord_missing".into(),
            ..Default::default()
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

ordermesh::backend_tests!(
    orders_are_placed_with_totals_and_replayed_by_key,
    bad_input_is_refused_with_the_field_named,
);
