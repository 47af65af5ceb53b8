//! Connecting to the broker and declaring what both sides need.

use std::time::Duration;

use lapin::options::{ExchangeDeclareOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{Channel, Connection, ConnectionProperties};

use super::{exchange, BrokerUrl};

/// How long connecting may take before it counts as a failure.
pub(super) const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// What went wrong talking to the broker.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error("RabbitMQ: {0}")]
    Amqp(#[from] lapin::Error),
    #[error("RabbitMQ did not answer within {0:?}")]
    Timeout(Duration),
    #[error("RabbitMQ refused event {0} (publisher confirm was a nack)")]
    Refused(String),
    #[error("RabbitMQ closed the consumer of {0}")]
    ConsumerClosed(String),
    #[error("RabbitMQ connection lost ({0})")]
    Lost(String),
}

/// How long the broker may take to confirm a batch, or to answer an ack.
pub(super) const CONFIRM_TIMEOUT: Duration = Duration::from_secs(30);

/// Resolves once `connection` is no longer usable (closed by the broker, reset, ...).
pub(super) async fn broken(connection: &Connection) -> BrokerError {
    loop {
        if !connection.status().connected() {
            let st = connection.status();
            let state = if st.errored() {
                "errored"
            } else if st.closed() || st.closing() {
                "closed"
            } else {
                "not connected"
            };
            return BrokerError::Lost(state.to_string());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Closes `connection` if it is still open, without waiting long for the broker.
pub(super) async fn close(connection: &Connection, why: &str) {
    if connection.status().connected() {
        let _ =
            tokio::time::timeout(Duration::from_secs(2), connection.close(200, why.into())).await;
    }
}

pub(super) async fn connect(url: &BrokerUrl, name: String) -> Result<Connection, BrokerError> {
    let props = ConnectionProperties::default().with_connection_name(name.into());
    match tokio::time::timeout(CONNECT_TIMEOUT, Connection::connect(url.as_str(), props)).await {
        Ok(c) => Ok(c?),
        Err(_) => Err(BrokerError::Timeout(CONNECT_TIMEOUT)),
    }
}

pub(super) fn durable_exchange() -> ExchangeDeclareOptions {
    ExchangeDeclareOptions {
        durable: true,
        ..Default::default()
    }
}

/// Declares the producer's topic exchange (both sides do, so either may start first).
pub(super) async fn declare_exchange(channel: &Channel, producer: &str) -> Result<(), BrokerError> {
    channel
        .exchange_declare(
            exchange(producer).into(),
            lapin::ExchangeKind::Topic,
            durable_exchange(),
            FieldTable::default(),
        )
        .await?;
    Ok(())
}

pub(super) fn durable_queue() -> QueueDeclareOptions {
    QueueDeclareOptions {
        durable: true,
        ..Default::default()
    }
}

pub(super) fn text(s: &str) -> AMQPValue {
    AMQPValue::LongString(s.into())
}
