//! A bad setting stops the order binary at start-up, naming the variable.

use std::process::{Command, Output};

use crate::crash::BIN;

/// Runs the order binary in plaintext on a scratch SQLite file with `env` added.
fn start_with(dir: &tempfile::TempDir, env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.env("PLAINTEXT", "true").env(
        "DATABASE_URL",
        format!("sqlite://{}?mode=rwc", dir.path().join("o.db").display()),
    );
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

const PARTICIPANTS: [(&str, &str); 4] = [
    ("LISTEN_ADDR", "127.0.0.1:0"),
    ("INVENTORY_URL", "http://127.0.0.1:1"),
    ("PAYMENT_URL", "http://127.0.0.1:2"),
    ("SHIPPING_URL", "http://127.0.0.1:3"),
];

#[test]
fn a_bad_upstream_setting_stops_start_up_with_the_variable_named() {
    let dir = tempfile::tempdir().unwrap();
    let refused = |extra: (&str, &str), named: &str| {
        let mut env = PARTICIPANTS.to_vec();
        env.push(extra);
        let out = start_with(&dir, &env);
        assert!(!out.status.success(), "{extra:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(named), "{extra:?}: {err}");
    };
    refused(("PAYMENT_BALANCER", "random"), "PAYMENT_BALANCER");
    refused(("SAGA_STEP_BUDGET", "soon"), "SAGA_STEP_BUDGET");
    refused(("SAGA_STEP_BUDGET", "0s"), "SAGA_STEP_BUDGET");
    refused(("ORDER_SNAPSHOT_EVERY", "0"), "ORDER_SNAPSHOT_EVERY");
    // One participant's address without the others (and no MESH_DNS).
    let out = start_with(&dir, &[("INVENTORY_URL", "http://127.0.0.1:1")]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("PAYMENT_URL"));
}

/// `order projections list` and `order projections rebuild <name>` on a database the service
/// wrote: the rebuild reports progress and swaps the model in; a name it does not know is a
/// usage error naming the known ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_projections_command_lists_and_rebuilds_read_models() {
    use ordermesh::config::ServiceConfig;
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("o.db").display());
    let app = order_service::App::build(&ServiceConfig::for_test(order_service::SERVICE, &url))
        .await
        .unwrap();
    let orders = app.api.orders().clone();
    let txn = sea_orm::TransactionTrait::begin(orders.db()).await.unwrap();
    let placed = order_service::aggregate::OrderEvent::OrderPlaced {
        customer_id: "cust-cli".into(),
        currency: "EUR".into(),
        total_minor: 100,
        lines: vec![],
        address: Default::default(),
        card_token: "tok_visa".into(),
    };
    let id = ordermesh::types::ids::OrderId::generate().into_string();
    order_service::store::append(
        &txn,
        Default::default(),
        &id,
        None,
        &[placed.to_new()],
        &Default::default(),
    )
    .await
    .unwrap();
    txn.commit().await.unwrap();
    drop(app);
    let run = |args: &[&str]| {
        Command::new(BIN)
            .arg("projections")
            .args(args)
            .env("DATABASE_URL", &url)
            .output()
            .unwrap()
    };
    let out = run(&["rebuild", "order_summaries"]);
    assert!(out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("swapped in"),
        "{out:?}"
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("(100%)"),
        "{out:?}"
    );
    let out = run(&["list"]);
    let listed = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        listed.contains("order_summaries\tposition 1\thead 1"),
        "{listed}"
    );
    let out = run(&["rebuild", "nope"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("order_stats, order_summaries"));
    let db = ordermesh::data::db::connect(&url).await.unwrap();
    let rows = order_service::projections::summaries::list(&db, None, &[], 0, 10)
        .await
        .unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].order_id, id);
}
