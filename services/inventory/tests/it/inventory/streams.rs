//! The stock streams: watch (server), import (client) and sync (bidirectional).

use super::*;

async fn watch_stock_streams_changes_and_frees_a_dropped_client(backend: Backend) {
    let mut h = start(backend).await;
    create(&mut h.client, "W", 10).await;
    create(&mut h.client, "OTHER", 10).await;
    let mut stream = h
        .client
        .watch_stock(pb::WatchStockRequest {
            skus: vec!["W".into()],
        })
        .await
        .unwrap()
        .into_inner();
    let first = stream.next().await.unwrap().unwrap().stock_level.unwrap();
    assert_eq!((first.sku.as_str(), first.available), ("W", 10));
    assert_eq!(h.feed.active_watchers(), 1);

    h.client
        .adjust_stock(pb::AdjustStockRequest {
            sku: "OTHER".into(),
            delta: 1,
            reason: "".into(),
        })
        .await
        .unwrap();
    h.client
        .adjust_stock(pb::AdjustStockRequest {
            sku: "W".into(),
            delta: 5,
            reason: "".into(),
        })
        .await
        .unwrap();
    let next = tokio::time::timeout(Duration::from_secs(5), stream.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let level = next.stock_level.unwrap();
    assert_eq!(
        (level.sku.as_str(), level.on_hand),
        ("W", 15),
        "changes of other SKUs are filtered out"
    );

    h.client
        .reserve_stock(reserve_req("o", "k", &[("W", 4)]))
        .await
        .unwrap();
    let next = tokio::time::timeout(Duration::from_secs(5), stream.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let level = next.stock_level.unwrap();
    assert_eq!((level.reserved, level.available), (4, 11));

    // The client goes away mid-stream: the server side ends.
    drop(stream);
    assert!(
        eventually(Duration::from_secs(5), || async {
            h.feed.active_watchers() == 0
        })
        .await
    );

    let unknown = h
        .client
        .watch_stock(pb::WatchStockRequest {
            skus: vec!["W".into(), "NOPE".into()],
        })
        .await;
    assert_eq!(unknown.err().map(|e| e.code()), Some(Code::NotFound));
}

async fn import_stock_applies_a_client_stream(backend: Backend) {
    let mut h = start(backend).await;
    create(&mut h.client, "A", 0).await;
    create(&mut h.client, "B", 0).await;
    let msgs = vec![
        pb::ImportStockRequest {
            sku: "A".into(),
            delta: 5,
            reason: "receipt".into(),
        },
        pb::ImportStockRequest {
            sku: "NOPE".into(),
            delta: 5,
            reason: "".into(),
        },
        pb::ImportStockRequest {
            sku: "B".into(),
            delta: 7,
            reason: "".into(),
        },
        pb::ImportStockRequest {
            sku: "A".into(),
            delta: 0,
            reason: "".into(),
        },
        pb::ImportStockRequest {
            sku: "B".into(),
            delta: -20,
            reason: "".into(),
        },
        pb::ImportStockRequest {
            sku: "A".into(),
            delta: 2,
            reason: "".into(),
        },
    ];
    let summary = h
        .client
        .import_stock(futures::stream::iter(msgs))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((summary.applied, summary.rejected), (3, 3));
    assert!(
        summary.errors[0].starts_with("#1 (NOPE)"),
        "{:?}",
        summary.errors
    );
    assert!(summary.errors[1].contains("delta"), "{:?}", summary.errors);
    assert_eq!(item(&mut h.client, "A").await.on_hand, 7);
    assert_eq!(item(&mut h.client, "B").await.on_hand, 7);
}

async fn sync_stock_answers_each_count_and_survives_a_dropped_client(backend: Backend) {
    let mut h = start(backend).await;
    create(&mut h.client, "A", 10).await;
    h.client
        .reserve_stock(reserve_req("o", "k", &[("A", 4)]))
        .await
        .unwrap();
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let mut replies = h
        .client
        .sync_stock(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    tx.send(pb::SyncStockRequest {
        sku: "A".into(),
        counted: 12,
    })
    .await
    .unwrap();
    let r = replies.next().await.unwrap().unwrap();
    assert_eq!((r.delta, r.on_hand, r.error.as_str()), (2, 12, ""));
    tx.send(pb::SyncStockRequest {
        sku: "A".into(),
        counted: 3,
    })
    .await
    .unwrap();
    let r = replies.next().await.unwrap().unwrap();
    assert!(
        r.error.contains("below"),
        "count below reserved is refused: {r:?}"
    );
    tx.send(pb::SyncStockRequest {
        sku: "A".into(),
        counted: -1,
    })
    .await
    .unwrap();
    let r = replies.next().await.unwrap().unwrap();
    assert!(r.error.contains("counted"), "{r:?}");
    assert_eq!(item(&mut h.client, "A").await.on_hand, 12);
    // The client disconnects mid-stream; the service keeps serving.
    drop(tx);
    drop(replies);
    let i = item(&mut h.client, "A").await;
    assert_eq!((i.on_hand, i.reserved), (12, 4));
}

ordermesh::backend_tests!(
    watch_stock_streams_changes_and_frees_a_dropped_client,
    import_stock_applies_a_client_stream,
    sync_stock_answers_each_count_and_survives_a_dropped_client,
);
