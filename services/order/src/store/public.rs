//! How the order's stored events look to other services: the envelope payloads they always
//! had (`OrderPlaced`, `OrderConfirmed`, `OrderRejected`, `OrderCancelled`, `OrderDelivered`).

use ordermesh::data::event_store::{StoredEvent, Upcasters};
use ordermesh::events::outbox::PublicEvents;
use ordermesh::proto::common::v1::{Money, SkuQuantity};
use ordermesh::proto::events::v1 as events;
use ordermesh::proto::events::v1::event_envelope::Payload;

use crate::aggregate::{upcasters, OrderEvent};

pub struct PublicOrderEvents {
    up: Upcasters,
}

impl Default for PublicOrderEvents {
    fn default() -> Self {
        Self { up: upcasters() }
    }
}

impl PublicEvents for PublicOrderEvents {
    fn upcasters(&self) -> &Upcasters {
        &self.up
    }

    fn aggregate_type(&self) -> &'static str {
        "order"
    }

    fn payload(&self, e: &StoredEvent) -> Result<Payload, String> {
        let event = OrderEvent::from_stored(e)
            .ok_or_else(|| format!("{} is not an order event", e.event_type))?
            .map_err(|x| x.to_string())?;
        let order_id = e.stream_id.clone();
        Ok(match event {
            OrderEvent::OrderPlaced {
                customer_id,
                currency,
                total_minor,
                lines,
                ..
            } => Payload::OrderPlaced(events::OrderPlaced {
                order_id,
                customer_id,
                total: Some(Money {
                    currency_code: currency,
                    amount_minor: total_minor,
                }),
                lines: lines
                    .into_iter()
                    .map(|l| SkuQuantity {
                        sku: l.sku,
                        quantity: l.quantity,
                    })
                    .collect(),
            }),
            OrderEvent::OrderConfirmed {} => {
                Payload::OrderConfirmed(events::OrderConfirmed { order_id })
            }
            OrderEvent::OrderRejected { reason } => {
                Payload::OrderRejected(events::OrderRejected { order_id, reason })
            }
            OrderEvent::OrderCancelled { reason } => {
                Payload::OrderCancelled(events::OrderCancelled { order_id, reason })
            }
            OrderEvent::OrderDelivered {} => {
                Payload::OrderDelivered(events::OrderDelivered { order_id })
            }
            OrderEvent::OrderShipped {} => return Err("OrderShipped is not published".into()),
        })
    }
}
