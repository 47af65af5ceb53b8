//! Shipments: created once per key and per order, moved through their life cycle, listed.

use super::*;

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

ordermesh::backend_tests!(
    shipments_are_created_idempotently_with_one_live_per_order,
    concurrent_creates_for_one_order_yield_one_shipment,
    a_shipment_moves_through_its_life_cycle_to_delivery,
    concurrent_scans_move_a_shipment_once,
    shipments_are_listed_in_pages_and_by_order,
);
