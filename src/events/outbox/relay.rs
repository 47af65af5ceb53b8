//! The relay: publishes recorded rows in order (to RabbitMQ first when there is a publisher),
//! gives them their log sequences and wakes the log's subscribers.

use std::time::Duration;

use prost::Message;
use sea_orm::sea_query::Expr;
use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseConnection, EntityTrait, QueryFilter, QueryOrder,
    QuerySelect, TransactionTrait,
};
use tokio::sync::watch;

use std::sync::Arc;

use super::entity;
use super::log::EventLog;
use super::published::{self, PublicEvents};
use crate::backoff::Backoff;
use crate::events::amqp::{BrokerError, OutgoingEvent, Publisher};
use crate::proto::events::v1 as pb;
use crate::transport::shutdown::Drain;

/// Why a relay round published nothing or only part of its batch.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error("outbox database: {0}")]
    Db(#[from] sea_orm::DbErr),
    #[error(transparent)]
    Broker(#[from] BrokerError),
    #[error("outbox row {id}: stored envelope does not decode: {message}")]
    Corrupt { id: i64, message: String },
}

/// Publishes recorded events into the log (and to RabbitMQ when configured) and wakes
/// subscribers.
#[derive(Clone)]
pub struct Outbox {
    db: DatabaseConnection,
    published: watch::Sender<i64>,
    publisher: Option<std::sync::Arc<Publisher>>,
    /// The producing service, for the backlog metrics.
    producer: &'static str,
    /// Set for an event-sourced service: its outbox is its event store.
    public: Option<Arc<dyn PublicEvents>>,
}

use super::published::BROKER_CHECKPOINT;

impl Outbox {
    /// The outbox of `producer` (the service whose events it holds), read from `db`.
    pub fn new(db: DatabaseConnection, producer: &'static str) -> Self {
        Self {
            db,
            published: watch::channel(0).0,
            publisher: None,
            producer,
            public: None,
        }
    }

    /// The outbox of an event-sourced service: the published events of its event store, as
    /// `public` maps them.
    pub fn with_event_store(mut self, public: Arc<dyn PublicEvents>) -> Self {
        self.public = Some(public);
        self
    }

    /// Also publishes every row to RabbitMQ, marking it published only after the confirm.
    pub fn with_publisher(mut self, publisher: Publisher) -> Self {
        self.publisher = Some(std::sync::Arc::new(publisher));
        self
    }

    /// The RabbitMQ publisher, when there is one.
    pub fn publisher(&self) -> Option<&Publisher> {
        self.publisher.as_deref()
    }

    /// Publishes up to `batch` recorded rows in the order they were recorded; returns how many.
    pub async fn publish_batch(&self, batch: u64) -> Result<usize, RelayError> {
        if let Some(public) = &self.public {
            return self.publish_events(public.as_ref(), batch).await;
        }
        if let Some(publisher) = &self.publisher {
            return self.publish_batch_to(publisher, batch).await;
        }
        let txn = self.db.begin().await?;
        let rows = unpublished(&txn, batch).await?;
        if rows.is_empty() {
            return Ok(0);
        }
        let first = last_sequence(&txn).await? + 1;
        let n = assign_sequences(&txn, &rows, first).await?;
        txn.commit().await?;
        self.published.send_replace(first + n as i64 - 1);
        Ok(n)
    }

    /// The broker round: sends the batch with its would-be sequences, then gives sequences to
    /// the unbroken run of rows the broker confirmed. A crash or a lost connection between the
    /// two sends those rows again (same event ids and sequences); consumers dedupe.
    async fn publish_batch_to(
        &self,
        publisher: &Publisher,
        batch: u64,
    ) -> Result<usize, RelayError> {
        let rows = unpublished(&self.db, batch).await?;
        if rows.is_empty() {
            return Ok(0);
        }
        let first = last_sequence(&self.db).await? + 1;
        let mut outgoing = Vec::with_capacity(rows.len());
        for (i, row) in rows.iter().enumerate() {
            let mut e = pb::EventEnvelope::decode(row.payload.as_slice()).map_err(|e| {
                RelayError::Corrupt {
                    id: row.id,
                    message: e.to_string(),
                }
            })?;
            e.sequence = (first + i as i64) as u64;
            outgoing.push(OutgoingEvent {
                event_id: row.event_id.clone(),
                event_type: row.event_type.clone(),
                routing_key: crate::events::amqp::routing_key(&row.aggregate_type, &row.event_type),
                body: e.encode_to_vec(),
            });
        }
        let (confirmed, sent) = publisher.publish(&outgoing).await;
        if confirmed > 0 {
            let txn = self.db.begin().await?;
            let n = assign_sequences(&txn, &rows[..confirmed], first).await?;
            txn.commit().await?;
            self.published.send_replace(first + n as i64 - 1);
        }
        sent?;
        Ok(confirmed)
    }

    /// The event store round: events are in the log from their commit, so without a broker
    /// there is nothing to move, only subscribers to wake; with one, the next published events
    /// after the broker checkpoint are sent and the checkpoint follows the confirms.
    async fn publish_events(
        &self,
        public: &dyn PublicEvents,
        batch: u64,
    ) -> Result<usize, RelayError> {
        use crate::data::event_store::{checkpoint, last_log_seq};
        let head = last_log_seq(&self.db).await?;
        let Some(publisher) = &self.publisher else {
            self.published
                .send_if_modified(|v| std::mem::replace(v, head) != head);
            return Ok(0);
        };
        let from = checkpoint::load(&self.db, BROKER_CHECKPOINT).await? + 1;
        let envelopes = published::read(&self.db, public, self.producer, from, batch, &[])
            .await
            .map_err(|e| RelayError::Corrupt {
                id: from,
                message: e.to_string(),
            })?;
        self.published
            .send_if_modified(|v| std::mem::replace(v, head) != head);
        crate::telemetry::metrics::outbox_backlog(self.producer, head - from + 1, 0.0);
        if envelopes.is_empty() {
            return Ok(0);
        }
        let outgoing: Vec<_> = envelopes
            .iter()
            .map(|e| {
                let kind = e
                    .payload
                    .as_ref()
                    .map(crate::events::envelope::event_type)
                    .unwrap_or_default();
                OutgoingEvent {
                    event_id: e.event_id.clone(),
                    event_type: kind.to_string(),
                    routing_key: crate::events::amqp::routing_key(&e.aggregate_type, kind),
                    body: e.encode_to_vec(),
                }
            })
            .collect();
        let (confirmed, sent) = publisher.publish(&outgoing).await;
        if confirmed > 0 {
            let last = envelopes[confirmed - 1].sequence as i64;
            checkpoint::save(&self.db, BROKER_CHECKPOINT, last).await?;
        }
        sent?;
        Ok(confirmed)
    }

    /// Runs the relay until `drain` starts: publishes whatever is recorded, then polls again
    /// after `POLL` (events reach subscribers within about that). Database or broker errors
    /// back off (exponentially, with jitter, up to 5s) and retry; nothing is lost.
    pub async fn run_relay(self, drain: Drain) {
        const POLL: Duration = Duration::from_millis(250);
        let mut backoff = Backoff::new(POLL, Duration::from_secs(5));
        loop {
            let wait = match self.publish_batch(256).await {
                Ok(n) if n > 0 => {
                    backoff.reset();
                    continue;
                }
                Ok(_) => {
                    // Nothing was found to publish (with a broker too: a round that found rows
                    // either confirms some or fails), so nothing waits: no need to ask again.
                    backoff.reset();
                    crate::telemetry::metrics::outbox_backlog(self.producer, 0, 0.0);
                    POLL
                }
                Err(e) => {
                    tracing::warn!(error = %e, "outbox relay failed; retrying");
                    self.measure_backlog().await;
                    backoff.next_wait()
                }
            };
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = drain.draining() => return,
            }
        }
    }

    /// Sets the backlog gauges: how many rows wait, and how old the oldest is.
    async fn measure_backlog(&self) {
        use sea_orm::PaginatorTrait;
        let waiting = entity::Entity::find()
            .filter(entity::Column::Sequence.is_null())
            .count(&self.db)
            .await;
        let oldest = entity::Entity::find()
            .filter(entity::Column::Sequence.is_null())
            .order_by_asc(entity::Column::Id)
            .one(&self.db)
            .await;
        if let (Ok(n), Ok(oldest)) = (waiting, oldest) {
            let lag = oldest
                .map(|r| {
                    (chrono::Utc::now() - r.occurred_at)
                        .num_milliseconds()
                        .max(0) as f64
                        / 1000.0
                })
                .unwrap_or(0.0);
            crate::telemetry::metrics::outbox_backlog(self.producer, n as i64, lag);
        }
    }

    /// The gRPC face of this producer's log.
    pub fn log_service(&self, drain: Drain) -> EventLog {
        let public = self.public.clone().map(|p| (p, self.producer));
        EventLog::new(self.db.clone(), self.published.subscribe(), drain, public)
    }
}

/// Up to `batch` rows without a sequence, oldest first.
async fn unpublished<C: ConnectionTrait>(
    c: &C,
    batch: u64,
) -> Result<Vec<entity::Model>, sea_orm::DbErr> {
    entity::Entity::find()
        .filter(entity::Column::Sequence.is_null())
        .order_by_asc(entity::Column::Id)
        .limit(batch)
        .all(c)
        .await
}

/// The highest sequence given so far (0 before the first).
async fn last_sequence<C: ConnectionTrait>(c: &C) -> Result<i64, sea_orm::DbErr> {
    Ok(entity::Entity::find()
        .select_only()
        .column_as(entity::Column::Sequence.max(), "max")
        .into_tuple::<Option<i64>>()
        .one(c)
        .await?
        .flatten()
        .unwrap_or(0))
}

/// Gives `rows` the sequences `first`, `first + 1`, ... in order, in one statement (a
/// `CASE` on the row id); returns how many.
async fn assign_sequences<C: ConnectionTrait>(
    c: &C,
    rows: &[entity::Model],
    first: i64,
) -> Result<usize, sea_orm::DbErr> {
    let Some((head, rest)) = rows.split_first() else {
        return Ok(0);
    };
    let mut sequence = Expr::case(entity::Column::Id.eq(head.id), Expr::value(first));
    for (i, row) in rest.iter().enumerate() {
        sequence = sequence.case(
            entity::Column::Id.eq(row.id),
            Expr::value(first + 1 + i as i64),
        );
    }
    entity::Entity::update_many()
        .col_expr(entity::Column::Sequence, sequence.into())
        .col_expr(
            entity::Column::PublishedAt,
            Expr::value(crate::types::time::now()),
        )
        .filter(entity::Column::Id.is_in(rows.iter().map(|r| r.id)))
        .filter(entity::Column::Sequence.is_null())
        .exec(c)
        .await?;
    Ok(rows.len())
}
