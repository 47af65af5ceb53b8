//! The choreographed half of fulfilment: the order service listens to shipping's events and
//! moves orders along without anyone orchestrating it. A picked-up shipment makes its order
//! SHIPPED; a delivered one makes it DELIVERED. Events about orders that cannot move that way
//! (cancelled, unknown here) are acknowledged and ignored.

use ordermesh::events::inbox::{Handler, HandlerError};
use ordermesh::proto::events::v1 as pb;
use ordermesh::proto::events::v1::event_envelope::Payload;
use ordermesh::types::ids::OrderId;
use sea_orm::DatabaseTransaction;

use crate::domain::{OrderError, OrderStatus};
use crate::orders::Orders;
use crate::store::StoreError;

/// The event types the order service takes from shipping.
pub const SHIPPING_EVENTS: [&str; 2] = ["ShipmentStatusChanged", "ShipmentDelivered"];

pub struct ShippingEvents {
    pub orders: Orders,
}

fn order_of(event: &pb::EventEnvelope) -> Option<(String, Vec<OrderStatus>)> {
    match &event.payload {
        Some(Payload::ShipmentStatusChanged(e)) if e.status == "PICKED_UP" => {
            Some((e.order_id.clone(), vec![OrderStatus::Shipped]))
        }
        Some(Payload::ShipmentDelivered(e)) => Some((
            e.order_id.clone(),
            vec![OrderStatus::Shipped, OrderStatus::Delivered],
        )),
        _ => None,
    }
}

#[async_trait::async_trait]
impl Handler for ShippingEvents {
    async fn handle(
        &self,
        txn: &DatabaseTransaction,
        event: &pb::EventEnvelope,
    ) -> Result<(), HandlerError> {
        let Some((order_id, steps)) = order_of(event) else {
            return Ok(());
        };
        let Ok(id) = OrderId::parse(&order_id) else {
            return Ok(());
        };
        let meta = ordermesh::data::event_store::Metadata::current(&order_id, &event.event_id, "");
        for to in steps {
            match crate::store::transition_from(txn, self.orders.writer, &id, to, "", None, &meta)
                .await
            {
                Ok(_) => {}
                // Picked up while the saga is still confirming the order: not yet.
                Err(StoreError::Domain(OrderError::IllegalTransition {
                    from: "PENDING", ..
                })) => {
                    return Err(HandlerError::Retry(format!(
                        "order {order_id} is not confirmed yet"
                    )));
                }
                Err(StoreError::Domain(OrderError::IllegalTransition { from, .. })) => {
                    tracing::info!(%order_id, from, to = to.as_str(), event_id = %event.event_id, "shipment event does not move this order; ignored");
                    return Ok(());
                }
                Err(StoreError::Domain(OrderError::NotFound(_))) => return Ok(()),
                Err(e) => return Err(HandlerError::Retry(e.to_string())),
            }
        }
        Ok(())
    }

    async fn committed(&self, event: &pb::EventEnvelope) {
        if let Some((order_id, _)) = order_of(event) {
            if let Ok(id) = OrderId::parse(&order_id) {
                self.orders.announce(&id).await;
            }
        }
    }
}
