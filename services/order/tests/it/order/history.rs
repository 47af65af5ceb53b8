//! The event-sourced order: its history as events, the order as of a version or a time,
//! replaying streams against what the service holds, the read models (waiting for a
//! position, stats, a rebuild while serving) and concurrent commands on one order.

use super::*;

async fn events_of(c: &mut OrderServiceClient<Channel>, id: &str) -> Vec<pb::OrderEvent> {
    c.list_order_events(pb::ListOrderEventsRequest {
        order_id: id.into(),
        ..Default::default()
    })
    .await
    .expect("list events")
    .into_inner()
    .events
}

async fn get_as_of(
    c: &mut OrderServiceClient<Channel>,
    id: &str,
    version: i64,
    time: Option<prost_types::Timestamp>,
) -> Result<pb::Order, tonic::Status> {
    c.get_order(pb::GetOrderRequest {
        order_id: id.into(),
        as_of_version: version,
        as_of_time: time,
    })
    .await
    .map(|r| r.into_inner().order.expect("order"))
}

async fn an_order_is_its_events_and_can_be_read_as_it_was(backend: Backend) {
    let mut h = start(backend).await;
    let o = place(&mut h.client, "cust-h", "h1").await;
    let id = oid(&o.order_id);
    h.api
        .advance(&id, OrderStatus::Confirmed, "")
        .await
        .unwrap();
    h.api.advance(&id, OrderStatus::Shipped, "").await.unwrap();
    let events = events_of(&mut h.client, &o.order_id).await;
    let types: Vec<&str> = events.iter().map(|e| e.r#type.as_str()).collect();
    assert_eq!(types, ["OrderPlaced", "OrderConfirmed", "OrderShipped"]);
    assert_eq!(
        events.iter().map(|e| e.version).collect::<Vec<_>>(),
        [1, 2, 3]
    );
    assert!(events.windows(2).all(|w| w[0].position < w[1].position));
    assert_eq!(events[0].correlation_id, o.order_id);
    assert_eq!(events[0].schema_version, 2);
    let placed = events[0].payload.as_ref().expect("payload");
    assert!(placed.fields.contains_key("lines"), "{placed:?}");

    let v1 = get_as_of(&mut h.client, &o.order_id, 1, None)
        .await
        .unwrap();
    assert_eq!(status(&v1), pb::OrderStatus::Pending);
    assert_eq!(v1.version, 1);
    let v2 = get_as_of(&mut h.client, &o.order_id, 2, None)
        .await
        .unwrap();
    assert_eq!(status(&v2), pb::OrderStatus::Confirmed);
    let at = events[1].record_time;
    let then = get_as_of(&mut h.client, &o.order_id, 0, at).await.unwrap();
    assert_eq!(status(&then), pb::OrderStatus::Confirmed);
    let now = get_as_of(&mut h.client, &o.order_id, 0, None)
        .await
        .unwrap();
    assert_eq!(status(&now), pb::OrderStatus::Shipped);

    // Bad reads name what is wrong.
    let before = prost_types::Timestamp {
        seconds: o.create_time.as_ref().unwrap().seconds - 60,
        nanos: 0,
    };
    let e = get_as_of(&mut h.client, &o.order_id, 0, Some(before))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "{e:?}");
    let e = get_as_of(&mut h.client, &o.order_id, 9, None)
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert_eq!(bad_request_field(&e), "as_of_version");
    let e = get_as_of(&mut h.client, &o.order_id, -1, None)
        .await
        .unwrap_err();
    assert_eq!(bad_request_field(&e), "as_of_version");
    let unknown = OrderId::generate().into_string();
    let e = get_as_of(&mut h.client, &unknown, 1, None)
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    let e = h
        .client
        .list_order_events(pb::ListOrderEventsRequest {
            order_id: o.order_id.clone(),
            page_size: 5000,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(bad_request_field(&e), "page_size");
    let e = h
        .client
        .list_order_events(pb::ListOrderEventsRequest {
            order_id: unknown,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    // Pages follow the stream.
    let first = h
        .client
        .list_order_events(pb::ListOrderEventsRequest {
            order_id: o.order_id.clone(),
            page_size: 2,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(first.events.len(), 2);
    assert_eq!(first.next_after_version, 2);
}

/// Commands on many orders (from a fixed seed), then: every stream replayed from its first
/// event equals what GetOrder answers (snapshot + tail) and what ListOrders shows.
async fn replaying_every_stream_rebuilds_what_the_service_holds(backend: Backend) {
    let mut h = start_with(backend, 2).await;
    let mut ids = Vec::new();
    for i in 0..6 {
        ids.push(
            place(&mut h.client, &format!("cust-{}", i % 3), &format!("r{i}"))
                .await
                .order_id,
        );
    }
    let mut seed: u64 = 42;
    let mut next = || {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (seed >> 33) as usize
    };
    for _ in 0..30 {
        let id = &ids[next() % ids.len()];
        let to = OrderStatus::ALL[next() % OrderStatus::ALL.len()];
        // Moves the machine refuses are part of the test: they must leave nothing behind.
        let _ = h.api.advance(&oid(id), to, "seeded").await;
    }
    let listed = h
        .client
        .list_orders(pb::ListOrdersRequest {
            page_size: 100,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .orders;
    assert_eq!(listed.len(), ids.len());
    for id in &ids {
        let live = get_as_of(&mut h.client, id, 0, None).await.unwrap();
        let events = events_of(&mut h.client, id).await;
        let replayed = get_as_of(&mut h.client, id, events.len() as i64, None)
            .await
            .unwrap();
        assert_eq!(replayed, live, "{id}: replay differs from the live order");
        let mut in_list = listed.iter().find(|o| &o.order_id == id).unwrap().clone();
        let mut expected = live.clone();
        expected.saga_steps.clear();
        in_list.saga_steps.clear();
        assert_eq!(
            in_list, expected,
            "{id}: the summary differs from the order"
        );
    }
}

/// Commands racing on one order: every version of its stream has exactly one event, and the
/// order moved only along its machine.
async fn concurrent_commands_on_one_order_have_one_winner_per_version(backend: Backend) {
    let h = start(backend).await;
    let mut c = h.client.clone();
    let o = place(&mut c, "cust-r", "race").await;
    let mut tasks = Vec::new();
    for i in 0..12 {
        let api = h.api.clone();
        let mut c = c.clone();
        let id = o.order_id.clone();
        tasks.push(tokio::spawn(async move {
            if i % 2 == 0 {
                api.advance(&oid(&id), OrderStatus::Confirmed, "")
                    .await
                    .map(|_| ())
            } else {
                c.cancel_order(pb::CancelOrderRequest {
                    order_id: id,
                    reason: format!("cancel {i}"),
                })
                .await
                .map(|_| ())
            }
        }));
    }
    for t in tasks {
        let r = t.await.unwrap();
        if let Err(e) = r {
            assert!(
                matches!(e.code(), Code::FailedPrecondition | Code::Aborted),
                "{e:?}"
            );
        }
    }
    let events = events_of(&mut c, &o.order_id).await;
    let versions: Vec<i64> = events.iter().map(|e| e.version).collect();
    assert_eq!(versions, (1..=events.len() as i64).collect::<Vec<_>>());
    let count = |t: &str| events.iter().filter(|e| e.r#type == t).count();
    assert!(
        count("OrderConfirmed") <= 1 && count("OrderCancelled") == 1,
        "{events:?}"
    );
}

async fn lists_wait_for_a_position_and_stats_aggregate_orders(backend: Backend) {
    let mut h = start(backend).await;
    let a = place(&mut h.client, "cust-s", "s1").await;
    let b = place(&mut h.client, "cust-s", "s2").await;
    let _pending = place(&mut h.client, "cust-s", "s3").await;
    h.api
        .advance(&oid(&a.order_id), OrderStatus::Confirmed, "")
        .await
        .unwrap();
    h.api
        .advance(&oid(&b.order_id), OrderStatus::Rejected, "payment declined")
        .await
        .unwrap();
    let cancelled = h
        .client
        .cancel_order(pb::CancelOrderRequest {
            order_id: a.order_id.clone(),
            reason: "changed my mind".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(cancelled.position > 0);
    let listed = h
        .client
        .list_orders(pb::ListOrdersRequest {
            min_position: cancelled.position,
            statuses: vec![pb::OrderStatus::Cancelled as i32],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .orders;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].order_id, a.order_id);
    let e = h
        .client
        .list_orders(pb::ListOrdersRequest {
            min_position: cancelled.position + 1000,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(bad_request_field(&e), "min_position");

    let stats = h
        .client
        .get_order_stats(pb::GetOrderStatsRequest::default())
        .await
        .unwrap()
        .into_inner();
    let by_status = |s: pb::OrderStatus| {
        stats
            .days
            .iter()
            .filter(|d| d.status == s as i32)
            .map(|d| (d.orders, d.revenue.as_ref().unwrap().amount_minor))
            .fold((0, 0), |acc, x| (acc.0 + x.0, acc.1 + x.1))
    };
    assert_eq!(by_status(pb::OrderStatus::Pending), (1, 3998));
    assert_eq!(by_status(pb::OrderStatus::Cancelled), (1, 3998));
    assert_eq!(by_status(pb::OrderStatus::Rejected), (1, 3998));
    assert_eq!(stats.rejection_reasons.len(), 1);
    assert_eq!(stats.rejection_reasons[0].reason, "payment declined");
    // Top SKUs count sold orders only: none is confirmed any more.
    assert!(stats.top_skus.is_empty(), "{:?}", stats.top_skus);
    let e = h
        .client
        .get_order_stats(pb::GetOrderStatsRequest {
            from: Some(prost_types::Timestamp {
                seconds: 100,
                nanos: 0,
            }),
            to: Some(prost_types::Timestamp {
                seconds: 50,
                nanos: 0,
            }),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(bad_request_field(&e), "to");
}

/// `order projections rebuild` while the service serves: the rebuilt model equals the live
/// one it replaces, and the live runner carries on from where the rebuild got.
async fn a_rebuilt_projection_equals_the_live_one(backend: Backend) {
    let mut h = start(backend).await;
    for i in 0..5 {
        let o = place(&mut h.client, "cust-b", &format!("b{i}")).await;
        if i % 2 == 0 {
            h.api
                .advance(&oid(&o.order_id), OrderStatus::Confirmed, "")
                .await
                .unwrap();
        }
    }
    let list = |mut c: OrderServiceClient<Channel>| async move {
        c.list_orders(pb::ListOrdersRequest {
            page_size: 100,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .orders
    };
    let stats = |mut c: OrderServiceClient<Channel>| async move {
        c.get_order_stats(pb::GetOrderStatsRequest::default())
            .await
            .unwrap()
            .into_inner()
    };
    let live = list(h.client.clone()).await;
    let live_stats = stats(h.client.clone()).await;
    let projector = h.api.orders().projector().clone();
    for name in ["order_summaries", "order_stats"] {
        let mut reports = Vec::new();
        let applied = projector
            .rebuild(name, |at, head| reports.push((at, head)))
            .await
            .expect("rebuild");
        assert!(applied >= 8, "{name}: {applied}");
        assert!(
            reports.last().is_some_and(|(at, head)| at >= head),
            "{reports:?}"
        );
    }
    assert_eq!(list(h.client.clone()).await, live);
    let mut rebuilt = stats(h.client.clone()).await;
    rebuilt.position = live_stats.position;
    assert_eq!(rebuilt, live_stats);
    // Writes after the swap reach the rebuilt model.
    place(&mut h.client, "cust-b", "after").await;
    assert_eq!(list(h.client.clone()).await.len(), live.len() + 1);
    let e = projector.rebuild("nope", |_, _| {}).await.unwrap_err();
    assert!(e.contains("order_stats, order_summaries"), "{e}");
}

/// An event the summaries cannot apply (a malformed `OrderPlaced`) stops that projection
/// there: reads that need it say so, naming the event; reads of what came before, and the
/// write model, go on.
async fn a_projection_stops_at_an_event_it_cannot_apply(backend: Backend) {
    use ordermesh::data::event_store::{self as es, Expected, Metadata, NewEvent};
    use sea_orm::TransactionTrait;
    let mut h = start(backend).await;
    let good = h
        .client
        .place_order(place_req("cust-f", "f1", vec![line("SKU-1", 1, 100)]))
        .await
        .unwrap()
        .into_inner();
    let db = h.api.orders().db().clone();
    let txn = db.begin().await.unwrap();
    let bad = NewEvent::new("OrderPlaced", 2, serde_json::json!({ "customer": 7 }));
    es::append(
        &txn,
        "ord_broken",
        Expected::NoStream,
        &[bad],
        &Metadata::default(),
    )
    .await
    .unwrap();
    txn.commit().await.unwrap();
    let events = es::read_all(&db, 0, 100, &[], &order_service::aggregate::upcasters())
        .await
        .unwrap();
    let broken = events.iter().find(|e| e.stream_id == "ord_broken").unwrap();
    let e = h
        .client
        .list_orders(pb::ListOrdersRequest::default())
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unavailable, "{e:?}");
    assert!(e.message().contains(&broken.event_id), "{}", e.message());
    let failed = ordermesh::telemetry::metrics::PROJECTION_FAILED
        .with_label_values(&["order_summaries"])
        .get();
    assert_eq!(failed, 1);
    // The health names the stopped model; the service itself serves.
    let health = |name: &'static str| {
        let uri = h.server.uri();
        async move { health_status(&uri, name).await.unwrap() }
    };
    assert!(
        eventually(Duration::from_secs(5), || async {
            health("projection:order_summaries").await != SERVING
        })
        .await
    );
    assert_eq!(health("ordermesh.order.v1.OrderService").await, SERVING);
    // What came before the bad event is served; the order itself is fine.
    let before = h
        .client
        .list_orders(pb::ListOrdersRequest {
            min_position: good.position,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(before.orders.len(), 1);
    let order_id = good.order.unwrap().order_id;
    assert!(get_as_of(&mut h.client, &order_id, 0, None).await.is_ok());
}

ordermesh::backend_tests!(
    a_projection_stops_at_an_event_it_cannot_apply,
    an_order_is_its_events_and_can_be_read_as_it_was,
    replaying_every_stream_rebuilds_what_the_service_holds,
    concurrent_commands_on_one_order_have_one_winner_per_version,
    lists_wait_for_a_position_and_stats_aggregate_orders,
    a_rebuilt_projection_equals_the_live_one,
);
