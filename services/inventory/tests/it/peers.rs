//! Independent peers against a running inventory server: the real grpcurl binary (through
//! reflection) and a Python grpcio client generated from proto/. `make test` installs both into
//! .deps/venv; ORDERMESH_GRPCURL and ORDERMESH_PYTHON override where they are.

use std::path::PathBuf;
use std::process::Command;

use inventory_service::{App, SERVICE};
use ordermesh::config::ServiceConfig;
use ordermesh::proto::inventory::v1 as pb;
use ordermesh::proto::inventory::v1::inventory_service_client::InventoryServiceClient;
use ordermesh::testing::{spawn, Backend, Spawned, TestDatabase};

fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn tool(var: &str, default: &str) -> PathBuf {
    let path = std::env::var_os(var)
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join(default));
    assert!(
        path.exists(),
        "{} not found: run `make test-deps` (or set {var})",
        path.display()
    );
    path
}

async fn start() -> (TestDatabase, Spawned) {
    let db = TestDatabase::new(Backend::Sqlite).await;
    let app = App::build(&ServiceConfig::for_test(SERVICE, &db.url))
        .await
        .unwrap();
    let server = spawn(|l, s| app.serve(l, s)).await;
    (db, server)
}

fn grpcurl(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(tool("ORDERMESH_GRPCURL", ".deps/venv/bin/grpcurl"))
        .args(args)
        .output()
        .expect("run grpcurl");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpcurl_lists_checks_health_and_calls_with_json() {
    let (_db, server) = start().await;
    let addr = server.addr.to_string();
    let addr = addr.as_str();

    let (ok, list, err) = tokio::task::spawn_blocking({
        let addr = addr.to_string();
        move || grpcurl(&["-plaintext", &addr, "list"])
    })
    .await
    .unwrap();
    assert!(ok, "grpcurl list failed: {err}");
    let services: Vec<&str> = list.lines().collect();
    assert!(
        services.contains(&"ordermesh.inventory.v1.InventoryService"),
        "{list}"
    );
    assert!(services.contains(&"grpc.health.v1.Health"), "{list}");
    assert!(
        !services.contains(&"ordermesh.payment.v1.PaymentService"),
        "only what this server serves: {list}"
    );

    let (ok, health, err) = grpcurl(&["-plaintext", addr, "grpc.health.v1.Health/Check"]);
    assert!(ok, "{err}");
    let health: serde_json::Value = serde_json::from_str(&health).unwrap();
    assert_eq!(health["status"], "SERVING");

    let (ok, described, err) = grpcurl(&[
        "-plaintext",
        addr,
        "describe",
        "ordermesh.inventory.v1.InventoryService.ReserveStock",
    ]);
    assert!(ok, "{err}");
    assert!(
        described.contains("/v1/inventory/reservations"),
        "http annotation visible: {described}"
    );

    let body = r#"{"sku":"GRPCURL-1","name":"From grpcurl","price":{"currencyCode":"EUR","amountMinor":"250"},"initialStock":"3"}"#;
    let (ok, created, err) = grpcurl(&[
        "-plaintext",
        "-d",
        body,
        addr,
        "ordermesh.inventory.v1.InventoryService/CreateItem",
    ]);
    assert!(ok, "{err}");
    let created: serde_json::Value = serde_json::from_str(&created).unwrap();
    assert_eq!(created["item"]["available"], "3");
    assert_eq!(created["item"]["price"]["currencyCode"], "EUR");

    // What grpcurl wrote is what the generated client reads.
    let mut client = InventoryServiceClient::connect(server.uri()).await.unwrap();
    let item = client
        .get_item(pb::GetItemRequest {
            sku: "GRPCURL-1".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .item
        .unwrap();
    assert_eq!((item.name.as_str(), item.on_hand), ("From grpcurl", 3));

    let (ok, _, err) = grpcurl(&[
        "-plaintext",
        "-d",
        r#"{"sku":"","name":"x"}"#,
        addr,
        "ordermesh.inventory.v1.InventoryService/CreateItem",
    ]);
    assert!(!ok);
    assert!(
        err.contains("InvalidArgument") && err.contains("sku"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_grpcio_client_generated_from_the_protos() {
    let (_db, server) = start().await;
    let python = tool("ORDERMESH_PYTHON", ".deps/venv/bin/python");
    let stubs = tempfile::tempdir().unwrap();
    let root = workspace();
    let mut protos = vec![];
    for svc in ["common", "inventory"] {
        protos.push(format!("proto/ordermesh/{svc}/v1/{svc}.proto"));
    }
    let gen = Command::new(&python)
        .current_dir(&root)
        .args(["-m", "grpc_tools.protoc", "-Iproto", "-I.deps/googleapis"])
        .arg(format!("--python_out={}", stubs.path().display()))
        .arg(format!("--grpc_python_out={}", stubs.path().display()))
        .args(&protos)
        .output()
        .unwrap();
    assert!(
        gen.status.success(),
        "protoc: {}",
        String::from_utf8_lossy(&gen.stderr)
    );

    let out = Command::new(&python)
        .arg(root.join("tests/peers/python_client.py"))
        .arg(stubs.path())
        .arg(server.addr.to_string())
        .arg("PY-1")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "python client: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let answer: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(answer["created_available"], 8);
    assert_eq!(answer["reservation_status"], "RESERVATION_STATUS_RESERVED");
    assert_eq!(answer["replay_identical"], true);
    let bad = answer["bad_input"].as_str().unwrap();
    assert!(
        bad.starts_with("INVALID_ARGUMENT: lines[0].quantity"),
        "{bad}"
    );
    assert_eq!(answer["available_after"], 5);

    let mut client = InventoryServiceClient::connect(server.uri()).await.unwrap();
    let r = client
        .get_reservation(pb::GetReservationRequest {
            order_id: "py-order-1".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .reservation
        .unwrap();
    assert_eq!(r.lines[0].quantity, 3);
}
