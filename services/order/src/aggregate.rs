//! The order aggregate: an order is the fold of the events of its stream (named by the order
//! id), and a command checks the rules against that state and answers with the events to
//! append, or a refusal. No code updates an order in place.
//!
//! The stream also holds the order's placement saga (`ordermesh::saga::journal`): its steps are
//! events of the same stream, so a customer's cancel and the saga's next step are ordered by
//! the stream's version and cannot cross.

use chrono::{DateTime, Utc};
use ordermesh::data::event_store::{NewEvent, StoredEvent, Upcasters};
use ordermesh::saga::{SagaEvent, SagaState};
use serde::{Deserialize, Serialize};

use crate::domain::{OrderError, OrderStatus};

/// The schema version of `Order` as snapshots store it; a snapshot of another version is
/// ignored and the state is rebuilt from the events.
pub const STATE_SCHEMA: i32 = 1;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LineData {
    pub sku: String,
    pub quantity: i32,
    pub unit_price_minor: i64,
    pub line_total_minor: i64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AddressData {
    pub recipient: String,
    pub street: String,
    pub city: String,
    pub postal_code: String,
    pub country_code: String,
}

/// What happens to an order. Stored as JSON under the variant's name; `OrderPlaced` is at
/// schema version 2 (version 1 had no line totals and no order total: `upcasters` computes
/// them).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum OrderEvent {
    OrderPlaced {
        customer_id: String,
        currency: String,
        total_minor: i64,
        lines: Vec<LineData>,
        address: AddressData,
        card_token: String,
    },
    OrderConfirmed {},
    OrderRejected {
        reason: String,
    },
    OrderCancelled {
        reason: String,
    },
    OrderShipped {},
    OrderDelivered {},
}

impl OrderEvent {
    pub fn event_type(&self) -> &'static str {
        match self {
            Self::OrderPlaced { .. } => "OrderPlaced",
            Self::OrderConfirmed {} => "OrderConfirmed",
            Self::OrderRejected { .. } => "OrderRejected",
            Self::OrderCancelled { .. } => "OrderCancelled",
            Self::OrderShipped {} => "OrderShipped",
            Self::OrderDelivered {} => "OrderDelivered",
        }
    }

    /// The status the order has after this event.
    pub fn status(&self) -> OrderStatus {
        match self {
            Self::OrderPlaced { .. } => OrderStatus::Pending,
            Self::OrderConfirmed {} => OrderStatus::Confirmed,
            Self::OrderRejected { .. } => OrderStatus::Rejected,
            Self::OrderCancelled { .. } => OrderStatus::Cancelled,
            Self::OrderShipped {} => OrderStatus::Shipped,
            Self::OrderDelivered {} => OrderStatus::Delivered,
        }
    }

    /// Why the order moved, for the moves that say (rejected, cancelled); empty otherwise.
    pub fn reason(&self) -> &str {
        match self {
            Self::OrderRejected { reason } | Self::OrderCancelled { reason } => reason,
            _ => "",
        }
    }

    /// The event for moving to `to` with `reason` (none moves an order back to PENDING).
    pub fn moving_to(to: OrderStatus, reason: &str) -> Option<Self> {
        Some(match to {
            OrderStatus::Pending => return None,
            OrderStatus::Confirmed => Self::OrderConfirmed {},
            OrderStatus::Rejected => Self::OrderRejected {
                reason: reason.to_string(),
            },
            OrderStatus::Cancelled => Self::OrderCancelled {
                reason: reason.to_string(),
            },
            OrderStatus::Shipped => Self::OrderShipped {},
            OrderStatus::Delivered => Self::OrderDelivered {},
        })
    }

    /// As an event to append. Every order event but `OrderShipped` is published to other
    /// services (as the envelope payload of the same name).
    pub fn to_new(&self) -> NewEvent {
        let mut payload = serde_json::to_value(self).unwrap_or_default();
        if let Some(o) = payload.as_object_mut() {
            o.remove("type");
        }
        let version = if matches!(self, Self::OrderPlaced { .. }) {
            2
        } else {
            1
        };
        let e = NewEvent::new(self.event_type(), version, payload);
        if matches!(self, Self::OrderShipped {}) {
            e
        } else {
            e.published()
        }
    }

    /// The order event a stored event is, if it is one.
    pub fn from_stored(e: &StoredEvent) -> Option<Result<Self, serde_json::Error>> {
        if !e.event_type.starts_with("Order") {
            return None;
        }
        let mut payload = e.payload.clone();
        if let Some(o) = payload.as_object_mut() {
            o.insert("type".into(), e.event_type.clone().into());
        }
        Some(serde_json::from_value(payload))
    }
}

/// How stored order events of older schema versions are read.
pub fn upcasters() -> Upcasters {
    Upcasters::new()
        .current("OrderPlaced", 2)
        .step("OrderPlaced", 1, |mut v| {
            // v1 lines were {sku, quantity, unit_price_minor}: totals are computed.
            let lines = v
                .get_mut("lines")
                .and_then(|l| l.as_array_mut())
                .ok_or("lines missing")?;
            let mut total: i64 = 0;
            for l in lines.iter_mut() {
                let q = l["quantity"].as_i64().ok_or("lines[].quantity missing")?;
                let p = l["unit_price_minor"]
                    .as_i64()
                    .ok_or("lines[].unit_price_minor missing")?;
                let t = p.checked_mul(q).ok_or("line total overflows")?;
                total = total.checked_add(t).ok_or("order total overflows")?;
                l["line_total_minor"] = t.into();
            }
            v["total_minor"] = total.into();
            Ok(v)
        })
}

/// An order as its events say.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Order {
    pub order_id: String,
    pub customer_id: String,
    pub status: OrderStatus,
    pub status_reason: String,
    pub currency: String,
    pub total_minor: i64,
    pub lines: Vec<LineData>,
    pub address: AddressData,
    pub card_token: String,
    /// 1 when placed, one more per status change (what `Order.version` shows).
    pub version: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// The placement saga kept in the same stream, once started.
    pub saga: Option<SagaState>,
    /// The stream's version: its last event's (order or saga).
    pub stream_version: i64,
    /// The global position of that event.
    pub position: i64,
}

/// Where a fold went wrong: an event before the order was placed, or one that does not parse.
#[derive(Debug, thiserror::Error)]
#[error("order stream '{stream}' at version {version}: {message}")]
pub struct FoldError {
    pub stream: String,
    pub version: i64,
    pub message: String,
}

impl Order {
    /// The state after `e`.
    pub fn apply(state: Option<Self>, e: &StoredEvent) -> Result<Option<Self>, FoldError> {
        let err = |message: String| FoldError {
            stream: e.stream_id.clone(),
            version: e.version,
            message,
        };
        if let Some(saga) = SagaEvent::from_stored(e) {
            let saga = saga.map_err(|x| err(x.to_string()))?;
            let Some(mut s) = state else {
                return Err(err("saga event before the order was placed".into()));
            };
            s.saga = SagaState::apply(s.saga.take(), &saga, e.recorded_at);
            s.stream_version = e.version;
            s.position = e.position;
            return Ok(Some(s));
        }
        let Some(event) = OrderEvent::from_stored(e) else {
            return Err(err(format!("unknown event type {}", e.event_type)));
        };
        let event = event.map_err(|x| err(x.to_string()))?;
        let next = match (state, event) {
            (
                None,
                OrderEvent::OrderPlaced {
                    customer_id,
                    currency,
                    total_minor,
                    lines,
                    address,
                    card_token,
                },
            ) => Self {
                order_id: e.stream_id.clone(),
                customer_id,
                status: OrderStatus::Pending,
                status_reason: String::new(),
                currency,
                total_minor,
                lines,
                address,
                card_token,
                version: 1,
                created_at: e.recorded_at,
                updated_at: e.recorded_at,
                saga: None,
                stream_version: e.version,
                position: e.position,
            },
            (None, other) => {
                return Err(err(format!(
                    "{} before the order was placed",
                    other.event_type()
                )))
            }
            (Some(_), OrderEvent::OrderPlaced { .. }) => {
                return Err(err("placed twice".into()));
            }
            (Some(mut s), other) => {
                s.status = other.status();
                s.status_reason = match &other {
                    OrderEvent::OrderRejected { reason }
                    | OrderEvent::OrderCancelled { reason } => reason.clone(),
                    _ => String::new(),
                };
                s.version += 1;
                s.updated_at = e.recorded_at;
                s
            }
        };
        let mut next = next;
        next.stream_version = e.version;
        next.position = e.position;
        Ok(Some(next))
    }

    /// The order folded from `events` onto `from` (a snapshot, or nothing).
    pub fn fold<'a>(
        from: Option<Self>,
        events: impl IntoIterator<Item = &'a StoredEvent>,
    ) -> Result<Option<Self>, FoldError> {
        let mut state = from;
        for e in events {
            state = Self::apply(state, e)?;
        }
        Ok(state)
    }

    /// Decides a move to `to` (with `reason`), allowed only from `only_from` when given:
    /// `Ok(None)` when the order is there already (a repeat changes nothing), the event to
    /// append, or the refusal naming the order.
    pub fn decide_move(
        &self,
        to: OrderStatus,
        reason: &str,
        only_from: Option<&[OrderStatus]>,
    ) -> Result<Option<OrderEvent>, OrderError> {
        if self.status.move_to(&self.order_id, to)?.is_none() {
            return Ok(None);
        }
        if let Some(allowed) = only_from {
            if !allowed.contains(&self.status) {
                return Err(OrderError::IllegalTransition {
                    id: self.order_id.clone(),
                    from: self.status.as_str(),
                    to: to.as_str(),
                });
            }
        }
        OrderEvent::moving_to(to, reason)
            .map(Some)
            .ok_or_else(|| OrderError::IllegalTransition {
                id: self.order_id.clone(),
                from: self.status.as_str(),
                to: to.as_str(),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored(version: i64, e: &NewEvent) -> StoredEvent {
        StoredEvent {
            position: version,
            event_id: format!("e{version}"),
            stream_id: "ord_1".into(),
            version,
            event_type: e.event_type.clone(),
            schema_version: e.schema_version,
            payload: e.payload.clone(),
            metadata: Default::default(),
            recorded_at: chrono::DateTime::from_timestamp(1_700_000_000 + version, 0).unwrap(),
            log_seq: None,
        }
    }

    fn placed() -> OrderEvent {
        OrderEvent::OrderPlaced {
            customer_id: "cust-1".into(),
            currency: "USD".into(),
            total_minor: 500,
            lines: vec![LineData {
                sku: "A".into(),
                quantity: 5,
                unit_price_minor: 100,
                line_total_minor: 500,
            }],
            address: AddressData::default(),
            card_token: "tok_visa".into(),
        }
    }

    /// Given these events, the order they fold into.
    fn given(events: &[OrderEvent]) -> Order {
        let stored: Vec<_> = events
            .iter()
            .enumerate()
            .map(|(i, e)| stored(i as i64 + 1, &e.to_new()))
            .collect();
        Order::fold(None, &stored).unwrap().unwrap()
    }

    #[test]
    fn given_events_when_command_then_event_or_refusal() {
        use OrderStatus::*;
        let pending = given(&[placed()]);
        assert_eq!(
            pending.decide_move(Confirmed, "", None).unwrap(),
            Some(OrderEvent::OrderConfirmed {})
        );
        // Cancelling through the saga is only from PENDING.
        let confirmed = given(&[placed(), OrderEvent::OrderConfirmed {}]);
        assert_eq!(confirmed.version, 2);
        let refused = confirmed
            .decide_move(Cancelled, "late", Some(&[Pending]))
            .unwrap_err();
        assert!(refused.to_string().contains("is CONFIRMED"), "{refused}");
        // A repeat changes nothing; a final order refuses everything else.
        assert_eq!(confirmed.decide_move(Confirmed, "", None).unwrap(), None);
        let rejected = given(&[
            placed(),
            OrderEvent::OrderRejected {
                reason: "no".into(),
            },
        ]);
        assert_eq!(rejected.status_reason, "no");
        assert!(rejected.decide_move(Shipped, "", None).is_err());
        assert!(pending.decide_move(Pending, "", None).unwrap().is_none());
    }

    #[test]
    fn events_before_placement_or_twice_placed_do_not_fold() {
        let confirm = stored(1, &OrderEvent::OrderConfirmed {}.to_new());
        assert!(Order::fold(None, [&confirm]).is_err());
        let p = stored(1, &placed().to_new());
        let again = stored(2, &placed().to_new());
        assert!(Order::fold(None, [&p, &again]).is_err());
    }

    /// Golden: an `OrderPlaced` as version 1 stored it (no line totals, no order total) reads
    /// as the current shape.
    #[test]
    fn a_stored_version_1_order_placed_reads_as_version_2() {
        let v1 = serde_json::json!({
            "customer_id": "cust-1",
            "currency": "EUR",
            "lines": [
                {"sku": "A", "quantity": 3, "unit_price_minor": 250},
                {"sku": "B", "quantity": 1, "unit_price_minor": 1000}
            ],
            "address": {"recipient": "R", "street": "S", "city": "C", "postal_code": "P", "country_code": "DE"},
            "card_token": "tok_visa"
        });
        let (version, now) = upcasters().upcast("OrderPlaced", 1, v1).unwrap();
        assert_eq!(version, 2);
        let mut e = stored(1, &NewEvent::new("OrderPlaced", 2, now));
        e.schema_version = 2;
        let o = Order::fold(None, [&e]).unwrap().unwrap();
        assert_eq!(o.total_minor, 1750);
        assert_eq!(o.lines[0].line_total_minor, 750);
        assert_eq!(o.address.country_code, "DE");
        // A version 1 line without a price is refused, naming what is missing.
        let bad = serde_json::json!({"lines": [{"sku": "A", "quantity": 1}]});
        let err = upcasters().upcast("OrderPlaced", 1, bad).unwrap_err();
        assert!(err.contains("unit_price_minor"), "{err}");
    }
}
