//! The consumer side: a consumer group's durable queue, fed to the same inbox and handler
//! as the gRPC log stream, acked only after the inbox transaction commits.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicPublishOptions, BasicQosOptions,
    BasicRejectOptions, ConfirmSelectOptions, QueueBindOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Connection};
use prost::Message;
use sea_orm::DatabaseConnection;

use super::connection::*;
use super::*;
use crate::backoff::Backoff;
use crate::events::inbox::{Handler, HandlerError};
use crate::proto::events::v1 as pb;
use crate::transport::shutdown::Drain;

/// Deliveries of one message the broker allows before dead-lettering it: as many tries as the
/// gRPC consumer gives a poison event (`inbox::MAX_ATTEMPTS`). RabbitMQ's
/// `x-delivery-limit` counts returns, so a limit of L allows L + 1 deliveries.
pub const DELIVERY_LIMIT: u32 = crate::events::inbox::MAX_ATTEMPTS - 1;

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

    #[test]
    fn the_delivery_limit_matches_the_inbox_attempts() {
        assert_eq!(DELIVERY_LIMIT + 1, crate::events::inbox::MAX_ATTEMPTS);
    }
}
