//! Quotes, and the requests shipping refuses (each names the bad field).

use super::*;

async fn quotes_are_priced_by_destination_and_currency(backend: Backend) {
    let mut h = start(backend).await;
    let c = &mut h.client;
    // US: 499 + 150 per unit, 3 days; currency defaults to USD.
    let q = quote(c, "US", &[("A", 2), ("B", 1)], "").await.unwrap();
    assert_eq!(cost(&q), ("USD", 499 + 3 * 150, 3));
    // Elsewhere: 1499 + 350 per unit, 7 days.
    let q = quote(c, "DE", &[("A", 2), ("B", 1)], "USD").await.unwrap();
    assert_eq!(cost(&q), ("USD", 1499 + 3 * 350, 7));
    // The same numbers in the minor units of EUR and GBP.
    let q = quote(c, "FR", &[("A", 1)], "EUR").await.unwrap();
    assert_eq!(cost(&q), ("EUR", 1849, 7));
    let q = quote(c, "US", &[("A", 10)], "GBP").await.unwrap();
    assert_eq!(cost(&q), ("GBP", 1999, 3));
    // The largest order still prices without overflow.
    let big: Vec<(String, i32)> = (0..100).map(|i| (format!("S{i}"), 1_000_000)).collect();
    let big: Vec<(&str, i32)> = big.iter().map(|(s, q)| (s.as_str(), *q)).collect();
    let q = quote(c, "JP", &big, "").await.unwrap();
    assert_eq!(cost(&q), ("USD", 1499 + 100_000_000 * 350, 7));

    let jpy = quote(c, "US", &[("A", 1)], "JPY").await.unwrap_err();
    assert_eq!(jpy.code(), Code::InvalidArgument);
    assert_eq!(
        jpy.message(),
        "currency_code: shipping is priced in USD, EUR or GBP"
    );
    let unknown = quote(c, "US", &[("A", 1)], "XXX").await.unwrap_err();
    assert_eq!(unknown.code(), Code::InvalidArgument);
    assert!(
        unknown.message().starts_with("currency_code:") && unknown.message().contains("'XXX'"),
        "{}",
        unknown.message()
    );
    assert_invalid(quote(c, "US", &[("A", 1)], "usd").await, "currency_code");

    // A shipment costs what its quote said.
    let mut req = create_req("o-quote", "k-quote");
    req.address = address("GB");
    req.currency_code = "GBP".into();
    let s = c
        .create_shipment(req)
        .await
        .unwrap()
        .into_inner()
        .shipment
        .unwrap();
    let cost = s.cost.unwrap();
    assert_eq!(
        (cost.currency_code.as_str(), cost.amount_minor),
        ("GBP", 1499 + 3 * 350)
    );
}

async fn bad_input_is_refused_with_the_field_named(backend: Backend) {
    let mut h = start(backend).await;
    let c = &mut h.client;
    assert_invalid(c.create_shipment(create_req("", "k")).await, "order_id");
    assert_invalid(c.create_shipment(create_req("a b", "k")).await, "order_id");
    assert_invalid(
        c.create_shipment(create_req("o-1", "")).await,
        "idempotency_key",
    );
    let mut req = create_req("o-1", "k");
    req.items = items(&[("A", -2)]);
    assert_invalid(c.create_shipment(req.clone()).await, "items[0].quantity");
    req.items = items(&[("A", 1), ("B", 0)]);
    assert_invalid(c.create_shipment(req.clone()).await, "items[1].quantity");
    req.items = items(&[("A", 1), ("B", 1_000_001)]);
    assert_invalid(c.create_shipment(req.clone()).await, "items[1].quantity");
    req.items = items(&[("A", 1), ("A", 1)]);
    assert_invalid(c.create_shipment(req.clone()).await, "items[1].sku");
    req.items = items(&[("A", 1), ("no spaces", 1)]);
    assert_invalid(c.create_shipment(req.clone()).await, "items[1].sku");
    req.items = vec![];
    assert_invalid(c.create_shipment(req.clone()).await, "items");
    req.items = (0..101)
        .map(|i| SkuQuantity {
            sku: format!("S{i}"),
            quantity: 1,
        })
        .collect();
    assert_invalid(c.create_shipment(req).await, "items");

    let mut req = create_req("o-1", "k");
    req.address = address("usa");
    assert_invalid(c.create_shipment(req.clone()).await, "address.country_code");
    req.address = address("us");
    assert_invalid(c.create_shipment(req.clone()).await, "address.country_code");
    req.address = None;
    assert_invalid(c.create_shipment(req.clone()).await, "address");
    let mut a = address("US").unwrap();
    a.city = "   ".into();
    req.address = Some(a);
    assert_invalid(c.create_shipment(req.clone()).await, "address.city");
    let mut a = address("US").unwrap();
    a.recipient = "x".repeat(201);
    req.address = Some(a);
    assert_invalid(c.create_shipment(req.clone()).await, "address.recipient");
    let mut a = address("US").unwrap();
    a.postal_code = String::new();
    req.address = Some(a);
    assert_invalid(c.create_shipment(req).await, "address.postal_code");
    let mut req = create_req("o-1", "k");
    req.currency_code = "JPY".into();
    assert_invalid(c.create_shipment(req).await, "currency_code");

    assert_invalid(
        c.list_shipments(pb::ListShipmentsRequest {
            page_size: 101,
            ..Default::default()
        })
        .await,
        "page_size",
    );
    assert_invalid(
        c.list_shipments(pb::ListShipmentsRequest {
            page_size: -1,
            ..Default::default()
        })
        .await,
        "page_size",
    );
    assert_invalid(
        c.list_shipments(pb::ListShipmentsRequest {
            order_id: "not valid!".into(),
            ..Default::default()
        })
        .await,
        "order_id",
    );
    assert_invalid(
        c.list_shipments(pb::ListShipmentsRequest {
            page_token: "garbage".into(),
            ..Default::default()
        })
        .await,
        "page_token",
    );
    assert_invalid(
        c.get_shipment(pb::GetShipmentRequest {
            shipment_id: String::new(),
        })
        .await,
        "shipment_id",
    );
    assert_invalid(
        c.track_shipment(pb::TrackShipmentRequest {
            shipment_id: String::new(),
        })
        .await
        .map(|_| ()),
        "shipment_id",
    );

    // Nothing above created a shipment.
    let all = c
        .list_shipments(pb::ListShipmentsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(all.shipments.is_empty(), "{:?}", all.shipments);

    let s = create(c, "o-1", "k").await;
    for status in [S::Unspecified, S::Cancelled] {
        assert_invalid(record(c, &s.shipment_id, status).await, "status");
    }
    let unknown_status = c
        .record_tracking_event(pb::RecordTrackingEventRequest {
            shipment_id: s.shipment_id.clone(),
            status: 42,
            ..Default::default()
        })
        .await;
    assert_invalid(unknown_status, "status");
    let long_note = c
        .record_tracking_event(pb::RecordTrackingEventRequest {
            shipment_id: s.shipment_id.clone(),
            status: S::LabelCreated as i32,
            location: String::new(),
            note: "n".repeat(201),
        })
        .await;
    assert_invalid(long_note, "note");
    let long_location = c
        .record_tracking_event(pb::RecordTrackingEventRequest {
            shipment_id: s.shipment_id.clone(),
            status: S::LabelCreated as i32,
            location: "l".repeat(201),
            note: String::new(),
        })
        .await;
    assert_invalid(long_location, "location");
    assert_invalid(
        cancel(c, &s.shipment_id, "c", &"r".repeat(201)).await,
        "reason",
    );
    assert_invalid(cancel(c, &s.shipment_id, "", "").await, "idempotency_key");
    // The shipment did not move.
    assert_eq!(get(c, &s.shipment_id).await.status, S::Pending as i32);
}

ordermesh::backend_tests!(
    quotes_are_priced_by_destination_and_currency,
    bad_input_is_refused_with_the_field_named,
);
