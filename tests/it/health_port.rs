//! The plaintext health-only port (`HEALTH_LISTEN_ADDR`) that the kubelet's gRPC probes use
//! while the service port itself requires mTLS.

use std::time::Duration;

use ordermesh::config::ServiceConfig;
use ordermesh::transport::server::{MeshServer, LIVENESS};
use ordermesh::transport::tls::{ensure_dev_certs, CertPaths};
use ordermesh::transport::tls::{TlsSettings, Transport};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tonic::service::Routes;

const SERVING: i32 = tonic_health::pb::health_check_response::ServingStatus::Serving as i32;
const NOT_SERVING: i32 = tonic_health::pb::health_check_response::ServingStatus::NotServing as i32;

/// A plaintext grpc.health.v1 Check, as the kubelet's gRPC probe sends it.
async fn health_status(uri: &str, service: &str) -> Result<i32, String> {
    let channel = tonic::transport::Endpoint::from_shared(uri.to_string())
        .map_err(|e| e.to_string())?
        .timeout(Duration::from_secs(2))
        .connect()
        .await
        .map_err(|e| e.to_string())?;
    let reply = tonic_health::pb::health_client::HealthClient::new(channel)
        .check(tonic_health::pb::HealthCheckRequest {
            service: service.to_string(),
        })
        .await
        .map_err(|e| e.to_string())?;
    Ok(reply.into_inner().status)
}

async fn eventually<F, Fut>(mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let until = tokio::time::Instant::now() + Duration::from_secs(5);
    while tokio::time::Instant::now() < until {
        if check().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

#[tokio::test]
async fn probes_get_health_in_plaintext_while_the_service_port_requires_mtls() {
    let dir = tempfile::tempdir().unwrap();
    ensure_dev_certs(dir.path(), "ordermesh.local", "default", &["payment"]).unwrap();
    let mut config = ServiceConfig::for_test("payment", "");
    config.transport = Transport::MutualTls(TlsSettings {
        paths: CertPaths::in_dir(dir.path(), "payment"),
        trust_domain: "ordermesh.local".into(),
        namespace: "default".into(),
        policy: ordermesh::transport::authz::Policy::mesh_default("ordermesh.local", "default"),
        reload_every: Duration::from_secs(5),
    });
    let db_file = dir.path().join("health.db");
    let db = ordermesh::data::db::connect(&format!("sqlite://{}?mode=rwc", db_file.display()))
        .await
        .unwrap();
    let service = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let service_addr = service.local_addr().unwrap();
    let probes = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let probe_uri = format!("http://{}", probes.local_addr().unwrap());
    let (stop, stopped) = oneshot::channel::<()>();
    let server = MeshServer::new(
        config.server(),
        Routes::default(),
        &["ordermesh.payment.v1.PaymentService"],
    )
    .readiness(ordermesh::data::db::readiness(db.clone()))
    .health_interval(Duration::from_millis(100))
    .health_listener(probes);
    let task = tokio::spawn(server.serve(service, async move {
        let _ = stopped.await;
    }));

    assert!(
        eventually(|| async { health_status(&probe_uri, "").await == Ok(SERVING) }).await,
        "the probe port answers SERVING"
    );
    assert_eq!(
        health_status(&probe_uri, "ordermesh.payment.v1.PaymentService").await,
        Ok(SERVING)
    );
    assert_eq!(health_status(&probe_uri, LIVENESS).await, Ok(SERVING));
    // Only health: reflection and the service's own routes are not on the probe port.
    let reflection = tonic::transport::Endpoint::from_shared(probe_uri.clone())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut grpc = tonic::client::Grpc::new(reflection);
    grpc.ready().await.unwrap();
    let unimplemented = grpc
        .unary::<(), (), _>(
            tonic::Request::new(()),
            "/ordermesh.payment.v1.PaymentService/GetPayment"
                .parse()
                .unwrap(),
            tonic_prost::ProstCodec::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(unimplemented.code(), tonic::Code::Unimplemented);
    // The service port still refuses plaintext.
    assert!(
        health_status(&format!("http://{service_addr}"), "")
            .await
            .is_err(),
        "the service port must not answer plaintext"
    );

    // The database goes away: readiness ("") fails, liveness does not.
    db.close().await.unwrap();
    assert!(
        eventually(|| async { health_status(&probe_uri, "").await == Ok(NOT_SERVING) }).await,
        "readiness follows the database"
    );
    assert_eq!(health_status(&probe_uri, LIVENESS).await, Ok(SERVING));

    stop.send(()).unwrap();
    task.await.unwrap().unwrap();
    assert!(
        eventually(|| async { health_status(&probe_uri, LIVENESS).await.is_err() }).await,
        "the probe port closes with the server"
    );
}
