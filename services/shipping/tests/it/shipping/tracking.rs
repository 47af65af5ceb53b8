//! Tracking streams: history then live events, released clients, ended by shutdown.

use super::*;

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
    tracking_streams_history_then_live_events_and_ends_after_delivery,
    a_tracking_client_that_leaves_is_released,
    health_serves_and_shutdown_ends_tracking_streams,
);
