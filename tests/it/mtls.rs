//! mTLS between real servers and clients: handshake refusals, identity-based authorization and
//! certificate rotation without a restart.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use ordermesh::config::ServiceConfig;
use ordermesh::transport::authz::Policy;
use ordermesh::transport::client::Upstream;
use ordermesh::transport::server::MeshServer;
use ordermesh::transport::tls::{
    ensure_dev_certs, spiffe_id_of, write_leaf, CertPaths, MeshCa, MeshIdentity, SpiffeId,
};
use ordermesh::transport::tls::{TlsSettings, Transport};
use tokio::sync::oneshot;
use tonic::service::Routes;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

const TD: &str = "ordermesh.local";
const NS: &str = "default";

struct Mesh {
    dir: tempfile::TempDir,
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Drop for Mesh {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        self.task.abort();
    }
}

/// Starts an "inventory" server with mTLS; only `order` may call Health/Check.
async fn start() -> Mesh {
    let dir = tempfile::tempdir().unwrap();
    ensure_dev_certs(dir.path(), TD, NS, &["inventory", "order", "shipping"]).unwrap();
    let policy = Policy::parse(
        "[[rules]]\nmethods = [\"grpc.health.v1.Health/Check\"]\nallow = [\"order\"]\n",
        TD,
        NS,
    )
    .unwrap();
    let mut config = ServiceConfig::for_test("inventory", "");
    config.transport = Transport::MutualTls(TlsSettings {
        paths: CertPaths::in_dir(dir.path(), "inventory"),
        trust_domain: TD.into(),
        namespace: NS.into(),
        policy,
        reload_every: Duration::from_millis(100),
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = oneshot::channel::<()>();
    let server = MeshServer::new(config.server(), Routes::default(), &[]);
    let task = tokio::spawn(server.serve(listener, async move {
        let _ = rx.await;
    }));
    Mesh {
        dir,
        addr,
        stop: Some(tx),
        task,
    }
}

fn identity(dir: &Path, service: &str) -> Arc<MeshIdentity> {
    MeshIdentity::load(CertPaths::in_dir(dir, service)).unwrap()
}

async fn check_as(addr: SocketAddr, who: Arc<MeshIdentity>) -> Result<i32, tonic::Status> {
    let channel = Upstream::new(format!("http://{addr}"))
        .mesh(who, "inventory")
        .connect()
        .await
        .map_err(|e| tonic::Status::unavailable(format!("{e:?}")))?;
    let r = HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await?;
    Ok(r.into_inner().status)
}

#[tokio::test]
async fn a_mesh_identity_from_the_mesh_ca_is_served() {
    let mesh = start().await;
    let status = check_as(mesh.addr, identity(mesh.dir.path(), "order"))
        .await
        .unwrap();
    assert_eq!(
        status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );
}

#[tokio::test]
async fn plaintext_is_refused() {
    let mesh = start().await;
    let plain = tonic::transport::Endpoint::from_shared(format!("http://{}", mesh.addr))
        .unwrap()
        .timeout(Duration::from_secs(3))
        .connect()
        .await;
    let refused = match plain {
        Err(_) => true,
        Ok(ch) => HealthClient::new(ch)
            .check(HealthCheckRequest::default())
            .await
            .is_err(),
    };
    assert!(refused, "a plaintext call must not be served");
}

/// A client that trusts the mesh CA but presents no certificate at all.
#[tokio::test]
async fn a_missing_client_certificate_is_refused() {
    let mesh = start().await;
    let mut roots = rustls::RootCertStore::empty();
    let ca = std::fs::read(mesh.dir.path().join("ca.pem")).unwrap();
    use rustls_pki_types::pem::PemObject;
    for c in rustls_pki_types::CertificateDer::pem_slice_iter(&ca) {
        roots.add(c.unwrap()).unwrap();
    }
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let tcp = tokio::net::TcpStream::connect(mesh.addr).await.unwrap();
    let name = rustls_pki_types::ServerName::try_from("inventory").unwrap();
    let outcome = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await;
    // TLS 1.3 lets the client finish first; the server's refusal then arrives on the first read.
    let refused = match outcome {
        Err(_) => true,
        Ok(mut tls) => {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let _ = tls.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").await;
            let mut buf = [0u8; 64];
            !matches!(tokio::time::timeout(Duration::from_secs(3), tls.read(&mut buf)).await, Ok(Ok(n)) if n > 0)
        }
    };
    assert!(
        refused,
        "a client without a certificate must be refused at the handshake"
    );
}

#[tokio::test]
async fn an_expired_certificate_is_refused() {
    let mesh = start().await;
    let ca = MeshCa::load(
        &std::fs::read_to_string(mesh.dir.path().join("ca.pem")).unwrap(),
        &std::fs::read_to_string(mesh.dir.path().join("ca-key.pem")).unwrap(),
    )
    .unwrap();
    let now = time::OffsetDateTime::now_utc();
    let expired = ca
        .issue_valid(
            &SpiffeId::new(TD, NS, "order"),
            now - time::Duration::days(10),
            now - time::Duration::days(1),
        )
        .unwrap();
    let other = tempfile::tempdir().unwrap();
    std::fs::copy(mesh.dir.path().join("ca.pem"), other.path().join("ca.pem")).unwrap();
    write_leaf(&CertPaths::in_dir(other.path(), "order"), &expired).unwrap();
    let e = check_as(mesh.addr, identity(other.path(), "order"))
        .await
        .unwrap_err();
    assert_ne!(e.code(), tonic::Code::Ok);
    assert_ne!(
        e.code(),
        tonic::Code::PermissionDenied,
        "refused at the handshake, not by policy: {e:?}"
    );
}

#[tokio::test]
async fn a_certificate_from_another_ca_is_refused() {
    let mesh = start().await;
    let foreign = tempfile::tempdir().unwrap();
    ensure_dev_certs(foreign.path(), TD, NS, &["order"]).unwrap();
    // Trust the real mesh CA for the server, but present the foreign CA's "order" leaf.
    std::fs::copy(
        mesh.dir.path().join("ca.pem"),
        foreign.path().join("ca.pem"),
    )
    .unwrap();
    let e = check_as(mesh.addr, identity(foreign.path(), "order"))
        .await
        .unwrap_err();
    assert_ne!(
        e.code(),
        tonic::Code::PermissionDenied,
        "refused at the handshake: {e:?}"
    );
}

#[tokio::test]
async fn a_client_refuses_a_server_that_is_not_the_service_it_asked_for() {
    let mesh = start().await;
    let channel = Upstream::new(format!("http://{}", mesh.addr))
        .mesh(identity(mesh.dir.path(), "order"), "payment")
        .connect()
        .await;
    assert!(
        channel.is_err(),
        "inventory's certificate does not prove it is payment"
    );
}

#[tokio::test]
async fn an_identity_the_policy_denies_gets_permission_denied_naming_the_caller() {
    let mesh = start().await;
    let e = check_as(mesh.addr, identity(mesh.dir.path(), "shipping"))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::PermissionDenied);
    assert_eq!(
        e.message(),
        "spiffe://ordermesh.local/ns/default/sa/shipping may not call grpc.health.v1.Health/Check"
    );
}

async fn served_certificate(addr: SocketAddr, client: &Arc<MeshIdentity>) -> Vec<u8> {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = rustls_pki_types::ServerName::try_from("inventory").unwrap();
    let tls = tokio_rustls::TlsConnector::from(client.client_config())
        .connect(name, tcp)
        .await
        .unwrap();
    tls.get_ref().1.peer_certificates().unwrap()[0]
        .as_ref()
        .to_vec()
}

#[tokio::test]
async fn a_rotated_certificate_is_served_by_the_next_handshake_while_open_streams_continue() {
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::ServerReflectionRequest;

    let mesh = start().await;
    let order = identity(mesh.dir.path(), "order");
    let before = served_certificate(mesh.addr, &order).await;

    // A long bidi stream opened before the rotation.
    let channel = Upstream::new(format!("http://{}", mesh.addr))
        .mesh(order.clone(), "inventory")
        .connect()
        .await
        .unwrap();
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let mut replies = ServerReflectionClient::new(channel)
        .server_reflection_info(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    let list = || ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    tx.send(list()).await.unwrap();
    assert!(replies.message().await.unwrap().is_some());

    let ca = MeshCa::load(
        &std::fs::read_to_string(mesh.dir.path().join("ca.pem")).unwrap(),
        &std::fs::read_to_string(mesh.dir.path().join("ca-key.pem")).unwrap(),
    )
    .unwrap();
    let fresh = ca
        .issue(
            &SpiffeId::new(TD, NS, "inventory"),
            Duration::from_secs(3600),
        )
        .unwrap();
    write_leaf(&CertPaths::in_dir(mesh.dir.path(), "inventory"), &fresh).unwrap();

    let mut after = before.clone();
    for _ in 0..100 {
        after = served_certificate(mesh.addr, &order).await;
        if after != before {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_ne!(
        after, before,
        "the next handshake serves the rotated certificate"
    );
    let served = rustls_pki_types::CertificateDer::from(after);
    assert_eq!(spiffe_id_of(&served).unwrap().service, "inventory");

    // The stream opened before the rotation still answers.
    tx.send(list()).await.unwrap();
    let reply = tokio::time::timeout(Duration::from_secs(5), replies.message())
        .await
        .unwrap()
        .unwrap();
    assert!(reply.is_some());
    // And new connections work with the new certificate.
    assert!(check_as(mesh.addr, order).await.is_ok());
}
