//! The inbox every event transport shares: `apply_once` applies an event exactly once, and
//! `dead_letter` parks one that can never be applied. `grpc_log::run` and `amqp::run` feed it.
//!
//! A consumer remembers, in its own database, the last sequence it processed from each
//! producer (`event_checkpoints`) and the ids of the events it applied (`event_inbox`); the
//! handler's effect, the inbox row and the checkpoint are written in one transaction, so an
//! event is applied exactly once even when the stream drops, the process restarts or the
//! producer sends it again. A handler that cannot apply an event yet says `Retry` and the event
//! comes again later; one that finds an event it can never apply (a poison message) says
//! `Poison`, and after `MAX_ATTEMPTS` tries the event is recorded in the inbox as dead-lettered
//! with its error and the consumer moves on.

use sea_orm::{
    ActiveModelTrait, ConnectionTrait, DatabaseConnection, DatabaseTransaction, EntityTrait, Set,
    TransactionTrait,
};

use crate::proto::events::v1 as pb;

/// Tries a handler gets on one event before it is dead-lettered.
pub const MAX_ATTEMPTS: u32 = 5;

pub mod entry {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "event_inbox")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub consumer: String,
        #[sea_orm(primary_key, auto_increment = false)]
        pub event_id: String,
        pub producer: String,
        pub sequence: i64,
        pub event_type: String,
        /// Empty when applied; the last error when dead-lettered.
        pub dead_letter_error: String,
        pub processed_at: ChronoDateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod checkpoint {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "event_checkpoints")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub consumer: String,
        #[sea_orm(primary_key, auto_increment = false)]
        pub producer: String,
        pub last_sequence: i64,
        pub updated_at: ChronoDateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub use migration::Migration;

mod migration {
    use crate::data::schema::{big, text, timestamp};
    use sea_orm_migration::prelude::*;

    /// Creates `event_inbox` and `event_checkpoints`; every consuming service lists it.
    pub struct Migration;

    impl MigrationName for Migration {
        fn name(&self) -> &str {
            "m0000_consumer"
        }
    }

    #[async_trait::async_trait]
    impl MigrationTrait for Migration {
        async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
            m.create_table(
                Table::create()
                    .table(Alias::new("event_inbox"))
                    .if_not_exists()
                    .col(text(Alias::new("consumer"), 64))
                    .col(text(Alias::new("event_id"), 64))
                    .col(text(Alias::new("producer"), 64))
                    .col(big(Alias::new("sequence")))
                    .col(text(Alias::new("event_type"), 64))
                    .col(
                        ColumnDef::new(Alias::new("dead_letter_error"))
                            .text()
                            .not_null(),
                    )
                    .col(timestamp(Alias::new("processed_at")))
                    .primary_key(
                        Index::create()
                            .col(Alias::new("consumer"))
                            .col(Alias::new("event_id")),
                    )
                    .to_owned(),
            )
            .await?;
            m.create_table(
                Table::create()
                    .table(Alias::new("event_checkpoints"))
                    .if_not_exists()
                    .col(text(Alias::new("consumer"), 64))
                    .col(text(Alias::new("producer"), 64))
                    .col(big(Alias::new("last_sequence")))
                    .col(timestamp(Alias::new("updated_at")))
                    .primary_key(
                        Index::create()
                            .col(Alias::new("consumer"))
                            .col(Alias::new("producer")),
                    )
                    .to_owned(),
            )
            .await
        }

        async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
            m.drop_table(Table::drop().table(Alias::new("event_inbox")).to_owned())
                .await?;
            m.drop_table(
                Table::drop()
                    .table(Alias::new("event_checkpoints"))
                    .to_owned(),
            )
            .await
        }
    }
}

/// Why a handler did not apply an event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HandlerError {
    /// Not now (a database hiccup, the aggregate not ready yet): the event is delivered again
    /// later, for as long as it takes.
    Retry(String),
    /// This event cannot be applied: after `MAX_ATTEMPTS` it is dead-lettered.
    Poison(String),
}

/// What a consumer does with an event.
#[async_trait::async_trait]
pub trait Handler: Send + Sync {
    /// Applies the event inside `txn`; an error rolls it back.
    async fn handle(
        &self,
        txn: &DatabaseTransaction,
        event: &pb::EventEnvelope,
    ) -> Result<(), HandlerError>;

    /// Runs after the transaction that applied `event` committed (notifications).
    async fn committed(&self, _event: &pb::EventEnvelope) {}
}

/// The last sequence `consumer` processed from `producer` (0 before the first).
pub async fn checkpoint_of<C: ConnectionTrait>(
    c: &C,
    consumer: &str,
    producer: &str,
) -> Result<i64, sea_orm::DbErr> {
    Ok(
        checkpoint::Entity::find_by_id((consumer.to_string(), producer.to_string()))
            .one(c)
            .await?
            .map(|r| r.last_sequence)
            .unwrap_or(0),
    )
}

async fn save(
    txn: &DatabaseTransaction,
    consumer: &str,
    producer: &str,
    event: &pb::EventEnvelope,
    error: &str,
) -> Result<(), sea_orm::DbErr> {
    let now = crate::types::time::now();
    let kind = event
        .payload
        .as_ref()
        .map(crate::events::envelope::event_type)
        .unwrap_or("");
    entry::ActiveModel {
        consumer: Set(consumer.to_string()),
        event_id: Set(event.event_id.clone()),
        producer: Set(producer.to_string()),
        sequence: Set(event.sequence as i64),
        event_type: Set(kind.to_string()),
        dead_letter_error: Set(error.to_string()),
        processed_at: Set(now),
    }
    .insert(txn)
    .await?;
    let key = (consumer.to_string(), producer.to_string());
    match checkpoint::Entity::find_by_id(key).one(txn).await? {
        Some(row) => {
            // Never backwards: a broker may hand over a re-published retry after later events.
            let last = row.last_sequence.max(event.sequence as i64);
            let mut a: checkpoint::ActiveModel = row.into();
            a.last_sequence = Set(last);
            a.updated_at = Set(now);
            a.update(txn).await?;
        }
        None => {
            checkpoint::ActiveModel {
                consumer: Set(consumer.to_string()),
                producer: Set(producer.to_string()),
                last_sequence: Set(event.sequence as i64),
                updated_at: Set(now),
            }
            .insert(txn)
            .await?;
        }
    }
    Ok(())
}

/// What one try at an event did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Applied {
    /// The handler ran and its effect committed with the inbox row.
    Now,
    /// The inbox already had the event: nothing ran.
    Before,
}

/// One try at applying `event` for `consumer`, whatever transport brought it: skips an event
/// the inbox already has, else runs the handler and writes the inbox row and checkpoint in
/// the handler's transaction. A database error is a `Retry`.
pub async fn apply_once(
    db: &DatabaseConnection,
    consumer: &str,
    producer: &str,
    handler: &dyn Handler,
    event: &pb::EventEnvelope,
) -> Result<Applied, HandlerError> {
    let retry = |e: sea_orm::DbErr| HandlerError::Retry(format!("consumer database: {e}"));
    let seen = entry::Entity::find_by_id((consumer.to_string(), event.event_id.clone()))
        .one(db)
        .await
        .map_err(retry)?;
    if seen.is_some() {
        return Ok(Applied::Before);
    }
    // The handler runs in a span that continues the producer's trace (a child of the span that
    // recorded the event), whichever transport brought it.
    let traced = crate::telemetry::event_span(
        event.trace_context.as_ref(),
        event
            .payload
            .as_ref()
            .map(crate::events::envelope::event_type)
            .unwrap_or("unknown"),
        producer,
        consumer,
    );
    traced
        .instrument(async {
            let txn = db.begin().await.map_err(retry)?;
            handler.handle(&txn, event).await?;
            save(&txn, consumer, producer, event, "")
                .await
                .map_err(retry)?;
            txn.commit().await.map_err(retry)?;
            handler.committed(event).await;
            Ok(Applied::Now)
        })
        .await
}

/// Parks `event` in `consumer`'s inbox as dead-lettered with its error: it will not be applied,
/// and a repeat of it is skipped like any applied event.
pub async fn dead_letter(
    db: &DatabaseConnection,
    consumer: &str,
    producer: &str,
    event: &pb::EventEnvelope,
    error: &str,
) -> Result<(), sea_orm::DbErr> {
    let txn = db.begin().await?;
    save(&txn, consumer, producer, event, error).await?;
    txn.commit().await
}
