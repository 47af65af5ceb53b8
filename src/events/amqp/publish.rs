//! The producer side: the outbox relay hands the publisher rows, and marks published only
//! those the broker confirmed.

use std::sync::atomic::{AtomicU64, Ordering};

use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::types::ShortString;
use lapin::{BasicProperties, Channel, Confirmation, Connection};

use super::connection::*;
use super::*;

/// One event ready to leave: its id, routing key and encoded envelope (with its sequence).
#[derive(Clone, Debug)]
pub struct OutgoingEvent {
    pub event_id: String,
    pub event_type: String,
    pub routing_key: String,
    pub body: Vec<u8>,
}

struct PublishLink {
    connection: Connection,
    channel: Channel,
}

/// Publishes a producer's events to its exchange with publisher confirms.
pub struct Publisher {
    url: BrokerUrl,
    producer: String,
    link: tokio::sync::Mutex<Option<PublishLink>>,
    connects: AtomicU64,
}

impl Publisher {
    pub fn new(url: BrokerUrl, producer: &str) -> Self {
        Self {
            url,
            producer: producer.to_string(),
            link: tokio::sync::Mutex::new(None),
            connects: AtomicU64::new(0),
        }
    }

    /// How many times this publisher has (re)connected.
    pub fn connects(&self) -> u64 {
        self.connects.load(Ordering::Relaxed)
    }

    async fn open(&self) -> Result<PublishLink, BrokerError> {
        let connection = connect(&self.url, format!("ordermesh {} relay", self.producer)).await?;
        // A broker that accepts the connection and then stalls must not stall the relay.
        match tokio::time::timeout(CONNECT_TIMEOUT, self.prepare(connection)).await {
            Ok(link) => link,
            Err(_) => Err(BrokerError::Timeout(CONNECT_TIMEOUT)),
        }
    }

    async fn prepare(&self, connection: Connection) -> Result<PublishLink, BrokerError> {
        let channel = connection.create_channel().await?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        declare_exchange(&channel, &self.producer).await?;
        self.connects.fetch_add(1, Ordering::Relaxed);
        tracing::info!(producer = %self.producer, broker = ?self.url, "connected to RabbitMQ");
        Ok(PublishLink {
            connection,
            channel,
        })
    }

    /// Publishes `events` in order and waits for the broker's confirms. Returns how many of
    /// them, from the first on, the broker confirmed, and the error that stopped it, if any;
    /// after an error the connection is dropped and the next call reconnects.
    pub async fn publish(&self, events: &[OutgoingEvent]) -> (usize, Result<(), BrokerError>) {
        let mut link = self.link.lock().await;
        let current = match link.take() {
            Some(l) if l.connection.status().connected() => link.insert(l),
            _ => match self.open().await {
                Ok(l) => link.insert(l),
                Err(e) => return (0, Err(e)),
            },
        };
        // A confirm can stay pending forever when the connection drops under it: watch the
        // connection too, and give the broker a bounded time to confirm.
        let (confirmed, result) = tokio::select! {
            r = tokio::time::timeout(CONFIRM_TIMEOUT, publish_on(&current.channel, &self.producer, events)) => {
                r.unwrap_or((0, Err(BrokerError::Timeout(CONFIRM_TIMEOUT))))
            }
            e = broken(&current.connection) => (0, Err(e)),
        };
        if result.is_err() {
            if let Some(l) = link.take() {
                close(&l.connection, "reconnecting").await;
            }
        }
        (confirmed, result)
    }
}

async fn publish_on(
    channel: &Channel,
    producer: &str,
    events: &[OutgoingEvent],
) -> (usize, Result<(), BrokerError>) {
    let exchange: ShortString = exchange(producer).into();
    let mut pending = Vec::with_capacity(events.len());
    let mut failure = None;
    for e in events {
        let props = BasicProperties::default()
            .with_delivery_mode(2)
            .with_content_type("application/x-protobuf".into())
            .with_message_id(e.event_id.as_str().into())
            .with_type(e.event_type.as_str().into())
            .with_app_id(producer.into());
        match channel
            .basic_publish(
                exchange.clone(),
                e.routing_key.as_str().into(),
                BasicPublishOptions::default(),
                &e.body,
                props,
            )
            .await
        {
            Ok(confirm) => pending.push(confirm),
            Err(err) => {
                failure = Some(BrokerError::from(err));
                break;
            }
        }
    }
    // Confirms arrive in publishing order; only an unbroken run of acks from the first event
    // counts, so a later row is never marked published before an earlier one.
    let mut confirmed = 0;
    for (confirm, e) in pending.into_iter().zip(events) {
        match confirm.await {
            Ok(Confirmation::Ack(_)) => confirmed += 1,
            Ok(Confirmation::Nack(_)) | Ok(Confirmation::NotRequested) => {
                failure.get_or_insert(BrokerError::Refused(e.event_id.clone()));
                break;
            }
            Err(err) => {
                failure.get_or_insert(BrokerError::from(err));
                break;
            }
        }
    }
    (confirmed, failure.map_or(Ok(()), Err))
}
