//! The transactional outbox and the event log served from it.
//!
//! A state change records its event with `record`, in the same transaction, so an event exists
//! exactly when its change does. The `Relay` then publishes recorded rows in the order they
//! were recorded: it gives each the next sequence of this producer's log (rows committed late
//! still get a later sequence, so a consumer reading "after my last sequence" misses nothing)
//! and wakes subscribers. Rows are never deleted. `EventLog` serves the log as the gRPC stream
//! `ordermesh.events.v1.EventLogService/Subscribe`.
//!
//! With a `broker::Publisher` (when `BROKER_URL` is set) the relay publishes each row to
//! RabbitMQ as well, and a row gets its sequence only once the broker confirmed it: "published"
//! then means "in RabbitMQ and in the gRPC log", so the log keeps serving catch-up and replay.
//! Rows the broker did not confirm keep no sequence and are sent again (at-least-once).

use std::pin::Pin;
use std::time::Duration;

use futures::Stream;
use prost::Message;
use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, DatabaseConnection, EntityTrait, QueryFilter,
    QueryOrder, QuerySelect, Set, TransactionTrait,
};
use tokio::sync::watch;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::backoff::Backoff;
use crate::events::amqp::{BrokerError, OutgoingEvent, Publisher};
use crate::proto::events::v1 as pb;
use crate::proto::events::v1::event_envelope::Payload;
use crate::transport::shutdown::Drain;

pub mod entity {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "outbox_events")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        pub event_id: String,
        pub event_type: String,
        pub aggregate_type: String,
        pub aggregate_id: String,
        /// The encoded `EventEnvelope`, without its sequence.
        pub payload: Vec<u8>,
        pub occurred_at: ChronoDateTimeUtc,
        /// Position in the published log; NULL until the relay publishes the row.
        pub sequence: Option<i64>,
        pub published_at: Option<ChronoDateTimeUtc>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub use migration::Migration;

mod migration {
    use sea_orm_migration::prelude::*;

    /// Creates `outbox_events`; every producing service's migrator lists it.
    pub struct Migration;

    impl MigrationName for Migration {
        fn name(&self) -> &str {
            "m0000_outbox"
        }
    }

    #[async_trait::async_trait]
    impl MigrationTrait for Migration {
        async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
            let t = || Alias::new("outbox_events");
            m.create_table(
                Table::create()
                    .table(t())
                    .if_not_exists()
                    .col(
                        ColumnDef::new(Alias::new("id"))
                            .big_integer()
                            .not_null()
                            .auto_increment()
                            .primary_key(),
                    )
                    .col(
                        ColumnDef::new(Alias::new("event_id"))
                            .string_len(64)
                            .not_null()
                            .unique_key(),
                    )
                    .col(
                        ColumnDef::new(Alias::new("event_type"))
                            .string_len(64)
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(Alias::new("aggregate_type"))
                            .string_len(32)
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(Alias::new("aggregate_id"))
                            .string_len(128)
                            .not_null(),
                    )
                    .col(ColumnDef::new(Alias::new("payload")).binary().not_null())
                    .col(
                        ColumnDef::new(Alias::new("occurred_at"))
                            .timestamp_with_time_zone()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(Alias::new("sequence"))
                            .big_integer()
                            .null()
                            .unique_key(),
                    )
                    .col(
                        ColumnDef::new(Alias::new("published_at"))
                            .timestamp_with_time_zone()
                            .null(),
                    )
                    .to_owned(),
            )
            .await
        }

        async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
            m.drop_table(Table::drop().table(Alias::new("outbox_events")).to_owned())
                .await
        }
    }
}

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

/// Records an event in `c`, the transaction of the change it describes.
pub async fn record<C: ConnectionTrait>(
    c: &C,
    producer: &str,
    aggregate_type: &str,
    aggregate_id: &str,
    payload: Payload,
) -> Result<(), sea_orm::DbErr> {
    let now = crate::types::time::now();
    let event_id = uuid::Uuid::new_v4().to_string();
    let kind = event_type(&payload);
    let envelope = pb::EventEnvelope {
        event_id: event_id.clone(),
        aggregate_type: aggregate_type.to_string(),
        aggregate_id: aggregate_id.to_string(),
        sequence: 0,
        occurred_at: Some(crate::types::time::to_proto(now)),
        // The trace of the request that made the change: its consumers' spans join it.
        trace_context: Some(crate::telemetry::trace_context()),
        producer: producer.to_string(),
        payload: Some(payload),
    };
    entity::ActiveModel {
        event_id: Set(event_id),
        event_type: Set(kind.to_string()),
        aggregate_type: Set(aggregate_type.to_string()),
        aggregate_id: Set(aggregate_id.to_string()),
        payload: Set(envelope.encode_to_vec()),
        occurred_at: Set(now),
        sequence: Set(None),
        published_at: Set(None),
        ..Default::default()
    }
    .insert(c)
    .await?;
    Ok(())
}

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
}

impl Outbox {
    pub fn new(db: DatabaseConnection) -> Self {
        Self {
            db,
            published: watch::channel(0).0,
            publisher: None,
            producer: "unknown",
        }
    }

    /// The outbox of the service `config` describes: publishing to RabbitMQ too when it has a
    /// `BROKER_URL`.
    pub fn for_service(db: DatabaseConnection, config: &crate::config::ServiceConfig) -> Self {
        let mut outbox = Self::new(db);
        outbox.producer = config.service;
        match &config.broker_url {
            Some(url) => outbox.with_publisher(Publisher::new(url.clone(), config.service)),
            None => outbox,
        }
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
        EventLog {
            db: self.db.clone(),
            published: self.published.subscribe(),
            drain,
        }
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

/// Gives `rows` the sequences `first`, `first + 1`, ... in order; returns how many.
async fn assign_sequences<C: ConnectionTrait>(
    c: &C,
    rows: &[entity::Model],
    first: i64,
) -> Result<usize, sea_orm::DbErr> {
    let now = crate::types::time::now();
    for (i, row) in rows.iter().enumerate() {
        entity::Entity::update_many()
            .col_expr(entity::Column::Sequence, Expr::value(first + i as i64))
            .col_expr(entity::Column::PublishedAt, Expr::value(now))
            .filter(entity::Column::Id.eq(row.id))
            .filter(entity::Column::Sequence.is_null())
            .exec(c)
            .await?;
    }
    Ok(rows.len())
}

/// `ordermesh.events.v1.EventLogService` over the outbox.
#[derive(Clone)]
pub struct EventLog {
    db: DatabaseConnection,
    published: watch::Receiver<i64>,
    drain: Drain,
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

fn decode(row: &entity::Model) -> Result<pb::EventEnvelope, Status> {
    let mut e = pb::EventEnvelope::decode(row.payload.as_slice())
        .map_err(crate::types::status::db_error)?;
    e.sequence = row.sequence.unwrap_or(0) as u64;
    Ok(e)
}

#[tonic::async_trait]
impl pb::event_log_service_server::EventLogService for EventLog {
    type SubscribeStream = BoxStream<pb::SubscribeResponse>;

    async fn subscribe(
        &self,
        request: Request<pb::SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        let r = request.into_inner();
        if r.types.len() > 32 {
            return Err(crate::types::status::invalid_argument(
                "types",
                "must name at most 32 event types",
            ));
        }
        let mut next = r.from_sequence.max(1) as i64;
        let types = r.types;
        let db = self.db.clone();
        let mut published = self.published.clone();
        let drain = self.drain.clone();
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        tokio::spawn(async move {
            loop {
                let mut q = entity::Entity::find()
                    .filter(entity::Column::Sequence.gte(next))
                    .order_by_asc(entity::Column::Sequence)
                    .limit(256);
                if !types.is_empty() {
                    q = q.filter(entity::Column::EventType.is_in(types.clone()));
                }
                let rows = match q.all(&db).await {
                    Ok(rows) => rows,
                    Err(e) => {
                        let _ = tx.send(Err(crate::types::status::db_error(e))).await;
                        return;
                    }
                };
                let got = rows.len();
                for row in rows {
                    next = row.sequence.unwrap_or(next) + 1;
                    let msg = decode(&row).map(|e| pb::SubscribeResponse { event: Some(e) });
                    if tx.send(msg).await.is_err() {
                        return;
                    }
                }
                if got > 0 {
                    continue;
                }
                // Caught up: wait for the relay, the client leaving, or the server draining.
                tokio::select! {
                    changed = published.changed() => if changed.is_err() { return },
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    _ = tx.closed() => return,
                    _ = drain.draining() => return,
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}
