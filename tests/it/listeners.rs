//! A listener that cannot bind names its setting and its address, so a second `make run` (or
//! any process on the port) says which setting to change instead of a bare "Address already in
//! use".

use std::time::Duration;

use ordermesh::config::ServiceConfig;
use ordermesh::transport::server::{bind, MeshServer};
use tokio::net::TcpListener;
use tonic::service::Routes;

#[tokio::test]
async fn a_taken_address_is_named_with_its_setting() {
    let taken = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = taken.local_addr().unwrap();
    let e = bind("LISTEN_ADDR", addr).await.unwrap_err();
    assert_eq!(
        e.to_string(),
        format!("LISTEN_ADDR {addr}: address already in use")
    );
    let free = bind("LISTEN_ADDR", "127.0.0.1:0".parse().unwrap()).await;
    assert!(free.is_ok());
}

#[tokio::test]
async fn the_server_names_a_taken_metrics_or_health_address() {
    let taken = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = taken.local_addr().unwrap();
    for setting in ["METRICS_ADDR", "HEALTH_LISTEN_ADDR"] {
        let mut config = ServiceConfig::for_test("payment", "");
        match setting {
            "METRICS_ADDR" => config.metrics_listen = Some(addr),
            _ => config.health_listen = Some(addr),
        }
        let service = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let server = MeshServer::new(config.server(), Routes::default(), &[]);
        let served = tokio::time::timeout(
            Duration::from_secs(5),
            server.serve(service, std::future::pending()),
        )
        .await
        .expect("a bind failure ends serve at once");
        let e = served.unwrap_err();
        assert_eq!(
            e.to_string(),
            format!("{setting} {addr}: address already in use")
        );
    }
}
