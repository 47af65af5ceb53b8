//! The real binary as a process: configuration errors name the variable, SIGTERM drains and exits.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ordermesh::proto::inventory::v1 as pb;
use ordermesh::proto::inventory::v1::inventory_service_client::InventoryServiceClient;
use ordermesh::testing::{eventually, SERVING};
use ordermesh::transport::client::Upstream;
use ordermesh::transport::tls::{ensure_dev_certs, CertPaths, MeshIdentity};

const BIN: &str = env!("CARGO_BIN_EXE_inventory");

#[test]
fn a_bad_setting_stops_start_up_with_the_variable_named() {
    let out = Command::new(BIN)
        .env("LISTEN_ADDR", "not-an-address")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("LISTEN_ADDR"), "{err}");

    let out = Command::new(BIN)
        .env("DATABASE_URL", "mysql://localhost/x")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("DATABASE_URL"));

    let empty = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .env("TLS_DIR", empty.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("TLS_CERT") && err.contains("inventory.pem"),
        "mTLS is the default: {err}"
    );

    let out = Command::new(BIN).env("LOG_FORMAT", "xml").output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("xml") && err.contains("log-format"), "{err}");
}

#[tokio::test]
async fn sigterm_drains_and_exits_cleanly_keeping_the_data() {
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");
    ensure_dev_certs(
        &certs,
        "ordermesh.local",
        "default",
        &["inventory", "operator"],
    )
    .unwrap();
    let operator = MeshIdentity::load(CertPaths::in_dir(&certs, "operator")).unwrap();
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let spawn = || {
        Command::new(BIN)
            .env("LISTEN_ADDR", format!("127.0.0.1:{port}"))
            .env("DATA_DIR", dir.path())
            .env("LOG_FORMAT", "json")
            .env("SHUTDOWN_GRACE", "5s")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    };
    let upstream = Upstream::new(format!("http://127.0.0.1:{port}")).mesh(operator, "inventory");
    let health = || async {
        let Ok(channel) = upstream.connect().await else {
            return false;
        };
        let mut client = tonic_health::pb::health_client::HealthClient::new(channel);
        client
            .check(tonic_health::pb::HealthCheckRequest::default())
            .await
            .is_ok_and(|r| r.into_inner().status == SERVING)
    };
    let mut child = spawn();
    assert!(
        eventually(Duration::from_secs(20), health).await,
        "binary did not become healthy"
    );
    let mut client = InventoryServiceClient::new(upstream.connect().await.unwrap());
    client
        .create_item(pb::CreateItemRequest {
            sku: "KEEP".into(),
            name: "kept across restarts".into(),
            price: Some(ordermesh::proto::common::v1::Money {
                currency_code: "USD".into(),
                amount_minor: 5,
            }),
            initial_stock: 4,
            low_stock_threshold: 0,
        })
        .await
        .unwrap();
    // An open stream must not hold the shutdown for the whole grace period.
    let mut stream = client
        .watch_stock(pb::WatchStockRequest {
            skus: vec!["KEEP".into()],
        })
        .await
        .unwrap()
        .into_inner();
    assert!(stream.message().await.unwrap().is_some());

    let started = Instant::now();
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = tokio::task::spawn_blocking(move || {
        let s = child.wait().unwrap();
        let mut logs = String::new();
        use std::io::Read;
        child
            .stdout
            .take()
            .unwrap()
            .read_to_string(&mut logs)
            .unwrap();
        (s, logs)
    })
    .await
    .unwrap();
    assert!(status.0.success(), "exit status {:?}", status.0);
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "drain took {:?}",
        started.elapsed()
    );
    // Structured logs: every line is a JSON object with a level and a message.
    let lines: Vec<serde_json::Value> = status
        .1
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l}: {e}")))
        .collect();
    assert!(
        lines
            .iter()
            .any(|l| l["message"] == "SIGTERM received, draining"),
        "{}",
        status.1
    );
    assert!(lines.iter().all(|l| l["level"].is_string()));

    // The data survives the restart.
    let mut child = spawn();
    assert!(eventually(Duration::from_secs(20), health).await);
    let mut client = InventoryServiceClient::new(upstream.connect().await.unwrap());
    let item = client
        .get_item(pb::GetItemRequest { sku: "KEEP".into() })
        .await
        .unwrap()
        .into_inner()
        .item
        .unwrap();
    assert_eq!(item.on_hand, 4);
    child.kill().unwrap();
    let _ = child.wait();
}
