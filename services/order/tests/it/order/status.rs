//! Listing orders, and the status machine under concurrent writers.

use super::*;

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
            ..Default::default()
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

ordermesh::backend_tests!(
    orders_are_listed_newest_first_with_filters_and_pages,
    the_status_machine_holds_under_concurrent_writers,
);
