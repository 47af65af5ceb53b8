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

async fn shipments_are_created_idempotently_with_one_live_per_order(backend: Backend) {
    let mut h = start(backend).await;
    let c = &mut h.client;
    let first = create(c, "o-1", "saga-1/ship").await;
    assert!(
        first.shipment_id.starts_with("shp_"),
        "{}",
        first.shipment_id
    );
    assert_eq!(first.shipment_id.len(), 4 + 32);
    assert_eq!(first.order_id, "o-1");
    assert_eq!(first.status, S::Pending as i32);
    assert_eq!(first.tracking_number.len(), 14);
    assert!(first.tracking_number.starts_with("OM"));
    assert!(first.tracking_number[2..]
        .chars()
        .all(|ch| ch.is_ascii_digit() || ch.is_ascii_uppercase()));
    assert_eq!(first.address, address("US"));
    assert_eq!(first.items, items(&[("SKU-B", 2), ("SKU-A", 1)]));
    let cost = first.cost.clone().unwrap();
    assert_eq!(
        (cost.currency_code.as_str(), cost.amount_minor),
        ("USD", 949)
    );
    assert!(first.create_time.is_some());
    assert_eq!(get(c, &first.shipment_id).await, first);

    // The same key and request replay the first reply.
    let again = create(c, "o-1", "saga-1/ship").await;
    assert_eq!(again, first);
    // The same key with another request is refused.
    let mut other = create_req("o-1", "saga-1/ship");
    other.items = items(&[("SKU-A", 5)]);
    let conflict = c.create_shipment(other).await.unwrap_err();
    assert_eq!(conflict.code(), Code::AlreadyExists);
    assert!(
        conflict.message().contains("idempotency_key"),
        "{}",
        conflict.message()
    );
    // Another key for an order with a live shipment is refused, naming the order.
    let second = c
        .create_shipment(create_req("o-1", "saga-1/ship-again"))
        .await
        .unwrap_err();
    assert_eq!(second.code(), Code::AlreadyExists);
    assert!(second.message().contains("'o-1'"), "{}", second.message());
    // Other orders are independent.
    let o2 = create(c, "o-2", "saga-2/ship").await;
    assert_ne!(o2.shipment_id, first.shipment_id);
    assert_ne!(o2.tracking_number, first.tracking_number);

    // Cancelling frees the order; cancelling again is a no-op.
    let cancelled = cancel(c, &first.shipment_id, "saga-1/cancel", "customer asked")
        .await
        .unwrap();
    assert_eq!(cancelled.status, S::Cancelled as i32);
    assert_eq!(cancelled.shipment_id, first.shipment_id);
    let replay = cancel(c, &first.shipment_id, "saga-1/cancel", "customer asked")
        .await
        .unwrap();
    assert_eq!(replay, cancelled);
    let twice = cancel(c, &first.shipment_id, "saga-1/cancel-2", "")
        .await
        .unwrap();
    assert_eq!(twice.status, S::Cancelled as i32);
    assert_eq!(twice.update_time, cancelled.update_time, "nothing changed");
    assert_eq!(get(c, &first.shipment_id).await.status, S::Cancelled as i32);

    let renewed = create(c, "o-1", "saga-1/ship-again").await;
    assert_ne!(renewed.shipment_id, first.shipment_id);
    assert_eq!(renewed.status, S::Pending as i32);
    // ...and the new one is the order's live shipment again.
    let third = c
        .create_shipment(create_req("o-1", "saga-1/ship-third"))
        .await
        .unwrap_err();
    assert_eq!(third.code(), Code::AlreadyExists);
    // The original key still replays its original reply.
    assert_eq!(create(c, "o-1", "saga-1/ship").await, first);

    let listed = c
        .list_shipments(pb::ListShipmentsRequest {
            order_id: "o-1".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let statuses: Vec<i32> = listed.shipments.iter().map(|s| s.status).collect();
    assert_eq!(statuses, [S::Cancelled as i32, S::Pending as i32]);

    let missing = c
        .get_shipment(pb::GetShipmentRequest {
            shipment_id: "shp_missing".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);
    let missing = cancel(c, "shp_missing", "k-missing", "").await.unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);
}

async fn concurrent_creates_for_one_order_yield_one_shipment(backend: Backend) {
    let mut h = start(backend).await;
    let mut tasks = vec![];
    for n in 0..8 {
        let mut c = h.client.clone();
        tasks.push(tokio::spawn(async move {
            c.create_shipment(create_req("o-race", &format!("key-{n}")))
                .await
        }));
    }
    let mut ok = vec![];
    for t in tasks {
        match t.await.unwrap() {
            Ok(r) => ok.push(r.into_inner().shipment.unwrap()),
            Err(e) => assert_eq!(e.code(), Code::AlreadyExists, "{e:?}"),
        }
    }
    assert_eq!(ok.len(), 1, "exactly one create wins: {ok:?}");
    let listed = h
        .client
        .list_shipments(pb::ListShipmentsRequest {
            order_id: "o-race".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.shipments, ok);

    // Concurrent repeats of one key all get the one shipment.
    let mut tasks = vec![];
    for _ in 0..8 {
        let mut c = h.client.clone();
        tasks.push(tokio::spawn(async move {
            c.create_shipment(create_req("o-same-key", "one-key")).await
        }));
    }
    let mut ids = std::collections::BTreeSet::new();
    for t in tasks {
        let s = t.await.unwrap().expect("same key replays").into_inner();
        ids.insert(s.shipment.unwrap().shipment_id);
    }
    assert_eq!(ids.len(), 1, "{ids:?}");
}

async fn a_shipment_moves_through_its_life_cycle_to_delivery(backend: Backend) {
    let mut h = start(backend).await;
    let c = &mut h.client;
    let s = create(c, "o-life", "k-life").await;
    let id = s.shipment_id.clone();

    let skip = record(c, &id, S::PickedUp).await.unwrap_err();
    assert_eq!(skip.code(), Code::FailedPrecondition);
    assert_eq!(
        skip.message(),
        format!("shipment '{id}' is PENDING; cannot move to PICKED_UP")
    );
    let labelled = record(c, &id, S::LabelCreated).await.unwrap();
    assert_eq!(labelled.status, S::LabelCreated as i32);
    let again = record(c, &id, S::LabelCreated).await.unwrap_err();
    assert_eq!(again.code(), Code::FailedPrecondition);
    let picked = record(c, &id, S::PickedUp).await.unwrap();
    assert_eq!(picked.status, S::PickedUp as i32);

    let late_cancel = cancel(c, &id, "k-cancel", "too late").await.unwrap_err();
    assert_eq!(late_cancel.code(), Code::FailedPrecondition);
    assert!(
        late_cancel.message().contains("PICKED_UP"),
        "{}",
        late_cancel.message()
    );
    // The refused cancel did not burn its key nor change the shipment.
    assert_eq!(get(c, &id).await.status, S::PickedUp as i32);

    let backwards = record(c, &id, S::LabelCreated).await.unwrap_err();
    assert_eq!(backwards.code(), Code::FailedPrecondition);
    for status in [S::InTransit, S::OutForDelivery, S::Delivered] {
        let moved = record(c, &id, status).await.unwrap();
        assert_eq!(moved.status, status as i32);
    }
    let delivered = get(c, &id).await;
    assert_eq!(delivered.status, S::Delivered as i32);
    let (created, updated) = (
        delivered.create_time.unwrap(),
        delivered.update_time.unwrap(),
    );
    assert!((updated.seconds, updated.nanos) > (created.seconds, created.nanos));
    let after = record(c, &id, S::Delivered).await.unwrap_err();
    assert_eq!(after.code(), Code::FailedPrecondition);
    let cancel_delivered = cancel(c, &id, "k-cancel", "").await.unwrap_err();
    assert_eq!(cancel_delivered.code(), Code::FailedPrecondition);
    // A delivered shipment still belongs to its order.
    let renew = c
        .create_shipment(create_req("o-life", "k-life-2"))
        .await
        .unwrap_err();
    assert_eq!(renew.code(), Code::AlreadyExists);

    // The history of a delivered shipment is every step, then the stream ends.
    let mut stream = track(c, &id).await;
    let mut history = vec![];
    for _ in 0..6 {
        history.push(next_event(&mut stream).await);
    }
    assert_ends(&mut stream).await;
    let statuses: Vec<i32> = history.iter().map(|e| e.status).collect();
    assert_eq!(
        statuses,
        [
            S::Pending,
            S::LabelCreated,
            S::PickedUp,
            S::InTransit,
            S::OutForDelivery,
            S::Delivered
        ]
        .map(|s| s as i32)
    );
    assert_eq!(history[0].note, "shipment created");
    assert_eq!(history[5].location, "hub for SHIPMENT_STATUS_DELIVERED");
    assert!(history
        .iter()
        .all(|e| e.shipment_id == id && e.occur_time.is_some()));

    let missing = record(c, "shp_missing", S::LabelCreated).await.unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);
}

async fn concurrent_scans_move_a_shipment_once(backend: Backend) {
    let mut h = start(backend).await;
    let s = create(&mut h.client, "o-scan", "k-scan").await;
    let mut tasks = vec![];
    for _ in 0..6 {
        let mut c = h.client.clone();
        let id = s.shipment_id.clone();
        tasks.push(tokio::spawn(async move {
            record(&mut c, &id, S::LabelCreated).await
        }));
    }
    let mut ok = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(_) => ok += 1,
            Err(e) => assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}"),
        }
    }
    assert_eq!(ok, 1);
    let mut stream = track(&mut h.client, &s.shipment_id).await;
    assert_eq!(next_event(&mut stream).await.status, S::Pending as i32);
    assert_eq!(next_event(&mut stream).await.status, S::LabelCreated as i32);
    // No third event: a cancel is the next thing the stream shows.
    cancel(&mut h.client, &s.shipment_id, "k-scan-cancel", "")
        .await
        .unwrap();
    let last = next_event(&mut stream).await;
    assert_eq!(
        (last.status, last.note.as_str()),
        (S::Cancelled as i32, "cancelled")
    );
    assert_ends(&mut stream).await;
}

async fn shipments_are_listed_in_pages_and_by_order(backend: Backend) {
    let mut h = start(backend).await;
    let c = &mut h.client;
    let mut created = vec![];
    for order in ["o-a", "o-b", "o-c", "o-d"] {
        created.push(create(c, order, &format!("{order}/ship")).await.shipment_id);
    }
    cancel(c, &created[0], "o-a/cancel", "").await.unwrap();
    created.push(create(c, "o-a", "o-a/ship-2").await.shipment_id);

    let mut seen = vec![];
    let mut token = String::new();
    let mut pages = 0;
    loop {
        let page = c
            .list_shipments(pb::ListShipmentsRequest {
                page_size: 2,
                page_token: token,
                order_id: String::new(),
            })
            .await
            .unwrap()
            .into_inner();
        assert!(page.shipments.len() <= 2);
        pages += 1;
        seen.extend(page.shipments.into_iter().map(|s| s.shipment_id));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(pages, 3);
    assert_eq!(seen, created, "in create order");

    let first = c
        .list_shipments(pb::ListShipmentsRequest {
            page_size: 1,
            order_id: "o-a".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(first.shipments.len(), 1);
    assert_eq!(first.shipments[0].shipment_id, created[0]);
    assert_eq!(first.shipments[0].status, S::Cancelled as i32);
    let second = c
        .list_shipments(pb::ListShipmentsRequest {
            page_size: 1,
            order_id: "o-a".into(),
            page_token: first.next_page_token.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(second.shipments.len(), 1);
    assert_eq!(second.shipments[0].shipment_id, created[4]);
    assert!(second.next_page_token.is_empty());
    // A token minted for one order's list is refused for another's.
    let mismatched = c
        .list_shipments(pb::ListShipmentsRequest {
            page_size: 1,
            order_id: "o-b".into(),
            page_token: first.next_page_token,
        })
        .await;
    assert_invalid(mismatched, "page_token");
    let none = c
        .list_shipments(pb::ListShipmentsRequest {
            order_id: "o-none".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(none.shipments.is_empty() && none.next_page_token.is_empty());
}

async fn tracking_streams_history_then_live_events_and_ends_after_delivery(backend: Backend) {
    let mut h = start(backend).await;
    let s = create(&mut h.client, "o-track", "k-track").await;
    let other = create(&mut h.client, "o-other", "k-other").await;
    let id = s.shipment_id.clone();
    record(&mut h.client, &id, S::LabelCreated).await.unwrap();

    let mut stream = track(&mut h.client, &id).await;
    let e = next_event(&mut stream).await;
    assert_eq!(
        (e.status, e.note.as_str()),
        (S::Pending as i32, "shipment created")
    );
    let e = next_event(&mut stream).await;
    assert_eq!(e.status, S::LabelCreated as i32);
    assert_eq!(h.feed.active_trackers(), 1);

    // Events of other shipments are not sent.
    record(&mut h.client, &other.shipment_id, S::LabelCreated)
        .await
        .unwrap();
    for status in [S::PickedUp, S::InTransit, S::OutForDelivery] {
        record(&mut h.client, &id, status).await.unwrap();
        let e = next_event(&mut stream).await;
        assert_eq!(
            (e.shipment_id.as_str(), e.status),
            (id.as_str(), status as i32)
        );
        assert_eq!(e.location, format!("hub for {}", status.as_str_name()));
    }
    h.client
        .record_tracking_event(pb::RecordTrackingEventRequest {
            shipment_id: id.clone(),
            status: S::Delivered as i32,
            location: "front door".into(),
            note: "left with neighbour".into(),
        })
        .await
        .unwrap();
    let e = next_event(&mut stream).await;
    assert_eq!(
        (e.status, e.location.as_str(), e.note.as_str()),
        (S::Delivered as i32, "front door", "left with neighbour")
    );
    assert_ends(&mut stream).await;
    assert!(
        eventually(Duration::from_secs(5), || async {
            h.feed.active_trackers() == 0
        })
        .await
    );

    // A cancelled shipment's stream ends after the cancellation.
    let mut stream = track(&mut h.client, &other.shipment_id).await;
    assert_eq!(next_event(&mut stream).await.status, S::Pending as i32);
    assert_eq!(next_event(&mut stream).await.status, S::LabelCreated as i32);
    cancel(
        &mut h.client,
        &other.shipment_id,
        "k-other-cancel",
        "address unreachable",
    )
    .await
    .unwrap();
    let e = next_event(&mut stream).await;
    assert_eq!(
        (e.status, e.note.as_str()),
        (S::Cancelled as i32, "address unreachable")
    );
    assert_ends(&mut stream).await;

    let unknown = h
        .client
        .track_shipment(pb::TrackShipmentRequest {
            shipment_id: "shp_nope".into(),
        })
        .await;
    assert_eq!(unknown.err().map(|e| e.code()), Some(Code::NotFound));
}

async fn a_tracking_client_that_leaves_is_released(backend: Backend) {
    let mut h = start(backend).await;
    let s = create(&mut h.client, "o-drop", "k-drop").await;
    let mut stream = track(&mut h.client, &s.shipment_id).await;
    assert_eq!(next_event(&mut stream).await.status, S::Pending as i32);
    let mut second = track(&mut h.client, &s.shipment_id).await;
    assert_eq!(next_event(&mut second).await.status, S::Pending as i32);
    assert_eq!(h.feed.active_trackers(), 2);

    // The client goes away mid-stream: the server side ends.
    drop(stream);
    assert!(
        eventually(Duration::from_secs(5), || async {
            h.feed.active_trackers() == 1
        })
        .await,
        "the dropped tracker is released"
    );
    // The other tracker still follows the shipment.
    record(&mut h.client, &s.shipment_id, S::LabelCreated)
        .await
        .unwrap();
    assert_eq!(next_event(&mut second).await.status, S::LabelCreated as i32);
    drop(second);
    assert!(
        eventually(Duration::from_secs(5), || async {
            h.feed.active_trackers() == 0
        })
        .await
    );
}

async fn health_serves_and_shutdown_ends_tracking_streams(backend: Backend) {
    let mut h = start(backend).await;
    for service in ["", shipping_service::GRPC_SERVICE] {
        let status = health_status(&h.server.uri(), service).await.unwrap();
        assert_eq!(status, SERVING, "health of {service:?}");
    }
    let s = create(&mut h.client, "o-health", "k-health").await;
    let mut stream = track(&mut h.client, &s.shipment_id).await;
    next_event(&mut stream).await;
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
    assert!(
        eventually(Duration::from_secs(2), || async {
            h.feed.active_trackers() == 0
        })
        .await
    );
}

ordermesh::backend_tests!(
    quotes_are_priced_by_destination_and_currency,
    bad_input_is_refused_with_the_field_named,
    shipments_are_created_idempotently_with_one_live_per_order,
    concurrent_creates_for_one_order_yield_one_shipment,
    a_shipment_moves_through_its_life_cycle_to_delivery,
    concurrent_scans_move_a_shipment_once,
    shipments_are_listed_in_pages_and_by_order,
    tracking_streams_history_then_live_events_and_ends_after_delivery,
    a_tracking_client_that_leaves_is_released,
    health_serves_and_shutdown_ends_tracking_streams,
);
