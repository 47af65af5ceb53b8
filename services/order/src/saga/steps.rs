//! The placement saga's steps: each calls one participant with the idempotency key
//! `<saga id>/<step>` (`.../undo` for its compensation) and says whether a failure is
//! transient (retry) or a rejection (compensate).

use std::sync::Arc;
use std::time::Duration;

use ordermesh::proto::common::v1::Money;
use ordermesh::proto::inventory::v1 as inv;
use ordermesh::proto::inventory::v1::inventory_service_client::InventoryServiceClient;
use ordermesh::proto::payment::v1 as pay;
use ordermesh::proto::payment::v1::payment_service_client::PaymentServiceClient;
use ordermesh::proto::shipping::v1 as ship;
use ordermesh::proto::shipping::v1::shipping_service_client::ShippingServiceClient;
use ordermesh::saga::{Step, StepError, StepRetry};
use ordermesh::transport::client::MeshChannel;
use ordermesh::types::ids::OrderId;
use sea_orm::DatabaseConnection;
use tonic::{Code, Status};

use super::{Participants, PlaceOrderData, CAPTURE_PAYMENT, RESERVATION_TTL_SECONDS};
use crate::domain::OrderStatus;
use crate::orders::Orders;
use crate::store;

/// What every step reaches: the participants, the orders and the database.
pub(super) struct Ctx {
    pub(super) parts: Participants,
    pub(super) orders: Orders,
    pub(super) db: DatabaseConnection,
    /// How long a step before the authorization waits for an unavailable participant.
    pub(super) step_budget: Duration,
}

impl Ctx {
    /// A cancelled order stops the saga before its next step.
    async fn still_wanted(&self, order_id: &str) -> Result<(), StepError> {
        let id = OrderId::parse(order_id).map_err(|e| StepError::Rejected(e.message().into()))?;
        match store::status(&self.db, &id).await {
            Ok(OrderStatus::Cancelled) => {
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

/// Before the payment is authorized, a participant that stays unavailable for the whole
/// budget turns the order back (nothing is held for the customer yet but stock).
fn before_authorization(budget: Duration) -> StepRetry {
    StepRetry {
        budget: Some(budget),
        ..StepRetry::default()
    }
}

/// Once the payment is authorized, only a definitive refusal (or the customer's cancel) may
/// turn the order back: a participant that is down, shedding or behind an open breaker is
/// waited for, not given up on.
fn after_authorization() -> StepRetry {
    StepRetry {
        budget: None,
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

/// The placement steps in order; `CAPTURE_PAYMENT` is the pivot.
pub(super) fn all(ctx: &Arc<Ctx>) -> Vec<Arc<dyn Step<PlaceOrderData>>> {
    vec![
        Arc::new(ReserveStock(ctx.clone())),
        Arc::new(AuthorizePayment(ctx.clone())),
        Arc::new(CreateShipment(ctx.clone())),
        Arc::new(CapturePayment(ctx.clone())),
        Arc::new(CommitStock(ctx.clone())),
        Arc::new(ConfirmOrder(ctx.clone())),
    ]
}

#[async_trait::async_trait]
impl Step<PlaceOrderData> for ReserveStock {
    fn name(&self) -> &'static str {
        "reserve_stock"
    }

    fn retry(&self) -> StepRetry {
        before_authorization(self.0.step_budget)
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

    fn retry(&self) -> StepRetry {
        before_authorization(self.0.step_budget)
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

    fn retry(&self) -> StepRetry {
        after_authorization()
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

    fn retry(&self) -> StepRetry {
        after_authorization()
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
        after_authorization()
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
        after_authorization()
    }
}
