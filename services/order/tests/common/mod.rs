//! The saga's three participants, each a real service with its own database, on ephemeral
//! ports: shared by the saga and crash tests and the saga benchmark.

use ordermesh::config::ServiceConfig;
use ordermesh::events::amqp::BrokerUrl;
use ordermesh::testing::{spawn, Backend, Spawned, TestDatabase};

/// Inventory, payment and shipping servers (in that order) and their databases.
#[allow(dead_code)] // the saga tests call participants_with
pub async fn participants(backend: Backend) -> (Vec<Spawned>, Vec<TestDatabase>) {
    participants_with(backend, None).await
}

/// The same, publishing their events to RabbitMQ at `broker` when given (`BROKER_URL`).
pub async fn participants_with(
    backend: Backend,
    broker: Option<&BrokerUrl>,
) -> (Vec<Spawned>, Vec<TestDatabase>) {
    let mut servers = Vec::new();
    let mut dbs = Vec::new();
    for svc in ["inventory", "payment", "shipping"] {
        let d = TestDatabase::new(backend).await;
        let mut cfg = ServiceConfig::for_test(svc, &d.url);
        cfg.broker_url = broker.cloned();
        let server = match svc {
            "inventory" => {
                let app = inventory_service::App::build(&cfg)
                    .await
                    .expect("inventory");
                spawn(|l, s| app.serve(l, s)).await
            }
            "payment" => {
                let app = payment_service::App::build(&cfg).await.expect("payment");
                spawn(|l, s| app.serve(l, s)).await
            }
            _ => {
                let app = shipping_service::App::build(&cfg).await.expect("shipping");
                spawn(|l, s| app.serve(l, s)).await
            }
        };
        servers.push(server);
        dbs.push(d);
    }
    (servers, dbs)
}

/// Whether an order's saga has stopped moving: it either confirmed the order or turned back,
/// no step is running or compensating, and after a failure nothing it must undo is still
/// SUCCEEDED (compensations go one step at a time and start a moment after the failure is
/// written). Between one step's success and the next step's start, no step runs yet the saga
/// is not over: hence "confirmed or turned back".
#[allow(dead_code)] // not every test binary waits for sagas
pub fn saga_over(o: &ordermesh::proto::order::v1::Order) -> bool {
    let any = |names: &[&str]| {
        o.saga_steps
            .iter()
            .any(|s| names.contains(&s.status.as_str()))
    };
    let running = any(&["STARTED", "COMPENSATING"]);
    let turned_back = any(&["FAILED", "COMPENSATED", "COMPENSATION_FAILED"]);
    let undo_pending = turned_back && any(&["SUCCEEDED"]);
    let confirmed = o
        .saga_steps
        .iter()
        .any(|s| s.name == "confirm_order" && s.status == "SUCCEEDED");
    (confirmed || turned_back) && !(running || undo_pending)
}
