//! The placement saga across the four real services (each with its own database), on SQLite
//! and on PostgreSQL.

use std::time::Duration;

use crate::helpers;

use ordermesh::config::ServiceConfig;
use ordermesh::events::amqp::BrokerUrl;
use ordermesh::proto::common::v1::{Address, Money};
use ordermesh::proto::inventory::v1 as inv;
use ordermesh::proto::inventory::v1::inventory_service_client::InventoryServiceClient;
use ordermesh::proto::order::v1 as pb;
use ordermesh::proto::order::v1::order_service_client::OrderServiceClient;
use ordermesh::proto::payment::v1 as pay;
use ordermesh::proto::payment::v1::payment_service_client::PaymentServiceClient;
use ordermesh::proto::shipping::v1 as ship;
use ordermesh::proto::shipping::v1::shipping_service_client::ShippingServiceClient;
use ordermesh::testing::{eventually, Backend, Spawned, TestDatabase};
use test_support::MeshConfig;
use tonic::transport::Channel;

pub(crate) struct Mesh {
    pub(crate) order: OrderServiceClient<Channel>,
    inventory: InventoryServiceClient<Channel>,
    payment: PaymentServiceClient<Channel>,
    shipping: ShippingServiceClient<Channel>,
    pub(crate) _servers: Vec<Spawned>,
    _dbs: Vec<TestDatabase>,
}

pub(crate) async fn mesh(backend: Backend) -> Mesh {
    mesh_with(backend, None).await
}

/// The mesh with every service's `BROKER_URL` at `broker`, when given.
async fn mesh_with(backend: Backend, broker: Option<&BrokerUrl>) -> Mesh {
    let config = MeshConfig {
        broker: broker.cloned(),
        ..MeshConfig::new(backend)
    };
    let (servers, dbs) = test_support::Mesh::participants(config)
        .await
        .with_order()
        .await
        .into_parts();

    Mesh {
        order: OrderServiceClient::connect(servers[3].uri()).await.unwrap(),
        inventory: InventoryServiceClient::connect(servers[0].uri())
            .await
            .unwrap(),
        payment: PaymentServiceClient::connect(servers[1].uri())
            .await
            .unwrap(),
        shipping: ShippingServiceClient::connect(servers[2].uri())
            .await
            .unwrap(),
        _servers: servers,
        _dbs: dbs,
    }
}

fn eur(minor: i64) -> Option<Money> {
    Some(Money {
        currency_code: "EUR".into(),
        amount_minor: minor,
    })
}

pub(crate) async fn stock(m: &mut Mesh, sku: &str, units: i64) {
    m.inventory
        .create_item(inv::CreateItemRequest {
            sku: sku.into(),
            name: sku.into(),
            price: eur(450),
            initial_stock: units,
            low_stock_threshold: 0,
        })
        .await
        .unwrap();
}

async fn item(m: &mut Mesh, sku: &str) -> inv::Item {
    m.inventory
        .get_item(inv::GetItemRequest { sku: sku.into() })
        .await
        .unwrap()
        .into_inner()
        .item
        .unwrap()
}

pub(crate) fn order_req(key: &str, sku: &str, quantity: i32, card: &str) -> pb::PlaceOrderRequest {
    pb::PlaceOrderRequest {
        customer_id: "cust-1".into(),
        lines: vec![pb::PlaceOrderLine {
            sku: sku.into(),
            quantity,
            unit_price: eur(450),
        }],
        shipping_address: Some(Address {
            recipient: "Ada Lovelace".into(),
            street: "1 Main St".into(),
            city: "Berlin".into(),
            postal_code: "10115".into(),
            country_code: "DE".into(),
        }),
        card_token: card.into(),
        idempotency_key: key.into(),
    }
}

/// Places an order; returns it as placed (its saga has started, not ended).
pub(crate) async fn start(m: &mut Mesh, req: pb::PlaceOrderRequest) -> pb::Order {
    m.order
        .place_order(req)
        .await
        .unwrap()
        .into_inner()
        .order
        .unwrap()
}

/// Places an order and waits for its saga to end; returns the final order.
async fn place(m: &mut Mesh, req: pb::PlaceOrderRequest) -> pb::Order {
    let placed = start(m, req).await;
    settle(m, &placed.order_id).await
}

/// The order as it is now.
pub(crate) async fn get(m: &mut Mesh, order_id: &str) -> pb::Order {
    m.order
        .get_order(helpers::order_now(order_id))
        .await
        .unwrap()
        .into_inner()
        .order
        .unwrap()
}

async fn settle(m: &mut Mesh, order_id: &str) -> pb::Order {
    let client = m.order.clone();
    let id = order_id.to_string();
    let final_status = |o: &pb::Order| {
        matches!(
            pb::OrderStatus::try_from(o.status),
            Ok(pb::OrderStatus::Confirmed | pb::OrderStatus::Rejected | pb::OrderStatus::Cancelled)
        ) && helpers::saga_over(o)
    };
    let done = eventually(Duration::from_secs(20), || {
        let mut c = client.clone();
        let id = id.clone();
        async move {
            c.get_order(helpers::order_now(&id))
                .await
                .map(|r| final_status(&r.into_inner().order.unwrap()))
                .unwrap_or(false)
        }
    })
    .await;
    let order = get(m, order_id).await;
    assert!(done, "saga did not finish: {order:?}");
    order
}

pub(crate) fn status(o: &pb::Order) -> pb::OrderStatus {
    pb::OrderStatus::try_from(o.status).unwrap()
}

fn steps(o: &pb::Order) -> Vec<(String, String)> {
    o.saga_steps
        .iter()
        .map(|s| (s.name.clone(), s.status.clone()))
        .collect()
}

async fn payments(m: &mut Mesh, order_id: &str) -> Vec<pay::Payment> {
    m.payment
        .list_payments(pay::ListPaymentsRequest {
            order_id: order_id.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .payments
}

async fn shipments(m: &mut Mesh, order_id: &str) -> Vec<ship::Shipment> {
    m.shipping
        .list_shipments(ship::ListShipmentsRequest {
            order_id: order_id.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .shipments
}

async fn a_placed_order_is_reserved_paid_shipped_and_confirmed(backend: Backend) {
    let mut m = mesh(backend).await;
    stock(&mut m, "TEA-1", 5).await;
    let o = place(&mut m, order_req("k1", "TEA-1", 2, "tok_visa")).await;
    assert_eq!(status(&o), pb::OrderStatus::Confirmed, "{o:?}");
    let names: Vec<String> = o.saga_steps.iter().map(|s| s.name.clone()).collect();
    assert_eq!(
        names,
        [
            "reserve_stock",
            "authorize_payment",
            "create_shipment",
            "capture_payment",
            "commit_stock",
            "confirm_order"
        ]
    );
    assert!(
        o.saga_steps.iter().all(|s| s.status == "SUCCEEDED"),
        "{o:?}"
    );
    let tea = item(&mut m, "TEA-1").await;
    assert_eq!(
        (tea.on_hand, tea.reserved),
        (3, 0),
        "two units left the warehouse"
    );
    let p = payments(&mut m, &o.order_id).await;
    assert_eq!(p.len(), 1);
    assert_eq!(p[0].status, pay::PaymentStatus::Captured as i32);
    assert_eq!(p[0].captured_amount, eur(900));
    let s = shipments(&mut m, &o.order_id).await;
    assert_eq!(s.len(), 1);
    assert_eq!(s[0].status, ship::ShipmentStatus::Pending as i32);

    // Each participant published what it did, in order, in its own event log.
    let kinds = |events: &[ordermesh::proto::events::v1::EventEnvelope]| -> Vec<&'static str> {
        events
            .iter()
            .map(|e| {
                e.payload
                    .as_ref()
                    .map(ordermesh::events::envelope::event_type)
                    .unwrap_or("")
            })
            .collect()
    };
    let inv_log = ordermesh::testing::read_event_log(
        &m._servers[0].uri(),
        1,
        &["StockReserved", "StockCommitted"],
        2,
    )
    .await;
    assert_eq!(kinds(&inv_log), ["StockReserved", "StockCommitted"]);
    assert!(inv_log.iter().all(|e| e.aggregate_id == o.order_id));
    let pay_log = ordermesh::testing::read_event_log(&m._servers[1].uri(), 1, &[], 2).await;
    assert_eq!(kinds(&pay_log), ["PaymentAuthorized", "PaymentCaptured"]);
    let order_log = ordermesh::testing::read_event_log(&m._servers[3].uri(), 1, &[], 2).await;
    assert_eq!(kinds(&order_log), ["OrderPlaced", "OrderConfirmed"]);

    // A confirmed order is paid and its stock committed: it cannot simply be cancelled.
    let e = m
        .order
        .cancel_order(pb::CancelOrderRequest {
            order_id: o.order_id.clone(),
            reason: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::FailedPrecondition, "{e:?}");

    // Placing the same order again (same key) returns it and runs nothing twice.
    let again = start(&mut m, order_req("k1", "TEA-1", 2, "tok_visa")).await;
    assert_eq!(again.order_id, o.order_id);
    let o2 = settle(&mut m, &o.order_id).await;
    assert_eq!(status(&o2), pb::OrderStatus::Confirmed);
    assert_eq!(payments(&mut m, &o.order_id).await.len(), 1);
    let tea = item(&mut m, "TEA-1").await;
    assert_eq!((tea.on_hand, tea.reserved), (3, 0));
}

async fn a_declined_card_rejects_the_order_and_releases_the_stock(backend: Backend) {
    let mut m = mesh(backend).await;
    stock(&mut m, "TEA-1", 5).await;
    let o = place(&mut m, order_req("k1", "TEA-1", 2, "tok_decline")).await;
    assert_eq!(status(&o), pb::OrderStatus::Rejected);
    assert!(
        o.status_reason.contains("card_declined"),
        "{}",
        o.status_reason
    );
    assert_eq!(
        steps(&o),
        [
            ("reserve_stock".to_string(), "COMPENSATED".to_string()),
            ("authorize_payment".to_string(), "COMPENSATED".to_string()),
        ]
    );
    let tea = item(&mut m, "TEA-1").await;
    assert_eq!((tea.on_hand, tea.reserved), (5, 0), "the stock came back");
    let p = payments(&mut m, &o.order_id).await;
    assert_eq!(p[0].status, pay::PaymentStatus::Declined as i32);
    assert!(shipments(&mut m, &o.order_id).await.is_empty());
}

async fn out_of_stock_rejects_before_any_payment(backend: Backend) {
    let mut m = mesh(backend).await;
    stock(&mut m, "TEA-1", 1).await;
    let o = place(&mut m, order_req("k1", "TEA-1", 2, "tok_visa")).await;
    assert_eq!(status(&o), pb::OrderStatus::Rejected);
    assert!(
        o.status_reason.starts_with("reserve_stock"),
        "{}",
        o.status_reason
    );
    assert!(payments(&mut m, &o.order_id).await.is_empty());
    let tea = item(&mut m, "TEA-1").await;
    assert_eq!((tea.on_hand, tea.reserved), (1, 0));
}

async fn two_orders_for_the_last_unit_never_both_succeed(backend: Backend) {
    let mut m = mesh(backend).await;
    stock(&mut m, "LAST-1", 1).await;
    let a = start(&mut m, order_req("a", "LAST-1", 1, "tok_visa")).await;
    let b = start(&mut m, order_req("b", "LAST-1", 1, "tok_visa")).await;
    let a = settle(&mut m, &a.order_id).await;
    let b = settle(&mut m, &b.order_id).await;
    let mut outcomes = [status(&a), status(&b)];
    outcomes.sort_by_key(|s| *s as i32);
    assert_eq!(
        outcomes,
        [pb::OrderStatus::Confirmed, pb::OrderStatus::Rejected],
        "{a:?} {b:?}"
    );
    let last = item(&mut m, "LAST-1").await;
    assert_eq!((last.on_hand, last.reserved), (0, 0));
    // The loser paid nothing.
    let loser = if status(&a) == pb::OrderStatus::Rejected {
        &a
    } else {
        &b
    };
    assert!(payments(&mut m, &loser.order_id).await.is_empty());
}

/// Waits until the saga has tried `step` at least twice and is still at it; returns the order
/// as it stands then.
async fn retrying(m: &mut Mesh, order_id: &str, step: &str) -> pb::Order {
    let started = std::time::Instant::now();
    loop {
        let o = get(m, order_id).await;
        let tries = o
            .saga_steps
            .iter()
            .find(|s| s.name == step)
            .map(|s| (s.status.clone(), s.attempts));
        if matches!(&tries, Some((status, n)) if status == "STARTED" && *n >= 2) {
            return o;
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "the saga is not retrying {step}: {o:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Shipping comes back on its old address with its old database.
async fn restart_shipping(m: &mut Mesh, addr: std::net::SocketAddr) {
    let app = shipping_service::App::build(&ServiceConfig::for_test("shipping", &m._dbs[2].url))
        .await
        .unwrap();
    let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
    m._servers[2] = ordermesh::testing::spawn_on(listener, |l, s| app.serve(l, s)).await;
    m.shipping = ShippingServiceClient::connect(m._servers[2].uri())
        .await
        .unwrap();
}

async fn a_shipping_outage_after_the_authorization_is_waited_for(backend: Backend) {
    let mut m = mesh(backend).await;
    stock(&mut m, "TEA-1", 5).await;
    // The payment is authorized before shipping is needed: from then on only a definitive
    // refusal may turn the order back, so an outage, however long, is waited out.
    let shipping_addr = m._servers[2].addr;
    m._servers[2].shut_down().await.unwrap();
    let placed = start(&mut m, order_req("k1", "TEA-1", 2, "tok_visa")).await;
    let waiting = retrying(&mut m, &placed.order_id, "create_shipment").await;
    assert_eq!(status(&waiting), pb::OrderStatus::Pending, "{waiting:?}");
    assert!(
        steps(&waiting).contains(&("authorize_payment".to_string(), "SUCCEEDED".to_string())),
        "{waiting:?}"
    );
    restart_shipping(&mut m, shipping_addr).await;
    let o = settle(&mut m, &placed.order_id).await;
    assert_eq!(status(&o), pb::OrderStatus::Confirmed, "{o:?}");
    let p = payments(&mut m, &o.order_id).await;
    assert_eq!(p.len(), 1);
    assert_eq!(p[0].status, pay::PaymentStatus::Captured as i32, "{p:?}");
    assert_eq!(shipments(&mut m, &o.order_id).await.len(), 1);
}

async fn cancelling_while_shipping_is_down_voids_the_payment_and_releases_the_stock(
    backend: Backend,
) {
    let mut m = mesh(backend).await;
    stock(&mut m, "TEA-1", 5).await;
    let shipping_addr = m._servers[2].addr;
    m._servers[2].shut_down().await.unwrap();
    let placed = start(&mut m, order_req("k1", "TEA-1", 2, "tok_visa")).await;
    retrying(&mut m, &placed.order_id, "create_shipment").await;
    // The customer gives up waiting: the saga turns back at its next attempt, and its
    // compensations (the shipment's waits for shipping to return) undo what was done.
    m.order
        .cancel_order(pb::CancelOrderRequest {
            order_id: placed.order_id.clone(),
            reason: "too slow".into(),
        })
        .await
        .unwrap();
    restart_shipping(&mut m, shipping_addr).await;
    let o = settle(&mut m, &placed.order_id).await;
    assert_eq!(status(&o), pb::OrderStatus::Cancelled, "{o:?}");
    // Every step done is undone (an attempt already on its way when shipping came back may
    // have created the shipment, and the saga then stopped at capture_payment instead).
    let done = steps(&o);
    assert!(done.len() >= 3, "{done:?}");
    assert!(done.iter().all(|(_, s)| s == "COMPENSATED"), "{done:?}");
    assert!(!done.iter().any(|(n, _)| n == "commit_stock"), "{done:?}");
    let tea = item(&mut m, "TEA-1").await;
    assert_eq!((tea.on_hand, tea.reserved), (5, 0), "the stock came back");
    let p = payments(&mut m, &o.order_id).await;
    assert_eq!(p.len(), 1);
    assert_eq!(p[0].status, pay::PaymentStatus::Voided as i32, "{p:?}");
    let s = shipments(&mut m, &o.order_id).await;
    assert!(
        s.iter()
            .all(|s| s.status == ship::ShipmentStatus::Cancelled as i32),
        "{s:?}"
    );
}

async fn cancelling_while_the_saga_runs_compensates_and_stays_cancelled(backend: Backend) {
    let mut m = mesh(backend).await;
    stock(&mut m, "TEA-1", 5).await;
    // The processor cannot charge this card: the saga keeps retrying the authorization
    // within its budget.
    let placed = start(&mut m, order_req("k1", "TEA-1", 2, "tok_processor_down")).await;
    let cancelled = m
        .order
        .cancel_order(pb::CancelOrderRequest {
            order_id: placed.order_id.clone(),
            reason: "changed my mind".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .order
        .unwrap();
    assert_eq!(status(&cancelled), pb::OrderStatus::Cancelled);
    let o = settle(&mut m, &placed.order_id).await;
    assert_eq!(status(&o), pb::OrderStatus::Cancelled, "{o:?}");
    assert_eq!(o.status_reason, "changed my mind");
    // The saga never got past the processor; the cancel stopped its retries and the
    // reservation it made was undone.
    assert!(
        steps(&o).contains(&("reserve_stock".to_string(), "COMPENSATED".to_string())),
        "{o:?}"
    );
    let tea = item(&mut m, "TEA-1").await;
    assert_eq!(
        (tea.on_hand, tea.reserved),
        (5, 0),
        "reserved stock released: {o:?}"
    );
    assert!(payments(&mut m, &o.order_id).await.is_empty());
    assert!(shipments(&mut m, &o.order_id).await.is_empty());
}

async fn shipping_events_move_the_order_to_delivered(backend: Backend) {
    let mut m = mesh(backend).await;
    follow_a_shipment_to_delivered(&mut m).await;
}

/// With `BROKER_URL` set everywhere, shipping's events reach the order service through
/// RabbitMQ (its queue `ordermesh.order.from.shipping`) instead of shipping's gRPC log.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn shipping_events_move_the_order_to_delivered_over_rabbitmq() {
    let vhost = ordermesh::testing::TestVhost::new().await;
    let mut m = mesh_with(Backend::Sqlite, Some(&vhost.url)).await;
    let queue = ordermesh::events::amqp::queue("order", "shipping");
    assert!(
        eventually(Duration::from_secs(30), || async {
            vhost.queue_depth(&queue).await.is_some()
        })
        .await,
        "the order service never declared {queue}"
    );
    follow_a_shipment_to_delivered(&mut m).await;
    assert_eq!(vhost.queue_depth(&queue).await, Some(0), "all consumed");
    assert!(vhost
        .take_all(&ordermesh::events::amqp::dead_letter_queue(
            "order", "shipping"
        ))
        .await
        .is_empty());
}

/// Places an order, moves its shipment to DELIVERED, and sees the order follow.
async fn follow_a_shipment_to_delivered(m: &mut Mesh) {
    stock(m, "TEA-1", 5).await;
    let o = place(m, order_req("k1", "TEA-1", 1, "tok_visa")).await;
    assert_eq!(status(&o), pb::OrderStatus::Confirmed);
    let shipment = shipments(m, &o.order_id).await.remove(0);
    let mut watch = m
        .order
        .watch_order(pb::WatchOrderRequest {
            order_id: o.order_id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    use futures::StreamExt;
    let first = watch.next().await.unwrap().unwrap().order.unwrap();
    assert_eq!(status(&first), pb::OrderStatus::Confirmed);
    for to in [
        ship::ShipmentStatus::LabelCreated,
        ship::ShipmentStatus::PickedUp,
        ship::ShipmentStatus::InTransit,
        ship::ShipmentStatus::OutForDelivery,
        ship::ShipmentStatus::Delivered,
    ] {
        m.shipping
            .record_tracking_event(ship::RecordTrackingEventRequest {
                shipment_id: shipment.shipment_id.clone(),
                status: to as i32,
                location: "Berlin".into(),
                note: String::new(),
            })
            .await
            .unwrap();
    }
    // The order service hears shipping's events and moves the order; WatchOrder shows it.
    let mut seen = Vec::new();
    while let Ok(Some(Ok(msg))) = tokio::time::timeout(Duration::from_secs(10), watch.next()).await
    {
        seen.push(status(&msg.order.unwrap()));
    }
    assert_eq!(
        seen,
        [pb::OrderStatus::Shipped, pb::OrderStatus::Delivered],
        "the stream ends at DELIVERED"
    );
    let o = get(m, &o.order_id).await;
    assert_eq!(status(&o), pb::OrderStatus::Delivered);
}

async fn a_participant_that_restarts_mid_saga_is_waited_for(backend: Backend) {
    let mut m = mesh(backend).await;
    stock(&mut m, "TEA-1", 5).await;
    // Payment goes down: the saga reserves the stock, then keeps retrying the authorization.
    let payment_addr = m._servers[1].addr;
    m._servers[1].shut_down().await.unwrap();
    let placed = start(&mut m, order_req("k1", "TEA-1", 2, "tok_visa")).await;
    let waiting = retrying(&mut m, &placed.order_id, "authorize_payment").await;
    assert_eq!(status(&waiting), pb::OrderStatus::Pending);
    // Payment comes back on the same address with the same database: the saga carries on.
    let app = payment_service::App::build(&ServiceConfig::for_test("payment", &m._dbs[1].url))
        .await
        .unwrap();
    let listener = tokio::net::TcpListener::bind(payment_addr).await.unwrap();
    m._servers[1] = ordermesh::testing::spawn_on(listener, |l, s| app.serve(l, s)).await;
    m.payment = PaymentServiceClient::connect(m._servers[1].uri())
        .await
        .unwrap();
    let o = settle(&mut m, &placed.order_id).await;
    assert_eq!(status(&o), pb::OrderStatus::Confirmed, "{o:?}");
    let p = payments(&mut m, &o.order_id).await;
    assert_eq!(p.len(), 1);
    assert_eq!(p[0].status, pay::PaymentStatus::Captured as i32);
    let tea = item(&mut m, "TEA-1").await;
    assert_eq!((tea.on_hand, tea.reserved), (3, 0));
}

ordermesh::backend_tests!(
    a_participant_that_restarts_mid_saga_is_waited_for,
    shipping_events_move_the_order_to_delivered,
    cancelling_while_the_saga_runs_compensates_and_stays_cancelled,
    a_placed_order_is_reserved_paid_shipped_and_confirmed,
    a_declined_card_rejects_the_order_and_releases_the_stock,
    out_of_stock_rejects_before_any_payment,
    two_orders_for_the_last_unit_never_both_succeed,
    a_shipping_outage_after_the_authorization_is_waited_for,
    cancelling_while_shipping_is_down_voids_the_payment_and_releases_the_stock,
);
