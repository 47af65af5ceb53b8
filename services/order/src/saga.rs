//! The placement saga: reserve stock -> authorize payment -> create shipment -> capture payment
//! -> commit stock -> confirm the order. A rejected step (out of stock, declined card, a
//! cancelled order) compensates the completed ones in reverse: cancel the shipment, void (or
//! refund) the payment, release the stock; the order ends REJECTED with the reason, or stays
//! CANCELLED when the customer cancelled it. Every participant call carries the idempotency
//! key `<saga id>/<step>` (`.../undo` for compensations), so a resumed saga can re-issue it.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ordermesh::proto::common::v1::{Address, Money, SkuQuantity};
use ordermesh::proto::inventory::v1 as inv;
use ordermesh::proto::inventory::v1::inventory_service_client::InventoryServiceClient;
use ordermesh::proto::payment::v1 as pay;
use ordermesh::proto::payment::v1::payment_service_client::PaymentServiceClient;
use ordermesh::proto::shipping::v1 as ship;
use ordermesh::proto::shipping::v1::shipping_service_client::ShippingServiceClient;
use ordermesh::saga::{Outcome, Saga, Step, StepError, StepRetry};
use ordermesh::transport::client::MeshChannel;
use ordermesh::types::ids::OrderId;
use sea_orm::DatabaseConnection;
use serde::{Deserialize, Serialize};
use tonic::{Code, Status};

use crate::domain::OrderStatus;
use crate::orders::Orders;
use crate::store;

pub const KIND: &str = "place_order";

/// The step after which the order is paid and the saga only goes forward (a cancel is
/// refused once the saga has passed it).
pub const CAPTURE_PAYMENT: &str = "capture_payment";

/// Reservations made by the saga outlive any plausible saga run.
const RESERVATION_TTL_SECONDS: i32 = 3600;

/// What the saga carries from step to step (persisted as JSON with the instance).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PlaceOrderData {
    pub order_id: String,
    pub currency: String,
    pub total_minor: i64,
    pub lines: Vec<(String, i32)>,
    pub address: (String, String, String, String, String),
    pub card_token: String,
    pub payment_id: Option<String>,
    pub shipment_id: Option<String>,
}

impl PlaceOrderData {
    pub fn from_view(v: &store::OrderView) -> Self {
        Self {
            order_id: v.row.order_id.clone(),
            currency: v.row.currency.clone(),
            total_minor: v.row.total_minor,
            lines: v
                .lines
                .iter()
                .map(|l| (l.sku.clone(), l.quantity))
                .collect(),
            address: (
                v.row.recipient.clone(),
                v.row.street.clone(),
                v.row.city.clone(),
                v.row.postal_code.clone(),
                v.row.country_code.clone(),
            ),
            card_token: v.row.card_token.clone(),
            payment_id: None,
            shipment_id: None,
        }
    }

    fn items(&self) -> Vec<SkuQuantity> {
        self.lines
            .iter()
            .map(|(sku, quantity)| SkuQuantity {
                sku: sku.clone(),
                quantity: *quantity,
            })
            .collect()
    }

    fn address(&self) -> Address {
        let (recipient, street, city, postal_code, country_code) = self.address.clone();
        Address {
            recipient,
            street,
            city,
            postal_code,
            country_code,
        }
    }
}

/// Channels to the saga's participants (built with `ordermesh::transport::client`).
#[derive(Clone)]
pub struct Participants {
    pub inventory: MeshChannel,
    pub payment: MeshChannel,
    pub shipping: MeshChannel,
}

struct Ctx {
    parts: Participants,
    orders: Orders,
    db: DatabaseConnection,
}

impl Ctx {
    /// A cancelled order stops the saga before its next step.
    async fn still_wanted(&self, order_id: &str) -> Result<(), StepError> {
        let id = OrderId::parse(order_id).map_err(|e| StepError::Rejected(e.message().into()))?;
        match store::get(&self.db, &id).await {
            Ok(v) if v.status() == OrderStatus::Cancelled => {
                Err(StepError::Rejected("the order was cancelled".to_string()))
            }
            Ok(_) => Ok(()),
            Err(e) => Err(StepError::Transient(e.to_string())),
        }
    }
}

fn keyed<T>(msg: T, key: &str) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    if let Ok(v) = key.parse() {
        r.metadata_mut().insert("idempotency-key", v);
    }
    r
}

fn policy() -> StepRetry {
    StepRetry::default()
}

/// After the payment is captured the saga only goes forward: a participant that is down or
/// overloaded is waited for, not given up on (turning back now would mean a refund).
fn past_the_pivot() -> StepRetry {
    StepRetry {
        attempts: u32::MAX,
        max_backoff: Duration::from_secs(5),
        ..StepRetry::default()
    }
}

fn classify(s: &Status) -> StepError {
    StepError::from_status(s, &policy())
}

struct ReserveStock(Arc<Ctx>);
struct AuthorizePayment(Arc<Ctx>);
struct CreateShipment(Arc<Ctx>);
struct CapturePayment(Arc<Ctx>);
struct CommitStock(Arc<Ctx>);
struct ConfirmOrder(Arc<Ctx>);

#[async_trait::async_trait]
impl Step<PlaceOrderData> for ReserveStock {
    fn name(&self) -> &'static str {
        "reserve_stock"
    }

    async fn action(&self, d: &mut PlaceOrderData, key: &str) -> Result<(), StepError> {
        self.0.still_wanted(&d.order_id).await?;
        InventoryServiceClient::new(self.0.parts.inventory.clone())
            .reserve_stock(keyed(
                inv::ReserveStockRequest {
                    order_id: d.order_id.clone(),
                    lines: d.items(),
                    ttl_seconds: RESERVATION_TTL_SECONDS,
                    idempotency_key: key.to_string(),
                },
                key,
            ))
            .await
            .map_err(|s| classify(&s))?;
        Ok(())
    }

    async fn compensate(&self, d: &mut PlaceOrderData, key: &str) -> Result<(), StepError> {
        InventoryServiceClient::new(self.0.parts.inventory.clone())
            .release_reservation(keyed(
                inv::ReleaseReservationRequest {
                    order_id: d.order_id.clone(),
                    idempotency_key: key.to_string(),
                },
                key,
            ))
            .await
            .map_err(|s| classify(&s))?;
        Ok(())
    }

    fn has_compensation(&self) -> bool {
        true
    }
}

#[async_trait::async_trait]
impl Step<PlaceOrderData> for AuthorizePayment {
    fn name(&self) -> &'static str {
        "authorize_payment"
    }

    async fn action(&self, d: &mut PlaceOrderData, key: &str) -> Result<(), StepError> {
        self.0.still_wanted(&d.order_id).await?;
        let payment = PaymentServiceClient::new(self.0.parts.payment.clone())
            .authorize_payment(keyed(
                pay::AuthorizePaymentRequest {
                    order_id: d.order_id.clone(),
                    amount: Some(Money {
                        currency_code: d.currency.clone(),
                        amount_minor: d.total_minor,
                    }),
                    card_token: d.card_token.clone(),
                    idempotency_key: key.to_string(),
                },
                key,
            ))
            .await
            .map_err(|s| classify(&s))?
            .into_inner()
            .payment
            .ok_or_else(|| StepError::Transient("payment missing from the reply".into()))?;
        d.payment_id = Some(payment.payment_id.clone());
        if payment.status == pay::PaymentStatus::Declined as i32 {
            return Err(StepError::Rejected(format!(
                "payment declined: {}",
                payment.decline_reason
            )));
        }
        Ok(())
    }

    async fn compensate(&self, d: &mut PlaceOrderData, key: &str) -> Result<(), StepError> {
        let mut client = PaymentServiceClient::new(self.0.parts.payment.clone());
        // The action's answer was lost (or it never arrived): void by order, which also
        // refuses an authorization still in flight, so none is left behind.
        let Some(id) = d.payment_id.clone() else {
            client
                .void_payment(keyed(
                    pay::VoidPaymentRequest {
                        payment_id: String::new(),
                        idempotency_key: key.to_string(),
                        order_id: d.order_id.clone(),
                    },
                    key,
                ))
                .await
                .map_err(|s| classify(&s))?;
            return Ok(());
        };
        let void_key = format!("{key}/{id}");
        match client
            .void_payment(keyed(
                pay::VoidPaymentRequest {
                    payment_id: id.clone(),
                    idempotency_key: void_key.clone(),
                    order_id: String::new(),
                },
                &void_key,
            ))
            .await
        {
            Ok(_) => {}
            // Declined: nothing to void. Captured: refund instead (capture's own
            // compensation does this too; the refund key makes it happen once).
            Err(s) if s.code() == Code::FailedPrecondition => {
                let p = client
                    .get_payment(pay::GetPaymentRequest {
                        payment_id: id.clone(),
                    })
                    .await
                    .map_err(|s| classify(&s))?
                    .into_inner()
                    .payment;
                let captured = p.as_ref().is_some_and(|p| {
                    p.status == pay::PaymentStatus::Captured as i32
                        || p.status == pay::PaymentStatus::PartiallyRefunded as i32
                });
                if captured {
                    refund(
                        &mut client,
                        &id,
                        &format!("{}/capture_payment/undo", saga_of(key)),
                    )
                    .await?;
                }
            }
            Err(s) => return Err(classify(&s)),
        }
        Ok(())
    }

    fn has_compensation(&self) -> bool {
        true
    }
}

/// `<saga id>` from a step key `<saga id>/<step>[/undo]`.
fn saga_of(key: &str) -> &str {
    key.split('/').next().unwrap_or(key)
}

async fn refund(
    client: &mut PaymentServiceClient<MeshChannel>,
    payment_id: &str,
    key: &str,
) -> Result<(), StepError> {
    match client
        .refund_payment(keyed(
            pay::RefundPaymentRequest {
                payment_id: payment_id.to_string(),
                amount: None,
                idempotency_key: key.to_string(),
                reason: "order placement compensated".into(),
            },
            key,
        ))
        .await
    {
        Ok(_) => Ok(()),
        // Already refunded in full (e.g. by the other compensation): done.
        Err(s) if s.code() == Code::FailedPrecondition => Ok(()),
        Err(s) => Err(classify(&s)),
    }
}

#[async_trait::async_trait]
impl Step<PlaceOrderData> for CreateShipment {
    fn name(&self) -> &'static str {
        "create_shipment"
    }

    async fn action(&self, d: &mut PlaceOrderData, key: &str) -> Result<(), StepError> {
        self.0.still_wanted(&d.order_id).await?;
        // Shipping prices in USD, EUR or GBP; other order currencies are quoted in USD.
        let currency = match d.currency.as_str() {
            c @ ("USD" | "EUR" | "GBP") => c.to_string(),
            _ => "USD".to_string(),
        };
        let shipment = ShippingServiceClient::new(self.0.parts.shipping.clone())
            .create_shipment(keyed(
                ship::CreateShipmentRequest {
                    order_id: d.order_id.clone(),
                    address: Some(d.address()),
                    items: d.items(),
                    currency_code: currency,
                    idempotency_key: key.to_string(),
                },
                key,
            ))
            .await
            .map_err(|s| classify(&s))?
            .into_inner()
            .shipment
            .ok_or_else(|| StepError::Transient("shipment missing from the reply".into()))?;
        d.shipment_id = Some(shipment.shipment_id);
        Ok(())
    }

    async fn compensate(&self, d: &mut PlaceOrderData, key: &str) -> Result<(), StepError> {
        let mut client = ShippingServiceClient::new(self.0.parts.shipping.clone());
        // The action's answer was lost (or it never arrived): cancel by order, which also
        // refuses a creation still in flight.
        let Some(id) = d.shipment_id.clone() else {
            client
                .cancel_shipment(keyed(
                    ship::CancelShipmentRequest {
                        shipment_id: String::new(),
                        idempotency_key: key.to_string(),
                        reason: "order placement compensated".into(),
                        order_id: d.order_id.clone(),
                    },
                    key,
                ))
                .await
                .map_err(|s| classify(&s))?;
            return Ok(());
        };
        let k = format!("{key}/{id}");
        client
            .cancel_shipment(keyed(
                ship::CancelShipmentRequest {
                    shipment_id: id,
                    idempotency_key: k.clone(),
                    reason: "order placement compensated".into(),
                    order_id: String::new(),
                },
                &k,
            ))
            .await
            .map_err(|s| classify(&s))?;
        Ok(())
    }

    fn has_compensation(&self) -> bool {
        true
    }
}

#[async_trait::async_trait]
impl Step<PlaceOrderData> for CapturePayment {
    fn name(&self) -> &'static str {
        CAPTURE_PAYMENT
    }

    async fn action(&self, d: &mut PlaceOrderData, key: &str) -> Result<(), StepError> {
        self.0.still_wanted(&d.order_id).await?;
        let id = d
            .payment_id
            .clone()
            .ok_or_else(|| StepError::Rejected("no authorized payment to capture".into()))?;
        PaymentServiceClient::new(self.0.parts.payment.clone())
            .capture_payment(keyed(
                pay::CapturePaymentRequest {
                    payment_id: id,
                    amount: None,
                    idempotency_key: key.to_string(),
                },
                key,
            ))
            .await
            .map_err(|s| classify(&s))?;
        Ok(())
    }

    async fn compensate(&self, d: &mut PlaceOrderData, key: &str) -> Result<(), StepError> {
        let Some(id) = d.payment_id.clone() else {
            return Ok(());
        };
        let mut client = PaymentServiceClient::new(self.0.parts.payment.clone());
        let p = client
            .get_payment(pay::GetPaymentRequest {
                payment_id: id.clone(),
            })
            .await
            .map_err(|s| classify(&s))?
            .into_inner()
            .payment;
        // Only a capture that happened is refunded; an authorization is voided by its own
        // compensation.
        if p.is_some_and(|p| p.status == pay::PaymentStatus::Captured as i32) {
            refund(&mut client, &id, key).await?;
        }
        Ok(())
    }

    fn has_compensation(&self) -> bool {
        true
    }
}

#[async_trait::async_trait]
impl Step<PlaceOrderData> for CommitStock {
    fn name(&self) -> &'static str {
        "commit_stock"
    }

    fn retry(&self) -> StepRetry {
        past_the_pivot()
    }

    async fn action(&self, d: &mut PlaceOrderData, key: &str) -> Result<(), StepError> {
        self.0.still_wanted(&d.order_id).await?;
        InventoryServiceClient::new(self.0.parts.inventory.clone())
            .commit_reservation(keyed(
                inv::CommitReservationRequest {
                    order_id: d.order_id.clone(),
                    idempotency_key: key.to_string(),
                },
                key,
            ))
            .await
            .map_err(|s| classify(&s))?;
        Ok(())
    }
}

#[async_trait::async_trait]
impl Step<PlaceOrderData> for ConfirmOrder {
    fn name(&self) -> &'static str {
        "confirm_order"
    }

    async fn action(&self, d: &mut PlaceOrderData, _key: &str) -> Result<(), StepError> {
        let id =
            OrderId::parse(&d.order_id).map_err(|e| StepError::Rejected(e.message().into()))?;
        self.0
            .orders
            .advance(&id, OrderStatus::Confirmed, "")
            .await
            .map(|_| ())
            .map_err(|s| classify(&s))
    }

    fn timeout(&self) -> Duration {
        Duration::from_secs(5)
    }

    fn retry(&self) -> StepRetry {
        past_the_pivot()
    }
}

/// The order saga and the instances this process is running.
pub struct OrderSaga {
    pub def: Saga<PlaceOrderData>,
    ctx: Arc<Ctx>,
    running: Mutex<HashSet<String>>,
}

impl OrderSaga {
    pub fn new(parts: Participants, orders: Orders, db: DatabaseConnection) -> Arc<Self> {
        let ctx = Arc::new(Ctx { parts, orders, db });
        let def = Saga {
            kind: KIND,
            steps: vec![
                Arc::new(ReserveStock(ctx.clone())),
                Arc::new(AuthorizePayment(ctx.clone())),
                Arc::new(CreateShipment(ctx.clone())),
                Arc::new(CapturePayment(ctx.clone())),
                Arc::new(CommitStock(ctx.clone())),
                Arc::new(ConfirmOrder(ctx.clone())),
            ],
        };
        Arc::new(Self {
            def,
            ctx,
            running: Mutex::new(HashSet::new()),
        })
    }

    /// The saga id of an order.
    pub fn saga_id(order_id: &str) -> String {
        format!("saga-{order_id}")
    }

    /// Runs an order's saga in the background unless this process already runs it.
    pub fn spawn(self: &Arc<Self>, order_id: &str) {
        let saga_id = Self::saga_id(order_id);
        let Ok(mut running) = self.running.lock() else {
            return;
        };
        if !running.insert(saga_id.clone()) {
            return;
        }
        drop(running);
        let this = self.clone();
        let order_id = order_id.to_string();
        // In the placing request's span and trace, so the saga's spans join the order's trace.
        tokio::spawn(ordermesh::telemetry::carry(async move {
            let outcome = this.def.run(&this.ctx.db, &saga_id).await;
            match outcome {
                Ok(Outcome::Completed) => {
                    tracing::info!(%order_id, "order placed: saga completed");
                }
                Ok(Outcome::Compensated { step, reason }) => {
                    tracing::info!(%order_id, %step, %reason, "order rejected: saga compensated");
                    if let Ok(id) = OrderId::parse(&order_id) {
                        // A cancelled order stays cancelled; otherwise it is rejected.
                        if let Err(e) = this
                            .ctx
                            .orders
                            .advance(&id, OrderStatus::Rejected, &reason)
                            .await
                        {
                            if e.code() != Code::FailedPrecondition {
                                tracing::warn!(%order_id, error = %e, "could not mark the order rejected");
                            }
                        }
                    }
                }
                Err(e) => {
                    tracing::error!(%order_id, error = %e, "saga stopped; it resumes at the next start")
                }
            }
            if let Ok(mut running) = this.running.lock() {
                running.remove(&saga_id);
            }
        }));
    }

    /// Resumes every unfinished saga (at start-up).
    /// Also picks up PENDING orders whose saga finished but whose outcome was not yet written
    /// to the order (a crash between the two).
    pub async fn resume_all(self: &Arc<Self>) -> Result<usize, ordermesh::saga::SagaError> {
        let mut orders: Vec<String> = self
            .def
            .unfinished(&self.ctx.db)
            .await?
            .iter()
            .filter_map(|s| s.strip_prefix("saga-").map(str::to_string))
            .collect();
        for id in store::pending_order_ids(&self.ctx.db)
            .await
            .map_err(|e| ordermesh::saga::SagaError::Db(sea_orm::DbErr::Custom(e.to_string())))?
        {
            if !orders.contains(&id) {
                orders.push(id);
            }
        }
        for order_id in &orders {
            tracing::info!(%order_id, "resuming saga");
            self.spawn(order_id);
        }
        Ok(orders.len())
    }
}
