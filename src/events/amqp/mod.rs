//! The RabbitMQ event transport, used when `BROKER_URL` is set.
//!
//! Topology (declared by whoever connects, on every connect, so a restarted broker or a new
//! vhost gets it back):
//! - a durable topic exchange per producer, `ordermesh.<producer>.events`; each event is
//!   published there with the routing key `<aggregate>.<EventType>` (e.g.
//!   `shipment.ShipmentDelivered`), persistent, `message_id` = the event id;
//! - a durable quorum queue per consumer group and producer, `ordermesh.<consumer>.from.<producer>`,
//!   bound with `*.<EventType>` per wanted type (`#` for all), single active consumer (so one
//!   instance of the group applies events in order), and `x-delivery-limit` so the broker counts
//!   failed deliveries;
//! - a durable direct exchange `ordermesh.dead-letter` and, per queue, a dead-letter quorum queue
//!   `<queue>.dead-letter` where the broker moves a message past its delivery limit (or one
//!   that cannot be decoded).
//!
//! The producer side is `Publisher` (the outbox relay hands it rows and marks only the
//! confirmed ones published); the consumer side is `run`, which feeds deliveries to the same
//! `inbox::Handler` and inbox as the gRPC stream and acks only after the inbox transaction
//! commits. Both reconnect with exponential back-off and jitter when the connection is lost.

mod url;
pub use url::BrokerUrl;

#[cfg(feature = "events")]
mod connection;
#[cfg(feature = "events")]
mod consume;
#[cfg(feature = "events")]
mod publish;

#[cfg(feature = "events")]
pub use connection::BrokerError;
#[cfg(feature = "events")]
pub use consume::{run, Subscription, DELIVERY_LIMIT};
#[cfg(feature = "events")]
pub use publish::{OutgoingEvent, Publisher};

/// Exchange the broker moves dead-lettered messages to.
pub const DEAD_LETTER_EXCHANGE: &str = "ordermesh.dead-letter";

/// The producer's exchange.
pub fn exchange(producer: &str) -> String {
    format!("ordermesh.{producer}.events")
}

/// The routing key of an event: `<aggregate>.<EventType>`.
pub fn routing_key(aggregate_type: &str, event_type: &str) -> String {
    format!("{aggregate_type}.{event_type}")
}

/// The queue of a consumer group for one producer's events.
pub fn queue(consumer: &str, producer: &str) -> String {
    format!("ordermesh.{consumer}.from.{producer}")
}

/// Where that queue's poison messages end up.
pub fn dead_letter_queue(consumer: &str, producer: &str) -> String {
    format!("{}.dead-letter", queue(consumer, producer))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_topology() {
        assert_eq!(exchange("shipping"), "ordermesh.shipping.events");
        assert_eq!(
            routing_key("shipment", "ShipmentDelivered"),
            "shipment.ShipmentDelivered"
        );
        assert_eq!(queue("order", "shipping"), "ordermesh.order.from.shipping");
        assert_eq!(
            dead_letter_queue("order", "shipping"),
            "ordermesh.order.from.shipping.dead-letter"
        );
    }
}
