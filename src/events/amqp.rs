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
//! `consumer::Handler` and inbox as the gRPC stream and acks only after the inbox transaction
//! commits. Both reconnect with exponential back-off and jitter when the connection is lost.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicPublishOptions, BasicQosOptions,
    BasicRejectOptions, ConfirmSelectOptions, ExchangeDeclareOptions, QueueBindOptions,
    QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{BasicProperties, Channel, Confirmation, Connection, ConnectionProperties};
use prost::Message;
use sea_orm::DatabaseConnection;

use crate::backoff::Backoff;
use crate::events::inbox::{Handler, HandlerError};
use crate::proto::events::v1 as pb;
use crate::transport::shutdown::Drain;

/// Exchange the broker moves dead-lettered messages to.
pub const DEAD_LETTER_EXCHANGE: &str = "ordermesh.dead-letter";

/// Deliveries of one message the broker allows before dead-lettering it: as many tries as the
/// gRPC consumer gives a poison event (`consumer::MAX_ATTEMPTS`). RabbitMQ's
/// `x-delivery-limit` counts returns, so a limit of L allows L + 1 deliveries.
pub const DELIVERY_LIMIT: u32 = crate::events::inbox::MAX_ATTEMPTS - 1;

/// How long connecting may take before it counts as a failure.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A validated `amqp://` or `amqps://` URL; its password is never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct BrokerUrl(String);

impl BrokerUrl {
    /// Checks scheme, host and vhost; the error says what is wrong.
    pub fn parse(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if !(s.starts_with("amqp://") || s.starts_with("amqps://")) {
            return Err("expected amqp://user:password@host:5672/vhost (or amqps://)".into());
        }
        let uri: lapin::uri::AMQPUri = s
            .parse()
            .map_err(|e: String| format!("not a valid AMQP URL: {e}"))?;
        // The parser falls back to localhost; a URL without a host is a mistake here.
        let rest = s.split_once("://").map(|(_, r)| r).unwrap_or("");
        let authority = rest.split(['/', '?']).next().unwrap_or("");
        let host = authority.rsplit('@').next().unwrap_or("");
        if uri.authority.host.is_empty() || host.is_empty() || host.starts_with(':') {
            return Err("has no host (expected amqp://user:password@host:5672/vhost)".into());
        }
        Ok(Self(s.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The same broker with another vhost (tests give each run a vhost of its own).
    pub fn with_vhost(&self, vhost: &str) -> Result<Self, String> {
        let mut uri: lapin::uri::AMQPUri = self.0.parse()?;
        uri.vhost = vhost.to_string();
        Self::parse(&uri.to_string())
    }
}

impl fmt::Debug for BrokerUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.parse::<lapin::uri::AMQPUri>() {
            Ok(u) => write!(
                f,
                "{}://{}@{}:{}/{}",
                u.scheme,
                u.authority.userinfo.username,
                u.authority.host,
                u.authority.port,
                u.vhost
            ),
            Err(_) => f.write_str("<broker url>"),
        }
    }
}

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
const CONFIRM_TIMEOUT: Duration = Duration::from_secs(30);

/// Resolves once `connection` is no longer usable (closed by the broker, reset, ...).
async fn broken(connection: &Connection) -> BrokerError {
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
async fn close(connection: &Connection, why: &str) {
    if connection.status().connected() {
        let _ =
            tokio::time::timeout(Duration::from_secs(2), connection.close(200, why.into())).await;
    }
}

async fn connect(url: &BrokerUrl, name: String) -> Result<Connection, BrokerError> {
    let props = ConnectionProperties::default().with_connection_name(name.into());
    match tokio::time::timeout(CONNECT_TIMEOUT, Connection::connect(url.as_str(), props)).await {
        Ok(c) => Ok(c?),
        Err(_) => Err(BrokerError::Timeout(CONNECT_TIMEOUT)),
    }
}

fn durable_exchange() -> ExchangeDeclareOptions {
    ExchangeDeclareOptions {
        durable: true,
        ..Default::default()
    }
}

/// Declares the producer's topic exchange (both sides do, so either may start first).
async fn declare_exchange(channel: &Channel, producer: &str) -> Result<(), BrokerError> {
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

fn durable_queue() -> QueueDeclareOptions {
    QueueDeclareOptions {
        durable: true,
        ..Default::default()
    }
}

fn text(s: &str) -> AMQPValue {
    AMQPValue::LongString(s.into())
}

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

/// A consumer group's subscription to one producer's events over RabbitMQ.
#[derive(Clone, Debug)]
pub struct Subscription {
    pub url: BrokerUrl,
    /// Consumer group, e.g. `order`; also the inbox's consumer name.
    pub consumer: String,
    /// Producer, e.g. `shipping`.
    pub producer: String,
    /// Event types to receive; empty for all.
    pub types: Vec<String>,
    sessions: Arc<AtomicU64>,
}

impl Subscription {
    pub fn new(url: BrokerUrl, consumer: &str, producer: &str, types: Vec<String>) -> Self {
        Self {
            url,
            consumer: consumer.to_string(),
            producer: producer.to_string(),
            types,
            sessions: Arc::new(AtomicU64::new(0)),
        }
    }

    pub fn queue(&self) -> String {
        queue(&self.consumer, &self.producer)
    }

    pub fn dead_letter_queue(&self) -> String {
        dead_letter_queue(&self.consumer, &self.producer)
    }

    /// How many times the consumer has (re)connected and started consuming.
    pub fn sessions(&self) -> u64 {
        self.sessions.load(Ordering::Relaxed)
    }

    /// Declares the exchange, the queue with its bindings, and its dead-letter queue.
    pub async fn declare(&self, channel: &Channel) -> Result<(), BrokerError> {
        let queue = self.queue();
        let dlq = self.dead_letter_queue();
        let quorum = || {
            let mut args = FieldTable::default();
            args.insert("x-queue-type".into(), text("quorum"));
            args
        };
        declare_exchange(channel, &self.producer).await?;
        channel
            .exchange_declare(
                DEAD_LETTER_EXCHANGE.into(),
                lapin::ExchangeKind::Direct,
                durable_exchange(),
                FieldTable::default(),
            )
            .await?;
        channel
            .queue_declare(dlq.as_str().into(), durable_queue(), quorum())
            .await?;
        channel
            .queue_bind(
                dlq.as_str().into(),
                DEAD_LETTER_EXCHANGE.into(),
                dlq.as_str().into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
        let mut args = quorum();
        args.insert(
            "x-delivery-limit".into(),
            AMQPValue::LongInt(DELIVERY_LIMIT as i32),
        );
        args.insert("x-dead-letter-exchange".into(), text(DEAD_LETTER_EXCHANGE));
        args.insert("x-dead-letter-routing-key".into(), text(&dlq));
        // Dead-letter at least once (the default strategy may drop a message on the way).
        args.insert("x-dead-letter-strategy".into(), text("at-least-once"));
        args.insert("x-overflow".into(), text("reject-publish"));
        args.insert("x-single-active-consumer".into(), AMQPValue::Boolean(true));
        channel
            .queue_declare(queue.as_str().into(), durable_queue(), args)
            .await?;
        let keys: Vec<String> = if self.types.is_empty() {
            vec!["#".into()]
        } else {
            self.types.iter().map(|t| format!("*.{t}")).collect()
        };
        for key in keys {
            channel
                .queue_bind(
                    queue.as_str().into(),
                    exchange(&self.producer).into(),
                    key.into(),
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await?;
        }
        Ok(())
    }
}

/// How many times the broker has returned this message (0 on its first delivery).
fn delivery_count(props: &BasicProperties) -> u32 {
    let Some(headers) = props.headers() else {
        return 0;
    };
    match headers.inner().get("x-delivery-count") {
        Some(AMQPValue::LongLongInt(n)) => (*n).max(0) as u32,
        Some(AMQPValue::LongInt(n)) => (*n).max(0) as u32,
        Some(AMQPValue::LongUInt(n)) => *n,
        Some(AMQPValue::ShortInt(n)) => (*n).max(0) as u32,
        Some(AMQPValue::ShortUInt(n)) => u32::from(*n),
        _ => 0,
    }
}

/// Waits `d` unless the drain starts first; returns whether it waited the whole time.
async fn pause(d: Duration, drain: &Drain) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(d) => true,
        _ = drain.draining() => false,
    }
}

enum Flow {
    Next,
    Drained,
}

/// Consumes `sub` until `drain` starts: each delivery goes through the inbox and `handler`,
/// and is acked once the inbox transaction committed (a repeat is acked without running the
/// handler). A `Retry` is returned to the queue after a pause (and, once it has used the
/// returns the delivery limit allows, re-published as a fresh message so it is never
/// dead-lettered for waiting); a `Poison` is returned until the broker's delivery limit moves it
/// to the dead-letter queue. A lost connection is re-made with back-off and jitter.
pub async fn run(
    db: DatabaseConnection,
    sub: Subscription,
    handler: Arc<dyn Handler>,
    drain: Drain,
) {
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(10));
    loop {
        match session(&db, &sub, handler.as_ref(), &drain, &mut backoff).await {
            Ok(()) => return,
            Err(e) => {
                tracing::warn!(consumer = %sub.consumer, producer = %sub.producer, error = %e, "RabbitMQ consumer interrupted; reconnecting");
            }
        }
        if !pause(backoff.next_wait(), &drain).await {
            return;
        }
    }
}

async fn session(
    db: &DatabaseConnection,
    sub: &Subscription,
    handler: &dyn Handler,
    drain: &Drain,
    backoff: &mut Backoff,
) -> Result<(), BrokerError> {
    let connection = connect(
        &sub.url,
        format!("ordermesh {} from {}", sub.consumer, sub.producer),
    )
    .await?;
    let setup = async {
        let channel = connection.create_channel().await?;
        sub.declare(&channel).await?;
        // One unacked delivery at a time: a returned message goes back to the head of the
        // quorum queue, so events are applied in the order they were published.
        channel.basic_qos(1, BasicQosOptions::default()).await?;
        let tag = format!(
            "ordermesh-{}-{}",
            sub.consumer,
            uuid::Uuid::new_v4().simple()
        );
        let deliveries = channel
            .basic_consume(
                sub.queue().into(),
                tag.into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?;
        // Re-published retries go through a confirmed channel of their own.
        let requeue = connection.create_channel().await?;
        requeue
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        Ok::<_, BrokerError>((channel, deliveries, requeue))
    };
    // A broker that accepts the connection and then stalls must not stall the consumer.
    let (_channel, mut deliveries, requeue) =
        match tokio::time::timeout(CONNECT_TIMEOUT, setup).await {
            Ok(r) => r?,
            Err(_) => return Err(BrokerError::Timeout(CONNECT_TIMEOUT)),
        };
    sub.sessions.fetch_add(1, Ordering::Relaxed);
    backoff.reset();
    tracing::info!(consumer = %sub.consumer, producer = %sub.producer, queue = %sub.queue(), "consuming from RabbitMQ");
    loop {
        let next = tokio::select! {
            d = deliveries.next() => d,
            _ = drain.draining() => None,
        };
        let delivery = match next {
            Some(d) => d?,
            None if drain.is_draining() => break,
            None => return Err(BrokerError::ConsumerClosed(sub.queue())),
        };
        let link = Link {
            connection: &connection,
            requeue: &requeue,
        };
        if let Flow::Drained = deliver(db, sub, handler, drain, &link, delivery).await? {
            break;
        }
    }
    close(&connection, "draining").await;
    Ok(())
}

/// The consumer's connection and its confirmed channel for re-published retries.
struct Link<'a> {
    connection: &'a Connection,
    requeue: &'a Channel,
}

impl Link<'_> {
    /// Runs a broker operation, giving up when the connection drops or the broker does not
    /// answer in time (an ack can otherwise wait forever on a connection that just died).
    async fn guard<T>(
        &self,
        op: impl std::future::Future<Output = Result<T, lapin::Error>>,
    ) -> Result<T, BrokerError> {
        tokio::select! {
            r = tokio::time::timeout(CONFIRM_TIMEOUT, op) => match r {
                Ok(r) => Ok(r?),
                Err(_) => Err(BrokerError::Timeout(CONFIRM_TIMEOUT)),
            },
            e = broken(self.connection) => Err(e),
        }
    }
}

/// Handles one delivery. The handler and its inbox transaction always run to the end (never
/// cut short by a dropped connection, so `committed` runs for every commit); only the broker
/// operations around them are guarded.
async fn deliver(
    db: &DatabaseConnection,
    sub: &Subscription,
    handler: &dyn Handler,
    drain: &Drain,
    link: &Link<'_>,
    delivery: lapin::message::Delivery,
) -> Result<Flow, BrokerError> {
    let returned = delivery_count(&delivery.properties);
    let event = match pb::EventEnvelope::decode(delivery.data.as_slice()) {
        Ok(e) => e,
        Err(e) => {
            // Can never be applied: straight to the dead-letter queue.
            tracing::error!(consumer = %sub.consumer, error = %e, "undecodable event dead-lettered");
            link.guard(delivery.acker.reject(BasicRejectOptions { requeue: false }))
                .await?;
            return Ok(Flow::Next);
        }
    };
    match crate::events::inbox::apply_once(db, &sub.consumer, &sub.producer, handler, &event).await
    {
        Ok(_) => {
            link.guard(delivery.acker.ack(BasicAckOptions::default()))
                .await?;
        }
        Err(HandlerError::Poison(e)) => {
            let attempt = returned + 1;
            if attempt > DELIVERY_LIMIT {
                tracing::error!(consumer = %sub.consumer, event_id = %event.event_id, attempt, error = %e, "event dead-lettered");
            } else {
                tracing::warn!(consumer = %sub.consumer, event_id = %event.event_id, attempt, error = %e, "event handler failed");
            }
            if !pause(Duration::from_millis(50 << returned.min(6)), drain).await {
                return Ok(Flow::Drained);
            }
            link.guard(delivery.acker.nack(BasicNackOptions {
                requeue: true,
                ..Default::default()
            }))
            .await?;
        }
        Err(HandlerError::Retry(e)) => {
            tracing::info!(consumer = %sub.consumer, event_id = %event.event_id, error = %e, "event not applied yet; retrying");
            let wait = Duration::from_millis(100 << returned.min(6)).min(Duration::from_secs(5));
            if !pause(wait, drain).await {
                return Ok(Flow::Drained);
            }
            if returned + 1 < DELIVERY_LIMIT {
                link.guard(delivery.acker.nack(BasicNackOptions {
                    requeue: true,
                    ..Default::default()
                }))
                .await?;
            } else {
                // One more return would use up the delivery limit meant for poison
                // events: send a fresh copy to the back of the queue, then drop this one.
                let mut headers = FieldTable::default();
                if let Some(h) = delivery.properties.headers() {
                    for (k, v) in h.inner() {
                        if k.as_str() != "x-delivery-count" {
                            headers.insert(k.clone(), v.clone());
                        }
                    }
                }
                let requeued = match headers.inner().get("x-ordermesh-requeued") {
                    Some(AMQPValue::LongLongInt(n)) => *n + 1,
                    _ => 1,
                };
                headers.insert(
                    "x-ordermesh-requeued".into(),
                    AMQPValue::LongLongInt(requeued),
                );
                let props = delivery.properties.clone().with_headers(headers);
                let publish = async {
                    link.requeue
                        .basic_publish(
                            "".into(),
                            sub.queue().into(),
                            BasicPublishOptions::default(),
                            &delivery.data,
                            props,
                        )
                        .await?
                        .await
                };
                let confirm = link.guard(publish).await?;
                if !confirm.is_ack() {
                    return Err(BrokerError::Refused(event.event_id.clone()));
                }
                link.guard(delivery.acker.ack(BasicAckOptions::default()))
                    .await?;
            }
        }
    }
    Ok(Flow::Next)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_checked_and_passwords_not_printed() {
        let u = BrokerUrl::parse("amqp://guest:s3cret@127.0.0.1:5672/%2f").unwrap();
        assert_eq!(format!("{u:?}"), "amqp://guest@127.0.0.1:5672//");
        let v = u.with_vhost("om_test").unwrap();
        let parsed: lapin::uri::AMQPUri = v.as_str().parse().unwrap();
        assert_eq!(parsed.vhost, "om_test");
        assert!(
            v.as_str().contains("s3cret"),
            "the password is kept for connecting"
        );
        for bad in [
            "",
            "127.0.0.1:5672",
            "http://h:5672",
            "amqp://",
            "amqp://:5672/x",
        ] {
            assert!(BrokerUrl::parse(bad).is_err(), "{bad:?} accepted");
        }
        assert!(BrokerUrl::parse("amqps://u:p@rabbit.svc:5671/prod").is_ok());
    }

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
        assert_eq!(DELIVERY_LIMIT + 1, crate::events::inbox::MAX_ATTEMPTS);
    }

    #[test]
    fn delivery_count_reads_the_brokers_header() {
        assert_eq!(delivery_count(&BasicProperties::default()), 0);
        let mut h = FieldTable::default();
        h.insert("x-delivery-count".into(), AMQPValue::LongLongInt(3));
        assert_eq!(
            delivery_count(&BasicProperties::default().with_headers(h)),
            3
        );
        let mut h = FieldTable::default();
        h.insert("x-delivery-count".into(), AMQPValue::LongInt(-1));
        assert_eq!(
            delivery_count(&BasicProperties::default().with_headers(h)),
            0
        );
    }
}
