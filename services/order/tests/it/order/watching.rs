//! Watch streams: changes until a final status, ended by shutdown.

use super::*;

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
    watch_order_streams_changes_and_ends_at_a_final_status,
    health_serves_and_shutdown_ends_watch_streams,
);
