//! Reservations and adjustments: never oversold, committed, released, replayed, expired.

use super::*;

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
    assert_eq!(
        release_after_commit.message(),
        "reservation 'o-1' is COMMITTED; cannot release",
        "the refusal names the reservation"
    );

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
    assert_eq!(
        commit_after_release.message(),
        "reservation 'o-2' is RELEASED; cannot commit"
    );
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

ordermesh::backend_tests!(
    concurrent_reservations_never_oversell,
    reservations_commit_release_and_replay,
    reservations_expire,
    adjustments_never_go_below_reserved,
);
