//! The placement saga: reserve stock -> authorize payment -> create shipment -> capture payment
//! -> commit stock -> confirm the order. A rejected step (out of stock, declined card, a
//! cancelled order) compensates the completed ones in reverse: cancel the shipment, void (or
//! refund) the payment, release the stock; the order ends REJECTED with the reason, or stays
//! CANCELLED when the customer cancelled it. Every participant call carries the idempotency
//! key `<saga id>/<step>` (`.../undo` for compensations), so a resumed saga can re-issue it.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use ordermesh::proto::common::v1::{Address, SkuQuantity};
use ordermesh::saga::{Outcome, Saga};
use ordermesh::transport::client::MeshChannel;
use ordermesh::types::ids::OrderId;
use sea_orm::DatabaseConnection;
use serde::{Deserialize, Serialize};
use tonic::Code;

use crate::domain::OrderStatus;
use crate::orders::Orders;
use crate::store;

mod steps;

use steps::Ctx;

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
    /// The data of the saga of an order being placed with `placed`.
    pub fn from_placed(order_id: &str, placed: &crate::aggregate::OrderEvent) -> Self {
        let mut d = Self {
            order_id: order_id.to_string(),
            currency: String::new(),
            total_minor: 0,
            lines: vec![],
            address: Default::default(),
            card_token: String::new(),
            payment_id: None,
            shipment_id: None,
        };
        if let crate::aggregate::OrderEvent::OrderPlaced {
            currency,
            total_minor,
            lines,
            address,
            card_token,
            ..
        } = placed
        {
            d.currency = currency.clone();
            d.total_minor = *total_minor;
            d.lines = lines.iter().map(|l| (l.sku.clone(), l.quantity)).collect();
            d.address = (
                address.recipient.clone(),
                address.street.clone(),
                address.city.clone(),
                address.postal_code.clone(),
                address.country_code.clone(),
            );
            d.card_token = card_token.clone();
        }
        d
    }

    pub fn from_order(o: &crate::aggregate::Order) -> Self {
        Self {
            order_id: o.order_id.clone(),
            currency: o.currency.clone(),
            total_minor: o.total_minor,
            lines: o
                .lines
                .iter()
                .map(|l| (l.sku.clone(), l.quantity))
                .collect(),
            address: (
                o.address.recipient.clone(),
                o.address.street.clone(),
                o.address.city.clone(),
                o.address.postal_code.clone(),
                o.address.country_code.clone(),
            ),
            card_token: o.card_token.clone(),
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

/// Channels to the saga's participants (built with `ordermesh::transport::client`), and how
/// long a step before the payment is authorized waits for one that is unavailable.
#[derive(Clone)]
pub struct Participants {
    pub inventory: MeshChannel,
    pub payment: MeshChannel,
    pub shipping: MeshChannel,
    /// `SAGA_STEP_BUDGET`; `DEFAULT_STEP_BUDGET` unless set.
    pub step_budget: std::time::Duration,
}

/// How long reserve_stock and authorize_payment retry a participant that is unavailable
/// (breaker open, shedding, restarting, a card the processor cannot charge now) before the
/// order is rejected. Later steps wait for as long as it takes.
pub const DEFAULT_STEP_BUDGET: std::time::Duration = std::time::Duration::from_secs(30);

/// An order's saga is kept in the order's own stream (`saga-<order id>` -> `<order id>`), so
/// the saga's steps and the customer's cancel are ordered by one version.
pub fn order_stream(saga_id: &str) -> String {
    saga_id.strip_prefix("saga-").unwrap_or(saga_id).to_string()
}

/// The order saga and the instances this process is running.
pub struct OrderSaga {
    pub def: Saga<PlaceOrderData>,
    ctx: Arc<Ctx>,
    running: Mutex<HashSet<String>>,
}

impl OrderSaga {
    pub fn new(parts: Participants, orders: Orders, db: DatabaseConnection) -> Arc<Self> {
        let ctx = Arc::new(Ctx {
            step_budget: parts.step_budget,
            parts,
            orders,
            db,
        });
        let def = Saga {
            kind: KIND,
            steps: steps::all(&ctx),
            stream_of: order_stream,
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

    /// Runs the saga of an order just placed (its first step recorded as started with it).
    pub fn spawn_new(self: &Arc<Self>, order_id: &str) {
        self.spawn_run(order_id, true)
    }

    /// Runs an order's saga in the background unless this process already runs it.
    pub fn spawn(self: &Arc<Self>, order_id: &str) {
        self.spawn_run(order_id, false)
    }

    fn spawn_run(self: &Arc<Self>, order_id: &str, new: bool) {
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
        // In the placing request's span and trace, so the saga's spans join the order's trace,
        // and with the fault headers the request passes on, so a fault aimed at a participant
        // reaches it (docs/faults.md).
        tokio::spawn(ordermesh::transport::faults::carry(
            ordermesh::telemetry::carry(async move {
                let outcome = if new {
                    this.def.run_new(this.ctx.orders.writes(), &saga_id).await
                } else {
                    this.def.run(this.ctx.orders.writes(), &saga_id).await
                };
                // The saga's own events move the read models (saga durations) too.
                this.ctx.orders.projector().poke();
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
                    Err(ordermesh::saga::SagaError::Conflict(_)) => {
                        tracing::info!(%order_id, "saga is being run by another process");
                    }
                    Err(e) => {
                        tracing::error!(%order_id, error = %e, "saga stopped; it resumes at the next start")
                    }
                }
                if let Ok(mut running) = this.running.lock() {
                    running.remove(&saga_id);
                }
            }),
        ));
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
