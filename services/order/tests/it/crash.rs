//! The crash matrix: the order service (the real binary) is killed with SIGKILL at every step
//! boundary of the placement saga, and, separately, each participant (the real inventory,
//! payment and shipping binaries) before and after the commit of every saga call it serves;
//! the process is restarted, and once the order is final the invariants hold: a confirmed order
//! has exactly one capture of its total, one live shipment and its stock shipped; a rejected one
//! has its stock back and no money taken; stock is conserved.

use std::os::unix::process::ExitStatusExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ordermesh::proto::common::v1::{Address, Money};
use ordermesh::proto::inventory::v1 as inv;
use ordermesh::proto::inventory::v1::inventory_service_client::InventoryServiceClient;
use ordermesh::proto::order::v1 as pb;
use ordermesh::proto::order::v1::order_service_client::OrderServiceClient;
use ordermesh::proto::payment::v1 as pay;
use ordermesh::proto::payment::v1::payment_service_client::PaymentServiceClient;
use ordermesh::proto::shipping::v1 as ship;
use ordermesh::proto::shipping::v1::shipping_service_client::ShippingServiceClient;
use ordermesh::testing::{Backend, Spawned, TestDatabase};

use crate::helpers;

pub(crate) const BIN: &str = env!("CARGO_BIN_EXE_order");

struct Participants {
    servers: Vec<Spawned>,
    _dbs: Vec<TestDatabase>,
}

async fn participants() -> Participants {
    let (servers, dbs) = test_support::participants(Backend::Sqlite).await;
    Participants { servers, _dbs: dbs }
}

fn start_order(p: &Participants, db_url: &str, port: u16, crash_at: Option<&str>) -> Child {
    let uris = [p.servers[0].uri(), p.servers[1].uri(), p.servers[2].uri()];
    start_order_at(&uris, db_url, port, crash_at)
}

/// The order binary on `port`, its participants at `uris` (inventory, payment, shipping).
fn start_order_at(uris: &[String; 3], db_url: &str, port: u16, crash_at: Option<&str>) -> Child {
    let mut cmd = Command::new(BIN);
    cmd.env("PLAINTEXT", "true")
        .env("LOG_FORMAT", "json")
        .env("DATABASE_URL", db_url)
        .env("LISTEN_ADDR", format!("127.0.0.1:{port}"))
        .env("INVENTORY_URL", &uris[0])
        .env("PAYMENT_URL", &uris[1])
        .env("SHIPPING_URL", &uris[2])
        .env_remove(ordermesh::saga::CRASH_AT_ENV)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if let Some(at) = crash_at {
        cmd.env(ordermesh::saga::CRASH_AT_ENV, at);
    }
    cmd.spawn().expect("start the order binary")
}

async fn connect(port: u16) -> OrderServiceClient<tonic::transport::Channel> {
    let started = Instant::now();
    loop {
        if let Ok(c) = OrderServiceClient::connect(format!("http://127.0.0.1:{port}")).await {
            return c;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "order did not start"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn eur(minor: i64) -> Option<Money> {
    Some(Money {
        currency_code: "EUR".into(),
        amount_minor: minor,
    })
}

fn place_req(customer: &str, sku: &str, card: &str) -> pb::PlaceOrderRequest {
    pb::PlaceOrderRequest {
        customer_id: customer.into(),
        lines: vec![pb::PlaceOrderLine {
            sku: sku.into(),
            quantity: 2,
            unit_price: eur(450),
        }],
        shipping_address: Some(Address {
            recipient: "Ada".into(),
            street: "1 Main St".into(),
            city: "Berlin".into(),
            postal_code: "10115".into(),
            country_code: "DE".into(),
        }),
        card_token: card.into(),
        idempotency_key: format!("{customer}/place"),
    }
}

/// The final order of `customer`, once its saga has ended.
async fn final_order(port: u16, customer: &str) -> pb::Order {
    let mut c = connect(port).await;
    let started = Instant::now();
    loop {
        let orders = c
            .list_orders(pb::ListOrdersRequest {
                customer_id: customer.into(),
                ..Default::default()
            })
            .await
            .map(|r| r.into_inner().orders)
            .unwrap_or_default();
        if let Some(o) = orders.first() {
            let full = c
                .get_order(pb::GetOrderRequest {
                    order_id: o.order_id.clone(),
                    ..Default::default()
                })
                .await
                .unwrap()
                .into_inner()
                .order
                .unwrap();
            let terminal = matches!(
                pb::OrderStatus::try_from(full.status),
                Ok(pb::OrderStatus::Confirmed | pb::OrderStatus::Rejected)
            );
            if terminal && helpers::saga_over(&full) {
                return full;
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "order of {customer} did not finish: {orders:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Once an order is final: a confirmed one has exactly one capture of its total, one payment,
/// one live shipment and its two units shipped; a rejected one took no money, left no open
/// authorization or live shipment, has its stock back, and was one whose card declines (a
/// crash never turns an order into a rejection). Nothing stays reserved either way.
async fn check_invariants(
    point: &str,
    card: &str,
    order: &pb::Order,
    sku: &str,
    inventory: &mut InventoryServiceClient<tonic::transport::Channel>,
    payment: &mut PaymentServiceClient<tonic::transport::Channel>,
    shipping: &mut ShippingServiceClient<tonic::transport::Channel>,
) {
    let item = inventory
        .get_item(inv::GetItemRequest { sku: sku.into() })
        .await
        .unwrap()
        .into_inner()
        .item
        .unwrap();
    let payments = payment
        .list_payments(pay::ListPaymentsRequest {
            order_id: order.order_id.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .payments;
    let live_shipments = shipping
        .list_shipments(ship::ListShipmentsRequest {
            order_id: order.order_id.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .shipments
        .into_iter()
        .filter(|s| s.status != ship::ShipmentStatus::Cancelled as i32)
        .count();
    let captured: Vec<&pay::Payment> = payments
        .iter()
        .filter(|p| p.status == pay::PaymentStatus::Captured as i32)
        .collect();
    assert_eq!(item.reserved, 0, "{point}: nothing left reserved");
    match pb::OrderStatus::try_from(order.status).unwrap() {
        pb::OrderStatus::Confirmed => {
            assert_eq!(card, "tok_visa", "{point}");
            assert_eq!(
                captured.len(),
                1,
                "{point}: exactly one capture: {payments:?}"
            );
            assert_eq!(captured[0].captured_amount, eur(900), "{point}");
            assert_eq!(payments.len(), 1, "{point}: one payment: {payments:?}");
            assert_eq!(live_shipments, 1, "{point}");
            assert_eq!(item.on_hand, 8, "{point}: two units shipped");
        }
        pb::OrderStatus::Rejected => {
            // A crash on the happy path must not turn into a rejection: the saga waits it out.
            assert_eq!(card, "tok_decline", "{point}: {order:?}");
            assert!(captured.is_empty(), "{point}: no money taken: {payments:?}");
            assert!(
                payments
                    .iter()
                    .all(|p| p.status != pay::PaymentStatus::Authorized as i32),
                "{point}: an authorization was left open: {payments:?}"
            );
            assert_eq!(live_shipments, 0, "{point}");
            assert_eq!(item.on_hand, 10, "{point}: stock conserved");
        }
        other => panic!("{point}: unexpected {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_saga_survives_sigkill_at_every_step_boundary() {
    let p = participants().await;
    let mut inventory = InventoryServiceClient::connect(p.servers[0].uri())
        .await
        .unwrap();
    let mut payment = PaymentServiceClient::connect(p.servers[1].uri())
        .await
        .unwrap();
    let mut shipping = ShippingServiceClient::connect(p.servers[2].uri())
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let db_url = format!(
        "sqlite://{}?mode=rwc",
        dir.path().join("order.db").display()
    );
    let port = test_support::free_addr().port();

    let steps = [
        "reserve_stock",
        "authorize_payment",
        "create_shipment",
        "capture_payment",
        "commit_stock",
        "confirm_order",
    ];
    let mut points: Vec<(String, &str)> = Vec::new();
    for s in steps {
        for when in ["before", "after"] {
            points.push((format!("{s}:{when}"), "tok_visa"));
        }
    }
    // The way back: a declined card compensates the reservation.
    for when in ["undo-before", "undo-after"] {
        points.push((format!("reserve_stock:{when}"), "tok_decline"));
        points.push((format!("authorize_payment:{when}"), "tok_decline"));
    }

    let mut finals = Vec::new();
    for (i, (point, card)) in points.iter().enumerate() {
        let sku = format!("CRASH-{i}");
        let customer = format!("crash-{i}");
        inventory
            .create_item(inv::CreateItemRequest {
                sku: sku.clone(),
                name: sku.clone(),
                price: eur(450),
                initial_stock: 10,
                low_stock_threshold: 0,
            })
            .await
            .unwrap();

        let mut child = start_order(&p, &db_url, port, Some(point));
        let mut c = connect(port).await;
        // The reply may be lost if the crash comes first; the order is committed either way.
        let _ = c.place_order(place_req(&customer, &sku, card)).await;
        let status = helpers::wait_exit(&mut child, Duration::from_secs(30))
            .await
            .unwrap_or_else(|| panic!("{point}: the crash point was never reached"));
        assert_eq!(status.signal(), Some(9), "{point}: killed by SIGKILL");

        let mut child = start_order(&p, &db_url, port, None);
        let order = final_order(port, &customer).await;
        finals.push((order.order_id.clone(), order.status));
        check_invariants(
            point,
            card,
            &order,
            &sku,
            &mut inventory,
            &mut payment,
            &mut shipping,
        )
        .await;
        let _ = child.kill();
        let _ = child.wait();
    }
    // No event lost or written twice across all those kills.
    let mut child = start_order(&p, &db_url, port, None);
    connect(port).await;
    let log = whole_log(&format!("http://127.0.0.1:{port}")).await;
    check_order_log(&log, &finals);
    let _ = child.kill();
    let _ = child.wait();
}

/// A participant binary (built beside the order binary by a workspace build) on `port`.
fn start_participant(
    svc: &str,
    data: &std::path::Path,
    port: u16,
    crash_at: Option<&str>,
) -> Child {
    let bin = std::path::Path::new(BIN).with_file_name(svc);
    assert!(
        bin.exists(),
        "{} is missing: build the workspace binaries (cargo build --workspace --bins)",
        bin.display()
    );
    let mut cmd = Command::new(bin);
    cmd.env("PLAINTEXT", "true")
        .env("LOG_FORMAT", "json")
        .env(
            "DATABASE_URL",
            format!(
                "sqlite://{}?mode=rwc",
                data.join(format!("{svc}.db")).display()
            ),
        )
        .env("LISTEN_ADDR", format!("127.0.0.1:{port}"))
        .env_remove(ordermesh::faults::crash::CRASH_AT_ENV)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if let Some(at) = crash_at {
        cmd.env(ordermesh::faults::crash::CRASH_AT_ENV, at);
    }
    cmd.spawn().expect("start a participant binary")
}

/// Kills every process it holds when the test ends, however it ends.
struct Processes(Vec<(String, Child)>);

impl Processes {
    fn take(&mut self, name: &str) -> Child {
        let i = self
            .0
            .iter()
            .position(|(n, _)| n == name)
            .expect("known process");
        self.0.remove(i).1
    }
}

impl Drop for Processes {
    fn drop(&mut self) {
        for (_, c) in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

async fn wait_port(port: u16) {
    let started = Instant::now();
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "nothing listens on {port}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_saga_survives_sigkill_of_a_participant_around_every_commit() {
    let dir = tempfile::tempdir().unwrap();
    let services = ["inventory", "payment", "shipping"];
    let ports: Vec<u16> = services
        .iter()
        .map(|_| test_support::free_addr().port())
        .collect();
    let uris: [String; 3] = std::array::from_fn(|i| format!("http://127.0.0.1:{}", ports[i]));
    let mut procs = Processes(Vec::new());
    for (svc, port) in services.iter().zip(&ports) {
        procs.0.push((
            svc.to_string(),
            start_participant(svc, dir.path(), *port, None),
        ));
        wait_port(*port).await;
    }
    let order_port = test_support::free_addr().port();
    let db_url = format!(
        "sqlite://{}?mode=rwc",
        dir.path().join("order.db").display()
    );
    procs.0.push((
        "order".into(),
        start_order_at(&uris, &db_url, order_port, None),
    ));
    let mut c = connect(order_port).await;
    let mut inventory = InventoryServiceClient::connect(uris[0].clone())
        .await
        .unwrap();

    // (participant, crash point, card): each saga call, before it does anything and after its
    // transaction committed (the effect applied, the answer lost); and the way back.
    let mut points: Vec<(&str, String, &str)> = Vec::new();
    // Points are named by the operation's idempotency scope (`idempotency::execute`).
    for (svc, op) in [
        ("inventory", "reserve"),
        ("payment", "authorize"),
        ("shipping", "create"),
        ("payment", "capture"),
        ("inventory", "commit"),
    ] {
        for when in ["before", "after"] {
            points.push((svc, format!("{svc}.{op}:{when}"), "tok_visa"));
        }
    }
    for when in ["before", "after"] {
        points.push((
            "inventory",
            format!("inventory.release:{when}"),
            "tok_decline",
        ));
    }

    let mut finals = Vec::new();
    for (i, (svc, point, card)) in points.iter().enumerate() {
        let sku = format!("PCRASH-{i}");
        let customer = format!("pcrash-{i}");
        inventory
            .create_item(inv::CreateItemRequest {
                sku: sku.clone(),
                name: sku.clone(),
                price: eur(450),
                initial_stock: 10,
                low_stock_threshold: 0,
            })
            .await
            .unwrap();
        // The participant again, armed.
        let port = ports[services.iter().position(|s| s == svc).unwrap()];
        let mut old = procs.take(svc);
        let _ = old.kill();
        let _ = old.wait();
        let mut armed = start_participant(svc, dir.path(), port, Some(point));
        wait_port(port).await;

        let _ = c.place_order(place_req(&customer, &sku, card)).await;
        let status = helpers::wait_exit(&mut armed, Duration::from_secs(30))
            .await
            .unwrap_or_else(|| panic!("{point}: the crash point was never reached"));
        assert_eq!(status.signal(), Some(9), "{point}: killed by SIGKILL");
        procs.0.push((
            svc.to_string(),
            start_participant(svc, dir.path(), port, None),
        ));
        wait_port(port).await;

        let order = final_order(order_port, &customer).await;
        finals.push((order.order_id.clone(), order.status));
        let mut payment = PaymentServiceClient::connect(uris[1].clone())
            .await
            .unwrap();
        let mut shipping = ShippingServiceClient::connect(uris[2].clone())
            .await
            .unwrap();
        check_invariants(
            point,
            card,
            &order,
            &sku,
            &mut inventory,
            &mut payment,
            &mut shipping,
        )
        .await;
    }
    // No event lost or written twice: the order log has each order's story once, and every
    // participant's log is gapless with unique ids, however often its process was killed.
    check_order_log(
        &whole_log(&format!("http://127.0.0.1:{order_port}")).await,
        &finals,
    );
    for uri in &uris {
        check_log(uri, &whole_log(uri).await);
    }
}

/// A producer's whole event log: everything it serves until it is quiet for two seconds.
async fn whole_log(uri: &str) -> Vec<ordermesh::proto::events::v1::EventEnvelope> {
    use futures::StreamExt;
    use ordermesh::proto::events::v1 as ev;
    let mut client = ev::event_log_service_client::EventLogServiceClient::connect(uri.to_string())
        .await
        .expect("connect to the event log");
    let mut stream = client
        .subscribe(ev::SubscribeRequest {
            from_sequence: 0,
            types: Vec::new(),
        })
        .await
        .expect("subscribe")
        .into_inner();
    let mut out = Vec::new();
    while let Ok(Some(Ok(msg))) = tokio::time::timeout(Duration::from_secs(2), stream.next()).await
    {
        out.extend(msg.event);
    }
    out
}

/// Unique event ids and sequences 1, 2, 3, ... without a gap.
fn check_log(name: &str, log: &[ordermesh::proto::events::v1::EventEnvelope]) {
    assert!(!log.is_empty(), "{name}: empty event log");
    let ids: std::collections::HashSet<&str> = log.iter().map(|e| e.event_id.as_str()).collect();
    assert_eq!(ids.len(), log.len(), "{name}: an event id appears twice");
    for (i, e) in log.iter().enumerate() {
        assert_eq!(
            e.sequence,
            i as u64 + 1,
            "{name}: sequence gap or repeat at {i}"
        );
    }
}

/// Each final order was placed once and ended once, as the order says.
fn check_order_log(log: &[ordermesh::proto::events::v1::EventEnvelope], finals: &[(String, i32)]) {
    check_log("order", log);
    for (id, status) in finals {
        let types: Vec<&str> = log
            .iter()
            .filter(|e| &e.aggregate_id == id)
            .filter_map(|e| {
                e.payload
                    .as_ref()
                    .map(ordermesh::events::envelope::event_type)
            })
            .collect();
        let count = |t: &str| types.iter().filter(|x| **x == t).count();
        assert_eq!(count("OrderPlaced"), 1, "{id}: {types:?}");
        let (ended, not) = if *status == pb::OrderStatus::Confirmed as i32 {
            ("OrderConfirmed", "OrderRejected")
        } else {
            ("OrderRejected", "OrderConfirmed")
        };
        assert_eq!(count(ended), 1, "{id}: {types:?}");
        assert_eq!(count(not), 0, "{id}: {types:?}");
    }
}
