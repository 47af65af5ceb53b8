//! Duplicates and reordering at the saga's participants (the real services, each with its own
//! database, on SQLite and PostgreSQL): every call delivered twice changes nothing the second
//! time; a compensation that arrives before its action makes the action a refused no-op; and a
//! late action racing its compensation never leaves an effect behind.

use ordermesh::proto::common::v1::{Address, Money, SkuQuantity};
use ordermesh::proto::inventory::v1 as inv;
use ordermesh::proto::inventory::v1::inventory_service_client::InventoryServiceClient;
use ordermesh::proto::payment::v1 as pay;
use ordermesh::proto::payment::v1::payment_service_client::PaymentServiceClient;
use ordermesh::proto::shipping::v1 as ship;
use ordermesh::proto::shipping::v1::shipping_service_client::ShippingServiceClient;
use ordermesh::testing::{Backend, Spawned, TestDatabase};
use tonic::transport::Channel;
use tonic::Code;

struct Parts {
    inventory: InventoryServiceClient<Channel>,
    payment: PaymentServiceClient<Channel>,
    shipping: ShippingServiceClient<Channel>,
    _servers: Vec<Spawned>,
    _dbs: Vec<TestDatabase>,
}

/// Sends the same request twice on `client.method`; the second answer must equal the first,
/// which is given back.
macro_rules! twice {
    ($client:expr, $method:ident, $req:expr) => {{
        let req = $req;
        let first = $client.$method(req.clone()).await.unwrap().into_inner();
        let second = $client.$method(req).await.unwrap().into_inner();
        assert_eq!(
            first, second,
            concat!(stringify!($method), " answered otherwise the second time")
        );
        first
    }};
}

async fn parts(backend: Backend) -> Parts {
    let (servers, dbs) = test_support::participants(backend).await;
    let ch = |s: &Spawned| Channel::from_shared(s.uri()).unwrap().connect_lazy();
    Parts {
        inventory: InventoryServiceClient::new(ch(&servers[0])),
        payment: PaymentServiceClient::new(ch(&servers[1])),
        shipping: ShippingServiceClient::new(ch(&servers[2])),
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

fn lines(sku: &str, n: i32) -> Vec<SkuQuantity> {
    vec![SkuQuantity {
        sku: sku.into(),
        quantity: n,
    }]
}

fn address() -> Option<Address> {
    Some(Address {
        recipient: "Ada Lovelace".into(),
        street: "1 Main St".into(),
        city: "Berlin".into(),
        postal_code: "10115".into(),
        country_code: "DE".into(),
    })
}

async fn item(p: &mut Parts, sku: &str, stock: i64) {
    p.inventory
        .create_item(inv::CreateItemRequest {
            sku: sku.into(),
            name: sku.into(),
            price: eur(500),
            initial_stock: stock,
            low_stock_threshold: 0,
        })
        .await
        .unwrap();
}

/// (on hand, reserved, available)
async fn stock(p: &mut Parts, sku: &str) -> (i64, i64, i64) {
    let i = p
        .inventory
        .get_item(inv::GetItemRequest { sku: sku.into() })
        .await
        .unwrap()
        .into_inner()
        .item
        .unwrap();
    (i.on_hand, i.reserved, i.available)
}

fn reserve(order: &str, sku: &str, n: i32, key: &str) -> inv::ReserveStockRequest {
    inv::ReserveStockRequest {
        order_id: order.into(),
        lines: lines(sku, n),
        ttl_seconds: 0,
        idempotency_key: key.into(),
    }
}

fn authorize(order: &str, key: &str) -> pay::AuthorizePaymentRequest {
    pay::AuthorizePaymentRequest {
        order_id: order.into(),
        amount: eur(1000),
        card_token: "tok_visa".into(),
        idempotency_key: key.into(),
    }
}

fn void_order(order: &str, key: &str) -> pay::VoidPaymentRequest {
    pay::VoidPaymentRequest {
        payment_id: String::new(),
        idempotency_key: key.into(),
        order_id: order.into(),
    }
}

fn create_shipment(order: &str, sku: &str, key: &str) -> ship::CreateShipmentRequest {
    ship::CreateShipmentRequest {
        order_id: order.into(),
        address: address(),
        items: lines(sku, 2),
        currency_code: "EUR".into(),
        idempotency_key: key.into(),
    }
}

fn cancel_order(order: &str, key: &str) -> ship::CancelShipmentRequest {
    ship::CancelShipmentRequest {
        shipment_id: String::new(),
        idempotency_key: key.into(),
        reason: "compensated".into(),
        order_id: order.into(),
    }
}

async fn payments_of(p: &mut Parts, order: &str) -> Vec<pay::Payment> {
    p.payment
        .list_payments(pay::ListPaymentsRequest {
            page_size: 100,
            page_token: String::new(),
            order_id: order.into(),
        })
        .await
        .unwrap()
        .into_inner()
        .payments
}

async fn shipments_of(p: &mut Parts, order: &str) -> Vec<ship::Shipment> {
    p.shipping
        .list_shipments(ship::ListShipmentsRequest {
            page_size: 100,
            page_token: String::new(),
            order_id: order.into(),
        })
        .await
        .unwrap()
        .into_inner()
        .shipments
}

async fn every_call_twice_changes_nothing_the_second_time(backend: Backend) {
    let mut p = parts(backend).await;
    item(&mut p, "DUP-1", 10).await;
    let o = "ord_dup_1";
    // Forward steps, each twice with the same key: the same answer, one effect.
    twice!(
        p.inventory,
        reserve_stock,
        reserve(o, "DUP-1", 2, "s/reserve")
    );
    assert_eq!(stock(&mut p, "DUP-1").await, (10, 2, 8));
    let a1 = twice!(p.payment, authorize_payment, authorize(o, "s/authorize"));
    assert_eq!(payments_of(&mut p, o).await.len(), 1);
    let pid = a1.payment.unwrap().payment_id;
    twice!(
        p.shipping,
        create_shipment,
        create_shipment(o, "DUP-1", "s/ship")
    );
    assert_eq!(shipments_of(&mut p, o).await.len(), 1);
    let capture = pay::CapturePaymentRequest {
        payment_id: pid.clone(),
        amount: None,
        idempotency_key: "s/capture".into(),
    };
    let k1 = twice!(p.payment, capture_payment, capture);
    assert_eq!(
        k1.payment.unwrap().captured_amount.unwrap().amount_minor,
        1000
    );
    let commit = inv::CommitReservationRequest {
        order_id: o.into(),
        idempotency_key: "s/commit".into(),
    };
    twice!(p.inventory, commit_reservation, commit);
    assert_eq!(stock(&mut p, "DUP-1").await, (8, 0, 8));
    // The same key with another payload is refused, not applied.
    let other = p
        .inventory
        .reserve_stock(reserve(o, "DUP-1", 3, "s/reserve"))
        .await
        .unwrap_err();
    assert_eq!(other.code(), Code::AlreadyExists, "{other:?}");
    assert_eq!(stock(&mut p, "DUP-1").await, (8, 0, 8));

    // Compensations, each twice, on a second order.
    let o = "ord_dup_2";
    p.inventory
        .reserve_stock(reserve(o, "DUP-1", 3, "t/reserve"))
        .await
        .unwrap();
    p.payment
        .authorize_payment(authorize(o, "t/authorize"))
        .await
        .unwrap();
    p.shipping
        .create_shipment(create_shipment(o, "DUP-1", "t/ship"))
        .await
        .unwrap();
    let release = inv::ReleaseReservationRequest {
        order_id: o.into(),
        idempotency_key: "t/reserve/undo".into(),
    };
    twice!(p.inventory, release_reservation, release);
    assert_eq!(stock(&mut p, "DUP-1").await, (8, 0, 8));
    let v1 = twice!(p.payment, void_payment, void_order(o, "t/authorize/undo"));
    assert_eq!(v1.payments.len(), 1);
    assert_eq!(v1.payments[0].status, pay::PaymentStatus::Voided as i32);
    let x1 = twice!(p.shipping, cancel_shipment, cancel_order(o, "t/ship/undo"));
    assert_eq!(x1.shipments.len(), 1);
    assert_eq!(
        x1.shipments[0].status,
        ship::ShipmentStatus::Cancelled as i32
    );
}

async fn a_compensation_before_its_action_makes_the_action_a_refused_no_op(backend: Backend) {
    let mut p = parts(backend).await;
    item(&mut p, "LATE-1", 10).await;
    let o = "ord_late_1";
    // The saga gave up on each step without an answer and compensated by order; then the
    // original calls arrive.
    p.inventory
        .release_reservation(inv::ReleaseReservationRequest {
            order_id: o.into(),
            idempotency_key: "s/reserve/undo".into(),
        })
        .await
        .unwrap();
    let v = p
        .payment
        .void_payment(void_order(o, "s/authorize/undo"))
        .await
        .unwrap()
        .into_inner();
    assert!(v.payments.is_empty());
    let x = p
        .shipping
        .cancel_shipment(cancel_order(o, "s/ship/undo"))
        .await
        .unwrap()
        .into_inner();
    assert!(x.shipments.is_empty());

    let late = p
        .inventory
        .reserve_stock(reserve(o, "LATE-1", 2, "s/reserve"))
        .await
        .unwrap_err();
    assert_eq!(late.code(), Code::FailedPrecondition, "{late:?}");
    assert_eq!(stock(&mut p, "LATE-1").await, (10, 0, 10));
    let late = p
        .payment
        .authorize_payment(authorize(o, "s/authorize"))
        .await
        .unwrap_err();
    assert_eq!(late.code(), Code::FailedPrecondition, "{late:?}");
    assert!(payments_of(&mut p, o).await.is_empty());
    let late = p
        .shipping
        .create_shipment(create_shipment(o, "LATE-1", "s/ship"))
        .await
        .unwrap_err();
    assert_eq!(late.code(), Code::FailedPrecondition, "{late:?}");
    assert!(shipments_of(&mut p, o).await.is_empty());
    // Repeated compensations still answer the same.
    let again = p
        .payment
        .void_payment(void_order(o, "s/authorize/undo"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again, v);
}

async fn a_late_action_racing_its_compensation_leaves_nothing_behind(backend: Backend) {
    let mut p = parts(backend).await;
    let (mut applied, mut refused) = (0, 0);
    for i in 0..20 {
        let o = format!("ord_race_{i}");
        let mut pay_a = p.payment.clone();
        let mut pay_b = p.payment.clone();
        let mut ship_a = p.shipping.clone();
        let mut ship_b = p.shipping.clone();
        let (a, _v, c, _x) = tokio::join!(
            pay_a.authorize_payment(authorize(&o, &format!("{o}/authorize"))),
            pay_b.void_payment(void_order(&o, &format!("{o}/authorize/undo"))),
            ship_a.create_shipment(create_shipment(&o, "RACE-1", &format!("{o}/ship"))),
            ship_b.cancel_shipment(cancel_order(&o, &format!("{o}/ship/undo"))),
        );
        match a {
            Ok(_) => applied += 1,
            Err(s) => {
                assert_eq!(s.code(), Code::FailedPrecondition, "{s:?}");
                refused += 1;
            }
        }
        if let Err(s) = c {
            assert_eq!(s.code(), Code::FailedPrecondition, "{s:?}");
        }
        let payments = payments_of(&mut p, &o).await;
        assert!(
            payments
                .iter()
                .all(|p| p.status == pay::PaymentStatus::Voided as i32),
            "order {o}: a payment survived its void: {payments:?}"
        );
        let shipments = shipments_of(&mut p, &o).await;
        assert!(
            shipments
                .iter()
                .all(|s| s.status == ship::ShipmentStatus::Cancelled as i32),
            "order {o}: a shipment survived its cancel: {shipments:?}"
        );
    }
    eprintln!("authorizations applied then voided: {applied}, refused: {refused}");
    assert_eq!(applied + refused, 20);
}

ordermesh::backend_tests!(
    every_call_twice_changes_nothing_the_second_time,
    a_compensation_before_its_action_makes_the_action_a_refused_no_op,
    a_late_action_racing_its_compensation_leaves_nothing_behind,
);
