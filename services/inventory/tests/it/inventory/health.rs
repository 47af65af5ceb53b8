//! Health: drains streams on shutdown and follows the database.

use super::*;

async fn health_serves_and_shutdown_drains_streams(backend: Backend) {
    let mut h = start(backend).await;
    for service in ["", inventory_service::GRPC_SERVICE] {
        let status = health_status(&h.server.uri(), service).await.unwrap();
        assert_eq!(status, SERVING, "health of {service:?}");
    }
    create(&mut h.client, "A", 1).await;
    let mut stream = h
        .client
        .watch_stock(pb::WatchStockRequest {
            skus: vec!["A".into()],
        })
        .await
        .unwrap()
        .into_inner();
    stream.next().await.unwrap().unwrap();
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
}

/// Health follows the database: NOT_SERVING while PostgreSQL refuses the service's database,
/// SERVING again once it is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn health_is_not_serving_while_the_database_is_unreachable() {
    use sea_orm::{ConnectionTrait, Database};
    let db = TestDatabase::new(Backend::Postgres).await;
    let name = db.url.rsplit('/').next().unwrap().to_string();
    let app = App::build(&ServiceConfig::for_test(SERVICE, &db.url))
        .await
        .unwrap();
    let server = spawn(|l, s| app.serve(l, s)).await;
    let uri = server.uri();
    assert_eq!(health_status(&uri, "").await.unwrap(), SERVING);

    let admin = Database::connect(ordermesh::testing::postgres_admin_url())
        .await
        .unwrap();
    let offline = format!("{name}_offline");
    // Renaming needs no open sessions; the pool reconnects, so terminate and rename until it sticks.
    let mut renamed = false;
    for _ in 0..50 {
        let _ = admin
            .execute_unprepared(&format!(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'"
            ))
            .await;
        if admin
            .execute_unprepared(&format!(
                "ALTER DATABASE \"{name}\" RENAME TO \"{offline}\""
            ))
            .await
            .is_ok()
        {
            renamed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(renamed, "could not take the database away");
    let down = eventually(Duration::from_secs(10), || async {
        health_status(&uri, inventory_service::GRPC_SERVICE)
            .await
            .ok()
            == Some(ordermesh::testing::NOT_SERVING)
    })
    .await;
    // Put it back before asserting, so the database is dropped either way.
    admin
        .execute_unprepared(&format!(
            "ALTER DATABASE \"{offline}\" RENAME TO \"{name}\""
        ))
        .await
        .unwrap();
    assert!(
        down,
        "health should report NOT_SERVING while the database is gone"
    );
    let up = eventually(Duration::from_secs(10), || async {
        health_status(&uri, inventory_service::GRPC_SERVICE)
            .await
            .ok()
            == Some(SERVING)
    })
    .await;
    assert!(up, "health should recover");
    let mut client = InventoryServiceClient::connect(uri).await.unwrap();
    create(&mut client, "AFTER", 1).await;
}

ordermesh::backend_tests!(health_serves_and_shutdown_drains_streams);
