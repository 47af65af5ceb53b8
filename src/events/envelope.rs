//! The event envelope every transport carries: type names of payloads, and building the
//! envelope of a new event with its id, time and the trace of the change that caused it.

use crate::proto::events::v1 as pb;
use crate::proto::events::v1::event_envelope::Payload;

/// The event type of a payload: its message name, e.g. `ShipmentDelivered`.
pub fn event_type(p: &Payload) -> &'static str {
    match p {
        Payload::OrderPlaced(_) => "OrderPlaced",
        Payload::OrderConfirmed(_) => "OrderConfirmed",
        Payload::OrderRejected(_) => "OrderRejected",
        Payload::OrderCancelled(_) => "OrderCancelled",
        Payload::OrderDelivered(_) => "OrderDelivered",
        Payload::StockAdjusted(_) => "StockAdjusted",
        Payload::StockReserved(_) => "StockReserved",
        Payload::StockReleased(_) => "StockReleased",
        Payload::StockCommitted(_) => "StockCommitted",
        Payload::LowStock(_) => "LowStock",
        Payload::PaymentAuthorized(_) => "PaymentAuthorized",
        Payload::PaymentDeclined(_) => "PaymentDeclined",
        Payload::PaymentCaptured(_) => "PaymentCaptured",
        Payload::PaymentVoided(_) => "PaymentVoided",
        Payload::PaymentRefunded(_) => "PaymentRefunded",
        Payload::ShipmentCreated(_) => "ShipmentCreated",
        Payload::ShipmentCancelled(_) => "ShipmentCancelled",
        Payload::ShipmentStatusChanged(_) => "ShipmentStatusChanged",
        Payload::ShipmentDelivered(_) => "ShipmentDelivered",
    }
}

/// A new event's envelope: a fresh id, the current time and trace, no sequence yet (the log
/// gives one when it publishes the event).
pub fn new_envelope(
    producer: &str,
    aggregate_type: &str,
    aggregate_id: &str,
    payload: Payload,
    now: chrono::DateTime<chrono::Utc>,
) -> pb::EventEnvelope {
    pb::EventEnvelope {
        event_id: uuid::Uuid::new_v4().to_string(),
        aggregate_type: aggregate_type.to_string(),
        aggregate_id: aggregate_id.to_string(),
        sequence: 0,
        occurred_at: Some(crate::types::time::to_proto(now)),
        // The trace of the request that made the change: its consumers' spans join it.
        trace_context: Some(crate::telemetry::trace_context()),
        producer: producer.to_string(),
        payload: Some(payload),
    }
}
