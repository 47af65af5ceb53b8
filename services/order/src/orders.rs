//! Order state changes, in one place for everyone who moves an order: the API (placing,
//! cancelling), the placement saga (confirming, rejecting) and the shipping event handler
//! (shipped, delivered). A change and its event commit in one transaction, and watchers hear
//! about it after the commit.

use ordermesh::proto::common::v1::{Address, Money as PbMoney};
use ordermesh::proto::order::v1 as pb;
use ordermesh::transport::watch::WatchFeed;
use ordermesh::types::ids::OrderId;
use ordermesh::types::time::{now, to_proto};
use sea_orm::{DatabaseConnection, TransactionTrait};
use tonic::Status;

use crate::domain::OrderStatus;
use crate::store::{self, OrderView, StoreError};

pub(crate) fn status_to_proto(s: OrderStatus) -> pb::OrderStatus {
    match s {
        OrderStatus::Pending => pb::OrderStatus::Pending,
        OrderStatus::Confirmed => pb::OrderStatus::Confirmed,
        OrderStatus::Rejected => pb::OrderStatus::Rejected,
        OrderStatus::Cancelled => pb::OrderStatus::Cancelled,
        OrderStatus::Shipped => pb::OrderStatus::Shipped,
        OrderStatus::Delivered => pb::OrderStatus::Delivered,
    }
}

pub fn order_to_proto(v: &OrderView) -> pb::Order {
    let money = |minor: i64| {
        Some(PbMoney {
            currency_code: v.row.currency.clone(),
            amount_minor: minor,
        })
    };
    pb::Order {
        order_id: v.row.order_id.clone(),
        customer_id: v.row.customer_id.clone(),
        lines: v
            .lines
            .iter()
            .map(|l| pb::OrderLine {
                sku: l.sku.clone(),
                quantity: l.quantity,
                unit_price: money(l.unit_price_minor),
                line_total: money(l.line_total_minor),
            })
            .collect(),
        total: money(v.row.total_minor),
        status: status_to_proto(v.status()) as i32,
        status_reason: v.row.status_reason.clone(),
        shipping_address: Some(Address {
            recipient: v.row.recipient.clone(),
            street: v.row.street.clone(),
            city: v.row.city.clone(),
            postal_code: v.row.postal_code.clone(),
            country_code: v.row.country_code.clone(),
        }),
        create_time: Some(to_proto(v.row.created_at)),
        update_time: Some(to_proto(v.row.updated_at)),
        version: v.row.version,
        saga_steps: vec![],
    }
}

pub(crate) fn is_final(o: &pb::Order) -> bool {
    matches!(
        pb::OrderStatus::try_from(o.status),
        Ok(pb::OrderStatus::Rejected | pb::OrderStatus::Cancelled | pb::OrderStatus::Delivered)
    )
}

/// Fan-out of order changes to WatchOrder streams in this process.
pub type OrderFeed = WatchFeed<pb::Order>;

/// Moves orders and tells watchers.
#[derive(Clone)]
pub struct Orders {
    pub(crate) db: DatabaseConnection,
    pub(crate) feed: OrderFeed,
}

impl Orders {
    pub fn new(db: DatabaseConnection, feed: OrderFeed) -> Self {
        Self { db, feed }
    }

    /// Tells WatchOrder streams about an order changed elsewhere (an event handler).
    pub async fn announce(&self, order_id: &OrderId) {
        if let Ok(view) = store::get(&self.db, order_id).await {
            self.feed.publish(order_to_proto(&view));
        }
    }

    /// Moves an order along its status machine and tells watchers. This is how the placement
    /// saga and fulfilment report progress; a move to the current status is a no-op.
    pub async fn advance(
        &self,
        order_id: &OrderId,
        to: OrderStatus,
        reason: &str,
    ) -> Result<pb::Order, Status> {
        let txn = self.db.begin().await.map_err(ordermesh::data::db_status)?;
        let (view, changed) = move_order(&txn, order_id, to, reason).await?;
        txn.commit().await.map_err(ordermesh::data::db_status)?;
        let order = order_to_proto(&view);
        if changed {
            tracing::info!(
                order_id = %order_id,
                status = to.as_str(),
                reason,
                "order status changed"
            );
            self.feed.publish(order.clone());
        }
        Ok(order)
    }
}

/// Moves an order along its status machine inside `c` and records the event other services
/// hear about in the same transaction.
pub(crate) async fn move_order<C: sea_orm::ConnectionTrait>(
    c: &C,
    order_id: &OrderId,
    to: OrderStatus,
    reason: &str,
) -> Result<(OrderView, bool), StoreError> {
    move_order_from(c, order_id, to, reason, None).await
}

/// `move_order`, only from the given statuses.
pub(crate) async fn move_order_from<C: sea_orm::ConnectionTrait>(
    c: &C,
    order_id: &OrderId,
    to: OrderStatus,
    reason: &str,
    only_from: Option<&[OrderStatus]>,
) -> Result<(OrderView, bool), StoreError> {
    use ordermesh::proto::events::v1 as events;
    use ordermesh::proto::events::v1::event_envelope::Payload;
    let (view, changed) = store::transition_from(c, order_id, to, reason, now(), only_from).await?;
    if changed {
        let id = order_id.to_string();
        let payload = match to {
            OrderStatus::Confirmed => Some(Payload::OrderConfirmed(events::OrderConfirmed {
                order_id: id.clone(),
            })),
            OrderStatus::Rejected => Some(Payload::OrderRejected(events::OrderRejected {
                order_id: id.clone(),
                reason: reason.to_string(),
            })),
            OrderStatus::Cancelled => Some(Payload::OrderCancelled(events::OrderCancelled {
                order_id: id.clone(),
                reason: reason.to_string(),
            })),
            OrderStatus::Delivered => Some(Payload::OrderDelivered(events::OrderDelivered {
                order_id: id.clone(),
            })),
            OrderStatus::Pending | OrderStatus::Shipped => None,
        };
        if let Some(p) = payload {
            ordermesh::events::outbox::record(c, "order", "order", &id, p).await?;
        }
    }
    Ok((view, changed))
}
